//! Hourly send limits: so many messages an hour per key (a destination, an
//! app, a provider), for the SDK's OTPs and the switch's `/notify/*` alike.
//!
//! GCRA (`governor`): up to `n` at once, then one more every hour / `n` — on
//! average `n` an hour, never more than `2n - 1` in any sixty minutes.
//! Destinations are keyed in one form ([`destination_key`]), so `+234…`
//! and `234…`, or an address in other letter case, share one count.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::notify::Channel;

/// Keys remembered before the first prune of those that have recovered.
const PRUNE_AT: usize = 10_000;

/// So many sends an hour for each key.
pub struct HourlyLimit {
    limiter: DefaultKeyedRateLimiter<String>,
    per_hour: u32,
    /// The size at which the next prune runs: doubled past what a prune
    /// leaves, so many live keys cost one prune per doubling, not one per
    /// send.
    prune_at: AtomicUsize,
}

impl HourlyLimit {
    /// `per_hour` of 0 counts as 1.
    pub fn new(per_hour: u32) -> HourlyLimit {
        let n = NonZeroU32::new(per_hour).unwrap_or(NonZeroU32::MIN);
        HourlyLimit {
            limiter: RateLimiter::keyed(Quota::per_hour(n).allow_burst(n)),
            per_hour: n.get(),
            prune_at: AtomicUsize::new(PRUNE_AT),
        }
    }

    pub fn per_hour(&self) -> u32 {
        self.per_hour
    }

    /// Takes one send for `key`, or says how long until one is allowed.
    pub fn take(&self, key: &str) -> Result<(), Duration> {
        if self.limiter.len() >= self.prune_at.load(Ordering::Relaxed) {
            self.limiter.retain_recent();
            let left = self.limiter.len();
            self.prune_at
                .store((left * 2).max(PRUNE_AT), Ordering::Relaxed);
        }
        self.limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// A destination in the one form its limit is kept under: a phone number
/// without its `+`, an e-mail address in lower case.
pub fn destination_key(channel: Channel, to: &str) -> String {
    match channel {
        Channel::Sms => format!("sms:{}", to.trim().trim_start_matches('+')),
        Channel::Email => format!("email:{}", to.trim().to_lowercase()),
    }
}

/// Whole seconds to wait, rounded up, at least one.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_waits_and_others_are_apart() {
        let limit = HourlyLimit::new(2);
        assert!(limit.take("a").is_ok() && limit.take("a").is_ok());
        let wait = limit.take("a").unwrap_err();
        assert!(wait > Duration::from_secs(29 * 60) && wait <= Duration::from_secs(30 * 60));
        assert!(limit.take("b").is_ok());
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(2500)), 3);
    }

    #[test]
    fn one_destination_has_one_key_however_it_is_written() {
        assert_eq!(
            destination_key(Channel::Sms, "+2348022000008"),
            destination_key(Channel::Sms, "2348022000008")
        );
        assert_eq!(
            destination_key(Channel::Email, "Uju@Example.COM"),
            destination_key(Channel::Email, "uju@example.com")
        );
        assert_ne!(
            destination_key(Channel::Sms, "2348022000008"),
            destination_key(Channel::Email, "2348022000008")
        );
    }
}
