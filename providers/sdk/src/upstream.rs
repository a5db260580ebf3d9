//! [`HttpUpstream`]: the rules every connector to a REST upstream follows,
//! written once.
//!
//! Whether money may have moved is decided by how a call failed, so the
//! rules are the same for every upstream and easy to get subtly wrong:
//! - could not connect → [`ConnectorError::Unavailable`]: nothing was sent;
//! - `429`, `503` → `Unavailable`: the upstream says it did not process it;
//! - a timeout or a broken connection after sending, another `5xx`, a `3xx`
//!   (no redirect is followed: a redirected `POST` could be replayed
//!   elsewhere), an unreadable or oversized `2xx` →
//!   [`ConnectorError::Indeterminate`]: it may have acted, so the SDK keeps
//!   the transaction `Pending` and polls, never starts it again;
//! - `401` → the bearer token is refused before anything was done: the call
//!   is retried once with a fresh token ([`BearerTokens::refused`] first),
//!   and a second `401` is `Unavailable`;
//! - `404` → [`Answer::NotFound`]; `400`, `403`, `409`, `422`, `428` →
//!   [`Answer::Refused`] with the upstream's own code and its JSON body: each
//!   caller decides what those mean for its flow (a `428 Precondition
//!   Required` is how some upstreams ask for a second factor first).
//!
//! Replies are read under a size cap, and error texts never quote reqwest's
//! own (it carries the URL, which holds our transaction references).

use async_trait::async_trait;
use manifold_crypto::SecretString;
use manifold_provider::outbound::{
    self, read_capped, OutboundError, OutboundOptions, ReadError, DEFAULT_MAX_RESPONSE_BYTES,
};
use reqwest::{RequestBuilder, StatusCode, Url};
use serde::de::DeserializeOwned;

use crate::ConnectorError;

/// What an upstream call answered, when it answered at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    Found(T),
    NotFound,
    /// The upstream refused the request and did nothing (`400`, `403`,
    /// `409`, `422`, `428`), with its own error code when its body carried
    /// one, and the body itself when it is JSON (what a `428` asks for).
    Refused {
        status: StatusCode,
        code: Option<String>,
        body: Option<serde_json::Value>,
    },
}

/// Where a connector's bearer tokens come from: usually a
/// [`TokenCache`](crate::tokens::TokenCache) and the upstream's token
/// endpoint.
#[async_trait]
pub trait BearerTokens: Send + Sync {
    /// A token to send now. A failure means nothing was sent:
    /// [`ConnectorError::Unavailable`].
    async fn token(&self) -> Result<SecretString, ConnectorError>;

    /// The upstream answered `401` to `token`: it is not to be used again.
    async fn refused(&self, token: &SecretString);
}

/// One REST upstream: its base URL, the project's outbound client, and how
/// its error bodies name their codes.
pub struct HttpUpstream {
    base_url: Url,
    http: reqwest::Client,
    fault_code: fn(&[u8]) -> Option<String>,
}

impl HttpUpstream {
    /// `fault_code` reads the upstream's error code out of a refusal's body
    /// (`None` when it names none).
    pub fn new(
        base_url: Url,
        options: &OutboundOptions,
        fault_code: fn(&[u8]) -> Option<String>,
    ) -> Result<Self, OutboundError> {
        Ok(HttpUpstream {
            base_url,
            http: outbound::client(options)?,
            fault_code,
        })
    }

    /// The client, to build requests with.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `<base URL>/<segments…>`, each segment percent-encoded (a
    /// `transaction_ref` may hold `/` or `?`), the base URL's own path kept.
    pub fn endpoint(&self, segments: &[&str]) -> Result<Url, ConnectorError> {
        let mut url = self.base_url.clone();
        url.path_segments_mut()
            .map_err(|()| ConnectorError::Internal("the upstream URL cannot take a path".into()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// Sends the request `build` makes with a bearer token from `tokens`,
    /// and sorts the answer by the rules of this module. `what` names the
    /// call in error messages.
    pub async fn call<T: DeserializeOwned>(
        &self,
        what: &'static str,
        tokens: &dyn BearerTokens,
        build: impl Fn(&SecretString) -> RequestBuilder,
    ) -> Result<Answer<T>, ConnectorError> {
        let mut token = tokens.token().await?;
        let mut retried = false;
        loop {
            let response = build(&token)
                .send()
                .await
                .map_err(|error| sent_error(what, &error))?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !retried {
                tracing::warn!(
                    what,
                    "the upstream refused the access token; fetching a new one"
                );
                tokens.refused(&token).await;
                token = tokens.token().await?;
                retried = true;
                continue;
            }
            // After the request was sent, an unreadable or oversized answer
            // leaves the outcome unknown.
            let body = read_capped(response, DEFAULT_MAX_RESPONSE_BYTES)
                .await
                .map_err(|error| match error {
                    ReadError::Http(error) => sent_error(what, &error),
                    too_large => ConnectorError::Indeterminate(format!("{what}: {too_large}")),
                })?;
            return match status {
                status if status.is_success() => serde_json::from_slice(&body)
                    .map(Answer::Found)
                    // serde's message may quote the body: not repeated.
                    .map_err(|_| {
                        ConnectorError::Indeterminate(format!(
                            "{what}: the upstream's answer could not be read"
                        ))
                    }),
                StatusCode::NOT_FOUND => Ok(Answer::NotFound),
                StatusCode::BAD_REQUEST
                | StatusCode::FORBIDDEN
                | StatusCode::CONFLICT
                | StatusCode::UNPROCESSABLE_ENTITY
                | StatusCode::PRECONDITION_REQUIRED => Ok(Answer::Refused {
                    status,
                    code: (self.fault_code)(&body),
                    body: serde_json::from_slice(&body).ok(),
                }),
                StatusCode::UNAUTHORIZED => Err(ConnectorError::Unavailable(format!(
                    "{what}: the upstream refused a fresh access token"
                ))),
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                    Err(ConnectorError::Unavailable(format!(
                        "{what}: the upstream is not taking requests (HTTP {status})"
                    )))
                }
                status => Err(ConnectorError::Indeterminate(format!(
                    "{what}: the upstream answered HTTP {status}"
                ))),
            };
        }
    }
}

/// Whether `code` is a plain machine code (1 to 64 ASCII letters, digits
/// or `_`) that may be relayed to the app as `provider_response_code`:
/// free text might quote what was sent (an account number).
pub fn is_plain_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The code a JSON error body names in its top-level string `field`
/// (`{"code": "insufficient_funds"}`), if it is a plain one
/// ([`is_plain_code`]); the body's other members, free text among them,
/// are never read.
pub fn error_code_in(body: &[u8], field: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value
        .get(field)?
        .as_str()
        .filter(|code| is_plain_code(code))
        .map(str::to_owned)
}

/// `minor` units as a decimal string of major units with `digits` places
/// (`1234`, 2 → `"12.34"`; `100`, 0 → `"100"`): what upstreams that take
/// major units are sent, written without floats.
pub fn major_units(minor: u64, digits: u32) -> String {
    if digits == 0 {
        return minor.to_string();
    }
    let scale = 10u64.pow(digits);
    format!(
        "{}.{:0width$}",
        minor / scale,
        minor % scale,
        width = digits as usize
    )
}

/// A failed send: `Unavailable` if it never connected (nothing was sent),
/// else `Indeterminate`.
pub fn sent_error(what: &str, error: &reqwest::Error) -> ConnectorError {
    let why = describe_send_error(error);
    if error.is_connect() {
        ConnectorError::Unavailable(format!("{what}: {why}"))
    } else {
        ConnectorError::Indeterminate(format!("{what}: {why}"))
    }
}

/// What went wrong on the way, in our words: reqwest's own text carries the
/// URL, which holds our transaction references.
pub fn describe_send_error(error: &reqwest::Error) -> String {
    if error.is_connect() {
        "could not connect to the upstream".into()
    } else if error.is_timeout() {
        "the upstream did not answer in time".into()
    } else {
        "the connection failed after the request was sent".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plain_code_is_taken_from_an_error_body() {
        let code = |body: &str, field: &str| error_code_in(body.as_bytes(), field);
        assert_eq!(
            code(
                r#"{"code": "insufficient_funds", "message": "acct 0123456789"}"#,
                "code"
            ),
            Some("insufficient_funds".into())
        );
        assert_eq!(
            code(r#"{"error": "invalid_token"}"#, "error"),
            Some("invalid_token".into())
        );
        assert_eq!(
            code(r#"{"code": "no such account 0123456789"}"#, "code"),
            None
        );
        assert_eq!(code(r#"{"code": ""}"#, "code"), None);
        assert_eq!(code(r#"{"code": 42}"#, "code"), None);
        assert_eq!(code("<html>", "code"), None);
        assert_eq!(
            code(&format!(r#"{{"code": "{}"}}"#, "x".repeat(65)), "code"),
            None
        );
    }

    #[test]
    fn endpoints_keep_the_base_path_and_encode_references() {
        fn check(base: &str, segments: &[&str], expected: &str) {
            let upstream = HttpUpstream::new(
                Url::parse(base).unwrap(),
                &OutboundOptions::with_timeout(std::time::Duration::from_secs(1)),
                |_| None,
            )
            .unwrap();
            assert_eq!(upstream.endpoint(segments).unwrap().as_str(), expected);
        }
        check(
            "http://127.0.0.1:9300",
            &["v1", "transfers"],
            "http://127.0.0.1:9300/v1/transfers",
        );
        check(
            "https://bank.example.com/api/",
            &["oauth", "token"],
            "https://bank.example.com/api/oauth/token",
        );
        check(
            "https://bank.example.com/api",
            &["v1", "transfers", "by-client-id", "app:a/b?c#d e"],
            "https://bank.example.com/api/v1/transfers/by-client-id/app:a%2Fb%3Fc%23d%20e",
        );
    }
}
