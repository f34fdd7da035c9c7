//! Building a cluster's underlay, its Nodes and its Pods, as a CNI and kubelet would have left
//! them (docs/contracts.md, "How the lab leaves a Node").

use std::net::IpAddr;

use ipnet::IpNet;
use tracing::{debug, info};

use super::{NodeError, ip_in, names, ovs::Ovs, run};
use crate::{
    procs::ProcRecord,
    topology::{Cluster, Node, Pod},
};

/// The tunnel port's OpenFlow port number (as Antrea).
pub const TUNNEL_OFPORT: u32 = 1;
/// The gateway port's OpenFlow port number (as Antrea).
pub const GATEWAY_OFPORT: u32 = 2;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(ToString::to_string).collect()
}

/// Creates a network namespace with loopback up.
pub async fn create_netns(name: &str) -> Result<(), NodeError> {
    run("ip", &["netns", "add", name]).await?;
    ip_in(name, &["link", "set", "lo", "up"]).await?;
    Ok(())
}

fn addr_arg(ip: IpAddr, prefix: u8) -> String {
    format!("{ip}/{prefix}")
}

async fn add_addr(netns: &str, dev: &str, ip: IpAddr, prefix: u8) -> Result<(), NodeError> {
    let a = addr_arg(ip, prefix);
    if ip.is_ipv6() {
        // nodad: the address is usable at once, and the lab has no duplicates.
        ip_in(netns, &["-6", "addr", "add", &a, "dev", dev, "nodad"]).await?;
    } else {
        ip_in(netns, &["addr", "add", &a, "dev", dev]).await?;
    }
    Ok(())
}

/// The underlay of one cluster: namespace `<prefix>-<cluster>-underlay` with bridge `br0`.
pub async fn build_underlay(netns: &str) -> Result<(), NodeError> {
    create_netns(netns).await?;
    ip_in(netns, &["link", "add", "br0", "type", "bridge"]).await?;
    ip_in(netns, &["link", "set", "br0", "up"]).await?;
    Ok(())
}

/// One Node: OVS daemons, `br-int` with tunnel and gateway ports, `br-phy` on the underlay.
/// The namespace must exist. Returns the OVS daemons' records.
pub async fn build_node(
    cluster: &Cluster,
    node: &Node,
    netns: &str,
    underlay_netns: &str,
    ovs: &Ovs,
) -> Result<Vec<ProcRecord>, NodeError> {
    let label = format!("{}/{}", cluster.name, node.name);
    // The userspace datapath leaves the Pod veths' host ends in this namespace, so its kernel
    // sees every Pod frame too; with the default arp_ignore=0 it would answer a Pod's ARP for
    // the gateway IP with a veth's own MAC, racing antrea-gw0's answer.
    // Written through /proc (per network namespace) so procps need not be installed.
    run(
        "ip",
        &[
            "netns",
            "exec",
            netns,
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv4/conf/all/arp_ignore && \
             echo 1 > /proc/sys/net/ipv4/conf/default/arp_ignore",
        ],
    )
    .await?;
    let procs = ovs.start(&label).await?;

    // Underlay veth: eth0 in the Node, u-<node> on the cluster's bridge.
    let uveth = names::underlay_veth(&node.name);
    run(
        "ip",
        &[
            "link",
            "add",
            "name",
            "eth0",
            "netns",
            netns,
            "type",
            "veth",
            "peer",
            "name",
            &uveth,
            "netns",
            underlay_netns,
        ],
    )
    .await?;
    ip_in(
        underlay_netns,
        &["link", "set", &uveth, "master", "br0", "up"],
    )
    .await?;
    ip_in(netns, &["link", "set", "eth0", "up"]).await?;

    let gw_ips: Vec<String> = node.gateway_ips.iter().map(ToString::to_string).collect();
    let gw_ext = super::ovs::map(&[("antrea-type", "gateway".into()), ("ip", gw_ips.join(","))]);
    let tun_ext = super::ovs::map(&[("antrea-type", "tunnel".into())]);
    ovs.vsctl(&s(&[
        "--",
        "add-br",
        "br-int",
        "--",
        "set",
        "Bridge",
        "br-int",
        "datapath_type=netdev",
        "protocols=OpenFlow10,OpenFlow13,OpenFlow15",
        "--",
        "add-port",
        "br-int",
        "antrea-tun0",
        "--",
        "set",
        "Interface",
        "antrea-tun0",
        "type=geneve",
        "options:remote_ip=flow",
        "options:key=flow",
        &format!("ofport_request={TUNNEL_OFPORT}"),
        &format!("external_ids={tun_ext}"),
        "--",
        "add-port",
        "br-int",
        "antrea-gw0",
        "--",
        "set",
        "Interface",
        "antrea-gw0",
        "type=internal",
        &format!("ofport_request={GATEWAY_OFPORT}"),
        &format!("external_ids={gw_ext}"),
        "--",
        "add-br",
        "br-phy",
        "--",
        "set",
        "Bridge",
        "br-phy",
        "datapath_type=netdev",
        "--",
        "add-port",
        "br-phy",
        "eth0",
    ]))
    .await?;

    ip_in(netns, &["link", "set", "antrea-gw0", "up"]).await?;
    for (gw, cidr) in node.gateway_ips.iter().zip(&node.pod_cidrs) {
        add_addr(netns, "antrea-gw0", *gw, cidr.prefix_len()).await?;
    }
    ip_in(netns, &["link", "set", "br-phy", "up"]).await?;
    for a in &node.internal_ips {
        add_addr(netns, "br-phy", a.addr(), a.prefix_len()).await?;
    }
    // Antrea's encap-mode routes: each peer Node's Pod CIDR via that Node's gateway address,
    // on-link through antrea-gw0 (the pipeline tunnels it).
    for peer in cluster.nodes.iter().filter(|n| n.name != node.name) {
        for (cidr, gw) in peer.pod_cidrs.iter().zip(&peer.gateway_ips) {
            let fam = if cidr.addr().is_ipv6() { "-6" } else { "-4" };
            ip_in(
                netns,
                &[
                    fam,
                    "route",
                    "replace",
                    &cidr.to_string(),
                    "via",
                    &gw.to_string(),
                    "dev",
                    "antrea-gw0",
                    "onlink",
                ],
            )
            .await?;
        }
    }
    info!(node = %label, %netns, "node built");
    Ok(procs)
}

fn prefix_for(node: &Node, ip: &IpAddr) -> u8 {
    node.pod_cidrs
        .iter()
        .find(|c| c.contains(ip))
        .map_or(if ip.is_ipv4() { 32 } else { 128 }, IpNet::prefix_len)
}

/// One Pod: its namespace (which must exist), `eth0` with its IPs and a default route via the
/// gateway, the host end of the veth on br-int with the CNI's `external_ids`.
pub async fn build_pod(
    cluster: &Cluster,
    node: &Node,
    pod: &Pod,
    pod_netns: &str,
    node_netns: &str,
    ovs: &Ovs,
) -> Result<(), NodeError> {
    let host = names::pod_host_veth(&pod.namespace, &pod.name);
    run(
        "ip",
        &[
            "link", "add", "name", "eth0", "netns", pod_netns, "address", &pod.mac, "type", "veth",
            "peer", "name", &host, "netns", node_netns,
        ],
    )
    .await?;
    for ip in &pod.ips {
        add_addr(pod_netns, "eth0", *ip, prefix_for(node, ip)).await?;
    }
    ip_in(pod_netns, &["link", "set", "eth0", "up"]).await?;
    for ip in &pod.ips {
        let gw = node
            .pod_cidrs
            .iter()
            .zip(&node.gateway_ips)
            .find(|(c, _)| c.contains(ip))
            .map(|(_, g)| g.to_string());
        if let Some(gw) = gw {
            let fam = if ip.is_ipv6() { "-6" } else { "-4" };
            ip_in(pod_netns, &[fam, "route", "replace", "default", "via", &gw]).await?;
        }
    }
    // The userspace datapath does not complete checksums the kernel left to offload.
    if let Err(error) = run(
        "ip",
        &[
            "netns", "exec", pod_netns, "ethtool", "-K", "eth0", "tx", "off",
        ],
    )
    .await
    {
        debug!(%error, pod = %pod.name, "could not turn off tx offload (ethtool missing?)");
    }
    ip_in(node_netns, &["link", "set", &host, "up"]).await?;
    let ips: Vec<String> = pod.ips.iter().map(ToString::to_string).collect();
    let ext = super::ovs::map(&[
        ("k8s_pod_namespace", pod.namespace.clone()),
        ("k8s_pod_name", pod.name.clone()),
        ("ip", ips.join(",")),
        ("attached-mac", pod.mac.clone()),
        (
            "container-id",
            names::container_id(&cluster.name, &pod.namespace, &pod.name),
        ),
        ("antrea-type", "container".into()),
    ]);
    ovs.vsctl(&s(&[
        "--",
        "add-port",
        "br-int",
        &host,
        "--",
        "set",
        "Interface",
        &host,
        &format!("external_ids={ext}"),
    ]))
    .await?;
    info!(cluster = %cluster.name, pod = %format!("{}/{}", pod.namespace, pod.name), %pod_netns, "pod built");
    Ok(())
}
