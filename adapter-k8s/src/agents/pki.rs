//! The adapter's agent CA (`AD/agent-ca.pem` + `AD/agent-ca-key.pem`) and what it issues.

use std::path::{Path, PathBuf};

use traceflow_pki::{CertificateAuthority, CertifiedKey, IdentityKind, PkiError};

/// Errors loading, creating or using the agent CA.
#[derive(Debug, thiserror::Error)]
pub enum AgentPkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("agent CA in {dir}: {source}")]
    Pki { dir: PathBuf, source: PkiError },
    #[error("Node name {0:?} is not a DNS-1123 subdomain; use the Node's Kubernetes name")]
    NodeName(String),
    #[error("recording the agent certificate's serial: {0}")]
    Record(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AgentPkiError + '_ {
    move |source| AgentPkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `contents` to `path` atomically (temp file + rename), mode 0600 for keys
/// ([`traceflow_pki::write_file_atomic`]).
pub fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), AgentPkiError> {
    traceflow_pki::write_file_atomic(path, contents, private).map_err(io(path))
}

/// Creates `dir` (and its parents) if missing, the directory itself 0700.
pub fn create_private_dir(dir: &Path) -> Result<(), AgentPkiError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(io(dir))
}

/// The agent CA with its leaves valid `lifetime`.
pub fn load_ca_with_lifetime(
    data_dir: &Path,
    lifetime: std::time::Duration,
) -> Result<CertificateAuthority, AgentPkiError> {
    load_or_create_ca(data_dir)?
        .with_leaf_lifetime(lifetime)
        .map_err(|source| AgentPkiError::Pki {
            dir: data_dir.to_path_buf(),
            source,
        })
}

/// Loads the agent CA from `data_dir`, creating it (and `data_dir`) on first use.
///
/// The certificate file is written last, so its presence means both files are complete.
pub fn load_or_create_ca(data_dir: &Path) -> Result<CertificateAuthority, AgentPkiError> {
    let cert = data_dir.join("agent-ca.pem");
    let key = data_dir.join("agent-ca-key.pem");
    let pki = |source| AgentPkiError::Pki {
        dir: data_dir.to_path_buf(),
        source,
    };
    if cert.exists() {
        let cert_pem = std::fs::read_to_string(&cert).map_err(io(&cert))?;
        let key_pem = std::fs::read_to_string(&key).map_err(io(&key))?;
        return CertificateAuthority::from_pem(&cert_pem, &key_pem).map_err(pki);
    }
    create_private_dir(data_dir)?;
    let ca = CertificateAuthority::generate("traceflow-adapter agent CA").map_err(pki)?;
    write_file(&key, ca.key_pem(), true)?;
    write_file(&cert, ca.cert_pem(), false)?;
    Ok(ca)
}

/// The adapter's server certificate for its agent port: CN `traceflow-adapter`, SAN
/// `localhost`, `127.0.0.1`.
pub fn server_cert(ca: &CertificateAuthority) -> Result<CertifiedKey, PkiError> {
    ca.issue_server(
        "traceflow-adapter",
        &["localhost".to_string(), "127.0.0.1".to_string()],
    )
}

/// How `agent-cert` issues a Node's certificate.
#[derive(Debug, Clone)]
pub struct AgentCertOptions {
    /// How long the certificate is valid (the agent renews it after two thirds).
    pub lifetime: std::time::Duration,
    /// Record the serial in `AD/agent-serials/<node>` as the Node's only valid certificate
    /// (revoking the previous one). Off only where the data dir is not the adapter's (the
    /// Helm chart's init container: the adapter then runs with `--adopt-newer-agent-certs`).
    pub record: bool,
}

impl Default for AgentCertOptions {
    fn default() -> Self {
        Self {
            lifetime: humantime::parse_duration(
                traceflow_core::limits::DEFAULT_AGENT_CERT_LIFETIME,
            )
            .unwrap_or(std::time::Duration::from_secs(90 * 24 * 3600)),
            record: true,
        }
    }
}

/// Issues an agent certificate for `node` into `out` (`N.pem`, `N-key.pem`, `agent-ca.pem`)
/// with the default options: recorded as the Node's only valid one.
pub fn issue_agent_cert(data_dir: &Path, node: &str, out: &Path) -> Result<(), AgentPkiError> {
    issue_agent_cert_with(data_dir, node, out, &AgentCertOptions::default())
}

/// Issues an agent certificate for `node` into `out`: `N.pem`, `N-key.pem` (0600),
/// `agent-ca.pem`. With `opts.record`, once those are written, its serial becomes the Node's
/// only valid one, so the adapter refuses the previous certificate from then on (a failure
/// before that leaves the previous one valid).
pub fn issue_agent_cert_with(
    data_dir: &Path,
    node: &str,
    out: &Path,
    opts: &AgentCertOptions,
) -> Result<(), AgentPkiError> {
    let pki = |source| AgentPkiError::Pki {
        dir: data_dir.to_path_buf(),
        source,
    };
    if !traceflow_core::naming::is_dns_subdomain(node) {
        return Err(AgentPkiError::NodeName(node.chars().take(64).collect()));
    }
    let ca = load_ca_with_lifetime(data_dir, opts.lifetime)?;
    let leaf = ca.issue(node, IdentityKind::Agent, &[]).map_err(pki)?;
    std::fs::create_dir_all(out).map_err(io(out))?;
    write_file(&out.join(format!("{node}.pem")), &leaf.cert_pem, false)?;
    write_file(&out.join(format!("{node}-key.pem")), &leaf.key_pem, true)?;
    write_file(&out.join("agent-ca.pem"), ca.cert_pem(), false)?;
    if opts.record {
        let id = traceflow_pki::pem_identity(&leaf.cert_pem).map_err(pki)?;
        super::serials::AgentSerials::new(data_dir)
            .record(node, &leaf.serial, id.not_before)
            .map_err(|e| match e {
                super::serials::SerialError::Files(f) => f,
                other => AgentPkiError::Record(other.to_string()),
            })?;
    }
    Ok(())
}
