//! The fleet: one adapter stream per cluster, each cluster's inventory and health.
//!
//! ```text
//!   adapter ══Attach══▶ attach::AdapterSvc ──▶ Fleet (streams, inventory, heartbeats)
//!                                   │                  ▲
//!                                   └─ trace_update ─▶ TraceHub     api (ClusterService,
//!                                                                    TraceflowService.Create)
//! ```
//!
//! Contract: at most one stream per cluster (a new one replaces the old); inventory survives a
//! disconnect and is dropped only by deregistration; health is computed on read from the last
//! heartbeat ([`health`]).

pub mod attach;
pub mod inventory;
pub mod link;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot};
use traceflow_proto::v1 as pb;

pub use inventory::ClusterInventory;

use crate::store::now_micros;

/// Messages down one cluster's stream.
pub type Outbound = mpsc::Sender<Result<pb::ManagerMessage, tonic::Status>>;

/// Health of a cluster from what its adapter last said.
///
/// Down: no stream, or no heartbeat (nor connect) for three intervals. Degraded: connected but
/// fewer agents than expected. Up otherwise.
pub fn health(
    connected: bool,
    since_last_heard: Duration,
    interval: Duration,
    connected_agents: i32,
    expected_agents: i32,
) -> pb::ClusterHealth {
    if !connected || since_last_heard > interval * 3 {
        pb::ClusterHealth::Down
    } else if connected_agents < expected_agents {
        pb::ClusterHealth::Degraded
    } else {
        pb::ClusterHealth::Up
    }
}

struct Conn {
    id: u64,
    tx: Outbound,
    close: Option<oneshot::Sender<tonic::Status>>,
    last_heard: Instant,
}

#[derive(Default, Clone, Copy)]
struct Beat {
    micros: i64,
    connected_agents: i32,
    expected_agents: i32,
}

#[derive(Default)]
struct State {
    conns: HashMap<String, Conn>,
    beats: HashMap<String, Beat>,
    inventory: HashMap<String, ClusterInventory>,
    /// Clusters whose inventory changed since the last snapshot was stored.
    dirty: std::collections::HashSet<String>,
    /// Why each cluster's adapter stream last failed, until its next complete sync.
    stream_errors: HashMap<String, String>,
}

/// Why a cluster cannot take a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// No adapter stream.
    NotConnected,
    /// A stream, but no heartbeat for this long (more than three intervals).
    Silent(Duration),
}

impl Unavailable {
    /// The trace failure reason for `cluster`.
    pub fn reason(&self, cluster: &str) -> String {
        match self {
            Unavailable::NotConnected => traceflow_core::reasons::cluster_not_connected(cluster),
            Unavailable::Silent(d) => format!(
                "cluster {cluster} is down: no heartbeat from its adapter for {}s",
                d.as_secs()
            ),
        }
    }
}

/// Live view of a cluster for ClusterService.
#[derive(Debug, Clone, Copy)]
pub struct LiveStatus {
    pub health: pb::ClusterHealth,
    pub connected_agents: i32,
    pub expected_agents: i32,
    pub last_heartbeat_micros: i64,
}

/// Registry of connected clusters. Cheap to clone.
#[derive(Clone)]
pub struct Fleet {
    state: Arc<Mutex<State>>,
    next_id: Arc<AtomicU64>,
    heartbeat_interval: Duration,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").finish_non_exhaustive()
    }
}

impl Fleet {
    pub fn new(heartbeat_interval: Duration) -> Self {
        Fleet {
            state: Default::default(),
            next_id: Arc::new(AtomicU64::new(1)),
            heartbeat_interval,
        }
    }

    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let r = f(&mut guard);
        crate::telemetry::global().set_connected_clusters(guard.conns.len());
        r
    }

    /// Registers a new stream for `cluster`, closing any previous one. Returns the connection
    /// id and a receiver that fires when the stream must close (with the status to end it).
    pub fn connect(&self, cluster: &str, tx: Outbound) -> (u64, oneshot::Receiver<tonic::Status>) {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let (close_tx, close_rx) = oneshot::channel();
        let old = self.with(|s| {
            s.conns.insert(
                cluster.to_string(),
                Conn {
                    id,
                    tx,
                    close: Some(close_tx),
                    last_heard: Instant::now(),
                },
            )
        });
        if let Some(mut old) = old
            && let Some(c) = old.close.take()
        {
            let _ = c.send(tonic::Status::aborted(
                "a newer stream for this cluster replaced this one",
            ));
        }
        (id, close_rx)
    }

    /// Forgets stream `id` of `cluster` if it is still the current one.
    pub fn disconnect(&self, cluster: &str, id: u64) -> bool {
        self.with(|s| {
            if s.conns.get(cluster).is_some_and(|c| c.id == id) {
                s.conns.remove(cluster);
                true
            } else {
                false
            }
        })
    }

    /// Whether `id` is still the current stream of `cluster`.
    pub fn is_current(&self, cluster: &str, id: u64) -> bool {
        self.with(|s| s.conns.get(cluster).is_some_and(|c| c.id == id))
    }

    /// Closes the cluster's stream with `status` and drops its inventory and heartbeats
    /// (deregistration).
    pub fn remove_cluster(&self, cluster: &str, status: tonic::Status) {
        let conn = self.with(|s| {
            s.inventory.remove(cluster);
            s.dirty.remove(cluster);
            s.beats.remove(cluster);
            s.conns.remove(cluster)
        });
        if let Some(mut c) = conn
            && let Some(close) = c.close.take()
        {
            let _ = close.send(status);
        }
    }

    /// The sender of the cluster's stream, or why the cluster cannot take a trace now: no
    /// stream, or a stream silent for more than three heartbeat intervals (Down).
    pub fn sender(&self, cluster: &str) -> Result<Outbound, Unavailable> {
        let interval = self.heartbeat_interval;
        self.with(|s| match s.conns.get(cluster) {
            None => Err(Unavailable::NotConnected),
            Some(c) if c.last_heard.elapsed() > interval * 3 => {
                Err(Unavailable::Silent(c.last_heard.elapsed()))
            }
            Some(c) => Ok(c.tx.clone()),
        })
    }

    /// Records a heartbeat (or any sign of life) of the current stream.
    pub fn heard(&self, cluster: &str, id: u64, beat: Option<&pb::AdapterHeartbeat>) {
        self.with(|s| {
            if let Some(c) = s.conns.get_mut(cluster).filter(|c| c.id == id) {
                c.last_heard = Instant::now();
                if let Some(b) = beat {
                    crate::telemetry::global().heartbeat(cluster, b);
                    let e = s.beats.entry(cluster.to_string()).or_default();
                    e.micros = now_micros();
                    e.connected_agents = b.connected_agents;
                    e.expected_agents = b.expected_agents;
                }
            }
        })
    }

    /// Health and agent counts of `cluster`.
    pub fn status(&self, cluster: &str) -> LiveStatus {
        let interval = self.heartbeat_interval;
        self.with(|s| {
            let beat = s.beats.get(cluster).copied().unwrap_or_default();
            let conn = s.conns.get(cluster);
            let h = health(
                conn.is_some(),
                conn.map(|c| c.last_heard.elapsed()).unwrap_or_default(),
                interval,
                beat.connected_agents,
                beat.expected_agents,
            );
            LiveStatus {
                health: h,
                connected_agents: beat.connected_agents,
                expected_agents: beat.expected_agents,
                last_heartbeat_micros: beat.micros,
            }
        })
    }

    /// Records why `cluster`'s adapter stream failed: shown in its health until the next
    /// complete inventory sync ([`Fleet::synced`]).
    pub fn stream_failed(&self, cluster: &str, reason: String) {
        self.with(|s| s.stream_errors.insert(cluster.to_string(), reason));
    }

    /// A complete inventory sync arrived: the stream works again.
    pub fn synced(&self, cluster: &str) {
        self.with(|s| s.stream_errors.remove(cluster));
    }

    /// Why `cluster`'s adapter stream last failed; empty when nothing failed since its last
    /// complete sync.
    pub fn stream_error(&self, cluster: &str) -> String {
        self.with(|s| s.stream_errors.get(cluster).cloned().unwrap_or_default())
    }

    /// Inventory counts of `cluster` (all zero before its adapter's first sync).
    pub fn inventory_counts(&self, cluster: &str) -> pb::InventoryCounts {
        self.with(|s| {
            s.inventory
                .get(cluster)
                .map(ClusterInventory::counts)
                .unwrap_or_default()
        })
    }

    /// Runs `f` on the cluster's inventory (created empty on first use) and marks it changed.
    pub fn with_inventory<R>(
        &self,
        cluster: &str,
        f: impl FnOnce(&mut ClusterInventory) -> R,
    ) -> R {
        self.with(|s| {
            s.dirty.insert(cluster.to_string());
            f(s.inventory.entry(cluster.to_string()).or_default())
        })
    }

    /// Loads a stored snapshot at startup; it counts as not synced (absence proves nothing
    /// until the adapter's own sync arrives).
    pub fn load_inventory(&self, cluster: &str, inv: pb::Inventory) {
        self.with(|s| {
            let mut ci = ClusterInventory::default();
            ci.upsert(inv);
            s.inventory.insert(cluster.to_string(), ci);
        })
    }

    /// Hands `put` a snapshot of each inventory changed since the last call, one at a time:
    /// the lock is held for one cluster's snapshot, never for the whole fleet's, and only one
    /// snapshot is in memory at once.
    pub fn drain_dirty(&self, mut put: impl FnMut(&str, &pb::Inventory)) {
        let dirty: Vec<String> = self.with(|s| s.dirty.drain().collect());
        for cluster in dirty {
            let snapshot = self.with(|s| s.inventory.get(&cluster).map(ClusterInventory::to_pb));
            if let Some(inv) = snapshot {
                put(&cluster, &inv);
            }
        }
    }

    /// Runs `f` over the inventories of `cluster` (or of every cluster when empty), in
    /// cluster-name order.
    pub fn read_inventories<R>(
        &self,
        cluster: &str,
        f: impl FnOnce(Vec<(&String, &ClusterInventory)>) -> R,
    ) -> R {
        self.with(|s| {
            let mut all: Vec<_> = s
                .inventory
                .iter()
                .filter(|(name, _)| cluster.is_empty() || name.as_str() == cluster)
                .collect();
            all.sort_by(|a, b| a.0.cmp(b.0));
            f(all)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_state_machine() {
        let i = Duration::from_secs(5);
        assert_eq!(
            health(false, Duration::ZERO, i, 1, 1),
            pb::ClusterHealth::Down
        );
        assert_eq!(
            health(true, Duration::from_secs(1), i, 2, 2),
            pb::ClusterHealth::Up
        );
        assert_eq!(
            health(true, Duration::from_secs(1), i, 1, 2),
            pb::ClusterHealth::Degraded
        );
        // Two missed intervals: still up; three: down.
        assert_eq!(
            health(true, Duration::from_secs(14), i, 2, 2),
            pb::ClusterHealth::Up
        );
        assert_eq!(
            health(true, Duration::from_secs(16), i, 2, 2),
            pb::ClusterHealth::Down
        );
        // Back once heard again.
        assert_eq!(
            health(true, Duration::from_secs(0), i, 2, 2),
            pb::ClusterHealth::Up
        );
    }

    #[test]
    fn new_stream_replaces_old_and_remove_closes() {
        let fleet = Fleet::new(Duration::from_secs(5));
        let (tx1, _rx1) = mpsc::channel(1);
        let (id1, mut close1) = fleet.connect("a", tx1);
        let (tx2, _rx2) = mpsc::channel(1);
        let (id2, mut close2) = fleet.connect("a", tx2);
        assert!(close1.try_recv().is_ok());
        assert!(!fleet.is_current("a", id1));
        assert!(!fleet.disconnect("a", id1));
        assert!(fleet.sender("a").is_ok());
        fleet.remove_cluster("a", tonic::Status::unauthenticated("revoked"));
        assert!(close2.try_recv().is_ok());
        assert!(!fleet.is_current("a", id2));
        assert_eq!(fleet.sender("a").err(), Some(Unavailable::NotConnected));
    }
}
