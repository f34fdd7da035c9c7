//! Output model: compiled rules with resolved address sets, as Antrea's controller produces them
//! (its "internal NetworkPolicy" with groups expanded).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::PolicyError;
use crate::model::{PodRef, Protocol};
use crate::table::Table;

/// OpenFlow priority of K8s NetworkPolicy allow rules in `IngressRule` / `EgressRule`
/// (Antrea's "normal" priority).
pub const K8S_RULE_PRIORITY: u16 = 200;
/// OpenFlow priority of K8s isolation drops in `IngressDefaultRule` / `EgressDefaultRule`; above
/// every baseline-tier rule (Antrea keeps baseline rules in 10..=180).
pub const K8S_ISOLATION_PRIORITY: u16 = 200;

/// Traffic direction of a rule, seen from the applied-to Pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// What a matching rule does. K8s NetworkPolicy rules are always `Allow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RuleAction {
    Allow,
    Drop,
    Reject,
    Pass,
}

impl RuleAction {
    /// Parses Antrea's spelling (`Allow`, `Drop`, `Reject`, `Pass`; case-insensitive).
    pub fn parse(s: &str) -> Option<RuleAction> {
        match s.to_ascii_lowercase().as_str() {
            "allow" => Some(RuleAction::Allow),
            "drop" => Some(RuleAction::Drop),
            "reject" => Some(RuleAction::Reject),
            "pass" => Some(RuleAction::Pass),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Allow => "Allow",
            RuleAction::Drop => "Drop",
            RuleAction::Reject => "Reject",
            RuleAction::Pass => "Pass",
        }
    }
}

/// The kind of policy a rule comes from; names are the `networkPolicy` type prefixes of
/// reference §1.4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PolicyKind {
    K8sNetworkPolicy,
    AntreaNetworkPolicy,
    AntreaClusterNetworkPolicy,
}

impl PolicyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::K8sNetworkPolicy => "K8sNetworkPolicy",
            PolicyKind::AntreaNetworkPolicy => "AntreaNetworkPolicy",
            PolicyKind::AntreaClusterNetworkPolicy => "AntreaClusterNetworkPolicy",
        }
    }
}

/// Which policy a rule belongs to.
///
/// `Display` gives the observation's `networkPolicy` string (reference §1.4):
/// `"<Type>:<ns>/<name>"` for namespaced kinds, `"<Type>:<name>"` for cluster-scoped ones.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PolicyRef {
    pub kind: PolicyKind,
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}:{}/{}", self.kind.as_str(), ns, self.name),
            None => write!(f, "{}:{}", self.kind.as_str(), self.name),
        }
    }
}

/// A Pod a rule applies to (or an isolated Pod), with what the data plane needs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AppliedPod {
    pub pod: PodRef,
    pub node: String,
    pub ips: Vec<IpAddr>,
}

/// The peer side of a rule: sources of an ingress rule, destinations of an egress rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Peers {
    /// Any address (no `from` / `to`, or an empty list).
    Any,
    /// Exactly these addresses: Pod IPs as host routes plus ipBlock CIDRs (except already
    /// subtracted). May be empty: the rule then matches nothing.
    Addresses(BTreeSet<IpNet>),
}

impl Peers {
    /// True if no address can match.
    pub fn is_empty(&self) -> bool {
        matches!(self, Peers::Addresses(a) if a.is_empty())
    }
}

/// An inclusive L4 port range; a single port has `start == end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

/// A protocol with an optional destination port range; `ports: None` = every port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Service {
    pub protocol: Protocol,
    pub ports: Option<PortRange>,
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ports {
            None => write!(f, "{}", self.protocol),
            Some(r) if r.start == r.end => write!(f, "{}/{}", self.protocol, r.start),
            Some(r) => write!(f, "{}/{}-{}", self.protocol, r.start, r.end),
        }
    }
}

/// Stable identity of a compiled rule.
///
/// Built from the policy, the direction and the rule's name (Antrea-native) or a hash of its
/// content (K8s rules have no names), plus a `#<services>` suffix when a named port split the
/// rule. It does not change when only selector *members* change, so such updates are "changed"
/// rules with the same id and conjunction id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RuleId(pub String);

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Antrea-native ordering key: lower tier priority first, then lower policy priority, then rule
/// index (reference: Antrea "Antrea Policy ordering based on priorities").
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NativeOrder {
    pub tier_priority: i32,
    pub policy_priority: f64,
    pub rule_index: u32,
}

impl NativeOrder {
    /// Total order: precedence first (the rule evaluated first sorts first).
    pub fn cmp_precedence(&self, other: &NativeOrder) -> std::cmp::Ordering {
        self.tier_priority
            .cmp(&other.tier_priority)
            .then(self.policy_priority.total_cmp(&other.policy_priority))
            .then(self.rule_index.cmp(&other.rule_index))
    }
}

/// One compiled rule: everything the data plane needs to enforce it and the trace needs to name
/// it.
///
/// Invariants: `conj_id != 0` and unique among the rules of one [`CompiledPolicies`];
/// `services` empty = all ports and protocols; `applied_to` are the Pods the rule protects
/// (ingress: destinations, egress: sources).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompiledRule {
    pub id: RuleId,
    pub conj_id: u32,
    pub direction: Direction,
    pub action: RuleAction,
    pub policy: PolicyRef,
    /// Rule name (`networkPolicyRule`); empty for K8s rules.
    pub name: String,
    pub table: Table,
    /// OpenFlow priority inside `table`.
    pub priority: u16,
    /// Ordering key for Antrea-native rules; `None` for K8s rules.
    pub order: Option<NativeOrder>,
    pub applied_to: BTreeSet<AppliedPod>,
    pub peers: Peers,
    pub services: Vec<Service>,
}

/// Pods isolated by K8s NetworkPolicies (selected by a policy whose policyTypes include the
/// direction): traffic not allowed by a K8s rule is dropped in `*DefaultRule`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Isolation {
    pub ingress: BTreeSet<AppliedPod>,
    pub egress: BTreeSet<AppliedPod>,
}

/// Result of compiling a whole [`ClusterState`](crate::ClusterState).
///
/// Invalid policies are skipped and listed in `errors` (one per policy); everything else is
/// compiled (STYLE.md habit 4: a bad object never stops the rest).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CompiledPolicies {
    pub rules: BTreeMap<RuleId, CompiledRule>,
    pub isolation: Isolation,
    pub errors: Vec<PolicyError>,
}
