//! What TraceflowService does, free of tonic: create, start, retrace, delete, get, list and
//! watch traces. The API edge authenticates and converts; everything else happens here.
//!
//! ```text
//!  create(who, cluster, name, TraceSpec) ─▶ registered? source Pod admissible? name free?
//!        └─▶ start: TraceHub::save (Pending, durable) ─▶ ClusterLink::start ─▶ timeout backstop
//!  retrace(old) ─▶ start(new trace with old's spec, retraceOf = old)
//!  delete ─▶ ClusterLink::cancel (still running) ─▶ TraceHub::delete
//!  watch ─▶ current snapshot, then every change until a terminal phase
//! ```

use std::{future::Future, time::Duration};

use tokio::sync::{broadcast, mpsc};
use traceflow_core::{PodRef, TraceSpec, naming, phase};
use traceflow_proto::v1 as pb;
use traceflow_telemetry::ContextMap;

use super::{TraceEvent, TraceHub};
use crate::{
    auth::Principal,
    store::{StoreError, TraceFilter, now_micros},
};

/// Grace beyond a trace's own timeout before the manager fails it itself.
pub const TIMEOUT_GRACE: Duration = Duration::from_secs(15);

/// Why a trace operation failed. The API maps each kind to one status code.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(transparent)]
    Invalid(#[from] traceflow_core::Invalid),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &str, message: impl Into<String>) -> TraceError {
    TraceError::Invalid(traceflow_core::Invalid::new(field, message))
}

/// The clusters as the trace workflow needs them: implemented by the fleet (registered
/// clusters, their inventories and adapter streams), and by tests.
pub trait ClusterLink: Clone + Send + Sync + 'static {
    /// Whether `cluster` is registered.
    fn is_registered(&self, cluster: &str) -> Result<bool, StoreError>;

    /// The source Pod's `hostNetwork` as `cluster` last reported it: `None` while the cluster
    /// has no synced inventory, `Some(None)` when the Pod does not exist.
    fn source_pod(&self, cluster: &str, pod: &PodRef) -> Option<Option<bool>>;

    /// Whether `cluster` has a live adapter stream now; the error is the reason a trace fails
    /// with at once.
    fn check_connected(&self, cluster: &str) -> Result<(), String>;

    /// Hands a stored trace to its cluster's adapter (`StartTrace`); the error is the reason
    /// the trace fails with.
    fn start(
        &self,
        trace: &pb::Traceflow,
        context: ContextMap,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// Tells `cluster`'s adapter to stop trace `uid` (best effort).
    fn cancel(&self, cluster: &str, uid: &str);
}

/// One page of [`Traces::list`].
pub struct Page {
    pub traces: Vec<pb::Traceflow>,
    pub next_page_token: String,
}

/// The trace workflow. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Traces<L> {
    hub: TraceHub,
    clusters: L,
}

impl<L: ClusterLink> Traces<L> {
    pub fn new(hub: TraceHub, clusters: L) -> Self {
        Traces { hub, clusters }
    }

    /// The uid named by exactly one of `uid` or `name`.
    pub fn resolve(&self, uid: &str, name: &str) -> Result<String, TraceError> {
        match (uid.is_empty(), name.is_empty()) {
            (true, true) => Err(invalid("uid", "set uid or name")),
            (false, false) => Err(invalid("uid", "set only one of uid and name")),
            (false, true) => Ok(uid.to_string()),
            (true, false) => self
                .hub
                .store()
                .trace_uid_by_name(name)?
                .ok_or_else(|| TraceError::NotFound("no trace with that name".into())),
        }
    }

    /// The trace named by exactly one of `uid` or `name`.
    pub fn get(&self, uid: &str, name: &str) -> Result<pb::Traceflow, TraceError> {
        let uid = self.resolve(uid, name)?;
        self.hub
            .store()
            .get_trace(&uid)?
            .ok_or_else(|| TraceError::NotFound("no trace with that uid".into()))
    }

    /// Creates a trace of `spec` on `cluster` for `who`, named `name` (or a generated name),
    /// and starts it. A cluster that is registered but not connected gets the trace stored
    /// and returned Failed at once.
    pub async fn create(
        &self,
        who: &Principal,
        cluster: String,
        name: String,
        spec: TraceSpec,
    ) -> Result<pb::Traceflow, TraceError> {
        if cluster.is_empty() {
            return Err(invalid("cluster", "is required; name a registered cluster"));
        }
        naming::check_cluster("cluster", &cluster)?;
        if !name.is_empty() {
            naming::check_trace("name", &name)?;
        }
        if !self.clusters.is_registered(&cluster)? {
            // The name passed check_cluster: short and plain, safe to repeat.
            return Err(invalid(
                "cluster",
                format!("cluster {cluster:?} is not registered"),
            ));
        }
        if let Some(src) = spec.source_pod()
            && let Some(host_network) = self.clusters.source_pod(&cluster, src)
        {
            spec.check_source_pod(host_network)?;
        }
        let name = if name.is_empty() {
            naming::generate(&spec)
        } else {
            if self.hub.store().trace_uid_by_name(&name)?.is_some() {
                return Err(TraceError::AlreadyExists(
                    "a trace of that name already exists; pick another name or leave it empty"
                        .into(),
                ));
            }
            name
        };
        self.start(new_trace(
            who,
            name,
            cluster,
            spec.into_proto(),
            String::new(),
        ))
        .await
    }

    /// Runs the spec of trace `uid`/`name` again as a new trace linked to it.
    pub async fn retrace(
        &self,
        who: &Principal,
        uid: &str,
        name: &str,
    ) -> Result<pb::Traceflow, TraceError> {
        let old = self.get(uid, name)?;
        if !self.clusters.is_registered(&old.cluster)? {
            return Err(TraceError::FailedPrecondition(format!(
                "cluster {} of this trace is no longer registered",
                old.cluster
            )));
        }
        // Stored specs passed validation when created; one from an older version is
        // checked again rather than trusted.
        let spec = TraceSpec::try_from(old.spec.clone().unwrap_or_default())?;
        let name = naming::generate(&spec);
        self.start(new_trace(
            who,
            name,
            old.cluster,
            spec.into_proto(),
            old.uid,
        ))
        .await
    }

    /// Stores `t` and hands it to its cluster, or fails it when that is not possible.
    async fn start(&self, mut t: pb::Traceflow) -> Result<pb::Traceflow, TraceError> {
        let span = tracing::Span::current();
        span.record("uid", t.uid.as_str());
        span.record("cluster", t.cluster.as_str());
        // Not connected: stored and returned Failed, never a silent timeout.
        if let Err(reason) = self.clusters.check_connected(&t.cluster) {
            phase::fail(&mut t, &reason, now_micros());
            tracing::info!(uid = %t.uid, cluster = %t.cluster, %reason, "trace failed at once");
            return Ok(self.hub.save(t).await?);
        }
        let t = self.hub.save(t).await?;
        // The adapter's spans for this trace become children of this call's span.
        if let Err(reason) = self
            .clusters
            .start(&t, traceflow_telemetry::context_map(&span))
            .await
        {
            tracing::info!(uid = %t.uid, cluster = %t.cluster, %reason, "trace failed at once");
            self.hub.fail_if_inflight(&t.uid, &reason).await;
            return self.get(&t.uid, "");
        }
        let timeout = t.spec.as_ref().map_or(0, |s| s.timeout);
        self.hub.arm_timeout(t.uid.clone(), timeout, TIMEOUT_GRACE);
        tracing::info!(uid = %t.uid, name = %t.name, cluster = %t.cluster, "trace started");
        Ok(t)
    }

    /// Deletes a trace, cancelling it first when it still runs.
    pub async fn delete(&self, uid: &str, name: &str) -> Result<(), TraceError> {
        let t = self.get(uid, name)?;
        if !phase::is_terminal(phase::of(&t)) {
            self.clusters.cancel(&t.cluster, &t.uid);
        }
        self.hub.delete(&t.uid).await?;
        tracing::info!(uid = %t.uid, "trace deleted");
        Ok(())
    }

    /// A page of stored traces matching `filter`, newest first.
    pub fn list(
        &self,
        filter: &TraceFilter,
        page_size: usize,
        page_token: &str,
    ) -> Result<Page, TraceError> {
        if filter.phase != 0 && pb::TraceflowPhase::try_from(filter.phase).is_err() {
            return Err(invalid(
                "phase",
                "unknown phase; use Pending, Running, Succeeded or Failed",
            ));
        }
        if filter.created_after_micros > 0
            && filter.created_before_micros > 0
            && filter.created_after_micros >= filter.created_before_micros
        {
            return Err(invalid(
                "created_after_micros",
                "must be before created_before_micros",
            ));
        }
        let page = self
            .hub
            .store()
            .list_traces(filter, page_size, page_token)?
            .ok_or_else(|| invalid("page_token", "is not a token returned by ListTraceflows"))?;
        Ok(Page {
            traces: page.traces,
            next_page_token: page.next_page_token,
        })
    }

    /// The trace's current snapshot, then every change, ending after a terminal phase (or
    /// with NotFound when it is deleted meanwhile).
    pub fn watch(
        &self,
        uid: &str,
        name: &str,
    ) -> Result<mpsc::Receiver<Result<pb::Traceflow, TraceError>>, TraceError> {
        let uid = self.resolve(uid, name)?;
        // Subscribe before reading, so no change between the read and the subscription is lost.
        let mut events = self.hub.subscribe(&uid);
        let current = self.get(&uid, "")?;
        let (tx, rx) = mpsc::channel(64);
        let store = self.hub.store().clone();
        tokio::spawn(async move {
            let done = phase::is_terminal(phase::of(&current));
            if tx.send(Ok(current)).await.is_err() || done {
                return;
            }
            loop {
                let next = match events.recv().await {
                    Ok(TraceEvent::Updated(t)) => pb::Traceflow::clone(&t),
                    Ok(TraceEvent::Deleted) => {
                        let gone = TraceError::NotFound("the trace was deleted".into());
                        let _ = tx.send(Err(gone)).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => match store.get_trace(&uid) {
                        Ok(Some(t)) => t,
                        _ => return,
                    },
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let done = phase::is_terminal(phase::of(&next));
                if tx.send(Ok(next)).await.is_err() || done {
                    return;
                }
            }
        });
        Ok(rx)
    }
}

/// A new Pending trace.
fn new_trace(
    who: &Principal,
    name: String,
    cluster: String,
    spec: pb::TraceflowSpec,
    retrace_of: String,
) -> pb::Traceflow {
    pb::Traceflow {
        uid: uuid::Uuid::new_v4().to_string(),
        name,
        cluster,
        spec: Some(spec),
        status: Some(pb::TraceflowStatus {
            phase: pb::TraceflowPhase::Pending as i32,
            ..Default::default()
        }),
        creation_time_micros: now_micros(),
        created_by: who.name().to_string(),
        retrace_of,
    }
}
