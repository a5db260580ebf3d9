//! The host's configuration, parsed once into typed structs.
//!
//! A host writes one TOML file (see `fixtures/manifold.toml` for a complete,
//! commented sample): where the switch listens and stores, which providers it
//! can reach and how, and for each calling app its keys, the services it may
//! use, through which providers, with which `otp_override` and limits.
//! [`SwitchConfig::load`] reads and checks all of it at start-up; every problem
//! is reported at once as `file: key: what is wrong`. Nothing downstream reads
//! raw TOML, environment variables or secret files.
//!
//! # Layout
//! - [`raw`](self): the serde mirror of the file (private).
//! - [`SwitchConfig`] and friends: the validated, typed result.
//! - [`ServerConfig`]: the HTTP edge's limits, timeouts and TLS files.
//! - [`NotificationsConfig`], [`SmsGatewayConfig`], [`SmtpConfig`] and
//!   [`MessageTemplate`]: how customers are reached (outbox, SMS gateway, SMTP).
//! - [`FeeSchedule`] (`[billing]`, in `billing`): what calls cost.
//! - [`AdminConfig`] (`[admin]`, in `admin`): the host's listener and operators.
//! - [`secrets`](self): secrets from the environment or files instead of
//!   the file itself, and API keys known by digest only.
//! - [`ConfigError`]: every problem found, each naming its key.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use manifold_crypto::DataKeys;

use manifold_crypto::SecretString;

mod admin;
mod billing;
mod raw;
mod secrets;

pub use admin::{AdminConfig, Operator, DEFAULT_ADMIN_LISTEN};
pub use manifold_billing::{Fee, FeeSchedule};

pub use secrets::{ApiKeyDigest, Environment, ProcessEnvironment};

/// The minimum length of an app secret; it is the input to HKDF, so short
/// secrets would make `auth.secure` guessable.
pub const MIN_SECRET_LEN: usize = manifold_crypto::MIN_APP_SECRET_LEN;
/// The minimum length of an API key.
pub const MIN_API_KEY_LEN: usize = 24;
/// The longest a provider may be given to answer.
pub const MAX_PROVIDER_TIMEOUT: Duration = Duration::from_secs(120);
/// The minimum length of the secret a remote provider and the switch sign
/// their calls with; like an app secret, it is the input to HKDF.
pub const MIN_PROVIDER_SECRET_LEN: usize = MIN_SECRET_LEN;
/// The longest an SMS gateway or SMTP server may be given to accept a message.
pub const MAX_NOTIFY_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct SwitchConfig {
    /// The file this came from, for messages.
    pub source: PathBuf,
    pub listen: SocketAddr,
    /// `[server]`: limits and timeouts of the HTTP edge, and TLS.
    pub server: ServerConfig,
    pub storage: StorageConfig,
    /// `[data_at_rest]`: the keys customer data is sealed under, and how
    /// long it is kept.
    pub data_at_rest: DataAtRestConfig,
    pub notifications: NotificationsConfig,
    /// `[billing]`: the fee schedule invoices are priced from; without one
    /// every call is counted and none priced.
    pub billing: FeeSchedule,
    /// `[admin]`: the host's listener; none without the table.
    pub admin: Option<AdminConfig>,
    pub providers: Vec<ProviderConfig>,
    pub apps: Vec<AppConfig>,
    /// What is allowed but unwise (a secret file others can read); the
    /// binary logs each at start-up.
    pub warnings: Vec<ConfigProblem>,
}

/// `[server]`: what the switch's HTTP edge allows a client. Every limit has a
/// safe default; a host tightens or loosens it here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// How long a client has to send a request's headers (and to finish the
    /// TLS handshake) once it starts one.
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may sit idle between requests.
    /// Longer than clients keep idle pooled connections (90 s for reqwest,
    /// hyper and Go), so the client always gives one up first.
    pub idle_timeout: Duration,
    /// How long a client has to send a whole request body.
    pub body_read_timeout: Duration,
    /// The largest request body accepted.
    pub max_body_bytes: usize,
    /// The largest request head (request line and headers) accepted.
    pub max_header_bytes: usize,
    /// Open connections in all.
    pub max_connections: usize,
    /// Open connections from one client IP address.
    pub max_connections_per_address: usize,
    /// Failed authentications (unknown key, bad signature) one client IP
    /// address may make within `auth_failure_window` before it is locked out;
    /// 0 turns the lockout off.
    pub auth_failure_limit: u32,
    pub auth_failure_window: Duration,
    /// How long a locked-out address is answered 429.
    pub auth_lockout: Duration,
    /// How far a signature's `created` time may be from the switch's clock,
    /// either way.
    pub signature_max_skew: Duration,
    /// HTTPS instead of HTTP, when set.
    pub tls: Option<TlsFiles>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            body_read_timeout: Duration::from_secs(10),
            max_body_bytes: 64 * 1024,
            max_header_bytes: 16 * 1024,
            max_connections: 4096,
            max_connections_per_address: 256,
            auth_failure_limit: 20,
            auth_failure_window: Duration::from_secs(60),
            auth_lockout: Duration::from_secs(60),
            signature_max_skew: Duration::from_secs(300),
            tls: None,
        }
    }
}

/// A certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Where transactions and metering live (`backend`).
    pub backend: StorageBackend,
    /// The data directory; relative paths are relative to the working
    /// directory. The sled store lives here; with PostgreSQL, what stays
    /// local does (in-process providers' state, the outbox).
    pub path: PathBuf,
    /// The store's page cache in bytes (`cache_capacity_mb`): what bounds
    /// the switch's memory as the store grows.
    pub cache_capacity_bytes: u64,
    /// Free space the switch keeps on the data directory's filesystem
    /// (`min_free_mb`, in bytes): below it, calls are refused (503
    /// `storage_full`) before anything is written. 0 turns the guard off.
    pub min_free_bytes: u64,
    /// How long the store's group commit waits for more callers before it
    /// writes a small batch (`commit_window_us`), when the batch before it
    /// showed callers arriving together; zero writes every batch at once.
    pub commit_window: std::time::Duration,
}

/// `[storage] backend`: where the switch keeps its state.
#[derive(Debug, Clone)]
pub enum StorageBackend {
    /// sled in `[storage] path`: one switch process (the default).
    Sled,
    /// `[storage.postgres]`: one database shared by several switches.
    Postgres(PostgresConfig),
}

/// `[storage.postgres]`.
#[derive(Clone)]
pub struct PostgresConfig {
    /// The connection URL (`url`, `url_env` or `url_file`); it may hold a
    /// password, so it is a secret: never printed.
    pub url: SecretString,
    /// Connections each switch keeps open at most.
    pub pool_size: usize,
    /// How long one statement may run before the server cancels it.
    pub statement_timeout: Duration,
    /// How long a call waits for a connection, opening one included.
    pub connect_timeout: Duration,
    /// `ca_file`: PEM certificates the server's must chain to over TLS
    /// (`sslmode=require` in the URL), instead of the public roots.
    pub ca_file: Option<PathBuf>,
    /// `insecure_plaintext`: allows a URL to another machine without TLS.
    pub insecure_plaintext: bool,
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &self.url)
            .field("pool_size", &self.pool_size)
            .field("statement_timeout", &self.statement_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("ca_file", &self.ca_file)
            .field("insecure_plaintext", &self.insecure_plaintext)
            .finish()
    }
}

/// `[storage.postgres] pool_size` when the host gives none.
pub const DEFAULT_POSTGRES_POOL_SIZE: usize = 16;
/// `[storage.postgres] statement_timeout_ms` and `connect_timeout_ms` when
/// the host gives none.
pub const DEFAULT_POSTGRES_TIMEOUT_MS: u64 = 5_000;

/// `[data_at_rest]`: customer data (stored answers, providers' pending
/// data, account and phone numbers) is sealed under `keys` in the store, and
/// dropped from final transactions after `retention`.
#[derive(Debug, Clone)]
pub struct DataAtRestConfig {
    /// The current key seals; previous keys only open (rotation).
    pub keys: Arc<DataKeys>,
    /// How long a final transaction's customer data is kept; its status
    /// history and metering stay.
    pub retention: Duration,
}

/// `[data_at_rest] retention_days` when the host gives none.
pub const DEFAULT_RETENTION_DAYS: u64 = 365;
/// The longest retention accepted (100 years).
pub const MAX_RETENTION_DAYS: u64 = 36_500;

/// `[storage] cache_capacity_mb` when the host gives none.
pub const DEFAULT_CACHE_CAPACITY_MB: u64 = 32;
/// `[storage] commit_window_us` when the host gives none. On the
/// benchmark's machine it raised in-process `get_balance` by about 5–9 %
/// and the OTP flow by about 10 % at 32 connections; the store opens it only
/// while enough calls are in flight, because with a few it cost each a
/// quarter of a millisecond (tests/bench/PROFILING.md, tenth and thirteenth
/// rounds).
pub const DEFAULT_COMMIT_WINDOW_US: u64 = 200;
/// The longest `[storage] commit_window_us` accepted (10 ms).
pub const MAX_COMMIT_WINDOW_US: u64 = 10_000;
/// `[storage] min_free_mb` when the host gives none.
pub const DEFAULT_MIN_FREE_MB: u64 = 64;
/// The largest `[storage] min_free_mb` accepted (1 TiB).
pub const MAX_MIN_FREE_MB: u64 = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct NotificationsConfig {
    /// Where development notifications (OTPs) are appended as JSON lines; also
    /// the channel for every message whose channel (`sms`, `email`) has no
    /// gateway configured.
    pub outbox: PathBuf,
    /// `[notifications.sms]`: the HTTP SMS gateway, if the host configured one.
    pub sms: Option<SmsGatewayConfig>,
    /// `[notifications.email]`: the SMTP server, if the host configured one.
    pub email: Option<SmtpConfig>,
    /// How the switch words the codes providers ask it to deliver
    /// (`/notify/*`), in the host's words, not the provider's.
    pub otp: OtpMessages,
    /// Codes `/notify/*` sends to one phone number or address in an hour,
    /// whichever provider asks (`max_per_destination_per_hour`).
    pub max_per_destination_per_hour: u32,
    /// Codes one provider may have `/notify/*` send in an hour, to anybody
    /// (`max_per_provider_per_hour`).
    pub max_per_provider_per_hour: u32,
}

/// The host's words for a one-time code: `otp_text` (SMS, and the e-mail
/// body) and `otp_subject`, with `{provider}`, `{code}` and `{minutes}`.
#[derive(Debug, Clone)]
pub struct OtpMessages {
    pub text: MessageTemplate,
    pub subject: MessageTemplate,
}

/// `[notifications] otp_text` when the host gives none.
pub const DEFAULT_OTP_TEXT: &str =
    "{provider} code: {code}. It expires in {minutes} min. Never share it with anyone.";
/// The placeholders `otp_text` may use (`{code}` it must).
pub(crate) const OTP_TEXT_PLACEHOLDERS: &[&str] = &["provider", "code", "minutes"];
/// The placeholders `otp_subject` may use: never the code.
pub(crate) const OTP_SUBJECT_PLACEHOLDERS: &[&str] = &["provider", "minutes"];
/// `[notifications] otp_subject` when the host gives none.
pub const DEFAULT_OTP_SUBJECT: &str = "Your {provider} code";
/// `[notifications] max_per_destination_per_hour` when the host gives none.
pub const DEFAULT_NOTIFY_PER_DESTINATION_PER_HOUR: u32 = 10;
/// `[notifications] max_per_provider_per_hour` when the host gives none.
pub const DEFAULT_NOTIFY_PER_PROVIDER_PER_HOUR: u32 = 10_000;

impl Default for OtpMessages {
    fn default() -> Self {
        let parse = |source: &str, allowed: &[&str]| {
            MessageTemplate::parse(source, allowed).unwrap_or_else(|_| MessageTemplate {
                source: String::new(),
                parts: Vec::new(),
            })
        };
        OtpMessages {
            text: parse(DEFAULT_OTP_TEXT, OTP_TEXT_PLACEHOLDERS),
            subject: parse(DEFAULT_OTP_SUBJECT, OTP_SUBJECT_PLACEHOLDERS),
        }
    }
}

/// An HTTP SMS gateway: every SMS is one JSON `POST` to `url` (see
/// `manifold-notify` for the request shape).
#[derive(Debug, Clone)]
pub struct SmsGatewayConfig {
    /// The `http://` or `https://` URL messages are POSTed to.
    pub url: String,
    pub credentials: SmsCredentials,
    /// The sender id shown on the customer's phone, when the gateway takes one.
    pub sender: Option<String>,
    /// The text sent, built from `{message}`, `{to}` and `{sender}`.
    pub template: MessageTemplate,
    /// How long one message may take, connection included.
    pub timeout: Duration,
    /// A PEM file of CA certificates to trust for this gateway's `https://`
    /// certificate instead of the public roots.
    pub ca_file: Option<PathBuf>,
    /// The host accepted plain `http://` to a host that is not loopback.
    pub insecure_http: bool,
}

/// How the switch proves itself to the SMS gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmsCredentials {
    /// No `Authorization` header (a gateway on a private network).
    None,
    /// `Authorization: Bearer <token>`.
    Bearer { token: SecretString },
    /// `Authorization: Basic base64(<username>:<password>)`.
    Basic {
        username: String,
        password: SecretString,
    },
}

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain text throughout (a relay on the same host or a test sink).
    None,
    /// Plain connect, then `STARTTLS`, which the server must offer: the
    /// message is never sent unencrypted (default port 587).
    StartTls,
    /// TLS from the first byte, "SMTPS" (default port 465).
    Tls,
}

impl SmtpTls {
    /// The port conventionally used with this mode.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::None => 25,
            SmtpTls::StartTls => 587,
            SmtpTls::Tls => 465,
        }
    }
}

/// The SMTP server e-mails are submitted to.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// Host name or IP address; also the name the TLS certificate must carry.
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// For `AUTH`; `None` submits without authenticating.
    pub credentials: Option<SmtpCredentials>,
    /// The `From:` mailbox, e.g. `Manifold <no-reply@example.com>`.
    pub from: String,
    /// The `Subject:` line, built from `{subject}` and `{to}`.
    pub subject: MessageTemplate,
    /// The plain-text body, built from `{message}`, `{subject}` and `{to}`.
    pub body: MessageTemplate,
    /// How long one message may take, connection included.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpCredentials {
    pub username: String,
    pub password: SecretString,
}

/// A message template: text with `{name}` placeholders, checked when the
/// file is loaded so a typo cannot surface as a garbled OTP message later.
/// `{{` and `}}` stand for literal braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageTemplate {
    source: String,
    parts: Vec<TemplatePart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TemplatePart {
    Text(String),
    Placeholder(String),
}

impl MessageTemplate {
    /// Parses `source`, accepting only the placeholders in `allowed`.
    pub fn parse(source: &str, allowed: &[&str]) -> Result<MessageTemplate, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = source.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) if c.is_ascii_alphanumeric() || c == '_' => name.push(c),
                            _ => {
                                return Err(
                                    "has a `{` that does not open a placeholder such as {message} (write `{{` for a brace)"
                                        .to_owned(),
                                )
                            }
                        }
                    }
                    if !allowed.contains(&name.as_str()) {
                        let allowed: Vec<String> =
                            allowed.iter().map(|name| format!("{{{name}}}")).collect();
                        return Err(format!(
                            "has an unknown placeholder {{{name}}}; it may use {}",
                            allowed.join(", ")
                        ));
                    }
                    if !text.is_empty() {
                        parts.push(TemplatePart::Text(std::mem::take(&mut text)));
                    }
                    parts.push(TemplatePart::Placeholder(name));
                }
                '}' => {
                    return Err("has a `}` that closes nothing (write `}}` for a brace)".to_owned())
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(TemplatePart::Text(text));
        }
        Ok(MessageTemplate {
            source: source.to_owned(),
            parts,
        })
    }

    /// The template as the host wrote it.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template contains the placeholder `{name}`.
    pub fn uses(&self, name: &str) -> bool {
        self.parts
            .iter()
            .any(|part| matches!(part, TemplatePart::Placeholder(p) if p == name))
    }

    /// Fills the placeholders from `values` (a placeholder without a value
    /// becomes empty). The result is a [`SecretString`] because the values
    /// usually include an OTP; it is sized up front so that no partial copy of
    /// the secret is left behind in a reallocated buffer.
    pub fn render(&self, values: &[(&str, &str)]) -> SecretString {
        let value = |name: &str| {
            values
                .iter()
                .find(|(key, _)| *key == name)
                .map_or("", |(_, value)| *value)
        };
        let len = self
            .parts
            .iter()
            .map(|part| match part {
                TemplatePart::Text(text) => text.len(),
                TemplatePart::Placeholder(name) => value(name).len(),
            })
            .sum();
        let mut out = String::with_capacity(len);
        for part in &self.parts {
            match part {
                TemplatePart::Text(text) => out.push_str(text),
                TemplatePart::Placeholder(name) => out.push_str(value(name)),
            }
        }
        SecretString::new(out)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProviderConfig {
    pub name: String,
    pub endpoint: ProviderEndpoint,
    /// The `request_type`s this provider serves.
    pub services: BTreeSet<String>,
    /// The subset of `services` the provider can reverse.
    pub reversible: BTreeSet<String>,
    /// The subset of `services` that only read (balance or name enquiries):
    /// calling one twice is harmless, so the switch calls the provider
    /// without first waiting for the `Pending` record to reach disk.
    pub read_only: BTreeSet<String>,
    /// How long the switch waits for an answer before recording `Pending`.
    pub timeout: Duration,
    /// Calls to this provider in flight at once, over every app; one more is
    /// refused (HTTP 429) before anything is recorded, so a slow upstream
    /// cannot hold every connection of the switch.
    pub max_concurrent_calls: u32,
    /// A query of an unfinished transaction asks the provider at most once
    /// in this interval; within it, the known state is answered. Zero asks
    /// at every query.
    pub query_interval: Duration,
}

/// `[[providers]] max_concurrent_calls` when the host gives none.
pub const DEFAULT_MAX_CONCURRENT_CALLS: u32 = 128;
/// The largest `max_concurrent_calls` accepted.
pub const MAX_MAX_CONCURRENT_CALLS: u32 = 100_000;
/// `[[providers]] query_interval_ms` when the host gives none.
pub const DEFAULT_QUERY_INTERVAL_MS: u64 = 1_000;
/// The largest `query_interval_ms` accepted (an hour).
pub const MAX_QUERY_INTERVAL_MS: u64 = 3_600_000;
/// `[apps.limits] requests_per_second` when the host gives none.
pub const DEFAULT_REQUESTS_PER_SECOND: u32 = 100;
/// The largest `requests_per_second` accepted.
pub const MAX_REQUESTS_PER_SECOND: u32 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderEndpoint {
    /// Compiled into the switch; `implementation` names which one, and
    /// `settings` is its own `[providers.settings]` table (JSON `null` when
    /// there is none), which that implementation reads and checks.
    InProcess {
        implementation: String,
        settings: ProviderSettings,
    },
    /// A provider microservice reached over HTTP.
    Remote(RemoteEndpoint),
}

/// An in-process provider's own `settings` table, as JSON. It may hold
/// customer data (the demo bank's registry), so only its keys print.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ProviderSettings(serde_json::Value);

impl ProviderSettings {
    pub fn new(value: serde_json::Value) -> ProviderSettings {
        ProviderSettings(value)
    }

    /// The table, or JSON `null` when the host gave none.
    pub fn value(&self) -> &serde_json::Value {
        &self.0
    }

    pub fn is_given(&self) -> bool {
        !self.0.is_null()
    }
}

impl fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            serde_json::Value::Object(table) => f.debug_set().entries(table.keys()).finish(),
            serde_json::Value::Null => f.write_str("none"),
            _ => f.write_str("[withheld]"),
        }
    }
}

/// How the switch reaches a provider microservice, and how the two prove
/// themselves to each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEndpoint {
    /// The base URL; the switch POSTs to `<url>/transact` etc.
    pub url: String,
    /// The secret both ends hold: every switch → provider call, and every
    /// call of the provider to `/notify/*`, is signed with a key derived from
    /// it (RFC 9421, `docs/secure.md`).
    pub secret: SecretString,
    /// The `keyid` both ends sign with; defaults to the provider's name.
    pub key_id: String,
    /// Whether the provider may send SMS and e-mail through the switch's
    /// `/notify/sms` and `/notify/email`.
    pub notify: bool,
    /// A PEM file of CA certificates to trust for the provider's `https://`
    /// certificate instead of the public roots.
    pub ca_file: Option<PathBuf>,
    /// The host accepted plain `http://` to a host that is not loopback.
    pub insecure_http: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AppConfig {
    pub id: String,
    pub name: String,
    /// The digests of the app's API keys: one, or two while a key is being
    /// rotated. The keys themselves are not kept.
    pub api_keys: Vec<ApiKeyDigest>,
    pub secret: SecretString,
    /// Whether every call must be signed (RFC 9421, `docs/secure.md`). A
    /// signature that is sent is always checked.
    pub require_signature: bool,
    /// What the app may call, by `request_type`.
    pub services: BTreeMap<String, ServiceGrant>,
    /// `[apps.limits]`: how much it may call.
    pub limits: AppLimits,
}

/// How much one app may ask of the switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppLimits {
    /// Requests per second on average, over every endpoint.
    pub requests_per_second: u32,
    /// Requests allowed at once above that average (the bucket's size).
    pub burst: u32,
    /// New transactions per UTC day, by `request_type`; a type not listed
    /// has no daily quota.
    pub daily: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceGrant {
    /// The providers the app may route this service to.
    pub providers: Vec<String>,
    /// `true` tells providers to skip the OTP step for this app and service.
    pub otp_override: bool,
    /// The largest `amount` (minor units) one transaction may carry.
    pub max_amount: Option<u64>,
}

impl SwitchConfig {
    /// Read and validate the configuration file at `path`; `*_env` secrets
    /// come from the process's environment.
    pub fn load(path: &Path) -> Result<SwitchConfig, ConfigError> {
        SwitchConfig::load_with(path, &ProcessEnvironment)
    }

    /// [`SwitchConfig::load`] with `*_env` secrets from `environment`.
    pub fn load_with(
        path: &Path,
        environment: &dyn Environment,
    ) -> Result<SwitchConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigError::single(path, "", format!("cannot be read: {error}")))?;
        SwitchConfig::from_toml_with(&text, path, environment)
    }

    /// Parse and validate configuration text; `source` names it in messages.
    pub fn from_toml(text: &str, source: &Path) -> Result<SwitchConfig, ConfigError> {
        SwitchConfig::from_toml_with(text, source, &ProcessEnvironment)
    }

    /// [`SwitchConfig::from_toml`] with `*_env` secrets from `environment`.
    pub fn from_toml_with(
        text: &str,
        source: &Path,
        environment: &dyn Environment,
    ) -> Result<SwitchConfig, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|error| {
            let line = error.span().map(|span| locate(text, span.start));
            let message = manifold_crypto::secret::withhold_values(error.message());
            // serde stops at the first problem; every part is read again on
            // its own so the host sees them all. The file-wide error adds
            // the line of the first.
            let mut problems: Vec<ConfigProblem> = raw::shape_problems(text)
                .into_iter()
                .map(|(key, problem)| ConfigProblem { key, problem })
                .collect();
            match problems.iter_mut().find(|p| p.problem == message) {
                Some(first) => {
                    if let Some(line) = &line {
                        first.problem = format!("{} ({line})", first.problem);
                    }
                }
                None => problems.insert(
                    0,
                    ConfigProblem {
                        key: line.unwrap_or_default(),
                        problem: message,
                    },
                ),
            }
            ConfigError {
                file: source.to_owned(),
                problems,
            }
        })?;
        raw.validate(source, environment)
    }

    pub fn app_by_id(&self, id: &str) -> Option<&AppConfig> {
        self.apps.iter().find(|app| app.id == id)
    }

    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|provider| provider.name == name)
    }
}

fn locate(text: &str, offset: usize) -> String {
    let line = text[..offset.min(text.len())].matches('\n').count() + 1;
    format!("line {line}")
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The dotted key, e.g. `apps[0].services.get_balance.providers`.
    pub key: String,
    pub problem: String,
}

/// Everything wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<ConfigProblem>,
}

impl ConfigError {
    pub fn single(file: &Path, key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_owned(),
            problems: vec![ConfigProblem {
                key: key.to_owned(),
                problem: problem.into(),
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if problem.key.is_empty() {
                write!(f, "{}: {}", self.file.display(), problem.problem)?;
            } else {
                write!(
                    f,
                    "{}: {}: {}",
                    self.file.display(),
                    problem.key,
                    problem.problem
                )?;
            }
        }
        Ok(())
    }
}

/// Collects problems so a host sees all of them in one start attempt.
#[derive(Default)]
pub(crate) struct Problems(Vec<ConfigProblem>);

impl Problems {
    pub(crate) fn add(&mut self, key: impl Into<String>, problem: impl Into<String>) {
        self.0.push(ConfigProblem {
            key: key.into(),
            problem: problem.into(),
        });
    }

    /// Whether a problem was recorded at `key` or below it (`key_env`,
    /// `key_file`).
    pub(crate) fn mentions(&self, key: &str) -> bool {
        self.0.iter().any(|problem| problem.key.starts_with(key))
    }

    /// The error of a configuration with problems recorded.
    pub(crate) fn into_error(self, file: &Path) -> ConfigError {
        debug_assert!(!self.0.is_empty(), "an error needs a problem");
        ConfigError {
            file: file.to_owned(),
            problems: self.0,
        }
    }

    pub(crate) fn into_result<T>(self, file: &Path, value: T) -> Result<T, ConfigError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError {
                file: file.to_owned(),
                problems: self.0,
            })
        }
    }
}

/// Names of apps, providers and services: short, and safe in URLs, logs and keys.
/// An id as the configuration accepts it (an app's, a provider's name): 1 to
/// 64 letters, digits, `_`, `-` or `.`.
pub fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

pub(crate) fn duplicates<'a, T: Eq + std::hash::Hash + ?Sized>(
    items: impl Iterator<Item = &'a T>,
) -> Vec<&'a T> {
    let mut seen = HashSet::new();
    items.filter(|item| !seen.insert(*item)).collect()
}

#[cfg(test)]
mod tests;
