//! The user-facing gRPC services and registration.
//!
//! ```text
//!   every call ─▶ access::AccessLayer (METHODS: method → Anonymous | Cluster | User(role))
//!     TraceflowService ─▶ traces::workflow::Traces ─▶ TraceHub / ClusterLink (fleet)
//!     ClusterService ───▶ Fleet / Store
//!     UserService ──────▶ Store
//!     RegistrationService (token + CSR, no client certificate needed)
//! ```
//!
//! The services only take the authenticated caller, convert the request and map errors.
//! Every failure becomes a `tonic::Status` in one place: [`error::ApiError`].

pub mod access;
pub mod cluster;
pub mod error;
pub mod guard;
pub mod registration;
pub mod traceflow;
pub mod user;

use std::sync::Arc;

use traceflow_pki::CertificateAuthority;

use crate::auth::Authenticator;
use crate::{
    fleet::{Fleet, link::FleetLink},
    store::Store,
    traces::{TraceHub, workflow::Traces},
};

/// What every service needs. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub store: Store,
    pub auth: Authenticator,
    pub fleet: Fleet,
    pub hub: TraceHub,
    pub ca: Arc<CertificateAuthority>,
    pub traces: Traces<FleetLink>,
    /// Per-source limits and the refusal log.
    pub guard: Arc<guard::Guard>,
}

/// Page size from a request: 0 means 100, at most 1000.
pub fn page_size(requested: i32) -> usize {
    match requested {
        n if n <= 0 => 100,
        n => (n as usize).min(1000),
    }
}
