//! Benchmark program (prints figures; not a timed test): trace injection latency and
//! concurrency against a real OVS Node, compared with a baseline measured in the same run.
//!
//! baseline  packet-out whose only action is output:CONTROLLER (OVS's bare packet-out →
//!           packet-in round trip, through the same client and packet-in interpreter)
//! inject    `Tracer::inject` (packet-out at the Pod port, output:TABLE, full pipeline incl.
//!           conntrack) until its observations arrive
//! burst     N concurrent injections with distinct ids until every report is attributed
//!
//! Run as root: `cargo bench -p traceflow-agent --bench inject_latency [-- N]`.

#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use traceflow_agent::ovs::openflow::{Action, Message, PacketOut};
use traceflow_agent::ports::Mac;
use traceflow_agent::runtime::{NodeRuntime, OvsPaths};
use traceflow_agent::trace::packet::{TracePacket, Transport};
use traceflow_proto::v1 as pb;

fn percentiles(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let p = |q: f64| {
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v[i].as_secs_f64() * 1e6
    };
    println!(
        "{name:<10} n={:<5} p50={:>8.1}µs p90={:>8.1}µs p99={:>8.1}µs max={:>8.1}µs",
        v.len(),
        p(0.5),
        p(0.9),
        p(0.99),
        p(1.0)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; the first numeric argument is N.
    let n: u32 = std::env::args()
        .filter_map(|a| a.parse().ok())
        .next()
        .unwrap_or(500);
    let node = support::OvsNode::start(2);
    let shutdown = CancellationToken::new();
    let (_peers_tx, peers) = tokio::sync::watch::channel(Vec::new());
    let mut rt = NodeRuntime::start(
        "bench",
        &OvsPaths::new(node.rundir(), "br-int"),
        peers,
        shutdown.clone(),
    );
    rt.ports.wait_for(|p| p.pods.len() == 2).await.unwrap();
    let mut sw_rx = rt.datapath.switch.clone();
    let sw = sw_rx
        .wait_for(Option::is_some)
        .await
        .unwrap()
        .clone()
        .unwrap();
    while !node.dump_flows().contains("dl_dst=02:00:00:00:00:02") {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let pkt = |id: u32| {
        TracePacket {
            src_mac: Mac([2, 0, 0, 0, 0, 1]),
            dst_mac: Mac([2, 0, 0, 0, 0, 2]),
            src: node.pods[0].ip.parse().unwrap(),
            dst: node.pods[1].ip.parse().unwrap(),
            trace_id: id,
            ttl: 64,
            ip_flags: 0,
            transport: Transport::Echo { id: 0, seq: 0 },
            secret: 0,
        }
        .build()
        .unwrap()
    };
    let req = |id: u32| pb::InjectPacket {
        trace_uid: format!("b{id}"),
        trace_id: id,
        src_pod_namespace: "default".into(),
        src_pod_name: "p0".into(),
        dst_ip: node.pods[1].ip.clone(),
        protocol: 1,
        ..Default::default()
    };

    let mut base = Vec::new();
    let mut inject = Vec::new();
    for i in 0..n {
        let id = i % 60000 + 1;
        let po = Message::PacketOut(PacketOut::new(3, vec![Action::to_controller()], pkt(id)));
        let t = Instant::now();
        sw.transact(&[po]).await.unwrap();
        let o = rt.observations.recv().await.unwrap();
        base.push(t.elapsed());
        assert_eq!(o.trace_id, id);

        let t = Instant::now();
        rt.tracer.inject(&req(id)).await.unwrap();
        let o = rt.observations.recv().await.unwrap();
        inject.push(t.elapsed());
        assert_eq!(o.trace_id, id);
    }
    println!(
        "trace injection on one Node ({} sequential round trips each)",
        n
    );
    percentiles("baseline", base);
    percentiles("inject", inject);

    for burst in [200u32, 1000] {
        let t = Instant::now();
        let mut tasks = Vec::new();
        for k in 0..burst {
            let tracer = rt.tracer.clone();
            let r = req(10_000 + k);
            tasks.push(tokio::spawn(async move { tracer.inject(&r).await }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let mut seen = std::collections::HashSet::new();
        while seen.len() < burst as usize {
            let o = tokio::time::timeout(Duration::from_secs(10), rt.observations.recv())
                .await
                .expect("reports stopped arriving")
                .unwrap();
            assert!((10_000..10_000 + burst).contains(&o.trace_id));
            seen.insert(o.trace_id);
        }
        let el = t.elapsed();
        println!(
            "burst      {burst} concurrent traces attributed in {:.1} ms ({:.0} traces/s)",
            el.as_secs_f64() * 1e3,
            f64::from(burst) / el.as_secs_f64()
        );
    }
    shutdown.cancel();
}
