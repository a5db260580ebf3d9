//! [`Dispatcher`]: each channel to its configured sender, the rest to the outbox.

mod common;

use std::sync::Arc;

use common::*;
use manifold_notify::Dispatcher;
use manifold_provider::notify::{Channel, OutboxNotifier};
use manifold_provider::Notifier;
use manifold_smtp_sink::SmtpSink;
use serde_json::json;
use wiremock::matchers::{body_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn gateway_expecting(count: u64) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/sms"))
        .and(body_json(
            json!({"to": MSISDN, "message": format!("Your code is {OTP}.")}),
        ))
        .respond_with(ResponseTemplate::new(200))
        .expect(count)
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn with_nothing_configured_everything_goes_to_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let config = notifications(dir.path(), "");
    let dispatcher = Dispatcher::from_config(&config).unwrap();
    assert!(dispatcher.uses_outbox(Channel::Sms));
    assert!(dispatcher.uses_outbox(Channel::Email));
    assert!(dispatcher.route_of(Channel::Sms).contains("outbox.jsonl"));

    dispatcher.send(&sms(MSISDN)).await.unwrap();
    dispatcher.send(&email(EMAIL)).await.unwrap();
    let outbox = OutboxNotifier::read_all(&dir.path().join("outbox.jsonl")).unwrap();
    assert_eq!(outbox, vec![sms(MSISDN), email(EMAIL)]);
}

#[tokio::test]
async fn a_configured_channel_leaves_the_outbox_for_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let server = gateway_expecting(1).await;
    let config = notifications(
        dir.path(),
        &format!("[notifications.sms]\nurl = \"{}/sms\"", server.uri()),
    );
    let dispatcher = Dispatcher::from_config(&config).unwrap();
    assert!(!dispatcher.uses_outbox(Channel::Sms));
    assert!(dispatcher.uses_outbox(Channel::Email));
    // The log line names the gateway by scheme, host and port only.
    assert_eq!(
        dispatcher.route_of(Channel::Sms),
        format!("the SMS gateway at {}", server.uri())
    );

    dispatcher.send(&sms(MSISDN)).await.unwrap();
    dispatcher.send(&email(EMAIL)).await.unwrap();
    server.verify().await;
    // Only the e-mail reached the outbox.
    let outbox = OutboxNotifier::read_all(&dir.path().join("outbox.jsonl")).unwrap();
    assert_eq!(outbox, vec![email(EMAIL)]);
}

#[tokio::test]
async fn both_channels_configured_nothing_reaches_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let server = gateway_expecting(1).await;
    let sink = SmtpSink::start().await.unwrap();
    let outbox = dir.path().join("elsewhere/outbox.jsonl");
    let config = notifications(
        dir.path(),
        &format!(
            "[notifications]\noutbox = {:?}\n\
             [notifications.sms]\nurl = \"{}/sms\"\n\
             [notifications.email]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
             from = \"no-reply@manifold.test\"",
            outbox.display().to_string(),
            server.uri(),
            sink.port()
        ),
    );
    let dispatcher = Dispatcher::from_config(&config).unwrap();
    assert_eq!(
        dispatcher.route_of(Channel::Email),
        format!("the SMTP server 127.0.0.1:{}", sink.port())
    );

    dispatcher.send(&email(EMAIL)).await.unwrap();
    dispatcher.send(&sms(MSISDN)).await.unwrap();
    let mail = tokio::time::timeout(LIMIT, sink.wait_for_message(0))
        .await
        .unwrap();
    assert_eq!(mail.to, vec![EMAIL.to_owned()]);
    assert_eq!(
        mail.text_body.unwrap().trim_end(),
        format!("Your code is {OTP}.")
    );
    server.verify().await;
    assert!(!outbox.exists());
}

#[tokio::test]
async fn failures_come_back_from_the_routed_channel() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let dispatcher = Dispatcher::new(dir.path().join("outbox.jsonl")).with_sms(
        Arc::new(
            manifold_notify::SmsGateway::new(
                notifications(
                    dir.path(),
                    &format!("[notifications.sms]\nurl = \"{}/sms\"", server.uri()),
                )
                .sms
                .as_ref()
                .unwrap(),
            )
            .unwrap(),
        ),
        "a failing gateway",
    );
    let error = dispatcher.send(&sms(MSISDN)).await.unwrap_err();
    assert_eq!(error.channel(), Channel::Sms);
    assert!(error.to_string().contains("HTTP 503"), "{error}");
    assert_discreet(&error, MSISDN);
    // A failed SMS is not quietly diverted to the outbox.
    assert!(!dir.path().join("outbox.jsonl").exists());
}

#[tokio::test]
async fn a_bad_channel_configuration_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = notifications(
        dir.path(),
        "[notifications.email]\nhost = \"127.0.0.1\"\ntls = \"none\"\nfrom = \"no-reply@x..test\"",
    );
    let error = Dispatcher::from_config(&config).unwrap_err();
    assert_eq!(error.channel(), Channel::Email);
    assert!(error.to_string().contains("misconfigured"), "{error}");
}
