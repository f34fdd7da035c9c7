//! Which reports a trace takes (ours, not Antrea's): a Node's report is folded into the trace's
//! record only once it is proven; any other is refused, counted by why ([`Refusal`]), and
//! never stored or relayed. Pure: the coordinator calls these with the trace's record and the
//! inventory.
//!
//! ```text
//!  report ─▶ bounds (observations per result, encoded bytes) ─▶ the trace, by id or tag
//!   injected ─▶ secret == the trace's ─▶ a Node of the report's leg ─▶ its first result there
//!               (a Node not yet named is held until a later result names it, see below)
//!   live     ─▶ a Node of the plan ─▶ packet matches the filter, then the captured tuple
//!               ─▶ its first result
//! ```
//!
//! The Nodes of an injected trace's leg ([`leg_parts`]): forward, the sender, the Node of the
//! destination Pod (or of the Pod owning the destination IP), the Node of the Pod a sender's LB
//! observation chose, and every Node a tunnel Output observation of the leg names by its
//! underlay address (an egress Node, a Service endpoint's Node); reply, the Node the reply was
//! injected at, the client's Node (the sender) and the tunnels of the reply leg. Reports reach
//! the adapter over one stream per Node, so a receiver may report before the result naming it
//! arrives: a report with the right secret from a Node not named yet is held (at most
//! [`MAX_HELD`] per trace) and judged again after each accepted result; one still held when
//! the trace ends is refused as [`Refusal::ForeignNode`].

use std::net::IpAddr;

use prost::Message;
use traceflow_core::{Destination, TraceSpec, counters, outcome};
use traceflow_proto::v1::{self as pb, Action, Component};

use super::record::TraceRecord;
use crate::inventory::Index;

/// Most observations one result may carry. Antrea's pipeline yields fewer than 20 per Node
/// (SpoofGuard, LB, a few policy tables, Egress, Output); ours at most 8 today. 64 leaves room
/// for a longer pipeline and keeps a snapshot of many Nodes small.
pub const MAX_OBSERVATIONS: usize = 64;
/// Most encoded bytes (prost `encoded_len`) of one report. A real one is well under 2 KiB (64
/// observations of long policy names stay under 40 KiB); the agent stream's own limit
/// (`MAX_AGENT_MESSAGE_BYTES`, 4 MiB) is for node state, not for what a snapshot repeats.
pub const MAX_REPORT_BYTES: usize = 64 * 1024;
/// Reports with the right secret from Nodes not yet named, held per trace.
pub const MAX_HELD: usize = 4;

/// Why a report was refused; each has its counter ([`Refusal::counter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the reporting Node has no part in this leg of the trace")]
    ForeignNode,
    #[error("the report does not carry the trace's secret")]
    BadSecret,
    #[error("the Node already reported this leg of the trace")]
    Duplicate,
    #[error("the report has more than {MAX_OBSERVATIONS} observations or {MAX_REPORT_BYTES} bytes")]
    Oversized,
    #[error("the reported packet is not the traced connection")]
    FilterMismatch,
}

impl Refusal {
    /// The name it is counted under (`traceflow_core::counters::ADAPTER`).
    pub fn counter(self) -> &'static str {
        match self {
            Refusal::ForeignNode => counters::REPORTS_REFUSED_FOREIGN_NODE,
            Refusal::BadSecret => counters::REPORTS_REFUSED_BAD_SECRET,
            Refusal::Duplicate => counters::REPORTS_REFUSED_DUPLICATE,
            Refusal::Oversized => counters::REPORTS_REFUSED_OVERSIZED,
            Refusal::FilterMismatch => counters::REPORTS_REFUSED_FILTER_MISMATCH,
        }
    }
}

/// What a report may not exceed, before anything else is looked at.
pub fn check_bounds(report: &pb::TraceReport) -> Result<(), Refusal> {
    let observations = report.result.as_ref().map_or(0, |r| r.observations.len());
    if observations > MAX_OBSERVATIONS || report.encoded_len() > MAX_REPORT_BYTES {
        return Err(Refusal::Oversized);
    }
    Ok(())
}

/// The leg a report belongs to.
pub fn leg_of(report: &pb::TraceReport) -> pb::Direction {
    match &report.result {
        Some(r) if outcome::is_reply(r) => pb::Direction::Reply,
        _ => pb::Direction::Forward,
    }
}

fn in_leg(r: &pb::NodeResult, leg: pb::Direction) -> bool {
    outcome::is_reply(r) == (leg == pb::Direction::Reply)
}

/// Whether `node` already has a result in `leg`.
pub fn has_result(results: &[pb::NodeResult], node: &str, leg: pb::Direction) -> bool {
    results.iter().any(|r| r.node == node && in_leg(r, leg))
}

/// What a Node is to a leg of an injected trace (the timeout reason says it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Hosts the source Pod; injects the forward packet.
    Sender,
    /// Hosts the destination Pod (or the Pod owning the destination IP, or the endpoint the
    /// sender's LB chose).
    Destination,
    /// A tunnel Output observation of the leg names its underlay address.
    Tunnel,
    /// Injects the reply (the Node the forward packet was delivered on).
    ReplySender,
    /// Hosts the client the reply goes back to (the forward leg's sender).
    Client,
}

impl Part {
    /// Whose Node it is, in a reason: `no report from Node n2 (the destination's)`.
    pub fn whose(self) -> &'static str {
        match self {
            Part::Sender => "the sender's",
            Part::Destination => "the destination's",
            Part::Tunnel => "the sender tunnelled the packet there",
            Part::ReplySender => "the reply's sender",
            Part::Client => "the client's",
        }
    }
}

/// The Node whose underlay (InternalIP) address is `ip`.
pub fn node_of_underlay_ip<'a>(index: &'a Index, ip: &str) -> Option<&'a str> {
    let ip: IpAddr = ip.parse().ok()?;
    index
        .nodes()
        .find(|n| {
            n.internal_ips
                .iter()
                .any(|a| a.split('/').next().and_then(|a| a.parse::<IpAddr>().ok()) == Some(ip))
        })
        .map(|n| n.name.as_str())
}

fn pod_node<'a>(index: &'a Index, ip: &str) -> Option<&'a str> {
    let ip = ip.parse().ok()?;
    index
        .pod_by_ip(ip)
        .map(|p| p.node.as_str())
        .filter(|n| !n.is_empty())
}

/// The Nodes of `leg` of an injected trace, each once with its first [`Part`], as the accepted
/// results and the inventory show them now (module doc). `reply_from`: the Node the reply was
/// injected at, `None` before (no Node may report the reply leg then).
pub fn leg_parts(
    record: &TraceRecord,
    leg: pb::Direction,
    reply_from: Option<&str>,
    index: &Index,
) -> Vec<(String, Part)> {
    let mut parts: Vec<(String, Part)> = Vec::new();
    let mut add = |node: &str, part: Part| {
        if !node.is_empty() && !parts.iter().any(|(n, _)| n == node) {
            parts.push((node.to_string(), part));
        }
    };
    let leg_obs = || {
        record
            .results
            .iter()
            .filter(move |r| in_leg(r, leg))
            .flat_map(|r| r.observations.iter())
    };
    match leg {
        pb::Direction::Forward => {
            add(&record.sender_node, Part::Sender);
            if let Some(n) = super::resolve::destination_node(&record.spec, index) {
                add(n, Part::Destination);
            }
            for o in leg_obs().filter(|o| o.component == Component::Lb as i32) {
                if let Some(n) = pod_node(index, &o.translated_dst_ip) {
                    add(n, Part::Destination);
                }
            }
        }
        pb::Direction::Reply => {
            let Some(from) = reply_from else {
                return parts;
            };
            add(from, Part::ReplySender);
            add(&record.sender_node, Part::Client);
        }
    }
    for o in leg_obs().filter(|o| !o.tunnel_dst_ip.is_empty()) {
        if let Some(n) = node_of_underlay_ip(index, &o.tunnel_dst_ip) {
            add(n, Part::Tunnel);
        }
    }
    parts
}

/// A short text of an observation for reasons: `Forwarding Output Forwarded`.
pub fn describe(o: &pb::Observation) -> String {
    let component = Component::try_from(o.component).map_or("unknown component", |c| match c {
        Component::Unspecified => "unknown component",
        c => c.as_str_name(),
    });
    let action = Action::try_from(o.action).map_or("unknown action", |a| match a {
        Action::Unspecified => "unknown action",
        a => a.as_str_name(),
    });
    // A peer's string: only a table-name-like word, and short.
    let info: String = o
        .component_info
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .take(64)
        .collect();
    if info.is_empty() {
        format!("{component} {action}")
    } else {
        format!("{component} {info} {action}")
    }
}

/// The Node's last observation in `leg`, in hop order (results are kept in it).
pub fn last_reported(results: &[pb::NodeResult], leg: pb::Direction) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for r in results.iter().filter(|r| in_leg(r, leg)) {
        let Some(o) = r.observations.last() else {
            continue;
        };
        out.retain(|(n, _)| *n != r.node);
        out.push((r.node.clone(), describe(o)));
    }
    out
}

/// What a live trace's tagged packets must be: the match of the plan's `LiveTrace` (what every
/// Node's flows tag and report), with the translations the pipeline makes to it on the way
/// (a Service's DNAT to an endpoint and its targetPort, a hairpin's SNAT to the gateway).
/// Empty lists and 0 match anything, as in the flows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveFilter {
    pub ipv6: bool,
    /// The source address, then what it may be translated to.
    pub src_ips: Vec<IpAddr>,
    /// The destination address, then what it may be translated to.
    pub dst_ips: Vec<IpAddr>,
    /// IP protocol number; 0 = any.
    pub protocol: i32,
    /// 0 = any.
    pub src_port: i32,
    /// The destination port, then what it may be translated to; empty = any.
    pub dst_ports: Vec<i32>,
    /// A Service destination: its ports and its endpoints' ports, which its DNAT turns into
    /// one another.
    pub dnat_ports: Vec<i32>,
}

/// The filter of a live trace planned as `cmd` (the tagging Node's command) for `spec`: a
/// Service destination adds its endpoints (IPs, the targetPorts of the traced port or of
/// every port when none is traced) and, for a hairpin, the source Node's gateway addresses.
pub fn live_filter(cmd: &pb::LiveTrace, spec: &TraceSpec, index: &Index) -> LiveFilter {
    let parse = |s: &str| s.parse::<IpAddr>().ok();
    let mut f = LiveFilter {
        ipv6: cmd.ipv6,
        src_ips: parse(&cmd.src_ip).into_iter().collect(),
        dst_ips: parse(&cmd.dst_ip).into_iter().collect(),
        protocol: cmd.protocol,
        src_port: cmd.src_port,
        dst_ports: (cmd.dst_port != 0)
            .then_some(cmd.dst_port)
            .into_iter()
            .collect(),
        dnat_ports: Vec::new(),
    };
    let Destination::Service(svc) = &spec.destination else {
        return f;
    };
    let Some(state) = crate::nodestate::compute::service_state_of(index, &svc.namespace, &svc.name)
    else {
        return f;
    };
    let mut hairpin = false;
    fn add_port(ports: &mut Vec<i32>, p: i32) {
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    for port in &state.ports {
        let traced = cmd.dst_port != 0 && port.port == cmd.dst_port;
        add_port(&mut f.dnat_ports, port.port);
        for ep in &port.endpoints {
            if let Some(ip) = parse(&ep.ip).filter(|ip| ip.is_ipv6() == f.ipv6) {
                if !f.dst_ips.contains(&ip) {
                    f.dst_ips.push(ip);
                }
                hairpin |= f.src_ips.first() == Some(&ip);
            }
            add_port(&mut f.dnat_ports, ep.port);
            if traced {
                add_port(&mut f.dst_ports, ep.port);
            }
        }
    }
    if hairpin {
        let src_node = spec
            .source_pod()
            .and_then(|p| index.pod(&p.namespace, &p.name))
            .and_then(|p| index.node(&p.node));
        for cidr in src_node.map(|n| n.pod_cidrs.as_slice()).unwrap_or_default() {
            if let Some(gw) = gateway_of(cidr).filter(|gw| gw.is_ipv6() == f.ipv6) {
                f.src_ips.push(gw);
            }
        }
    }
    f
}

/// A Pod CIDR's gateway: its first address (Antrea's `antrea-gw0`).
fn gateway_of(cidr: &str) -> Option<IpAddr> {
    match cidr.parse::<ipnet::IpNet>().ok()? {
        ipnet::IpNet::V4(n) => Some(IpAddr::from(
            u32::from(n.network()).checked_add(1)?.to_be_bytes(),
        )),
        ipnet::IpNet::V6(n) => Some(IpAddr::from(
            u128::from(n.network()).checked_add(1)?.to_be_bytes(),
        )),
    }
}

/// A packet's IP protocol number: its header's, else what its transport header implies.
fn protocol_of(p: &pb::Packet, ipv6: bool) -> Option<i32> {
    if let Some(h) = &p.ipv6_header
        && let Some(n) = h.next_header
    {
        return Some(n);
    }
    if let Some(h) = &p.ip_header
        && h.protocol != 0
    {
        return Some(h.protocol);
    }
    let t = p.transport_header.as_ref()?;
    if t.tcp.is_some() {
        Some(6)
    } else if t.udp.is_some() {
        Some(17)
    } else if t.sctp.is_some() {
        Some(132)
    } else if t.icmp.is_some() {
        Some(if ipv6 { 58 } else { 1 })
    } else {
        None
    }
}

fn ports_of(p: &pb::Packet) -> Option<(i32, i32)> {
    let t = p.transport_header.as_ref()?;
    if let Some(h) = &t.tcp {
        Some((h.src_port, h.dst_port))
    } else if let Some(h) = &t.udp {
        Some((h.src_port, h.dst_port))
    } else {
        t.sctp.as_ref().map(|h| (h.src_port, h.dst_port))
    }
}

fn icmp_id(p: &pb::Packet) -> Option<i32> {
    p.transport_header.as_ref()?.icmp.as_ref().map(|i| i.id)
}

impl LiveFilter {
    /// Whether `p` (a report's packet) is one the trace's flows tag, translated or not.
    pub fn matches(&self, p: &pb::Packet) -> bool {
        let (Ok(src), Ok(dst)) = (p.src_ip.parse::<IpAddr>(), p.dst_ip.parse::<IpAddr>()) else {
            return false;
        };
        if src.is_ipv6() != self.ipv6 || dst.is_ipv6() != self.ipv6 {
            return false;
        }
        let listed = |ips: &[IpAddr], ip: IpAddr| ips.is_empty() || ips.contains(&ip);
        if !listed(&self.src_ips, src) || !listed(&self.dst_ips, dst) {
            return false;
        }
        if self.protocol != 0 && protocol_of(p, self.ipv6) != Some(self.protocol) {
            return false;
        }
        if self.src_port == 0 && self.dst_ports.is_empty() {
            return true;
        }
        let Some((sport, dport)) = ports_of(p) else {
            return false;
        };
        (self.src_port == 0 || sport == self.src_port)
            && (self.dst_ports.is_empty() || self.dst_ports.contains(&dport))
    }

    /// Whether `seen` is the connection `captured` (the tagging Node's packet) is: the same
    /// 5-tuple (and ICMP echo id) but for the translations this filter allows, i.e. a source
    /// or destination both are in the filter's list for it.
    pub fn same_connection(&self, captured: &pb::Packet, seen: &pb::Packet) -> bool {
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        let (Some(cs), Some(cd), Some(ss), Some(sd)) = (
            ip(&captured.src_ip),
            ip(&captured.dst_ip),
            ip(&seen.src_ip),
            ip(&seen.dst_ip),
        ) else {
            return false;
        };
        fn both_in<T: PartialEq>(list: &[T], a: T, b: T) -> bool {
            list.contains(&a) && list.contains(&b)
        }
        let src_ok = cs == ss || both_in(&self.src_ips, cs, ss);
        let dnat = cd != sd;
        let dst_ok = !dnat || both_in(&self.dst_ips, cd, sd);
        let proto_ok = protocol_of(captured, self.ipv6) == protocol_of(seen, self.ipv6);
        let ports_ok = match (ports_of(captured), ports_of(seen)) {
            (Some((cs, cd)), Some((ss, sd))) => {
                cs == ss && (cd == sd || (dnat && both_in(&self.dnat_ports, cd, sd)))
            }
            (None, None) => true,
            _ => false,
        };
        let icmp_ok = match (icmp_id(captured), icmp_id(seen)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        src_ok && dst_ok && proto_ok && ports_ok && icmp_ok
    }
}

/// The packet a live report is judged by: what the Node saw, else what it captured.
pub fn judged_packet(report: &pb::TraceReport) -> Option<&pb::Packet> {
    report
        .seen_packet
        .as_ref()
        .or(report.captured_packet.as_ref())
}

/// A live report's packets against the filter and, once known, the trace's captured packet.
pub fn check_live_packet(
    filter: &LiveFilter,
    captured: Option<&pb::Packet>,
    report: &pb::TraceReport,
) -> Result<(), Refusal> {
    let Some(seen) = judged_packet(report) else {
        return Err(Refusal::FilterMismatch);
    };
    let reported = std::iter::once(seen).chain(report.captured_packet.as_ref());
    for p in reported {
        if !filter.matches(p) || captured.is_some_and(|c| !filter.same_connection(c, p)) {
            return Err(Refusal::FilterMismatch);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(src: &str, dst: &str, proto: i32, ports: Option<(i32, i32)>) -> pb::Packet {
        pb::Packet {
            src_ip: src.into(),
            dst_ip: dst.into(),
            ip_header: Some(pb::IpHeader {
                protocol: proto,
                ..Default::default()
            }),
            transport_header: ports.map(|(s, d)| pb::TransportHeader {
                tcp: Some(pb::TcpHeader {
                    src_port: s,
                    dst_port: d,
                    flags: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// p0 (10.10.1.2) to Service 10.96.0.10:80, endpoints 10.10.2.3 and 10.10.1.2 on 8080.
    fn service_filter() -> LiveFilter {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        LiveFilter {
            ipv6: false,
            src_ips: vec![ip("10.10.1.2"), ip("10.10.1.1")],
            dst_ips: vec![ip("10.96.0.10"), ip("10.10.2.3"), ip("10.10.1.2")],
            protocol: 6,
            src_port: 0,
            dst_ports: vec![80, 8080],
            dnat_ports: vec![80, 8080],
        }
    }

    #[test]
    fn a_service_packet_matches_before_and_after_dnat_but_not_elsewhere() {
        let f = service_filter();
        let sent = packet("10.10.1.2", "10.96.0.10", 6, Some((40000, 80)));
        let dnated = packet("10.10.1.2", "10.10.2.3", 6, Some((40000, 8080)));
        assert!(f.matches(&sent) && f.matches(&dnated));
        assert!(f.same_connection(&sent, &dnated));
        assert!(f.same_connection(&dnated, &dnated));
        // Another source, destination, protocol or port is not the trace's traffic.
        for other in [
            packet("10.10.1.9", "10.96.0.10", 6, Some((40000, 80))),
            packet("10.10.1.2", "10.10.2.9", 6, Some((40000, 80))),
            packet("10.10.1.2", "10.96.0.10", 17, Some((40000, 80))),
            packet("10.10.1.2", "10.96.0.10", 6, Some((40000, 81))),
            packet("fd00::2", "10.96.0.10", 6, Some((40000, 80))),
        ] {
            assert!(!f.matches(&other), "{other:?}");
        }
        // Another connection of the same filter is not the captured one.
        let next = packet("10.10.1.2", "10.10.2.3", 6, Some((40001, 8080)));
        assert!(f.matches(&next) && !f.same_connection(&sent, &next));
    }

    #[test]
    fn a_report_without_any_packet_is_a_mismatch() {
        let report = pb::TraceReport::default();
        assert_eq!(
            check_live_packet(&service_filter(), None, &report),
            Err(Refusal::FilterMismatch)
        );
    }

    #[test]
    fn bounds_count_observations_and_bytes() {
        let with = |n: usize, info: &str| pb::TraceReport {
            result: Some(pb::NodeResult {
                observations: (0..n)
                    .map(|_| pb::Observation {
                        component_info: info.into(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(check_bounds(&with(MAX_OBSERVATIONS, "Output")), Ok(()));
        assert_eq!(
            check_bounds(&with(MAX_OBSERVATIONS + 1, "")),
            Err(Refusal::Oversized)
        );
        let long = "x".repeat(MAX_REPORT_BYTES / 4);
        assert_eq!(check_bounds(&with(4, &long)), Err(Refusal::Oversized));
    }

    #[test]
    fn an_observation_is_described_with_a_clean_table_name() {
        let o = pb::Observation {
            component: Component::Forwarding as i32,
            component_info: "Output\n; forged".into(),
            action: Action::Forwarded as i32,
            ..Default::default()
        };
        assert_eq!(describe(&o), "Forwarding Outputforged Forwarded");
        assert_eq!(
            describe(&pb::Observation::default()),
            "unknown component unknown action"
        );
    }

    #[test]
    fn gateways_are_the_first_address_of_the_pod_cidr() {
        assert_eq!(gateway_of("10.10.1.0/24"), "10.10.1.1".parse().ok());
        assert_eq!(gateway_of("fd00:10::/64"), "fd00:10::1".parse().ok());
        assert_eq!(gateway_of("junk"), None);
    }
}
