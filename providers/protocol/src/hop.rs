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
//! - [`HopVerifier`] checks one before its body is parsed with the edge's
//!   [`SignatureCheck`], which remembers each nonce until its signature has
//!   gone stale, so a captured call replayed inside the window is refused too.
//!
//! App calls need no replay guard: their nonce is the `request_ref`, which
//! the switch's idempotency already answers from storage.

use std::time::Duration;

use http::HeaderMap;
use manifold_crypto::message_signature::{
    sign_request, SignatureError, SignatureParams, SignedHeaders, SigningKey, VerifiedSignature,
};
use manifold_crypto::SecretString;
use manifold_edge::signature::{
    unix_now, SignatureCheck, SignatureRejected, SignedParts, DEFAULT_REPLAY_CAPACITY,
};
use rand::RngCore;

/// How far apart the two ends' clocks may be, by default. Switch and
/// providers are the host's own machines, so this is tighter than the app
/// window, and it bounds how long each nonce is remembered.
pub const DEFAULT_HOP_MAX_SKEW: Duration = Duration::from_secs(60);

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
        // A nonce only has to be unpredictable and never repeat: rand's
        // thread-local CSPRNG, without a system call per provider call.
        rand::thread_rng().fill_bytes(&mut nonce);
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

/// Checks incoming calls on one provider hop: the edge's
/// [`SignatureCheck`] with a replay guard, under the hop's key and key id.
pub struct HopVerifier {
    key: SigningKey,
    key_id: String,
    check: SignatureCheck,
}

impl std::fmt::Debug for HopVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HopVerifier")
            .field("key_id", &self.key_id)
            .field("max_skew_secs", &self.check.max_skew_secs())
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
            check: SignatureCheck::with_replay_guard(max_skew, replay_capacity),
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
    ) -> Result<VerifiedSignature, SignatureRejected> {
        self.check.verify(
            &self.key,
            &self.key_id,
            SignedParts {
                method,
                path,
                headers,
                body,
            },
        )
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
        assert!(matches!(replay, SignatureRejected::Replayed), "{replay}");
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
            assert!(matches!(error, SignatureRejected::Signature(_)), "{error}");
        }
        let error = verifier
            .verify("POST", "/transact", &HeaderMap::new(), body)
            .unwrap_err();
        assert!(matches!(
            error,
            SignatureRejected::Signature(SignatureError::Missing)
        ));
    }
}
