//! Skopa's wire format, and what each of its answers means for the app.
//!
//! # The upstream (seed 000)
//!
//! | call | body | answer |
//! |---|---|---|
//! | `POST /auth/refresh` | [`RefreshRequest`]: the customer's refresh token | [`TokenPair`]; `401` refused |
//! | `POST /transfer` | [`MoveMoney`] with `receiver_id` | `200` a [`Record`]; `428` [`SecondFactor`]; `422` refused |
//! | `POST /withdrawal/make` | [`MoveMoney`] with `bank_account_id` | as a transfer |
//! | `POST /auth/2fa/verify_one` | [`VerifyOne`] | [`Verified`]; `400` wrong code; `404` no such verification |
//! | `GET /payment_gateway/transactions?limit=&search_after=` | — | a [`Page`] |
//!
//! A `428` means the codes were already sent to the customer's devices: the
//! transaction is `WaitingForOTP`, the code the customer types is checked by
//! Skopa (`verify_one`, one method at a time), and the call is sent again
//! with `X-Verification-Id`. The shapes the seed does not give are
//! assumptions, listed in `manifold_upstreams::skopa`.

use manifold_crypto::SecretString;
use manifold_provider_sdk::Outcome;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub mod codes {
    pub use manifold_provider_sdk::codes::*;
    /// The customer's refresh token was refused.
    pub const CREDENTIAL_REFUSED: &str = "T1";
    /// The verification expired or was used before the customer finished it.
    pub const VERIFICATION_GONE: &str = "900T3";
}

pub const TRANSFER_FUNDS: &str = "transfer_funds";
pub const DISBURSE: &str = "disburse";
pub const GET_STATEMENT: &str = "get_statement";

/// The most records one `get_statement` returns.
pub const MAX_STATEMENT_LIMIT: u64 = 100;
pub const DEFAULT_STATEMENT_LIMIT: u64 = 20;

#[derive(Serialize)]
pub struct RefreshRequest<'a> {
    pub refresh_token: &'a str,
}

#[derive(Deserialize)]
pub struct TokenPair {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
}

/// The body of a transfer or a withdrawal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoveMoney {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub receiver_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bank_account_id: Option<String>,
    /// Major units, as a decimal string.
    pub amount: String,
    /// Our reference, `<app_id>:<transaction_ref>`: listed in the customer's
    /// transactions, so a call whose answer was lost can be found.
    pub reference: String,
}

/// What a `428` asks for.
#[derive(Debug, Clone, Deserialize)]
pub struct SecondFactor {
    pub verification_id: String,
    pub methods: Vec<String>,
}

#[derive(Serialize)]
pub struct VerifyOne<'a> {
    pub verification_id: &'a str,
    pub method: &'a str,
    pub code: &'a str,
}

#[derive(Deserialize)]
pub struct Verified {
    pub remaining: Vec<String>,
}

/// One of the customer's transactions.
pub type Record = Value;

#[derive(Debug, Deserialize, Serialize)]
pub struct Page {
    pub records: Vec<Record>,
    pub has_more: bool,
    #[serde(default)]
    pub last_id: Option<Value>,
}

/// Skopa's error code of a refusal (`{"code": …}`), if it is a plain one.
pub fn fault_code(body: &[u8]) -> Option<String> {
    manifold_provider_sdk::upstream::error_code_in(body, "code")
}

pub use manifold_provider_sdk::upstream::major_units;

pub fn reference(app_id: &str, transaction_ref: &str) -> String {
    format!("{app_id}:{transaction_ref}")
}

/// The endpoint of a money-moving `request_type`.
pub fn path_of(request_type: &str) -> Option<&'static [&'static str]> {
    match request_type {
        TRANSFER_FUNDS => Some(&["transfer"]),
        DISBURSE => Some(&["withdrawal", "make"]),
        _ => None,
    }
}

/// What the SDK keeps while the customer types Skopa's codes: the call to
/// send again, the verification, the methods still to verify, and the
/// customer's refresh token (the SDK seals it at rest and erases it once
/// the transaction is final), since a validation carries no source.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Waiting {
    pub request_type: String,
    pub body: MoveMoney,
    pub verification_id: String,
    pub remaining: Vec<String>,
    pub credential: SecretString,
}

impl Waiting {
    pub fn to_value(&self) -> Value {
        json!({
            "request_type": self.request_type,
            "body": self.body,
            "verification_id": self.verification_id,
            "remaining": self.remaining,
            "credential": self.credential.expose(),
        })
    }

    pub fn from_value(value: &Value) -> Option<Waiting> {
        serde_json::from_value(value.clone()).ok()
    }

    /// What the customer is asked for: the first method still to verify.
    pub fn prompt(&self) -> String {
        let device = match self.remaining.first().map(String::as_str) {
            Some("sms") => "by SMS",
            Some("email") => "by e-mail",
            _ => "to your device",
        };
        format!("Enter the code Skopa sent you {device}")
    }
}

/// A completed transfer or withdrawal.
pub fn completed(request_type: &str, record: Record) -> Outcome {
    let what = if request_type == DISBURSE {
        "The withdrawal was made"
    } else {
        "The transfer was completed"
    };
    Outcome::successful(codes::APPROVED, what).with_response(record)
}

pub fn refused(code: Option<&str>) -> Outcome {
    let code = code.unwrap_or("refused");
    let why = match code {
        "insufficient_funds" => "the account does not hold the amount",
        "receiver_not_found" => "there is no such Skopa user to receive it",
        "bank_account_not_found" => "the bank account is not one of the customer's",
        "invalid_amount" => "the amount is not one it takes",
        _ => "it refused the request",
    };
    Outcome::failed(code, format!("Skopa refused: {why}"))
}

pub fn credential_refused() -> Outcome {
    Outcome::failed(
        codes::CREDENTIAL_REFUSED,
        "Skopa refused the customer's token: ask the customer to sign in again",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_kept_round_trips_and_asks_for_the_next_method() {
        let waiting = Waiting {
            request_type: TRANSFER_FUNDS.into(),
            body: MoveMoney {
                receiver_id: Some("u-2".into()),
                bank_account_id: None,
                amount: "1.00".into(),
                reference: "app:t".into(),
            },
            verification_id: "ver-1".into(),
            remaining: vec!["email".into()],
            credential: SecretString::from("refresh-token-value-01"),
        };
        let back = Waiting::from_value(&waiting.to_value()).unwrap();
        assert_eq!(back.body, waiting.body);
        assert_eq!(back.credential.expose(), "refresh-token-value-01");
        assert_eq!(back.prompt(), "Enter the code Skopa sent you by e-mail");
        assert!(!format!("{back:?}").contains("refresh-token-value"));
        assert_eq!(
            serde_json::to_value(&waiting.body).unwrap(),
            json!({"receiver_id": "u-2", "amount": "1.00", "reference": "app:t"})
        );
    }
}
