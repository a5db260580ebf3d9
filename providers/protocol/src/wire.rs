//! What crosses the wire between the switch and a provider.
//!
//! These types are the JSON bodies of `POST /transact`, `/transact/validate`,
//! `/transact/query` and `/transact/reverse` on a provider microservice, and the
//! arguments of the same calls on an in-process provider. The sensitive source
//! details arrive here already decrypted, as secret types that never print.

use manifold_crypto::{SourceDetails, ValidationInput};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The outcome of an operation, exactly as seed 003 spells it on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Status {
    Successful,
    Failed,
    #[serde(rename = "WaitingForOTP")]
    WaitingForOtp,
    PendingValidation,
    /// Accepted, but the outcome is not known yet; the app polls `/transact/query`.
    Pending,
}

impl Status {
    /// Final statuses never change again except through a reversal.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Successful | Status::Failed)
    }

    /// Statuses in which the transaction waits for `/transact/validate`.
    pub fn awaits_validation(self) -> bool {
        matches!(self, Status::WaitingForOtp | Status::PendingValidation)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Successful => "Successful",
            Status::Failed => "Failed",
            Status::WaitingForOtp => "WaitingForOTP",
            Status::PendingValidation => "PendingValidation",
            Status::Pending => "Pending",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The customer block of seed 003's `transaction.customer`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    #[serde(default)]
    pub customer_ref: Option<String>,
    #[serde(default)]
    pub firstname: Option<String>,
    #[serde(default)]
    pub surname: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub mobile_no: Option<String>,
}

/// The non-secret part of seed 003's `transaction` object, as the provider needs it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TransactionDetails {
    #[serde(default)]
    pub transaction_desc: Option<String>,
    #[serde(default)]
    pub transaction_ref_parent: Option<String>,
    /// Minor units (kobo, cents); never fractional.
    pub amount: u64,
    #[serde(default)]
    pub customer: Customer,
    /// Free-form members: derived structs refuse a repeated field of their
    /// own, and these refuse a repeated key inside ([`crate::json`]).
    #[serde(default, deserialize_with = "crate::json::optional_value")]
    pub meta: Option<Value>,
    #[serde(default, deserialize_with = "crate::json::optional_value")]
    pub details: Option<Value>,
}

/// Start a transaction (`POST /transact`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransactRequest {
    /// The calling app; providers key their state by `(app_id, transaction_ref)`
    /// because two apps may choose the same `transaction_ref`.
    pub app_id: String,
    pub request_ref: String,
    pub request_type: String,
    pub transaction_ref: String,
    /// The app's `otp_override` for this service: `true` means answer at once.
    pub otp_override: bool,
    /// Whether the switch's host lists this `request_type` as `read_only`:
    /// the switch then wrote nothing before this call, because calling a
    /// read-only service twice is harmless. A provider for which it may move
    /// money must refuse the call ([`ProviderError::Rejected`](crate::ProviderError::Rejected)),
    /// so the two configurations cannot silently disagree.
    #[serde(default)]
    pub read_only: bool,
    /// The decrypted `auth.secure`, tagged by `auth.type`.
    pub source: SourceDetails,
    pub transaction: TransactionDetails,
}

/// Complete a transaction that waits for an OTP or other information.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidateRequest {
    pub app_id: String,
    pub request_ref: String,
    pub request_type: String,
    pub transaction_ref: String,
    pub input: ValidationInput,
}

/// Ask for the provider's view of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryRequest {
    pub app_id: String,
    pub request_type: String,
    pub transaction_ref: String,
}

/// Ask the provider to undo a successful transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReverseRequest {
    pub app_id: String,
    pub request_ref: String,
    pub request_type: String,
    pub transaction_ref: String,
}

/// A provider's answer to any of the four operations; the switch relays it in
/// its response envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderReply {
    pub status: Status,
    pub message: String,
    pub provider_response_code: String,
    #[serde(default)]
    pub provider_response: Option<Value>,
}

impl ProviderReply {
    pub fn new(status: Status, code: &str, message: impl Into<String>) -> Self {
        ProviderReply {
            status,
            message: message.into(),
            provider_response_code: code.to_owned(),
            provider_response: None,
        }
    }

    pub fn with_response(mut self, response: Value) -> Self {
        self.provider_response = Some(response);
        self
    }
}

/// The body of a provider's non-200 answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderFault {
    pub error: String,
    pub message: String,
}

/// Machine-readable `ProviderFault::error` codes.
pub mod fault {
    pub const UNKNOWN_TRANSACTION: &str = "unknown_transaction";
    pub const BAD_REQUEST: &str = "bad_request";
    pub const INTERNAL: &str = "internal";
    pub const NOT_FOUND: &str = "not_found";
    /// The request's signature was missing, wrong, stale or replayed.
    pub const UNAUTHENTICATED: &str = "unauthenticated";
    /// Too many failed authentications from the caller's address.
    pub const TOO_MANY_AUTH_FAILURES: &str = "too_many_auth_failures";
    /// The provider could not check the request now (its replay guard is full).
    pub const BUSY: &str = "busy";
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRANSACT: &str = r#"{"app_id":"a","request_ref":"r","request_type":"transfer_funds",
        "transaction_ref":"t","otp_override":true,
        "source":{"type":"bank.account","account_number":"0123456789","bank_code":"058"},
        "transaction":{"amount":150000,"customer":{"mobile_no":"2348022000008"},
            "meta":null,"details":{"destination_account":"9876543210","destination_bank_code":"044"}}}"#;

    /// A provider microservice reads what the switch signed exactly as the
    /// switch meant it: a repeated key anywhere is refused, not resolved.
    #[test]
    fn a_repeated_key_anywhere_in_a_request_is_refused() {
        assert!(serde_json::from_str::<TransactRequest>(TRANSACT).is_ok());
        let repeats = [
            (r#""app_id":"a","#, r#""app_id":"a","app_id":"b","#),
            (r#""amount":150000,"#, r#""amount":150000,"amount":1,"#),
            (
                r#""type":"bank.account","#,
                r#""type":"bank.account","type":"wallet","#,
            ),
            (
                r#""bank_code":"058""#,
                r#""bank_code":"058","bank_code":"044""#,
            ),
            (
                r#""mobile_no":"2348022000008""#,
                r#""mobile_no":"1","mobile_no":"2""#,
            ),
            (
                r#""destination_bank_code":"044""#,
                r#""destination_bank_code":"044","destination_account":"1""#,
            ),
        ];
        for (once, twice) in repeats {
            assert!(TRANSACT.contains(once), "{once}");
            let body = TRANSACT.replacen(once, twice, 1);
            let error = serde_json::from_str::<TransactRequest>(&body)
                .expect_err(&format!("accepted {twice}"));
            assert!(
                error.to_string().contains("duplicate field")
                    || error.to_string().contains("appears more than once"),
                "{twice}: {error}"
            );
        }
    }
}
