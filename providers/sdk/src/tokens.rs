//! [`TokenCache`]: upstream access tokens, fetched once for many callers.
//!
//! Most upstreams a connector wraps want a bearer token: a service user's
//! (one per provider), or a customer's (one per consenting user), that lives
//! from 30 seconds to an hour. Fetching one per call doubles every call and
//! trips the upstream's own limits; fetching one when it expires, from fifty
//! callers at once, makes fifty token requests. The cache does neither:
//! - a token is used until it is within [`TokenCache::new`]'s `margin` of
//!   expiring (a call that starts just before expiry must not arrive just
//!   after it), then replaced;
//! - one refresh per key at a time: callers that find the token stale wait
//!   for the one refresh in progress and use its result (single flight);
//! - an upstream that answers `401` to a token the cache still holds says the
//!   token is dead before its time: [`TokenCache::reject`] marks it stale,
//!   but only if it is still the one cached, so fifty callers rejected
//!   together cause one refresh, not fifty;
//! - the fetch is handed the stale token, if any, so it can use its refresh
//!   token; a failed fetch replaces nothing: the callers that were waiting
//!   for it get its error (not a fetch each, one after another, during an
//!   outage of the token endpoint), and the next caller to arrive tries
//!   again;
//! - a caller cancelled while it fetches (its call timed out) abandons that
//!   fetch, and the next waiting caller starts another: a connector whose
//!   refresh tokens are single-use must be able to fall back to its
//!   original credentials, as the template's does.
//!
//! Keys are whatever identifies whose token it is: `()` for a service user,
//! an app and a customer reference for a customer's. A cache keyed per
//! customer would grow with every customer ever seen, so once it holds
//! [`PRUNE_AT`] keys, adding one first drops every key whose token has gone
//! stale and that no caller is using (the next caller for it fetches afresh,
//! with no stale token: its original credentials, as above); the bound then
//! doubles from what is left, so pruning costs little per key. Tokens are
//! [`SecretString`]s (redacted in `Debug`, zeroized on drop). Time is tokio's
//! clock, so tests pause it and move it instead of sleeping.

use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use manifold_crypto::SecretString;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// A token as the upstream issued it.
#[derive(Debug, Clone)]
pub struct Token {
    pub value: SecretString,
    /// What renews it without the original credentials, where the upstream
    /// issues one (OAuth's `refresh_token`).
    pub refresh: Option<SecretString>,
    /// How long the upstream said it lives, from when it was issued.
    pub lifetime: Duration,
}

#[derive(Debug)]
struct Held {
    token: Token,
    /// When the cache stops handing it out (its expiry less the margin).
    use_until: Instant,
}

/// One key's token, and what its fetches came to.
struct Slot<E> {
    /// Locked across a fetch: that is what makes the refresh single.
    state: Mutex<State<E>>,
    /// Fetches finished so far, read before waiting for the lock: a caller
    /// that finds it moved while it waited knows a fetch ended meanwhile.
    finished: AtomicU64,
}

struct State<E> {
    held: Option<Held>,
    /// The last fetch's error, with its number among the finished ones.
    failure: Option<(u64, E)>,
}

impl<E> Default for Slot<E> {
    fn default() -> Self {
        Slot {
            state: Mutex::new(State {
                held: None,
                failure: None,
            }),
            finished: AtomicU64::new(0),
        }
    }
}

/// How many keys a cache holds before it first drops the stale ones.
pub const PRUNE_AT: usize = 1024;

/// Access tokens by key, with the fetch's error type `E`; see the module
/// documentation.
pub struct TokenCache<K, E> {
    margin: Duration,
    slots: DashMap<K, Arc<Slot<E>>>,
    /// The number of keys at which the next new key prunes first.
    prune_at: AtomicUsize,
}

impl<K: Eq + Hash, E> std::fmt::Debug for TokenCache<K, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("margin", &self.margin)
            .field("keys", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl<K: Eq + Hash + Clone, E: Clone> TokenCache<K, E> {
    /// A cache that stops using a token `margin` before the upstream said it
    /// expires (for a 30-second token, a few seconds).
    pub fn new(margin: Duration) -> Self {
        TokenCache {
            margin,
            slots: DashMap::new(),
            prune_at: AtomicUsize::new(PRUNE_AT),
        }
    }

    /// How many keys the cache holds now.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn slot(&self, key: &K) -> Arc<Slot<E>> {
        if let Some(slot) = self.slots.get(key) {
            return slot.clone();
        }
        if self.slots.len() >= self.prune_at.load(Ordering::Relaxed) {
            self.prune();
        }
        self.slots.entry(key.clone()).or_default().clone()
    }

    /// Drops the keys whose token is stale (or that hold none) and that no
    /// caller holds or is fetching for.
    fn prune(&self) {
        let now = Instant::now();
        self.slots.retain(|_, slot| {
            if Arc::strong_count(slot) > 1 {
                return true;
            }
            match slot.state.try_lock() {
                Ok(state) => state.held.as_ref().is_some_and(|held| now < held.use_until),
                Err(_) => true,
            }
        });
        self.prune_at
            .store((self.slots.len() * 2).max(PRUNE_AT), Ordering::Relaxed);
    }

    /// The token for `key`: the cached one while it is fresh, else the one
    /// `fetch` gets, given the stale token if there is one (called by one
    /// caller at a time per key; the others wait for it and use what it got).
    /// A fetch error is returned to the caller that fetched and to those
    /// that waited for it; the stale token stays for the next fetch.
    pub async fn get<F, Fut>(&self, key: &K, fetch: F) -> Result<SecretString, E>
    where
        F: FnOnce(Option<Token>) -> Fut,
        Fut: Future<Output = Result<Token, E>>,
    {
        let slot = self.slot(key);
        let seen = slot.finished.load(Ordering::Acquire);
        let mut state = slot.state.lock().await;
        if let Some(current) = state.held.as_ref() {
            if Instant::now() < current.use_until {
                return Ok(current.token.value.clone());
            }
        }
        if let Some((number, error)) = &state.failure {
            if *number > seen {
                return Err(error.clone());
            }
        }
        let fetched_at = Instant::now();
        let fetched = fetch(state.held.as_ref().map(|stale| stale.token.clone())).await;
        let number = slot.finished.load(Ordering::Relaxed) + 1;
        slot.finished.store(number, Ordering::Release);
        match fetched {
            Ok(token) => {
                let value = token.value.clone();
                state.held = Some(Held {
                    use_until: fetched_at + token.lifetime.saturating_sub(self.margin),
                    token,
                });
                state.failure = None;
                Ok(value)
            }
            Err(error) => {
                state.failure = Some((number, error.clone()));
                Err(error)
            }
        }
    }

    /// Says the upstream refused `refused` (a `401`): it is stale from now
    /// if it is still the token cached for `key`, so the next
    /// [`TokenCache::get`] fetches a new one (and may use its refresh
    /// token). A token already replaced is left alone.
    pub async fn reject(&self, key: &K, refused: &SecretString) {
        let slot = self.slot(key);
        let mut state = slot.state.lock().await;
        if let Some(current) = state.held.as_mut().filter(|h| &h.token.value == refused) {
            current.use_until = Instant::now();
        }
    }

    /// Forgets `key`'s token (a customer who withdrew consent).
    pub fn forget(&self, key: &K) {
        self.slots.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    type Fetched = std::future::Ready<Result<Token, String>>;

    /// Issues `token-1`, `token-2`, … each with a refresh token naming the
    /// stale token its fetch was handed (`refresh-of-none` for the first).
    fn issuer(
        fetches: &Arc<AtomicUsize>,
        lifetime: Duration,
    ) -> impl Fn(Option<Token>) -> Fetched + '_ {
        move |stale| {
            let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
            let previous = stale.map_or("none".to_owned(), |t| t.value.expose().to_owned());
            std::future::ready(Ok(Token {
                value: SecretString::new(format!("token-{n}")),
                refresh: Some(SecretString::new(format!("refresh-of-{previous}"))),
                lifetime,
            }))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_is_used_until_its_margin_then_replaced() {
        let cache: TokenCache<(), String> = TokenCache::new(Duration::from_secs(5));
        let fetches = Arc::new(AtomicUsize::new(0));
        let fetch = issuer(&fetches, Duration::from_secs(30));
        assert_eq!(cache.get(&(), &fetch).await.unwrap().expose(), "token-1");
        tokio::time::advance(Duration::from_secs(24)).await;
        assert_eq!(cache.get(&(), &fetch).await.unwrap().expose(), "token-1");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(cache.get(&(), &fetch).await.unwrap().expose(), "token-2");
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn stale_keys_are_dropped_once_the_cache_is_large_and_live_ones_kept() {
        let cache: TokenCache<usize, String> = TokenCache::new(Duration::ZERO);
        let fetches = Arc::new(AtomicUsize::new(0));
        let short = issuer(&fetches, Duration::from_secs(10));
        for customer in 0..PRUNE_AT {
            cache.get(&customer, &short).await.unwrap();
        }
        assert_eq!(cache.len(), PRUNE_AT);
        // Every token so far goes stale; one customer gets a long-lived one.
        tokio::time::advance(Duration::from_secs(11)).await;
        let long = issuer(&fetches, Duration::from_secs(3600));
        let kept = cache.get(&0, &long).await.unwrap();
        // A new customer: the stale ones go, the live one stays.
        cache.get(&PRUNE_AT, &long).await.unwrap();
        assert_eq!(cache.len(), 2);
        let before = fetches.load(Ordering::SeqCst);
        assert_eq!(cache.get(&0, &long).await.unwrap(), kept);
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            before,
            "no fetch for a kept key"
        );
        // Pruning does not run again until the cache has grown back.
        for customer in PRUNE_AT + 1..PRUNE_AT + 100 {
            cache.get(&customer, &short).await.unwrap();
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        cache.get(&(PRUNE_AT + 100), &short).await.unwrap();
        assert_eq!(cache.len(), 102, "below the bound: nothing dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn keys_have_tokens_of_their_own_and_a_failed_fetch_is_not_kept() {
        let cache: TokenCache<_, String> = TokenCache::new(Duration::ZERO);
        let fetches = Arc::new(AtomicUsize::new(0));
        let fetch = issuer(&fetches, Duration::from_secs(60));
        let alice = cache.get(&"alice", &fetch).await.unwrap();
        let bob = cache.get(&"bob", &fetch).await.unwrap();
        assert_ne!(alice, bob);
        cache.forget(&"alice");
        let failed: Result<SecretString, String> = cache
            .get(&"alice", |_| async { Err("upstream down".to_owned()) })
            .await;
        assert_eq!(failed.unwrap_err(), "upstream down");
        assert_eq!(
            cache.get(&"alice", &fetch).await.unwrap().expose(),
            "token-3"
        );
        assert_eq!(cache.get(&"bob", &fetch).await.unwrap(), bob);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejected_token_is_refreshed_once_and_a_replaced_one_is_kept() {
        let cache: TokenCache<_, String> = TokenCache::new(Duration::ZERO);
        let fetches = Arc::new(AtomicUsize::new(0));
        let fetch = issuer(&fetches, Duration::from_secs(60));
        let first = cache.get(&(), &fetch).await.unwrap();
        cache.reject(&(), &first).await;
        // The fetch is handed the rejected token, for its refresh token.
        let second = cache
            .get(&(), |stale: Option<Token>| {
                let stale = stale.expect("the rejected token is handed over");
                assert_eq!(stale.value, first);
                assert_eq!(stale.refresh.as_ref().unwrap().expose(), "refresh-of-none");
                fetch(Some(stale))
            })
            .await
            .unwrap();
        assert_eq!(second.expose(), "token-2");
        // A caller that was refused with the first token, late: no effect.
        cache.reject(&(), &first).await;
        assert_eq!(cache.get(&(), &fetch).await.unwrap(), second);
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn fifty_callers_with_a_stale_token_cause_one_fetch() {
        let cache: Arc<TokenCache<(), String>> = Arc::new(TokenCache::new(Duration::from_secs(5)));
        let fetches = Arc::new(AtomicUsize::new(0));
        let fetch = |fetches: Arc<AtomicUsize>| async move {
            // The token request takes a while, long enough for every caller
            // to arrive while it is in flight.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
            Ok::<_, String>(Token {
                value: SecretString::new(format!("token-{n}")),
                refresh: None,
                lifetime: Duration::from_secs(30),
            })
        };
        cache.get(&(), |_| fetch(fetches.clone())).await.unwrap();
        tokio::time::advance(Duration::from_secs(26)).await;
        let callers: Vec<_> = (0..50)
            .map(|_| {
                let cache = cache.clone();
                let fetches = fetches.clone();
                tokio::spawn(async move { cache.get(&(), |_| fetch(fetches)).await })
            })
            .collect();
        for caller in callers {
            assert_eq!(caller.await.unwrap().unwrap().expose(), "token-2");
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn callers_waiting_for_a_failed_fetch_share_its_error() {
        let cache: Arc<TokenCache<(), String>> = Arc::new(TokenCache::new(Duration::ZERO));
        let fetches = Arc::new(AtomicUsize::new(0));
        let failing = |fetches: Arc<AtomicUsize>| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            fetches.fetch_add(1, Ordering::SeqCst);
            Err::<Token, _>("the token endpoint is down".to_owned())
        };
        let started = Instant::now();
        let callers: Vec<_> = (0..10)
            .map(|_| {
                let (cache, fetches) = (cache.clone(), fetches.clone());
                tokio::spawn(async move { cache.get(&(), |_| failing(fetches)).await })
            })
            .collect();
        for caller in callers {
            assert_eq!(
                caller.await.unwrap().unwrap_err(),
                "the token endpoint is down"
            );
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "one fetch for all ten");
        assert!(started.elapsed() < Duration::from_secs(2));
        // A caller that comes later tries again.
        let fetch = issuer(&fetches, Duration::from_secs(60));
        assert_eq!(cache.get(&(), &fetch).await.unwrap().expose(), "token-2");
    }

    #[test]
    fn tokens_are_not_printed() {
        let token = Token {
            value: SecretString::new("very-secret-bearer"),
            refresh: Some(SecretString::new("very-secret-refresh")),
            lifetime: Duration::from_secs(30),
        };
        let cache: TokenCache<(), String> = TokenCache::new(Duration::ZERO);
        let printed = format!("{token:?} {cache:?}");
        assert!(!printed.contains("very-secret"), "{printed}");
    }
}
