//! Trace status snapshots waiting to leave the adapter, at most one per trace.
//!
//! A status snapshot carries everything known of a trace so far, so a newer one makes an
//! older one that has not left yet worthless. Holding only the latest per key bounds what
//! waits by the number of traces (which the coordinator bounds), whatever the consumer's
//! pace: the manager link can be disconnected for minutes, the Kubernetes API slow, and the
//! coordinator never waits for either.
//!
//! ```text
//!   router ──put(uid, snapshot)──▶ Outbox ──next()──▶ manager link / status writer
//!                 (replaces a waiting one; keys leave in the order they first arrived)
//! ```

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
};

use tokio::sync::Notify;

/// Latest value per key, first-come first-out by key. Cheap to clone (shared).
#[derive(Debug)]
pub struct Outbox<V> {
    shared: Arc<Shared<V>>,
}

impl<V> Clone for Outbox<V> {
    fn clone(&self) -> Self {
        Outbox {
            shared: self.shared.clone(),
        }
    }
}

#[derive(Debug)]
struct Shared<V> {
    state: Mutex<State<V>>,
    ready: Notify,
}

#[derive(Debug)]
struct State<V> {
    order: VecDeque<String>,
    latest: HashMap<String, V>,
    closed: bool,
}

impl<V> Default for Outbox<V> {
    fn default() -> Self {
        Outbox {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    order: VecDeque::new(),
                    latest: HashMap::new(),
                    closed: false,
                }),
                ready: Notify::new(),
            }),
        }
    }
}

impl<V> Outbox<V> {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State<V>> {
        // A panic while holding this lock leaves a consistent map: keep using it.
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `value` is now the one to send for `key`; one still waiting is replaced (and keeps
    /// its place in line).
    pub fn put(&self, key: &str, value: V) {
        {
            let mut s = self.state();
            if s.latest.insert(key.to_string(), value).is_none() {
                s.order.push_back(key.to_string());
            }
        }
        self.shared.ready.notify_one();
    }

    /// Nothing more will be put; [`next`](Self::next) returns None once the rest is taken.
    pub fn close(&self) {
        self.state().closed = true;
        self.shared.ready.notify_one();
    }

    /// How many keys wait.
    pub fn len(&self) -> usize {
        self.state().latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The oldest waiting key and its latest value, if any; never waits.
    pub fn try_next(&self) -> Option<(String, V)> {
        self.take().ok().flatten()
    }

    fn take(&self) -> Result<Option<(String, V)>, ()> {
        let mut s = self.state();
        while let Some(key) = s.order.pop_front() {
            if let Some(v) = s.latest.remove(&key) {
                return Ok(Some((key, v)));
            }
        }
        if s.closed { Err(()) } else { Ok(None) }
    }

    /// The oldest waiting key and its latest value; waits while there is none, None once
    /// closed and drained. Cancel-safe: nothing is taken unless it is returned.
    pub async fn next(&self) -> Option<(String, V)> {
        loop {
            let ready = self.shared.ready.notified();
            tokio::pin!(ready);
            // Registered before looking, so a put between the look and the wait still wakes.
            ready.as_mut().enable();
            match self.take() {
                Ok(Some(kv)) => return Some(kv),
                Err(()) => return None,
                Ok(None) => ready.await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn keeps_the_latest_per_key_in_first_arrival_order() {
        let out = Outbox::new();
        out.put("a", 1);
        out.put("b", 1);
        out.put("a", 2);
        out.put("c", 1);
        assert_eq!(out.len(), 3);
        assert_eq!(out.next().await, Some(("a".to_string(), 2)));
        assert_eq!(out.next().await, Some(("b".to_string(), 1)));
        out.put("a", 3);
        assert_eq!(out.next().await, Some(("c".to_string(), 1)));
        assert_eq!(out.next().await, Some(("a".to_string(), 3)));
        assert!(out.is_empty());
        out.close();
        assert_eq!(out.next().await, None);
    }

    #[tokio::test]
    async fn waits_for_a_put_and_stays_bounded_by_keys() {
        let out = Outbox::new();
        let reader = {
            let out = out.clone();
            tokio::spawn(async move { out.next().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        out.put("k", 7);
        let got = tokio::time::timeout(Duration::from_secs(5), reader).await;
        assert!(
            matches!(got, Ok(Ok(Some((ref k, 7)))) if k == "k"),
            "{got:?}"
        );
        // 100k snapshots of 10 traces with nobody reading: 10 wait, each the newest.
        for i in 0..100_000 {
            out.put(&format!("t{}", i % 10), i);
        }
        assert_eq!(out.len(), 10);
        assert_eq!(out.next().await, Some(("t0".to_string(), 99_990)));
    }

    #[tokio::test]
    async fn a_cancelled_wait_loses_nothing() {
        let out: Outbox<u32> = Outbox::new();
        assert!(
            tokio::time::timeout(Duration::from_millis(10), out.next())
                .await
                .is_err()
        );
        out.put("x", 1);
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(1), out.next()).await,
            Ok(Some(("x".to_string(), 1)))
        );
    }
}
