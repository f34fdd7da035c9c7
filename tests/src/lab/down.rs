//! `traceflow-lab down`: stop every process, delete every namespace and file. Idempotent.

use std::time::Duration;

use tracing::{info, warn};

use super::{LabError, LabState, Paths, up::planned_netns};
use crate::{
    node,
    procs::{self, ProcRecord},
};

/// What `down` removed.
#[derive(Debug, Default, Clone)]
pub struct DownReport {
    pub stopped: Vec<String>,
    pub netns: Vec<String>,
    pub had_lab: bool,
}

/// Takes the lab in `dir` down. Without a state file it still stops stray processes whose
/// command line names the lab directory and removes the lab's files; that makes it safe to
/// run twice or after a failed `up`. `orphan_prefix` additionally deletes every network
/// namespace named `<prefix>-…` (for a lab whose directory was removed by hand).
pub async fn down(
    dir: &std::path::Path,
    orphan_prefix: Option<&str>,
) -> Result<DownReport, LabError> {
    let paths = Paths::new(dir)?;
    let state = LabState::load(&paths)?;
    let mut report = DownReport {
        had_lab: state.is_some(),
        ..Default::default()
    };
    let grace = Duration::from_secs(5);
    if let Some(st) = &state {
        // Reverse start order: agents before adapters before the manager, OVS last.
        let mut procs = st.processes.clone();
        // OVS daemons a failed `up` did not record yet are in their pidfiles.
        for c in &st.topology.clusters {
            for n in &c.nodes {
                let ovs = node::ovs::Ovs::new(&paths.ovs_rundir(&c.name, &n.name), "(recorded)");
                for d in ["ovsdb-server", "ovs-vswitchd"] {
                    if let Ok(r) = ovs.record(d, &format!("{}/{}", c.name, n.name))
                        && !procs.iter().any(|p| p.pid == r.pid)
                    {
                        procs.insert(0, r);
                    }
                }
            }
        }
        let stops = procs
            .iter()
            .rev()
            .filter(|p| p.alive())
            .map(|p| async move {
                let killed = procs::stop(p, grace).await;
                (p.name.clone(), killed)
            });
        // Stop control-plane processes concurrently (each waits its grace period at most).
        for (name, killed) in futures::future::join_all(stops).await {
            if killed {
                warn!(%name, "needed SIGKILL");
            }
            report.stopped.push(name);
        }
    }
    // Anything else still running with the lab directory on its command line.
    let needle = format!("{}/", paths.dir.display());
    for pid in procs::pids_mentioning(&needle) {
        let rec = ProcRecord {
            name: format!("stray pid {pid}"),
            pid,
            start_time: procs::start_time(pid),
            log: Default::default(),
            command: String::new(),
            argv: Vec::new(),
        };
        if rec.alive() {
            procs::stop(&rec, grace).await;
            report.stopped.push(rec.name);
        }
    }
    if let Some(st) = &state {
        let mut names = st.netns.clone();
        for n in planned_netns(&st.prefix, &st.topology.clusters) {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        // Pods first, then Nodes, then underlays (reverse creation order).
        for n in names.iter().rev() {
            let existed = std::path::Path::new("/run/netns").join(n).exists();
            node::delete_netns(n)
                .await
                .map_err(|source| LabError::Node {
                    context: format!("deleting network namespace {n}"),
                    source,
                })?;
            if existed {
                report.netns.push(n.clone());
            }
        }
    }
    if let Some(prefix) = orphan_prefix {
        let all = node::list_netns().await.map_err(|source| LabError::Node {
            context: "listing network namespaces".into(),
            source,
        })?;
        // Pods and Nodes before underlays; all of them share the prefix.
        let mut mine: Vec<String> = all
            .into_iter()
            .filter(|n| n.starts_with(&format!("{prefix}-")))
            .collect();
        mine.sort_by_key(|n| n.ends_with("-underlay"));
        for n in mine {
            node::delete_netns(&n)
                .await
                .map_err(|source| LabError::Node {
                    context: format!("deleting network namespace {n}"),
                    source,
                })?;
            report.netns.push(n);
        }
    }
    for entry in paths.owned_entries() {
        let r = if entry.is_dir() {
            std::fs::remove_dir_all(&entry)
        } else {
            std::fs::remove_file(&entry)
        };
        if let Err(e) = r
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(LabError::Io {
                path: entry,
                source: e,
            });
        }
    }
    // The directory itself, when nothing else is in it.
    let _ = std::fs::remove_dir(&paths.dir);
    info!(dir = %paths.dir.display(), stopped = report.stopped.len(), netns = report.netns.len(), "lab down");
    Ok(report)
}
