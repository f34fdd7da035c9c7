//! One Node's data-plane runtime without the adapter: OVSDB port watcher, pipeline task and
//! tracer, wired together. The agent binary adds the adapter session on top; tests drive this
//! directly against a real OVS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use crate::desired::Peer;
use crate::desired::{DesiredState, Store};
use crate::ovs::openflow::{Message, PacketIn, Switch};
use crate::pipeline::{self, DatapathHandle};
use crate::ports::{self, NodePorts};
use crate::trace::{Observed, Tracer};

/// Where a Node's OVS lives.
#[derive(Debug, Clone)]
pub struct OvsPaths {
    pub rundir: PathBuf,
    pub bridge: String,
}

impl OvsPaths {
    pub fn new(rundir: impl AsRef<Path>, bridge: impl Into<String>) -> Self {
        Self {
            rundir: rundir.as_ref().to_path_buf(),
            bridge: bridge.into(),
        }
    }

    /// `<rundir>/<bridge>.mgmt`, the bridge's OpenFlow management socket.
    pub fn mgmt(&self) -> PathBuf {
        self.rundir.join(format!("{}.mgmt", self.bridge))
    }

    /// `<rundir>/db.sock`, ovsdb-server's socket.
    pub fn db(&self) -> PathBuf {
        self.rundir.join("db.sock")
    }
}

/// A running Node runtime.
pub struct NodeRuntime {
    pub tracer: Tracer,
    pub ports: watch::Receiver<NodePorts>,
    pub datapath: DatapathHandle,
    /// Trace observations, one per trace packet-in, in arrival order.
    pub observations: mpsc::Receiver<Observed>,
}

impl NodeRuntime {
    /// Starts the port watcher, the pipeline task and the packet-in interpreter. Everything
    /// stops when `shutdown` is cancelled.
    ///
    /// `peers` (other Nodes' Pod CIDRs and tunnel IPs) may change at any time; the pipeline
    /// is reprogrammed when it does.
    pub fn start(
        node: &str,
        paths: &OvsPaths,
        mut peers: watch::Receiver<Vec<Peer>>,
        shutdown: CancellationToken,
    ) -> Self {
        // Static peers are a desired state holding nothing else.
        let store = Store::with_static_peers(&peers.borrow_and_update());
        let desired = store.subscribe();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    c = peers.changed() => {
                        if c.is_err() {
                            break;
                        }
                        let next = Store::with_static_peers(&peers.borrow_and_update()).current();
                        store.replace((*next).clone());
                    }
                }
            }
            // Keep the store alive (and the pipeline following it) until shutdown.
            stop.cancelled().await;
            drop(store);
        });
        Self::start_with(node, paths, desired, shutdown)
    }

    /// [`NodeRuntime::start`] driven by a desired-state store ([`crate::desired::Store`]):
    /// the pipeline is reprogrammed whenever `desired` or the OVSDB ports change.
    pub fn start_with(
        node: &str,
        paths: &OvsPaths,
        desired: watch::Receiver<Arc<DesiredState>>,
        shutdown: CancellationToken,
    ) -> Self {
        let ports = ports::spawn_watcher(paths.db(), shutdown.clone());
        let (pin_tx, mut pin_rx) = mpsc::channel(8192);
        let datapath = pipeline::spawn(
            paths.mgmt(),
            ports.clone(),
            desired.clone(),
            pin_tx,
            shutdown.clone(),
        );
        pipeline::meter_drops::spawn(datapath.switch.clone(), shutdown.clone());
        let tracer = Tracer::new(node, ports.clone(), datapath.switch.clone())
            .with_desired(desired)
            .with_rundir(&paths.rundir)
            .with_tunnel_key(datapath.tunnel_key.clone());
        // After a reconnect (the pipeline is programmed before the switch is published), the
        // live traces waiting for their packet get their flows back.
        let t = tracer.clone();
        let mut switch = datapath.switch.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    changed = switch.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let sw = switch.borrow_and_update().clone();
                        if let Some(sw) = sw {
                            t.reinstall_live(&sw).await;
                        }
                    }
                }
            }
        });
        let (obs_tx, obs_rx) = mpsc::channel(8192);
        let t = tracer.clone();
        let switch = datapath.switch.clone();
        tokio::spawn(
            async move {
                while let Some(pin) = pin_rx.recv().await {
                    crate::metrics::inc(&crate::metrics::PACKET_INS);
                    let observed = t.observe(&pin);
                    let live_tag = observed.as_ref().map_or(0, |o| o.dataplane_tag);
                    if live_tag != 0 {
                        // Reported once per Node: this Node stops tagging / reporting now.
                        let t = t.clone();
                        tokio::spawn(async move { t.remove_live_flows(live_tag).await });
                    }
                    // A trace packet is never answered, but live traffic is real traffic: a
                    // Reject rule still answers it.
                    if observed.is_none() || live_tag != 0 {
                        answer_reject(&pin, &switch, |conj| t.rejects(conj));
                    }
                    let Some(o) = observed else {
                        continue;
                    };
                    crate::metrics::inc(&crate::metrics::OBSERVATIONS);
                    // Never block here: a slow consumer must not stall the datapath task
                    // (and with it reconciliation); dropping a report is logged.
                    match obs_tx.try_send(o) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(o)) => {
                            crate::metrics::inc(&crate::metrics::REPORTS_DROPPED);
                            warn!(
                                trace_id = o.trace_id,
                                tag = o.dataplane_tag,
                                "observation queue full; report dropped"
                            );
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => break,
                    }
                }
            }
            .instrument(info_span!("packet_in", node = %node)),
        );
        Self {
            tracer,
            ports,
            datapath,
            observations: obs_rx,
        }
    }
}

/// Answers a Reject rule's packet-in (RST / ICMP) without waiting; other packet-ins are
/// logged and left alone.
fn answer_reject(
    pin: &PacketIn,
    switch: &watch::Receiver<Option<Switch>>,
    is_reject: impl Fn(u32) -> bool,
) {
    let Some(out) = crate::reject::reply_for(pin, is_reject) else {
        debug!(
            table = pin.table_id,
            "packet-in is neither a trace nor a Reject"
        );
        return;
    };
    let Some(sw) = switch.borrow().clone() else {
        return;
    };
    tokio::spawn(async move {
        if let Err(error) = sw.transact(&[Message::PacketOut(out)]).await {
            warn!(%error, "sending a reject answer failed");
        }
    });
}
