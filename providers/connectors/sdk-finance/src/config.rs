//! Where the platform is, the service user's credentials, and the bank, checked once.
//!
//! The service user's password is a [`SecretString`]: redacted in `Debug`,
//! never in an error. In a switch's `[providers.settings]` it is named by
//! `password_env` or `password_file`, never written there, so that it does
//! not sit on disk in the switch's configuration.

use std::path::PathBuf;
use std::time::Duration;

use manifold_crypto::SecretString;
use reqwest::Url;
use serde::Deserialize;

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(6);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a token is used before it is asked for again. The seed gives
/// no lifetime ("if the access token is expired … the API will return an
/// HTTP 401"), so a `401` also renews it; this only keeps it from aging.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(240);
pub const DEFAULT_TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(20);

/// Everything the connector needs to reach the platform.
#[derive(Debug, Clone)]
pub struct SdkFinanceConfig {
    /// The platform's base URL; endpoints are appended to its path.
    pub base_url: Url,
    /// The service user the connector acts as.
    pub login: SecretString,
    pub password: SecretString,
    /// The bank in the platform's bank catalogue (`bankId`) that top-ups
    /// come from and withdrawals go to: the host's settlement bank.
    pub bank_id: String,
    /// Digits after the decimal point of the coins' currencies: the
    /// platform takes major units, the switch sends minor ones.
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
    #[error("the service user's {0} is empty")]
    EmptyCredential(&'static str),
    #[error("bank_id must be 1 to 64 characters of A-Z, a-z, 0-9, '-' or '_'")]
    BankId,
    #[error("minor_unit_digits must be 0 to 4")]
    MinorUnitDigits,
    #[error("the {0} must be longer than zero")]
    ZeroDuration(&'static str),
    #[error("the token refresh margin must be shorter than the token's lifetime")]
    Margin,
    #[error("the HTTP client could not be built: {0}")]
    HttpClient(String),
}

impl SdkFinanceConfig {
    pub fn new(
        base_url: &str,
        login: SecretString,
        password: SecretString,
        bank_id: &str,
    ) -> Result<Self, ConfigError> {
        let base_url = Url::parse(base_url)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .ok_or(ConfigError::BaseUrl)?;
        let config = SdkFinanceConfig {
            base_url,
            login,
            password,
            bank_id: bank_id.to_owned(),
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
        if self.login.expose().is_empty() {
            return Err(ConfigError::EmptyCredential("login"));
        }
        if self.password.expose().is_empty() {
            return Err(ConfigError::EmptyCredential("password"));
        }
        let bank_ok = (1..=64).contains(&self.bank_id.len())
            && self
                .bank_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !bank_ok {
            return Err(ConfigError::BankId);
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

    /// The configuration a switch's `[providers.settings]` table describes
    /// ([`Settings`]); `env` reads an environment variable. The message
    /// names the setting, never a value.
    pub fn from_settings(
        settings: &serde_json::Value,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let settings: Settings =
            manifold_provider_sdk::compiled::read_settings(settings, "SDK.finance needs base_url, login, password_env or password_file, and bank_id in its settings")?;
        let password = match (&settings.password_env, &settings.password_file) {
            (Some(var), None) => env(var)
                .filter(|value| !value.is_empty())
                .ok_or_else(|| format!("password_env: the environment variable {var} is not set"))?,
            (None, Some(path)) => {
                // Relative to the directory the process runs in.
                let path = std::path::PathBuf::from(path.to_string_lossy().trim());
                manifold_provider_sdk::microservice::warn_if_others_may_read(&path);
                std::fs::read_to_string(&path)
                    .map_err(|error| {
                        format!("password_file: {} cannot be read: {}", path.display(), error.kind())
                    })?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned()
            }
            _ => {
                return Err("give exactly one of password_env and password_file (a password written in the settings would sit on disk in clear)".into())
            }
        };
        let mut config = SdkFinanceConfig::new(
            &settings.base_url,
            SecretString::new(settings.login),
            SecretString::new(password),
            &settings.bank_id,
        )
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

/// The `[providers.settings]` table of a switch running this connector
/// in-process (`implementation = "sdk-finance"`):
///
/// ```toml
/// [providers.settings]
/// base_url = "https://sandbox.sdk.finance/api/v1"
/// login = "manifold-service@example.com"
/// password_env = "SDK_FINANCE_PASSWORD"   # or password_file = "/etc/manifold/sdkf-password"
/// # (a relative password_file is read from the directory the process runs in;
/// #  a file others may read is warned about)
/// bank_id = "settlement-bank"
/// # minor_unit_digits = 2
/// # timeout_ms = 6000
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub base_url: String,
    pub login: String,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    pub bank_id: String,
    #[serde(default)]
    pub minor_unit_digits: Option<u32>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(extra: serde_json::Value) -> serde_json::Value {
        let mut base = json!({
            "base_url": "http://127.0.0.1:1", "login": "svc", "bank_id": "bank-1"
        });
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        base
    }

    #[test]
    fn the_password_comes_from_the_environment_or_a_file_and_is_never_quoted() {
        let env = |var: &str| (var == "SDKF_PW").then(|| "pw-from-env".to_owned());
        let config =
            SdkFinanceConfig::from_settings(&settings(json!({"password_env": "SDKF_PW"})), env)
                .unwrap();
        assert_eq!(config.password.expose(), "pw-from-env");
        assert!(!format!("{config:?}").contains("pw-from-env"));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "pw-from-file\n").unwrap();
        let config =
            SdkFinanceConfig::from_settings(&settings(json!({"password_file": file})), |_| None)
                .unwrap();
        assert_eq!(config.password.expose(), "pw-from-file");
        let padded = format!("  {}\n", file.display());
        let config =
            SdkFinanceConfig::from_settings(&settings(json!({"password_file": padded})), |_| None)
                .unwrap();
        assert_eq!(
            config.password.expose(),
            "pw-from-file",
            "the path is trimmed"
        );

        let clear = SdkFinanceConfig::from_settings(
            &settings(json!({"password": "hunter2-clear"})),
            |_| None,
        )
        .unwrap_err();
        assert!(
            clear.contains("password") && !clear.contains("hunter2"),
            "{clear}"
        );
        let missing =
            SdkFinanceConfig::from_settings(&settings(json!({"password_env": "NOPE"})), |_| None)
                .unwrap_err();
        assert!(missing.contains("NOPE"), "{missing}");
        let neither = SdkFinanceConfig::from_settings(&settings(json!({})), |_| None).unwrap_err();
        assert!(neither.contains("exactly one"), "{neither}");
    }

    #[test]
    fn bad_settings_are_named() {
        let new = |url: &str, bank: &str| {
            SdkFinanceConfig::new(
                url,
                SecretString::from("svc"),
                SecretString::from("pw"),
                bank,
            )
        };
        assert!(new("http://127.0.0.1:1", "bank-1").is_ok());
        assert!(matches!(
            new("ftp://x", "bank-1"),
            Err(ConfigError::BaseUrl)
        ));
        assert!(matches!(
            new("http://127.0.0.1:1", "bank 1"),
            Err(ConfigError::BankId)
        ));
        assert!(matches!(
            SdkFinanceConfig::new(
                "http://127.0.0.1:1",
                SecretString::from(""),
                SecretString::from("pw"),
                "b"
            ),
            Err(ConfigError::EmptyCredential("login"))
        ));
    }
}
