//! The switch's `/notify/sms` and `/notify/email` services, over HTTP, and
//! OTPs of the in-process demo bank travelling through the configured
//! channels: SMS to a wiremock gateway, e-mail to the SMTP sink.

mod common;

use std::time::Duration;

use common::*;
use manifold_crypto::SecretString;
use manifold_notify::SwitchNotifier;
use manifold_provider::notify::{Channel, OneTimeCode};
use manifold_provider::HopSigner;
use manifold_provider::{Notification, Notifier, NotifyError};
use manifold_smtp_sink::SmtpSink;
use serde_json::json;

/// A `/notify/*` request for the code 281734 of transaction `t-1`.
fn code_request(to: &str) -> String {
    json!({"to": to, "kind": "otp", "code": "281734", "expires_in_secs": 300, "transaction_ref": "t-1"})
        .to_string()
}

/// How the host's default template words it for the provider `bank-remote`.
const WORDED: &str = "bank-remote code: 281734. It expires in 5 min. Never share it with anyone.";

/// A notification as the SDK makes it: text for local channels, and the
/// code apart, which is all the switch takes.
fn sdk_notification(channel: Channel, to: &str) -> Notification {
    Notification {
        channel,
        to: to.into(),
        subject: Some("Your code".into()),
        body: SecretString::from("Your code is 281734."),
        transaction_ref: Some("t-1".into()),
        one_time_code: Some(OneTimeCode {
            code: SecretString::from("281734"),
            expires_in_secs: 300,
        }),
    }
}

#[tokio::test]
async fn an_sms_request_reaches_the_gateway_in_the_hosts_words() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = accepting_gateway().await;
    let sink = SmtpSink::start().await.unwrap();
    let switch = RunningSwitch::start(&config(dir.path(), &gateway.uri(), &sink)).await;

    let (status, body) = post(
        &format!("{}/notify/sms", switch.url()),
        Some(PROVIDER_SECRET),
        &code_request(MSISDN),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "Successful");
    assert_eq!(body["message"], "The SMS message was accepted for delivery");
    assert_eq!(body["data"]["provider"], "bank-remote");
    assert_eq!(body["data"]["error"], serde_json::Value::Null);

    let requests = gateway.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].headers.get("authorization").unwrap(),
        &format!("Bearer {GATEWAY_TOKEN}")
    );
    assert_eq!(
        gateway_messages(&gateway).await,
        vec![json!({"to": MSISDN, "from": "Manifold", "message": WORDED})]
    );
    switch.stop().await;
}

#[tokio::test]
async fn an_email_request_reaches_the_mail_server_in_the_hosts_words() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = accepting_gateway().await;
    let sink = SmtpSink::start().await.unwrap();
    let switch = RunningSwitch::start(&config(dir.path(), &gateway.uri(), &sink)).await;

    let (status, body) = post(
        &format!("{}/notify/email", switch.url()),
        Some(PROVIDER_SECRET),
        &code_request(EMAIL),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["message"],
        "The e-mail message was accepted for delivery"
    );
    let mail = tokio::time::timeout(LIMIT, sink.wait_for_message(0))
        .await
        .unwrap();
    assert_eq!(mail.to, vec![EMAIL.to_owned()]);
    assert_eq!(
        mail.subject.as_deref(),
        Some("Manifold: Your bank-remote code")
    );
    assert_eq!(mail.text_body.unwrap().trim_end(), WORDED);
    assert!(gateway.received_requests().await.unwrap().is_empty());
    switch.stop().await;
}

/// Free text is not relayed: a provider's key cannot make the switch send
/// anything but a code in the host's words; and one destination gets at
/// most `max_per_destination_per_hour` codes, whichever provider asks.
#[tokio::test]
async fn free_text_is_refused_and_destinations_and_providers_get_their_hourly_limits_only() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = accepting_gateway().await;
    let sink = SmtpSink::start().await.unwrap();
    let switch = RunningSwitch::start(&config(dir.path(), &gateway.uri(), &sink)).await;
    let url = format!("{}/notify/sms", switch.url());

    let (status, answer) = post(
        &url,
        Some(PROVIDER_SECRET),
        &json!({"to": MSISDN, "message": "Your account is locked, call 0800 000 0000"}).to_string(),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    let fields: Vec<&str> = answer["data"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "message",
            "kind",
            "code",
            "expires_in_secs",
            "transaction_ref"
        ]
    );
    assert!(gateway.received_requests().await.unwrap().is_empty());

    // The default limit is 10 an hour to one destination.
    for n in 0..10 {
        let (status, answer) = post(&url, Some(PROVIDER_SECRET), &code_request(MSISDN)).await;
        assert_eq!(status, 200, "{n}: {answer}");
    }
    let (status, answer) = post(&url, Some(PROVIDER_SECRET), &code_request(MSISDN)).await;
    assert_eq!(status, 429, "{answer}");
    assert_eq!(answer["data"]["error"], "rate_limited");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("the limit of 10 codes an hour to 2348022****08 is reached"),
        "{answer}"
    );
    // The same number written with its `+` is the same destination.
    let (status, _) = post(&url, Some(PROVIDER_SECRET), &code_request("+2348022000008")).await;
    assert_eq!(status, 429);
    // Another destination is not affected.
    let (status, _) = post(&url, Some(PROVIDER_SECRET), &code_request("2348033333333")).await;
    assert_eq!(status, 200);
    assert_eq!(gateway_messages(&gateway).await.len(), 11);
    switch.stop().await;

    // A provider's own hourly limit stops it texting a new number each time.
    let dir = tempfile::tempdir().unwrap();
    let gateway = accepting_gateway().await;
    let mut config = config(dir.path(), &gateway.uri(), &sink);
    config.notifications.max_per_provider_per_hour = 3;
    let switch = RunningSwitch::start(&config).await;
    let url = format!("{}/notify/sms", switch.url());
    for n in 0..3 {
        let (status, _) = post(
            &url,
            Some(PROVIDER_SECRET),
            &code_request(&format!("23480300000{n:02}")),
        )
        .await;
        assert_eq!(status, 200);
    }
    let (status, answer) = post(&url, Some(PROVIDER_SECRET), &code_request("2348030000099")).await;
    assert_eq!(status, 429, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("provider `bank-remote`'s limit of 3 codes an hour is reached"),
        "{answer}"
    );
    assert_eq!(gateway_messages(&gateway).await.len(), 3);
    switch.stop().await;
}

#[tokio::test]
async fn requests_without_the_right_key_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = accepting_gateway().await;
    let sink = SmtpSink::start().await.unwrap();
    let switch = RunningSwitch::start(&config(dir.path(), &gateway.uri(), &sink)).await;
    let body = code_request(MSISDN);
    let url = format!("{}/notify/sms", switch.url());

    // Unsigned, a bare bearer key, and an app's own signature: none is a
    // provider's signature.
    for key in [
        None,
        Some("not-the-provider-secret-0123456789"),
        Some(APP_KEY),
    ] {
        let (status, answer) = post(&url, key, &body).await;
        assert_eq!(status, 401, "{key:?}: {answer}");
        assert_eq!(answer["status"], "Failed");
        assert_eq!(answer["data"]["error"], "unauthenticated");
        assert!(
            answer["message"]
                .as_str()
                .unwrap()
                .contains("not signed by a provider"),
            "{answer}"
        );
    }
    // Nor may a provider's signature call the app endpoints.
    let (status, answer) = post(
        &format!("{}/transact", switch.url()),
        Some(PROVIDER_SECRET),
        &transact_body("r-1", "t-1", json!({"mobile_no": MSISDN})),
    )
    .await;
    assert_eq!(status, 401, "{answer}");

    let response = client()
        .get(&url)
        .bearer_auth(PROVIDER_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["data"]["error"], "method_not_allowed");

    assert!(gateway.received_requests().await.unwrap().is_empty());
    assert!(sink.received().is_empty());
    switch.stop().await;
}

#[tokio::test]
async fn bad_fields_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = accepting_gateway().await;
    let sink = SmtpSink::start().await.unwrap();
    let switch = RunningSwitch::start(&config(dir.path(), &gateway.uri(), &sink)).await;

    let (status, answer) = post(
        &format!("{}/notify/sms", switch.url()),
        Some(PROVIDER_SECRET),
        &json!({"to": "0802 200 0008", "kind": "otp", "code": "", "expires_in_secs": 300, "transaction_ref": "t-1"}).to_string(),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["data"]["error"], "invalid_request");
    assert_eq!(
        answer["data"]["errors"],
        json!([
            {"field": "to", "message": "must be 7 to 15 digits in international form, such as 2348022000008"},
            {"field": "code", "message": "must not be empty"}
        ])
    );

    let (status, answer) = post(
        &format!("{}/notify/email", switch.url()),
        Some(PROVIDER_SECRET),
        &json!({"to": MSISDN, "kind": "otp", "code": "281734", "expires_in_secs": 300, "transaction_ref": "t-1", "subject": ["x"]}).to_string(),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    let fields: Vec<&str> = answer["data"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["subject", "to"]);
    assert!(!answer.to_string().contains("281734"));

    let (status, answer) = post(
        &format!("{}/notify/sms", switch.url()),
        Some(PROVIDER_SECRET),
        r#"{"to": "2348022000008", "code": "281734""#,
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["data"]["error"], "malformed_json");
    assert!(!answer.to_string().contains("281734"));

    assert!(gateway.received_requests().await.unwrap().is_empty());
    assert!(sink.received().is_empty());
    switch.stop().await;
}

#[tokio::test]
async fn a_failing_gateway_is_a_502_without_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = failing_gateway().await;
    let sink = SmtpSink::start().await.unwrap();
    let switch = RunningSwitch::start(&config(dir.path(), &gateway.uri(), &sink)).await;

    let (status, answer) = post(
        &format!("{}/notify/sms", switch.url()),
        Some(PROVIDER_SECRET),
        &code_request(MSISDN),
    )
    .await;
    assert_eq!(status, 502, "{answer}");
    assert_eq!(answer["status"], "Failed");
    assert_eq!(answer["data"]["error"], "notification_failed");
    // Which failure it was, for the masked destination; the gateway's own
    // answer is in the switch's log, under the error id.
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.starts_with("the switch's SMS channel refused the message to 2348022****08"),
        "{message}"
    );
    let id = answer["data"]["error_id"].as_str().unwrap();
    assert!(message.ends_with(&format!("(error id {id})")), "{message}");
    assert!(!message.contains("HTTP 500"), "{message}");
    assert!(!answer.to_string().contains("281734"), "{answer}");
    assert!(!answer.to_string().contains(MSISDN), "{answer}");
    switch.stop().await;
}

/// A provider microservice's view: `SwitchNotifier` through the real switch.
#[tokio::test]
async fn switch_notifier_delegates_to_the_switch() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = accepting_gateway().await;
    let sink = SmtpSink::start().await.unwrap();
    let switch = RunningSwitch::start(&config(dir.path(), &gateway.uri(), &sink)).await;
    let notifier =
        SwitchNotifier::new(&switch.url(), provider_signer(), Duration::from_secs(20)).unwrap();

    // The switch words the code itself: the provider's text stays home.
    let sms = sdk_notification(Channel::Sms, MSISDN);
    notifier.send(&sms).await.unwrap();
    assert_eq!(
        gateway_messages(&gateway).await,
        vec![json!({"to": MSISDN, "from": "Manifold", "message": WORDED})]
    );

    notifier
        .send(&sdk_notification(Channel::Email, EMAIL))
        .await
        .unwrap();
    let mail = tokio::time::timeout(LIMIT, sink.wait_for_message(0))
        .await
        .unwrap();
    assert_eq!(
        mail.subject.as_deref(),
        Some("Manifold: Your bank-remote code")
    );
    assert_eq!(mail.text_body.unwrap().trim_end(), WORDED);

    // Text without its code cannot go through the switch at all.
    let error = notifier
        .send(&Notification {
            one_time_code: None,
            ..sms.clone()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(error, NotifyError::Misconfigured { .. }),
        "{error:?}"
    );

    // A destination the switch refuses comes back as InvalidDestination.
    let error = notifier
        .send(&Notification {
            to: "not-a-number".into(),
            ..sms.clone()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(error, NotifyError::InvalidDestination { .. }),
        "{error:?}"
    );

    // A wrong key is the provider's misconfiguration.
    let stranger = SwitchNotifier::new(
        &switch.url(),
        HopSigner::new(
            &SecretString::from("wrong-hop-secret-0123456789-abcdefghij"),
            PROVIDER_KEY_ID,
        ),
        Duration::from_secs(20),
    )
    .unwrap();
    let error = stranger.send(&sms).await.unwrap_err();
    assert!(
        matches!(error, NotifyError::Misconfigured { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("signature"), "{error}");
    assert_eq!(gateway.received_requests().await.unwrap().len(), 1);
    switch.stop().await;
}

#[tokio::test]
async fn switch_notifier_reports_a_failing_gateway_and_an_absent_switch() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = failing_gateway().await;
    let sink = SmtpSink::start().await.unwrap();
    let switch = RunningSwitch::start(&config(dir.path(), &gateway.uri(), &sink)).await;
    let sms = sdk_notification(Channel::Sms, MSISDN);
    let notifier =
        SwitchNotifier::new(&switch.url(), provider_signer(), Duration::from_secs(20)).unwrap();
    let error = notifier.send(&sms).await.unwrap_err();
    assert!(
        matches!(error, NotifyError::Undeliverable { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("HTTP 502"), "{error}");
    assert!(!error.to_string().contains("281734"), "{error}");

    let url = switch.url();
    switch.stop().await;
    let error = notifier.send(&sms).await.unwrap_err();
    assert!(
        matches!(error, NotifyError::Undeliverable { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("could not be reached"),
        "{error}"
    );
    assert!(!error.to_string().contains(&url), "{error}");
}

/// The demo bank's OTP goes by SMS when the customer has a mobile number,
/// and the app is told the masked number.
#[tokio::test]
async fn an_otp_goes_by_sms_to_the_mobile_number() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = accepting_gateway().await;
    let sink = SmtpSink::start().await.unwrap();
    let switch = RunningSwitch::start(&config(dir.path(), &gateway.uri(), &sink)).await;

    let (status, answer) = post(
        &format!("{}/transact", switch.url()),
        Some(APP_KEY),
        &transact_body(
            "otp-sms-1",
            "txn-sms-1",
            json!({"mobile_no": MSISDN, "email": EMAIL}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "WaitingForOTP");
    assert_eq!(
        answer["message"],
        "Please enter the OTP sent to 2348022****08"
    );

    let messages = gateway_messages(&gateway).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["to"], MSISDN);
    let code = code_in(messages[0]["message"].as_str().unwrap());
    assert!(sink.received().is_empty(), "the SMS channel was chosen");
    assert!(!dir.path().join("outbox.jsonl").exists());

    let (status, answer) = post(
        &format!("{}/transact/validate", switch.url()),
        Some(APP_KEY),
        &validate_body("otp-sms-2", "txn-sms-1", &code),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "Successful", "{answer}");
    switch.stop().await;
}

/// A holder with an e-mail address but no mobile number on record gets
/// the OTP by e-mail, over SMTP, whatever the app sent.
#[tokio::test]
async fn an_otp_goes_by_email_when_the_holder_has_no_mobile_number() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = accepting_gateway().await;
    let sink = SmtpSink::start().await.unwrap();
    let settings = format!("first_sight = {{ email = \"{EMAIL}\" }}");
    let config = config_with_demo_settings(dir.path(), &gateway.uri(), &sink, &settings);
    let switch = RunningSwitch::start(&config).await;

    let (status, answer) = post(
        &format!("{}/transact", switch.url()),
        Some(APP_KEY),
        &transact_body(
            "otp-mail-1",
            "txn-mail-1",
            json!({"mobile_no": "2349011111111", "email": "someone-else@example.com"}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "WaitingForOTP");
    assert_eq!(
        answer["message"],
        "Please enter the OTP sent to u***@example.com"
    );

    let mail = tokio::time::timeout(LIMIT, sink.wait_for_message(0))
        .await
        .unwrap();
    assert_eq!(mail.to, vec![EMAIL.to_owned()]);
    // The host's subject template wraps whatever subject the provider chose.
    let subject = mail.subject.as_deref().unwrap();
    assert!(
        subject.starts_with("Manifold: ") && subject.len() > 10,
        "{subject}"
    );
    let code = code_in(mail.text_body.as_deref().unwrap());
    assert!(gateway.received_requests().await.unwrap().is_empty());

    let (status, answer) = post(
        &format!("{}/transact/validate", switch.url()),
        Some(APP_KEY),
        &validate_body("otp-mail-2", "txn-mail-1", &code),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "Successful", "{answer}");
    switch.stop().await;
}

/// A gateway that cannot take the OTP ends the transaction `Failed`, never
/// waiting for a code the customer does not have.
#[tokio::test]
async fn an_undeliverable_otp_fails_the_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = failing_gateway().await;
    let sink = SmtpSink::start().await.unwrap();
    let switch = RunningSwitch::start(&config(dir.path(), &gateway.uri(), &sink)).await;

    let (status, answer) = post(
        &format!("{}/transact", switch.url()),
        Some(APP_KEY),
        &transact_body("otp-fail-1", "txn-fail-1", json!({"mobile_no": MSISDN})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "Failed", "{answer}");
    assert_eq!(answer["data"]["provider_response_code"], "91");
    assert_eq!(gateway.received_requests().await.unwrap().len(), 1);

    let (_, answer) = post(
        &format!("{}/transact/query", switch.url()),
        Some(APP_KEY),
        &json!({"request_ref": "otp-fail-q", "transaction": {"transaction_ref": "txn-fail-1"}})
            .to_string(),
    )
    .await;
    assert_eq!(
        answer["data"]["transaction"]["status"], "Failed",
        "{answer}"
    );
    switch.stop().await;
}

/// The code goes to the phone the bank holds for the account, never to the
/// number the app put in `customer.mobile_no` (issue 13: an OTP must prove
/// the holder's consent, not that of a phone the app chose).
#[tokio::test]
async fn an_otp_goes_to_the_holder_on_record_not_to_the_number_the_app_sends() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = accepting_gateway().await;
    let sink = SmtpSink::start().await.unwrap();
    let settings = r#"customers = [{ account = "0123456789", mobile_no = "2348033333333" }]"#;
    let config = config_with_demo_settings(dir.path(), &gateway.uri(), &sink, settings);
    let switch = RunningSwitch::start(&config).await;

    let (status, answer) = post(
        &format!("{}/transact", switch.url()),
        Some(APP_KEY),
        &transact_body(
            "holder-1",
            "txn-holder-1",
            json!({"mobile_no": "2349099999999", "email": "app-chosen@example.com"}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "WaitingForOTP");
    assert_eq!(
        answer["message"],
        "Please enter the OTP sent to 2348033****33"
    );
    let messages = gateway_messages(&gateway).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["to"], "2348033333333");
    assert!(sink.received().is_empty());
    let code = code_in(messages[0]["message"].as_str().unwrap());
    let (_, answer) = post(
        &format!("{}/transact/validate", switch.url()),
        Some(APP_KEY),
        &validate_body("holder-2", "txn-holder-1", &code),
    )
    .await;
    assert_eq!(answer["status"], "Successful", "{answer}");
    switch.stop().await;
}

/// Codes to one destination, and for one app, stop at their hourly limits:
/// the transaction that would exceed one fails at once, naming the limit,
/// and nothing more reaches the gateway.
#[tokio::test]
async fn an_sms_flood_stops_at_the_destination_and_app_limits() {
    for (settings, names) in [
        (
            "otp_sends_per_destination_per_hour = 2",
            "the limit of 2 codes an hour to 2348022****08 is reached",
        ),
        (
            "otp_sends_per_app_per_hour = 2",
            "this app's limit of 2 codes an hour is reached",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let gateway = accepting_gateway().await;
        let sink = SmtpSink::start().await.unwrap();
        let config = config_with_demo_settings(dir.path(), &gateway.uri(), &sink, settings);
        let switch = RunningSwitch::start(&config).await;
        let url = format!("{}/transact", switch.url());
        let transact = |n: u32| {
            // A different number from the app each time: it changes nothing.
            let body = transact_body(
                &format!("flood-{n}"),
                &format!("txn-flood-{n}"),
                json!({"mobile_no": format!("234901000000{n}")}),
            );
            let url = url.clone();
            async move { post(&url, Some(APP_KEY), &body).await }
        };
        for n in 0..2 {
            let (_, answer) = transact(n).await;
            assert_eq!(answer["status"], "WaitingForOTP", "{answer}");
        }
        let (status, answer) = transact(2).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["status"], "Failed", "{answer}");
        assert_eq!(answer["data"]["provider_response_code"], "900T5");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(names), "{message}");
        assert_eq!(gateway_messages(&gateway).await.len(), 2);
        switch.stop().await;
    }
}
