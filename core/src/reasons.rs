//! Failure reasons a trace ends with, in Antrea's words where Antrea has them (reference §2.3,
//! §2.8). A status `reason` is built only through these.

use std::fmt::Display;

use crate::limits::MAX_REASON_LEN;

/// A trace whose timer fired (Antrea's controller).
pub const TIMEOUT: &str = "Traceflow timeout";
/// A trace the manager or a user cancelled.
pub const CANCELLED: &str = "Traceflow cancelled";
/// A trace that was in flight when the manager stopped.
pub const MANAGER_RESTARTED: &str = "manager restarted";

/// A trace refused by an adapter that already runs as many traces as it may.
pub const ADAPTER_BUSY: &str =
    "the cluster's adapter runs too many traces at once; retry when some have ended";

/// A `reply` trace whose timer fired, naming the leg that did not reach its end.
pub fn timeout_in_leg(reply_leg: bool) -> String {
    if reply_leg {
        format!(
            "{TIMEOUT}: the forward packet was delivered but its reply did not reach the end of \
             the way back; check the reply leg's last observation"
        )
    } else {
        format!("{TIMEOUT}: the forward packet did not reach the end of its way")
    }
}

/// A trace whose timer fired, saying which Nodes it waited for and what the others last
/// reported: `head` ([`TIMEOUT`] or [`timeout_in_leg`]), then for each of `waited` (Node, whose
/// it is, e.g. "the destination's") `no report from Node <node> (<whose>)`, and for each of
/// `last` (Node, its last observation) `<node> last reported <observation>`, joined by `; `:
///
/// `Traceflow timeout: no report from Node n2 (the destination's); n1 last reported Forwarding
/// Output Forwarded`. Always starts with [`TIMEOUT`]; `head` alone when both lists are empty.
pub fn timeout_waiting(head: &str, waited: &[(&str, &str)], last: &[(&str, &str)]) -> String {
    let parts: Vec<String> = waited
        .iter()
        .map(|(node, whose)| format!("no report from Node {node} ({whose})"))
        .chain(
            last.iter()
                .map(|(node, what)| format!("{node} last reported {what}")),
        )
        .collect();
    if parts.is_empty() {
        return bounded(head.to_string());
    }
    let sep = if head == TIMEOUT { ": " } else { "; " };
    bounded(format!("{head}{sep}{}", parts.join("; ")))
}

/// The error of [`node_error`] when a Node's agent stream ended while a trace needed it.
pub const AGENT_DISCONNECTED: &str = "agent disconnected";

/// Antrea's agent-side failure form: `Node: <node>, error: <error>`.
pub fn node_error(node: &str, error: impl Display) -> String {
    bounded(format!("Node: {node}, error: {error}"))
}

/// A cluster without a live adapter stream.
pub fn cluster_not_connected(cluster: &str) -> String {
    format!("cluster {cluster} is not connected")
}

/// Injected traces in flight reached the data-plane id space of a family.
pub fn ids_exhausted(limit: impl Display) -> String {
    format!("number of on-going Traceflow operations already reached the upper limit: {limit}")
}

/// Live-traffic traces in flight reached the DSCP tag space (Antrea's message).
pub fn live_tags_exhausted(limit: impl Display) -> String {
    format!("number of on-going live-traffic Traceflows reached the limit of {limit}")
}

/// `reason` cut to [`MAX_REASON_LEN`] bytes on a character boundary, so a peer's long error
/// cannot grow a stored trace without bound.
pub fn bounded(mut reason: String) -> String {
    if reason.len() > MAX_REASON_LEN {
        let mut end = MAX_REASON_LEN;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn antrea_forms() {
        assert_eq!(node_error("n1", "boom"), "Node: n1, error: boom");
        assert_eq!(
            live_tags_exhausted(14),
            "number of on-going live-traffic Traceflows reached the limit of 14"
        );
    }

    #[test]
    fn a_timeout_names_the_nodes_waited_for_and_what_the_others_last_reported() {
        assert_eq!(
            timeout_waiting(
                TIMEOUT,
                &[("n2", "the destination's")],
                &[("n1", "Forwarding Output Forwarded")]
            ),
            "Traceflow timeout: no report from Node n2 (the destination's); n1 last reported \
             Forwarding Output Forwarded"
        );
        assert_eq!(timeout_waiting(TIMEOUT, &[], &[]), TIMEOUT);
        let reply = timeout_waiting(&timeout_in_leg(true), &[("n1", "the client's")], &[]);
        assert!(reply.starts_with(TIMEOUT), "{reply}");
        assert!(
            reply.ends_with("last observation; no report from Node n1 (the client's)"),
            "{reply}"
        );
    }

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary() {
        let r = bounded("é".repeat(MAX_REASON_LEN));
        assert!(r.len() <= MAX_REASON_LEN);
        assert!(r.chars().all(|c| c == 'é'));
    }
}
