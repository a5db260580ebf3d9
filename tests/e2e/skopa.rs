//! The Skopa connector (seed 000) through the switch: app → switch →
//! connector → the simulated Skopa, all on 127.0.0.1. Compiled into the
//! `manifold` binary, and as its own `skopa-provider` process; Skopa's own
//! second factor carried by `/transact/validate`.

use std::path::Path;
use std::sync::Arc;

use manifold_crypto::SecureKind;
use manifold_e2e::*;
use manifold_upstreams::skopa::{SkopaSim, User};
use serde_json::{json, Value};

const ALICE: &str = "alice-skopa-refresh-token-0001";
const DAN: &str = "dan-skopa-refresh-token-000004";

async fn sim() -> SkopaSim {
    let user = |id: &str, refresh: &str, methods: &[&str]| User {
        id: id.into(),
        refresh_token: refresh.into(),
        balance: 10_000,
        methods: methods.iter().map(|m| m.to_string()).collect(),
        bank_accounts: vec![format!("bank-{id}")],
    };
    SkopaSim::start(vec![
        user("u-alice", ALICE, &["sms"]),
        user("u-bob", "bob-skopa-refresh-token-00002", &["sms"]),
        user("u-dan", DAN, &[]),
    ])
    .await
    .unwrap()
}

/// A switch whose one provider, `skopa`, serves the quick app (which skips
/// the switch's own OTPs: Skopa's second factor is Skopa's).
fn config(data: &Path, endpoint: &str) -> String {
    let (id, key, secret) = QUICK_APP;
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\n{TEST_DATA_AT_REST}[storage]\npath = {:?}\n\
         [notifications]\noutbox = {:?}\n\
         [[apps]]\nid = \"{id}\"\napi_key = \"{key}\"\nsecret = \"{secret}\"\n\
         [apps.limits]\nrequests_per_second = {TEST_APP_RATE}\n",
        data.join("switch").display().to_string(),
        data.join("outbox.jsonl").display().to_string(),
    );
    for service in ["transfer_funds", "disburse", "get_statement"] {
        text.push_str(&format!(
            "[apps.services.{service}]\nproviders = [\"skopa\"]\notp_override = true\nmax_amount = 10000000\n"
        ));
    }
    text.push_str(&format!(
        "[[providers]]\nname = \"skopa\"\nservices = [\"transfer_funds\", \"disburse\", \"get_statement\"]\n\
         read_only = [\"get_statement\"]\ntimeout_ms = 5000\nquery_interval_ms = 0\n{endpoint}\n"
    ));
    text
}

async fn call(
    app: &AppClient,
    request_type: &str,
    request_ref: &str,
    credential: &str,
    amount: u64,
    details: Value,
) -> Reply {
    app.post(
        "/transact",
        &body(app, request_type, request_ref, credential, amount, details),
    )
    .await
}

/// A `/transact` for Skopa: the customer's credential sealed as a token,
/// `details` as Skopa's, `transaction_ref` `t-<request_ref>`.
pub(crate) fn body(
    app: &AppClient,
    request_type: &str,
    request_ref: &str,
    credential: &str,
    amount: u64,
    details: Value,
) -> Value {
    let mut body = app.transact_body(
        request_ref,
        &format!("t-{request_ref}"),
        request_type,
        "0123456789",
        amount,
    );
    body["auth"]["type"] = json!("token");
    body["auth"]["secure"] = json!(app.seal(
        request_ref,
        SecureKind::Token,
        &json!({ "token": credential })
    ));
    body["transaction"]["details"] = details;
    body
}

/// Skopa's 2FA through the switch: `WaitingForOTP` with Skopa's prompt, a
/// wrong code, the right one; then a statement, and a refusal.
async fn exercise(app: &AppClient, sim: &SkopaSim) {
    let reply = call(
        app,
        "transfer_funds",
        "r-1",
        ALICE,
        30_00,
        json!({"receiver_id": "u-bob"}),
    )
    .await;
    assert_eq!(reply.status(), "WaitingForOTP", "{}", reply.raw);
    assert!(
        reply.message().contains("Skopa sent you by SMS"),
        "{}",
        reply.raw
    );
    let wrong = app
        .validate("v-1", "t-r-1", "transfer_funds", "000000")
        .await;
    assert_eq!(wrong.status(), "WaitingForOTP", "{}", wrong.raw);
    let code = sim.code_sent("u-alice", "sms").unwrap();
    let done = app.validate("v-2", "t-r-1", "transfer_funds", &code).await;
    assert_eq!(done.status(), "Successful", "{}", done.raw);
    assert_eq!(
        done.body["data"]["provider_response"]["reference"],
        "quick:t-r-1"
    );
    assert_eq!(sim.balance("u-bob"), Some(13_000));

    let statement = call(app, "get_statement", "r-2", ALICE, 0, json!({"limit": 10})).await;
    assert_eq!(statement.status(), "Successful", "{}", statement.raw);
    assert_eq!(
        statement.body["data"]["provider_response"]["records"][0]["amount"],
        "30.00"
    );

    let refused = call(
        app,
        "transfer_funds",
        "r-3",
        DAN,
        90_000,
        json!({"receiver_id": "u-bob"}),
    )
    .await;
    assert_eq!(refused.status(), "Failed", "{}", refused.raw);
    assert_eq!(
        refused.body["data"]["provider_response_code"],
        "insufficient_funds"
    );
    assert_eq!(sim.executed().len(), 1);
}

#[tokio::test]
async fn the_manifold_binary_runs_skopa_compiled_in() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = format!(
        "mode = \"in_process\"\nimplementation = \"skopa\"\n[providers.settings]\nbase_url = \"{}\"",
        sim.url()
    );
    let path = dir.path().join("manifold.toml");
    std::fs::write(&path, config(dir.path(), &settings)).unwrap();
    let switch = SwitchProcess::start(&path);
    let app = AppClient::new(&switch.url(), QUICK_APP, "skopa");
    exercise(&app, &sim).await;
}

#[tokio::test]
async fn skopa_as_a_process_carries_the_second_factor_and_one_refresh_for_fifty_calls() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let url = sim.url();
    let provider = ProviderProcess::start_connector(
        "skopa-provider",
        &dir.path().join("skopa-provider"),
        "127.0.0.1:0",
        &["--base-url", &url],
    );
    let config = parse_config(&config(
        dir.path(),
        &format!(
            "mode = \"remote\"\nurl = \"{}\"\nsecret = \"{PROVIDER_SECRET}\"\nkey_id = \"{PROVIDER_KEY_ID}\"",
            provider.url()
        ),
    ));
    let switch = InProcessSwitch::start(&config, Default::default()).await;
    let app = Arc::new(AppClient::new(&switch.url(), QUICK_APP, "skopa"));
    exercise(&app, &sim).await;

    let before = sim.refreshes();
    sim.expire_tokens();
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                call(&app, "get_statement", &format!("s-{i}"), DAN, 0, json!({})).await
            })
        })
        .collect();
    for call in calls {
        let reply = call.await.unwrap();
        assert_eq!(reply.status(), "Successful", "{}", reply.raw);
    }
    assert_eq!(sim.refreshes(), before + 1, "one refresh for fifty calls");
    switch.stop().await;
}
