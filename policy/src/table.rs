//! The node pipeline's tables, by Antrea's names and in Antrea's order (reference §4).
//!
//! Flow text uses the names (`table=IngressRule`); the agent maps a name to its OpenFlow table id
//! (e.g. with [`Table::default_id`], the position in this list) when it encodes flows.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! tables {
    ($($name:ident),* $(,)?) => {
        /// A table of the node pipeline (DESIGN.md "Data plane", reference §4).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum Table { $($name),* }

        impl Table {
            /// Every table, in pipeline order.
            pub const ALL: &'static [Table] = &[$(Table::$name),*];

            /// Antrea's table name.
            pub fn name(self) -> &'static str {
                match self { $(Table::$name => stringify!($name)),* }
            }
        }
    };
}

tables!(
    PipelineRootClassifier,
    Classifier,
    SpoofGuard,
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
);

impl Table {
    /// Position in [`Table::ALL`]: a table id the agent may use when it has no better mapping.
    pub fn default_id(self) -> u8 {
        Table::ALL
            .iter()
            .position(|t| *t == self)
            .and_then(|p| u8::try_from(p).ok())
            .unwrap_or(u8::MAX)
    }

    /// Looks a table up by its Antrea name.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.iter().copied().find(|t| t.name() == name)
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_names() {
        assert_eq!(Table::PipelineRootClassifier.default_id(), 0);
        assert!(Table::AntreaPolicyEgressRule < Table::EgressRule);
        assert!(Table::EgressMetric < Table::L3Forwarding);
        assert!(Table::AntreaPolicyIngressRule < Table::IngressRule);
        assert_eq!(
            Table::from_name("IngressDefaultRule"),
            Some(Table::IngressDefaultRule)
        );
        assert_eq!(Table::ALL.len(), 24);
    }
}
