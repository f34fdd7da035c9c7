//! Flow generation: compiled rules → OpenFlow flows, as structured values that render to
//! ovs-ofctl syntax.
//!
//! Layout (Antrea's, reference §3.3-§4), for a rule with conjunction id `N` in table `T` at
//! OpenFlow priority `P`:
//!
//! ```text
//! T, P, <from address>      actions=conjunction(N,1/n)     ingress: peers;  egress: applied-to
//! T, P, <to address>        actions=conjunction(N,2/n)     ingress: applied-to; egress: peers
//! T, P, <proto>,tp_dst=…    actions=conjunction(N,3/3)     only when the rule has ports
//! T, P, conj_id=N           actions=<load N into the trace register>, goto_table:…
//! ```
//!
//! - Allow: `set_field:N->reg6` (ingress) / `reg5` (egress), then the direction's Metric table.
//! - Pass: same register, then the K8s table (`IngressRule` / `EgressRule`).
//! - Drop / Reject: `set_field:N->reg3,set_field:0x400/0x400->reg0` (APConjIDField +
//!   APDenyRegMark), then the Metric table, where `reg0=0x400/0x400,reg3=N` drops (Drop) or sends
//!   the packet to the controller with userdata `01.02` (NetworkPolicy category, reject
//!   operation) so the agent answers with a TCP RST / ICMP unreachable (Reject).
//! - An "any" peer is a clause matching only the address family (`ip` / `ipv6`), so every rule
//!   has at least two clauses, which OVS requires of a conjunction.
//! - K8s isolation: `IngressDefaultRule` / `EgressDefaultRule` at priority 200 drop traffic to /
//!   from each isolated Pod IP.
//!
//! Applied-to Pods are matched by IP (`nw_dst` for ingress, `nw_src` for egress) rather than by
//! OpenFlow port as Antrea does, so this crate needs no ofport knowledge.
//!
//! Flows sharing table, priority and match (e.g. one Pod IP in two rules' clauses) are merged
//! into one flow whose actions list every conjunction, as OVS requires; [`FlowSet`] does that.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::compiled::{
    CompiledRule, Direction, K8S_ISOLATION_PRIORITY, Peers, PortRange, RuleAction,
};
use crate::model::Protocol;
use crate::node::NodePolicyView;
use crate::table::Table;

/// Register holding the conjunction id of the egress allow/pass rule (TFEgressConjIDField).
pub const REG_EGRESS_CONJ: u8 = 5;
/// Register holding the conjunction id of the ingress allow/pass rule (TFIngressConjIDField).
pub const REG_INGRESS_CONJ: u8 = 6;
/// Register holding the conjunction id of the Antrea-native deny rule (APConjIDField).
pub const REG_DENY_CONJ: u8 = 3;
/// reg0 bit 10: APDenyRegMark.
pub const AP_DENY_MARK: u32 = 1 << 10;
/// Priority of deny flows in the Metric tables.
pub const METRIC_DENY_PRIORITY: u16 = 200;
/// Priority of the established/related bypass at the top of the first policy table.
pub const ESTABLISHED_BYPASS_PRIORITY: u16 = 64990;
/// Packet-in userdata of a Reject: category NetworkPolicy (1), operation reject (2).
pub const REJECT_USERDATA: [u8; 2] = [0x01, 0x02];

/// A match field. The variant order is the render order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Match {
    /// `ip` (IPv4).
    Ip,
    /// `ipv6`.
    Ipv6,
    /// `tcp`, `udp`, `sctp` or their `…6` forms.
    Proto { protocol: Protocol, v6: bool },
    /// `ct_state=<flags>`, e.g. `-new+est`.
    CtState(String),
    /// `conj_id=N`.
    ConjId(u32),
    /// `regR=value[/mask]`.
    Reg {
        reg: u8,
        value: u32,
        mask: Option<u32>,
    },
    /// `nw_src` / `ipv6_src`.
    Src(IpNet),
    /// `nw_dst` / `ipv6_dst`.
    Dst(IpNet),
    /// `tp_dst=port[/mask]`.
    TpDst { port: u16, mask: Option<u16> },
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Match::Ip => f.write_str("ip"),
            Match::Ipv6 => f.write_str("ipv6"),
            Match::Proto { protocol, v6 } => {
                let p = match protocol {
                    Protocol::Tcp => "tcp",
                    Protocol::Udp => "udp",
                    Protocol::Sctp => "sctp",
                };
                write!(f, "{p}{}", if *v6 { "6" } else { "" })
            }
            Match::CtState(s) => write!(f, "ct_state={s}"),
            Match::ConjId(id) => write!(f, "conj_id={id}"),
            Match::Reg { reg, value, mask } => match mask {
                Some(m) => write!(f, "reg{reg}={value:#x}/{m:#x}"),
                None => write!(f, "reg{reg}={value:#x}"),
            },
            Match::Src(net) => write_addr(f, "src", net),
            Match::Dst(net) => write_addr(f, "dst", net),
            Match::TpDst { port, mask } => match mask {
                Some(m) => write!(f, "tp_dst={port:#x}/{m:#x}"),
                None => write!(f, "tp_dst={port}"),
            },
        }
    }
}

fn write_addr(f: &mut fmt::Formatter<'_>, dir: &str, net: &IpNet) -> fmt::Result {
    let field = if net.addr().is_ipv4() { "nw" } else { "ipv6" };
    if net.prefix_len() == net.max_prefix_len() {
        write!(f, "{field}_{dir}={}", net.addr())
    } else {
        write!(f, "{field}_{dir}={net}")
    }
}

/// A flow action.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Action {
    /// `conjunction(id,clause/n_clauses)`; clause is 1-based.
    Conjunction { id: u32, clause: u8, n_clauses: u8 },
    /// `set_field:value[/mask]->regR`.
    SetReg {
        reg: u8,
        value: u32,
        mask: Option<u32>,
    },
    /// `goto_table:T`.
    Goto(Table),
    /// `controller(userdata=…)`: the agent handles the packet-in.
    Controller { userdata: Vec<u8> },
    /// `drop`.
    Drop,
}

impl Action {
    fn render(&self, table_name: &dyn Fn(Table) -> String) -> String {
        match self {
            Action::Conjunction {
                id,
                clause,
                n_clauses,
            } => format!("conjunction({id},{clause}/{n_clauses})"),
            Action::SetReg { reg, value, mask } => match mask {
                Some(m) => format!("set_field:{value:#x}/{m:#x}->reg{reg}"),
                None => format!("set_field:{value:#x}->reg{reg}"),
            },
            Action::Goto(t) => format!("goto_table:{}", table_name(*t)),
            Action::Controller { userdata } => {
                let hex: Vec<String> = userdata.iter().map(|b| format!("{b:02x}")).collect();
                format!("controller(userdata={})", hex.join("."))
            }
            Action::Drop => "drop".to_string(),
        }
    }
}

/// One flow. Matches are kept sorted (render order), so equal flows compare equal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Flow {
    pub table: Table,
    pub priority: u16,
    pub matches: Vec<Match>,
    pub actions: Vec<Action>,
}

impl Flow {
    pub fn new(table: Table, priority: u16, mut matches: Vec<Match>, actions: Vec<Action>) -> Self {
        matches.sort();
        matches.dedup();
        Flow {
            table,
            priority,
            matches,
            actions,
        }
    }

    /// OVS identifies a flow by table, priority and match: this is that key.
    pub fn key(&self) -> FlowKey {
        FlowKey {
            table: self.table,
            priority: self.priority,
            matches: self.matches.clone(),
        }
    }

    /// ovs-ofctl text with tables as numbers from `table_id` (for `ovs-ofctl add-flow`).
    pub fn to_ofctl(&self, table_id: &dyn Fn(Table) -> u8) -> String {
        self.render(&|t| table_id(t).to_string())
    }

    fn render(&self, table_name: &dyn Fn(Table) -> String) -> String {
        let mut s = format!(
            "table={}, priority={}",
            table_name(self.table),
            self.priority
        );
        for m in &self.matches {
            s.push(',');
            s.push_str(&m.to_string());
        }
        let actions: Vec<String> = self.actions.iter().map(|a| a.render(table_name)).collect();
        s.push_str(" actions=");
        s.push_str(&actions.join(","));
        s
    }
}

impl fmt::Display for Flow {
    /// ovs-ofctl dump-flows syntax with table names, e.g.
    /// `table=IngressRule, priority=200,ip,nw_src=10.0.0.1 actions=conjunction(7,1/3)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(&|t| t.name().to_string()))
    }
}

/// Table + priority + match: what OVS keys a flow on.
///
/// Ordered like `ovs-ofctl dump-flows`: by table in pipeline order, then highest priority first,
/// then by match.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FlowKey {
    pub table: Table,
    pub priority: u16,
    pub matches: Vec<Match>,
}

impl Ord for FlowKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.table
            .cmp(&other.table)
            .then(other.priority.cmp(&self.priority))
            .then(self.matches.cmp(&other.matches))
    }
}

impl PartialOrd for FlowKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A set of flows keyed like OVS keys them; inserting a flow whose key exists merges
/// conjunction actions (sorted, deduplicated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowSet {
    flows: BTreeMap<FlowKey, Vec<Action>>,
}

impl FlowSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a flow. Same key with conjunction-only actions on both sides → actions merged;
    /// otherwise the first flow for a key wins (generation never produces such a conflict).
    pub fn insert(&mut self, flow: Flow) {
        let key = flow.key();
        match self.flows.get_mut(&key) {
            None => {
                self.flows.insert(key, flow.actions);
            }
            Some(existing) => {
                let all_conj =
                    |a: &[Action]| a.iter().all(|x| matches!(x, Action::Conjunction { .. }));
                if all_conj(existing) && all_conj(&flow.actions) {
                    existing.extend(flow.actions);
                    existing.sort();
                    existing.dedup();
                }
            }
        }
    }

    pub fn extend(&mut self, flows: impl IntoIterator<Item = Flow>) {
        for f in flows {
            self.insert(f);
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Flows in [`FlowKey`] order (table, priority descending, match).
    pub fn iter(&self) -> impl Iterator<Item = Flow> + '_ {
        self.flows.iter().map(|(k, a)| Flow {
            table: k.table,
            priority: k.priority,
            matches: k.matches.clone(),
            actions: a.clone(),
        })
    }

    /// Every flow rendered with table names, one per line, in stable order.
    pub fn to_strings(&self) -> Vec<String> {
        self.iter().map(|f| f.to_string()).collect()
    }

    pub fn get(&self, key: &FlowKey) -> Option<&[Action]> {
        self.flows.get(key).map(Vec::as_slice)
    }
}

/// Flow changes to go from one [`FlowSet`] to another: `add` new keys, `modify` keys whose
/// actions changed (ovs-ofctl `mod-flows --strict`), `delete` keys that vanished (`del-flows
/// --strict`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowDiff {
    pub add: Vec<Flow>,
    pub modify: Vec<Flow>,
    pub delete: Vec<Flow>,
}

impl FlowDiff {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.modify.is_empty() && self.delete.is_empty()
    }

    pub fn len(&self) -> usize {
        self.add.len() + self.modify.len() + self.delete.len()
    }
}

/// The minimal set of flow operations from `old` to `new`.
pub fn diff_flows(old: &FlowSet, new: &FlowSet) -> FlowDiff {
    let mut d = FlowDiff::default();
    for f in new.iter() {
        match old.get(&f.key()) {
            None => d.add.push(f),
            Some(a) if a != f.actions.as_slice() => d.modify.push(f),
            Some(_) => {}
        }
    }
    for f in old.iter() {
        if new.get(&f.key()).is_none() {
            d.delete.push(f);
        }
    }
    d
}

/// Splits an inclusive port range into `(value, mask)` pairs OVS can match
/// (`mask == 0xffff` renders as an exact port).
pub fn port_range_masks(range: PortRange) -> Vec<(u16, u16)> {
    let (mut s, e) = (u32::from(range.start), u32::from(range.end));
    let mut out = Vec::new();
    while s <= e {
        let mut size = 1u32;
        while size < 0x1_0000 && s % (size * 2) == 0 && s + size * 2 - 1 <= e {
            size *= 2;
        }
        let mask = !(size - 1) & 0xffff;
        out.push((
            u16::try_from(s).unwrap_or(u16::MAX),
            u16::try_from(mask).unwrap_or(u16::MAX),
        ));
        s += size;
    }
    out
}

fn tp_dst(value: u16, mask: u16) -> Option<Match> {
    match mask {
        0 => None,
        0xffff => Some(Match::TpDst {
            port: value,
            mask: None,
        }),
        m => Some(Match::TpDst {
            port: value,
            mask: Some(m),
        }),
    }
}

fn family_match(v6: bool) -> Match {
    if v6 { Match::Ipv6 } else { Match::Ip }
}

fn is_v6(net: &IpNet) -> bool {
    matches!(net, IpNet::V6(_))
}

/// Table the trace-register load jumps to after an allow.
fn metric_table(direction: Direction) -> Table {
    match direction {
        Direction::Ingress => Table::IngressMetric,
        Direction::Egress => Table::EgressMetric,
    }
}

/// The flows enforcing one rule on a Node (use a rule from a [`NodePolicyView`], whose
/// `applied_to` is already narrowed to the Node).
///
/// Empty when the rule can match nothing here: no peer address, or no applied-to IP of a family
/// for which there is a peer.
pub fn rule_flows(rule: &CompiledRule) -> Vec<Flow> {
    let mut out = Vec::new();
    let id = rule.conj_id;
    let n: u8 = if rule.services.is_empty() { 2 } else { 3 };
    let (t, p) = (rule.table, rule.priority);
    let conj = |clause: u8| Action::Conjunction {
        id,
        clause,
        n_clauses: n,
    };
    let mut any_family = false;
    for v6 in [false, true] {
        let applied: Vec<IpNet> = rule
            .applied_to
            .iter()
            .flat_map(|p| p.ips.iter().copied())
            .filter(|ip| matches!(ip, IpAddr::V6(_)) == v6)
            .map(IpNet::from)
            .collect();
        if applied.is_empty() {
            continue;
        }
        // None = any address of the family.
        let peers: Option<Vec<IpNet>> = match &rule.peers {
            Peers::Any => None,
            Peers::Addresses(set) => {
                let v: Vec<IpNet> = set.iter().copied().filter(|n| is_v6(n) == v6).collect();
                if v.is_empty() {
                    continue;
                }
                Some(v)
            }
        };
        any_family = true;
        let fam = family_match(v6);
        let applied_clause = |net: IpNet| match rule.direction {
            Direction::Ingress => vec![fam.clone(), Match::Dst(net)],
            Direction::Egress => vec![fam.clone(), Match::Src(net)],
        };
        let peer_clause = |net: Option<IpNet>| {
            let mut m = vec![fam.clone()];
            if let Some(net) = net.filter(|n| n.prefix_len() > 0) {
                m.push(match rule.direction {
                    Direction::Ingress => Match::Src(net),
                    Direction::Egress => Match::Dst(net),
                });
            }
            m
        };
        let (applied_no, peer_no) = match rule.direction {
            Direction::Ingress => (2, 1),
            Direction::Egress => (1, 2),
        };
        for net in applied {
            out.push(Flow::new(t, p, applied_clause(net), vec![conj(applied_no)]));
        }
        match &peers {
            None => out.push(Flow::new(t, p, peer_clause(None), vec![conj(peer_no)])),
            Some(list) => {
                for net in list {
                    out.push(Flow::new(
                        t,
                        p,
                        peer_clause(Some(*net)),
                        vec![conj(peer_no)],
                    ));
                }
            }
        }
        for svc in &rule.services {
            let proto = Match::Proto {
                protocol: svc.protocol,
                v6,
            };
            match svc.ports {
                None => out.push(Flow::new(t, p, vec![proto], vec![conj(3)])),
                Some(range) => {
                    for (value, mask) in port_range_masks(range) {
                        let mut m = vec![proto.clone()];
                        m.extend(tp_dst(value, mask));
                        out.push(Flow::new(t, p, m, vec![conj(3)]));
                    }
                }
            }
        }
    }
    if !any_family {
        return Vec::new();
    }
    let metric = metric_table(rule.direction);
    let trace_reg = match rule.direction {
        Direction::Ingress => REG_INGRESS_CONJ,
        Direction::Egress => REG_EGRESS_CONJ,
    };
    let load = |reg: u8| Action::SetReg {
        reg,
        value: id,
        mask: None,
    };
    let deny_mark = Action::SetReg {
        reg: 0,
        value: AP_DENY_MARK,
        mask: Some(AP_DENY_MARK),
    };
    let actions = match rule.action {
        RuleAction::Allow => vec![load(trace_reg), Action::Goto(metric)],
        RuleAction::Pass => {
            let next = match rule.direction {
                Direction::Ingress => Table::IngressRule,
                Direction::Egress => Table::EgressRule,
            };
            vec![load(trace_reg), Action::Goto(next)]
        }
        RuleAction::Drop | RuleAction::Reject => {
            vec![load(REG_DENY_CONJ), deny_mark, Action::Goto(metric)]
        }
    };
    out.push(Flow::new(t, p, vec![Match::ConjId(id)], actions));
    let deny_match = || {
        vec![
            Match::Reg {
                reg: 0,
                value: AP_DENY_MARK,
                mask: Some(AP_DENY_MARK),
            },
            Match::Reg {
                reg: REG_DENY_CONJ,
                value: id,
                mask: None,
            },
        ]
    };
    match rule.action {
        RuleAction::Drop => out.push(Flow::new(
            metric,
            METRIC_DENY_PRIORITY,
            deny_match(),
            vec![Action::Drop],
        )),
        RuleAction::Reject => out.push(Flow::new(
            metric,
            METRIC_DENY_PRIORITY,
            deny_match(),
            vec![Action::Controller {
                userdata: REJECT_USERDATA.to_vec(),
            }],
        )),
        RuleAction::Allow | RuleAction::Pass => {}
    }
    out
}

/// K8s isolation drops for one Node's isolated Pods.
pub fn isolation_flows(view: &NodePolicyView) -> Vec<Flow> {
    let mut out = Vec::new();
    for (pods, table, ingress) in [
        (&view.isolation.ingress, Table::IngressDefaultRule, true),
        (&view.isolation.egress, Table::EgressDefaultRule, false),
    ] {
        for pod in pods {
            for ip in &pod.ips {
                let net = IpNet::from(*ip);
                let addr = if ingress {
                    Match::Dst(net)
                } else {
                    Match::Src(net)
                };
                out.push(Flow::new(
                    table,
                    K8S_ISOLATION_PRIORITY,
                    vec![family_match(ip.is_ipv6()), addr],
                    vec![Action::Drop],
                ));
            }
        }
    }
    out
}

/// Every policy flow of a Node: all rules of the view plus isolation drops. Does not include
/// [`base_flows`].
pub fn node_flows(view: &NodePolicyView) -> FlowSet {
    let mut set = FlowSet::new();
    for rule in view.rules.values() {
        set.extend(rule_flows(rule));
    }
    set.extend(isolation_flows(view));
    set
}

/// The policy tables' fixed flows, installed once per pipeline: established/related traffic
/// skips policy (it was checked when the connection was new), and each table's miss goes to the
/// next one (Antrea's order, reference §4). Offered for the agent; it may own these instead.
pub fn base_flows() -> Vec<Flow> {
    let mut out = Vec::new();
    for (first, metric) in [
        (Table::AntreaPolicyEgressRule, Table::EgressMetric),
        (Table::AntreaPolicyIngressRule, Table::IngressMetric),
    ] {
        for state in ["-new+est", "-new+rel"] {
            out.push(Flow::new(
                first,
                ESTABLISHED_BYPASS_PRIORITY,
                vec![Match::CtState(state.to_string())],
                vec![Action::Goto(metric)],
            ));
        }
    }
    for (table, next) in [
        (Table::AntreaPolicyEgressRule, Table::EgressRule),
        (Table::EgressRule, Table::EgressDefaultRule),
        (Table::EgressDefaultRule, Table::EgressMetric),
        (Table::EgressMetric, Table::L3Forwarding),
        (Table::AntreaPolicyIngressRule, Table::IngressRule),
        (Table::IngressRule, Table::IngressDefaultRule),
        (Table::IngressDefaultRule, Table::IngressMetric),
        (Table::IngressMetric, Table::ConntrackCommit),
    ] {
        out.push(Flow::new(table, 0, Vec::new(), vec![Action::Goto(next)]));
    }
    out
}

#[cfg(test)]
mod tests;
