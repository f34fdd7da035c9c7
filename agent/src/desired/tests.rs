use super::*;
use crate::desired::fixtures::svc;

fn node(name: &str, cidr: &str, tun: &str) -> pb::NodeInfo {
    pb::NodeInfo {
        name: name.into(),
        pod_cidrs: vec![cidr.into()],
        tunnel_ips: vec![tun.into()],
    }
}

fn rule(id: u32, action: &str) -> pb::PolicyRule {
    pb::PolicyRule {
        conjunction_id: id,
        direction: "Ingress".into(),
        action: action.into(),
        policy_type: "K8sNetworkPolicy".into(),
        policy_namespace: "default".into(),
        policy_name: "allow-web".into(),
        table: "IngressRule".into(),
        applied_to_ips: vec!["10.1.0.2".into()],
        peer_cidrs: vec!["10.1.0.3".into(), "10.2.0.0/24".into()],
        services: vec![pb::RuleService {
            protocol: "TCP".into(),
            port: 80,
            end_port: 0,
        }],
        ..Default::default()
    }
}

fn replace() -> pb::NodeState {
    pb::NodeState {
        replace: true,
        node: Some(node("n1", "10.1.0.0/24", "192.168.77.1")),
        peers_upsert: vec![node("n2", "10.2.0.0/24", "192.168.77.2")],
        services_upsert: vec![svc("web", &["10.1.0.3", "10.2.0.2"])],
        rules_upsert: vec![rule(7, "Allow")],
        isolation: Some(pb::Isolation {
            ingress_ips: vec!["10.1.0.2".into()],
            egress_ips: vec![],
        }),
        ..Default::default()
    }
}

#[test]
fn replace_then_deltas() {
    let store = Store::default();
    let mut rx = store.subscribe();
    assert!(store.apply(replace()));
    assert!(rx.has_changed().unwrap_or(false));
    rx.borrow_and_update();
    let s = store.current();
    assert_eq!(s.node.as_ref().map(|n| n.name.as_str()), Some("n1"));
    assert_eq!(s.peers.len(), 1);
    assert_eq!(
        s.tunnel_peers(),
        vec![Peer {
            pod_cidrs: vec!["10.2.0.0/24".parse().unwrap()],
            tunnel_ip: [192, 168, 77, 2].into(),
        }]
    );
    assert_eq!(s.services["default/web"].ports[0].endpoints.len(), 2);
    assert_eq!(
        s.rules[&7].policy_ref(),
        "K8sNetworkPolicy:default/allow-web"
    );
    assert!(s.isolated_ingress.contains(&"10.1.0.2".parse().unwrap()));

    // Same state again: no change, no wake-up.
    assert!(!store.apply(replace()));
    assert!(!rx.has_changed().unwrap_or(true));

    // Upsert replaces by key, delete removes by key, unknown deletes are ignored.
    assert!(store.apply(pb::NodeState {
        peers_upsert: vec![
            node("n2", "10.2.0.0/24", "192.168.77.9"),
            node("n3", "10.3.0.0/24", "192.168.77.3")
        ],
        services_delete: vec!["default/web".into(), "default/nope".into()],
        rules_upsert: vec![rule(7, "Drop")],
        rules_delete: vec![99],
        ..Default::default()
    }));
    let s = store.current();
    assert_eq!(s.peers.len(), 2);
    assert_eq!(s.peers["n2"].tunnel_ip(), Some([192, 168, 77, 9].into()));
    assert!(s.services.is_empty());
    assert_eq!(s.rules[&7].action, RuleAction::Drop);
    // Isolation absent in a delta = unchanged.
    assert_eq!(s.isolated_ingress.len(), 1);

    // A replace drops whatever it does not list.
    assert!(store.apply(pb::NodeState {
        replace: true,
        ..Default::default()
    }));
    assert_eq!(*store.current(), DesiredState::default());
}

#[test]
fn invalid_objects_are_skipped_and_the_rest_applies() {
    let store = Store::default();
    let mut bad_peer = node("n2", "10.2.0.0/33", "192.168.77.2");
    bad_peer.name = "n2".into();
    let mut bad_rule = rule(8, "Allow");
    bad_rule.direction = "Sideways".into();
    let mut bad_svc = svc("bad", &["not-an-ip"]);
    bad_svc.name = "bad".into();
    let mut s = DesiredState::default();
    let errors = s.apply(pb::NodeState {
        replace: true,
        peers_upsert: vec![bad_peer, node("n3", "10.3.0.0/24", "192.168.77.3")],
        services_upsert: vec![bad_svc, svc("web", &["10.1.0.3"])],
        rules_upsert: vec![bad_rule, rule(0, "Allow"), rule(9, "Reject")],
        ..Default::default()
    });
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(errors[0].to_string().contains("n2"));
    assert_eq!(s.peers.keys().collect::<Vec<_>>(), ["n3"]);
    assert_eq!(s.services.keys().collect::<Vec<_>>(), ["default/web"]);
    assert_eq!(s.rules.keys().collect::<Vec<_>>(), [&9]);
    assert!(
        store.apply(pb::NodeState {
            replace: true,
            ..Default::default()
        }) || store.current().peers.is_empty()
    );
}

#[test]
fn static_peers_are_replaced_by_the_adapter() {
    let peer: Peer = "10.2.0.0/24=192.168.77.2".parse().unwrap();
    let store = Store::with_static_peers(std::slice::from_ref(&peer));
    assert_eq!(store.current().tunnel_peers(), vec![peer]);
    store.apply(pb::NodeState {
        replace: true,
        peers_upsert: vec![node("n3", "10.3.0.0/24", "192.168.77.3")],
        ..Default::default()
    });
    let peers = store.current().tunnel_peers();
    assert_eq!(peers.len(), 1);
    assert_eq!(
        peers[0].tunnel_ip,
        std::net::IpAddr::from([192, 168, 77, 3])
    );
}

#[test]
fn live_tags_survive_a_replace_and_only_real_changes_wake_the_pipeline() {
    let store = Store::default();
    let mut rx = store.subscribe();
    assert!(store.set_live_tag(7, true));
    assert!(!store.set_live_tag(7, true), "already on");
    rx.borrow_and_update();
    assert!(store.apply(replace()));
    assert_eq!(
        store
            .current()
            .live_tags
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        vec![7]
    );
    rx.borrow_and_update();
    assert!(store.set_live_tag(7, false));
    assert!(rx.has_changed().unwrap_or(false));
    assert!(!store.set_live_tag(7, false), "already off");
    assert!(store.current().live_tags.is_empty());
}
