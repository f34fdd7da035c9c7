//! The charts' command lines against the real binaries: every container and init container
//! `helm template` renders (both charts; defaults and every ci/*.yaml) is run through its
//! binary's argument parser, so a flag, subcommand or value the charts pass that the binary does
//! not accept fails CI; the manager's exec probe (grpc.health.v1 over TLS with grpcurl) is run
//! against a real manager; the chart's agent CA issues working agent certificates; and the
//! adapter's in-cluster kubeconfig authenticates with a service-account token file.
//!
//! Needs the workspace's binaries (`cargo build --workspace --bins`), the pinned helm
//! (scripts/lib.sh) and grpcurl; fails loudly without them, never skips.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use common::text;
use serde_json::Value;

fn charts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts")
}

/// `helm template` of `chart` with `values` (None: defaults), as JSON documents.
fn render(chart: &str, values: Option<&Path>) -> Vec<Value> {
    let mut cmd = Command::new(common::k8s_tools::helm());
    cmd.args([
        "template",
        "tf",
        &charts().join(chart).display().to_string(),
    ]);
    if let Some(v) = values {
        cmd.arg("-f").arg(v);
    }
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("helm template {chart}: {e}"),
    };
    assert!(
        out.status.success(),
        "helm template {chart} {values:?}: {}",
        text(&out)
    );
    let yaml = String::from_utf8_lossy(&out.stdout);
    serde_yaml::Deserializer::from_str(&yaml)
        .filter_map(|d| serde::Deserialize::deserialize(d).ok())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// Every values file CI renders: each chart's ci/*.yaml, and the manager's defaults (the
/// cluster chart has required values; scripts/check-charts.sh checks it refuses without them).
fn renders() -> Vec<(String, Vec<Value>)> {
    let mut out = vec![(
        "traceflow-manager (defaults)".to_string(),
        render("traceflow-manager", None),
    )];
    for chart in ["traceflow-manager", "traceflow-cluster"] {
        let dir = charts().join(chart).join("ci");
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(d) => d.flatten().map(|e| e.path()).collect(),
            Err(e) => panic!("{}: {e}", dir.display()),
        };
        files.sort();
        for f in files {
            out.push((
                format!("{chart} ({})", f.display()),
                render(chart, Some(&f)),
            ));
        }
    }
    out
}

/// A container of a rendered workload: its binary, its arguments with `$(VAR)` expanded from
/// its environment (Downward API fields get a stand-in Node name), and its `TRACEFLOW_*`
/// variables that the arguments do not use (the binary itself must read them).
struct Invocation {
    origin: String,
    binary: String,
    args: Vec<String>,
    env_read: Vec<String>,
}

fn invocations(origin: &str, docs: &[Value]) -> Vec<Invocation> {
    let mut out = Vec::new();
    for doc in docs {
        let kind = doc["kind"].as_str().unwrap_or_default();
        if !matches!(kind, "Deployment" | "DaemonSet" | "StatefulSet" | "Job") {
            continue;
        }
        let spec = &doc["spec"]["template"]["spec"];
        for list in ["initContainers", "containers"] {
            for c in spec[list].as_array().into_iter().flatten() {
                let command: Vec<String> = c["command"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect();
                let Some(binary) = command.first() else {
                    panic!("{origin}: {kind} container {} has no command", c["name"]);
                };
                let mut env = BTreeMap::new();
                for e in c["env"].as_array().into_iter().flatten() {
                    let name = e["name"].as_str().unwrap_or_default().to_string();
                    let value = match e["value"].as_str() {
                        Some(v) => v.to_string(),
                        None if e.pointer("/valueFrom/fieldRef").is_some() => "node-a".into(),
                        None => "from-a-secret".into(),
                    };
                    env.insert(name, value);
                }
                let mut args: Vec<String> = command[1..].to_vec();
                args.extend(
                    c["args"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|s| s.as_str().map(String::from)),
                );
                let uses = |name: &str| args.iter().any(|a| a.contains(&format!("$({name})")));
                let env_read = env
                    .keys()
                    .filter(|k| k.starts_with("TRACEFLOW_") && !uses(k))
                    .cloned()
                    .collect();
                let args = args
                    .iter()
                    .map(|a| {
                        env.iter()
                            .fold(a.clone(), |a, (k, v)| a.replace(&format!("$({k})"), v))
                    })
                    .collect();
                out.push(Invocation {
                    origin: format!("{origin}: {kind}/{} {}", doc["metadata"]["name"], c["name"]),
                    binary: Path::new(binary)
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    args,
                    env_read,
                });
            }
        }
    }
    out
}

/// Runs the workspace's `binary` with `args` and `--help` last: clap rejects an unknown
/// argument or a bad value where it meets it, before it reaches `--help`.
fn parse(binary: &str, args: &[String]) -> Output {
    let path = common::bin_dir().join(binary);
    match Command::new(&path).args(args).arg("--help").output() {
        Ok(o) => o,
        Err(e) => panic!(
            "cannot run {}: {e}; run `cargo build --workspace --bins` first",
            path.display()
        ),
    }
}

#[test]
fn every_chart_command_line_parses_with_the_real_binaries() {
    let mut seen = BTreeSet::new();
    for (origin, docs) in renders() {
        for inv in invocations(&origin, &docs) {
            let out = parse(&inv.binary, &inv.args);
            let help = text(&out);
            assert!(
                out.status.success(),
                "{}: `{} {}` is refused by the binary's argument parser:\n{help}",
                inv.origin,
                inv.binary,
                inv.args.join(" ")
            );
            for var in &inv.env_read {
                assert!(
                    help.contains(&format!("[env: {var}")),
                    "{}: sets {var}, which `{} {}` does not read:\n{help}",
                    inv.origin,
                    inv.binary,
                    inv.args.first().map(String::as_str).unwrap_or_default()
                );
            }
            let sub = inv
                .args
                .first()
                .filter(|a| !a.starts_with('-'))
                .cloned()
                .unwrap_or_default();
            seen.insert(format!("{} {sub}", inv.binary).trim().to_string());
        }
    }
    let want: BTreeSet<String> = [
        "traceflow-manager serve",
        "traceflow-adapter run",
        "traceflow-adapter agent-cert",
        "traceflow-agent",
    ]
    .map(String::from)
    .into();
    assert_eq!(seen, want, "the charts run other commands than expected");
}

#[test]
fn the_check_catches_a_flag_a_binary_does_not_accept() {
    let docs = render(
        "traceflow-cluster",
        Some(&charts().join("traceflow-cluster/ci/minimal-values.yaml")),
    );
    let inv = invocations("minimal", &docs);
    let Some(agent) = inv.iter().find(|i| i.binary == "traceflow-agent") else {
        panic!("no agent container rendered");
    };
    let mut args = agent.args.clone();
    args.push("--ovs-socket=/var/run/openvswitch/db.sock".into());
    let out = parse("traceflow-agent", &args);
    assert!(
        !out.status.success() && text(&out).contains("--ovs-socket"),
        "{}",
        text(&out)
    );
}

/// The manager Deployment's exec probe, with its paths pointed at a real manager's data
/// directory and address: grpc.health.v1 answers SERVING over TLS verified by the manager's CA.
#[test]
fn the_managers_exec_probe_checks_grpc_health_over_tls() {
    let docs = render("traceflow-manager", None);
    let Some(deploy) = docs.iter().find(|d| d["kind"] == "Deployment") else {
        panic!("no Deployment rendered");
    };
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    let probe: Vec<String> = container["readinessProbe"]["exec"]["command"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(String::from))
        .collect();
    assert_eq!(
        probe.first().map(String::as_str),
        Some("grpcurl"),
        "{probe:?}"
    );
    for p in ["livenessProbe", "startupProbe"] {
        assert_eq!(
            container[p]["exec"]["command"], container["readinessProbe"]["exec"]["command"],
            "{p}"
        );
    }

    // The data directory the chart gives `serve`, which the probe's paths are under.
    let Some(chart_data_dir) = container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(|a| a.strip_prefix("--data-dir="))
    else {
        panic!("the manager container has no --data-dir=");
    };
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("temp dir: {e}"),
    };
    let data = dir.path().join("data");
    let mut manager = match Command::new(common::bin_dir().join("traceflow-manager"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("cannot start traceflow-manager: {e}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = loop {
        if let Ok(a) = std::fs::read_to_string(data.join("listen.addr")) {
            break a.trim().to_string();
        }
        if Instant::now() > deadline {
            let _ = manager.kill();
            panic!("the manager did not write listen.addr within 20s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // scripts/images.sh puts images/grpc-health-v1.proto at /usr/share/traceflow.
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images");
    let args: Vec<String> = probe[1..]
        .iter()
        .map(|a| {
            a.replace(
                &format!("{chart_data_dir}/"),
                &format!("{}/", data.display()),
            )
            .replace("/usr/share/traceflow", &images.display().to_string())
            .replace("127.0.0.1:7443", &addr)
        })
        .collect();
    let out = Command::new("grpcurl").args(&args).output();
    let _ = manager.kill();
    let _ = manager.wait();
    let out = match out {
        Ok(o) => o,
        Err(e) => panic!("cannot run grpcurl ({e}); scripts/lib.sh installs it"),
    };
    assert!(
        out.status.success() && text(&out).contains("\"SERVING\""),
        "probe `grpcurl {}`: {}",
        args.join(" "),
        text(&out)
    );
}

fn base64_decode(b64: &str) -> Vec<u8> {
    use std::io::Write;
    let mut child = match Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("base64: {e}"),
    };
    if let Some(mut stdin) = child.stdin.take()
        && let Err(e) = stdin.write_all(b64.as_bytes())
    {
        panic!("base64 stdin: {e}");
    }
    match child.wait_with_output() {
        Ok(o) if o.status.success() => o.stdout,
        other => panic!("base64 -d: {other:?}"),
    }
}

/// The agent CA the cluster chart generates (Ed25519, the only PKCS#8 key Helm makes) works
/// for the whole agent flow: the init container's exact `traceflow-adapter agent-cert` issues a
/// Node certificate from it, and an mTLS handshake (rustls with ring, as tonic uses) between
/// an adapter-style server certificate and that agent certificate succeeds both ways.
#[test]
fn the_charts_agent_ca_issues_working_agent_certificates() {
    let docs = render(
        "traceflow-cluster",
        Some(&charts().join("traceflow-cluster/ci/minimal-values.yaml")),
    );
    let Some(secret) = docs
        .iter()
        .find(|d| d["kind"] == "Secret" && d["type"] == "kubernetes.io/tls")
    else {
        panic!("no agent CA Secret rendered");
    };
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("temp dir: {e}"),
    };
    let (ca_dir, certs) = (dir.path().join("agent-ca"), dir.path().join("certs"));
    let write = |path: PathBuf, key: &str| {
        let data = base64_decode(secret["data"][key].as_str().unwrap_or_default());
        if let Err(e) = std::fs::create_dir_all(&ca_dir).and_then(|()| std::fs::write(path, data)) {
            panic!("writing the agent CA: {e}");
        }
    };
    write(ca_dir.join("agent-ca.pem"), "tls.crt");
    write(ca_dir.join("agent-ca-key.pem"), "tls.key");

    let inv = invocations("minimal", &docs);
    let Some(init) = inv
        .iter()
        .find(|i| i.args.first().map(String::as_str) == Some("agent-cert"))
    else {
        panic!("no agent-cert init container rendered");
    };
    let args: Vec<String> = init
        .args
        .iter()
        .map(|a| {
            a.replace("/etc/traceflow/agent-ca", &ca_dir.display().to_string())
                .replace("/certs", &certs.display().to_string())
        })
        .collect();
    let out = Command::new(common::bin_dir().join("traceflow-adapter"))
        .args(&args)
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => panic!("traceflow-adapter agent-cert: {e}"),
    };
    assert!(out.status.success(), "agent-cert {args:?}: {}", text(&out));
    // The init container's data dir is the read-only Secret mount: nothing is recorded there
    // (the adapter adopts the certificate, --adopt-newer-agent-certs).
    assert!(
        !ca_dir.join("agent-serials").exists(),
        "agent-cert wrote serial records into the read-only agent CA mount"
    );

    let read = |p: PathBuf| match std::fs::read_to_string(&p) {
        Ok(s) => s,
        Err(e) => panic!("{}: {e}", p.display()),
    };
    let ca_pem = read(ca_dir.join("agent-ca.pem"));
    let agent_cert = read(certs.join("node-a.pem"));
    let agent_key = read(certs.join("node-a-key.pem"));
    let ca = match traceflow_pki::CertificateAuthority::from_pem(
        &ca_pem,
        &read(ca_dir.join("agent-ca-key.pem")),
    ) {
        Ok(c) => c,
        Err(e) => panic!("the chart's agent CA does not load: {e}"),
    };
    let server = match ca.issue_server("traceflow-adapter", &["localhost".into()]) {
        Ok(s) => s,
        Err(e) => panic!("adapter server certificate: {e}"),
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => panic!("tokio: {e}"),
    };
    let result = rt.block_on(mtls_round_trip(
        &ca_pem,
        (&server.cert_pem, &server.key_pem),
        (&agent_cert, &agent_key),
    ));
    if let Err(e) = result {
        panic!("mTLS with the chart's agent CA: {e}");
    }
}

async fn mtls_round_trip(
    ca_pem: &str,
    server: (&str, &str),
    client: (&str, &str),
) -> Result<(), Box<dyn std::error::Error>> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let roots = Arc::new(roots);
    let certs =
        |pem: &str| CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()?;
    let server_cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(server.0)?,
            PrivateKeyDer::from_pem_slice(server.1.as_bytes())?,
        )?;
    let client_cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            certs(client.0)?,
            PrivateKeyDer::from_pem_slice(client.1.as_bytes())?,
        )?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first().cloned())
            .ok_or("no client certificate")?;
        let id = traceflow_pki::peer_identity(peer.as_ref())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        tls.write_all(format!("{id:?}").as_bytes()).await?;
        tls.shutdown().await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    });
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls = connector
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    tls.write_all(b"ping").await?;
    let mut said = String::new();
    tls.read_to_string(&mut said).await?;
    server_task.await?.map_err(|e| e.to_string())?;
    if !said.contains("node-a") {
        return Err(format!("the adapter side saw {said:?}, not Node node-a").into());
    }
    Ok(())
}

/// The adapter's in-cluster kubeconfig from the cluster chart, read by the real `kube` client:
/// server, CA and the service-account token file it names are pointed at a lab API endpoint
/// (the only change), and the client lists Pods with the token it read from the file.
#[test]
fn the_adapters_kubeconfig_authenticates_with_the_token_file() {
    let docs = render(
        "traceflow-cluster",
        Some(&charts().join("traceflow-cluster/ci/minimal-values.yaml")),
    );
    let Some(kubeconfig) = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["data"]["kubeconfig"].is_string())
        .and_then(|d| d["data"]["kubeconfig"].as_str())
    else {
        panic!("no kubeconfig ConfigMap rendered");
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => panic!("tokio: {e}"),
    };
    if let Err(e) = rt.block_on(list_pods_with(kubeconfig)) {
        panic!("the chart's kubeconfig does not work: {e}\n{kubeconfig}");
    }
}

async fn list_pods_with(kubeconfig: &str) -> Result<(), Box<dyn std::error::Error>> {
    use k8s_openapi::api::core::v1::Pod;
    use traceflow_lab::kubeapi;

    const SA: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
    let topo = traceflow_lab::topology::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/one-node.yaml"),
    )?;
    let store = kubeapi::store::Store::with_objects(topo.clusters[0].objects.clone())?;
    let ca = traceflow_pki::CertificateAuthority::generate("chart kubeconfig test ca")?;
    let leaf = ca.issue_server("kubernetes", &["localhost".into(), "127.0.0.1".into()])?;
    let tls = traceflow_pki::rustls_server_config(&leaf.cert_pem, &leaf.key_pem)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let state = kubeapi::server::ApiState::new("c1", "projected-sa-token", store);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(kubeapi::server::serve(listener, tls, state, async {
        let _ = stopped.await;
    }));

    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("ca.crt"), ca.cert_pem())?;
    // Projected tokens have no trailing newline (and kube sends the file as is).
    std::fs::write(dir.path().join("token"), "projected-sa-token")?;
    let text = kubeconfig
        .replace("https://kubernetes.default.svc", &format!("https://{addr}"))
        .replace(SA, &dir.path().display().to_string());
    let kc: kube::config::Kubeconfig = serde_yaml::from_str(&text)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await?;
    let client = kube::Client::try_from(cfg)?;
    let pods: kube::Api<Pod> = kube::Api::all(client);
    let list = pods.list(&Default::default()).await?;
    let _ = stop.send(());
    if list.items.len() != 3 {
        return Err(format!("listed {} Pods, want the topology's 3", list.items.len()).into());
    }
    Ok(())
}
