//! The adapter session against an in-process `AgentService` with real mTLS (certificates from
//! traceflow-pki): hello first, ports on change, reports, inject failures in Antrea's words,
//! and reconnection when the adapter goes away. No OVS needed: the runtime is built by hand.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::fake_adapter::{Attached, pki, serve};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use traceflow_agent::adapter::{self, AdapterConfig};
use traceflow_agent::pipeline::DatapathHandle;
use traceflow_agent::ports::{Mac, NodePorts, PodPort, Port};
use traceflow_agent::runtime::NodeRuntime;
use traceflow_agent::trace::{Observed, Tracer};
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

async fn next(a: &mut Attached) -> Msg {
    tokio::time::timeout(Duration::from_secs(10), a.inbound.recv())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_hello_ports_reports_failures_and_reconnect() {
    let pki = pki();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (att_tx, mut att_rx) = mpsc::channel(4);
    let server_stop = CancellationToken::new();
    serve(listener, &pki, att_tx.clone(), server_stop.clone()).await;

    let (ports_tx, ports_rx) = watch::channel(ports(&["p0"]));
    let (_sw_tx, sw_rx) = watch::channel(None);
    let (_prog_tx, prog_rx) = watch::channel(0);
    let (obs_tx, obs_rx) = mpsc::channel(16);
    let rt = NodeRuntime {
        tracer: Tracer::new("node-a", ports_rx.clone(), sw_rx.clone()),
        ports: ports_rx,
        datapath: DatapathHandle {
            switch: sw_rx,
            programmed: prog_rx,
            programmed_state: watch::channel(Default::default()).1,
        },
        observations: obs_rx,
    };
    let cfg = AdapterConfig {
        endpoint: format!("https://{addr}"),
        ca_pem: pki.ca.clone(),
        cert_pem: pki.agent.0.clone(),
        key_pem: pki.agent.1.clone(),
        server_name: "localhost".into(),
    };
    let agent_stop = CancellationToken::new();
    let session = tokio::spawn(adapter::run(cfg, rt, agent_stop.clone()));

    let mut a = tokio::time::timeout(Duration::from_secs(10), att_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.cn, "node-a", "the agent presents its Node certificate");
    let Msg::Hello(h) = next(&mut a).await else {
        panic!("first message is not hello")
    };
    assert_eq!(h.node, "node-a");
    assert_eq!(h.pods.len(), 1);
    assert_eq!(h.pods[0].ofport, 3);
    assert_eq!(h.tunnel_ofport, 1);

    ports_tx.send(ports(&["p0", "p1"])).unwrap();
    let Msg::Ports(p) = next(&mut a).await else {
        panic!("expected ports")
    };
    assert_eq!(p.pods.len(), 2);

    obs_tx
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
            },
        })
        .await
        .unwrap();
    let Msg::Report(r) = next(&mut a).await else {
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
    a.commands
        .send(pb::AgentCommand {
            kind: Some(pb::agent_command::Kind::Inject(inject)),
        })
        .await
        .unwrap();
    let Msg::Failure(f) = next(&mut a).await else {
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
    let Msg::Hello(h) = next(&mut a).await else {
        panic!("first message after reconnect is not hello")
    };
    assert_eq!(h.pods.len(), 2);

    agent_stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), session)
        .await
        .unwrap()
        .unwrap();
}
