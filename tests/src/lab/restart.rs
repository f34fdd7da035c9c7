//! Starting a lab process again after it died (`traceflow-lab restart <name>`), with the command
//! line `up` used, and recording the new process in the lab state (so `status` shows it and
//! `down` stops it). The fault suite (tests/tests/faults.rs) kills the manager, an adapter, an
//! agent or an `ovs-vswitchd` and brings it back this way.

use std::time::Duration;

use super::{LabError, LabState, Paths};
use crate::{
    node::{names, ovs::Ovs},
    procs::{self, ProcRecord},
};

/// How long a restarted daemon must stay alive for the restart to count (a bad flag or a
/// taken port ends it at once).
const SURVIVES: Duration = Duration::from_millis(300);

/// Starts the recorded process `name` (as `status` lists it: `manager`, `adapter/<c>`,
/// `agent/<c>/<node>`, `kubeapi/<c>`, `ovs-vswitchd/<c>/<node>`) again; the old one must be
/// gone. It gets the same program, arguments and log, and the environment of the caller (the
/// daemons `up` started inherited `up`'s). Returns the new pid.
pub async fn restart(dir: &std::path::Path, name: &str) -> Result<i32, LabError> {
    if let Some(label) = name.strip_prefix("ovs-vswitchd/") {
        let Some((cluster, node)) = label.split_once('/') else {
            return Err(LabError::Precondition(format!(
                "{name}: name an ovs-vswitchd as ovs-vswitchd/<cluster>/<node>"
            )));
        };
        return restart_vswitchd(dir, cluster, node).await;
    }
    let paths = Paths::new(dir)?;
    let mut st = load(&paths)?;
    let Some(old) = st.processes.iter().find(|p| p.name == name).cloned() else {
        let known: Vec<&str> = st.processes.iter().map(|p| p.name.as_str()).collect();
        return Err(LabError::Precondition(format!(
            "no process {name:?} in the lab; it has: {}",
            known.join(", ")
        )));
    };
    if old.alive() {
        return Err(LabError::Precondition(format!(
            "{name} is still running (pid {}): stop it first",
            old.pid
        )));
    }
    let Some((program, args)) = old.argv.split_first() else {
        return Err(LabError::Precondition(format!(
            "{name} was not started by the lab's own launcher (no recorded command line), so it \
             cannot be restarted; take the lab down and up again"
        )));
    };
    wait_released(&old).await?;
    let rec = procs::spawn_detached(name, std::path::Path::new(program), args, &[], &old.log)?;
    tokio::time::sleep(SURVIVES).await;
    if !rec.alive() {
        return Err(LabError::Daemon {
            what: format!("restarting {name}"),
            detail: format!("exited at once; command: {}", rec.command),
            log: rec.log.display().to_string(),
            tail: rec.log_tail(20),
        });
    }
    let pid = rec.pid;
    record(&mut st, rec);
    st.save(&paths)?;
    Ok(pid)
}

/// Starts `ovs-vswitchd` of Node `node` of cluster `cluster` again; the old one must be gone.
/// Returns the new pid.
pub async fn restart_vswitchd(
    dir: &std::path::Path,
    cluster: &str,
    node: &str,
) -> Result<i32, LabError> {
    let paths = Paths::new(dir)?;
    let mut st = load(&paths)?;
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
    if let Some(old) = st.processes.iter().find(|p| p.name == name) {
        wait_released(old).await?;
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
    record(&mut st, rec);
    st.save(&paths)?;
    Ok(pid)
}

/// Waits until every thread of the dead process `old` is gone, so its ports and files are
/// released. A killed multi-threaded daemon's leader shows as a zombie (what
/// [`ProcRecord::alive`] calls dead) while its other threads still exit holding the shared file
/// table: a restart in that window found its listening port still taken.
async fn wait_released(old: &ProcRecord) -> Result<(), LabError> {
    let task_dir = format!("/proc/{}/task", old.pid);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let same = procs::start_time(old.pid) == old.start_time;
        let threads = std::fs::read_dir(&task_dir).map_or(0, Iterator::count);
        if !same || threads <= 1 {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(LabError::Precondition(format!(
                "{} (pid {}) still has {threads} threads exiting after 5 s; try again",
                old.name, old.pid
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn load(paths: &Paths) -> Result<LabState, LabError> {
    LabState::load(paths)?
        .ok_or_else(|| LabError::Precondition(format!("no lab in {}", paths.dir.display())))
}

/// Replaces the record of the same name (or adds it).
fn record(st: &mut LabState, rec: ProcRecord) {
    match st.processes.iter_mut().find(|p| p.name == rec.name) {
        Some(p) => *p = rec,
        None => st.processes.push(rec),
    }
}
