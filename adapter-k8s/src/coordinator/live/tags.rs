//! Per-cluster DSCP tags of live-traffic traces (docs/contracts.md "Trace identity on the wire").
//!
//! Injected traces carry their id in the packet; live traffic does not, so each live trace needs
//! its own per-trace match flows that set a DSCP tag, and the tag is what a packet-in is
//! attributed by. The tag values are Antrea's: 7..=59 in steps of 4 (14 tags), i.e. 6-bit DSCP
//! codepoints with the low two bits set, which no standard PHB uses and which never equal the
//! injected-trace class [`TRACE_CLASS`] (63). The space is per cluster because a tagged packet
//! crosses Nodes. Allocation walks a cursor forward, so a freed tag is reused as late as
//! possible and a straggling packet-in of a finished trace is unlikely to be misattributed.

use std::collections::HashSet;

/// The DSCP class of injected traces (agent `TRACE_DSCP`); never handed out here.
pub const TRACE_CLASS: u32 = 63;
/// The smallest live tag (Antrea's `minTagNum`-style first value).
pub const FIRST_TAG: u32 = 7;
/// The largest live tag.
pub const LAST_TAG: u32 = 59;
/// Distance between tags.
pub const STEP: u32 = 4;
/// How many live traces a cluster can run at once with the full tag space.
pub const LIMIT: usize = ((LAST_TAG - FIRST_TAG) / STEP + 1) as usize;

/// No tag is free.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", traceflow_core::reasons::live_tags_exhausted(limit))]
pub struct TagsExhausted {
    /// The size of the tag space.
    pub limit: usize,
}

/// The tag space of one cluster.
#[derive(Debug)]
pub struct LiveTags {
    tags: Vec<u32>,
    next: usize,
    used: HashSet<u32>,
}

impl Default for LiveTags {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveTags {
    /// Antrea's 14 tags.
    pub fn new() -> Self {
        Self::with_limit(LIMIT)
    }

    /// Only the first `limit` tags (at most [`LIMIT`]), for tests of exhaustion.
    pub fn with_limit(limit: usize) -> Self {
        let tags = (FIRST_TAG..=LAST_TAG)
            .step_by(STEP as usize)
            .take(limit)
            .collect();
        Self {
            tags,
            next: 0,
            used: HashSet::new(),
        }
    }

    /// The size of the space.
    pub fn limit(&self) -> usize {
        self.tags.len()
    }

    /// How many tags are in use.
    pub fn in_use(&self) -> usize {
        self.used.len()
    }

    /// A free tag, or [`TagsExhausted`] when every tag belongs to an on-going live trace.
    pub fn allocate(&mut self) -> Result<u32, TagsExhausted> {
        let limit = self.tags.len();
        if self.used.len() >= limit {
            return Err(TagsExhausted { limit });
        }
        for _ in 0..limit {
            let tag = self.tags[self.next];
            self.next = (self.next + 1) % limit;
            if self.used.insert(tag) {
                return Ok(tag);
            }
        }
        Err(TagsExhausted { limit })
    }

    /// Frees `tag`; false if it was not in use.
    pub fn release(&mut self, tag: u32) -> bool {
        self.used.remove(&tag)
    }

    /// Whether `tag` belongs to an on-going live trace.
    pub fn is_live(&self, tag: u32) -> bool {
        self.used.contains(&tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn antrea_tag_values_and_never_the_trace_class() {
        let mut t = LiveTags::new();
        assert_eq!(t.limit(), 14);
        let tags: Vec<u32> = (0..14).filter_map(|_| t.allocate().ok()).collect();
        assert_eq!(tags, (7..=59).step_by(4).collect::<Vec<_>>());
        assert!(
            tags.iter()
                .all(|&x| x != TRACE_CLASS && x < 64 && x & 3 == 3)
        );
    }

    #[test]
    fn full_space_fails_with_antreas_message() {
        let mut t = LiveTags::with_limit(2);
        assert_eq!(t.allocate(), Ok(7));
        assert_eq!(t.allocate(), Ok(11));
        let err = t.allocate().err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("number of on-going live-traffic Traceflows reached the limit of 2")
        );
        assert_eq!(LiveTags::new().limit(), LIMIT, "default is the whole space");
    }

    #[test]
    fn freed_tags_are_reused_as_late_as_possible() {
        let mut t = LiveTags::with_limit(3);
        assert_eq!(t.allocate(), Ok(7));
        assert_eq!(t.allocate(), Ok(11));
        assert!(t.release(7));
        assert!(!t.release(7), "double release is reported");
        // The cursor moves on to the third tag before coming back to 7.
        assert_eq!(t.allocate(), Ok(15));
        assert_eq!(t.allocate(), Ok(7));
        assert_eq!(t.allocate(), Err(TagsExhausted { limit: 3 }));
        assert_eq!(t.in_use(), 3);
        assert!(t.is_live(11));
    }
}
