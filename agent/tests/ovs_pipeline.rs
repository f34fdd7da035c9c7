//! The agent's pipeline and injector against a real Open vSwitch (userspace datapath) in its
//! own network namespace. Needs root and openvswitch-switch; fails loudly without them.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::OvsNode;
use support::runtime::{
    assert_received_and_delivered, assert_sent_into_tunnel, icmp_trace, init_tracing, next_obs,
    output, spoofguard, summary, switch_of, trace, wait_programmed,
};
use tokio_util::sync::CancellationToken;
use traceflow_agent::desired::Peer;
use traceflow_agent::pipeline::{COOKIE, Table};
use traceflow_agent::runtime::{NodeRuntime, OvsPaths};
use traceflow_proto::v1 as pb;

/// Stops the runtime's tasks when the test ends, however it ends (and keeps the peers
/// sender alive until then).
struct Stop(
    CancellationToken,
    #[allow(dead_code)] tokio::sync::watch::Sender<Vec<Peer>>,
);
impl Drop for Stop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

async fn start(node: &OvsNode) -> (NodeRuntime, Stop) {
    init_tracing();
    let shutdown = CancellationToken::new();
    // One peer Node behind the tunnel, as the adapter (or --peer) would describe it.
    let peer: Peer = "10.2.0.0/24,fd00:2::/64=192.168.77.2"
        .parse()
        .expect("a valid peer");
    let (peers_tx, peers) = tokio::sync::watch::channel(vec![peer]);
    let mut rt = NodeRuntime::start(
        "node-a",
        &OvsPaths::new(node.rundir(), "br-int"),
        peers,
        shutdown.clone(),
    );
    // Ready: every Pod discovered and the pipeline programmed with them.
    wait_programmed(&mut rt, node, "node-a").await;
    (rt, Stop(shutdown, peers_tx))
}

fn inject_req(node: &OvsNode, from: usize, to: usize, id: u32) -> pb::InjectPacket {
    icmp_trace(id, &node.pods[from].name, &node.pods[to].ip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inject_pod_to_pod_reports_spoofguard_then_delivered() {
    let node = OvsNode::start(2);
    let (mut rt, _stop) = start(&node).await;

    let o = trace(&mut rt, &inject_req(&node, 0, 1, 4242)).await;
    assert_eq!(o.trace_id, 4242);
    assert!(!o.ipv6);
    assert_eq!(o.result.node, "node-a");
    assert_eq!(o.result.role, "sender");
    assert!(o.result.timestamp > 0);
    assert_eq!(
        summary(&o),
        vec![spoofguard(), output(pb::Action::Delivered)]
    );
    assert_eq!(o.result.observations[0].src_pod_ip, node.pods[0].ip);
    assert!(o.result.observations.iter().all(|x| x.timestamp_micros > 0));
    // The trace packet went through conntrack (tracked and committed) like real traffic.
    let table = format!("table={}", Table::ConntrackCommit.id());
    let commit = node.ofctl(&["dump-flows", &node.mgmt(), &table]);
    assert!(
        commit
            .lines()
            .any(|l| l.contains("ct(commit") && !l.contains("n_packets=0")),
        "trace packet not committed:\n{commit}"
    );

    // IPv6: the trace id rides in the 20-bit flow label.
    let mut v6 = inject_req(&node, 1, 0, 0xabcde);
    v6.ipv6 = true;
    v6.dst_ip = node.pods[0].ip6.clone();
    let o = trace(&mut rt, &v6).await;
    assert_eq!((o.trace_id, o.ipv6), (0xabcde, true));
    assert_eq!(summary(&o).last().map(|s| s.2), Some(pb::Action::Delivered));

    // To an address outside the Node: out through the gateway, out of network.
    let mut ext = inject_req(&node, 0, 1, 7);
    ext.dst_ip = "192.0.2.10".into();
    ext.protocol = 6;
    ext.dst_port = 443;
    // SYN, as the adapter defaults it (a flagless TCP packet is conntrack-invalid: dropped).
    ext.tcp_flags = 2;
    let o = trace(&mut rt, &ext).await;
    assert_eq!(o.trace_id, 7);
    assert_eq!(
        summary(&o).last().map(|s| s.2),
        Some(pb::Action::ForwardedOutOfNetwork)
    );

    // Every protocol the adapter can ask for reaches the Output table, IPv4 and IPv6.
    let cases: [(i32, i32, i32); 5] = [
        (17, 53, 0),
        (132, 9, 0),
        (47, 0, 0),
        // (A SYN-ACK out of nowhere would be conntrack-invalid and vanish, as in Antrea.)
        (6, 80, 0x02),
        (58, 0, 0),
    ];
    for (k, (proto, port, flags)) in cases.into_iter().enumerate() {
        for ipv6 in [false, true] {
            let id = 100 + u32::try_from(k).unwrap_or(0) * 2 + u32::from(ipv6);
            let mut r = inject_req(&node, 0, 1, id);
            (r.protocol, r.dst_port, r.tcp_flags, r.ipv6) = (proto, port, flags, ipv6);
            if ipv6 {
                r.dst_ip = node.pods[1].ip6.clone();
            }
            let o = trace(&mut rt, &r).await;
            assert_eq!((o.trace_id, o.ipv6), (id, ipv6), "protocol {proto}");
            assert_eq!(
                summary(&o).last().map(|s| s.2),
                Some(pb::Action::Delivered),
                "protocol {proto}"
            );
        }
    }

    // A trace packet is not delivered to the destination Pod: nothing else arrives.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rt.observations.recv())
            .await
            .is_err()
    );

    // A failed injection explains itself in Antrea's words.
    let mut bad = inject_req(&node, 0, 1, 8);
    bad.ipv6 = true;
    bad.dst_ip = "fd00:1::3".into();
    let flows_ok = rt.tracer.inject(&bad).await;
    assert!(flows_ok.is_ok(), "p0 has an IPv6 address: {flows_ok:?}");
    let _ = next_obs(&mut rt).await;
    bad.dst_ip = "10.1.0.3".into();
    assert_eq!(
        rt.tracer.inject(&bad).await.map_err(|e| e.to_string()),
        Err("destination IP does not match the IP header family".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_traces_are_attributed() {
    let node = OvsNode::start(3);
    let (mut rt, _stop) = start(&node).await;

    // 200 distinct ids, injected concurrently from different Pods to different targets;
    // expected destination recorded per id.
    let mut expected = HashMap::new();
    let mut tasks = Vec::new();
    for k in 0..200u32 {
        let id = 1000 + k * 37;
        let from = usize::try_from(k % 3).unwrap_or(0);
        let to = (from + 1 + usize::try_from(k % 2).unwrap_or(0)) % 3;
        expected.insert(id, (node.pods[from].ip.clone(), node.pods[to].ip.clone()));
        let req = inject_req(&node, from, to, id);
        let t = rt.tracer.clone();
        tasks.push(tokio::spawn(async move { t.inject(&req).await }));
    }
    for t in tasks {
        t.await.expect("task").expect("inject");
    }
    let mut seen = HashMap::new();
    while seen.len() < expected.len() {
        let o = next_obs(&mut rt).await;
        let (src, _dst) = expected
            .get(&o.trace_id)
            .unwrap_or_else(|| panic!("packet-in for unknown trace id {}", o.trace_id));
        assert_eq!(
            &o.result.observations[0].src_pod_ip, src,
            "trace {} from the wrong Pod",
            o.trace_id
        );
        assert_eq!(summary(&o).last().map(|s| s.2), Some(pb::Action::Delivered));
        assert!(seen.insert(o.trace_id, o).is_none(), "duplicate report");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_ping_between_pods_works() {
    let node = OvsNode::start(2);
    let (_rt, _stop) = start(&node).await;
    // One-shot discovery (transact + select) sees what the monitor saw.
    let mut db = traceflow_agent::ovs::ovsdb::Ovsdb::connect(&node.rundir().join("db.sock"))
        .await
        .expect("ovsdb");
    let rows = db.list_interfaces().await.expect("select");
    let ports = traceflow_agent::ports::NodePorts::from_interfaces(&rows);
    assert_eq!(ports.pods.len(), 2);
    assert_eq!(
        (ports.tunnel_ofport, ports.gateway.map(|g| g.ofport)),
        (Some(1), Some(2))
    );
    let ip1 = node.pods[1].ip.clone();
    assert!(
        node.ping(0, &ip1),
        "p0 cannot ping p1 ({ip1}) through the pipeline"
    );
    let ip0 = node.pods[0].ip.clone();
    assert!(node.ping(1, &ip0), "p1 cannot ping p0 ({ip0})");
    assert!(node.ping(0, &node.gateway_ip), "p0 cannot ping the gateway");
    let ip6 = node.pods[1].ip6.clone();
    assert!(
        node.ping(0, &ip6),
        "p0 cannot ping p1 over IPv6 ({ip6}): ND or IPv6 flows broken"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_reprograms_after_vswitchd_restart() {
    let node = OvsNode::start(2);
    let (mut rt, _stop) = start(&node).await;
    let cookie = format!("cookie={COOKIE:#x}");
    assert!(node.dump_flows().contains(&cookie));
    // Reconcile is idempotent: our flows are replaced, not duplicated.
    let before = node.dump_flows().lines().count();

    node.kill_vswitchd();
    node.start_vswitchd();
    let restarted = Instant::now();
    loop {
        let flows = std::process::Command::new("ovs-ofctl")
            .args(["-O", "OpenFlow15", "dump-flows", &node.mgmt()])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        if node
            .pods
            .iter()
            .all(|p| flows.contains(&format!("dl_dst={}", p.mac)))
            && flows.contains(&cookie)
        {
            assert_eq!(
                flows.lines().count(),
                before,
                "flow count changed after reprogramming"
            );
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(5),
            "flows not reprogrammed within 5 s:\n{flows}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "reprogrammed {:?} after ovs-vswitchd restart",
        restarted.elapsed()
    );
    // The packet-in meter (lost with ovs-vswitchd) is back, and trace packet-ins use it.
    let meters = node.ofctl(&["dump-meters", &node.mgmt()]);
    assert!(
        meters.contains("meter=257") && meters.contains("rate=5000"),
        "{meters}"
    );
    assert!(
        node.dump_flows().contains("meter:257"),
        "trace flows do not use the meter"
    );

    // And tracing works on the new connection.
    let o = trace(&mut rt, &inject_req(&node, 0, 1, 99)).await;
    assert_eq!(o.trace_id, 99);
    assert!(node.ping(0, &node.pods[1].ip.clone()), "ping after restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_from_tunnel_is_received_routed_and_delivered() {
    use traceflow_agent::ovs::openflow::{Action, Message, PacketOut, port};
    use traceflow_agent::ports::Mac;
    use traceflow_agent::trace::packet::{TracePacket, Transport};

    let node = OvsNode::start(2);
    let (mut rt, _stop) = start(&node).await;
    // What a sender Node would put on the wire: routed, so dst MAC = the global virtual MAC.
    let data = TracePacket {
        src_mac: Mac([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x01]),
        dst_mac: Mac([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]),
        src: "10.2.0.5".parse().unwrap(),
        dst: node.pods[1].ip.parse().unwrap(),
        trace_id: 555,
        ttl: 64,
        ip_flags: 0,
        transport: Transport::Echo { id: 1, seq: 1 },
        secret: 0x5ec7,
    }
    .build()
    .unwrap();
    let sw = switch_of(&rt);
    let po = Message::PacketOut(PacketOut::new(
        node.tunnel_ofport,
        vec![Action::output(port::TABLE)],
        data,
    ));
    sw.transact(&[po]).await.expect("packet-out");

    let o = next_obs(&mut rt).await;
    assert_eq!(o.trace_id, 555);
    assert_received_and_delivered(&o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_to_a_peer_node_is_forwarded_into_the_tunnel() {
    let node = OvsNode::start(2);
    let (mut rt, _stop) = start(&node).await;
    for (id, ipv6, dst) in [(31, false, "10.2.0.5"), (0xfffff, true, "fd00:2::5")] {
        let mut req = inject_req(&node, 0, 1, id);
        req.ipv6 = ipv6;
        req.dst_ip = dst.into();
        let o = trace(&mut rt, &req).await;
        assert_eq!((o.trace_id, o.ipv6), (id, ipv6));
        assert_sent_into_tunnel(&o, "192.168.77.2");
    }
}

/// Two Nodes joined by a Geneve tunnel over a br-phy underlay (the lab's layout): an injected
/// trace is reported by both Nodes with the same id, and real traffic crosses the tunnel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_over_geneve() {
    let a = OvsNode::start_subnet(1, 1);
    let b = OvsNode::start_subnet(2, 1);
    let (tun_a, tun_b) = OvsNode::connect_underlay(&a, &b);
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let mut runtimes = Vec::new();
    let mut peer_senders = Vec::new();
    for (node, name, peer) in [
        (&a, "node-a", format!("10.2.0.0/24,fd00:2::/64={tun_b}")),
        (&b, "node-b", format!("10.1.0.0/24,fd00:1::/64={tun_a}")),
    ] {
        let peer: Peer = peer.parse().unwrap();
        let (tx, peers) = tokio::sync::watch::channel(vec![peer]);
        peer_senders.push(tx);
        let mut rt = NodeRuntime::start(
            name,
            &OvsPaths::new(node.rundir(), "br-int"),
            peers,
            shutdown.clone(),
        );
        wait_programmed(&mut rt, node, name).await;
        runtimes.push(rt);
    }
    let (mut ra, mut rb) = {
        let mut it = runtimes.into_iter();
        (
            it.next().unwrap_or_else(|| panic!("a")),
            it.next().unwrap_or_else(|| panic!("b")),
        )
    };

    // Real traffic first (it also settles any neighbour resolution on the way).
    let dst = b.pods[0].ip.clone();
    let ok = a.ping_retry(0, &dst);
    if !ok {
        for n in [&a, &b] {
            eprintln!("==== {} ====\n{}", n.netns, n.dump_flows());
            eprintln!("{}", n.appctl(&["ovs/route/show"]));
            eprintln!("{}", n.appctl(&["tnl/neigh/show"]));
            eprintln!("{}", n.appctl(&["dpctl/dump-flows"]));
        }
    }
    assert!(
        ok,
        "p0 on node-a cannot ping p0 on node-b ({dst}) through the tunnel"
    );

    let req = pb::InjectPacket {
        protocol: 6,
        dst_port: 80,
        tcp_flags: 2,
        ..icmp_trace(4711, "p0", &dst)
    };
    let sender = trace(&mut ra, &req).await;
    assert_eq!(sender.trace_id, 4711);
    assert_sent_into_tunnel(&sender, &tun_b);
    let receiver = next_obs(&mut rb).await;
    assert_eq!(
        (receiver.trace_id, receiver.result.node.as_str()),
        (4711, "node-b")
    );
    assert_received_and_delivered(&receiver);
    drop(peer_senders);
}

/// A Pod that forges the trace class (DSCP 63, `ping -Q 252`) is never taken for a trace: the
/// PipelineRootClassifier clears the DSCP of a packet without the mark only the agent's
/// packet-out sets, so the packet is delivered like any other and no trace observation is made; a real
/// injection still is a trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_forging_the_trace_dscp_is_not_taken_for_a_trace() {
    let node = OvsNode::start(2);
    let (mut rt, _stop) = start(&node).await;
    let dst = node.pods[1].ip.clone();
    assert!(node.ping_retry(0, &dst), "a plain ping between the Pods");
    let forged = (0..5).any(|_| {
        node.in_pod(0, "ping")
            .args(["-c1", "-W2", "-Q", "252", &dst])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    support::dump_on_failure(forged, &[&node], "forged DSCP-63 ping");
    assert!(
        forged,
        "a DSCP-63 packet from a Pod was swallowed as a trace packet"
    );
    let stray = tokio::time::timeout(Duration::from_millis(500), rt.observations.recv()).await;
    assert!(
        stray.is_err(),
        "the forged packet produced a trace observation"
    );
    // Counted where it was cleared: the counting meter behind `forged_trace_packets`.
    let sw = switch_of(&rt);
    let counted = traceflow_agent::pipeline::meter_drops::read_entered(
        &sw,
        traceflow_agent::pipeline::FORGED_TRACE_METER,
    )
    .await
    .unwrap_or_else(|e| panic!("meter stats: {e}"));
    assert!(counted >= 1, "the forged packet was not counted");
    let o = trace(&mut rt, &inject_req(&node, 0, 1, 4343)).await;
    assert_eq!(o.trace_id, 4343);
}

/// What a meter drops is read back through the agent's OpenFlow client exactly as Open
/// vSwitch counts it (the reading behind the `trace_meter_drops` / `reject_meter_drops`
/// counters): 50 packets sent through a meter of 1 packet per second reach the controller
/// only as far as the meter lets them, and the drop count read is the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meter_drops_are_read_as_ovs_counts_them() {
    use traceflow_agent::ovs::openflow::message::{METER_BURST, METER_PKTPS, MeterMod, meter_cmd};
    use traceflow_agent::ovs::openflow::{Action, Message, PacketOut, Switch, port};
    use traceflow_agent::pipeline::meter_drops;
    use traceflow_agent::ports::Mac;
    use traceflow_agent::trace::packet::{TracePacket, Transport};
    const METER: u32 = 9;
    const SENT: u64 = 50;
    init_tracing();
    let node = OvsNode::start(1);
    let (sw, mut packet_ins) = Switch::connect(&node.rundir().join("br-int.mgmt"))
        .await
        .expect("OpenFlow connection to br-int");
    sw.transact(&[Message::MeterMod(MeterMod {
        command: meter_cmd::ADD,
        flags: METER_PKTPS | METER_BURST,
        meter_id: METER,
        drop_bands: vec![(1, 1)],
    })])
    .await
    .expect("meter installed");
    let fresh = meter_drops::read(&sw, METER).await.expect("meter stats");
    assert_eq!(fresh, 0, "a new meter");
    let data = TracePacket {
        src_mac: Mac([2, 0, 0, 0, 0xbe, 1]),
        dst_mac: Mac([2, 0, 0, 0, 0xbe, 2]),
        src: "192.0.2.1".parse().expect("address"),
        dst: "192.0.2.2".parse().expect("address"),
        trace_id: 1,
        ttl: 64,
        ip_flags: 0,
        transport: Transport::Echo { id: 0, seq: 0 },
        secret: 0,
    }
    .build()
    .expect("packet");
    for _ in 0..SENT {
        sw.send(&Message::PacketOut(PacketOut::new(
            port::CONTROLLER,
            vec![Action::Meter(METER), Action::to_controller()],
            data.clone(),
        )))
        .await
        .expect("packet-out");
    }
    sw.barrier().await.expect("barrier");
    let mut passed = 0u64;
    while let Ok(Some(_)) =
        tokio::time::timeout(Duration::from_millis(500), packet_ins.recv()).await
    {
        passed += 1;
    }
    let dropped = meter_drops::read(&sw, METER).await.expect("meter stats");
    let ofctl = node.ofctl(&["meter-stats", &node.mgmt(), &format!("meter={METER}")]);
    assert!(
        ofctl.contains(&format!("0: packet_count:{dropped} ")),
        "ovs-ofctl counts otherwise than we read ({dropped}): {ofctl}"
    );
    assert_eq!(
        passed + dropped,
        SENT,
        "every packet either reached the controller or was dropped ({passed} passed): {ofctl}"
    );
    assert!(
        dropped >= SENT - 5,
        "a 1 packet/s meter let {passed} of {SENT} through: {ofctl}"
    );
    sw.close();
}
