//! The transaction lifecycle.
//!
//! Every operation follows the same order, which is what makes the switch
//! safe to retry and safe to kill:
//! 1. check everything that needs no store (fields, the signature's
//!    `request_ref` — the signature itself was verified before the body was
//!    parsed, see [`crate::signed`] — routing, limits, `auth.secure`) — a
//!    rejection here records nothing;
//! 2. claim the `request_ref` (and, for `/transact`, the `transaction_ref`)
//!    in the store — a repeat finds the claim and gets the first answer,
//!    never a second provider call;
//! 3. for a `/transact` that may move money, record it `Pending` and make
//!    that durable *before* calling the provider, so a crash can never lead
//!    to the same transaction being sent twice; a service the host declared
//!    `read_only` (harmless to call twice) is recorded once, with its answer;
//! 4. call the provider, bounded by its timeout; no answer means `Pending`;
//! 5. record the new state together with the answer (`Engine::record_answer`),
//!    make it durable, and only then answer: an [`Answer`] that reports
//!    state is built from the [`Durable`] proof that only
//!    [`Store::durable`] returns.
//!
//! The operations live one per module (`transact`, `validate`, `query`,
//! `reverse`); the steps they share (claim, settle, record, replay) are
//! here.

mod answer;
mod describe;
mod fingerprint;
mod query;
mod reverse;
mod transact;
mod validate;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use manifold_provider::{ProviderError, ProviderReply, Status};

use crate::apps::App;
use crate::error::SwitchError;
use crate::routing::{Route, Router};
use crate::signed::VerifiedCall;
use crate::store::{
    Claim, Durable, Fingerprint, HistoryEntry, KnownRequest, Operation, RequestEntry, RequestState,
    Store, StoredAnswer, TransactionRecord,
};

use answer::RenderedRelay;
pub use answer::{http_status_for, Answer, BillingFacts};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn history(
    operation: Operation,
    request_ref: Option<&str>,
    status: Status,
    reply: Option<&ProviderReply>,
    message: &str,
) -> HistoryEntry {
    HistoryEntry {
        at_ms: now_ms(),
        operation,
        request_ref: request_ref.map(str::to_owned),
        status,
        provider_response_code: reply
            .map(|r| r.provider_response_code.clone())
            .filter(|code| !code.is_empty()),
        message: message.to_owned(),
    }
}

/// Moves a transaction to `status` unless it is already final: a late or
/// repeated answer never undoes an outcome.
fn advance(record: &mut TransactionRecord, status: Status, reply: Option<&ProviderReply>) {
    if record.status.is_final() {
        return;
    }
    record.status = status;
    if let Some(reply) = reply {
        record.last_reply = Some(reply.clone());
    }
}

/// Whether the change a call applied to its transaction moved it to
/// `Successful`: that call completed the transaction, and a value fee is
/// charged on it (once, as only one change can make the move).
#[derive(Default)]
struct Completion(std::sync::atomic::AtomicBool);

impl Completion {
    /// Applies `change` to `record`, noting whether it completed it. A store
    /// may run a change more than once (retrying on a conflict); the last
    /// run is the one stored, so each run overwrites what the last noted.
    fn watch(&self, record: &mut TransactionRecord, change: impl FnOnce(&mut TransactionRecord)) {
        let before = record.status;
        change(record);
        let completed = before != Status::Successful && record.status == Status::Successful;
        self.0
            .store(completed, std::sync::atomic::Ordering::Relaxed);
    }

    fn happened(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Whether a record is still as `/transact` first wrote it, before any answer:
/// `Pending`, with only the "received" entry.
fn as_first_written(record: &TransactionRecord) -> bool {
    record.status == Status::Pending && record.history.len() <= 1
}

/// How long a `Pending` transaction the provider has no record of stays
/// `Pending` before a query declares it `Failed`: ten provider timeouts, and
/// never less than a minute.
pub fn no_record_grace(route: &Route) -> Duration {
    (route.config.timeout * 10).max(Duration::from_secs(60))
}

const NO_ANSWER_YET: &str =
    "The provider has not answered yet; query the transaction for its outcome";

/// The result of one provider call, reduced to what the switch records.
enum Settled {
    Reply(ProviderReply),
    /// The provider may or may not have acted.
    Unknown(ProviderError),
}

/// What a provider call that provably had no effect must take back.
struct Claimed<'a> {
    request_ref: &'a str,
    transaction_ref: &'a str,
    /// The call began the transaction (`/transact`), which goes with it.
    began_transaction: bool,
}

pub struct Engine {
    store: Arc<dyn Store>,
    router: Router,
}

impl Engine {
    pub fn new(store: Arc<dyn Store>, router: Router) -> Self {
        Engine { store, router }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Calls the provider, bounded by its configured timeout even when it is
    /// in-process and would otherwise hang forever.
    async fn call<F>(route: &Route, call: F) -> Result<ProviderReply, ProviderError>
    where
        F: std::future::Future<Output = Result<ProviderReply, ProviderError>>,
    {
        let timeout = route.config.timeout;
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(ProviderError::TimedOut(timeout)),
        }
    }

    /// Reduces a provider call's result to what is recorded. A call that
    /// provably never took effect is forgotten — with the transaction it
    /// began, for `/transact` — so the app may retry it unchanged.
    async fn settle(
        &self,
        signed: &VerifiedCall,
        route: &Route,
        claimed: Claimed<'_>,
        result: Result<ProviderReply, ProviderError>,
    ) -> Result<Settled, SwitchError> {
        match result {
            Ok(reply) => Ok(Settled::Reply(reply)),
            Err(error) if !error.may_have_executed() => {
                let app = signed.app();
                // The detail (often an internal URL) is for the host's log, not the app.
                tracing::warn!(app = app.id(), provider = route.name(), %error, "provider call had no effect");
                // Before the claim goes, so the same signed bytes can never
                // claim it again (the app's own retry is signed anew).
                signed.mark_spent();
                self.store
                    .abandon(
                        app.id(),
                        claimed.request_ref,
                        claimed.transaction_ref,
                        claimed.began_transaction,
                    )
                    .await?;
                let _flushed = self.store.durable().await?;
                let provider = route.name().to_owned();
                Err(match error {
                    ProviderError::Unreachable(_) => SwitchError::ProviderUnavailable(provider),
                    ProviderError::Unauthenticated(_) => {
                        SwitchError::ProviderRefusedSwitch(provider)
                    }
                    _ => SwitchError::ProviderRejected(provider),
                })
            }
            Err(error) => Ok(Settled::Unknown(error)),
        }
    }

    /// The answer to a repeated `request_ref`, metered as a repeat.
    async fn replay(
        &self,
        app: &App,
        request_ref: &str,
        known: KnownRequest,
        fingerprint: &Fingerprint,
    ) -> Result<Answer, SwitchError> {
        let mut answer = self
            .answer_again(app, request_ref, known, fingerprint)
            .await?;
        answer.billing.repeat = true;
        Ok(answer)
    }

    async fn answer_again(
        &self,
        app: &App,
        request_ref: &str,
        known: KnownRequest,
        fingerprint: &Fingerprint,
    ) -> Result<Answer, SwitchError> {
        if known.fingerprint() != fingerprint {
            return Err(SwitchError::RequestRefConflict(request_ref.to_owned()));
        }
        match known {
            KnownRequest::Recorded {
                request,
                transaction,
            } => match request.state {
                RequestState::Answered(_) if transaction.customer_data_dropped_at_ms.is_some() => {
                    Err(SwitchError::AnswerDropped {
                        transaction_ref: transaction.transaction_ref,
                        status: transaction.status,
                    })
                }
                RequestState::Answered(stored) => {
                    // The first call may still be waiting for the flush that
                    // makes this answer durable.
                    let durable = self.store.durable().await?;
                    Ok(Answer::relaying(&transaction, &stored, durable))
                }
                // The first call has not finished (or its process died):
                // answer what is known now; `/transact/query` settles it later.
                RequestState::InFlight { started_at_ms } => {
                    if request.operation == Operation::Transact
                        && self.may_still_be_abandoned(&transaction, started_at_ms)
                    {
                        return Err(SwitchError::RequestInProgress(transaction.transaction_ref));
                    }
                    let durable = self.store.durable().await?;
                    Ok(self.describe(&transaction, durable))
                }
            },
            // An enquiry in flight has recorded nothing yet.
            KnownRequest::Running {
                operation: Operation::Transact,
                transaction_ref,
                ..
            } => Err(SwitchError::RequestInProgress(transaction_ref)),
            KnownRequest::Running {
                transaction_ref, ..
            } => {
                let record = self
                    .store
                    .transaction(app.id(), &transaction_ref)
                    .await?
                    .ok_or(SwitchError::TransactionNotFound(transaction_ref))?;
                // The first call may not have reached its own flush yet; what
                // this answer reports must be on disk before it is sent.
                let durable = self.store.durable().await?;
                Ok(self.describe(&record, durable))
            }
        }
    }

    /// Whether a `/transact` still in flight may yet find the provider
    /// unreachable and remove its `Pending` record (answering 503). Until that
    /// is ruled out, answering `Pending` to anyone else would report a state
    /// that can vanish. Every provider call ends within its timeout, so an
    /// older claim belongs to a process that died, and stays `Pending`.
    fn may_still_be_abandoned(&self, record: &TransactionRecord, started_at_ms: u64) -> bool {
        let Ok(route) = self.router.route(&record.provider) else {
            return false;
        };
        let horizon = route.config.timeout + Duration::from_secs(2);
        as_first_written(record)
            && now_ms().saturating_sub(started_at_ms) <= horizon.as_millis() as u64
    }

    /// Refuses to report a `Pending` record whose `/transact` may still be
    /// abandoned (see [`Engine::may_still_be_abandoned`]).
    async fn check_not_in_progress(
        &self,
        app: &App,
        record: &TransactionRecord,
    ) -> Result<(), SwitchError> {
        // Saves a store read for every record past its first answer.
        if !as_first_written(record) {
            return Ok(());
        }
        let Some(first_ref) = record.first_request().map(|r| r.request_ref.clone()) else {
            return Ok(());
        };
        let in_progress = || {
            Err(SwitchError::RequestInProgress(
                record.transaction_ref.clone(),
            ))
        };
        match self.store.request(app.id(), &first_ref).await? {
            // An enquiry still with the provider.
            Some(KnownRequest::Running { .. }) => return in_progress(),
            Some(KnownRequest::Recorded {
                request,
                transaction,
            }) => {
                if let RequestState::InFlight { started_at_ms } = request.state {
                    if self.may_still_be_abandoned(&transaction, started_at_ms) {
                        return in_progress();
                    }
                }
            }
            // Abandoning removes the record, then the claim. A record read
            // before that whose claim is gone now was taken back meanwhile
            // (found by the crash test: reported `Pending`, then not there).
            None => {
                if self
                    .store
                    .transaction(app.id(), &record.transaction_ref)
                    .await?
                    .is_none()
                {
                    return Err(SwitchError::TransactionNotFound(
                        record.transaction_ref.clone(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Records what the provider said (or that it said nothing) as the
    /// answer to `request_ref`, durably, and returns that answer.
    async fn record_answer(
        &self,
        app: &App,
        record: &TransactionRecord,
        operation: Operation,
        request_ref: &str,
        settled: Settled,
        apply: impl Fn(&mut TransactionRecord, Status, Option<&ProviderReply>) + Send + Sync,
    ) -> Result<Answer, SwitchError> {
        let failure = match &settled {
            Settled::Unknown(error) => Some(error.kind()),
            Settled::Reply(_) => None,
        };
        let (reply, heard) = match settled {
            Settled::Reply(reply) => (reply, true),
            Settled::Unknown(error) => {
                tracing::warn!(app = app.id(), transaction_ref = %record.transaction_ref, %error, "provider outcome unknown");
                (
                    ProviderReply::new(Status::Pending, "", NO_ANSWER_YET),
                    false,
                )
            }
        };
        let status = reply.status;
        let entry = history(
            operation,
            Some(request_ref),
            status,
            heard.then_some(&reply),
            &reply.message,
        );
        let stored = StoredAnswer {
            http_status: http_status_for(status),
            reply,
        };
        // Rendered now, so that the reply is moved into the store rather than
        // copied; sent only once the store says it is durable.
        let rendered = RenderedRelay::render(record, &stored);
        let heard_reply = heard.then(|| stored.reply.clone());
        let completion = Completion::default();
        let change = |record: &mut TransactionRecord| {
            completion.watch(record, |record| {
                apply(record, status, heard_reply.as_ref());
                record.updated_at_ms = entry.at_ms;
                record.history.push(entry.clone());
            });
        };
        self.store
            .update_transaction(
                app.id(),
                &record.transaction_ref,
                &change,
                Some((request_ref, stored)),
            )
            .await?;
        let durable = self.store.durable().await?;
        let mut answer = rendered.once_durable(durable);
        answer.billing.completed = completion.happened();
        answer.provider_failure = failure;
        Ok(answer)
    }

    /// Loads the app's transaction and checks the optional fields that must match it.
    async fn named_transaction(
        &self,
        app: &App,
        transaction_ref: &str,
        request_type: Option<&str>,
        provider: Option<&str>,
    ) -> Result<TransactionRecord, SwitchError> {
        let record = self
            .store
            .transaction(app.id(), transaction_ref)
            .await?
            .ok_or_else(|| SwitchError::TransactionNotFound(transaction_ref.to_owned()))?;
        if let Some(given) = request_type.filter(|given| *given != record.request_type) {
            return Err(SwitchError::TransactionMismatch {
                field: "request_type",
                given: given.to_owned(),
                recorded: record.request_type.clone(),
            });
        }
        if let Some(given) = provider.filter(|given| *given != record.provider) {
            return Err(SwitchError::TransactionMismatch {
                field: "auth.auth_provider",
                given: given.to_owned(),
                recorded: record.provider.clone(),
            });
        }
        Ok(record)
    }

    /// The answer to `request_ref` if it was seen before.
    async fn repeat_of(
        &self,
        app: &App,
        request_ref: &str,
        fingerprint: &Fingerprint,
    ) -> Result<Option<Answer>, SwitchError> {
        match self.store.request(app.id(), request_ref).await? {
            Some(known) => Ok(Some(
                self.replay(app, request_ref, known, fingerprint).await?,
            )),
            None => Ok(None),
        }
    }

    /// Claims `request_ref` for an operation on an existing transaction;
    /// `Some(answer)` is the replay when it was claimed before.
    async fn claim(
        &self,
        app: &App,
        operation: Operation,
        request_ref: &str,
        transaction_ref: &str,
        fingerprint: &Fingerprint,
    ) -> Result<Option<Answer>, SwitchError> {
        let claim = RequestEntry {
            request_ref: request_ref.to_owned(),
            operation,
            fingerprint: *fingerprint,
            state: RequestState::InFlight {
                started_at_ms: now_ms(),
            },
        };
        match self
            .store
            .claim_request(app.id(), transaction_ref, &claim)
            .await?
        {
            Claim::Started => Ok(None),
            Claim::Repeat(known) => Ok(Some(
                self.replay(app, request_ref, *known, fingerprint).await?,
            )),
        }
    }

    /// What validate and reverse share once their checks have passed: claim
    /// `request_ref` on `record` (a repeat is answered from its claim), make
    /// the provider `call` (a provider with no record of the transaction
    /// answers `Failed` with `no_record`), settle it, and record the answer
    /// with `apply`. `call` is only polled once the claim is made.
    #[allow(clippy::too_many_arguments)]
    async fn act_on_transaction(
        &self,
        signed: &VerifiedCall,
        route: &Route,
        record: &TransactionRecord,
        operation: Operation,
        request_ref: &str,
        fingerprint: &Fingerprint,
        call: impl std::future::Future<Output = Result<ProviderReply, ProviderError>>,
        no_record: &str,
        apply: impl Fn(&mut TransactionRecord, Status, Option<&ProviderReply>) + Send + Sync,
    ) -> Result<Answer, SwitchError> {
        let app = signed.app();
        if let Some(replay) = self
            .claim(
                app,
                operation,
                request_ref,
                &record.transaction_ref,
                fingerprint,
            )
            .await?
        {
            return Ok(replay);
        }
        let result = match Self::call(route, call).await {
            Err(ProviderError::UnknownTransaction) => {
                Ok(ProviderReply::new(Status::Failed, "", no_record))
            }
            other => other,
        };
        let claimed = Claimed {
            request_ref,
            transaction_ref: &record.transaction_ref,
            began_transaction: false,
        };
        let settled = self.settle(signed, route, claimed, result).await?;
        self.record_answer(app, record, operation, request_ref, settled, apply)
            .await
    }

    /// Waits until all writes so far are durable; for shutdown.
    pub async fn flush(&self) -> Result<Durable, SwitchError> {
        Ok(self.store.durable().await?)
    }
}
