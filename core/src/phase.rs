//! The phases of a trace (reference §2.3): Pending (ours: stored, not yet started) → Running →
//! Succeeded | Failed. A terminal phase never changes again.

use traceflow_proto::v1 as pb;

pub use pb::TraceflowPhase as Phase;

/// Whether `p` is final (Succeeded or Failed).
pub fn is_terminal(p: Phase) -> bool {
    matches!(p, Phase::Succeeded | Phase::Failed)
}

/// The phase of `t` (unspecified when it has no status or an unknown value).
pub fn of(t: &pb::Traceflow) -> Phase {
    t.status
        .as_ref()
        .and_then(|s| Phase::try_from(s.phase).ok())
        .unwrap_or(Phase::PhaseUnspecified)
}

/// Marks `t` Failed with `reason` at `now_micros`, keeping an end time already set.
pub fn fail(t: &mut pb::Traceflow, reason: &str, now_micros: i64) {
    let status = t.status.get_or_insert_with(Default::default);
    status.phase = Phase::Failed as i32;
    status.reason = crate::reasons::bounded(reason.to_string());
    if status.end_time_micros == 0 {
        status.end_time_micros = now_micros;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_phases() {
        assert!(is_terminal(Phase::Succeeded));
        assert!(is_terminal(Phase::Failed));
        assert!(!is_terminal(Phase::Running));
        assert!(!is_terminal(Phase::Pending));
        assert!(!is_terminal(Phase::PhaseUnspecified));
    }

    #[test]
    fn fail_keeps_an_end_time() {
        let mut t = pb::Traceflow::default();
        fail(&mut t, "x", 5);
        fail(&mut t, "y", 9);
        let s = t.status.unwrap_or_default();
        assert_eq!(
            (s.phase, s.reason.as_str(), s.end_time_micros),
            (Phase::Failed as i32, "y", 5)
        );
    }
}
