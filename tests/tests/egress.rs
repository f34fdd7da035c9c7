//! Antrea Egress (issue 14) on tests/topologies/egress.yaml: two dual-stack Nodes; Pod
//! `apps/local` is SNATed on its own Node n1, `apps/remote` is sent through the tunnel to n2 and
//! SNATed there, `apps/plain` is selected by no Egress. Each trace is checked with its full
//! ordered observation list per Node (reference §3.5 "Egress" rows), IPv4 and IPv6; then real
//! pings to an address on the underlay are seen leaving each Node's underlay bridge (`br-phy`,
//! an OVS bridge whose flow counters tell the source address) with the egress IP, or with the
//! Pod's own IP for the unselected Pod. Nothing leaves the lab's namespaces: the "external"
//! address is a static neighbour on the sealed underlay.
//!
//! Needs root, Open vSwitch and `cargo build --workspace --bins`; fails loudly, never skips.

mod common;

use std::time::Duration;

use common::trace::{
    Api, NodeWant, check_results, output, output_tunnel, pod_ip, received, receiver,
    require_binaries, results_json, runtime, sender, spec, spoofguard, to_ip, to_pod,
    up_with_config,
};
use common::{Lab, require_lab_prerequisites, text, topology};
use serde_json::{Value, json};
use traceflow_proto::v1 as pb;

const N2: &str = "192.168.77.3";

/// The "external" destination of each family: on the underlay segment, owned by no Node.
fn external(ipv6: bool) -> &'static str {
    if ipv6 { "fd77::200" } else { "192.168.77.200" }
}

fn egress_ip(remote: bool, ipv6: bool) -> &'static str {
    match (remote, ipv6) {
        (false, false) => "192.168.77.100",
        (false, true) => "fd77::100",
        (true, false) => "192.168.77.101",
        (true, true) => "fd77::101",
    }
}

fn egress_name(remote: bool, ipv6: bool) -> String {
    format!(
        "eg-{}{}",
        if remote { "remote" } else { "local" },
        if ipv6 { "6" } else { "" }
    )
}

/// `Egress <action>` with the source Node's fields (egress, egressIP, egressNode).
fn egress_obs(action: &str, remote: bool, ipv6: bool) -> Value {
    json!({"component": "Egress", "action": action,
           "egress": egress_name(remote, ipv6), "egressIP": egress_ip(remote, ipv6),
           "egressNode": if remote { "n2" } else { "n1" }})
}

/// `br-int.mgmt` / `br-phy.mgmt` of a Node.
fn mgmt(lab: &Lab, node: &str, bridge: &str) -> String {
    format!(
        "unix:{}",
        lab.dir
            .join(format!("clusters/c1/nodes/{node}/ovs/{bridge}.mgmt"))
            .display()
    )
}

fn ofctl(lab: &Lab, node: &str, args: &[&str]) -> Result<String, String> {
    let out = lab.exec(
        &format!("c1/{node}"),
        &[&["ovs-ofctl", "-O", "OpenFlow15"], args].concat(),
    );
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("ovs-ofctl {args:?} on {node}: {}", text(&out)))
    }
}

/// Waits until both Nodes' pipelines carry the Egress flows (the desired state reached them).
fn wait_egress_flows(lab: &Lab) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut ready = true;
        for (node, want) in [
            ("n1", "nat(src=192.168.77.100"),
            ("n2", "nat(src=192.168.77.101"),
        ] {
            let flows = ofctl(lab, node, &["dump-flows", &mgmt(lab, node, "br-int")])?;
            ready &= flows.contains(want) && flows.contains("pkt_mark");
        }
        if ready {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err("the Egress flows did not reach both Nodes within 30s".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

async fn traces(api: &mut Api, failures: &mut Vec<String>) -> Result<(), String> {
    let pods = api.wait_pods("c1", 3).await?;
    for ipv6 in [false, true] {
        let v = if ipv6 { "IPv6" } else { "IPv4" };
        let ext = external(ipv6);
        let local = pod_ip(&pods, "apps/local", ipv6)?;
        let remote = pod_ip(&pods, "apps/remote", ipv6)?;
        let plain = pod_ip(&pods, "apps/plain", ipv6)?;
        let cases: Vec<(String, &str, pb::Destination, Vec<NodeWant>)> = vec![
            (
                format!("{v} local egress Node: apps/local -> {ext}"),
                "apps/local",
                to_ip(ext),
                vec![sender(
                    "n1",
                    vec![
                        spoofguard(&local),
                        egress_obs("MarkedForSNAT", false, ipv6),
                        output("ForwardedOutOfNetwork"),
                    ],
                )],
            ),
            (
                format!("{v} remote egress Node: apps/remote -> {ext}"),
                "apps/remote",
                to_ip(ext),
                vec![
                    sender(
                        "n1",
                        vec![
                            spoofguard(&remote),
                            egress_obs("ForwardedToEgressNode", true, ipv6),
                            output_tunnel(N2),
                        ],
                    ),
                    receiver(
                        "n2",
                        vec![
                            received(),
                            json!({"component": "Egress", "action": "MarkedForSNAT",
                                   "egressIP": egress_ip(true, ipv6)}),
                            output("ForwardedOutOfNetwork"),
                        ],
                    ),
                ],
            ),
            (
                format!("{v} no Egress: apps/plain -> {ext}"),
                "apps/plain",
                to_ip(ext),
                vec![sender(
                    "n1",
                    vec![spoofguard(&plain), output("ForwardedOutOfNetwork")],
                )],
            ),
            (
                format!("{v} inside the cluster: apps/remote -> Pod apps/plain is not SNATed"),
                "apps/remote",
                to_pod("apps/plain"),
                vec![sender("n1", vec![spoofguard(&remote), output("Delivered")])],
            ),
        ];
        for (what, src, dst, want) in cases {
            let mut s = spec(src, dst, None);
            let packet = s.packet.get_or_insert_default();
            if ipv6 {
                packet.ipv6_header = Some(Default::default());
            }
            let t = api.run("c1", s).await?;
            let checked = if common::trace::phase(&t) == "Succeeded" {
                check_results(&results_json(&t), &want)
            } else {
                Err(format!(
                    "phase {}: {:#}",
                    common::trace::phase(&t),
                    common::trace::to_json(&t)
                ))
            };
            if let Err(e) = checked {
                failures.push(format!("{what}: {e}"));
            }
        }
    }
    Ok(())
}

/// Real pings from the three Pods to the external IPv4 address: the counters of flows on each
/// Node's `br-phy` (matching what enters from the Node's own stack, `LOCAL`, since the underlay
/// bridge floods frames for the unanswered address to every Node) show which source address
/// left which Node.
fn real_traffic(
    lab: &Lab,
    local: &str,
    plain: &str,
    failures: &mut Vec<String>,
) -> Result<(), String> {
    let ext = external(false);
    for node in ["n1", "n2"] {
        // A Node forwards what leaves antrea-gw0 (as a real Node does); the external address
        // answers nothing, so it gets a static neighbour entry on the underlay bridge.
        let setup = format!(
            "echo 1 > /proc/sys/net/ipv4/ip_forward && \
             for i in all default antrea-gw0 br-phy; do echo 0 > /proc/sys/net/ipv4/conf/$i/rp_filter; done && \
             ip neigh replace {ext} lladdr 02:00:00:77:00:c8 dev br-phy nud permanent"
        );
        let out = lab.exec(&format!("c1/{node}"), &["sh", "-c", &setup]);
        if !out.status.success() {
            return Err(format!("setting up {node} for forwarding: {}", text(&out)));
        }
    }
    let sources = [
        ("n1", egress_ip(false, false), "apps/local SNATed on n1"),
        ("n2", egress_ip(true, false), "apps/remote SNATed on n2"),
        ("n1", plain, "apps/plain leaves unmarked"),
        ("n1", local, "apps/local's own address never leaves"),
    ];
    for (i, (node, src, _)) in sources.iter().enumerate() {
        let f = format!(
            "cookie=0x{:x},priority=100,in_port=LOCAL,ip,nw_src={src},nw_dst={ext},actions=NORMAL",
            0xe9_0000 + i
        );
        ofctl(lab, node, &["add-flow", &mgmt(lab, node, "br-phy"), &f])?;
    }
    for pod in ["apps/local", "apps/remote", "apps/plain"] {
        // No answer comes back: ping's exit status says nothing here.
        let _ = lab.exec(
            &format!("c1/{pod}"),
            &["ping", "-c", "2", "-i", "0.2", "-W", "1", ext],
        );
    }
    for (i, (node, src, what)) in sources.iter().enumerate() {
        let dump = ofctl(
            lab,
            node,
            &[
                "dump-flows",
                &mgmt(lab, node, "br-phy"),
                &format!("cookie=0x{:x}/-1", 0xe9_0000 + i),
            ],
        )?;
        let packets: u64 = dump
            .split("n_packets=")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("no counter for {src} on {node}: {dump}"))?;
        let want_some = i < 3;
        if want_some != (packets > 0) {
            failures.push(format!(
                "real traffic, {what}: {packets} packets from {src} left {node}'s underlay, want {}",
                if want_some { "some" } else { "none" }
            ));
        }
    }
    Ok(())
}

#[test]
fn egress_traces_and_real_snat() {
    require_lab_prerequisites();
    require_binaries();
    let mut lab = Lab::new("eg");
    let cfg = up_with_config(&mut lab, &topology("egress.yaml"));
    let rt = runtime();
    let result: Result<Vec<String>, String> = rt.block_on(async {
        let mut api = Api::connect(&cfg).await?;
        wait_egress_flows(&lab)?;
        let mut failures = Vec::new();
        traces(&mut api, &mut failures).await?;
        let pods = api.wait_pods("c1", 3).await?;
        let local = pod_ip(&pods, "apps/local", false)?;
        let plain = pod_ip(&pods, "apps/plain", false)?;
        real_traffic(&lab, &local, &plain, &mut failures)?;
        Ok(failures)
    });
    drop(rt);
    lab.report(result);
    let down = lab.down();
    assert!(down.contains("is down"), "{down}");
}
