//! The injected lifecycle: resolve the spec against the inventory ([`super::resolve`]), take a
//! data-plane id ([`super::ids`]), report `Running`, send `Inject` to the source Pod's Node;
//! reports carrying the id are folded in by the coordinator; at the end the id is free.
//!
//! ```text
//!  start_injected ─▶ resolve ─▶ id ─▶ Running ─▶ Inject (sender Node)
//!  reports by (family, id) ─▶ (coordinator) ─▶ finish ─▶ release_injected: free the id
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

/// TCP flags SYN | ACK.
const TCP_SYN_ACK: i32 = 0x12;

use super::{Coordinator, Lifecycle, Running, ids::TraceIds, now_micros, record::TraceRecord};
use crate::agents::SendError;

/// The injected traces in flight: the id spaces (one per family) and who holds each id.
#[derive(Debug, Default)]
pub struct InjectedTraces {
    ids: TraceIds,
    by_id: HashMap<(bool, u32), String>,
    /// `reply` traces whose reply is not injected yet: the forward packet, by trace uid.
    awaiting_reply: HashMap<String, pb::InjectPacket>,
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
        if spec_reply {
            self.injected
                .awaiting_reply
                .insert(uid.clone(), packet.clone());
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
        self.injected.awaiting_reply.remove(uid);
    }

    /// A `reply` trace whose forward leg just ended Delivered: injects the reply at the Pod
    /// it was delivered to, on the Node that reported the delivery, as that Pod would answer
    /// (source and destination swapped, TCP SYN-ACK, ICMP echo reply). Once per trace. When
    /// no Pod owns the delivery address (the gateway), there is no reply and the trace ends
    /// with the forward leg.
    pub(super) fn inject_reply_if_due(&mut self, uid: &str) {
        let Some(running) = self.traces.get(uid) else {
            return;
        };
        let results = &running.record.results;
        // Only once the whole forward leg is in (the sender's LB observation names the
        // endpoint), whatever order the Nodes reported in.
        if !self.injected.awaiting_reply.contains_key(uid)
            || traceflow_core::outcome::pending_leg(results) != Some(pb::Direction::Reply)
        {
            return;
        }
        let Some(forward) = self.injected.awaiting_reply.remove(uid) else {
            return;
        };
        let forward_obs = || {
            results
                .iter()
                .filter(|r| !traceflow_core::outcome::is_reply(r))
                .flat_map(|r| r.observations.iter().map(move |o| (r, o)))
        };
        let node = forward_obs()
            .find(|(_, o)| o.action == pb::Action::Delivered as i32)
            .map(|(r, _)| r.node.clone())
            .unwrap_or_default();
        // The Service endpoint the packet went to, else its destination as sent.
        let server_ip = forward_obs()
            .map(|(_, o)| o.translated_dst_ip.clone())
            .find(|ip| !ip.is_empty())
            .unwrap_or_else(|| forward.dst_ip.clone());
        // A hairpin connection was SNATed to the gateway: the endpoint answers that address.
        let snat_ip = forward_obs()
            .map(|(_, o)| o.translated_src_ip.clone())
            .find(|ip| !ip.is_empty());
        let (server, client_ip) = {
            let index = self.inventory.read();
            let server = server_ip
                .parse()
                .ok()
                .and_then(|ip| index.pod_by_ip(ip))
                .map(|p| (p.namespace.clone(), p.name.clone()));
            let client_ip = if let Some(ip) = snat_ip {
                ip
            } else if forward.src_ip.is_empty() {
                index
                    .pod(&forward.src_pod_namespace, &forward.src_pod_name)
                    .and_then(|p| {
                        p.ips
                            .iter()
                            .find(|ip| ip.contains(':') == forward.ipv6)
                            .cloned()
                    })
                    .unwrap_or_default()
            } else {
                forward.src_ip.clone()
            };
            (server, client_ip)
        };
        let Some((ns, name)) = server else {
            info!(uid = %uid, delivered_to = %server_ip, "delivered to no Pod: no reply leg");
            self.finish(uid, TraceflowPhase::Succeeded, "");
            return;
        };
        let tcp = forward.protocol == i32::from(PROTO_TCP);
        let reply = pb::InjectPacket {
            trace_uid: uid.to_string(),
            trace_id: forward.trace_id,
            src_pod_namespace: ns,
            src_pod_name: name,
            src_ip: server_ip,
            dst_ip: client_ip,
            ipv6: forward.ipv6,
            protocol: forward.protocol,
            ttl: forward.ttl,
            ip_flags: 0,
            src_port: forward.dst_port,
            dst_port: forward.src_port,
            // SYN-ACK: what a listening peer answers a SYN with.
            tcp_flags: if tcp { TCP_SYN_ACK } else { 0 },
            icmp_id: forward.icmp_id,
            icmp_sequence: forward.icmp_sequence,
            trace_context: forward.trace_context,
            reply: true,
        };
        info!(uid = %uid, node = %node, src = %reply.src_ip, dst = %reply.dst_ip, "injecting the reply");
        let cmd = pb::AgentCommand {
            kind: Some(pb::agent_command::Kind::Inject(reply)),
        };
        if let Err(e) = self.agents.send(&node, cmd) {
            let reason = reasons::node_error(&node, e);
            self.finish(uid, TraceflowPhase::Failed, &reason);
        }
    }
}
