//! [`SmsGateway`] against a wiremock gateway on 127.0.0.1.

mod common;

use std::time::Duration;

use common::*;
use manifold_notify::SmsGateway;
use manifold_provider::notify::Channel;
use manifold_provider::{Notifier, NotifyError};
use serde_json::json;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn gateway(storage: &std::path::Path, table: &str) -> SmsGateway {
    let config = notifications(storage, &format!("[notifications.sms]\n{table}"));
    SmsGateway::new(config.sms.as_ref().unwrap()).unwrap()
}

#[tokio::test]
async fn the_request_has_the_configured_url_auth_and_templated_body() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("authorization", "Bearer gateway-token-123"))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "to": MSISDN,
            "from": "Manifold",
            "message": format!("Manifold: Your code is {OTP}. (sent to {MSISDN})"),
        })))
        .respond_with(ResponseTemplate::new(202).set_body_json(json!({"id": "msg-1"})))
        .expect(1)
        .mount(&server)
        .await;
    let gateway = gateway(
        dir.path(),
        &format!(
            "url = \"{}/v1/messages\"\ntoken = \"gateway-token-123\"\nsender = \"Manifold\"\n\
             template = \"{{sender}}: {{message}} (sent to {{to}})\"",
            server.uri()
        ),
    );
    gateway.send(&sms(MSISDN)).await.unwrap();
    server.verify().await;
}

#[tokio::test]
async fn basic_credentials_and_no_sender() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/send"))
        // base64("manifold:pa55word")
        .and(header("authorization", "Basic bWFuaWZvbGQ6cGE1NXdvcmQ="))
        // Exactly these members: no `from` when no sender is configured.
        .and(body_json(json!({
            "to": format!("+{MSISDN}"),
            "message": format!("Your code is {OTP}."),
        })))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let gateway = gateway(
        dir.path(),
        &format!(
            "url = \"{}/send\"\nusername = \"manifold\"\npassword = \"pa55word\"",
            server.uri()
        ),
    );
    gateway.send(&sms(&format!("+{MSISDN}"))).await.unwrap();
    server.verify().await;
}

#[tokio::test]
async fn a_gateway_error_is_refused_without_the_otp() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    // A gateway that echoes the message back in its error must not get the
    // OTP into our error text.
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(500)
                .set_body_string(format!("cannot send 'Your code is {OTP}.'")),
        )
        .expect(1)
        .mount(&server)
        .await;
    let gateway = gateway(
        dir.path(),
        &format!("url = \"{}/sms\"\ntoken = \"t\"", server.uri()),
    );
    let error = gateway.send(&sms(MSISDN)).await.unwrap_err();
    assert!(
        matches!(
            error,
            NotifyError::Refused {
                channel: Channel::Sms,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("HTTP 500"), "{error}");
    assert!(error.to_string().contains("2348022****08"), "{error}");
    assert_discreet(&error, MSISDN);
}

#[tokio::test]
async fn refused_credentials_and_redirects_say_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    Mock::given(path("/denied"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    Mock::given(path("/moved"))
        .respond_with(
            ResponseTemplate::new(307)
                .insert_header("location", format!("{}/denied", server.uri())),
        )
        .mount(&server)
        .await;
    let denied = gateway(
        dir.path(),
        &format!("url = \"{}/denied\"\ntoken = \"t\"", server.uri()),
    );
    let error = denied.send(&sms(MSISDN)).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("HTTP 401 (check the gateway credentials)"),
        "{error}"
    );

    let moved = gateway(dir.path(), &format!("url = \"{}/moved\"", server.uri()));
    let error = moved.send(&sms(MSISDN)).await.unwrap_err();
    assert!(
        error.to_string().contains("HTTP 307 (a redirect"),
        "{error}"
    );
    // The redirect was not followed: only /moved was asked, once.
    let requests = server.received_requests().await.unwrap();
    let moved_calls: Vec<_> = requests
        .iter()
        .filter(|r| r.url.path() == "/moved")
        .collect();
    assert_eq!(moved_calls.len(), 1);
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.url.path() == "/denied")
            .count(),
        1
    );
}

#[tokio::test]
async fn a_slow_gateway_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&server)
        .await;
    let gateway = gateway(
        dir.path(),
        &format!("url = \"{}/sms\"\ntimeout_ms = 300", server.uri()),
    );
    let error = tokio::time::timeout(LIMIT, gateway.send(&sms(MSISDN)))
        .await
        .expect("the gateway's own timeout ends the call")
        .unwrap_err();
    assert!(
        matches!(error, NotifyError::Undeliverable { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("did not answer within 300 ms"),
        "{error}"
    );
}

#[tokio::test]
async fn an_unreachable_gateway_is_undeliverable() {
    let dir = tempfile::tempdir().unwrap();
    // A port that was just free: nothing listens there any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gateway = gateway(
        dir.path(),
        &format!("url = \"http://127.0.0.1:{port}/sms\""),
    );
    let error = gateway.send(&sms(MSISDN)).await.unwrap_err();
    assert!(
        matches!(error, NotifyError::Undeliverable { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("could not be reached"),
        "{error}"
    );
    // reqwest's own text would name the URL; ours does not.
    assert!(!error.to_string().contains("127.0.0.1"), "{error}");
}

#[tokio::test]
async fn a_bad_number_is_refused_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let gateway = gateway(dir.path(), &format!("url = \"{}/sms\"", server.uri()));
    for bad in ["", "0802 200 0008", "uju@example.com", "123"] {
        let error = gateway.send(&sms(bad)).await.unwrap_err();
        assert!(
            matches!(error, NotifyError::InvalidDestination { .. }),
            "{bad}: {error:?}"
        );
    }
    let error = gateway.send(&email(EMAIL)).await.unwrap_err();
    assert!(
        matches!(error, NotifyError::Misconfigured { .. }),
        "{error:?}"
    );
    server.verify().await;
}
