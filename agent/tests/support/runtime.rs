//! The agent's `NodeRuntime` as the real-OVS tests drive it: tracing set up once, waiting
//! until a runtime has programmed its Node, injecting, reading observations, and the
//! `(component, componentInfo, action)` steps the tests compare them with.

use std::time::{Duration, Instant};

use traceflow_agent::runtime::NodeRuntime;
use traceflow_agent::trace::Observed;
use traceflow_proto::v1 as pb;

use super::OvsNode;

/// Installs the test tracing subscriber (`RUST_LOG`, default `info`); later calls are no-ops.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
}

/// Waits until `rt` has discovered every Pod and the gateway of `node` from OVSDB (10 s), then
/// until br-int has a flow for every Pod MAC (10 s); panics naming `name` otherwise.
pub async fn wait_programmed(rt: &mut NodeRuntime, node: &OvsNode, name: &str) {
    let want = node.pods.len();
    tokio::time::timeout(
        Duration::from_secs(10),
        rt.ports
            .wait_for(|p| p.pods.len() == want && p.gateway.is_some()),
    )
    .await
    .unwrap_or_else(|_| panic!("{name}: OVSDB ports not discovered in 10 s"))
    .unwrap_or_else(|_| panic!("{name}: port watcher stopped"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let flows = node.dump_flows();
        let ready = node
            .pods
            .iter()
            .all(|p| flows.contains(&format!("dl_dst={}", p.mac)));
        if ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: pipeline not programmed for all Pods:\n{flows}"
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), rt.datapath.programmed.changed())
            .await;
    }
}

/// An ICMP trace `uid-<id>` from Pod `default/<src_pod>` to `dst`, as the adapter sends it.
pub fn icmp_trace(id: u32, src_pod: &str, dst: &str) -> pb::InjectPacket {
    pb::InjectPacket {
        trace_uid: format!("uid-{id}"),
        trace_id: id,
        src_pod_namespace: "default".into(),
        src_pod_name: src_pod.into(),
        dst_ip: dst.into(),
        protocol: 1,
        ..Default::default()
    }
}

/// Injects `req` on `rt`'s Node; panics with the request and the reason when it is refused.
pub async fn inject(rt: &NodeRuntime, req: &pb::InjectPacket) {
    rt.tracer.inject(req).await.unwrap_or_else(|e| {
        panic!(
            "inject trace {} (protocol {} to {}): {e}",
            req.trace_id, req.protocol, req.dst_ip
        )
    });
}

/// The next report of `rt` (5 s).
/// The runtime's connection to br-int (it is connected once [`wait_programmed`] returned).
pub fn switch_of(rt: &NodeRuntime) -> traceflow_agent::ovs::openflow::Switch {
    rt.datapath
        .switch
        .borrow()
        .clone()
        .unwrap_or_else(|| panic!("the runtime is not connected to br-int"))
}

pub async fn next_obs(rt: &mut NodeRuntime) -> Observed {
    tokio::time::timeout(Duration::from_secs(5), rt.observations.recv())
        .await
        .unwrap_or_else(|_| panic!("no packet-in within 5 s"))
        .unwrap_or_else(|| panic!("observation stream ended"))
}

/// Injects `req` on `rt`'s Node and returns that Node's next report.
pub async fn trace(rt: &mut NodeRuntime, req: &pb::InjectPacket) -> Observed {
    inject(rt, req).await;
    next_obs(rt).await
}

/// One observation as the tests compare it: component, componentInfo, action.
pub type Step = (pb::Component, String, pb::Action);

/// The steps of a report, in order (unknown enum values as `Unspecified`).
pub fn summary(o: &Observed) -> Vec<Step> {
    o.result
        .observations
        .iter()
        .map(|x| {
            (
                pb::Component::try_from(x.component).unwrap_or(pb::Component::Unspecified),
                x.component_info.clone(),
                pb::Action::try_from(x.action).unwrap_or(pb::Action::Unspecified),
            )
        })
        .collect()
}

/// The sender's first step: SpoofGuard, Forwarded.
pub fn spoofguard() -> Step {
    (
        pb::Component::SpoofGuard,
        String::new(),
        pb::Action::Forwarded,
    )
}

/// A receiver's first step: Forwarding, Received.
pub fn received() -> Step {
    (
        pb::Component::Forwarding,
        String::new(),
        pb::Action::Received,
    )
}

/// The Output table's step with `action`.
pub fn output(action: pb::Action) -> Step {
    (pb::Component::Forwarding, "Output".into(), action)
}

/// A NetworkPolicy step reported by `table` with `action`.
pub fn policy(table: &str, action: pb::Action) -> Step {
    (pb::Component::NetworkPolicy, table.into(), action)
}

/// Asserts `o` is a sender's report of a packet it forwarded into the tunnel to `tunnel_dst`.
pub fn assert_sent_into_tunnel(o: &Observed, tunnel_dst: &str) {
    assert_eq!(o.result.role, "sender", "{o:?}");
    assert_eq!(
        summary(o),
        vec![spoofguard(), output(pb::Action::Forwarded)]
    );
    assert_eq!(o.result.observations[1].tunnel_dst_ip, tunnel_dst);
}

/// Asserts `o` is a receiver's report of a packet it took from the tunnel and delivered.
pub fn assert_received_and_delivered(o: &Observed) {
    assert_eq!(o.result.role, "receiver", "{o:?}");
    assert_eq!(summary(o), vec![received(), output(pb::Action::Delivered)]);
}
