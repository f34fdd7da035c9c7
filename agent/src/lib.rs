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
//!                                       ──▶ AgentCommand::NodeState ──▶ desired::Store
//!                                              (peers, Services, rules, isolation) ──▶ pipeline
//! ```
//!
//! Modules by domain: [`ovs`] (OpenFlow 1.5 client, OVSDB), [`desired`] (the adapter's
//! desired state), [`pipeline`] (tables, registers, flows, Services, policies,
//! reconciliation), [`reject`] (RST / ICMP answers for Reject rules), [`trace`] (packets,
//! injection, observations), [`ports`] (what is plugged into br-int), [`runtime`] (the Node's
//! data plane wired together), [`adapter`] (the session with the adapter).
//!
//! Modules depend on each other in one direction only (a `use crate::…` against an arrow is a
//! cycle; keep shared types in the lower module):
//!
//! ```text
//!   adapter ──▶ runtime ──▶ reject ──▶ trace ──▶ pipeline ──▶ desired
//!                  │                     │          │
//!                  └──────────┬──────────┴──────────┴──▶ ports ──▶ ovs      (metrics: leaf)
//! ```
//!
//! `desired` holds the domain of what the adapter asks for (including [`desired::Peer`]);
//! `pipeline` turns it into flows; `trace` reads pipeline constants (tables, registers, the
//! trace DSCP class) and resolves rule names from the desired state.
//!
//! NetworkPolicy: the adapter compiles policies with `traceflow-policy` and sends each Node its
//! rules and isolated Pod IPs in `NodeState`; the OpenFlow flows that enforce them are built
//! here, in [`pipeline::policy`], the only place policy flows are made.

pub mod adapter;
pub mod desired;
pub mod metrics;
pub mod ovs;
pub mod pipeline;
pub mod ports;
pub mod reject;
pub mod runtime;
pub mod trace;

use tokio_util::sync::CancellationToken;

/// Everything the agent needs to run.
#[derive(Clone)]
pub struct AgentConfig {
    pub node: String,
    pub adapter: adapter::AdapterConfig,
    pub ovs: runtime::OvsPaths,
    /// Other Nodes reachable through the tunnel (`--peer`): a fallback used until the
    /// adapter's first NodeState replaces them.
    pub peers: Vec<desired::Peer>,
}

/// Runs the agent until `shutdown` is cancelled: the Node runtime plus the adapter session.
pub async fn run(cfg: AgentConfig, shutdown: CancellationToken) {
    // The desired state starts with the static peers; the adapter's NodeState replaces it.
    let store = desired::Store::with_static_peers(&cfg.peers);
    let rt =
        runtime::NodeRuntime::start_with(&cfg.node, &cfg.ovs, store.subscribe(), shutdown.clone());
    adapter::run_with(cfg.adapter, rt, store, shutdown.clone()).await;
    shutdown.cancel();
}
