//! Rust against the independent Python reference (`crypto/interop/manifold_secure.py`, built on
//! the `cryptography` package): Python re-derives the fixture, Python seals with random nonces and
//! Rust opens, Rust seals with random nonces and Python opens.
//!
//! This test needs `python3` with `cryptography` (CI installs it). Without them it fails, loudly:
//! an interop test that passes by skipping would hide exactly what it exists to catch.

use std::path::PathBuf;

use manifold_crypto::plaintext::check_layout;
use manifold_crypto::secure::{open, seal};
use manifold_crypto::{AppKey, SecretString, SecureKind};
use serde_json::{json, Value};

mod support;

use support::PythonReference;

/// The independent implementation this test runs against.
const REFERENCE: PythonReference = PythonReference {
    script: "manifold_secure.py",
    module: "cryptography",
    install_hint: INSTALL_HINT,
};

const INSTALL_HINT: &str = "the auth.secure interop test needs python3 with the `cryptography` \
package: run `pip install cryptography` (CI installs it)";

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn vectors() -> PathBuf {
    crate_dir().join("../fixtures/secure/vectors.json")
}

fn kind(name: &str) -> SecureKind {
    match name {
        "validate" => SecureKind::Validate,
        _ => SecureKind::from_auth_type(name).unwrap(),
    }
}

fn text<'a>(item: &'a Value, field: &str) -> &'a str {
    item[field].as_str().unwrap()
}

#[test]
fn python_reproduces_the_fixture() {
    let output = REFERENCE.ok(&["check-vectors", vectors().to_str().unwrap()], None);
    let stdout = String::from_utf8(output.stdout).unwrap();
    let fixture: Value =
        serde_json::from_str(&std::fs::read_to_string(vectors()).unwrap()).unwrap();
    let count = fixture["vectors"].as_array().unwrap().len();
    assert!(
        stdout.contains(&format!("{count} vectors ok")),
        "unexpected output: {stdout}"
    );
}

#[test]
fn rust_opens_what_python_seals_with_random_nonces() {
    let output = REFERENCE.ok(&["fresh", vectors().to_str().unwrap()], None);
    let items: Vec<Value> = serde_json::from_slice(&output.stdout).expect("fresh prints JSON");
    let fixture: Value =
        serde_json::from_str(&std::fs::read_to_string(vectors()).unwrap()).unwrap();
    assert_eq!(items.len(), fixture["vectors"].as_array().unwrap().len());
    for (item, vector) in items.iter().zip(fixture["vectors"].as_array().unwrap()) {
        let name = text(item, "name");
        let key = AppKey::derive(&SecretString::from(text(item, "app_secret")));
        let kind = kind(text(item, "kind"));
        let request_ref = text(item, "request_ref");
        assert_ne!(
            text(item, "secure"),
            text(vector, "secure"),
            "{name}: fresh used the vector's fixed nonce"
        );
        let opened = open(&key, request_ref, kind, text(item, "secure"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&opened[..], text(item, "plaintext").as_bytes(), "{name}");
        check_layout(kind, &opened).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn python_opens_what_rust_seals_with_random_nonces() {
    let fixture: Value =
        serde_json::from_str(&std::fs::read_to_string(vectors()).unwrap()).unwrap();
    let items: Vec<Value> = fixture["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|vector| {
            let key = AppKey::derive(&SecretString::from(text(vector, "app_secret")));
            let request_ref = text(vector, "request_ref");
            let kind = kind(text(vector, "kind"));
            json!({
                "name": text(vector, "name"),
                "app_secret": text(vector, "app_secret"),
                "request_ref": request_ref,
                "kind": kind.as_str(),
                "plaintext": text(vector, "plaintext"),
                "secure": seal(&key, request_ref, kind, text(vector, "plaintext").as_bytes()),
            })
        })
        .collect();
    let output = REFERENCE.ok(
        &["open", "-"],
        Some(&serde_json::to_string(&items).unwrap()),
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.contains(&format!("{} items ok", items.len())),
        "unexpected output: {stdout}"
    );
}

#[test]
fn python_refuses_a_tampered_rust_secure() {
    // Guards the test above against a Python `open` that accepts anything.
    let key = AppKey::derive(&SecretString::from(
        "manifold-demo-app-secret-0001-abcdefgh",
    ));
    let secure = seal(
        &key,
        "req-1",
        SecureKind::Msisdn,
        br#"{"msisdn": "2348022000008"}"#,
    );
    let items = json!([{
        "name": "other-request-ref",
        "app_secret": "manifold-demo-app-secret-0001-abcdefgh",
        "request_ref": "req-2",
        "kind": "msisdn",
        "plaintext": r#"{"msisdn": "2348022000008"}"#,
        "secure": secure,
    }]);
    let output = REFERENCE.run(&["open", "-"], Some(&items.to_string()));
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("Rejected"));
}
