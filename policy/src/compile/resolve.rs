//! Shared resolution steps: ports, peers, applied-to sets and the named-port split.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::cidr::{host_net, ip_block};
use crate::compiled::{AppliedPod, Direction, Peers, PortRange, Service};
use crate::error::{Ctx, PolicyError};
use crate::model::{ClusterState, Pod, PodRef, Protocol};
use crate::selector::Selector;

/// Which destination ports a policy port entry selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PortSel {
    /// No `port`: every port of the protocol.
    Any,
    Range(PortRange),
    /// A named container port, resolved per destination Pod.
    Named(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PortSpec {
    pub protocol: Protocol,
    pub sel: PortSel,
}

/// Validates a rule's `ports`, each given as `(protocol, port, endPort)` ([`parse_port`]);
/// errors name the entry's index under `ctx`.
pub(crate) fn parse_ports<'a>(
    list: impl IntoIterator<Item = (Option<&'a str>, Option<&'a IntOrString>, Option<i32>)>,
    ctx: &Ctx<'_>,
) -> Result<Vec<PortSpec>, PolicyError> {
    list.into_iter()
        .enumerate()
        .map(|(i, (protocol, port, end_port))| {
            parse_port(protocol, port, end_port, &ctx.at(format!("[{i}]")))
        })
        .collect()
}

/// Validates one `ports[]` entry (K8s NetworkPolicyPort semantics, shared by Antrea-native).
///
/// Defaults: protocol TCP. Errors: unknown protocol, port outside 1..=65535, `endPort` without a
/// numeric `port`, or `endPort < port`.
pub(crate) fn parse_port(
    protocol: Option<&str>,
    port: Option<&IntOrString>,
    end_port: Option<i32>,
    ctx: &Ctx<'_>,
) -> Result<PortSpec, PolicyError> {
    let protocol = match protocol {
        None => Protocol::Tcp,
        Some(p) => Protocol::parse(p).ok_or_else(|| {
            ctx.at(".protocol")
                .port(p, "protocol must be TCP, UDP or SCTP")
        })?,
    };
    let check = |n: i64, field: &str| -> Result<u16, PolicyError> {
        u16::try_from(n)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| ctx.at(field).port(n, "must be between 1 and 65535"))
    };
    let sel = match port {
        None => {
            if let Some(end) = end_port {
                return Err(ctx.at(".endPort").port(end, "endPort needs a numeric port"));
            }
            PortSel::Any
        }
        Some(IntOrString::Int(n)) => {
            let start = check(i64::from(*n), ".port")?;
            range(start, end_port, ctx, &check)?
        }
        Some(IntOrString::String(s)) => match s.parse::<i64>() {
            Ok(n) => {
                let start = check(n, ".port")?;
                range(start, end_port, ctx, &check)?
            }
            Err(_) => {
                if s.is_empty() || s.len() > 15 {
                    return Err(ctx
                        .at(".port")
                        .port(s, "a named port must be 1 to 15 characters"));
                }
                if let Some(end) = end_port {
                    return Err(ctx
                        .at(".endPort")
                        .port(end, "endPort cannot be used with a named port"));
                }
                PortSel::Named(s.clone())
            }
        },
    };
    Ok(PortSpec { protocol, sel })
}

fn range(
    start: u16,
    end_port: Option<i32>,
    ctx: &Ctx<'_>,
    check: &dyn Fn(i64, &str) -> Result<u16, PolicyError>,
) -> Result<PortSel, PolicyError> {
    let end = match end_port {
        None => start,
        Some(e) => {
            let end = check(i64::from(e), ".endPort")?;
            if end < start {
                return Err(ctx
                    .at(".endPort")
                    .port(e, format!("endPort must be >= port {start}")));
            }
            end
        }
    };
    Ok(PortSel::Range(PortRange { start, end }))
}

/// The resolved peer side of a source rule, before the named-port split.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PeerMembers {
    pub any: bool,
    pub pods: BTreeSet<PodRef>,
    pub cidrs: BTreeSet<IpNet>,
}

impl PeerMembers {
    pub fn any() -> Self {
        PeerMembers {
            any: true,
            ..Default::default()
        }
    }
}

/// One peer of a rule as K8s and Antrea-native policies both describe it.
pub(crate) struct PeerView<'a> {
    pub pod_selector: Option<&'a LabelSelector>,
    pub namespace_selector: Option<&'a LabelSelector>,
    /// `ipBlock`: `cidr` and `except`.
    pub ip_block: Option<(&'a str, &'a [String])>,
}

/// The members of a rule's peer list; an empty list is every peer. A peer has selectors
/// (a podSelector without namespaceSelector selects in `namespace`, as [`select_pods`]) or
/// an ipBlock, never both and never neither; errors name the peer's index under `ctx`.
pub(crate) fn peer_members(
    state: &ClusterState,
    namespace: Option<&str>,
    list: &[PeerView<'_>],
    ctx: &Ctx<'_>,
) -> Result<PeerMembers, PolicyError> {
    if list.is_empty() {
        return Ok(PeerMembers::any());
    }
    let mut members = PeerMembers::default();
    for (i, peer) in list.iter().enumerate() {
        let ctx = ctx.at(format!("[{i}]"));
        let has_sel = peer.pod_selector.is_some() || peer.namespace_selector.is_some();
        match (peer.ip_block, has_sel) {
            (Some(_), true) => {
                return Err(ctx.invalid(
                    "ipBlock",
                    "ipBlock cannot be combined with podSelector or namespaceSelector",
                ));
            }
            (Some((cidr, except)), false) => {
                members
                    .cidrs
                    .extend(ip_block(cidr, except, &ctx.at(".ipBlock"))?);
            }
            (None, true) => {
                let ns_sel =
                    Selector::parse_opt(peer.namespace_selector, &ctx.at(".namespaceSelector"))?;
                let pod_sel = Selector::parse_opt(peer.pod_selector, &ctx.at(".podSelector"))?;
                members.pods.extend(select_pods(
                    state,
                    namespace,
                    ns_sel.as_ref(),
                    pod_sel.as_ref(),
                ));
            }
            (None, false) => {
                return Err(ctx.invalid(
                    "{}",
                    "a peer needs podSelector, namespaceSelector or ipBlock",
                ));
            }
        }
    }
    Ok(members)
}

/// Pods selected by an optional namespace selector and an optional pod selector.
///
/// `ns_sel: None` restricts to `default_ns` when given (namespaced policies) or to every
/// namespace when `None` (cluster policies); `pod_sel: None` = every Pod in those namespaces.
pub(crate) fn select_pods(
    state: &ClusterState,
    default_ns: Option<&str>,
    ns_sel: Option<&Selector>,
    pod_sel: Option<&Selector>,
) -> BTreeSet<PodRef> {
    let namespaces: BTreeSet<String> = match (ns_sel, default_ns) {
        (Some(sel), _) => state
            .namespace_names()
            .into_iter()
            .filter(|ns| sel.matches(&state.namespace_labels(ns)))
            .collect(),
        (None, Some(ns)) => BTreeSet::from([ns.to_string()]),
        (None, None) => state.namespace_names(),
    };
    state
        .pods
        .values()
        .filter(|p| namespaces.contains(&p.namespace))
        .filter(|p| pod_sel.is_none_or(|s| s.matches(&p.labels)))
        .map(Pod::pod_ref)
        .collect()
}

/// `AppliedPod` of a Pod known to the state.
pub(crate) fn applied(state: &ClusterState, pod: &PodRef) -> Option<AppliedPod> {
    state.pods.get(pod).map(|p| {
        let mut ips = p.ips.clone();
        ips.sort();
        ips.dedup();
        AppliedPod {
            pod: pod.clone(),
            node: p.node.clone(),
            ips,
        }
    })
}

/// One compiled rule's worth of a source rule after the named-port split.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Split {
    /// `Some(signature)` when the source rule had named ports: part of the rule identity.
    pub suffix: Option<String>,
    pub applied_to: BTreeSet<AppliedPod>,
    pub peers: Peers,
    pub services: Vec<Service>,
}

fn signature(services: &[Service]) -> String {
    let parts: Vec<String> = services.iter().map(|s| s.to_string()).collect();
    parts.join(",")
}

/// Resolves ports against a destination Pod (`None` = an address that is not a Pod: named ports
/// drop out). Returns `None` when the rule had ports and none resolve.
fn resolve_services(ports: &[PortSpec], dest: Option<&Pod>) -> Option<Vec<Service>> {
    if ports.is_empty() {
        return Some(Vec::new());
    }
    let mut out = BTreeSet::new();
    for p in ports {
        let ports = match &p.sel {
            PortSel::Any => None,
            PortSel::Range(r) => Some(*r),
            PortSel::Named(name) => match dest.and_then(|pod| pod.named_port(name, p.protocol)) {
                Some(n) => Some(PortRange { start: n, end: n }),
                None => continue,
            },
        };
        out.insert(Service {
            protocol: p.protocol,
            ports,
        });
    }
    if out.is_empty() {
        None
    } else {
        Some(out.into_iter().collect())
    }
}

/// Splits a source rule into compiled rules, one per distinct set of resolved services.
///
/// Named ports resolve against the destination Pod (ingress: each applied-to Pod; egress: each
/// peer Pod, or every Pod in the cluster when the peer is "any"), and a rule whose named port
/// maps to different numbers on different Pods is split per number, as Antrea does. Without named
/// ports there is exactly one split and it carries no suffix.
pub(crate) fn split_rule(
    state: &ClusterState,
    direction: Direction,
    applied_to: &BTreeSet<PodRef>,
    peers: &PeerMembers,
    ports: &[PortSpec],
) -> Vec<Split> {
    let applied_set = |pods: &mut dyn Iterator<Item = &PodRef>| -> BTreeSet<AppliedPod> {
        pods.filter_map(|p| applied(state, p)).collect()
    };
    let peer_addrs = |pods: &mut dyn Iterator<Item = &PodRef>, cidrs: &BTreeSet<IpNet>| {
        let mut set: BTreeSet<IpNet> = cidrs.clone();
        for p in pods {
            if let Some(pod) = state.pods.get(p) {
                set.extend(pod.ips.iter().copied().map(host_net));
            }
        }
        set
    };
    let has_named = ports.iter().any(|p| matches!(p.sel, PortSel::Named(_)));
    if !has_named {
        let services = resolve_services(ports, None).unwrap_or_default();
        let peers = if peers.any {
            Peers::Any
        } else {
            Peers::Addresses(peer_addrs(&mut peers.pods.iter(), &peers.cidrs))
        };
        return vec![Split {
            suffix: None,
            applied_to: applied_set(&mut applied_to.iter()),
            peers,
            services,
        }];
    }
    let mut out = Vec::new();
    match direction {
        Direction::Ingress => {
            let peers = if peers.any {
                Peers::Any
            } else {
                Peers::Addresses(peer_addrs(&mut peers.pods.iter(), &peers.cidrs))
            };
            let mut groups: BTreeMap<Vec<Service>, BTreeSet<PodRef>> = BTreeMap::new();
            for p in applied_to {
                if let Some(svcs) = resolve_services(ports, state.pods.get(p)) {
                    groups.entry(svcs).or_default().insert(p.clone());
                }
            }
            for (services, pods) in groups {
                out.push(Split {
                    suffix: Some(signature(&services)),
                    applied_to: applied_set(&mut pods.iter()),
                    peers: peers.clone(),
                    services,
                });
            }
        }
        Direction::Egress => {
            let applied = applied_set(&mut applied_to.iter());
            // (any, pods, cidrs) per resolved service set.
            type Group = (bool, BTreeSet<PodRef>, BTreeSet<IpNet>);
            let mut groups: BTreeMap<Vec<Service>, Group> = BTreeMap::new();
            if (peers.any || !peers.cidrs.is_empty())
                && let Some(svcs) = resolve_services(ports, None)
            {
                let g = groups.entry(svcs).or_default();
                g.0 |= peers.any;
                g.2.extend(peers.cidrs.iter().copied());
            }
            let pod_candidates: Vec<PodRef> = if peers.any {
                state.pods.keys().cloned().collect()
            } else {
                peers.pods.iter().cloned().collect()
            };
            for p in pod_candidates {
                if let Some(svcs) = resolve_services(ports, state.pods.get(&p)) {
                    groups.entry(svcs).or_default().1.insert(p);
                }
            }
            for (services, (any, pods, cidrs)) in groups {
                let peers = if any {
                    Peers::Any
                } else {
                    Peers::Addresses(peer_addrs(&mut pods.iter(), &cidrs))
                };
                out.push(Split {
                    suffix: Some(signature(&services)),
                    applied_to: applied.clone(),
                    peers,
                    services,
                });
            }
        }
    }
    out
}
