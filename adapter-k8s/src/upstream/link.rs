//! `AdapterService.Attach`: the adapter's one stream to the manager, kept up with backoff.
//!
//! ```text
//!  connect (mTLS, cluster cert) ─▶ hello, inventory_sync_part… ─▶ loop {
//!      manager: config (heartbeat interval) | start_trace | cancel_trace ─▶ coordinator
//!      inventory change ─▶ inventory_upsert… / inventory_delete   (lagged ─▶ sync parts)
//!      coordinator TraceUpdate ─▶ trace_update
//!      tick ─▶ heartbeat {connected agents, expected = Nodes}
//!      renewal due (2/3 of the cluster certificate's lifetime) ─▶ RenewClusterCertificate
//!  } ─▶ on error: jittered backoff 0.2 s … 2 s, reconnect
//!    ─▶ renewed: new cert + key written (AD/cluster.pem, AD/cluster-key.pem), reconnect at once
//! ```
//!
//! Renewal: once two thirds of the cluster certificate's lifetime have passed, the link asks
//! the manager (over the same mTLS connection, authenticated by the current certificate) to sign
//! a fresh key's CSR; the manager stores the new serial, so the old certificate stops working
//! and the stream reconnects with the new one (the manager waits three heartbeats before
//! failing a cluster's traces, and the hello lists the running ones, so none is lost). A failed
//! renewal is retried with backoff ([`traceflow_daemon::renewal`]) and logged;
//! an expired certificate is logged with what to do.
//!
//! Inventory goes in parts of at most [`INVENTORY_PART_BYTES`] encoded, so a cluster of any
//! size stays under the manager's message limit.
//!
//! Trace updates produced while disconnected wait in the manager [`Outbox`](crate::outbox)
//! (the latest per trace, so the wait is bounded however long the outage) and are sent after
//! the next sync; the latest snapshot of every trace of the last five minutes is resent first,
//! since what was queued on the broken stream may be lost.

use std::{future::Future, pin::pin, sync::Arc, time::Duration};

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use traceflow_daemon::Renewal;
use traceflow_proto::v1::{self as pb, adapter_message::Kind as Out, manager_message::Kind as In};
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::registration::{ClusterIdentity, manager_channel};
use crate::{
    agents::Agents,
    coordinator::{CoordinatorHandle, NewTrace},
    inventory::{CORE_KINDS, Change, Inventory},
};

/// Heartbeat interval until the manager's `ManagerConfig` says otherwise.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// How long the first attach waits for the core Kubernetes lists.
pub const FIRST_SYNC_WAIT: Duration = Duration::from_secs(30);
/// Largest encoded inventory part sent (an object larger than this travels alone): a quarter
/// of gRPC's default 4 MiB message limit.
pub const INVENTORY_PART_BYTES: usize = 1 << 20;

/// Reconnect delays (jittered, [`traceflow_daemon::Reconnect`]): from 0.2 s, below 2 s.
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = traceflow_core::limits::RECONNECT_MAX;
/// A session that lasted this long counts as a successful connection: the next outage starts
/// from [`MIN_BACKOFF`] again (a manager that accepts and at once drops the stream does not).
const HEALTHY_SESSION: Duration = Duration::from_secs(10);

/// Everything the link needs.
pub struct Link {
    pub url: String,
    pub ca_pem: String,
    pub identity: ClusterIdentity,
    /// Where the cluster certificate and key live (rewritten on renewal).
    pub data_dir: std::path::PathBuf,
    pub inventory: Inventory,
    pub agents: Agents,
    pub coordinator: CoordinatorHandle,
    pub updates: crate::outbox::Outbox<pb::TraceUpdate>,
}

/// How a session ended.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("manager refused the stream: {0}")]
    Refused(tonic::Status),
    #[error("stream failed: {0}")]
    Stream(tonic::Status),
    #[error("manager closed the stream")]
    Closed,
    #[error("cluster certificate renewed; reconnecting with it")]
    /// The old stream (still to be read) and its sender (dropped once a new one is up).
    Renewed(
        Box<(
            tonic::Streaming<pb::ManagerMessage>,
            mpsc::Sender<pb::AdapterMessage>,
        )>,
    ),
    #[error("shutting down")]
    Shutdown,
}

/// Why renewing the cluster certificate failed (retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("the current cluster certificate is not readable: {0}")]
    Current(traceflow_pki::PkiError),
    #[error("cannot create a key and CSR: {0}")]
    Csr(traceflow_pki::PkiError),
    #[error("manager refused the renewal: {0}")]
    Refused(tonic::Status),
    #[error("manager returned an unusable certificate: {0}")]
    BadCertificate(String),
    #[error("keeping the renewed certificate: {0}")]
    Files(#[from] crate::agents::pki::AgentPkiError),
}

fn msg(kind: Out) -> pb::AdapterMessage {
    pb::AdapterMessage { kind: Some(kind) }
}

impl Link {
    /// Runs until `shutdown` completes.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = pin!(shutdown);
        let mut backoff = traceflow_daemon::Reconnect::new(MIN_BACKOFF, MAX_BACKOFF);
        let mut renewal = renewal(&self.identity);
        let mut recent = Recent::default();
        // The manager treats the first sync as the truth (it checks source Pods against it),
        // so let the core lists complete first; a broken API server only delays attaching.
        let synced = tokio::select! {
            s = self.inventory.wait_synced(CORE_KINDS, FIRST_SYNC_WAIT) => s,
            _ = shutdown.as_mut() => return,
        };
        if !synced {
            warn!(waited = ?FIRST_SYNC_WAIT, "Kubernetes lists incomplete; attaching with a partial inventory");
        }
        // Whether the last session ended by a renewal: this adapter lost nothing then.
        let mut renewed = None;
        loop {
            warn_if_expired(&renewal);
            let started = tokio::time::Instant::now();
            let end = self
                .session(&mut recent, &mut renewal, renewed.take(), shutdown.as_mut())
                .await;
            match end {
                SessionEnd::Shutdown => return,
                // The old certificate is revoked now: reconnect at once with the new one. What
                // the manager queued on the old stream before the new one replaced it is still
                // read and run (the manager ends that stream), so no trace is lost.
                SessionEnd::Renewed(ended) => {
                    let (old, old_out) = *ended;
                    info!("cluster certificate renewed; reconnecting with it");
                    let coordinator = self.coordinator.clone();
                    tokio::spawn(drain(old, coordinator).instrument(info_span!("renewed_stream")));
                    backoff.reset();
                    renewed = Some(old_out);
                    continue;
                }
                _ => {}
            }
            if started.elapsed() > HEALTHY_SESSION {
                backoff.reset();
            }
            let retry_in = backoff.next_delay();
            match &end {
                SessionEnd::Refused(s) | SessionEnd::Stream(s)
                    if matches!(
                        s.code(),
                        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                    ) =>
                {
                    warn!(
                        error = %end,
                        retry_in = ?retry_in,
                        "manager refuses this cluster's certificate; if the cluster was deregistered, \
                         remove cluster.pem and cluster-key.pem from the data dir and restart with a new bootstrap token"
                    )
                }
                SessionEnd::Refused(_) => {
                    warn!(error = %end, retry_in = ?retry_in, "manager link down")
                }
                _ => info!(error = %end, retry_in = ?retry_in, "manager link down"),
            }
            tokio::select! {
                _ = tokio::time::sleep(retry_in) => {}
                _ = shutdown.as_mut() => return,
            }
        }
    }

    /// The full inventory as `inventory_sync_part` messages.
    fn sync_messages(&self) -> Vec<pb::AdapterMessage> {
        let snapshot = self.inventory.read().snapshot();
        let parts = split_inventory(snapshot, INVENTORY_PART_BYTES);
        let n = parts.len();
        parts
            .into_iter()
            .enumerate()
            .map(|(i, inventory)| {
                msg(Out::InventorySyncPart(pb::InventorySyncPart {
                    inventory: Some(inventory),
                    first: i == 0,
                    last: i + 1 == n,
                }))
            })
            .collect()
    }

    fn heartbeat(&self) -> pb::AdapterMessage {
        let expected = self.inventory.read().node_count();
        msg(Out::Heartbeat(pb::AdapterHeartbeat {
            connected_agents: i32::try_from(self.agents.connected()).unwrap_or(i32::MAX),
            expected_agents: i32::try_from(expected).unwrap_or(i32::MAX),
            agent_counters: self.agents.counters(),
        }))
    }

    /// Renews the cluster certificate over `channel` and keeps it (files, then memory).
    async fn renew(&mut self, channel: tonic::transport::Channel) -> Result<(), RenewError> {
        let current =
            traceflow_pki::pem_identity(&self.identity.cert_pem).map_err(RenewError::Current)?;
        let (csr_pem, key_pem) =
            traceflow_pki::generate_csr(&current.name).map_err(RenewError::Csr)?;
        let mut client = pb::registration_service_client::RegistrationServiceClient::new(channel);
        let cert_pem = client
            .renew_cluster_certificate(pb::RenewClusterCertificateRequest { csr_pem })
            .await
            .map_err(RenewError::Refused)?
            .into_inner()
            .certificate_pem;
        let renewed = traceflow_pki::pem_identity(&cert_pem)
            .map_err(|e| RenewError::BadCertificate(e.to_string()))?;
        if renewed.name != current.name || renewed.kind != traceflow_pki::IdentityKind::Cluster {
            return Err(RenewError::BadCertificate(format!(
                "it names {} {:?}, not cluster {:?}",
                renewed.kind, renewed.name, current.name
            )));
        }
        // The manager now accepts only the new certificate: use it from memory even if keeping
        // it on disk fails (logged; a restart would then need a new registration).
        self.identity = ClusterIdentity { cert_pem, key_pem };
        let kept = super::registration::keep_identity(&self.data_dir, &self.identity);
        info!(
            old_serial = %current.serial,
            serial = %renewed.serial,
            valid_until = renewed.not_after,
            "cluster certificate renewed"
        );
        kept.map_err(RenewError::from)
    }

    async fn session(
        &mut self,
        recent: &mut Recent,
        renewal: &mut Renewal,
        // After a renewal: the old stream's sender, dropped (ending that stream) only once this
        // session's stream is accepted, so the manager always has a stream for the cluster.
        replaced: Option<mpsc::Sender<pb::AdapterMessage>>,
        mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> SessionEnd {
        let channel = tokio::select! {
            c = manager_channel(&self.url, &self.ca_pem, Some(&self.identity)) => match c {
                Ok(c) => c,
                Err(e) => return SessionEnd::Connect(e),
            },
            _ = shutdown.as_mut() => return SessionEnd::Shutdown,
        };
        let renew_channel = channel.clone();
        let mut client = pb::adapter_service_client::AdapterServiceClient::new(channel);
        let (out, out_rx) = mpsc::channel::<pb::AdapterMessage>(1024);
        let mut changes = self.inventory.subscribe();
        // What runs here now: after a restart nothing, so the manager fails the rest at once
        // instead of waiting for their timeouts.
        let hello = msg(Out::Hello(pb::AdapterHello {
            version: env!("CARGO_PKG_VERSION").to_string(),
            running_trace_uids: self.coordinator.running().await,
            // After a renewal nothing was lost: traces whose start is still on its way over
            // the old stream must not be judged by this list.
            reports_running: replaced.is_none(),
        }));
        // Queued before the call so they are the first frames on the stream (the channel
        // holds 1024 messages: a sync of more parts waits for the call to start).
        if out.send(hello).await.is_err() {
            return SessionEnd::Closed;
        }
        let sync = self.sync_messages();
        let (first, rest) = sync.split_at(sync.len().min(512));
        for m in first {
            if out.send(m.clone()).await.is_err() {
                return SessionEnd::Closed;
            }
        }
        let mut inbound = tokio::select! {
            r = client.attach(ReceiverStream::new(out_rx)) => match r {
                Ok(r) => r.into_inner(),
                Err(status) => return SessionEnd::Refused(status),
            },
            _ = shutdown.as_mut() => return SessionEnd::Shutdown,
        };
        info!(manager = %self.url, "attached to manager");
        drop(replaced);
        for m in rest {
            if out.send(m.clone()).await.is_err() {
                return SessionEnd::Closed;
            }
        }
        let mut heartbeat = tokio::time::interval(DEFAULT_HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Whatever was queued or in flight when the last stream broke may be lost: resend the
        // latest snapshot of every recent trace (the manager keeps the newest, ignores ended).
        for update in recent.current() {
            if out.send(msg(Out::TraceUpdate(update))).await.is_err() {
                return SessionEnd::Closed;
            }
        }
        loop {
            tokio::select! {
                m = inbound.message() => match m {
                    Ok(Some(m)) => {
                        if let Some(period) = self.on_manager(m).await {
                            heartbeat = tokio::time::interval(period);
                            heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        }
                    }
                    Ok(None) => return SessionEnd::Closed,
                    Err(status) => return SessionEnd::Stream(status),
                },
                change = changes.recv() => {
                    let next = match change {
                        Ok(change) => change_messages(&change),
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            debug!(missed = n, "inventory changes lagged; resyncing");
                            self.sync_messages()
                        }
                        Err(broadcast::error::RecvError::Closed) => vec![],
                    };
                    for m in next {
                        if out.send(m).await.is_err() {
                            return SessionEnd::Closed;
                        }
                    }
                }
                update = self.updates.next() => {
                    let Some((_, update)) = update else { return SessionEnd::Shutdown };
                    recent.record(&update);
                    if out.send(msg(Out::TraceUpdate(update))).await.is_err() {
                        return SessionEnd::Closed;
                    }
                }
                _ = heartbeat.tick() => {
                    if out.send(self.heartbeat()).await.is_err() {
                        return SessionEnd::Closed;
                    }
                }
                _ = tokio::time::sleep_until(renewal.due()) => {
                    match self.renew(renew_channel.clone()).await {
                        Ok(()) => {
                            *renewal = self::renewal(&self.identity);
                            return SessionEnd::Renewed(Box::new((inbound, out)));
                        }
                        // The manager accepts only the new certificate now, which is in
                        // memory: reconnect with it, and renew again soon to keep one on disk.
                        Err(error @ RenewError::Files(_)) => {
                            error!(%error, "the renewed cluster certificate is in use but not on disk; a restart before the next renewal needs a new registration");
                            renewal_failed(renewal, &error);
                            return SessionEnd::Renewed(Box::new((inbound, out)));
                        }
                        Err(error) => renewal_failed(renewal, &error),
                    }
                }
                _ = shutdown.as_mut() => return SessionEnd::Shutdown,
            }
        }
    }

    /// Handles one manager message; returns a new heartbeat period when the config sets one.
    async fn on_manager(&self, m: pb::ManagerMessage) -> Option<Duration> {
        on_manager(&self.coordinator, m).await
    }
}

/// Reads what the manager still sends on a stream replaced after a renewal (traces started
/// before the new stream took over) until the manager ends it.
async fn drain(mut old: tonic::Streaming<pb::ManagerMessage>, coordinator: CoordinatorHandle) {
    let mut n = 0;
    while let Ok(Some(m)) = old.message().await {
        n += 1;
        on_manager(&coordinator, m).await;
    }
    debug!(messages = n, "replaced manager stream ended");
}

/// Hands one manager message to the coordinator; returns a new heartbeat period when the
/// config sets one.
async fn on_manager(coordinator: &CoordinatorHandle, m: pb::ManagerMessage) -> Option<Duration> {
    {
        match m.kind? {
            In::Config(c) => {
                let secs = u64::try_from(c.heartbeat_interval_seconds)
                    .ok()
                    .filter(|s| *s > 0)?;
                info!(heartbeat_secs = secs, "manager config");
                Some(Duration::from_secs(secs))
            }
            In::StartTrace(s) => {
                let Some(trace) = s.trace else {
                    warn!("start_trace without a trace");
                    return None;
                };
                // The manager validated the spec; one this adapter's version refuses still
                // ends with a reason instead of running unchecked.
                let uid = trace.uid.clone();
                match NewTrace::try_from(trace) {
                    Ok(t) => coordinator.start_traced(t, s.trace_context).await,
                    Err(e) => coordinator.reject(uid, e.to_string()).await,
                }
                None
            }
            In::CancelTrace(c) => {
                coordinator.cancel(c.uid).await;
                None
            }
        }
    }
}

/// When to renew the cluster certificate: at two thirds of `identity`'s lifetime; an
/// unreadable certificate is renewed at once (and fails, logged, if it is really broken).
fn renewal(identity: &ClusterIdentity) -> Renewal {
    match traceflow_pki::pem_identity(&identity.cert_pem) {
        Ok(id) => Renewal::at(id.renew_at(), id.not_after),
        Err(_) => Renewal::at(0, i64::MAX),
    }
}

/// Schedules the next attempt after a failed renewal, saying so.
fn renewal_failed(renewal: &mut Renewal, error: &RenewError) {
    let (retry_in, left) = renewal.failed();
    warn!(%error, ?retry_in, expires_in_secs = left, "renewing the cluster certificate failed; retrying");
}

/// Says what to do when the cluster certificate has expired.
fn warn_if_expired(renewal: &Renewal) {
    if renewal.expired() {
        error!(
            "the cluster certificate has expired, so the manager refuses it (renewal did not \
             happen in time); register the cluster again: deregister it \
             (ClusterService.DeregisterCluster), remove cluster.pem and cluster-key.pem from \
             the data dir and restart with a new bootstrap token"
        );
    }
}

/// How long a trace's latest snapshot is kept for resending after a reconnect.
const RESEND_WINDOW: Duration = Duration::from_secs(300);

/// The latest update per trace of the last [`RESEND_WINDOW`].
#[derive(Default)]
struct Recent {
    latest: std::collections::HashMap<String, (pb::TraceUpdate, tokio::time::Instant)>,
}

impl Recent {
    fn record(&mut self, update: &pb::TraceUpdate) {
        let now = tokio::time::Instant::now();
        self.latest
            .insert(update.uid.clone(), (update.clone(), now));
        // Amortised pruning: only when the map has grown.
        if self.latest.len().is_multiple_of(1024) {
            self.latest
                .retain(|_, (_, at)| now.duration_since(*at) < RESEND_WINDOW);
        }
    }

    /// Snapshots younger than the window, oldest first.
    fn current(&mut self) -> Vec<pb::TraceUpdate> {
        let now = tokio::time::Instant::now();
        self.latest
            .retain(|_, (_, at)| now.duration_since(*at) < RESEND_WINDOW);
        let mut all: Vec<_> = self.latest.values().cloned().collect();
        all.sort_by_key(|(_, at)| *at);
        all.into_iter().map(|(u, _)| u).collect()
    }
}

/// The stream messages for one index change: an upsert and/or a delete.
fn change_messages(change: &Arc<Change>) -> Vec<pb::AdapterMessage> {
    let mut out = Vec::new();
    let empty_upsert = change.upsert == pb::Inventory::default();
    let empty_delete = change.delete == pb::InventoryDeletions::default();
    if !empty_delete {
        out.push(msg(Out::InventoryDelete(change.delete.clone())));
    }
    if !empty_upsert {
        out.extend(
            split_inventory(change.upsert.clone(), INVENTORY_PART_BYTES)
                .into_iter()
                .map(|part| msg(Out::InventoryUpsert(part))),
        );
    }
    out
}

/// `inv` cut into parts of at most about `max_bytes` encoded each, objects in their order
/// (Nodes, Namespaces, Pods, Services, Policies); an object larger than `max_bytes` is a part
/// of its own. Always at least one part (an empty inventory is one empty part).
pub fn split_inventory(inv: pb::Inventory, max_bytes: usize) -> Vec<pb::Inventory> {
    let mut parts = Parts {
        done: Vec::new(),
        current: pb::Inventory::default(),
        bytes: 0,
        max_bytes,
    };
    parts.add(inv.nodes, |i| &mut i.nodes);
    parts.add(inv.namespaces, |i| &mut i.namespaces);
    parts.add(inv.pods, |i| &mut i.pods);
    parts.add(inv.services, |i| &mut i.services);
    parts.add(inv.policies, |i| &mut i.policies);
    parts.done.push(parts.current);
    parts.done
}

struct Parts {
    done: Vec<pb::Inventory>,
    current: pb::Inventory,
    bytes: usize,
    max_bytes: usize,
}

impl Parts {
    fn add<T: prost::Message>(
        &mut self,
        items: Vec<T>,
        field: fn(&mut pb::Inventory) -> &mut Vec<T>,
    ) {
        for item in items {
            // The field's tag and length prefix: at most 1 + 5 bytes.
            let len = item.encoded_len() + 6;
            if self.bytes > 0 && self.bytes + len > self.max_bytes {
                self.done.push(std::mem::take(&mut self.current));
                self.bytes = 0;
            }
            self.bytes += len;
            field(&mut self.current).push(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn pod(i: usize) -> pb::InventoryPod {
        pb::InventoryPod {
            namespace: "default".into(),
            name: format!("p{i}"),
            node: "n1".into(),
            ips: vec![format!("10.0.{}.{}", i / 250, i % 250)],
            labels: (0..10)
                .map(|l| (format!("label-{l}"), format!("value-{i}")))
                .collect(),
            host_network: false,
        }
    }

    #[test]
    fn parts_stay_under_the_limit_and_add_up_to_the_whole() {
        let inv = pb::Inventory {
            nodes: vec![pb::InventoryNode {
                name: "n1".into(),
                ..Default::default()
            }],
            pods: (0..5000).map(pod).collect(),
            ..Default::default()
        };
        let max = 64 * 1024;
        let parts = split_inventory(inv.clone(), max);
        assert!(parts.len() > 5, "{} parts", parts.len());
        assert!(parts.iter().all(|p| p.encoded_len() <= max));
        let mut joined = pb::Inventory::default();
        for p in parts {
            joined.nodes.extend(p.nodes);
            joined.pods.extend(p.pods);
        }
        assert_eq!(joined, inv);
        // Empty: one empty part, so a sync of nothing still replaces everything.
        assert_eq!(
            split_inventory(pb::Inventory::default(), max),
            vec![pb::Inventory::default()]
        );
    }
}
