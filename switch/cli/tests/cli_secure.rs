//! `manifold seal`, `open` and `sign` as an app developer runs them.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use manifold_crypto::message_signature::{
    verify_request, ReceivedRequest, VerifiedSignature, VerifyPolicy,
};
use manifold_crypto::plaintext::open_validation;
use manifold_crypto::{AppKey, SecretString, SignatureError, SigningKey};
use serde_json::Value;

fn first_vector() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/secure/vectors.json");
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    fixture["vectors"][0].clone()
}

/// `manifold seal ARGS`, or `manifold sign ARGS` when `args` start with
/// `sign-request` (the tests' own name for it).
fn manifold_seal(args: &[&str], stdin: Option<&str>) -> Output {
    let full: Vec<&str> = match args.split_first() {
        Some((&"sign-request", rest)) => std::iter::once("sign")
            .chain(rest.iter().copied())
            .collect(),
        Some((&"open", _)) => args.to_vec(),
        _ => std::iter::once("seal")
            .chain(args.iter().copied())
            .collect(),
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_manifold"))
        .args(&full)
        .env_remove("MANIFOLD_APP_SECRET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(input) = stdin {
        // A refusal may exit before it reads its input; the pipe closing
        // then is the command's answer, not the test's failure.
        match pipe.write_all(input.as_bytes()) {
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
            written => written.unwrap(),
        }
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
fn the_retired_sign_flag_is_refused() {
    // The old `Signature` header (an HMAC of request_ref alone) is accepted nowhere; its flag went
    // with it, replaced by `sign-request`.
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
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--sign"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
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
        .contains("bank.account, card, wallet, msisdn, token or validate"));
}

#[test]
fn open_prints_what_seal_sealed_and_refuses_another_request_ref() {
    let secret = "manifold-demo-app-secret-0001-abcdefgh";
    let plaintext = r#"{"account_number":"0123456789","bank_code":"058"}"#;
    let sealed = stdout(&manifold_seal(
        &[
            "--secret",
            secret,
            "--request-ref",
            "req-7",
            "--kind",
            "bank.account",
            plaintext,
        ],
        None,
    ));
    let opened = manifold_seal(
        &[
            "open",
            "--secret",
            secret,
            "--request-ref",
            "req-7",
            "--kind",
            "bank.account",
        ],
        Some(&sealed),
    );
    assert_eq!(stdout(&opened).trim_end(), plaintext);

    let refused = manifold_seal(
        &[
            "open",
            "--secret",
            secret,
            "--request-ref",
            "req-8",
            "--kind",
            "bank.account",
            sealed.trim(),
        ],
        None,
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(refused.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.starts_with("manifold: cannot open it"), "{stderr}");
}

/// Parses `sign-request`'s output: exactly the three `Name: value` lines, in order.
fn parse_headers(output: &str) -> HeaderMap {
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), 3, "{output}");
    let mut headers = HeaderMap::new();
    for (line, name) in lines
        .iter()
        .zip(["Content-Digest", "Signature-Input", "Signature"])
    {
        let value = line
            .strip_prefix(&format!("{name}: "))
            .unwrap_or_else(|| panic!("expected a {name} line: {line}"));
        headers.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    headers
}

/// Runs `sign-request` with `args` and parses its output.
fn sign_request_headers(args: &[&str], stdin: Option<&str>) -> HeaderMap {
    let mut full = vec!["sign-request"];
    full.extend_from_slice(args);
    parse_headers(&stdout(&manifold_seal(&full, stdin)))
}

fn verify(
    headers: &HeaderMap,
    secret: &str,
    method: &str,
    path: &str,
    body: &[u8],
    now: u64,
) -> Result<VerifiedSignature, SignatureError> {
    let key = SigningKey::for_app(&AppKey::derive(&SecretString::from(secret)));
    let request = ReceivedRequest {
        method,
        path,
        headers,
        body,
    };
    verify_request(&key, "demo-app", &request, &VerifyPolicy::default(), now)
}

const SECRET: &str = "manifold-demo-app-secret-0001-abcdefgh";

#[test]
fn sign_request_prints_headers_the_switch_verifies() {
    // The body ends in a newline, as a file usually does: it is signed as is, not trimmed.
    let body = "{\"request_ref\": \"req-0042\", \"request_type\": \"get_balance\"}\n";
    let headers = sign_request_headers(
        &[
            "--secret",
            SECRET,
            "--key-id",
            "demo-app",
            "--path",
            "/transact",
            "--created",
            "1700000000",
        ],
        Some(body),
    );
    assert_eq!(
        verify(
            &headers,
            SECRET,
            "POST",
            "/transact",
            body.as_bytes(),
            1_700_000_000
        ),
        Ok(VerifiedSignature {
            key_id: "demo-app".into(),
            nonce: "req-0042".into(),
            created: 1_700_000_000,
        })
    );
    assert_eq!(
        verify(
            &headers,
            SECRET,
            "POST",
            "/transact",
            body.trim_end().as_bytes(),
            1_700_000_000
        ),
        Err(SignatureError::DigestMismatch)
    );
    assert_eq!(
        verify(
            &headers,
            SECRET,
            "POST",
            "/transact/validate",
            body.as_bytes(),
            1_700_000_000
        ),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        verify(
            &headers,
            "manifold-demo-app-secret-0001-abcdefgi",
            "POST",
            "/transact",
            body.as_bytes(),
            1_700_000_000
        ),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn sign_request_reads_a_body_file_and_signs_now_by_default() {
    let body = br#"{"request_ref":"req-0043","transaction_ref":"txn-1"}"#;
    let file = std::env::temp_dir().join(format!("manifold-seal-body-{}.json", std::process::id()));
    std::fs::write(&file, body).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_manifold"))
        .args([
            "sign",
            "--key-id",
            "demo-app",
            "--path",
            "/transact/query",
            "--method",
            "PUT",
            "--body-file",
            file.to_str().unwrap(),
        ])
        .env("MANIFOLD_APP_SECRET", SECRET)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    std::fs::remove_file(&file).unwrap();
    let headers = parse_headers(&stdout(&output));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let verified = verify(&headers, SECRET, "PUT", "/transact/query", body, now).unwrap();
    assert_eq!(verified.nonce, "req-0043");
    assert!(verified.created.abs_diff(now) < 60);
}

#[test]
fn sign_request_takes_an_explicit_nonce_and_needs_one_otherwise() {
    let args = [
        "--secret",
        SECRET,
        "--key-id",
        "demo-app",
        "--path",
        "/notify/sms",
        "--created",
        "1700000000",
    ];
    let body = "to=2348022000008";
    let mut with_nonce = args.to_vec();
    with_nonce.extend(["--nonce", "n-1"]);
    let headers = sign_request_headers(&with_nonce, Some(body));
    assert_eq!(
        verify(
            &headers,
            SECRET,
            "POST",
            "/notify/sms",
            body.as_bytes(),
            1_700_000_000
        )
        .unwrap()
        .nonce,
        "n-1"
    );

    let mut full = vec!["sign-request"];
    full.extend_from_slice(&args);
    let output = manifold_seal(&full, Some(body));
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("request_ref") && stderr.contains("--nonce"),
        "{stderr}"
    );

    let output = manifold_seal(&full, Some(r#"{"request_ref": "order|ü|42"}"#));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("`nonce` must be printable ASCII"),
        "{stderr}"
    );
}

#[test]
fn a_secret_shorter_than_any_app_secret_is_refused_without_quoting_it() {
    let short = "short-secret-xyz";
    for args in [
        vec![
            "--secret",
            short,
            "--request-ref",
            "ref-1",
            "--kind",
            "msisdn",
            "{\"msisdn\":\"2348022000008\"}",
        ],
        vec![
            "sign-request",
            "--secret",
            short,
            "--key-id",
            "app",
            "--path",
            "/transact",
            "--nonce",
            "ref-1",
        ],
    ] {
        let output = manifold_seal(&args, Some("{\"request_ref\":\"ref-1\"}"));
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(output.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("at least 32"), "{stderr}");
        assert!(!stderr.contains(short), "{stderr}");
    }
}
