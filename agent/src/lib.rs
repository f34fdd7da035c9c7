//! traceflow-agent: one per Node. Owns br-int: programs an Antrea-ordered pipeline, injects
//! trace packets, turns trace packet-ins into observations and streams them to the adapter.
//!
//! ```text
//!   ovsdb-server (<rundir>/db.sock)            ovs-vswitchd (<rundir>/br-int.mgmt)
//!        │ monitor Interface                        ▲ flow-mods (bundle)   │ packet-ins
//!        ▼                                          │ packet-outs          ▼
//!   ports::spawn_watcher ──NodePorts──▶ pipeline::spawn (reconcile, reconnect) ──┐
//!        │                                   ▲ Switch                           │ PacketIn
//!        │                                   │                                  ▼
//!        └──────────────NodePorts──────▶ trace::Tracer ── observe ──▶ Observed (queue)
//!                                            ▲ inject                           │
//!                                            │                                  ▼
//!   adapter (AgentService.Attach, mTLS) ◀── adapter::run: hello/ports, TraceReport, TraceFailure
//!                                       ──▶ AgentCommand::Inject
//! ```
//!
//! Modules by domain: [`ovs`] (OpenFlow 1.5 client, OVSDB), [`pipeline`] (tables, registers,
//! flows, reconciliation), [`trace`] (packets, injection, observations), [`ports`] (what is
//! plugged into br-int), [`runtime`] (the Node's data plane wired together), [`adapter`]
//! (the session with the adapter).

pub mod adapter;
pub mod ovs;
pub mod pipeline;
pub mod ports;
pub mod runtime;
pub mod trace;

use tokio_util::sync::CancellationToken;

/// Everything the agent needs to run.
#[derive(Clone)]
pub struct AgentConfig {
    pub node: String,
    pub adapter: adapter::AdapterConfig,
    pub ovs: runtime::OvsPaths,
    /// Other Nodes reachable through the tunnel (until the adapter sends them).
    pub peers: Vec<pipeline::Peer>,
}

/// Runs the agent until `shutdown` is cancelled: the Node runtime plus the adapter session.
pub async fn run(cfg: AgentConfig, shutdown: CancellationToken) {
    // The sender is kept alive for the agent's lifetime: peers are static until the adapter
    // protocol carries them.
    let (_peers_tx, peers) = tokio::sync::watch::channel(cfg.peers.clone());
    let rt = runtime::NodeRuntime::start(&cfg.node, &cfg.ovs, peers, shutdown.clone());
    adapter::run(cfg.adapter, rt, shutdown.clone()).await;
    shutdown.cancel();
}
