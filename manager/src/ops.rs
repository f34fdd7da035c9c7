//! Command-line administration: `token create` and `user create`.
//!
//! Contract: when no manager holds the store in the data directory, the command opens it
//! directly; otherwise it calls the running manager (address from `D/listen.addr`) with the
//! local admin credential (`D/local-admin.pem`, `D/local-admin-key.pem`).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use traceflow_proto::v1 as pb;

use crate::{
    accounts::{AccountError, Credential, mint_bootstrap_token, upsert_user},
    auth::Role,
    server::{DataDir, ServeError, open_data_dir, write_file},
    store::StoreError,
};

/// Errors of the administration commands.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the store is locked by a running manager but {0} cannot be read; is the manager still starting?"
    )]
    NoAddress(PathBuf),
    #[error("cannot reach the running manager at {addr}: {detail}")]
    Connect { addr: String, detail: String },
    #[error("manager refused: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("{0}")]
    Pki(#[from] traceflow_pki::PkiError),
}

fn read(path: &Path) -> Result<String, OpsError> {
    std::fs::read_to_string(path).map_err(|source| OpsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The data directory opened directly, or `None` when a running manager holds it.
fn open_offline(data_dir: &Path) -> Result<Option<DataDir>, OpsError> {
    match open_data_dir(data_dir) {
        Ok(d) => Ok(Some(d)),
        Err(ServeError::Store(e)) if e.is_locked() => Ok(None),
        Err(ServeError::Store(StoreError::Sled(sled::Error::Io(e))))
            if data_dir.join("listen.addr").exists() =>
        {
            tracing::debug!(error = %e, "store busy; using the running manager");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// The address to dial for what `D/listen.addr` says: a wildcard bind is reached on loopback.
pub fn dial_addr(listen_addr: &str) -> String {
    let a = listen_addr.trim();
    if let Some(port) = a.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = a.strip_prefix("[::]:") {
        format!("[::1]:{port}")
    } else {
        a.to_string()
    }
}

async fn channel(data_dir: &Path) -> Result<tonic::transport::Channel, OpsError> {
    let addr_path = data_dir.join("listen.addr");
    // A manager that holds the store but has not written its address yet is starting up.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let addr = loop {
        match read(&addr_path) {
            Ok(a) => break dial_addr(&a),
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => return Err(OpsError::NoAddress(addr_path)),
        }
    };
    let ca = read(&data_dir.join("ca.pem"))?;
    let cert = read(&data_dir.join("local-admin.pem"))?;
    let key = read(&data_dir.join("local-admin-key.pem"))?;
    let tls = traceflow_pki::tonic_client_tls(&ca, Some((&cert, &key)), "localhost");
    let uri = format!("https://{addr}");
    let endpoint = tonic::transport::Endpoint::from_shared(uri.clone())
        .map_err(|e| OpsError::Connect {
            addr: uri.clone(),
            detail: e.to_string(),
        })?
        .tls_config(tls)
        .map_err(|e| OpsError::Connect {
            addr: uri.clone(),
            detail: e.to_string(),
        })?
        .connect_timeout(Duration::from_secs(5));
    endpoint.connect().await.map_err(|e| OpsError::Connect {
        addr: uri,
        detail: e.to_string(),
    })
}

/// Mints a bootstrap token for `cluster`; returns the token.
pub async fn token_create(
    data_dir: &Path,
    cluster: &str,
    ttl: Duration,
) -> Result<String, OpsError> {
    if let Some(d) = open_offline(data_dir)? {
        let (token, _) = mint_bootstrap_token(&d.store, cluster, ttl, "local")?;
        d.store.flush_blocking().map_err(ServeError::from)?;
        return Ok(token);
    }
    let mut client =
        pb::cluster_service_client::ClusterServiceClient::new(channel(data_dir).await?);
    let resp = client
        .create_bootstrap_token(pb::CreateBootstrapTokenRequest {
            cluster: cluster.to_string(),
            ttl_seconds: ttl.as_secs().max(1) as i64,
        })
        .await?;
    Ok(resp.into_inner().token)
}

/// What `user create` wrote.
#[derive(Debug)]
pub struct CreatedUser {
    /// The tfctl config written.
    pub config: PathBuf,
    /// The bearer token, when one was issued.
    pub token: Option<String>,
}

/// Creates (or updates) user `name` with `role` and writes its credential and tfctl config
/// into `out`: `NAME.pem`, `NAME-key.pem` (certificate users), `ca.pem`, `NAME.tfctl.yaml`.
pub async fn user_create(
    data_dir: &Path,
    name: &str,
    role: Role,
    bearer: bool,
    out: &Path,
) -> Result<CreatedUser, OpsError> {
    std::fs::create_dir_all(out).map_err(|source| OpsError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let (csr_pem, key_pem) = traceflow_pki::generate_csr(name)?;
    let (token, cert_pem, ca_pem) = match open_offline(data_dir)? {
        Some(d) => {
            let (credential, cert) = if bearer {
                let ttl = crate::api::guard::EdgeLimits::default().bearer_token_ttl;
                (Credential::Bearer { ttl }, String::new())
            } else {
                let issued =
                    d.ca.sign_csr(&csr_pem, name, traceflow_pki::IdentityKind::User)?;
                let serial = issued.serial;
                (Credential::Certificate { serial }, issued.cert_pem)
            };
            let (_, token) = upsert_user(&d.store, name, role, credential, "local")?;
            d.store.flush_blocking().map_err(ServeError::from)?;
            let token = token.map(|t| t.secret).unwrap_or_default();
            (token, cert, d.ca.cert_pem().to_string())
        }
        None => {
            let mut client =
                pb::user_service_client::UserServiceClient::new(channel(data_dir).await?);
            let resp = client
                .create_user(pb::CreateUserRequest {
                    name: name.to_string(),
                    role: role.to_pb() as i32,
                    bearer_token: bearer,
                    csr_pem: if bearer { String::new() } else { csr_pem },
                    token_ttl_seconds: 0,
                })
                .await?
                .into_inner();
            (resp.token, resp.certificate_pem, resp.ca_pem)
        }
    };
    write_file(&out.join("ca.pem"), ca_pem.as_bytes(), 0o644)?;
    let addr = std::fs::read_to_string(data_dir.join("listen.addr"))
        .map(|s| dial_addr(&s))
        .unwrap_or_else(|_| "127.0.0.1:7443".to_string());
    let mut config = format!("server: https://{addr}\nserverName: localhost\nca: ca.pem\n");
    if bearer {
        config.push_str(&format!("token: {token}\n"));
    } else {
        write_file(
            &out.join(format!("{name}-key.pem")),
            key_pem.as_bytes(),
            0o600,
        )?;
        write_file(&out.join(format!("{name}.pem")), cert_pem.as_bytes(), 0o644)?;
        config.push_str(&format!("cert: {name}.pem\nkey: {name}-key.pem\n"));
    }
    let config_path = out.join(format!("{name}.tfctl.yaml"));
    write_file(&config_path, config.as_bytes(), 0o600)?;
    Ok(CreatedUser {
        config: config_path,
        token: bearer.then_some(token),
    })
}

#[cfg(test)]
mod tests {
    use super::dial_addr;

    #[test]
    fn wildcard_binds_are_dialled_on_loopback() {
        assert_eq!(dial_addr("0.0.0.0:7443\n"), "127.0.0.1:7443");
        assert_eq!(dial_addr("[::]:7443"), "[::1]:7443");
        assert_eq!(dial_addr("127.0.0.1:1"), "127.0.0.1:1");
    }
}
