//! The inventory index: everything the adapter knows about its cluster, fed by watch events.
//!
//! The index is plain data with no I/O: watchers call [`Index::apply`], [`Index::delete`] and
//! [`Index::reset`], each of which returns the [`Change`] to forward to the manager. Lookups
//! (pod → Node/IPs, Service → ClusterIPs/ports, Node → CIDRs/InternalIP, IP → Pod) serve the
//! coordinator; iteration over whole kinds serves the Nodes' desired state ([`crate::nodestate`]).
//!
//! Records carry more than the manager sees (see [`super::record`]): a [`Change`] lists an
//! object only when its manager-visible part changed, while [`Index::revision`] moves on every
//! change of anything.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
};

use traceflow_proto::v1 as pb;

use super::record::{EgressRecord, PodRecord, PolicyRecord, PolicySource, ServiceRecord};

/// The kinds the index holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Node,
    Namespace,
    Pod,
    Service,
    /// Kubernetes NetworkPolicies.
    Policy,
    /// Antrea-native NetworkPolicies (crd.antrea.io).
    AntreaPolicy,
    /// Antrea-native ClusterNetworkPolicies (crd.antrea.io).
    AntreaClusterPolicy,
    /// Antrea Tiers (crd.antrea.io); adapter-only, never sent to the manager.
    Tier,
    /// Antrea Egresses (crd.antrea.io); adapter-only, never sent to the manager.
    Egress,
}

/// One indexed object, already converted (see `convert`).
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Node(pb::InventoryNode),
    Namespace(pb::InventoryNamespace),
    Pod(PodRecord),
    Service(ServiceRecord),
    Policy(PolicyRecord),
    Tier(Box<traceflow_policy::Tier>),
    Egress(Box<EgressRecord>),
}

/// The part of an object the manager sees.
#[derive(PartialEq)]
enum ManagerView<'a> {
    Node(&'a pb::InventoryNode),
    Namespace(&'a pb::InventoryNamespace),
    Pod(&'a pb::InventoryPod),
    Service(&'a pb::InventoryService),
    Policy(&'a pb::InventoryPolicy),
    None,
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Node(_) => Kind::Node,
            Object::Namespace(_) => Kind::Namespace,
            Object::Pod(_) => Kind::Pod,
            Object::Service(_) => Kind::Service,
            Object::Policy(p) => match p.source {
                PolicySource::K8s(_) => Kind::Policy,
                PolicySource::Antrea(_) => Kind::AntreaPolicy,
                PolicySource::AntreaCluster(_) => Kind::AntreaClusterPolicy,
            },
            Object::Tier(_) => Kind::Tier,
            Object::Egress(_) => Kind::Egress,
        }
    }

    /// The key the manager knows the object by (see [`Kind::key`]).
    pub fn key(&self) -> String {
        match self {
            Object::Node(n) => n.name.clone(),
            Object::Namespace(n) => n.name.clone(),
            Object::Pod(p) => key(&p.inventory.namespace, &p.inventory.name),
            Object::Service(s) => key(&s.inventory.namespace, &s.inventory.name),
            Object::Policy(p) => key(&p.inventory.namespace, &p.inventory.name),
            Object::Tier(t) => t.name().to_string(),
            Object::Egress(e) => e.name.clone(),
        }
    }

    fn manager_view(&self) -> ManagerView<'_> {
        match self {
            Object::Node(n) => ManagerView::Node(n),
            Object::Namespace(n) => ManagerView::Namespace(n),
            Object::Pod(p) => ManagerView::Pod(&p.inventory),
            Object::Service(s) => ManagerView::Service(&s.inventory),
            Object::Policy(p) => ManagerView::Policy(&p.inventory),
            Object::Tier(_) | Object::Egress(_) => ManagerView::None,
        }
    }
}

/// The `kind` of Antrea-native namespaced policies, as observations name it.
pub const ANTREA_POLICY: &str = "AntreaNetworkPolicy";
/// The `kind` of Antrea-native cluster policies, as observations name it.
pub const ANTREA_CLUSTER_POLICY: &str = "AntreaClusterNetworkPolicy";
/// The `kind` of Kubernetes NetworkPolicies, as observations name it.
pub const K8S_POLICY: &str = "K8sNetworkPolicy";

impl Kind {
    /// The key of an object of this kind: `name` for Nodes and Namespaces,
    /// `<namespace>/<name>` otherwise (`/<name>` for cluster-scoped policies), as the manager
    /// keys its copy.
    pub fn key(self, namespace: &str, name: &str) -> String {
        match self {
            Kind::Node | Kind::Namespace | Kind::Tier | Kind::Egress => name.to_string(),
            _ => key(namespace, name),
        }
    }
}

/// `<namespace>/<name>`.
pub fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// What an index mutation changed, in the shape the manager stream carries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Change {
    pub upsert: pb::Inventory,
    pub delete: pb::InventoryDeletions,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        let u = &self.upsert;
        let d = &self.delete;
        u.nodes.is_empty()
            && u.namespaces.is_empty()
            && u.pods.is_empty()
            && u.services.is_empty()
            && u.policies.is_empty()
            && d.nodes.is_empty()
            && d.namespaces.is_empty()
            && d.pods.is_empty()
            && d.services.is_empty()
            && d.policies.is_empty()
    }

    fn upsert(&mut self, obj: Object) {
        match obj {
            Object::Node(o) => self.upsert.nodes.push(o),
            Object::Namespace(o) => self.upsert.namespaces.push(o),
            Object::Pod(o) => self.upsert.pods.push(o.inventory),
            Object::Service(o) => self.upsert.services.push(o.inventory),
            Object::Policy(o) => self.upsert.policies.push(o.inventory),
            Object::Tier(_) | Object::Egress(_) => {}
        }
    }

    fn delete(&mut self, kind: Kind, key: String) {
        let d = &mut self.delete;
        match kind {
            Kind::Node => d.nodes.push(key),
            Kind::Namespace => d.namespaces.push(key),
            Kind::Pod => d.pods.push(key),
            Kind::Service => d.services.push(key),
            Kind::Policy | Kind::AntreaPolicy | Kind::AntreaClusterPolicy => d.policies.push(key),
            Kind::Tier | Kind::Egress => {}
        }
    }
}

/// The cluster's objects by kind and key, plus a Pod-IP index.
///
/// Invariant: `pod_ips` maps every IP of every non-hostNetwork Pod in `objects` to that Pod's
/// key (the last applied Pod wins when two claim one IP).
#[derive(Debug, Default)]
pub struct Index {
    objects: HashMap<Kind, BTreeMap<String, Object>>,
    pod_ips: HashMap<IpAddr, String>,
    synced: HashSet<Kind>,
    revision: u64,
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces one object; the change is empty when nothing the manager sees differs
    /// (the revision still moves when anything else did).
    pub fn apply(&mut self, obj: Object) -> Change {
        let mut change = Change::default();
        let kind = obj.kind();
        let key = obj.key();
        let map = self.objects.entry(kind).or_default();
        if map.get(&key) == Some(&obj) {
            return change;
        }
        let old = map.insert(key.clone(), obj.clone());
        self.revision += 1;
        let manager_same = old
            .as_ref()
            .is_some_and(|o| o.manager_view() == obj.manager_view());
        if let Some(old) = old {
            self.unindex(&old, &key);
        }
        self.index(&obj, &key);
        if !manager_same {
            change.upsert(obj);
        }
        change
    }

    /// Removes one object; the change is empty when it was unknown.
    pub fn delete(&mut self, kind: Kind, key: &str) -> Change {
        let mut change = Change::default();
        if let Some(old) = self.objects.entry(kind).or_default().remove(key) {
            self.revision += 1;
            self.unindex(&old, key);
            change.delete(kind, key.to_string());
        }
        change
    }

    /// Replaces every object of `kind` with `objects` (a relist), returning the difference, and
    /// marks the kind synced.
    pub fn reset(&mut self, kind: Kind, objects: Vec<Object>) -> Change {
        let mut change = Change::default();
        let fresh: BTreeMap<String, Object> = objects
            .into_iter()
            .filter(|o| o.kind() == kind)
            .map(|o| (o.key(), o))
            .collect();
        let stale: Vec<String> = self
            .objects
            .get(&kind)
            .map(|m| {
                m.keys()
                    .filter(|k| !fresh.contains_key(*k))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for key in stale {
            let c = self.delete(kind, &key);
            merge(&mut change, c);
        }
        for obj in fresh.into_values() {
            let c = self.apply(obj);
            merge(&mut change, c);
        }
        self.synced.insert(kind);
        change
    }

    /// Whether `kind` has completed at least one full list.
    pub fn is_synced(&self, kind: Kind) -> bool {
        self.synced.contains(&kind)
    }

    /// A counter that moves whenever any object (or any adapter-only detail of one) changed.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    fn index(&mut self, obj: &Object, key: &str) {
        if let Object::Pod(p) = obj
            && !p.inventory.host_network
        {
            for ip in p
                .inventory
                .ips
                .iter()
                .filter_map(|ip| ip.parse::<IpAddr>().ok())
            {
                self.pod_ips.insert(ip, key.to_string());
            }
        }
    }

    fn unindex(&mut self, obj: &Object, key: &str) {
        if let Object::Pod(p) = obj {
            for ip in p
                .inventory
                .ips
                .iter()
                .filter_map(|ip| ip.parse::<IpAddr>().ok())
            {
                if self.pod_ips.get(&ip).map(String::as_str) == Some(key) {
                    self.pod_ips.remove(&ip);
                }
            }
        }
    }

    fn get(&self, kind: Kind, key: &str) -> Option<&Object> {
        self.objects.get(&kind).and_then(|m| m.get(key))
    }

    pub fn node(&self, name: &str) -> Option<&pb::InventoryNode> {
        match self.get(Kind::Node, name) {
            Some(Object::Node(n)) => Some(n),
            _ => None,
        }
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<&pb::InventoryPod> {
        match self.get(Kind::Pod, &key(namespace, name)) {
            Some(Object::Pod(p)) => Some(&p.inventory),
            _ => None,
        }
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&pb::InventoryService> {
        match self.get(Kind::Service, &key(namespace, name)) {
            Some(Object::Service(s)) => Some(&s.inventory),
            _ => None,
        }
    }

    /// The non-hostNetwork Pod owning `ip`.
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&pb::InventoryPod> {
        let key = self.pod_ips.get(&ip)?;
        match self.get(Kind::Pod, key) {
            Some(Object::Pod(p)) => Some(&p.inventory),
            _ => None,
        }
    }

    /// The non-hostNetwork Pod owning `ip`, with what only the adapter keeps (named ports).
    pub fn pod_record_by_ip(&self, ip: IpAddr) -> Option<&PodRecord> {
        let key = self.pod_ips.get(&ip)?;
        match self.get(Kind::Pod, key) {
            Some(Object::Pod(p)) => Some(p),
            _ => None,
        }
    }

    fn all(&self, kind: Kind) -> impl Iterator<Item = &Object> {
        self.objects.get(&kind).into_iter().flat_map(|m| m.values())
    }

    /// Every Node, by name.
    pub fn nodes(&self) -> impl Iterator<Item = &pb::InventoryNode> {
        self.all(Kind::Node).filter_map(|o| match o {
            Object::Node(n) => Some(n),
            _ => None,
        })
    }

    /// Every Namespace, by name.
    pub fn namespaces(&self) -> impl Iterator<Item = &pb::InventoryNamespace> {
        self.all(Kind::Namespace).filter_map(|o| match o {
            Object::Namespace(n) => Some(n),
            _ => None,
        })
    }

    /// Every Pod, by `<namespace>/<name>`.
    pub fn pods(&self) -> impl Iterator<Item = &PodRecord> {
        self.all(Kind::Pod).filter_map(|o| match o {
            Object::Pod(p) => Some(p),
            _ => None,
        })
    }

    /// Every Service, by `<namespace>/<name>`.
    pub fn services(&self) -> impl Iterator<Item = &ServiceRecord> {
        self.all(Kind::Service).filter_map(|o| match o {
            Object::Service(s) => Some(s),
            _ => None,
        })
    }

    /// Every policy of every kind (K8s, Antrea-native, Antrea cluster-wide).
    pub fn policies(&self) -> impl Iterator<Item = &PolicyRecord> {
        [Kind::Policy, Kind::AntreaPolicy, Kind::AntreaClusterPolicy]
            .into_iter()
            .flat_map(|k| self.all(k))
            .filter_map(|o| match o {
                Object::Policy(p) => Some(p),
                _ => None,
            })
    }

    /// Every user-defined Tier, by name.
    pub fn tiers(&self) -> impl Iterator<Item = &traceflow_policy::Tier> {
        self.all(Kind::Tier).filter_map(|o| match o {
            Object::Tier(t) => Some(t.as_ref()),
            _ => None,
        })
    }

    /// Every Antrea Egress, by name.
    pub fn egresses(&self) -> impl Iterator<Item = &EgressRecord> {
        self.all(Kind::Egress).filter_map(|o| match o {
            Object::Egress(e) => Some(e.as_ref()),
            _ => None,
        })
    }

    /// Number of Nodes: the agents the cluster should have.
    pub fn node_count(&self) -> usize {
        self.objects.get(&Kind::Node).map_or(0, BTreeMap::len)
    }

    /// Everything, for an `inventory_sync`.
    pub fn snapshot(&self) -> pb::Inventory {
        let mut change = Change::default();
        for map in self.objects.values() {
            for obj in map.values() {
                change.upsert(obj.clone());
            }
        }
        change.upsert
    }
}

fn merge(into: &mut Change, from: Change) {
    let (u, d) = (from.upsert, from.delete);
    into.upsert.nodes.extend(u.nodes);
    into.upsert.namespaces.extend(u.namespaces);
    into.upsert.pods.extend(u.pods);
    into.upsert.services.extend(u.services);
    into.upsert.policies.extend(u.policies);
    into.delete.nodes.extend(d.nodes);
    into.delete.namespaces.extend(d.namespaces);
    into.delete.pods.extend(d.pods);
    into.delete.services.extend(d.services);
    into.delete.policies.extend(d.policies);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, ips: &[&str]) -> Object {
        Object::Pod(PodRecord::from(pb::InventoryPod {
            namespace: ns.into(),
            name: name.into(),
            node: "n1".into(),
            ips: ips.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }))
    }

    #[test]
    fn apply_indexes_ips_and_reports_only_real_changes() {
        let mut idx = Index::new();
        assert_eq!(idx.apply(pod("a", "p", &["10.0.0.1"])).upsert.pods.len(), 1);
        assert!(idx.apply(pod("a", "p", &["10.0.0.1"])).is_empty());
        assert_eq!(
            idx.pod_by_ip(ip("10.0.0.1")).map(|p| p.name.as_str()),
            Some("p")
        );
        idx.apply(pod("a", "p", &["10.0.0.2"]));
        assert!(idx.pod_by_ip(ip("10.0.0.1")).is_none());
        assert!(idx.pod_by_ip(ip("10.0.0.2")).is_some());
    }

    fn unreachable_ip() -> IpAddr {
        IpAddr::from([0, 0, 0, 0])
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| unreachable_ip())
    }

    #[test]
    fn delete_removes_object_and_ip() {
        let mut idx = Index::new();
        idx.apply(pod("a", "p", &["10.0.0.1"]));
        let c = idx.delete(Kind::Pod, "a/p");
        assert_eq!(c.delete.pods, vec!["a/p"]);
        assert!(idx.pod("a", "p").is_none());
        assert!(idx.pod_by_ip(ip("10.0.0.1")).is_none());
        assert!(idx.delete(Kind::Pod, "a/p").is_empty());
    }

    #[test]
    fn reset_returns_the_difference_and_marks_synced() {
        let mut idx = Index::new();
        idx.apply(pod("a", "gone", &["10.0.0.1"]));
        idx.apply(pod("a", "same", &["10.0.0.2"]));
        assert!(!idx.is_synced(Kind::Pod));
        let c = idx.reset(
            Kind::Pod,
            vec![
                pod("a", "same", &["10.0.0.2"]),
                pod("a", "new", &["10.0.0.3"]),
            ],
        );
        assert_eq!(c.delete.pods, vec!["a/gone"]);
        assert_eq!(c.upsert.pods.len(), 1);
        assert_eq!(c.upsert.pods[0].name, "new");
        assert!(idx.is_synced(Kind::Pod));
        assert_eq!(idx.snapshot().pods.len(), 2);
    }

    #[test]
    fn host_network_pods_do_not_own_ips() {
        let mut idx = Index::new();
        let mut p = pod("kube-system", "hn", &["192.168.77.1"]);
        if let Object::Pod(inner) = &mut p {
            inner.inventory.host_network = true;
        }
        idx.apply(p);
        assert!(idx.pod_by_ip(ip("192.168.77.1")).is_none());
    }

    #[test]
    fn adapter_only_changes_move_the_revision_but_not_the_manager() {
        let mut idx = Index::new();
        let Object::Pod(mut p) = pod("a", "p", &["10.0.0.1"]) else {
            unreachable!("pod() builds a Pod")
        };
        idx.apply(Object::Pod(p.clone()));
        let before = idx.revision();
        p.ready = false;
        assert!(idx.apply(Object::Pod(p.clone())).is_empty());
        assert!(idx.revision() > before);
        let same = idx.revision();
        assert!(idx.apply(Object::Pod(p)).is_empty());
        assert_eq!(idx.revision(), same);
        let tier = traceflow_policy::Tier::new("t1", 10);
        assert!(idx.apply(Object::Tier(Box::new(tier))).is_empty());
        assert_eq!(idx.tiers().count(), 1);
        assert!(idx.delete(Kind::Tier, "t1").is_empty());
        assert_eq!(idx.tiers().count(), 0);
    }
}
