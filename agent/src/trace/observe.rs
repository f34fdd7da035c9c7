//! Packet-in → observations, as reference §3.4 (one `NodeResult` per packet-in; observations
//! appended in this order): first (SpoofGuard on the sender / Received elsewhere), LB,
//! egress NetworkPolicy allow, ingress NetworkPolicy allow, drops by table, Output.
//!
//! Pure: everything comes from the packet-in (table id, registers, tunnel / conntrack fields,
//! packet bytes) and the Node's ports; policy names come through [`PolicyResolver`].

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use traceflow_proto::v1 as pb;

use crate::desired::{DesiredState, RuleAction};
use crate::ovs::openflow::PacketIn;
use crate::pipeline::{TRACE_DSCP, Table, regs};
use crate::ports::{NodePorts, PortKind};

use super::live::Claim;
use super::packet::{ParsedPacket, parse};

/// A NetworkPolicy rule, as the agent's policy cache knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    /// `<Type>:<namespace>/<name>` or `<Type>:<name>`.
    pub policy: String,
    pub rule: String,
    pub reject: bool,
}

/// An Antrea Egress, as Egress observations name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRef {
    pub name: String,
    pub egress_ip: IpAddr,
    pub egress_node: String,
}

impl From<&crate::desired::Egress> for EgressRef {
    fn from(e: &crate::desired::Egress) -> Self {
        Self {
            name: e.name.clone(),
            egress_ip: e.egress_ip,
            egress_node: e.egress_node.clone(),
        }
    }
}

/// Resolves conjunction ids (reg3 / reg5 / reg6) to policy rules, and sources / SNAT marks to
/// Egresses (none unless the resolver knows Egresses).
pub trait PolicyResolver {
    fn rule(&self, conj_id: u32) -> Option<RuleRef>;

    /// The Egress applying to source Pod IP `src`.
    fn egress_of(&self, _src: IpAddr) -> Option<EgressRef> {
        None
    }

    /// The Egress whose SNAT `pkt_mark` is `mark`.
    fn egress_by_mark(&self, _mark: u32) -> Option<EgressRef> {
        None
    }
}

/// No policies known (a Tracer without a desired state, e.g. in tests).
pub struct NoPolicies;

impl PolicyResolver for NoPolicies {
    fn rule(&self, _conj_id: u32) -> Option<RuleRef> {
        None
    }
}

/// The rules the adapter sent this Node, by conjunction id (what `pipeline::policy` loads into
/// the trace registers).
impl PolicyResolver for DesiredState {
    fn rule(&self, conj_id: u32) -> Option<RuleRef> {
        let r = self.rules.get(&conj_id)?;
        Some(RuleRef {
            policy: r.policy_ref(),
            rule: r.rule_name.clone(),
            reject: r.action == RuleAction::Reject,
        })
    }

    fn egress_of(&self, src: IpAddr) -> Option<EgressRef> {
        DesiredState::egress_of(self, src).map(EgressRef::from)
    }

    fn egress_by_mark(&self, mark: u32) -> Option<EgressRef> {
        DesiredState::egress_by_mark(self, mark).map(EgressRef::from)
    }
}

/// One trace packet-in turned into a report.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// Injected traces: the id the packet carries (0 for live traffic).
    pub trace_id: u32,
    pub ipv6: bool,
    /// Live traffic: the DSCP tag the packet carries (0 for injected traces).
    pub dataplane_tag: u8,
    /// Live traffic, on the Node that tagged it: the packet as captured.
    pub captured_packet: Option<pb::Packet>,
    pub result: pb::NodeResult,
    /// Injected traces: the secret the packet carries (the adapter's proof of the report).
    pub secret: u64,
    /// The packet as this Node saw it (the adapter checks a live trace's tuple against it).
    pub seen_packet: pb::Packet,
}

impl Observed {
    pub fn into_report(self) -> pb::TraceReport {
        pb::TraceReport {
            trace_id: self.trace_id,
            ipv6: self.ipv6,
            result: Some(self.result),
            captured_packet: self.captured_packet,
            dataplane_tag: u32::from(self.dataplane_tag),
            secret: self.secret,
            seen_packet: Some(self.seen_packet),
        }
    }
}

/// `t` in microseconds since the Unix epoch (0 before it, `i64::MAX` far after).
pub fn unix_micros(t: SystemTime) -> i64 {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
}

/// Where the packet's connection comes from: conntrack's original source address and port
/// when the packet-in carries them (a NAT on the way does not hide the client), else the
/// packet's own.
pub fn connection_source(pin: &PacketIn, pkt: &ParsedPacket) -> (IpAddr, Option<u16>) {
    let f = &pin.fields;
    let ct_src = match pkt.src {
        IpAddr::V4(_) => f.ct_nw_src().map(IpAddr::V4),
        IpAddr::V6(_) => f.ct_ipv6_src().map(IpAddr::V6),
    };
    match valid(ct_src) {
        Some(src) => (src, f.ct_tp_src().or(pkt.src_port)),
        None => (pkt.src, pkt.src_port),
    }
}

/// "valid" in §3.4: present and not in `::/8` (OVS leaves ct_src empty for ICMPv6).
fn valid(ip: Option<IpAddr>) -> Option<IpAddr> {
    ip.filter(|ip| match ip {
        IpAddr::V4(v4) => !v4.is_unspecified(),
        IpAddr::V6(v6) => v6.octets()[0] != 0,
    })
}

fn obs(component: pb::Component, action: pb::Action, micros: i64) -> pb::Observation {
    pb::Observation {
        component: component as i32,
        action: action as i32,
        timestamp_micros: micros,
        ..Default::default()
    }
}

/// Turns a packet-in into observations. `None` when it is not an injected trace packet
/// (not IP, or not of the trace DSCP class).
pub fn observe(
    pin: &PacketIn,
    ports: &NodePorts,
    node: &str,
    now: SystemTime,
    policies: &dyn PolicyResolver,
) -> Option<Observed> {
    let pkt = parse(&pin.data).ok()?;
    observe_injected(pin, &pkt, ports, node, now, policies)
}

/// [`observe`] for a packet-in whose bytes are already parsed (`pkt`).
pub fn observe_injected(
    pin: &PacketIn,
    pkt: &ParsedPacket,
    ports: &NodePorts,
    node: &str,
    now: SystemTime,
    policies: &dyn PolicyResolver,
) -> Option<Observed> {
    if pkt.dscp != TRACE_DSCP {
        return None;
    }
    Some(Observed {
        trace_id: pkt.trace_id,
        ipv6: pkt.src.is_ipv6(),
        dataplane_tag: 0,
        captured_packet: None,
        result: node_result(pin, pkt, None, ports, node, now, policies),
        secret: pkt.secret,
        seen_packet: pkt.to_captured(),
    })
}

/// A live-traffic packet-in (`pkt` carries a live tag) turned into observations, per `claim`:
/// only the Node with the sender role reports the sending path (a receiver-only Node never
/// does, even for traffic from one of its own Pods: reference §3.6), and the packet itself is
/// captured when the claim says so.
pub fn observe_live(
    pin: &PacketIn,
    pkt: &ParsedPacket,
    claim: &Claim,
    ports: &NodePorts,
    node: &str,
    now: SystemTime,
    policies: &dyn PolicyResolver,
) -> Observed {
    Observed {
        trace_id: 0,
        ipv6: pkt.src.is_ipv6(),
        dataplane_tag: pkt.dscp,
        captured_packet: claim.capture.then(|| pkt.to_captured()),
        result: node_result(pin, pkt, Some(claim.sender), ports, node, now, policies),
        secret: 0,
        seen_packet: pkt.to_captured(),
    }
}

/// This Node's result for one trace packet-in, as the module doc orders it. `sender` overrides
/// the in-port rule (a Pod port means this Node sent it) when the caller knows better.
fn node_result(
    pin: &PacketIn,
    pkt: &ParsedPacket,
    sender: Option<bool>,
    ports: &NodePorts,
    node: &str,
    now: SystemTime,
    policies: &dyn PolicyResolver,
) -> pb::NodeResult {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let micros = unix_micros(now);
    let f = &pin.fields;
    let reg = |n: u8| f.reg(n).filter(|v| *v != 0);
    let (ct_src, ct_dst) = match pkt.src {
        IpAddr::V4(_) => (f.ct_nw_src().map(IpAddr::V4), f.ct_nw_dst().map(IpAddr::V4)),
        IpAddr::V6(_) => (
            f.ct_ipv6_src().map(IpAddr::V6),
            f.ct_ipv6_dst().map(IpAddr::V6),
        ),
    };
    let (ct_src, ct_dst) = (valid(ct_src), valid(ct_dst));

    // The reply leg of a `reply` trace: conntrack sees the packet in the reply direction.
    let reply = f
        .ct_state()
        .is_some_and(|s| s & crate::ovs::openflow::oxm::ct_state::RPL != 0);
    let mut out = Vec::new();
    // 1. First observation: the sender is the Node whose Pod port the packet entered on.
    let sender = sender.unwrap_or_else(|| {
        matches!(
            f.in_port().and_then(|p| ports.by_ofport(p)),
            Some(PortKind::Pod(_))
        )
    });
    if sender {
        let mut o = obs(pb::Component::SpoofGuard, pb::Action::Forwarded, micros);
        o.src_pod_ip = if reply {
            // The conntrack tuple is the forward one: the reply's source is the Pod it
            // entered from.
            super::reply::entry_pod_ip(pin, pkt, ports).unwrap_or(pkt.src)
        } else {
            ct_src.unwrap_or(pkt.src)
        }
        .to_string();
        out.push(o);
        // 2. LB: the conntrack tuple differs from the packet's addresses.
        let dnat = ct_dst.is_some_and(|d| d != pkt.dst);
        let snat = ct_src.is_some_and(|s| s != pkt.src);
        if reply {
            out.extend(super::reply::un_dnat_obs(pkt, f, micros));
        } else if dnat || snat {
            let mut o = obs(pb::Component::Lb, pb::Action::Forwarded, micros);
            o.translated_dst_ip = pkt.dst.to_string();
            if snat {
                o.translated_src_ip = pkt.src.to_string();
            }
            out.push(o);
        }
        // 3. Egress NetworkPolicy allow.
        if let Some(conj) = reg(regs::TF_EGRESS_CONJ_ID_REG) {
            out.push(policy_obs(
                "EgressRule",
                pb::Action::Forwarded,
                Some(conj),
                policies,
                micros,
            ));
        }
    } else {
        out.push(obs(pb::Component::Forwarding, pb::Action::Received, micros));
        // A reply crossing back to the client's Node is un-DNATed there (its conntrack).
        if reply {
            out.extend(super::reply::un_dnat_obs(pkt, f, micros));
        }
    }
    // 4. Ingress NetworkPolicy allow.
    if let Some(conj) = reg(regs::TF_INGRESS_CONJ_ID_REG) {
        out.push(policy_obs(
            "IngressRule",
            pb::Action::Forwarded,
            Some(conj),
            policies,
            micros,
        ));
    }
    // 5. Drops, by the table that sent the packet-in.
    let table = Table::from_id(pin.table_id);
    match table {
        Some(t @ (Table::EgressMetric | Table::IngressMetric)) => {
            let deny = reg(0).is_some_and(|r0| r0 & regs::AP_DENY_MARK != 0);
            let conj = if deny {
                reg(regs::AP_CONJ_ID_REG)
            } else {
                None
            };
            out.push(policy_obs(
                t.name(),
                pb::Action::Dropped,
                conj,
                policies,
                micros,
            ));
        }
        Some(t @ (Table::EgressDefaultRule | Table::IngressDefaultRule)) => {
            out.push(policy_obs(
                t.name(),
                pb::Action::Dropped,
                None,
                &NoPolicies,
                micros,
            ));
        }
        Some(Table::Output) => {
            out.extend(egress_obs(pkt, pin, ports, sender, policies, micros));
            out.push(output_obs(pkt, pin, ports, micros));
        }
        _ => {}
    }
    pb::NodeResult {
        node: node.to_string(),
        role: if sender { "sender" } else { "receiver" }.to_string(),
        timestamp: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        observations: out,
        direction: if reply {
            pb::Direction::Reply
        } else {
            pb::Direction::Forward
        } as i32,
    }
}

fn policy_obs(
    table: &str,
    action: pb::Action,
    conj: Option<u32>,
    policies: &dyn PolicyResolver,
    micros: i64,
) -> pb::Observation {
    let mut o = obs(pb::Component::NetworkPolicy, action, micros);
    o.component_info = table.to_string();
    if let Some(rule) = conj.and_then(|c| policies.rule(c)) {
        if rule.reject && action == pb::Action::Dropped {
            o.action = pb::Action::Rejected as i32;
        }
        o.network_policy = rule.policy;
        o.network_policy_rule = rule.rule;
    }
    o
}

/// §3.4 step 6.1 / 6.3: the Egress observation before the Output one. To the tunnel with
/// `RemoteSNATRegMark`: `ForwardedToEgressNode` with the source Pod's Egress. To the gateway
/// (not its own IP) with a `pkt_mark`: `MarkedForSNAT`, with the source Pod's Egress on the
/// sending Node, only the egress IP (by mark) on a Node that received the packet.
fn egress_obs(
    pkt: &ParsedPacket,
    pin: &PacketIn,
    ports: &NodePorts,
    sender: bool,
    policies: &dyn PolicyResolver,
    micros: i64,
) -> Option<pb::Observation> {
    let out_port = pin.fields.reg(regs::TARGET_OFPORT_REG).unwrap_or(0);
    let full = |action| {
        let e = policies.egress_of(pkt.src);
        let mut o = obs(pb::Component::Egress, action, micros);
        if let Some(e) = e {
            o.egress = e.name;
            o.egress_ip = e.egress_ip.to_string();
            o.egress_node = e.egress_node;
        }
        o
    };
    match ports.by_ofport(out_port)? {
        PortKind::Tunnel => {
            let r0 = pin.fields.reg(0).unwrap_or(0);
            (r0 & regs::REMOTE_SNAT_MARK != 0).then(|| full(pb::Action::ForwardedToEgressNode))
        }
        PortKind::Gateway(_) if !ports.is_gateway_ip(pkt.dst) => {
            let mark = pin.fields.pkt_mark().filter(|m| *m != 0)?;
            if sender {
                Some(full(pb::Action::MarkedForSnat))
            } else {
                let mut o = obs(pb::Component::Egress, pb::Action::MarkedForSnat, micros);
                if let Some(e) = policies.egress_by_mark(mark) {
                    o.egress_ip = e.egress_ip.to_string();
                }
                Some(o)
            }
        }
        _ => None,
    }
}

/// §3.4 step 6, encap mode: tunnel → Forwarded (tunnelDstIP); gateway IP via gateway →
/// Delivered; other IPs via gateway → ForwardedOutOfNetwork; a Pod port → Delivered.
fn output_obs(
    pkt: &ParsedPacket,
    pin: &PacketIn,
    ports: &NodePorts,
    micros: i64,
) -> pb::Observation {
    let mut o = obs(pb::Component::Forwarding, pb::Action::Delivered, micros);
    o.component_info = Table::Output.name().to_string();
    let out_port = pin.fields.reg(regs::TARGET_OFPORT_REG).unwrap_or(0);
    match ports.by_ofport(out_port) {
        Some(PortKind::Tunnel) => {
            o.action = pb::Action::Forwarded as i32;
            // Antrea reads the tunnel field of the inner packet's family; the underlay may be
            // of the other family, so fall back to it rather than report nothing.
            let v4 = pin.fields.tun_ipv4_dst().map(IpAddr::V4);
            let v6 = pin.fields.tun_ipv6_dst().map(IpAddr::V6);
            let dst = if pkt.src.is_ipv6() {
                v6.or(v4)
            } else {
                v4.or(v6)
            };
            let dst = dst.map(|ip| ip.to_string());
            o.tunnel_dst_ip = dst.unwrap_or_default();
        }
        Some(PortKind::Gateway(_)) if ports.is_gateway_ip(pkt.dst) => {}
        Some(PortKind::Gateway(_)) => o.action = pb::Action::ForwardedOutOfNetwork as i32,
        _ => {}
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovs::openflow::{Match, Oxm};
    use crate::ports::Mac;
    use crate::ports::fixtures::mk_node;
    use crate::trace::packet::{TracePacket, Transport};

    fn pkt(dst: &str, id: u32) -> Vec<u8> {
        TracePacket {
            src_mac: Mac([2, 0, 0, 0, 0, 1]),
            dst_mac: Mac([2, 0, 0, 0, 0, 2]),
            src: "10.1.0.2".parse().unwrap_or(IpAddr::from([0; 4])),
            dst: dst.parse().unwrap_or(IpAddr::from([0; 4])),
            trace_id: id,
            ttl: 64,
            ip_flags: 0,
            transport: Transport::Echo { id: 0, seq: 0 },
            secret: 0x5ec7_e700_0000_0001,
        }
        .build()
        .unwrap_or_default()
    }

    fn pin(table: Table, in_port: u32, out_port: u32, data: Vec<u8>) -> PacketIn {
        PacketIn {
            buffer_id: u32::MAX,
            total_len: u16::try_from(data.len()).unwrap_or(0),
            reason: 1,
            table_id: table.id(),
            cookie: 0,
            fields: Match::new()
                .with(Oxm::in_port(in_port))
                .with(Oxm::reg(1, out_port)),
            data,
            received_micros: 0,
        }
    }

    fn kinds(o: &Observed) -> Vec<(i32, String, i32)> {
        o.result
            .observations
            .iter()
            .map(|o| (o.component, o.component_info.clone(), o.action))
            .collect()
    }

    const T: SystemTime = UNIX_EPOCH;

    /// What Node `n1` ([`mk_node`]) observes of `p`; panics when it is not a trace packet.
    fn observed(p: &PacketIn, policies: &dyn PolicyResolver) -> Observed {
        observe(p, &mk_node(), "n1", T, policies).unwrap_or_else(|| panic!("not observed"))
    }

    #[test]
    fn intra_node_pod_to_pod() {
        let o = observed(&pin(Table::Output, 3, 4, pkt("10.1.0.3", 77)), &NoPolicies);
        assert_eq!(o.trace_id, 77);
        assert_eq!(o.result.role, "sender");
        assert_eq!(
            kinds(&o),
            vec![
                (
                    pb::Component::SpoofGuard as i32,
                    String::new(),
                    pb::Action::Forwarded as i32
                ),
                (
                    pb::Component::Forwarding as i32,
                    "Output".into(),
                    pb::Action::Delivered as i32
                ),
            ]
        );
        assert_eq!(o.result.observations[0].src_pod_ip, "10.1.0.2");
    }

    #[test]
    fn via_tunnel_is_forwarded_with_tunnel_dst() {
        let mut p = pin(Table::Output, 3, 1, pkt("10.2.0.5", 1));
        p.fields
            .fields
            .push(Oxm::tun_ipv4_dst([192, 168, 77, 2].into()));
        let o = observed(&p, &NoPolicies);
        let last = &o.result.observations[1];
        assert_eq!(last.action, pb::Action::Forwarded as i32);
        assert_eq!(last.tunnel_dst_ip, "192.168.77.2");
    }

    #[test]
    fn gateway_delivered_or_out_of_network() {
        let o = observed(&pin(Table::Output, 3, 2, pkt("10.1.0.1", 1)), &NoPolicies);
        assert_eq!(
            o.result.observations[1].action,
            pb::Action::Delivered as i32
        );
        let o = observed(&pin(Table::Output, 3, 2, pkt("192.0.2.10", 1)), &NoPolicies);
        assert_eq!(
            o.result.observations[1].action,
            pb::Action::ForwardedOutOfNetwork as i32
        );
    }

    #[test]
    fn received_over_tunnel_is_receiver() {
        let o = observed(&pin(Table::Output, 1, 4, pkt("10.1.0.3", 5)), &NoPolicies);
        assert_eq!(o.result.role, "receiver");
        assert_eq!(o.result.observations[0].action, pb::Action::Received as i32);
        assert_eq!(
            o.result.observations[0].component,
            pb::Component::Forwarding as i32
        );
    }

    #[test]
    fn desired_state_resolves_rules_by_conjunction_id() {
        let mut s = DesiredState::default();
        let errors = s.apply(pb::NodeState {
            replace: true,
            rules_upsert: vec![pb::PolicyRule {
                conjunction_id: 9,
                direction: "Ingress".into(),
                action: "Reject".into(),
                policy_type: "AntreaNetworkPolicy".into(),
                policy_namespace: "default".into(),
                policy_name: "p9".into(),
                rule_name: "r9".into(),
                table: "AntreaPolicyIngressRule".into(),
                priority: 1009,
                applied_to_ips: vec!["10.1.0.3".into()],
                any_peer: true,
                ..Default::default()
            }],
            ..Default::default()
        });
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            s.rule(9),
            Some(RuleRef {
                policy: "AntreaNetworkPolicy:default/p9".into(),
                rule: "r9".into(),
                reject: true
            })
        );
        assert_eq!(s.rule(8), None);
    }

    #[test]
    fn policy_registers_and_drop_tables() {
        struct One;
        impl PolicyResolver for One {
            fn rule(&self, c: u32) -> Option<RuleRef> {
                (c == 9).then(|| RuleRef {
                    policy: "AntreaClusterNetworkPolicy:deny-db".into(),
                    rule: "drop-3306".into(),
                    reject: true,
                })
            }
        }
        let mut p = pin(Table::IngressMetric, 3, 4, pkt("10.1.0.3", 5));
        p.fields.fields.push(Oxm::reg(0, regs::AP_DENY_MARK));
        p.fields.fields.push(Oxm::reg(3, 9));
        p.fields.fields.push(Oxm::reg(5, 4));
        let o = observed(&p, &One);
        let k = kinds(&o);
        assert_eq!(
            k[1],
            (
                pb::Component::NetworkPolicy as i32,
                "EgressRule".into(),
                pb::Action::Forwarded as i32
            )
        );
        assert_eq!(
            k[2],
            (
                pb::Component::NetworkPolicy as i32,
                "IngressMetric".into(),
                pb::Action::Rejected as i32
            )
        );
        assert_eq!(o.result.observations[2].network_policy_rule, "drop-3306");
        let o = observed(
            &pin(Table::IngressDefaultRule, 3, 4, pkt("10.1.0.3", 5)),
            &One,
        );
        assert_eq!(o.result.observations[1].action, pb::Action::Dropped as i32);
        assert!(o.result.observations[1].network_policy.is_empty());
    }

    #[test]
    fn conntrack_translation_is_an_lb_observation() {
        use crate::ovs::openflow::oxm::{CLASS_NXM1, nxm};
        // p0 → p1 as delivered, tracked with conntrack's original destination `ct_dst`.
        let tracked = |ct_dst: [u8; 4]| {
            let mut p = pin(Table::Output, 3, 4, pkt("10.1.0.3", 5));
            p.fields
                .fields
                .push(Oxm::exact(CLASS_NXM1, nxm::CT_NW_SRC, &[10, 1, 0, 2]));
            p.fields
                .fields
                .push(Oxm::exact(CLASS_NXM1, nxm::CT_NW_DST, &ct_dst));
            p
        };
        // The packet was DNATed from a ClusterIP to p1; ct keeps the original tuple.
        let o = observed(&tracked([10, 96, 0, 10]), &NoPolicies);
        let lb = &o.result.observations[1];
        assert_eq!(lb.component, pb::Component::Lb as i32);
        assert_eq!(lb.translated_dst_ip, "10.1.0.3");
        assert!(lb.translated_src_ip.is_empty());
        assert_eq!(o.result.observations[0].src_pod_ip, "10.1.0.2");
        // Untranslated tracked traffic has no LB observation.
        let o = observed(&tracked([10, 1, 0, 3]), &NoPolicies);
        assert_eq!(o.result.observations.len(), 2);
    }

    #[test]
    fn a_live_packet_follows_its_claim_not_the_in_port() {
        let n = mk_node();
        let mut data = pkt("10.1.0.3", 0);
        data[15] = 7 << 2; // DSCP 7, a live tag
        let Ok(parsed) = parse(&data) else {
            panic!("unparseable");
        };
        let p = pin(Table::Output, 3, 4, data);
        // Receiver-only on the source's own Node: entered on a Pod port, yet no sending path.
        let claim = Claim {
            uid: "u".into(),
            capture: true,
            sender: false,
        };
        let o = observe_live(&p, &parsed, &claim, &n, "n1", T, &NoPolicies);
        assert_eq!((o.dataplane_tag, o.trace_id), (7, 0));
        assert_eq!(o.result.role, "receiver");
        assert_eq!(o.result.observations[0].action, pb::Action::Received as i32);
        assert_eq!(
            o.captured_packet.map(|c| (c.src_ip, c.dst_ip)),
            Some(("10.1.0.2".into(), "10.1.0.3".into()))
        );
        let claim = Claim {
            sender: true,
            capture: false,
            ..claim
        };
        let o = observe_live(&p, &parsed, &claim, &n, "n1", T, &NoPolicies);
        assert_eq!(o.result.role, "sender");
        assert!(o.captured_packet.is_none());
        // The injected-trace path ignores live tags.
        assert!(observe(&p, &n, "n1", T, &NoPolicies).is_none());
    }

    #[test]
    fn non_trace_packets_are_ignored() {
        let n = mk_node();
        let mut data = pkt("10.1.0.3", 5);
        data[15] = 0; // DSCP 0
        assert!(observe(&pin(Table::Output, 3, 4, data), &n, "n1", T, &NoPolicies).is_none());
        assert!(
            observe(
                &pin(Table::Output, 3, 4, vec![1, 2, 3]),
                &n,
                "n1",
                T,
                &NoPolicies
            )
            .is_none()
        );
    }
}
