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
pub fn is_succeeded(spec: &TraceSpec, results: &[pb::NodeResult]) -> bool {
    if spec.live_traffic && spec.dropped_only {
        return !results.is_empty();
    }
    let observations = || results.iter().flat_map(|r| r.observations.iter());
    let sender = observations().any(is_sender_evidence);
    let terminal = observations().any(is_terminal_action);
    terminal && (sender || !matches!(spec.source, Source::Pod(_)))
}
