//! What the switch remembers, behind the [`Store`] trait.
//!
//! Everything that must outlive one HTTP call lives here: transactions with
//! their status history and the answer to every `request_ref` that acted on
//! them (idempotency), and the metered calls hosts bill from. The switch
//! holds no other state, so several switches can share one store
//! ([`PgStore`], beside the embedded [`SledStore`]).
//!
//! One record per transaction: it carries the requests made of it, each with
//! its fingerprint and, once answered, the provider's reply the answer was
//! rendered from, so an answer is stored once and a `request_ref` look-up is
//! one small pointer and the record it points at.
//!
//! Writes become visible at once but durable only at [`Store::durable`],
//! which is the only source of a [`Durable`] proof; the engine cannot build
//! an answer that reports a new state without one.

mod codec;
mod dump;
pub mod migrate;
mod packed_json;
mod postgres;
mod sealing;
mod sled_store;
pub mod space;
#[cfg(test)]
pub(crate) mod suite;

use async_trait::async_trait;
use manifold_provider::{ProviderReply, Status};
use serde::{Deserialize, Serialize};

pub use dump::transaction_json;
pub use postgres::{ImportBatch, Imported, PgStore, PostgresOptions};
pub use sled_store::{
    CallsInFlight, CommitStats, EncodedSizes, SledStore, StoreOptions, COMMIT_BATCH,
    COMMIT_BATCH_HELP, COMMIT_SECONDS, COMMIT_SECONDS_HELP, FORMAT,
};
pub use space::{FreeSpace, SpaceShort};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database failed: {0}")]
    Database(String),
    /// sled lets one process open a database: another holds this one.
    #[error(
        "another process holds the data directory {0}: a second switch, or `manifold --dump` or `--reseal`, cannot open it while a switch runs on it"
    )]
    InUse(String),
    #[error("a stored record could not be read: {0}")]
    Corrupt(String),
    #[error("the write could not be made durable: {0}")]
    NotDurable(String),
    #[error("{0}")]
    UnsupportedFormat(String),
    /// A record is sealed under a data key this store was not given.
    #[error("{0}")]
    Sealed(String),
}

/// The first history entry of every transaction (stored as a number).
pub const RECEIVED: &str = "Received; sent to the provider";

/// Which endpoint a request was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Transact,
    Validate,
    Query,
    Reverse,
}

impl Operation {
    /// The name billing and the admin API use: `transact`, `validate`,
    /// `query`, `reverse` (as in serde).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Transact => "transact",
            Operation::Validate => "validate",
            Operation::Query => "query",
            Operation::Reverse => "reverse",
        }
    }
}

/// A digest of a request body: a repeat of its `request_ref` must match it.
pub type Fingerprint = [u8; 32];

/// The answer to a `request_ref`: the provider's reply it was rendered from.
/// Rendering is deterministic, so a repeat is answered byte for byte.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAnswer {
    pub http_status: u16,
    pub reply: ProviderReply,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RequestState {
    /// Claimed, and the provider may be working on it.
    InFlight {
        started_at_ms: u64,
    },
    Answered(StoredAnswer),
}

/// One `request_ref` that acted on a transaction (`/transact`,
/// `/transact/validate` or `/transact/reverse`; queries claim nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct RequestEntry {
    pub request_ref: String,
    pub operation: Operation,
    pub fingerprint: Fingerprint,
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
#[derive(Debug, Clone, PartialEq)]
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
    /// The requests that acted on it, the `/transact` that began it first.
    pub requests: Vec<RequestEntry>,
    /// When its customer data (the providers' replies, their messages) was
    /// dropped after the retention period; what stays is its status, amount,
    /// history without messages, and fingerprints.
    pub customer_data_dropped_at_ms: Option<u64>,
}

/// A history message after its transaction's customer data was dropped.
pub const DROPPED_MESSAGE: &str = "(dropped after the retention period)";

impl TransactionRecord {
    /// Drops the customer data of a final transaction at `at_ms`: every
    /// reply's message and `provider_response` (statuses and codes stay),
    /// the latest reply, and the history's messages. Idempotent.
    pub fn drop_customer_data(&mut self, at_ms: u64) {
        if self.customer_data_dropped_at_ms.is_some() {
            return;
        }
        let strip = |reply: &mut ProviderReply| {
            reply.message.clear();
            reply.provider_response = None;
        };
        for request in &mut self.requests {
            if let RequestState::Answered(answer) = &mut request.state {
                strip(&mut answer.reply);
            }
        }
        self.last_reply = None;
        if let Some(reply) = self.reversal.as_mut().and_then(|r| r.reply.as_mut()) {
            strip(reply);
        }
        for entry in &mut self.history {
            if entry.message != RECEIVED {
                entry.message = DROPPED_MESSAGE.to_owned();
            }
        }
        self.customer_data_dropped_at_ms = Some(at_ms);
    }

    /// Whether retention may drop its customer data: final, with nothing
    /// left to ask of the provider (a reversal still pending is not).
    pub fn is_settled(&self) -> bool {
        self.status.is_final()
            && self
                .requests
                .iter()
                .all(|r| matches!(r.state, RequestState::Answered(_)))
            && self.reversal.as_ref().is_none_or(|r| r.status.is_final())
    }

    /// What identifies it and where it stands, as JSON: the part every
    /// report of a transaction shares (a query's answer, the admin API's
    /// listing, `--dump`), each adding its own members.
    pub fn summary_json(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::from_iter([
            (
                "transaction_ref".into(),
                self.transaction_ref.clone().into(),
            ),
            ("request_type".into(), self.request_type.clone().into()),
            ("provider".into(), self.provider.clone().into()),
            ("amount".into(), self.amount.into()),
            ("status".into(), self.status.as_str().into()),
            ("created_at_ms".into(), self.created_at_ms.into()),
            ("updated_at_ms".into(), self.updated_at_ms.into()),
        ])
    }

    pub fn request(&self, request_ref: &str) -> Option<&RequestEntry> {
        self.requests.iter().find(|r| r.request_ref == request_ref)
    }

    /// The `/transact` that began it.
    pub fn first_request(&self) -> Option<&RequestEntry> {
        self.requests
            .first()
            .filter(|r| r.operation == Operation::Transact)
    }
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
    /// The transaction the call acted on, when it reached one.
    pub transaction_ref: Option<String>,
    /// That transaction's amount in minor units, for value-based fees.
    pub amount: Option<u64>,
    /// Answered again from what a repeated `request_ref` was first answered.
    pub repeat: bool,
    /// This call's answer first moved its transaction to `Successful`: one
    /// call per successful transaction, the one a value fee is charged on.
    pub completed: bool,
    /// What the fees in force when it was made priced it at.
    pub price: Option<manifold_billing::Price>,
}

/// An answered transaction as [`SledStore::import`] loads it, with the call
/// metered for it: what one `/transact` leaves in the store.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedTransaction {
    pub transaction: TransactionRecord,
    pub call: MeteredCall,
}

/// What the store knows of a `request_ref`.
// Short-lived (one per look-up), so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum KnownRequest {
    /// Claimed by a call that is still running and has recorded nothing of
    /// it yet (a `read_only` enquiry, or an operation on an existing
    /// transaction before the provider answered).
    Running {
        operation: Operation,
        transaction_ref: String,
        fingerprint: Fingerprint,
        started_at_ms: u64,
    },
    /// Recorded in its transaction.
    Recorded {
        request: RequestEntry,
        transaction: TransactionRecord,
    },
}

impl KnownRequest {
    pub fn fingerprint(&self) -> &Fingerprint {
        match self {
            KnownRequest::Running { fingerprint, .. } => fingerprint,
            KnownRequest::Recorded { request, .. } => &request.fingerprint,
        }
    }
}

/// What [`Store::begin_transaction`] and [`Store::begin_enquiry`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Begin {
    /// The request is claimed (and, for `begin_transaction`, the transaction
    /// recorded as given).
    Started,
    /// This `request_ref` was seen before.
    Repeat(Box<KnownRequest>),
    /// Another transaction of this app already has this `transaction_ref`.
    TransactionRefTaken,
}

/// What [`Store::claim_request`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    Started,
    Repeat(Box<KnownRequest>),
}

/// Proof that everything written before it was made is on disk. Only
/// [`Store::durable`] makes one (stores construct it with
/// [`Durable::after_flush`]); the engine asks for it wherever an answer
/// reports state.
#[derive(Debug, Clone, Copy)]
pub struct Durable(());

impl Durable {
    /// For [`Store`] implementations, once their flush has completed.
    pub fn after_flush() -> Durable {
        Durable(())
    }
}

/// A change applied to a transaction under the store's concurrency control
/// (the record as stored when the change runs, not as the caller last read
/// it), so it must be a function of the record alone.
pub type Change<'a> = &'a (dyn Fn(&mut TransactionRecord) + Send + Sync);

/// Where a store keeps the claims of calls in flight: in the process (sled
/// is one process by construction, so a claim dies with the process that
/// made it, and only final records need reach disk), or in the database
/// (shared by several switches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimsLiveIn {
    Process,
    Database,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Where this store keeps claims in flight.
    fn claims_live_in(&self) -> ClaimsLiveIn;

    /// Claims the first request of `transaction` (`requests[0]`, in flight)
    /// and records the transaction as one step: other calls see both or
    /// neither, and after a crash a claim without its record is void
    /// (treated as never made). The engine flushes both before calling the
    /// provider, so a void claim means the provider was not called.
    async fn begin_transaction(&self, transaction: &TransactionRecord)
        -> Result<Begin, StoreError>;
    /// Claims the first request of `transaction` and its `transaction_ref`
    /// for a `read_only` service (a second call is harmless), recording
    /// nothing until [`Store::update_transaction`] records the answer: the
    /// record is written once, complete. Until then
    /// [`Store::transaction`] shows it as given. A store whose claims live
    /// in the database may write it at once.
    async fn begin_enquiry(&self, transaction: &TransactionRecord) -> Result<Begin, StoreError>;
    /// Claims `request` (in flight) for an operation on an existing
    /// transaction; it is recorded with its answer.
    async fn claim_request(
        &self,
        app_id: &str,
        transaction_ref: &str,
        request: &RequestEntry,
    ) -> Result<Claim, StoreError>;
    async fn request(
        &self,
        app_id: &str,
        request_ref: &str,
    ) -> Result<Option<KnownRequest>, StoreError>;
    /// Forgets a claimed request (and the transaction it began, when
    /// `began_transaction`) whose provider call provably never happened, so
    /// the app may retry it.
    async fn abandon(
        &self,
        app_id: &str,
        request_ref: &str,
        transaction_ref: &str,
        began_transaction: bool,
    ) -> Result<(), StoreError>;
    /// The transaction as known now, an enquiry in flight included.
    async fn transaction(
        &self,
        app_id: &str,
        transaction_ref: &str,
    ) -> Result<Option<TransactionRecord>, StoreError>;
    /// Applies `change` to the transaction and records `answer` as the answer
    /// to the claimed `request_ref`, as one step for other calls (a crash in
    /// between leaves the claim unanswered, or void, never an answer without
    /// its state). Returns the new record, or `None` if there is none.
    async fn update_transaction(
        &self,
        app_id: &str,
        transaction_ref: &str,
        change: Change<'_>,
        answer: Option<(&str, StoredAnswer)>,
    ) -> Result<Option<TransactionRecord>, StoreError>;
    /// Counts a call for billing. It reaches disk within a few milliseconds
    /// (the sled store gathers calls into batches first:
    /// `METERING_BATCH_AGE`), and within a fraction of a second even when no
    /// flush is asked for. On a shared database it is queued instead, and
    /// written by the store's own task within a batch or two (while the
    /// database is away, once it answers again); [`Store::durable`] does not
    /// wait for it, a read of metered calls does. An error means the call
    /// was not kept.
    async fn meter(&self, call: &MeteredCall) -> Result<(), StoreError>;
    /// [`Store::meter`] for a call that a daily quota counts again after a
    /// restart: the sled store writes it, and every call metered before it,
    /// with its next commit, so a crash after later calls have committed
    /// cannot make the quota let more through. By default (PostgreSQL's
    /// queue) the same as [`Store::meter`].
    async fn meter_promptly(&self, call: &MeteredCall) -> Result<(), StoreError> {
        self.meter(call).await
    }
    /// The calls of `app_id` metered in `[from_ms, until_ms)`, oldest first.
    async fn metered_calls(
        &self,
        app_id: &str,
        from_ms: u64,
        until_ms: u64,
    ) -> Result<Vec<MeteredCall>, StoreError>;
    /// Hands `each` every call of `app_id` metered in `[from_ms, until_ms)`,
    /// a batch at a time, so a long period is never all in memory; oldest
    /// batch first, not sorted within one.
    async fn each_metered(
        &self,
        app_id: &str,
        from_ms: u64,
        until_ms: u64,
        each: &mut (dyn for<'c> FnMut(&'c MeteredCall) + Send),
    ) -> Result<(), StoreError> {
        for call in self.metered_calls(app_id, from_ms, until_ms).await? {
            each(&call);
        }
        Ok(())
    }
    /// How many calls of `app_id` metered in `[from_ms, until_ms)` match
    /// `filter`, counted as [`Store::each_metered`] hands them over (never
    /// all in memory at once).
    async fn count_metered(
        &self,
        app_id: &str,
        from_ms: u64,
        until_ms: u64,
        filter: &(dyn for<'c> Fn(&'c MeteredCall) -> bool + Sync),
    ) -> Result<u64, StoreError> {
        let mut count = 0;
        self.each_metered(app_id, from_ms, until_ms, &mut |call| {
            count += u64::from(filter(call));
        })
        .await?;
        Ok(count)
    }
    /// Drops the customer data ([`TransactionRecord::drop_customer_data`])
    /// of every settled transaction last updated at or before
    /// `settled_before_ms`, marking it dropped at `now_ms`; returns how many.
    /// Durable at the next [`Store::durable`].
    async fn drop_customer_data(
        &self,
        settled_before_ms: u64,
        now_ms: u64,
    ) -> Result<usize, StoreError>;
    /// How many transactions are recorded, for all apps.
    async fn transaction_count(&self) -> Result<usize, StoreError>;
    /// Resolves once every write made before the call is on disk, metered
    /// calls aside where [`Store::meter`] says so.
    async fn durable(&self) -> Result<Durable, StoreError>;
}
