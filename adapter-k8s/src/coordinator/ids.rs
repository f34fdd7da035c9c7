//! Per-cluster data-plane trace ids (DESIGN.md "Trace identity").
//!
//! An injected packet carries its trace id in the IPv4 Identification (16 bits) or the IPv6
//! flow label (20 bits), so each family has its own space: 1..=65535 and 1..=1048575. 0 is never
//! handed out (it reads as "not a trace"). Allocation walks a cursor forward, so a freed id is
//! reused as late as possible and a straggling packet-in of a finished trace is unlikely to be
//! attributed to a new one.

use std::collections::HashSet;

/// The largest IPv4 trace id (16-bit Identification).
pub const MAX_V4: u32 = 0xFFFF;
/// The largest IPv6 trace id (20-bit flow label).
pub const MAX_V6: u32 = 0xF_FFFF;

#[derive(Debug)]
struct Space {
    max: u32,
    next: u32,
    used: HashSet<u32>,
}

impl Space {
    fn new(max: u32) -> Self {
        Self {
            max,
            next: 1,
            used: HashSet::new(),
        }
    }

    fn allocate(&mut self) -> Option<u32> {
        if self.used.len() >= self.max as usize {
            return None;
        }
        loop {
            let id = self.next;
            self.next = if self.next >= self.max {
                1
            } else {
                self.next + 1
            };
            if self.used.insert(id) {
                return Some(id);
            }
        }
    }

    fn release(&mut self, id: u32) -> bool {
        self.used.remove(&id)
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

    /// A free non-zero id of the family, or `None` when every id is in use.
    pub fn allocate(&mut self, ipv6: bool) -> Option<u32> {
        self.space(ipv6).allocate()
    }

    /// Frees `id`; returns false when it was not allocated.
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
        let a = ids.allocate(false);
        if let Some(a) = a {
            ids.release(false, a);
        }
        assert_ne!(ids.allocate(false), a);
    }

    #[test]
    fn release_of_unknown_id_is_false() {
        let mut ids = TraceIds::new();
        assert!(!ids.release(true, 7));
    }
}
