//! The pipeline as a function of the adapter's desired state (`NodeState` through
//! `desired::Store`) on two real OVS Nodes joined by Geneve. Needs root and
//! openvswitch-switch; fails loudly without them.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::runtime::{
    assert_received_and_delivered, assert_sent_into_tunnel, icmp_trace, init_tracing, next_obs,
    output, policy, received, spoofguard, summary, switch_of, trace, wait_programmed,
};
use support::{OvsNode, dump_on_failure};
use tokio_util::sync::CancellationToken;
use traceflow_agent::desired::Store;
use traceflow_agent::pipeline::Table;
use traceflow_agent::runtime::{NodeRuntime, OvsPaths};
use traceflow_agent::trace::{LiveStartError, Observed};
use traceflow_proto::v1 as pb;

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
    pair_keyed(0).await
}

/// [`pair`], both Nodes given the cluster's tunnel key `key` (0: none).
async fn pair_keyed(key: u64) -> Pair {
    init_tracing();
    let a = OvsNode::start_subnet(1, 2);
    let b = OvsNode::start_subnet(2, 2);
    let (tun_a, tun_b) = OvsNode::connect_underlay(&a, &b);
    // The userspace datapath does not complete checksums left to offload, and conntrack
    // marks such TCP segments invalid: Pods compute their own (as the lab's Pods do).
    for node in [&a, &b] {
        for (i, pod) in node.pods.iter().enumerate() {
            let ok = node
                .in_pod(i, "ethtool")
                .args(["-K", "eth0", "tx", "off"])
                .output()
                .is_ok_and(|o| o.status.success());
            assert!(
                ok,
                "ethtool -K eth0 tx off failed in {} (install ethtool)",
                pod.netns
            );
        }
    }
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
            trace_tunnel_key: key,
            ..Default::default()
        });
        let mut rt = NodeRuntime::start_with(
            name,
            &OvsPaths::new(node.rundir(), "br-int"),
            store.subscribe(),
            shutdown.clone(),
        );
        wait_programmed(&mut rt, node, name).await;
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
    p.a.wait_flows("nw_dst=10.2.0.0/24", true);
    p.b.wait_flows("nw_dst=10.1.0.0/24", true);
    p
}

/// Peers come from the store: cross-Node ping works, a trace p0(a) → p1(b) is reported by
/// both Nodes, and deleting / re-adding the peer removes / restores the route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_from_node_state_route_through_the_tunnel() {
    let mut p = pair().await;
    let dst = p.b.pods[1].ip.clone();
    let ok = p.a.ping_retry(0, &dst);
    dump_on_failure(ok, &[&p.a, &p.b], "p0(node-a) cannot ping p1(node-b)");

    let sender = trace(&mut p.ra, &icmp_trace(811, "p0", &dst)).await;
    assert_eq!(sender.trace_id, 811);
    assert_sent_into_tunnel(&sender, &p.tun_b);
    let receiver = next_obs(&mut p.rb).await;
    assert_eq!(receiver.trace_id, 811);
    assert_received_and_delivered(&receiver);

    // A delta deleting the peer removes its route (and only then does ping fail) ...
    assert!(p.sa.apply(pb::NodeState {
        peers_delete: vec!["node-b".into()],
        ..Default::default()
    }));
    p.a.wait_flows("nw_dst=10.2.0.0/24", false);
    assert!(!p.a.ping(0, &dst), "ping crossed without a route");
    // ... and an upsert restores it.
    assert!(p.sa.apply(pb::NodeState {
        peers_upsert: vec![node_info("node-b", 2, &p.tun_b)],
        ..Default::default()
    }));
    p.a.wait_flows(&format!("{}->tun_dst", p.tun_b), true);
    let ok = p.a.ping_retry(0, &dst);
    dump_on_failure(ok, &[&p.a, &p.b], "ping after the peer came back");
    let _ = (&p.sb, &p.tun_a);
}

/// With the cluster's tunnel key, the tunnel proves where a trace packet comes from: a Node
/// of the cluster sends its trace packets into the tunnel with the key as a Geneve option
/// (mapped on br-int by the agent), so a trace across the real Geneve tunnel is reported by
/// both Nodes, while a tunnelled packet of the trace class without the key (what anyone on
/// the underlay could send) loses its DSCP at PipelineRootClassifier and is never reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnelled_trace_packet_counts_only_with_the_clusters_key() {
    use traceflow_agent::ovs::openflow::{Action, Message, PacketOut, port};
    use traceflow_agent::ports::Mac;
    use traceflow_agent::trace::packet::{TracePacket, Transport};
    const KEY: u64 = 0x7e57_0000_c1a5_5e75;
    let mut p = pair_keyed(KEY).await;
    for node in [&p.a, &p.b] {
        let map = node.ofctl(&["dump-tlv-map", &node.mgmt()]);
        assert!(
            map.contains("0xffff") && map.contains("tun_metadata0"),
            "the agent mapped the key's Geneve option: {map}"
        );
    }
    p.b.wait_flows(&format!("tun_metadata0=0x{KEY:x}"), true);
    let dst = p.b.pods[1].ip.clone();
    let sender = trace(&mut p.ra, &icmp_trace(812, "p0", &dst)).await;
    assert_sent_into_tunnel(&sender, &p.tun_b);
    let receiver = next_obs(&mut p.rb).await;
    assert_eq!(
        receiver.trace_id, 812,
        "the keyed packet is the trace's on node-b"
    );
    assert_received_and_delivered(&receiver);

    // The same kind of packet arriving through the tunnel without the key.
    let forged = TracePacket {
        src_mac: Mac([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x01]),
        dst_mac: Mac([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]),
        src: p.a.pods[0].ip.parse().unwrap_or_else(|e| panic!("{e}")),
        dst: dst.parse().unwrap_or_else(|e| panic!("{e}")),
        trace_id: 813,
        ttl: 64,
        ip_flags: 0,
        transport: Transport::Echo { id: 1, seq: 1 },
        secret: 0,
    }
    .build()
    .unwrap_or_default();
    let sw = switch_of(&p.rb);
    sw.transact(&[Message::PacketOut(PacketOut::new(
        p.b.tunnel_ofport,
        vec![Action::output(port::TABLE)],
        forged,
    ))])
    .await
    .unwrap_or_else(|e| panic!("packet-out: {e}"));
    let stray = tokio::time::timeout(Duration::from_millis(700), p.rb.observations.recv()).await;
    let reported = stray.ok().flatten();
    dump_on_failure(
        reported.is_none(),
        &[&p.b],
        "an unkeyed tunnelled trace packet",
    );
    assert!(
        reported.is_none(),
        "a tunnelled trace packet without the key was reported: {reported:?}"
    );
    let _ = (&p.sa, &p.sb, &p.tun_a);
}

const SERVER: &str = r#"
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(64)
while True:
    c, a = s.accept()
    c.sendall((sys.argv[1] + " " + a[0] + "\n").encode()); c.close()
"#;

const CLIENT: &str = r#"
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
    print(c.recv(100).decode().strip())
except Exception as e:
    print("ERR", type(e).__name__)
"#;

/// A TCP server in a Pod answering "<pod> <peer ip>" on port 8080; killed on drop.
struct Server(std::process::Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `script` ([`SERVER`] or [`SERVER6`]) in Pod `pod` as the endpoint `name`.
fn serve(node: &OvsNode, pod: usize, name: &str, script: &str) -> Server {
    Server(
        node.in_pod(pod, "/usr/bin/python3")
            .args(["-c", script, name])
            .spawn()
            .expect("server"),
    )
}

fn connect(node: &OvsNode, pod: usize, ip: &str, port: u16) -> String {
    let out = node
        .in_pod(pod, "/usr/bin/python3")
        .args(["-c", CLIENT, ip])
        .arg(port.to_string())
        .output()
        .expect("client");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Connects from `node`'s `pod` until the answer starts with `want` (a server or a flow that
/// is still coming up), for at most 5 s; the last answer.
fn connect_until(node: &OvsNode, pod: usize, ip: &str, port: u16, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = connect(node, pod, ip, port);
        if r.starts_with(want) || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Connects from `node`'s p0 (`client_ip`) to `vip` port 80 until two endpoints answered,
/// 16 answers came from one (load-balancing would have picked the other by then) or 5 s
/// passed (servers still binding answer with an error, retried); asserts every answer saw the
/// client's own address and returns the endpoint names that answered.
fn endpoints_reached(node: &OvsNode, vip: &str, client_ip: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut answers = 0;
    while answers < 16 && Instant::now() < deadline {
        let r = connect(node, 0, vip, 80);
        eprintln!("connect {vip}: {r}");
        if let Some(who) = r
            .split_whitespace()
            .next()
            .filter(|w| !w.starts_with("ERR"))
        {
            answers += 1;
            assert!(
                r.ends_with(client_ip),
                "endpoint saw {r:?}, not the client's IP"
            );
            seen.insert(who.to_string());
        }
        if seen.len() == 2 {
            break;
        }
    }
    seen
}

fn service(name: &str, cluster_ip: &str, eps: &[(&str, &str, &str)]) -> pb::ServiceState {
    pb::ServiceState {
        namespace: "default".into(),
        name: name.into(),
        cluster_ips: vec![cluster_ip.into()],
        ports: vec![pb::ServicePortState {
            name: "http".into(),
            protocol: "TCP".into(),
            port: 80,
            endpoints: eps
                .iter()
                .map(|(ip, node, pod)| pb::ServiceEndpoint {
                    ip: (*ip).into(),
                    port: 8080,
                    node: (*node).into(),
                    pod_namespace: "default".into(),
                    pod_name: (*pod).into(),
                })
                .collect(),
        }],
    }
}

/// ClusterIP Services: TCP to a ClusterIP reaches endpoints on both Nodes, a Pod reaches
/// itself through its Service (SNAT to the gateway IP), a Service without endpoints rejects,
/// and traces to a Service report the LB observation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ip_services_balance_hairpin_and_trace() {
    let mut p = pair().await;
    let (a_p1, b_p1, a_p0) = (
        p.a.pods[1].ip.clone(),
        p.b.pods[1].ip.clone(),
        p.a.pods[0].ip.clone(),
    );
    let _servers = [
        serve(&p.a, 1, "a-p1", SERVER),
        serve(&p.b, 1, "b-p1", SERVER),
        serve(&p.a, 0, "a-p0", SERVER),
    ];
    let state = pb::NodeState {
        services_upsert: vec![
            service(
                "web",
                "10.96.0.10",
                &[(&a_p1, "node-a", "p1"), (&b_p1, "node-b", "p1")],
            ),
            service("self", "10.96.0.11", &[(&a_p0, "node-a", "p0")]),
            service("empty", "10.96.0.12", &[]),
        ],
        ..Default::default()
    };
    assert!(p.sa.apply(state.clone()));
    assert!(p.sb.apply(state));
    p.a.wait_flows("nw_dst=10.96.0.10", true);
    p.b.wait_flows("nw_dst=10.96.0.10", true);
    // Let the servers bind.
    std::thread::sleep(Duration::from_millis(500));

    // Both endpoints answer through the ClusterIP, with the client's own address.
    let seen = endpoints_reached(&p.a, "10.96.0.10", &a_p0);
    dump_on_failure(
        seen.len() == 2,
        &[&p.a, &p.b],
        &format!("ClusterIP reached only {seen:?}"),
    );

    // Hairpin: p0 reaches itself and sees the gateway IP as the peer.
    let r = connect(&p.a, 0, "10.96.0.11", 80);
    dump_on_failure(
        r == format!("a-p0 {}", p.a.gateway_ip),
        &[&p.a],
        &format!("hairpin answered {r:?}"),
    );

    // No endpoints: rejected (the client gets a RST from the ClusterIP).
    assert_eq!(
        connect(&p.a, 0, "10.96.0.12", 80),
        "ERR ConnectionRefusedError"
    );

    // Traces: LB with the chosen endpoint; hairpin also with the SNAT source.
    let syn = |id: u32, dst: &str| pb::InjectPacket {
        protocol: 6,
        dst_port: 80,
        tcp_flags: 2,
        ..icmp_trace(id, "p0", dst)
    };
    let o = trace(&mut p.ra, &syn(901, "10.96.0.10")).await;
    let kinds = summary(&o);
    assert_eq!(kinds[0].0, pb::Component::SpoofGuard);
    assert_eq!(
        kinds[1],
        (pb::Component::Lb, String::new(), pb::Action::Forwarded),
        "{o:?}"
    );
    let lb = &o.result.observations[1];
    assert!(
        lb.translated_dst_ip == a_p1 || lb.translated_dst_ip == b_p1,
        "translatedDstIP {}",
        lb.translated_dst_ip
    );
    let out = &o.result.observations[2];
    if lb.translated_dst_ip == b_p1 {
        assert_eq!(out.action, pb::Action::Forwarded as i32);
        assert_eq!(out.tunnel_dst_ip, p.tun_b);
        let r = next_obs(&mut p.rb).await;
        assert_eq!(r.result.role, "receiver");
    } else {
        assert_eq!(out.action, pb::Action::Delivered as i32);
    }

    let o = trace(&mut p.ra, &syn(902, "10.96.0.11")).await;
    assert_eq!(o.trace_id, 902);
    let lb = &o.result.observations[1];
    assert_eq!(
        pb::Component::try_from(lb.component),
        Ok(pb::Component::Lb),
        "{o:?}"
    );
    assert_eq!(lb.translated_dst_ip, a_p0);
    assert_eq!(lb.translated_src_ip, p.a.gateway_ip);
    assert_eq!(summary(&o)[2], output(pb::Action::Delivered));

    // Deleting the Service removes its flows and groups.
    assert!(p.sa.apply(pb::NodeState {
        services_delete: vec![
            "default/web".into(),
            "default/self".into(),
            "default/empty".into()
        ],
        ..Default::default()
    }));
    p.a.wait_flows("nw_dst=10.96.0.10", false);
    assert!(!p.a.ofctl(&["dump-groups", "br-int"]).contains("bucket"));
}

// A test fixture: one argument per field the cases vary.
#[allow(clippy::too_many_arguments)]
fn np_rule(
    id: u32,
    action: &str,
    policy_type: &str,
    name: &str,
    rule: &str,
    applied: &str,
    peers: Option<&str>,
    tcp_port: Option<i32>,
) -> pb::PolicyRule {
    let k8s = policy_type == "K8sNetworkPolicy";
    pb::PolicyRule {
        conjunction_id: id,
        direction: "Ingress".into(),
        action: action.into(),
        policy_type: policy_type.into(),
        policy_namespace: if policy_type == "AntreaClusterNetworkPolicy" {
            String::new()
        } else {
            "default".into()
        },
        policy_name: name.into(),
        rule_name: rule.into(),
        table: if k8s {
            "IngressRule"
        } else {
            "AntreaPolicyIngressRule"
        }
        .into(),
        priority: if k8s { 200 } else { 1000 },
        applied_to_ips: vec![applied.into()],
        any_peer: peers.is_none(),
        peer_cidrs: peers.map(|p| vec![p.to_string()]).unwrap_or_default(),
        services: tcp_port
            .map(|port| {
                vec![pb::RuleService {
                    protocol: "TCP".into(),
                    port,
                    end_port: 0,
                }]
            })
            .unwrap_or_default(),
    }
}

/// A delta with just K8s isolation: `ingress` / `egress` Pod IPs are default-denied that way.
fn isolation(ingress: &[&str], egress: &[&str]) -> pb::NodeState {
    let ips = |ips: &[&str]| ips.iter().map(|ip| (*ip).to_string()).collect();
    pb::NodeState {
        isolation: Some(pb::Isolation {
            ingress_ips: ips(ingress),
            egress_ips: ips(egress),
        }),
        ..Default::default()
    }
}

/// A delta upserting `rules`.
fn upsert_rules(rules: Vec<pb::PolicyRule>) -> pb::NodeState {
    pb::NodeState {
        rules_upsert: rules,
        ..Default::default()
    }
}

/// Asserts a sender's report of a packet `table` let through as `policy_ref`, then delivered.
fn assert_allowed(o: &Observed, table: &str, policy_ref: &str) {
    assert_eq!(
        summary(o),
        vec![
            spoofguard(),
            policy(table, pb::Action::Forwarded),
            output(pb::Action::Delivered),
        ],
        "{o:?}"
    );
    assert_eq!(o.result.observations[1].network_policy, policy_ref);
}

/// Asserts a sender's report of a packet `table` stopped with `action` (Dropped / Rejected).
fn assert_stopped(o: &Observed, table: &str, action: pb::Action) {
    assert_eq!(
        summary(o),
        vec![spoofguard(), policy(table, action)],
        "{o:?}"
    );
}

/// NetworkPolicy on node-a (p0 → p1): K8s default deny drops ping and the trace reports
/// IngressDefaultRule Dropped; an allow rule lets ping through and the trace names it; an
/// Antrea-native Drop rule times the client out, a Reject rule answers it with a RST, and the
/// traces report Dropped / Rejected with policy and rule names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_policies_drop_allow_and_name_rules() {
    let mut p = pair().await;
    let (p0, p1) = (p.a.pods[0].ip.clone(), p.a.pods[1].ip.clone());
    let ok = p.a.ping_retry(0, &p1);
    dump_on_failure(ok, &[&p.a], "p0 cannot ping p1 before any policy");
    let to_p1 = |id: u32, proto: i32, port: i32| pb::InjectPacket {
        protocol: proto,
        dst_port: port,
        tcp_flags: if proto == 6 { 2 } else { 0 },
        ..icmp_trace(id, "p0", &p1)
    };

    // K8s default deny (ingress isolation of p1).
    assert!(p.sa.apply(isolation(&[&p1], &[])));
    p.a.wait_flows(&format!("table={}", Table::IngressDefaultRule.id()), true);
    p.a.wait_flows(&format!("nw_dst={p1} actions=drop"), true);
    assert!(!p.a.ping(0, &p1), "ping passed a default deny");
    let o = trace(&mut p.ra, &to_p1(1001, 1, 0)).await;
    assert_stopped(&o, "IngressDefaultRule", pb::Action::Dropped);

    // A K8s allow rule for p0 → p1.
    assert!(p.sa.apply(upsert_rules(vec![np_rule(
        11,
        "Allow",
        "K8sNetworkPolicy",
        "allow-p0",
        "",
        &p1,
        Some(&format!("{p0}/32")),
        None,
    )])));
    p.a.wait_flows("conj_id=11", true);
    let ok = p.a.ping_retry(0, &p1);
    dump_on_failure(ok, &[&p.a], "allowed ping blocked");
    let o = trace(&mut p.ra, &to_p1(1002, 1, 0)).await;
    assert_allowed(&o, "IngressRule", "K8sNetworkPolicy:default/allow-p0");

    // Antrea-native Drop on TCP 8080 towards p1 (above the K8s allow); ping still passes.
    let deny_web = |action: &str| {
        upsert_rules(vec![np_rule(
            21,
            action,
            "AntreaClusterNetworkPolicy",
            "deny-web",
            "drop-8080",
            &p1,
            None,
            Some(8080),
        )])
    };
    assert!(p.sa.apply(deny_web("Drop")));
    p.a.wait_flows("conj_id=21", true);
    let _server = serve(&p.a, 1, "a-p1", SERVER);
    // A dropped SYN times out whether or not the server listens yet.
    assert_eq!(connect(&p.a, 0, &p1, 8080), "ERR TimeoutError");
    assert!(p.a.ping_retry(0, &p1), "the drop rule is TCP 8080 only");
    for (id, action, want) in [
        (1003, "Drop", pb::Action::Dropped),
        (1004, "Reject", pb::Action::Rejected),
    ] {
        if action == "Reject" {
            assert!(p.sa.apply(deny_web("Reject")));
            // The metric flow now sends the packet to the agent, which answers with a RST
            // (once the agent has reprogrammed the rule).
            assert_eq!(
                connect_until(&p.a, 0, &p1, 8080, "ERR ConnectionRefusedError"),
                "ERR ConnectionRefusedError",
                "a rejected connect sees a TCP RST"
            );
        }
        let o = trace(&mut p.ra, &to_p1(id, 6, 8080)).await;
        assert_stopped(&o, "IngressMetric", want);
        assert_eq!(
            o.result.observations[1].network_policy,
            "AntreaClusterNetworkPolicy:deny-web"
        );
        assert_eq!(o.result.observations[1].network_policy_rule, "drop-8080");
    }
}

/// Across Nodes: node-b isolates its p1, so a trace from p0 on node-a is forwarded into the
/// tunnel by the sender and dropped by node-b's IngressDefaultRule. Then node-a's
/// ovs-vswitchd is restarted: the Service (group + flows) from the store is back within 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_isolation_and_desired_state_after_vswitchd_restart() {
    let mut p = pair().await;
    let b_p1 = p.b.pods[1].ip.clone();
    assert!(p.sb.apply(isolation(&[&b_p1], &[])));
    p.b.wait_flows(&format!("nw_dst={b_p1} actions=drop"), true);
    // Warm the tunnel path (the underlay neighbour) with a ping that is allowed.
    let _ = p.a.ping_retry(0, &p.b.pods[0].ip);
    assert!(!p.a.ping(0, &b_p1), "ping crossed node-b's default deny");
    let s = trace(&mut p.ra, &icmp_trace(1201, "p0", &b_p1)).await;
    assert_eq!(s.result.observations[1].tunnel_dst_ip, p.tun_b);
    let r = next_obs(&mut p.rb).await;
    assert_eq!(
        summary(&r),
        vec![
            received(),
            policy("IngressDefaultRule", pb::Action::Dropped),
        ]
    );

    // A local Service on node-a, then an ovs-vswitchd restart.
    let a_p1 = p.a.pods[1].ip.clone();
    let _server = serve(&p.a, 1, "a-p1", SERVER);
    assert!(p.sa.apply(pb::NodeState {
        services_upsert: vec![service("web", "10.96.0.20", &[(&a_p1, "node-a", "p1")])],
        ..Default::default()
    }));
    p.a.wait_flows("nw_dst=10.96.0.20", true);
    let r = connect_until(&p.a, 0, "10.96.0.20", 80, "a-p1");
    assert!(
        r.starts_with("a-p1"),
        "the Service before the restart: {r:?}"
    );
    p.a.kill_vswitchd();
    p.a.start_vswitchd();
    let restarted = Instant::now();
    loop {
        let r = connect(&p.a, 0, "10.96.0.20", 80);
        if r.starts_with("a-p1") {
            break;
        }
        dump_on_failure(
            restarted.elapsed() < Duration::from_secs(5),
            &[&p.a],
            &format!("Service not back 5 s after the restart: {r:?}"),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "Service back {:?} after ovs-vswitchd restart",
        restarted.elapsed()
    );
    assert!(p.a.ofctl(&["dump-groups", "br-int"]).contains("bucket"));
}

/// Egress and Pass on node-a: K8s egress isolation of p0 drops its ping (EgressDefaultRule),
/// an Antrea-native egress Allow lets it through and is named as EgressRule; an ingress Pass
/// at a higher priority than a Drop skips the Drop (to the K8s tables), and removing the Pass
/// lets the Drop win.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_rules_and_pass_over_a_lower_priority_drop() {
    let mut p = pair().await;
    let (p0, p1) = (p.a.pods[0].ip.clone(), p.a.pods[1].ip.clone());
    let ok = p.a.ping_retry(0, &p1);
    dump_on_failure(ok, &[&p.a], "p0 cannot ping p1 before any policy");
    let mut next_id = 1300;
    let mut trace_p1 = async |p: &mut Pair| {
        next_id += 1;
        let req = icmp_trace(next_id, "p0", &p.a.pods[1].ip);
        trace(&mut p.ra, &req).await
    };

    assert!(p.sa.apply(isolation(&[], &[&p0])));
    p.a.wait_flows(&format!("nw_src={p0} actions=drop"), true);
    assert!(!p.a.ping(0, &p1), "ping passed an egress default deny");
    let o = trace_p1(&mut p).await;
    assert_stopped(&o, "EgressDefaultRule", pb::Action::Dropped);

    let mut allow = np_rule(
        31,
        "Allow",
        "AntreaNetworkPolicy",
        "allow-out",
        "out",
        &p0,
        Some(&format!("{p1}/32")),
        None,
    );
    allow.direction = "Egress".into();
    allow.table = "AntreaPolicyEgressRule".into();
    assert!(p.sa.apply(upsert_rules(vec![allow])));
    p.a.wait_flows("conj_id=31", true);
    let ok = p.a.ping_retry(0, &p1);
    dump_on_failure(ok, &[&p.a], "egress allow did not let ping through");
    let o = trace_p1(&mut p).await;
    assert_allowed(&o, "EgressRule", "AntreaNetworkPolicy:default/allow-out");
    assert_eq!(o.result.observations[1].network_policy_rule, "out");

    // Pass (priority 1000) above Drop (priority 900) for p1's ingress.
    let mut drop = np_rule(
        41,
        "Drop",
        "AntreaNetworkPolicy",
        "deny-all",
        "drop",
        &p1,
        None,
        None,
    );
    drop.priority = 900;
    let pass = np_rule(
        42,
        "Pass",
        "AntreaNetworkPolicy",
        "pass-p0",
        "pass",
        &p1,
        Some(&format!("{p0}/32")),
        None,
    );
    assert!(p.sa.apply(pb::NodeState {
        replace: true,
        node: Some(node_info("node-a", 1, &p.tun_a)),
        peers_upsert: vec![node_info("node-b", 2, &p.tun_b)],
        rules_upsert: vec![drop, pass],
        ..Default::default()
    }));
    p.a.wait_flows("conj_id=42", true);
    p.a.wait_flows("conj_id=31", false);
    let ok = p.a.ping_retry(0, &p1);
    dump_on_failure(ok, &[&p.a], "Pass did not skip the lower-priority Drop");
    let o = trace_p1(&mut p).await;
    assert_allowed(&o, "IngressRule", "AntreaNetworkPolicy:default/pass-p0");
    assert!(p.sa.apply(pb::NodeState {
        rules_delete: vec![42],
        ..Default::default()
    }));
    p.a.wait_flows("conj_id=42", false);
    assert!(!p.a.ping(0, &p1), "the Drop did not apply without the Pass");
    let o = trace_p1(&mut p).await;
    assert_stopped(&o, "IngressMetric", pb::Action::Dropped);
    assert_eq!(o.result.observations[1].network_policy_rule, "drop");
}

const SERVER6: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
s.bind(("::", 8080)); s.listen(64)
while True:
    c, a = s.accept()
    c.sendall((sys.argv[1] + " " + a[0] + "\n").encode()); c.close()
"#;

/// IPv6 ClusterIP: endpoints on both Nodes answer through fd00:96::10 (the test Pods have no
/// IPv6 default route: the client reaches the ClusterIP, and node-b's endpoint the client,
/// on-link through static neighbours; the pipeline routes whatever the next-hop MAC).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_cluster_ip_reaches_endpoints_on_both_nodes() {
    let mut p = pair().await;
    let (a_p1, b_p1, a_p0) = (
        p.a.pods[1].ip6.clone(),
        p.b.pods[1].ip6.clone(),
        p.a.pods[0].ip6.clone(),
    );
    let _servers = [
        serve(&p.a, 1, "a-p1", SERVER6),
        serve(&p.b, 1, "b-p1", SERVER6),
    ];
    let ip_in_pod = |node: &OvsNode, pod: usize, args: &[&str]| {
        let ok = node
            .in_pod(pod, "ip")
            .args(args)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip {args:?} in {}", node.pods[pod].netns);
    };
    // node-b's endpoint answers the client over the tunnel (any next-hop MAC is routed).
    for args in [
        vec!["-6", "route", "add", "fd00:1::/64", "dev", "eth0"],
        vec![
            "-6",
            "neigh",
            "replace",
            &a_p0,
            "lladdr",
            "aa:bb:cc:dd:ee:02",
            "dev",
            "eth0",
        ],
    ] {
        ip_in_pod(&p.b, 1, &args);
    }
    for args in [
        vec!["-6", "route", "add", "fd00:96::/64", "dev", "eth0"],
        vec![
            "-6",
            "neigh",
            "replace",
            "fd00:96::10",
            "lladdr",
            "aa:bb:cc:dd:ee:01",
            "dev",
            "eth0",
        ],
    ] {
        ip_in_pod(&p.a, 0, &args);
    }
    let state = pb::NodeState {
        services_upsert: vec![service(
            "web6",
            "fd00:96::10",
            &[(&a_p1, "node-a", "p1"), (&b_p1, "node-b", "p1")],
        )],
        ..Default::default()
    };
    assert!(p.sa.apply(state.clone()));
    assert!(p.sb.apply(state));
    p.a.wait_flows("ipv6_dst=fd00:96::10", true);
    std::thread::sleep(Duration::from_millis(500));
    let seen = endpoints_reached(&p.a, "fd00:96::10", &a_p0);
    dump_on_failure(
        seen.len() == 2,
        &[&p.a, &p.b],
        &format!("IPv6 ClusterIP reached only {seen:?}"),
    );
    // The trace reports the translation too.
    let req = pb::InjectPacket {
        src_ip: a_p0.clone(),
        ipv6: true,
        protocol: 6,
        dst_port: 80,
        tcp_flags: 2,
        ..icmp_trace(1401, "p0", "fd00:96::10")
    };
    let o = trace(&mut p.ra, &req).await;
    let lb = &o.result.observations[1];
    assert_eq!(
        pb::Component::try_from(lb.component),
        Ok(pb::Component::Lb),
        "{o:?}"
    );
    assert!(
        lb.translated_dst_ip == a_p1 || lb.translated_dst_ip == b_p1,
        "{o:?}"
    );
}

/// A live trace as the adapter plans it: `role` on this Node, ICMP p0(node-a) → `dst`.
fn live_cmd(uid: &str, tag: u32, role: pb::LiveTraceRole, dst: &str) -> pb::LiveTrace {
    pb::LiveTrace {
        trace_uid: uid.into(),
        dscp_tag: tag,
        role: role as i32,
        in_pod_namespace: "default".into(),
        in_pod_name: "p0".into(),
        src_ip: "10.1.0.2".into(),
        dst_ip: dst.into(),
        protocol: 1,
        timeout_seconds: 30,
        ..Default::default()
    }
}

/// Starts live trace `cmd` on the Node of `rt` and `store`, as its adapter session would.
async fn start_live(
    rt: &NodeRuntime,
    store: &Store,
    cmd: pb::LiveTrace,
) -> Result<(), LiveStartError> {
    let programmed = rt.datapath.programmed_state.clone();
    rt.tracer.start_live(&cmd, store, &programmed).await
}

impl Pair {
    /// Starts a live trace from node-a's p0 as the adapter plans one: `cmd(Any)` on node-b,
    /// then `cmd(Sender)` on node-a; panics naming the Node that refused.
    async fn start_live(&self, cmd: impl Fn(pb::LiveTraceRole) -> pb::LiveTrace) {
        start_live(&self.rb, &self.sb, cmd(pb::LiveTraceRole::Any))
            .await
            .expect("node-b");
        start_live(&self.ra, &self.sa, cmd(pb::LiveTraceRole::Sender))
            .await
            .expect("node-a");
    }
}

/// Nothing more reported by `rt` within `wait`.
async fn quiet(rt: &mut NodeRuntime, wait: Duration) -> Result<(), Observed> {
    match tokio::time::timeout(wait, rt.observations.recv()).await {
        Ok(Some(o)) => Err(o),
        _ => Ok(()),
    }
}

/// Live traffic (reference §3.6) on two real Nodes: node-a tags the first new ICMP connection
/// from p0 to node-b's p1 and reports it with the captured packet, node-b reports it received
/// and delivered; the ping itself succeeds (the tag is cleared before delivery); each Node
/// reports once and then removes its live flows, so a second ping is not reported. Then
/// droppedOnly against a K8s default deny on node-b: node-a reports nothing, node-b reports
/// the drop. Stopping removes every flow and tag; a bad command is refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_traffic_is_tagged_reported_once_per_node_and_delivered() {
    let mut p = pair().await;
    let dst = p.b.pods[1].ip.clone();
    assert_eq!(p.a.pods[0].ip, "10.1.0.2");
    let ok = p.a.ping_retry(0, &dst);
    dump_on_failure(ok, &[&p.a, &p.b], "p0(node-a) cannot ping p1(node-b)");

    p.start_live(|role| live_cmd("live-1", 7, role, &dst)).await;
    p.a.wait_flows("cookie=0x7f1c000100000007", true);
    assert!(p.sa.current().live_tags.contains(&7));

    let ok = p.a.ping(0, &dst);
    dump_on_failure(ok, &[&p.a, &p.b], "the traced ping did not get its answer");
    let sender = next_obs(&mut p.ra).await;
    assert_eq!(
        (
            sender.dataplane_tag,
            sender.trace_id,
            sender.result.role.as_str()
        ),
        (7, 0, "sender")
    );
    assert_sent_into_tunnel(&sender, &p.tun_b);
    let captured = sender
        .captured_packet
        .clone()
        .unwrap_or_else(|| panic!("the tagging Node captured nothing"));
    assert_eq!(
        (captured.src_ip.as_str(), captured.dst_ip.as_str()),
        ("10.1.0.2", dst.as_str())
    );
    assert_eq!(captured.ip_header.map(|h| h.protocol), Some(1));
    let receiver = next_obs(&mut p.rb).await;
    assert_eq!(
        (receiver.dataplane_tag, receiver.result.role.as_str()),
        (7, "receiver")
    );
    assert!(receiver.captured_packet.is_none());
    assert_received_and_delivered(&receiver);
    // Reported once: the live flows are gone and the next connection is not traced.
    p.a.wait_flows("cookie=0x7f1c000100000007", false);
    p.b.wait_flows("cookie=0x7f1c000100000007", false);
    assert!(p.a.ping(0, &dst), "ping after the trace");
    if let Err(o) = quiet(&mut p.ra, Duration::from_millis(500)).await {
        panic!("node-a reported a second time: {o:?}");
    }
    if let Err(o) = quiet(&mut p.rb, Duration::from_millis(500)).await {
        panic!("node-b reported a second time: {o:?}");
    }
    p.ra.tracer.stop_live("live-1", &p.sa).await;
    p.rb.tracer.stop_live("live-1", &p.sb).await;
    assert!(p.sa.current().live_tags.is_empty() && p.sb.current().live_tags.is_empty());

    // droppedOnly: node-b isolates p1; only the drop is reported, by node-b.
    assert!(p.sb.apply(isolation(&[&dst], &[])));
    p.b.wait_flows(&format!("nw_dst={dst} actions=drop"), true);
    let dropped_only = |role| pb::LiveTrace {
        dropped_only: true,
        ..live_cmd("live-2", 11, role, &dst)
    };
    p.start_live(dropped_only).await;
    // The tag's drop copy is in node-b's IngressDefaultRule.
    p.b.wait_flows("nw_tos=44", true);
    assert!(!p.a.ping(0, &dst), "ping passed a default deny");
    let dropped = next_obs(&mut p.rb).await;
    assert_eq!(dropped.dataplane_tag, 11);
    assert_eq!(
        dropped.captured_packet.as_ref().map(|c| c.dst_ip.as_str()),
        Some(dst.as_str()),
        "a droppedOnly report carries the packet, whichever Node drops it"
    );
    assert_eq!(
        summary(&dropped),
        vec![
            received(),
            policy("IngressDefaultRule", pb::Action::Dropped),
        ]
    );
    if let Err(o) = quiet(&mut p.ra, Duration::from_millis(300)).await {
        panic!("node-a reported a droppedOnly trace it forwarded: {o:?}");
    }
    for (rt, store, node) in [(&p.ra, &p.sa, &p.a), (&p.rb, &p.sb, &p.b)] {
        rt.tracer.stop_live("live-2", store).await;
        node.wait_flows("cookie=0x7f1c00010000000b", false);
        node.wait_flows("nw_tos=44", false);
    }

    // Refused with a reason, leaving nothing behind.
    let ghost = pb::LiveTrace {
        in_pod_name: "ghost".into(),
        ..live_cmd("live-3", 15, pb::LiveTraceRole::Sender, &dst)
    };
    let err = start_live(&p.ra, &p.sa, ghost)
        .await
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("source Pod default/ghost not found on this Node")
    );
    assert!(p.sa.current().live_tags.is_empty());
}

/// A live trace waiting for its packet keeps working across an ovs-vswitchd restart on the
/// tagging Node (its flows are installed again with what is left of their timeout); a live
/// trace stopped while it is still arming leaves no flows and no tag behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_trace_survives_a_vswitchd_restart_and_a_stop_while_arming() {
    let mut p = pair().await;
    let dst = p.b.pods[1].ip.clone();
    let ok = p.a.ping_retry(0, &dst);
    dump_on_failure(ok, &[&p.a, &p.b], "p0(node-a) cannot ping p1(node-b)");
    p.start_live(|role| live_cmd("live-4", 19, role, &dst))
        .await;
    let cookie = "cookie=0x7f1c000100000013";
    p.a.wait_flows(cookie, true);

    p.a.kill_vswitchd();
    p.a.start_vswitchd();
    let restarted = Instant::now();
    p.a.wait_flows(cookie, true);
    eprintln!(
        "live flows back {:?} after the restart",
        restarted.elapsed()
    );
    // Warm the tunnel path with traffic the trace does not match, then the traced ping.
    let _ = p.a.ping_retry(0, &p.b.pods[0].ip);
    let ok = p.a.ping_retry(0, &dst);
    dump_on_failure(ok, &[&p.a, &p.b], "traced ping after the restart");
    let sender = next_obs(&mut p.ra).await;
    assert_eq!(sender.dataplane_tag, 19);
    assert_eq!(
        summary(&sender),
        vec![spoofguard(), output(pb::Action::Forwarded)]
    );
    let receiver = next_obs(&mut p.rb).await;
    assert_eq!(receiver.dataplane_tag, 19);
    assert_eq!(
        summary(&receiver),
        vec![received(), output(pb::Action::Delivered)]
    );
    for (rt, store) in [(&p.ra, &p.sa), (&p.rb, &p.sb)] {
        rt.tracer.stop_live("live-4", store).await;
    }

    // Stopped while arming (the start waits for br-int to be reprogrammed with the tag).
    let cmd = live_cmd("live-5", 23, pb::LiveTraceRole::Sender, &dst);
    let (started, ()) = tokio::join!(start_live(&p.ra, &p.sa, cmd), async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        p.ra.tracer.stop_live("live-5", &p.sa).await;
    });
    eprintln!("start of a trace stopped while arming: {started:?}");
    p.a.wait_flows("cookie=0x7f1c000100000017", false);
    assert!(
        p.sa.current().live_tags.is_empty(),
        "{:?}",
        p.sa.current().live_tags
    );
}
