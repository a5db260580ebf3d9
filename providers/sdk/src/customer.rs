//! A customer's own credential for the upstream, traded for access tokens
//! that act for that customer alone.
//!
//! Several upstreams act for a customer who gave the calling app a
//! long-lived credential (a refresh token, in Manifold's `auth.type =
//! "token"`): core-api's auth service, Skopa. The connector trades it for a
//! short-lived access token, and the same plumbing follows every time:
//! - tokens are cached per customer in a [`TokenCache`], keyed by the
//!   credential's SHA-256 so the cache's keys are not credentials;
//! - the first token is asked for before anything is sent
//!   ([`CustomerTokens::accepted`]), so a refused credential is a final
//!   `Failed` answer rather than an outage;
//! - [`CustomerTokens`] is the [`BearerTokens`] that
//!   [`HttpUpstream::call`](crate::upstream::HttpUpstream::call) renews
//!   after a `401`;
//! - [`request_token`] sends the token request and reads its answer by the
//!   usual rules (`401` refused, anything else unavailable).
//!
//! A connector implements [`CredentialExchange`]: how one credential (and
//! the stale token, for its refresh token) becomes a token.

use async_trait::async_trait;
use manifold_crypto::SecretString;
use manifold_provider::outbound::{read_capped, ReadError, DEFAULT_MAX_RESPONSE_BYTES};
use reqwest::{RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::connector::ConnectorError;
use crate::tokens::{Token, TokenCache};
use crate::upstream::{describe_send_error, BearerTokens};

/// Whose token: the SHA-256 of the customer's credential.
pub type CredentialKey = [u8; 32];

/// Why no token could be had for a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialError {
    /// The upstream refused the customer's credential: nothing can be done
    /// with it, now or on a retry.
    Refused,
    /// Nothing was done; the call may be made again.
    Unavailable(String),
}

/// How a connector trades a customer's credential for an access token.
#[async_trait]
pub trait CredentialExchange: Send + Sync {
    /// Who issues the tokens, for messages ("the auth service", "Skopa").
    fn issuer(&self) -> &str;

    /// A new token for `credential`; `stale` is the token it replaces, if
    /// any (its refresh token may be used instead of the credential).
    async fn exchange(
        &self,
        credential: &SecretString,
        stale: Option<Token>,
    ) -> Result<Token, CredentialError>;
}

/// The customers' tokens of one connector.
pub struct CustomerTokenCache {
    cache: TokenCache<CredentialKey, CredentialError>,
}

impl std::fmt::Debug for CustomerTokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.cache.fmt(f)
    }
}

impl CustomerTokenCache {
    /// Tokens are renewed `margin` before the lifetime they were issued with.
    pub fn new(margin: std::time::Duration) -> Self {
        CustomerTokenCache {
            cache: TokenCache::new(margin),
        }
    }

    /// The tokens of the customer whose credential this is.
    pub fn customer<'a, X: CredentialExchange>(
        &'a self,
        exchange: &'a X,
        credential: &'a SecretString,
    ) -> CustomerTokens<'a, X> {
        CustomerTokens {
            cache: &self.cache,
            exchange,
            key: Sha256::digest(credential.expose().as_bytes()).into(),
            credential,
        }
    }
}

/// One customer's tokens, for [`HttpUpstream::call`](crate::upstream::HttpUpstream::call).
pub struct CustomerTokens<'a, X> {
    cache: &'a TokenCache<CredentialKey, CredentialError>,
    exchange: &'a X,
    key: CredentialKey,
    credential: &'a SecretString,
}

impl<X: CredentialExchange> CustomerTokens<'_, X> {
    /// Asks for a token now: `Ok(false)` if the credential was refused (a
    /// final answer, nothing sent), `Ok(true)` if there is one to use.
    pub async fn accepted(&self) -> Result<bool, ConnectorError> {
        match self.fetch().await {
            Ok(_) => Ok(true),
            Err(CredentialError::Refused) => Ok(false),
            Err(CredentialError::Unavailable(why)) => Err(ConnectorError::Unavailable(why)),
        }
    }

    async fn fetch(&self) -> Result<SecretString, CredentialError> {
        self.cache
            .get(&self.key, |stale| {
                self.exchange.exchange(self.credential, stale)
            })
            .await
    }
}

#[async_trait]
impl<X: CredentialExchange> BearerTokens for CustomerTokens<'_, X> {
    async fn token(&self) -> Result<SecretString, ConnectorError> {
        // A credential refused now (it was accepted a moment ago) leaves
        // nothing done: unavailable, and the app may try again.
        self.fetch().await.map_err(|error| match error {
            CredentialError::Refused => ConnectorError::Unavailable(format!(
                "{} refused the customer's credential",
                self.exchange.issuer()
            )),
            CredentialError::Unavailable(why) => ConnectorError::Unavailable(why),
        })
    }

    async fn refused(&self, token: &SecretString) {
        self.cache.reject(&self.key, token).await;
    }
}

/// Sends a token request and reads its answer: `401` is the credential
/// refused, any other failure unavailable (`issuer` names who answered). The
/// answer holds a token: no parse error of it is quoted.
pub async fn request_token<T: DeserializeOwned>(
    request: RequestBuilder,
    issuer: &str,
) -> Result<T, CredentialError> {
    let unavailable = |why: String| CredentialError::Unavailable(format!("token: {why}"));
    let response = request
        .send()
        .await
        .map_err(|error| unavailable(describe_send_error(&error)))?;
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED {
        return Err(CredentialError::Refused);
    }
    if !status.is_success() {
        return Err(unavailable(format!("{issuer} answered HTTP {status}")));
    }
    let body = read_capped(response, DEFAULT_MAX_RESPONSE_BYTES)
        .await
        .map_err(|error| match error {
            ReadError::Http(error) => unavailable(describe_send_error(&error)),
            too_large => unavailable(too_large.to_string()),
        })?;
    serde_json::from_slice(&body)
        .map_err(|_| unavailable(format!("{issuer}'s answer could not be read")))
}
