//! The [`Connector`] trait: the only code a provider author writes.
//!
//! A connector knows one upstream API and nothing of the switch protocol,
//! OTPs or storage. Each method calls the upstream and says what happened as
//! a [`Step`]; the SDK's [`ProviderService`](crate::ProviderService) turns
//! steps into protocol answers, keeps the state between them in sled, sends
//! and checks OTPs, and answers repeats and queries from what it stored.
//!
//! The rule from hyperswitch's connectors applies: a connector reaches a final
//! status only when its upstream said so explicitly. When the upstream's
//! answer is unknown (a timeout after the request left), return
//! [`ConnectorError::Indeterminate`] or [`Step::Processing`], never a guess.

use async_trait::async_trait;
use manifold_crypto::SecretString;
use manifold_provider::{Status, TransactRequest};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::state::Contact;

/// What an upstream call achieved.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The transaction is final.
    Done(Outcome),
    /// The upstream work is done and its answer is in `deferred`; the
    /// customer must confirm with an OTP that the SDK sends, unless the app's
    /// `otp_override` is true, in which case [`Connector::complete`] is called
    /// at once with [`Confirmation::OtpVerified`]. Seed 003's "Special notes
    /// for OTP override" is exactly this step. `recipient` says where the
    /// code goes: the connector must choose.
    ConfirmWithOtp {
        deferred: Value,
        recipient: OtpRecipient,
    },
    /// The upstream sent the customer a code itself (SCA, 2FA): the
    /// transaction is `WaitingForOTP` with `prompt` as its message, and the
    /// code the customer types reaches [`Connector::complete`] as
    /// [`Confirmation::UpstreamCode`] for the upstream to check.
    UpstreamOtp { prompt: String, deferred: Value },
    /// The upstream needs other information: the transaction is
    /// `PendingValidation` with `prompt` as its message, and the answer
    /// reaches [`Connector::complete`] as [`Confirmation::Answer`]. Return
    /// this step again from `complete` to say the answer was not accepted;
    /// the SDK counts the attempts.
    AskCustomer { prompt: String, deferred: Value },
    /// The upstream accepted the request and decides later (a queue, an
    /// accept/decline by an operator). The transaction is `Pending`; the SDK
    /// calls [`Connector::poll`] when it is queried.
    Processing { deferred: Value },
}

/// Where the SDK sends the code of a [`Step::ConfirmWithOtp`].
///
/// An OTP proves that whoever holds the destination agrees to the
/// transaction, so the destination decides what it proves. Seed 003: "send
/// an OTP to the phone number attached to the source".
#[derive(Debug, Clone, PartialEq)]
pub enum OtpRecipient {
    /// The account holder's phone or e-mail as the connector or its upstream
    /// has it on record: the code proves the holder's consent. Use this
    /// whenever the upstream knows one.
    AccountHolder(Contact),
    /// The contact in the request: an `msisdn` source's own number, else
    /// `customer.mobile_no`, then `customer.email`. The calling app chooses
    /// these, so the code proves only that somebody at a number the app
    /// named saw it — no more than the app's own word — and an app could
    /// point codes at a number it controls, or use the provider to send
    /// SMS anywhere up to the send limits. Only for an upstream with no
    /// contact of its own, where the host trusts the app to know its
    /// customer (a mobile-money source is its own phone, so it is sound
    /// there).
    ContactInRequest,
}

/// A final answer: `Successful` or `Failed`, with the upstream's code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub(crate) successful: bool,
    pub code: String,
    pub message: String,
    pub response: Option<Value>,
    /// What [`Connector::reverse`] needs to undo this transaction; `None`
    /// means it cannot be reversed.
    pub reversal: Option<Value>,
}

impl Outcome {
    pub fn successful(code: &str, message: impl Into<String>) -> Self {
        Outcome {
            successful: true,
            code: code.to_owned(),
            message: message.into(),
            response: None,
            reversal: None,
        }
    }

    pub fn failed(code: &str, message: impl Into<String>) -> Self {
        Outcome {
            successful: false,
            code: code.to_owned(),
            message: message.into(),
            response: None,
            reversal: None,
        }
    }

    /// The upstream's answer, relayed to the app as `provider_response`.
    pub fn with_response(mut self, response: Value) -> Self {
        self.response = Some(response);
        self
    }

    /// Marks a successful outcome as reversible, keeping what the reversal needs.
    pub fn reversible_with(mut self, reversal: Value) -> Self {
        self.reversal = Some(reversal);
        self
    }

    pub fn status(&self) -> Status {
        if self.successful {
            Status::Successful
        } else {
            Status::Failed
        }
    }

    pub fn is_successful(&self) -> bool {
        self.successful
    }
}

/// What the app is told about a transaction that waits on the upstream
/// (`Pending`): see [`Connector::pending_note`].
#[derive(Debug, Clone, PartialEq)]
pub struct PendingNote {
    /// `provider_response_code`; empty when the upstream gave none.
    pub code: String,
    pub message: String,
    /// `provider_response`: what the upstream answered so far, if anything.
    pub response: Option<Value>,
}

impl PendingNote {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        PendingNote {
            code: code.to_owned(),
            message: message.into(),
            response: None,
        }
    }

    pub fn with_response(mut self, response: Value) -> Self {
        self.response = Some(response);
        self
    }
}

impl Default for PendingNote {
    fn default() -> Self {
        PendingNote::new("", "The upstream is still processing this transaction")
    }
}

/// How the customer confirmed a transaction that was waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmation {
    /// The SDK verified the OTP it sent (or `otp_override` waived it).
    OtpVerified,
    /// The code the upstream sent, for the upstream to check.
    UpstreamCode(SecretString),
    /// The answer to the prompt of a [`Step::AskCustomer`].
    Answer(SecretString),
}

/// One transaction as a connector sees it after `start`.
#[derive(Debug, Clone, Copy)]
pub struct TransactionContext<'a> {
    pub app_id: &'a str,
    pub transaction_ref: &'a str,
    pub request_type: &'a str,
}

/// Why a connector could not say what happened.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectorError {
    /// The upstream was not reached, or refused before doing anything:
    /// nothing happened and the call may be made again.
    #[error("the upstream is unavailable: {0}")]
    Unavailable(String),
    /// The request reached the upstream but its outcome is unknown. The SDK
    /// keeps the transaction `Pending` and asks [`Connector::poll`] later.
    #[error("the upstream's outcome is unknown: {0}")]
    Indeterminate(String),
    /// Only from [`Connector::poll`]: the upstream has no record of the
    /// transaction, so it never happened there. The SDK forgets it: a query
    /// answers "unknown transaction" (the switch then fails it once its grace
    /// period has passed) and a repeated transact starts it afresh.
    #[error("the upstream has no record of the transaction")]
    NotFound,
    /// A bug or broken invariant in the connector itself.
    #[error("the connector failed: {0}")]
    Internal(String),
}

/// One upstream API, wrapped. See the crate documentation for a worked example.
#[async_trait]
pub trait Connector: Send + Sync + 'static {
    /// The `request_type`s this provider serves; others are answered `Failed`
    /// without calling the connector.
    fn serves(&self, request_type: &str) -> bool;

    /// Whether a repeated [`start`](Connector::start) for the same
    /// `(app_id, transaction_ref)` is safe because the upstream deduplicates
    /// by it (an idempotency key). When false, the SDK durably marks the
    /// transaction as started before calling the upstream, and after a crash
    /// asks [`poll`](Connector::poll) instead of starting it again.
    fn upstream_is_idempotent(&self) -> bool {
        false
    }

    /// Whether `request_type` only reads (a balance or name enquiry), so that
    /// starting or completing it twice is harmless. The SDK then writes no
    /// durable marker before [`start`](Connector::start) or
    /// [`complete`](Connector::complete), since a crash during either leaves
    /// nothing to finish, and keeps no record of an outcome reached within
    /// the call that began it (`start`'s answer, or `complete`'s under
    /// `otp_override`): a repeat asks the upstream again, and a query of it
    /// finds nothing. The default, false, treats every call as one that may move
    /// money.
    fn is_read_only(&self, request_type: &str) -> bool {
        let _ = request_type;
        false
    }

    /// Calls the upstream for a new transaction.
    async fn start(&self, request: &TransactRequest) -> Result<Step, ConnectorError>;

    /// Continues a transaction after the customer confirmed it. `deferred` is
    /// what the previous step stored.
    async fn complete(
        &self,
        transaction: TransactionContext<'_>,
        deferred: Value,
        confirmation: Confirmation,
    ) -> Result<Step, ConnectorError>;

    /// Asks the upstream about a transaction that is `Pending`. `deferred` is
    /// what [`Step::Processing`] stored; or the data a [`complete`](Connector::complete)
    /// call was given when that call was interrupted (a crash, an unknown
    /// outcome) — finish it the way `complete` would, which must therefore be
    /// safe to repeat; or `null` when the SDK lost track of a started call (a
    /// crash before its answer was stored) — then look the transaction up
    /// upstream by its `transaction_ref`, and answer
    /// [`ConnectorError::NotFound`] if the upstream never got it. The default
    /// knows nothing more and keeps it pending.
    async fn poll(
        &self,
        transaction: TransactionContext<'_>,
        deferred: Value,
    ) -> Result<Step, ConnectorError> {
        let _ = transaction;
        Ok(Step::Processing { deferred })
    }

    /// What the app is told while a transaction is `Pending` on the upstream:
    /// `deferred` is what the last [`Step::Processing`] stored, or `null`
    /// when a call was sent and its outcome is unknown (a timeout, a crash
    /// before its answer was stored). Say exactly what is known: an upstream
    /// that cannot be asked (no status look-up) leaves a transaction
    /// `Pending` for good, and the app must learn that from this message,
    /// never from a settlement the upstream did not report. The default says
    /// the upstream is still processing it.
    fn pending_note(&self, transaction: TransactionContext<'_>, deferred: &Value) -> PendingNote {
        let _ = (transaction, deferred);
        PendingNote::default()
    }

    /// Undoes a successful transaction with the value given to
    /// [`Outcome::reversible_with`]. The SDK calls it at most once per
    /// transaction and records the result; a refusal is a `Failed` outcome.
    async fn reverse(
        &self,
        transaction: TransactionContext<'_>,
        reversal: Value,
    ) -> Result<Outcome, ConnectorError> {
        let _ = (transaction, reversal);
        Ok(Outcome::failed(
            crate::codes::NOT_REVERSIBLE,
            "This provider does not reverse transactions",
        ))
    }
}
