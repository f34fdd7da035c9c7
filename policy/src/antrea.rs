//! Serde types for the subset of Antrea-native policy CRDs (`crd.antrea.io/v1beta1`) we compile:
//! `NetworkPolicy` (namespaced, "ANP"), `ClusterNetworkPolicy` ("ACNP") and `Tier`.
//!
//! Field names are Antrea's JSON names, so the adapter can deserialize watched objects (or the
//! lab's YAML) straight into these types. Values are checked when compiling, not here, so a bad
//! value yields a [`PolicyError`](crate::PolicyError) naming the field instead of a serde error.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

/// The static Tiers every Antrea cluster has, with their priorities (lower = evaluated first).
/// `application` is the default Tier of a policy with no `spec.tier`; `baseline` rules are
/// enforced after K8s NetworkPolicies (they live in the `*DefaultRule` tables, reference §4).
pub const DEFAULT_TIERS: [(&str, i32); 6] = [
    ("emergency", 50),
    ("securityops", 100),
    ("networkops", 150),
    ("platform", 200),
    ("application", 250),
    ("baseline", 253),
];

/// Name of the Tier used when `spec.tier` is absent.
pub const DEFAULT_TIER: &str = "application";
/// Priority of the `baseline` Tier; rules in it go to the default-rule tables.
pub const BASELINE_TIER_PRIORITY: i32 = 253;

/// `crd.antrea.io/v1beta1` `NetworkPolicy` (namespaced).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AntreaNetworkPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: AntreaPolicySpec,
}

/// `crd.antrea.io/v1beta1` `ClusterNetworkPolicy` (cluster-scoped).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AntreaClusterNetworkPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: AntreaPolicySpec,
}

/// Spec shared by ANP and ACNP.
///
/// Contract (checked at compile time): `priority` in 1..=10000; either `appliedTo` is set at
/// policy level, or every rule has its own `appliedTo`, never both.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AntreaPolicySpec {
    /// Tier name; absent = `application`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Policy priority inside its Tier (lower first).
    #[serde(default)]
    pub priority: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applied_to: Vec<AppliedTo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<AntreaRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<AntreaRule>,
}

/// An `appliedTo` entry: Pods selected by `podSelector` and/or `namespaceSelector`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedTo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}

/// One ingress or egress rule of an Antrea-native policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AntreaRule {
    /// Rule name, reported as `networkPolicyRule`; generated when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `Allow`, `Drop`, `Reject` or `Pass`.
    #[serde(default)]
    pub action: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<AntreaPeer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<AntreaPeer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<AntreaPort>,
    /// Rule-level appliedTo (only when the policy has no spec.appliedTo).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applied_to: Vec<AppliedTo>,
}

/// A peer of an Antrea-native rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AntreaPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<AntreaIpBlock>,
}

/// `ipBlock` of an Antrea-native peer (Antrea has only `cidr`; `except` is accepted as in K8s).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AntreaIpBlock {
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

/// A port of an Antrea-native rule (same semantics as K8s NetworkPolicyPort).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AntreaPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<i32>,
}

/// `crd.antrea.io/v1beta1` `Tier`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tier {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: TierSpec,
}

/// `Tier.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TierSpec {
    pub priority: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Tier {
    /// A Tier with a name and priority (test and lab helper).
    pub fn new(name: &str, priority: i32) -> Self {
        Tier {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            spec: TierSpec {
                priority,
                description: None,
            },
            ..Default::default()
        }
    }

    /// `metadata.name`, or "" when absent.
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("")
    }
}

/// Priority of the static Tier `name` (case-insensitive), if it is one.
pub fn default_tier_priority(name: &str) -> Option<i32> {
    let lower = name.to_ascii_lowercase();
    DEFAULT_TIERS
        .iter()
        .find(|(n, _)| *n == lower)
        .map(|(_, p)| *p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deserializes_acnp_yaml_shape() {
        let json = r#"{
          "apiVersion": "crd.antrea.io/v1beta1",
          "kind": "ClusterNetworkPolicy",
          "metadata": {"name": "deny-db"},
          "spec": {
            "tier": "securityops",
            "priority": 5.5,
            "appliedTo": [{"podSelector": {"matchLabels": {"app": "db"}}}],
            "ingress": [{
              "name": "drop-3306",
              "action": "Drop",
              "from": [{"namespaceSelector": {}}, {"ipBlock": {"cidr": "10.0.0.0/8"}}],
              "ports": [{"protocol": "TCP", "port": 3306, "endPort": 3310}, {"port": "mysql"}]
            }]
          }
        }"#;
        let acnp: AntreaClusterNetworkPolicy = match serde_json::from_str(json) {
            Ok(p) => p,
            Err(e) => panic!("deserialize: {e}"),
        };
        assert_eq!(acnp.spec.tier.as_deref(), Some("securityops"));
        assert_eq!(acnp.spec.priority, 5.5);
        let rule = &acnp.spec.ingress[0];
        assert_eq!(rule.action, "Drop");
        assert_eq!(rule.from.len(), 2);
        assert_eq!(rule.ports[0].end_port, Some(3310));
        assert_eq!(
            rule.ports[1].port,
            Some(IntOrString::String("mysql".into()))
        );
    }

    #[test]
    fn default_tiers_case_insensitive() {
        assert_eq!(default_tier_priority("Application"), Some(250));
        assert_eq!(default_tier_priority("baseline"), Some(253));
        assert_eq!(default_tier_priority("custom"), None);
    }
}
