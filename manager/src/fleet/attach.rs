//! `AdapterService.Attach`: the one stream per cluster, opened by the adapter.
//!
//! Contract: only a cluster certificate whose serial is the cluster's current one is accepted
//! (checked at connect and before every message, so deregistration ends an open stream). The
//! first message down is `ManagerConfig`. A cluster can update only its own traces; an update
//! for another cluster's trace or an unknown trace is logged and dropped. When a stream ends and
//! the cluster has not reconnected within three heartbeat intervals, its in-flight traces are
//! Failed with reason `cluster <name> disconnected while the trace was in flight`. An adapter's
//! hello lists the traces it runs: every other in-flight trace of the cluster ends Failed at
//! once, naming the cluster (the adapter restarted and lost them).
//!
//! A full inventory arrives whole (`inventory_sync`) or in parts (`inventory_sync_part`, first …
//! last), assembled per stream and applied at the last part. A stream that fails (say, a message
//! over the size limit) is logged as a warning and its error shown in the cluster's health
//! until the next complete sync.

use std::pin::Pin;

use futures::{Stream, StreamExt, future::BoxFuture, stream::FuturesOrdered};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use traceflow_proto::v1::{self as pb, adapter_message::Kind};

use super::{
    Fleet,
    inventory::{InventoryTooLarge, object_count},
};
use crate::{
    auth::Authenticator,
    store::{Store, StoreError, now_micros},
    traces::TraceHub,
};

/// The AdapterService implementation.
#[derive(Clone, Debug)]
pub struct AdapterSvc {
    pub auth: Authenticator,
    pub fleet: Fleet,
    pub hub: TraceHub,
    pub store: Store,
    /// Most objects one cluster's inventory may hold (`--max-inventory-objects`).
    pub max_inventory_objects: usize,
}

type AttachStream = Pin<Box<dyn Stream<Item = Result<pb::ManagerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl pb::adapter_service_server::AdapterService for AdapterSvc {
    type AttachStream = AttachStream;

    #[tracing::instrument(skip_all, name = "attach")]
    async fn attach(
        &self,
        request: Request<Streaming<pb::AdapterMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let (cluster, serial) = self.auth.cluster(&request).map_err(Status::from)?;
        let (tx, rx) = mpsc::channel(1024);
        let config = pb::ManagerMessage {
            kind: Some(pb::manager_message::Kind::Config(pb::ManagerConfig {
                heartbeat_interval_seconds: self.fleet.heartbeat_interval().as_secs().max(1) as i32,
            })),
        };
        tx.send(Ok(config))
            .await
            .map_err(|_| Status::unavailable("stream closed before it opened"))?;
        // Traces created from here on may reach this stream after the adapter's hello was
        // written: only older ones are judged by its list.
        let connected_micros = now_micros();
        let (id, close) = self.fleet.connect(&cluster, tx.clone());
        tracing::info!(cluster = %cluster, serial = %serial, conn = id, "cluster attached");
        if let Ok(Some(mut rec)) = self.store.cluster(&cluster) {
            rec.last_heartbeat_micros = now_micros();
            let _ = self.store.put_cluster(&rec);
        }
        let inbound = request.into_inner();
        let svc = self.clone();
        tokio::spawn(async move {
            let end = svc
                .pump(&cluster, &serial, id, connected_micros, inbound, close)
                .await;
            if let Some(status) = end {
                let _ = tx.send(Err(status)).await;
            }
            if svc.fleet.disconnect(&cluster, id) {
                tracing::info!(cluster = %cluster, conn = id, "cluster detached");
                // A brief blip is forgiven: the adapter keeps running its traces and reports
                // them after reconnecting. Still gone after three heartbeat intervals: its
                // in-flight traces end Failed rather than hang.
                tokio::time::sleep(svc.fleet.heartbeat_interval() * 3).await;
                if svc.fleet.sender(&cluster).is_ok() {
                    return;
                }
                svc.hub
                    .fail_cluster_inflight(
                        &cluster,
                        &format!("cluster {cluster} disconnected while the trace was in flight"),
                    )
                    .await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

impl AdapterSvc {
    /// Cancels at the adapter the traces it still runs that the manager has ended (failed while
    /// the adapter was away, at the manager's own restart, or deleted), so the adapter frees
    /// their ids and live-traffic tags now rather than at their timeouts: after a manager
    /// restart, live traces would otherwise hold the 14 tags for up to their timeout.
    async fn cancel_ended(&self, cluster: &str, running: &[String]) {
        let ended: Vec<&String> = running
            .iter()
            .filter(|uid| !self.hub.is_inflight(cluster, uid))
            .collect();
        if ended.is_empty() {
            return;
        }
        let Ok(tx) = self.fleet.sender(cluster) else {
            return;
        };
        tracing::info!(
            cluster,
            ended = ended.len(),
            "cancelling traces the adapter still runs but the manager ended"
        );
        for uid in ended {
            let cancel = pb::ManagerMessage {
                kind: Some(pb::manager_message::Kind::CancelTrace(pb::CancelTrace {
                    uid: uid.clone(),
                })),
            };
            let sent = tokio::time::timeout(CANCEL_SEND_TIMEOUT, tx.send(Ok(cancel))).await;
            if !matches!(sent, Ok(Ok(()))) {
                tracing::warn!(cluster, uid = %uid, "cancel not sent: the adapter's stream is full or gone");
                return;
            }
        }
    }
}

/// How long a `CancelTrace` may wait for room in the adapter's stream.
const CANCEL_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Adds the objects of `part` to `acc`.
fn append(acc: &mut pb::Inventory, part: pb::Inventory) {
    acc.nodes.extend(part.nodes);
    acc.namespaces.extend(part.namespaces);
    acc.pods.extend(part.pods);
    acc.services.extend(part.services);
    acc.policies.extend(part.policies);
}

impl AdapterSvc {
    /// Reads the adapter's messages until the stream ends or must close; returns the status to
    /// end the outbound stream with, if any.
    async fn pump(
        &self,
        cluster: &str,
        serial: &str,
        id: u64,
        connected_micros: i64,
        mut inbound: Streaming<pb::AdapterMessage>,
        mut close: tokio::sync::oneshot::Receiver<Status>,
    ) -> Option<Status> {
        // The parts of a full sync received so far.
        let mut partial_sync: Option<pb::Inventory> = None;
        let mut staged = Staged::default();
        let end = loop {
            // Trace updates are stored in stream order but not waited on one by one: their
            // durability is awaited together (one flush for many) and each is published, in
            // order, once durable. At most MAX_STAGED wait at once.
            if staged.waiting.len() >= MAX_STAGED {
                staged.publish_next(&self.hub, cluster).await;
            }
            let msg = tokio::select! {
                status = &mut close => {
                    break Some(status.unwrap_or_else(|_| Status::aborted("stream closed")));
                }
                () = staged.publish_next(&self.hub, cluster), if !staged.waiting.is_empty() => continue,
                msg = inbound.next() => msg,
            };
            let msg = match msg {
                None => break None,
                Some(Err(error)) => {
                    tracing::warn!(
                        %error,
                        cluster,
                        "adapter stream failed; the cluster is Down until its adapter reconnects and syncs"
                    );
                    self.fleet.stream_failed(
                        cluster,
                        format!("adapter stream failed: {}", error.message()),
                    );
                    break None;
                }
                Some(Ok(m)) => m,
            };
            // Revocation: the certificate must still be the cluster's current one.
            match self.store.cluster(cluster) {
                Ok(Some(rec)) if rec.certificate_serial == serial => {}
                Ok(_) => {
                    break Some(Status::unauthenticated(format!(
                        "certificate of cluster {cluster:?} was revoked; register again with a new bootstrap token"
                    )));
                }
                Err(error) => {
                    tracing::warn!(%error, cluster, "cannot read cluster record");
                }
            }
            if !self.fleet.is_current(cluster, id) {
                break Some(Status::aborted(
                    "a newer stream for this cluster replaced this one",
                ));
            }
            self.fleet.heard(cluster, id, None);
            match self
                .handle(cluster, id, connected_micros, msg, &mut partial_sync)
                .await
            {
                Ok(Some(t)) => staged.stage(&self.hub, t),
                Ok(None) => {}
                Err(too_large) => {
                    let reason = too_large.to_string();
                    tracing::warn!(cluster, "{reason}");
                    self.fleet.stream_failed(cluster, reason.clone());
                    break Some(Status::resource_exhausted(reason));
                }
            }
        };
        // What was stored is published before the stream is let go.
        while !staged.waiting.is_empty() {
            staged.publish_next(&self.hub, cluster).await;
        }
        end
    }

    /// Applies one message; a trace update is only stored, and returned for publishing. An
    /// inventory beyond the limit is refused whole (the stream then ends).
    async fn handle(
        &self,
        cluster: &str,
        id: u64,
        connected_micros: i64,
        msg: pb::AdapterMessage,
        partial_sync: &mut Option<pb::Inventory>,
    ) -> Result<Option<pb::Traceflow>, InventoryTooLarge> {
        let limit = self.max_inventory_objects;
        let too_large = || InventoryTooLarge {
            cluster: cluster.to_string(),
            limit,
        };
        match msg.kind {
            None => {}
            Some(Kind::Hello(h)) => {
                tracing::info!(cluster, version = %h.version, running = h.running_trace_uids.len(), "adapter hello");
                if h.reports_running {
                    let running: std::collections::HashSet<&str> =
                        h.running_trace_uids.iter().map(String::as_str).collect();
                    let reason = format!(
                        "the adapter of cluster {cluster} restarted and no longer runs the trace"
                    );
                    let lost = self
                        .hub
                        .fail_cluster_inflight_except(cluster, &running, connected_micros, &reason)
                        .await;
                    if lost > 0 {
                        tracing::warn!(cluster, lost, "traces lost by the adapter ended Failed");
                    }
                }
                self.cancel_ended(cluster, &h.running_trace_uids).await;
            }
            Some(Kind::InventorySync(inv)) => {
                if object_count(&inv) > limit {
                    return Err(too_large());
                }
                self.fleet.with_inventory(cluster, |i| i.sync(inv));
                self.fleet.synced(cluster);
            }
            Some(Kind::InventorySyncPart(part)) => {
                let inv = part.inventory.unwrap_or_default();
                let held = match partial_sync {
                    Some(acc) if !part.first => object_count(acc),
                    _ => 0,
                };
                if held + object_count(&inv) > limit {
                    *partial_sync = None;
                    return Err(too_large());
                }
                match partial_sync {
                    Some(acc) if !part.first => append(acc, inv),
                    None if !part.first => {
                        tracing::warn!(cluster, "inventory part without a first part ignored");
                        return Ok(None);
                    }
                    _ => *partial_sync = Some(inv),
                }
                if part.last
                    && let Some(inv) = partial_sync.take()
                {
                    self.fleet.with_inventory(cluster, |i| i.sync(inv));
                    self.fleet.synced(cluster);
                }
            }
            Some(Kind::InventoryUpsert(inv)) => {
                self.fleet
                    .with_inventory(cluster, |i| i.upsert_within(inv, limit))
                    .map_err(|_| too_large())?;
            }
            Some(Kind::InventoryDelete(d)) => {
                self.fleet.with_inventory(cluster, |i| i.delete(d));
            }
            Some(Kind::Heartbeat(b)) => {
                self.fleet.heard(cluster, id, Some(&b));
            }
            Some(Kind::TraceUpdate(u)) => {
                let status = u.status.unwrap_or_default();
                match self.hub.stage_update(cluster, &u.uid, status) {
                    Ok(Some(t)) => return Ok(Some(t)),
                    Ok(None) => {
                        tracing::debug!(cluster, uid = %u.uid, "update for an ended trace ignored");
                    }
                    Err(error) => {
                        tracing::warn!(%error, cluster, uid = %u.uid, "trace update refused");
                    }
                }
            }
        }
        Ok(None)
    }
}

/// Most trace updates of one stream stored and waiting for durability at once.
const MAX_STAGED: usize = 1024;

type Durable = BoxFuture<'static, (Result<(), StoreError>, pb::Traceflow)>;

/// Trace updates of one stream that are stored but not yet published, oldest first, each
/// with its wait for durability (concurrent waits share one flush).
#[derive(Default)]
struct Staged {
    waiting: FuturesOrdered<Durable>,
}

impl Staged {
    fn stage(&mut self, hub: &TraceHub, t: pb::Traceflow) {
        let hub = hub.clone();
        self.waiting
            .push_back(Box::pin(async move { (hub.durable().await, t) }));
    }

    /// Waits until the oldest is durable, then publishes it. Cancel-safe: nothing is lost
    /// when this is dropped while waiting.
    async fn publish_next(&mut self, hub: &TraceHub, cluster: &str) {
        match self.waiting.next().await {
            Some((Ok(()), t)) => {
                hub.publish(&t);
                tracing::debug!(cluster, uid = %t.uid, phase = ?traceflow_core::phase::of(&t), "trace updated");
            }
            Some((Err(error), t)) => {
                tracing::warn!(%error, cluster, uid = %t.uid, "trace update not durable; not published");
            }
            None => {}
        }
    }
}
