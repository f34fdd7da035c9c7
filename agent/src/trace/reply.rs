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

use crate::ovs::openflow::action::port;
use std::net::IpAddr;

use crate::ovs::openflow::{Action, Match, Message, PacketIn, PacketOut};
use crate::pipeline::services::SERVICE_CT_MARK;
use crate::ports::{NodePorts, PortKind};

use super::inject::{InjectError, Injection};
use super::packet::{ETH_IPV4, ETH_IPV6, PROTO_ICMPV6, ParsedPacket, Transport, checksum};

/// ICMP echo reply types (v4, v6).
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REPLY_V6: u8 = 129;

/// The reply's packet-out: as [`Injection::packet_out`], with an ICMP echo request turned
/// into the echo reply (type 0 / 129, checksum updated).
pub fn packet_out(injection: &Injection) -> Result<Message, InjectError> {
    let mut data = injection.packet.build().map_err(|_| InjectError::Family)?;
    if matches!(injection.packet.transport, Transport::Echo { .. }) {
        echo_request_to_reply(&mut data);
    }
    Ok(Message::PacketOut(PacketOut::new(
        injection.in_port,
        vec![Action::output(port::TABLE)],
        data,
    )))
}

/// Rewrites the ICMP / ICMPv6 type of an echo request frame to echo reply and recomputes the
/// checksum (over the ICMPv6 pseudo-header too). Not incrementally: for an all-zero message
/// (id 0, sequence 0) RFC 1624's update yields 0x0000 where the checksum must be 0xffff, and
/// conntrack classes such a reply invalid. Frames that are not an IP echo request are left
/// as they are.
pub fn echo_request_to_reply(frame: &mut [u8]) {
    let Some(ethertype) = frame.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
        return;
    };
    let (l4, reply, pseudo) = match ethertype {
        ETH_IPV4 => {
            let ihl = frame.get(14).map_or(0, |b| usize::from(b & 0x0f) * 4);
            (14 + ihl, ECHO_REPLY_V4, Vec::new())
        }
        ETH_IPV6 => {
            let Some(addrs) = frame.get(22..54) else {
                return;
            };
            let len = u32::try_from(frame.len().saturating_sub(54)).unwrap_or(0);
            let mut p = addrs.to_vec();
            p.extend_from_slice(&len.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, PROTO_ICMPV6]);
            (54, ECHO_REPLY_V6, p)
        }
        _ => return,
    };
    let Some(msg) = frame.get_mut(l4..) else {
        return;
    };
    if msg.len() < 4 || !matches!(msg[0], 8 | 128) {
        return;
    }
    msg[0] = reply;
    msg[2..4].copy_from_slice(&[0, 0]);
    let sum = checksum(&[&pseudo, msg]);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
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
    use super::*;
    use crate::ports::Mac;
    use crate::trace::packet::{TracePacket, parse};

    fn echo(src: &str, dst: &str) -> Vec<u8> {
        echo_with(src, dst, 3, 4)
    }

    fn echo_with(src: &str, dst: &str, id: u16, seq: u16) -> Vec<u8> {
        let p = TracePacket {
            src_mac: Mac([2, 0, 0, 0, 0, 1]),
            dst_mac: Mac([2, 0, 0, 0, 0, 2]),
            src: src.parse().unwrap_or_else(|e| panic!("{e}")),
            dst: dst.parse().unwrap_or_else(|e| panic!("{e}")),
            trace_id: 7,
            ttl: 64,
            ip_flags: 0,
            transport: Transport::Echo { id, seq },
        };
        p.build().unwrap_or_else(|_| panic!("family"))
    }

    #[test]
    fn icmpv4_echo_request_becomes_a_reply_with_a_valid_checksum() {
        let mut f = echo("10.0.0.2", "10.0.0.1");
        echo_request_to_reply(&mut f);
        let l4 = &f[34..];
        assert_eq!(l4[0], 0, "echo reply");
        assert_eq!(checksum(&[l4]), 0, "a valid checksum sums to zero");
        let p = parse(&f).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(p.trace_id, 7, "the trace id survives");
    }

    #[test]
    fn icmpv6_echo_request_becomes_a_reply_with_a_valid_checksum() {
        let mut f = echo("fd00::2", "fd00::1");
        echo_request_to_reply(&mut f);
        let l4 = f[54..].to_vec();
        assert_eq!(l4[0], 129);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&f[22..54]);
        pseudo.extend_from_slice(&u32::try_from(l4.len()).unwrap_or(0).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        assert_eq!(checksum(&[&pseudo, &l4]), 0);
    }

    #[test]
    fn an_all_zero_echo_reply_gets_0xffff_not_0() {
        // What a spec without ICMP id / sequence injects; conntrack drops a 0x0000 checksum.
        let mut f = echo_with("10.0.0.2", "10.0.0.1", 0, 0);
        echo_request_to_reply(&mut f);
        assert_eq!(&f[34..], &[0, 0, 0xff, 0xff, 0, 0, 0, 0]);
    }

    #[test]
    fn other_frames_are_left_alone() {
        let mut f = vec![0u8; 20];
        let before = f.clone();
        echo_request_to_reply(&mut f);
        assert_eq!(f, before);
    }
}
