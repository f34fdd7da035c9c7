//! The one reconnect backoff (exponential, capped, jittered) of every long-lived connection:
//! the adapter's stream to the manager, the agent's stream to the adapter, the agent's OpenFlow
//! and OVSDB connections.
//!
//! Built on `backon`'s exponential backoff: the base delay starts at `min` and doubles up to
//! `max / 2`; each delay adds a uniformly random share of the base (`backon`'s jitter), so a
//! delay lies in `[base, 2·base)`, which is always `< max`. Jitter keeps the agents of a
//! cluster (and the adapters of a fleet) from reconnecting in lockstep after a restart.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// The delays between reconnection attempts; [`Reconnect::reset`] after a successful
/// connection so the next outage starts from `min` again.
#[derive(Debug)]
pub struct Reconnect {
    builder: ExponentialBuilder,
    delays: <ExponentialBuilder as BackoffBuilder>::Backoff,
    max: Duration,
}

impl Reconnect {
    /// Delays from `[min, 2·min)` growing to just under `max`. `max` below `2·min` is raised to
    /// `2·min` (a cap the first delay could not respect).
    pub fn new(min: Duration, max: Duration) -> Self {
        let max = max.max(min.saturating_mul(2));
        let builder = ExponentialBuilder::new()
            .with_min_delay(min)
            .with_max_delay(max / 2)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Self {
            builder,
            delays: builder.build(),
            max,
        }
    }

    /// How long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        // Never exhausted (`without_max_times`); the cap also guards against float rounding
        // in backon's jitter.
        self.delays
            .next()
            .unwrap_or(self.max)
            .min(self.max.saturating_sub(Duration::from_nanos(1)))
    }

    /// Starts over from `min` (call after a connection succeeded).
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }

    /// The bound every delay stays below.
    pub fn max(&self) -> Duration {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(10);

    fn delays(r: &mut Reconnect, n: usize) -> Vec<Duration> {
        (0..n).map(|_| r.next_delay()).collect()
    }

    #[test]
    fn delays_grow_from_min_and_stay_below_the_cap() {
        let mut r = Reconnect::new(MIN, MAX);
        let d = delays(&mut r, 30);
        // Attempt k (from 0) has base min·2^k (until max/2): delay ∈ [base, 2·base).
        for (k, delay) in d.iter().enumerate() {
            let base = MIN.saturating_mul(1u32 << k.min(20)).min(MAX / 2);
            assert!(*delay >= base, "attempt {k}: {delay:?} < base {base:?}");
            assert!(*delay < base * 2, "attempt {k}: {delay:?} ≥ 2·base");
            assert!(*delay < MAX, "attempt {k}: {delay:?} not below the cap");
        }
        assert!(d[5] > d[0] * 4, "delays grow: {d:?}");
        // Long past the cap the base is max/2: every delay is in [5 s, 10 s).
        assert!(d[29] >= MAX / 2);
    }

    #[test]
    fn delays_are_jittered() {
        // Two backoffs (independent random seeds) at the cap: the chance of 20 equal delays
        // drawn from a 5 s range with f32 resolution is nil.
        let mut a = Reconnect::new(MIN, MAX);
        let mut b = Reconnect::new(MIN, MAX);
        let (da, db) = (delays(&mut a, 40), delays(&mut b, 40));
        assert_ne!(da[20..], db[20..], "no jitter");
        // Within one backoff, delays at the cap differ too.
        let at_cap = &da[20..];
        assert!(
            at_cap.iter().any(|d| *d != at_cap[0]),
            "constant delays at the cap: {at_cap:?}"
        );
    }

    #[test]
    fn reset_starts_over_from_min() {
        let mut r = Reconnect::new(MIN, MAX);
        let _ = delays(&mut r, 10);
        assert!(r.next_delay() >= MAX / 2);
        r.reset();
        let first = r.next_delay();
        assert!(first >= MIN && first < MIN * 2, "{first:?}");
    }

    #[test]
    fn a_cap_below_twice_min_is_raised() {
        let mut r = Reconnect::new(Duration::from_secs(1), Duration::from_millis(500));
        assert_eq!(r.max(), Duration::from_secs(2));
        let d = r.next_delay();
        assert!(
            d >= Duration::from_secs(1) && d < Duration::from_secs(2),
            "{d:?}"
        );
    }
}
