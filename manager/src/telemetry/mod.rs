//! The manager's telemetry: Prometheus-format metrics served at `GET /metrics` on the one TLS
//! port ([`route`]), and the span names the manager exports (DESIGN "Observability").
//!
//! ```text
//!   TraceHub::save ──phase changes, flush time──▶ Metrics ◀──connects, heartbeats── Fleet
//!                                                    │       (agent counters per cluster/node)
//!   GET /metrics (view role: cert or bearer) ──▶ route::MetricsLayer ──encode──▶ text format
//! ```
//!
//! Contract (docs/contracts.md "Metrics"): counters only grow while the manager runs; agent
//! counters arrive with adapter heartbeats and are folded in as deltas, so an agent restart
//! (its counters start again at 0) never makes a manager counter go down.

pub mod route;

use std::{
    collections::HashMap,
    sync::{LazyLock, Mutex},
};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use traceflow_proto::v1 as pb;

pub use route::MetricsLayer;

/// Labels of a metric: `(name, value)` pairs.
pub type Labels = Vec<(String, String)>;

/// Most distinct (cluster, node) pairs the agent counters keep series for. A peer names the
/// Nodes, so without a bound an adapter could grow `/metrics` (and the manager's memory) at
/// will; counters of further Nodes are dropped and counted in `dropped_node_series`.
pub const MAX_NODE_SERIES: usize = 10_000;

/// Longest label value exposed, in bytes (a Kubernetes Node name is at most 253).
const MAX_LABEL_VALUE_BYTES: usize = 253;

/// A label value as the text format needs it: `\`, `"` and newlines escaped (the encoder
/// writes values verbatim, so a quote in a peer-supplied name would forge series), cut to
/// [`MAX_LABEL_VALUE_BYTES`] on a character boundary.
pub fn label_value(raw: &str) -> String {
    let mut end = raw.len().min(MAX_LABEL_VALUE_BYTES);
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + 2);
    for c in raw[..end].chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// Every metric the manager serves.
pub struct Metrics {
    registry: Registry,
    traces: Family<Labels, Counter>,
    trace_seconds: Histogram,
    in_flight: Gauge,
    flush_seconds: Histogram,
    clusters: Gauge,
    agents: Family<Labels, Gauge>,
    refused: Family<Labels, Counter>,
    agent: HashMap<&'static str, Family<Labels, Counter>>,
    /// Agent counters of Nodes beyond [`MAX_NODE_SERIES`], dropped.
    dropped_node_series: Counter,
    /// Last value seen per (cluster, node, counter), for deltas.
    last: Mutex<HashMap<(String, String, &'static str), u64>>,
    /// The (cluster, node) pairs that have series, at most [`MAX_NODE_SERIES`].
    node_series: Mutex<std::collections::HashSet<(String, String)>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Create → terminal latency buckets, seconds (a trace times out after at most 300 s).
const TRACE_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 300.0,
];
/// Store flush buckets, seconds.
const FLUSH_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

impl Metrics {
    /// A fresh set (the process uses [`global`]; tests make their own).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("traceflow");
        let traces = Family::<Labels, Counter>::default();
        registry.register(
            "traces",
            "Traces that entered each phase (Pending, Running, Succeeded, Failed)",
            traces.clone(),
        );
        let trace_seconds = Histogram::new(TRACE_BUCKETS);
        registry.register(
            "trace_duration_seconds",
            "Time from a trace's creation to its terminal phase",
            trace_seconds.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "traces_in_flight",
            "Traces Pending or Running",
            in_flight.clone(),
        );
        let flush_seconds = Histogram::new(FLUSH_BUCKETS);
        registry.register(
            "store_flush_seconds",
            "Time to make a trace change durable before it is acknowledged",
            flush_seconds.clone(),
        );
        let clusters = Gauge::default();
        registry.register(
            "connected_clusters",
            "Clusters whose adapter stream is open",
            clusters.clone(),
        );
        let agents = Family::<Labels, Gauge>::default();
        registry.register(
            "connected_agents",
            "Agents connected to each cluster's adapter (its last heartbeat)",
            agents.clone(),
        );
        let refused = Family::<Labels, Counter>::default();
        registry.register(
            "refused_calls",
            "Calls refused at the edge, by kind (register, authenticate, rate-limit)",
            refused.clone(),
        );
        let mut agent = HashMap::new();
        // Exposed as `traceflow_agent_<name>_total{cluster,node}`; other names an adapter
        // sends are ignored (peer input stays bounded).
        for (name, help) in traceflow_core::counters::per_node() {
            let family = Family::<Labels, Counter>::default();
            registry.register(
                format!("agent_{name}"),
                format!("{help}, per cluster and node (pushed with heartbeats)"),
                family.clone(),
            );
            agent.insert(name, family);
        }
        let dropped_node_series = Counter::default();
        registry.register(
            "dropped_node_series",
            "Agent counter reports dropped because their cluster/node pair exceeded the series bound",
            dropped_node_series.clone(),
        );
        Metrics {
            registry,
            traces,
            trace_seconds,
            in_flight,
            flush_seconds,
            clusters,
            agents,
            refused,
            agent,
            dropped_node_series,
            last: Mutex::new(HashMap::new()),
            node_series: Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// The text exposition format (OpenMetrics text, which Prometheus scrapes).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// A trace entered `phase` (call once per transition).
    pub fn trace_phase(&self, phase: pb::TraceflowPhase) {
        self.traces
            .get_or_create(&vec![("phase".into(), phase.as_str_name().into())])
            .inc();
    }

    /// A trace reached a terminal phase `seconds` after its creation.
    pub fn trace_finished(&self, seconds: f64) {
        self.trace_seconds.observe(seconds.max(0.0));
    }

    /// A call was refused at the edge; `kind` is one of a fixed few words (never input).
    pub fn refused(&self, kind: &'static str) {
        self.refused
            .get_or_create(&vec![("kind".into(), kind.into())])
            .inc();
    }

    pub fn set_in_flight(&self, n: usize) {
        self.in_flight.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn store_flushed(&self, seconds: f64) {
        self.flush_seconds.observe(seconds);
    }

    pub fn set_connected_clusters(&self, n: usize) {
        self.clusters.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Folds in an adapter heartbeat of `cluster`: its connected agents and their counters.
    pub fn heartbeat(&self, cluster: &str, beat: &pb::AdapterHeartbeat) {
        self.agents
            .get_or_create(&vec![("cluster".into(), label_value(cluster))])
            .set(i64::from(beat.connected_agents));
        let (Ok(mut last), Ok(mut series)) = (self.last.lock(), self.node_series.lock()) else {
            return;
        };
        for node in &beat.agent_counters {
            let pair = (cluster.to_string(), node.node.clone());
            if !series.contains(&pair) {
                if series.len() >= MAX_NODE_SERIES {
                    self.dropped_node_series.inc();
                    continue;
                }
                series.insert(pair);
            }
            for (name, _) in traceflow_core::counters::per_node() {
                let Some(&value) = node.counters.get(name) else {
                    continue;
                };
                let key = (cluster.to_string(), node.node.clone(), name);
                let before = last.insert(key, value).unwrap_or(0);
                // Smaller than before: the agent restarted and counts from 0 again.
                let delta = if value >= before {
                    value - before
                } else {
                    value
                };
                if delta > 0
                    && let Some(family) = self.agent.get(name)
                {
                    family
                        .get_or_create(&vec![
                            ("cluster".into(), label_value(cluster)),
                            ("node".into(), label_value(&node.node)),
                        ])
                        .inc_by(delta);
                }
            }
        }
    }
}

static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics (what `/metrics` serves).
pub fn global() -> &'static Metrics {
    &GLOBAL
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn phases_latency_and_gauges_are_exposed() {
        let m = Metrics::new();
        m.trace_phase(pb::TraceflowPhase::Pending);
        m.trace_phase(pb::TraceflowPhase::Succeeded);
        m.trace_phase(pb::TraceflowPhase::Succeeded);
        m.trace_finished(0.3);
        m.set_in_flight(4);
        m.set_connected_clusters(2);
        let text = m.encode();
        assert_eq!(
            value(&text, "traceflow_traces_total{phase=\"Succeeded\"}"),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            value(&text, "traceflow_traces_total{phase=\"Pending\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "traceflow_trace_duration_seconds_count"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "traceflow_trace_duration_seconds_bucket{le=\"0.5\"}"),
            Some(1.0)
        );
        assert_eq!(value(&text, "traceflow_traces_in_flight"), Some(4.0));
        assert_eq!(value(&text, "traceflow_connected_clusters"), Some(2.0));
        assert!(text.contains("# TYPE traceflow_traces counter"), "{text}");
    }

    #[test]
    fn agent_counters_fold_in_as_deltas_and_survive_restarts() {
        let m = Metrics::new();
        let beat = |n: u64| pb::AdapterHeartbeat {
            connected_agents: 1,
            expected_agents: 2,
            agent_counters: vec![pb::NodeCounters {
                node: "n1".into(),
                counters: [("packet_ins".to_string(), n), ("made_up".to_string(), 99)].into(),
            }],
        };
        m.heartbeat("c1", &beat(5));
        m.heartbeat("c1", &beat(7));
        let series = "traceflow_agent_packet_ins_total{cluster=\"c1\",node=\"n1\"}";
        assert_eq!(value(&m.encode(), series), Some(7.0));
        // The agent restarted: 3 new packet-ins since.
        m.heartbeat("c1", &beat(3));
        let text = m.encode();
        assert_eq!(value(&text, series), Some(10.0));
        assert_eq!(
            value(&text, "traceflow_connected_agents{cluster=\"c1\"}"),
            Some(1.0)
        );
        assert!(!text.contains("made_up"));
    }

    #[test]
    fn every_agent_counter_is_exposed_with_its_help() {
        let m = Metrics::new();
        let beat = pb::AdapterHeartbeat {
            connected_agents: 1,
            expected_agents: 1,
            agent_counters: vec![pb::NodeCounters {
                node: "n1".into(),
                counters: traceflow_core::counters::per_node()
                    .map(|(name, _)| (name.to_string(), 2))
                    .collect(),
            }],
        };
        m.heartbeat("c1", &beat);
        let text = m.encode();
        for (name, help) in traceflow_core::counters::per_node() {
            let series = format!("traceflow_agent_{name}_total{{cluster=\"c1\",node=\"n1\"}}");
            assert_eq!(value(&text, &series), Some(2.0), "{series} in {text}");
            assert!(
                text.contains(&format!("# HELP traceflow_agent_{name} {help}")),
                "help of {name} in {text}"
            );
        }
    }

    #[test]
    fn label_values_are_escaped_and_node_series_bounded() {
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(label_value(&"é".repeat(200)).len(), 252);
        let m = Metrics::new();
        let beat = |nodes: std::ops::Range<usize>| pb::AdapterHeartbeat {
            connected_agents: 1,
            expected_agents: 1,
            agent_counters: nodes
                .map(|i| pb::NodeCounters {
                    node: format!("n{i}\"}} forged 1\n"),
                    counters: [("packet_ins".to_string(), 1)].into(),
                })
                .collect(),
        };
        m.heartbeat("c1", &beat(0..MAX_NODE_SERIES + 5));
        let text = m.encode();
        // Every line is a comment, a sample of a known family, or EOF: nothing forged.
        for line in text.lines() {
            assert!(
                line.starts_with('#') || line.starts_with("traceflow_"),
                "forged line {line:?}"
            );
        }
        let packet_in_series = text
            .lines()
            .filter(|l| l.starts_with("traceflow_agent_packet_ins_total{"))
            .count();
        assert_eq!(packet_in_series, MAX_NODE_SERIES);
        assert_eq!(
            value(&text, "traceflow_dropped_node_series_total"),
            Some(5.0)
        );
        // Known pairs keep counting once the bound is reached.
        m.heartbeat("c1", &beat(0..1));
        assert!(m.encode().contains("traceflow_dropped_node_series_total 5"));
    }
}
