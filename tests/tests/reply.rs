//! The reply direction (issue 14, `spec.reply`) on tests/topologies/reply.yaml: each trace
//! is checked with the full ordered observation list per Node and leg (`direction`), through
//! gRPC: intra-Node and inter-Node Pod→Pod with ICMP, TCP and UDP; a Service on another Node
//! (un-DNAT on the reply leg: `LB translatedSrcIP` = the ClusterIP); hairpin (a Pod to a
//! Service whose endpoint is itself); the Antrea-native policy that drops new connections from
//! `server` to `client` (the replies of client's connections pass as established traffic; a new
//! connection the other way is dropped and, having no delivery, no reply); IPv6.
//!
//! Needs root, Open vSwitch and `cargo build --workspace --bins`; fails loudly, never skips.

mod common;

use common::trace::{
    Api, NodeWant, check_results, output, output_tunnel, phase, pod_ip, received, receiver,
    require_binaries, results_json, runtime, sender, spec, spoofguard, to_json, to_pod,
    up_with_config,
};
use common::{Lab, require_lab_prerequisites, topology};
use serde_json::{Value, json};
use traceflow_proto::v1 as pb;

const N1: &str = "192.168.77.2";
const N2: &str = "192.168.77.3";

/// The packet; each case that opens a connection uses its own source port, so no case meets
/// another's conntrack entry.
fn packet(ipv6: bool, l4: &str) -> pb::Packet {
    packet_from(ipv6, l4, 40080)
}

fn packet_from(ipv6: bool, l4: &str, src_port: i32) -> pb::Packet {
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
                src_port: 40053,
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

/// One case: the trace, and per leg the Nodes' wanted observations.
struct Case {
    what: String,
    src: &'static str,
    dst: pb::Destination,
    packet: pb::Packet,
    forward: Vec<NodeWant>,
    reply: Vec<NodeWant>,
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
            &["icmp", "tcp", "udp"]
        };
        for l4 in l4s {
            out.push(Case {
                what: format!("{v} {l4} intra-Node client -> near"),
                src: "default/client",
                dst: to_pod("default/near"),
                packet: packet(ipv6, l4),
                forward: vec![sender("n1", vec![spoofguard(&client), output("Delivered")])],
                reply: vec![sender("n1", vec![spoofguard(&near), output("Delivered")])],
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
            });
        }
    }
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
        let svc = cluster_ip("server", ipv6)?;
        out.push(Case {
            what: format!("{v} tcp client -> Service server on n2 (un-DNAT on the way back)"),
            src: "default/client",
            dst: to_service("server"),
            packet: packet_from(ipv6, "tcp", 41080),
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
        });
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
            packet: packet_from(ipv6, "tcp", 42080),
            forward: vec![sender(
                "n1",
                vec![spoofguard(&client), lb, output("Delivered")],
            )],
            reply: vec![sender(
                "n1",
                vec![spoofguard(&client), lb_src(&hairpin), output("Delivered")],
            )],
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
        for c in &all {
            let mut s = spec(c.src, c.dst.clone(), Some(c.packet.clone()));
            s.reply = true;
            match api.run("c1", s).await {
                Ok(t) => {
                    if let Err(e) = check(&t, c) {
                        failures.push(format!("{}: {e}", c.what));
                    }
                }
                Err(e) => failures.push(format!("{}: {e}", c.what)),
            }
        }
        Ok(failures)
    });
    drop(rt);
    lab.report(result);
    let down = lab.down();
    assert!(down.contains("is down"), "{down}");
}
