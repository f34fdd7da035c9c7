//! The publisher task: recomputes every connected Node's desired state when the inventory moves
//! and sends each agent a replace after its hello, then deltas.
//!
//! ```text
//!  Inventory::revisions ──changed──▶ debounce 50 ms ──▶ recompute (ClusterState, compile once)
//!                                                          │ per Node with a sent state
//!  PublisherHandle::hello(node, conn) ──▶ replace ─────────┴─▶ diff(last sent, new) ──▶ delta
//! ```
//!
//! The task is the only owner of the [`PolicyCompiler`] (so conjunction ids stay stable for the
//! life of the adapter) and of the last state sent to each agent connection. A state is
//! recorded as sent only once the agent's queue took it; a full queue drops the record and the
//! agent gets a fresh replace on the next round (retried every [`RETRY`]). A state computed for
//! one connection is never delivered to its replacement ([`Agents::send_on`]).

use std::{
    collections::{BTreeSet, HashMap},
    time::Duration,
};

use tokio::time::Instant;
use traceflow_policy::{CompiledPolicies, PolicyCompiler};
use tracing::{debug, info, warn};

use super::{ClusterView, NodeDesired, cluster_state, command, diff};
use crate::{
    agents::{Agents, SendError},
    inventory::{ANTREA_KINDS, CORE_KINDS, Inventory},
    outbox::Outbox,
};

/// How long the first computation waits for the core Kubernetes lists (as the manager link
/// does); after that it computes from what it has and corrects with deltas.
pub const FIRST_SYNC_WAIT: Duration = Duration::from_secs(30);
/// Inventory changes closer together than this are computed and sent as one delta.
pub const DEBOUNCE: Duration = Duration::from_millis(50);
/// How soon an agent whose queue was full gets its replace again.
pub const RETRY: Duration = Duration::from_secs(1);
/// How long the first computation waits for the Antrea-native lists after the core ones (they
/// never complete when Antrea's CRDs are not installed).
pub const ANTREA_SYNC_WAIT: Duration = Duration::from_secs(2);

/// Tells the publisher about agents; cheap to clone.
#[derive(Clone)]
pub struct PublisherHandle {
    /// The latest connection per Node that said hello: only its newest connection needs a
    /// replace, so what waits is bounded by the Nodes, however often agents reconnect.
    hellos: Outbox<u64>,
}

impl PublisherHandle {
    /// `node`'s agent said hello on connection `conn`: it gets a replace (once the first
    /// computation is done, so an agent attaching at start-up waits for the lists).
    pub fn hello(&self, node: &str, conn: u64) {
        self.hellos.put(node, conn);
    }
}

/// The publisher task; build with [`Publisher::new`], then spawn [`Publisher::run`].
pub struct Publisher {
    inventory: Inventory,
    agents: Agents,
    hellos: Outbox<u64>,
}

impl Publisher {
    pub fn new(inventory: Inventory, agents: Agents) -> (Self, PublisherHandle) {
        let hellos = Outbox::new();
        (
            Publisher {
                inventory,
                agents,
                hellos: hellos.clone(),
            },
            PublisherHandle { hellos },
        )
    }

    /// Runs until every [`PublisherHandle`] is dropped (or the task is aborted).
    pub async fn run(self) {
        let mut revisions = self.inventory.revisions();
        if !self
            .inventory
            .wait_synced(CORE_KINDS, FIRST_SYNC_WAIT)
            .await
        {
            warn!(waited = ?FIRST_SYNC_WAIT, "Kubernetes lists incomplete; computing Node states from a partial inventory");
        }
        if !self
            .inventory
            .wait_synced(ANTREA_KINDS, ANTREA_SYNC_WAIT)
            .await
        {
            debug!(
                "Antrea-native lists incomplete (CRDs missing?); computing without them for now"
            );
        }
        let mut state = State {
            trace_tunnel_key: rand::random_range(1..=u64::MAX),
            ..State::default()
        };
        revisions.borrow_and_update();
        state.recompute(&self.inventory);

        let mut deadline: Option<Instant> = None;
        loop {
            let timer = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                hello = self.hellos.next() => match hello {
                    Some((node, conn)) => {
                        state.send_full(&self.agents, node, conn);
                        if !state.retry.is_empty() && deadline.is_none() {
                            deadline = Some(Instant::now() + RETRY);
                        }
                    }
                    None => return,
                },
                changed = revisions.changed(), if deadline.is_none() => match changed {
                    Ok(()) => deadline = Some(Instant::now() + DEBOUNCE),
                    Err(_) => return,
                },
                () = timer => {
                    deadline = None;
                    revisions.borrow_and_update();
                    state.recompute(&self.inventory);
                    state.publish(&self.agents);
                    if !state.retry.is_empty() {
                        deadline = Some(Instant::now() + RETRY);
                    }
                }
            }
        }
    }
}

/// Everything the task owns between rounds.
#[derive(Default)]
struct State {
    compiler: PolicyCompiler,
    view: ClusterView,
    compiled: CompiledPolicies,
    /// Last state queued to each agent, with the connection it went to.
    sent: HashMap<String, (u64, NodeDesired)>,
    /// Agents that must get a replace (their queue was full).
    retry: HashMap<String, u64>,
    /// Compile errors already logged (logged again only after they went away).
    errors: BTreeSet<String>,
    /// The cluster's key for trace packets crossing the tunnel: drawn once per run, never 0.
    trace_tunnel_key: u64,
}

impl State {
    /// `node`'s desired state with the cluster's tunnel key.
    fn node_state(&self, node: &str) -> NodeDesired {
        NodeDesired {
            trace_tunnel_key: self.trace_tunnel_key,
            ..self.view.node_state(&self.compiled, node)
        }
    }

    fn recompute(&mut self, inventory: &Inventory) {
        let started = std::time::Instant::now();
        let (cluster, view) = {
            let index = inventory.read();
            (cluster_state(&index), ClusterView::from_index(&index))
        };
        self.compiled = self.compiler.compile(&cluster);
        self.view = view;
        let errors: BTreeSet<String> = self.compiled.errors.iter().map(|e| e.to_string()).collect();
        for error in errors.difference(&self.errors) {
            warn!(%error, "skipping policy the compiler cannot use");
        }
        self.errors = errors;
        debug!(
            rules = self.compiled.rules.len(),
            services = self.view.services.len(),
            nodes = self.view.nodes.len(),
            elapsed = ?started.elapsed(),
            "recomputed Node states"
        );
    }

    /// Sends `node`'s complete state to connection `conn`, if that is still its connection.
    fn send_full(&mut self, agents: &Agents, node: String, conn: u64) {
        if agents.conn(&node) != Some(conn) {
            return;
        }
        let desired = self.node_state(&node);
        match agents.send_on(&node, conn, command(desired.to_replace())) {
            Ok(()) => {
                info!(
                    node = %node,
                    conn,
                    peers = desired.peers.len(),
                    services = desired.services.len(),
                    rules = desired.rules.len(),
                    "sent full Node state"
                );
                self.retry.remove(&node);
                self.sent.insert(node, (conn, desired));
            }
            Err(SendError::QueueFull) => {
                warn!(node = %node, conn, retry_in = ?RETRY, "agent queue full; Node state not sent");
                self.sent.remove(&node);
                self.retry.insert(node, conn);
            }
            Err(SendError::NotConnected) => {
                self.sent.remove(&node);
            }
        }
    }

    /// Sends each agent with a recorded state the delta to its new state, and retries replaces.
    fn publish(&mut self, agents: &Agents) {
        let nodes: Vec<String> = self.sent.keys().cloned().collect();
        for node in nodes {
            let Some((conn, old)) = self.sent.get(&node) else {
                continue;
            };
            let conn = *conn;
            if agents.conn(&node) != Some(conn) {
                // Gone or replaced; the new connection's hello brings a replace.
                self.sent.remove(&node);
                continue;
            }
            let new = self.node_state(&node);
            let Some(delta) = diff(old, &new) else {
                continue;
            };
            let summary = (
                delta.replace,
                delta.peers_upsert.len() + delta.peers_delete.len(),
                delta.services_upsert.len() + delta.services_delete.len(),
                delta.rules_upsert.len() + delta.rules_delete.len(),
                delta.isolation.is_some(),
            );
            match agents.send_on(&node, conn, command(delta)) {
                Ok(()) => {
                    debug!(
                        node = %node,
                        replace = summary.0,
                        peers = summary.1,
                        services = summary.2,
                        rules = summary.3,
                        isolation = summary.4,
                        "sent Node state delta"
                    );
                    self.sent.insert(node, (conn, new));
                }
                Err(SendError::QueueFull) => {
                    warn!(node = %node, conn, retry_in = ?RETRY, "agent queue full; will resend the full Node state");
                    self.sent.remove(&node);
                    self.retry.insert(node, conn);
                }
                Err(SendError::NotConnected) => {
                    self.sent.remove(&node);
                }
            }
        }
        for (node, conn) in std::mem::take(&mut self.retry) {
            self.send_full(agents, node, conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{Kind, Object, PodRecord};
    use traceflow_proto::v1 as pb;

    fn synced_inventory() -> Inventory {
        let inv = Inventory::new();
        for kind in CORE_KINDS.iter().chain(ANTREA_KINDS) {
            inv.reset(*kind, Vec::new());
        }
        for name in ["n1", "n2"] {
            inv.apply(Object::Node(pb::InventoryNode {
                name: name.into(),
                ..Default::default()
            }));
        }
        inv
    }

    async fn next_state(rx: &mut tokio::sync::mpsc::Receiver<pb::AgentCommand>) -> pb::NodeState {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(pb::AgentCommand {
                kind: Some(pb::agent_command::Kind::NodeState(s)),
            })) => s,
            other => panic!("expected a NodeState, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn hello_gets_a_replace_then_changes_come_as_deltas_to_the_current_connection() {
        let inv = synced_inventory();
        let agents = Agents::new();
        let (publisher, handle) = Publisher::new(inv.clone(), agents.clone());
        let task = tokio::spawn(publisher.run());

        let (old, mut old_rx) = agents.register("n1");
        handle.hello("n1", old);
        let full = next_state(&mut old_rx).await;
        assert!(full.replace);
        assert_eq!(full.peers_upsert.len(), 1);

        // A new connection replaces the old one; only its hello brings it a state.
        let (new, mut new_rx) = agents.register("n1");
        handle.hello("n1", new);
        assert!(next_state(&mut new_rx).await.replace);

        inv.apply(Object::Node(pb::InventoryNode {
            name: "n3".into(),
            ..Default::default()
        }));
        inv.apply(Object::Pod(PodRecord::from(pb::InventoryPod {
            namespace: "a".into(),
            name: "p".into(),
            node: "n2".into(),
            ..Default::default()
        })));
        let delta = next_state(&mut new_rx).await;
        assert!(!delta.replace);
        assert_eq!(
            delta
                .peers_upsert
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            vec!["n3"]
        );
        inv.delete(Kind::Node, "n3");
        assert_eq!(next_state(&mut new_rx).await.peers_delete, vec!["n3"]);
        assert!(
            old_rx.try_recv().is_err(),
            "the replaced connection got a delta"
        );
        task.abort();
    }

    #[tokio::test]
    async fn a_full_queue_gets_a_replace_once_it_drains() {
        let inv = synced_inventory();
        let agents = Agents::new();
        let (publisher, handle) = Publisher::new(inv.clone(), agents.clone());
        let task = tokio::spawn(publisher.run());
        let (conn, mut rx) = agents.register("n1");
        while agents
            .send_on("n1", conn, pb::AgentCommand::default())
            .is_ok()
        {}
        handle.hello("n1", conn);
        tokio::time::sleep(Duration::from_millis(100)).await;
        while let Ok(cmd) = rx.try_recv() {
            assert_eq!(
                cmd,
                pb::AgentCommand::default(),
                "state sent into a full queue"
            );
        }
        assert!(next_state(&mut rx).await.replace);
        task.abort();
    }
}
