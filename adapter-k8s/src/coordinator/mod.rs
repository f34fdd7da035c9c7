//! The per-cluster trace coordinator: one task owning every trace in flight.
//!
//! ```text
//!  manager link ──Start/Cancel──▶ ┌─────────────┐ ──TraceUpdate (full snapshot)──▶ manager link
//!  agent server ──Report/Failure▶ │ Coordinator │ ──AgentCommand::Inject──▶ sender Node's agent
//!  per-trace timer ──Timeout────▶ └─────────────┘
//! ```
//!
//! Lifecycle of one injected trace: resolve against the inventory ([`resolve`]), allocate a
//! data-plane id ([`ids`]), report `Running`, send `Inject` to the source Pod's Node, then fold
//! every `TraceReport` carrying that id (from any Node) into the record ([`record`]) and report
//! each snapshot, until Antrea's success rule holds (`Succeeded`), an agent fails it, or its
//! timer fires (`Failed`, "Traceflow timeout"). The id is freed at the end. No state is polled.
//!
//! A live-traffic trace instead gets a per-cluster DSCP tag ([`live_tags`]; full → Failed
//! "number of on-going live-traffic Traceflows reached the limit of 14"), `LiveTrace` goes to
//! every Node of its [`live::plan`] (the tagging Node last, once every other Node answered
//! `LiveTraceArmed`, so no Node on the path misses the tagged packet), reports are mapped by
//! `dataplane_tag`, and at the end every such Node gets `StopLiveTrace` and the tag is freed.

pub mod ids;
pub mod live;
pub mod live_tags;
pub mod record;
pub mod resolve;

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::{sync::mpsc, task::AbortHandle};
use traceflow_core::{
    Invalid, TraceSpec,
    limits::{PROTO_SCTP, PROTO_TCP, PROTO_UDP},
    reasons,
};
use traceflow_proto::v1::{self as pb, TraceflowPhase};
use traceflow_telemetry::{ContextMap, context_map, set_parent_from_map};
use tracing::{Span, debug, info, info_span, warn};

use crate::{
    agents::Agents,
    inventory::{Inventory, index},
};
use ids::TraceIds;
use live_tags::LiveTags;
use record::TraceRecord;

/// A trace to run: its identity and its validated spec. Built at the adapter's edges (a
/// manager's `StartTrace`, a Traceflow resource) with [`NewTrace::try_from`].
#[derive(Debug, Clone)]
pub struct NewTrace {
    pub uid: String,
    pub name: String,
    pub spec: TraceSpec,
}

impl TryFrom<pb::Traceflow> for NewTrace {
    type Error = Invalid;

    /// The spec converts through the one `TraceSpec` conversion; the error is the reason the
    /// trace fails with (the message the manager's API gives for the same spec).
    fn try_from(t: pb::Traceflow) -> Result<Self, Invalid> {
        let spec = TraceSpec::named(&t.name, t.spec.unwrap_or_default())?;
        Ok(NewTrace {
            uid: t.uid,
            name: t.name,
            spec,
        })
    }
}

/// Microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

#[derive(Debug)]
enum Command {
    Start(Box<NewTrace>, ContextMap),
    Reject {
        uid: String,
        reason: String,
    },
    Cancel(String),
    Report {
        node: String,
        report: pb::TraceReport,
    },
    Failure {
        node: String,
        failure: pb::TraceFailure,
    },
    LiveArmed {
        node: String,
        uid: String,
    },
    AgentAttached(String),
}

/// The cloneable way in; every method is fire-and-forget.
#[derive(Clone, Debug)]
pub struct CoordinatorHandle {
    tx: mpsc::UnboundedSender<Command>,
}

impl CoordinatorHandle {
    fn send(&self, cmd: Command) {
        if self.tx.send(cmd).is_err() {
            warn!("coordinator has stopped; dropping command");
        }
    }

    /// Starts a trace (`StartTrace`); a uid already running only re-reports its snapshot.
    pub fn start(&self, trace: NewTrace) {
        self.start_traced(trace, ContextMap::new());
    }

    /// As [`start`](Self::start), with the manager's W3C trace context (`StartTrace`): the
    /// trace's spans here become children of the manager's.
    pub fn start_traced(&self, trace: NewTrace, context: ContextMap) {
        self.send(Command::Start(Box::new(trace), context));
    }

    /// Ends a trace that could not start (its spec did not convert) as Failed with `reason`.
    pub fn reject(&self, uid: String, reason: String) {
        self.send(Command::Reject { uid, reason });
    }

    /// Ends a trace (`CancelTrace`) as Failed "Traceflow cancelled".
    pub fn cancel(&self, uid: String) {
        self.send(Command::Cancel(uid));
    }

    /// A Node's observations for a trace id.
    pub fn report(&self, node: &str, report: pb::TraceReport) {
        self.send(Command::Report {
            node: node.to_string(),
            report,
        });
    }

    /// Node `node`'s agent (re)attached: live traces it has not reported yet send it its part
    /// again (an agent that restarted lost it; one that was away never got it).
    pub fn agent_attached(&self, node: &str) {
        self.send(Command::AgentAttached(node.to_string()));
    }

    /// A Node's part of live trace `uid` is in place (`LiveTraceArmed`).
    pub fn live_armed(&self, node: &str, uid: String) {
        self.send(Command::LiveArmed {
            node: node.to_string(),
            uid,
        });
    }

    /// A Node could not run its part of a trace.
    pub fn agent_failure(&self, node: &str, failure: pb::TraceFailure) {
        self.send(Command::Failure {
            node: node.to_string(),
            failure,
        });
    }
}

struct Running {
    record: TraceRecord,
    timer: AbortHandle,
    /// Live-traffic traces: each Node's `LiveTrace` (sent again when its agent re-attaches;
    /// every such Node is told to stop at the end).
    live_commands: HashMap<String, pb::AgentCommand>,
    /// Live-traffic traces still arming: the tagging Node's command waits until every other
    /// Node said `LiveTraceArmed`, so none of them can miss the first tagged packet.
    arming: Option<Arming>,
    /// The trace's span here (`trace`): open until the trace ends; reports are its children.
    span: Span,
}

struct Arming {
    waiting: std::collections::HashSet<String>,
    /// Its command is in `live_commands`.
    tagging_node: String,
}

/// The coordinator task's state. Build with [`Coordinator::new`], drive with [`Coordinator::run`].
pub struct Coordinator {
    inventory: Inventory,
    agents: Agents,
    updates: mpsc::UnboundedSender<pb::TraceUpdate>,
    commands: mpsc::UnboundedReceiver<Command>,
    timeouts_tx: mpsc::UnboundedSender<(String, u32)>,
    timeouts: mpsc::UnboundedReceiver<(String, u32)>,
    traces: HashMap<String, Running>,
    by_id: HashMap<(bool, u32), String>,
    ids: TraceIds,
    /// Live-traffic traces by DSCP tag.
    by_tag: HashMap<u32, String>,
    live_tags: LiveTags,
}

impl Coordinator {
    /// A coordinator sending status snapshots to `updates` (the manager link drains it).
    pub fn new(
        inventory: Inventory,
        agents: Agents,
        updates: mpsc::UnboundedSender<pb::TraceUpdate>,
    ) -> (Self, CoordinatorHandle) {
        let (tx, commands) = mpsc::unbounded_channel();
        let (timeouts_tx, timeouts) = mpsc::unbounded_channel();
        let this = Self {
            inventory,
            agents,
            updates,
            commands,
            timeouts_tx,
            timeouts,
            traces: HashMap::new(),
            by_id: HashMap::new(),
            ids: TraceIds::new(),
            by_tag: HashMap::new(),
            live_tags: LiveTags::new(),
        };
        (this, CoordinatorHandle { tx })
    }

    /// Runs until every [`CoordinatorHandle`] is dropped.
    pub async fn run(mut self) {
        loop {
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.handle(cmd),
                    None => break,
                },
                Some((uid, id)) = self.timeouts.recv() => self.on_timeout(&uid, id),
            }
        }
        for (_, running) in self.traces.drain() {
            running.timer.abort();
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Start(trace, context) => {
                // A root here unless the manager sent its context.
                let span = info_span!(
                    parent: None,
                    "trace",
                    uid = %trace.uid,
                    live = trace.spec.live_traffic,
                    trace_id = tracing::field::Empty,
                    phase = tracing::field::Empty,
                    reason = tracing::field::Empty,
                );
                set_parent_from_map(&span, &context);
                let _in = span.enter();
                self.start(*trace);
            }
            Command::Reject { uid, reason } => {
                if !self.traces.contains_key(&uid) {
                    info!(uid = %uid, %reason, "trace refused");
                    self.fail_unstarted(&uid, &reason);
                }
            }
            Command::Cancel(uid) => {
                if self.traces.contains_key(&uid) {
                    info!(uid = %uid, "trace cancelled");
                    self.finish(&uid, TraceflowPhase::Failed, reasons::CANCELLED);
                }
            }
            Command::Report { node, report } => self.on_report(&node, report),
            Command::Failure { node, failure } => self.on_failure(&node, failure),
            Command::LiveArmed { node, uid } => self.on_live_armed(&node, &uid),
            Command::AgentAttached(node) => self.on_agent_attached(&node),
        }
    }

    fn emit(&self, uid: &str, status: pb::TraceflowStatus) {
        // The link keeps the receiver for the adapter's lifetime; a send error means shutdown.
        let _ = self.updates.send(pb::TraceUpdate {
            uid: uid.to_string(),
            status: Some(status),
        });
    }

    fn fail_unstarted(&self, uid: &str, reason: &str) {
        let now = now_micros();
        self.emit(
            uid,
            pb::TraceflowStatus {
                phase: TraceflowPhase::Failed as i32,
                reason: reason.to_string(),
                start_time_micros: now,
                end_time_micros: now,
                ..Default::default()
            },
        );
    }

    fn start(&mut self, trace: NewTrace) {
        let NewTrace { uid, name: _, spec } = trace;
        if let Some(running) = self.traces.get(&uid) {
            debug!(uid = %uid, "start of a running trace; re-reporting");
            self.emit(&uid, running.record.status(TraceflowPhase::Running, "", 0));
            return;
        }
        if spec.live_traffic {
            self.start_live(uid, spec);
            return;
        }
        let resolved =
            info_span!("resolve").in_scope(|| resolve::resolve(&spec, &self.inventory.read()));
        let resolved = match resolved {
            Ok(r) => r,
            Err(e) => {
                info!(uid = %uid, reason = %e, "trace failed before injection");
                Span::current().record("phase", "Failed");
                self.fail_unstarted(&uid, &e.to_string());
                return;
            }
        };
        let Some(trace_id) = self.ids.allocate(resolved.ipv6) else {
            let reason = reasons::ids_exhausted(self.ids.limit(resolved.ipv6));
            self.fail_unstarted(&uid, &reason);
            return;
        };
        Span::current().record("trace_id", trace_id);
        let timeout = spec.timeout;
        let record = TraceRecord {
            uid: uid.clone(),
            spec,
            sender_node: resolved.sender_node.clone(),
            ipv6: resolved.ipv6,
            trace_id,
            start_micros: now_micros(),
            results: Vec::new(),
            captured_packet: None,
            dataplane_tag: 0,
        };
        self.emit(&uid, record.status(TraceflowPhase::Running, "", 0));
        let timer = self.arm_timer(&uid, timeout, trace_id);
        self.by_id.insert((resolved.ipv6, trace_id), uid.clone());
        self.traces.insert(
            uid.clone(),
            Running {
                record,
                timer,
                live_commands: HashMap::new(),
                arming: None,
                span: Span::current(),
            },
        );

        let mut packet = resolved.packet;
        packet.trace_uid = uid.clone();
        packet.trace_id = trace_id;
        if packet.src_port == 0
            && [PROTO_TCP, PROTO_UDP, PROTO_SCTP]
                .iter()
                .any(|p| packet.protocol == i32::from(*p))
        {
            packet.src_port = rand::random_range(10000..=60999);
        }
        let inject = info_span!("inject", node = %resolved.sender_node);
        packet.trace_context = context_map(&inject);
        let _in = inject.enter();
        info!(uid = %uid, trace_id, node = %resolved.sender_node, dst = %packet.dst_ip, proto = packet.protocol, "injecting");
        let cmd = pb::AgentCommand {
            kind: Some(pb::agent_command::Kind::Inject(packet)),
        };
        if let Err(e) = self.agents.send(&resolved.sender_node, cmd) {
            let reason = reasons::node_error(&resolved.sender_node, e);
            self.finish(&uid, TraceflowPhase::Failed, &reason);
        }
    }

    fn arm_timer(&self, uid: &str, timeout: Duration, trace_id: u32) -> AbortHandle {
        let tx = self.timeouts_tx.clone();
        let uid = uid.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let _ = tx.send((uid, trace_id));
        })
        .abort_handle()
    }

    /// A live-traffic trace (reference §3.6): plan the per-Node commands, take a DSCP tag,
    /// send `LiveTrace` to every Node of the plan. The trace then waits for tagged packets.
    fn start_live(&mut self, uid: String, spec: TraceSpec) {
        let plan = info_span!("live_plan").in_scope(|| live::plan(&spec, &self.inventory.read()));
        let plan = match plan {
            Ok(p) => p,
            Err(e) => {
                info!(uid = %uid, reason = %e, "live trace failed before start");
                self.fail_unstarted(&uid, &e.to_string());
                return;
            }
        };
        let tag = match self.live_tags.allocate() {
            Ok(t) => t,
            Err(e) => {
                info!(uid = %uid, reason = %e, "no free live-traffic tag");
                self.fail_unstarted(&uid, &e.to_string());
                return;
            }
        };
        let timeout = spec.timeout;
        let has_source = spec.source_pod().is_some();
        let record = TraceRecord {
            uid: uid.clone(),
            spec,
            sender_node: if has_source {
                plan.tagging_node.clone()
            } else {
                String::new()
            },
            ipv6: plan.ipv6,
            trace_id: 0,
            start_micros: now_micros(),
            results: Vec::new(),
            captured_packet: None,
            dataplane_tag: tag,
        };
        self.emit(&uid, record.status(TraceflowPhase::Running, "", 0));
        let timer = self.arm_timer(&uid, timeout, 0);
        self.by_tag.insert(tag, uid.clone());
        info!(uid = %uid, tag, node = %plan.tagging_node, nodes = plan.commands.len(), "starting live trace");
        let live_commands: HashMap<String, pb::AgentCommand> = plan
            .commands
            .into_iter()
            .map(|(node, mut cmd)| {
                cmd.trace_uid = uid.clone();
                cmd.trace_context = context_map(&Span::current());
                cmd.dscp_tag = tag;
                cmd.timeout_seconds = u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX);
                let cmd = pb::AgentCommand {
                    kind: Some(pb::agent_command::Kind::LiveTrace(cmd)),
                };
                (node, cmd)
            })
            .collect();
        // Every Node but the tagging one now; the tagging one once they are armed.
        let mut waiting = std::collections::HashSet::new();
        for (node, cmd) in live_commands
            .iter()
            .filter(|(n, _)| **n != plan.tagging_node)
        {
            match self.agents.send(node, cmd.clone()) {
                Ok(()) => {
                    waiting.insert(node.clone());
                }
                // A Node without an agent cannot report; the path may not cross it.
                Err(e) => {
                    warn!(uid = %uid, node = %node, error = %e, "live trace not started on Node")
                }
            }
        }
        self.traces.insert(
            uid.clone(),
            Running {
                record,
                timer,
                live_commands,
                arming: Some(Arming {
                    waiting,
                    tagging_node: plan.tagging_node,
                }),
                span: Span::current(),
            },
        );
        self.arm_tagging_if_ready(&uid);
    }

    /// `node`'s agent (re)attached: see [`CoordinatorHandle::agent_attached`]. A Node that
    /// already reported is done (sending again could report a second connection); a tagging
    /// Node still waiting for the others gets its command when they are armed.
    fn on_agent_attached(&mut self, node: &str) {
        for (uid, running) in &mut self.traces {
            let Some(cmd) = running.live_commands.get(node) else {
                continue;
            };
            if running.record.results.iter().any(|r| r.node == node)
                || running
                    .arming
                    .as_ref()
                    .is_some_and(|a| a.tagging_node == node)
            {
                continue;
            }
            match self.agents.send(node, cmd.clone()) {
                Ok(()) => {
                    info!(uid = %uid, node = %node, "live trace sent again to a re-attached agent");
                    if let Some(a) = running.arming.as_mut() {
                        a.waiting.insert(node.to_string());
                    }
                }
                Err(e) => warn!(uid = %uid, node = %node, error = %e, "live trace not sent again"),
            }
        }
    }

    /// A Node armed its part of live trace `uid`.
    fn on_live_armed(&mut self, node: &str, uid: &str) {
        if let Some(arming) = self.traces.get_mut(uid).and_then(|r| r.arming.as_mut()) {
            arming.waiting.remove(node);
        }
        self.arm_tagging_if_ready(uid);
    }

    /// Sends the tagging Node its command once no other Node is still arming.
    fn arm_tagging_if_ready(&mut self, uid: &str) {
        let Some(running) = self.traces.get_mut(uid) else {
            return;
        };
        if running
            .arming
            .as_ref()
            .is_none_or(|a| !a.waiting.is_empty())
        {
            return;
        }
        let Some(Arming { tagging_node, .. }) = running.arming.take() else {
            return;
        };
        let Some(tagging) = running.live_commands.get(&tagging_node).cloned() else {
            return;
        };
        debug!(uid = %uid, node = %tagging_node, "other Nodes armed; arming the tagging Node");
        if let Err(e) = self.agents.send(&tagging_node, tagging) {
            let reason = reasons::node_error(&tagging_node, e);
            self.finish(uid, TraceflowPhase::Failed, &reason);
        }
    }

    fn on_report(&mut self, node: &str, report: pb::TraceReport) {
        let uid = if report.dataplane_tag != 0 {
            self.by_tag.get(&report.dataplane_tag).cloned()
        } else {
            self.by_id.get(&(report.ipv6, report.trace_id)).cloned()
        };
        let Some(uid) = uid else {
            debug!(node = %node, trace_id = report.trace_id, tag = report.dataplane_tag, ipv6 = report.ipv6, "report for no running trace");
            return;
        };
        let Some(running) = self.traces.get_mut(&uid) else {
            return;
        };
        let _in = info_span!(parent: &running.span, "report", node = %node, uid = %uid).entered();
        {
            let index = self.inventory.read();
            running.record.add_report(node, report, now_micros(), |ip| {
                let ip = ip.parse().ok()?;
                index
                    .pod_by_ip(ip)
                    .map(|p| index::key(&p.namespace, &p.name))
            });
        }
        if running.record.succeeded() {
            self.finish(&uid, TraceflowPhase::Succeeded, "");
        } else {
            let status = running.record.status(TraceflowPhase::Running, "", 0);
            self.emit(&uid, status);
        }
    }

    fn on_failure(&mut self, node: &str, failure: pb::TraceFailure) {
        let uid = if self.traces.contains_key(&failure.trace_uid) {
            Some(failure.trace_uid.clone())
        } else {
            self.by_id
                .get(&(false, failure.trace_id))
                .or_else(|| self.by_id.get(&(true, failure.trace_id)))
                .cloned()
        };
        let Some(uid) = uid else {
            debug!(node = %node, uid = %failure.trace_uid, "failure for no running trace");
            return;
        };
        let reason = reasons::node_error(node, &failure.reason);
        info!(uid = %uid, %reason, "agent failed trace");
        self.finish(&uid, TraceflowPhase::Failed, &reason);
    }

    fn on_timeout(&mut self, uid: &str, trace_id: u32) {
        if self
            .traces
            .get(uid)
            .is_some_and(|r| r.record.trace_id == trace_id)
        {
            info!(uid = %uid, "trace timed out");
            // A live trace whose Nodes never all armed never tagged anything: say which.
            let unarmed = self
                .traces
                .get(uid)
                .and_then(|r| r.arming.as_ref())
                .map(|a| {
                    let mut nodes: Vec<&str> = a.waiting.iter().map(String::as_str).collect();
                    nodes.sort_unstable();
                    nodes.join(", ")
                });
            let reason = match unarmed {
                Some(nodes) => format!(
                    "{}: the live-traffic flows were never armed on Node(s) {nodes}, \
                     so no traffic was tagged; check those Nodes' agents",
                    reasons::TIMEOUT
                ),
                None => reasons::TIMEOUT.to_string(),
            };
            self.finish(uid, TraceflowPhase::Failed, &reason);
        }
    }

    fn finish(&mut self, uid: &str, phase: TraceflowPhase, reason: &str) {
        let Some(running) = self.traces.remove(uid) else {
            return;
        };
        running.timer.abort();
        running.span.record("phase", phase.as_str_name());
        if !reason.is_empty() {
            running.span.record("reason", reason);
        }
        let rec = &running.record;
        if rec.dataplane_tag != 0 {
            self.by_tag.remove(&rec.dataplane_tag);
            self.live_tags.release(rec.dataplane_tag);
            for node in running.live_commands.keys() {
                let cmd = pb::AgentCommand {
                    kind: Some(pb::agent_command::Kind::StopLiveTrace(pb::StopLiveTrace {
                        trace_uid: uid.to_string(),
                    })),
                };
                if let Err(e) = self.agents.send(node, cmd) {
                    // Its flows still expire by hard_timeout.
                    debug!(uid = %uid, node = %node, error = %e, "stop live trace not sent");
                }
            }
        } else {
            self.by_id.remove(&(rec.ipv6, rec.trace_id));
            self.ids.release(rec.ipv6, rec.trace_id);
        }
        info!(uid = %uid, phase = phase.as_str_name(), reason, results = rec.results.len(), "trace finished");
        self.emit(uid, rec.status(phase, reason, now_micros()));
    }
}

#[cfg(test)]
mod tests;
