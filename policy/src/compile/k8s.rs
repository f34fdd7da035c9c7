//! Kubernetes `networking.k8s.io/v1` NetworkPolicy → rule drafts and isolation.
//!
//! Semantics are the Kubernetes API's, compiled as Antrea's controller does (reference §3.3-§4):
//! every rule is an allow rule in `IngressRule` / `EgressRule`; a Pod selected by a policy whose
//! `policyTypes` include a direction is isolated in that direction (default drop in
//! `IngressDefaultRule` / `EgressDefaultRule`).

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};

use super::resolve::{PeerMembers, PeerView, PortSpec, parse_ports, peer_members, select_pods};
use super::{Draft, PolicyOutput, fnv64};
use crate::compiled::{Direction, K8S_RULE_PRIORITY, PolicyKind, PolicyRef, RuleAction};
use crate::error::{Ctx, PolicyError};
use crate::model::ClusterState;
use crate::selector::Selector;
use crate::table::Table;

/// Compiles one K8s NetworkPolicy.
///
/// `policyTypes` defaulting follows the API: absent/empty → `Ingress`, plus `Egress` when the
/// policy has egress rules. Rules of a direction not in `policyTypes` are ignored. An empty or
/// absent `from` / `to` matches every address; an empty or absent `ports` matches every port.
///
/// Errors: missing metadata, unknown policyType, invalid selectors, CIDRs or ports, a peer with
/// no selector and no ipBlock, or ipBlock combined with a selector.
pub(crate) fn compile(
    state: &ClusterState,
    np: &NetworkPolicy,
) -> Result<PolicyOutput, PolicyError> {
    let namespace = np.metadata.namespace.clone().unwrap_or_default();
    let name = np.metadata.name.clone().unwrap_or_default();
    let policy = PolicyRef {
        kind: PolicyKind::K8sNetworkPolicy,
        namespace: Some(namespace.clone()),
        name: name.clone(),
    };
    let object = policy.to_string();
    if name.is_empty() {
        return Err(Ctx::new(&object, "metadata.name").missing());
    }
    if namespace.is_empty() {
        return Err(Ctx::new(&object, "metadata.namespace").missing());
    }
    let spec = np
        .spec
        .as_ref()
        .ok_or_else(|| Ctx::new(&object, "spec").missing())?;
    let root = Ctx::new(&object, "spec");

    let pod_sel = Selector::parse_opt(spec.pod_selector.as_ref(), &root.at(".podSelector"))?
        .unwrap_or_else(Selector::everything);
    let selected = select_pods(state, Some(&namespace), None, Some(&pod_sel));

    let ingress_rules = spec.ingress.as_deref().unwrap_or_default();
    let egress_rules = spec.egress.as_deref().unwrap_or_default();
    let (mut isolate_in, mut isolate_eg) = (false, false);
    match spec.policy_types.as_deref() {
        None | Some([]) => {
            isolate_in = true;
            isolate_eg = !egress_rules.is_empty();
        }
        Some(types) => {
            for (i, t) in types.iter().enumerate() {
                match t.as_str() {
                    "Ingress" => isolate_in = true,
                    "Egress" => isolate_eg = true,
                    other => {
                        return Err(root
                            .at(format!(".policyTypes[{i}]"))
                            .invalid(other, "policyType must be Ingress or Egress"));
                    }
                }
            }
        }
    }

    let mut out = PolicyOutput::default();
    if isolate_in {
        out.isolate_ingress.extend(selected.iter().cloned());
    }
    if isolate_eg {
        out.isolate_egress.extend(selected.iter().cloned());
    }

    let mut seen: BTreeMap<(Direction, u64), u32> = BTreeMap::new();
    let mut push = |direction: Direction,
                    content: String,
                    peers: PeerMembers,
                    ports: Vec<PortSpec>,
                    out: &mut PolicyOutput| {
        let hash = fnv64(&content);
        let dup = seen.entry((direction, hash)).or_insert(0);
        let mut key = format!("{object}/{}/{hash:016x}", direction.as_str());
        if *dup > 0 {
            key.push_str(&format!(".{dup}"));
        }
        *dup += 1;
        out.drafts.push(Draft {
            policy: policy.clone(),
            direction,
            action: RuleAction::Allow,
            name: String::new(),
            key,
            table: match direction {
                Direction::Ingress => Table::IngressRule,
                Direction::Egress => Table::EgressRule,
            },
            priority: K8S_RULE_PRIORITY,
            order: None,
            applied_to: selected.clone(),
            peers,
            ports,
        });
    };

    if isolate_in {
        for (i, rule) in ingress_rules.iter().enumerate() {
            let ctx = root.at(format!(".ingress[{i}]"));
            let peers = peers(state, &namespace, rule.from.as_deref(), &ctx.at(".from"))?;
            let ports = ports(rule.ports.as_deref(), &ctx.at(".ports"))?;
            let content = serde_json::to_string(rule).unwrap_or_default();
            push(Direction::Ingress, content, peers, ports, &mut out);
        }
    }
    if isolate_eg {
        for (i, rule) in egress_rules.iter().enumerate() {
            let ctx = root.at(format!(".egress[{i}]"));
            let peers = peers(state, &namespace, rule.to.as_deref(), &ctx.at(".to"))?;
            let ports = ports(rule.ports.as_deref(), &ctx.at(".ports"))?;
            let content = serde_json::to_string(rule).unwrap_or_default();
            push(Direction::Egress, content, peers, ports, &mut out);
        }
    }
    Ok(out)
}

fn ports(list: Option<&[NetworkPolicyPort]>, ctx: &Ctx<'_>) -> Result<Vec<PortSpec>, PolicyError> {
    let list = list.unwrap_or_default().iter();
    parse_ports(
        list.map(|p| (p.protocol.as_deref(), p.port.as_ref(), p.end_port)),
        ctx,
    )
}

fn peers(
    state: &ClusterState,
    namespace: &str,
    list: Option<&[NetworkPolicyPeer]>,
    ctx: &Ctx<'_>,
) -> Result<PeerMembers, PolicyError> {
    let list: Vec<_> = list
        .unwrap_or_default()
        .iter()
        .map(|p| PeerView {
            pod_selector: p.pod_selector.as_ref(),
            namespace_selector: p.namespace_selector.as_ref(),
            ip_block: p.ip_block.as_ref().map(|b| {
                let except: &[String] = b.except.as_deref().unwrap_or_default();
                (b.cidr.as_str(), except)
            }),
        })
        .collect();
    peer_members(state, Some(namespace), &list, ctx)
}
