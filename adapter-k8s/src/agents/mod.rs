//! Agents: their certificates (and the one valid serial per Node), the registry of connected agents, and the gRPC server they
//! attach to.

pub mod pki;
pub mod registry;
pub mod serials;
pub mod server;

pub use registry::{Agents, SendError};
pub use server::AgentServer;
