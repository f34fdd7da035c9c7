//! Connected agents by Node name, with the sender half of each one's command stream.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use tokio::sync::mpsc;
use traceflow_proto::v1 as pb;

/// Commands queued per agent before [`Agents::send`] reports the agent as overloaded.
pub const COMMAND_QUEUE: usize = 8192;

/// Why a command could not be handed to an agent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    #[error("agent is not connected")]
    NotConnected,
    #[error("agent command queue is full")]
    QueueFull,
}

struct Entry {
    conn: u64,
    tx: mpsc::Sender<pb::AgentCommand>,
    hello: Option<pb::AgentHello>,
    /// The agent's latest counters (forwarded to the manager with heartbeats).
    counters: HashMap<String, u64>,
}

/// Counter names kept per agent; more are ignored (peer input stays bounded).
pub const MAX_COUNTERS: usize = 32;
/// Nodes the adapter keeps its own counters of (refused reports) for; a Node beyond is not
/// counted (a cluster's Nodes are far fewer; agents are authenticated as inventory Nodes).
pub const MAX_COUNTED_NODES: usize = 10_000;

#[derive(Default)]
struct Inner {
    next_conn: u64,
    agents: HashMap<String, Entry>,
    /// The adapter's counters of each Node's reports (`traceflow_core::counters::ADAPTER`),
    /// since the adapter started; kept across the agent's reconnects.
    adapter_counts: HashMap<String, HashMap<&'static str, u64>>,
}

/// A cloneable registry of connected agents.
///
/// A new connection for a Node replaces the old one (whose command stream then ends); a
/// disconnect removes the entry only if it is still the same connection.
#[derive(Clone, Default)]
pub struct Agents {
    inner: Arc<Mutex<Inner>>,
}

impl Agents {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a connection for `node`; returns its id and the command receiver.
    pub fn register(&self, node: &str) -> (u64, mpsc::Receiver<pb::AgentCommand>) {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let mut inner = self.lock();
        inner.next_conn += 1;
        let conn = inner.next_conn;
        inner.agents.insert(
            node.to_string(),
            Entry {
                conn,
                tx,
                hello: None,
                counters: HashMap::new(),
            },
        );
        (conn, rx)
    }

    /// Removes `node` if `conn` is still its current connection.
    pub fn unregister(&self, node: &str, conn: u64) {
        let mut inner = self.lock();
        if inner.agents.get(node).is_some_and(|e| e.conn == conn) {
            inner.agents.remove(node);
        }
    }

    /// Records the agent's latest hello (its local ports).
    pub fn set_hello(&self, node: &str, conn: u64, hello: pb::AgentHello) {
        if let Some(e) = self.lock().agents.get_mut(node).filter(|e| e.conn == conn) {
            e.hello = Some(hello);
        }
    }

    /// Records the agent's latest counters (at most [`MAX_COUNTERS`] names).
    pub fn set_counters(&self, node: &str, conn: u64, counters: HashMap<String, u64>) {
        if let Some(e) = self.lock().agents.get_mut(node).filter(|e| e.conn == conn) {
            e.counters = counters.into_iter().take(MAX_COUNTERS).collect();
        }
    }

    /// Counts one of `node`'s reports under `counter` (one of
    /// `traceflow_core::counters::ADAPTER`), whether or not its agent is connected.
    pub fn count_refused(&self, node: &str, counter: &'static str) {
        let mut inner = self.lock();
        let counts = &mut inner.adapter_counts;
        if !counts.contains_key(node) && counts.len() >= MAX_COUNTED_NODES {
            return;
        }
        *counts
            .entry(node.to_string())
            .or_default()
            .entry(counter)
            .or_default() += 1;
    }

    /// The latest counters of every connected agent that sent some, with the adapter's own
    /// counters of that Node's reports (which win over an agent's counter of the same name);
    /// by Node name. A Node the adapter counted reports of is listed even while its agent is
    /// away, so the manager sees the last counts.
    pub fn counters(&self) -> Vec<pb::NodeCounters> {
        let inner = self.lock();
        let mut by_node: HashMap<&str, HashMap<String, u64>> = inner
            .agents
            .iter()
            .filter(|(_, e)| !e.counters.is_empty())
            .map(|(node, e)| (node.as_str(), e.counters.clone()))
            .collect();
        for (node, counts) in &inner.adapter_counts {
            let entry = by_node.entry(node.as_str()).or_default();
            for (name, n) in counts {
                entry.insert((*name).to_string(), *n);
            }
        }
        let mut out: Vec<pb::NodeCounters> = by_node
            .into_iter()
            .map(|(node, counters)| pb::NodeCounters {
                node: node.to_string(),
                counters,
            })
            .collect();
        out.sort_by(|a, b| a.node.cmp(&b.node));
        out
    }

    /// The latest hello of `node`'s agent.
    pub fn hello(&self, node: &str) -> Option<pb::AgentHello> {
        self.lock().agents.get(node).and_then(|e| e.hello.clone())
    }

    /// Queues a command without waiting.
    pub fn send(&self, node: &str, cmd: pb::AgentCommand) -> Result<(), SendError> {
        let tx = self
            .lock()
            .agents
            .get(node)
            .map(|e| e.tx.clone())
            .ok_or(SendError::NotConnected)?;
        tx.try_send(cmd).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => SendError::NotConnected,
        })
    }

    /// The current connection id of `node`'s agent.
    pub fn conn(&self, node: &str) -> Option<u64> {
        self.lock().agents.get(node).map(|e| e.conn)
    }

    /// Queues a command for connection `conn` of `node` only: a command computed for one
    /// connection must not reach its replacement (`NotConnected` then).
    pub fn send_on(&self, node: &str, conn: u64, cmd: pb::AgentCommand) -> Result<(), SendError> {
        let tx = self
            .lock()
            .agents
            .get(node)
            .filter(|e| e.conn == conn)
            .map(|e| e.tx.clone())
            .ok_or(SendError::NotConnected)?;
        tx.try_send(cmd).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => SendError::NotConnected,
        })
    }

    pub fn connected(&self) -> usize {
        self.lock().agents.len()
    }

    pub fn is_connected(&self, node: &str) -> bool {
        self.lock().agents.contains_key(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaced_connection_is_not_removed_by_the_old_one() {
        let agents = Agents::new();
        let (old, _rx1) = agents.register("n1");
        let (_new, _rx2) = agents.register("n1");
        agents.unregister("n1", old);
        assert!(agents.is_connected("n1"));
        assert_eq!(agents.connected(), 1);
    }

    #[test]
    fn send_on_reaches_only_the_named_connection() {
        let agents = Agents::new();
        let (old, _rx1) = agents.register("n1");
        let (new, mut rx2) = agents.register("n1");
        assert_eq!(agents.conn("n1"), Some(new));
        assert_eq!(
            agents.send_on("n1", old, pb::AgentCommand::default()),
            Err(SendError::NotConnected)
        );
        assert_eq!(
            agents.send_on("n1", new, pb::AgentCommand::default()),
            Ok(())
        );
        assert!(rx2.try_recv().is_ok());
    }

    #[test]
    fn send_to_unknown_node_says_not_connected() {
        let agents = Agents::new();
        assert_eq!(
            agents.send("nx", pb::AgentCommand::default()),
            Err(SendError::NotConnected)
        );
    }

    #[test]
    fn refused_reports_ride_with_the_agents_counters_and_outlive_its_stream() {
        use traceflow_core::counters::{PACKET_INS, REPORTS_REFUSED_BAD_SECRET};
        let agents = Agents::new();
        let (conn, _rx) = agents.register("n1");
        agents.set_counters(
            "n1",
            conn,
            [
                (PACKET_INS.to_string(), 5),
                // An agent cannot hide what the adapter counted of it.
                (REPORTS_REFUSED_BAD_SECRET.to_string(), 0),
            ]
            .into(),
        );
        agents.count_refused("n1", REPORTS_REFUSED_BAD_SECRET);
        agents.count_refused("n1", REPORTS_REFUSED_BAD_SECRET);
        let c = agents.counters();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].counters.get(PACKET_INS), Some(&5));
        assert_eq!(c[0].counters.get(REPORTS_REFUSED_BAD_SECRET), Some(&2));
        agents.unregister("n1", conn);
        let c = agents.counters();
        assert_eq!(
            c.iter()
                .map(|n| (n.node.as_str(), n.counters.get(REPORTS_REFUSED_BAD_SECRET)))
                .collect::<Vec<_>>(),
            vec![("n1", Some(&2))],
            "the count stays after the agent left"
        );
    }
}
