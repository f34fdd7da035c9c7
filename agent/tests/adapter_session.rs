//! The adapter session against an in-process `AgentService` with real mTLS (certificates from
//! traceflow-pki): hello first, ports on change, reports, inject failures in Antrea's words,
//! and reconnection when the adapter goes away. No OVS needed: the runtime is built by hand.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::fake_adapter::{hand_runtime, pki, serve};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use traceflow_agent::adapter;
use traceflow_agent::ports::{Mac, NodePorts, PodPort, Port};
use traceflow_agent::trace::Observed;
use traceflow_proto::v1::{self as pb, agent_message::Kind as Msg};

fn ports(pods: &[&str]) -> NodePorts {
    NodePorts {
        pods: pods
            .iter()
            .enumerate()
            .map(|(i, name)| PodPort {
                namespace: "default".into(),
                name: (*name).into(),
                port: Port {
                    interface: format!("{name}-veth"),
                    ofport: 3 + u32::try_from(i).unwrap(),
                    mac: Mac([2, 0, 0, 0, 0, 1 + u8::try_from(i).unwrap()]),
                    ips: vec![format!("10.1.0.{}", i + 2).parse().unwrap()],
                },
            })
            .collect(),
        gateway: None,
        tunnel_ofport: Some(1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_hello_ports_reports_failures_and_reconnect() {
    let pki = pki();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (att_tx, mut att_rx) = mpsc::channel(4);
    let server_stop = CancellationToken::new();
    serve(listener, &pki, att_tx.clone(), server_stop.clone()).await;

    let (rt, ends) = hand_runtime(ports(&["p0"]));
    let cfg = pki.agent_config(addr);
    let agent_stop = CancellationToken::new();
    let session = tokio::spawn(adapter::run(cfg, rt, agent_stop.clone()));

    let mut a = tokio::time::timeout(Duration::from_secs(10), att_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.cn, "node-a", "the agent presents its Node certificate");
    let Msg::Hello(h) = a.next().await else {
        panic!("first message is not hello")
    };
    assert_eq!(h.node, "node-a");
    assert_eq!(h.pods.len(), 1);
    assert_eq!(h.pods[0].ofport, 3);
    assert_eq!(h.tunnel_ofport, 1);

    ends.ports.send(ports(&["p0", "p1"])).unwrap();
    let Msg::Ports(p) = a.next().await else {
        panic!("expected ports")
    };
    assert_eq!(p.pods.len(), 2);

    ends.observations
        .send(Observed {
            trace_id: 77,
            ipv6: false,
            dataplane_tag: 0,
            captured_packet: None,
            result: pb::NodeResult {
                node: "node-a".into(),
                role: "sender".into(),
                timestamp: 1,
                observations: vec![],
                direction: pb::Direction::Forward as i32,
            },
            secret: 0x5ec7,
            seen_packet: pb::Packet::default(),
        })
        .await
        .unwrap();
    let Msg::Report(r) = a.next().await else {
        panic!("expected report")
    };
    assert_eq!(r.trace_id, 77);
    assert_eq!(r.result.map(|r| r.role), Some("sender".to_string()));

    let inject = pb::InjectPacket {
        trace_uid: "uid-1".into(),
        trace_id: 5,
        src_pod_namespace: "default".into(),
        src_pod_name: "p0".into(),
        dst_ip: "10.1.0.3".into(),
        ipv6: true,
        ..Default::default()
    };
    a.send(pb::agent_command::Kind::Inject(inject)).await;
    let Msg::Failure(f) = a.next().await else {
        panic!("expected failure")
    };
    assert_eq!((f.trace_uid.as_str(), f.trace_id), ("uid-1", 5));
    assert_eq!(f.reason, "source Pod does not have an IPv6 address");

    // The adapter goes away and comes back on the same address: the agent re-attaches and
    // starts again with hello.
    server_stop.cancel();
    drop(a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    serve(listener, &pki, att_tx, CancellationToken::new()).await;
    let mut a = tokio::time::timeout(Duration::from_secs(15), att_rx.recv())
        .await
        .unwrap()
        .unwrap();
    let Msg::Hello(h) = a.next().await else {
        panic!("first message after reconnect is not hello")
    };
    assert_eq!(h.pods.len(), 2);

    agent_stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), session)
        .await
        .unwrap()
        .unwrap();
}
