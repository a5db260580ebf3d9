//! What an app (or a provider calling `/notify/*`) is told when the switch
//! refuses it, over HTTP on a real switch: a key given twice in one object
//! is refused and named, and refusals about grants say nothing about what
//! exists beyond the app's own grants.

mod common;

use std::path::Path;

use common::*;
use manifold_config::SwitchConfig;
use serde_json::{json, Value};

/// The app `otp` may use `get_balance` on `demo` only. The host also runs
/// `bank-remote` (serving both services, and allowed to use `/notify/*`) and
/// grants it, and `transfer_funds`, to another app: what `otp` must not learn of.
fn config(data: &Path) -> SwitchConfig {
    let text = format!(
        r#"
listen = "127.0.0.1:0"
[data_at_rest]
key_id = "test"
key = "5c582bd6a482c1304683245d9dc030ad30b3268fa79dd91cd641661d4a4cdb87"
[storage]
path = {storage:?}
[notifications]
outbox = {outbox:?}

[[providers]]
name = "demo"
mode = "in_process"
implementation = "demo"
services = ["get_balance", "transfer_funds"]

[[providers]]
name = "bank-remote"
mode = "remote"
url = "http://127.0.0.1:9"
services = ["get_balance", "transfer_funds"]
secret = "{PROVIDER_SECRET}"
notify = true

[[apps]]
id = "{APP_ID}"
api_key = "{APP_KEY}"
secret = "{APP_SECRET}"
[apps.services.get_balance]
providers = ["demo"]
otp_override = true

[[apps]]
id = "other"
api_key = "other-app-key-0123456789abcdef00"
secret = "other-app-secret-0123456789abcdef0123456789"
[apps.services.get_balance]
providers = ["bank-remote"]
otp_override = true
[apps.services.transfer_funds]
providers = ["bank-remote", "demo"]
otp_override = true
"#,
        storage = data.join("switch").display().to_string(),
        outbox = data.join("outbox.jsonl").display().to_string(),
    );
    SwitchConfig::from_toml(&text, Path::new("app-rejections.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A signed `/transact` of `request_type` on `provider`, as the app `otp`.
async fn transact(switch: &RunningSwitch, request_type: &str, provider: &str) -> (u16, Value) {
    let mut body: Value =
        serde_json::from_str(&transact_body("probe-1", "txn-probe-1", Value::Null)).unwrap();
    body["request_type"] = json!(request_type);
    body["auth"]["auth_provider"] = json!(provider);
    post(
        &format!("{}/transact", switch.url()),
        Some(APP_KEY),
        &body.to_string(),
    )
    .await
}

/// `answer` with every occurrence of `name` replaced, to compare two
/// refusals that differ only in the name the app sent.
fn without(answer: &Value, name: &str) -> String {
    answer.to_string().replace(name, "<name>")
}

#[tokio::test]
async fn a_request_type_outside_the_grants_is_refused_alike_whether_or_not_it_exists() {
    let dir = tempfile::tempdir().unwrap();
    let switch = RunningSwitch::start(&config(dir.path())).await;

    // `transfer_funds` is configured (for another app); `buy_airtime` nowhere.
    let (status, elsewhere) = transact(&switch, "transfer_funds", "demo").await;
    assert_eq!(status, 403, "{elsewhere}");
    assert_eq!(elsewhere["data"]["error"], "service_not_allowed");
    assert_eq!(
        elsewhere["data"]["errors"],
        json!([{"field": "request_type", "message": "this app may not use request_type `transfer_funds`"}])
    );
    let (status, nowhere) = transact(&switch, "buy_airtime", "demo").await;
    assert_eq!(status, 403, "{nowhere}");
    assert_eq!(
        without(&elsewhere, "transfer_funds"),
        without(&nowhere, "buy_airtime")
    );

    // The provider named makes no difference either: the grant comes first.
    for provider in ["bank-remote", "no-such-bank"] {
        let (status, answer) = transact(&switch, "buy_airtime", provider).await;
        assert_eq!(status, 403, "{answer}");
        assert_eq!(
            without(&answer, "buy_airtime"),
            without(&nowhere, "buy_airtime")
        );
    }
    switch.stop().await;
}

#[tokio::test]
async fn a_provider_outside_the_grant_is_refused_alike_whether_or_not_it_exists() {
    let dir = tempfile::tempdir().unwrap();
    let switch = RunningSwitch::start(&config(dir.path())).await;

    // `bank-remote` exists and serves get_balance (for another app).
    let (status, elsewhere) = transact(&switch, "get_balance", "bank-remote").await;
    assert_eq!(status, 403, "{elsewhere}");
    assert_eq!(elsewhere["data"]["error"], "provider_not_allowed");
    assert_eq!(
        elsewhere["data"]["errors"],
        json!([{
            "field": "auth.auth_provider",
            "message": "this app may not use provider `bank-remote` for `get_balance`"
        }])
    );
    let (status, nowhere) = transact(&switch, "get_balance", "no-such-bank").await;
    assert_eq!(status, 403, "{nowhere}");
    assert_eq!(
        without(&elsewhere, "bank-remote"),
        without(&nowhere, "no-such-bank")
    );

    // Within its grants the app is served.
    let (status, answer) = transact(&switch, "get_balance", "demo").await;
    assert_eq!((status, &answer["status"]), (200, &json!("Successful")));
    switch.stop().await;
}

/// `(HTTP status, data.error, data.errors)` of a refusal.
fn refusal(answer: &(u16, Value)) -> (u16, &Value, &Value) {
    let (status, body) = answer;
    (*status, &body["data"]["error"], &body["data"]["errors"])
}

fn repeated(path: &str) -> Value {
    json!([{"field": path, "message": "appears more than once in its object; give each key once"}])
}

#[tokio::test]
async fn a_key_given_twice_is_refused_and_named_on_every_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let switch = RunningSwitch::start(&config(dir.path())).await;
    let url = |path: &str| format!("{}{path}", switch.url());
    let invalid = json!("invalid_request");

    // An amount the signature covers, read two ways: a proxy that keeps the
    // first value would log 0 while a last-wins parser moved 5,000,000.
    let body = transact_body("dup-1", "txn-dup-1", Value::Null);
    assert!(body.contains(r#""amount":0,"#), "{body}");
    let twice = body.replacen(r#""amount":0,"#, r#""amount":0,"amount":5000000,"#, 1);
    let answer = post(&url("/transact"), Some(APP_KEY), &twice).await;
    assert_eq!(
        refusal(&answer),
        (400, &invalid, &repeated("transaction.amount")),
        "{}",
        answer.1
    );

    let twice = body.replacen(
        r#""request_ref":"dup-1","#,
        r#""request_ref":"dup-1","request_ref":"dup-2","#,
        1,
    );
    assert_ne!(twice, body);
    let answer = post(&url("/transact"), Some(APP_KEY), &twice).await;
    assert_eq!(refusal(&answer), (400, &invalid, &repeated("request_ref")));

    // Deep inside the free-form members too, with array positions.
    let mut deep: Value = serde_json::from_str(&body).unwrap();
    deep["transaction"]["details"] = json!({"items": [{"sku": "a"}, "SKU-TWICE"]});
    let deep = deep
        .to_string()
        .replacen(r#""SKU-TWICE""#, r#"{"sku":"b","qty":1,"sku":"c"}"#, 1);
    let answer = post(&url("/transact"), Some(APP_KEY), &deep).await;
    assert_eq!(
        refusal(&answer),
        (400, &invalid, &repeated("transaction.details.items[1].sku"))
    );

    // Nothing of the refused calls was recorded.
    let query = json!({"request_ref": "q-1", "transaction": {"transaction_ref": "txn-dup-1"}});
    let answer = post(&url("/transact/query"), Some(APP_KEY), &query.to_string()).await;
    assert_eq!(answer.0, 404, "{}", answer.1);

    let twice =
        r#"{"request_ref":"q-2","transaction":{"transaction_ref":"a","transaction_ref":"b"}}"#;
    for path in ["/transact/query", "/transact/reverse", "/transact/validate"] {
        let answer = post(&url(path), Some(APP_KEY), twice).await;
        assert_eq!(
            refusal(&answer),
            (400, &invalid, &repeated("transaction.transaction_ref")),
            "{path}: {}",
            answer.1
        );
    }

    // A provider's `/notify/*` call: one message to one destination.
    let twice =
        format!(r#"{{"to":"{MSISDN}","message":"Your code is 281734.","to":"2348099999999"}}"#);
    let answer = post(&url("/notify/sms"), Some(PROVIDER_SECRET), &twice).await;
    assert_eq!(
        refusal(&answer),
        (400, &invalid, &repeated("to")),
        "{}",
        answer.1
    );
    switch.stop().await;
}
