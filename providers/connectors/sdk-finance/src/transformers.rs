//! SDK.finance's wire format, and the one mapping from its statuses to ours.
//!
//! # The upstream (seed 001)
//!
//! | call | body | answer |
//! |---|---|---|
//! | `POST /authorization` | [`TokenRequest`] (the service user) | [`TokenResponse`]; `401` wrong credentials |
//! | `POST /coins/validate` | [`CoinRef`] | `200` the coin exists; `404` it does not |
//! | `POST /bank-top-ups/calculate`, `POST /bank-withdrawals/calculate` | [`Calculate`] | [`Commission`] |
//! | `POST /bank-top-ups/create-request/with-bank`, `POST /bank-withdrawals/with-bank` | [`CreateRequest`] | a [`RequestView`], `PROCESSING` |
//! | `GET /bank-top-ups/{requestIdentifier}` (and withdrawals) | — | a [`RequestView`]: `PROCESSING`, `ACCEPTED` or `DECLINED` |
//! | `GET /bank-top-ups?externalId=…` (and withdrawals) | — | [`Records`] |
//! | `POST /templates/transfer/{id}/calculate`, `…/execute` | [`Calculate`] | [`Commission`]; [`TransferDone`] |
//!
//! Every call but the token's carries `Authorization: Bearer <token>`.
//! Errors are `{"code": "…", "message": "…"}`. The look-ups of a request are
//! not in the seed (it says only that requests are accepted or declined):
//! they are assumptions, listed in `manifold_upstreams::sdk_finance`.
//!
//! # What an app is told
//! - a top-up (`collect`) or withdrawal (`disburse`) the platform created is
//!   `Pending` until its operator decides: accepted → `Successful`, declined
//!   → `Failed`, learnt by asking on `/transact/query`;
//! - a transfer from a template completes in its call: `Successful`;
//! - refusals (`400`, `403`, `404`, `409`, `422`) are `Failed` with the
//!   platform's code; every `provider_response` carries the commission.

use manifold_crypto::SecretString;
use manifold_provider_sdk::{Outcome, PendingNote, Step};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The response codes this provider answers with: the SDK's and these.
pub mod codes {
    pub use manifold_provider_sdk::codes::*;
    /// ISO 8583 `09`, "request in progress": waiting for the operator.
    pub const AWAITING_OPERATOR: &str = "09";
    /// ISO 8583 `05`, "do not honour": the operator declined.
    pub const DECLINED: &str = "05";
    /// ISO 8583 `68`, "response received too late": a request was sent and
    /// its answer lost.
    pub const OUTCOME_UNKNOWN: &str = "68";
}

pub const COLLECT: &str = "collect";
pub const DISBURSE: &str = "disburse";
pub const TRANSFER_FUNDS: &str = "transfer_funds";

/// A top-up or a withdrawal: which family of endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    TopUp,
    Withdrawal,
}

impl Kind {
    pub fn of(request_type: &str) -> Option<Kind> {
        match request_type {
            COLLECT => Some(Kind::TopUp),
            DISBURSE => Some(Kind::Withdrawal),
            _ => None,
        }
    }

    /// The first path segment of its endpoints.
    pub fn path(self) -> &'static str {
        match self {
            Kind::TopUp => "bank-top-ups",
            Kind::Withdrawal => "bank-withdrawals",
        }
    }

    /// The path of its creating call.
    pub fn create_path(self) -> &'static [&'static str] {
        match self {
            Kind::TopUp => &["bank-top-ups", "create-request", "with-bank"],
            Kind::Withdrawal => &["bank-withdrawals", "with-bank"],
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::TopUp => "top-up",
            Kind::Withdrawal => "withdrawal",
        }
    }
}

/// Our reference for one transaction at the platform (`externalId`),
/// unique per `(app_id, transaction_ref)`: `app_id` holds no `:`.
pub fn external_id(app_id: &str, transaction_ref: &str) -> String {
    format!("{app_id}:{transaction_ref}")
}

#[derive(Serialize)]
pub struct TokenRequest<'a> {
    pub login: &'a str,
    pub password: &'a str,
}

#[derive(Deserialize)]
pub struct TokenResponse {
    #[serde(rename = "authorizationToken")]
    pub authorization_token: TokenValue,
}

#[derive(Deserialize)]
pub struct TokenValue {
    pub token: SecretString,
}

#[derive(Serialize)]
pub struct CoinRef<'a> {
    #[serde(rename = "coinSerial")]
    pub coin_serial: &'a str,
}

#[derive(Serialize)]
pub struct Calculate<'a> {
    #[serde(rename = "coinSerial")]
    pub coin_serial: &'a str,
    pub amount: &'a str,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Commission {
    pub commission: String,
    pub total: String,
}

#[derive(Serialize)]
pub struct CreateRequest<'a> {
    #[serde(rename = "coinSerial")]
    pub coin_serial: &'a str,
    pub amount: &'a str,
    #[serde(rename = "bankId")]
    pub bank_id: &'a str,
    #[serde(rename = "externalId")]
    pub external_id: &'a str,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestView {
    #[serde(rename = "requestIdentifier")]
    pub request_identifier: String,
    pub status: String,
    #[serde(default)]
    pub amount: Option<String>,
    #[serde(default)]
    pub commission: Option<String>,
    /// Our reference, as the platform lists it (absent in older answers).
    #[serde(
        rename = "externalId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub external_id: Option<String>,
}

#[derive(Deserialize)]
pub struct Records {
    pub records: Vec<RequestView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferDone {
    #[serde(rename = "businessProcessId")]
    pub business_process_id: String,
    pub status: String,
    #[serde(default)]
    pub commission: Option<String>,
}

/// The platform's error code of a refusal (`{"code": …}`), if its body
/// names a plain one.
pub fn fault_code(body: &[u8]) -> Option<String> {
    manifold_provider_sdk::upstream::error_code_in(body, "code")
}

pub use manifold_provider_sdk::upstream::major_units;

/// What the SDK keeps while the operator decides.
pub fn awaiting(kind: Kind, view: &RequestView) -> Value {
    json!({ "kind": kind, "request": view })
}

/// The kind and request a stored `deferred` names, if it names one.
pub fn awaited(deferred: &Value) -> Option<(Kind, RequestView)> {
    let kind = serde_json::from_value(deferred.get("kind")?.clone()).ok()?;
    let view = serde_json::from_value(deferred.get("request")?.clone()).ok()?;
    Some((kind, view))
}

/// The one mapping: a request's status at the platform → our step. A
/// status this connector does not know keeps it `Pending`.
pub fn request_step(kind: Kind, view: RequestView) -> Step {
    let response = serde_json::to_value(&view).unwrap_or(Value::Null);
    match view.status.as_str() {
        "ACCEPTED" => Step::Done(
            Outcome::successful(
                codes::APPROVED,
                format!("The platform accepted the {}", kind.noun()),
            )
            .with_response(response),
        ),
        "DECLINED" => Step::Done(
            Outcome::failed(
                codes::DECLINED,
                format!("The platform's operator declined the {}", kind.noun()),
            )
            .with_response(response),
        ),
        _ => Step::Processing {
            deferred: awaiting(kind, &view),
        },
    }
}

/// The `Pending` answer while a request waits for the operator.
pub fn pending_note(request_type: &str, reference: &str, deferred: &Value) -> PendingNote {
    if let Some(transfer) = deferred.get("transfer") {
        let status = transfer
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        return PendingNote::new(
            "",
            format!(
                "The platform answered the transfer with status {status}; it offers no look-up of transfers, so this transaction stays Pending: the platform's operator confirms its outcome"
            ),
        )
        .with_response(transfer.clone());
    }
    if deferred.is_null() {
        let message = match Kind::of(request_type) {
            Some(kind) => format!(
                "The {} request was sent to the platform and its answer was lost. Each query looks for it by its reference (externalId {reference}); it is never created twice, and stays Pending until it is found",
                kind.noun()
            ),
            None => "The transfer was sent to the platform and its answer was lost. The platform offers no look-up of transfers, so it is never sent again: an operator must ask the platform whether it was executed".to_owned(),
        };
        return PendingNote::new(codes::OUTCOME_UNKNOWN, message);
    }
    match awaited(deferred) {
        Some((kind, view)) => PendingNote::new(
            codes::AWAITING_OPERATOR,
            format!(
                "The platform created {} request {}; its operator has not accepted or declined it yet",
                kind.noun(),
                view.request_identifier
            ),
        )
        .with_response(serde_json::to_value(&view).unwrap_or(Value::Null)),
        None => PendingNote::default(),
    }
}

/// A transfer the platform answered.
pub fn transfer_step(done: TransferDone) -> Step {
    let response = serde_json::to_value(&done).unwrap_or(Value::Null);
    if done.status == "COMPLETED" {
        Step::Done(
            Outcome::successful(codes::APPROVED, "The transfer was completed")
                .with_response(response),
        )
    } else {
        // No look-up of a transfer exists: it stays Pending as answered.
        Step::Processing {
            deferred: json!({ "transfer": response }),
        }
    }
}

/// A refusal, with the platform's code.
pub fn refused(what: &str, code: Option<&str>) -> Outcome {
    let code = code.unwrap_or("REFUSED");
    let why = match code {
        "INSUFFICIENT_FUNDS" => "the wallet does not hold the amount and commission",
        "COIN_NOT_FOUND" => "there is no such wallet",
        "NOT_TEMPLATE_OWNER" => "the transfer template does not belong to this wallet",
        "TEMPLATE_NOT_FOUND" => "there is no such transfer template",
        "INVALID_AMOUNT" => "the amount is not one it takes",
        _ => "it refused the request",
    };
    Outcome::failed(code, format!("The platform refused the {what}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(status: &str) -> RequestView {
        RequestView {
            request_identifier: "req-000007".into(),
            status: status.into(),
            amount: Some("12.00".into()),
            commission: Some("0.12".into()),
            external_id: None,
        }
    }

    #[test]
    fn statuses_map_to_steps_and_unknown_ones_stay_pending() {
        match request_step(Kind::TopUp, view("ACCEPTED")) {
            Step::Done(outcome) => {
                assert!(outcome.is_successful());
                assert_eq!(outcome.response.unwrap()["commission"], "0.12");
            }
            other => panic!("{other:?}"),
        }
        match request_step(Kind::Withdrawal, view("DECLINED")) {
            Step::Done(outcome) => assert_eq!(outcome.code, codes::DECLINED),
            other => panic!("{other:?}"),
        }
        for status in ["PROCESSING", "ON_HOLD", ""] {
            match request_step(Kind::TopUp, view(status)) {
                Step::Processing { deferred } => {
                    let (kind, kept) = awaited(&deferred).unwrap();
                    assert_eq!(
                        (kind, kept.request_identifier.as_str()),
                        (Kind::TopUp, "req-000007")
                    );
                    let note = pending_note(COLLECT, "app:t-1", &deferred);
                    assert_eq!(note.code, codes::AWAITING_OPERATOR);
                    assert!(note.message.contains("req-000007"));
                }
                other => panic!("{status}: {other:?}"),
            }
        }
    }

    #[test]
    fn codes_and_amounts() {
        assert_eq!(
            fault_code(br#"{"code":"INSUFFICIENT_FUNDS","message":"x"}"#).as_deref(),
            Some("INSUFFICIENT_FUNDS")
        );
        assert_eq!(fault_code(br#"{"code":"a b"}"#), None);
        assert_eq!(major_units(1234, 2), "12.34");
        assert_eq!(external_id("app", "t/1"), "app:t/1");
        assert_eq!(Kind::of("collect"), Some(Kind::TopUp));
        assert_eq!(Kind::of("transfer_funds"), None);
    }
}
