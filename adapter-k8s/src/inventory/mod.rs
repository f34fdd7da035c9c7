//! The cluster inventory: an [`Index`] shared behind a lock, plus a broadcast of its changes.
//!
//! Watchers ([`watch`]) are the only writers. The manager link subscribes to [`Change`]s and
//! sends a full snapshot on every (re)connect; the coordinator and the agent server read.

pub mod convert;
pub mod index;
pub mod watch;

use std::sync::{Arc, RwLock, RwLockReadGuard};

use tokio::sync::broadcast;

pub use index::{Change, Index, Kind, Object};

/// How many changes a slow subscriber may fall behind before it must resync.
const CHANGE_BACKLOG: usize = 4096;

/// A cloneable handle on the index.
#[derive(Clone)]
pub struct Inventory {
    index: Arc<RwLock<Index>>,
    changes: broadcast::Sender<Arc<Change>>,
}

impl Default for Inventory {
    fn default() -> Self {
        Self::new()
    }
}

impl Inventory {
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(CHANGE_BACKLOG);
        Self {
            index: Arc::new(RwLock::new(Index::new())),
            changes,
        }
    }

    /// Read access; hold it only for a lookup (never across an `.await`).
    pub fn read(&self) -> RwLockReadGuard<'_, Index> {
        // A panicking writer leaves a consistent index (each mutation is one call); keep going.
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    fn mutate(&self, f: impl FnOnce(&mut Index) -> Change) {
        let change = {
            let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
            f(&mut index)
        };
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
    }

    /// Changes from now on. Subscribe before taking a snapshot so nothing falls in between.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }
}
