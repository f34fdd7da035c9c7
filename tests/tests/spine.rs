//! The spine, end to end: `traceflow-lab up` of one Node with three Pods (real OVS, real
//! manager, adapter, agent, Kubernetes API), `tfctl traceflow` from p0 to p1, observations from
//! real packet-ins, then `down` leaving no namespace or process.
//!
//! Needs root, Open vSwitch and the workspace's binaries (`cargo build --workspace --bins`);
//! fails loudly without them, never skips.

mod common;

use common::{Lab, require_lab_prerequisites, text, topology};
use serde_json::Value;

/// `(component, componentInfo, action)` of each observation of a NodeResult.
fn observations(result: &Value) -> Vec<(String, String, String)> {
    let s = |o: &Value, k: &str| o.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    result
        .get("observations")
        .and_then(Value::as_array)
        .map(|obs| {
            obs.iter()
                .map(|o| (s(o, "component"), s(o, "componentInfo"), s(o, "action")))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn spine_trace_p0_to_p1_on_one_node() {
    require_lab_prerequisites();
    common::trace::require_binaries();
    let mut lab = Lab::new("sp");
    let out = lab.up(&topology("one-node.yaml"), &["--ready-timeout", "60s"]);
    let last = out.lines().last().unwrap_or_default().to_string();
    let cfg = last
        .strip_prefix("export TFCTL_CONFIG=")
        .unwrap_or_else(|| {
            panic!("last stdout line of up is not `export TFCTL_CONFIG=...`: {out}")
        });
    assert!(std::path::Path::new(cfg).is_file(), "{cfg} missing");

    let trace = common::trace::tfctl(
        std::path::Path::new(&cfg),
        &[
            "traceflow",
            "--cluster",
            "c1",
            "-S",
            "default/p0",
            "-D",
            "default/p1",
            "-o",
            "json",
        ],
    );
    let dump = || lab.dump();
    assert!(
        trace.status.success(),
        "tfctl failed: {}\n{}",
        text(&trace),
        dump()
    );
    let v: Value = match serde_json::from_slice(&trace.stdout) {
        Ok(v) => v,
        Err(e) => panic!(
            "tfctl -o json printed no JSON ({e}): {}\n{}",
            text(&trace),
            dump()
        ),
    };
    let phase = v
        .get("phase")
        .or_else(|| v.pointer("/status/phase"))
        .and_then(Value::as_str)
        .unwrap_or("");
    assert_eq!(phase, "Succeeded", "trace: {v:#}\n{}", dump());
    let results = v
        .get("results")
        .or_else(|| v.pointer("/status/results"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    assert_eq!(results.len(), 1, "one Node, one result: {v:#}");
    let r = &results[0];
    assert_eq!(r.get("node").and_then(Value::as_str), Some("n1"), "{r:#}");
    assert_eq!(
        r.get("role").and_then(Value::as_str),
        Some("sender"),
        "{r:#}"
    );
    let obs = observations(r);
    let want = vec![
        (
            "SpoofGuard".to_string(),
            String::new(),
            "Forwarded".to_string(),
        ),
        (
            "Forwarding".to_string(),
            "Output".to_string(),
            "Delivered".to_string(),
        ),
    ];
    assert_eq!(obs, want, "observations: {r:#}\n{}", dump());
    let src_pod_ip = r
        .pointer("/observations/0/srcPodIP")
        .and_then(Value::as_str);
    assert_eq!(src_pod_ip, Some("10.10.0.2"), "{r:#}");

    let down = lab.down();
    assert!(down.contains("is down"), "{down}");
    lab.assert_gone();
}

/// The second entry point: a `crd.traceflow.io/v1beta1` Traceflow created through the lab's
/// Kubernetes API (as `kubectl create -f tf.yaml` would) is run by the adapter, which writes
/// its `.status`.
#[test]
fn crd_traceflow_created_in_the_cluster_gets_status_from_the_adapter() {
    require_lab_prerequisites();
    let mut lab = Lab::new("crd");
    lab.up(&topology("one-node.yaml"), &["--ready-timeout", "60s"]);
    let kubeconfig = lab.dir.join("clusters/c1/kubeconfig");
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => panic!("tokio runtime: {e}"),
    };
    let result: Result<Value, String> = rt.block_on(async {
        use kube::{
            Api,
            api::{ApiResource, DynamicObject, GroupVersionKind, PostParams},
            config::{KubeConfigOptions, Kubeconfig},
        };
        let kc = Kubeconfig::read_from(&kubeconfig).map_err(|e| e.to_string())?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        let client = kube::Client::try_from(cfg).map_err(|e| e.to_string())?;
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
            "crd.traceflow.io",
            "v1beta1",
            "Traceflow",
        ));
        let api: Api<DynamicObject> = Api::all_with(client, &ar);
        let tf = DynamicObject::new("p0-to-p1-crd", &ar).data(serde_json::json!({
            "spec": {"source": {"namespace": "default", "pod": "p0"},
                     "destination": {"namespace": "default", "pod": "p1"},
                     "packet": {"ipHeader": {"protocol": 1}}}
        }));
        api.create(&PostParams::default(), &tf)
            .await
            .map_err(|e| e.to_string())?;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(40);
        loop {
            let got = api.get("p0-to-p1-crd").await.map_err(|e| e.to_string())?;
            let phase = got
                .data
                .pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or("");
            if phase == "Succeeded" || phase == "Failed" {
                return Ok(got.data);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("no terminal phase after 40s: {:#}", got.data));
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    let data = match result {
        Ok(d) => d,
        Err(e) => panic!("Traceflow CR: {e}\n{}", lab.dump()),
    };
    assert_eq!(
        data.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded"),
        "{data:#}\n{}",
        lab.dump()
    );
    let results = data
        .pointer("/status/results")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    assert_eq!(results.len(), 1, "{data:#}");
    let obs = observations(&results[0]);
    assert_eq!(
        obs.first().map(|o| (o.0.as_str(), o.2.as_str())),
        Some(("SpoofGuard", "Forwarded")),
        "{data:#}"
    );
    lab.down();
    lab.assert_gone();
}
