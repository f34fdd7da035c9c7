//! One Node's Open vSwitch: `ovsdb-server` and `ovs-vswitchd` running inside the Node's network
//! namespace with every file in the Node's run directory (`db.sock`, `br-int.mgmt`, logs, pids).

use std::path::{Path, PathBuf};

use tracing::info;

use super::{NodeError, run, run_env};
use crate::procs::{ProcRecord, start_time};

/// The schema Debian's openvswitch-common installs.
pub const VSWITCH_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// Longest unix socket path the kernel accepts, minus room for OVS's `.<pid>` suffixes.
const MAX_SOCKET_PATH: usize = 100;

/// A Node's OVS run directory and the commands that talk to it.
#[derive(Debug, Clone)]
pub struct Ovs {
    pub rundir: PathBuf,
    pub netns: String,
}

impl Ovs {
    pub fn new(rundir: &Path, netns: &str) -> Self {
        Self {
            rundir: rundir.to_path_buf(),
            netns: netns.to_string(),
        }
    }

    fn path(&self, file: &str) -> String {
        self.rundir.join(file).display().to_string()
    }

    /// `unix:<rundir>/db.sock`.
    pub fn db(&self) -> String {
        format!("unix:{}", self.path("db.sock"))
    }

    /// `unix:<rundir>/br-int.mgmt`, the OpenFlow management socket of br-int.
    pub fn mgmt(&self, bridge: &str) -> String {
        format!("unix:{}", self.path(&format!("{bridge}.mgmt")))
    }

    fn env(&self) -> Vec<(String, String)> {
        let dir = self.rundir.display().to_string();
        ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"]
            .iter()
            .map(|k| (k.to_string(), dir.clone()))
            .collect()
    }

    /// `ovs-vsctl` against this Node's database (waits for ovs-vswitchd to apply changes).
    pub async fn vsctl(&self, args: &[String]) -> Result<String, NodeError> {
        let mut all = vec![format!("--db={}", self.db()), "--timeout=30".to_string()];
        all.extend_from_slice(args);
        run_env("ovs-vsctl", &all, &self.env()).await
    }

    /// Creates the database and starts both daemons (detached by OVS itself, pidfiles in the
    /// run directory). Returns their records for the lab state.
    pub async fn start(&self, label: &str) -> Result<Vec<ProcRecord>, NodeError> {
        if self.path("ovs-vswitchd.99999999.ctl").len() > MAX_SOCKET_PATH {
            return Err(NodeError::Invalid(format!(
                "OVS run directory {} is too long for unix sockets (limit about {MAX_SOCKET_PATH} \
                 bytes with file names): use a shorter lab directory (--dir)",
                self.rundir.display()
            )));
        }
        if !Path::new(VSWITCH_SCHEMA).exists() {
            return Err(NodeError::Invalid(format!(
                "{VSWITCH_SCHEMA} is missing: apt-get install -y openvswitch-switch"
            )));
        }
        std::fs::create_dir_all(&self.rundir).map_err(|source| NodeError::Io {
            path: self.rundir.clone(),
            source,
        })?;
        let db = self.path("conf.db");
        if !Path::new(&db).exists() {
            run("ovsdb-tool", &["create", &db, VSWITCH_SCHEMA]).await?;
        }
        let env = self.env();
        let args: Vec<String> = [
            "netns",
            "exec",
            &self.netns,
            "ovsdb-server",
            &db,
            &format!("--remote=punix:{}", self.path("db.sock")),
            &format!("--pidfile={}", self.path("ovsdb-server.pid")),
            &format!("--unixctl={}", self.path("ovsdb-server.ctl")),
            &format!("--log-file={}", self.path("ovsdb-server.log")),
            "--detach",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        run_env("ip", &args, &env).await?;
        let db_rec = self.record("ovsdb-server", label)?;
        let args = vec![
            format!("--db={}", self.db()),
            "--no-wait".to_string(),
            "init".to_string(),
        ];
        run_env("ovs-vsctl", &args, &env).await?;
        let started = self.start_vswitchd(label).await;
        // Record the database server even if vswitchd failed, so `down` stops it.
        let mut recs = vec![db_rec];
        recs.push(started?);
        info!(node = %label, rundir = %self.rundir.display(), "ovs started");
        Ok(recs)
    }

    /// Starts `ovs-vswitchd` (detached, pidfile in the run directory) against the running
    /// `ovsdb-server`: at `up`, and again after it died (e.g. a restart test killed it).
    pub async fn start_vswitchd(&self, label: &str) -> Result<ProcRecord, NodeError> {
        let args: Vec<String> = [
            "netns",
            "exec",
            &self.netns,
            "ovs-vswitchd",
            &self.db(),
            &format!("--pidfile={}", self.path("ovs-vswitchd.pid")),
            &format!("--unixctl={}", self.path("ovs-vswitchd.ctl")),
            &format!("--log-file={}", self.path("ovs-vswitchd.log")),
            "--detach",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        if let Err(e) = run_env("ip", &args, &self.env()).await {
            return Err(NodeError::Invalid(format!(
                "{e}; see {}",
                self.path("ovs-vswitchd.log")
            )));
        }
        self.record("ovs-vswitchd", label)
    }

    /// The record of a daemon from its pidfile.
    pub fn record(&self, daemon: &str, label: &str) -> Result<ProcRecord, NodeError> {
        let pidfile = self.rundir.join(format!("{daemon}.pid"));
        let text = std::fs::read_to_string(&pidfile).map_err(|source| NodeError::Io {
            path: pidfile.clone(),
            source,
        })?;
        let pid: i32 = text.trim().parse().map_err(|_| {
            NodeError::Invalid(format!("{}: not a pid: {text:?}", pidfile.display()))
        })?;
        Ok(ProcRecord {
            name: format!("{daemon}/{label}"),
            pid,
            start_time: start_time(pid),
            log: self.rundir.join(format!("{daemon}.log")),
            command: format!("{daemon} (netns {})", self.netns),
            argv: Vec::new(),
        })
    }
}

/// Quotes an OVSDB string value for ovs-vsctl's `key=value` syntax.
pub fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `{k1="v1", k2="v2"}` for an ovs-vsctl map column.
pub fn map(pairs: &[(&str, String)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", quote(k), quote(v)))
        .collect();
    format!("{{{}}}", inner.join(", "))
}
