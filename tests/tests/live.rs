//! Live-traffic traces (reference §3.6) on one dual-stack cluster of two Nodes with policies
//! (tests/topologies/policies.yaml), each through the gRPC API and through `tfctl -L -o json`:
//! the trace is started, then real traffic runs from a Pod's namespace (`traceflow-lab exec`,
//! a new connection every few hundred milliseconds, since the trace arms asynchronously), and
//! the trace must end Succeeded with its full ordered observation list per Node and the
//! `capturedPacket` of the traced connection:
//!
//! * ping client(n1) → peer(n2), IPv4 and IPv6: n1 tags and tunnels, n2 receives and delivers;
//! * source Pod and destination IP: as above;
//! * destination Pod only (and a source IP): n2 tags the traffic it receives; for traffic from
//!   a Pod on the destination's own Node too, with no sending-path observations;
//! * droppedOnly, other(n1) → secure(n2): only n2's IngressMetric drop is reported, with the
//!   Antrea-native policy and rule;
//! * TCP guest(n1) → secure:9002 under a Reject rule: reported as Rejected, and every
//!   connection attempt, the traced one included, is refused at once (the agent still answers
//!   live traffic it reports);
//! * an injected client → peer trace beside a waiting live trace from client and a
//!   destination-only one to peer: it succeeds with its own observations, neither live trace
//!   takes its packet;
//! * the tag space: 14 live traces wait at once, each with its own tag; the 15th fails at once
//!   with Antrea's limit message; deleting one frees its tag for the next;
//! * the Traceflow-resource path: a `liveTraffic` Traceflow created through the lab's
//!   Kubernetes API gets the same results, `capturedPacket` and `dataplaneTag` in `.status`.
//!
//! Needs root, Open vSwitch and `cargo build --workspace --bins`; fails loudly, never skips.

mod common;

use std::{
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use common::trace::{
    Api, NodeWant, check_results, network_policy, node_ip, output, output_tunnel, phase, pod_ip,
    received, receiver, require_binaries, runtime, sender, spoofguard, tfctl_trace, to_json,
};
use common::{Lab, require_lab_prerequisites, stdout, text, topology};
use serde_json::Value;
use traceflow_proto::v1 as pb;

/// Traffic one attempt at a time from a Pod: the command and what each attempt must show.
struct Traffic {
    from: &'static str,
    cmd: Vec<String>,
    /// Checks one attempt's (exit status, output, duration).
    expect: fn(bool, &str, Duration) -> Result<(), String>,
}

fn answered(ok: bool, out: &str, _: Duration) -> Result<(), String> {
    ok.then_some(())
        .ok_or_else(|| format!("not answered: {out}"))
}

fn dropped(ok: bool, out: &str, _: Duration) -> Result<(), String> {
    (!ok)
        .then_some(())
        .ok_or_else(|| format!("answered through a Drop rule: {out}"))
}

/// `nc -z` refused, quickly (a Reject answers; a drop would time out after 2 s).
fn refused(_: bool, out: &str, took: Duration) -> Result<(), String> {
    if out.contains("refused") && took < Duration::from_millis(1500) {
        Ok(())
    } else {
        Err(format!("not refused at once ({took:?}): {out}"))
    }
}

fn ping(from: &'static str, ip: &str) -> Traffic {
    Traffic {
        from,
        cmd: ["ping", "-c1", "-W1", ip].map(String::from).to_vec(),
        expect: answered,
    }
}

/// Runs `traffic` over and over until `body` returns; every attempt must pass its check.
fn with_traffic<T>(lab: &Lab, traffic: &Traffic, body: impl FnOnce() -> T) -> (T, Vec<String>) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let worker = s.spawn(|| {
            let mut problems = Vec::new();
            let target = format!("c1/default/{}", traffic.from);
            let cmd: Vec<&str> = traffic.cmd.iter().map(String::as_str).collect();
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let out = lab.exec(&target, &cmd);
                let took = start.elapsed();
                if let Err(e) = (traffic.expect)(out.status.success(), &text(&out), took) {
                    problems.push(format!("{} {:?}: {e}", traffic.from, traffic.cmd));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            problems
        });
        let result = body();
        stop.store(true, Ordering::Relaxed);
        let problems = worker
            .join()
            .unwrap_or_else(|_| vec!["traffic thread panicked".into()]);
        (result, problems)
    })
}

/// One live case: spec and tfctl flags, the traffic, and what the trace must say.
struct Case {
    what: String,
    spec: pb::TraceflowSpec,
    tfctl: Vec<String>,
    traffic: Traffic,
    want: Vec<NodeWant>,
    /// `capturedPacket` fields that must match (`srcIP`, `dstIP`, ...).
    captured: Value,
}

fn live_spec(
    src: Option<&str>,
    src_ip: Option<&str>,
    dst: &str,
    packet: pb::Packet,
    dropped_only: bool,
) -> pb::TraceflowSpec {
    let pod = |s: &str| {
        let (ns, name) = s.split_once('/').unwrap_or(("default", s));
        (ns.to_string(), name.to_string())
    };
    let source = match (src, src_ip) {
        (Some(p), _) => {
            let (namespace, pod) = pod(p);
            Some(pb::Source {
                namespace,
                pod,
                ..Default::default()
            })
        }
        (None, Some(ip)) => Some(pb::Source {
            ip: ip.into(),
            ..Default::default()
        }),
        (None, None) => None,
    };
    let destination = if dst.parse::<std::net::IpAddr>().is_ok() {
        pb::Destination {
            ip: dst.into(),
            ..Default::default()
        }
    } else {
        let (namespace, pod) = pod(dst);
        pb::Destination {
            namespace,
            pod,
            ..Default::default()
        }
    };
    pb::TraceflowSpec {
        source,
        destination: Some(destination),
        packet: Some(packet),
        live_traffic: true,
        dropped_only,
        timeout: 30,
        reply: false,
    }
}

fn icmp(ipv6: bool) -> pb::Packet {
    pb::Packet {
        ip_header: (!ipv6).then(|| pb::IpHeader {
            protocol: 1,
            ..Default::default()
        }),
        ipv6_header: ipv6.then(|| pb::IPv6Header {
            next_header: Some(58),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn tcp(dst_port: i32) -> pb::Packet {
    pb::Packet {
        ip_header: Some(pb::IpHeader {
            protocol: 6,
            ..Default::default()
        }),
        transport_header: Some(pb::TransportHeader {
            tcp: Some(pb::TcpHeader {
                dst_port,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

async fn cases(api: &mut Api) -> Result<Vec<Case>, String> {
    let pods = api.wait_pods("c1", 10).await?;
    let nodes = api.nodes("c1").await?;
    let tunnel_n2 = node_ip(&nodes, "n2", false)?;
    let ip = |p: &str, v6: bool| pod_ip(&pods, p, v6);
    let mut out = Vec::new();
    for ipv6 in [false, true] {
        let (client, peer) = (ip("default/client", ipv6)?, ip("default/peer", ipv6)?);
        let v = if ipv6 { "IPv6" } else { "IPv4" };
        let flow = if ipv6 { "icmpv6" } else { "icmp" };
        out.push(Case {
            what: format!("{v} ping client(n1) -> peer(n2)"),
            spec: live_spec(Some("default/client"), None, "default/peer", icmp(ipv6), false),
            tfctl: args(&["-S", "default/client", "-D", "default/peer", "-f", flow]),
            traffic: ping("client", &peer),
            want: vec![
                sender("n1", vec![spoofguard(&client), output_tunnel(&tunnel_n2)]),
                receiver("n2", vec![received(), output("Delivered")]),
            ],
            captured: if ipv6 {
                serde_json::json!({"srcIP": client, "dstIP": peer, "ipv6Header": {"nextHeader": 58}})
            } else {
                serde_json::json!({"srcIP": client, "dstIP": peer, "ipHeader": {"protocol": 1}})
            },
        });
    }
    let (client, peer) = (ip("default/client", false)?, ip("default/peer", false)?);
    out.push(Case {
        what: "destination Pod only: peer(n2) tags what it receives".into(),
        spec: live_spec(None, None, "default/peer", icmp(false), false),
        tfctl: args(&["-D", "default/peer", "-f", "icmp"]),
        traffic: ping("client", &peer),
        want: vec![receiver("n2", vec![received(), output("Delivered")])],
        captured: serde_json::json!({"srcIP": client, "dstIP": peer}),
    });
    out.push(Case {
        what: "source Pod and destination IP".into(),
        spec: live_spec(Some("default/client"), None, &peer, icmp(false), false),
        tfctl: args(&["-S", "default/client", "-D", &peer, "-f", "icmp"]),
        traffic: ping("client", &peer),
        want: vec![
            sender("n1", vec![spoofguard(&client), output_tunnel(&tunnel_n2)]),
            receiver("n2", vec![received(), output("Delivered")]),
        ],
        captured: serde_json::json!({"srcIP": client, "dstIP": peer}),
    });
    // Receiver-only on the source's own Node: still no sending-path observations (§3.6).
    let web_a = ip("default/web-a", false)?;
    out.push(Case {
        what: "destination Pod only, traffic from the same Node".into(),
        spec: live_spec(None, None, "default/web-a", icmp(false), false),
        tfctl: args(&["-D", "default/web-a", "-f", "icmp"]),
        traffic: ping("client", &web_a),
        want: vec![receiver("n1", vec![received(), output("Delivered")])],
        captured: serde_json::json!({"srcIP": client, "dstIP": web_a}),
    });
    out.push(Case {
        what: "source IP and destination Pod".into(),
        spec: live_spec(None, Some(&client), "default/peer", icmp(false), false),
        tfctl: args(&["-S", &client, "-D", "default/peer", "-f", "icmp"]),
        traffic: ping("client", &peer),
        want: vec![receiver("n2", vec![received(), output("Delivered")])],
        captured: serde_json::json!({"srcIP": client, "dstIP": peer}),
    });
    let (other, secure) = (ip("default/other", false)?, ip("default/secure", false)?);
    out.push(Case {
        what: "droppedOnly other(n1) -> secure(n2), Antrea-native Drop".into(),
        spec: live_spec(
            Some("default/other"),
            None,
            "default/secure",
            icmp(false),
            true,
        ),
        tfctl: args(&[
            "-S",
            "default/other",
            "-D",
            "default/secure",
            "-f",
            "icmp",
            "--dropped-only",
        ]),
        traffic: Traffic {
            expect: dropped,
            ..ping("other", &secure)
        },
        want: vec![receiver(
            "n2",
            vec![
                received(),
                network_policy(
                    "IngressMetric",
                    "Dropped",
                    "AntreaClusterNetworkPolicy:secure-ports",
                    "drop-other",
                ),
            ],
        )],
        captured: serde_json::json!({"srcIP": other, "dstIP": secure, "ipHeader": {"protocol": 1}}),
    });
    let guest = ip("default/guest", false)?;
    out.push(Case {
        what: "TCP guest(n1) -> secure:9002, Antrea-native Reject".into(),
        spec: live_spec(
            Some("default/guest"),
            None,
            "default/secure",
            tcp(9002),
            false,
        ),
        tfctl: args(&[
            "-S",
            "default/guest",
            "-D",
            "default/secure",
            "-f",
            "tcp,tcp_dst=9002",
        ]),
        traffic: Traffic {
            from: "guest",
            cmd: vec![
                "sh".into(),
                "-c".into(),
                format!("nc -v -z -w2 {secure} 9002 2>&1"),
            ],
            expect: refused,
        },
        want: vec![
            sender("n1", vec![spoofguard(&guest), output_tunnel(&tunnel_n2)]),
            receiver(
                "n2",
                vec![
                    received(),
                    network_policy(
                        "IngressMetric",
                        "Rejected",
                        "AntreaClusterNetworkPolicy:secure-ports",
                        "reject-9002",
                    ),
                ],
            ),
        ],
        captured: serde_json::json!({
            "srcIP": guest, "dstIP": secure, "ipHeader": {"protocol": 6},
            "transportHeader": {"tcp": {"dstPort": 9002, "flags": 2}}
        }),
    });
    Ok(out)
}

/// Every field of `want` (recursively) is in `got` with the same value.
fn contains(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => w
            .iter()
            .all(|(k, v)| g.get(k).is_some_and(|gv| contains(gv, v))),
        _ => got == want,
    }
}

/// The trace's phase, results and capturedPacket against the case.
fn check(
    case: &Case,
    how: &str,
    phase: &str,
    results: &Value,
    captured: &Value,
) -> Result<(), String> {
    let what = format!("{} via {how}", case.what);
    if phase != "Succeeded" {
        return Err(format!(
            "{what}: phase {phase}, want Succeeded: {results:#}"
        ));
    }
    check_results(results, &case.want).map_err(|e| format!("{what}: {e}"))?;
    if !contains(captured, &case.captured) {
        return Err(format!(
            "{what}: capturedPacket {captured:#}\nwant at least {:#}",
            case.captured
        ));
    }
    Ok(())
}

fn run_cases(
    rt: &tokio::runtime::Runtime,
    cfg: &Path,
    lab: &Lab,
    api: &Api,
) -> Result<Vec<String>, String> {
    let mut failures = Vec::new();
    for case in rt.block_on(cases(&mut api.clone()))? {
        // Through the gRPC API.
        let mut a = api.clone();
        let spec = case.spec.clone();
        let (traced, problems) = with_traffic(lab, &case.traffic, || {
            rt.block_on(async {
                let t = a
                    .create("c1", spec)
                    .await
                    .map_err(|s| format!("CreateTraceflow: {s:?}"))?;
                a.watch_done(&t.uid, Duration::from_secs(45)).await
            })
        });
        failures.extend(problems);
        match traced {
            Ok(t) => {
                let status = t.status.clone().unwrap_or_default();
                if status.dataplane_tag == 0 {
                    failures.push(format!("{} via gRPC: no dataplaneTag", case.what));
                }
                let results = to_json(&status.results);
                let captured = to_json(&status.captured_packet);
                if let Err(e) = check(&case, "gRPC", phase(&t), &results, &captured) {
                    failures.push(format!("{e}\n{:#}", to_json(&t)));
                }
            }
            Err(e) => failures.push(format!("{} via gRPC: {e}", case.what)),
        }

        // Through tfctl.
        let mut flags = vec!["-L", "-t", "30s"];
        flags.extend(case.tfctl.iter().map(String::as_str));
        let (traced, problems) =
            with_traffic(lab, &case.traffic, || tfctl_trace(cfg, "c1", &flags));
        failures.extend(problems);
        match traced {
            Ok((out, v)) => {
                let phase = v["phase"].as_str().unwrap_or("");
                if !out.status.success() {
                    failures.push(format!("{} via tfctl: {}", case.what, text(&out)));
                } else if v["dataplaneTag"].as_u64().is_none_or(|t| t == 0) {
                    failures.push(format!("{} via tfctl: no dataplaneTag", case.what));
                } else if let Err(e) =
                    check(&case, "tfctl", phase, &v["results"], &v["capturedPacket"])
                {
                    failures.push(format!("{e}\n{}", stdout(&out)));
                }
            }
            Err(e) => failures.push(format!("{} via tfctl: {e}", case.what)),
        }
    }
    Ok(failures)
}

/// Waits (10 s) until trace `uid` is Running with a live tag; its tag.
async fn running_tag(a: &mut Api, uid: &str) -> Result<i32, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = a
            .traces
            .get_traceflow(pb::GetTraceflowRequest {
                uid: uid.to_string(),
                name: String::new(),
            })
            .await
            .map_err(|s| format!("GetTraceflow {uid}: {s:?}"))?
            .into_inner();
        let tag = t.status.as_ref().map_or(0, |s| s.dataplane_tag);
        if phase(&t) == "Running" && tag != 0 {
            return Ok(tag);
        }
        if !matches!(phase(&t), "Pending" | "Running") || Instant::now() > deadline {
            return Err(format!(
                "live trace not Running with a tag: {:#}",
                to_json(&t)
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn delete(a: &mut Api, uid: &str) -> Result<(), String> {
    a.traces
        .delete_traceflow(pb::DeleteTraceflowRequest {
            uid: uid.to_string(),
            name: String::new(),
        })
        .await
        .map(|_| ())
        .map_err(|s| format!("DeleteTraceflow {uid}: {s:?}"))
}

/// 14 live traces (Antrea's tag space) in flight, each with its own tag; the 15th refused
/// with the reason; a deleted trace's tag reused.
async fn tag_space(api: &Api) -> Result<(), String> {
    let mut a = api.clone();
    let spec = || {
        live_spec(
            Some("default/client"),
            None,
            "default/peer",
            icmp(false),
            true,
        )
    };
    let mut running = Vec::new();
    let mut tags = std::collections::BTreeSet::new();
    for i in 0..14 {
        let t = a
            .create("c1", spec())
            .await
            .map_err(|s| format!("live trace #{i}: {s:?}"))?;
        tags.insert(running_tag(&mut a, &t.uid).await?);
        running.push(t.uid);
    }
    if tags.len() != 14 {
        return Err(format!("14 live traces share tags: {tags:?}"));
    }
    let full = a
        .create("c1", spec())
        .await
        .map_err(|s| format!("15th live trace: {s:?}"))?;
    let full = a.watch_done(&full.uid, Duration::from_secs(10)).await?;
    let reason = full.status.clone().unwrap_or_default().reason;
    if phase(&full) != "Failed"
        || reason != "number of on-going live-traffic Traceflows reached the limit of 14"
    {
        return Err(format!("15th live trace: {:#}", to_json(&full)));
    }
    let freed = running.remove(0);
    delete(&mut a, &freed).await?;
    let next = a
        .create("c1", spec())
        .await
        .map_err(|s| format!("live trace after a delete: {s:?}"))?;
    running_tag(&mut a, &next.uid).await?;
    running.push(next.uid);
    for uid in running {
        delete(&mut a, &uid).await?;
    }
    Ok(())
}

/// Injected traces are never taken for live traffic: with a live trace from client (n1 tags)
/// and a destination-only one to peer (n2 tags what it receives) both waiting, an injected
/// client → peer trace ends Succeeded with its own full observations, and both live traces
/// still wait. (Before the agent kept injected packets out of the tagging flows, the live
/// trace reported the injected packet as its traffic and the injected trace timed out.)
async fn injected_beside_live(api: &Api) -> Result<(), String> {
    let mut a = api.clone();
    let pods = a.wait_pods("c1", 10).await?;
    let nodes = a.nodes("c1").await?;
    let client = pod_ip(&pods, "default/client", false)?;
    let mut live = Vec::new();
    for spec in [
        live_spec(
            Some("default/client"),
            None,
            "default/peer",
            icmp(false),
            false,
        ),
        live_spec(None, None, "default/peer", icmp(false), false),
    ] {
        let t = a
            .create("c1", spec)
            .await
            .map_err(|s| format!("live trace: {s:?}"))?;
        running_tag(&mut a, &t.uid).await?;
        live.push(t.uid);
    }
    // Both Nodes' live flows are installed right after the tag: give them a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let injected = pb::TraceflowSpec {
        source: Some(pb::Source {
            namespace: "default".into(),
            pod: "client".into(),
            ..Default::default()
        }),
        destination: Some(pb::Destination {
            namespace: "default".into(),
            pod: "peer".into(),
            ..Default::default()
        }),
        packet: Some(icmp(false)),
        ..Default::default()
    };
    let t = a.run("c1", injected).await?;
    let want = client_n1_to_n2(&client, &nodes)?;
    let results = to_json(&t.status.clone().unwrap_or_default().results);
    if phase(&t) != "Succeeded" {
        return Err(format!(
            "injected trace beside live ones: {:#}",
            to_json(&t)
        ));
    }
    check_results(&results, &want).map_err(|e| format!("injected trace beside live ones: {e}"))?;
    for uid in &live {
        let got = a
            .traces
            .get_traceflow(pb::GetTraceflowRequest {
                uid: uid.clone(),
                name: String::new(),
            })
            .await
            .map_err(|s| format!("GetTraceflow {uid}: {s:?}"))?
            .into_inner();
        if phase(&got) != "Running" {
            return Err(format!(
                "a live trace took the injected trace's packet: {:#}",
                to_json(&got)
            ));
        }
        delete(&mut a, uid).await?;
    }
    Ok(())
}

/// What an ICMP packet from `client` on n1 to a Pod on n2 shows: sent into the tunnel to n2,
/// received there and delivered.
fn client_n1_to_n2(client: &str, nodes: &[pb::InventoryNode]) -> Result<[NodeWant; 2], String> {
    Ok([
        sender(
            "n1",
            vec![
                spoofguard(client),
                output_tunnel(&node_ip(nodes, "n2", false)?),
            ],
        ),
        receiver("n2", vec![received(), output("Delivered")]),
    ])
}

/// A live Traceflow resource (Antrea's CRD JSON) through the lab's Kubernetes API, with ping
/// traffic client → peer: its `.status` once terminal.
async fn live_resource(kubeconfig: &Path, api: &mut Api) -> Result<(), String> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let pods = api.wait_pods("c1", 10).await?;
    let nodes = api.nodes("c1").await?;
    let (client, peer) = (
        pod_ip(&pods, "default/client", false)?,
        pod_ip(&pods, "default/peer", false)?,
    );
    let want = client_n1_to_n2(&client, &nodes)?;
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| format!("kubeconfig: {e}"))?;
    let kcfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("kubeconfig: {e}"))?;
    let kclient = kube::Client::try_from(kcfg).map_err(|e| format!("kube client: {e}"))?;
    let ar = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "crd.traceflow.io",
        "v1beta1",
        "Traceflow",
    ));
    let tfs: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(kclient, &ar);
    let tf = kube::api::DynamicObject::new("live-cr", &ar).data(serde_json::json!({"spec": {
        "source": {"namespace": "default", "pod": "client"},
        "destination": {"namespace": "default", "pod": "peer"},
        "packet": {"ipHeader": {"protocol": 1}},
        "liveTraffic": true,
        "timeout": 30,
    }}));
    tfs.create(&kube::api::PostParams::default(), &tf)
        .await
        .map_err(|e| format!("create Traceflow live-cr: {e}"))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let status = loop {
        let got = tfs
            .get("live-cr")
            .await
            .map_err(|e| format!("get Traceflow live-cr: {e}"))?;
        let status = got.data.get("status").cloned().unwrap_or(Value::Null);
        if matches!(status["phase"].as_str(), Some("Succeeded" | "Failed")) {
            break status;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("live-cr not terminal after 40s: {status:#}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let fail = |why: String| Err(format!("live Traceflow resource: {why}\n{status:#}"));
    if status["phase"] != "Succeeded" {
        return fail("not Succeeded".into());
    }
    if status["dataplaneTag"].as_u64().is_none_or(|t| t == 0) {
        return fail("no dataplaneTag".into());
    }
    if let Err(e) = check_results(&status["results"], &want) {
        return fail(e);
    }
    let captured = serde_json::json!({"srcIP": client, "dstIP": peer, "ipHeader": {"protocol": 1}});
    if !contains(&status["capturedPacket"], &captured) {
        return fail(format!("capturedPacket, want at least {captured}"));
    }
    Ok(())
}

#[test]
fn live_traffic_traces_report_the_first_new_connection_with_its_packet() {
    require_lab_prerequisites();
    require_binaries();
    let mut lab = Lab::new("live");
    let cfg = common::trace::up_with_config(&mut lab, &topology("policies.yaml"));
    let rt = runtime();
    let result = rt.block_on(Api::connect(&cfg)).and_then(|api| {
        let mut failures = run_cases(&rt, &cfg, &lab, &api)?;
        let kubeconfig = lab.dir.join("clusters/c1/kubeconfig");
        let peer = rt
            .block_on(api.clone().wait_pods("c1", 10))
            .and_then(|pods| pod_ip(&pods, "default/peer", false))?;
        let (resource, problems) = with_traffic(&lab, &ping("client", &peer), || {
            rt.block_on(live_resource(&kubeconfig, &mut api.clone()))
        });
        failures.extend(problems);
        if let Err(e) = resource {
            failures.push(e);
        }
        if let Err(e) = rt.block_on(injected_beside_live(&api)) {
            failures.push(format!("injected beside live: {e}"));
        }
        if let Err(e) = rt.block_on(tag_space(&api)) {
            failures.push(format!("tag space: {e}"));
        }
        Ok(failures)
    });
    drop(rt);
    let failures = match result {
        Ok(f) => f,
        Err(e) => vec![e],
    };
    if !failures.is_empty() {
        panic!(
            "{} failure(s):\n{}\n{}",
            failures.len(),
            failures.join("\n---\n"),
            lab.dump()
        );
    }
    let down = lab.down();
    assert!(down.contains("is down"), "{down}");
    lab.assert_gone();
}
