//! Agents: their certificates, the registry of connected agents, and the gRPC server they
//! attach to.

pub mod pki;
pub mod registry;
pub mod server;

pub use registry::{Agents, SendError};
pub use server::AgentServer;
