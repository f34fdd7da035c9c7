//! Per-trace flows of a live-traffic trace (reference §3.3, §3.6), computed purely from a
//! `LiveTrace` command and the Node's ports (no I/O; unit-tested). Installed and removed by
//! `Tracer::start_live` / `stop_live` (crate::trace); the policy drop tables report live tags
//! through the desired state's `live_tags` (see [`super::policy`]).
//!
//! ```text
//! ConntrackState     (sender) in_port = source Pod, +new+trk, addresses/protocol/ports,
//!                    no injected mark → set DSCP = tag, goto next (the connection continues)
//! L2ForwardingCalc   (receiver-only) dl_dst = destination Pod MAC, +new+trk, match
//!                    → set DSCP = tag, reg1 = Pod port + output marks, goto policy tables;
//!                    one priority up, the trace DSCP to that MAC: the same, untagged
//! Output             (every role) DSCP = tag → controller (unless droppedOnly);
//!                    to the tunnel: output as is (the next Node recognises the tag);
//!                    elsewhere: DSCP cleared, then output:reg1 (the packet is delivered)
//! ```
//!
//! Every flow carries the trace's own cookie ([`cookie`]), outside the pipeline's
//! [`COOKIE`](super::COOKIE), so the reconciler leaves them alone and one cookie delete removes
//! them; all have `hard_timeout` = the trace's timeout, so a lost stop cannot leak them.

use std::net::IpAddr;

use traceflow_proto::v1 as pb;

use crate::ovs::openflow::oxm::ct_state;
use crate::ovs::openflow::{Action, FlowMod, Instruction, Match, Oxm};
use crate::ports::NodePorts;

use traceflow_core::limits::{
    DEFAULT_TIMEOUT_SECS, MAX_TIMEOUT_SECS, PROTO_SCTP, PROTO_TCP, PROTO_UDP,
};

use super::flows::prio;
use super::regs;
use super::tables::Table;
use super::{ETH_IPV4, ETH_IPV6};

/// Above a receiver-only tagging flow: an injected trace's packet passes untagged.
const INJECTED_PASS: u16 = prio::TRACE + 1;

/// The cookie space of live-trace flows: the tag in the low byte.
pub const LIVE_COOKIE_BASE: u64 = 0x7f1c_0001_0000_0000;

/// How long the flows of `t` live (`hard_timeout`): its timeout, never unbounded.
pub fn lifetime(t: &pb::LiveTrace) -> std::time::Duration {
    std::time::Duration::from_secs(u64::from(hard_timeout(t)))
}

/// The command's timeout; none means Antrea's default, and no flow outlives the longest
/// timeout a trace may have.
fn hard_timeout(t: &pb::LiveTrace) -> u16 {
    match t.timeout_seconds {
        0 => DEFAULT_TIMEOUT_SECS,
        s => u16::try_from(s).map_or(MAX_TIMEOUT_SECS, |s| s.min(MAX_TIMEOUT_SECS)),
    }
}

/// The cookie of the flows of the live trace tagged `tag`.
pub fn cookie(tag: u8) -> u64 {
    LIVE_COOKIE_BASE | u64::from(tag)
}

/// Why a `LiveTrace` command cannot be turned into flows (the reason goes back to the adapter).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LiveError {
    #[error("invalid live-traffic DSCP tag {0}")]
    BadTag(u32),
    #[error("source Pod {0} not found on this Node")]
    NoSourcePod(String),
    #[error("destination Pod {0} not found on this Node")]
    NoDestinationPod(String),
    #[error("invalid IP address {0:?}")]
    BadIp(String),
    #[error("invalid port {0}")]
    BadPort(i32),
}

/// The match on address `s` of family `ipv6` (source when `src`); `None` when empty.
fn addr(s: &str, ipv6: bool, src: bool) -> Result<Option<Oxm>, LiveError> {
    if s.is_empty() {
        return Ok(None);
    }
    match (s.parse::<IpAddr>(), src) {
        (Ok(IpAddr::V4(a)), true) if !ipv6 => Ok(Some(Oxm::ipv4_src(a))),
        (Ok(IpAddr::V4(a)), false) if !ipv6 => Ok(Some(Oxm::ipv4_dst(a))),
        (Ok(IpAddr::V6(a)), true) if ipv6 => Ok(Some(Oxm::ipv6_src(a))),
        (Ok(IpAddr::V6(a)), false) if ipv6 => Ok(Some(Oxm::ipv6_dst(a))),
        _ => Err(LiveError::BadIp(s.to_string())),
    }
}

fn port(p: i32) -> Result<Option<u16>, LiveError> {
    match p {
        0 => Ok(None),
        p => u16::try_from(p)
            .map(Some)
            .map_err(|_| LiveError::BadPort(p)),
    }
}

/// The (source, destination) port fields of `protocol`, if it has ports.
type PortFields = (fn(u16) -> Oxm, fn(u16) -> Oxm);

fn port_fields(protocol: i32) -> Option<PortFields> {
    match u8::try_from(protocol).ok()? {
        PROTO_TCP => Some((Oxm::tcp_src, Oxm::tcp_dst)),
        PROTO_UDP => Some((Oxm::udp_src, Oxm::udp_dst)),
        PROTO_SCTP => Some((Oxm::sctp_src, Oxm::sctp_dst)),
        _ => None,
    }
}

/// The traffic match of `t`: family, addresses, protocol and ports, new tracked connections.
fn traffic(t: &pb::LiveTrace) -> Result<Match, LiveError> {
    let mut m = Match::new().with(Oxm::eth_type(if t.ipv6 { ETH_IPV6 } else { ETH_IPV4 }));
    let tracked = ct_state::NEW | ct_state::TRK;
    m = m.with(Oxm::ct_state(tracked, tracked));
    let addrs = [
        addr(&t.src_ip, t.ipv6, true)?,
        addr(&t.dst_ip, t.ipv6, false)?,
    ];
    m.fields.extend(addrs.into_iter().flatten());
    if let Ok(proto) = u8::try_from(t.protocol)
        && proto != 0
    {
        m = m.with(Oxm::ip_proto(proto));
        if let Some((src, dst)) = port_fields(t.protocol) {
            let (sp, dp) = (port(t.src_port)?, port(t.dst_port)?);
            m.fields.extend(sp.map(src).into_iter().chain(dp.map(dst)));
        }
    }
    Ok(m)
}

/// The tag of `t` if it is one of the 6-bit values a live trace may use (not 0, not the
/// injected-trace class).
fn tag_of(t: &pb::LiveTrace) -> Result<u8, LiveError> {
    match u8::try_from(t.dscp_tag) {
        Ok(tag) if tag != 0 && tag < 64 && tag != super::TRACE_DSCP => Ok(tag),
        _ => Err(LiveError::BadTag(t.dscp_tag)),
    }
}

/// Every flow live trace `t` needs on this Node, or why it cannot run here.
pub fn live_flows(
    t: &pb::LiveTrace,
    ports: &NodePorts,
    packet_in_meter: Option<u32>,
    tunnel_key: Option<u64>,
) -> Result<Vec<FlowMod>, LiveError> {
    let tag = tag_of(t)?;
    let hard_timeout = hard_timeout(t);
    let flow = |table: Table, priority: u16, m: Match, ins: Vec<Instruction>| {
        let mut f = FlowMod::add(table.id(), priority, cookie(tag), m, ins);
        f.hard_timeout = hard_timeout;
        f
    };
    let mut f = Vec::new();
    let role = pb::LiveTraceRole::try_from(t.role).unwrap_or(pb::LiveTraceRole::Any);
    match role {
        pb::LiveTraceRole::Sender => {
            let key = format!("{}/{}", t.in_pod_namespace, t.in_pod_name);
            let pod = ports
                .pod(&t.in_pod_namespace, &t.in_pod_name)
                .ok_or(LiveError::NoSourcePod(key))?;
            f.push(flow(
                Table::ConntrackState,
                prio::TRACE,
                // Never an injected trace's packet (the packet-out's mark): retagged, it would
                // be reported as this live trace's traffic and lost to its own trace.
                traffic(t)?
                    .with(Oxm::in_port(pod.port.ofport))
                    .with(Oxm::reg_masked(0, 0, regs::INJECTED_MARK)),
                vec![
                    Instruction::ApplyActions(vec![Action::SetField(Oxm::ip_dscp(tag))]),
                    Instruction::GotoTable(
                        Table::ConntrackState
                            .next()
                            .map_or(Table::ConntrackState.id(), Table::id),
                    ),
                ],
            ));
        }
        pb::LiveTraceRole::ReceiverOnly => {
            let wanted: Option<IpAddr> = t.dst_pod_ip.parse().ok();
            let pod = ports
                .pods
                .iter()
                .find(|p| wanted.is_some_and(|w| p.port.ips.contains(&w)))
                .ok_or_else(|| LiveError::NoDestinationPod(t.dst_pod_ip.clone()))?;
            let forward = vec![
                Action::set_reg(regs::TARGET_OFPORT_REG, pod.port.ofport, u32::MAX),
                Action::set_reg(0, regs::OUTPUT_TO_OFPORT_MARKS, regs::OUTPUT_MARKS_MASK),
            ];
            f.push(flow(
                Table::L2ForwardingCalc,
                prio::TRACE,
                traffic(t)?.with(Oxm::eth_dst(pod.port.mac.0)),
                vec![
                    Instruction::ApplyActions(
                        [vec![Action::SetField(Oxm::ip_dscp(tag))], forward.clone()].concat(),
                    ),
                    Instruction::GotoTable(Table::AntreaPolicyIngressRule.id()),
                ],
            ));
            // An injected trace's packet to the same Pod (trace DSCP; from the tunnel it has
            // no mark) goes the same way untagged: it stays its own trace's.
            for et in [ETH_IPV4, ETH_IPV6] {
                f.push(flow(
                    Table::L2ForwardingCalc,
                    INJECTED_PASS,
                    Match::new()
                        .with(Oxm::eth_type(et))
                        .with(Oxm::ip_dscp(super::TRACE_DSCP))
                        .with(Oxm::eth_dst(pod.port.mac.0)),
                    vec![
                        Instruction::ApplyActions(forward.clone()),
                        Instruction::GotoTable(Table::AntreaPolicyIngressRule.id()),
                    ],
                ));
            }
        }
        pb::LiveTraceRole::Any | pb::LiveTraceRole::Unspecified => {}
    }

    // Output: report (unless droppedOnly) and deliver, clearing the tag except to the tunnel.
    let to_controller: Vec<Action> = if t.dropped_only {
        Vec::new()
    } else {
        packet_in_meter
            .map(Action::Meter)
            .into_iter()
            .chain([Action::to_controller()])
            .collect()
    };
    let et = if t.ipv6 { ETH_IPV6 } else { ETH_IPV4 };
    let marked = || {
        Match::new()
            .with(Oxm::reg_masked(
                0,
                regs::OUTPUT_TO_OFPORT_MARK,
                regs::OUTPUT_MODE_MASK,
            ))
            .with(Oxm::eth_type(et))
            .with(Oxm::ip_dscp(tag))
    };
    if let Some(tun) = ports.tunnel_ofport {
        f.push(flow(
            Table::Output,
            prio::TRACE_TUNNEL,
            marked().with(Oxm::reg(regs::TARGET_OFPORT_REG, tun)),
            vec![Instruction::ApplyActions(
                [
                    to_controller.clone(),
                    // The receiving Node keeps the tag only with the cluster's key.
                    tunnel_key
                        .map(|k| Action::SetField(super::flows::tun_metadata0(k)))
                        .into_iter()
                        .collect(),
                    vec![Action::output(tun)],
                ]
                .concat(),
            )],
        ));
    }
    f.push(flow(
        Table::Output,
        prio::TRACE,
        marked(),
        vec![Instruction::ApplyActions(
            [
                to_controller,
                vec![
                    Action::SetField(Oxm::ip_dscp(0)),
                    Action::OutputReg {
                        reg: regs::TARGET_OFPORT_REG,
                        max_len: 0,
                    },
                ],
            ]
            .concat(),
        )],
    ));
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::fixtures::mk_node;

    fn sender() -> pb::LiveTrace {
        pb::LiveTrace {
            trace_uid: "u1".into(),
            dscp_tag: 7,
            role: pb::LiveTraceRole::Sender as i32,
            in_pod_namespace: "default".into(),
            in_pod_name: "p0".into(),
            src_ip: "10.10.1.2".into(),
            dst_ip: "10.10.1.3".into(),
            protocol: 6,
            dst_port: 80,
            timeout_seconds: 20,
            ..Default::default()
        }
    }

    #[test]
    fn sender_tags_new_connections_from_the_pod_port_and_output_clears_the_tag() {
        let ports = mk_node();
        let flows = live_flows(&sender(), &ports, None, None);
        let Ok(flows) = flows else {
            panic!("no flows: {flows:?}");
        };
        assert!(
            flows
                .iter()
                .all(|f| f.cookie == cookie(7) && f.hard_timeout == 20)
        );
        let cs: Vec<_> = flows
            .iter()
            .filter(|f| f.table_id == Table::ConntrackState.id())
            .collect();
        assert_eq!(cs.len(), 1);
        let m = &cs[0].fields.fields;
        assert!(m.contains(&Oxm::tcp_dst(80)) && m.contains(&Oxm::ip_proto(6)));
        assert!(m.contains(&Oxm::in_port(3)), "p0's port");
        assert!(
            m.contains(&Oxm::reg_masked(0, 0, regs::INJECTED_MARK)),
            "an injected trace's packet from p0 is never tagged"
        );
        let out: Vec<_> = flows
            .iter()
            .filter(|f| f.table_id == Table::Output.id() && f.priority == prio::TRACE)
            .collect();
        assert_eq!(out.len(), 1);
        let Instruction::ApplyActions(actions) = &out[0].instructions[0] else {
            panic!("not apply-actions");
        };
        assert!(actions.contains(&Action::to_controller()));
        assert!(actions.contains(&Action::SetField(Oxm::ip_dscp(0))));
    }

    /// A destination-only trace tags new connections to its Pod, but an injected trace's
    /// packet (trace DSCP) to that Pod passes one priority up, untagged, the same way.
    #[test]
    fn receiver_only_tags_traffic_to_its_pod_but_not_injected_traces() {
        let t = pb::LiveTrace {
            role: pb::LiveTraceRole::ReceiverOnly as i32,
            in_pod_name: String::new(),
            src_ip: String::new(),
            dst_pod_ip: "10.1.0.3".into(),
            ..sender()
        };
        let flows = live_flows(&t, &mk_node(), None, None).unwrap_or_default();
        let l2: Vec<_> = flows
            .iter()
            .filter(|f| f.table_id == Table::L2ForwardingCalc.id())
            .collect();
        let tagging: Vec<_> = l2.iter().filter(|f| f.priority == prio::TRACE).collect();
        let passing: Vec<_> = l2.iter().filter(|f| f.priority == INJECTED_PASS).collect();
        assert_eq!((tagging.len(), passing.len()), (1, 2), "{l2:?}");
        for f in &passing {
            assert!(
                f.fields
                    .fields
                    .contains(&Oxm::ip_dscp(super::super::TRACE_DSCP))
            );
            let Instruction::ApplyActions(actions) = &f.instructions[0] else {
                panic!("not apply-actions");
            };
            assert!(
                actions.contains(&Action::set_reg(regs::TARGET_OFPORT_REG, 4, u32::MAX)),
                "to p1's port"
            );
            assert!(
                !actions.contains(&Action::SetField(Oxm::ip_dscp(7))),
                "an injected trace's packet is not retagged: {actions:?}"
            );
        }
    }

    #[test]
    fn addresses_and_ports_match_their_own_fields() {
        let t = pb::LiveTrace {
            ipv6: true,
            src_ip: "fd00::2".into(),
            dst_ip: "fd00::3".into(),
            protocol: 132,
            src_port: 5000,
            dst_port: 9000,
            ..sender()
        };
        let Ok(m) = traffic(&t) else {
            panic!("no match for {t:?}");
        };
        for want in [
            Oxm::ipv6_src("fd00::2".parse().unwrap_or(std::net::Ipv6Addr::UNSPECIFIED)),
            Oxm::ipv6_dst("fd00::3".parse().unwrap_or(std::net::Ipv6Addr::UNSPECIFIED)),
            Oxm::sctp_src(5000),
            Oxm::sctp_dst(9000),
        ] {
            assert!(m.fields.contains(&want), "{want:?} missing from {m:?}");
        }
        let wrong_family = pb::LiveTrace {
            ipv6: false,
            ..t.clone()
        };
        assert_eq!(
            traffic(&wrong_family).err(),
            Some(LiveError::BadIp("fd00::2".into()))
        );
    }

    #[test]
    fn dropped_only_reports_nothing_from_output() {
        let t = pb::LiveTrace {
            dropped_only: true,
            ..sender()
        };
        let flows = live_flows(&t, &mk_node(), None, None).unwrap_or_default();
        assert!(!flows.is_empty());
        assert!(flows.iter().all(|f| {
            f.instructions.iter().all(|i| match i {
                Instruction::ApplyActions(a) => !a.contains(&Action::to_controller()),
                _ => true,
            })
        }));
    }

    #[test]
    fn bad_commands_are_refused() {
        let ports = mk_node();
        let bad_tag = pb::LiveTrace {
            dscp_tag: 63,
            ..sender()
        };
        assert_eq!(
            live_flows(&bad_tag, &ports, None, None),
            Err(LiveError::BadTag(63))
        );
        let ghost = pb::LiveTrace {
            in_pod_name: "ghost".into(),
            ..sender()
        };
        assert_eq!(
            live_flows(&ghost, &ports, None, None),
            Err(LiveError::NoSourcePod("default/ghost".into()))
        );
    }
}
