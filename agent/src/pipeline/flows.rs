//! The desired flows of br-int, computed purely from [`NodePorts`] (no I/O; unit-tested).
//!
//! What is programmed today (the rest of Antrea's tables hold only their default flow), one
//! function per table below:
//!
//! ```text
//! PipelineRootClassifier  tunnel ip → Classifier (trace packets of other Nodes);
//!                         any other port: trace DSCP without this agent's injected mark, or a
//!                         live tag in use → DSCP cleared (a forged trace packet is plain traffic);
//!                         arp → ARPSpoofGuard; ip/ipv6 → Classifier; else drop
//! ARPSpoofGuard           Pod port + its own sha/spa, or gateway → ARPResponder; else drop
//! ARPResponder            NORMAL (L2 learning among local ports; Antrea's default flow too)
//! Classifier              in_port → reg0[0..3] source (tunnel 1 + RewriteMAC, gateway 2, Pod 3)
//! SpoofGuard              Pod port + its own MAC + IP (v6 link-local / DAD too); gateway: any
//! IPv6                    ND and multicast → NORMAL
//! ConntrackZone           ct(zone=65520 / 65510 v6, nat, table=ConntrackState)
//! ConntrackState          +inv+trk → drop
//! L3Forwarding            routed (from tunnel) to a local Pod IP → MACs gateway → Pod;
//!                         Pod → peer Pod CIDR: MACs gateway → aa:bb:cc:dd:ee:ff, tun_dst
//! L3DecTTL                routed → dec_ttl
//! L2ForwardingCalc        dl_dst = Pod / gateway MAC / aa:bb:cc:dd:ee:ff (tunnel) → reg1 = ofport,
//!                         reg0 OFPortFound + output mode
//! ConntrackCommit         trace class +new+trk → ct(commit, ct_mark |= trace) then Output;
//!                         +new+trk → ct(commit) then Output
//! Output                  trace class: → controller (and tunnel when reg1 is the tunnel);
//!                         reg1 == in_port → IN_PORT (hairpin); else output:reg1
//! ```
//!
//! ARP today is answered by the real owner through NORMAL. Antrea's ARPResponder answers for
//! remote gateways with the global virtual MAC `aa:bb:cc:dd:ee:ff` (arp reply built in the
//! flow: move sha→tha, load the MAC, IN_PORT); that arrives with multi-Node routing
//! (L3Forwarding), keeping NORMAL as the default flow exactly as Antrea does.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::ovs::openflow::action::port;
use crate::ovs::openflow::oxm::{CLASS_BASIC, CLASS_NXM1, basic, ct_state, nxm};
use crate::ovs::openflow::{Action, FlowMod, Instruction, Match, Nat, Oxm};
use crate::ports::NodePorts;

use super::regs;
use super::tables::{Miss, Table};
use super::{COOKIE, ETH_IPV4, ETH_IPV6, GLOBAL_VIRTUAL_MAC, TRACE_DSCP};
use crate::desired::Peer;

const ETH_ARP: u16 = 0x0806;
/// Antrea's conntrack zones (`CtZone`, `CtZoneV6`).
pub const CT_ZONE: u16 = 65520;
pub const CT_ZONE_V6: u16 = 65510;

/// Antrea's priorities.
pub mod prio {
    pub const DEFAULT: u16 = 0;
    pub const LOW: u16 = 190;
    pub const NORMAL: u16 = 200;
    /// Output back to the input port (above NORMAL, below the trace flows).
    pub const HAIRPIN: u16 = 201;
    /// Trace-class output to a Pod or the gateway (Antrea's 202).
    pub const TRACE: u16 = 202;
    /// Trace-class output to the tunnel (Antrea's 203).
    pub const TRACE_TUNNEL: u16 = 203;
    /// PipelineRootClassifier: a packet claiming the trace DSCP without the injected mark, or
    /// a live tag, loses it.
    pub const FORGED_TRACE: u16 = 205;
    /// PipelineRootClassifier: what the tunnel brings is checked by the receiving agent and
    /// the adapter (the trace's secret), not cleared...
    pub const FROM_TUNNEL: u16 = 210;
    /// ...except, with a tunnel key, a trace-class packet without it (cleared), below one
    /// with it (passed).
    pub const TUNNEL_UNKEYED: u16 = 212;
    pub const TUNNEL_KEYED: u16 = 215;
    /// ConntrackCommit: a trace packet's new connection is committed with the trace mark.
    /// Below the Service commit bypass (210): a Service connection was committed, with NAT
    /// and the trace mark, by EndpointDNAT already, and must not be committed again.
    pub const TRACE_COMMIT: u16 = 205;
}

fn goto(t: Table) -> Instruction {
    Instruction::GotoTable(t.id())
}

fn apply(actions: Vec<Action>) -> Instruction {
    Instruction::ApplyActions(actions)
}

fn flow(t: Table, priority: u16, m: Match, ins: Vec<Instruction>) -> FlowMod {
    FlowMod::add(t.id(), priority, COOKIE, m, ins)
}

fn next_of(t: Table) -> Vec<Instruction> {
    t.next().map(goto).into_iter().collect()
}

/// Every flow the pipeline wants on br-int for `ports`, in a stable order.
pub fn desired_flows(ports: &NodePorts, peers: &[Peer]) -> Vec<FlowMod> {
    desired_flows_with(ports, peers, &TraceClass::default(), None)
}

/// What tells a trace's packets from the rest beyond the injected mark: the DSCP tags of the
/// live traces in flight (cleared from what enters br-int anywhere but the tunnel), and the
/// cluster's tunnel key (what a tunnelled trace or live-tagged packet must carry as
/// `tun_metadata0`, [`super::TUNNEL_KEY_OPTION`]; none: the tunnel is taken as it comes).
#[derive(Debug, Clone, Copy)]
pub struct TraceClass<'a> {
    pub live_tags: &'a BTreeSet<u8>,
    pub tunnel_key: Option<u64>,
}

/// No live trace in flight, no tunnel key.
static NO_LIVE_TAGS: BTreeSet<u8> = BTreeSet::new();

impl Default for TraceClass<'_> {
    fn default() -> Self {
        Self {
            live_tags: &NO_LIVE_TAGS,
            tunnel_key: None,
        }
    }
}

impl TraceClass<'_> {
    /// `set_field:<key>->tun_metadata0`, for packets sent into the tunnel (none without a key).
    pub fn tunnel_key_actions(&self) -> Vec<Action> {
        self.tunnel_key
            .map(|k| Action::SetField(tun_metadata0(k)))
            .into_iter()
            .collect()
    }
}

/// `tun_metadata0=<key>` (8 bytes, as [`super::TUNNEL_KEY_OPTION`] maps it).
pub fn tun_metadata0(key: u64) -> Oxm {
    Oxm::exact(CLASS_NXM1, nxm::TUN_METADATA0, &key.to_be_bytes())
}

/// [`desired_flows`] with the trace class of the moment (`class`) and every trace packet-in
/// passing meter `packet_in_meter` first when the switch has it (Antrea's
/// `PacketInMeterIDTF`), so a flood of trace-class packets cannot overwhelm the agent.
pub fn desired_flows_with(
    ports: &NodePorts,
    peers: &[Peer],
    class: &TraceClass<'_>,
    packet_in_meter: Option<u32>,
) -> Vec<FlowMod> {
    let mut f = Vec::new();
    default_flows(&mut f);
    root_classifier(&mut f, ports, class, packet_in_meter.is_some());
    arp(&mut f, ports);
    classifier(&mut f, ports);
    spoof_guard(&mut f, ports);
    ipv6(&mut f);
    conntrack(&mut f);
    l3_forwarding(&mut f, ports, peers);
    l2_forwarding_calc(&mut f, ports);
    output(&mut f, ports, class, packet_in_meter);
    f
}

/// Default flows: "goto next" or drop (no instructions = drop).
fn default_flows(f: &mut Vec<FlowMod>) {
    for t in Table::ALL {
        let ins = match t.miss() {
            Miss::Next => next_of(t),
            Miss::Drop => Vec::new(),
        };
        f.push(flow(t, prio::DEFAULT, Match::new(), ins));
    }
}

/// PipelineRootClassifier: ARP and IP apart, and the one place where a trace's identity is
/// checked for everything that enters br-int.
///
/// Only two things may carry the trace DSCP or a live tag past this table: a packet this
/// agent injected (its packet-out sets [`regs::INJECTED_MARK`], which no port can: registers
/// of a received packet start at zero) and what the tunnel brings from the other Nodes (the
/// receiving agent checks its origin and the adapter the trace's secret). Whatever else claims
/// one, from a Pod, the gateway (the Node itself), the uplink or any other port, is forwarded
/// as the plain packet it is. A live tag is set again later by the trace's own tagging flow.
fn root_classifier(f: &mut Vec<FlowMod>, ports: &NodePorts, class: &TraceClass<'_>, meters: bool) {
    let root = Table::PipelineRootClassifier;
    f.push(flow(
        root,
        prio::NORMAL,
        Match::new().with(Oxm::eth_type(ETH_ARP)),
        vec![goto(Table::ARPSpoofGuard)],
    ));
    // Counted on the way (a meter that never drops) when the switch has meters.
    let clear = || {
        let count = meters.then_some(Action::Meter(super::FORGED_TRACE_METER));
        vec![
            apply(
                count
                    .into_iter()
                    .chain([Action::SetField(Oxm::ip_dscp(0))])
                    .collect(),
            ),
            goto(Table::Classifier),
        ]
    };
    let classes: Vec<u8> = std::iter::once(TRACE_DSCP)
        .chain(class.live_tags.iter().copied())
        .collect();
    for et in [ETH_IPV4, ETH_IPV6] {
        f.push(flow(
            root,
            prio::NORMAL,
            Match::new().with(Oxm::eth_type(et)),
            vec![goto(Table::Classifier)],
        ));
        if let Some(t) = ports.tunnel_ofport {
            let tunnel = || Match::new().with(Oxm::in_port(t)).with(Oxm::eth_type(et));
            f.push(flow(
                root,
                prio::FROM_TUNNEL,
                tunnel(),
                vec![goto(Table::Classifier)],
            ));
            // With a key, a tunnelled packet of a trace class must carry it: one sent by a
            // Node of this cluster does; a Geneve packet anyone else made does not, and is
            // forwarded as the plain packet it is (never trapped, never metered).
            if let Some(key) = class.tunnel_key {
                for dscp in &classes {
                    let m = || tunnel().with(Oxm::ip_dscp(*dscp));
                    f.push(flow(
                        root,
                        prio::TUNNEL_KEYED,
                        m().with(tun_metadata0(key)),
                        vec![goto(Table::Classifier)],
                    ));
                    f.push(flow(root, prio::TUNNEL_UNKEYED, m(), clear()));
                }
            }
        }
        f.push(flow(
            root,
            prio::FORGED_TRACE,
            Match::new()
                .with(Oxm::reg_masked(0, 0, regs::INJECTED_MARK))
                .with(Oxm::eth_type(et))
                .with(Oxm::ip_dscp(TRACE_DSCP)),
            clear(),
        ));
        for tag in class.live_tags {
            f.push(flow(
                root,
                prio::FORGED_TRACE,
                Match::new()
                    .with(Oxm::eth_type(et))
                    .with(Oxm::ip_dscp(*tag)),
                clear(),
            ));
        }
    }
}

/// ARP: spoof guard, then NORMAL.
fn arp(f: &mut Vec<FlowMod>, ports: &NodePorts) {
    for pod in &ports.pods {
        for ip in pod.port.ips.iter().filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        }) {
            f.push(flow(
                Table::ARPSpoofGuard,
                prio::NORMAL,
                Match::new()
                    .with(Oxm::in_port(pod.port.ofport))
                    .with(Oxm::eth_type(ETH_ARP))
                    .with(Oxm::arp_spa(ip))
                    .with(Oxm::arp_sha(pod.port.mac.0)),
                vec![goto(Table::ARPResponder)],
            ));
        }
    }
    if let Some(gw) = &ports.gateway {
        f.push(flow(
            Table::ARPSpoofGuard,
            prio::NORMAL,
            Match::new()
                .with(Oxm::in_port(gw.ofport))
                .with(Oxm::eth_type(ETH_ARP)),
            vec![goto(Table::ARPResponder)],
        ));
    }
    f.push(flow(
        Table::ARPResponder,
        prio::DEFAULT + 1,
        Match::new().with(Oxm::eth_type(ETH_ARP)),
        vec![apply(vec![Action::output(port::NORMAL)])],
    ));
}

/// Classifier: where did the packet come from.
fn classifier(f: &mut Vec<FlowMod>, ports: &NodePorts) {
    if let Some(t) = ports.tunnel_ofport {
        // Tunnelled packets were validated by the sender Node's SpoofGuard; they were routed
        // there (dst MAC = the global virtual MAC), so L3Forwarding rewrites their MACs.
        f.push(flow(
            Table::Classifier,
            prio::NORMAL,
            Match::new().with(Oxm::in_port(t)),
            vec![
                apply(vec![Action::set_reg(
                    0,
                    regs::FROM_TUNNEL | regs::REWRITE_MAC_MARK,
                    regs::PKT_SOURCE_MASK | regs::REWRITE_MAC_MARK,
                )]),
                goto(Table::IPv6),
            ],
        ));
    }
    let mut classify = |ofport: u32, source: u32, next: Table| {
        f.push(flow(
            Table::Classifier,
            prio::NORMAL,
            Match::new().with(Oxm::in_port(ofport)),
            vec![
                apply(vec![Action::set_reg(0, source, regs::PKT_SOURCE_MASK)]),
                goto(next),
            ],
        ));
    };
    if let Some(gw) = &ports.gateway {
        classify(gw.ofport, regs::FROM_GATEWAY, Table::SpoofGuard);
    }
    for pod in &ports.pods {
        classify(pod.port.ofport, regs::FROM_POD, Table::SpoofGuard);
    }
}

/// SpoofGuard: a Pod may only send with its own MAC and IPs; the gateway is unrestricted.
fn spoof_guard(f: &mut Vec<FlowMod>, ports: &NodePorts) {
    let sg = Table::SpoofGuard;
    for pod in &ports.pods {
        let base = || {
            Match::new()
                .with(Oxm::in_port(pod.port.ofport))
                .with(Oxm::eth_src(pod.port.mac.0))
        };
        for ip in &pod.port.ips {
            let m = match ip {
                IpAddr::V4(v4) => base()
                    .with(Oxm::eth_type(ETH_IPV4))
                    .with(Oxm::ipv4_src(*v4)),
                IpAddr::V6(v6) => base()
                    .with(Oxm::eth_type(ETH_IPV6))
                    .with(Oxm::ipv6_src(*v6)),
            };
            f.push(flow(sg, prio::NORMAL, m, next_of(sg)));
        }
        // IPv6 link-local sources (ND, RS) and the unspecified source of DAD.
        let mut ll = [0u8; 16];
        ll[0] = 0xfe;
        ll[1] = 0x80;
        let mut ll_mask = [0u8; 16];
        ll_mask[0] = 0xff;
        ll_mask[1] = 0xc0;
        f.push(flow(
            sg,
            prio::NORMAL,
            base().with(Oxm::eth_type(ETH_IPV6)).with(Oxm::masked(
                CLASS_BASIC,
                basic::IPV6_SRC,
                &ll,
                &ll_mask,
            )),
            next_of(sg),
        ));
        f.push(flow(
            sg,
            prio::NORMAL,
            base()
                .with(Oxm::eth_type(ETH_IPV6))
                .with(Oxm::ipv6_src(std::net::Ipv6Addr::UNSPECIFIED))
                .with(Oxm::ip_proto(58)),
            next_of(sg),
        ));
    }
    if let Some(gw) = &ports.gateway {
        f.push(flow(
            sg,
            prio::NORMAL,
            Match::new().with(Oxm::in_port(gw.ofport)),
            next_of(sg),
        ));
    }
}

/// IPv6: neighbour discovery and multicast go to NORMAL, as in Antrea's IPv6 table.
fn ipv6(f: &mut Vec<FlowMod>) {
    for icmp_type in [133u8, 134, 135, 136] {
        f.push(flow(
            Table::IPv6,
            prio::NORMAL,
            Match::new()
                .with(Oxm::eth_type(ETH_IPV6))
                .with(Oxm::ip_proto(58))
                .with(Oxm::icmpv6_type(icmp_type)),
            vec![apply(vec![Action::output(port::NORMAL)])],
        ));
    }
    let mut mc = [0u8; 16];
    mc[0] = 0xff;
    let mut mc_mask = [0u8; 16];
    mc_mask[0] = 0xff;
    f.push(flow(
        Table::IPv6,
        prio::NORMAL,
        Match::new().with(Oxm::eth_type(ETH_IPV6)).with(Oxm::masked(
            CLASS_BASIC,
            basic::IPV6_DST,
            &mc,
            &mc_mask,
        )),
        vec![apply(vec![Action::output(port::NORMAL)])],
    ));
}

/// Conntrack (Antrea's CtZone 65520 / 65510 for IPv6): track with existing NAT applied, drop
/// invalid, commit new connections before Output. This is what fills ct_nw_src/dst in
/// packet-ins (the LB observation) once Services program NAT.
///
/// A trace packet's new connection is committed with [`regs::TRACE_CT_MARK`] (a Service's
/// connection got it where EndpointDNAT committed it): the policy tables then admit no real
/// packet on it as established ([`super::policy`]).
fn conntrack(f: &mut Vec<FlowMod>) {
    let tracked = ct_state::TRK;
    let new = || Oxm::ct_state(ct_state::NEW | tracked, ct_state::NEW | tracked);
    for (et, zone) in [(ETH_IPV4, CT_ZONE), (ETH_IPV6, CT_ZONE_V6)] {
        f.push(flow(
            Table::ConntrackZone,
            prio::NORMAL,
            Match::new().with(Oxm::eth_type(et)),
            vec![apply(vec![Action::Ct {
                commit: false,
                zone,
                table: Some(Table::ConntrackState.id()),
                nat: Some(Nat::Existing),
                exec: Vec::new(),
            }])],
        ));
        f.push(flow(
            Table::ConntrackState,
            prio::NORMAL,
            Match::new().with(Oxm::eth_type(et)).with(Oxm::ct_state(
                ct_state::INV | tracked,
                ct_state::INV | tracked,
            )),
            Vec::new(),
        ));
        f.push(flow(
            Table::ConntrackCommit,
            prio::TRACE_COMMIT,
            Match::new()
                .with(Oxm::eth_type(et))
                .with(new())
                .with(Oxm::ip_dscp(TRACE_DSCP)),
            vec![apply(vec![Action::Ct {
                commit: true,
                zone,
                table: Some(Table::Output.id()),
                nat: None,
                exec: vec![Action::SetField(Oxm::ct_mark_masked(
                    regs::TRACE_CT_MARK,
                    regs::TRACE_CT_MARK,
                ))],
            }])],
        ));
        f.push(flow(
            Table::ConntrackCommit,
            prio::NORMAL,
            Match::new().with(Oxm::eth_type(et)).with(new()),
            vec![apply(vec![Action::Ct {
                commit: true,
                zone,
                table: Some(Table::Output.id()),
                nat: None,
                exec: Vec::new(),
            }])],
        ));
    }
}

/// L3Forwarding: a routed packet (from the tunnel) for a local Pod gets the gateway MAC as
/// source and the Pod's MAC as destination, as in Antrea; L3DecTTL then decrements its TTL.
/// A Pod's packet for a peer's Pod CIDR leaves through the tunnel: MACs gateway → global
/// virtual MAC, tun_dst = the peer.
fn l3_forwarding(f: &mut Vec<FlowMod>, ports: &NodePorts, peers: &[Peer]) {
    if let Some(gw) = &ports.gateway {
        for pod in &ports.pods {
            for ip in &pod.port.ips {
                let m = Match::new().with(Oxm::reg_masked(
                    0,
                    regs::REWRITE_MAC_MARK,
                    regs::REWRITE_MAC_MARK,
                ));
                let m = super::with_host(m, *ip, false);
                f.push(flow(
                    Table::L3Forwarding,
                    prio::NORMAL,
                    m,
                    vec![
                        apply(vec![
                            Action::SetField(Oxm::eth_src(gw.mac.0)),
                            Action::SetField(Oxm::eth_dst(pod.port.mac.0)),
                        ]),
                        goto(Table::L3DecTTL),
                    ],
                ));
            }
        }
    }
    if let (Some(gw), Some(_)) = (&ports.gateway, ports.tunnel_ofport) {
        for peer in peers {
            let tun_dst = match peer.tunnel_ip {
                IpAddr::V4(v4) => Oxm::exact(CLASS_NXM1, nxm::TUN_IPV4_DST, &v4.octets()),
                IpAddr::V6(v6) => Oxm::exact(CLASS_NXM1, nxm::TUN_IPV6_DST, &v6.octets()),
            };
            for cidr in &peer.pod_cidrs {
                // Any packet from a local Pod to a peer's Pod CIDR is routed, whatever its
                // destination MAC says (a Pod can only reach those addresses via its gateway).
                let m =
                    Match::new().with(Oxm::reg_masked(0, regs::FROM_POD, regs::PKT_SOURCE_MASK));
                let m = super::with_net(m, cidr, false);
                f.push(flow(
                    Table::L3Forwarding,
                    prio::NORMAL,
                    m,
                    vec![
                        apply(vec![
                            Action::SetField(Oxm::eth_src(gw.mac.0)),
                            Action::SetField(Oxm::eth_dst(GLOBAL_VIRTUAL_MAC)),
                            Action::SetField(tun_dst.clone()),
                            Action::set_reg(0, regs::REWRITE_MAC_MARK, regs::REWRITE_MAC_MARK),
                        ]),
                        goto(Table::L3DecTTL),
                    ],
                ));
            }
        }
    }
    for et in [ETH_IPV4, ETH_IPV6] {
        f.push(flow(
            Table::L3DecTTL,
            prio::NORMAL,
            Match::new()
                .with(Oxm::reg_masked(
                    0,
                    regs::REWRITE_MAC_MARK,
                    regs::REWRITE_MAC_MARK,
                ))
                .with(Oxm::eth_type(et)),
            vec![apply(vec![Action::DecNwTtl]), goto(Table::SNATMark)],
        ));
    }
}

/// L2ForwardingCalc: destination MAC → target port.
fn l2_forwarding_calc(f: &mut Vec<FlowMod>, ports: &NodePorts) {
    let l2 = Table::L2ForwardingCalc;
    let mut to_port = |mac: [u8; 6], ofport: u32| {
        f.push(flow(
            l2,
            prio::NORMAL,
            Match::new().with(Oxm::eth_dst(mac)),
            vec![
                apply(vec![
                    Action::set_reg(regs::TARGET_OFPORT_REG, ofport, u32::MAX),
                    Action::set_reg(0, regs::OUTPUT_TO_OFPORT_MARKS, regs::OUTPUT_MARKS_MASK),
                ]),
                goto(Table::AntreaPolicyIngressRule),
            ],
        ));
    };
    for pod in &ports.pods {
        to_port(pod.port.mac.0, pod.port.ofport);
    }
    if let Some(t) = ports.tunnel_ofport {
        to_port(GLOBAL_VIRTUAL_MAC, t);
    }
    if let Some(gw) = &ports.gateway {
        to_port(gw.mac.0, gw.ofport);
    }
}

/// Output: a trace packet is reported and, except towards the tunnel, not delivered
/// (reference §3.3 "Output table": injected packets never reach the Pod); hairpin; the rest
/// to the port L2ForwardingCalc chose.
fn output(
    f: &mut Vec<FlowMod>,
    ports: &NodePorts,
    class: &TraceClass<'_>,
    packet_in_meter: Option<u32>,
) {
    let to_controller = || -> Vec<Action> {
        packet_in_meter
            .map(Action::Meter)
            .into_iter()
            .chain([Action::to_controller()])
            .collect()
    };
    let out = Table::Output;
    let marked = || {
        Match::new().with(Oxm::reg_masked(
            0,
            regs::OUTPUT_TO_OFPORT_MARK,
            regs::OUTPUT_MODE_MASK,
        ))
    };
    for et in [ETH_IPV4, ETH_IPV6] {
        if let Some(t) = ports.tunnel_ofport {
            f.push(flow(
                out,
                prio::TRACE_TUNNEL,
                marked()
                    .with(Oxm::reg(regs::TARGET_OFPORT_REG, t))
                    .with(Oxm::eth_type(et))
                    .with(Oxm::ip_dscp(TRACE_DSCP)),
                vec![apply(
                    [
                        class.tunnel_key_actions(),
                        vec![Action::output(t)],
                        to_controller(),
                    ]
                    .concat(),
                )],
            ));
        }
        f.push(flow(
            out,
            prio::TRACE,
            marked()
                .with(Oxm::eth_type(et))
                .with(Oxm::ip_dscp(TRACE_DSCP)),
            vec![apply(to_controller())],
        ));
    }
    // Hairpin: OpenFlow never outputs to the input port unless told IN_PORT explicitly.
    let local = ports
        .pods
        .iter()
        .map(|p| p.port.ofport)
        .chain(ports.gateway.as_ref().map(|g| g.ofport));
    for ofport in local {
        f.push(flow(
            out,
            prio::HAIRPIN,
            marked()
                .with(Oxm::reg(regs::TARGET_OFPORT_REG, ofport))
                .with(Oxm::in_port(ofport)),
            vec![apply(vec![Action::output(port::IN_PORT)])],
        ));
    }
    f.push(flow(
        out,
        prio::NORMAL,
        marked(),
        vec![apply(vec![Action::OutputReg {
            reg: regs::TARGET_OFPORT_REG,
            max_len: 0,
        }])],
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::fixtures::mk_node;

    fn in_table(flows: &[FlowMod], t: Table) -> Vec<&FlowMod> {
        flows.iter().filter(|f| f.table_id == t.id()).collect()
    }

    /// The first of `flows` that `pred` accepts; panics naming `what` when none does.
    fn find<'a>(flows: &[&'a FlowMod], what: &str, pred: impl Fn(&FlowMod) -> bool) -> &'a FlowMod {
        flows
            .iter()
            .copied()
            .find(|f| pred(f))
            .unwrap_or_else(|| panic!("no flow {what}"))
    }

    /// The actions of `f`'s first instruction, which must apply them.
    fn first_actions(f: &FlowMod) -> &[Action] {
        let Instruction::ApplyActions(a) = &f.instructions[0] else {
            panic!("no actions")
        };
        a
    }

    #[test]
    fn every_table_has_a_default_flow_and_our_cookie() {
        let flows = desired_flows(&mk_node(), &[]);
        for t in Table::ALL {
            assert!(
                in_table(&flows, t)
                    .iter()
                    .any(|f| f.priority == 0 && f.fields.fields.is_empty()),
                "{} has no default flow",
                t.name()
            );
        }
        assert!(flows.iter().all(|f| f.cookie == COOKIE));
    }

    #[test]
    fn l2_forwarding_targets_local_pods_and_gateway() {
        let flows = desired_flows(&mk_node(), &[]);
        let l2 = in_table(&flows, Table::L2ForwardingCalc);
        let p1 = find(&l2, "for p1", |f| {
            f.fields.fields.contains(&Oxm::eth_dst([2, 0, 0, 0, 0, 2]))
        });
        assert!(first_actions(p1).contains(&Action::set_reg(1, 4, u32::MAX)));
        assert_eq!(
            l2.len(),
            1 + 2 + 1 + 1,
            "default + 2 Pods + gateway + global virtual MAC"
        );
    }

    #[test]
    fn trace_class_goes_to_controller_and_tunnel() {
        let flows = desired_flows(&mk_node(), &[]);
        let out = in_table(&flows, Table::Output);
        let tunnel: Vec<_> = out
            .iter()
            .filter(|f| f.priority == prio::TRACE_TUNNEL)
            .collect();
        assert_eq!(tunnel.len(), 2, "v4 + v6");
        assert!(tunnel.iter().all(|f| f.instructions
            == vec![Instruction::ApplyActions(vec![
                Action::output(1),
                Action::to_controller()
            ])]));
        let local: Vec<_> = out.iter().filter(|f| f.priority == prio::TRACE).collect();
        assert!(
            local.iter().all(|f| f.instructions
                == vec![Instruction::ApplyActions(vec![Action::to_controller()])])
        );
        assert!(
            local
                .iter()
                .all(|f| f.fields.fields.contains(&Oxm::ip_dscp(TRACE_DSCP)))
        );
    }

    #[test]
    fn routed_packets_to_local_pods_get_their_macs_rewritten() {
        let flows = desired_flows(&mk_node(), &[]);
        let l3 = in_table(&flows, Table::L3Forwarding);
        let p1 = find(&l3, "in L3Forwarding for p1", |f| {
            f.fields
                .fields
                .contains(&Oxm::ipv4_dst([10, 1, 0, 3].into()))
        });
        assert_eq!(
            p1.instructions[0],
            Instruction::ApplyActions(vec![
                Action::SetField(Oxm::eth_src([2, 0, 0, 0, 0, 0xfe])),
                Action::SetField(Oxm::eth_dst([2, 0, 0, 0, 0, 2])),
            ])
        );
        assert!(
            in_table(&flows, Table::L3DecTTL)
                .iter()
                .any(|f| f.instructions[0] == Instruction::ApplyActions(vec![Action::DecNwTtl]))
        );
    }

    #[test]
    fn peer_pod_cidrs_route_into_the_tunnel() {
        let peer: Peer = "10.2.0.0/24,fd00:2::/64=192.168.77.2".parse().unwrap();
        let flows = desired_flows(&mk_node(), &[peer]);
        let l3: Vec<_> = in_table(&flows, Table::L3Forwarding)
            .into_iter()
            .filter(|f| {
                f.fields
                    .fields
                    .contains(&Oxm::reg_masked(0, regs::FROM_POD, regs::PKT_SOURCE_MASK))
            })
            .collect();
        assert_eq!(l3.len(), 2, "one flow per Pod CIDR");
        let v4 = find(&l3, "routing 10.2.0.0/24", |f| {
            f.fields.fields.contains(&Oxm::masked(
                CLASS_BASIC,
                basic::IPV4_DST,
                &[10, 2, 0, 0],
                &[255, 255, 255, 0],
            ))
        });
        let a = first_actions(v4);
        assert!(a.contains(&Action::SetField(Oxm::tun_ipv4_dst(
            [192, 168, 77, 2].into()
        ))));
        assert!(a.contains(&Action::SetField(Oxm::eth_dst(GLOBAL_VIRTUAL_MAC))));
        assert!(
            in_table(&flows, Table::L2ForwardingCalc)
                .iter()
                .any(|f| f.fields.fields.contains(&Oxm::eth_dst(GLOBAL_VIRTUAL_MAC))),
            "the global virtual MAC targets the tunnel port"
        );
        assert!("10.2.0.0/24".parse::<Peer>().is_err());
        assert!("10.2.0.0/33=1.2.3.4".parse::<Peer>().is_err());
    }

    #[test]
    fn trace_packet_ins_pass_the_meter_when_there_is_one() {
        let flows = desired_flows_with(&mk_node(), &[], &TraceClass::default(), Some(257));
        let out = in_table(&flows, Table::Output);
        let tunnel = find(&out, "copying to the tunnel", |f| {
            f.priority == prio::TRACE_TUNNEL
        });
        assert_eq!(
            tunnel.instructions,
            vec![Instruction::ApplyActions(vec![
                Action::output(1),
                Action::Meter(257),
                Action::to_controller()
            ])],
            "the tunnel copy is never metered, only the packet-in"
        );
        let local = find(&out, "sending trace packets in", |f| {
            f.priority == prio::TRACE
        });
        assert_eq!(
            local.instructions,
            vec![Instruction::ApplyActions(vec![
                Action::Meter(257),
                Action::to_controller()
            ])]
        );
    }

    #[test]
    fn trace_class_and_live_tags_are_cleared_at_every_ingress_but_the_tunnel() {
        let tags = BTreeSet::from([7u8]);
        let class = TraceClass {
            live_tags: &tags,
            tunnel_key: None,
        };
        let flows = desired_flows_with(&mk_node(), &[], &class, None);
        let root = in_table(&flows, Table::PipelineRootClassifier);
        let clear = vec![
            Instruction::ApplyActions(vec![Action::SetField(Oxm::ip_dscp(0))]),
            Instruction::GotoTable(Table::Classifier.id()),
        ];
        let forged = find(&root, "clearing a forged trace DSCP", |f| {
            f.fields.fields.contains(&Oxm::ip_dscp(TRACE_DSCP))
        });
        assert_eq!(forged.instructions, clear);
        assert!(
            forged
                .fields
                .fields
                .contains(&Oxm::reg_masked(0, 0, regs::INJECTED_MARK)),
            "only a packet without this agent's injected mark"
        );
        assert!(
            !forged
                .fields
                .fields
                .iter()
                .any(|o| o.class == CLASS_BASIC && o.field == basic::IN_PORT),
            "whatever port it entered on"
        );
        let live = find(&root, "clearing a live tag", |f| {
            f.fields.fields.contains(&Oxm::ip_dscp(7))
        });
        assert_eq!(live.instructions, clear);
        let tunnel = find(&root, "passing the tunnel", |f| {
            f.fields.fields.contains(&Oxm::in_port(1))
        });
        assert!(tunnel.priority > forged.priority && tunnel.priority > live.priority);
        assert_eq!(
            tunnel.instructions,
            vec![Instruction::GotoTable(Table::Classifier.id())]
        );
        assert!(
            !in_table(
                &desired_flows(&mk_node(), &[]),
                Table::PipelineRootClassifier
            )
            .iter()
            .any(|f| f.fields.fields.contains(&Oxm::ip_dscp(7))),
            "a tag is cleared only while a live trace holds it"
        );
    }

    #[test]
    fn with_a_tunnel_key_the_tunnel_keeps_only_keyed_trace_packets_and_sends_the_key() {
        let tags = BTreeSet::from([7u8]);
        let class = TraceClass {
            live_tags: &tags,
            tunnel_key: Some(0xabcd),
        };
        let flows = desired_flows_with(&mk_node(), &[], &class, None);
        let root = in_table(&flows, Table::PipelineRootClassifier);
        for dscp in [TRACE_DSCP, 7] {
            let of = |p: u16| {
                root.iter()
                    .filter(|f| {
                        f.priority == p
                            && f.fields.fields.contains(&Oxm::in_port(1))
                            && f.fields.fields.contains(&Oxm::ip_dscp(dscp))
                    })
                    .collect::<Vec<_>>()
            };
            let keyed = of(prio::TUNNEL_KEYED);
            assert_eq!(keyed.len(), 2, "v4 + v6 for DSCP {dscp}");
            assert!(
                keyed
                    .iter()
                    .all(|f| f.fields.fields.contains(&tun_metadata0(0xabcd)))
            );
            let unkeyed = of(prio::TUNNEL_UNKEYED);
            assert_eq!(unkeyed.len(), 2);
            assert!(unkeyed.iter().all(|f| f.instructions
                == vec![
                    Instruction::ApplyActions(vec![Action::SetField(Oxm::ip_dscp(0))]),
                    Instruction::GotoTable(Table::Classifier.id()),
                ]));
        }
        const { assert!(prio::TUNNEL_KEYED > prio::TUNNEL_UNKEYED) };
        const { assert!(prio::TUNNEL_UNKEYED > prio::FROM_TUNNEL) };
        let out = in_table(&flows, Table::Output);
        let tunnel = find(&out, "trace output to the tunnel", |f| {
            f.priority == prio::TRACE_TUNNEL
        });
        assert_eq!(
            first_actions(tunnel)[..2],
            [Action::SetField(tun_metadata0(0xabcd)), Action::output(1)],
            "the key goes with the packet into the tunnel"
        );
        assert!(
            !desired_flows(&mk_node(), &[])
                .iter()
                .any(|f| f.fields.fields.contains(&tun_metadata0(0xabcd))),
            "no key, no tun_metadata0 (the switch may not have it mapped)"
        );
    }

    #[test]
    fn a_trace_packets_connection_is_committed_with_the_trace_mark() {
        let flows = desired_flows(&mk_node(), &[]);
        let commit = in_table(&flows, Table::ConntrackCommit);
        let traced: Vec<_> = commit
            .iter()
            .filter(|f| f.fields.fields.contains(&Oxm::ip_dscp(TRACE_DSCP)))
            .collect();
        assert_eq!(traced.len(), 2, "v4 + v6");
        let marked = Action::Ct {
            commit: true,
            zone: CT_ZONE,
            table: Some(Table::Output.id()),
            nat: None,
            exec: vec![Action::SetField(Oxm::ct_mark_masked(
                regs::TRACE_CT_MARK,
                regs::TRACE_CT_MARK,
            ))],
        };
        assert!(
            traced
                .iter()
                .any(|f| f.instructions == vec![Instruction::ApplyActions(vec![marked.clone()])])
        );
        assert!(traced.iter().all(|f| f.priority == prio::TRACE_COMMIT));
    }

    #[test]
    fn hairpin_outputs_to_in_port_below_trace_flows() {
        let flows = desired_flows(&mk_node(), &[]);
        let hp: Vec<_> = in_table(&flows, Table::Output)
            .into_iter()
            .filter(|f| f.priority == prio::HAIRPIN)
            .collect();
        assert_eq!(hp.len(), 3, "two Pods and the gateway");
        assert!(hp.iter().all(|f| f.instructions
            == vec![Instruction::ApplyActions(vec![Action::output(
                port::IN_PORT
            )])]));
        const { assert!(prio::HAIRPIN < prio::TRACE) };
    }

    #[test]
    fn spoofguard_pins_pod_mac_and_ip() {
        let flows = desired_flows(&mk_node(), &[]);
        let sg = in_table(&flows, Table::SpoofGuard);
        assert!(sg.iter().any(|f| {
            f.fields.fields.contains(&Oxm::in_port(3))
                && f.fields
                    .fields
                    .contains(&Oxm::ipv4_src([10, 1, 0, 2].into()))
                && f.fields.fields.contains(&Oxm::eth_src([2, 0, 0, 0, 0, 1]))
        }));
        // Nothing lets p0 send with p1's address.
        assert!(!sg.iter().any(|f| {
            f.fields.fields.contains(&Oxm::in_port(3))
                && f.fields
                    .fields
                    .contains(&Oxm::ipv4_src([10, 1, 0, 3].into()))
        }));
    }
}
