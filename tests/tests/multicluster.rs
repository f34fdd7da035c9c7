//! Two clusters of two Nodes under one manager (tests/topologies/two-clusters.yaml): traces
//! in both clusters at once, through tfctl's JSON and the gRPC API, each with its full ordered
//! observation list; the manager's history per cluster; inter-Node traces over Geneve (ICMP,
//! TCP, UDP, to the Pod and to its IP, both families); and the topology's policies: K8s
//! default deny and allow on the same and another Node, an Antrea-native drop and reject (same
//! and another Node), a named Antrea-native allow (policy and rule names), a trace to
//! another Node's IP (ForwardedOutOfNetwork) and an IPv6 inter-Node trace; egress-direction
//! policies (K8s EgressRule / EgressDefaultRule, Antrea-native named EgressRule allow and
//! EgressMetric drop / reject) on the same and another Node; a Service whose endpoints are on
//! the same and on another Node, in both families.
//!
//! Needs root, Open vSwitch and `cargo build --workspace --bins`; fails loudly, never skips.

mod common;

use std::path::Path;

use common::trace::{
    Api, NodeWant, check_results, network_policy, output, output_tunnel, pod_ip, received,
    receiver, require_binaries, results_json, runtime, sender, spec, spoofguard, tfctl_trace,
    to_pod, up_with_config,
};
use common::{Lab, require_lab_prerequisites, topology};
use traceflow_proto::v1 as pb;

/// One intra-Node trace per cluster through tfctl and one through gRPC, all four at once.
async fn concurrent_intra_node(cfg: &Path, api: &Api) -> Result<(), String> {
    let mut a = api.clone();
    let east_pods = a.wait_pods("east", 6).await?;
    let west_pods = a.wait_pods("west", 3).await?;
    let east_src = pod_ip(&east_pods, "default/client", false)?;
    let west_src = pod_ip(&west_pods, "default/client", false)?;
    let cases = [("east", "e1", east_src), ("west", "w1", west_src)];

    let mut handles = Vec::new();
    for (cluster, node, src) in cases.clone() {
        let cfg = cfg.to_path_buf();
        let src2 = src.clone();
        handles.push(tokio::task::spawn_blocking(move || {
            let src = src2;
            let (out, v) = tfctl_trace(
                &cfg,
                cluster,
                &["-S", "default/client", "-D", "default/client-2"],
            )?;
            if !out.status.success() || v["phase"] != "Succeeded" || v["cluster"] != cluster {
                return Err(format!(
                    "{cluster} via tfctl: {v:#}\n{}",
                    common::text(&out)
                ));
            }
            let want = [sender(node, vec![spoofguard(&src), output("Delivered")])];
            check_results(&v["results"], &want).map_err(|e| format!("{cluster} via tfctl: {e}"))?;
            Ok((cluster, v["uid"].as_str().unwrap_or("").to_string()))
        }));
        let mut api = api.clone();
        handles.push(tokio::spawn(async move {
            let t = api
                .run(
                    cluster,
                    spec("default/client", to_pod("default/client-2"), None),
                )
                .await?;
            if common::trace::phase(&t) != "Succeeded" || t.cluster != cluster {
                return Err(format!(
                    "{cluster} via gRPC: {:#}",
                    common::trace::to_json(&t)
                ));
            }
            let want = [sender(node, vec![spoofguard(&src), output("Delivered")])];
            check_results(&results_json(&t), &want)
                .map_err(|e| format!("{cluster} via gRPC: {e}"))?;
            Ok((cluster, t.uid))
        }));
    }
    let mut uids: Vec<(&str, String)> = Vec::new();
    for h in handles {
        uids.push(h.await.map_err(|e| format!("join: {e}"))??);
    }

    // History: each trace under its own cluster; unfiltered, all four, newest first.
    for cluster in ["east", "west"] {
        let listed = a
            .traces
            .list_traceflows(pb::ListTraceflowsRequest {
                cluster: cluster.into(),
                ..Default::default()
            })
            .await
            .map_err(|s| format!("ListTraceflows {cluster}: {s:?}"))?
            .into_inner()
            .traceflows;
        let mut got: Vec<String> = listed.iter().map(|t| t.uid.clone()).collect();
        let mut want: Vec<String> = uids
            .iter()
            .filter(|(c, _)| *c == cluster)
            .map(|(_, u)| u.clone())
            .collect();
        got.sort();
        want.sort();
        if got != want || listed.iter().any(|t| t.cluster != cluster) {
            return Err(format!(
                "ListTraceflows cluster={cluster}: {got:?}, want {want:?}"
            ));
        }
    }
    let all = a
        .traces
        .list_traceflows(pb::ListTraceflowsRequest::default())
        .await
        .map_err(|s| format!("ListTraceflows: {s:?}"))?
        .into_inner()
        .traceflows;
    let times: Vec<i64> = all.iter().map(|t| t.creation_time_micros).collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    if all.len() != 4 || times != sorted {
        return Err(format!(
            "unfiltered ListTraceflows: {} traces, creation times {times:?} (want 4, newest first)",
            all.len()
        ));
    }
    for (cluster, uid) in &uids {
        if !all.iter().any(|t| &t.uid == uid && t.cluster == *cluster) {
            return Err(format!("unfiltered ListTraceflows lacks {cluster}/{uid}"));
        }
    }
    Ok(())
}

/// client on e1 → backend on e2: the sender tunnels to e2's underlay IP, e2 receives and
/// delivers; through tfctl and gRPC.
async fn inter_node(cfg: &Path, api: &Api) -> Result<(), String> {
    let mut a = api.clone();
    let pods = a.wait_pods("east", 6).await?;
    let src = pod_ip(&pods, "default/client", false)?;
    let nodes = a.nodes("east").await?;
    let e2 = nodes
        .iter()
        .find(|n| n.name == "e2")
        .ok_or("no Node e2 in east")?;
    let tunnel = e2
        .internal_ips
        .iter()
        .map(|ip| ip.split('/').next().unwrap_or(ip).to_string())
        .find(|ip| !ip.contains(':'))
        .ok_or("e2 has no IPv4 InternalIP")?;
    let want = [
        sender("e1", vec![spoofguard(&src), output_tunnel(&tunnel)]),
        receiver("e2", vec![received(), output("Delivered")]),
    ];
    let t = a
        .run(
            "east",
            spec("default/client", to_pod("default/backend"), None),
        )
        .await?;
    if common::trace::phase(&t) != "Succeeded" {
        return Err(format!(
            "inter-Node via gRPC: {:#}",
            common::trace::to_json(&t)
        ));
    }
    check_results(&results_json(&t), &want).map_err(|e| format!("inter-Node via gRPC: {e}"))?;
    let cfg = cfg.to_path_buf();
    let (out, v) = tokio::task::spawn_blocking(move || {
        tfctl_trace(
            &cfg,
            "east",
            &["-S", "default/client", "-D", "default/backend"],
        )
    })
    .await
    .map_err(|e| format!("join: {e}"))??;
    if !out.status.success() || v["phase"] != "Succeeded" {
        return Err(format!(
            "inter-Node via tfctl: {v:#}\n{}",
            common::text(&out)
        ));
    }
    check_results(&v["results"], &want).map_err(|e| format!("inter-Node via tfctl: {e}"))
}

/// A packet of `l4` (`icmp`, `tcp` or `udp`) to `port` in the family `ipv6`, and the same as a
/// tfctl `-f` flow.
fn packet_and_flow(ipv6: bool, l4: &str, port: i32) -> (Option<pb::Packet>, String) {
    let th = match l4 {
        "tcp" => Some(pb::TransportHeader {
            tcp: Some(pb::TcpHeader {
                dst_port: port,
                ..Default::default()
            }),
            ..Default::default()
        }),
        "udp" => Some(pb::TransportHeader {
            udp: Some(pb::UdpHeader {
                dst_port: port,
                ..Default::default()
            }),
            ..Default::default()
        }),
        _ => None,
    };
    let packet = pb::Packet {
        ip_header: (!ipv6).then(pb::IpHeader::default),
        ipv6_header: ipv6.then(pb::IPv6Header::default),
        transport_header: th,
        ..Default::default()
    };
    let mut flow: Vec<String> = Vec::new();
    if ipv6 {
        flow.push("ipv6".into());
    }
    if l4 == "tcp" || l4 == "udp" {
        flow.push(l4.into());
        flow.push(format!("{l4}_dst={port}"));
    }
    (Some(packet), flow.join(","))
}

/// One trace case run through the gRPC API and through `tfctl -o json`, each held to the full
/// ordered observation list per Node.
struct Case {
    what: String,
    cluster: &'static str,
    /// Source Pod `ns/name`.
    src: String,
    /// Destination: a Pod `ns/name` or an IP (also tfctl's `-D`).
    dst: String,
    packet: Option<pb::Packet>,
    /// tfctl's `-f` (empty: none).
    flow: String,
    want: Vec<NodeWant>,
}

impl Case {
    fn destination(&self) -> pb::Destination {
        if self.dst.parse::<std::net::IpAddr>().is_ok() {
            common::trace::to_ip(&self.dst)
        } else {
            to_pod(&self.dst)
        }
    }
}

/// Runs every case through gRPC and tfctl; the failures, or `Ok` when there are none.
async fn run_cases(cfg: &Path, api: &Api, cases: Vec<Case>) -> Result<(), String> {
    let mut a = api.clone();
    let mut failures = Vec::new();
    for case in cases {
        let what = &case.what;
        let spec = spec(&case.src, case.destination(), case.packet.clone());
        match a.run(case.cluster, spec).await {
            Ok(t) if common::trace::phase(&t) == "Succeeded" && t.cluster == case.cluster => {
                if let Err(e) = check_results(&results_json(&t), &case.want) {
                    failures.push(format!("{what} via gRPC: {e}"));
                }
            }
            Ok(t) => failures.push(format!("{what} via gRPC: {:#}", common::trace::to_json(&t))),
            Err(e) => failures.push(format!("{what} via gRPC: {e}")),
        }
        let mut args = vec![
            "-S".to_string(),
            case.src.clone(),
            "-D".into(),
            case.dst.clone(),
        ];
        if !case.flow.is_empty() {
            args.extend(["-f".into(), case.flow.clone()]);
        }
        let (cfg, cluster) = (cfg.to_path_buf(), case.cluster);
        let r = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            tfctl_trace(&cfg, cluster, &args)
        })
        .await
        .map_err(|e| format!("join: {e}"))?;
        match r {
            Ok((out, v))
                if out.status.success() && v["phase"] == "Succeeded" && v["cluster"] == cluster =>
            {
                if let Err(e) = check_results(&v["results"], &case.want) {
                    failures.push(format!("{what} via tfctl: {e}"));
                }
            }
            Ok((out, v)) => {
                failures.push(format!("{what} via tfctl: {v:#}\n{}", common::text(&out)))
            }
            Err(e) => failures.push(format!("{what} via tfctl: {e}")),
        }
    }
    common::trace::all_passed(failures)
}

/// The first InternalIP of Node `name` in the family `ipv6`.
fn node_ip(nodes: &[pb::InventoryNode], name: &str, ipv6: bool) -> Result<String, String> {
    nodes
        .iter()
        .find(|n| n.name == name)
        .and_then(|n| n.internal_ips.iter().find(|ip| ip.contains(':') == ipv6))
        .map(|ip| ip.split('/').next().unwrap_or(ip).to_string())
        .ok_or(format!(
            "no {} InternalIP for Node {name}",
            if ipv6 { "IPv6" } else { "IPv4" }
        ))
}

/// Inter-Node client (e1) → backend (e2, no policy) with ICMP, TCP and UDP, to the Pod and to
/// its IP, in both families: e1 tunnels to e2's IPv4 underlay address, e2 receives and
/// delivers.
async fn inter_node_protocols_and_pod_ip(cfg: &Path, api: &Api) -> Result<(), String> {
    let mut a = api.clone();
    let pods = a.wait_pods("east", 6).await?;
    let e2 = node_ip(&a.nodes("east").await?, "e2", false)?;
    let mut cases = Vec::new();
    for ipv6 in [false, true] {
        let v = if ipv6 { "IPv6" } else { "IPv4" };
        let src = pod_ip(&pods, "default/client", ipv6)?;
        let backend = pod_ip(&pods, "default/backend", ipv6)?;
        for (l4, port) in [("icmp", 0), ("tcp", 80), ("udp", 53)] {
            for dst in ["default/backend".to_string(), backend.clone()] {
                let (packet, flow) = packet_and_flow(ipv6, l4, port);
                cases.push(Case {
                    what: format!("{v} {l4} inter-Node client -> {dst}"),
                    cluster: "east",
                    src: "default/client".into(),
                    dst,
                    packet,
                    flow,
                    want: vec![
                        sender("e1", vec![spoofguard(&src), output_tunnel(&e2)]),
                        receiver("e2", vec![received(), output("Delivered")]),
                    ],
                });
            }
        }
    }
    run_cases(cfg, api, cases).await
}

/// Egress-direction policies (east), in the family `ipv6`:
/// - K8s `default/egress-8080` isolates client-2 (e1) for egress and admits only TCP 8080 to
///   `app: client` / `app: peer` Pods and to `web/app: api` Pods: `EgressRule Forwarded` with
///   the policy's name to client (same Node), backend (another Node) and api-0 / api-1 (where
///   `allow-api` adds `IngressRule Forwarded`); anything else `EgressDefaultRule Dropped` on
///   e1, also when the destination is on another Node (the packet never leaves e1).
/// - Antrea-native `egress-guard` on backend (e2): a named Allow (`EgressRule Forwarded`,
///   policy and rule), a Drop and a Reject (`EgressMetric Dropped` / `Rejected`, policy and
///   rule), on the same and another Node; traffic no rule matches is not isolated
///   (Antrea-native policies have no default deny): delivered with no NetworkPolicy
///   observation.
async fn egress_policies(cfg: &Path, api: &Api, ipv6: bool) -> Result<(), String> {
    let mut a = api.clone();
    let pods = a.wait_pods("east", 6).await?;
    let nodes = a.nodes("east").await?;
    let (e1_ip, e2_ip) = (node_ip(&nodes, "e1", false)?, node_ip(&nodes, "e2", false)?);
    let v = if ipv6 { "IPv6" } else { "IPv4" };
    let k8s = pod_ip(&pods, "default/client-2", ipv6)?;
    let anp = pod_ip(&pods, "default/backend", ipv6)?;
    let k8s_allow = network_policy(
        "EgressRule",
        "Forwarded",
        "K8sNetworkPolicy:default/egress-8080",
        "",
    );
    let k8s_deny = network_policy("EgressDefaultRule", "Dropped", "", "");
    let allow_api = network_policy(
        "IngressRule",
        "Forwarded",
        "K8sNetworkPolicy:web/allow-api",
        "",
    );
    let guard = "AntreaClusterNetworkPolicy:egress-guard";
    let anp_allow = network_policy("EgressRule", "Forwarded", guard, "allow-8080");
    let anp_drop = network_policy("EgressMetric", "Dropped", guard, "drop-udp-53");
    let anp_reject = network_policy("EgressMetric", "Rejected", guard, "reject-tcp-9000");
    type Obs = serde_json::Value;
    // Delivered on the sender's own Node after `mid`.
    let same = |node: &str, src: &str, mid: &[&Obs]| {
        let mut obs = vec![spoofguard(src)];
        obs.extend(mid.iter().map(|o| (*o).clone()));
        obs.push(output("Delivered"));
        vec![sender(node, obs)]
    };
    // Tunnelled from `from` to `to` (underlay `tunnel`) and delivered there.
    let other = |from: &str, to: &str, tunnel: &str, src: &str, eg: &[&Obs], ing: &[&Obs]| {
        let mut s = vec![spoofguard(src)];
        s.extend(eg.iter().map(|o| (*o).clone()));
        s.push(output_tunnel(tunnel));
        let mut r = vec![received()];
        r.extend(ing.iter().map(|o| (*o).clone()));
        r.push(output("Delivered"));
        vec![sender(from, s), receiver(to, r)]
    };
    // Dropped on the sender's Node.
    let dropped =
        |node: &str, src: &str, drop: &Obs| vec![sender(node, vec![spoofguard(src), drop.clone()])];
    let (c2, be) = ("default/client-2", "default/backend");
    // (what, source, destination, l4, port, want)
    type Row<'a> = (&'a str, &'a str, &'a str, &'a str, i32, Vec<NodeWant>);
    let table: Vec<Row> = vec![
        (
            "K8s egress allow on the same Node",
            c2,
            "default/client",
            "tcp",
            8080,
            same("e1", &k8s, &[&k8s_allow]),
        ),
        (
            "K8s egress allow to another Node",
            c2,
            be,
            "tcp",
            8080,
            other("e1", "e2", &e2_ip, &k8s, &[&k8s_allow], &[]),
        ),
        (
            "K8s egress allow + K8s ingress allow on the same Node",
            c2,
            "web/api-0",
            "tcp",
            8080,
            same("e1", &k8s, &[&k8s_allow, &allow_api]),
        ),
        (
            "K8s egress allow + K8s ingress allow on another Node",
            c2,
            "web/api-1",
            "tcp",
            8080,
            other("e1", "e2", &e2_ip, &k8s, &[&k8s_allow], &[&allow_api]),
        ),
        (
            "K8s egress default deny (ICMP) on the same Node",
            c2,
            "default/client",
            "icmp",
            0,
            dropped("e1", &k8s, &k8s_deny),
        ),
        (
            "K8s egress default deny (ICMP) to another Node",
            c2,
            be,
            "icmp",
            0,
            dropped("e1", &k8s, &k8s_deny),
        ),
        (
            "K8s egress default deny (other port) to another Node",
            c2,
            be,
            "tcp",
            80,
            dropped("e1", &k8s, &k8s_deny),
        ),
        (
            "K8s egress default deny (UDP) to another Node",
            c2,
            be,
            "udp",
            8080,
            dropped("e1", &k8s, &k8s_deny),
        ),
        (
            "K8s egress default deny (peer not selected) to another Node",
            c2,
            "web/db-0",
            "tcp",
            8080,
            dropped("e1", &k8s, &k8s_deny),
        ),
        (
            "Antrea-native egress allow (named rule) + K8s ingress allow on the same Node",
            be,
            "web/api-1",
            "tcp",
            8080,
            same("e2", &anp, &[&anp_allow, &allow_api]),
        ),
        (
            "Antrea-native egress allow (named rule) to another Node",
            be,
            "default/client",
            "tcp",
            8080,
            other("e2", "e1", &e1_ip, &anp, &[&anp_allow], &[]),
        ),
        (
            "Antrea-native egress drop on the same Node",
            be,
            "web/db-0",
            "udp",
            53,
            dropped("e2", &anp, &anp_drop),
        ),
        (
            "Antrea-native egress drop to another Node",
            be,
            "default/client",
            "udp",
            53,
            dropped("e2", &anp, &anp_drop),
        ),
        (
            "Antrea-native egress reject on the same Node",
            be,
            "web/db-0",
            "tcp",
            9000,
            dropped("e2", &anp, &anp_reject),
        ),
        (
            "Antrea-native egress reject to another Node",
            be,
            "default/client",
            "tcp",
            9000,
            dropped("e2", &anp, &anp_reject),
        ),
        (
            "Antrea-native egress: no rule matches, no isolation (same Node)",
            be,
            "web/db-0",
            "icmp",
            0,
            same("e2", &anp, &[]),
        ),
        (
            "Antrea-native egress: no rule matches, no isolation (another Node)",
            be,
            "default/client",
            "icmp",
            0,
            other("e2", "e1", &e1_ip, &anp, &[], &[]),
        ),
    ];
    let cases = table
        .into_iter()
        .map(|(what, src, dst, l4, port, want)| {
            let (packet, flow) = packet_and_flow(ipv6, l4, port);
            Case {
                what: format!("{v} {what}: {src} -> {dst} {l4} {port}"),
                cluster: "east",
                src: src.into(),
                dst: dst.into(),
                packet,
                flow,
                want,
            }
        })
        .collect();
    run_cases(cfg, api, cases).await
}

fn with_lab(tag: &str, body: impl AsyncFnOnce(&Path, &Api) -> Result<(), String>) {
    require_lab_prerequisites();
    require_binaries();
    let mut lab = Lab::new(tag);
    let cfg = up_with_config(&mut lab, &topology("two-clusters.yaml"));
    let rt = runtime();
    let result = rt.block_on(async {
        let api = Api::connect(&cfg).await?;
        body(&cfg, &api).await
    });
    drop(rt);
    if let Err(e) = result {
        panic!("{e}\n{}", lab.dump());
    }
    let down = lab.down();
    assert!(down.contains("is down"), "{down}");
    lab.assert_gone();
}

#[test]
fn traces_in_two_clusters_at_once_each_listed_under_its_cluster() {
    with_lab("mc", async |cfg, api| concurrent_intra_node(cfg, api).await);
}

#[test]
fn inter_node_trace_reports_sender_tunnel_and_receiver_delivery() {
    with_lab("mci", async |cfg, api| {
        inter_node(cfg, api).await?;
        inter_node_protocols_and_pod_ip(cfg, api).await
    });
}

#[test]
fn egress_policies_allow_drop_and_reject_on_the_same_and_another_node() {
    with_lab("mce", async |cfg, api| {
        egress_policies(cfg, api, false).await?;
        egress_policies(cfg, api, true).await
    });
}

/// The topology's policies, on the same Node and across Nodes, and a trace to another Node's
/// IP and an IPv6 inter-Node trace; each through gRPC and tfctl with its full lists, in the
/// packet family `ipv6` (the underlay, hence `tunnelDstIP`, stays IPv4).
async fn policies_and_more(cfg: &Path, api: &Api, ipv6: bool) -> Result<(), String> {
    let mut a = api.clone();
    let east = a.wait_pods("east", 6).await?;
    let west = a.wait_pods("west", 3).await?;
    let e_client = pod_ip(&east, "default/client", ipv6)?;
    let e_client6 = pod_ip(&east, "default/client", true)?;
    let e_api1 = pod_ip(&east, "web/api-1", ipv6)?;
    let w_client = pod_ip(&west, "default/client", ipv6)?;
    let ip_of = |nodes: &[pb::InventoryNode], name: &str| {
        nodes
            .iter()
            .find(|n| n.name == name)
            .and_then(|n| n.internal_ips.iter().find(|ip| !ip.contains(':')))
            .map(|ip| ip.split('/').next().unwrap_or(ip).to_string())
            .ok_or(format!("no IPv4 InternalIP for {name}"))
    };
    let east_nodes = a.nodes("east").await?;
    let e2 = ip_of(&east_nodes, "e2")?;
    // The destination of "to another Node's IP", in the packet family.
    let e2_ip = east_nodes
        .iter()
        .find(|n| n.name == "e2")
        .and_then(|n| n.internal_ips.iter().find(|ip| ip.contains(':') == ipv6))
        .map(|ip| ip.split('/').next().unwrap_or(ip).to_string())
        .ok_or("no InternalIP of the family for e2")?;
    let w2 = ip_of(&a.nodes("west").await?, "w2")?;
    let allow_api = "K8sNetworkPolicy:web/allow-api";
    let tcp = |port: i32| {
        Some(pb::Packet {
            ip_header: (!ipv6).then(pb::IpHeader::default),
            ipv6_header: ipv6.then(pb::IPv6Header::default),
            transport_header: Some(pb::TransportHeader {
                tcp: Some(pb::TcpHeader {
                    dst_port: port,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
    };
    let v6 = Some(pb::Packet {
        ipv6_header: Some(pb::IPv6Header::default()),
        ..Default::default()
    });
    // ICMP (no transport header) in the packet family.
    let icmp = if ipv6 { v6.clone() } else { None };
    #[allow(clippy::type_complexity)]
    let cases: Vec<(
        &str,
        &str,
        &str,
        &str,
        &str,
        &str,
        Option<pb::Packet>,
        Vec<NodeWant>,
    )> = vec![
        (
            "K8s default deny on the same Node",
            "east",
            "default/client",
            "web/api-0",
            "",
            "",
            icmp.clone(),
            vec![sender(
                "e1",
                vec![
                    spoofguard(&e_client),
                    network_policy("IngressDefaultRule", "Dropped", "", ""),
                ],
            )],
        ),
        (
            "K8s allow on the same Node",
            "east",
            "default/client",
            "web/api-0",
            "",
            "tcp,tcp_dst=8080",
            tcp(8080),
            vec![sender(
                "e1",
                vec![
                    spoofguard(&e_client),
                    network_policy("IngressRule", "Forwarded", allow_api, ""),
                    output("Delivered"),
                ],
            )],
        ),
        (
            "K8s default deny on another Node",
            "east",
            "default/client",
            "web/api-1",
            "",
            "",
            icmp.clone(),
            vec![
                sender("e1", vec![spoofguard(&e_client), output_tunnel(&e2)]),
                receiver(
                    "e2",
                    vec![
                        received(),
                        network_policy("IngressDefaultRule", "Dropped", "", ""),
                    ],
                ),
            ],
        ),
        (
            "K8s allow on another Node",
            "east",
            "default/client",
            "web/api-1",
            "",
            "tcp,tcp_dst=8080",
            tcp(8080),
            vec![
                sender("e1", vec![spoofguard(&e_client), output_tunnel(&e2)]),
                receiver(
                    "e2",
                    vec![
                        received(),
                        network_policy("IngressRule", "Forwarded", allow_api, ""),
                        output("Delivered"),
                    ],
                ),
            ],
        ),
        (
            "Antrea-native drop with policy and rule",
            "east",
            "default/client",
            "web/db-0",
            "",
            "tcp,tcp_dst=3306",
            tcp(3306),
            vec![
                sender("e1", vec![spoofguard(&e_client), output_tunnel(&e2)]),
                receiver(
                    "e2",
                    vec![
                        received(),
                        network_policy(
                            "IngressMetric",
                            "Dropped",
                            "AntreaClusterNetworkPolicy:deny-db",
                            "drop-3306",
                        ),
                    ],
                ),
            ],
        ),
        (
            "Antrea-native reject with policy and rule",
            "east",
            "default/client",
            "web/db-0",
            "",
            "tcp,tcp_dst=5432",
            tcp(5432),
            vec![
                sender("e1", vec![spoofguard(&e_client), output_tunnel(&e2)]),
                receiver(
                    "e2",
                    vec![
                        received(),
                        network_policy(
                            "IngressMetric",
                            "Rejected",
                            "AntreaClusterNetworkPolicy:reject-db",
                            "reject-5432",
                        ),
                    ],
                ),
            ],
        ),
        (
            "Antrea-native drop on the same Node",
            "east",
            "web/api-1",
            "web/db-0",
            "",
            "tcp,tcp_dst=3306",
            tcp(3306),
            vec![sender(
                "e2",
                vec![
                    spoofguard(&e_api1),
                    network_policy(
                        "IngressMetric",
                        "Dropped",
                        "AntreaClusterNetworkPolicy:deny-db",
                        "drop-3306",
                    ),
                ],
            )],
        ),
        (
            "Antrea-native reject on the same Node",
            "east",
            "web/api-1",
            "web/db-0",
            "",
            "tcp,tcp_dst=5432",
            tcp(5432),
            vec![sender(
                "e2",
                vec![
                    spoofguard(&e_api1),
                    network_policy(
                        "IngressMetric",
                        "Rejected",
                        "AntreaClusterNetworkPolicy:reject-db",
                        "reject-5432",
                    ),
                ],
            )],
        ),
        (
            "allowed by a named Antrea-native rule",
            "west",
            "default/client",
            "default/server",
            "",
            "",
            icmp.clone(),
            vec![
                sender("w1", vec![spoofguard(&w_client), output_tunnel(&w2)]),
                receiver(
                    "w2",
                    vec![
                        received(),
                        network_policy(
                            "IngressRule",
                            "Forwarded",
                            "AntreaNetworkPolicy:default/server-allow-client",
                            "allow-client",
                        ),
                        output("Delivered"),
                    ],
                ),
            ],
        ),
        (
            "to another Node's IP",
            "east",
            "default/client",
            "",
            &e2_ip,
            "",
            icmp.clone(),
            vec![sender(
                "e1",
                vec![spoofguard(&e_client), output("ForwardedOutOfNetwork")],
            )],
        ),
        (
            "IPv6 inter-Node",
            "east",
            "default/client",
            "default/backend",
            "",
            "ipv6",
            v6,
            vec![
                sender("e1", vec![spoofguard(&e_client6), output_tunnel(&e2)]),
                receiver("e2", vec![received(), output("Delivered")]),
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (what, cluster, src, dst_pod, dst_ip, flow, packet, want) in cases {
        let dst = if dst_ip.is_empty() {
            to_pod(dst_pod)
        } else {
            common::trace::to_ip(dst_ip)
        };
        match a.run(cluster, spec(src, dst, packet)).await {
            Ok(t) if common::trace::phase(&t) == "Succeeded" => {
                if let Err(e) = check_results(&results_json(&t), &want) {
                    failures.push(format!("{what} via gRPC: {e}"));
                }
            }
            Ok(t) => failures.push(format!("{what} via gRPC: {:#}", common::trace::to_json(&t))),
            Err(e) => failures.push(format!("{what} via gRPC: {e}")),
        }
        let d = if dst_ip.is_empty() { dst_pod } else { dst_ip };
        let flow = match (ipv6, flow) {
            (true, "") => "ipv6".to_string(),
            (true, f) if !f.starts_with("ipv6") => format!("ipv6,{f}"),
            (_, f) => f.to_string(),
        };
        let what = format!("{} {what}", if ipv6 { "IPv6" } else { "IPv4" });
        let mut args = vec!["-S", src, "-D", d];
        if !flow.is_empty() {
            args.extend(["-f", flow.as_str()]);
        }
        let cfg = cfg.to_path_buf();
        let cluster = cluster.to_string();
        let args: Vec<String> = args.iter().map(ToString::to_string).collect();
        let r = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            tfctl_trace(&cfg, &cluster, &args)
        })
        .await
        .map_err(|e| format!("join: {e}"))?;
        match r {
            Ok((out, v)) if out.status.success() && v["phase"] == "Succeeded" => {
                if let Err(e) = check_results(&v["results"], &want) {
                    failures.push(format!("{what} via tfctl: {e}"));
                }
            }
            Ok((out, v)) => {
                failures.push(format!("{what} via tfctl: {v:#}\n{}", common::text(&out)))
            }
            Err(e) => failures.push(format!("{what} via tfctl: {e}")),
        }
    }
    common::trace::all_passed(failures)
}

/// client (e1) → Service web/api (endpoints api-0 on e1, api-1 on e2; port 80 → 8080, which
/// allow-api admits), in the family `ipv6` (its ClusterIP of that family; the underlay, hence
/// `tunnelDstIP`, stays IPv4): the LB picks an endpoint per trace, so each trace's full list is
/// the one for the endpoint it reports; 16 traces (10 gRPC, 6 tfctl) must reach both endpoints.
async fn service_on_same_and_other_node(cfg: &Path, api: &Api, ipv6: bool) -> Result<(), String> {
    let mut a = api.clone();
    let east = a.wait_pods("east", 6).await?;
    let fam = if ipv6 { "IPv6" } else { "IPv4" };
    let client = pod_ip(&east, "default/client", ipv6)?;
    let api0 = pod_ip(&east, "web/api-0", ipv6)?;
    let api1 = pod_ip(&east, "web/api-1", ipv6)?;
    let e2 = a
        .nodes("east")
        .await?
        .iter()
        .find(|n| n.name == "e2")
        .and_then(|n| n.internal_ips.iter().find(|ip| !ip.contains(':')).cloned())
        .map(|ip| ip.split('/').next().unwrap_or(&ip).to_string())
        .ok_or("no IPv4 InternalIP for e2")?;
    let allow = network_policy(
        "IngressRule",
        "Forwarded",
        "K8sNetworkPolicy:web/allow-api",
        "",
    );
    let lb = |ip: &str, pod: &str| {
        serde_json::json!({"component": "LB", "action": "Forwarded", "pod": pod,
                           "translatedDstIP": ip})
    };
    let same = vec![sender(
        "e1",
        vec![
            spoofguard(&client),
            lb(&api0, "web/api-0"),
            allow.clone(),
            output("Delivered"),
        ],
    )];
    let other = vec![
        sender(
            "e1",
            vec![
                spoofguard(&client),
                lb(&api1, "web/api-1"),
                output_tunnel(&e2),
            ],
        ),
        receiver("e2", vec![received(), allow.clone(), output("Delivered")]),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for n in 0..16 {
        let (how, results) = if n < 10 {
            let dst = pb::Destination {
                namespace: "web".into(),
                service: "api".into(),
                ..Default::default()
            };
            let packet = ipv6.then(|| pb::Packet {
                ipv6_header: Some(pb::IPv6Header::default()),
                ..Default::default()
            });
            let t = a.run("east", spec("default/client", dst, packet)).await?;
            if common::trace::phase(&t) != "Succeeded" {
                return Err(format!(
                    "{fam} Service via gRPC: {:#}",
                    common::trace::to_json(&t)
                ));
            }
            ("gRPC", results_json(&t))
        } else {
            let cfg = cfg.to_path_buf();
            let (out, v) = tokio::task::spawn_blocking(move || {
                let mut args = vec!["-S", "default/client", "-D", "web/api"];
                if ipv6 {
                    args.extend(["-f", "ipv6"]);
                }
                tfctl_trace(&cfg, "east", &args)
            })
            .await
            .map_err(|e| format!("join: {e}"))??;
            if !out.status.success() || v["phase"] != "Succeeded" {
                return Err(format!(
                    "{fam} Service via tfctl: {v:#}\n{}",
                    common::text(&out)
                ));
            }
            ("tfctl", v["results"].clone())
        };
        let chosen = results
            .pointer("/0/observations/1/translatedDstIP")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_string();
        let want = if chosen == api0 {
            &same
        } else if chosen == api1 {
            &other
        } else {
            return Err(format!(
                "{fam} Service via {how}: LB endpoint {chosen:?} is neither api-0 nor api-1: \
                 {results:#}"
            ));
        };
        check_results(&results, want).map_err(|e| format!("{fam} Service via {how}: {e}"))?;
        seen.insert(chosen);
    }
    if seen.len() != 2 {
        return Err(format!("16 {fam} Service traces reached only {seen:?}"));
    }
    Ok(())
}

#[test]
fn service_endpoint_on_the_same_and_another_node() {
    with_lab("mcs", async |cfg, api| {
        service_on_same_and_other_node(cfg, api, false).await?;
        service_on_same_and_other_node(cfg, api, true).await
    });
}

#[test]
fn policy_drops_rejects_allows_other_node_ip_and_ipv6_across_nodes() {
    with_lab("mcp", async |cfg, api| {
        policies_and_more(cfg, api, false).await?;
        policies_and_more(cfg, api, true).await
    });
}
