//! Providers that hang or are down, and a switch that is killed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use manifold_demo_provider::{DemoProvider, DemoSettings};
use manifold_e2e::*;
use manifold_provider::notify::OutboxNotifier;
use manifold_provider::{
    GroupCommit, Provider, ProviderError, ProviderReply, QueryRequest, ReverseRequest,
    TransactRequest, ValidateRequest,
};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn a_remote_provider_that_hangs_leaves_the_transaction_pending_until_a_query_settles_it() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/transact"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)).set_body_json(json!({
            "status": "Successful", "message": "late", "provider_response_code": "00", "provider_response": null
        })))
        .expect(1)
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .and(path("/transact/query"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": "Successful", "message": "Settled upstream", "provider_response_code": "00",
            "provider_response": {"reference": "UP-1"}
        })))
        .expect(1)
        .mount(&upstream)
        .await;

    let dir = tempfile::tempdir().unwrap();
    let config = parse_config(&config_text(
        dir.path(),
        &[ProviderSpec::Remote {
            name: "slow",
            url: upstream.uri(),
        }],
        300,
    ));
    let switch = InProcessSwitch::start(&config, HashMap::new()).await;
    let app = AppClient::new(&switch.url(), QUICK_APP, "slow");

    let reply = app.get_balance("r-1", "t-1", "0123456789").await;
    assert_eq!(
        (reply.http, reply.status()),
        (202, "Pending"),
        "{}",
        reply.raw
    );
    assert!(reply.body["data"]["provider_response_code"].is_null());
    // A repeat does not call the provider again: it gets the recorded answer.
    assert_eq!(
        app.get_balance("r-1", "t-1", "0123456789").await.status(),
        "Pending"
    );

    let query = app.query("q-1", "t-1").await;
    assert_eq!(query.status(), "Successful", "{}", query.raw);
    assert_eq!(query.body["data"]["provider_response"]["reference"], "UP-1");
    // Settled: later queries answer from the store without asking again.
    assert_eq!(app.query("q-2", "t-1").await.status(), "Successful");
    switch.stop().await;
    upstream.verify().await;
}

/// The demo bank in `dir`, with its defaults, to be wrapped and compiled in.
fn open_demo(dir: &std::path::Path) -> Arc<DemoProvider> {
    let db = sled::open(dir.join("provider")).unwrap();
    Arc::new(
        manifold_demo_provider::open(
            &db,
            GroupCommit::start(db.clone()).unwrap(),
            &dir.join("upstream-ledger"),
            Arc::new(OutboxNotifier::new(dir.join("outbox.jsonl"))),
            DemoSettings::default(),
        )
        .unwrap(),
    )
}

/// Finishes every transaction, but only after the switch has stopped waiting.
struct LateProvider(Arc<DemoProvider>);

#[async_trait]
impl Provider for LateProvider {
    async fn transact(&self, request: TransactRequest) -> Result<ProviderReply, ProviderError> {
        let inner = self.0.clone();
        // The work goes on even when the switch gives up on this call.
        let work = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            inner.transact(request).await
        });
        work.await
            .map_err(|e| ProviderError::Internal(e.to_string()))?
    }
    async fn validate(&self, request: ValidateRequest) -> Result<ProviderReply, ProviderError> {
        self.0.validate(request).await
    }
    async fn query(&self, request: QueryRequest) -> Result<ProviderReply, ProviderError> {
        self.0.query(request).await
    }
    async fn reverse(&self, request: ReverseRequest) -> Result<ProviderReply, ProviderError> {
        self.0.reverse(request).await
    }
}

#[tokio::test]
async fn an_in_process_provider_is_held_to_its_timeout_too() {
    let dir = tempfile::tempdir().unwrap();
    let demo = open_demo(dir.path());
    let mut implementations: HashMap<String, Arc<dyn Provider>> = HashMap::new();
    implementations.insert("late".into(), Arc::new(LateProvider(demo.clone())));
    let config = parse_config(&config_text(
        dir.path(),
        &[ProviderSpec::InProcess {
            name: "demo",
            implementation: "late",
        }],
        200,
    ));
    let switch = InProcessSwitch::start(&config, implementations).await;
    let app = AppClient::new(&switch.url(), QUICK_APP, "demo");

    let reply = app.transfer("r-1", "t-1", "0123456789", 5_000).await;
    assert_eq!(
        (reply.http, reply.status()),
        (202, "Pending"),
        "{}",
        reply.raw
    );
    // Until the provider has it, a query leaves it Pending rather than guessing.
    assert_eq!(app.query("q-1", "t-1").await.status(), "Pending");
    // Poll the way an app would, for at most ten seconds.
    let mut settled = None;
    for attempt in 0..100 {
        let query = app.query(&format!("q-poll-{attempt}"), "t-1").await;
        if query.status() != "Pending" {
            settled = Some(query);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let settled = settled.expect("the query settles the transaction");
    assert_eq!(settled.status(), "Successful", "{}", settled.raw);
    // Executed exactly once.
    assert_eq!(
        demo.connector().bank_balance("058", "0123456789").unwrap(),
        Some(2_077_099 - 5_000)
    );
    switch.stop().await;
}

#[tokio::test]
async fn an_unreachable_provider_records_nothing_and_the_app_may_retry() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let config = parse_config(&config_text(
        dir.path(),
        &[ProviderSpec::Remote { name: "down", url }],
        1_000,
    ));
    let switch = InProcessSwitch::start(&config, HashMap::new()).await;
    let app = AppClient::new(&switch.url(), QUICK_APP, "down");

    let reply = app.get_balance("r-1", "t-1", "0123456789").await;
    assert_eq!(
        (reply.http, reply.status(), reply.error()),
        (503, "Failed", "provider_unavailable"),
        "{}",
        reply.raw
    );
    assert!(reply.message().contains("`down`"), "{}", reply.message());
    assert!(
        !reply.raw.contains("127.0.0.1"),
        "the provider's address leaked: {}",
        reply.raw
    );
    assert_eq!(switch.store.transaction_count().await.unwrap(), 0);
    assert!(switch
        .store
        .request("quick", "r-1")
        .await
        .unwrap()
        .is_none());
    // Still down, but the same references are accepted again rather than conflicting.
    assert_eq!(
        app.get_balance("r-1", "t-1", "0123456789").await.error(),
        "provider_unavailable"
    );
    switch.stop().await;
}

#[tokio::test]
async fn a_killed_switch_restarts_with_every_acknowledged_transaction_and_pending_otp() {
    let dir = tempfile::tempdir().unwrap();
    let text = in_process_demo_config(dir.path());
    let config_path = dir.path().join("manifold.toml");
    std::fs::write(&config_path, text).unwrap();
    let outbox = dir.path().join("outbox.jsonl");

    let switch = SwitchProcess::start(&config_path);
    let quick = AppClient::new(&switch.url(), QUICK_APP, "demo");
    let otp = AppClient::new(&switch.url(), OTP_APP, "demo");
    assert_eq!(
        quick
            .transfer("r-1", "done", "0123456789", 1_000)
            .await
            .status(),
        "Successful"
    );
    assert_eq!(
        otp.transfer("r-2", "waiting", "1111111111", 2_000)
            .await
            .status(),
        "WaitingForOTP"
    );
    let code = latest_otp(&outbox, "2348022000008");
    switch.kill();

    let switch = SwitchProcess::start(&config_path);
    let quick = AppClient::new(&switch.url(), QUICK_APP, "demo");
    let otp = AppClient::new(&switch.url(), OTP_APP, "demo");
    assert_eq!(quick.query("q-1", "done").await.status(), "Successful");
    assert_eq!(otp.query("q-2", "waiting").await.status(), "WaitingForOTP");
    // The repeat of an acknowledged call is still its stored answer.
    assert_eq!(
        quick
            .transfer("r-1", "done", "0123456789", 1_000)
            .await
            .status(),
        "Successful"
    );
    let done = otp
        .validate("v-1", "waiting", "transfer_funds", &code)
        .await;
    assert_eq!(done.status(), "Successful", "{}", done.raw);
    let balance = quick.get_balance("r-3", "bal", "1111111111").await;
    assert_eq!(
        balance.body["data"]["provider_response"]["avialable_balance"],
        2_077_099 - 2_000
    );
    let balance = quick.get_balance("r-4", "bal-2", "0123456789").await;
    assert_eq!(
        balance.body["data"]["provider_response"]["avialable_balance"],
        2_077_099 - 1_000
    );
    switch.kill();
}

/// Takes a while, then turns out never to have reached its upstream.
struct SlowlyUnreachable;

#[async_trait]
impl Provider for SlowlyUnreachable {
    async fn transact(&self, _request: TransactRequest) -> Result<ProviderReply, ProviderError> {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        Err(ProviderError::Unreachable("connection refused".into()))
    }
    async fn validate(&self, _request: ValidateRequest) -> Result<ProviderReply, ProviderError> {
        Err(ProviderError::UnknownTransaction)
    }
    async fn query(&self, _request: QueryRequest) -> Result<ProviderReply, ProviderError> {
        Err(ProviderError::UnknownTransaction)
    }
    async fn reverse(&self, _request: ReverseRequest) -> Result<ProviderReply, ProviderError> {
        Err(ProviderError::UnknownTransaction)
    }
}

/// While a first `/transact` may still end in 503 (which records nothing),
/// nobody is told `Pending`: a repeat and a query are asked to come back.
#[tokio::test]
async fn a_transaction_that_may_still_vanish_is_never_reported_pending() {
    let dir = tempfile::tempdir().unwrap();
    let mut implementations: HashMap<String, Arc<dyn Provider>> = HashMap::new();
    implementations.insert("slowly-unreachable".into(), Arc::new(SlowlyUnreachable));
    let config = parse_config(&config_text(
        dir.path(),
        &[ProviderSpec::InProcess {
            name: "demo",
            implementation: "slowly-unreachable",
        }],
        5_000,
    ));
    let switch = InProcessSwitch::start(&config, implementations).await;
    let app = AppClient::new(&switch.url(), QUICK_APP, "demo");
    let body = app.transact_body("r-1", "t-1", "get_balance", "0123456789", 0);

    let first = {
        let app = AppClient::new(&switch.url(), QUICK_APP, "demo");
        let body = body.clone();
        tokio::spawn(async move { app.post("/transact", &body).await })
    };
    // Wait until the first call has recorded the transaction.
    let mut query = app.query("q-0", "t-1").await;
    for attempt in 1..100 {
        if query.http != 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        query = app.query(&format!("q-{attempt}"), "t-1").await;
    }
    assert_eq!(
        (query.http, query.error()),
        (409, "request_in_progress"),
        "{}",
        query.raw
    );
    let repeat = app.post("/transact", &body).await;
    assert_eq!(
        (repeat.http, repeat.error()),
        (409, "request_in_progress"),
        "{}",
        repeat.raw
    );

    let first = first.await.unwrap();
    assert_eq!(
        (first.http, first.error()),
        (503, "provider_unavailable"),
        "{}",
        first.raw
    );
    // Nothing was recorded, and nobody was told otherwise.
    let after = app.query("q-after", "t-1").await;
    assert_eq!((after.http, after.error()), (404, "transaction_not_found"));
    switch.stop().await;
}

/// A provider that answers with a redirect has read the request, so the
/// outcome is unknown: `Pending`, settled by query. The redirect's target —
/// where the decrypted source would have gone — receives nothing.
#[tokio::test]
async fn a_redirecting_provider_is_indeterminate_and_its_target_gets_nothing() {
    let target = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": "Successful", "message": "stolen", "provider_response_code": "00"
        })))
        .expect(0)
        .mount(&target)
        .await;
    let provider = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/transact"))
        .respond_with(
            ResponseTemplate::new(307)
                .insert_header("location", format!("{}/transact", target.uri())),
        )
        .expect(1)
        .mount(&provider)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = parse_config(&config_text(
        dir.path(),
        &[ProviderSpec::Remote {
            name: "redirecting",
            url: provider.uri(),
        }],
        5_000,
    ));
    let switch = InProcessSwitch::start(&config, HashMap::new()).await;
    let app = AppClient::new(&switch.url(), QUICK_APP, "redirecting");
    let reply = app
        .transfer("redir-1", "t-redir-1", "0123456789", 10_000)
        .await;
    assert_eq!(
        (reply.http, reply.status()),
        (202, "Pending"),
        "{}",
        reply.raw
    );
    // The one call the provider got was signed by the switch.
    let received = provider.received_requests().await.unwrap();
    assert!(received[0].headers.contains_key("signature-input"));
    assert!(received[0].headers.contains_key("content-digest"));
    switch.stop().await;
    provider.verify().await;
    target.verify().await;
}

/// Holds each `transact` until the test lets it go, and says when one
/// arrived: the switch's call is then certainly in flight.
struct GatedProvider {
    inner: Arc<DemoProvider>,
    arrived: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

#[async_trait]
impl Provider for GatedProvider {
    async fn transact(&self, request: TransactRequest) -> Result<ProviderReply, ProviderError> {
        self.arrived.notify_one();
        self.release.notified().await;
        self.inner.transact(request).await
    }
    async fn validate(&self, request: ValidateRequest) -> Result<ProviderReply, ProviderError> {
        self.inner.validate(request).await
    }
    async fn query(&self, request: QueryRequest) -> Result<ProviderReply, ProviderError> {
        self.inner.query(request).await
    }
    async fn reverse(&self, request: ReverseRequest) -> Result<ProviderReply, ProviderError> {
        self.inner.reverse(request).await
    }
}

/// An app whose connection closes while the provider call is in flight has
/// not cancelled the call: the switch finishes it, records the answer, and a
/// repeat of the request gets that answer.
#[tokio::test]
async fn a_client_that_disconnects_mid_call_does_not_cancel_it() {
    use tokio::io::AsyncWriteExt;

    let dir = tempfile::tempdir().unwrap();
    let demo = open_demo(dir.path());
    let gated = Arc::new(GatedProvider {
        inner: demo,
        arrived: tokio::sync::Notify::new(),
        release: tokio::sync::Notify::new(),
    });
    let mut implementations: HashMap<String, Arc<dyn Provider>> = HashMap::new();
    implementations.insert("gated".into(), gated.clone());
    let config = parse_config(&config_text(
        dir.path(),
        &[ProviderSpec::InProcess {
            name: "demo",
            implementation: "gated",
        }],
        30_000,
    ));
    let switch = InProcessSwitch::start(&config, implementations).await;
    let app = AppClient::new(&switch.url(), QUICK_APP, "demo");

    // The call, on a socket of our own so that we decide when it closes.
    let body = app
        .transact_body("dc-1", "t-dc-1", "transfer_funds", "0123456789", 5_000)
        .to_string();
    let mut head = format!(
        "POST /transact HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        switch.addr,
        body.len()
    );
    for (name, value) in app.auth_headers("/transact", body.as_bytes()) {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut socket = tokio::net::TcpStream::connect(switch.addr).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(body.as_bytes()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), gated.arrived.notified())
        .await
        .expect("the call reached the provider");
    drop(socket);
    // Give the switch the close before the provider answers: the close is
    // seen by the connection's next read, which a yield round lets happen.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    gated.release.notify_one();

    // The same request again: the recorded answer, once it is there.
    let mut answered = None;
    for _ in 0..100 {
        let repeat = app
            .post("/transact", &serde_json::from_str(&body).unwrap())
            .await;
        if repeat.error() != "request_in_progress" {
            answered = Some(repeat);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let repeat = answered.expect("the call settles within ten seconds");
    assert_eq!(repeat.status(), "Successful", "{}", repeat.raw);
    let query = app.query("dc-q", "t-dc-1").await;
    assert_eq!(query.status(), "Successful", "{}", query.raw);
    switch.stop().await;
}

#[tokio::test]
async fn the_provider_is_sent_the_id_the_app_is_answered_with() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/transact"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": "Successful", "message": "ok", "provider_response_code": "00",
            "provider_response": null
        })))
        .expect(2)
        .mount(&upstream)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = parse_config(&config_text(
        dir.path(),
        &[ProviderSpec::Remote {
            name: "labelled",
            url: upstream.uri(),
        }],
        5_000,
    ));
    let switch = InProcessSwitch::start(&config, HashMap::new()).await;
    let app = AppClient::new(&switch.url(), QUICK_APP, "labelled");
    let mut answered = Vec::new();
    for n in 0..2 {
        let reply = app
            .get_balance(&format!("id-{n}"), &format!("id-txn-{n}"), "0123456789")
            .await;
        assert_eq!(reply.status(), "Successful", "{}", reply.raw);
        let id = reply.headers["x-request-id"].to_str().unwrap().to_owned();
        answered.push(id);
    }
    let sent: Vec<String> = upstream
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|request| request.headers["x-request-id"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(sent, answered);
    assert_ne!(answered[0], answered[1]);
    switch.stop().await;
}
