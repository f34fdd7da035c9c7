//! Agent certificate renewal against the real adapter (in process, real mTLS over loopback):
//! the agent's own session (`traceflow_agent::adapter`, its data plane built by hand, no OVS)
//! renews a 15 s certificate over its stream, reconnects with it without the adapter ever
//! seeing the Node gone, the old certificate is refused, and a trace in flight across the
//! renewal succeeds with the renewed agent's report.

mod support;

use std::{path::Path, time::Duration};

use futures::StreamExt;
use support::{FakeManager, LabKubeApi, observation, report_of, seen, standard_cluster};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use traceflow_adapter::agents::pki::{AgentCertOptions, issue_agent_cert, issue_agent_cert_with};
use traceflow_agent::{
    adapter::{AdapterConfig, CertFiles},
    pipeline::DatapathHandle,
    runtime::NodeRuntime,
    trace::{Observed, Tracer},
};
use traceflow_proto::v1::{self as pb, adapter_message::Kind as Up, manager_message::Kind as Down};

const LIFETIME: Duration = Duration::from_secs(15);

/// What feeds a hand-built data plane: the test's observations, and the senders of its
/// watches (kept open, so the session never sees its data plane gone).
struct HandFed {
    observe: mpsc::Sender<Observed>,
    _ports: watch::Sender<traceflow_agent::ports::NodePorts>,
    _switch: watch::Sender<Option<traceflow_agent::ovs::openflow::Switch>>,
    _programmed: watch::Sender<u64>,
}

/// n1's runtime over a data plane built by hand: its switch never connects, and what it
/// observes is what the test sends through [`HandFed::observe`].
fn hand_built_n1() -> (NodeRuntime, HandFed) {
    let (ports_tx, ports) = watch::channel(Default::default());
    let (switch_tx, switch) = watch::channel(None);
    let (programmed_tx, programmed) = watch::channel(0);
    let (observe, observations) = mpsc::channel::<Observed>(16);
    let rt = NodeRuntime {
        tracer: Tracer::new("n1", ports.clone(), switch.clone()),
        ports,
        datapath: DatapathHandle {
            switch,
            programmed,
            programmed_state: watch::channel(Default::default()).1,
            tunnel_key: watch::channel(None).1,
        },
        observations,
    };
    let fed = HandFed {
        observe,
        _ports: ports_tx,
        _switch: switch_tx,
        _programmed: programmed_tx,
    };
    (rt, fed)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn serial_of(cert_pem: &str) -> String {
    traceflow_pki::pem_identity(cert_pem)
        .expect("certificate parses")
        .serial
}

/// Opens an agent stream to the adapter at `port` with `(cert, key)`; the first message is a
/// hello for `node`.
async fn attach(
    port: u16,
    ca: &str,
    cert: &str,
    key: &str,
    node: &str,
) -> Result<
    (
        mpsc::Sender<pb::AgentMessage>,
        tonic::Streaming<pb::AgentCommand>,
    ),
    tonic::Status,
> {
    let tls = traceflow_pki::tonic_client_tls(ca, Some((cert, key)), "localhost");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .expect("url")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("connect to the adapter");
    let mut client = pb::agent_service_client::AgentServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(16);
    tx.send(pb::AgentMessage {
        kind: Some(pb::agent_message::Kind::Hello(pb::AgentHello {
            node: node.into(),
            version: "test".into(),
            ..Default::default()
        })),
    })
    .await
    .expect("hello");
    let commands = client.attach(ReceiverStream::new(rx)).await?.into_inner();
    Ok((tx, commands))
}

/// The adapter of cluster c1 over `data_dir`, running: its agent port, the switch that stops
/// it, its task.
type RunningAdapter = (
    u16,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), traceflow_adapter::RunError>>,
);

async fn start_adapter(
    dir: &Path,
    data_dir: &Path,
    mgr: &FakeManager,
    api: &LabKubeApi,
    token: Option<&str>,
    agent_cert_lifetime: Duration,
    adopt_newer_agent_certs: bool,
) -> RunningAdapter {
    let config = traceflow_adapter::RunConfig {
        cluster: "c1".into(),
        data_dir: data_dir.to_path_buf(),
        manager: mgr.url(),
        manager_ca: mgr.write_ca(dir),
        token: token.map(Into::into),
        kubeconfig: api.kubeconfig(dir),
        agent_cert_lifetime,
        adopt_newer_agent_certs,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(traceflow_adapter::run(config, listener, async move {
        let _ = stopped.await;
    }));
    (port, stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_renews_its_certificate_over_its_stream_and_the_old_one_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = LabKubeApi::start().await;
    standard_cluster(&api).await;
    let mut mgr = FakeManager::start("t").await;
    let data_dir = dir.path().join("ad");
    let certs = dir.path().join("certs");
    // n1's certificate lives 15 s: the agent renews it about 10 s after it was issued.
    let short = AgentCertOptions {
        lifetime: LIFETIME,
        record: true,
    };
    issue_agent_cert_with(&data_dir, "n1", &certs, &short).expect("n1 certificate");
    let ca_pem = read(&certs.join("agent-ca.pem"));
    let old_cert = read(&certs.join("n1.pem"));
    let old_key = read(&certs.join("n1-key.pem"));
    let old_serial = serial_of(&old_cert);

    let (port, stop_adapter, adapter) = start_adapter(
        dir.path(),
        &data_dir,
        &mgr,
        &api,
        Some("t"),
        LIFETIME,
        false,
    )
    .await;
    mgr.hello().await;
    mgr.send(Down::Config(pb::ManagerConfig {
        heartbeat_interval_seconds: 1,
    }))
    .await;

    // The real agent session of n1, over a data plane built by hand: observations are pushed
    // by the test, the switch never connects.
    let (rt, fed) = hand_built_n1();
    let cfg = AdapterConfig {
        endpoint: format!("https://127.0.0.1:{port}"),
        ca_pem: ca_pem.clone(),
        cert_pem: old_cert.clone(),
        key_pem: old_key.clone(),
        server_name: "localhost".into(),
        files: Some(CertFiles {
            cert: certs.join("n1.pem"),
            key: certs.join("n1-key.pem"),
        }),
    };
    let stop_agent = CancellationToken::new();
    let agent = tokio::spawn(traceflow_agent::adapter::run(cfg, rt, stop_agent.clone()));
    mgr.next_matching(|k| match k {
        Up::Heartbeat(h) if h.connected_agents == 1 => Some(()),
        _ => None,
    })
    .await;

    // n2 is a test agent holding the injection; the trace p1 (n2) → p0 (n1) needs n1's agent
    // as its receiver, so n1 disconnecting during renewal would fail it at once.
    issue_agent_cert(&data_dir, "n2", &certs).expect("n2 certificate");
    let (n2_tx, mut n2_commands) = attach(
        port,
        &ca_pem,
        &read(&certs.join("n2.pem")),
        &read(&certs.join("n2-key.pem")),
        "n2",
    )
    .await
    .expect("n2 attaches");
    let mut spec = traceflow_core::fixtures::pod_to_pod("p1", "p0");
    spec.timeout = 60;
    mgr.send(Down::StartTrace(pb::StartTrace {
        trace: Some(pb::Traceflow {
            uid: "u1".into(),
            name: "u1".into(),
            cluster: "c1".into(),
            spec: Some(spec),
            ..Default::default()
        }),
        trace_context: Default::default(),
    }))
    .await;
    let inject = loop {
        let cmd = tokio::time::timeout(Duration::from_secs(10), n2_commands.next())
            .await
            .expect("n2 got no injection in time");
        if let Some(Ok(pb::AgentCommand {
            kind: Some(pb::agent_command::Kind::Inject(p)),
        })) = cmd
        {
            break p;
        }
        assert!(matches!(cmd, Some(Ok(_))), "n2's stream ended: {cmd:?}");
    };

    // Renewal: the files change to a new certificate, recorded as n1's only valid one.
    let deadline = tokio::time::Instant::now() + LIFETIME + Duration::from_secs(5);
    let new_cert = loop {
        let now = read(&certs.join("n1.pem"));
        if serial_of(&now) != old_serial {
            break now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent did not renew its certificate within {:?}",
            LIFETIME + Duration::from_secs(5)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let new_serial = serial_of(&new_cert);
    let new_id = traceflow_pki::pem_identity(&new_cert).expect("new certificate");
    assert_eq!(
        (new_id.name.as_str(), new_id.kind),
        ("n1", traceflow_pki::IdentityKind::Agent)
    );
    assert!(
        new_id.not_after - new_id.not_before <= LIFETIME.as_secs() as i64 + 300,
        "the renewed certificate has the adapter's lifetime: {new_id:?}"
    );
    let recorded = read(&data_dir.join("agent-serials/n1"));
    assert!(recorded.starts_with(&new_serial), "{recorded}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&certs.join("n1-key.pem")), 0o600);
        assert_eq!(mode(&data_dir.join("agent-serials/n1")), 0o600);
        assert_eq!(mode(&data_dir.join("agent-serials")), 0o700);
    }
    // The key on disk belongs to the renewed certificate: a stream with the pair is accepted.
    let new_key = read(&certs.join("n1-key.pem"));
    assert_ne!(new_key, old_key, "renewal brings a fresh key");

    // The old certificate is refused, saying what to do.
    match attach(port, &ca_pem, &old_cert, &old_key, "n1").await {
        Err(status) => {
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
            assert!(status.message().contains("re-issue"), "{status}");
        }
        Ok(_) => panic!("the adapter accepted n1's superseded certificate"),
    }
    // Renewal with the old certificate is refused too.
    {
        let tls =
            traceflow_pki::tonic_client_tls(&ca_pem, Some((&old_cert, &old_key)), "localhost");
        let channel = tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
            .expect("url")
            .tls_config(tls)
            .expect("tls")
            .connect()
            .await
            .expect("connect");
        let (csr_pem, _) = traceflow_pki::generate_csr("n1").expect("csr");
        let status = pb::agent_service_client::AgentServiceClient::new(channel)
            .renew_certificate(pb::RenewAgentCertificateRequest { csr_pem })
            .await
            .expect_err("renewal with a superseded certificate");
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
    }

    // The trace in flight across the renewal still succeeds: n2 reports the sending side, n1's
    // renewed session the receiving side.
    let report = |node: &str, observations| pb::NodeResult {
        node: node.into(),
        observations,
        ..Default::default()
    };
    n2_tx
        .send(report_of(
            &inject,
            report(
                "n2",
                vec![
                    observation(pb::Component::SpoofGuard, pb::Action::Forwarded),
                    observation(pb::Component::Forwarding, pb::Action::Forwarded),
                ],
            ),
        ))
        .await
        .expect("n2 report");
    fed.observe
        .send(Observed {
            trace_id: inject.trace_id,
            ipv6: false,
            dataplane_tag: 0,
            captured_packet: None,
            // What n1's agent reads from the packet's payload.
            secret: inject.secret,
            seen_packet: seen(&inject),
            result: report(
                "n1",
                vec![
                    observation(pb::Component::Forwarding, pb::Action::Received),
                    observation(pb::Component::Forwarding, pb::Action::Delivered),
                ],
            ),
        })
        .await
        .expect("n1 observation");
    let done = mgr.ended(Some("u1")).await;
    assert_eq!(
        done.phase,
        pb::TraceflowPhase::Succeeded as i32,
        "reason: {}",
        done.reason
    );
    // Both agents are attached after the renewal.
    mgr.next_matching(|k| match k {
        Up::Heartbeat(h) if h.connected_agents == 2 => Some(()),
        _ => None,
    })
    .await;

    stop_agent.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), agent).await;
    let _ = stop_adapter.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), adapter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reissuing_a_node_certificate_revokes_the_previous_one_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = LabKubeApi::start().await;
    standard_cluster(&api).await;
    let mut mgr = FakeManager::start("t").await;
    let data_dir = dir.path().join("ad");
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    issue_agent_cert(&data_dir, "n1", &first).expect("first certificate");
    issue_agent_cert(&data_dir, "n1", &second).expect("second certificate");
    let ca_pem = read(&first.join("agent-ca.pem"));
    let cert = |d: &Path| (read(&d.join("n1.pem")), read(&d.join("n1-key.pem")));
    let hour = Duration::from_secs(3600);
    // Across a restart of the adapter: the record is on disk.
    for (round, token) in [(0, Some("t")), (1, None)] {
        let (port, stop, task) =
            start_adapter(dir.path(), &data_dir, &mgr, &api, token, hour, false).await;
        mgr.hello().await;
        let (c, k) = cert(&first);
        match attach(port, &ca_pem, &c, &k, "n1").await {
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unauthenticated, "round {round}");
                assert!(status.message().contains("re-issue"), "{status}");
            }
            Ok(_) => panic!("round {round}: the re-issued Node's old certificate was accepted"),
        }
        let (c, k) = cert(&second);
        attach(port, &ca_pem, &c, &k, "n1")
            .await
            .unwrap_or_else(|s| panic!("round {round}: the current certificate is refused: {s}"));
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    // A Node without a record (its certificate minted elsewhere by the same CA) is refused.
    let elsewhere = dir.path().join("elsewhere");
    issue_agent_cert_with(
        &data_dir,
        "n2",
        &elsewhere,
        &AgentCertOptions {
            record: false,
            ..Default::default()
        },
    )
    .expect("unrecorded certificate");
    let (port, stop, task) =
        start_adapter(dir.path(), &data_dir, &mgr, &api, None, hour, false).await;
    mgr.hello().await;
    let (n2_cert, n2_key) = (
        read(&elsewhere.join("n2.pem")),
        read(&elsewhere.join("n2-key.pem")),
    );
    let Err(status) = attach(port, &ca_pem, &n2_cert, &n2_key, "n2").await else {
        panic!("an unrecorded certificate is accepted");
    };
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(
        status.message().contains("no certificate is recorded"),
        "{status}"
    );
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;

    // With --adopt-newer-agent-certs (the Helm chart's mode) it is adopted and recorded; the
    // older certificates of n1 stay refused.
    let (port, stop, task) =
        start_adapter(dir.path(), &data_dir, &mgr, &api, None, hour, true).await;
    mgr.hello().await;
    attach(port, &ca_pem, &n2_cert, &n2_key, "n2")
        .await
        .unwrap_or_else(|s| panic!("a newer certificate is adopted: {s}"));
    assert!(read(&data_dir.join("agent-serials/n2")).starts_with(&serial_of(&n2_cert)));
    let (c, k) = cert(&first);
    let Err(status) = attach(port, &ca_pem, &c, &k, "n1").await else {
        panic!("an older certificate is adopted");
    };
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}

/// The serial recorded for `node` in `data_dir`.
fn recorded(data_dir: &Path, node: &str) -> String {
    read(&data_dir.join("agent-serials").join(node))
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_that_cannot_be_written_is_still_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = LabKubeApi::start().await;
    standard_cluster(&api).await;
    let mut mgr = FakeManager::start("t").await;
    let data_dir = dir.path().join("ad");
    let certs = dir.path().join("certs");
    let short = AgentCertOptions {
        lifetime: LIFETIME,
        record: true,
    };
    issue_agent_cert_with(&data_dir, "n1", &certs, &short).expect("n1 certificate");
    let first = recorded(&data_dir, "n1");
    let (port, stop_adapter, adapter) = start_adapter(
        dir.path(),
        &data_dir,
        &mgr,
        &api,
        Some("t"),
        LIFETIME,
        false,
    )
    .await;
    mgr.hello().await;

    let (rt, _fed) = hand_built_n1();
    // The files' directory does not exist: every write of a renewed certificate fails.
    let missing = dir.path().join("missing");
    let cfg = AdapterConfig {
        endpoint: format!("https://127.0.0.1:{port}"),
        ca_pem: read(&certs.join("agent-ca.pem")),
        cert_pem: read(&certs.join("n1.pem")),
        key_pem: read(&certs.join("n1-key.pem")),
        server_name: "localhost".into(),
        files: Some(CertFiles {
            cert: missing.join("n1.pem"),
            key: missing.join("n1-key.pem"),
        }),
    };
    let stop_agent = CancellationToken::new();
    let agent = tokio::spawn(traceflow_agent::adapter::run(cfg, rt, stop_agent.clone()));

    // Renewed once (the adapter records it), then again soon after: the second renewal is
    // authenticated by the first renewed certificate, which exists only in the agent's memory.
    let deadline = tokio::time::Instant::now() + LIFETIME + Duration::from_secs(5);
    let mut seen = vec![first];
    while seen.len() < 3 {
        let now = recorded(&data_dir, "n1");
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "serials recorded for n1: {seen:?} (want two renewals)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!missing.exists());
    stop_agent.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), agent).await;
    let _ = stop_adapter.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), adapter).await;
}
