//! Desired state of each Node's pipeline (DESIGN "Data plane"; proto `NodeState`), computed from
//! the inventory and the compiled policies, and published to the agents as replace + deltas.
//!
//! ```text
//!  Index ──cluster_state()──▶ ClusterState ──PolicyCompiler::compile──▶ CompiledPolicies
//!    │                                       (one long-lived compiler:       │ for_node(n)
//!    └──ClusterView::from_index()──────────┐  stable conjunction ids)        ▼
//!       (Nodes, Services + endpoints)      └──────────▶ ClusterView::node_state(n) ─▶ NodeDesired
//!                                                                                     │ diff(last sent, new)
//!  agent hello ──▶ publisher ──replace (full)──▶ Agents::send_on ◀──delta─────────────┘
//! ```
//!
//! [`compute`] and [`diff`](diff::diff) are pure; [`publisher`] is the one task that owns the
//! [`traceflow_policy::ClusterState`], the [`traceflow_policy::PolicyCompiler`] and the last state
//! sent to each agent.
//!
//! What an agent can rely on (the contract of every `NodeState` this module produces):
//! - The first `NodeState` after each `AgentHello` has `replace = true`, `node` set and
//!   `isolation` set (possibly empty), and lists every peer, Service and rule; anything the agent
//!   had before is gone. Later ones are deltas: `*_upsert` replaces the object with the same key
//!   (peer: Node name; Service: `<namespace>/<name>`; rule: `conjunction_id`), `*_delete` removes
//!   by key, `isolation` (when set) replaces both isolation sets. A delta never has `node` set:
//!   when this Node's own info changes, a new replace is sent instead.
//! - Peers are every other Node of the cluster, including Nodes with no Pod CIDR yet.
//! - Services are every Service with at least one ClusterIP (headless Services are left out);
//!   endpoints are the ready Pods the selector picks, one per Pod IP of a ClusterIP's family,
//!   with `targetPort` resolved per Pod (numbers as is; names through the Pod's named container
//!   ports with the Service port's protocol; a Pod without the name is no endpoint of that port).
//!   A Service without a selector has ports with no endpoints.
//! - Rules are the Node's view of the compiled policies (only rules protecting a local Pod;
//!   `applied_to_ips` narrowed to local Pods, peers cluster-wide); `peer_cidrs` are CIDR strings
//!   (`10.0.1.2/32` for a Pod). All lists are sorted, so equal states are equal messages.
//! - Egresses are every Antrea Egress, sent whole (on replace, and in a delta whenever any
//!   changed), sorted by name, each with the IPs of the running Pods it applies to cluster-wide
//!   and a SNAT mark (1-based position by name, so a Node needs no allocator).

pub mod compute;
pub mod diff;
pub mod publisher;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use traceflow_proto::v1 as pb;

pub use compute::{ClusterView, cluster_state, node_state, rule_to_pb};
pub use diff::diff;
pub use publisher::{Publisher, PublisherHandle};

/// One Node's desired state, keyed the way deltas address objects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeDesired {
    /// This Node (name only when the Node is not in the inventory).
    pub node: pb::NodeInfo,
    /// Every other Node, by name.
    pub peers: BTreeMap<String, pb::NodeInfo>,
    /// Every Service with a ClusterIP, by `<namespace>/<name>`.
    pub services: BTreeMap<String, pb::ServiceState>,
    /// The rules this Node enforces, by conjunction id.
    pub rules: BTreeMap<u32, pb::PolicyRule>,
    pub isolation: pb::Isolation,
    /// Every Antrea Egress of the cluster (the same for every Node).
    pub egresses: pb::EgressSet,
    /// The cluster's key for trace packets crossing the tunnel (`NodeState.trace_tunnel_key`;
    /// the same for every Node, set by the publisher).
    pub trace_tunnel_key: u64,
}

impl NodeDesired {
    /// The complete state as a `replace` message.
    pub fn to_replace(&self) -> pb::NodeState {
        pb::NodeState {
            replace: true,
            node: Some(self.node.clone()),
            peers_upsert: self.peers.values().cloned().collect(),
            peers_delete: Vec::new(),
            services_upsert: self.services.values().cloned().collect(),
            services_delete: Vec::new(),
            rules_upsert: self.rules.values().cloned().collect(),
            rules_delete: Vec::new(),
            isolation: Some(self.isolation.clone()),
            egresses: Some(self.egresses.clone()),
            trace_tunnel_key: self.trace_tunnel_key,
        }
    }
}

/// Wraps a `NodeState` in the command the agent stream carries.
pub fn command(state: pb::NodeState) -> pb::AgentCommand {
    pb::AgentCommand {
        kind: Some(pb::agent_command::Kind::NodeState(state)),
    }
}
