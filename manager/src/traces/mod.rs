//! The life of a trace inside the manager: persistence of every transition and fan-out to
//! watchers. What the API asks of traces is [`workflow`].
//!
//! ```text
//!   workflow (create/delete) ─┐                       ┌──▶ watchers (broadcast)
//!   fleet (TraceUpdate) ──────┼─▶ TraceHub::save ──▶ store.put_trace + durable
//!   startup recovery ─────────┘
//! ```
//!
//! Contract: a change is broadcast only after it is durable, so a watcher never sees a state
//! that a crash could take back.

pub mod workflow;

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::sync::broadcast;
use traceflow_proto::v1 as pb;

use traceflow_core::{
    phase::{fail, is_terminal, of as phase},
    reasons,
};

use crate::store::{Store, StoreError, now_micros};

/// A change to a trace, as watchers receive it.
#[derive(Debug, Clone)]
pub enum TraceEvent {
    Updated(Box<pb::Traceflow>),
    Deleted(String),
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
    events: broadcast::Sender<TraceEvent>,
    /// In-flight traces: uid → (cluster, phase).
    inflight: Arc<std::sync::Mutex<HashMap<String, (String, pb::TraceflowPhase)>>>,
}

impl TraceHub {
    pub fn new(store: Store) -> Self {
        let (events, _) = broadcast::channel(4096);
        TraceHub {
            store,
            events,
            inflight: Default::default(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn subscribe(&self) -> broadcast::Receiver<TraceEvent> {
        self.events.subscribe()
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

    /// Stores `t`, waits until it is durable, then tells watchers.
    pub async fn save(&self, t: pb::Traceflow) -> Result<pb::Traceflow, StoreError> {
        self.store.put_trace(&t)?;
        let flush = std::time::Instant::now();
        self.store.durable().await?;
        crate::telemetry::global().store_flushed(flush.elapsed().as_secs_f64());
        self.track(&t);
        let _ = self.events.send(TraceEvent::Updated(Box::new(t.clone())));
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
        let _ = self.events.send(TraceEvent::Deleted(uid.to_string()));
        Ok(existed)
    }

    /// Applies a status snapshot sent by `cluster`'s adapter. Updates to traces that already
    /// ended are ignored (returns `Ok(None)`): the manager may have failed them first.
    pub async fn apply_update(
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
        Ok(Some(self.save(t).await?))
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
