//! The manager's gRPC API as the lab's admin: one mTLS channel built from a tfctl config (the
//! server, CA and client certificate it names), shared by the end-to-end suites and the bench.

use std::{path::Path, time::Duration};

use tonic::transport::Channel;

fn yaml_str(v: &serde_yaml::Value, k: &str) -> Option<String> {
    v.get(k).and_then(|x| x.as_str()).map(ToString::to_string)
}

/// The server URL and the CA (PEM) it is trusted with, from the tfctl config `cfg`.
pub fn server_and_ca(cfg: &Path) -> Result<(String, String), String> {
    let text = std::fs::read_to_string(cfg).map_err(|e| format!("{}: {e}", cfg.display()))?;
    let y: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", cfg.display()))?;
    let server = yaml_str(&y, "server").ok_or("tfctl config without server")?;
    let ca = yaml_str(&y, "ca").ok_or("tfctl config without ca")?;
    let base = cfg.parent().unwrap_or(Path::new("."));
    let ca = std::fs::read_to_string(base.join(&ca)).map_err(|e| format!("{ca}: {e}"))?;
    Ok((server, ca))
}

/// Connects to the server named in the tfctl config `cfg` with its CA and client certificate.
/// Errors say which file or field is wrong, or why the connection failed.
pub async fn connect(cfg: &Path) -> Result<Channel, String> {
    let text = std::fs::read_to_string(cfg).map_err(|e| format!("{}: {e}", cfg.display()))?;
    let y: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", cfg.display()))?;
    let base = cfg.parent().unwrap_or(Path::new("."));
    let read = |k: &str| -> Result<String, String> {
        let p = yaml_str(&y, k).ok_or_else(|| format!("{}: no `{k}`", cfg.display()))?;
        std::fs::read_to_string(base.join(&p)).map_err(|e| format!("{p}: {e}"))
    };
    let server = yaml_str(&y, "server").ok_or("tfctl config without server")?;
    let name = yaml_str(&y, "serverName").unwrap_or_else(|| "localhost".into());
    let (ca, cert, key) = (read("ca")?, read("cert")?, read("key")?);
    let tls = traceflow_pki::tonic_client_tls(&ca, Some((&cert, &key)), &name);
    tonic::transport::Endpoint::from_shared(server.clone())
        .and_then(|e| e.tls_config(tls))
        .map_err(|e| format!("{server}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect {server}: {e:?}"))
}
