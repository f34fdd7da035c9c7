//! Per-cluster data-plane trace ids and per-trace secrets (docs/contracts.md "Trace identity on the wire").
//!
//! An injected packet carries its trace id in the IPv4 Identification (16 bits) or the IPv6
//! flow label (20 bits), so each family has its own space: 1..=65535 and 1..=1048575. 0 is never
//! handed out (it reads as "not a trace"). Ids are drawn at random from the free ones, so the
//! next trace's id cannot be guessed from the last one's; a freed id cools down (it is drawn
//! again only once [`COOLDOWN`] later ids were freed, or when nothing else is free), so a
//! straggling packet-in of a finished trace is unlikely to be attributed to a new one.
//!
//! The id only names a trace; what proves a report came from the trace's own packet is its
//! [`Secret`], which rides in the packet's payload and is never shown.

use std::collections::{HashSet, VecDeque};

/// The largest IPv4 trace id (16-bit Identification).
pub const MAX_V4: u32 = 0xFFFF;
/// The largest IPv6 trace id (20-bit flow label).
pub const MAX_V6: u32 = 0xF_FFFF;
/// Freed ids that wait before they are drawn again (at most a quarter of a space).
pub const COOLDOWN: usize = 4096;
/// Random draws before allocation falls back to a scan from a random place (a space nearly
/// full: at most this many draws miss with probability (used/max)^DRAWS).
const DRAWS: usize = 64;

/// A trace's secret: random, never 0. Its `Debug` never shows it, so a record logged by
/// mistake does not leak it; [`Secret::value`] is for the `InjectPacket` only.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Secret(u64);

impl Secret {
    /// A fresh random secret.
    pub fn random() -> Self {
        Secret(rand::random_range(1..=u64::MAX))
    }

    /// No secret (live traces: their packets are not ours to mark).
    pub const NONE: Secret = Secret(0);

    /// The value written into the trace's packets.
    pub fn value(self) -> u64 {
        self.0
    }

    /// Whether `reported` (a `TraceReport.secret`) is this secret; never for [`Secret::NONE`].
    pub fn matches(self, reported: u64) -> bool {
        self.0 != 0 && self.0 == reported
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0 == 0 {
            "Secret(none)"
        } else {
            "Secret(..)"
        })
    }
}

#[derive(Debug)]
struct Space {
    max: u32,
    used: HashSet<u32>,
    /// Freed ids, oldest first, not drawn while here (unless nothing else is free).
    cooling: VecDeque<u32>,
    cooling_set: HashSet<u32>,
    /// At most this many in `cooling`.
    cooldown: usize,
}

impl Space {
    fn new(max: u32) -> Self {
        Self {
            max,
            used: HashSet::new(),
            cooling: VecDeque::new(),
            cooling_set: HashSet::new(),
            cooldown: COOLDOWN.min(max as usize / 4),
        }
    }

    fn drawable(&self, id: u32) -> bool {
        !self.used.contains(&id) && !self.cooling_set.contains(&id)
    }

    fn allocate(&mut self) -> Option<u32> {
        let max = self.max as usize;
        if self.used.len() >= max {
            return None;
        }
        let id = if self.used.len() + self.cooling.len() >= max {
            // Only cooling ids are free: the one freed longest ago.
            let id = self.cooling.pop_front()?;
            self.cooling_set.remove(&id);
            id
        } else {
            let drawn = (0..DRAWS)
                .map(|_| rand::random_range(1..=self.max))
                .find(|id| self.drawable(*id));
            match drawn {
                Some(id) => id,
                // Nearly full: the first drawable id after a random place (there is one).
                None => {
                    let start = rand::random_range(1..=self.max);
                    (0..self.max)
                        .map(|i| (start - 1 + i) % self.max + 1)
                        .find(|id| self.drawable(*id))?
                }
            }
        };
        self.used.insert(id);
        Some(id)
    }

    fn release(&mut self, id: u32) -> bool {
        if !self.used.remove(&id) {
            return false;
        }
        if self.cooldown > 0 {
            self.cooling.push_back(id);
            self.cooling_set.insert(id);
            if self.cooling.len() > self.cooldown
                && let Some(old) = self.cooling.pop_front()
            {
                self.cooling_set.remove(&old);
            }
        }
        true
    }
}

/// Both families' id spaces.
#[derive(Debug)]
pub struct TraceIds {
    v4: Space,
    v6: Space,
}

impl Default for TraceIds {
    fn default() -> Self {
        Self::new()
    }
}

impl TraceIds {
    pub fn new() -> Self {
        Self::with_limits(MAX_V4, MAX_V6)
    }

    /// Smaller spaces, for tests of exhaustion.
    pub fn with_limits(max_v4: u32, max_v6: u32) -> Self {
        Self {
            v4: Space::new(max_v4),
            v6: Space::new(max_v6),
        }
    }

    fn space(&mut self, ipv6: bool) -> &mut Space {
        if ipv6 { &mut self.v6 } else { &mut self.v4 }
    }

    /// A free non-zero id of the family drawn at random, or `None` when every id is in use.
    pub fn allocate(&mut self, ipv6: bool) -> Option<u32> {
        self.space(ipv6).allocate()
    }

    /// Frees `id` (it cools down before it is drawn again); returns false when it was not
    /// allocated.
    pub fn release(&mut self, ipv6: bool, id: u32) -> bool {
        self.space(ipv6).release(id)
    }

    /// The size of the family's space (for the "upper limit" failure reason).
    pub fn limit(&self, ipv6: bool) -> u32 {
        if ipv6 { self.v6.max } else { self.v4.max }
    }

    pub fn in_use(&self, ipv6: bool) -> usize {
        if ipv6 {
            self.v6.used.len()
        } else {
            self.v4.used.len()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousand_concurrent_ids_are_distinct_and_non_zero() {
        let mut ids = TraceIds::new();
        let v4: HashSet<u32> = (0..1000).filter_map(|_| ids.allocate(false)).collect();
        let v6: HashSet<u32> = (0..1000).filter_map(|_| ids.allocate(true)).collect();
        assert_eq!(v4.len(), 1000);
        assert_eq!(v6.len(), 1000);
        assert!(!v4.contains(&0) && !v6.contains(&0));
        assert!(v4.iter().all(|id| *id <= MAX_V4));
        assert!(v6.iter().all(|id| *id <= MAX_V6));
        assert_eq!(ids.in_use(false), 1000);
    }

    #[test]
    fn whole_ipv4_space_then_exhaustion_then_reuse_after_release() {
        let mut ids = TraceIds::new();
        let all: HashSet<u32> = (0..MAX_V4).filter_map(|_| ids.allocate(false)).collect();
        assert_eq!(all.len(), MAX_V4 as usize);
        assert_eq!(ids.allocate(false), None);
        assert!(ids.release(false, 4242));
        assert_eq!(ids.allocate(false), Some(4242));
    }

    #[test]
    fn freed_ids_are_not_reused_immediately() {
        let mut ids = TraceIds::with_limits(10, 10);
        for _ in 0..100 {
            let a = ids.allocate(false);
            if let Some(a) = a {
                ids.release(false, a);
            }
            assert_ne!(ids.allocate(false), a);
            ids = TraceIds::with_limits(10, 10);
        }
    }

    #[test]
    fn a_freed_id_cools_down_for_the_next_thousands() {
        let mut ids = TraceIds::new();
        let Some(first) = ids.allocate(false) else {
            panic!("no id");
        };
        ids.release(false, first);
        // Churn: the next COOLDOWN - 1 traces each take an id and free it; none gets `first`.
        for _ in 0..COOLDOWN - 1 {
            let id = ids.allocate(false);
            assert_ne!(id, Some(first));
            if let Some(id) = id {
                ids.release(false, id);
            }
        }
    }

    #[test]
    fn ids_are_drawn_at_random_not_in_sequence() {
        let mut ids = TraceIds::new();
        let drawn: Vec<u32> = (0..64).filter_map(|_| ids.allocate(true)).collect();
        let sequential = drawn.windows(2).filter(|w| w[1] == w[0] + 1).count();
        assert!(sequential < 4, "ids look sequential: {drawn:?}");
        assert!(
            drawn.iter().any(|id| *id > 64),
            "ids not spread over the space: {drawn:?}"
        );
        // Two fresh allocators do not hand out the same first ids.
        let mut other = TraceIds::new();
        let again: Vec<u32> = (0..64).filter_map(|_| other.allocate(true)).collect();
        assert_ne!(drawn, again);
    }

    #[test]
    fn a_nearly_full_space_still_finds_its_last_free_ids() {
        let mut ids = TraceIds::with_limits(1000, 10);
        let all: HashSet<u32> = (0..1000).filter_map(|_| ids.allocate(false)).collect();
        assert_eq!(all, (1..=1000).collect::<HashSet<u32>>());
        assert_eq!(ids.allocate(false), None);
        // Three freed: all three come back (cooling or not), then the space is full again.
        for id in [7, 500, 1000] {
            assert!(ids.release(false, id));
        }
        let back: HashSet<u32> = (0..3).filter_map(|_| ids.allocate(false)).collect();
        assert_eq!(back, HashSet::from([7, 500, 1000]));
        assert_eq!(ids.allocate(false), None);
    }

    #[test]
    fn secrets_are_random_non_zero_and_never_debug_printed() {
        let a = Secret::random();
        let b = Secret::random();
        assert_ne!(a.value(), 0);
        assert_ne!(a, b);
        assert!(a.matches(a.value()));
        assert!(!a.matches(b.value()) && !a.matches(0));
        assert!(!Secret::NONE.matches(0), "no secret matches nothing");
        let shown = format!("{a:?}");
        assert!(!shown.contains(&a.value().to_string()), "{shown}");
    }

    #[test]
    fn release_of_unknown_id_is_false() {
        let mut ids = TraceIds::new();
        assert!(!ids.release(true, 7));
    }
}
