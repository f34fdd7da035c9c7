//! What every long-running traceflow process (manager, adapter, agent, the lab's API servers)
//! shares besides telemetry: when to stop, and how long to wait before reconnecting.
//!
//! ```text
//!  SIGINT / SIGTERM ──▶ shutdown::signal() ──▶ the binary's shutdown future / token
//!
//!  session ends ──▶ Reconnect::next_delay() ──sleep──▶ reconnect ──connected──▶ Reconnect::reset()
//!                   (base doubles min → max/2; delay ∈ [base, 2·base): jittered, < max)
//! ```
//!
//! No logging set-up here: that is `traceflow-telemetry` (`init`, `init_logs`).

pub mod backoff;
pub mod shutdown;

pub use backoff::Reconnect;
