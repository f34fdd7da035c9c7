//! The life of a trace inside the manager: persistence of every transition and fan-out to
//! watchers. What the API asks of traces is [`workflow`].
//!
//! ```text
//!   workflow (create/delete) ─┐                                          ┌──▶ watchers of that trace
//!   fleet (TraceUpdate) ──────┼─▶ TraceHub::create / change (CAS) ──▶ store + durable (group commit)
//!   startup recovery ─────────┘
//! ```
//!
//! Contract: a change is sent to watchers only after it is durable, so a watcher never sees a
//! state that a crash could take back. Every change after creation is a compare-and-swap on the
//! stored trace: terminal phases are final and deleted traces stay deleted. Each trace has its
//! own channel (created by the first watcher, dropped with the last one or when the trace
//! ends), and a change is one shared snapshot: the cost of a change does not grow with the
//! number of traces being watched.

pub mod workflow;

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
};

use tokio::sync::broadcast;
use traceflow_proto::v1 as pb;

use traceflow_core::{
    phase::{fail, is_terminal, of as phase},
    reasons,
};

use crate::store::{Store, StoreError, TraceChange, now_micros};

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

    /// Waits until `t` (just written) is durable, then tells watchers.
    async fn durable_then_publish(&self, t: pb::Traceflow) -> Result<pb::Traceflow, StoreError> {
        self.durable().await?;
        self.publish(&t);
        Ok(t)
    }

    /// Stores new trace `t` unless another trace has its name (`Ok(None)`); durable, then
    /// told to watchers.
    pub async fn create(&self, t: pb::Traceflow) -> Result<Option<pb::Traceflow>, StoreError> {
        if !self.store.insert_trace(&t)? {
            return Ok(None);
        }
        self.durable_then_publish(t).await.map(Some)
    }

    /// Changes stored trace `uid` by compare-and-swap ([`Store::update_trace`]); returns the
    /// trace as written, or `None` when `change` declined or the trace is gone.
    async fn change(
        &self,
        uid: &str,
        change: impl Fn(&mut pb::Traceflow) -> bool,
    ) -> Result<Option<pb::Traceflow>, StoreError> {
        match self.store.update_trace(uid, change)? {
            TraceChange::Changed(t) => self.durable_then_publish(t).await.map(Some),
            TraceChange::Unchanged(t) => {
                self.track(&t);
                Ok(None)
            }
            TraceChange::Missing => {
                if let Ok(mut m) = self.inflight.lock() {
                    m.remove(uid);
                }
                Ok(None)
            }
        }
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

    /// [`TraceHub::apply_update`] up to the store write: the change is stored (the check and
    /// the write are one compare-and-swap, so a trace ended meanwhile stays ended) but neither
    /// durable nor published. The caller awaits [`TraceHub::durable`], then calls
    /// [`TraceHub::publish`] in staging order, so one stream's updates can share flushes.
    pub fn stage_update(
        &self,
        cluster: &str,
        uid: &str,
        status: pb::TraceflowStatus,
    ) -> Result<Option<pb::Traceflow>, UpdateError> {
        // A trace's cluster never changes: checked once, outside the swap.
        let t = self
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
        let new_phase = pb::TraceflowPhase::try_from(status.phase)
            .unwrap_or(pb::TraceflowPhase::PhaseUnspecified);
        let now = now_micros();
        let changed = self.store.update_trace(uid, |t| {
            if is_terminal(phase(t)) {
                return false;
            }
            let mut status = status.clone();
            if is_terminal(new_phase) && status.end_time_micros == 0 {
                status.end_time_micros = now;
            }
            if new_phase == pb::TraceflowPhase::PhaseUnspecified {
                status.phase = phase(t) as i32;
            }
            t.status = Some(status);
            true
        })?;
        Ok(match changed {
            TraceChange::Changed(t) => Some(t),
            TraceChange::Unchanged(t) => {
                self.track(&t);
                None
            }
            TraceChange::Missing => None,
        })
    }

    /// Whether `uid` is in flight (Pending or Running) in `cluster`.
    pub fn is_inflight(&self, cluster: &str, uid: &str) -> bool {
        self.inflight
            .lock()
            .is_ok_and(|m| m.get(uid).is_some_and(|(c, _)| c == cluster))
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

    /// Fails every in-flight trace of `cluster` created before `created_before` (micros) and
    /// not in `keep` with `reason`; returns how many. Later traces may have been handed to the
    /// adapter after it listed `keep`.
    pub async fn fail_cluster_inflight_except(
        &self,
        cluster: &str,
        keep: &std::collections::HashSet<&str>,
        created_before: i64,
        reason: &str,
    ) -> usize {
        let uids: Vec<String> = match self.inflight.lock() {
            Ok(m) => m
                .iter()
                .filter(|(u, (c, _))| c.as_str() == cluster && !keep.contains(u.as_str()))
                .map(|(u, _)| u.clone())
                .collect(),
            Err(_) => return 0,
        };
        let mut failed = 0;
        let now = now_micros();
        for uid in uids {
            let ended = self
                .change(&uid, |t| {
                    if is_terminal(phase(t)) || t.creation_time_micros >= created_before {
                        return false;
                    }
                    fail(t, reason, now);
                    true
                })
                .await;
            match ended {
                Ok(Some(_)) => failed += 1,
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, uid, "cannot fail trace"),
            }
        }
        failed
    }

    /// Fails `uid` with `reason` unless it already ended (one compare-and-swap: a Succeeded
    /// trace is never overwritten by a late timeout, a deleted one never comes back). Returns
    /// whether this call failed it.
    pub async fn fail_if_inflight(&self, uid: &str, reason: &str) -> bool {
        let now = now_micros();
        let failed = self
            .change(uid, |t| {
                if is_terminal(phase(t)) {
                    return false;
                }
                fail(t, reason, now);
                true
            })
            .await;
        match failed {
            Ok(t) => t.is_some(),
            Err(error) => {
                tracing::warn!(%error, uid, "cannot fail trace");
                false
            }
        }
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

    fn mk(uid: &str, name: &str) -> pb::Traceflow {
        pb::Traceflow {
            uid: uid.into(),
            name: name.into(),
            cluster: "c".into(),
            creation_time_micros: now_micros(),
            status: Some(pb::TraceflowStatus {
                phase: pb::TraceflowPhase::Running as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn ended_stays_ended_deleted_stays_deleted_names_stay_unique()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let hub = TraceHub::new(Store::open(dir.path())?);
        hub.create(mk("u1", "t1")).await?.ok_or("not created")?;
        assert!(hub.create(mk("u2", "t1")).await?.is_none(), "name taken");

        let succeeded = pb::TraceflowStatus {
            phase: pb::TraceflowPhase::Succeeded as i32,
            ..Default::default()
        };
        // The adapter's Succeeded and the manager's timeout race: whichever is first wins,
        // the other changes nothing.
        let (a, b) = tokio::join!(
            hub.apply_update("c", "u1", succeeded.clone()),
            hub.fail_if_inflight("u1", reasons::TIMEOUT)
        );
        let first_won = a?.is_some() != b;
        assert!(first_won, "exactly one of the two applied");
        let end = hub.store().get_trace("u1")?.ok_or("gone")?;
        assert!(is_terminal(phase(&end)));
        assert!(!hub.fail_if_inflight("u1", reasons::TIMEOUT).await);
        assert!(hub.apply_update("c", "u1", succeeded).await?.is_none());
        assert_eq!(hub.store().get_trace("u1")?, Some(end));

        hub.create(mk("u3", "t3")).await?.ok_or("not created")?;
        assert!(hub.delete("u3").await?);
        assert!(!hub.fail_if_inflight("u3", reasons::TIMEOUT).await);
        assert!(
            hub.store().get_trace("u3")?.is_none(),
            "a late timeout resurrected it"
        );
        Ok(())
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

        hub.create(mk("b", "n-b")).await?.ok_or("b not created")?;
        hub.create(mk("a", "n-a")).await?.ok_or("a not created")?;
        let succeeded = pb::TraceflowStatus {
            phase: pb::TraceflowPhase::Succeeded as i32,
            ..Default::default()
        };
        hub.apply_update("c", "a", succeeded)
            .await?
            .ok_or("a not updated")?;
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
