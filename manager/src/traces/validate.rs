//! Validation of a trace request: Antrea's admission rules (reference antrea-traceflow.md §2.2)
//! with their messages, plus field checks (families, ports, protocols, TCP flags as NSX
//! enforces them, nsx-and-peers.md §1.5).
//!
//! Pure: no store, no inventory. Checks that need the cluster's inventory (source Pod exists,
//! not hostNetwork) live in [`check_source_pod`].

use std::net::IpAddr;

use traceflow_proto::v1 as pb;

/// Default timeout in seconds (Antrea's `DefaultTraceflowTimeout`).
pub const DEFAULT_TIMEOUT: i32 = 20;
/// Largest timeout in seconds (Antrea's CRD maximum).
pub const MAX_TIMEOUT: i32 = 300;

/// An invalid field: `field` is the JSON path inside the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

fn invalid(field: &str, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.to_string(),
        message: message.into(),
    }
}

const TCP_FIN: i32 = 0x01;
const TCP_SYN: i32 = 0x02;
const TCP_RST: i32 = 0x04;
const TCP_PSH: i32 = 0x08;
const TCP_ACK: i32 = 0x10;
const TCP_URG: i32 = 0x20;

fn check_range(field: &str, v: i32, lo: i32, hi: i32) -> Result<(), Invalid> {
    if v < lo || v > hi {
        return Err(invalid(
            field,
            format!("must be between {lo} and {hi}, got {v}"),
        ));
    }
    Ok(())
}

fn check_port(field: &str, v: i32, zero_ok: bool) -> Result<(), Invalid> {
    if zero_ok && v == 0 {
        return Ok(());
    }
    if !(1..=65535).contains(&v) {
        return Err(invalid(
            field,
            format!("port must be between 1 and 65535, got {v}"),
        ));
    }
    Ok(())
}

/// NSX's TCP flag rules: SYN not with RST or FIN; without SYN, ACK or RST is required; ACK not
/// with FIN, PSH or URG.
pub fn check_tcp_flags(flags: i32) -> Result<(), String> {
    if !(0..=255).contains(&flags) {
        return Err(format!("must be between 0 and 255, got {flags}"));
    }
    let has = |f: i32| flags & f != 0;
    if has(TCP_SYN) && (has(TCP_RST) || has(TCP_FIN)) {
        return Err(format!(
            "SYN cannot be combined with RST or FIN (flags {flags})"
        ));
    }
    if !has(TCP_SYN) && !has(TCP_ACK) && !has(TCP_RST) {
        return Err(format!(
            "without SYN, ACK or RST must be set (flags {flags}); unset means SYN (2)"
        ));
    }
    if has(TCP_ACK) && (has(TCP_FIN) || has(TCP_PSH) || has(TCP_URG)) {
        return Err(format!(
            "ACK cannot be combined with FIN, PSH or URG (flags {flags})"
        ));
    }
    Ok(())
}

fn parse_ip(field: &str, s: &str) -> Result<IpAddr, Invalid> {
    s.parse::<IpAddr>()
        .map_err(|_| invalid(field, format!("{s:?} is not a valid IP address")))
}

/// Validates `spec` for a trace named `name` and returns it with defaults filled in
/// (timeout 20). Errors name the field, using Antrea's message where Antrea has one.
pub fn validate_spec(
    name: &str,
    spec: Option<pb::TraceflowSpec>,
) -> Result<pb::TraceflowSpec, Invalid> {
    let mut spec = spec.ok_or_else(|| invalid("spec", "spec is required"))?;
    let source = spec.source.clone().unwrap_or_default();
    let dest = spec.destination.clone().unwrap_or_default();

    // Antrea's admission rules, in order (reference §2.2).
    if !spec.live_traffic && (source.namespace.is_empty() || source.pod.is_empty()) {
        return Err(invalid(
            "spec.source.pod",
            "source Pod must be specified in non-live-traffic Traceflow",
        ));
    }
    if source.pod.is_empty() && dest.pod.is_empty() {
        return Err(invalid(
            "spec.source.pod",
            if name.is_empty() {
                // Not yet named (the manager generates one later): no double space.
                "Traceflow has neither source nor destination Pod specified".to_string()
            } else {
                format!("Traceflow {name} has neither source nor destination Pod specified")
            },
        ));
    }

    if spec.dropped_only && !spec.live_traffic {
        return Err(invalid(
            "spec.droppedOnly",
            "droppedOnly works only with live-traffic Traceflow",
        ));
    }
    if spec.timeout == 0 {
        spec.timeout = DEFAULT_TIMEOUT;
    }
    if !(1..=MAX_TIMEOUT).contains(&spec.timeout) {
        return Err(invalid(
            "spec.timeout",
            format!(
                "must be between 1 and {MAX_TIMEOUT} seconds (0 means the default, {DEFAULT_TIMEOUT}), got {}",
                spec.timeout
            ),
        ));
    }

    // Destination: exactly one kind.
    let kinds = [
        !dest.pod.is_empty(),
        !dest.service.is_empty(),
        !dest.ip.is_empty(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if kinds > 1 {
        return Err(invalid(
            "spec.destination",
            "pod, service and ip are mutually exclusive; set only one",
        ));
    }
    if kinds == 0 && !spec.live_traffic {
        return Err(invalid(
            "spec.destination",
            "destination is not specified; set pod, service or ip",
        ));
    }
    if (!dest.pod.is_empty() || !dest.service.is_empty()) && dest.namespace.is_empty() {
        return Err(invalid(
            "spec.destination.namespace",
            "is required with a destination pod or service",
        ));
    }

    let packet = spec.packet.clone().unwrap_or_default();
    let ipv6 = packet.ipv6_header.is_some();
    let family = if ipv6 { "IPv6" } else { "IPv4" };
    if !dest.ip.is_empty() {
        let ip = parse_ip("spec.destination.ip", &dest.ip)?;
        if ip.is_ipv6() != ipv6 {
            return Err(invalid(
                "spec.destination.ip",
                format!(
                    "destination IP does not match the IP header family ({family}; set packet.ipv6Header for IPv6)"
                ),
            ));
        }
    }
    if !source.ip.is_empty() {
        let ip = parse_ip("spec.source.ip", &source.ip)?;
        if ip.is_ipv6() != ipv6 {
            return Err(invalid(
                "spec.source.ip",
                format!("source IP does not match the IP header family ({family})"),
            ));
        }
    }
    if !packet.src_ip.is_empty() {
        let ip = parse_ip("spec.packet.srcIP", &packet.src_ip)?;
        if ip.is_ipv6() != ipv6 {
            return Err(invalid(
                "spec.packet.srcIP",
                format!("does not match the IP header family ({family})"),
            ));
        }
    }
    if !packet.dst_ip.is_empty() {
        let ip = parse_ip("spec.packet.dstIP", &packet.dst_ip)?;
        if ip.is_ipv6() != ipv6 {
            return Err(invalid(
                "spec.packet.dstIP",
                format!("does not match the IP header family ({family})"),
            ));
        }
    }

    // Protocol: explicit number, or implied by the transport header.
    let protocol = if let Some(h6) = &packet.ipv6_header {
        check_range("spec.packet.ipv6Header.hopLimit", h6.hop_limit, 0, 255)?;
        match h6.next_header {
            None => None,
            Some(n @ (6 | 17 | 58 | 132)) => Some(n),
            Some(n) => {
                return Err(invalid(
                    "spec.packet.ipv6Header.nextHeader",
                    format!("must be 6 (TCP), 17 (UDP), 58 (ICMPv6) or 132 (SCTP), got {n}"),
                ));
            }
        }
    } else if let Some(h) = &packet.ip_header {
        check_range("spec.packet.ipHeader.ttl", h.ttl, 0, 255)?;
        check_range("spec.packet.ipHeader.flags", h.flags, 0, 7)?;
        match h.protocol {
            0 => None,
            n @ (1 | 6 | 17 | 132) => Some(n),
            n => {
                return Err(invalid(
                    "spec.packet.ipHeader.protocol",
                    format!("must be 1 (ICMP), 6 (TCP), 17 (UDP) or 132 (SCTP), got {n}"),
                ));
            }
        }
    } else {
        None
    };
    let proto_field = if ipv6 {
        "spec.packet.ipv6Header.nextHeader"
    } else {
        "spec.packet.ipHeader.protocol"
    };
    let icmp = if ipv6 { 58 } else { 1 };

    if let Some(th) = &packet.transport_header {
        let n = [
            th.icmp.is_some(),
            th.udp.is_some(),
            th.tcp.is_some(),
            th.sctp.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if n > 1 {
            return Err(invalid(
                "spec.packet.transportHeader",
                "icmp, udp, tcp and sctp are mutually exclusive; set only one",
            ));
        }
        if let Some(sc) = &th.sctp {
            check_port(
                "spec.packet.transportHeader.sctp.srcPort",
                sc.src_port,
                true,
            )?;
            check_port(
                "spec.packet.transportHeader.sctp.dstPort",
                sc.dst_port,
                false,
            )?;
            if protocol.is_some_and(|p| p != 132) {
                return Err(invalid(
                    proto_field,
                    format!(
                        "protocol {} does not match the sctp transport header",
                        protocol.unwrap_or_default()
                    ),
                ));
            }
        }
        if let Some(i) = &th.icmp {
            check_range("spec.packet.transportHeader.icmp.id", i.id, 0, 65535)?;
            check_range(
                "spec.packet.transportHeader.icmp.sequence",
                i.sequence,
                0,
                65535,
            )?;
            if protocol.is_some_and(|p| p != icmp) {
                return Err(invalid(
                    proto_field,
                    format!(
                        "protocol {} does not match the icmp transport header",
                        protocol.unwrap_or_default()
                    ),
                ));
            }
        }
        if let Some(u) = &th.udp {
            check_port("spec.packet.transportHeader.udp.srcPort", u.src_port, true)?;
            check_port("spec.packet.transportHeader.udp.dstPort", u.dst_port, false)?;
            if protocol.is_some_and(|p| p != 17) {
                return Err(invalid(
                    proto_field,
                    format!(
                        "protocol {} does not match the udp transport header",
                        protocol.unwrap_or_default()
                    ),
                ));
            }
        }
        if let Some(t) = &th.tcp {
            check_port("spec.packet.transportHeader.tcp.srcPort", t.src_port, true)?;
            check_port("spec.packet.transportHeader.tcp.dstPort", t.dst_port, false)?;
            if let Some(flags) = t.flags {
                check_tcp_flags(flags)
                    .map_err(|m| invalid("spec.packet.transportHeader.tcp.flags", m))?;
            }
            if protocol.is_some_and(|p| p != 6) {
                return Err(invalid(
                    proto_field,
                    format!(
                        "protocol {} does not match the tcp transport header",
                        protocol.unwrap_or_default()
                    ),
                ));
            }
        }
    }
    Ok(spec)
}

/// Antrea's inventory-backed admission rules 2 and 3 (non-live traces only). `pod` is the
/// source Pod as the cluster last reported it, or `None` when it does not exist.
pub fn check_source_pod(
    spec: &pb::TraceflowSpec,
    pod: Option<&pb::InventoryPod>,
) -> Result<(), Invalid> {
    if spec.live_traffic {
        return Ok(());
    }
    let src = spec.source.clone().unwrap_or_default();
    match pod {
        None => Err(invalid(
            "spec.source.pod",
            format!(
                "requested source Pod {}/{} not found",
                src.namespace, src.pod
            ),
        )),
        Some(p) if p.host_network => Err(invalid(
            "spec.source.pod",
            "using hostNetwork Pod as source in non-live-traffic Traceflow is not supported",
        )),
        Some(_) => Ok(()),
    }
}

/// A cluster name: a DNS-1123 label (lower-case alphanumerics and '-', 1..63).
pub fn check_name(field: &str, name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.' || b == b'_'
        })
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        return Err(invalid(
            field,
            format!(
                "{name:?} is not a valid name: use 1-63 lower-case letters, digits, '-', '.' or '_'"
            ),
        ));
    }
    Ok(())
}

/// An antctl-like name: `<src>-to-<dst>-<5 random lower-case alphanumerics>`.
pub fn generate_name(spec: &pb::TraceflowSpec) -> String {
    use rand::Rng;
    let src = spec.source.clone().unwrap_or_default();
    let dst = spec.destination.clone().unwrap_or_default();
    let s = [src.pod, src.ip]
        .into_iter()
        .find(|x| !x.is_empty())
        .unwrap_or_else(|| "any".into());
    let d = [dst.pod, dst.service, dst.ip]
        .into_iter()
        .find(|x| !x.is_empty())
        .unwrap_or_else(|| "any".into());
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| ALNUM[rng.random_range(0..ALNUM.len())] as char)
        .collect();
    format!("{s}-to-{d}-{suffix}")
        .replace("::", "-")
        .replace(':', "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_spec() -> pb::TraceflowSpec {
        pb::TraceflowSpec {
            source: Some(pb::Source {
                namespace: "default".into(),
                pod: "p0".into(),
                ip: String::new(),
            }),
            destination: Some(pb::Destination {
                namespace: "default".into(),
                pod: "p1".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn err(spec: pb::TraceflowSpec) -> Invalid {
        match validate_spec("t", Some(spec)) {
            Err(e) => e,
            Ok(_) => panic!("expected an error"),
        }
    }

    fn tcp(src: i32, dst: i32, flags: Option<i32>) -> pb::Packet {
        pb::Packet {
            transport_header: Some(pb::TransportHeader {
                tcp: Some(pb::TcpHeader {
                    src_port: src,
                    dst_port: dst,
                    flags,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_timeout_to_20() {
        let s = validate_spec("t", Some(mk_spec())).map(|s| s.timeout);
        assert_eq!(s, Ok(20));
    }

    #[test]
    fn timeout_bounds() {
        let mut s = mk_spec();
        s.timeout = 301;
        assert_eq!(err(s.clone()).field, "spec.timeout");
        s.timeout = -1;
        assert_eq!(err(s.clone()).field, "spec.timeout");
        s.timeout = 300;
        assert!(validate_spec("t", Some(s)).is_ok());
    }

    #[test]
    fn antrea_admission_messages() {
        let mut s = mk_spec();
        s.source = None;
        let e = err(s);
        assert_eq!(
            e.message,
            "source Pod must be specified in non-live-traffic Traceflow"
        );
        let mut s = mk_spec();
        s.live_traffic = true;
        s.source = Some(pb::Source {
            ip: "10.0.0.1".into(),
            ..Default::default()
        });
        s.destination = Some(pb::Destination {
            ip: "10.0.0.2".into(),
            ..Default::default()
        });
        assert_eq!(
            err(s.clone()).message,
            "Traceflow t has neither source nor destination Pod specified"
        );
        let e = validate_spec("", Some(s)).expect_err("no Pod at all");
        assert_eq!(
            e.message,
            "Traceflow has neither source nor destination Pod specified"
        );
        let pod = pb::InventoryPod {
            host_network: true,
            ..Default::default()
        };
        let e = check_source_pod(&mk_spec(), Some(&pod));
        assert!(e.is_err_and(|e| e.message
            == "using hostNetwork Pod as source in non-live-traffic Traceflow is not supported"));
        let e = check_source_pod(&mk_spec(), None);
        assert!(e.is_err_and(|e| e.message == "requested source Pod default/p0 not found"));
    }

    #[test]
    fn destination_is_exclusive() {
        let mut s = mk_spec();
        if let Some(d) = s.destination.as_mut() {
            d.ip = "10.0.0.9".into();
        }
        assert_eq!(err(s).field, "spec.destination");
    }

    #[test]
    fn ip_family_must_match() {
        let mut s = mk_spec();
        s.destination = Some(pb::Destination {
            ip: "fd00::1".into(),
            ..Default::default()
        });
        assert_eq!(err(s.clone()).field, "spec.destination.ip");
        s.packet = Some(pb::Packet {
            ipv6_header: Some(pb::IPv6Header::default()),
            ..Default::default()
        });
        assert!(validate_spec("t", Some(s.clone())).is_ok());
        s.destination = Some(pb::Destination {
            ip: "bogus".into(),
            ..Default::default()
        });
        assert!(err(s).message.contains("not a valid IP"));
    }

    #[test]
    fn sctp_is_ours_with_ports_checked_and_matched() {
        let mut s = mk_spec();
        let sctp = |dst_port| pb::Packet {
            transport_header: Some(pb::TransportHeader {
                sctp: Some(pb::SctpHeader {
                    src_port: 0,
                    dst_port,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        s.packet = Some(sctp(9000));
        assert!(validate_spec("t", Some(s.clone())).is_ok());
        s.packet = Some(sctp(0));
        assert_eq!(
            err(s.clone()).field,
            "spec.packet.transportHeader.sctp.dstPort"
        );
        let mut p = sctp(9000);
        p.ip_header = Some(pb::IpHeader {
            protocol: 6,
            ..Default::default()
        });
        s.packet = Some(p);
        assert!(err(s.clone()).message.contains("sctp transport header"));
        s.packet = Some(pb::Packet {
            ipv6_header: Some(pb::IPv6Header {
                next_header: Some(132),
                ..Default::default()
            }),
            ..Default::default()
        });
        s.destination = Some(pb::Destination {
            ip: "fd00::1".into(),
            ..Default::default()
        });
        assert!(validate_spec("t", Some(s)).is_ok());
    }

    #[test]
    fn ports_and_protocols() {
        let mut s = mk_spec();
        s.packet = Some(tcp(0, 0, None));
        assert_eq!(
            err(s.clone()).field,
            "spec.packet.transportHeader.tcp.dstPort"
        );
        s.packet = Some(tcp(70000, 80, None));
        assert_eq!(
            err(s.clone()).field,
            "spec.packet.transportHeader.tcp.srcPort"
        );
        s.packet = Some(tcp(0, 80, None));
        assert!(validate_spec("t", Some(s.clone())).is_ok());
        let mut p = tcp(0, 80, None);
        p.ip_header = Some(pb::IpHeader {
            protocol: 17,
            ..Default::default()
        });
        s.packet = Some(p);
        assert_eq!(err(s.clone()).field, "spec.packet.ipHeader.protocol");
        s.packet = Some(pb::Packet {
            ip_header: Some(pb::IpHeader {
                protocol: 47,
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(err(s).field, "spec.packet.ipHeader.protocol");
    }

    #[test]
    fn tcp_flag_rules() {
        assert!(check_tcp_flags(0x02).is_ok());
        assert!(check_tcp_flags(0x12).is_ok()); // SYN+ACK
        assert!(check_tcp_flags(0x10).is_ok()); // ACK
        assert!(check_tcp_flags(0x04).is_ok()); // RST
        assert!(check_tcp_flags(0x06).is_err()); // SYN+RST
        assert!(check_tcp_flags(0x03).is_err()); // SYN+FIN
        assert!(check_tcp_flags(0x08).is_err()); // PSH alone
        assert!(check_tcp_flags(0x18).is_err()); // ACK+PSH
        assert!(check_tcp_flags(0x11).is_err()); // ACK+FIN
        assert!(check_tcp_flags(256).is_err());
    }

    #[test]
    fn names_look_like_antctl() {
        let n = generate_name(&mk_spec());
        assert!(n.starts_with("p0-to-p1-"), "{n}");
        assert_eq!(n.len(), "p0-to-p1-".len() + 5);
        assert!(check_name("cluster", "kind-a").is_ok());
        assert!(check_name("cluster", "Bad Name").is_err());
    }
}
