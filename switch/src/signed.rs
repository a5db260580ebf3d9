//! The proof that a call's body is the app's: RFC 9421 signatures on app calls.
//!
//! An app signs `@method`, `@path`, the RFC 9530 `Content-Digest` of the exact
//! body bytes, `created` and `nonce` = the body's `request_ref`, under the
//! signature key derived from its secret, with `keyid` = its app id
//! (`docs/secure.md`). [`VerifiedCall::verify`] checks all of that before a
//! byte of the body is parsed, and is the only way to make a [`VerifiedCall`]:
//! the engine's operations take one, so no request path can reach the engine
//! with a body whose signature was not checked. Once the engine has parsed the
//! body it calls [`VerifiedCall::check_request_ref`], which binds the
//! signature to that `request_ref`.
//!
//! What this buys, with idempotency: a captured request replayed inside the
//! window is the same `request_ref` with the same body, answered from storage
//! (a query reads the same transaction again); any other body, path or app
//! under a captured signature is refused; so is a signature older or newer
//! than the window.

use std::sync::Arc;

use manifold_crypto::message_signature::VerifiedSignature;
use manifold_edge::signature::{unix_now, ReplayGuard, SignatureCheck, SignedParts};

use crate::apps::App;
use crate::error::SwitchError;

/// An authenticated app's call whose signature, if it carried one (or had to),
/// was verified against its body.
pub struct VerifiedCall {
    app: Arc<App>,
    body: bytes::Bytes,
    signature: Option<Signed>,
    spent: Arc<SpentSignatures>,
}

/// A verified signature, and the key its bytes are remembered under if the
/// call turns out to be spent.
struct Signed {
    verified: VerifiedSignature,
    spent_key: String,
}

impl std::fmt::Debug for VerifiedCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The body holds customer details; its length is enough for a log.
        f.debug_struct("VerifiedCall")
            .field("app", &self.app.id())
            .field("body_bytes", &self.body.len())
            .field("signature", &self.signature.as_ref().map(|s| &s.verified))
            .finish()
    }
}

/// Signed app calls that ended with nothing done and nothing stored: the
/// provider could not be reached, or refused the call unread, and the switch
/// forgot the claim so the app may retry.
///
/// Idempotency cannot answer a replay of such a call (there is no stored
/// answer), so without this a captured request could be sent again, inside
/// its window, once the provider is back — after the app was told "nothing
/// was done" and may have paid another way. Each spent signature is
/// remembered, by app, `request_ref`, `created` and body digest, until it is
/// stale; the app's own retry is signed anew (a later `created`, or a body
/// with a freshly sealed `auth.secure`) and goes through.
///
/// Held in memory: sled is single-process. A shared store (several
/// switches) must keep these beside its claims.
pub struct SpentSignatures {
    guard: ReplayGuard,
    max_skew_secs: u64,
}

impl SpentSignatures {
    /// At most this many spent signatures are remembered; past it, a spent
    /// signature is logged and not remembered (the provider-unreachable
    /// answer is already sent).
    pub const CAPACITY: usize = 100_000;

    pub fn new(check: &SignatureCheck) -> SpentSignatures {
        SpentSignatures {
            guard: ReplayGuard::new(SpentSignatures::CAPACITY),
            max_skew_secs: check.max_skew_secs(),
        }
    }

    /// What identifies the exact signed bytes: the nonce (`request_ref`),
    /// the signing time and the body's `Content-Digest` (a re-sealed
    /// `auth.secure` makes a new body, so an app's retry never collides with
    /// its first attempt). The header is covered by the signature and was
    /// checked against the body, so it stands for the body without hashing
    /// it again.
    fn key(signature: &VerifiedSignature, headers: &http::HeaderMap) -> String {
        let digest = headers
            .get("content-digest")
            .map(|value| String::from_utf8_lossy(value.as_bytes()))
            .unwrap_or_default();
        format!("{}\n{}\n{digest}", signature.nonce, signature.created)
    }
}

impl VerifiedCall {
    /// Verifies the call's signature under `app`'s key. A call with neither
    /// signature header is accepted unsigned only when the host set
    /// `require_signature = false` for the app; one that carries a signature
    /// always has it checked.
    pub fn verify(
        app: Arc<App>,
        method: &str,
        path: &str,
        headers: &http::HeaderMap,
        body: bytes::Bytes,
        check: &SignatureCheck,
        spent: &Arc<SpentSignatures>,
    ) -> Result<VerifiedCall, SwitchError> {
        let request = SignedParts {
            method,
            path,
            headers,
            body: &body,
        };
        let signed = headers.contains_key("signature") || headers.contains_key("signature-input");
        let signature = if signed {
            // App calls are checked without a replay guard: their nonce is
            // the request_ref, which idempotency binds (check_request_ref).
            let verified = check
                .verify_signature(&app.signing_key, app.id(), request)
                .map_err(SwitchError::BadSignature)?;
            let spent_key = SpentSignatures::key(&verified, headers);
            if spent.guard.contains(app.id(), &spent_key, unix_now()) {
                return Err(SwitchError::SignatureSpent);
            }
            Some(Signed {
                verified,
                spent_key,
            })
        } else if app.config.require_signature {
            return Err(SwitchError::SignatureRequired);
        } else {
            None
        };
        Ok(VerifiedCall {
            app,
            body,
            signature,
            spent: spent.clone(),
        })
    }

    /// Records that this call ends with nothing done and nothing stored, so
    /// the same signed bytes are refused from now until they are stale.
    /// Called before the claim is forgotten, so no replay slips in between.
    pub fn mark_spent(&self) {
        let Some(signed) = &self.signature else {
            return;
        };
        let stale_after = signed
            .verified
            .created
            .saturating_add(self.spent.max_skew_secs);
        if let Err(error) =
            self.spent
                .guard
                .remember(self.app.id(), &signed.spent_key, stale_after, unix_now())
        {
            tracing::warn!(app = self.app.id(), %error, "a spent signature could not be remembered");
        }
    }

    pub fn app(&self) -> &App {
        &self.app
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The signature's nonce must be the `request_ref` the body carries, so a
    /// signature is for one call only.
    pub fn check_request_ref(&self, request_ref: &str) -> Result<(), SwitchError> {
        match &self.signature {
            Some(signed) if signed.verified.nonce != request_ref => {
                Err(SwitchError::SignatureNonceMismatch)
            }
            _ => Ok(()),
        }
    }
}
