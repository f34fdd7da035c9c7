//! The counters an agent pushes (`AgentCounters`, docs/contracts.md "Metrics"): one list for
//! the agent that counts and the manager that exposes each as
//! `traceflow_agent_<name>_total{cluster,node}` (names it does not list are ignored).

/// Every packet-in read from br-int (trace packets, live traffic, Reject answers).
pub const PACKET_INS: &str = "packet_ins";
/// Packet-ins turned into trace reports.
pub const OBSERVATIONS: &str = "observations";
/// Inject commands received.
pub const INJECTS: &str = "injects";
/// Injections that failed (reported as `TraceFailure`).
pub const INJECT_FAILURES: &str = "inject_failures";
/// Live-traffic traces started here.
pub const LIVE_TRACES: &str = "live_traces";
/// Trace packet-ins Open vSwitch dropped at the trace packet-in meter (over its rate): each
/// is a Node's report lost, and its trace ends by timeout.
pub const TRACE_METER_DROPS: &str = "trace_meter_drops";
/// Reject packet-ins dropped at their own meter: packets a Reject rule left unanswered.
pub const REJECT_METER_DROPS: &str = "reject_meter_drops";
/// Trace reports the agent could not queue for the adapter (a full queue): each trace ends by
/// timeout.
pub const REPORTS_DROPPED: &str = "reports_dropped";

/// Every agent counter: (name, what it counts).
pub const AGENT: [(&str, &str); 8] = [
    (PACKET_INS, "Packet-ins read from br-int"),
    (OBSERVATIONS, "Packet-ins turned into trace reports"),
    (INJECTS, "Inject commands received"),
    (INJECT_FAILURES, "Injections that failed"),
    (LIVE_TRACES, "Live-traffic traces started"),
    (
        TRACE_METER_DROPS,
        "Trace packet-ins dropped by the packet-in meter (their traces end by timeout)",
    ),
    (
        REJECT_METER_DROPS,
        "Reject packet-ins dropped by their meter (left unanswered)",
    ),
    (
        REPORTS_DROPPED,
        "Trace reports dropped on a full queue to the adapter (their traces end by timeout)",
    ),
];
