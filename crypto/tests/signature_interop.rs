//! Signed requests, Rust against Python's `http-message-signatures` (an RFC 9421 implementation
//! that shares no code with this crate), live and in both directions: Python reproduces the
//! fixture, Python signs now and Rust verifies, Rust signs now and Python verifies, and Python
//! refuses a Rust signature whose request was changed.
//!
//! This test needs `python3` with the `http-message-signatures` package (CI must install it).
//! Without them it fails, loudly: an interop test that passes by skipping would hide exactly what
//! it exists to catch.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};
use manifold_crypto::message_signature::{
    sign_request, verify_request, ReceivedRequest, SignatureParams, VerifiedSignature, VerifyPolicy,
};
use manifold_crypto::{AppKey, SecretString, SigningKey};
use serde_json::{json, Value};

mod support;

use support::PythonReference;

/// The independent implementation this test runs against.
const REFERENCE: PythonReference = PythonReference {
    script: "manifold_signatures.py",
    module: "http_message_signatures",
    install_hint: INSTALL_HINT,
};

const INSTALL_HINT: &str = "the signed-request interop test needs python3 with the \
`http-message-signatures` package: run `pip install http-message-signatures` (CI must install it)";

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn vectors_path() -> PathBuf {
    crate_dir().join("../fixtures/signatures/vectors.json")
}

fn vectors() -> Vec<Value> {
    let text = std::fs::read_to_string(vectors_path()).unwrap();
    let fixture: Value = serde_json::from_str(&text).unwrap();
    fixture["vectors"].as_array().unwrap().clone()
}

fn text<'a>(item: &'a Value, field: &str) -> &'a str {
    item[field]
        .as_str()
        .unwrap_or_else(|| panic!("{} has no string `{field}`", item["name"]))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn key(vector: &Value) -> SigningKey {
    let secret = SecretString::from(text(vector, "secret"));
    match text(vector, "key_derivation") {
        "app" => SigningKey::for_app(&AppKey::derive(&secret)),
        _ => SigningKey::for_provider_hop(&secret),
    }
}

/// A request item for the Python side, naming its key by secret as the vector does.
fn request_item(vector: &Value, nonce: &str) -> Value {
    let secret_field = match text(vector, "key_derivation") {
        "app" => "app_secret",
        _ => "provider_secret",
    };
    json!({
        "name": text(vector, "name"),
        secret_field: text(vector, "secret"),
        "method": text(vector, "method"),
        "path": text(vector, "path"),
        "body": text(vector, "body"),
        "key_id": text(vector, "key_id"),
        "nonce": nonce,
    })
}

/// Every vector's request, signed by Rust now with a nonce of its own.
fn rust_signed_items() -> Vec<Value> {
    let created = now();
    vectors()
        .iter()
        .map(|vector| {
            let nonce = format!("{}-rust", text(vector, "nonce"));
            let signed = sign_request(
                &key(vector),
                text(vector, "method"),
                text(vector, "path"),
                text(vector, "body").as_bytes(),
                &SignatureParams {
                    key_id: text(vector, "key_id"),
                    created,
                    nonce: &nonce,
                },
            )
            .unwrap();
            let mut item = request_item(vector, &nonce);
            item["created"] = json!(created);
            item["content_digest"] = json!(signed.content_digest);
            item["signature_input"] = json!(signed.signature_input);
            item["signature"] = json!(signed.signature);
            item
        })
        .collect()
}

#[test]
fn python_reproduces_the_fixture() {
    let output = REFERENCE.ok(&["check-vectors", vectors_path().to_str().unwrap()], None);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.contains(&format!("{} vectors ok", vectors().len())),
        "unexpected output: {stdout}"
    );
}

#[test]
fn rust_verifies_what_python_signs_now() {
    let vectors = vectors();
    let requests: Vec<Value> = vectors
        .iter()
        .map(|vector| request_item(vector, &format!("{}-python", text(vector, "nonce"))))
        .collect();
    let output = REFERENCE.ok(&["sign"], Some(&serde_json::to_string(&requests).unwrap()));
    let signed: Vec<Value> = serde_json::from_slice(&output.stdout).expect("sign prints JSON");
    assert_eq!(signed.len(), vectors.len());
    let now = now();
    for (item, vector) in signed.iter().zip(&vectors) {
        let name = text(item, "name");
        assert_ne!(
            text(item, "signature"),
            text(vector, "signature"),
            "{name}: Python signed with the vector's created and nonce"
        );
        let mut headers = HeaderMap::new();
        for (header, field) in [
            ("content-digest", "content_digest"),
            ("signature-input", "signature_input"),
            ("signature", "signature"),
        ] {
            headers.insert(header, HeaderValue::from_str(text(item, field)).unwrap());
        }
        let request = ReceivedRequest {
            method: text(item, "method"),
            path: text(item, "path"),
            headers: &headers,
            body: text(item, "body").as_bytes(),
        };
        let created = item["created"].as_u64().unwrap();
        assert!(created.abs_diff(now) < 60, "{name}: created {created}");
        assert_eq!(
            verify_request(
                &key(vector),
                text(vector, "key_id"),
                &request,
                &VerifyPolicy::default(),
                now
            ),
            Ok(VerifiedSignature {
                key_id: text(vector, "key_id").to_owned(),
                nonce: text(item, "nonce").to_owned(),
                created,
            }),
            "{name}"
        );
    }
}

#[test]
fn python_verifies_what_rust_signs_now() {
    let items = rust_signed_items();
    let output = REFERENCE.ok(&["verify"], Some(&serde_json::to_string(&items).unwrap()));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.contains(&format!("{} items ok", items.len())),
        "unexpected output: {stdout}"
    );
}

#[test]
fn python_refuses_rust_signatures_of_changed_requests() {
    // Guards the test above against a Python `verify` that accepts anything: each change alone
    // must be refused.
    let original = rust_signed_items().remove(0);
    type Change = fn(&mut Value);
    let changes: [(&str, Change); 4] = [
        ("body", |item| {
            item["body"] = json!(format!("{} ", text(item, "body")))
        }),
        ("path", |item| item["path"] = json!("/transact/validate")),
        ("method", |item| item["method"] = json!("PUT")),
        ("key", |item| {
            item["app_secret"] = json!("manifold-demo-app-secret-0001-abcdefgi")
        }),
    ];
    for (what, change) in changes {
        let mut item = original.clone();
        change(&mut item);
        let output = REFERENCE.run(&["verify"], Some(&json!([item]).to_string()));
        assert!(!output.status.success(), "Python accepted a changed {what}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("InvalidSignature"), "{what}: {stderr}");
    }
}
