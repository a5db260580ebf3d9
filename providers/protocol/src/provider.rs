//! The `Provider` trait: the one extension point every provider implements.

use std::time::Duration;

use async_trait::async_trait;

use crate::wire::{ProviderReply, QueryRequest, ReverseRequest, TransactRequest, ValidateRequest};

/// Something that can carry out transactions for the `request_type`s it serves.
///
/// Business outcomes — insufficient funds, a wrong OTP, a declined reversal —
/// are `Ok(ProviderReply)` with the matching [`Status`](crate::Status).
/// `Err` is reserved for "the outcome is not known or the call never happened",
/// which the switch treats very differently (see [`ProviderError::may_have_executed`]).
///
/// Implementations must be idempotent per `(app_id, transaction_ref)`: a repeated
/// `transact` for a transaction they already know answers its current state and
/// never moves money twice.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    async fn transact(&self, request: TransactRequest) -> Result<ProviderReply, ProviderError>;
    async fn validate(&self, request: ValidateRequest) -> Result<ProviderReply, ProviderError>;
    /// Errs with [`ProviderError::UnknownTransaction`] when the provider has no record.
    async fn query(&self, request: QueryRequest) -> Result<ProviderReply, ProviderError>;
    async fn reverse(&self, request: ReverseRequest) -> Result<ProviderReply, ProviderError>;

    /// Whether `request_type` only reads (harmless to call twice), if this
    /// provider knows: the switch checks its host's `read_only` list against
    /// it at start-up. `None` for a provider reached over the network, which
    /// checks each call's [`TransactRequest::read_only`] instead.
    fn read_only(&self, request_type: &str) -> Option<bool> {
        let _ = request_type;
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The request never left: nothing can have happened at the provider.
    #[error("the provider could not be reached: {0}")]
    Unreachable(String),
    #[error("the provider did not answer within {0:?}")]
    TimedOut(Duration),
    #[error("the provider's answer is not the provider protocol: {0}")]
    BadReply(String),
    #[error("the provider has no record of this transaction")]
    UnknownTransaction,
    #[error("the provider rejected the request as malformed: {0}")]
    Rejected(String),
    /// The provider refused the switch's signature, so it did nothing.
    #[error("the provider refused the switch's signature (check the provider's secret, key_id and clock): {0}")]
    Unauthenticated(String),
    #[error("the provider failed internally: {0}")]
    Internal(String),
}

impl ProviderError {
    /// A short name for the kind of failure, for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Unreachable(_) => "unreachable",
            ProviderError::TimedOut(_) => "timeout",
            ProviderError::BadReply(_) => "bad_reply",
            ProviderError::UnknownTransaction => "unknown_transaction",
            ProviderError::Rejected(_) => "rejected",
            ProviderError::Unauthenticated(_) => "unauthenticated",
            ProviderError::Internal(_) => "internal",
        }
    }

    /// Whether the provider may have acted on the request even though no
    /// answer came back. When true the switch must record the transaction as
    /// `Pending` and settle it by query later, never by calling again blindly.
    pub fn may_have_executed(&self) -> bool {
        !matches!(
            self,
            ProviderError::Unreachable(_)
                | ProviderError::UnknownTransaction
                | ProviderError::Rejected(_)
                | ProviderError::Unauthenticated(_)
        )
    }
}
