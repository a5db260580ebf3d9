//! Everything that can go wrong inside the switch, in domain words.
//!
//! Each variant says what happened; [`crate::http`] alone decides which HTTP
//! status and `data.error` code it becomes. No variant carries a secret: the
//! crypto errors it wraps never quote plaintext. Most messages are written
//! for the app; those of a failure inside the switch ([`SwitchError::Store`],
//! [`SwitchError::Internal`]) describe its insides, so they go to the log
//! only, and the app gets what it can do and an opaque error id instead.

use manifold_crypto::message_signature::SignatureError;
use manifold_crypto::CryptoError;
use manifold_provider::Status;

/// One bad field of a request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// Dotted path in the request, e.g. `auth.secure` or `transaction.amount`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the request body is larger than the switch accepts")]
    BodyTooLarge,
    #[error("the request body did not arrive in time")]
    BodyTimedOut,
    #[error("the request has {} invalid field(s)", .0.len())]
    InvalidFields(Vec<FieldError>),
    #[error("missing or unknown API key: send `Authorization: Bearer <api_key>`")]
    Unauthenticated,
    #[error("this app must sign its requests: send Content-Digest, Signature-Input and Signature headers (RFC 9421, see docs/secure.md)")]
    SignatureRequired,
    #[error("the request signature was refused: {0}")]
    BadSignature(SignatureError),
    #[error("the signature's nonce is not this request's request_ref")]
    SignatureNonceMismatch,
    #[error("this exact signed request was already answered with nothing done; a retry must be signed anew (a later `created`, or a freshly sealed `auth.secure`)")]
    SignatureSpent,
    #[error("too many failed authentications from this address; retry in {retry_after_secs} s")]
    TooManyAuthFailures { retry_after_secs: u64 },
    /// A request_type outside the app's grants, whether or not the host
    /// configured it for another app: an app learns only its own grants.
    #[error("this app may not use request_type `{0}`")]
    ServiceNotAllowed(String),
    /// A provider outside the app's grant for the request_type, whether or
    /// not it exists.
    #[error("this app may not use provider `{provider}` for `{request_type}`")]
    ProviderNotAllowed {
        provider: String,
        request_type: String,
    },
    /// A provider the app is granted, or that carried one of its
    /// transactions, is not configured (any more): the host's to fix.
    #[error("provider `{0}` is not configured on this switch")]
    UnknownProvider(String),
    /// The app's grant names a provider that does not serve the
    /// request_type: the host's to fix.
    #[error("provider `{provider}` does not serve request_type `{request_type}`")]
    ProviderDoesNotServe {
        provider: String,
        request_type: String,
    },
    #[error("auth.secure was rejected: {0}")]
    SecureRejected(CryptoError),
    #[error(
        "transaction.amount {amount} is over this app's limit of {limit} for `{request_type}`"
    )]
    AmountOverLimit {
        amount: u64,
        limit: u64,
        request_type: String,
    },
    #[error("request_ref `{0}` was already used with a different request body")]
    RequestRefConflict(String),
    #[error("transaction_ref `{0}` is already used by another transaction of this app")]
    DuplicateTransactionRef(String),
    #[error(
        "the answer to this request_ref was dropped, with the customer data of transaction \
         `{transaction_ref}`, after the switch's retention period; the transaction ended \
         {status}, and /transact/query reports what is kept of it"
    )]
    AnswerDropped {
        transaction_ref: String,
        status: manifold_provider::Status,
    },
    #[error("no transaction `{0}` exists for this app")]
    TransactionNotFound(String),
    #[error("the first call for transaction `{0}` is still with the provider; repeat this call in a moment")]
    RequestInProgress(String),
    #[error("{field} `{given}` does not match the transaction's `{recorded}`")]
    TransactionMismatch {
        field: &'static str,
        given: String,
        recorded: String,
    },
    #[error("the transaction is {0}, so there is nothing to validate")]
    NotAwaitingValidation(Status),
    #[error("the transaction cannot be reversed: {0}")]
    NotReversible(String),
    #[error("provider `{0}` could not be reached, so nothing was done; the request may be retried unchanged")]
    ProviderUnavailable(String),
    #[error("provider `{0}` refused the request as malformed, so nothing was done")]
    ProviderRejected(String),
    #[error("provider `{0}` did not accept the switch's call, so nothing was done; the request may be retried once the host has put it right")]
    ProviderRefusedSwitch(String),
    #[error("no such endpoint: {0}")]
    NoSuchEndpoint(String),
    #[error("{0} is not allowed here; use POST")]
    MethodNotAllowed(String),
    #[error("the switch's disk is (nearly) full, so it took no new work: nothing was done or recorded for this call; retry later")]
    StorageFull,
    #[error("the switch cannot write to its store at the moment, so this call was not acknowledged; every answer the switch gave before is kept. Retry it in a moment (the same request_ref reports what became of it): the switch resumes by itself once it can write again")]
    StorageUnavailable,
    /// A rate, quota or provider limit refused the call before anything
    /// was claimed.
    #[error("{} is reached; retry in {} s", .0.limit, .0.retry_after_secs())]
    LimitExceeded(crate::limits::LimitExceeded),
    /// The text names the store's own error: for the log, never the app.
    #[error("the transaction store failed: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The switch itself failed (the engine's task panicked, say); the text
    /// is the detail, for the log, never the app.
    #[error("the switch failed internally: {0}")]
    Internal(String),
}

impl From<crate::limits::DailyQuotaError> for SwitchError {
    fn from(error: crate::limits::DailyQuotaError) -> Self {
        match error {
            crate::limits::DailyQuotaError::Exceeded(limit) => SwitchError::LimitExceeded(limit),
            crate::limits::DailyQuotaError::Store(error) => SwitchError::Store(error),
        }
    }
}
