//! A cluster whose inventory is far over gRPC's 4 MiB message limit comes Up with all of it:
//! 10,000 hostNetwork Pods with 10 long labels each (about 8 MB encoded; hostNetwork Pods need
//! no network namespaces, and long labels reach the size with fewer objects, so the lab stays
//! quick). The adapter sends the sync in parts; before,
//! the manager refused the one big message and the cluster stayed Down forever.
//!
//! Needs root, Open vSwitch and `cargo build --workspace --bins`; fails loudly, never skips.

mod common;

use std::fmt::Write as _;

use common::trace::{Api, require_binaries, runtime, up_with_config};
use common::{Lab, require_lab_prerequisites};
use prost::Message as _;
use traceflow_proto::v1 as pb;

const PODS: usize = 10_000;

/// One Node and `PODS` hostNetwork Pods, each with 10 labels of about 60 bytes.
fn topology() -> String {
    let mut y = String::from(
        "apiVersion: lab.traceflow.io/v1\nkind: LabCluster\nname: c1\nipFamilies: [IPv4]\n\
         serviceCIDRs: [10.96.0.0/16]\nnodes:\n- name: n1\n  podCIDRs: [10.70.0.0/24]\n",
    );
    for i in 0..PODS {
        let labels: Vec<String> = (0..10)
            .map(|l| format!("example.com/label-{l}: value-{l}-{i:05}-{:-<40}", ""))
            .collect();
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: host-pod-{i:05}, namespace: default, \
             labels: {{{}}}}}\nspec: {{nodeName: n1, hostNetwork: true}}\n",
            labels.join(", ")
        );
    }
    y
}

#[test]
fn a_cluster_of_10k_pods_with_8mb_of_inventory_comes_up_with_all_of_it() {
    require_lab_prerequisites();
    require_binaries();
    let mut lab = Lab::new("big");
    let file = std::env::temp_dir().join(format!("{}.yaml", lab.prefix));
    if let Err(e) = std::fs::write(&file, topology()) {
        panic!("cannot write {}: {e}", file.display());
    }
    // `up` returns once every cluster is Up.
    let cfg = up_with_config(&mut lab, &file);
    let _ = std::fs::remove_file(&file);
    runtime().block_on(async {
        let mut api = match Api::connect(&cfg).await {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let cluster = loop {
            let c = api
                .clusters
                .get_cluster(pb::GetClusterRequest { name: "c1".into() })
                .await
                .map(|r| r.into_inner());
            match c {
                Ok(c)
                    if c.inventory
                        .as_ref()
                        .is_some_and(|i| i.pods as usize == PODS) =>
                {
                    break c;
                }
                _ if std::time::Instant::now() > deadline => {
                    panic!("c1 never held {PODS} Pods: {c:?}\n{}", lab.dump())
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
            }
        };
        assert_eq!(cluster.health, pb::ClusterHealth::Up as i32, "{cluster:?}");
        assert_eq!(cluster.reason, "", "{cluster:?}");
        // What it synced really is over the limit one message may carry.
        let pods = api.wait_pods("c1", 1).await.unwrap_or_default();
        let size: usize =
            pods.iter().map(|p| p.encoded_len()).sum::<usize>() * PODS / pods.len().max(1);
        println!("{PODS} Pods synced, about {size} bytes of inventory");
        assert!(
            size > 4 << 20,
            "inventory of about {size} bytes is not over 4 MiB"
        );
    });
    lab.down();
}
