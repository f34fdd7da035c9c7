//! traceflow-manager: the fleet's control plane.
//!
//! ```text
//!  every gRPC call ─▶ api::access (one method → role table) ─▶ the tonic edge in api::*
//!  grpcurl / tfctl / console ──TLS (cert or bearer)──▶ api::{traceflow, cluster, user}
//!        api::traceflow ─▶ traces::workflow (create/retrace/delete/watch; ClusterLink = fleet)
//!        api::{user, cluster, registration} ─▶ accounts (users, tokens, registration)
//!  adapter ──token + CSR──▶ api::registration ──▶ accounts::register: CA signs CN = cluster
//!  adapter ══mTLS Attach══▶ fleet::attach ──▶ fleet (streams, inventory, health)
//!                                      └──▶ traces::TraceHub ──▶ store (sled, flushed) ──▶ watchers
//! ```
//!
//! `GET /metrics` (Prometheus text format, view role) is answered by [`telemetry`].
//!
//! The web console's static files share the port: [`console`] answers `GET /` and `/assets/`.
//! Both are [`http_route`] routes in front of tonic.
//!
//! Rules of a trace (validation, limits, phases, names, reasons) come from `traceflow-core`.
//!
//! `main.rs` only parses configuration ([`config`]) and calls [`server::run`] or [`ops`].

pub mod accounts;
pub mod api;
pub mod auth;
pub mod config;
pub mod console;
pub mod fleet;
pub mod http_route;
pub mod ops;
pub mod private_dir;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod traces;
