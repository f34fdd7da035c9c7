//! Test fixtures: `mk_pod()`, `mk_ns()` and policy builders from JSON (the shape users write).

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::Value;

use crate::antrea::{AntreaClusterNetworkPolicy, AntreaNetworkPolicy};
use crate::model::{ClusterState, NamedPort, Namespace, Pod, Protocol};

pub fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A Pod with one or more IPs (comma-separated) and labels.
pub fn mk_pod(ns: &str, name: &str, node: &str, ips: &str, kv: &[(&str, &str)]) -> Pod {
    Pod {
        namespace: ns.into(),
        name: name.into(),
        labels: labels(kv),
        node: node.into(),
        ips: ips
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<IpAddr>().expect("fixture IP"))
            .collect(),
        ports: Vec::new(),
    }
}

/// Adds a named container port.
pub fn with_port(mut pod: Pod, name: &str, protocol: Protocol, port: u16) -> Pod {
    pod.ports.push(NamedPort {
        name: name.into(),
        protocol,
        port,
    });
    pod
}

pub fn mk_ns(name: &str, kv: &[(&str, &str)]) -> Namespace {
    Namespace {
        name: name.into(),
        labels: labels(kv),
    }
}

pub fn k8s_np(v: Value) -> NetworkPolicy {
    serde_json::from_value(v).expect("fixture NetworkPolicy")
}

pub fn anp(v: Value) -> AntreaNetworkPolicy {
    serde_json::from_value(v).expect("fixture Antrea NetworkPolicy")
}

pub fn acnp(v: Value) -> AntreaClusterNetworkPolicy {
    serde_json::from_value(v).expect("fixture ClusterNetworkPolicy")
}

/// Two Nodes, Namespaces `web` (team=a) and `db` (team=b), and a few Pods:
///
/// | pod | node | ip | labels |
/// |---|---|---|---|
/// | web/client | n1 | 10.0.1.2, fd00:1::2 | app=client |
/// | web/api | n1 | 10.0.1.3, fd00:1::3 | app=api, tier=fe |
/// | web/api2 | n2 | 10.0.2.3 | app=api |
/// | db/mysql | n2 | 10.0.2.4 | app=db |
pub fn lab() -> ClusterState {
    let mut s = ClusterState::new();
    s.apply_namespace(mk_ns("web", &[("team", "a")]));
    s.apply_namespace(mk_ns("db", &[("team", "b")]));
    s.apply_pod(mk_pod(
        "web",
        "client",
        "n1",
        "10.0.1.2,fd00:1::2",
        &[("app", "client")],
    ));
    s.apply_pod(mk_pod(
        "web",
        "api",
        "n1",
        "10.0.1.3,fd00:1::3",
        &[("app", "api"), ("tier", "fe")],
    ));
    s.apply_pod(mk_pod("web", "api2", "n2", "10.0.2.3", &[("app", "api")]));
    s.apply_pod(mk_pod("db", "mysql", "n2", "10.0.2.4", &[("app", "db")]));
    s
}
