//! The pipeline as a function of the adapter's desired state (`NodeState` through
//! `desired::Store`) on two real OVS Nodes joined by Geneve. Needs root and
//! openvswitch-switch; fails loudly without them.

mod support;

use std::time::{Duration, Instant};

use support::OvsNode;
use tokio_util::sync::CancellationToken;
use traceflow_agent::desired::Store;
use traceflow_agent::runtime::{NodeRuntime, OvsPaths};
use traceflow_agent::trace::Observed;
use traceflow_proto::v1 as pb;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
}

fn node_info(name: &str, subnet: u8, tunnel_ip: &str) -> pb::NodeInfo {
    pb::NodeInfo {
        name: name.into(),
        pod_cidrs: vec![format!("10.{subnet}.0.0/24"), format!("fd00:{subnet}::/64")],
        tunnel_ips: vec![tunnel_ip.into()],
    }
}

/// Two Nodes (`node-a` 10.1.0.0/24, `node-b` 10.2.0.0/24, two Pods each), each runtime
/// following its own store, which got a replace naming the other Node as its peer.
struct Pair {
    a: OvsNode,
    b: OvsNode,
    tun_a: String,
    tun_b: String,
    ra: NodeRuntime,
    rb: NodeRuntime,
    sa: Store,
    sb: Store,
    _stop: tokio_util::sync::DropGuard,
}

async fn pair() -> Pair {
    init_tracing();
    let a = OvsNode::start_subnet(1, 2);
    let b = OvsNode::start_subnet(2, 2);
    let (tun_a, tun_b) = OvsNode::connect_underlay(&a, &b);
    let shutdown = CancellationToken::new();
    let mut out = Vec::new();
    for (node, name, me, peer) in [
        (
            &a,
            "node-a",
            node_info("node-a", 1, &tun_a),
            node_info("node-b", 2, &tun_b),
        ),
        (
            &b,
            "node-b",
            node_info("node-b", 2, &tun_b),
            node_info("node-a", 1, &tun_a),
        ),
    ] {
        let store = Store::default();
        store.apply(pb::NodeState {
            replace: true,
            node: Some(me),
            peers_upsert: vec![peer],
            ..Default::default()
        });
        let mut rt = NodeRuntime::start_with(
            name,
            &OvsPaths::new(node.rundir(), "br-int"),
            store.subscribe(),
            shutdown.clone(),
        );
        tokio::time::timeout(
            Duration::from_secs(10),
            rt.ports
                .wait_for(|p| p.pods.len() == 2 && p.gateway.is_some()),
        )
        .await
        .unwrap_or_else(|_| panic!("{name}: ports not discovered"))
        .unwrap_or_else(|_| panic!("port watcher stopped"));
        out.push((rt, store));
    }
    let mut it = out.into_iter();
    let (ra, sa) = it.next().unwrap_or_else(|| panic!("a"));
    let (rb, sb) = it.next().unwrap_or_else(|| panic!("b"));
    let p = Pair {
        a,
        b,
        tun_a,
        tun_b,
        ra,
        rb,
        sa,
        sb,
        _stop: shutdown.drop_guard(),
    };
    // Programmed with the peers: the route to the other Node's Pod CIDR is on br-int.
    wait_flows(&p.a, "nw_dst=10.2.0.0/24", true);
    wait_flows(&p.b, "nw_dst=10.1.0.0/24", true);
    p
}

/// Waits (10 s) until `needle` is (or is no longer) in the Node's flows.
fn wait_flows(node: &OvsNode, needle: &str, present: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let flows = node.dump_flows();
        if flows.contains(needle) == present {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {needle:?} present={} expected={present}:\n{flows}",
            node.netns,
            !present
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ping_retry(node: &OvsNode, from: usize, ip: &str) -> bool {
    (0..5).any(|_| node.ping(from, ip))
}

async fn next_obs(rt: &mut NodeRuntime) -> Observed {
    tokio::time::timeout(Duration::from_secs(5), rt.observations.recv())
        .await
        .unwrap_or_else(|_| panic!("no packet-in within 5 s"))
        .unwrap_or_else(|| panic!("observation stream ended"))
}

fn summary(o: &Observed) -> Vec<(pb::Component, String, pb::Action)> {
    o.result
        .observations
        .iter()
        .map(|x| {
            (
                pb::Component::try_from(x.component).unwrap_or(pb::Component::Unspecified),
                x.component_info.clone(),
                pb::Action::try_from(x.action).unwrap_or(pb::Action::Unspecified),
            )
        })
        .collect()
}

fn dump_on_failure(ok: bool, nodes: &[&OvsNode], what: &str) {
    if !ok {
        for n in nodes {
            eprintln!("==== {} ====\n{}", n.netns, n.dump_flows());
        }
    }
    assert!(ok, "{what}");
}

/// Peers come from the store: cross-Node ping works, a trace p0(a) → p1(b) is reported by
/// both Nodes, and deleting / re-adding the peer removes / restores the route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_from_node_state_route_through_the_tunnel() {
    let mut p = pair().await;
    let dst = p.b.pods[1].ip.clone();
    let ok = ping_retry(&p.a, 0, &dst);
    dump_on_failure(ok, &[&p.a, &p.b], "p0(node-a) cannot ping p1(node-b)");

    let req = pb::InjectPacket {
        trace_uid: "uid-ns".into(),
        trace_id: 811,
        src_pod_namespace: "default".into(),
        src_pod_name: "p0".into(),
        dst_ip: dst.clone(),
        protocol: 1,
        ..Default::default()
    };
    p.ra.tracer
        .inject(&req)
        .await
        .unwrap_or_else(|e| panic!("inject: {e}"));
    let sender = next_obs(&mut p.ra).await;
    assert_eq!(
        (sender.trace_id, sender.result.role.as_str()),
        (811, "sender")
    );
    assert_eq!(
        summary(&sender),
        vec![
            (
                pb::Component::SpoofGuard,
                String::new(),
                pb::Action::Forwarded
            ),
            (
                pb::Component::Forwarding,
                "Output".into(),
                pb::Action::Forwarded
            ),
        ]
    );
    assert_eq!(sender.result.observations[1].tunnel_dst_ip, p.tun_b);
    let receiver = next_obs(&mut p.rb).await;
    assert_eq!(
        (receiver.trace_id, receiver.result.role.as_str()),
        (811, "receiver")
    );
    assert_eq!(
        summary(&receiver),
        vec![
            (
                pb::Component::Forwarding,
                String::new(),
                pb::Action::Received
            ),
            (
                pb::Component::Forwarding,
                "Output".into(),
                pb::Action::Delivered
            ),
        ]
    );

    // A delta deleting the peer removes its route (and only then does ping fail) ...
    assert!(p.sa.apply(pb::NodeState {
        peers_delete: vec!["node-b".into()],
        ..Default::default()
    }));
    wait_flows(&p.a, "nw_dst=10.2.0.0/24", false);
    assert!(!p.a.ping(0, &dst), "ping crossed without a route");
    // ... and an upsert restores it.
    assert!(p.sa.apply(pb::NodeState {
        peers_upsert: vec![node_info("node-b", 2, &p.tun_b)],
        ..Default::default()
    }));
    wait_flows(&p.a, &format!("{}->tun_dst", p.tun_b), true);
    let ok = ping_retry(&p.a, 0, &dst);
    dump_on_failure(ok, &[&p.a, &p.b], "ping after the peer came back");
    let _ = (&p.sb, &p.tun_a);
}
