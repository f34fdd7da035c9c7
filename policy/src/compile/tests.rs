//! Compilation tests over `mk_pod()` / `mk_ns()` fixtures (see `crate::fixtures::lab`).

use std::collections::BTreeSet;

use ipnet::IpNet;
use serde_json::json;

use super::PolicyCompiler;
use crate::antrea::Tier;
use crate::compiled::{
    CompiledPolicies, CompiledRule, Direction, K8S_ISOLATION_PRIORITY, Peers, PortRange,
    RuleAction, Service,
};
use crate::error::PolicyError;
use crate::fixtures::*;
use crate::model::{ClusterState, PodRef, Protocol};
use crate::table::Table;

fn compile(state: &ClusterState) -> CompiledPolicies {
    PolicyCompiler::new().compile(state)
}

fn pods(rule: &CompiledRule) -> Vec<String> {
    rule.applied_to.iter().map(|p| p.pod.to_string()).collect()
}

fn nets(v: &[&str]) -> Peers {
    Peers::Addresses(v.iter().map(|s| s.parse::<IpNet>().expect("net")).collect())
}

fn only_rule(c: &CompiledPolicies) -> &CompiledRule {
    assert_eq!(c.errors, vec![], "unexpected errors");
    assert_eq!(c.rules.len(), 1, "rules: {:#?}", c.rules.keys());
    c.rules.values().next().expect("one rule")
}

/// Each rule's peers and services, in rule order.
fn peers_and_services(c: &CompiledPolicies) -> Vec<(Peers, Vec<Service>)> {
    c.rules
        .values()
        .map(|r| (r.peers.clone(), r.services.clone()))
        .collect()
}

/// Each rule's id and conjunction id, in rule order.
fn rule_ids(c: &CompiledPolicies) -> Vec<(String, u32)> {
    c.rules
        .values()
        .map(|r| (r.id.0.clone(), r.conj_id))
        .collect()
}

fn tcp(port: u16) -> Service {
    Service {
        protocol: Protocol::Tcp,
        ports: Some(PortRange {
            start: port,
            end: port,
        }),
    }
}

fn np_ingress(
    name: &str,
    pod_selector: serde_json::Value,
    from: serde_json::Value,
) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "namespace": "web"},
        "spec": {
            "podSelector": pod_selector,
            "ingress": [{"from": from, "ports": [{"protocol": "TCP", "port": 80}]}]
        }
    })
}

// ---------------------------------------------------------------- K8s NetworkPolicy

#[test]
fn k8s_pod_selector_ingress_rule() {
    let mut s = lab();
    s.apply_k8s_policy(k8s_np(np_ingress(
        "allow-api",
        json!({"matchLabels": {"app": "api"}}),
        json!([{"podSelector": {"matchLabels": {"app": "client"}}}]),
    )));
    let c = compile(&s);
    let r = only_rule(&c);
    assert_eq!(r.policy.to_string(), "K8sNetworkPolicy:web/allow-api");
    assert_eq!(r.direction, Direction::Ingress);
    assert_eq!(r.action, RuleAction::Allow);
    assert_eq!(r.table, Table::IngressRule);
    assert_eq!(r.priority, 200);
    assert_eq!(r.name, "");
    assert_ne!(r.conj_id, 0);
    assert_eq!(pods(r), vec!["web/api", "web/api2"]);
    assert_eq!(r.peers, nets(&["10.0.1.2/32", "fd00:1::2/128"]));
    assert_eq!(r.services, vec![tcp(80)]);
    let iso: Vec<String> = c
        .isolation
        .ingress
        .iter()
        .map(|p| p.pod.to_string())
        .collect();
    assert_eq!(iso, vec!["web/api", "web/api2"]);
    assert!(c.isolation.egress.is_empty());
}

#[test]
fn k8s_namespace_and_combined_selectors() {
    let cases = [
        // namespaceSelector alone: every Pod in matching Namespaces.
        (
            json!([{"namespaceSelector": {"matchLabels": {"team": "b"}}}]),
            vec!["10.0.2.4/32"],
        ),
        // Both: Pods matching podSelector inside matching Namespaces.
        (
            json!([{"namespaceSelector": {"matchLabels": {"team": "a"}},
                    "podSelector": {"matchLabels": {"app": "client"}}}]),
            vec!["10.0.1.2/32", "fd00:1::2/128"],
        ),
        // Combined selector that matches nothing.
        (
            json!([{"namespaceSelector": {"matchLabels": {"team": "b"}},
                    "podSelector": {"matchLabels": {"app": "client"}}}]),
            vec![],
        ),
        // Empty namespaceSelector: all Pods of all Namespaces.
        (
            json!([{"namespaceSelector": {}}]),
            vec![
                "10.0.1.2/32",
                "10.0.1.3/32",
                "10.0.2.3/32",
                "10.0.2.4/32",
                "fd00:1::2/128",
                "fd00:1::3/128",
            ],
        ),
        // Empty podSelector alone: all Pods of the policy's Namespace.
        (
            json!([{"podSelector": {}}]),
            vec![
                "10.0.1.2/32",
                "10.0.1.3/32",
                "10.0.2.3/32",
                "fd00:1::2/128",
                "fd00:1::3/128",
            ],
        ),
    ];
    for (from, want) in cases {
        let mut s = lab();
        s.apply_k8s_policy(k8s_np(np_ingress("p", json!({}), from.clone())));
        let c = compile(&s);
        let r = only_rule(&c);
        assert_eq!(r.peers, nets(&want), "from {from}");
        assert!(!r.peers.is_empty() || want.is_empty());
    }
}

#[test]
fn k8s_match_expressions() {
    let cases = [
        (
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["api", "client"]}]}),
            vec!["web/api", "web/api2", "web/client"],
        ),
        (
            json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["client"]}]}),
            vec!["web/api", "web/api2"],
        ),
        (
            json!({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}),
            vec!["web/api"],
        ),
        (
            json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}),
            vec!["web/api2", "web/client"],
        ),
        (
            json!({"matchLabels": {"app": "api"},
                "matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}),
            vec!["web/api2"],
        ),
    ];
    for (sel, want) in cases {
        let mut s = lab();
        s.apply_k8s_policy(k8s_np(np_ingress("p", sel.clone(), json!([]))));
        let c = compile(&s);
        let r = only_rule(&c);
        assert_eq!(pods(r), want, "selector {sel}");
        // Empty `from` = every source.
        assert_eq!(r.peers, Peers::Any);
    }
}

#[test]
fn k8s_ip_block_with_except() {
    let mut s = lab();
    s.apply_k8s_policy(k8s_np(np_ingress(
        "p",
        json!({}),
        json!([{"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.128.0/17", "192.168.1.0/24"]}},
               {"ipBlock": {"cidr": "2001:db8::/32"}}]),
    )));
    let c = compile(&s);
    let r = only_rule(&c);
    assert_eq!(
        r.peers,
        nets(&[
            "192.168.0.0/24",
            "192.168.2.0/23",
            "192.168.4.0/22",
            "192.168.8.0/21",
            "192.168.16.0/20",
            "192.168.32.0/19",
            "192.168.64.0/18",
            "2001:db8::/32",
        ])
    );
}

#[test]
fn k8s_ports_protocols_and_end_port() {
    let mut s = lab();
    s.apply_k8s_policy(k8s_np(json!({
        "metadata": {"name": "p", "namespace": "web"},
        "spec": {
            "podSelector": {},
            "ingress": [{"ports": [
                {"protocol": "TCP", "port": 8000, "endPort": 8010},
                {"protocol": "UDP", "port": 53},
                {"protocol": "SCTP", "port": 3868},
                {"protocol": "UDP"},
                {"port": 443}
            ]}]
        }
    })));
    let c = compile(&s);
    let r = only_rule(&c);
    assert_eq!(
        r.services,
        vec![
            tcp(443),
            Service {
                protocol: Protocol::Tcp,
                ports: Some(PortRange {
                    start: 8000,
                    end: 8010
                })
            },
            Service {
                protocol: Protocol::Udp,
                ports: None
            },
            Service {
                protocol: Protocol::Udp,
                ports: Some(PortRange { start: 53, end: 53 })
            },
            Service {
                protocol: Protocol::Sctp,
                ports: Some(PortRange {
                    start: 3868,
                    end: 3868
                })
            },
        ]
    );
}

fn named_port_state() -> ClusterState {
    let mut s = lab();
    let api = s.pods[&PodRef::new("web", "api")].clone();
    let api2 = s.pods[&PodRef::new("web", "api2")].clone();
    s.apply_pod(with_port(api, "http", Protocol::Tcp, 8080));
    s.apply_pod(with_port(api2, "http", Protocol::Tcp, 9090));
    s
}

#[test]
fn k8s_named_port_ingress_splits_per_number() {
    let mut s = named_port_state();
    s.apply_k8s_policy(k8s_np(json!({
        "metadata": {"name": "p", "namespace": "web"},
        "spec": {
            "podSelector": {},
            "ingress": [{"ports": [{"port": "http"}, {"port": 22}]}]
        }
    })));
    let c = compile(&s);
    assert_eq!(c.errors, vec![]);
    let rules: Vec<&CompiledRule> = c.rules.values().collect();
    // api → 8080, api2 → 9090, client has no "http": only port 22 applies to it.
    assert_eq!(rules.len(), 3, "{:#?}", c.rules.keys());
    let by_pods: Vec<(Vec<String>, Vec<Service>)> = rules
        .iter()
        .map(|r| (pods(r), r.services.clone()))
        .collect();
    assert!(by_pods.contains(&(vec!["web/api".into()], vec![tcp(22), tcp(8080)])));
    assert!(by_pods.contains(&(vec!["web/api2".into()], vec![tcp(22), tcp(9090)])));
    assert!(by_pods.contains(&(vec!["web/client".into()], vec![tcp(22)])));
    let ids: BTreeSet<u32> = rules.iter().map(|r| r.conj_id).collect();
    assert_eq!(ids.len(), 3, "each split has its own conjunction id");
    assert!(rules.iter().all(|r| r.id.0.contains('#')));
}

#[test]
fn k8s_named_port_egress_resolves_against_peers() {
    let mut s = named_port_state();
    s.apply_k8s_policy(k8s_np(json!({
        "metadata": {"name": "p", "namespace": "web"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "client"}},
            "policyTypes": ["Egress"],
            "egress": [{
                "to": [{"podSelector": {"matchLabels": {"app": "api"}}},
                       {"ipBlock": {"cidr": "192.0.2.0/24"}}],
                "ports": [{"port": "http"}]
            }]
        }
    })));
    let c = compile(&s);
    assert_eq!(c.errors, vec![]);
    let got = peers_and_services(&c);
    // The ipBlock cannot resolve a named port, so it drops out.
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(got.contains(&(nets(&["10.0.1.3/32", "fd00:1::3/128"]), vec![tcp(8080)])));
    assert!(got.contains(&(nets(&["10.0.2.3/32"]), vec![tcp(9090)])));
    assert!(c.rules.values().all(|r| pods(r) == vec!["web/client"]));
    assert!(c.isolation.ingress.is_empty());
    assert_eq!(c.isolation.egress.len(), 1);
}

#[test]
fn k8s_named_port_egress_to_any_resolves_against_all_pods() {
    let mut s = named_port_state();
    s.apply_k8s_policy(k8s_np(json!({
        "metadata": {"name": "p", "namespace": "web"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "client"}},
            "policyTypes": ["Egress"],
            "egress": [{"ports": [{"port": "http"}, {"protocol": "UDP", "port": 53}]}]
        }
    })));
    let c = compile(&s);
    let got = peers_and_services(&c);
    let udp53 = Service {
        protocol: Protocol::Udp,
        ports: Some(PortRange { start: 53, end: 53 }),
    };
    assert!(got.contains(&(Peers::Any, vec![udp53])), "{got:#?}");
    assert!(got.contains(&(
        nets(&["10.0.1.3/32", "fd00:1::3/128"]),
        vec![tcp(8080), udp53]
    )));
    assert!(got.contains(&(nets(&["10.0.2.3/32"]), vec![tcp(9090), udp53])));
}

#[test]
fn k8s_policy_types_and_default_deny() {
    // Default deny ingress: policyTypes defaulted to [Ingress], no rules.
    let mut s = lab();
    s.apply_k8s_policy(k8s_np(json!({
        "metadata": {"name": "deny", "namespace": "db"},
        "spec": {"podSelector": {}}
    })));
    let c = compile(&s);
    assert!(c.rules.is_empty());
    assert_eq!(c.isolation.ingress.len(), 1);
    assert!(c.isolation.egress.is_empty());

    // Egress rules present and policyTypes absent → both directions isolated.
    let mut s = lab();
    s.apply_k8s_policy(k8s_np(json!({
        "metadata": {"name": "p", "namespace": "db"},
        "spec": {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]}
    })));
    let c = compile(&s);
    assert_eq!(c.isolation.ingress.len(), 1);
    assert_eq!(c.isolation.egress.len(), 1);
    assert_eq!(only_rule(&c).direction, Direction::Egress);
    assert_eq!(only_rule(&c).table, Table::EgressRule);

    // policyTypes [Egress] → ingress rules are ignored, ingress not isolated.
    let mut s = lab();
    s.apply_k8s_policy(k8s_np(json!({
        "metadata": {"name": "p", "namespace": "db"},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                 "ingress": [{}], "egress": []}
    })));
    let c = compile(&s);
    assert!(c.rules.is_empty());
    assert!(c.isolation.ingress.is_empty());
    assert_eq!(c.isolation.egress.len(), 1);

    // Allow-all ingress rule `{}`: any peer, any port.
    let mut s = lab();
    s.apply_k8s_policy(k8s_np(json!({
        "metadata": {"name": "p", "namespace": "db"},
        "spec": {"podSelector": {}, "ingress": [{}]}
    })));
    let c = compile(&s);
    let r = only_rule(&c);
    assert_eq!(r.peers, Peers::Any);
    assert!(r.services.is_empty());
}

#[test]
fn k8s_duplicate_rules_get_distinct_ids() {
    let mut s = lab();
    s.apply_k8s_policy(k8s_np(json!({
        "metadata": {"name": "p", "namespace": "web"},
        "spec": {"podSelector": {}, "ingress": [{}, {}]}
    })));
    let c = compile(&s);
    assert_eq!(c.rules.len(), 2);
    let ids: BTreeSet<u32> = c.rules.values().map(|r| r.conj_id).collect();
    assert_eq!(ids.len(), 2);
}

fn first_error(v: serde_json::Value) -> PolicyError {
    let mut s = lab();
    s.apply_k8s_policy(k8s_np(v));
    let c = compile(&s);
    assert!(c.rules.is_empty(), "invalid policy must be skipped");
    c.errors.into_iter().next().expect("an error")
}

#[test]
fn k8s_invalid_input_names_object_and_field() {
    let base = |rule: serde_json::Value| {
        json!({"metadata": {"name": "bad", "namespace": "web"},
               "spec": {"podSelector": {}, "ingress": [rule]}})
    };
    let cases = [
        (
            base(json!({"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]})),
            "spec.ingress[0].from[0].ipBlock.cidr",
            "cidr",
        ),
        (
            base(json!({"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/7"]}}]})),
            "spec.ingress[0].from[0].ipBlock.except[0]",
            "cidr",
        ),
        (
            base(json!({"ports": [{"port": 70000}]})),
            "spec.ingress[0].ports[0].port",
            "port",
        ),
        (
            base(json!({"ports": [{"port": 0}]})),
            "spec.ingress[0].ports[0].port",
            "port",
        ),
        (
            base(json!({"ports": [{"port": 90, "endPort": 80}]})),
            "spec.ingress[0].ports[0].endPort",
            "port",
        ),
        (
            base(json!({"ports": [{"port": "http", "endPort": 80}]})),
            "spec.ingress[0].ports[0].endPort",
            "port",
        ),
        (
            base(json!({"ports": [{"protocol": "ICMP", "port": 1}]})),
            "spec.ingress[0].ports[0].protocol",
            "port",
        ),
        (
            base(json!({"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]})),
            "spec.ingress[0].from[0]",
            "field",
        ),
        (
            base(json!({"from": [{}]})),
            "spec.ingress[0].from[0]",
            "field",
        ),
        (
            base(
                json!({"from": [{"podSelector": {"matchExpressions": [{"key": "a", "operator": "Has"}]}}]}),
            ),
            "spec.ingress[0].from[0].podSelector.matchExpressions[0]",
            "selector",
        ),
        (
            json!({"metadata": {"name": "bad", "namespace": "web"},
                "spec": {"podSelector": {}, "policyTypes": ["Sideways"]}}),
            "spec.policyTypes[0]",
            "field",
        ),
    ];
    for (policy, field, kind) in cases {
        let e = first_error(policy.clone());
        assert_eq!(e.object(), "K8sNetworkPolicy:web/bad", "{policy}");
        assert_eq!(e.field(), field, "{policy}: {e}");
        let ok = match kind {
            "cidr" => matches!(e, PolicyError::InvalidCidr { .. }),
            "port" => matches!(e, PolicyError::InvalidPort { .. }),
            "selector" => matches!(e, PolicyError::InvalidSelector { .. }),
            _ => matches!(e, PolicyError::InvalidField { .. }),
        };
        assert!(ok, "{policy}: wrong kind {e:?}");
        assert!(!e.to_string().ends_with('.'));
    }
}

#[test]
fn invalid_policy_does_not_stop_others() {
    let mut s = lab();
    s.apply_k8s_policy(k8s_np(np_ingress(
        "bad",
        json!({}),
        json!([{"ipBlock": {"cidr": "nope"}}]),
    )));
    s.apply_k8s_policy(k8s_np(np_ingress("good", json!({}), json!([]))));
    let c = compile(&s);
    assert_eq!(c.errors.len(), 1);
    assert_eq!(c.rules.len(), 1);
    assert_eq!(
        c.rules.values().next().map(|r| r.policy.name.as_str()),
        Some("good")
    );
}

// ---------------------------------------------------------------- Antrea-native

fn acnp_rule(name: &str, tier: &str, priority: f64, rules: serde_json::Value) -> serde_json::Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "tier": tier,
            "priority": priority,
            "appliedTo": [{"podSelector": {"matchLabels": {"app": "api"}}}],
            "ingress": rules
        }
    })
}

#[test]
fn acnp_drop_rule() {
    let mut s = lab();
    s.apply_cluster_policy(acnp(acnp_rule(
        "deny-db",
        "securityops",
        5.0,
        json!([{"name": "drop-3306", "action": "Drop",
                "from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}],
                "ports": [{"protocol": "TCP", "port": 3306}]}]),
    )));
    let c = compile(&s);
    let r = only_rule(&c);
    assert_eq!(r.policy.to_string(), "AntreaClusterNetworkPolicy:deny-db");
    assert_eq!(r.name, "drop-3306");
    assert_eq!(r.action, RuleAction::Drop);
    assert_eq!(r.table, Table::AntreaPolicyIngressRule);
    // Antrea's heuristic: 65000 - (200 * 100 + 5 * 20 + 0).
    assert_eq!(r.priority, 44900);
    assert_eq!(pods(r), vec!["web/api", "web/api2"]);
    assert_eq!(r.peers, nets(&["10.0.2.4/32"]));
    assert_eq!(r.services, vec![tcp(3306)]);
    // Antrea-native policies do not isolate.
    assert!(c.isolation.ingress.is_empty());
}

#[test]
fn antrea_tier_policy_and_rule_ordering() {
    let mut s = lab();
    s.apply_tier(Tier::new("custom", 120));
    let rules = |names: &[&str]| {
        serde_json::Value::Array(
            names
                .iter()
                .map(|n| json!({"name": n, "action": "Allow"}))
                .collect(),
        )
    };
    s.apply_cluster_policy(acnp(acnp_rule(
        "app-10",
        "application",
        10.0,
        rules(&["a0", "a1"]),
    )));
    s.apply_cluster_policy(acnp(acnp_rule("app-2", "Application", 2.0, rules(&["b0"]))));
    s.apply_cluster_policy(acnp(acnp_rule("emerg", "emergency", 100.0, rules(&["e0"]))));
    s.apply_cluster_policy(acnp(acnp_rule("custom", "custom", 1.0, rules(&["c0"]))));
    s.apply_cluster_policy(acnp(acnp_rule(
        "secops",
        "securityops",
        3.5,
        rules(&["s0", "s1"]),
    )));
    s.apply_antrea_policy(anp(json!({
        "metadata": {"name": "ns-pol", "namespace": "web"},
        "spec": {"priority": 1, "appliedTo": [{"podSelector": {}}],
                 "ingress": [{"name": "n0", "action": "Allow"}]}
    })));
    let c = compile(&s);
    assert_eq!(c.errors, vec![]);
    let mut by_prio: Vec<(&str, u16)> = c
        .rules
        .values()
        .map(|r| (r.name.as_str(), r.priority))
        .collect();
    by_prio.sort_by_key(|p| std::cmp::Reverse(p.1));
    let order: Vec<&str> = by_prio.iter().map(|(n, _)| *n).collect();
    // emergency(50) < securityops(100) < custom(120) < application(250); then policy priority;
    // then rule index.
    assert_eq!(order, vec!["e0", "s0", "s1", "c0", "n0", "b0", "a0", "a1"]);
    let prios: BTreeSet<u16> = by_prio.iter().map(|(_, p)| *p).collect();
    assert_eq!(prios.len(), by_prio.len(), "strictly ordered priorities");
    let ns_pol = c.rules.values().find(|r| r.name == "n0").expect("n0");
    assert_eq!(ns_pol.policy.to_string(), "AntreaNetworkPolicy:web/ns-pol");
    // Default tier: 65000 - (200 * 250 + 1 * 100 + 0).
    assert_eq!(ns_pol.priority, 14900);
}

#[test]
fn antrea_baseline_tier_goes_after_k8s() {
    let mut s = lab();
    s.apply_cluster_policy(acnp(acnp_rule(
        "base",
        "baseline",
        10.0,
        json!([{"name": "drop-all", "action": "Drop"}]),
    )));
    s.apply_cluster_policy(json_egress_baseline());
    let c = compile(&s);
    assert_eq!(c.errors, vec![]);
    let r = c
        .rules
        .values()
        .find(|r| r.name == "drop-all")
        .expect("rule");
    assert_eq!(r.table, Table::IngressDefaultRule);
    assert!(r.priority <= 180 && r.priority >= 10);
    assert!(r.priority < K8S_ISOLATION_PRIORITY);
    let e = c
        .rules
        .values()
        .find(|r| r.name == "eg")
        .expect("egress rule");
    assert_eq!(e.table, Table::EgressDefaultRule);
}

fn json_egress_baseline() -> crate::antrea::AntreaClusterNetworkPolicy {
    acnp(json!({
        "metadata": {"name": "base-eg"},
        "spec": {"tier": "baseline", "priority": 1,
                 "appliedTo": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}],
                 "egress": [{"name": "eg", "action": "Allow", "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}
    }))
}

#[test]
fn antrea_actions_pass_reject_and_generated_names() {
    let mut s = lab();
    s.apply_cluster_policy(acnp(acnp_rule(
        "p",
        "platform",
        1.0,
        json!([{"name": "pass", "action": "Pass"}, {"action": "Reject"}]),
    )));
    let c = compile(&s);
    assert_eq!(c.errors, vec![]);
    let actions: Vec<(RuleAction, String)> = c
        .rules
        .values()
        .map(|r| (r.action, r.name.clone()))
        .collect();
    assert!(actions.contains(&(RuleAction::Pass, "pass".into())));
    let reject = actions
        .iter()
        .find(|(a, _)| *a == RuleAction::Reject)
        .expect("reject rule");
    assert!(reject.1.starts_with("ingress-reject-"), "{}", reject.1);
}

#[test]
fn antrea_rule_level_applied_to() {
    let mut s = lab();
    s.apply_cluster_policy(acnp(json!({
        "metadata": {"name": "rl"},
        "spec": {"priority": 1, "ingress": [
            {"name": "to-db", "action": "Drop",
             "appliedTo": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]},
            {"name": "to-client", "action": "Allow",
             "appliedTo": [{"podSelector": {"matchLabels": {"app": "client"}},
                            "namespaceSelector": {"matchLabels": {"team": "a"}}}]}
        ]}
    })));
    let c = compile(&s);
    assert_eq!(c.errors, vec![]);
    let by_name = |n: &str| c.rules.values().find(|r| r.name == n).map(pods);
    assert_eq!(by_name("to-db"), Some(vec!["db/mysql".to_string()]));
    assert_eq!(by_name("to-client"), Some(vec!["web/client".to_string()]));
}

#[test]
fn antrea_peer_scoping_anp_vs_acnp() {
    // A lone podSelector in an ANP selects in its Namespace; in an ACNP, cluster-wide.
    let mut s = lab();
    s.apply_pod(mk_pod("db", "api-db", "n2", "10.0.2.9", &[("app", "api")]));
    let rule = json!([{"name": "r", "action": "Allow",
                       "from": [{"podSelector": {"matchLabels": {"app": "api"}}}]}]);
    s.apply_antrea_policy(anp(json!({
        "metadata": {"name": "p", "namespace": "web"},
        "spec": {"priority": 1, "appliedTo": [{"podSelector": {}}], "ingress": rule.clone()}
    })));
    s.apply_cluster_policy(acnp(acnp_rule("c", "application", 1.0, rule)));
    let c = compile(&s);
    assert_eq!(c.errors, vec![]);
    let anp_rule = c
        .rules
        .values()
        .find(|r| r.policy.namespace.is_some())
        .expect("anp");
    let acnp_rule = c
        .rules
        .values()
        .find(|r| r.policy.namespace.is_none())
        .expect("acnp");
    assert_eq!(
        anp_rule.peers,
        nets(&["10.0.1.3/32", "10.0.2.3/32", "fd00:1::3/128"])
    );
    assert_eq!(
        acnp_rule.peers,
        nets(&["10.0.1.3/32", "10.0.2.3/32", "10.0.2.9/32", "fd00:1::3/128"])
    );
}

#[test]
fn antrea_invalid_input() {
    let cases = [
        (
            acnp_rule("x", "nope", 1.0, json!([{"name": "r", "action": "Allow"}])),
            "spec.tier",
        ),
        (
            acnp_rule(
                "x",
                "application",
                0.0,
                json!([{"name": "r", "action": "Allow"}]),
            ),
            "spec.priority",
        ),
        (
            acnp_rule(
                "x",
                "application",
                1.0,
                json!([{"name": "r", "action": "Permit"}]),
            ),
            "spec.ingress[0].action",
        ),
        (
            acnp_rule(
                "x",
                "baseline",
                1.0,
                json!([{"name": "r", "action": "Pass"}]),
            ),
            "spec.ingress[0].action",
        ),
        (
            acnp_rule(
                "x",
                "application",
                1.0,
                json!([{"name": "r", "action": "Allow"}, {"name": "r", "action": "Drop"}]),
            ),
            "spec.ingress[1].name",
        ),
        (
            acnp_rule(
                "x",
                "application",
                1.0,
                json!([{"name": "r", "action": "Allow", "appliedTo": [{"podSelector": {}}]}]),
            ),
            "spec.ingress[0].appliedTo",
        ),
        (
            json!({"metadata": {"name": "x"}, "spec": {"priority": 1, "ingress": [{"name": "r", "action": "Allow"}]}}),
            "spec.ingress[0].appliedTo",
        ),
        (
            acnp_rule(
                "x",
                "application",
                1.0,
                json!([{"name": "r", "action": "Allow", "ports": [{"port": 80, "endPort": 70000}]}]),
            ),
            "spec.ingress[0].ports[0].endPort",
        ),
        (
            acnp_rule(
                "x",
                "application",
                1.0,
                json!([{"name": "r", "action": "Allow", "from": [{"ipBlock": {"cidr": "300.0.0.0/8"}}]}]),
            ),
            "spec.ingress[0].from[0].ipBlock.cidr",
        ),
    ];
    for (policy, field) in cases {
        let mut s = lab();
        s.apply_cluster_policy(acnp(policy.clone()));
        let c = compile(&s);
        assert!(c.rules.is_empty(), "{policy}");
        let e = c.errors.first().expect("error");
        assert_eq!(e.object(), "AntreaClusterNetworkPolicy:x", "{policy}");
        assert_eq!(e.field(), field, "{policy}: {e}");
    }
    // ANP appliedTo with namespaceSelector is refused.
    let mut s = lab();
    s.apply_antrea_policy(anp(json!({
        "metadata": {"name": "x", "namespace": "web"},
        "spec": {"priority": 1, "appliedTo": [{"namespaceSelector": {}}],
                 "ingress": [{"name": "r", "action": "Allow"}]}
    })));
    let c = compile(&s);
    assert_eq!(
        c.errors.first().map(|e| e.field()),
        Some("spec.appliedTo[0].namespaceSelector")
    );
}

// ---------------------------------------------------------------- conjunction ids

#[test]
fn conj_ids_stable_across_recompiles() {
    let mut s = lab();
    s.apply_k8s_policy(k8s_np(np_ingress(
        "allow-api",
        json!({"matchLabels": {"app": "api"}}),
        json!([{"podSelector": {"matchLabels": {"app": "client"}}}]),
    )));
    s.apply_cluster_policy(acnp(acnp_rule(
        "deny",
        "securityops",
        1.0,
        json!([{"name": "d", "action": "Drop"}]),
    )));
    let mut compiler = PolicyCompiler::new();
    let before = compiler.compile(&s);
    let ids_before = rule_ids(&before);
    assert!(ids_before.iter().all(|(_, id)| *id != 0));

    // Membership change: a new client Pod. Ids unchanged.
    s.apply_pod(mk_pod(
        "web",
        "client2",
        "n2",
        "10.0.2.7",
        &[("app", "client")],
    ));
    let after = compiler.compile(&s);
    let ids_after = rule_ids(&after);
    assert_eq!(ids_before, ids_after);

    // A new rule in another policy: existing ids unchanged, new id distinct.
    s.apply_k8s_policy(k8s_np(np_ingress("other", json!({}), json!([]))));
    let more = compiler.compile(&s);
    for (id, conj) in &ids_before {
        assert_eq!(
            more.rules[&crate::compiled::RuleId(id.clone())].conj_id,
            *conj
        );
    }
    let all: BTreeSet<u32> = more.rules.values().map(|r| r.conj_id).collect();
    assert_eq!(all.len(), more.rules.len());

    // A fresh compiler (adapter restart) derives the same ids.
    let fresh = PolicyCompiler::new().compile(&s);
    let a: Vec<u32> = fresh.rules.values().map(|r| r.conj_id).collect();
    let b: Vec<u32> = more.rules.values().map(|r| r.conj_id).collect();
    assert_eq!(a, b);

    // Deleting a policy releases its ids.
    s.delete_k8s_policy("web", "other");
    compiler.compile(&s);
    assert_eq!(compiler.conj_ids().len(), ids_before.len());
}

#[test]
fn conj_id_collisions_are_resolved() {
    let mut a = super::ConjIdAllocator::new();
    let x = a.id_for("x");
    // Force the next key onto a taken id by pre-seeding.
    let mut ids = BTreeSet::from([x]);
    for i in 0..1000 {
        let id = a.id_for(&format!("k{i}"));
        assert_ne!(id, 0);
        assert!(ids.insert(id), "duplicate id {id}");
    }
    assert_eq!(a.id_for("x"), x);
}

// ---------------------------------------------------------------- node view

/// The only rule of a Node's view.
fn only_view_rule(view: &crate::node::NodePolicyView) -> &crate::compiled::CompiledRule {
    assert_eq!(view.rules.len(), 1, "{view:#?}");
    view.rules.values().next().expect("one rule")
}

#[test]
fn node_view_keeps_the_nodes_rules_and_applied_to_pods() {
    let mut s = lab();
    s.apply_k8s_policy(k8s_np(np_ingress(
        "allow-api",
        json!({"matchLabels": {"app": "api"}}),
        json!([{"podSelector": {"matchLabels": {"app": "client"}}}]),
    )));
    s.apply_cluster_policy(acnp(json!({
        "metadata": {"name": "db-only"},
        "spec": {"priority": 1, "appliedTo": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}],
                 "egress": [{"name": "e", "action": "Drop"}]}
    })));
    let mut compiler = PolicyCompiler::new();
    let c = compiler.compile(&s);
    let n1 = c.for_node("n1");
    let n2 = c.for_node("n2");
    assert_eq!(n2.rules.len(), 2);
    let r1 = only_view_rule(&n1);
    assert_eq!(pods(r1), vec!["web/api"]);
    assert_eq!(n1.isolation.ingress.len(), 1);
    assert!(c.for_node("n3").rules.is_empty());

    // A new api Pod on n2: n1's view is unchanged; n2's allow rule keeps its id and conjunction
    // id and gains the Pod, which becomes isolated.
    s.apply_pod(mk_pod("web", "api3", "n2", "10.0.2.8", &[("app", "api")]));
    let c2 = compiler.compile(&s);
    assert_eq!(c2.for_node("n1"), n1);
    let n2_next = c2.for_node("n2");
    let before = n2.rules.get(&r1.id).expect("allow rule on n2 (api2)");
    let after = n2_next.rules.get(&r1.id).expect("allow rule still on n2");
    assert_ne!(before, after);
    assert_eq!(after.conj_id, before.conj_id);
    assert!(pods(after).contains(&"web/api3".to_string()), "{after:#?}");
    assert_eq!(
        n2_next.isolation.ingress.len(),
        n2.isolation.ingress.len() + 1
    );

    // Policy deleted: the rule and the isolation leave n1's view.
    s.delete_k8s_policy("web", "allow-api");
    let n1_last = compiler.compile(&s).for_node("n1");
    assert!(n1_last.rules.is_empty());
    assert!(n1_last.isolation.ingress.is_empty());
}

#[test]
fn rule_equality_ignores_nothing_relevant() {
    // Changing the port changes the rule content but not (for named native rules) its id.
    let mut s = lab();
    let mk = |port: u16| {
        acnp(acnp_rule(
            "p",
            "application",
            1.0,
            json!([{"name": "web", "action": "Allow", "ports": [{"port": port}]}]),
        ))
    };
    s.apply_cluster_policy(mk(80));
    let mut compiler = PolicyCompiler::new();
    let a = compiler.compile(&s).for_node("n1");
    s.apply_cluster_policy(mk(8080));
    let b = compiler.compile(&s).for_node("n1");
    let (old, new) = (only_view_rule(&a), only_view_rule(&b));
    assert_eq!(old.id, new.id);
    assert_ne!(old, new);
    assert_eq!(new.services, vec![tcp(8080)]);
    assert_eq!(old.conj_id, new.conj_id);
}

#[test]
fn inserting_a_k8s_rule_keeps_other_rule_ids() {
    let mut s = lab();
    let rule_b = json!({"from": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]});
    s.apply_k8s_policy(k8s_np(json!({
        "metadata": {"name": "p", "namespace": "web"},
        "spec": {"podSelector": {}, "ingress": [rule_b.clone()]}
    })));
    let mut compiler = PolicyCompiler::new();
    let before = compiler.compile(&s);
    let b = only_rule(&before).clone();
    s.apply_k8s_policy(k8s_np(json!({
        "metadata": {"name": "p", "namespace": "web"},
        "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 22}]}, rule_b]}
    })));
    let after = compiler.compile(&s);
    assert_eq!(after.rules.len(), 2);
    assert_eq!(after.rules.get(&b.id), Some(&b));
}

#[test]
fn node_view_round_trips_through_json() {
    let mut s = named_port_state();
    s.apply_k8s_policy(k8s_np(np_ingress("p", json!({}), json!([]))));
    s.apply_cluster_policy(acnp(acnp_rule(
        "c",
        "securityops",
        2.5,
        json!([{"name": "r", "action": "Reject", "from": [{"ipBlock": {"cidr": "fd00::/8"}}],
                "ports": [{"port": "http"}]}]),
    )));
    let view = PolicyCompiler::new().compile(&s).for_node("n1");
    assert!(!view.rules.is_empty());
    let text = serde_json::to_string(&view).expect("serialize");
    let back: crate::node::NodePolicyView = serde_json::from_str(&text).expect("deserialize");
    assert_eq!(back, view);
}
