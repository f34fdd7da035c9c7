//! Index records: the manager's proto shape of an object plus what only the adapter needs
//! (Pod readiness and named ports, Service selectors, whole policy objects).
//!
//! The `inventory` field of each record is exactly what the manager stores; the rest feeds the
//! desired state of the Nodes ([`crate::nodestate`]) and never leaves the adapter.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use traceflow_policy::{
    AntreaClusterNetworkPolicy, AntreaNetworkPolicy, NamedPort, Protocol, Selector,
};
use traceflow_proto::v1 as pb;

/// A Pod as the index keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodRecord {
    pub inventory: pb::InventoryPod,
    /// `status.phase` (`Pending`, `Running`, `Succeeded`, `Failed`, or empty when unknown).
    pub phase: String,
    /// Ready to serve: phase `Running`, not terminating (no `deletionTimestamp`), and the
    /// `Ready` condition `True` when the Pod reports one.
    pub ready: bool,
    /// Named container ports (`spec.containers[].ports[]` with a name), for Service
    /// `targetPort` names and policy named ports.
    pub ports: Vec<NamedPort>,
}

impl PodRecord {
    /// A finished Pod (`Succeeded` / `Failed`) no longer owns its IPs for policies.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase.as_str(), "Succeeded" | "Failed")
    }

    /// The port this Pod serves Service port `sp` on (its endpoint's port, what a DNATed
    /// connection reaches and the Pod answers from): a numeric `targetPort` (empty or 0 =
    /// `port`), or the Pod's named container port with that name and the port's protocol.
    pub fn target_port(&self, sp: &pb::ServicePort) -> Option<i32> {
        let target = sp.target_port.trim();
        if target.is_empty() {
            return Some(sp.port);
        }
        if let Ok(n) = target.parse::<i32>() {
            return Some(if n == 0 { sp.port } else { n });
        }
        let protocol = Protocol::parse(&sp.protocol.to_ascii_uppercase())?;
        self.ports
            .iter()
            .find(|p| p.name == target && p.protocol == protocol)
            .map(|p| i32::from(p.port))
    }
}

impl From<pb::InventoryPod> for PodRecord {
    /// A running, ready Pod without named ports (tests and fixtures).
    fn from(inventory: pb::InventoryPod) -> Self {
        PodRecord {
            inventory,
            phase: "Running".to_string(),
            ready: true,
            ports: Vec::new(),
        }
    }
}

/// A Service as the index keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRecord {
    pub inventory: pb::InventoryService,
    /// `spec.selector`; `None` (or empty) = no selector: endpoints are managed elsewhere and the
    /// adapter computes none.
    pub selector: Option<BTreeMap<String, String>>,
}

impl From<pb::InventoryService> for ServiceRecord {
    fn from(inventory: pb::InventoryService) -> Self {
        ServiceRecord {
            inventory,
            selector: None,
        }
    }
}

/// The whole object behind a policy record.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicySource {
    K8s(Box<NetworkPolicy>),
    Antrea(Box<AntreaNetworkPolicy>),
    AntreaCluster(Box<AntreaClusterNetworkPolicy>),
}

/// A policy as the index keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRecord {
    pub inventory: pb::InventoryPolicy,
    pub source: PolicySource,
}

/// An Antrea Egress (crd.antrea.io/v1beta1) as the index keeps it; adapter-only.
#[derive(Debug, Clone, PartialEq)]
pub struct EgressRecord {
    pub name: String,
    /// `spec.appliedTo.podSelector`; `None` = every Pod of the selected Namespaces.
    pub pod_selector: Option<Selector>,
    /// `spec.appliedTo.namespaceSelector`; `None` = every Namespace.
    pub namespace_selector: Option<Selector>,
    /// `spec.egressIP`, else `status.egressIP`; empty while unassigned.
    pub egress_ip: String,
    /// `status.egressNode`; empty while unassigned.
    pub egress_node: String,
}

impl EgressRecord {
    /// Whether the Egress applies to a Pod with `pod_labels` in a Namespace with `ns_labels`.
    /// An `appliedTo` with neither selector selects nothing (Antrea requires one).
    pub fn selects(
        &self,
        pod_labels: &BTreeMap<String, String>,
        ns_labels: &BTreeMap<String, String>,
    ) -> bool {
        if self.pod_selector.is_none() && self.namespace_selector.is_none() {
            return false;
        }
        self.pod_selector
            .as_ref()
            .is_none_or(|s| s.matches(pod_labels))
            && self
                .namespace_selector
                .as_ref()
                .is_none_or(|s| s.matches(ns_labels))
    }
}
