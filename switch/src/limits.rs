//! How much an app may ask of the switch, and how much of a provider one
//! moment may take.
//!
//! - [`AppLimits`]: an app's request rate (GCRA, `governor`: so many per
//!   second on average with bursts up to a bucket's size) over every
//!   endpoint, and its daily quota of new transactions per `request_type`.
//! - [`ProviderGate`]: calls to one provider in flight at once, so a slow
//!   upstream cannot hold every connection of the switch.
//! - [`QueryPacer`]: a query of an unfinished transaction asks the provider
//!   at most once per interval; in between, the known state is answered.
//!
//! A refusal is a [`LimitExceeded`] that names the limit and says when to
//! retry; it is raised before anything is claimed or recorded, so a refused
//! call changes nothing. Rates, gates and pacing live in this process: with
//! several switches, each enforces them for its own share of the traffic.
//! The daily count survives a restart: the first call that needs it after
//! start-up counts the day's metered `/transact` calls in the store.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::engine::now_ms;
use crate::store::{Operation, Store, StoreError};

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// A call refused by one of the limits: which, and when it may be retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitExceeded {
    /// The `data.error` code: `rate_limited`, `daily_quota_exceeded` or
    /// `provider_busy`.
    pub code: &'static str,
    /// The limit in words, for the app's developer.
    pub limit: String,
    /// When a retry may succeed (`Retry-After`), rounded up to a second.
    pub retry_after: Duration,
}

impl LimitExceeded {
    pub fn retry_after_secs(&self) -> u64 {
        manifold_provider::hourly::retry_after_secs(self.retry_after)
    }
}

/// One app's limits, built once from its configuration.
pub struct AppLimits {
    rate: DefaultDirectRateLimiter,
    rate_described: String,
    daily: HashMap<String, Arc<DailyQuota>>,
}

impl std::fmt::Debug for AppLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppLimits")
            .field("rate", &self.rate_described)
            .field("daily", &self.daily.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl AppLimits {
    pub fn new(config: &manifold_config::AppLimits) -> AppLimits {
        let per_second = NonZeroU32::new(config.requests_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.burst).unwrap_or(NonZeroU32::MIN);
        AppLimits {
            rate: RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)),
            rate_described: format!("{per_second} requests per second (bursts of up to {burst})"),
            daily: config
                .daily
                .iter()
                .map(|(request_type, limit)| {
                    (
                        request_type.clone(),
                        Arc::new(DailyQuota {
                            request_type: request_type.clone(),
                            limit: *limit,
                            restored: tokio::sync::OnceCell::new(),
                            count: Mutex::new(None),
                        }),
                    )
                })
                .collect(),
        }
    }

    /// Takes one request from the app's rate.
    pub fn check_rate(&self) -> Result<(), LimitExceeded> {
        self.rate.check().map_err(|not_until| LimitExceeded {
            code: "rate_limited",
            limit: format!("this app's rate of {}", self.rate_described),
            retry_after: not_until.wait_time_from(DefaultClock::default().now()),
        })
    }

    /// Whether the app has a daily quota of new `request_type` transactions:
    /// its calls of that type are metered promptly, since the quota counts
    /// them again after a restart.
    pub fn has_daily_quota(&self, request_type: &str) -> bool {
        self.daily.contains_key(request_type)
    }

    /// Reserves one of today's new transactions of `request_type`, when the
    /// app has a daily quota for it. The reservation is given back when
    /// dropped unless [`QuotaReservation::keep`] says the call began a
    /// transaction (a repeat of a `request_ref` begins none).
    pub async fn reserve_daily(
        &self,
        store: &dyn Store,
        app_id: &str,
        request_type: &str,
    ) -> Result<Option<QuotaReservation>, DailyQuotaError> {
        let Some(quota) = self.daily.get(request_type) else {
            return Ok(None);
        };
        quota.reserve(store, app_id, now_ms()).await.map(Some)
    }
}

/// Why a daily quota could not be reserved.
#[derive(Debug)]
pub enum DailyQuotaError {
    Exceeded(LimitExceeded),
    /// The day's count could not be read back from the store.
    Store(StoreError),
}

/// One app's daily quota of one `request_type`.
struct DailyQuota {
    request_type: String,
    limit: u64,
    /// The day (days since the epoch, UTC) and how many were used in it
    /// when this process started, counted from the store once.
    restored: tokio::sync::OnceCell<(u64, u64)>,
    /// The day and how many are used in it now; `None` until restored.
    count: Mutex<Option<(u64, u64)>>,
}

impl DailyQuota {
    async fn reserve(
        self: &Arc<Self>,
        store: &dyn Store,
        app_id: &str,
        now_ms: u64,
    ) -> Result<QuotaReservation, DailyQuotaError> {
        let today = now_ms / DAY_MS;
        // The first call since start-up counts what earlier runs of the
        // switch admitted today. Every admitted call was metered, a repeat
        // of a `request_ref` as well, so this may count too many, never let
        // more through than the quota.
        let restored = *self
            .restored
            .get_or_try_init(|| async {
                store
                    .count_metered(app_id, today * DAY_MS, now_ms + 1, &|call| {
                        call.operation == Operation::Transact
                            && call.error.is_none()
                            && !call.inspect
                            && call.request_type.as_deref() == Some(self.request_type.as_str())
                    })
                    .await
                    .map(|used| (today, used))
            })
            .await
            .map_err(DailyQuotaError::Store)?;
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        let (day, used) = count.get_or_insert(restored);
        // The day only moves forward: a call that read the clock just
        // before midnight but takes the lock after one from just after
        // counts in the new day rather than taking the count back.
        let today = today.max(*day);
        if *day != today {
            // A new day, as this process saw it begin.
            (*day, *used) = (today, 0);
        }
        if *used >= self.limit {
            return Err(DailyQuotaError::Exceeded(LimitExceeded {
                code: "daily_quota_exceeded",
                limit: format!(
                    "this app's daily quota of {} new `{}` transactions (UTC day)",
                    self.limit, self.request_type
                ),
                retry_after: Duration::from_millis(((today + 1) * DAY_MS).saturating_sub(now_ms)),
            }));
        }
        *used += 1;
        Ok(QuotaReservation {
            quota: Some(self.clone()),
            day: today,
        })
    }
}

/// One new transaction taken from a daily quota; given back on drop unless
/// kept.
pub struct QuotaReservation {
    quota: Option<Arc<DailyQuota>>,
    day: u64,
}

impl QuotaReservation {
    /// The call began a transaction: it counts.
    pub fn keep(mut self) {
        self.quota = None;
    }
}

impl Drop for QuotaReservation {
    fn drop(&mut self) {
        let Some(quota) = self.quota.take() else {
            return;
        };
        let mut count = quota.count.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((day, used)) = count.as_mut() {
            if *day == self.day {
                *used = used.saturating_sub(1);
            }
        }
    }
}

/// Calls to one provider in flight at once.
pub struct ProviderGate {
    provider: String,
    max: u32,
    slots: Arc<Semaphore>,
}

impl ProviderGate {
    pub fn new(provider: &str, max: u32) -> ProviderGate {
        ProviderGate {
            provider: provider.to_owned(),
            max,
            slots: Arc::new(Semaphore::new(max as usize)),
        }
    }

    /// A slot for one call, held until the permit is dropped; none free
    /// refuses the call at once (waiting would only hold the app's
    /// connection for an upstream that is already slow).
    pub fn enter(&self) -> Result<OwnedSemaphorePermit, LimitExceeded> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| LimitExceeded {
                code: "provider_busy",
                limit: format!(
                    "provider `{}`'s limit of {} calls in flight",
                    self.provider, self.max
                ),
                retry_after: Duration::from_secs(1),
            })
    }
}

/// When each unfinished transaction last had its provider asked by a query.
pub struct QueryPacer {
    interval: Duration,
    asked: DashMap<(String, String), Instant>,
    /// The size at which the next prune runs: doubled past what a prune
    /// leaves, so that many transactions inside their interval cost one
    /// prune per doubling, not one per query.
    prune_at: AtomicUsize,
}

/// How many transactions the pacer remembers before it first forgets those
/// whose interval has passed.
const PACER_PRUNE_AT: usize = 10_000;

impl QueryPacer {
    pub fn new(interval: Duration) -> QueryPacer {
        QueryPacer {
            interval,
            asked: DashMap::new(),
            prune_at: AtomicUsize::new(PACER_PRUNE_AT),
        }
    }

    /// Whether a query may ask the provider now; if so, it is noted as
    /// asked.
    pub fn may_ask(&self, app_id: &str, transaction_ref: &str) -> bool {
        if self.interval.is_zero() {
            return true;
        }
        let now = Instant::now();
        if self.asked.len() >= self.prune_at.load(Ordering::Relaxed) {
            self.asked
                .retain(|_, asked| now.saturating_duration_since(*asked) < self.interval);
            let left = self.asked.len();
            self.prune_at
                .store((left * 2).max(PACER_PRUNE_AT), Ordering::Relaxed);
        }
        let key = (app_id.to_owned(), transaction_ref.to_owned());
        match self.asked.entry(key) {
            Entry::Occupied(mut asked) => {
                if now.saturating_duration_since(*asked.get()) < self.interval {
                    return false;
                }
                asked.insert(now);
            }
            Entry::Vacant(never) => {
                never.insert(now);
            }
        }
        true
    }

    /// The transaction is final: no query will ask about it again.
    pub fn forget(&self, app_id: &str, transaction_ref: &str) {
        if !self.interval.is_zero() {
            self.asked
                .remove(&(app_id.to_owned(), transaction_ref.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_admits_the_burst_then_refuses_with_a_retry_time() {
        let limits = AppLimits::new(&manifold_config::AppLimits {
            requests_per_second: 1,
            burst: 3,
            daily: Default::default(),
        });
        for _ in 0..3 {
            limits.check_rate().unwrap();
        }
        let refused = limits.check_rate().unwrap_err();
        assert_eq!(refused.code, "rate_limited");
        assert!(refused
            .limit
            .contains("1 requests per second (bursts of up to 3)"));
        assert!(refused.retry_after <= Duration::from_secs(1));
        assert_eq!(refused.retry_after_secs(), 1);
    }

    #[test]
    fn the_gate_refuses_once_full_and_frees_on_drop() {
        let gate = ProviderGate::new("slow", 2);
        let a = gate.enter().unwrap();
        let _b = gate.enter().unwrap();
        let refused = gate.enter().unwrap_err();
        assert_eq!(refused.code, "provider_busy");
        assert!(refused.limit.contains("`slow`"));
        drop(a);
        assert!(gate.enter().is_ok());
    }

    #[test]
    fn queries_ask_once_per_interval_and_forget_final_transactions() {
        let pacer = QueryPacer::new(Duration::from_secs(3600));
        assert!(pacer.may_ask("app", "t-1"));
        assert!(!pacer.may_ask("app", "t-1"));
        assert!(pacer.may_ask("app", "t-2"), "per transaction");
        assert!(pacer.may_ask("other", "t-1"), "per app");
        pacer.forget("app", "t-1");
        assert!(pacer.may_ask("app", "t-1"));
        let unpaced = QueryPacer::new(Duration::ZERO);
        assert!(unpaced.may_ask("app", "t-1") && unpaced.may_ask("app", "t-1"));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let exceeded = |retry_after| LimitExceeded {
            code: "rate_limited",
            limit: String::new(),
            retry_after,
        };
        assert_eq!(exceeded(Duration::from_millis(1)).retry_after_secs(), 1);
        assert_eq!(exceeded(Duration::from_millis(1500)).retry_after_secs(), 2);
        assert_eq!(exceeded(Duration::from_secs(2)).retry_after_secs(), 2);
        assert_eq!(exceeded(Duration::ZERO).retry_after_secs(), 1);
    }
}
