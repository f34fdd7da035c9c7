//! The coordinator task driven through its handle, with a registered fake agent.

use std::collections::HashSet;

use tokio::sync::mpsc;
use traceflow_proto::v1::{self as pb, Action, Component, TraceflowPhase};

use super::*;
use crate::inventory::convert::fixtures::*;

struct Harness {
    handle: CoordinatorHandle,
    updates: mpsc::Receiver<pb::TraceUpdate>,
    agents: Agents,
}

fn inventory() -> Inventory {
    let inv = Inventory::new();
    let pods = [
        mk_pod("default", "p0", "n1", &["10.10.1.2"]),
        mk_pod("default", "p1", "n2", &["10.10.2.3"]),
        mk_pod("default", "p2", "n2", &["10.10.2.4"]),
    ];
    for o in objects(&two_nodes(), &pods, &[]) {
        inv.apply(o);
    }
    inv
}

fn harness() -> Harness {
    let agents = Agents::new();
    let (tx, updates) = mpsc::channel(UPDATE_QUEUE);
    let (coordinator, handle) = Coordinator::new(inventory(), agents.clone(), tx);
    tokio::spawn(coordinator.run());
    Harness {
        handle,
        updates,
        agents,
    }
}

/// A trace as the adapter's edges hand it over: converted through `NewTrace::try_from`.
fn new(t: pb::Traceflow) -> NewTrace {
    NewTrace::try_from(t).expect("fixture spec is valid")
}

fn trace(uid: &str, dst_pod: &str, timeout: i32) -> NewTrace {
    new(trace_pb(uid, dst_pod, timeout))
}

fn trace_pb(uid: &str, dst_pod: &str, timeout: i32) -> pb::Traceflow {
    pb::Traceflow {
        uid: uid.into(),
        name: format!("{uid}-name"),
        spec: Some(pb::TraceflowSpec {
            timeout,
            ..traceflow_core::fixtures::pod_to_pod("p0", dst_pod)
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

/// A report of the trace `p` was injected for, as an agent that saw the packet sends it: its
/// id, family and secret (read from the packet) and the packet as seen.
fn report(p: &pb::InjectPacket, observations: Vec<pb::Observation>) -> pb::TraceReport {
    pb::TraceReport {
        trace_id: p.trace_id,
        ipv6: p.ipv6,
        secret: p.secret,
        seen_packet: Some(pb::Packet {
            src_ip: p.src_ip.clone(),
            dst_ip: p.dst_ip.clone(),
            ..Default::default()
        }),
        ..result_only(observations)
    }
}

/// A report of nothing but `observations` (no id, tag, secret or packet).
fn result_only(observations: Vec<pb::Observation>) -> pb::TraceReport {
    pb::TraceReport {
        result: Some(pb::NodeResult {
            observations,
            ..Default::default()
        }),
        ..Default::default()
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
    // The destination Pods' Node has an agent too (else the trace fails at once).
    let (_c2, _n2) = h.agents.register("n2");
    h.handle.start(trace("u1", "p1", 0)).await;
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

    h.handle
        .report(
            "n2",
            report(
                &pkt,
                vec![
                    obs(Component::Forwarding, Action::Received),
                    obs(Component::Forwarding, Action::Delivered),
                ],
            ),
        )
        .await;
    let u = next(&mut h).await;
    assert_eq!(
        phase(&u),
        TraceflowPhase::Running as i32,
        "no sender evidence yet"
    );
    h.handle
        .report(
            "n1",
            report(
                &pkt,
                vec![
                    obs(Component::SpoofGuard, Action::Forwarded),
                    obs(Component::Forwarding, Action::Forwarded),
                ],
            ),
        )
        .await;
    let done = next(&mut h).await;
    assert_eq!(phase(&done), TraceflowPhase::Succeeded as i32);
    let status = done.status.unwrap_or_default();
    assert_eq!(
        record::order(&status.results),
        (vec![("n1", "sender"), ("n2", "receiver")], vec![1, 2, 3, 4])
    );
    assert!(status.end_time_micros >= status.start_time_micros);
}

#[tokio::test]
async fn agent_not_connected_fails_with_node_reason() {
    let mut h = harness();
    h.handle.start(trace("u1", "p1", 0)).await;
    assert_eq!(phase(&next(&mut h).await), TraceflowPhase::Running as i32);
    let failed = next(&mut h).await;
    assert_eq!(phase(&failed), TraceflowPhase::Failed as i32);
    assert_eq!(reason(&failed), "Node: n1, error: agent is not connected");
}

#[tokio::test]
async fn missing_destination_pod_fails_at_once() {
    let mut h = harness();
    let (_c, _n1) = h.agents.register("n1");
    h.handle.start(trace("u1", "ghost", 0)).await;
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
    // The destination Pods' Node has an agent too (else the trace fails at once).
    let (_c2, _n2) = h.agents.register("n2");
    h.handle.start(trace("u1", "p1", 3)).await;
    next(&mut h).await;
    let pkt = inject(&mut n1).await;
    let failed = next(&mut h).await;
    assert_eq!(phase(&failed), TraceflowPhase::Failed as i32);
    assert_eq!(
        reason(&failed),
        "Traceflow timeout: no report from Node n1 (the sender's); no report from Node n2 \
         (the destination's)"
    );
    // A late report for the freed id changes nothing.
    h.handle
        .report(
            "n1",
            report(&pkt, vec![obs(Component::SpoofGuard, Action::Forwarded)]),
        )
        .await;
    h.handle.start(trace("u2", "p1", 3)).await;
    let u2 = next(&mut h).await;
    assert_eq!(u2.uid, "u2");
}

#[tokio::test]
async fn agent_failure_and_cancel_end_the_trace() {
    let mut h = harness();
    let (_c, mut n1) = h.agents.register("n1");
    let (_c2, _n2) = h.agents.register("n2");
    h.handle.start(trace("u1", "p1", 0)).await;
    next(&mut h).await;
    let pkt = inject(&mut n1).await;
    // A Node with no part in the trace cannot fail it (n2 only hosts the destination).
    h.handle
        .agent_failure(
            "n2",
            pb::TraceFailure {
                trace_uid: "u1".into(),
                trace_id: pkt.trace_id,
                reason: "forged".into(),
            },
        )
        .await;
    h.handle
        .agent_failure(
            "n1",
            pb::TraceFailure {
                trace_uid: "u1".into(),
                trace_id: pkt.trace_id,
                reason: "no port for Pod".into(),
            },
        )
        .await;
    assert_eq!(
        reason(&next(&mut h).await),
        "Node: n1, error: no port for Pod"
    );
    h.handle.start(trace("u2", "p1", 0)).await;
    next(&mut h).await;
    h.handle.cancel("u2".into()).await;
    let cancelled = next(&mut h).await;
    assert_eq!(
        (cancelled.uid.as_str(), reason(&cancelled)),
        ("u2", reasons::CANCELLED)
    );
}

#[tokio::test]
async fn thousand_concurrent_traces_get_their_own_observations() {
    let mut h = harness();
    let (_c, mut n1) = h.agents.register("n1");
    // The destination Pods' Node has an agent too (else the trace fails at once).
    let (_c2, _n2) = h.agents.register("n2");
    for i in 0..1000 {
        h.handle
            .start(trace(
                &format!("u{i}"),
                if i % 2 == 0 { "p1" } else { "p2" },
                0,
            ))
            .await;
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
        h.handle
            .report(
                "n1",
                report(
                    p,
                    vec![obs(Component::SpoofGuard, Action::Forwarded), delivered],
                ),
            )
            .await;
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

fn live(uid: &str, dropped_only: bool) -> NewTrace {
    let mut t = trace_pb(uid, "p1", 0);
    if let Some(s) = t.spec.as_mut() {
        s.live_traffic = true;
        s.dropped_only = dropped_only;
    }
    new(t)
}

/// A live report of tag `tag` whose packet is p0's to p1 (the `live()` fixture's traffic).
fn live_report(tag: u32, observations: Vec<pb::Observation>) -> pb::TraceReport {
    pb::TraceReport {
        dataplane_tag: tag,
        seen_packet: Some(packet("10.10.1.2", "10.10.2.3")),
        ..result_only(observations)
    }
}

fn packet(src: &str, dst: &str) -> pb::Packet {
    pb::Packet {
        src_ip: src.into(),
        dst_ip: dst.into(),
        ..Default::default()
    }
}

/// n1 reports the sender part of live trace tag 7 (forwarded out of the Node); the trace,
/// waiting for the receiver, stays Running.
async fn n1_reports_its_live_sender_part(h: &mut Harness) {
    h.handle
        .report(
            "n1",
            live_report(
                7,
                vec![
                    obs(Component::SpoofGuard, Action::Forwarded),
                    obs(Component::Forwarding, Action::Forwarded),
                ],
            ),
        )
        .await;
    assert_eq!(phase(&next(h).await), TraceflowPhase::Running as i32);
}

async fn command(rx: &mut mpsc::Receiver<pb::AgentCommand>) -> pb::agent_command::Kind {
    match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
        Ok(Some(pb::AgentCommand { kind: Some(k) })) => k,
        other => panic!("no command: {other:?}"),
    }
}

async fn live_cmd(rx: &mut mpsc::Receiver<pb::AgentCommand>) -> pb::LiveTrace {
    match command(rx).await {
        pb::agent_command::Kind::LiveTrace(c) => c,
        other => panic!("not a LiveTrace: {other:?}"),
    }
}

#[tokio::test]
async fn live_trace_tags_on_the_sender_and_succeeds_with_captured_packet() {
    let mut h = harness();
    let (_c1, mut n1) = h.agents.register("n1");
    let (_c2, mut n2) = h.agents.register("n2");
    h.handle.start(live("u1", false)).await;
    let running = next(&mut h).await;
    assert_eq!(phase(&running), TraceflowPhase::Running as i32);
    let tag = running.status.as_ref().map_or(0, |s| s.dataplane_tag);
    assert_eq!(tag, 7, "Antrea's first tag");

    // n2 first: the tagging Node (n1) waits until every other Node is armed.
    let c2 = live_cmd(&mut n2).await;
    assert_eq!(c2.role, pb::LiveTraceRole::Any as i32);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(n1.try_recv().is_err(), "n1 tagged before n2 was armed");
    h.handle.live_armed("n2", "u1".into()).await;
    let c1 = live_cmd(&mut n1).await;
    assert_eq!(c1.role, pb::LiveTraceRole::Sender as i32);
    assert_eq!((c1.trace_uid.as_str(), c1.dscp_tag), ("u1", 7));
    assert_eq!(
        (c1.in_pod_namespace.as_str(), c1.in_pod_name.as_str()),
        ("default", "p0")
    );
    assert_eq!(
        (c1.src_ip.as_str(), c1.dst_ip.as_str()),
        ("10.10.1.2", "10.10.2.3")
    );
    assert_eq!(c1.timeout_seconds, 20);

    let mut sent = live_report(
        7,
        vec![
            obs(Component::SpoofGuard, Action::Forwarded),
            obs(Component::Forwarding, Action::Forwarded),
        ],
    );
    sent.captured_packet = Some(pb::Packet {
        src_ip: "10.10.1.2".into(),
        dst_ip: "10.10.2.3".into(),
        length: 84,
        ..Default::default()
    });
    h.handle.report("n1", sent).await;
    assert_eq!(phase(&next(&mut h).await), TraceflowPhase::Running as i32);
    h.handle
        .report(
            "n2",
            live_report(
                7,
                vec![
                    obs(Component::Forwarding, Action::Received),
                    obs(Component::Forwarding, Action::Delivered),
                ],
            ),
        )
        .await;
    let done = next(&mut h).await;
    assert_eq!(phase(&done), TraceflowPhase::Succeeded as i32);
    let status = done.status.unwrap_or_default();
    assert_eq!(status.dataplane_tag, 7);
    assert_eq!(status.captured_packet.as_ref().map(|p| p.length), Some(84));
    let roles: Vec<_> = status
        .results
        .iter()
        .map(|r| (r.node.as_str(), r.role.as_str()))
        .collect();
    assert_eq!(roles, vec![("n1", "sender"), ("n2", "receiver")]);
    for rx in [&mut n1, &mut n2] {
        assert!(matches!(
            command(rx).await,
            pb::agent_command::Kind::StopLiveTrace(pb::StopLiveTrace { trace_uid }) if trace_uid == "u1"
        ));
    }
    // The tag is free again: a report carrying it now belongs to no trace.
    h.handle.report("n2", live_report(7, vec![])).await;
    h.handle.start(live("u2", false)).await;
    let u2 = next(&mut h).await;
    assert_eq!(u2.uid, "u2");
    assert_eq!(
        u2.status.map_or(0, |s| s.dataplane_tag),
        11,
        "cursor moves on"
    );
}

#[tokio::test]
async fn a_single_node_live_trace_tags_at_once_and_a_lost_tagging_agent_fails_it() {
    let mut h = harness();
    let (c1, mut n1) = h.agents.register("n1");
    // Only n1 has an agent: nothing to wait for.
    h.handle.start(live("u1", false)).await;
    assert_eq!(phase(&next(&mut h).await), TraceflowPhase::Running as i32);
    assert_eq!(
        live_cmd(&mut n1).await.role,
        pb::LiveTraceRole::Sender as i32
    );

    // The tagging Node's agent goes away while the others arm: the trace fails with the reason.
    let (_c2, mut n2) = h.agents.register("n2");
    h.agents.unregister("n1", c1);
    drop(n1);
    h.handle.start(live("u2", false)).await;
    assert_eq!(phase(&next(&mut h).await), TraceflowPhase::Running as i32);
    assert_eq!(live_cmd(&mut n2).await.role, pb::LiveTraceRole::Any as i32);
    h.handle.live_armed("n2", "u2".into()).await;
    let failed = next(&mut h).await;
    assert_eq!(phase(&failed), TraceflowPhase::Failed as i32);
    assert!(
        reason(&failed).starts_with("Node: n1, error: "),
        "{}",
        reason(&failed)
    );
}

#[tokio::test]
async fn a_live_trace_reaches_agents_that_attach_late_but_not_nodes_that_reported() {
    let mut h = harness();
    let (_c1, mut n1) = h.agents.register("n1");
    // n2's agent is away when the trace starts: nothing to wait for, n1 tags at once.
    h.handle.start(live("u1", false)).await;
    assert_eq!(phase(&next(&mut h).await), TraceflowPhase::Running as i32);
    assert_eq!(
        live_cmd(&mut n1).await.role,
        pb::LiveTraceRole::Sender as i32
    );
    // n2 attaches: it gets its part.
    let (_c2, mut n2) = h.agents.register("n2");
    h.handle.agent_attached("n2").await;
    let c2 = live_cmd(&mut n2).await;
    assert_eq!(
        (c2.role, c2.trace_uid.as_str()),
        (pb::LiveTraceRole::Any as i32, "u1")
    );
    // n1 reports, then its agent re-attaches: its part is done, nothing is sent again.
    n1_reports_its_live_sender_part(&mut h).await;
    h.handle.agent_attached("n1").await;
    // n2 re-attaching (e.g. its agent restarted) before reporting gets its part again.
    h.handle.agent_attached("n2").await;
    assert_eq!(live_cmd(&mut n2).await.trace_uid, "u1");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        n1.try_recv().is_err(),
        "n1 got its live trace again after reporting"
    );
}

#[tokio::test(start_paused = true)]
async fn a_live_trace_that_never_armed_times_out_naming_the_nodes() {
    let mut h = harness();
    let (_c1, _n1) = h.agents.register("n1");
    let (_c2, mut n2) = h.agents.register("n2");
    h.handle.start(live("u1", false)).await;
    assert_eq!(phase(&next(&mut h).await), TraceflowPhase::Running as i32);
    assert_eq!(live_cmd(&mut n2).await.role, pb::LiveTraceRole::Any as i32);
    // n2 never answers LiveTraceArmed; the 20 s timer fires.
    let failed = next(&mut h).await;
    assert_eq!(phase(&failed), TraceflowPhase::Failed as i32);
    assert_eq!(
        reason(&failed),
        "Traceflow timeout: the live-traffic flows were never armed on Node(s) n2, so no \
         traffic was tagged; check those Nodes' agents"
    );
}

#[tokio::test]
async fn live_dropped_only_succeeds_on_any_report() {
    let mut h = harness();
    let (_c1, _n1) = h.agents.register("n1");
    let (_c2, _n2) = h.agents.register("n2");
    h.handle.start(live("u1", true)).await;
    assert_eq!(phase(&next(&mut h).await), TraceflowPhase::Running as i32);
    h.handle
        .report(
            "n2",
            live_report(7, vec![obs(Component::NetworkPolicy, Action::Dropped)]),
        )
        .await;
    assert_eq!(phase(&next(&mut h).await), TraceflowPhase::Succeeded as i32);
}

#[tokio::test]
async fn live_tag_space_full_fails_clearly() {
    let mut h = harness();
    let (_c1, _n1) = h.agents.register("n1");
    let (_c2, _n2) = h.agents.register("n2");
    for i in 0..14 {
        h.handle.start(live(&format!("u{i}"), false)).await;
        assert_eq!(phase(&next(&mut h).await), TraceflowPhase::Running as i32);
    }
    h.handle.start(live("u14", false)).await;
    let failed = next(&mut h).await;
    assert_eq!(phase(&failed), TraceflowPhase::Failed as i32);
    assert_eq!(
        reason(&failed),
        "number of on-going live-traffic Traceflows reached the limit of 14"
    );
    // Ending one frees its tag.
    h.handle.cancel("u3".into()).await;
    assert_eq!(phase(&next(&mut h).await), TraceflowPhase::Failed as i32);
    h.handle.start(live("u15", false)).await;
    let u = next(&mut h).await;
    assert_eq!(phase(&u), TraceflowPhase::Running as i32);
    assert_eq!(u.status.map_or(0, |s| s.dataplane_tag), 19);
}

/// An agent that drops its stream fails, within a second, every injected trace that needs its
/// Node (sender or destination Pod's Node) with Antrea's Node-error form; others go on.
#[tokio::test]
async fn agent_disconnect_fails_the_traces_that_need_its_node_at_once() {
    let mut h = harness();
    let (_c1, mut n1) = h.agents.register("n1");
    let (c2, _n2) = h.agents.register("n2");
    // u1: n1 → p1 on n2; both need n2 (as destination) and n1 (as sender).
    h.handle.start(trace("u1", "p1", 0)).await;
    assert_eq!(phase(&next(&mut h).await), TraceflowPhase::Running as i32);
    inject(&mut n1).await;
    // u2: p0 → p0's own Node only (intra-node to p0 itself is refused; use an IP instead).
    let mut t2 = trace_pb("u2", "p1", 0);
    if let Some(d) = t2.spec.as_mut().and_then(|s| s.destination.as_mut()) {
        d.pod = String::new();
        d.ip = "10.10.1.99".into();
    }
    h.handle.start(new(t2)).await;
    assert_eq!(phase(&next(&mut h).await), TraceflowPhase::Running as i32);
    inject(&mut n1).await;
    // u3: to the IP of p2, a Pod on n2: needs n2 as much as u1 does.
    let mut t3 = trace_pb("u3", "p1", 0);
    if let Some(d) = t3.spec.as_mut().and_then(|s| s.destination.as_mut()) {
        d.pod = String::new();
        d.ip = "10.10.2.4".into();
    }
    h.handle.start(new(t3)).await;
    assert_eq!(phase(&next(&mut h).await), TraceflowPhase::Running as i32);
    inject(&mut n1).await;

    let began = std::time::Instant::now();
    h.agents.unregister("n2", c2);
    h.handle.agent_detached("n2").await;
    let mut failed = [next(&mut h).await, next(&mut h).await];
    assert!(began.elapsed() < Duration::from_secs(1));
    failed.sort_by(|a, b| a.uid.cmp(&b.uid));
    for (f, uid) in failed.iter().zip(["u1", "u3"]) {
        assert_eq!(f.uid, uid);
        assert_eq!(phase(f), TraceflowPhase::Failed as i32);
        assert_eq!(reason(f), "Node: n2, error: agent disconnected");
    }
    // u2 does not need n2: still running, nothing else was emitted.
    assert!(h.updates.try_recv().is_err(), "u2 was failed too");
    h.handle.agent_detached("n1").await;
    let failed = next(&mut h).await;
    assert_eq!(
        (failed.uid.as_str(), reason(&failed)),
        ("u2", "Node: n1, error: agent disconnected")
    );
}

#[tokio::test]
async fn traces_beyond_the_in_flight_bound_fail_at_once_saying_so() {
    let agents = Agents::new();
    let (tx, updates) = mpsc::channel(UPDATE_QUEUE);
    let (coordinator, handle) = Coordinator::new(inventory(), agents.clone(), tx);
    tokio::spawn(coordinator.with_max_in_flight(2).run());
    let (_c, _n1) = agents.register("n1");
    let (_c2, _n2) = agents.register("n2");
    let mut h = Harness {
        handle,
        updates,
        agents,
    };
    h.handle.start(trace("u1", "p1", 0)).await;
    h.handle.start(trace("u2", "p1", 0)).await;
    for _ in 0..2 {
        assert_eq!(phase(&next(&mut h).await), TraceflowPhase::Running as i32);
    }
    h.handle.start(trace("u3", "p1", 0)).await;
    let u3 = next(&mut h).await;
    assert_eq!(
        (u3.uid.as_str(), phase(&u3)),
        ("u3", TraceflowPhase::Failed as i32)
    );
    assert_eq!(reason(&u3), reasons::ADAPTER_BUSY);
    // One ends: room for the next.
    h.handle.cancel("u1".into()).await;
    assert_eq!(phase(&next(&mut h).await), TraceflowPhase::Failed as i32);
    h.handle.start(trace("u4", "p1", 0)).await;
    let u4 = next(&mut h).await;
    assert_eq!(
        (u4.uid.as_str(), phase(&u4)),
        ("u4", TraceflowPhase::Running as i32)
    );
}

/// Nobody takes the coordinator's updates: it stops taking commands, its queue fills, and a
/// sender waits (instead of memory growing); taking updates lets everything through.
#[tokio::test]
async fn a_stalled_consumer_holds_senders_back_and_loses_nothing() {
    let (tx, mut updates) = mpsc::channel(1);
    let (coordinator, handle) = Coordinator::new(inventory(), Agents::new(), tx);
    tokio::spawn(coordinator.run());
    // Each refusal emits one Failed update.
    let mut sent = 0;
    let blocked = loop {
        let send = handle.reject(format!("r{sent}"), "refused".into());
        match tokio::time::timeout(Duration::from_millis(500), send).await {
            Ok(()) => sent += 1,
            Err(_) => break sent,
        }
        assert!(
            sent <= COMMAND_QUEUE + 2,
            "{sent} commands taken with no consumer"
        );
    };
    assert!(blocked >= COMMAND_QUEUE, "held back after only {blocked}");
    // The consumer comes back: every accepted command's update arrives, in order.
    let mut seen = 0;
    while seen < blocked {
        let u = tokio::time::timeout(Duration::from_secs(10), updates.recv())
            .await
            .expect("updates flow again")
            .expect("coordinator alive");
        assert_eq!(u.uid, format!("r{seen}"));
        seen += 1;
    }
}

fn reply_report(
    p: &pb::InjectPacket,
    reply: bool,
    observations: Vec<pb::Observation>,
) -> pb::TraceReport {
    let mut r = report(p, observations);
    if let Some(res) = r.result.as_mut() {
        res.direction = if reply {
            pb::Direction::Reply
        } else {
            pb::Direction::Forward
        } as i32;
    }
    r
}

/// A `reply` trace to a Service whose targetPort (8080) differs from its port (80): the
/// reply comes from the endpoint's port, and at the end both Nodes get the connection's
/// conntrack flush (as sent on the sender, DNATed on the endpoint's Node).
#[tokio::test]
async fn a_service_reply_comes_from_the_target_port_and_the_connection_is_flushed_at_the_end() {
    let inv = inventory();
    let mut svc = mk_service("default", "web", &["10.96.0.10"], &[("TCP", 80)]);
    if let Some(p) = svc
        .spec
        .as_mut()
        .and_then(|s| s.ports.as_mut())
        .and_then(|p| p.first_mut())
    {
        p.target_port = Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8080));
    }
    for o in objects(&[], &[], &[svc]) {
        inv.apply(o);
    }
    let agents = Agents::new();
    let (tx, mut updates) = mpsc::channel(UPDATE_QUEUE);
    let (coordinator, handle) = Coordinator::new(inv, agents.clone(), tx);
    tokio::spawn(coordinator.run());
    let (_c1, mut n1) = agents.register("n1");
    let (_c2, mut n2) = agents.register("n2");
    let mut t = pb::Traceflow {
        uid: "u1".into(),
        name: "u1-name".into(),
        spec: Some(traceflow_core::fixtures::pod_to_service(
            "p0", "default", "web",
        )),
        ..Default::default()
    };
    if let Some(s) = t.spec.as_mut() {
        s.reply = true;
    }
    handle.start(new(t)).await;
    let fwd = inject(&mut n1).await;
    assert_eq!((fwd.dst_ip.as_str(), fwd.dst_port), ("10.96.0.10", 80));
    let lb = pb::Observation {
        translated_dst_ip: "10.10.2.3".into(),
        ..obs(Component::Lb, Action::Forwarded)
    };
    let id = &fwd;
    let sender = vec![obs(Component::SpoofGuard, Action::Forwarded), lb];
    handle.report("n1", reply_report(id, false, sender)).await;
    let arrived = vec![
        obs(Component::Forwarding, Action::Received),
        obs(Component::Forwarding, Action::Delivered),
    ];
    handle.report("n2", reply_report(id, false, arrived)).await;
    let reply = inject(&mut n2).await;
    assert!(reply.reply);
    assert_eq!(
        (
            reply.src_ip.as_str(),
            reply.src_port,
            reply.dst_ip.as_str(),
            reply.dst_port
        ),
        ("10.10.2.3", 8080, "10.10.1.2", fwd.src_port),
        "from the endpoint's targetPort to the client"
    );
    assert_eq!(reply.tcp_flags, 0x12, "SYN-ACK");
    let back = vec![obs(Component::SpoofGuard, Action::Forwarded)];
    handle.report("n2", reply_report(id, true, back)).await;
    let home = vec![
        obs(Component::Forwarding, Action::Received),
        obs(Component::Forwarding, Action::Delivered),
    ];
    handle.report("n1", reply_report(id, true, home)).await;
    loop {
        let u = tokio::time::timeout(Duration::from_secs(30), updates.recv())
            .await
            .ok()
            .flatten()
            .expect("an update");
        if phase(&u) == TraceflowPhase::Succeeded as i32 {
            break;
        }
    }
    let flush = |k: pb::agent_command::Kind| match k {
        pb::agent_command::Kind::FlushConntrack(f) => f,
        other => panic!("not a FlushConntrack: {other:?}"),
    };
    let on_n1 = flush(command(&mut n1).await);
    let on_n2 = flush(command(&mut n2).await);
    let t = |f: &pb::FlushConntrack| {
        f.tuples
            .iter()
            .map(|t| (t.dst_ip.clone(), t.src_port, t.dst_port))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        t(&on_n1),
        vec![("10.96.0.10".to_string(), fwd.src_port, 80)]
    );
    assert_eq!(
        t(&on_n2),
        vec![("10.10.2.3".to_string(), fwd.src_port, 8080)]
    );
    assert_eq!((on_n1.protocol, on_n1.trace_uid.as_str()), (6, "u1"));
}

/// A `reply` trace's forward packet must own its connection (the sender checks its
/// conntrack), free to draw another source port when the spec gave none; the port the sender
/// reports having sent from is the one the reply answers and the flush names.
#[tokio::test]
async fn a_reply_trace_owns_its_connection_and_follows_the_port_the_sender_drew() {
    let h = harness();
    let (_c1, mut n1) = h.agents.register("n1");
    let (_c2, mut n2) = h.agents.register("n2");
    let header = pb::TransportHeader {
        udp: Some(pb::UdpHeader {
            src_port: 0,
            dst_port: 53,
        }),
        ..Default::default()
    };
    h.handle.start(reply_trace_to_p1(header)).await;
    let fwd = inject(&mut n1).await;
    assert!(
        fwd.own_connection,
        "the forward packet must own its connection"
    );
    assert!(
        fwd.free_src_port,
        "no source port given: the sender may draw another"
    );
    let drawn = if fwd.src_port == 60999 {
        10000
    } else {
        fwd.src_port + 1
    };
    let mut sent = reply_report(
        &fwd,
        false,
        vec![obs(Component::SpoofGuard, Action::Forwarded)],
    );
    sent.seen_packet = Some(pb::Packet {
        src_ip: fwd.src_ip.clone(),
        dst_ip: fwd.dst_ip.clone(),
        transport_header: Some(pb::TransportHeader {
            udp: Some(pb::UdpHeader {
                src_port: drawn,
                dst_port: 53,
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    h.handle.report("n1", sent).await;
    let arrived = vec![
        obs(Component::Forwarding, Action::Received),
        obs(Component::Forwarding, Action::Delivered),
    ];
    h.handle
        .report("n2", reply_report(&fwd, false, arrived))
        .await;
    let reply = inject(&mut n2).await;
    assert_eq!(
        reply.dst_port, drawn,
        "the reply answers the port actually sent from"
    );
    assert!(!reply.own_connection);
    h.handle.cancel("u1".into()).await;
    let flushed = match command(&mut n1).await {
        pb::agent_command::Kind::FlushConntrack(f) => f,
        other => panic!("not a FlushConntrack: {other:?}"),
    };
    assert_eq!(
        flushed
            .tuples
            .iter()
            .map(|t| t.src_port)
            .collect::<Vec<_>>(),
        vec![drawn]
    );
}

/// Every injected trace, not only a `reply` one, has its connection flushed at the end on
/// the Nodes that reported it (each agent flushes only what it saw a trace packet create).
#[tokio::test]
async fn an_injected_traces_connection_is_flushed_where_it_was_seen() {
    let h = harness();
    let (_c1, mut n1) = h.agents.register("n1");
    let (_c2, mut n2) = h.agents.register("n2");
    h.handle.start(trace("u1", "p1", 0)).await;
    let fwd = inject(&mut n1).await;
    assert!(
        !fwd.own_connection,
        "only a reply trace needs to own its tuple"
    );
    h.handle
        .report(
            "n1",
            report(&fwd, vec![obs(Component::SpoofGuard, Action::Forwarded)]),
        )
        .await;
    h.handle.cancel("u1".into()).await;
    match command(&mut n1).await {
        pb::agent_command::Kind::FlushConntrack(f) => {
            assert_eq!(f.trace_uid, "u1");
            assert_eq!(f.protocol, 1);
        }
        other => panic!("not a FlushConntrack: {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        n2.try_recv().is_err(),
        "n2 reported nothing: it saw no connection created"
    );
}

/// A live trace fails at once, like an injected one, when the agent of a Node whose part is
/// still pending drops its stream; a Node that already reported is no longer needed.
#[tokio::test]
async fn agent_disconnect_fails_a_live_trace_waiting_for_that_node() {
    let mut h = harness();
    let (c1, mut n1) = h.agents.register("n1");
    let (c2, mut n2) = h.agents.register("n2");
    h.handle.start(live("u1", false)).await;
    assert_eq!(phase(&next(&mut h).await), TraceflowPhase::Running as i32);
    assert_eq!(live_cmd(&mut n2).await.role, pb::LiveTraceRole::Any as i32);
    h.handle.live_armed("n2", "u1".into()).await;
    assert_eq!(
        live_cmd(&mut n1).await.role,
        pb::LiveTraceRole::Sender as i32
    );
    n1_reports_its_live_sender_part(&mut h).await;
    // n1 reported its part: losing its agent does not end the trace.
    h.agents.unregister("n1", c1);
    h.handle.agent_detached("n1").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        h.updates.try_recv().is_err(),
        "u1 failed for a Node that had reported"
    );
    // n2 still owes its part.
    let began = std::time::Instant::now();
    h.agents.unregister("n2", c2);
    h.handle.agent_detached("n2").await;
    let failed = next(&mut h).await;
    assert!(began.elapsed() < Duration::from_secs(1));
    assert_eq!(
        (failed.uid.as_str(), phase(&failed), reason(&failed)),
        (
            "u1",
            TraceflowPhase::Failed as i32,
            "Node: n2, error: agent disconnected"
        )
    );
}

/// A trace to a Pod whose Node has no agent fails at once naming that Node, without injecting:
/// nobody could report its receiving end.
#[tokio::test]
async fn a_trace_to_a_node_without_agent_fails_at_once() {
    let mut h = harness();
    let (_c1, mut n1) = h.agents.register("n1");
    h.handle.start(trace("u1", "p1", 0)).await;
    assert_eq!(phase(&next(&mut h).await), TraceflowPhase::Running as i32);
    let failed = next(&mut h).await;
    assert_eq!(
        (failed.uid.as_str(), phase(&failed), reason(&failed)),
        (
            "u1",
            TraceflowPhase::Failed as i32,
            "Node: n2, error: agent is not connected"
        )
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        n1.try_recv().is_err(),
        "n1 injected a trace that could not end"
    );
}

use admit::{MAX_HELD, MAX_OBSERVATIONS, MAX_REPORT_BYTES};
use traceflow_core::counters::{
    REPORTS_REFUSED_BAD_SECRET, REPORTS_REFUSED_DUPLICATE, REPORTS_REFUSED_FILTER_MISMATCH,
    REPORTS_REFUSED_FOREIGN_NODE, REPORTS_REFUSED_OVERSIZED,
};

/// How many of `node`'s reports the coordinator refused under `counter` (as the heartbeat
/// carries it), once every command sent so far was handled.
async fn refused(h: &Harness, node: &str, counter: &str) -> u64 {
    h.handle.running().await;
    h.agents
        .counters()
        .iter()
        .find(|c| c.node == node)
        .and_then(|c| c.counters.get(counter).copied())
        .unwrap_or(0)
}

/// Nothing was emitted for the commands sent so far.
async fn nothing_emitted(h: &mut Harness, why: &str) {
    h.handle.running().await;
    if let Ok(u) = h.updates.try_recv() {
        panic!("{why}: {u:?}");
    }
}

/// A `reply` trace u1 from p0 to p1 with the transport header `header`.
fn reply_trace_to_p1(header: pb::TransportHeader) -> NewTrace {
    let mut t = trace_pb("u1", "p1", 0);
    if let Some(s) = t.spec.as_mut() {
        s.reply = true;
        s.packet = Some(pb::Packet {
            transport_header: Some(header),
            ..Default::default()
        });
    }
    new(t)
}

/// Agents on n1 and n2, and trace `t` started and injected at n1: the packet n1 was told to
/// inject, and both Nodes' command streams (kept: a dropped one is an agent gone).
async fn injected_at_n1(
    h: &mut Harness,
    t: NewTrace,
) -> (pb::InjectPacket, [mpsc::Receiver<pb::AgentCommand>; 2]) {
    let (_, mut n1) = h.agents.register("n1");
    let (_, n2) = h.agents.register("n2");
    h.handle.start(t).await;
    next(h).await;
    let pkt = inject(&mut n1).await;
    (pkt, [n1, n2])
}

/// `Forwarding Output Forwarded` into the tunnel to the Node with underlay address `ip`.
fn tunnel_to(ip: &str) -> pb::Observation {
    pb::Observation {
        component_info: "Output".into(),
        tunnel_dst_ip: ip.into(),
        ..obs(Component::Forwarding, Action::Forwarded)
    }
}

/// What n1 reports of p0's packet into the tunnel to n2 (192.168.77.2).
fn sent_to_n2() -> Vec<pb::Observation> {
    vec![
        obs(Component::SpoofGuard, Action::Forwarded),
        tunnel_to("192.168.77.2"),
    ]
}

fn received_and_delivered() -> Vec<pb::Observation> {
    vec![
        obs(Component::Forwarding, Action::Received),
        obs(Component::Forwarding, Action::Delivered),
    ]
}

/// n2 reports `pkt` received and delivered: the trace Succeeds with n1's and n2's results.
async fn n2_completes(h: &mut Harness, pkt: &pb::InjectPacket) {
    h.handle
        .report("n2", report(pkt, received_and_delivered()))
        .await;
    let done = next(h).await;
    assert_eq!(
        (phase(&done), nodes_of(&done)),
        (
            TraceflowPhase::Succeeded as i32,
            vec!["n1".into(), "n2".into()]
        )
    );
}

fn nodes_of(u: &pb::TraceUpdate) -> Vec<String> {
    u.status
        .as_ref()
        .map(|s| s.results.iter().map(|r| r.node.clone()).collect())
        .unwrap_or_default()
}

/// A trace from p0 to `dst_ip` (no Pod owns it unless the inventory says so).
fn to_ip(uid: &str, dst_ip: &str, timeout: i32) -> NewTrace {
    let mut t = trace_pb(uid, "p1", timeout);
    if let Some(d) = t.spec.as_mut().and_then(|s| s.destination.as_mut()) {
        d.pod = String::new();
        d.ip = dst_ip.into();
    }
    new(t)
}

#[tokio::test]
async fn a_report_without_the_traces_secret_is_refused_and_counted() {
    let mut h = harness();
    let (pkt, _agents) = injected_at_n1(&mut h, trace("u1", "p1", 0)).await;
    assert_ne!(pkt.secret, 0, "the packet carries the trace's secret");
    // Whole and terminal, as a forger makes them: another secret, or none.
    let whole = || {
        vec![
            obs(Component::SpoofGuard, Action::Forwarded),
            obs(Component::Forwarding, Action::Delivered),
        ]
    };
    for secret in [pkt.secret ^ 1, 0] {
        let forged = pb::TraceReport {
            secret,
            ..report(&pkt, whole())
        };
        h.handle.report("n1", forged).await;
    }
    let forged = pb::TraceReport {
        secret: pkt.secret.wrapping_add(1),
        ..report(&pkt, received_and_delivered())
    };
    h.handle.report("n2", forged).await;
    nothing_emitted(&mut h, "a report without the secret was folded in").await;
    assert_eq!(refused(&h, "n1", REPORTS_REFUSED_BAD_SECRET).await, 2);
    assert_eq!(refused(&h, "n2", REPORTS_REFUSED_BAD_SECRET).await, 1);
    // The real reports are taken: the forged ones took no Node's place.
    h.handle.report("n1", report(&pkt, sent_to_n2())).await;
    let u = next(&mut h).await;
    assert_eq!(
        (phase(&u), nodes_of(&u)),
        (TraceflowPhase::Running as i32, vec!["n1".to_string()])
    );
    n2_completes(&mut h, &pkt).await;
}

/// p0 → an address no Pod owns, on n1: only n1 takes part. n2's reports, even with the
/// secret, are held (nothing names n2), refused beyond the bound, and refused at the end.
#[tokio::test]
async fn a_node_no_result_names_is_refused_and_its_reports_never_shown() {
    let mut h = harness();
    let (pkt, _agents) = injected_at_n1(&mut h, to_ip("u1", "10.10.1.99", 0)).await;
    for _ in 0..=MAX_HELD {
        h.handle
            .report("n2", report(&pkt, received_and_delivered()))
            .await;
    }
    // A reply leg of a trace without one: nobody may report it.
    h.handle
        .report("n1", reply_report(&pkt, true, received_and_delivered()))
        .await;
    nothing_emitted(&mut h, "a foreign Node's report was folded in").await;
    assert_eq!(refused(&h, "n2", REPORTS_REFUSED_FOREIGN_NODE).await, 1);
    assert_eq!(refused(&h, "n1", REPORTS_REFUSED_FOREIGN_NODE).await, 1);
    let sent = vec![
        obs(Component::SpoofGuard, Action::Forwarded),
        pb::Observation {
            component_info: "Output".into(),
            ..obs(Component::Forwarding, Action::Forwarded)
        },
    ];
    h.handle.report("n1", report(&pkt, sent)).await;
    let u = next(&mut h).await;
    assert_eq!(
        (phase(&u), nodes_of(&u)),
        (TraceflowPhase::Running as i32, vec!["n1".to_string()]),
        "n2's Delivered is no part of the trace"
    );
    h.handle.cancel("u1".into()).await;
    let ended = next(&mut h).await;
    assert_eq!(nodes_of(&ended), vec!["n1".to_string()]);
    assert_eq!(
        refused(&h, "n2", REPORTS_REFUSED_FOREIGN_NODE).await,
        1 + MAX_HELD as u64,
        "held reports are refused when the trace ends"
    );
}

/// The egress Node (or any Node an IP destination is routed through) is named only by the
/// sender's tunnel observation, and its report may arrive first: it waits for it.
#[tokio::test]
async fn a_node_named_by_the_senders_tunnel_may_report_before_the_sender() {
    let mut h = harness();
    let (pkt, _agents) = injected_at_n1(&mut h, to_ip("u1", "203.0.113.9", 0)).await;
    let out = vec![
        obs(Component::Forwarding, Action::Received),
        obs(Component::Forwarding, Action::ForwardedOutOfNetwork),
    ];
    h.handle.report("n2", report(&pkt, out.clone())).await;
    nothing_emitted(&mut h, "n2 was taken before anything named it").await;
    // A second one of the same Node waits too, then is a duplicate.
    h.handle.report("n2", report(&pkt, out)).await;
    h.handle.report("n1", report(&pkt, sent_to_n2())).await;
    let done = next(&mut h).await;
    assert_eq!(
        (phase(&done), nodes_of(&done)),
        (
            TraceflowPhase::Succeeded as i32,
            vec!["n1".into(), "n2".into()]
        )
    );
    assert_eq!(refused(&h, "n2", REPORTS_REFUSED_DUPLICATE).await, 1);
    assert_eq!(refused(&h, "n2", REPORTS_REFUSED_FOREIGN_NODE).await, 0);
}

#[tokio::test]
async fn a_second_result_of_a_node_in_one_leg_is_refused() {
    let mut h = harness();
    let (pkt, _agents) = injected_at_n1(&mut h, trace("u1", "p1", 0)).await;
    h.handle.report("n1", report(&pkt, sent_to_n2())).await;
    assert_eq!(phase(&next(&mut h).await), TraceflowPhase::Running as i32);
    // The sender again, now claiming the delivery.
    let delivered = vec![obs(Component::Forwarding, Action::Delivered)];
    h.handle.report("n1", report(&pkt, delivered)).await;
    nothing_emitted(&mut h, "a second result of n1 was folded in").await;
    assert_eq!(refused(&h, "n1", REPORTS_REFUSED_DUPLICATE).await, 1);
    n2_completes(&mut h, &pkt).await;
}

#[tokio::test]
async fn an_oversized_report_is_refused_and_takes_no_place() {
    let mut h = harness();
    let (pkt, _agents) = injected_at_n1(&mut h, trace("u1", "p1", 0)).await;
    let many = vec![obs(Component::SpoofGuard, Action::Forwarded); MAX_OBSERVATIONS + 1];
    h.handle.report("n1", report(&pkt, many)).await;
    let long = vec![pb::Observation {
        network_policy: "x".repeat(MAX_REPORT_BYTES),
        ..obs(Component::SpoofGuard, Action::Forwarded)
    }];
    h.handle.report("n1", report(&pkt, long)).await;
    nothing_emitted(&mut h, "an oversized report was folded in").await;
    assert_eq!(refused(&h, "n1", REPORTS_REFUSED_OVERSIZED).await, 2);
    h.handle.report("n1", report(&pkt, sent_to_n2())).await;
    let u = next(&mut h).await;
    assert_eq!(nodes_of(&u), vec!["n1".to_string()]);
    let status = u.status.unwrap_or_default();
    assert_eq!(status.results[0].observations.len(), 2);
}

/// p0's ICMP echo to p1 with identifier `id`, as n1 captures it and every Node sees it.
fn ping(id: i32) -> pb::Packet {
    pb::Packet {
        ip_header: Some(pb::IpHeader {
            protocol: 1,
            ..Default::default()
        }),
        transport_header: Some(pb::TransportHeader {
            icmp: Some(pb::IcmpEchoRequestHeader { id, sequence: 1 }),
            ..Default::default()
        }),
        ..packet("10.10.1.2", "10.10.2.3")
    }
}

/// Live trace u1 (tag 7) armed on n2, then n1; returns both agents' command streams.
async fn armed_live_trace(
    h: &mut Harness,
) -> (
    mpsc::Receiver<pb::AgentCommand>,
    mpsc::Receiver<pb::AgentCommand>,
) {
    let (_c1, mut n1) = h.agents.register("n1");
    let (_c2, mut n2) = h.agents.register("n2");
    h.handle.start(live("u1", false)).await;
    assert_eq!(phase(&next(h).await), TraceflowPhase::Running as i32);
    live_cmd(&mut n2).await;
    h.handle.live_armed("n2", "u1".into()).await;
    live_cmd(&mut n1).await;
    (n1, n2)
}

/// Forged tagged packets (a Pod setting the tag's DSCP itself) reach Nodes of the trace,
/// whose agents report them: refused; the real packet still completes the trace.
#[tokio::test]
async fn a_live_report_of_another_packet_is_refused_and_the_real_one_completes() {
    let mut h = harness();
    let (_n1, _n2) = armed_live_trace(&mut h).await;
    let tagged = |seen: Option<pb::Packet>, captured: Option<pb::Packet>, o| pb::TraceReport {
        seen_packet: seen,
        captured_packet: captured,
        ..live_report(7, o)
    };
    // From p2 (10.10.2.4), not the traced source: refused even before the capture is known.
    let forged = tagged(
        Some(pb::Packet {
            src_ip: "10.10.2.4".into(),
            ..ping(7)
        }),
        None,
        received_and_delivered(),
    );
    h.handle.report("n2", forged).await;
    // No packet at all.
    h.handle
        .report("n2", tagged(None, None, received_and_delivered()))
        .await;
    nothing_emitted(&mut h, "a forged live report was folded in").await;
    // The sender captures the real one.
    let sent = tagged(Some(ping(7)), Some(ping(7)), sent_to_n2());
    h.handle.report("n1", sent).await;
    assert_eq!(phase(&next(&mut h).await), TraceflowPhase::Running as i32);
    // The traced source and destination but another connection (echo id): not the captured one.
    let other = tagged(Some(ping(8)), None, received_and_delivered());
    h.handle.report("n2", other).await;
    // A Node outside the plan.
    let outside = tagged(Some(ping(7)), None, received_and_delivered());
    h.handle.report("n9", outside).await;
    nothing_emitted(&mut h, "a report of another connection was folded in").await;
    assert_eq!(refused(&h, "n2", REPORTS_REFUSED_FILTER_MISMATCH).await, 3);
    assert_eq!(refused(&h, "n9", REPORTS_REFUSED_FOREIGN_NODE).await, 1);
    let real = tagged(Some(ping(7)), None, received_and_delivered());
    h.handle.report("n2", real).await;
    let done = next(&mut h).await;
    assert_eq!(
        (phase(&done), nodes_of(&done)),
        (
            TraceflowPhase::Succeeded as i32,
            vec!["n1".into(), "n2".into()]
        )
    );
    let captured = done.status.and_then(|s| s.captured_packet);
    assert_eq!(
        captured,
        Some(ping(7)),
        "the sender's capture, not a forger's"
    );
}

#[tokio::test]
async fn a_live_report_falls_back_to_its_captured_packet() {
    let mut h = harness();
    let (_n1, _n2) = armed_live_trace(&mut h).await;
    let only_captured = pb::TraceReport {
        seen_packet: None,
        captured_packet: Some(ping(7)),
        ..live_report(7, sent_to_n2())
    };
    h.handle.report("n1", only_captured).await;
    assert_eq!(nodes_of(&next(&mut h).await), vec!["n1".to_string()]);
    // A capture that disagrees with what the Node saw is refused.
    let two_faced = pb::TraceReport {
        seen_packet: Some(ping(7)),
        captured_packet: Some(packet("10.10.2.4", "10.10.2.3")),
        ..live_report(7, received_and_delivered())
    };
    h.handle.report("n2", two_faced).await;
    assert_eq!(refused(&h, "n2", REPORTS_REFUSED_FILTER_MISMATCH).await, 1);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_names_the_node_waited_for_and_what_the_others_last_reported() {
    let mut h = harness();
    let (pkt, _agents) = injected_at_n1(&mut h, trace("u1", "p1", 3)).await;
    h.handle.report("n1", report(&pkt, sent_to_n2())).await;
    assert_eq!(phase(&next(&mut h).await), TraceflowPhase::Running as i32);
    let failed = next(&mut h).await;
    assert_eq!(
        (phase(&failed), reason(&failed)),
        (
            TraceflowPhase::Failed as i32,
            "Traceflow timeout: no report from Node n2 (the destination's); n1 last reported \
             Forwarding Output Forwarded"
        )
    );
}

#[tokio::test(start_paused = true)]
async fn a_live_trace_without_traffic_times_out_plainly() {
    let mut h = harness();
    let (_n1, _n2) = armed_live_trace(&mut h).await;
    let failed = next(&mut h).await;
    assert_eq!(reason(&failed), reasons::TIMEOUT);
}

/// The reply leg's reports carry the forward packet's secret, and its Nodes are the reply's
/// sender and the client's: the forward leg's Nodes report once more there, not twice.
#[tokio::test]
async fn the_reply_carries_the_secret_and_its_leg_admits_its_own_nodes() {
    let mut h = harness();
    let (_c1, mut n1) = h.agents.register("n1");
    let (_c2, mut n2) = h.agents.register("n2");
    let header = pb::TransportHeader {
        tcp: Some(pb::TcpHeader {
            src_port: 0,
            dst_port: 80,
            flags: None,
        }),
        ..Default::default()
    };
    h.handle.start(reply_trace_to_p1(header)).await;
    next(&mut h).await;
    let fwd = inject(&mut n1).await;
    // Before the reply is injected, nobody reports its leg.
    h.handle
        .report("n2", reply_report(&fwd, true, sent_to_n2()))
        .await;
    assert_eq!(refused(&h, "n2", REPORTS_REFUSED_FOREIGN_NODE).await, 1);
    h.handle
        .report("n1", reply_report(&fwd, false, sent_to_n2()))
        .await;
    next(&mut h).await;
    h.handle
        .report("n2", reply_report(&fwd, false, received_and_delivered()))
        .await;
    next(&mut h).await;
    let reply = inject(&mut n2).await;
    assert!(reply.reply);
    assert_eq!(reply.secret, fwd.secret, "one secret for both legs");
    let back = vec![
        obs(Component::SpoofGuard, Action::Forwarded),
        tunnel_to("192.168.77.1"),
    ];
    h.handle
        .report("n2", reply_report(&reply, true, back))
        .await;
    assert_eq!(phase(&next(&mut h).await), TraceflowPhase::Running as i32);
    // The reply leg refuses a second result of n2 and a forged one of n1.
    h.handle
        .report("n2", reply_report(&reply, true, received_and_delivered()))
        .await;
    let forged = pb::TraceReport {
        secret: 0,
        ..reply_report(&reply, true, received_and_delivered())
    };
    h.handle.report("n1", forged).await;
    nothing_emitted(&mut h, "a refused reply-leg report was folded in").await;
    assert_eq!(refused(&h, "n2", REPORTS_REFUSED_DUPLICATE).await, 1);
    assert_eq!(refused(&h, "n1", REPORTS_REFUSED_BAD_SECRET).await, 1);
    h.handle
        .report("n1", reply_report(&reply, true, received_and_delivered()))
        .await;
    let done = next(&mut h).await;
    assert_eq!(
        (phase(&done), nodes_of(&done)),
        (
            TraceflowPhase::Succeeded as i32,
            vec!["n1".into(), "n2".into(), "n2".into(), "n1".into()]
        )
    );
}
