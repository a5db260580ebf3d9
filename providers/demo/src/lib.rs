//! The demo provider: a small bank that lets anyone try Manifold end to end.
//!
//! It serves `get_balance` (answered with seed 003's response shape) and
//! `transfer` (moves money between accounts and can be reversed), over a ledger
//! kept in sled. When the app's `otp_override` is false it follows seed 003's
//! "Special notes for OTP override": it does the upstream work first and
//! stores the answer, sends an OTP to the customer, answers `WaitingForOTP`,
//! and on a valid OTP answers from what it stored and erases it.
//!
//! It runs compiled into the switch (`mode = "in_process"`) or as its own
//! microservice (the `demo-provider` binary); both are the same [`DemoProvider`].
//!
//! # Layout
//! - [`ledger`]: accounts and the atomic posting of transfers and reversals.
//! - [`otp`]: one-time codes: generation, keyed hashing, attempts and expiry.
//! - this file: the [`Provider`] implementation tying them to the protocol.

pub mod ledger;
pub mod otp;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use manifold_crypto::plaintext::mask_msisdn;
use manifold_crypto::{SecretString, SourceDetails, ValidationInput};
use manifold_provider::notify::Channel;
use manifold_provider::{
    GroupCommit, Notification, Notifier, Provider, ProviderError, ProviderReply, QueryRequest,
    ReverseRequest, Status, TransactRequest, ValidateRequest,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use ledger::{Ledger, LedgerError, Posting};
use otp::{OtpCheck, OtpVault, PendingOtp};

/// Response codes the demo bank answers with (seed 003 uses `00` and `900T0`).
pub mod codes {
    pub const APPROVED: &str = "00";
    pub const OTP_SENT: &str = "900T0";
    pub const WRONG_OTP: &str = "900T1";
    pub const OTP_EXHAUSTED: &str = "900T2";
    pub const OTP_EXPIRED: &str = "900T3";
    pub const INSUFFICIENT_FUNDS: &str = "51";
    pub const INVALID_TRANSACTION: &str = "12";
    pub const NOT_REVERSIBLE: &str = "R1";
    pub const UNDELIVERABLE: &str = "91";
}

pub const GET_BALANCE: &str = "get_balance";
pub const TRANSFER: &str = "transfer";

#[derive(Debug, Clone)]
pub struct DemoSettings {
    /// The balance (minor units) a new account opens with.
    pub opening_balance: u64,
    pub otp_ttl: Duration,
    pub otp_attempts: u8,
}

impl Default for DemoSettings {
    fn default() -> Self {
        DemoSettings {
            opening_balance: 2_077_099,
            otp_ttl: Duration::from_secs(300),
            otp_attempts: 3,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the demo provider's store failed: {0}")]
    Store(#[from] sled::Error),
    #[error("a stored record could not be read: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Durability(#[from] manifold_provider::durable::DurabilityError),
}

impl From<DemoError> for ProviderError {
    fn from(error: DemoError) -> Self {
        ProviderError::Internal(error.to_string())
    }
}

/// What the bank finally answered for one transaction, kept so repeats and
/// queries get the same answer and reversals know what to undo.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Outcome {
    request_type: String,
    reply: ProviderReply,
    /// Present for a successful transfer: what to undo on reversal.
    posting: Option<Posting>,
    reversed_by: Option<String>,
}

/// The work stored while an OTP is outstanding, per seed 003: the upstream's
/// answer (a balance snapshot) or the checked, not yet posted, transfer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Deferred {
    Balance { response: Value },
    Transfer { posting: Posting },
}

pub struct DemoProvider {
    ledger: Ledger,
    otps: OtpVault,
    outcomes: sled::Tree,
    commit: GroupCommit,
    notifier: Arc<dyn Notifier>,
    settings: DemoSettings,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn transaction_key(app_id: &str, transaction_ref: &str) -> Vec<u8> {
    // The unit separator cannot appear in identifiers, so keys never collide.
    format!("{app_id}\u{1f}{transaction_ref}").into_bytes()
}

impl DemoProvider {
    /// Opens the demo bank's trees (all prefixed `demo/`) in `db`, which may be
    /// its own database or the switch's when it runs in-process.
    pub fn open(
        db: &sled::Db,
        commit: GroupCommit,
        notifier: Arc<dyn Notifier>,
        settings: DemoSettings,
    ) -> Result<Self, DemoError> {
        Ok(DemoProvider {
            ledger: Ledger::open(db, settings.opening_balance)?,
            otps: OtpVault::open(db)?,
            outcomes: db.open_tree("demo/outcomes")?,
            commit,
            notifier,
            settings,
        })
    }

    /// How many transactions wait for an OTP (seed 003: erased once final).
    pub fn pending_count(&self) -> usize {
        self.otps.len()
    }

    /// The balance of a bank account, if it has been opened.
    pub fn bank_balance(
        &self,
        bank_code: &str,
        account_number: &str,
    ) -> Result<Option<u64>, DemoError> {
        Ok(self
            .ledger
            .balance(&format!("bank:{bank_code}:{account_number}"))?)
    }

    fn outcome(&self, key: &[u8]) -> Result<Option<Outcome>, DemoError> {
        match self.outcomes.get(key)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| DemoError::Corrupt(e.to_string())),
            None => Ok(None),
        }
    }

    fn store_outcome(&self, key: &[u8], outcome: &Outcome) -> Result<(), DemoError> {
        let bytes = serde_json::to_vec(outcome).map_err(|e| DemoError::Corrupt(e.to_string()))?;
        self.outcomes.insert(key, bytes)?;
        Ok(())
    }

    /// Records a final answer durably and returns it.
    async fn finish(
        &self,
        key: &[u8],
        request_type: &str,
        reply: ProviderReply,
        posting: Option<Posting>,
    ) -> Result<ProviderReply, DemoError> {
        self.store_outcome(
            key,
            &Outcome {
                request_type: request_type.to_owned(),
                reply: reply.clone(),
                posting,
                reversed_by: None,
            },
        )?;
        self.otps.erase(key)?;
        self.commit.durable().await?;
        Ok(reply)
    }

    fn balance_response(&self, account: &ledger::Account, transaction_ref: &str) -> Value {
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
        })
    }

    /// Executes deferred work: a snapshot is answered as stored, a transfer is
    /// posted now (funds are checked again, since time has passed).
    async fn execute(
        &self,
        key: &[u8],
        request_type: &str,
        transaction_ref: &str,
        deferred: Deferred,
    ) -> Result<ProviderReply, DemoError> {
        match deferred {
            Deferred::Balance { response } => {
                let reply = ProviderReply::new(
                    Status::Successful,
                    codes::APPROVED,
                    "Transaction processed successfully",
                )
                .with_response(response);
                self.finish(key, request_type, reply, None).await
            }
            Deferred::Transfer { posting } => match self.ledger.post(&posting, key) {
                Ok(()) => {
                    let reply = ProviderReply::new(
                        Status::Successful,
                        codes::APPROVED,
                        "Transfer completed",
                    )
                    .with_response(json!({
                        "amount": posting.amount,
                        "currency": "NGN",
                        "reference": format!("DEMO-{transaction_ref}"),
                        "destination_account": posting.destination_masked,
                    }));
                    self.finish(key, request_type, reply, Some(posting)).await
                }
                Err(LedgerError::InsufficientFunds) => {
                    let reply = ProviderReply::new(
                        Status::Failed,
                        codes::INSUFFICIENT_FUNDS,
                        "Insufficient funds",
                    );
                    self.finish(key, request_type, reply, None).await
                }
                Err(error) => Err(error.into()),
            },
        }
    }

    async fn start(&self, request: &TransactRequest) -> Result<ProviderReply, DemoError> {
        let key = transaction_key(&request.app_id, &request.transaction_ref);
        let failed = |code: &str, message: &str| ProviderReply::new(Status::Failed, code, message);

        let account_number = match &request.source {
            SourceDetails::BankAccount(account) => {
                format!(
                    "bank:{}:{}",
                    account.bank_code,
                    account.account_number.expose()
                )
            }
            SourceDetails::Wallet(wallet) => format!("wallet:{}", wallet.wallet_id.expose()),
            _ => {
                let reply = failed(
                    codes::INVALID_TRANSACTION,
                    "The demo bank accepts bank.account and wallet sources only",
                );
                return self.finish(&key, &request.request_type, reply, None).await;
            }
        };
        let account = self
            .ledger
            .open_account(&account_number, &request.source.masked())?;

        let deferred = match request.request_type.as_str() {
            GET_BALANCE => Deferred::Balance {
                response: self.balance_response(&account, &request.transaction_ref),
            },
            TRANSFER => match transfer_posting(request, &account) {
                Ok(posting) => {
                    if account.balance < posting.amount {
                        let reply = failed(codes::INSUFFICIENT_FUNDS, "Insufficient funds");
                        return self.finish(&key, &request.request_type, reply, None).await;
                    }
                    Deferred::Transfer { posting }
                }
                Err(problem) => {
                    let reply = failed(codes::INVALID_TRANSACTION, &problem);
                    return self.finish(&key, &request.request_type, reply, None).await;
                }
            },
            other => {
                let reply = failed(
                    codes::INVALID_TRANSACTION,
                    &format!("The demo bank does not serve `{other}`"),
                );
                return self.finish(&key, &request.request_type, reply, None).await;
            }
        };

        if request.otp_override {
            return self
                .execute(
                    &key,
                    &request.request_type,
                    &request.transaction_ref,
                    deferred,
                )
                .await;
        }

        let customer = &request.transaction.customer;
        let (channel, to, shown) = match (&customer.mobile_no, &customer.email) {
            (Some(mobile), _) if !mobile.is_empty() => {
                (Channel::Sms, mobile.clone(), mask_msisdn(mobile))
            }
            (_, Some(email)) if !email.is_empty() => {
                (Channel::Email, email.clone(), mask_email(email))
            }
            _ => {
                let reply = failed(
                    codes::UNDELIVERABLE,
                    "An OTP is required but the customer has no mobile_no or email to send it to",
                );
                return self.finish(&key, &request.request_type, reply, None).await;
            }
        };
        let (code, pending) = self.otps.issue(
            &key,
            PendingOtp::new(
                request.request_type.clone(),
                shown.clone(),
                deferred,
                self.settings.otp_attempts,
                now_ms() + self.settings.otp_ttl.as_millis() as u64,
            ),
        )?;
        // The pending state is on disk before the customer can possibly hold the code.
        self.commit.durable().await?;
        let notification = Notification {
            channel,
            to,
            subject: Some("Your one-time code".into()),
            body: SecretString::new(format!(
                "Your Manifold demo bank code is {}. It expires in {} minutes.",
                code.expose(),
                self.settings.otp_ttl.as_secs().div_ceil(60)
            )),
        };
        if let Err(error) = self.notifier.send(&notification).await {
            tracing::warn!(%error, "OTP could not be delivered");
            let reply = failed(
                codes::UNDELIVERABLE,
                "The OTP could not be delivered; start a new transaction",
            );
            return self.finish(&key, &request.request_type, reply, None).await;
        }
        Ok(waiting_reply(&pending))
    }
}

fn waiting_reply(pending: &PendingOtp) -> ProviderReply {
    ProviderReply::new(
        Status::WaitingForOtp,
        codes::OTP_SENT,
        format!("Please enter the OTP sent to {}", pending.destination),
    )
}

fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first = local.chars().next().unwrap_or('*');
            format!("{first}***@{domain}")
        }
        None => "***".into(),
    }
}

/// Reads the destination from `transaction.details` and checks the amount.
fn transfer_posting(
    request: &TransactRequest,
    source: &ledger::Account,
) -> Result<Posting, String> {
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
    Ok(Posting {
        source: source.number.clone(),
        destination,
        destination_masked: format!("******{}", &account[6..]),
        amount,
    })
}

#[async_trait]
impl Provider for DemoProvider {
    async fn transact(&self, request: TransactRequest) -> Result<ProviderReply, ProviderError> {
        let key = transaction_key(&request.app_id, &request.transaction_ref);
        // Idempotent per transaction: a repeat never moves money or sends a second code.
        if let Some(outcome) = self.outcome(&key)? {
            return Ok(outcome.reply);
        }
        if let Some(pending) = self.otps.get(&key)? {
            return Ok(waiting_reply(&pending));
        }
        Ok(self.start(&request).await?)
    }

    async fn validate(&self, request: ValidateRequest) -> Result<ProviderReply, ProviderError> {
        let key = transaction_key(&request.app_id, &request.transaction_ref);
        if let Some(outcome) = self.outcome(&key)? {
            return Ok(outcome.reply);
        }
        let ValidationInput::Otp(code) = &request.input else {
            return match self.otps.get(&key)? {
                Some(pending) => Ok(ProviderReply::new(
                    Status::WaitingForOtp,
                    codes::WRONG_OTP,
                    format!(
                        "This transaction needs the OTP sent to {}",
                        pending.destination
                    ),
                )),
                None => Err(ProviderError::UnknownTransaction),
            };
        };
        let check = self.otps.check(&key, code, now_ms())?;
        let reply = match check {
            OtpCheck::Unknown => return Err(ProviderError::UnknownTransaction),
            OtpCheck::Valid(pending) => {
                self.execute(
                    &key,
                    &pending.request_type,
                    &request.transaction_ref,
                    pending.deferred,
                )
                .await?
            }
            OtpCheck::Wrong {
                attempts_left,
                pending,
            } => {
                self.commit.durable().await.map_err(DemoError::from)?;
                let plural = if attempts_left == 1 { "" } else { "s" };
                ProviderReply::new(
                    Status::WaitingForOtp,
                    codes::WRONG_OTP,
                    format!(
                        "Wrong OTP. {attempts_left} attempt{plural} left. Enter the OTP sent to {}",
                        pending.destination
                    ),
                )
            }
            OtpCheck::Exhausted(pending) => {
                let reply = ProviderReply::new(
                    Status::Failed,
                    codes::OTP_EXHAUSTED,
                    "Too many wrong OTPs; the transaction was cancelled",
                );
                self.finish(&key, &pending.request_type, reply, None)
                    .await?
            }
            OtpCheck::Expired(pending) => {
                let reply = ProviderReply::new(
                    Status::Failed,
                    codes::OTP_EXPIRED,
                    "The OTP expired; the transaction was cancelled",
                );
                self.finish(&key, &pending.request_type, reply, None)
                    .await?
            }
        };
        Ok(reply)
    }

    async fn query(&self, request: QueryRequest) -> Result<ProviderReply, ProviderError> {
        let key = transaction_key(&request.app_id, &request.transaction_ref);
        if let Some(outcome) = self.outcome(&key)? {
            return Ok(outcome.reply);
        }
        match self.otps.get(&key)? {
            Some(pending) => Ok(waiting_reply(&pending)),
            None => Err(ProviderError::UnknownTransaction),
        }
    }

    async fn reverse(&self, request: ReverseRequest) -> Result<ProviderReply, ProviderError> {
        let key = transaction_key(&request.app_id, &request.transaction_ref);
        let Some(mut outcome) = self.outcome(&key)? else {
            return Err(ProviderError::UnknownTransaction);
        };
        let refuse = |message: &str| {
            Ok(ProviderReply::new(
                Status::Failed,
                codes::NOT_REVERSIBLE,
                message,
            ))
        };
        if let Some(reversed_by) = &outcome.reversed_by {
            // A repeat of the reversal that succeeded answers the same; any other is refused.
            return if reversed_by == &request.request_ref {
                Ok(reversal_reply(&request.transaction_ref))
            } else {
                refuse("The transaction has already been reversed")
            };
        }
        let Some(posting) = outcome.posting.clone() else {
            return refuse("Only a successful transfer can be reversed");
        };
        let mut reversal_key = key.clone();
        reversal_key.extend_from_slice(b"\x1freversal");
        match self.ledger.post(&posting.reversed(), &reversal_key) {
            Ok(()) => {}
            Err(LedgerError::InsufficientFunds) => {
                return refuse("The destination account no longer holds the funds");
            }
            Err(error) => return Err(ProviderError::Internal(error.to_string())),
        }
        outcome.reversed_by = Some(request.request_ref.clone());
        self.store_outcome(&key, &outcome)?;
        self.commit.durable().await.map_err(DemoError::from)?;
        Ok(reversal_reply(&request.transaction_ref))
    }
}

fn reversal_reply(transaction_ref: &str) -> ProviderReply {
    ProviderReply::new(Status::Successful, codes::APPROVED, "Transaction reversed")
        .with_response(json!({ "reversal_reference": format!("DEMO-REV-{transaction_ref}") }))
}
