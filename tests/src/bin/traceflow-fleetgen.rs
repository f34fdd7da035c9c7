//! `traceflow-fleetgen`: the fleet side of docs/performance.md. Synthetic clusters against the
//! REAL manager of a lab, each speaking the adapter protocol with the adapter's own code
//! (bootstrap token → Register → mTLS Attach, hello, inventory sync in parts, heartbeats) and
//! answering every StartTrace like a cluster of synthetic agents (Running, then Succeeded with
//! a sender's observations).
//!
//! ```text
//! traceflow-fleetgen [--clusters 100] [--nodes 100] [--pods 30] [--services 10] [--traces 1000]
//!                    [--short] [--lab DIR] [--keep]
//! ```
//! Without `--lab` it brings up tests/topologies/one-node.yaml for its manager and takes it
//! down at the end. Prints a table, then one JSON line with: registration and sync time of the
//! whole fleet (until ListClusters shows every cluster with all its Pods), ListClusters and
//! ListPods latency at that size, manager RSS and CPU, and `--traces` traces in flight across
//! the fleet at once (create → Succeeded latency and rate, every trace checked).
//! `--short` is 3 clusters × 5 Nodes × 4 Pods and 50 traces (seconds); CI runs it
//! (tests/tests/bench.rs).

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow};
use clap::Parser;
use futures::{StreamExt, stream};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use traceflow_adapter::upstream::{
    ensure_identity,
    link::{INVENTORY_PART_BYTES, split_inventory},
    registration::manager_channel,
};
use traceflow_lab::lab::handle::{LabHandle, clock_ticks_per_second, cpu_ticks, rss_kib};
use traceflow_proto::v1::{
    self as pb, adapter_message::Kind as Out, cluster_service_client::ClusterServiceClient,
    manager_message::Kind as In, traceflow_service_client::TraceflowServiceClient,
};

#[derive(Parser, Clone)]
#[command(
    about = "Synthetic clusters against a real manager: fleet sync time, RSS, listing and trace latency"
)]
struct Args {
    #[arg(long, default_value_t = 100)]
    clusters: usize,
    /// Nodes per cluster.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Pods per Node.
    #[arg(long, default_value_t = 30)]
    pods: usize,
    /// Services per Node.
    #[arg(long, default_value_t = 10)]
    services: usize,
    /// Traces in flight at once across the fleet.
    #[arg(long, default_value_t = 1000)]
    traces: usize,
    /// 3 clusters × 5 Nodes × 4 Pods, 50 traces: seconds, as CI runs it.
    #[arg(long)]
    short: bool,
    /// Attach to the lab in DIR (its manager) instead of bringing one up.
    #[arg(long)]
    lab: Option<PathBuf>,
    /// Leave the lab this run brought up running.
    #[arg(long)]
    keep: bool,
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/topologies/one-node.yaml"))]
    topology: PathBuf,
}

/// Directory under the lab's where the synthetic clusters keep their identities.
const IDENTITIES: &str = "fleetgen";

fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.short {
        (
            args.clusters,
            args.nodes,
            args.pods,
            args.services,
            args.traces,
        ) = (3, 5, 4, 2, 50);
    }
    let (lab, owned) = LabHandle::for_program(args.lab.as_deref(), &args.topology, "fg")?;
    let rt = LabHandle::runtime().context("tokio runtime")?;
    let result = rt.block_on(run(&lab, &args));
    // The synthetic clusters' keys and certificates; `down` removes only what the lab made.
    let _ = std::fs::remove_dir_all(lab.dir.join(IDENTITIES));
    lab.release(owned, args.keep);
    let report = result?;
    println!("{report}");
    Ok(())
}

/// The synthetic inventory of cluster `c`: `nodes` Nodes, `pods` Pods and `services` Services
/// per Node over ten namespaces; Pod `ns-0/p-0-0` exists in every cluster (the trace source).
fn inventory(c: usize, args: &Args) -> pb::Inventory {
    let mut inv = pb::Inventory {
        namespaces: (0..10)
            .map(|k| pb::InventoryNamespace {
                name: format!("ns-{k}"),
                labels: [("team".to_string(), format!("t{k}"))].into(),
            })
            .collect(),
        ..Default::default()
    };
    for n in 0..args.nodes {
        let (hi, lo) = (n / 250, n % 250);
        inv.nodes.push(pb::InventoryNode {
            name: format!("node-{n}"),
            pod_cidrs: vec![format!("10.{hi}.{lo}.0/24")],
            internal_ips: vec![format!("192.168.{hi}.{lo}")],
            labels: [("kubernetes.io/hostname".to_string(), format!("node-{n}"))].into(),
        });
        for k in 0..args.pods {
            inv.pods.push(pb::InventoryPod {
                namespace: format!("ns-{}", k % 10),
                name: format!("p-{n}-{k}"),
                node: format!("node-{n}"),
                ips: vec![format!("10.{hi}.{lo}.{}", k + 2)],
                labels: [
                    ("app".to_string(), format!("app-{}", k % 7)),
                    ("cluster".to_string(), format!("c{c}")),
                ]
                .into(),
                host_network: false,
            });
        }
        for k in 0..args.services {
            inv.services.push(pb::InventoryService {
                namespace: format!("ns-{}", k % 10),
                name: format!("svc-{n}-{k}"),
                cluster_ips: vec![format!(
                    "10.96.{}.{}",
                    (n * args.services + k) / 250,
                    (n * args.services + k) % 250
                )],
                ports: vec![pb::ServicePort {
                    name: "http".into(),
                    protocol: "TCP".into(),
                    port: 80,
                    target_port: "8080".into(),
                }],
            });
        }
    }
    inv
}

fn cluster_name(c: usize) -> String {
    format!("gen-{c:03}")
}

/// What a synthetic cluster reports for a trace: Running, then Succeeded on the sender.
fn answers(uid: &str) -> [pb::TraceUpdate; 2] {
    let now = traceflow_proto_now();
    let running = pb::TraceflowStatus {
        phase: pb::TraceflowPhase::Running as i32,
        start_time_micros: now,
        ..Default::default()
    };
    let done = pb::TraceflowStatus {
        phase: pb::TraceflowPhase::Succeeded as i32,
        start_time_micros: now,
        end_time_micros: traceflow_proto_now(),
        results: vec![pb::NodeResult {
            node: "node-0".into(),
            role: "sender".into(),
            timestamp: now / 1_000_000,
            direction: pb::Direction::Forward as i32,
            observations: vec![
                pb::Observation {
                    component: pb::Component::SpoofGuard as i32,
                    action: pb::Action::Forwarded as i32,
                    ..Default::default()
                },
                pb::Observation {
                    component: pb::Component::Forwarding as i32,
                    component_info: "Output".into(),
                    action: pb::Action::Delivered as i32,
                    ..Default::default()
                },
            ],
        }],
        ..Default::default()
    };
    [running, done].map(|status| pb::TraceUpdate {
        uid: uid.to_string(),
        status: Some(status),
    })
}

fn traceflow_proto_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Registers cluster `c` and keeps its stream: sync in parts, heartbeats, trace answers.
async fn synthetic_cluster(
    c: usize,
    args: Arc<Args>,
    url: String,
    ca: String,
    admin: ClusterServiceClient<tonic::transport::Channel>,
    data_dir: PathBuf,
) -> Result<()> {
    let name = cluster_name(c);
    let token = admin
        .clone()
        .create_bootstrap_token(pb::CreateBootstrapTokenRequest {
            cluster: name.clone(),
            ttl_seconds: 0,
        })
        .await
        .map_err(|s| anyhow!("CreateBootstrapToken {name}: {}", s.message()))?
        .into_inner()
        .token;
    let identity = ensure_identity(&data_dir.join(&name), &name, &url, &ca, Some(&token)).await?;
    let channel = manager_channel(&url, &ca, Some(&identity)).await?;
    let mut client = pb::adapter_service_client::AdapterServiceClient::new(channel);
    let (out, out_rx) = mpsc::channel::<pb::AdapterMessage>(4096);
    let send = |kind| pb::AdapterMessage { kind: Some(kind) };
    // A fresh synthetic adapter runs nothing yet: the manager may fail what it thought ran.
    out.send(send(Out::Hello(pb::AdapterHello {
        version: "fleetgen".into(),
        running_trace_uids: Vec::new(),
        reports_running: true,
    })))
    .await?;
    let parts = split_inventory(inventory(c, &args), INVENTORY_PART_BYTES);
    let n = parts.len();
    let mut inbound = client
        .attach(ReceiverStream::new(out_rx))
        .await
        .map_err(|s| anyhow!("Attach {name}: {}", s.message()))?
        .into_inner();
    for (i, part) in parts.into_iter().enumerate() {
        out.send(send(Out::InventorySyncPart(pb::InventorySyncPart {
            inventory: Some(part),
            first: i == 0,
            last: i + 1 == n,
        })))
        .await?;
    }
    let agents = i32::try_from(args.nodes).unwrap_or(i32::MAX);
    let beat = pb::AdapterHeartbeat {
        connected_agents: agents,
        expected_agents: agents,
        agent_counters: Vec::new(),
    };
    out.send(send(Out::Heartbeat(beat.clone()))).await?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            m = inbound.message() => match m {
                Ok(Some(pb::ManagerMessage { kind: Some(In::StartTrace(s)) })) => {
                    let uid = s.trace.map(|t| t.uid).unwrap_or_default();
                    for u in answers(&uid) {
                        out.send(send(Out::TraceUpdate(u))).await?;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(s) => return Err(anyhow!("stream of {name}: {}", s.message())),
            },
            _ = tick.tick() => out.send(send(Out::Heartbeat(beat.clone()))).await?,
        }
    }
}

fn pct(v: &mut [Duration], q: f64) -> f64 {
    v.sort();
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e3
}

async fn run(lab: &LabHandle, args: &Args) -> Result<String> {
    let (url, ca) =
        traceflow_lab::client::server_and_ca(&lab.tfctl_config).map_err(|e| anyhow!(e))?;
    let channel = traceflow_lab::client::connect(&lab.tfctl_config)
        .await
        .map_err(|e| anyhow!(e))?;
    let mut admin = ClusterServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20);
    let manager = lab.manager_pid()?;
    let hz = clock_ticks_per_second();
    let cpu0 = cpu_ticks(manager);
    let rss0 = rss_kib(manager);
    let args = Arc::new(args.clone());
    let data_dir = lab.dir.join(IDENTITIES);

    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.clusters {
        let task = tokio::spawn(synthetic_cluster(
            c,
            args.clone(),
            url.clone(),
            ca.clone(),
            admin.clone(),
            data_dir.clone(),
        ));
        tasks.push(task);
    }
    // Synced: every generated cluster Up with all its Pods in the manager's inventory.
    let want_pods = (args.nodes * args.pods) as i32;
    let mut list_times = Vec::new();
    let synced = loop {
        let t = Instant::now();
        let clusters = admin
            .list_clusters(pb::ListClustersRequest::default())
            .await
            .map_err(|s| anyhow!("ListClusters: {}", s.message()))?
            .into_inner()
            .clusters;
        list_times.push(t.elapsed());
        let done = clusters
            .iter()
            .filter(|c| {
                c.name.starts_with("gen-")
                    && c.health == pb::ClusterHealth::Up as i32
                    && c.inventory.as_ref().is_some_and(|i| i.pods == want_pods)
            })
            .count();
        if done == args.clusters {
            break t0.elapsed();
        }
        if let Some(failed) = tasks.iter().position(|t| t.is_finished()) {
            let end = tasks.remove(failed).await?;
            return Err(anyhow!("a synthetic cluster ended: {end:?}"));
        }
        if t0.elapsed() > Duration::from_secs(600) {
            return Err(anyhow!(
                "{done} of {} clusters synced after 600s",
                args.clusters
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let sync_cpu = (cpu_ticks(manager) - cpu0) as f64 / hz;
    let rss_synced = rss_kib(manager);

    // Listing at full size.
    let mut lc = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        admin
            .list_clusters(pb::ListClustersRequest::default())
            .await?;
        lc.push(t.elapsed());
    }
    let mut lp = Vec::new();
    for c in 0..20 {
        let t = Instant::now();
        admin
            .list_pods(pb::ListInventoryRequest {
                cluster: cluster_name(c % args.clusters),
                page_size: 1000,
                ..Default::default()
            })
            .await?;
        lp.push(t.elapsed());
    }
    let mut lp_all = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        admin
            .list_pods(pb::ListInventoryRequest {
                page_size: 1000,
                ..Default::default()
            })
            .await?;
        lp_all.push(t.elapsed());
    }

    // Traces in flight across the fleet at once.
    let traces = TraceflowServiceClient::new(channel);
    let cpu1 = cpu_ticks(manager);
    let t1 = Instant::now();
    let results: Vec<Result<(Duration, bool)>> = stream::iter(0..args.traces)
        .map(|i| {
            let mut traces = traces.clone();
            let cluster = cluster_name(i % args.clusters);
            async move {
                let t = Instant::now();
                let created = traces
                    .create_traceflow(pb::CreateTraceflowRequest {
                        cluster,
                        spec: Some(pb::TraceflowSpec {
                            source: Some(pb::Source {
                                namespace: "ns-0".into(),
                                pod: "p-0-0".into(),
                                ip: String::new(),
                            }),
                            destination: Some(pb::Destination {
                                ip: "10.0.1.2".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        name: String::new(),
                    })
                    .await
                    .map_err(|s| anyhow!("CreateTraceflow: {}", s.message()))?
                    .into_inner();
                let mut w = traces
                    .watch_traceflow(pb::WatchTraceflowRequest {
                        uid: created.uid.clone(),
                        name: String::new(),
                    })
                    .await
                    .map_err(|s| anyhow!("WatchTraceflow: {}", s.message()))?
                    .into_inner();
                while let Some(t2) = w.next().await {
                    let t2 = t2.map_err(|s| anyhow!("WatchTraceflow: {}", s.message()))?;
                    let phase = t2.status.as_ref().map_or(0, |s| s.phase);
                    if phase == pb::TraceflowPhase::Succeeded as i32 {
                        let n = t2.status.map_or(0, |s| s.results.len());
                        return Ok((t.elapsed(), n == 1 && t2.uid == created.uid));
                    }
                    if phase == pb::TraceflowPhase::Failed as i32 {
                        return Ok((t.elapsed(), false));
                    }
                }
                Err(anyhow!("watch ended early"))
            }
        })
        .buffer_unordered(args.traces)
        .collect()
        .await;
    let took = t1.elapsed();
    let trace_cpu = (cpu_ticks(manager) - cpu1) as f64 / hz;
    let mut lat: Vec<Duration> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|(d, _)| *d))
        .collect();
    let correct = results
        .iter()
        .filter(|r| matches!(r, Ok((_, true))))
        .count();
    let first_error = results
        .iter()
        .find_map(|r| r.as_ref().err().map(ToString::to_string));
    let rss_end = rss_kib(manager);

    let report = json!({
        "clusters": args.clusters, "nodes_per_cluster": args.nodes, "pods_per_node": args.pods,
        "services_per_node": args.services,
        "pods_total": args.clusters * args.nodes * args.pods,
        "services_total": args.clusters * args.nodes * args.services,
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "lab_dir": lab.dir.display().to_string(),
        "registered_and_synced_s": synced.as_secs_f64(),
        "manager_cpu_s_sync": sync_cpu,
        "manager_rss_kib_before": rss0, "manager_rss_kib_synced": rss_synced,
        "manager_rss_kib_end": rss_end,
        "list_clusters_ms": {"p50": pct(&mut lc, 0.5), "max": pct(&mut lc, 1.0)},
        "list_pods_one_cluster_page_ms": {"p50": pct(&mut lp, 0.5), "max": pct(&mut lp, 1.0)},
        "list_pods_all_clusters_page_ms": {"p50": pct(&mut lp_all, 0.5), "max": pct(&mut lp_all, 1.0)},
        "traces": {"n": args.traces, "correct": correct, "first_error": first_error,
                   "seconds": took.as_secs_f64(),
                   "per_s": args.traces as f64 / took.as_secs_f64(),
                   "manager_cpu_ms_per_trace": trace_cpu * 1e3 / args.traces as f64,
                   "p50_ms": pct(&mut lat, 0.5), "p99_ms": pct(&mut lat, 0.99),
                   "max_ms": pct(&mut lat, 1.0)},
    });
    for t in tasks {
        t.abort();
    }
    let table = format!(
        "fleet {} clusters × {} Nodes × {} Pods ({} Pods, {} Services)\n\
         registered + synced      {:>9.2} s   manager CPU {:.2} s   RSS {:.0} → {:.0} MiB\n\
         ListClusters             p50 {:>8.2} ms\n\
         ListPods one cluster     p50 {:>8.2} ms (page of 1000)\n\
         ListPods all clusters    p50 {:>8.2} ms (page of 1000)\n\
         {} traces at once        {:>8.0}/s  p50 {:.1} ms  p99 {:.1} ms  correct {}",
        args.clusters,
        args.nodes,
        args.pods,
        report["pods_total"],
        report["services_total"],
        synced.as_secs_f64(),
        sync_cpu,
        rss0 as f64 / 1024.0,
        rss_synced as f64 / 1024.0,
        report["list_clusters_ms"]["p50"].as_f64().unwrap_or(0.0),
        report["list_pods_one_cluster_page_ms"]["p50"]
            .as_f64()
            .unwrap_or(0.0),
        report["list_pods_all_clusters_page_ms"]["p50"]
            .as_f64()
            .unwrap_or(0.0),
        args.traces,
        report["traces"]["per_s"].as_f64().unwrap_or(0.0),
        report["traces"]["p50_ms"].as_f64().unwrap_or(0.0),
        report["traces"]["p99_ms"].as_f64().unwrap_or(0.0),
        correct,
    );
    Ok(format!("{table}\n{}", serde_json::to_string(&report)?))
}
