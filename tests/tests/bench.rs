//! `traceflow-bench --short` and `traceflow-fleetgen --short`, so neither can rot. The bench
//! must bring up bench.yaml, measure both baselines, every trace kind and all three
//! concurrencies with every trace correct, and print every figure in its final JSON line; the
//! generator must register and sync every synthetic cluster into the real manager and end
//! every trace across them. The figures themselves are not asserted (a shared CI machine makes timing thresholds flaky); docs/performance.md has
//! the full-mode run.
//!
//! Needs root, Open vSwitch and `cargo build --workspace --bins`; fails loudly, never skips.

mod common;

use std::process::Command;

use common::require_lab_prerequisites;
use serde_json::Value;

#[test]
fn bench_short_mode_measures_every_figure_with_every_trace_correct() {
    require_lab_prerequisites();
    let out = Command::new(env!("CARGO_BIN_EXE_traceflow-bench"))
        .arg("--short")
        .env("RUST_LIB_BACKTRACE", "0")
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => panic!("cannot run traceflow-bench: {e}"),
    };
    let text = common::text(&out);
    assert!(
        out.status.success(),
        "traceflow-bench --short failed:\n{text}"
    );
    let stdout = common::stdout(&out);
    let last = stdout.lines().last().unwrap_or_default();
    let report: Value = match serde_json::from_str(last) {
        Ok(v) => v,
        Err(e) => panic!("the last line of traceflow-bench is not JSON ({e}):\n{text}"),
    };
    let positive = |ptr: &str| {
        let v = report.pointer(ptr).and_then(Value::as_f64);
        assert!(
            v.is_some_and(|v| v > 0.0),
            "{ptr} is {v:?}, want a positive figure:\n{text}"
        );
    };
    for base in ["baseline_ovs_roundtrip", "baseline_null_grpc"] {
        positive(&format!("/{base}/p50_us"));
        positive(&format!("/{base}/max_us"));
    }
    for kind in [
        "intra-node",
        "inter-node",
        "service",
        "dropped",
        "ipv6",
        "live",
    ] {
        for side in ["client", "server"] {
            for q in ["p50_us", "p90_us", "p99_us", "max_us"] {
                positive(&format!("/latency/{kind}/{side}/{q}"));
            }
        }
    }
    let runs = report["throughput"].as_array().cloned().unwrap_or_default();
    let concurrencies: Vec<u64> = runs
        .iter()
        .filter_map(|r| r["concurrency"].as_u64())
        .collect();
    assert_eq!(concurrencies, [1, 64, 1000], "{text}");
    for r in &runs {
        assert_eq!(
            r["correct"], r["traces"],
            "every trace must be correct: {r}"
        );
        assert!(r["traces_per_s"].as_f64().is_some_and(|v| v > 0.0), "{r}");
        for group in ["manager", "adapter", "agent", "ovs-vswitchd"] {
            assert!(
                r["cpu_ms_per_trace"][group].as_f64().is_some(),
                "no CPU figure of {group}: {r}"
            );
        }
    }
    positive("/manager_rss_kib");
    assert_lab_gone(&report, &text);
}

/// The program took down the lab it brought up, leaving nothing in its directory.
fn assert_lab_gone(report: &Value, text: &str) {
    let dir = report["lab_dir"].as_str().unwrap_or_default();
    assert!(!dir.is_empty(), "no lab_dir in the report:\n{text}");
    assert!(
        !std::path::Path::new(dir).exists(),
        "{dir} is left after the run:\n{text}"
    );
}

#[test]
fn fleetgen_short_mode_syncs_every_synthetic_cluster_and_ends_every_trace() {
    require_lab_prerequisites();
    let out = Command::new(env!("CARGO_BIN_EXE_traceflow-fleetgen"))
        .arg("--short")
        .env("RUST_LIB_BACKTRACE", "0")
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => panic!("cannot run traceflow-fleetgen: {e}"),
    };
    let text = common::text(&out);
    assert!(
        out.status.success(),
        "traceflow-fleetgen --short failed:\n{text}"
    );
    let stdout = common::stdout(&out);
    let report: Value = match serde_json::from_str(stdout.lines().last().unwrap_or_default()) {
        Ok(v) => v,
        Err(e) => panic!("the last line of traceflow-fleetgen is not JSON ({e}):\n{text}"),
    };
    assert_eq!(report["clusters"], 3, "{text}");
    assert_eq!(report["pods_total"], 60, "{text}");
    assert!(
        report["registered_and_synced_s"]
            .as_f64()
            .is_some_and(|s| s > 0.0),
        "{text}"
    );
    assert!(
        report["manager_rss_kib_synced"]
            .as_u64()
            .is_some_and(|k| k > 0),
        "{text}"
    );
    assert_eq!(report["traces"]["correct"], report["traces"]["n"], "{text}");
    assert!(
        report["traces"]["p99_ms"].as_f64().is_some_and(|v| v > 0.0),
        "{text}"
    );
    assert_lab_gone(&report, &text);
}
