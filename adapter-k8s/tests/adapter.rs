//! The adapter in-process: fake Kubernetes API, fake manager, real mTLS agents over loopback.

mod support;

use std::{path::Path, time::Duration};

use futures::StreamExt;
use support::{FakeManager, LabKubeApi, observation, pod, report_of, service, standard_cluster};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use traceflow_proto::v1::{self as pb, adapter_message::Kind as Up, manager_message::Kind as Down};

struct Adapter {
    agent_addr: std::net::SocketAddr,
    data_dir: std::path::PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), traceflow_adapter::RunError>>,
}

async fn start_adapter(
    dir: &Path,
    api: &LabKubeApi,
    mgr: &FakeManager,
    token: Option<&str>,
) -> Adapter {
    let data_dir = dir.join("ad");
    let config = traceflow_adapter::RunConfig {
        cluster: "c1".into(),
        data_dir: data_dir.clone(),
        manager: mgr.url(),
        manager_ca: mgr.write_ca(dir),
        token: token.map(Into::into),
        kubeconfig: api.kubeconfig(dir),
        agent_cert_lifetime: Duration::from_secs(3600),
        adopt_newer_agent_certs: false,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let agent_addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(traceflow_adapter::run(config, listener, async move {
        let _ = stopped.await;
    }));
    Adapter {
        agent_addr,
        data_dir,
        stop: Some(stop),
        task,
    }
}

impl Adapter {
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// A fake agent: connects with a certificate for `node` issued by `agent-cert`.
struct Agent {
    tx: mpsc::Sender<pb::AgentMessage>,
    commands: tonic::Streaming<pb::AgentCommand>,
}

impl Agent {
    /// The next command `f` accepts within 10 s, skipping the others (an agent gets NodeStates
    /// and injections on one stream).
    async fn next_matching<T>(
        &mut self,
        what: &str,
        mut f: impl FnMut(pb::agent_command::Kind) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let cmd = tokio::time::timeout_at(deadline, self.commands.next())
                .await
                .unwrap_or_else(|_| panic!("no {what} in time"));
            match cmd {
                Some(Ok(pb::AgentCommand { kind: Some(kind) })) => {
                    if let Some(t) = f(kind) {
                        return t;
                    }
                }
                other => panic!("expected {what}, got {other:?}"),
            }
        }
    }

    async fn next_inject(&mut self) -> pb::InjectPacket {
        self.next_matching("inject", |k| match k {
            pb::agent_command::Kind::Inject(p) => Some(p),
            _ => None,
        })
        .await
    }

    async fn next_node_state(&mut self) -> pb::NodeState {
        self.next_matching("node state", |k| match k {
            pb::agent_command::Kind::NodeState(s) => Some(s),
            _ => None,
        })
        .await
    }
}

async fn agent_channel(adapter: &Adapter, certs: &Path, node: &str) -> tonic::transport::Channel {
    let read = |f: String| std::fs::read_to_string(certs.join(f)).expect("read cert");
    let tls = traceflow_pki::tonic_client_tls(
        &read("agent-ca.pem".into()),
        Some((
            &read(format!("{node}.pem")),
            &read(format!("{node}-key.pem")),
        )),
        "localhost",
    );
    tonic::transport::Endpoint::from_shared(format!(
        "https://127.0.0.1:{}",
        adapter.agent_addr.port()
    ))
    .expect("url")
    .tls_config(tls)
    .expect("tls")
    .connect()
    .await
    .expect("connect to adapter")
}

async fn attach_agent(adapter: &Adapter, certs: &Path, node: &str) -> Result<Agent, tonic::Status> {
    traceflow_adapter::agents::pki::issue_agent_cert(&adapter.data_dir, node, certs)
        .expect("agent cert");
    let channel = agent_channel(adapter, certs, node).await;
    let mut client = pb::agent_service_client::AgentServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(16);
    let hello = pb::AgentHello {
        node: node.into(),
        version: "test".into(),
        ..Default::default()
    };
    tx.send(pb::AgentMessage {
        kind: Some(pb::agent_message::Kind::Hello(hello)),
    })
    .await
    .expect("hello");
    let commands = client.attach(ReceiverStream::new(rx)).await?.into_inner();
    Ok(Agent { tx, commands })
}

async fn wait_for_adapter_cert(dir: &Path) {
    for _ in 0..200 {
        if dir.join("ad/agent-ca.pem").exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("adapter did not create its agent CA");
}

/// A temporary directory and a fake API server serving the standard cluster.
async fn standard_setup() -> (tempfile::TempDir, LabKubeApi) {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = LabKubeApi::start().await;
    standard_cluster(&api).await;
    (dir, api)
}

fn trace(uid: &str, dst: &str) -> pb::Traceflow {
    pb::Traceflow {
        uid: uid.into(),
        name: uid.into(),
        cluster: "c1".into(),
        spec: Some(traceflow_core::fixtures::pod_to_pod("p0", dst)),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_syncs_inventory_and_runs_a_trace_end_to_end() {
    let (dir, api) = standard_setup().await;
    let mut mgr = FakeManager::start("good-token").await;
    let adapter = start_adapter(dir.path(), &api, &mgr, Some("good-token")).await;

    // Hello first, then the full inventory (the bad Pod skipped).
    mgr.hello().await;
    assert!(
        dir.path().join("ad/cluster.pem").exists()
            && dir.path().join("ad/cluster-key.pem").exists()
    );
    assert_eq!(
        mgr.attached_as.lock().expect("lock").clone(),
        vec!["c1".to_string()]
    );
    // The first sync waits for the core lists, so it is complete (the bad Pod skipped); this
    // small a cluster fits in one part.
    let sync = mgr
        .next_matching(|k| match k {
            Up::InventorySyncPart(p) if p.first && p.last => p.inventory,
            _ => None,
        })
        .await;
    let mut pods: Vec<String> = sync
        .pods
        .iter()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect();
    pods.sort();
    assert_eq!(
        pods,
        vec!["default/p0".to_string(), "default/p1".to_string()]
    );
    assert_eq!(
        (sync.nodes.len(), sync.services.len(), sync.namespaces.len()),
        (2, 1, 2)
    );

    // A delta: a new Pod appears through the watch.
    api.event(
        "/api/v1/pods",
        "ADDED",
        pod("default", "p2", "n2", "10.10.2.4"),
    )
    .await;
    let added = mgr
        .next_matching(|k| match k {
            Up::InventoryUpsert(inv) => inv.pods.into_iter().find(|p| p.name == "p2"),
            _ => None,
        })
        .await;
    assert_eq!(
        (added.node.as_str(), added.ips.clone()),
        ("n2", vec!["10.10.2.4".to_string()])
    );
    api.event(
        "/api/v1/pods",
        "DELETED",
        pod("default", "p2", "n2", "10.10.2.4"),
    )
    .await;
    let deleted = mgr
        .next_matching(|k| match k {
            Up::InventoryDelete(d) => Some(d.pods),
            _ => None,
        })
        .await;
    assert_eq!(deleted, vec!["default/p2".to_string()]);

    // Agents with certificates from `agent-cert`; heartbeats count them against the Nodes.
    wait_for_adapter_cert(dir.path()).await;
    let certs = dir.path().join("certs");
    let mut n1 = attach_agent(&adapter, &certs, "n1")
        .await
        .expect("n1 attaches");
    mgr.send(Down::Config(pb::ManagerConfig {
        heartbeat_interval_seconds: 1,
    }))
    .await;
    let hb = mgr
        .next_matching(|k| match k {
            Up::Heartbeat(h) if h.connected_agents == 1 => Some(h),
            _ => None,
        })
        .await;
    assert_eq!(hb.expected_agents, 2);

    // A certificate for a Node the cluster does not have is refused once Nodes have synced.
    let refused = attach_agent(&adapter, &certs, "ghost").await;
    match refused {
        Err(status) => assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}"),
        Ok(mut a) => {
            let r = a.commands.next().await;
            assert!(matches!(r, Some(Err(_)) | None), "unknown Node accepted");
        }
    }

    // The destination's Node has its agent (a trace to a Node without one fails at once).
    let n2 = attach_agent(&adapter, &certs, "n2")
        .await
        .expect("n2 attaches");
    // The trace: Running, Inject on n1, reports from n1 and n2 (n2 reported through its own agent).
    mgr.send(Down::StartTrace(pb::StartTrace {
        trace: Some(trace("u1", "p1")),
        trace_context: Default::default(),
    }))
    .await;
    let running = mgr
        .next_matching(|k| match k {
            Up::TraceUpdate(u) => u.status,
            _ => None,
        })
        .await;
    assert_eq!(running.phase, pb::TraceflowPhase::Running as i32);
    let inject = n1.next_inject().await;
    assert_eq!(
        (
            inject.src_ip.as_str(),
            inject.dst_ip.as_str(),
            inject.trace_id
        ),
        ("10.10.1.2", "10.10.2.3", running.trace_id)
    );
    let sender = pb::NodeResult {
        observations: vec![
            observation(pb::Component::SpoofGuard, pb::Action::Forwarded),
            observation(pb::Component::Forwarding, pb::Action::Forwarded),
        ],
        ..Default::default()
    };
    let receiver = pb::NodeResult {
        observations: vec![
            observation(pb::Component::Forwarding, pb::Action::Received),
            observation(pb::Component::Forwarding, pb::Action::Delivered),
        ],
        ..Default::default()
    };
    assert_ne!(inject.secret, 0, "the injection carries the trace's secret");
    // A forged report (the id is easy to guess, the secret is not) is refused and counted,
    // never part of the trace.
    let mut forged = report_of(&inject, receiver.clone());
    if let Some(pb::agent_message::Kind::Report(r)) = forged.kind.as_mut() {
        r.secret ^= 0x5a5a;
    }
    n2.tx.send(forged).await.expect("forged report");
    n1.tx
        .send(report_of(&inject, sender))
        .await
        .expect("report n1");
    n2.tx
        .send(report_of(&inject, receiver))
        .await
        .expect("report n2");
    let done = mgr.ended(None).await;
    assert_eq!(
        done.phase,
        pb::TraceflowPhase::Succeeded as i32,
        "reason: {}",
        done.reason
    );
    let roles: Vec<_> = done
        .results
        .iter()
        .map(|r| (r.node.clone(), r.role.clone()))
        .collect();
    assert_eq!(
        roles,
        vec![
            ("n1".to_string(), "sender".to_string()),
            ("n2".to_string(), "receiver".to_string())
        ]
    );
    // The refusal reaches the manager with n2's counters, as /metrics takes them.
    let refused = mgr
        .next_matching(|k| match k {
            Up::Heartbeat(h) => h
                .agent_counters
                .into_iter()
                .find(|c| c.node == "n2")
                .and_then(|c| {
                    c.counters
                        .get(traceflow_core::counters::REPORTS_REFUSED_BAD_SECRET)
                        .copied()
                }),
            _ => None,
        })
        .await;
    assert_eq!(refused, 1);

    // A trace whose sender agent is gone fails with Antrea's Node-prefixed reason.
    drop(n1);
    // Gone once the adapter counts one agent (n2) again: it notices a closed stream on its
    // own time, and a trace started before then would fail "agent disconnected" instead.
    mgr.next_matching(|k| match k {
        Up::Heartbeat(h) if h.connected_agents == 1 => Some(h),
        _ => None,
    })
    .await;
    mgr.send(Down::StartTrace(pb::StartTrace {
        trace: Some(trace("u2", "p1")),
        trace_context: Default::default(),
    }))
    .await;
    let failed = mgr
        .next_matching(|k| match k {
            Up::TraceUpdate(u)
                if u.uid == "u2"
                    && u.status
                        .as_ref()
                        .is_some_and(|s| s.phase == pb::TraceflowPhase::Failed as i32) =>
            {
                u.status
            }
            _ => None,
        })
        .await;
    assert_eq!(failed.reason, "Node: n1, error: agent is not connected");

    // The stream breaks: the adapter reconnects, says hello, resyncs, and resends the latest
    // snapshots of recent traces (what was in flight may have been lost).
    mgr.break_stream().await;
    mgr.hello().await;
    mgr.next_matching(|k| matches!(k, Up::InventorySyncPart(p) if p.first && p.last).then_some(()))
        .await;
    let resent = mgr
        .next_matching(|k| match k {
            Up::TraceUpdate(u) if u.uid == "u1" => u.status,
            _ => None,
        })
        .await;
    assert_eq!(resent.phase, pb::TraceflowPhase::Succeeded as i32);
    assert_eq!(mgr.attached_as.lock().expect("lock").len(), 2);
    adapter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_token_fails_run_quoting_the_manager() {
    let (dir, api) = standard_setup().await;
    let mgr = FakeManager::start("good-token").await;
    let adapter = start_adapter(dir.path(), &api, &mgr, Some("used-token")).await;
    let result = tokio::time::timeout(Duration::from_secs(20), adapter.task)
        .await
        .expect("run returns")
        .expect("join");
    let err = result.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        err.contains(
            "manager refused to register cluster \"c1\": bootstrap token was already used"
        ),
        "{err}"
    );
    assert!(!dir.path().join("ad/cluster.pem").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_with_a_certificate_from_another_ca_is_refused() {
    let (dir, api) = standard_setup().await;
    let mut mgr = FakeManager::start("t").await;
    let adapter = start_adapter(dir.path(), &api, &mgr, Some("t")).await;
    mgr.hello().await;
    wait_for_adapter_cert(dir.path()).await;
    // Certificates from a foreign CA, but trusting the adapter's server.
    let foreign = dir.path().join("foreign");
    traceflow_adapter::agents::pki::issue_agent_cert(&dir.path().join("other-ad"), "n1", &foreign)
        .expect("cert");
    std::fs::copy(
        dir.path().join("ad/agent-ca.pem"),
        foreign.join("agent-ca.pem"),
    )
    .expect("copy ca");
    let tls = traceflow_pki::tonic_client_tls(
        &std::fs::read_to_string(foreign.join("agent-ca.pem")).expect("ca"),
        Some((
            &std::fs::read_to_string(foreign.join("n1.pem")).expect("c"),
            &std::fs::read_to_string(foreign.join("n1-key.pem")).expect("k"),
        )),
        "localhost",
    );
    let endpoint = tonic::transport::Endpoint::from_shared(format!(
        "https://127.0.0.1:{}",
        adapter.agent_addr.port()
    ))
    .expect("url")
    .tls_config(tls)
    .expect("tls");
    let outcome = match endpoint.connect().await {
        Err(_) => true,
        Ok(ch) => {
            let mut client = pb::agent_service_client::AgentServiceClient::new(ch);
            let (_tx, rx) = mpsc::channel::<pb::AgentMessage>(1);
            client.attach(ReceiverStream::new(rx)).await.is_err()
        }
    };
    assert!(outcome, "a foreign agent certificate must be refused");
    // Restart reuses the kept certificate without a token.
    adapter.stop().await;
    let mut mgr2 = mgr;
    let again = start_adapter(dir.path(), &api, &mgr2, None).await;
    mgr2.hello().await;
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceflow_resource_runs_and_its_status_is_written() {
    let (dir, api) = standard_setup().await;
    let mut mgr = FakeManager::start("t").await;
    // The resource appears after the agent attached (through the watch).
    api.set("/apis/crd.traceflow.io/v1beta1/traceflows", vec![])
        .await;
    let adapter = start_adapter(dir.path(), &api, &mgr, Some("t")).await;
    mgr.hello().await;
    wait_for_adapter_cert(dir.path()).await;
    let mut n1 = attach_agent(&adapter, &dir.path().join("certs"), "n1")
        .await
        .expect("n1");
    // p1's Node has its agent too (a trace to a Node without one fails at once).
    let _n2 = attach_agent(&adapter, &dir.path().join("certs"), "n2")
        .await
        .expect("n2");
    tokio::time::sleep(Duration::from_millis(200)).await;
    api.event(
        "/apis/crd.traceflow.io/v1beta1/traceflows",
        "ADDED",
        serde_json::json!({
            "apiVersion": "crd.traceflow.io/v1beta1", "kind": "Traceflow",
            "metadata": {"name": "tf1", "uid": "11111111-2222-4333-8444-555555555555", "resourceVersion": "2"},
            "spec": {"source": {"namespace": "default", "pod": "p0"}, "destination": {"namespace": "default", "pod": "p1"},
                     "packet": {"transportHeader": {"udp": {"dstPort": 53}}}}
        }),
    ).await;
    let inject = n1.next_inject().await;
    assert_eq!((inject.protocol, inject.dst_port), (17, 53));
    // Status leaves through an outbox that keeps the latest per trace, so a Running write
    // still queued when the trace ends is rightly replaced by the final one. Holding the
    // report back until Running is written makes each step observable.
    let mut patched = api.patched.lock().await;
    let mut next_status = async || {
        let (path, body) = tokio::time::timeout(Duration::from_secs(10), patched.recv())
            .await
            .expect("status patch in time")
            .expect("patch");
        assert_eq!(path, "/apis/crd.traceflow.io/v1beta1/traceflows/tf1/status");
        body["status"].clone()
    };
    let running = next_status().await;
    assert_eq!(running["phase"], "Running");
    let result = pb::NodeResult {
        observations: vec![
            observation(pb::Component::SpoofGuard, pb::Action::Forwarded),
            observation(pb::Component::Forwarding, pb::Action::Delivered),
        ],
        ..Default::default()
    };
    n1.tx
        .send(report_of(&inject, result))
        .await
        .expect("report");
    let mut status = next_status().await;
    // A repeated Running (e.g. a retried write) may come first; the phase never goes back.
    while status["phase"] == "Running" {
        status = next_status().await;
    }
    assert_eq!(status["phase"], "Succeeded");
    assert_eq!(status["results"][0]["role"], "sender");
    assert_eq!(
        status["results"][0]["observations"][1]["action"],
        "Delivered"
    );
    drop(patched);
    adapter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_gets_its_node_state_then_a_delta_when_a_policy_appears() {
    let (dir, api) = standard_setup().await;
    let running = |ns: &str, name: &str, node: &str, ip: &str| {
        let mut p = pod(ns, name, node, ip);
        p["status"]["phase"] = "Running".into();
        p
    };
    api.set(
        "/api/v1/pods",
        vec![
            running("default", "p0", "n1", "10.10.1.2"),
            running("default", "p1", "n2", "10.10.2.3"),
        ],
    )
    .await;
    let mut echo = service("default", "echo", "10.96.0.20", 80);
    echo["spec"]["selector"] = serde_json::json!({"app": "p1"});
    api.set(
        "/api/v1/services",
        vec![service("web", "api", "10.96.0.10", 80), echo],
    )
    .await;
    for path in ["networkpolicies", "clusternetworkpolicies", "tiers"] {
        api.set(&format!("/apis/crd.antrea.io/v1beta1/{path}"), vec![])
            .await;
    }
    let mut mgr = FakeManager::start("t").await;
    let adapter = start_adapter(dir.path(), &api, &mgr, Some("t")).await;
    mgr.hello().await;
    wait_for_adapter_cert(dir.path()).await;
    let mut n1 = attach_agent(&adapter, &dir.path().join("certs"), "n1")
        .await
        .expect("n1");

    // Right after the hello: the whole state, replacing whatever the agent had.
    let full = n1.next_node_state().await;
    assert!(full.replace);
    let me = full.node.clone().unwrap_or_default();
    assert_eq!(
        (
            me.name.as_str(),
            me.pod_cidrs.clone(),
            me.tunnel_ips.clone()
        ),
        (
            "n1",
            vec!["10.10.1.0/24".to_string()],
            vec!["192.168.77.1".to_string()]
        )
    );
    let peers: Vec<_> = full
        .peers_upsert
        .iter()
        .map(|p| (p.name.as_str(), p.tunnel_ips.clone()))
        .collect();
    assert_eq!(peers, vec![("n2", vec!["192.168.77.2".to_string()])]);
    let services: Vec<_> = full
        .services_upsert
        .iter()
        .map(|s| format!("{}/{}", s.namespace, s.name))
        .collect();
    assert_eq!(services, vec!["default/echo", "web/api"]);
    let echo_eps: Vec<_> = full.services_upsert[0].ports[0]
        .endpoints
        .iter()
        .map(|e| (e.ip.as_str(), e.port, e.node.as_str(), e.pod_name.as_str()))
        .collect();
    assert_eq!(echo_eps, vec![("10.10.2.3", 8080, "n2", "p1")]);
    assert!(full.rules_upsert.is_empty());
    assert_eq!(full.isolation, Some(pb::Isolation::default()));

    // A NetworkPolicy protecting p0 (on n1) appears: one delta with its rule and isolation.
    tokio::time::sleep(Duration::from_millis(200)).await;
    api.event(
        "/apis/networking.k8s.io/v1/networkpolicies",
        "ADDED",
        serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "allow-p1", "namespace": "default", "resourceVersion": "2"},
            "spec": {"podSelector": {"matchLabels": {"app": "p0"}},
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "p1"}}}],
                                  "ports": [{"protocol": "TCP", "port": 8080}]}]}
        }),
    )
    .await;
    let delta = n1.next_node_state().await;
    assert!(!delta.replace && delta.node.is_none());
    assert_eq!(delta.rules_upsert.len(), 1, "{delta:?}");
    let rule = &delta.rules_upsert[0];
    assert_ne!(rule.conjunction_id, 0);
    assert_eq!(
        (
            rule.direction.as_str(),
            rule.action.as_str(),
            rule.policy_type.as_str(),
            rule.policy_namespace.as_str(),
            rule.policy_name.as_str(),
            rule.table.as_str(),
        ),
        (
            "Ingress",
            "Allow",
            "K8sNetworkPolicy",
            "default",
            "allow-p1",
            "IngressRule"
        )
    );
    assert_eq!(rule.applied_to_ips, vec!["10.10.1.2"]);
    assert_eq!(rule.peer_cidrs, vec!["10.10.2.3/32"]);
    assert_eq!(
        delta.isolation,
        Some(pb::Isolation {
            ingress_ips: vec!["10.10.1.2".into()],
            egress_ips: vec![],
        })
    );
    assert!(delta.peers_upsert.is_empty() && delta.services_upsert.is_empty());
    adapter.stop().await;
}
