//! The switch, a remote demo provider and the SMS gateway, all over TLS with
//! certificates from a CA made for the test: an app's OTP conversation
//! crosses every link (app → switch, switch → provider, provider → switch's
//! `/notify/sms`, switch → gateway) as real HTTPS on loopback. A switch that
//! does not trust the provider's CA reaches nothing.

use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use manifold_e2e::pki::TestCa;
use manifold_e2e::*;
use manifold_edge::{json_response, read_request_body, Body, EdgeOptions, Peer};
use serde_json::Value;

/// An SMS gateway stand-in speaking HTTPS (wiremock has no TLS): it keeps
/// every JSON body POSTed to it and answers 202.
async fn tls_gateway(ca: &TestCa) -> (String, Arc<Mutex<Vec<Value>>>) {
    let files = ca.server("sms-gateway");
    let options = EdgeOptions {
        tls: Some(manifold_edge::tls::server_config(&files.cert, &files.key).unwrap()),
        ..EdgeOptions::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    let kept = received.clone();
    let handler = move |request: http::Request<Incoming>, _peer: Peer| {
        let kept = kept.clone();
        async move {
            let body = read_request_body(request).await.unwrap_or_default();
            kept.lock()
                .unwrap()
                .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
            let response: http::Response<Body> = json_response(
                http::StatusCode::ACCEPTED,
                &serde_json::json!({"queued": true}),
            );
            response
        }
    };
    tokio::spawn(manifold_edge::serve(
        listener,
        handler,
        options,
        std::future::pending(),
    ));
    (url, received)
}

#[tokio::test]
async fn an_otp_conversation_crosses_every_link_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "manifold");
    let (gateway_url, sms) = tls_gateway(&ca).await;
    let switch_files = ca.server("switch");
    let provider_files = ca.server("provider");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let switch_url = format!("https://{}", listener.local_addr().unwrap());
    let provider = ProviderProcess::start_with(
        &dir.path().join("provider"),
        &dir.path().join("unused-outbox.jsonl"),
        "127.0.0.1:0",
        &[
            "--tls-cert".into(),
            provider_files.cert.display().to_string(),
            "--tls-key".into(),
            provider_files.key.display().to_string(),
            "--notify-switch-url".into(),
            switch_url.clone(),
            "--switch-ca-file".into(),
            ca.ca_file.display().to_string(),
        ],
    );
    let provider_url = format!("https://{}", provider.addr);
    let ca_file = ca.ca_file.display().to_string();
    let text = config_text(
        dir.path(),
        &[ProviderSpec::Remote {
            name: "demo",
            url: provider_url.clone(),
        }],
        10_000,
    )
    .replacen(
        &format!("url = \"{provider_url}\"\n"),
        &format!("url = \"{provider_url}\"\nca_file = {ca_file:?}\nnotify = true\n"),
        1,
    )
    .replacen(
        "[storage]",
        &format!(
            "[server.tls]\ncert = {:?}\nkey = {:?}\n[storage]",
            switch_files.cert.display().to_string(),
            switch_files.key.display().to_string()
        ),
        1,
    ) + &format!(
        "[notifications.sms]\nurl = \"{gateway_url}/sms\"\ntoken = \"gateway-token-0123456789\"\nca_file = {ca_file:?}\n"
    );
    let switch =
        InProcessSwitch::start_on(&parse_config(&text), Default::default(), listener).await;
    let app = AppClient::with_client(&switch_url, OTP_APP, "demo", ca.client());

    let waiting = app.get_balance("tls-1", "t-tls-1", "0123456789").await;
    assert_eq!(waiting.status(), "WaitingForOTP", "{}", waiting.raw);
    let message = {
        let sent = sms.lock().unwrap();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0]["to"], "2348022000008");
        sent[0]["message"].as_str().unwrap().to_owned()
    };
    let code = message
        .split(|c: char| !c.is_ascii_digit())
        .find(|word| word.len() == 6)
        .expect("a 6-digit code in the SMS")
        .to_owned();
    let done = app.validate("tls-2", "t-tls-1", "get_balance", &code).await;
    assert_eq!(done.status(), "Successful", "{}", done.raw);

    // Plain HTTP to the TLS port gets no answer.
    let plain = http_client()
        .get(format!("http://{}/health", switch.addr))
        .send()
        .await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
    switch.stop().await;
}

#[tokio::test]
async fn a_provider_whose_certificate_is_not_trusted_is_never_sent_anything() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "provider-only");
    let files = ca.server("provider");
    let provider = ProviderProcess::start_with(
        &dir.path().join("provider"),
        &dir.path().join("outbox.jsonl"),
        "127.0.0.1:0",
        &[
            "--tls-cert".into(),
            files.cert.display().to_string(),
            "--tls-key".into(),
            files.key.display().to_string(),
        ],
    );
    // The switch trusts only the public roots (no ca_file), as a switch
    // facing an impostor with a self-made certificate would.
    let text = config_text(
        dir.path(),
        &[ProviderSpec::Remote {
            name: "demo",
            url: format!("https://{}", provider.addr),
        }],
        10_000,
    );
    let switch = InProcessSwitch::start(&parse_config(&text), Default::default()).await;
    let app = AppClient::new(&switch.url(), QUICK_APP, "demo");
    let reply = app
        .transfer("untrusted-1", "t-untrusted-1", "0123456789", 10_000)
        .await;
    assert_eq!(
        (reply.http, reply.error()),
        (503, "provider_unavailable"),
        "{}",
        reply.raw
    );
    assert_eq!(switch.store.transaction_count().await.unwrap(), 0);
    assert_eq!(provider.stats_over(&ca.client()).await["transact"], 0);
    switch.stop().await;
}
