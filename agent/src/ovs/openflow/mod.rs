//! A small native OpenFlow 1.5 (+ Nicira extensions) client for Open vSwitch.
//!
//! Layout follows mini-redis: [`frame`] finds message boundaries, [`message`] / [`oxm`] /
//! [`action`] decode and encode one structure each (checked to consume exactly its length),
//! [`connection`] buffers a byte stream into frames, [`client`] runs a connection (handshake,
//! echo, xid routing, packet-ins). Golden vectors captured from OVS 3.1 live in `tests.rs`.

pub mod action;
pub mod client;
pub mod connection;
pub mod frame;
pub mod message;
pub mod oxm;
mod wire;

#[cfg(test)]
mod tests;

pub use action::{Action, Instruction, Nat, port};
pub use client::Switch;
pub use message::{ErrorMsg, FlowMod, GroupMod, Message, PacketIn, PacketOut};
pub use oxm::{Match, Oxm};
pub use wire::DecodeError;

/// Why an OpenFlow operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OfError {
    #[error("openflow socket: {0}")]
    Io(#[from] std::io::Error),
    /// The byte stream is not OpenFlow; the connection must be dropped.
    #[error("openflow protocol error: {0}")]
    Protocol(String),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The switch does not speak OpenFlow 1.5 (set `protocols=OpenFlow15` on the bridge).
    #[error(
        "switch does not offer OpenFlow 1.5 (hello version {0}); set protocols=OpenFlow15 on the bridge"
    )]
    Version(u8),
    /// The switch rejected a request.
    #[error("{0}")]
    Switch(ErrorMsg),
    #[error("openflow connection closed")]
    Disconnected,
    #[error("openflow switch did not answer in time")]
    Timeout,
}
