//! Where the upstream is and how to authenticate to it, checked once.
//!
//! [`UpstreamConfig`] is built by `main.rs` from its flags (or by a test) and
//! handed to [`TemplateConnector::new`](crate::TemplateConnector::new);
//! nothing downstream reads flags or environment variables. The OAuth client
//! id and secret are [`SecretString`]s, so printing the configuration (its
//! `Debug`, a log line, an error) never shows them.
//!
//! **Replace** the fields with what your upstream needs (an API key instead of
//! OAuth, a merchant id, a certificate path) and keep the checks in
//! [`UpstreamConfig::new`]: a provider that starts must be able to work.

use std::time::Duration;

use manifold_crypto::SecretString;
use reqwest::Url;

/// How long one upstream call may take, by default. Keep it below the
/// switch's `timeout_ms` for this provider (10 s by default) minus a token
/// fetch, or the switch answers `Pending` before the upstream does.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(8);

/// Connecting is quick or it is not happening; a connect failure is
/// "unavailable" (nothing was sent), which the switch may retry at once.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A token is replaced this long before the upstream says it expires, so a
/// request never leaves with a token that dies on the way.
pub const DEFAULT_TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// Everything the connector needs to reach its upstream.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The upstream's base URL, `http://` or `https://`; endpoints are
    /// appended to its path (`<base>/oauth/token`, `<base>/v1/transfers`).
    pub base_url: Url,
    /// The OAuth client id the upstream issued to this provider.
    pub client_id: SecretString,
    /// The OAuth client secret; never logged, never in an error.
    pub client_secret: SecretString,
    /// ISO 4217 code of the amounts this provider moves; the switch's amounts
    /// are minor units of it.
    pub currency: String,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub token_refresh_margin: Duration,
}

/// Why a configuration cannot be used. No variant quotes a credential.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the upstream URL {0}")]
    BaseUrl(&'static str),
    #[error("the OAuth {0} is empty")]
    EmptyCredential(&'static str),
    #[error("the currency must be three capital letters (ISO 4217), e.g. NGN")]
    Currency,
    #[error("the {0} must be longer than zero")]
    ZeroDuration(&'static str),
    #[error("the HTTP client could not be built: {0}")]
    HttpClient(String),
}

impl UpstreamConfig {
    /// A checked configuration with the default currency (`NGN`), timeouts
    /// and refresh margin; change the public fields and call
    /// [`check`](Self::check) again to use others.
    pub fn new(
        base_url: &str,
        client_id: SecretString,
        client_secret: SecretString,
    ) -> Result<Self, ConfigError> {
        let base_url =
            Url::parse(base_url).map_err(|_| ConfigError::BaseUrl("cannot be parsed"))?;
        let config = UpstreamConfig {
            base_url,
            client_id,
            client_secret,
            currency: "NGN".into(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            token_refresh_margin: DEFAULT_TOKEN_REFRESH_MARGIN,
        };
        config.check()?;
        Ok(config)
    }

    /// Checks every field; [`TemplateConnector::new`](crate::TemplateConnector::new)
    /// calls it too, so a hand-built configuration cannot skip it.
    pub fn check(&self) -> Result<(), ConfigError> {
        if !matches!(self.base_url.scheme(), "http" | "https") {
            return Err(ConfigError::BaseUrl("must start with http:// or https://"));
        }
        if self.base_url.host_str().is_none() {
            return Err(ConfigError::BaseUrl("has no host"));
        }
        if self.base_url.query().is_some() || self.base_url.fragment().is_some() {
            return Err(ConfigError::BaseUrl(
                "must not have a query or a fragment: endpoints are appended to its path",
            ));
        }
        // Client credentials and the customer's account cross this hop: in
        // clear only to this machine (a sandbox or a test double).
        if manifold_provider::outbound::check_transport(&self.base_url, false).is_err() {
            return Err(ConfigError::BaseUrl(
                "must be https:// unless the upstream is on this machine",
            ));
        }
        if self.client_id.expose().trim().is_empty() {
            return Err(ConfigError::EmptyCredential("client id"));
        }
        if self.client_secret.expose().trim().is_empty() {
            return Err(ConfigError::EmptyCredential("client secret"));
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(ConfigError::Currency);
        }
        for (name, value) in [
            ("upstream timeout", self.timeout),
            ("connect timeout", self.connect_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> Result<UpstreamConfig, ConfigError> {
        UpstreamConfig::new(
            url,
            SecretString::from("template-client"),
            SecretString::from("s3cr3t-client-secret"),
        )
    }

    #[test]
    fn base_urls_are_checked() {
        fn check(url: &str, ok: bool) {
            assert_eq!(config(url).is_ok(), ok, "{url}");
        }
        check("http://127.0.0.1:9300", true);
        check("http://bank.example.com/api/", false);
        check("https://bank.example.com/api/", true);
        check("ftp://bank.example.com", false);
        check("bank.example.com", false);
        check("https://bank.example.com/api?x=1", false);
        check("https://bank.example.com/#top", false);
        check("", false);
    }

    #[test]
    fn credentials_and_currency_are_checked() {
        let empty = UpstreamConfig::new(
            "https://bank.example.com",
            SecretString::from("id"),
            SecretString::from("  "),
        );
        assert!(matches!(
            empty,
            Err(ConfigError::EmptyCredential("client secret"))
        ));
        let mut config = config("https://bank.example.com").unwrap();
        config.currency = "ngn".into();
        assert!(matches!(config.check(), Err(ConfigError::Currency)));
        config.currency = "USD".into();
        config.timeout = Duration::ZERO;
        assert!(matches!(config.check(), Err(ConfigError::ZeroDuration(_))));
    }

    #[test]
    fn debug_never_shows_the_credentials() {
        let shown = format!("{:?}", config("https://bank.example.com").unwrap());
        assert!(!shown.contains("s3cr3t-client-secret"), "{shown}");
        assert!(!shown.contains("template-client"), "{shown}");
        assert!(shown.contains("bank.example.com"), "{shown}");
    }
}
