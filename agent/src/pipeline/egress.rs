//! Antrea Egress: SNAT of selected Pods' traffic leaving the cluster (reference §3.4 step 6,
//! §3.5 "Egress", §4 table EgressMark).
//!
//! ```text
//!  source Node  (Pod → gateway MAC, destination outside the cluster, source selected)
//!    EgressMark  egress Node == this Node → pkt_mark = the Egress's mark
//!                egress Node elsewhere   → MACs gw → aa:bb:cc:dd:ee:ff, tun_dst = egress Node,
//!                                          reg0 RemoteSNATRegMark (+ RewriteMAC) → tunnel
//!  egress Node  (from the tunnel, source selected by an Egress it hosts)
//!    EgressMark  dl_dst = gateway MAC, pkt_mark = the Egress's mark → gateway
//!  both         Output: to the gateway with a mark, first pass → ct(commit, SNAT zone,
//!               nat(src=egress IP), table=Output); the recirculated packet leaves through
//!               the gateway with the egress IP as source
//!
//!  the way back (egress Node; the Node's stack routes the egress IP to antrea-gw0)
//!    ConntrackZone  from the gateway to the egress IP, untracked → RewriteMAC,
//!                   ct(SNAT zone, nat, table=ConntrackZone): un-SNAT, destination = the Pod;
//!                   then the Pod zone (+est+rpl) as any packet
//!    L3Forwarding   a local Pod: its usual routed-packet flow; a Pod of another Node:
//!                   MACs gw → aa:bb:cc:dd:ee:ff, tun_dst = that Node → tunnel, where the
//!                   source Node's Pod zone knows the connection
//! ```
//!
//! Destinations inside the cluster (any Node's Pod CIDR or underlay address) are never
//! marked: they are skipped at a higher priority, as Antrea's EgressMark does. Trace-class
//! packets reach the controller before the SNAT flow (its priority is below the trace flows),
//! so an observation never shows the translated source as a load-balancer translation.

use std::net::IpAddr;

use crate::desired::DesiredState;
use crate::ovs::openflow::oxm::{CLASS_NXM1, ct_state, nxm};
use crate::ovs::openflow::{Action, FlowMod, Instruction, Match, Nat, Oxm};
use crate::ports::NodePorts;

use super::flows::{CT_ZONE, CT_ZONE_V6, prio};
use super::services::{SNAT_CT_ZONE, SNAT_CT_ZONE_V6};
use super::tables::Table;
use super::{COOKIE, GLOBAL_VIRTUAL_MAC, regs, with_host, with_net};

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;

/// Priority of the "destination inside the cluster: no SNAT" flows (above the marking flows).
const SKIP: u16 = prio::NORMAL + 10;
/// Priority of the un-SNAT flow in ConntrackZone: above the Pod zone's flow.
const UN_SNAT: u16 = prio::NORMAL + 10;
/// Priority of the SNAT flow in Output: above plain output, below the trace-class flows.
const SNAT: u16 = prio::HAIRPIN;

fn flow(t: Table, priority: u16, m: Match, ins: Vec<Instruction>) -> FlowMod {
    FlowMod::add(t.id(), priority, COOKIE, m, ins)
}

/// The `pkt_mark` match / write of an Egress mark.
pub fn pkt_mark(mark: u8) -> Oxm {
    Oxm::exact(CLASS_NXM1, nxm::PKT_MARK, &u32::from(mark).to_be_bytes())
}

fn tun_dst(ip: IpAddr) -> Oxm {
    match ip {
        IpAddr::V4(v4) => Oxm::exact(CLASS_NXM1, nxm::TUN_IPV4_DST, &v4.octets()),
        IpAddr::V6(v6) => Oxm::exact(CLASS_NXM1, nxm::TUN_IPV6_DST, &v6.octets()),
    }
}

/// Every Egress flow of this Node (module doc). Empty without a gateway or without Egresses.
pub fn egress_flows(ports: &NodePorts, desired: &DesiredState) -> Vec<FlowMod> {
    let mut f = Vec::new();
    let Some(gw) = &ports.gateway else {
        return f;
    };
    if desired.egresses.is_empty() {
        return f;
    }
    let this = desired.node.as_ref().map(|n| n.name.as_str()).unwrap_or("");
    let from = |source: u32| Match::new().with(Oxm::reg_masked(0, source, regs::PKT_SOURCE_MASK));
    let next = || vec![Instruction::GotoTable(Table::L3DecTTL.id())];
    let em = Table::EgressMark;

    // Inside the cluster: every Node's Pod CIDRs and underlay addresses.
    let mut inside: Vec<ipnet::IpNet> = Vec::new();
    for n in desired.node.iter().chain(desired.peers.values()) {
        inside.extend(n.pod_cidrs.iter().copied());
        inside.extend(n.tunnel_ips.iter().map(|ip| ipnet::IpNet::from(*ip)));
    }
    for net in &inside {
        f.push(flow(
            em,
            SKIP,
            with_net(from(regs::FROM_POD), net, false),
            next(),
        ));
    }

    let local = |ip: &IpAddr| ports.pod_by_ip(*ip).is_some();
    for e in desired.egresses.values() {
        let here = e.egress_node == this;
        let remote_tunnel = if here {
            None
        } else {
            match desired
                .peers
                .get(&e.egress_node)
                .and_then(|p| p.tunnel_ip())
            {
                Some(ip) => Some(ip),
                // The egress Node is unknown: nothing to send it to (Antrea drops nothing
                // either; the traffic leaves unmarked).
                None => continue,
            }
        };
        for ip in e
            .pod_ips
            .iter()
            .filter(|ip| ip.is_ipv4() == e.egress_ip.is_ipv4())
        {
            if local(ip) {
                let m = with_host(from(regs::FROM_POD), *ip, true).with(Oxm::eth_dst(gw.mac.0));
                let actions = match remote_tunnel {
                    None => vec![Action::SetField(pkt_mark(e.mark))],
                    Some(t) => vec![
                        Action::SetField(Oxm::eth_src(gw.mac.0)),
                        Action::SetField(Oxm::eth_dst(GLOBAL_VIRTUAL_MAC)),
                        Action::SetField(tun_dst(t)),
                        Action::set_reg(
                            0,
                            regs::REMOTE_SNAT_MARK | regs::REWRITE_MAC_MARK,
                            regs::REMOTE_SNAT_MARK | regs::REWRITE_MAC_MARK,
                        ),
                    ],
                };
                f.push(flow(
                    em,
                    prio::NORMAL,
                    m,
                    [vec![Instruction::ApplyActions(actions)], next()].concat(),
                ));
            } else if here {
                // Sent here by the source Node: leave through the gateway, marked.
                f.push(flow(
                    em,
                    prio::NORMAL,
                    with_host(from(regs::FROM_TUNNEL), *ip, true),
                    [
                        vec![Instruction::ApplyActions(vec![
                            Action::SetField(Oxm::eth_src(gw.mac.0)),
                            Action::SetField(Oxm::eth_dst(gw.mac.0)),
                            Action::SetField(pkt_mark(e.mark)),
                        ])],
                        next(),
                    ]
                    .concat(),
                ));
            }
        }
        if here {
            let (et, zone, snat_zone) = if e.egress_ip.is_ipv4() {
                (ETH_IPV4, CT_ZONE, SNAT_CT_ZONE)
            } else {
                (ETH_IPV6, CT_ZONE_V6, SNAT_CT_ZONE_V6)
            };
            f.extend(return_flows(e, gw.mac.0, snat_zone, desired, &local));
            // First pass only (still in the Pod zone): the recirculated packet is in the SNAT
            // zone and falls to the plain output flow.
            f.push(flow(
                Table::Output,
                SNAT,
                Match::new()
                    .with(Oxm::reg_masked(
                        0,
                        regs::OUTPUT_TO_OFPORT_MARK,
                        regs::OUTPUT_MODE_MASK,
                    ))
                    .with(Oxm::reg(regs::TARGET_OFPORT_REG, gw.ofport))
                    .with(Oxm::eth_type(et))
                    .with(pkt_mark(e.mark))
                    .with(Oxm::exact(CLASS_NXM1, nxm::CT_ZONE, &zone.to_be_bytes())),
                vec![Instruction::ApplyActions(vec![Action::Ct {
                    commit: true,
                    zone: snat_zone,
                    table: Some(Table::Output.id()),
                    nat: Some(Nat::Src {
                        addr: e.egress_ip,
                        port: None,
                    }),
                    exec: Vec::new(),
                }])],
            ));
        }
    }
    f
}

/// The way back of Egress `e` hosted here (module doc): un-SNAT replies to its egress IP that
/// the Node's stack hands to the gateway, and route those of other Nodes' Pods to them.
fn return_flows(
    e: &crate::desired::model::Egress,
    gw_mac: [u8; 6],
    snat_zone: u16,
    desired: &DesiredState,
    local: &dyn Fn(&IpAddr) -> bool,
) -> Vec<FlowMod> {
    let from_gateway = || {
        Match::new().with(Oxm::reg_masked(
            0,
            regs::FROM_GATEWAY,
            regs::PKT_SOURCE_MASK,
        ))
    };
    let untracked = Oxm::ct_state(0, ct_state::TRK);
    // Untracked only: a reply conntrack does not know keeps the egress IP, and must not come
    // back here after its ct() (that would loop).
    let mut f = vec![flow(
        Table::ConntrackZone,
        UN_SNAT,
        with_host(from_gateway(), e.egress_ip, false).with(untracked),
        vec![Instruction::ApplyActions(vec![
            Action::set_reg(0, regs::REWRITE_MAC_MARK, regs::REWRITE_MAC_MARK),
            Action::Ct {
                commit: false,
                zone: snat_zone,
                table: Some(Table::ConntrackZone.id()),
                nat: Some(Nat::Existing),
                exec: Vec::new(),
            },
        ])],
    )];
    for ip in e
        .pod_ips
        .iter()
        .filter(|ip| ip.is_ipv4() == e.egress_ip.is_ipv4() && !local(ip))
    {
        let Some(tunnel) = desired
            .peers
            .values()
            .find(|p| p.pod_cidrs.iter().any(|c| c.contains(ip)))
            .and_then(|p| p.tunnel_ip())
        else {
            continue;
        };
        // One reg0 match (OVS refuses a field twice): from the gateway, un-SNATed above.
        let m = Match::new().with(Oxm::reg_masked(
            0,
            regs::FROM_GATEWAY | regs::REWRITE_MAC_MARK,
            regs::PKT_SOURCE_MASK | regs::REWRITE_MAC_MARK,
        ));
        f.push(flow(
            Table::L3Forwarding,
            prio::NORMAL,
            with_host(m, *ip, false),
            vec![
                Instruction::ApplyActions(vec![
                    Action::SetField(Oxm::eth_src(gw_mac)),
                    Action::SetField(Oxm::eth_dst(GLOBAL_VIRTUAL_MAC)),
                    Action::SetField(tun_dst(tunnel)),
                ]),
                Instruction::GotoTable(Table::L3DecTTL.id()),
            ],
        ));
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::model::Egress;
    use crate::ports::fixtures::mk_node;

    fn state(egress_node: &str) -> DesiredState {
        let mut d = crate::desired::fixtures::two_nodes();
        d.egresses.insert(
            "eg".into(),
            Egress {
                name: "eg".into(),
                egress_ip: [192, 168, 77, 100].into(),
                egress_node: egress_node.into(),
                pod_ips: [[10, 1, 0, 2].into(), [10, 2, 0, 5].into()].into(),
                mark: 1,
            },
        );
        d
    }

    fn marking(flows: &[FlowMod]) -> Vec<&FlowMod> {
        flows
            .iter()
            .filter(|f| f.table_id == Table::EgressMark.id() && f.priority == prio::NORMAL)
            .collect()
    }

    #[test]
    fn local_egress_node_marks_local_pods_and_tunnelled_remote_pods_and_snats() {
        let flows = egress_flows(&mk_node(), &state("n1"));
        let m = marking(&flows);
        assert_eq!(m.len(), 2, "local p0 and remote 10.2.0.5 from the tunnel");
        assert!(m.iter().all(|f| matches!(&f.instructions[0],
            Instruction::ApplyActions(a) if a.contains(&Action::SetField(pkt_mark(1))))));
        let snat: Vec<_> = flows
            .iter()
            .filter(|f| f.table_id == Table::Output.id())
            .collect();
        let un_snat: Vec<_> = flows
            .iter()
            .filter(|f| f.table_id == Table::ConntrackZone.id())
            .collect();
        assert_eq!(un_snat.len(), 1, "the way back: un-SNAT of the egress IP");
        assert!(
            matches!(&un_snat[0].instructions[0], Instruction::ApplyActions(a)
            if a.contains(&Action::Ct { commit: false, zone: SNAT_CT_ZONE,
                                        table: Some(Table::ConntrackZone.id()),
                                        nat: Some(Nat::Existing), exec: Vec::new() }))
        );
        let back: Vec<_> = flows
            .iter()
            .filter(|f| f.table_id == Table::L3Forwarding.id())
            .collect();
        assert_eq!(
            back.len(),
            1,
            "the remote Pod 10.2.0.5's replies go back to n2"
        );
        assert!(
            matches!(&back[0].instructions[0], Instruction::ApplyActions(a)
            if a.contains(&Action::SetField(tun_dst([192, 168, 77, 3].into()))))
        );
        assert_eq!(snat.len(), 1);
        assert_eq!(
            snat[0].instructions,
            vec![Instruction::ApplyActions(vec![Action::Ct {
                commit: true,
                zone: SNAT_CT_ZONE,
                table: Some(Table::Output.id()),
                nat: Some(Nat::Src {
                    addr: [192, 168, 77, 100].into(),
                    port: None,
                }),
                exec: Vec::new(),
            }])]
        );
        const { assert!(SNAT < prio::TRACE) };
    }

    #[test]
    fn remote_egress_node_tunnels_with_the_remote_snat_mark() {
        let flows = egress_flows(&mk_node(), &state("n2"));
        let m = marking(&flows);
        assert_eq!(
            m.len(),
            1,
            "only the local Pod; the remote one is n2's business"
        );
        let Instruction::ApplyActions(a) = &m[0].instructions[0] else {
            panic!("no actions")
        };
        assert!(a.contains(&Action::SetField(tun_dst([192, 168, 77, 3].into()))));
        assert!(a.contains(&Action::set_reg(
            0,
            regs::REMOTE_SNAT_MARK | regs::REWRITE_MAC_MARK,
            regs::REMOTE_SNAT_MARK | regs::REWRITE_MAC_MARK
        )));
        assert!(
            !flows
                .iter()
                .any(|f| [Table::Output.id(), Table::ConntrackZone.id()].contains(&f.table_id)),
            "no SNAT nor un-SNAT on a Node that is not the egress Node"
        );
        let skips = flows.iter().filter(|f| f.priority == SKIP).count();
        assert_eq!(skips, 4, "two Pod CIDRs and two Node addresses");
    }

    #[test]
    fn no_gateway_or_no_egress_means_no_flows() {
        assert!(egress_flows(&mk_node(), &DesiredState::default()).is_empty());
    }
}
