//! `traceflow-bench`: trace latency, throughput and CPU cost through a real lab, beside the
//! physical limits measured in the same run (docs/performance.md).
//!
//! ```text
//! traceflow-bench [--short] [--lab DIR] [--keep]
//! ```
//! Without `--lab` it brings up tests/topologies/bench.yaml (two dual-stack Nodes, a Service, a
//! drop policy) with the `traceflow-lab` beside this binary and takes it down at the end. It
//! prints a table, then one JSON line (the last line of stdout) with every figure:
//! - baselines: OVS packet-out → packet-in round trip with the agent's OpenFlow client on a
//!   Node's management socket, and a null unary gRPC call (WhoAmI) over the same mTLS channel
//!   the traces use;
//! - create → Succeeded latency p50/p90/p99/max per kind (intra-Node, inter-Node, Service,
//!   dropped, IPv6, live), at the client (create call to the terminal snapshot of
//!   WatchTraceflow) and in the manager (creation time → end time of the trace);
//! - throughput at concurrency 1, 64 and 1000, every trace compared with the reference result
//!   of its kind (same Nodes, roles and ordered observations, timestamps aside), so a trace
//!   given another's observations counts as wrong;
//! - CPU seconds per trace of manager, adapter, agents and ovs-vswitchd (utime + stime from
//!   /proc/PID/stat of the processes the lab recorded) and the manager's RSS.
//!
//! `--short` does a few traces of each (seconds); CI runs it (tests/tests/bench.rs).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use futures::{StreamExt, stream};
use serde_json::{Value, json};
use tonic::transport::Channel;
use traceflow_agent::ovs::openflow::{Action, Message, PacketOut, Switch};
use traceflow_agent::pipeline::{PACKET_IN_METER, meter_drops};
use traceflow_agent::ports::Mac;
use traceflow_agent::trace::packet::{TracePacket, Transport};
use traceflow_lab::lab::handle::{LabHandle, clock_ticks_per_second, cpu_ticks, rss_kib};
use traceflow_proto::v1::{
    self as pb, cluster_service_client::ClusterServiceClient,
    traceflow_service_client::TraceflowServiceClient, user_service_client::UserServiceClient,
};

/// The cluster of bench.yaml.
const CLUSTER: &str = "c1";
/// A trace that takes longer than this is a failure of the run, not a figure.
const TRACE_WAIT: Duration = Duration::from_secs(30);
/// OFPP_CONTROLLER: the packet-out's in_port when it comes from no switch port.
const OFPP_CONTROLLER: u32 = 0xffff_fffd;

#[derive(Parser)]
#[command(
    about = "Trace latency, throughput and CPU per trace through a lab, beside OVS and gRPC baselines"
)]
struct Args {
    /// A few traces of each figure (seconds), as CI runs it.
    #[arg(long)]
    short: bool,
    /// Attach to a lab already up from tests/topologies/bench.yaml in DIR.
    #[arg(long)]
    lab: Option<PathBuf>,
    /// Leave the lab this run brought up running.
    #[arg(long)]
    keep: bool,
    /// Topology to bring up (it must have bench.yaml's cluster, Nodes, Pods and Service).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/topologies/bench.yaml"))]
    topology: PathBuf,
}

/// How many traces each figure takes.
struct Sizes {
    baseline: usize,
    latency: usize,
    live: usize,
    throughput: [(usize, usize); 3],
}

impl Sizes {
    fn new(short: bool) -> Self {
        if short {
            Self {
                baseline: 50,
                latency: 5,
                live: 2,
                // 300 in flight at once stands in for 1000 (the full mode's) to stay quick.
                throughput: [(1, 20), (64, 128), (1000, 300)],
            }
        } else {
            Self {
                baseline: 2000,
                latency: 200,
                live: 20,
                throughput: [(1, 1000), (64, 5000), (1000, 5000)],
            }
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (lab, owned) = LabHandle::for_program(args.lab.as_deref(), &args.topology, "bn")?;
    let rt = LabHandle::runtime().context("tokio runtime")?;
    let lab = Arc::new(lab);
    let result = rt.block_on(run(lab.clone(), Sizes::new(args.short), args.short));
    lab.release(owned, args.keep);
    let report = result?;
    println!("{report}");
    Ok(())
}

/// One kind of trace and what its last observation must be.
#[derive(Clone)]
struct Kind {
    name: &'static str,
    spec: pb::TraceflowSpec,
    ends: pb::Action,
}

fn spec(dst: pb::Destination, packet: Option<pb::Packet>) -> pb::TraceflowSpec {
    pb::TraceflowSpec {
        source: Some(pb::Source {
            namespace: "default".into(),
            pod: "client".into(),
            ip: String::new(),
        }),
        destination: Some(dst),
        packet,
        ..Default::default()
    }
}

fn to_pod(pod: &str) -> pb::Destination {
    pb::Destination {
        namespace: "default".into(),
        pod: pod.into(),
        ..Default::default()
    }
}

fn injected_kinds() -> Vec<Kind> {
    let tcp80 = pb::Packet {
        ip_header: Some(pb::IpHeader::default()),
        transport_header: Some(pb::TransportHeader {
            tcp: Some(pb::TcpHeader {
                dst_port: 80,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let ipv6 = pb::Packet {
        ipv6_header: Some(pb::IPv6Header::default()),
        ..Default::default()
    };
    let service = pb::Destination {
        namespace: "default".into(),
        service: "solo".into(),
        ..Default::default()
    };
    vec![
        Kind {
            name: "intra-node",
            spec: spec(to_pod("web-a"), None),
            ends: pb::Action::Delivered,
        },
        Kind {
            name: "inter-node",
            spec: spec(to_pod("web-b"), None),
            ends: pb::Action::Delivered,
        },
        Kind {
            name: "service",
            spec: spec(service, Some(tcp80)),
            ends: pb::Action::Delivered,
        },
        Kind {
            name: "dropped",
            spec: spec(to_pod("db"), None),
            ends: pb::Action::Dropped,
        },
        Kind {
            name: "ipv6",
            spec: spec(to_pod("web-a"), Some(ipv6)),
            ends: pb::Action::Delivered,
        },
    ]
}

/// The manager's services over one mTLS channel.
#[derive(Clone)]
struct Api {
    traces: TraceflowServiceClient<Channel>,
    clusters: ClusterServiceClient<Channel>,
    users: UserServiceClient<Channel>,
}

impl Api {
    async fn connect(cfg: &Path) -> Result<Self> {
        let ch = traceflow_lab::client::connect(cfg)
            .await
            .map_err(|e| anyhow!(e))?;
        Ok(Self {
            traces: TraceflowServiceClient::new(ch.clone()),
            clusters: ClusterServiceClient::new(ch.clone()),
            users: UserServiceClient::new(ch),
        })
    }

    /// Create, then WatchTraceflow to the terminal snapshot; the trace and the client's time.
    async fn run(&mut self, spec: pb::TraceflowSpec) -> Result<(pb::Traceflow, Duration)> {
        let t0 = Instant::now();
        let created = self
            .traces
            .create_traceflow(pb::CreateTraceflowRequest {
                cluster: CLUSTER.into(),
                spec: Some(spec),
                name: String::new(),
            })
            .await
            .map_err(|s| anyhow!("CreateTraceflow: {}", s.message()))?
            .into_inner();
        let done = self.watch_done(&created.uid).await?;
        Ok((done, t0.elapsed()))
    }

    async fn watch_done(&mut self, uid: &str) -> Result<pb::Traceflow> {
        let mut stream = self
            .traces
            .watch_traceflow(pb::WatchTraceflowRequest {
                uid: uid.into(),
                name: String::new(),
            })
            .await
            .map_err(|s| anyhow!("WatchTraceflow {uid}: {}", s.message()))?
            .into_inner();
        let deadline = tokio::time::Instant::now() + TRACE_WAIT;
        loop {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(Ok(t))) if terminal(&t) => return Ok(t),
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(s))) => bail!("WatchTraceflow {uid}: {}", s.message()),
                Ok(None) => bail!("WatchTraceflow {uid} ended before the trace did"),
                Err(_) => bail!("trace {uid} not done after {TRACE_WAIT:?}"),
            }
        }
    }
}

fn phase(t: &pb::Traceflow) -> pb::TraceflowPhase {
    let p = t.status.as_ref().map_or(0, |s| s.phase);
    pb::TraceflowPhase::try_from(p).unwrap_or(pb::TraceflowPhase::PhaseUnspecified)
}

fn terminal(t: &pb::Traceflow) -> bool {
    matches!(
        phase(t),
        pb::TraceflowPhase::Succeeded | pb::TraceflowPhase::Failed
    )
}

/// Creation → end time inside the manager.
fn server_time(t: &pb::Traceflow) -> Duration {
    let end = t.status.as_ref().map_or(0, |s| s.end_time_micros);
    Duration::from_micros(u64::try_from(end - t.creation_time_micros).unwrap_or(0))
}

/// The results with every timestamp zeroed: what must be equal between traces of one kind.
fn normalized(t: &pb::Traceflow) -> Vec<pb::NodeResult> {
    let mut results = t
        .status
        .as_ref()
        .map(|s| s.results.clone())
        .unwrap_or_default();
    for r in &mut results {
        r.timestamp = 0;
        for o in &mut r.observations {
            o.timestamp_micros = 0;
        }
    }
    results
}

/// The reference result of a kind: a Succeeded trace whose last observation is the kind's end.
fn reference(kind: &Kind, t: &pb::Traceflow) -> Result<Vec<pb::NodeResult>> {
    let results = normalized(t);
    let last = results
        .last()
        .and_then(|r| r.observations.last())
        .map(|o| o.action);
    if phase(t) != pb::TraceflowPhase::Succeeded || last != Some(kind.ends as i32) {
        bail!(
            "{} trace did not end {:?} (phase {:?}, reason {:?}): {:?}",
            kind.name,
            kind.ends,
            phase(t),
            t.status.as_ref().map(|s| s.reason.clone()),
            results
        );
    }
    Ok(results)
}

/// Latency distribution in microseconds.
#[derive(Default)]
struct Dist(Vec<Duration>);

impl Dist {
    fn pct(&self, q: f64) -> f64 {
        let mut v = self.0.clone();
        v.sort();
        if v.is_empty() {
            return 0.0;
        }
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v[i].as_secs_f64() * 1e6
    }

    fn json(&self) -> Value {
        json!({"n": self.0.len(), "p50_us": self.pct(0.5), "p90_us": self.pct(0.9),
               "p99_us": self.pct(0.99), "max_us": self.pct(1.0)})
    }

    fn row(&self, name: &str) -> String {
        format!(
            "{name:<28} n={:<5} p50={:>9.1}µs p90={:>9.1}µs p99={:>9.1}µs max={:>9.1}µs",
            self.0.len(),
            self.pct(0.5),
            self.pct(0.9),
            self.pct(0.99),
            self.pct(1.0)
        )
    }
}

/// CPU ticks per process group (and of this bench itself, `bench-client`).
fn cpu_by_group(procs: &[(String, i32)]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for (g, pid) in procs {
        *m.entry(g.clone()).or_insert(0) += cpu_ticks(*pid);
    }
    m.insert("bench-client".into(), cpu_ticks(std::process::id() as i32));
    m
}

/// OVS's bare round trip: packet-out whose only action is output:CONTROLLER on n1's bridge,
/// through the agent's OpenFlow client, until that very packet comes back as a packet-in.
async fn ovs_baseline(lab: &LabHandle, n: usize) -> Result<Dist> {
    let mgmt = lab.paths.ovs_rundir(CLUSTER, "n1").join("br-int.mgmt");
    let (sw, mut packet_ins) = Switch::connect(&mgmt)
        .await
        .with_context(|| format!("OpenFlow connection to {}", mgmt.display()))?;
    let mut d = Dist::default();
    for i in 0..n {
        // Documentation addresses and ids no trace uses: the Node's agent ignores these.
        let data = TracePacket {
            src_mac: Mac([2, 0, 0, 0, 0xbe, 1]),
            dst_mac: Mac([2, 0, 0, 0, 0xbe, 2]),
            src: "192.0.2.1".parse()?,
            dst: "192.0.2.2".parse()?,
            trace_id: 60_000 + (i % 5000) as u32,
            ttl: 64,
            ip_flags: 0,
            transport: Transport::Echo { id: 0, seq: 0 },
            secret: 0,
        }
        .build()
        .map_err(|e| anyhow!("baseline packet: {e:?}"))?;
        let po = Message::PacketOut(PacketOut::new(
            OFPP_CONTROLLER,
            vec![Action::to_controller()],
            data.clone(),
        ));
        let t = Instant::now();
        sw.send(&po).await?;
        loop {
            let pi = tokio::time::timeout(Duration::from_secs(2), packet_ins.recv())
                .await
                .map_err(|_| anyhow!("no packet-in within 2s of a packet-out to CONTROLLER"))?
                .ok_or_else(|| anyhow!("OpenFlow connection closed"))?;
            if pi.data == data {
                break;
            }
        }
        d.0.push(t.elapsed());
    }
    sw.close();
    Ok(d)
}

async fn null_grpc(api: &mut Api, n: usize) -> Result<Dist> {
    let mut d = Dist::default();
    for _ in 0..n {
        let t = Instant::now();
        api.users
            .who_am_i(pb::WhoAmIRequest {})
            .await
            .map_err(|s| anyhow!("WhoAmI: {}", s.message()))?;
        d.0.push(t.elapsed());
    }
    Ok(d)
}

/// Latency of `n` sequential traces of one kind, each checked against the reference.
async fn latency(
    api: &mut Api,
    kind: &Kind,
    want: &[pb::NodeResult],
    n: usize,
) -> Result<(Dist, Dist)> {
    let (mut client, mut server) = (Dist::default(), Dist::default());
    for _ in 0..n {
        let (t, took) = api.run(kind.spec.clone()).await?;
        if normalized(&t) != want {
            bail!("a {} trace differs from its kind's reference", kind.name);
        }
        client.0.push(took);
        server.0.push(server_time(&t));
    }
    Ok((client, server))
}

/// Live traces client → web-a: create, then ping until the trace ends.
async fn live(api: &mut Api, lab: &Arc<LabHandle>, web_a: &str, n: usize) -> Result<(Dist, Dist)> {
    let (mut client, mut server) = (Dist::default(), Dist::default());
    let kind = Kind {
        name: "live",
        spec: pb::TraceflowSpec {
            live_traffic: true,
            timeout: 10,
            packet: Some(pb::Packet {
                ip_header: Some(pb::IpHeader {
                    protocol: 1,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..spec(to_pod("web-a"), None)
        },
        ends: pb::Action::Delivered,
    };
    let mut want = None;
    for _ in 0..n {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (l, s, ip) = (lab.clone(), stop.clone(), web_a.to_string());
        let traffic = tokio::task::spawn_blocking(move || {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                l.exec("c1/default/client", &["ping", "-c1", "-W1", &ip]);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let run = api.run(kind.spec.clone()).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        traffic.await?;
        let (t, took) = run?;
        // The live result also carries the captured packet: compare the observations only.
        let got = reference(&kind, &t)?;
        match &want {
            None => want = Some(got),
            Some(w) if *w != got => bail!("a live trace differs from the first one"),
            Some(_) => {}
        }
        client.0.push(took);
        server.0.push(server_time(&t));
    }
    Ok((client, server))
}

/// `total` traces of every injected kind in turn, `concurrency` at a time over `channels`
/// mTLS connections: rate, correctness, CPU per trace per process group, and the trace
/// packet-ins the Nodes' packet-in meters dropped meanwhile (each is a report lost).
async fn throughput(
    lab: &LabHandle,
    apis: &[Api],
    kinds: &[(Kind, Vec<pb::NodeResult>)],
    procs: &[(String, i32)],
    concurrency: usize,
    total: usize,
) -> Result<Value> {
    let drops_before = meter_drops(lab).await?;
    let before = cpu_by_group(procs);
    let t0 = Instant::now();
    let first_wrong = std::sync::Mutex::new(None::<String>);
    let outcomes: Vec<Result<bool>> = stream::iter(0..total)
        .map(|i| {
            let mut api = apis[i % apis.len()].clone();
            let (kind, want) = &kinds[i % kinds.len()];
            let first_wrong = &first_wrong;
            async move {
                let (t, _) = api.run(kind.spec.clone()).await?;
                let right = phase(&t) == pb::TraceflowPhase::Succeeded && normalized(&t) == *want;
                if !right && let Ok(mut w) = first_wrong.lock() {
                    // What went wrong, for the report: phase, reason and results.
                    w.get_or_insert_with(|| format!("{:?}", t.status));
                }
                Ok(right)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let took = t0.elapsed();
    let after = cpu_by_group(procs);
    let meter_dropped = meter_drops(lab).await?.saturating_sub(drops_before);
    let errors: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().err().map(ToString::to_string))
        .collect();
    let correct = outcomes.iter().filter(|o| matches!(o, Ok(true))).count();
    let hz = clock_ticks_per_second();
    let cpu: serde_json::Map<String, Value> = after
        .iter()
        .map(|(g, t)| {
            let ms = (t - before.get(g).copied().unwrap_or(0)) as f64 / hz * 1e3 / total as f64;
            (g.clone(), json!(ms))
        })
        .collect();
    Ok(json!({
        "concurrency": concurrency, "traces": total, "correct": correct,
        "errors": errors.len(), "first_error": errors.first(),
        "first_wrong": first_wrong.lock().ok().and_then(|w| w.clone()),
        "seconds": took.as_secs_f64(), "traces_per_s": total as f64 / took.as_secs_f64(),
        "cpu_ms_per_trace": cpu, "meter_dropped_packet_ins": meter_dropped,
    }))
}

/// Trace packet-ins the bench Nodes' packet-in meters have dropped so far, as OVS counts them.
async fn meter_drops(lab: &LabHandle) -> Result<u64> {
    let mut dropped = 0;
    for node in ["n1", "n2"] {
        let mgmt = lab.paths.ovs_rundir(CLUSTER, node).join("br-int.mgmt");
        let (sw, _packet_ins) = Switch::connect(&mgmt)
            .await
            .with_context(|| format!("OpenFlow connection to {}", mgmt.display()))?;
        dropped += meter_drops::read(&sw, PACKET_IN_METER)
            .await
            .map_err(|e| anyhow!("meter counters of {node}: {e}"))?;
        sw.close();
    }
    Ok(dropped)
}

async fn run(lab: Arc<LabHandle>, sizes: Sizes, short: bool) -> Result<String> {
    let mut api = Api::connect(&lab.tfctl_config).await?;
    let procs = lab.processes()?;
    let manager_pid = lab.manager_pid()?;

    // The manager must know the Pods before traces name them.
    let pods = wait_pods(&mut api, 4).await?;
    let web_a = pods
        .iter()
        .find(|p| p.name == "web-a")
        .and_then(|p| p.ips.iter().find(|ip| !ip.contains(':')))
        .map(|ip| ip.split('/').next().unwrap_or(ip).to_string())
        .ok_or_else(|| anyhow!("no IPv4 address of web-a: is this bench.yaml?"))?;

    let mut table = Vec::new();
    let mut report = serde_json::Map::new();
    report.insert("mode".into(), json!(if short { "short" } else { "full" }));
    report.insert(
        "build".into(),
        json!(if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }),
    );
    report.insert("bin_dir".into(), json!(lab.bin_dir.display().to_string()));
    report.insert("lab_dir".into(), json!(lab.dir.display().to_string()));

    let ovs = ovs_baseline(&lab, sizes.baseline).await?;
    table.push(ovs.row("baseline ovs packet-out→in"));
    report.insert("baseline_ovs_roundtrip".into(), ovs.json());
    let grpc = null_grpc(&mut api, sizes.baseline).await?;
    table.push(grpc.row("baseline null gRPC (WhoAmI)"));
    report.insert("baseline_null_grpc".into(), grpc.json());

    // A reference result per kind (also warms every path up), then sequential latency.
    let mut kinds = Vec::new();
    for kind in injected_kinds() {
        let (t, _) = api.run(kind.spec.clone()).await?;
        let want = reference(&kind, &t)?;
        kinds.push((kind, want));
    }
    let mut lat = serde_json::Map::new();
    for (kind, want) in &kinds {
        let (client, server) = latency(&mut api, kind, want, sizes.latency).await?;
        table.push(client.row(&format!("{} client", kind.name)));
        table.push(server.row(&format!("{} server", kind.name)));
        lat.insert(
            kind.name.into(),
            json!({"client": client.json(), "server": server.json()}),
        );
    }
    let (client, server) = live(&mut api, &lab, &web_a, sizes.live).await?;
    table.push(client.row("live client (incl. ping)"));
    table.push(server.row("live server"));
    lat.insert(
        "live".into(),
        json!({"client": client.json(), "server": server.json()}),
    );
    report.insert("latency".into(), Value::Object(lat));

    // Several connections for high concurrency (HTTP/2 limits streams per connection).
    let mut apis = vec![api.clone()];
    for _ in 1..8 {
        apis.push(Api::connect(&lab.tfctl_config).await?);
    }
    let mut tput = Vec::new();
    for (concurrency, total) in sizes.throughput {
        let conns = if concurrency == 1 { 1 } else { apis.len() };
        let r = throughput(&lab, &apis[..conns], &kinds, &procs, concurrency, total).await?;
        table.push(format!(
            "throughput c={concurrency:<5} {:>6} traces {:>8.0}/s correct {} errors {} meter drops {} cpu ms/trace {}",
            total, r["traces_per_s"].as_f64().unwrap_or(0.0), r["correct"], r["errors"],
            r["meter_dropped_packet_ins"], r["cpu_ms_per_trace"]
        ));
        tput.push(r);
    }
    report.insert("throughput".into(), json!(tput));
    let rss = rss_kib(manager_pid);
    table.push(format!("manager RSS {:.1} MiB", rss as f64 / 1024.0));
    report.insert("manager_rss_kib".into(), json!(rss));

    Ok(format!(
        "{}\n{}",
        table.join("\n"),
        serde_json::to_string(&Value::Object(report))?
    ))
}

async fn wait_pods(api: &mut Api, want: usize) -> Result<Vec<pb::InventoryPod>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pods = api
            .clusters
            .list_pods(pb::ListInventoryRequest {
                cluster: CLUSTER.into(),
                page_size: 1000,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().pods)
            .unwrap_or_default();
        if pods.len() >= want {
            return Ok(pods);
        }
        if Instant::now() > deadline {
            bail!(
                "{} Pods of {CLUSTER} in the manager after 30s, want {want}",
                pods.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
