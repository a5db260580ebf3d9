//! One log line per request, rejected or not, with the id the answer carries
//! in `x-request-id`; lines written while the call is handled carry it too.
//!
//! One test in its own binary, because it installs the process-wide
//! subscriber that captures the logs.

mod common;

use common::*;
use manifold_smtp_sink::SmtpSink;
use serde_json::json;

/// The captured lines holding `needle`.
fn lines_with(logs: &Captured, needle: &str) -> Vec<String> {
    logs.text()
        .lines()
        .filter(|line| line.contains(needle))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn every_request_is_logged_once_with_the_id_its_answer_carries() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let dir = tempfile::tempdir().unwrap();
    let gateway = accepting_gateway().await;
    let sink = SmtpSink::start().await.unwrap();
    let switch = RunningSwitch::start(&config(dir.path(), &gateway.uri(), &sink)).await;

    // A call with a key nobody has: 401, and still one line.
    let refused = client()
        .post(format!("{}/transact", switch.url()))
        .header("authorization", "Bearer not-a-key-of-anybody-here")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let id = refused
        .headers()
        .get("x-request-id")
        .expect("the answer names its request")
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 16);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    let lines = lines_with(&logs, &format!("request_id={id}"));
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = &lines[0];
    for part in [
        "INFO",
        "method=POST",
        "path=/transact",
        "status=401",
        "app=\"-\"",
        "latency_us=",
    ] {
        assert!(line.contains(part), "{part} in {line}");
    }

    // An app's call: the line names the app.
    let body = transact_body("log-ref-1", "log-txn-1", json!({ "mobile_no": MSISDN }));
    let (status, _) = post(&format!("{}/transact", switch.url()), Some(APP_KEY), &body).await;
    assert!(status < 500, "{status}");
    let lines = lines_with(&logs, "app=\"otp\"");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains(&format!("status={status}")),
        "{}",
        lines[0]
    );

    // Health checks stay out of the info log.
    let health = client()
        .get(format!("{}/health", switch.url()))
        .send()
        .await
        .unwrap();
    assert!(health.status().is_success());
    assert!(lines_with(&logs, "path=/health").is_empty());
    switch.stop().await;
}
