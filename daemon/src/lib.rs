//! What every long-running traceflow process (manager, adapter, agent, the lab's API servers)
//! shares besides telemetry: when to stop, how long to wait before reconnecting, and when to
//! renew a certificate.
//!
//! ```text
//!  SIGINT / SIGTERM ──▶ shutdown::signal() ──▶ the binary's shutdown future / token
//!
//!  session ends ──▶ Reconnect::next_delay() ──sleep──▶ reconnect ──connected──▶ Reconnect::reset()
//!                   (base doubles min → max/2; delay ∈ [base, 2·base): jittered, < max)
//!
//!  leaf certificate ──▶ Renewal::at(2/3 of its lifetime) ──due──▶ renew ──failed──▶ Renewal::failed()
//! ```
//!
//! No logging set-up here: that is `traceflow-telemetry` (`init`, `init_logs`).

pub mod backoff;
pub mod renewal;
pub mod shutdown;

pub use backoff::Reconnect;
pub use renewal::Renewal;
