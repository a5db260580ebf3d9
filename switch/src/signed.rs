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
use manifold_edge::signature::{SignatureCheck, SignedParts};

use crate::apps::App;
use crate::error::SwitchError;

/// An authenticated app's call whose signature, if it carried one (or had to),
/// was verified against its body.
#[derive(Debug)]
pub struct VerifiedCall {
    app: Arc<App>,
    body: bytes::Bytes,
    signature: Option<VerifiedSignature>,
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
            Some(verified)
        } else if app.config.require_signature {
            return Err(SwitchError::SignatureRequired);
        } else {
            None
        };
        Ok(VerifiedCall {
            app,
            body,
            signature,
        })
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
            Some(signature) if signature.nonce != request_ref => {
                Err(SwitchError::SignatureNonceMismatch)
            }
            _ => Ok(()),
        }
    }
}
