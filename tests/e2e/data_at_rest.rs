//! Customer data at rest (issue 13, part 5), against the real binaries: after
//! the end-to-end flows through the demo bank compiled in and as its own
//! microservice, the raw files of the switch's store and of the provider's
//! SDK state hold none of the account numbers, phone numbers or the demo
//! bank's answer marker (the bank's own ledger, the stand-in upstream, and
//! the outbox do: which shows the search finds what is there). With the key,
//! everything answers byte for byte after a restart; without one of the keys
//! the switch refuses to start, naming it; a rotated key is resealed away.
//! Retention drops a settled transaction's customer data while its status
//! stays, and a repeat of its `request_ref` is answered 410 `answer_dropped`.

use std::collections::HashMap;
use std::path::Path;

use manifold_demo_provider::ANSWER_MARKER;
use manifold_e2e::*;
use serde_json::json;

const IN_PROCESS_ACCOUNT: &str = "0456789123";
const REMOTE_ACCOUNT: &str = "0567891234";
/// Where `transact_body`'s transfers go.
const DESTINATION: &str = "9876543210";
const IN_PROCESS_HOLDER: &str = "2348031111111";
const REMOTE_HOLDER: &str = "2348032222222";
/// The number the app sends in `customer.mobile_no` (never used for codes).
const APP_SENT_MOBILE: &str = "2348022000008";

/// Whether any file under `dir` (but `skip`) holds `needle`, as bytes.
fn files_hold(dir: &Path, skip: &str, needle: &str) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let entry = entry.unwrap();
        let path = entry.path();
        if entry.file_name() == skip {
            false
        } else if path.is_dir() {
            files_hold(&path, skip, needle)
        } else {
            std::fs::read(&path)
                .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
                .unwrap_or(false)
        }
    })
}

/// The switch's configuration: the demo bank in-process (`demo`, its
/// registry naming [`IN_PROCESS_HOLDER`]) and the microservice (`remote`).
fn config(dir: &Path, remote_url: &str) -> String {
    config_text(
        dir,
        &[
            ProviderSpec::InProcess {
                name: "demo",
                implementation: "demo",
            },
            ProviderSpec::Remote {
                name: "remote",
                url: remote_url.to_owned(),
            },
        ],
        5_000,
    )
    .replacen(
        "implementation = \"demo\"\n",
        &format!(
            "implementation = \"demo\"\nsettings.customers = [{{ account = \"{IN_PROCESS_ACCOUNT}\", mobile_no = \"{IN_PROCESS_HOLDER}\" }}]\n"
        ),
        1,
    )
}

fn start_provider(dir: &Path, listen: &str) -> ProviderProcess {
    let settings = dir.join("remote-settings.toml");
    std::fs::write(
        &settings,
        format!(
            "customers = [{{ account = \"{REMOTE_ACCOUNT}\", mobile_no = \"{REMOTE_HOLDER}\" }}]\n"
        ),
    )
    .unwrap();
    ProviderProcess::start_with(
        &dir.join("provider"),
        &dir.join("outbox.jsonl"),
        listen,
        &["--settings".to_owned(), settings.display().to_string()],
    )
}

/// One call and the answer it got, to repeat after a restart.
struct Answered {
    path: &'static str,
    body: serde_json::Value,
    raw: String,
}

/// Every flow against one provider; returns the calls to repeat.
async fn run_flows(app: &AppClient, account: &str, holder: &str, outbox: &Path) -> Vec<Answered> {
    // References unique per provider: one app uses both.
    let r = |reference: &str| format!("{}-{reference}", app.provider);
    let mut answered = Vec::new();
    let mut call = |path: &'static str, body: serde_json::Value, reply: &Reply, status: &str| {
        assert_eq!(reply.status(), status, "{path}: {}", reply.raw);
        answered.push(Answered {
            path,
            body,
            raw: reply.raw.clone(),
        });
    };
    // A balance, confirmed by OTP (the answer carries the balance).
    let body = app.transact_body(&r("b-1"), &r("tb-1"), "get_balance", account, 0);
    let reply = app.post("/transact", &body).await;
    call("/transact", body, &reply, "WaitingForOTP");
    let body = app.validate_body(
        &r("bv-1"),
        &r("tb-1"),
        "get_balance",
        &latest_otp(outbox, holder),
    );
    let reply = app.post("/transact/validate", &body).await;
    call("/transact/validate", body, &reply, "Successful");
    assert!(reply.raw.contains(ANSWER_MARKER), "{}", reply.raw);
    assert!(reply.raw.contains("balance"), "{}", reply.raw);

    // A transfer, confirmed by OTP, then reversed.
    let body = app.transact_body(&r("t-1"), &r("tt-1"), "transfer_funds", account, 1_000);
    let reply = app.post("/transact", &body).await;
    call("/transact", body, &reply, "WaitingForOTP");
    let body = app.validate_body(
        &r("tv-1"),
        &r("tt-1"),
        "transfer_funds",
        &latest_otp(outbox, holder),
    );
    let reply = app.post("/transact/validate", &body).await;
    call("/transact/validate", body, &reply, "Successful");
    let reversed = app.reverse(&r("tr-1"), &r("tt-1")).await;
    assert_eq!(reversed.status(), "Successful", "{}", reversed.raw);

    // A large transfer: the customer types the destination, then the OTP.
    let amount = manifold_demo_provider::DemoSettings::default().step_up_amount;
    let body = app.transact_body(&r("s-1"), &r("ts-1"), "transfer_funds", account, amount);
    let reply = app.post("/transact", &body).await;
    call("/transact", body, &reply, "PendingValidation");
    let confirmed = app
        .validate_with(
            &r("sa-1"),
            &r("ts-1"),
            "transfer_funds",
            &json!({ "answer": DESTINATION }),
        )
        .await;
    assert_eq!(confirmed.status(), "WaitingForOTP", "{}", confirmed.raw);
    let body = app.validate_body(
        &r("sv-1"),
        &r("ts-1"),
        "transfer_funds",
        &latest_otp(outbox, holder),
    );
    let reply = app.post("/transact/validate", &body).await;
    call("/transact/validate", body, &reply, "Successful");

    // One left waiting: its pending data stays in the provider's state.
    let body = app.transact_body(&r("w-1"), &r("tw-1"), "transfer_funds", account, 2_000);
    let reply = app.post("/transact", &body).await;
    call("/transact", body, &reply, "WaitingForOTP");
    let queried = app.query(&r("q-1"), &r("tt-1")).await;
    assert_eq!(queried.status(), "Successful", "{}", queried.raw);
    answered
}

async fn repeat_all(app: &AppClient, answered: &[Answered]) {
    for call in answered {
        let again = app.post(call.path, &call.body).await;
        assert_eq!(again.raw, call.raw, "{} repeated", call.path);
    }
}

#[tokio::test]
async fn the_data_directories_hold_no_customer_data_and_answer_again_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox.jsonl");
    let provider = start_provider(dir.path(), "127.0.0.1:0");
    let provider_addr = provider.addr.to_string();
    let config_path = dir.path().join("manifold.toml");
    std::fs::write(&config_path, config(dir.path(), &provider.url())).unwrap();
    let switch = SwitchProcess::start(&config_path);

    let in_process = AppClient::new(&switch.url(), OTP_APP, "demo");
    let remote = AppClient::new(&switch.url(), OTP_APP, "remote");
    let answered_in = run_flows(&in_process, IN_PROCESS_ACCOUNT, IN_PROCESS_HOLDER, &outbox).await;
    let answered_remote = run_flows(&remote, REMOTE_ACCOUNT, REMOTE_HOLDER, &outbox).await;
    switch.kill();
    provider.kill();

    let switch_data = dir.path().join("switch");
    let provider_data = dir.path().join("provider");
    for needle in [
        IN_PROCESS_ACCOUNT,
        REMOTE_ACCOUNT,
        DESTINATION,
        IN_PROCESS_HOLDER,
        REMOTE_HOLDER,
        APP_SENT_MOBILE,
        ANSWER_MARKER,
    ] {
        assert!(
            !files_hold(&switch_data, "demo-bank-ledger", needle),
            "the switch's store holds `{needle}`"
        );
        assert!(
            !files_hold(&provider_data, "upstream-ledger", needle),
            "the provider's state holds `{needle}`"
        );
    }
    // The search finds what is there: the banks' own books hold the
    // accounts, and the outbox (the development SMS channel) the phones.
    assert!(files_hold(
        &switch_data.join("demo-bank-ledger"),
        "",
        IN_PROCESS_ACCOUNT
    ));
    assert!(files_hold(
        &provider_data.join("upstream-ledger"),
        "",
        REMOTE_ACCOUNT
    ));
    assert!(files_hold(dir.path(), "", IN_PROCESS_HOLDER));

    // With the key, after a restart, every answer is the same to the byte.
    let provider = start_provider(dir.path(), &provider_addr);
    let switch = SwitchProcess::start(&config_path);
    let in_process = AppClient::new(&switch.url(), OTP_APP, "demo");
    let remote = AppClient::new(&switch.url(), OTP_APP, "remote");
    repeat_all(&in_process, &answered_in).await;
    repeat_all(&remote, &answered_remote).await;
    // And what was left waiting can still be completed.
    let done = remote
        .validate(
            "w-v",
            "remote-tw-1",
            "transfer_funds",
            &latest_otp(&outbox, REMOTE_HOLDER),
        )
        .await;
    assert_eq!(done.status(), "Successful", "{}", done.raw);
    drop(switch);
    drop(provider);
}

#[tokio::test]
async fn a_missing_key_stops_the_switch_and_a_rotated_one_is_resealed_away() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox.jsonl");
    let text = in_process_demo_config(dir.path());
    let config_path = dir.path().join("manifold.toml");
    std::fs::write(&config_path, &text).unwrap();
    let switch = SwitchProcess::start(&config_path);
    let app = AppClient::new(&switch.url(), OTP_APP, "demo");
    let answered = run_flows(&app, IN_PROCESS_ACCOUNT, APP_SENT_MOBILE, &outbox).await;
    drop(switch);

    let new_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let only_new = text.replacen(
        TEST_DATA_AT_REST,
        &format!("[data_at_rest]\nkey_id = \"new\"\nkey = \"{new_key}\"\n"),
        1,
    );
    assert_ne!(only_new, text);
    let only_new_path = dir.path().join("only-new.toml");
    std::fs::write(&only_new_path, &only_new).unwrap();
    let refused = run_manifold(&[
        "--config",
        only_new_path.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ])
    .await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("`test`"), "names the missing key: {stderr}");
    assert!(
        !stderr.contains(new_key) && !stderr.contains(TEST_DATA_KEY),
        "{stderr}"
    );

    // The new key current, the old one kept to open: the same answers.
    let rotated = text.replacen(
        TEST_DATA_AT_REST,
        &format!(
            "[data_at_rest]\nkey_id = \"new\"\nkey = \"{new_key}\"\n\
             [[data_at_rest.previous_keys]]\nkey_id = \"test\"\nkey = \"{TEST_DATA_KEY}\"\n"
        ),
        1,
    );
    let rotated_path = dir.path().join("rotated.toml");
    std::fs::write(&rotated_path, &rotated).unwrap();
    let switch = SwitchProcess::start(&rotated_path);
    repeat_all(&AppClient::new(&switch.url(), OTP_APP, "demo"), &answered).await;
    drop(switch);

    let resealed = run_manifold(&["--config", rotated_path.to_str().unwrap(), "--reseal"]).await;
    let stderr = String::from_utf8_lossy(&resealed.stderr);
    assert!(resealed.status.success(), "{stderr}");
    assert!(stderr.contains("sealed under data key `new`"), "{stderr}");

    // Only the new key now: everything still answers.
    let switch = SwitchProcess::start(&only_new_path);
    repeat_all(&AppClient::new(&switch.url(), OTP_APP, "demo"), &answered).await;
    drop(switch);
}

#[tokio::test]
async fn past_retention_a_repeat_is_told_the_answer_was_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox.jsonl");
    let config = parse_config(&in_process_demo_config(dir.path()));
    let retention = config.data_at_rest.retention;
    let switch = InProcessSwitch::start(&config, HashMap::new()).await;
    let app = AppClient::new(&switch.url(), OTP_APP, "demo");
    let settled_body =
        app.transact_body("t-1", "tt-1", "transfer_funds", IN_PROCESS_ACCOUNT, 1_000);
    let waiting = app.post("/transact", &settled_body).await;
    assert_eq!(waiting.status(), "WaitingForOTP", "{}", waiting.raw);
    let done = app
        .validate(
            "tv-1",
            "tt-1",
            "transfer_funds",
            &latest_otp(&outbox, APP_SENT_MOBILE),
        )
        .await;
    assert_eq!(done.status(), "Successful", "{}", done.raw);
    let open = app.transfer("w-1", "tw-1", IN_PROCESS_ACCOUNT, 2_000).await;
    assert_eq!(open.status(), "WaitingForOTP", "{}", open.raw);

    let later = unix_now() * 1000 + retention.as_millis() as u64 + 86_400_000;
    assert_eq!(switch.retention().apply_at(later).await.unwrap(), 1);

    let repeat = app.post("/transact", &settled_body).await;
    assert_eq!(
        (repeat.http, repeat.error()),
        (410, "answer_dropped"),
        "{}",
        repeat.raw
    );
    assert!(repeat.message().contains("Successful"), "{}", repeat.raw);
    let other = app.transact_body("t-1", "tt-1", "transfer_funds", IN_PROCESS_ACCOUNT, 9_999);
    let conflict = app.post("/transact", &other).await;
    assert_eq!(
        (conflict.http, conflict.error()),
        (409, "request_ref_conflict")
    );

    let queried = app.query("q-1", "tt-1").await;
    assert_eq!(queried.status(), "Successful", "{}", queried.raw);
    let transaction = &queried.body["data"]["transaction"];
    assert!(
        transaction["customer_data_dropped_at_ms"].is_u64(),
        "{}",
        queried.raw
    );
    assert!(
        queried.body["data"]["provider_response"].is_null(),
        "{}",
        queried.raw
    );
    assert!(!queried.raw.contains(ANSWER_MARKER));
    let reverse = app.reverse("r-1", "tt-1").await;
    assert_eq!(
        (reverse.http, reverse.error()),
        (409, "not_reversible"),
        "{}",
        reverse.raw
    );

    // The transaction still waiting is untouched.
    let completed = app
        .validate(
            "wv-1",
            "tw-1",
            "transfer_funds",
            &latest_otp(&outbox, APP_SENT_MOBILE),
        )
        .await;
    assert_eq!(completed.status(), "Successful", "{}", completed.raw);
    switch.stop().await;
}
