//! The control plane of a lab: a Kubernetes API per cluster, the manager, an adapter per
//! cluster (registered through the real bootstrap-token flow), an agent per Node, and the
//! admin's tfctl config. Flags are exactly those of docs/contracts.md.
//!
//! ```text
//!  serve-api (per cluster) ◀── adapter ──mTLS──▶ manager ◀── tfctl / grpcurl (admin cert)
//!                               ▲ mTLS
//!                             agent (per Node) ──unix sockets──▶ <rundir>/br-int.mgmt, db.sock
//! ```

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    time::Duration,
};

use traceflow_proto::v1::{
    ClusterHealth, ListClustersRequest, cluster_service_client::ClusterServiceClient,
};
use tracing::info;

use super::{LabError, io_err, up::Shared};
use crate::{
    kubeapi,
    procs::{self, ProcRecord},
};

/// The product's binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub lab: PathBuf,
    pub manager: PathBuf,
    pub adapter: PathBuf,
    pub agent: PathBuf,
    pub tfctl: PathBuf,
}

impl Binaries {
    /// Finds the binaries in `dir`, else `$TRACEFLOW_BIN_DIR`, else next to this executable.
    pub fn find(dir: Option<&Path>) -> Result<Self, LabError> {
        let lab = std::env::current_exe().map_err(|e| LabError::Io {
            path: PathBuf::from("/proc/self/exe"),
            source: e,
        })?;
        let dir = dir
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("TRACEFLOW_BIN_DIR").map(PathBuf::from))
            .or_else(|| lab.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        let get = |name: &str| -> Result<PathBuf, LabError> {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(LabError::Precondition(format!(
                    "{name} not found in {} (set TRACEFLOW_BIN_DIR, or build it: cargo build \
                     --workspace --bins)",
                    dir.display()
                )))
            }
        };
        Ok(Self {
            manager: get("traceflow-manager")?,
            adapter: get("traceflow-adapter")?,
            agent: get("traceflow-agent")?,
            tfctl: get("tfctl")?,
            lab,
        })
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A free TCP port on 127.0.0.1 (bound and released; the daemon binds it right after).
fn free_port() -> Result<u16, LabError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| LabError::Io {
        path: PathBuf::from("127.0.0.1:0"),
        source: e,
    })?;
    l.local_addr().map(|a| a.port()).map_err(|e| LabError::Io {
        path: PathBuf::from("127.0.0.1:0"),
        source: e,
    })
}

/// Runs a one-shot command of the product (token create, agent-cert, user create) and returns
/// its stdout; its output is also appended to `log`.
async fn run_tool(program: &Path, args: &[String], log: &Path) -> Result<String, LabError> {
    let command = format!("{} {}", program.display(), args.join(" "));
    info!(%command, "run");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(program)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| LabError::Other(format!("`{command}` did not finish within 60s")))?
    .map_err(|e| LabError::Other(format!("`{command}` could not start: {e}")))?;
    let mut text = format!("$ {command}\n");
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    append(log, &text);
    if !out.status.success() {
        return Err(LabError::Daemon {
            what: format!("`{command}`"),
            detail: format!("exit {}", out.status),
            log: s(log),
            tail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn append(log: &Path, text: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = f.write_all(text.as_bytes());
    }
}

fn died(p: &ProcRecord, what: &str) -> LabError {
    LabError::Daemon {
        what: what.to_string(),
        detail: format!(
            "process {} (pid {}) exited; command: {}",
            p.name, p.pid, p.command
        ),
        log: s(&p.log),
        tail: p.log_tail(20),
    }
}

/// Waits until `ready()` returns Some, failing early if `p` dies.
async fn wait_for<T>(
    p: &ProcRecord,
    what: &str,
    deadline: Duration,
    mut ready: impl FnMut() -> Option<T>,
) -> Result<T, LabError> {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = ready() {
            return Ok(v);
        }
        if !p.alive() {
            return Err(died(p, what));
        }
        if tokio::time::Instant::now() >= end {
            return Err(LabError::Daemon {
                what: what.to_string(),
                detail: format!("not ready after {}s (pid {})", deadline.as_secs(), p.pid),
                log: s(&p.log),
                tail: p.log_tail(20),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn spawn(
    shared: &Shared,
    name: &str,
    program: &Path,
    args: Vec<String>,
) -> Result<ProcRecord, LabError> {
    let log = shared.paths.log(name);
    let rec = procs::spawn_detached(name, program, &args, &[], &log)?;
    let r = rec.clone();
    shared.update(|st| st.processes.push(r))?;
    Ok(rec)
}

/// Starts the control plane and waits until every cluster is Up.
pub async fn start(
    shared: &Shared,
    bins: &Binaries,
    ready_timeout: Duration,
) -> Result<(), LabError> {
    let paths = shared.paths.clone();
    let topo = shared.snapshot()?.topology;

    // Lab CA for the Kubernetes API endpoints.
    let ca = traceflow_pki::CertificateAuthority::generate("traceflow-lab kubernetes CA")
        .map_err(|e| LabError::Other(format!("lab CA: {e}")))?;
    let (ca_path, ca_key_path) = paths.lab_ca();
    write(&ca_path, ca.cert_pem())?;
    write_private(&ca_key_path, ca.key_pem())?;

    // 1. Kubernetes API per cluster.
    let mut api_procs = Vec::new();
    for c in &topo.clusters {
        let dir = paths.kubeapi(&c.name);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let objects = serde_json::to_string_pretty(&c.objects)
            .map_err(|e| LabError::Other(format!("objects of {}: {e}", c.name)))?;
        write(&dir.join("objects.json"), &objects)?;
        let sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let leaf = ca
            .issue_server("kubernetes", &sans)
            .map_err(|e| LabError::Other(format!("API certificate: {e}")))?;
        write(&dir.join("cert.pem"), &leaf.cert_pem)?;
        write_private(&dir.join("key.pem"), &leaf.key_pem)?;
        let token: String = (0..32)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        write_private(&dir.join("token"), &token)?;
        let addr_file = dir.join("addr");
        let _ = std::fs::remove_file(&addr_file);
        let args = vec![
            "serve-api".into(),
            "--cluster".into(),
            c.name.clone(),
            "--objects".into(),
            s(&dir.join("objects.json")),
            "--cert".into(),
            s(&dir.join("cert.pem")),
            "--key".into(),
            s(&dir.join("key.pem")),
            "--token-file".into(),
            s(&dir.join("token")),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--addr-file".into(),
            s(&addr_file),
        ];
        let rec = spawn(shared, &format!("kubeapi/{}", c.name), &bins.lab, args)?;
        api_procs.push((c.name.clone(), rec, addr_file, token));
    }
    for (name, rec, addr_file, token) in api_procs {
        let addr: SocketAddr = wait_for(
            &rec,
            &format!("Kubernetes API of {name}"),
            Duration::from_secs(15),
            || {
                std::fs::read_to_string(&addr_file)
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            },
        )
        .await?;
        let url = format!("https://{addr}");
        write_private(
            &paths.kubeconfig(&name),
            &kubeapi::kubeconfig(&name, &url, &ca_path, &token),
        )?;
        shared.update(|st| {
            st.kube_apis.insert(name.clone(), url.clone());
        })?;
    }

    // 2. Manager.
    let mdir = paths.manager();
    std::fs::create_dir_all(&mdir).map_err(io_err(&mdir))?;
    let mport = free_port()?;
    let manager = spawn(
        shared,
        "manager",
        &bins.manager,
        vec![
            "serve".into(),
            "--data-dir".into(),
            s(&mdir),
            "--listen".into(),
            format!("127.0.0.1:{mport}"),
        ],
    )?;
    let listen_file = mdir.join("listen.addr");
    let ca_file = mdir.join("ca.pem");
    let maddr: String = wait_for(
        &manager,
        "traceflow-manager serve",
        Duration::from_secs(30),
        || {
            let a = std::fs::read_to_string(&listen_file).ok()?;
            let a = a.trim().to_string();
            (!a.is_empty() && ca_file.exists()).then_some(a)
        },
    )
    .await?;
    let manager_url = format!("https://{}", maddr.trim_start_matches("https://"));
    shared.update(|st| st.manager = Some(manager_url.clone()))?;
    let tool_log = paths.log("tools");

    // 3. Adapters and agents.
    let mut watched = vec![manager.clone()];
    for c in &topo.clusters {
        let out = run_tool(
            &bins.manager,
            &[
                "token".into(),
                "create".into(),
                "--cluster".into(),
                c.name.clone(),
                "--data-dir".into(),
                s(&mdir),
            ],
            &tool_log,
        )
        .await?;
        let token = out
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .ok_or_else(|| {
                LabError::Other(format!(
                    "`traceflow-manager token create --cluster {}` printed no token; see {}",
                    c.name,
                    s(&tool_log)
                ))
            })?
            .to_string();
        let adir = paths.adapter(&c.name);
        std::fs::create_dir_all(&adir).map_err(io_err(&adir))?;
        for n in &c.nodes {
            let out_dir = paths.agent_dir(&c.name, &n.name);
            std::fs::create_dir_all(&out_dir).map_err(io_err(&out_dir))?;
            run_tool(
                &bins.adapter,
                &[
                    "agent-cert".into(),
                    "--data-dir".into(),
                    s(&adir),
                    "--node".into(),
                    n.name.clone(),
                    "--out".into(),
                    s(&out_dir),
                ],
                &tool_log,
            )
            .await?;
        }
        let aport = free_port()?;
        let adapter = spawn(
            shared,
            &format!("adapter/{}", c.name),
            &bins.adapter,
            vec![
                "run".into(),
                "--cluster".into(),
                c.name.clone(),
                "--data-dir".into(),
                s(&adir),
                "--manager".into(),
                manager_url.clone(),
                "--manager-ca".into(),
                s(&ca_file),
                "--token".into(),
                token,
                "--kubeconfig".into(),
                s(&paths.kubeconfig(&c.name)),
                "--agent-listen".into(),
                format!("127.0.0.1:{aport}"),
            ],
        )?;
        let adapter_url = format!("https://127.0.0.1:{aport}");
        shared.update(|st| {
            st.adapters.insert(c.name.clone(), adapter_url.clone());
        })?;
        watched.push(adapter);
        for n in &c.nodes {
            let d = paths.agent_dir(&c.name, &n.name);
            let agent = spawn(
                shared,
                &format!("agent/{}/{}", c.name, n.name),
                &bins.agent,
                vec![
                    "--node".into(),
                    n.name.clone(),
                    "--adapter".into(),
                    adapter_url.clone(),
                    "--ca".into(),
                    s(&d.join("agent-ca.pem")),
                    "--cert".into(),
                    s(&d.join(format!("{}.pem", n.name))),
                    "--key".into(),
                    s(&d.join(format!("{}-key.pem", n.name))),
                    "--ovs-rundir".into(),
                    s(&paths.ovs_rundir(&c.name, &n.name)),
                ],
            )?;
            watched.push(agent);
        }
    }

    // 4. Admin user and tfctl config.
    let admin = paths.admin();
    std::fs::create_dir_all(&admin).map_err(io_err(&admin))?;
    run_tool(
        &bins.manager,
        &[
            "user".into(),
            "create".into(),
            "admin".into(),
            "--role".into(),
            "admin".into(),
            "--data-dir".into(),
            s(&mdir),
            "--out".into(),
            s(&admin),
        ],
        &tool_log,
    )
    .await?;
    let cfg = admin.join("admin.tfctl.yaml");
    if !cfg.exists() {
        write(
            &cfg,
            &format!(
                "server: {manager_url}\nserverName: localhost\nca: ca.pem\ncert: admin.pem\n\
                 key: admin-key.pem\n"
            ),
        )?;
    }
    shared.update(|st| st.tfctl_config = Some(cfg.clone()))?;

    // 5. Every cluster Up.
    wait_ready(shared, &manager_url, &admin, &watched, ready_timeout).await
}

fn write(path: &Path, text: &str) -> Result<(), LabError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    std::fs::write(path, text).map_err(io_err(path))
}

/// Writes a secret (key, token) readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<(), LabError> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(text.as_bytes()).map_err(io_err(path))
}

fn read(path: &Path) -> Result<String, LabError> {
    std::fs::read_to_string(path).map_err(io_err(path))
}

/// Polls `ClusterService.ListClusters` with the admin certificate until every cluster of the
/// topology reports health Up.
async fn wait_ready(
    shared: &Shared,
    manager_url: &str,
    admin: &Path,
    watched: &[ProcRecord],
    timeout: Duration,
) -> Result<(), LabError> {
    let ca = read(&admin.join("ca.pem"))?;
    let cert = read(&admin.join("admin.pem"))?;
    let key = read(&admin.join("admin-key.pem"))?;
    let tls = traceflow_pki::tonic_client_tls(&ca, Some((&cert, &key)), "localhost");
    let st = shared.snapshot()?;
    let wanted: Vec<String> = st
        .topology
        .clusters
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let end = tokio::time::Instant::now() + timeout;
    let mut last: String;
    loop {
        for p in watched {
            if !p.alive() {
                return Err(died(p, "waiting for the clusters to come Up"));
            }
        }
        match list_clusters(manager_url, tls.clone()).await {
            Ok(clusters) => {
                let mut missing = Vec::new();
                for w in &wanted {
                    match clusters.iter().find(|c| &c.name == w) {
                        Some(c) if c.health == ClusterHealth::Up as i32 => {}
                        Some(c) => missing.push(format!(
                            "{w}: health {}, agents {}/{}",
                            ClusterHealth::try_from(c.health)
                                .map(|h| format!("{h:?}"))
                                .unwrap_or_else(|_| c.health.to_string()),
                            c.connected_agents,
                            c.expected_agents
                        )),
                        None => missing.push(format!("{w}: not registered")),
                    }
                }
                if missing.is_empty() {
                    info!(clusters = ?wanted, "all clusters Up");
                    return Ok(());
                }
                last = missing.join("; ");
            }
            Err(e) => last = format!("ListClusters: {e}"),
        }
        if tokio::time::Instant::now() >= end {
            let logs: Vec<String> = watched.iter().map(|p| s(&p.log)).collect();
            return Err(LabError::Other(format!(
                "clusters not Up after {}s ({last}); read the logs: {}",
                timeout.as_secs(),
                logs.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn list_clusters(
    url: &str,
    tls: tonic::transport::ClientTlsConfig,
) -> Result<Vec<traceflow_proto::v1::Cluster>, String> {
    let channel = tonic::transport::Channel::from_shared(url.to_string())
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let resp = ClusterServiceClient::new(channel)
        .list_clusters(ListClustersRequest::default())
        .await
        .map_err(|e| format!("{}: {}", e.code(), e.message()))?;
    Ok(resp.into_inner().clusters)
}
