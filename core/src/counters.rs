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

/// Trace-class packet-ins without a proof of origin (neither this agent's injected mark nor
/// the tunnel): forged trace packets the pipeline let through, dropped before any report.
pub const FORGED_PACKET_INS: &str = "forged_packet_ins";
/// Live-traffic packet-ins dropped at their own meter.
pub const LIVE_METER_DROPS: &str = "live_meter_drops";
/// Packets that entered br-int with the trace DSCP or a running live trace's tag that no trace
/// gave them (from a Pod, the Node, the uplink, or the tunnel without the cluster's key): the
/// pipeline cleared it and forwarded them as plain traffic. Read from OVS.
pub const FORGED_TRACE_PACKETS: &str = "forged_trace_packets";

/// Every agent counter: (name, what it counts).
pub const AGENT: [(&str, &str); 11] = [
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
    (
        FORGED_PACKET_INS,
        "Trace-class packet-ins without the injecting agent's mark or the tunnel (forged), dropped",
    ),
    (
        LIVE_METER_DROPS,
        "Live-traffic packet-ins dropped by their meter (their traces end by timeout)",
    ),
    (
        FORGED_TRACE_PACKETS,
        "Packets entering br-int with a trace class no trace gave them (forged; cleared, forwarded as plain traffic)",
    ),
];

/// Trace reports the adapter refused because the reporting Node has no part in the trace (or
/// in the leg the report names).
pub const REPORTS_REFUSED_FOREIGN_NODE: &str = "reports_refused_foreign_node";
/// Trace reports of an injected trace without the trace's secret: not from its packet.
pub const REPORTS_REFUSED_BAD_SECRET: &str = "reports_refused_bad_secret";
/// A second result of one Node in one leg of a trace.
pub const REPORTS_REFUSED_DUPLICATE: &str = "reports_refused_duplicate";
/// Trace reports over the adapter's bounds (observations per result, encoded bytes).
pub const REPORTS_REFUSED_OVERSIZED: &str = "reports_refused_oversized";
/// Live-traffic reports whose packet is not the traced connection (the trace's filter, or the
/// tuple the tagging Node captured).
pub const REPORTS_REFUSED_FILTER_MISMATCH: &str = "reports_refused_filter_mismatch";

/// The counters the adapter keeps for each Node's agent, sent beside the agent's own
/// ([`AGENT`]) in the same `NodeCounters` of its heartbeats: (name, what it counts). Each is a
/// report refused, never stored or relayed.
pub const ADAPTER: [(&str, &str); 5] = [
    (
        REPORTS_REFUSED_FOREIGN_NODE,
        "Trace reports refused by the adapter: the Node has no part in the trace",
    ),
    (
        REPORTS_REFUSED_BAD_SECRET,
        "Trace reports refused by the adapter: without the trace's secret (not from its packet)",
    ),
    (
        REPORTS_REFUSED_DUPLICATE,
        "Trace reports refused by the adapter: a second result of the Node in one leg",
    ),
    (
        REPORTS_REFUSED_OVERSIZED,
        "Trace reports refused by the adapter: too many observations or bytes",
    ),
    (
        REPORTS_REFUSED_FILTER_MISMATCH,
        "Live-traffic reports refused by the adapter: the packet is not the traced connection",
    ),
];

/// Every counter a Node's series carries at the manager: the agent's own ([`AGENT`]) and what
/// its adapter counts about it ([`ADAPTER`]), each `(name, what it counts)`.
pub fn per_node() -> impl Iterator<Item = (&'static str, &'static str)> {
    AGENT.into_iter().chain(ADAPTER)
}
