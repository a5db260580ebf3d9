//! Where Skopa is, checked once. No secret lives here: Skopa acts for the
//! customer whose refresh token the app sends (`auth.type = "token"`).

use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(6);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The seed gives no lifetime ("once token is expired you'll get 401"): an
/// access token is used this long at most, and a `401` renews it sooner.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(300);
pub const DEFAULT_TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct SkopaConfig {
    pub base_url: Url,
    /// Digits after the decimal point of the accounts' currency: Skopa
    /// takes major units, the switch sends minor ones.
    pub minor_unit_digits: u32,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub token_lifetime: Duration,
    pub token_refresh_margin: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the base URL cannot be parsed, or is not http:// or https://")]
    BaseUrl,
    #[error("minor_unit_digits must be 0 to 4")]
    MinorUnitDigits,
    #[error("the {0} must be longer than zero")]
    ZeroDuration(&'static str),
    #[error("the token refresh margin must be shorter than the token's lifetime")]
    Margin,
    #[error("the HTTP client could not be built: {0}")]
    HttpClient(String),
}

impl SkopaConfig {
    pub fn new(base_url: &str) -> Result<Self, ConfigError> {
        let base_url = Url::parse(base_url)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .ok_or(ConfigError::BaseUrl)?;
        let config = SkopaConfig {
            base_url,
            minor_unit_digits: 2,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            token_refresh_margin: DEFAULT_TOKEN_REFRESH_MARGIN,
        };
        config.check()?;
        Ok(config)
    }

    pub fn check(&self) -> Result<(), ConfigError> {
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

    /// The configuration a switch's `[providers.settings]` table describes
    /// ([`Settings`]). The message names the setting, never its value.
    pub fn from_settings(settings: &serde_json::Value) -> Result<Self, String> {
        let settings: Settings = manifold_provider_sdk::compiled::read_settings(
            settings,
            "Skopa needs base_url in its settings",
        )?;
        let mut config = SkopaConfig::new(&settings.base_url).map_err(|e| e.to_string())?;
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

/// The `[providers.settings]` table of a switch running this connector
/// in-process (`implementation = "skopa"`):
///
/// ```toml
/// [providers.settings]
/// base_url = "https://sandbox.skopa.example/api"
/// # minor_unit_digits = 2
/// # timeout_ms = 6000
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub base_url: String,
    #[serde(default)]
    pub minor_unit_digits: Option<u32>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_named() {
        assert!(SkopaConfig::new("http://127.0.0.1:1").is_ok());
        assert!(matches!(
            SkopaConfig::new("ftp://x"),
            Err(ConfigError::BaseUrl)
        ));
        let unknown = SkopaConfig::from_settings(&serde_json::json!({
            "base_url": "http://127.0.0.1:1", "password": "p4ss-value"
        }))
        .unwrap_err();
        assert!(
            unknown.contains("password") && !unknown.contains("p4ss"),
            "{unknown}"
        );
        let zero = SkopaConfig::from_settings(&serde_json::json!({
            "base_url": "http://127.0.0.1:1", "timeout_ms": 0
        }))
        .unwrap_err();
        assert!(zero.contains("timeout"), "{zero}");
    }
}
