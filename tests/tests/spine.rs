//! The spine, end to end: `traceflow-lab up` of one Node with three Pods (real OVS, real
//! manager, adapter, agent, Kubernetes API), `tfctl traceflow` from p0 to p1, observations from
//! real packet-ins, then `down` leaving no namespace or process.
//!
//! Needs root, Open vSwitch and the workspace's binaries (`cargo build --workspace --bins`);
//! fails loudly without them, never skips.

mod common;

use std::process::Command;

use common::{Lab, bin_dir, require_lab_prerequisites, text, topology};
use serde_json::Value;

/// `(component, componentInfo, action)` of each observation of a NodeResult.
fn observations(result: &Value) -> Vec<(String, String, String)> {
    let s = |o: &Value, k: &str| o.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    result
        .get("observations")
        .and_then(Value::as_array)
        .map(|obs| {
            obs.iter()
                .map(|o| (s(o, "component"), s(o, "componentInfo"), s(o, "action")))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn spine_trace_p0_to_p1_on_one_node() {
    require_lab_prerequisites();
    for bin in [
        "traceflow-manager",
        "traceflow-adapter",
        "traceflow-agent",
        "tfctl",
    ] {
        assert!(
            bin_dir().join(bin).is_file(),
            "{bin} is not in {}: run `cargo build --workspace --bins` first",
            bin_dir().display()
        );
    }
    let mut lab = Lab::new("sp");
    let out = lab.up(&topology("one-node.yaml"), &["--ready-timeout", "60s"]);
    let last = out.lines().last().unwrap_or_default().to_string();
    let cfg = last
        .strip_prefix("export TFCTL_CONFIG=")
        .unwrap_or_else(|| {
            panic!("last stdout line of up is not `export TFCTL_CONFIG=...`: {out}")
        });
    assert!(std::path::Path::new(cfg).is_file(), "{cfg} missing");

    let trace = Command::new(bin_dir().join("tfctl"))
        .args([
            "traceflow",
            "--cluster",
            "c1",
            "-S",
            "default/p0",
            "-D",
            "default/p1",
            "-o",
            "json",
        ])
        .env("TFCTL_CONFIG", cfg)
        .output();
    let trace = match trace {
        Ok(t) => t,
        Err(e) => panic!("cannot run tfctl: {e}"),
    };
    let dump = || lab.dump();
    assert!(
        trace.status.success(),
        "tfctl failed: {}\n{}",
        text(&trace),
        dump()
    );
    let v: Value = match serde_json::from_slice(&trace.stdout) {
        Ok(v) => v,
        Err(e) => panic!(
            "tfctl -o json printed no JSON ({e}): {}\n{}",
            text(&trace),
            dump()
        ),
    };
    let phase = v
        .get("phase")
        .or_else(|| v.pointer("/status/phase"))
        .and_then(Value::as_str)
        .unwrap_or("");
    assert_eq!(phase, "Succeeded", "trace: {v:#}\n{}", dump());
    let results = v
        .get("results")
        .or_else(|| v.pointer("/status/results"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    assert_eq!(results.len(), 1, "one Node, one result: {v:#}");
    let r = &results[0];
    assert_eq!(r.get("node").and_then(Value::as_str), Some("n1"), "{r:#}");
    assert_eq!(
        r.get("role").and_then(Value::as_str),
        Some("sender"),
        "{r:#}"
    );
    let obs = observations(r);
    let want = vec![
        (
            "SpoofGuard".to_string(),
            String::new(),
            "Forwarded".to_string(),
        ),
        (
            "Forwarding".to_string(),
            "Output".to_string(),
            "Delivered".to_string(),
        ),
    ];
    assert_eq!(obs, want, "observations: {r:#}\n{}", dump());
    let src_pod_ip = r
        .pointer("/observations/0/srcPodIP")
        .and_then(Value::as_str);
    assert_eq!(src_pod_ip, Some("10.10.0.2"), "{r:#}");

    let down = lab.down();
    assert!(down.contains("is down"), "{down}");
    lab.assert_gone();
}
