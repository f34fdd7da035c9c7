//! Pacing of injections: OVS queues at most ~100 unread packet-ins per controller connection
//! and drops the rest (`dropping packet-in due to queue overflow`), so a burst of a thousand
//! injections must not be released at once. At most [`WINDOW`] trace packets are in flight
//! (injected, no packet-in seen yet); a slot frees on the trace's first packet-in or after
//! [`SLOT_DEADLINE`], whichever comes first. Waiting injections go out in arrival order
//! (tokio's semaphore is fair).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Trace packets injected but not yet reported, at most.
pub const WINDOW: usize = 32;
/// How long a slot stays taken without a packet-in (a dropped trace packet sends none).
pub const SLOT_DEADLINE: Duration = Duration::from_millis(200);

/// Cheap to clone; clones share the window.
#[derive(Clone)]
pub struct Pacer {
    slots: Arc<Semaphore>,
    held: Arc<Mutex<HashMap<u32, (u64, OwnedSemaphorePermit)>>>,
    seq: Arc<AtomicU64>,
    deadline: Duration,
}

impl Default for Pacer {
    fn default() -> Self {
        Self::new(WINDOW, SLOT_DEADLINE)
    }
}

impl Pacer {
    pub fn new(window: usize, deadline: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(window)),
            held: Arc::default(),
            seq: Arc::default(),
            deadline,
        }
    }

    /// Waits (in order) for a slot and holds it for `trace_id` until [`Pacer::seen`] or the
    /// deadline. Returns a ticket to give back with [`Pacer::failed`] if the injection fails.
    pub async fn admit(&self, trace_id: u32) -> u64 {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the pacer's semaphore is never closed");
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut held) = self.held.lock() {
            held.insert(trace_id, (seq, permit));
        }
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(me.deadline).await;
            me.release(trace_id, Some(seq));
        });
        seq
    }

    /// The trace's packet came back: free its slot.
    pub fn seen(&self, trace_id: u32) {
        self.release(trace_id, None);
    }

    /// The injection with this ticket failed: free its slot.
    pub fn failed(&self, trace_id: u32, ticket: u64) {
        self.release(trace_id, Some(ticket));
    }

    /// Slots free right now.
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }

    fn release(&self, trace_id: u32, only: Option<u64>) {
        let permit = self
            .held
            .lock()
            .ok()
            .and_then(|mut held| match (held.get(&trace_id), only) {
                (Some((s, _)), Some(want)) if *s != want => None,
                (Some(_), _) => held.remove(&trace_id),
                (None, _) => None,
            });
        drop(permit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_window_waits_for_a_packet_in_and_keeps_order() {
        let p = Pacer::new(2, Duration::from_secs(60));
        p.admit(1).await;
        p.admit(2).await;
        assert_eq!(p.available(), 0);
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        for id in [3u32, 4] {
            let (p, order) = (p.clone(), order.clone());
            waiting.push(tokio::spawn(async move {
                p.admit(id).await;
                order.lock().expect("order lock").push(id);
            }));
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            order.lock().expect("order lock").is_empty(),
            "admitted past a full window"
        );
        p.seen(2);
        p.seen(99); // unknown trace: no effect
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(*order.lock().expect("order lock"), vec![3]);
        p.seen(1);
        for w in waiting {
            w.await.expect("admit task");
        }
        assert_eq!(*order.lock().expect("order lock"), vec![3, 4]);
    }

    #[tokio::test]
    async fn a_slot_frees_after_the_deadline_or_a_failure() {
        let p = Pacer::new(1, Duration::from_millis(50));
        p.admit(1).await;
        assert_eq!(p.available(), 0);
        let ticket = tokio::time::timeout(Duration::from_secs(2), p.admit(2))
            .await
            .expect("the deadline frees the slot");
        // A stale ticket must not free the slot.
        p.failed(2, ticket.wrapping_add(1));
        assert_eq!(p.available(), 0);
        p.failed(2, ticket);
        assert_eq!(p.available(), 1);
    }
}
