//! The resource types the lab's Kubernetes API serves.

/// One served resource type (a REST collection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; empty for the core group.
    pub group: &'static str,
    pub version: &'static str,
    /// Lower-case plural used in paths.
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// Objects of this type are created through the API (Traceflow); the rest come from the
    /// topology (but every type accepts writes, as a real API server would).
    pub writable_by_clients: bool,
}

impl ResourceType {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The `kind` of a list of these objects.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

const fn rt(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    writable_by_clients: bool,
) -> ResourceType {
    ResourceType {
        group,
        version,
        plural,
        kind,
        namespaced,
        writable_by_clients,
    }
}

/// Every resource type served, in a fixed order (indexes are stable within a process).
pub const RESOURCES: &[ResourceType] = &[
    rt("", "v1", "nodes", "Node", false, false),
    rt("", "v1", "namespaces", "Namespace", false, false),
    rt("", "v1", "pods", "Pod", true, false),
    rt("", "v1", "services", "Service", true, false),
    rt(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "NetworkPolicy",
        true,
        false,
    ),
    // Before crd.antrea.io: discovery lists groups in this order and kubectl resolves a plural
    // both groups serve (`kubectl get traceflows`) to the first. A real API server orders CRD
    // groups of equal priority by name, so there crd.antrea.io wins (docs/deploy.md).
    rt(
        "crd.traceflow.io",
        "v1beta1",
        "traceflows",
        "Traceflow",
        false,
        true,
    ),
    rt(
        "crd.antrea.io",
        "v1beta1",
        "networkpolicies",
        "NetworkPolicy",
        true,
        false,
    ),
    rt(
        "crd.antrea.io",
        "v1beta1",
        "clusternetworkpolicies",
        "ClusterNetworkPolicy",
        false,
        false,
    ),
    rt("crd.antrea.io", "v1beta1", "tiers", "Tier", false, false),
    rt(
        "crd.antrea.io",
        "v1beta1",
        "traceflows",
        "Traceflow",
        false,
        true,
    ), // Egress `status.egressNode` / `status.egressIP` come from the topology (the lab plays
    // Antrea's controller).
    rt(
        "crd.antrea.io",
        "v1beta1",
        "egresses",
        "Egress",
        false,
        false,
    ),
];

/// The resource type with this `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<(usize, &'static ResourceType)> {
    RESOURCES
        .iter()
        .enumerate()
        .find(|(_, r)| r.kind == kind && r.api_version() == api_version)
}

/// The resource type served at `group/version/plural`.
pub fn by_path(group: &str, version: &str, plural: &str) -> Option<(usize, &'static ResourceType)> {
    RESOURCES
        .iter()
        .enumerate()
        .find(|(_, r)| r.group == group && r.version == version && r.plural == plural)
}

/// Index of the resource type with this `apiVersion` and `kind`; for callers that know the
/// pair is served.
pub fn index_of(api_version: &str, kind: &str) -> Option<usize> {
    by_kind(api_version, kind).map(|(i, _)| i)
}

/// Index of `v1 Node` in [`RESOURCES`].
pub const NODE: usize = 0;
/// Index of `v1 Namespace` in [`RESOURCES`].
pub const NAMESPACE: usize = 1;
/// Index of `v1 Pod` in [`RESOURCES`].
pub const POD: usize = 2;
/// Index of `v1 Service` in [`RESOURCES`].
pub const SERVICE: usize = 3;
