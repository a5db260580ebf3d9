//! An app's request rate and daily quotas, a provider's concurrent calls and
//! the pacing of queries: each limit answers 429 with `Retry-After` and a
//! `Failed` envelope naming it, changes nothing, and leaves every call under
//! the limit alone.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use manifold_e2e::*;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// `text` with the quick app's `[apps.limits]` replaced by `limits`.
fn with_quick_app_limits(text: &str, limits: &str) -> String {
    let quick = format!("api_key = \"{}\"", QUICK_APP.1);
    let at = text.find(&quick).expect("config_text changed shape");
    let default = format!("[apps.limits]\nrequests_per_second = {TEST_APP_RATE}\n");
    let offset = text[at..]
        .find(&default)
        .expect("config_text changed shape")
        + at;
    format!(
        "{}[apps.limits]\n{limits}\n{}",
        &text[..offset],
        &text[offset + default.len()..]
    )
}

/// Asserts a refusal by the limit `code`, and returns its `Retry-After`.
fn assert_limited(reply: &Reply, code: &str, names: &str) -> u64 {
    assert_eq!(
        (reply.http, reply.status(), reply.error()),
        (429, "Failed", code),
        "{}",
        reply.raw
    );
    assert!(reply.message().contains(names), "{}", reply.message());
    let retry_after: u64 = reply
        .headers
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {:?}", reply.headers));
    assert!(retry_after >= 1);
    retry_after
}

#[tokio::test]
async fn an_app_over_its_rate_is_refused_and_nothing_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let text = with_quick_app_limits(
        &in_process_demo_config(dir.path()),
        "requests_per_second = 1\nburst = 3",
    );
    let switch = InProcessSwitch::start(&parse_config(&text), HashMap::new()).await;
    let quick = AppClient::new(&switch.url(), QUICK_APP, "demo");
    let signed = AppClient::new(&switch.url(), SIGNED_APP, "demo");

    for i in 0..3 {
        let reply = quick
            .get_balance(&format!("r-{i}"), &format!("t-{i}"), "0123456789")
            .await;
        assert_eq!(reply.status(), "Successful", "{}", reply.raw);
    }
    let refused = quick.transfer("r-3", "t-3", "0123456789", 100).await;
    let retry_after = assert_limited(&refused, "rate_limited", "1 requests per second");
    assert!(retry_after <= 1, "{retry_after}");
    // Every endpoint counts, and another app is not affected.
    assert_eq!(quick.query("q-0", "t-0").await.http, 429);
    assert_eq!(
        signed
            .get_balance("s-1", "t-1", "0123456789")
            .await
            .status(),
        "Successful"
    );

    // Nothing of the refused call was recorded: once the rate allows, the
    // same request runs as new (a stored refusal would come back instead).
    let started = Instant::now();
    let done = loop {
        let reply = quick.transfer("r-3", "t-3", "0123456789", 100).await;
        if reply.http != 429 || started.elapsed() > Duration::from_secs(10) {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(done.status(), "Successful", "{}", done.raw);
    switch.stop().await;
}

#[tokio::test]
async fn a_daily_quota_counts_new_transactions_and_survives_a_restart() {
    let day = || unix_now() / 86_400;
    let first_day = day();
    let dir = tempfile::tempdir().unwrap();
    let text = with_quick_app_limits(
        &in_process_demo_config(dir.path()),
        &format!("requests_per_second = {TEST_APP_RATE}\n[apps.limits.daily]\ntransfer_funds = 2"),
    );
    let config_path = dir.path().join("manifold.toml");
    std::fs::write(&config_path, &text).unwrap();
    let switch = SwitchProcess::start(&config_path);
    let quick = AppClient::new(&switch.url(), QUICK_APP, "demo");

    let first = quick.transfer("r-1", "t-1", "0123456789", 100).await;
    assert_eq!(first.status(), "Successful", "{}", first.raw);
    // A repeat of a request_ref is not a new transaction.
    assert_eq!(
        quick.transfer("r-1", "t-1", "0123456789", 100).await.raw,
        first.raw
    );
    assert_eq!(
        quick
            .transfer("r-2", "t-2", "0123456789", 100)
            .await
            .status(),
        "Successful"
    );
    let refused = quick.transfer("r-3", "t-3", "0123456789", 100).await;
    let retry_after = assert_limited(&refused, "daily_quota_exceeded", "2 new `transfer_funds`");
    assert!(retry_after <= 86_400);
    // With the quota used up, a repeat is still answered: it begins nothing.
    assert_eq!(
        quick.transfer("r-1", "t-1", "0123456789", 100).await.raw,
        first.raw
    );
    // Other request_types have no quota.
    assert_eq!(
        quick.get_balance("b-1", "b-1", "0123456789").await.status(),
        "Successful"
    );
    drop(switch);

    // A restart rebuilds the day's count from the metering in the store.
    let switch = SwitchProcess::start(&config_path);
    let quick = AppClient::new(&switch.url(), QUICK_APP, "demo");
    let refused = quick.transfer("r-4", "t-4", "0123456789", 100).await;
    if day() != first_day {
        eprintln!("the UTC day changed during the test; the count rightly started again");
        return;
    }
    assert_limited(&refused, "daily_quota_exceeded", "2 new `transfer_funds`");
    assert_eq!(quick.query("q-1", "t-2").await.status(), "Successful");
}

/// A remote provider whose `/transact` answers after `delay`.
async fn slow_upstream(delay: Duration) -> MockServer {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/transact"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(delay)
                .set_body_json(json!({
                    "status": "Successful", "message": "done", "provider_response_code": "00",
                    "provider_response": null
                })),
        )
        .mount(&upstream)
        .await;
    upstream
}

async fn requests_at(upstream: &MockServer, path: &str) -> usize {
    upstream
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|request| request.url.path() == path)
        .count()
}

#[tokio::test]
async fn a_provider_at_its_concurrency_limit_refuses_more_calls_until_one_ends() {
    let upstream = slow_upstream(Duration::from_secs(2)).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        dir.path(),
        &[ProviderSpec::Remote {
            name: "slow",
            url: upstream.uri(),
        }],
        10_000,
    )
    .replacen(
        "timeout_ms = 10000\n",
        "timeout_ms = 10000\nmax_concurrent_calls = 2\n",
        1,
    );
    let switch = InProcessSwitch::start(&parse_config(&text), HashMap::new()).await;
    let quick = AppClient::new(&switch.url(), QUICK_APP, "slow");
    let signed = AppClient::new(&switch.url(), SIGNED_APP, "slow");

    let in_flight: Vec<_> = (0..2)
        .map(|i| {
            let app = AppClient::new(&switch.url(), QUICK_APP, "slow");
            tokio::spawn(async move {
                app.transfer(&format!("r-{i}"), &format!("t-{i}"), "0123456789", 100)
                    .await
            })
        })
        .collect();
    // Both calls are with the upstream (a capped wait, not a fixed sleep).
    let started = Instant::now();
    while requests_at(&upstream, "/transact").await < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "calls never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A third, from any app, is refused before anything is recorded.
    let refused = signed.transfer("s-1", "t-9", "0123456789", 100).await;
    assert_limited(&refused, "provider_busy", "provider `slow`");
    assert_eq!(requests_at(&upstream, "/transact").await, 2);
    for call in in_flight {
        let reply = call.await.unwrap();
        assert_eq!(reply.status(), "Successful", "{}", reply.raw);
    }
    // Slots are free again, and the refused call was never recorded.
    assert_eq!(signed.query("q-1", "t-9").await.http, 404);
    assert_eq!(
        signed
            .transfer("s-1", "t-9", "0123456789", 100)
            .await
            .status(),
        "Successful"
    );
    assert_eq!(quick.query("q-2", "t-0").await.status(), "Successful");
    switch.stop().await;
}

/// A switch whose remote provider leaves every transfer `Pending` and
/// answers queries `Pending` too, with `interval` between queries.
async fn pending_rig(interval_ms: u64) -> (MockServer, InProcessSwitch, tempfile::TempDir) {
    let upstream = slow_upstream(Duration::from_secs(5)).await;
    Mock::given(method("POST"))
        .and(path("/transact/query"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": "Pending", "message": "still working", "provider_response_code": "09",
            "provider_response": null
        })))
        .mount(&upstream)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(
        dir.path(),
        &[ProviderSpec::Remote {
            name: "slow",
            url: upstream.uri(),
        }],
        200,
    )
    .replacen(
        "timeout_ms = 200\n",
        &format!("timeout_ms = 200\nquery_interval_ms = {interval_ms}\n"),
        1,
    );
    let switch = InProcessSwitch::start(&parse_config(&text), HashMap::new()).await;
    (upstream, switch, dir)
}

#[tokio::test]
async fn queries_of_an_unfinished_transaction_ask_the_provider_once_per_interval() {
    let (upstream, switch, _dir) = pending_rig(3_600_000).await;
    let app = AppClient::new(&switch.url(), QUICK_APP, "slow");
    let pending = app.transfer("r-1", "t-1", "0123456789", 100).await;
    assert_eq!(pending.status(), "Pending", "{}", pending.raw);
    for i in 0..5 {
        let query = app.query(&format!("q-{i}"), "t-1").await;
        assert_eq!(
            (query.http, query.status()),
            (202, "Pending"),
            "{}",
            query.raw
        );
    }
    assert_eq!(requests_at(&upstream, "/transact/query").await, 1);
    // Another transaction has its own interval.
    app.transfer("r-2", "t-2", "0123456789", 100).await;
    app.query("q-9", "t-2").await;
    assert_eq!(requests_at(&upstream, "/transact/query").await, 2);
    switch.stop().await;

    // 0 asks at every query.
    let (upstream, switch, _dir) = pending_rig(0).await;
    let app = AppClient::new(&switch.url(), QUICK_APP, "slow");
    app.transfer("r-1", "t-1", "0123456789", 100).await;
    for i in 0..3 {
        app.query(&format!("q-{i}"), "t-1").await;
    }
    assert_eq!(requests_at(&upstream, "/transact/query").await, 3);
    switch.stop().await;
}
