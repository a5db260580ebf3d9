//! [`AuthFailureLimiter`]: locking out client addresses that keep failing
//! authentication.
//!
//! A bearer key or a signature can be guessed only by trying; this makes
//! trying slow. Each client address (see [`client_key`]) has a window that
//! opens with its first failure; `max_failures` failures within `window`
//! lock the address for `lockout`, during which [`AuthFailureLimiter::check`]
//! answers [`Locked`]. When the lockout or the window is over, the address
//! starts afresh.
//!
//! The edge only counts. The switch and the providers call `check` before
//! authenticating and `record_failure` after a failure, from their own
//! handlers, and answer a locked address in their own envelope (a 429 with
//! `Retry-After`, say).
//!
//! Memory is bounded: at most `max_tracked_addresses` addresses are
//! remembered. When the table is full, entries whose window or lockout is
//! over are pruned (at most once a second, so a full table of live entries
//! does not cost a scan per request); if it is still full, a failure from
//! an address not yet in the table is not counted. That fails *open* for new
//! addresses, deliberately: the alternative, locking out every address we
//! cannot track, would let anyone with enough source addresses lock out
//! every legitimate client. Addresses already tracked keep being counted
//! and locked, so a guesser that is already known gains nothing. Filling the
//! table takes `max_tracked_addresses` distinct addresses (IPv6 counts per
//! /64), and is logged.

use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use crate::limits::client_key;

/// The numbers an [`AuthFailureLimiter`] works with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthFailureLimits {
    /// Failures within one `window` that lock the address. Default 20: a
    /// misconfigured client fails a few times and someone looks; a guesser
    /// needs millions.
    pub max_failures: u32,
    /// The span, from an address's first failure, in which failures count
    /// together. Default 60 s.
    pub window: Duration,
    /// How long a locked address is refused. Default 60 s: a guesser is
    /// slowed to `max_failures` tries a minute or two; a legitimate client
    /// that locked itself out recovers without an operator.
    pub lockout: Duration,
    /// The most addresses remembered at once. Default 100,000: about 10 MB.
    pub max_tracked_addresses: usize,
}

impl Default for AuthFailureLimits {
    fn default() -> Self {
        AuthFailureLimits {
            max_failures: 20,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(60),
            max_tracked_addresses: 100_000,
        }
    }
}

/// The answer for a locked address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many failed authentications from this address; retry in {retry_after_secs} s")]
pub struct Locked {
    /// Whole seconds until the lockout ends (at least 1), for `Retry-After`.
    pub retry_after_secs: u64,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    window_start: Instant,
    count: u32,
    locked_until: Option<Instant>,
}

impl Failures {
    fn new(now: Instant) -> Self {
        Failures {
            window_start: now,
            count: 0,
            locked_until: None,
        }
    }

    /// Whether this entry no longer says anything: its lockout, or (if it
    /// was never locked) its window, is over.
    fn is_over(&self, now: Instant, limits: &AuthFailureLimits) -> bool {
        match self.locked_until {
            Some(until) => now >= until,
            None => now.saturating_duration_since(self.window_start) >= limits.window,
        }
    }

    /// Counts one failure; `true` when this one locked the address.
    fn count_failure(&mut self, now: Instant, limits: &AuthFailureLimits) -> bool {
        if self.is_over(now, limits) {
            *self = Failures::new(now);
        }
        if self.locked_until.is_some() {
            // Still locked: the caller should have refused the attempt at
            // `check`; counting it would only push the lockout further.
            return false;
        }
        self.count = self.count.saturating_add(1);
        if self.count >= limits.max_failures {
            self.locked_until = Some(now.checked_add(limits.lockout).unwrap_or(now));
            return true;
        }
        false
    }
}

#[derive(Debug, Default)]
struct Housekeeping {
    last_prune: Option<Instant>,
    last_full_warning: Option<Instant>,
}

/// Counts failed authentications per client address and locks out an
/// address that fails too often. Share one per server (`Arc`).
#[derive(Debug)]
pub struct AuthFailureLimiter {
    limits: AuthFailureLimits,
    entries: DashMap<IpAddr, Failures>,
    housekeeping: Mutex<Housekeeping>,
}

/// The shortest time between two prunes of a full table.
const PRUNE_INTERVAL: Duration = Duration::from_secs(1);
/// The shortest time between two warnings that the table is full.
const FULL_WARNING_INTERVAL: Duration = Duration::from_secs(60);

impl AuthFailureLimiter {
    pub fn new(limits: AuthFailureLimits) -> Self {
        AuthFailureLimiter {
            limits,
            entries: DashMap::new(),
            housekeeping: Mutex::default(),
        }
    }

    /// `Err(Locked)` while `ip`'s address is locked out; call before
    /// authenticating, and refuse without trying if it is.
    pub fn check(&self, ip: IpAddr) -> Result<(), Locked> {
        let now = Instant::now();
        let Some(failures) = self.entries.get(&client_key(ip)) else {
            return Ok(());
        };
        match failures.locked_until {
            Some(until) if now < until => {
                let left = until - now;
                let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                Err(Locked {
                    retry_after_secs: secs.max(1),
                })
            }
            _ => Ok(()),
        }
    }

    /// Count one failed authentication from `ip`.
    pub fn record_failure(&self, ip: IpAddr) {
        let key = client_key(ip);
        let now = Instant::now();
        // An operator should see an attack (or a client locking itself out).
        let log_lockout = |locked: bool| {
            if locked {
                tracing::warn!(
                    address = %key,
                    failures = self.limits.max_failures,
                    lockout_secs = self.limits.lockout.as_secs(),
                    "address locked out after repeated failed authentications"
                );
            }
        };
        if let Some(mut failures) = self.entries.get_mut(&key) {
            let locked = failures.count_failure(now, &self.limits);
            drop(failures);
            log_lockout(locked);
            return;
        }
        // A new address. (`len` locks every shard, so it is asked here,
        // before `entry` holds one; two threads racing past it overshoot the
        // cap by at most one entry each.)
        if self.entries.len() >= self.limits.max_tracked_addresses && !self.make_room(now) {
            return;
        }
        let locked = self
            .entries
            .entry(key)
            .or_insert_with(|| Failures::new(now))
            .count_failure(now, &self.limits);
        log_lockout(locked);
    }

    /// How many addresses are remembered now.
    pub fn tracked_addresses(&self) -> usize {
        self.entries.len()
    }

    /// Prune entries that are over, if that was not done in the last second;
    /// `false` if the table is still full (the new address goes uncounted).
    fn make_room(&self, now: Instant) -> bool {
        let mut housekeeping = self
            .housekeeping
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let due = housekeeping
            .last_prune
            .is_none_or(|last| now.saturating_duration_since(last) >= PRUNE_INTERVAL);
        if due {
            housekeeping.last_prune = Some(now);
            self.entries
                .retain(|_, failures| !failures.is_over(now, &self.limits));
        }
        if self.entries.len() < self.limits.max_tracked_addresses {
            return true;
        }
        let warn = housekeeping
            .last_full_warning
            .is_none_or(|last| now.saturating_duration_since(last) >= FULL_WARNING_INTERVAL);
        if warn {
            housekeeping.last_full_warning = Some(now);
            tracing::warn!(
                tracked = self.entries.len(),
                "authentication failures are tracked for the most addresses allowed; \
                 failures from new addresses are not counted until entries expire"
            );
        }
        false
    }
}

impl Default for AuthFailureLimiter {
    fn default() -> Self {
        AuthFailureLimiter::new(AuthFailureLimits::default())
    }
}
