//! Helpers of the lab tests: prerequisites (root, OVS) that fail loudly, a lab per test with a
//! unique directory and namespace prefix, running `traceflow-lab`, dumping what a failure needs.

#![allow(dead_code)]

pub mod k8s_tools;
pub mod trace;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// Panics with what to do when the lab cannot run here. Lab tests never skip.
pub fn require_lab_prerequisites() {
    let root = nix::unistd::geteuid().is_root();
    let mut missing = Vec::new();
    for (tool, arg) in [
        ("ovs-vsctl", "--version"),
        ("ovs-vswitchd", "--version"),
        ("ovsdb-server", "--version"),
        ("ovs-ofctl", "--version"),
        ("ip", "-V"),
    ] {
        if Command::new(tool).arg(arg).output().is_err() {
            missing.push(tool);
        }
    }
    assert!(
        root && missing.is_empty(),
        "the lab tests need root and Open vSwitch (root: {root}, missing: {missing:?}).\n\
         Fix: run as root after `apt-get install -y openvswitch-switch iproute2 iputils-ping` \
         (scripts/test.sh does this). These tests never skip."
    );
    assert_binaries_fresh();
}

/// The daemons a lab runs, from target/debug.
const LAB_BINARIES: [&str; 5] = [
    "traceflow-manager",
    "traceflow-adapter",
    "traceflow-agent",
    "tfctl",
    "traceflow-lab",
];

/// The lab runs the binaries in target/debug: one built before its sources changed would test
/// old code and could pass. Cargo's dep-info file (`<bin>.d`, beside the binary) lists every
/// source it was built from, and each must be older than the binary.
fn assert_binaries_fresh() {
    let dir = bin_dir();
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified());
    let mut stale = Vec::new();
    for bin in LAB_BINARIES {
        let built = match modified(&dir.join(bin)) {
            Ok(t) => t,
            Err(e) => {
                stale.push(format!("{bin}: {e}"));
                continue;
            }
        };
        let Ok(dep_info) = std::fs::read_to_string(dir.join(format!("{bin}.d"))) else {
            stale.push(format!("{bin}: no {bin}.d to tell what it was built from"));
            continue;
        };
        if let Some(src) = dep_sources(&dep_info)
            .into_iter()
            .find(|src| modified(Path::new(src)).is_ok_and(|t| t > built))
        {
            stale.push(format!("{bin} is older than {src}"));
        }
    }
    assert!(
        stale.is_empty(),
        "the lab would run stale binaries: {stale:?}.\n\
         Fix: cargo build --workspace --bins (scripts/test.sh does this), then run the tests again."
    );
}

/// The sources of the first rule of a Makefile-style dep-info file (`target: src src …`,
/// spaces inside paths escaped with a backslash).
fn dep_sources(dep_info: &str) -> Vec<String> {
    let Some((_, deps)) = dep_info.lines().next().and_then(|l| l.split_once(": ")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = deps.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            ' ' => out.extend((!cur.is_empty()).then(|| std::mem::take(&mut cur))),
            c => cur.push(c),
        }
    }
    out.extend((!cur.is_empty()).then_some(cur));
    out
}

/// Directory of the workspace's binaries (target/debug), from this test's lab binary.
pub fn bin_dir() -> PathBuf {
    let lab = PathBuf::from(env!("CARGO_BIN_EXE_traceflow-lab"));
    lab.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The topology file `name` in tests/topologies.
pub fn topology(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("topologies")
        .join(name)
}

/// One lab of one test: a short unique directory (unix socket paths are limited) and prefix.
pub struct Lab {
    pub dir: PathBuf,
    pub prefix: String,
    pub down_done: bool,
    /// Extra environment for every `traceflow-lab` run (the daemons `up` starts inherit it).
    pub env: Vec<(String, String)>,
}

impl Lab {
    /// The end of a suite that collects its failed cases: panics with every one of them (or
    /// the error that stopped the suite) and this lab's state, else returns.
    pub fn report<E: std::fmt::Display>(&self, result: Result<Vec<String>, E>) {
        match result {
            Ok(f) if f.is_empty() => {}
            Ok(f) => panic!(
                "{} case(s) failed:\n{}\n{}",
                f.len(),
                f.join("\n----\n"),
                self.dump()
            ),
            Err(e) => panic!("{e}\n{}", self.dump()),
        }
    }

    /// A fresh lab named after `tag` (a few lower-case letters).
    pub fn new(tag: &str) -> Self {
        let n: u32 = rand::random::<u32>() % 100_000;
        let prefix = format!("tfl-{tag}{n}");
        let dir = std::env::temp_dir().join(&prefix);
        Self {
            dir,
            prefix,
            down_done: false,
            env: Vec::new(),
        }
    }

    /// Runs `traceflow-lab --dir DIR ARGS`.
    pub fn run(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_traceflow-lab"))
            .arg("--dir")
            .arg(&self.dir)
            .args(args)
            .env("TRACEFLOW_BIN_DIR", bin_dir())
            .env("RUST_LIB_BACKTRACE", "0")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output();
        match out {
            Ok(o) => o,
            Err(e) => panic!("cannot run traceflow-lab {args:?}: {e}"),
        }
    }

    /// `up TOPOLOGY` with this lab's prefix; panics with the output on failure (after `down`).
    pub fn up(&mut self, topology: &Path, extra: &[&str]) -> String {
        let topo = topology.display().to_string();
        let mut args = vec!["up", topo.as_str(), "--prefix", self.prefix.as_str()];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            let dump = self.dump();
            self.down();
            panic!(
                "traceflow-lab up failed ({}):\nstdout:\n{stdout}\nstderr:\n{}\n{dump}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        stdout
    }

    /// `down`, asserting it succeeded.
    pub fn down(&mut self) -> String {
        self.down_done = true;
        let out = self.run(&["down"]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "traceflow-lab down failed: {text}");
        text
    }

    /// `exec TARGET -- CMD...`.
    pub fn exec(&self, target: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["exec", target, "--"];
        args.extend_from_slice(cmd);
        self.run(&args)
    }

    /// Namespaces of this lab that exist.
    pub fn netns(&self) -> Vec<String> {
        let out = Command::new("ip").args(["netns", "list"]).output();
        let text = out
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&format!("{}-", self.prefix)))
            .map(ToString::to_string)
            .collect()
    }

    /// Processes whose command line mentions this lab's directory.
    pub fn processes(&self) -> Vec<String> {
        let needle = format!("{}/", self.dir.display());
        let mut out = Vec::new();
        for pid in traceflow_lab::procs::pids_mentioning(&needle) {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Zombies are gone for our purposes.
            if stat
                .rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
            {
                continue;
            }
            out.push(format!(
                "{pid}: {}",
                String::from_utf8_lossy(&cmd).replace('\0', " ")
            ));
        }
        out
    }

    /// Asserts `down` left no namespace, process or file of this lab.
    pub fn assert_gone(&self) {
        let ns = self.netns();
        assert!(ns.is_empty(), "namespaces left after down: {ns:?}");
        let procs = self.processes();
        assert!(procs.is_empty(), "processes left after down: {procs:?}");
        assert!(!self.dir.exists(), "{} left after down", self.dir.display());
    }

    /// Everything a failure needs: status, logs, OVS flows of every Node.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        let st = self.run(&["status"]);
        out.push_str("===== traceflow-lab status\n");
        out.push_str(&String::from_utf8_lossy(&st.stdout));
        out.push_str(&String::from_utf8_lossy(&st.stderr));
        let mut logs = Vec::new();
        collect_logs(&self.dir, &mut logs);
        logs.sort();
        for log in logs {
            out.push_str(&format!("===== {}\n", log.display()));
            out.push_str(&traceflow_lab::procs::tail(&log, 80));
            out.push('\n');
        }
        let mut rundirs = Vec::new();
        collect_rundirs(&self.dir, &mut rundirs);
        for rundir in rundirs {
            let mgmt = format!("unix:{}", rundir.join("br-int.mgmt").display());
            let flows = Command::new("ovs-ofctl")
                .args(["-O", "OpenFlow15", "dump-flows", &mgmt])
                .output();
            out.push_str(&format!("===== flows {mgmt}\n"));
            if let Ok(f) = flows {
                out.push_str(&String::from_utf8_lossy(&f.stdout));
                out.push_str(&String::from_utf8_lossy(&f.stderr));
            }
            let ports = Command::new("ovs-vsctl")
                .arg(format!("--db=unix:{}", rundir.join("db.sock").display()))
                .args(["--columns=name,ofport,external_ids", "list", "Interface"])
                .output();
            out.push_str(&format!("===== interfaces {}\n", rundir.display()));
            if let Ok(p) = ports {
                out.push_str(&String::from_utf8_lossy(&p.stdout));
            }
        }
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // A panicking test still takes its lab down.
        if !self.down_done {
            let _ = self.run(&["down"]);
        }
    }
}

fn collect_logs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_logs(&p, out);
        } else if p.extension().is_some_and(|x| x == "log") {
            out.push(p);
        }
    }
}

fn collect_rundirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "ovs") {
                out.push(p);
            } else {
                collect_rundirs(&p, out);
            }
        }
    }
}

/// stdout of an Output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stdout + stderr of an Output as text.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Pauses processes until dropped (SIGSTOP now, SIGCONT on drop, also on panic and when a
/// later one fails).
pub struct Paused(Vec<nix::unistd::Pid>);

impl Paused {
    pub fn new(pids: &[i32]) -> Result<Self, String> {
        let mut paused = Self(Vec::new());
        for &pid in pids {
            let pid = nix::unistd::Pid::from_raw(pid);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP)
                .map_err(|e| format!("SIGSTOP {pid}: {e}"))?;
            paused.0.push(pid);
        }
        Ok(paused)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = nix::sys::signal::kill(*pid, nix::sys::signal::Signal::SIGCONT);
        }
    }
}
