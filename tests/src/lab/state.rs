//! `state.json`: what a lab consists of. Written before each thing is created, so `down` can
//! remove whatever a failed `up` left behind.

use std::{collections::BTreeMap, path::PathBuf};

use serde::{Deserialize, Serialize};

use super::{LabError, Paths, io_err};
use crate::{procs::ProcRecord, topology::Topology};

/// Everything `status` shows and `down` removes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub dir: PathBuf,
    /// Prefix of every namespace name.
    pub prefix: String,
    pub topology_file: String,
    pub topology: Topology,
    /// Namespaces the lab creates (recorded before creation), in creation order.
    pub netns: Vec<String>,
    /// Processes the lab started, in start order.
    pub processes: Vec<ProcRecord>,
    /// `https://127.0.0.1:P` of the manager.
    #[serde(default)]
    pub manager: Option<String>,
    /// Cluster name → its Kubernetes API URL.
    #[serde(default)]
    pub kube_apis: BTreeMap<String, String>,
    /// Cluster name → the adapter's agent endpoint.
    #[serde(default)]
    pub adapters: BTreeMap<String, String>,
    #[serde(default)]
    pub tfctl_config: Option<PathBuf>,
    pub control_plane: bool,
    /// Set when `up` finished.
    #[serde(default)]
    pub ready: bool,
}

impl LabState {
    /// Loads the state of the lab in `paths`, or `None` when there is none.
    pub fn load(paths: &Paths) -> Result<Option<Self>, LabError> {
        let p = paths.state();
        match std::fs::read_to_string(&p) {
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                LabError::Precondition(format!(
                    "{}: unreadable lab state ({e}); remove the lab's namespaces by hand \
                     (ip netns list) and delete the file",
                    p.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// Writes the state atomically.
    pub fn save(&self, paths: &Paths) -> Result<(), LabError> {
        let p = paths.state();
        let tmp = p.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| LabError::Other(format!("serialising lab state: {e}")))?;
        std::fs::write(&tmp, text).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &p).map_err(io_err(&p))
    }
}

/// Whether `p` can prefix namespace names: lower-case letters, digits, '-', 1..=12 bytes.
pub fn valid_prefix(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 16
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}
