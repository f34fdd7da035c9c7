//! The in-cluster entry point: `Traceflow` custom resources, run by this adapter.
//!
//! ```text
//!  kubectl create -f tf.yaml ─▶ API server ──watch──▶ crd::watch ──start/cancel──▶ Coordinator
//!                                   ▲                                                   │ TraceUpdate
//!                                   └── status writer (merge patch on /status) ◀── Router ┤
//!                                                                  manager link ◀───────┘ (other uids)
//! ```
//!
//! The resource is `traceflows.crd.traceflow.io/v1beta1`, kind `Traceflow`, cluster-scoped,
//! with Antrea's `crd.antrea.io/v1beta1` spec and status schema (reference §1): the same JSON
//! names, phases, reasons and results, plus our `sequence`, `timestampMicros`, `role` and
//! `traceId`. A new object (empty `status.phase`) starts a trace whose uid is the object's
//! `metadata.uid`; deleting a running one cancels it. CR traces are not reported to the manager
//! (its store knows only the traces it created).

pub mod resource;
pub mod status;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
};

use futures::StreamExt;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::mpsc;
use traceflow_proto::v1::{self as pb, TraceflowPhase};
use tracing::{debug, info, warn};

use crate::{
    coordinator::{CoordinatorHandle, NewTrace},
    outbox::Outbox,
};

/// API group of our Traceflow resource.
pub const GROUP: &str = "crd.traceflow.io";
pub const VERSION: &str = "v1beta1";
pub const KIND: &str = "Traceflow";
pub const PLURAL: &str = "traceflows";

/// The `ApiResource` of `traceflows.crd.traceflow.io/v1beta1`.
pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, KIND), PLURAL)
}

/// How many finished CR trace uids are remembered, so that a late watch event carrying an
/// earlier status of a finished trace is recognised as stale.
const FINISHED_MEMORY: usize = 16_384;

/// uid → object name of the CR traces in flight, plus the uids recently finished here; shared
/// by the watcher and the router.
#[derive(Clone, Default)]
pub struct Local {
    names: Arc<Mutex<HashMap<String, String>>>,
    finished: Arc<Mutex<Finished>>,
}

/// The last [`FINISHED_MEMORY`] uids that ended (or were deleted) while this adapter ran.
#[derive(Default)]
struct Finished {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl Local {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn finish(&self, uid: &str) {
        let mut f = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        if f.set.insert(uid.to_string()) {
            f.order.push_back(uid.to_string());
            while f.order.len() > FINISHED_MEMORY {
                if let Some(old) = f.order.pop_front() {
                    f.set.remove(&old);
                }
            }
        }
    }

    fn finished(&self, uid: &str) -> bool {
        self.finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set
            .contains(uid)
    }
}

/// Splits coordinator updates: CR traces to the status writer, the rest to the manager link.
/// Never waits on either (each is an [`Outbox`]); closes both when the coordinator stops.
pub async fn route(
    mut from: mpsc::Receiver<pb::TraceUpdate>,
    local: Local,
    to_manager: Outbox<pb::TraceUpdate>,
    to_status: Outbox<pb::TraceflowStatus>,
) {
    while let Some(update) = from.recv().await {
        let status = update.status.clone().unwrap_or_default();
        let terminal = status.phase == TraceflowPhase::Succeeded as i32
            || status.phase == TraceflowPhase::Failed as i32;
        let name = {
            let mut names = local.lock();
            if terminal {
                let name = names.remove(&update.uid);
                if name.is_some() {
                    local.finish(&update.uid);
                }
                name
            } else {
                names.get(&update.uid).cloned()
            }
        };
        match name {
            Some(name) => to_status.put(&name, status),
            None => to_manager.put(&update.uid.clone(), update),
        }
    }
    to_manager.close();
    to_status.close();
}

/// Writes each status snapshot with a merge patch on `/status`; the only writer of CR status.
pub async fn write_statuses(client: Client, statuses: Outbox<pb::TraceflowStatus>) {
    let api: Api<DynamicObject> = Api::all_with(client, &resource());
    while let Some((name, status)) = statuses.next().await {
        let body = serde_json::json!({ "status": status::to_crd(&status) });
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => debug!(name = %name, "status written"),
            Err(kube::Error::Api(e)) if e.code == 404 => {
                debug!(name = %name, "Traceflow deleted; status dropped")
            }
            Err(error) => warn!(%error, name = %name, "writing Traceflow status failed"),
        }
    }
}

fn phase_of(obj: &DynamicObject) -> String {
    obj.data
        .pointer("/status/phase")
        .and_then(|p| p.as_str())
        .unwrap_or_default()
        .to_string()
}

/// Watches Traceflow resources and starts / cancels their traces.
pub async fn watch(
    client: Client,
    cluster: String,
    coordinator: CoordinatorHandle,
    local: Local,
    status: Outbox<pb::TraceflowStatus>,
) {
    let api: Api<DynamicObject> = Api::all_with(client, &resource());
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut failures = 0u32;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => {
                failures = 0;
                e
            }
            Err(error) => {
                failures += 1;
                if failures <= 3 {
                    warn!(%error, "Traceflow watch failed; retrying with backoff");
                } else {
                    debug!(%error, "Traceflow watch failed; retrying with backoff");
                }
                continue;
            }
        };
        match event {
            watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) => {
                on_object(obj, &cluster, &coordinator, &local, &status).await;
            }
            watcher::Event::Delete(obj) => {
                let uid = obj.metadata.uid.clone().unwrap_or_default();
                let removed = local.lock().remove(&uid).is_some();
                if removed {
                    local.finish(&uid);
                    info!(name = ?obj.metadata.name, "Traceflow deleted; cancelling");
                    coordinator.cancel(uid).await;
                }
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }
}

async fn on_object(
    obj: DynamicObject,
    cluster: &str,
    coordinator: &CoordinatorHandle,
    local: &Local,
    status: &Outbox<pb::TraceflowStatus>,
) {
    let Some(name) = obj.metadata.name.clone() else {
        return;
    };
    let uid = obj.metadata.uid.clone().unwrap_or_else(|| name.clone());
    let phase = phase_of(&obj);
    if local.finished(&uid) {
        // A late event for a trace that already ended here (e.g. still saying Running).
        debug!(name = %name, uid = %uid, phase = %phase, "stale event for a finished Traceflow");
        return;
    }
    let known = local.lock().contains_key(&uid);
    match phase.as_str() {
        "" if !known => {}
        "Running" | "Pending" if !known => {
            // This adapter restarted while the trace ran: its observations are lost.
            let failed = pb::TraceflowStatus {
                phase: TraceflowPhase::Failed as i32,
                reason: "traceflow-adapter restarted while the trace was running; create it again"
                    .into(),
                ..Default::default()
            };
            status.put(&name, failed);
            return;
        }
        _ => return,
    }
    let spec = obj.data.get("spec").cloned().unwrap_or_default();
    let spec: pb::TraceflowSpec = match serde_json::from_value(spec) {
        Ok(s) => s,
        Err(e) => {
            let failed = pb::TraceflowStatus {
                phase: TraceflowPhase::Failed as i32,
                reason: format!("invalid spec: {e}"),
                ..Default::default()
            };
            status.put(&name, failed);
            return;
        }
    };
    // The same conversion as the manager's API: without an admission webhook, a resource
    // it refuses ends Failed with the message the gRPC API would give.
    let trace = NewTrace::try_from(pb::Traceflow {
        uid: uid.clone(),
        name: name.clone(),
        cluster: cluster.to_string(),
        spec: Some(spec),
        created_by: "kubernetes".into(),
        ..Default::default()
    });
    let trace = match trace {
        Ok(t) => t,
        Err(e) => {
            info!(name = %name, uid = %uid, reason = %e, "Traceflow resource refused");
            let failed = pb::TraceflowStatus {
                phase: TraceflowPhase::Failed as i32,
                reason: e.to_string(),
                ..Default::default()
            };
            status.put(&name, failed);
            return;
        }
    };
    info!(name = %name, uid = %uid, "starting Traceflow resource");
    local.lock().insert(uid, name);
    coordinator.start(trace).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::Agents;
    use crate::coordinator::Coordinator;
    use crate::inventory::Inventory;

    fn object(uid: &str, phase: Option<&str>) -> DynamicObject {
        let mut data = serde_json::json!({ "spec": {
            "source": { "namespace": "default", "pod": "p0" },
            "destination": { "namespace": "default", "pod": "p1" },
        }});
        if let Some(p) = phase {
            data["status"] = serde_json::json!({ "phase": p });
        }
        let mut obj = DynamicObject::new(&format!("tf-{uid}"), &resource()).data(data);
        obj.metadata.uid = Some(uid.to_string());
        obj
    }

    // `..Default::default()` keeps this compiling when the proto grows fields.
    #[allow(clippy::needless_update)]
    fn terminal(uid: &str) -> pb::TraceUpdate {
        pb::TraceUpdate {
            uid: uid.into(),
            status: Some(pb::TraceflowStatus {
                phase: TraceflowPhase::Succeeded as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_late_running_event_does_not_fail_a_finished_trace() {
        let (updates_tx, _updates_rx) = mpsc::channel(16);
        let (_coordinator, handle) = Coordinator::new(Inventory::new(), Agents::new(), updates_tx);
        let local = Local::default();
        let status_tx = Outbox::new();
        let status_rx = status_tx.clone();

        // Created: the trace starts.
        on_object(object("u1", None), "c1", &handle, &local, &status_tx).await;
        assert!(local.lock().contains_key("u1"));

        // It ends: the router writes Succeeded and forgets it.
        let (from_tx, from_rx) = mpsc::channel(16);
        let to_manager = Outbox::new();
        from_tx.send(terminal("u1")).await.expect("router input");
        drop(from_tx);
        route(
            from_rx,
            local.clone(),
            to_manager.clone(),
            status_tx.clone(),
        )
        .await;
        let (name, st) = status_rx.try_next().expect("terminal status written");
        assert_eq!(name, "tf-u1");
        assert_eq!(st.phase, TraceflowPhase::Succeeded as i32);
        assert!(to_manager.try_next().is_none());

        // The watch then delivers the earlier Running write: stale, ignored.
        on_object(
            object("u1", Some("Running")),
            "c1",
            &handle,
            &local,
            &status_tx,
        )
        .await;
        assert!(
            status_rx.try_next().is_none(),
            "a finished trace was overwritten"
        );

        // A Running object this adapter never saw is still an orphan.
        on_object(
            object("u2", Some("Running")),
            "c1",
            &handle,
            &local,
            &status_tx,
        )
        .await;
        let (name, st) = status_rx.try_next().expect("orphan failed");
        assert_eq!(name, "tf-u2");
        assert_eq!(st.phase, TraceflowPhase::Failed as i32);
        assert!(st.reason.contains("restarted"), "{}", st.reason);
    }

    /// Without an admission webhook (or a schema) in front, the adapter is the last line: a
    /// resource whose spec the manager's API would refuse ends Failed with that message.
    #[tokio::test]
    async fn an_invalid_resource_ends_failed_naming_the_field() {
        let (updates_tx, _updates_rx) = mpsc::channel(16);
        let (_coordinator, handle) = Coordinator::new(Inventory::new(), Agents::new(), updates_tx);
        let local = Local::default();
        let status_tx = Outbox::new();
        let status_rx = status_tx.clone();
        let cases = [
            (
                serde_json::json!({"timeout": 9999}),
                "spec.timeout: must be between 1 and 300 seconds (0 means the default, 20), got 9999",
            ),
            (
                serde_json::json!({"packet": {"transportHeader": {"tcp": {"dstPort": 70000}}}}),
                "spec.packet.transportHeader.tcp.dstPort: port must be between 1 and 65535, got 70000",
            ),
            (
                serde_json::json!({"destination": {"namespace": "default", "pod": "p1", "ip": "10.0.0.9"}}),
                "spec.destination: pod, service and ip are mutually exclusive; set only one",
            ),
        ];
        for (i, (extra, want)) in cases.into_iter().enumerate() {
            let mut obj = object(&format!("bad{i}"), None);
            if let (Some(spec), Some(extra)) = (obj.data["spec"].as_object_mut(), extra.as_object())
            {
                spec.extend(extra.clone());
            }
            on_object(obj, "c1", &handle, &local, &status_tx).await;
            let (name, st) = status_rx
                .try_next()
                .expect("a refused resource gets a status");
            assert_eq!(name, format!("tf-bad{i}"));
            assert_eq!(st.phase, TraceflowPhase::Failed as i32, "{st:?}");
            assert_eq!(st.reason, want);
            assert!(
                !local.lock().contains_key(&format!("bad{i}")),
                "it never started"
            );
        }
    }

    #[test]
    fn finished_uids_are_bounded() {
        let local = Local::default();
        for i in 0..FINISHED_MEMORY + 10 {
            local.finish(&format!("u{i}"));
        }
        assert!(!local.finished("u0"));
        assert!(local.finished(&format!("u{}", FINISHED_MEMORY + 9)));
        let f = local.finished.lock().expect("lock");
        assert_eq!(f.order.len(), FINISHED_MEMORY);
        assert_eq!(f.set.len(), FINISHED_MEMORY);
    }
}
