//! The single-cluster cases of issue 4 that the stack runs today, on one dual-stack Node
//! (tests/topologies/one-node-dual.yaml), each through tfctl's JSON and the gRPC API with its
//! full ordered observation list: intra-Node Pod→Pod with ICMP, TCP, UDP and SCTP, to the Pod's name
//! and to its IP, to the local gateway IP (Delivered), to an external documentation address
//! (ForwardedOutOfNetwork), to a Service and hairpin to a Service (LB), the IPv6 version of
//! each; a destination Pod that does not exist, both families
//! (fails at once with Antrea's reason); Antrea's admission errors (reference §2.2); and the
//! Traceflow-resource path (a CR created through the lab's Kubernetes API, its `.status` held
//! to the same full lists and reasons).
//!
//! One lab for the whole file; the cases run in order and every failure is reported at the end.
//! Needs root, Open vSwitch and `cargo build --workspace --bins`; fails loudly, never skips.

mod common;

use std::{path::Path, time::Duration};

use common::trace::{
    Api, NodeWant, check_results, gateway_ip, output, phase, pod_ip, require_binaries,
    results_json, runtime, sender, spec, spoofguard, tfctl, tfctl_trace, to_ip, to_json, to_pod,
    up_with_config,
};
use common::{Lab, require_lab_prerequisites, text, topology};
use serde_json::{Value, json};
use traceflow_proto::v1 as pb;

/// One injected case: tfctl flags and the equivalent spec, and the terminal Output action.
struct Case {
    what: String,
    /// `-D` value and `-f` value for tfctl.
    dst_arg: String,
    flow: &'static str,
    dst: pb::Destination,
    packet: Option<pb::Packet>,
    terminal: &'static str,
    ipv6: bool,
}

fn packet(ipv6: bool, l4: &str) -> Option<pb::Packet> {
    let mut p = pb::Packet::default();
    if ipv6 {
        p.ipv6_header = Some(pb::IPv6Header::default());
    } else {
        p.ip_header = Some(pb::IpHeader::default());
    }
    let th = match l4 {
        "tcp" => pb::TransportHeader {
            tcp: Some(pb::TcpHeader {
                dst_port: 80,
                ..Default::default()
            }),
            ..Default::default()
        },
        "udp" => pb::TransportHeader {
            udp: Some(pb::UdpHeader {
                dst_port: 53,
                ..Default::default()
            }),
            ..Default::default()
        },
        "sctp" => pb::TransportHeader {
            sctp: Some(pb::SctpHeader {
                dst_port: 9000,
                ..Default::default()
            }),
            ..Default::default()
        },
        _ => return Some(p),
    };
    p.transport_header = Some(th);
    Some(p)
}

async fn cases(api: &mut Api) -> Result<Vec<Case>, String> {
    let pods = api.wait_pods("c1", 4).await?;
    let nodes = api.nodes("c1").await?;
    let n1 = nodes.first().ok_or("no Node in c1")?;
    let mut out = Vec::new();
    for ipv6 in [false, true] {
        let p1 = pod_ip(&pods, "default/p1", ipv6)?;
        let gw = gateway_ip(n1, ipv6)?;
        let external = if ipv6 { "2001:db8::10" } else { "192.0.2.10" };
        let v = if ipv6 { "IPv6" } else { "IPv4" };
        for (l4, flow) in [
            ("icmp", if ipv6 { "ipv6" } else { "" }),
            (
                "tcp",
                if ipv6 {
                    "ipv6,tcp,tcp_dst=80"
                } else {
                    "tcp,tcp_dst=80"
                },
            ),
            (
                "udp",
                if ipv6 {
                    "ipv6,udp,udp_dst=53"
                } else {
                    "udp,udp_dst=53"
                },
            ),
            // Ours: Antrea has no SCTP traces.
            (
                "sctp",
                if ipv6 {
                    "ipv6,sctp,tp_dst=9000"
                } else {
                    "sctp,sctp_dst=9000"
                },
            ),
        ] {
            out.push(Case {
                what: format!("{v} {l4} p0 -> Pod p1"),
                dst_arg: "default/p1".into(),
                flow,
                dst: to_pod("default/p1"),
                packet: packet(ipv6, l4),
                terminal: "Delivered",
                ipv6,
            });
            out.push(Case {
                what: format!("{v} {l4} p0 -> p1's IP {p1}"),
                dst_arg: p1.clone(),
                flow,
                dst: to_ip(&p1),
                packet: packet(ipv6, l4),
                terminal: "Delivered",
                ipv6,
            });
        }
        out.push(Case {
            what: format!("{v} p0 -> local gateway {gw}"),
            dst_arg: gw.clone(),
            flow: if ipv6 { "ipv6" } else { "" },
            dst: to_ip(&gw),
            packet: packet(ipv6, "icmp"),
            terminal: "Delivered",
            ipv6,
        });
        out.push(Case {
            what: format!("{v} tcp p0 -> external {external}"),
            dst_arg: external.into(),
            flow: if ipv6 {
                "ipv6,tcp,tcp_dst=80"
            } else {
                "tcp,tcp_dst=80"
            },
            dst: to_ip(external),
            packet: packet(ipv6, "tcp"),
            terminal: "ForwardedOutOfNetwork",
            ipv6,
        });
    }
    Ok(out)
}

async fn injected(cfg: &Path, api: &mut Api, failures: &mut Vec<String>) -> Result<(), String> {
    let pods = api.wait_pods("c1", 4).await?;
    for case in cases(api).await? {
        let src = pod_ip(&pods, "default/p0", case.ipv6)?;
        let want = [sender("n1", vec![spoofguard(&src), output(case.terminal)])];
        // gRPC.
        match api
            .run(
                "c1",
                spec("default/p0", case.dst.clone(), case.packet.clone()),
            )
            .await
        {
            Ok(t) if phase(&t) == "Succeeded" => {
                if let Err(e) = check_results(&results_json(&t), &want) {
                    failures.push(format!("{} via gRPC: {e}", case.what));
                }
            }
            Ok(t) => failures.push(format!("{} via gRPC: {:#}", case.what, to_json(&t))),
            Err(e) => failures.push(format!("{} via gRPC: {e}", case.what)),
        }
        // tfctl.
        let mut args = vec!["-S", "default/p0", "-D", case.dst_arg.as_str()];
        if !case.flow.is_empty() {
            args.extend(["-f", case.flow]);
        }
        match tfctl_trace(cfg, "c1", &args) {
            Ok((out, v)) if out.status.success() && v["phase"] == "Succeeded" => {
                if let Err(e) = check_results(&v["results"], &want) {
                    failures.push(format!("{} via tfctl: {e}", case.what));
                }
            }
            Ok((out, v)) => {
                failures.push(format!("{} via tfctl: {v:#}\n{}", case.what, text(&out)))
            }
            Err(e) => failures.push(format!("{} via tfctl: {e}", case.what)),
        }
    }
    Ok(())
}

/// Pod → Service `solo` (one endpoint, p2) from p0, and hairpin from p2 itself, both families:
/// `LB Forwarded` with the endpoint's IP and Pod, plus the gateway as `translatedSrcIP` on
/// hairpin.
async fn services(cfg: &Path, api: &mut Api, failures: &mut Vec<String>) -> Result<(), String> {
    let pods = api.wait_pods("c1", 4).await?;
    let nodes = api.nodes("c1").await?;
    let n1 = nodes.first().ok_or("no Node in c1")?;
    for ipv6 in [false, true] {
        let v = if ipv6 { "IPv6" } else { "IPv4" };
        let p2 = pod_ip(&pods, "default/p2", ipv6)?;
        let gw = gateway_ip(n1, ipv6)?;
        for (src, hairpin) in [("default/p0", false), ("default/p2", true)] {
            let what = format!(
                "{v} {src} -> Service solo{}",
                if hairpin { " (hairpin)" } else { "" }
            );
            let mut lb = serde_json::json!({"component": "LB", "action": "Forwarded",
                                            "pod": "default/p2", "translatedDstIP": p2});
            if hairpin {
                lb["translatedSrcIP"] = gw.clone().into();
            }
            let src_ip = pod_ip(&pods, src, ipv6)?;
            let want = [sender(
                "n1",
                vec![spoofguard(&src_ip), lb, output("Delivered")],
            )];
            let dst = pb::Destination {
                namespace: "default".into(),
                service: "solo".into(),
                ..Default::default()
            };
            let packet = ipv6.then(|| pb::Packet {
                ipv6_header: Some(pb::IPv6Header::default()),
                ..Default::default()
            });
            match api.run("c1", spec(src, dst, packet)).await {
                Ok(t) if phase(&t) == "Succeeded" => {
                    if let Err(e) = check_results(&results_json(&t), &want) {
                        failures.push(format!("{what} via gRPC: {e}"));
                    }
                }
                Ok(t) => failures.push(format!("{what} via gRPC: {:#}", to_json(&t))),
                Err(e) => failures.push(format!("{what} via gRPC: {e}")),
            }
            let mut args = vec!["-S", src, "-D", "default/solo"];
            if ipv6 {
                args.extend(["-f", "ipv6"]);
            }
            match tfctl_trace(cfg, "c1", &args) {
                Ok((out, v)) if out.status.success() && v["phase"] == "Succeeded" => {
                    if let Err(e) = check_results(&v["results"], &want) {
                        failures.push(format!("{what} via tfctl: {e}"));
                    }
                }
                Ok((out, v)) => failures.push(format!("{what} via tfctl: {v:#}\n{}", text(&out))),
                Err(e) => failures.push(format!("{what} via tfctl: {e}")),
            }
        }
    }
    Ok(())
}

/// A destination Pod that does not exist, IPv4 and IPv6: Failed at once with Antrea's agent
/// reason.
async fn missing_destination(cfg: &Path, api: &mut Api, failures: &mut Vec<String>) {
    for ipv6 in [false, true] {
        missing_destination_in(cfg, api, ipv6, failures).await;
    }
}

async fn missing_destination_in(cfg: &Path, api: &mut Api, ipv6: bool, failures: &mut Vec<String>) {
    let v = if ipv6 { "IPv6" } else { "IPv4" };
    let reason = "Node: n1, error: failed to get the destination Pod: pods \"ghost\" not found";
    let packet = ipv6.then(|| pb::Packet {
        ipv6_header: Some(pb::IPv6Header::default()),
        ..Default::default()
    });
    match api
        .run("c1", spec("default/p0", to_pod("default/ghost"), packet))
        .await
    {
        Ok(t) => {
            let s = t.status.clone().unwrap_or_default();
            let took = Duration::from_micros(
                u64::try_from(s.end_time_micros - t.creation_time_micros).unwrap_or(u64::MAX),
            );
            if phase(&t) != "Failed"
                || s.reason != reason
                || !s.results.is_empty()
                || took > Duration::from_secs(2)
            {
                failures.push(format!(
                    "{v} ghost destination via gRPC (want Failed {reason:?}, no results, \
                     within 2s; took {took:?}): {:#}",
                    to_json(&t)
                ));
            }
        }
        Err(e) => failures.push(format!("{v} ghost destination via gRPC: {e}")),
    }
    let mut args = vec!["-S", "default/p0", "-D", "default/ghost"];
    if ipv6 {
        args.extend(["-f", "ipv6"]);
    }
    match tfctl_trace(cfg, "c1", &args) {
        Ok((out, j)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success()
                || j["phase"] != "Failed"
                || j["reason"] != reason
                || j["results"].as_array().is_some_and(|r| !r.is_empty())
                || !stderr.contains(&format!("failed: {reason}"))
            {
                failures.push(format!(
                    "{v} ghost destination via tfctl: {j:#}\n{}",
                    text(&out)
                ));
            }
        }
        Err(e) => failures.push(format!("{v} ghost destination via tfctl: {e}")),
    }
}

/// Creates the Traceflow resource `name` with `spec` through the lab's Kubernetes API and
/// polls it until its `.status.phase` is terminal: the status.
async fn run_resource(
    api: &kube::Api<kube::api::DynamicObject>,
    ar: &kube::api::ApiResource,
    name: &str,
    spec: Value,
) -> Result<Value, String> {
    let tf = kube::api::DynamicObject::new(name, ar).data(json!({ "spec": spec }));
    api.create(&kube::api::PostParams::default(), &tf)
        .await
        .map_err(|e| format!("create Traceflow {name}: {e}"))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = api
            .get(name)
            .await
            .map_err(|e| format!("get Traceflow {name}: {e}"))?;
        let status = got.data.get("status").cloned().unwrap_or(Value::Null);
        if matches!(status["phase"].as_str(), Some("Succeeded" | "Failed")) {
            return Ok(status);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "Traceflow {name}: not terminal after 30s: {status:#}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The Traceflow-resource path (reference §1, the adapter's second entry point): Traceflows
/// created through the lab's Kubernetes API, as `kubectl create -f tf.yaml` would, written in
/// Antrea's CRD JSON (`ipHeader`, `ipv6Header`, `transportHeader`, ...). The adapter runs each
/// and writes `.status`, whose `results` must be the full ordered list per Node, as through
/// the manager: Pod, Pod IP, Service with LB (the `pod` filled), hairpin, the gateway, an
/// external address, both families; a missing destination Pod and Antrea's admission rules end
/// in `Failed` with Antrea's reason (there is no webhook to refuse the object).
async fn traceflow_resources(
    kubeconfig: &Path,
    api: &mut Api,
    failures: &mut Vec<String>,
) -> Result<(), String> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let pods = api.wait_pods("c1", 4).await?;
    let nodes = api.nodes("c1").await?;
    let n1 = nodes.first().ok_or("no Node in c1")?;
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| format!("kubeconfig: {e}"))?;
    let kcfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("kubeconfig: {e}"))?;
    let client = kube::Client::try_from(kcfg).map_err(|e| format!("kube client: {e}"))?;
    let ar = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "crd.traceflow.io",
        "v1beta1",
        "Traceflow",
    ));
    let tfs: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(client, &ar);

    let p0 = |ipv6| pod_ip(&pods, "default/p0", ipv6);
    let p2 = |ipv6| pod_ip(&pods, "default/p2", ipv6);
    let src = |ns: &str, pod: &str| json!({"namespace": ns, "pod": pod});
    let lb = |ipv6: bool, hairpin: bool| -> Result<Value, String> {
        let mut o = json!({"component": "LB", "action": "Forwarded", "pod": "default/p2",
                           "translatedDstIP": p2(ipv6)?});
        if hairpin {
            o["translatedSrcIP"] = gateway_ip(n1, ipv6)?.into();
        }
        Ok(o)
    };
    let solo = json!({"namespace": "default", "service": "solo"});
    let ok: Vec<(&str, Value, Vec<NodeWant>)> = vec![
        (
            "cr-icmp-pod",
            json!({"source": src("default", "p0"),
                   "destination": {"namespace": "default", "pod": "p1"},
                   "packet": {"ipHeader": {"protocol": 1}}}),
            vec![sender(
                "n1",
                vec![spoofguard(&p0(false)?), output("Delivered")],
            )],
        ),
        (
            "cr-v6-tcp-pod-ip",
            json!({"source": src("default", "p0"),
                   "destination": {"ip": pod_ip(&pods, "default/p1", true)?},
                   "packet": {"ipv6Header": {},
                              "transportHeader": {"tcp": {"dstPort": 80, "flags": 2}}}}),
            vec![sender(
                "n1",
                vec![spoofguard(&p0(true)?), output("Delivered")],
            )],
        ),
        (
            "cr-udp-external",
            json!({"source": src("default", "p0"),
                   "destination": {"ip": "192.0.2.10"},
                   "packet": {"ipHeader": {"protocol": 17},
                              "transportHeader": {"udp": {"dstPort": 53}}}}),
            vec![sender(
                "n1",
                vec![spoofguard(&p0(false)?), output("ForwardedOutOfNetwork")],
            )],
        ),
        (
            "cr-v6-gateway",
            json!({"source": src("default", "p0"),
                   "destination": {"ip": gateway_ip(n1, true)?},
                   "packet": {"ipv6Header": {"nextHeader": 58}}}),
            vec![sender(
                "n1",
                vec![spoofguard(&p0(true)?), output("Delivered")],
            )],
        ),
        (
            "cr-service",
            json!({"source": src("default", "p0"), "destination": solo.clone()}),
            vec![sender(
                "n1",
                vec![
                    spoofguard(&p0(false)?),
                    lb(false, false)?,
                    output("Delivered"),
                ],
            )],
        ),
        (
            "cr-v6-hairpin",
            json!({"source": src("default", "p2"), "destination": solo.clone(),
                   "packet": {"ipv6Header": {}}}),
            vec![sender(
                "n1",
                vec![spoofguard(&p2(true)?), lb(true, true)?, output("Delivered")],
            )],
        ),
    ];
    for (name, spec, want) in ok {
        match run_resource(&tfs, &ar, name, spec).await {
            Ok(st) if st["phase"] == "Succeeded" => {
                if let Err(e) = check_results(&st["results"], &want) {
                    failures.push(format!("Traceflow resource {name}: {e}"));
                }
            }
            Ok(st) => failures.push(format!("Traceflow resource {name}: {st:#}")),
            Err(e) => failures.push(e),
        }
    }

    let failed: Vec<(&str, Value, String)> = vec![
        (
            "cr-ghost",
            json!({"source": src("default", "p0"),
                   "destination": {"namespace": "default", "pod": "ghost"}}),
            "Node: n1, error: failed to get the destination Pod: pods \"ghost\" not found".into(),
        ),
        (
            "cr-adm-1",
            json!({"destination": {"namespace": "default", "pod": "p1"}}),
            "spec.source.pod: source Pod must be specified in non-live-traffic Traceflow".into(),
        ),
        (
            "cr-adm-2",
            json!({"source": src("default", "nope"),
                   "destination": {"namespace": "default", "pod": "p1"}}),
            "spec.source.pod: requested source Pod default/nope not found".into(),
        ),
        (
            "cr-adm-3",
            json!({"source": src("kube-system", "host-agent"),
                   "destination": {"namespace": "default", "pod": "p1"}}),
            "spec.source.pod: using hostNetwork Pod as source in non-live-traffic Traceflow is not supported".into(),
        ),
        (
            "cr-adm-4",
            json!({"source": {"ip": "10.10.0.2"}, "liveTraffic": true,
                   "destination": {"namespace": "default", "service": "web"}}),
            "spec.source.pod: Traceflow cr-adm-4 has neither source nor destination Pod specified"
                .into(),
        ),
        // A rule the CRD schema cannot express, from the manager's API (one TraceSpec
        // conversion): without an admission webhook the resource ends Failed with the API's
        // message, naming the field.
        (
            "cr-pod-and-ip",
            json!({"source": src("default", "p0"),
                   "destination": {"namespace": "default", "pod": "p1", "ip": "10.10.0.3"}}),
            "spec.destination: pod, service and ip are mutually exclusive; set only one".into(),
        ),
    ];
    for (name, spec, reason) in failed {
        match run_resource(&tfs, &ar, name, spec).await {
            Ok(st)
                if st["phase"] == "Failed"
                    && st["reason"] == reason.as_str()
                    && st["results"].as_array().is_none_or(Vec::is_empty) => {}
            Ok(st) => failures.push(format!(
                "Traceflow resource {name}: want Failed {reason:?}, no results: {st:#}"
            )),
            Err(e) => failures.push(e),
        }
    }
    // Rules the CRD schema expresses are refused when the resource is created (as a real API
    // server with this CRD does), with a 422 naming the field; nothing runs.
    let refused: Vec<(&str, Value, &str)> = vec![
        (
            "cr-timeout",
            json!({"source": src("default", "p0"), "timeout": 9999,
                   "destination": {"namespace": "default", "pod": "p1"}}),
            "spec.timeout",
        ),
        (
            "cr-tcp-port",
            json!({"source": src("default", "p0"),
                   "destination": {"namespace": "default", "pod": "p1"},
                   "packet": {"transportHeader": {"tcp": {"dstPort": 70000}}}}),
            "spec.packet.transportHeader.tcp.dstPort",
        ),
    ];
    for (name, spec, field) in refused {
        match run_resource(&tfs, &ar, name, spec).await {
            Err(e) if e.contains("422") && e.contains(&format!("{field}: Invalid value")) => {}
            other => failures.push(format!(
                "Traceflow resource {name}: want a 422 naming {field}, got {other:?}"
            )),
        }
    }
    Ok(())
}

/// Antrea's admission rules (reference §2.2). The manager answers them (INVALID_ARGUMENT naming
/// the field, Antrea's message) once its inventory of the cluster is synced, which
/// `wait_pods` ensured; tfctl refuses rule 1 itself with antctl's messages.
async fn admission(cfg: &Path, api: &mut Api, failures: &mut Vec<String>) {
    let live_ip_to_service = pb::TraceflowSpec {
        source: Some(pb::Source {
            ip: "10.10.0.2".into(),
            ..Default::default()
        }),
        destination: Some(pb::Destination {
            namespace: "default".into(),
            service: "web".into(),
            ..Default::default()
        }),
        live_traffic: true,
        ..Default::default()
    };
    let grpc: [(&str, pb::TraceflowSpec, &str, String); 4] = [
        (
            "rule 1: no source Pod",
            pb::TraceflowSpec {
                destination: Some(to_pod("default/p1")),
                ..Default::default()
            },
            "adm-1",
            "spec.source.pod: source Pod must be specified in non-live-traffic Traceflow".into(),
        ),
        (
            "rule 2: source Pod not found",
            spec("default/nope", to_pod("default/p1"), None),
            "adm-2",
            "spec.source.pod: requested source Pod default/nope not found".into(),
        ),
        (
            "rule 3: hostNetwork source",
            spec("kube-system/host-agent", to_pod("default/p1"), None),
            "adm-3",
            "spec.source.pod: using hostNetwork Pod as source in non-live-traffic Traceflow \
             is not supported"
                .into(),
        ),
        (
            "rule 4: neither source nor destination Pod",
            live_ip_to_service,
            "adm-4",
            "spec.source.pod: Traceflow adm-4 has neither source nor destination Pod specified"
                .into(),
        ),
    ];
    for (what, s, name, want) in grpc {
        let req = pb::CreateTraceflowRequest {
            cluster: "c1".into(),
            spec: Some(s),
            name: name.into(),
        };
        match api.traces.create_traceflow(req).await {
            Err(st) if st.code() == tonic::Code::InvalidArgument && st.message() == want => {}
            Err(st) => failures.push(format!(
                "{what} via gRPC: {:?} {:?}, want InvalidArgument {want:?}",
                st.code(),
                st.message()
            )),
            Ok(t) => failures.push(format!(
                "{what} via gRPC: created {:#}",
                to_json(t.get_ref())
            )),
        }
    }

    // tfctl: exit 2 (invalid spec), nothing on stdout, `Error: <message>` on stderr.
    let tf: [(&str, Vec<&str>, String); 5] = [
        (
            "rule 1: no -S",
            vec!["-D", "default/p1"],
            "Error: Please provide source".into(),
        ),
        (
            "rule 1: an IP as source without -L",
            vec!["-S", "10.10.0.2", "-D", "default/p1"],
            "Error: source must be a Pod if not a live-traffic Traceflow".into(),
        ),
        (
            "rule 2: source Pod not found",
            vec!["-S", "default/nope", "-D", "default/p1"],
            "spec.source.pod: requested source Pod default/nope not found (InvalidArgument)".into(),
        ),
        (
            "rule 3: hostNetwork source",
            vec!["-S", "kube-system/host-agent", "-D", "default/p1"],
            "spec.source.pod: using hostNetwork Pod as source in non-live-traffic Traceflow \
             is not supported (InvalidArgument)"
                .into(),
        ),
        (
            "rule 4: neither source nor destination Pod",
            vec![
                "-L",
                "-S",
                "10.10.0.2",
                "-D",
                "default/web",
                "--dst-service",
            ],
            // tfctl runs the manager's own spec conversion before sending anything.
            "invalid trace: spec.source.pod: Traceflow 10.10.0.2-to-default-web-".into(),
        ),
    ];
    for (what, args, want) in tf {
        let mut all = vec!["traceflow", "--cluster", "c1", "-o", "json"];
        all.extend(args);
        let out = tfctl(cfg, &all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(2) || !out.stdout.is_empty() || !stderr.contains(&want) {
            failures.push(format!(
                "{what} via tfctl: want exit 2, no stdout, stderr containing {want:?}: {}",
                text(&out)
            ));
        }
    }
}

#[test]
fn single_cluster_trace_cases_with_full_observations() {
    require_lab_prerequisites();
    require_binaries();
    let mut lab = Lab::new("tr");
    let cfg = up_with_config(&mut lab, &topology("one-node-dual.yaml"));
    let kubeconfig = lab.dir.join("clusters/c1/kubeconfig");
    let rt = runtime();
    let result: Result<Vec<String>, String> = rt.block_on(async {
        let mut api = Api::connect(&cfg).await?;
        let mut failures = Vec::new();
        injected(&cfg, &mut api, &mut failures).await?;
        services(&cfg, &mut api, &mut failures).await?;
        missing_destination(&cfg, &mut api, &mut failures).await;
        admission(&cfg, &mut api, &mut failures).await;
        traceflow_resources(&kubeconfig, &mut api, &mut failures).await?;
        Ok(failures)
    });
    drop(rt);
    lab.report(result);
    let down = lab.down();
    assert!(down.contains("is down"), "{down}");
    lab.assert_gone();
}
