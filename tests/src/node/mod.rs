//! Nodes and Pods as network namespaces: the commands that build them (`ip`, `ovs-vsctl`,
//! `ovsdb-tool`, the OVS daemons) and the names everything gets.
//!
//! ```text
//!  <p>-<c>-underlay: br0 ──┬── u-<node> ═ veth ═ eth0 ── br-phy (netdev, Node IP)   <p>-<c>-<node>
//!                          └── …                         br-int (netdev): antrea-tun0 (geneve)
//!                                                                         antrea-gw0 (gateway IPs)
//!                                                                         <pod>-<hash> ═ veth ═ eth0
//!                                                                                  <p>-<c>-<ns>-<pod>
//! ```
//! Userspace tunnelling sends encapsulated packets through the OVS bridge that owns the
//! route to the remote endpoint, so the Node's underlay address lives on `br-phy`, not on the
//! veth.

pub mod build;
pub mod names;
pub mod ovs;

use std::{path::PathBuf, time::Duration};

use tracing::debug;

/// A command that failed, with what it printed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("`{command}` could not start: {source} (is it installed? {hint})")]
    Spawn {
        command: String,
        hint: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` did not finish within {secs}s")]
    Timeout { command: String, secs: u64 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// What to install for a missing program.
fn hint_for(program: &str) -> &'static str {
    if program.starts_with("ovs") {
        "apt-get install -y openvswitch-switch"
    } else if program == "ip" {
        "apt-get install -y iproute2"
    } else if program == "ethtool" {
        "apt-get install -y ethtool"
    } else {
        "see scripts/test.sh for the packages the lab needs"
    }
}

/// Runs `program args` (with extra environment), returning stdout; a non-zero exit is an
/// error carrying the command line and stderr. Every command gets 60 s.
pub async fn run_env(
    program: &str,
    args: &[String],
    envs: &[(String, String)],
) -> Result<String, NodeError> {
    let command = format!("{program} {}", args.join(" "));
    debug!(%command, "run");
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let secs = 60;
    let out = tokio::time::timeout(Duration::from_secs(secs), cmd.output())
        .await
        .map_err(|_| NodeError::Timeout {
            command: command.clone(),
            secs,
        })?
        .map_err(|source| NodeError::Spawn {
            command: command.clone(),
            hint: hint_for(program),
            source,
        })?;
    if !out.status.success() {
        return Err(NodeError::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// [`run_env`] without extra environment.
pub async fn run(program: &str, args: &[&str]) -> Result<String, NodeError> {
    let args: Vec<String> = args.iter().map(ToString::to_string).collect();
    run_env(program, &args, &[]).await
}

/// `ip <args>` inside network namespace `netns`.
pub async fn ip_in(netns: &str, args: &[&str]) -> Result<String, NodeError> {
    let mut all = vec!["-n", netns];
    all.extend_from_slice(args);
    run("ip", &all).await
}

/// Names of existing network namespaces.
pub async fn list_netns() -> Result<Vec<String>, NodeError> {
    let out = run("ip", &["netns", "list"]).await?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(ToString::to_string)
        .collect())
}

/// Deletes a network namespace if it exists (idempotent).
pub async fn delete_netns(name: &str) -> Result<(), NodeError> {
    if !std::path::Path::new("/run/netns").join(name).exists() {
        return Ok(());
    }
    run("ip", &["netns", "del", name]).await.map(|_| ())
}
