//! The reply leg of a `reply` trace (issue 14), the adapter's part: once the forward leg is
//! Delivered to a Pod, inject the answer that Pod would send; once any injected trace ends
//! (any phase), remove the connection its packets created from every Node's conntrack.
//!
//! ```text
//!  forward leg Delivered ─▶ inject_reply_if_due ─▶ Inject { reply } to the delivering Node:
//!      from the endpoint's own port (a Service's targetPort) to the client (or, hairpin,
//!      the SNAT address), TCP SYN-ACK, ICMP echo reply, SCTP INIT-ACK (agent)
//!  finish ─▶ flush_connection ─▶ FlushConntrack per Node ([`flushes`]):
//!      sender Node  the tuple as sent (Pods zone); hairpin: the DNATed tuple (SNAT zone)
//!      other Nodes  the DNATed tuple (Pods zone): what arrived there through the tunnel
//! ```
//!
//! Every entry is named by its original-direction tuple, which is the forward packet's (the
//! reply only ever matched entries, it created none).

use std::net::IpAddr;

use traceflow_core::limits::{PROTO_SCTP, PROTO_TCP, PROTO_UDP};
use traceflow_core::reasons;
use traceflow_proto::v1::{self as pb, TraceflowPhase};
use tracing::{debug, info};

use super::Coordinator;
use super::record::TraceRecord;
use crate::inventory::Index;

/// TCP flags SYN | ACK.
const TCP_SYN_ACK: i32 = 0x12;

/// A `reply` trace's connection: the forward packet as injected (its source port drawn, if
/// the spec left it to us; its secret, which the reply carries too), and whether the reply
/// went out yet, and from which Node.
#[derive(Debug, Clone)]
pub struct ReplyConn {
    pub forward: pb::InjectPacket,
    pub injected: bool,
    /// The Node the reply was injected at: it reports the reply leg first.
    pub reply_from: Option<String>,
}

/// What the forward leg's observations say about its connection.
#[derive(Debug, Default, PartialEq)]
struct ForwardLeg {
    /// The Node that reported `Delivered`.
    delivered_on: Option<String>,
    /// The Service endpoint the packet was DNATed to (`LB translatedDstIP`).
    endpoint: Option<String>,
    /// The address a hairpin connection was SNATed to (`LB translatedSrcIP`).
    snat: Option<String>,
}

fn forward_leg(results: &[pb::NodeResult]) -> ForwardLeg {
    let obs = || {
        results
            .iter()
            .filter(|r| !traceflow_core::outcome::is_reply(r))
            .flat_map(|r| r.observations.iter().map(move |o| (r, o)))
    };
    let non_empty = |s: &String| (!s.is_empty()).then(|| s.clone());
    ForwardLeg {
        delivered_on: obs()
            .find(|(_, o)| o.action == pb::Action::Delivered as i32)
            .map(|(r, _)| r.node.clone()),
        endpoint: obs().find_map(|(_, o)| non_empty(&o.translated_dst_ip)),
        snat: obs().find_map(|(_, o)| non_empty(&o.translated_src_ip)),
    }
}

/// The port Service endpoint `endpoint` serves the forward packet's destination (a ClusterIP
/// and Service port) on: the Pod's `targetPort` for that Service port, the port the DNATed
/// connection reached and the endpoint answers from. The packet's own destination port when
/// no Service port matches (a destination that is no Service).
pub fn endpoint_port(index: &Index, forward: &pb::InjectPacket, endpoint: &str) -> i32 {
    let protocol = match u8::try_from(forward.protocol) {
        Ok(PROTO_TCP) => "TCP",
        Ok(PROTO_UDP) => "UDP",
        Ok(PROTO_SCTP) => "SCTP",
        _ => return forward.dst_port,
    };
    let (Ok(dst), Ok(endpoint)) = (forward.dst_ip.parse::<IpAddr>(), endpoint.parse::<IpAddr>())
    else {
        return forward.dst_port;
    };
    let Some(pod) = index.pod_record_by_ip(endpoint) else {
        return forward.dst_port;
    };
    index
        .services()
        .filter(|s| {
            s.inventory
                .cluster_ips
                .iter()
                .any(|ip| ip.parse::<IpAddr>().ok() == Some(dst))
        })
        .flat_map(|s| s.inventory.ports.iter())
        .find(|sp| sp.port == forward.dst_port && sp.protocol.eq_ignore_ascii_case(protocol))
        .and_then(|sp| pod.target_port(sp))
        .unwrap_or(forward.dst_port)
}

/// The conntrack flushes of a finished injected trace, per Node (module doc): `endpoint_port`
/// is the endpoint's port when the forward packet was DNATed.
pub fn flushes(
    forward: &pb::InjectPacket,
    results: &[pb::NodeResult],
    sender_node: &str,
    endpoint_port: impl Fn(&str) -> i32,
) -> Vec<(String, pb::FlushConntrack)> {
    let leg = forward_leg(results);
    let tuple = |zone: pb::ConntrackZone, dst_ip: &str, dst_port: i32| pb::ConntrackTuple {
        zone: zone as i32,
        src_ip: forward.src_ip.clone(),
        dst_ip: dst_ip.to_string(),
        src_port: forward.src_port,
        dst_port,
        icmp_id: forward.icmp_id,
    };
    let as_sent = tuple(pb::ConntrackZone::Pods, &forward.dst_ip, forward.dst_port);
    let dnated = |zone| match &leg.endpoint {
        Some(ep) => tuple(zone, ep, endpoint_port(ep)),
        None => tuple(zone, &forward.dst_ip, forward.dst_port),
    };
    // Only Nodes that reported: an agent flushes just the connections it saw a trace packet
    // create, which it learns from the packet-ins it reports.
    let mut nodes: Vec<&str> = Vec::new();
    for r in results {
        if !nodes.contains(&r.node.as_str()) {
            nodes.push(&r.node);
        }
    }
    nodes
        .into_iter()
        .map(|node| {
            let tuples = if node == sender_node {
                let mut t = vec![as_sent.clone()];
                if leg.snat.is_some() {
                    t.push(dnated(pb::ConntrackZone::ServiceSnat));
                }
                t
            } else {
                vec![dnated(pb::ConntrackZone::Pods)]
            };
            let cmd = pb::FlushConntrack {
                trace_uid: forward.trace_uid.clone(),
                ipv6: forward.ipv6,
                protocol: forward.protocol,
                tuples,
            };
            (node.to_string(), cmd)
        })
        .collect()
}

impl Coordinator {
    /// A `reply` trace whose forward leg just ended Delivered: injects the reply at the Pod
    /// it was delivered to, on the Node that reported the delivery, as that Pod would answer
    /// (source and destination swapped, from the endpoint's own port, TCP SYN-ACK). Once per
    /// trace. When no Pod owns the delivery address (the gateway), there is no reply and the
    /// trace ends with the forward leg.
    pub(super) fn inject_reply_if_due(&mut self, uid: &str) {
        let Some(running) = self.traces.get(uid) else {
            return;
        };
        let results = &running.record.results;
        // Only once the whole forward leg is in (the sender's LB observation names the
        // endpoint), whatever order the Nodes reported in.
        // Not a reply trace, or its reply went out already: nothing to do.
        let done = self.injected.replies.get(uid).is_none_or(|c| c.injected);
        if done || traceflow_core::outcome::pending_leg(results) != Some(pb::Direction::Reply) {
            return;
        }
        let Some(conn) = self.injected.replies.get_mut(uid) else {
            return;
        };
        conn.injected = true;
        let forward = conn.forward.clone();
        let leg = forward_leg(results);
        let node = leg.delivered_on.clone().unwrap_or_default();
        // The Service endpoint the packet went to, else its destination as sent.
        let server_ip = leg
            .endpoint
            .clone()
            .unwrap_or_else(|| forward.dst_ip.clone());
        let (server, client_ip, server_port) = {
            let index = self.inventory.read();
            let server = server_ip
                .parse()
                .ok()
                .and_then(|ip| index.pod_by_ip(ip))
                .map(|p| (p.namespace.clone(), p.name.clone()));
            // A hairpin connection was SNATed to the gateway: the endpoint answers that address.
            let client_ip = if let Some(ip) = leg.snat.clone() {
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
            let server_port = match &leg.endpoint {
                Some(ep) => endpoint_port(&index, &forward, ep),
                None => forward.dst_port,
            };
            (server, client_ip, server_port)
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
            src_port: server_port,
            dst_port: forward.src_port,
            // SYN-ACK: what a listening peer answers a SYN with.
            tcp_flags: if tcp { TCP_SYN_ACK } else { 0 },
            icmp_id: forward.icmp_id,
            icmp_sequence: forward.icmp_sequence,
            trace_context: forward.trace_context,
            reply: true,
            // The forward packet's: reports of the reply leg are proven by it too.
            secret: forward.secret,
            // The reply belongs to the forward packet's connection; it creates none.
            own_connection: false,
            free_src_port: false,
        };
        if let Some(conn) = self.injected.replies.get_mut(uid) {
            conn.reply_from = Some(node.clone());
        }
        info!(uid = %uid, node = %node, src = %reply.src_ip, dst = %reply.dst_ip, src_port = reply.src_port, "injecting the reply");
        let cmd = pb::AgentCommand {
            kind: Some(pb::agent_command::Kind::Inject(reply)),
        };
        if let Err(e) = self.agents.send(&node, cmd) {
            let reason = reasons::node_error(&node, e);
            self.finish(uid, TraceflowPhase::Failed, &reason);
        }
    }

    /// The sender of a `reply` trace reports the source port it sent from (it may have
    /// drawn another one: a real connection used the first, `InjectPacket.free_src_port`):
    /// the reply and the flush use that one.
    pub(super) fn note_sent_port(&mut self, uid: &str, node: &str, report: &pb::TraceReport) {
        let Some(conn) = self.injected.replies.get_mut(uid) else {
            return;
        };
        let forward_leg = report
            .result
            .as_ref()
            .is_none_or(|r| !traceflow_core::outcome::is_reply(r));
        if !conn.forward.free_src_port || !forward_leg {
            return;
        }
        let Some(sender) = self.traces.get(uid).map(|r| r.record.sender_node.as_str()) else {
            return;
        };
        if sender != node {
            return;
        }
        let sent = report
            .seen_packet
            .as_ref()
            .and_then(|p| p.transport_header.as_ref())
            .and_then(|t| {
                t.tcp
                    .as_ref()
                    .map(|h| h.src_port)
                    .or(t.udp.as_ref().map(|h| h.src_port))
                    .or(t.sctp.as_ref().map(|h| h.src_port))
            })
            .filter(|p| *p != 0);
        if let Some(port) = sent.filter(|p| *p != conn.forward.src_port) {
            debug!(uid = %uid, was = conn.forward.src_port, now = port, "the sender drew another source port");
            conn.forward.src_port = port;
        }
    }

    /// A finished injected trace: every Node its packets went through forgets the connection
    /// they created ([`flushes`]; the agent flushes only what it saw a trace packet create,
    /// never a real connection of the same tuple). A Node whose agent is gone keeps the
    /// entries until they expire; they carry the trace mark, so they admit no real traffic.
    pub(super) fn flush_connection(&mut self, uid: &str, record: &TraceRecord) {
        let forward = match self.injected.replies.remove(uid) {
            Some(conn) => conn.forward,
            None => match self.injected.forwards.remove(uid) {
                Some(f) => f,
                None => return,
            },
        };
        let per_node = {
            let index = self.inventory.read();
            flushes(&forward, &record.results, &record.sender_node, |ep| {
                endpoint_port(&index, &forward, ep)
            })
        };
        for (node, cmd) in per_node {
            let cmd = pb::AgentCommand {
                kind: Some(pb::agent_command::Kind::FlushConntrack(cmd)),
            };
            if let Err(error) = self.agents.send(&node, cmd) {
                debug!(uid = %uid, node = %node, %error, "conntrack flush not sent");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward() -> pb::InjectPacket {
        pb::InjectPacket {
            trace_uid: "u1".into(),
            src_ip: "10.10.1.2".into(),
            dst_ip: "10.96.0.10".into(),
            protocol: 6,
            src_port: 40000,
            dst_port: 80,
            ..Default::default()
        }
    }

    fn result(node: &str, reply: bool, obs: Vec<pb::Observation>) -> pb::NodeResult {
        pb::NodeResult {
            node: node.into(),
            direction: if reply {
                pb::Direction::Reply
            } else {
                pb::Direction::Forward
            } as i32,
            observations: obs,
            ..Default::default()
        }
    }

    fn lb(dst: &str, src: &str) -> pb::Observation {
        pb::Observation {
            component: pb::Component::Lb as i32,
            action: pb::Action::Forwarded as i32,
            translated_dst_ip: dst.into(),
            translated_src_ip: src.into(),
            ..Default::default()
        }
    }

    fn delivered() -> pb::Observation {
        pb::Observation {
            action: pb::Action::Delivered as i32,
            ..Default::default()
        }
    }

    fn tuples(
        f: &[(String, pb::FlushConntrack)],
        node: &str,
    ) -> Vec<(i32, String, String, i32, i32)> {
        f.iter()
            .filter(|(n, _)| n == node)
            .flat_map(|(_, c)| c.tuples.iter())
            .map(|t| {
                (
                    t.zone,
                    t.src_ip.clone(),
                    t.dst_ip.clone(),
                    t.src_port,
                    t.dst_port,
                )
            })
            .collect()
    }

    #[test]
    fn a_service_connection_is_flushed_as_sent_on_the_sender_and_dnated_elsewhere() {
        let results = vec![
            result("n1", false, vec![lb("10.10.2.3", "")]),
            result("n2", false, vec![delivered()]),
            result("n2", true, vec![]),
            result("n1", true, vec![delivered()]),
        ];
        let f = flushes(&forward(), &results, "n1", |ep| {
            assert_eq!(ep, "10.10.2.3");
            8080
        });
        assert_eq!(f.len(), 2, "one command per Node: {f:?}");
        let pods = pb::ConntrackZone::Pods as i32;
        assert_eq!(
            tuples(&f, "n1"),
            vec![(pods, "10.10.1.2".into(), "10.96.0.10".into(), 40000, 80)]
        );
        assert_eq!(
            tuples(&f, "n2"),
            vec![(pods, "10.10.1.2".into(), "10.10.2.3".into(), 40000, 8080)]
        );
    }

    #[test]
    fn a_hairpin_connection_is_also_flushed_from_the_snat_zone() {
        let results = vec![result(
            "n1",
            false,
            vec![lb("10.10.1.2", "10.10.1.1"), delivered()],
        )];
        let f = flushes(&forward(), &results, "n1", |_| 8080);
        assert_eq!(
            tuples(&f, "n1"),
            vec![
                (
                    pb::ConntrackZone::Pods as i32,
                    "10.10.1.2".into(),
                    "10.96.0.10".into(),
                    40000,
                    80
                ),
                (
                    pb::ConntrackZone::ServiceSnat as i32,
                    "10.10.1.2".into(),
                    "10.10.1.2".into(),
                    40000,
                    8080
                ),
            ]
        );
    }

    #[test]
    fn a_pod_connection_is_the_same_tuple_on_every_node() {
        let mut fwd = forward();
        fwd.dst_ip = "10.10.2.3".into();
        let results = vec![
            result("n1", false, vec![]),
            result("n2", false, vec![delivered()]),
        ];
        let f = flushes(&fwd, &results, "n1", |_| panic!("no endpoint"));
        assert_eq!(tuples(&f, "n1"), tuples(&f, "n2"));
        let f = flushes(&fwd, &results[1..], "n1", |_| panic!("no endpoint"));
        assert_eq!(
            f.len(),
            1,
            "a Node that reported nothing saw no trace packet create a connection"
        );
    }
}
