//! The adapter's agent CA (`AD/agent-ca.pem` + `AD/agent-ca-key.pem`) and what it issues.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

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
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AgentPkiError + '_ {
    move |source| AgentPkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `contents` to `path` atomically (temp file + rename), mode 0600 for keys.
pub fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), AgentPkiError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = private;
        let mut f = opts.open(&tmp).map_err(io(&tmp))?;
        f.write_all(contents.as_bytes()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))
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
    std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
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

/// Issues an agent certificate for `node` into `out`: `N.pem`, `N-key.pem`, `agent-ca.pem`.
pub fn issue_agent_cert(data_dir: &Path, node: &str, out: &Path) -> Result<(), AgentPkiError> {
    let ca = load_or_create_ca(data_dir)?;
    let leaf = ca
        .issue(node, IdentityKind::Agent, &[])
        .map_err(|source| AgentPkiError::Pki {
            dir: data_dir.to_path_buf(),
            source,
        })?;
    std::fs::create_dir_all(out).map_err(io(out))?;
    write_file(&out.join(format!("{node}.pem")), &leaf.cert_pem, false)?;
    write_file(&out.join(format!("{node}-key.pem")), &leaf.key_pem, true)?;
    write_file(&out.join("agent-ca.pem"), ca.cert_pem(), false)
}
