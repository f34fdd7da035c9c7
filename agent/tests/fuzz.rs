//! Property tests standing in for `cargo fuzz` (nightly is not available): bytes a switch or a
//! Pod could send never panic the decoders, and what the agent builds parses back to itself.
//!
//! Each property runs a bounded number of cases (256: well under a second in CI); the seeds in `tests/corpus/<target>/*.hex` run first, every time, and any input that
//! ever crashed belongs there as a regression case.

use std::net::IpAddr;

use proptest::prelude::*;
use traceflow_agent::{
    ovs::openflow::{Message, frame},
    ports::Mac,
    trace::packet::{TracePacket, Transport, parse},
};

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(target);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.map(|e| e.path()).unwrap_or_default();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let hex: String = text.chars().filter(char::is_ascii_hexdigit).collect();
        let bytes = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0))
            .collect();
        out.push(bytes);
    }
    assert!(!out.is_empty(), "no corpus in {}", dir.display());
    out
}

/// Every truncation and single-byte corruption of `seed`.
fn mutations(seed: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = (0..=seed.len()).map(|n| seed[..n].to_vec()).collect();
    for i in 0..seed.len() {
        for b in [0x00, 0xff, seed[i].wrapping_add(1)] {
            let mut m = seed.to_vec();
            m[i] = b;
            out.push(m);
        }
    }
    out
}

fn decode_openflow(bytes: &[u8]) {
    let _ = frame::check(bytes);
    let _ = Message::decode(bytes);
}

#[test]
fn openflow_corpus_and_its_mutations_decode_without_panicking() {
    for seed in corpus("openflow") {
        assert!(Message::decode(&seed).is_ok(), "a seed must decode");
        for m in mutations(&seed) {
            decode_openflow(&m);
        }
    }
}

#[test]
fn packet_corpus_and_its_mutations_parse_without_panicking() {
    for seed in corpus("packet") {
        assert!(parse(&seed).is_ok(), "a seed must parse");
        for m in mutations(&seed) {
            let _ = parse(&m);
        }
    }
}

fn transport() -> impl Strategy<Value = Transport> {
    prop_oneof![
        (any::<u16>(), any::<u16>()).prop_map(|(id, seq)| Transport::Echo { id, seq }),
        (1..u16::MAX, 1..u16::MAX, any::<u8>()).prop_map(|(s, d, flags)| Transport::Tcp {
            src_port: s,
            dst_port: d,
            flags
        }),
        (1..u16::MAX, 1..u16::MAX).prop_map(|(s, d)| Transport::Udp {
            src_port: s,
            dst_port: d
        }),
        (1..u16::MAX, 1..u16::MAX).prop_map(|(s, d)| Transport::Sctp {
            src_port: s,
            dst_port: d
        }),
    ]
}

fn addresses() -> impl Strategy<Value = (IpAddr, IpAddr, u32)> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<[u8; 4]>(), any::<u16>()).prop_map(|(a, b, id)| (
            IpAddr::from(a),
            IpAddr::from(b),
            u32::from(id)
        )),
        (any::<[u8; 16]>(), any::<[u8; 16]>(), 0..(1u32 << 20)).prop_map(|(a, b, id)| (
            IpAddr::from(a),
            IpAddr::from(b),
            id
        )),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any bytes, including a plausible OpenFlow header with a lying length.
    #[test]
    fn openflow_decoder_never_panics(
        version in prop_oneof![Just(6u8), any::<u8>()],
        kind in any::<u8>(),
        len in any::<u16>(),
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = vec![version, kind];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 1]);
        bytes.extend_from_slice(&body);
        decode_openflow(&bytes);
        decode_openflow(&body);
    }

    /// Any frame a Pod could put on the wire parses or is refused, never panics.
    #[test]
    fn packet_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse(&bytes);
    }

    /// What the packet builder makes parses back to the same addresses, id, TTL and ports.
    #[test]
    fn built_packets_parse_back(
        (src, dst, trace_id) in addresses(),
        ttl in 1..=255u8,
        src_mac in any::<[u8; 6]>(),
        dst_mac in any::<[u8; 6]>(),
        transport in transport(),
    ) {
        let p = TracePacket {
            src_mac: Mac(src_mac),
            dst_mac: Mac(dst_mac),
            src,
            dst,
            trace_id,
            ttl,
            ip_flags: 0,
            transport: transport.clone(),
        };
        let frame = p.build().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back = parse(&frame).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!((back.src, back.dst, back.trace_id, back.ttl), (src, dst, trace_id, ttl));
        prop_assert_eq!(back.protocol, p.protocol());
        match transport {
            Transport::Tcp { src_port, dst_port, flags } => {
                prop_assert_eq!((back.src_port, back.dst_port), (Some(src_port), Some(dst_port)));
                prop_assert_eq!(back.tcp_flags, Some(flags));
            }
            Transport::Udp { src_port, dst_port } | Transport::Sctp { src_port, dst_port } => {
                prop_assert_eq!((back.src_port, back.dst_port), (Some(src_port), Some(dst_port)));
            }
            Transport::Echo { id, seq } => prop_assert_eq!(back.icmp_echo, Some((id, seq))),
            Transport::Bare(_) => {}
        }
    }
}
