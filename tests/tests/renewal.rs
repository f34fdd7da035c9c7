//! Certificate renewal in the lab, real binaries end to end: the manager signs 30 s cluster
//! certificates and the adapter 20 s agent certificates (`TRACEFLOW_MANAGER_LEAF_CERT_LIFETIME`,
//! `TRACEFLOW_AGENT_CERT_LIFETIME`, inherited by every daemon and by `agent-cert`), so both the
//! adapter and the agent renew theirs within the first ~20 s. Traces run back to back the whole
//! time and after both renewals, and every one must succeed (no stream is lost); each old
//! certificate is tried as soon as it was renewed away (still valid, so what refuses it is its
//! serial), and the manager lists the adapter's new serial.
//!
//! Needs root, Open vSwitch and the workspace's binaries (`cargo build --workspace --bins`);
//! fails loudly without them, never skips.

mod common;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use common::{Lab, require_lab_prerequisites, topology, trace};
use tokio_stream::wrappers::ReceiverStream;
use traceflow_proto::v1 as pb;

const CLUSTER_LIFETIME: &str = "30s";
const AGENT_LIFETIME: &str = "20s";
/// Leaves start 5 minutes before they are issued (clock skew).
const BACKDATE: i64 = 300;

fn read(p: &Path) -> Result<String, String> {
    std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))
}

fn identity(pem: &str) -> Result<traceflow_pki::PeerIdentity, String> {
    traceflow_pki::pem_identity(pem).map_err(|e| e.to_string())
}

fn succeeded(t: &pb::Traceflow) -> bool {
    t.status
        .as_ref()
        .is_some_and(|s| s.phase == pb::TraceflowPhase::Succeeded as i32)
}

async fn channel(
    url: &str,
    ca: &str,
    (cert, key): &(String, String),
) -> Result<tonic::transport::Channel, String> {
    let tls = traceflow_pki::tonic_client_tls(ca, Some((cert, key)), "localhost");
    tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connecting to {url}: {e}"))
}

/// The manager refuses the superseded cluster certificate.
async fn old_cluster_refused(url: &str, ca: &str, old: &(String, String)) -> Result<(), String> {
    let ch = channel(url, ca, old).await?;
    let (csr_pem, _) = traceflow_pki::generate_csr("c1").map_err(|e| e.to_string())?;
    match pb::registration_service_client::RegistrationServiceClient::new(ch)
        .renew_cluster_certificate(pb::RenewClusterCertificateRequest { csr_pem })
        .await
    {
        Err(s)
            if s.code() == tonic::Code::Unauthenticated && s.message().contains("superseded") =>
        {
            Ok(())
        }
        other => Err(format!("old cluster certificate: {other:?}")),
    }
}

/// The adapter refuses the superseded agent certificate, saying to re-issue it.
async fn old_agent_refused(url: &str, ca: &str, old: &(String, String)) -> Result<(), String> {
    let ch = channel(url, ca, old).await?;
    let (_tx, rx) = tokio::sync::mpsc::channel::<pb::AgentMessage>(1);
    match pb::agent_service_client::AgentServiceClient::new(ch)
        .attach(ReceiverStream::new(rx))
        .await
    {
        Err(s) if s.code() == tonic::Code::Unauthenticated && s.message().contains("re-issue") => {
            Ok(())
        }
        Err(s) => Err(format!("old agent certificate: {s:?}")),
        Ok(_) => Err("the adapter accepted the old agent certificate".into()),
    }
}

/// One certificate the test watches: its files, the certificate it started with, and whether
/// the old one was already tried.
struct Watched {
    what: &'static str,
    cert: std::path::PathBuf,
    old: (String, String),
    old_id: traceflow_pki::PeerIdentity,
    lifetime: i64,
    checked: bool,
}

impl Watched {
    fn new(
        what: &'static str,
        cert: std::path::PathBuf,
        key: &Path,
        lifetime: i64,
    ) -> Result<Self, String> {
        let old = (read(&cert)?, read(key)?);
        let old_id = identity(&old.0)?;
        Ok(Self {
            what,
            cert,
            old,
            old_id,
            lifetime,
            checked: false,
        })
    }

    /// The current certificate when it is not the one the test started with.
    fn renewed(&self) -> Result<Option<traceflow_pki::PeerIdentity>, String> {
        let now = identity(&read(&self.cert)?)?;
        Ok((now.serial != self.old_id.serial).then_some(now))
    }
}

#[test]
fn adapter_and_agent_renew_their_certificates_while_traces_keep_succeeding() {
    require_lab_prerequisites();
    trace::require_binaries();
    let mut lab = Lab::new("rn");
    lab.env = vec![
        (
            "TRACEFLOW_MANAGER_LEAF_CERT_LIFETIME".into(),
            CLUSTER_LIFETIME.into(),
        ),
        (
            "TRACEFLOW_AGENT_CERT_LIFETIME".into(),
            AGENT_LIFETIME.into(),
        ),
    ];
    let cfg = trace::up_with_config(&mut lab, &topology("one-node.yaml"));
    let cluster_dir = lab.dir.join("clusters/c1/adapter");
    let agent_dir = lab.dir.join("clusters/c1/nodes/n1/agent");
    let state: serde_json::Value = read(&lab.dir.join("state.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let manager_url = trace::manager_url(&cfg);
    let adapter_url = state
        .pointer("/adapters/c1")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_string();
    let result = trace::runtime().block_on(async {
        let mut failures = Vec::new();
        let mut cluster = Watched::new(
            "cluster",
            cluster_dir.join("cluster.pem"),
            &cluster_dir.join("cluster-key.pem"),
            30,
        )?;
        let mut agent = Watched::new(
            "agent",
            agent_dir.join("n1.pem"),
            &agent_dir.join("n1-key.pem"),
            20,
        )?;
        let manager_ca = read(&lab.dir.join("admin/ca.pem"))?;
        let agent_ca = read(&agent_dir.join("agent-ca.pem"))?;
        let mut api = trace::Api::connect(&cfg).await?;
        api.wait_pods("c1", 3).await?;

        // Traces back to back until both certificates were renewed, and one more after.
        let deadline = Instant::now() + Duration::from_secs(45);
        let mut traces = 0;
        let mut both_renewed = false;
        loop {
            // A few at once, so some are in flight (injected, reporting) at each renewal.
            let batch: Vec<_> = ["default/p1", "default/p2", "default/p1", "default/p2"]
                .into_iter()
                .map(|dst| {
                    let mut api = api.clone();
                    tokio::spawn(async move {
                        api.run("c1", trace::spec("default/p0", trace::to_pod(dst), None))
                            .await
                    })
                })
                .collect();
            for t in batch {
                let t = t.await.map_err(|e| e.to_string())??;
                traces += 1;
                if !succeeded(&t) {
                    failures.push(format!(
                        "trace {traces} ended {}: {}",
                        trace::phase(&t),
                        t.status.as_ref().map(|s| s.reason.as_str()).unwrap_or("")
                    ));
                }
            }
            if both_renewed {
                break;
            }
            for w in [&mut cluster, &mut agent] {
                let Some(now) = w.renewed()? else { continue };
                if w.checked {
                    continue;
                }
                w.checked = true;
                if now.not_after - now.not_before != w.lifetime + BACKDATE {
                    failures.push(format!("renewed {} certificate lifetime: {now:?}", w.what));
                }
                // Tried while still valid: what refuses it must be the serial, not its expiry.
                if traceflow_daemon::renewal::unix_now() + 2 >= w.old_id.not_after {
                    failures.push(format!(
                        "the {} certificate was renewed only just before it expired",
                        w.what
                    ));
                    continue;
                }
                let refused = match w.what {
                    "cluster" => old_cluster_refused(&manager_url, &manager_ca, &w.old).await,
                    _ => old_agent_refused(&adapter_url, &agent_ca, &w.old).await,
                };
                if let Err(e) = refused {
                    failures.push(e);
                }
            }
            both_renewed = cluster.checked && agent.checked;
            if Instant::now() > deadline {
                return Err(format!(
                    "not both certificates renewed within 45 s (cluster renewed: {}, agent \
                     renewed: {}) after {traces} traces",
                    cluster.checked, agent.checked
                ));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        eprintln!("{traces} traces across both renewals");

        // The manager lists the serial of the adapter's current certificate (which may renew
        // again meanwhile: compare with the file read around the call).
        let mut listed = false;
        for _ in 0..10 {
            let before = identity(&read(&cluster.cert)?)?.serial;
            let c = api
                .clusters
                .get_cluster(pb::GetClusterRequest { name: "c1".into() })
                .await
                .map_err(|s| format!("GetCluster: {s:?}"))?
                .into_inner();
            let after = identity(&read(&cluster.cert)?)?.serial;
            if c.certificate_serial == before || c.certificate_serial == after {
                listed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        if !listed {
            failures.push("the manager never listed the adapter's current serial".into());
        }
        Ok::<_, String>(failures)
    });
    lab.report(result);
    lab.down();
}
