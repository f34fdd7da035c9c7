//! Limits at the edge that no credential lifts: per-source token buckets for anonymous calls
//! (Register, health) and for failed authentications (bearer-token and certificate brute
//! force), and "audited once per burst" for refusals, so a flood costs a counter, not the
//! audit log.
//!
//! ```text
//!   call from IP ─▶ Anonymous? ── bucket(IP) empty ─▶ RESOURCE_EXHAUSTED (counted)
//!                  authenticated ── failures(IP) empty ─▶ RESOURCE_EXHAUSTED (counted)
//!                                └─ refused ─▶ failures(IP) −1, counted, audited once per window
//! ```
//!
//! Contract: memory is bounded ([`MAX_SOURCES`] buckets; beyond that, full buckets are
//! forgotten first, then all). Audit events of refusals carry no request payload.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::store::{AuditEvent, Store, now_micros};

/// The most source addresses tracked at once.
pub const MAX_SOURCES: usize = 10_000;
/// Refusals of one kind are audited at most once per this window; the next event says how many
/// were left out.
pub const AUDIT_WINDOW: Duration = Duration::from_secs(10);

/// Edge limits, from flags (see README "Security").
#[derive(Debug, Clone, clap::Args)]
pub struct EdgeLimits {
    /// Anonymous calls (Register, health) allowed per second from one source address.
    #[arg(long, env = "TRACEFLOW_MANAGER_ANONYMOUS_RATE", default_value_t = EdgeLimits::ANONYMOUS_RATE)]
    pub anonymous_rate: f64,
    /// Anonymous calls one source address may make in a burst.
    #[arg(long, env = "TRACEFLOW_MANAGER_ANONYMOUS_BURST", default_value_t = EdgeLimits::ANONYMOUS_BURST)]
    pub anonymous_burst: u32,
    /// Failed authentications (bad bearer token, revoked certificate) forgiven per second per
    /// source address.
    #[arg(long, env = "TRACEFLOW_MANAGER_AUTH_FAILURE_RATE", default_value_t = EdgeLimits::AUTH_FAILURE_RATE)]
    pub auth_failure_rate: f64,
    /// Failed authentications one source address may make in a burst before being refused.
    #[arg(long, env = "TRACEFLOW_MANAGER_AUTH_FAILURE_BURST", default_value_t = EdgeLimits::AUTH_FAILURE_BURST)]
    pub auth_failure_burst: u32,
    /// Lifetime of a new bearer token when the request names none.
    #[arg(long, env = "TRACEFLOW_MANAGER_BEARER_TOKEN_TTL", default_value = "30d", value_parser = humantime::parse_duration)]
    pub bearer_token_ttl: Duration,
    /// The longest lifetime a bearer token may have.
    #[arg(long, env = "TRACEFLOW_MANAGER_BEARER_TOKEN_MAX_TTL", default_value = "365d", value_parser = humantime::parse_duration)]
    pub bearer_token_max_ttl: Duration,
    /// Watches one user may hold open at once; more are RESOURCE_EXHAUSTED.
    #[arg(long, env = "TRACEFLOW_MANAGER_MAX_WATCHES_PER_USER", default_value_t = EdgeLimits::MAX_WATCHES_PER_USER)]
    pub max_watches_per_user: usize,
    /// Objects (Nodes, Namespaces, Pods, Services, policies) one cluster's inventory may hold;
    /// an adapter that sends more has its stream ended with RESOURCE_EXHAUSTED.
    #[arg(long, env = "TRACEFLOW_MANAGER_MAX_INVENTORY_OBJECTS", default_value_t = EdgeLimits::MAX_INVENTORY_OBJECTS)]
    pub max_inventory_objects: usize,
    /// Connections open at once (TLS handshakes included); more are closed on accept.
    #[arg(long, env = "TRACEFLOW_MANAGER_MAX_CONNECTIONS", default_value_t = EdgeLimits::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Connections open at once from one source address; more are closed on accept.
    #[arg(long, env = "TRACEFLOW_MANAGER_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = EdgeLimits::MAX_CONNECTIONS_PER_ADDRESS)]
    pub max_connections_per_address: usize,
    /// At most this many audit events are kept (oldest go first).
    #[arg(long, env = "TRACEFLOW_MANAGER_AUDIT_MAX_COUNT", default_value_t = EdgeLimits::AUDIT_MAX_COUNT)]
    pub audit_max_count: usize,
    /// Audit events older than this are deleted.
    #[arg(long, env = "TRACEFLOW_MANAGER_AUDIT_MAX_AGE", default_value = "90d", value_parser = humantime::parse_duration)]
    pub audit_max_age: Duration,
    /// Lifetime of the cluster and user certificates the manager signs while serving
    /// (registration, renewal, `CreateUser`); adapters renew theirs after two thirds of it.
    #[arg(long, env = "TRACEFLOW_MANAGER_LEAF_CERT_LIFETIME", default_value = traceflow_core::limits::DEFAULT_MANAGER_LEAF_CERT_LIFETIME, value_parser = humantime::parse_duration)]
    pub leaf_cert_lifetime: Duration,
}

impl EdgeLimits {
    pub const ANONYMOUS_RATE: f64 = 20.0;
    pub const ANONYMOUS_BURST: u32 = 100;
    pub const AUTH_FAILURE_RATE: f64 = 1.0;
    pub const AUTH_FAILURE_BURST: u32 = 20;
    pub const AUDIT_MAX_COUNT: usize = 100_000;
    pub const MAX_WATCHES_PER_USER: usize = 100;
    /// Kubernetes' tested limits are 150 000 Pods and 10 000 Services per cluster.
    pub const MAX_INVENTORY_OBJECTS: usize = 500_000;
    pub const MAX_CONNECTIONS: usize = 10_000;
    pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 1_000;
}

impl Default for EdgeLimits {
    fn default() -> Self {
        EdgeLimits {
            anonymous_rate: Self::ANONYMOUS_RATE,
            anonymous_burst: Self::ANONYMOUS_BURST,
            auth_failure_rate: Self::AUTH_FAILURE_RATE,
            auth_failure_burst: Self::AUTH_FAILURE_BURST,
            bearer_token_ttl: Duration::from_secs(30 * 24 * 3600),
            bearer_token_max_ttl: Duration::from_secs(365 * 24 * 3600),
            max_watches_per_user: Self::MAX_WATCHES_PER_USER,
            max_inventory_objects: Self::MAX_INVENTORY_OBJECTS,
            max_connections: Self::MAX_CONNECTIONS,
            max_connections_per_address: Self::MAX_CONNECTIONS_PER_ADDRESS,
            audit_max_count: Self::AUDIT_MAX_COUNT,
            audit_max_age: Duration::from_secs(90 * 24 * 3600),
            leaf_cert_lifetime: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets per source address: `burst` calls at once, refilled at `rate` per second.
#[derive(Debug)]
pub struct SourceLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl SourceLimiter {
    pub fn new(rate: f64, burst: u32) -> Self {
        SourceLimiter {
            rate: rate.max(0.0),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refilled(&self, b: Bucket, now: Instant) -> Bucket {
        let gained = now.saturating_duration_since(b.at).as_secs_f64() * self.rate;
        Bucket {
            tokens: (b.tokens + gained).min(self.burst),
            at: now,
        }
    }

    /// Takes one token of `ip`'s bucket; false when it is empty.
    pub fn take(&self, ip: IpAddr, now: Instant) -> bool {
        self.with(ip, now, |b| {
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                true
            } else {
                false
            }
        })
    }

    /// Whether `ip` has a token left, without taking it.
    pub fn has(&self, ip: IpAddr, now: Instant) -> bool {
        self.with(ip, now, |b| b.tokens >= 1.0)
    }

    fn with(&self, ip: IpAddr, now: Instant, f: impl FnOnce(&mut Bucket) -> bool) -> bool {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_SOURCES && !map.contains_key(&ip) {
            let burst = self.burst;
            let rate = self.rate;
            map.retain(|_, b| {
                let gained = now.saturating_duration_since(b.at).as_secs_f64() * rate;
                b.tokens + gained < burst
            });
            if map.len() >= MAX_SOURCES {
                map.clear();
            }
        }
        let fresh = Bucket {
            tokens: self.burst,
            at: now,
        };
        let b = map.entry(ip).or_insert(fresh);
        *b = self.refilled(*b, now);
        f(b)
    }
}

/// A kind of refusal and its subject (a validated name, or empty).
type RefusalKey = (&'static str, String);

/// The edge's limiters and its refusal log.
#[derive(Debug)]
pub struct Guard {
    pub limits: EdgeLimits,
    pub anonymous: SourceLimiter,
    pub failures: SourceLimiter,
    store: Store,
    /// Per kind and subject of refusal: when it was last audited, and how many were left out
    /// since (bounded like the buckets).
    audited: Mutex<HashMap<RefusalKey, (Instant, u64)>>,
    /// Open watches per user.
    watches: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open watch of a user; dropping it (the stream ends or the client goes) frees the slot.
#[derive(Debug)]
pub struct WatchPermit {
    user: String,
    watches: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for WatchPermit {
    fn drop(&mut self) {
        let mut map = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.user);
            }
        }
    }
}

impl Guard {
    pub fn new(store: Store, limits: EdgeLimits) -> Self {
        Guard {
            anonymous: SourceLimiter::new(limits.anonymous_rate, limits.anonymous_burst),
            failures: SourceLimiter::new(limits.auth_failure_rate, limits.auth_failure_burst),
            limits,
            store,
            audited: Mutex::new(HashMap::new()),
            watches: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A slot for one more watch of `user`, or RESOURCE_EXHAUSTED at the cap.
    pub fn watch_permit(&self, user: &str) -> Result<WatchPermit, super::error::ApiError> {
        let mut map = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(user.to_string()).or_insert(0);
        if *n >= self.limits.max_watches_per_user {
            crate::telemetry::global().refused("watch-limit");
            return Err(super::error::ApiError::ResourceExhausted(format!(
                "{} watches are open for this user already (the maximum); close some first",
                self.limits.max_watches_per_user
            )));
        }
        *n += 1;
        Ok(WatchPermit {
            user: user.to_string(),
            watches: self.watches.clone(),
        })
    }

    /// Counts a refusal of `kind` (a fixed word: the metric label and the audit action
    /// `<kind>-refused`) and audits it unless one of the same kind and `subject` was audited
    /// within [`AUDIT_WINDOW`]. `subject` is a validated name or empty, and `detail` holds no
    /// request input; the source address is recorded with the detail.
    pub fn refused(&self, kind: &'static str, subject: &str, source: Option<IpAddr>, detail: &str) {
        crate::telemetry::global().refused(kind);
        let now = Instant::now();
        let left_out = {
            let mut map = self.audited.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() >= MAX_SOURCES {
                map.retain(|_, (at, _)| now.duration_since(*at) < AUDIT_WINDOW);
            }
            match map.get_mut(&(kind, subject.to_string())) {
                Some((at, skipped)) if now.duration_since(*at) < AUDIT_WINDOW => {
                    *skipped += 1;
                    return;
                }
                Some(entry) => {
                    let skipped = entry.1;
                    *entry = (now, 0);
                    skipped
                }
                None => {
                    map.insert((kind, subject.to_string()), (now, 0));
                    0
                }
            }
        };
        let source = source.map_or_else(|| "unknown address".to_string(), |ip| ip.to_string());
        let more = if left_out > 0 {
            format!("; {left_out} more like it in the previous burst, not recorded")
        } else {
            String::new()
        };
        let event = AuditEvent {
            micros: now_micros(),
            actor: "anonymous".into(),
            action: format!("{kind}-refused"),
            subject: subject.to_string(),
            detail: format!("{detail} (from {source}{more})"),
        };
        if let Err(error) = self.store.audit(&event) {
            tracing::warn!(%error, "cannot audit a refused call");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_burst_then_the_rate() {
        let l = SourceLimiter::new(2.0, 3);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let t0 = Instant::now();
        assert!((0..3).all(|_| l.take(a, t0)));
        assert!(!l.take(a, t0), "burst spent");
        assert!(l.take(b, t0), "another source has its own bucket");
        assert!(!l.has(a, t0 + Duration::from_millis(100)));
        assert!(
            l.take(a, t0 + Duration::from_millis(600)),
            "refilled at 2/s"
        );
        assert!(!l.take(a, t0 + Duration::from_millis(600)));
    }

    #[test]
    fn watches_are_capped_per_user_and_freed_on_drop() {
        let dir = tempfile::tempdir().ok();
        let Some(store) = dir.as_ref().and_then(|d| Store::open(d.path()).ok()) else {
            panic!("cannot open a store");
        };
        let g = Guard::new(
            store,
            EdgeLimits {
                max_watches_per_user: 2,
                ..Default::default()
            },
        );
        let a = g.watch_permit("u");
        let b = g.watch_permit("u");
        assert!(a.is_ok() && b.is_ok());
        assert!(g.watch_permit("u").is_err(), "third watch refused");
        assert!(
            g.watch_permit("v").is_ok(),
            "another user has their own cap"
        );
        drop(a);
        assert!(g.watch_permit("u").is_ok(), "a closed watch frees its slot");
    }

    #[test]
    fn sources_are_bounded() {
        let l = SourceLimiter::new(1.0, 1);
        let t0 = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 10) {
            l.take(IpAddr::from(i.to_be_bytes()), t0);
        }
        let n = l.buckets.lock().map(|m| m.len()).unwrap_or(usize::MAX);
        assert!(n <= MAX_SOURCES, "{n}");
    }

    #[test]
    fn refusals_are_audited_once_per_burst() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let g = Guard::new(store.clone(), EdgeLimits::default());
        for _ in 0..50 {
            g.refused(
                "authenticate",
                "",
                Some([127, 0, 0, 1].into()),
                "bearer token is not valid",
            );
        }
        g.refused("register", "alpha", None, "token already used");
        let events = store.audit_events()?;
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0].action, "authenticate-refused");
        assert!(events[0].detail.contains("from 127.0.0.1"), "{events:?}");
        assert_eq!(events[1].subject, "alpha");
        Ok(())
    }
}
