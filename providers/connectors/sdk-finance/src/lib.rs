//! Connector for seed 001, SDK.finance: a wallet platform whose top-ups and
//! withdrawals are requests its operator accepts or declines later, and
//! whose transfers run from saved templates.
//!
//! The worked example of an upstream that decides **later**, and of a
//! **service user**:
//! - the connector acts as one service user of the platform (`POST
//!   /authorization`), whose token the SDK's [`TokenCache`] holds for every
//!   call and renews when it ages or the platform answers `401`; the app
//!   names the customer's wallet ("coin") with `auth.type = "wallet"` and the
//!   coin serial;
//! - `collect` (bank top-up) and `disburse` (bank withdrawal) are calculated
//!   (the commission), then created: `Pending` until the platform's operator
//!   accepts (`Successful`) or declines (`Failed`), which `poll` learns when
//!   the app queries;
//! - `transfer_funds` calculates and executes a transfer template
//!   (`details.template_id`) and completes in its call;
//! - the platform takes no idempotency key, so the SDK marks every request
//!   durably before it is sent; a request whose answer was lost is found
//!   again by our `externalId` and continued, never created twice.
//!
//! # Layout
//! - [`config`]: [`SdkFinanceConfig`], the platform, the service user, the bank.
//! - [`transformers`]: the wire structs and the status mapping.
//! - this file: the connector and [`open`], [`compiled`].
//! - `main.rs`: the `sdk-finance-provider` binary.

pub mod config;
pub mod transformers;

use std::sync::Arc;

use async_trait::async_trait;
use manifold_crypto::{SecretString, SourceDetails};
use manifold_provider::outbound::{
    read_capped, OutboundOptions, ReadError, DEFAULT_MAX_RESPONSE_BYTES,
};
use manifold_provider::{Notifier, TransactRequest};
use manifold_provider_sdk::compiled::SdkProvider;
use manifold_provider_sdk::tokens::{Token, TokenCache};
use manifold_provider_sdk::upstream::{describe_send_error, Answer, BearerTokens, HttpUpstream};
use manifold_provider_sdk::{
    Confirmation, Connector, ConnectorError, Outcome, PendingNote, ProviderService, ServiceError,
    ServiceSettings, StateDurability, Step, TransactionContext,
};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

pub use config::{ConfigError, SdkFinanceConfig};
use transformers::{
    codes, external_id, Calculate, CoinRef, Commission, CreateRequest, Kind, Records, RequestView,
    TokenRequest, TokenResponse, TransferDone, COLLECT, DISBURSE, TRANSFER_FUNDS,
};

pub const NAMESPACE: &str = "sdk-finance";
pub const DISPLAY_NAME: &str = "SDK.finance";

pub type SdkFinanceProvider = ProviderService<SdkFinanceConnector>;

pub fn service_settings() -> ServiceSettings {
    ServiceSettings::new(NAMESPACE, DISPLAY_NAME)
}

pub fn open(
    db: &sled::Db,
    durability: impl Into<StateDurability>,
    notifier: Arc<dyn Notifier>,
    connector: SdkFinanceConnector,
    settings: ServiceSettings,
) -> Result<SdkFinanceProvider, ServiceError> {
    ProviderService::open(db, durability, notifier, connector, settings)
}

/// The connector as the switch runs it in-process (`implementation =
/// "sdk-finance"`), configured by the route's `[providers.settings]`
/// ([`config::Settings`]; the password from the environment or a file).
pub fn compiled() -> SdkProvider<SdkFinanceConnector> {
    // Run at start-up and again for each storage generation (a reopen after
    // a disk error): the password is read from its file or variable each
    // time, on purpose, so a password rotated there since start-up is the
    // one a reopened switch uses.
    SdkProvider::new(|settings| {
        let config = SdkFinanceConfig::from_settings(settings, |var| std::env::var(var).ok())?;
        let connector = SdkFinanceConnector::new(config).map_err(|error| error.to_string())?;
        Ok((connector, service_settings()))
    })
}

/// SDK.finance, as a [`Connector`].
pub struct SdkFinanceConnector {
    config: SdkFinanceConfig,
    upstream: HttpUpstream,
    /// The service user's one token.
    tokens: TokenCache<(), ConnectorError>,
}

impl SdkFinanceConnector {
    pub fn new(config: SdkFinanceConfig) -> Result<Self, ConfigError> {
        config.check()?;
        let options = OutboundOptions {
            connect_timeout: config.connect_timeout,
            ..OutboundOptions::with_timeout(config.timeout)
        };
        let upstream =
            HttpUpstream::new(config.base_url.clone(), &options, transformers::fault_code)
                .map_err(|error| ConfigError::HttpClient(error.to_string()))?;
        Ok(SdkFinanceConnector {
            tokens: TokenCache::new(config.token_refresh_margin),
            config,
            upstream,
        })
    }

    /// Asks for a new token: "simply request a new access token".
    async fn fetch_token(&self) -> Result<Token, ConnectorError> {
        let unavailable = |why: String| ConnectorError::Unavailable(format!("token: {why}"));
        let response = self
            .upstream
            .http()
            .post(self.upstream.endpoint(&["authorization"])?)
            .json(&TokenRequest {
                login: self.config.login.expose(),
                password: self.config.password.expose(),
            })
            .send()
            .await
            .map_err(|error| unavailable(describe_send_error(&error)))?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            tracing::error!("SDK.finance refused the service user's credentials");
            return Err(unavailable(
                "the platform refused the service user's credentials".into(),
            ));
        }
        if !status.is_success() {
            return Err(unavailable(format!("the platform answered HTTP {status}")));
        }
        let body = read_capped(response, DEFAULT_MAX_RESPONSE_BYTES)
            .await
            .map_err(|error| match error {
                ReadError::Http(error) => unavailable(describe_send_error(&error)),
                too_large => unavailable(too_large.to_string()),
            })?;
        // The body holds the token: its parse error is not quoted.
        let token: TokenResponse = serde_json::from_slice(&body)
            .map_err(|_| unavailable("the platform's answer could not be read".into()))?;
        Ok(Token {
            value: token.authorization_token.token,
            refresh: None,
            lifetime: self.config.token_lifetime,
        })
    }

    /// One authorized call with a JSON body (or none), under the SDK's HTTP rules.
    async fn call<T: DeserializeOwned>(
        &self,
        what: &'static str,
        method: Method,
        url: Url,
        body: Option<Value>,
    ) -> Result<Answer<T>, ConnectorError> {
        self.upstream
            .call(what, self, |token| {
                let request = self
                    .upstream
                    .http()
                    .request(method.clone(), url.clone())
                    .bearer_auth(token.expose());
                match &body {
                    Some(body) => request.json(body),
                    None => request,
                }
            })
            .await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        what: &'static str,
        segments: &[&str],
        body: &impl Serialize,
    ) -> Result<Answer<T>, ConnectorError> {
        let url = self.upstream.endpoint(segments)?;
        let body = serde_json::to_value(body)
            .map_err(|_| ConnectorError::Internal("a request body could not be written".into()))?;
        self.call(what, Method::POST, url, Some(body)).await
    }

    fn amount(&self, request: &TransactRequest) -> String {
        transformers::major_units(request.transaction.amount, self.config.minor_unit_digits)
    }

    /// A top-up or withdrawal: check the coin, calculate, create.
    async fn bank_request(
        &self,
        kind: Kind,
        request: &TransactRequest,
        coin: &str,
    ) -> Result<Step, ConnectorError> {
        let what = match kind {
            Kind::TopUp => "top-up",
            Kind::Withdrawal => "withdrawal",
        };
        match self
            .post::<Value>(
                "coin",
                &["coins", "validate"],
                &CoinRef { coin_serial: coin },
            )
            .await?
        {
            Answer::Found(_) => {}
            Answer::NotFound => {
                return Ok(Step::Done(transformers::refused(
                    what,
                    Some("COIN_NOT_FOUND"),
                )))
            }
            Answer::Refused { code, .. } => {
                return Ok(Step::Done(transformers::refused(what, code.as_deref())))
            }
        }
        let amount = self.amount(request);
        match self
            .post::<Commission>(
                "commission",
                &[kind.path(), "calculate"],
                &Calculate {
                    coin_serial: coin,
                    amount: &amount,
                },
            )
            .await?
        {
            Answer::Found(_) => {}
            Answer::NotFound => {
                return Err(ConnectorError::Unavailable(
                    "the platform has no commission endpoint at the configured URL".into(),
                ))
            }
            Answer::Refused { code, .. } => {
                return Ok(Step::Done(transformers::refused(what, code.as_deref())))
            }
        }
        let reference = external_id(&request.app_id, &request.transaction_ref);
        let created = self
            .post::<RequestView>(
                what,
                kind.create_path(),
                &CreateRequest {
                    coin_serial: coin,
                    amount: &amount,
                    bank_id: &self.config.bank_id,
                    external_id: &reference,
                },
            )
            .await?;
        Ok(match created {
            Answer::Found(view) => {
                tracing::info!(
                    transaction_ref = %request.transaction_ref,
                    request_identifier = %view.request_identifier,
                    "SDK.finance created the {what} request"
                );
                transformers::request_step(kind, view)
            }
            Answer::NotFound => Step::Done(transformers::refused(what, Some("COIN_NOT_FOUND"))),
            Answer::Refused { code, .. } => {
                Step::Done(transformers::refused(what, code.as_deref()))
            }
        })
    }

    async fn transfer(
        &self,
        request: &TransactRequest,
        coin: &str,
    ) -> Result<Step, ConnectorError> {
        let Some(template) = request
            .transaction
            .details
            .as_ref()
            .and_then(|details| details.get("template_id"))
            .and_then(Value::as_str)
            // It becomes a path segment of the platform's URL: nothing that
            // could reach another endpoint (`/`, `..`, `?`, `%`).
            .filter(|id| {
                !id.is_empty()
                    && id.len() <= 128
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
        else {
            return Ok(Step::Done(Outcome::failed(
                codes::INVALID_TRANSACTION,
                "transfer_funds needs transaction.details.template_id: the platform's saved transfer template (1 to 128 letters, digits, - or _)",
            )));
        };
        let amount = self.amount(request);
        let body = Calculate {
            coin_serial: coin,
            amount: &amount,
        };
        match self
            .post::<Commission>(
                "commission",
                &["templates", "transfer", template, "calculate"],
                &body,
            )
            .await?
        {
            Answer::Found(_) => {}
            Answer::NotFound => {
                return Ok(Step::Done(transformers::refused(
                    "transfer",
                    Some("TEMPLATE_NOT_FOUND"),
                )))
            }
            Answer::Refused { code, .. } => {
                return Ok(Step::Done(transformers::refused(
                    "transfer",
                    code.as_deref(),
                )))
            }
        }
        Ok(
            match self
                .post::<TransferDone>(
                    "transfer",
                    &["templates", "transfer", template, "execute"],
                    &body,
                )
                .await?
            {
                Answer::Found(done) => transformers::transfer_step(done),
                Answer::NotFound => Step::Done(transformers::refused(
                    "transfer",
                    Some("TEMPLATE_NOT_FOUND"),
                )),
                Answer::Refused { code, .. } => {
                    Step::Done(transformers::refused("transfer", code.as_deref()))
                }
            },
        )
    }

    /// Where a top-up or withdrawal stands now.
    async fn look_up(&self, kind: Kind, view: RequestView) -> Result<Step, ConnectorError> {
        let url = self
            .upstream
            .endpoint(&[kind.path(), &view.request_identifier])?;
        match self
            .call::<RequestView>("status", Method::GET, url, None)
            .await?
        {
            Answer::Found(now) => Ok(transformers::request_step(kind, now)),
            // It was created; not finding it now is not news.
            _ => Ok(Step::Processing {
                deferred: transformers::awaiting(kind, &view),
            }),
        }
    }

    /// A request whose creation's answer was lost, found by our reference.
    async fn find(
        &self,
        kind: Kind,
        context: TransactionContext<'_>,
    ) -> Result<Step, ConnectorError> {
        let mut url = self.upstream.endpoint(&[kind.path()])?;
        let reference = external_id(context.app_id, context.transaction_ref);
        url.query_pairs_mut().append_pair("externalId", &reference);
        match self
            .call::<Records>("search", Method::GET, url, None)
            .await?
        {
            // Only a record that names our reference is ours, and only one.
            Answer::Found(records) => {
                let mut ours = records
                    .records
                    .into_iter()
                    .filter(|r| r.external_id.as_deref() == Some(reference.as_str()));
                match (ours.next(), ours.next()) {
                    (Some(found), None) => Ok(transformers::request_step(kind, found)),
                    (Some(_), Some(_)) => Err(ConnectorError::Indeterminate(
                        "the platform lists more than one request under our reference".into(),
                    )),
                    // Absence is not proof: the platform may not list it
                    // yet. It stays Pending and is never created again.
                    (None, _) => Ok(Step::Processing {
                        deferred: Value::Null,
                    }),
                }
            }
            _ => Err(ConnectorError::Indeterminate(
                "the platform's request search did not answer".into(),
            )),
        }
    }
}

#[async_trait]
impl BearerTokens for SdkFinanceConnector {
    async fn token(&self) -> Result<SecretString, ConnectorError> {
        self.tokens.get(&(), |_stale| self.fetch_token()).await
    }

    async fn refused(&self, token: &SecretString) {
        self.tokens.reject(&(), token).await;
    }
}

#[async_trait]
impl Connector for SdkFinanceConnector {
    fn serves(&self, request_type: &str) -> bool {
        matches!(request_type, COLLECT | DISBURSE | TRANSFER_FUNDS)
    }

    // No idempotency key: every request is marked before it is sent, and
    // one whose answer was lost is found by `externalId`, never re-created.
    fn upstream_is_idempotent(&self) -> bool {
        false
    }

    async fn start(&self, request: &TransactRequest) -> Result<Step, ConnectorError> {
        let SourceDetails::Wallet(wallet) = &request.source else {
            return Ok(Step::Done(Outcome::failed(
                codes::INVALID_TRANSACTION,
                "SDK.finance moves money in wallets: auth.type must be wallet, with the coin serial",
            )));
        };
        if request.transaction.amount == 0 {
            return Ok(Step::Done(Outcome::failed(
                codes::INVALID_TRANSACTION,
                "transaction.amount must be above 0",
            )));
        }
        let coin = wallet.wallet_id.expose();
        match Kind::of(&request.request_type) {
            Some(kind) => self.bank_request(kind, request, coin).await,
            None => self.transfer(request, coin).await,
        }
    }

    async fn complete(
        &self,
        _transaction: TransactionContext<'_>,
        _deferred: Value,
        _confirmation: Confirmation,
    ) -> Result<Step, ConnectorError> {
        Err(ConnectorError::Internal(
            "SDK.finance requests ask the customer nothing".into(),
        ))
    }

    async fn poll(
        &self,
        transaction: TransactionContext<'_>,
        deferred: Value,
    ) -> Result<Step, ConnectorError> {
        if let Some((kind, view)) = transformers::awaited(&deferred) {
            return self.look_up(kind, view).await;
        }
        match (deferred.is_null(), Kind::of(transaction.request_type)) {
            (true, Some(kind)) => self.find(kind, transaction).await,
            // A transfer has no look-up: as answered, or unknown, it stays.
            _ => Ok(Step::Processing { deferred }),
        }
    }

    fn pending_note(&self, transaction: TransactionContext<'_>, deferred: &Value) -> PendingNote {
        let reference = external_id(transaction.app_id, transaction.transaction_ref);
        transformers::pending_note(transaction.request_type, &reference, deferred)
    }
}
