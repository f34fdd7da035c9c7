//! 1000 concurrent injected traces in one cluster through the manager's gRPC API, with mixed
//! sources, destinations, protocols and families: all are created (CreateTraceflow, 64 calls
//! at a time) before any is watched (WatchTraceflow); every one must end Succeeded with
//! exactly its own observations (its source Pod's IP in SpoofGuard, its terminal action).
//! A trace takes ~1 ms, so back-to-back creation overlaps only a hundred or so; to have all
//! 1000 in flight at once for real, the second test pauses the
//! Node's agent (SIGSTOP) until the manager lists all 1000 Running, then resumes it.
//! Prints timing figures: create → all done, per-trace latency p50/p99 (manager's creation
//! time → the adapter's terminal transition), and how many traces overlapped in flight.
//!
//! Needs root, Open vSwitch and `cargo build --workspace --bins`; fails loudly, never skips.

mod common;

use std::time::{Duration, Instant};

use common::trace::{
    Api, check_results, gateway_ip, output, phase, pod_ip, require_binaries, results_json, runtime,
    sender, spec, spoofguard, to_ip, to_json, to_pod, up_with_config,
};
use common::{Lab, require_lab_prerequisites, topology};
use futures::{StreamExt, stream};
use traceflow_proto::v1 as pb;

const TRACES: usize = 1000;

/// One kind of trace in the mix: source Pod, destination, packet, and what it must report.
#[derive(Clone)]
struct Kind {
    src: &'static str,
    dst: pb::Destination,
    packet: Option<pb::Packet>,
    ipv6: bool,
    terminal: &'static str,
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Pauses a process of the lab until dropped (SIGSTOP now, SIGCONT on drop, also on panic).
struct Paused(nix::unistd::Pid);

impl Paused {
    fn new(pid: i32) -> Result<Self, String> {
        let pid = nix::unistd::Pid::from_raw(pid);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP)
            .map_err(|e| format!("SIGSTOP {pid}: {e}"))?;
        Ok(Self(pid))
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

/// The pid of the lab's agent process (its command line names the lab directory).
fn agent_pid(lab: &Lab) -> Result<i32, String> {
    let agents: Vec<i32> = lab
        .processes()
        .iter()
        .filter(|p| p.contains("traceflow-agent"))
        .filter_map(|p| p.split(':').next()?.trim().parse().ok())
        .collect();
    match agents.as_slice() {
        [pid] => Ok(*pid),
        _ => Err(format!("want one agent process, found {agents:?}")),
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

async fn scale(api: &Api, agent: Option<i32>) -> Result<(), String> {
    let mut a = api.clone();
    let pods = a.wait_pods("c1", 4).await?;
    let nodes = a.nodes("c1").await?;
    let n1 = nodes.first().ok_or("no Node in c1")?;
    let gw = gateway_ip(n1, false)?;
    let kinds = vec![
        Kind {
            src: "default/p0",
            dst: to_pod("default/p1"),
            packet: None,
            ipv6: false,
            terminal: "Delivered",
        },
        Kind {
            src: "default/p1",
            dst: to_pod("default/p2"),
            packet: l4(false, tcp(80)),
            ipv6: false,
            terminal: "Delivered",
        },
        Kind {
            src: "default/p2",
            dst: to_pod("default/p0"),
            packet: l4(false, udp(53)),
            ipv6: false,
            terminal: "Delivered",
        },
        Kind {
            src: "default/p0",
            dst: to_ip(&gw),
            packet: None,
            ipv6: false,
            terminal: "Delivered",
        },
        Kind {
            src: "default/p1",
            dst: to_ip("192.0.2.10"),
            packet: l4(false, tcp(443)),
            ipv6: false,
            terminal: "ForwardedOutOfNetwork",
        },
        Kind {
            src: "default/p2",
            dst: to_pod("default/p1"),
            packet: l4(true, None),
            ipv6: true,
            terminal: "Delivered",
        },
    ];

    round(api, &kinds, &pods, agent).await
}

/// Creates all, (with `pause`: checks all are Running with the agent paused, then resumes
/// it), watches all, checks each one's observations and prints figures.
async fn round(
    api: &Api,
    kinds: &[Kind],
    pods: &[pb::InventoryPod],
    pause: Option<i32>,
) -> Result<(), String> {
    let mut a = api.clone();
    let paused = pause.map(Paused::new).transpose()?;
    let start = Instant::now();
    let created: Vec<Result<(usize, pb::Traceflow), String>> = stream::iter(0..TRACES)
        .map(|i| {
            let mut api = api.clone();
            let k = kinds[i % kinds.len()].clone();
            async move {
                api.create("c1", spec(k.src, k.dst, k.packet))
                    .await
                    .map(|t| (i, t))
                    .map_err(|s| format!("create #{i}: {s:?}"))
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let created_in = start.elapsed();
    let created: Vec<(usize, pb::Traceflow)> = created.into_iter().collect::<Result<_, _>>()?;
    // With the agent paused, all 1000 are in flight at once: Running at the manager, and none
    // finished (round 1 runs on a fresh lab, so the manager holds only these traces).
    if paused.is_some() {
        let deadline = Instant::now() + Duration::from_secs(30);
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
                "with the agent paused the manager lists {running} Running and {finished} \
                 finished traces, want all {TRACES} Running"
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
        let src = pod_ip(pods, k.src, k.ipv6)?;
        let want = [sender("n1", vec![spoofguard(&src), output(k.terminal)])];
        if phase(&t) != "Succeeded" {
            failures.push(format!("#{i}: {:#}", to_json(&t)));
            continue;
        }
        if let Err(e) = check_results(&results_json(&t), &want) {
            failures.push(format!("#{i} ({} -> {:?}): {e}", k.src, k.dst));
        }
        let s = t.status.clone().unwrap_or_default();
        ids.insert((k.ipv6, s.trace_id));
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
    let mode = if pause.is_some() {
        "agent paused until all Running"
    } else {
        "unpaused: created back to back, then watched"
    };
    println!(
        "scale ({mode}): {TRACES} traces: created in {created_in:.2?} ({:.0}/s), watching from \
         {all_running:.2?}; then all Succeeded and watched in {all_done:.2?}; per trace \
         (manager create -> terminal) p50 {:.2?} \
         p99 {:.2?} max {:.2?}; peak in flight {peak}; distinct trace ids {}",
        TRACES as f64 / created_in.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default(),
        ids.len()
    );
    Ok(())
}

fn run(tag: &str, pause_agent: bool) {
    require_lab_prerequisites();
    require_binaries();
    let mut lab = Lab::new(tag);
    let cfg = up_with_config(&mut lab, &topology("one-node-dual.yaml"));
    let rt = runtime();
    let result = rt.block_on(async {
        let agent = if pause_agent {
            Some(agent_pid(&lab)?)
        } else {
            None
        };
        let api = Api::connect(&cfg).await?;
        scale(&api, agent).await
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

/// All 1000 Running at once for real: the agent is paused while they are created.
#[test]
fn thousand_traces_all_in_flight_at_once_with_the_agent_paused() {
    run("scp", true);
}
