//! Domain types of the desired state and their conversion from the proto (`TryFrom`, with
//! errors naming the object and field).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use traceflow_proto::v1 as pb;

/// An object of a NodeState that could not be converted; it is skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidObject {
    #[error("peer {peer:?}: invalid {field} {value:?}")]
    Peer {
        peer: String,
        field: &'static str,
        value: String,
    },
    #[error("service {service:?}: invalid {field} {value:?}")]
    Service {
        service: String,
        field: &'static str,
        value: String,
    },
    #[error("rule {conj_id}: invalid {field} {value:?}")]
    Rule {
        conj_id: u32,
        field: &'static str,
        value: String,
    },
    #[error("egress {egress:?}: invalid {field} {value:?}")]
    Egress {
        egress: String,
        field: &'static str,
        value: String,
    },
}

/// Another Node reachable through the Geneve tunnel: its Pod CIDRs and its tunnel (underlay)
/// address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub pod_cidrs: Vec<IpNet>,
    pub tunnel_ip: IpAddr,
}

impl std::str::FromStr for Peer {
    type Err = String;

    /// `CIDR[,CIDR...]=TUNNEL_IP`, e.g. `10.2.0.0/24,fd00:2::/64=192.168.77.2`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (cidrs, ip) = s
            .split_once('=')
            .ok_or_else(|| format!("peer {s:?} is not CIDR[,CIDR...]=TUNNEL_IP"))?;
        let pod_cidrs = cidrs
            .split(',')
            .map(|c| {
                c.trim()
                    .parse()
                    .map_err(|_| format!("invalid Pod CIDR {c:?} in peer {s:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tunnel_ip = ip
            .trim()
            .parse()
            .map_err(|_| format!("invalid tunnel IP {ip:?} in peer {s:?}"))?;
        Ok(Self {
            pod_cidrs,
            tunnel_ip,
        })
    }
}

/// Another Node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerNode {
    pub name: String,
    pub pod_cidrs: Vec<IpNet>,
    /// Underlay addresses, first of each family.
    pub tunnel_ips: Vec<IpAddr>,
}

impl PeerNode {
    /// The address Geneve packets for this Node go to: the first tunnel IP (the underlay
    /// family the adapter listed first). `None` when the peer has none.
    pub fn tunnel_ip(&self) -> Option<IpAddr> {
        self.tunnel_ips.first().copied()
    }
}

impl TryFrom<pb::NodeInfo> for PeerNode {
    type Error = InvalidObject;

    fn try_from(n: pb::NodeInfo) -> Result<Self, Self::Error> {
        let pb::NodeInfo {
            name,
            pod_cidrs,
            tunnel_ips,
        } = n;
        let bad = |field, value: String| InvalidObject::Peer {
            peer: name.clone(),
            field,
            value,
        };
        let pod_cidrs = pod_cidrs
            .iter()
            .map(|c| {
                c.parse::<IpNet>()
                    .map(|n| n.trunc())
                    .map_err(|_| bad("pod CIDR", c.clone()))
            })
            .collect::<Result<_, _>>()?;
        let tunnel_ips = parse_each(&tunnel_ips, "tunnel IP", bad)?;
        Ok(Self {
            name,
            pod_cidrs,
            tunnel_ips,
        })
    }
}

/// One ready endpoint of a Service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
    pub node: String,
    pub pod_namespace: String,
    pub pod_name: String,
}

/// One port of a Service: protocol number (6, 17, 132), the Service port and its endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: String,
    pub protocol: u8,
    pub port: u16,
    pub endpoints: Vec<Endpoint>,
}

/// A ClusterIP Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
}

impl Service {
    /// The store key, `"<ns>/<name>"`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// `"TCP"` / `"UDP"` / `"SCTP"` → IP protocol number.
pub fn protocol_number(p: &str) -> Option<u8> {
    match p.to_ascii_uppercase().as_str() {
        "TCP" => Some(6),
        "UDP" => Some(17),
        "SCTP" => Some(132),
        _ => None,
    }
}

fn port_u16(p: i32) -> Option<u16> {
    u16::try_from(p).ok()
}

/// A Service or endpoint port: 1 to 65535.
fn nonzero_port(p: i32) -> Option<u16> {
    port_u16(p).filter(|p| *p != 0)
}

/// Parses each of `values`; the first that does not parse is `bad(field, value)`.
fn parse_each<T: std::str::FromStr, C: FromIterator<T>>(
    values: &[String],
    field: &'static str,
    bad: impl Fn(&'static str, String) -> InvalidObject,
) -> Result<C, InvalidObject> {
    values
        .iter()
        .map(|v| v.parse().map_err(|_| bad(field, v.clone())))
        .collect()
}

impl TryFrom<pb::ServiceState> for Service {
    type Error = InvalidObject;

    fn try_from(s: pb::ServiceState) -> Result<Self, Self::Error> {
        let pb::ServiceState {
            namespace,
            name,
            cluster_ips,
            ports,
        } = s;
        let key = format!("{namespace}/{name}");
        let bad = |field, value: String| InvalidObject::Service {
            service: key.clone(),
            field,
            value,
        };
        let cluster_ips = parse_each(&cluster_ips, "cluster IP", bad)?;
        let mut out = Vec::with_capacity(ports.len());
        for p in ports {
            let pb::ServicePortState {
                name,
                protocol,
                port,
                endpoints,
            } = p;
            let proto = protocol_number(&protocol).ok_or_else(|| bad("protocol", protocol))?;
            let port = nonzero_port(port).ok_or_else(|| bad("port", port.to_string()))?;
            let mut eps = Vec::with_capacity(endpoints.len());
            for e in endpoints {
                let pb::ServiceEndpoint {
                    ip,
                    port,
                    node,
                    pod_namespace,
                    pod_name,
                } = e;
                eps.push(Endpoint {
                    ip: ip.parse().map_err(|_| bad("endpoint IP", ip.clone()))?,
                    port: nonzero_port(port)
                        .ok_or_else(|| bad("endpoint port", port.to_string()))?,
                    node,
                    pod_namespace,
                    pod_name,
                });
            }
            // Stable order: the select group's buckets do not churn on reordering.
            eps.sort();
            out.push(ServicePort {
                name,
                protocol: proto,
                port,
                endpoints: eps,
            });
        }
        Ok(Self {
            namespace,
            name,
            cluster_ips,
            ports: out,
        })
    }
}

/// Direction of a policy rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleDirection {
    Ingress,
    Egress,
}

/// Action of a policy rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleAction {
    Allow,
    Drop,
    Reject,
    Pass,
}

/// A protocol / port range of a rule; `port == 0` = every port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulePort {
    pub protocol: u8,
    pub port: u16,
    /// 0 = just `port`.
    pub end_port: u16,
}

/// One compiled rule as this Node enforces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRule {
    pub conj_id: u32,
    pub direction: RuleDirection,
    pub action: RuleAction,
    /// `"K8sNetworkPolicy"`, `"AntreaNetworkPolicy"`, `"AntreaClusterNetworkPolicy"`.
    pub policy_type: String,
    pub policy_namespace: String,
    pub policy_name: String,
    pub rule_name: String,
    /// The Antrea table name the adapter chose.
    pub table: String,
    pub priority: u32,
    pub applied_to: Vec<IpAddr>,
    pub any_peer: bool,
    pub peers: Vec<IpNet>,
    pub services: Vec<RulePort>,
}

impl PolicyRule {
    /// `"<Type>:<ns>/<name>"` (or `"<Type>:<name>"` when cluster-scoped), as observations
    /// report `networkPolicy`.
    pub fn policy_ref(&self) -> String {
        if self.policy_namespace.is_empty() {
            format!("{}:{}", self.policy_type, self.policy_name)
        } else {
            format!(
                "{}:{}/{}",
                self.policy_type, self.policy_namespace, self.policy_name
            )
        }
    }
}

impl TryFrom<pb::PolicyRule> for PolicyRule {
    type Error = InvalidObject;

    fn try_from(r: pb::PolicyRule) -> Result<Self, Self::Error> {
        let pb::PolicyRule {
            conjunction_id,
            direction,
            action,
            policy_type,
            policy_namespace,
            policy_name,
            rule_name,
            table,
            priority,
            applied_to_ips,
            any_peer,
            peer_cidrs,
            services,
        } = r;
        let bad = |field, value: String| InvalidObject::Rule {
            conj_id: conjunction_id,
            field,
            value,
        };
        if conjunction_id == 0 {
            return Err(bad("conjunction id", "0".into()));
        }
        let direction = match direction.as_str() {
            "Ingress" => RuleDirection::Ingress,
            "Egress" => RuleDirection::Egress,
            _ => return Err(bad("direction", direction)),
        };
        let action = match action.as_str() {
            "Allow" => RuleAction::Allow,
            "Drop" => RuleAction::Drop,
            "Reject" => RuleAction::Reject,
            "Pass" => RuleAction::Pass,
            _ => return Err(bad("action", action)),
        };
        let applied_to = parse_each(&applied_to_ips, "applied-to IP", bad)?;
        let peers = peer_cidrs
            .iter()
            .map(|c| {
                c.parse::<IpNet>()
                    .or_else(|_| c.parse::<IpAddr>().map(IpNet::from))
                    .map(|n| n.trunc())
                    .map_err(|_| bad("peer CIDR", c.clone()))
            })
            .collect::<Result<_, _>>()?;
        let services = services
            .into_iter()
            .map(|s| {
                Ok(RulePort {
                    protocol: protocol_number(&s.protocol)
                        .ok_or_else(|| bad("protocol", s.protocol.clone()))?,
                    port: port_u16(s.port).ok_or_else(|| bad("port", s.port.to_string()))?,
                    end_port: port_u16(s.end_port)
                        .ok_or_else(|| bad("end port", s.end_port.to_string()))?,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            conj_id: conjunction_id,
            direction,
            action,
            policy_type,
            policy_namespace,
            policy_name,
            rule_name,
            table,
            priority,
            applied_to,
            any_peer,
            peers,
            services,
        })
    }
}

/// Applies one kind of object of a delta to `map`: removes the `delete` keys, then inserts
/// each `upsert` converted under `key(&raw)`. One that does not convert is not kept in its
/// stale form either: its key is removed and the error collected.
fn apply_delta<K: Ord, P, T: TryFrom<P, Error = InvalidObject>>(
    map: &mut BTreeMap<K, T>,
    delete: Vec<K>,
    upsert: Vec<P>,
    errors: &mut Vec<InvalidObject>,
    key: impl Fn(&P) -> K,
) {
    for k in delete {
        map.remove(&k);
    }
    for raw in upsert {
        let k = key(&raw);
        match T::try_from(raw) {
            Ok(v) => {
                map.insert(k, v);
            }
            Err(e) => {
                map.remove(&k);
                errors.push(e);
            }
        }
    }
}

/// Everything the pipeline is computed from besides the OVSDB ports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredState {
    /// This Node as the adapter described it (set by a replace).
    pub node: Option<PeerNode>,
    /// Other Nodes, by name.
    pub peers: BTreeMap<String, PeerNode>,
    /// Services by `"<ns>/<name>"`.
    pub services: BTreeMap<String, Service>,
    /// Rules by conjunction id.
    pub rules: BTreeMap<u32, PolicyRule>,
    /// Local Pod IPs isolated by K8s NetworkPolicies for ingress / egress.
    pub isolated_ingress: BTreeSet<IpAddr>,
    pub isolated_egress: BTreeSet<IpAddr>,
    /// Antrea Egresses with an egress IP and Node, by name (sent whole).
    pub egresses: BTreeMap<String, Egress>,
    /// DSCP tags of the live-traffic traces running on this Node (`LiveTrace` /
    /// `StopLiveTrace`, not `NodeState`): the policy drop tables report packets carrying them.
    /// A replace keeps them; they end with their trace.
    pub live_tags: BTreeSet<u8>,
    /// The cluster's key for trace packets crossing the tunnel (`NodeState.trace_tunnel_key`;
    /// none until a replace brought one).
    pub trace_tunnel_key: Option<u64>,
}

impl DesiredState {
    /// Applies one message in place (module contract); returns the objects it skipped.
    pub fn apply(&mut self, msg: pb::NodeState) -> Vec<InvalidObject> {
        let pb::NodeState {
            replace,
            node,
            peers_upsert,
            peers_delete,
            services_upsert,
            services_delete,
            rules_upsert,
            rules_delete,
            isolation,
            egresses,
            trace_tunnel_key,
        } = msg;
        let mut errors = Vec::new();
        if replace {
            *self = Self {
                live_tags: std::mem::take(&mut self.live_tags),
                trace_tunnel_key: (trace_tunnel_key != 0).then_some(trace_tunnel_key),
                ..Self::default()
            };
        }
        if let Some(n) = node {
            match PeerNode::try_from(n) {
                Ok(n) => self.node = Some(n),
                Err(e) => errors.push(e),
            }
        }
        // A peer we cannot route to must not keep stale routes either.
        apply_delta(
            &mut self.peers,
            peers_delete,
            peers_upsert,
            &mut errors,
            |p| p.name.clone(),
        );
        apply_delta(
            &mut self.services,
            services_delete,
            services_upsert,
            &mut errors,
            |s| format!("{}/{}", s.namespace, s.name),
        );
        apply_delta(
            &mut self.rules,
            rules_delete,
            rules_upsert,
            &mut errors,
            |r| r.conjunction_id,
        );
        if let Some(iso) = isolation {
            let parse = |ips: Vec<String>, errors: &mut Vec<InvalidObject>| {
                ips.into_iter()
                    .filter_map(|ip| match ip.parse() {
                        Ok(ip) => Some(ip),
                        Err(_) => {
                            errors.push(InvalidObject::Rule {
                                conj_id: 0,
                                field: "isolated IP",
                                value: ip,
                            });
                            None
                        }
                    })
                    .collect()
            };
            self.isolated_ingress = parse(iso.ingress_ips, &mut errors);
            self.isolated_egress = parse(iso.egress_ips, &mut errors);
        }
        if let Some(set) = egresses {
            self.egresses.clear();
            for raw in set.egresses {
                let name = raw.name.clone();
                match Egress::from_state(raw) {
                    Ok(Some(e)) => {
                        self.egresses.insert(name, e);
                    }
                    Ok(None) => {}
                    Err(e) => errors.push(e),
                }
            }
        }
        errors
    }

    /// The Egress applying to a source Pod IP (the first by name, as Antrea picks one Egress
    /// per Pod).
    pub fn egress_of(&self, pod_ip: IpAddr) -> Option<&Egress> {
        self.egresses
            .values()
            .find(|e| e.egress_ip.is_ipv4() == pod_ip.is_ipv4() && e.pod_ips.contains(&pod_ip))
    }

    /// The Egress whose SNAT mark is `mark` (what the egress Node reads from `pkt_mark`).
    pub fn egress_by_mark(&self, mark: u32) -> Option<&Egress> {
        self.egresses.values().find(|e| u32::from(e.mark) == mark)
    }

    /// The peers the pipeline routes to: one [`Peer`] per peer Node with a tunnel IP, in
    /// name order.
    pub fn tunnel_peers(&self) -> Vec<Peer> {
        self.peers
            .values()
            .filter_map(|p| {
                Some(Peer {
                    pod_cidrs: p.pod_cidrs.clone(),
                    tunnel_ip: p.tunnel_ip()?,
                })
            })
            .collect()
    }
}

/// An Antrea Egress with an assigned egress IP and Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Egress {
    pub name: String,
    pub egress_ip: IpAddr,
    pub egress_node: String,
    /// Every Pod IP (cluster-wide) it applies to.
    pub pod_ips: BTreeSet<IpAddr>,
    /// The SNAT `pkt_mark`, 1..255.
    pub mark: u8,
}

impl Egress {
    /// The proto → domain conversion; `Ok(None)` while the Egress has no IP or Node yet
    /// (Antrea marks nothing then).
    pub fn from_state(e: pb::EgressState) -> Result<Option<Self>, InvalidObject> {
        let pb::EgressState {
            name,
            egress_ip,
            egress_node,
            pod_ips,
            mark,
        } = e;
        if egress_ip.is_empty() || egress_node.is_empty() {
            return Ok(None);
        }
        let bad = |field, value: String| InvalidObject::Egress {
            egress: name.clone(),
            field,
            value,
        };
        let egress_ip = egress_ip
            .parse()
            .map_err(|_| bad("egress IP", egress_ip.clone()))?;
        let pod_ips = parse_each(&pod_ips, "Pod IP", bad)?;
        let mark = u8::try_from(mark)
            .ok()
            .filter(|m| *m != 0)
            .ok_or_else(|| bad("mark", mark.to_string()))?;
        Ok(Some(Egress {
            name,
            egress_ip,
            egress_node,
            pod_ips,
            mark,
        }))
    }
}
