//! Joompay's wire format, and what each of its answers means for the app.
//!
//! # The upstream (seed 004)
//!
//! gRPC over mutual TLS (the TPP's certificate), every call carrying
//! `x-tpp-id`, `x-request-id`, `user-time-zone` and the customer's
//! `Authorization: Bearer` token; the protos are in `proto/`.
//!
//! | request type | calls |
//! |---|---|
//! | `link_account` | none: the customer's consent ([`crate::consent`]) |
//! | `get_balance` | `GetAccountBalance` |
//! | `lookup_account` | `GetAccountDetails` (the customer's own account) |
//! | `get_statement` | `GetActivityScreen` (`details.page_size`, `details.page_token`) |
//! | `transfer_funds` | `ValidateBankRecipient`, then `ExecuteBankTransfer` → SCA → `ExecuteBankTransfer` with `sca_confirmation` |
//!
//! The SCA challenge is the `FAILED_PRECONDITION` error whose details are a
//! [`ScaRequired`] (the seed's "AUTHENTICATION_ID_FROM_ERROR"). Every other
//! refusal's status message is Joompay's reason code, relayed as
//! `provider_response_code`. The shapes the seed does not give are
//! assumptions, listed in `manifold_upstreams::joompay`.

use manifold_provider_sdk::Outcome;
use prost::Message;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tonic::{Code, Status};

pub use crate::proto::{Money, ScaRequired};

pub mod codes {
    pub use manifold_provider_sdk::codes::*;
    /// The app never linked this customer's Joompay account.
    pub const NOT_LINKED: &str = "not_linked";
    /// Joompay no longer accepts the customer's consent (refresh refused).
    pub const CONSENT_REVOKED: &str = "consent_revoked";
    pub const CONSENT_REFUSED: &str = "consent_refused";
    pub const CONSENT_EXPIRED: &str = "consent_expired";
    pub const CONSENT_FAILED: &str = "consent_failed";
}

pub const LINK_ACCOUNT: &str = "link_account";
pub const GET_BALANCE: &str = "get_balance";
pub const LOOKUP_ACCOUNT: &str = "lookup_account";
pub const GET_STATEMENT: &str = "get_statement";
pub const TRANSFER_FUNDS: &str = "transfer_funds";

/// Joompay's accounts are euro accounts (SEPA transfers).
pub const CURRENCY: &str = "EUR";
pub const MAX_PAGE_SIZE: i64 = 100;
pub const MAX_DESCRIPTION: usize = 140;

/// The idempotency key of a transaction: a UUID (version 8, RFC 9562) made
/// from `(app_id, transaction_ref)`, so the same transaction always sends
/// the same `client_operation_uuid`, from any process, after any crash.
pub fn client_operation_uuid(app_id: &str, transaction_ref: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"manifold/joompay/client_operation_uuid\0")
        .chain_update(app_id.as_bytes())
        .chain_update(b"\0")
        .chain_update(transaction_ref.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// A random (version 4) UUID: the `x-request-id` of one call.
pub fn request_id() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Cents as Joompay's money.
pub fn money(cents: u64) -> Money {
    Money {
        currency_code: CURRENCY.to_owned(),
        units: (cents / 100) as i64,
        nanos: ((cents % 100) * 10_000_000) as i32,
    }
}

/// Joompay's money as a decimal string in major units, for the app.
pub fn shown(money: &Money) -> Value {
    let cents = money.units.saturating_mul(100) + i64::from(money.nanos / 10_000_000);
    json!({
        "amount": format!("{}.{:02}", cents / 100, (cents % 100).abs()),
        "currency": money.currency_code,
    })
}

/// What one Joompay error means.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// SCA: the code was sent to the customer.
    Sca(ScaRequired),
    /// The customer's access token is dead: renew it and call again.
    TokenDead,
    /// Joompay said no; the reason code is its status message.
    Refused(String),
    /// Joompay was not reached, or its answer is unknown (a transport
    /// error, `UNAVAILABLE`, a deadline): whether it acted is not known.
    Unknown(String),
}

pub fn classify(status: &Status) -> Refusal {
    match status.code() {
        Code::FailedPrecondition => match ScaRequired::decode(status.details()) {
            Ok(sca) if !sca.authentication_id.is_empty() => Refusal::Sca(sca),
            _ => Refusal::Refused(reason(status)),
        },
        Code::Unauthenticated => Refusal::TokenDead,
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Unknown
        | Code::Internal
        | Code::DataLoss
        | Code::ResourceExhausted => Refusal::Unknown(format!(
            "Joompay answered {:?}: {}",
            status.code(),
            reason(status)
        )),
        _ => Refusal::Refused(reason(status)),
    }
}

/// Joompay's reason code, or the gRPC code's name when the message is not
/// a plain reason code (it is relayed to the app as it stands).
fn reason(status: &Status) -> String {
    let message = status.message();
    if !message.is_empty()
        && message.len() <= 64
        && message
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        message.to_owned()
    } else {
        format!("{:?}", status.code()).to_lowercase()
    }
}

pub fn refused(code: &str) -> Outcome {
    let why = match code {
        "insufficient_funds" => "the account does not hold the amount",
        "invalid_iban" => "the recipient's IBAN is not valid",
        "recipient_name_mismatch" => "the name does not match the recipient's account",
        "invalid_recipient_name" => "the recipient's name is not one it takes",
        "unknown_bank_recipient" => "the recipient was not validated for this customer",
        "invalid_amount" | "unsupported_currency" => "the amount is not one it takes",
        "client_operation_uuid_reused" => {
            "this transaction_ref was already used for a different transfer"
        }
        "sca_attempts_exhausted" => "too many wrong codes; the transfer was not made",
        "unknown_tpp" => "it does not know this TPP (check tpp_id and the certificate)",
        _ => "it refused the request",
    };
    Outcome::failed(code, format!("Joompay refused: {why}"))
}

pub fn not_linked() -> Outcome {
    Outcome::failed(
        codes::NOT_LINKED,
        "This customer has not linked a Joompay account to this app: send link_account first",
    )
}

pub fn consent_revoked() -> Outcome {
    Outcome::failed(
        codes::CONSENT_REVOKED,
        "Joompay no longer accepts this customer's consent: send link_account again",
    )
}

/// What a transaction waits on, kept by the SDK (sealed at rest) between
/// calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "waiting_for", rename_all = "snake_case")]
pub enum Deferred {
    /// The customer's consent at Joompay: `session` is its `state`.
    Consent { session: String },
    /// A transfer: its SCA code, or the answer to its execution.
    Transfer(Transfer),
}

impl Deferred {
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    pub fn from_value(value: &Value) -> Option<Deferred> {
        serde_json::from_value(value.clone()).ok()
    }
}

/// A transfer as it is sent again: the same `client_operation_uuid`, so
/// Joompay executes it once however often it is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transfer {
    pub app_id: String,
    pub customer_ref: String,
    pub client_operation_uuid: String,
    pub amount_cents: u64,
    pub description: String,
    pub to_bank_recipient_id: String,
    pub recipient_iban: String,
    pub recipient_name: String,
    /// The SCA challenge the customer's code answers, once there is one.
    #[serde(default)]
    pub authentication_id: Option<String>,
    #[serde(default)]
    pub sent_to: String,
}

impl Transfer {
    pub fn prompt(&self) -> String {
        let to = if self.sent_to.is_empty() {
            "to your phone".to_owned()
        } else {
            format!("({})", self.sent_to)
        };
        format!(
            "Enter the code Joompay sent {to} to confirm EUR {}.{:02} to {}",
            self.amount_cents / 100,
            self.amount_cents % 100,
            self.recipient_name
        )
    }

    /// What the app sees of a completed transfer.
    pub fn completed(&self, answer: &crate::proto::ExecuteBankTransferResponse) -> Outcome {
        let mut response = json!({
            "transfer_id": answer.transfer_id,
            "status": answer.status,
            "client_operation_uuid": self.client_operation_uuid,
            "recipient_iban": self.recipient_iban,
            "recipient_name": self.recipient_name,
        });
        if let Some(amount) = &answer.amount {
            response["amount"] = shown(amount);
        }
        Outcome::successful(codes::APPROVED, "The transfer was completed").with_response(response)
    }
}

/// A customer reference the connector keys a link by: 1 to 128 visible
/// ASCII characters.
pub fn customer_ref_is_valid(customer_ref: &str) -> bool {
    !customer_ref.is_empty()
        && customer_ref.len() <= 128
        && customer_ref.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idempotency_key_is_a_stable_version_8_uuid_per_transaction() {
        let one = client_operation_uuid("app", "t-1");
        assert_eq!(one, client_operation_uuid("app", "t-1"));
        assert_ne!(one, client_operation_uuid("app", "t-2"));
        assert_ne!(one, client_operation_uuid("ap", "pt-1"));
        assert_eq!(one.len(), 36);
        assert_eq!(&one[14..15], "8");
        assert!(matches!(&one[19..20], "8" | "9" | "a" | "b"));
        let random = request_id();
        assert_eq!(&random[14..15], "4");
    }

    #[test]
    fn cents_become_units_and_nanos_and_back() {
        let amount = money(1_234);
        assert_eq!((amount.units, amount.nanos), (12, 340_000_000));
        assert_eq!(shown(&amount)["amount"], "12.34");
        assert_eq!(shown(&money(5))["amount"], "0.05");
    }

    #[test]
    fn errors_are_classified_by_code_and_details() {
        let sca = ScaRequired {
            authentication_id: "auth-1".into(),
            sent_to: "SMS".into(),
            expires_in_seconds: 300,
        };
        let status = Status::with_details(
            Code::FailedPrecondition,
            "sca_required",
            sca.encode_to_vec().into(),
        );
        assert_eq!(classify(&status), Refusal::Sca(sca));
        assert_eq!(
            classify(&Status::failed_precondition("insufficient_funds")),
            Refusal::Refused("insufficient_funds".into())
        );
        assert_eq!(
            classify(&Status::unauthenticated("token_expired")),
            Refusal::TokenDead
        );
        assert!(matches!(
            classify(&Status::unavailable("maintenance")),
            Refusal::Unknown(_)
        ));
        assert_eq!(
            classify(&Status::invalid_argument("Some <html> text")),
            Refusal::Refused("invalidargument".into())
        );
    }
}
