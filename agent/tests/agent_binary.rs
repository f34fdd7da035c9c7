//! The `traceflow-agent` binary with the flags of docs/contracts.md, against a real OVS Node
//! and an in-process fake adapter (real mTLS): it attaches, reports its ports, injects on
//! command and reports the observations. Needs root and openvswitch-switch.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use support::OvsNode;
use support::fake_adapter::{pki, serve};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use traceflow_proto::v1::{self as pb, agent_message::Kind as Msg};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_attaches_reports_ports_and_traces() {
    let node = OvsNode::start(2);
    let pki = pki();
    let certs = tempfile::tempdir().unwrap();
    let write = |name: &str, pem: &str| {
        let p = certs.path().join(name);
        std::fs::write(&p, pem).unwrap();
        p
    };
    let ca = write("agent-ca.pem", &pki.ca);
    let cert = write("node-a.pem", &pki.agent.0);
    let key = write("node-a-key.pem", &pki.agent.1);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (att_tx, mut att_rx) = mpsc::channel(4);
    let stop = CancellationToken::new();
    let _stop_guard = stop.clone().drop_guard();
    serve(listener, &pki, att_tx, stop).await;

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_traceflow-agent"))
        .args(["--node", "node-a", "--adapter", &format!("https://{addr}")])
        .arg("--ca")
        .arg(&ca)
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .arg("--ovs-rundir")
        .arg(node.rundir())
        .args(["--bridge", "br-int"])
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let mut a = tokio::time::timeout(Duration::from_secs(15), att_rx.recv())
        .await
        .unwrap_or_else(|_| panic!("agent binary did not attach within 15 s"))
        .unwrap();
    assert_eq!(a.cn, "node-a");
    // Hello first; ports follow if OVSDB had not been read yet.
    let mut first = true;
    loop {
        let hello = match a.next().await {
            Msg::Hello(h) => h,
            Msg::Ports(h) if !first => h,
            other => panic!("unexpected first messages: {other:?}"),
        };
        first = false;
        if hello.pods.len() == 2 {
            assert_eq!(hello.node, "node-a");
            assert_eq!(hello.tunnel_ofport, 1);
            let gw = hello.gateway.unwrap();
            assert_eq!((gw.interface_name.as_str(), gw.ofport), ("antrea-gw0", 2));
            // The lab's Node builder gives the gateway both families.
            assert_eq!(gw.ips, vec!["10.1.0.1", "fd00:1::1"]);
            let p1 = hello.pods.iter().find(|p| p.pod_name == "p1").unwrap();
            assert_eq!((p1.pod_namespace.as_str(), p1.ofport), ("default", 4));
            assert_eq!(p1.mac, "02:00:00:00:00:02");
            assert_eq!(p1.ips, vec!["10.1.0.3", "fd00:1::3"]);
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node.dump_flows().contains("dl_dst=02:00:00:00:00:02") {
        assert!(
            Instant::now() < deadline,
            "pipeline not programmed by the binary"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let inject = pb::InjectPacket {
        trace_uid: "uid-321".into(),
        trace_id: 321,
        src_pod_namespace: "default".into(),
        src_pod_name: "p0".into(),
        dst_ip: "10.1.0.3".into(),
        protocol: 17,
        dst_port: 53,
        ..Default::default()
    };
    a.send(pb::agent_command::Kind::Inject(inject)).await;
    let report = loop {
        match a.next().await {
            Msg::Report(r) => break r,
            Msg::Ports(_) => {}
            other => panic!("expected a report, got {other:?}"),
        }
    };
    assert_eq!(report.trace_id, 321);
    let result = report.result.unwrap();
    assert_eq!(
        (result.node.as_str(), result.role.as_str()),
        ("node-a", "sender")
    );
    let actions: Vec<_> = result
        .observations
        .iter()
        .map(|o| (o.component, o.action))
        .collect();
    assert_eq!(
        actions,
        vec![
            (
                pb::Component::SpoofGuard as i32,
                pb::Action::Forwarded as i32
            ),
            (
                pb::Component::Forwarding as i32,
                pb::Action::Delivered as i32
            ),
        ]
    );

    child.start_kill().unwrap();
    let _ = child.wait().await;
}
