//! The cluster inventory: an [`Index`] shared behind a lock, plus a broadcast of its changes.
//!
//! Watchers ([`watch`]) are the only writers. The manager link subscribes to [`Change`]s and
//! sends a full snapshot on every (re)connect; the coordinator and the agent server read; the
//! Node desired-state publisher ([`crate::nodestate`]) follows [`Inventory::revisions`].

pub mod convert;
pub mod index;
pub mod record;
pub mod watch;

use std::sync::{Arc, RwLock, RwLockReadGuard};

use tokio::sync::broadcast;

pub use index::{Change, Index, Kind, Object};
pub use record::{PodRecord, PolicyRecord, PolicySource, ServiceRecord};

/// How many changes a slow subscriber may fall behind before it must resync.
const CHANGE_BACKLOG: usize = 4096;

/// A cloneable handle on the index.
#[derive(Clone)]
pub struct Inventory {
    index: Arc<RwLock<Index>>,
    changes: broadcast::Sender<Arc<Change>>,
    /// Bumped after every relist, so [`Inventory::wait_synced`] can wait without polling.
    relists: Arc<tokio::sync::watch::Sender<u64>>,
    /// The index's [`Index::revision`] after every mutation.
    revisions: Arc<tokio::sync::watch::Sender<u64>>,
}

/// The kinds every cluster serves; the manager link waits for them before its first sync.
pub const CORE_KINDS: &[Kind] = &[
    Kind::Node,
    Kind::Namespace,
    Kind::Pod,
    Kind::Service,
    Kind::Policy,
];

/// The Antrea-native kinds; absent when Antrea's CRDs are not installed.
pub const ANTREA_KINDS: &[Kind] = &[Kind::AntreaPolicy, Kind::AntreaClusterPolicy, Kind::Tier];

impl Default for Inventory {
    fn default() -> Self {
        Self::new()
    }
}

impl Inventory {
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(CHANGE_BACKLOG);
        let (relists, _) = tokio::sync::watch::channel(0);
        let (revisions, _) = tokio::sync::watch::channel(0);
        Self {
            index: Arc::new(RwLock::new(Index::new())),
            changes,
            relists: Arc::new(relists),
            revisions: Arc::new(revisions),
        }
    }

    /// Read access; hold it only for a lookup (never across an `.await`).
    pub fn read(&self) -> RwLockReadGuard<'_, Index> {
        // A panicking writer leaves a consistent index (each mutation is one call); keep going.
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    fn mutate(&self, f: impl FnOnce(&mut Index) -> Change) {
        let (change, revision) = {
            let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
            let change = f(&mut index);
            (change, index.revision())
        };
        self.revisions.send_if_modified(|r| {
            let moved = *r != revision;
            *r = revision;
            moved
        });
        if !change.is_empty() {
            // No subscriber (manager disconnected) is fine: it resyncs on connect.
            let _ = self.changes.send(Arc::new(change));
        }
    }

    pub fn apply(&self, obj: Object) {
        self.mutate(|i| i.apply(obj));
    }

    pub fn delete(&self, kind: Kind, key: &str) {
        self.mutate(|i| i.delete(kind, key));
    }

    pub fn reset(&self, kind: Kind, objects: Vec<Object>) {
        self.mutate(|i| i.reset(kind, objects));
        self.relists.send_modify(|n| *n += 1);
    }

    /// Waits until every kind in `kinds` has completed a list, at most `max`; returns whether
    /// they all did.
    pub async fn wait_synced(&self, kinds: &[Kind], max: std::time::Duration) -> bool {
        let mut relists = self.relists.subscribe();
        let deadline = tokio::time::Instant::now() + max;
        loop {
            if kinds.iter().all(|k| self.read().is_synced(*k)) {
                return true;
            }
            match tokio::time::timeout_at(deadline, relists.changed()).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
    }

    /// Changes from now on. Subscribe before taking a snapshot so nothing falls in between.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }

    /// The index revision, marked changed after every mutation that changed anything (including
    /// what the manager never sees); intermediate values coalesce.
    pub fn revisions(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revisions.subscribe()
    }
}
