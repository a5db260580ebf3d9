//! A failure inside the switch, over HTTP on a real switch: the app gets
//! what it can do and an opaque error id (message, `data.error_id`, the
//! `x-manifold-error-id` header), never the failure's own text; the log has
//! that text once, on the line with the same id.
//!
//! A binary of its own, because it installs the process-wide subscriber
//! that captures the logs.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use common::*;
use manifold_config::SwitchConfig;
use manifold_crypto::message_signature::{sign_request, SignatureParams, SigningKey};
use manifold_crypto::{AppKey, SecretString};
use manifold_provider::{
    Provider, ProviderError, ProviderReply, QueryRequest, ReverseRequest, TransactRequest,
    ValidateRequest,
};
use manifold_switch::Switch;
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// Every log line of this process so far, once the capture is installed.
fn logs() -> String {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    let logs = LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        logs
    });
    logs.text()
}

/// What the panicking provider says as it fails: detail for the log only.
const PANIC_TEXT: &str = "upstream ledger handle 0x7f3a is gone";

/// An in-process provider with a bug: every call panics.
struct Panicking;

#[async_trait]
impl Provider for Panicking {
    async fn transact(&self, _: TransactRequest) -> Result<ProviderReply, ProviderError> {
        panic!("{PANIC_TEXT}")
    }
    async fn validate(&self, _: ValidateRequest) -> Result<ProviderReply, ProviderError> {
        panic!("{PANIC_TEXT}")
    }
    async fn query(&self, _: QueryRequest) -> Result<ProviderReply, ProviderError> {
        panic!("{PANIC_TEXT}")
    }
    async fn reverse(&self, _: ReverseRequest) -> Result<ProviderReply, ProviderError> {
        panic!("{PANIC_TEXT}")
    }
}

/// The app `otp` may use `get_balance` on `provider`, which is in-process:
/// the demo bank, or the implementation `panicking`.
fn config(data: &Path, implementation: &str) -> SwitchConfig {
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
name = "bank"
mode = "in_process"
implementation = "{implementation}"
services = ["get_balance"]
read_only = ["get_balance"]

[[apps]]
id = "{APP_ID}"
api_key = "{APP_KEY}"
secret = "{APP_SECRET}"
[apps.services.get_balance]
providers = ["bank"]
otp_override = true
"#,
        storage = data.join("switch").display().to_string(),
        outbox = data.join("outbox.jsonl").display().to_string(),
    );
    SwitchConfig::from_toml(&text, Path::new("internal-errors.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
}

struct Served {
    url: String,
    shutdown: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn serve(
    config: &SwitchConfig,
    implementations: HashMap<String, Arc<dyn Provider>>,
) -> Served {
    let switch = Switch::open_with_registry(config, &demo_registry(), implementations)
        .await
        .expect("switch opens");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (shutdown, stop) = oneshot::channel::<()>();
    let task = tokio::spawn(switch.serve(listener, async move {
        let _ = stop.await;
    }));
    Served {
        url,
        shutdown,
        task,
    }
}

impl Served {
    async fn stop(self) {
        let _ = self.shutdown.send(());
        let _ = self.task.await;
    }
}

/// A signed POST as the app, with the error id header of its answer.
async fn post_with_id(url: &str, body: &str) -> (u16, Value, Option<String>) {
    let mut request = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .build()
        .unwrap();
    let path = request.url().path().to_owned();
    let request_ref = serde_json::from_str::<Value>(body).unwrap()["request_ref"]
        .as_str()
        .unwrap()
        .to_owned();
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let key = AppKey::derive(&SecretString::from(APP_SECRET));
    sign_request(
        &SigningKey::for_app(&key),
        "POST",
        &path,
        body.as_bytes(),
        &SignatureParams {
            key_id: APP_ID,
            created,
            nonce: &request_ref,
        },
    )
    .unwrap()
    .apply(request.headers_mut());
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {APP_KEY}").parse().unwrap(),
    );
    let response = client().execute(request).await.expect("the switch answers");
    let header = response
        .headers()
        .get("x-manifold-error-id")
        .map(|value| value.to_str().unwrap().to_owned());
    let status = response.status().as_u16();
    (status, response.json().await.unwrap(), header)
}

/// Checks an answer to a failure inside the switch and returns its id.
fn error_id_of(answer: &(u16, Value, Option<String>), status: u16, code: &str) -> String {
    let (http, body, header) = answer;
    assert_eq!(
        (
            *http,
            body["status"].as_str(),
            body["data"]["error"].as_str()
        ),
        (status, Some("Failed"), Some(code)),
        "{body}"
    );
    let id = body["data"]["error_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no data.error_id: {body}"))
        .to_owned();
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(header.as_deref(), Some(id.as_str()));
    let message = body["message"].as_str().unwrap();
    assert!(message.ends_with(&format!("(error id {id})")), "{message}");
    id
}

/// The one log line with `id`, which must hold `detail`.
fn logged_once(id: &str, detail: &str) {
    let logs = logs();
    let lines: Vec<&str> = logs.lines().filter(|line| line.contains(id)).collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains(detail), "{}", lines[0]);
    assert!(lines[0].contains("ERROR"), "{}", lines[0]);
}

#[tokio::test]
async fn a_panic_in_the_engine_answers_an_error_id_and_logs_the_panic() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let implementations = HashMap::from([(
        "panicking".to_owned(),
        Arc::new(Panicking) as Arc<dyn Provider>,
    )]);
    let switch = serve(&config(dir.path(), "panicking"), implementations).await;

    let body = transact_body("panic-1", "txn-panic-1", Value::Null).replace("\"demo\"", "\"bank\"");
    let answer = post_with_id(&format!("{}/transact", switch.url), &body).await;
    let id = error_id_of(&answer, 500, "internal_error");
    let text = answer.1.to_string();
    assert!(
        !text.contains(PANIC_TEXT) && !text.contains("panicked"),
        "{text}"
    );
    assert!(text.contains("query it"), "{text}");
    logged_once(&id, PANIC_TEXT);
    switch.stop().await;
}

#[tokio::test]
async fn an_unreadable_record_answers_an_error_id_and_logs_what_was_wrong() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "demo");
    // The switch creates its store, then a record of `otp` is damaged on disk
    // behind its back (format 2's layout: tree `switch/v2`, key `T`, app id,
    // 0x1f, transaction_ref; a value's first byte is its record version).
    serve(&config, HashMap::new()).await.stop().await;
    {
        // sled's threads let go of the database shortly after the switch stops.
        let started = std::time::Instant::now();
        let db = loop {
            match sled::open(&config.storage.path) {
                Ok(db) => break db,
                Err(error) if started.elapsed() > LIMIT => panic!("{error}"),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        };
        let tree = db.open_tree("switch/v2").unwrap();
        tree.insert(b"Totp\x1ftxn-damaged", &[9u8, 1, 2, 3][..])
            .unwrap();
        db.flush().unwrap();
    }
    let switch = serve(&config, HashMap::new()).await;

    let query =
        json!({"request_ref": "q-damaged", "transaction": {"transaction_ref": "txn-damaged"}});
    let answer = post_with_id(
        &format!("{}/transact/query", switch.url),
        &query.to_string(),
    )
    .await;
    let id = error_id_of(&answer, 500, "storage_failure");
    let text = answer.1.to_string();
    assert!(!text.contains("record version"), "{text}");
    logged_once(&id, "record version 9");

    // The switch still serves everything else.
    let body = transact_body("fine-1", "txn-fine-1", Value::Null).replace("\"demo\"", "\"bank\"");
    let answer = post_with_id(&format!("{}/transact", switch.url), &body).await;
    assert_eq!(
        (answer.0, &answer.1["status"], answer.2),
        (200, &json!("Successful"), None)
    );
    switch.stop().await;
}
