//! Joompay's token endpoint, over mutual TLS: a consent's code traded for
//! the customer's tokens, and a refresh token for a new access token.
//!
//! Exactly the seed's two requests (`grant_type=authorization_code` with the
//! `OAuthFlow` cookie, `grant_type=refresh_token`), form-encoded, with the
//! TPP's certificate. The tokens are [`SecretString`]s from the moment they
//! are read.

use std::time::Duration;

use manifold_crypto::SecretString;
use manifold_provider::outbound::{
    self, read_capped, ClientIdentity, OutboundOptions, ReadError, DEFAULT_MAX_RESPONSE_BYTES,
};
use manifold_provider_sdk::upstream::describe_send_error;
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use crate::config::{ConfigError, JoompayConfig};

/// What the token endpoint answered.
#[derive(Debug, Clone)]
pub struct Granted {
    pub access_token: SecretString,
    /// Absent when Joompay keeps the one it issued before.
    pub refresh_token: Option<SecretString>,
    pub expires_in: Duration,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum OAuthError {
    /// The endpoint refused the grant (`invalid_grant`, `invalid_client`):
    /// sending it again will not help.
    #[error("Joompay's token endpoint refused the grant: {0}")]
    Refused(String),
    #[error("Joompay's token endpoint is unavailable: {0}")]
    Unavailable(String),
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: SecretString,
    #[serde(default)]
    refresh_token: Option<SecretString>,
    expires_in: u64,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
}

#[derive(Clone)]
pub struct OAuthClient {
    http: reqwest::Client,
    token_url: Url,
    tpp_id: String,
    redirect_uri: String,
}

impl std::fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClient")
            .field("token_url", &self.token_url.as_str())
            .finish_non_exhaustive()
    }
}

impl OAuthClient {
    pub fn new(config: &JoompayConfig) -> Result<OAuthClient, ConfigError> {
        let options = OutboundOptions {
            connect_timeout: config.connect_timeout,
            identity: Some(ClientIdentity {
                cert_file: config.cert_file.clone(),
                key_file: config.key_file.clone(),
            }),
            ..OutboundOptions::with_timeout(config.timeout).ca_file(config.ca_file.as_deref())
        };
        let http =
            outbound::client(&options).map_err(|error| ConfigError::Client(error.to_string()))?;
        Ok(OAuthClient {
            http,
            token_url: config.token_url.clone(),
            tpp_id: config.tpp_id.clone(),
            redirect_uri: config.redirect_uri.to_string(),
        })
    }

    /// The code Joompay's callback brought, for the customer's tokens.
    pub async fn exchange(&self, code: &SecretString) -> Result<Granted, OAuthError> {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("client_id", &self.tpp_id)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("code", code.expose())
            .finish();
        // The seed's request carries the code in the `OAuthFlow` cookie too.
        let cookie = format!("OAuthFlow={}", code.expose());
        self.grant(SecretString::from(body), Some(SecretString::from(cookie)))
            .await
    }

    /// A new access token for the customer whose refresh token this is.
    pub async fn refresh(&self, refresh_token: &SecretString) -> Result<Granted, OAuthError> {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "refresh_token")
            .append_pair("client_id", &self.tpp_id)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("refresh_token", refresh_token.expose())
            .finish();
        self.grant(SecretString::from(body), None).await
    }

    async fn grant(
        &self,
        body: SecretString,
        cookie: Option<SecretString>,
    ) -> Result<Granted, OAuthError> {
        let unavailable = |why: String| OAuthError::Unavailable(why);
        let mut request = self
            .http
            .post(self.token_url.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body.expose().to_owned());
        if let Some(cookie) = &cookie {
            request = request.header(reqwest::header::COOKIE, cookie.expose());
        }
        let response = request
            .send()
            .await
            .map_err(|error| unavailable(describe_send_error(&error)))?;
        let status = response.status();
        let body = read_capped(response, DEFAULT_MAX_RESPONSE_BYTES)
            .await
            .map_err(|error| match error {
                ReadError::Http(error) => unavailable(describe_send_error(&error)),
                too_large => unavailable(too_large.to_string()),
            })?;
        if status == StatusCode::BAD_REQUEST || status == StatusCode::UNAUTHORIZED {
            let code = serde_json::from_slice::<ErrorAnswer>(&body)
                .map(|answer| answer.error)
                .ok()
                .filter(|code| {
                    code.len() <= 64 && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                })
                .unwrap_or_else(|| format!("http_{}", status.as_u16()));
            return Err(OAuthError::Refused(code));
        }
        if !status.is_success() {
            return Err(unavailable(format!("it answered HTTP {status}")));
        }
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|_| unavailable("its answer could not be read".into()))?;
        if answer.access_token.is_empty() || answer.expires_in == 0 {
            return Err(unavailable("its answer held no usable token".into()));
        }
        Ok(Granted {
            access_token: answer.access_token,
            refresh_token: answer.refresh_token.filter(|token| !token.is_empty()),
            expires_in: Duration::from_secs(answer.expires_in),
        })
    }
}
