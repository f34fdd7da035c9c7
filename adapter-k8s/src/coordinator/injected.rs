//! The injected lifecycle: resolve the spec against the inventory ([`super::resolve`]), take a
//! data-plane id and a secret ([`super::ids`]), report `Running`, send `Inject` to the source
//! Pod's Node; reports carrying the id and the secret are folded in by the coordinator
//! ([`super::admit`]); at the end the id is free.
//!
//! ```text
//!  start_injected ─▶ resolve ─▶ id, secret ─▶ Running ─▶ Inject { secret } (sender Node)
//!  reports by (family, id) ─▶ (coordinator: secret, Node, once) ─▶ finish ─▶ free the id
//! ```
//!
//! No state on the data path and no arming: the id rides in the packet (DESIGN "Trace
//! identity"), so any number of these run at once up to the id space.

use std::collections::HashMap;

use traceflow_core::{
    TraceSpec,
    limits::{PROTO_SCTP, PROTO_TCP, PROTO_UDP},
    reasons,
};
use traceflow_proto::v1::{self as pb, TraceflowPhase};
use traceflow_telemetry::context_map;
use tracing::{Span, info, info_span};

use super::{
    Coordinator, Lifecycle, Running,
    ids::{Secret, TraceIds},
    now_micros,
    record::TraceRecord,
    reply::ReplyConn,
};
use crate::agents::SendError;

/// The injected traces in flight: the id spaces (one per family) and who holds each id.
#[derive(Debug, Default)]
pub struct InjectedTraces {
    ids: TraceIds,
    by_id: HashMap<(bool, u32), String>,
    /// `reply` traces in flight, by trace uid: the connection, for the reply and the
    /// conntrack flush at the end ([`super::reply`]).
    pub(super) replies: HashMap<String, ReplyConn>,
    /// The other injected traces in flight, by uid: the packet as sent, for the conntrack
    /// flush at the end ([`super::reply::flushes`]).
    pub(super) forwards: HashMap<String, pb::InjectPacket>,
}

impl InjectedTraces {
    /// The trace holding id `trace_id` of the family (`ipv6`).
    pub fn uid_of(&self, ipv6: bool, trace_id: u32) -> Option<&String> {
        self.by_id.get(&(ipv6, trace_id))
    }
}

impl Coordinator {
    /// Starts an injected trace; a spec that does not resolve ends Failed at once.
    pub(super) fn start_injected(&mut self, uid: String, spec: TraceSpec) {
        let resolved = info_span!("resolve")
            .in_scope(|| super::resolve::resolve(&spec, &self.inventory.read()));
        let resolved = match resolved {
            Ok(r) => r,
            Err(e) => {
                info!(uid = %uid, reason = %e, "trace failed before injection");
                Span::current().record("phase", "Failed");
                self.fail_unstarted(&uid, &e.to_string());
                return;
            }
        };
        let Some(trace_id) = self.injected.ids.allocate(resolved.ipv6) else {
            let reason = reasons::ids_exhausted(self.injected.ids.limit(resolved.ipv6));
            self.fail_unstarted(&uid, &reason);
            return;
        };
        Span::current().record("trace_id", trace_id);
        // The receiving end is reported by the destination Pod's agent: without one the trace
        // could only time out, so it fails at once, as it would had that agent just left.
        let receiver_away = super::resolve::destination_node(&spec, &self.inventory.read())
            .filter(|n| *n != resolved.sender_node && !self.agents.is_connected(n))
            .map(str::to_string);
        let timeout = spec.timeout;
        let spec_reply = spec.reply;
        // Only this trace's packets carry it (never logged: the record's Debug hides it).
        let secret = Secret::random();
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
            secret,
        };
        self.emit(&uid, record.status(TraceflowPhase::Running, "", 0));
        let timer = self.arm_timer(&uid, timeout, trace_id);
        self.injected
            .by_id
            .insert((resolved.ipv6, trace_id), uid.clone());
        self.traces.insert(
            uid.clone(),
            Running {
                record,
                timer,
                lifecycle: Lifecycle::Injected,
                span: Span::current(),
                held: Vec::new(),
            },
        );

        let mut packet = resolved.packet;
        packet.trace_uid = uid.clone();
        packet.trace_id = trace_id;
        packet.secret = secret.value();
        let port_drawn = packet.src_port == 0
            && [PROTO_TCP, PROTO_UDP, PROTO_SCTP]
                .iter()
                .any(|p| packet.protocol == i32::from(*p));
        if port_drawn {
            packet.src_port = rand::random_range(10000..=60999);
        }
        if spec_reply {
            // The reply goes into the trace's own connection: the sender makes sure no real
            // one uses the tuple, drawing another source port if the user gave none.
            packet.own_connection = true;
            packet.free_src_port = port_drawn;
            let conn = ReplyConn {
                forward: packet.clone(),
                injected: false,
                reply_from: None,
            };
            self.injected.replies.insert(uid.clone(), conn);
        } else {
            self.injected.forwards.insert(uid.clone(), packet.clone());
        }
        let inject = info_span!("inject", node = %resolved.sender_node);
        packet.trace_context = context_map(&inject);
        let _in = inject.enter();
        info!(uid = %uid, trace_id, node = %resolved.sender_node, dst = %packet.dst_ip, proto = packet.protocol, "injecting");
        let cmd = pb::AgentCommand {
            kind: Some(pb::agent_command::Kind::Inject(packet)),
        };
        let sent = match receiver_away {
            Some(node) if self.agents.is_connected(&resolved.sender_node) => {
                Err((node, SendError::NotConnected))
            }
            _ => self
                .agents
                .send(&resolved.sender_node, cmd)
                .map_err(|e| (resolved.sender_node.clone(), e)),
        };
        if let Err((node, e)) = sent {
            let reason = reasons::node_error(&node, e);
            self.finish(&uid, TraceflowPhase::Failed, &reason);
        }
    }

    /// A finished injected trace: its id is free.
    pub(super) fn release_injected(&mut self, uid: &str, ipv6: bool, trace_id: u32) {
        self.injected.by_id.remove(&(ipv6, trace_id));
        self.injected.ids.release(ipv6, trace_id);
        self.injected.replies.remove(uid);
        self.injected.forwards.remove(uid);
    }
}
