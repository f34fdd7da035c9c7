//! One cluster's inventory as its adapter reported it: a full sync on connect, then deltas.
//!
//! Keys: names for Nodes and Namespaces, `<namespace>/<name>` otherwise (as in
//! `InventoryDeletions`). Ordered maps, so listings page by key.

use std::collections::BTreeMap;

use traceflow_proto::v1 as pb;

/// An adapter reported more objects than the manager keeps for one cluster.
#[derive(Debug, thiserror::Error)]
#[error(
    "the inventory of cluster {cluster} would hold more than {limit} objects (Nodes, Namespaces, Pods, Services, policies); raise the manager's --max-inventory-objects if the cluster is that big"
)]
pub struct InventoryTooLarge {
    pub cluster: String,
    pub limit: usize,
}

/// How many objects `inv` carries.
pub fn object_count(inv: &pb::Inventory) -> usize {
    inv.nodes.len()
        + inv.namespaces.len()
        + inv.pods.len()
        + inv.services.len()
        + inv.policies.len()
}

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

    /// How many objects it holds, all kinds together.
    pub fn len(&self) -> usize {
        self.nodes.len()
            + self.namespaces.len()
            + self.pods.len()
            + self.services.len()
            + self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many objects of `inv` it does not hold yet (what an upsert would add).
    fn new_objects(&self, inv: &pb::Inventory) -> usize {
        inv.nodes
            .iter()
            .filter(|n| !self.nodes.contains_key(&n.name))
            .count()
            + inv
                .namespaces
                .iter()
                .filter(|n| !self.namespaces.contains_key(&n.name))
                .count()
            + inv
                .pods
                .iter()
                .filter(|p| !self.pods.contains_key(&nk(&p.namespace, &p.name)))
                .count()
            + inv
                .services
                .iter()
                .filter(|s| !self.services.contains_key(&nk(&s.namespace, &s.name)))
                .count()
            + inv
                .policies
                .iter()
                .filter(|p| !self.policies.contains_key(&nk(&p.namespace, &p.name)))
                .count()
    }

    /// [`Self::upsert`], unless the result would hold more than `limit` objects: then nothing
    /// changes.
    pub fn upsert_within(&mut self, inv: pb::Inventory, limit: usize) -> Result<(), usize> {
        let after = self.len() + self.new_objects(&inv);
        if after > limit {
            return Err(after);
        }
        self.upsert(inv);
        Ok(())
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

    #[test]
    fn upsert_within_counts_only_new_objects_and_changes_nothing_when_over() {
        let mut inv = ClusterInventory::default();
        let pods = |names: &[&str]| pb::Inventory {
            pods: names.iter().map(|n| mk_pod("ns", n)).collect(),
            ..Default::default()
        };
        assert!(inv.upsert_within(pods(&["a", "b", "c"]), 3).is_ok());
        // Replacing known Pods adds nothing.
        assert!(inv.upsert_within(pods(&["a", "b"]), 3).is_ok());
        assert_eq!(inv.upsert_within(pods(&["a", "d"]), 3), Err(4));
        assert_eq!(inv.len(), 3);
        assert!(inv.pod("ns", "d").is_none());
        assert_eq!(object_count(&pods(&["x", "y"])), 2);
    }
}
