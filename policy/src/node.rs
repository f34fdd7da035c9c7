//! Per-Node views: the rules one agent must enforce. The adapter turns a view into the Node's
//! desired state and diffs those (adapter-k8s `nodestate`); the agent builds the flows.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::compiled::{AppliedPod, CompiledPolicies, CompiledRule, Isolation, RuleId};

/// The rules one Node enforces.
///
/// Contains exactly the rules with at least one applied-to Pod on the Node (ingress: the
/// destinations, egress: the sources, which are the applied-to Pods too), with `applied_to`
/// narrowed to the Node's Pods; peers stay cluster-wide. Isolation is narrowed the same way.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodePolicyView {
    pub node: String,
    pub rules: BTreeMap<RuleId, CompiledRule>,
    pub isolation: Isolation,
}

impl CompiledPolicies {
    /// The view of Node `node`.
    pub fn for_node(&self, node: &str) -> NodePolicyView {
        let local = |set: &BTreeSet<AppliedPod>| -> BTreeSet<AppliedPod> {
            set.iter().filter(|p| p.node == node).cloned().collect()
        };
        let rules = self
            .rules
            .iter()
            .filter_map(|(id, r)| {
                let applied_to = local(&r.applied_to);
                if applied_to.is_empty() {
                    return None;
                }
                let mut r = r.clone();
                r.applied_to = applied_to;
                Some((id.clone(), r))
            })
            .collect();
        NodePolicyView {
            node: node.to_string(),
            rules,
            isolation: Isolation {
                ingress: local(&self.isolation.ingress),
                egress: local(&self.isolation.egress),
            },
        }
    }
}
