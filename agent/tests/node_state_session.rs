//! NodeState over the real adapter session (mTLS, in-process fake adapter): the agent applies
//! a replace and then deltas to its desired-state store. No OVS needed.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::fake_adapter::{hand_runtime, pki, serve};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use traceflow_agent::adapter;
use traceflow_agent::desired::Store;
use traceflow_agent::ports::NodePorts;
use traceflow_proto::v1::{self as pb, agent_command::Kind as Cmd};

fn peer(name: &str, cidr: &str, tun: &str) -> pb::NodeInfo {
    pb::NodeInfo {
        name: name.into(),
        pod_cidrs: vec![cidr.into()],
        tunnel_ips: vec![tun.into()],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_state_commands_reach_the_store() {
    let pki = pki();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (att_tx, mut att_rx) = mpsc::channel(4);
    serve(listener, &pki, att_tx, CancellationToken::new()).await;

    let (rt, _ends) = hand_runtime(NodePorts::default());
    let cfg = pki.agent_config(addr);
    let static_peer = "10.9.0.0/24=192.168.77.9".parse().unwrap();
    let store = Store::with_static_peers(&[static_peer]);
    let mut desired = store.subscribe();
    let stop = CancellationToken::new();
    let session = tokio::spawn(adapter::run_with(cfg, rt, store.clone(), stop.clone()));
    let a = tokio::time::timeout(Duration::from_secs(10), att_rx.recv())
        .await
        .unwrap()
        .unwrap();

    a.send(Cmd::NodeState(pb::NodeState {
        replace: true,
        node: Some(peer("node-a", "10.1.0.0/24", "192.168.77.1")),
        peers_upsert: vec![peer("node-b", "10.2.0.0/24", "192.168.77.2")],
        ..Default::default()
    }))
    .await;
    tokio::time::timeout(
        Duration::from_secs(5),
        desired.wait_for(|s| s.peers.contains_key("node-b") && !s.peers.contains_key("static-0")),
    )
    .await
    .unwrap()
    .unwrap();

    a.send(Cmd::NodeState(pb::NodeState {
        peers_delete: vec!["node-b".into()],
        rules_upsert: vec![pb::PolicyRule {
            conjunction_id: 5,
            direction: "Egress".into(),
            action: "Drop".into(),
            policy_type: "AntreaClusterNetworkPolicy".into(),
            policy_name: "deny".into(),
            rule_name: "r".into(),
            applied_to_ips: vec!["10.1.0.2".into()],
            any_peer: true,
            ..Default::default()
        }],
        ..Default::default()
    }))
    .await;
    tokio::time::timeout(
        Duration::from_secs(5),
        desired.wait_for(|s| s.peers.is_empty() && s.rules.contains_key(&5)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        store.current().rules[&5].policy_ref(),
        "AntreaClusterNetworkPolicy:deny"
    );

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), session)
        .await
        .unwrap()
        .unwrap();
}
