//! Two clusters of two Nodes under one manager (tests/topologies/two-clusters.yaml): traces
//! in both clusters at once, through tfctl's JSON and the gRPC API, each with its full ordered
//! observation list; the manager's history per cluster; and an inter-Node trace over Geneve.
//!
//! Needs root, Open vSwitch and `cargo build --workspace --bins`; fails loudly, never skips.

mod common;

use std::path::Path;

use common::trace::{
    Api, check_results, output, output_tunnel, pod_ip, received, receiver, require_binaries,
    results_json, runtime, sender, spec, spoofguard, tfctl_trace, to_pod, up_with_config,
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
    with_lab("mci", async |cfg, api| inter_node(cfg, api).await);
}
