//! NetworkPolicy flows (reference §3.3-§4: AntreaPolicy{Egress,Ingress}Rule, {Egress,Ingress}Rule,
//! {Egress,Ingress}DefaultRule, {Egress,Ingress}Metric), computed purely from the desired
//! state's compiled rules and isolation sets.
//!
//! ```text
//! rule tables   ct_state +est / +rel → goto *Metric (established connections bypass policy)
//!               clauses: applied-to IP (dst for ingress, src for egress), peer CIDRs,
//!               protocol/ports → conjunction(id, k/n)   (n ≥ 2; one clause = direct flow)
//!               conj_id=id → Allow: reg5 (egress) / reg6 (ingress) = id, goto *Metric
//!                            Pass:  reg5/reg6 = id, goto the K8s table (EgressRule/IngressRule)
//!                            Drop/Reject: reg3 = id, reg0 APDeny, goto *Metric
//! *DefaultRule  isolated Pod IP → drop; trace class copy at 202 → controller
//! *Metric       APDeny + reg3 = id → drop (Reject: controller); trace class copy at 202 →
//!               controller
//! ```
//!
//! Reject sends the denied packet to the agent (packet-in, metered), which answers with a TCP
//! RST or an ICMP / ICMPv6 "administratively prohibited" ([`crate::reject`]); the trace
//! reports `Rejected`, from the rule's action.
//!
//! Flows are a function of each rule alone (plus merging of identical clause matches), so a
//! rule update changes only the flows carrying its conjunction id.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::desired::{DesiredState, PolicyRule, RuleAction, RuleDirection};
use crate::ovs::openflow::oxm::{CLASS_BASIC, CLASS_NXM1, basic, ct_state};
use crate::ovs::openflow::{Action, FlowMod, Instruction, Match, Oxm};

use super::flows::prio;
use super::regs;
use super::tables::Table;
use super::{COOKIE, ETH_IPV4, ETH_IPV6, TRACE_DSCP};

/// `NXM_NX_CONJ_ID` (NXM class 1, field 37; no OXM form).
const NXM_CONJ_ID: u8 = 37;
/// Priority of the established/related bypass: above every rule.
const PRIO_BYPASS: u16 = 65000;
/// Priority of a rule the adapter sent without one (Antrea's normal).
const PRIO_DEFAULT_RULE: u16 = 200;

fn flow(t: Table, priority: u16, m: Match, ins: Vec<Instruction>) -> FlowMod {
    FlowMod::add(t.id(), priority, COOKIE, m, ins)
}

fn ip_match(src: bool, net: IpNet) -> Match {
    super::with_net(Match::new(), &net, src)
}

fn host_match(src: bool, ip: IpAddr) -> Match {
    super::with_host(Match::new(), ip, src)
}

/// `[lo, hi]` as (value, mask) prefixes, as `ovs-ofctl` expands port ranges.
pub fn port_range_masks(lo: u16, hi: u16) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    let mut start = u32::from(lo);
    let end = u32::from(hi);
    while start <= end {
        let mut size = 1u32;
        while start % (size * 2) == 0 && start + size * 2 - 1 <= end && size < 0x1_0000 {
            size *= 2;
        }
        out.push((start as u16, (0x1_0000 - size) as u16));
        start += size;
    }
    out
}

fn port_field(proto: u8) -> u8 {
    match proto {
        6 => basic::TCP_DST,
        17 => basic::UDP_DST,
        _ => basic::SCTP_DST,
    }
}

/// `conjunction(id, clause/n)` (clause 1-based), `NXAST_CONJUNCTION`.
fn conjunction(id: u32, clause: u8, n: u8) -> Action {
    let mut raw = vec![0xff, 0xff, 0, 16, 0, 0, 0x23, 0x20, 0, 34, clause - 1, n];
    raw.extend_from_slice(&id.to_be_bytes());
    Action::Unknown { kind: 0xffff, raw }
}

fn conj_id(id: u32) -> Oxm {
    Oxm::exact(CLASS_NXM1, NXM_CONJ_ID, &id.to_be_bytes())
}

/// The Antrea table a rule lives in: the adapter's choice when it is one of the direction's
/// rule tables (AntreaPolicy*Rule, *Rule, *DefaultRule), else derived from the policy type, so
/// that every goto of the rule's flows points forward (OVS refuses the whole bundle
/// otherwise).
pub fn rule_table(r: &PolicyRule) -> Table {
    let allowed: [Table; 3] = match r.direction {
        RuleDirection::Ingress => [
            Table::AntreaPolicyIngressRule,
            Table::IngressRule,
            Table::IngressDefaultRule,
        ],
        RuleDirection::Egress => [
            Table::AntreaPolicyEgressRule,
            Table::EgressRule,
            Table::EgressDefaultRule,
        ],
    };
    if let Some(t) = allowed.iter().copied().find(|t| t.name() == r.table) {
        return t;
    }
    match (r.direction, r.policy_type == "K8sNetworkPolicy") {
        (RuleDirection::Ingress, true) => Table::IngressRule,
        (RuleDirection::Egress, true) => Table::EgressRule,
        (RuleDirection::Ingress, false) => Table::AntreaPolicyIngressRule,
        (RuleDirection::Egress, false) => Table::AntreaPolicyEgressRule,
    }
}

fn metric(d: RuleDirection) -> Table {
    match d {
        RuleDirection::Ingress => Table::IngressMetric,
        RuleDirection::Egress => Table::EgressMetric,
    }
}

/// What a matching rule does (the actions of its conj_id flow or direct flows).
fn rule_instructions(r: &PolicyRule) -> Vec<Instruction> {
    let tf_reg = match r.direction {
        RuleDirection::Ingress => regs::TF_INGRESS_CONJ_ID_REG,
        RuleDirection::Egress => regs::TF_EGRESS_CONJ_ID_REG,
    };
    match r.action {
        RuleAction::Allow => vec![
            Instruction::ApplyActions(vec![Action::set_reg(tf_reg, r.conj_id, u32::MAX)]),
            Instruction::GotoTable(metric(r.direction).id()),
        ],
        RuleAction::Pass => {
            // Pass continues with the K8s tables; from a K8s or baseline table (where Antrea
            // does not allow Pass) it continues with the next table.
            let k8s = match r.direction {
                RuleDirection::Ingress => Table::IngressRule,
                RuleDirection::Egress => Table::EgressRule,
            };
            let table = rule_table(r);
            let next = if table < k8s {
                k8s
            } else {
                table.next().unwrap_or(metric(r.direction))
            };
            vec![
                Instruction::ApplyActions(vec![Action::set_reg(tf_reg, r.conj_id, u32::MAX)]),
                Instruction::GotoTable(next.id()),
            ]
        }
        RuleAction::Drop | RuleAction::Reject => vec![
            Instruction::ApplyActions(vec![
                Action::set_reg(regs::AP_CONJ_ID_REG, r.conj_id, u32::MAX),
                Action::set_reg(0, regs::AP_DENY_MARK, regs::AP_DENY_MARK),
            ]),
            Instruction::GotoTable(metric(r.direction).id()),
        ],
    }
}

/// Clause matches of a rule: applied-to, peers (unless any), services (unless all). `None`
/// when the rule can match nothing (no applied-to or no peer).
fn clauses(r: &PolicyRule) -> Option<Vec<Vec<Match>>> {
    let ingress = r.direction == RuleDirection::Ingress;
    let applied: Vec<Match> = r
        .applied_to
        .iter()
        .map(|ip| host_match(!ingress, *ip))
        .collect();
    if applied.is_empty() {
        return None;
    }
    let mut out = vec![applied];
    if !r.any_peer {
        if r.peers.is_empty() {
            return None;
        }
        out.push(r.peers.iter().map(|n| ip_match(ingress, *n)).collect());
    }
    if !r.services.is_empty() {
        let mut svc = Vec::new();
        for s in &r.services {
            for et in [ETH_IPV4, ETH_IPV6] {
                let base = Match::new()
                    .with(Oxm::eth_type(et))
                    .with(Oxm::ip_proto(s.protocol));
                if s.port == 0 {
                    svc.push(base);
                    continue;
                }
                let hi = s.end_port.max(s.port);
                for (v, m) in port_range_masks(s.port, hi) {
                    let f = if m == u16::MAX {
                        Oxm::exact(CLASS_BASIC, port_field(s.protocol), &v.to_be_bytes())
                    } else {
                        Oxm::masked(
                            CLASS_BASIC,
                            port_field(s.protocol),
                            &v.to_be_bytes(),
                            &m.to_be_bytes(),
                        )
                    };
                    svc.push(base.clone().with(f));
                }
            }
        }
        out.push(svc);
    }
    Some(out)
}

/// The flows of one rule: clause flows (with their conjunction actions) and its conj_id
/// flows, before merging clause flows shared with other rules.
pub fn rule_flows(r: &PolicyRule, packet_in_meter: Option<u32>) -> Vec<FlowMod> {
    let to_controller = || {
        let mut a: Vec<Action> = packet_in_meter.map(Action::Meter).into_iter().collect();
        a.push(Action::to_controller());
        vec![Instruction::ApplyActions(a)]
    };
    let table = rule_table(r);
    let priority = u16::try_from(r.priority)
        .ok()
        .filter(|p| *p != 0)
        .unwrap_or(PRIO_DEFAULT_RULE);
    let Some(clauses) = clauses(r) else {
        return Vec::new();
    };
    let mut f = Vec::new();
    if clauses.len() == 1 {
        for m in &clauses[0] {
            f.push(flow(table, priority, m.clone(), rule_instructions(r)));
        }
    } else {
        let n = clauses.len() as u8;
        for (k, ms) in clauses.iter().enumerate() {
            for m in ms {
                f.push(flow(
                    table,
                    priority,
                    m.clone(),
                    vec![Instruction::ApplyActions(vec![conjunction(
                        r.conj_id,
                        k as u8 + 1,
                        n,
                    )])],
                ));
            }
        }
        for et in [ETH_IPV4, ETH_IPV6] {
            f.push(flow(
                table,
                priority,
                Match::new()
                    .with(Oxm::eth_type(et))
                    .with(conj_id(r.conj_id)),
                rule_instructions(r),
            ));
        }
    }
    if matches!(r.action, RuleAction::Drop | RuleAction::Reject) {
        let denied = || {
            Match::new()
                .with(Oxm::reg_masked(0, regs::AP_DENY_MARK, regs::AP_DENY_MARK))
                .with(Oxm::reg(regs::AP_CONJ_ID_REG, r.conj_id))
        };
        // Reject: the agent answers the packet-in with a TCP RST / ICMP unreachable
        // (crate::reject); the packet itself goes no further.
        // Its packet-ins pass their own meter, so a Reject flood cannot starve trace
        // packet-ins (whose meter is `packet_in_meter`).
        let deny = if r.action == RuleAction::Reject {
            let mut a: Vec<Action> = packet_in_meter
                .map(|_| Action::Meter(super::REJECT_PACKET_IN_METER))
                .into_iter()
                .collect();
            a.push(Action::to_controller());
            vec![Instruction::ApplyActions(a)]
        } else {
            Vec::new()
        };
        f.push(flow(metric(r.direction), prio::NORMAL, denied(), deny));
        for et in [ETH_IPV4, ETH_IPV6] {
            f.push(flow(
                metric(r.direction),
                prio::TRACE,
                denied()
                    .with(Oxm::eth_type(et))
                    .with(Oxm::ip_dscp(TRACE_DSCP)),
                to_controller(),
            ));
        }
    }
    f
}

/// Every policy flow for `desired`; trace drop copies pass `packet_in_meter` when given.
pub fn policy_flows(desired: &DesiredState, packet_in_meter: Option<u32>) -> Vec<FlowMod> {
    let to_controller = || {
        let mut a: Vec<Action> = packet_in_meter.map(Action::Meter).into_iter().collect();
        a.push(Action::to_controller());
        vec![Instruction::ApplyActions(a)]
    };
    if desired.rules.is_empty()
        && desired.isolated_ingress.is_empty()
        && desired.isolated_egress.is_empty()
    {
        return Vec::new();
    }
    let mut out: Vec<FlowMod> = Vec::new();
    // Established and related connections were allowed when they started, unless a trace
    // packet started them: on a connection with the trace mark only trace packets (the reply
    // leg of a `reply` trace) are established; a real packet is judged by the rules as if the
    // connection did not exist, so a trace opens no path through policy.
    for (t, m) in [
        (Table::AntreaPolicyEgressRule, Table::EgressMetric),
        (Table::EgressRule, Table::EgressMetric),
        (Table::AntreaPolicyIngressRule, Table::IngressMetric),
        (Table::IngressRule, Table::IngressMetric),
    ] {
        for st in [ct_state::EST, ct_state::REL] {
            let established = || {
                Match::new().with(Oxm::ct_state(
                    st | ct_state::TRK,
                    st | ct_state::TRK | ct_state::NEW,
                ))
            };
            out.push(flow(
                t,
                PRIO_BYPASS,
                established().with(Oxm::ct_mark_masked(0, regs::TRACE_CT_MARK)),
                vec![Instruction::GotoTable(m.id())],
            ));
            for et in [ETH_IPV4, ETH_IPV6] {
                out.push(flow(
                    t,
                    PRIO_BYPASS,
                    established()
                        .with(Oxm::ct_mark_masked(
                            regs::TRACE_CT_MARK,
                            regs::TRACE_CT_MARK,
                        ))
                        .with(Oxm::eth_type(et))
                        .with(Oxm::ip_dscp(TRACE_DSCP)),
                    vec![Instruction::GotoTable(m.id())],
                ));
            }
        }
    }
    // (table, priority, match) → index in `out`: identical matches must be one flow.
    let mut seen: std::collections::HashMap<(u8, u16, Match), usize> =
        std::collections::HashMap::new();
    for r in desired.rules.values() {
        for f in rule_flows(r, packet_in_meter) {
            // Identical clause matches of several rules become one flow with every
            // rule's conjunction action.
            let key = (f.table_id, f.priority, f.fields.clone());
            if let Some(prev) = seen.get(&key).and_then(|i| out.get_mut(*i)) {
                if let (Some(Instruction::ApplyActions(a)), Some(Instruction::ApplyActions(b))) =
                    (prev.instructions.first_mut(), f.instructions.first())
                    && is_conj(a)
                    && is_conj(b)
                {
                    a.extend(b.iter().cloned());
                }
                continue;
            }
            seen.insert(key, out.len());
            out.push(f);
        }
    }
    // Live-traffic tags: any denied packet carrying one is reported (the injected class has
    // per-rule copies above; a tag needs no rule to tell the trace apart), through the live
    // meter.
    let live_to_controller = || {
        let mut a: Vec<Action> = packet_in_meter
            .map(|_| Action::Meter(super::LIVE_PACKET_IN_METER))
            .into_iter()
            .collect();
        a.push(Action::to_controller());
        vec![Instruction::ApplyActions(a)]
    };
    for tag in &desired.live_tags {
        for (t, et) in [Table::EgressMetric, Table::IngressMetric]
            .into_iter()
            .flat_map(|t| [(t, ETH_IPV4), (t, ETH_IPV6)])
        {
            out.push(flow(
                t,
                prio::TRACE,
                Match::new()
                    .with(Oxm::reg_masked(0, regs::AP_DENY_MARK, regs::AP_DENY_MARK))
                    .with(Oxm::eth_type(et))
                    .with(Oxm::ip_dscp(*tag)),
                live_to_controller(),
            ));
        }
    }
    // K8s isolation: drops in *DefaultRule, with a copy per trace class and live tag.
    let classes: Vec<u8> = std::iter::once(TRACE_DSCP)
        .chain(desired.live_tags.iter().copied())
        .collect();
    for (t, ips, src) in [
        (Table::IngressDefaultRule, &desired.isolated_ingress, false),
        (Table::EgressDefaultRule, &desired.isolated_egress, true),
    ] {
        for ip in ips {
            let m = host_match(src, *ip);
            out.push(flow(t, prio::NORMAL, m.clone(), Vec::new()));
            for class in &classes {
                let report = if *class == TRACE_DSCP {
                    to_controller()
                } else {
                    live_to_controller()
                };
                out.push(flow(
                    t,
                    prio::TRACE,
                    m.clone().with(Oxm::ip_dscp(*class)),
                    report,
                ));
            }
        }
    }
    out
}

fn is_conj(actions: &[Action]) -> bool {
    actions
        .iter()
        .all(|a| matches!(a, Action::Unknown { raw, .. } if raw.get(9) == Some(&34)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use traceflow_proto::v1 as pb;

    fn rule(id: u32, action: &str, peer: &str, port: i32) -> pb::PolicyRule {
        pb::PolicyRule {
            conjunction_id: id,
            direction: "Ingress".into(),
            action: action.into(),
            policy_type: "AntreaNetworkPolicy".into(),
            policy_namespace: "default".into(),
            policy_name: format!("p{id}"),
            rule_name: format!("r{id}"),
            table: "AntreaPolicyIngressRule".into(),
            priority: 1000 + id,
            applied_to_ips: vec!["10.1.0.3".into()],
            any_peer: false,
            peer_cidrs: vec![peer.into()],
            services: vec![pb::RuleService {
                protocol: "TCP".into(),
                port,
                end_port: 0,
            }],
        }
    }

    fn state(rules: Vec<pb::PolicyRule>, isolated: &[&str]) -> DesiredState {
        let mut s = DesiredState::default();
        let errors = s.apply(pb::NodeState {
            replace: true,
            rules_upsert: rules,
            isolation: Some(pb::Isolation {
                ingress_ips: isolated.iter().map(|s| s.to_string()).collect(),
                egress_ips: vec![],
            }),
            ..Default::default()
        });
        assert!(errors.is_empty(), "{errors:?}");
        s
    }

    fn mentions(f: &FlowMod, id: u32) -> bool {
        f.fields.fields.contains(&conj_id(id))
            || f.fields.fields.contains(&Oxm::reg(regs::AP_CONJ_ID_REG, id))
            || f.instructions.iter().any(|i| match i {
                Instruction::ApplyActions(a) => a.iter().any(|a| {
                    matches!(a, Action::Unknown { raw, .. } if raw.get(9) == Some(&34) && raw[12..16] == id.to_be_bytes())
                        || *a == Action::set_reg(regs::AP_CONJ_ID_REG, id, u32::MAX)
                }),
                _ => false,
            })
    }

    #[test]
    fn a_connection_a_trace_created_admits_only_trace_packets() {
        let d = state(vec![rule(5, "Drop", "10.1.0.2/32", 0)], &[]);
        let flows = policy_flows(&d, None);
        let bypass: Vec<_> = flows
            .iter()
            .filter(|f| f.priority == PRIO_BYPASS && f.table_id == Table::IngressRule.id())
            .collect();
        assert!(!bypass.is_empty());
        for f in &bypass {
            let real = f
                .fields
                .fields
                .contains(&Oxm::ct_mark_masked(0, regs::TRACE_CT_MARK));
            let trace = f.fields.fields.contains(&Oxm::ct_mark_masked(
                regs::TRACE_CT_MARK,
                regs::TRACE_CT_MARK,
            )) && f.fields.fields.contains(&Oxm::ip_dscp(TRACE_DSCP));
            assert!(
                real ^ trace,
                "every bypass is either for real connections or for a trace's own packets: {f:?}"
            );
        }
    }

    #[test]
    fn conjunction_clauses_and_conj_id_flow() {
        let s = state(vec![rule(7, "Allow", "10.1.0.2/32", 80)], &[]);
        let f = policy_flows(&s, None);
        let conj: Vec<_> = f
            .iter()
            .filter(|x| x.fields.fields.contains(&conj_id(7)))
            .collect();
        assert_eq!(conj.len(), 2, "v4 + v6");
        assert_eq!(
            conj[0].instructions,
            vec![
                Instruction::ApplyActions(vec![Action::set_reg(
                    regs::TF_INGRESS_CONJ_ID_REG,
                    7,
                    u32::MAX
                )]),
                Instruction::GotoTable(Table::IngressMetric.id()),
            ]
        );
        assert!(
            conj.iter()
                .all(|x| x.priority == 1007 && x.table_id == Table::AntreaPolicyIngressRule.id())
        );
        // applied-to + peer + TCP 80 (both families) clause flows.
        assert_eq!(f.iter().filter(|x| mentions(x, 7)).count(), 2 + 1 + 1 + 2);
    }

    #[test]
    fn drop_and_reject_go_through_the_metric_table_with_trace_copies() {
        let s = state(vec![rule(9, "Reject", "10.1.0.2/32", 0)], &["10.1.0.3"]);
        let f = policy_flows(&s, Some(257));
        let metric: Vec<_> = f
            .iter()
            .filter(|x| x.table_id == Table::IngressMetric.id())
            .collect();
        assert_eq!(metric.len(), 3, "drop + trace copies v4/v6");
        assert!(metric.iter().any(|x| x.priority == prio::TRACE
            && x.instructions
                == vec![Instruction::ApplyActions(vec![
                    Action::Meter(257),
                    Action::to_controller()
                ])]));
        // The Reject packet-in itself passes its own meter, not the trace one.
        assert!(
            metric.iter().any(|x| x.priority == prio::NORMAL
                && x.instructions
                    == vec![Instruction::ApplyActions(vec![
                        Action::Meter(super::super::REJECT_PACKET_IN_METER),
                        Action::to_controller()
                    ])]),
            "{metric:?}"
        );
        let default: Vec<_> = f
            .iter()
            .filter(|x| x.table_id == Table::IngressDefaultRule.id())
            .collect();
        assert_eq!(default.len(), 2, "isolation drop + trace copy");
    }

    #[test]
    fn shared_clauses_merge_and_an_update_changes_only_its_rule() {
        let before = state(
            vec![
                rule(1, "Allow", "10.1.0.2/32", 80),
                rule(2, "Drop", "10.2.0.0/24", 443),
            ],
            &[],
        );
        let after = state(
            vec![
                rule(1, "Allow", "10.1.0.2/32", 80),
                rule(2, "Drop", "10.2.0.0/25", 443),
            ],
            &[],
        );
        let (fb, fa) = (policy_flows(&before, None), policy_flows(&after, None));
        let changed_removed: Vec<_> = fb.iter().filter(|x| !fa.contains(x)).collect();
        let changed_added: Vec<_> = fa.iter().filter(|x| !fb.contains(x)).collect();
        assert!(!changed_added.is_empty());
        assert!(
            changed_removed
                .iter()
                .chain(&changed_added)
                .all(|x| mentions(x, 2) && !mentions(x, 1)),
            "only rule 2's flows change"
        );
        // Different priorities: no merging between them; same rule twice at the same
        // priority would merge into one flow with both conjunctions.
        let mut r3 = rule(3, "Allow", "10.1.0.2/32", 80);
        r3.priority = 1001;
        let merged = policy_flows(
            &state(vec![rule(1, "Allow", "10.1.0.2/32", 80), r3], &[]),
            None,
        );
        let applied = merged
            .iter()
            .filter(|x| {
                x.fields
                    .fields
                    .contains(&Oxm::ipv4_dst([10, 1, 0, 3].into()))
            })
            .collect::<Vec<_>>();
        assert_eq!(applied.len(), 1);
        assert!(mentions(applied[0], 1) && mentions(applied[0], 3));
    }

    #[test]
    fn port_ranges_become_prefixes() {
        assert_eq!(port_range_masks(80, 80), vec![(80, 0xffff)]);
        assert_eq!(port_range_masks(8000, 8003), vec![(8000, 0xfffc)]);
        assert_eq!(port_range_masks(1, 3), vec![(1, 0xffff), (2, 0xfffe)]);
        assert_eq!(port_range_masks(0, 65535), vec![(0, 0)]);
    }

    #[test]
    fn every_goto_points_forward_whatever_table_the_adapter_names() {
        let mut rules = Vec::new();
        for (i, (dir, table, action)) in [
            ("Egress", "IngressRule", "Allow"),
            ("Ingress", "Output", "Drop"),
            ("Ingress", "IngressDefaultRule", "Pass"),
            ("Egress", "EgressRule", "Pass"),
            ("Egress", "", "Reject"),
        ]
        .into_iter()
        .enumerate()
        {
            let mut r = rule(100 + i as u32, action, "10.1.0.2/32", 0);
            r.direction = dir.into();
            r.table = table.into();
            rules.push(r);
        }
        for f in policy_flows(&state(rules, &["10.1.0.3"]), None) {
            for i in &f.instructions {
                if let Instruction::GotoTable(t) = i {
                    assert!(*t > f.table_id, "table {} goes back to {t}", f.table_id);
                }
            }
        }
    }

    #[test]
    fn live_tags_get_drop_copies_in_metric_and_default_rule_tables() {
        let mut s = state(vec![rule(5, "Drop", "10.1.0.2/32", 0)], &["10.1.0.3"]);
        let before = policy_flows(&s, None);
        s.live_tags.insert(7);
        let after = policy_flows(&s, None);
        let tagged: Vec<_> = after
            .iter()
            .filter(|f| f.fields.fields.contains(&Oxm::ip_dscp(7)))
            .collect();
        // 2 metric tables x 2 families, and one isolated Pod in IngressDefaultRule.
        assert_eq!(tagged.len(), 5, "{tagged:#?}");
        assert_eq!(after.len(), before.len() + 5);
        for f in &tagged {
            assert_eq!(f.priority, prio::TRACE);
            assert!(matches!(
                f.instructions.first(),
                Some(Instruction::ApplyActions(a)) if a.contains(&Action::to_controller())
            ));
        }
        let default_rule = tagged
            .iter()
            .filter(|f| f.table_id == Table::IngressDefaultRule.id())
            .count();
        assert_eq!(default_rule, 1);
    }

    #[test]
    fn nothing_without_rules_or_isolation() {
        assert!(policy_flows(&DesiredState::default(), None).is_empty());
    }
}
