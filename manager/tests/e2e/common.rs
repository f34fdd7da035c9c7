//! Harness: the manager on 127.0.0.1 port 0 with real TLS, clients with real mTLS. API
//! behaviour runs it in this process (`Manager::start`, `server::run` with the same settings the
//! binary resolves); what needs a process (a crash, a restart, a signal, the command line
//! against a running manager) runs the real binary (`Manager::start_process`, `start_in`).

#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use traceflow_proto::v1 as pb;

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
pub type Error = Box<dyn std::error::Error + Send + Sync>;

pub const BIN: &str = env!("CARGO_BIN_EXE_traceflow-manager");

/// A manager serving in this process, on a thread and runtime of its own (so a test that
/// blocks, e.g. on the command line talking to this manager, cannot stall it): stopped by
/// sending `stop`, done when `thread` ends.
struct InProcess {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// `traceflow-manager serve`'s flags, parsed as the binary parses them.
#[derive(clap::Parser)]
struct Serve {
    #[command(flatten)]
    args: traceflow_manager::config::ServeArgs,
}

/// A running manager (process or in this process) on its own data directory.
pub struct Manager {
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    child: Option<Child>,
    in_process: Option<InProcess>,
    pub addr: String,
    pub ca_pem: String,
    pub extra_args: Vec<String>,
}

impl Drop for Manager {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(s) = self.in_process.take() {
            let _ = s.stop.send(());
        }
    }
}

impl Manager {
    /// Sends `request` (a whole raw HTTP/1.1 request) over one TLS connection negotiated as
    /// http/1.1, trusting the manager's CA and sending no client certificate; returns whatever
    /// came back within 10 s, as text.
    pub async fn http1(&self, request: &[u8]) -> Result<String, Error> {
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut self.ca_pem.as_bytes()) {
            roots.add(c?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let tcp = tokio::net::TcpStream::connect(&self.addr).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost")?;
        let mut tls = connector.connect(name, tcp).await?;
        tls.write_all(request).await?;
        let mut resp = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut resp)).await;
        Ok(String::from_utf8_lossy(&resp).into_owned())
    }

    /// Starts a manager in this process on a fresh data directory (heartbeat interval 1s).
    pub async fn start() -> Result<Manager, Error> {
        Self::start_with(&[]).await
    }

    /// As [`start`](Self::start), with more `serve` flags.
    pub async fn start_with(args: &[&str]) -> Result<Manager, Error> {
        let mut m = Self::fresh(args)?;
        m.serve_in_process().await?;
        Ok(m)
    }

    /// Starts the real binary on a fresh data directory (for crashes, restarts, signals).
    pub async fn start_process() -> Result<Manager, Error> {
        Self::start_process_with(&[]).await
    }

    /// As [`start_process`](Self::start_process), with more `serve` flags.
    pub async fn start_process_with(args: &[&str]) -> Result<Manager, Error> {
        let mut m = Self::fresh(args)?;
        m.spawn().await?;
        Ok(m)
    }

    fn fresh(args: &[&str]) -> Result<Manager, Error> {
        let tmp = tempfile::tempdir()?;
        Ok(Manager {
            dir: tmp.path().to_path_buf(),
            _tmp: Some(tmp),
            child: None,
            in_process: None,
            addr: String::new(),
            ca_pem: String::new(),
            extra_args: args.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// Starts the real binary on an existing data directory (kept by the caller).
    pub async fn start_in(dir: &Path) -> Result<Manager, Error> {
        let mut m = Manager {
            dir: dir.to_path_buf(),
            _tmp: None,
            child: None,
            in_process: None,
            addr: String::new(),
            ca_pem: String::new(),
            extra_args: Vec::new(),
        };
        m.spawn().await?;
        Ok(m)
    }

    /// Serves `self.dir` in this process with the settings the binary would resolve from
    /// `serve --data-dir D --listen 127.0.0.1:0 --heartbeat-interval 1s EXTRA_ARGS`.
    async fn serve_in_process(&mut self) -> TestResult {
        use clap::Parser;
        use traceflow_manager::{config, server};
        let dir = self.dir.display().to_string();
        let mut argv = vec!["serve", "--data-dir", &dir];
        argv.extend(["--listen", "127.0.0.1:0", "--heartbeat-interval", "1s"]);
        argv.extend(self.extra_args.iter().map(String::as_str));
        let Serve { args } = Serve::try_parse_from(argv)?;
        let (cfg, listen, _log) = config::resolve_serve(args, None)?;
        let data = server::open_data_dir_with_ca(&cfg.data_dir, cfg.ca_files.as_ref())?;
        let std_listener = std::net::TcpListener::bind(listen)?;
        std_listener.set_nonblocking(true)?;
        self.addr = std_listener.local_addr()?.to_string();
        std::fs::write(self.dir.join("listen.addr"), format!("{}\n", self.addr))?;
        self.ca_pem = std::fs::read_to_string(self.dir.join("ca.pem"))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return eprintln!("in-process manager: no runtime: {e}"),
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => return eprintln!("in-process manager: listener: {e}"),
                };
                let shutdown = async {
                    let _ = stopped.await;
                };
                if let Err(e) = server::run(cfg, data, listener, shutdown).await {
                    eprintln!("in-process manager stopped: {e}");
                }
            });
        });
        self.in_process = Some(InProcess { stop, thread });
        Ok(())
    }

    /// Stops the manager and waits until it released its data directory (the binary: SIGKILL;
    /// in this process: shutdown, which flushes).
    pub async fn stop(&mut self) {
        self.kill9();
        if let Some(s) = self.in_process.take() {
            let _ = s.stop.send(());
            let _ = tokio::task::spawn_blocking(move || s.thread.join()).await;
        }
    }

    /// SIGTERM; returns the exit status once the process is gone (at most 15 s).
    pub async fn terminate(&mut self) -> Result<std::process::ExitStatus, Error> {
        let mut child = self.child.take().ok_or("not running")?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("manager did not exit within 15s of SIGTERM".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts the process on `self.dir` and waits until it answers health checks.
    pub async fn spawn(&mut self) -> TestResult {
        let _ = std::fs::remove_file(self.dir.join("listen.addr"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("manager.log"))?;
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--listen", "127.0.0.1:0", "--heartbeat-interval", "1s"])
            .args(&self.extra_args)
            .env("TRACEFLOW_MANAGER_LOG", "info,traceflow_manager=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(a) = std::fs::read_to_string(self.dir.join("listen.addr"))
                && a.ends_with('\n')
            {
                self.addr = a.trim().to_string();
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("manager did not start; log:\n{}", self.log()).into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.ca_pem = std::fs::read_to_string(self.dir.join("ca.pem"))?;
        // Wait until the port serves.
        loop {
            let ch = self.channel(None).await;
            if let Ok(ch) = ch {
                let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
                if h.check(tonic_health::pb::HealthCheckRequest::default())
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("manager not healthy; log:\n{}", self.log()).into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, then wait for the process to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("manager.log")).unwrap_or_default()
    }

    pub fn admin_identity(&self) -> Result<(String, String), Error> {
        Ok((
            std::fs::read_to_string(self.dir.join("local-admin.pem"))?,
            std::fs::read_to_string(self.dir.join("local-admin-key.pem"))?,
        ))
    }

    /// A channel trusting the manager CA, presenting `identity` when given.
    pub async fn channel(&self, identity: Option<(&str, &str)>) -> Result<Channel, Error> {
        channel_to(&self.addr, &self.ca_pem, identity).await
    }

    pub async fn admin(&self) -> Result<Channel, Error> {
        let (c, k) = self.admin_identity()?;
        self.channel(Some((&c, &k))).await
    }

    /// Runs the manager binary's command line against this data directory.
    pub fn cli(&self, args: &[&str]) -> Result<std::process::Output, Error> {
        Ok(Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(&self.dir)
            .output()?)
    }

    /// `token create` through the command line (the running manager's path).
    pub fn token(&self, cluster: &str, ttl: &str) -> Result<String, Error> {
        let out = self.cli(&["token", "create", "--cluster", cluster, "--ttl", ttl])?;
        if !out.status.success() {
            return Err(format!(
                "token create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    }

    /// `user create` through the command line; returns (cert, key) or, with `bearer`, the
    /// token as the first element and an empty key.
    pub fn user(&self, name: &str, role: &str, bearer: bool) -> Result<(String, String), Error> {
        let out_dir = self.dir.join("users");
        let out_s = out_dir.to_string_lossy().to_string();
        let mut args = vec!["user", "create", name, "--role", role, "--out", &out_s];
        if bearer {
            args.push("--token");
        }
        let out = self.cli(&args)?;
        if !out.status.success() {
            return Err(format!(
                "user create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        if bearer {
            let stdout = String::from_utf8(out.stdout)?;
            let token = stdout
                .lines()
                .find_map(|l| l.strip_prefix("token: "))
                .ok_or("no token printed")?
                .to_string();
            return Ok((token, String::new()));
        }
        Ok((
            std::fs::read_to_string(out_dir.join(format!("{name}.pem")))?,
            std::fs::read_to_string(out_dir.join(format!("{name}-key.pem")))?,
        ))
    }

    pub async fn user_channel(&self, name: &str, role: &str) -> Result<Channel, Error> {
        let (c, k) = self.user(name, role, false)?;
        self.channel(Some((&c, &k))).await
    }

    /// Registers `cluster` with a fresh token; returns (cert, key).
    pub async fn register(&self, cluster: &str) -> Result<(String, String), Error> {
        let token = self.token(cluster, "1h")?;
        Ok(register(self, cluster, &token).await?)
    }
}

pub async fn channel_to(
    addr: &str,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, Error> {
    let tls = traceflow_pki::tonic_client_tls(ca_pem, identity, "localhost");
    Ok(Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

/// Registers with `token`: Ok((cert, key)) or the refusal.
pub async fn register(
    m: &Manager,
    cluster: &str,
    token: &str,
) -> Result<(String, String), RegisterError> {
    register_csr_name(m, cluster, cluster, token).await
}

#[derive(Debug)]
pub enum RegisterError {
    Status(tonic::Status),
    Other(String),
}

impl std::fmt::Display for RegisterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegisterError::Status(s) => write!(f, "{:?}: {}", s.code(), s.message()),
            RegisterError::Other(s) => f.write_str(s),
        }
    }
}
impl std::error::Error for RegisterError {}

pub async fn register_csr_name(
    m: &Manager,
    cluster: &str,
    csr_name: &str,
    token: &str,
) -> Result<(String, String), RegisterError> {
    let (csr, key) =
        traceflow_pki::generate_csr(csr_name).map_err(|e| RegisterError::Other(e.to_string()))?;
    let ch = m
        .channel(None)
        .await
        .map_err(|e| RegisterError::Other(e.to_string()))?;
    let mut c = pb::registration_service_client::RegistrationServiceClient::new(ch);
    let resp = c
        .register(pb::RegisterRequest {
            cluster: cluster.into(),
            token: token.into(),
            csr_pem: csr,
        })
        .await
        .map_err(RegisterError::Status)?
        .into_inner();
    Ok((resp.certificate_pem, key))
}

/// A fake adapter: a real Attach stream with a cluster certificate.
pub struct FakeAdapter {
    pub tx: mpsc::Sender<pb::AdapterMessage>,
    pub rx: tonic::Streaming<pb::ManagerMessage>,
}

impl FakeAdapter {
    /// Attaches and keeps the cluster alive with a heartbeat (1 of 1 agents) every 300 ms
    /// until the adapter is dropped.
    pub async fn attach(m: &Manager, cert: &str, key: &str) -> Result<FakeAdapter, tonic::Status> {
        let a = Self::attach_quiet(m, cert, key).await?;
        let weak = a.tx.downgrade();
        tokio::spawn(async move {
            loop {
                let Some(tx) = weak.upgrade() else { return };
                let beat = pb::AdapterMessage {
                    kind: Some(pb::adapter_message::Kind::Heartbeat(pb::AdapterHeartbeat {
                        connected_agents: 1,
                        expected_agents: 1,
                        agent_counters: Vec::new(),
                    })),
                };
                if tx.send(beat).await.is_err() {
                    return;
                }
                drop(tx);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        Ok(a)
    }

    /// Attaches without heartbeats (the test sends them).
    pub async fn attach_quiet(
        m: &Manager,
        cert: &str,
        key: &str,
    ) -> Result<FakeAdapter, tonic::Status> {
        Self::attach_with_hello(
            m,
            cert,
            key,
            pb::AdapterHello {
                version: "test".into(),
                ..Default::default()
            },
        )
        .await
    }

    /// Attaches without heartbeats, saying `hello` first.
    pub async fn attach_with_hello(
        m: &Manager,
        cert: &str,
        key: &str,
        hello: pb::AdapterHello,
    ) -> Result<FakeAdapter, tonic::Status> {
        let ch = m
            .channel(Some((cert, key)))
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut client = pb::adapter_service_client::AdapterServiceClient::new(ch);
        let (tx, rx) = mpsc::channel(64);
        let _ = tx
            .send(pb::AdapterMessage {
                kind: Some(pb::adapter_message::Kind::Hello(hello)),
            })
            .await;
        let resp = client.attach(ReceiverStream::new(rx)).await?;
        let mut a = FakeAdapter {
            tx,
            rx: resp.into_inner(),
        };
        // The first message must be the config.
        match a.next().await? {
            Some(pb::manager_message::Kind::Config(_)) => Ok(a),
            other => Err(tonic::Status::internal(format!(
                "first message was not ManagerConfig: {other:?}"
            ))),
        }
    }

    pub async fn next(&mut self) -> Result<Option<pb::manager_message::Kind>, tonic::Status> {
        match tokio::time::timeout(Duration::from_secs(10), self.rx.message()).await {
            Ok(r) => Ok(r?.and_then(|m| m.kind)),
            Err(_) => Err(tonic::Status::deadline_exceeded("no message within 10s")),
        }
    }

    pub async fn send(&self, kind: pb::adapter_message::Kind) -> TestResult {
        self.tx
            .send(pb::AdapterMessage { kind: Some(kind) })
            .await
            .map_err(|_| "adapter stream closed")?;
        Ok(())
    }

    pub async fn heartbeat(&self, connected: i32, expected: i32) -> TestResult {
        self.send(pb::adapter_message::Kind::Heartbeat(pb::AdapterHeartbeat {
            connected_agents: connected,
            expected_agents: expected,
            agent_counters: Vec::new(),
        }))
        .await
    }

    pub async fn sync_pods(&self, pods: &[(&str, &str, &str)]) -> TestResult {
        let inv = pb::Inventory {
            pods: pods
                .iter()
                .map(|(ns, name, node)| pb::InventoryPod {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                    node: node.to_string(),
                    ips: vec!["10.0.0.1".into()],
                    ..Default::default()
                })
                .collect(),
            namespaces: vec![pb::InventoryNamespace {
                name: "default".into(),
                ..Default::default()
            }],
            nodes: vec![pb::InventoryNode {
                name: "n0".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        self.send(pb::adapter_message::Kind::InventorySync(inv))
            .await
    }

    pub async fn update(&self, uid: &str, phase: pb::TraceflowPhase) -> TestResult {
        self.send(pb::adapter_message::Kind::TraceUpdate(pb::TraceUpdate {
            uid: uid.into(),
            status: Some(pb::TraceflowStatus {
                phase: phase as i32,
                ..Default::default()
            }),
        }))
        .await
    }

    /// Waits for the next CancelTrace: its uid.
    pub async fn expect_cancel(&mut self) -> Result<String, Error> {
        loop {
            match self.next().await? {
                Some(pb::manager_message::Kind::CancelTrace(c)) => return Ok(c.uid),
                Some(_) => continue,
                None => return Err("stream ended".into()),
            }
        }
    }

    /// Waits for the next StartTrace.
    pub async fn expect_start(&mut self) -> Result<pb::Traceflow, Error> {
        loop {
            match self.next().await? {
                Some(pb::manager_message::Kind::StartTrace(s)) => {
                    return s.trace.ok_or_else(|| "StartTrace without trace".into());
                }
                Some(_) => continue,
                None => return Err("stream ended".into()),
            }
        }
    }
}

/// A p0 → p1 spec in namespace default.
pub fn mk_spec() -> pb::TraceflowSpec {
    traceflow_core::fixtures::pod_to_pod("p0", "p1")
}

pub fn create_req(cluster: &str) -> pb::CreateTraceflowRequest {
    pb::CreateTraceflowRequest {
        cluster: cluster.into(),
        spec: Some(mk_spec()),
        name: String::new(),
    }
}

pub fn traces(ch: Channel) -> pb::traceflow_service_client::TraceflowServiceClient<Channel> {
    pb::traceflow_service_client::TraceflowServiceClient::new(ch)
}

pub fn clusters(ch: Channel) -> pb::cluster_service_client::ClusterServiceClient<Channel> {
    pb::cluster_service_client::ClusterServiceClient::new(ch)
}

pub fn phase_of(t: &pb::Traceflow) -> pb::TraceflowPhase {
    t.status
        .as_ref()
        .and_then(|s| pb::TraceflowPhase::try_from(s.phase).ok())
        .unwrap_or(pb::TraceflowPhase::PhaseUnspecified)
}

/// Polls `f` until it returns true or 10 s pass.
pub async fn eventually<F, Fut>(what: &str, mut f: F) -> TestResult
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if f().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("timed out waiting for {what}").into())
}

/// Polls (10 s) until trace `uid` reads back in `phase`; `what` names the wait on timeout.
/// The phase trace `uid` has now.
pub async fn phase_now(
    t: &mut pb::traceflow_service_client::TraceflowServiceClient<Channel>,
    uid: &str,
) -> Result<pb::TraceflowPhase, Error> {
    let got = t
        .get_traceflow(pb::GetTraceflowRequest {
            uid: uid.to_string(),
            name: String::new(),
        })
        .await?
        .into_inner();
    Ok(phase_of(&got))
}

pub async fn eventually_phase(
    t: &pb::traceflow_service_client::TraceflowServiceClient<Channel>,
    uid: &str,
    phase: pb::TraceflowPhase,
    what: &str,
) -> TestResult {
    eventually(what, || {
        let mut t = t.clone();
        let get = pb::GetTraceflowRequest {
            uid: uid.to_string(),
            name: String::new(),
        };
        async move {
            t.get_traceflow(get)
                .await
                .is_ok_and(|r| phase_of(r.get_ref()) == phase)
        }
    })
    .await
}

pub fn path_str(p: &Path) -> String {
    p.to_string_lossy().to_string()
}
