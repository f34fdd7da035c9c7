//! A real Open vSwitch "Node" for integration tests, built by the lab's own builder
//! (`traceflow_lab::node::build`, docs/contracts.md "How the lab leaves a Node"): a network
//! namespace running its own ovsdb-server + ovs-vswitchd with a private run directory,
//! `br-int` (`datapath_type=netdev`), `antrea-gw0`, `antrea-tun0`, `br-phy` on a private
//! underlay, and Pods as namespaces with a veth into br-int and CNI-style `external_ids`. One
//! builder for the agent's tests and the lab, so they cannot drift apart; this file only adds
//! the fixed test layout (addresses, MACs) and synchronous helpers around it.
//!
//! Requires root and `openvswitch-switch`; [`OvsNode::start`] panics with a clear message
//! otherwise; tests never skip. Everything is torn down on drop, also when the test fails,
//! and a failing test gets the flows and the ovs-vswitchd log printed first.
//!
//! Beside it: [`fake_adapter`] (an in-process adapter with real mTLS) and [`runtime`] (the
//! agent's runtime on such a Node: readiness, injecting, reading observations).

#![allow(dead_code, clippy::unwrap_used)]

pub mod fake_adapter;
pub mod runtime;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use traceflow_lab::node::{build, names, ovs::Ovs};
use traceflow_lab::topology::{Cluster, IpFamily, Node, Pod};

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
    /// The namespace of this Node's own underlay bridge ([`OvsNode::connect_underlay`] joins
    /// two of them).
    pub underlay: String,
    /// The Node's address on the underlay (on `br-phy`): `192.168.77.<subnet>`.
    pub underlay_ip: String,
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

use traceflow_lab::node::ovs::VSWITCH_SCHEMA as SCHEMA;

impl OvsNode {
    /// Brings up a Node with `n_pods` Pods: p<i> with MAC 02:00:00:00:00:<i+1>,
    /// IPs 10.1.0.<i+2> and fd00:1::<i+2>; gateway 10.1.0.1 (ofport 2), tunnel ofport 1.
    pub fn start(n_pods: usize) -> Self {
        Self::start_subnet(1, n_pods)
    }

    /// As [`OvsNode::start`] with Pod CIDR 10.<subnet>.0.0/24 (fd00:<subnet>::/64): Pod MACs
    /// 02:00:00:00:<subnet-1>:<i+1>, gateway 10.<subnet>.0.1 (subnet ≥ 1), underlay address
    /// 192.168.77.<subnet>.
    pub fn start_subnet(subnet: u8, n_pods: usize) -> Self {
        require_environment();
        let tag = format!(
            "tfa{}x{}",
            std::process::id() % 100_000,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::Builder::new()
            .prefix("tfa-")
            .tempdir_in("/tmp")
            .unwrap();
        let (cluster, pods) = test_cluster(subnet, n_pods);
        let node = &cluster.nodes[0];
        let netns = names::node_netns(&tag, &cluster.name, &node.name);
        let underlay = names::underlay_netns(&tag, &cluster.name);
        let mut me = Self {
            tag: tag.clone(),
            netns: netns.clone(),
            underlay: underlay.clone(),
            underlay_ip: format!("192.168.77.{subnet}"),
            dir,
            pods: Vec::new(),
            gateway_ip: format!("10.{subnet}.0.1"),
            gateway_ofport: build::GATEWAY_OFPORT,
            tunnel_ofport: build::TUNNEL_OFPORT,
        };
        let ovs = Ovs::new(me.dir.path(), &netns);
        // Registered before building, so a failure half-way still tears down what exists.
        me.pods = pods
            .iter()
            .map(|p| TestPod {
                name: p.name.clone(),
                netns: names::pod_netns(&tag, &cluster.name, &p.namespace, &p.name),
                host_if: names::pod_host_veth(&p.namespace, &p.name),
                mac: p.mac.clone(),
                ip: p.ips[0].to_string(),
                ip6: p.ips[1].to_string(),
                ofport: 0,
            })
            .collect();
        let built = block_on(async {
            build::build_underlay(&underlay).await?;
            build::create_netns(&netns).await?;
            build::build_node(&cluster, node, &netns, &underlay, &ovs).await?;
            for (pod, t) in pods.iter().zip(&me.pods) {
                build::create_netns(&t.netns).await?;
                build::build_pod(&cluster, node, pod, &t.netns, &netns, &ovs).await?;
            }
            Ok::<_, traceflow_lab::node::NodeError>(())
        });
        if let Err(e) = built {
            panic!("building test Node {netns}: {e}");
        }
        for i in 0..me.pods.len() {
            let host_if = me.pods[i].host_if.clone();
            let out = run(me.vsctl().args(["get", "Interface", &host_if, "ofport"]));
            me.pods[i].ofport = String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("ofport of {host_if}: {e}"));
        }
        me
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

    /// Starts ovs-vswitchd again (the lab's own restart path); its run directory is ours, so
    /// `br-int.mgmt` lands there.
    pub fn start_vswitchd(&self) {
        let ovs = Ovs::new(self.dir.path(), &self.netns);
        if let Err(e) = block_on(ovs.start_vswitchd(&self.netns)) {
            panic!("restarting ovs-vswitchd on {}: {e}", self.netns);
        }
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

    /// Joins two Nodes' underlays into one segment (a veth between their underlay bridges),
    /// as if the lab had built them in one cluster, and waits until each answers the other.
    /// Returns the tunnel IPs of `a` and `b`.
    pub fn connect_underlay(a: &OvsNode, b: &OvsNode) -> (String, String) {
        let (va, vb) = (format!("{}j", a.tag), format!("{}j", b.tag));
        run(Command::new("ip").args([
            "link",
            "add",
            "name",
            &va,
            "netns",
            &a.underlay,
            "type",
            "veth",
            "peer",
            "name",
            &vb,
            "netns",
            &b.underlay,
        ]));
        for (ns, v) in [(&a.underlay, &va), (&b.underlay, &vb)] {
            run(Command::new("ip").args(["-n", ns, "link", "set", v, "master", "br0", "up"]));
        }
        let ips = (a.underlay_ip.clone(), b.underlay_ip.clone());
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

/// The one-Node cluster of a test Node: Pods `default/p<i>` as [`OvsNode::start_subnet`]
/// describes, dual-stack.
fn test_cluster(subnet: u8, n_pods: usize) -> (Cluster, Vec<Pod>) {
    let net = |s: String| -> IpNet { s.parse().unwrap() };
    let ip = |s: String| -> IpAddr { s.parse().unwrap() };
    let node = Node {
        name: "node".into(),
        pod_cidrs: vec![
            net(format!("10.{subnet}.0.0/24")),
            net(format!("fd00:{subnet}::/64")),
        ],
        internal_ips: vec![net(format!("192.168.77.{subnet}/24"))],
        gateway_ips: vec![
            ip(format!("10.{subnet}.0.1")),
            ip(format!("fd00:{subnet}::1")),
        ],
        labels: Default::default(),
    };
    let pods: Vec<Pod> = (0..n_pods)
        .map(|i| Pod {
            namespace: "default".into(),
            name: format!("p{i}"),
            node: node.name.clone(),
            ips: vec![
                ip(format!("10.{subnet}.0.{}", i + 2)),
                ip(format!("fd00:{subnet}::{}", i + 2)),
            ],
            mac: format!("02:00:00:00:{:02x}:{:02x}", subnet - 1, i + 1),
            host_network: false,
        })
        .collect();
    let cluster = Cluster {
        name: "c".into(),
        ip_families: vec![IpFamily::IPv4, IpFamily::IPv6],
        service_cidrs: Vec::new(),
        underlay: vec![net("192.168.77.0/24".into())],
        nodes: vec![node],
        pods: pods.clone(),
        objects: Vec::new(),
    };
    (cluster, pods)
}

/// Runs a lab builder future to completion from synchronous test code (also from inside a
/// test's tokio runtime: on a thread of its own).
fn block_on<T: Send>(f: impl std::future::Future<Output = T> + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(f)
        })
        .join()
        .unwrap()
    })
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
        for ns in [&self.netns, &self.underlay] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
