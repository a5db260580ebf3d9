//! core-api's wire format, and the one mapping from its answers to ours.
//!
//! # The upstream (seed 002)
//!
//! | call | body | answer |
//! |---|---|---|
//! | auth service `POST /token` | [`TokenRequest`]: the customer's long-lived credential | [`TokenResponse`]: a token valid 30 seconds; `401` the credential is refused |
//! | core-api `POST /transaction` | [`ChargeRequest`]: `token`, `amount`, `currency` | `200` [`Accepted`] (`amount`, `currency`, `user_id`): queued for processing in the background; `400`/`403` refused ([`ErrorBody`]); `401` the token is refused |
//!
//! The token endpoint is not in the seed: its shape is an assumption,
//! listed with the others in `manifold_upstreams::core_api`.
//!
//! # What an app is told
//! core-api's `200` says the charge was **queued**, not settled; it carries
//! no transaction id, and core-api has no status look-up and no idempotency
//! key. So:
//! - accepted → `Pending` with code [`codes::QUEUED`] and core-api's answer
//!   as `provider_response`, for good: only the upstream's operator can say
//!   whether the queued charge went through, and the connector never claims
//!   a settlement the upstream did not report;
//! - sent, answer lost (timeout, 5xx, a crash before the answer was stored)
//!   → `Pending` with code [`codes::OUTCOME_UNKNOWN`], and the charge is
//!   **never sent again** (at most once): an operator must ask core-api;
//! - refused (`400`, `403`) → `Failed` with core-api's own error code;
//! - nothing sent (no connection, `503`, the token refused) → the switch
//!   answers `503` and records nothing; the app may retry.

use manifold_crypto::SecretString;
use manifold_provider_sdk::{Outcome, PendingNote};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The response codes this provider answers with: the SDK's own and these.
pub mod codes {
    pub use manifold_provider_sdk::codes::*;
    /// ISO 8583 `09`, "request in progress": queued at core-api.
    pub const QUEUED: &str = "09";
    /// ISO 8583 `68`, "response received too late": sent, answer lost.
    pub const OUTCOME_UNKNOWN: &str = "68";
    /// The customer's credential was refused by the auth service.
    pub const CREDENTIAL_REFUSED: &str = "T1";
}

/// The one `request_type` this provider serves: core-api charges the
/// customer the token names.
pub const COLLECT: &str = "collect";

/// The auth service's `POST /token` body.
#[derive(Serialize)]
pub struct TokenRequest<'a> {
    pub refresh_token: &'a str,
}

/// The auth service's answer.
#[derive(Deserialize)]
pub struct TokenResponse {
    pub token: SecretString,
}

/// core-api's `POST /transaction` body.
#[derive(Serialize)]
pub struct ChargeRequest<'a> {
    pub token: &'a str,
    /// Major units as a decimal string, as the seed's example sends it.
    pub amount: String,
    pub currency: &'a str,
}

/// core-api's `200`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Accepted {
    pub amount: Value,
    pub currency: String,
    pub user_id: u64,
}

/// core-api's and the auth service's error body.
#[derive(Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// The error code of a refusal's body (`{"error": …}`), if it names a
/// plain one.
pub fn fault_code(body: &[u8]) -> Option<String> {
    manifold_provider_sdk::upstream::error_code_in(body, "error")
}

pub use manifold_provider_sdk::upstream::major_units;

/// What the SDK keeps for a queued charge: core-api's answer.
pub fn queued(accepted: &Accepted) -> Value {
    json!({ "queued": accepted })
}

/// The `Pending` answer for what [`queued`] stored, or for `null` (the
/// charge was sent and its answer lost).
pub fn pending_note(deferred: &Value) -> PendingNote {
    match deferred.get("queued") {
        Some(accepted) => PendingNote::new(
            codes::QUEUED,
            "core-api accepted the charge and queued it for processing. It reports no settlement \
             and cannot be asked about it, so this transaction stays Pending: the upstream's \
             operator confirms whether it went through",
        )
        .with_response(accepted.clone()),
        None => PendingNote::new(
            codes::OUTCOME_UNKNOWN,
            "The charge was being sent to core-api when its answer was lost (a timeout, an error, \
             a restart): it may or may not have been taken. core-api has no idempotency key and no \
             status look-up, so the charge is never sent again: an operator must ask core-api \
             whether it was taken",
        ),
    }
}

/// A refusal, in core-api's words.
pub fn refused(status: u16, code: Option<&str>) -> Outcome {
    let code = code.unwrap_or("refused");
    let why = match code {
        "invalid_amount" => "the amount is not one it takes",
        "unsupported_currency" => "it does not take this currency",
        "user_disabled" => "the customer's account is disabled",
        "invalid_request" => "it could not read the request",
        _ => "it refused the request",
    };
    Outcome::failed(code, format!("core-api refused the charge: {why}"))
        .with_response(json!({ "http_status": status, "error": code }))
}

/// The auth service refused the customer's credential: nothing was charged.
pub fn credential_refused() -> Outcome {
    Outcome::failed(
        codes::CREDENTIAL_REFUSED,
        "core-api's auth service refused the customer's token: ask the customer to sign in again",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_written_in_major_units() {
        assert_eq!(major_units(1234, 2), "12.34");
        assert_eq!(major_units(5, 2), "0.05");
        assert_eq!(major_units(100, 2), "1.00");
        assert_eq!(major_units(100, 0), "100");
        assert_eq!(major_units(1, 3), "0.001");
        assert_eq!(major_units(u64::MAX, 2), "184467440737095516.15");
    }

    #[test]
    fn fault_codes_are_read_and_checked() {
        assert_eq!(
            fault_code(br#"{"error":"user_disabled"}"#),
            Some("user_disabled".into())
        );
        assert_eq!(fault_code(br#"{"error":"has spaces and 4111"}"#), None);
        assert_eq!(fault_code(b"<html>"), None);
    }

    #[test]
    fn a_queued_charge_is_pending_with_the_upstreams_answer_and_a_lost_one_says_so() {
        let accepted = Accepted {
            amount: json!(12.34),
            currency: "USD".into(),
            user_id: 7,
        };
        let note = pending_note(&queued(&accepted));
        assert_eq!(note.code, codes::QUEUED);
        assert_eq!(
            note.response,
            Some(serde_json::to_value(&accepted).unwrap())
        );
        assert!(note.message.contains("stays Pending"), "{}", note.message);
        let lost = pending_note(&Value::Null);
        assert_eq!(lost.code, codes::OUTCOME_UNKNOWN);
        assert!(
            lost.message.contains("never sent again"),
            "{}",
            lost.message
        );
        assert_eq!(lost.response, None);
    }
}
