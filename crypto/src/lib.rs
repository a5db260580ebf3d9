//! The `auth.secure` format of Manifold, request signatures and the secret types.
//!
//! Calling apps encrypt the sensitive details of a transaction's source (bank account, card,
//! wallet id, MSISDN; for `/transact/validate` the OTP or answer) with their app secret and send
//! the result as `auth.secure`; the switch opens it here. This crate is the only place in the
//! workspace that touches key material: every other crate sees [`SecretString`], [`AppKey`] and
//! the parsed [`SourceDetails`] / [`ValidationInput`], whose `Debug` output is redacted.
//!
//! The scheme is specified for app developers in any language in `docs/secure.md`, with test
//! vectors in `fixtures/secure/vectors.json` and an independent Python reference in
//! `crypto/interop/manifold_secure.py`.
//!
//! # Layout
//!
//! - [`secret`]: [`SecretString`], a string that zeroizes on drop, compares in constant time and
//!   prints as `[REDACTED]`.
//! - [`key`]: [`AppKey`], the encryption and signature keys derived from an app secret with HKDF.
//! - [`secure`]: the envelope: [`SecureKind`], [`secure::seal`] and [`secure::open`]
//!   (version byte, nonce, AES-256-GCM with `request_ref|kind` as associated data).
//! - [`plaintext`]: what is inside the envelope: the JSON layout per kind, its field rules, masking,
//!   and [`plaintext::open_source`] / [`plaintext::open_validation`] which open and parse in one step.
//! - [`signature`]: the optional `Signature` header, an HMAC of `request_ref` (being replaced by
//!   [`message_signature`]).
//! - [`message_signature`]: RFC 9421 HTTP Message Signatures (`hmac-sha256`) over the method, the
//!   path and an RFC 9530 `Content-Digest` of the body, for app → switch and switch ↔ provider
//!   calls: [`SigningKey`], [`message_signature::sign_request`],
//!   [`message_signature::verify_request`] and [`SignatureError`].
//! - `error`: [`CryptoError`], whose messages never carry plaintext or key bytes.
//!
//! # Example
//!
//! ```
//! use manifold_crypto::{plaintext, secure, signature, AppKey, SecretString, SecureKind};
//!
//! let key = AppKey::derive(&SecretString::from("manifold-demo-app-secret-0001-abcdefgh"));
//! // The app seals its source for this request and auth.type...
//! let plaintext = br#"{"account_number": "0123456789", "bank_code": "058"}"#;
//! let secure = secure::seal(&key, "req-0001", SecureKind::BankAccount, plaintext);
//! let signature = signature::sign(&key, "req-0001");
//! // ...and the switch checks the signature and opens the source.
//! assert!(signature::verify(&key, "req-0001", &signature));
//! let kind = SecureKind::from_auth_type("bank.account").unwrap();
//! let source = plaintext::open_source(&key, "req-0001", kind, &secure)?;
//! assert_eq!(source.masked(), "******6789");
//! assert!(!format!("{source:?}").contains("0123456789"));
//! # Ok::<(), manifold_crypto::CryptoError>(())
//! ```
//!
//! The `manifold-seal` binary (`src/bin/manifold-seal.rs`) is a thin command line over
//! [`plaintext::seal_checked`] and [`signature::sign`] for app developers.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod key;
pub mod message_signature;
pub mod plaintext;
pub mod secret;
pub mod secure;
pub mod signature;

mod error;

pub use error::CryptoError;
pub use key::AppKey;
pub use message_signature::{SignatureError, SigningKey};
pub use plaintext::{BankAccount, Card, Msisdn, SourceDetails, ValidationInput, Wallet};
pub use secret::SecretString;
pub use secure::SecureKind;
