//! The tfctl binary against an in-process fake manager over mTLS on loopback.

use std::{
    path::Path,
    process::Output,
    sync::{Arc, Mutex},
};

use futures::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use traceflow_pki::{CertificateAuthority, IdentityKind};
use traceflow_proto::v1::{self as pb, TraceflowPhase};

#[derive(Clone, Default)]
struct Fake {
    created: Arc<Mutex<Vec<pb::CreateTraceflowRequest>>>,
    users: Arc<Mutex<Vec<String>>>,
}

fn status(phase: TraceflowPhase, reason: &str) -> Option<pb::TraceflowStatus> {
    let results = if phase == TraceflowPhase::Succeeded {
        vec![pb::NodeResult {
            node: "n1".into(),
            role: "sender".into(),
            timestamp: 1_700_000_000,
            direction: pb::Direction::Forward as i32,
            observations: vec![
                pb::Observation {
                    component: pb::Component::SpoofGuard as i32,
                    action: pb::Action::Forwarded as i32,
                    sequence: 1,
                    ..Default::default()
                },
                pb::Observation {
                    component: pb::Component::Forwarding as i32,
                    component_info: "Output".into(),
                    action: pb::Action::Delivered as i32,
                    sequence: 2,
                    ..Default::default()
                },
            ],
        }]
    } else {
        vec![]
    };
    Some(pb::TraceflowStatus {
        phase: phase as i32,
        reason: reason.into(),
        results,
        trace_id: 7,
        ..Default::default()
    })
}

type TraceStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::Traceflow, Status>> + Send>>;

#[tonic::async_trait]
impl pb::traceflow_service_server::TraceflowService for Fake {
    async fn create_traceflow(
        &self,
        req: Request<pb::CreateTraceflowRequest>,
    ) -> Result<Response<pb::Traceflow>, Status> {
        let who = traceflow_pki::request_identity(&req)
            .and_then(Result::ok)
            .map(|i| i.name)
            .unwrap_or_default();
        self.users
            .lock()
            .map_err(|_| Status::internal("lock"))?
            .push(who);
        let req = req.into_inner();
        self.created
            .lock()
            .map_err(|_| Status::internal("lock"))?
            .push(req.clone());
        Ok(Response::new(pb::Traceflow {
            uid: "0b7c2a6e-0000-4000-8000-000000000001".into(),
            name: req.name,
            cluster: req.cluster,
            spec: req.spec,
            status: status(TraceflowPhase::Pending, ""),
            ..Default::default()
        }))
    }
    async fn get_traceflow(
        &self,
        _: Request<pb::GetTraceflowRequest>,
    ) -> Result<Response<pb::Traceflow>, Status> {
        Err(Status::not_found("no such trace"))
    }
    async fn list_traceflows(
        &self,
        _: Request<pb::ListTraceflowsRequest>,
    ) -> Result<Response<pb::ListTraceflowsResponse>, Status> {
        Err(Status::unimplemented("list"))
    }
    type WatchTraceflowStream = TraceStream;
    async fn watch_traceflow(
        &self,
        req: Request<pb::WatchTraceflowRequest>,
    ) -> Result<Response<TraceStream>, Status> {
        let uid = req.into_inner().uid;
        let last = self
            .created
            .lock()
            .map_err(|_| Status::internal("lock"))?
            .last()
            .cloned()
            .unwrap_or_default();
        let dst = last
            .spec
            .clone()
            .and_then(|s| s.destination)
            .unwrap_or_default();
        let end = if dst.pod == "ghost" {
            status(
                TraceflowPhase::Failed,
                "Node: n1, error: failed to get the destination Pod: pods \"ghost\" not found",
            )
        } else {
            status(TraceflowPhase::Succeeded, "")
        };
        let mk = |s| pb::Traceflow {
            uid: uid.clone(),
            name: last.name.clone(),
            cluster: last.cluster.clone(),
            spec: last.spec.clone(),
            status: s,
            ..Default::default()
        };
        let items = vec![Ok(mk(status(TraceflowPhase::Running, ""))), Ok(mk(end))];
        Ok(Response::new(futures::stream::iter(items).boxed()))
    }
    async fn delete_traceflow(
        &self,
        _: Request<pb::DeleteTraceflowRequest>,
    ) -> Result<Response<pb::DeleteTraceflowResponse>, Status> {
        Err(Status::unimplemented("delete"))
    }
    async fn retrace(
        &self,
        _: Request<pb::RetraceRequest>,
    ) -> Result<Response<pb::Traceflow>, Status> {
        Err(Status::unimplemented("retrace"))
    }
}

#[tonic::async_trait]
impl pb::cluster_service_server::ClusterService for Fake {
    async fn list_clusters(
        &self,
        _: Request<pb::ListClustersRequest>,
    ) -> Result<Response<pb::ListClustersResponse>, Status> {
        Ok(Response::new(pb::ListClustersResponse {
            clusters: vec![pb::Cluster {
                name: "c1".into(),
                health: pb::ClusterHealth::Up as i32,
                connected_agents: 2,
                expected_agents: 2,
                ..Default::default()
            }],
            manager_version: "9.9.9".into(),
            next_page_token: String::new(),
        }))
    }
    async fn get_cluster(
        &self,
        _: Request<pb::GetClusterRequest>,
    ) -> Result<Response<pb::Cluster>, Status> {
        Err(Status::unimplemented("get"))
    }
    async fn list_nodes(
        &self,
        _: Request<pb::ListInventoryRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        Err(Status::unimplemented("nodes"))
    }
    async fn list_namespaces(
        &self,
        _: Request<pb::ListInventoryRequest>,
    ) -> Result<Response<pb::ListNamespacesResponse>, Status> {
        Err(Status::unimplemented("namespaces"))
    }
    async fn list_pods(
        &self,
        req: Request<pb::ListInventoryRequest>,
    ) -> Result<Response<pb::ListPodsResponse>, Status> {
        let ns = req.into_inner().namespace;
        let pods = if ns == "default" {
            vec![pb::InventoryPod {
                namespace: "default".into(),
                name: "p1".into(),
                ..Default::default()
            }]
        } else {
            vec![]
        };
        Ok(Response::new(pb::ListPodsResponse {
            pods,
            next_page_token: String::new(),
        }))
    }
    async fn list_services(
        &self,
        req: Request<pb::ListInventoryRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let ns = req.into_inner().namespace;
        let services = if ns == "web" {
            vec![pb::InventoryService {
                namespace: "web".into(),
                name: "api".into(),
                ..Default::default()
            }]
        } else {
            vec![]
        };
        Ok(Response::new(pb::ListServicesResponse {
            services,
            next_page_token: String::new(),
        }))
    }
    async fn create_bootstrap_token(
        &self,
        _: Request<pb::CreateBootstrapTokenRequest>,
    ) -> Result<Response<pb::CreateBootstrapTokenResponse>, Status> {
        Err(Status::unimplemented("token"))
    }
    async fn deregister_cluster(
        &self,
        _: Request<pb::DeregisterClusterRequest>,
    ) -> Result<Response<pb::DeregisterClusterResponse>, Status> {
        Err(Status::unimplemented("deregister"))
    }
}

/// A fake manager and a tfctl config for user `admin` (in a temporary directory).
struct Manager {
    dir: tempfile::TempDir,
    fake: Fake,
}

impl Manager {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let fake = start(dir.path()).await;
        Self { dir, fake }
    }

    /// Runs tfctl with `args` against this manager.
    async fn tfctl(&self, args: &[&str]) -> Output {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tfctl"));
        cmd.args(args)
            .env("TFCTL_CONFIG", self.dir.path().join("admin.tfctl.yaml"));
        tokio::time::timeout(std::time::Duration::from_secs(60), cmd.output())
            .await
            .expect("tfctl finished")
            .expect("tfctl ran")
    }

    /// `tfctl traceflow --cluster c1 <args>`.
    async fn traceflow(&self, args: &[&str]) -> Output {
        self.tfctl(&[&["traceflow", "--cluster", "c1"], args].concat())
            .await
    }

    /// The n-th CreateTraceflow request the manager received.
    fn created(&self, n: usize) -> pb::CreateTraceflowRequest {
        self.fake.created.lock().expect("lock")[n].clone()
    }
}

/// Asserts tfctl exited 0, showing its stderr otherwise.
fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the fake manager and writes a tfctl config for user `admin` into `dir`.
async fn start(dir: &Path) -> Fake {
    let ca = CertificateAuthority::generate("manager ca").expect("ca");
    let server = ca
        .issue_server(
            "traceflow-manager",
            &["localhost".into(), "127.0.0.1".into()],
        )
        .expect("server");
    let user = ca.issue("admin", IdentityKind::User, &[]).expect("user");
    std::fs::write(dir.join("ca.pem"), ca.cert_pem()).expect("w");
    std::fs::write(dir.join("admin.pem"), &user.cert_pem).expect("w");
    std::fs::write(dir.join("admin-key.pem"), &user.key_pem).expect("w");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::fs::write(
        dir.join("admin.tfctl.yaml"),
        format!("server: https://127.0.0.1:{port}\nserverName: localhost\nca: ca.pem\ncert: admin.pem\nkey: admin-key.pem\n"),
    )
    .expect("w");
    let fake = Fake::default();
    let tls =
        traceflow_pki::tonic_server_tls(&server.cert_pem, &server.key_pem, ca.cert_pem(), true);
    let svc = fake.clone();
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .tls_config(tls)
            .expect("tls")
            .add_service(pb::traceflow_service_server::TraceflowServiceServer::new(
                svc.clone(),
            ))
            .add_service(pb::cluster_service_server::ClusterServiceServer::new(svc))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    fake
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceflow_prints_antctl_json_and_sends_the_antrea_spec() {
    let m = Manager::start().await;
    let out = m
        .traceflow(&[
            "-S",
            "p0",
            "-D",
            "p1",
            "-f",
            "tcp,tcp_dst=80",
            "-t",
            "15s",
            "-o",
            "json",
        ])
        .await;
    assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["phase"], "Succeeded");
    assert_eq!(v["source"], "default/p0");
    assert_eq!(v["destination"], "default/p1");
    assert_eq!(
        v["results"][0]["observations"][1]["componentInfo"],
        "Output"
    );
    assert_eq!(v["results"][0]["observations"][1]["action"], "Delivered");
    let req = m.created(0);
    assert_eq!(req.cluster, "c1");
    assert!(req.name.starts_with("p0-to-p1-"), "{}", req.name);
    let spec = req.spec.unwrap_or_default();
    assert_eq!(spec.timeout, 15);
    assert_eq!(spec.destination.map(|d| d.pod), Some("p1".into()));
    let tcp = spec
        .packet
        .and_then(|p| p.transport_header)
        .and_then(|t| t.tcp);
    assert_eq!(tcp.map(|t| t.dst_port), Some(80));
    assert_eq!(m.fake.users.lock().expect("lock")[0], "admin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_destination_that_is_a_service_becomes_a_service() {
    let m = Manager::start().await;
    let out = m
        .traceflow(&["-S", "default/p0", "-D", "web/api", "-o", "yaml"])
        .await;
    assert_ok(&out);
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(yaml.starts_with("name: default-p0-to-web-api-"), "{yaml}");
    assert!(yaml.contains("phase: Succeeded"));
    let spec = m.created(0).spec.unwrap_or_default();
    assert_eq!(
        spec.destination.map(|d| (d.namespace, d.service, d.pod)),
        Some(("web".into(), "api".into(), String::new()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_trace_prints_and_exits_non_zero_with_the_reason() {
    let m = Manager::start().await;
    let out = m
        .traceflow(&["-S", "p0", "-D", "ghost", "-o", "json"])
        .await;
    assert_eq!(out.status.code(), Some(1), "a Failed trace exits 1");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["phase"], "Failed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "failed: Node: n1, error: failed to get the destination Pod: pods \"ghost\" not found"
        ),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_and_get_errors() {
    let m = Manager::start().await;
    let out = m.tfctl(&["clusters"]).await;
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("c1") && text.contains("Up") && text.contains("2/2"),
        "{text}"
    );
    let out = m.tfctl(&["get", "nope"]).await;
    assert_eq!(out.status.code(), Some(2), "an RPC error exits 2");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such trace"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_spec_and_connection_errors_exit_2_saying_what_to_do() {
    let m = Manager::start().await;
    // clap usage error.
    let out = m.tfctl(&["traceflow", "--bogus"]).await;
    assert_eq!(out.status.code(), Some(2));
    // antctl's pre-check, before any connection.
    let out = m.traceflow(&["-D", "p1"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Error: Please provide source"));
    assert!(out.stdout.is_empty());
    // No cluster and no default cluster in the context.
    let out = m.tfctl(&["traceflow", "-S", "p0", "-D", "p1"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pass --cluster C, or set a default"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A manager that is not there.
    let cfg = m.dir.path().join("down.yaml");
    std::fs::write(&cfg, "server: https://127.0.0.1:1\nca: ca.pem\ntoken: t\n").expect("w");
    let out = m
        .tfctl(&[
            "--config",
            cfg.to_str().unwrap_or_default(),
            "cluster",
            "list",
        ])
        .await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot connect to the manager at https://127.0.0.1:1 (context default)")
            && stderr.contains("check that it runs"),
        "{stderr}"
    );
}

/// Asserts tfctl refused: exit 2, nothing on stdout, and every one of `want` in stderr.
fn assert_refused(out: &Output, want: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    for w in want {
        assert!(stderr.contains(w), "want {w:?} in stderr: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_flow_key_exits_2_naming_it_and_the_keys() {
    let m = Manager::start().await;
    let out = m
        .traceflow(&["-S", "p0", "-D", "p1", "-f", "tcp,tcp_dts=80"])
        .await;
    assert_refused(
        &out,
        &[
            "Error: failed to parse flow: unknown key tcp_dts in flow; use one of ipv6,",
            " tcp_dst,",
        ],
    );
    assert!(m.fake.created.lock().expect("lock").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_that_cannot_report_exits_2_and_is_never_sent() {
    let m = Manager::start().await;
    // An injected TCP packet to a Pod without a destination port.
    let out = m.traceflow(&["-S", "p0", "-D", "p1", "-f", "tcp"]).await;
    assert_refused(
        &out,
        &[
            "Error: invalid trace: spec.packet.transportHeader.tcp.dstPort:",
            "tfctl -f tcp,tcp_dst=80",
        ],
    );
    // SYN+ACK opens no connection: conntrack drops it before any table reports.
    let out = m
        .traceflow(&[
            "-S",
            "p0",
            "-D",
            "p1",
            "-f",
            "tcp,tcp_dst=80,tcp_flags=0x12",
        ])
        .await;
    assert_refused(
        &out,
        &["spec.packet.transportHeader.tcp.flags: SYN+ACK", "--reply"],
    );
    assert!(m.fake.created.lock().expect("lock").is_empty());
    // A Service lends its port; for live traffic the port is a filter.
    assert_ok(
        &m.traceflow(&["-S", "p0", "-D", "web/api", "-f", "udp"])
            .await,
    );
    assert_ok(
        &m.traceflow(&["-S", "p0", "-D", "p1", "-L", "-f", "tcp"])
            .await,
    );
    assert_eq!(m.fake.created.lock().expect("lock").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_default_cluster_version_and_completion() {
    let m = Manager::start().await;
    let cfg = m.dir.path().join("admin.tfctl.yaml");
    let cfg_arg = cfg.to_str().unwrap_or_default();
    // A second context pointing nowhere; the lab's single-context file stays "default".
    let out = m
        .tfctl(&[
            "config",
            "set-context",
            "broken",
            "--server",
            "https://127.0.0.1:1",
            "--ca",
            "ca.pem",
            "--token",
            "t",
        ])
        .await;
    assert_ok(&out);
    let out = m.tfctl(&["config", "get-contexts"]).await;
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with('*') && l.contains("default")),
        "{text}"
    );
    assert!(text.contains("broken") && text.contains("token"), "{text}");
    // The default context is still the certificate one; --context picks the other.
    assert_ok(&m.tfctl(&["cluster", "list"]).await);
    let out = m.tfctl(&["--context", "broken", "cluster", "list"]).await;
    assert_eq!(out.status.code(), Some(2));
    // A default cluster lets traceflow and pods run without --cluster.
    assert_ok(
        &m.tfctl(&["config", "set-context", "default", "--cluster", "c1"])
            .await,
    );
    let out = m
        .tfctl(&["traceflow", "-S", "p0", "-D", "p1", "-o", "json"])
        .await;
    assert_ok(&out);
    assert_eq!(m.created(0).cluster, "c1");
    let out = m.tfctl(&["config", "use-context", "broken"]).await;
    assert_ok(&out);
    let out = m.tfctl(&["config", "current-context"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "broken");
    assert_eq!(m.tfctl(&["cluster", "list"]).await.status.code(), Some(2));
    assert_ok(&m.tfctl(&["config", "use-context", "default"]).await);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&cfg).expect("cfg").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{cfg_arg} holds a token: 0600");

    let out = m.tfctl(&["version"]).await;
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("Client Version: {}", env!("CARGO_PKG_VERSION")))
            && text.contains("Server Version: 9.9.9"),
        "{text}"
    );
    let out = m.tfctl(&["version", "--client", "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        v.get("serverVersion").is_none() && v["clientVersion"].is_string(),
        "{v}"
    );

    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef tfctl"),
        ("fish", "complete -c tfctl"),
    ] {
        let out = m.tfctl(&["completion", shell]).await;
        assert_ok(&out);
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains(marker) && script.contains("retrace"),
            "{shell}: {script}"
        );
    }
}
