//! The live-traffic lifecycle (reference §3.6): plan the per-Node commands ([`plan`]), take a
//! DSCP tag ([`tags`]), arm every other Node, then the tagging Node, wait for tagged packets,
//! and at the end tell every Node to stop and free the tag.
//!
//! ```text
//!  start_live ─▶ plan ─▶ tag ─▶ LiveTrace to every Node but the tagging one ─┐
//!                               each answers LiveTraceArmed ◀────────────────┘
//!          on_live_armed ─▶ arm_tagging_if_ready ─▶ LiveTrace to the tagging Node
//!  reports by tag ─▶ (coordinator) ─▶ finish ─▶ release: StopLiveTrace to every Node, free tag
//! ```
//!
//! Arming in two phases keeps the first tagged packet from reaching a Node that would not
//! report it; an agent that (re)attaches mid-trace gets its part again unless it reported.

pub mod plan;
pub mod tags;

use std::collections::{HashMap, HashSet};

use traceflow_core::{TraceSpec, reasons};
use traceflow_proto::v1::{self as pb, TraceflowPhase};
use traceflow_telemetry::context_map;
use tracing::{Span, debug, info, info_span, warn};

use super::{
    Coordinator, Lifecycle, Running,
    admit::{LiveFilter, live_filter},
    ids::Secret,
    now_micros,
    record::TraceRecord,
};
use tags::LiveTags;

/// The live traces in flight: the tag space and who holds each tag.
#[derive(Debug, Default)]
pub struct LiveTraces {
    tags: LiveTags,
    by_tag: HashMap<u32, String>,
}

impl LiveTraces {
    /// The trace holding `tag`.
    pub fn uid_of(&self, tag: u32) -> Option<&String> {
        self.by_tag.get(&tag)
    }
}

/// One live trace's Node commands and arming progress.
#[derive(Debug)]
pub struct LiveState {
    /// Each Node's `LiveTrace` (sent again when its agent re-attaches; every such Node is told
    /// to stop at the end).
    commands: HashMap<String, pb::AgentCommand>,
    /// What a report's packet must be ([`super::admit::LiveFilter`]).
    pub(in crate::coordinator) filter: LiveFilter,
    /// While arming: the tagging Node's command waits until every other Node said
    /// `LiveTraceArmed`, so none of them can miss the first tagged packet.
    arming: Option<Arming>,
}

impl LiveState {
    /// Whether `node` has a part in this live trace.
    pub fn involves(&self, node: &str) -> bool {
        self.commands.contains_key(node)
    }

    /// The Nodes that never armed, when the trace is still arming.
    pub fn unarmed(&self) -> Option<String> {
        self.arming.as_ref().map(|a| {
            let mut nodes: Vec<&str> = a.waiting.iter().map(String::as_str).collect();
            nodes.sort_unstable();
            nodes.join(", ")
        })
    }
}

#[derive(Debug)]
struct Arming {
    waiting: HashSet<String>,
    /// Its command is in `commands`.
    tagging_node: String,
}

impl Coordinator {
    /// Starts a live-traffic trace: plan, tag, arm the other Nodes. It then waits for tagged
    /// packets.
    pub(super) fn start_live(&mut self, uid: String, spec: TraceSpec) {
        let plan = info_span!("live_plan").in_scope(|| plan::plan(&spec, &self.inventory.read()));
        let plan = match plan {
            Ok(p) => p,
            Err(e) => {
                info!(uid = %uid, reason = %e, "live trace failed before start");
                self.fail_unstarted(&uid, &e.to_string());
                return;
            }
        };
        let tag = match self.live.tags.allocate() {
            Ok(t) => t,
            Err(e) => {
                info!(uid = %uid, reason = %e, "no free live-traffic tag");
                self.fail_unstarted(&uid, &e.to_string());
                return;
            }
        };
        let timeout = spec.timeout;
        let has_source = spec.source_pod().is_some();
        // The tagging Node's match: what every Node tags and reports.
        let filter = plan
            .commands
            .iter()
            .find(|(n, _)| *n == plan.tagging_node)
            .map(|(_, cmd)| live_filter(cmd, &spec, &self.inventory.read()))
            .unwrap_or_default();
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
            secret: Secret::NONE,
        };
        self.emit(&uid, record.status(TraceflowPhase::Running, "", 0));
        let timer = self.arm_timer(&uid, timeout, 0);
        self.live.by_tag.insert(tag, uid.clone());
        info!(uid = %uid, tag, node = %plan.tagging_node, nodes = plan.commands.len(), "starting live trace");
        let commands: HashMap<String, pb::AgentCommand> = plan
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
        let mut waiting = HashSet::new();
        for (node, cmd) in commands.iter().filter(|(n, _)| **n != plan.tagging_node) {
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
                lifecycle: Lifecycle::Live(Box::new(LiveState {
                    commands,
                    filter,
                    arming: Some(Arming {
                        waiting,
                        tagging_node: plan.tagging_node,
                    }),
                })),
                span: Span::current(),
                held: Vec::new(),
            },
        );
        self.arm_tagging_if_ready(&uid);
    }

    /// `node`'s agent (re)attached: see [`super::CoordinatorHandle::agent_attached`]. A Node
    /// that already reported is done (sending again could report a second connection); a
    /// tagging Node still waiting for the others gets its command when they are armed.
    pub(super) fn on_agent_attached(&mut self, node: &str) {
        for (uid, running) in &mut self.traces {
            let Lifecycle::Live(live) = &mut running.lifecycle else {
                continue;
            };
            let Some(cmd) = live.commands.get(node) else {
                continue;
            };
            if running.record.results.iter().any(|r| r.node == node)
                || live.arming.as_ref().is_some_and(|a| a.tagging_node == node)
            {
                continue;
            }
            match self.agents.send(node, cmd.clone()) {
                Ok(()) => {
                    info!(uid = %uid, node = %node, "live trace sent again to a re-attached agent");
                    if let Some(a) = live.arming.as_mut() {
                        a.waiting.insert(node.to_string());
                    }
                }
                Err(e) => warn!(uid = %uid, node = %node, error = %e, "live trace not sent again"),
            }
        }
    }

    /// A Node armed its part of live trace `uid`.
    pub(super) fn on_live_armed(&mut self, node: &str, uid: &str) {
        if let Some(Lifecycle::Live(live)) = self.traces.get_mut(uid).map(|r| &mut r.lifecycle)
            && let Some(arming) = live.arming.as_mut()
        {
            arming.waiting.remove(node);
        }
        self.arm_tagging_if_ready(uid);
    }

    /// Sends the tagging Node its command once no other Node is still arming.
    fn arm_tagging_if_ready(&mut self, uid: &str) {
        let Some(Lifecycle::Live(live)) = self.traces.get_mut(uid).map(|r| &mut r.lifecycle) else {
            return;
        };
        if live.arming.as_ref().is_none_or(|a| !a.waiting.is_empty()) {
            return;
        }
        let Some(Arming { tagging_node, .. }) = live.arming.take() else {
            return;
        };
        let Some(tagging) = live.commands.get(&tagging_node).cloned() else {
            return;
        };
        debug!(uid = %uid, node = %tagging_node, "other Nodes armed; arming the tagging Node");
        if let Err(e) = self.agents.send(&tagging_node, tagging) {
            let reason = reasons::node_error(&tagging_node, e);
            self.finish(uid, TraceflowPhase::Failed, &reason);
        }
    }

    /// A finished live trace: every Node stops, the tag is free.
    pub(super) fn release_live(&mut self, uid: &str, tag: u32, live: &LiveState) {
        self.live.by_tag.remove(&tag);
        self.live.tags.release(tag);
        for node in live.commands.keys() {
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
    }
}
