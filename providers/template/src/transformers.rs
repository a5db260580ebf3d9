//! The upstream's wire format, and the conversions between it and ours.
//!
//! **Replace this file first.** It holds only the upstream's JSON structs and
//! the functions that turn a [`TransactRequest`] into an upstream request and
//! an upstream answer into an SDK [`Step`] or [`Outcome`]. The decisive one is
//! [`Transfer::into_step`]: *upstream status → our status*, in one `match`.
//! A status this connector was not written for becomes [`Step::Processing`]
//! (the transaction stays `Pending` and is polled): a connector never reaches
//! a final status unless the upstream said so explicitly.
//!
//! # The upstream this template wraps
//!
//! An imaginary but ordinary bank API, modelled on seed 004 (OAuth tokens,
//! transfers confirmed by an SCA code the bank sends, idempotent by a
//! client-generated id). Paths are relative to the configured base URL.
//!
//! | call | body | answer |
//! |---|---|---|
//! | `POST /oauth/token` (HTTP Basic `client_id:client_secret`) | form `grant_type=client_credentials`, or `grant_type=refresh_token&refresh_token=…` | [`TokenResponse`] |
//! | `POST /v1/transfers` | [`CreateTransfer`] | a [`Transfer`]: `201` when new, `200` when `client_transfer_id` was seen before (the same transfer) |
//! | `GET /v1/transfers/{id}` | — | a [`Transfer`] |
//! | `GET /v1/transfers/by-client-id/{client_transfer_id}` | — | a [`Transfer`], `404` when there is none |
//! | `POST /v1/transfers/{id}/confirm` | [`ConfirmTransfer`] | a [`Transfer`]; still `requires_sca` after a wrong code |
//! | `POST /v1/transfers/{id}/reversal` | `{}` | a [`Reversal`]; one per transfer, a repeat answers the same |
//!
//! A transfer's `status` is `requires_sca` (the bank sent the customer a
//! code), `processing`, `completed` or `failed` (with a `failure.code`).
//! Every call but the token's carries `Authorization: Bearer <access_token>`.
//! Errors are `{"error": {"code": "…", "message": "…"}}`: `401` the token was
//! refused; `404` no such transfer; `400`/`409`/`422` the request was refused
//! and nothing was done; `429`/`503` not processed, try later; any other
//! status: the outcome is unknown.

use manifold_crypto::{SecretString, SourceDetails};
use manifold_provider::TransactRequest;
use manifold_provider_sdk::{ConnectorError, Outcome, Step};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::codes;

/// The one `request_type` this provider serves.
pub const TRANSFER: &str = "transfer_funds";

/// The upstream's idempotency key for one of our transactions.
///
/// It must be unique per `(app_id, transaction_ref)`, because two apps may
/// use the same `transaction_ref`. `app_id` is `A-Z a-z 0-9 _ - .` only, so
/// the first `:` separates the two and no two transactions share a key. If
/// your upstream wants a UUID, derive one from these two values instead
/// (a name-based UUID), never a random one: the key must be the same when the
/// SDK starts the transaction again after a crash.
pub fn client_transfer_id(app_id: &str, transaction_ref: &str) -> String {
    format!("{app_id}:{transaction_ref}")
}

// ---------------------------------------------------------------- OAuth

/// The token endpoint's answer (RFC 6749 §5.1).
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    pub access_token: SecretString,
    #[serde(default)]
    pub token_type: Option<String>,
    /// Seconds the token lives.
    pub expires_in: u64,
    #[serde(default)]
    pub refresh_token: Option<SecretString>,
}

// ---------------------------------------------------------------- requests

#[derive(Debug, Serialize)]
pub struct Money<'a> {
    /// Minor units, as the switch's `transaction.amount`.
    pub value: u64,
    pub currency: &'a str,
}

/// The customer's account, from the decrypted `auth.secure`.
#[derive(Debug, Serialize)]
pub struct DebtorAccount<'a> {
    /// Serialized in clear (the upstream needs it); `Debug` stays redacted.
    pub account_number: &'a SecretString,
    pub bank_code: &'a str,
}

/// The destination, from `transaction.details`.
#[derive(Debug, Serialize)]
pub struct CreditorAccount<'a> {
    pub account_number: &'a str,
    pub bank_code: &'a str,
}

/// `POST /v1/transfers`.
#[derive(Debug, Serialize)]
pub struct CreateTransfer<'a> {
    pub client_transfer_id: String,
    pub amount: Money<'a>,
    pub debtor: DebtorAccount<'a>,
    pub creditor: CreditorAccount<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
}

/// `POST /v1/transfers/{id}/confirm`.
#[derive(Debug, Serialize)]
pub struct ConfirmTransfer<'a> {
    pub authentication_id: &'a str,
    /// The code the customer typed, for the bank to check.
    pub code: &'a SecretString,
}

impl<'a> CreateTransfer<'a> {
    /// The upstream request for a switch `transfer_funds`, or the `Failed` outcome
    /// when the request cannot be one (the upstream is not called then).
    ///
    /// `transaction.details` carries the destination as in the demo bank:
    /// `destination_account` (10 digits) and `destination_bank_code` (3 to 6
    /// digits); the source must be a `bank.account`.
    pub fn from_request(request: &'a TransactRequest, currency: &'a str) -> Result<Self, Outcome> {
        let invalid = |message: &str| Outcome::failed(codes::INVALID_TRANSACTION, message);
        let SourceDetails::BankAccount(source) = &request.source else {
            return Err(invalid("This provider accepts bank.account sources only"));
        };
        let amount = request.transaction.amount;
        if amount == 0 {
            return Err(invalid(
                "transaction.amount must be greater than 0 for a transfer",
            ));
        }
        let details = request.transaction.details.as_ref();
        let field = |name: &str| details.and_then(|d| d.get(name)).and_then(Value::as_str);
        let account = field("destination_account")
            .filter(|a| a.len() == 10 && a.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                invalid("transaction.details.destination_account must be a 10-digit account number")
            })?;
        let bank_code = field("destination_bank_code")
            .filter(|b| (3..=6).contains(&b.len()) && b.bytes().all(|c| c.is_ascii_digit()))
            .ok_or_else(|| {
                invalid("transaction.details.destination_bank_code must be 3 to 6 digits")
            })?;
        Ok(CreateTransfer {
            client_transfer_id: client_transfer_id(&request.app_id, &request.transaction_ref),
            amount: Money {
                value: amount,
                currency,
            },
            debtor: DebtorAccount {
                account_number: &source.account_number,
                bank_code: &source.bank_code,
            },
            creditor: CreditorAccount {
                account_number: account,
                bank_code,
            },
            description: request.transaction.transaction_desc.as_deref(),
        })
    }
}

// ---------------------------------------------------------------- answers

#[derive(Debug, Clone, Deserialize)]
pub struct Amount {
    pub value: u64,
    pub currency: String,
}

/// The customer-authentication challenge of a `requires_sca` transfer.
#[derive(Debug, Clone, Deserialize)]
pub struct ScaChallenge {
    pub authentication_id: String,
    /// Where the bank sent the code, masked by the bank (`+234*****008`).
    #[serde(default)]
    pub sent_to: Option<String>,
    #[serde(default)]
    pub attempts_remaining: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Failure {
    pub code: String,
}

/// A transfer as the upstream reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct Transfer {
    pub id: String,
    pub status: String,
    pub amount: Amount,
    #[serde(default)]
    pub sca: Option<ScaChallenge>,
    #[serde(default)]
    pub failure: Option<Failure>,
}

/// A reversal as the upstream reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct Reversal {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub failure: Option<Failure>,
}

#[derive(Debug, Deserialize)]
struct FaultBody {
    error: Fault,
}

#[derive(Debug, Deserialize)]
struct Fault {
    #[serde(default)]
    code: String,
}

/// The machine-readable code of an upstream error body, if it has one. The
/// upstream's free-text `message` is never read: it may quote what we sent
/// (an account number), and it would end up in a log or an app's response.
pub fn fault_code(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<FaultBody>(body)
        .ok()
        .map(|body| body.error.code)
        .filter(|code| {
            !code.is_empty()
                && code.len() <= 64
                && code
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        })
}

// ---------------------------------------------------------------- what we keep

/// What the SDK stores between steps for this connector (seed 003: "store
/// response info in the database"): enough to confirm or poll the transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deferred {
    pub transfer_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_id: Option<String>,
}

impl Deferred {
    /// Reads what a step stored; `None` when the SDK has nothing (`null`: an
    /// outcome that was unknown, so the transfer is looked up by our key).
    pub fn read(value: Value) -> Result<Option<Deferred>, ConnectorError> {
        if value.is_null() {
            return Ok(None);
        }
        serde_json::from_value(value)
            .map(Some)
            .map_err(|error| ConnectorError::Internal(format!("stored transfer state: {error}")))
    }

    fn store(transfer_id: &str, authentication_id: Option<&str>) -> Result<Value, ConnectorError> {
        serde_json::to_value(Deferred {
            transfer_id: transfer_id.to_owned(),
            authentication_id: authentication_id.map(str::to_owned),
        })
        .map_err(|error| ConnectorError::Internal(error.to_string()))
    }
}

/// What [`Connector::reverse`](manifold_provider_sdk::Connector::reverse)
/// needs to undo a completed transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReversalHandle {
    pub transfer_id: String,
}

// ---------------------------------------------------------------- upstream → us

impl Transfer {
    /// Upstream status → our step: the one place that decides.
    ///
    /// `after_code` says this answers a confirmation, so a transfer that
    /// still `requires_sca` means the code was not accepted.
    pub fn into_step(self, after_code: bool) -> Result<Step, ConnectorError> {
        let step = match self.status.as_str() {
            "completed" => {
                let reversal = serde_json::to_value(ReversalHandle {
                    transfer_id: self.id.clone(),
                })
                .map_err(|error| ConnectorError::Internal(error.to_string()))?;
                Step::Done(
                    Outcome::successful(codes::APPROVED, "Transfer completed")
                        .with_response(json!({
                            "reference": self.id,
                            "amount": self.amount.value,
                            "currency": self.amount.currency,
                        }))
                        .reversible_with(reversal),
                )
            }
            "failed" => Step::Done(decline(self.failure.as_ref())),
            "requires_sca" => match &self.sca {
                Some(sca) => Step::UpstreamOtp {
                    prompt: sca.prompt(after_code),
                    deferred: Deferred::store(&self.id, Some(&sca.authentication_id))?,
                },
                // The bank wants a code but did not say which challenge: ask
                // it again later rather than guess.
                None => Step::Processing {
                    deferred: Deferred::store(&self.id, None)?,
                },
            },
            "processing" => Step::Processing {
                deferred: Deferred::store(&self.id, None)?,
            },
            other => {
                tracing::warn!(
                    transfer_id = %self.id,
                    status = other,
                    "unknown upstream status; the transaction stays pending"
                );
                Step::Processing {
                    deferred: Deferred::store(&self.id, None)?,
                }
            }
        };
        Ok(step)
    }
}

impl Reversal {
    /// Upstream reversal status → our outcome. A reversal the bank has not
    /// decided yet is no outcome at all: the error makes the switch keep the
    /// reversal open, and a retry (same `request_ref`) asks again; the
    /// upstream answers the same reversal, so nothing is reversed twice.
    pub fn into_outcome(self) -> Result<Outcome, ConnectorError> {
        match self.status.as_str() {
            "completed" => Ok(Outcome::successful(codes::APPROVED, "Transfer reversed")
                .with_response(json!({ "reversal_reference": self.id }))),
            "failed" => Ok(Outcome::failed(
                codes::NOT_REVERSIBLE,
                match self.failure.as_ref().map(|f| f.code.as_str()) {
                    Some("insufficient_funds") => {
                        "The destination account no longer holds the funds"
                    }
                    _ => "The bank refused to reverse the transfer",
                },
            )),
            other => Err(ConnectorError::Indeterminate(format!(
                "reversal {} is `{other}`, not final yet",
                self.id
            ))),
        }
    }
}

impl ScaChallenge {
    fn prompt(&self, after_code: bool) -> String {
        let to = self.sent_to.as_deref().unwrap_or("your registered phone");
        let ask = format!("Enter the code your bank sent to {to} to confirm the transfer");
        if !after_code {
            return ask;
        }
        match self.attempts_remaining {
            Some(left) => format!(
                "That code was not accepted ({left} attempt{} left). {ask}",
                if left == 1 { "" } else { "s" }
            ),
            None => format!("That code was not accepted. {ask}"),
        }
    }
}

/// A failed transfer's `failure.code` → our response code and message. The
/// upstream's own message is not relayed (see [`fault_code`]).
pub fn decline(failure: Option<&Failure>) -> Outcome {
    match failure.map(|failure| failure.code.as_str()) {
        Some("insufficient_funds") => {
            Outcome::failed(codes::INSUFFICIENT_FUNDS, "Insufficient funds")
        }
        Some("invalid_account") => Outcome::failed(
            codes::INVALID_TRANSACTION,
            "The bank refused the account details",
        ),
        Some("sca_failed") => Outcome::failed(
            codes::OTP_ATTEMPTS_EXHAUSTED,
            "The bank's code was entered wrongly too many times; the transfer was cancelled",
        ),
        Some("sca_expired") => Outcome::failed(
            codes::OTP_EXPIRED,
            "The bank's code expired; the transfer was cancelled",
        ),
        _ => Outcome::failed(codes::DECLINED, "The bank declined the transfer"),
    }
}

/// The `Failed` outcome for a transfer request the upstream refused outright
/// (`400`/`422`): it said nothing was done and nothing will be.
pub fn refused(fault_code: Option<&str>) -> Outcome {
    let message = match fault_code {
        Some(code) => format!("The bank refused the transfer request ({code})"),
        None => "The bank refused the transfer request".to_owned(),
    };
    Outcome::failed(codes::INVALID_TRANSACTION, message)
}

#[cfg(test)]
mod tests {
    use manifold_crypto::{BankAccount, Msisdn};
    use manifold_provider::{Status, TransactionDetails};

    use super::*;

    fn transfer(status: &str, extra: Value) -> Transfer {
        let mut body = json!({
            "id": "trf_1",
            "status": status,
            "amount": {"value": 150000, "currency": "NGN"},
        });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(body).unwrap()
    }

    /// What a step means to the switch: its status and response code.
    fn seen(step: &Step) -> (Status, String) {
        match step {
            Step::Done(outcome) => (outcome.status(), outcome.code.clone()),
            Step::UpstreamOtp { .. } | Step::ConfirmWithOtp { .. } => {
                (Status::WaitingForOtp, String::new())
            }
            Step::AskCustomer { .. } => (Status::PendingValidation, String::new()),
            Step::Processing { .. } => (Status::Pending, String::new()),
        }
    }

    #[test]
    fn every_upstream_status_maps_to_one_of_ours() {
        fn check(status: &str, extra: Value, expected: (Status, &str)) {
            let step = transfer(status, extra).into_step(false).unwrap();
            let (status_seen, code) = seen(&step);
            assert_eq!((status_seen, code.as_str()), expected, "upstream {status}");
        }
        let sca = json!({"sca": {"authentication_id": "auth_1", "sent_to": "+234*****008"}});
        check("completed", json!({}), (Status::Successful, "00"));
        check(
            "failed",
            json!({"failure": {"code": "insufficient_funds"}}),
            (Status::Failed, "51"),
        );
        check(
            "failed",
            json!({"failure": {"code": "sca_failed"}}),
            (Status::Failed, "900T2"),
        );
        check(
            "failed",
            json!({"failure": {"code": "sca_expired"}}),
            (Status::Failed, "900T3"),
        );
        check(
            "failed",
            json!({"failure": {"code": "invalid_account"}}),
            (Status::Failed, "12"),
        );
        check(
            "failed",
            json!({"failure": {"code": "new_reason"}}),
            (Status::Failed, "05"),
        );
        check("failed", json!({}), (Status::Failed, "05"));
        check("requires_sca", sca, (Status::WaitingForOtp, ""));
        check("requires_sca", json!({}), (Status::Pending, ""));
        check("processing", json!({}), (Status::Pending, ""));
        // Never a guess: statuses this connector does not know stay pending.
        for unknown in ["on_hold", "COMPLETED", "", "succeeded"] {
            check(unknown, json!({}), (Status::Pending, ""));
        }
    }

    #[test]
    fn completed_transfers_are_reversible_by_their_upstream_id() {
        let Step::Done(outcome) = transfer("completed", json!({})).into_step(false).unwrap() else {
            panic!("completed must be final");
        };
        assert_eq!(
            outcome.response,
            Some(json!({"reference": "trf_1", "amount": 150000, "currency": "NGN"}))
        );
        assert_eq!(outcome.reversal, Some(json!({"transfer_id": "trf_1"})));
    }

    #[test]
    fn sca_prompts_and_what_is_kept_for_the_confirmation() {
        let sca = json!({"sca": {"authentication_id": "auth_1", "sent_to": "+234*****008", "attempts_remaining": 1}});
        let Step::UpstreamOtp { prompt, deferred } = transfer("requires_sca", sca.clone())
            .into_step(false)
            .unwrap()
        else {
            panic!("requires_sca must wait for the code");
        };
        assert_eq!(
            prompt,
            "Enter the code your bank sent to +234*****008 to confirm the transfer"
        );
        assert_eq!(
            Deferred::read(deferred).unwrap(),
            Some(Deferred {
                transfer_id: "trf_1".into(),
                authentication_id: Some("auth_1".into()),
            })
        );
        let Step::UpstreamOtp { prompt, .. } =
            transfer("requires_sca", sca).into_step(true).unwrap()
        else {
            panic!("a rejected code keeps the transfer waiting");
        };
        assert!(
            prompt.starts_with("That code was not accepted (1 attempt left)."),
            "{prompt}"
        );
        assert_eq!(Deferred::read(Value::Null).unwrap(), None);
        assert!(Deferred::read(json!({"nope": 1})).is_err());
    }

    #[test]
    fn reversal_statuses() {
        fn reversal(status: &str, failure: Option<&str>) -> Result<Outcome, ConnectorError> {
            serde_json::from_value::<Reversal>(json!({
                "id": "rev_1", "status": status,
                "failure": failure.map(|code| json!({"code": code})),
            }))
            .unwrap()
            .into_outcome()
        }
        let done = reversal("completed", None).unwrap();
        assert!(done.is_successful());
        assert_eq!(done.response, Some(json!({"reversal_reference": "rev_1"})));
        let refused = reversal("failed", Some("insufficient_funds")).unwrap();
        assert_eq!(
            (refused.is_successful(), refused.code.as_str()),
            (false, "R1")
        );
        assert!(matches!(
            reversal("processing", None),
            Err(ConnectorError::Indeterminate(_))
        ));
        assert!(matches!(
            reversal("whatever", None),
            Err(ConnectorError::Indeterminate(_))
        ));
    }

    fn request(source: SourceDetails, amount: u64, details: Value) -> TransactRequest {
        TransactRequest {
            app_id: "demo-app".into(),
            request_ref: "r-1".into(),
            request_type: TRANSFER.into(),
            transaction_ref: "txn-1".into(),
            otp_override: false,
            read_only: false,
            source,
            transaction: TransactionDetails {
                transaction_desc: Some("Rent".into()),
                amount,
                details: Some(details),
                ..TransactionDetails::default()
            },
        }
    }

    fn bank_account() -> SourceDetails {
        SourceDetails::BankAccount(BankAccount {
            account_number: SecretString::from("0123456789"),
            bank_code: "058".into(),
        })
    }

    #[test]
    fn the_upstream_request_carries_our_key_and_the_destination() {
        let request = request(
            bank_account(),
            150000,
            json!({"destination_account": "9876543210", "destination_bank_code": "044"}),
        );
        let body = CreateTransfer::from_request(&request, "NGN").unwrap();
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({
                "client_transfer_id": "demo-app:txn-1",
                "amount": {"value": 150000, "currency": "NGN"},
                "debtor": {"account_number": "0123456789", "bank_code": "058"},
                "creditor": {"account_number": "9876543210", "bank_code": "044"},
                "description": "Rent",
            })
        );
        // The source account number is serialized for the bank, never printed.
        assert!(!format!("{body:?}").contains("0123456789"));
    }

    #[test]
    fn requests_that_cannot_be_transfers_fail_without_the_upstream() {
        fn check(source: SourceDetails, amount: u64, details: Value, needle: &str) {
            let request = request(source, amount, details);
            let outcome = CreateTransfer::from_request(&request, "NGN").unwrap_err();
            assert_eq!(outcome.code, codes::INVALID_TRANSACTION);
            assert!(outcome.message.contains(needle), "{}", outcome.message);
        }
        let good = json!({"destination_account": "9876543210", "destination_bank_code": "044"});
        let msisdn = SourceDetails::Msisdn(Msisdn {
            msisdn: SecretString::from("2348022000008"),
        });
        check(msisdn, 100, good.clone(), "bank.account");
        check(bank_account(), 0, good, "amount");
        check(
            bank_account(),
            100,
            json!({"destination_account": "98765", "destination_bank_code": "044"}),
            "destination_account",
        );
        check(
            bank_account(),
            100,
            json!({"destination_account": "9876543210"}),
            "destination_bank_code",
        );
    }

    #[test]
    fn fault_codes_are_read_without_the_message() {
        assert_eq!(
            fault_code(
                br#"{"error":{"code":"invalid_account","message":"account 0123456789 is closed"}}"#
            ),
            Some("invalid_account".into())
        );
        assert_eq!(fault_code(b"<html>502</html>"), None);
        assert_eq!(
            fault_code(br#"{"error":{"code":"has spaces 0123456789"}}"#),
            None
        );
        assert_eq!(
            refused(Some("invalid_account")).message,
            "The bank refused the transfer request (invalid_account)"
        );
    }
}
