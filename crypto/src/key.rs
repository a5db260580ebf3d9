//! [`AppKey`]: the keys one app secret stands for.
//!
//! Both keys come from HKDF-SHA256 over the secret's UTF-8 bytes with the salt
//! `manifold.secure.v1`, separated by `info`: `aes-256-gcm` for sealing `auth.secure`,
//! `request-signature` for signing the app's requests (RFC 9421,
//! [`crate::message_signature::SigningKey::for_app`]). Separate keys mean a signature can never be
//! confused with, or help forge, a ciphertext. The salt names the format version so a future
//! scheme derives unrelated keys from the same secret.
//!
//! The signature key has one more, internal use: [`AppKey::keyed_digest_hex`], the keyed digest
//! the switch puts into its idempotency fingerprints. It is never sent.
//!
//! A third `info`, `provider-hop-signature`, derives the key the switch and a remote provider sign
//! their calls to each other with, from the secret the host configures for that provider
//! ([`crate::message_signature::SigningKey::for_provider_hop`]). It is never applied to an app
//! secret, and its own `info` keeps it unrelated to both app keys even if a host reused a secret.

use std::fmt;

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::SecretString;

/// HKDF salt; bump with the version byte of `auth.secure`.
pub(crate) const HKDF_SALT: &[u8] = b"manifold.secure.v1";
/// HKDF `info` of the AES-256-GCM key.
pub(crate) const INFO_ENCRYPTION: &[u8] = b"aes-256-gcm";
/// HKDF `info` of the HMAC-SHA256 request-signature key.
pub(crate) const INFO_SIGNATURE: &[u8] = b"request-signature";
/// HKDF `info` of the HMAC-SHA256 key of switch <-> provider calls, derived from a provider's
/// secret rather than an app's.
pub(crate) const INFO_PROVIDER_HOP: &[u8] = b"provider-hop-signature";

/// The encryption and signature keys of one app, zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AppKey {
    encryption: [u8; 32],
    signature: [u8; 32],
}

/// The shortest app secret the switch accepts: it is the input to HKDF, so
/// a short one would make `auth.secure` and the signatures guessable.
pub const MIN_APP_SECRET_LEN: usize = 32;

impl AppKey {
    /// Derives both keys from the app secret. Cheap enough to call per request, but the switch
    /// may keep one per app.
    pub fn derive(app_secret: &SecretString) -> AppKey {
        let hkdf = Hkdf::<Sha256>::new(Some(HKDF_SALT), app_secret.expose().as_bytes());
        let mut key = AppKey {
            encryption: [0; 32],
            signature: [0; 32],
        };
        // 32 bytes is far below HKDF-SHA256's limit of 255 * 32, so expand cannot fail.
        hkdf.expand(INFO_ENCRYPTION, &mut key.encryption)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        hkdf.expand(INFO_SIGNATURE, &mut key.signature)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        key
    }

    pub(crate) fn encryption_key(&self) -> &[u8; 32] {
        &self.encryption
    }

    pub(crate) fn signature_key(&self) -> &[u8; 32] {
        &self.signature
    }

    /// A keyed digest for fingerprints, never sent: lowercase hex of HMAC-SHA256 under the
    /// signature key.
    ///
    /// The switch fingerprints a request by the *content* of its `auth.secure`, so that a retry
    /// re-sealed with a fresh nonce still counts as the same request; keying the digest means the
    /// stored fingerprint cannot be brute-forced back to an account number. The bytes are those of
    /// the retired `Signature` header (`signature::sign`), so fingerprints stored before it was
    /// retired still match; do not change them.
    pub fn keyed_digest_hex(&self, data: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.signature)
            .expect("HMAC-SHA256 accepts a key of any length");
        mac.update(data);
        hex::encode(mac.finalize().into_bytes())
    }
}

impl fmt::Debug for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AppKey([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let key = AppKey::derive(&SecretString::from(
            "manifold-demo-app-secret-0001-abcdefgh",
        ));
        let debug = format!("{key:?}");
        assert_eq!(debug, "AppKey([REDACTED])");
        assert!(!debug.contains(&hex::encode(key.encryption_key())));
        assert!(!debug.contains("manifold-demo"));
    }

    #[test]
    fn derivation_is_deterministic_and_separates_keys() {
        let secret = SecretString::from("manifold-demo-app-secret-0001-abcdefgh");
        let a = AppKey::derive(&secret);
        let b = AppKey::derive(&secret);
        assert_eq!(a.encryption_key(), b.encryption_key());
        assert_eq!(a.signature_key(), b.signature_key());
        assert_ne!(a.encryption_key(), a.signature_key());
        let other = AppKey::derive(&SecretString::from(
            "manifold-demo-app-secret-0001-abcdefgi",
        ));
        assert_ne!(a.encryption_key(), other.encryption_key());
    }

    #[test]
    fn keys_of_the_worked_example_in_docs() {
        // docs/secure.md prints these for the first test vector (also checked there with openssl),
        // so an implementer can debug key derivation separately from encryption.
        let key = AppKey::derive(&SecretString::from(
            "manifold-demo-app-secret-0001-abcdefgh",
        ));
        assert_eq!(
            hex::encode(key.encryption_key()),
            "2915986d87d066187736e8a6fe1abd32dc119b8df2b2c8bafd7ea035fb217dc3"
        );
        assert_eq!(
            hex::encode(key.signature_key()),
            "8602129fc9fcbcbf69de3934b118ef83ec297ce08dd9a1f0edfcf75b67ff487a"
        );
    }

    #[test]
    fn keyed_digest_is_the_retired_signature_header_value() {
        // Stored idempotency fingerprints hash this output: it must stay what the retired
        // `signature::sign(key, "req-0001")` returned for the first vector of
        // fixtures/secure/vectors.json, byte for byte.
        let key = AppKey::derive(&SecretString::from(
            "manifold-demo-app-secret-0001-abcdefgh",
        ));
        assert_eq!(
            key.keyed_digest_hex(b"req-0001"),
            "a19726fe2b5db85350824ab9d17ee4af7af849429e1d558e64b2586aa9b84e40"
        );
        let mut with_encryption_key = Hmac::<Sha256>::new_from_slice(key.encryption_key()).unwrap();
        with_encryption_key.update(b"req-0001");
        assert_ne!(
            hex::encode(with_encryption_key.finalize().into_bytes()),
            key.keyed_digest_hex(b"req-0001")
        );
    }

    #[test]
    fn derivation_matches_hkdf_rfc5869_construction() {
        // Recompute with hmac directly (extract then one expand block) so a wrong salt/info
        // wiring in `derive` would show up here, not only in the Python interop test.
        let secret = "manifold-demo-app-secret-0001-abcdefgh";
        let mut extract = Hmac::<Sha256>::new_from_slice(HKDF_SALT).unwrap();
        extract.update(secret.as_bytes());
        let prk = extract.finalize().into_bytes();
        let expand = |info: &[u8]| {
            let mut mac = Hmac::<Sha256>::new_from_slice(&prk).unwrap();
            mac.update(info);
            mac.update(&[1]);
            mac.finalize().into_bytes().to_vec()
        };
        let key = AppKey::derive(&SecretString::from(secret));
        assert_eq!(key.encryption_key().to_vec(), expand(b"aes-256-gcm"));
        assert_eq!(key.signature_key().to_vec(), expand(b"request-signature"));
    }
}
