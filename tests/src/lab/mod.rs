//! `up`, `down`, `status`, `exec`: the lab's life cycle over one lab directory.
//!
//! ```text
//!  <lab>/state.json                       what exists (namespaces, processes, addresses)
//!  <lab>/logs/*.log                       control-plane daemons' output
//!  <lab>/lab-ca.pem, lab-ca-key.pem       CA of the Kubernetes API endpoints
//!  <lab>/manager/                         traceflow-manager --data-dir
//!  <lab>/admin/admin.tfctl.yaml           the admin's tfctl config (printed by `up`)
//!  <lab>/clusters/<c>/kubeconfig          the cluster's Kubernetes API
//!  <lab>/clusters/<c>/kubeapi/            objects.json, cert, key, token, addr
//!  <lab>/clusters/<c>/adapter/            traceflow-adapter --data-dir
//!  <lab>/clusters/<c>/nodes/<n>/ovs/      OVS run directory (db.sock, br-int.mgmt, logs)
//!  <lab>/clusters/<c>/nodes/<n>/agent/    the agent's certificate, key and CA
//! ```

pub mod control;
pub mod down;
pub mod handle;
pub mod restart;
pub mod state;
pub mod status;
pub mod up;

use std::path::{Path, PathBuf};

pub use state::LabState;

/// Default lab directory when neither `--dir` nor `TRACEFLOW_LAB_DIR` is given.
pub const DEFAULT_DIR: &str = "/var/run/traceflow-lab";
/// Default prefix of every namespace name.
pub const DEFAULT_PREFIX: &str = "tfl";

/// Why a lab command failed. Messages name the command and the log to read.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Topology(#[from] crate::topology::TopologyError),
    #[error("{context}: {source}")]
    Node {
        context: String,
        #[source]
        source: crate::node::NodeError,
    },
    #[error(transparent)]
    Proc(#[from] crate::procs::ProcError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Precondition(String),
    #[error("{what} failed: {detail}\n  log: {log}\n{tail}")]
    Daemon {
        what: String,
        detail: String,
        log: String,
        tail: String,
    },
    #[error("{0}")]
    Other(String),
}

/// `Io` error constructor for `map_err`.
pub fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LabError + '_ {
    move |source| LabError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where everything of one lab lives.
#[derive(Debug, Clone)]
pub struct Paths {
    pub dir: PathBuf,
}

impl Paths {
    /// `dir` made absolute (daemons change directory; sockets need absolute paths).
    pub fn new(dir: &Path) -> Result<Self, LabError> {
        let dir = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            std::env::current_dir().map_err(io_err(dir))?.join(dir)
        };
        Ok(Self { dir })
    }

    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }
    pub fn log(&self, name: &str) -> PathBuf {
        self.logs().join(format!("{}.log", name.replace('/', "-")))
    }
    pub fn lab_ca(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("lab-ca.pem"), self.dir.join("lab-ca-key.pem"))
    }
    pub fn manager(&self) -> PathBuf {
        self.dir.join("manager")
    }
    pub fn admin(&self) -> PathBuf {
        self.dir.join("admin")
    }
    pub fn cluster(&self, c: &str) -> PathBuf {
        self.dir.join("clusters").join(c)
    }
    pub fn kubeconfig(&self, c: &str) -> PathBuf {
        self.cluster(c).join("kubeconfig")
    }
    pub fn kubeapi(&self, c: &str) -> PathBuf {
        self.cluster(c).join("kubeapi")
    }
    pub fn adapter(&self, c: &str) -> PathBuf {
        self.cluster(c).join("adapter")
    }
    pub fn ovs_rundir(&self, c: &str, n: &str) -> PathBuf {
        self.cluster(c).join("nodes").join(n).join("ovs")
    }
    pub fn agent_dir(&self, c: &str, n: &str) -> PathBuf {
        self.cluster(c).join("nodes").join(n).join("agent")
    }
    /// Every top-level entry the lab creates in its directory (what `down` removes).
    pub fn owned_entries(&self) -> Vec<PathBuf> {
        [
            "state.json",
            "state.json.tmp",
            "logs",
            "lab-ca.pem",
            "lab-ca-key.pem",
            "manager",
            "admin",
            "clusters",
        ]
        .iter()
        .map(|e| self.dir.join(e))
        .collect()
    }
}

/// The lab directory from `--dir`, else `TRACEFLOW_LAB_DIR`, else [`DEFAULT_DIR`].
pub fn resolve_dir(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("TRACEFLOW_LAB_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
}
