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
//! ```
//!
//! Contract: a Node reports a live trace at most once; a tag maps to one trace at a time (a
//! new `LiveTrace` with a tag still held by another uid replaces it, since the adapter only
//! reuses a tag after it ended that trace).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

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

#[derive(Debug)]
struct Entry {
    uid: String,
    capture: bool,
    sender: bool,
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

    /// Registers trace `uid` under `tag` (`capture`, `sender`: see [`Claim`]); returns the
    /// uid it replaced, if another held it.
    pub fn insert(&self, tag: u8, uid: &str, capture: bool, sender: bool) -> Option<String> {
        let previous = self.lock().insert(
            tag,
            Entry {
                uid: uid.to_string(),
                capture,
                sender,
                reported: false,
            },
        );
        previous.map(|e| e.uid).filter(|p| p != uid)
    }

    /// Forgets trace `uid`; returns its tag if it was registered.
    pub fn remove(&self, uid: &str) -> Option<u8> {
        let mut map = self.lock();
        let tag = map.iter().find(|(_, e)| e.uid == uid).map(|(t, _)| *t)?;
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
            uid: e.uid.clone(),
            capture: e.capture,
            sender: e.sender,
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
            .find(|(_, e)| e.uid == uid)
            .map(|(t, _)| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_is_claimed_once_and_forgotten_by_uid() {
        let live = LiveTraces::default();
        assert_eq!(live.insert(7, "u1", true, true), None);
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
        live.insert(7, "old", false, false);
        assert_eq!(live.insert(7, "new", true, false), Some("old".into()));
        assert_eq!(live.tag_of("new"), Some(7));
        assert_eq!(live.tag_of("old"), None);
        assert_eq!(live.claim(7).map(|c| c.uid), Some("new".into()));
    }
}
