//! Antrea-native NetworkPolicy / ClusterNetworkPolicy → rule drafts.
//!
//! Ordering follows Antrea: Tier priority, then policy priority, then rule index, lower first.
//! Non-baseline rules go to `AntreaPolicyIngressRule` / `AntreaPolicyEgressRule`; rules of the
//! `baseline` Tier go to `IngressDefaultRule` / `EgressDefaultRule`, after K8s NetworkPolicy
//! (reference §4, tables 16-19 and 29-32).

use std::collections::{BTreeMap, BTreeSet};

use super::resolve::{PeerMembers, PeerView, parse_ports, peer_members, select_pods};
use super::{Draft, PolicyOutput, fnv64};
use crate::antrea::{
    AntreaPeer, AntreaPolicySpec, AntreaRule, AppliedTo, BASELINE_TIER_PRIORITY, DEFAULT_TIER,
    default_tier_priority,
};
use crate::compiled::{Direction, NativeOrder, PolicyKind, PolicyRef, RuleAction};
use crate::error::{Ctx, PolicyError};
use crate::model::{ClusterState, PodRef};
use crate::selector::Selector;
use crate::table::Table;

/// Compiles one Antrea-native policy. `namespace` is `Some` for an Antrea NetworkPolicy and
/// `None` for a ClusterNetworkPolicy.
///
/// Scoping (Antrea docs, "Behavior of to and from selectors"): in a namespaced policy a lone
/// `podSelector` selects in the policy's Namespace; in a cluster policy it selects in every
/// Namespace. `namespaceSelector` selects whole Namespaces; both together intersect.
///
/// Errors: missing name, unknown Tier, priority outside 1..=10000, unknown action, Pass in the
/// baseline Tier, duplicate rule names, appliedTo at both or neither level, and every input error
/// of selectors, CIDRs and ports, each naming its field.
pub(crate) fn compile(
    state: &ClusterState,
    kind: PolicyKind,
    namespace: Option<&str>,
    name: Option<&str>,
    spec: &AntreaPolicySpec,
) -> Result<PolicyOutput, PolicyError> {
    let policy = PolicyRef {
        kind,
        namespace: namespace.map(str::to_string),
        name: name.unwrap_or_default().to_string(),
    };
    let object = policy.to_string();
    if policy.name.is_empty() {
        return Err(Ctx::new(&object, "metadata.name").missing());
    }
    if namespace.is_some_and(str::is_empty) {
        return Err(Ctx::new(&object, "metadata.namespace").missing());
    }
    let root = Ctx::new(&object, "spec");

    let tier_name = spec.tier.as_deref().unwrap_or(DEFAULT_TIER);
    let tier_priority = state
        .tiers
        .get(tier_name)
        .map(|t| t.spec.priority)
        .or_else(|| default_tier_priority(tier_name))
        .ok_or_else(|| {
            root.at(".tier")
                .invalid(tier_name, "no such Tier; create it or use a static Tier")
        })?;
    let baseline = tier_priority == BASELINE_TIER_PRIORITY;
    if !(1.0..=10000.0).contains(&spec.priority) {
        return Err(root
            .at(".priority")
            .invalid(spec.priority, "priority must be between 1 and 10000"));
    }

    let policy_applied = if spec.applied_to.is_empty() {
        None
    } else {
        Some(applied_to(
            state,
            namespace,
            &spec.applied_to,
            &root.at(".appliedTo"),
        )?)
    };

    let mut out = PolicyOutput::default();
    let mut names: BTreeSet<String> = BTreeSet::new();
    for (direction, rules) in [
        (Direction::Ingress, &spec.ingress),
        (Direction::Egress, &spec.egress),
    ] {
        for (i, rule) in rules.iter().enumerate() {
            let ctx = root.at(format!(".{}[{i}]", direction.as_str()));
            let draft = rule_draft(
                state,
                &policy,
                namespace,
                direction,
                i,
                rule,
                policy_applied.as_ref(),
                (tier_priority, spec.priority, baseline),
                &ctx,
            )?;
            if !names.insert(draft.name.clone()) {
                return Err(ctx
                    .at(".name")
                    .invalid(&draft.name, "rule names must be unique within a policy"));
            }
            out.drafts.push(draft);
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn rule_draft(
    state: &ClusterState,
    policy: &PolicyRef,
    namespace: Option<&str>,
    direction: Direction,
    index: usize,
    rule: &AntreaRule,
    policy_applied: Option<&BTreeSet<PodRef>>,
    (tier_priority, policy_priority, baseline): (i32, f64, bool),
    ctx: &Ctx<'_>,
) -> Result<Draft, PolicyError> {
    let action = RuleAction::parse(&rule.action).ok_or_else(|| {
        ctx.at(".action")
            .invalid(&rule.action, "action must be Allow, Drop, Reject or Pass")
    })?;
    if action == RuleAction::Pass && baseline {
        return Err(ctx
            .at(".action")
            .invalid("Pass", "Pass is not allowed in the baseline Tier"));
    }
    let applied = match (policy_applied, rule.applied_to.is_empty()) {
        (Some(_), false) => {
            return Err(ctx.at(".appliedTo").invalid(
                "appliedTo",
                "appliedTo is set at policy level; remove it from the rule",
            ));
        }
        (Some(set), true) => set.clone(),
        (None, false) => applied_to(state, namespace, &rule.applied_to, &ctx.at(".appliedTo"))?,
        (None, true) => {
            return Err(ctx.at(".appliedTo").missing());
        }
    };
    let (peer_list, peer_field) = match direction {
        Direction::Ingress => (&rule.from, ".from"),
        Direction::Egress => (&rule.to, ".to"),
    };
    let peers = peers(state, namespace, peer_list, &ctx.at(peer_field))?;
    let ports = parse_ports(
        rule.ports
            .iter()
            .map(|p| (p.protocol.as_deref(), p.port.as_ref(), p.end_port)),
        &ctx.at(".ports"),
    )?;
    let name = match rule.name.as_deref() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => {
            // Antrea's webhook names unnamed rules "<direction>-<action>-<hash>".
            let content = serde_json::to_string(rule).unwrap_or_default();
            format!(
                "{}-{}-{:07x}",
                direction.as_str(),
                action.as_str().to_ascii_lowercase(),
                fnv64(&content) & 0xfff_ffff
            )
        }
    };
    let table = match (direction, baseline) {
        (Direction::Ingress, false) => Table::AntreaPolicyIngressRule,
        (Direction::Egress, false) => Table::AntreaPolicyEgressRule,
        (Direction::Ingress, true) => Table::IngressDefaultRule,
        (Direction::Egress, true) => Table::EgressDefaultRule,
    };
    Ok(Draft {
        policy: policy.clone(),
        direction,
        action,
        key: format!("{policy}/{}/{name}", direction.as_str()),
        name,
        table,
        priority: 0,
        order: Some(NativeOrder {
            tier_priority,
            policy_priority,
            rule_index: u32::try_from(index).unwrap_or(u32::MAX),
        }),
        applied_to: applied,
        peers,
        ports,
    })
}

fn applied_to(
    state: &ClusterState,
    namespace: Option<&str>,
    list: &[AppliedTo],
    ctx: &Ctx<'_>,
) -> Result<BTreeSet<PodRef>, PolicyError> {
    let mut pods = BTreeSet::new();
    for (i, at) in list.iter().enumerate() {
        let ctx = ctx.at(format!("[{i}]"));
        if at.pod_selector.is_none() && at.namespace_selector.is_none() {
            return Err(ctx.at(".podSelector").missing());
        }
        if namespace.is_some() && at.namespace_selector.is_some() {
            return Err(ctx.at(".namespaceSelector").invalid(
                "namespaceSelector",
                "an Antrea NetworkPolicy applies only to its own Namespace; use podSelector",
            ));
        }
        let ns_sel = Selector::parse_opt(
            at.namespace_selector.as_ref(),
            &ctx.at(".namespaceSelector"),
        )?;
        let pod_sel = Selector::parse_opt(at.pod_selector.as_ref(), &ctx.at(".podSelector"))?;
        pods.extend(select_pods(
            state,
            namespace,
            ns_sel.as_ref(),
            pod_sel.as_ref(),
        ));
    }
    Ok(pods)
}

fn peers(
    state: &ClusterState,
    namespace: Option<&str>,
    list: &[AntreaPeer],
    ctx: &Ctx<'_>,
) -> Result<PeerMembers, PolicyError> {
    let list: Vec<_> = list
        .iter()
        .map(|p| PeerView {
            pod_selector: p.pod_selector.as_ref(),
            namespace_selector: p.namespace_selector.as_ref(),
            ip_block: p
                .ip_block
                .as_ref()
                .map(|b| (b.cidr.as_str(), b.except.as_slice())),
        })
        .collect();
    peer_members(state, namespace, &list, ctx)
}

/// Initial OpenFlow priority heuristic of Antrea's agent (`initialOFPriority`): the top of the
/// table minus offsets for Tier, policy priority and rule index. Constants are Antrea's.
pub(crate) fn initial_of_priority(order: &NativeOrder, baseline: bool) -> u16 {
    let (top, bottom, tier_base, prio_base) = if baseline {
        (BASELINE_TOP, BASELINE_BOTTOM, 0u32, 10.0)
    } else if order.tier_priority == 250 {
        (POLICY_TOP, POLICY_BOTTOM, 200u32, 100.0)
    } else {
        (POLICY_TOP, POLICY_BOTTOM, 200u32, 20.0)
    };
    let tier = tier_base.saturating_mul(u32::try_from(order.tier_priority.max(0)).unwrap_or(0));
    // Antrea truncates policyPriority * base to an integer.
    let prio = (order.policy_priority * prio_base).clamp(0.0, f64::from(u32::MAX)) as u32;
    let offset = tier.saturating_add(prio).saturating_add(order.rule_index);
    let range = u32::from(top - bottom);
    if offset > range {
        bottom
    } else {
        top - u16::try_from(offset).unwrap_or(0)
    }
}

pub(crate) const POLICY_TOP: u16 = 65000;
pub(crate) const POLICY_BOTTOM: u16 = 100;
pub(crate) const BASELINE_TOP: u16 = 180;
pub(crate) const BASELINE_BOTTOM: u16 = 10;

/// Assigns OpenFlow priorities to the native drafts of one table.
///
/// Starts from Antrea's heuristic and then walks the distinct ordering keys in precedence
/// order, lowering a priority that would not be strictly below its predecessor (what Antrea's
/// priority assigner achieves by re-assignment). Equal keys share a priority. Returns the
/// objects whose rules had to be clamped at the bottom of the table.
pub(crate) fn assign_priorities(drafts: &mut [&mut Draft], baseline: bool) -> Vec<String> {
    let mut keys: Vec<NativeOrder> = drafts.iter().filter_map(|d| d.order).collect();
    keys.sort_by(|a, b| a.cmp_precedence(b));
    keys.dedup_by(|a, b| a.cmp_precedence(b).is_eq());
    let bottom = if baseline {
        BASELINE_BOTTOM
    } else {
        POLICY_BOTTOM
    };
    let mut assigned: Vec<(NativeOrder, u16, bool)> = Vec::with_capacity(keys.len());
    let mut prev: Option<u16> = None;
    for k in keys {
        let mut p = initial_of_priority(&k, baseline);
        let mut clamped = false;
        if let Some(prev) = prev
            && p >= prev
        {
            p = prev.saturating_sub(1);
        }
        if p < bottom {
            p = bottom;
            clamped = true;
        }
        prev = Some(p);
        assigned.push((k, p, clamped));
    }
    let mut exhausted = BTreeMap::new();
    for d in drafts.iter_mut() {
        if let Some(order) = d.order
            && let Some((_, p, clamped)) = assigned
                .iter()
                .find(|(k, _, _)| k.cmp_precedence(&order).is_eq())
        {
            d.priority = *p;
            if *clamped {
                exhausted.insert(d.policy.to_string(), ());
            }
        }
    }
    exhausted.into_keys().collect()
}
