//! The trace API: validation, the lifecycle through a fake adapter, watch, list, retrace.

use tonic::Code;
use traceflow_proto::v1 as pb;

use super::common::*;

/// (what, how to break a valid request, field, message fragment).
type Case = (
    &'static str,
    Box<dyn Fn(&mut pb::CreateTraceflowRequest)>,
    &'static str,
    &'static str,
);

#[tokio::test]
async fn validation_messages_name_the_field() -> TestResult {
    let m = Manager::start().await?;
    let (cert, key) = m.register("alpha").await?;
    let adapter = FakeAdapter::attach(&m, &cert, &key).await?;
    adapter
        .sync_pods(&[("default", "p0", "n0"), ("default", "p1", "n0")])
        .await?;
    adapter
        .send(pb::adapter_message::Kind::InventoryUpsert(pb::Inventory {
            pods: vec![pb::InventoryPod {
                namespace: "default".into(),
                name: "hostpod".into(),
                host_network: true,
                ..Default::default()
            }],
            ..Default::default()
        }))
        .await?;
    let admin_ch = m.admin().await?;
    let mut t = traces(admin_ch.clone());
    // Wait for the inventory to land.
    eventually("inventory", || {
        let mut c = clusters(admin_ch.clone());
        async move {
            c.list_pods(pb::ListInventoryRequest::default())
                .await
                .is_ok_and(|r| r.into_inner().pods.len() == 3)
        }
    })
    .await?;

    let tcp = traceflow_core::fixtures::tcp;
    let cases: Vec<Case> = vec![
        (
            "no cluster",
            Box::new(|r| r.cluster.clear()),
            "cluster",
            "is required",
        ),
        (
            "unknown cluster",
            Box::new(|r| r.cluster = "nope".into()),
            "cluster",
            "cluster \"nope\" is not registered",
        ),
        (
            "no source",
            Box::new(|r| {
                if let Some(s) = r.spec.as_mut() {
                    s.source = None;
                }
            }),
            "spec.source.pod",
            "source Pod must be specified in non-live-traffic Traceflow",
        ),
        (
            "missing source pod",
            Box::new(|r| {
                if let Some(s) = r.spec.as_mut().and_then(|s| s.source.as_mut()) {
                    s.pod = "ghost".into();
                }
            }),
            "spec.source.pod",
            "requested source Pod default/ghost not found",
        ),
        (
            "hostNetwork source",
            Box::new(|r| {
                if let Some(s) = r.spec.as_mut().and_then(|s| s.source.as_mut()) {
                    s.pod = "hostpod".into();
                }
            }),
            "spec.source.pod",
            "using hostNetwork Pod as source in non-live-traffic Traceflow is not supported",
        ),
        (
            "neither pod",
            Box::new(|r| {
                if let Some(s) = r.spec.as_mut() {
                    s.live_traffic = true;
                    s.source = Some(pb::Source {
                        ip: "10.0.0.1".into(),
                        ..Default::default()
                    });
                    s.destination = Some(pb::Destination {
                        ip: "10.0.0.2".into(),
                        ..Default::default()
                    });
                }
                r.name = "tf1".into();
            }),
            "spec.source.pod",
            "Traceflow tf1 has neither source nor destination Pod specified",
        ),
        (
            "timeout high",
            Box::new(|r| {
                if let Some(s) = r.spec.as_mut() {
                    s.timeout = 301;
                }
            }),
            "spec.timeout",
            "between 1 and 300",
        ),
        (
            "timeout negative",
            Box::new(|r| {
                if let Some(s) = r.spec.as_mut() {
                    s.timeout = -5;
                }
            }),
            "spec.timeout",
            "between 1 and 300",
        ),
        (
            "pod and ip",
            Box::new(|r| {
                if let Some(d) = r.spec.as_mut().and_then(|s| s.destination.as_mut()) {
                    d.ip = "10.0.0.9".into();
                }
            }),
            "spec.destination",
            "mutually exclusive",
        ),
        (
            "pod and service",
            Box::new(|r| {
                if let Some(d) = r.spec.as_mut().and_then(|s| s.destination.as_mut()) {
                    d.service = "svc".into();
                }
            }),
            "spec.destination",
            "mutually exclusive",
        ),
        (
            "no destination",
            Box::new(|r| {
                if let Some(s) = r.spec.as_mut() {
                    s.destination = None;
                }
            }),
            "spec.destination",
            "destination is not specified",
        ),
        (
            "bad ip",
            Box::new(|r| {
                if let Some(s) = r.spec.as_mut() {
                    s.destination = Some(pb::Destination {
                        ip: "300.1.1.1".into(),
                        ..Default::default()
                    });
                }
            }),
            "spec.destination.ip",
            "not a valid IP address",
        ),
        (
            "family mismatch",
            Box::new(|r| {
                if let Some(s) = r.spec.as_mut() {
                    s.destination = Some(pb::Destination {
                        ip: "fd00::1".into(),
                        ..Default::default()
                    });
                }
            }),
            "spec.destination.ip",
            "destination IP does not match the IP header family",
        ),
        (
            "v6 header v4 ip",
            Box::new(|r| {
                if let Some(s) = r.spec.as_mut() {
                    s.destination = Some(pb::Destination {
                        ip: "10.0.0.2".into(),
                        ..Default::default()
                    });
                    s.packet = Some(pb::Packet {
                        ipv6_header: Some(pb::IPv6Header::default()),
                        ..Default::default()
                    });
                }
            }),
            "spec.destination.ip",
            "IPv6",
        ),
        (
            "protocol 47",
            Box::new(|r| {
                if let Some(s) = r.spec.as_mut() {
                    s.packet = Some(pb::Packet {
                        ip_header: Some(pb::IpHeader {
                            protocol: 47,
                            ..Default::default()
                        }),
                        ..Default::default()
                    });
                }
            }),
            "spec.packet.ipHeader.protocol",
            "must be 1 (ICMP), 6 (TCP), 17 (UDP) or 132 (SCTP), got 47",
        ),
        (
            "next header 0",
            Box::new(|r| {
                if let Some(s) = r.spec.as_mut() {
                    s.packet = Some(pb::Packet {
                        ipv6_header: Some(pb::IPv6Header {
                            next_header: Some(0),
                            hop_limit: 0,
                        }),
                        ..Default::default()
                    });
                }
            }),
            "spec.packet.ipv6Header.nextHeader",
            "got 0",
        ),
        (
            "ttl 256",
            Box::new(|r| {
                if let Some(s) = r.spec.as_mut() {
                    s.packet = Some(pb::Packet {
                        ip_header: Some(pb::IpHeader {
                            ttl: 256,
                            ..Default::default()
                        }),
                        ..Default::default()
                    });
                }
            }),
            "spec.packet.ipHeader.ttl",
            "between 0 and 255",
        ),
        (
            "dropped only without live",
            Box::new(|r| {
                if let Some(s) = r.spec.as_mut() {
                    s.dropped_only = true;
                }
            }),
            "spec.droppedOnly",
            "live-traffic",
        ),
    ];
    let tcp_cases: Vec<(&str, pb::Packet, &str, &str)> = vec![
        (
            "dst port 0",
            tcp(0, 0, None),
            "spec.packet.transportHeader.tcp.dstPort",
            "an injected TCP packet needs a destination port: set one (tfctl -f tcp,tcp_dst=80)",
        ),
        (
            "tcp protocol without a port",
            pb::Packet {
                ip_header: Some(pb::IpHeader {
                    protocol: 6,
                    ..Default::default()
                }),
                ..Default::default()
            },
            "spec.packet.transportHeader.tcp.dstPort",
            "needs a destination port",
        ),
        (
            "dst port 65536",
            tcp(0, 65536, None),
            "spec.packet.transportHeader.tcp.dstPort",
            "got 65536",
        ),
        (
            "src port -1",
            tcp(-1, 80, None),
            "spec.packet.transportHeader.tcp.srcPort",
            "got -1",
        ),
        (
            "syn+rst",
            tcp(0, 80, Some(0x06)),
            "spec.packet.transportHeader.tcp.flags",
            "SYN cannot be combined with RST or FIN",
        ),
        (
            "syn+fin",
            tcp(0, 80, Some(0x03)),
            "spec.packet.transportHeader.tcp.flags",
            "SYN cannot be combined with RST or FIN",
        ),
        (
            "psh only",
            tcp(0, 80, Some(0x08)),
            "spec.packet.transportHeader.tcp.flags",
            "without SYN, ACK or RST must be set",
        ),
        (
            "ack+fin",
            tcp(0, 80, Some(0x11)),
            "spec.packet.transportHeader.tcp.flags",
            "ACK cannot be combined with FIN, PSH or URG",
        ),
        (
            "syn+ack",
            tcp(0, 80, Some(0x12)),
            "spec.packet.transportHeader.tcp.flags",
            "SYN+ACK (flags 18) cannot open a connection",
        ),
        (
            "tcp with udp protocol",
            pb::Packet {
                ip_header: Some(pb::IpHeader {
                    protocol: 17,
                    ..Default::default()
                }),
                ..tcp(0, 80, None)
            },
            "spec.packet.ipHeader.protocol",
            "does not match the tcp transport header",
        ),
        (
            "udp port 0",
            pb::Packet {
                transport_header: Some(pb::TransportHeader {
                    udp: Some(pb::UdpHeader {
                        src_port: 0,
                        dst_port: 0,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "spec.packet.transportHeader.udp.dstPort",
            "(tfctl -f udp,udp_dst=53)",
        ),
        (
            "tcp and udp",
            pb::Packet {
                transport_header: Some(pb::TransportHeader {
                    udp: Some(pb::UdpHeader {
                        src_port: 0,
                        dst_port: 53,
                    }),
                    tcp: Some(pb::TcpHeader {
                        src_port: 0,
                        dst_port: 80,
                        flags: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "spec.packet.transportHeader",
            "mutually exclusive",
        ),
    ];
    let mut all: Vec<(String, pb::CreateTraceflowRequest, &str, &str)> = Vec::new();
    for (what, edit, field, msg) in &cases {
        let mut r = create_req("alpha");
        edit(&mut r);
        all.push((what.to_string(), r, field, msg));
    }
    for (what, packet, field, msg) in tcp_cases {
        let mut r = create_req("alpha");
        if let Some(s) = r.spec.as_mut() {
            s.packet = Some(packet);
        }
        all.push((what.to_string(), r, field, msg));
    }
    for (what, req, field, msg) in all {
        let s = t
            .create_traceflow(req)
            .await
            .err()
            .ok_or_else(|| format!("{what}: accepted"))?;
        assert_eq!(s.code(), Code::InvalidArgument, "{what}: {s:?}");
        assert!(
            s.message().starts_with(&format!("{field}: ")) && s.message().contains(msg),
            "{what}: got {:?}, want field {field} and {msg:?}",
            s.message()
        );
    }
    // Valid variants pass: timeout default 20, an ACK (conntrack takes it up as a new
    // connection), SYN+ACK in live traffic, no port to a Service.
    let ok = t.create_traceflow(create_req("alpha")).await?.into_inner();
    assert_eq!(ok.spec.map(|s| s.timeout), Some(20));
    let mut r = create_req("alpha");
    if let Some(s) = r.spec.as_mut() {
        s.packet = Some(tcp(0, 443, Some(0x10)));
    }
    t.create_traceflow(r).await?;
    let mut r = create_req("alpha");
    if let Some(s) = r.spec.as_mut() {
        s.packet = Some(tcp(0, 443, Some(0x12)));
        s.live_traffic = true;
    }
    t.create_traceflow(r).await?;
    let mut r = create_req("alpha");
    if let Some(s) = r.spec.as_mut() {
        s.packet = Some(tcp(0, 0, None));
        s.destination = Some(pb::Destination {
            namespace: "default".into(),
            service: "web".into(),
            ..Default::default()
        });
    }
    t.create_traceflow(r).await?;
    Ok(())
}

#[tokio::test]
async fn trace_lifecycle_through_a_fake_adapter() -> TestResult {
    let m = Manager::start().await?;
    let (cert, key) = m.register("alpha").await?;
    let mut adapter = FakeAdapter::attach(&m, &cert, &key).await?;
    adapter.heartbeat(1, 1).await?;
    let mut t = traces(m.user_channel("ed", "edit").await?);

    let created = t.create_traceflow(create_req("alpha")).await?.into_inner();
    assert_eq!(phase_of(&created), pb::TraceflowPhase::Pending);
    assert!(uuid_like(&created.uid), "{}", created.uid);
    assert!(
        created.name.starts_with("p0-to-p1-") && created.name.len() == 14,
        "{}",
        created.name
    );
    assert_eq!(created.created_by, "ed");

    let started = adapter.expect_start().await?;
    assert_eq!(started.uid, created.uid);

    let mut watch = t
        .watch_traceflow(pb::WatchTraceflowRequest {
            uid: created.uid.clone(),
            name: String::new(),
        })
        .await?
        .into_inner();
    let first = watch.message().await?.ok_or("watch ended")?;
    assert_eq!(phase_of(&first), pb::TraceflowPhase::Pending);

    adapter
        .update(&created.uid, pb::TraceflowPhase::Running)
        .await?;
    let running = watch.message().await?.ok_or("watch ended")?;
    assert_eq!(phase_of(&running), pb::TraceflowPhase::Running);

    adapter
        .send(pb::adapter_message::Kind::TraceUpdate(pb::TraceUpdate {
            uid: created.uid.clone(),
            status: Some(pb::TraceflowStatus {
                phase: pb::TraceflowPhase::Succeeded as i32,
                results: vec![pb::NodeResult {
                    node: "n0".into(),
                    role: "sender".into(),
                    timestamp: 1,
                    direction: pb::Direction::Forward as i32,
                    observations: vec![pb::Observation {
                        component: pb::Component::SpoofGuard as i32,
                        action: pb::Action::Forwarded as i32,
                        ..Default::default()
                    }],
                }],
                ..Default::default()
            }),
        }))
        .await?;
    let done = watch.message().await?.ok_or("watch ended")?;
    assert_eq!(phase_of(&done), pb::TraceflowPhase::Succeeded);
    assert!(
        watch.message().await?.is_none(),
        "watch must end after a terminal phase"
    );

    // A late subscriber gets the current state, then the end.
    let mut late = t
        .watch_traceflow(pb::WatchTraceflowRequest {
            uid: String::new(),
            name: created.name.clone(),
        })
        .await?
        .into_inner();
    let snap = late.message().await?.ok_or("late watch empty")?;
    assert_eq!(phase_of(&snap), pb::TraceflowPhase::Succeeded);
    assert!(late.message().await?.is_none());

    // Get by uid and by name; List shows it.
    let by_uid = t
        .get_traceflow(pb::GetTraceflowRequest {
            uid: created.uid.clone(),
            name: String::new(),
        })
        .await?
        .into_inner();
    let by_name = t
        .get_traceflow(pb::GetTraceflowRequest {
            uid: String::new(),
            name: created.name.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(by_uid, by_name);
    assert_eq!(by_uid.status.as_ref().map(|s| s.results.len()), Some(1));
    assert!(
        by_uid
            .status
            .as_ref()
            .is_some_and(|s| s.end_time_micros > 0)
    );
    let list = t
        .list_traceflows(pb::ListTraceflowsRequest {
            cluster: "alpha".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        list.traceflows.first().map(|x| x.uid.clone()),
        Some(created.uid.clone())
    );

    // Updates after the end are ignored.
    adapter
        .update(&created.uid, pb::TraceflowPhase::Running)
        .await?;

    // Retrace: a new trace linked to the old one, started on the cluster.
    let re = t
        .retrace(pb::RetraceRequest {
            uid: created.uid.clone(),
            name: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(re.retrace_of, created.uid);
    assert_ne!(re.uid, created.uid);
    assert_eq!(adapter.expect_start().await?.uid, re.uid);

    // List: newest first, filters, paging.
    let all = t
        .list_traceflows(pb::ListTraceflowsRequest::default())
        .await?
        .into_inner();
    let uids: Vec<_> = all.traceflows.iter().map(|x| x.uid.clone()).collect();
    assert_eq!(uids, vec![re.uid.clone(), created.uid.clone()]);
    let succeeded = t
        .list_traceflows(pb::ListTraceflowsRequest {
            phase: pb::TraceflowPhase::Succeeded as i32,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(succeeded.traceflows.len(), 1);
    let by_src = t
        .list_traceflows(pb::ListTraceflowsRequest {
            source: "default/p0".into(),
            destination: "default/p1".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(by_src.traceflows.len(), 2);
    let none = t
        .list_traceflows(pb::ListTraceflowsRequest {
            source: "default/zz".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(none.traceflows.is_empty());
    let p1 = t
        .list_traceflows(pb::ListTraceflowsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(p1.traceflows.len(), 1);
    let p2 = t
        .list_traceflows(pb::ListTraceflowsRequest {
            page_size: 1,
            page_token: p1.next_page_token.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        p2.traceflows.first().map(|x| x.uid.clone()),
        Some(created.uid.clone())
    );
    assert!(p2.next_page_token.is_empty());
    let after = t
        .list_traceflows(pb::ListTraceflowsRequest {
            created_after_micros: re.creation_time_micros,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(after.traceflows.len(), 1);

    // Delete.
    t.delete_traceflow(pb::DeleteTraceflowRequest {
        uid: String::new(),
        name: created.name.clone(),
    })
    .await?;
    let s = t
        .get_traceflow(pb::GetTraceflowRequest {
            uid: created.uid.clone(),
            name: String::new(),
        })
        .await
        .err()
        .ok_or("deleted trace still there")?;
    assert_eq!(s.code(), Code::NotFound);
    Ok(())
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test]
async fn disconnected_cluster_fails_at_once_and_clusters_stay_in_their_lane() -> TestResult {
    let m = Manager::start().await?;
    let (ca, ka) = m.register("alpha").await?;
    let (cb, kb) = m.register("beta").await?;
    let mut t = traces(m.admin().await?);

    // alpha registered but not connected: Failed at once with the reason.
    let failed = t.create_traceflow(create_req("alpha")).await?.into_inner();
    assert_eq!(phase_of(&failed), pb::TraceflowPhase::Failed);
    assert_eq!(
        failed.status.as_ref().map(|s| s.reason.as_str()),
        Some("cluster alpha is not connected")
    );

    // beta cannot update alpha's trace.
    let mut a = FakeAdapter::attach(&m, &ca, &ka).await?;
    let b = FakeAdapter::attach(&m, &cb, &kb).await?;
    let tr = t.create_traceflow(create_req("alpha")).await?.into_inner();
    a.expect_start().await?;
    b.update(&tr.uid, pb::TraceflowPhase::Succeeded).await?;
    // alpha's own update after beta's attempt is applied; beta's never was.
    a.update(&tr.uid, pb::TraceflowPhase::Running).await?;
    eventually_phase(&t, &tr.uid, pb::TraceflowPhase::Running, "alpha's update").await?;

    // beta's inventory stays beta's.
    b.sync_pods(&[("default", "bpod", "bn")]).await?;
    a.sync_pods(&[("default", "apod", "an")]).await?;
    let mut c = clusters(m.admin().await?);
    eventually("inventories", || {
        let mut c = c.clone();
        async move {
            let a = c
                .list_pods(pb::ListInventoryRequest {
                    cluster: "alpha".into(),
                    ..Default::default()
                })
                .await;
            let b = c
                .list_pods(pb::ListInventoryRequest {
                    cluster: "beta".into(),
                    ..Default::default()
                })
                .await;
            match (a, b) {
                (Ok(a), Ok(b)) => {
                    let a: Vec<_> = a.into_inner().pods.into_iter().map(|p| p.name).collect();
                    let b: Vec<_> = b.into_inner().pods.into_iter().map(|p| p.name).collect();
                    a == ["apod"] && b == ["bpod"]
                }
                _ => false,
            }
        }
    })
    .await?;

    // When alpha's stream drops, its in-flight trace fails instead of hanging.
    drop(a);
    eventually_phase(
        &t,
        &tr.uid,
        pb::TraceflowPhase::Failed,
        "in-flight trace failed on disconnect",
    )
    .await?;
    let _ = c.list_clusters(pb::ListClustersRequest::default()).await?;
    Ok(())
}

#[tokio::test]
async fn a_quick_reconnect_keeps_in_flight_traces() -> TestResult {
    let m = Manager::start().await?; // heartbeat interval 1s: grace 3s
    let (cert, key) = m.register("alpha").await?;
    let mut a = FakeAdapter::attach(&m, &cert, &key).await?;
    let mut t = traces(m.admin().await?);
    let tr = t.create_traceflow(create_req("alpha")).await?.into_inner();
    a.expect_start().await?;
    a.update(&tr.uid, pb::TraceflowPhase::Running).await?;
    let get = pb::GetTraceflowRequest {
        uid: tr.uid.clone(),
        name: String::new(),
    };
    eventually_phase(&t, &tr.uid, pb::TraceflowPhase::Running, "running").await?;
    drop(a);
    let a = FakeAdapter::attach(&m, &cert, &key).await?;
    tokio::time::sleep(std::time::Duration::from_millis(4000)).await;
    let now = t.get_traceflow(get.clone()).await?.into_inner();
    assert_eq!(phase_of(&now), pb::TraceflowPhase::Running, "{now:?}");
    a.update(&tr.uid, pb::TraceflowPhase::Succeeded).await?;
    eventually_phase(
        &t,
        &tr.uid,
        pb::TraceflowPhase::Succeeded,
        "succeeded after reconnect",
    )
    .await?;
    Ok(())
}

/// An adapter that comes back listing the traces it still runs: the manager fails the others
/// at once, naming the cluster, leaves the listed ones running, and cancels the listed ones
/// it has ended.
#[tokio::test]
async fn a_restarted_adapter_lists_what_it_runs_and_the_rest_fail_at_once() -> TestResult {
    let m = Manager::start().await?;
    let (cert, key) = m.register("alpha").await?;
    let mut t = traces(m.admin().await?);
    let mut a = FakeAdapter::attach(&m, &cert, &key).await?;
    let kept = t.create_traceflow(create_req("alpha")).await?.into_inner();
    a.expect_start().await?;
    let lost = t.create_traceflow(create_req("alpha")).await?.into_inner();
    a.expect_start().await?;
    a.update(&kept.uid, pb::TraceflowPhase::Running).await?;
    eventually_phase(&t, &kept.uid, pb::TraceflowPhase::Running, "kept running").await?;
    drop(a);
    let began = std::time::Instant::now();
    // It also still runs a trace the manager has ended (here: one it never had, as after the
    // manager's own restart failed everything): that one is cancelled, so the adapter frees
    // its id or live-traffic tag now.
    let ended_uid = "00000000-0000-4000-8000-00000000dead".to_string();
    let mut b = FakeAdapter::attach_with_hello(
        &m,
        &cert,
        &key,
        pb::AdapterHello {
            version: "test".into(),
            running_trace_uids: vec![kept.uid.clone(), ended_uid.clone()],
            reports_running: true,
        },
    )
    .await?;
    assert_eq!(
        b.expect_cancel().await?,
        ended_uid,
        "only the ended trace is cancelled"
    );
    eventually_phase(
        &t,
        &lost.uid,
        pb::TraceflowPhase::Failed,
        "lost trace failed",
    )
    .await?;
    assert!(began.elapsed() < std::time::Duration::from_secs(2));
    let lost = t
        .get_traceflow(pb::GetTraceflowRequest {
            uid: lost.uid,
            name: String::new(),
        })
        .await?
        .into_inner();
    let reason = lost.status.map(|s| s.reason).unwrap_or_default();
    assert!(reason.contains("cluster alpha restarted"), "{reason}");
    let kept = t
        .get_traceflow(pb::GetTraceflowRequest {
            uid: kept.uid,
            name: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(phase_of(&kept), pb::TraceflowPhase::Running);
    Ok(())
}
