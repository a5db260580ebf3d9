//! The demo bank as a [`Connector`]: what it answers, in SDK steps.
//!
//! Its "upstream" is the [`Ledger`], in a database of its own. Everything
//! around it — idempotency, OTPs, pending state, expiry — is the SDK's.
//!
//! Every `provider_response` it gives carries [`MARKER_FIELD`] with
//! [`ANSWER_MARKER`], so that a test can look for the bank's answers in the
//! raw bytes of whatever stores them.

use async_trait::async_trait;
use manifold_crypto::SecretString;
use manifold_crypto::SourceDetails;
use manifold_provider::TransactRequest;
use manifold_provider_sdk::state::transaction_key;
use manifold_provider_sdk::{
    Confirmation, Connector, ConnectorError, OtpRecipient, Outcome, Step, TransactionContext,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use crate::customers::Customers;
use crate::ledger::{Account, Ledger, LedgerError, Posting};

/// Response codes the demo bank answers with, beside the SDK's own
/// ([`manifold_provider_sdk::codes`]).
pub mod codes {
    pub use manifold_provider_sdk::codes::*;
    pub const INSUFFICIENT_FUNDS: &str = "51";
}

pub const GET_BALANCE: &str = "get_balance";
pub const TRANSFER: &str = "transfer_funds";

/// A distinctive string in every `provider_response` of the demo bank, under
/// [`MARKER_FIELD`]: a check that the switch's store and the SDK's state
/// hold no answer in clear looks for it in their raw bytes.
pub const ANSWER_MARKER: &str = "manifold-demo-bank-answer-7f3c";
/// The field of a `provider_response` that holds [`ANSWER_MARKER`].
pub const MARKER_FIELD: &str = "bank_marker";

/// What the bank keeps between steps (seed 003: the upstream's answer).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
enum Deferred {
    /// A balance snapshot, answered once the customer confirms.
    Balance { response: Value },
    /// A checked transfer, posted once the customer confirms.
    Transfer { posting: Posting },
    /// A large transfer waiting for the customer to type the destination
    /// account number in full. (Its OTP's holder is looked up from the
    /// posting's source when it is due, so no contact is kept here.)
    ConfirmBeneficiary { posting: Posting, account: String },
}

pub struct DemoBank {
    ledger: Ledger,
    step_up_amount: u64,
    customers: Customers,
}

impl DemoBank {
    pub fn new(ledger: Ledger, step_up_amount: u64, customers: Customers) -> Self {
        DemoBank {
            ledger,
            step_up_amount,
            customers,
        }
    }

    /// Where the code for a transaction on the ledger account `source`
    /// (`bank:<code>:<number>` or `wallet:<id>`) goes: its holder's phone or
    /// e-mail on record, whatever the request's `customer` says.
    fn recipient(&self, source: &str) -> OtpRecipient {
        let account = source.rsplit(':').next().unwrap_or(source);
        OtpRecipient::AccountHolder(self.customers.contact_of(account))
    }

    /// The balance of a bank account, if it has been opened.
    pub fn bank_balance(
        &self,
        bank_code: &str,
        account_number: &str,
    ) -> Result<Option<u64>, LedgerError> {
        self.ledger
            .balance(&format!("bank:{bank_code}:{account_number}"))
    }

    fn balance_response(account: &Account, transaction_ref: &str) -> Value {
        json!({
            "account_id": account.id.to_string(),
            "account_type": account.kind,
            "account_number": account.number_masked,
            // Spelled as in seed 003's sample response, which apps already parse.
            "avialable_balance": account.balance,
            "ledger_balance": account.balance,
            "minimum_balance": 0,
            "account_class": "DEMO",
            "account_status": "ACCOUNT OPEN",
            "currency": "NGN",
            "reference": format!("DEMO-{transaction_ref}"),
            "meta": {},
            MARKER_FIELD: ANSWER_MARKER,
        })
    }

    /// Posts a confirmed transfer. The ledger has it on disk before this
    /// answers, and the SDK records the outcome only after that, so no
    /// outcome reported `Successful` can outlive its posting in a crash (one
    /// cut short between the two is polled, and posting again under the same
    /// key finds it done).
    async fn post_transfer(
        &self,
        transaction: TransactionContext<'_>,
        posting: Posting,
    ) -> Result<Step, ConnectorError> {
        let key = transaction_key(transaction.app_id, transaction.transaction_ref);
        // Funds are checked again: time has passed since the transfer was accepted.
        match self.ledger.post(&posting, &key).await {
            Ok(()) => {
                let response = json!({
                    "amount": posting.amount,
                    "currency": "NGN",
                    "reference": format!("DEMO-{}", transaction.transaction_ref),
                    "destination_account": posting.destination_masked,
                    MARKER_FIELD: ANSWER_MARKER,
                });
                let reversal = serde_json::to_value(&posting).map_err(internal)?;
                Ok(Step::Done(
                    Outcome::successful(codes::APPROVED, "Transfer completed")
                        .with_response(response)
                        .reversible_with(reversal),
                ))
            }
            Err(LedgerError::InsufficientFunds) => Ok(Step::Done(Outcome::failed(
                codes::INSUFFICIENT_FUNDS,
                "Insufficient funds",
            ))),
            Err(error) => Err(posting_unknown(error)),
        }
    }
}

fn internal(error: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Internal(error.to_string())
}

/// A posting whose ledger failed may or may not have been applied (it may
/// be written and not yet on disk): the SDK keeps the transaction `Pending`
/// and polls it, and posting again under the same key settles it.
fn posting_unknown(error: LedgerError) -> ConnectorError {
    match error {
        LedgerError::Corrupt(_) => internal(error),
        _ => ConnectorError::Indeterminate(error.to_string()),
    }
}

fn deferred(value: Deferred) -> Result<Value, ConnectorError> {
    value.into_stored().map_err(internal)
}

/// The stage a balance snapshot is kept under, as serde names it.
const BALANCE_STAGE: &str = "balance";

impl Deferred {
    /// As the SDK keeps it: what serde writes, but a balance snapshot is moved
    /// into place rather than copied, since it is every `get_balance`'s.
    fn into_stored(self) -> Result<Value, serde_json::Error> {
        match self {
            Deferred::Balance { response } => {
                let mut stored = serde_json::Map::with_capacity(2);
                stored.insert("stage".into(), Value::String(BALANCE_STAGE.into()));
                stored.insert("response".into(), response);
                Ok(Value::Object(stored))
            }
            other => serde_json::to_value(other),
        }
    }

    /// Reads back what [`Deferred::into_stored`] kept. serde reads an
    /// internally tagged enum by copying the whole value into a buffer first,
    /// so a balance snapshot (every `get_balance` passes here) is taken out
    /// whole instead; anything else goes through serde.
    fn from_stored(stored: Value) -> Result<Self, serde_json::Error> {
        match stored {
            Value::Object(mut fields)
                if fields.len() == 2
                    && fields.get("stage").and_then(Value::as_str) == Some(BALANCE_STAGE)
                    && fields.contains_key("response") =>
            {
                let response = fields.remove("response").unwrap_or_default();
                Ok(Deferred::Balance { response })
            }
            other => serde_json::from_value(other),
        }
    }
}

fn confirm_prompt(account: &str, retry: bool) -> String {
    let lead = if retry {
        "That is not the destination account."
    } else {
        "This is a large transfer."
    };
    format!(
        "{lead} To confirm it, enter the destination account number (ending {}) in full",
        &account[account.len().saturating_sub(4)..]
    )
}

#[async_trait]
impl Connector for DemoBank {
    fn serves(&self, request_type: &str) -> bool {
        matches!(request_type, GET_BALANCE | TRANSFER)
    }

    // `start` moves no money (postings happen in `complete`, keyed by
    // transaction in the ledger), so starting a transaction twice can never
    // move money twice.
    fn upstream_is_idempotent(&self) -> bool {
        true
    }

    fn is_read_only(&self, request_type: &str) -> bool {
        request_type == GET_BALANCE
    }

    async fn start(&self, request: &TransactRequest) -> Result<Step, ConnectorError> {
        let number = match &request.source {
            SourceDetails::BankAccount(account) => format!(
                "bank:{}:{}",
                account.bank_code,
                account.account_number.expose()
            ),
            SourceDetails::Wallet(wallet) => format!("wallet:{}", wallet.wallet_id.expose()),
            _ => {
                return Ok(Step::Done(Outcome::failed(
                    codes::INVALID_TRANSACTION,
                    "The demo bank accepts bank.account and wallet sources only",
                )))
            }
        };
        // Nothing has moved yet: a ledger that cannot open the account did
        // nothing, and the call may be made again.
        let account = self
            .ledger
            .open_account(&number, &request.source.masked())
            .map_err(|error| match error {
                LedgerError::Corrupt(_) => internal(error),
                _ => ConnectorError::Unavailable(error.to_string()),
            })?;
        match request.request_type.as_str() {
            GET_BALANCE => Ok(Step::ConfirmWithOtp {
                deferred: deferred(Deferred::Balance {
                    response: Self::balance_response(&account, &request.transaction_ref),
                })?,
                recipient: self.recipient(&number),
            }),
            _ => {
                let (posting, destination_account) = match transfer_posting(request, &account) {
                    Ok(found) => found,
                    Err(problem) => {
                        return Ok(Step::Done(Outcome::failed(
                            codes::INVALID_TRANSACTION,
                            problem,
                        )))
                    }
                };
                if account.balance < posting.amount {
                    return Ok(Step::Done(Outcome::failed(
                        codes::INSUFFICIENT_FUNDS,
                        "Insufficient funds",
                    )));
                }
                if posting.amount >= self.step_up_amount {
                    let prompt = confirm_prompt(&destination_account, false);
                    return Ok(Step::AskCustomer {
                        prompt,
                        deferred: deferred(Deferred::ConfirmBeneficiary {
                            posting,
                            account: destination_account,
                        })?,
                    });
                }
                Ok(Step::ConfirmWithOtp {
                    recipient: self.recipient(&posting.source),
                    deferred: deferred(Deferred::Transfer { posting })?,
                })
            }
        }
    }

    async fn complete(
        &self,
        transaction: TransactionContext<'_>,
        stored: Value,
        confirmation: Confirmation,
    ) -> Result<Step, ConnectorError> {
        let stored = Deferred::from_stored(stored).map_err(internal)?;
        match (stored, confirmation) {
            (Deferred::Balance { response }, Confirmation::OtpVerified) => Ok(Step::Done(
                Outcome::successful(codes::APPROVED, "Transaction processed successfully")
                    .with_response(response),
            )),
            (Deferred::Transfer { posting }, Confirmation::OtpVerified) => {
                self.post_transfer(transaction, posting).await
            }
            (Deferred::ConfirmBeneficiary { posting, account }, Confirmation::Answer(answer)) => {
                if typed_account_matches(&answer, &account) {
                    Ok(Step::ConfirmWithOtp {
                        recipient: self.recipient(&posting.source),
                        deferred: deferred(Deferred::Transfer { posting })?,
                    })
                } else {
                    Ok(Step::AskCustomer {
                        prompt: confirm_prompt(&account, true),
                        deferred: deferred(Deferred::ConfirmBeneficiary { posting, account })?,
                    })
                }
            }
            (_, _) => Err(ConnectorError::Internal(
                "the confirmation does not fit the stored stage".into(),
            )),
        }
    }

    /// Only a completion cut short by a crash reaches here: finish it as
    /// `complete` would. Posting is keyed by transaction, so a transfer that
    /// was in fact posted is not posted again.
    async fn poll(
        &self,
        transaction: TransactionContext<'_>,
        stored: Value,
    ) -> Result<Step, ConnectorError> {
        match Deferred::from_stored(stored.clone()) {
            Ok(Deferred::Transfer { posting }) => self.post_transfer(transaction, posting).await,
            Ok(Deferred::Balance { response }) => Ok(Step::Done(
                Outcome::successful(codes::APPROVED, "Transaction processed successfully")
                    .with_response(response),
            )),
            // The customer's answer was not kept: ask again.
            Ok(Deferred::ConfirmBeneficiary { posting, account }) => Ok(Step::AskCustomer {
                prompt: confirm_prompt(&account, false),
                deferred: deferred(Deferred::ConfirmBeneficiary { posting, account })?,
            }),
            Err(_) => Ok(Step::Processing { deferred: stored }),
        }
    }

    async fn reverse(
        &self,
        transaction: TransactionContext<'_>,
        reversal: Value,
    ) -> Result<Outcome, ConnectorError> {
        let posting: Posting = serde_json::from_value(reversal).map_err(internal)?;
        let mut key = transaction_key(transaction.app_id, transaction.transaction_ref);
        key.extend_from_slice(b"\x1freversal");
        // On disk before the SDK records the reversal, as for a transfer.
        match self.ledger.post(&posting.reversed(), &key).await {
            Ok(()) => Ok(Outcome::successful(codes::APPROVED, "Transaction reversed")
                .with_response(json!({
                    "reversal_reference": format!("DEMO-REV-{}", transaction.transaction_ref),
                    MARKER_FIELD: ANSWER_MARKER,
                }))),
            Err(LedgerError::InsufficientFunds) => Ok(Outcome::failed(
                codes::NOT_REVERSIBLE,
                "The destination account no longer holds the funds",
            )),
            Err(error) => Err(posting_unknown(error)),
        }
    }
}

/// Compares what the customer typed with the destination, ignoring spaces.
fn typed_account_matches(answer: &SecretString, account: &str) -> bool {
    let typed: String = answer
        .expose()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    bool::from(typed.as_bytes().ct_eq(account.as_bytes()))
}

/// Reads the destination from `transaction.details` and checks the amount;
/// returns the posting and the destination account number.
fn transfer_posting(
    request: &TransactRequest,
    source: &Account,
) -> Result<(Posting, String), String> {
    let amount = request.transaction.amount;
    if amount == 0 {
        return Err("transaction.amount must be greater than 0 for a transfer".into());
    }
    let details = request.transaction.details.as_ref();
    let field = |name: &str| details.and_then(|d| d.get(name)).and_then(Value::as_str);
    let account = field("destination_account")
        .filter(|a| a.len() == 10 && a.bytes().all(|b| b.is_ascii_digit()))
        .ok_or("transaction.details.destination_account must be a 10-digit account number")?;
    let bank = field("destination_bank_code")
        .filter(|b| (3..=6).contains(&b.len()) && b.bytes().all(|c| c.is_ascii_digit()))
        .ok_or("transaction.details.destination_bank_code must be 3 to 6 digits")?;
    let destination = format!("bank:{bank}:{account}");
    if destination == source.number {
        return Err("the destination is the source account".into());
    }
    Ok((
        Posting {
            source: source.number.clone(),
            source_masked: source.number_masked.clone(),
            destination,
            destination_masked: format!("******{}", &account[6..]),
            amount,
        },
        account.to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_stage() -> Vec<Deferred> {
        let posting = Posting {
            source: "bank:058:0123456789".into(),
            source_masked: "012****789".into(),
            destination: "bank:044:9876543210".into(),
            destination_masked: "987****210".into(),
            amount: 150_000,
        };
        vec![
            Deferred::Balance {
                response: json!({"avialable_balance": 1000, "meta": {"nested": [1, "two"]}}),
            },
            Deferred::Transfer {
                posting: posting.clone(),
            },
            Deferred::ConfirmBeneficiary {
                posting,
                account: "9876543210".into(),
            },
        ]
    }

    /// The fast paths keep serde's format exactly: a pending entry written
    /// by either reads back through the other.
    #[test]
    fn stages_are_stored_as_serde_writes_them_and_read_back_whole() {
        for stage in every_stage() {
            let by_serde = serde_json::to_value(&stage).unwrap();
            let stored = stage.clone().into_stored().unwrap();
            assert_eq!(stored, by_serde);
            let read = Deferred::from_stored(by_serde.clone()).unwrap();
            assert_eq!(serde_json::to_value(&read).unwrap(), by_serde);
        }
    }

    /// Only a balance snapshot exactly as kept takes the fast path; anything
    /// else is serde's to accept or refuse.
    #[test]
    fn a_stored_stage_that_is_not_a_plain_balance_goes_through_serde() {
        let extra = json!({"stage": "balance", "response": {}, "unexpected": 1});
        assert!(matches!(
            Deferred::from_stored(extra),
            Ok(Deferred::Balance { .. })
        ));
        let missing = json!({"stage": "balance", "other": 1});
        assert!(Deferred::from_stored(missing).is_err());
        let unknown = json!({"stage": "teleport", "response": {}});
        assert!(Deferred::from_stored(unknown).is_err());
        assert!(Deferred::from_stored(json!("balance")).is_err());
    }
}
