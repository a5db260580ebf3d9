//! The `auth.secure` format of Manifold, signed requests and the secret types.
//!
//! Calling apps encrypt the sensitive details of a transaction's source (bank account, card,
//! wallet id, MSISDN; for `/transact/validate` the OTP or answer) with their app secret and send
//! the result as `auth.secure`; the switch opens it here. Apps sign every request with RFC 9421
//! HTTP Message Signatures under a key derived from the same secret, and the switch and remote
//! providers sign the calls between them the same way; signing and verifying are here too. This
//! crate is the only place in the workspace that touches key material: every other crate sees
//! [`SecretString`], [`AppKey`], [`SigningKey`] and the parsed [`SourceDetails`] /
//! [`ValidationInput`], whose `Debug` output is redacted.
//!
//! Both schemes are specified for app developers in any language in `docs/secure.md`, with test
//! vectors in `fixtures/secure/vectors.json` and `fixtures/signatures/vectors.json` and
//! independent Python references in `crypto/interop/` (`manifold_secure.py`,
//! `manifold_signatures.py`).
//!
//! # Layout
//!
//! - [`secret`]: [`SecretString`], a string that zeroizes on drop, compares in constant time and
//!   prints as `[REDACTED]`.
//! - [`key`]: [`AppKey`], the encryption and signature keys derived from an app secret with HKDF,
//!   and [`AppKey::keyed_digest_hex`], the keyed digest the switch's fingerprints use.
//! - [`secure`]: the envelope: [`SecureKind`], [`secure::seal`] and [`secure::open`]
//!   (version byte, nonce, AES-256-GCM with `request_ref|kind` as associated data).
//! - [`plaintext`]: what is inside the envelope: the JSON layout per kind, its field rules, masking,
//!   and [`plaintext::open_source`] / [`plaintext::open_validation`] which open and parse in one step.
//! - [`message_signature`]: RFC 9421 HTTP Message Signatures (`hmac-sha256`) over the method, the
//!   path and an RFC 9530 `Content-Digest` of the body, for app → switch and switch ↔ provider
//!   calls: [`SigningKey`], [`message_signature::sign_request`],
//!   [`message_signature::verify_request`] and [`SignatureError`].
//! - [`at_rest`]: customer data at rest: [`DataKeys`] seal and open the values the switch and
//!   providers store, with XAES-256-GCM (C2SP) under the host's data key, key ids for rotation.
//! - `error`: [`CryptoError`], whose messages never carry plaintext or key bytes.
//!
//! # Example
//!
//! ```
//! use http::HeaderMap;
//! use manifold_crypto::message_signature::{
//!     sign_request, verify_request, ReceivedRequest, SignatureParams, VerifyPolicy,
//! };
//! use manifold_crypto::{plaintext, secure, AppKey, SecretString, SecureKind, SigningKey};
//!
//! let key = AppKey::derive(&SecretString::from("manifold-demo-app-secret-0001-abcdefgh"));
//! // The app seals its source for this request and auth.type...
//! let plaintext = br#"{"account_number": "0123456789", "bank_code": "058"}"#;
//! let secure = secure::seal(&key, "req-0001", SecureKind::BankAccount, plaintext);
//! let body = format!(r#"{{"request_ref": "req-0001", "auth": {{"type": "bank.account", "secure": "{secure}"}}}}"#);
//! // ...signs the request, with its request_ref as the nonce...
//! let params = SignatureParams { key_id: "demo-app", created: 1_700_000_000, nonce: "req-0001" };
//! let mut headers = HeaderMap::new();
//! sign_request(&SigningKey::for_app(&key), "POST", "/transact", body.as_bytes(), &params)
//!     .unwrap()
//!     .apply(&mut headers);
//! // ...and the switch verifies the signature before it parses the body, then opens the source.
//! let request = ReceivedRequest { method: "POST", path: "/transact", headers: &headers, body: body.as_bytes() };
//! let verified = verify_request(
//!     &SigningKey::for_app(&key), "demo-app", &request, &VerifyPolicy::default(), 1_700_000_030,
//! ).unwrap();
//! assert_eq!(verified.nonce, "req-0001");
//! let kind = SecureKind::from_auth_type("bank.account").unwrap();
//! let source = plaintext::open_source(&key, "req-0001", kind, &secure)?;
//! assert_eq!(source.masked(), "******6789");
//! assert!(!format!("{source:?}").contains("0123456789"));
//! # Ok::<(), manifold_crypto::CryptoError>(())
//! ```
//!
//! `manifold seal`, `open` and `sign` (the switch's command line) are thin shells over
//! [`plaintext::seal_checked`], [`secure::open`] and [`message_signature::sign_request`] for app
//! developers; this library has no command line of its own.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod at_rest;
pub mod key;
pub mod message_signature;
pub mod plaintext;
pub mod secret;
pub mod secure;

mod error;

pub use at_rest::{AtRestError, DataKey, DataKeys};
pub use error::CryptoError;
pub use key::{AppKey, MIN_APP_SECRET_LEN};
pub use message_signature::{SignatureError, SigningKey};
pub use plaintext::{
    BankAccount, Card, CustomerToken, Msisdn, SourceDetails, ValidationInput, Wallet,
};
pub use secret::SecretString;
pub use secure::SecureKind;
