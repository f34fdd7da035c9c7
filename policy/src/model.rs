//! Input model: the cluster inventory the compiler resolves selectors against.
//!
//! The adapter fills a [`ClusterState`] from its kube watchers (`apply_* / delete_*`, the
//! index pattern of STYLE.md habit 4) and hands it to
//! [`PolicyCompiler::compile`](crate::PolicyCompiler::compile). Everything here is plain data:
//! no kube client, no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::{Deserialize, Serialize};

use crate::antrea::{AntreaClusterNetworkPolicy, AntreaNetworkPolicy, Tier};

/// L4 protocols a policy port can name (K8s NetworkPolicyPort.protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// Parses the Kubernetes spelling (`TCP`, `UDP`, `SCTP`, case-insensitive).
    pub fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    /// Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A named container port (`spec.containers[].ports[]` with a `name`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NamedPort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

/// `<namespace>/<name>` of a Pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

impl PodRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        PodRef {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the compiler needs to know about a Pod.
///
/// A Pod with no IPs still counts for isolation and applied-to membership but contributes no
/// addresses (Antrea behaves the same while a Pod is being scheduled). `node` empty = unscheduled:
/// it is in no Node's view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub node: String,
    pub ips: Vec<IpAddr>,
    pub ports: Vec<NamedPort>,
}

impl Pod {
    pub fn pod_ref(&self) -> PodRef {
        PodRef::new(&self.namespace, &self.name)
    }

    /// Resolves a named port for `protocol`, as Antrea does per destination Pod.
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.name == name && p.protocol == protocol)
            .map(|p| p.port)
    }
}

/// A Namespace and its labels (`kubernetes.io/metadata.name` is added implicitly by
/// [`ClusterState::apply_namespace`] when absent, as the API server does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// The whole input of one compilation: inventory plus every policy object.
///
/// Keys are names (`ns/name` for namespaced objects), so `apply_*` upserts and `delete_*` removes;
/// iteration order is deterministic, which keeps compilation output stable.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    pub pods: BTreeMap<PodRef, Pod>,
    pub namespaces: BTreeMap<String, Namespace>,
    /// User-defined Tiers; the static tiers of [`crate::antrea::DEFAULT_TIERS`] always exist.
    pub tiers: BTreeMap<String, Tier>,
    pub k8s_policies: BTreeMap<(String, String), NetworkPolicy>,
    pub antrea_policies: BTreeMap<(String, String), AntreaNetworkPolicy>,
    pub cluster_policies: BTreeMap<String, AntreaClusterNetworkPolicy>,
}

impl ClusterState {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn apply_pod(&mut self, pod: Pod) {
        self.pods.insert(pod.pod_ref(), pod);
    }

    pub fn delete_pod(&mut self, pod: &PodRef) {
        self.pods.remove(pod);
    }

    pub fn apply_namespace(&mut self, mut ns: Namespace) {
        ns.labels
            .entry("kubernetes.io/metadata.name".to_string())
            .or_insert_with(|| ns.name.clone());
        self.namespaces.insert(ns.name.clone(), ns);
    }

    pub fn delete_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    pub fn apply_tier(&mut self, tier: Tier) {
        self.tiers.insert(tier.name().to_string(), tier);
    }

    pub fn delete_tier(&mut self, name: &str) {
        self.tiers.remove(name);
    }

    /// Upserts a K8s NetworkPolicy keyed by `metadata.namespace` / `metadata.name` (missing
    /// values key as empty strings; compilation then reports a `MissingField` error).
    pub fn apply_k8s_policy(&mut self, np: NetworkPolicy) {
        let key = (
            np.metadata.namespace.clone().unwrap_or_default(),
            np.metadata.name.clone().unwrap_or_default(),
        );
        self.k8s_policies.insert(key, np);
    }

    pub fn delete_k8s_policy(&mut self, namespace: &str, name: &str) {
        self.k8s_policies
            .remove(&(namespace.to_string(), name.to_string()));
    }

    pub fn apply_antrea_policy(&mut self, np: AntreaNetworkPolicy) {
        let key = (
            np.metadata.namespace.clone().unwrap_or_default(),
            np.metadata.name.clone().unwrap_or_default(),
        );
        self.antrea_policies.insert(key, np);
    }

    pub fn delete_antrea_policy(&mut self, namespace: &str, name: &str) {
        self.antrea_policies
            .remove(&(namespace.to_string(), name.to_string()));
    }

    pub fn apply_cluster_policy(&mut self, np: AntreaClusterNetworkPolicy) {
        let key = np.metadata.name.clone().unwrap_or_default();
        self.cluster_policies.insert(key, np);
    }

    pub fn delete_cluster_policy(&mut self, name: &str) {
        self.cluster_policies.remove(name);
    }

    /// Labels of a Namespace; an unknown Namespace has only its implicit name label.
    pub(crate) fn namespace_labels(&self, name: &str) -> BTreeMap<String, String> {
        match self.namespaces.get(name) {
            Some(ns) => ns.labels.clone(),
            None => BTreeMap::from([("kubernetes.io/metadata.name".to_string(), name.to_string())]),
        }
    }

    /// Names of all Namespaces known either as objects or through their Pods.
    pub(crate) fn namespace_names(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self.namespaces.keys().cloned().collect();
        names.extend(self.pods.keys().map(|p| p.namespace.clone()));
        names
    }
}
