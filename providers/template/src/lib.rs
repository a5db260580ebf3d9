//! A provider to copy: one upstream bank API wrapped as a Manifold provider.
//!
//! The upstream is an imaginary but ordinary bank API, modelled on seed 004:
//! an OAuth client-credentials token that expires and is refreshed, transfers
//! made idempotent by a client-generated id, a code the bank itself sends the
//! customer (SCA) before it moves money, transfers the bank settles later
//! (`processing`), and reversals. Its wire format is described in
//! [`transformers`].
//!
//! [`TemplateConnector`] implements the SDK's
//! [`Connector`] once per flow — `start`, `complete`, `poll`, `reverse` — and
//! knows nothing of the switch protocol, OTPs or storage: the SDK's
//! [`ProviderService`] does idempotency per `(app_id, transaction_ref)`, the
//! `WaitingForOTP` conversation and its attempts and expiry, pending state in
//! sled, durability before every answer, and serving it all over HTTP.
//! `providers/README.md` is the guide that walks through this crate.
//!
//! # To make it yours
//! 1. Rewrite [`transformers`]: your upstream's JSON, and its statuses mapped
//!    to [`Step`]s in one `match` (unknown → [`Step::Processing`]).
//! 2. Adjust the four methods of `impl Connector for TemplateConnector` below
//!    to your upstream's paths; keep calling through the SDK's
//!    [`HttpUpstream`] (its error rules: connect failure →
//!    [`ConnectorError::Unavailable`], anything after the request left →
//!    [`ConnectorError::Indeterminate`]).
//! 3. Replace the OAuth section if your upstream authenticates differently,
//!    and [`config`] with what it needs.
//! 4. Rename the crate, [`NAMESPACE`] and [`DISPLAY_NAME`], and run
//!    `cargo test -p <your crate>`.
//!
//! # Layout
//! - [`config`]: [`UpstreamConfig`], the upstream's URL and credentials.
//! - [`transformers`]: the upstream's wire structs and the conversions to ours.
//! - this file: the connector — the upstream calls, one method per flow, and
//!   the access token (the SDK's [`TokenCache`]); and [`open`].
//! - `main.rs`: the `template-provider` binary (flags → [`open`] →
//!   [`microservice::run`](manifold_provider_sdk::microservice::run)).

pub mod config;
pub mod transformers;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use manifold_crypto::SecretString;
use manifold_provider::outbound::{
    read_capped, OutboundOptions, ReadError, DEFAULT_MAX_RESPONSE_BYTES,
};
use manifold_provider::{GroupCommit, Notifier, TransactRequest};
use manifold_provider_sdk::tokens::{Token, TokenCache};
use manifold_provider_sdk::upstream::{describe_send_error, Answer, BearerTokens, HttpUpstream};
use manifold_provider_sdk::{
    Confirmation, Connector, ConnectorError, Outcome, ProviderService, ServiceError,
    ServiceSettings, Step, TransactionContext,
};
use reqwest::{RequestBuilder, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

pub use config::{ConfigError, UpstreamConfig};
use transformers::{
    client_transfer_id, ConfirmTransfer, CreateTransfer, Deferred, Reversal, ReversalHandle,
    TokenResponse, Transfer, TRANSFER,
};

/// The response codes this provider answers with: the SDK's own
/// ([`manifold_provider_sdk::codes`]) and the upstream outcomes it adds.
pub mod codes {
    pub use manifold_provider_sdk::codes::*;
    pub const INSUFFICIENT_FUNDS: &str = "51";
    /// The bank declined for a reason this connector does not name.
    pub const DECLINED: &str = "05";
}

/// The prefix of this provider's sled trees (`template/pending`, …).
pub const NAMESPACE: &str = "template";

/// How the provider names itself in messages the SDK sends customers.
pub const DISPLAY_NAME: &str = "Template bank";

/// The template connector wrapped by the SDK: a complete
/// [`Provider`](manifold_provider::Provider).
pub type TemplateProvider = ProviderService<TemplateConnector>;

/// The SDK settings this provider starts from (OTP policy defaults: 6 digits,
/// 5 minutes, 3 attempts). For the bank's own code only the lifetime and the
/// attempts apply.
pub fn service_settings() -> ServiceSettings {
    ServiceSettings::new(NAMESPACE, DISPLAY_NAME)
}

/// Opens the provider in `db`; `commit` must flush that same `db`. The
/// binary and the tests both come through here.
pub fn open(
    db: &sled::Db,
    commit: GroupCommit,
    notifier: Arc<dyn Notifier>,
    connector: TemplateConnector,
    settings: ServiceSettings,
) -> Result<TemplateProvider, ServiceError> {
    ProviderService::open(db, commit, notifier, connector, settings)
}

/// The longest a token is used, whatever the upstream says.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// The upstream bank, as a [`Connector`].
pub struct TemplateConnector {
    config: UpstreamConfig,
    /// The bank's base URL and the SDK's HTTP rules.
    upstream: HttpUpstream,
    /// One token for every call (the SDK's cache: concurrent calls wait for
    /// one fetch instead of each asking).
    tokens: TokenCache<(), ConnectorError>,
}

enum Grant<'a> {
    ClientCredentials,
    Refresh(&'a SecretString),
}

impl TemplateConnector {
    pub fn new(config: UpstreamConfig) -> Result<Self, ConfigError> {
        config.check()?;
        // The project's one outbound client: no redirect (a redirected POST
        // could be replayed somewhere else; a 3xx is an answer we do not
        // understand, Indeterminate), no proxy from the environment, and
        // replies read under a size cap (`read_capped` below).
        let options = OutboundOptions {
            connect_timeout: config.connect_timeout,
            ..OutboundOptions::with_timeout(config.timeout)
        };
        let upstream =
            HttpUpstream::new(config.base_url.clone(), &options, transformers::fault_code)
                .map_err(|error| ConfigError::HttpClient(error.to_string()))?;
        Ok(TemplateConnector {
            tokens: TokenCache::new(config.token_refresh_margin),
            config,
            upstream,
        })
    }

    pub fn config(&self) -> &UpstreamConfig {
        &self.config
    }

    // ------------------------------------------------------------ OAuth

    /// A token that is not stale: the cached one, a refreshed one, or a new
    /// one from the client credentials. Any failure here is `Unavailable`:
    /// no money moves before a token is in hand.
    async fn access_token(&self) -> Result<SecretString, ConnectorError> {
        self.tokens.get(&(), |stale| self.fetch_token(stale)).await
    }

    /// A new token: by the stale one's refresh token if it has one, else
    /// (or if the upstream refuses that) from the client credentials.
    async fn fetch_token(&self, stale: Option<Token>) -> Result<Token, ConnectorError> {
        if let Some(refresh) = stale.and_then(|token| token.refresh) {
            // A refused refresh token is not fatal: the client credentials
            // get a new token.
            if let Some(token) = self.request_token(Grant::Refresh(&refresh)).await? {
                return Ok(token);
            }
        }
        self.request_token(Grant::ClientCredentials)
            .await?
            .ok_or_else(|| {
                tracing::error!("the upstream refused the OAuth client credentials");
                ConnectorError::Unavailable(
                    "the upstream refused the OAuth client credentials".into(),
                )
            })
    }

    /// Asks the token endpoint; `Ok(None)` when it refused the grant.
    async fn request_token(&self, grant: Grant<'_>) -> Result<Option<Token>, ConnectorError> {
        let unavailable = |why: String| ConnectorError::Unavailable(format!("token: {why}"));
        let form: Vec<(&str, &str)> = match &grant {
            Grant::ClientCredentials => vec![("grant_type", "client_credentials")],
            Grant::Refresh(refresh) => vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.expose()),
            ],
        };
        let response = self
            .upstream
            .http()
            .post(self.upstream.endpoint(&["oauth", "token"])?)
            .basic_auth(
                self.config.client_id.expose(),
                Some(self.config.client_secret.expose()),
            )
            .form(&form)
            .send()
            .await
            .map_err(|error| unavailable(describe_send_error(&error)))?;
        let status = response.status();
        if matches!(status, StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED) {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(unavailable(format!(
                "the token endpoint answered HTTP {status}"
            )));
        }
        let body = read_capped(response, DEFAULT_MAX_RESPONSE_BYTES)
            .await
            .map_err(|error| match error {
                ReadError::Http(error) => unavailable(describe_send_error(&error)),
                too_large => unavailable(too_large.to_string()),
            })?;
        // The body holds the token: its parse error is not quoted.
        let token: TokenResponse = serde_json::from_slice(&body)
            .map_err(|_| unavailable("the token endpoint's answer could not be read".into()))?;
        if let Some(kind) = &token.token_type {
            if !kind.eq_ignore_ascii_case("bearer") {
                return Err(unavailable(format!("token type `{kind}` is not Bearer")));
            }
        }
        tracing::info!(
            expires_in = token.expires_in,
            "upstream access token obtained"
        );
        // Capped, so an absurd `expires_in` cannot overflow the clock; a
        // token that claims to live longer is simply replaced daily.
        Ok(Some(Token {
            value: token.access_token,
            refresh: token.refresh_token,
            lifetime: Duration::from_secs(token.expires_in).min(MAX_TOKEN_LIFETIME),
        }))
    }

    // ------------------------------------------------------------ HTTP

    /// One authorized call under the SDK's HTTP rules
    /// ([`manifold_provider_sdk::upstream`]: which failures mean nothing was
    /// done, which leave the outcome unknown, a `401` retried once).
    async fn call<T: DeserializeOwned>(
        &self,
        what: &'static str,
        build: impl Fn(&SecretString) -> RequestBuilder,
    ) -> Result<Answer<T>, ConnectorError> {
        self.upstream.call(what, self, build).await
    }

    async fn get<T: DeserializeOwned>(
        &self,
        what: &'static str,
        url: Url,
    ) -> Result<Answer<T>, ConnectorError> {
        self.call(what, |token| {
            self.upstream
                .http()
                .get(url.clone())
                .bearer_auth(token.expose())
        })
        .await
    }

    /// The transfer we created for this transaction, found by our own key.
    async fn transfer_by_client_id(
        &self,
        transaction: TransactionContext<'_>,
    ) -> Result<Answer<Transfer>, ConnectorError> {
        let key = client_transfer_id(transaction.app_id, transaction.transaction_ref);
        let url = self
            .upstream
            .endpoint(&["v1", "transfers", "by-client-id", &key])?;
        self.get("look up transfer", url).await
    }

    async fn transfer_by_id(&self, transfer_id: &str) -> Result<Answer<Transfer>, ConnectorError> {
        let url = self.upstream.endpoint(&["v1", "transfers", transfer_id])?;
        self.get("get transfer", url).await
    }
}

#[async_trait]
impl BearerTokens for TemplateConnector {
    async fn token(&self) -> Result<SecretString, ConnectorError> {
        self.access_token().await
    }

    /// After a `401`: the token died early (revoked, clock skew); stale
    /// unless another call already replaced it.
    async fn refused(&self, token: &SecretString) {
        self.tokens.reject(&(), token).await;
    }
}

#[async_trait]
impl Connector for TemplateConnector {
    fn serves(&self, request_type: &str) -> bool {
        request_type == TRANSFER
    }

    /// The upstream deduplicates by `client_transfer_id`, so after a crash the
    /// SDK may start a transfer again: the bank answers the existing one.
    fn upstream_is_idempotent(&self) -> bool {
        true
    }

    /// `POST /v1/transfers`. The bank answers `requires_sca` (it sent the
    /// customer a code: `WaitingForOTP`), `processing`, or a final status.
    async fn start(&self, request: &TransactRequest) -> Result<Step, ConnectorError> {
        let body = match CreateTransfer::from_request(request, &self.config.currency) {
            Ok(body) => body,
            Err(invalid) => return Ok(Step::Done(invalid)),
        };
        let url = self.upstream.endpoint(&["v1", "transfers"])?;
        let answer = self
            .call::<Transfer>("create transfer", |token| {
                self.upstream
                    .http()
                    .post(url.clone())
                    .bearer_auth(token.expose())
                    .json(&body)
            })
            .await?;
        match answer {
            Answer::Found(transfer) => transfer.into_step(false),
            // Our key exists with another body: that transfer is ours, and
            // where it stands is the answer (never a second transfer).
            Answer::Refused {
                status: StatusCode::CONFLICT,
                ..
            } => match self
                .transfer_by_client_id(TransactionContext {
                    app_id: &request.app_id,
                    transaction_ref: &request.transaction_ref,
                    request_type: &request.request_type,
                })
                .await?
            {
                Answer::Found(transfer) => transfer.into_step(false),
                _ => Err(ConnectorError::Indeterminate(
                    "create transfer: the upstream reported a conflict but has no transfer under our key"
                        .into(),
                )),
            },
            Answer::Refused { code, .. } => Ok(Step::Done(transformers::refused(code.as_deref()))),
            Answer::NotFound => Err(ConnectorError::Unavailable(
                "create transfer: the upstream has no transfers endpoint (check the base URL)"
                    .into(),
            )),
        }
    }

    /// `POST /v1/transfers/{id}/confirm` with the code the customer typed.
    /// The bank checks it; a wrong code leaves the transfer `requires_sca`,
    /// which becomes another `WaitingForOTP` (the SDK counts the attempts).
    async fn complete(
        &self,
        _transaction: TransactionContext<'_>,
        deferred: Value,
        confirmation: Confirmation,
    ) -> Result<Step, ConnectorError> {
        let Confirmation::UpstreamCode(code) = confirmation else {
            return Err(ConnectorError::Internal(
                "this connector only waits for the bank's own code".into(),
            ));
        };
        let Some(Deferred {
            transfer_id,
            authentication_id: Some(authentication_id),
        }) = Deferred::read(deferred)?
        else {
            return Err(ConnectorError::Internal(
                "no SCA challenge is stored for this transaction".into(),
            ));
        };
        let url = self
            .upstream
            .endpoint(&["v1", "transfers", &transfer_id, "confirm"])?;
        let body = ConfirmTransfer {
            authentication_id: &authentication_id,
            code: &code,
        };
        let answer = self
            .call::<Transfer>("confirm transfer", |token| {
                self.upstream
                    .http()
                    .post(url.clone())
                    .bearer_auth(token.expose())
                    .json(&body)
            })
            .await?;
        match answer {
            Answer::Found(transfer) => transfer.into_step(true),
            // The bank refused the confirmation itself (the challenge expired,
            // was replaced…): where the transfer stands now is the answer.
            Answer::Refused { .. } => match self.transfer_by_id(&transfer_id).await? {
                Answer::Found(transfer) => transfer.into_step(true),
                _ => Err(ConnectorError::Indeterminate(format!(
                    "confirm transfer: the upstream refused the confirmation of {transfer_id} and cannot show it"
                ))),
            },
            Answer::NotFound => Err(ConnectorError::Indeterminate(format!(
                "confirm transfer: the upstream does not know transfer {transfer_id}"
            ))),
        }
    }

    /// `GET /v1/transfers/{id}`, or by our key when the SDK has no transfer
    /// id (the answer to `start` or `complete` was lost).
    async fn poll(
        &self,
        transaction: TransactionContext<'_>,
        deferred: Value,
    ) -> Result<Step, ConnectorError> {
        let answer = match Deferred::read(deferred)? {
            Some(known) => self.transfer_by_id(&known.transfer_id).await?,
            None => self.transfer_by_client_id(transaction).await?,
        };
        match answer {
            Answer::Found(transfer) => transfer.into_step(false),
            // No transfer under our key *yet*: a request that timed out may
            // still land. Absence is not a refusal, so the transaction stays
            // pending (see the guide, "Never guess").
            Answer::NotFound => Ok(Step::Processing {
                deferred: Value::Null,
            }),
            Answer::Refused { status, .. } => Err(ConnectorError::Indeterminate(format!(
                "get transfer: the upstream answered HTTP {status}"
            ))),
        }
    }

    /// `POST /v1/transfers/{id}/reversal`. The bank keeps one reversal per
    /// transfer, so asking again after an unknown outcome is safe.
    async fn reverse(
        &self,
        _transaction: TransactionContext<'_>,
        reversal: Value,
    ) -> Result<Outcome, ConnectorError> {
        let handle: ReversalHandle = serde_json::from_value(reversal).map_err(|error| {
            ConnectorError::Internal(format!("stored reversal handle: {error}"))
        })?;
        let url = self
            .upstream
            .endpoint(&["v1", "transfers", &handle.transfer_id, "reversal"])?;
        let answer = self
            .call::<Reversal>("reverse transfer", |token| {
                self.upstream
                    .http()
                    .post(url.clone())
                    .bearer_auth(token.expose())
                    .json(&json!({}))
            })
            .await?;
        match answer {
            Answer::Found(reversal) => reversal.into_outcome(),
            Answer::Refused { code, .. } => Ok(Outcome::failed(
                codes::NOT_REVERSIBLE,
                match code {
                    Some(code) => format!("The bank refused to reverse the transfer ({code})"),
                    None => "The bank refused to reverse the transfer".to_owned(),
                },
            )),
            Answer::NotFound => Ok(Outcome::failed(
                codes::NOT_REVERSIBLE,
                "The bank has no such transfer to reverse",
            )),
        }
    }
}
