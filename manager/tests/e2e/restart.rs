//! SIGKILL and restart on the same data directory; the crash test.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use traceflow_proto::v1 as pb;

use super::common::*;

/// How many Pods the manager lists for `cluster`.
async fn pod_count(
    m: &Manager,
    cluster: &str,
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    Ok(clusters(m.admin().await?)
        .list_pods(pb::ListInventoryRequest {
            cluster: cluster.into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .pods
        .len())
}

#[tokio::test]
async fn sigkill_then_restart_keeps_ca_cluster_and_traces() -> TestResult {
    let mut m = Manager::start_process().await?;
    let ca_before = m.ca_pem.clone();
    let (cert, key) = m.register("alpha").await?;
    let mut adapter = FakeAdapter::attach(&m, &cert, &key).await?;
    adapter.heartbeat(1, 1).await?;
    let mut t = traces(m.admin().await?);
    let done = t.create_traceflow(create_req("alpha")).await?.into_inner();
    adapter.expect_start().await?;
    adapter
        .update(&done.uid, pb::TraceflowPhase::Succeeded)
        .await?;
    let running = t.create_traceflow(create_req("alpha")).await?.into_inner();
    adapter.expect_start().await?;
    adapter
        .update(&running.uid, pb::TraceflowPhase::Running)
        .await?;
    let mut watch = t
        .watch_traceflow(pb::WatchTraceflowRequest {
            uid: running.uid.clone(),
            name: String::new(),
        })
        .await?
        .into_inner();
    loop {
        let s = watch.message().await?.ok_or("watch ended")?;
        if phase_of(&s) == pb::TraceflowPhase::Running {
            break;
        }
    }
    eventually_phase(
        &t,
        &done.uid,
        pb::TraceflowPhase::Succeeded,
        "succeeded stored",
    )
    .await?;

    adapter
        .sync_pods(&[("default", "p0", "n0"), ("default", "p1", "n0")])
        .await?;
    // Inventory snapshots are stored every 2 s (a cache, written without a flush of its own):
    // once the Pods are in, wait past one snapshot, then make one acknowledged write, whose
    // flush covers every tree, the snapshot's included.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pods = pod_count(&m, "alpha").await?;
        if pods == 2 {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("the manager holds {pods} Pods, want 2").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    t.create_traceflow(create_req("alpha")).await?;

    m.kill9();
    drop(adapter);
    m.spawn().await?;
    assert_eq!(
        pod_count(&m, "alpha").await?,
        2,
        "inventory snapshot lost across restart"
    );

    assert_eq!(m.ca_pem, ca_before, "CA changed across restart");
    let mut t = traces(m.admin().await?);
    let got = t
        .get_traceflow(pb::GetTraceflowRequest {
            uid: done.uid.clone(),
            name: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(phase_of(&got), pb::TraceflowPhase::Succeeded);
    let got = t
        .get_traceflow(pb::GetTraceflowRequest {
            uid: running.uid.clone(),
            name: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(phase_of(&got), pb::TraceflowPhase::Failed);
    assert_eq!(
        got.status.as_ref().map(|s| s.reason.as_str()),
        Some("manager restarted")
    );
    let cl = clusters(m.admin().await?)
        .list_clusters(pb::ListClustersRequest::default())
        .await?
        .into_inner();
    assert_eq!(
        cl.clusters
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["alpha"]
    );
    // The cluster's certificate still works against the restarted manager.
    let mut adapter = FakeAdapter::attach(&m, &cert, &key).await?;
    let again = t.create_traceflow(create_req("alpha")).await?.into_inner();
    assert_eq!(adapter.expect_start().await?.uid, again.uid);
    Ok(())
}

#[tokio::test]
async fn crash_test_no_acknowledged_trace_is_lost() -> TestResult {
    let mut m = Manager::start_process().await?;
    let (cert, key) = m.register("alpha").await?;
    let mut adapter = FakeAdapter::attach(&m, &cert, &key).await?;
    adapter.heartbeat(1, 1).await?;
    // Drain StartTrace messages so the stream never backs up.
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = adapter.next().await {} });

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let ch = m.admin().await?;
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let mut t = traces(ch);
            let mut acked = Vec::new();
            let mut errors = 0u32;
            while !stop.load(Ordering::SeqCst) {
                match t.create_traceflow(create_req("alpha")).await {
                    Ok(r) => acked.push(r.into_inner().uid),
                    Err(_) => {
                        errors += 1;
                        if errors > 3 {
                            break;
                        }
                    }
                }
            }
            (acked, errors)
        }));
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    m.kill9();
    stop.store(true, Ordering::SeqCst);
    let mut acked = Vec::new();
    let mut failed_calls = 0;
    for w in workers {
        let (a, e) = w.await?;
        acked.extend(a);
        failed_calls += e;
    }
    drain.abort();
    m.spawn().await?;
    let mut t = traces(m.admin().await?);
    let mut missing = Vec::new();
    for uid in &acked {
        match t
            .get_traceflow(pb::GetTraceflowRequest {
                uid: uid.clone(),
                name: String::new(),
            })
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => missing.push(uid.clone()),
            Err(s) => return Err(s.into()),
        }
    }
    let stored = {
        let mut n = 0;
        let mut token = String::new();
        loop {
            let page = t
                .list_traceflows(pb::ListTraceflowsRequest {
                    page_size: 1000,
                    page_token: token,
                    ..Default::default()
                })
                .await?
                .into_inner();
            n += page.traceflows.len();
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        n
    };
    println!(
        "crash test: {} creates acknowledged, {} calls cut by the kill, {} traces stored after restart, {} acknowledged but lost",
        acked.len(),
        failed_calls,
        stored,
        missing.len()
    );
    assert!(
        acked.len() > 50,
        "load too small to mean anything: {}",
        acked.len()
    );
    assert!(missing.is_empty(), "lost acknowledged traces: {missing:?}");
    Ok(())
}
