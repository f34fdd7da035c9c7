//! Spec → the packet the sender Node injects: Antrea's admission checks (reference §2.2), its
//! destination precedence and failure reasons (§2.8) and its packet defaults (§3.2).
//!
//! Pure: reads an [`Index`] and returns either a [`Resolved`] trace or the failure reason the
//! trace ends with.

use std::net::IpAddr;

use traceflow_proto::v1 as pb;

use crate::inventory::Index;

pub const PROTO_ICMP: i32 = 1;
pub const PROTO_TCP: i32 = 6;
pub const PROTO_UDP: i32 = 17;
pub const PROTO_ICMPV6: i32 = 58;
pub const PROTO_SCTP: i32 = 132;
/// TCP SYN, the default flags of an injected TCP packet.
pub const TCP_SYN: i32 = 2;
/// TTL / hop limit of an injected packet when the spec leaves it 0.
pub const DEFAULT_TTL: i32 = 64;

/// A trace ready to inject.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The Node hosting the source Pod: it injects and reports as `sender`.
    pub sender_node: String,
    pub ipv6: bool,
    /// Everything but `trace_uid` and `trace_id`; ports 0 mean "pick one" (see coordinator).
    pub packet: pb::InjectPacket,
}

/// Why a trace cannot run; `Display` is the status `reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Antrea's admission webhook would have refused it (§2.2); the message is Antrea's.
    #[error("{0}")]
    Admission(String),
    /// An agent-side failure in Antrea (§2.8), attributed to the sender Node.
    #[error("Node: {node}, error: {error}")]
    Node { node: String, error: String },
}

fn node_err(node: &str, error: impl Into<String>) -> ResolveError {
    ResolveError::Node {
        node: node.to_string(),
        error: error.into(),
    }
}

fn article(ipv6: bool) -> &'static str {
    if ipv6 { "an IPv6" } else { "an IPv4" }
}

/// The first address of `ips` in the wanted family.
fn first_of_family(ips: &[String], ipv6: bool) -> Option<IpAddr> {
    ips.iter()
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .find(|ip| ip.is_ipv6() == ipv6)
}

/// Resolves `spec` against the inventory. `name` is the trace's name (for Antrea's
/// "neither source nor destination" message).
pub fn resolve(
    spec: &pb::TraceflowSpec,
    name: &str,
    index: &Index,
) -> Result<Resolved, ResolveError> {
    let src = spec.source.clone().unwrap_or_default();
    let dst = spec.destination.clone().unwrap_or_default();
    // Live traffic is planned by `live::plan`; nothing is injected for it.
    if spec.live_traffic {
        return Err(ResolveError::Admission(format!(
            "Traceflow {name} is a live-traffic Traceflow; it has no packet to inject"
        )));
    }
    // §2.2 admission, in Antrea's order.
    if src.namespace.is_empty() || src.pod.is_empty() {
        return Err(ResolveError::Admission(
            "source Pod must be specified in non-live-traffic Traceflow".to_string(),
        ));
    }
    let Some(src_pod) = index.pod(&src.namespace, &src.pod) else {
        return Err(ResolveError::Admission(format!(
            "requested source Pod {}/{} not found",
            src.namespace, src.pod
        )));
    };
    if src_pod.host_network {
        return Err(ResolveError::Admission(
            "using hostNetwork Pod as source in non-live-traffic Traceflow is not supported"
                .to_string(),
        ));
    }
    let node = src_pod.node.clone();
    if node.is_empty() {
        return Err(ResolveError::Admission(format!(
            "source Pod {}/{} is not scheduled to a Node",
            src.namespace, src.pod
        )));
    }

    let packet_spec = spec.packet.clone().unwrap_or_default();
    let ipv6 = packet_spec.ipv6_header.is_some();
    let Some(src_ip) = first_of_family(&src_pod.ips, ipv6) else {
        return Err(node_err(
            &node,
            format!("source Pod does not have {} address", article(ipv6)),
        ));
    };

    // Destination: ip > pod > service (§1.2).
    let mut service_port: Option<&pb::ServicePort> = None;
    let dst_ip: IpAddr = if !dst.ip.is_empty() {
        let Ok(ip) = dst.ip.parse::<IpAddr>() else {
            return Err(node_err(&node, "invalid destination IP address"));
        };
        if ip.is_ipv6() != ipv6 {
            return Err(node_err(
                &node,
                "destination IP does not match the IP header family",
            ));
        }
        ip
    } else if !dst.pod.is_empty() {
        let Some(pod) = index.pod(&dst.namespace, &dst.pod) else {
            return Err(node_err(
                &node,
                format!(
                    "failed to get the destination Pod: pods \"{}\" not found",
                    dst.pod
                ),
            ));
        };
        first_of_family(&pod.ips, ipv6).ok_or_else(|| {
            node_err(
                &node,
                format!("destination Pod does not have {} address", article(ipv6)),
            )
        })?
    } else if !dst.service.is_empty() {
        let Some(svc) = index.service(&dst.namespace, &dst.service) else {
            return Err(node_err(
                &node,
                format!(
                    "failed to get the destination Service: services \"{}\" not found",
                    dst.service
                ),
            ));
        };
        if svc.cluster_ips.is_empty() {
            return Err(node_err(
                &node,
                "destination Service does not have a ClusterIP",
            ));
        }
        if svc
            .cluster_ips
            .iter()
            .all(|ip| ip.parse::<IpAddr>().is_err())
        {
            return Err(node_err(
                &node,
                "destination Service does not have a valid ClusterIP",
            ));
        }
        let ip = first_of_family(&svc.cluster_ips, ipv6).ok_or_else(|| {
            node_err(
                &node,
                format!(
                    "destination Service does not have {} ClusterIP",
                    article(ipv6)
                ),
            )
        })?;
        service_port = svc.ports.first();
        if service_port.is_none() {
            return Err(node_err(
                &node,
                "destination Service does not have any ports",
            ));
        }
        ip
    } else {
        return Err(node_err(&node, "destination is not specified"));
    };

    let mut packet = pb::InjectPacket {
        src_pod_namespace: src.namespace.clone(),
        src_pod_name: src.pod.clone(),
        src_ip: src_ip.to_string(),
        dst_ip: dst_ip.to_string(),
        ipv6,
        ..Default::default()
    };
    // §3.2 protocol precedence: tcp > udp > (ours) sctp > icmp > ipHeader.protocol /
    // ipv6Header.nextHeader.
    let transport = packet_spec.transport_header.unwrap_or_default();
    if let Some(tcp) = transport.tcp {
        packet.protocol = PROTO_TCP;
        packet.src_port = tcp.src_port;
        packet.dst_port = tcp.dst_port;
        packet.tcp_flags = tcp.flags.unwrap_or(TCP_SYN);
    } else if let Some(udp) = transport.udp {
        packet.protocol = PROTO_UDP;
        packet.src_port = udp.src_port;
        packet.dst_port = udp.dst_port;
    } else if let Some(sctp) = transport.sctp {
        packet.protocol = PROTO_SCTP;
        packet.src_port = sctp.src_port;
        packet.dst_port = sctp.dst_port;
    } else if let Some(icmp) = transport.icmp {
        packet.protocol = PROTO_ICMP;
        packet.icmp_id = icmp.id;
        packet.icmp_sequence = icmp.sequence;
    } else if ipv6 {
        packet.protocol = packet_spec
            .ipv6_header
            .and_then(|h| h.next_header)
            .unwrap_or(0);
    } else {
        packet.protocol = packet_spec.ip_header.map_or(0, |h| h.protocol);
    }
    // A Service destination lends its first port's protocol and port unless the spec set them.
    if let Some(port) = service_port {
        if packet.protocol == 0 {
            packet.protocol = match port.protocol.as_str() {
                "UDP" => PROTO_UDP,
                "SCTP" => PROTO_SCTP,
                _ => PROTO_TCP,
            };
            if packet.protocol == PROTO_TCP {
                packet.tcp_flags = TCP_SYN;
            }
        }
        if packet.dst_port == 0 && matches!(packet.protocol, PROTO_TCP | PROTO_UDP | PROTO_SCTP) {
            packet.dst_port = port.port;
        }
    }
    if packet.protocol == 0 {
        packet.protocol = PROTO_ICMP;
    }
    // ICMP follows the family.
    if ipv6 && packet.protocol == PROTO_ICMP {
        packet.protocol = PROTO_ICMPV6;
    } else if !ipv6 && packet.protocol == PROTO_ICMPV6 {
        packet.protocol = PROTO_ICMP;
    }
    if ipv6 {
        packet.ttl = packet_spec.ipv6_header.map_or(0, |h| h.hop_limit);
    } else {
        let h = packet_spec.ip_header.unwrap_or_default();
        packet.ttl = h.ttl;
        packet.ip_flags = h.flags;
    }
    if packet.ttl == 0 {
        packet.ttl = DEFAULT_TTL;
    }
    Ok(Resolved {
        sender_node: node,
        ipv6,
        packet,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::convert::fixtures::*;

    fn index() -> Index {
        let mut hn = mk_pod("kube-system", "hn", "n1", &["192.168.77.1"]);
        if let Some(s) = hn.spec.as_mut() {
            s.host_network = Some(true);
        }
        let pods = [
            mk_pod("default", "p0", "n1", &["10.10.1.2", "fd00::2"]),
            mk_pod("default", "p1", "n1", &["10.10.1.3"]),
            mk_pod("web", "api", "n2", &["10.10.2.2"]),
            hn,
        ];
        let services = [
            mk_service("web", "api", &["10.96.0.10"], &[("TCP", 80), ("UDP", 53)]),
            mk_service("web", "dns", &["10.96.0.11"], &[("UDP", 53)]),
            mk_service("web", "headless", &["None"], &[("TCP", 80)]),
            mk_service("web", "noports", &["10.96.0.12"], &[]),
        ];
        let mut idx = Index::new();
        for o in objects(&two_nodes(), &pods, &services) {
            idx.apply(o);
        }
        idx
    }

    fn spec(
        src: (&str, &str),
        dst: pb::Destination,
        packet: Option<pb::Packet>,
    ) -> pb::TraceflowSpec {
        pb::TraceflowSpec {
            source: Some(pb::Source {
                namespace: src.0.into(),
                pod: src.1.into(),
                ip: String::new(),
            }),
            destination: Some(dst),
            packet,
            ..Default::default()
        }
    }

    fn to_pod(ns: &str, pod: &str) -> pb::Destination {
        pb::Destination {
            namespace: ns.into(),
            pod: pod.into(),
            ..Default::default()
        }
    }

    fn reason(r: Result<Resolved, ResolveError>) -> String {
        match r {
            Ok(_) => "ok".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn pod_to_pod_defaults_to_icmp_ttl_64() -> Result<(), ResolveError> {
        let r = resolve(
            &spec(("default", "p0"), to_pod("default", "p1"), None),
            "t",
            &index(),
        )?;
        assert_eq!(r.sender_node, "n1");
        assert_eq!(
            (r.packet.src_ip.as_str(), r.packet.dst_ip.as_str()),
            ("10.10.1.2", "10.10.1.3")
        );
        assert_eq!(r.packet.protocol, PROTO_ICMP);
        assert_eq!(r.packet.ttl, 64);
        assert!(!r.ipv6);
        Ok(())
    }

    #[test]
    fn tcp_wins_over_udp_and_ip_protocol_and_defaults_to_syn() -> Result<(), ResolveError> {
        let packet = pb::Packet {
            ip_header: Some(pb::IpHeader {
                protocol: 17,
                ttl: 5,
                flags: 2,
            }),
            transport_header: Some(pb::TransportHeader {
                tcp: Some(pb::TcpHeader {
                    src_port: 0,
                    dst_port: 80,
                    flags: None,
                }),
                udp: Some(pb::UdpHeader {
                    src_port: 1,
                    dst_port: 53,
                }),
                icmp: None,
                sctp: Some(pb::SctpHeader {
                    src_port: 2,
                    dst_port: 9000,
                }),
            }),
            ..Default::default()
        };
        let r = resolve(
            &spec(("default", "p0"), to_pod("web", "api"), Some(packet)),
            "t",
            &index(),
        )?;
        assert_eq!(
            (r.packet.protocol, r.packet.dst_port, r.packet.tcp_flags),
            (PROTO_TCP, 80, TCP_SYN)
        );
        assert_eq!((r.packet.ttl, r.packet.ip_flags), (5, 2));
        Ok(())
    }

    #[test]
    fn ip_header_protocol_is_used_without_transport_header() -> Result<(), ResolveError> {
        let packet = pb::Packet {
            ip_header: Some(pb::IpHeader {
                protocol: 132,
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = resolve(
            &spec(("default", "p0"), to_pod("default", "p1"), Some(packet)),
            "t",
            &index(),
        )?;
        assert_eq!(r.packet.protocol, PROTO_SCTP);
        Ok(())
    }

    #[test]
    fn sctp_header_gives_protocol_and_ports() -> Result<(), ResolveError> {
        let packet = pb::Packet {
            ipv6_header: Some(pb::IPv6Header::default()),
            transport_header: Some(pb::TransportHeader {
                sctp: Some(pb::SctpHeader {
                    src_port: 5000,
                    dst_port: 9000,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let dst = pb::Destination {
            ip: "fd00::9".into(),
            ..Default::default()
        };
        let r = resolve(&spec(("default", "p0"), dst, Some(packet)), "t", &index())?;
        assert_eq!(
            (
                r.ipv6,
                r.packet.protocol,
                r.packet.src_port,
                r.packet.dst_port
            ),
            (true, PROTO_SCTP, 5000, 9000)
        );
        Ok(())
    }

    #[test]
    fn ipv6_header_presence_selects_ipv6_and_icmpv6() -> Result<(), ResolveError> {
        let packet = pb::Packet {
            ipv6_header: Some(pb::IPv6Header::default()),
            ..Default::default()
        };
        let dst = pb::Destination {
            ip: "fd00::9".into(),
            ..Default::default()
        };
        let r = resolve(&spec(("default", "p0"), dst, Some(packet)), "t", &index())?;
        assert!(r.ipv6);
        assert_eq!(r.packet.src_ip, "fd00::2");
        assert_eq!(r.packet.protocol, PROTO_ICMPV6);
        assert_eq!(r.packet.ttl, 64);
        Ok(())
    }

    #[test]
    fn service_destination_takes_cluster_ip_and_first_port() -> Result<(), ResolveError> {
        let dst = pb::Destination {
            namespace: "web".into(),
            service: "api".into(),
            ..Default::default()
        };
        let r = resolve(&spec(("default", "p0"), dst, None), "t", &index())?;
        assert_eq!(r.packet.dst_ip, "10.96.0.10");
        assert_eq!(
            (r.packet.protocol, r.packet.dst_port, r.packet.tcp_flags),
            (PROTO_TCP, 80, TCP_SYN)
        );
        let dst = pb::Destination {
            namespace: "web".into(),
            service: "dns".into(),
            ..Default::default()
        };
        let r = resolve(&spec(("default", "p0"), dst, None), "t", &index())?;
        assert_eq!((r.packet.protocol, r.packet.dst_port), (PROTO_UDP, 53));
        Ok(())
    }

    #[test]
    fn destination_ip_beats_pod_beats_service() -> Result<(), ResolveError> {
        let dst = pb::Destination {
            namespace: "web".into(),
            pod: "api".into(),
            service: "dns".into(),
            ip: "192.0.2.10".into(),
        };
        let r = resolve(&spec(("default", "p0"), dst.clone(), None), "t", &index())?;
        assert_eq!(r.packet.dst_ip, "192.0.2.10");
        let r = resolve(
            &spec(
                ("default", "p0"),
                pb::Destination {
                    ip: String::new(),
                    ..dst
                },
                None,
            ),
            "t",
            &index(),
        )?;
        assert_eq!(r.packet.dst_ip, "10.10.2.2");
        Ok(())
    }

    #[test]
    fn admission_reasons_are_antreas() {
        let idx = index();
        assert_eq!(
            reason(resolve(
                &spec(("", ""), to_pod("default", "p1"), None),
                "t",
                &idx
            )),
            "source Pod must be specified in non-live-traffic Traceflow"
        );
        assert_eq!(
            reason(resolve(
                &spec(("default", "nope"), to_pod("default", "p1"), None),
                "t",
                &idx
            )),
            "requested source Pod default/nope not found"
        );
        assert_eq!(
            reason(resolve(
                &spec(("kube-system", "hn"), to_pod("default", "p1"), None),
                "t",
                &idx
            )),
            "using hostNetwork Pod as source in non-live-traffic Traceflow is not supported"
        );
        let live = pb::TraceflowSpec {
            live_traffic: true,
            ..Default::default()
        };
        assert_eq!(
            reason(resolve(&live, "t1", &idx)),
            "Traceflow t1 is a live-traffic Traceflow; it has no packet to inject"
        );
    }

    #[test]
    fn node_failure_reasons_are_antreas() {
        let idx = index();
        let cases = [
            (
                to_pod("default", "ghost"),
                "Node: n1, error: failed to get the destination Pod: pods \"ghost\" not found",
            ),
            (
                pb::Destination {
                    ip: "bogus".into(),
                    ..Default::default()
                },
                "Node: n1, error: invalid destination IP address",
            ),
            (
                pb::Destination {
                    ip: "fd00::1".into(),
                    ..Default::default()
                },
                "Node: n1, error: destination IP does not match the IP header family",
            ),
            (
                pb::Destination {
                    namespace: "web".into(),
                    service: "headless".into(),
                    ..Default::default()
                },
                "Node: n1, error: destination Service does not have a valid ClusterIP",
            ),
            (
                pb::Destination {
                    namespace: "web".into(),
                    service: "noports".into(),
                    ..Default::default()
                },
                "Node: n1, error: destination Service does not have any ports",
            ),
            (
                pb::Destination {
                    namespace: "web".into(),
                    service: "x".into(),
                    ..Default::default()
                },
                "Node: n1, error: failed to get the destination Service: services \"x\" not found",
            ),
            (
                pb::Destination::default(),
                "Node: n1, error: destination is not specified",
            ),
        ];
        for (dst, want) in cases {
            assert_eq!(
                reason(resolve(&spec(("default", "p0"), dst, None), "t", &idx)),
                want
            );
        }
        let v6 = pb::Packet {
            ipv6_header: Some(pb::IPv6Header::default()),
            ..Default::default()
        };
        assert_eq!(
            reason(resolve(
                &spec(("default", "p1"), to_pod("default", "p0"), Some(v6)),
                "t",
                &idx
            )),
            "Node: n1, error: source Pod does not have an IPv6 address"
        );
    }
}
