//! The parsed topology: clusters with their Nodes and the Kubernetes objects that belong to them.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// API version of the lab's own header document.
pub const LAB_API_VERSION: &str = "lab.traceflow.io/v1";
/// Kind of the header document that opens a cluster.
pub const LAB_CLUSTER_KIND: &str = "LabCluster";

/// An IP family, spelled as Kubernetes spells it in `spec.ipFamilies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IpFamily {
    IPv4,
    IPv6,
}

impl IpFamily {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => IpFamily::IPv4,
            IpAddr::V6(_) => IpFamily::IPv6,
        }
    }

    /// The family of a network.
    pub fn of_net(net: &IpNet) -> Self {
        Self::of(&net.addr())
    }
}

/// The `LabCluster` header document as written in the topology file.
///
/// ```yaml
/// apiVersion: lab.traceflow.io/v1
/// kind: LabCluster
/// name: c1
/// ipFamilies: [IPv4, IPv6]      # default [IPv4]
/// serviceCIDRs: [10.96.0.0/16]  # one per family
/// nodes:
/// - name: n1
///   podCIDRs: [10.10.0.0/24]    # one per family
///   internalIP: 192.168.77.2    # optional; one address or a list
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabClusterDoc {
    pub api_version: String,
    pub kind: String,
    /// The cluster name; `metadata.name` is accepted too.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub metadata: Option<LabMetadata>,
    pub nodes: Vec<LabNodeDoc>,
    #[serde(default, rename = "serviceCIDRs")]
    pub service_cidrs: Vec<String>,
    #[serde(default)]
    pub ip_families: Vec<IpFamily>,
}

/// `metadata` of a `LabCluster` document.
#[derive(Debug, Clone, Deserialize)]
pub struct LabMetadata {
    pub name: String,
}

/// One Node of a `LabCluster` document.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabNodeDoc {
    pub name: String,
    #[serde(rename = "podCIDRs")]
    pub pod_cidrs: Vec<String>,
    #[serde(default, rename = "internalIP")]
    pub internal_ip: Option<OneOrMany>,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A field that may be one string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// The strings, in order.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A whole topology: clusters in file order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Topology {
    pub clusters: Vec<Cluster>,
}

/// One cluster with everything resolved: Nodes with underlay addresses, Pods with IPs and MACs,
/// Services with cluster IPs, and the complete Kubernetes objects its API endpoint serves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cluster {
    pub name: String,
    pub ip_families: Vec<IpFamily>,
    pub service_cidrs: Vec<IpNet>,
    /// The underlay segment joining the Nodes (one network per family).
    pub underlay: Vec<IpNet>,
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
    /// Every object the cluster's API endpoint serves, with `apiVersion`, `kind`, `metadata`
    /// and, for Nodes and Pods, the status the lab gives them.
    pub objects: Vec<Value>,
}

impl Cluster {
    /// The Node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The Pod `namespace/name`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
    }
}

/// A Node and the addresses the lab gives it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub pod_cidrs: Vec<IpNet>,
    /// Underlay addresses with their prefix length; the first of each family is the tunnel
    /// endpoint and the Node's `InternalIP`.
    pub internal_ips: Vec<IpNet>,
    /// First address of each Pod CIDR, configured on `antrea-gw0`.
    pub gateway_ips: Vec<IpAddr>,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A Pod and where the lab puts it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub ips: Vec<IpAddr>,
    /// MAC of the Pod's `eth0` (empty for hostNetwork Pods).
    pub mac: String,
    pub host_network: bool,
}
