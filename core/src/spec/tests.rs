use proptest::prelude::*;

use super::*;

fn mk_spec() -> pb::TraceflowSpec {
    crate::fixtures::pod_to_pod("p0", "p1")
}

fn err(spec: pb::TraceflowSpec) -> Invalid {
    match TraceSpec::named("t", spec) {
        Err(e) => e,
        Ok(_) => panic!("expected an error"),
    }
}

fn ok(spec: pb::TraceflowSpec) -> TraceSpec {
    match TraceSpec::try_from(spec) {
        Ok(s) => s,
        Err(e) => panic!("expected a valid spec: {e}"),
    }
}

use crate::fixtures::tcp;

#[test]
fn defaults_timeout_to_20_and_keeps_it_in_the_wire_form() {
    let s = ok(mk_spec());
    assert_eq!(s.timeout_secs(), 20);
    assert_eq!(s.proto().timeout, 20);
    assert_eq!(s.family, Family::V4);
    assert_eq!(s.transport, Transport::Protocol(0));
    assert_eq!(
        s.destination,
        Destination::Pod(PodRef {
            namespace: "default".into(),
            name: "p1".into()
        })
    );
}

#[test]
fn timeout_bounds() {
    let mut s = mk_spec();
    for bad in [301, -1, 9999, i32::MAX] {
        s.timeout = bad;
        assert_eq!(err(s.clone()).field, "spec.timeout");
    }
    s.timeout = 300;
    assert_eq!(ok(s).timeout_secs(), 300);
}

#[test]
fn antrea_admission_messages() {
    let mut s = mk_spec();
    s.source = None;
    assert_eq!(
        err(s).message,
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
    let e = TraceSpec::try_from(s).expect_err("no Pod at all");
    assert_eq!(
        e.message,
        "Traceflow has neither source nor destination Pod specified"
    );
    let spec = ok(mk_spec());
    let e = spec.check_source_pod(Some(true));
    assert!(e.is_err_and(|e| e.message
        == "using hostNetwork Pod as source in non-live-traffic Traceflow is not supported"));
    let e = spec.check_source_pod(None);
    assert!(e.is_err_and(|e| e.message == "requested source Pod default/p0 not found"));
    assert!(spec.check_source_pod(Some(false)).is_ok());
}

#[test]
fn dropped_only_needs_live_traffic() {
    let mut s = mk_spec();
    s.dropped_only = true;
    assert_eq!(err(s.clone()).field, "spec.droppedOnly");
    s.live_traffic = true;
    assert!(ok(s).dropped_only);
}

#[test]
fn destination_is_exclusive_and_required() {
    let mut s = mk_spec();
    if let Some(d) = s.destination.as_mut() {
        d.ip = "10.0.0.9".into();
    }
    assert_eq!(err(s).field, "spec.destination");
    let mut s = mk_spec();
    s.destination = None;
    assert_eq!(err(s.clone()).field, "spec.destination");
    // Live traffic from a Pod may leave it open.
    s.live_traffic = true;
    assert_eq!(ok(s).destination, Destination::Unspecified);
    let mut s = mk_spec();
    s.destination = Some(pb::Destination {
        service: "web".into(),
        ..Default::default()
    });
    assert_eq!(err(s).field, "spec.destination.namespace");
}

#[test]
fn names_are_bounded_and_never_echoed() {
    let mut s = mk_spec();
    let long = "a".repeat(100_000);
    if let Some(src) = s.source.as_mut() {
        src.pod = long.clone();
    }
    let e = err(s);
    assert_eq!(e.field, "spec.source.pod");
    assert!(e.to_string().len() < 200, "{e}");
    let mut s = mk_spec();
    if let Some(d) = s.destination.as_mut() {
        d.namespace = "Not_A_Namespace".into();
    }
    assert_eq!(err(s).field, "spec.destination.namespace");
    let mut s = mk_spec();
    s.destination = Some(pb::Destination {
        ip: long,
        ..Default::default()
    });
    let e = err(s);
    assert_eq!(e.message, "not a valid IP address");
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
    let v6 = ok(s.clone());
    assert_eq!(v6.family, Family::V6);
    assert_eq!(v6.transport.protocol(v6.family), 0);
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
    assert_eq!(
        ok(s.clone()).transport,
        Transport::Sctp {
            src_port: 0,
            dst_port: 9000
        }
    );
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
    // The protocol alone is an SCTP header with nothing set: injected, it needs a port.
    assert_eq!(
        err(s.clone()).field,
        "spec.packet.transportHeader.sctp.dstPort"
    );
    s.live_traffic = true;
    assert_eq!(
        ok(s).transport,
        Transport::Sctp {
            src_port: 0,
            dst_port: 0
        }
    );
}

#[test]
fn ports_and_protocols() {
    let mut s = mk_spec();
    s.packet = Some(tcp(0, 0, None));
    assert_eq!(
        err(s.clone()).field,
        "spec.packet.transportHeader.tcp.dstPort"
    );
    s.packet = Some(tcp(0, 70000, None));
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
    assert_eq!(
        ok(s.clone()).transport,
        Transport::Tcp {
            src_port: 0,
            dst_port: 80,
            flags: None
        }
    );
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
    assert_eq!(err(s.clone()).field, "spec.packet.ipHeader.protocol");
    s.packet = Some(pb::Packet {
        ip_header: Some(pb::IpHeader {
            ttl: 256,
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(err(s).field, "spec.packet.ipHeader.ttl");
}

#[test]
fn icmp_follows_the_family() {
    assert_eq!(Transport::Protocol(1).protocol(Family::V6), PROTO_ICMPV6);
    assert_eq!(Transport::Protocol(58).protocol(Family::V4), PROTO_ICMP);
    let icmp = Transport::Icmp { id: 1, sequence: 2 };
    assert_eq!(icmp.protocol(Family::V6), PROTO_ICMPV6);
}

/// The packet of `kind` ("tcp", "udp", "sctp") with destination port `dst`: a header, or only
/// the protocol number (`header` false, when `dst` is 0), in the family `v6`.
fn l4(kind: &str, dst: i32, header: bool, v6: bool) -> pb::Packet {
    let number = match kind {
        "tcp" => 6,
        "udp" => 17,
        _ => 132,
    };
    let transport_header = header.then(|| {
        let mut th = pb::TransportHeader::default();
        match kind {
            "tcp" => {
                th.tcp = Some(pb::TcpHeader {
                    src_port: 0,
                    dst_port: dst,
                    flags: None,
                })
            }
            "udp" => {
                th.udp = Some(pb::UdpHeader {
                    src_port: 0,
                    dst_port: dst,
                })
            }
            _ => {
                th.sctp = Some(pb::SctpHeader {
                    src_port: 0,
                    dst_port: dst,
                })
            }
        }
        th
    });
    pb::Packet {
        ip_header: (!v6).then_some(pb::IpHeader {
            protocol: if header { 0 } else { number },
            ..Default::default()
        }),
        ipv6_header: v6.then_some(pb::IPv6Header {
            next_header: (!header).then_some(number),
            hop_limit: 0,
        }),
        transport_header,
        ..Default::default()
    }
}

fn to(dst: pb::Destination, packet: pb::Packet) -> pb::TraceflowSpec {
    pb::TraceflowSpec {
        destination: Some(dst),
        packet: Some(packet),
        ..mk_spec()
    }
}

fn pod_dst() -> pb::Destination {
    mk_spec().destination.unwrap_or_default()
}

fn ip_dst(v6: bool) -> pb::Destination {
    pb::Destination {
        ip: if v6 { "fd00::9" } else { "10.0.0.9" }.into(),
        ..Default::default()
    }
}

fn service_dst() -> pb::Destination {
    pb::Destination {
        namespace: "web".into(),
        service: "api".into(),
        ..Default::default()
    }
}

#[test]
fn injected_tcp_udp_sctp_need_a_destination_port() {
    for (kind, fix) in [
        ("tcp", "tcp,tcp_dst=80"),
        ("udp", "udp,udp_dst=53"),
        ("sctp", "sctp,sctp_dst=9000"),
    ] {
        for v6 in [false, true] {
            for header in [true, false] {
                for dst in [pod_dst(), ip_dst(v6)] {
                    let what = format!("{kind} v6={v6} header={header} to {dst:?}");
                    let e = err(to(dst.clone(), l4(kind, 0, header, v6)));
                    assert_eq!(
                        e.field,
                        format!("spec.packet.transportHeader.{kind}.dstPort"),
                        "{what}"
                    );
                    assert!(
                        e.message.contains(&format!("tfctl -f {fix}"))
                            && e.message.contains("needs a destination port"),
                        "{what}: {e}"
                    );
                    // With a port it is fine; live traffic may leave it open (a filter).
                    if header {
                        ok(to(dst.clone(), l4(kind, 8080, header, v6)));
                    }
                    let mut live = to(dst, l4(kind, 0, header, v6));
                    live.live_traffic = true;
                    ok(live);
                }
                // A Service lends its own port (reference §3.2).
                let s = ok(to(service_dst(), l4(kind, 0, header, v6)));
                assert_eq!(s.transport.protocol(s.family), l4_number(kind), "{kind}");
            }
        }
    }
}

fn l4_number(kind: &str) -> u8 {
    match kind {
        "tcp" => PROTO_TCP,
        "udp" => PROTO_UDP,
        _ => PROTO_SCTP,
    }
}

#[test]
fn a_transport_protocol_alone_is_its_header_with_nothing_set() {
    // So TCP to a Service gets Antrea's SYN from the default, not flags 0.
    let s = ok(to(service_dst(), l4("tcp", 0, false, false)));
    assert_eq!(
        s.transport,
        Transport::Tcp {
            src_port: 0,
            dst_port: 0,
            flags: None
        }
    );
    let s = ok(to(service_dst(), l4("udp", 0, false, true)));
    assert_eq!(
        s.transport,
        Transport::Udp {
            src_port: 0,
            dst_port: 0
        }
    );
    // ICMP and "unset" stay protocol numbers.
    let mut icmp = mk_spec();
    icmp.packet = Some(pb::Packet {
        ip_header: Some(pb::IpHeader {
            protocol: 1,
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(ok(icmp).transport, Transport::Protocol(1));
}

/// OVS userspace conntrack's verdict on a TCP packet that opens a connection, written from
/// `lib/conntrack-tcp.c` (`tcp_invalid_flags`, `tcp_valid_new`) independently of the code under
/// test.
fn ovs_valid_new(flags: u8) -> bool {
    let bit = |b: u8| flags & b != 0;
    let (syn, ack, rst, fin, psh, urg) = (
        bit(0x02),
        bit(0x10),
        bit(0x04),
        bit(0x01),
        bit(0x08),
        bit(0x20),
    );
    // tcp_invalid_flags
    let invalid = if syn { rst || fin } else { !ack && !rst } || (!ack && (fin || psh || urg));
    // tcp_valid_new: "a syn+ack is not allowed to create a connection"
    let syn_ack = syn && ack;
    !invalid && !syn_ack
}

#[test]
fn injected_tcp_flags_must_open_a_connection() {
    let with_flags = |flags: i32, live: bool| {
        let mut s = to(pod_dst(), tcp(0, 80, Some(flags)));
        s.live_traffic = live;
        s
    };
    for f in 0..=255u8 {
        let injected = TraceSpec::try_from(with_flags(i32::from(f), false));
        let nsx = check_tcp_flags(i32::from(f)).is_ok();
        assert_eq!(
            injected.is_ok(),
            nsx && ovs_valid_new(f),
            "flags {f:#04x}: {injected:?}"
        );
        if let Err(e) = injected {
            assert_eq!(e.field, "spec.packet.transportHeader.tcp.flags", "{f}");
            assert!(e.message.len() < 200, "{e}");
        }
        // Live traffic keeps NSX's rules only.
        assert_eq!(
            TraceSpec::try_from(with_flags(i32::from(f), true)).is_ok(),
            nsx,
            "live, flags {f:#04x}"
        );
    }
    // SYN+ACK: why, and what to use instead.
    let e = err(with_flags(0x12, false));
    assert_eq!(
        e.message,
        "SYN+ACK (flags 18) cannot open a connection: conntrack drops it as invalid before any \
         table reports it; send SYN (2, the default) and set reply (tfctl --reply) to trace the \
         SYN-ACK back"
    );
    let e = err(with_flags(0x0a, false));
    assert!(e.message.starts_with("FIN, PSH and URG without ACK"), "{e}");
    // The default (unset) is Antrea's SYN; SYN, ACK and RST open a connection in OVS.
    ok(to(pod_dst(), tcp(0, 80, None)));
    for f in [0x02, 0xc2, 0x10, 0x04, 0x14] {
        ok(with_flags(f, false));
    }
}

#[test]
fn new_connection_rules_alone() {
    assert!(check_new_tcp_connection(TCP_SYN).is_ok());
    assert!(check_new_tcp_connection(TCP_ACK).is_ok());
    assert!(check_new_tcp_connection(TCP_RST).is_ok());
    assert!(check_new_tcp_connection(TCP_SYN | TCP_ACK).is_err());
    assert!(check_new_tcp_connection(TCP_SYN | TCP_PSH).is_err());
    assert!(check_new_tcp_connection(TCP_RST | TCP_FIN).is_err());
    assert!(
        check_new_tcp_connection(TCP_ACK | TCP_PSH).is_ok(),
        "NSX's rule, not OVS's"
    );
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
fn crd_json_converts_through_the_same_rules() {
    // The Traceflow-resource path: Antrea's JSON → wire form → TraceSpec.
    let json = serde_json::json!({
        "source": {"namespace": "default", "pod": "p0"},
        "destination": {"namespace": "default", "pod": "p1", "ip": "10.0.0.1"},
        "timeout": 9999
    });
    let spec: pb::TraceflowSpec = match serde_json::from_value(json) {
        Ok(s) => s,
        Err(e) => panic!("Antrea's JSON should parse: {e}"),
    };
    // Timeout is checked first, then the destination kinds.
    assert_eq!(err(spec.clone()).field, "spec.timeout");
    let mut spec = spec;
    spec.timeout = 10;
    assert_eq!(err(spec).field, "spec.destination");
}

fn transport_header(kind: u8, sp: i32, dp: i32, flags: Option<i32>) -> Option<pb::TransportHeader> {
    let mut th = pb::TransportHeader::default();
    match kind {
        0 => return None,
        1 => {
            th.tcp = Some(pb::TcpHeader {
                src_port: sp,
                dst_port: dp,
                flags,
            })
        }
        2 => {
            th.udp = Some(pb::UdpHeader {
                src_port: sp,
                dst_port: dp,
            })
        }
        3 => {
            th.icmp = Some(pb::IcmpEchoRequestHeader {
                id: sp,
                sequence: dp,
            })
        }
        _ => {
            th.sctp = Some(pb::SctpHeader {
                src_port: sp,
                dst_port: dp,
            })
        }
    }
    Some(th)
}

prop_compose! {
    fn arb_spec()(
        names in proptest::collection::vec(prop_oneof![Just(String::new()), "[a-z0-9.-]{1,8}", ".{0,300}"], 5),
        ips in proptest::collection::vec(prop_oneof![Just(String::new()), Just("10.0.0.1".to_string()), Just("fd00::1".to_string()), ".{0,50}"], 2),
        flags in (any::<bool>(), any::<bool>(), any::<bool>()),
        timeout in prop_oneof![Just(0), 1..400i32, any::<i32>()],
        header in (prop_oneof![0..300i32, any::<i32>()], prop_oneof![0..300i32, any::<i32>()]),
        ports in (prop_oneof![Just(0), 1..65536i32, any::<i32>()], prop_oneof![Just(0), 1..65536i32, any::<i32>()]),
        tcp_flags in proptest::option::of(0..300i32),
        kind in 0u8..5,
    ) -> pb::TraceflowSpec {
        let (live, dropped, v6) = flags;
        let (proto, ttl) = header;
        pb::TraceflowSpec {
            source: Some(pb::Source { namespace: names[0].clone(), pod: names[1].clone(), ip: ips[0].clone() }),
            destination: Some(pb::Destination {
                namespace: names[2].clone(),
                pod: names[3].clone(),
                service: names[4].clone(),
                ip: ips[1].clone(),
            }),
            packet: Some(pb::Packet {
                ip_header: (!v6).then_some(pb::IpHeader { protocol: proto, ttl, flags: 0 }),
                ipv6_header: v6.then_some(pb::IPv6Header { next_header: Some(proto), hop_limit: ttl }),
                transport_header: transport_header(kind, ports.0, ports.1, tcp_flags),
                ..Default::default()
            }),
            timeout,
            live_traffic: live,
            dropped_only: dropped,
            // Both ways, with and without live traffic (refused together).
            reply: v6 != dropped,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Any wire spec converts or is refused with a short error naming a spec field; a spec
    /// that converts converts again to the same value from its own wire form.
    #[test]
    fn conversion_is_total_bounded_and_idempotent(spec in arb_spec()) {
        match TraceSpec::try_from(spec) {
            Err(e) => {
                prop_assert!(e.field.starts_with("spec"), "{}", e.field);
                prop_assert!(e.message.len() < 200, "{}", e.message);
            }
            Ok(t) => {
                prop_assert!((1..=MAX_TIMEOUT_SECS).contains(&t.timeout_secs()));
                let again = TraceSpec::try_from(t.proto().clone());
                prop_assert_eq!(again.as_ref().ok(), Some(&t));
            }
        }
    }
}
