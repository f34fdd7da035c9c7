//! One cluster's inventory as its adapter reported it: a full sync on connect, then deltas.
//!
//! Keys: names for Nodes and Namespaces, `<namespace>/<name>` otherwise (as in
//! `InventoryDeletions`). Ordered maps, so listings page by key.

use std::collections::BTreeMap;

use traceflow_proto::v1 as pb;

/// Nodes, Namespaces, Pods, Services and policies of one cluster.
#[derive(Debug, Default, Clone)]
pub struct ClusterInventory {
    pub nodes: BTreeMap<String, pb::InventoryNode>,
    pub namespaces: BTreeMap<String, pb::InventoryNamespace>,
    pub pods: BTreeMap<String, pb::InventoryPod>,
    pub services: BTreeMap<String, pb::InventoryService>,
    pub policies: BTreeMap<String, pb::InventoryPolicy>,
    /// Whether a full sync arrived (before it, absence proves nothing).
    pub synced: bool,
}

fn nk(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

impl ClusterInventory {
    /// How many objects of each kind it holds (saturating at i32::MAX).
    pub fn counts(&self) -> pb::InventoryCounts {
        let n = |len: usize| i32::try_from(len).unwrap_or(i32::MAX);
        pb::InventoryCounts {
            nodes: n(self.nodes.len()),
            namespaces: n(self.namespaces.len()),
            pods: n(self.pods.len()),
            services: n(self.services.len()),
            policies: n(self.policies.len()),
        }
    }

    /// Replaces everything with `inv`.
    pub fn sync(&mut self, inv: pb::Inventory) {
        *self = ClusterInventory::default();
        self.upsert(inv);
        self.synced = true;
    }

    /// Inserts or replaces the given objects.
    pub fn upsert(&mut self, inv: pb::Inventory) {
        let pb::Inventory {
            nodes,
            namespaces,
            pods,
            services,
            policies,
        } = inv;
        for n in nodes {
            self.nodes.insert(n.name.clone(), n);
        }
        for n in namespaces {
            self.namespaces.insert(n.name.clone(), n);
        }
        for p in pods {
            self.pods.insert(nk(&p.namespace, &p.name), p);
        }
        for s in services {
            self.services.insert(nk(&s.namespace, &s.name), s);
        }
        for p in policies {
            self.policies.insert(nk(&p.namespace, &p.name), p);
        }
    }

    /// Removes the named objects.
    pub fn delete(&mut self, d: pb::InventoryDeletions) {
        let pb::InventoryDeletions {
            nodes,
            namespaces,
            pods,
            services,
            policies,
        } = d;
        for k in nodes {
            self.nodes.remove(&k);
        }
        for k in namespaces {
            self.namespaces.remove(&k);
        }
        for k in pods {
            self.pods.remove(&k);
        }
        for k in services {
            self.services.remove(&k);
        }
        for k in policies {
            self.policies.remove(&k);
        }
    }

    /// Everything, as the wire message (for the stored snapshot).
    pub fn to_pb(&self) -> pb::Inventory {
        pb::Inventory {
            nodes: self.nodes.values().cloned().collect(),
            namespaces: self.namespaces.values().cloned().collect(),
            pods: self.pods.values().cloned().collect(),
            services: self.services.values().cloned().collect(),
            policies: self.policies.values().cloned().collect(),
        }
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<&pb::InventoryPod> {
        self.pods.get(&nk(namespace, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_pod(ns: &str, name: &str) -> pb::InventoryPod {
        pb::InventoryPod {
            namespace: ns.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn sync_then_deltas() {
        let mut inv = ClusterInventory::default();
        inv.upsert(pb::Inventory {
            pods: vec![mk_pod("x", "stale")],
            ..Default::default()
        });
        inv.sync(pb::Inventory {
            pods: vec![mk_pod("default", "p0"), mk_pod("default", "p1")],
            ..Default::default()
        });
        assert!(inv.synced);
        assert!(inv.pod("x", "stale").is_none());
        inv.delete(pb::InventoryDeletions {
            pods: vec!["default/p0".into()],
            ..Default::default()
        });
        assert!(inv.pod("default", "p0").is_none());
        assert!(inv.pod("default", "p1").is_some());
    }
}
