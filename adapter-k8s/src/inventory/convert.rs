//! Kubernetes objects → inventory records (the proto shapes the manager stores, plus the
//! adapter-only details of [`super::record`]).
//!
//! Each function checks what the adapter relies on (names, parseable IPs and CIDRs) and returns
//! [`InvalidObject`] naming the field otherwise; the watcher logs and skips such objects.
//! Policies are kept whole and checked by the policy compiler, which reports bad fields itself.

use std::{collections::BTreeMap, net::IpAddr};

use k8s_openapi::api::{
    core::v1::{Namespace, Node, Pod, Service},
    networking::v1::NetworkPolicy,
};
use kube::api::DynamicObject;
use traceflow_policy::{
    AntreaClusterNetworkPolicy, AntreaNetworkPolicy, NamedPort, Protocol, Tier,
};
use traceflow_proto::v1 as pb;

use super::record::{EgressRecord, PodRecord, PolicyRecord, PolicySource, ServiceRecord};

/// An object the index cannot use; `field` names what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{kind} {name:?}: {field}: {problem}")]
pub struct InvalidObject {
    pub kind: &'static str,
    pub name: String,
    pub field: &'static str,
    pub problem: String,
}

fn invalid(
    kind: &'static str,
    name: &str,
    field: &'static str,
    problem: impl Into<String>,
) -> InvalidObject {
    InvalidObject {
        kind,
        name: name.to_string(),
        field,
        problem: problem.into(),
    }
}

fn required_name(kind: &'static str, name: Option<&String>) -> Result<String, InvalidObject> {
    match name {
        Some(n) if !n.is_empty() => Ok(n.clone()),
        _ => Err(invalid(kind, "", "metadata.name", "missing")),
    }
}

fn labels(map: Option<&BTreeMap<String, String>>) -> std::collections::HashMap<String, String> {
    map.map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

fn parse_ip(
    kind: &'static str,
    name: &str,
    field: &'static str,
    ip: &str,
) -> Result<String, InvalidObject> {
    ip.parse::<IpAddr>()
        .map(|ip| ip.to_string())
        .map_err(|_| invalid(kind, name, field, format!("{ip:?} is not an IP address")))
}

/// A Node: name, `spec.podCIDRs` (or `spec.podCIDR`), InternalIP addresses, labels.
pub fn node(node: &Node) -> Result<pb::InventoryNode, InvalidObject> {
    let name = required_name("Node", node.metadata.name.as_ref())?;
    let spec = node.spec.as_ref();
    let mut cidrs: Vec<String> = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
    if cidrs.is_empty()
        && let Some(c) = spec.and_then(|s| s.pod_cidr.clone())
    {
        cidrs.push(c);
    }
    let pod_cidrs = cidrs
        .iter()
        .map(|c| {
            c.parse::<ipnet::IpNet>()
                .map(|n| n.to_string())
                .map_err(|_| {
                    invalid(
                        "Node",
                        &name,
                        "spec.podCIDRs",
                        format!("{c:?} is not a CIDR"),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let internal_ips = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(|addrs| {
            addrs
                .iter()
                .filter(|a| a.type_ == "InternalIP")
                .map(|a| parse_ip("Node", &name, "status.addresses", &a.address))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    Ok(pb::InventoryNode {
        labels: labels(node.metadata.labels.as_ref()),
        name,
        pod_cidrs,
        internal_ips,
    })
}

/// A Namespace: name and labels.
pub fn namespace(ns: &Namespace) -> Result<pb::InventoryNamespace, InvalidObject> {
    Ok(pb::InventoryNamespace {
        name: required_name("Namespace", ns.metadata.name.as_ref())?,
        labels: labels(ns.metadata.labels.as_ref()),
    })
}

/// A Pod: Node (`spec.nodeName`, empty while unscheduled), IPs (`status.podIPs`, else
/// `status.podIP`), labels, hostNetwork; plus phase, readiness and named container ports
/// (a container port with an unknown protocol or out-of-range number is ignored).
pub fn pod(pod: &Pod) -> Result<PodRecord, InvalidObject> {
    let name = required_name("Pod", pod.metadata.name.as_ref())?;
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    if namespace.is_empty() {
        return Err(invalid("Pod", &name, "metadata.namespace", "missing"));
    }
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let mut raw: Vec<String> = status
        .and_then(|s| s.pod_ips.as_ref())
        .map(|ips| ips.iter().map(|i| i.ip.clone()).collect())
        .unwrap_or_default();
    if raw.is_empty()
        && let Some(ip) = status.and_then(|s| s.pod_ip.clone())
    {
        raw.push(ip);
    }
    let ips = raw
        .iter()
        .filter(|ip| !ip.is_empty())
        .map(|ip| parse_ip("Pod", &name, "status.podIPs", ip))
        .collect::<Result<Vec<_>, _>>()?;
    let phase = status.and_then(|s| s.phase.clone()).unwrap_or_default();
    let ready_condition = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status == "True");
    let ready = phase == "Running"
        && pod.metadata.deletion_timestamp.is_none()
        && ready_condition.unwrap_or(true);
    let ports = spec
        .map(|s| {
            s.containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .filter_map(|p| {
                    let name = p.name.clone().filter(|n| !n.is_empty())?;
                    let protocol = Protocol::parse(p.protocol.as_deref().unwrap_or("TCP"))?;
                    let port = u16::try_from(p.container_port).ok().filter(|p| *p != 0)?;
                    Some(NamedPort {
                        name,
                        protocol,
                        port,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(PodRecord {
        inventory: pb::InventoryPod {
            node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            labels: labels(pod.metadata.labels.as_ref()),
            namespace,
            name,
            ips,
        },
        phase,
        ready,
        ports,
    })
}

/// A Service: ClusterIPs (`spec.clusterIPs`, else `spec.clusterIP`; `None` is kept so that
/// resolution can say the Service is headless), ports and selector.
pub fn service(svc: &Service) -> Result<ServiceRecord, InvalidObject> {
    let name = required_name("Service", svc.metadata.name.as_ref())?;
    let namespace = svc.metadata.namespace.clone().unwrap_or_default();
    if namespace.is_empty() {
        return Err(invalid("Service", &name, "metadata.namespace", "missing"));
    }
    let spec = svc.spec.as_ref();
    let mut raw: Vec<String> = spec.and_then(|s| s.cluster_ips.clone()).unwrap_or_default();
    if raw.is_empty()
        && let Some(ip) = spec.and_then(|s| s.cluster_ip.clone())
    {
        raw.push(ip);
    }
    let cluster_ips = raw
        .iter()
        .filter(|ip| !ip.is_empty())
        .map(|ip| {
            if ip == "None" {
                Ok(ip.clone())
            } else {
                parse_ip("Service", &name, "spec.clusterIPs", ip)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ports = spec
        .and_then(|s| s.ports.as_ref())
        .map(|ports| {
            ports
                .iter()
                .map(|p| pb::ServicePort {
                    name: p.name.clone().unwrap_or_default(),
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_string()),
                    port: p.port,
                    target_port: match &p.target_port {
                        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i)) => {
                            i.to_string()
                        }
                        Some(
                            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s),
                        ) => s.clone(),
                        None => p.port.to_string(),
                    },
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(ServiceRecord {
        inventory: pb::InventoryService {
            namespace,
            name,
            cluster_ips,
            ports,
        },
        selector: spec
            .and_then(|s| s.selector.clone())
            .filter(|s| !s.is_empty()),
    })
}

/// A Kubernetes NetworkPolicy, kept whole, with kind `K8sNetworkPolicy`.
pub fn network_policy(np: &NetworkPolicy) -> Result<PolicyRecord, InvalidObject> {
    let name = required_name("NetworkPolicy", np.metadata.name.as_ref())?;
    let namespace = np.metadata.namespace.clone().unwrap_or_default();
    if namespace.is_empty() {
        return Err(invalid(
            "NetworkPolicy",
            &name,
            "metadata.namespace",
            "missing",
        ));
    }
    Ok(PolicyRecord {
        inventory: pb::InventoryPolicy {
            namespace,
            name,
            kind: super::index::K8S_POLICY.to_string(),
        },
        source: PolicySource::K8s(Box::new(np.clone())),
    })
}

fn from_dynamic<T: serde::de::DeserializeOwned>(
    obj: &DynamicObject,
    kind: &'static str,
) -> Result<T, InvalidObject> {
    let name = obj.metadata.name.clone().unwrap_or_default();
    serde_json::to_value(obj)
        .and_then(serde_json::from_value)
        .map_err(|e| invalid(kind, &name, "spec", format!("does not decode: {e}")))
}

/// An Antrea-native policy (crd.antrea.io NetworkPolicy when `kind` is
/// [`ANTREA_POLICY`](super::index::ANTREA_POLICY), else ClusterNetworkPolicy), kept whole, with
/// the kind string Antrea uses in observations.
pub fn antrea_policy(
    obj: &DynamicObject,
    kind: &'static str,
) -> Result<PolicyRecord, InvalidObject> {
    let name = required_name(kind, obj.metadata.name.as_ref())?;
    let namespace = obj.metadata.namespace.clone().unwrap_or_default();
    let source = if kind == super::index::ANTREA_POLICY {
        if namespace.is_empty() {
            return Err(invalid(kind, &name, "metadata.namespace", "missing"));
        }
        PolicySource::Antrea(Box::new(from_dynamic::<AntreaNetworkPolicy>(obj, kind)?))
    } else {
        PolicySource::AntreaCluster(Box::new(from_dynamic::<AntreaClusterNetworkPolicy>(
            obj, kind,
        )?))
    };
    Ok(PolicyRecord {
        inventory: pb::InventoryPolicy {
            namespace,
            name,
            kind: kind.to_string(),
        },
        source,
    })
}

/// The parts of an Antrea Egress the adapter reads.
#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct EgressObject {
    #[serde(default)]
    spec: EgressSpecFields,
    #[serde(default)]
    status: EgressStatusFields,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct EgressSpecFields {
    #[serde(default)]
    applied_to: traceflow_policy::AppliedTo,
    #[serde(default, rename = "egressIP")]
    egress_ip: String,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct EgressStatusFields {
    #[serde(default, rename = "egressIP")]
    egress_ip: String,
    #[serde(default)]
    egress_node: String,
}

/// An Antrea Egress (crd.antrea.io/v1beta1): `spec.appliedTo` selectors, the egress IP
/// (`spec.egressIP`, else `status.egressIP`) and `status.egressNode`.
pub fn egress(obj: &DynamicObject) -> Result<EgressRecord, InvalidObject> {
    let name = required_name("Egress", obj.metadata.name.as_ref())?;
    let e: EgressObject = from_dynamic(obj, "Egress")?;
    let selector = |sel: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
                    field: &'static str| {
        sel.map(|s| {
            traceflow_policy::Selector::from_k8s(s, &name, field)
                .map_err(|err| invalid("Egress", &name, field, err.to_string()))
        })
        .transpose()
    };
    let pod_selector = selector(
        e.spec.applied_to.pod_selector.as_ref(),
        "spec.appliedTo.podSelector",
    )?;
    let namespace_selector = selector(
        e.spec.applied_to.namespace_selector.as_ref(),
        "spec.appliedTo.namespaceSelector",
    )?;
    let egress_ip = if e.spec.egress_ip.is_empty() {
        e.status.egress_ip
    } else {
        e.spec.egress_ip
    };
    if !egress_ip.is_empty() {
        parse_ip("Egress", &name, "spec.egressIP", &egress_ip)?;
    }
    Ok(EgressRecord {
        name,
        pod_selector,
        namespace_selector,
        egress_ip,
        egress_node: e.status.egress_node,
    })
}

/// An Antrea Tier (crd.antrea.io), kept whole; `spec.priority` is required.
pub fn tier(obj: &DynamicObject) -> Result<Tier, InvalidObject> {
    required_name("Tier", obj.metadata.name.as_ref())?;
    from_dynamic::<Tier>(obj, "Tier")
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! `mk_*` builders for Kubernetes objects, shared by the inventory and coordinator tests.
    use super::*;
    use k8s_openapi::api::core::v1::{
        NodeAddress, NodeSpec, NodeStatus, PodIP, PodSpec, PodStatus, ServicePort, ServiceSpec,
    };
    use kube::api::ObjectMeta;

    pub fn meta(ns: Option<&str>, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: ns.map(str::to_string),
            ..Default::default()
        }
    }

    pub fn mk_node(name: &str, cidrs: &[&str], ips: &[&str]) -> Node {
        Node {
            metadata: meta(None, name),
            spec: Some(NodeSpec {
                pod_cidrs: Some(cidrs.iter().map(|c| c.to_string()).collect()),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(
                    ips.iter()
                        .map(|ip| NodeAddress {
                            address: ip.to_string(),
                            type_: "InternalIP".into(),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
        }
    }

    pub fn mk_pod(ns: &str, name: &str, node: &str, ips: &[&str]) -> Pod {
        Pod {
            metadata: meta(Some(ns), name),
            spec: Some(PodSpec {
                node_name: Some(node.to_string()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ips: Some(ips.iter().map(|ip| PodIP { ip: ip.to_string() }).collect()),
                ..Default::default()
            }),
        }
    }

    /// `n1` (10.10.1.0/24, 192.168.77.1) and `n2` (10.10.2.0/24, 192.168.77.2).
    pub fn two_nodes() -> [Node; 2] {
        [
            mk_node("n1", &["10.10.1.0/24"], &["192.168.77.1"]),
            mk_node("n2", &["10.10.2.0/24"], &["192.168.77.2"]),
        ]
    }

    /// `nodes`, `pods` and `services` converted as the watches deliver them, in that order;
    /// one that does not convert is left out.
    pub fn objects(
        nodes: &[Node],
        pods: &[Pod],
        services: &[Service],
    ) -> Vec<crate::inventory::Object> {
        use crate::inventory::Object;
        let nodes = nodes.iter().filter_map(|n| node(n).ok().map(Object::Node));
        let pods = pods.iter().filter_map(|p| pod(p).ok().map(Object::Pod));
        let services = services
            .iter()
            .filter_map(|s| service(s).ok().map(Object::Service));
        nodes.chain(pods).chain(services).collect()
    }

    pub fn mk_service(ns: &str, name: &str, ips: &[&str], ports: &[(&str, i32)]) -> Service {
        Service {
            metadata: meta(Some(ns), name),
            spec: Some(ServiceSpec {
                cluster_ips: Some(ips.iter().map(|ip| ip.to_string()).collect()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(proto, port)| ServicePort {
                            protocol: Some(proto.to_string()),
                            port: *port,
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn node_keeps_cidrs_and_internal_ips() -> Result<(), InvalidObject> {
        let n = node(&mk_node(
            "n1",
            &["10.10.1.0/24", "fd00:10:1::/64"],
            &["192.168.77.1"],
        ))?;
        assert_eq!(n.pod_cidrs, vec!["10.10.1.0/24", "fd00:10:1::/64"]);
        assert_eq!(n.internal_ips, vec!["192.168.77.1"]);
        Ok(())
    }

    #[test]
    fn pod_with_a_bad_ip_is_invalid_naming_the_field() {
        let err = pod(&mk_pod("ns", "p", "n1", &["10.0.0.300"]));
        assert!(matches!(
            err,
            Err(InvalidObject {
                field: "status.podIPs",
                ..
            })
        ));
    }

    #[test]
    fn pod_falls_back_to_pod_ip() -> Result<(), InvalidObject> {
        let mut p = mk_pod("ns", "p", "n1", &[]);
        if let Some(s) = p.status.as_mut() {
            s.pod_ips = None;
            s.pod_ip = Some("10.0.0.5".into());
        }
        assert_eq!(pod(&p)?.inventory.ips, vec!["10.0.0.5"]);
        Ok(())
    }

    #[test]
    fn headless_service_keeps_none() -> Result<(), InvalidObject> {
        let s = service(&mk_service("ns", "s", &["None"], &[("UDP", 53)]))?.inventory;
        assert_eq!(s.cluster_ips, vec!["None"]);
        assert_eq!(s.ports[0].protocol, "UDP");
        assert_eq!(s.ports[0].target_port, "53");
        Ok(())
    }

    #[test]
    fn pod_keeps_readiness_and_named_ports() -> Result<(), InvalidObject> {
        let mut p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [
                {"name": "http", "containerPort": 8080},
                {"name": "dns", "containerPort": 5353, "protocol": "UDP"},
                {"containerPort": 9090},
                {"name": "odd", "containerPort": 1, "protocol": "ICMP"}
            ]}]},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.5"}],
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .map_err(|e| invalid("Pod", "p", "fixture", e.to_string()))?;
        let r = pod(&p)?;
        assert!(r.ready);
        assert_eq!(
            r.ports,
            vec![
                NamedPort {
                    name: "http".into(),
                    protocol: Protocol::Tcp,
                    port: 8080
                },
                NamedPort {
                    name: "dns".into(),
                    protocol: Protocol::Udp,
                    port: 5353
                },
            ]
        );
        if let Some(c) = p.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            c[0].status = "False".into();
        }
        assert!(!pod(&p)?.ready);
        Ok(())
    }

    #[test]
    fn antrea_objects_decode_whole_and_bad_ones_name_the_object() {
        let obj =
            |v: serde_json::Value| -> DynamicObject { serde_json::from_value(v).expect("fixture") };
        let acnp = obj(serde_json::json!({
            "apiVersion": "crd.antrea.io/v1beta1", "kind": "ClusterNetworkPolicy",
            "metadata": {"name": "deny-db"},
            "spec": {"priority": 5, "appliedTo": [{"podSelector": {}}],
                     "ingress": [{"name": "r", "action": "Drop"}]}
        }));
        match antrea_policy(&acnp, super::super::index::ANTREA_CLUSTER_POLICY) {
            Ok(PolicyRecord {
                source: PolicySource::AntreaCluster(p),
                inventory,
            }) => {
                assert_eq!(p.spec.ingress[0].action, "Drop");
                assert_eq!(inventory.kind, "AntreaClusterNetworkPolicy");
            }
            other => panic!("unexpected {other:?}"),
        }
        let bad = obj(serde_json::json!({
            "apiVersion": "crd.antrea.io/v1beta1", "kind": "Tier",
            "metadata": {"name": "t"}, "spec": {"priority": "high"}
        }));
        assert!(matches!(
            tier(&bad),
            Err(InvalidObject { kind: "Tier", .. })
        ));
    }
}
