//! Connector for seed 002, core-api: a charge API whose tokens live 30
//! seconds, whose work happens later in a queue, and which can be asked
//! nothing afterwards.
//!
//! The worked example of the hardest kind of upstream to wrap honestly: no
//! transaction id, no status look-up, no idempotency key. What it shows:
//! - **a customer's token, not the provider's.** core-api charges the user
//!   its token names, so the app sends the customer's own long-lived
//!   credential in `auth.secure` (`auth.type = "token"`); the connector
//!   trades it at the auth service for a 30-second token, cached per
//!   customer in the SDK's [`TokenCache`](manifold_provider_sdk::tokens::TokenCache) (one request for fifty concurrent
//!   calls), renewed before it expires and after a `401`. There is no
//!   provider-wide token that could charge whoever asks.
//! - **at most once.** The SDK durably marks the charge as started before
//!   it is sent ([`Connector::upstream_is_idempotent`] is false), so after a
//!   timeout, a `5xx` or a crash between core-api's acceptance and our
//!   answer the charge is never sent again: it stays `Pending` with a message
//!   that says so, for an operator.
//! - **never a settlement the upstream did not report.** A `200` means
//!   "queued": the transaction is `Pending` for good, with core-api's answer
//!   ([`transformers`] has the table).
//!
//! # Layout
//! - [`config`]: [`CoreApiConfig`], the two base URLs and the currency.
//! - [`transformers`]: the wire structs, amounts in major units, and what
//!   each answer means for the app.
//! - this file: the connector and the customer tokens; [`open`], and
//!   [`compiled`], what the switch registers to run it in-process.
//! - `main.rs`: the `core-api-provider` binary.

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
use serde_json::Value;

pub use config::{ConfigError, CoreApiConfig};
use transformers::{codes, Accepted, ChargeRequest, TokenRequest, TokenResponse, COLLECT};

/// The prefix of this provider's sled trees.
pub const NAMESPACE: &str = "core-api";

/// How the provider names itself in messages.
pub const DISPLAY_NAME: &str = "core-api";

/// The connector wrapped by the SDK: a complete provider.
pub type CoreApiProvider = ProviderService<CoreApiConnector>;

/// The SDK settings this provider starts from. It sends no OTP of its own.
pub fn service_settings() -> ServiceSettings {
    ServiceSettings::new(NAMESPACE, DISPLAY_NAME)
}

/// Opens the provider in `db`; the binary, the switch and the tests all come
/// through here.
pub fn open(
    db: &sled::Db,
    durability: impl Into<StateDurability>,
    notifier: Arc<dyn Notifier>,
    connector: CoreApiConnector,
    settings: ServiceSettings,
) -> Result<CoreApiProvider, ServiceError> {
    ProviderService::open(db, durability, notifier, connector, settings)
}

/// The connector as the switch runs it in-process (`implementation =
/// "core-api"`), configured by the route's `[providers.settings]`
/// ([`config::Settings`]).
pub fn compiled() -> SdkProvider<CoreApiConnector> {
    SdkProvider::new(|settings| {
        let config = CoreApiConfig::from_settings(settings)?;
        let connector = CoreApiConnector::new(config).map_err(|error| error.to_string())?;
        Ok((connector, service_settings()))
    })
}

/// core-api, as a [`Connector`].
pub struct CoreApiConnector {
    config: CoreApiConfig,
    /// core-api's base URL and the SDK's HTTP rules.
    core: HttpUpstream,
    tokens: CustomerTokenCache,
}

impl CoreApiConnector {
    pub fn new(config: CoreApiConfig) -> Result<Self, ConfigError> {
        config.check()?;
        let options = OutboundOptions {
            connect_timeout: config.connect_timeout,
            ..OutboundOptions::with_timeout(config.timeout)
        };
        let core = HttpUpstream::new(config.core_url.clone(), &options, transformers::fault_code)
            .map_err(|error| ConfigError::HttpClient(error.to_string()))?;
        Ok(CoreApiConnector {
            tokens: CustomerTokenCache::new(config.token_refresh_margin),
            config,
            core,
        })
    }

    pub fn config(&self) -> &CoreApiConfig {
        &self.config
    }

    /// Sends one charge for the customer whose credential this is.
    async fn charge(
        &self,
        request: &TransactRequest,
        credential: &SecretString,
    ) -> Result<Step, ConnectorError> {
        let tokens = self.tokens.customer(self, credential);
        // The first token is asked for here, so that a refused credential is
        // a `Failed` answer rather than an outage.
        if !tokens.accepted().await? {
            return Ok(Step::Done(transformers::credential_refused()));
        }
        let url = self.core.endpoint(&["transaction"])?;
        let amount =
            transformers::major_units(request.transaction.amount, self.config.minor_unit_digits);
        let answer: Answer<Accepted> = self
            .core
            .call("charge", &tokens, |token| {
                self.core.http().post(url.clone()).json(&ChargeRequest {
                    token: token.expose(),
                    amount: amount.clone(),
                    currency: &self.config.currency,
                })
            })
            .await?;
        Ok(match answer {
            Answer::Found(accepted) => {
                tracing::info!(
                    transaction_ref = %request.transaction_ref,
                    user_id = accepted.user_id,
                    "core-api queued the charge"
                );
                Step::Processing {
                    deferred: transformers::queued(&accepted),
                }
            }
            Answer::Refused { status, code, .. } => {
                Step::Done(transformers::refused(status.as_u16(), code.as_deref()))
            }
            // A 404 to a POST is a wrong base URL: no charge was made.
            Answer::NotFound => {
                return Err(ConnectorError::Unavailable(
                    "core-api has no /transaction at the configured URL".into(),
                ))
            }
        })
    }
}

/// The auth service's tokens: `POST <auth_url>/token` with the customer's
/// credential. A refused credential is final; anything else means nothing
/// was charged and the call may be repeated.
#[async_trait]
impl CredentialExchange for CoreApiConnector {
    fn issuer(&self) -> &str {
        "the auth service"
    }

    async fn exchange(
        &self,
        credential: &SecretString,
        _stale: Option<Token>,
    ) -> Result<Token, CredentialError> {
        let mut url = self.config.auth_url.clone();
        url.path_segments_mut()
            .map_err(|()| {
                CredentialError::Unavailable("token: the auth URL cannot take a path".into())
            })?
            .pop_if_empty()
            .push("token");
        let request = self.core.http().post(url).json(&TokenRequest {
            refresh_token: credential.expose(),
        });
        let token: TokenResponse = request_token(request, self.issuer()).await?;
        Ok(Token {
            value: token.token,
            refresh: None,
            lifetime: self.config.token_lifetime,
        })
    }
}

#[async_trait]
impl Connector for CoreApiConnector {
    fn serves(&self, request_type: &str) -> bool {
        request_type == COLLECT
    }

    // core-api takes no idempotency key: the SDK marks every charge durably
    // before it is sent and, after a crash, polls instead of sending again.
    fn upstream_is_idempotent(&self) -> bool {
        false
    }

    async fn start(&self, request: &TransactRequest) -> Result<Step, ConnectorError> {
        let SourceDetails::Token(customer) = &request.source else {
            return Ok(Step::Done(Outcome::failed(
                codes::INVALID_TRANSACTION,
                "core-api charges the customer whose token the app sends: auth.type must be token",
            )));
        };
        if request.transaction.amount == 0 {
            return Ok(Step::Done(Outcome::failed(
                codes::INVALID_TRANSACTION,
                "core-api charges a positive amount: transaction.amount must be above 0",
            )));
        }
        self.charge(request, &customer.token).await
    }

    async fn complete(
        &self,
        _transaction: TransactionContext<'_>,
        _deferred: Value,
        _confirmation: Confirmation,
    ) -> Result<Step, ConnectorError> {
        // No step of this connector waits for the customer.
        Err(ConnectorError::Internal(
            "core-api charges ask the customer nothing".into(),
        ))
    }

    // `poll` keeps the default: core-api cannot be asked, so what is
    // pending stays pending, in the words of `pending_note`.

    fn pending_note(&self, _transaction: TransactionContext<'_>, deferred: &Value) -> PendingNote {
        transformers::pending_note(deferred)
    }
}
