//! Where core-api and its auth service are, and the currency, checked once.
//!
//! No secret lives here: core-api acts for the customer whose credential the
//! app sends (`auth.type = "token"`), so the provider holds none of its own.

use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

/// How long one upstream call may take, by default: below the switch's
/// default `timeout_ms` (10 s) less a token request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(6);

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The seed: "Authentication tokens … are valid for 30 seconds."
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(30);

/// A token is replaced this long before its 30 seconds are up, so that a
/// charge never leaves with a token that dies on the way.
pub const DEFAULT_TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(5);

/// Everything the connector needs to reach core-api.
#[derive(Debug, Clone)]
pub struct CoreApiConfig {
    /// The auth service's base URL (`<auth>/token`).
    pub auth_url: Url,
    /// core-api's base URL (`<core>/transaction`).
    pub core_url: Url,
    /// ISO 4217 code of the charges; the switch's amounts are minor units of it.
    pub currency: String,
    /// Digits after the decimal point in `currency` (2 for USD, 0 for JPY):
    /// core-api takes major units.
    pub minor_unit_digits: u32,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub token_lifetime: Duration,
    pub token_refresh_margin: Duration,
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the {0} URL cannot be parsed, or is not http:// or https://")]
    Url(&'static str),
    #[error("the currency must be three capital letters (ISO 4217), e.g. USD")]
    Currency,
    #[error("minor_unit_digits must be 0 to 4")]
    MinorUnitDigits,
    #[error("the {0} must be longer than zero")]
    ZeroDuration(&'static str),
    #[error("the token refresh margin must be shorter than the token's lifetime")]
    Margin,
    #[error("the HTTP client could not be built: {0}")]
    HttpClient(String),
}

impl CoreApiConfig {
    /// A checked configuration with the defaults: 2 minor-unit digits, the
    /// seed's 30-second tokens renewed 5 seconds early, 6 s per call.
    pub fn new(auth_url: &str, core_url: &str, currency: &str) -> Result<Self, ConfigError> {
        let url = |text: &str, what| {
            Url::parse(text)
                .ok()
                .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
                .ok_or(ConfigError::Url(what))
        };
        let config = CoreApiConfig {
            auth_url: url(auth_url, "auth service")?,
            core_url: url(core_url, "core-api")?,
            currency: currency.to_owned(),
            minor_unit_digits: 2,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            token_lifetime: TOKEN_LIFETIME,
            token_refresh_margin: DEFAULT_TOKEN_REFRESH_MARGIN,
        };
        config.check()?;
        Ok(config)
    }

    pub fn check(&self) -> Result<(), ConfigError> {
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(ConfigError::Currency);
        }
        if self.minor_unit_digits > 4 {
            return Err(ConfigError::MinorUnitDigits);
        }
        for (duration, what) in [
            (self.timeout, "timeout"),
            (self.connect_timeout, "connect timeout"),
            (self.token_lifetime, "token lifetime"),
        ] {
            if duration.is_zero() {
                return Err(ConfigError::ZeroDuration(what));
            }
        }
        if self.token_refresh_margin >= self.token_lifetime {
            return Err(ConfigError::Margin);
        }
        Ok(())
    }
}

/// The `[providers.settings]` table of a switch running this connector
/// in-process (`implementation = "core-api"`):
///
/// ```toml
/// [providers.settings]
/// auth_url = "http://127.0.0.1:5001"
/// core_url = "http://127.0.0.1:5000"
/// currency = "USD"
/// # minor_unit_digits = 2
/// # timeout_ms = 6000
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub auth_url: String,
    pub core_url: String,
    pub currency: String,
    #[serde(default)]
    pub minor_unit_digits: Option<u32>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

impl CoreApiConfig {
    /// The configuration a switch's `[providers.settings]` table describes.
    /// The message names the setting, never its value.
    pub fn from_settings(settings: &serde_json::Value) -> Result<Self, String> {
        let settings: Settings = manifold_provider_sdk::compiled::read_settings(
            settings,
            "core-api needs auth_url, core_url and currency in its settings",
        )?;
        let mut config =
            CoreApiConfig::new(&settings.auth_url, &settings.core_url, &settings.currency)
                .map_err(|error| error.to_string())?;
        if let Some(digits) = settings.minor_unit_digits {
            config.minor_unit_digits = digits;
        }
        if let Some(timeout) = settings.timeout_ms {
            config.timeout = Duration::from_millis(timeout);
        }
        config.check().map_err(|error| error.to_string())?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_named() {
        let ok = CoreApiConfig::new("http://127.0.0.1:1", "http://127.0.0.1:2", "USD").unwrap();
        assert_eq!(ok.token_lifetime, Duration::from_secs(30));
        assert!(matches!(
            CoreApiConfig::new("ftp://x", "http://127.0.0.1:2", "USD"),
            Err(ConfigError::Url("auth service"))
        ));
        assert!(matches!(
            CoreApiConfig::new("http://127.0.0.1:1", "not a url", "USD"),
            Err(ConfigError::Url("core-api"))
        ));
        assert!(matches!(
            CoreApiConfig::new("http://127.0.0.1:1", "http://127.0.0.1:2", "usd"),
            Err(ConfigError::Currency)
        ));
        let from = |value: serde_json::Value| CoreApiConfig::from_settings(&value);
        let good = from(serde_json::json!({
            "auth_url": "http://127.0.0.1:1", "core_url": "http://127.0.0.1:2",
            "currency": "GBP", "timeout_ms": 2500
        }))
        .unwrap();
        assert_eq!(
            (good.currency.as_str(), good.timeout),
            ("GBP", Duration::from_millis(2500))
        );
        assert!(from(serde_json::Value::Null)
            .unwrap_err()
            .contains("auth_url"));
        let unknown = from(serde_json::json!({
            "auth_url": "http://127.0.0.1:1", "core_url": "http://127.0.0.1:2",
            "currency": "GBP", "client_secret": "s3cr3t-value"
        }))
        .unwrap_err();
        assert!(
            unknown.contains("client_secret") && !unknown.contains("s3cr3t"),
            "{unknown}"
        );
        let zero = from(serde_json::json!({
            "auth_url": "http://127.0.0.1:1", "core_url": "http://127.0.0.1:2",
            "currency": "GBP", "timeout_ms": 0
        }))
        .unwrap_err();
        assert!(zero.contains("timeout"), "{zero}");
        let mut margin = ok.clone();
        margin.token_refresh_margin = Duration::from_secs(30);
        assert!(matches!(margin.check(), Err(ConfigError::Margin)));
    }
}
