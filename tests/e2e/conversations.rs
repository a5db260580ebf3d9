//! The provider's side of a conversation with the customer, through the
//! switch: OTP attempts, expiry, resends, prompts for other information, and
//! a provider restarted while a code is outstanding. Each runs against the
//! demo provider both compiled in and as its own process.

use std::time::Duration;

use manifold_demo_provider::DemoSettings;
use manifold_e2e::*;
use serde_json::json;

use crate::rig::{Mode, Rig, MODES};

const CUSTOMER_MOBILE: &str = "2348022000008";

/// Queries until the transaction shows `status`, for at most 30 s.
async fn query_until(app: &AppClient, transaction_ref: &str, status: &str) -> Reply {
    let mut last = None;
    for attempt in 0..300 {
        let reply = app
            .query(&format!("q-{transaction_ref}-{attempt}"), transaction_ref)
            .await;
        if reply.status() == status {
            return reply;
        }
        last = Some(reply.raw);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{transaction_ref} never became {status}; last answer: {last:?}");
}

#[tokio::test]
async fn three_wrong_codes_fail_the_transaction_and_erase_its_pending_data() {
    for mode in MODES {
        let rig = Rig::start(mode).await;
        let app = rig.app(OTP_APP);
        let reply = app.transfer("r-1", "t-1", "0123456789", 5_000).await;
        assert_eq!(reply.status(), "WaitingForOTP", "{mode:?}: {}", reply.raw);
        let code = latest_otp(&rig.outbox, CUSTOMER_MOBILE);
        let wrong = wrong_otp(&code);

        let first = app.validate("v-1", "t-1", "transfer_funds", &wrong).await;
        assert!(first.message().starts_with("Wrong OTP. 2 attempts left"));
        let second = app.validate("v-2", "t-1", "transfer_funds", &wrong).await;
        assert!(second.message().starts_with("Wrong OTP. 1 attempt left"));
        let third = app.validate("v-3", "t-1", "transfer_funds", &wrong).await;
        assert_eq!(third.status(), "Failed", "{mode:?}: {}", third.raw);
        assert_eq!(third.body["data"]["provider_response_code"], "900T2");

        // Even the right code cannot revive it.
        let late = app.validate("v-4", "t-1", "transfer_funds", &code).await;
        assert_eq!(
            (late.http, late.error()),
            (409, "not_awaiting_validation"),
            "{}",
            late.raw
        );
        assert_eq!(app.query("q-1", "t-1").await.status(), "Failed");
        // No money moved.
        assert_eq!(rig.balance("0123456789", "after").await, 2_077_099);
        assert_eq!(rig.provider_pending().await, 0, "{mode:?}");
    }
}

#[tokio::test]
async fn an_expired_code_is_swept_to_failed_without_another_validate() {
    for mode in MODES {
        let mut settings = DemoSettings::default();
        settings.otp.ttl = Duration::from_secs(1);
        settings.sweep_interval = Duration::from_millis(50);
        let rig = Rig::start_with(mode, settings).await;
        let app = rig.app(OTP_APP);
        let reply = app.get_balance("r-1", "t-1", "0123456789").await;
        assert_eq!(reply.status(), "WaitingForOTP", "{mode:?}: {}", reply.raw);
        let code = latest_otp(&rig.outbox, CUSTOMER_MOBILE);

        // Nobody validates: the sweep alone ends it, and a query sees that.
        let failed = query_until(&app, "t-1", "Failed").await;
        assert_eq!(
            failed.message(),
            "The OTP expired; the transaction was cancelled"
        );
        assert_eq!(failed.body["data"]["provider_response_code"], "900T3");
        let late = app.validate("v-1", "t-1", "get_balance", &code).await;
        assert_eq!(late.http, 409, "{}", late.raw);
        assert_eq!(rig.provider_pending().await, 0, "{mode:?}");
    }
}

#[tokio::test]
async fn a_resend_is_rate_limited_and_replaces_the_code() {
    for mode in MODES {
        // Too soon: the default interval is 30 s.
        let rig = Rig::start(mode).await;
        let app = rig.app(OTP_APP);
        app.get_balance("r-1", "t-1", "0123456789").await;
        let refused = app
            .validate_with("v-1", "t-1", "get_balance", &json!({"resend": "otp"}))
            .await;
        assert_eq!(refused.status(), "WaitingForOTP", "{}", refused.raw);
        assert_eq!(refused.body["data"]["provider_response_code"], "900T4");
        assert!(
            refused.message().starts_with("A new code can be sent in"),
            "{}",
            refused.message()
        );
        assert_eq!(outbox_len(&rig.outbox), 1);

        // With no interval, resends replace the code until the limit of three sends.
        let mut settings = DemoSettings::default();
        settings.otp.resend_interval = Duration::ZERO;
        let rig = Rig::start_with(mode, settings).await;
        let app = rig.app(OTP_APP);
        app.get_balance("r-1", "t-1", "0123456789").await;
        let first_code = latest_otp(&rig.outbox, CUSTOMER_MOBILE);
        let resent = app
            .validate_with("v-1", "t-1", "get_balance", &json!({"resend": "otp"}))
            .await;
        assert_eq!(resent.status(), "WaitingForOTP", "{mode:?}: {}", resent.raw);
        assert_eq!(resent.message(), "A new OTP was sent to 2348022****08");
        assert_eq!(outbox_len(&rig.outbox), 2);
        let third = app
            .validate_with("v-2", "t-1", "get_balance", &json!({"resend": "otp"}))
            .await;
        assert_eq!(third.body["data"]["provider_response_code"], "900T0");
        let refused = app
            .validate_with("v-3", "t-1", "get_balance", &json!({"resend": "otp"}))
            .await;
        assert_eq!(refused.body["data"]["provider_response_code"], "900T4");
        assert_eq!(outbox_len(&rig.outbox), 3);
        let newest_code = latest_otp(&rig.outbox, CUSTOMER_MOBILE);

        if first_code != newest_code {
            let old = app.validate("v-4", "t-1", "get_balance", &first_code).await;
            assert!(old.message().starts_with("Wrong OTP."), "{}", old.raw);
        }
        let right = app
            .validate("v-5", "t-1", "get_balance", &newest_code)
            .await;
        assert_eq!(right.status(), "Successful", "{mode:?}: {}", right.raw);
        assert_eq!(rig.provider_pending().await, 0, "{mode:?}");
    }
}

#[tokio::test]
async fn a_large_transfer_asks_for_the_destination_then_for_an_otp() {
    for mode in MODES {
        let rig = Rig::start(mode).await;
        let app = rig.app(OTP_APP);
        let amount = DemoSettings::default().step_up_amount;
        let asked = app.transfer("r-1", "t-1", "0123456789", amount).await;
        assert_eq!(
            (asked.http, asked.status()),
            (200, "PendingValidation"),
            "{mode:?}: {}",
            asked.raw
        );
        assert!(
            asked
                .message()
                .contains("destination account number (ending 3210)"),
            "{}",
            asked.message()
        );
        assert_eq!(outbox_len(&rig.outbox), 0, "no OTP before the answer");

        let wrong = app
            .validate_with(
                "v-1",
                "t-1",
                "transfer_funds",
                &json!({"answer": "1111111111"}),
            )
            .await;
        assert_eq!(wrong.status(), "PendingValidation", "{}", wrong.raw);
        assert_eq!(wrong.body["data"]["provider_response_code"], "900V1");
        assert!(wrong
            .message()
            .starts_with("That is not the destination account"));

        let right = app
            .validate_with(
                "v-2",
                "t-1",
                "transfer_funds",
                &json!({"answer": "98765 43210"}),
            )
            .await;
        assert_eq!(right.status(), "WaitingForOTP", "{mode:?}: {}", right.raw);
        let code = latest_otp(&rig.outbox, CUSTOMER_MOBILE);
        let done = app.validate("v-3", "t-1", "transfer_funds", &code).await;
        assert_eq!(done.status(), "Successful", "{mode:?}: {}", done.raw);
        assert_eq!(
            rig.balance("0123456789", "source").await,
            2_077_099 - amount
        );

        // An app that skips OTPs still has to answer the prompt, and nothing more.
        let quick = rig.app(QUICK_APP);
        let asked = quick.transfer("r-2", "t-2", "0123456780", amount).await;
        assert_eq!(asked.status(), "PendingValidation", "{}", asked.raw);
        let done = quick
            .validate_with(
                "v-4",
                "t-2",
                "transfer_funds",
                &json!({"answer": "9876543210"}),
            )
            .await;
        assert_eq!(done.status(), "Successful", "{mode:?}: {}", done.raw);
        assert_eq!(outbox_len(&rig.outbox), 1);
        assert_eq!(rig.provider_pending().await, 0, "{mode:?}");
    }
}

#[tokio::test]
async fn a_provider_restarted_between_transact_and_validate_still_completes() {
    let mut rig = Rig::start(Mode::Remote).await;
    let app = rig.app(OTP_APP);
    let waiting = app.transfer("r-1", "t-1", "0123456789", 7_000).await;
    assert_eq!(waiting.status(), "WaitingForOTP", "{}", waiting.raw);
    let asked = app.transfer("r-2", "t-2", "0123456780", 2_000_000).await;
    assert_eq!(asked.status(), "PendingValidation", "{}", asked.raw);
    let code = latest_otp(&rig.outbox, CUSTOMER_MOBILE);

    rig.restart_provider();

    assert_eq!(app.query("q-1", "t-1").await.status(), "WaitingForOTP");
    let done = app.validate("v-1", "t-1", "transfer_funds", &code).await;
    assert_eq!(done.status(), "Successful", "{}", done.raw);
    let next = app
        .validate_with(
            "v-2",
            "t-2",
            "transfer_funds",
            &json!({"answer": "9876543210"}),
        )
        .await;
    assert_eq!(next.status(), "WaitingForOTP", "{}", next.raw);
    rig.restart_provider();
    let code = latest_otp(&rig.outbox, CUSTOMER_MOBILE);
    let done = app.validate("v-3", "t-2", "transfer_funds", &code).await;
    assert_eq!(done.status(), "Successful", "{}", done.raw);
    assert_eq!(rig.balance("0123456789", "a").await, 2_077_099 - 7_000);
    assert_eq!(rig.balance("0123456780", "b").await, 2_077_099 - 2_000_000);
    assert_eq!(rig.provider_pending().await, 0);
}

/// Seed 003's "Send SMS and Send Email services": a provider microservice
/// without a gateway of its own sends its OTP through the switch, which hands
/// it to the host's SMS gateway.
#[tokio::test]
async fn a_remote_provider_sends_its_otp_through_the_switchs_sms_service() {
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let dir = tempfile::tempdir().unwrap();
    let gateway = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/sms"))
        .and(header("authorization", "Bearer gateway-token-0123456789"))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&gateway)
        .await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let switch_url = format!("http://{}", listener.local_addr().unwrap());
    let provider_dir = dir.path().join("provider");
    let provider = ProviderProcess::start_with(
        &provider_dir,
        &dir.path().join("unused-outbox.jsonl"),
        "127.0.0.1:0",
        &["--notify-switch-url".to_owned(), switch_url.clone()],
    );
    let text = config_text(
        dir.path(),
        &[ProviderSpec::Remote {
            name: "demo",
            url: provider.url(),
        }],
        5_000,
    )
    .replacen(
        &format!("url = \"{}\"\n", provider.url()),
        // Its calls to /notify/* are signed with the secret it shares with
        // the switch.
        &format!("url = \"{}\"\nnotify = true\n", provider.url()),
        1,
    ) + &format!(
        "[notifications.sms]\nurl = \"{}/sms\"\ntoken = \"gateway-token-0123456789\"\nsender = \"Manifold\"\n",
        gateway.uri()
    );
    let switch =
        InProcessSwitch::start_on(&parse_config(&text), Default::default(), listener).await;
    let app = AppClient::new(&switch.url(), OTP_APP, "demo");

    let waiting = app.get_balance("r-1", "t-1", "0123456789").await;
    assert_eq!(waiting.status(), "WaitingForOTP", "{}", waiting.raw);
    assert_eq!(
        waiting.message(),
        "Please enter the OTP sent to 2348022****08"
    );
    let sent = gateway.received_requests().await.unwrap();
    assert_eq!(sent.len(), 1);
    let sms: serde_json::Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(sms["to"], CUSTOMER_MOBILE);
    let code = sms["message"]
        .as_str()
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .find(|word| word.len() == 6)
        .expect("a 6-digit code in the SMS")
        .to_owned();
    assert!(!dir.path().join("unused-outbox.jsonl").exists());

    let done = app.validate("v-1", "t-1", "get_balance", &code).await;
    assert_eq!(done.status(), "Successful", "{}", done.raw);
    provider.kill();
    assert_eq!(pending_in(&provider_dir), 0);
    switch.stop().await;
    gateway.verify().await;
}
