//! The coordinator task driven through its handle, with a registered fake agent.

use std::collections::HashSet;

use tokio::sync::mpsc;
use traceflow_proto::v1::{self as pb, Action, Component, TraceflowPhase};

use super::*;
use crate::inventory::{Object, convert, convert::fixtures::*};

struct Harness {
    handle: CoordinatorHandle,
    updates: mpsc::UnboundedReceiver<pb::TraceUpdate>,
    agents: Agents,
}

fn inventory() -> Inventory {
    let inv = Inventory::new();
    for n in [
        mk_node("n1", &["10.10.1.0/24"], &["192.168.77.1"]),
        mk_node("n2", &["10.10.2.0/24"], &["192.168.77.2"]),
    ] {
        if let Ok(n) = convert::node(&n) {
            inv.apply(Object::Node(n));
        }
    }
    for p in [
        mk_pod("default", "p0", "n1", &["10.10.1.2"]),
        mk_pod("default", "p1", "n2", &["10.10.2.3"]),
        mk_pod("default", "p2", "n2", &["10.10.2.4"]),
    ] {
        if let Ok(p) = convert::pod(&p) {
            inv.apply(Object::Pod(p));
        }
    }
    inv
}

fn harness() -> Harness {
    let agents = Agents::new();
    let (tx, updates) = mpsc::unbounded_channel();
    let (coordinator, handle) = Coordinator::new(inventory(), agents.clone(), tx);
    tokio::spawn(coordinator.run());
    Harness {
        handle,
        updates,
        agents,
    }
}

fn trace(uid: &str, dst_pod: &str, timeout: i32) -> pb::Traceflow {
    pb::Traceflow {
        uid: uid.into(),
        name: format!("{uid}-name"),
        spec: Some(pb::TraceflowSpec {
            source: Some(pb::Source {
                namespace: "default".into(),
                pod: "p0".into(),
                ip: String::new(),
            }),
            destination: Some(pb::Destination {
                namespace: "default".into(),
                pod: dst_pod.into(),
                ..Default::default()
            }),
            timeout,
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn next(h: &mut Harness) -> pb::TraceUpdate {
    match tokio::time::timeout(Duration::from_secs(30), h.updates.recv()).await {
        Ok(Some(u)) => u,
        _ => panic!("no update"),
    }
}

fn phase(u: &pb::TraceUpdate) -> i32 {
    u.status.as_ref().map_or(0, |s| s.phase)
}

fn reason(u: &pb::TraceUpdate) -> &str {
    u.status.as_ref().map_or("", |s| s.reason.as_str())
}

fn obs(c: Component, a: Action) -> pb::Observation {
    pb::Observation {
        component: c as i32,
        action: a as i32,
        ..Default::default()
    }
}

fn report(id: u32, observations: Vec<pb::Observation>) -> pb::TraceReport {
    pb::TraceReport {
        trace_id: id,
        ipv6: false,
        result: Some(pb::NodeResult {
            observations,
            ..Default::default()
        }),
        captured_packet: None,
        dataplane_tag: 0,
    }
}

async fn inject(rx: &mut mpsc::Receiver<pb::AgentCommand>) -> pb::InjectPacket {
    match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
        Ok(Some(pb::AgentCommand {
            kind: Some(pb::agent_command::Kind::Inject(p)),
        })) => p,
        other => panic!("no inject: {other:?}"),
    }
}

#[tokio::test]
async fn inter_node_trace_runs_to_succeeded_with_roles_and_sequence() {
    let mut h = harness();
    let (_c, mut n1) = h.agents.register("n1");
    h.handle.start(trace("u1", "p1", 0));
    let running = next(&mut h).await;
    assert_eq!(phase(&running), TraceflowPhase::Running as i32);
    let status = running.status.clone().unwrap_or_default();
    assert!(status.trace_id != 0 && status.start_time_micros > 0);
    let pkt = inject(&mut n1).await;
    assert_eq!(
        (pkt.trace_uid.as_str(), pkt.trace_id),
        ("u1", status.trace_id)
    );
    assert_eq!(
        (pkt.src_ip.as_str(), pkt.dst_ip.as_str(), pkt.protocol),
        ("10.10.1.2", "10.10.2.3", 1)
    );

    h.handle.report(
        "n2",
        report(
            pkt.trace_id,
            vec![
                obs(Component::Forwarding, Action::Received),
                obs(Component::Forwarding, Action::Delivered),
            ],
        ),
    );
    let u = next(&mut h).await;
    assert_eq!(
        phase(&u),
        TraceflowPhase::Running as i32,
        "no sender evidence yet"
    );
    h.handle.report(
        "n1",
        report(
            pkt.trace_id,
            vec![
                obs(Component::SpoofGuard, Action::Forwarded),
                obs(Component::Forwarding, Action::Forwarded),
            ],
        ),
    );
    let done = next(&mut h).await;
    assert_eq!(phase(&done), TraceflowPhase::Succeeded as i32);
    let status = done.status.unwrap_or_default();
    let roles: Vec<_> = status
        .results
        .iter()
        .map(|r| (r.node.as_str(), r.role.as_str()))
        .collect();
    assert_eq!(roles, vec![("n1", "sender"), ("n2", "receiver")]);
    let seq: Vec<u32> = status
        .results
        .iter()
        .flat_map(|r| r.observations.iter().map(|o| o.sequence))
        .collect();
    assert_eq!(seq, vec![1, 2, 3, 4]);
    assert!(status.end_time_micros >= status.start_time_micros);
}

#[tokio::test]
async fn agent_not_connected_fails_with_node_reason() {
    let mut h = harness();
    h.handle.start(trace("u1", "p1", 0));
    assert_eq!(phase(&next(&mut h).await), TraceflowPhase::Running as i32);
    let failed = next(&mut h).await;
    assert_eq!(phase(&failed), TraceflowPhase::Failed as i32);
    assert_eq!(reason(&failed), "Node: n1, error: agent is not connected");
}

#[tokio::test]
async fn missing_destination_pod_fails_at_once() {
    let mut h = harness();
    let (_c, _n1) = h.agents.register("n1");
    h.handle.start(trace("u1", "ghost", 0));
    let failed = next(&mut h).await;
    assert_eq!(phase(&failed), TraceflowPhase::Failed as i32);
    assert_eq!(
        reason(&failed),
        "Node: n1, error: failed to get the destination Pod: pods \"ghost\" not found"
    );
}

#[tokio::test(start_paused = true)]
async fn timer_fails_the_trace_after_spec_timeout_and_frees_the_id() {
    let mut h = harness();
    let (_c, mut n1) = h.agents.register("n1");
    h.handle.start(trace("u1", "p1", 3));
    next(&mut h).await;
    let pkt = inject(&mut n1).await;
    let failed = next(&mut h).await;
    assert_eq!(phase(&failed), TraceflowPhase::Failed as i32);
    assert_eq!(reason(&failed), "Traceflow timeout");
    // A late report for the freed id changes nothing.
    h.handle.report(
        "n1",
        report(
            pkt.trace_id,
            vec![obs(Component::SpoofGuard, Action::Forwarded)],
        ),
    );
    h.handle.start(trace("u2", "p1", 3));
    let u2 = next(&mut h).await;
    assert_eq!(u2.uid, "u2");
}

#[tokio::test]
async fn agent_failure_and_cancel_end_the_trace() {
    let mut h = harness();
    let (_c, mut n1) = h.agents.register("n1");
    h.handle.start(trace("u1", "p1", 0));
    next(&mut h).await;
    let pkt = inject(&mut n1).await;
    h.handle.agent_failure(
        "n1",
        pb::TraceFailure {
            trace_uid: "u1".into(),
            trace_id: pkt.trace_id,
            reason: "no port for Pod".into(),
        },
    );
    assert_eq!(
        reason(&next(&mut h).await),
        "Node: n1, error: no port for Pod"
    );
    h.handle.start(trace("u2", "p1", 0));
    next(&mut h).await;
    h.handle.cancel("u2".into());
    let cancelled = next(&mut h).await;
    assert_eq!(
        (cancelled.uid.as_str(), reason(&cancelled)),
        ("u2", REASON_CANCELLED)
    );
}

#[tokio::test]
async fn thousand_concurrent_traces_get_their_own_observations() {
    let mut h = harness();
    let (_c, mut n1) = h.agents.register("n1");
    for i in 0..1000 {
        h.handle.start(trace(
            &format!("u{i}"),
            if i % 2 == 0 { "p1" } else { "p2" },
            0,
        ));
    }
    let mut ids = HashSet::new();
    let mut packets = Vec::new();
    for _ in 0..1000 {
        let p = inject(&mut n1).await;
        assert!(ids.insert(p.trace_id), "duplicate trace id {}", p.trace_id);
        packets.push(p);
    }
    // Every trace reports, in reverse order, an observation naming its own destination.
    for p in packets.iter().rev() {
        let mut delivered = obs(Component::Forwarding, Action::Delivered);
        delivered.translated_dst_ip = p.dst_ip.clone();
        h.handle.report(
            "n1",
            report(
                p.trace_id,
                vec![obs(Component::SpoofGuard, Action::Forwarded), delivered],
            ),
        );
    }
    let mut succeeded = 0;
    while succeeded < 1000 {
        let u = next(&mut h).await;
        if phase(&u) == TraceflowPhase::Succeeded as i32 {
            succeeded += 1;
            let i: usize = u.uid.trim_start_matches('u').parse().unwrap_or(usize::MAX);
            let want = if i.is_multiple_of(2) {
                "default/p1"
            } else {
                "default/p2"
            };
            let status = u.status.unwrap_or_default();
            assert_eq!(status.results.len(), 1);
            assert_eq!(
                status.results[0].observations[1].pod, want,
                "trace {} got another trace's report",
                u.uid
            );
        }
    }
}
