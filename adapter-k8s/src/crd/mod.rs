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

pub mod status;

use std::{
    collections::HashMap,
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

use crate::coordinator::CoordinatorHandle;

/// API group of our Traceflow resource.
pub const GROUP: &str = "crd.traceflow.io";
pub const VERSION: &str = "v1beta1";
pub const KIND: &str = "Traceflow";
pub const PLURAL: &str = "traceflows";

/// The `ApiResource` of `traceflows.crd.traceflow.io/v1beta1`.
pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, KIND), PLURAL)
}

/// uid → object name of the CR traces in flight; shared by the watcher and the router.
#[derive(Clone, Default)]
pub struct Local {
    names: Arc<Mutex<HashMap<String, String>>>,
}

impl Local {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Splits coordinator updates: CR traces to the status writer, the rest to the manager link.
pub async fn route(
    mut from: mpsc::UnboundedReceiver<pb::TraceUpdate>,
    local: Local,
    to_manager: mpsc::UnboundedSender<pb::TraceUpdate>,
    to_status: mpsc::UnboundedSender<(String, pb::TraceflowStatus)>,
) {
    while let Some(update) = from.recv().await {
        let status = update.status.clone().unwrap_or_default();
        let terminal = status.phase == TraceflowPhase::Succeeded as i32
            || status.phase == TraceflowPhase::Failed as i32;
        let name = {
            let mut names = local.lock();
            if terminal {
                names.remove(&update.uid)
            } else {
                names.get(&update.uid).cloned()
            }
        };
        let sent = match name {
            Some(name) => to_status.send((name, status)).is_ok(),
            None => to_manager.send(update).is_ok(),
        };
        if !sent {
            return;
        }
    }
}

/// Writes each status snapshot with a merge patch on `/status`; the only writer of CR status.
pub async fn write_statuses(
    client: Client,
    mut rx: mpsc::UnboundedReceiver<(String, pb::TraceflowStatus)>,
) {
    let api: Api<DynamicObject> = Api::all_with(client, &resource());
    while let Some((name, status)) = rx.recv().await {
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
    status: mpsc::UnboundedSender<(String, pb::TraceflowStatus)>,
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
                on_object(obj, &cluster, &coordinator, &local, &status);
            }
            watcher::Event::Delete(obj) => {
                let uid = obj.metadata.uid.clone().unwrap_or_default();
                if local.lock().remove(&uid).is_some() {
                    info!(name = ?obj.metadata.name, "Traceflow deleted; cancelling");
                    coordinator.cancel(uid);
                }
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }
}

fn on_object(
    obj: DynamicObject,
    cluster: &str,
    coordinator: &CoordinatorHandle,
    local: &Local,
    status: &mpsc::UnboundedSender<(String, pb::TraceflowStatus)>,
) {
    let Some(name) = obj.metadata.name.clone() else {
        return;
    };
    let uid = obj.metadata.uid.clone().unwrap_or_else(|| name.clone());
    let phase = phase_of(&obj);
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
            let _ = status.send((name, failed));
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
            let _ = status.send((name, failed));
            return;
        }
    };
    info!(name = %name, uid = %uid, "starting Traceflow resource");
    local.lock().insert(uid.clone(), name.clone());
    coordinator.start(pb::Traceflow {
        uid,
        name,
        cluster: cluster.to_string(),
        spec: Some(spec),
        created_by: "kubernetes".into(),
        ..Default::default()
    });
}
