//! The agent's counters, pushed to the adapter as `AgentCounters` (docs/contracts.md
//! "Metrics"); the manager serves them as `traceflow_agent_<name>_total{cluster,node}`.
//!
//! Process-wide and monotonic since the agent started.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
};

use traceflow_core::counters as names;

/// Every packet-in read from br-int (trace packets, live traffic, Reject answers).
pub static PACKET_INS: AtomicU64 = AtomicU64::new(0);
/// Packet-ins turned into trace reports.
pub static OBSERVATIONS: AtomicU64 = AtomicU64::new(0);
/// Inject commands received.
pub static INJECTS: AtomicU64 = AtomicU64::new(0);
/// Injections that failed (reported as `TraceFailure`).
pub static INJECT_FAILURES: AtomicU64 = AtomicU64::new(0);
/// Live-traffic traces started here.
pub static LIVE_TRACES: AtomicU64 = AtomicU64::new(0);
/// Trace packet-ins dropped by the trace packet-in meter (read from OVS, see
/// [`crate::pipeline::meter_drops`]).
pub static TRACE_METER_DROPS: AtomicU64 = AtomicU64::new(0);
/// Reject packet-ins dropped by their meter.
pub static REJECT_METER_DROPS: AtomicU64 = AtomicU64::new(0);
/// Trace reports dropped on a full queue to the adapter.
pub static REPORTS_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Trace-class packet-ins without a proof of origin, dropped ([`names::FORGED_PACKET_INS`]).
pub static FORGED_PACKET_INS: AtomicU64 = AtomicU64::new(0);
/// Packets that entered br-int with a trace class no trace gave them (cleared), read from OVS.
pub static FORGED_TRACE_PACKETS: AtomicU64 = AtomicU64::new(0);
/// Live-traffic packet-ins dropped by their meter.
pub static LIVE_METER_DROPS: AtomicU64 = AtomicU64::new(0);

/// Adds one to `counter`.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to `counter`.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// The counters by their wire names ([`traceflow_core::counters`]).
pub fn snapshot() -> HashMap<String, u64> {
    [
        (names::PACKET_INS, &PACKET_INS),
        (names::OBSERVATIONS, &OBSERVATIONS),
        (names::INJECTS, &INJECTS),
        (names::INJECT_FAILURES, &INJECT_FAILURES),
        (names::LIVE_TRACES, &LIVE_TRACES),
        (names::TRACE_METER_DROPS, &TRACE_METER_DROPS),
        (names::REJECT_METER_DROPS, &REJECT_METER_DROPS),
        (names::REPORTS_DROPPED, &REPORTS_DROPPED),
        (names::FORGED_PACKET_INS, &FORGED_PACKET_INS),
        (names::LIVE_METER_DROPS, &LIVE_METER_DROPS),
        (names::FORGED_TRACE_PACKETS, &FORGED_TRACE_PACKETS),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.load(Ordering::Relaxed)))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_every_counter_and_counts() {
        let before = snapshot();
        inc(&INJECTS);
        add(&REPORTS_DROPPED, 2);
        let after = snapshot();
        let mut got: Vec<&str> = after.keys().map(String::as_str).collect();
        got.sort_unstable();
        let mut want: Vec<&str> = names::AGENT.iter().map(|(n, _)| *n).collect();
        want.sort_unstable();
        assert_eq!(
            got, want,
            "every counter the manager exposes, and only those"
        );
        assert!(after["injects"] > before["injects"]);
        assert!(after["reports_dropped"] >= before["reports_dropped"] + 2);
    }
}
