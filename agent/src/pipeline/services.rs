//! ClusterIP Services (reference §4 ServiceLB / EndpointDNAT / SNAT, Antrea's AntreaProxy
//! flows), computed purely from the ports and the desired state, for IPv4 and IPv6 ClusterIPs
//! (IPv6 endpoints travel in reg12..reg15, Antrea's xxreg3; zones 65510 / 65511).
//!
//! ```text
//! ServiceLB         nw_dst=ClusterIP, proto, tp_dst=port → RewriteMAC, group:G
//!                   (no endpoints: packet-in, the agent rejects)
//! group G (select)  bucket per endpoint: reg3 = ep IP, reg4 = EpSelected | ep port,
//!                   resubmit(,EndpointDNAT)
//! EndpointDNAT      reg3 + reg4 + proto → ct(commit, zone 65520, nat(dst=ep:port),
//!                   exec(ct_mark |= ServiceCTMark), table=AntreaPolicyEgressRule)
//! ConntrackZone     -trk, nw_dst=gateway IP → ct(zone 65521, nat, table=ConntrackZone)
//!                   (un-SNAT hairpin replies before the DNAT zone un-DNATs them)
//! L3Forwarding      from a Pod to the gateway MAC, nw_dst = a local Pod → MACs gw → Pod
//!                   (hairpin replies; routed, so L3DecTTL decrements)
//! SNAT              +new+trk, nw_src = nw_dst = local endpoint (hairpin) →
//!                   ct(commit, zone 65521, nat(src=gateway IP), exec(ct_mark |= Service),
//!                   table=L2ForwardingCalc); -new+trk, same match → ct(zone 65521, nat)
//! ConntrackState    -new+trk with ServiceCTMark → RewriteMAC (later packets are routed too)
//! ConntrackCommit   +new+trk with ServiceCTMark → Output (already committed with NAT)
//! ```
//!
//! Endpoints on other Nodes need nothing more: after DNAT the packet's destination is in a
//! peer's Pod CIDR and L3Forwarding sends it into the tunnel; the reply comes back through
//! the tunnel and `ct(nat)` in ConntrackZone restores the ClusterIP. Replies of local
//! endpoints are un-DNATed the same way.
//!
//! Group ids are 1.. in (Service key, cluster IP, port) order; reconciliation deletes every
//! group and re-adds them in the same bundle as the flows, so ids may shift freely.

use std::net::IpAddr;

use crate::desired::DesiredState;
use crate::ovs::openflow::message::{Bucket, GROUP_ALL, group_cmd, group_type};
use crate::ovs::openflow::oxm::{CLASS_BASIC, basic, ct_state};
use crate::ovs::openflow::{Action, FlowMod, GroupMod, Instruction, Match, Nat, Oxm};
use crate::ports::NodePorts;

use super::COOKIE;
use super::flows::{CT_ZONE, CT_ZONE_V6, prio};
use super::regs;
use super::tables::Table;
use super::{ETH_IPV4, ETH_IPV6};

/// Antrea's `SNATCtZone`.
pub const SNAT_CT_ZONE: u16 = 65521;
/// ct_mark bit 4, Antrea's `ServiceCTMark`: the connection was DNATed by a Service.
pub const SERVICE_CT_MARK: u32 = 1 << 4;
/// reg3 `EndpointIPField` (shared with `APConjIDField`, as in Antrea).
pub const ENDPOINT_IP_REG: u8 = 3;
/// reg4[0..15] `EndpointPortField`, reg4[16..18] `ServiceEPStateField` (0b010 = selected).
pub const ENDPOINT_PORT_REG: u8 = 4;
pub const EP_SELECTED: u32 = 0b010 << 16;
pub const EP_MASK: u32 = 0x7_ffff;
/// Priority of the un-SNAT and Service-commit-bypass flows (above the normal ones).
const PRIO_HIGH: u16 = 210;

/// The groups and flows for every Service in `desired`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ServiceFlows {
    pub groups: Vec<GroupMod>,
    pub flows: Vec<FlowMod>,
}

impl ServiceFlows {
    /// "Delete every group" then the groups: the prefix of a reconcile bundle.
    pub fn group_messages(&self) -> Vec<GroupMod> {
        let mut v = vec![GroupMod {
            command: group_cmd::DELETE,
            group_type: group_type::ALL,
            group_id: GROUP_ALL,
            command_bucket_id: 0xffff_ffff,
            buckets: Vec::new(),
        }];
        v.extend(self.groups.iter().cloned());
        v
    }
}

fn flow(t: Table, priority: u16, m: Match, ins: Vec<Instruction>) -> FlowMod {
    FlowMod::add(t.id(), priority, COOKIE, m, ins)
}

fn dst_port(proto: u8, port: u16) -> Oxm {
    let field = match proto {
        6 => basic::TCP_DST,
        17 => basic::UDP_DST,
        _ => basic::SCTP_DST,
    };
    Oxm::exact(CLASS_BASIC, field, &port.to_be_bytes())
}

fn ct_mark(value: u32, mask: u32) -> Oxm {
    Oxm::ct_mark_masked(value, mask)
}

/// Antrea's `SNATCtZoneV6`.
pub const SNAT_CT_ZONE_V6: u16 = 65511;
/// IPv6 endpoints: reg12..reg15 hold the address (Antrea's `EndpointIP6Field`, xxreg3).
pub const ENDPOINT_IP6_REGS: [u8; 4] = [12, 13, 14, 15];

fn eth(ip: &IpAddr) -> u16 {
    if ip.is_ipv6() { ETH_IPV6 } else { ETH_IPV4 }
}

fn dst_ip(ip: IpAddr) -> Oxm {
    match ip {
        IpAddr::V4(v) => Oxm::ipv4_dst(v),
        IpAddr::V6(v) => Oxm::ipv6_dst(v),
    }
}

fn src_ip(ip: IpAddr) -> Oxm {
    match ip {
        IpAddr::V4(v) => Oxm::ipv4_src(v),
        IpAddr::V6(v) => Oxm::ipv6_src(v),
    }
}

/// The register writes selecting endpoint `ip` and the matching register matches.
fn endpoint_regs(ip: IpAddr) -> Vec<(u8, u32)> {
    match ip {
        IpAddr::V4(v) => vec![(ENDPOINT_IP_REG, u32::from(v))],
        IpAddr::V6(v) => {
            let o = v.octets();
            ENDPOINT_IP6_REGS
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    (
                        *r,
                        u32::from_be_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]]),
                    )
                })
                .collect()
        }
    }
}

/// Every Service group and flow (module doc).
pub fn service_flows(ports: &NodePorts, desired: &DesiredState) -> ServiceFlows {
    service_flows_with(ports, desired, None)
}

/// [`service_flows`], with the no-endpoint packet-ins passing `packet_in_meter`.
pub fn service_flows_with(
    ports: &NodePorts,
    desired: &DesiredState,
    packet_in_meter: Option<u32>,
) -> ServiceFlows {
    let mut out = ServiceFlows::default();
    let mut next_group = 1u32;
    let mut dnat_done = std::collections::BTreeSet::new();
    let mut local_endpoints = std::collections::BTreeSet::new();
    let local_ips: std::collections::BTreeSet<IpAddr> = ports
        .pods
        .iter()
        .flat_map(|p| p.port.ips.iter().copied())
        .collect();

    for svc in desired.services.values() {
        for cip in svc.cluster_ips.iter().copied() {
            let zone = if cip.is_ipv6() { CT_ZONE_V6 } else { CT_ZONE };
            for sp in &svc.ports {
                let m = Match::new()
                    .with(Oxm::eth_type(eth(&cip)))
                    .with(dst_ip(cip))
                    .with(Oxm::ip_proto(sp.protocol))
                    .with(dst_port(sp.protocol, sp.port));
                // Endpoints of the ClusterIP's family only.
                let eps: Vec<(IpAddr, u16)> = sp
                    .endpoints
                    .iter()
                    .filter(|e| e.ip.is_ipv6() == cip.is_ipv6())
                    .map(|e| (e.ip, e.port))
                    .collect();
                if eps.is_empty() {
                    // No endpoint: the agent rejects it (TCP RST / ICMP unreachable from the
                    // ClusterIP, crate::reject), as Antrea's EndpointDNAT does.
                    let mut a: Vec<Action> =
                        packet_in_meter.map(Action::Meter).into_iter().collect();
                    a.push(Action::to_controller());
                    out.flows.push(flow(
                        Table::ServiceLB,
                        prio::NORMAL,
                        m,
                        vec![Instruction::ApplyActions(a)],
                    ));
                    continue;
                }
                let gid = next_group;
                next_group += 1;
                let buckets = eps
                    .iter()
                    .enumerate()
                    .map(|(i, (ip, port))| {
                        let mut actions: Vec<Action> = endpoint_regs(*ip)
                            .into_iter()
                            .map(|(r, v)| Action::set_reg(r, v, u32::MAX))
                            .collect();
                        actions.push(Action::set_reg(
                            ENDPOINT_PORT_REG,
                            EP_SELECTED | u32::from(*port),
                            EP_MASK,
                        ));
                        actions.push(Action::Resubmit {
                            table: Table::EndpointDNAT.id(),
                        });
                        Bucket {
                            bucket_id: u32::try_from(i).unwrap_or(u32::MAX),
                            actions,
                            weight: Some(100),
                        }
                    })
                    .collect();
                out.groups.push(GroupMod {
                    command: group_cmd::ADD,
                    group_type: group_type::SELECT,
                    group_id: gid,
                    command_bucket_id: 0xffff_ffff,
                    buckets,
                });
                out.flows.push(flow(
                    Table::ServiceLB,
                    prio::NORMAL,
                    m,
                    vec![Instruction::ApplyActions(vec![
                        Action::set_reg(0, regs::REWRITE_MAC_MARK, regs::REWRITE_MAC_MARK),
                        Action::Group(gid),
                    ])],
                ));
                for (ip, port) in eps {
                    if local_ips.contains(&ip) {
                        local_endpoints.insert(ip);
                    }
                    if !dnat_done.insert((ip, port, sp.protocol)) {
                        continue;
                    }
                    let mut dm = Match::new()
                        .with(Oxm::eth_type(eth(&ip)))
                        .with(Oxm::ip_proto(sp.protocol));
                    for (r, v) in endpoint_regs(ip) {
                        dm = dm.with(Oxm::reg(r, v));
                    }
                    let dm = dm.with(Oxm::reg_masked(
                        ENDPOINT_PORT_REG,
                        EP_SELECTED | u32::from(port),
                        EP_MASK,
                    ));
                    let dnat = |marks: u32| {
                        vec![Instruction::ApplyActions(vec![Action::Ct {
                            commit: true,
                            zone,
                            table: Some(Table::AntreaPolicyEgressRule.id()),
                            nat: Some(Nat::Dst {
                                addr: ip,
                                port: Some(port),
                            }),
                            exec: vec![Action::SetField(ct_mark(marks, marks))],
                        }])]
                    };
                    // A trace packet's connection is committed here, before policy: it gets
                    // the trace mark at once, so it admits no real packet even when policy
                    // then drops the trace packet (regs::TRACE_CT_MARK).
                    out.flows.push(flow(
                        Table::EndpointDNAT,
                        prio::NORMAL + 1,
                        dm.clone().with(Oxm::ip_dscp(super::TRACE_DSCP)),
                        dnat(SERVICE_CT_MARK | regs::TRACE_CT_MARK),
                    ));
                    out.flows.push(flow(
                        Table::EndpointDNAT,
                        prio::NORMAL,
                        dm,
                        dnat(SERVICE_CT_MARK),
                    ));
                }
            }
        }
    }
    if out.flows.is_empty() {
        return out;
    }

    // Connections committed with NAT by EndpointDNAT / SNAT are not committed again; their
    // later packets (both directions) are routed like the first (Antrea's ConntrackState
    // `-new+trk, ServiceCTMark → RewriteMAC`).
    for et in [ETH_IPV4, ETH_IPV6] {
        out.flows.push(flow(
            Table::ConntrackState,
            prio::NORMAL,
            Match::new()
                .with(Oxm::eth_type(et))
                .with(Oxm::ct_state(ct_state::TRK, ct_state::NEW | ct_state::TRK))
                .with(ct_mark(SERVICE_CT_MARK, SERVICE_CT_MARK)),
            vec![
                Instruction::ApplyActions(vec![Action::set_reg(
                    0,
                    regs::REWRITE_MAC_MARK,
                    regs::REWRITE_MAC_MARK,
                )]),
                Instruction::GotoTable(Table::PreRoutingClassifier.id()),
            ],
        ));
        out.flows.push(flow(
            Table::ConntrackCommit,
            PRIO_HIGH,
            Match::new()
                .with(Oxm::eth_type(et))
                .with(Oxm::ct_state(
                    ct_state::NEW | ct_state::TRK,
                    ct_state::NEW | ct_state::TRK,
                ))
                .with(ct_mark(SERVICE_CT_MARK, SERVICE_CT_MARK)),
            vec![Instruction::GotoTable(Table::Output.id())],
        ));
    }

    // Hairpin: SNAT to the gateway IP of the family, un-SNAT replies, route replies back.
    let Some(gw) = &ports.gateway else {
        return out;
    };
    let mut hairpin_families = std::collections::BTreeSet::new();
    for ep in &local_endpoints {
        let Some(gw_ip) = gw.ips.iter().copied().find(|g| g.is_ipv6() == ep.is_ipv6()) else {
            continue;
        };
        let snat_zone = if ep.is_ipv6() {
            SNAT_CT_ZONE_V6
        } else {
            SNAT_CT_ZONE
        };
        hairpin_families.insert((gw_ip, snat_zone));
        let same = |st: u32| {
            Match::new()
                .with(Oxm::eth_type(eth(ep)))
                .with(Oxm::ct_state(st, ct_state::NEW | ct_state::TRK))
                .with(src_ip(*ep))
                .with(dst_ip(*ep))
        };
        // Later packets of the hairpin connection get the same SNAT.
        out.flows.push(flow(
            Table::SNAT,
            prio::NORMAL,
            same(ct_state::TRK),
            vec![Instruction::ApplyActions(vec![Action::Ct {
                commit: false,
                zone: snat_zone,
                table: Some(Table::L2ForwardingCalc.id()),
                nat: Some(Nat::Existing),
                exec: Vec::new(),
            }])],
        ));
        let snat = |marks: u32| {
            vec![Instruction::ApplyActions(vec![Action::Ct {
                commit: true,
                zone: snat_zone,
                table: Some(Table::L2ForwardingCalc.id()),
                nat: Some(Nat::Src {
                    addr: gw_ip,
                    port: None,
                }),
                exec: vec![Action::SetField(ct_mark(marks, marks))],
            }])]
        };
        // A trace packet's hairpin connection carries the trace mark here too: the ingress
        // policy tables see this zone's state, and the agent learns from it what to flush.
        out.flows.push(flow(
            Table::SNAT,
            prio::NORMAL + 1,
            same(ct_state::NEW | ct_state::TRK).with(Oxm::ip_dscp(super::TRACE_DSCP)),
            snat(SERVICE_CT_MARK | regs::TRACE_CT_MARK),
        ));
        out.flows.push(flow(
            Table::SNAT,
            prio::NORMAL,
            same(ct_state::NEW | ct_state::TRK),
            snat(SERVICE_CT_MARK),
        ));
    }
    for (gw_ip, snat_zone) in &hairpin_families {
        out.flows.push(flow(
            Table::ConntrackZone,
            PRIO_HIGH,
            Match::new()
                .with(Oxm::eth_type(eth(gw_ip)))
                .with(Oxm::ct_state(0, ct_state::TRK))
                .with(dst_ip(*gw_ip)),
            // Bare `nat`: apply the SNAT binding of a hairpin reply.
            vec![Instruction::ApplyActions(vec![Action::Ct {
                commit: false,
                zone: *snat_zone,
                table: Some(Table::ConntrackZone.id()),
                nat: Some(Nat::Existing),
                exec: Vec::new(),
            }])],
        ));
        for pod in &ports.pods {
            for ip in pod
                .port
                .ips
                .iter()
                .filter(|i| i.is_ipv6() == gw_ip.is_ipv6())
            {
                out.flows.push(flow(
                    Table::L3Forwarding,
                    prio::LOW,
                    Match::new()
                        .with(Oxm::reg_masked(0, regs::FROM_POD, regs::PKT_SOURCE_MASK))
                        .with(Oxm::eth_dst(gw.mac.0))
                        .with(Oxm::eth_type(eth(ip)))
                        .with(dst_ip(*ip)),
                    vec![
                        Instruction::ApplyActions(vec![
                            Action::SetField(Oxm::eth_src(gw.mac.0)),
                            Action::SetField(Oxm::eth_dst(pod.port.mac.0)),
                            Action::set_reg(0, regs::REWRITE_MAC_MARK, regs::REWRITE_MAC_MARK),
                        ]),
                        Instruction::GotoTable(Table::L3DecTTL.id()),
                    ],
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::fixtures::svc;
    use crate::ports::fixtures::mk_node;
    use traceflow_proto::v1 as pb;

    fn state(eps: &[&str]) -> DesiredState {
        let mut s = DesiredState::default();
        s.apply(pb::NodeState {
            replace: true,
            services_upsert: vec![svc("web", eps)],
            ..Default::default()
        });
        s
    }

    fn in_table(f: &ServiceFlows, t: Table) -> Vec<&FlowMod> {
        f.flows.iter().filter(|x| x.table_id == t.id()).collect()
    }

    #[test]
    fn select_group_with_a_bucket_per_endpoint() {
        let f = service_flows(&mk_node(), &state(&["10.1.0.3", "10.2.0.2"]));
        assert_eq!(f.groups.len(), 1);
        assert_eq!(f.groups[0].group_type, group_type::SELECT);
        assert_eq!(f.groups[0].buckets.len(), 2);
        let lb = in_table(&f, Table::ServiceLB);
        assert_eq!(lb.len(), 1);
        assert_eq!(
            lb[0].instructions,
            vec![Instruction::ApplyActions(vec![
                Action::set_reg(0, regs::REWRITE_MAC_MARK, regs::REWRITE_MAC_MARK),
                Action::Group(1),
            ])]
        );
        let dnat = in_table(&f, Table::EndpointDNAT);
        assert_eq!(
            dnat.len(),
            2 * 2,
            "per endpoint: trace packets (marked) and the rest"
        );
        let traced: Vec<_> = dnat
            .iter()
            .filter(|d| {
                d.fields
                    .fields
                    .contains(&Oxm::ip_dscp(super::super::TRACE_DSCP))
            })
            .collect();
        assert_eq!(traced.len(), 2);
        assert!(
            traced.iter().all(|d| d.priority > prio::NORMAL),
            "trace packets' connections are committed with the trace mark"
        );
        // 10.1.0.3 is p1 on this Node: hairpin SNAT for new (trace packets marked) and
        // later packets.
        assert_eq!(in_table(&f, Table::SNAT).len(), 3);
        assert_eq!(f.group_messages()[0].command, group_cmd::DELETE);
    }

    #[test]
    fn no_endpoints_go_to_the_agent_and_no_services_add_nothing() {
        let f = service_flows(&mk_node(), &state(&[]));
        assert!(f.groups.is_empty());
        let lb = in_table(&f, Table::ServiceLB);
        assert_eq!(lb.len(), 1);
        assert_eq!(
            lb[0].instructions,
            vec![Instruction::ApplyActions(vec![Action::to_controller()])],
            "rejected by the agent"
        );
        let none = service_flows(&mk_node(), &DesiredState::default());
        assert_eq!(none, ServiceFlows::default());
    }
}
