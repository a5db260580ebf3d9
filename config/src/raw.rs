//! The serde mirror of the configuration file and its validation into the
//! typed [`SwitchConfig`](crate::SwitchConfig).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use manifold_crypto::SecretString;
use serde::Deserialize;

use crate::{
    duplicates, is_identifier, AppConfig, ConfigError, NotificationsConfig, Problems,
    ProviderConfig, ProviderEndpoint, ServiceGrant, StorageConfig, SwitchConfig,
    MAX_PROVIDER_TIMEOUT, MIN_API_KEY_LEN, MIN_SECRET_LEN,
};

const DEFAULT_TIMEOUT_MS: u64 = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    listen: String,
    storage: RawStorage,
    #[serde(default)]
    notifications: Option<RawNotifications>,
    #[serde(default)]
    providers: Vec<RawProvider>,
    #[serde(default)]
    apps: Vec<RawApp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    path: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotifications {
    outbox: Option<PathBuf>,
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
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    id: String,
    name: Option<String>,
    api_key: SecretString,
    secret: SecretString,
    #[serde(default)]
    require_signature: bool,
    #[serde(default)]
    services: BTreeMap<String, RawGrant>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    providers: Vec<String>,
    otp_override: bool,
    max_amount: Option<u64>,
}

impl RawConfig {
    pub(crate) fn validate(self, file: &Path) -> Result<SwitchConfig, ConfigError> {
        let mut problems = Problems::default();

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
        if self.storage.path.as_os_str().is_empty() {
            problems.add("storage.path", "must name a directory");
        }
        let outbox = self
            .notifications
            .and_then(|n| n.outbox)
            .unwrap_or_else(|| self.storage.path.join("outbox.jsonl"));

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
        if !duplicates(apps.iter().map(|a| a.api_key.expose())).is_empty() {
            // Never name the key itself: it is a credential.
            problems.add("apps", "two apps share one api_key; each app needs its own");
        }

        problems.into_result(
            file,
            SwitchConfig {
                source: file.to_owned(),
                listen,
                storage: StorageConfig {
                    path: self.storage.path,
                },
                notifications: NotificationsConfig { outbox },
                providers,
                apps,
            },
        )
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
        let endpoint = match (self.mode, self.implementation, self.url) {
            (RawMode::InProcess, Some(implementation), None) => {
                ProviderEndpoint::InProcess { implementation }
            }
            (RawMode::InProcess, implementation, url) => {
                if implementation.is_none() {
                    problems.add(
                        format!("{key}.implementation"),
                        "is required when mode = \"in_process\"",
                    );
                }
                if url.is_some() {
                    problems.add(format!("{key}.url"), "is only for mode = \"remote\"");
                }
                ProviderEndpoint::InProcess {
                    implementation: implementation.unwrap_or_default(),
                }
            }
            (RawMode::Remote, implementation, url) => {
                if implementation.is_some() {
                    problems.add(
                        format!("{key}.implementation"),
                        "is only for mode = \"in_process\"",
                    );
                }
                match &url {
                    None => {
                        problems.add(format!("{key}.url"), "is required when mode = \"remote\"")
                    }
                    Some(url) => check_url(url, &format!("{key}.url"), problems),
                }
                ProviderEndpoint::Remote {
                    url: url.unwrap_or_default(),
                }
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
        let timeout_ms = self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        let timeout = Duration::from_millis(timeout_ms);
        if timeout_ms == 0 || timeout > MAX_PROVIDER_TIMEOUT {
            problems.add(
                format!("{key}.timeout_ms"),
                format!("must be between 1 and {}", MAX_PROVIDER_TIMEOUT.as_millis()),
            );
        }
        ProviderConfig {
            name: self.name,
            endpoint,
            services,
            reversible,
            timeout,
        }
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
        if self.api_key.len() < MIN_API_KEY_LEN {
            problems.add(
                format!("{key}.api_key"),
                format!("must be at least {MIN_API_KEY_LEN} characters"),
            );
        }
        if self
            .api_key
            .expose()
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            problems.add(
                format!("{key}.api_key"),
                "must not contain spaces or control characters",
            );
        }
        if self.secret.len() < MIN_SECRET_LEN {
            problems.add(
                format!("{key}.secret"),
                format!("must be at least {MIN_SECRET_LEN} characters"),
            );
        }
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
        AppConfig {
            name: self.name.unwrap_or_else(|| self.id.clone()),
            id: self.id,
            api_key: self.api_key,
            secret: self.secret,
            require_signature: self.require_signature,
            services,
        }
    }
}
