//! Services the host declares `read_only` (balance enquiries): the switch
//! does not wait for its claim to reach disk before calling the provider,
//! and everything an app sees is as for any other service. The provider
//! here is a wiremock upstream speaking the switch→provider protocol, so
//! every call it receives is counted.

use std::collections::HashMap;
use std::time::Duration;

use manifold_e2e::*;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn switch_for(upstream_url: String, timeout_ms: u64) -> (InProcessSwitch, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        dir.path(),
        &[ProviderSpec::Remote {
            name: "bank",
            url: upstream_url,
        }],
        timeout_ms,
    );
    let config = parse_config(&declare_read_only(&text, &["get_balance"]));
    assert!(config.providers[0].read_only.contains("get_balance"));
    (InProcessSwitch::start(&config, HashMap::new()).await, dir)
}

fn balance(amount: u64) -> serde_json::Value {
    json!({
        "status": "Successful", "message": "Balance retrieved", "provider_response_code": "00",
        "provider_response": {"available_balance": amount}
    })
}

#[tokio::test]
async fn a_read_only_enquiry_is_recorded_once_and_answered_again_without_the_provider() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/transact"))
        .respond_with(ResponseTemplate::new(200).set_body_json(balance(2_077_099)))
        .expect(1)
        .mount(&upstream)
        .await;
    // A final record is never asked about again.
    Mock::given(method("POST"))
        .and(path("/transact/query"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&upstream)
        .await;
    let (switch, _dir) = switch_for(upstream.uri(), 2_000).await;
    let app = AppClient::new(&switch.url(), QUICK_APP, "bank");

    let first = app.get_balance("r-1", "t-1", "0123456789").await;
    assert_eq!(
        (first.http, first.status()),
        (200, "Successful"),
        "{}",
        first.raw
    );
    assert_eq!(
        first.body["data"]["provider_response"]["available_balance"],
        2_077_099
    );
    let repeat = app.get_balance("r-1", "t-1", "0123456789").await;
    assert_eq!(repeat.raw, first.raw, "a repeat is answered byte for byte");

    let query = app.query("q-1", "t-1").await;
    assert_eq!(query.status(), "Successful", "{}", query.raw);
    let history = query.body["data"]["transaction"]["history"]
        .as_array()
        .expect("a history");
    let statuses: Vec<&str> = history
        .iter()
        .filter_map(|e| e["status"].as_str())
        .collect();
    assert_eq!(statuses, ["Pending", "Successful"], "{}", query.raw);

    let reused = app.get_balance("r-2", "t-1", "0123456789").await;
    assert_eq!(
        (reused.http, reused.error()),
        (409, "duplicate_transaction_ref"),
        "{}",
        reused.raw
    );
    switch.stop().await;
    upstream.verify().await;
}

#[tokio::test]
async fn a_read_only_enquiry_the_provider_never_received_leaves_nothing_behind() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (switch, _dir) = switch_for(url, 1_000).await;
    let app = AppClient::new(&switch.url(), QUICK_APP, "bank");

    for attempt in 0..2 {
        let reply = app.get_balance("r-1", "t-1", "0123456789").await;
        assert_eq!(
            (reply.http, reply.error()),
            (503, "provider_unavailable"),
            "attempt {attempt}: {}",
            reply.raw
        );
    }
    let query = app.query("q-1", "t-1").await;
    assert_eq!(
        (query.http, query.error()),
        (404, "transaction_not_found"),
        "{}",
        query.raw
    );
    switch.stop().await;
}

#[tokio::test]
async fn a_read_only_enquiry_without_an_answer_in_time_is_recorded_pending_and_settled_by_query() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/transact"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(Duration::from_secs(3))
                .set_body_json(balance(1)),
        )
        .expect(1)
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .and(path("/transact/query"))
        .respond_with(ResponseTemplate::new(200).set_body_json(balance(42)))
        .expect(1)
        .mount(&upstream)
        .await;
    let (switch, _dir) = switch_for(upstream.uri(), 300).await;
    let app = AppClient::new(&switch.url(), QUICK_APP, "bank");

    let in_flight = {
        let app = AppClient::new(&switch.url(), QUICK_APP, "bank");
        tokio::spawn(async move { app.get_balance("r-1", "t-1", "0123456789").await })
    };
    // While the provider holds the call, the claim and the Pending record
    // exist (unflushed) and hold the transaction_ref against other calls.
    while upstream
        .received_requests()
        .await
        .unwrap_or_default()
        .is_empty()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let early = app.query("q-0", "t-1").await;
    assert_eq!(
        (early.http, early.error()),
        (409, "request_in_progress"),
        "{}",
        early.raw
    );
    let reply = in_flight.await.unwrap();
    assert_eq!(
        (reply.http, reply.status()),
        (202, "Pending"),
        "{}",
        reply.raw
    );
    let repeat = app.get_balance("r-1", "t-1", "0123456789").await;
    assert_eq!(
        repeat.raw, reply.raw,
        "the recorded Pending, not a second call"
    );
    let query = app.query("q-1", "t-1").await;
    assert_eq!(query.status(), "Successful", "{}", query.raw);
    assert_eq!(
        query.body["data"]["provider_response"]["available_balance"],
        42
    );
    switch.stop().await;
    upstream.verify().await;
}
