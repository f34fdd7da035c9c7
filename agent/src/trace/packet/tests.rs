use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

fn v4(transport: Transport) -> TracePacket {
    TracePacket {
        src_mac: Mac([2, 0, 0, 0, 0, 1]),
        dst_mac: Mac([2, 0, 0, 0, 0, 2]),
        src: IpAddr::V4(Ipv4Addr::new(10, 1, 0, 2)),
        dst: IpAddr::V4(Ipv4Addr::new(10, 1, 0, 3)),
        trace_id: 0xbeef,
        ttl: 64,
        ip_flags: 0b010,
        transport,
        secret: 0,
    }
}

fn v6(transport: Transport) -> TracePacket {
    TracePacket {
        src: IpAddr::V6(Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 2)),
        dst: IpAddr::V6(Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 3)),
        trace_id: 0xabcde,
        ..v4(transport)
    }
}

fn build(p: &TracePacket) -> Vec<u8> {
    p.build().unwrap()
}

fn parsed(frame: &[u8]) -> ParsedPacket {
    parse(frame).unwrap()
}

/// A checksum over data that includes a correct checksum field folds to 0.
fn verifies(parts: &[&[u8]]) -> bool {
    inet_checksum(parts) == 0
}

fn pseudo_v4(s: Ipv4Addr, d: Ipv4Addr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = [s.octets(), d.octets()].concat();
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p
}

fn pseudo_v6(s: Ipv6Addr, d: Ipv6Addr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = [s.octets(), d.octets()].concat();
    p.extend_from_slice(&(len as u32).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, proto]);
    p
}

#[test]
fn the_checksum_oracle_matches_a_known_vector() {
    let hdr = [
        0x45u8, 0, 0, 0x73, 0, 0, 0x40, 0, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0, 1, 0xc0, 0xa8, 0, 0xc7,
    ];
    assert_eq!(inet_checksum(&[&hdr]), 0xb861);
}

#[test]
fn icmpv4_echo_has_trace_identity_and_valid_checksums() {
    let b = build(&v4(Transport::Echo { id: 7, seq: 9 }));
    assert_eq!(b.len(), 14 + 20 + 8);
    assert_eq!(&b[0..6], &[2, 0, 0, 0, 0, 2], "destination MAC first");
    assert_eq!(&b[12..14], &[0x08, 0x00]);
    let ip = &b[14..34];
    assert_eq!(ip[0], 0x45);
    assert_eq!(ip[1], 0xfc, "DSCP 63, ECN 0");
    assert_eq!(&ip[2..4], &[0, 28], "total length");
    assert_eq!(&ip[4..6], &[0xbe, 0xef], "trace id in Identification");
    assert_eq!(ip[6], 0x40, "DF");
    assert_eq!(ip[8], 64);
    assert_eq!(ip[9], 1);
    assert!(verifies(&[ip]), "IPv4 header checksum");
    let icmp = &b[34..];
    assert_eq!(&icmp[..2], &[8, 0]);
    assert_eq!(&icmp[4..8], &[0, 7, 0, 9]);
    assert!(verifies(&[icmp]), "ICMP checksum");
    let p = parsed(&b);
    assert_eq!(
        (p.trace_id, p.dscp, p.protocol, p.icmp_echo),
        (0xbeef, 63, 1, Some((7, 9)))
    );
    assert_eq!((p.length, p.ip_flags, p.ttl), (28, 0b010, 64));
}

#[test]
fn the_reserved_ipv4_flag_is_kept_with_a_valid_header_checksum() {
    let mut pkt = v4(Transport::Echo { id: 1, seq: 1 });
    pkt.ip_flags = 0b111;
    let b = build(&pkt);
    let ip = &b[14..34];
    assert_eq!(ip[6] >> 5, 0b111);
    assert!(verifies(&[ip]));
    assert_eq!(parsed(&b).ip_flags, 0b111);
}

#[test]
fn icmpv6_checksum_covers_the_pseudo_header() {
    let pkt = v6(Transport::Echo { id: 1, seq: 2 });
    let b = build(&pkt);
    assert_eq!(&b[12..14], &[0x86, 0xdd]);
    let ip = &b[14..54];
    let word = u32::from_be_bytes([ip[0], ip[1], ip[2], ip[3]]);
    assert_eq!(word >> 28, 6);
    assert_eq!((word >> 20) & 0xff, 0xfc);
    assert_eq!(word & 0xfffff, 0xabcde, "trace id in the flow label");
    assert_eq!(&ip[4..6], &[0, 8], "payload length");
    assert_eq!(ip[6], 58);
    let icmp = &b[54..];
    assert_eq!(icmp[0], 128);
    let (IpAddr::V6(s), IpAddr::V6(d)) = (pkt.src, pkt.dst) else {
        panic!("not v6")
    };
    assert!(verifies(&[&pseudo_v6(s, d, 58, icmp.len()), icmp]));
    assert!(
        !verifies(&[icmp]),
        "without the pseudo-header it must not verify"
    );
    let p = parsed(&b);
    assert_eq!(
        (p.trace_id, p.dscp, p.src, p.dst, p.length),
        (0xabcde, 63, pkt.src, pkt.dst, 48)
    );
}

#[test]
fn tcp_syn_and_udp_checksums() {
    let pkt = v4(Transport::Tcp {
        src_port: 40000,
        dst_port: 80,
        flags: 2,
    });
    let b = build(&pkt);
    let tcp = &b[34..];
    assert_eq!(tcp.len(), 20);
    assert_eq!(tcp[12], 5 << 4, "data offset 5, no options");
    assert_eq!(tcp[13], 2);
    assert_eq!(&tcp[14..16], &[0xff, 0xff], "window");
    let (IpAddr::V4(s), IpAddr::V4(d)) = (pkt.src, pkt.dst) else {
        panic!("not v4")
    };
    assert!(verifies(&[&pseudo_v4(s, d, 6, 20), tcp]));
    let p = parsed(&b);
    assert_eq!(
        (p.src_port, p.dst_port, p.tcp_flags),
        (Some(40000), Some(80), Some(2))
    );

    let pkt = v6(Transport::Udp {
        src_port: 5353,
        dst_port: 53,
    });
    let b = build(&pkt);
    let udp = &b[54..];
    assert_eq!(&udp[4..6], &[0, 8]);
    let (IpAddr::V6(s), IpAddr::V6(d)) = (pkt.src, pkt.dst) else {
        panic!("not v6")
    };
    assert!(verifies(&[&pseudo_v6(s, d, 17, 8), udp]));
    let p = parsed(&b);
    assert_eq!((p.src_port, p.dst_port), (Some(5353), Some(53)));
}

#[test]
fn every_tcp_flag_bit_is_carried() {
    for bit in 0..8 {
        let flags = 1u8 << bit;
        let b = build(&v4(Transport::Tcp {
            src_port: 1,
            dst_port: 2,
            flags,
        }));
        assert_eq!(b[34 + 13], flags, "bit {bit}");
    }
}

#[test]
fn sctp_crc32c() {
    // RFC 3720 B.4 test vector: 32 bytes of zeros.
    assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
    assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    let b = build(&v4(Transport::Sctp {
        src_port: 1,
        dst_port: 2,
    }));
    assert_eq!(b[14 + 9], PROTO_SCTP);
    let mut sctp = b[34..].to_vec();
    assert_eq!(sctp.len(), 32);
    assert_eq!(sctp[12], 1, "INIT chunk");
    let stored = u32::from_le_bytes([sctp[8], sctp[9], sctp[10], sctp[11]]);
    sctp[8..12].fill(0);
    assert_eq!(crc32c(&sctp), stored);
    let p = parsed(&b);
    assert_eq!(
        (p.protocol, p.src_port, p.dst_port),
        (132, Some(1), Some(2))
    );
}

#[test]
fn bare_ip_with_another_protocol() {
    let b = build(&v4(Transport::Bare(47)));
    assert_eq!(b.len(), 34);
    assert_eq!(b[14 + 9], 47);
    assert!(verifies(&[&b[14..34]]));
    assert_eq!(parse(&b).map(|p| p.protocol), Ok(47));
}

#[test]
fn family_mismatch_is_an_error() {
    let mut p = v4(Transport::Bare(47));
    p.dst = IpAddr::V6(Ipv6Addr::LOCALHOST);
    assert_eq!(p.build(), Err(FamilyMismatch));
}

#[test]
fn captured_packet_of_a_parsed_echo_and_tcp() {
    let p = parsed(&build(&v4(Transport::Echo { id: 7, seq: 9 })));
    let c = p.to_captured();
    assert_eq!(
        (c.src_ip.as_str(), c.dst_ip.as_str(), c.length),
        ("10.1.0.2", "10.1.0.3", 28)
    );
    assert_eq!(
        c.ip_header.as_ref().map(|h| (h.protocol, h.ttl)),
        Some((1, 64))
    );
    assert!(c.ipv6_header.is_none());
    let icmp = c.transport_header.and_then(|t| t.icmp);
    assert_eq!(icmp.map(|i| (i.id, i.sequence)), Some((7, 9)));

    let p = parsed(&build(&v6(Transport::Tcp {
        src_port: 40000,
        dst_port: 80,
        flags: 2,
    })));
    let c = p.to_captured();
    assert_eq!(c.ipv6_header.as_ref().and_then(|h| h.next_header), Some(6));
    let tcp = c.transport_header.and_then(|t| t.tcp);
    assert_eq!(
        tcp.map(|t| (t.src_port, t.dst_port, t.flags)),
        Some((40000, 80, Some(2)))
    );
}

#[test]
fn parse_rejects_garbage() {
    assert!(parse(&[0u8; 10]).is_err());
    let mut arp = vec![0u8; 42];
    arp[12] = 0x08;
    arp[13] = 0x06;
    assert!(parse(&arp).is_err());
    // IPv4 ethertype with an IPv6 header, and a truncated IPv4 header.
    let mut b = build(&v6(Transport::Udp {
        src_port: 1,
        dst_port: 2,
    }));
    b[12..14].copy_from_slice(&[0x08, 0x00]);
    assert!(parse(&b).is_err());
    let b = build(&v4(Transport::Echo { id: 1, seq: 1 }));
    assert!(parse(&b[..14 + 19]).is_err());
}

#[test]
fn a_vlan_tag_is_skipped() {
    let b = build(&v4(Transport::Udp {
        src_port: 7,
        dst_port: 8,
    }));
    let mut tagged = b[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
    tagged.extend_from_slice(&b[12..]);
    let p = parsed(&tagged);
    assert_eq!(
        (p.trace_id, p.dscp, p.src_port, p.dst_port),
        (0xbeef, 63, Some(7), Some(8))
    );
}

#[test]
fn ipv4_options_are_skipped() {
    let b = build(&v4(Transport::Udp {
        src_port: 7,
        dst_port: 8,
    }));
    // IHL 6: one 4-byte option word (NOPs) before the UDP header.
    let mut with_opts = b[..34].to_vec();
    with_opts[14] = 0x46;
    with_opts[16..18].copy_from_slice(&(20u16 + 4 + 8).to_be_bytes());
    with_opts.extend_from_slice(&[1, 1, 1, 1]);
    with_opts.extend_from_slice(&b[34..]);
    let p = parsed(&with_opts);
    assert_eq!((p.src_port, p.dst_port, p.length), (Some(7), Some(8), 32));
}

// ---------------------------------------------------------------- IPv6 extension headers

const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const DEST_OPTIONS: u8 = 60;

/// An extension header of type `kind` with `next` as its next header. Options headers carry
/// PadN; the routing header is type 2 with one address; the fragment header says `fragment`
/// (offset in 8-byte units, more-fragments bit).
fn ext(kind: u8, next: u8, fragment: (u16, bool)) -> Vec<u8> {
    match kind {
        HOP_BY_HOP | DEST_OPTIONS => vec![next, 0, 1, 4, 0, 0, 0, 0],
        ROUTING => {
            let mut h = vec![next, 2, 2, 0, 0, 0, 0, 0];
            h.extend_from_slice(&Ipv6Addr::new(0xfd00, 9, 0, 0, 0, 0, 0, 9).octets());
            h
        }
        FRAGMENT => {
            let off = (fragment.0 << 3) | u16::from(fragment.1);
            let mut h = vec![next, 0];
            h.extend_from_slice(&off.to_be_bytes());
            h.extend_from_slice(&0x1234_5678u32.to_be_bytes());
            h
        }
        _ => panic!("not an extension header: {kind}"),
    }
}

/// `frame` (IPv6) with `chain` inserted between the IPv6 header and its payload.
fn with_extensions(frame: &[u8], chain: &[u8], fragment: (u16, bool)) -> Vec<u8> {
    let upper = frame[14 + 6];
    let mut exts = Vec::new();
    for (i, kind) in chain.iter().enumerate() {
        let next = chain.get(i + 1).copied().unwrap_or(upper);
        exts.extend(ext(*kind, next, fragment));
    }
    let mut out = frame[..54].to_vec();
    out[14 + 6] = chain[0];
    let plen = u16::from_be_bytes([out[18], out[19]]) + exts.len() as u16;
    out[18..20].copy_from_slice(&plen.to_be_bytes());
    out.extend(exts);
    out.extend_from_slice(&frame[54..]);
    out
}

#[test]
fn ipv6_extension_headers_do_not_break_parsing() {
    let tcp = build(&v6(Transport::Tcp {
        src_port: 40000,
        dst_port: 443,
        flags: 0x12,
    }));
    let echo = build(&v6(Transport::Echo { id: 3, seq: 4 }));
    let chains: [&[u8]; 6] = [
        &[HOP_BY_HOP],
        &[ROUTING],
        &[FRAGMENT],
        &[DEST_OPTIONS],
        &[HOP_BY_HOP, DEST_OPTIONS, ROUTING, FRAGMENT],
        &[HOP_BY_HOP, ROUTING, DEST_OPTIONS],
    ];
    for chain in chains {
        let p = parsed(&with_extensions(&tcp, chain, (0, false)));
        assert_eq!(
            (p.trace_id, p.dscp, p.protocol),
            (0xabcde, 63, PROTO_TCP),
            "{chain:?}"
        );
        assert_eq!(
            (p.src_port, p.dst_port, p.tcp_flags),
            (Some(40000), Some(443), Some(0x12)),
            "{chain:?}"
        );
        let p = parsed(&with_extensions(&echo, chain, (0, false)));
        assert_eq!(
            (p.protocol, p.icmp_echo),
            (PROTO_ICMPV6, Some((3, 4))),
            "{chain:?}"
        );
    }
}

#[test]
fn a_later_ipv6_fragment_keeps_the_trace_id_but_has_no_ports() {
    let udp = build(&v6(Transport::Udp {
        src_port: 5,
        dst_port: 6,
    }));
    // Offset 8 (64 bytes): what follows the fragment header is not a UDP header.
    let p = parsed(&with_extensions(&udp, &[FRAGMENT], (8, false)));
    assert_eq!((p.trace_id, p.dscp, p.protocol), (0xabcde, 63, PROTO_UDP));
    assert_eq!((p.src_port, p.dst_port), (None, None));
    // The first fragment (offset 0, more fragments) still has them.
    let p = parsed(&with_extensions(&udp, &[FRAGMENT], (0, true)));
    assert_eq!((p.src_port, p.dst_port), (Some(5), Some(6)));
}

#[test]
fn a_truncated_extension_header_is_an_error_or_has_no_ports_never_a_panic() {
    let tcp = build(&v6(Transport::Tcp {
        src_port: 1,
        dst_port: 2,
        flags: 2,
    }));
    let full = with_extensions(&tcp, &[HOP_BY_HOP, ROUTING], (0, false));
    for cut in 54..full.len() {
        if let Ok(p) = parse(&full[..cut]) {
            assert_eq!(p.trace_id, 0xabcde);
            assert!(
                p.src_port.is_none() || cut >= 54 + 8 + 24 + 4,
                "cut at {cut}: {p:?}"
            );
        }
    }
}

// ---------------------------------------------------------------- properties

/// IPv6 extension header numbers (and AH / ESP): a bare packet of such a "protocol" is not a
/// packet the agent builds.
const EXTENSION_NUMBERS: [u8; 10] = [0, 43, 44, 50, 51, 60, 135, 139, 140, 253];

fn transport() -> impl Strategy<Value = Transport> {
    prop_oneof![
        (any::<u16>(), any::<u16>()).prop_map(|(id, seq)| Transport::Echo { id, seq }),
        (any::<u16>(), any::<u16>()).prop_map(|(id, seq)| Transport::EchoReply { id, seq }),
        (any::<u16>(), any::<u16>(), any::<u8>()).prop_map(|(s, d, f)| Transport::Tcp {
            src_port: s,
            dst_port: d,
            flags: f,
        }),
        (any::<u16>(), any::<u16>()).prop_map(|(s, d)| Transport::Udp {
            src_port: s,
            dst_port: d
        }),
        (any::<u16>(), any::<u16>()).prop_map(|(s, d)| Transport::Sctp {
            src_port: s,
            dst_port: d
        }),
        (any::<u16>(), any::<u16>(), any::<u32>()).prop_map(|(s, d, t)| Transport::SctpInitAck {
            src_port: s,
            dst_port: d,
            verification_tag: t,
        }),
        any::<u8>()
            // A bare header numbered like a transport we parse would be read as one.
            .prop_filter("not an extension header or a parsed transport", |p| {
                !EXTENSION_NUMBERS.contains(p) && protocol_is_bare(*p)
            })
            .prop_map(Transport::Bare),
    ]
}

fn trace_packet() -> impl Strategy<Value = TracePacket> {
    let addrs = prop_oneof![
        (any::<u32>(), any::<u32>())
            .prop_map(|(s, d)| (IpAddr::V4(Ipv4Addr::from(s)), IpAddr::V4(Ipv4Addr::from(d)))),
        (any::<u128>(), any::<u128>())
            .prop_map(|(s, d)| (IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(d)))),
    ];
    (
        any::<[u8; 6]>(),
        any::<[u8; 6]>(),
        addrs,
        any::<u32>(),
        any::<u8>(),
        0u8..8,
        transport(),
        any::<u64>(),
    )
        .prop_map(|(sm, dm, (src, dst), id, ttl, flags, transport, secret)| {
            let v6 = src.is_ipv6();
            TracePacket {
                src_mac: Mac(sm),
                dst_mac: Mac(dm),
                src,
                dst,
                // The caller checks the width: 16 bits (IPv4) or 20 bits (IPv6).
                trace_id: if v6 { id & 0xf_ffff } else { id & 0xffff },
                ttl,
                ip_flags: if v6 { 0 } else { flags },
                transport,
                secret,
            }
        })
}

/// Frames worth fuzzing: pure noise, and noise after a valid Ethernet + IP start (so the IP
/// and extension-header code is reached, not only the Ethernet check).
fn frame_bytes() -> impl Strategy<Value = Vec<u8>> {
    let v4_start = build(&v4(Transport::Bare(0xfd)))[..14 + 10].to_vec();
    let v6_start = build(&v6(Transport::Bare(0xfd)))[..14 + 6].to_vec();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..128),
        proptest::collection::vec(any::<u8>(), 0..160).prop_map(move |tail| {
            let mut f = v4_start.clone();
            f.extend(tail);
            f
        }),
        (
            proptest::sample::select(EXTENSION_NUMBERS.to_vec()),
            proptest::collection::vec(any::<u8>(), 0..160)
        )
            .prop_map(move |(next, tail)| {
                let mut f = v6_start.clone();
                f.push(next);
                f.extend(tail);
                f
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_the_parser(frame in frame_bytes()) {
        if let Ok(p) = parse(&frame) {
            // Whatever parses names a family consistently.
            prop_assert_eq!(p.src.is_ipv6(), p.dst.is_ipv6());
        }
    }

    #[test]
    fn build_then_parse_round_trips(pkt in trace_packet()) {
        let frame = pkt.build().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let p = parse(&frame).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!((p.src_mac, p.dst_mac), (pkt.src_mac, pkt.dst_mac));
        prop_assert_eq!((p.src, p.dst), (pkt.src, pkt.dst));
        prop_assert_eq!(p.dscp, TRACE_DSCP);
        prop_assert_eq!(p.trace_id, pkt.trace_id);
        prop_assert_eq!(p.protocol, pkt.protocol());
        prop_assert_eq!((p.ttl, p.ip_flags), (pkt.ttl, pkt.ip_flags));
        prop_assert_eq!(usize::from(p.length), frame.len() - 14, "IP length");
        let (ports, flags, echo) = match pkt.transport {
            Transport::Tcp { src_port, dst_port, flags } => ((Some(src_port), Some(dst_port)), Some(flags), None),
            Transport::Udp { src_port, dst_port } | Transport::Sctp { src_port, dst_port }
            | Transport::SctpInitAck { src_port, dst_port, .. } =>
                ((Some(src_port), Some(dst_port)), None, None),
            Transport::Echo { id, seq } | Transport::EchoReply { id, seq } =>
                ((None, None), None, Some((id, seq))),
            Transport::Bare(_) => ((None, None), None, None),
        };
        prop_assert_eq!((p.src_port, p.dst_port), ports);
        prop_assert_eq!(p.tcp_flags, flags);
        prop_assert_eq!(p.icmp_echo, echo);
        prop_assert_eq!(p.secret, pkt.secret, "the secret survives build and parse");
    }
}
