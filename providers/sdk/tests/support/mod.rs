//! The rig the service tests drive: a [`ProviderService`] over a scripted
//! connector, a recording notifier, a manual clock and a sled database in a
//! temporary directory that can be closed and reopened like a restarted
//! provider process.
//!
//! The connector is scripted rather than clever: each method answers the next
//! [`Reply`] queued for it (or a plain default) and records that it ran, so a
//! test can say both what the upstream answered and how often it was asked.
//! Answers to prompts and upstream codes are checked against the `expect`
//! member of the deferred value, the way a real upstream checks what it asked
//! for.

// Shared by several test binaries, each of which uses only part of it.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use manifold_crypto::{
    BankAccount, Card, Msisdn, SecretString, SourceDetails, ValidationInput, Wallet,
};
use manifold_provider::{
    Customer, GroupCommit, Notification, Notifier, NotifyError, Provider, ProviderError,
    ProviderReply, QueryRequest, ReverseRequest, TransactRequest, TransactionDetails,
    ValidateRequest,
};
use manifold_provider_sdk::state::{transaction_key, PendingEntry};
use manifold_provider_sdk::{
    Confirmation, Connector, ConnectorError, Contact, ManualClock, OtpRecipient, Outcome,
    ProviderService, ServiceSettings, Step, TransactionContext,
};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::Notify;
use tracing_subscriber::fmt::MakeWriter;

pub const NAMESPACE: &str = "test";
pub const DISPLAY_NAME: &str = "Test Bank";
pub const APP: &str = "app-1";
pub const MOBILE: &str = "2348022000008";
pub const MOBILE_SHOWN: &str = "2348022****08";
pub const EMAIL: &str = "uju@example.com";
pub const EMAIL_SHOWN: &str = "u***@example.com";
/// Where every manual clock starts: an ordinary present-day instant.
pub const START_MS: u64 = 1_800_000_000_000;

/// What one scripted connector call answers.
#[derive(Clone)]
pub enum Reply {
    Step(Step),
    /// `ConnectorError::Indeterminate`: the request left, its outcome is unknown.
    Indeterminate,
    /// `ConnectorError::Unavailable`: nothing happened upstream.
    Unavailable,
    /// `ConnectorError::NotFound` (from `poll`): the upstream never got it.
    NotFound,
    /// Never returns, like an upstream call cut off by a crash.
    Hang,
}

/// How the customer's confirmation reached [`Connector::complete`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    OtpVerified,
    UpstreamCode(String),
    Answer(String),
}

/// How often each connector method ran.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Calls {
    pub start: usize,
    pub complete: usize,
    pub poll: usize,
    pub reverse: usize,
}

#[derive(Default)]
struct Script {
    idempotent: AtomicBool,
    /// `get_balance` is read-only when set.
    enquiries_read_only: AtomicBool,
    starts: Mutex<VecDeque<Reply>>,
    accepted: Mutex<VecDeque<Reply>>,
    polls: Mutex<VecDeque<Reply>>,
    reversals: Mutex<VecDeque<Outcome>>,
    calls: Mutex<Calls>,
    completions: Mutex<Vec<(Seen, Value)>>,
    polled_with: Mutex<Vec<Value>>,
    reversed_with: Mutex<Vec<Value>>,
    start_entered: Notify,
}

/// A connector that answers from a script. Clones share the script and the
/// counts, so a connector handed to a reopened service keeps counting.
#[derive(Clone, Default)]
pub struct ScriptedConnector(Arc<Script>);

impl ScriptedConnector {
    pub fn new() -> Self {
        ScriptedConnector::default()
    }

    pub fn idempotent(self, idempotent: bool) -> Self {
        self.0.idempotent.store(idempotent, Ordering::SeqCst);
        self
    }

    /// Declares `get_balance` read-only (`transfer_funds` never is).
    pub fn read_only_enquiries(self) -> Self {
        self.0.enquiries_read_only.store(true, Ordering::SeqCst);
        self
    }

    /// Queues the answer of the next `start`; once the queue is empty,
    /// `start` answers `Done(approved())`.
    pub fn on_start(self, reply: Reply) -> Self {
        self.0.starts.lock().unwrap().push_back(reply);
        self
    }

    /// Queues what `complete` answers once it accepts a confirmation; once
    /// the queue is empty it answers `Done(approved())` carrying the deferred
    /// value as its response (seed 003: answer from the stored result).
    pub fn on_accepted(self, reply: Reply) -> Self {
        self.0.accepted.lock().unwrap().push_back(reply);
        self
    }

    /// Queues the answer of the next `poll`; once the queue is empty the
    /// transaction stays `Processing`.
    pub fn on_poll(self, reply: Reply) -> Self {
        self.0.polls.lock().unwrap().push_back(reply);
        self
    }

    /// Queues the outcome of the next `reverse`; once the queue is empty a
    /// reversal succeeds.
    pub fn on_reverse(self, outcome: Outcome) -> Self {
        self.0.reversals.lock().unwrap().push_back(outcome);
        self
    }

    pub fn calls(&self) -> Calls {
        *self.0.calls.lock().unwrap()
    }

    /// What each `complete` call received, in order.
    pub fn completions(&self) -> Vec<(Seen, Value)> {
        self.0.completions.lock().unwrap().clone()
    }

    /// The deferred value of each `poll` call, in order.
    pub fn polled_with(&self) -> Vec<Value> {
        self.0.polled_with.lock().unwrap().clone()
    }

    /// The reversal value of each `reverse` call, in order.
    pub fn reversed_with(&self) -> Vec<Value> {
        self.0.reversed_with.lock().unwrap().clone()
    }

    /// Resolves once a `start` call has begun (and, for a non-idempotent
    /// connector, after the service made its `Starting` marker durable).
    pub async fn start_entered(&self) {
        self.0.start_entered.notified().await;
    }

    fn count(&self, bump: impl FnOnce(&mut Calls)) {
        bump(&mut self.0.calls.lock().unwrap());
    }

    async fn play(
        queue: &Mutex<VecDeque<Reply>>,
        default: impl FnOnce() -> Step,
    ) -> Result<Step, ConnectorError> {
        let next = queue.lock().unwrap().pop_front();
        match next {
            None => Ok(default()),
            Some(Reply::Step(step)) => Ok(step),
            Some(Reply::Indeterminate) => Err(ConnectorError::Indeterminate(
                "the upstream timed out after the request was sent".into(),
            )),
            Some(Reply::Unavailable) => Err(ConnectorError::Unavailable(
                "the upstream refused the connection".into(),
            )),
            Some(Reply::NotFound) => Err(ConnectorError::NotFound),
            Some(Reply::Hang) => std::future::pending().await,
        }
    }
}

#[async_trait]
impl Connector for ScriptedConnector {
    fn serves(&self, request_type: &str) -> bool {
        matches!(request_type, "transfer_funds" | "get_balance")
    }

    fn upstream_is_idempotent(&self) -> bool {
        self.0.idempotent.load(Ordering::SeqCst)
    }

    fn is_read_only(&self, request_type: &str) -> bool {
        request_type == "get_balance" && self.0.enquiries_read_only.load(Ordering::SeqCst)
    }

    async fn start(&self, _request: &TransactRequest) -> Result<Step, ConnectorError> {
        self.count(|calls| calls.start += 1);
        self.0.start_entered.notify_one();
        Self::play(&self.0.starts, || Step::Done(approved())).await
    }

    async fn complete(
        &self,
        _transaction: TransactionContext<'_>,
        deferred: Value,
        confirmation: Confirmation,
    ) -> Result<Step, ConnectorError> {
        self.count(|calls| calls.complete += 1);
        let seen = match &confirmation {
            Confirmation::OtpVerified => Seen::OtpVerified,
            Confirmation::UpstreamCode(code) => Seen::UpstreamCode(code.expose().to_owned()),
            Confirmation::Answer(answer) => Seen::Answer(answer.expose().to_owned()),
        };
        self.0
            .completions
            .lock()
            .unwrap()
            .push((seen, deferred.clone()));
        let expected = deferred.get("expect").and_then(Value::as_str);
        let accepted = match &confirmation {
            Confirmation::OtpVerified => true,
            Confirmation::UpstreamCode(given) | Confirmation::Answer(given) => {
                expected == Some(given.expose())
            }
        };
        if !accepted {
            // The upstream asks again, with the same prompt and state.
            let prompt = deferred["prompt"].as_str().unwrap_or_default().to_owned();
            return Ok(match confirmation {
                Confirmation::UpstreamCode(_) => Step::UpstreamOtp { prompt, deferred },
                _ => Step::AskCustomer { prompt, deferred },
            });
        }
        Self::play(&self.0.accepted, || {
            Step::Done(approved().with_response(deferred))
        })
        .await
    }

    async fn poll(
        &self,
        _transaction: TransactionContext<'_>,
        deferred: Value,
    ) -> Result<Step, ConnectorError> {
        self.count(|calls| calls.poll += 1);
        self.0.polled_with.lock().unwrap().push(deferred.clone());
        Self::play(&self.0.polls, || Step::Processing { deferred }).await
    }

    async fn reverse(
        &self,
        _transaction: TransactionContext<'_>,
        reversal: Value,
    ) -> Result<Outcome, ConnectorError> {
        self.count(|calls| calls.reverse += 1);
        self.0.reversed_with.lock().unwrap().push(reversal);
        let next = self.0.reversals.lock().unwrap().pop_front();
        Ok(next.unwrap_or_else(|| Outcome::successful("00", "Transaction reversed")))
    }
}

pub fn approved() -> Outcome {
    Outcome::successful("00", "Approved")
}

/// An OTP step to the contact in the request.
pub fn confirm_with_otp(deferred: Value) -> Reply {
    Reply::Step(Step::ConfirmWithOtp {
        deferred,
        recipient: OtpRecipient::ContactInRequest,
    })
}

/// An OTP step to the account holder on the upstream's record.
pub fn confirm_with_otp_to(deferred: Value, holder: Contact) -> Reply {
    Reply::Step(Step::ConfirmWithOtp {
        deferred,
        recipient: OtpRecipient::AccountHolder(holder),
    })
}

/// A `PendingValidation` prompt whose accepted answer is `expect`.
pub fn ask(prompt: &str, expect: &str) -> Reply {
    Reply::Step(Step::AskCustomer {
        prompt: prompt.into(),
        deferred: json!({ "prompt": prompt, "expect": expect }),
    })
}

/// A code the upstream sent itself; it accepts `expect`.
pub fn upstream_otp(prompt: &str, expect: &str) -> Reply {
    Reply::Step(Step::UpstreamOtp {
        prompt: prompt.into(),
        deferred: json!({ "prompt": prompt, "expect": expect }),
    })
}

pub fn processing(deferred: Value) -> Reply {
    Reply::Step(Step::Processing { deferred })
}

pub fn done(outcome: Outcome) -> Reply {
    Reply::Step(Step::Done(outcome))
}

/// Delivers nothing: keeps every notification, or refuses them all when told.
#[derive(Default)]
pub struct RecordingNotifier {
    sent: Mutex<Vec<Notification>>,
    attempts: Mutex<usize>,
    failing: AtomicBool,
    limited: AtomicBool,
}

impl RecordingNotifier {
    pub fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Refuses every message by a limit, as the switch's `/notify/*` does
    /// when a destination had its hour's codes.
    pub fn limit(&self, limited: bool) {
        self.limited.store(limited, Ordering::SeqCst);
    }

    /// Every notification delivered, oldest first.
    pub fn sent(&self) -> Vec<Notification> {
        self.sent.lock().unwrap().clone()
    }

    /// Every send asked for, delivered or not.
    pub fn attempts(&self) -> usize {
        *self.attempts.lock().unwrap()
    }
}

#[async_trait]
impl Notifier for RecordingNotifier {
    async fn send(&self, notification: &Notification) -> Result<(), NotifyError> {
        *self.attempts.lock().unwrap() += 1;
        if self.limited.load(Ordering::SeqCst) {
            return Err(NotifyError::RateLimited {
                channel: notification.channel,
                to: notification.to.clone(),
                limit: "the limit of 10 codes an hour to 2348022****08".into(),
            });
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(NotifyError::Undeliverable {
                channel: notification.channel,
                to: notification.to.clone(),
                reason: "the gateway did not answer".into(),
            });
        }
        self.sent.lock().unwrap().push(notification.clone());
        Ok(())
    }
}

/// The runs of ASCII digits in `text`, each taken whole.
pub fn digit_runs(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|run| !run.is_empty())
}

/// Whether `code` appears in `text` as a number of its own (an OTP in a
/// message or a log line is never glued to other digits).
pub fn shows_code(text: &str, code: &str) -> bool {
    digit_runs(text).any(|run| run == code)
}

/// The one code of `digits` digits in a notification's body.
pub fn code_in(notification: &Notification, digits: u32) -> String {
    let runs: Vec<&str> = digit_runs(notification.body.expose())
        .filter(|run| run.len() == digits as usize)
        .collect();
    assert_eq!(
        runs.len(),
        1,
        "a notification carries exactly one {digits}-digit code"
    );
    runs[0].to_owned()
}

/// A code of the same length that is certainly not `code`.
pub fn wrong(code: &str) -> String {
    let mut digits: Vec<u8> = code.bytes().collect();
    let last = digits.last_mut().expect("a code has digits");
    *last = b'0' + (*last - b'0' + 1) % 10;
    String::from_utf8(digits).expect("digits are ASCII")
}

pub fn otp(code: &str) -> ValidationInput {
    ValidationInput::Otp(SecretString::new(code))
}

pub fn answer(text: &str) -> ValidationInput {
    ValidationInput::Answer(SecretString::new(text))
}

pub fn bank_source() -> SourceDetails {
    SourceDetails::BankAccount(BankAccount {
        account_number: SecretString::new("0123456789"),
        bank_code: "058".into(),
    })
}

pub fn msisdn_source(msisdn: &str) -> SourceDetails {
    SourceDetails::Msisdn(Msisdn {
        msisdn: SecretString::new(msisdn),
    })
}

pub fn wallet_source() -> SourceDetails {
    SourceDetails::Wallet(Wallet {
        wallet_id: SecretString::new("wallet-77"),
    })
}

pub fn card_source() -> SourceDetails {
    SourceDetails::Card(Card {
        pan: SecretString::new("4111111111111111"),
        expiry_month: "09".into(),
        expiry_year: "2031".into(),
        cvv: SecretString::new("123"),
        pin: None,
    })
}

/// A `transfer_funds` from a bank account by a customer with a phone and an
/// e-mail address, OTP required.
pub fn transfer(transaction_ref: &str) -> TransactRequest {
    TransactRequest {
        app_id: APP.into(),
        request_ref: format!("req-{transaction_ref}"),
        request_type: "transfer_funds".into(),
        transaction_ref: transaction_ref.into(),
        otp_override: false,
        read_only: false,
        source: bank_source(),
        transaction: TransactionDetails {
            transaction_desc: Some("Rent".into()),
            amount: 150_000,
            customer: Customer {
                firstname: Some("Uju".into()),
                email: Some(EMAIL.into()),
                mobile_no: Some(MOBILE.into()),
                ..Customer::default()
            },
            ..TransactionDetails::default()
        },
    }
}

/// The SDK's default settings (OTP policy included) under the test namespace.
pub fn settings() -> ServiceSettings {
    ServiceSettings::new(NAMESPACE, DISPLAY_NAME)
}

/// One provider process: its database, its service and what it talks to.
pub struct Rig {
    dir: TempDir,
    pub db: sled::Db,
    pub clock: ManualClock,
    pub notifier: Arc<RecordingNotifier>,
    pub connector: ScriptedConnector,
    pub settings: ServiceSettings,
    pub service: Arc<ProviderService<ScriptedConnector>>,
    /// The service's group commit, for counting flushes.
    pub commit: GroupCommit,
}

impl Rig {
    pub fn new(connector: ScriptedConnector) -> Rig {
        Rig::with_settings(connector, settings())
    }

    pub fn with_settings(connector: ScriptedConnector, settings: ServiceSettings) -> Rig {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = sled::open(dir.path()).expect("a fresh sled database");
        let clock = ManualClock::starting_at(START_MS);
        let notifier = Arc::new(RecordingNotifier::default());
        let (service, commit) = open_service(&db, &notifier, &connector, &settings, &clock);
        Rig {
            dir,
            db,
            clock,
            notifier,
            connector,
            settings,
            service,
            commit,
        }
    }

    /// The provider's database directory.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Flushes so far (a `durable()` with nothing else queued is one flush).
    pub fn flushes(&self) -> u64 {
        self.commit.stats().flushes
    }

    /// Stops this provider process and starts a new one on the same
    /// database directory; the connector, notifier and clock carry over, as
    /// the upstream, the phone and time itself would.
    pub fn restart(self) -> Rig {
        let Rig {
            dir,
            db,
            clock,
            notifier,
            connector,
            settings,
            service,
            commit,
        } = self;
        assert_eq!(
            Arc::strong_count(&service),
            1,
            "nothing else may hold the service across a restart"
        );
        drop(service);
        drop(commit);
        drop(db);
        let db = reopen(dir.path());
        let (service, commit) = open_service(&db, &notifier, &connector, &settings, &clock);
        Rig {
            dir,
            db,
            clock,
            notifier,
            connector,
            settings,
            service,
            commit,
        }
    }

    /// As [`Rig::restart`], for settings the service must refuse to open
    /// with: its error.
    pub fn restart_expecting_error(self) -> String {
        let Rig {
            dir,
            db,
            notifier,
            connector,
            settings,
            service,
            commit,
            ..
        } = self;
        drop(service);
        drop(commit);
        drop(db);
        let db = reopen(dir.path());
        let commit = GroupCommit::start(db.clone()).expect("the group-commit thread starts");
        match ProviderService::open(
            &db,
            commit,
            notifier as Arc<dyn Notifier>,
            connector,
            settings,
        ) {
            Ok(_) => panic!("the service opened"),
            Err(error) => error.to_string(),
        }
    }

    pub fn digits(&self) -> u32 {
        self.settings.otp.digits
    }

    /// The code in the latest notification.
    pub fn last_code(&self) -> String {
        let sent = self.notifier.sent();
        let last = sent.last().expect("a notification was sent");
        code_in(last, self.digits())
    }

    pub async fn transact(&self, request: TransactRequest) -> ProviderReply {
        self.service
            .transact(request)
            .await
            .expect("transact answers")
    }

    pub async fn try_validate(
        &self,
        transaction_ref: &str,
        input: ValidationInput,
    ) -> Result<ProviderReply, ProviderError> {
        self.service
            .validate(ValidateRequest {
                app_id: APP.into(),
                request_ref: format!("val-{transaction_ref}"),
                request_type: "transfer_funds".into(),
                transaction_ref: transaction_ref.into(),
                input,
            })
            .await
    }

    pub async fn validate(&self, transaction_ref: &str, input: ValidationInput) -> ProviderReply {
        self.try_validate(transaction_ref, input)
            .await
            .expect("validate answers")
    }

    pub async fn try_query(&self, transaction_ref: &str) -> Result<ProviderReply, ProviderError> {
        self.service
            .query(QueryRequest {
                app_id: APP.into(),
                request_type: "transfer_funds".into(),
                transaction_ref: transaction_ref.into(),
            })
            .await
    }

    pub async fn query(&self, transaction_ref: &str) -> ProviderReply {
        self.try_query(transaction_ref)
            .await
            .expect("query answers")
    }

    pub async fn try_reverse(
        &self,
        transaction_ref: &str,
        request_ref: &str,
    ) -> Result<ProviderReply, ProviderError> {
        self.service
            .reverse(ReverseRequest {
                app_id: APP.into(),
                request_ref: request_ref.into(),
                request_type: "transfer_funds".into(),
                transaction_ref: transaction_ref.into(),
            })
            .await
    }

    pub async fn reverse(&self, transaction_ref: &str, request_ref: &str) -> ProviderReply {
        self.try_reverse(transaction_ref, request_ref)
            .await
            .expect("reverse answers")
    }

    /// Moves the provider's clock (and only it: nothing sleeps).
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// The `<namespace>/pending` tree exactly as stored.
    pub fn pending_raw(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.db
            .open_tree(format!("{NAMESPACE}/pending"))
            .expect("the pending tree opens")
            .iter()
            .map(|item| {
                let (key, value) = item.expect("the pending tree reads");
                (key.to_vec(), value.to_vec())
            })
            .collect()
    }

    /// The stored pending entry of one of this app's transactions.
    pub fn pending_entry(&self, transaction_ref: &str) -> Option<PendingEntry> {
        let key = transaction_key(APP, transaction_ref);
        self.pending_raw()
            .into_iter()
            .find(|(stored, _)| *stored == key)
            .map(|(_, raw)| serde_json::from_slice(&raw).expect("a pending entry parses"))
    }

    /// Every value in every tree of the database, as text.
    pub fn everything_stored(&self) -> Vec<String> {
        let mut values = Vec::new();
        for name in self.db.tree_names() {
            let tree = self.db.open_tree(&name).expect("a tree opens");
            for item in tree.iter() {
                let (key, value) = item.expect("a tree reads");
                values.push(String::from_utf8_lossy(&key).into_owned());
                values.push(String::from_utf8_lossy(&value).into_owned());
            }
        }
        values
    }
}

fn open_service(
    db: &sled::Db,
    notifier: &Arc<RecordingNotifier>,
    connector: &ScriptedConnector,
    settings: &ServiceSettings,
    clock: &ManualClock,
) -> (Arc<ProviderService<ScriptedConnector>>, GroupCommit) {
    let commit = GroupCommit::start(db.clone()).expect("the group-commit thread starts");
    let service = ProviderService::open(
        db,
        commit.clone(),
        notifier.clone() as Arc<dyn Notifier>,
        connector.clone(),
        settings.clone(),
    )
    .expect("the service opens");
    (
        Arc::new(service.with_clock(Arc::new(clock.clone()))),
        commit,
    )
}

fn reopen(path: &Path) -> sled::Db {
    // The group-commit thread of the stopped service holds the database until
    // it sees its last sender gone; sled's file lock refuses a second open
    // until then.
    for _ in 0..500 {
        match sled::open(path) {
            Ok(db) => return db,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    panic!("the database did not reopen within 10 s of the service stopping");
}

/// Everything the service logs while installed, at every level.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// Captures this thread's events until the guard is dropped. The
    /// service's calls run on the test's thread under `#[tokio::test]`.
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            // Timestamps carry digit runs of their own; they are not the service's words.
            .without_time()
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
