//! How a recorded transaction is reported: the envelope `/transact/query`
//! answers, and what a repeat of a call still in flight receives.

use manifold_provider::ProviderReply;
use serde_json::json;

use super::{Answer, Engine};
use crate::envelope::ResponseEnvelope;
use crate::store::{Durable, TransactionRecord};

impl Engine {
    /// The envelope reporting `record`, which `durable` proves is on disk.
    pub(super) fn describe(&self, record: &TransactionRecord, durable: Durable) -> Answer {
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
        let mut transaction = record.summary_json();
        transaction.insert(
            "reversal".into(),
            json!(record.reversal.as_ref().map(|r| json!({
                "status": r.status,
                "at_ms": r.at_ms,
                "message": r.reply.as_ref().map(|reply| reply.message.clone()),
            }))),
        );
        transaction.insert("history".into(), json!(record.history));
        if let Some(at_ms) = record.customer_data_dropped_at_ms {
            transaction.insert("customer_data_dropped_at_ms".into(), at_ms.into());
        }
        envelope.data.transaction = Some(transaction.into());
        Answer::describing(&envelope, record, durable)
    }
}
