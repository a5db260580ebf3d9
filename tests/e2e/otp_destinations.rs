//! OTPs go where the bank says: the holder on record of the source account,
//! never the number the calling app puts in `customer.mobile_no` — for the
//! demo bank compiled in and as its own microservice alike.

use std::collections::HashMap;

use manifold_e2e::*;
use manifold_provider::notify::OutboxNotifier;

const HOLDER: &str = "2348033333333";
const APP_CHOSEN: &str = "2349099999999";
const SETTINGS: &str = r#"customers = [{ account = "0123456789", mobile_no = "2348033333333" }]"#;

async fn assert_the_code_goes_to_the_holder(switch_url: &str, outbox: &std::path::Path) {
    let app = AppClient::new(switch_url, OTP_APP, "demo");
    let mut body = app.transact_body("r-1", "t-1", "get_balance", "0123456789", 0);
    address_transact_body(&mut body, None, APP_CHOSEN);
    let waiting = app.post("/transact", &body).await;
    assert_eq!(waiting.status(), "WaitingForOTP", "{}", waiting.raw);
    assert_eq!(
        waiting.message(),
        "Please enter the OTP sent to 2348033****33"
    );
    let sent = OutboxNotifier::read_all(outbox).unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, HOLDER);
    assert_eq!(sent[0].transaction_ref.as_deref(), Some("t-1"));
    assert!(sent.iter().all(|message| message.to != APP_CHOSEN));
    let done = app
        .validate("v-1", "t-1", "get_balance", &latest_otp(outbox, HOLDER))
        .await;
    assert_eq!(done.status(), "Successful", "{}", done.raw);
}

/// A switch with the demo bank compiled in, its registry from [`SETTINGS`].
async fn in_process_with_holder(dir: &std::path::Path) -> InProcessSwitch {
    let text = in_process_demo_config(dir).replacen(
        "implementation = \"demo\"\n",
        &format!(
            "implementation = \"demo\"\nsettings.customers = {}\n",
            &SETTINGS["customers = ".len()..]
        ),
        1,
    );
    InProcessSwitch::start(&parse_config(&text), HashMap::new()).await
}

#[tokio::test]
async fn the_in_process_demo_bank_sends_the_code_to_the_holder_on_record() {
    let dir = tempfile::tempdir().unwrap();
    let switch = in_process_with_holder(dir.path()).await;
    assert_the_code_goes_to_the_holder(&switch.url(), &dir.path().join("outbox.jsonl")).await;
    switch.stop().await;
}

#[tokio::test]
async fn the_demo_bank_microservice_sends_the_code_to_the_holder_on_record() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox.jsonl");
    let settings = dir.path().join("demo-settings.toml");
    std::fs::write(&settings, SETTINGS).unwrap();
    let provider = ProviderProcess::start_with(
        &dir.path().join("provider"),
        &outbox,
        "127.0.0.1:0",
        &["--settings".to_owned(), settings.display().to_string()],
    );
    let config = parse_config(&config_text(
        dir.path(),
        &[ProviderSpec::Remote {
            name: "demo",
            url: provider.url(),
        }],
        5_000,
    ));
    let switch = InProcessSwitch::start(&config, HashMap::new()).await;
    assert_the_code_goes_to_the_holder(&switch.url(), &outbox).await;
    switch.stop().await;
}

/// A large transfer asks the customer to confirm its destination first;
/// the OTP that follows goes to the holder on record all the same.
#[tokio::test]
async fn after_a_confirmed_destination_the_code_still_goes_to_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let switch = in_process_with_holder(dir.path()).await;
    let outbox = dir.path().join("outbox.jsonl");
    let app = AppClient::new(&switch.url(), OTP_APP, "demo");
    let amount = manifold_demo_provider::DemoSettings::default().step_up_amount;
    let mut body = app.transact_body("r-1", "t-1", "transfer_funds", "0123456789", amount);
    address_transact_body(&mut body, Some("9876543210"), APP_CHOSEN);
    let asked = app.post("/transact", &body).await;
    assert_eq!(asked.status(), "PendingValidation", "{}", asked.raw);
    let confirmed = app
        .validate_with(
            "v-1",
            "t-1",
            "transfer_funds",
            &serde_json::json!({"answer": "9876543210"}),
        )
        .await;
    assert_eq!(confirmed.status(), "WaitingForOTP", "{}", confirmed.raw);
    assert!(
        confirmed.message().contains("2348033****33"),
        "{}",
        confirmed.raw
    );
    let sent = OutboxNotifier::read_all(&outbox).unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, HOLDER);
    let done = app
        .validate("v-2", "t-1", "transfer_funds", &latest_otp(&outbox, HOLDER))
        .await;
    assert_eq!(done.status(), "Successful", "{}", done.raw);
    switch.stop().await;
}
