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
use traceflow_core::{
    PodRef, TraceSpec,
    limits::{MAX_FILTER_LEN, MAX_PAGE_TOKEN_LEN, MAX_UID_LEN, check_len},
    naming, phase,
};
use traceflow_proto::v1 as pb;
use traceflow_telemetry::ContextMap;

use super::{TraceEvent, TraceHub};
use crate::{
    auth::Principal,
    store::{StoreError, TraceFilter, now_micros},
};

/// How many generated names are drawn before giving up on collisions (each draw has 5 random
/// characters, so a second draw is already rare).
pub const NAME_DRAWS: usize = 8;

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
        check_len("uid", uid, MAX_UID_LEN)?;
        if !name.is_empty() {
            naming::check_trace("name", name)?;
        }
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
        let (name, generated) = if name.is_empty() {
            (naming::generate(&spec), Some(spec.clone()))
        } else {
            (name, None)
        };
        self.start(
            new_trace(who, name, cluster, spec.into_proto(), String::new()),
            generated.as_ref(),
        )
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
        self.start(
            new_trace(who, name, old.cluster, spec.clone().into_proto(), old.uid),
            Some(&spec),
        )
        .await
    }

    /// Stores new trace `t` under a name no other trace has, atomically: when `generated_from`
    /// is set the name was generated from that spec and a collision draws another; a chosen
    /// name that is taken is ALREADY_EXISTS.
    async fn insert(
        &self,
        t: pb::Traceflow,
        generated_from: Option<&TraceSpec>,
    ) -> Result<pb::Traceflow, TraceError> {
        match generated_from {
            Some(spec) => self.insert_drawing(t, || naming::generate(spec)).await,
            None => self.hub.create(t).await?.ok_or_else(|| {
                TraceError::AlreadyExists(
                    "a trace of that name already exists; pick another name or leave it empty"
                        .into(),
                )
            }),
        }
    }

    /// Stores `t`, drawing another name from `draw` each time its name is taken (at most
    /// [`NAME_DRAWS`] names in all).
    async fn insert_drawing(
        &self,
        mut t: pb::Traceflow,
        mut draw: impl FnMut() -> String,
    ) -> Result<pb::Traceflow, TraceError> {
        for _ in 0..NAME_DRAWS {
            if let Some(saved) = self.hub.create(t.clone()).await? {
                return Ok(saved);
            }
            t.name = draw();
        }
        Err(TraceError::AlreadyExists(
            "no free generated name after several draws; retry, or choose a name".into(),
        ))
    }

    /// Stores `t` and hands it to its cluster, or fails it when that is not possible.
    async fn start(
        &self,
        mut t: pb::Traceflow,
        generated_from: Option<&TraceSpec>,
    ) -> Result<pb::Traceflow, TraceError> {
        let span = tracing::Span::current();
        span.record("uid", t.uid.as_str());
        span.record("cluster", t.cluster.as_str());
        // Not connected: stored and returned Failed, never a silent timeout.
        if let Err(reason) = self.clusters.check_connected(&t.cluster) {
            phase::fail(&mut t, &reason, now_micros());
            tracing::info!(uid = %t.uid, cluster = %t.cluster, %reason, "trace failed at once");
            return self.insert(t, generated_from).await;
        }
        let t = self.insert(t, generated_from).await?;
        // The adapter's spans for this trace become children of this call's span.
        if let Err(reason) = self
            .clusters
            .start(&t, traceflow_telemetry::context_map(&span))
            .await
        {
            tracing::info!(uid = %t.uid, cluster = %t.cluster, %reason, "trace failed at once");
            if self.hub.fail_if_inflight(&t.uid, &reason).await {
                self.clusters.cancel(&t.cluster, &t.uid);
            }
            return self.get(&t.uid, "");
        }
        let timeout = t.spec.as_ref().map_or(0, |s| s.timeout);
        self.arm_timeout(&t, timeout);
        tracing::info!(uid = %t.uid, name = %t.name, cluster = %t.cluster, "trace started");
        Ok(t)
    }

    /// Backstop for a trace whose adapter never ends it: after its timeout plus
    /// [`TIMEOUT_GRACE`] it is Failed with Antrea's "Traceflow timeout", and the adapter is told
    /// to cancel it (so it frees the trace's id and tags).
    fn arm_timeout(&self, t: &pb::Traceflow, timeout_secs: i32) {
        let hub = self.hub.clone();
        let clusters = self.clusters.clone();
        let (uid, cluster) = (t.uid.clone(), t.cluster.clone());
        let wait = Duration::from_secs(timeout_secs.max(1) as u64) + TIMEOUT_GRACE;
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if hub
                .fail_if_inflight(&uid, traceflow_core::reasons::TIMEOUT)
                .await
            {
                clusters.cancel(&cluster, &uid);
            }
        });
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
        if !filter.cluster.is_empty() {
            naming::check_cluster("cluster", &filter.cluster)?;
        }
        check_len("source", &filter.source, MAX_FILTER_LEN)?;
        check_len("destination", &filter.destination, MAX_FILTER_LEN)?;
        check_len("page_token", page_token, MAX_PAGE_TOKEN_LEN)?;
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::{auth::Role, store::Store};

    /// A connected cluster that accepts every start and records cancels.
    #[derive(Clone, Default)]
    struct FakeLink {
        cancelled: Arc<Mutex<Vec<String>>>,
    }

    impl ClusterLink for FakeLink {
        fn is_registered(&self, _: &str) -> Result<bool, StoreError> {
            Ok(true)
        }
        fn source_pod(&self, _: &str, _: &PodRef) -> Option<Option<bool>> {
            None
        }
        fn check_connected(&self, _: &str) -> Result<(), String> {
            Ok(())
        }
        async fn start(&self, _: &pb::Traceflow, _: ContextMap) -> Result<(), String> {
            Ok(())
        }
        fn cancel(&self, _: &str, uid: &str) {
            if let Ok(mut c) = self.cancelled.lock() {
                c.push(uid.to_string());
            }
        }
    }

    fn spec() -> Result<TraceSpec, traceflow_core::Invalid> {
        TraceSpec::try_from(pb::TraceflowSpec {
            source: Some(pb::Source {
                namespace: "default".into(),
                pod: "a".into(),
                ip: String::new(),
            }),
            destination: Some(pb::Destination {
                namespace: "default".into(),
                pod: "b".into(),
                ..Default::default()
            }),
            timeout: 1,
            ..Default::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_timed_out_trace_is_cancelled_at_its_adapter_a_finished_one_is_not()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let link = FakeLink::default();
        let traces = Traces::new(TraceHub::new(Store::open(dir.path())?), link.clone());
        let who = Principal::User {
            name: "u".into(),
            role: Role::Edit,
        };
        let stuck = traces
            .create(&who, "c".into(), "stuck".into(), spec()?)
            .await?;
        let done = traces
            .create(&who, "c".into(), "done".into(), spec()?)
            .await?;
        let again = traces
            .create(&who, "c".into(), "done".into(), spec()?)
            .await;
        assert!(matches!(again, Err(TraceError::AlreadyExists(_))));
        let status = pb::TraceflowStatus {
            phase: pb::TraceflowPhase::Succeeded as i32,
            ..Default::default()
        };
        traces.hub.apply_update("c", &done.uid, status).await?;
        tokio::time::sleep(TIMEOUT_GRACE + Duration::from_secs(2)).await;
        // The timeout task writes through sled's blocking flush: give it real time too.
        for _ in 0..100 {
            if link
                .cancelled
                .lock()
                .map(|c| !c.is_empty())
                .unwrap_or(false)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stuck = traces.get(&stuck.uid, "")?;
        assert_eq!(
            stuck.status.map(|s| s.reason).as_deref(),
            Some(traceflow_core::reasons::TIMEOUT)
        );
        assert_eq!(
            phase::of(&traces.get(&done.uid, "")?),
            pb::TraceflowPhase::Succeeded
        );
        let cancelled = link.cancelled.lock().map(|c| c.clone()).unwrap_or_default();
        assert_eq!(cancelled, vec![stuck.uid]);
        Ok(())
    }

    #[tokio::test]
    async fn a_generated_name_that_collides_is_drawn_again_a_chosen_one_is_refused()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let traces = Traces::new(TraceHub::new(Store::open(dir.path())?), FakeLink::default());
        let who = Principal::User {
            name: "u".into(),
            role: Role::Edit,
        };
        let spec = spec()?;
        let mk = |name: &str| {
            new_trace(
                &who,
                name.into(),
                "c".into(),
                spec.clone().into_proto(),
                String::new(),
            )
        };
        traces.insert(mk("taken"), None).await?;
        traces.insert(mk("also-taken"), None).await?;
        // A generated "taken" collides; the draws give "also-taken" (collides too), then "free".
        let mut draws = vec!["free", "also-taken"];
        let saved = traces
            .insert_drawing(mk("taken"), || draws.pop().unwrap_or("never").to_string())
            .await?;
        assert_eq!(saved.name, "free");
        assert!(draws.is_empty(), "both draws used");
        // Every draw collides: ALREADY_EXISTS after NAME_DRAWS names, nothing stored.
        let mut n = 0;
        let r = traces
            .insert_drawing(mk("taken"), || {
                n += 1;
                "taken".to_string()
            })
            .await;
        assert!(matches!(r, Err(TraceError::AlreadyExists(_))), "{r:?}");
        assert_eq!(n, NAME_DRAWS);
        // A chosen name that is taken is refused at once.
        let r = traces.insert(mk("free"), None).await;
        assert!(matches!(r, Err(TraceError::AlreadyExists(m)) if m.contains("pick another name")));
        assert_eq!(traces.hub.store().trace_count(), 3);
        Ok(())
    }
}
