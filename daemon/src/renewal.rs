//! When a component renews its leaf certificate next (the adapter its cluster certificate, the
//! agent its Node certificate): at two thirds of the lifetime, then after each failed attempt
//! a growing, jittered delay ([`RETRY_MIN`] … [`RETRY_MAX`]). What to log stays with the caller.

use std::time::Duration;

use crate::Reconnect;

/// First delay after a failed renewal (jittered up to twice this).
pub const RETRY_MIN: Duration = Duration::from_secs(1);
/// Every delay between failed renewals stays below this.
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// Far enough ahead to be never, near enough not to overflow the clock (about 34 years).
const NEVER: Duration = Duration::from_secs(1 << 30);

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The renewal schedule of one certificate.
#[derive(Debug)]
pub struct Renewal {
    due: tokio::time::Instant,
    not_after: i64,
    retry: Reconnect,
}

impl Renewal {
    /// Due at `renew_at` (seconds since the Unix epoch; at once when past) for a certificate
    /// valid until `not_after`.
    pub fn at(renew_at: i64, not_after: i64) -> Self {
        let ahead = u64::try_from(renew_at.saturating_sub(unix_now())).unwrap_or(0);
        Self::after(Duration::from_secs(ahead), not_after)
    }

    /// Never due (a certificate that cannot be read, which the peer refuses anyway).
    pub fn never() -> Self {
        Self::after(NEVER, i64::MAX)
    }

    fn after(ahead: Duration, not_after: i64) -> Self {
        Self {
            due: tokio::time::Instant::now() + ahead.min(NEVER),
            not_after,
            retry: Reconnect::new(RETRY_MIN, RETRY_MAX),
        }
    }

    /// When the next attempt is due.
    pub fn due(&self) -> tokio::time::Instant {
        self.due
    }

    /// An attempt failed: the next is due after the next backoff delay. Returns that delay
    /// and the seconds the certificate has left.
    pub fn failed(&mut self) -> (Duration, i64) {
        let retry_in = self.retry.next_delay();
        self.due = tokio::time::Instant::now() + retry_in;
        (retry_in, self.not_after.saturating_sub(unix_now()))
    }

    /// Whether the certificate has expired (its peer refuses it; renewing cannot help).
    pub fn expired(&self) -> bool {
        unix_now() >= self.not_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn due_at_the_time_then_after_growing_retries() {
        let now = tokio::time::Instant::now();
        let r = Renewal::at(unix_now() + 100, unix_now() + 150);
        assert!(
            r.due() - now >= Duration::from_secs(99) && r.due() - now <= Duration::from_secs(100)
        );
        assert!(!r.expired());
        let mut r = Renewal::at(0, unix_now() + 150);
        assert_eq!(r.due(), now, "past: at once");
        let (first, left) = r.failed();
        assert!(first >= RETRY_MIN && first < RETRY_MIN * 2, "{first:?}");
        assert!((149..=150).contains(&left), "{left}");
        assert_eq!(r.due(), now + first);
        let (second, _) = r.failed();
        assert!(second >= RETRY_MIN * 2, "{second:?}");
        assert!(Renewal::at(0, 0).expired());
        assert!(Renewal::never().due() - now >= NEVER);
        assert!(!Renewal::never().expired());
    }
}
