//! Starting a Node's `ovs-vswitchd` again after it died, with the command line `up` used, and
//! recording the new process in the lab state (so `status` shows it and `down` stops it).

use super::{LabError, LabState, Paths};
use crate::node::{names, ovs::Ovs};

/// Starts `ovs-vswitchd` of Node `node` of cluster `cluster` again; the old one must be gone.
/// Returns the new pid.
pub async fn restart_vswitchd(
    dir: &std::path::Path,
    cluster: &str,
    node: &str,
) -> Result<i32, LabError> {
    let paths = Paths::new(dir)?;
    let mut st = LabState::load(&paths)?
        .ok_or_else(|| LabError::Precondition(format!("no lab in {}", paths.dir.display())))?;
    let known = st
        .topology
        .clusters
        .iter()
        .find(|c| c.name == cluster)
        .and_then(|c| c.node(node))
        .is_some();
    if !known {
        return Err(LabError::Precondition(format!(
            "no Node {node} in cluster {cluster:?}"
        )));
    }
    let label = format!("{cluster}/{node}");
    let name = format!("ovs-vswitchd/{label}");
    if let Some(p) = st.processes.iter().find(|p| p.name == name && p.alive()) {
        return Err(LabError::Precondition(format!(
            "{name} is still running (pid {}): stop it first",
            p.pid
        )));
    }
    let ovs = Ovs::new(
        &paths.ovs_rundir(cluster, node),
        &names::node_netns(&st.prefix, cluster, node),
    );
    let rec = ovs
        .start_vswitchd(&label)
        .await
        .map_err(|source| LabError::Node {
            context: format!("restarting {name}"),
            source,
        })?;
    let pid = rec.pid;
    match st.processes.iter_mut().find(|p| p.name == name) {
        Some(p) => *p = rec,
        None => st.processes.push(rec),
    }
    st.save(&paths)?;
    Ok(pid)
}
