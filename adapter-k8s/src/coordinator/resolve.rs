//! A validated [`TraceSpec`] → the packet the sender Node injects: Antrea's inventory-backed
//! admission checks (reference §2.2), its failure reasons (§2.8) and packet defaults (§3.2).
//! The spec's own rules (one destination kind, families, ports, timeouts) were applied by
//! `TraceSpec::try_from` at the edge; this module only looks names up.
//!
//! Pure: reads an [`Index`] and returns either a [`Resolved`] trace or the failure reason the
//! trace ends with. One function per destination kind: [`to_ip`], [`to_pod`], [`to_service`].

use std::net::IpAddr;

use traceflow_core::{
    Destination, Family, PodRef, Source, TraceSpec, Transport,
    limits::{DEFAULT_TCP_FLAGS, DEFAULT_TTL, PROTO_ICMP, PROTO_SCTP, PROTO_TCP, PROTO_UDP},
    reasons,
};
use traceflow_proto::v1 as pb;

use crate::inventory::Index;

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
    #[error("{}", reasons::node_error(node, error))]
    Node { node: String, error: String },
}

fn node_err(node: &str, error: impl Into<String>) -> ResolveError {
    ResolveError::Node {
        node: node.to_string(),
        error: error.into(),
    }
}

fn article(family: Family) -> &'static str {
    if family.is_v6() { "an IPv6" } else { "an IPv4" }
}

/// The first address of `ips` in the wanted family.
pub fn first_of_family(ips: &[String], family: Family) -> Option<IpAddr> {
    ips.iter()
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .find(|ip| ip.is_ipv6() == family.is_v6())
}

/// Where an injected packet goes: its address and, for a Service, the port it lends.
struct Target<'a> {
    ip: IpAddr,
    service_port: Option<&'a pb::ServicePort>,
}

/// Resolves an injected (non-live) `spec` against the inventory.
pub fn resolve(spec: &TraceSpec, index: &Index) -> Result<Resolved, ResolveError> {
    // Live traffic is planned by `live::plan`; nothing is injected for it.
    let Source::Pod(src) = &spec.source else {
        return Err(ResolveError::Admission(
            "source Pod must be specified in non-live-traffic Traceflow".to_string(),
        ));
    };
    // §2.2 admission rules 2 and 3.
    let host_network = index.pod(&src.namespace, &src.name).map(|p| p.host_network);
    // The message the manager's API gives for the same check, field included.
    spec.check_source_pod(host_network)
        .map_err(|e| ResolveError::Admission(e.to_string()))?;
    let Some(src_pod) = index.pod(&src.namespace, &src.name) else {
        return Err(ResolveError::Admission(format!(
            "requested source Pod {src} not found"
        )));
    };
    let node = src_pod.node.clone();
    if node.is_empty() {
        return Err(ResolveError::Admission(format!(
            "source Pod {src} is not scheduled to a Node"
        )));
    }
    let family = spec.family;
    let Some(src_ip) = first_of_family(&src_pod.ips, family) else {
        return Err(node_err(
            &node,
            format!("source Pod does not have {} address", article(family)),
        ));
    };
    let target = match &spec.destination {
        Destination::Ip(ip) => to_ip(*ip),
        Destination::Pod(pod) => to_pod(pod, family, &node, index)?,
        Destination::Service(svc) => to_service(svc, family, &node, index)?,
        Destination::Unspecified => return Err(node_err(&node, "destination is not specified")),
    };
    let packet = pb::InjectPacket {
        src_pod_namespace: src.namespace.clone(),
        src_pod_name: src.name.clone(),
        src_ip: src_ip.to_string(),
        dst_ip: target.ip.to_string(),
        ipv6: family.is_v6(),
        ..packet_fields(spec, target.service_port)
    };
    Ok(Resolved {
        sender_node: node,
        ipv6: family.is_v6(),
        packet,
    })
}

/// An IP destination: the spec already checked its family.
fn to_ip<'a>(ip: IpAddr) -> Target<'a> {
    Target {
        ip,
        service_port: None,
    }
}

/// A Pod destination: its address of the traced family.
fn to_pod<'a>(
    pod: &PodRef,
    family: Family,
    node: &str,
    index: &'a Index,
) -> Result<Target<'a>, ResolveError> {
    let Some(p) = index.pod(&pod.namespace, &pod.name) else {
        return Err(node_err(
            node,
            format!(
                "failed to get the destination Pod: pods \"{}\" not found",
                pod.name
            ),
        ));
    };
    let ip = first_of_family(&p.ips, family).ok_or_else(|| {
        node_err(
            node,
            format!("destination Pod does not have {} address", article(family)),
        )
    })?;
    Ok(Target {
        ip,
        service_port: None,
    })
}

/// A Service destination: its ClusterIP of the traced family and its first port.
fn to_service<'a>(
    svc: &PodRef,
    family: Family,
    node: &str,
    index: &'a Index,
) -> Result<Target<'a>, ResolveError> {
    let Some(s) = index.service(&svc.namespace, &svc.name) else {
        return Err(node_err(
            node,
            format!(
                "failed to get the destination Service: services \"{}\" not found",
                svc.name
            ),
        ));
    };
    if s.cluster_ips.is_empty() {
        return Err(node_err(
            node,
            "destination Service does not have a ClusterIP",
        ));
    }
    if s.cluster_ips.iter().all(|ip| ip.parse::<IpAddr>().is_err()) {
        return Err(node_err(
            node,
            "destination Service does not have a valid ClusterIP",
        ));
    }
    let ip = first_of_family(&s.cluster_ips, family).ok_or_else(|| {
        node_err(
            node,
            format!(
                "destination Service does not have {} ClusterIP",
                article(family)
            ),
        )
    })?;
    let Some(port) = s.ports.first() else {
        return Err(node_err(
            node,
            "destination Service does not have any ports",
        ));
    };
    Ok(Target {
        ip,
        service_port: Some(port),
    })
}

/// Protocol, ports, flags and TTL of the injected packet (§3.2): the spec's transport; else a
/// Service destination's first port lends its protocol and port; else ICMP of the family.
fn packet_fields(spec: &TraceSpec, service_port: Option<&pb::ServicePort>) -> pb::InjectPacket {
    let mut packet = pb::InjectPacket::default();
    match spec.transport {
        Transport::Tcp {
            src_port,
            dst_port,
            flags,
        } => {
            packet.src_port = i32::from(src_port);
            packet.dst_port = i32::from(dst_port);
            packet.tcp_flags = i32::from(flags.unwrap_or(DEFAULT_TCP_FLAGS));
        }
        Transport::Udp { src_port, dst_port } | Transport::Sctp { src_port, dst_port } => {
            packet.src_port = i32::from(src_port);
            packet.dst_port = i32::from(dst_port);
        }
        Transport::Icmp { id, sequence } => {
            packet.icmp_id = i32::from(id);
            packet.icmp_sequence = i32::from(sequence);
        }
        Transport::Protocol(_) => {}
    }
    let mut protocol = spec.transport.protocol(spec.family);
    if let Some(port) = service_port {
        if protocol == 0 {
            protocol = match port.protocol.as_str() {
                "UDP" => PROTO_UDP,
                "SCTP" => PROTO_SCTP,
                _ => PROTO_TCP,
            };
            if protocol == PROTO_TCP {
                packet.tcp_flags = i32::from(DEFAULT_TCP_FLAGS);
            }
        }
        if packet.dst_port == 0 && matches!(protocol, PROTO_TCP | PROTO_UDP | PROTO_SCTP) {
            packet.dst_port = port.port;
        }
    }
    if protocol == 0 {
        protocol = Transport::Protocol(PROTO_ICMP).protocol(spec.family);
    }
    packet.protocol = i32::from(protocol);
    packet.ttl = i32::from(if spec.ttl == 0 { DEFAULT_TTL } else { spec.ttl });
    packet.ip_flags = i32::from(spec.ip_flags);
    packet
}

/// The Node of an injected trace's destination Pod, named or by its IP: the Node whose agent
/// reports the receiving end. `None` for Services, external IPs and unknown Pods.
pub fn destination_node<'a>(spec: &TraceSpec, index: &'a Index) -> Option<&'a str> {
    match &spec.destination {
        traceflow_core::Destination::Pod(p) => index.pod(&p.namespace, &p.name),
        traceflow_core::Destination::Ip(ip) => index.pod_by_ip(*ip),
        _ => None,
    }
    .map(|p| p.node.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::convert::fixtures::*;
    use traceflow_core::limits::PROTO_ICMPV6;

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

    /// Converts at the edge as the coordinator's callers do, then resolves; the error is the
    /// status reason either step gives.
    fn run(spec: pb::TraceflowSpec, idx: &Index) -> Result<Resolved, String> {
        let spec = TraceSpec::try_from(spec).map_err(|e| e.to_string())?;
        resolve(&spec, idx).map_err(|e| e.to_string())
    }

    fn reason(r: Result<Resolved, String>) -> String {
        r.err().unwrap_or_else(|| "ok".into())
    }

    #[test]
    fn pod_to_pod_defaults_to_icmp_ttl_64() -> Result<(), String> {
        let r = run(
            spec(("default", "p0"), to_pod("default", "p1"), None),
            &index(),
        )?;
        assert_eq!(r.sender_node, "n1");
        assert_eq!(
            (r.packet.src_ip.as_str(), r.packet.dst_ip.as_str()),
            ("10.10.1.2", "10.10.1.3")
        );
        assert_eq!(r.packet.protocol, i32::from(PROTO_ICMP));
        assert_eq!(r.packet.ttl, 64);
        assert!(!r.ipv6);
        Ok(())
    }

    #[test]
    fn tcp_defaults_to_syn_and_keeps_ttl_and_flags() -> Result<(), String> {
        let th = |udp: Option<pb::UdpHeader>| pb::Packet {
            ip_header: Some(pb::IpHeader {
                protocol: 0,
                ttl: 5,
                flags: 2,
            }),
            transport_header: Some(pb::TransportHeader {
                tcp: Some(pb::TcpHeader {
                    src_port: 0,
                    dst_port: 80,
                    flags: None,
                }),
                udp,
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = run(
            spec(("default", "p0"), to_pod("web", "api"), Some(th(None))),
            &index(),
        )?;
        assert_eq!(
            (r.packet.protocol, r.packet.dst_port, r.packet.tcp_flags),
            (i32::from(PROTO_TCP), 80, i32::from(DEFAULT_TCP_FLAGS))
        );
        assert_eq!((r.packet.ttl, r.packet.ip_flags), (5, 2));
        // Two transport headers: refused at the edge, naming the field.
        let udp = Some(pb::UdpHeader {
            src_port: 1,
            dst_port: 53,
        });
        let e = reason(run(
            spec(("default", "p0"), to_pod("web", "api"), Some(th(udp))),
            &index(),
        ));
        assert!(e.starts_with("spec.packet.transportHeader:"), "{e}");
        Ok(())
    }

    #[test]
    fn ip_header_protocol_is_used_without_transport_header() -> Result<(), String> {
        let packet = pb::Packet {
            ip_header: Some(pb::IpHeader {
                protocol: 132,
                ..Default::default()
            }),
            ..Default::default()
        };
        // To a Service, which lends its port (injected SCTP to a Pod needs one); the protocol
        // still wins over the Service port's TCP.
        let dst = pb::Destination {
            namespace: "web".into(),
            service: "api".into(),
            ..Default::default()
        };
        let r = run(spec(("default", "p0"), dst, Some(packet)), &index())?;
        assert_eq!(r.packet.protocol, i32::from(PROTO_SCTP));
        Ok(())
    }

    #[test]
    fn sctp_header_gives_protocol_and_ports() -> Result<(), String> {
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
        let r = run(spec(("default", "p0"), dst, Some(packet)), &index())?;
        assert_eq!(
            (
                r.ipv6,
                r.packet.protocol,
                r.packet.src_port,
                r.packet.dst_port
            ),
            (true, i32::from(PROTO_SCTP), 5000, 9000)
        );
        Ok(())
    }

    #[test]
    fn ipv6_header_presence_selects_ipv6_and_icmpv6() -> Result<(), String> {
        let packet = pb::Packet {
            ipv6_header: Some(pb::IPv6Header::default()),
            ..Default::default()
        };
        let dst = pb::Destination {
            ip: "fd00::9".into(),
            ..Default::default()
        };
        let r = run(spec(("default", "p0"), dst, Some(packet)), &index())?;
        assert!(r.ipv6);
        assert_eq!(r.packet.src_ip, "fd00::2");
        assert_eq!(r.packet.protocol, i32::from(PROTO_ICMPV6));
        assert_eq!(r.packet.ttl, 64);
        Ok(())
    }

    #[test]
    fn service_destination_takes_cluster_ip_and_first_port() -> Result<(), String> {
        let dst = pb::Destination {
            namespace: "web".into(),
            service: "api".into(),
            ..Default::default()
        };
        let r = run(spec(("default", "p0"), dst, None), &index())?;
        assert_eq!(r.packet.dst_ip, "10.96.0.10");
        assert_eq!(
            (r.packet.protocol, r.packet.dst_port, r.packet.tcp_flags),
            (i32::from(PROTO_TCP), 80, i32::from(DEFAULT_TCP_FLAGS))
        );
        let dst = pb::Destination {
            namespace: "web".into(),
            service: "dns".into(),
            ..Default::default()
        };
        let r = run(spec(("default", "p0"), dst, None), &index())?;
        assert_eq!(
            (r.packet.protocol, r.packet.dst_port),
            (i32::from(PROTO_UDP), 53)
        );
        Ok(())
    }

    #[test]
    fn several_destination_kinds_are_refused_at_the_edge() {
        let dst = pb::Destination {
            namespace: "web".into(),
            pod: "api".into(),
            service: "dns".into(),
            ip: "192.0.2.10".into(),
        };
        assert_eq!(
            reason(run(spec(("default", "p0"), dst, None), &index())),
            "spec.destination: pod, service and ip are mutually exclusive; set only one"
        );
    }

    #[test]
    fn admission_reasons_are_antreas() {
        let idx = index();
        assert_eq!(
            reason(run(spec(("", ""), to_pod("default", "p1"), None), &idx)),
            "spec.source.pod: source Pod must be specified in non-live-traffic Traceflow"
        );
        assert_eq!(
            reason(run(
                spec(("default", "nope"), to_pod("default", "p1"), None),
                &idx
            )),
            "spec.source.pod: requested source Pod default/nope not found"
        );
        assert_eq!(
            reason(run(
                spec(("kube-system", "hn"), to_pod("default", "p1"), None),
                &idx
            )),
            "spec.source.pod: using hostNetwork Pod as source in non-live-traffic Traceflow is not supported"
        );
        // A live spec without a source Pod has nothing to inject.
        let mut live = spec(("", ""), to_pod("default", "p1"), None);
        live.live_traffic = true;
        assert_eq!(
            reason(run(live, &idx)),
            "source Pod must be specified in non-live-traffic Traceflow"
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
        ];
        for (dst, want) in cases {
            assert_eq!(reason(run(spec(("default", "p0"), dst, None), &idx)), want);
        }
        // Address errors are the spec's, found at the edge.
        let cases = [
            ("bogus", "spec.destination.ip: not a valid IP address"),
            (
                "fd00::1",
                "spec.destination.ip: destination IP does not match the IP header family (IPv4; set packet.ipv6Header for IPv6)",
            ),
        ];
        for (ip, want) in cases {
            let dst = pb::Destination {
                ip: ip.into(),
                ..Default::default()
            };
            assert_eq!(reason(run(spec(("default", "p0"), dst, None), &idx)), want);
        }
        let v6 = pb::Packet {
            ipv6_header: Some(pb::IPv6Header::default()),
            ..Default::default()
        };
        assert_eq!(
            reason(run(
                spec(("default", "p1"), to_pod("default", "p0"), Some(v6)),
                &idx
            )),
            "Node: n1, error: source Pod does not have an IPv6 address"
        );
    }
}
