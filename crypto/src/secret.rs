//! [`SecretString`]: the one type every secret text travels in.
//!
//! App secrets, account numbers, PANs, CVVs, PINs, OTPs: anything that must not reach a log. It
//! zeroizes its buffer on drop, prints as `[REDACTED]` through both `Debug` and `Display`, and
//! compares in constant time so an equality check (an OTP, a secret) does not leak through timing.
//! It serializes as a plain JSON string because internal wires (switch to compiled-in provider,
//! tests) must carry the value; keeping it out of logs is the job of the redacted formatting.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A string whose content is secret. See the module documentation.
#[derive(Clone, Default, Zeroize, ZeroizeOnDrop)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps `s`, taking ownership of its buffer so no unzeroized copy is left behind.
    pub fn new(s: impl Into<String>) -> Self {
        SecretString(s.into())
    }

    /// The secret text. Call sites are the places that need the value itself: keep them few.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length in bytes; lengths are not secret in any of our formats.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretString {
    fn from(s: String) -> Self {
        SecretString(s)
    }
}

impl From<&str> for SecretString {
    fn from(s: &str) -> Self {
        SecretString(s.to_owned())
    }
}

impl PartialEq for SecretString {
    /// Constant time in the content; `subtle` returns early only on a length mismatch, and
    /// lengths are public.
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for SecretString {}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl Serialize for SecretString {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(SecretString)
    }
}

/// A serde message without the value it quotes: serde says "invalid type:
/// integer `12345678`, expected a string" of a password written as a
/// number, and a value in the wrong place may be a secret or a customer's
/// phone number. Names in backticks (unknown fields, expected keys) are
/// kept.
pub fn withhold_values(message: &str) -> String {
    for lead in ["invalid type: ", "invalid value: ", "invalid length "] {
        if let Some(rest) = message.strip_prefix(lead) {
            if let (Some(open), Some(close)) = (rest.find('`'), rest.rfind('`')) {
                if open < close {
                    return format!(
                        "{lead}{}(value withheld){}",
                        &rest[..open],
                        &rest[close + 1..]
                    );
                }
            }
        }
    }
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_are_redacted() {
        let secret = SecretString::new("0123456789");
        assert_eq!(format!("{secret:?}"), "[REDACTED]");
        assert_eq!(format!("{secret}"), "[REDACTED]");
        assert_eq!(format!("{:#?}", Some(&secret)), "Some(\n    [REDACTED],\n)");
        assert!(!format!("{secret:?}").contains("0123456789"));
    }

    #[test]
    fn expose_len_and_conversions() {
        let secret = SecretString::from("ünï");
        assert_eq!(secret.expose(), "ünï");
        assert_eq!(secret.len(), 5);
        assert!(!secret.is_empty());
        assert!(SecretString::from(String::new()).is_empty());
        assert_eq!(
            SecretString::new(String::from("abc")),
            SecretString::from("abc")
        );
    }

    #[test]
    fn equality_compares_content() {
        fn check(a: &str, b: &str, expected: bool) {
            assert_eq!(
                SecretString::from(a) == SecretString::from(b),
                expected,
                "{a:?} == {b:?}"
            );
        }
        check("123456", "123456", true);
        check("123456", "123457", false);
        check("123456", "12345", false);
        check("", "", true);
        check("", "0", false);
    }

    #[test]
    fn serde_is_a_transparent_string() {
        let secret = SecretString::from("5399 secret");
        let json = serde_json::to_string(&secret).unwrap();
        assert_eq!(json, "\"5399 secret\"");
        let back: SecretString = serde_json::from_str(&json).unwrap();
        assert_eq!(back, secret);
        assert!(serde_json::from_str::<SecretString>("12").is_err());
    }

    #[test]
    fn zeroize_clears_the_content() {
        let mut secret = SecretString::from("1234");
        secret.zeroize();
        assert!(secret.is_empty());
    }
}
