//! The reply direction (issue 14, `spec.reply`) on tests/topologies/reply.yaml: each trace
//! is checked with the full ordered observation list per Node and leg (`direction`), through
//! gRPC: intra-Node and inter-Node Pod→Pod with ICMP, TCP, UDP and SCTP; a Service on another
//! Node (un-DNAT on the reply leg: `LB translatedSrcIP` = the ClusterIP), also one whose
//! targetPort differs from its port; hairpin (a Pod to a Service whose endpoint is itself); the
//! Antrea-native policy that drops new connections from `server` to `client` (the replies of
//! client's connections pass as established traffic; a new connection the other way is dropped
//! and, having no delivery, no reply); IPv6.
//!
//! Every case uses the same source port and runs twice: a finished trace's connection is
//! flushed from the conntrack of every Node it went through (`ovs-appctl
//! dpctl/dump-conntrack` in each Node shows no entry of its tuple afterwards; ICMPv6 entries
//! excepted, which OVS 3.1.0 cannot flush), so the second run is a new connection again and
//! gives the same observations.
//!
//! Needs root, Open vSwitch and `cargo build --workspace --bins`; fails loudly, never skips.

mod common;

use common::trace::{
    Api, NodeWant, check_results, output, output_tunnel, phase, pod_ip, received, receiver,
    require_binaries, results_json, runtime, sender, spec, spoofguard, to_json, to_pod,
    up_with_config,
};
use common::{Lab, require_lab_prerequisites, text, topology};
use serde_json::{Value, json};
use traceflow_proto::v1 as pb;

const N1: &str = "192.168.77.2";
const N2: &str = "192.168.77.3";

/// The source port of every TCP, UDP and SCTP case.
const SRC_PORT: i32 = 40080;

/// The packet of `l4` ("icmp", "tcp", "udp", "sctp") from [`SRC_PORT`].
fn packet(ipv6: bool, l4: &str) -> pb::Packet {
    let src_port = SRC_PORT;
    let mut p = pb::Packet::default();
    if ipv6 {
        p.ipv6_header = Some(pb::IPv6Header::default());
    }
    p.transport_header = match l4 {
        "tcp" => Some(pb::TransportHeader {
            tcp: Some(pb::TcpHeader {
                dst_port: 80,
                src_port,
                ..Default::default()
            }),
            ..Default::default()
        }),
        "udp" => Some(pb::TransportHeader {
            udp: Some(pb::UdpHeader {
                dst_port: 53,
                src_port,
            }),
            ..Default::default()
        }),
        "sctp" => Some(pb::TransportHeader {
            sctp: Some(pb::SctpHeader {
                dst_port: 9000,
                src_port,
            }),
            ..Default::default()
        }),
        _ => None,
    };
    p
}

fn to_service(name: &str) -> pb::Destination {
    pb::Destination {
        namespace: "default".into(),
        service: name.into(),
        ..Default::default()
    }
}

/// One case: the trace, per leg the Nodes' wanted observations, and the connection's
/// original-direction tuples (source, destination) no Node may keep afterwards.
struct Case {
    what: String,
    src: &'static str,
    dst: pb::Destination,
    packet: pb::Packet,
    forward: Vec<NodeWant>,
    reply: Vec<NodeWant>,
    tuples: Vec<(String, String)>,
}

/// `dpctl/dump-conntrack`'s name of the packet's protocol.
fn ct_proto(p: &pb::Packet) -> &'static str {
    let t = p.transport_header.as_ref();
    match (
        t.and_then(|t| t.tcp.as_ref()).is_some(),
        t.and_then(|t| t.udp.as_ref()).is_some(),
        t.and_then(|t| t.sctp.as_ref()).is_some(),
        p.ipv6_header.is_some(),
    ) {
        (true, ..) => "tcp",
        (_, true, ..) => "udp",
        (_, _, true, _) => "sctp",
        (.., true) => "icmpv6",
        _ => "icmp",
    }
}

/// The conntrack entries of `c`'s connection left on `node`: lines of its protocol whose
/// original tuple is one of the case's (from [`SRC_PORT`] where the protocol has ports).
/// ICMPv6 is not checked: the agent leaves those entries to expire, as flushing one aborts
/// OVS 3.1.0's ovs-vswitchd (agent/src/trace/reply.rs `flush_messages`).
fn leftovers(lab: &Lab, node: &str, c: &Case) -> Result<Vec<String>, String> {
    let proto = ct_proto(&c.packet);
    if proto == "icmpv6" {
        return Ok(Vec::new());
    }
    let ctl = lab
        .dir
        .join(format!("clusters/c1/nodes/{node}/ovs/ovs-vswitchd.ctl"));
    let out = lab.exec(
        &format!("c1/{node}"),
        &[
            "ovs-appctl",
            "-t",
            &ctl.display().to_string(),
            "dpctl/dump-conntrack",
        ],
    );
    if !out.status.success() {
        return Err(format!("dump-conntrack on {node}: {}", text(&out)));
    }
    let dump = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok(dump
        .lines()
        .filter(|l| l.starts_with(&format!("{proto},")))
        .filter(|l| {
            c.tuples
                .iter()
                .any(|(s, d)| l.contains(&format!("orig=(src={s},dst={d},")))
        })
        // The userspace datapath keeps no SCTP ports (sport=0).
        .filter(|l| {
            matches!(proto, "icmp" | "icmpv6" | "sctp") || l.contains(&format!("sport={SRC_PORT},"))
        })
        .map(str::to_string)
        .collect())
}

/// Waits (up to 5 s: the flush follows the trace's end) until neither Node keeps an entry of
/// `c`'s connection.
async fn conntrack_clean(lab: &Lab, c: &Case) -> Result<(), String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let mut left = Vec::new();
        for node in ["n1", "n2"] {
            left.extend(
                leftovers(lab, node, c)?
                    .into_iter()
                    .map(|l| format!("{node}: {l}")),
            );
        }
        if left.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "conntrack entries of the trace's connection left after it ended:\n{}",
                left.join("\n")
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Checks the whole ordered list (sequence across both legs), then each result's leg.
fn check(t: &pb::Traceflow, c: &Case) -> Result<(), String> {
    if phase(t) != "Succeeded" {
        return Err(format!("phase {}: {:#}", phase(t), to_json(t)));
    }
    let results = results_json(t);
    let want: Vec<NodeWant> = c.forward.iter().chain(&c.reply).cloned().collect();
    check_results(&results, &want)?;
    let legs: Vec<&str> = results
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["direction"].as_str().unwrap_or("Forward"))
                .collect()
        })
        .unwrap_or_default();
    let want_legs: Vec<&str> = c
        .forward
        .iter()
        .map(|_| "Forward")
        .chain(c.reply.iter().map(|_| "Reply"))
        .collect();
    if legs != want_legs {
        return Err(format!(
            "directions {legs:?}, want {want_legs:?}: {results:#}"
        ));
    }
    Ok(())
}

fn lb_dst(pod: &str, ip: &str) -> Value {
    json!({"component": "LB", "action": "Forwarded", "pod": pod, "translatedDstIP": ip})
}

fn lb_src(ip: &str) -> Value {
    json!({"component": "LB", "action": "Forwarded", "translatedSrcIP": ip})
}

async fn cases(api: &mut Api) -> Result<Vec<Case>, String> {
    let pods = api.wait_pods("c1", 3).await?;
    let mut out = Vec::new();
    for ipv6 in [false, true] {
        let v = if ipv6 { "IPv6" } else { "IPv4" };
        let client = pod_ip(&pods, "default/client", ipv6)?;
        let near = pod_ip(&pods, "default/near", ipv6)?;
        let server = pod_ip(&pods, "default/server", ipv6)?;
        let l4s: &[&str] = if ipv6 {
            &["icmp"]
        } else {
            &["icmp", "tcp", "udp", "sctp"]
        };
        for l4 in l4s {
            out.push(Case {
                what: format!("{v} {l4} intra-Node client -> near"),
                src: "default/client",
                dst: to_pod("default/near"),
                packet: packet(ipv6, l4),
                forward: vec![sender("n1", vec![spoofguard(&client), output("Delivered")])],
                reply: vec![sender("n1", vec![spoofguard(&near), output("Delivered")])],
                tuples: vec![(client.clone(), near.clone())],
            });
            // The policy drops NEW connections from server to client: this reply is not one.
            out.push(Case {
                what: format!("{v} {l4} inter-Node client -> server"),
                src: "default/client",
                dst: to_pod("default/server"),
                packet: packet(ipv6, l4),
                forward: vec![
                    sender("n1", vec![spoofguard(&client), output_tunnel(N2)]),
                    receiver("n2", vec![received(), output("Delivered")]),
                ],
                reply: vec![
                    sender("n2", vec![spoofguard(&server), output_tunnel(N1)]),
                    receiver("n1", vec![received(), output("Delivered")]),
                ],
                tuples: vec![(client.clone(), server.clone())],
            });
        }
    }
    let client = pod_ip(&pods, "default/client", false)?;
    let server = pod_ip(&pods, "default/server", false)?;
    // A new connection from server to client: dropped by the policy, so no reply leg.
    out.push(Case {
        what: "IPv4 icmp server -> client is a new connection the policy drops".into(),
        src: "default/server",
        dst: to_pod("default/client"),
        packet: packet(false, "icmp"),
        forward: vec![
            sender("n2", vec![spoofguard(&server), output_tunnel(N1)]),
            receiver(
                "n1",
                vec![
                    received(),
                    json!({"component": "NetworkPolicy", "componentInfo": "IngressMetric",
                           "action": "Dropped",
                           "networkPolicy": "AntreaClusterNetworkPolicy:no-new-to-client",
                           "networkPolicyRule": "drop-from-server"}),
                ],
            ),
        ],
        reply: vec![],
        tuples: vec![(server.clone(), client)],
    });
    Ok(out)
}

/// Service and hairpin cases: their ClusterIPs come from the manager's inventory.
async fn service_cases(api: &mut Api) -> Result<Vec<Case>, String> {
    let pods = api.wait_pods("c1", 3).await?;
    let req = pb::ListInventoryRequest {
        cluster: "c1".into(),
        page_size: 1000,
        ..Default::default()
    };
    let services = api
        .clusters
        .list_services(req)
        .await
        .map(|r| r.into_inner().services)
        .map_err(|s| format!("ListServices: {s:?}"))?;
    let cluster_ip = |name: &str, ipv6: bool| -> Result<String, String> {
        services
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.cluster_ips.iter().find(|ip| ip.contains(':') == ipv6))
            .cloned()
            .ok_or_else(|| format!("no ClusterIP for Service {name}"))
    };
    let mut out = Vec::new();
    for ipv6 in [false, true] {
        let v = if ipv6 { "IPv6" } else { "IPv4" };
        let client = pod_ip(&pods, "default/client", ipv6)?;
        let server = pod_ip(&pods, "default/server", ipv6)?;
        // `web` serves port 80 on the Pod's 8080: the reply leaves the Pod from 8080 (a reply
        // from 80 would be a new connection, dropped by the policy) and un-DNAT makes it 80.
        for (name, what) in [
            ("server", "Service server on n2 (un-DNAT on the way back)"),
            ("web", "Service web on n2 (targetPort 8080 != port 80)"),
        ] {
            let svc = cluster_ip(name, ipv6)?;
            out.push(Case {
                what: format!("{v} tcp client -> {what}"),
                src: "default/client",
                dst: to_service(name),
                packet: packet(ipv6, "tcp"),
                forward: vec![
                    sender(
                        "n1",
                        vec![
                            spoofguard(&client),
                            lb_dst("default/server", &server),
                            output_tunnel(N2),
                        ],
                    ),
                    receiver("n2", vec![received(), output("Delivered")]),
                ],
                reply: vec![
                    sender("n2", vec![spoofguard(&server), output_tunnel(N1)]),
                    receiver("n1", vec![received(), lb_src(&svc), output("Delivered")]),
                ],
                tuples: vec![
                    (client.clone(), svc.clone()),
                    (client.clone(), server.clone()),
                ],
            });
        }
        // Hairpin: the endpoint is the client; the forward packet was SNATed to the gateway, so
        // the reply goes to the gateway address and comes back un-SNATed and un-DNATed.
        let gw = if ipv6 { "fd00:10::1" } else { "10.10.0.1" };
        let hairpin = cluster_ip("hairpin", ipv6)?;
        let mut lb = lb_dst("default/client", &client);
        lb["translatedSrcIP"] = gw.into();
        out.push(Case {
            what: format!("{v} tcp hairpin client -> Service hairpin (itself)"),
            src: "default/client",
            dst: to_service("hairpin"),
            packet: packet(ipv6, "tcp"),
            forward: vec![sender(
                "n1",
                vec![spoofguard(&client), lb, output("Delivered")],
            )],
            reply: vec![sender(
                "n1",
                vec![spoofguard(&client), lb_src(&hairpin), output("Delivered")],
            )],
            tuples: vec![
                (client.clone(), hairpin.clone()),
                (client.clone(), client.clone()),
            ],
        });
    }
    Ok(out)
}

#[test]
fn reply_leg_follows_the_way_back() {
    require_lab_prerequisites();
    require_binaries();
    let mut lab = Lab::new("rp");
    let cfg = up_with_config(&mut lab, &topology("reply.yaml"));
    let rt = runtime();
    let result: Result<Vec<String>, String> = rt.block_on(async {
        let mut api = Api::connect(&cfg).await?;
        let mut failures = Vec::new();
        let mut all = cases(&mut api).await?;
        all.extend(service_cases(&mut api).await?);
        // The same 5-tuple twice: the first run's connection must not change the second's.
        for c in &all {
            for run in ["first", "second"] {
                let mut s = spec(c.src, c.dst.clone(), Some(c.packet.clone()));
                s.reply = true;
                let checked = match api.run("c1", s).await {
                    Ok(t) => check(&t, c),
                    Err(e) => Err(e.to_string()),
                };
                let cleaned = conntrack_clean(&lab, c).await;
                if let Err(e) = checked.and(cleaned) {
                    failures.push(format!("{} ({run} run): {e}", c.what));
                }
            }
        }
        Ok(failures)
    });
    drop(rt);
    lab.report(result);
    let down = lab.down();
    assert!(down.contains("is down"), "{down}");
}
