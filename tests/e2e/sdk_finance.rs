//! The SDK.finance connector (seed 001) through the switch: app → switch →
//! connector → the simulated platform, all on 127.0.0.1. Compiled into the
//! `manifold` binary, and as its own `sdk-finance-provider` process.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use manifold_e2e::*;
use manifold_upstreams::sdk_finance::{Coin, Fault, SdkFinanceSim, ServiceUser, Template};
use serde_json::{json, Value};

const LOGIN: &str = "manifold-service@example.com";
const PASSWORD: &str = "Service-user-pw#1";
const ALICE: &str = "coin-alice-0001";
const BOB: &str = "coin-bob-0002";

/// Bounds waits on other processes; not a measurement.
const LIMIT: Duration = Duration::from_secs(30);

async fn sim() -> SdkFinanceSim {
    SdkFinanceSim::start(
        ServiceUser {
            login: LOGIN,
            password: PASSWORD,
        },
        vec![
            Coin {
                serial: ALICE.into(),
                currency: "USD".into(),
                balance: 50_00,
            },
            Coin {
                serial: BOB.into(),
                currency: "USD".into(),
                balance: 0,
            },
        ],
        vec![Template {
            id: "tpl-alice-to-bob".into(),
            source: ALICE.into(),
            destination: BOB.into(),
        }],
    )
    .await
    .unwrap()
}

/// A switch whose one provider, `sdk-finance`, serves `collect`,
/// `disburse` and `transfer_funds` to the quick app; `endpoint` last, so
/// that it may end with a `[providers.settings]` table.
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
    for service in ["collect", "disburse", "transfer_funds"] {
        text.push_str(&format!(
            "[apps.services.{service}]\nproviders = [\"sdk-finance\"]\notp_override = true\nmax_amount = 10000000\n"
        ));
    }
    text.push_str(&format!(
        "[[providers]]\nname = \"sdk-finance\"\nservices = [\"collect\", \"disburse\", \"transfer_funds\"]\n\
         timeout_ms = 5000\nquery_interval_ms = 0\n{endpoint}\n"
    ));
    text
}

fn wallet_body(
    app: &AppClient,
    request_type: &str,
    request_ref: &str,
    transaction_ref: &str,
    coin: &str,
    amount: u64,
    details: Value,
) -> Value {
    let mut body = app.transact_body(
        request_ref,
        transaction_ref,
        request_type,
        "0123456789",
        amount,
    );
    body["auth"]["type"] = json!("wallet");
    body["auth"]["secure"] = json!(app.seal(
        request_ref,
        manifold_crypto::SecureKind::Wallet,
        &json!({ "wallet_id": coin })
    ));
    body["transaction"]["details"] = details;
    body
}

async fn call(
    app: &AppClient,
    request_type: &str,
    request_ref: &str,
    transaction_ref: &str,
    coin: &str,
    amount: u64,
) -> Reply {
    let body = wallet_body(
        app,
        request_type,
        request_ref,
        transaction_ref,
        coin,
        amount,
        Value::Null,
    );
    app.post("/transact", &body).await
}

#[tokio::test]
async fn the_manifold_binary_runs_sdk_finance_compiled_in() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = format!(
        "mode = \"in_process\"\nimplementation = \"sdk-finance\"\n[providers.settings]\n\
         base_url = \"{}\"\nlogin = \"{LOGIN}\"\npassword_env = \"E2E_SDKF_PASSWORD\"\nbank_id = \"settlement-bank\"",
        sim.url()
    );
    let path = dir.path().join("manifold.toml");
    std::fs::write(&path, config(dir.path(), &settings)).unwrap();
    let switch = SwitchProcess::start_with_env(&path, &[("E2E_SDKF_PASSWORD", PASSWORD)]);
    let app = AppClient::new(&switch.url(), QUICK_APP, "sdk-finance");

    // A top-up: Pending until the operator accepts, then Successful.
    let reply = call(&app, "collect", "r-1", "t-1", ALICE, 12_00).await;
    assert_eq!(
        (reply.http, reply.status()),
        (202, "Pending"),
        "{}",
        reply.raw
    );
    assert_eq!(reply.body["data"]["provider_response_code"], "09");
    assert_eq!(
        reply.body["data"]["provider_response"]["commission"],
        "0.12"
    );
    let created = sim.requests();
    assert_eq!(created.len(), 1);
    assert!(sim.decide(&created[0].id, true));
    let settled = app.query("q-1", "t-1").await;
    assert_eq!(settled.status(), "Successful", "{}", settled.raw);
    assert_eq!(sim.balance(ALICE), Some(62_00));

    // A transfer from a template completes in its call.
    let body = wallet_body(
        &app,
        "transfer_funds",
        "r-2",
        "t-2",
        ALICE,
        10_00,
        json!({"template_id": "tpl-alice-to-bob"}),
    );
    let reply = app.post("/transact", &body).await;
    assert_eq!(
        (reply.http, reply.status()),
        (200, "Successful"),
        "{}",
        reply.raw
    );
    assert_eq!(sim.balance(BOB), Some(10_00));

    // Refused: Failed with the platform's code.
    let reply = call(&app, "disburse", "r-3", "t-3", BOB, 90_00).await;
    assert_eq!(reply.status(), "Failed", "{}", reply.raw);
    assert_eq!(
        reply.body["data"]["provider_response_code"],
        "INSUFFICIENT_FUNDS"
    );

    // A withdrawal the operator declines fails, after the switch restarts.
    let reply = call(&app, "disburse", "r-4", "t-4", ALICE, 5_00).await;
    assert_eq!(reply.status(), "Pending", "{}", reply.raw);
    switch.kill();
    let id = sim.requests().last().unwrap().id.clone();
    assert!(sim.decide(&id, false));
    let switch = SwitchProcess::start_with_env(&path, &[("E2E_SDKF_PASSWORD", PASSWORD)]);
    let app = AppClient::new(&switch.url(), QUICK_APP, "sdk-finance");
    let declined = app.query("q-4", "t-4").await;
    assert_eq!(declined.status(), "Failed", "{}", declined.raw);
    assert_eq!(declined.body["data"]["provider_response_code"], "05");
}

#[tokio::test]
async fn sdk_finance_as_a_process_shares_one_token_and_recovers_a_lost_answer() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("sdkf-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let url = sim.url();
    let provider = ProviderProcess::start_connector(
        "sdk-finance-provider",
        &dir.path().join("sdk-finance-provider"),
        "127.0.0.1:0",
        &[
            "--base-url",
            &url,
            "--login",
            LOGIN,
            "--password-file",
            password_file.to_str().unwrap(),
            "--bank-id",
            "settlement-bank",
        ],
    );
    let config = parse_config(&config(
        dir.path(),
        &format!(
            "mode = \"remote\"\nurl = \"{}\"\nsecret = \"{PROVIDER_SECRET}\"\nkey_id = \"{PROVIDER_KEY_ID}\"",
            provider.url()
        ),
    ));
    let switch = InProcessSwitch::start(&config, Default::default()).await;
    let app = Arc::new(AppClient::new(&switch.url(), QUICK_APP, "sdk-finance"));

    assert_eq!(
        call(&app, "collect", "warm", "warm", ALICE, 1_00)
            .await
            .status(),
        "Pending"
    );
    sim.expire_tokens();
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                call(
                    &app,
                    "collect",
                    &format!("r-{i}"),
                    &format!("t-{i}"),
                    ALICE,
                    1_00,
                )
                .await
            })
        })
        .collect();
    for call in calls {
        let reply = tokio::time::timeout(LIMIT, call).await.unwrap().unwrap();
        assert_eq!(reply.status(), "Pending", "{}", reply.raw);
    }
    assert_eq!(sim.token_requests(), 2, "one token request for fifty calls");

    // The platform creates the request and its answer is lost: the query
    // finds it by our reference, and it settles when the operator decides.
    sim.set_fault(Fault::FailAfterCreating);
    let reply = call(&app, "collect", "r-lost", "t-lost", ALICE, 3_00).await;
    assert_eq!(reply.status(), "Pending", "{}", reply.raw);
    sim.set_fault(Fault::None);
    let found = app.query("q-lost-1", "t-lost").await;
    assert_eq!(
        found.body["data"]["provider_response_code"], "09",
        "{}",
        found.raw
    );
    let lost = sim
        .requests()
        .into_iter()
        .find(|r| r.external_id == "quick:t-lost")
        .unwrap();
    assert!(sim.decide(&lost.id, true));
    assert_eq!(app.query("q-lost-2", "t-lost").await.status(), "Successful");
    let created = sim
        .requests()
        .iter()
        .filter(|r| r.external_id == "quick:t-lost")
        .count();
    assert_eq!(created, 1, "created once");
    switch.stop().await;
}
