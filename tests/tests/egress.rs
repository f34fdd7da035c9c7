//! Antrea Egress (issue 14) on tests/topologies/egress.yaml: two dual-stack Nodes; Pod
//! `apps/local` is SNATed on its own Node n1, `apps/remote` is sent through the tunnel to n2 and
//! SNATed there, `apps/plain` is selected by no Egress. Each trace is checked with its full
//! ordered observation list per Node (reference §3.5 "Egress" rows), IPv4 and IPv6; then real
//! pings, IPv4 and IPv6, to an external host on the underlay are seen leaving each Node's
//! underlay bridge (`br-phy`, an OVS bridge whose flow counters tell the source address) with
//! the egress IP, or with the Pod's own IP for the unselected Pod, and the selected Pods get
//! their replies: un-SNAT on the egress Node, back through the tunnel when that is the other
//! Node. Nothing leaves the lab's namespaces: the external host is the sealed underlay's own
//! namespace, holding the external addresses.
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

/// Sets up the Nodes' stacks and the external host for real traffic. What Antrea's agent and
/// the Node's OS do on a real egress Node, the test does here: forwarding on, and each egress IP
/// answered for on the underlay (proxy ARP / NDP on `br-phy`) and routed to `antrea-gw0`, so
/// the replies to SNATed traffic enter br-int to be un-SNATed. The external host is the
/// underlay namespace itself, holding the external addresses on its bridge.
fn prepare_real_traffic(lab: &Lab) -> Result<(), String> {
    for (node, remote) in [("n1", false), ("n2", true)] {
        let (v4, v6) = (egress_ip(remote, false), egress_ip(remote, true));
        let setup = format!(
            "set -e; gw=$(cat /sys/class/net/antrea-gw0/address); \
             echo 1 > /proc/sys/net/ipv4/ip_forward; \
             echo 1 > /proc/sys/net/ipv6/conf/all/forwarding; \
             for i in all default antrea-gw0 br-phy; do echo 0 > /proc/sys/net/ipv4/conf/$i/rp_filter; done; \
             echo 1 > /proc/sys/net/ipv6/conf/all/proxy_ndp; echo 1 > /proc/sys/net/ipv6/conf/br-phy/proxy_ndp; \
             ip route replace {v4}/32 dev antrea-gw0; \
             ip neigh replace {v4} lladdr $gw dev antrea-gw0 nud permanent; \
             ip neigh replace proxy {v4} dev br-phy; \
             ip -6 route replace {v6}/128 dev antrea-gw0; \
             ip -6 neigh replace {v6} lladdr $gw dev antrea-gw0 nud permanent; \
             ip -6 neigh replace proxy {v6} dev br-phy"
        );
        let out = lab.exec(&format!("c1/{node}"), &["sh", "-c", &setup]);
        if !out.status.success() {
            return Err(format!("setting up {node} for forwarding: {}", text(&out)));
        }
    }
    let underlay = format!("{}-c1-underlay", lab.prefix);
    let host = format!(
        "set -e; ip addr replace {}/24 dev br0; ip -6 addr replace {}/64 dev br0 nodad",
        external(false),
        external(true)
    );
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &underlay, "sh", "-c", &host])
        .output()
        .map_err(|e| format!("ip netns exec {underlay}: {e}"))?;
    if !out.status.success() {
        return Err(format!("setting up the external host: {}", text(&out)));
    }
    Ok(())
}

/// Real pings from the three Pods to the external host, IPv4 and IPv6: the counters of flows
/// on each Node's `br-phy` (matching what enters from the Node's own stack, `LOCAL`) show
/// which source address left which Node; the selected Pods' pings get their replies back
/// (un-SNAT on the egress Node, through the tunnel when that is the other Node).
fn real_traffic(
    lab: &Lab,
    local: [&str; 2],
    plain: [&str; 2],
    failures: &mut Vec<String>,
) -> Result<(), String> {
    prepare_real_traffic(lab)?;
    let mut sources = Vec::new();
    for (f, ipv6) in [(0usize, false), (1, true)] {
        let v = if ipv6 { "IPv6" } else { "IPv4" };
        sources.extend([
            (
                "n1",
                ipv6,
                egress_ip(false, ipv6).to_string(),
                format!("{v} apps/local SNATed on n1"),
                true,
            ),
            (
                "n2",
                ipv6,
                egress_ip(true, ipv6).to_string(),
                format!("{v} apps/remote SNATed on n2"),
                true,
            ),
            (
                "n1",
                ipv6,
                plain[f].to_string(),
                format!("{v} apps/plain leaves unmarked"),
                true,
            ),
            (
                "n1",
                ipv6,
                local[f].to_string(),
                format!("{v} apps/local's own address never leaves"),
                false,
            ),
        ]);
    }
    for (i, (node, ipv6, src, _, _)) in sources.iter().enumerate() {
        let m = if *ipv6 {
            format!("ipv6,ipv6_src={src},ipv6_dst={}", external(true))
        } else {
            format!("ip,nw_src={src},nw_dst={}", external(false))
        };
        let f = format!(
            "cookie=0x{:x},priority=100,in_port=LOCAL,{m},actions=NORMAL",
            0xe9_0000 + i
        );
        ofctl(lab, node, &["add-flow", &mgmt(lab, node, "br-phy"), &f])?;
    }
    for ipv6 in [false, true] {
        let v = if ipv6 { "IPv6" } else { "IPv4" };
        for (pod, answered) in [
            ("apps/local", true),
            ("apps/remote", true),
            ("apps/plain", false),
        ] {
            let out = lab.exec(
                &format!("c1/{pod}"),
                &["ping", "-c", "2", "-i", "0.2", "-W", "2", external(ipv6)],
            );
            // apps/plain leaves with its Pod address, which the external host cannot route
            // back: its exit status says nothing.
            if answered && !out.status.success() {
                failures.push(format!(
                    "real traffic, {v} {pod} -> {}: no replies came back through the egress Node: {}",
                    external(ipv6),
                    text(&out)
                ));
            }
        }
    }
    for (i, (node, _, src, what, want_some)) in sources.iter().enumerate() {
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
        if *want_some != (packets > 0) {
            failures.push(format!(
                "real traffic, {what}: {packets} packets from {src} left {node}'s underlay, want {}",
                if *want_some { "some" } else { "none" }
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
        let local = [
            pod_ip(&pods, "apps/local", false)?,
            pod_ip(&pods, "apps/local", true)?,
        ];
        let plain = [
            pod_ip(&pods, "apps/plain", false)?,
            pod_ip(&pods, "apps/plain", true)?,
        ];
        real_traffic(
            &lab,
            [&local[0], &local[1]],
            [&plain[0], &plain[1]],
            &mut failures,
        )?;
        Ok(failures)
    });
    drop(rt);
    lab.report(result);
    let down = lab.down();
    assert!(down.contains("is down"), "{down}");
}
