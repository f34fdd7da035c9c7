//! `InjectPacket` → the packet-out that injects a trace (reference §3.2).
//!
//! The conversion is pure: it resolves the source Pod and the destination MAC against the
//! Node's ports and fails with a reason in Antrea's words (reference §2.8) that the adapter
//! prefixes with "Node: <node>, error: ".

use std::net::IpAddr;

use traceflow_proto::v1 as pb;

use crate::ovs::openflow::action::port;
use crate::ovs::openflow::{Action, Message, PacketOut};
use crate::ports::NodePorts;

use super::packet::{
    PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP, TracePacket, Transport,
};

/// Why a trace cannot be injected here; `Display` is the reason reported to the adapter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    #[error("source Pod {0} is not on this Node")]
    SourcePodNotLocal(String),
    #[error("source Pod does not have an {0} address")]
    SourceFamily(&'static str),
    #[error("source IP does not match the IP header family")]
    SourceIpFamily,
    #[error("invalid source IP address")]
    InvalidSourceIp,
    #[error("invalid destination IP address")]
    InvalidDestinationIp,
    #[error("destination IP does not match the IP header family")]
    DestinationIpFamily,
    #[error("trace id {0} does not fit the {1}")]
    TraceIdRange(u32, &'static str),
    #[error("Node has no Antrea gateway port to send non-local traffic to")]
    NoGateway,
    #[error("invalid {field} {value}")]
    OutOfRange { field: &'static str, value: i32 },
    #[error("source and destination IP families differ")]
    Family,
    #[error("{0}")]
    OpenFlow(String),
    #[error(
        "a connection already uses {0}: a reply trace injects into its own connection only and leaves this one alone; give another source port, or none to have a free one chosen"
    )]
    ConnectionInUse(String),
    #[error(
        "cannot check that no connection uses {tuple} ({detail}); the reply trace was not injected"
    )]
    ConntrackUnreadable { tuple: String, detail: String },
}

/// A resolved injection: the packet and the port it enters on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    pub in_port: u32,
    pub packet: TracePacket,
}

impl Injection {
    /// The packet-out: `in_port` = source Pod port, the injected mark in reg0 (so the
    /// Classifier keeps its trace DSCP), then `output:TABLE`, so the packet traverses the whole
    /// pipeline from table 0 as if the Pod had sent it.
    pub fn packet_out(&self) -> Result<Message, InjectError> {
        let data = self.packet.build().map_err(|_| InjectError::Family)?;
        Ok(Message::PacketOut(PacketOut::new(
            self.in_port,
            vec![
                Action::set_reg(
                    0,
                    crate::pipeline::regs::INJECTED_MARK,
                    crate::pipeline::regs::INJECTED_MARK,
                ),
                Action::output(port::TABLE),
            ],
            data,
        )))
    }
}

fn u16_field(field: &'static str, value: i32) -> Result<u16, InjectError> {
    u16::try_from(value).map_err(|_| InjectError::OutOfRange { field, value })
}

/// Resolves an `InjectPacket` against the Node's ports. `random_port` supplies a source port
/// when the request leaves it 0 (Antrea picks a random one).
pub fn resolve(
    req: &pb::InjectPacket,
    ports: &NodePorts,
    random_port: impl FnOnce() -> u16,
) -> Result<Injection, InjectError> {
    let pod = ports
        .pod(&req.src_pod_namespace, &req.src_pod_name)
        .ok_or_else(|| {
            InjectError::SourcePodNotLocal(format!(
                "{}/{}",
                req.src_pod_namespace, req.src_pod_name
            ))
        })?;
    let (family, is_v6) = if req.ipv6 {
        ("IPv6", true)
    } else {
        ("IPv4", false)
    };
    let src = if req.src_ip.is_empty() {
        *pod.port
            .ips
            .iter()
            .find(|ip| ip.is_ipv6() == is_v6)
            .ok_or(InjectError::SourceFamily(family))?
    } else {
        let ip: IpAddr = req
            .src_ip
            .parse()
            .map_err(|_| InjectError::InvalidSourceIp)?;
        if ip.is_ipv6() != is_v6 {
            return Err(InjectError::SourceIpFamily);
        }
        if !pod.port.ips.iter().any(|p| p.is_ipv6() == is_v6) {
            return Err(InjectError::SourceFamily(family));
        }
        ip
    };
    let dst: IpAddr = req
        .dst_ip
        .parse()
        .map_err(|_| InjectError::InvalidDestinationIp)?;
    if dst.is_ipv6() != is_v6 {
        return Err(InjectError::DestinationIpFamily);
    }
    let (limit, field) = if is_v6 {
        (0xf_ffff, "IPv6 flow label")
    } else {
        (0xffff, "IPv4 Identification")
    };
    if req.trace_id > limit {
        return Err(InjectError::TraceIdRange(req.trace_id, field));
    }
    // Local destination Pod → its MAC; anything else → the gateway (reference §3.2).
    let dst_mac = match ports.pod_by_ip(dst) {
        Some(p) => p.port.mac,
        None => ports.gateway.as_ref().ok_or(InjectError::NoGateway)?.mac,
    };
    let ttl = match req.ttl {
        0 => 64,
        t => u8::try_from(t).map_err(|_| InjectError::OutOfRange {
            field: "TTL",
            value: t,
        })?,
    };
    let ip_flags = if is_v6 {
        0
    } else {
        u8::try_from(req.ip_flags)
            .ok()
            .filter(|f| *f <= 7)
            .ok_or(InjectError::OutOfRange {
                field: "IP flags",
                value: req.ip_flags,
            })?
    };
    let proto = u8::try_from(req.protocol).map_err(|_| InjectError::OutOfRange {
        field: "protocol",
        value: req.protocol,
    })?;
    let mut random_port = Some(random_port);
    let mut src_port = |v: i32| -> Result<u16, InjectError> {
        match v {
            0 => Ok(random_port.take().map_or(40000, |f| f())),
            v => u16_field("source port", v),
        }
    };
    let transport = match proto {
        // ICMP and ICMPv6 are the same request in either family; 0 means ICMP.
        0 | PROTO_ICMP | PROTO_ICMPV6 => Transport::Echo {
            id: u16_field("ICMP id", req.icmp_id)?,
            seq: u16_field("ICMP sequence", req.icmp_sequence)?,
        },
        PROTO_TCP => Transport::Tcp {
            src_port: src_port(req.src_port)?,
            dst_port: u16_field("destination port", req.dst_port)?,
            // Taken literally: the adapter already applied Antrea's default (SYN) when the
            // spec left flags unset, so an explicit 0 stays 0.
            flags: u8::try_from(req.tcp_flags).map_err(|_| InjectError::OutOfRange {
                field: "TCP flags",
                value: req.tcp_flags,
            })?,
        },
        PROTO_UDP => Transport::Udp {
            src_port: src_port(req.src_port)?,
            dst_port: u16_field("destination port", req.dst_port)?,
        },
        PROTO_SCTP => Transport::Sctp {
            src_port: src_port(req.src_port)?,
            dst_port: u16_field("destination port", req.dst_port)?,
        },
        other => Transport::Bare(other),
    };
    Ok(Injection {
        in_port: pod.port.ofport,
        packet: TracePacket {
            src_mac: pod.port.mac,
            dst_mac,
            src,
            dst,
            trace_id: req.trace_id,
            ttl,
            ip_flags,
            transport,
            secret: req.secret,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::Mac;
    use crate::ports::fixtures::mk_node;

    fn req(dst: &str) -> pb::InjectPacket {
        pb::InjectPacket {
            trace_uid: "u1".into(),
            trace_id: 42,
            src_pod_namespace: "default".into(),
            src_pod_name: "p0".into(),
            dst_ip: dst.into(),
            protocol: 1,
            ..Default::default()
        }
    }

    #[test]
    fn local_destination_uses_pod_mac_remote_uses_gateway() {
        let n = mk_node();
        let i = resolve(&req("10.1.0.3"), &n, || 1).unwrap();
        assert_eq!(i.in_port, 3);
        assert_eq!(i.packet.dst_mac, Mac([2, 0, 0, 0, 0, 2]));
        assert_eq!(
            i.packet.src,
            "10.1.0.2".parse::<IpAddr>().unwrap_or(IpAddr::from([0; 4]))
        );
        assert_eq!(i.packet.ttl, 64);
        let i = resolve(&req("192.0.2.10"), &n, || 1).unwrap();
        assert_eq!(i.packet.dst_mac, Mac([2, 0, 0, 0, 0, 0xfe]));
        let Ok(Message::PacketOut(po)) = i.packet_out() else {
            panic!("no packet-out")
        };
        // The injected mark first: without it the Classifier treats the packet as forged.
        let mark = crate::pipeline::regs::INJECTED_MARK;
        assert_eq!(
            po.actions,
            vec![Action::set_reg(0, mark, mark), Action::output(port::TABLE)]
        );
        assert_eq!(po.fields.in_port(), Some(3));
    }

    #[test]
    fn protocol_defaults_follow_antrea() {
        let n = mk_node();
        let mut r = req("10.1.0.3");
        r.protocol = 6;
        r.dst_port = 80;
        r.tcp_flags = 2;
        let i = resolve(&r, &n, || 33333).unwrap();
        assert_eq!(
            i.packet.transport,
            Transport::Tcp {
                src_port: 33333,
                dst_port: 80,
                flags: 2
            }
        );
        r.tcp_flags = 0;
        r.src_port = 1234;
        let i = resolve(&r, &n, || 33333).unwrap();
        assert_eq!(
            i.packet.transport,
            Transport::Tcp {
                src_port: 1234,
                dst_port: 80,
                flags: 0
            }
        );
        let mut r = req("fd00:1::3");
        r.ipv6 = true;
        r.protocol = 1;
        let i = resolve(&r, &n, || 1).unwrap();
        assert_eq!(i.packet.protocol(), 58, "ICMP with IPv6 becomes ICMPv6");
    }

    #[test]
    fn failures_use_antreas_words() {
        let mut n = mk_node();
        let mut r = req("fd00:1::3");
        r.ipv6 = true;
        n.pods[0].port.ips.retain(IpAddr::is_ipv4);
        assert_eq!(
            resolve(&r, &n, || 1).map_err(|e| e.to_string()),
            Err("source Pod does not have an IPv6 address".into())
        );
        let n = mk_node();
        assert_eq!(
            resolve(&req("10.1.0.x"), &n, || 1).map_err(|e| e.to_string()),
            Err("invalid destination IP address".into())
        );
        assert_eq!(
            resolve(&req("fd00::1"), &n, || 1).map_err(|e| e.to_string()),
            Err("destination IP does not match the IP header family".into())
        );
        let mut r = req("10.1.0.3");
        r.src_ip = "fd00:1::2".into();
        assert_eq!(
            resolve(&r, &n, || 1).map_err(|e| e.to_string()),
            Err("source IP does not match the IP header family".into())
        );
        let mut r = req("10.1.0.3");
        r.trace_id = 70000;
        assert!(matches!(
            resolve(&r, &n, || 1),
            Err(InjectError::TraceIdRange(70000, _))
        ));
        let mut r = req("10.1.0.3");
        r.src_pod_name = "nope".into();
        assert!(matches!(
            resolve(&r, &n, || 1),
            Err(InjectError::SourcePodNotLocal(_))
        ));
    }
}
