//! 1000 concurrent injected traces in one cluster through the manager's gRPC API
//! (tests/topologies/scale.yaml: two dual-stack Nodes, K8s and Antrea-native policies), with a
//! mix of six source Pods on both Nodes; Pod→Pod on the same Node and on the other Node
//! (sender: SpoofGuard + Output Forwarded with tunnelDstIP; receiver: Received + Output
//! Delivered), to a gateway and to an external address; IPv4 and IPv6; ICMP, TCP and UDP; and
//! about 40 % dropped: by a K8s NetworkPolicy's default deny (IngressDefaultRule and
//! EgressDefaultRule Dropped) and by Antrea-native Drop rules (IngressMetric and EgressMetric
//! Dropped with networkPolicy and networkPolicyRule). All are created (CreateTraceflow, 64
//! calls at a time) before any is watched (WatchTraceflow); every one must end Succeeded with
//! exactly its own full ordered observation list per Node. Kinds that differ only in the
//! destination port (probe → web-a TCP 8080 dropped, TCP 8081 delivered) or only in the
//! source (client-c → vault dropped, web-b → vault delivered) interleave, so a trace that got
//! another's observations fails.
//! A trace takes ~1 ms, so back-to-back creation overlaps only a hundred or so; to have all
//! 1000 in flight at once for real, the second test pauses both Nodes' agents (SIGSTOP;
//! sources are on both Nodes, and inter-Node traces need the receiver's agent too) until the
//! manager lists all 1000 Running, then resumes them.
//! Prints timing figures: create → all done, per-trace latency p50/p99 (manager's creation
//! time → the adapter's terminal transition), and how many traces overlapped in flight.
//!
//! Needs root, Open vSwitch and `cargo build --workspace --bins`; fails loudly, never skips.

mod common;

use std::time::{Duration, Instant};

use common::trace::{
    Api, NodeWant, check_results, gateway_ip, network_policy, node_ip, output, output_tunnel,
    phase, received, receiver, require_binaries, results_json, runtime, sender, spec, spoofguard,
    to_ip, to_json, to_pod, up_with_config,
};
use common::{Lab, Paused, require_lab_prerequisites, topology};
use futures::{StreamExt, stream};
use traceflow_proto::v1 as pb;

const TRACES: usize = 1000;
/// Pods of scale.yaml.
const PODS: usize = 9;
/// Nodes of scale.yaml, one agent each.
const NODES: usize = 2;

/// One kind of trace in the mix: source Pod, destination, packet, and its full results.
#[derive(Clone)]
struct Kind {
    what: &'static str,
    src: &'static str,
    dst: pb::Destination,
    packet: Option<pb::Packet>,
    want: Vec<NodeWant>,
}

impl Kind {
    fn ipv6(&self) -> bool {
        self.packet
            .as_ref()
            .is_some_and(|p| p.ipv6_header.is_some())
    }

    /// The table of the drop that ends it, if it is dropped.
    fn dropped_by(&self) -> Option<&str> {
        let last = self.want.last()?.observations.last()?;
        (last["action"] == "Dropped").then(|| last["componentInfo"].as_str().unwrap_or("?"))
    }
}

fn l4(ipv6: bool, th: Option<pb::TransportHeader>) -> Option<pb::Packet> {
    Some(pb::Packet {
        ip_header: (!ipv6).then(pb::IpHeader::default),
        ipv6_header: ipv6.then(pb::IPv6Header::default),
        transport_header: th,
        ..Default::default()
    })
}

fn tcp(port: i32) -> Option<pb::TransportHeader> {
    Some(pb::TransportHeader {
        tcp: Some(pb::TcpHeader {
            dst_port: port,
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn udp(port: i32) -> Option<pb::TransportHeader> {
    Some(pb::TransportHeader {
        udp: Some(pb::UdpHeader {
            dst_port: port,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The mix, with each kind's full per-Node observation lists from the inventory's addresses.
fn mix(pods: &[pb::InventoryPod], nodes: &[pb::InventoryNode]) -> Result<Vec<Kind>, String> {
    let sg =
        |pod: &str, ipv6: bool| common::trace::pod_ip(pods, pod, ipv6).map(|ip| spoofguard(&ip));
    let node = |name: &str| {
        nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or(format!("no Node {name} in c1"))
    };
    // The underlay, hence tunnelDstIP, is IPv4 for both packet families.
    let to_n1 = output_tunnel(&node_ip(nodes, "n1", false)?);
    let to_n2 = output_tunnel(&node_ip(nodes, "n2", false)?);
    let gw1 = gateway_ip(node("n1")?, false)?;
    let gw2 = gateway_ip(node("n2")?, true)?;
    let delivered = output("Delivered");
    let out_of_network = output("ForwardedOutOfNetwork");
    let db_allow = network_policy(
        "IngressRule",
        "Forwarded",
        "K8sNetworkPolicy:default/db-ingress",
        "",
    );
    let ingress_deny = network_policy("IngressDefaultRule", "Dropped", "", "");
    let egress_deny = network_policy("EgressDefaultRule", "Dropped", "", "");
    let vault_drop = network_policy(
        "IngressMetric",
        "Dropped",
        "AntreaClusterNetworkPolicy:vault-guard",
        "drop-clients",
    );
    let probe_drop = network_policy(
        "EgressMetric",
        "Dropped",
        "AntreaNetworkPolicy:default/probe-egress",
        "drop-web-8080",
    );
    let k = |what, src, dst, packet, want| Kind {
        what,
        src,
        dst,
        packet,
        want,
    };
    Ok(vec![
        // Forwarded and delivered.
        k(
            "same Node (n1), ICMP",
            "client-a",
            to_pod("web-a"),
            l4(false, None),
            vec![sender(
                "n1",
                vec![sg("client-a", false)?, delivered.clone()],
            )],
        ),
        k(
            "same Node (n2), IPv6 TCP",
            "client-c",
            to_pod("web-b"),
            l4(true, tcp(80)),
            vec![sender("n2", vec![sg("client-c", true)?, delivered.clone()])],
        ),
        k(
            "n1 -> n2, UDP",
            "client-a",
            to_pod("web-b"),
            l4(false, udp(53)),
            vec![
                sender("n1", vec![sg("client-a", false)?, to_n2.clone()]),
                receiver("n2", vec![received(), delivered.clone()]),
            ],
        ),
        k(
            "n1 -> n2, IPv6 TCP",
            "client-b",
            to_pod("web-b"),
            l4(true, tcp(8080)),
            vec![
                sender("n1", vec![sg("client-b", true)?, to_n2.clone()]),
                receiver("n2", vec![received(), delivered.clone()]),
            ],
        ),
        k(
            "n2 -> n1, ICMP",
            "client-c",
            to_pod("web-a"),
            None,
            vec![
                sender("n2", vec![sg("client-c", false)?, to_n1.clone()]),
                receiver("n1", vec![received(), delivered.clone()]),
            ],
        ),
        k(
            "to n1's gateway",
            "client-b",
            to_ip(&gw1),
            l4(false, tcp(22)),
            vec![sender(
                "n1",
                vec![sg("client-b", false)?, delivered.clone()],
            )],
        ),
        k(
            "to n2's gateway, IPv6",
            "client-c",
            to_ip(&gw2),
            l4(true, None),
            vec![sender("n2", vec![sg("client-c", true)?, delivered.clone()])],
        ),
        k(
            "to an external IP",
            "client-a",
            to_ip("192.0.2.10"),
            l4(false, tcp(443)),
            vec![sender(
                "n1",
                vec![sg("client-a", false)?, out_of_network.clone()],
            )],
        ),
        k(
            "to an external IP, IPv6",
            "web-b",
            to_ip("2001:db8::10"),
            l4(true, udp(123)),
            vec![sender(
                "n2",
                vec![sg("web-b", true)?, out_of_network.clone()],
            )],
        ),
        k(
            "K8s allow, n1 -> n2",
            "client-a",
            to_pod("db"),
            l4(false, tcp(5432)),
            vec![
                sender("n1", vec![sg("client-a", false)?, to_n2.clone()]),
                receiver("n2", vec![received(), db_allow.clone(), delivered.clone()]),
            ],
        ),
        k(
            "K8s allow, same Node (n2), IPv6",
            "client-c",
            to_pod("db"),
            l4(true, tcp(5432)),
            vec![sender(
                "n2",
                vec![sg("client-c", true)?, db_allow.clone(), delivered.clone()],
            )],
        ),
        k(
            "not selected by the Antrea-native drop, same Node (n2), IPv6",
            "web-b",
            to_pod("vault"),
            l4(true, None),
            vec![sender("n2", vec![sg("web-b", true)?, delivered.clone()])],
        ),
        k(
            "port not matched by the Antrea-native egress drop, n2 -> n1",
            "probe",
            to_pod("web-a"),
            l4(false, tcp(8081)),
            vec![
                sender("n2", vec![sg("probe", false)?, to_n1.clone()]),
                receiver("n1", vec![received(), delivered.clone()]),
            ],
        ),
        // Dropped.
        k(
            "K8s ingress default deny, n1 -> n2",
            "client-a",
            to_pod("db"),
            None,
            vec![
                sender("n1", vec![sg("client-a", false)?, to_n2.clone()]),
                receiver("n2", vec![received(), ingress_deny.clone()]),
            ],
        ),
        k(
            "K8s ingress default deny, same Node (n2), IPv6 UDP",
            "client-c",
            to_pod("db"),
            l4(true, udp(53)),
            vec![sender(
                "n2",
                vec![sg("client-c", true)?, ingress_deny.clone()],
            )],
        ),
        k(
            "K8s egress default deny, same Node (n1)",
            "guest",
            to_pod("web-a"),
            l4(false, None),
            vec![sender("n1", vec![sg("guest", false)?, egress_deny.clone()])],
        ),
        k(
            "K8s egress default deny, to n2, IPv6 TCP",
            "guest",
            to_pod("web-b"),
            l4(true, tcp(80)),
            vec![sender("n1", vec![sg("guest", true)?, egress_deny.clone()])],
        ),
        k(
            "K8s egress default deny, to an external IP",
            "guest",
            to_ip("192.0.2.10"),
            l4(false, udp(53)),
            vec![sender("n1", vec![sg("guest", false)?, egress_deny.clone()])],
        ),
        k(
            "Antrea-native ingress drop, n1 -> n2",
            "client-b",
            to_pod("vault"),
            l4(false, tcp(80)),
            vec![
                sender("n1", vec![sg("client-b", false)?, to_n2.clone()]),
                receiver("n2", vec![received(), vault_drop.clone()]),
            ],
        ),
        k(
            "Antrea-native ingress drop, same Node (n2), IPv6",
            "client-c",
            to_pod("vault"),
            l4(true, None),
            vec![sender(
                "n2",
                vec![sg("client-c", true)?, vault_drop.clone()],
            )],
        ),
        k(
            "Antrea-native egress drop, to n1",
            "probe",
            to_pod("web-a"),
            l4(false, tcp(8080)),
            vec![sender("n2", vec![sg("probe", false)?, probe_drop.clone()])],
        ),
        k(
            "Antrea-native egress drop, same Node (n2), IPv6",
            "probe",
            to_pod("web-b"),
            l4(true, tcp(8080)),
            vec![sender("n2", vec![sg("probe", true)?, probe_drop.clone()])],
        ),
    ])
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The pids of the lab's agent processes (their command lines name the lab directory), one
/// per Node.
fn agent_pids(lab: &Lab) -> Result<Vec<i32>, String> {
    let agents: Vec<i32> = lab
        .processes()
        .iter()
        .filter(|p| p.contains("traceflow-agent"))
        .filter_map(|p| p.split(':').next()?.trim().parse().ok())
        .collect();
    if agents.len() == NODES {
        Ok(agents)
    } else {
        Err(format!(
            "want {NODES} agent processes, one per Node, found {agents:?}"
        ))
    }
}

/// Traces of c1 in `phase` per the manager, counted up to 1001 (one page of 1000, plus one
/// when there is a next page).
async fn count_in_phase(api: &mut Api, phase: pb::TraceflowPhase) -> Result<usize, String> {
    let req = pb::ListTraceflowsRequest {
        cluster: "c1".into(),
        phase: phase as i32,
        page_size: 1000,
        ..Default::default()
    };
    let resp = api
        .traces
        .list_traceflows(req)
        .await
        .map_err(|s| format!("ListTraceflows: {s:?}"))?
        .into_inner();
    Ok(resp.traceflows.len() + usize::from(!resp.next_page_token.is_empty()))
}

async fn scale(api: &Api, agents: &[i32]) -> Result<(), String> {
    let mut a = api.clone();
    let pods = a.wait_pods("c1", PODS).await?;
    let nodes = a.nodes("c1").await?;
    let kinds = mix(&pods, &nodes)?;
    round(api, &kinds, agents).await
}

/// What the 1000 traces of `kinds` are, for the printed figures.
fn describe(kinds: &[Kind]) -> String {
    let all = (0..TRACES).map(|i| &kinds[i % kinds.len()]);
    let mut dropped = std::collections::BTreeMap::<&str, usize>::new();
    let (mut inter, mut v6) = (0, 0);
    let mut sources = std::collections::BTreeSet::new();
    for k in all {
        if let Some(t) = k.dropped_by() {
            *dropped.entry(t).or_default() += 1;
        }
        inter += usize::from(k.want.len() > 1);
        v6 += usize::from(k.ipv6());
        sources.insert(k.src);
    }
    format!(
        "{} kinds from {} source Pods; {} dropped {dropped:?}; {inter} inter-Node; {v6} IPv6",
        kinds.len(),
        sources.len(),
        dropped.values().sum::<usize>()
    )
}

/// Creates all (with `pause` non-empty: with those agents paused, checks all are Running,
/// then resumes them), watches all, checks each one's observations and prints figures.
async fn round(api: &Api, kinds: &[Kind], pause: &[i32]) -> Result<(), String> {
    let mut a = api.clone();
    let paused = if pause.is_empty() {
        None
    } else {
        Some(Paused::new(pause)?)
    };
    let start = Instant::now();
    let created: Vec<Result<(usize, pb::Traceflow), String>> = stream::iter(0..TRACES)
        .map(|i| {
            let mut api = api.clone();
            let k = kinds[i % kinds.len()].clone();
            async move {
                api.create("c1", spec(k.src, k.dst, k.packet))
                    .await
                    .map(|t| (i, t))
                    .map_err(|s| format!("create #{i} ({}): {s:?}", k.what))
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let created_in = start.elapsed();
    let created: Vec<(usize, pb::Traceflow)> = created.into_iter().collect::<Result<_, _>>()?;
    // With every agent paused, all 1000 are in flight at once: Running at the manager, and
    // none finished (round 1 runs on a fresh lab, so the manager holds only these traces).
    if paused.is_some() {
        // Inside the keepalive's timeout: past interval + timeout (15 s) the adapter rightly
        // drops a paused agent and every trace fails "agent disconnected".
        let deadline = start + traceflow_core::limits::KEEPALIVE_TIMEOUT;
        let running = loop {
            let running = count_in_phase(&mut a, pb::TraceflowPhase::Running).await?;
            if running == TRACES || Instant::now() > deadline {
                break running;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let finished = count_in_phase(&mut a, pb::TraceflowPhase::Succeeded).await?
            + count_in_phase(&mut a, pb::TraceflowPhase::Failed).await?;
        if running != TRACES || finished != 0 {
            return Err(format!(
                "with the agents paused the manager lists {running} Running and {finished} \
                 finished traces {:.1?} after the first create, want all {TRACES} Running \
                 within {:?}",
                start.elapsed(),
                traceflow_core::limits::KEEPALIVE_TIMEOUT
            ));
        }
    }
    let all_running = start.elapsed();
    let resumed = Instant::now();
    drop(paused);

    // Then watch all.
    let done: Vec<Result<(usize, pb::Traceflow), String>> = stream::iter(created)
        .map(|(i, t)| {
            let mut api = api.clone();
            async move {
                api.watch_done(&t.uid, Duration::from_secs(60))
                    .await
                    .map(|t| (i, t))
            }
        })
        .buffer_unordered(128)
        .collect()
        .await;
    let all_done = resumed.elapsed();

    let mut failures = Vec::new();
    let mut latencies = Vec::new();
    let mut spans = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for r in done {
        let (i, t) = match r {
            Ok(x) => x,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        let k = &kinds[i % kinds.len()];
        if phase(&t) != "Succeeded" {
            failures.push(format!("#{i} ({}): {:#}", k.what, to_json(&t)));
            continue;
        }
        if let Err(e) = check_results(&results_json(&t), &k.want) {
            failures.push(format!("#{i} ({}: {} -> {:?}): {e}", k.what, k.src, k.dst));
        }
        let s = t.status.clone().unwrap_or_default();
        ids.insert((k.ipv6(), s.trace_id));
        latencies.push(Duration::from_micros(
            u64::try_from(s.end_time_micros - t.creation_time_micros).unwrap_or(0),
        ));
        spans.push((t.creation_time_micros, s.end_time_micros));
    }
    if !failures.is_empty() {
        return Err(format!(
            "{} of {TRACES} traces wrong; first 5:\n{}",
            failures.len(),
            failures
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n----\n")
        ));
    }
    // Most traces overlapping in flight (creation → terminal), by a sweep over the spans.
    let mut events: Vec<(i64, i32)> = spans
        .iter()
        .flat_map(|(s, e)| [(*s, 1), (*e, -1)])
        .collect();
    events.sort();
    let (mut cur, mut peak) = (0i32, 0i32);
    for (_, d) in events {
        cur += d;
        peak = peak.max(cur);
    }
    latencies.sort();
    let mode = if pause.is_empty() {
        "unpaused: created back to back, then watched".to_string()
    } else {
        format!("{} agents paused until all Running", pause.len())
    };
    println!(
        "scale ({mode}): {TRACES} traces ({}): created in {created_in:.2?} ({:.0}/s), \
         watching from {all_running:.2?}; then all Succeeded and watched in {all_done:.2?}; \
         per trace (manager create -> terminal) p50 {:.2?} p99 {:.2?} max {:.2?}; peak in \
         flight {peak}; distinct trace ids {}",
        describe(kinds),
        TRACES as f64 / created_in.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default(),
        ids.len()
    );
    Ok(())
}

fn run(tag: &str, pause_agents: bool) {
    require_lab_prerequisites();
    require_binaries();
    let mut lab = Lab::new(tag);
    // One client follows all 1000 traces at once: more than one person may watch by default.
    lab.env.push((
        "TRACEFLOW_MANAGER_MAX_WATCHES_PER_USER".into(),
        "4096".into(),
    ));
    let cfg = up_with_config(&mut lab, &topology("scale.yaml"));
    let rt = runtime();
    let result = rt.block_on(async {
        let agents = if pause_agents {
            agent_pids(&lab)?
        } else {
            Vec::new()
        };
        let api = Api::connect(&cfg).await?;
        scale(&api, &agents).await
    });
    drop(rt);
    if let Err(e) = result {
        panic!("{e}\n{}", lab.dump());
    }
    let down = lab.down();
    assert!(down.contains("is down"), "{down}");
    lab.assert_gone();
}

/// All 1000 created back to back (64 calls at a time), then all watched; their lifetimes
/// overlap by a hundred or so (the figure is printed), since a trace takes ~1 ms.
#[test]
fn thousand_concurrent_injected_traces_each_with_its_own_observations() {
    run("sc", false);
}

/// All 1000 Running at once for real: both Nodes' agents are paused while they are created.
#[test]
fn thousand_traces_all_in_flight_at_once_with_the_agent_paused() {
    run("scp", true);
}
