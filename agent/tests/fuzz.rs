//! Property tests standing in for `cargo fuzz` (nightly is not available): bytes a switch or a
//! Pod could send never panic the decoders. The kept corpora (`tests/corpus/<target>/*.hex`)
//! run first; random packets and build → parse round trips are `trace::packet`'s own property
//! tests (src/trace/packet/tests.rs).
//!
//! Each property runs a bounded number of cases (256: well under a second in CI); the seeds in `tests/corpus/<target>/*.hex` run first, every time, and any input that
//! ever crashed belongs there as a regression case.

use proptest::prelude::*;
use traceflow_agent::{
    ovs::openflow::{Message, frame},
    trace::packet::parse,
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
}
