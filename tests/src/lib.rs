//! Harness for Manifold's end-to-end tests.
//!
//! Everything here starts real servers on 127.0.0.1 with ephemeral ports:
//! the switch in-process ([`InProcessSwitch`]) or as its own binary
//! ([`SwitchProcess`], which can be SIGKILLed and restarted on the same data),
//! the demo provider as its own binary ([`ProviderProcess`]), and an [`AppClient`]
//! that speaks to the switch exactly as a calling app would: bearer key,
//! JSON envelope, `auth.secure` sealed with the app's secret.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use manifold_config::SwitchConfig;
use manifold_crypto::message_signature::{sign_request, SignatureParams, SigningKey};
use manifold_crypto::{secure, AppKey, SecretString, SecureKind};
use manifold_provider::notify::OutboxNotifier;
use manifold_provider::Provider;
use manifold_switch::store::Store;
use manifold_switch::Switch;
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// The two apps every test configuration has. `otp` requires OTPs; `quick` skips them.
pub const QUICK_APP: (&str, &str, &str) = (
    "quick",
    "quick-app-key-0123456789abcdef",
    "quick-app-secret-0123456789abcdef0123456789",
);
pub const OTP_APP: (&str, &str, &str) = (
    "otp",
    "otp-app-key-0123456789abcdef00",
    "otp-app-secret-0123456789abcdef0123456789xy",
);
/// A third app; like the others it must sign every request (the default).
pub const SIGNED_APP: (&str, &str, &str) = (
    "signed",
    "signed-app-key-0123456789abcdef",
    "signed-app-secret-0123456789abcdef012345678",
);
/// An app the host lets call unsigned (`require_signature = false`); a
/// signature it sends is still checked.
pub const UNSIGNED_APP: (&str, &str, &str) = (
    "unsigned",
    "unsigned-app-key-0123456789abcdef",
    "unsigned-app-secret-0123456789abcdef0123456",
);

/// The key id and secret the switch and the `demo-provider` of a test sign
/// their calls with. A test configuration has at most one remote provider
/// that runs, so one pair serves every test.
pub const PROVIDER_KEY_ID: &str = "e2e-provider";
pub const PROVIDER_SECRET: &str = "e2e-provider-hop-secret-0123456789abcdef";

/// One provider entry of a test configuration.
pub enum ProviderSpec {
    InProcess {
        name: &'static str,
        implementation: &'static str,
    },
    Remote {
        name: &'static str,
        url: String,
    },
}

/// The test apps' request rate: far above what any test sends, so only the
/// tests of the rate limit itself (which set their own) meet it.
pub const TEST_APP_RATE: u32 = 100_000;

/// The data key of the tests' switches and provider processes: fixed and
/// public (tests that look at the data at rest bring keys of their own).
pub const TEST_DATA_KEY: &str = "5c582bd6a482c1304683245d9dc030ad30b3268fa79dd91cd641661d4a4cdb87";

/// The `[data_at_rest]` table of test configurations, with [`TEST_DATA_KEY`].
pub const TEST_DATA_AT_REST: &str = "[data_at_rest]\nkey_id = \"test\"\nkey = \"5c582bd6a482c1304683245d9dc030ad30b3268fa79dd91cd641661d4a4cdb87\"\n";

/// Writes a configuration for the test apps with the given providers; each
/// app may use every provider for `get_balance` and `transfer_funds`.
pub fn config_text(data: &Path, providers: &[ProviderSpec], timeout_ms: u64) -> String {
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\n{TEST_DATA_AT_REST}[storage]\npath = {:?}\n[notifications]\noutbox = {:?}\n",
        data.join("switch").display().to_string(),
        data.join("outbox.jsonl").display().to_string()
    );
    let mut names = Vec::new();
    let mut remotes = 0;
    for provider in providers {
        let (name, endpoint) = match provider {
            ProviderSpec::InProcess {
                name,
                implementation,
            } => (
                *name,
                format!("mode = \"in_process\"\nimplementation = \"{implementation}\""),
            ),
            ProviderSpec::Remote { name, url } => {
                remotes += 1;
                assert!(remotes == 1, "one remote provider per test configuration");
                (
                    *name,
                    format!(
                        "mode = \"remote\"\nurl = \"{url}\"\nsecret = \"{PROVIDER_SECRET}\"\n\
                         key_id = \"{PROVIDER_KEY_ID}\""
                    ),
                )
            }
        };
        names.push(format!("\"{name}\""));
        text.push_str(&format!(
            "[[providers]]\nname = \"{name}\"\n{endpoint}\nservices = [\"get_balance\", \"transfer_funds\"]\nreversible = [\"transfer_funds\"]\ntimeout_ms = {timeout_ms}\n"
        ));
    }
    let names = names.join(", ");
    for ((id, key, secret), otp_override, signed) in [
        (QUICK_APP, true, true),
        (OTP_APP, false, true),
        (SIGNED_APP, true, true),
        (UNSIGNED_APP, true, false),
    ] {
        text.push_str(&format!(
            "[[apps]]\nid = \"{id}\"\napi_key = \"{key}\"\nsecret = \"{secret}\"\nrequire_signature = {signed}\n\
             [apps.limits]\nrequests_per_second = {TEST_APP_RATE}\n\
             [apps.services.get_balance]\nproviders = [{names}]\notp_override = {otp_override}\n\
             [apps.services.transfer_funds]\nproviders = [{names}]\notp_override = {otp_override}\nmax_amount = 10000000\n"
        ));
    }
    text
}

/// [`config_text`] for the compiled-in demo bank alone, named `demo`.
pub fn in_process_demo_config(data: &Path) -> String {
    config_text(
        data,
        &[ProviderSpec::InProcess {
            name: "demo",
            implementation: "demo",
        }],
        5_000,
    )
}

/// [`config_text`] for the compiled-in demo bank, `demo`, and a remote
/// provider, `gone`, at a loopback port nobody listens on: every call to it
/// is `provider_unavailable`.
pub fn demo_and_unreachable_config(data: &Path) -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    let gone = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    config_text(
        data,
        &[
            ProviderSpec::InProcess {
                name: "demo",
                implementation: "demo",
            },
            ProviderSpec::Remote {
                name: "gone",
                url: gone,
            },
        ],
        5_000,
    )
}

/// `text` (from [`config_text`]) with a `[server]` table of `settings`
/// (TOML lines such as `auth_failure_limit = 3`).
pub fn with_server_settings(text: &str, settings: &str) -> String {
    assert!(text.contains("[storage]"), "config_text changed shape");
    text.replacen("[storage]", &format!("[server]\n{settings}\n[storage]"), 1)
}

/// `text` (from [`config_text`]) with `services` declared `read_only` for
/// every provider, as the sample configuration declares `get_balance`.
pub fn declare_read_only(text: &str, services: &[&str]) -> String {
    let anchor = "reversible = [\"transfer_funds\"]\n";
    assert!(text.contains(anchor), "config_text changed shape");
    let listed: Vec<String> = services.iter().map(|s| format!("\"{s}\"")).collect();
    text.replace(
        anchor,
        &format!("{anchor}read_only = [{}]\n", listed.join(", ")),
    )
}

pub fn parse_config(text: &str) -> SwitchConfig {
    SwitchConfig::from_toml(text, Path::new("e2e.toml")).expect("test configuration is valid")
}

/// A switch running on a tokio task of the test's runtime.
pub struct InProcessSwitch {
    pub addr: SocketAddr,
    pub store: Arc<dyn Store>,
    retention: manifold_switch::retention::Retention,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl InProcessSwitch {
    pub async fn start(
        config: &SwitchConfig,
        implementations: HashMap<String, Arc<dyn Provider>>,
    ) -> InProcessSwitch {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        InProcessSwitch::start_on(config, implementations, listener).await
    }

    /// As [`InProcessSwitch::start`], on a listener bound earlier (so that a
    /// provider started first can be told the switch's address).
    pub async fn start_on(
        config: &SwitchConfig,
        implementations: HashMap<String, Arc<dyn Provider>>,
        listener: tokio::net::TcpListener,
    ) -> InProcessSwitch {
        let switch = Switch::open_with_registry(
            config,
            &manifold_cli::compiled_providers(),
            implementations,
        )
        .await
        .expect("switch opens");
        let store = switch.store().clone();
        let retention = switch.retention();
        let addr = listener.local_addr().unwrap();
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(switch.serve(listener, async move {
            let _ = stop.await;
        }));
        InProcessSwitch {
            addr,
            store,
            retention,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The switch's retention pass, to run for a chosen time.
    pub fn retention(&self) -> &manifold_switch::retention::Retention {
        &self.retention
    }

    /// Stops accepting, lets in-flight calls finish and waits for the task.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

pub mod pki;

/// Seconds since the Unix epoch, as signatures state time.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// Builds the workspace binaries once per test run and returns their directory.
fn binaries() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "manifold-cli",
                "--bin",
                "manifold",
                "-p",
                "manifold-demo-provider",
                "--bin",
                "demo-provider",
                "-p",
                "manifold-connector-core-api",
                "--bin",
                "core-api-provider",
                "-p",
                "manifold-connector-sdk-finance",
                "--bin",
                "sdk-finance-provider",
                "-p",
                "manifold-connector-skopa",
                "--bin",
                "skopa-provider",
                "-p",
                "manifold-connector-joompay",
                "--bin",
                "joompay-provider",
            ])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the binaries failed");
        // target/<profile>/deps/e2e-<hash> → target/<profile>
        let exe = std::env::current_exe().unwrap();
        exe.parent().and_then(Path::parent).unwrap().to_owned()
    })
}

/// Runs the `manifold` binary with `args` to its end (a command such as
/// `--reseal`, or a start-up that must fail), within a minute.
pub async fn run_manifold(args: &[&str]) -> std::process::Output {
    run_manifold_with_env(args, &[]).await
}

/// [`run_manifold`] with these environment variables set.
pub async fn run_manifold_with_env(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let run = tokio::process::Command::new(binaries().join("manifold"))
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("manifold ends within a minute")
        .expect("manifold runs")
}

/// Spawns `binary` and waits for the line `<name> listening on <addr>`.
fn spawn_listening(binary: &str, args: &[&str], env: &[(&str, &str)]) -> (Child, SocketAddr) {
    let (child, addr, _) = spawn_listening_with_admin(binary, args, env);
    (child, addr)
}

/// As [`spawn_listening`], with the admin listener's address when the
/// binary printed `<binary> admin listening on <addr>` before its own line.
fn spawn_listening_with_admin(
    binary: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Child, SocketAddr, Option<SocketAddr>) {
    let mut child = Command::new(binaries().join(binary))
        .args(args)
        .env("MANIFOLD_PROVIDER_SECRET", PROVIDER_SECRET)
        // Provider binaries need a data key; a test's own flags win.
        .env("MANIFOLD_PROVIDER_DATA_KEY_ID", "test")
        .env("MANIFOLD_PROVIDER_DATA_KEY", TEST_DATA_KEY)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let admin_marker = format!("{binary} admin listening on ");
    let mut admin = None;
    let line = loop {
        match lines.next() {
            Some(Ok(line)) => match line.strip_prefix(&admin_marker) {
                Some(rest) => admin = rest.trim().parse::<SocketAddr>().ok(),
                None => break line,
            },
            other => {
                // Never leave the child running behind a failed test.
                let _ = child.kill();
                let _ = child.wait();
                panic!("{binary} exited before listening: {other:?}");
            }
        }
    };
    let addr = line
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line from {binary}: {line}"));
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr, admin)
}

/// The `manifold` binary in its own process.
pub struct SwitchProcess {
    pub addr: SocketAddr,
    /// The admin listener, when the configuration has `[admin]`.
    pub admin: Option<SocketAddr>,
    child: Child,
}

impl SwitchProcess {
    pub fn start(config_path: &Path) -> SwitchProcess {
        SwitchProcess::start_with_env(config_path, &[])
    }

    /// As [`SwitchProcess::start`], with these environment variables set
    /// (secrets a configuration names with `*_env`).
    pub fn start_with_env(config_path: &Path, env: &[(&str, &str)]) -> SwitchProcess {
        let (child, addr, admin) = spawn_listening_with_admin(
            "manifold",
            &[
                "--config",
                config_path.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ],
            env,
        );
        SwitchProcess { addr, admin, child }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The admin listener's base URL; panics without `[admin]`.
    pub fn admin_url(&self) -> String {
        format!(
            "http://{}",
            self.admin.expect("the configuration has [admin]")
        )
    }

    /// SIGKILL: no shutdown, no final flush.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends the signal `name` (`HUP`, `TERM`) to the switch.
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIG{name} was not delivered");
    }

    /// Sends SIGTERM, as a service manager stops the switch, and returns how
    /// it exited; killed if it has not within `limit`.
    pub fn terminate(mut self, limit: std::time::Duration) -> std::process::ExitStatus {
        self.signal("TERM");
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("the switch can be waited for") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the switch did not exit within {limit:?} of SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for SwitchProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `demo-provider` binary in its own process.
pub struct ProviderProcess {
    pub addr: SocketAddr,
    child: Child,
}

impl ProviderProcess {
    pub fn start(data: &Path, outbox: &Path) -> ProviderProcess {
        ProviderProcess::start_with(data, outbox, "127.0.0.1:0", &[])
    }

    /// As [`ProviderProcess::start`], on `listen` and with extra
    /// `demo-provider` flags (`--otp-ttl-secs 1`, …).
    pub fn start_with(
        data: &Path,
        outbox: &Path,
        listen: &str,
        extra: &[String],
    ) -> ProviderProcess {
        let mut args = vec![
            "--listen",
            listen,
            "--data",
            data.to_str().unwrap(),
            "--outbox",
            outbox.to_str().unwrap(),
            "--key-id",
            PROVIDER_KEY_ID,
        ];
        args.extend(extra.iter().map(String::as_str));
        let (child, addr) = spawn_listening("demo-provider", &args, &[]);
        ProviderProcess { addr, child }
    }

    /// A connector's provider binary (`core-api-provider`, …) on `listen`,
    /// its state in `data`, verifying the tests' switch, with its own
    /// flags (`--core-url …`).
    pub fn start_connector(
        binary: &str,
        data: &Path,
        listen: &str,
        extra: &[&str],
    ) -> ProviderProcess {
        let outbox = data.with_file_name(format!("{binary}-outbox.jsonl"));
        let mut args = vec![
            "--listen",
            listen,
            "--data",
            data.to_str().unwrap(),
            "--outbox",
            outbox.to_str().unwrap(),
            "--key-id",
            PROVIDER_KEY_ID,
        ];
        args.extend(extra);
        let (child, addr) = spawn_listening(binary, &args, &[]);
        ProviderProcess { addr, child }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Calls per operation, from the provider's `GET /stats`.
    pub async fn stats(&self) -> Value {
        self.stats_from(&self.url(), &http_client()).await
    }

    /// As [`ProviderProcess::stats`], over HTTPS with `client`.
    pub async fn stats_over(&self, client: &reqwest::Client) -> Value {
        self.stats_from(&format!("https://{}", self.addr), client)
            .await
    }

    async fn stats_from(&self, base: &str, client: &reqwest::Client) -> Value {
        client
            .get(format!("{base}/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ProviderProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http_client() -> reqwest::Client {
    // Loopback only: no proxy may redirect test traffic elsewhere.
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A response: HTTP status and the JSON envelope (or raw text if not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub http: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub raw: String,
}

impl Reply {
    pub fn status(&self) -> &str {
        self.body["status"].as_str().unwrap_or("")
    }
    pub fn error(&self) -> &str {
        self.body["data"]["error"].as_str().unwrap_or("")
    }
    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or("")
    }
    /// The `field`s of `data.errors`.
    pub fn error_fields(&self) -> Vec<String> {
        self.body["data"]["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(|e| e["field"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A calling app.
#[derive(Clone)]
pub struct AppClient {
    pub base: String,
    pub id: String,
    pub api_key: String,
    pub key: AppKey,
    pub provider: String,
    client: reqwest::Client,
}

pub fn bank_account(number: &str) -> Value {
    json!({"account_number": number, "bank_code": "058"})
}

impl AppClient {
    pub fn new(base: &str, app: (&str, &str, &str), provider: &str) -> AppClient {
        AppClient::with_client(base, app, provider, http_client())
    }

    /// As [`AppClient::new`], over `client` (one that trusts a test CA, say).
    pub fn with_client(
        base: &str,
        app: (&str, &str, &str),
        provider: &str,
        client: reqwest::Client,
    ) -> AppClient {
        AppClient {
            base: base.to_owned(),
            id: app.0.to_owned(),
            api_key: app.1.to_owned(),
            key: AppKey::derive(&SecretString::from(app.2)),
            provider: provider.to_owned(),
            client,
        }
    }

    pub fn seal(&self, request_ref: &str, kind: SecureKind, plaintext: &Value) -> String {
        secure::seal(
            &self.key,
            request_ref,
            kind,
            plaintext.to_string().as_bytes(),
        )
    }

    /// The RFC 9421 headers (`Content-Digest`, `Signature-Input`,
    /// `Signature`) for a POST of `body` to `path`, signed now with the body's
    /// `request_ref` as nonce, as docs/secure.md tells apps to.
    pub fn signature_headers(&self, path: &str, body: &[u8]) -> Vec<(&'static str, String)> {
        let request_ref = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|body| body["request_ref"].as_str().map(str::to_owned))
            .unwrap_or_default();
        self.signature_headers_with(path, body, &request_ref, unix_now())
    }

    /// As [`AppClient::signature_headers`], with the nonce and time given.
    pub fn signature_headers_with(
        &self,
        path: &str,
        body: &[u8],
        nonce: &str,
        created: u64,
    ) -> Vec<(&'static str, String)> {
        let signed = sign_request(
            &SigningKey::for_app(&self.key),
            "POST",
            path,
            body,
            &SignatureParams {
                key_id: &self.id,
                created,
                nonce,
            },
        )
        .expect("test values are printable ASCII");
        vec![
            ("content-digest", signed.content_digest),
            ("signature-input", signed.signature_input),
            ("signature", signed.signature),
        ]
    }

    /// The bearer key and the signature headers of a POST of `body` to `path`.
    pub fn auth_headers(&self, path: &str, body: &[u8]) -> Vec<(&'static str, String)> {
        let mut headers = vec![("authorization", format!("Bearer {}", self.api_key))];
        headers.extend(self.signature_headers(path, body));
        headers
    }

    pub async fn post_raw(&self, path: &str, body: Vec<u8>, headers: &[(&str, String)]) -> Reply {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .body(body)
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.expect("switch answers");
        let http = response.status().as_u16();
        let headers = response.headers().clone();
        let raw = response.text().await.unwrap();
        let body = serde_json::from_str(&raw).unwrap_or(Value::Null);
        Reply {
            http,
            headers,
            body,
            raw,
        }
    }

    /// POSTs `body`, signed, with the app's bearer key.
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        let body = body.to_string().into_bytes();
        let headers = self.auth_headers(path, &body);
        self.post_raw(path, body, &headers).await
    }

    /// A seed-003 `/transact` body for a bank-account source.
    pub fn transact_body(
        &self,
        request_ref: &str,
        transaction_ref: &str,
        request_type: &str,
        account: &str,
        amount: u64,
    ) -> Value {
        json!({
            "request_ref": request_ref,
            "request_type": request_type,
            "auth": {
                "type": "bank.account",
                "secure": self.seal(request_ref, SecureKind::BankAccount, &bank_account(account)),
                "auth_provider": self.provider,
                "route_mode": null
            },
            "transaction": {
                "mock_mode": "live",
                "transaction_ref": transaction_ref,
                "transaction_desc": "e2e",
                "transaction_ref_parent": null,
                "amount": amount,
                "customer": {"customer_ref": "c-1", "firstname": "Uju", "surname": "Usmanu",
                    "email": "uju@example.com", "mobile_no": "2348022000008"},
                "meta": {"a_key": "a_meta_value_1"},
                "details": if request_type == "transfer_funds" {
                    json!({"destination_account": "9876543210", "destination_bank_code": "044"})
                } else { Value::Null }
            }
        })
    }

    pub async fn get_balance(
        &self,
        request_ref: &str,
        transaction_ref: &str,
        account: &str,
    ) -> Reply {
        self.post(
            "/transact",
            &self.transact_body(request_ref, transaction_ref, "get_balance", account, 0),
        )
        .await
    }

    pub async fn transfer(
        &self,
        request_ref: &str,
        transaction_ref: &str,
        account: &str,
        amount: u64,
    ) -> Reply {
        self.post(
            "/transact",
            &self.transact_body(
                request_ref,
                transaction_ref,
                "transfer_funds",
                account,
                amount,
            ),
        )
        .await
    }

    pub fn validate_body(
        &self,
        request_ref: &str,
        transaction_ref: &str,
        request_type: &str,
        otp: &str,
    ) -> Value {
        json!({
            "request_ref": request_ref,
            "request_type": request_type,
            "auth": {
                "secure": self.seal(request_ref, SecureKind::Validate, &json!({"otp": otp})),
                "auth_provider": self.provider
            },
            "transaction": {"transaction_ref": transaction_ref}
        })
    }

    /// A `/transact/validate` whose sealed plaintext is `secure`
    /// (`{"answer": …}`, `{"resend": "otp"}`, …).
    pub async fn validate_with(
        &self,
        request_ref: &str,
        transaction_ref: &str,
        request_type: &str,
        secure: &Value,
    ) -> Reply {
        let body = json!({
            "request_ref": request_ref,
            "request_type": request_type,
            "auth": {
                "secure": self.seal(request_ref, SecureKind::Validate, secure),
                "auth_provider": self.provider
            },
            "transaction": {"transaction_ref": transaction_ref}
        });
        self.post("/transact/validate", &body).await
    }

    pub async fn validate(
        &self,
        request_ref: &str,
        transaction_ref: &str,
        request_type: &str,
        otp: &str,
    ) -> Reply {
        self.post(
            "/transact/validate",
            &self.validate_body(request_ref, transaction_ref, request_type, otp),
        )
        .await
    }

    pub async fn query(&self, request_ref: &str, transaction_ref: &str) -> Reply {
        self.post(
            "/transact/query",
            &json!({"request_ref": request_ref, "auth": {"auth_provider": self.provider}, "transaction": {"transaction_ref": transaction_ref}}),
        )
        .await
    }

    pub async fn reverse(&self, request_ref: &str, transaction_ref: &str) -> Reply {
        self.post(
            "/transact/reverse",
            &json!({"request_ref": request_ref, "auth": {"auth_provider": self.provider}, "transaction": {"transaction_ref": transaction_ref}}),
        )
        .await
    }
}

/// The code in the newest message the outbox holds for `to`.
pub fn latest_otp(outbox: &Path, to: &str) -> String {
    let messages = OutboxNotifier::read_all(outbox).expect("outbox readable");
    let message = messages
        .iter()
        .rev()
        .find(|m| m.to == to)
        .unwrap_or_else(|| panic!("no message to {to} in {}", outbox.display()));
    let body = message.body.expose();
    body.split(|c: char| !c.is_ascii_digit())
        .find(|word| word.len() == 6)
        .unwrap_or_else(|| panic!("no 6-digit code in the message"))
        .to_owned()
}

/// How many messages the outbox holds.
pub fn outbox_len(outbox: &Path) -> usize {
    OutboxNotifier::read_all(outbox)
        .map(|m| m.len())
        .unwrap_or(0)
}

/// A 6-digit code different from `code`.
pub fn wrong_otp(code: &str) -> String {
    let n: u32 = code.parse().unwrap();
    format!("{:06}", (n + 1) % 1_000_000)
}

/// Counts the calls that reach a provider, then passes them on unchanged.
pub struct CountingProvider<P> {
    pub inner: Arc<P>,
    pub transact_calls: std::sync::atomic::AtomicU64,
}

impl<P> CountingProvider<P> {
    pub fn new(inner: Arc<P>) -> Self {
        CountingProvider {
            inner,
            transact_calls: Default::default(),
        }
    }

    pub fn transact_count(&self) -> u64 {
        self.transact_calls
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl<P: Provider> Provider for CountingProvider<P> {
    async fn transact(
        &self,
        request: manifold_provider::TransactRequest,
    ) -> Result<manifold_provider::ProviderReply, manifold_provider::ProviderError> {
        self.transact_calls
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.transact(request).await
    }
    async fn validate(
        &self,
        request: manifold_provider::ValidateRequest,
    ) -> Result<manifold_provider::ProviderReply, manifold_provider::ProviderError> {
        self.inner.validate(request).await
    }
    async fn query(
        &self,
        request: manifold_provider::QueryRequest,
    ) -> Result<manifold_provider::ProviderReply, manifold_provider::ProviderError> {
        self.inner.query(request).await
    }
    async fn reverse(
        &self,
        request: manifold_provider::ReverseRequest,
    ) -> Result<manifold_provider::ProviderReply, manifold_provider::ProviderError> {
        self.inner.reverse(request).await
    }
    fn read_only(&self, request_type: &str) -> Option<bool> {
        self.inner.read_only(request_type)
    }
}

/// Entries in the demo provider's pending-OTP tree of a sled directory that
/// no process holds open any more.
pub fn pending_in(dir: &Path) -> usize {
    // The killed process's lock may take a moment to be released.
    for _ in 0..50 {
        if let Ok(db) = sled::open(dir) {
            return db.open_tree("demo/pending").unwrap().len();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("could not open {}", dir.display());
}

// ---------------------------------------------------------------------------
// Crash testing (used by `tests/e2e/crash.rs`).
//
// The helpers above panic on any failure, which is right for tests where
// nothing should fail. A crash test kills processes on purpose, so here a
// process may fail to come back on its old port and a call may get no answer
// at all; both are reported as values instead. Child output goes to a log
// file rather than the test's terminal, because every kill makes the
// survivors log warnings.
// ---------------------------------------------------------------------------

/// As [`spawn_listening`], but a child that exits before listening (for
/// instance because its port is taken) is an `Err`, and its stderr is
/// appended to `log`.
fn try_spawn_listening(
    binary: &str,
    args: &[&str],
    log: &Path,
) -> Result<(Child, SocketAddr), String> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("opening {}: {e}", log.display()))?;
    let mut child = Command::new(binaries().join(binary))
        .args(args)
        .env("MANIFOLD_PROVIDER_SECRET", PROVIDER_SECRET)
        // Provider binaries need a data key; a test's own flags win.
        .env("MANIFOLD_PROVIDER_DATA_KEY_ID", "test")
        .env("MANIFOLD_PROVIDER_DATA_KEY", TEST_DATA_KEY)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .spawn()
        .map_err(|e| format!("starting {binary}: {e}"))?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("{binary} has no stdout"));
    };
    // The binaries log to stdout too: everything before the line
    // `<binary> listening on <addr>` goes to the log.
    let mut log_file = std::fs::OpenOptions::new()
        .append(true)
        .open(log)
        .map_err(|e| format!("opening {}: {e}", log.display()))?;
    let mut lines = BufReader::new(stdout).lines();
    let marker = format!("{binary} listening on ");
    let mut addr = None;
    for line in lines.by_ref().map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix(&marker) {
            addr = rest.trim().parse::<SocketAddr>().ok();
            break;
        }
        use std::io::Write;
        let _ = writeln!(log_file, "{line}");
    }
    let Some(addr) = addr else {
        let _ = child.kill();
        let status = child.wait();
        return Err(format!(
            "{binary} did not start listening ({status:?}); see {}",
            log.display()
        ));
    };
    // Keep draining stdout into the log file, so the child never blocks on a
    // full pipe and a failure can be read later.
    std::thread::spawn(move || {
        use std::io::Write;
        for line in lines.map_while(Result::ok) {
            let _ = writeln!(log_file, "{line}");
        }
    });
    Ok((child, addr))
}

impl SwitchProcess {
    /// Starts the switch listening on `listen` (port 0 for any free port),
    /// logging to `log`; `Err` if it could not start there.
    pub fn start_at(
        config_path: &Path,
        listen: SocketAddr,
        log: &Path,
    ) -> Result<SwitchProcess, String> {
        let config = config_path.to_str().ok_or("config path is not UTF-8")?;
        let listen = listen.to_string();
        let (child, addr) =
            try_spawn_listening("manifold", &["--config", config, "--listen", &listen], log)?;
        Ok(SwitchProcess {
            addr,
            admin: None,
            child,
        })
    }
}

impl ProviderProcess {
    /// Starts `demo-provider` listening on `listen` (port 0 for any free
    /// port) with `extra` arguments appended, logging to `log`; `Err` if it
    /// could not start there.
    pub fn start_at(
        data: &Path,
        outbox: &Path,
        listen: SocketAddr,
        extra: &[&str],
        log: &Path,
    ) -> Result<ProviderProcess, String> {
        let data = data.to_str().ok_or("data path is not UTF-8")?;
        let outbox = outbox.to_str().ok_or("outbox path is not UTF-8")?;
        let listen = listen.to_string();
        let mut args = vec![
            "--listen",
            &listen,
            "--data",
            data,
            "--outbox",
            outbox,
            "--key-id",
            PROVIDER_KEY_ID,
        ];
        args.extend_from_slice(extra);
        let (child, addr) = try_spawn_listening("demo-provider", &args, log)?;
        Ok(ProviderProcess { addr, child })
    }
}

impl AppClient {
    /// POSTs `body` with the app's bearer key; `Err` when no complete HTTP
    /// answer came back (refused, reset, timed out), which is expected while
    /// the switch is being killed.
    pub async fn try_post(&self, path: &str, body: &Value) -> Result<Reply, String> {
        let body = body.to_string().into_bytes();
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        for (name, value) in self.auth_headers(path, &body) {
            request = request.header(name, value);
        }
        let response = request.body(body).send().await.map_err(|e| e.to_string())?;
        let http = response.status().as_u16();
        let headers = response.headers().clone();
        let raw = response.text().await.map_err(|e| e.to_string())?;
        let body = serde_json::from_str(&raw).unwrap_or(Value::Null);
        Ok(Reply {
            http,
            headers,
            body,
            raw,
        })
    }

    /// A `/transact/validate` body whose `auth.secure` seals `input`:
    /// `{"otp": ..}`, `{"answer": ..}` or `{"resend": "otp"}`.
    pub fn validate_body_with(
        &self,
        request_ref: &str,
        transaction_ref: &str,
        request_type: &str,
        input: &Value,
    ) -> Value {
        json!({
            "request_ref": request_ref,
            "request_type": request_type,
            "auth": {
                "secure": self.seal(request_ref, SecureKind::Validate, input),
                "auth_provider": self.provider
            },
            "transaction": {"transaction_ref": transaction_ref}
        })
    }

    /// A `/transact/query` body.
    pub fn query_body(&self, request_ref: &str, transaction_ref: &str) -> Value {
        json!({"request_ref": request_ref, "auth": {"auth_provider": self.provider},
            "transaction": {"transaction_ref": transaction_ref}})
    }
}

/// Points a body from [`AppClient::transact_body`] at `destination` (bank
/// `058`, like every source, so every account is readable with
/// `get_balance`; `None` for no transfer details) and sends the customer's
/// codes to `mobile_no`, so each transaction can have its own OTP recipient.
pub fn address_transact_body(body: &mut Value, destination: Option<&str>, mobile_no: &str) {
    body["transaction"]["customer"]["mobile_no"] = json!(mobile_no);
    body["transaction"]["details"] = match destination {
        Some(destination) => {
            json!({"destination_account": destination, "destination_bank_code": "058"})
        }
        None => Value::Null,
    };
}

/// Reads an outbox file as it grows and keeps the newest code sent to each
/// recipient. Lines are parsed once (re-reading the whole file for every code
/// is quadratic under load), and a line torn by a killed provider is skipped
/// and counted rather than failing the read.
pub struct OutboxCodes {
    path: PathBuf,
    offset: u64,
    codes: HashMap<String, SecretString>,
    /// The newest code of each transaction, for messages that name one.
    by_transaction: HashMap<String, SecretString>,
    torn_lines: usize,
}

impl OutboxCodes {
    pub fn new(path: &Path) -> OutboxCodes {
        OutboxCodes {
            path: path.to_owned(),
            offset: 0,
            codes: HashMap::new(),
            by_transaction: HashMap::new(),
            torn_lines: 0,
        }
    }

    /// Reads the lines appended since the last call; a line still being
    /// written (no newline yet) waits for the next call.
    pub fn refresh(&mut self) -> std::io::Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = match std::fs::File::open(&self.path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(error),
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut fresh = Vec::new();
        file.read_to_end(&mut fresh)?;
        let Some(end) = fresh.iter().rposition(|b| *b == b'\n') else {
            return Ok(());
        };
        for line in fresh[..end].split(|b| *b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let code = serde_json::from_slice::<manifold_provider::Notification>(line)
                .ok()
                .and_then(|message| {
                    let code = message
                        .body
                        .expose()
                        .split(|c: char| !c.is_ascii_digit())
                        .find(|word| word.len() == 6)
                        .map(SecretString::from);
                    code.map(|code| (message.to, message.transaction_ref, code))
                });
            match code {
                Some((to, transaction_ref, code)) => {
                    if let Some(transaction_ref) = transaction_ref {
                        self.by_transaction.insert(transaction_ref, code.clone());
                    }
                    self.codes.insert(to, code);
                }
                None => self.torn_lines += 1,
            }
        }
        self.offset += end as u64 + 1;
        Ok(())
    }

    /// The newest code sent to `to`, reading new lines first (a resent code
    /// replaces the one before).
    pub fn code_for(&mut self, to: &str) -> std::io::Result<Option<SecretString>> {
        self.refresh()?;
        Ok(self.codes.get(to).cloned())
    }

    /// The newest code sent for `transaction_ref`: codes for one account
    /// all go to its holder's phone, so the phone alone does not tell two
    /// transactions' codes apart.
    pub fn code_for_transaction(
        &mut self,
        transaction_ref: &str,
    ) -> std::io::Result<Option<SecretString>> {
        self.refresh()?;
        Ok(self.by_transaction.get(transaction_ref).cloned())
    }

    /// Lines that were not a readable message with a code.
    pub fn torn_lines(&self) -> usize {
        self.torn_lines
    }
}
