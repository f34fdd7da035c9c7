//! A real Open vSwitch "Node" for integration tests, following docs/contracts.md ("How the lab
//! leaves a Node"): a network namespace running its own ovsdb-server + ovs-vswitchd with a
//! private run directory, `br-int` (`datapath_type=netdev`), `antrea-gw0`, `antrea-tun0`, and
//! Pods as namespaces with a veth into br-int and CNI-style `external_ids`.
//!
//! Self-contained on purpose (std only, shelling out to `ip` / `ovs-*`), so another crate can
//! copy or reuse it. Requires root and `openvswitch-switch`; [`OvsNode::start`] panics with a
//! clear message otherwise; tests never skip. Everything is torn down on drop, also when the
//! test fails, and a failing test gets the flows and the ovs-vswitchd log printed first.
//!
//! Beside it: [`fake_adapter`] (an in-process adapter with real mTLS) and [`runtime`] (the
//! agent's runtime on such a Node: readiness, injecting, reading observations).

#![allow(dead_code, clippy::unwrap_used)]

pub mod fake_adapter;
pub mod runtime;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A Pod of a test Node.
#[derive(Debug, Clone)]
pub struct TestPod {
    pub name: String,
    pub netns: String,
    pub host_if: String,
    pub mac: String,
    pub ip: String,
    pub ip6: String,
    pub ofport: u32,
}

/// One Node: namespace, OVS processes, bridge, gateway, tunnel, Pods.
pub struct OvsNode {
    pub tag: String,
    pub netns: String,
    pub dir: tempfile::TempDir,
    pub pods: Vec<TestPod>,
    pub gateway_ip: String,
    pub gateway_ofport: u32,
    pub tunnel_ofport: u32,
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn require_environment() {
    let uid = run(Command::new("id").arg("-u"));
    let uid = String::from_utf8_lossy(&uid.stdout).trim().to_string();
    assert_eq!(
        uid, "0",
        "the real-OVS tests need root (network namespaces, veths, ovs-vswitchd); run them as root"
    );
    for bin in [
        "ovsdb-server",
        "ovs-vswitchd",
        "ovsdb-tool",
        "ovs-vsctl",
        "ovs-ofctl",
        "ip",
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{bin} not found: install openvswitch-switch and iproute2 (Debian packages)"
        );
    }
    assert!(
        Path::new(SCHEMA).exists(),
        "{SCHEMA} missing: install openvswitch-switch"
    );
}

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

impl OvsNode {
    /// Brings up a Node with `n_pods` Pods: p<i> with MAC 02:00:00:00:00:<i+1>,
    /// IPs 10.1.0.<i+2> and fd00:1::<i+2>; gateway 10.1.0.1 (ofport 2), tunnel ofport 1.
    pub fn start(n_pods: usize) -> Self {
        Self::start_subnet(1, n_pods)
    }

    /// As [`OvsNode::start`] with Pod CIDR 10.<subnet>.0.0/24 (fd00:<subnet>::/64): Pod MACs
    /// 02:00:00:00:<subnet-1>:<i+1>, gateway 10.<subnet>.0.1 (subnet ≥ 1).
    pub fn start_subnet(subnet: u8, n_pods: usize) -> Self {
        require_environment();
        let tag = format!(
            "tfa{}x{}",
            std::process::id() % 100_000,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let netns = format!("{tag}-node");
        let dir = tempfile::Builder::new()
            .prefix("tfa-")
            .tempdir_in("/tmp")
            .unwrap();
        let mut node = Self {
            tag: tag.clone(),
            netns: netns.clone(),
            dir,
            pods: Vec::new(),
            gateway_ip: format!("10.{subnet}.0.1"),
            gateway_ofport: 2,
            tunnel_ofport: 1,
        };
        run(Command::new("ip").args(["netns", "add", &netns]));
        run(node.in_ns("ip").args(["link", "set", "lo", "up"]));
        // With the userspace datapath the Node's kernel also sees every frame on the host ends
        // of the Pod veths (AF_PACKET does not steal them) and would answer a Pod's ARP for the
        // gateway IP with the veth's own MAC; only interfaces owning the address may answer.
        for key in [
            "net.ipv4.conf.all.arp_ignore=1",
            "net.ipv4.conf.default.arp_ignore=1",
        ] {
            run(node.in_ns("sysctl").args(["-qw", key]));
        }
        let db = node.rundir().join("conf.db");
        run(Command::new("ovsdb-tool")
            .arg("create")
            .arg(&db)
            .arg(SCHEMA));
        node.start_ovsdb();
        run(node.vsctl().args(["--no-wait", "init"]));
        node.start_vswitchd();
        run(node.vsctl().args([
            "add-br",
            "br-int",
            "--",
            "set",
            "bridge",
            "br-int",
            "datapath_type=netdev",
            "fail_mode=secure",
            "--",
            "add-port",
            "br-int",
            "antrea-tun0",
            "--",
            "set",
            "interface",
            "antrea-tun0",
            "type=geneve",
            "options:remote_ip=flow",
            "ofport_request=1",
            "external_ids:antrea-type=tunnel",
            "--",
            "add-port",
            "br-int",
            "antrea-gw0",
            "--",
            "set",
            "interface",
            "antrea-gw0",
            "type=internal",
            "ofport_request=2",
            "external_ids:antrea-type=gateway",
            &format!("external_ids:ip=10.{subnet}.0.1"),
        ]));
        node.wait_for(|| node.link_exists("antrea-gw0"), "antrea-gw0 to appear");
        run(node.in_ns("ip").args([
            "addr",
            "add",
            &format!("10.{subnet}.0.1/24"),
            "dev",
            "antrea-gw0",
        ]));
        run(node.in_ns("ip").args(["link", "set", "antrea-gw0", "up"]));
        for i in 0..n_pods {
            node.add_pod(subnet, i);
        }
        node
    }

    pub fn rundir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn in_ns(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns, program]);
        self.ovs_env(&mut c);
        c
    }

    fn ovs_env(&self, c: &mut Command) {
        let d = self.rundir();
        c.env("OVS_RUNDIR", &d)
            .env("OVS_DBDIR", &d)
            .env("OVS_LOGDIR", &d);
    }

    pub fn vsctl(&self) -> Command {
        let mut c = Command::new("ovs-vsctl");
        c.arg(format!(
            "--db=unix:{}",
            self.rundir().join("db.sock").display()
        ));
        c.arg("--timeout=10");
        self.ovs_env(&mut c);
        c
    }

    pub fn ofctl(&self, args: &[&str]) -> String {
        let mut c = Command::new("ovs-ofctl");
        c.args(["-O", "OpenFlow15"]).args(args);
        self.ovs_env(&mut c);
        String::from_utf8_lossy(&run(&mut c).stdout).to_string()
    }

    pub fn mgmt(&self) -> String {
        format!("unix:{}", self.rundir().join("br-int.mgmt").display())
    }

    pub fn dump_flows(&self) -> String {
        self.ofctl(&["dump-flows", &self.mgmt()])
    }

    fn start_ovsdb(&self) {
        let d = self.rundir();
        run(self.in_ns("ovsdb-server").args([
            d.join("conf.db").to_str().unwrap(),
            &format!("--remote=punix:{}", d.join("db.sock").display()),
            &format!("--pidfile={}", d.join("ovsdb-server.pid").display()),
            &format!("--unixctl={}", d.join("ovsdb-server.ctl").display()),
            &format!("--log-file={}", d.join("ovsdb-server.log").display()),
            "--detach",
        ]));
    }

    /// Starts ovs-vswitchd (again); its run directory is ours, so `br-int.mgmt` lands there.
    pub fn start_vswitchd(&self) {
        let d = self.rundir();
        run(self.in_ns("ovs-vswitchd").args([
            &format!("unix:{}", d.join("db.sock").display()),
            &format!("--pidfile={}", d.join("ovs-vswitchd.pid").display()),
            &format!("--unixctl={}", d.join("ovs-vswitchd.ctl").display()),
            &format!("--log-file={}", d.join("ovs-vswitchd.log").display()),
            "--detach",
        ]));
    }

    fn pid(&self, daemon: &str) -> Option<i32> {
        let s = std::fs::read_to_string(self.rundir().join(format!("{daemon}.pid"))).ok()?;
        s.trim().parse().ok()
    }

    /// Kills ovs-vswitchd with SIGKILL and waits until it is gone.
    pub fn kill_vswitchd(&self) {
        if let Some(pid) = self.pid("ovs-vswitchd") {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            self.wait_for(
                || nix::sys::signal::kill(pid, None).is_err(),
                "ovs-vswitchd to exit",
            );
            let _ = std::fs::remove_file(self.rundir().join("ovs-vswitchd.pid"));
        }
    }

    fn link_exists(&self, name: &str) -> bool {
        self.in_ns("ip")
            .args(["link", "show", name])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Waits (10 s) until `needle` is (or, with `present` false, is no longer) in the flows.
    pub fn wait_flows(&self, needle: &str, present: bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let flows = self.dump_flows();
            if flows.contains(needle) == present {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {needle:?} present={} expected={present}:\n{flows}",
                self.netns,
                !present
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn wait_for(&self, mut f: impl FnMut() -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn add_pod(&mut self, subnet: u8, i: usize) {
        let name = format!("p{i}");
        let netns = format!("{}-{name}", self.tag);
        let host_if = format!("{}{name}", self.tag);
        assert!(host_if.len() <= 15, "interface name {host_if} too long");
        let mac = format!("02:00:00:00:{:02x}:{:02x}", subnet - 1, i + 1);
        let ip = format!("10.{subnet}.0.{}", i + 2);
        let ip6 = format!("fd00:{subnet}::{}", i + 2);
        let ofport = u32::try_from(i).unwrap() + 3;
        run(Command::new("ip").args(["netns", "add", &netns]));
        run(self.in_ns("ip").args([
            "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ]));
        let pod = |args: &[&str]| {
            run(Command::new("ip")
                .args(["netns", "exec", &netns, "ip"])
                .args(args));
        };
        pod(&["link", "set", "lo", "up"]);
        pod(&["link", "set", "eth0", "address", &mac]);
        pod(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        pod(&[
            "-6",
            "addr",
            "add",
            &format!("{ip6}/64"),
            "dev",
            "eth0",
            "nodad",
        ]);
        pod(&["link", "set", "eth0", "up"]);
        pod(&[
            "route",
            "add",
            "default",
            "via",
            &format!("10.{subnet}.0.1"),
        ]);
        run(self.in_ns("ip").args(["link", "set", &host_if, "up"]));
        run(self.vsctl().args([
            "add-port",
            "br-int",
            &host_if,
            "--",
            "set",
            "interface",
            &host_if,
            &format!("ofport_request={ofport}"),
            "external_ids:antrea-type=container",
            "external_ids:k8s_pod_namespace=default",
            &format!("external_ids:k8s_pod_name={name}"),
            &format!("external_ids:ip=\"{ip},{ip6}\""),
            &format!("external_ids:attached-mac=\"{mac}\""),
            &format!("external_ids:container-id={netns}"),
        ]));
        self.pods.push(TestPod {
            name,
            netns,
            host_if,
            mac,
            ip,
            ip6,
            ofport,
        });
    }

    /// Joins two Nodes' underlays the way the lab does: `br-phy` (netdev) in each Node with one
    /// end of a veth pair, the Node's tunnel address `192.168.77.<index>/24` on br-phy.
    /// Returns the tunnel IPs of `a` and `b`.
    pub fn connect_underlay(a: &OvsNode, b: &OvsNode) -> (String, String) {
        let ips = ("192.168.77.1".to_string(), "192.168.77.2".to_string());
        let (va, vb) = (format!("{}u", a.tag), format!("{}u", b.tag));
        run(a.in_ns("ip").args([
            "link", "add", &va, "type", "veth", "peer", "name", &vb, "netns", &b.netns,
        ]));
        for (n, v, ip) in [(a, &va, &ips.0), (b, &vb, &ips.1)] {
            run(n.vsctl().args([
                "add-br",
                "br-phy",
                "--",
                "set",
                "bridge",
                "br-phy",
                "datapath_type=netdev",
                "--",
                "add-port",
                "br-phy",
                v,
            ]));
            n.wait_for(|| n.link_exists("br-phy"), "br-phy to appear");
            run(n.in_ns("ip").args(["link", "set", v, "up"]));
            run(n.in_ns("ip").args(["link", "set", "br-phy", "up"]));
            run(n
                .in_ns("ip")
                .args(["addr", "add", &format!("{ip}/24"), "dev", "br-phy"]));
        }
        // Warm the underlay: the kernel's ARP exchange crosses br-phy, where OVS's userspace
        // tunnel code learns the neighbour it needs to send Geneve packets.
        let ping = |n: &OvsNode, ip: &str| {
            n.in_ns("ping")
                .args(["-c1", "-W1", ip])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        a.wait_for(
            || ping(a, &ips.1) && ping(b, &ips.0),
            "the underlay to answer pings",
        );
        ips
    }

    /// `program` to run inside Pod `pod`'s network namespace.
    pub fn in_pod(&self, pod: usize, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.pods[pod].netns, program]);
        c
    }

    /// Runs `ping -c1 -W2 <ip>` inside a Pod; true when it got an answer.
    pub fn ping(&self, from: usize, ip: &str) -> bool {
        self.in_pod(from, "ping")
            .args(["-c1", "-W2", ip])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// [`OvsNode::ping`] up to five times; true on the first answer.
    pub fn ping_retry(&self, from: usize, ip: &str) -> bool {
        (0..5).any(|_| self.ping(from, ip))
    }

    /// `ovs-appctl` against this Node's ovs-vswitchd.
    pub fn appctl(&self, args: &[&str]) -> String {
        let mut c = Command::new("ovs-appctl");
        c.arg("-t")
            .arg(self.rundir().join("ovs-vswitchd.ctl"))
            .args(args);
        c.output()
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .unwrap_or_else(|e| e.to_string())
    }

    fn diagnostics(&self) {
        eprintln!("---- flows on {} ----", self.netns);
        let mut c = Command::new("ovs-ofctl");
        c.args(["-O", "OpenFlow15", "dump-flows", &self.mgmt()]);
        if let Ok(o) = c.output() {
            eprintln!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        if let Ok(log) = std::fs::read_to_string(self.rundir().join("ovs-vswitchd.log")) {
            let lines: Vec<_> = log.lines().collect();
            eprintln!("---- ovs-vswitchd.log (tail) ----");
            for l in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{l}");
            }
        }
    }
}

/// Asserts `ok` with `what`, printing the flows of `nodes` first when it does not hold.
pub fn dump_on_failure(ok: bool, nodes: &[&OvsNode], what: &str) {
    if !ok {
        for n in nodes {
            eprintln!("==== {} ====\n{}", n.netns, n.dump_flows());
        }
    }
    assert!(ok, "{what}");
}

impl Drop for OvsNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.diagnostics();
        }
        for daemon in ["ovs-vswitchd", "ovsdb-server"] {
            if let Some(pid) = self.pid(daemon) {
                let pid = nix::unistd::Pid::from_raw(pid);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                let deadline = Instant::now() + Duration::from_secs(3);
                while nix::sys::signal::kill(pid, None).is_ok() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        for p in &self.pods {
            let _ = Command::new("ip").args(["netns", "del", &p.netns]).output();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}
