//! NodeState over the real adapter session (mTLS, in-process fake adapter): the agent applies
//! a replace and then deltas to its desired-state store. No OVS needed.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::fake_adapter::{pki, serve};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use traceflow_agent::adapter::{self, AdapterConfig};
use traceflow_agent::desired::Store;
use traceflow_agent::pipeline::DatapathHandle;
use traceflow_agent::ports::NodePorts;
use traceflow_agent::runtime::NodeRuntime;
use traceflow_agent::trace::Tracer;
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

    let (_ports_tx, ports_rx) = watch::channel(NodePorts::default());
    let (_sw_tx, sw_rx) = watch::channel(None);
    let (_prog_tx, prog_rx) = watch::channel(0);
    let (_obs_tx, obs_rx) = mpsc::channel(16);
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
    let static_peer = "10.9.0.0/24=192.168.77.9".parse().unwrap();
    let store = Store::with_static_peers(&[static_peer]);
    let mut desired = store.subscribe();
    let stop = CancellationToken::new();
    let session = tokio::spawn(adapter::run_with(cfg, rt, store.clone(), stop.clone()));
    let a = tokio::time::timeout(Duration::from_secs(10), att_rx.recv())
        .await
        .unwrap()
        .unwrap();

    let send = |state: pb::NodeState| {
        let c = a.commands.clone();
        async move {
            c.send(pb::AgentCommand {
                kind: Some(Cmd::NodeState(state)),
            })
            .await
            .unwrap()
        }
    };
    send(pb::NodeState {
        replace: true,
        node: Some(peer("node-a", "10.1.0.0/24", "192.168.77.1")),
        peers_upsert: vec![peer("node-b", "10.2.0.0/24", "192.168.77.2")],
        ..Default::default()
    })
    .await;
    tokio::time::timeout(
        Duration::from_secs(5),
        desired.wait_for(|s| s.peers.contains_key("node-b") && !s.peers.contains_key("static-0")),
    )
    .await
    .unwrap()
    .unwrap();

    send(pb::NodeState {
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
    })
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
