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

    /// The trace holding `tag` if this is its first packet-in on this Node.
    pub fn claim(&self, tag: u8) -> Option<Claim> {
        let mut map = self.lock();
        let e = map.get_mut(&tag)?;
        if e.reported {
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
        }
    }

    #[test]
    fn a_tag_is_claimed_once_and_forgotten_by_uid() {
        let live = LiveTraces::default();
        assert_eq!(live.insert(7, reg("u1", true, true)), None);
        assert!(live.holds(7));
        assert_eq!(
            live.claim(7),
            Some(Claim {
                uid: "u1".into(),
                capture: true,
                sender: true,
            })
        );
        assert_eq!(live.claim(7), None, "reported once");
        assert_eq!(live.claim(11), None, "not a live tag");
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
        assert_eq!(live.claim(7).map(|c| c.uid), Some("new".into()));
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
        live.claim(11);
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
