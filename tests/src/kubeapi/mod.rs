//! A small Kubernetes API server for one lab cluster: the topology's objects served over HTTPS
//! with list, watch (resource versions, bookmarks, `timeoutSeconds`), get, and create / update /
//! status / patch / delete for every type (the Traceflow CRDs are the ones clients write).
//!
//! Traceflows of `crd.traceflow.io` are checked against the chart's CRD ([`crd`]) and
//! `kubectl` gets the OpenAPI documents and `Table`s it needs ([`openapi`]), so the real
//! kubectl creates, lists by short name and deletes them without extra flags.
//!
//! It is what the adapter's real `kube` client code talks to. The lab runs one per cluster as a
//! detached `traceflow-lab serve-api` process ([`run_daemon`]); tests run [`server::serve`]
//! in-process on port 0.

pub mod crd;
pub mod openapi;
pub mod resources;
pub mod selectors;
pub mod server;
pub mod store;

use std::{net::SocketAddr, path::Path};

use serde_json::Value;
use tracing::info;

/// Errors starting an API endpoint.
#[derive(Debug, thiserror::Error)]
pub enum KubeApiError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a JSON list of objects: {source}")]
    Objects {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("objects: {0}")]
    Store(#[from] store::StoreError),
    #[error("TLS: {0}")]
    Tls(#[from] traceflow_pki::PkiError),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

fn read(path: &Path) -> Result<String, KubeApiError> {
    std::fs::read_to_string(path).map_err(|source| KubeApiError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Files a `serve-api` process reads and writes.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub cluster: String,
    /// JSON array of the cluster's objects.
    pub objects: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    /// File holding the bearer token.
    pub token_file: std::path::PathBuf,
    pub listen: SocketAddr,
    /// Written with the bound address once listening.
    pub addr_file: std::path::PathBuf,
}

/// Runs an API endpoint until SIGTERM / SIGINT.
pub async fn run_daemon(cfg: DaemonConfig) -> Result<(), KubeApiError> {
    let objects: Vec<Value> =
        serde_json::from_str(&read(&cfg.objects)?).map_err(|source| KubeApiError::Objects {
            path: cfg.objects.display().to_string(),
            source,
        })?;
    let store = store::Store::with_objects(objects)?;
    let token = read(&cfg.token_file)?.trim().to_string();
    let tls = traceflow_pki::rustls_server_config(&read(&cfg.cert)?, &read(&cfg.key)?)?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| KubeApiError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| KubeApiError::Listen {
            addr: cfg.listen,
            source,
        })?;
    // Write then rename, so a reader never sees a partial address.
    let tmp = cfg.addr_file.with_extension("tmp");
    std::fs::write(&tmp, addr.to_string())
        .and_then(|()| std::fs::rename(&tmp, &cfg.addr_file))
        .map_err(|source| KubeApiError::Io {
            path: cfg.addr_file.display().to_string(),
            source,
        })?;
    info!(cluster = %cfg.cluster, %addr, "kubernetes API serving");
    let state = server::ApiState::new(&cfg.cluster, &token, store);
    server::serve(listener, tls, state, traceflow_daemon::shutdown::signal())
        .await
        .map_err(|source| KubeApiError::Listen { addr, source })
}

/// A kubeconfig for one cluster: server URL, CA file, bearer token.
pub fn kubeconfig(cluster: &str, server: &str, ca_path: &Path, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    \
         server: {server}\n    certificate-authority: {ca}\nusers:\n- name: {cluster}-admin\n  \
         user:\n    token: {token}\ncontexts:\n- name: {cluster}\n  context:\n    \
         cluster: {cluster}\n    user: {cluster}-admin\ncurrent-context: {cluster}\n",
        ca = ca_path.display()
    )
}
