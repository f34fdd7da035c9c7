//! The per-cluster trace coordinator: one task owning every trace in flight.
//!
//! ```text
//!  manager link ──Start/Cancel──▶ ┌─────────────┐ ──TraceUpdate (full snapshot)──▶ manager link
//!  agent server ──Report/Failure▶ │ Coordinator │ ──AgentCommand::Inject──▶ sender Node's agent
//!  per-trace timer ──Timeout────▶ └─────────────┘
//! ```
//!
//! A trace arrives as a [`NewTrace`] (its spec validated at the adapter's edge) and runs one of
//! two lifecycles, each in its own module:
//!
//! * [`injected`]: resolve ([`resolve`]), take a data-plane id ([`ids`]), `Inject` at the
//!   source Pod's Node; reports are matched by id; the id is freed at the end.
//! * [`live`]: plan ([`live::plan`]), take a DSCP tag ([`live::tags`]), arm every Node (the
//!   tagging Node last); reports are matched by tag; every Node stops and the tag is freed.
//!
//! A `reply` trace (injected) goes on with [`reply`]: the answer injected at the Pod the packet
//! was delivered to, and the connection flushed from every Node's conntrack at the end.
//!
//! Common to both, here: a report is taken only once [`admit`] proves it (bounds, the trace's
//! secret or filter, a Node of the trace, one result per Node and leg); a refused one is
//! counted per Node and reason ([`Agents::count_refused`], sent with the agent's counters) and
//! never stored or relayed. Every report taken is folded into the trace's [`record`] and each
//! snapshot reported, until Antrea's success rule holds (`Succeeded`), an agent fails it, it
//! is cancelled, or its timer fires (`Failed`, "Traceflow timeout: " naming the Nodes it
//! waited for and what the others last reported). No state is polled.

pub mod admit;
pub mod ids;
pub mod injected;
pub mod live;
pub mod record;
pub mod reply;
pub mod resolve;

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::{sync::mpsc, task::AbortHandle};
use traceflow_core::{Invalid, TraceSpec, reasons};
use traceflow_proto::v1::{self as pb, TraceflowPhase};
use traceflow_telemetry::{ContextMap, set_parent_from_map};
use tracing::{Span, debug, info, info_span, warn};

use crate::{
    agents::Agents,
    inventory::{Inventory, index},
};
use injected::InjectedTraces;
use live::{LiveState, LiveTraces};
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
        report: Box<pb::TraceReport>,
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
    AgentDetached(String),
    Running(tokio::sync::oneshot::Sender<Vec<String>>),
}

/// Commands that may wait for the coordinator; a sender beyond waits (back-pressure on the
/// agent stream, manager stream or watch that sends).
pub const COMMAND_QUEUE: usize = 4096;
/// Updates that may wait for the router; the coordinator waits beyond.
pub const UPDATE_QUEUE: usize = 1024;
/// Traces one adapter runs at once; a start beyond ends Failed at once ([`reasons::ADAPTER_BUSY`]).
pub const MAX_TRACES_IN_FLIGHT: usize = 10_000;

/// The cloneable way in. Every method waits only while the coordinator's queue is full.
#[derive(Clone, Debug)]
pub struct CoordinatorHandle {
    tx: mpsc::Sender<Command>,
}

impl CoordinatorHandle {
    async fn send(&self, cmd: Command) {
        if self.tx.send(cmd).await.is_err() {
            warn!("coordinator has stopped; dropping command");
        }
    }

    /// Starts a trace (`StartTrace`); a uid already running only re-reports its snapshot.
    pub async fn start(&self, trace: NewTrace) {
        self.start_traced(trace, ContextMap::new()).await;
    }

    /// As [`start`](Self::start), with the manager's W3C trace context (`StartTrace`): the
    /// trace's spans here become children of the manager's.
    pub async fn start_traced(&self, trace: NewTrace, context: ContextMap) {
        self.send(Command::Start(Box::new(trace), context)).await;
    }

    /// Ends a trace that could not start (its spec did not convert) as Failed with `reason`.
    pub async fn reject(&self, uid: String, reason: String) {
        self.send(Command::Reject { uid, reason }).await;
    }

    /// Ends a trace (`CancelTrace`) as Failed "Traceflow cancelled".
    pub async fn cancel(&self, uid: String) {
        self.send(Command::Cancel(uid)).await;
    }

    /// A Node's observations for a trace id.
    pub async fn report(&self, node: &str, report: pb::TraceReport) {
        self.send(Command::Report {
            node: node.to_string(),
            report: Box::new(report),
        })
        .await;
    }

    /// Node `node`'s agent (re)attached: live traces it has not reported yet send it its part
    /// again (an agent that restarted lost it; one that was away never got it).
    pub async fn agent_attached(&self, node: &str) {
        self.send(Command::AgentAttached(node.to_string())).await;
    }

    /// Node `node` has no agent stream any more: every trace in flight that needs it fails at
    /// once with `Node: <node>, error: agent disconnected` (issue 10: within 1 s, not at its
    /// timeout). An injected trace needs its sender Node, and until that Node reported, the
    /// Node of its destination Pod (or Pod IP) or the Node its sender tunnelled the packet
    /// to; a live trace needs every Node with a part it has not reported yet. A stream that a
    /// newer one of the same Node replaced is no detach; such an agent gets its live parts
    /// again ([`Self::agent_attached`]).
    pub async fn agent_detached(&self, node: &str) {
        self.send(Command::AgentDetached(node.to_string())).await;
    }

    /// The uids of the traces running now (empty when the coordinator has stopped).
    pub async fn running(&self) -> Vec<String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Command::Running(tx)).await;
        rx.await.unwrap_or_default()
    }

    /// A Node's part of live trace `uid` is in place (`LiveTraceArmed`).
    pub async fn live_armed(&self, node: &str, uid: String) {
        self.send(Command::LiveArmed {
            node: node.to_string(),
            uid,
        })
        .await;
    }

    /// A Node could not run its part of a trace.
    pub async fn agent_failure(&self, node: &str, failure: pb::TraceFailure) {
        self.send(Command::Failure {
            node: node.to_string(),
            failure,
        })
        .await;
    }
}

/// How a running trace meets the data plane.
enum Lifecycle {
    /// An injected packet carrying the record's data-plane id ([`injected`]).
    Injected,
    /// Live traffic tagged with the record's DSCP tag ([`live`]).
    Live(Box<LiveState>),
}

struct Running {
    record: TraceRecord,
    timer: AbortHandle,
    lifecycle: Lifecycle,
    /// The trace's span here (`trace`): open until the trace ends; reports are its children.
    span: Span,
    /// Reports with the trace's secret from Nodes no result names yet (at most
    /// [`admit::MAX_HELD`]), judged again after each report taken ([`admit`] module doc).
    held: Vec<(String, pb::TraceReport)>,
}

/// Why a report is not taken now.
enum NotTaken {
    /// Refused for good, and counted.
    Refused(admit::Refusal),
    /// Proven to be of the trace's packet, from a Node no result names yet.
    Held,
}

/// The coordinator task's state. Build with [`Coordinator::new`], drive with [`Coordinator::run`].
pub struct Coordinator {
    inventory: Inventory,
    agents: Agents,
    updates: mpsc::Sender<pb::TraceUpdate>,
    /// What handling the current command emitted; sent (waiting for room) before the next.
    outgoing: std::cell::RefCell<Vec<pb::TraceUpdate>>,
    commands: mpsc::Receiver<Command>,
    timeouts_tx: mpsc::Sender<(String, u32)>,
    timeouts: mpsc::Receiver<(String, u32)>,
    traces: HashMap<String, Running>,
    /// At most this many in `traces` ([`MAX_TRACES_IN_FLIGHT`] unless a test says less).
    max_in_flight: usize,
    injected: InjectedTraces,
    live: LiveTraces,
}

impl Coordinator {
    /// A coordinator sending status snapshots to `updates` (the manager link drains it).
    pub fn new(
        inventory: Inventory,
        agents: Agents,
        updates: mpsc::Sender<pb::TraceUpdate>,
    ) -> (Self, CoordinatorHandle) {
        let (tx, commands) = mpsc::channel(COMMAND_QUEUE);
        // One timer per running trace at most.
        let (timeouts_tx, timeouts) = mpsc::channel(MAX_TRACES_IN_FLIGHT);
        let this = Self {
            inventory,
            agents,
            updates,
            outgoing: Default::default(),
            commands,
            timeouts_tx,
            timeouts,
            traces: HashMap::new(),
            max_in_flight: MAX_TRACES_IN_FLIGHT,
            injected: InjectedTraces::default(),
            live: LiveTraces::default(),
        };
        (this, CoordinatorHandle { tx })
    }

    /// At most `n` traces at once (fewer than [`MAX_TRACES_IN_FLIGHT`], for tests).
    pub fn with_max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.min(MAX_TRACES_IN_FLIGHT);
        self
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
            // Back-pressure: no next command until the router took what this one emitted.
            for update in self.outgoing.take() {
                if self.updates.send(update).await.is_err() {
                    break;
                }
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
            Command::Report { node, report } => self.on_report(&node, *report),
            Command::Failure { node, failure } => self.on_failure(&node, failure),
            Command::LiveArmed { node, uid } => self.on_live_armed(&node, &uid),
            Command::AgentAttached(node) => self.on_agent_attached(&node),
            Command::AgentDetached(node) => self.on_agent_detached(&node),
            Command::Running(reply) => {
                let _ = reply.send(self.traces.keys().cloned().collect());
            }
        }
    }

    fn emit(&self, uid: &str, status: pb::TraceflowStatus) {
        self.outgoing.borrow_mut().push(pb::TraceUpdate {
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
        if self.traces.len() >= self.max_in_flight {
            warn!(uid = %uid, running = self.traces.len(), "trace refused: too many in flight");
            self.fail_unstarted(&uid, reasons::ADAPTER_BUSY);
            return;
        }
        if spec.live_traffic {
            self.start_live(uid, spec);
        } else {
            self.start_injected(uid, spec);
        }
    }

    fn arm_timer(&self, uid: &str, timeout: Duration, trace_id: u32) -> AbortHandle {
        let tx = self.timeouts_tx.clone();
        let uid = uid.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let _ = tx.send((uid, trace_id)).await;
        })
        .abort_handle()
    }

    fn on_report(&mut self, node: &str, report: pb::TraceReport) {
        let uid = if report.dataplane_tag != 0 {
            self.live.uid_of(report.dataplane_tag).cloned()
        } else {
            self.injected.uid_of(report.ipv6, report.trace_id).cloned()
        };
        // Before anything else: an oversized report is never looked into.
        if let Err(refusal) = admit::check_bounds(&report) {
            self.refuse(node, uid.as_deref().unwrap_or(""), refusal);
            return;
        }
        let Some(uid) = uid else {
            debug!(node = %node, trace_id = report.trace_id, tag = report.dataplane_tag, ipv6 = report.ipv6, "report for no running trace");
            return;
        };
        let Some(running) = self.traces.get(&uid) else {
            return;
        };
        let _in = info_span!(parent: &running.span, "report", node = %node, uid = %uid).entered();
        match self.judge(&uid, node, &report) {
            Ok(()) => {}
            Err(NotTaken::Refused(refusal)) => {
                self.refuse(node, &uid, refusal);
                return;
            }
            Err(NotTaken::Held) => {
                let Some(running) = self.traces.get_mut(&uid) else {
                    return;
                };
                if running.held.len() >= admit::MAX_HELD {
                    self.refuse(node, &uid, admit::Refusal::ForeignNode);
                } else {
                    debug!(node = %node, uid = %uid, "report held until a result names its Node");
                    running.held.push((node.to_string(), report));
                }
                return;
            }
        }
        self.take_report(&uid, node, report);
        self.take_held(&uid);
        let Some(running) = self.traces.get(&uid) else {
            return;
        };
        if running.record.succeeded() {
            self.finish(&uid, TraceflowPhase::Succeeded, "");
        } else {
            let status = running.record.status(TraceflowPhase::Running, "", 0);
            self.emit(&uid, status);
            self.inject_reply_if_due(&uid);
        }
    }

    /// Whether trace `uid` takes `node`'s `report` now ([`admit`]).
    fn judge(&self, uid: &str, node: &str, report: &pb::TraceReport) -> Result<(), NotTaken> {
        use admit::Refusal;
        let Some(running) = self.traces.get(uid) else {
            return Err(NotTaken::Refused(Refusal::ForeignNode));
        };
        let record = &running.record;
        let leg = admit::leg_of(report);
        match &running.lifecycle {
            Lifecycle::Injected => {
                if !record.secret.matches(report.secret) {
                    return Err(NotTaken::Refused(Refusal::BadSecret));
                }
                let reply_from = self
                    .injected
                    .replies
                    .get(uid)
                    .and_then(|c| c.reply_from.as_deref());
                let parts = admit::leg_parts(record, leg, reply_from, &self.inventory.read());
                if !parts.iter().any(|(n, _)| n == node) {
                    // Before the reply is injected, no Node may report its leg.
                    let too_early = leg == pb::Direction::Reply && reply_from.is_none();
                    return Err(if too_early {
                        NotTaken::Refused(Refusal::ForeignNode)
                    } else {
                        NotTaken::Held
                    });
                }
            }
            Lifecycle::Live(live) => {
                if !live.involves(node) || leg == pb::Direction::Reply {
                    return Err(NotTaken::Refused(Refusal::ForeignNode));
                }
                admit::check_live_packet(&live.filter, record.captured_packet.as_ref(), report)
                    .map_err(NotTaken::Refused)?;
            }
        }
        if admit::has_result(&record.results, node, leg) {
            return Err(NotTaken::Refused(Refusal::Duplicate));
        }
        Ok(())
    }

    /// Folds a report [`Self::judge`] accepted into the trace's record.
    fn take_report(&mut self, uid: &str, node: &str, report: pb::TraceReport) {
        self.note_sent_port(uid, node, &report);
        let Some(running) = self.traces.get_mut(uid) else {
            return;
        };
        let index = self.inventory.read();
        running.record.add_report(node, report, now_micros(), |ip| {
            let ip = ip.parse().ok()?;
            index
                .pod_by_ip(ip)
                .map(|p| index::key(&p.namespace, &p.name))
        });
    }

    /// Judges the held reports of `uid` again (a result just taken may name their Nodes),
    /// until none is taken.
    fn take_held(&mut self, uid: &str) {
        loop {
            let held = match self.traces.get_mut(uid) {
                Some(r) if !r.held.is_empty() => std::mem::take(&mut r.held),
                _ => return,
            };
            let mut taken = false;
            for (node, report) in held {
                match self.judge(uid, &node, &report) {
                    Ok(()) => {
                        debug!(node = %node, uid = %uid, "held report taken");
                        self.take_report(uid, &node, report);
                        taken = true;
                    }
                    Err(NotTaken::Refused(refusal)) => self.refuse(&node, uid, refusal),
                    Err(NotTaken::Held) => {
                        if let Some(r) = self.traces.get_mut(uid) {
                            r.held.push((node, report));
                        }
                    }
                }
            }
            if !taken {
                return;
            }
        }
    }

    /// A report not taken: logged (never its secret) and counted for its Node.
    fn refuse(&self, node: &str, uid: &str, refusal: admit::Refusal) {
        warn!(node = %node, uid = %uid, reason = %refusal, "trace report refused");
        self.agents.count_refused(node, refusal.counter());
    }

    fn on_failure(&mut self, node: &str, failure: pb::TraceFailure) {
        let uid = if self.traces.contains_key(&failure.trace_uid) {
            Some(failure.trace_uid.clone())
        } else {
            self.injected
                .uid_of(false, failure.trace_id)
                .or_else(|| self.injected.uid_of(true, failure.trace_id))
                .cloned()
        };
        let Some(uid) = uid else {
            debug!(node = %node, uid = %failure.trace_uid, "failure for no running trace");
            return;
        };
        // Only a Node with a part in the trace may fail it: the injecting Node, or one that
        // runs part of a live trace.
        let involved = self.traces.get(&uid).is_some_and(|r| match &r.lifecycle {
            Lifecycle::Injected => r.record.sender_node == node,
            Lifecycle::Live(live) => live.involves(node),
        });
        if !involved {
            warn!(node = %node, uid = %uid, "failure from a Node with no part in the trace; ignored");
            return;
        }
        let reason = reasons::node_error(node, &failure.reason);
        info!(uid = %uid, %reason, "agent failed trace");
        self.finish(&uid, TraceflowPhase::Failed, &reason);
    }

    fn on_agent_detached(&mut self, node: &str) {
        let doomed: Vec<String> = {
            let index = self.inventory.read();
            // The Node's underlay addresses: a sender's Output observation tunnelling there
            // names it as the receiver (a Service or IP destination resolved on the way).
            let node_ips: Vec<&str> = index
                .node(node)
                .map(|n| {
                    n.internal_ips
                        .iter()
                        .map(|ip| ip.split('/').next().unwrap_or(ip))
                        .collect()
                })
                .unwrap_or_default();
            self.traces
                .iter()
                .filter(|(_, r)| {
                    let reported = r.record.results.iter().any(|res| res.node == node);
                    match &r.lifecycle {
                        // Sender, destination Pod's Node, or the Node the packet was
                        // tunnelled to.
                        Lifecycle::Injected => {
                            let dst_node = resolve::destination_node(&r.record.spec, &index);
                            let tunnelled_to = r.record.results.iter().any(|res| {
                                res.observations.iter().any(|o| {
                                    !o.tunnel_dst_ip.is_empty()
                                        && node_ips.contains(&o.tunnel_dst_ip.as_str())
                                })
                            });
                            r.record.sender_node == node
                                || (!reported && (dst_node == Some(node) || tunnelled_to))
                        }
                        // A Node with a part it has not reported yet: an agent that comes
                        // back has lost it, so the trace could only time out.
                        Lifecycle::Live(live) => live.involves(node) && !reported,
                    }
                })
                .map(|(uid, _)| uid.clone())
                .collect()
        };
        let reason = reasons::node_error(node, reasons::AGENT_DISCONNECTED);
        for uid in doomed {
            info!(uid = %uid, %reason, "agent of a Node the trace needs disconnected");
            self.finish(&uid, TraceflowPhase::Failed, &reason);
        }
    }

    fn on_timeout(&mut self, uid: &str, trace_id: u32) {
        if self
            .traces
            .get(uid)
            .is_some_and(|r| r.record.trace_id == trace_id)
        {
            info!(uid = %uid, "trace timed out");
            let reason = self.timeout_reason(uid);
            self.finish(uid, TraceflowPhase::Failed, &reason);
        }
    }

    /// Why trace `uid` timed out: the Nodes of its pending leg that did not report and what the
    /// others last reported ([`reasons::timeout_waiting`]). A live trace whose Nodes never all
    /// armed never tagged anything, and one without any report saw no matching traffic:
    /// those say so instead.
    fn timeout_reason(&self, uid: &str) -> String {
        let Some(r) = self.traces.get(uid) else {
            return reasons::TIMEOUT.to_string();
        };
        let record = &r.record;
        let (head, leg, reply_from) = match &r.lifecycle {
            Lifecycle::Live(live) => {
                if let Some(nodes) = live.unarmed() {
                    return format!(
                        "{}: the live-traffic flows were never armed on Node(s) {nodes}, \
                         so no traffic was tagged; check those Nodes' agents",
                        reasons::TIMEOUT
                    );
                }
                if record.results.is_empty() {
                    return reasons::TIMEOUT.to_string();
                }
                (reasons::TIMEOUT.to_string(), pb::Direction::Forward, None)
            }
            Lifecycle::Injected if record.spec.reply => {
                let leg = traceflow_core::outcome::pending_leg(&record.results)
                    .unwrap_or(pb::Direction::Forward);
                let reply_from = self
                    .injected
                    .replies
                    .get(uid)
                    .and_then(|c| c.reply_from.as_deref());
                let head = reasons::timeout_in_leg(leg == pb::Direction::Reply);
                (head, leg, reply_from)
            }
            Lifecycle::Injected => (reasons::TIMEOUT.to_string(), pb::Direction::Forward, None),
        };
        let parts = admit::leg_parts(record, leg, reply_from, &self.inventory.read());
        let waited: Vec<(&str, &str)> = parts
            .iter()
            .filter(|(n, _)| !admit::has_result(&record.results, n, leg))
            .map(|(n, part)| (n.as_str(), part.whose()))
            .collect();
        let last = admit::last_reported(&record.results, leg);
        let last: Vec<(&str, &str)> = last
            .iter()
            .map(|(n, what)| (n.as_str(), what.as_str()))
            .collect();
        reasons::timeout_waiting(&head, &waited, &last)
    }

    fn finish(&mut self, uid: &str, phase: TraceflowPhase, reason: &str) {
        let Some(running) = self.traces.remove(uid) else {
            return;
        };
        running.timer.abort();
        // Held reports were never proven: refused now.
        for (node, _) in &running.held {
            self.refuse(node, uid, admit::Refusal::ForeignNode);
        }
        running.span.record("phase", phase.as_str_name());
        if !reason.is_empty() {
            running.span.record("reason", reason);
        }
        let rec = &running.record;
        match &running.lifecycle {
            Lifecycle::Live(live) => self.release_live(uid, rec.dataplane_tag, live),
            Lifecycle::Injected => {
                self.flush_connection(uid, rec);
                self.release_injected(uid, rec.ipv6, rec.trace_id);
            }
        }
        info!(uid = %uid, phase = phase.as_str_name(), reason, results = rec.results.len(), "trace finished");
        self.emit(uid, rec.status(phase, reason, now_micros()));
    }
}

#[cfg(test)]
mod tests;
