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
//! it is committed state of the forward packet that makes it `+est+rpl`. When the trace ends,
//! the adapter sends `FlushConntrack` to each Node the packets went through, and
//! [`flush_messages`] removes that state (`NXT_CT_FLUSH`, one per tuple), so the same 5-tuple
//! traced again is a new connection.

use traceflow_proto::v1 as pb;

use std::net::IpAddr;

use crate::ovs::openflow::message::{CtFlush, CtTuple};
use crate::ovs::openflow::{Match, Message, PacketIn};
use crate::pipeline::flows::{CT_ZONE, CT_ZONE_V6};
use crate::pipeline::services::{SERVICE_CT_MARK, SNAT_CT_ZONE, SNAT_CT_ZONE_V6};
use crate::ports::{NodePorts, PortKind};

use super::inject::{InjectError, Injection};
use super::packet::{
    PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, ParsedPacket, SCTP_INIT_TAG, Transport,
};

/// The reply's packet-out: [`Injection::packet_out`] (the injected mark included, so the
/// Classifier keeps its trace DSCP) of the answer to the forward packet: [`answer`].
pub fn packet_out(injection: &Injection) -> Result<Message, InjectError> {
    let mut reply = injection.clone();
    reply.packet.transport = answer(reply.packet.transport);
    reply.packet_out()
}

/// What a peer answers with, given the reply's transport as the adapter describes it (ports
/// already swapped, TCP flags SYN-ACK): an ICMP echo request becomes an echo reply, an SCTP
/// INIT an INIT-ACK tagged with the INIT's initiate tag; the rest is taken as given.
pub fn answer(transport: Transport) -> Transport {
    match transport {
        Transport::Echo { id, seq } => Transport::EchoReply { id, seq },
        Transport::Sctp { src_port, dst_port } => Transport::SctpInitAck {
            src_port,
            dst_port,
            verification_tag: SCTP_INIT_TAG,
        },
        other => other,
    }
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

/// A `FlushConntrack` this agent cannot carry out.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    #[error(
        "conntrack tuple field {field} is {value:?}, not {what}; the adapter sent a bad FlushConntrack"
    )]
    Field {
        field: &'static str,
        value: String,
        what: &'static str,
    },
}

/// One `NXT_CT_FLUSH` per tuple of `req`, in its zone of the family. TCP and UDP entries are
/// named by their whole 5-tuple and ICMP ones by addresses and echo id (request type, code
/// 0): OVS looks those up directly. Other protocols (SCTP) are named by addresses only: the
/// userspace datapath's conntrack keeps no ports for them.
///
/// ICMPv6 entries are left to expire (30 s after the echo reply): OVS 3.1.0's userspace
/// conntrack turns a flushed tuple into its key with the ICMPv4 type reversal, which aborts
/// ovs-vswitchd on type 128 (`reverse_icmp_type`, `OVS_NOT_REACHED`), and its partial match
/// finds no ICMPv6 entry either.
pub fn flush_messages(req: &pb::FlushConntrack) -> Result<Vec<Message>, FlushError> {
    if req.protocol == i32::from(PROTO_ICMPV6) {
        return Ok(Vec::new());
    }
    let proto = u8::try_from(req.protocol).map_err(|_| FlushError::Field {
        field: "protocol",
        value: req.protocol.to_string(),
        what: "an IP protocol number",
    })?;
    let ip = |field: &'static str, v: &str| -> Result<IpAddr, FlushError> {
        v.parse::<IpAddr>()
            .ok()
            .filter(|ip| ip.is_ipv6() == req.ipv6)
            .ok_or_else(|| FlushError::Field {
                field,
                value: v.to_string(),
                what: "an address of the command's family",
            })
    };
    let port = |field: &'static str, v: i32| -> Result<u16, FlushError> {
        u16::try_from(v).map_err(|_| FlushError::Field {
            field,
            value: v.to_string(),
            what: "a port",
        })
    };
    req.tuples
        .iter()
        .map(|t| {
            let zone = match (pb::ConntrackZone::try_from(t.zone), req.ipv6) {
                (Ok(pb::ConntrackZone::ServiceSnat), false) => SNAT_CT_ZONE,
                (Ok(pb::ConntrackZone::ServiceSnat), true) => SNAT_CT_ZONE_V6,
                (_, false) => CT_ZONE,
                (_, true) => CT_ZONE_V6,
            };
            let mut orig = CtTuple {
                src: Some(ip("src_ip", &t.src_ip)?),
                dst: Some(ip("dst_ip", &t.dst_ip)?),
                ..Default::default()
            };
            match proto {
                PROTO_TCP | PROTO_UDP => {
                    orig.src_port = Some(port("src_port", t.src_port)?);
                    orig.dst_port = Some(port("dst_port", t.dst_port)?);
                }
                PROTO_ICMP => orig.icmp = Some((port("icmp_id", t.icmp_id)?, 8, 0)),
                _ => {}
            }
            Ok(Message::CtFlush(CtFlush {
                ip_proto: proto,
                zone: Some(zone),
                orig,
            }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::answer;
    use crate::ports::Mac;
    use crate::trace::packet::{
        SCTP_CHUNK_INIT, SCTP_CHUNK_INIT_ACK, SCTP_INIT_TAG, TracePacket, Transport, crc32c, parse,
    };

    fn frame(src: &str, dst: &str, transport: Transport) -> Vec<u8> {
        let p = TracePacket {
            src_mac: Mac([2, 0, 0, 0, 0, 1]),
            dst_mac: Mac([2, 0, 0, 0, 0, 2]),
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            trace_id: 7,
            ttl: 64,
            ip_flags: 0,
            transport,
            secret: 0,
        };
        p.build().unwrap()
    }

    #[test]
    fn the_answer_to_an_sctp_init_is_an_init_ack_tagged_with_the_inits_initiate_tag() {
        // The forward INIT, client 40000 -> server 9000.
        let init = frame(
            "10.0.0.1",
            "10.0.0.2",
            Transport::Sctp {
                src_port: 40000,
                dst_port: 9000,
            },
        );
        let init_sctp = &init[34..];
        assert_eq!(init_sctp[12], SCTP_CHUNK_INIT);
        let initiate_tag =
            u32::from_be_bytes([init_sctp[16], init_sctp[17], init_sctp[18], init_sctp[19]]);
        assert_eq!(initiate_tag, SCTP_INIT_TAG);

        // The reply as the adapter sends it: ports swapped.
        let reply = answer(Transport::Sctp {
            src_port: 9000,
            dst_port: 40000,
        });
        let f = frame("10.0.0.2", "10.0.0.1", reply);
        let mut sctp = f[34..].to_vec();
        assert_eq!(
            &sctp[0..4],
            &[0x23, 0x28, 0x9c, 0x40],
            "ports 9000 -> 40000"
        );
        assert_eq!(&sctp[4..8], &initiate_tag.to_be_bytes(), "verification tag");
        assert_eq!(sctp[12], SCTP_CHUNK_INIT_ACK, "chunk type");
        let chunk_len = usize::from(u16::from_be_bytes([sctp[14], sctp[15]]));
        assert_eq!(chunk_len, sctp.len() - 12, "the chunk fills the packet");
        assert_ne!(
            &sctp[16..20],
            &[0, 0, 0, 0],
            "an INIT-ACK's own initiate tag is never 0"
        );
        assert_eq!(
            &sctp[32..36],
            &[0, 7, 0, 8],
            "the mandatory State Cookie parameter"
        );
        let stored = u32::from_le_bytes([sctp[8], sctp[9], sctp[10], sctp[11]]);
        sctp[8..12].fill(0);
        assert_eq!(crc32c(&sctp), stored, "CRC32c");
        let p = parse(&f).unwrap();
        assert_eq!(
            (p.protocol, p.src_port, p.dst_port),
            (132, Some(9000), Some(40000))
        );
    }

    #[test]
    fn flush_names_each_tuple_in_its_zone_of_the_family() {
        use super::{CtFlush, CtTuple, Message, flush_messages};
        use traceflow_proto::v1 as pb;
        let tuple = |zone: pb::ConntrackZone, src: &str, dst: &str| pb::ConntrackTuple {
            zone: zone as i32,
            src_ip: src.into(),
            dst_ip: dst.into(),
            src_port: 40000,
            dst_port: 8080,
            icmp_id: 7,
        };
        let req = |ipv6: bool, protocol: i32, tuples: Vec<pb::ConntrackTuple>| pb::FlushConntrack {
            trace_uid: "u".into(),
            ipv6,
            protocol,
            tuples,
        };
        let tcp = flush_messages(&req(
            false,
            6,
            vec![
                tuple(pb::ConntrackZone::Pods, "10.0.0.1", "10.96.0.1"),
                tuple(pb::ConntrackZone::ServiceSnat, "10.0.0.1", "10.0.0.2"),
            ],
        ))
        .unwrap();
        let want = |zone: u16, dst: [u8; 4], ports: Option<(u16, u16)>, icmp| {
            Message::CtFlush(CtFlush {
                ip_proto: 6,
                zone: Some(zone),
                orig: CtTuple {
                    src: Some([10, 0, 0, 1].into()),
                    dst: Some(dst.into()),
                    src_port: ports.map(|p| p.0),
                    dst_port: ports.map(|p| p.1),
                    icmp,
                },
            })
        };
        assert_eq!(
            tcp,
            vec![
                want(65520, [10, 96, 0, 1], Some((40000, 8080)), None),
                want(65521, [10, 0, 0, 2], Some((40000, 8080)), None),
            ]
        );
        let icmp = flush_messages(&req(
            false,
            1,
            vec![tuple(pb::ConntrackZone::Pods, "10.0.0.1", "10.0.0.2")],
        ))
        .unwrap();
        let Message::CtFlush(f) = &icmp[0] else {
            panic!("not a flush")
        };
        assert_eq!(
            (f.zone, f.orig.icmp, f.orig.src_port),
            (Some(65520), Some((7, 8, 0)), None)
        );
        let tcp6 = flush_messages(&req(
            true,
            6,
            vec![tuple(pb::ConntrackZone::ServiceSnat, "fd00::1", "fd00::2")],
        ))
        .unwrap();
        let Message::CtFlush(f) = &tcp6[0] else {
            panic!("not a flush")
        };
        assert_eq!(f.zone, Some(65511));
        let icmp6 = flush_messages(&req(
            true,
            58,
            vec![tuple(pb::ConntrackZone::Pods, "fd00::1", "fd00::2")],
        ))
        .unwrap();
        assert!(
            icmp6.is_empty(),
            "OVS 3.1.0 aborts on an ICMPv6 tuple flush"
        );
        let sctp = flush_messages(&req(
            false,
            132,
            vec![tuple(pb::ConntrackZone::Pods, "10.0.0.1", "10.0.0.2")],
        ))
        .unwrap();
        let Message::CtFlush(f) = &sctp[0] else {
            panic!("not a flush")
        };
        assert_eq!(
            (f.orig.src_port, f.orig.dst_port),
            (None, None),
            "SCTP: addresses only"
        );
        assert!(
            flush_messages(&req(
                true,
                6,
                vec![tuple(pb::ConntrackZone::Pods, "10.0.0.1", "fd00::2")]
            ))
            .is_err(),
            "an address of the other family"
        );
    }

    #[test]
    fn echo_requests_become_echo_replies_and_tcp_udp_stay_as_given() {
        assert_eq!(
            answer(Transport::Echo { id: 1, seq: 2 }),
            Transport::EchoReply { id: 1, seq: 2 }
        );
        let syn_ack = Transport::Tcp {
            src_port: 80,
            dst_port: 40000,
            flags: 0x12,
        };
        assert_eq!(answer(syn_ack.clone()), syn_ack);
        let udp = Transport::Udp {
            src_port: 53,
            dst_port: 40053,
        };
        assert_eq!(answer(udp.clone()), udp);
    }

    fn echo_reply(src: &str, dst: &str, id: u16, seq: u16) -> Vec<u8> {
        frame(src, dst, Transport::EchoReply { id, seq })
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
