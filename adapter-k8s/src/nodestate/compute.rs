//! Pure computation: inventory index + compiled policies → one Node's [`NodeDesired`].
//!
//! Nothing here does I/O or holds a lock; callers pass a borrowed [`Index`].

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use traceflow_policy::{
    AppliedPod, ClusterState, CompiledPolicies, CompiledRule, Direction, Namespace, Peers, Pod,
};
use traceflow_proto::v1 as pb;

use super::NodeDesired;
use crate::inventory::{Index, PodRecord, PolicySource, ServiceRecord, index::key};

/// The compiler's input built from the index.
///
/// Pods: every Pod that is not hostNetwork and not finished (`Succeeded` / `Failed`), with its
/// labels, Node, IPs and named ports (Antrea leaves hostNetwork Pods out of policy groups).
/// Namespaces, policies of every kind and user Tiers as they are.
pub fn cluster_state(index: &Index) -> ClusterState {
    let mut state = ClusterState::new();
    for ns in index.namespaces() {
        state.apply_namespace(Namespace {
            name: ns.name.clone(),
            labels: ns
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        });
    }
    for p in index.pods() {
        if p.inventory.host_network || p.is_finished() {
            continue;
        }
        let inv = &p.inventory;
        state.apply_pod(Pod {
            namespace: inv.namespace.clone(),
            name: inv.name.clone(),
            labels: inv
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            node: inv.node.clone(),
            ips: parse_ips(&inv.ips),
            ports: p.ports.clone(),
        });
    }
    for p in index.policies() {
        match &p.source {
            PolicySource::K8s(np) => state.apply_k8s_policy(np.as_ref().clone()),
            PolicySource::Antrea(np) => state.apply_antrea_policy(np.as_ref().clone()),
            PolicySource::AntreaCluster(np) => state.apply_cluster_policy(np.as_ref().clone()),
        }
    }
    for t in index.tiers() {
        state.apply_tier(t.clone());
    }
    state
}

fn parse_ips(ips: &[String]) -> Vec<IpAddr> {
    ips.iter().filter_map(|ip| ip.parse().ok()).collect()
}

/// The cluster-wide part of every Node's state (Nodes and Services), computed once per
/// recompute and shared by all Nodes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterView {
    pub nodes: BTreeMap<String, pb::NodeInfo>,
    pub services: BTreeMap<String, pb::ServiceState>,
    pub egresses: pb::EgressSet,
}

impl ClusterView {
    pub fn from_index(index: &Index) -> Self {
        let nodes = index
            .nodes()
            .map(|n| (n.name.clone(), node_info(n)))
            .collect();
        let pods: Vec<&PodRecord> = index.pods().collect();
        let services = index
            .services()
            .filter_map(|s| service_state(s, &pods))
            .map(|s| (key(&s.namespace, &s.name), s))
            .collect();
        ClusterView {
            nodes,
            services,
            egresses: egress_set(index),
        }
    }

    /// The desired state of `node`: its info, every other Node as a peer, every Service, and
    /// the rules and isolation of `compiled.for_node(node)`.
    pub fn node_state(&self, compiled: &CompiledPolicies, node: &str) -> NodeDesired {
        let view = compiled.for_node(node);
        let info = self
            .nodes
            .get(node)
            .cloned()
            .unwrap_or_else(|| pb::NodeInfo {
                name: node.to_string(),
                ..Default::default()
            });
        NodeDesired {
            node: info,
            peers: self
                .nodes
                .iter()
                .filter(|(name, _)| name.as_str() != node)
                .map(|(name, n)| (name.clone(), n.clone()))
                .collect(),
            services: self.services.clone(),
            rules: view
                .rules
                .values()
                .map(|r| (r.conj_id, rule_to_pb(r)))
                .collect(),
            isolation: pb::Isolation {
                ingress_ips: ips_of(&view.isolation.ingress),
                egress_ips: ips_of(&view.isolation.egress),
            },
            egresses: self.egresses.clone(),
            trace_tunnel_key: 0,
        }
    }
}

/// [`ClusterView::node_state`] from scratch (tests and one-off callers; the publisher builds the
/// view once per recompute).
pub fn node_state(index: &Index, compiled: &CompiledPolicies, node: &str) -> NodeDesired {
    ClusterView::from_index(index).node_state(compiled, node)
}

/// Every Egress with the IPs of the running, non-hostNetwork Pods it applies to; marks are
/// 1-based positions by name (at most 255 Egresses get one; the rest are left out, loudly).
fn egress_set(index: &Index) -> pb::EgressSet {
    let ns_labels: BTreeMap<&str, BTreeMap<String, String>> = index
        .namespaces()
        .map(|n| {
            let labels = n
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (n.name.as_str(), labels)
        })
        .collect();
    let none = BTreeMap::new();
    let mut egresses = Vec::new();
    for (i, e) in index.egresses().enumerate() {
        let Ok(mark) = u8::try_from(i + 1) else {
            tracing::warn!(egress = %e.name, "more than 255 Egresses; this one gets no SNAT mark");
            continue;
        };
        let mut pod_ips: Vec<IpAddr> = index
            .pods()
            .filter(|p| !p.inventory.host_network && !p.is_finished())
            .filter(|p| {
                let labels: BTreeMap<String, String> = p
                    .inventory
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let ns = ns_labels
                    .get(p.inventory.namespace.as_str())
                    .unwrap_or(&none);
                e.selects(&labels, ns)
            })
            .flat_map(|p| parse_ips(&p.inventory.ips))
            .collect();
        pod_ips.sort();
        egresses.push(pb::EgressState {
            name: e.name.clone(),
            egress_ip: e.egress_ip.clone(),
            egress_node: e.egress_node.clone(),
            pod_ips: pod_ips.iter().map(ToString::to_string).collect(),
            mark: u32::from(mark),
        });
    }
    pb::EgressSet { egresses }
}

/// A Node's `NodeInfo`: Pod CIDRs, and the first InternalIP of each family as tunnel IPs.
fn node_info(n: &pb::InventoryNode) -> pb::NodeInfo {
    let mut tunnel_ips = Vec::new();
    let mut families = BTreeSet::new();
    for ip in parse_ips(&n.internal_ips) {
        if families.insert(ip.is_ipv6()) {
            tunnel_ips.push(ip.to_string());
        }
    }
    pb::NodeInfo {
        name: n.name.clone(),
        pod_cidrs: n.pod_cidrs.clone(),
        tunnel_ips,
    }
}

/// Service `namespace/name` with its ready endpoints, as every Node's state carries it (what
/// its load balancer may DNAT to); `None` when unknown or headless.
pub fn service_state_of(index: &Index, namespace: &str, name: &str) -> Option<pb::ServiceState> {
    let svc = index
        .services()
        .find(|s| s.inventory.namespace == namespace && s.inventory.name == name)?;
    let pods: Vec<&PodRecord> = index
        .pods()
        .filter(|p| p.inventory.namespace == namespace)
        .collect();
    service_state(svc, &pods)
}

/// A Service with its ready endpoints; `None` when it has no ClusterIP (headless or unset).
fn service_state(svc: &ServiceRecord, pods: &[&PodRecord]) -> Option<pb::ServiceState> {
    let inv = &svc.inventory;
    let cluster_ips = parse_ips(&inv.cluster_ips);
    if cluster_ips.is_empty() {
        return None;
    }
    let families: BTreeSet<bool> = cluster_ips.iter().map(IpAddr::is_ipv6).collect();
    let selected: Vec<&PodRecord> = match &svc.selector {
        Some(sel) if !sel.is_empty() => pods
            .iter()
            .copied()
            .filter(|p| {
                p.ready
                    && p.inventory.namespace == inv.namespace
                    && sel
                        .iter()
                        .all(|(k, v)| p.inventory.labels.get(k) == Some(v))
            })
            .collect(),
        _ => Vec::new(),
    };
    let ports = inv
        .ports
        .iter()
        .map(|sp| {
            let protocol = sp.protocol.to_ascii_uppercase();
            let mut endpoints: Vec<pb::ServiceEndpoint> = selected
                .iter()
                .filter_map(|p| Some((p, p.target_port(sp)?)))
                .flat_map(|(p, port)| {
                    parse_ips(&p.inventory.ips)
                        .into_iter()
                        .filter(|ip| families.contains(&ip.is_ipv6()))
                        .map(move |ip| pb::ServiceEndpoint {
                            ip: ip.to_string(),
                            port,
                            node: p.inventory.node.clone(),
                            pod_namespace: p.inventory.namespace.clone(),
                            pod_name: p.inventory.name.clone(),
                        })
                })
                .collect();
            endpoints.sort_by(|a, b| (&a.ip, a.port).cmp(&(&b.ip, b.port)));
            pb::ServicePortState {
                name: sp.name.clone(),
                protocol,
                port: sp.port,
                endpoints,
            }
        })
        .collect();
    Some(pb::ServiceState {
        namespace: inv.namespace.clone(),
        name: inv.name.clone(),
        cluster_ips: cluster_ips.iter().map(ToString::to_string).collect(),
        ports,
    })
}

fn ips_of(pods: &BTreeSet<AppliedPod>) -> Vec<String> {
    let ips: BTreeSet<IpAddr> = pods.iter().flat_map(|p| p.ips.iter().copied()).collect();
    ips.iter().map(ToString::to_string).collect()
}

/// A compiled rule (already narrowed to one Node) in the proto shape.
pub fn rule_to_pb(r: &CompiledRule) -> pb::PolicyRule {
    let (any_peer, peer_cidrs) = match &r.peers {
        Peers::Any => (true, Vec::new()),
        Peers::Addresses(set) => (false, set.iter().map(ToString::to_string).collect()),
    };
    pb::PolicyRule {
        conjunction_id: r.conj_id,
        direction: match r.direction {
            Direction::Ingress => "Ingress",
            Direction::Egress => "Egress",
        }
        .to_string(),
        action: r.action.as_str().to_string(),
        policy_type: r.policy.kind.as_str().to_string(),
        policy_namespace: r.policy.namespace.clone().unwrap_or_default(),
        policy_name: r.policy.name.clone(),
        rule_name: r.name.clone(),
        table: r.table.name().to_string(),
        priority: u32::from(r.priority),
        applied_to_ips: ips_of(&r.applied_to),
        any_peer,
        peer_cidrs,
        services: r
            .services
            .iter()
            .map(|s| {
                let (port, end_port) = match s.ports {
                    None => (0, 0),
                    Some(range) if range.start == range.end => (i32::from(range.start), 0),
                    Some(range) => (i32::from(range.start), i32::from(range.end)),
                };
                pb::RuleService {
                    protocol: s.protocol.as_str().to_string(),
                    port,
                    end_port,
                }
            })
            .collect(),
    }
}
