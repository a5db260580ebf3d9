//! Every bad input gets a clear `Failed` envelope naming the problem, a 4xx
//! status, and changes nothing.

use manifold_crypto::{secure, AppKey, SecretString, SecureKind};
use manifold_e2e::*;
use serde_json::{json, Value};

use crate::rig::{Mode, Rig};

/// Applies `edit` to a valid get_balance body and expects a rejection.
struct Case {
    name: &'static str,
    edit: fn(&AppClient, &mut Value),
    http: u16,
    error: &'static str,
    fields: &'static [&'static str],
}

fn remove(body: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = if parent.is_empty() {
        &mut *body
    } else {
        body.pointer_mut(parent).unwrap()
    };
    target.as_object_mut().unwrap().remove(key);
}

fn flip_one_ciphertext_bit(secure_text: &str) -> String {
    use base64::Engine;
    let mut bytes = base64::engine::general_purpose::STANDARD
        .decode(secure_text)
        .unwrap();
    let last = bytes.len() - 1;
    bytes[last - 20] ^= 0x01;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

const CASES: &[Case] = &[
    Case {
        name: "missing request_ref",
        edit: |_, b| remove(b, "/request_ref"),
        http: 400,
        error: "invalid_request",
        fields: &["request_ref"],
    },
    Case {
        name: "missing request_type",
        edit: |_, b| remove(b, "/request_type"),
        http: 400,
        error: "invalid_request",
        fields: &["request_type"],
    },
    Case {
        name: "missing auth",
        edit: |_, b| remove(b, "/auth"),
        http: 400,
        error: "invalid_request",
        fields: &["auth"],
    },
    Case {
        name: "missing auth.type",
        edit: |_, b| remove(b, "/auth/type"),
        http: 400,
        error: "invalid_request",
        fields: &["auth.type"],
    },
    Case {
        name: "missing auth.secure",
        edit: |_, b| remove(b, "/auth/secure"),
        http: 400,
        error: "invalid_request",
        fields: &["auth.secure"],
    },
    Case {
        name: "missing auth.auth_provider",
        edit: |_, b| remove(b, "/auth/auth_provider"),
        http: 400,
        error: "invalid_request",
        fields: &["auth.auth_provider"],
    },
    Case {
        name: "missing transaction",
        edit: |_, b| remove(b, "/transaction"),
        http: 400,
        error: "invalid_request",
        fields: &["transaction"],
    },
    Case {
        name: "missing transaction.mock_mode",
        edit: |_, b| remove(b, "/transaction/mock_mode"),
        http: 400,
        error: "invalid_request",
        fields: &["transaction.mock_mode"],
    },
    Case {
        name: "missing transaction.transaction_ref",
        edit: |_, b| remove(b, "/transaction/transaction_ref"),
        http: 400,
        error: "invalid_request",
        fields: &["transaction.transaction_ref"],
    },
    Case {
        name: "missing transaction.amount",
        edit: |_, b| remove(b, "/transaction/amount"),
        http: 400,
        error: "invalid_request",
        fields: &["transaction.amount"],
    },
    Case {
        name: "two bad fields at once",
        edit: |_, b| {
            b["auth"]["type"] = json!("cheque");
            b["transaction"]["amount"] = json!(-1);
        },
        http: 400,
        error: "invalid_request",
        fields: &["auth.type", "transaction.amount"],
    },
    // Refused by the app's grants, which say nothing of whether the
    // request_type or provider exists for anybody else.
    Case {
        name: "unknown request_type",
        edit: |_, b| b["request_type"] = json!("buy_airtime"),
        http: 403,
        error: "service_not_allowed",
        fields: &["request_type"],
    },
    Case {
        name: "unknown provider",
        edit: |_, b| b["auth"]["auth_provider"] = json!("Beeceptor"),
        http: 403,
        error: "provider_not_allowed",
        fields: &["auth.auth_provider"],
    },
    Case {
        name: "tampered secure",
        edit: |_, b| {
            b["auth"]["secure"] = json!(flip_one_ciphertext_bit(
                b["auth"]["secure"].as_str().unwrap()
            ))
        },
        http: 400,
        error: "secure_rejected",
        fields: &["auth.secure"],
    },
    Case {
        name: "truncated secure",
        edit: |_, b| {
            let s = b["auth"]["secure"].as_str().unwrap();
            b["auth"]["secure"] = json!(s[..24].to_owned());
        },
        http: 400,
        error: "secure_rejected",
        fields: &["auth.secure"],
    },
    Case {
        name: "secure sealed with another app's key",
        edit: |_, b| {
            let other = AppKey::derive(&SecretString::from(OTP_APP.2));
            b["auth"]["secure"] = json!(secure::seal(
                &other,
                "r-1",
                SecureKind::BankAccount,
                bank_account("0123456789").to_string().as_bytes()
            ));
        },
        http: 400,
        error: "secure_rejected",
        fields: &["auth.secure"],
    },
    Case {
        name: "secure sealed for another request_ref",
        edit: |app, b| {
            b["auth"]["secure"] = json!(app.seal(
                "r-other",
                SecureKind::BankAccount,
                &bank_account("0123456789")
            ))
        },
        http: 400,
        error: "secure_rejected",
        fields: &["auth.secure"],
    },
    Case {
        name: "secure with a bad account number",
        edit: |app, b| {
            b["auth"]["secure"] = json!(app.seal(
                "r-1",
                SecureKind::BankAccount,
                &json!({"account_number": "12", "bank_code": "058"})
            ))
        },
        http: 400,
        error: "secure_rejected",
        fields: &["auth.secure.account_number"],
    },
    Case {
        name: "amount over the app's limit",
        edit: |_, b| {
            b["request_type"] = json!("transfer_funds");
            b["transaction"]["amount"] = json!(10_000_001u64);
        },
        http: 422,
        error: "amount_over_limit",
        fields: &["transaction.amount"],
    },
];

#[tokio::test]
async fn bad_requests_are_refused_with_the_field_named_and_nothing_recorded() {
    let rig = Rig::start(Mode::InProcess).await;
    let app = rig.app(QUICK_APP);
    for case in CASES {
        let mut body = app.transact_body("r-1", "t-1", "get_balance", "0123456789", 0);
        (case.edit)(&app, &mut body);
        let reply = app.post("/transact", &body).await;
        assert_eq!(
            (reply.http, reply.status(), reply.error()),
            (case.http, "Failed", case.error),
            "{}: {}",
            case.name,
            reply.raw
        );
        assert_eq!(
            reply.error_fields(),
            case.fields,
            "{}: {}",
            case.name,
            reply.raw
        );
        assert!(!reply.message().is_empty());
        assert!(
            !reply.raw.contains("0123456789"),
            "{}: the account number leaked",
            case.name
        );
    }
    assert_eq!(rig.switch.store.transaction_count().await.unwrap(), 0);
    assert_eq!(rig.provider_transact_calls().await, 0);
    // And the refs are still free: the valid request goes through.
    assert_eq!(
        app.get_balance("r-1", "t-1", "0123456789").await.status(),
        "Successful"
    );
}

#[tokio::test]
async fn limits_keys_signatures_and_json_are_checked_before_anything_is_recorded() {
    let rig = Rig::start(Mode::InProcess).await;
    let app = rig.app(QUICK_APP);
    let body = app.transact_body("r-1", "t-1", "get_balance", "0123456789", 0);
    let bytes = body.to_string().into_bytes();
    let bearer = |key: &str| vec![("authorization", format!("Bearer {key}"))];
    // The app's key and a valid signature of exactly these bytes: what is
    // wrong is in the body, not the credentials.
    let signed = |payload: &[u8]| app.auth_headers("/transact", payload);
    // A signed body in which two readers could see two amounts.
    let twice = body
        .to_string()
        .replacen("\"amount\":0", "\"amount\":0,\"amount\":5000000", 1)
        .into_bytes();
    assert_ne!(twice, bytes);

    type Headers = Vec<(&'static str, String)>;
    let cases: Vec<(&str, Vec<u8>, Headers, u16, &str)> = vec![
        ("no API key", bytes.clone(), vec![], 401, "unauthenticated"),
        (
            "wrong API key",
            bytes.clone(),
            bearer("not-a-key-0123456789abcdef"),
            401,
            "unauthenticated",
        ),
        (
            "basic instead of bearer",
            bytes.clone(),
            vec![("authorization", format!("Basic {}", QUICK_APP.1))],
            401,
            "unauthenticated",
        ),
        (
            "malformed JSON",
            b"{\"request_ref\": ".to_vec(),
            signed(b"{\"request_ref\": "),
            400,
            "malformed_json",
        ),
        (
            "JSON that is not an object",
            b"[1, 2]".to_vec(),
            signed(b"[1, 2]"),
            400,
            "malformed_json",
        ),
        (
            "a key given twice",
            twice.clone(),
            signed(&twice),
            400,
            "invalid_request",
        ),
        (
            "body over 64 KiB",
            vec![b' '; 70 * 1024],
            bearer(QUICK_APP.1),
            413,
            "body_too_large",
        ),
        (
            "wrong signature",
            bytes.clone(),
            [bearer(QUICK_APP.1), vec![("signature", "00".repeat(32))]].concat(),
            401,
            "bad_signature",
        ),
    ];
    for (name, payload, headers, http, error) in cases {
        let reply = app.post_raw("/transact", payload, &headers).await;
        assert_eq!(
            (reply.http, reply.status(), reply.error()),
            (http, "Failed", error),
            "{name}: {}",
            reply.raw
        );
    }

    // An app that must sign: unsigned is refused, signed goes through.
    let signed = rig.app(SIGNED_APP);
    let body = signed.transact_body("s-1", "st-1", "get_balance", "0123456789", 0);
    let unsigned = signed
        .post_raw(
            "/transact",
            body.to_string().into_bytes(),
            &bearer(SIGNED_APP.1),
        )
        .await;
    assert_eq!(
        (unsigned.http, unsigned.error()),
        (401, "signature_required")
    );
    let ok = signed.post("/transact", &body).await;
    assert_eq!(ok.status(), "Successful", "{}", ok.raw);

    assert_eq!(rig.switch.store.transaction_count().await.unwrap(), 1);
    let unknown_path = app.post("/transact/refund", &json!({})).await;
    assert_eq!(
        (unknown_path.http, unknown_path.error()),
        (404, "no_such_endpoint")
    );
}

#[tokio::test]
async fn a_validate_is_checked_against_the_transaction_it_names() {
    let rig = Rig::start(Mode::InProcess).await;
    let app = rig.app(OTP_APP);
    assert_eq!(
        app.get_balance("r-1", "t-1", "0123456789").await.status(),
        "WaitingForOTP"
    );
    let code = latest_otp(&rig.outbox, "2348022000008");

    let mismatch = app.validate("v-1", "t-1", "transfer_funds", &code).await;
    assert_eq!(
        (mismatch.http, mismatch.error()),
        (400, "transaction_mismatch")
    );
    assert_eq!(mismatch.error_fields(), ["request_type"]);

    let mut body = app.validate_body("v-2", "t-1", "get_balance", &code);
    body["auth"]["secure"] = json!(app.seal("v-2", SecureKind::BankAccount, &json!({"otp": code})));
    let wrong_kind = app.post("/transact/validate", &body).await;
    assert_eq!(
        (wrong_kind.http, wrong_kind.error()),
        (400, "secure_rejected")
    );

    let missing = app
        .post("/transact/validate", &json!({"request_ref": "v-3"}))
        .await;
    assert_eq!(missing.error(), "invalid_request");
    assert_eq!(
        missing.error_fields(),
        ["request_type", "auth", "transaction"]
    );

    // None of that spent an attempt: the right code still completes it.
    let done = app.validate("v-4", "t-1", "get_balance", &code).await;
    assert_eq!(done.status(), "Successful", "{}", done.raw);
}

/// The host's configuration with `transfer_funds` listed as `read_only`, which the
/// demo bank moves money for: the switch would call it with nothing on disk.
fn transfer_listed_read_only(text: &str) -> String {
    let reversible = "reversible = [\"transfer_funds\"]\n";
    assert!(text.contains(reversible), "config_text changed shape");
    text.replace(reversible, "read_only = [\"transfer_funds\"]\n")
}

#[tokio::test]
async fn a_read_only_list_naming_a_service_that_moves_money_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = parse_config(&transfer_listed_read_only(&in_process_demo_config(
        dir.path(),
    )));
    let refused = manifold_switch::Switch::open_with_registry(
        &config,
        &manifold_cli::compiled_providers(),
        Default::default(),
    )
    .await
    .err()
    .expect("the switch refuses to start")
    .to_string();
    assert!(
        refused.contains("read_only") && refused.contains("`transfer_funds`"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_remote_provider_refuses_a_call_the_switch_wrongly_believes_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox.jsonl");
    let provider = ProviderProcess::start(&dir.path().join("provider"), &outbox);
    let text = config_text(
        &dir.path().join("switch"),
        &[ProviderSpec::Remote {
            name: "demo",
            url: provider.url(),
        }],
        5_000,
    );
    let switch = InProcessSwitch::start(
        &parse_config(&transfer_listed_read_only(&text)),
        Default::default(),
    )
    .await;
    let app = AppClient::new(&switch.url(), QUICK_APP, "demo");
    let refused = app.transfer("ro-1", "ro-t1", "1000000001", 700).await;
    assert_eq!((refused.http, refused.error()), (502, "provider_rejected"));
    // No money moved: the source holds its opening balance.
    let balance = app.get_balance("ro-b1", "ro-b1", "1000000001").await;
    assert_eq!(
        balance.body["data"]["provider_response"]["avialable_balance"].as_u64(),
        Some(manifold_demo_provider::DemoSettings::default().opening_balance),
        "{}",
        balance.raw
    );
    // Nothing was recorded: the transaction is unknown.
    assert_eq!(app.query("ro-q1", "ro-t1").await.http, 404);
    switch.stop().await;
}
