//! Checking signed requests where they arrive.
//!
//! Every call between Manifold's processes is signed with RFC 9421 HTTP
//! Message Signatures: app → switch, switch → provider, provider → switch
//! (`docs/secure.md`). `manifold_crypto::message_signature` holds the
//! primitives; this module is what every receiver does with them, the same
//! way: one clock, one window (`created` within ± the receiver's skew), the
//! signature checked against the exact body bytes *before* the body is
//! parsed, and — where nothing else binds the nonce to stored state — a
//! [`ReplayGuard`] that refuses a nonce seen while its signature is fresh.
//!
//! App calls need no guard: their nonce is the body's `request_ref`, which the
//! switch's idempotency answers from storage. Calls on the provider hop carry
//! a random nonce and are guarded ([`SignatureCheck::with_replay_guard`]).
//! Which key to check with is the caller's knowledge (the app the bearer key
//! named, the provider a `keyid` names), so it is passed to each check.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use http::HeaderMap;
use manifold_crypto::message_signature::{
    verify_request, ReceivedRequest, SignatureError, SigningKey, VerifiedSignature, VerifyPolicy,
};
use sha2::{Digest, Sha256};

/// Seconds since the Unix epoch, as signatures state time.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// How many nonces a guard remembers at most, by default: with a 60-second
/// skew, sustained rates up to about 8,000 signed calls per second.
pub const DEFAULT_REPLAY_CAPACITY: usize = 1_000_000;

/// Why a signed request was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignatureRejected {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("this signed request was already received (nonce seen before)")]
    Replayed,
    /// Fail closed: a nonce that cannot be remembered could be replayed.
    #[error(
        "too many signed requests in the signature window to guard against replay; retry shortly"
    )]
    ReplayGuardFull,
}

impl SignatureRejected {
    /// Whether the caller proved nothing (answer 401), as opposed to this
    /// side being too busy to check (503).
    pub fn is_unauthenticated(&self) -> bool {
        !matches!(self, SignatureRejected::ReplayGuardFull)
    }
}

/// A request as the check needs it: what the signature covers.
#[derive(Debug, Clone, Copy)]
pub struct SignedParts<'a> {
    pub method: &'a str,
    /// The path without the query, as received.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// The body exactly as received.
    pub body: &'a [u8],
}

/// A receiver's rules for signed requests.
#[derive(Debug)]
pub struct SignatureCheck {
    policy: VerifyPolicy,
    replay: Option<ReplayGuard>,
}

impl SignatureCheck {
    /// Signatures whose `created` is within `max_skew` of this clock; nonces
    /// are the caller's to bind (as `request_ref` is bound by idempotency).
    pub fn new(max_skew: Duration) -> SignatureCheck {
        SignatureCheck {
            policy: VerifyPolicy {
                max_skew_secs: max_skew.as_secs(),
            },
            replay: None,
        }
    }

    /// As [`SignatureCheck::new`], refusing a nonce seen before while its
    /// signature is fresh; at most `capacity` nonces are remembered.
    pub fn with_replay_guard(max_skew: Duration, capacity: usize) -> SignatureCheck {
        SignatureCheck {
            replay: Some(ReplayGuard::new(capacity)),
            ..SignatureCheck::new(max_skew)
        }
    }

    pub fn max_skew_secs(&self) -> u64 {
        self.policy.max_skew_secs
    }

    /// Verifies `request`'s signature under `key`, which must be `key_id`'s,
    /// then (with a guard) records its nonce. Only a request that passes both
    /// may be acted on.
    pub fn verify(
        &self,
        key: &SigningKey,
        key_id: &str,
        request: SignedParts<'_>,
    ) -> Result<VerifiedSignature, SignatureRejected> {
        let now = unix_now();
        let verified = self.verify_at(key, key_id, request, now)?;
        if let Some(replay) = &self.replay {
            // Only authentic requests reach the guard, so a stranger cannot
            // fill it. A nonce is kept until its `created` leaves the window.
            let stale_after = verified.created.saturating_add(self.policy.max_skew_secs);
            replay.remember(key_id, &verified.nonce, stale_after, now)?;
        }
        Ok(verified)
    }

    /// Verifies the signature only, leaving the nonce to the caller: for
    /// requests whose nonce stored state binds (an app's `request_ref`).
    pub fn verify_signature(
        &self,
        key: &SigningKey,
        key_id: &str,
        request: SignedParts<'_>,
    ) -> Result<VerifiedSignature, SignatureError> {
        self.verify_at(key, key_id, request, unix_now())
    }

    fn verify_at(
        &self,
        key: &SigningKey,
        key_id: &str,
        request: SignedParts<'_>,
        now: u64,
    ) -> Result<VerifiedSignature, SignatureError> {
        verify_request(
            key,
            key_id,
            &ReceivedRequest {
                method: request.method,
                path: request.path,
                headers: request.headers,
                body: request.body,
            },
            &self.policy,
            now,
        )
    }
}

/// Nonces seen on signed requests, each kept until the request it came with
/// would be refused as stale anyway.
///
/// Memory is bounded by `capacity` entries: a 128-bit digest of key id and
/// nonce and a 64-bit expiry, about 50–70 bytes each once the map's own
/// overhead is counted (so some 60 MB for the default million). When it is
/// full of fresh nonces it refuses new ones (fail closed); stale entries are
/// swept out at most once a second, so a full guard costs no scan per call.
#[derive(Debug)]
pub struct ReplayGuard {
    seen: DashMap<u128, u64>,
    capacity: usize,
    /// Unix second of the last sweep, so a full guard sweeps once a second.
    last_sweep: AtomicU64,
}

impl ReplayGuard {
    pub fn new(capacity: usize) -> ReplayGuard {
        ReplayGuard {
            seen: DashMap::new(),
            capacity: capacity.max(1),
            last_sweep: AtomicU64::new(0),
        }
    }

    fn id(key_id: &str, nonce: &str) -> u128 {
        let mut digest = Sha256::new();
        digest.update((key_id.len() as u64).to_be_bytes());
        digest.update(key_id.as_bytes());
        digest.update(nonce.as_bytes());
        let digest = digest.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        u128::from_be_bytes(id)
    }

    /// Whether `nonce` for `key_id` was recorded and is not stale at `now`.
    pub fn contains(&self, key_id: &str, nonce: &str, now: u64) -> bool {
        self.seen
            .get(&ReplayGuard::id(key_id, nonce))
            .is_some_and(|expires| *expires >= now)
    }

    /// Records `nonce` for `key_id` until `stale_after` (unix seconds);
    /// refuses a nonce already recorded and not yet stale.
    pub fn remember(
        &self,
        key_id: &str,
        nonce: &str,
        stale_after: u64,
        now: u64,
    ) -> Result<(), SignatureRejected> {
        if self.seen.len() >= self.capacity {
            let last = self.last_sweep.swap(now, Ordering::Relaxed);
            if last < now {
                self.seen.retain(|_, expires| *expires >= now);
            }
            if self.seen.len() >= self.capacity {
                return Err(SignatureRejected::ReplayGuardFull);
            }
        }
        match self.seen.entry(ReplayGuard::id(key_id, nonce)) {
            dashmap::Entry::Occupied(mut entry) => {
                if *entry.get() >= now {
                    return Err(SignatureRejected::Replayed);
                }
                entry.insert(stale_after);
            }
            dashmap::Entry::Vacant(entry) => {
                entry.insert(stale_after);
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use manifold_crypto::message_signature::{sign_request, SignatureParams};
    use manifold_crypto::SecretString;

    use super::*;

    fn key(secret: &str) -> SigningKey {
        SigningKey::for_provider_hop(&SecretString::from(secret))
    }

    fn signed(key: &SigningKey, key_id: &str, nonce: &str, body: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        sign_request(
            key,
            "POST",
            "/transact",
            body,
            &SignatureParams {
                key_id,
                created: unix_now(),
                nonce,
            },
        )
        .unwrap()
        .apply(&mut headers);
        headers
    }

    fn parts<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> SignedParts<'a> {
        SignedParts {
            method: "POST",
            path: "/transact",
            headers,
            body,
        }
    }

    #[test]
    fn with_a_guard_a_signed_call_passes_once() {
        let secret = "provider-hop-secret-0123456789-abcdef";
        let check = SignatureCheck::with_replay_guard(Duration::from_secs(60), 10);
        let headers = signed(&key(secret), "bank", "n-1", b"{}");
        check
            .verify(&key(secret), "bank", parts(&headers, b"{}"))
            .unwrap();
        let replay = check
            .verify(&key(secret), "bank", parts(&headers, b"{}"))
            .unwrap_err();
        assert!(matches!(replay, SignatureRejected::Replayed), "{replay}");
        assert!(replay.is_unauthenticated());
        // Without a guard, binding the nonce is the caller's job.
        let unguarded = SignatureCheck::new(Duration::from_secs(60));
        for _ in 0..2 {
            unguarded
                .verify(&key(secret), "bank", parts(&headers, b"{}"))
                .unwrap();
        }
    }

    #[test]
    fn a_refused_signature_is_not_remembered() {
        let check = SignatureCheck::with_replay_guard(Duration::from_secs(60), 10);
        let good = key("provider-hop-secret-0123456789-abcdef");
        for (signer, key_id) in [
            (key("another-hop-secret-0123456789-abcdef"), "bank"),
            (key("provider-hop-secret-0123456789-abcdef"), "other"),
        ] {
            let headers = signed(&signer, key_id, "n-1", b"{}");
            let error = check
                .verify(&good, "bank", parts(&headers, b"{}"))
                .unwrap_err();
            assert!(matches!(error, SignatureRejected::Signature(_)), "{error}");
        }
        assert!(check.replay.as_ref().unwrap().is_empty());
        let error = check
            .verify(&good, "bank", parts(&HeaderMap::new(), b"{}"))
            .unwrap_err();
        assert!(matches!(
            error,
            SignatureRejected::Signature(SignatureError::Missing)
        ));
    }

    #[test]
    fn the_guard_forgets_stale_nonces_and_fails_closed_when_full() {
        let guard = ReplayGuard::new(2);
        guard.remember("k", "n1", 100, 50).unwrap();
        assert!(matches!(
            guard.remember("k", "n1", 100, 60),
            Err(SignatureRejected::Replayed)
        ));
        // The same nonce under another key id is another request.
        guard.remember("k2", "n1", 100, 60).unwrap();
        assert!(matches!(
            guard.remember("k", "n2", 100, 60),
            Err(SignatureRejected::ReplayGuardFull)
        ));
        // A full guard sweeps at most once a second: within the same second
        // it refuses without scanning again.
        assert!(matches!(
            guard.remember("k", "n2", 100, 60),
            Err(SignatureRejected::ReplayGuardFull)
        ));
        assert!(guard.contains("k", "n1", 100) && !guard.contains("k", "n1", 101));
        // Once the first two are stale they make room, and a stale nonce may
        // be seen again (its signature would be refused as stale anyway).
        guard.remember("k", "n2", 300, 101).unwrap();
        guard.remember("k", "n1", 300, 101).unwrap();
        assert_eq!(guard.len(), 2);
    }
}
