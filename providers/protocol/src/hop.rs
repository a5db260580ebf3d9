//! Signatures on the provider hop, both ways.
//!
//! The switch sends decrypted card and account details to provider
//! microservices, and providers move money on the switch's word; providers in
//! turn ask the switch to text and e-mail customers. Neither side may take a
//! stranger's call for the other's. Every such call is signed with RFC 9421
//! HTTP Message Signatures (`docs/secure.md`), exactly as apps sign theirs,
//! under a key derived from the secret the host configured for that provider
//! (`[[providers]] secret`), with the provider's `key_id`:
//!
//! - [`HopSigner`] signs a request: `@method`, `@path`, the body's
//!   `Content-Digest`, `created` now, and a fresh random `nonce`;
//! - [`HopVerifier`] checks one before its body is parsed, and remembers each
//!   nonce until its signature has gone stale, so a captured call replayed
//!   inside the window is refused too ([`ReplayGuard`]).
//!
//! App calls need no replay guard: their nonce is the `request_ref`, which
//! the switch's idempotency already answers from storage.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use http::HeaderMap;
use manifold_crypto::message_signature::{
    sign_request, verify_request, ReceivedRequest, SignatureError, SignatureParams, SignedHeaders,
    SigningKey, VerifiedSignature, VerifyPolicy,
};
use manifold_crypto::SecretString;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// How far apart the two ends' clocks may be, by default. Switch and
/// providers are the host's own machines, so this is tighter than the app
/// window, and it bounds how long each nonce is remembered.
pub const DEFAULT_HOP_MAX_SKEW: Duration = Duration::from_secs(60);

/// How many nonces a verifier remembers at most, by default: with the default
/// skew, sustained rates up to about 8,000 signed calls per second.
pub const DEFAULT_REPLAY_CAPACITY: usize = 1_000_000;

/// Seconds since the Unix epoch, as signatures state time.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// Signs outgoing calls on one provider hop.
#[derive(Clone)]
pub struct HopSigner {
    key: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for HopSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HopSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl HopSigner {
    pub fn new(secret: &SecretString, key_id: impl Into<String>) -> HopSigner {
        HopSigner {
            key: SigningKey::for_provider_hop(secret),
            key_id: key_id.into(),
        }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The headers for a `method` request to `path` carrying `body`.
    pub fn sign(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<SignedHeaders, SignatureError> {
        let mut nonce = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let nonce = hex::encode(nonce);
        sign_request(
            &self.key,
            method,
            path,
            body,
            &SignatureParams {
                key_id: &self.key_id,
                created: unix_now(),
                nonce: &nonce,
            },
        )
    }
}

/// Why a call on the provider hop was refused.
#[derive(Debug, thiserror::Error)]
pub enum HopError {
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

impl HopError {
    /// Whether the caller proved nothing (a 401), as opposed to this side
    /// being too busy to check (a 503).
    pub fn is_unauthenticated(&self) -> bool {
        !matches!(self, HopError::ReplayGuardFull)
    }
}

/// Checks incoming calls on one provider hop.
pub struct HopVerifier {
    key: SigningKey,
    key_id: String,
    policy: VerifyPolicy,
    replay: ReplayGuard,
}

impl std::fmt::Debug for HopVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HopVerifier")
            .field("key_id", &self.key_id)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl HopVerifier {
    pub fn new(
        secret: &SecretString,
        key_id: impl Into<String>,
        max_skew: Duration,
    ) -> HopVerifier {
        HopVerifier::with_capacity(secret, key_id, max_skew, DEFAULT_REPLAY_CAPACITY)
    }

    pub fn with_capacity(
        secret: &SecretString,
        key_id: impl Into<String>,
        max_skew: Duration,
        replay_capacity: usize,
    ) -> HopVerifier {
        HopVerifier {
            key: SigningKey::for_provider_hop(secret),
            key_id: key_id.into(),
            policy: VerifyPolicy {
                max_skew_secs: max_skew.as_secs(),
            },
            replay: ReplayGuard::new(replay_capacity),
        }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Verifies the signature, then records its nonce; only a request that
    /// passes both may be acted on.
    pub fn verify(
        &self,
        method: &str,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<VerifiedSignature, HopError> {
        let now = unix_now();
        let verified = verify_request(
            &self.key,
            &self.key_id,
            &ReceivedRequest {
                method,
                path,
                headers,
                body,
            },
            &self.policy,
            now,
        )?;
        // Only authentic requests reach the guard, so a stranger cannot
        // fill it. A nonce is kept until its `created` leaves the window.
        let stale_after = verified.created.saturating_add(self.policy.max_skew_secs);
        self.replay
            .remember(&self.key_id, &verified.nonce, stale_after, now)?;
        Ok(verified)
    }
}

/// Nonces seen on signed requests, each kept until the request it came with
/// would be refused as stale anyway. Memory is bounded by `capacity` entries
/// of 24 bytes each (a 128-bit digest of key id and nonce, and an expiry).
pub struct ReplayGuard {
    seen: DashMap<u128, u64>,
    capacity: usize,
}

impl ReplayGuard {
    pub fn new(capacity: usize) -> ReplayGuard {
        ReplayGuard {
            seen: DashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records `nonce` for `key_id` until `stale_after` (unix seconds);
    /// refuses a nonce already recorded and not yet stale.
    pub fn remember(
        &self,
        key_id: &str,
        nonce: &str,
        stale_after: u64,
        now: u64,
    ) -> Result<(), HopError> {
        if self.seen.len() >= self.capacity {
            self.seen.retain(|_, expires| *expires >= now);
            if self.seen.len() >= self.capacity {
                return Err(HopError::ReplayGuardFull);
            }
        }
        let mut digest = Sha256::new();
        digest.update((key_id.len() as u64).to_be_bytes());
        digest.update(key_id.as_bytes());
        digest.update(nonce.as_bytes());
        let digest = digest.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        let id = u128::from_be_bytes(id);
        match self.seen.entry(id) {
            dashmap::Entry::Occupied(mut entry) => {
                if *entry.get() >= now {
                    return Err(HopError::Replayed);
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
    use super::*;

    fn secret() -> SecretString {
        SecretString::from("provider-hop-secret-0123456789-abcdef")
    }

    #[test]
    fn a_signed_call_passes_once_and_its_replay_is_refused() {
        let signer = HopSigner::new(&secret(), "bank-a");
        let verifier = HopVerifier::new(&secret(), "bank-a", DEFAULT_HOP_MAX_SKEW);
        let body = br#"{"app_id":"a"}"#;
        let mut headers = HeaderMap::new();
        signer
            .sign("POST", "/transact", body)
            .unwrap()
            .apply(&mut headers);
        verifier
            .verify("POST", "/transact", &headers, body)
            .unwrap();
        let replay = verifier
            .verify("POST", "/transact", &headers, body)
            .unwrap_err();
        assert!(matches!(replay, HopError::Replayed), "{replay}");
        assert!(replay.is_unauthenticated());
    }

    #[test]
    fn another_key_or_key_id_is_refused_and_not_remembered() {
        let verifier = HopVerifier::new(&secret(), "bank-a", DEFAULT_HOP_MAX_SKEW);
        let body = b"{}";
        for signer in [
            HopSigner::new(
                &SecretString::from("another-hop-secret-0123456789-abcdef"),
                "bank-a",
            ),
            HopSigner::new(&secret(), "bank-b"),
        ] {
            let mut headers = HeaderMap::new();
            signer
                .sign("POST", "/transact", body)
                .unwrap()
                .apply(&mut headers);
            let error = verifier
                .verify("POST", "/transact", &headers, body)
                .unwrap_err();
            assert!(matches!(error, HopError::Signature(_)), "{error}");
        }
        assert!(verifier.replay.is_empty());
        let error = verifier
            .verify("POST", "/transact", &HeaderMap::new(), body)
            .unwrap_err();
        assert!(matches!(
            error,
            HopError::Signature(SignatureError::Missing)
        ));
    }

    #[test]
    fn the_guard_forgets_stale_nonces_and_fails_closed_when_full() {
        let guard = ReplayGuard::new(2);
        guard.remember("k", "n1", 100, 50).unwrap();
        assert!(matches!(
            guard.remember("k", "n1", 100, 60),
            Err(HopError::Replayed)
        ));
        // The same nonce under another key id is another request.
        guard.remember("k2", "n1", 100, 60).unwrap();
        assert!(matches!(
            guard.remember("k", "n2", 100, 60),
            Err(HopError::ReplayGuardFull)
        ));
        // Once the first two are stale they make room, and a stale nonce may
        // be seen again (its signature would be refused as stale anyway).
        guard.remember("k", "n2", 300, 101).unwrap();
        guard.remember("k", "n1", 300, 101).unwrap();
        assert_eq!(guard.len(), 2);
    }
}
