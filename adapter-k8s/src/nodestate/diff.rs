//! Deltas between two states of the same Node.

use std::collections::BTreeMap;

use traceflow_proto::v1 as pb;

use super::NodeDesired;

/// The `NodeState` that turns `old` into `new`, or `None` when they are equal.
///
/// Peers, Services and rules: upserts for keys that are new or differ, deletes for keys that
/// vanished (a rule that changed only its members keeps its conjunction id, so it is one upsert).
/// Isolation is sent whole when either set changed. When this Node's own info changed, the
/// result is `new` as a replace (a delta cannot carry `node`), and so when the tunnel key did.
pub fn diff(old: &NodeDesired, new: &NodeDesired) -> Option<pb::NodeState> {
    if old.node != new.node || old.trace_tunnel_key != new.trace_tunnel_key {
        return Some(new.to_replace());
    }
    let (peers_upsert, peers_delete) = map_diff(&old.peers, &new.peers);
    let (services_upsert, services_delete) = map_diff(&old.services, &new.services);
    let (rules_upsert, rules_delete) = map_diff(&old.rules, &new.rules);
    let state = pb::NodeState {
        replace: false,
        node: None,
        peers_upsert,
        peers_delete,
        services_upsert,
        services_delete,
        rules_upsert,
        rules_delete,
        isolation: (old.isolation != new.isolation).then(|| new.isolation.clone()),
        egresses: (old.egresses != new.egresses).then(|| new.egresses.clone()),
        // Only a replace carries the key (a changed key is sent as one, above).
        trace_tunnel_key: 0,
    };
    (state != pb::NodeState::default()).then_some(state)
}

fn map_diff<K: Ord + Clone, V: PartialEq + Clone>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
) -> (Vec<V>, Vec<K>) {
    let upserts = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(_, v)| v.clone())
        .collect();
    let deletes = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect();
    (upserts, deletes)
}
