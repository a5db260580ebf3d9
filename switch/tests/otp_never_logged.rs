//! Every log line the process writes, at every level, while OTPs travel by
//! SMS and e-mail — successfully and not — must be free of the codes.
//!
//! One test in its own binary, because it installs the process-wide
//! subscriber that captures the logs.

mod common;

use std::time::Duration;

use common::*;
use manifold_crypto::SecretString;
use manifold_notify::SwitchNotifier;
use manifold_provider::notify::{Channel, OneTimeCode};
use manifold_provider::{Notification, Notifier};
use manifold_smtp_sink::SmtpSink;
use serde_json::json;

#[tokio::test]
async fn no_otp_reaches_the_logs() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_ansi(false)
        // Timestamps' microseconds are six digits too: they would match codes by chance.
        .without_time()
        .with_writer(move || writer.clone())
        .init();

    let dir = tempfile::tempdir().unwrap();
    let gateway = accepting_gateway().await;
    let sink = SmtpSink::start().await.unwrap();
    // One holder on record with a phone, and e-mail for every other account.
    let settings = format!(
        "customers = [{{ account = \"0123456789\", mobile_no = \"{MSISDN}\" }}]\n\
         first_sight = {{ email = \"{EMAIL}\" }}"
    );
    let with_holders = config_with_demo_settings(dir.path(), &gateway.uri(), &sink, &settings);
    let switch = RunningSwitch::start(&with_holders).await;
    let mut codes = Vec::new();

    // An OTP by SMS, then validated.
    let (_, answer) = post(
        &format!("{}/transact", switch.url()),
        Some(APP_KEY),
        &transact_body("log-1", "txn-log-1", json!({"mobile_no": MSISDN})),
    )
    .await;
    assert_eq!(answer["status"], "WaitingForOTP", "{answer}");
    let sms_code = code_in(
        gateway_messages(&gateway).await[0]["message"]
            .as_str()
            .unwrap(),
    );
    let (_, answer) = post(
        &format!("{}/transact/validate", switch.url()),
        Some(APP_KEY),
        &validate_body("log-2", "txn-log-1", &sms_code),
    )
    .await;
    assert_eq!(answer["status"], "Successful", "{answer}");
    codes.push(sms_code);

    // An OTP by e-mail.
    let (_, answer) = post(
        &format!("{}/transact", switch.url()),
        Some(APP_KEY),
        &transact_body_on("5555555555", "log-3", "txn-log-3", json!({"email": EMAIL})),
    )
    .await;
    assert_eq!(answer["status"], "WaitingForOTP", "{answer}");
    let mail = tokio::time::timeout(LIMIT, sink.wait_for_message(0))
        .await
        .unwrap();
    codes.push(code_in(mail.text_body.as_deref().unwrap()));

    // A provider delegating through the switch, and a refused destination.
    let notifier =
        SwitchNotifier::new(&switch.url(), provider_signer(), Duration::from_secs(20)).unwrap();
    let delegated = "730194";
    notifier
        .send(&Notification {
            channel: Channel::Sms,
            to: MSISDN.into(),
            subject: None,
            body: SecretString::new(format!("Your code is {delegated}.")),
            transaction_ref: Some("txn-delegated".into()),
            one_time_code: Some(OneTimeCode {
                code: SecretString::from(delegated),
                expires_in_secs: 300,
            }),
        })
        .await
        .unwrap();
    notifier
        .send(&Notification {
            channel: Channel::Email,
            to: "not an address".into(),
            subject: None,
            body: SecretString::new(format!("Your code is {delegated}.")),
            transaction_ref: Some("txn-delegated".into()),
            one_time_code: Some(OneTimeCode {
                code: SecretString::from(delegated),
                expires_in_secs: 300,
            }),
        })
        .await
        .unwrap_err();
    codes.push(delegated.to_owned());
    switch.stop().await;

    // Failures: the same through a gateway that refuses everything.
    let failing = failing_gateway().await;
    let dir = tempfile::tempdir().unwrap();
    let switch = RunningSwitch::start(&config(dir.path(), &failing.uri(), &sink)).await;
    let refused = "508216";
    let (status, _) = post(
        &format!("{}/notify/sms", switch.url()),
        Some(PROVIDER_SECRET),
        &json!({"to": MSISDN, "kind": "otp", "code": refused, "expires_in_secs": 300, "transaction_ref": "txn-refused"}).to_string(),
    )
    .await;
    assert_eq!(status, 502);
    codes.push(refused.to_owned());
    let (_, answer) = post(
        &format!("{}/transact", switch.url()),
        Some(APP_KEY),
        &transact_body("log-5", "txn-log-5", json!({"mobile_no": MSISDN})),
    )
    .await;
    assert_eq!(answer["status"], "Failed", "{answer}");
    codes.push(code_in(failing_messages_last(&failing).await.as_str()));
    switch.stop().await;

    let text = logs.text();
    // The capture works: the sends were logged, with masked destinations.
    assert!(
        text.contains("2348022****08"),
        "nothing useful captured:\n{text}"
    );
    assert!(
        text.contains("u***@example.com"),
        "nothing useful captured:\n{text}"
    );
    for code in &codes {
        assert!(
            !contains_number(&text, code),
            "OTP {code} is in the logs:\n{text}"
        );
    }
}

/// Whether `number` appears in `text` on its own, not inside a longer number.
fn contains_number(text: &str, number: &str) -> bool {
    text.match_indices(number).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + number.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

async fn failing_messages_last(server: &wiremock::MockServer) -> String {
    gateway_messages(server)
        .await
        .last()
        .and_then(|message| message["message"].as_str().map(str::to_owned))
        .expect("the failing gateway was asked")
}
