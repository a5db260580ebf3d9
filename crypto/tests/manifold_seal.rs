//! The `manifold-seal` binary as an app developer runs it.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use manifold_crypto::plaintext::open_validation;
use manifold_crypto::{AppKey, SecretString};
use serde_json::Value;

fn first_vector() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/secure/vectors.json");
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    fixture["vectors"][0].clone()
}

fn manifold_seal(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_manifold-seal"))
        .args(args)
        .env_remove("MANIFOLD_APP_SECRET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(input) = stdin {
        pipe.write_all(input.as_bytes()).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn seals_the_first_vector_with_its_nonce() {
    let vector = first_vector();
    let output = manifold_seal(
        &[
            "--secret",
            vector["app_secret"].as_str().unwrap(),
            "--request-ref",
            vector["request_ref"].as_str().unwrap(),
            "--kind",
            vector["kind"].as_str().unwrap(),
            "--nonce-hex",
            vector["nonce_hex"].as_str().unwrap(),
            vector["plaintext"].as_str().unwrap(),
        ],
        None,
    );
    assert_eq!(
        stdout(&output).trim_end(),
        vector["secure"].as_str().unwrap()
    );
}

#[test]
fn signs_the_first_vector() {
    let vector = first_vector();
    let output = manifold_seal(
        &[
            "--secret",
            vector["app_secret"].as_str().unwrap(),
            "--request-ref",
            vector["request_ref"].as_str().unwrap(),
            "--sign",
        ],
        None,
    );
    assert_eq!(
        stdout(&output).trim_end(),
        vector["signature"].as_str().unwrap()
    );
}

#[test]
fn reads_the_plaintext_from_stdin_and_seals_with_a_random_nonce() {
    let secret = "manifold-demo-app-secret-0001-abcdefgh";
    let args = [
        "--secret",
        secret,
        "--request-ref",
        "req-9",
        "--kind",
        "validate",
    ];
    let first = stdout(&manifold_seal(&args, Some("{\"otp\": \"123456\"}\n")));
    let second = stdout(&manifold_seal(&args, Some("{\"otp\": \"123456\"}\n")));
    assert_ne!(first, second);
    let key = AppKey::derive(&SecretString::from(secret));
    let input = open_validation(&key, "req-9", first.trim_end()).unwrap();
    assert_eq!(input.expose(), "123456");
}

#[test]
fn refuses_a_bad_layout_naming_the_field_but_not_the_value() {
    let output = manifold_seal(
        &[
            "--secret",
            "manifold-demo-app-secret-0001-abcdefgh",
            "--request-ref",
            "req-1",
            "--kind",
            "bank.account",
            r#"{"account_number": "98765", "bank_code": "058"}"#,
        ],
        None,
    );
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("`account_number` must be exactly 10 digits"),
        "{stderr}"
    );
    assert!(!stderr.contains("98765"), "{stderr}");
}

#[test]
fn refuses_an_unknown_kind() {
    let output = manifold_seal(
        &[
            "--secret",
            "s",
            "--request-ref",
            "r",
            "--kind",
            "iban",
            "{}",
        ],
        None,
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains("bank.account, card, wallet, msisdn or validate"));
}
