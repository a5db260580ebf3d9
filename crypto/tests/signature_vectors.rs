//! The Rust signer and verifier against `fixtures/signatures/vectors.json`, which Python's
//! `http-message-signatures` generated: the same key from the same secret, the same
//! `Content-Digest`, signature base, `Signature-Input` and `Signature`, and every vector verifies.

use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use http::{HeaderMap, HeaderValue};
use manifold_crypto::message_signature::{
    content_digest, sign_request, signature_base, verify_request, ReceivedRequest, SignatureParams,
    VerifiedSignature, VerifyPolicy,
};
use manifold_crypto::{AppKey, SecretString, SignatureError, SigningKey};
use serde_json::Value;

fn fixture() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/signatures/vectors.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("vectors.json is JSON")
}

fn vectors() -> Vec<Value> {
    fixture()["vectors"].as_array().unwrap().clone()
}

fn text<'a>(item: &'a Value, field: &str) -> &'a str {
    item[field]
        .as_str()
        .unwrap_or_else(|| panic!("{} has no string `{field}`", item["name"]))
}

fn created(item: &Value) -> u64 {
    item["created"].as_u64().unwrap()
}

fn params(item: &Value) -> SignatureParams<'_> {
    SignatureParams {
        key_id: text(item, "key_id"),
        created: created(item),
        nonce: text(item, "nonce"),
    }
}

/// The key as Manifold derives it from the vector's secret.
fn derived_key(item: &Value) -> SigningKey {
    let secret = SecretString::from(text(item, "secret"));
    match text(item, "key_derivation") {
        "app" => SigningKey::for_app(&AppKey::derive(&secret)),
        "provider-hop" => SigningKey::for_provider_hop(&secret),
        other => panic!("unknown key_derivation {other}"),
    }
}

fn raw_key(item: &Value) -> SigningKey {
    SigningKey::from_bytes(&BASE64.decode(text(item, "key_base64")).unwrap())
}

fn received_headers(item: &Value) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, field) in [
        ("content-digest", "content_digest"),
        ("signature-input", "signature_input"),
        ("signature", "signature"),
    ] {
        headers.insert(name, HeaderValue::from_str(text(item, field)).unwrap());
    }
    headers
}

#[test]
fn the_fixture_covers_both_derivations_bodies_and_escapes() {
    let vectors = vectors();
    assert!(vectors.len() >= 5);
    let derivations: Vec<&str> = vectors.iter().map(|v| text(v, "key_derivation")).collect();
    assert!(derivations.contains(&"app"));
    assert!(derivations.contains(&"provider-hop"));
    assert!(vectors.iter().any(|v| text(v, "body").is_empty()));
    assert!(vectors.iter().any(|v| !text(v, "body").is_ascii()));
    assert!(vectors.iter().any(|v| !text(v, "secret").is_ascii()));
    assert!(vectors
        .iter()
        .any(|v| text(v, "nonce").contains(['"', '\\'])));
    assert!(vectors.iter().any(|v| text(v, "path").contains('%')));
}

#[test]
fn rust_signs_every_vector_as_python_did() {
    for vector in vectors() {
        let name = text(&vector, "name");
        let body = text(&vector, "body").as_bytes();
        let method = text(&vector, "method");
        let path = text(&vector, "path");
        assert_eq!(
            content_digest(body),
            text(&vector, "content_digest"),
            "{name}"
        );
        assert_eq!(
            signature_base(method, path, body, &params(&vector)).unwrap(),
            text(&vector, "signature_base"),
            "{name}"
        );
        // Derived from the secret and taken raw, the key signs the same: so the derivation
        // matches Python's HKDF as well as the signature does.
        for key in [derived_key(&vector), raw_key(&vector)] {
            let signed = sign_request(&key, method, path, body, &params(&vector)).unwrap();
            assert_eq!(
                signed.content_digest,
                text(&vector, "content_digest"),
                "{name}"
            );
            assert_eq!(
                signed.signature_input,
                text(&vector, "signature_input"),
                "{name}"
            );
            assert_eq!(signed.signature, text(&vector, "signature"), "{name}");
        }
    }
}

#[test]
fn rust_verifies_every_vector_and_refuses_it_altered() {
    let policy = VerifyPolicy::default();
    for vector in vectors() {
        let name = text(&vector, "name");
        let headers = received_headers(&vector);
        let body = text(&vector, "body").as_bytes();
        let request = ReceivedRequest {
            method: text(&vector, "method"),
            path: text(&vector, "path"),
            headers: &headers,
            body,
        };
        let key_id = text(&vector, "key_id");
        let now = created(&vector);
        assert_eq!(
            verify_request(&derived_key(&vector), key_id, &request, &policy, now),
            Ok(VerifiedSignature {
                key_id: key_id.to_owned(),
                nonce: text(&vector, "nonce").to_owned(),
                created: now,
            }),
            "{name}"
        );

        let mut longer = body.to_vec();
        longer.push(b' ');
        let altered = ReceivedRequest {
            body: &longer,
            ..request
        };
        assert_eq!(
            verify_request(&derived_key(&vector), key_id, &altered, &policy, now),
            Err(SignatureError::DigestMismatch),
            "{name}"
        );
        let other_path = format!("{}/", text(&vector, "path"));
        let altered = ReceivedRequest {
            path: &other_path,
            ..request
        };
        assert_eq!(
            verify_request(&derived_key(&vector), key_id, &altered, &policy, now),
            Err(SignatureError::Mismatch),
            "{name}"
        );
        let other_key = match text(&vector, "key_derivation") {
            // The other derivation of the same secret must not verify.
            "app" => SigningKey::for_provider_hop(&SecretString::from(text(&vector, "secret"))),
            _ => SigningKey::for_app(&AppKey::derive(&SecretString::from(text(
                &vector, "secret",
            )))),
        };
        assert_eq!(
            verify_request(&other_key, key_id, &request, &policy, now),
            Err(SignatureError::Mismatch),
            "{name}"
        );
    }
}
