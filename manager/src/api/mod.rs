//! The user-facing gRPC services and registration.
//!
//! ```text
//!   TraceflowService ─┐
//!   ClusterService ───┼─▶ Authenticator::require(role) ─▶ TraceHub / Fleet / Store
//!   UserService ──────┘
//!   RegistrationService (token + CSR, no client certificate needed)
//! ```
//!
//! Every failure becomes a `tonic::Status` in one place: [`error::ApiError`].

pub mod cluster;
pub mod error;
pub mod registration;
pub mod traceflow;
pub mod user;

use std::sync::Arc;

use traceflow_pki::CertificateAuthority;

use crate::{auth::Authenticator, fleet::Fleet, store::Store, traces::TraceHub};

/// What every service needs. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub store: Store,
    pub auth: Authenticator,
    pub fleet: Fleet,
    pub hub: TraceHub,
    pub ca: Arc<CertificateAuthority>,
}

/// Page size from a request: 0 means 100, at most 1000.
pub fn page_size(requested: i32) -> usize {
    match requested {
        n if n <= 0 => 100,
        n => (n as usize).min(1000),
    }
}

/// Random secret with a readable prefix: `<prefix>-<64 hex>`.
pub fn new_secret(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{prefix}-{}", hex::encode(bytes))
}
