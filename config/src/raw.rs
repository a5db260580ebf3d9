//! The serde mirror of the configuration file and its validation into the
//! typed [`SwitchConfig`](crate::SwitchConfig).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use manifold_crypto::{AtRestError, DataKey, DataKeys, SecretString};
use serde::Deserialize;

use crate::admin::RawAdmin;
use crate::billing::RawBilling;
use crate::secrets::{Environment, SecretResolver, SecretSource};
use crate::{
    duplicates, is_identifier, ApiKeyDigest, AppConfig, AppLimits, ConfigError, ConfigProblem,
    DataAtRestConfig, MessageTemplate, NotificationsConfig, OtpMessages, PostgresConfig, Problems,
    ProviderConfig, ProviderEndpoint, ProviderSettings, RemoteEndpoint, ServerConfig, ServiceGrant,
    SmsCredentials, SmsGatewayConfig, SmtpConfig, SmtpCredentials, SmtpTls, StorageBackend,
    StorageConfig, SwitchConfig, TlsFiles, MAX_NOTIFY_TIMEOUT, MAX_PROVIDER_TIMEOUT,
    MIN_API_KEY_LEN, MIN_PROVIDER_SECRET_LEN, MIN_SECRET_LEN,
};
use manifold_billing::FeeSchedule;

const DEFAULT_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_NOTIFY_TIMEOUT_MS: u64 = 10_000;
/// Longest SMS sender id accepted; gateways allow 11 letters or 15 digits.
const MAX_SENDER_LEN: usize = 15;

/// Every part of a file that does not fit its shape, not only the first:
/// each top-level table, and each `[[providers]]` and `[[apps]]` entry, read
/// on its own (serde stops at the first problem within one of them). The
/// key names the part (`server`, `apps[1]`); values are withheld from the
/// messages, which may be about secrets.
pub(crate) fn shape_problems(text: &str) -> Vec<(String, String)> {
    fn check<T: serde::de::DeserializeOwned>(
        key: String,
        value: toml::Value,
        problems: &mut Vec<(String, String)>,
    ) {
        if let Err(error) = T::deserialize(value) {
            problems.push((
                key,
                manifold_crypto::secret::withhold_values(error.message()),
            ));
        }
    }
    fn each<T: serde::de::DeserializeOwned>(
        name: &str,
        value: toml::Value,
        problems: &mut Vec<(String, String)>,
    ) {
        match value {
            toml::Value::Array(entries) => {
                for (index, entry) in entries.into_iter().enumerate() {
                    check::<T>(format!("{name}[{index}]"), entry, problems);
                }
            }
            _ => problems.push((
                name.to_owned(),
                format!("must be an array of tables (`[[{name}]]`)"),
            )),
        }
    }

    let Ok(table) = toml::from_str::<toml::Table>(text) else {
        // Not TOML at all: the whole-file error says where.
        return Vec::new();
    };
    let mut problems = Vec::new();
    for required in ["listen", "storage"] {
        if !table.contains_key(required) {
            problems.push((required.to_owned(), format!("missing field `{required}`")));
        }
    }
    for (key, value) in table {
        match key.as_str() {
            "listen" => check::<String>(key, value, &mut problems),
            "server" => check::<RawServer>(key, value, &mut problems),
            "storage" => check::<RawStorage>(key, value, &mut problems),
            "data_at_rest" => check::<RawDataAtRest>(key, value, &mut problems),
            "notifications" => check::<RawNotifications>(key, value, &mut problems),
            "billing" => check::<RawBilling>(key, value, &mut problems),
            "admin" => check::<RawAdmin>(key, value, &mut problems),
            "providers" => each::<RawProvider>(&key, value, &mut problems),
            "apps" => each::<RawApp>(&key, value, &mut problems),
            // In serde's words, so the file-wide error's line joins it.
            _ => {
                let problem = format!("unknown field `{key}`, expected one of `listen`, `server`, `storage`, `data_at_rest`, `notifications`, `billing`, `admin`, `providers`, `apps`");
                problems.push((key, problem));
            }
        }
    }
    problems
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    listen: String,
    #[serde(default)]
    server: Option<RawServer>,
    storage: RawStorage,
    #[serde(default)]
    data_at_rest: Option<RawDataAtRest>,
    #[serde(default)]
    notifications: Option<RawNotifications>,
    #[serde(default)]
    billing: Option<RawBilling>,
    #[serde(default)]
    admin: Option<RawAdmin>,
    #[serde(default)]
    providers: Vec<RawProvider>,
    #[serde(default)]
    apps: Vec<RawApp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    header_read_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    body_read_timeout_ms: Option<u64>,
    max_body_bytes: Option<usize>,
    max_header_bytes: Option<usize>,
    max_connections: Option<usize>,
    max_connections_per_address: Option<usize>,
    auth_failure_limit: Option<u32>,
    auth_failure_window_secs: Option<u64>,
    auth_lockout_secs: Option<u64>,
    signature_max_skew_secs: Option<u64>,
    tls: Option<RawTlsFiles>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTlsFiles {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    backend: Option<String>,
    path: PathBuf,
    cache_capacity_mb: Option<u64>,
    min_free_mb: Option<u64>,
    commit_window_us: Option<u64>,
    postgres: Option<RawPostgres>,
}

/// `[storage.postgres]`: the shared database, when `backend = "postgres"`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPostgres {
    url: Option<SecretString>,
    url_env: Option<String>,
    url_file: Option<PathBuf>,
    pool_size: Option<usize>,
    statement_timeout_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    ca_file: Option<PathBuf>,
    insecure_plaintext: Option<bool>,
}

/// `[data_at_rest]`: the key customer data is sealed under, the keys it was
/// sealed under before, and how long it is kept.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataAtRest {
    key_id: String,
    key: Option<SecretString>,
    key_env: Option<String>,
    key_file: Option<PathBuf>,
    retention_days: Option<u64>,
    #[serde(default)]
    previous_keys: Vec<RawDataKey>,
}

/// One of `[[data_at_rest.previous_keys]]`: it opens, and no longer seals.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataKey {
    key_id: String,
    key: Option<SecretString>,
    key_env: Option<String>,
    key_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotifications {
    outbox: Option<PathBuf>,
    otp_text: Option<String>,
    otp_subject: Option<String>,
    max_per_destination_per_hour: Option<u32>,
    max_per_provider_per_hour: Option<u32>,
    sms: Option<RawSms>,
    email: Option<RawEmail>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSms {
    url: String,
    token: Option<SecretString>,
    token_env: Option<String>,
    token_file: Option<PathBuf>,
    username: Option<String>,
    password: Option<SecretString>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    sender: Option<String>,
    template: Option<String>,
    timeout_ms: Option<u64>,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    insecure_http: bool,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum RawTls {
    None,
    Starttls,
    Tls,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmail {
    host: String,
    port: Option<u16>,
    tls: RawTls,
    username: Option<String>,
    password: Option<SecretString>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    from: String,
    subject: Option<String>,
    body: Option<String>,
    timeout_ms: Option<u64>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum RawMode {
    InProcess,
    Remote,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    name: String,
    mode: RawMode,
    implementation: Option<String>,
    url: Option<String>,
    services: Vec<String>,
    #[serde(default)]
    reversible: Vec<String>,
    #[serde(default)]
    read_only: Vec<String>,
    timeout_ms: Option<u64>,
    secret: Option<SecretString>,
    secret_env: Option<String>,
    secret_file: Option<PathBuf>,
    /// Whether any of the three `secret` keys was given (set when they are
    /// resolved, so a variable that is not set is not also "required").
    #[serde(skip)]
    secret_given: bool,
    key_id: Option<String>,
    #[serde(default)]
    notify: bool,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    insecure_http: bool,
    max_concurrent_calls: Option<u32>,
    query_interval_ms: Option<u64>,
    /// An in-process provider's own settings, handed to it as they are.
    settings: Option<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    id: String,
    name: Option<String>,
    api_key: Option<SecretString>,
    api_key_env: Option<String>,
    api_key_file: Option<PathBuf>,
    /// Keys the switch knows by digest only; one, or a list of them.
    api_key_sha256: Option<OneOrMany>,
    secret: Option<SecretString>,
    secret_env: Option<String>,
    secret_file: Option<PathBuf>,
    /// Whether any of the `api_key` or `secret` keys was given (set when
    /// they are resolved, so a variable that is not set is not also
    /// "required").
    #[serde(skip)]
    api_key_given: bool,
    #[serde(skip)]
    secret_given: bool,
    #[serde(default = "signatures_required_by_default")]
    require_signature: bool,
    #[serde(default)]
    services: BTreeMap<String, RawGrant>,
    limits: Option<RawAppLimits>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAppLimits {
    requests_per_second: Option<u32>,
    burst: Option<u32>,
    #[serde(default)]
    daily: BTreeMap<String, u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    providers: Vec<String>,
    otp_override: bool,
    max_amount: Option<u64>,
}

/// A string or a list of strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

/// Unsigned calls are refused unless the host says otherwise for an app.
fn signatures_required_by_default() -> bool {
    true
}

impl RawConfig {
    pub(crate) fn validate(
        mut self,
        file: &Path,
        environment: &dyn Environment,
    ) -> Result<SwitchConfig, ConfigError> {
        let mut problems = Problems::default();
        let mut secrets = SecretResolver {
            environment,
            warnings: Vec::new(),
        };
        self.resolve_secrets(&mut secrets, &mut problems);

        let listen = match self.listen.parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                problems.add(
                    "listen",
                    format!(
                        "`{}` is not an IP address and port such as 127.0.0.1:8080",
                        self.listen
                    ),
                );
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
        };
        let server = match self.server {
            Some(raw) => raw.validate(&mut problems),
            None => ServerConfig::default(),
        };
        if self.storage.path.as_os_str().is_empty() {
            problems.add("storage.path", "must name a directory");
        }
        let cache_capacity_mb = bounded_number(
            &mut problems,
            "storage.cache_capacity_mb",
            self.storage.cache_capacity_mb,
            crate::DEFAULT_CACHE_CAPACITY_MB,
            1..=65_536,
            "MiB",
            "",
        );
        let commit_window_us = bounded_number(
            &mut problems,
            "storage.commit_window_us",
            self.storage.commit_window_us,
            crate::DEFAULT_COMMIT_WINDOW_US,
            0..=crate::MAX_COMMIT_WINDOW_US,
            "microseconds",
            "",
        );
        let min_free_mb = bounded_number(
            &mut problems,
            "storage.min_free_mb",
            self.storage.min_free_mb,
            crate::DEFAULT_MIN_FREE_MB,
            0..=crate::MAX_MIN_FREE_MB,
            "MiB",
            " (no guard)",
        );
        let backend = validate_backend(
            self.storage.backend.as_deref(),
            self.storage.postgres.take(),
            &mut problems,
        );
        let data_at_rest = match self.data_at_rest {
            Some(raw) => raw.validate(&mut problems),
            None => {
                problems.add(
                    "data_at_rest",
                    "is required: customer data is stored sealed under a host data key; give \
                     `key_id` and `key_file` (64 hexadecimal digits, e.g. from \
                     `openssl rand -hex 32`, kept outside the data directory), or `key_env`",
                );
                None
            }
        };
        let notifications = match self.notifications {
            Some(raw) => raw.validate(&self.storage.path, &mut problems),
            None => NotificationsConfig {
                outbox: self.storage.path.join("outbox.jsonl"),
                otp: OtpMessages::default(),
                max_per_destination_per_hour: crate::DEFAULT_NOTIFY_PER_DESTINATION_PER_HOUR,
                max_per_provider_per_hour: crate::DEFAULT_NOTIFY_PER_PROVIDER_PER_HOUR,
                sms: None,
                email: None,
            },
        };

        let providers: Vec<ProviderConfig> = self
            .providers
            .into_iter()
            .enumerate()
            .map(|(i, raw)| raw.validate(&format!("providers[{i}]"), &mut problems))
            .collect();
        for name in duplicates(providers.iter().map(|p| p.name.as_str())) {
            problems.add(
                "providers",
                format!("provider `{name}` is defined more than once"),
            );
        }

        let apps: Vec<AppConfig> = self
            .apps
            .into_iter()
            .enumerate()
            .map(|(i, raw)| raw.validate(&format!("apps[{i}]"), &providers, &mut problems))
            .collect();
        for id in duplicates(apps.iter().map(|a| a.id.as_str())) {
            problems.add("apps", format!("app id `{id}` is used more than once"));
        }
        if !duplicates(apps.iter().flat_map(|a| a.api_keys.iter())).is_empty() {
            // Never name the key itself: it is a credential.
            problems.add("apps", "two apps share one api_key; each app needs its own");
        }
        // An app's secret signs its calls: shared with another app, or equal
        // to any api_key (which travels in every request), it would let the
        // holder of that key sign as the app.
        if !duplicates(apps.iter().map(|a| a.secret.expose())).is_empty() {
            problems.add("apps", "two apps share one secret; each app needs its own");
        }
        for (i, app) in apps.iter().enumerate() {
            let secret_digest = ApiKeyDigest::of(app.secret.expose());
            if apps
                .iter()
                .any(|other| other.api_keys.contains(&secret_digest))
            {
                problems.add(
                    format!("apps[{i}].secret"),
                    "is also an api_key; the secret is never sent and must be its own",
                );
            }
        }
        check_provider_secrets(&providers, &apps, &mut problems);
        let billing = match self.billing {
            Some(raw) => {
                let services = providers
                    .iter()
                    .flat_map(|p| p.services.iter().cloned())
                    .collect();
                raw.validate(&services, &mut problems)
            }
            None => FeeSchedule::default(),
        };
        let admin = self
            .admin
            .and_then(|raw| raw.validate(&self.storage.path, &mut problems));
        if let Some(admin) = &admin {
            for (i, operator) in admin.operators.iter().enumerate() {
                if apps
                    .iter()
                    .any(|app| app.api_keys.contains(&operator.token))
                {
                    problems.add(
                        format!("admin.operators[{i}].token_sha256"),
                        "is also an app's api_key; an operator token must be its own",
                    );
                }
            }
        }

        // A problem was recorded wherever the keys could not be had.
        let Some(data_at_rest) = data_at_rest else {
            return Err(problems.into_error(file));
        };
        let mut warnings = secrets.warnings;
        if self.storage.commit_window_us.is_some() && matches!(backend, StorageBackend::Postgres(_))
        {
            warnings.push(ConfigProblem {
                key: "storage.commit_window_us".into(),
                problem: "has no effect with `backend = \"postgres\"`: it times the sled \
                          store's journal, and each PostgreSQL transaction commits on its own"
                    .into(),
            });
        }
        problems.into_result(
            file,
            SwitchConfig {
                source: file.to_owned(),
                listen,
                server,
                storage: StorageConfig {
                    backend,
                    path: self.storage.path,
                    cache_capacity_bytes: cache_capacity_mb * 1024 * 1024,
                    min_free_bytes: min_free_mb.min(crate::MAX_MIN_FREE_MB) * 1024 * 1024,
                    commit_window: std::time::Duration::from_micros(commit_window_us),
                },
                data_at_rest,
                notifications,
                billing,
                admin,
                providers,
                apps,
                warnings,
            },
        )
    }
}

impl RawConfig {
    /// Replaces every `x_env` and `x_file` by the secret it names, in `x`,
    /// before anything is checked: the checks then see one secret per key,
    /// wherever it came from.
    fn resolve_secrets(&mut self, secrets: &mut SecretResolver<'_>, problems: &mut Problems) {
        fn take(
            inline: &mut Option<SecretString>,
            env: &mut Option<String>,
            file: &mut Option<PathBuf>,
        ) -> SecretSource {
            SecretSource {
                inline: inline.take(),
                env: env.take(),
                file: file.take(),
            }
        }
        for (i, provider) in self.providers.iter_mut().enumerate() {
            let source = take(
                &mut provider.secret,
                &mut provider.secret_env,
                &mut provider.secret_file,
            );
            provider.secret_given = source.is_given();
            provider.secret = secrets.resolve(&format!("providers[{i}].secret"), source, problems);
        }
        for (i, app) in self.apps.iter_mut().enumerate() {
            let source = take(
                &mut app.api_key,
                &mut app.api_key_env,
                &mut app.api_key_file,
            );
            app.api_key_given = source.is_given();
            app.api_key = secrets.resolve(&format!("apps[{i}].api_key"), source, problems);
            let source = take(&mut app.secret, &mut app.secret_env, &mut app.secret_file);
            app.secret_given = source.is_given();
            app.secret = secrets.resolve(&format!("apps[{i}].secret"), source, problems);
        }
        if let Some(postgres) = &mut self.storage.postgres {
            let source = take(
                &mut postgres.url,
                &mut postgres.url_env,
                &mut postgres.url_file,
            );
            postgres.url = secrets.resolve("storage.postgres.url", source, problems);
        }
        if let Some(data) = &mut self.data_at_rest {
            let source = take(&mut data.key, &mut data.key_env, &mut data.key_file);
            data.key = secrets.resolve("data_at_rest.key", source, problems);
            for (i, previous) in data.previous_keys.iter_mut().enumerate() {
                let source = take(
                    &mut previous.key,
                    &mut previous.key_env,
                    &mut previous.key_file,
                );
                previous.key = secrets.resolve(
                    &format!("data_at_rest.previous_keys[{i}].key"),
                    source,
                    problems,
                );
            }
        }
        if let Some(notifications) = &mut self.notifications {
            if let Some(sms) = &mut notifications.sms {
                let source = take(&mut sms.token, &mut sms.token_env, &mut sms.token_file);
                sms.token = secrets.resolve("notifications.sms.token", source, problems);
                let source = take(
                    &mut sms.password,
                    &mut sms.password_env,
                    &mut sms.password_file,
                );
                sms.password = secrets.resolve("notifications.sms.password", source, problems);
            }
            if let Some(email) = &mut notifications.email {
                let source = take(
                    &mut email.password,
                    &mut email.password_env,
                    &mut email.password_file,
                );
                email.password = secrets.resolve("notifications.email.password", source, problems);
            }
        }
    }
}

/// The host's value of a bounded number, or `default` when none is given;
/// out of `range`, a problem on `key` naming the range from its own bounds
/// (in `unit`; `low_means` says what the lowest value does, if it is special).
fn bounded_number(
    problems: &mut Problems,
    key: &str,
    given: Option<u64>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
    unit: &str,
    low_means: &str,
) -> u64 {
    let value = given.unwrap_or(default);
    if !range.contains(&value) {
        problems.add(
            key,
            format!(
                "must be between {}{low_means} and {} ({unit})",
                range.start(),
                range.end()
            ),
        );
    }
    value
}

/// `[storage] backend` and `[storage.postgres]`, checked together: the
/// table is required by `postgres` and refused by `sled` (a host who wrote
/// one meant to use it).
fn validate_backend(
    backend: Option<&str>,
    postgres: Option<RawPostgres>,
    problems: &mut Problems,
) -> StorageBackend {
    match (backend.unwrap_or("sled"), postgres) {
        ("sled", None) => StorageBackend::Sled,
        ("sled", Some(_)) => {
            problems.add(
                "storage.postgres",
                "is only read with `backend = \"postgres\"` (the backend is sled)",
            );
            StorageBackend::Sled
        }
        ("postgres", Some(raw)) => match raw.validate(problems) {
            Some(postgres) => StorageBackend::Postgres(postgres),
            None => StorageBackend::Sled,
        },
        ("postgres", None) => {
            problems.add(
                "storage.postgres",
                "is required with `backend = \"postgres\"`: give at least `url` (or url_env, or url_file)",
            );
            StorageBackend::Sled
        }
        (other, _) => {
            problems.add(
                "storage.backend",
                format!("`{other}` is not a backend: `sled` (the default) or `postgres`"),
            );
            StorageBackend::Sled
        }
    }
}

impl RawPostgres {
    fn validate(self, problems: &mut Problems) -> Option<PostgresConfig> {
        let url = match self.url {
            Some(url) => {
                let text = url.expose();
                let url_like = ["postgres://", "postgresql://"]
                    .iter()
                    .any(|scheme| text.starts_with(scheme));
                // libpq's other form: `host=… user=… dbname=…`.
                if !url_like && !text.contains('=') {
                    problems.add(
                        "storage.postgres.url",
                        "is not a PostgreSQL URL (postgres://user@host:port/database) or a \
                         key=value connection string",
                    );
                }
                Some(url)
            }
            None => {
                if !problems.mentions("storage.postgres.url") {
                    problems.add(
                        "storage.postgres.url",
                        "is required (or url_env, or url_file)",
                    );
                }
                None
            }
        };
        let pool_size = self.pool_size.unwrap_or(crate::DEFAULT_POSTGRES_POOL_SIZE);
        if !(1..=1000).contains(&pool_size) {
            problems.add("storage.postgres.pool_size", "must be between 1 and 1000");
        }
        let mut millis = |key: &str, value: Option<u64>, default: u64| {
            let value = value.unwrap_or(default);
            if !(1..=600_000).contains(&value) {
                problems.add(
                    format!("storage.postgres.{key}"),
                    "must be between 1 and 600000 (ms)",
                );
            }
            Duration::from_millis(value)
        };
        let statement_timeout = millis(
            "statement_timeout_ms",
            self.statement_timeout_ms,
            crate::DEFAULT_POSTGRES_TIMEOUT_MS,
        );
        let connect_timeout = millis(
            "connect_timeout_ms",
            self.connect_timeout_ms,
            crate::DEFAULT_POSTGRES_TIMEOUT_MS,
        );
        if let Some(path) = &self.ca_file {
            if !path.is_file() {
                problems.add(
                    "storage.postgres.ca_file",
                    format!("{} is not a file", path.display()),
                );
            }
        }
        Some(PostgresConfig {
            url: url?,
            pool_size,
            statement_timeout,
            connect_timeout,
            ca_file: self.ca_file,
            insecure_plaintext: self.insecure_plaintext.unwrap_or(false),
        })
    }
}

impl RawDataKey {
    /// The key, or `None` with a problem recorded at `key`. Its secret was
    /// resolved already; a missing one is a problem here.
    fn validate(self, key: &str, problems: &mut Problems) -> Option<DataKey> {
        let Some(text) = self.key else {
            if problems.mentions(key) {
                return None;
            }
            problems.add(key, "is required (or key_env, or key_file)");
            return None;
        };
        match DataKey::from_hex(&self.key_id, &text) {
            Ok(data_key) => Some(data_key),
            Err(AtRestError::MalformedKeyId) => {
                problems.add(format!("{key}_id"), AtRestError::MalformedKeyId.to_string());
                None
            }
            Err(error) => {
                problems.add(key, error.to_string());
                None
            }
        }
    }
}

impl RawDataAtRest {
    fn validate(self, problems: &mut Problems) -> Option<DataAtRestConfig> {
        let retention_days = self.retention_days.unwrap_or(crate::DEFAULT_RETENTION_DAYS);
        if !(1..=crate::MAX_RETENTION_DAYS).contains(&retention_days) {
            problems.add(
                "data_at_rest.retention_days",
                format!("must be between 1 and {} (days)", crate::MAX_RETENTION_DAYS),
            );
        }
        let current = RawDataKey {
            key_id: self.key_id,
            key: self.key,
            key_env: None,
            key_file: None,
        }
        .validate("data_at_rest.key", problems);
        let previous: Vec<Option<DataKey>> = self
            .previous_keys
            .into_iter()
            .enumerate()
            .map(|(i, raw)| raw.validate(&format!("data_at_rest.previous_keys[{i}].key"), problems))
            .collect();
        let previous: Option<Vec<DataKey>> = previous.into_iter().collect();
        match DataKeys::new(current?, previous?) {
            Ok(keys) => Some(DataAtRestConfig {
                keys: Arc::new(keys),
                retention: Duration::from_secs(
                    retention_days.min(crate::MAX_RETENTION_DAYS) * 86_400,
                ),
            }),
            Err(error) => {
                problems.add("data_at_rest.previous_keys", error.to_string());
                None
            }
        }
    }
}

impl RawProvider {
    fn validate(self, key: &str, problems: &mut Problems) -> ProviderConfig {
        if !is_identifier(&self.name) {
            problems.add(
                format!("{key}.name"),
                "must be 1-64 letters, digits, `_`, `-` or `.`",
            );
        }
        let remote_only = |field: &str, problems: &mut Problems| {
            problems.add(format!("{key}.{field}"), "is only for mode = \"remote\"")
        };
        let endpoint = match self.mode {
            RawMode::InProcess => {
                if self.implementation.is_none() {
                    problems.add(
                        format!("{key}.implementation"),
                        "is required when mode = \"in_process\"",
                    );
                }
                // In-process providers are called in memory: nothing to
                // reach, sign or verify.
                for (field, given) in [
                    ("url", self.url.is_some()),
                    ("secret", self.secret_given),
                    ("key_id", self.key_id.is_some()),
                    ("notify", self.notify),
                    ("ca_file", self.ca_file.is_some()),
                    ("insecure_http", self.insecure_http),
                ] {
                    if given {
                        remote_only(field, problems);
                    }
                }
                let settings = match self.settings {
                    None => ProviderSettings::default(),
                    Some(table) => match serde_json::to_value(table) {
                        Ok(value) => ProviderSettings::new(value),
                        Err(error) => {
                            problems.add(
                                format!("{key}.settings"),
                                manifold_crypto::secret::withhold_values(&error.to_string()),
                            );
                            ProviderSettings::default()
                        }
                    },
                };
                ProviderEndpoint::InProcess {
                    implementation: self.implementation.unwrap_or_default(),
                    settings,
                }
            }
            RawMode::Remote => {
                if self.implementation.is_some() {
                    problems.add(
                        format!("{key}.implementation"),
                        "is only for mode = \"in_process\"",
                    );
                }
                if self.settings.is_some() {
                    problems.add(
                        format!("{key}.settings"),
                        "is only for mode = \"in_process\" (a remote provider has its own)",
                    );
                }
                let url = self.url.unwrap_or_default();
                if url.is_empty() {
                    problems.add(format!("{key}.url"), "is required when mode = \"remote\"");
                } else {
                    check_url(&url, &format!("{key}.url"), problems);
                    // The signature covers the path the provider sees, and a
                    // provider serves /transact at its root: a prefix would
                    // break one or the other behind any proxy.
                    if url
                        .parse::<http::Uri>()
                        .is_ok_and(|uri| !matches!(uri.path(), "" | "/") || uri.query().is_some())
                    {
                        problems.add(
                            format!("{key}.url"),
                            "must be the provider's base URL, without a path or query \
                             (the switch calls <url>/transact etc.)",
                        );
                    }
                    check_transport(
                        &url,
                        self.insecure_http,
                        self.ca_file.is_some(),
                        key,
                        problems,
                    );
                }
                let secret = match self.secret {
                    Some(secret) => {
                        if secret.len() < MIN_PROVIDER_SECRET_LEN {
                            problems.add(
                                format!("{key}.secret"),
                                format!("must be at least {MIN_PROVIDER_SECRET_LEN} characters"),
                            );
                        }
                        secret
                    }
                    None => {
                        if !self.secret_given {
                            problems.add(
                                format!("{key}.secret"),
                                "is required when mode = \"remote\": every call to and from \
                                 the provider is signed with it (give secret, secret_env or \
                                 secret_file)",
                            );
                        }
                        SecretString::from("")
                    }
                };
                let key_id = self.key_id.unwrap_or_else(|| self.name.clone());
                if !is_identifier(&key_id) {
                    problems.add(
                        format!("{key}.key_id"),
                        "must be 1-64 letters, digits, `_`, `-` or `.`",
                    );
                }
                ProviderEndpoint::Remote(RemoteEndpoint {
                    url,
                    secret,
                    key_id,
                    notify: self.notify,
                    ca_file: self.ca_file,
                    insecure_http: self.insecure_http,
                })
            }
        };
        if self.services.is_empty() {
            problems.add(
                format!("{key}.services"),
                "must list at least one request_type",
            );
        }
        for service in &self.services {
            if !is_identifier(service) {
                problems.add(
                    format!("{key}.services"),
                    format!("`{service}` is not a valid request_type name"),
                );
            }
        }
        let services: BTreeSet<String> = self.services.into_iter().collect();
        let reversible: BTreeSet<String> = self.reversible.into_iter().collect();
        for service in reversible.difference(&services) {
            problems.add(
                format!("{key}.reversible"),
                format!("`{service}` is not one of this provider's services"),
            );
        }
        let read_only: BTreeSet<String> = self.read_only.into_iter().collect();
        for service in read_only.difference(&services) {
            problems.add(
                format!("{key}.read_only"),
                format!("`{service}` is not one of this provider's services"),
            );
        }
        for service in read_only.intersection(&reversible) {
            problems.add(
                format!("{key}.read_only"),
                format!("`{service}` is reversible, so it changes something and is not read-only"),
            );
        }
        let timeout_ms = self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        let timeout = Duration::from_millis(timeout_ms);
        if timeout_ms == 0 || timeout > MAX_PROVIDER_TIMEOUT {
            problems.add(
                format!("{key}.timeout_ms"),
                format!("must be between 1 and {}", MAX_PROVIDER_TIMEOUT.as_millis()),
            );
        }
        let max_concurrent_calls = self
            .max_concurrent_calls
            .unwrap_or(crate::DEFAULT_MAX_CONCURRENT_CALLS);
        if !(1..=crate::MAX_MAX_CONCURRENT_CALLS).contains(&max_concurrent_calls) {
            problems.add(
                format!("{key}.max_concurrent_calls"),
                format!("must be between 1 and {}", crate::MAX_MAX_CONCURRENT_CALLS),
            );
        }
        let query_interval_ms = self
            .query_interval_ms
            .unwrap_or(crate::DEFAULT_QUERY_INTERVAL_MS);
        if query_interval_ms > crate::MAX_QUERY_INTERVAL_MS {
            problems.add(
                format!("{key}.query_interval_ms"),
                format!(
                    "must be between 0 (ask at every query) and {}",
                    crate::MAX_QUERY_INTERVAL_MS
                ),
            );
        }
        ProviderConfig {
            name: self.name,
            endpoint,
            services,
            reversible,
            read_only,
            timeout,
            max_concurrent_calls: max_concurrent_calls.max(1),
            query_interval: Duration::from_millis(
                query_interval_ms.min(crate::MAX_QUERY_INTERVAL_MS),
            ),
        }
    }
}

/// Each remote provider signs with a secret of its own: one shared with
/// another provider would let either impersonate the other, and one equal to
/// an app's secret or key would let the app speak as the provider.
fn check_provider_secrets(
    providers: &[ProviderConfig],
    apps: &[AppConfig],
    problems: &mut Problems,
) {
    let remotes: Vec<&RemoteEndpoint> = providers
        .iter()
        .filter_map(|p| match &p.endpoint {
            ProviderEndpoint::Remote(remote) => Some(remote),
            ProviderEndpoint::InProcess { .. } => None,
        })
        .collect();
    // Never name the secret itself.
    if !duplicates(remotes.iter().map(|r| r.secret.expose())).is_empty() {
        problems.add(
            "providers",
            "two providers share one secret; each provider needs its own",
        );
    }
    for id in duplicates(remotes.iter().map(|r| r.key_id.as_str())) {
        problems.add(
            "providers",
            format!("key_id `{id}` is used by more than one provider"),
        );
    }
    for (i, provider) in providers.iter().enumerate() {
        let ProviderEndpoint::Remote(remote) = &provider.endpoint else {
            continue;
        };
        if apps.iter().any(|app| {
            app.secret == remote.secret
                || app
                    .api_keys
                    .contains(&ApiKeyDigest::of(remote.secret.expose()))
        }) {
            problems.add(
                format!("providers[{i}].secret"),
                "is also an app's secret or api_key; a provider's secret must be its own",
            );
        }
    }
}

/// Decrypted card and account details travel to providers, and OTP texts to
/// SMS gateways: over the network that means TLS, unless the peer is on this
/// machine or the host explicitly accepts plain HTTP.
fn check_transport(
    url: &str,
    insecure_http: bool,
    has_ca_file: bool,
    key: &str,
    problems: &mut Problems,
) {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return;
    };
    let plain = uri.scheme_str() == Some("http");
    if plain && !insecure_http && !uri.host().is_some_and(is_loopback) {
        problems.add(
            format!("{key}.url"),
            "must be https:// for a host other than this machine \
             (or set insecure_http = true to accept plain HTTP knowingly)",
        );
    }
    if plain && has_ca_file {
        problems.add(format!("{key}.ca_file"), "is only for an https:// url");
    }
}

/// The unit a duration key is written in.
#[derive(Clone, Copy)]
enum Unit {
    Millis,
    Secs,
}

/// A duration key: absent is `default`; otherwise 1 to `max` in `unit`.
fn duration(
    value: Option<u64>,
    default: Duration,
    max: Duration,
    unit: Unit,
    key: &str,
    problems: &mut Problems,
) -> Duration {
    let (from, max_in_unit): (fn(u64) -> Duration, u128) = match unit {
        Unit::Millis => (Duration::from_millis, max.as_millis()),
        Unit::Secs => (Duration::from_secs, u128::from(max.as_secs())),
    };
    match value {
        None => default,
        Some(n) if n == 0 || from(n) > max => {
            problems.add(key, format!("must be between 1 and {max_in_unit}"));
            default
        }
        Some(n) => from(n),
    }
}

fn count<T: Copy + PartialOrd + std::fmt::Display + From<u8>>(
    value: Option<T>,
    default: T,
    max: T,
    key: &str,
    problems: &mut Problems,
) -> T {
    match value {
        None => default,
        Some(n) if n < T::from(1) || n > max => {
            problems.add(key, format!("must be between 1 and {max}"));
            default
        }
        Some(n) => n,
    }
}

impl RawServer {
    fn validate(self, problems: &mut Problems) -> ServerConfig {
        let defaults = ServerConfig::default();
        let minute = Duration::from_secs(60);
        let hour = Duration::from_secs(3600);
        let tls = self.tls.map(|raw| {
            for (field, path) in [("cert", &raw.cert), ("key", &raw.key)] {
                if path.as_os_str().is_empty() {
                    problems.add(format!("server.tls.{field}"), "must name a PEM file");
                }
            }
            TlsFiles {
                cert: raw.cert,
                key: raw.key,
            }
        });
        ServerConfig {
            header_read_timeout: duration(
                self.header_read_timeout_ms,
                defaults.header_read_timeout,
                minute,
                Unit::Millis,
                "server.header_read_timeout_ms",
                problems,
            ),
            idle_timeout: duration(
                self.idle_timeout_ms,
                defaults.idle_timeout,
                hour,
                Unit::Millis,
                "server.idle_timeout_ms",
                problems,
            ),
            body_read_timeout: duration(
                self.body_read_timeout_ms,
                defaults.body_read_timeout,
                minute,
                Unit::Millis,
                "server.body_read_timeout_ms",
                problems,
            ),
            max_body_bytes: count(
                self.max_body_bytes,
                defaults.max_body_bytes,
                1024 * 1024,
                "server.max_body_bytes",
                problems,
            ),
            max_header_bytes: count(
                self.max_header_bytes,
                defaults.max_header_bytes,
                1024 * 1024,
                "server.max_header_bytes",
                problems,
            ),
            max_connections: count(
                self.max_connections,
                defaults.max_connections,
                1_000_000,
                "server.max_connections",
                problems,
            ),
            max_connections_per_address: count(
                self.max_connections_per_address,
                defaults.max_connections_per_address,
                1_000_000,
                "server.max_connections_per_address",
                problems,
            ),
            // 0 turns the lockout off (behind a proxy every client shares
            // one address, and one client's failures would lock out all).
            auth_failure_limit: match self.auth_failure_limit {
                Some(0) => 0,
                other => count(
                    other,
                    defaults.auth_failure_limit,
                    1_000_000,
                    "server.auth_failure_limit",
                    problems,
                ),
            },
            auth_failure_window: duration(
                self.auth_failure_window_secs,
                defaults.auth_failure_window,
                hour,
                Unit::Secs,
                "server.auth_failure_window_secs",
                problems,
            ),
            auth_lockout: duration(
                self.auth_lockout_secs,
                defaults.auth_lockout,
                Duration::from_secs(24 * 3600),
                Unit::Secs,
                "server.auth_lockout_secs",
                problems,
            ),
            signature_max_skew: duration(
                self.signature_max_skew_secs,
                defaults.signature_max_skew,
                hour,
                Unit::Secs,
                "server.signature_max_skew_secs",
                problems,
            ),
            tls,
        }
    }
}

fn notify_timeout(timeout_ms: Option<u64>, key: &str, problems: &mut Problems) -> Duration {
    let timeout_ms = timeout_ms.unwrap_or(DEFAULT_NOTIFY_TIMEOUT_MS);
    let timeout = Duration::from_millis(timeout_ms);
    if timeout_ms == 0 || timeout > MAX_NOTIFY_TIMEOUT {
        problems.add(
            key,
            format!("must be between 1 and {}", MAX_NOTIFY_TIMEOUT.as_millis()),
        );
    }
    timeout
}

/// Parses a template; `required` placeholders must appear in it.
fn template(
    text: Option<String>,
    default: &str,
    allowed: &[&str],
    required: Option<&str>,
    key: &str,
    problems: &mut Problems,
) -> MessageTemplate {
    let text = text.unwrap_or_else(|| default.to_owned());
    match MessageTemplate::parse(&text, allowed) {
        Ok(template) => {
            if let Some(required) = required {
                if !template.uses(required) {
                    problems.add(
                        key,
                        format!(
                            "must contain {{{required}}}, or the customer never sees the message"
                        ),
                    );
                }
            }
            template
        }
        Err(problem) => {
            problems.add(key, problem);
            // Keeps validation going; the problem stops start-up anyway.
            MessageTemplate::parse(default, allowed).unwrap_or_else(|_| MessageTemplate {
                source: String::new(),
                parts: Vec::new(),
            })
        }
    }
}

fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

impl RawNotifications {
    fn validate(self, storage: &Path, problems: &mut Problems) -> NotificationsConfig {
        let max_per_destination_per_hour = self
            .max_per_destination_per_hour
            .unwrap_or(crate::DEFAULT_NOTIFY_PER_DESTINATION_PER_HOUR);
        if max_per_destination_per_hour == 0 {
            problems.add(
                "notifications.max_per_destination_per_hour",
                "must be greater than 0",
            );
        }
        let max_per_provider_per_hour = self
            .max_per_provider_per_hour
            .unwrap_or(crate::DEFAULT_NOTIFY_PER_PROVIDER_PER_HOUR);
        if max_per_provider_per_hour == 0 {
            problems.add(
                "notifications.max_per_provider_per_hour",
                "must be greater than 0",
            );
        }
        let otp_subject = template(
            self.otp_subject,
            crate::DEFAULT_OTP_SUBJECT,
            crate::OTP_SUBJECT_PLACEHOLDERS,
            None,
            "notifications.otp_subject",
            problems,
        );
        if otp_subject.source().contains(['\r', '\n']) {
            problems.add("notifications.otp_subject", "must be a single line");
        }
        NotificationsConfig {
            otp: OtpMessages {
                text: template(
                    self.otp_text,
                    crate::DEFAULT_OTP_TEXT,
                    crate::OTP_TEXT_PLACEHOLDERS,
                    Some("code"),
                    "notifications.otp_text",
                    problems,
                ),
                subject: otp_subject,
            },
            max_per_destination_per_hour: max_per_destination_per_hour.max(1),
            max_per_provider_per_hour: max_per_provider_per_hour.max(1),
            outbox: self.outbox.unwrap_or_else(|| storage.join("outbox.jsonl")),
            sms: self
                .sms
                .map(|raw| raw.validate("notifications.sms", problems)),
            email: self
                .email
                .map(|raw| raw.validate("notifications.email", problems)),
        }
    }
}

impl RawSms {
    fn validate(self, key: &str, problems: &mut Problems) -> SmsGatewayConfig {
        check_url(&self.url, &format!("{key}.url"), problems);
        check_transport(
            &self.url,
            self.insecure_http,
            self.ca_file.is_some(),
            key,
            problems,
        );
        let credentials = match (self.token, self.username, self.password) {
            (None, None, None) => SmsCredentials::None,
            (Some(token), None, None) => {
                if token.is_empty() || has_control(token.expose()) {
                    problems.add(
                        format!("{key}.token"),
                        "must be non-empty, without control characters",
                    );
                }
                SmsCredentials::Bearer { token }
            }
            (None, Some(username), Some(password)) => {
                // Basic authentication joins the two with `:`.
                if username.is_empty() || username.contains(':') || has_control(&username) {
                    problems.add(
                        format!("{key}.username"),
                        "must be non-empty, without `:` or control characters",
                    );
                }
                if password.is_empty() || has_control(password.expose()) {
                    problems.add(
                        format!("{key}.password"),
                        "must be non-empty, without control characters",
                    );
                }
                SmsCredentials::Basic { username, password }
            }
            (Some(_), _, _) => {
                problems.add(
                    format!("{key}.token"),
                    "use either token (bearer) or username and password (basic), not both",
                );
                SmsCredentials::None
            }
            (None, Some(_), None) => {
                problems.add(format!("{key}.password"), "is required with username");
                SmsCredentials::None
            }
            (None, None, Some(_)) => {
                problems.add(format!("{key}.username"), "is required with password");
                SmsCredentials::None
            }
        };
        // Like the SMTP password: a credential crosses the network only
        // encrypted, unless the gateway is on this very machine.
        if !matches!(credentials, SmsCredentials::None) {
            if let Ok(uri) = self.url.parse::<http::Uri>() {
                if uri.scheme_str() == Some("http") && !uri.host().is_some_and(is_loopback) {
                    problems.add(
                        format!("{key}.url"),
                        "must be https:// when credentials are sent to another host",
                    );
                }
            }
        }
        if let Some(sender) = &self.sender {
            if sender.trim().is_empty()
                || sender.chars().count() > MAX_SENDER_LEN
                || has_control(sender)
            {
                problems.add(
                    format!("{key}.sender"),
                    format!("must be 1 to {MAX_SENDER_LEN} characters, without control characters"),
                );
            }
        }
        SmsGatewayConfig {
            url: self.url,
            credentials,
            sender: self.sender,
            template: template(
                self.template,
                "{message}",
                &["message", "to", "sender"],
                Some("message"),
                &format!("{key}.template"),
                problems,
            ),
            timeout: notify_timeout(self.timeout_ms, &format!("{key}.timeout_ms"), problems),
            ca_file: self.ca_file,
            insecure_http: self.insecure_http,
        }
    }
}

impl RawEmail {
    fn validate(self, key: &str, problems: &mut Problems) -> SmtpConfig {
        if self.host.is_empty()
            || self
                .host
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '/')
        {
            problems.add(
                format!("{key}.host"),
                "must be a host name or IP address, such as smtp.example.com",
            );
        }
        let tls = match self.tls {
            RawTls::None => SmtpTls::None,
            RawTls::Starttls => SmtpTls::StartTls,
            RawTls::Tls => SmtpTls::Tls,
        };
        if self.port == Some(0) {
            problems.add(format!("{key}.port"), "must be between 1 and 65535");
        }
        let credentials = match (self.username, self.password) {
            (None, None) => None,
            (Some(username), Some(password)) => {
                if username.is_empty() || has_control(&username) {
                    problems.add(
                        format!("{key}.username"),
                        "must be non-empty, without control characters",
                    );
                }
                if password.is_empty() || has_control(password.expose()) {
                    problems.add(
                        format!("{key}.password"),
                        "must be non-empty, without control characters",
                    );
                }
                Some(SmtpCredentials { username, password })
            }
            (Some(_), None) => {
                problems.add(format!("{key}.password"), "is required with username");
                None
            }
            (None, Some(_)) => {
                problems.add(format!("{key}.username"), "is required with password");
                None
            }
        };
        // A password sent over an unencrypted connection can be read by anyone
        // on the path; only a server on this very machine is exempt.
        if credentials.is_some() && tls == SmtpTls::None && !is_loopback(&self.host) {
            problems.add(
                format!("{key}.tls"),
                "must be \"starttls\" or \"tls\" when a password is sent to another host",
            );
        }
        if !is_plausible_mailbox(&self.from) {
            problems.add(
                format!("{key}.from"),
                "must be an address such as no-reply@example.com or `Name <no-reply@example.com>`",
            );
        }
        let subject = template(
            self.subject,
            "{subject}",
            &["subject", "to"],
            None,
            &format!("{key}.subject"),
            problems,
        );
        if subject.source().contains(['\r', '\n']) {
            problems.add(format!("{key}.subject"), "must be a single line");
        }
        SmtpConfig {
            port: self.port.unwrap_or(tls.default_port()),
            host: self.host,
            tls,
            credentials,
            from: self.from,
            subject,
            body: template(
                self.body,
                "{message}",
                &["message", "subject", "to"],
                Some("message"),
                &format!("{key}.body"),
                problems,
            ),
            timeout: notify_timeout(self.timeout_ms, &format!("{key}.timeout_ms"), problems),
        }
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `local@domain` or `Display Name <local@domain>`. The mailer parses the
/// address for real when it starts; this catches the obvious mistakes early,
/// together with every other problem of the file.
fn is_plausible_mailbox(text: &str) -> bool {
    let address = match (text.rfind('<'), text.strip_suffix('>')) {
        (Some(open), Some(inner)) => &inner[open + 1..],
        (None, None) => text,
        _ => return false,
    };
    match address.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !address.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

fn check_url(url: &str, key: &str, problems: &mut Problems) {
    match url.parse::<http::Uri>() {
        Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {}
        _ => problems.add(
            key,
            format!("`{url}` is not an http:// or https:// base URL"),
        ),
    }
}

impl RawApp {
    fn validate(
        self,
        key: &str,
        providers: &[ProviderConfig],
        problems: &mut Problems,
    ) -> AppConfig {
        if !is_identifier(&self.id) {
            problems.add(
                format!("{key}.id"),
                "must be 1-64 letters, digits, `_`, `-` or `.`",
            );
        }
        let mut api_keys = Vec::new();
        if let Some(api_key) = &self.api_key {
            if api_key.len() < MIN_API_KEY_LEN {
                problems.add(
                    format!("{key}.api_key"),
                    format!("must be at least {MIN_API_KEY_LEN} characters"),
                );
            }
            if api_key
                .expose()
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
            {
                problems.add(
                    format!("{key}.api_key"),
                    "must not contain spaces or control characters",
                );
            }
            api_keys.push(ApiKeyDigest::of(api_key.expose()));
        }
        for digest in self
            .api_key_sha256
            .map(OneOrMany::into_vec)
            .unwrap_or_default()
        {
            match ApiKeyDigest::from_hex(&digest) {
                Some(digest) => api_keys.push(digest),
                None => problems.add(
                    format!("{key}.api_key_sha256"),
                    "must be 64 hexadecimal digits, the SHA-256 of the key \
                     (`printf %s \"$KEY\" | sha256sum`)",
                ),
            }
        }
        if !duplicates(api_keys.iter()).is_empty() {
            problems.add(format!("{key}.api_key_sha256"), "names the same key twice");
        }
        match api_keys.len() {
            0 if !self.api_key_given => problems.add(
                format!("{key}.api_key"),
                "is required: give api_key, api_key_env, api_key_file or api_key_sha256",
            ),
            0..=2 => {}
            _ => problems.add(
                format!("{key}.api_key_sha256"),
                "an app has at most two API keys at once (the current one and, while \
                 rotating, the next)",
            ),
        }
        let secret = match self.secret {
            Some(secret) => {
                if secret.len() < MIN_SECRET_LEN {
                    problems.add(
                        format!("{key}.secret"),
                        format!("must be at least {MIN_SECRET_LEN} characters"),
                    );
                }
                secret
            }
            None => {
                if !self.secret_given {
                    problems.add(
                        format!("{key}.secret"),
                        "is required: give secret, secret_env or secret_file",
                    );
                }
                SecretString::from("")
            }
        };
        if self.services.is_empty() {
            problems.add(
                format!("{key}.services"),
                "must grant at least one request_type",
            );
        }
        let mut services = BTreeMap::new();
        for (service, grant) in self.services {
            let grant_key = format!("{key}.services.{service}");
            if grant.providers.is_empty() {
                problems.add(
                    format!("{grant_key}.providers"),
                    "must list at least one provider",
                );
            }
            for name in &grant.providers {
                match providers.iter().find(|p| &p.name == name) {
                    None => problems.add(
                        format!("{grant_key}.providers"),
                        format!("no provider named `{name}` is configured"),
                    ),
                    Some(provider) if !provider.services.contains(&service) => problems.add(
                        format!("{grant_key}.providers"),
                        format!("provider `{name}` does not serve `{service}`"),
                    ),
                    Some(_) => {}
                }
            }
            if grant.max_amount == Some(0) {
                problems.add(
                    format!("{grant_key}.max_amount"),
                    "must be greater than 0 (omit it for no limit)",
                );
            }
            services.insert(
                service,
                ServiceGrant {
                    providers: grant.providers,
                    otp_override: grant.otp_override,
                    max_amount: grant.max_amount,
                },
            );
        }
        let limits = self.limits.unwrap_or_default();
        let requests_per_second = limits
            .requests_per_second
            .unwrap_or(crate::DEFAULT_REQUESTS_PER_SECOND);
        if !(1..=crate::MAX_REQUESTS_PER_SECOND).contains(&requests_per_second) {
            problems.add(
                format!("{key}.limits.requests_per_second"),
                format!("must be between 1 and {}", crate::MAX_REQUESTS_PER_SECOND),
            );
        }
        let requests_per_second = requests_per_second.clamp(1, crate::MAX_REQUESTS_PER_SECOND);
        let max_burst = crate::MAX_REQUESTS_PER_SECOND.saturating_mul(2);
        let burst = limits
            .burst
            .unwrap_or(requests_per_second.saturating_mul(2));
        if !(1..=max_burst).contains(&burst) {
            problems.add(
                format!("{key}.limits.burst"),
                format!("must be between 1 and {max_burst}"),
            );
        }
        for (request_type, quota) in &limits.daily {
            if !services.contains_key(request_type) {
                problems.add(
                    format!("{key}.limits.daily.{request_type}"),
                    format!("`{request_type}` is not one of this app's services"),
                );
            }
            if *quota == 0 {
                problems.add(
                    format!("{key}.limits.daily.{request_type}"),
                    "must be greater than 0 (omit it for no daily quota)",
                );
            }
        }
        AppConfig {
            limits: AppLimits {
                requests_per_second,
                burst: burst.clamp(1, max_burst),
                daily: limits.daily,
            },
            name: self.name.unwrap_or_else(|| self.id.clone()),
            id: self.id,
            api_keys,
            secret,
            require_signature: self.require_signature,
            services,
        }
    }
}
