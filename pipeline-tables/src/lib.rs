//! Antrea's OVS pipeline tables, in Antrea's order, with Antrea's names: the one list the agent
//! (which programs br-int by table id) and the policy compiler (which names the table each rule
//! belongs in; the adapter sends that name to the agent) share (Antrea's OVS pipeline).
//!
//! ```text
//!                 ┌─ ARPSpoofGuard ─► ARPResponder                       (ARP pipeline)
//!  PipelineRoot ──┤
//!  Classifier     └─ Classifier ─► SpoofGuard ─► … ─► ConntrackCommit ─► Output   (IP pipeline)
//!
//!  traceflow-policy: Table::name()  → rule.table = "IngressRule"  (NodeState rules)
//!  traceflow-agent:  Table::id()    → OpenFlow table id 22      (br-int)
//! ```
//!
//! A table's OpenFlow id is its position in [`Table::ALL`]. Every table exists from the start
//! (with a default flow, see [`Table::miss`]), so a feature adds flows to its table without
//! renumbering. The list is a subsequence of Antrea's: tables for features we do not implement
//! (UnSNAT, NodePortMark, TrafficControl, VLAN, …) are left out, so our ids are
//! smaller than Antrea's indicative numbers, but the order is the same.
//!
//! No dependencies; the `serde` feature serializes a table as its name.

use std::fmt;

/// Declares [`Table`] once; [`Table::ALL`], [`Table::name`] and the ids follow from the
/// declaration order, so they cannot drift apart.
macro_rules! tables {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// One table of the node pipeline (reference §4). Ordered by pipeline position.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
        #[repr(u8)]
        pub enum Table {
            $($(#[$doc])* $name,)*
        }

        impl Table {
            /// Every table, in pipeline order; the index is the OpenFlow table id.
            pub const ALL: [Table; [$(Table::$name),*].len()] = [$(Table::$name),*];

            /// Antrea's name (flow text `table=<name>`, `componentInfo` in observations).
            pub fn name(self) -> &'static str {
                match self {
                    $(Table::$name => stringify!($name),)*
                }
            }
        }
    };
}

tables!(
    /// Splits ARP from IP, drops the rest; where a trace packet-out enters (`OFPP_TABLE`).
    PipelineRootClassifier,
    /// (ARP) Drops spoofed ARP from Pods and the gateway.
    ARPSpoofGuard,
    /// (ARP) Answers ARP for remote gateways; NORMAL otherwise.
    ARPResponder,
    /// Classifies by in_port (gateway, tunnel, Pod) and sets the source marks.
    Classifier,
    /// Checks a Pod's source IP and MAC.
    SpoofGuard,
    /// Lets IPv6 link-local, multicast and Neighbor Discovery through.
    IPv6,
    /// `ct` in the Pod zone, with NAT.
    ConntrackZone,
    /// Drops `+inv`; tracked non-new connections skip load balancing.
    ConntrackState,
    /// Resubmits to SessionAffinity and ServiceLB.
    PreRoutingClassifier,
    /// Learned Service session-affinity entries.
    SessionAffinity,
    /// Selects a Service Endpoint (groups).
    ServiceLB,
    /// DNATs to the selected Endpoint.
    EndpointDNAT,
    /// Antrea-native egress rules (non-baseline tiers).
    AntreaPolicyEgressRule,
    /// K8s NetworkPolicy egress allow rules.
    EgressRule,
    /// K8s NetworkPolicy egress isolation drops; baseline-tier Antrea egress rules.
    EgressDefaultRule,
    /// Egress rule metrics; Antrea-native egress drops.
    EgressMetric,
    /// Sets MACs and tunnel destination by destination.
    L3Forwarding,
    /// Egress SNAT: marks a selected Pod's traffic leaving the cluster for SNAT (`pkt_mark`),
    /// or sends it to the remote egress Node through the tunnel (`RemoteSNATRegMark`).
    EgressMark,
    /// Decrements the TTL.
    L3DecTTL,
    /// Marks connections that need SNAT.
    SNATMark,
    /// In-pipeline SNAT (hairpin, NodePort).
    SNAT,
    /// Destination MAC to output port (reg1).
    L2ForwardingCalc,
    /// Antrea-native ingress rules (non-baseline tiers).
    AntreaPolicyIngressRule,
    /// K8s NetworkPolicy ingress allow rules.
    IngressRule,
    /// K8s NetworkPolicy ingress isolation drops; baseline-tier Antrea ingress rules.
    IngressDefaultRule,
    /// Ingress rule metrics; Antrea-native ingress drops.
    IngressMetric,
    /// Commits non-Service connections.
    ConntrackCommit,
    /// Outputs to the reg1 port, hairpins, sends to the controller; drops otherwise.
    Output,
);

/// What a table does with a packet no flow of its own matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// Continue with the next table of the IP pipeline.
    Next,
    Drop,
}

impl Table {
    /// The OpenFlow table id (the position in [`Table::ALL`]).
    pub fn id(self) -> u8 {
        self as u8
    }

    /// The table with OpenFlow id `id`; `None` past the last table.
    pub fn from_id(id: u8) -> Option<Self> {
        Self::ALL.get(usize::from(id)).copied()
    }

    /// Looks a table up by its Antrea name (case-sensitive, as in flow text).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|t| t.name() == name)
    }

    /// The next table of the IP pipeline (`None` after Output; the ARP tables end in
    /// ARPResponder and have no successor).
    pub fn next(self) -> Option<Self> {
        match self {
            Self::ARPSpoofGuard => Some(Self::ARPResponder),
            Self::ARPResponder | Self::Output => None,
            Self::PipelineRootClassifier => Some(Self::Classifier),
            t => Self::from_id(t.id() + 1),
        }
    }

    /// Default behaviour on a miss: validation and classification tables drop, the rest
    /// continue to the next table (Antrea's "goto next" default flows).
    pub fn miss(self) -> Miss {
        match self {
            Self::PipelineRootClassifier
            | Self::ARPSpoofGuard
            | Self::Classifier
            | Self::SpoofGuard
            | Self::Output => Miss::Drop,
            _ => Miss::Next,
        }
    }
}

impl fmt::Display for Table {
    /// Antrea's name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Antrea's tables in the row order of reference §4 (v1.15 flexible pipeline, ARP tables
    /// where the reference lists them). Ours must be a subsequence of this.
    const ANTREA: &[&str] = &[
        "PipelineRootClassifier",
        "ARPSpoofGuard",
        "ARPResponder",
        "Classifier",
        "SpoofGuard",
        "IPv6",
        "PipelineIPClassifier",
        "UnSNAT",
        "ConntrackZone",
        "ConntrackState",
        "PreRoutingClassifier",
        "NodePortMark",
        "SessionAffinity",
        "ServiceLB",
        "DSRServiceMark",
        "EndpointDNAT",
        "DNAT",
        "EgressSecurityClassifier",
        "AntreaPolicyEgressRule",
        "EgressRule",
        "EgressDefaultRule",
        "EgressMetric",
        "L3Forwarding",
        "EgressMark",
        "EgressQoS",
        "L3DecTTL",
        "SNATMark",
        "SNAT",
        "L2ForwardingCalc",
        "TrafficControl",
        "IngressSecurityClassifier",
        "AntreaPolicyIngressRule",
        "IngressRule",
        "IngressDefaultRule",
        "IngressMetric",
        "ConntrackCommit",
        "VLAN",
        "Output",
    ];

    #[test]
    fn order_and_names_match_antrea() {
        let mut last = None;
        for t in Table::ALL {
            let pos = ANTREA.iter().position(|n| *n == t.name());
            assert!(pos.is_some(), "{t} is not an Antrea table");
            assert!(pos > last, "{t} is out of Antrea's order");
            last = pos;
        }
        // Same first and last table as Antrea: packet-out enters at id 0, Output ends it.
        assert_eq!(
            Table::ALL.first().map(|t| t.name()),
            ANTREA.first().copied()
        );
        assert_eq!(Table::ALL.last().map(|t| t.name()), ANTREA.last().copied());
    }

    #[test]
    fn ids_are_positions() {
        for (i, t) in Table::ALL.iter().enumerate() {
            assert_eq!(usize::from(t.id()), i, "{t}");
            assert_eq!(Table::from_id(t.id()), Some(*t));
            assert_eq!(Table::from_name(t.name()), Some(*t));
            assert_eq!(t.to_string(), t.name());
        }
        assert_eq!(Table::ALL.len(), 28);
        assert_eq!(Table::PipelineRootClassifier.id(), 0);
        assert_eq!(Table::SpoofGuard.id(), 4);
        assert_eq!(Table::EgressMark.id(), 17);
        assert_eq!(Table::IngressMetric.id(), 25);
        assert_eq!(Table::Output.id(), 27);
        assert_eq!(Table::from_id(28), None);
        assert_eq!(Table::from_name("ingressrule"), None);
        assert!(Table::AntreaPolicyEgressRule < Table::EgressRule);
        assert!(Table::AntreaPolicyIngressRule < Table::IngressRule);
    }

    #[test]
    fn ip_pipeline_reaches_output_through_every_ip_table() {
        let mut seen = vec![Table::PipelineRootClassifier];
        while let Some(n) = seen.last().and_then(|t| t.next()) {
            seen.push(n);
        }
        let ip: Vec<Table> = Table::ALL
            .into_iter()
            .filter(|t| !matches!(t, Table::ARPSpoofGuard | Table::ARPResponder))
            .collect();
        assert_eq!(seen, ip);
        assert_eq!(Table::ARPSpoofGuard.next(), Some(Table::ARPResponder));
        assert_eq!(Table::ARPResponder.next(), None);
        assert_eq!(Table::SpoofGuard.next(), Some(Table::IPv6));
        assert_eq!(Table::SpoofGuard.miss(), Miss::Drop);
        assert_eq!(Table::IngressRule.miss(), Miss::Next);
    }
}
