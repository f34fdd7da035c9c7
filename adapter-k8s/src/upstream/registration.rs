//! Registration with the manager: bootstrap token + CSR → cluster certificate, kept in
//! `AD/cluster.pem` + `AD/cluster-key.pem` and reused on every later start.

use std::path::{Path, PathBuf};

use traceflow_proto::v1 as pb;

use crate::agents::pki::{AgentPkiError, write_file};

/// The TLS name the manager's certificate is verified against.
pub const MANAGER_SERVER_NAME: &str = "localhost";

/// The cluster's client certificate and key, PEM.
#[derive(Clone)]
pub struct ClusterIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Why the adapter has no cluster certificate.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error(
        "no cluster certificate in {dir} and no bootstrap token: pass --token or set TRACEFLOW_BOOTSTRAP_TOKEN"
    )]
    NoToken { dir: PathBuf },
    #[error("manager refused to register cluster {cluster:?}: {message}")]
    Refused {
        cluster: String,
        message: String,
        code: tonic::Code,
    },
    #[error("cannot reach the manager at {url}: {source}")]
    Unreachable {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("manager at {url} failed the registration call: {status}")]
    Transport { url: String, status: tonic::Status },
    #[error("cannot create a key and CSR: {0}")]
    Csr(#[from] traceflow_pki::PkiError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Files(#[from] AgentPkiError),
}

impl RegistrationError {
    /// Whether trying again later may succeed (the manager is down) rather than being refused.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistrationError::Unreachable { .. } => true,
            RegistrationError::Transport { status, .. } => {
                matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                )
            }
            _ => false,
        }
    }
}

fn read(path: &Path) -> Result<String, RegistrationError> {
    std::fs::read_to_string(path).map_err(|source| RegistrationError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A tonic channel to the manager, trusting `ca_pem`, presenting `identity` when given.
pub async fn manager_channel(
    url: &str,
    ca_pem: &str,
    identity: Option<&ClusterIdentity>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let tls = traceflow_pki::tonic_client_tls(
        ca_pem,
        identity.map(|i| (i.cert_pem.as_str(), i.key_pem.as_str())),
        MANAGER_SERVER_NAME,
    );
    tonic::transport::Endpoint::from_shared(url.to_string())?
        .tls_config(tls)?
        .connect_timeout(std::time::Duration::from_secs(5))
        .http2_keep_alive_interval(traceflow_core::limits::KEEPALIVE_INTERVAL)
        .keep_alive_timeout(traceflow_core::limits::KEEPALIVE_TIMEOUT)
        .connect()
        .await
}

/// Loads the kept certificate, or registers with `token` and keeps the result.
///
/// Errors: [`RegistrationError::NoToken`] when there is neither; [`RegistrationError::Refused`]
/// quoting the manager's message when it rejects the token (reused, expired, other cluster).
pub async fn ensure_identity(
    data_dir: &Path,
    cluster: &str,
    url: &str,
    ca_pem: &str,
    token: Option<&str>,
) -> Result<ClusterIdentity, RegistrationError> {
    let cert_path = data_dir.join("cluster.pem");
    let key_path = data_dir.join("cluster-key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok(ClusterIdentity {
            cert_pem: read(&cert_path)?,
            key_pem: read(&key_path)?,
        });
    }
    let token = token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| RegistrationError::NoToken {
            dir: data_dir.to_path_buf(),
        })?;
    let (csr_pem, key_pem) = traceflow_pki::generate_csr(cluster)?;
    let channel = manager_channel(url, ca_pem, None).await.map_err(|source| {
        RegistrationError::Unreachable {
            url: url.to_string(),
            source,
        }
    })?;
    let mut client = pb::registration_service_client::RegistrationServiceClient::new(channel);
    let request = pb::RegisterRequest {
        cluster: cluster.to_string(),
        token: token.to_string(),
        csr_pem,
    };
    let response = client
        .register(request)
        .await
        .map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                RegistrationError::Transport {
                    url: url.to_string(),
                    status,
                }
            }
            code => RegistrationError::Refused {
                cluster: cluster.to_string(),
                message: status.message().to_string(),
                code,
            },
        })?;
    let cert_pem = response.into_inner().certificate_pem;
    std::fs::create_dir_all(data_dir).map_err(|source| RegistrationError::Io {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let identity = ClusterIdentity { cert_pem, key_pem };
    keep_identity(data_dir, &identity)?;
    Ok(identity)
}

/// Writes the cluster certificate and key into `data_dir` (`cluster.pem`, `cluster-key.pem`
/// 0600), each atomically (temporary file + rename).
pub fn keep_identity(data_dir: &Path, identity: &ClusterIdentity) -> Result<(), AgentPkiError> {
    write_file(&data_dir.join("cluster-key.pem"), &identity.key_pem, true)?;
    write_file(&data_dir.join("cluster.pem"), &identity.cert_pem, false)
}
