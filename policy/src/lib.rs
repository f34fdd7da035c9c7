//! Pure policy compilation for the node pipeline: Kubernetes and Antrea-native NetworkPolicies
//! in, per-Node rules out. No kube client, no OVS, no I/O. The OpenFlow flows that enforce the
//! rules are the agent's (`agent/src/pipeline/policy.rs`, built from the desired state the
//! adapter sends); this crate never produces flows.
//!
//! ```text
//!  adapter (kube watchers)                                     adapter nodestate
//!  ───────────────────────                                     ─────────────────
//!  ClusterState::apply_*  ──► PolicyCompiler::compile ──► CompiledPolicies
//!   Pods, Namespaces,           (selectors, ipBlock,          │ for_node(node)
//!   NetworkPolicy, ANP,          named ports, tiers,          ▼
//!   ACNP, Tier                   conj ids)             NodePolicyView ──► pb rules + isolation
//!                                                                          (diffed, streamed to
//!                                                                           the Node's agent)
//! ```
//!
//! ```
//! use traceflow_policy::{ClusterState, Namespace, Pod, PolicyCompiler};
//!
//! let mut state = ClusterState::new();
//! state.apply_namespace(Namespace { name: "web".into(), labels: Default::default() });
//! state.apply_pod(Pod {
//!     namespace: "web".into(),
//!     name: "api".into(),
//!     labels: [("app".to_string(), "api".to_string())].into(),
//!     node: "n1".into(),
//!     ips: vec!["10.0.1.3".parse().unwrap()],
//!     ports: vec![],
//! });
//! let np: k8s_openapi::api::networking::v1::NetworkPolicy = serde_json::from_value(
//!     serde_json::json!({
//!         "metadata": {"name": "deny", "namespace": "web"},
//!         "spec": {"podSelector": {}}
//!     }),
//! ).unwrap();
//! state.apply_k8s_policy(np);
//!
//! let mut compiler = PolicyCompiler::new(); // keep it: it owns the conjunction ids
//! let compiled = compiler.compile(&state);
//! assert!(compiled.errors.is_empty());
//! let view = compiled.for_node("n1");
//! // No rule, but the Pod is isolated for ingress: its Node drops what no rule allows.
//! assert!(view.rules.is_empty());
//! assert_eq!(view.isolation.ingress.len(), 1);
//! // Recompiling the same state gives the same view (and the same conjunction ids).
//! assert_eq!(compiler.compile(&state).for_node("n1"), view);
//! ```
//!
//! What is copied from Antrea and where it is described:
//! - which table each rule lands in (`AntreaPolicy*Rule`, `*Rule`, baseline `*DefaultRule`):
//!   reference §4;
//! - the `networkPolicy` string `"<Type>:<ns>/<name>"` / `"<Type>:<name>"`: reference §1.4;
//! - conjunctive matches with clauses from / to / services numbered in that order, Tier and
//!   priority ordering and the OpenFlow priority heuristic: Antrea's agent
//!   (`pkg/agent/openflow`, `pkg/agent/controller/networkpolicy/priority.go`).

mod antrea;
mod cidr;
mod compile;
mod compiled;
mod error;
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
pub use node::NodePolicyView;
pub use selector::Selector;
pub use table::Table;
