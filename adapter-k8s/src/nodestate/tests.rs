//! Fixtures → expected `NodeState`s, and deltas for the changes agents see most.

use serde_json::{Value, json};
use traceflow_policy::{CompiledPolicies, NamedPort, PolicyCompiler, Protocol};
use traceflow_proto::v1 as pb;

use super::*;
use crate::inventory::{
    Index, Kind, Object, PodRecord, ServiceRecord,
    convert::{self, fixtures::mk_node},
    index::ANTREA_POLICY,
};

fn node(idx: &mut Index, name: &str, cidr: &str, ips: &[&str]) {
    match convert::node(&mk_node(name, &[cidr], ips)) {
        Ok(n) => {
            idx.apply(Object::Node(n));
        }
        Err(e) => panic!("fixture node: {e}"),
    }
}

fn mk_pod(ns: &str, name: &str, node: &str, ips: &[&str], app: &str) -> PodRecord {
    PodRecord::from(pb::InventoryPod {
        namespace: ns.into(),
        name: name.into(),
        node: node.into(),
        ips: ips.iter().map(|s| s.to_string()).collect(),
        labels: [("app".to_string(), app.to_string())].into(),
        host_network: false,
    })
}

fn with_http(mut p: PodRecord, port: u16) -> PodRecord {
    p.ports.push(NamedPort {
        name: "http".into(),
        protocol: Protocol::Tcp,
        port,
    });
    p
}

fn k8s_policy(v: Value) -> Object {
    let np = serde_json::from_value(v).expect("fixture policy");
    match convert::network_policy(&np) {
        Ok(p) => Object::Policy(p),
        Err(e) => panic!("fixture policy: {e}"),
    }
}

fn antrea_policy(v: Value) -> Object {
    let obj = serde_json::from_value(v).expect("fixture ANP");
    match convert::antrea_policy(&obj, ANTREA_POLICY) {
        Ok(p) => Object::Policy(p),
        Err(e) => panic!("fixture ANP: {e}"),
    }
}

fn allow_api() -> Object {
    k8s_policy(json!({
        "metadata": {"name": "allow-api", "namespace": "web"},
        "spec": {"podSelector": {"matchLabels": {"app": "api"}},
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                              "ports": [{"protocol": "TCP", "port": 8080}]}]}
    }))
}

fn deny_db(action: &str) -> Object {
    antrea_policy(json!({
        "apiVersion": "crd.antrea.io/v1beta1", "kind": "NetworkPolicy",
        "metadata": {"name": "deny-db", "namespace": "web"},
        "spec": {"priority": 5, "tier": "securityops",
                 "appliedTo": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                 "egress": [{"name": "no-db", "action": action,
                             "to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
                             "ports": [{"protocol": "TCP", "port": 3306}]}]}
    }))
}

/// Two Nodes; web/client and web/api on n1, web/api2 on n2; Service web/api (targetPort
/// `http`, which the api Pods name differently); K8s policy allow-api.
fn lab() -> Index {
    let mut idx = Index::new();
    node(
        &mut idx,
        "n1",
        "10.10.1.0/24",
        &["192.168.77.1", "fd77::1", "192.168.78.1"],
    );
    node(&mut idx, "n2", "10.10.2.0/24", &["192.168.77.2"]);
    idx.apply(Object::Namespace(pb::InventoryNamespace {
        name: "web".into(),
        labels: Default::default(),
    }));
    idx.apply(Object::Pod(mk_pod(
        "web",
        "client",
        "n1",
        &["10.10.1.2"],
        "client",
    )));
    idx.apply(Object::Pod(with_http(
        mk_pod("web", "api", "n1", &["10.10.1.3", "fd00:1::3"], "api"),
        8080,
    )));
    idx.apply(Object::Pod(with_http(
        mk_pod("web", "api2", "n2", &["10.10.2.3"], "api"),
        8081,
    )));
    idx.apply(Object::Service(ServiceRecord {
        inventory: pb::InventoryService {
            namespace: "web".into(),
            name: "api".into(),
            cluster_ips: vec!["10.96.0.10".into()],
            ports: vec![pb::ServicePort {
                name: "web".into(),
                protocol: "TCP".into(),
                port: 80,
                target_port: "http".into(),
            }],
        },
        selector: Some([("app".to_string(), "api".to_string())].into()),
    }));
    idx.apply(allow_api());
    idx
}

fn compile(compiler: &mut PolicyCompiler, idx: &Index) -> CompiledPolicies {
    let compiled = compiler.compile(&cluster_state(idx));
    assert!(compiled.errors.is_empty(), "{:?}", compiled.errors);
    compiled
}

fn state(compiler: &mut PolicyCompiler, idx: &Index, node: &str) -> NodeDesired {
    let compiled = compile(compiler, idx);
    node_state(idx, &compiled, node)
}

fn endpoint(ip: &str, port: i32, node: &str, pod: &str) -> pb::ServiceEndpoint {
    pb::ServiceEndpoint {
        ip: ip.into(),
        port,
        node: node.into(),
        pod_namespace: "web".into(),
        pod_name: pod.into(),
    }
}

#[test]
fn fixture_gives_the_expected_replace() {
    let idx = lab();
    let mut compiler = PolicyCompiler::new();
    let compiled = compile(&mut compiler, &idx);
    let conj = compiled
        .rules
        .values()
        .map(|r| r.conj_id)
        .next()
        .unwrap_or_default();
    assert_ne!(conj, 0);
    let got = node_state(&idx, &compiled, "n1").to_replace();
    let expected = pb::NodeState {
        replace: true,
        node: Some(pb::NodeInfo {
            name: "n1".into(),
            pod_cidrs: vec!["10.10.1.0/24".into()],
            // First InternalIP of each family.
            tunnel_ips: vec!["192.168.77.1".into(), "fd77::1".into()],
        }),
        peers_upsert: vec![pb::NodeInfo {
            name: "n2".into(),
            pod_cidrs: vec!["10.10.2.0/24".into()],
            tunnel_ips: vec!["192.168.77.2".into()],
        }],
        peers_delete: vec![],
        services_upsert: vec![pb::ServiceState {
            namespace: "web".into(),
            name: "api".into(),
            cluster_ips: vec!["10.96.0.10".into()],
            ports: vec![pb::ServicePortState {
                name: "web".into(),
                protocol: "TCP".into(),
                port: 80,
                // Named target port resolved per Pod; only the ClusterIP's family.
                endpoints: vec![
                    endpoint("10.10.1.3", 8080, "n1", "api"),
                    endpoint("10.10.2.3", 8081, "n2", "api2"),
                ],
            }],
        }],
        services_delete: vec![],
        rules_upsert: vec![pb::PolicyRule {
            conjunction_id: conj,
            direction: "Ingress".into(),
            action: "Allow".into(),
            policy_type: "K8sNetworkPolicy".into(),
            policy_namespace: "web".into(),
            policy_name: "allow-api".into(),
            rule_name: String::new(),
            table: "IngressRule".into(),
            priority: 200,
            // Narrowed to n1's Pods (api2 is on n2).
            applied_to_ips: vec!["10.10.1.3".into(), "fd00:1::3".into()],
            any_peer: false,
            peer_cidrs: vec!["10.10.1.2/32".into()],
            services: vec![pb::RuleService {
                protocol: "TCP".into(),
                port: 8080,
                end_port: 0,
            }],
        }],
        rules_delete: vec![],
        isolation: Some(pb::Isolation {
            ingress_ips: vec!["10.10.1.3".into(), "fd00:1::3".into()],
            egress_ips: vec![],
        }),
        egresses: Some(pb::EgressSet::default()),
        trace_tunnel_key: 0,
    };
    assert_eq!(got, expected);

    // n2 sees n1 as its peer and its own narrowed rule, with the same conjunction id.
    let n2 = node_state(&idx, &compiled, "n2");
    assert_eq!(n2.peers.keys().collect::<Vec<_>>(), vec!["n1"]);
    let rule = n2.rules.get(&conj).cloned().unwrap_or_default();
    assert_eq!(rule.applied_to_ips, vec!["10.10.2.3"]);
}

#[test]
fn equal_states_have_no_delta() {
    let idx = lab();
    let mut compiler = PolicyCompiler::new();
    let a = state(&mut compiler, &idx, "n1");
    let b = state(&mut compiler, &idx, "n1");
    assert_eq!(diff(&a, &b), None);
}

#[test]
fn a_policy_update_touches_only_the_affected_rule() {
    let mut idx = lab();
    idx.apply(deny_db("Drop"));
    let mut compiler = PolicyCompiler::new();
    let before = state(&mut compiler, &idx, "n1");
    assert_eq!(before.rules.len(), 2);
    idx.apply(deny_db("Reject"));
    let after = state(&mut compiler, &idx, "n1");
    let delta = diff(&before, &after).unwrap_or_default();
    assert_eq!(delta.rules_upsert.len(), 1, "{delta:?}");
    let rule = &delta.rules_upsert[0];
    assert_eq!(
        (
            rule.action.as_str(),
            rule.rule_name.as_str(),
            rule.table.as_str()
        ),
        ("Reject", "no-db", "AntreaPolicyEgressRule")
    );
    // A named rule keeps its conjunction id, so the update is one upsert and nothing else.
    assert!(before.rules.contains_key(&rule.conjunction_id));
    assert_eq!(
        pb::NodeState {
            rules_upsert: vec![],
            ..delta
        },
        pb::NodeState::default()
    );

    // Deleting the policy deletes exactly its rule.
    idx.delete(Kind::AntreaPolicy, "web/deny-db");
    let gone = state(&mut compiler, &idx, "n1");
    let delta = diff(&after, &gone).unwrap_or_default();
    assert_eq!(delta.rules_delete, vec![rule.conjunction_id]);
    assert!(delta.rules_upsert.is_empty() && delta.isolation.is_none());
}

#[test]
fn a_new_pod_in_a_selector_changes_one_rules_peers() {
    let mut idx = lab();
    let mut compiler = PolicyCompiler::new();
    let before = state(&mut compiler, &idx, "n1");
    idx.apply(Object::Pod(mk_pod(
        "web",
        "client2",
        "n2",
        &["10.10.2.9"],
        "client",
    )));
    let after = state(&mut compiler, &idx, "n1");
    let delta = diff(&before, &after).unwrap_or_default();
    assert_eq!(delta.rules_upsert.len(), 1, "{delta:?}");
    let rule = &delta.rules_upsert[0];
    assert!(before.rules.contains_key(&rule.conjunction_id));
    assert_eq!(rule.peer_cidrs, vec!["10.10.1.2/32", "10.10.2.9/32"]);
    assert!(delta.rules_delete.is_empty());
    assert!(delta.services_upsert.is_empty() && delta.peers_upsert.is_empty());
    assert!(delta.isolation.is_none());
}

#[test]
fn a_service_endpoint_change_is_one_service_upsert() {
    let mut idx = lab();
    let mut compiler = PolicyCompiler::new();
    let before = state(&mut compiler, &idx, "n1");
    let mut api2 = with_http(mk_pod("web", "api2", "n2", &["10.10.2.3"], "api"), 8081);
    api2.ready = false;
    idx.apply(Object::Pod(api2));
    let after = state(&mut compiler, &idx, "n1");
    let delta = diff(&before, &after).unwrap_or_default();
    assert_eq!(
        delta
            .services_upsert
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        vec!["api"]
    );
    assert_eq!(
        delta.services_upsert[0].ports[0].endpoints,
        vec![endpoint("10.10.1.3", 8080, "n1", "api")]
    );
    assert!(delta.rules_upsert.is_empty() && delta.rules_delete.is_empty());

    idx.delete(Kind::Service, "web/api");
    let gone = state(&mut compiler, &idx, "n1");
    let delta = diff(&after, &gone).unwrap_or_default();
    assert_eq!(delta.services_delete, vec!["web/api"]);
}

#[test]
fn node_add_and_remove_change_peers_and_own_changes_replace() {
    let mut idx = lab();
    let mut compiler = PolicyCompiler::new();
    let s0 = state(&mut compiler, &idx, "n1");
    node(&mut idx, "n3", "10.10.3.0/24", &["192.168.77.3"]);
    let s1 = state(&mut compiler, &idx, "n1");
    let delta = diff(&s0, &s1).unwrap_or_default();
    assert_eq!(
        delta
            .peers_upsert
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        vec!["n3"]
    );
    assert!(delta.peers_delete.is_empty() && !delta.replace);

    idx.delete(Kind::Node, "n2");
    let s2 = state(&mut compiler, &idx, "n1");
    let delta = diff(&s1, &s2).unwrap_or_default();
    assert_eq!(delta.peers_delete, vec!["n2"]);
    assert!(delta.peers_upsert.is_empty() && delta.rules_upsert.is_empty());

    // This Node's own CIDRs change: only a replace can say that.
    node(&mut idx, "n1", "10.10.9.0/24", &["192.168.77.1"]);
    let s3 = state(&mut compiler, &idx, "n1");
    let delta = diff(&s2, &s3).unwrap_or_default();
    assert!(delta.replace);
    assert_eq!(delta, s3.to_replace());
}

#[test]
fn endpoints_need_readiness_the_named_port_and_a_selector() {
    let mut idx = lab();
    // A Pod without the named port is no endpoint; headless and selector-less Services.
    idx.apply(Object::Pod(mk_pod(
        "web",
        "api3",
        "n2",
        &["10.10.2.4"],
        "api",
    )));
    let mut numeric = ServiceRecord {
        inventory: pb::InventoryService {
            namespace: "web".into(),
            name: "num".into(),
            cluster_ips: vec!["10.96.0.11".into(), "fd96::11".into()],
            ports: vec![pb::ServicePort {
                name: String::new(),
                protocol: "UDP".into(),
                port: 53,
                target_port: "5353".into(),
            }],
        },
        selector: Some([("app".to_string(), "api".to_string())].into()),
    };
    idx.apply(Object::Service(numeric.clone()));
    numeric.inventory.name = "external".into();
    numeric.selector = None;
    idx.apply(Object::Service(numeric.clone()));
    numeric.inventory.name = "headless".into();
    numeric.inventory.cluster_ips = vec!["None".into()];
    idx.apply(Object::Service(numeric));
    let mut compiler = PolicyCompiler::new();
    let s = state(&mut compiler, &idx, "n1");
    assert_eq!(
        s.services.keys().collect::<Vec<_>>(),
        vec!["web/api", "web/external", "web/num"]
    );
    assert_eq!(s.services["web/api"].ports[0].endpoints.len(), 2);
    assert!(s.services["web/external"].ports[0].endpoints.is_empty());
    let num: Vec<(String, i32)> = s.services["web/num"].ports[0]
        .endpoints
        .iter()
        .map(|e| (e.ip.clone(), e.port))
        .collect();
    assert_eq!(
        num,
        vec![
            ("10.10.1.3".to_string(), 5353),
            ("10.10.2.3".to_string(), 5353),
            ("10.10.2.4".to_string(), 5353),
            ("fd00:1::3".to_string(), 5353),
        ]
    );
}

#[test]
fn a_bad_policy_is_skipped_and_the_rest_still_compile() {
    let mut idx = lab();
    idx.apply(k8s_policy(json!({
        "metadata": {"name": "bad", "namespace": "web"},
        "spec": {"podSelector": {},
                 "ingress": [{"from": [{"ipBlock": {"cidr": "not-a-cidr"}}]}]}
    })));
    let compiled = PolicyCompiler::new().compile(&cluster_state(&idx));
    assert_eq!(compiled.errors.len(), 1);
    let s = node_state(&idx, &compiled, "n1");
    assert_eq!(s.rules.len(), 1);
}

fn egress(v: Value) -> Object {
    let obj = serde_json::from_value(v).unwrap_or_else(|e| panic!("fixture Egress: {e}"));
    match convert::egress(&obj) {
        Ok(e) => Object::Egress(Box::new(e)),
        Err(e) => panic!("fixture Egress: {e}"),
    }
}

#[test]
fn egresses_reach_every_node_with_their_pods_and_marks_and_changes_are_deltas() {
    let mut idx = Index::new();
    node(&mut idx, "n1", "10.10.1.0/24", &["192.168.77.1"]);
    node(&mut idx, "n2", "10.10.2.0/24", &["192.168.77.2"]);
    idx.apply(Object::Pod(mk_pod(
        "web",
        "a",
        "n1",
        &["10.10.1.2"],
        "client",
    )));
    idx.apply(Object::Pod(mk_pod("web", "b", "n2", &["10.10.2.2"], "db")));
    idx.apply(Object::Pod(mk_pod(
        "ops",
        "c",
        "n2",
        &["10.10.2.3"],
        "client",
    )));
    idx.apply(Object::Namespace(pb::InventoryNamespace {
        name: "web".into(),
        labels: [("team".to_string(), "w".to_string())].into(),
    }));
    idx.apply(egress(json!({
        "apiVersion": "crd.antrea.io/v1beta1", "kind": "Egress",
        "metadata": {"name": "eg-b"},
        "spec": {"appliedTo": {"podSelector": {"matchLabels": {"app": "client"}},
                               "namespaceSelector": {"matchLabels": {"team": "w"}}},
                 "egressIP": "192.168.77.100"},
        "status": {"egressNode": "n2"}
    })));
    idx.apply(egress(json!({
        "apiVersion": "crd.antrea.io/v1beta1", "kind": "Egress",
        "metadata": {"name": "eg-a"},
        "spec": {"appliedTo": {"podSelector": {"matchLabels": {"app": "client"}}}},
        "status": {"egressIP": "192.168.77.101"}
    })));
    let compiled = CompiledPolicies::default();
    let n1 = node_state(&idx, &compiled, "n1");
    let n2 = node_state(&idx, &compiled, "n2");
    assert_eq!(n1.egresses, n2.egresses, "every Node gets every Egress");
    assert_eq!(
        n1.egresses.egresses,
        vec![
            pb::EgressState {
                name: "eg-a".into(),
                egress_ip: "192.168.77.101".into(),
                egress_node: String::new(),
                pod_ips: vec!["10.10.1.2".into(), "10.10.2.3".into()],
                mark: 1,
            },
            pb::EgressState {
                name: "eg-b".into(),
                egress_ip: "192.168.77.100".into(),
                egress_node: "n2".into(),
                // ops/c is a client too, but not in a team=w Namespace.
                pod_ips: vec!["10.10.1.2".into()],
                mark: 2,
            },
        ]
    );
    idx.apply(Object::Pod(mk_pod(
        "web",
        "d",
        "n1",
        &["10.10.1.9"],
        "client",
    )));
    let after = node_state(&idx, &compiled, "n1");
    let delta = diff(&n1, &after).unwrap_or_default();
    assert!(
        delta.egresses.is_some(),
        "a newly selected Pod resends the Egresses"
    );
    assert!(!delta.replace);
    assert!(
        convert::egress(
            &serde_json::from_value(json!({
                "apiVersion": "crd.antrea.io/v1beta1", "kind": "Egress",
                "metadata": {"name": "bad"}, "spec": {"egressIP": "not-an-ip"}
            }))
            .unwrap_or_else(|e| panic!("{e}"))
        )
        .is_err()
    );
}
