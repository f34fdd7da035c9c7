//! One running trace's results: roles, hop order (`sequence`) and the LB `pod`; whether it
//! succeeded is Antrea's rule from `traceflow_core::outcome` (reference §2.4). Pure; the
//! coordinator owns the records.

use traceflow_core::{TraceSpec, outcome};
use traceflow_proto::v1::{self as pb, Component};

use super::ids::Secret;

pub const ROLE_SENDER: &str = "sender";
pub const ROLE_RECEIVER: &str = "receiver";

/// What the coordinator knows about a trace in flight.
#[derive(Debug, Clone)]
pub struct TraceRecord {
    pub uid: String,
    pub spec: TraceSpec,
    pub sender_node: String,
    pub ipv6: bool,
    pub trace_id: u32,
    pub start_micros: i64,
    /// In hop order, observations numbered from 1 (see [`order_and_sequence`]).
    pub results: Vec<pb::NodeResult>,
    pub captured_packet: Option<pb::Packet>,
    /// Live-traffic traces: the DSCP tag the packets carry (0 for injected traces).
    pub dataplane_tag: u32,
    /// Injected traces: what every report of the trace's packets must carry
    /// ([`Secret::NONE`] for live traces). Never in a status, log or span.
    pub secret: Secret,
}

impl TraceRecord {
    /// Adds one Node's report. `node` (the agent's certificate) overrides the report's `node`;
    /// an empty role becomes `sender` for the source Pod's Node and `receiver` elsewhere; an LB
    /// observation's empty `pod` is looked up by `translatedDstIP` with `pod_of_ip`.
    pub fn add_report(
        &mut self,
        node: &str,
        report: pb::TraceReport,
        now_micros: i64,
        pod_of_ip: impl Fn(&str) -> Option<String>,
    ) {
        let mut result = report.result.unwrap_or_default();
        result.node = node.to_string();
        if result.role.is_empty() {
            let role = if node == self.sender_node {
                ROLE_SENDER
            } else {
                ROLE_RECEIVER
            };
            result.role = role.to_string();
        }
        if result.timestamp == 0 {
            let first = first_micros(&result).unwrap_or(now_micros);
            result.timestamp = first / 1_000_000;
        }
        for obs in &mut result.observations {
            if obs.pod.is_empty()
                && !obs.translated_dst_ip.is_empty()
                && let Some(pod) = pod_of_ip(&obs.translated_dst_ip)
            {
                obs.pod = pod;
            }
        }
        self.results.push(result);
        order_and_sequence(&mut self.results);
        if self.captured_packet.is_none() {
            self.captured_packet = report.captured_packet;
        }
    }

    /// Antrea's success rule over the results so far.
    pub fn succeeded(&self) -> bool {
        outcome::is_succeeded(&self.spec, &self.results)
    }

    /// A status snapshot in the given phase.
    pub fn status(
        &self,
        phase: pb::TraceflowPhase,
        reason: &str,
        end_micros: i64,
    ) -> pb::TraceflowStatus {
        pb::TraceflowStatus {
            phase: phase as i32,
            reason: reason.to_string(),
            start_time_micros: self.start_micros,
            dataplane_tag: i32::try_from(self.dataplane_tag).unwrap_or(0),
            results: self.results.clone(),
            captured_packet: self.captured_packet.clone(),
            trace_id: self.trace_id,
            end_time_micros: end_micros,
        }
    }
}

fn first_micros(result: &pb::NodeResult) -> Option<i64> {
    result
        .observations
        .iter()
        .map(|o| o.timestamp_micros)
        .filter(|t| *t > 0)
        .min()
}

fn has_spoofguard(result: &pb::NodeResult) -> bool {
    result
        .observations
        .iter()
        .any(|o| o.component == Component::SpoofGuard as i32)
}

/// Puts results in hop order and numbers observations 1.. across them.
///
/// The forward leg comes before the reply leg (`reply` traces); within a leg, the result
/// holding its SpoofGuard observation (where the packet entered) comes first, the rest follow
/// by their earliest observation timestamp; results without timestamps keep arrival order (the
/// sort is stable).
pub fn order_and_sequence(results: &mut [pb::NodeResult]) {
    results.sort_by_key(|r| {
        (
            outcome::is_reply(r),
            !has_spoofguard(r),
            first_micros(r).unwrap_or(0),
        )
    });
    let mut seq = 0u32;
    for obs in results.iter_mut().flat_map(|r| r.observations.iter_mut()) {
        seq += 1;
        obs.sequence = seq;
    }
}

/// Test helper: the `(node, role)` of each result and the sequence numbers of all their
/// observations, in report order.
#[cfg(test)]
pub(crate) fn order(results: &[pb::NodeResult]) -> (Vec<(&str, &str)>, Vec<u32>) {
    let nodes = results
        .iter()
        .map(|n| (n.node.as_str(), n.role.as_str()))
        .collect();
    let seqs = results
        .iter()
        .flat_map(|n| n.observations.iter().map(|o| o.sequence))
        .collect();
    (nodes, seqs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use traceflow_core::outcome::is_succeeded;
    use traceflow_proto::v1::Action;

    /// A validated spec from its wire form.
    fn spec(s: pb::TraceflowSpec) -> TraceSpec {
        match TraceSpec::try_from(s) {
            Ok(s) => s,
            Err(e) => panic!("fixture spec is invalid: {e}"),
        }
    }

    fn pod_spec(src: &str, dst: &str, live: bool, dropped_only: bool) -> TraceSpec {
        let pod = |p: &str| (!p.is_empty()).then(|| (String::from("default"), p.to_string()));
        spec(pb::TraceflowSpec {
            source: pod(src).map(|(namespace, pod)| pb::Source {
                namespace,
                pod,
                ip: String::new(),
            }),
            destination: pod(dst).map(|(namespace, pod)| pb::Destination {
                namespace,
                pod,
                ..Default::default()
            }),
            live_traffic: live,
            dropped_only,
            ..Default::default()
        })
    }

    fn obs(c: Component, a: Action, ts: i64) -> pb::Observation {
        pb::Observation {
            component: c as i32,
            action: a as i32,
            timestamp_micros: ts,
            ..Default::default()
        }
    }

    fn record() -> TraceRecord {
        TraceRecord {
            uid: "u".into(),
            spec: pod_spec("p0", "p1", false, false),
            sender_node: "n1".into(),
            ipv6: false,
            trace_id: 1,
            start_micros: 1,
            results: vec![],
            captured_packet: None,
            dataplane_tag: 0,
            secret: Secret::NONE,
        }
    }

    fn report(observations: Vec<pb::Observation>) -> pb::TraceReport {
        pb::TraceReport {
            trace_id: 1,
            ipv6: false,
            result: Some(pb::NodeResult {
                observations,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn sender_and_terminal_action_succeed() {
        let mut r = record();
        r.add_report(
            "n1",
            report(vec![obs(Component::SpoofGuard, Action::Forwarded, 10)]),
            0,
            |_| None,
        );
        assert!(!r.succeeded());
        r.add_report(
            "n2",
            report(vec![obs(Component::Forwarding, Action::Delivered, 11)]),
            0,
            |_| None,
        );
        assert!(r.succeeded());
    }

    #[test]
    fn forwarded_alone_is_not_terminal() {
        let results = vec![pb::NodeResult {
            observations: vec![
                obs(Component::SpoofGuard, Action::Forwarded, 1),
                obs(Component::Forwarding, Action::Forwarded, 2),
            ],
            ..Default::default()
        }];
        assert!(!is_succeeded(&record().spec, &results));
    }

    #[test]
    fn receiver_only_succeeds_without_source_pod_and_dropped_only_on_any_result() {
        let results = vec![pb::NodeResult {
            observations: vec![
                obs(Component::Forwarding, Action::Received, 1),
                obs(Component::NetworkPolicy, Action::Dropped, 2),
            ],
            ..Default::default()
        }];
        assert!(is_succeeded(&pod_spec("", "p1", true, false), &results));
        assert!(!is_succeeded(&record().spec, &results));
        let one = vec![pb::NodeResult::default()];
        assert!(is_succeeded(&pod_spec("p0", "", true, true), &one));
    }

    #[test]
    fn hop_order_puts_sender_first_and_numbers_across_nodes() {
        let mut r = record();
        // The receiver's report arrives first but happened later.
        r.add_report(
            "n2",
            report(vec![
                obs(Component::Forwarding, Action::Received, 20),
                obs(Component::Forwarding, Action::Delivered, 21),
            ]),
            0,
            |_| None,
        );
        r.add_report(
            "n1",
            report(vec![
                obs(Component::SpoofGuard, Action::Forwarded, 10),
                obs(Component::Forwarding, Action::Forwarded, 11),
            ]),
            0,
            |_| None,
        );
        assert_eq!(
            order(&r.results),
            (vec![("n1", "sender"), ("n2", "receiver")], vec![1, 2, 3, 4])
        );
        assert!(r.succeeded());
    }

    #[test]
    fn lb_pod_is_filled_from_translated_dst_ip() {
        let mut r = record();
        let mut lb = obs(Component::Lb, Action::Forwarded, 5);
        lb.translated_dst_ip = "10.10.2.2".into();
        r.add_report("n1", report(vec![lb]), 0, |ip| {
            (ip == "10.10.2.2").then(|| "web/api".to_string())
        });
        assert_eq!(r.results[0].observations[0].pod, "web/api");
    }

    #[test]
    fn report_node_is_the_certificates_and_timestamp_is_filled() {
        let mut r = record();
        let mut rep = report(vec![obs(
            Component::SpoofGuard,
            Action::Forwarded,
            3_000_000,
        )]);
        if let Some(res) = rep.result.as_mut() {
            res.node = "liar".into();
        }
        r.add_report("n1", rep, 0, |_| None);
        assert_eq!(r.results[0].node, "n1");
        assert_eq!(r.results[0].timestamp, 3);
    }
}
