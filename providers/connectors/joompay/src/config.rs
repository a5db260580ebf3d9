//! Where Joompay is, who we are to it (the TPP id and certificate), and
//! where the customer's consent comes back to, checked once.
//!
//! No customer secret lives here: a customer's tokens come from their own
//! consent and are kept sealed per app and `customer_ref` ([`crate::links`]).
//! The TPP's private key is read from its file when the clients are built
//! and kept only inside them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Tokens are renewed this long before the `expires_in` Joompay gave.
pub const DEFAULT_TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(30);
/// How long a customer has to finish Joompay's consent pages once the app
/// asked for a link: the seed's code lives "about 10 mins" after that.
pub const DEFAULT_CONSENT_TTL: Duration = Duration::from_secs(15 * 60);
pub const DEFAULT_USER_TIME_ZONE: &str = "Europe/London";

#[derive(Debug, Clone)]
pub struct JoompayConfig {
    /// The gRPC API (`https://psd2-fallback.joompay.com`).
    pub grpc_url: Url,
    /// The consent page the customer is sent to (`https://psd2-oauth.joompay.com/`).
    pub consent_url: Url,
    /// The token endpoint (`https://psd2-oauth-token.joompay.com/api/v1/oauth/token`).
    pub token_url: Url,
    /// The TPP id Joompay gave at onboarding (`x-tpp-id`, `client_id`).
    pub tpp_id: String,
    /// The TPP's certificate chain and key (PEM), presented on every call.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// CA certificates (PEM) trusted for Joompay's servers instead of the
    /// public roots; `None` trusts the public roots.
    pub ca_file: Option<PathBuf>,
    /// Where this connector serves the customer's side of the consent
    /// (`/consent/start`, `/consent/callback`).
    pub consent_listen: SocketAddr,
    /// The callback URI registered with Joompay at onboarding: the public
    /// address of `consent_listen`'s `/consent/callback`.
    pub redirect_uri: Url,
    /// The ISO time zone sent as `user-time-zone`.
    pub user_time_zone: String,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub token_refresh_margin: Duration,
    pub consent_ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} cannot be parsed, or is not an https:// URL (http:// only to this machine)")]
    Url(&'static str),
    #[error("redirect_uri must end with /consent/callback: the connector serves the consent there (a proxy may put it under a prefix)")]
    RedirectPath,
    #[error("the TPP id must be 1 to 128 visible ASCII characters")]
    TppId,
    #[error("the user time zone must look like Europe/London")]
    TimeZone,
    #[error("the {0} must be longer than zero")]
    ZeroDuration(&'static str),
    #[error("the HTTP or gRPC client could not be built: {0}")]
    Client(String),
}

impl JoompayConfig {
    pub fn check(&self) -> Result<(), ConfigError> {
        for (url, what) in [
            (&self.grpc_url, "grpc_url"),
            (&self.consent_url, "consent_url"),
            (&self.token_url, "token_url"),
            (&self.redirect_uri, "redirect_uri"),
        ] {
            check_url(url, what)?;
        }
        // The consent page is the customer's browser's business; the API and
        // the token endpoint carry tokens and must be TLS (mutual, at that).
        for (url, what) in [(&self.grpc_url, "grpc_url"), (&self.token_url, "token_url")] {
            if url.scheme() != "https" {
                return Err(ConfigError::Url(what));
            }
        }
        if !self.redirect_uri.path().ends_with("/consent/callback") {
            return Err(ConfigError::RedirectPath);
        }
        if self.tpp_id.is_empty()
            || self.tpp_id.len() > 128
            || !self.tpp_id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ConfigError::TppId);
        }
        let zone = &self.user_time_zone;
        if zone.is_empty()
            || zone.len() > 64
            || !zone
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b))
        {
            return Err(ConfigError::TimeZone);
        }
        for (duration, what) in [
            (self.timeout, "timeout"),
            (self.connect_timeout, "connect timeout"),
            (self.consent_ttl, "consent time"),
        ] {
            if duration.is_zero() {
                return Err(ConfigError::ZeroDuration(what));
            }
        }
        Ok(())
    }

    /// The configuration a switch's `[providers.settings]` table describes
    /// ([`Settings`]). The message names the setting, never its value.
    pub fn from_settings(settings: &serde_json::Value) -> Result<Self, String> {
        let settings: Settings =
            manifold_provider_sdk::compiled::read_settings(settings, "Joompay needs grpc_url, consent_url, token_url, tpp_id, cert_file, key_file, consent_listen and redirect_uri in its settings")?;
        let url = |text: &str, what: &'static str| {
            Url::parse(text.trim()).map_err(|_| ConfigError::Url(what).to_string())
        };
        let consent_listen = settings.consent_listen.trim().parse().map_err(|_| {
            "consent_listen must be an address and port, e.g. 127.0.0.1:5310".to_string()
        })?;
        let config = JoompayConfig {
            grpc_url: url(&settings.grpc_url, "grpc_url")?,
            consent_url: url(&settings.consent_url, "consent_url")?,
            token_url: url(&settings.token_url, "token_url")?,
            tpp_id: settings.tpp_id.trim().to_owned(),
            cert_file: PathBuf::from(settings.cert_file.trim()),
            key_file: PathBuf::from(settings.key_file.trim()),
            ca_file: settings.ca_file.map(|path| PathBuf::from(path.trim())),
            consent_listen,
            redirect_uri: url(&settings.redirect_uri, "redirect_uri")?,
            user_time_zone: settings
                .user_time_zone
                .unwrap_or_else(|| DEFAULT_USER_TIME_ZONE.to_owned()),
            timeout: settings
                .timeout_ms
                .map_or(DEFAULT_TIMEOUT, Duration::from_millis),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            token_refresh_margin: DEFAULT_TOKEN_REFRESH_MARGIN,
            consent_ttl: settings
                .consent_ttl_secs
                .map_or(DEFAULT_CONSENT_TTL, Duration::from_secs),
        };
        config.check().map_err(|error| error.to_string())?;
        Ok(config)
    }
}

fn check_url(url: &Url, what: &'static str) -> Result<(), ConfigError> {
    let local = matches!(
        url.host_str(),
        Some("localhost") | Some("127.0.0.1") | Some("[::1]")
    ) || url.host_str().is_some_and(|host| host.starts_with("127."));
    match url.scheme() {
        "https" if url.has_host() => Ok(()),
        "http" if local => Ok(()),
        _ => Err(ConfigError::Url(what)),
    }
}

/// The `[providers.settings]` table of a switch running this connector
/// in-process (`implementation = "joompay"`); paths are relative to the
/// directory the switch runs in:
///
/// ```toml
/// [providers.settings]
/// grpc_url = "https://psd2-fallback.joompay.com"
/// consent_url = "https://psd2-oauth.joompay.com/"
/// token_url = "https://psd2-oauth-token.joompay.com/api/v1/oauth/token"
/// tpp_id = "your-tpp-id"
/// cert_file = "secrets/joompay/tpp.pem"
/// key_file = "secrets/joompay/tpp.key"
/// # ca_file = "secrets/joompay/ca.pem"   # instead of the public roots
/// consent_listen = "127.0.0.1:5310"
/// redirect_uri = "https://pay.example.com/joompay/consent/callback"
/// # user_time_zone = "Europe/London"
/// # timeout_ms = 10000
/// # consent_ttl_secs = 900
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub grpc_url: String,
    pub consent_url: String,
    pub token_url: String,
    pub tpp_id: String,
    pub cert_file: String,
    pub key_file: String,
    #[serde(default)]
    pub ca_file: Option<String>,
    pub consent_listen: String,
    pub redirect_uri: String,
    #[serde(default)]
    pub user_time_zone: Option<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub consent_ttl_secs: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> serde_json::Value {
        json!({
            "grpc_url": "https://localhost:5300",
            "consent_url": "http://127.0.0.1:5301/",
            "token_url": "https://localhost:5302/api/v1/oauth/token",
            "tpp_id": "tpp-1",
            "cert_file": "tpp.pem",
            "key_file": "tpp.key",
            "consent_listen": "127.0.0.1:5310",
            "redirect_uri": "http://127.0.0.1:5310/consent/callback",
        })
    }

    #[test]
    fn settings_are_read_and_bad_ones_named_without_their_values() {
        let config = JoompayConfig::from_settings(&settings()).unwrap();
        assert_eq!(config.tpp_id, "tpp-1");
        assert_eq!(config.user_time_zone, "Europe/London");

        let mut plain = settings();
        plain["grpc_url"] = json!("http://localhost:5300");
        let error = JoompayConfig::from_settings(&plain).unwrap_err();
        assert!(error.contains("grpc_url"), "{error}");

        let mut remote_http = settings();
        remote_http["consent_url"] = json!("http://joompay.example/");
        let error = JoompayConfig::from_settings(&remote_http).unwrap_err();
        assert!(error.contains("consent_url"), "{error}");

        let mut unknown = settings();
        unknown["client_secret"] = json!("s3cret-value");
        let error = JoompayConfig::from_settings(&unknown).unwrap_err();
        assert!(
            error.contains("client_secret") && !error.contains("s3cret"),
            "{error}"
        );

        let mut path = settings();
        path["redirect_uri"] = json!("http://127.0.0.1:5310/callback");
        let error = JoompayConfig::from_settings(&path).unwrap_err();
        assert!(error.contains("redirect_uri"), "{error}");

        let mut listen = settings();
        listen["consent_listen"] = json!("nowhere");
        let error = JoompayConfig::from_settings(&listen).unwrap_err();
        assert!(error.contains("consent_listen"), "{error}");

        assert!(JoompayConfig::from_settings(&serde_json::Value::Null)
            .unwrap_err()
            .contains("tpp_id"));
    }
}
