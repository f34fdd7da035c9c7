//! A lab as a benchmark program drives it: brought up with the `traceflow-lab` beside the
//! program (or attached to by directory), its processes for CPU figures, exec, and down.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use super::{LabError, Paths, state::LabState};

/// A running lab and the directory of the binaries that run it.
pub struct LabHandle {
    pub dir: PathBuf,
    pub bin_dir: PathBuf,
    pub paths: Paths,
    /// The admin's tfctl config (server, CA, client certificate).
    pub tfctl_config: PathBuf,
}

impl LabHandle {
    fn lab_cmd(dir: &Path, bin_dir: &Path) -> Command {
        let mut c = Command::new(bin_dir.join("traceflow-lab"));
        c.arg("--dir").arg(dir).env("TRACEFLOW_BIN_DIR", bin_dir);
        c
    }

    /// Brings `topology` up in a fresh directory named after `tag` (a few letters).
    pub fn up(topology: &Path, bin_dir: &Path, tag: &str) -> Result<Self, LabError> {
        let prefix = format!("tfl-{tag}{}", rand::random::<u32>() % 100_000);
        let dir = std::env::temp_dir().join(&prefix);
        eprintln!("bringing up {} in {}", topology.display(), dir.display());
        let out = Self::lab_cmd(&dir, bin_dir)
            .arg("up")
            .arg(topology)
            .args(["--prefix", &prefix, "--ready-timeout", "90s"])
            // One bench client follows up to 1000 traces at once: more than the manager lets
            // one person watch by default (the daemons `up` starts inherit this).
            .env("TRACEFLOW_MANAGER_MAX_WATCHES_PER_USER", "4096")
            .output()
            .map_err(|e| {
                LabError::Precondition(format!(
                    "cannot run traceflow-lab in {} ({e}): build it with cargo build --workspace --bins",
                    bin_dir.display()
                ))
            })?;
        if !out.status.success() {
            let _ = Self::lab_cmd(&dir, bin_dir).arg("down").output();
            return Err(LabError::Other(format!(
                "traceflow-lab up failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Self::attach(&dir, bin_dir)
    }

    /// The lab already up in `dir`.
    pub fn attach(dir: &Path, bin_dir: &Path) -> Result<Self, LabError> {
        let paths = Paths::new(dir)?;
        let state = LabState::load(&paths)?.ok_or_else(|| {
            LabError::Precondition(format!(
                "no lab in {}: bring one up or drop --lab",
                dir.display()
            ))
        })?;
        let tfctl_config = state.tfctl_config.ok_or_else(|| {
            LabError::Precondition(format!("the lab in {} has no manager", dir.display()))
        })?;
        Ok(Self {
            dir: paths.dir.clone(),
            bin_dir: bin_dir.to_path_buf(),
            paths,
            tfctl_config,
        })
    }

    /// The lab a benchmark program runs on, with the binaries beside the program: the one up
    /// in `attach_to`, else `topology` brought up now. The flag says whether it was brought
    /// up here (then [`release`](Self::release) takes it down).
    pub fn for_program(
        attach_to: Option<&Path>,
        topology: &Path,
        tag: &str,
    ) -> Result<(Self, bool), LabError> {
        let bin_dir = std::env::current_exe()
            .map_err(|e| LabError::Other(format!("cannot tell where this program is: {e}")))?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        match attach_to {
            Some(dir) => Ok((Self::attach(dir, &bin_dir)?, false)),
            None => Ok((Self::up(topology, &bin_dir, tag)?, true)),
        }
    }

    /// On a benchmark program's way out: down if it brought the lab up, unless `keep` (then
    /// it says how to take it down).
    pub fn release(&self, owned: bool, keep: bool) {
        if !owned {
            return;
        }
        if keep {
            eprintln!(
                "lab kept in {} (take it down: traceflow-lab --dir {} down)",
                self.dir.display(),
                self.dir.display()
            );
        } else {
            self.down();
        }
    }

    /// The runtime a benchmark program drives the lab from (two workers, like the machine).
    pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    }

    /// `traceflow-lab down`; problems are printed, not returned (it runs on the way out).
    pub fn down(&self) {
        match Self::lab_cmd(&self.dir, &self.bin_dir).arg("down").output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!("traceflow-lab down: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => eprintln!("traceflow-lab down: {e}"),
        }
    }

    /// (group, pid) of every process the lab recorded; the group is the name's first part
    /// (`manager`, `adapter`, `agent`, `ovs-vswitchd`, ...).
    pub fn processes(&self) -> Result<Vec<(String, i32)>, LabError> {
        let state = LabState::load(&self.paths)?
            .ok_or_else(|| LabError::Precondition("the lab is gone".into()))?;
        Ok(state
            .processes
            .iter()
            .map(|p| {
                let group = p.name.split('/').next().unwrap_or(&p.name).to_string();
                (group, p.pid)
            })
            .collect())
    }

    /// The manager's pid.
    pub fn manager_pid(&self) -> Result<i32, LabError> {
        self.processes()?
            .into_iter()
            .find(|(g, _)| g == "manager")
            .map(|(_, p)| p)
            .ok_or_else(|| LabError::Precondition("the lab recorded no manager process".into()))
    }

    /// Runs `traceflow-lab exec TARGET -- CMD`; whether it succeeded.
    pub fn exec(&self, target: &str, cmd: &[&str]) -> bool {
        Self::lab_cmd(&self.dir, &self.bin_dir)
            .args(["exec", target, "--"])
            .args(cmd)
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

/// utime + stime of `pid` in clock ticks, 0 when it is gone.
pub fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14.
    let rest: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| rest.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 when that fails).
pub fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(100.0)
}

/// Resident set size of `pid` in KiB, 0 when it is gone.
pub fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
