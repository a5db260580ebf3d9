//! The optional `Signature` header: proof that a request came from the holder of the app secret.
//!
//! `Signature = lowercase_hex(HMAC-SHA256(signature_key, utf8(request_ref)))`, with the signature
//! key derived in [`crate::key`]. Signing `request_ref` (unique per call) means a leaked bearer key
//! alone cannot start a new call, and a captured signature is only good for the `request_ref` the
//! switch has already seen, which idempotency answers from storage.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::AppKey;

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &AppKey, request_ref: &str) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key.signature_key())
        .expect("HMAC-SHA256 accepts a key of any length");
    mac.update(request_ref.as_bytes());
    mac
}

/// The `Signature` header value for `request_ref`: 64 lowercase hex characters.
pub fn sign(key: &AppKey, request_ref: &str) -> String {
    hex::encode(mac(key, request_ref).finalize().into_bytes())
}

/// Whether `signature` is the signature of `request_ref` under `key`, compared in constant time.
///
/// Hex digits are accepted in either case (the value is the same MAC); anything that is not 64 hex
/// characters is simply not a valid signature.
pub fn verify(key: &AppKey, request_ref: &str, signature: &str) -> bool {
    if signature.len() != 64 {
        return false;
    }
    let Ok(expected) = hex::decode(signature) else {
        return false;
    };
    mac(key, request_ref).verify_slice(&expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretString;

    fn key(secret: &str) -> AppKey {
        AppKey::derive(&SecretString::from(secret))
    }

    #[test]
    fn sign_is_lowercase_hex_of_32_bytes() {
        let signature = sign(&key("manifold-demo-app-secret-0001-abcdefgh"), "req-1");
        assert_eq!(signature.len(), 64);
        assert!(signature
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }

    #[test]
    fn verify_cases() {
        let app = key("manifold-demo-app-secret-0001-abcdefgh");
        let good = sign(&app, "req-1");
        fn check(key: &AppKey, request_ref: &str, signature: &str, expected: bool) {
            assert_eq!(
                verify(key, request_ref, signature),
                expected,
                "{request_ref} {signature}"
            );
        }
        check(&app, "req-1", &good, true);
        check(&app, "req-1", &good.to_uppercase(), true);
        check(&app, "req-2", &good, false);
        check(&app, "req-1 ", &good, false);
        check(
            &key("manifold-demo-app-secret-0001-abcdefgi"),
            "req-1",
            &good,
            false,
        );
        check(&app, "req-1", &good[..63], false);
        check(&app, "req-1", &good[..62], false);
        check(&app, "req-1", &format!("{good}00"), false);
        check(&app, "req-1", "", false);
        check(&app, "req-1", &"z".repeat(64), false);
        check(&app, "req-1", &"0".repeat(64), false);
        let mut flipped = good.clone().into_bytes();
        flipped[10] = if flipped[10] == b'0' { b'1' } else { b'0' };
        check(&app, "req-1", &String::from_utf8(flipped).unwrap(), false);
        check(&app, "req-1", &format!(" {}", &good[1..]), false);
    }

    #[test]
    fn the_signature_key_is_not_the_encryption_key() {
        let app = key("manifold-demo-app-secret-0001-abcdefgh");
        let mut with_encryption_key = HmacSha256::new_from_slice(app.encryption_key()).unwrap();
        with_encryption_key.update(b"req-1");
        assert_ne!(
            hex::encode(with_encryption_key.finalize().into_bytes()),
            sign(&app, "req-1")
        );
    }
}
