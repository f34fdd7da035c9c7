//! The compiler: [`ClusterState`] in, [`CompiledPolicies`] out.
//!
//! ```text
//!  K8s NetworkPolicy ──┐                    ┌─ named-port split ─┐
//!  Antrea NP / ACNP ───┼─► drafts (selectors ├─ OF priorities ────┼─► CompiledRule{conj_id,…}
//!  Pods, Namespaces ───┘   resolved to Pods) └─ conj id allocator ┘   + Isolation
//! ```
//!
//! The compiler is stateful only in its [`ConjIdAllocator`], so conjunction ids survive
//! recompiles: keep one `PolicyCompiler` for the life of the adapter and call `compile` after
//! every inventory or policy change.

mod k8s;
mod native;
mod resolve;

use std::collections::{BTreeMap, BTreeSet};

use crate::compiled::{
    CompiledPolicies, CompiledRule, Direction, Isolation, NativeOrder, PolicyKind, PolicyRef,
    RuleAction, RuleId,
};
use crate::error::PolicyError;
use crate::model::{ClusterState, PodRef};
use crate::table::Table;

use resolve::{PeerMembers, PortSpec, applied, split_rule};

/// A source rule with selectors resolved to Pods, before the named-port split.
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    pub policy: PolicyRef,
    pub direction: Direction,
    pub action: RuleAction,
    pub name: String,
    /// Identity without the split suffix.
    pub key: String,
    pub table: Table,
    pub priority: u16,
    pub order: Option<NativeOrder>,
    pub applied_to: BTreeSet<PodRef>,
    pub peers: PeerMembers,
    pub ports: Vec<PortSpec>,
}

/// What one policy contributes.
#[derive(Debug, Clone, Default)]
pub(crate) struct PolicyOutput {
    pub drafts: Vec<Draft>,
    pub isolate_ingress: BTreeSet<PodRef>,
    pub isolate_egress: BTreeSet<PodRef>,
}

/// 64-bit FNV-1a: a hash that is stable across Rust releases and processes (unlike
/// `DefaultHasher`), so ids derived from it survive restarts.
pub(crate) fn fnv64(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Hands out conjunction ids: stable per rule identity, unique, never 0.
///
/// A new identity gets the id derived from a hash of its key (probing upward on collision), so
/// the same rule usually gets the same id even in a fresh process; a known identity keeps its
/// id for as long as it exists. Ids of vanished rules are released only after the new rules of
/// the same round are placed, so an id is never handed from a dying rule to a new one in one
/// step.
#[derive(Debug, Clone, Default)]
pub struct ConjIdAllocator {
    by_key: BTreeMap<String, u32>,
    by_id: BTreeMap<u32, String>,
}

impl ConjIdAllocator {
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of `key`, allocating one if needed.
    pub fn id_for(&mut self, key: &str) -> u32 {
        if let Some(id) = self.by_key.get(key) {
            return *id;
        }
        const SPAN: u64 = u32::MAX as u64 - 1;
        let mut id = u32::try_from(fnv64(key) % SPAN + 1).unwrap_or(1);
        while self.by_id.contains_key(&id) {
            id = if id >= u32::MAX - 1 { 1 } else { id + 1 };
        }
        self.by_key.insert(key.to_string(), id);
        self.by_id.insert(id, key.to_string());
        id
    }

    /// Forgets every key not in `live`.
    pub fn retain(&mut self, live: &BTreeSet<String>) {
        self.by_key.retain(|k, _| live.contains(k));
        self.by_id.retain(|_, k| live.contains(k));
    }

    /// Number of live ids.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// Compiles policies; holds the conjunction-id allocator across compilations.
#[derive(Debug, Clone, Default)]
pub struct PolicyCompiler {
    conj_ids: ConjIdAllocator,
}

impl PolicyCompiler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Compiles every policy of `state`.
    ///
    /// Guarantees: deterministic output for a given state and allocator history; each invalid
    /// policy is skipped with one entry in `errors` and does not affect the others; a rule whose
    /// identity existed in the previous compilation keeps its conjunction id.
    pub fn compile(&mut self, state: &ClusterState) -> CompiledPolicies {
        let mut errors = Vec::new();
        let mut outputs: Vec<PolicyOutput> = Vec::new();
        for np in state.k8s_policies.values() {
            match k8s::compile(state, np) {
                Ok(o) => outputs.push(o),
                Err(e) => errors.push(e),
            }
        }
        for np in state.antrea_policies.values() {
            let m = &np.metadata;
            match native::compile(
                state,
                PolicyKind::AntreaNetworkPolicy,
                Some(m.namespace.as_deref().unwrap_or_default()),
                m.name.as_deref(),
                &np.spec,
            ) {
                Ok(o) => outputs.push(o),
                Err(e) => errors.push(e),
            }
        }
        for np in state.cluster_policies.values() {
            match native::compile(
                state,
                PolicyKind::AntreaClusterNetworkPolicy,
                None,
                np.metadata.name.as_deref(),
                &np.spec,
            ) {
                Ok(o) => outputs.push(o),
                Err(e) => errors.push(e),
            }
        }

        // OpenFlow priorities of native rules, one assigner per table.
        let mut drafts: Vec<Draft> = Vec::new();
        let mut isolate_in = BTreeSet::new();
        let mut isolate_eg = BTreeSet::new();
        for o in outputs {
            drafts.extend(o.drafts);
            isolate_in.extend(o.isolate_ingress);
            isolate_eg.extend(o.isolate_egress);
        }
        for (table, baseline) in [
            (Table::AntreaPolicyIngressRule, false),
            (Table::AntreaPolicyEgressRule, false),
            (Table::IngressDefaultRule, true),
            (Table::EgressDefaultRule, true),
        ] {
            let mut in_table: Vec<&mut Draft> = drafts
                .iter_mut()
                .filter(|d| d.table == table && d.order.is_some())
                .collect();
            for object in native::assign_priorities(&mut in_table, baseline) {
                errors.push(PolicyError::PriorityExhausted {
                    object,
                    field: "spec.priority".into(),
                    table: table.name().into(),
                });
            }
        }

        // Split, identify, allocate conjunction ids.
        let mut splits = Vec::new();
        for d in &drafts {
            for s in split_rule(state, d.direction, &d.applied_to, &d.peers, &d.ports) {
                let key = match &s.suffix {
                    Some(sfx) => format!("{}#{sfx}", d.key),
                    None => d.key.clone(),
                };
                splits.push((d, key, s));
            }
        }
        let live: BTreeSet<String> = splits.iter().map(|(_, k, _)| k.clone()).collect();
        for key in &live {
            self.conj_ids.id_for(key);
        }
        self.conj_ids.retain(&live);

        let mut rules = BTreeMap::new();
        for (d, key, s) in splits {
            let rule = CompiledRule {
                id: RuleId(key.clone()),
                conj_id: self.conj_ids.id_for(&key),
                direction: d.direction,
                action: d.action,
                policy: d.policy.clone(),
                name: d.name.clone(),
                table: d.table,
                priority: d.priority,
                order: d.order,
                applied_to: s.applied_to,
                peers: s.peers,
                services: s.services,
            };
            rules.insert(rule.id.clone(), rule);
        }
        let isolation = Isolation {
            ingress: isolate_in
                .iter()
                .filter_map(|p| applied(state, p))
                .collect(),
            egress: isolate_eg
                .iter()
                .filter_map(|p| applied(state, p))
                .collect(),
        };
        CompiledPolicies {
            rules,
            isolation,
            errors,
        }
    }

    /// The allocator (for inspection and tests).
    pub fn conj_ids(&self) -> &ConjIdAllocator {
        &self.conj_ids
    }
}

#[cfg(test)]
mod tests;
