//! The human output (`-o table`, `-o wide`): a trace as one row per observation in hop order,
//! trace lists, clusters and inventory. The serialized output lives in [`crate::output`].

use traceflow_proto::v1 as pb;

use crate::{
    output::{destination_text, phase_name, source_text},
    term::{Style, Table, plain},
};

fn enum_name<E: TryFrom<i32>>(v: i32, name: impl Fn(E) -> &'static str) -> String {
    E::try_from(v).map_or_else(|_| v.to_string(), |e| name(e).to_string())
}

fn component(o: &pb::Observation) -> String {
    enum_name(o.component, |c: pb::Component| match c {
        pb::Component::Unspecified => "",
        c => c.as_str_name(),
    })
}

fn action(o: &pb::Observation) -> String {
    enum_name(o.action, |a: pb::Action| match a {
        pb::Action::Unspecified => "",
        a => a.as_str_name(),
    })
}

/// Red for a packet's end by policy or error, green for progress, yellow otherwise.
fn action_style(action: &str) -> Style {
    match action {
        "Dropped" | "Rejected" => Style::Bad,
        "Delivered" | "Forwarded" | "Received" => Style::Good,
        _ => Style::Warn,
    }
}

pub fn phase_style(phase: &str) -> Style {
    match phase {
        "Succeeded" => Style::Good,
        "Failed" => Style::Bad,
        _ => Style::Warn,
    }
}

/// `key=value` for each non-empty field, in a reader's order.
fn details(o: &pb::Observation, wide: bool) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut add = |k: &str, v: &str| {
        if !v.is_empty() {
            parts.push(format!("{k}={v}"));
        }
    };
    if wide {
        add("pod", &o.pod);
    }
    add("translatedSrcIP", &o.translated_src_ip);
    add("translatedDstIP", &o.translated_dst_ip);
    add("tunnelDstIP", &o.tunnel_dst_ip);
    add("egress", &o.egress);
    add("egressIP", &o.egress_ip);
    if wide {
        add("egressNode", &o.egress_node);
        add("srcPodIP", &o.src_pod_ip);
        add("dstMAC", &o.dst_mac);
        if o.ttl != 0 {
            add("ttl", &o.ttl.to_string());
        }
    }
    parts.join(" ")
}

/// Microseconds as `+12µs`, `+1.234ms`, `+2.000s`, or negative (`-40µs`) when another
/// Node's clock runs behind the first hop's.
fn offset(us: i64) -> String {
    let sign = if us < 0 { '-' } else { '+' };
    let n = us.unsigned_abs();
    if n < 1_000 {
        format!("{sign}{n}µs")
    } else if n < 1_000_000 {
        format!("{sign}{:.3}ms", n as f64 / 1e3)
    } else {
        format!("{sign}{:.3}s", n as f64 / 1e6)
    }
}

/// UTC `YYYY-MM-DD HH:MM:SS` (with `.ffffff` when `fraction`) of microseconds since the epoch.
pub fn utc(us: i64, fraction: bool) -> String {
    if us <= 0 {
        return String::new();
    }
    let secs = us.div_euclid(1_000_000);
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
    let text = humantime::format_rfc3339_seconds(t).to_string();
    let base = text.trim_end_matches('Z').replace('T', " ");
    if fraction {
        format!("{base}.{:06}", us.rem_euclid(1_000_000))
    } else {
        base
    }
}

/// A coarse age (`42s`, `5m`, `3h`, `2d`) of microseconds since the epoch.
pub fn age(us: i64, now_us: i64) -> String {
    if us <= 0 {
        return "never".into();
    }
    let s = (now_us - us).max(0) / 1_000_000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The trace's duration, `running` while in flight.
fn duration(s: Option<&pb::TraceflowStatus>) -> String {
    match s {
        Some(s) if s.start_time_micros > 0 && s.end_time_micros >= s.start_time_micros => {
            let us = s.end_time_micros - s.start_time_micros;
            format!("{:.3} ms", us as f64 / 1e3)
        }
        Some(s) if s.start_time_micros > 0 => "running".into(),
        _ => String::new(),
    }
}

/// The observations of every Node in hop order, each with its Node and role.
fn hops(s: &pb::TraceflowStatus) -> Vec<(&pb::NodeResult, &pb::Observation)> {
    let mut all: Vec<_> = s
        .results
        .iter()
        .flat_map(|r| r.observations.iter().map(move |o| (r, o)))
        .collect();
    all.sort_by_key(|(_, o)| o.sequence);
    all
}

/// A trace for people: a header (name, cluster, phase, reason, endpoints, duration) and one
/// row per observation in hop order.
pub fn trace(t: &pb::Traceflow, wide: bool, colour: bool) -> String {
    let s = t.status.as_ref();
    let phase = phase_name(s);
    let paint = |style: Style, text: &str| {
        if colour {
            style.paint(text)
        } else {
            text.to_string()
        }
    };
    let mut out = String::new();
    out.push_str(&format!(
        "Traceflow {}  (cluster {})\n",
        paint(Style::Bold, &t.name),
        t.cluster
    ));
    out.push_str(&format!(
        "Phase:     {}\n",
        paint(
            phase_style(phase),
            if phase.is_empty() { "Unknown" } else { phase }
        )
    ));
    if let Some(reason) = s.map(|s| s.reason.as_str()).filter(|r| !r.is_empty()) {
        out.push_str(&format!("Reason:    {reason}\n"));
    }
    out.push_str(&format!(
        "Path:      {} -> {}\n",
        source_text(t.spec.as_ref()),
        destination_text(t.spec.as_ref())
    ));
    let d = duration(s);
    if !d.is_empty() {
        out.push_str(&format!("Duration:  {d}\n"));
    }
    if wide {
        out.push_str(&format!("UID:       {}\n", t.uid));
        if !t.created_by.is_empty() {
            out.push_str(&format!(
                "Created:   {} by {}\n",
                utc(t.creation_time_micros, false),
                t.created_by
            ));
        }
    }
    if let Some(p) = s.and_then(|s| s.captured_packet.as_ref()) {
        out.push_str(&format!("Captured:  {} -> {}\n", p.src_ip, p.dst_ip));
    }
    let rows = s.map(hops).unwrap_or_default();
    if rows.is_empty() {
        out.push_str("\nNo observations.\n");
        return out;
    }
    let first = rows
        .iter()
        .map(|(_, o)| o.timestamp_micros)
        .find(|t| *t > 0)
        .unwrap_or(0);
    let mut headers = vec![
        "#",
        "NODE",
        "ROLE",
        "COMPONENT",
        "INFO",
        "ACTION",
        "POLICY",
        "RULE",
        "DETAILS",
        "OFFSET",
    ];
    if wide {
        headers.push("TIME (UTC)");
    }
    let mut table = Table::new(&headers);
    for (r, o) in rows {
        let act = action(o);
        let style = action_style(&act);
        let mut row = vec![
            plain(o.sequence.to_string()),
            plain(&r.node),
            // The reply leg of a `--reply` trace says so where the Node's part is named.
            plain(if r.direction == pb::Direction::Reply as i32 {
                format!("{} (reply)", r.role)
            } else {
                r.role.clone()
            }),
            plain(component(o)),
            plain(&o.component_info),
            (act, Some(style)),
            plain(&o.network_policy),
            plain(&o.network_policy_rule),
            plain(details(o, wide)),
            plain(if o.timestamp_micros > 0 && first > 0 {
                offset(o.timestamp_micros - first)
            } else {
                String::new()
            }),
        ];
        if wide {
            row.push(plain(utc(o.timestamp_micros, true)));
        }
        table.row(row);
    }
    out.push('\n');
    out.push_str(&table.render(colour));
    out
}

/// `tfctl list`: one row per trace.
pub fn trace_list(traces: &[pb::Traceflow], wide: bool, colour: bool) -> String {
    let now = now_micros();
    let mut headers = vec![
        "NAME",
        "CLUSTER",
        "PHASE",
        "SOURCE",
        "DESTINATION",
        "AGE",
        "REASON",
    ];
    if wide {
        headers.extend(["UID", "CREATED BY", "DURATION"]);
    }
    let mut table = Table::new(&headers);
    for t in traces {
        let s = t.status.as_ref();
        let phase = phase_name(s);
        let mut row = vec![
            plain(&t.name),
            plain(&t.cluster),
            (phase.to_string(), Some(phase_style(phase))),
            plain(source_text(t.spec.as_ref())),
            plain(destination_text(t.spec.as_ref())),
            plain(age(t.creation_time_micros, now)),
            plain(s.map_or("", |s| s.reason.as_str())),
        ];
        if wide {
            row.extend([plain(&t.uid), plain(&t.created_by), plain(duration(s))]);
        }
        table.row(row);
    }
    table.render(colour)
}

fn health(c: &pb::Cluster) -> (String, Option<Style>) {
    let h = enum_name(c.health, |h: pb::ClusterHealth| match h {
        pb::ClusterHealth::HealthUnspecified => "Unknown",
        h => h.as_str_name(),
    });
    let style = match h.as_str() {
        "Up" => Style::Good,
        "Down" => Style::Bad,
        _ => Style::Warn,
    };
    (h, Some(style))
}

/// `tfctl cluster list|get`: health, agents and inventory counts.
pub fn clusters(list: &[pb::Cluster], wide: bool, colour: bool) -> String {
    let now = now_micros();
    let mut headers = vec![
        "NAME",
        "HEALTH",
        "AGENTS",
        "NODES",
        "NAMESPACES",
        "PODS",
        "SERVICES",
        "POLICIES",
        "HEARTBEAT",
    ];
    if wide {
        headers.extend(["REGISTERED (UTC)", "CERTIFICATE SERIAL"]);
    }
    let mut table = Table::new(&headers);
    for c in list {
        let inv = c.inventory.unwrap_or_default();
        let agents_style = if c.connected_agents < c.expected_agents {
            Style::Warn
        } else {
            Style::Good
        };
        let mut row = vec![
            plain(&c.name),
            health(c),
            (
                format!("{}/{}", c.connected_agents, c.expected_agents),
                Some(agents_style),
            ),
            plain(inv.nodes.to_string()),
            plain(inv.namespaces.to_string()),
            plain(inv.pods.to_string()),
            plain(inv.services.to_string()),
            plain(inv.policies.to_string()),
            plain(age(c.last_heartbeat_micros, now)),
        ];
        if wide {
            row.extend([
                plain(utc(c.registered_micros, false)),
                plain(&c.certificate_serial),
            ]);
        }
        table.row(row);
    }
    table.render(colour)
}

fn labels(l: &std::collections::HashMap<String, String>) -> String {
    let mut v: Vec<_> = l.iter().map(|(k, v)| format!("{k}={v}")).collect();
    v.sort();
    v.join(",")
}

/// `tfctl pods`.
pub fn pods(list: &[pb::InventoryPod], wide: bool, colour: bool) -> String {
    let mut headers = vec!["NAMESPACE", "NAME", "NODE", "IPS"];
    if wide {
        headers.extend(["HOST NETWORK", "LABELS"]);
    }
    let mut table = Table::new(&headers);
    for p in list {
        let mut row = vec![
            plain(&p.namespace),
            plain(&p.name),
            plain(&p.node),
            plain(p.ips.join(",")),
        ];
        if wide {
            row.extend([plain(p.host_network.to_string()), plain(labels(&p.labels))]);
        }
        table.row(row);
    }
    table.render(colour)
}

/// `tfctl services`.
pub fn services(list: &[pb::InventoryService], _wide: bool, colour: bool) -> String {
    let mut table = Table::new(&["NAMESPACE", "NAME", "CLUSTER-IPS", "PORTS"]);
    for s in list {
        let ports: Vec<String> = s
            .ports
            .iter()
            .map(|p| {
                let name = if p.name.is_empty() {
                    String::new()
                } else {
                    format!("{}:", p.name)
                };
                format!("{name}{}/{}->{}", p.port, p.protocol, p.target_port)
            })
            .collect();
        table.row(vec![
            plain(&s.namespace),
            plain(&s.name),
            plain(s.cluster_ips.join(",")),
            plain(ports.join(",")),
        ]);
    }
    table.render(colour)
}

/// `tfctl nodes`.
pub fn nodes(list: &[pb::InventoryNode], wide: bool, colour: bool) -> String {
    let mut headers = vec!["NAME", "POD-CIDRS", "INTERNAL-IPS"];
    if wide {
        headers.push("LABELS");
    }
    let mut table = Table::new(&headers);
    for n in list {
        let mut row = vec![
            plain(&n.name),
            plain(n.pod_cidrs.join(",")),
            plain(n.internal_ips.join(",")),
        ];
        if wide {
            row.push(plain(labels(&n.labels)));
        }
        table.row(row);
    }
    table.render(colour)
}

/// `tfctl namespaces`.
pub fn namespaces(list: &[pb::InventoryNamespace], wide: bool, colour: bool) -> String {
    let mut headers = vec!["NAME"];
    if wide {
        headers.push("LABELS");
    }
    let mut table = Table::new(&headers);
    for n in list {
        let mut row = vec![plain(&n.name)];
        if wide {
            row.push(plain(labels(&n.labels)));
        }
        table.row(row);
    }
    table.render(colour)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(seq: u32, c: pb::Component, info: &str, a: pb::Action, ts: i64) -> pb::Observation {
        pb::Observation {
            component: c as i32,
            component_info: info.into(),
            action: a as i32,
            sequence: seq,
            timestamp_micros: ts,
            ..Default::default()
        }
    }

    fn dropped_trace() -> pb::Traceflow {
        let mut drop = obs(
            3,
            pb::Component::NetworkPolicy,
            "IngressMetric",
            pb::Action::Dropped,
            1_700_000_000_000_450,
        );
        drop.network_policy = "K8sNetworkPolicy:default/deny".into();
        drop.network_policy_rule = "r1".into();
        let mut out = obs(
            2,
            pb::Component::Forwarding,
            "Output",
            pb::Action::Forwarded,
            1_700_000_000_000_100,
        );
        out.tunnel_dst_ip = "192.168.77.2".into();
        pb::Traceflow {
            name: "p0-to-db-abc".into(),
            cluster: "c1".into(),
            spec: Some(traceflow_core::fixtures::pod_to_pod("p0", "db")),
            status: Some(pb::TraceflowStatus {
                phase: pb::TraceflowPhase::Succeeded as i32,
                start_time_micros: 1_700_000_000_000_000,
                end_time_micros: 1_700_000_000_001_500,
                results: vec![
                    // Receiver listed first: rows must still follow the hop sequence.
                    pb::NodeResult {
                        node: "n2".into(),
                        role: "receiver".into(),
                        timestamp: 0,
                        direction: pb::Direction::Forward as i32,
                        observations: vec![drop],
                    },
                    pb::NodeResult {
                        node: "n1".into(),
                        role: "sender".into(),
                        timestamp: 0,
                        direction: pb::Direction::Forward as i32,
                        observations: vec![
                            obs(
                                1,
                                pb::Component::SpoofGuard,
                                "",
                                pb::Action::Forwarded,
                                1_700_000_000_000_000,
                            ),
                            out,
                        ],
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn trace_rows_follow_hop_order_with_offsets_and_policy() {
        let text = trace(&dropped_trace(), false, false);
        assert!(text.contains("Phase:     Succeeded\n"), "{text}");
        assert!(text.contains("Duration:  1.500 ms\n"), "{text}");
        assert!(
            text.contains("Path:      default/p0 -> default/db\n"),
            "{text}"
        );
        let rows: Vec<&str> = text.lines().skip_while(|l| !l.starts_with('#')).collect();
        assert_eq!(rows.len(), 4, "{text}");
        let words = |r: &str| r.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(
            words(rows[1])[..4],
            ["1", "n1", "sender", "SpoofGuard"],
            "{text}"
        );
        assert!(rows[1].ends_with("+0µs"), "{text}");
        assert!(
            rows[2].contains("tunnelDstIP=192.168.77.2") && rows[2].ends_with("+100µs"),
            "{text}"
        );
        assert_eq!(
            words(rows[3])[..8],
            [
                "3",
                "n2",
                "receiver",
                "NetworkPolicy",
                "IngressMetric",
                "Dropped",
                "K8sNetworkPolicy:default/deny",
                "r1"
            ],
            "{text}"
        );
        assert!(!text.contains('\x1b'));
        let coloured = trace(&dropped_trace(), true, true);
        assert!(coloured.contains("\x1b[1;31mDropped\x1b[0m"), "{coloured}");
        assert!(
            coloured.contains("TIME (UTC)") && coloured.contains("2023-11-14 22:13:20.000450"),
            "{coloured}"
        );
    }

    #[test]
    fn offsets_and_ages_read_naturally() {
        assert_eq!(offset(12), "+12µs");
        assert_eq!(offset(1_234), "+1.234ms");
        assert_eq!(offset(2_000_000), "+2.000s");
        assert_eq!(offset(-373), "-373µs");
        assert_eq!(age(1, 1 + 90_000_000), "1m");
        assert_eq!(age(0, 5), "never");
        assert_eq!(
            utc(1_700_000_000_000_450, true),
            "2023-11-14 22:13:20.000450"
        );
    }
}
