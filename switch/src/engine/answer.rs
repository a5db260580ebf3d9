//! [`Answer`]: a response ready to send, and why it may be sent.
//!
//! An answer that reports a transaction's state can only be built from a
//! [`Durable`] proof, which only the store's flush hands out: "durable before
//! the answer" is checked by the compiler, not by where `durable()` calls
//! happen to be placed. Answers that report no stored state (rejections,
//! samples, health) say so with [`Answer::without_state`].

#[cfg(test)]
use manifold_provider::ProviderReply;
use manifold_provider::Status;

use crate::envelope::{render_relayed, ResponseEnvelope};
use crate::store::{Durable, StoredAnswer, TransactionRecord};

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
    /// `data.error_id` when the switch failed inside; also sent as the
    /// `x-manifold-error-id` header.
    pub error_id: Option<String>,
    /// `Retry-After` (seconds) when a limit refused the call.
    pub retry_after_secs: Option<u64>,
    /// What billing needs to know of the call beyond its outcome.
    pub billing: BillingFacts,
    /// Why the provider brought no answer, when it did not
    /// ([`manifold_provider::ProviderError::kind`]), for metrics.
    pub provider_failure: Option<&'static str>,
    /// Why this answer may be sent.
    #[allow(dead_code)]
    basis: Basis,
}

/// The facts a metered call carries for billing (see [`MeteredCall`]).
///
/// [`MeteredCall`]: crate::store::MeteredCall
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BillingFacts {
    pub transaction_ref: Option<String>,
    pub amount: Option<u64>,
    pub repeat: bool,
    pub completed: bool,
}

impl BillingFacts {
    fn of(record: &TransactionRecord) -> BillingFacts {
        BillingFacts {
            transaction_ref: Some(record.transaction_ref.clone()),
            amount: Some(record.amount),
            repeat: false,
            completed: false,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Basis {
    /// It reports state that is on disk.
    Durable(Durable),
    /// It reports nothing the store holds.
    NoState,
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

fn render(envelope: &ResponseEnvelope) -> String {
    serde_json::to_string(envelope).unwrap_or_else(|_| String::from("{}"))
}

/// A relayed answer rendered before its reply is handed to the store (so the
/// reply is moved there, not copied), sendable only once the store proves
/// the reply durable ([`RenderedRelay::once_durable`]).
pub(super) struct RenderedRelay {
    http_status: u16,
    body: String,
    status: Status,
    request_type: String,
    provider: String,
    billing: BillingFacts,
}

impl RenderedRelay {
    /// The answer recorded for a request, as text. The one rendering of a
    /// provider's reply: a repeat renders the stored reply the same way,
    /// byte for byte.
    pub(super) fn render(record: &TransactionRecord, stored: &StoredAnswer) -> RenderedRelay {
        RenderedRelay {
            http_status: stored.http_status,
            body: render_relayed(&record.provider, &stored.reply),
            status: stored.reply.status,
            request_type: record.request_type.clone(),
            provider: record.provider.clone(),
            billing: BillingFacts::of(record),
        }
    }

    pub(super) fn once_durable(self, durable: Durable) -> Answer {
        Answer {
            http_status: self.http_status,
            body: self.body,
            status: self.status,
            request_type: Some(self.request_type),
            provider: Some(self.provider),
            inspect: false,
            error: None,
            error_id: None,
            retry_after_secs: None,
            billing: self.billing,
            provider_failure: None,
            basis: Basis::Durable(durable),
        }
    }
}

impl Answer {
    /// The answer recorded for a request: sent when it is recorded, and
    /// again to every repeat.
    pub(super) fn relaying(
        record: &TransactionRecord,
        stored: &StoredAnswer,
        durable: Durable,
    ) -> Answer {
        RenderedRelay::render(record, stored).once_durable(durable)
    }

    /// An envelope describing a durable record (`/transact/query`).
    pub(super) fn describing(
        envelope: &ResponseEnvelope,
        record: &TransactionRecord,
        durable: Durable,
    ) -> Answer {
        Answer {
            http_status: http_status_for(envelope.status),
            body: render(envelope),
            status: envelope.status,
            request_type: Some(record.request_type.clone()),
            provider: Some(record.provider.clone()),
            inspect: false,
            error: None,
            error_id: None,
            retry_after_secs: None,
            billing: BillingFacts::of(record),
            provider_failure: None,
            basis: Basis::Durable(durable),
        }
    }

    /// An answer that reports nothing the store holds: a rejection, a
    /// `mock_mode: inspect` sample, a health check.
    pub fn without_state(
        http_status: u16,
        envelope: &ResponseEnvelope,
        request_type: Option<&str>,
        provider: Option<&str>,
    ) -> Answer {
        Answer {
            http_status,
            body: render(envelope),
            status: envelope.status,
            request_type: request_type.map(str::to_owned),
            provider: provider.map(str::to_owned),
            inspect: envelope.data.mock_mode.is_some(),
            error: envelope.data.error.clone(),
            error_id: envelope.data.error_id.clone(),
            retry_after_secs: None,
            billing: BillingFacts::default(),
            provider_failure: None,
            basis: Basis::NoState,
        }
    }

    /// A fixed body that reports nothing the store holds (`/health`).
    pub fn plain(http_status: u16, body: &str) -> Answer {
        Answer {
            http_status,
            body: body.to_owned(),
            status: Status::Successful,
            request_type: None,
            provider: None,
            inspect: false,
            error: None,
            error_id: None,
            retry_after_secs: None,
            billing: BillingFacts::default(),
            provider_failure: None,
            basis: Basis::NoState,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The relayed rendering, checked against the envelope it stands for:
    /// `render_relayed` borrows the reply instead of building
    /// [`ResponseEnvelope::from_reply`], and must write the same bytes.
    fn relayed_body(provider: &str, reply: &ProviderReply) -> String {
        let relayed = render_relayed(provider, reply);
        assert_eq!(
            relayed,
            render(&ResponseEnvelope::from_reply(provider, reply)),
            "the borrowed rendering drifted from the envelope's"
        );
        relayed
    }

    /// Repeats are rendered from the stored reply, so the rendering must not
    /// drift: a change here changes what a repeat of an old call receives.
    #[test]
    fn a_relayed_reply_renders_to_these_exact_bytes() {
        let reply = ProviderReply::new(Status::Successful, "00", "Balance retrieved")
            .with_response(json!({"balance": 1500.25, "currency": "NGN", "a": [1, null]}));
        assert_eq!(
            relayed_body("bank", &reply),
            r#"{"status":"Successful","message":"Balance retrieved","data":{"provider_response_code":"00","provider":"bank","errors":null,"error":null,"provider_response":{"a":[1,null],"balance":1500.25,"currency":"NGN"}}}"#
        );
        let pending = ProviderReply::new(Status::Pending, "", "later");
        assert_eq!(
            relayed_body("bank", &pending),
            r#"{"status":"Pending","message":"later","data":{"provider_response_code":null,"provider":"bank","errors":null,"error":null,"provider_response":null}}"#
        );
        let quoted = ProviderReply::new(Status::Failed, "51", "say \"no\" \u{1F4B8}")
            .with_response(json!("a \\ string, not an object"));
        assert_eq!(
            relayed_body("b\u{e9}nk", &quoted),
            r#"{"status":"Failed","message":"say \"no\" 💸","data":{"provider_response_code":"51","provider":"bénk","errors":null,"error":null,"provider_response":"a \\ string, not an object"}}"#
        );
    }
}
