//! Per-Node views and their diffs: what one agent must enforce, and what changed.

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

impl NodePolicyView {
    /// The rule a trace register value names (0 is "absent" and never matches).
    pub fn rule_by_conj_id(&self, conj_id: u32) -> Option<&CompiledRule> {
        if conj_id == 0 {
            return None;
        }
        self.rules.values().find(|r| r.conj_id == conj_id)
    }
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

/// What changed between two views of the same Node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodePolicyDiff {
    pub added: Vec<CompiledRule>,
    pub removed: Vec<CompiledRule>,
    /// `(old, new)` pairs with the same [`RuleId`] and different content.
    pub changed: Vec<(CompiledRule, CompiledRule)>,
    pub isolation_added: Isolation,
    pub isolation_removed: Isolation,
}

impl NodePolicyDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.isolation_added == Isolation::default()
            && self.isolation_removed == Isolation::default()
    }
}

/// Rules added, removed and changed from `old` to `new` (keyed by [`RuleId`]), and Pods that
/// gained or lost isolation. Order is by rule id.
pub fn diff(old: &NodePolicyView, new: &NodePolicyView) -> NodePolicyDiff {
    let mut d = NodePolicyDiff::default();
    for (id, r) in &new.rules {
        match old.rules.get(id) {
            None => d.added.push(r.clone()),
            Some(o) if o != r => d.changed.push((o.clone(), r.clone())),
            Some(_) => {}
        }
    }
    for (id, r) in &old.rules {
        if !new.rules.contains_key(id) {
            d.removed.push(r.clone());
        }
    }
    let minus = |a: &BTreeSet<AppliedPod>, b: &BTreeSet<AppliedPod>| -> BTreeSet<AppliedPod> {
        a.difference(b).cloned().collect()
    };
    d.isolation_added = Isolation {
        ingress: minus(&new.isolation.ingress, &old.isolation.ingress),
        egress: minus(&new.isolation.egress, &old.isolation.egress),
    };
    d.isolation_removed = Isolation {
        ingress: minus(&old.isolation.ingress, &new.isolation.ingress),
        egress: minus(&old.isolation.egress, &new.isolation.egress),
    };
    d
}
