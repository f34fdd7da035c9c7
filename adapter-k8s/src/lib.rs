//! traceflow-adapter: one per cluster, between the manager and the cluster's agents.
//!
//! ```text
//!   manager ◀══ AdapterService.Attach (mTLS, cluster cert) ══ upstream::Link
//!                                                               │   ▲ TraceUpdate
//!                                               StartTrace/Cancel ▼   │
//!   Kubernetes API ──watch──▶ inventory::Index ──lookups──▶ coordinator ──Inject──▶ agents::Agents
//!                                  │ changes ──▶ Link                ▲ reports         │  ▲
//!                                  │                                 └── agents::server (mTLS) ◀══ agents
//!                                  │ revisions                              │ hello       │
//!                                  └──────────▶ nodestate::Publisher ◀──────┘  NodeState ─┘
//! ```
//!
//! [`nodestate`] compiles the cluster's NetworkPolicies (crate `traceflow-policy`) and sends
//! each agent its Node's desired pipeline state: a replace after every hello, then deltas.
//!
//! Traceflow custom resources (`traceflows.crd.traceflow.io/v1beta1`, Antrea's schema) are a
//! second entry point ([`crd`]): the adapter runs them and writes their `.status`. Both entry
//! points hand the [`coordinator`] a `NewTrace` whose spec went through the one
//! `traceflow_core::TraceSpec` conversion; a spec it refuses ends Failed with that message.
//! The coordinator runs each trace in its lifecycle: `coordinator::injected` (a packet with a
//! data-plane id) or `coordinator::live` (a DSCP tag on real traffic).
//!
//! [`run`] wires the parts: registration (token + CSR, once; renewed by the link before it
//! expires), the agent CA, the serial records and server, the kube watchers, the coordinator
//! task and the manager link. Behaviour copied from Antrea links to
//! `shared/reference/antrea-traceflow.md`.

pub mod agents;
pub mod coordinator;
pub mod crd;
pub mod inventory;
pub mod nodestate;
pub mod outbox;
pub mod upstream;

use std::{future::Future, path::PathBuf};

use tokio::net::TcpListener;
use tracing::{Instrument, error, info, info_span, warn};

use agents::{AgentServer, Agents};
use coordinator::Coordinator;
use inventory::Inventory;
use upstream::{Link, RegistrationError};

/// How long shutdown waits for agent streams to close before dropping them.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// `traceflow-adapter run` settings (flags in docs/contracts.md).
#[derive(Debug, Clone, clap::Args)]
pub struct RunConfig {
    #[arg(long)]
    pub cluster: String,
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The manager's URL, e.g. https://127.0.0.1:7443.
    #[arg(long)]
    pub manager: String,
    #[arg(long)]
    pub manager_ca: PathBuf,
    /// Bootstrap token, needed only until AD/cluster.pem exists.
    #[arg(long, env = "TRACEFLOW_BOOTSTRAP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// Lifetime of the agent certificates this adapter signs when agents renew them (agents
    /// renew after two thirds of it).
    #[arg(long, env = "TRACEFLOW_AGENT_CERT_LIFETIME", default_value = traceflow_core::limits::DEFAULT_AGENT_CERT_LIFETIME, value_parser = humantime::parse_duration)]
    pub agent_cert_lifetime: std::time::Duration,
    /// Accept an agent certificate issued after the one recorded for its Node (or for a Node
    /// with none) and record it, revoking the older one. For agent certificates issued outside
    /// this data dir by the same CA (the Helm chart's init container); off, only the recorded
    /// serial of each Node is accepted.
    #[arg(long, env = "TRACEFLOW_ADOPT_NEWER_AGENT_CERTS")]
    pub adopt_newer_agent_certs: bool,
}

/// Why the adapter could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("reading the manager CA {path}: {source}")]
    ManagerCa {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Registration(#[from] RegistrationError),
    #[error(transparent)]
    AgentPki(#[from] agents::pki::AgentPkiError),
    #[error("issuing the adapter's server certificate: {0}")]
    ServerCert(#[from] traceflow_pki::PkiError),
    #[error("Kubernetes client from {path}: {source}")]
    Kube {
        path: PathBuf,
        source: inventory::watch::KubeClientError,
    },
    #[error("agent server: {0}")]
    AgentServer(#[from] tonic::transport::Error),
    #[error("--agent-cert-lifetime {0} is out of range: use at least 10s and at most 3650d")]
    AgentCertLifetime(String),
}

/// Runs the adapter until `shutdown` completes.
///
/// `agent_listener` is already bound (tests pass port 0). Registration happens first, so a
/// refused token fails fast; while the manager is unreachable registration is retried.
pub async fn run(
    config: RunConfig,
    agent_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let lifetime = config.agent_cert_lifetime;
    if lifetime < traceflow_pki::MIN_LEAF_LIFETIME
        || lifetime > std::time::Duration::from_secs(3650 * 24 * 3600)
    {
        return Err(RunError::AgentCertLifetime(
            humantime::format_duration(lifetime).to_string(),
        ));
    }
    let ca_pem =
        std::fs::read_to_string(&config.manager_ca).map_err(|source| RunError::ManagerCa {
            path: config.manager_ca.clone(),
            source,
        })?;
    // The manager may still be starting: retry transient failures, jittered, 0.5 s … 2 s.
    let mut backoff = traceflow_daemon::Reconnect::new(
        std::time::Duration::from_millis(500),
        std::time::Duration::from_secs(2),
    );
    let identity = loop {
        match upstream::ensure_identity(
            &config.data_dir,
            &config.cluster,
            &config.manager,
            &ca_pem,
            config.token.as_deref(),
        )
        .await
        {
            Ok(identity) => break identity,
            Err(e) if e.is_transient() => {
                let retry_in = backoff.next_delay();
                warn!(error = %e, ?retry_in, "registration failed; retrying");
                tokio::time::sleep(retry_in).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    info!(cluster = %config.cluster, "cluster certificate ready");

    let agent_ca =
        agents::pki::load_ca_with_lifetime(&config.data_dir, config.agent_cert_lifetime)?;
    let server_cert = agents::pki::server_cert(&agent_ca)?;
    let tls = traceflow_pki::tonic_server_tls(
        &server_cert.cert_pem,
        &server_cert.key_pem,
        agent_ca.cert_pem(),
        false,
    );

    let client = inventory::watch::client_from_kubeconfig(&config.kubeconfig)
        .await
        .map_err(|source| RunError::Kube {
            path: config.kubeconfig.clone(),
            source,
        })?;
    let inventory = Inventory::new();
    let watchers = inventory::watch::spawn_watchers(client.clone(), inventory.clone());

    let agents = Agents::new();
    let (updates_tx, updates_rx) = tokio::sync::mpsc::channel(coordinator::UPDATE_QUEUE);
    let (coordinator, handle) = Coordinator::new(inventory.clone(), agents.clone(), updates_tx);
    let coordinator_task = tokio::spawn(coordinator.run().instrument(info_span!("coordinator")));

    // Traceflow resources: their updates go to the status writer, the rest to the manager.
    let local = crd::Local::default();
    let manager_tx = outbox::Outbox::new();
    let manager_rx = manager_tx.clone();
    let status_tx = outbox::Outbox::new();
    let status_rx = status_tx.clone();
    let crd_tasks = [
        tokio::spawn(
            crd::route(updates_rx, local.clone(), manager_tx, status_tx.clone())
                .instrument(info_span!("router")),
        ),
        tokio::spawn(
            crd::write_statuses(client.clone(), status_rx).instrument(info_span!("crd_status")),
        ),
        tokio::spawn(
            crd::watch(
                client.clone(),
                config.cluster.clone(),
                handle.clone(),
                local,
                status_tx,
            )
            .instrument(info_span!("crd_watch")),
        ),
    ];

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let link = Link {
        url: config.manager.clone(),
        ca_pem,
        identity,
        data_dir: config.data_dir.clone(),
        inventory: inventory.clone(),
        agents: agents.clone(),
        coordinator: handle.clone(),
        updates: manager_rx,
    };
    let link_task = tokio::spawn(
        link.run(stopped(stop_rx.clone()))
            .instrument(info_span!("manager_link")),
    );

    let (publisher, nodestate) = nodestate::Publisher::new(inventory.clone(), agents.clone());
    let publisher_task = tokio::spawn(publisher.run().instrument(info_span!("nodestate")));

    let certs = agents::server::AgentCerts {
        ca: std::sync::Arc::new(agent_ca),
        serials: agents::serials::AgentSerials::new(&config.data_dir),
        adopt_newer: config.adopt_newer_agent_certs,
    };
    let server = AgentServer::new(agents, inventory, handle, nodestate, certs);
    let addr = agent_listener.local_addr().ok();
    info!(agent_listen = ?addr, "serving agents");
    let server_task = tokio::spawn(
        agents::server::serve(agent_listener, tls, server, stopped(stop_rx))
            .instrument(info_span!("agent_server")),
    );

    shutdown.await;
    info!("shutting down");
    let _ = stop_tx.send(true);
    for w in watchers.iter().chain(crd_tasks.iter()) {
        w.abort();
    }
    let _ = link_task.await;
    coordinator_task.abort();
    publisher_task.abort();
    // Graceful shutdown waits for agents to hang up; they reconnect forever, so bound it.
    let abort = server_task.abort_handle();
    match tokio::time::timeout(SHUTDOWN_GRACE, server_task).await {
        Ok(Ok(r)) => r?,
        Ok(Err(e)) if e.is_cancelled() => {}
        Ok(Err(e)) => error!(error = %e, "agent server task failed"),
        Err(_) => abort.abort(),
    }
    Ok(())
}
