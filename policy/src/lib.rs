//! Pure policy compilation for the node pipeline: Kubernetes and Antrea-native NetworkPolicies
//! in, per-Node rules and OpenFlow flow text out. No kube client, no OVS, no I/O.
//!
//! ```text
//!  adapter (kube watchers)                                   agent (br-int)
//!  ───────────────────────                                   ──────────────
//!  ClusterState::apply_*  ──► PolicyCompiler::compile ──► CompiledPolicies
//!   Pods, Namespaces,           (selectors, ipBlock,          │ for_node(node)
//!   NetworkPolicy, ANP,          named ports, tiers,          ▼
//!   ACNP, Tier                   conj ids)             NodePolicyView ──diff──► NodePolicyDiff
//!                                                             │ node_flows()
//!                                                             ▼
//!                                                          FlowSet ──diff──► FlowDiff (add/modify/delete)
//! ```
//!
//! What is copied from Antrea and where it is described:
//! - registers a trace reads (reg5 egress allow, reg6 ingress allow, reg3 + reg0 bit 10 deny)
//!   and the drop copies in `*Metric` / `*DefaultRule`: reference §3.3;
//! - table names and order, what each policy table holds: reference §4;
//! - the `networkPolicy` string `"<Type>:<ns>/<name>"` / `"<Type>:<name>"`: reference §1.4;
//! - conjunctive matches with clauses from / to / services numbered in that order, Tier and
//!   priority ordering and the OpenFlow priority heuristic: Antrea's agent
//!   (`pkg/agent/openflow`, `pkg/agent/controller/networkpolicy/priority.go`).

mod antrea;
mod cidr;
mod compile;
mod compiled;
mod error;
pub mod flows;
mod model;
mod node;
mod selector;
mod table;

#[cfg(test)]
mod fixtures;

pub use antrea::{
    AntreaClusterNetworkPolicy, AntreaIpBlock, AntreaNetworkPolicy, AntreaPeer, AntreaPolicySpec,
    AntreaPort, AntreaRule, AppliedTo, BASELINE_TIER_PRIORITY, DEFAULT_TIER, DEFAULT_TIERS, Tier,
    TierSpec, default_tier_priority,
};
pub use cidr::{host_net, subtract};
pub use compile::{ConjIdAllocator, PolicyCompiler};
pub use compiled::{
    AppliedPod, CompiledPolicies, CompiledRule, Direction, Isolation, K8S_ISOLATION_PRIORITY,
    K8S_RULE_PRIORITY, NativeOrder, Peers, PolicyKind, PolicyRef, PortRange, RuleAction, RuleId,
    Service,
};
pub use error::PolicyError;
pub use model::{ClusterState, NamedPort, Namespace, Pod, PodRef, Protocol};
pub use node::{NodePolicyDiff, NodePolicyView, diff};
pub use selector::Selector;
pub use table::Table;
