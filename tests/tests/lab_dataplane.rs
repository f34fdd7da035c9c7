//! The lab's data plane with real OVS, without the control plane: Nodes and Pods as network
//! namespaces, br-int as the agent expects it, traffic between Pods, a sealed lab, and a `down`
//! that leaves nothing. Needs root and Open vSwitch; fails (never skips) without them.

mod common;

use std::process::Command;

use common::{Lab, require_lab_prerequisites, stdout, text, topology};

fn vsctl(rundir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("ovs-vsctl")
        .arg(format!("--db=unix:{}", rundir.join("db.sock").display()))
        .args(args)
        .output();
    match out {
        Ok(o) if o.status.success() => stdout(&o).trim().to_string(),
        Ok(o) => panic!("ovs-vsctl {args:?}: {}", text(&o)),
        Err(e) => panic!("ovs-vsctl {args:?}: {e}"),
    }
}

#[test]
fn one_node_pods_talk_through_br_int_and_down_leaves_nothing() {
    require_lab_prerequisites();
    let mut lab = Lab::new("dp");
    let out = lab.up(&topology("one-node.yaml"), &["--no-control-plane"]);
    assert!(
        out.lines().last().is_some_and(|l| l.starts_with('#')),
        "{out}"
    );

    let names = lab.netns();
    for suffix in [
        "c1-underlay",
        "c1-n1",
        "c1-default-p0",
        "c1-default-p1",
        "c1-default-p2",
    ] {
        let want = format!("{}-{suffix}", lab.prefix);
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }

    // br-int as docs/contracts.md promises the agent.
    let rundir = lab.dir.join("clusters/c1/nodes/n1/ovs");
    assert!(
        rundir.join("br-int.mgmt").exists(),
        "no br-int.mgmt in {}",
        rundir.display()
    );
    assert_eq!(
        vsctl(&rundir, &["get", "Bridge", "br-int", "datapath_type"]),
        "netdev"
    );
    assert_eq!(
        vsctl(&rundir, &["get", "Interface", "antrea-tun0", "type"]),
        "geneve"
    );
    assert_eq!(
        vsctl(
            &rundir,
            &["get", "Interface", "antrea-tun0", "options:remote_ip"]
        ),
        "flow"
    );
    assert_eq!(
        vsctl(
            &rundir,
            &["get", "Interface", "antrea-gw0", "external_ids:antrea-type"]
        ),
        "gateway"
    );
    assert_eq!(
        vsctl(
            &rundir,
            &["get", "Interface", "antrea-gw0", "external_ids:ip"]
        ),
        "\"10.10.0.1\""
    );
    let ports = vsctl(
        &rundir,
        &[
            "--columns=name,external_ids",
            "--format=json",
            "list",
            "Interface",
        ],
    );
    let ports: serde_json::Value = match serde_json::from_str(&ports) {
        Ok(v) => v,
        Err(e) => panic!("ovs-vsctl json: {e}: {ports}"),
    };
    let text_ports = ports.to_string();
    for want in [
        r#"["k8s_pod_name","p0"]"#,
        r#"["k8s_pod_namespace","default"]"#,
        r#"["ip","10.10.0.2"]"#,
        r#"["antrea-type","container"]"#,
        "attached-mac",
        "container-id",
    ] {
        assert!(text_ports.contains(want), "{want} not in {text_ports}");
    }

    // Pod to Pod and Pod to gateway through br-int (OVS's default NORMAL flow here).
    let ping = lab.exec(
        "c1/default/p0",
        &["ping", "-c", "1", "-W", "3", "10.10.0.3"],
    );
    assert!(
        ping.status.success(),
        "p0 -> p1: {}\n{}",
        text(&ping),
        lab.dump()
    );
    let ping = lab.exec(
        "c1/default/p2",
        &["ping", "-c", "1", "-W", "3", "10.10.0.1"],
    );
    assert!(ping.status.success(), "p2 -> gateway: {}", text(&ping));
    // TCP too (checksums survive the userspace datapath).
    let server = Command::new(env!("CARGO_BIN_EXE_traceflow-lab"))
        .arg("--dir")
        .arg(&lab.dir)
        .args(["exec", "c1/default/p1", "--", "nc", "-l", "-w", "5", "8080"])
        .stdout(std::process::Stdio::piped())
        .spawn();
    let Ok(server) = server else {
        panic!("cannot start nc in p1")
    };
    let mut connected = false;
    for _ in 0..20 {
        let c = lab.exec(
            "c1/default/p0",
            &["sh", "-c", "echo hello-lab | nc -N -w 2 10.10.0.3 8080"],
        );
        if c.status.success() {
            connected = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let got = server.wait_with_output();
    assert!(connected, "p0 could not connect to p1:8080");
    let got = got.map(|o| stdout(&o)).unwrap_or_default();
    assert!(got.contains("hello-lab"), "p1 received {got:?}");
    let addr = lab.exec("c1/default/p1", &["ip", "-o", "addr", "show", "eth0"]);
    assert!(stdout(&addr).contains("10.10.0.3/24"), "{}", text(&addr));

    // Sealed: the Node has no route off the lab's ranges (checked without sending anything).
    let route = lab.exec("c1/n1", &["ip", "route", "get", "192.0.2.10"]);
    assert!(
        !route.status.success(),
        "Node can route out: {}",
        text(&route)
    );

    let status = lab.run(&["status"]);
    let st = stdout(&status);
    assert!(
        st.contains("ovs-vswitchd/c1/n1") && st.contains("alive"),
        "{st}"
    );
    assert!(st.contains("pod default/p0  10.10.0.2"), "{st}");
    let json = lab.run(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap_or_default();
    assert_eq!(
        v.pointer("/processes/1/alive"),
        Some(&serde_json::json!(true)),
        "{v}"
    );
    assert_eq!(
        v.pointer("/netns/0/present"),
        Some(&serde_json::json!(true)),
        "{v}"
    );
    assert_eq!(
        v.pointer("/topology/clusters/0/pods/0/ips/0"),
        Some(&serde_json::json!("10.10.0.2")),
        "{v}"
    );

    let down = lab.down();
    assert!(down.contains("is down"), "{down}");
    lab.assert_gone();
    // Idempotent.
    let again = lab.down();
    assert!(again.contains("no lab"), "{again}");
}

#[test]
fn two_dual_stack_clusters_underlay_and_geneve_between_nodes() {
    require_lab_prerequisites();
    let mut lab = Lab::new("dp2");
    lab.up(&topology("two-clusters.yaml"), &["--no-control-plane"]);
    // 2 underlays + 4 Nodes + 9 Pod namespaces (the hostNetwork Pod has none).
    assert_eq!(lab.netns().len(), 15, "{:?}", lab.netns());

    // Underlay: e1 reaches e2 through br-phy (the segment the Geneve tunnel rides on).
    let ping = lab.exec("east/e1", &["ping", "-c", "1", "-W", "3", "192.168.77.3"]);
    assert!(
        ping.status.success(),
        "e1 -> e2 underlay: {}\n{}",
        text(&ping),
        lab.dump()
    );
    let ping6 = lab.exec(
        "west/w2",
        &["ping", "-6", "-c", "1", "-W", "3", "fd77:0:1::2"],
    );
    assert!(
        ping6.status.success(),
        "w2 -> w1 underlay v6: {}",
        text(&ping6)
    );
    // Clusters are separate segments.
    let cross = lab.exec("east/e1", &["ping", "-c", "1", "-W", "1", "192.168.78.2"]);
    assert!(!cross.status.success(), "east reached west's underlay");

    // Dual-stack Pod addresses and gateway routes.
    let addr = lab.exec("east/web/api-0", &["ip", "-o", "addr", "show", "eth0"]);
    let a = stdout(&addr);
    assert!(
        a.contains("10.10.1.3/24") && a.contains("fd00:10:1::3/64"),
        "{a}"
    );
    let ping6 = lab.exec(
        "east/web/api-0",
        &["ping", "-6", "-c", "1", "-W", "3", "fd00:10:1::1"],
    );
    assert!(
        ping6.status.success(),
        "api-0 -> gateway v6: {}",
        text(&ping6)
    );
    let routes = lab.exec("east/e1", &["ip", "route", "show", "10.10.2.0/24"]);
    assert!(
        stdout(&routes).contains("via 10.10.2.1 dev antrea-gw0"),
        "peer route: {}",
        text(&routes)
    );

    geneve_between_nodes(&lab);

    lab.down();
    lab.assert_gone();
}

fn ofctl(rundir: &std::path::Path, args: &[&str]) {
    let mgmt = format!("unix:{}", rundir.join("br-int.mgmt").display());
    let out = Command::new("ovs-ofctl")
        .args(["-O", "OpenFlow15"])
        .args(args.iter().map(|a| a.replace("MGMT", &mgmt)))
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("ovs-ofctl {args:?}: {}", text(&o)),
        Err(e) => panic!("ovs-ofctl {args:?}: {e}"),
    }
}

/// What the agent will do across Nodes, by hand: route the other Node's Pod CIDR into
/// antrea-tun0 with `tun_dst` set, deliver tunnelled packets to the Pod's port. A ping from
/// east/default/client (e1) to east/web/api-1 (e2) proves the underlay carries Geneve between
/// two userspace datapaths.
fn geneve_between_nodes(lab: &Lab) {
    let e1 = lab.dir.join("clusters/east/nodes/e1/ovs");
    let e2 = lab.dir.join("clusters/east/nodes/e2/ovs");
    let client_port = traceflow_lab::node::names::pod_host_veth("default", "client");
    let api1_port = traceflow_lab::node::names::pod_host_veth("web", "api-1");
    let client_ofport = vsctl(&e1, &["get", "Interface", &client_port, "ofport"]);
    let api1_ofport = vsctl(&e2, &["get", "Interface", &api1_port, "ofport"]);
    let mac = |ns: &str| {
        let o = lab.exec(ns, &["cat", "/sys/class/net/eth0/address"]);
        stdout(&o).trim().to_string()
    };
    let client_mac = mac("east/default/client");
    let api1_mac = mac("east/web/api-1");
    ofctl(
        &e1,
        &[
            "add-flow",
            "MGMT",
            "priority=100,ip,nw_dst=10.10.2.0/24,actions=set_field:192.168.77.3->tun_dst,output:antrea-tun0",
        ],
    );
    ofctl(
        &e1,
        &[
            "add-flow",
            "MGMT",
            &format!(
                "priority=100,in_port=antrea-tun0,ip,nw_dst=10.10.1.2,actions=set_field:{client_mac}->eth_dst,output:{client_ofport}"
            ),
        ],
    );
    ofctl(
        &e2,
        &[
            "add-flow",
            "MGMT",
            "priority=100,ip,nw_dst=10.10.1.0/24,actions=set_field:192.168.77.2->tun_dst,output:antrea-tun0",
        ],
    );
    ofctl(
        &e2,
        &[
            "add-flow",
            "MGMT",
            &format!(
                "priority=100,in_port=antrea-tun0,ip,nw_dst=10.10.2.2,actions=set_field:{api1_mac}->eth_dst,output:{api1_ofport}"
            ),
        ],
    );
    // The first packets may go to resolving the tunnel endpoint's MAC on br-phy.
    let ping = lab.exec(
        "east/default/client",
        &["ping", "-c", "3", "-i", "0.3", "-W", "2", "10.10.2.2"],
    );
    let out = stdout(&ping);
    assert!(
        out.contains("bytes from 10.10.2.2"),
        "client (e1) -> api-1 (e2) over Geneve: {}\n{}",
        text(&ping),
        lab.dump()
    );
}

#[test]
fn up_refuses_a_second_lab_in_the_same_directory_and_down_cleans_a_partial_one() {
    require_lab_prerequisites();
    let mut lab = Lab::new("dp3");
    lab.up(&topology("one-node.yaml"), &["--no-control-plane"]);
    let again = lab.run(&[
        "up",
        &topology("one-node.yaml").display().to_string(),
        "--prefix",
        &lab.prefix,
        "--no-control-plane",
    ]);
    assert!(!again.status.success());
    assert!(text(&again).contains("already"), "{}", text(&again));
    lab.down();
    lab.assert_gone();

    // A lab whose state file was lost: processes are found by the lab directory on their
    // command lines, namespaces by the prefix named explicitly.
    let mut lab = Lab::new("dp5");
    lab.up(&topology("one-node.yaml"), &["--no-control-plane"]);
    if let Err(e) = std::fs::remove_file(lab.dir.join("state.json")) {
        panic!("remove state.json: {e}");
    }
    let prefix = lab.prefix.clone();
    let out = lab.run(&["down", "--orphans-with-prefix", &prefix]);
    assert!(out.status.success(), "{}", text(&out));
    lab.down_done = true;
    lab.assert_gone();

    // A control-plane `up` whose binaries are missing fails before touching anything.
    let mut lab = Lab::new("dp4");
    let out = Command::new(env!("CARGO_BIN_EXE_traceflow-lab"))
        .args([
            "up",
            &topology("one-node.yaml").display().to_string(),
            "--prefix",
            &lab.prefix,
        ])
        .arg("--dir")
        .arg(&lab.dir)
        .env("TRACEFLOW_BIN_DIR", "/nonexistent-bin-dir")
        .output();
    let Ok(out) = out else {
        panic!("cannot run traceflow-lab")
    };
    assert!(!out.status.success());
    assert!(
        text(&out).contains("not found in /nonexistent-bin-dir"),
        "{}",
        text(&out)
    );
    lab.down();
    lab.assert_gone();
}
