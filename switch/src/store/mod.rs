//! What the switch remembers, behind the [`Store`] trait.
//!
//! Everything that must outlive one HTTP call lives here: transactions with
//! their status history, the first response to every `request_ref`
//! (idempotency), and the metered calls hosts bill from. The switch holds no
//! other state, so several switches can share one store (a PostgreSQL
//! implementation is planned beside [`SledStore`]).
//!
//! Writes become visible at once but durable only at [`Store::durable`]; the
//! engine calls it before any response that reports a new state.

mod sled_store;

use async_trait::async_trait;
use manifold_provider::{ProviderReply, Status};
use serde::{Deserialize, Serialize};

pub use sled_store::SledStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database failed: {0}")]
    Database(String),
    #[error("a stored record could not be read: {0}")]
    Corrupt(String),
    #[error("the write could not be made durable: {0}")]
    NotDurable(String),
}

/// Which endpoint a request was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Transact,
    Validate,
    Query,
    Reverse,
}

/// The first answer to a `request_ref`, replayed byte for byte on repeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub http_status: u16,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestState {
    /// Claimed, and the provider may be working on it.
    InFlight {
        started_at_ms: u64,
    },
    Answered(StoredResponse),
}

/// One `request_ref` of one app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub app_id: String,
    pub request_ref: String,
    pub operation: Operation,
    pub transaction_ref: String,
    /// A digest of the request body: a repeat must match it.
    pub fingerprint: String,
    pub state: RequestState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at_ms: u64,
    pub operation: Operation,
    pub request_ref: Option<String>,
    pub status: Status,
    pub provider_response_code: Option<String>,
    pub message: String,
}

/// A reversal asked of a successful transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reversal {
    /// The request_ref of the first attempt; retries re-send it so the
    /// provider recognises the same reversal.
    pub request_ref: String,
    pub status: Status,
    pub at_ms: u64,
    pub reply: Option<ProviderReply>,
}

/// Everything the switch knows about one transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransactionRecord {
    pub app_id: String,
    pub transaction_ref: String,
    pub request_type: String,
    pub provider: String,
    pub amount: u64,
    pub status: Status,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// The provider's latest answer, relayed by `/transact/query`.
    pub last_reply: Option<ProviderReply>,
    pub history: Vec<HistoryEntry>,
    pub reversal: Option<Reversal>,
}

/// One metered call, for billing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeteredCall {
    pub at_ms: u64,
    pub app_id: String,
    pub operation: Operation,
    pub request_type: Option<String>,
    pub provider: Option<String>,
    /// The status the app was answered with.
    pub status: Status,
    pub http_status: u16,
    /// `data.error` when the switch rejected the call.
    pub error: Option<String>,
    pub inspect: bool,
}

/// An answered transaction as [`SledStore::import`] loads it: the record, the
/// request that began it (with its stored answer) and the call metered for it —
/// the three records one `/transact` leaves in the store.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedTransaction {
    pub request: RequestRecord,
    pub transaction: TransactionRecord,
    pub call: MeteredCall,
}

/// What [`Store::begin_transaction`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Begin {
    /// The request is claimed and the transaction recorded as given
    /// (`Pending` before a provider call; answered for a `read_only` one).
    Started,
    /// This `request_ref` was seen before.
    Repeat(RequestRecord),
    /// Another transaction of this app already has this `transaction_ref`.
    TransactionRefTaken,
}

/// What [`Store::claim_request`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    Started,
    Repeat(RequestRecord),
}

/// A change applied to a transaction under the store's concurrency control
/// (the record as stored when the change runs, not as the caller last read
/// it), so it must be a function of the record alone.
pub type Change<'a> = &'a (dyn Fn(&mut TransactionRecord) + Send + Sync);

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Claims `request` and records `transaction` as one step: other calls
    /// see both or neither, and after a crash a claim without its record is
    /// void (treated as never made). The engine flushes both before calling
    /// the provider, so a void claim means the provider was not called —
    /// except for a `read_only` service, where a second call is harmless.
    async fn begin_transaction(
        &self,
        request: &RequestRecord,
        transaction: &TransactionRecord,
    ) -> Result<Begin, StoreError>;
    /// Claims a `request_ref` for an operation on an existing transaction.
    async fn claim_request(&self, request: &RequestRecord) -> Result<Claim, StoreError>;
    async fn request(
        &self,
        app_id: &str,
        request_ref: &str,
    ) -> Result<Option<RequestRecord>, StoreError>;
    /// Forgets a claimed request (and the transaction it began, if given) whose
    /// provider call provably never happened, so the app may retry it.
    async fn abandon(
        &self,
        app_id: &str,
        request_ref: &str,
        transaction_ref: Option<&str>,
    ) -> Result<(), StoreError>;
    async fn transaction(
        &self,
        app_id: &str,
        transaction_ref: &str,
    ) -> Result<Option<TransactionRecord>, StoreError>;
    /// Applies `change` to the transaction and then stores `answer` as the
    /// response to `request_ref`, as one step for other calls; a crash between
    /// the two leaves the claim unanswered, and a repeat then answers the
    /// record's new state. Returns the new record.
    async fn update_transaction(
        &self,
        app_id: &str,
        transaction_ref: &str,
        change: Change<'_>,
        answer: Option<(&str, &StoredResponse)>,
    ) -> Result<Option<TransactionRecord>, StoreError>;
    async fn meter(&self, call: &MeteredCall) -> Result<(), StoreError>;
    /// The calls of `app_id` metered in `[from_ms, until_ms)`, oldest first.
    async fn metered_calls(
        &self,
        app_id: &str,
        from_ms: u64,
        until_ms: u64,
    ) -> Result<Vec<MeteredCall>, StoreError>;
    /// How many transactions are recorded, for all apps.
    async fn transaction_count(&self) -> Result<usize, StoreError>;
    /// Resolves once every write made before the call is on disk.
    async fn durable(&self) -> Result<(), StoreError>;
}
