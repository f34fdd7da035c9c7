//! Health transitions and inventory listings.

use std::time::Duration;

use traceflow_proto::v1 as pb;

use super::common::*;

async fn health(m: &Manager, name: &str) -> Result<pb::Cluster, Error> {
    Ok(clusters(m.admin().await?)
        .get_cluster(pb::GetClusterRequest { name: name.into() })
        .await?
        .into_inner())
}

#[tokio::test]
async fn health_up_degraded_down_and_back() -> TestResult {
    let m = Manager::start().await?; // heartbeat interval 1s
    let (cert, key) = m.register("alpha").await?;
    assert_eq!(
        health(&m, "alpha").await?.health,
        pb::ClusterHealth::Down as i32
    );
    let adapter = FakeAdapter::attach_quiet(&m, &cert, &key).await?;
    adapter.heartbeat(2, 2).await?;
    eventually("up", || async {
        health(&m, "alpha")
            .await
            .is_ok_and(|c| c.health == pb::ClusterHealth::Up as i32)
    })
    .await?;
    adapter.heartbeat(1, 2).await?;
    eventually("degraded", || async {
        health(&m, "alpha").await.is_ok_and(|c| {
            c.health == pb::ClusterHealth::Degraded as i32
                && c.connected_agents == 1
                && c.expected_agents == 2
        })
    })
    .await?;
    // Silence for more than three intervals: Down, and new traces fail at once.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let c = health(&m, "alpha").await?;
    assert_eq!(c.health, pb::ClusterHealth::Down as i32);
    let tr = traces(m.admin().await?)
        .create_traceflow(create_req("alpha"))
        .await?
        .into_inner();
    assert_eq!(phase_of(&tr), pb::TraceflowPhase::Failed);
    let reason = tr.status.map(|s| s.reason).unwrap_or_default();
    assert!(
        reason.starts_with("cluster alpha is down: no heartbeat"),
        "{reason}"
    );
    // Heard again: back up.
    adapter.heartbeat(2, 2).await?;
    eventually("up again", || async {
        health(&m, "alpha")
            .await
            .is_ok_and(|c| c.health == pb::ClusterHealth::Up as i32)
    })
    .await?;
    // Stream gone: Down.
    drop(adapter);
    eventually("down after disconnect", || async {
        health(&m, "alpha")
            .await
            .is_ok_and(|c| c.health == pb::ClusterHealth::Down as i32)
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn inventory_listings_filter_and_page() -> TestResult {
    let m = Manager::start().await?;
    let (cert, key) = m.register("alpha").await?;
    let adapter = FakeAdapter::attach(&m, &cert, &key).await?;
    let pods: Vec<_> = (0..25)
        .map(|i| pb::InventoryPod {
            namespace: if i % 2 == 0 {
                "even".into()
            } else {
                "odd".into()
            },
            name: format!("p{i:02}"),
            node: format!("n{}", i % 3),
            ..Default::default()
        })
        .collect();
    adapter
        .send(pb::adapter_message::Kind::InventorySync(pb::Inventory {
            pods,
            nodes: (0..3)
                .map(|i| pb::InventoryNode {
                    name: format!("n{i}"),
                    ..Default::default()
                })
                .collect(),
            namespaces: ["even", "odd"]
                .iter()
                .map(|n| pb::InventoryNamespace {
                    name: n.to_string(),
                    ..Default::default()
                })
                .collect(),
            services: vec![pb::InventoryService {
                namespace: "even".into(),
                name: "web".into(),
                cluster_ips: vec!["10.96.0.10".into()],
                ..Default::default()
            }],
            ..Default::default()
        }))
        .await?;
    adapter
        .send(pb::adapter_message::Kind::InventoryDelete(
            pb::InventoryDeletions {
                pods: vec!["even/p00".into()],
                ..Default::default()
            },
        ))
        .await?;
    let mut c = clusters(m.user_channel("viewer", "view").await?);
    eventually("inventory", || {
        let mut c = c.clone();
        async move {
            c.list_pods(pb::ListInventoryRequest::default())
                .await
                .is_ok_and(|r| r.into_inner().pods.len() == 24)
        }
    })
    .await?;
    let even = c
        .list_pods(pb::ListInventoryRequest {
            cluster: "alpha".into(),
            namespace: "even".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(even.pods.len(), 12);
    let n1 = c
        .list_pods(pb::ListInventoryRequest {
            node: "n1".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(n1.pods.iter().all(|p| p.node == "n1") && n1.pods.len() == 8);
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_pods(pb::ListInventoryRequest {
                page_size: 10,
                page_token: token,
                ..Default::default()
            })
            .await?
            .into_inner();
        assert!(page.pods.len() <= 10);
        seen.extend(
            page.pods
                .into_iter()
                .map(|p| format!("{}/{}", p.namespace, p.name)),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 24);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 24);
    assert_eq!(
        c.list_nodes(pb::ListInventoryRequest::default())
            .await?
            .into_inner()
            .nodes
            .len(),
        3
    );
    assert_eq!(
        c.list_namespaces(pb::ListInventoryRequest::default())
            .await?
            .into_inner()
            .namespaces
            .len(),
        2
    );
    let svcs = c
        .list_services(pb::ListInventoryRequest {
            namespace: "even".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(svcs.services.len(), 1);
    Ok(())
}

#[tokio::test]
async fn retention_deletes_only_what_it_should() -> TestResult {
    // Keep at most 3 traces; run every 200ms.
    let m = Manager::start_with(&[
        "--retention-max-count",
        "3",
        "--retention-interval",
        "200ms",
    ])
    .await?;
    // The oldest trace is in flight on a connected cluster: never deleted.
    let (cert, key) = m.register("alpha").await?;
    let mut adapter = FakeAdapter::attach(&m, &cert, &key).await?;
    adapter.heartbeat(1, 1).await?;
    m.register("beta").await?;
    let mut t = traces(m.admin().await?);
    let inflight = t
        .create_traceflow(create_req("alpha"))
        .await?
        .into_inner()
        .uid;
    adapter.expect_start().await?;
    adapter
        .update(&inflight, pb::TraceflowPhase::Running)
        .await?;
    let mut uids = Vec::new();
    for _ in 0..5 {
        // beta is not connected: each is Failed (finished) at once.
        uids.push(
            t.create_traceflow(create_req("beta"))
                .await?
                .into_inner()
                .uid,
        );
    }
    eventually("retention", || {
        let mut t = t.clone();
        async move {
            t.list_traceflows(pb::ListTraceflowsRequest::default())
                .await
                .is_ok_and(|r| r.into_inner().traceflows.len() == 4)
        }
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let left: Vec<_> = t
        .list_traceflows(pb::ListTraceflowsRequest::default())
        .await?
        .into_inner()
        .traceflows
        .into_iter()
        .map(|x| x.uid)
        .collect();
    let mut want: Vec<_> = uids.iter().rev().take(3).cloned().collect();
    want.push(inflight);
    assert_eq!(
        left, want,
        "retention must keep the newest finished and every in-flight trace"
    );
    Ok(())
}

#[tokio::test]
async fn retention_by_age() -> TestResult {
    let m = Manager::start_with(&["--retention-max-age", "2s", "--retention-interval", "200ms"])
        .await?;
    m.register("alpha").await?;
    let mut t = traces(m.admin().await?);
    let old = t
        .create_traceflow(create_req("alpha"))
        .await?
        .into_inner()
        .uid;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let young = t
        .create_traceflow(create_req("alpha"))
        .await?
        .into_inner()
        .uid;
    eventually("old one deleted", || {
        let mut t = t.clone();
        let old = old.clone();
        async move {
            t.get_traceflow(pb::GetTraceflowRequest {
                uid: old,
                name: String::new(),
            })
            .await
            .is_err_and(|s| s.code() == tonic::Code::NotFound)
        }
    })
    .await?;
    t.get_traceflow(pb::GetTraceflowRequest {
        uid: young,
        name: String::new(),
    })
    .await?;
    Ok(())
}

fn host_pods(n: usize, from: usize) -> Vec<pb::InventoryPod> {
    (from..from + n)
        .map(|i| pb::InventoryPod {
            namespace: "default".into(),
            name: format!("host-pod-{i:05}"),
            node: "n1".into(),
            labels: (0..10)
                .map(|l| {
                    (
                        format!("example.com/label-{l}"),
                        format!("value-{l}-{i:05}"),
                    )
                })
                .collect(),
            host_network: true,
            ..Default::default()
        })
        .collect()
}

#[tokio::test]
async fn a_failed_stream_shows_its_reason_until_a_sync_in_parts_lands() -> TestResult {
    let m = Manager::start().await?;
    let (cert, key) = m.register("alpha").await?;
    // One whole sync over the adapter stream's message limit (core::limits::
    // MAX_ADAPTER_MESSAGE_BYTES, 16 MiB; ~340 bytes a Pod): the manager refuses the stream.
    let big = FakeAdapter::attach(&m, &cert, &key).await?;
    big.send(pb::adapter_message::Kind::InventorySync(pb::Inventory {
        pods: host_pods(60_000, 0),
        ..Default::default()
    }))
    .await?;
    eventually("reason shown", || async {
        health(&m, "alpha").await.is_ok_and(|c| {
            c.health == pb::ClusterHealth::Down as i32
                && c.reason.starts_with("adapter stream failed:")
                && c.reason.contains("too large")
        })
    })
    .await?;
    drop(big);
    // The same Pods in parts: all arrive, and the reason goes.
    let parts = FakeAdapter::attach(&m, &cert, &key).await?;
    for (i, from) in [0, 10_000, 20_000].into_iter().enumerate() {
        parts
            .send(pb::adapter_message::Kind::InventorySyncPart(
                pb::InventorySyncPart {
                    inventory: Some(pb::Inventory {
                        pods: host_pods(if i == 2 { 5_000 } else { 10_000 }, from),
                        ..Default::default()
                    }),
                    first: i == 0,
                    last: i == 2,
                },
            ))
            .await?;
    }
    eventually("synced in parts", || async {
        health(&m, "alpha").await.is_ok_and(|c| {
            c.health == pb::ClusterHealth::Up as i32
                && c.reason.is_empty()
                && c.inventory.is_some_and(|i| i.pods == 25_000)
        })
    })
    .await?;
    Ok(())
}

/// ListClusters pages by name: each page reads only its clusters; 0 lists them all.
#[tokio::test]
async fn list_clusters_pages_by_name() -> TestResult {
    let m = Manager::start().await?;
    for name in ["gamma", "alpha", "beta"] {
        m.register(name).await?;
    }
    let mut c = clusters(m.admin().await?);
    let page = |size: i32, token: &str| pb::ListClustersRequest {
        page_size: size,
        page_token: token.into(),
    };
    let names = |r: &pb::ListClustersResponse| -> Vec<String> {
        r.clusters.iter().map(|c| c.name.clone()).collect()
    };
    let first = c.list_clusters(page(2, "")).await?.into_inner();
    assert_eq!(names(&first), ["alpha", "beta"]);
    assert_eq!(first.next_page_token, "beta");
    let second = c
        .list_clusters(page(2, &first.next_page_token))
        .await?
        .into_inner();
    assert_eq!(names(&second), ["gamma"]);
    assert!(
        second.next_page_token.is_empty(),
        "nothing after the last page"
    );
    let all = c.list_clusters(page(0, "")).await?.into_inner();
    assert_eq!(names(&all), ["alpha", "beta", "gamma"]);
    let bad = c
        .list_clusters(page(-1, ""))
        .await
        .err()
        .ok_or("negative size")?;
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    Ok(())
}

/// One cluster's inventory is bounded (`--max-inventory-objects`): a sync, a sync in parts or
/// upserts beyond it end the stream with RESOURCE_EXHAUSTED and the reason shows on the
/// cluster; what was stored before stays, and a sync within the bound brings it back Up.
#[tokio::test]
async fn inventory_beyond_its_bound_is_refused_and_named() -> TestResult {
    let m = Manager::start_with(&["--max-inventory-objects", "100"]).await?;
    let (cert, key) = m.register("alpha").await?;
    let refused = |what: &'static str| {
        let m = &m;
        async move {
            eventually(what, || async {
                health(m, "alpha").await.is_ok_and(|c| {
                    c.health == pb::ClusterHealth::Down as i32
                        && c.reason.contains("more than 100 objects")
                        && c.reason.contains("--max-inventory-objects")
                })
            })
            .await
        }
    };
    let stream_ended = |mut a: FakeAdapter| async move {
        loop {
            match a.next().await {
                Err(s) if s.code() == tonic::Code::ResourceExhausted => return Ok(()),
                Err(s) => return Err(format!("stream ended with {s:?}")),
                Ok(None) => return Err("stream ended without a status".to_string()),
                Ok(Some(_)) => {}
            }
        }
    };
    // Whole: 101 Pods.
    let a = FakeAdapter::attach(&m, &cert, &key).await?;
    a.send(pb::adapter_message::Kind::InventorySync(pb::Inventory {
        pods: host_pods(101, 0),
        ..Default::default()
    }))
    .await?;
    stream_ended(a).await?;
    refused("whole sync refused").await?;
    // In parts: 60 + 60.
    let a = FakeAdapter::attach(&m, &cert, &key).await?;
    for (i, from) in [0, 60].into_iter().enumerate() {
        a.send(pb::adapter_message::Kind::InventorySyncPart(
            pb::InventorySyncPart {
                inventory: Some(pb::Inventory {
                    pods: host_pods(60, from),
                    ..Default::default()
                }),
                first: i == 0,
                last: i == 1,
            },
        ))
        .await?;
    }
    stream_ended(a).await?;
    refused("sync in parts refused").await?;
    // Within the bound: Up with 90 Pods; re-sending known Pods is fine, 11 new ones are not.
    let a = FakeAdapter::attach(&m, &cert, &key).await?;
    a.send(pb::adapter_message::Kind::InventorySync(pb::Inventory {
        pods: host_pods(90, 0),
        ..Default::default()
    }))
    .await?;
    a.send(pb::adapter_message::Kind::InventoryUpsert(pb::Inventory {
        pods: host_pods(90, 0),
        ..Default::default()
    }))
    .await?;
    eventually("synced within the bound", || async {
        health(&m, "alpha").await.is_ok_and(|c| {
            c.health == pb::ClusterHealth::Up as i32
                && c.reason.is_empty()
                && c.inventory.is_some_and(|i| i.pods == 90)
        })
    })
    .await?;
    a.send(pb::adapter_message::Kind::InventoryUpsert(pb::Inventory {
        pods: host_pods(11, 90),
        ..Default::default()
    }))
    .await?;
    stream_ended(a).await?;
    refused("upserts beyond the bound refused").await?;
    let c = health(&m, "alpha").await?;
    assert_eq!(
        c.inventory.map(|i| i.pods),
        Some(90),
        "the refused upsert changed nothing"
    );
    Ok(())
}
