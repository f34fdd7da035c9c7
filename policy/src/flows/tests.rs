//! Flow generation tests: pinned ovs-ofctl text and minimal diffs on policy updates.

use serde_json::json;

use super::*;
use crate::compile::PolicyCompiler;
use crate::fixtures::*;
use crate::model::ClusterState;

fn allow_api_state() -> ClusterState {
    let mut s = lab();
    s.apply_k8s_policy(k8s_np(json!({
        "metadata": {"name": "allow-api", "namespace": "web"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "api"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                         "ports": [{"protocol": "TCP", "port": 80}]}]
        }
    })));
    s
}

fn conj_of(c: &crate::compiled::CompiledPolicies, name_part: &str) -> u32 {
    c.rules
        .values()
        .find(|r| r.id.0.contains(name_part))
        .map(|r| r.conj_id)
        .expect("rule")
}

#[test]
fn k8s_ingress_rule_flows_pinned() {
    let s = allow_api_state();
    let c = PolicyCompiler::new().compile(&s);
    let n = conj_of(&c, "allow-api");
    let flows = node_flows(&c.for_node("n1")).to_strings();
    let want: Vec<String> = vec![
        format!("table=IngressRule, priority=200,ip,nw_src=10.0.1.2 actions=conjunction({n},1/3)"),
        format!("table=IngressRule, priority=200,ip,nw_dst=10.0.1.3 actions=conjunction({n},2/3)"),
        format!(
            "table=IngressRule, priority=200,ipv6,ipv6_src=fd00:1::2 actions=conjunction({n},1/3)"
        ),
        format!(
            "table=IngressRule, priority=200,ipv6,ipv6_dst=fd00:1::3 actions=conjunction({n},2/3)"
        ),
        format!("table=IngressRule, priority=200,tcp,tp_dst=80 actions=conjunction({n},3/3)"),
        format!("table=IngressRule, priority=200,tcp6,tp_dst=80 actions=conjunction({n},3/3)"),
        format!(
            "table=IngressRule, priority=200,conj_id={n} actions=set_field:{n:#x}->reg6,goto_table:IngressMetric"
        ),
        "table=IngressDefaultRule, priority=200,ip,nw_dst=10.0.1.3 actions=drop".to_string(),
        "table=IngressDefaultRule, priority=200,ipv6,ipv6_dst=fd00:1::3 actions=drop".to_string(),
    ];
    assert_eq!(flows, want);

    // n2's api2 is IPv4-only: no IPv6 flows at all.
    let flows = node_flows(&c.for_node("n2")).to_strings();
    assert!(
        flows
            .iter()
            .all(|f| !f.contains("ipv6") && !f.contains("tcp6")),
        "{flows:#?}"
    );
    // Client's IPv6 address has no IPv6 applied-to counterpart here, so it is left out.
    assert_eq!(flows.len(), 5);
}

#[test]
fn egress_any_peer_and_isolation() {
    let mut s = lab();
    s.apply_k8s_policy(k8s_np(json!({
        "metadata": {"name": "eg", "namespace": "web"},
        "spec": {"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"],
                 "egress": [{}]}
    })));
    let c = PolicyCompiler::new().compile(&s);
    let n = conj_of(&c, "eg");
    let flows = node_flows(&c.for_node("n1")).to_strings();
    let want: Vec<String> = vec![
        format!("table=EgressRule, priority=200,ip actions=conjunction({n},2/2)"),
        format!("table=EgressRule, priority=200,ip,nw_src=10.0.1.2 actions=conjunction({n},1/2)"),
        format!("table=EgressRule, priority=200,ipv6 actions=conjunction({n},2/2)"),
        format!(
            "table=EgressRule, priority=200,ipv6,ipv6_src=fd00:1::2 actions=conjunction({n},1/2)"
        ),
        format!(
            "table=EgressRule, priority=200,conj_id={n} actions=set_field:{n:#x}->reg5,goto_table:EgressMetric"
        ),
        "table=EgressDefaultRule, priority=200,ip,nw_src=10.0.1.2 actions=drop".to_string(),
        "table=EgressDefaultRule, priority=200,ipv6,ipv6_src=fd00:1::2 actions=drop".to_string(),
    ];
    assert_eq!(flows, want);
}

#[test]
fn antrea_drop_reject_pass_flows_pinned() {
    let mut s = lab();
    s.apply_cluster_policy(acnp(json!({
        "metadata": {"name": "deny-db"},
        "spec": {"tier": "securityops", "priority": 5,
                 "appliedTo": [{"podSelector": {"matchLabels": {"app": "db"}}}],
                 "ingress": [
                    {"name": "drop-3306", "action": "Drop",
                     "from": [{"ipBlock": {"cidr": "10.0.1.0/24"}}],
                     "ports": [{"protocol": "TCP", "port": 3306}]},
                    {"name": "reject-all", "action": "Reject", "from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]},
                    {"name": "pass", "action": "Pass"}
                 ]}
    })));
    let c = PolicyCompiler::new().compile(&s);
    assert_eq!(c.errors, vec![]);
    let (d, r, p) = (
        conj_of(&c, "drop-3306"),
        conj_of(&c, "reject-all"),
        conj_of(&c, "/pass"),
    );
    let flows = node_flows(&c.for_node("n2")).to_strings();
    let want: Vec<String> = vec![
        // Rule 0 at 65000 - (200*100 + 5*20 + 0) = 44900, rule 1 at 44899, rule 2 at 44898.
        format!(
            "table=AntreaPolicyIngressRule, priority=44900,ip,nw_src=10.0.1.0/24 actions=conjunction({d},1/3)"
        ),
        format!(
            "table=AntreaPolicyIngressRule, priority=44900,ip,nw_dst=10.0.2.4 actions=conjunction({d},2/3)"
        ),
        format!(
            "table=AntreaPolicyIngressRule, priority=44900,tcp,tp_dst=3306 actions=conjunction({d},3/3)"
        ),
        format!(
            "table=AntreaPolicyIngressRule, priority=44900,conj_id={d} actions=set_field:{d:#x}->reg3,set_field:0x400/0x400->reg0,goto_table:IngressMetric"
        ),
        format!(
            "table=AntreaPolicyIngressRule, priority=44899,ip,nw_src=10.0.0.0/8 actions=conjunction({r},1/2)"
        ),
        format!(
            "table=AntreaPolicyIngressRule, priority=44899,ip,nw_dst=10.0.2.4 actions=conjunction({r},2/2)"
        ),
        format!(
            "table=AntreaPolicyIngressRule, priority=44899,conj_id={r} actions=set_field:{r:#x}->reg3,set_field:0x400/0x400->reg0,goto_table:IngressMetric"
        ),
        format!("table=AntreaPolicyIngressRule, priority=44898,ip actions=conjunction({p},1/2)"),
        format!(
            "table=AntreaPolicyIngressRule, priority=44898,ip,nw_dst=10.0.2.4 actions=conjunction({p},2/2)"
        ),
        format!(
            "table=AntreaPolicyIngressRule, priority=44898,conj_id={p} actions=set_field:{p:#x}->reg6,goto_table:IngressRule"
        ),
    ];
    let mut want_metric: Vec<(u32, String)> = vec![
        (
            d,
            format!("table=IngressMetric, priority=200,reg0=0x400/0x400,reg3={d:#x} actions=drop"),
        ),
        (
            r,
            format!(
                "table=IngressMetric, priority=200,reg0=0x400/0x400,reg3={r:#x} actions=controller(userdata=01.02)"
            ),
        ),
    ];
    want_metric.sort();
    let mut all = want;
    all.extend(want_metric.into_iter().map(|(_, f)| f));
    assert_eq!(flows, all);
}

#[test]
fn baseline_rules_live_in_default_tables_below_isolation() {
    let mut s = lab();
    s.apply_cluster_policy(acnp(json!({
        "metadata": {"name": "base"},
        "spec": {"tier": "baseline", "priority": 1,
                 "appliedTo": [{"podSelector": {"matchLabels": {"app": "db"}}}],
                 "egress": [{"name": "deny-out", "action": "Drop"}]}
    })));
    s.apply_k8s_policy(k8s_np(json!({
        "metadata": {"name": "iso", "namespace": "db"},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"]}
    })));
    let c = PolicyCompiler::new().compile(&s);
    let flows = node_flows(&c.for_node("n2"));
    let in_default: Vec<Flow> = flows
        .iter()
        .filter(|f| f.table == Table::EgressDefaultRule)
        .collect();
    let iso = in_default
        .iter()
        .find(|f| f.actions == vec![Action::Drop])
        .expect("isolation drop");
    assert_eq!(iso.priority, 200);
    assert!(
        in_default
            .iter()
            .filter(|f| f.actions != vec![Action::Drop])
            .all(|f| f.priority < iso.priority)
    );
}

#[test]
fn shared_clause_flows_merge_conjunctions() {
    let mut s = allow_api_state();
    s.apply_k8s_policy(k8s_np(json!({
        "metadata": {"name": "second", "namespace": "web"},
        "spec": {"podSelector": {"matchLabels": {"app": "api"}},
                 "ingress": [{"from": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]}]}
    })));
    let c = PolicyCompiler::new().compile(&s);
    let (a, b) = (conj_of(&c, "allow-api"), conj_of(&c, "second"));
    let flows = node_flows(&c.for_node("n2")).to_strings();
    let (lo, hi) = if (a, 3) < (b, 2) { (a, b) } else { (b, a) };
    let (lo_n, hi_n) = if lo == a { (3, 2) } else { (2, 3) };
    let want = format!(
        "table=IngressRule, priority=200,ip,nw_dst=10.0.2.3 actions=conjunction({lo},2/{lo_n}),conjunction({hi},2/{hi_n})"
    );
    assert!(flows.contains(&want), "{flows:#?}");
    // One flow per key.
    assert_eq!(
        flows
            .iter()
            .filter(|f| f.contains("nw_dst=10.0.2.3 "))
            .count(),
        2
    );
}

#[test]
fn port_ranges_become_masks() {
    assert_eq!(
        port_range_masks(PortRange {
            start: 8000,
            end: 8010
        }),
        vec![(8000, 0xfff8), (8008, 0xfffe), (8010, 0xffff)]
    );
    assert_eq!(
        port_range_masks(PortRange { start: 80, end: 80 }),
        vec![(80, 0xffff)]
    );
    assert_eq!(
        port_range_masks(PortRange {
            start: 1,
            end: 65535
        })
        .len(),
        16
    );
    let mut s = lab();
    s.apply_k8s_policy(k8s_np(json!({
        "metadata": {"name": "r", "namespace": "db"},
        "spec": {"podSelector": {}, "ingress": [{"ports": [
            {"protocol": "UDP", "port": 8000, "endPort": 8010}, {"protocol": "SCTP"}]}]}
    })));
    let c = PolicyCompiler::new().compile(&s);
    let flows = node_flows(&c.for_node("n2")).to_strings();
    let svc: Vec<&String> = flows
        .iter()
        .filter(|f| f.contains("udp") || f.contains("sctp"))
        .collect();
    let n = conj_of(&c, "K8sNetworkPolicy:db/r");
    assert_eq!(
        svc,
        vec![
            &format!(
                "table=IngressRule, priority=200,udp,tp_dst=0x1f40/0xfff8 actions=conjunction({n},3/3)"
            ),
            &format!(
                "table=IngressRule, priority=200,udp,tp_dst=0x1f48/0xfffe actions=conjunction({n},3/3)"
            ),
            &format!(
                "table=IngressRule, priority=200,udp,tp_dst=8010 actions=conjunction({n},3/3)"
            ),
            &format!("table=IngressRule, priority=200,sctp actions=conjunction({n},3/3)"),
        ]
    );
}

#[test]
fn adding_a_peer_pod_adds_exactly_one_flow() {
    let mut s = allow_api_state();
    let mut compiler = PolicyCompiler::new();
    let before = node_flows(&compiler.compile(&s).for_node("n1"));
    s.apply_pod(mk_pod(
        "web",
        "client2",
        "n2",
        "10.0.2.7",
        &[("app", "client")],
    ));
    let c = compiler.compile(&s);
    let after = node_flows(&c.for_node("n1"));
    let d = diff_flows(&before, &after);
    let n = conj_of(&c, "allow-api");
    assert_eq!(d.modify, vec![]);
    assert_eq!(d.delete, vec![]);
    let added: Vec<String> = d.add.iter().map(|f| f.to_string()).collect();
    assert_eq!(
        added,
        vec![format!(
            "table=IngressRule, priority=200,ip,nw_src=10.0.2.7 actions=conjunction({n},1/3)"
        )]
    );
}

#[test]
fn adding_an_applied_to_pod_adds_its_clause_and_isolation() {
    let mut s = allow_api_state();
    let mut compiler = PolicyCompiler::new();
    let before_n1 = node_flows(&compiler.compile(&s).for_node("n1"));
    let before_n2 = node_flows(&compiler.compile(&s).for_node("n2"));
    s.apply_pod(mk_pod("web", "api3", "n1", "10.0.1.9", &[("app", "api")]));
    let c = compiler.compile(&s);
    let d = diff_flows(&before_n1, &node_flows(&c.for_node("n1")));
    let n = conj_of(&c, "allow-api");
    let added: Vec<String> = d.add.iter().map(|f| f.to_string()).collect();
    assert_eq!(
        added,
        vec![
            format!(
                "table=IngressRule, priority=200,ip,nw_dst=10.0.1.9 actions=conjunction({n},2/3)"
            ),
            "table=IngressDefaultRule, priority=200,ip,nw_dst=10.0.1.9 actions=drop".to_string(),
        ]
    );
    assert!(d.modify.is_empty() && d.delete.is_empty());
    // The other Node is untouched.
    assert!(diff_flows(&before_n2, &node_flows(&c.for_node("n2"))).is_empty());
}

#[test]
fn changing_a_port_touches_only_service_flows() {
    let mut s = allow_api_state();
    let mut compiler = PolicyCompiler::new();
    s.apply_cluster_policy(acnp(json!({
        "metadata": {"name": "p"},
        "spec": {"priority": 1, "appliedTo": [{"podSelector": {"matchLabels": {"app": "db"}}}],
                 "ingress": [{"name": "web", "action": "Allow", "ports": [{"port": 80}]}]}
    })));
    let before = node_flows(&compiler.compile(&s).for_node("n2"));
    s.apply_cluster_policy(acnp(json!({
        "metadata": {"name": "p"},
        "spec": {"priority": 1, "appliedTo": [{"podSelector": {"matchLabels": {"app": "db"}}}],
                 "ingress": [{"name": "web", "action": "Allow", "ports": [{"port": 8080}]}]}
    })));
    let after = node_flows(&compiler.compile(&s).for_node("n2"));
    let d = diff_flows(&before, &after);
    assert_eq!(d.len(), 2, "{d:#?}");
    assert_eq!(d.add.len(), 1);
    assert_eq!(d.delete.len(), 1);
    assert!(d.add[0].to_string().contains("tcp,tp_dst=8080"));
    assert!(d.delete[0].to_string().contains("tcp,tp_dst=80 "));
}

#[test]
fn removing_the_last_peer_removes_the_rule_flows() {
    let mut s = allow_api_state();
    let mut compiler = PolicyCompiler::new();
    let before = node_flows(&compiler.compile(&s).for_node("n1"));
    s.delete_pod(&crate::model::PodRef::new("web", "client"));
    let after = node_flows(&compiler.compile(&s).for_node("n1"));
    let d = diff_flows(&before, &after);
    // Only the isolation drops stay.
    assert!(d.add.is_empty() && d.modify.is_empty());
    assert_eq!(d.delete.len(), 7);
    assert_eq!(after.len(), 2);
}

#[test]
fn base_flows_and_numeric_tables() {
    let base: Vec<String> = base_flows().iter().map(|f| f.to_string()).collect();
    assert!(base.contains(
        &"table=AntreaPolicyIngressRule, priority=64990,ct_state=-new+est actions=goto_table:IngressMetric"
            .to_string()
    ));
    assert!(
        base.contains(
            &"table=EgressMetric, priority=0 actions=goto_table:L3Forwarding".to_string()
        )
    );
    let f = Flow::new(
        Table::IngressMetric,
        200,
        vec![Match::Reg {
            reg: 3,
            value: 7,
            mask: None,
        }],
        vec![Action::Goto(Table::ConntrackCommit)],
    );
    assert_eq!(
        f.to_ofctl(&|t| t.id()),
        "table=24, priority=200,reg3=0x7 actions=goto_table:25"
    );
}
