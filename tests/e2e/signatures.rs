//! What a captured request is worth to an attacker: nothing beyond itself.
//!
//! Apps sign `@method`, `@path`, the body's `Content-Digest`, `created` and
//! `nonce` = `request_ref` (RFC 9421, docs/secure.md); the switch signs its
//! calls to provider microservices the same way under the provider's key.
//! Each test here takes a real signed request and tries to make it do
//! something else.

use manifold_crypto::message_signature::{sign_request, SignatureParams, SigningKey};
use manifold_crypto::SecretString;
use manifold_e2e::*;
use serde_json::{json, Value};

use crate::rig::{Mode, Rig};

type Headers = Vec<(&'static str, String)>;

/// The headers of `headers` with `name` replaced by `value`.
fn with(headers: &Headers, name: &'static str, value: String) -> Headers {
    let mut headers: Headers = headers
        .iter()
        .filter(|(n, _)| *n != name)
        .cloned()
        .collect();
    headers.push((name, value));
    headers
}

fn bytes(body: &Value) -> Vec<u8> {
    body.to_string().into_bytes()
}

#[tokio::test]
async fn a_captured_app_signature_is_good_for_its_own_request_only() {
    let rig = Rig::start(Mode::InProcess).await;
    let app = rig.app(QUICK_APP);

    // The captured request: a signed transfer, executed once.
    let transfer = app.transact_body("cap-1", "t-cap-1", "transfer_funds", "0123456789", 150_000);
    let transfer_headers = app.auth_headers("/transact", &bytes(&transfer));
    let first = app
        .post_raw("/transact", bytes(&transfer), &transfer_headers)
        .await;
    assert_eq!(first.status(), "Successful", "{}", first.raw);
    let calls = rig.provider_transact_calls().await;
    let balance = rig.balance("0123456789", "before").await;
    let transactions = rig.switch.store.transaction_count().await.unwrap();

    // Replayed unchanged inside the window: the stored answer, no second
    // execution.
    let replay = app
        .post_raw("/transact", bytes(&transfer), &transfer_headers)
        .await;
    assert_eq!((replay.http, &replay.raw), (first.http, &first.raw));

    // Everything else under the captured signature is refused.
    let mut other = transfer.clone();
    other["transaction"]["amount"] = json!(9_000_000);
    other["transaction"]["details"]["destination_account"] = json!("1111111111");
    other["transaction"]["customer"]["mobile_no"] = json!("2348099999999");
    let mut other_ref =
        app.transact_body("cap-2", "t-cap-2", "transfer_funds", "0123456789", 150_000);
    other_ref["request_ref"] = json!("cap-2");
    let reverse = json!({"request_ref": "cap-1", "auth": {"auth_provider": "demo"},
        "transaction": {"transaction_ref": "t-cap-1"}});
    let otp_app = rig.app(OTP_APP);
    let cases: Vec<(&str, &str, Vec<u8>, Headers)> = vec![
        (
            "same request_ref, another amount, destination and phone",
            "/transact",
            bytes(&other),
            transfer_headers.clone(),
        ),
        (
            "a new body whose Content-Digest was recomputed",
            "/transact",
            bytes(&other),
            with(
                &transfer_headers,
                "content-digest",
                manifold_crypto::message_signature::content_digest(&bytes(&other)),
            ),
        ),
        (
            "another request_ref and transaction",
            "/transact",
            bytes(&other_ref),
            transfer_headers.clone(),
        ),
        (
            "the same body on another endpoint",
            "/transact/validate",
            bytes(&transfer),
            transfer_headers.clone(),
        ),
        (
            "a reversal under the transfer's signature",
            "/transact/reverse",
            bytes(&reverse),
            transfer_headers.clone(),
        ),
        (
            "another app's key with the captured signature",
            "/transact",
            bytes(&transfer),
            with(
                &transfer_headers,
                "authorization",
                format!("Bearer {}", OTP_APP.1),
            ),
        ),
        (
            "another app's key signing with the captured app's key id",
            "/transact",
            bytes(&transfer),
            with(
                &otp_app.auth_headers("/transact", &bytes(&transfer)),
                "signature-input",
                transfer_headers
                    .iter()
                    .find(|(n, _)| *n == "signature-input")
                    .unwrap()
                    .1
                    .clone(),
            ),
        ),
    ];
    for (name, path, body, headers) in cases {
        let reply = app.post_raw(path, body, &headers).await;
        assert_eq!(
            (reply.http, reply.status(), reply.error()),
            (401, "Failed", "bad_signature"),
            "{name}: {}",
            reply.raw
        );
    }
    assert_eq!(rig.provider_transact_calls().await, calls + 1); // the balance enquiry
    assert_eq!(rig.balance("0123456789", "after").await, balance);
    assert_eq!(
        rig.switch.store.transaction_count().await.unwrap(),
        transactions + 1
    );
    let query = app.query("q-cap", "t-cap-1").await;
    assert_eq!(query.body["data"]["transaction"]["reversal"], Value::Null);
    assert_eq!(query.body["data"]["transaction"]["amount"], 150_000);
}

#[tokio::test]
async fn a_captured_query_reads_its_own_transaction_and_nothing_else() {
    let rig = Rig::start(Mode::InProcess).await;
    let app = rig.app(QUICK_APP);
    for n in 1..=2 {
        let done = app
            .transfer(&format!("q-t{n}"), &format!("t-q{n}"), "0123456789", 10_000)
            .await;
        assert_eq!(done.status(), "Successful", "{}", done.raw);
    }
    let query = json!({"request_ref": "q-1", "auth": {"auth_provider": "demo"},
        "transaction": {"transaction_ref": "t-q1"}});
    let headers = app.auth_headers("/transact/query", &bytes(&query));
    let first = app
        .post_raw("/transact/query", bytes(&query), &headers)
        .await;
    assert_eq!(first.status(), "Successful", "{}", first.raw);
    // A replay reads the same transaction again.
    let again = app
        .post_raw("/transact/query", bytes(&query), &headers)
        .await;
    assert_eq!(again.body["data"]["transaction"]["transaction_ref"], "t-q1");

    let mut other = query.clone();
    other["transaction"]["transaction_ref"] = json!("t-q2");
    for (name, path, body) in [
        ("another transaction", "/transact/query", bytes(&other)),
        ("a reversal", "/transact/reverse", bytes(&query)),
    ] {
        let reply = app.post_raw(path, body, &headers).await;
        assert_eq!(
            (reply.http, reply.error()),
            (401, "bad_signature"),
            "{name}: {}",
            reply.raw
        );
    }
    let check = app.query("q-2", "t-q1").await;
    assert_eq!(check.body["data"]["transaction"]["reversal"], Value::Null);
}

#[tokio::test]
async fn the_window_the_nonce_and_unsigned_calls() {
    let rig = Rig::start(Mode::InProcess).await;
    let app = rig.app(QUICK_APP);
    let now = unix_now();
    let body = app.transact_body("w-1", "t-w-1", "get_balance", "0123456789", 0);
    let raw = bytes(&body);
    let bearer = ("authorization", format!("Bearer {}", QUICK_APP.1));
    let signed_at = |created: u64, nonce: &str| {
        let mut headers = app.signature_headers_with("/transact", &raw, nonce, created);
        headers.push(bearer.clone());
        headers
    };
    for (name, headers, error) in [
        (
            "six minutes old",
            signed_at(now - 360, "w-1"),
            "bad_signature",
        ),
        (
            "six minutes ahead",
            signed_at(now + 360, "w-1"),
            "bad_signature",
        ),
        (
            "nonce is not the request_ref",
            signed_at(now, "w-2"),
            "bad_signature",
        ),
        ("unsigned", vec![bearer.clone()], "signature_required"),
        (
            "the old request_ref HMAC header",
            vec![bearer.clone(), ("signature", "ab".repeat(32))],
            "bad_signature",
        ),
    ] {
        let reply = app.post_raw("/transact", raw.clone(), &headers).await;
        assert_eq!(
            (reply.http, reply.error()),
            (401, error),
            "{name}: {}",
            reply.raw
        );
        assert!(!reply.message().is_empty());
    }
    let nonce_reply = app
        .post_raw("/transact", raw.clone(), &signed_at(now, "w-2"))
        .await;
    assert_eq!(nonce_reply.error_fields(), ["request_ref"]);
    assert_eq!(rig.switch.store.transaction_count().await.unwrap(), 0);
    // Four minutes of clock difference is inside the default window.
    let ok = app
        .post_raw("/transact", raw.clone(), &signed_at(now - 240, "w-1"))
        .await;
    assert_eq!(ok.status(), "Successful", "{}", ok.raw);

    // An app the host lets call unsigned may; a signature it sends is checked.
    let relaxed = rig.app(UNSIGNED_APP);
    let plain = relaxed.transact_body("u-1", "t-u-1", "get_balance", "0123456789", 0);
    let reply = relaxed
        .post_raw(
            "/transact",
            bytes(&plain),
            &[("authorization", format!("Bearer {}", UNSIGNED_APP.1))],
        )
        .await;
    assert_eq!(reply.status(), "Successful", "{}", reply.raw);
    let forged = relaxed.transact_body("u-2", "t-u-2", "get_balance", "0123456789", 0);
    let mut headers = app.signature_headers("/transact", &bytes(&forged));
    headers.push(("authorization", format!("Bearer {}", UNSIGNED_APP.1)));
    let reply = relaxed
        .post_raw("/transact", bytes(&forged), &headers)
        .await;
    assert_eq!(
        (reply.http, reply.error()),
        (401, "bad_signature"),
        "{}",
        reply.raw
    );
}

#[tokio::test]
async fn an_address_that_keeps_failing_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let text = with_server_settings(
        &in_process_demo_config(dir.path()),
        "auth_failure_limit = 3\nauth_lockout_secs = 600",
    );
    let switch = InProcessSwitch::start(&parse_config(&text), Default::default()).await;
    let app = AppClient::new(&switch.url(), QUICK_APP, "demo");
    let body = app.transact_body("l-1", "t-l-1", "get_balance", "0123456789", 0);
    for attempt in 0..3 {
        let reply = app
            .post_raw(
                "/transact",
                bytes(&body),
                &[(
                    "authorization",
                    format!("Bearer wrong-key-{attempt}-0123456789ab"),
                )],
            )
            .await;
        assert_eq!(reply.http, 401, "{}", reply.raw);
    }
    // Now even the right key and signature wait out the lockout.
    let response = http_client()
        .post(format!("{}/transact", switch.url()))
        .body(bytes(&body))
        .headers(
            app.auth_headers("/transact", &bytes(&body))
                .into_iter()
                .map(|(name, value)| (name.parse().unwrap(), value.parse().unwrap()))
                .collect(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=600).contains(&retry_after), "{retry_after}");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["data"]["error"], "too_many_auth_failures");
    assert_eq!(switch.store.transaction_count().await.unwrap(), 0);
    switch.stop().await;
}

/// The body of a provider-protocol `/transact` that moves money at once.
fn provider_transfer(transaction_ref: &str) -> Vec<u8> {
    json!({
        "app_id": "quick",
        "request_ref": format!("direct-{transaction_ref}"),
        "request_type": "transfer_funds",
        "transaction_ref": transaction_ref,
        "otp_override": true,
        "source": {"type": "bank.account", "account_number": "0123456789", "bank_code": "058"},
        "transaction": {
            "amount": 500_000,
            "customer": {"mobile_no": "2348022000008"},
            "details": {"destination_account": "9876543210", "destination_bank_code": "044"}
        }
    })
    .to_string()
    .into_bytes()
}

/// The switch's signature on a provider call, made as the switch makes it.
fn hop_headers(secret: &str, key_id: &str, path: &str, body: &[u8], created: u64) -> Headers {
    let signed = sign_request(
        &SigningKey::for_provider_hop(&SecretString::from(secret)),
        "POST",
        path,
        body,
        &SignatureParams {
            key_id,
            created,
            nonce: &format!("{created}-{}", body.len()),
        },
    )
    .unwrap();
    vec![
        ("content-digest", signed.content_digest),
        ("signature-input", signed.signature_input),
        ("signature", signed.signature),
    ]
}

#[tokio::test]
async fn a_provider_microservice_takes_calls_from_the_switch_only() {
    let rig = Rig::start(Mode::Remote).await;
    let app = rig.app(QUICK_APP);
    // Through the switch, signed: works.
    let done = app.transfer("hop-1", "t-hop-1", "0123456789", 10_000).await;
    assert_eq!(done.status(), "Successful", "{}", done.raw);
    let balance = rig.balance("0123456789", "hop-before").await;
    let calls = rig.provider_transact_calls().await;
    let provider_url = rig.remote_url();
    let direct = AppClient::new(&provider_url, QUICK_APP, "demo");
    let now = unix_now();
    let body = provider_transfer("t-direct");

    let stranger = "stranger-hop-secret-0123456789-abcdefgh";
    let reverse =
        json!({"app_id": "quick", "request_ref": "direct-rev", "request_type": "transfer_funds",
        "transaction_ref": "t-hop-1"})
        .to_string()
        .into_bytes();
    let query =
        json!({"app_id": "quick", "request_type": "transfer_funds", "transaction_ref": "t-hop-1"})
            .to_string()
            .into_bytes();
    let cases: Vec<(&str, &str, Vec<u8>, Headers)> = vec![
        ("unsigned transfer", "/transact", body.clone(), vec![]),
        (
            "unsigned reversal",
            "/transact/reverse",
            reverse.clone(),
            vec![],
        ),
        (
            "unsigned query of another app's outcome",
            "/transact/query",
            query.clone(),
            vec![],
        ),
        (
            "signed with another secret",
            "/transact",
            body.clone(),
            hop_headers(stranger, PROVIDER_KEY_ID, "/transact", &body, now),
        ),
        (
            "signed under another key id",
            "/transact",
            body.clone(),
            hop_headers(PROVIDER_SECRET, "demo", "/transact", &body, now),
        ),
        (
            "two minutes old (window 60 s)",
            "/transact",
            body.clone(),
            hop_headers(
                PROVIDER_SECRET,
                PROVIDER_KEY_ID,
                "/transact",
                &body,
                now - 120,
            ),
        ),
        (
            "a query's signature on a reversal",
            "/transact/reverse",
            reverse.clone(),
            hop_headers(
                PROVIDER_SECRET,
                PROVIDER_KEY_ID,
                "/transact/query",
                &query,
                now,
            ),
        ),
    ];
    for (name, path, body, headers) in cases {
        let reply = direct.post_raw(path, body, &headers).await;
        assert_eq!(
            (reply.http, reply.body["error"].as_str()),
            (401, Some("unauthenticated")),
            "{name}: {}",
            reply.raw
        );
    }
    // A correctly signed call goes through once; its replay does not.
    let signed = hop_headers(PROVIDER_SECRET, PROVIDER_KEY_ID, "/transact", &body, now);
    let accepted = direct.post_raw("/transact", body.clone(), &signed).await;
    assert_eq!(accepted.http, 200, "{}", accepted.raw);
    assert_eq!(accepted.body["status"], "Successful", "{}", accepted.raw);
    let replayed = direct.post_raw("/transact", body.clone(), &signed).await;
    assert_eq!(
        (replayed.http, replayed.body["error"].as_str()),
        (401, Some("unauthenticated")),
        "{}",
        replayed.raw
    );
    assert!(
        replayed.raw.contains("already received"),
        "{}",
        replayed.raw
    );

    // Only the one signed call reached the bank; the reversal never did.
    assert_eq!(
        rig.balance("0123456789", "hop-after").await,
        balance - 500_000
    );
    assert_eq!(rig.provider_transact_calls().await, calls + 2); // and the enquiry
    let query = app.query("hop-q", "t-hop-1").await;
    assert_eq!(query.body["data"]["transaction"]["reversal"], Value::Null);
}

/// A signed call the switch answered "nothing was done" (the provider was
/// unreachable) left no stored answer for idempotency to give. Its captured
/// bytes must not go through once the provider is back; the app's own retry,
/// signed anew, must.
#[tokio::test]
async fn a_captured_call_that_did_nothing_cannot_be_replayed_once_the_provider_is_back() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = reserved.local_addr().unwrap();
    drop(reserved);
    let dir = tempfile::tempdir().unwrap();
    let config = parse_config(&config_text(
        dir.path(),
        &[ProviderSpec::Remote {
            name: "flaky",
            url: format!("http://{address}"),
        }],
        5_000,
    ));
    let switch = InProcessSwitch::start(&config, Default::default()).await;
    let app = AppClient::new(&switch.url(), QUICK_APP, "flaky");
    let transfer = app.transact_body(
        "spent-1",
        "t-spent-1",
        "transfer_funds",
        "0123456789",
        150_000,
    );
    let now = unix_now();
    let mut captured = app.signature_headers_with("/transact", &bytes(&transfer), "spent-1", now);
    captured.push(("authorization", format!("Bearer {}", QUICK_APP.1)));
    let first = app.post_raw("/transact", bytes(&transfer), &captured).await;
    assert_eq!(
        (first.http, first.error()),
        (503, "provider_unavailable"),
        "{}",
        first.raw
    );

    // The provider comes back on the same address.
    let provider = MockServer::builder()
        .listener(std::net::TcpListener::bind(address).unwrap())
        .start()
        .await;
    Mock::given(method("POST"))
        .and(path("/transact"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": "Successful", "message": "Transfer completed", "provider_response_code": "00"
        })))
        .expect(1)
        .mount(&provider)
        .await;

    // The captured bytes, again: refused, and the provider hears nothing.
    let replay = app.post_raw("/transact", bytes(&transfer), &captured).await;
    assert_eq!(
        (replay.http, replay.error()),
        (401, "bad_signature"),
        "{}",
        replay.raw
    );
    assert!(replay.message().contains("signed anew"), "{}", replay.raw);
    assert_eq!(switch.store.transaction_count().await.unwrap(), 0);

    // The app's retry of the same references, signed a second later, is
    // a new request and goes through once.
    let mut retry = app.signature_headers_with("/transact", &bytes(&transfer), "spent-1", now + 1);
    retry.push(("authorization", format!("Bearer {}", QUICK_APP.1)));
    let done = app.post_raw("/transact", bytes(&transfer), &retry).await;
    assert_eq!(done.status(), "Successful", "{}", done.raw);
    switch.stop().await;
    provider.verify().await;
}

/// A captured `/transact/validate` or `/transact/reverse`, sent again inside
/// the window, gets the stored answer and does nothing twice.
#[tokio::test]
async fn a_captured_validate_or_reversal_replayed_is_answered_from_storage() {
    let rig = Rig::start(Mode::InProcess).await;
    let otp = rig.app(OTP_APP);
    let waiting = otp.get_balance("v-1", "t-v-1", "0123456789").await;
    assert_eq!(waiting.status(), "WaitingForOTP", "{}", waiting.raw);
    let code = latest_otp(&rig.outbox, "2348022000008");
    let validate = otp.validate_body("v-2", "t-v-1", "get_balance", &code);
    let headers = otp.auth_headers("/transact/validate", &bytes(&validate));
    let first = otp
        .post_raw("/transact/validate", bytes(&validate), &headers)
        .await;
    assert_eq!(first.status(), "Successful", "{}", first.raw);
    let again = otp
        .post_raw("/transact/validate", bytes(&validate), &headers)
        .await;
    assert_eq!((again.http, &again.raw), (first.http, &first.raw));

    let quick = rig.app(QUICK_APP);
    let balance = rig.balance("0123456789", "rev-before").await;
    let done = quick.transfer("rv-1", "t-rv-1", "0123456789", 20_000).await;
    assert_eq!(done.status(), "Successful", "{}", done.raw);
    let reverse = json!({"request_ref": "rv-2", "auth": {"auth_provider": "demo"},
        "transaction": {"transaction_ref": "t-rv-1"}});
    let headers = quick.auth_headers("/transact/reverse", &bytes(&reverse));
    let first = quick
        .post_raw("/transact/reverse", bytes(&reverse), &headers)
        .await;
    assert_eq!(first.status(), "Successful", "{}", first.raw);
    let again = quick
        .post_raw("/transact/reverse", bytes(&reverse), &headers)
        .await;
    assert_eq!((again.http, &again.raw), (first.http, &first.raw));
    // Reversed once: the money is back, not twice over.
    assert_eq!(rig.balance("0123456789", "rev-after").await, balance);
}

/// A switch whose provider secret is not the provider's gets every call
/// refused unread: the app is told nothing was done (502), nothing is
/// recorded, and the provider's ledger does not move.
#[tokio::test]
async fn a_switch_the_provider_does_not_trust_moves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let provider = ProviderProcess::start(
        &dir.path().join("provider"),
        &dir.path().join("outbox.jsonl"),
    );
    let text = config_text(
        dir.path(),
        &[ProviderSpec::Remote {
            name: "demo",
            url: provider.url(),
        }],
        5_000,
    )
    .replace(PROVIDER_SECRET, "not-the-providers-secret-0123456789-abcd");
    let switch = InProcessSwitch::start(&parse_config(&text), Default::default()).await;
    let app = AppClient::new(&switch.url(), QUICK_APP, "demo");
    let reply = app.transfer("w-1", "t-w-1", "0123456789", 10_000).await;
    assert_eq!(
        (reply.http, reply.error()),
        (502, "provider_rejected"),
        "{}",
        reply.raw
    );
    assert!(!reply.raw.contains("secret"), "{}", reply.raw);
    assert_eq!(switch.store.transaction_count().await.unwrap(), 0);
    assert_eq!(provider.stats().await["transact"], 0);
    switch.stop().await;
}
