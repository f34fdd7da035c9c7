//! The Node's desired state as the adapter sends it (`AgentCommand::NodeState`,
//! proto/traceflow/v1/agent.proto): peer Nodes, Services with endpoints, compiled policy rules
//! and K8s isolation, kept in a [`Store`] with replace / upsert / delete semantics.
//!
//! ```text
//!  adapter ──NodeState──▶ Store::apply ──watch<Arc<DesiredState>>──▶ pipeline::spawn (reconcile)
//! ```
//!
//! Contract:
//! - a NodeState with `replace` set replaces everything (peers, Services, rules, isolation);
//!   otherwise upserts replace the object with the same key (peer = Node name, Service =
//!   `"<ns>/<name>"`, rule = conjunction id) and deletes remove by key (unknown keys are
//!   ignored); `isolation`, when present, replaces both isolation sets;
//! - proto → domain happens here, once: an object with an unparseable field is logged and
//!   skipped (the rest of the message still applies), never a panic;
//! - the watch only fires when the state actually changed, so an idempotent delta does not
//!   reprogram br-int.

pub mod model;

use std::sync::Arc;

use tokio::sync::watch;
use traceflow_proto::v1 as pb;
use tracing::{info, warn};

pub use model::{
    DesiredState, Egress, Endpoint, InvalidObject, Peer, PeerNode, PolicyRule, RuleAction,
    RuleDirection, RulePort, Service, ServicePort,
};

/// Owner of the desired state; cheap to clone (all clones share one state).
#[derive(Clone)]
pub struct Store {
    tx: Arc<watch::Sender<Arc<DesiredState>>>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new(DesiredState::default())
    }
}

impl Store {
    /// A store starting at `initial`.
    pub fn new(initial: DesiredState) -> Self {
        Self {
            tx: Arc::new(watch::channel(Arc::new(initial)).0),
        }
    }

    /// A store whose only content is `peers` (the interim `--peer` flag): they are named
    /// `static-<n>` and disappear with the adapter's first replace.
    pub fn with_static_peers(peers: &[Peer]) -> Self {
        let mut s = DesiredState::default();
        for (i, p) in peers.iter().enumerate() {
            let name = format!("static-{i}");
            s.peers.insert(
                name.clone(),
                PeerNode {
                    name,
                    pod_cidrs: p.pod_cidrs.clone(),
                    tunnel_ips: vec![p.tunnel_ip],
                },
            );
        }
        Self::new(s)
    }

    /// Follows the state; fires only on real changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<DesiredState>> {
        self.tx.subscribe()
    }

    /// The current state.
    pub fn current(&self) -> Arc<DesiredState> {
        self.tx.borrow().clone()
    }

    /// Replaces the whole state (no-op when equal).
    pub fn replace(&self, next: DesiredState) {
        self.tx.send_if_modified(|cur| {
            if **cur == next {
                false
            } else {
                *cur = Arc::new(next);
                true
            }
        });
    }

    /// Adds (`on`) or removes the live-traffic tag `tag`; returns whether the state changed.
    pub fn set_live_tag(&self, tag: u8, on: bool) -> bool {
        self.tx.send_if_modified(|cur| {
            if cur.live_tags.contains(&tag) == on {
                return false;
            }
            let mut next = (**cur).clone();
            if on {
                next.live_tags.insert(tag);
            } else {
                next.live_tags.remove(&tag);
            }
            *cur = Arc::new(next);
            true
        })
    }

    /// Applies one NodeState message (see the module contract). Returns whether the state
    /// changed; invalid objects are logged with their key and skipped.
    pub fn apply(&self, msg: pb::NodeState) -> bool {
        let mut next = (*self.current()).clone();
        let replace = msg.replace;
        for error in next.apply(msg) {
            warn!(%error, "invalid object in node state; skipped");
        }
        let changed = *self.current() != next;
        if changed {
            info!(
                replace,
                peers = next.peers.len(),
                services = next.services.len(),
                rules = next.rules.len(),
                "desired state changed"
            );
            self.tx.send_replace(Arc::new(next));
        }
        changed
    }
}

/// Test fixtures shared by unit tests across modules.
#[cfg(test)]
pub(crate) mod fixtures {
    use traceflow_proto::v1 as pb;

    use super::{DesiredState, PeerNode};

    /// Node n1 (10.1.0.0/24, tunnel 192.168.77.2) with one peer, n2 (10.2.0.0/24, tunnel
    /// 192.168.77.3).
    pub(crate) fn two_nodes() -> DesiredState {
        let node = |name: &str, cidr: &str, ip: u8| PeerNode {
            name: name.into(),
            pod_cidrs: vec![cidr.parse().unwrap_or_else(|e| panic!("{e}"))],
            tunnel_ips: vec![[192, 168, 77, ip].into()],
        };
        let mut d = DesiredState {
            node: Some(node("n1", "10.1.0.0/24", 2)),
            ..Default::default()
        };
        d.peers.insert("n2".into(), node("n2", "10.2.0.0/24", 3));
        d
    }

    /// Service `default/<name>` at 10.96.0.10, TCP 80 → 8080 on each of `eps` (Pods
    /// `web-<ip>` on Node `n1`).
    pub(crate) fn svc(name: &str, eps: &[&str]) -> pb::ServiceState {
        pb::ServiceState {
            namespace: "default".into(),
            name: name.into(),
            cluster_ips: vec!["10.96.0.10".into()],
            ports: vec![pb::ServicePortState {
                name: "http".into(),
                protocol: "TCP".into(),
                port: 80,
                endpoints: eps
                    .iter()
                    .map(|ip| pb::ServiceEndpoint {
                        ip: (*ip).into(),
                        port: 8080,
                        node: "n1".into(),
                        pod_namespace: "default".into(),
                        pod_name: format!("web-{ip}"),
                    })
                    .collect(),
            }],
        }
    }
}

#[cfg(test)]
mod tests;
