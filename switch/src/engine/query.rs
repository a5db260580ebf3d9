//! `/transact/query`: report a transaction, asking its provider when the
//! outcome may have moved there.

use manifold_provider::{ProviderError, ProviderReply, QueryRequest, Status};

use super::{advance, history, no_record_grace, now_ms, Answer, Completion, Engine};
use crate::envelope;
use crate::error::SwitchError;
use crate::signed::VerifiedCall;
use crate::store::{Operation, TransactionRecord};

/// The most history entries a transaction gathers while it is `Pending`
/// (a first answer, then queries that brought new words).
pub const MAX_PENDING_HISTORY: usize = 32;

impl Engine {
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
        let durable = self.store.durable().await?;
        // A final status never changes here. A waiting one may have moved at
        // the provider (its confirmation expired and was swept), so ask.
        if record.status.is_final() {
            return Ok(self.describe(&record, durable));
        }
        let route = self.router.route(&record.provider)?;
        // Asked about this transaction a moment ago: the known state is the
        // answer, and the provider is spared a call per impatient query.
        let pacer = &route.limits.pacer;
        if !pacer.may_ask(app.id(), &record.transaction_ref) {
            return Ok(self.describe(&record, durable));
        }
        // A provider at its limit is not asked either: the record is the
        // answer, and the next query may ask.
        let Ok(_slot) = route.limits.gate.enter() else {
            pacer.forget(app.id(), &record.transaction_ref);
            return Ok(self.describe(&record, durable));
        };
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
                // Nothing new. A `Pending` reply in new words is news,
                // though: the provider may have learnt why it cannot settle
                // (an answer lost upstream, a charge queued for good), and
                // the app is owed its words rather than our "not answered".
                let same_words = |last: &ProviderReply| {
                    last.provider_response_code == reply.provider_response_code
                        && last.message == reply.message
                };
                if reply.status == record.status
                    && record.last_reply.as_ref().is_some_and(same_words)
                {
                    return Ok(self.describe(&record, durable));
                }
                reply
            }
            Ok(_) => return Ok(self.describe(&record, durable)),
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
                let mut answer = self.describe(&record, durable);
                answer.provider_failure = Some(error.kind());
                return Ok(answer);
            }
        };
        let entry = history(
            Operation::Query,
            Some(&request.request_ref),
            reply.status,
            Some(&reply),
            &reply.message,
        );
        let completion = Completion::default();
        let change = |record: &mut TransactionRecord| {
            completion.watch(record, |record| {
                if !record.status.is_final() {
                    advance(record, reply.status, Some(&reply));
                    record.updated_at_ms = entry.at_ms;
                    // A provider whose `Pending` words keep changing must not
                    // grow the record without end: past the cap only the latest
                    // words are kept (in `last_reply`), and the final answer
                    // is always written down.
                    if reply.status.is_final() || record.history.len() < MAX_PENDING_HISTORY {
                        record.history.push(entry.clone());
                    }
                }
            });
        };
        let updated = self
            .store
            .update_transaction(app.id(), &record.transaction_ref, &change, None)
            .await?
            .unwrap_or(record);
        let durable = self.store.durable().await?;
        if updated.status.is_final() {
            pacer.forget(app.id(), &updated.transaction_ref);
        }
        let mut answer = self.describe(&updated, durable);
        answer.billing.completed = completion.happened();
        Ok(answer)
    }
}
