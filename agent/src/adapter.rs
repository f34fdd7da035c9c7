//! The session with the cluster's adapter: `AgentService.Attach`, one bidirectional stream,
//! opened by the agent with its Node certificate (docs/contracts.md).
//!
//! ```text
//!  NodeRuntime.ports ──AgentHello (first) / ports (on change)──▶ adapter
//!  NodeRuntime.observations ──TraceReport (one per packet-in)───▶ adapter
//!  Tracer.inject ◀──AgentCommand::Inject── adapter; failure ──TraceFailure──▶ adapter
//!  Tracer.start_live / stop_live ◀──LiveTrace / StopLiveTrace── adapter; armed ──LiveTraceArmed──▶
//!  Tracer.flush_conntrack ◀──FlushConntrack (a `reply` trace ended)── adapter
//!  desired Store ◀──NodeState── adapter
//! ```
//!
//! Contract: the first message on every stream is `hello` with the current ports; `ports`
//! follows each change. When the adapter goes away the session reconnects with a jittered
//! backoff ([`RECONNECT_MIN`] doubling to just under [`RECONNECT_MAX`], reset after a successful
//! attach, `traceflow_daemon::Reconnect`); reports produced meanwhile wait
//! in the runtime's bounded queue and are sent after reconnecting.
//!
//! Certificate renewal: once two thirds of the Node certificate's lifetime have passed, the
//! session sends `AgentService.RenewCertificate` (a CSR for this Node, over the same mTLS
//! connection); the adapter signs it and from then on accepts only the new certificate. The
//! agent writes key (0600) and certificate atomically where it read them, opens a new stream
//! with them and only then drops the old one, so the adapter never sees the Node disconnected
//! (no in-flight trace fails). A failed renewal is retried with backoff
//! ([`traceflow_daemon::renewal`]) and logged; an expired certificate is logged with what to do.

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use traceflow_proto::v1::{self as pb, agent_command, agent_message};
use tracing::{Instrument, debug, error, info, info_span, warn};

use traceflow_daemon::Renewal;
use traceflow_telemetry::{ContextMap, context_map, set_parent_from_map};

use crate::desired::Store;
use crate::metrics;

/// First reconnect delay after the adapter stream ends (jittered up to twice this).
pub const RECONNECT_MIN: Duration = Duration::from_millis(200);
/// Every reconnect delay stays below this.
pub const RECONNECT_MAX: Duration = traceflow_core::limits::RECONNECT_MAX;
/// How often changed counters are sent to the adapter.
pub const COUNTERS_INTERVAL: Duration = Duration::from_secs(2);

/// How long a trace's span context is kept for the packet-ins it causes.
const CONTEXT_TTL: Duration = Duration::from_secs(600);

/// Span contexts of this Node's traces, so each observation's span joins its trace:
/// injected traces by trace id, live traces by DSCP tag. Empty when nothing is exported.
#[derive(Default)]
struct Contexts {
    by_id: HashMap<u32, (ContextMap, Instant)>,
    by_tag: HashMap<u32, (ContextMap, Instant)>,
}

impl Contexts {
    fn insert(map: &mut HashMap<u32, (ContextMap, Instant)>, key: u32, cx: ContextMap) {
        if cx.is_empty() {
            return;
        }
        let now = Instant::now();
        map.retain(|_, (_, at)| now.duration_since(*at) < CONTEXT_TTL);
        map.insert(key, (cx, now));
    }

    /// The span of one observation, a child of its trace's span here when known.
    fn observation(&self, node: &str, trace_id: u32, tag: u32) {
        let cx = if tag != 0 {
            self.by_tag.get(&tag)
        } else {
            self.by_id.get(&trace_id)
        };
        if let Some((cx, _)) = cx {
            let span = info_span!(parent: None, "observation", node = %node, trace_id, dataplane_tag = tag);
            set_parent_from_map(&span, cx);
            let _in = span.enter();
        }
    }
}
use crate::runtime::NodeRuntime;

/// How to reach the adapter.
#[derive(Clone)]
pub struct AdapterConfig {
    /// `https://host:port` (mTLS), or `http://...` for development without TLS.
    pub endpoint: String,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// The TLS name the adapter's certificate must carry (`localhost` in the lab).
    pub server_name: String,
    /// Where `cert_pem` and `key_pem` were read from: a renewed certificate and key replace
    /// them there. `None` keeps renewals in memory only.
    pub files: Option<CertFiles>,
}

/// The agent's certificate and key files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why connecting to the adapter failed (retried by [`run`]).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("invalid adapter address {0:?}")]
    Endpoint(String),
    #[error("cannot connect to the adapter: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("adapter refused the stream: {0}")]
    Attach(#[from] tonic::Status),
}

/// Why renewing the Node certificate failed (retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("cannot create a key and CSR: {0}")]
    Csr(traceflow_pki::PkiError),
    #[error("adapter refused the renewal: {0}")]
    Refused(tonic::Status),
    #[error("adapter returned an unusable certificate: {0}")]
    BadCertificate(String),
    #[error("writing the renewed {what} to {path}: {source}")]
    Write {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// When to renew the Node certificate: at two thirds of `cert_pem`'s lifetime; never for one
/// that does not parse (the adapter refuses it anyway, and says so).
fn renewal(cert_pem: &str) -> Renewal {
    match traceflow_pki::pem_identity(cert_pem) {
        Ok(id) => Renewal::at(id.renew_at(), id.not_after),
        Err(_) => Renewal::never(),
    }
}

/// Schedules the next attempt after a failed renewal, saying so.
fn renewal_failed(renewal: &mut Renewal, error: &RenewError) {
    let (retry_in, left) = renewal.failed();
    warn!(%error, ?retry_in, expires_in_secs = left, "renewing the Node certificate failed; retrying");
}

/// Says what to do when the Node certificate has expired.
fn warn_if_expired(renewal: &Renewal, node: &str) {
    if renewal.expired() {
        error!(
            node = %node,
            "the Node certificate has expired, so the adapter refuses it (renewal did not happen \
             in time); issue a new one (traceflow-adapter agent-cert --node NODE on the \
             adapter's data dir, or restart the agent Pod under the Helm chart) and restart \
             the agent with it"
        );
    }
}

/// Asks the adapter over `channel` to sign a new key for `node`; keeps the result in `cfg`
/// (and its files, key first) and returns the new serial.
async fn renew(
    cfg: &mut AdapterConfig,
    channel: Channel,
    node: &str,
) -> Result<String, RenewError> {
    let (csr_pem, key_pem) = traceflow_pki::generate_csr(node).map_err(RenewError::Csr)?;
    let mut client = pb::agent_service_client::AgentServiceClient::new(channel);
    let cert_pem = client
        .renew_certificate(pb::RenewAgentCertificateRequest { csr_pem })
        .await
        .map_err(RenewError::Refused)?
        .into_inner()
        .certificate_pem;
    let id = traceflow_pki::pem_identity(&cert_pem)
        .map_err(|e| RenewError::BadCertificate(e.to_string()))?;
    if id.name != node || id.kind != traceflow_pki::IdentityKind::Agent {
        return Err(RenewError::BadCertificate(format!(
            "it names {} {:?}, not Node {node:?}",
            id.kind, id.name
        )));
    }
    // The adapter accepts only the new certificate from now on: keep it in memory even when
    // the files cannot be written (reported; a restart would then need a new certificate).
    cfg.cert_pem = cert_pem;
    cfg.key_pem = key_pem;
    if let Some(files) = &cfg.files {
        let write = |what: &'static str, path: &PathBuf, pem: &str, private: bool| {
            traceflow_pki::write_file_atomic(path, pem, private).map_err(|source| {
                RenewError::Write {
                    what,
                    path: path.clone(),
                    source,
                }
            })
        };
        write("key", &files.key, &cfg.key_pem, true)?;
        write("certificate", &files.cert, &cfg.cert_pem, false)?;
    }
    Ok(id.serial)
}

async fn connect(cfg: &AdapterConfig) -> Result<Channel, SessionError> {
    let mut ep = Endpoint::from_shared(cfg.endpoint.clone())
        .map_err(|_| SessionError::Endpoint(cfg.endpoint.clone()))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(traceflow_core::limits::KEEPALIVE_INTERVAL)
        .keep_alive_timeout(traceflow_core::limits::KEEPALIVE_TIMEOUT);
    if cfg.endpoint.starts_with("https://") {
        ep = ep.tls_config(traceflow_pki::tonic_client_tls(
            &cfg.ca_pem,
            Some((&cfg.cert_pem, &cfg.key_pem)),
            &cfg.server_name,
        ))?;
    }
    Ok(ep.connect().await?)
}

fn msg(kind: agent_message::Kind) -> pb::AgentMessage {
    pb::AgentMessage { kind: Some(kind) }
}

/// Runs the adapter session until `shutdown`, reconnecting whenever the stream ends.
/// NodeState commands go to a store nobody reads; the agent uses [`run_with`].
pub async fn run(cfg: AdapterConfig, rt: NodeRuntime, shutdown: CancellationToken) {
    run_with(cfg, rt, Store::default(), shutdown).await
}

/// [`run`], applying every `AgentCommand::NodeState` to `desired` (the store the runtime's
/// pipeline follows).
pub async fn run_with(
    mut cfg: AdapterConfig,
    mut rt: NodeRuntime,
    desired: Store,
    shutdown: CancellationToken,
) {
    let node = rt.tracer.node().to_string();
    let mut backoff = traceflow_daemon::Reconnect::new(RECONNECT_MIN, RECONNECT_MAX);
    let mut renewal = renewal(&cfg.cert_pem);
    // A stream opened with a renewed certificate, and the one it replaces (still read until
    // the adapter ends it, so no command queued there is lost).
    let mut next: Option<(Attached, Option<tonic::Streaming<pb::AgentCommand>>)> = None;
    while !shutdown.is_cancelled() {
        let span = info_span!("adapter", node = %node, adapter = %cfg.endpoint);
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = async {
                let (stream, replaced) = match next.take() {
                    Some(s) => s,
                    None => {
                        warn_if_expired(&renewal, &node);
                        (open(&cfg, &mut rt).await?, None)
                    }
                };
                info!("attached to adapter");
                backoff.reset();
                session(&mut cfg, stream, replaced, &mut rt, &desired, &mut renewal, &shutdown).await
            }.instrument(span) => r,
        };
        let retry_in = backoff.next_delay();
        match result {
            Ok(End::Renewed(renewed)) => {
                let (stream, old) = *renewed;
                next = Some((stream, Some(old)));
                continue;
            }
            Ok(End::Closed) => info!(node = %node, ?retry_in, "adapter stream ended; reconnecting"),
            Err(error) => warn!(%error, node = %node, ?retry_in, "adapter session failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(retry_in) => {}
        }
    }
}

/// An accepted stream: the connection (renewals use it too), the outbound queue and the
/// adapter's commands.
struct Attached {
    channel: Channel,
    tx: mpsc::Sender<pb::AgentMessage>,
    inbound: tonic::Streaming<pb::AgentCommand>,
}

/// How a session ended without an error.
enum End {
    Closed,
    /// The certificate was renewed and a stream opened with it; the old stream's commands
    /// are still to be read.
    Renewed(Box<(Attached, tonic::Streaming<pb::AgentCommand>)>),
}

/// Connects with `cfg`'s certificate and opens a stream whose first message is hello.
async fn open(cfg: &AdapterConfig, rt: &mut NodeRuntime) -> Result<Attached, SessionError> {
    let channel = connect(cfg).await?;
    let node = rt.tracer.node().to_string();
    let (tx, rx) = mpsc::channel::<pb::AgentMessage>(4096);
    let hello = rt.ports.borrow_and_update().to_hello(&node);
    // The channel is empty and owned here, so this cannot fail.
    let _ = tx.try_send(msg(agent_message::Kind::Hello(hello)));
    let mut client = pb::agent_service_client::AgentServiceClient::new(channel.clone());
    let inbound = client.attach(ReceiverStream::new(rx)).await?.into_inner();
    Ok(Attached {
        channel,
        tx,
        inbound,
    })
}

/// One stream: ports / reports out and inject commands in, until it ends or the certificate
/// was renewed (then a stream with the new one is already open). `replaced` is the stream this
/// one replaced after a renewal: its remaining commands are still run.
#[allow(clippy::too_many_arguments)]
async fn session(
    cfg: &mut AdapterConfig,
    stream: Attached,
    mut replaced: Option<tonic::Streaming<pb::AgentCommand>>,
    rt: &mut NodeRuntime,
    desired: &Store,
    renewal: &mut Renewal,
    shutdown: &CancellationToken,
) -> Result<End, SessionError> {
    let node = rt.tracer.node().to_string();
    let Attached {
        channel,
        tx,
        mut inbound,
    } = stream;
    let mut contexts = Contexts::default();
    let mut counters_tick = tokio::time::interval(COUNTERS_INTERVAL);
    let mut counters_sent = HashMap::new();
    loop {
        tokio::select! {
            _ = counters_tick.tick() => {
                let now = metrics::snapshot();
                if now != counters_sent {
                    let c = pb::AgentCounters { counters: now.clone() };
                    if tx.send(msg(agent_message::Kind::Counters(c))).await.is_err() {
                        return Ok(End::Closed);
                    }
                    counters_sent = now;
                }
            }
            _ = shutdown.cancelled() => return Ok(End::Closed),
            _ = tokio::time::sleep_until(renewal.due()) => {
                let renewed = match renew(cfg, channel.clone(), &node).await {
                    Ok(serial) => {
                        *renewal = self::renewal(&cfg.cert_pem);
                        info!(serial = %serial, "Node certificate renewed; reconnecting with it");
                        true
                    }
                    // The adapter accepts only the new certificate now, which is in memory:
                    // reconnect with it, and renew again soon so the files get one too.
                    Err(error @ RenewError::Write { .. }) => {
                        error!(%error, "the renewed Node certificate is in use but not on disk; a restart before the next renewal needs a new certificate");
                        *renewal = self::renewal(&cfg.cert_pem);
                        renewal_failed(renewal, &error);
                        true
                    }
                    Err(error) => {
                        renewal_failed(renewal, &error);
                        false
                    }
                };
                if renewed {
                    // Make before break: the adapter sees the new stream replace this one,
                    // never the Node gone. If it cannot open now, the reconnect loop will.
                    return match open(cfg, rt).await {
                        Ok(next) => Ok(End::Renewed(Box::new((next, inbound)))),
                        Err(error) => Err(error),
                    };
                }
            }
            changed = rt.ports.changed() => {
                if changed.is_err() {
                    return Ok(End::Closed);
                }
                let ports = rt.ports.borrow_and_update().to_hello(&node);
                debug!(pods = ports.pods.len(), "sending ports");
                if tx.send(msg(agent_message::Kind::Ports(ports))).await.is_err() {
                    return Ok(End::Closed);
                }
            }
            obs = rt.observations.recv() => {
                let Some(obs) = obs else { return Ok(End::Closed) };
                debug!(trace_id = obs.trace_id, "sending report");
                contexts.observation(&node, obs.trace_id, u32::from(obs.dataplane_tag));
                if tx.send(msg(agent_message::Kind::Report(obs.into_report()))).await.is_err() {
                    return Ok(End::Closed);
                }
            }
            cmd = inbound.message() => match cmd? {
                None => return Ok(End::Closed),
                Some(cmd) => handle_command(cmd, rt, &tx, desired, &mut contexts, &node),
            },
            // Commands the adapter queued on the stream this one replaced after a renewal.
            // Node state is skipped there: the new stream's hello brought a full replacement,
            // and an older delta must not be applied on top of it.
            cmd = next_command(&mut replaced), if replaced.is_some() => match cmd {
                Some(pb::AgentCommand { kind: Some(agent_command::Kind::NodeState(_)) }) => {
                    debug!("node state on the replaced stream skipped");
                }
                Some(cmd) => handle_command(cmd, rt, &tx, desired, &mut contexts, &node),
                None => replaced = None,
            },
        }
    }
}

/// The next command on a replaced stream; `None` once it ended (or never, when there is none).
async fn next_command(
    replaced: &mut Option<tonic::Streaming<pb::AgentCommand>>,
) -> Option<pb::AgentCommand> {
    match replaced {
        Some(s) => s.message().await.ok().flatten(),
        None => std::future::pending().await,
    }
}

/// Runs one adapter command; whatever it reports goes out on `tx` (the current stream).
fn handle_command(
    cmd: pb::AgentCommand,
    rt: &NodeRuntime,
    tx: &mpsc::Sender<pb::AgentMessage>,
    desired: &Store,
    contexts: &mut Contexts,
    node: &str,
) {
    match cmd {
        pb::AgentCommand {
            kind: Some(agent_command::Kind::Inject(req)),
        } => {
            let tracer = rt.tracer.clone();
            let tx = tx.clone();
            metrics::inc(&metrics::INJECTS);
            let span = info_span!(parent: None, "inject", node = %node, trace_id = req.trace_id, trace_uid = %req.trace_uid);
            set_parent_from_map(&span, &req.trace_context);
            Contexts::insert(&mut contexts.by_id, req.trace_id, context_map(&span));
            tokio::spawn(
                async move {
                    if let Err(error) = tracer.inject(&req).await {
                        metrics::inc(&metrics::INJECT_FAILURES);
                        warn!(%error, "inject failed");
                        let failure = pb::TraceFailure {
                            trace_uid: req.trace_uid.clone(),
                            trace_id: req.trace_id,
                            reason: error.to_string(),
                        };
                        let _ = tx.send(msg(agent_message::Kind::Failure(failure))).await;
                    }
                }
                .instrument(span),
            );
        }
        pb::AgentCommand { kind: None } => debug!("empty command"),
        // Live-traffic traces (reference §3.6): started in the background (it waits
        // for br-int); a Node that cannot run its part fails the trace with the reason.
        pb::AgentCommand {
            kind: Some(agent_command::Kind::LiveTrace(req)),
        } => {
            let tracer = rt.tracer.clone();
            let desired = desired.clone();
            let programmed = rt.datapath.programmed_state.clone();
            let tx = tx.clone();
            metrics::inc(&metrics::LIVE_TRACES);
            let span = info_span!(parent: None, "live_trace", node = %node, trace_uid = %req.trace_uid, dscp_tag = req.dscp_tag);
            set_parent_from_map(&span, &req.trace_context);
            Contexts::insert(&mut contexts.by_tag, req.dscp_tag, context_map(&span));
            tokio::spawn(
                async move {
                    if let Err(error) = tracer.start_live(&req, &desired, &programmed).await {
                        warn!(%error, "live trace not started");
                        let failure = pb::TraceFailure {
                            trace_uid: req.trace_uid.clone(),
                            trace_id: 0,
                            reason: error.to_string(),
                        };
                        let _ = tx.send(msg(agent_message::Kind::Failure(failure))).await;
                        return;
                    }
                    info!(role = req.role, "live trace armed");
                    let armed = pb::LiveTraceArmed {
                        trace_uid: req.trace_uid.clone(),
                    };
                    let _ = tx.send(msg(agent_message::Kind::LiveArmed(armed))).await;
                    // A lost StopLiveTrace must not hold the tag forever: the flows
                    // expire by hard_timeout, the registration here.
                    let lifetime = crate::pipeline::live::lifetime(&req) + Duration::from_secs(2);
                    tokio::time::sleep(lifetime).await;
                    tracer.stop_live(&req.trace_uid, &desired).await;
                }
                .instrument(span),
            );
        }
        pb::AgentCommand {
            kind: Some(agent_command::Kind::StopLiveTrace(req)),
        } => {
            debug!(trace_uid = %req.trace_uid, "stop live-traffic trace");
            let tracer = rt.tracer.clone();
            let desired = desired.clone();
            tokio::spawn(async move { tracer.stop_live(&req.trace_uid, &desired).await });
        }
        // A `reply` trace ended: its connection leaves this Node's conntrack.
        pb::AgentCommand {
            kind: Some(agent_command::Kind::FlushConntrack(req)),
        } => {
            let tracer = rt.tracer.clone();
            tokio::spawn(async move { tracer.flush_conntrack(&req).await });
        }
        // Desired state (peers, Services, policies): the pipeline follows the store.
        pb::AgentCommand {
            kind: Some(agent_command::Kind::NodeState(state)),
        } => {
            let replace = state.replace;
            let changed = desired.apply(state);
            debug!(replace, changed, "node state applied");
        }
    }
}
