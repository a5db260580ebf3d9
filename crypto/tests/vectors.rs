//! The Rust implementation against `fixtures/secure/vectors.json`, which the Python reference
//! generated: same `secure` for the same nonce, same plaintext back, and the expected error for
//! every negative case.

use std::path::PathBuf;

use manifold_crypto::plaintext::{check_layout, open_source, open_validation};
use manifold_crypto::secure::{open, seal_with_nonce};
use manifold_crypto::{AppKey, CryptoError, SecretString, SecureKind};
use serde_json::Value;

fn fixture() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/secure/vectors.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("vectors.json is JSON")
}

fn text<'a>(item: &'a Value, field: &str) -> &'a str {
    item[field]
        .as_str()
        .unwrap_or_else(|| panic!("{} has no string `{field}`", item["name"]))
}

fn kind(name: &str) -> SecureKind {
    match name {
        "validate" => SecureKind::Validate,
        _ => SecureKind::from_auth_type(name).unwrap_or_else(|| panic!("unknown kind {name}")),
    }
}

fn key(item: &Value) -> AppKey {
    AppKey::derive(&SecretString::from(text(item, "app_secret")))
}

fn variant(error: &CryptoError) -> &'static str {
    match error {
        CryptoError::NotBase64 => "NotBase64",
        CryptoError::TooShort => "TooShort",
        CryptoError::UnsupportedVersion(_) => "UnsupportedVersion",
        CryptoError::Rejected => "Rejected",
        CryptoError::NotJson(_) => "NotJson",
        CryptoError::InvalidField { .. } => "InvalidField",
    }
}

#[test]
fn the_fixture_covers_every_kind_two_secrets_and_every_error() {
    let fixture = fixture();
    let vectors = fixture["vectors"].as_array().unwrap();
    let kinds: Vec<&str> = vectors.iter().map(|v| text(v, "kind")).collect();
    for expected in SecureKind::AUTH_TYPES.iter().chain(&["validate"]) {
        assert!(kinds.contains(expected), "no vector of kind {expected}");
    }
    let plaintexts: Vec<&str> = vectors.iter().map(|v| text(v, "plaintext")).collect();
    assert!(plaintexts.iter().any(|p| p.contains("\"otp\"")));
    assert!(plaintexts.iter().any(|p| p.contains("\"answer\"")));
    let mut secrets: Vec<&str> = vectors.iter().map(|v| text(v, "app_secret")).collect();
    secrets.dedup();
    secrets.sort();
    secrets.dedup();
    assert!(secrets.len() >= 2);
    let errors: Vec<&str> = fixture["negative"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| text(n, "expected_error"))
        .collect();
    for expected in [
        "NotBase64",
        "TooShort",
        "UnsupportedVersion",
        "Rejected",
        "NotJson",
        "InvalidField",
    ] {
        assert!(
            errors.contains(&expected),
            "no negative case for {expected}"
        );
    }
}

#[test]
fn rust_seals_every_vector_to_the_same_secure() {
    for vector in fixture()["vectors"].as_array().unwrap() {
        let name = text(vector, "name");
        let nonce: [u8; 12] = hex::decode(text(vector, "nonce_hex"))
            .unwrap()
            .try_into()
            .unwrap();
        let sealed = seal_with_nonce(
            &key(vector),
            text(vector, "request_ref"),
            kind(text(vector, "kind")),
            text(vector, "plaintext").as_bytes(),
            nonce,
        );
        assert_eq!(sealed, text(vector, "secure"), "{name}");
    }
}

#[test]
fn rust_opens_every_vector_to_its_plaintext() {
    for vector in fixture()["vectors"].as_array().unwrap() {
        let name = text(vector, "name");
        let kind = kind(text(vector, "kind"));
        let request_ref = text(vector, "request_ref");
        let plaintext = text(vector, "plaintext");
        let opened = open(&key(vector), request_ref, kind, text(vector, "secure"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&opened[..], plaintext.as_bytes(), "{name}");
        check_layout(kind, plaintext.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        // Compare against serde_json's reading of the same text, not our own parser's.
        let expected: Value = serde_json::from_str(plaintext).unwrap();
        match kind {
            SecureKind::Validate => {
                let input = open_validation(&key(vector), request_ref, text(vector, "secure"))
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                let field = if expected.get("otp").is_some() {
                    "otp"
                } else {
                    "answer"
                };
                assert_eq!(input.expose(), expected[field].as_str().unwrap(), "{name}");
            }
            _ => {
                let source = open_source(&key(vector), request_ref, kind, text(vector, "secure"))
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(source.kind(), kind, "{name}");
                let reserialized: Value = serde_json::from_slice(&source.to_plaintext()).unwrap();
                assert_eq!(reserialized, expected, "{name}");
            }
        }
    }
}

#[test]
fn every_negative_case_fails_with_its_error() {
    let fixture = fixture();
    let negatives = fixture["negative"].as_array().unwrap();
    assert!(negatives.len() >= 8);
    for case in negatives {
        let name = text(case, "name");
        let kind = kind(text(case, "kind"));
        let request_ref = text(case, "request_ref");
        let secure = text(case, "secure");
        let error = match kind {
            SecureKind::Validate => open_validation(&key(case), request_ref, secure).map(drop),
            _ => open_source(&key(case), request_ref, kind, secure).map(drop),
        }
        .expect_err(name);
        assert_eq!(
            variant(&error),
            text(case, "expected_error"),
            "{name}: {error}"
        );
        if let Some(field) = case.get("field") {
            assert_eq!(error.field(), field.as_str(), "{name}: {error}");
        }
        if let Some(version) = case.get("version") {
            assert_eq!(
                error,
                CryptoError::UnsupportedVersion(version.as_u64().unwrap() as u8),
                "{name}"
            );
        }
        if let (Some(nonce), Some(plaintext)) = (case.get("nonce_hex"), case.get("plaintext")) {
            // Layout cases are well-formed envelopes around a bad plaintext: Rust seals them the
            // same way, and only the layout check refuses them.
            let nonce: [u8; 12] = hex::decode(nonce.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap();
            let plaintext = plaintext.as_str().unwrap().as_bytes();
            assert_eq!(
                seal_with_nonce(&key(case), request_ref, kind, plaintext, nonce),
                secure,
                "{name}"
            );
            assert_eq!(check_layout(kind, plaintext).unwrap_err(), error, "{name}");
        }
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains(text(case, "app_secret")), "{name}: {shown}");
    }
}
