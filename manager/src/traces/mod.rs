//! The life of a trace inside the manager: persistence of every transition and fan-out to
//! watchers. What the API asks of traces is [`workflow`].
//!
//! ```text
//!   workflow (create/delete) ─┐                                     ┌──▶ watchers of that trace
//!   fleet (TraceUpdate) ──────┼─▶ TraceHub::save ──▶ store.put_trace + durable (group commit)
//!   startup recovery ─────────┘
//! ```
//!
//! Contract: a change is sent to watchers only after it is durable, so a watcher never sees a
//! state that a crash could take back. Each trace has its own channel (created by the first
//! watcher, dropped with the last one or when the trace ends), and a change is one shared
//! snapshot: the cost of a change does not grow with the number of traces being watched.

pub mod workflow;

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::sync::broadcast;
use traceflow_proto::v1 as pb;

use traceflow_core::{
    phase::{fail, is_terminal, of as phase},
    reasons,
};

use crate::store::{Store, StoreError, now_micros};

/// A change to one trace, as its watchers receive it.
#[derive(Debug, Clone)]
pub enum TraceEvent {
    /// The trace as stored, shared by every watcher of it.
    Updated(Arc<pb::Traceflow>),
    Deleted,
}

/// How many changes of one trace a watcher may fall behind before it re-reads the store.
const WATCH_BACKLOG: usize = 16;

/// The channels of the traces someone watches: uid → (generation, sender). The generation
/// tells a channel from a later one of the same uid.
type Watchers = Arc<std::sync::Mutex<HashMap<String, (u64, broadcast::Sender<TraceEvent>)>>>;

/// The changes of one trace for one watcher. Dropping the last subscription of a trace drops
/// its channel.
pub struct Subscription {
    rx: broadcast::Receiver<TraceEvent>,
    uid: String,
    generation: u64,
    watchers: Watchers,
}

impl Subscription {
    /// The next change; `Lagged` when this watcher fell more than [`WATCH_BACKLOG`] behind,
    /// `Closed` after the trace ended or was deleted and every change was received.
    pub async fn recv(&mut self) -> Result<TraceEvent, broadcast::error::RecvError> {
        self.rx.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Ok(mut m) = self.watchers.lock()
            && let Some((generation, tx)) = m.get(&self.uid)
            // This receiver is still counted: it is dropped after this.
            && *generation == self.generation
            && tx.receiver_count() <= 1
        {
            m.remove(&self.uid);
        }
    }
}

/// Why a cluster's trace update was not applied.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("trace {0} is not known to the manager")]
    Unknown(String),
    #[error("trace {uid} belongs to cluster {owner:?}, not {cluster:?}")]
    WrongCluster {
        uid: String,
        owner: String,
        cluster: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Persists traces and fans their changes out. Cheap to clone.
#[derive(Clone, Debug)]
pub struct TraceHub {
    store: Store,
    watchers: Watchers,
    next_generation: Arc<std::sync::atomic::AtomicU64>,
    /// In-flight traces: uid → (cluster, phase).
    inflight: Arc<std::sync::Mutex<HashMap<String, (String, pb::TraceflowPhase)>>>,
}

impl TraceHub {
    pub fn new(store: Store) -> Self {
        TraceHub {
            store,
            watchers: Default::default(),
            next_generation: Default::default(),
            inflight: Default::default(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The changes of trace `uid` from now on. Subscribe before reading the trace, so no
    /// change between the read and the subscription is lost.
    pub fn subscribe(&self, uid: &str) -> Subscription {
        let mut m = match self.watchers.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (generation, tx) = m.entry(uid.to_string()).or_insert_with(|| {
            let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
            (generation, broadcast::channel(WATCH_BACKLOG).0)
        });
        Subscription {
            rx: tx.subscribe(),
            uid: uid.to_string(),
            generation: *generation,
            watchers: self.watchers.clone(),
        }
    }

    /// Sends a change of `uid` to its watchers, if any (`event` is built only then); `last`
    /// (ended or deleted) drops the channel, whose receivers still get what was sent.
    fn notify(&self, uid: &str, event: impl FnOnce() -> TraceEvent, last: bool) {
        let Ok(mut m) = self.watchers.lock() else {
            return;
        };
        if let Some((_, tx)) = m.get(uid) {
            let _ = tx.send(event());
        }
        if last {
            m.remove(uid);
        }
    }

    fn track(&self, t: &pb::Traceflow) {
        let now = phase(t);
        let metrics = crate::telemetry::global();
        if let Ok(mut m) = self.inflight.lock() {
            let before = if is_terminal(now) {
                m.remove(&t.uid).map(|(_, p)| p)
            } else {
                m.insert(t.uid.clone(), (t.cluster.clone(), now))
                    .map(|(_, p)| p)
            };
            if before != Some(now) {
                metrics.trace_phase(now);
                if is_terminal(now) {
                    let end = t.status.as_ref().map_or(0, |s| s.end_time_micros);
                    let end = if end == 0 { now_micros() } else { end };
                    metrics.trace_finished((end - t.creation_time_micros) as f64 / 1e6);
                }
            }
            metrics.set_in_flight(m.len());
        }
    }

    /// Waits until every change stored so far is durable (shared with concurrent callers).
    pub async fn durable(&self) -> Result<(), StoreError> {
        let flush = std::time::Instant::now();
        self.store.durable().await?;
        crate::telemetry::global().store_flushed(flush.elapsed().as_secs_f64());
        Ok(())
    }

    /// Tells watchers and the in-flight tracking about a stored change. Contract: only after
    /// [`TraceHub::durable`] returned for it, and in the order the changes of one trace were
    /// stored.
    pub fn publish(&self, t: &pb::Traceflow) {
        self.track(t);
        let ended = is_terminal(phase(t));
        self.notify(&t.uid, || TraceEvent::Updated(Arc::new(t.clone())), ended);
    }

    /// Stores `t`, waits until it is durable, then tells watchers.
    pub async fn save(&self, t: pb::Traceflow) -> Result<pb::Traceflow, StoreError> {
        self.store.put_trace(&t)?;
        self.durable().await?;
        self.publish(&t);
        Ok(t)
    }

    /// Deletes a trace durably and tells watchers.
    pub async fn delete(&self, uid: &str) -> Result<bool, StoreError> {
        let existed = self.store.delete_trace(uid)?;
        self.store.durable().await?;
        if let Ok(mut m) = self.inflight.lock() {
            m.remove(uid);
            crate::telemetry::global().set_in_flight(m.len());
        }
        self.notify(uid, || TraceEvent::Deleted, true);
        Ok(existed)
    }

    /// Applies a status snapshot sent by `cluster`'s adapter, durably, and tells watchers.
    /// Updates to traces that already ended are ignored (returns `Ok(None)`): the manager may
    /// have failed them first.
    pub async fn apply_update(
        &self,
        cluster: &str,
        uid: &str,
        status: pb::TraceflowStatus,
    ) -> Result<Option<pb::Traceflow>, UpdateError> {
        let Some(t) = self.stage_update(cluster, uid, status)? else {
            return Ok(None);
        };
        self.durable().await?;
        self.publish(&t);
        Ok(Some(t))
    }

    /// [`TraceHub::apply_update`] up to the store write: the change is stored but neither
    /// durable nor published. The caller awaits [`TraceHub::durable`], then calls
    /// [`TraceHub::publish`] in staging order, so one stream's updates can share flushes.
    pub fn stage_update(
        &self,
        cluster: &str,
        uid: &str,
        status: pb::TraceflowStatus,
    ) -> Result<Option<pb::Traceflow>, UpdateError> {
        let mut t = self
            .store
            .get_trace(uid)?
            .ok_or_else(|| UpdateError::Unknown(uid.to_string()))?;
        if t.cluster != cluster {
            return Err(UpdateError::WrongCluster {
                uid: uid.to_string(),
                owner: t.cluster,
                cluster: cluster.to_string(),
            });
        }
        if is_terminal(phase(&t)) {
            return Ok(None);
        }
        let mut status = status;
        let new_phase = pb::TraceflowPhase::try_from(status.phase)
            .unwrap_or(pb::TraceflowPhase::PhaseUnspecified);
        if is_terminal(new_phase) && status.end_time_micros == 0 {
            status.end_time_micros = now_micros();
        }
        if new_phase == pb::TraceflowPhase::PhaseUnspecified {
            status.phase = phase(&t) as i32;
        }
        t.status = Some(status);
        self.store.put_trace(&t)?;
        Ok(Some(t))
    }

    /// Fails every in-flight trace of `cluster` with `reason` (the cluster went away).
    pub async fn fail_cluster_inflight(&self, cluster: &str, reason: &str) {
        let uids: Vec<String> = match self.inflight.lock() {
            Ok(m) => m
                .iter()
                .filter(|(_, (c, _))| c.as_str() == cluster)
                .map(|(u, _)| u.clone())
                .collect(),
            Err(_) => return,
        };
        for uid in uids {
            self.fail_if_inflight(&uid, reason).await;
        }
    }

    /// Fails `uid` with `reason` unless it already ended.
    pub async fn fail_if_inflight(&self, uid: &str, reason: &str) {
        match self.store.get_trace(uid) {
            Ok(Some(mut t)) if !is_terminal(phase(&t)) => {
                fail(&mut t, reason, now_micros());
                if let Err(error) = self.save(t).await {
                    tracing::warn!(%error, uid, "cannot fail trace");
                }
            }
            Ok(_) => {
                if let Ok(mut m) = self.inflight.lock() {
                    m.remove(uid);
                }
            }
            Err(error) => tracing::warn!(%error, uid, "cannot read trace"),
        }
    }

    /// Backstop for a trace whose adapter never ends it: after its timeout plus `grace`, it is
    /// Failed with Antrea's "Traceflow timeout".
    pub fn arm_timeout(&self, uid: String, timeout_secs: i32, grace: Duration) {
        let hub = self.clone();
        let wait = Duration::from_secs(timeout_secs.max(1) as u64) + grace;
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            hub.fail_if_inflight(&uid, reasons::TIMEOUT).await;
        });
    }

    /// Startup recovery: every trace still Pending or Running is ended Failed with reason
    /// [`reasons::MANAGER_RESTARTED`], durably. Returns how many were ended.
    pub fn recover(&self) -> Result<usize, StoreError> {
        let now = now_micros();
        let mut doomed = Vec::new();
        for t in self.store.all_traces() {
            let t = t?;
            if !is_terminal(phase(&t)) {
                doomed.push(t);
            }
        }
        let n = doomed.len();
        for mut t in doomed {
            fail(&mut t, reasons::MANAGER_RESTARTED, now);
            self.store.put_trace(&t)?;
        }
        self.store.flush_blocking()?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(uid: &str, phase: pb::TraceflowPhase) -> pb::Traceflow {
        pb::Traceflow {
            uid: uid.into(),
            name: format!("n-{uid}"),
            cluster: "c1".into(),
            creation_time_micros: 1,
            status: Some(pb::TraceflowStatus {
                phase: phase as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn channels(hub: &TraceHub) -> usize {
        hub.watchers.lock().map(|m| m.len()).unwrap_or(usize::MAX)
    }

    #[tokio::test]
    async fn a_watcher_gets_only_its_trace_and_the_channel_goes_with_the_trace()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let hub = TraceHub::new(Store::open(dir.path())?);
        let mut a = hub.subscribe("a");
        let b = hub.subscribe("b");
        assert_eq!(channels(&hub), 2);

        hub.save(trace("b", pb::TraceflowPhase::Running)).await?;
        hub.save(trace("a", pb::TraceflowPhase::Running)).await?;
        hub.save(trace("a", pb::TraceflowPhase::Succeeded)).await?;
        // Exactly a's two changes, in order, then the end of a's channel.
        for want in [pb::TraceflowPhase::Running, pb::TraceflowPhase::Succeeded] {
            match a.recv().await? {
                TraceEvent::Updated(t) => assert_eq!((t.uid.as_str(), phase(&t)), ("a", want)),
                TraceEvent::Deleted => panic!("a was not deleted"),
            }
        }
        assert!(matches!(
            a.recv().await,
            Err(broadcast::error::RecvError::Closed)
        ));
        // a ended: its channel is gone; b's stays until its last watcher leaves.
        assert_eq!(channels(&hub), 1);
        let b2 = hub.subscribe("b");
        drop(b);
        assert_eq!(channels(&hub), 1);
        drop(b2);
        assert_eq!(channels(&hub), 0);

        // A deletion reaches the watchers of that trace.
        let mut c = hub.subscribe("b");
        hub.delete("b").await?;
        assert!(matches!(c.recv().await?, TraceEvent::Deleted));
        Ok(())
    }
}
