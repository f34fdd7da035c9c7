//! The Node pipeline with real traffic (issue 3, "Done when"): one dual-stack cluster of two
//! Nodes (tests/topologies/policies.yaml) with the full control plane; ping, TCP and UDP between
//! Pod namespaces via `traceflow-lab exec`, every case with its allowed and its denied outcome:
//! Pod-to-Pod on one Node and across Nodes, Service ClusterIP load-balancing to endpoints on
//! both Nodes, no-endpoint reject, hairpin, K8s default deny and allow (named and numeric
//! ports), Antrea Drop vs Reject (TCP, UDP, ICMP), Pass to a lower tier, tier and priority
//! order, IPv6 for all of them. Then ovs-vswitchd of each Node in turn is killed and started
//! again, and the same behaviour must come back within 5 s with no help.
//!
//! Needs root, Open vSwitch and the workspace's binaries (`cargo build --workspace --bins`);
//! fails loudly without them, never skips.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{Lab, bin_dir, require_lab_prerequisites, stdout, text, topology};

/// A TCP/UDP server for a Pod: `srv.py NAME PIDFILE tcp:PORT udp:PORT ...`; answers every
/// connection / datagram with `NAME <peer address>` (dual-stack sockets), writes its pid once
/// every socket is bound.
const SERVER: &str = r#"
import socket, sys, threading, os
name, pidfile = sys.argv[1], sys.argv[2]
def peer(a):
    h = a[0]
    return h[7:] if h.startswith("::ffff:") else h
def sock(kind):
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return s
def tcp(s):
    while True:
        c, a = s.accept()
        try:
            c.sendall(("%s %s\n" % (name, peer(a))).encode())
        except OSError:
            pass
        c.close()
def udp(s):
    while True:
        _, a = s.recvfrom(2048)
        s.sendto(("%s %s\n" % (name, peer(a))).encode(), a)
for spec in sys.argv[3:]:
    proto, port = spec.split(":")
    s = sock(socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    s.bind(("::", int(port)))
    if proto == "tcp":
        s.listen(64)
    threading.Thread(target=tcp if proto == "tcp" else udp, args=(s,), daemon=True).start()
with open(pidfile + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(pidfile + ".tmp", pidfile)
threading.Event().wait()
"#;

/// The Pods' servers: (Pod, TCP and UDP ports).
const SERVERS: &[(&str, &[&str])] = &[
    ("web-a", &["tcp:8080", "udp:53"]),
    ("web-b", &["tcp:8080"]),
    ("solo", &["tcp:8080"]),
    ("peer", &["tcp:80", "udp:53"]),
    ("db", &["tcp:5432", "tcp:5433", "udp:5353"]),
    (
        "secure",
        &[
            "tcp:9001", "tcp:9002", "tcp:9003", "udp:9001", "udp:9002", "udp:9003",
        ],
    ),
    ("ordered", &["tcp:7001", "tcp:7002", "tcp:7003", "tcp:7004"]),
];

/// Servers started in Pods; killed (by the pids they wrote) on drop.
struct Servers {
    children: Vec<Child>,
    pidfiles: Vec<PathBuf>,
}

impl Servers {
    fn start(lab: &Lab) -> Self {
        let script = lab.dir.join("srv.py");
        if let Err(e) = std::fs::write(&script, SERVER) {
            panic!("{}: {e}", script.display());
        }
        let mut s = Self {
            children: Vec::new(),
            pidfiles: Vec::new(),
        };
        for (pod, ports) in SERVERS {
            let pidfile = lab.dir.join(format!("srv-{pod}.pid"));
            let log = lab.dir.join(format!("srv-{pod}.log"));
            let log = match std::fs::File::create(&log) {
                Ok(f) => f,
                Err(e) => panic!("{}: {e}", log.display()),
            };
            let err = log.try_clone().ok();
            let target = format!("c1/default/{pod}");
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_traceflow-lab"));
            cmd.arg("--dir")
                .arg(&lab.dir)
                .args(["exec", &target, "--", "python3"])
                .arg(&script)
                .arg(pod)
                .arg(&pidfile)
                .args(*ports)
                .stdin(Stdio::null())
                .stdout(log);
            if let Some(err) = err {
                cmd.stderr(err);
            }
            match cmd.spawn() {
                Ok(c) => s.children.push(c),
                Err(e) => panic!("cannot start the server in {target}: {e}"),
            }
            s.pidfiles.push(pidfile);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !s.pidfiles.iter().all(|p| p.exists()) {
            assert!(
                Instant::now() < deadline,
                "Pod servers not listening after 10 s: {:?} missing; logs: {}",
                s.pidfiles
                    .iter()
                    .filter(|p| !p.exists())
                    .collect::<Vec<_>>(),
                lab.dir.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for p in &self.pidfiles {
            if let Some(pid) = std::fs::read_to_string(p)
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // `down` removes only what the lab made: take our files away.
        if let Some(dir) = self.pidfiles.first().and_then(|p| p.parent()) {
            let _ = std::fs::remove_file(dir.join("srv.py"));
            for (pod, _) in SERVERS {
                let _ = std::fs::remove_file(dir.join(format!("srv-{pod}.pid")));
                let _ = std::fs::remove_file(dir.join(format!("srv-{pod}.log")));
            }
        }
    }
}

/// A Pod's address: `host` in Node `node`'s Pod CIDR of the family.
fn ip(node: u8, host: u8, v6: bool) -> String {
    if v6 {
        format!("fd00:30:{node}::{host}")
    } else {
        format!("10.30.{node}.{host}")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tcp {
    Connected,
    /// RST: `nc` fails fast with "Connection refused".
    Refused,
    /// No answer within the 2 s of `nc -w2`.
    TimedOut,
    Other(String),
}

/// Runs the shell command `cmd` in Pod `from`, timing it inside the Pod's namespace (so the
/// figure is the client's own, not `traceflow-lab exec`'s start-up): (exit code, output
/// without the timing line, duration).
fn timed(lab: &Lab, from: &str, cmd: &str) -> (i32, String, Duration) {
    let script = format!(
        "s=$(date +%s%N); {cmd}; r=$?; e=$(date +%s%N); echo \"@@timing $r $(( (e - s) / 1000 ))\""
    );
    let out = lab.exec(&format!("c1/default/{from}"), &["sh", "-c", &script]);
    let all = text(&out);
    let mut rest = Vec::new();
    let mut timing = None;
    for line in all.lines() {
        match line.strip_prefix("@@timing ") {
            Some(t) => {
                let mut it = t.split_whitespace().map(str::parse::<u64>);
                if let (Some(Ok(rc)), Some(Ok(us))) = (it.next(), it.next()) {
                    timing = Some((i32::try_from(rc).unwrap_or(-1), Duration::from_micros(us)));
                }
            }
            None => rest.push(line),
        }
    }
    let (rc, took) = timing.unwrap_or((-1, Duration::ZERO));
    (rc, rest.join("\n"), took)
}

/// `nc -v -z -w2 IP PORT` from `from`: the outcome and how long `nc` took.
fn tcp(lab: &Lab, from: &str, ip: &str, port: u16) -> (Tcp, Duration) {
    let (rc, all, took) = timed(lab, from, &format!("nc -v -z -w2 {ip} {port} 2>&1"));
    let outcome = if rc == 0 {
        Tcp::Connected
    } else if all.contains("refused") {
        Tcp::Refused
    } else if all.contains("timed out") {
        Tcp::TimedOut
    } else {
        Tcp::Other(format!("exit {rc}: {}", all.trim()))
    };
    (outcome, took)
}

/// What a TCP server at IP:PORT says to `from` (`nc -w2 -d`), trimmed; empty when nothing.
fn fetch(lab: &Lab, from: &str, ip: &str, port: u16) -> String {
    let out = lab.exec(
        &format!("c1/default/{from}"),
        &["nc", "-w2", "-d", ip, &port.to_string()],
    );
    stdout(&out).trim().to_string()
}

/// One datagram from `from` to IP:PORT (`nc -u -w1`): the reply (empty when none) and how
/// long `nc` ran (an ICMP unreachable ends it at once; silence lasts the 1 s of `-w1`).
fn udp(lab: &Lab, from: &str, ip: &str, port: u16) -> (String, Duration) {
    let (_, reply, took) = timed(lab, from, &format!("echo hello | nc -u -w1 {ip} {port}"));
    (reply.trim().to_string(), took)
}

/// `ping -c1 -W2` from `from` answered.
fn ping(lab: &Lab, from: &str, ip: &str) -> bool {
    lab.exec(&format!("c1/default/{from}"), &["ping", "-c1", "-W2", ip])
        .status
        .success()
}

/// One labelled check: `Ok(detail)` or `Err(what went wrong)`.
type Check<'a> = (
    String,
    Box<dyn Fn() -> Result<String, String> + Send + Sync + 'a>,
);

fn expect_tcp(lab: &Lab, from: &str, ip: &str, port: u16, want: Tcp) -> Result<String, String> {
    let (got, took) = tcp(lab, from, ip, port);
    let ms = took.as_millis();
    match (&want, &got) {
        (Tcp::Refused, Tcp::Refused) if took < Duration::from_secs(1) => {
            Ok(format!("refused in {ms} ms"))
        }
        (Tcp::Refused, Tcp::Refused) => Err(format!("refused, but only after {ms} ms (>= 1 s)")),
        (Tcp::TimedOut, Tcp::TimedOut) if took >= Duration::from_millis(1900) => {
            Ok(format!("timed out after {ms} ms"))
        }
        (w, g) if w == g => Ok(format!("{g:?} in {ms} ms")),
        (w, g) => Err(format!("want {w:?}, got {g:?} after {ms} ms")),
    }
}

fn expect_udp(lab: &Lab, from: &str, ip: &str, port: u16, want: Udp) -> Result<String, String> {
    let (reply, took) = udp(lab, from, ip, port);
    let ms = took.as_millis();
    match want {
        Udp::Reply(name) if reply.split_whitespace().next() == Some(name) => {
            Ok(format!("reply {reply:?}"))
        }
        Udp::Silent if reply.is_empty() && took >= Duration::from_millis(900) => {
            Ok(format!("no reply, nc ran {ms} ms"))
        }
        Udp::Unreachable if reply.is_empty() && took < Duration::from_millis(500) => Ok(format!(
            "no reply, nc ended after {ms} ms (ICMP unreachable)"
        )),
        w => Err(format!("want {w:?}, got reply {reply:?} after {ms} ms")),
    }
}

#[derive(Debug, Clone, Copy)]
enum Udp {
    Reply(&'static str),
    /// Dropped: nothing comes back, `nc` waits its full second.
    Silent,
    /// Rejected: an ICMP unreachable ends `nc` at once.
    Unreachable,
}

fn expect_ping(lab: &Lab, from: &str, ip: &str, want: bool) -> Result<String, String> {
    let got = ping(lab, from, ip);
    if got == want {
        Ok(if got { "answered" } else { "no answer" }.to_string())
    } else {
        Err(format!("want answered={want}, got answered={got}"))
    }
}

/// A ping that must fail: with an ICMP error back in < 1 s (`unreachable`), or silently
/// after its 2 s.
fn expect_ping_error(lab: &Lab, from: &str, ip: &str, unreachable: bool) -> Result<String, String> {
    let (rc, out, took) = timed(lab, from, &format!("ping -c1 -W2 {ip} 2>&1"));
    let ms = took.as_millis();
    let error_line = out
        .lines()
        .find(|l| l.starts_with("From "))
        .map(str::to_string);
    match (unreachable, rc, &error_line) {
        (_, 0, _) => Err(format!("answered in {ms} ms:\n{out}")),
        (true, _, Some(l)) if took < Duration::from_secs(1) => Ok(format!("{l:?} in {ms} ms")),
        (false, _, None) if took >= Duration::from_millis(1900) => {
            Ok(format!("no answer, ping ran {ms} ms"))
        }
        _ => Err(format!("ping ran {ms} ms, exit {rc}:\n{out}")),
    }
}

/// The Pod-to-Pod and policy cases of one family (run concurrently: most of the time is
/// waiting for denied connections to time out).
fn policy_checks<'a>(lab: &'a Lab, v6: bool) -> Vec<Check<'a>> {
    let fam = if v6 { "IPv6" } else { "IPv4" };
    let web_a = ip(1, 20, v6);
    let peer = ip(2, 10, v6);
    let nobody = ip(2, 99, v6);
    let db = ip(2, 30, v6);
    let secure = ip(2, 40, v6);
    let ordered = ip(1, 40, v6);
    let mut c: Vec<Check<'a>> = Vec::new();
    let mut add = |label: &str, f: Box<dyn Fn() -> Result<String, String> + Send + Sync + 'a>| {
        c.push((format!("[{fam}] {label}"), f));
    };
    // Pod to Pod.
    {
        let (a, p, n) = (web_a.clone(), peer.clone(), nobody.clone());
        add(
            "pod-to-pod one Node: ping client -> web-a answered",
            Box::new(move || expect_ping(lab, "client", &a, true)),
        );
        let a = web_a.clone();
        add(
            "pod-to-pod one Node: TCP client -> web-a:8080 served by web-a",
            Box::new(move || {
                let got = fetch(lab, "client", &a, 8080);
                let want = format!("web-a {}", ip(1, 10, v6));
                if got == want {
                    Ok(got)
                } else {
                    Err(format!("want {want:?}, got {got:?}"))
                }
            }),
        );
        let a = web_a.clone();
        add(
            "pod-to-pod one Node: UDP client -> web-a:53 answered",
            Box::new(move || expect_udp(lab, "client", &a, 53, Udp::Reply("web-a"))),
        );
        let p2 = p.clone();
        add(
            "pod-to-pod across Nodes: ping client -> peer answered",
            Box::new(move || expect_ping(lab, "client", &p2, true)),
        );
        let p2 = p.clone();
        add(
            "pod-to-pod across Nodes: TCP client -> peer:80 served by peer",
            Box::new(move || {
                let got = fetch(lab, "client", &p2, 80);
                let want = format!("peer {}", ip(1, 10, v6));
                if got == want {
                    Ok(got)
                } else {
                    Err(format!("want {want:?}, got {got:?}"))
                }
            }),
        );
        add(
            "pod-to-pod across Nodes: UDP client -> peer:53 answered",
            Box::new(move || expect_udp(lab, "client", &p, 53, Udp::Reply("peer"))),
        );
        add(
            "pod-to-pod across Nodes (denied): ping to an address no Pod has gets no answer",
            Box::new(move || expect_ping(lab, "client", &n, false)),
        );
    }
    // Kubernetes NetworkPolicy on db: default deny + allow role=trusted on pg (named) / UDP 5353.
    {
        let d = db.clone();
        add(
            "K8s allow: client (role=trusted) -> db:5432 (named port pg) connects",
            Box::new(move || expect_tcp(lab, "client", &d, 5432, Tcp::Connected)),
        );
        let d = db.clone();
        add(
            "K8s allow: client -> db UDP 5353 (numeric port) answered",
            Box::new(move || expect_udp(lab, "client", &d, 5353, Udp::Reply("db"))),
        );
        let d = db.clone();
        add(
            "K8s default deny: guest -> db:5432 times out",
            Box::new(move || expect_tcp(lab, "guest", &d, 5432, Tcp::TimedOut)),
        );
        let d = db.clone();
        add(
            "K8s default deny: guest -> db UDP 5353 gets no reply",
            Box::new(move || expect_udp(lab, "guest", &d, 5353, Udp::Silent)),
        );
        let d = db.clone();
        add(
            "K8s default deny: ping guest -> db gets no answer",
            Box::new(move || expect_ping(lab, "guest", &d, false)),
        );
        let d = db.clone();
        add(
            "K8s default deny: client -> db:5433 (port not allowed) times out",
            Box::new(move || expect_tcp(lab, "client", &d, 5433, Tcp::TimedOut)),
        );
        // Pass: client's traffic skips the application tier's drop-trusted (which `other`,
        // also role=trusted, meets) and gets the K8s allow above.
        add(
            "Pass (denied side): other (role=trusted, no Pass) -> db:5432 dropped by the \
             application tier",
            Box::new(move || expect_tcp(lab, "other", &db, 5432, Tcp::TimedOut)),
        );
    }
    // Antrea Drop vs Reject (secure on the other Node).
    {
        for (port, want, what) in [
            (
                9001,
                Tcp::TimedOut,
                "Drop: TCP client -> secure:9001 times out",
            ),
            (
                9002,
                Tcp::Refused,
                "Reject: TCP client -> secure:9002 refused (RST) < 1 s",
            ),
            (
                9003,
                Tcp::Connected,
                "Allow (no rule): TCP client -> secure:9003 connects",
            ),
        ] {
            let s = secure.clone();
            add(
                what,
                Box::new(move || expect_tcp(lab, "client", &s, port, want.clone())),
            );
        }
        for (port, want, what) in [
            (
                9001,
                Udp::Silent,
                "Drop: UDP client -> secure:9001 gets no reply",
            ),
            (
                9002,
                Udp::Unreachable,
                "Reject: UDP client -> secure:9002 ends at once (ICMP unreachable)",
            ),
            (
                9003,
                Udp::Reply("secure"),
                "Allow: UDP client -> secure:9003 answered",
            ),
        ] {
            let s = secure.clone();
            add(
                what,
                Box::new(move || expect_udp(lab, "client", &s, port, want)),
            );
        }
    }
    // Drop vs Reject for ICMP: rules without ports from other (Drop) and guest (Reject).
    {
        let s = secure.clone();
        add(
            "Allow: ping client -> secure answered",
            Box::new(move || expect_ping(lab, "client", &s, true)),
        );
        let s = secure.clone();
        add(
            "Drop: ping other -> secure gets no answer within 2 s",
            Box::new(move || expect_ping_error(lab, "other", &s, false)),
        );
        let s = secure.clone();
        add(
            "Reject: ping guest -> secure gets an ICMP unreachable < 1 s",
            Box::new(move || expect_ping_error(lab, "guest", &s, true)),
        );
    }
    // Tier and priority order (ordered, on client's Node).
    for (port, want, what) in [
        (
            7001,
            Tcp::Connected,
            "tier order: securityops Allow beats application Reject (7001 connects)",
        ),
        (
            7004,
            Tcp::TimedOut,
            "tier order: securityops Drop beats application Allow (7004 times out)",
        ),
        (
            7003,
            Tcp::Connected,
            "priority order: priority 1 Allow beats priority 5 Reject (7003 connects)",
        ),
        (
            7002,
            Tcp::Refused,
            "priority order: priority 1 Reject beats priority 5 Allow (7002 refused)",
        ),
    ] {
        let o = ordered.clone();
        add(
            what,
            Box::new(move || expect_tcp(lab, "client", &o, port, want.clone())),
        );
    }
    c
}

/// The Service cases of one family: ClusterIP load-balancing, no endpoints, hairpin.
fn service_checks(lab: &Lab, v6: bool) -> Vec<Check<'_>> {
    let fam = if v6 { "IPv6" } else { "IPv4" };
    let (web, empty, solo) = if v6 {
        ("fd00:96::80", "fd00:96::81", "fd00:96::90")
    } else {
        ("10.96.0.80", "10.96.0.81", "10.96.0.90")
    };
    let client = ip(1, 10, v6);
    let peer = ip(2, 10, v6);
    let gateway = ip(1, 1, v6);
    let mut c: Vec<Check<'_>> = Vec::new();
    let lb_client = client.clone();
    c.push((
        format!("[{fam}] Service web {web}:80 load-balances to web-a (n1) and web-b (n2)"),
        Box::new(move || {
            let mut seen = Vec::new();
            // No SNAT for a client that is not the endpoint: the server sees client's IP.
            let (a, b) = (format!("web-a {lb_client}"), format!("web-b {lb_client}"));
            for _ in 0..40 {
                let got = fetch(lab, "client", web, 80);
                if got != a && got != b {
                    return Err(format!("unexpected answer {got:?} (after {seen:?})"));
                }
                seen.push(got);
                if seen.contains(&a) && seen.contains(&b) {
                    return Ok(format!(
                        "both endpoints answered in {} connects",
                        seen.len()
                    ));
                }
            }
            Err(format!("only one endpoint answered 40 connects: {seen:?}"))
        }),
    ));
    c.push((
        format!("[{fam}] Service web {web}:80 from n2 (peer) reaches an endpoint"),
        Box::new(move || {
            let got = fetch(lab, "peer", web, 80);
            if got == format!("web-a {peer}") || got == format!("web-b {peer}") {
                Ok(got)
            } else {
                Err(format!("got {got:?}"))
            }
        }),
    ));
    c.push((
        format!("[{fam}] Service empty (no endpoints) {empty}:80 refused < 1 s"),
        Box::new(move || expect_tcp(lab, "client", empty, 80, Tcp::Refused)),
    ));
    c.push((
        format!(
            "[{fam}] hairpin: solo -> its Service {solo}:80 served by solo, SNATed to the \
             gateway {gateway}"
        ),
        Box::new(move || {
            let got = fetch(lab, "solo", solo, 80);
            let want = format!("solo {gateway}");
            if got == want {
                Ok(got)
            } else {
                Err(format!("want {want:?}, got {got:?}"))
            }
        }),
    ));
    c.push((
        format!(
            "[{fam}] hairpin (denied side): solo -> {solo}:81 (solo:8081, nothing listens) \
             refused by solo"
        ),
        Box::new(move || expect_tcp(lab, "solo", solo, 81, Tcp::Refused)),
    ));
    c
}

/// Runs the checks concurrently; returns the failures (label: reason) and prints every result.
fn run_checks(round: &str, checks: Vec<Check<'_>>) -> Vec<String> {
    // A bounded pool: most checks wait on timeouts, but 60 clients at once on 2 cores would
    // slow the fast ones (Reject must answer in < 1 s) for reasons that are not the pipeline's.
    const WORKERS: usize = 12;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<Result<String, String>>>> =
        checks.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some((_, f)) = checks.get(i) else { break };
                    let r = f();
                    if let Ok(mut slot) = slots[i].lock() {
                        *slot = Some(r);
                    }
                }
            });
        }
    });
    let results: Vec<(String, Result<String, String>)> = checks
        .iter()
        .zip(slots)
        .map(|((label, _), slot)| {
            let r = slot
                .into_inner()
                .ok()
                .flatten()
                .unwrap_or_else(|| Err("the check panicked".into()));
            (label.clone(), r)
        })
        .collect();
    let mut failures = Vec::new();
    for (label, r) in results {
        match r {
            Ok(detail) => println!("{round} ok   {label}: {detail}"),
            Err(why) => {
                println!("{round} FAIL {label}: {why}");
                failures.push(format!("{label}: {why}"));
            }
        }
    }
    failures
}

fn all_checks(lab: &Lab) -> Vec<Check<'_>> {
    let mut checks = service_checks(lab, false);
    checks.extend(service_checks(lab, true));
    checks.extend(policy_checks(lab, false));
    checks.extend(policy_checks(lab, true));
    checks
}

/// pid of ovs-vswitchd of Node `node` from `traceflow-lab status --json`.
fn vswitchd_pid(lab: &Lab, node: &str) -> i32 {
    let out = lab.run(&["status", "--json"]);
    let v: serde_json::Value = match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(e) => panic!("status --json: {e}: {}", text(&out)),
    };
    let name = format!("ovs-vswitchd/c1/{node}");
    v.get("processes")
        .and_then(serde_json::Value::as_array)
        .and_then(|ps| {
            ps.iter()
                .find(|p| p.get("name").and_then(serde_json::Value::as_str) == Some(&name))
        })
        .and_then(|p| p.get("pid").and_then(serde_json::Value::as_i64))
        .and_then(|p| i32::try_from(p).ok())
        .unwrap_or_else(|| panic!("no {name} in status --json: {v}"))
}

/// Number of flows under the agent's cookie on br-int of `node` (0 when the switch is down).
fn agent_flows(lab: &Lab, node: &str) -> usize {
    let mgmt = format!(
        "unix:{}",
        lab.dir
            .join(format!("clusters/c1/nodes/{node}/ovs/br-int.mgmt"))
            .display()
    );
    Command::new("ovs-ofctl")
        .args([
            "-O",
            "OpenFlow15",
            "dump-flows",
            &mgmt,
            "cookie=0x7f1c000000000001/-1",
        ])
        .output()
        .map(|o| stdout(&o).lines().filter(|l| l.contains("cookie=")).count())
        .unwrap_or(0)
}

fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
}

/// The behaviour the restart must bring back, cheap enough to poll: cross-Node Pod-to-Pod,
/// the K8s allow, an Antrea Reject (the agent's packet-in path) and hairpin through a Service.
fn restored(lab: &Lab) -> bool {
    fetch(lab, "client", "10.30.2.10", 80).starts_with("peer ")
        && tcp(lab, "client", "10.30.2.30", 5432).0 == Tcp::Connected
        && tcp(lab, "client", "10.30.2.40", 9002).0 == Tcp::Refused
        && fetch(lab, "solo", "10.96.0.90", 80) == "solo 10.30.1.1"
}

#[test]
fn real_traffic_through_the_pipeline_and_after_a_vswitchd_restart() {
    require_lab_prerequisites();
    for bin in ["traceflow-manager", "traceflow-adapter", "traceflow-agent"] {
        assert!(
            bin_dir().join(bin).is_file(),
            "{bin} is not in {}: run `cargo build --workspace --bins` first",
            bin_dir().display()
        );
    }
    let started = Instant::now();
    let mut lab = Lab::new("dpl");
    lab.up(&topology("policies.yaml"), &["--ready-timeout", "60s"]);
    let servers = Servers::start(&lab);

    // The agents program br-int from the adapter's NodeState moments after `up`: wait until
    // the policy-dependent behaviour is there (bounded) before judging the cases.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !restored(&lab) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("lab up and programmed after {:?}", started.elapsed());

    let mut failures = run_checks("before-restart", all_checks(&lab));

    // Kill ovs-vswitchd of n2 (db, secure, web-b, peer live there) and start it again with the
    // lab's command line; nothing else helps.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("tokio runtime: {e}"),
    };
    for node in ["n2", "n1"] {
        if !failures.is_empty() {
            break;
        }
        let pid = vswitchd_pid(&lab, node);
        let flows_before = agent_flows(&lab, node);
        let killed_at = Instant::now();
        if let Err(e) = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        ) {
            panic!("kill -9 {pid}: {e}");
        }
        while pid_alive(pid) {
            assert!(
                killed_at.elapsed() < Duration::from_secs(5),
                "ovs-vswitchd {pid} survived SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // Really gone: the behaviour is lost.
        let lost = !restored(&lab);
        let restart_at = Instant::now();
        let new_pid = match rt.block_on(traceflow_lab::lab::restart::restart_vswitchd(
            &lab.dir, "c1", node,
        )) {
            Ok(p) => p,
            Err(e) => panic!("restart_vswitchd: {e}\n{}", lab.dump()),
        };
        // When br-int has the agent's flows again (as many as before the kill).
        let mut flows_back = None;
        while restart_at.elapsed() < Duration::from_secs(10) {
            if agent_flows(&lab, node) >= flows_before {
                flows_back = Some(restart_at.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // A probe that meets a not-yet-programmed switch waits for its timeout: report when
        // the first fully successful probe started as well as when it ended.
        let mut back = None;
        let mut probe_started = Duration::ZERO;
        while restart_at.elapsed() < Duration::from_secs(10) {
            probe_started = restart_at.elapsed();
            if restored(&lab) {
                back = Some(restart_at.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        println!(
            "ovs-vswitchd of {node} killed (pid {pid}; behaviour lost while down: {lost}), \
             restarted (pid {new_pid}) {:?} after the kill; the agent's {flows_before} flows \
             back {} after the restart; behaviour restored {} after the restart",
            restart_at - killed_at,
            flows_back.map_or("NOT within 10 s".to_string(), |d| format!(
                "{} ms",
                d.as_millis()
            )),
            back.map_or("NOT within 10 s".to_string(), |d| format!(
                "{} ms (the successful probe started at {} ms)",
                d.as_millis(),
                probe_started.as_millis()
            ))
        );
        if !lost {
            failures.push(format!(
                "restart {node}: traffic still flowed with ovs-vswitchd of {node} dead"
            ));
        }
        match back {
            Some(d) if d <= Duration::from_secs(5) => {}
            other => failures.push(format!(
                "restart {node}: behaviour not restored within 5 s of restarting \
                 ovs-vswitchd (restored after {other:?})"
            )),
        }
        failures.extend(run_checks(
            &format!("after-restart-{node}"),
            all_checks(&lab),
        ));
    }

    let dump = if failures.is_empty() {
        String::new()
    } else {
        lab.dump()
    };
    drop(servers);
    lab.down();
    lab.assert_gone();
    println!("total {:?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n  {}\n{dump}",
        failures.len(),
        failures.join("\n  ")
    );
}
