//! [`CryptoError`]: every way an `auth.secure` can fail to open or to parse.
//!
//! Messages are written for the app developer who sent the request and end up in the response's
//! `data.errors`. They name fields and rules, never values: no variant carries plaintext, key bytes
//! or serde's own messages (which quote the offending value).

/// Why an `auth.secure` (or its plaintext) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The string is not base64 of the standard alphabet with padding.
    #[error("auth.secure is not valid base64 (standard alphabet, with `=` padding)")]
    NotBase64,
    /// Too few bytes for a version byte, a nonce and a tag.
    #[error(
        "auth.secure is too short: it must hold a 1-byte version, a 12-byte nonce and at least a 16-byte tag"
    )]
    TooShort,
    /// The first byte names a layout this switch does not read.
    #[error("auth.secure has unsupported version byte {0:#04x}; this switch reads version 0x01")]
    UnsupportedVersion(u8),
    /// AES-GCM authentication failed. Deliberately one variant: telling the causes apart would need
    /// information the tag does not give, and hinting at one would help an attacker.
    #[error(
        "auth.secure could not be decrypted: it was tampered with, truncated, sealed with another key, or sealed for another request_ref or auth.type"
    )]
    Rejected,
    /// The decrypted plaintext is not a JSON object. The text is ours (syntax position or the JSON
    /// type found), never a fragment of the plaintext.
    #[error("auth.secure plaintext is not a valid JSON object: {0}")]
    NotJson(String),
    /// One field of the plaintext breaks its rule (or is missing, or is not a field of this kind).
    #[error("auth.secure field `{field}` {reason}")]
    InvalidField {
        /// The JSON field name, e.g. `account_number`.
        field: String,
        /// The rule it breaks, e.g. `must be exactly 10 digits`.
        reason: String,
    },
}

impl CryptoError {
    /// The offending plaintext field, for the response's per-field `errors` list.
    pub fn field(&self) -> Option<&str> {
        match self {
            CryptoError::InvalidField { field, .. } => Some(field),
            _ => None,
        }
    }

    pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> CryptoError {
        CryptoError::InvalidField {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_is_named_only_for_invalid_field() {
        assert_eq!(
            CryptoError::invalid("account_number", "must be exactly 10 digits").field(),
            Some("account_number")
        );
        assert_eq!(CryptoError::Rejected.field(), None);
        assert_eq!(CryptoError::NotJson("x".into()).field(), None);
    }

    #[test]
    fn messages_read_in_domain_words() {
        assert_eq!(
            CryptoError::invalid("account_number", "must be exactly 10 digits").to_string(),
            "auth.secure field `account_number` must be exactly 10 digits"
        );
        assert_eq!(
            CryptoError::UnsupportedVersion(2).to_string(),
            "auth.secure has unsupported version byte 0x02; this switch reads version 0x01"
        );
        assert!(CryptoError::Rejected
            .to_string()
            .contains("sealed for another request_ref or auth.type"));
    }
}
