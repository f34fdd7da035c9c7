//! Traces on this Node: build and inject trace packets ([`inject`], [`packet`]), run
//! live-traffic traces ([`live`]: per-trace flows, one report per Node) and turn trace
//! packet-ins into observations ([`observe`]).

pub mod conntrack;
pub mod inject;
pub mod live;
pub mod observe;
pub mod pace;
pub mod packet;
pub mod reply;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use traceflow_proto::v1 as pb;
use tracing::{debug, info};

use crate::desired::{DesiredState, Store};
use crate::ovs::openflow::message::TABLE_ALL;
use crate::ovs::openflow::{FlowMod, Message, OfError, PacketIn, Switch};
use crate::pipeline::{LIVE_PACKET_IN_METER, TRACE_DSCP, live as live_flows, regs};
use crate::ports::NodePorts;

pub use inject::InjectError;
pub use live::LiveTraces;
pub use observe::{NoPolicies, Observed, PolicyResolver};
pub use pace::Pacer;

/// How long starting a live trace waits for br-int to be reprogrammed with its tag.
const LIVE_PROGRAM_WAIT: Duration = Duration::from_secs(5);

/// Why a live-traffic trace could not start on this Node (sent back as the failure reason).
#[derive(Debug, thiserror::Error)]
pub enum LiveStartError {
    #[error(transparent)]
    Flows(#[from] live_flows::LiveError),
    #[error(
        "br-int was not reprogrammed to report the trace's drops within {0:?}; check the agent's OpenFlow connection"
    )]
    NotProgrammed(Duration),
    #[error("failed to install the live-traffic flows: {0}")]
    OpenFlow(String),
}

/// The br-int connection of `switch`, waiting up to [`SWITCH_WAIT`] for a (re)connect.
async fn connected(switch: &watch::Receiver<Option<Switch>>) -> Option<Switch> {
    let mut sw_rx = switch.clone();
    tokio::time::timeout(SWITCH_WAIT, sw_rx.wait_for(Option::is_some))
        .await
        .ok()
        .and_then(|r| r.ok().and_then(|s| s.clone()))
}

/// Flushes (traces) that may wait for br-int; more are left to expire, logged.
const FLUSH_QUEUE: usize = 4096;
/// Most flush messages in one transaction.
const FLUSH_BATCH: usize = 512;

/// Source ports a reply trace draws before it gives up finding one no connection uses.
const FREE_PORT_TRIES: usize = 16;

/// How long an injection waits for a (re)connected br-int before failing.
const SWITCH_WAIT: Duration = Duration::from_secs(3);

/// Injects trace packets and interprets packet-ins for one Node. Cheap to clone.
#[derive(Clone)]
pub struct Tracer {
    node: String,
    ports: watch::Receiver<NodePorts>,
    switch: watch::Receiver<Option<Switch>>,
    /// Resolves conjunction ids to policy rules (none: names stay empty).
    desired: Option<watch::Receiver<std::sync::Arc<crate::desired::DesiredState>>>,
    /// Keeps the trace packets in flight under OVS's packet-in queue ([`pace`]).
    pacer: Pacer,
    /// Live-traffic traces running here ([`live`]).
    live: LiveTraces,
    /// When each trace packet injected here left (just before its packet-out), by family and
    /// trace id: the time of the sender's observations ([`InjectedAt`]).
    injected_at: InjectedAt,
    /// The connections trace packets created here ([`conntrack`]).
    connections: conntrack::TraceConnections,
    /// OVS's run directory (its control socket), for conntrack lookups; none in unit tests.
    rundir: Option<std::path::PathBuf>,
    /// The tunnel key br-int is programmed with (live traces' tunnelled packets carry it).
    tunnel_key: Option<watch::Receiver<Option<u64>>>,
    /// Conntrack flushes on their way to br-int ([`Tracer::spawn_flusher`], started on first
    /// use).
    flushes: Arc<std::sync::OnceLock<tokio::sync::mpsc::Sender<Vec<Message>>>>,
}

/// Injection times by (IPv6, trace id), taken by the first packet-in that shows the packet
/// on this Node. Bounded: entries older than [`InjectedAt::KEEP`] go when a new one comes.
#[derive(Clone, Default)]
struct InjectedAt(Arc<std::sync::Mutex<InjectionTimes>>);

/// (IPv6, trace id) → (µs since the epoch, when it was recorded).
type InjectionTimes = HashMap<(bool, u32), (i64, std::time::Instant)>;

impl InjectedAt {
    /// Longer than any trace runs ([`traceflow_core::limits`] caps the timeout well below).
    const KEEP: Duration = Duration::from_secs(600);
    /// Above this many, old entries are pruned on insert.
    const PRUNE_ABOVE: usize = 4096;

    fn lock(&self) -> std::sync::MutexGuard<'_, InjectionTimes> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn insert(&self, key: (bool, u32), micros: i64) {
        let now = std::time::Instant::now();
        let mut map = self.lock();
        if map.len() > Self::PRUNE_ABOVE {
            map.retain(|_, (_, at)| now.duration_since(*at) < Self::KEEP);
        }
        map.insert(key, (micros, now));
    }

    fn take(&self, key: (bool, u32)) -> Option<i64> {
        self.lock().remove(&key).map(|(micros, _)| micros)
    }
}

impl Tracer {
    pub fn new(
        node: impl Into<String>,
        ports: watch::Receiver<NodePorts>,
        switch: watch::Receiver<Option<Switch>>,
    ) -> Self {
        Self {
            node: node.into(),
            ports,
            switch,
            desired: None,
            pacer: Pacer::default(),
            live: LiveTraces::default(),
            injected_at: InjectedAt::default(),
            connections: conntrack::TraceConnections::default(),
            rundir: None,
            tunnel_key: None,
            flushes: Arc::default(),
        }
    }

    /// Sends live-tagged packets into the tunnel with the key br-int is programmed with.
    pub fn with_tunnel_key(mut self, key: watch::Receiver<Option<u64>>) -> Self {
        self.tunnel_key = Some(key);
        self
    }

    /// Reads conntrack through the control socket of the ovs-vswitchd running in `rundir`
    /// (a reply trace's check that no connection uses its tuple).
    pub fn with_rundir(mut self, rundir: impl Into<std::path::PathBuf>) -> Self {
        self.rundir = Some(rundir.into());
        self
    }

    /// Whether conjunction id `conj` is a Reject rule of the desired state (what tells a
    /// Reject packet-in from a Drop rule's copy for a live trace).
    pub fn rejects(&self, conj: u32) -> bool {
        self.desired.as_ref().is_some_and(|d| {
            d.borrow()
                .rules
                .get(&conj)
                .is_some_and(|r| r.action == crate::desired::RuleAction::Reject)
        })
    }

    /// Names policies in observations from the desired state's rules (conj id → rule).
    pub fn with_desired(
        mut self,
        desired: watch::Receiver<std::sync::Arc<crate::desired::DesiredState>>,
    ) -> Self {
        self.desired = Some(desired);
        self
    }

    /// The Node name reported in every `NodeResult`.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Builds the trace packet for `req` and injects it at the source Pod's port.
    ///
    /// Returns once OVS has processed the packet-out (a barrier follows it), so an OVS
    /// error surfaces here. Errors are reported to the adapter as `TraceFailure.reason`.
    pub async fn inject(&self, req: &pb::InjectPacket) -> Result<(), InjectError> {
        let mut injection = {
            let ports = self.ports.borrow();
            inject::resolve(req, &ports, rand::random::<u16>)?
        };
        if req.own_connection {
            self.own_connection(&mut injection, req.free_src_port)
                .await?;
        }
        let msg = if req.reply {
            reply::packet_out(&injection)?
        } else {
            injection.packet_out()?
        };
        let ticket = self.pacer.admit(req.trace_id).await;
        // The sender's observations are of this moment: just before the packet-out.
        self.injected_at.insert(
            (req.ipv6, req.trace_id),
            observe::unix_micros(SystemTime::now()),
        );
        let result = self.send(msg).await;
        if result.is_err() {
            self.pacer.failed(req.trace_id, ticket);
        }
        result
    }

    /// Makes sure no connection uses the tuple of `injection` (the forward packet of a reply
    /// trace): with `free_src_port`, a source port is drawn again (up to
    /// [`FREE_PORT_TRIES`] times) until none does; else a connection on it fails the
    /// injection, naming the tuple, before anything is sent.
    async fn own_connection(
        &self,
        injection: &mut inject::Injection,
        free_src_port: bool,
    ) -> Result<(), InjectError> {
        let p = &injection.packet;
        let zone = if p.src.is_ipv6() {
            crate::pipeline::flows::CT_ZONE_V6
        } else {
            crate::pipeline::flows::CT_ZONE
        };
        for _ in 0..FREE_PORT_TRIES {
            let tuple = injection.packet.conn_tuple();
            let Some(rundir) = &self.rundir else {
                return Err(InjectError::ConntrackUnreadable {
                    tuple: tuple.to_string(),
                    detail: "this agent was started without OVS's run directory".into(),
                });
            };
            let used = conntrack::in_use(rundir, zone, &tuple).await.map_err(|e| {
                InjectError::ConntrackUnreadable {
                    tuple: tuple.to_string(),
                    detail: e.to_string(),
                }
            })?;
            if !used {
                return Ok(());
            }
            if !free_src_port || !injection.packet.redraw_src_port() {
                return Err(InjectError::ConnectionInUse(tuple.to_string()));
            }
            debug!(%tuple, "a connection uses the reply trace's tuple; another source port");
        }
        Err(InjectError::ConnectionInUse(
            injection.packet.conn_tuple().to_string(),
        ))
    }

    /// Removes what a finished trace created in br-int's conntrack: the tuples of `req` this
    /// Node saw a trace packet create ([`conntrack::TraceConnections::own`]), nothing else
    /// ([`reply::flush_messages`]). Failures are logged: the trace is over, and an entry left
    /// behind carries the trace mark and only expires later.
    pub async fn flush_conntrack(&self, req: &pb::FlushConntrack) {
        let Some(req) = self.connections.own(req) else {
            debug!(uid = %req.trace_uid, "no connection of this trace was created here; nothing flushed");
            return;
        };
        let msgs = match reply::flush_messages(&req) {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(%error, uid = %req.trace_uid, "conntrack not flushed");
                return;
            }
        };
        if msgs.is_empty() {
            return;
        }
        let queue = self.flushes.get_or_init(|| self.spawn_flusher());
        if queue.try_send(msgs).is_err() {
            tracing::warn!(uid = %req.trace_uid, "conntrack flush queue full; the entries expire by themselves");
        }
    }

    /// The task that sends queued flushes to br-int: whatever queued while the last
    /// transaction was in flight goes in the next one (one barrier for many traces under load,
    /// no wait when idle).
    fn spawn_flusher(&self) -> tokio::sync::mpsc::Sender<Vec<Message>> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Message>>(FLUSH_QUEUE);
        // Only the connection: the task ends with the last Tracer (its sender).
        let switch = self.switch.clone();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut msgs = first;
                while msgs.len() < FLUSH_BATCH {
                    match rx.try_recv() {
                        Ok(more) => msgs.extend(more),
                        Err(_) => break,
                    }
                }
                let Some(sw) = connected(&switch).await else {
                    tracing::warn!(
                        entries = msgs.len(),
                        "conntrack not flushed: the OpenFlow connection to br-int is down"
                    );
                    continue;
                };
                match sw.transact(&msgs).await {
                    Ok(()) => debug!(entries = msgs.len(), "conntrack flushed"),
                    Err(error) => tracing::warn!(%error, "conntrack flush refused by br-int"),
                }
            }
        });
        tx
    }

    async fn send(&self, msg: Message) -> Result<(), InjectError> {
        let sw = self
            .connected()
            .await
            .ok_or_else(|| InjectError::OpenFlow("OpenFlow connection to br-int is down".into()))?;
        sw.transact(std::slice::from_ref(&msg))
            .await
            .map_err(|e: OfError| {
                InjectError::OpenFlow(format!("failed to inject the packet: {e}"))
            })
    }

    /// The br-int connection, waiting up to [`SWITCH_WAIT`] for a (re)connect.
    async fn connected(&self) -> Option<Switch> {
        connected(&self.switch).await
    }

    /// Starts live trace `cmd` on this Node (module [`live`]): registers its tag, waits until
    /// br-int reports the tag's policy drops (`programmed` is the state br-int was last
    /// programmed with), then installs the trace's own tagging and Output flows. On any
    /// error nothing of the trace is left behind.
    pub async fn start_live(
        &self,
        cmd: &pb::LiveTrace,
        desired: &Store,
        programmed: &watch::Receiver<Arc<DesiredState>>,
    ) -> Result<(), LiveStartError> {
        let flows = {
            let ports = self.ports.borrow();
            let key = self.tunnel_key.as_ref().and_then(|k| *k.borrow());
            live_flows::live_flows(cmd, &ports, Some(LIVE_PACKET_IN_METER), key)?
        };
        // live_flows accepted the tag, so it is a 6-bit value.
        let tag = u8::try_from(cmd.dscp_tag).unwrap_or_default();
        let role = pb::LiveTraceRole::try_from(cmd.role).unwrap_or(pb::LiveTraceRole::Any);
        let capture = cmd.dropped_only
            || matches!(
                role,
                pb::LiveTraceRole::Sender | pb::LiveTraceRole::ReceiverOnly
            );
        let registration = live::Registration {
            uid: cmd.trace_uid.clone(),
            capture,
            sender: role == pb::LiveTraceRole::Sender,
            flows: flows.clone(),
            expires: std::time::Instant::now() + live_flows::lifetime(cmd),
            filter: live::LiveFilter::of(cmd),
        };
        if let Some(old) = self.live.insert(tag, registration) {
            info!(tag, old = %old, "live tag reused; the previous trace's flows are removed");
            self.remove_live_flows(tag).await;
        }
        let result = self.program_live(tag, flows, desired, programmed).await;
        if result.is_err() {
            self.stop_live(&cmd.trace_uid, desired).await;
        } else if self.live.tag_of(&cmd.trace_uid) != Some(tag) {
            // Stopped (or its tag handed on) while arming: undo what arming installed.
            debug!(uid = %cmd.trace_uid, tag, "live trace stopped while arming");
            self.release_tag(tag, desired).await;
        }
        result
    }

    /// Installs again the flows of the live traces not yet reported here (br-int lost them:
    /// ovs-vswitchd restarted); called once the pipeline is back on a new connection.
    pub async fn reinstall_live(&self, sw: &Switch) {
        let flows = self.live.pending_flows(std::time::Instant::now());
        if flows.is_empty() {
            return;
        }
        let n = flows.len();
        let msgs: Vec<Message> = flows.into_iter().map(Message::FlowMod).collect();
        match sw.transact(&msgs).await {
            Ok(()) => info!(
                flows = n,
                "live-traffic flows installed again after a reconnect"
            ),
            Err(error) => tracing::warn!(%error, "live-traffic flows not installed again"),
        }
    }

    /// Removes tag `tag`'s flows and drop copies unless a live trace holds it again.
    async fn release_tag(&self, tag: u8, desired: &Store) {
        if !self.live.holds(tag) {
            self.remove_live_flows(tag).await;
            desired.set_live_tag(tag, false);
        }
    }

    async fn program_live(
        &self,
        tag: u8,
        flows: Vec<FlowMod>,
        desired: &Store,
        programmed: &watch::Receiver<Arc<DesiredState>>,
    ) -> Result<(), LiveStartError> {
        desired.set_live_tag(tag, true);
        let mut programmed = programmed.clone();
        let ready = matches!(
            tokio::time::timeout(
                LIVE_PROGRAM_WAIT,
                programmed.wait_for(|s| s.live_tags.contains(&tag)),
            )
            .await,
            Ok(Ok(_))
        );
        if !ready {
            return Err(LiveStartError::NotProgrammed(LIVE_PROGRAM_WAIT));
        }
        let sw = self.connected().await.ok_or_else(|| {
            LiveStartError::OpenFlow("OpenFlow connection to br-int is down".into())
        })?;
        let msgs: Vec<Message> = flows.into_iter().map(Message::FlowMod).collect();
        sw.transact(&msgs)
            .await
            .map_err(|e| LiveStartError::OpenFlow(e.to_string()))
    }

    /// Ends live trace `uid` here: its flows and tag go. Unknown uids are ignored.
    pub async fn stop_live(&self, uid: &str, desired: &Store) {
        let Some(tag) = self.live.remove(uid) else {
            return;
        };
        self.release_tag(tag, desired).await;
        debug!(uid, tag, "live trace stopped");
    }

    /// Removes the tagging and Output flows of the live trace tagged `tag` (its policy drop
    /// copies stay until the trace ends: nothing carries the tag once tagging stopped).
    pub async fn remove_live_flows(&self, tag: u8) {
        let Some(sw) = self.switch.borrow().clone() else {
            // Reconnecting: a new connection starts from the pipeline alone, and the flows
            // would expire by hard_timeout anyway.
            return;
        };
        let delete = FlowMod::delete_by_cookie(TABLE_ALL, live_flows::cookie(tag), u64::MAX);
        if let Err(error) = sw.transact(&[Message::FlowMod(delete)]).await {
            tracing::warn!(%error, tag, "removing live-traffic flows failed; they expire by hard_timeout");
        }
    }

    /// The observations for a packet-in, or `None` if it is not a trace packet.
    pub fn observe(&self, pin: &PacketIn) -> Option<Observed> {
        let o = self.observe_only(pin);
        if let Some(o) = o.as_ref().filter(|o| o.dataplane_tag == 0) {
            self.pacer.seen(o.trace_id);
        }
        o
    }

    fn observe_only(&self, pin: &PacketIn) -> Option<Observed> {
        let desired = self.desired.as_ref().map(|d| d.borrow().clone());
        let policies: &dyn PolicyResolver = match &desired {
            Some(d) => &**d,
            None => &NoPolicies,
        };
        let ports = self.ports.borrow();
        let arrived = match u64::try_from(pin.received_micros) {
            Ok(m) if m > 0 => UNIX_EPOCH + Duration::from_micros(m),
            _ => SystemTime::now(),
        };
        let pkt = packet::parse(&pin.data).ok()?;
        if pkt.dscp == TRACE_DSCP {
            // The pipeline clears the trace DSCP of anything but this agent's packet-outs
            // and the tunnel (pipeline::flows, PipelineRootClassifier); a trace packet-in
            // without either proof is forged and never reported.
            let injected_here = pin.fields.reg(0).unwrap_or(0) & regs::INJECTED_MARK != 0;
            let from_tunnel =
                ports.tunnel_ofport.is_some() && pin.fields.in_port() == ports.tunnel_ofport;
            if !injected_here && !from_tunnel {
                crate::metrics::inc(&crate::metrics::FORGED_PACKET_INS);
                debug!(trace_id = pkt.trace_id, in_port = ?pin.fields.in_port(), "trace packet-in without a proof of origin; dropped");
                return None;
            }
            let at = injected_here
                .then(|| self.injected_at.take((pkt.src.is_ipv6(), pkt.trace_id)))
                .flatten()
                .and_then(|m| u64::try_from(m).ok())
                .map_or(arrived, |m| UNIX_EPOCH + Duration::from_micros(m));
            self.connections.record(pin, &pkt);
            return observe::observe_injected(pin, &pkt, &ports, &self.node, at, policies);
        }
        let (src, src_port) = observe::connection_source(pin, &pkt);
        let claim = self
            .live
            .claim(pkt.dscp, |f| f.admits(src, pkt.protocol, src_port))?;
        debug!(uid = %claim.uid, tag = pkt.dscp, table = pin.table_id, "live-traffic packet");
        Some(observe::observe_live(
            pin, &pkt, &claim, &ports, &self.node, arrived, policies,
        ))
    }
}
