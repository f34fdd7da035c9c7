//! The manager side: registration and the `AdapterService.Attach` stream.

pub mod link;
pub mod registration;

pub use link::Link;
pub use registration::{ClusterIdentity, RegistrationError, ensure_identity};
