//! ovs-vswitchd's control socket (`ovs-appctl`'s JSON-RPC over a unix socket), for the one
//! thing OpenFlow cannot do: read the conntrack table (`dpctl/dump-conntrack`).
//!
//! The socket is `<rundir>/ovs-vswitchd.ctl` when ovs-vswitchd runs with `--unixctl` there,
//! else OVS's default `<rundir>/ovs-vswitchd.<pid>.ctl`, the pid read from
//! `<rundir>/ovs-vswitchd.pid`. A call is one request and one reply object
//! (`{"method", "params", "id"}` → `{"result", "error", "id"}`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// How long a call may take (a conntrack dump of a busy Node included).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest reply read (a dump of about 50,000 connections).
const MAX_REPLY: usize = 16 << 20;

/// Why a control-socket call failed.
#[derive(Debug, thiserror::Error)]
pub enum UnixctlError {
    #[error(
        "cannot read ovs-vswitchd's pid file {path}: {source}; is ovs-vswitchd running with --pidfile in that run directory?"
    )]
    PidFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot reach ovs-vswitchd's control socket {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ovs-vswitchd's control socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("ovs-vswitchd did not answer {method} within {CALL_TIMEOUT:?}")]
    Timeout { method: String },
    #[error("ovs-vswitchd's answer to {method} is not JSON-RPC: {detail}")]
    Protocol { method: String, detail: String },
    #[error("ovs-vswitchd refused {method}: {message}")]
    Refused { method: String, message: String },
}

/// The control socket of the ovs-vswitchd of `rundir`: `ovs-vswitchd.ctl` when it was started
/// with `--unixctl` there, else OVS's default, named by the pid in its pid file.
pub fn socket_path(rundir: &Path) -> Result<PathBuf, UnixctlError> {
    let named = rundir.join("ovs-vswitchd.ctl");
    if named.exists() {
        return Ok(named);
    }
    let pidfile = rundir.join("ovs-vswitchd.pid");
    let pid = std::fs::read_to_string(&pidfile).map_err(|source| UnixctlError::PidFile {
        path: pidfile.clone(),
        source,
    })?;
    Ok(rundir.join(format!("ovs-vswitchd.{}.ctl", pid.trim())))
}

/// Calls `method` with `params` on the control socket at `path`; the reply's text.
pub async fn call(path: &Path, method: &str, params: &[&str]) -> Result<String, UnixctlError> {
    let work = async {
        let mut s = UnixStream::connect(path)
            .await
            .map_err(|source| UnixctlError::Connect {
                path: path.to_path_buf(),
                source,
            })?;
        let req = json!({"method": method, "params": params, "id": 0});
        s.write_all(req.to_string().as_bytes()).await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 64 << 10];
        loop {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Err(protocol(
                    method,
                    "the connection closed before the reply ended",
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > MAX_REPLY {
                return Err(protocol(method, "the reply is larger than 16 MiB"));
            }
            let mut objects = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
            match objects.next() {
                Some(Ok(reply)) => return reply_text(method, &reply),
                Some(Err(e)) if e.is_eof() => continue,
                Some(Err(e)) => return Err(protocol(method, &e.to_string())),
                None => continue,
            }
        }
    };
    tokio::time::timeout(CALL_TIMEOUT, work)
        .await
        .map_err(|_| UnixctlError::Timeout {
            method: method.to_string(),
        })?
}

fn protocol(method: &str, detail: &str) -> UnixctlError {
    UnixctlError::Protocol {
        method: method.to_string(),
        detail: detail.to_string(),
    }
}

fn reply_text(method: &str, reply: &Value) -> Result<String, UnixctlError> {
    if let Some(e) = reply.get("error").filter(|e| !e.is_null()) {
        return Err(UnixctlError::Refused {
            method: method.to_string(),
            message: e.as_str().map_or_else(|| e.to_string(), str::to_string),
        });
    }
    match reply.get("result") {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(protocol(method, "no result text")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_its_result_or_its_error() {
        let ok = json!({"id": 0, "result": "tcp,orig=(...)\n", "error": null});
        assert_eq!(
            reply_text("dpctl/dump-conntrack", &ok).ok().as_deref(),
            Some("tcp,orig=(...)\n")
        );
        let refused = json!({"id": 0, "result": null, "error": "\"nope\" is not a valid command"});
        assert!(matches!(
            reply_text("nope", &refused),
            Err(UnixctlError::Refused { message, .. }) if message.contains("not a valid command")
        ));
        assert!(matches!(
            reply_text("x", &json!({"id": 0})),
            Err(UnixctlError::Protocol { .. })
        ));
    }

    #[tokio::test]
    async fn a_call_reads_one_reply_in_pieces() {
        let dir = std::env::temp_dir().join(format!("tf-unixctl-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("test.ctl");
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            if let Ok((mut s, _)) = listener.accept().await {
                let mut req = vec![0u8; 1024];
                let _ = s.read(&mut req).await;
                let reply = br#"{"id":0,"result":"udp,orig=(src=10.1.0.2)\n","error":null}"#;
                let (a, b) = reply.split_at(10);
                let _ = s.write_all(a).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = s.write_all(b).await;
            }
        });
        let got = call(&path, "dpctl/dump-conntrack", &[]).await;
        assert_eq!(got.ok().as_deref(), Some("udp,orig=(src=10.1.0.2)\n"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
