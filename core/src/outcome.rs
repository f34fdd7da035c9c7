//! How a trace ends well: Antrea's success rule (reference §2.4) over the per-Node results,
//! and the observation vocabulary it reads.

use traceflow_proto::v1::{self as pb, Action, Component};

use crate::spec::{Source, TraceSpec};

/// Actions after which the packet went no further on this path (reference §1.4).
pub const TERMINAL_ACTIONS: [Action; 4] = [
    Action::Delivered,
    Action::Dropped,
    Action::Rejected,
    Action::ForwardedOutOfNetwork,
];

/// Whether `o` ends the packet's path.
pub fn is_terminal_action(o: &pb::Observation) -> bool {
    TERMINAL_ACTIONS.iter().any(|a| o.action == *a as i32)
}

/// Whether `o` is the sender's evidence: the packet entered the pipeline at SpoofGuard.
pub fn is_sender_evidence(o: &pb::Observation) -> bool {
    o.component == Component::SpoofGuard as i32
}

/// Reference §2.4: a live droppedOnly trace succeeds on any result; otherwise it needs a
/// terminal action and either sender evidence or no source Pod (receiver-only).
///
/// With `reply` (ours): the forward leg alone decides only when it ended without reaching a
/// Pod's port (dropped, rejected, out of the network); once it was Delivered, the trace
/// succeeds when the reply leg reaches its end (Delivered back, or dropped / rejected by the
/// component that did it). See [`pending_leg`] for what a timeout reports.
pub fn is_succeeded(spec: &TraceSpec, results: &[pb::NodeResult]) -> bool {
    if spec.live_traffic && spec.dropped_only {
        return !results.is_empty();
    }
    if spec.reply {
        return pending_leg(results).is_none();
    }
    let observations = || results.iter().flat_map(|r| r.observations.iter());
    let sender = observations().any(is_sender_evidence);
    let terminal = observations().any(is_terminal_action);
    terminal && (sender || !matches!(spec.source, Source::Pod(_)))
}

/// Whether `r` belongs to the reply leg.
pub fn is_reply(r: &pb::NodeResult) -> bool {
    r.direction == pb::Direction::Reply as i32
}

/// Whether the forward leg was Delivered (to a Pod port or a local gateway address): the case
/// in which a `reply` trace goes on with the reply leg.
pub fn forward_delivered(results: &[pb::NodeResult]) -> bool {
    results
        .iter()
        .filter(|r| !is_reply(r))
        .flat_map(|r| r.observations.iter())
        .any(|o| o.action == Action::Delivered as i32)
}

/// For a `reply` trace: the leg still under way (`None` once the trace has ended well):
/// [`Direction::Forward`](pb::Direction::Forward) until the forward packet reaches a terminal
/// action with sender evidence, then [`Direction::Reply`](pb::Direction::Reply) until the reply
/// does (unless the forward leg ended without a delivery, which has no reply).
pub fn pending_leg(results: &[pb::NodeResult]) -> Option<pb::Direction> {
    let leg = |reply: bool| results.iter().filter(move |r| is_reply(r) == reply);
    let ended = |reply: bool| {
        leg(reply)
            .flat_map(|r| r.observations.iter())
            .any(is_terminal_action)
            && leg(reply)
                .flat_map(|r| r.observations.iter())
                .any(is_sender_evidence)
    };
    if !ended(false) {
        return Some(pb::Direction::Forward);
    }
    if forward_delivered(results) && !ended(true) {
        return Some(pb::Direction::Reply);
    }
    None
}

#[cfg(test)]
mod reply_tests {
    use super::*;

    fn spec(reply: bool) -> TraceSpec {
        let s = pb::TraceflowSpec {
            source: Some(pb::Source {
                namespace: "default".into(),
                pod: "p0".into(),
                ip: String::new(),
            }),
            destination: Some(pb::Destination {
                namespace: "default".into(),
                pod: "p1".into(),
                ..Default::default()
            }),
            reply,
            ..Default::default()
        };
        TraceSpec::try_from(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn result(direction: pb::Direction, obs: &[(Component, Action)]) -> pb::NodeResult {
        pb::NodeResult {
            direction: direction as i32,
            observations: obs
                .iter()
                .map(|(c, a)| pb::Observation {
                    component: *c as i32,
                    action: *a as i32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_reply_trace_waits_for_the_reply_leg_after_a_delivery() {
        let fwd = result(
            pb::Direction::Forward,
            &[
                (Component::SpoofGuard, Action::Forwarded),
                (Component::Forwarding, Action::Delivered),
            ],
        );
        assert!(is_succeeded(&spec(false), std::slice::from_ref(&fwd)));
        assert!(!is_succeeded(&spec(true), std::slice::from_ref(&fwd)));
        assert_eq!(
            pending_leg(std::slice::from_ref(&fwd)),
            Some(pb::Direction::Reply)
        );
        let dropped_back = result(
            pb::Direction::Reply,
            &[
                (Component::SpoofGuard, Action::Forwarded),
                (Component::NetworkPolicy, Action::Dropped),
            ],
        );
        assert!(is_succeeded(&spec(true), &[fwd.clone(), dropped_back]));
        let half = result(
            pb::Direction::Reply,
            &[
                (Component::SpoofGuard, Action::Forwarded),
                (Component::Forwarding, Action::Forwarded),
            ],
        );
        assert!(!is_succeeded(&spec(true), &[fwd, half]));
    }

    #[test]
    fn a_forward_leg_that_ends_without_delivery_has_no_reply_to_wait_for() {
        let dropped = result(
            pb::Direction::Forward,
            &[
                (Component::SpoofGuard, Action::Forwarded),
                (Component::NetworkPolicy, Action::Dropped),
            ],
        );
        assert!(is_succeeded(&spec(true), &[dropped]));
        assert_eq!(pending_leg(&[]), Some(pb::Direction::Forward));
    }

    #[test]
    fn reply_is_refused_for_live_traffic() {
        let s = pb::TraceflowSpec {
            source: Some(pb::Source {
                namespace: "default".into(),
                pod: "p0".into(),
                ip: String::new(),
            }),
            live_traffic: true,
            reply: true,
            ..Default::default()
        };
        let e = TraceSpec::try_from(s).err().map(|e| e.field);
        assert_eq!(e.as_deref(), Some("spec.reply"));
    }
}
