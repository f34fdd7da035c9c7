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

use crate::auth::{Authenticator, Principal, Role};
use crate::{fleet::Fleet, store::Store, traces::TraceHub};

use error::ApiError;

/// What every service needs. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub store: Store,
    pub auth: Authenticator,
    pub fleet: Fleet,
    pub hub: TraceHub,
    pub ca: Arc<CertificateAuthority>,
}

impl Ctx {
    /// The caller of an RPC, which needs `role` for `what` (`"<Service>.<Method>"`); the error
    /// says why not.
    pub fn require<T>(
        &self,
        req: &tonic::Request<T>,
        role: Role,
        what: &str,
    ) -> Result<Principal, ApiError> {
        self.auth.require(req, role, what).map_err(ApiError::from)
    }
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
