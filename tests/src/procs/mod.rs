//! Processes the lab starts: detached daemons (own session, stdin closed, output to a log file),
//! identified by pid plus start time so `down` never signals a recycled pid.

use std::{
    fs::OpenOptions,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

/// Errors starting or inspecting a process.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("open log {path}: {source}")]
    Log {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("start {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
}

/// A process the lab started and must stop.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcRecord {
    /// What it is, e.g. `manager`, `adapter/c1`, `ovs-vswitchd/c1/n1`.
    pub name: String,
    pub pid: i32,
    /// Start time in clock ticks since boot (field 22 of /proc/PID/stat); 0 if unknown.
    pub start_time: u64,
    /// Where its output goes.
    pub log: PathBuf,
    /// The command line, for `status` and error messages.
    pub command: String,
    /// Program and arguments exactly as started, so `traceflow-lab restart` can start it again
    /// (empty for daemons started otherwise, e.g. OVS's own `--detach`).
    #[serde(default)]
    pub argv: Vec<String>,
}

/// Start time of `pid` and whether it is a zombie, from /proc.
fn stat(pid: i32) -> Option<(u64, bool)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and parentheses: fields after the last ')' are regular.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); start time is field 22.
    let state = *fields.first()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state == "Z" || state == "X"))
}

/// Start time of a running process (0 if it cannot be read).
pub fn start_time(pid: i32) -> u64 {
    stat(pid).map_or(0, |(s, _)| s)
}

impl ProcRecord {
    /// Whether this very process (same pid and start time) is running and not a zombie.
    pub fn alive(&self) -> bool {
        match stat(self.pid) {
            Some((start, zombie)) => !zombie && (self.start_time == 0 || start == self.start_time),
            None => false,
        }
    }

    /// Last `lines` lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

/// Last `lines` lines of a file ("" if unreadable).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Starts `program args` detached from this process: its own session (`setsid`), stdin from
/// /dev/null, stdout and stderr appended to `log`. The child is not waited for; it outlives
/// the caller.
pub fn spawn_detached(
    name: &str,
    program: &Path,
    args: &[String],
    envs: &[(String, String)],
    log: &Path,
) -> Result<ProcRecord, ProcError> {
    let open = || {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|source| ProcError::Log {
                path: log.display().to_string(),
                source,
            })
    };
    let out = open()?;
    let err = open()?;
    let command = format!("{} {}", program.display(), args.join(" "));
    // The `setsid` program calls setsid(2) and execs (it only forks when it is already a
    // process-group leader, which a freshly spawned child is not), so the pid stays the same.
    let mut cmd = std::process::Command::new("setsid");
    cmd.arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd.spawn().map_err(|source| ProcError::Spawn {
        command: command.clone(),
        source,
    })?;
    let pid = i32::try_from(child.id()).unwrap_or(0);
    // Dropping a std Child neither kills nor waits for it. If it exits while we still run,
    // it stays a zombie until we exit; `alive` treats zombies as dead.
    drop(child);
    // fork() fixed the start time; exec() keeps it, so this identifies the daemon.
    let start_time = start_time(pid);
    info!(%name, pid, log = %log.display(), "started");
    Ok(ProcRecord {
        name: name.to_string(),
        pid,
        start_time,
        log: log.to_path_buf(),
        command,
        argv: std::iter::once(program.display().to_string())
            .chain(args.iter().cloned())
            .collect(),
    })
}

/// Stops a process: SIGTERM, up to `grace` to exit, then SIGKILL. Does nothing if it is gone
/// or the pid now belongs to another process. Returns whether it had to be killed.
pub async fn stop(p: &ProcRecord, grace: Duration) -> bool {
    if !p.alive() || p.pid <= 1 {
        return false;
    }
    let pid = Pid::from_raw(p.pid);
    if let Err(error) = kill(pid, Signal::SIGTERM) {
        debug!(%error, name = %p.name, pid = p.pid, "SIGTERM");
    }
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        if !p.alive() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if p.alive() {
        warn!(name = %p.name, pid = p.pid, "did not stop on SIGTERM; sending SIGKILL");
        let _ = kill(pid, Signal::SIGKILL);
        for _ in 0..100 {
            if !p.alive() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        return true;
    }
    false
}

/// Pids of processes whose command line mentions `needle` (e.g. a lab directory + '/'),
/// excluding this process. Used by `down` to find daemons a failed `up` did not record.
pub fn pids_mentioning(needle: &str) -> Vec<i32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if u32::try_from(pid).ok() == Some(me) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            out.push(pid);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn detached_process_is_alive_until_stopped() -> Result<(), ProcError> {
        let dir = tempfile::tempdir().map_err(|source| ProcError::Log {
            path: "tempdir".into(),
            source,
        })?;
        let log = dir.path().join("sleep.log");
        let rec = spawn_detached(
            "sleeper",
            Path::new("/bin/sh"),
            &["-c".into(), "echo started; exec sleep 30".into()],
            &[],
            &log,
        )?;
        assert!(rec.alive(), "{rec:?}");
        assert_ne!(rec.start_time, 0);
        // A record with another start time is a different process: never signalled.
        let impostor = ProcRecord {
            start_time: rec.start_time + 1,
            ..rec.clone()
        };
        assert!(!impostor.alive());
        assert!(!stop(&impostor, Duration::from_millis(100)).await);
        assert!(rec.alive());
        for _ in 0..100 {
            if rec.log_tail(5).contains("started") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            rec.log_tail(5).contains("started"),
            "output goes to the log"
        );
        let killed = stop(&rec, Duration::from_secs(5)).await;
        assert!(!killed, "sleep obeys SIGTERM");
        assert!(!rec.alive());
        Ok(())
    }

    #[test]
    fn pids_mentioning_finds_only_matching_command_lines() {
        let needle = format!("/nonexistent/tfl-needle-{}/", std::process::id());
        assert!(pids_mentioning(&needle).is_empty());
    }
}
