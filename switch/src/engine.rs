//! The transaction lifecycle.
//!
//! Every operation follows the same order, which is what makes the switch
//! safe to retry and safe to kill:
//! 1. check everything that needs no store (fields, the signature's
//!    `request_ref` — the signature itself was verified before the body was
//!    parsed, see [`crate::signed`] — routing, limits, `auth.secure`) — a
//!    rejection here records nothing;
//! 2. claim the `request_ref` (and, for `/transact`, record the transaction
//!    as `Pending`) as one step of the store — a repeat finds the claim and
//!    gets the first answer, never a second provider call;
//! 3. for `/transact`, make that claim durable *before* calling the provider,
//!    so a crash can never lead to the same transaction being sent twice —
//!    except for a service the host declared `read_only`, which is harmless
//!    to call twice and so saves that flush;
//! 4. call the provider, bounded by its timeout; no answer means `Pending`;
//! 5. record the new state together with the response, make it durable, and
//!    only then answer.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use manifold_crypto::plaintext::{open_source, open_validation};
use manifold_provider::{
    ProviderError, ProviderReply, QueryRequest, ReverseRequest, Status, TransactRequest,
    TransactionDetails, ValidateRequest,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::apps::App;
use crate::envelope::{self, MockMode, ResponseEnvelope};
use crate::error::SwitchError;
use crate::inspect;
use crate::routing::{Route, Router};
use crate::signed::VerifiedCall;
use crate::store::{
    Begin, Claim, HistoryEntry, Operation, RequestRecord, RequestState, Reversal, Store,
    StoredResponse, TransactionRecord,
};

/// An answer ready to send, with what metering needs to know about it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub http_status: u16,
    pub body: String,
    pub status: Status,
    pub request_type: Option<String>,
    pub provider: Option<String>,
    pub inspect: bool,
    /// `data.error` when the switch rejected the call.
    pub error: Option<String>,
}

impl Answer {
    fn new(envelope: &ResponseEnvelope, request_type: &str, provider: &str) -> Answer {
        Answer {
            http_status: http_status_for(envelope.status),
            body: serde_json::to_string(envelope).unwrap_or_else(|_| String::from("{}")),
            status: envelope.status,
            request_type: Some(request_type.to_owned()),
            provider: Some(provider.to_owned()),
            inspect: false,
            error: None,
        }
    }
}

/// Answers that reach a provider are 200, except `Pending`, which is 202:
/// accepted, outcome to follow.
pub fn http_status_for(status: Status) -> u16 {
    if status == Status::Pending {
        202
    } else {
        200
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Writes `value` as compact JSON with sorted keys at every level, so the
/// digest of a body does not depend on the order an app's JSON library
/// writes keys in. `leave_out` names one member of one top-level object
/// that does not count (`auth.secure`). Streams into the digest: this runs
/// on every request, and building the text first was measurable.
fn write_canonical(
    value: &Value,
    out: &mut impl std::io::Write,
    leave_out: Option<(&str, &str)>,
) -> std::io::Result<()> {
    match value {
        Value::Object(map) => write_object(map, out, None, leave_out),
        Value::Array(items) => {
            out.write_all(b"[")?;
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.write_all(b",")?;
                }
                write_canonical(item, out, None)?;
            }
            out.write_all(b"]")
        }
        scalar => Ok(serde_json::to_writer(&mut *out, scalar)?),
    }
}

/// An object's members in key order, without the member `skipped`;
/// `leave_out` is the `(member, its member)` to skip one level down.
fn write_object(
    map: &serde_json::Map<String, Value>,
    out: &mut impl std::io::Write,
    skipped: Option<&str>,
    leave_out: Option<(&str, &str)>,
) -> std::io::Result<()> {
    let mut members: Vec<_> = map
        .iter()
        .filter(|(key, _)| Some(key.as_str()) != skipped)
        .collect();
    members.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.write_all(b"{")?;
    for (index, (key, member)) in members.into_iter().enumerate() {
        if index > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, key)?;
        out.write_all(b":")?;
        match (member, leave_out) {
            (Value::Object(inner), Some((object, inner_skipped))) if object == key => {
                write_object(inner, out, Some(inner_skipped), None)?
            }
            _ => write_canonical(member, out, None)?,
        }
    }
    out.write_all(b"}")
}

/// A digest identifying "the same request". `auth.secure` is re-encrypted with
/// a fresh nonce on every retry, so its *plaintext* counts, not its bytes;
/// the plaintext enters only through a digest keyed with the app's secret
/// ([`AppKey::keyed_digest_hex`](manifold_crypto::AppKey::keyed_digest_hex)),
/// so the stored digest cannot be brute-forced back to an account number.
fn fingerprint(app: &App, root: &Value, secure_plaintext: Option<&[u8]>) -> String {
    let mut hasher = Sha256::new();
    // Writing into a digest cannot fail.
    let _ = write_canonical(root, &mut hasher, Some(("auth", "secure")));
    if let Some(plaintext) = secure_plaintext {
        let inner = hex::encode(Sha256::digest(plaintext));
        hasher.update([0x1f]);
        hasher.update(app.key.keyed_digest_hex(inner.as_bytes()).as_bytes());
    }
    hex::encode(hasher.finalize())
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
        request_ref: &str,
        began_transaction: Option<&str>,
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
                    .abandon(app.id(), request_ref, began_transaction)
                    .await?;
                self.store.durable().await?;
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

    /// The answer to a repeated `request_ref`.
    async fn replay(
        &self,
        app: &App,
        existing: RequestRecord,
        fingerprint: &str,
    ) -> Result<Answer, SwitchError> {
        if existing.fingerprint != fingerprint {
            return Err(SwitchError::RequestRefConflict(existing.request_ref));
        }
        match existing.state {
            RequestState::Answered(stored) => {
                // The first call may still be waiting for the flush that
                // makes this answer durable.
                self.store.durable().await?;
                let parsed: Option<ResponseEnvelope> = serde_json::from_str(&stored.body).ok();
                Ok(Answer {
                    http_status: stored.http_status,
                    status: parsed.as_ref().map_or(Status::Pending, |e| e.status),
                    provider: parsed.as_ref().and_then(|e| e.data.provider.clone()),
                    request_type: None,
                    body: stored.body,
                    inspect: false,
                    error: None,
                })
            }
            // The first call has not finished (or its process died): answer
            // what is known now; `/transact/query` settles it later.
            RequestState::InFlight { started_at_ms } => {
                let record = self
                    .store
                    .transaction(app.id(), &existing.transaction_ref)
                    .await?
                    .ok_or_else(|| {
                        SwitchError::TransactionNotFound(existing.transaction_ref.clone())
                    })?;
                if existing.operation == Operation::Transact
                    && self.may_still_be_abandoned(&record, started_at_ms)
                {
                    return Err(SwitchError::RequestInProgress(record.transaction_ref));
                }
                // The first call may not have reached its own flush yet; what
                // this answer reports must be on disk before it is sent.
                self.store.durable().await?;
                Ok(self.describe(&record))
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
        let Some(first_ref) = record
            .history
            .first()
            .and_then(|e| e.request_ref.as_deref())
        else {
            return Ok(());
        };
        match self.store.request(app.id(), first_ref).await? {
            Some(claim) => {
                if let RequestState::InFlight { started_at_ms } = claim.state {
                    if claim.operation == Operation::Transact
                        && self.may_still_be_abandoned(record, started_at_ms)
                    {
                        return Err(SwitchError::RequestInProgress(
                            record.transaction_ref.clone(),
                        ));
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

    /// The envelope reporting a recorded transaction, as `/transact/query` answers.
    fn describe(&self, record: &TransactionRecord) -> Answer {
        let latest = record.history.last();
        let message = match (&record.last_reply, latest) {
            (Some(reply), Some(entry)) if entry.status == reply.status => reply.message.clone(),
            (_, Some(entry)) => entry.message.clone(),
            (Some(reply), None) => reply.message.clone(),
            (None, None) => String::new(),
        };
        let mut envelope = ResponseEnvelope::from_reply(
            &record.provider,
            &ProviderReply {
                status: record.status,
                message,
                provider_response_code: String::new(),
                provider_response: record
                    .last_reply
                    .as_ref()
                    .and_then(|r| r.provider_response.clone()),
            },
        );
        envelope.data.provider_response_code = record
            .last_reply
            .as_ref()
            .map(|r| r.provider_response_code.clone())
            .filter(|code| !code.is_empty());
        envelope.data.transaction = Some(json!({
            "transaction_ref": record.transaction_ref,
            "request_type": record.request_type,
            "provider": record.provider,
            "amount": record.amount,
            "status": record.status,
            "created_at_ms": record.created_at_ms,
            "updated_at_ms": record.updated_at_ms,
            "reversal": record.reversal.as_ref().map(|r| json!({
                "status": r.status,
                "at_ms": r.at_ms,
                "message": r.reply.as_ref().map(|reply| reply.message.clone()),
            })),
            "history": record.history,
        }));
        Answer::new(&envelope, &record.request_type, &record.provider)
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
        let (status, reply, message) = match &settled {
            Settled::Reply(reply) => (reply.status, Some(reply), reply.message.clone()),
            Settled::Unknown(error) => {
                tracing::warn!(app = app.id(), transaction_ref = %record.transaction_ref, %error, "provider outcome unknown");
                (Status::Pending, None, NO_ANSWER_YET.to_owned())
            }
        };
        let envelope = match reply {
            Some(reply) => ResponseEnvelope::from_reply(&record.provider, reply),
            None => ResponseEnvelope::from_reply(
                &record.provider,
                &ProviderReply::new(Status::Pending, "", message.clone()),
            ),
        };
        let answer = Answer::new(&envelope, &record.request_type, &record.provider);
        let stored = StoredResponse {
            http_status: answer.http_status,
            body: answer.body.clone(),
        };
        let entry = history(operation, Some(request_ref), status, reply, &message);
        let change = move |record: &mut TransactionRecord| {
            apply(record, status, reply);
            record.updated_at_ms = entry.at_ms;
            record.history.push(entry.clone());
        };
        self.store
            .update_transaction(
                app.id(),
                &record.transaction_ref,
                &change,
                Some((request_ref, &stored)),
            )
            .await?;
        self.store.durable().await?;
        Ok(answer)
    }

    pub async fn transact(&self, signed: &VerifiedCall) -> Result<Answer, SwitchError> {
        let app = signed.app();
        let root = envelope::parse_json(signed.body())?;
        let request = envelope::parse_transact(&root)?;
        signed.check_request_ref(&request.request_ref)?;
        let (route, grant) =
            self.router
                .resolve(app, &request.request_type, &request.auth_provider)?;
        if let Some(limit) = grant.max_amount {
            if request.amount > limit {
                return Err(SwitchError::AmountOverLimit {
                    amount: request.amount,
                    limit,
                    request_type: request.request_type.clone(),
                });
            }
        }
        let source = open_source(
            &app.key,
            &request.request_ref,
            request.auth_type,
            &request.secure,
        )
        .map_err(SwitchError::SecureRejected)?;

        if request.mock_mode == MockMode::Inspect {
            let envelope = inspect::sample(
                route.name(),
                &request.request_type,
                &request.transaction_ref,
                request.amount,
                grant.otp_override,
            );
            let mut answer = Answer::new(&envelope, &request.request_type, route.name());
            answer.inspect = true;
            return Ok(answer);
        }

        let fingerprint = fingerprint(app, &root, Some(&source.to_plaintext()));
        let now = now_ms();
        let claim = RequestRecord {
            app_id: app.id().to_owned(),
            request_ref: request.request_ref.clone(),
            operation: Operation::Transact,
            transaction_ref: request.transaction_ref.clone(),
            fingerprint: fingerprint.clone(),
            state: RequestState::InFlight { started_at_ms: now },
        };
        let record = TransactionRecord {
            app_id: app.id().to_owned(),
            transaction_ref: request.transaction_ref.clone(),
            request_type: request.request_type.clone(),
            provider: route.name().to_owned(),
            amount: request.amount,
            status: Status::Pending,
            created_at_ms: now,
            updated_at_ms: now,
            last_reply: None,
            history: vec![history(
                Operation::Transact,
                Some(&request.request_ref),
                Status::Pending,
                None,
                "Received; sent to the provider",
            )],
            reversal: None,
        };
        match self.store.begin_transaction(&claim, &record).await? {
            Begin::Started => {}
            Begin::Repeat(existing) => return self.replay(app, existing, &fingerprint).await,
            Begin::TransactionRefTaken => {
                return Err(SwitchError::DuplicateTransactionRef(
                    request.transaction_ref,
                ))
            }
        }
        if !route.config.read_only.contains(&request.request_type) {
            self.store.durable().await?;
        }

        let call = TransactRequest {
            app_id: app.id().to_owned(),
            request_ref: request.request_ref.clone(),
            request_type: request.request_type.clone(),
            transaction_ref: request.transaction_ref.clone(),
            otp_override: grant.otp_override,
            source,
            transaction: TransactionDetails {
                transaction_desc: request.transaction_desc.clone(),
                transaction_ref_parent: request.transaction_ref_parent.clone(),
                amount: request.amount,
                customer: request.customer.clone(),
                meta: request.meta.clone(),
                details: request.details.clone(),
            },
        };
        let result = Self::call(&route, route.provider.transact(call)).await;
        let settled = self
            .settle(
                signed,
                &route,
                &request.request_ref,
                Some(&request.transaction_ref),
                result,
            )
            .await?;
        self.record_answer(
            app,
            &record,
            Operation::Transact,
            &request.request_ref,
            settled,
            advance,
        )
        .await
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

    /// Claims `request_ref` for an operation on an existing transaction;
    /// `Err(answer)` carries the replay when it was claimed before.
    async fn claim(
        &self,
        app: &App,
        operation: Operation,
        request_ref: &str,
        transaction_ref: &str,
        fingerprint: &str,
    ) -> Result<Option<Answer>, SwitchError> {
        let claim = RequestRecord {
            app_id: app.id().to_owned(),
            request_ref: request_ref.to_owned(),
            operation,
            transaction_ref: transaction_ref.to_owned(),
            fingerprint: fingerprint.to_owned(),
            state: RequestState::InFlight {
                started_at_ms: now_ms(),
            },
        };
        match self.store.claim_request(&claim).await? {
            Claim::Started => Ok(None),
            Claim::Repeat(existing) => Ok(Some(self.replay(app, existing, fingerprint).await?)),
        }
    }

    pub async fn validate(&self, signed: &VerifiedCall) -> Result<Answer, SwitchError> {
        let app = signed.app();
        let root = envelope::parse_json(signed.body())?;
        let request = envelope::parse_validate(&root)?;
        signed.check_request_ref(&request.request_ref)?;
        let input = open_validation(&app.key, &request.request_ref, &request.secure)
            .map_err(SwitchError::SecureRejected)?;
        let fingerprint = fingerprint(app, &root, Some(&input.to_plaintext()));
        if let Some(existing) = self.store.request(app.id(), &request.request_ref).await? {
            return self.replay(app, existing, &fingerprint).await;
        }
        let record = self
            .named_transaction(
                app,
                &request.transaction_ref,
                Some(&request.request_type),
                Some(&request.auth_provider),
            )
            .await?;
        if !record.status.awaits_validation() {
            return Err(SwitchError::NotAwaitingValidation(record.status));
        }
        let route = self.router.route(&record.provider)?;
        if let Some(replay) = self
            .claim(
                app,
                Operation::Validate,
                &request.request_ref,
                &record.transaction_ref,
                &fingerprint,
            )
            .await?
        {
            return Ok(replay);
        }
        let call = ValidateRequest {
            app_id: app.id().to_owned(),
            request_ref: request.request_ref.clone(),
            request_type: record.request_type.clone(),
            transaction_ref: record.transaction_ref.clone(),
            input,
        };
        let result = match Self::call(&route, route.provider.validate(call)).await {
            // The provider lost or never had the pending state: nothing can complete it.
            Err(ProviderError::UnknownTransaction) => Ok(ProviderReply::new(
                Status::Failed,
                "",
                "The provider has nothing awaiting validation for this transaction",
            )),
            other => other,
        };
        let settled = self
            .settle(signed, &route, &request.request_ref, None, result)
            .await?;
        self.record_answer(
            app,
            &record,
            Operation::Validate,
            &request.request_ref,
            settled,
            advance,
        )
        .await
    }

    pub async fn query(&self, signed: &VerifiedCall) -> Result<Answer, SwitchError> {
        let app = signed.app();
        let root = envelope::parse_json(signed.body())?;
        let request = envelope::parse_reference(&root)?;
        signed.check_request_ref(&request.request_ref)?;
        let record = self
            .named_transaction(
                app,
                &request.transaction_ref,
                request.request_type.as_deref(),
                request.auth_provider.as_deref(),
            )
            .await?;
        self.check_not_in_progress(app, &record).await?;
        // Whatever this answer reports must be on disk, even when another
        // call wrote it and has not reached its flush yet.
        self.store.durable().await?;
        // A final status never changes here. A waiting one may have moved at
        // the provider (its confirmation expired and was swept), so ask.
        if record.status.is_final() {
            return Ok(self.describe(&record));
        }
        let route = self.router.route(&record.provider)?;
        let call = QueryRequest {
            app_id: app.id().to_owned(),
            request_type: record.request_type.clone(),
            transaction_ref: record.transaction_ref.clone(),
        };
        // The early returns below answer the switch's own record, flushed
        // above: whatever the provider wrote meanwhile (an in-process one
        // leaves its flush to us) reaches disk at the next group commit, and
        // a crash before that leaves its earlier durable state, which the
        // next query asks about again.
        let reply = match Self::call(&route, route.provider.query(call)).await {
            Ok(reply) if reply.status.is_final() || record.status == Status::Pending => {
                if reply.status == record.status {
                    return Ok(self.describe(&record));
                }
                reply
            }
            Ok(_) => return Ok(self.describe(&record)),
            // The provider has no record. A call the switch gave up on may
            // still be working its way through the provider, so absence only
            // becomes final once that is no longer plausible.
            Err(ProviderError::UnknownTransaction)
                if now_ms().saturating_sub(record.created_at_ms)
                    > no_record_grace(&route).as_millis() as u64 =>
            {
                ProviderReply::new(
                    Status::Failed,
                    "",
                    "The provider has no record of this transaction; it was not carried out",
                )
            }
            Err(error) => {
                tracing::debug!(transaction_ref = %record.transaction_ref, %error, "query could not settle a pending transaction");
                return Ok(self.describe(&record));
            }
        };
        let entry = history(
            Operation::Query,
            Some(&request.request_ref),
            reply.status,
            Some(&reply),
            &reply.message,
        );
        let change = move |record: &mut TransactionRecord| {
            if !record.status.is_final() {
                advance(record, reply.status, Some(&reply));
                record.updated_at_ms = entry.at_ms;
                record.history.push(entry.clone());
            }
        };
        let updated = self
            .store
            .update_transaction(app.id(), &record.transaction_ref, &change, None)
            .await?
            .unwrap_or(record);
        self.store.durable().await?;
        Ok(self.describe(&updated))
    }

    pub async fn reverse(&self, signed: &VerifiedCall) -> Result<Answer, SwitchError> {
        let app = signed.app();
        let root = envelope::parse_json(signed.body())?;
        let request = envelope::parse_reference(&root)?;
        signed.check_request_ref(&request.request_ref)?;
        let fingerprint = fingerprint(app, &root, None);
        if let Some(existing) = self.store.request(app.id(), &request.request_ref).await? {
            return self.replay(app, existing, &fingerprint).await;
        }
        let record = self
            .named_transaction(
                app,
                &request.transaction_ref,
                request.request_type.as_deref(),
                request.auth_provider.as_deref(),
            )
            .await?;
        let route = self.router.route(&record.provider)?;
        if !route.config.reversible.contains(&record.request_type) {
            return Err(SwitchError::NotReversible(format!(
                "provider `{}` does not reverse `{}`",
                record.provider, record.request_type
            )));
        }
        if record.status != Status::Successful {
            return Err(SwitchError::NotReversible(format!(
                "it is {}; only a Successful transaction can be reversed",
                record.status
            )));
        }
        // A reversal whose outcome is unknown is retried under its first
        // request_ref, so the provider recognises it rather than reversing twice.
        let provider_request_ref = match &record.reversal {
            Some(reversal) if reversal.status == Status::Successful => {
                return Err(SwitchError::NotReversible(
                    "it has already been reversed".into(),
                ));
            }
            Some(reversal) if reversal.status == Status::Pending => reversal.request_ref.clone(),
            _ => request.request_ref.clone(),
        };
        if let Some(replay) = self
            .claim(
                app,
                Operation::Reverse,
                &request.request_ref,
                &record.transaction_ref,
                &fingerprint,
            )
            .await?
        {
            return Ok(replay);
        }
        let call = ReverseRequest {
            app_id: app.id().to_owned(),
            request_ref: provider_request_ref.clone(),
            request_type: record.request_type.clone(),
            transaction_ref: record.transaction_ref.clone(),
        };
        let result = match Self::call(&route, route.provider.reverse(call)).await {
            Err(ProviderError::UnknownTransaction) => Ok(ProviderReply::new(
                Status::Failed,
                "",
                "The provider has no record of this transaction, so it cannot reverse it",
            )),
            other => other,
        };
        let settled = self
            .settle(signed, &route, &request.request_ref, None, result)
            .await?;
        let apply =
            move |record: &mut TransactionRecord, status: Status, reply: Option<&ProviderReply>| {
                // The transaction itself stays Successful; the reversal is its own outcome.
                if record
                    .reversal
                    .as_ref()
                    .is_some_and(|r| r.status == Status::Successful)
                {
                    return;
                }
                record.reversal = Some(Reversal {
                    request_ref: provider_request_ref.clone(),
                    status,
                    at_ms: now_ms(),
                    reply: reply.cloned(),
                });
            };
        self.record_answer(
            app,
            &record,
            Operation::Reverse,
            &request.request_ref,
            settled,
            apply,
        )
        .await
    }

    /// Waits until all writes so far are durable; for shutdown.
    pub async fn flush(&self) -> Result<(), SwitchError> {
        Ok(self.store.durable().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::write_canonical;
    use serde_json::json;

    #[test]
    fn canonical_json_ignores_key_order() {
        let a = json!({"b": 1, "a": {"d": [1, {"y": 2, "x": 1}], "c": null}});
        let b: serde_json::Value =
            serde_json::from_str(r#"{"a":{"c":null,"d":[1,{"x":1,"y":2}]},"b":1}"#).unwrap();
        assert_eq!(canonical_json(&a, None), canonical_json(&b, None));
        assert_ne!(
            canonical_json(&a, None),
            canonical_json(&json!({"b": 2}), None)
        );
    }

    fn canonical_json(value: &serde_json::Value, leave_out: Option<(&str, &str)>) -> String {
        let mut out = Vec::new();
        write_canonical(value, &mut out, leave_out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Stored fingerprints must stay valid: the text hashed is exactly what
    /// the first version hashed (keys sorted, compact, `auth.secure` removed).
    #[test]
    fn canonical_json_is_compact_and_leaves_out_only_auth_secure() {
        let body = json!({
            "z": "é\"\n", "auth": {"type": "bank.account", "secure": "x", "b": [true, 1.5]},
            "nested": {"secure": 1}, "a": []
        });
        assert_eq!(
            canonical_json(&body, Some(("auth", "secure"))),
            r#"{"a":[],"auth":{"b":[true,1.5],"type":"bank.account"},"nested":{"secure":1},"z":"é\"\n"}"#
        );
    }
}
