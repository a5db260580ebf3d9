//! A switch in-process on 127.0.0.1 with real notification peers: a wiremock
//! SMS gateway and the SMTP sink, both on loopback too.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use manifold_config::SwitchConfig;
use manifold_crypto::message_signature::{sign_request, SignatureParams, SigningKey};
use manifold_crypto::{secure, AppKey, SecretString, SecureKind};
use manifold_provider::HopSigner;
use manifold_smtp_sink::SmtpSink;
use manifold_switch::Switch;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Bounds waits so a broken peer fails a test instead of hanging it.
pub const LIMIT: Duration = Duration::from_secs(30);

/// The secret the remote provider `bank-remote` shares with the switch; as
/// the credential of [`post`] it means "signed by that provider".
pub const PROVIDER_SECRET: &str = "bank-remote-hop-secret-0123456789-abcdef";
pub const PROVIDER_KEY_ID: &str = "bank-remote";
pub const APP_ID: &str = "otp";
pub const GATEWAY_TOKEN: &str = "gateway-token-0123456789";
pub const APP_KEY: &str = "otp-app-key-0123456789abcdef00";
pub const APP_SECRET: &str = "otp-app-secret-0123456789abcdef0123456789xy";
pub const MSISDN: &str = "2348022000008";
pub const EMAIL: &str = "uju@example.com";

/// The switch's configuration: SMS to `gateway`, e-mail to `sink`, the demo
/// bank in-process, a remote provider allowed to use `/notify/*`, and an app
/// whose `get_balance` requires an OTP.
pub fn config(data: &Path, gateway: &str, sink: &SmtpSink) -> SwitchConfig {
    config_with_demo_settings(data, gateway, sink, "")
}

/// [`config`] with the demo bank's `[providers.settings]` table holding
/// `settings` (TOML lines: its customers, its OTP send limits).
pub fn config_with_demo_settings(
    data: &Path,
    gateway: &str,
    sink: &SmtpSink,
    settings: &str,
) -> SwitchConfig {
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
[notifications.sms]
url = "{gateway}/sms"
token = "{GATEWAY_TOKEN}"
sender = "Manifold"
[notifications.email]
host = "127.0.0.1"
port = {port}
tls = "none"
from = "Manifold demo bank <no-reply@manifold.test>"
subject = "Manifold: {{subject}}"

[[providers]]
name = "demo"
mode = "in_process"
implementation = "demo"
services = ["get_balance", "transfer_funds"]
[providers.settings]
{settings}

[[providers]]
name = "bank-remote"
mode = "remote"
url = "http://127.0.0.1:9"
services = ["get_balance"]
secret = "{PROVIDER_SECRET}"
notify = true

[[apps]]
id = "{APP_ID}"
api_key = "{APP_KEY}"
secret = "{APP_SECRET}"
[apps.services.get_balance]
providers = ["demo"]
otp_override = false
"#,
        storage = data.join("switch").display().to_string(),
        outbox = data.join("outbox.jsonl").display().to_string(),
        port = sink.port(),
    );
    SwitchConfig::from_toml(&text, Path::new("notify-e2e.toml")).unwrap_or_else(|e| panic!("{e}"))
}

/// A wiremock SMS gateway that accepts everything POSTed to `/sms`.
pub async fn accepting_gateway() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/sms"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

/// A wiremock SMS gateway that fails every message.
pub async fn failing_gateway() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    server
}

/// The bodies the gateway received, as JSON.
pub async fn gateway_messages(server: &MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|request| serde_json::from_slice(&request.body).unwrap())
        .collect()
}

/// The demo bank compiled in as `demo`, as the `manifold` binary has it.
pub fn demo_registry() -> manifold_switch::Registry {
    manifold_switch::Registry::new().with(
        manifold_switch::DEMO_IMPLEMENTATION,
        std::sync::Arc::new(manifold_demo_provider::CompiledDemo),
    )
}

pub struct RunningSwitch {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningSwitch {
    pub async fn start(config: &SwitchConfig) -> RunningSwitch {
        let switch = Switch::open_with_registry(config, &demo_registry(), HashMap::new())
            .await
            .expect("switch opens");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(switch.serve(listener, async move {
            let _ = stop.await;
        }));
        RunningSwitch {
            addr,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

pub fn client() -> reqwest::Client {
    // Loopback only: no proxy may redirect test traffic elsewhere.
    reqwest::Client::builder()
        .no_proxy()
        .timeout(LIMIT)
        .build()
        .unwrap()
}

/// The provider `bank-remote`'s signer, as its `SwitchNotifier` uses it.
pub fn provider_signer() -> HopSigner {
    HopSigner::new(&SecretString::from(PROVIDER_SECRET), PROVIDER_KEY_ID)
}

/// `(HTTP status, JSON body)` of a POST. The credential decides how the call
/// is made: [`APP_KEY`] is the app's bearer key and signature (RFC 9421, the
/// body's `request_ref` as nonce); [`PROVIDER_SECRET`] is the remote
/// provider's signature; any other value is sent as a bearer key alone.
pub async fn post(url: &str, credential: Option<&str>, body: &str) -> (u16, Value) {
    let mut request = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .build()
        .unwrap();
    let path = request.url().path().to_owned();
    match credential {
        Some(PROVIDER_SECRET) => provider_signer()
            .sign("POST", &path, body.as_bytes())
            .unwrap()
            .apply(request.headers_mut()),
        Some(APP_KEY) => {
            let request_ref = serde_json::from_str::<Value>(body)
                .ok()
                .and_then(|v| v["request_ref"].as_str().map(str::to_owned))
                .unwrap_or_default();
            let created = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            sign_request(
                &SigningKey::for_app(&app_key()),
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
        }
        Some(key) => {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {key}").parse().unwrap());
        }
        None => {}
    }
    let response = client().execute(request).await.expect("the switch answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn app_key() -> AppKey {
    AppKey::derive(&SecretString::from(APP_SECRET))
}

/// A `/transact` for `get_balance` on the demo bank, with the given customer.
pub fn transact_body(request_ref: &str, transaction_ref: &str, customer: Value) -> String {
    transact_body_on("0123456789", request_ref, transaction_ref, customer)
}

/// [`transact_body`] for the bank account `account_number`.
pub fn transact_body_on(
    account_number: &str,
    request_ref: &str,
    transaction_ref: &str,
    customer: Value,
) -> String {
    let secure = secure::seal(
        &app_key(),
        request_ref,
        SecureKind::BankAccount,
        json!({"account_number": account_number, "bank_code": "058"})
            .to_string()
            .as_bytes(),
    );
    json!({
        "request_ref": request_ref,
        "request_type": "get_balance",
        "auth": {"type": "bank.account", "secure": secure, "auth_provider": "demo", "route_mode": null},
        "transaction": {
            "mock_mode": "live",
            "transaction_ref": transaction_ref,
            "amount": 0,
            "customer": customer,
        }
    })
    .to_string()
}

pub fn validate_body(request_ref: &str, transaction_ref: &str, otp: &str) -> String {
    let secure = secure::seal(
        &app_key(),
        request_ref,
        SecureKind::Validate,
        json!({"otp": otp}).to_string().as_bytes(),
    );
    json!({
        "request_ref": request_ref,
        "request_type": "get_balance",
        "auth": {"secure": secure, "auth_provider": "demo"},
        "transaction": {"transaction_ref": transaction_ref}
    })
    .to_string()
}

/// The 6-digit code in a message.
pub fn code_in(text: &str) -> String {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|word| word.len() == 6)
        .unwrap_or_else(|| panic!("no 6-digit code in the message"))
        .to_owned()
}

/// Log output kept in memory, for tests that read what the switch logged:
/// `tracing_subscriber::fmt().with_writer(move || captured.clone())`.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}
