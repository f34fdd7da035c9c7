//! The reply leg of a `reply` trace (issue 14): the packet the destination Pod would answer
//! the delivered trace packet with, injected at that Pod's port as the same connection in the
//! reply direction, and what its packet-ins add to the observations.
//!
//! ```text
//!  adapter: forward leg Delivered on Node N ─▶ InjectPacket { reply, src ⇄ dst, ports swapped,
//!                                                            TCP SYN-ACK } to N
//!  agent N: [`packet_out`]: the packet, ICMP echo request → echo reply, in_port = the Pod
//!  every Node: packet-in with ct_state +rpl ─▶ NodeResult.direction = Reply;
//!              a Service connection (ServiceCTMark) ─▶ `LB Forwarded translatedSrcIP`
//! ```
//!
//! Conntrack, Service un-DNAT, policies and the tunnel act on the reply as on real traffic:
//! it is committed state of the forward packet that makes it `+est+rpl`.

use traceflow_proto::v1 as pb;

use std::net::IpAddr;

use crate::ovs::openflow::{Match, Message, PacketIn};
use crate::pipeline::services::SERVICE_CT_MARK;
use crate::ports::{NodePorts, PortKind};

use super::inject::{InjectError, Injection};
use super::packet::{ParsedPacket, Transport};

/// The reply's packet-out: [`Injection::packet_out`] (the injected mark included, so the
/// Classifier keeps its trace DSCP) of the same packet, an ICMP echo request answered by an
/// echo reply.
pub fn packet_out(injection: &Injection) -> Result<Message, InjectError> {
    let mut reply = injection.clone();
    if let Transport::Echo { id, seq } = reply.packet.transport {
        reply.packet.transport = Transport::EchoReply { id, seq };
    }
    reply.packet_out()
}

/// The IP (of the packet's family) of the Pod whose port the reply entered from.
pub fn entry_pod_ip(pin: &PacketIn, pkt: &ParsedPacket, ports: &NodePorts) -> Option<IpAddr> {
    match pin.fields.in_port().and_then(|p| ports.by_ofport(p))? {
        PortKind::Pod(pod) => pod
            .port
            .ips
            .iter()
            .copied()
            .find(|ip| ip.is_ipv6() == pkt.src.is_ipv6()),
        _ => None,
    }
}

/// The reply leg's `LB` observation: a reply of a Service connection (ServiceCTMark) was
/// un-DNATed by conntrack, so its source is now the Service IP the client used:
/// `LB Forwarded translatedSrcIP = <Service IP>`.
pub fn un_dnat_obs(pkt: &ParsedPacket, f: &Match, micros: i64) -> Option<pb::Observation> {
    let service = f
        .ct_mark()
        .is_some_and(|m| m & SERVICE_CT_MARK == SERVICE_CT_MARK);
    service.then(|| pb::Observation {
        component: pb::Component::Lb as i32,
        action: pb::Action::Forwarded as i32,
        translated_src_ip: pkt.src.to_string(),
        timestamp_micros: micros,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use crate::ports::Mac;
    use crate::trace::packet::{TracePacket, Transport, parse};

    fn echo_reply(src: &str, dst: &str, id: u16, seq: u16) -> Vec<u8> {
        let p = TracePacket {
            src_mac: Mac([2, 0, 0, 0, 0, 1]),
            dst_mac: Mac([2, 0, 0, 0, 0, 2]),
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            trace_id: 7,
            ttl: 64,
            ip_flags: 0,
            transport: Transport::EchoReply { id, seq },
        };
        p.build().unwrap()
    }

    #[test]
    fn echo_replies_of_both_families_parse_with_the_trace_id() {
        for (src, dst, l4, ty) in [
            ("10.0.0.2", "10.0.0.1", 34, 0),
            ("fd00::2", "fd00::1", 54, 129),
        ] {
            let f = echo_reply(src, dst, 3, 4);
            assert_eq!(f[l4], ty, "echo reply type");
            let p = parse(&f).unwrap();
            assert_eq!(p.trace_id, 7, "the trace id survives");
            assert_eq!(p.icmp_echo, Some((3, 4)));
        }
    }

    #[test]
    fn an_all_zero_echo_reply_gets_0xffff_not_0() {
        // What a spec without ICMP id / sequence injects; conntrack drops a 0x0000 checksum.
        let f = echo_reply("10.0.0.2", "10.0.0.1", 0, 0);
        assert_eq!(&f[34..], &[0, 0, 0xff, 0xff, 0, 0, 0, 0]);
    }
}
