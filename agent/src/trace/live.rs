//! Live-traffic traces running on this Node (reference §3.6): which DSCP tag belongs to which
//! trace, and whether this Node has already reported it.
//!
//! ```text
//!  LiveTrace ──▶ Tracer::start_live: flows built (pipeline::live) ─▶ tag registered here
//!              ─▶ Store live tag (policy drop copies) ─▶ br-int reprogrammed ─▶ tagging flows
//!  packet-in with a registered tag ─▶ claim: first one reported (capturedPacket from the
//!              tagging Node, or any Node for droppedOnly), this Node's live flows removed;
//!              later ones ignored
//!  StopLiveTrace / timeout ─▶ Tracer::stop_live: flows removed, tag forgotten
//!  br-int reconnected (ovs-vswitchd restart) ─▶ flows of unreported traces installed again
//!              with what is left of their hard_timeout
//! ```
//!
//! Contract: a Node reports a live trace at most once; a tag maps to one trace at a time (a
//! new `LiveTrace` with a tag still held by another uid replaces it, since the adapter only
//! reuses a tag after it ended that trace).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::ovs::openflow::FlowMod;

/// The first report of a tag on this Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub uid: String,
    /// The report carries the packet: this Node tags the traffic (sender or receiver-only),
    /// or the trace is droppedOnly, whose one report may come from any Node (where Antrea
    /// would then show no packet at all).
    pub capture: bool,
    /// This Node is the trace's sender (role `SENDER`): it reports the sending path.
    pub sender: bool,
}

/// One live trace on this Node.
#[derive(Debug, Clone)]
pub struct Registration {
    pub uid: String,
    /// See [`Claim`].
    pub capture: bool,
    pub sender: bool,
    /// Its own flows (tagging and Output), to install again after a reconnect.
    pub flows: Vec<FlowMod>,
    /// When its flows' hard_timeout runs out.
    pub expires: Instant,
    /// What a tagged packet must be to be this trace's.
    pub filter: LiveFilter,
}

/// The part of a live trace's filter every Node can check on a tagged packet, whatever NAT
/// the path applies: the connection's original source (conntrack's tuple when the packet-in
/// has one, so an egress SNAT does not hide it), its protocol and source port. A tagged
/// packet that is not the trace's (forged by whoever got the tag onto the wire) is not
/// reported and does not use up this Node's one report; the adapter checks the rest (the
/// destination, the tuple the tagging Node captured).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveFilter {
    pub src: Option<std::net::IpAddr>,
    pub protocol: Option<u8>,
    pub src_port: Option<u16>,
}

impl LiveFilter {
    /// The filter of `cmd` (empty fields match anything).
    pub fn of(cmd: &traceflow_proto::v1::LiveTrace) -> Self {
        Self {
            src: cmd.src_ip.parse().ok(),
            protocol: u8::try_from(cmd.protocol).ok().filter(|p| *p != 0),
            src_port: u16::try_from(cmd.src_port).ok().filter(|p| *p != 0),
        }
    }

    /// Whether a packet whose connection has source `src`, protocol `protocol` and source
    /// port `src_port` may be the trace's.
    pub fn admits(&self, src: std::net::IpAddr, protocol: u8, src_port: Option<u16>) -> bool {
        self.src.is_none_or(|s| s == src)
            && self.protocol.is_none_or(|p| same_protocol(p, protocol))
            && self.src_port.is_none_or(|p| src_port == Some(p))
    }
}

/// ICMP and ICMPv6 are one protocol to a trace's filter.
fn same_protocol(want: u8, got: u8) -> bool {
    want == got || (matches!(want, 1 | 58) && matches!(got, 1 | 58))
}

#[derive(Debug)]
struct Entry {
    reg: Registration,
    reported: bool,
}

/// The live traces of this Node, by tag. Cheap to clone (clones share the registry).
#[derive(Debug, Clone, Default)]
pub struct LiveTraces {
    by_tag: Arc<Mutex<HashMap<u8, Entry>>>,
}

impl LiveTraces {
    fn lock(&self) -> MutexGuard<'_, HashMap<u8, Entry>> {
        // The map stays consistent whatever a panicking holder did (every update is one
        // insert or remove), so a poisoned lock is still usable.
        self.by_tag.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `reg` under `tag`; returns the uid it replaced, if another held it.
    pub fn insert(&self, tag: u8, reg: Registration) -> Option<String> {
        let uid = reg.uid.clone();
        let previous = self.lock().insert(
            tag,
            Entry {
                reg,
                reported: false,
            },
        );
        previous.map(|e| e.reg.uid).filter(|p| *p != uid)
    }

    /// The flows of every trace not yet reported here and not expired at `now`, their
    /// hard_timeout cut to what is left (rounded up), e.g. to install again after br-int lost
    /// them.
    pub fn pending_flows(&self, now: Instant) -> Vec<FlowMod> {
        let map = self.lock();
        map.values()
            .filter(|e| !e.reported && e.reg.expires > now)
            .flat_map(|e| {
                let left = e.reg.expires.duration_since(now);
                let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                let hard_timeout = u16::try_from(secs).unwrap_or(u16::MAX);
                e.reg.flows.iter().cloned().map(move |mut f| {
                    f.hard_timeout = hard_timeout;
                    f
                })
            })
            .collect()
    }

    /// Forgets trace `uid`; returns its tag if it was registered.
    pub fn remove(&self, uid: &str) -> Option<u8> {
        let mut map = self.lock();
        let tag = map
            .iter()
            .find(|(_, e)| e.reg.uid == uid)
            .map(|(t, _)| *t)?;
        map.remove(&tag);
        Some(tag)
    }

    /// The trace holding `tag` if this is its first packet-in on this Node that `admits`
    /// accepts by the trace's filter (a packet it refuses leaves the claim open).
    pub fn claim(&self, tag: u8, admits: impl Fn(&LiveFilter) -> bool) -> Option<Claim> {
        let mut map = self.lock();
        let e = map.get_mut(&tag)?;
        if e.reported || !admits(&e.reg.filter) {
            return None;
        }
        e.reported = true;
        Some(Claim {
            uid: e.reg.uid.clone(),
            capture: e.reg.capture,
            sender: e.reg.sender,
        })
    }

    /// Whether `tag` belongs to a live trace here (reported or not).
    pub fn holds(&self, tag: u8) -> bool {
        self.lock().contains_key(&tag)
    }

    /// The tag of trace `uid`, if registered.
    pub fn tag_of(&self, uid: &str) -> Option<u8> {
        self.lock()
            .iter()
            .find(|(_, e)| e.reg.uid == uid)
            .map(|(t, _)| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovs::openflow::Match;
    use std::time::Duration;

    fn reg(uid: &str, capture: bool, sender: bool) -> Registration {
        Registration {
            uid: uid.into(),
            capture,
            sender,
            flows: vec![FlowMod::add(0, 202, 1, Match::new(), vec![])],
            expires: Instant::now() + Duration::from_secs(20),
            filter: LiveFilter::default(),
        }
    }

    #[test]
    fn a_packet_outside_the_filter_leaves_the_claim_to_the_real_one() {
        let live = LiveTraces::default();
        let mut r = reg("u1", true, true);
        r.filter = LiveFilter::of(&traceflow_proto::v1::LiveTrace {
            src_ip: "10.1.0.2".into(),
            protocol: 1,
            ..Default::default()
        });
        live.insert(7, r);
        let p0: std::net::IpAddr = [10, 1, 0, 2].into();
        let p1: std::net::IpAddr = [10, 1, 0, 3].into();
        // p1 forged the tag: not the trace's packet, and the claim stays open.
        assert_eq!(live.claim(7, |f| f.admits(p1, 1, None)), None);
        assert_eq!(
            live.claim(7, |f| f.admits(p0, 17, Some(53))),
            None,
            "wrong protocol"
        );
        assert_eq!(
            live.claim(7, |f| f.admits(p0, 58, None)).map(|c| c.uid),
            Some("u1".into()),
            "ICMPv6 is ICMP to the filter"
        );
        assert_eq!(live.claim(7, |f| f.admits(p0, 1, None)), None, "once");
    }

    #[test]
    fn a_tag_is_claimed_once_and_forgotten_by_uid() {
        let live = LiveTraces::default();
        assert_eq!(live.insert(7, reg("u1", true, true)), None);
        assert!(live.holds(7));
        assert_eq!(
            live.claim(7, |_| true),
            Some(Claim {
                uid: "u1".into(),
                capture: true,
                sender: true,
            })
        );
        assert_eq!(live.claim(7, |_| true), None, "reported once");
        assert_eq!(live.claim(11, |_| true), None, "not a live tag");
        assert_eq!(live.remove("u2"), None);
        assert_eq!(live.remove("u1"), Some(7));
        assert!(!live.holds(7));
    }

    #[test]
    fn a_reused_tag_belongs_to_the_new_trace() {
        let live = LiveTraces::default();
        live.insert(7, reg("old", false, false));
        assert_eq!(live.insert(7, reg("new", true, false)), Some("old".into()));
        assert_eq!(live.tag_of("new"), Some(7));
        assert_eq!(live.tag_of("old"), None);
        assert_eq!(live.claim(7, |_| true).map(|c| c.uid), Some("new".into()));
    }

    #[test]
    fn only_unreported_unexpired_traces_are_reinstalled_with_the_time_left() {
        let live = LiveTraces::default();
        live.insert(
            15,
            Registration {
                expires: Instant::now(),
                ..reg("expired", true, true)
            },
        );
        live.insert(7, reg("waiting", true, true));
        live.insert(11, reg("reported", true, true));
        live.claim(11, |_| true);
        // Just after registering: under 20 s left, rounded up to 20.
        let now = Instant::now();
        let flows = live.pending_flows(now);
        assert_eq!(flows.len(), 1, "{flows:?}");
        assert_eq!(flows[0].hard_timeout, 20);
        assert_eq!(
            live.pending_flows(now + Duration::from_millis(19_500))[0].hard_timeout,
            1
        );
    }
}
