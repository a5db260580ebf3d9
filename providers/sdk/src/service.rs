//! [`ProviderService`]: a [`Connector`] made into a complete [`Provider`].
//!
//! The service runs the conversation of seed 003 around the connector's
//! upstream calls: it answers repeats and queries from what it stored, sends
//! and checks OTPs, carries prompts and pending upstream work, and makes every
//! new state durable (group commit, or in-process the switch's journal:
//! [`StateDurability`]) before it answers — or, in-process, leaves that to
//! the switch ([`AnswerDurability`]) — and always before anything
//! leaves the process because of it. The same value serves in-process inside
//! the switch or as a microservice ([`crate::microservice`]).
//!
//! Concurrency: every operation on one transaction runs under that
//! transaction's lock (a striped set of async mutexes), so a validate racing a
//! query, the expiry sweep or a repeated transact sees one consistent state.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use manifold_crypto::{DataKeys, SecretString, SourceDetails, ValidationInput};
use manifold_provider::durable::DurabilityError;
use manifold_provider::notify::{mask_destination, Channel, OneTimeCode};
use manifold_provider::{
    GroupCommit, Notification, Notifier, NotifyError, Provider, ProviderError, ProviderReply,
    QueryRequest, ReverseRequest, SharedLog, Status, TransactRequest, ValidateRequest,
};
use serde_json::Value;
use tokio::sync::{Mutex, MutexGuard};

use crate::clock::{Clock, SystemClock};
use crate::codes;
use crate::connector::{
    Confirmation, Connector, ConnectorError, OtpRecipient, Outcome, Step, TransactionContext,
};
use crate::otp::{OtpKeeper, OtpPolicy, SendLimits};
use crate::shared::{SharedLock, SharedState};
use crate::state::{
    transaction_key, Awaiting, Contact, FinalRecord, PendingEntry, ReversalRecord, StateStore,
    ToReseal,
};

/// What a [`ProviderService::ask`] puts to the customer.
#[derive(Debug, Clone, Copy)]
enum Question {
    UpstreamCode,
    Prompt,
}

/// A connector may chain `ConfirmWithOtp` steps under `otp_override`; more
/// than this many in one call is a connector bug, not a conversation.
const MAX_CHAINED_STEPS: usize = 8;
const LOCK_STRIPES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("the provider's store failed: {0}")]
    Store(#[from] sled::Error),
    #[error("the provider's shared state failed: {0}")]
    Database(String),
    #[error("a stored record could not be read: {0}")]
    Corrupt(String),
    /// A value is sealed under a data key the service was not given.
    #[error("{0}")]
    Sealed(String),
    #[error(transparent)]
    Durability(#[from] DurabilityError),
    /// State that must be on disk before the service acts could not be
    /// stored, so it did not act.
    #[error("nothing was done: the provider could not store its state first ({0})")]
    NothingDone(Box<ServiceError>),
    #[error(transparent)]
    Connector(#[from] ConnectorError),
}

impl From<ServiceError> for ProviderError {
    fn from(error: ServiceError) -> Self {
        match error {
            // Nothing happened upstream: the switch may treat it as never sent.
            ServiceError::Connector(ConnectorError::Unavailable(reason)) => {
                ProviderError::Unreachable(reason)
            }
            nothing_done @ ServiceError::NothingDone(_) => {
                ProviderError::Unreachable(nothing_done.to_string())
            }
            other => ProviderError::Internal(other.to_string()),
        }
    }
}

/// Settings of one provider built on the SDK.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Prefix of the provider's sled trees (`<namespace>/pending`, …); lets
    /// several providers share one database, such as the switch's.
    pub namespace: String,
    /// How the provider names itself to customers, in OTP messages.
    pub display_name: String,
    pub otp: OtpPolicy,
    /// How often expired codes and prompts are swept into `Failed`.
    pub sweep_interval: Duration,
    pub answer_durability: AnswerDurability,
    /// The keys pending entries and final records are sealed under at rest
    /// (see `state.rs`); `None` keeps them in clear, for tests and
    /// embedders only: every provider binary requires one
    /// ([`crate::microservice::ServeArgs`]).
    pub data_keys: Option<Arc<DataKeys>>,
    /// How long a final record keeps its customer data; `None` keeps it.
    pub retention: Option<Duration>,
}

/// Who makes the state behind an answer durable before anyone relies on it.
///
/// Either way, state is durable before anything leaves the process because
/// of it: before an OTP is sent, before `complete` or a non-idempotent
/// `start` may move money upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerDurability {
    /// The service waits for the group commit before answering: its answer
    /// leaves the process (a microservice).
    BeforeAnswering,
    /// The caller does. Only for a provider running in-process on the
    /// switch's own database: with [`StateDurability::SwitchLog`] its writes
    /// are entries of the switch's journal, which the switch's next commit
    /// makes durable with its own record of the answer; with a
    /// [`StateDurability::GroupCommit`] of that database, the service marks
    /// its writes with [`GroupCommit::leave_flush_to_caller`] and the switch
    /// flushes them before its own commit. Either way that commit comes
    /// before the app hears of the answer, so waiting here as well would cost
    /// a second round for nothing.
    ByCaller,
}

impl ServiceSettings {
    pub fn new(namespace: &str, display_name: &str) -> Self {
        ServiceSettings {
            namespace: namespace.to_owned(),
            display_name: display_name.to_owned(),
            otp: OtpPolicy::default(),
            sweep_interval: Duration::from_secs(5),
            answer_durability: AnswerDurability::BeforeAnswering,
            data_keys: None,
            retention: None,
        }
    }
}

/// How a provider's state reaches disk.
#[derive(Clone)]
pub enum StateDurability {
    /// Its trees are written to sled, and this group commit flushes the
    /// database they are in: a microservice's own database.
    GroupCommit(GroupCommit),
    /// In-process on the switch's database: its trees are written through
    /// the switch's write-ahead log, so they reach disk in the switch's own
    /// commits, and sled is not flushed on an answer's path.
    SwitchLog(Arc<dyn SharedLog>),
    /// On the shared PostgreSQL state ([`crate::shared`]): every write is
    /// committed, so durable, before it returns.
    Shared,
}

impl From<GroupCommit> for StateDurability {
    fn from(commit: GroupCommit) -> Self {
        StateDurability::GroupCommit(commit)
    }
}

impl StateDurability {
    /// Resolves once every state write made before the call is on disk.
    pub(crate) async fn durable(&self) -> Result<(), DurabilityError> {
        match self {
            StateDurability::GroupCommit(commit) => commit.durable().await,
            StateDurability::SwitchLog(log) => log.durable().await,
            StateDurability::Shared => Ok(()),
        }
    }

    /// Leaves the writes made so far to the caller's next commit.
    fn leave_to_caller(&self) {
        match self {
            StateDurability::GroupCommit(commit) => commit.leave_flush_to_caller(),
            // One log: the switch's next commit carries them, in order.
            StateDurability::SwitchLog(_) => {}
            StateDurability::Shared => {}
        }
    }

    fn log(&self) -> Option<&Arc<dyn SharedLog>> {
        match self {
            StateDurability::GroupCommit(_) | StateDurability::Shared => None,
            StateDurability::SwitchLog(log) => Some(log),
        }
    }
}

/// A connector with everything a provider needs around it.
pub struct ProviderService<C> {
    connector: C,
    state: StateStore,
    otps: OtpKeeper,
    send_limits: SendLimits,
    commit: StateDurability,
    notifier: Arc<dyn Notifier>,
    clock: Arc<dyn Clock>,
    settings: ServiceSettings,
    locks: Vec<Mutex<()>>,
    /// With the shared state, the locks every instance honours.
    shared: Option<SharedState>,
}

/// A transaction held for one call: against the other calls of this
/// process, and with the shared state against every other instance.
struct Held<'a> {
    _here: MutexGuard<'a, ()>,
    _everywhere: Option<SharedLock>,
}

impl<C: Connector> ProviderService<C> {
    /// Opens the provider's trees in `db` (its own database, or the switch's
    /// when it runs in-process). `commit` must flush that same `db`, or be
    /// the switch's log in front of it.
    pub fn open(
        db: &sled::Db,
        commit: impl Into<StateDurability>,
        notifier: Arc<dyn Notifier>,
        connector: C,
        settings: ServiceSettings,
    ) -> Result<Self, ServiceError> {
        let commit = commit.into();
        // First: a state sealed under a key not given is refused here,
        // naming the key, before the OTP hash key fails to open.
        let state = StateStore::open(
            db,
            &settings.namespace,
            settings.data_keys.clone(),
            commit.log(),
        )?;
        Ok(ProviderService {
            otps: OtpKeeper::open(
                db,
                &settings.namespace,
                settings.otp.digits,
                settings.data_keys.as_ref(),
            )?,
            send_limits: SendLimits::new(&settings.otp),
            state,
            connector,
            commit,
            notifier,
            clock: Arc::new(SystemClock),
            settings,
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            shared: None,
        })
    }

    /// Opens the provider's state in the shared PostgreSQL `state`, so
    /// every instance of it serves every transaction: a code issued by one
    /// is checked by another, and a transaction is worked on by one
    /// instance at a time.
    pub async fn open_shared(
        state: SharedState,
        notifier: Arc<dyn Notifier>,
        connector: C,
        settings: ServiceSettings,
    ) -> Result<Self, ServiceError> {
        let store =
            StateStore::open_shared(&state, &settings.namespace, settings.data_keys.clone())
                .await?;
        Ok(ProviderService {
            otps: OtpKeeper::open_shared(
                store.meta(),
                settings.otp.digits,
                settings.data_keys.as_ref(),
            )
            .await?,
            send_limits: SendLimits::new(&settings.otp),
            state: store,
            connector,
            commit: StateDurability::Shared,
            notifier,
            clock: Arc::new(SystemClock),
            settings,
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            shared: Some(state),
        })
    }

    /// Replaces the wall clock (tests move time instead of sleeping).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn connector(&self) -> &C {
        &self.connector
    }

    pub fn settings(&self) -> &ServiceSettings {
        &self.settings
    }

    /// Transactions waiting for the customer or the upstream. Seed 003:
    /// pending data is erased once a transaction is final, so this returns
    /// to zero when every conversation has ended (after a crash, at the
    /// next sweep: see `StateStore::finish`).
    pub async fn pending_count(&self) -> Result<usize, ServiceError> {
        self.state.pending_len().await
    }

    /// Holds the transaction under `key` for one call. With the shared
    /// state, failing to take the lock means nothing was done.
    async fn lock(&self, key: &[u8]) -> Result<Held<'_>, ServiceError> {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        let here = self.locks[(hasher.finish() as usize) % LOCK_STRIPES]
            .lock()
            .await;
        let everywhere = match &self.shared {
            Some(shared) => Some(
                shared
                    .lock(&self.settings.namespace, key)
                    .await
                    .map_err(Self::nothing_done)?,
            ),
            None => None,
        };
        Ok(Held {
            _here: here,
            _everywhere: everywhere,
        })
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The service's clock, for the background sweeps.
    pub(crate) fn now_ms_for_sweeps(&self) -> u64 {
        self.now_ms()
    }

    fn deadline(&self) -> Option<u64> {
        Some(self.now_ms() + self.settings.otp.ttl.as_millis() as u64)
    }

    /// Makes what an answer reports durable, or leaves that to the caller
    /// (see [`AnswerDurability`]).
    async fn durable_answer(&self) -> Result<(), ServiceError> {
        match self.settings.answer_durability {
            AnswerDurability::BeforeAnswering => self.commit.durable().await?,
            AnswerDurability::ByCaller => self.commit.leave_to_caller(),
        }
        Ok(())
    }

    /// Records a final outcome (durable for the answer) and erases the pending data.
    async fn finish(
        &self,
        key: &[u8],
        request_type: &str,
        outcome: Outcome,
    ) -> Result<ProviderReply, ServiceError> {
        let reply = final_reply(&outcome);
        self.state
            .finish(
                key,
                &FinalRecord {
                    request_type: request_type.to_owned(),
                    outcome,
                    reversal: None,
                    finished_at_ms: Some(self.now_ms()),
                    dropped_at_ms: None,
                },
            )
            .await?;
        self.durable_answer().await?;
        Ok(reply)
    }

    /// Stores a waiting state that is about to be answered.
    async fn park(&self, key: &[u8], entry: &PendingEntry) -> Result<(), ServiceError> {
        self.state.put_pending(key, entry).await?;
        self.durable_answer().await
    }

    /// Stores a waiting state durably before something leaves the process
    /// because of it (a code to the customer, a call that may move money).
    async fn park_before_acting(
        &self,
        key: &[u8],
        entry: &PendingEntry,
    ) -> Result<(), ServiceError> {
        self.state.put_pending(key, entry).await?;
        self.commit.durable().await?;
        Ok(())
    }

    /// Where this call has done nothing yet outside the process, a failure
    /// to store the state it must store first means nothing was done: the
    /// caller may treat the call as never made (the switch answers 503).
    /// Not where the upstream was already called during this call.
    fn nothing_done(error: ServiceError) -> ServiceError {
        ServiceError::NothingDone(Box::new(error))
    }

    /// Carries `step` to the state it leads to and answers it. `entry` is the
    /// transaction's pending entry as it stands (its `awaiting` says what the
    /// customer just answered, if anything).
    async fn advance(
        &self,
        key: &[u8],
        mut entry: PendingEntry,
        mut step: Step,
        kept: Kept,
    ) -> Result<ProviderReply, ServiceError> {
        for _ in 0..MAX_CHAINED_STEPS {
            let previous = std::mem::replace(&mut entry.awaiting, Awaiting::Processing);
            match step {
                // A read-only call that finishes within the call that began
                // it is not kept: a repeat asks the upstream again (harmless),
                // and the caller keeps the answer.
                Step::Done(outcome)
                    if kept == Kept::Nothing
                        && self.connector.is_read_only(&entry.request_type) =>
                {
                    return Ok(into_final_reply(outcome));
                }
                Step::Done(outcome) => {
                    return self.finish(key, &entry.request_type, outcome).await;
                }
                Step::ConfirmWithOtp { deferred, .. } if entry.otp_override => {
                    self.mark_completing(key, &entry, &deferred).await?;
                    step = match self
                        .connector
                        .complete(context(&entry), deferred.clone(), Confirmation::OtpVerified)
                        .await
                    {
                        Ok(step) => step,
                        // The upstream work is done, or its outcome unknown:
                        // finishing it is `poll`'s job now.
                        Err(ConnectorError::Unavailable(reason))
                        | Err(ConnectorError::Indeterminate(reason)) => {
                            tracing::warn!(transaction_ref = %entry.transaction_ref, %reason, "completion interrupted; the transaction stays pending");
                            Step::Processing { deferred }
                        }
                        Err(error) => return Err(error.into()),
                    };
                    entry.awaiting = previous;
                }
                Step::ConfirmWithOtp {
                    deferred,
                    recipient,
                } => {
                    entry.deferred = deferred;
                    match recipient {
                        OtpRecipient::AccountHolder(holder) => entry.contact = Some(holder),
                        // `entry.contact` is the request's, taken at start.
                        OtpRecipient::ContactInRequest => {}
                    }
                    return self.send_first_otp(key, entry).await;
                }
                Step::UpstreamOtp { prompt, deferred } => {
                    let question = Question::UpstreamCode;
                    return self
                        .ask(key, entry, &previous, question, prompt, deferred)
                        .await;
                }
                Step::AskCustomer { prompt, deferred } => {
                    let question = Question::Prompt;
                    return self
                        .ask(key, entry, &previous, question, prompt, deferred)
                        .await;
                }
                Step::Processing { deferred } => {
                    entry.deferred = deferred;
                    entry.expires_at_ms = None;
                    entry.awaiting = Awaiting::Processing;
                    self.park(key, &entry).await?;
                    return Ok(self.waiting_reply(&entry));
                }
            }
        }
        Err(ServiceError::Connector(ConnectorError::Internal(format!(
            "more than {MAX_CHAINED_STEPS} chained steps for one call"
        ))))
    }

    /// Parks a transaction on a question to the customer: a code the
    /// upstream sent, or a prompt. Asked again right after the customer
    /// answered it, the answer was refused: that spends an attempt and keeps
    /// the original deadline.
    async fn ask(
        &self,
        key: &[u8],
        mut entry: PendingEntry,
        previous: &Awaiting,
        question: Question,
        prompt: String,
        deferred: Value,
    ) -> Result<ProviderReply, ServiceError> {
        let asked_before = match (question, previous) {
            (Question::UpstreamCode, Awaiting::UpstreamOtp { attempts_left, .. })
            | (Question::Prompt, Awaiting::Answer { attempts_left, .. }) => Some(*attempts_left),
            _ => None,
        };
        let attempts_left = match asked_before {
            Some(left) => left.saturating_sub(1),
            None => self.settings.otp.attempts.max(1),
        };
        if attempts_left == 0 {
            let outcome = match question {
                Question::UpstreamCode => Outcome::failed(
                    codes::OTP_ATTEMPTS_EXHAUSTED,
                    "Too many wrong codes; the transaction was cancelled",
                ),
                Question::Prompt => Outcome::failed(
                    codes::ANSWER_ATTEMPTS_EXHAUSTED,
                    "Too many answers were not accepted; the transaction was cancelled",
                ),
            };
            return self.finish(key, &entry.request_type, outcome).await;
        }
        if asked_before.is_none() {
            entry.expires_at_ms = self.deadline();
        }
        entry.deferred = deferred;
        entry.awaiting = match question {
            Question::UpstreamCode => Awaiting::UpstreamOtp {
                prompt,
                attempts_left,
            },
            Question::Prompt => Awaiting::Answer {
                prompt,
                attempts_left,
            },
        };
        self.park(key, &entry).await?;
        let mut reply = self.waiting_reply(&entry);
        if asked_before.is_some() {
            // Say the answer was refused, not "code sent" or a fresh prompt.
            reply.provider_response_code = match question {
                Question::UpstreamCode => codes::WRONG_OTP,
                Question::Prompt => codes::WRONG_ANSWER,
            }
            .into();
        }
        Ok(reply)
    }

    /// Issues the first code: durable before the customer can hold it.
    async fn send_first_otp(
        &self,
        key: &[u8],
        mut entry: PendingEntry,
    ) -> Result<ProviderReply, ServiceError> {
        let Some(contact) = entry.contact.clone() else {
            let outcome = Outcome::failed(
                codes::UNDELIVERABLE,
                "An OTP is required but the customer has no mobile_no or email to send it to",
            );
            return self.finish(key, &entry.request_type, outcome).await;
        };
        let limited = |limit: String| {
            Outcome::failed(
                codes::OTP_SEND_LIMIT,
                format!(
                    "No OTP could be sent: {limit}; the transaction was cancelled. Try again later"
                ),
            )
        };
        if let Err(limit) = self
            .send_limits
            .take(&entry.app_id, contact.channel, &contact.to)
        {
            return self.finish(key, &entry.request_type, limited(limit)).await;
        }
        let attempts = self.settings.otp.attempts.max(1);
        match self
            .send_code(key, &mut entry, &contact, attempts, 1)
            .await?
        {
            Delivery::Sent => Ok(self.waiting_reply(&entry)),
            Delivery::Limited(limit) => self.finish(key, &entry.request_type, limited(limit)).await,
            Delivery::Failed => {
                self.finish(key, &entry.request_type, undelivered(&contact))
                    .await
            }
        }
    }

    /// Issues a fresh code (the `sends`-th) with a full lifetime, makes it
    /// durable before the customer can hold it, then sends it, and says
    /// whether it went; the caller decides what a failure means.
    async fn send_code(
        &self,
        key: &[u8],
        entry: &mut PendingEntry,
        contact: &Contact,
        attempts_left: u8,
        sends: u8,
    ) -> Result<Delivery, ServiceError> {
        let (code, otp_hash) = self.otps.issue(key);
        entry.expires_at_ms = self.deadline();
        entry.awaiting = Awaiting::Otp {
            otp_hash,
            attempts_left,
            sends,
            last_sent_ms: self.now_ms(),
        };
        self.park_before_acting(key, entry).await?;
        Ok(self.deliver(entry, contact, code).await)
    }

    /// Sends `code`.
    async fn deliver(
        &self,
        entry: &PendingEntry,
        contact: &Contact,
        code: SecretString,
    ) -> Delivery {
        let minutes = self.settings.otp.ttl.as_secs().div_ceil(60).max(1);
        let notification = Notification {
            channel: contact.channel,
            to: contact.to.clone(),
            subject: Some(format!("Your {} code", self.settings.display_name)),
            body: SecretString::new(format!(
                "{} code: {}. It expires in {minutes} minute{}. Never share it with anyone.",
                self.settings.display_name,
                code.expose(),
                if minutes == 1 { "" } else { "s" },
            )),
            transaction_ref: Some(entry.transaction_ref.clone()),
            one_time_code: Some(OneTimeCode {
                code: code.clone(),
                expires_in_secs: self.settings.otp.ttl.as_secs().max(1),
            }),
        };
        match self.notifier.send(&notification).await {
            Ok(()) => {
                tracing::info!(
                    transaction_ref = %entry.transaction_ref,
                    channel = ?contact.channel,
                    to = %contact.shown,
                    "OTP sent"
                );
                Delivery::Sent
            }
            // The switch's own limit for the destination (or this
            // provider): not a broken channel.
            Err(NotifyError::RateLimited { limit, .. }) => Delivery::Limited(limit),
            Err(error) => {
                tracing::warn!(transaction_ref = %entry.transaction_ref, %error, "OTP could not be delivered");
                Delivery::Failed
            }
        }
    }

    async fn start(
        &self,
        key: &[u8],
        request: &TransactRequest,
    ) -> Result<ProviderReply, ServiceError> {
        let entry = PendingEntry {
            app_id: request.app_id.clone(),
            transaction_ref: request.transaction_ref.clone(),
            request_type: request.request_type.clone(),
            awaiting: Awaiting::Starting,
            deferred: Value::Null,
            expires_at_ms: None,
            otp_override: request.otp_override,
            contact: contact_for(request),
        };
        if !self.connector.serves(&request.request_type) {
            let outcome = Outcome::failed(
                codes::INVALID_TRANSACTION,
                format!("This provider does not serve `{}`", request.request_type),
            );
            return self.finish(key, &request.request_type, outcome).await;
        }
        // A read-only request type is harmless to start twice, so it needs
        // no marker, and its answer is not kept: a repeat asks the upstream
        // again, and the caller keeps what it was told (a switch sharing this
        // database writes it once, in its own record).
        let read_only = self.connector.is_read_only(&request.request_type);
        let marked = !read_only && !self.connector.upstream_is_idempotent();
        let kept = if marked {
            // After a crash this marker says "the upstream may have acted":
            // the transaction is then polled, never started twice.
            self.park_before_acting(key, &entry)
                .await
                .map_err(Self::nothing_done)?;
            Kept::Something
        } else {
            Kept::Nothing
        };
        match self.connector.start(request).await {
            Ok(step) => self.advance(key, entry, step, kept).await,
            Err(ConnectorError::Indeterminate(reason)) => {
                tracing::warn!(transaction_ref = %request.transaction_ref, %reason, "upstream outcome unknown; the transaction stays pending");
                self.advance(
                    key,
                    entry,
                    Step::Processing {
                        deferred: Value::Null,
                    },
                    kept,
                )
                .await
            }
            Err(error) => {
                if marked {
                    // Durably, so a crash now cannot leave a marker that would
                    // keep the transaction Pending for a call that never happened.
                    self.state.remove_pending(key).await?;
                    self.commit.durable().await?;
                }
                Err(error.into())
            }
        }
    }

    /// Asks the upstream about a transaction waiting on it.
    /// Asks the upstream about a transaction waiting on it. `None` means the
    /// upstream has no record of it: the pending entry is gone and the
    /// transaction never happened.
    async fn poll(
        &self,
        key: &[u8],
        entry: PendingEntry,
    ) -> Result<Option<ProviderReply>, ServiceError> {
        let deferred = entry.deferred.clone();
        match self.connector.poll(context(&entry), deferred).await {
            Ok(step) => Ok(Some(self.advance(key, entry, step, Kept::Something).await?)),
            Err(ConnectorError::NotFound) => {
                tracing::info!(transaction_ref = %entry.transaction_ref, "the upstream has no record of a pending transaction");
                self.state.remove_pending(key).await?;
                self.commit.durable().await?;
                Ok(None)
            }
            // Not knowing more is not a new state: keep answering Pending.
            Err(ConnectorError::Unavailable(_)) | Err(ConnectorError::Indeterminate(_)) => {
                Ok(Some(self.pending_reply(&entry)))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Ends a conversation the customer did not finish in time.
    async fn expire(
        &self,
        key: &[u8],
        entry: &PendingEntry,
    ) -> Result<ProviderReply, ServiceError> {
        let outcome = match entry.awaiting {
            Awaiting::Answer { .. } => Outcome::failed(
                codes::ANSWER_EXPIRED,
                "The time to answer ran out; the transaction was cancelled",
            ),
            _ => Outcome::failed(
                codes::OTP_EXPIRED,
                "The OTP expired; the transaction was cancelled",
            ),
        };
        tracing::info!(transaction_ref = %entry.transaction_ref, "confirmation expired");
        self.finish(key, &entry.request_type, outcome).await
    }

    async fn check_otp(
        &self,
        key: &[u8],
        mut entry: PendingEntry,
        code: &SecretString,
    ) -> Result<ProviderReply, ServiceError> {
        let Awaiting::Otp {
            otp_hash,
            attempts_left,
            sends,
            last_sent_ms,
        } = entry.awaiting.clone()
        else {
            return Ok(self.waiting_reply(&entry));
        };
        if self.otps.matches(key, code, &otp_hash) {
            return self.confirm(key, entry, Confirmation::OtpVerified).await;
        }
        let attempts_left = attempts_left.saturating_sub(1);
        if attempts_left == 0 {
            let outcome = Outcome::failed(
                codes::OTP_ATTEMPTS_EXHAUSTED,
                "Too many wrong OTPs; the transaction was cancelled",
            );
            return self.finish(key, &entry.request_type, outcome).await;
        }
        entry.awaiting = Awaiting::Otp {
            otp_hash,
            attempts_left,
            sends,
            last_sent_ms,
        };
        self.park(key, &entry).await?;
        let shown = shown(&entry);
        let plural = if attempts_left == 1 { "" } else { "s" };
        Ok(ProviderReply::new(
            Status::WaitingForOtp,
            codes::WRONG_OTP,
            format!(
                "Wrong OTP. {attempts_left} attempt{plural} left. Enter the OTP sent to {shown}"
            ),
        ))
    }

    /// Durably marks a transaction `Processing` with the data `complete`
    /// is about to act on: `complete` may move money, and a crash during it
    /// must leave something for `poll` to finish, not nothing. Not for a
    /// read-only request type, which leaves nothing to finish.
    async fn mark_completing(
        &self,
        key: &[u8],
        entry: &PendingEntry,
        deferred: &Value,
    ) -> Result<(), ServiceError> {
        if self.connector.is_read_only(&entry.request_type) {
            return Ok(());
        }
        let mut marker = entry.clone();
        marker.awaiting = Awaiting::Processing;
        marker.deferred = deferred.clone();
        marker.expires_at_ms = None;
        self.park_before_acting(key, &marker).await
    }

    /// Hands the customer's confirmation to the connector. An upstream that
    /// could not be reached leaves the transaction as it was, so the
    /// customer can try again; an unknown outcome leaves it `Pending`.
    async fn confirm(
        &self,
        key: &[u8],
        entry: PendingEntry,
        confirmation: Confirmation,
    ) -> Result<ProviderReply, ServiceError> {
        let deferred = entry.deferred.clone();
        // The transaction stays as it was: the customer may confirm again.
        self.mark_completing(key, &entry, &deferred)
            .await
            .map_err(Self::nothing_done)?;
        match self
            .connector
            .complete(context(&entry), deferred.clone(), confirmation)
            .await
        {
            Ok(step) => self.advance(key, entry, step, Kept::Something).await,
            Err(ConnectorError::Indeterminate(reason)) => {
                tracing::warn!(transaction_ref = %entry.transaction_ref, %reason, "upstream outcome unknown after confirmation");
                self.advance(key, entry, Step::Processing { deferred }, Kept::Something)
                    .await
            }
            Err(error) => {
                // Nothing happened upstream (or the connector failed before
                // acting): put the conversation back as it was.
                self.park(key, &entry).await?;
                Err(error.into())
            }
        }
    }

    async fn resend(
        &self,
        key: &[u8],
        mut entry: PendingEntry,
    ) -> Result<ProviderReply, ServiceError> {
        let Awaiting::Otp {
            attempts_left,
            sends,
            last_sent_ms,
            ..
        } = entry.awaiting.clone()
        else {
            return Ok(ProviderReply::new(
                entry_status(&entry),
                codes::RESEND_REFUSED,
                "Only an OTP this provider sent can be sent again",
            ));
        };
        let Some(contact) = entry.contact.clone() else {
            return Ok(self.waiting_reply(&entry));
        };
        let policy = &self.settings.otp;
        if sends >= policy.max_sends {
            return Ok(ProviderReply::new(
                Status::WaitingForOtp,
                codes::RESEND_REFUSED,
                format!(
                    "No more codes can be sent for this transaction; enter the OTP sent to {}",
                    contact.shown
                ),
            ));
        }
        let now = self.now_ms();
        let next_allowed = last_sent_ms + policy.resend_interval.as_millis() as u64;
        if now < next_allowed {
            let wait = (next_allowed - now).div_ceil(1000);
            return Ok(ProviderReply::new(
                Status::WaitingForOtp,
                codes::RESEND_REFUSED,
                format!(
                    "A new code can be sent in {wait} s; enter the OTP sent to {}",
                    contact.shown
                ),
            ));
        }
        let limited = |limit: String| {
            ProviderReply::new(
                Status::WaitingForOtp,
                codes::OTP_SEND_LIMIT,
                format!(
                    "No new code was sent: {limit}; enter the OTP sent to {} before it expires",
                    contact.shown
                ),
            )
        };
        if let Err(limit) = self
            .send_limits
            .take(&entry.app_id, contact.channel, &contact.to)
        {
            return Ok(limited(limit));
        }
        // What the customer holds now, put back if the new code is refused
        // by a limit before it leaves.
        let current = entry.clone();
        match self
            .send_code(key, &mut entry, &contact, attempts_left, sends + 1)
            .await?
        {
            Delivery::Sent => Ok(ProviderReply::new(
                Status::WaitingForOtp,
                codes::OTP_SENT,
                format!("A new OTP was sent to {}", contact.shown),
            )),
            Delivery::Limited(limit) => {
                self.park(key, &current).await?;
                Ok(limited(limit))
            }
            Delivery::Failed => {
                self.finish(key, &entry.request_type, undelivered(&contact))
                    .await
            }
        }
    }

    /// Moves every conversation whose deadline has passed to `Failed` and
    /// erases its pending data; returns how many. The sweeper calls this
    /// periodically so nothing waits forever for a customer who left.
    pub async fn sweep_expired(&self) -> Result<usize, ServiceError> {
        let now = self.now_ms();
        let mut swept = 0;
        for key in self.state.expired(now).await? {
            let _guard = self.lock(&key).await?;
            if self.state.final_record(&key).await?.is_some() {
                // A crash's leftover beside a final record (see `StateStore::finish`).
                self.state.remove_pending(&key).await?;
                continue;
            }
            // Re-read under the lock: a validate may have finished it meanwhile.
            if let Some(entry) = self.state.pending(&key).await? {
                if entry.is_expired(self.now_ms()) {
                    self.expire(&key, &entry).await?;
                    swept += 1;
                }
            }
        }
        if swept > 0 && self.settings.answer_durability == AnswerDurability::ByCaller {
            // No caller flushes after the sweep: make its outcomes durable.
            self.commit.durable().await?;
        }
        Ok(swept)
    }

    /// Drops the customer data of final records older than
    /// `ServiceSettings::retention` at `now_ms` (stamping records that do
    /// not say when they became final, so they age from now), durably;
    /// returns how many were dropped. Nothing without a retention period.
    pub async fn sweep_retention(&self, now_ms: u64) -> Result<usize, ServiceError> {
        let Some(retention) = self.settings.retention else {
            return Ok(0);
        };
        let cutoff = now_ms.saturating_sub(retention.as_millis() as u64);
        let mut dropped = 0;
        let mut written = false;
        for key in self.state.finals_to_age(cutoff).await? {
            let _guard = self.lock(&key).await?;
            let Some(mut record) = self.state.final_record(&key).await? else {
                continue;
            };
            match record.finished_at_ms {
                _ if record.dropped_at_ms.is_some() => continue,
                None => record.finished_at_ms = Some(now_ms),
                Some(at) if at <= cutoff => {
                    record.drop_customer_data(now_ms);
                    dropped += 1;
                }
                Some(_) => continue,
            }
            self.state.store_final(&key, &record).await?;
            written = true;
        }
        if written {
            self.commit.durable().await?;
        }
        Ok(dropped)
    }

    /// Seals every pending entry and final record not sealed under the
    /// current data key (written before a key was given, or under a previous
    /// one), durably, so previous keys can be dropped; returns how many.
    pub async fn reseal(&self) -> Result<usize, ServiceError> {
        if self.settings.data_keys.is_none() {
            return Err(ServiceError::Sealed(
                "resealing needs a data key; none was given".into(),
            ));
        }
        let ToReseal { pending, finals } = self.state.keys_to_reseal().await?;
        let mut resealed = 0;
        for key in pending {
            let _guard = self.lock(&key).await?;
            if let Some(entry) = self.state.pending(&key).await? {
                self.state.put_pending(&key, &entry).await?;
                resealed += 1;
            }
        }
        for key in finals {
            let _guard = self.lock(&key).await?;
            if let Some(record) = self.state.final_record(&key).await? {
                self.state.store_final(&key, &record).await?;
                resealed += 1;
            }
        }
        resealed += self.otps.reseal().await?;
        self.commit.durable().await?;
        self.state.forget_previous_key_ids().await?;
        Ok(resealed)
    }

    async fn reverse_transaction(
        &self,
        key: &[u8],
        request: &ReverseRequest,
    ) -> Result<ProviderReply, ProviderError> {
        let Some(mut record) = self.state.final_record(key).await? else {
            return match self.state.pending(key).await? {
                Some(_) => Ok(ProviderReply::new(
                    Status::Failed,
                    codes::NOT_REVERSIBLE,
                    "Only a final, successful transaction can be reversed",
                )),
                None => Err(ProviderError::UnknownTransaction),
            };
        };
        let refuse = |message: &str| {
            Ok(ProviderReply::new(
                Status::Failed,
                codes::NOT_REVERSIBLE,
                message,
            ))
        };
        if record.dropped_at_ms.is_some() {
            return refuse(
                "The transaction is older than the provider's retention period; \
                 its details were dropped and it cannot be reversed here",
            );
        }
        if let Some(reversal) = &record.reversal {
            // A repeat of the reversal that succeeded answers the same; any other is refused.
            return if reversal.request_ref == request.request_ref {
                Ok(reversal.reply.clone())
            } else {
                refuse("The transaction has already been reversed")
            };
        }
        let Some(undo) = record
            .outcome
            .reversal
            .clone()
            .filter(|_| record.outcome.is_successful())
        else {
            return refuse("Only a successful, reversible transaction can be reversed");
        };
        let transaction = TransactionContext {
            app_id: &request.app_id,
            transaction_ref: &request.transaction_ref,
            request_type: &record.request_type,
        };
        let outcome = self
            .connector
            .reverse(transaction, undo)
            .await
            .map_err(ServiceError::from)?;
        let reply = final_reply(&outcome);
        if outcome.is_successful() {
            record.reversal = Some(ReversalRecord {
                request_ref: request.request_ref.clone(),
                reply: reply.clone(),
            });
            self.state.store_final(key, &record).await?;
            self.durable_answer().await?;
        }
        Ok(reply)
    }
}

#[async_trait]
impl<C: Connector> Provider for ProviderService<C> {
    async fn transact(&self, request: TransactRequest) -> Result<ProviderReply, ProviderError> {
        // The switch wrote nothing before a call it believes read-only; one
        // that may move money must not run on that belief.
        if request.read_only && !self.connector.is_read_only(&request.request_type) {
            return Err(ProviderError::Rejected(format!(
                "the switch lists `{}` as read_only, but this provider may move money for it: \
                 remove it from the provider's read_only in the switch's configuration",
                request.request_type
            )));
        }
        let key = transaction_key(&request.app_id, &request.transaction_ref);
        let _guard = self.lock(&key).await?;
        // Idempotent per transaction: a repeat never calls the upstream or
        // sends a second code.
        if let Some(record) = self.state.final_record(&key).await? {
            if record.request_type != request.request_type {
                return Ok(reused_reference(&record.request_type));
            }
            return Ok(final_reply(&record.outcome));
        }
        if let Some(entry) = self.state.pending(&key).await? {
            if entry.request_type != request.request_type {
                return Ok(reused_reference(&entry.request_type));
            }
            let known = match entry.awaiting {
                Awaiting::Starting | Awaiting::Processing => self.poll(&key, entry).await?,
                // Expired but not swept yet: the current state is Failed, as query answers.
                _ if entry.is_expired(self.now_ms()) => Some(self.expire(&key, &entry).await?),
                _ => Some(self.waiting_reply(&entry)),
            };
            // `None`: the upstream never received it, so starting it is safe.
            if let Some(reply) = known {
                return Ok(reply);
            }
        }
        let reply = self.start(&key, &request).await?;
        tracing::info!(
            app_id = %request.app_id,
            transaction_ref = %request.transaction_ref,
            request_type = %request.request_type,
            status = %reply.status,
            "transact"
        );
        Ok(reply)
    }

    fn read_only(&self, request_type: &str) -> Option<bool> {
        self.connector
            .serves(request_type)
            .then(|| self.connector.is_read_only(request_type))
    }

    async fn validate(&self, request: ValidateRequest) -> Result<ProviderReply, ProviderError> {
        let key = transaction_key(&request.app_id, &request.transaction_ref);
        let _guard = self.lock(&key).await?;
        if let Some(record) = self.state.final_record(&key).await? {
            return Ok(final_reply(&record.outcome));
        }
        let Some(entry) = self.state.pending(&key).await? else {
            return Err(ProviderError::UnknownTransaction);
        };
        if entry.is_expired(self.now_ms()) {
            return Ok(self.expire(&key, &entry).await?);
        }
        let reply = match (&entry.awaiting, &request.input) {
            (Awaiting::Starting | Awaiting::Processing, _) => self.pending_reply(&entry),
            (Awaiting::Otp { .. }, ValidationInput::Otp(code)) => {
                self.check_otp(&key, entry, code).await?
            }
            (Awaiting::Otp { .. }, ValidationInput::Resend) => self.resend(&key, entry).await?,
            (Awaiting::UpstreamOtp { .. }, ValidationInput::Otp(code))
            | (Awaiting::UpstreamOtp { .. }, ValidationInput::Answer(code)) => {
                let confirmation = Confirmation::UpstreamCode(code.clone());
                self.confirm(&key, entry, confirmation).await?
            }
            // A prompt may ask for digits; either field carries the answer.
            (Awaiting::Answer { .. }, ValidationInput::Answer(text))
            | (Awaiting::Answer { .. }, ValidationInput::Otp(text)) => {
                let confirmation = Confirmation::Answer(text.clone());
                self.confirm(&key, entry, confirmation).await?
            }
            (Awaiting::UpstreamOtp { .. }, ValidationInput::Resend)
            | (Awaiting::Answer { .. }, ValidationInput::Resend) => ProviderReply::new(
                entry_status(&entry),
                codes::RESEND_REFUSED,
                format!(
                    "Nothing can be sent again here. {}",
                    self.waiting_reply(&entry).message
                ),
            ),
            (Awaiting::Otp { .. }, ValidationInput::Answer(_)) => ProviderReply::new(
                Status::WaitingForOtp,
                codes::WRONG_INPUT,
                format!("This transaction needs the OTP sent to {}", shown(&entry)),
            ),
        };
        tracing::info!(
            app_id = %request.app_id,
            transaction_ref = %request.transaction_ref,
            status = %reply.status,
            "validate"
        );
        Ok(reply)
    }

    async fn query(&self, request: QueryRequest) -> Result<ProviderReply, ProviderError> {
        let key = transaction_key(&request.app_id, &request.transaction_ref);
        let _guard = self.lock(&key).await?;
        if let Some(record) = self.state.final_record(&key).await? {
            return Ok(final_reply(&record.outcome));
        }
        let Some(entry) = self.state.pending(&key).await? else {
            return Err(ProviderError::UnknownTransaction);
        };
        Ok(match entry.awaiting {
            Awaiting::Starting | Awaiting::Processing => self
                .poll(&key, entry)
                .await?
                .ok_or(ProviderError::UnknownTransaction)?,
            _ if entry.is_expired(self.now_ms()) => self.expire(&key, &entry).await?,
            _ => self.waiting_reply(&entry),
        })
    }

    async fn reverse(&self, request: ReverseRequest) -> Result<ProviderReply, ProviderError> {
        let key = transaction_key(&request.app_id, &request.transaction_ref);
        let _guard = self.lock(&key).await?;
        let reply = self.reverse_transaction(&key, &request).await?;
        tracing::info!(
            app_id = %request.app_id,
            transaction_ref = %request.transaction_ref,
            status = %reply.status,
            "reverse"
        );
        Ok(reply)
    }
}

/// Whether anything of a transaction is stored yet when a step is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    /// Nothing: the call that began it is still running, and no marker or
    /// pending entry was written.
    Nothing,
    Something,
}

impl<C: Connector> ProviderService<C> {
    /// The answer for a transaction that waits, as stored.
    fn waiting_reply(&self, entry: &PendingEntry) -> ProviderReply {
        match &entry.awaiting {
            Awaiting::Otp { .. } => ProviderReply::new(
                Status::WaitingForOtp,
                codes::OTP_SENT,
                format!("Please enter the OTP sent to {}", shown(entry)),
            ),
            Awaiting::UpstreamOtp { prompt, .. } => {
                ProviderReply::new(Status::WaitingForOtp, codes::OTP_SENT, prompt.clone())
            }
            Awaiting::Answer { prompt, .. } => {
                ProviderReply::new(Status::PendingValidation, "", prompt.clone())
            }
            Awaiting::Starting | Awaiting::Processing => self.pending_reply(entry),
        }
    }

    /// The answer for a transaction waiting on the upstream (`Pending`), in
    /// the connector's words ([`Connector::pending_note`]).
    fn pending_reply(&self, entry: &PendingEntry) -> ProviderReply {
        let note = self.connector.pending_note(context(entry), &entry.deferred);
        let reply = ProviderReply::new(Status::Pending, &note.code, note.message);
        match note.response {
            Some(response) => reply.with_response(response),
            None => reply,
        }
    }
}

fn context(entry: &PendingEntry) -> TransactionContext<'_> {
    TransactionContext {
        app_id: &entry.app_id,
        transaction_ref: &entry.transaction_ref,
        request_type: &entry.request_type,
    }
}

/// The answer to a `transact` whose `transaction_ref` this provider already
/// knows under another `request_type`. The switch refuses a reused
/// `transaction_ref` itself, but it may have forgotten one the provider
/// remembers: a `read_only` call is not made durable in the switch before the
/// provider acts. Answering the stored outcome would report, say, a transfer
/// as done with a balance enquiry's result.
fn reused_reference(known_as: &str) -> ProviderReply {
    ProviderReply::new(
        Status::Failed,
        codes::INVALID_TRANSACTION,
        format!("This transaction_ref was already used here for a `{known_as}`; use a new one"),
    )
}

fn final_reply(outcome: &Outcome) -> ProviderReply {
    let reply = ProviderReply::new(outcome.status(), &outcome.code, outcome.message.clone());
    match &outcome.response {
        Some(response) => reply.with_response(response.clone()),
        None => reply,
    }
}

/// [`final_reply`] of an outcome nothing keeps: its response is moved, not
/// copied (a balance snapshot is most of a read-only answer).
fn into_final_reply(outcome: Outcome) -> ProviderReply {
    let status = outcome.status();
    ProviderReply {
        status,
        message: outcome.message,
        provider_response_code: outcome.code,
        provider_response: outcome.response,
    }
}

fn shown(entry: &PendingEntry) -> String {
    entry
        .contact
        .as_ref()
        .map(|contact| contact.shown.clone())
        .unwrap_or_else(|| "the customer".into())
}

fn entry_status(entry: &PendingEntry) -> Status {
    match entry.awaiting {
        Awaiting::Otp { .. } | Awaiting::UpstreamOtp { .. } => Status::WaitingForOtp,
        Awaiting::Answer { .. } => Status::PendingValidation,
        Awaiting::Starting | Awaiting::Processing => Status::Pending,
    }
}

/// What became of a code handed to the notifier.
enum Delivery {
    Sent,
    /// The channel refused it for now, by a limit (the switch's
    /// `/notify/*`): the customer does not have it.
    Limited(String),
    /// The channel failed: a customer who never gets the code could only
    /// watch it expire, so the transaction ends `Failed`.
    Failed,
}

fn undelivered(contact: &Contact) -> Outcome {
    Outcome::failed(
        codes::UNDELIVERABLE,
        format!(
            "The OTP could not be delivered to {}; the transaction was cancelled",
            contact.shown
        ),
    )
}

/// Where codes for this transaction go. The channel follows the source: a
/// mobile-money source is its own phone; otherwise the customer's phone,
/// then their e-mail.
fn contact_for(request: &TransactRequest) -> Option<Contact> {
    let customer = &request.transaction.customer;
    let phone = match &request.source {
        SourceDetails::Msisdn(msisdn) => Some(msisdn.msisdn.expose().to_owned()),
        _ => customer.mobile_no.clone().filter(|m| !m.trim().is_empty()),
    };
    let (channel, to) = match phone {
        Some(phone) => (Channel::Sms, phone),
        None => (
            Channel::Email,
            customer.email.clone().filter(|e| !e.trim().is_empty())?,
        ),
    };
    Some(Contact {
        channel,
        shown: mask_destination(channel, &to),
        to,
    })
}
