//! The agent's counters, pushed to the adapter as `AgentCounters` (docs/contracts.md
//! "Metrics"); the manager serves them as `traceflow_agent_<name>_total{cluster,node}`.
//!
//! Process-wide and monotonic since the agent started.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
};

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

/// Adds one to `counter`.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The counters by their wire names.
pub fn snapshot() -> HashMap<String, u64> {
    [
        ("packet_ins", &PACKET_INS),
        ("observations", &OBSERVATIONS),
        ("injects", &INJECTS),
        ("inject_failures", &INJECT_FAILURES),
        ("live_traces", &LIVE_TRACES),
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
        let after = snapshot();
        assert_eq!(after.len(), 5);
        assert!(after["injects"] > before["injects"]);
        assert!(after.contains_key("packet_ins"));
    }
}
