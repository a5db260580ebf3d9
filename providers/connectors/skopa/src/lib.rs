//! Connector for seed 000, Skopa: a neobank that acts for the user whose
//! token pair it issued, and asks for a second factor before money moves.
//!
//! The worked example of an upstream's **own 2FA**:
//! - the app sends the customer's Skopa refresh token (`auth.type =
//!   "token"`); the connector trades it for an access token, cached per
//!   customer in the SDK's [`TokenCache`](manifold_provider_sdk::tokens::TokenCache) and renewed after a `401`;
//! - `transfer_funds` (`details.receiver_id`, another Skopa user) and
//!   `disburse` (`details.bank_account_id`, one of the customer's banks) may
//!   be answered `428 Precondition Required`: Skopa has sent its codes, the
//!   transaction is `WaitingForOTP` ([`Step::UpstreamOtp`]), the code the
//!   customer types reaches Skopa's `verify_one`, one method at a time, and
//!   the call is sent again with the verification;
//! - `get_statement` reads the customer's transactions a page at a time
//!   (`details.limit`, `details.search_after`; the answer carries
//!   `has_more` and `last_id` for the next page); it only reads;
//! - Skopa offers no balance endpoint, so there is no `get_balance`.
//!
//! Skopa takes no idempotency key: the SDK marks each call before it is
//! sent. A call sent after the customer's codes whose answer was lost is
//! looked for in the customer's transactions by our reference; a first call
//! whose answer was lost stays `Pending` and is never sent again (a
//! validation carries no source, so nothing can be asked for that customer).
//!
//! # Layout
//! - [`config`]: [`SkopaConfig`], where Skopa is.
//! - [`transformers`]: the wire structs and what each answer means.
//! - this file: the connector, [`open`] and [`compiled`].
//! - `main.rs`: the `skopa-provider` binary.

pub mod config;
pub mod transformers;

use std::sync::Arc;

use async_trait::async_trait;
use manifold_crypto::{SecretString, SourceDetails};
use manifold_provider::outbound::OutboundOptions;
use manifold_provider::{Notifier, TransactRequest};
use manifold_provider_sdk::compiled::SdkProvider;
use manifold_provider_sdk::customer::{
    request_token, CredentialError, CredentialExchange, CustomerTokenCache,
};
use manifold_provider_sdk::tokens::Token;
use manifold_provider_sdk::upstream::{Answer, HttpUpstream};
use manifold_provider_sdk::{
    Confirmation, Connector, ConnectorError, Outcome, PendingNote, ProviderService, ServiceError,
    ServiceSettings, StateDurability, Step, TransactionContext,
};
use reqwest::StatusCode;
use serde_json::Value;

pub use config::{ConfigError, SkopaConfig};
use transformers::{
    codes, MoveMoney, Page, RefreshRequest, SecondFactor, TokenPair, Verified, VerifyOne, Waiting,
    DISBURSE, GET_STATEMENT, TRANSFER_FUNDS,
};

pub const NAMESPACE: &str = "skopa";
pub const DISPLAY_NAME: &str = "Skopa";

pub type SkopaProvider = ProviderService<SkopaConnector>;

pub fn service_settings() -> ServiceSettings {
    ServiceSettings::new(NAMESPACE, DISPLAY_NAME)
}

pub fn open(
    db: &sled::Db,
    durability: impl Into<StateDurability>,
    notifier: Arc<dyn Notifier>,
    connector: SkopaConnector,
    settings: ServiceSettings,
) -> Result<SkopaProvider, ServiceError> {
    ProviderService::open(db, durability, notifier, connector, settings)
}

/// The connector as the switch runs it in-process (`implementation =
/// "skopa"`), configured by the route's `[providers.settings]`.
pub fn compiled() -> SdkProvider<SkopaConnector> {
    SdkProvider::new(|settings| {
        let config = SkopaConfig::from_settings(settings)?;
        let connector = SkopaConnector::new(config).map_err(|error| error.to_string())?;
        Ok((connector, service_settings()))
    })
}

pub struct SkopaConnector {
    config: SkopaConfig,
    upstream: HttpUpstream,
    tokens: CustomerTokenCache,
}

impl SkopaConnector {
    pub fn new(config: SkopaConfig) -> Result<Self, ConfigError> {
        config.check()?;
        let options = OutboundOptions {
            connect_timeout: config.connect_timeout,
            ..OutboundOptions::with_timeout(config.timeout)
        };
        let upstream =
            HttpUpstream::new(config.base_url.clone(), &options, transformers::fault_code)
                .map_err(|error| ConfigError::HttpClient(error.to_string()))?;
        Ok(SkopaConnector {
            tokens: CustomerTokenCache::new(config.token_refresh_margin),
            config,
            upstream,
        })
    }

    fn customer<'a>(&'a self, credential: &'a SecretString) -> CustomerTokens<'a> {
        self.tokens.customer(self, credential)
    }

    /// Sends a transfer or withdrawal (again, with a verification).
    async fn move_money(
        &self,
        tokens: &CustomerTokens<'_>,
        request_type: &str,
        body: &MoveMoney,
        verification: Option<&str>,
    ) -> Result<Answer<Value>, ConnectorError> {
        let path = transformers::path_of(request_type)
            .ok_or_else(|| ConnectorError::Internal(format!("`{request_type}` moves no money")))?;
        let url = self.upstream.endpoint(path)?;
        self.upstream
            .call("payment", tokens, |token| {
                let request = self
                    .upstream
                    .http()
                    .post(url.clone())
                    .bearer_auth(token.expose())
                    .json(body);
                match verification {
                    Some(id) => request.header("x-verification-id", id),
                    None => request,
                }
            })
            .await
    }

    /// What Skopa's answer to a money-moving call means.
    fn step_of(
        &self,
        answer: Answer<Value>,
        request_type: &str,
        body: &MoveMoney,
        credential: &SecretString,
    ) -> Result<Step, ConnectorError> {
        Ok(match answer {
            Answer::Found(record) => Step::Done(transformers::completed(request_type, record)),
            Answer::Refused {
                status: StatusCode::PRECONDITION_REQUIRED,
                body: Some(asked),
                ..
            } => {
                let factor: SecondFactor = serde_json::from_value(asked).map_err(|_| {
                    ConnectorError::Unavailable("Skopa's 428 could not be read".into())
                })?;
                let waiting = Waiting {
                    request_type: request_type.to_owned(),
                    body: body.clone(),
                    verification_id: factor.verification_id,
                    remaining: factor.methods,
                    credential: credential.clone(),
                };
                Step::UpstreamOtp {
                    prompt: waiting.prompt(),
                    deferred: waiting.to_value(),
                }
            }
            Answer::Refused { code, .. } => Step::Done(transformers::refused(code.as_deref())),
            Answer::NotFound => {
                return Err(ConnectorError::Unavailable(
                    "Skopa has no such endpoint at the configured URL".into(),
                ))
            }
        })
    }

    async fn statement(
        &self,
        request: &TransactRequest,
        tokens: &CustomerTokens<'_>,
    ) -> Result<Step, ConnectorError> {
        let details = request.transaction.details.as_ref();
        let limit = match details.and_then(|d| d.get("limit")) {
            None | Some(Value::Null) => transformers::DEFAULT_STATEMENT_LIMIT,
            Some(value) => match value.as_u64() {
                Some(n) if (1..=transformers::MAX_STATEMENT_LIMIT).contains(&n) => n,
                _ => {
                    return Ok(Step::Done(Outcome::failed(
                        codes::INVALID_TRANSACTION,
                        "transaction.details.limit must be a whole number from 1 to 100",
                    )))
                }
            },
        };
        let after = match details.and_then(|d| d.get("search_after")) {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) if !id.is_empty() && id.len() <= 128 => Some(id.clone()),
            Some(_) => {
                return Ok(Step::Done(Outcome::failed(
                    codes::INVALID_TRANSACTION,
                    "transaction.details.search_after must be the last_id of the previous page",
                )))
            }
        };
        match self.page(tokens, limit, after.as_deref()).await? {
            Answer::Found(page) => Ok(Step::Done(
                Outcome::successful(codes::APPROVED, "Statement retrieved")
                    .with_response(serde_json::to_value(&page).unwrap_or(Value::Null)),
            )),
            Answer::Refused { code, .. } => Ok(Step::Done(transformers::refused(code.as_deref()))),
            Answer::NotFound => Err(ConnectorError::Unavailable(
                "Skopa has no transactions list at the configured URL".into(),
            )),
        }
    }

    async fn page(
        &self,
        tokens: &CustomerTokens<'_>,
        limit: u64,
        after: Option<&str>,
    ) -> Result<Answer<Page>, ConnectorError> {
        let mut url = self
            .upstream
            .endpoint(&["payment_gateway", "transactions"])?;
        url.query_pairs_mut()
            .append_pair("limit", &limit.to_string());
        if let Some(after) = after {
            url.query_pairs_mut().append_pair("search_after", after);
        }
        self.upstream
            .call("statement", tokens, |token| {
                self.upstream
                    .http()
                    .get(url.clone())
                    .bearer_auth(token.expose())
            })
            .await
    }

    /// The customer's transaction carrying `reference`, looked for through
    /// every page of their list.
    async fn find(
        &self,
        tokens: &CustomerTokens<'_>,
        reference: &str,
    ) -> Result<Option<Value>, ConnectorError> {
        let mut after: Option<String> = None;
        // Bounded: a list that never ends is an upstream fault, not a loop.
        for _ in 0..1_000 {
            let page = match self
                .page(tokens, transformers::MAX_STATEMENT_LIMIT, after.as_deref())
                .await?
            {
                Answer::Found(page) => page,
                _ => {
                    return Err(ConnectorError::Indeterminate(
                        "Skopa's transactions list did not answer".into(),
                    ))
                }
            };
            if let Some(found) = page
                .records
                .iter()
                .find(|record| record["reference"] == reference)
            {
                return Ok(Some(found.clone()));
            }
            match (page.has_more, page.last_id.as_ref().and_then(Value::as_str)) {
                (true, Some(last)) => after = Some(last.to_owned()),
                _ => return Ok(None),
            }
        }
        Err(ConnectorError::Indeterminate(
            "Skopa's transactions list did not end".into(),
        ))
    }
}

/// One customer's tokens, for [`HttpUpstream::call`].
type CustomerTokens<'a> = manifold_provider_sdk::customer::CustomerTokens<'a, SkopaConnector>;

/// `POST /auth/refresh` with the customer's refresh token, or the newer one
/// a previous refresh gave.
#[async_trait]
impl CredentialExchange for SkopaConnector {
    fn issuer(&self) -> &str {
        "Skopa"
    }

    async fn exchange(
        &self,
        credential: &SecretString,
        stale: Option<Token>,
    ) -> Result<Token, CredentialError> {
        let refresh = stale
            .and_then(|token| token.refresh)
            .unwrap_or_else(|| credential.clone());
        let url = self
            .upstream
            .endpoint(&["auth", "refresh"])
            .map_err(|error| CredentialError::Unavailable(format!("token: {error}")))?;
        let request = self.upstream.http().post(url).json(&RefreshRequest {
            refresh_token: refresh.expose(),
        });
        let pair: TokenPair = request_token(request, self.issuer()).await?;
        Ok(Token {
            value: pair.access_token,
            refresh: pair.refresh_token,
            lifetime: self.config.token_lifetime,
        })
    }
}

#[async_trait]
impl Connector for SkopaConnector {
    fn serves(&self, request_type: &str) -> bool {
        matches!(request_type, TRANSFER_FUNDS | DISBURSE | GET_STATEMENT)
    }

    fn is_read_only(&self, request_type: &str) -> bool {
        request_type == GET_STATEMENT
    }

    async fn start(&self, request: &TransactRequest) -> Result<Step, ConnectorError> {
        let SourceDetails::Token(customer) = &request.source else {
            return Ok(Step::Done(Outcome::failed(
                codes::INVALID_TRANSACTION,
                "Skopa acts for the customer whose token the app sends: auth.type must be token",
            )));
        };
        let tokens = self.customer(&customer.token);
        if !tokens.accepted().await? {
            return Ok(Step::Done(transformers::credential_refused()));
        }
        if request.request_type == GET_STATEMENT {
            return self.statement(request, &tokens).await;
        }
        let details = request.transaction.details.as_ref();
        let field = if request.request_type == DISBURSE {
            "bank_account_id"
        } else {
            "receiver_id"
        };
        let Some(target) = details
            .and_then(|d| d.get(field))
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty() && id.len() <= 128)
        else {
            return Ok(Step::Done(Outcome::failed(
                codes::INVALID_TRANSACTION,
                format!("{} needs transaction.details.{field}", request.request_type),
            )));
        };
        if request.transaction.amount == 0 {
            return Ok(Step::Done(Outcome::failed(
                codes::INVALID_TRANSACTION,
                "transaction.amount must be above 0",
            )));
        }
        let body = MoveMoney {
            receiver_id: (field == "receiver_id").then(|| target.to_owned()),
            bank_account_id: (field == "bank_account_id").then(|| target.to_owned()),
            amount: transformers::major_units(
                request.transaction.amount,
                self.config.minor_unit_digits,
            ),
            reference: transformers::reference(&request.app_id, &request.transaction_ref),
        };
        let answer = self
            .move_money(&tokens, &request.request_type, &body, None)
            .await?;
        self.step_of(answer, &request.request_type, &body, &customer.token)
    }

    async fn complete(
        &self,
        _transaction: TransactionContext<'_>,
        deferred: Value,
        confirmation: Confirmation,
    ) -> Result<Step, ConnectorError> {
        let mut waiting = Waiting::from_value(&deferred).ok_or_else(|| {
            ConnectorError::Internal("a Skopa verification was kept unreadable".into())
        })?;
        let code = match &confirmation {
            Confirmation::UpstreamCode(code) | Confirmation::Answer(code) => code,
            Confirmation::OtpVerified => {
                return Err(ConnectorError::Internal(
                    "Skopa checks its own codes".into(),
                ))
            }
        };
        let tokens = self.customer(&waiting.credential);
        let method = waiting.remaining.first().cloned().unwrap_or_default();
        let url = self.upstream.endpoint(&["auth", "2fa", "verify_one"])?;
        let verified: Answer<Verified> = self
            .upstream
            .call("verification", &tokens, |token| {
                self.upstream
                    .http()
                    .post(url.clone())
                    .bearer_auth(token.expose())
                    .json(&VerifyOne {
                        verification_id: &waiting.verification_id,
                        method: &method,
                        code: code.expose(),
                    })
            })
            .await?;
        match verified {
            Answer::Found(verified) => waiting.remaining = verified.remaining,
            // A wrong code: asked again, and the SDK counts the attempt.
            Answer::Refused { .. } => {
                return Ok(Step::UpstreamOtp {
                    prompt: format!("That code was not accepted. {}", waiting.prompt()),
                    deferred,
                })
            }
            Answer::NotFound => return Ok(Step::Done(Outcome::failed(
                codes::VERIFICATION_GONE,
                "Skopa's verification expired or was already used; the transaction was not made",
            ))),
        }
        if !waiting.remaining.is_empty() {
            return Ok(Step::UpstreamOtp {
                prompt: waiting.prompt(),
                deferred: waiting.to_value(),
            });
        }
        let answer = self
            .move_money(
                &tokens,
                &waiting.request_type,
                &waiting.body,
                Some(&waiting.verification_id),
            )
            .await?;
        self.step_of(
            answer,
            &waiting.request_type,
            &waiting.body,
            &waiting.credential,
        )
    }

    /// A call sent after the customer's codes whose answer was lost: found
    /// in the customer's transactions, or still `Pending`.
    async fn poll(
        &self,
        _transaction: TransactionContext<'_>,
        deferred: Value,
    ) -> Result<Step, ConnectorError> {
        let Some(waiting) = Waiting::from_value(&deferred) else {
            return Ok(Step::Processing { deferred });
        };
        let tokens = self.customer(&waiting.credential);
        match self.find(&tokens, &waiting.body.reference).await? {
            Some(record) => Ok(Step::Done(transformers::completed(
                &waiting.request_type,
                record,
            ))),
            None => Ok(Step::Processing { deferred }),
        }
    }

    fn pending_note(&self, _transaction: TransactionContext<'_>, deferred: &Value) -> PendingNote {
        if deferred.is_null() {
            PendingNote::new(
                "68",
                "The call was being sent to Skopa when its answer was lost: it may or may not have been made, and it is never sent again. The customer's Skopa transactions show whether it was made",
            )
        } else {
            PendingNote::new(
                "",
                "The call was sent to Skopa after the customer's codes; its outcome is being looked for in the customer's transactions",
            )
        }
    }
}
