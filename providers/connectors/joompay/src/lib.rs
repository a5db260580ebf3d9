//! Connector for seed 004, Joompay: a PSD2 open-banking API over gRPC and
//! mutual TLS, acting for a customer who consented through OAuth, with a
//! strong customer authentication (SCA) code before money moves.
//!
//! The worked example of an upstream that knows its callers by their
//! **certificate** and acts for a customer only after that customer's
//! **consent**:
//! - every call is gRPC over TLS presenting the TPP's certificate, with the
//!   seed's headers (`x-tpp-id`, a fresh `x-request-id`, `user-time-zone`,
//!   the customer's `Authorization: Bearer`);
//! - `link_account` starts the customer's OAuth consent, which this
//!   connector serves itself ([`consent`]): the transaction is `Pending`
//!   with a `consent_url` for the customer's browser, and becomes
//!   `Successful` once Joompay's callback brought a code that the token
//!   endpoint traded for tokens; those are kept sealed per app and
//!   `customer_ref` ([`links`]), and renewed with the refresh token, one
//!   refresh for many callers ([`TokenCache`]);
//! - `get_balance`, `lookup_account` (the customer's own account) and
//!   `get_statement` only read;
//! - `transfer_funds` validates the recipient, then executes the transfer:
//!   Joompay answers with an SCA challenge, the transaction is
//!   `WaitingForOTP`, and the code the customer types is sent with the
//!   repeated execution;
//! - every execution of a transaction carries the same
//!   `client_operation_uuid`, derived from `(app_id, transaction_ref)`, so
//!   Joompay executes it once however often it is sent: after a timeout or
//!   a crash the transfer is simply asked again.
//!
//! The customer is named by `transaction.customer.customer_ref`; the
//! request's `auth` is not read (the consent is the customer's credential).
//!
//! # Layout
//! - [`config`]: [`JoompayConfig`], where Joompay is and who we are to it.
//! - [`transformers`]: the wire messages and what each answer means.
//! - [`oauth`]: the token endpoint (codes and refresh tokens).
//! - [`consent`]: the pages the customer's browser visits.
//! - [`links`]: consent sessions and customers' tokens, sealed.
//! - this file: the connector, [`open`] and [`compiled`].
//! - `main.rs`: the `joompay-provider` binary.

pub mod config;
pub mod consent;
pub mod links;
pub mod oauth;
pub mod transformers;

/// The gRPC clients, compiled from `proto/joompay_openbanking.proto`.
#[allow(clippy::all)]
pub mod proto {
    tonic::include_proto!("joompay.openbanking");
}

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use manifold_crypto::{DataKeys, SecretString};
use manifold_provider::{Notifier, Provider, TransactRequest};
use manifold_provider_sdk::compiled::{
    CompiledProvider, ConfiguredProvider, Host, HostSettings, HostedProvider,
};
use manifold_provider_sdk::tokens::{Token, TokenCache};
use manifold_provider_sdk::{
    AnswerDurability, Confirmation, Connector, ConnectorError, Outcome, PendingNote,
    ProviderService, ServiceError, ServiceSettings, StateDurability, Step, Sweeper,
    TransactionContext,
};
use serde_json::{json, Value};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

pub use config::{ConfigError, JoompayConfig};
use consent::ConsentPages;
use links::{ConsentSession, ConsentState, CustomerTokens, Links};
use oauth::{OAuthClient, OAuthError};
use proto::open_banking_account_information_service_client::OpenBankingAccountInformationServiceClient as AccountsClient;
use proto::open_banking_payment_initiation_service_client::OpenBankingPaymentInitiationServiceClient as PaymentsClient;
use transformers::{
    classify, codes, Deferred, Refusal, Transfer, GET_BALANCE, GET_STATEMENT, LINK_ACCOUNT,
    LOOKUP_ACCOUNT, TRANSFER_FUNDS,
};

pub const NAMESPACE: &str = "joompay";
pub const DISPLAY_NAME: &str = "Joompay";
/// The sled tree of [`links`] in a provider's database.
pub const LINKS_TREE: &str = "joompay_links";
/// In-process, the directory under the switch's data directory that holds
/// the links (opened once, whatever the switch's storage generation).
pub const IN_PROCESS_DIR: &str = "joompay";

pub type JoompayProvider = ProviderService<JoompayConnector>;

pub fn service_settings() -> ServiceSettings {
    ServiceSettings::new(NAMESPACE, DISPLAY_NAME)
}

pub fn open(
    db: &sled::Db,
    durability: impl Into<StateDurability>,
    notifier: Arc<dyn Notifier>,
    connector: JoompayConnector,
    settings: ServiceSettings,
) -> Result<JoompayProvider, ServiceError> {
    ProviderService::open(db, durability, notifier, connector, settings)
}

/// Whose tokens: the app and its `customer_ref`.
pub(crate) type CustomerKey = (String, String);

/// The customers' access tokens in memory, shared by the connector (of
/// every storage generation) and the consent pages, which drop a customer's
/// cached token when they link the customer again.
pub(crate) type CustomerTokenCache = TokenCache<CustomerKey, TokenError>;

#[derive(Debug, Clone)]
pub(crate) enum TokenError {
    NotLinked,
    Revoked,
    Unavailable(String),
}

pub struct JoompayConnector {
    config: JoompayConfig,
    channel: Channel,
    oauth: OAuthClient,
    links: Links,
    tokens: Arc<CustomerTokenCache>,
    /// When `link_account` last swept old consent sessions.
    last_sweep_ms: AtomicU64,
}

/// How often old consent sessions are swept, at most.
const SWEEP_EVERY_MS: u64 = 60_000;

/// Why a call could not be made for the customer.
enum CallError {
    Token(TokenError),
    Connector(ConnectorError),
}

impl JoompayConnector {
    /// Builds the clients (the TPP's certificate and key are read now). Must
    /// run inside a tokio runtime: the gRPC channel connects lazily on it.
    pub fn new(config: JoompayConfig, links: Links) -> Result<Self, ConfigError> {
        let tokens = Arc::new(TokenCache::new(config.token_refresh_margin));
        Self::with_tokens(config, links, tokens)
    }

    fn with_tokens(
        config: JoompayConfig,
        links: Links,
        tokens: Arc<CustomerTokenCache>,
    ) -> Result<Self, ConfigError> {
        config.check()?;
        let oauth = OAuthClient::new(&config)?;
        let channel = grpc_channel(&config)?;
        Ok(JoompayConnector {
            tokens,
            last_sweep_ms: AtomicU64::new(0),
            config,
            channel,
            oauth,
            links,
        })
    }

    /// The pages of the customer's consent, to serve on
    /// [`JoompayConfig::consent_listen`].
    pub fn consent_pages(&self) -> ConsentPages {
        ConsentPages::new(
            &self.config,
            self.links.clone(),
            self.oauth.clone(),
            self.tokens.clone(),
        )
    }

    pub fn links(&self) -> &Links {
        &self.links
    }

    /// The link the app hands the customer's browser.
    fn consent_link(&self, session: &str) -> String {
        let mut url = self.config.redirect_uri.clone();
        let path = url.path().trim_end_matches("callback").to_owned() + "start";
        url.set_path(&path);
        url.set_query(None);
        url.query_pairs_mut().append_pair("session", session);
        url.to_string()
    }

    /// The customer's access token: the stored one while it lives, else a
    /// new one for the stored refresh token (kept before it is used).
    async fn fetch_token(
        &self,
        key: &CustomerKey,
        stale: Option<Token>,
    ) -> Result<Token, TokenError> {
        let unavailable = |why: String| TokenError::Unavailable(why);
        let stored = self
            .links
            .tokens(&key.0, &key.1)
            .map_err(|error| unavailable(error.to_string()))?
            .ok_or(TokenError::NotLinked)?;
        let now = links::now_ms();
        let margin = self.config.token_refresh_margin.as_millis() as u64;
        let stale_is_stored = stale
            .as_ref()
            .is_some_and(|token| token.value == stored.access_token);
        if !stale_is_stored && stored.access_expires_unix_ms > now + margin {
            return Ok(Token {
                value: stored.access_token,
                refresh: None,
                lifetime: Duration::from_millis(stored.access_expires_unix_ms - now),
            });
        }
        match self.oauth.refresh(&stored.refresh_token).await {
            Ok(granted) => {
                let tokens = CustomerTokens {
                    access_token: granted.access_token.clone(),
                    access_expires_unix_ms: now + granted.expires_in.as_millis() as u64,
                    refresh_token: granted.refresh_token.unwrap_or(stored.refresh_token),
                };
                // Kept before use: a rotated refresh token lost in a crash
                // would unlink the customer.
                self.links
                    .save_tokens(&key.0, &key.1, &tokens)
                    .await
                    .map_err(|error| unavailable(error.to_string()))?;
                Ok(Token {
                    value: granted.access_token,
                    refresh: None,
                    lifetime: granted.expires_in,
                })
            }
            Err(OAuthError::Refused(reason)) => {
                tracing::warn!(app_id = %key.0, %reason, "Joompay refused a customer's refresh token; the link is removed");
                self.links
                    .unlink(&key.0, &key.1)
                    .await
                    .map_err(|error| unavailable(error.to_string()))?;
                Err(TokenError::Revoked)
            }
            Err(OAuthError::Unavailable(why)) => Err(unavailable(why)),
        }
    }

    async fn token(&self, key: &CustomerKey) -> Result<SecretString, TokenError> {
        self.tokens
            .get(key, |stale| self.fetch_token(key, stale))
            .await
    }

    /// A request with the seed's headers.
    fn request<T>(
        &self,
        message: T,
        token: &SecretString,
    ) -> Result<tonic::Request<T>, ConnectorError> {
        let header = |value: &str, what: &str| {
            MetadataValue::try_from(value)
                .map_err(|_| ConnectorError::Internal(format!("the {what} is not a header value")))
        };
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.config.timeout);
        let metadata = request.metadata_mut();
        metadata.insert("x-tpp-id", header(&self.config.tpp_id, "TPP id")?);
        metadata.insert(
            "x-request-id",
            header(&transformers::request_id(), "request id")?,
        );
        metadata.insert(
            "user-time-zone",
            header(&self.config.user_time_zone, "time zone")?,
        );
        let mut bearer = header(&format!("Bearer {}", token.expose()), "customer's token")?;
        bearer.set_sensitive(true);
        metadata.insert("authorization", bearer);
        Ok(request)
    }

    /// One call for the customer, sent again once with a new token if
    /// Joompay says the token is dead.
    async fn call<T, R, F, Fut>(
        &self,
        key: &CustomerKey,
        message: T,
        send: F,
    ) -> Result<Result<R, Status>, CallError>
    where
        T: Clone,
        F: Fn(tonic::Request<T>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, Status>>,
    {
        let mut renewed = false;
        loop {
            let token = self.token(key).await.map_err(CallError::Token)?;
            let request = self
                .request(message.clone(), &token)
                .map_err(CallError::Connector)?;
            match send(request).await {
                Ok(response) => return Ok(Ok(response.into_inner())),
                Err(status) if status.code() == Code::Unauthenticated && !renewed => {
                    self.tokens.reject(key, &token).await;
                    renewed = true;
                }
                Err(status) => return Ok(Err(status)),
            }
        }
    }

    fn accounts(&self) -> AccountsClient<Channel> {
        AccountsClient::new(self.channel.clone())
    }

    fn payments(&self) -> PaymentsClient<Channel> {
        PaymentsClient::new(self.channel.clone())
    }

    /// A read: its answer as an outcome. Nothing is moved by a read, so an
    /// unknown answer is simply "unavailable".
    fn settle_read<R>(
        result: Result<Result<R, Status>, CallError>,
        found: impl FnOnce(R) -> Outcome,
    ) -> Result<Step, ConnectorError> {
        match result {
            Ok(Ok(answer)) => Ok(Step::Done(found(answer))),
            Ok(Err(status)) => match classify(&status) {
                Refusal::Refused(code) => Ok(Step::Done(transformers::refused(&code))),
                Refusal::TokenDead => Err(ConnectorError::Unavailable(
                    "Joompay refused a newly issued token".into(),
                )),
                Refusal::Sca(_) => Err(ConnectorError::Unavailable(
                    "Joompay asked for SCA on a read".into(),
                )),
                Refusal::Unknown(why) => Err(ConnectorError::Unavailable(why)),
            },
            Err(error) => Self::token_failure(error),
        }
    }

    /// A token that could not be had, where nothing was sent: final for a
    /// customer never linked or whose consent is gone.
    fn token_failure(error: CallError) -> Result<Step, ConnectorError> {
        match error {
            CallError::Token(TokenError::NotLinked) => Ok(Step::Done(transformers::not_linked())),
            CallError::Token(TokenError::Revoked) => {
                Ok(Step::Done(transformers::consent_revoked()))
            }
            CallError::Token(TokenError::Unavailable(why)) => Err(ConnectorError::Unavailable(why)),
            CallError::Connector(error) => Err(error),
        }
    }

    async fn link(
        &self,
        request: &TransactRequest,
        customer_ref: &str,
    ) -> Result<Step, ConnectorError> {
        let id = consent::new_session_id();
        let session = ConsentSession {
            app_id: request.app_id.clone(),
            customer_ref: customer_ref.to_owned(),
            transaction_ref: request.transaction_ref.clone(),
            expires_unix_ms: links::now_ms() + self.config.consent_ttl.as_millis() as u64,
            state: ConsentState::Started,
        };
        self.links
            .start_session(&id, &session)
            .await
            .map_err(|error| ConnectorError::Unavailable(error.to_string()))?;
        // Sessions of customers who never came back, long after their
        // time: swept at most once a minute, as a scan costs every session.
        let now = links::now_ms();
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= SWEEP_EVERY_MS
            && self
                .last_sweep_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let grace = 4 * self.config.consent_ttl.as_millis() as u64;
            if let Err(error) = self.links.sweep_sessions(grace).await {
                tracing::warn!(%error, "sweeping old consent sessions");
            }
        }
        Ok(Step::Processing {
            deferred: Deferred::Consent { session: id }.to_value(),
        })
    }

    /// Where the customer's consent stands.
    fn consent_step(&self, session_id: &str, deferred: Value) -> Result<Step, ConnectorError> {
        let session = self
            .links
            .session(session_id)
            .map_err(|error| ConnectorError::Unavailable(error.to_string()))?;
        let expired = || {
            Outcome::failed(
                codes::CONSENT_EXPIRED,
                "The customer did not finish Joompay's consent in time; send link_account again",
            )
        };
        Ok(match session {
            None => Step::Done(expired()),
            Some(session) => match session.state {
                ConsentState::Linked => Step::Done(
                    Outcome::successful(
                        codes::APPROVED,
                        "The customer's Joompay account is linked",
                    )
                    .with_response(json!({ "customer_ref": session.customer_ref })),
                ),
                ConsentState::Failed { code, message } => {
                    Step::Done(Outcome::failed(&code, message))
                }
                _ if session.expired() => Step::Done(expired()),
                _ => Step::Processing { deferred },
            },
        })
    }

    async fn transfer(
        &self,
        request: &TransactRequest,
        key: &CustomerKey,
    ) -> Result<Step, ConnectorError> {
        let invalid = |message: String| {
            Ok(Step::Done(Outcome::failed(
                codes::INVALID_TRANSACTION,
                message,
            )))
        };
        let details = request.transaction.details.as_ref();
        let text = |field: &str| {
            details
                .and_then(|d| d.get(field))
                .and_then(Value::as_str)
                .map(str::trim)
        };
        let Some(iban) = text("iban").filter(|iban| !iban.is_empty() && iban.len() <= 42) else {
            return invalid(
                "transfer_funds needs transaction.details.iban, the recipient's IBAN".into(),
            );
        };
        let Some(name) =
            text("recipient_name").filter(|name| !name.is_empty() && name.len() <= 140)
        else {
            return invalid(
                "transfer_funds needs transaction.details.recipient_name (1 to 140 characters)"
                    .into(),
            );
        };
        let description = request
            .transaction
            .transaction_desc
            .as_deref()
            .map(str::trim)
            .filter(|desc| !desc.is_empty())
            .unwrap_or("Payment");
        if description.chars().count() > transformers::MAX_DESCRIPTION {
            return invalid(
                "transaction.transaction_desc must be at most 140 characters for Joompay".into(),
            );
        }
        if request.transaction.amount == 0 {
            return invalid("transaction.amount must be above 0".into());
        }
        let validate = proto::ValidateBankRecipientRequest {
            iban: iban.to_owned(),
            recipient_name: name.to_owned(),
        };
        let recipient = match self
            .call(key, validate, |request| {
                let mut client = self.payments();
                async move { client.validate_bank_recipient(request).await }
            })
            .await
        {
            Ok(Ok(recipient)) => recipient,
            other => {
                return Self::settle_read(other.map(|result| result.map(|_| ())), |_| {
                    Outcome::failed(codes::INVALID_TRANSACTION, "unreachable")
                })
            }
        };
        let transfer = Transfer {
            app_id: key.0.clone(),
            customer_ref: key.1.clone(),
            client_operation_uuid: transformers::client_operation_uuid(
                &request.app_id,
                &request.transaction_ref,
            ),
            amount_cents: request.transaction.amount,
            description: description.to_owned(),
            to_bank_recipient_id: recipient.bank_recipient_id,
            recipient_iban: iban.to_owned(),
            recipient_name: if recipient.recipient_name.is_empty() {
                name.to_owned()
            } else {
                recipient.recipient_name
            },
            authentication_id: None,
            sent_to: String::new(),
        };
        self.execute(transfer, None, Stage::First).await
    }

    /// `ExecuteBankTransfer`, with the customer's code when there is one.
    async fn execute(
        &self,
        mut transfer: Transfer,
        code: Option<&SecretString>,
        stage: Stage,
    ) -> Result<Step, ConnectorError> {
        let key = (transfer.app_id.clone(), transfer.customer_ref.clone());
        let message = proto::ExecuteBankTransferRequest {
            client_operation_uuid: transfer.client_operation_uuid.clone(),
            amount: Some(transformers::money(transfer.amount_cents)),
            description: transfer.description.clone(),
            to_bank_recipient_id: transfer.to_bank_recipient_id.clone(),
            sca_confirmation: code.map(|code| proto::ScaConfirmation {
                authentication_id: transfer.authentication_id.clone().unwrap_or_default(),
                authentication_code: code.expose().to_owned(),
            }),
        };
        let result = self
            .call(&key, message, |request| {
                let mut client = self.payments();
                async move { client.execute_bank_transfer(request).await }
            })
            .await;
        let status = match result {
            Ok(Ok(answer)) => return Ok(Step::Done(transfer.completed(&answer))),
            Ok(Err(status)) => status,
            // Asking again about a transfer that may have moved money: a
            // customer's link lost meanwhile is no answer to that.
            Err(CallError::Token(error)) if stage == Stage::Asking => {
                return Err(ConnectorError::Unavailable(format!(
                    "no token to ask Joompay about the transfer: {error:?}"
                )))
            }
            Err(error) => return Self::token_failure(error),
        };
        match classify(&status) {
            Refusal::Sca(sca) => {
                let again = transfer.authentication_id.is_some();
                transfer.authentication_id = Some(sca.authentication_id);
                transfer.sent_to = sca.sent_to;
                let prompt = match (again, stage) {
                    (true, Stage::Asking) => {
                        format!("Please enter the code again. {}", transfer.prompt())
                    }
                    (true, _) => format!("Joompay sent a new code. {}", transfer.prompt()),
                    (false, _) => transfer.prompt(),
                };
                Ok(Step::UpstreamOtp {
                    prompt,
                    deferred: Deferred::Transfer(transfer).to_value(),
                })
            }
            Refusal::Refused(reason) if reason == "invalid_sca_code" && code.is_some() => {
                Ok(Step::UpstreamOtp {
                    prompt: format!("That code was not accepted. {}", transfer.prompt()),
                    deferred: Deferred::Transfer(transfer).to_value(),
                })
            }
            Refusal::Refused(reason) => Ok(Step::Done(transformers::refused(&reason))),
            Refusal::TokenDead => Err(ConnectorError::Unavailable(
                "Joompay refused a newly issued token".into(),
            )),
            // Sent, answer unknown: the same uuid is asked again on query.
            Refusal::Unknown(why) => {
                tracing::warn!(client_operation_uuid = %transfer.client_operation_uuid, %why, "Joompay's answer to a transfer is unknown; it will be asked again");
                Ok(Step::Processing {
                    deferred: Deferred::Transfer(transfer).to_value(),
                })
            }
        }
    }
}

/// Where an execution happens in a transfer's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The first execution, or the one with the customer's code.
    First,
    /// Asking again after an answer was lost.
    Asking,
}

fn grpc_channel(config: &JoompayConfig) -> Result<Channel, ConfigError> {
    let read = |path: &Path, what: &str| {
        std::fs::read(path).map_err(|error| {
            ConfigError::Client(format!(
                "the {what} {} cannot be read: {error}",
                path.display()
            ))
        })
    };
    let certificate = read(&config.cert_file, "TPP certificate")?;
    manifold_provider_sdk::microservice::warn_if_others_may_read(&config.key_file);
    let mut key = read(&config.key_file, "TPP key")?;
    let identity = Identity::from_pem(certificate, &key);
    zeroize::Zeroize::zeroize(&mut key);
    let mut tls = ClientTlsConfig::new().identity(identity);
    if let Some(host) = config.grpc_url.host_str() {
        tls = tls.domain_name(host.trim_start_matches('[').trim_end_matches(']'));
    }
    tls = match &config.ca_file {
        Some(path) => tls.ca_certificate(Certificate::from_pem(read(path, "CA file")?)),
        None => tls.with_webpki_roots(),
    };
    let endpoint = Endpoint::from_shared(config.grpc_url.to_string())
        .map_err(|error| ConfigError::Client(format!("grpc_url: {error}")))?
        .tls_config(tls)
        .map_err(|error| ConfigError::Client(format!("the TLS settings: {error}")))?
        .timeout(config.timeout)
        .connect_timeout(config.connect_timeout);
    Ok(endpoint.connect_lazy())
}

#[async_trait]
impl Connector for JoompayConnector {
    fn serves(&self, request_type: &str) -> bool {
        matches!(
            request_type,
            LINK_ACCOUNT | GET_BALANCE | LOOKUP_ACCOUNT | GET_STATEMENT | TRANSFER_FUNDS
        )
    }

    /// Every execution of a transaction carries its `client_operation_uuid`.
    fn upstream_is_idempotent(&self) -> bool {
        true
    }

    fn is_read_only(&self, request_type: &str) -> bool {
        matches!(request_type, GET_BALANCE | LOOKUP_ACCOUNT | GET_STATEMENT)
    }

    async fn start(&self, request: &TransactRequest) -> Result<Step, ConnectorError> {
        let Some(customer_ref) = request
            .transaction
            .customer
            .customer_ref
            .as_deref()
            .filter(|customer_ref| transformers::customer_ref_is_valid(customer_ref))
        else {
            return Ok(Step::Done(Outcome::failed(
                codes::INVALID_TRANSACTION,
                "Joompay acts for the customer the app linked: transaction.customer.customer_ref must be 1 to 128 visible characters",
            )));
        };
        if request.request_type == LINK_ACCOUNT {
            return self.link(request, customer_ref).await;
        }
        let key = (request.app_id.clone(), customer_ref.to_owned());
        match request.request_type.as_str() {
            GET_BALANCE => {
                let result = self
                    .call(&key, proto::GetAccountBalanceRequest {}, |request| {
                        let mut client = self.accounts();
                        async move { client.get_account_balance(request).await }
                    })
                    .await;
                Self::settle_read(result, |answer| {
                    let mut response = json!({});
                    if let Some(balance) = &answer.balance {
                        response["balance"] = transformers::shown(balance);
                    }
                    if let Some(available) = &answer.available_balance {
                        response["available_balance"] = transformers::shown(available);
                    }
                    Outcome::successful(codes::APPROVED, "Balance retrieved")
                        .with_response(response)
                })
            }
            LOOKUP_ACCOUNT => {
                let result = self
                    .call(&key, proto::GetAccountDetailsRequest {}, |request| {
                        let mut client = self.accounts();
                        async move { client.get_account_details(request).await }
                    })
                    .await;
                Self::settle_read(result, |answer| {
                    Outcome::successful(codes::APPROVED, "Account found").with_response(json!({
                        "iban": answer.iban,
                        "bic": answer.bic,
                        "holder_name": answer.holder_name,
                        "currency": answer.currency_code,
                    }))
                })
            }
            GET_STATEMENT => self.statement(request, &key).await,
            _ => self.transfer(request, &key).await,
        }
    }

    async fn complete(
        &self,
        _transaction: TransactionContext<'_>,
        deferred: Value,
        confirmation: Confirmation,
    ) -> Result<Step, ConnectorError> {
        let Some(Deferred::Transfer(transfer)) = Deferred::from_value(&deferred) else {
            return Err(ConnectorError::Internal(
                "a Joompay transaction was kept unreadable".into(),
            ));
        };
        match &confirmation {
            Confirmation::UpstreamCode(code) | Confirmation::Answer(code) => {
                self.execute(transfer, Some(code), Stage::First).await
            }
            Confirmation::OtpVerified => Err(ConnectorError::Internal(
                "Joompay checks its own SCA codes".into(),
            )),
        }
    }

    /// A consent in progress, or a transfer whose answer was lost (asked
    /// again with the same `client_operation_uuid`).
    async fn poll(
        &self,
        _transaction: TransactionContext<'_>,
        deferred: Value,
    ) -> Result<Step, ConnectorError> {
        match Deferred::from_value(&deferred) {
            Some(Deferred::Consent { session }) => self.consent_step(&session, deferred),
            Some(Deferred::Transfer(transfer)) => self.execute(transfer, None, Stage::Asking).await,
            None => Ok(Step::Processing { deferred }),
        }
    }

    fn pending_note(&self, _transaction: TransactionContext<'_>, deferred: &Value) -> PendingNote {
        match Deferred::from_value(deferred) {
            Some(Deferred::Consent { session }) => PendingNote::new(
                "",
                "Waiting for the customer's consent at Joompay: open provider_response.consent_url in the customer's browser",
            )
            .with_response(json!({ "consent_url": self.consent_link(&session) })),
            Some(Deferred::Transfer(transfer)) => PendingNote::new(
                "",
                "The transfer was sent to Joompay and its answer was lost; each query asks again, and Joompay executes it once",
            )
            .with_response(json!({ "client_operation_uuid": transfer.client_operation_uuid })),
            None => PendingNote::default(),
        }
    }
}

impl JoompayConnector {
    async fn statement(
        &self,
        request: &TransactRequest,
        key: &CustomerKey,
    ) -> Result<Step, ConnectorError> {
        let details = request.transaction.details.as_ref();
        let page_size = match details.and_then(|d| d.get("page_size")) {
            None | Some(Value::Null) => 20,
            Some(value) => match value.as_i64() {
                Some(n) if (1..=transformers::MAX_PAGE_SIZE).contains(&n) => n as i32,
                _ => {
                    return Ok(Step::Done(Outcome::failed(
                        codes::INVALID_TRANSACTION,
                        "transaction.details.page_size must be a whole number from 1 to 100",
                    )))
                }
            },
        };
        let page_token = match details.and_then(|d| d.get("page_token")) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(token)) if token.len() <= 512 => token.clone(),
            Some(_) => return Ok(Step::Done(Outcome::failed(
                codes::INVALID_TRANSACTION,
                "transaction.details.page_token must be the next_page_token of the previous page",
            ))),
        };
        let result = self
            .call(
                key,
                proto::GetActivityScreenRequest {
                    page_size,
                    page_token,
                },
                |request| {
                    let mut client = self.accounts();
                    async move { client.get_activity_screen(request).await }
                },
            )
            .await;
        Self::settle_read(result, |screen| {
            let activities: Vec<Value> = screen
                .activities
                .iter()
                .map(|activity| {
                    let mut shown = json!({
                        "id": activity.id,
                        "direction": activity.direction,
                        "description": activity.description,
                        "counterparty_name": activity.counterparty_name,
                        "counterparty_iban": activity.counterparty_iban,
                        "status": activity.status,
                        "created_at_unix": activity.created_at_unix,
                    });
                    if !activity.client_operation_uuid.is_empty() {
                        shown["client_operation_uuid"] = json!(activity.client_operation_uuid);
                    }
                    if let Some(amount) = &activity.amount {
                        shown["amount"] = transformers::shown(amount);
                    }
                    shown
                })
                .collect();
            Outcome::successful(codes::APPROVED, "Statement retrieved").with_response(json!({
                "activities": activities,
                "next_page_token": screen.next_page_token,
            }))
        })
    }
}

/// The connector with its links store, as a provider microservice or the
/// switch opens it; see [`compiled`].
pub fn connector(
    config: JoompayConfig,
    db: &sled::Db,
    keys: Arc<DataKeys>,
) -> Result<JoompayConnector, String> {
    let tree = db
        .open_tree(LINKS_TREE)
        .map_err(|error| error.to_string())?;
    JoompayConnector::new(config, Links::new(tree, keys)).map_err(|error| error.to_string())
}

/// The connector as the switch runs it in-process (`implementation =
/// "joompay"`), configured by the route's `[providers.settings]`: its SDK
/// state in the switch's database, the customers' links in
/// `<storage.path>/`[`IN_PROCESS_DIR`], and the consent pages served on
/// `consent_listen` from the first open on.
pub fn compiled() -> CompiledJoompay {
    CompiledJoompay
}

pub struct CompiledJoompay;

impl CompiledProvider for CompiledJoompay {
    fn configure(
        &self,
        settings: &Value,
        host: &HostSettings,
    ) -> Result<Box<dyn ConfiguredProvider>, String> {
        let config = JoompayConfig::from_settings(settings)?;
        // The certificate and key are checked now, so a bad path stops
        // start-up with its setting named.
        OAuthClient::new(&config)
            .map_err(|error| format!("cert_file/key_file/ca_file: {error}"))?;
        Ok(Box::new(ConfiguredJoompay {
            config,
            host: host.clone(),
            shared: Mutex::new(None),
        }))
    }
}

struct ConfiguredJoompay {
    config: JoompayConfig,
    host: HostSettings,
    /// The links, the token cache and the consent server outlive the
    /// switch's storage generations: made on the first open, reused by the
    /// next.
    shared: Mutex<Option<(Links, Arc<CustomerTokenCache>)>>,
}

impl ConfiguredJoompay {
    fn shared(&self, data_dir: &Path) -> Result<(Links, Arc<CustomerTokenCache>), String> {
        let mut shared = self
            .shared
            .lock()
            .map_err(|_| "a previous open failed midway".to_owned())?;
        if let Some(both) = shared.as_ref() {
            return Ok(both.clone());
        }
        let dir: PathBuf = data_dir.join(IN_PROCESS_DIR);
        let db = sled::Config::new()
            .path(&dir)
            .open()
            .map_err(|error| format!("opening {}: {error}", dir.display()))?;
        let links = Links::new(
            db.open_tree(LINKS_TREE)
                .map_err(|error| error.to_string())?,
            self.host.data_keys.clone(),
        );
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "Joompay's consent pages need the switch's runtime".to_owned())?;
        let listener = std::net::TcpListener::bind(self.config.consent_listen)
            .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
            .map_err(|error| format!("consent_listen {}: {error}", self.config.consent_listen))?;
        let tokens = Arc::new(TokenCache::new(self.config.token_refresh_margin));
        let pages = ConsentPages::new(
            &self.config,
            links.clone(),
            OAuthClient::new(&self.config).map_err(|error| error.to_string())?,
            tokens.clone(),
        );
        let _guard = runtime.enter();
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|error| format!("consent_listen: {error}"))?;
        tracing::info!(address = %self.config.consent_listen, "Joompay consent pages listening");
        runtime.spawn(pages.serve(listener, std::future::pending()));
        *shared = Some((links.clone(), tokens.clone()));
        Ok((links, tokens))
    }
}

impl ConfiguredProvider for ConfiguredJoompay {
    fn open(&self, host: &Host<'_>) -> Result<Arc<dyn HostedProvider>, String> {
        let (links, tokens) = self.shared(host.data_dir)?;
        let connector = JoompayConnector::with_tokens(self.config.clone(), links.clone(), tokens)
            .map_err(|error| error.to_string())?;
        let mut settings = service_settings();
        settings.answer_durability = AnswerDurability::ByCaller;
        settings.data_keys = Some(self.host.data_keys.clone());
        settings.retention = Some(self.host.retention);
        let service = ProviderService::open(
            host.db,
            host.durability.clone(),
            host.notifier.clone(),
            connector,
            settings,
        )
        .map_err(|error| error.to_string())?;
        Ok(Arc::new(Hosted {
            service: Arc::new(service),
            links,
        }))
    }

    fn own_dir(&self) -> Option<PathBuf> {
        Some(PathBuf::from(IN_PROCESS_DIR))
    }
}

/// The SDK's service and the links beside it: resealing covers both.
struct Hosted {
    service: Arc<JoompayProvider>,
    links: Links,
}

#[async_trait]
impl HostedProvider for Hosted {
    fn provider(self: Arc<Self>) -> Arc<dyn Provider> {
        self.service.clone()
    }

    async fn reseal(&self) -> Result<usize, ServiceError> {
        let state = self.service.reseal().await?;
        let links = self.links.reseal().await.map_err(|error| {
            ServiceError::Connector(ConnectorError::Internal(error.to_string()))
        })?;
        Ok(state + links)
    }

    fn sweep(self: Arc<Self>) -> Sweeper {
        Sweeper::start(self.service.clone())
    }
}
