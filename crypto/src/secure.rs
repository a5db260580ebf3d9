//! The `auth.secure` envelope: sealing and opening bytes for one request and one kind.
//!
//! ```text
//! secure = base64_standard_padded( 0x01 || nonce[12] || AES-256-GCM(plaintext) || tag[16] )
//! aad    = utf8(request_ref + "|" + kind)
//! ```
//!
//! The associated data binds a `secure` to the request it was sealed for: replaying it under
//! another `request_ref`, or as another `auth.type` (a card blob presented as a wallet), fails
//! authentication. What the plaintext must contain is [`crate::plaintext`]'s business.

use std::fmt;

use aes_gcm::aead::{Aead, AeadInPlace, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::{AppKey, CryptoError};

/// The first byte of every `secure`; a new layout or key derivation gets a new byte.
pub const VERSION: u8 = 0x01;
/// AES-GCM nonce length in bytes.
pub const NONCE_LEN: usize = 12;
/// AES-GCM tag length in bytes.
pub const TAG_LEN: usize = 16;
/// Smallest decoded `secure`: version, nonce and tag around an empty plaintext.
const MIN_LEN: usize = 1 + NONCE_LEN + TAG_LEN;

/// What a `secure` carries, and the second half of its associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecureKind {
    /// `auth.type` `bank.account`: account number and bank code.
    BankAccount,
    /// `auth.type` `card`: PAN, expiry, CVV and optional PIN.
    Card,
    /// `auth.type` `wallet`: wallet id.
    Wallet,
    /// `auth.type` `msisdn`: a phone number.
    Msisdn,
    /// `auth.type` `token`: a credential the customer gave the app for the
    /// provider's upstream (a refresh token, an API key), with which the
    /// provider acts for that customer and nobody else.
    Token,
    /// The `secure` of a `/transact/validate`: an OTP or an answer.
    Validate,
}

impl SecureKind {
    /// The `auth.type` values a `/transact` may carry, in the order of the protocol notes.
    pub const AUTH_TYPES: [&'static str; 5] = ["bank.account", "card", "wallet", "msisdn", "token"];

    /// The kind's wire name, as used in the associated data (`bank.account`, ..., `validate`).
    pub fn as_str(self) -> &'static str {
        match self {
            SecureKind::BankAccount => "bank.account",
            SecureKind::Card => "card",
            SecureKind::Wallet => "wallet",
            SecureKind::Msisdn => "msisdn",
            SecureKind::Token => "token",
            SecureKind::Validate => "validate",
        }
    }

    /// The kind of a `/transact`'s `auth.type`. `validate` is not an `auth.type`, so it is `None`
    /// here: a /transact cannot ask for a validate-sealed blob to be opened as its source.
    pub fn from_auth_type(s: &str) -> Option<SecureKind> {
        match s {
            "bank.account" => Some(SecureKind::BankAccount),
            "card" => Some(SecureKind::Card),
            "wallet" => Some(SecureKind::Wallet),
            "msisdn" => Some(SecureKind::Msisdn),
            "token" => Some(SecureKind::Token),
            _ => None,
        }
    }
}

impl fmt::Display for SecureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The associated data of a `secure` for this request and kind.
fn associated_data(request_ref: &str, kind: SecureKind) -> Vec<u8> {
    let mut aad = Vec::with_capacity(request_ref.len() + 1 + kind.as_str().len());
    aad.extend_from_slice(request_ref.as_bytes());
    aad.push(b'|');
    aad.extend_from_slice(kind.as_str().as_bytes());
    aad
}

/// Seals `plaintext` for `request_ref` and `kind` under a fresh random nonce from the OS.
///
/// It does not check the plaintext layout; [`crate::plaintext::seal_checked`] does.
pub fn seal(key: &AppKey, request_ref: &str, kind: SecureKind, plaintext: &[u8]) -> String {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    seal_with_nonce(key, request_ref, kind, plaintext, nonce)
}

/// Seals with a caller-chosen nonce. Only for test vectors: reusing a nonce under one key breaks
/// AES-GCM's confidentiality and integrity, so real messages go through [`seal`].
pub fn seal_with_nonce(
    key: &AppKey,
    request_ref: &str,
    kind: SecureKind,
    plaintext: &[u8],
    nonce: [u8; NONCE_LEN],
) -> String {
    let cipher = Aes256Gcm::new(key.encryption_key().into());
    let aad = associated_data(request_ref, kind);
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        // aes-gcm refuses only plaintexts over 64 GiB, which no request body can hold.
        .expect("AES-256-GCM encryption of a request-sized plaintext cannot fail");
    let mut envelope = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
    envelope.push(VERSION);
    envelope.extend_from_slice(&nonce);
    envelope.extend_from_slice(&sealed);
    STANDARD.encode(envelope)
}

/// Opens a `secure` sealed for `request_ref` and `kind`, returning the plaintext bytes in a buffer
/// that is wiped when dropped.
///
/// Checks run cheapest and most specific first (base64, version, length), so an app developer sees
/// a precise error for a malformed string; anything that fails authentication is
/// [`CryptoError::Rejected`].
pub fn open(
    key: &AppKey,
    request_ref: &str,
    kind: SecureKind,
    secure: &str,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let envelope = STANDARD
        .decode(secure)
        .map_err(|_| CryptoError::NotBase64)?;
    let version = *envelope.first().ok_or(CryptoError::TooShort)?;
    if version != VERSION {
        return Err(CryptoError::UnsupportedVersion(version));
    }
    if envelope.len() < MIN_LEN {
        return Err(CryptoError::TooShort);
    }
    let (nonce, sealed) = envelope[1..].split_at(NONCE_LEN);
    // Decrypt in place inside a zeroizing buffer so no plaintext copy outlives this call.
    let mut buffer = Zeroizing::new(sealed.to_vec());
    let cipher = Aes256Gcm::new(key.encryption_key().into());
    cipher
        .decrypt_in_place(
            Nonce::from_slice(nonce),
            &associated_data(request_ref, kind),
            &mut *buffer,
        )
        .map_err(|_| CryptoError::Rejected)?;
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretString;

    const SECRET: &str = "manifold-demo-app-secret-0001-abcdefgh";
    const PLAINTEXT: &[u8] = br#"{"account_number": "0123456789", "bank_code": "058"}"#;

    fn key() -> AppKey {
        AppKey::derive(&SecretString::from(SECRET))
    }

    fn sealed() -> String {
        seal(&key(), "req-1", SecureKind::BankAccount, PLAINTEXT)
    }

    fn decoded(secure: &str) -> Vec<u8> {
        STANDARD.decode(secure).unwrap()
    }

    #[test]
    fn round_trip_every_kind() {
        for kind in [
            SecureKind::BankAccount,
            SecureKind::Card,
            SecureKind::Wallet,
            SecureKind::Msisdn,
            SecureKind::Validate,
        ] {
            let secure = seal(&key(), "req-1", kind, b"{\"x\": 1}");
            let opened = open(&key(), "req-1", kind, &secure).unwrap();
            assert_eq!(&opened[..], b"{\"x\": 1}", "{kind}");
        }
    }

    #[test]
    fn round_trip_empty_plaintext() {
        let secure = seal(&key(), "req-1", SecureKind::Wallet, b"");
        assert_eq!(decoded(&secure).len(), MIN_LEN);
        assert!(open(&key(), "req-1", SecureKind::Wallet, &secure)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn layout_is_version_nonce_ciphertext_tag() {
        let nonce = [7u8; NONCE_LEN];
        let secure = seal_with_nonce(&key(), "req-1", SecureKind::BankAccount, PLAINTEXT, nonce);
        let bytes = decoded(&secure);
        assert_eq!(bytes[0], VERSION);
        assert_eq!(&bytes[1..13], &nonce);
        assert_eq!(bytes.len(), 1 + NONCE_LEN + PLAINTEXT.len() + TAG_LEN);
        assert_eq!(secure.len() % 4, 0);
    }

    #[test]
    fn random_nonces_differ() {
        let a = decoded(&sealed());
        let b = decoded(&sealed());
        assert_ne!(a[1..13], b[1..13]);
    }

    #[test]
    fn fixed_nonce_is_deterministic() {
        let nonce = [0u8; NONCE_LEN];
        let a = seal_with_nonce(&key(), "req-1", SecureKind::Card, PLAINTEXT, nonce);
        let b = seal_with_nonce(&key(), "req-1", SecureKind::Card, PLAINTEXT, nonce);
        assert_eq!(a, b);
    }

    fn check(secure: &str, request_ref: &str, kind: SecureKind, expected: CryptoError) {
        assert_eq!(
            open(&key(), request_ref, kind, secure).unwrap_err(),
            expected,
            "{secure:?} for {request_ref}/{kind}"
        );
    }

    #[test]
    fn negative_cases() {
        use CryptoError::*;
        let good = sealed();
        let bytes = decoded(&good);
        let reencode = |b: &[u8]| STANDARD.encode(b);

        let mut tampered = bytes.clone();
        tampered[20] ^= 0x01;
        check(
            &reencode(&tampered),
            "req-1",
            SecureKind::BankAccount,
            Rejected,
        );

        let mut tampered_tag = bytes.clone();
        *tampered_tag.last_mut().unwrap() ^= 0x80;
        check(
            &reencode(&tampered_tag),
            "req-1",
            SecureKind::BankAccount,
            Rejected,
        );

        let mut tampered_nonce = bytes.clone();
        tampered_nonce[1] ^= 0x01;
        check(
            &reencode(&tampered_nonce),
            "req-1",
            SecureKind::BankAccount,
            Rejected,
        );

        check(
            &reencode(&bytes[..bytes.len() - 1]),
            "req-1",
            SecureKind::BankAccount,
            Rejected,
        );
        check(
            &reencode(&bytes[..MIN_LEN - 1]),
            "req-1",
            SecureKind::BankAccount,
            TooShort,
        );
        check(
            &reencode(&bytes[..1]),
            "req-1",
            SecureKind::BankAccount,
            TooShort,
        );
        check("", "req-1", SecureKind::BankAccount, TooShort);

        let mut v2 = bytes.clone();
        v2[0] = 0x02;
        check(
            &reencode(&v2),
            "req-1",
            SecureKind::BankAccount,
            UnsupportedVersion(2),
        );
        check(
            &reencode(&[0x00]),
            "req-1",
            SecureKind::BankAccount,
            UnsupportedVersion(0),
        );

        check(&good, "req-2", SecureKind::BankAccount, Rejected);
        check(&good, "req-1 ", SecureKind::BankAccount, Rejected);
        check(&good, "req-1", SecureKind::Card, Rejected);
        check(&good, "req-1", SecureKind::Validate, Rejected);

        let other_key = AppKey::derive(&SecretString::from("another-app-secret-of-32-characters!"));
        assert_eq!(
            open(&other_key, "req-1", SecureKind::BankAccount, &good).unwrap_err(),
            Rejected
        );
    }

    #[test]
    fn bad_base64() {
        let good = sealed();
        // 1 + 12 + 2 + 16 = 31 bytes, so its base64 ends in `==`.
        let padded = seal(&key(), "req-1", SecureKind::BankAccount, b"xy");
        assert!(padded.ends_with("=="));
        let url_safe =
            base64::engine::general_purpose::URL_SAFE.encode([0xfb, 0xef, 0xbe, 0xff, 0xff, 0xff]);
        assert!(url_safe.contains('-') && url_safe.contains('_'));
        for bad in [
            "not base64!".to_owned(),
            padded.trim_end_matches('=').to_owned(),
            url_safe,
            format!(" {good}"),
            format!("{good}\n"),
            format!("{}\n{}", &good[..40], &good[40..]),
            "AQ=".to_owned(),
            "AQ==AQ==".to_owned(),
        ] {
            check(
                &bad,
                "req-1",
                SecureKind::BankAccount,
                CryptoError::NotBase64,
            );
        }
    }

    #[test]
    fn request_refs_may_contain_the_separator() {
        // Kinds never contain '|' and come last, so the last '|' of the associated data always
        // splits it back into the same (request_ref, kind): no two requests share an AAD.
        let secure = seal(&key(), "a|card", SecureKind::Wallet, b"{}");
        assert_eq!(
            &open(&key(), "a|card", SecureKind::Wallet, &secure).unwrap()[..],
            b"{}"
        );
        check(&secure, "a", SecureKind::Card, CryptoError::Rejected);
        check(
            &secure,
            "a|card|wallet",
            SecureKind::Wallet,
            CryptoError::Rejected,
        );
    }

    #[test]
    fn kinds_and_auth_types() {
        for name in SecureKind::AUTH_TYPES {
            let kind = SecureKind::from_auth_type(name).unwrap();
            assert_eq!(kind.as_str(), name);
            assert_eq!(kind.to_string(), name);
        }
        assert_eq!(SecureKind::from_auth_type("validate"), None);
        assert_eq!(SecureKind::from_auth_type("Card"), None);
        assert_eq!(SecureKind::from_auth_type(""), None);
        assert_eq!(SecureKind::Validate.as_str(), "validate");
    }
}
