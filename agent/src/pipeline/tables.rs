//! Antrea's tables, in Antrea's order, with Antrea's names (reference §4; DESIGN.md
//! "Data plane"). Table ids are the position in [`Table::ALL`]; every table exists from the
//! start (with a default flow), so a feature adds flows to its table without renumbering.

/// One table of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    PipelineRootClassifier,
    ARPSpoofGuard,
    ARPResponder,
    Classifier,
    SpoofGuard,
    IPv6,
    ConntrackZone,
    ConntrackState,
    PreRoutingClassifier,
    SessionAffinity,
    ServiceLB,
    EndpointDNAT,
    AntreaPolicyEgressRule,
    EgressRule,
    EgressDefaultRule,
    EgressMetric,
    L3Forwarding,
    L3DecTTL,
    SNATMark,
    SNAT,
    L2ForwardingCalc,
    AntreaPolicyIngressRule,
    IngressRule,
    IngressDefaultRule,
    IngressMetric,
    ConntrackCommit,
    Output,
}

/// What a table does with a packet no flow of its own matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// Continue with the next table of the IP pipeline.
    Next,
    Drop,
}

impl Table {
    /// Every table, in pipeline order; the index is the OpenFlow table id.
    pub const ALL: [Table; 27] = [
        Table::PipelineRootClassifier,
        Table::ARPSpoofGuard,
        Table::ARPResponder,
        Table::Classifier,
        Table::SpoofGuard,
        Table::IPv6,
        Table::ConntrackZone,
        Table::ConntrackState,
        Table::PreRoutingClassifier,
        Table::SessionAffinity,
        Table::ServiceLB,
        Table::EndpointDNAT,
        Table::AntreaPolicyEgressRule,
        Table::EgressRule,
        Table::EgressDefaultRule,
        Table::EgressMetric,
        Table::L3Forwarding,
        Table::L3DecTTL,
        Table::SNATMark,
        Table::SNAT,
        Table::L2ForwardingCalc,
        Table::AntreaPolicyIngressRule,
        Table::IngressRule,
        Table::IngressDefaultRule,
        Table::IngressMetric,
        Table::ConntrackCommit,
        Table::Output,
    ];

    /// The OpenFlow table id.
    pub fn id(self) -> u8 {
        self as u8
    }

    /// The table with OpenFlow id `id`.
    pub fn from_id(id: u8) -> Option<Self> {
        Self::ALL.get(usize::from(id)).copied()
    }

    /// Antrea's name (used as `componentInfo` in observations).
    pub fn name(self) -> &'static str {
        match self {
            Self::PipelineRootClassifier => "PipelineRootClassifier",
            Self::ARPSpoofGuard => "ARPSpoofGuard",
            Self::ARPResponder => "ARPResponder",
            Self::Classifier => "Classifier",
            Self::SpoofGuard => "SpoofGuard",
            Self::IPv6 => "IPv6",
            Self::ConntrackZone => "ConntrackZone",
            Self::ConntrackState => "ConntrackState",
            Self::PreRoutingClassifier => "PreRoutingClassifier",
            Self::SessionAffinity => "SessionAffinity",
            Self::ServiceLB => "ServiceLB",
            Self::EndpointDNAT => "EndpointDNAT",
            Self::AntreaPolicyEgressRule => "AntreaPolicyEgressRule",
            Self::EgressRule => "EgressRule",
            Self::EgressDefaultRule => "EgressDefaultRule",
            Self::EgressMetric => "EgressMetric",
            Self::L3Forwarding => "L3Forwarding",
            Self::L3DecTTL => "L3DecTTL",
            Self::SNATMark => "SNATMark",
            Self::SNAT => "SNAT",
            Self::L2ForwardingCalc => "L2ForwardingCalc",
            Self::AntreaPolicyIngressRule => "AntreaPolicyIngressRule",
            Self::IngressRule => "IngressRule",
            Self::IngressDefaultRule => "IngressDefaultRule",
            Self::IngressMetric => "IngressMetric",
            Self::ConntrackCommit => "ConntrackCommit",
            Self::Output => "Output",
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_antrea_order() {
        for (i, t) in Table::ALL.iter().enumerate() {
            assert_eq!(usize::from(t.id()), i, "{}", t.name());
            assert_eq!(Table::from_id(t.id()), Some(*t));
        }
        assert!(Table::Classifier < Table::SpoofGuard);
        assert!(Table::L2ForwardingCalc < Table::IngressMetric);
        assert!(Table::ConntrackCommit < Table::Output);
        assert_eq!(Table::SpoofGuard.next(), Some(Table::IPv6));
        assert_eq!(Table::Output.next(), None);
    }
}
