//! The demo provider: a small bank that lets anyone try Manifold end to end,
//! and the worked example of the provider SDK.
//!
//! It serves `get_balance` (answered with seed 003's response shape) and
//! `transfer_funds` (moves money between accounts and can be reversed), over a
//! ledger kept in a sled database of its own. All of the protocol —
//! idempotency, `otp_override`, OTPs and their delivery, pending state,
//! expiry — comes from
//! [`manifold_provider_sdk`]; this crate only says what the bank does, in
//! [`bank::DemoBank`], a [`Connector`](manifold_provider_sdk::Connector).
//!
//! A transfer of [`DemoSettings::step_up_amount`] or more first asks the
//! customer to confirm the destination account number (`PendingValidation`),
//! then, unless the app's `otp_override` is true, for an OTP.
//!
//! It runs compiled into the switch (`mode = "in_process"`) or as its own
//! microservice (the `demo-provider` binary); both are the same [`DemoProvider`].
//!
//! # Where its data lives
//! The bank stands for an upstream bank, whose books are its own: the
//! [`ledger::Ledger`] (accounts, with their numbers, and applied postings) is
//! a database of its own in the directory [`open`] is given — in-process, the
//! switch puts it in `<storage.path>/demo-bank-ledger`
//! ([`IN_PROCESS_LEDGER_DIR`]); the `demo-provider` binary in `--ledger-data`
//! (default `<data>/upstream-ledger`). The SDK's
//! state (pending confirmations, outcomes) is where the SDK keeps it: the
//! switch's database in-process, the binary's `--data` otherwise. So
//! everything but the ledger can be checked for customer data in clear.
//!
//! # Its answers
//! Every `provider_response` it gives (a balance snapshot, a transfer, a
//! reversal) carries `"bank_marker": "manifold-demo-bank-answer-7f3c"`
//! ([`MARKER_FIELD`], [`ANSWER_MARKER`]), beside seed 003's fields: a
//! distinctive string a test looks for in the raw bytes of the stores that
//! keep answers.
//!
//! # Layout
//! - [`ledger`]: accounts and the atomic, once-only, durable posting of
//!   transfers and reversals, in a database of its own — the "upstream" of
//!   this provider.
//! - [`bank`]: the connector: the bank's answers as SDK steps.
//! - [`customers`]: each account's holder on record, where its OTPs go,
//!   and [`DemoConfig`], the bank's settings as a host writes them.
//! - this file: settings, [`open`], and [`CompiledDemo`], what the switch
//!   registers to run the bank in-process.

pub mod bank;
pub mod customers;
pub mod ledger;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use manifold_crypto::DataKeys;
use manifold_provider::Notifier;
use manifold_provider_sdk::compiled::{
    CompiledProvider, ConfiguredProvider, Host, HostSettings, HostedProvider,
};
use manifold_provider_sdk::{
    AnswerDurability, OtpPolicy, ProviderService, ServiceError, ServiceSettings, StateDurability,
};
use serde::Deserialize;

pub use bank::{codes, DemoBank, ANSWER_MARKER, GET_BALANCE, MARKER_FIELD, TRANSFER};
pub use customers::{Customers, DemoConfig, Holder};
pub use ledger::{Ledger, LedgerError};

/// The demo bank wrapped by the SDK: a complete [`manifold_provider::Provider`].
pub type DemoProvider = ProviderService<DemoBank>;

/// The prefix of the SDK's sled trees for the demo bank, in the database
/// given to [`open`].
pub const NAMESPACE: &str = "demo";

/// The ledger's directory inside the switch's data directory
/// (`storage.path`) when the bank runs in-process: the stand-in upstream's
/// own database, beside the switch's.
pub const IN_PROCESS_LEDGER_DIR: &str = "demo-bank-ledger";

#[derive(Debug, Clone)]
pub struct DemoSettings {
    /// The balance (minor units) a new account opens with.
    pub opening_balance: u64,
    /// Transfers of this amount (minor units) or more need the destination
    /// account confirmed by the customer.
    pub step_up_amount: u64,
    pub otp: OtpPolicy,
    pub sweep_interval: Duration,
    /// `ByCaller` only in-process, where the switch's next commit carries the
    /// bank's state with its own.
    pub answer_durability: AnswerDurability,
    /// Each account's holder: where its codes go.
    pub customers: Customers,
    /// The keys the bank's SDK state is sealed under at rest (the switch's
    /// `[data_at_rest]` in-process, `--data-key-*` as a microservice).
    pub data_keys: Option<Arc<DataKeys>>,
    /// How long a final outcome keeps its customer data.
    pub retention: Option<Duration>,
}

impl Default for DemoSettings {
    fn default() -> Self {
        DemoSettings {
            opening_balance: 2_077_099,
            step_up_amount: 2_000_000,
            otp: OtpPolicy::default(),
            sweep_interval: Duration::from_secs(5),
            answer_durability: AnswerDurability::BeforeAnswering,
            customers: Customers::default(),
            data_keys: None,
            retention: None,
        }
    }
}

impl DemoSettings {
    /// These settings with what `config` (a switch's `[providers.settings]`
    /// table, or the `demo-provider --settings` file) changes.
    pub fn with_config(mut self, config: &DemoConfig) -> Result<DemoSettings, String> {
        if let Some(balance) = config.opening_balance {
            self.opening_balance = balance;
        }
        if let Some(amount) = config.step_up_amount {
            if amount == 0 {
                return Err("step_up_amount must be greater than 0".into());
            }
            self.step_up_amount = amount;
        }
        if let Some(sends) = config.otp_sends_per_destination_per_hour {
            if sends == 0 {
                return Err("otp_sends_per_destination_per_hour must be greater than 0".into());
            }
            self.otp.max_sends_per_destination_per_hour = sends;
        }
        if let Some(sends) = config.otp_sends_per_app_per_hour {
            if sends == 0 {
                return Err("otp_sends_per_app_per_hour must be greater than 0".into());
            }
            self.otp.max_sends_per_app_per_hour = sends;
        }
        self.customers = config.customers()?;
        Ok(self)
    }

    /// [`DemoSettings::with_config`] from a JSON value of the same shape.
    pub fn with_settings(self, settings: &serde_json::Value) -> Result<DemoSettings, String> {
        if settings.is_null() {
            return Ok(self);
        }
        // serde's message may quote a value: a phone number, an account.
        let config = DemoConfig::deserialize(settings)
            .map_err(|error| manifold_crypto::secret::withhold_values(&error.to_string()))?;
        self.with_config(&config)
    }
}

/// Why the demo bank could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the demo bank's ledger in {dir} could not be opened: {source}")]
    Ledger { dir: PathBuf, source: LedgerError },
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// Opens the demo bank: the SDK's state in `db` (the provider's own
/// database, or the switch's when it runs in-process; `commit` flushes
/// `db`, or is the switch's log in front of it), and the ledger in a
/// database of its own in `ledger_dir`, which only this bank may have open
/// (sled locks it).
///
/// A `db` that kept the ledger itself, as before the ledger had its own,
/// hands it over ([`Ledger::take_over`]).
pub fn open(
    db: &sled::Db,
    commit: impl Into<StateDurability>,
    ledger_dir: &Path,
    notifier: Arc<dyn Notifier>,
    settings: DemoSettings,
) -> Result<DemoProvider, OpenError> {
    let ledger_error = |source| OpenError::Ledger {
        dir: ledger_dir.to_owned(),
        source,
    };
    let ledger = Ledger::open(ledger_dir, settings.opening_balance).map_err(ledger_error)?;
    let moved = ledger.take_over(db).map_err(ledger_error)?;
    if moved > 0 {
        tracing::info!(
            accounts = moved,
            "the demo bank's ledger moved to a database of its own"
        );
    }
    let bank = DemoBank::new(ledger, settings.step_up_amount, settings.customers);
    let mut service = ServiceSettings::new(NAMESPACE, "Manifold demo bank");
    service.otp = settings.otp;
    service.sweep_interval = settings.sweep_interval;
    service.answer_durability = settings.answer_durability;
    service.data_keys = settings.data_keys;
    service.retention = settings.retention;
    Ok(ProviderService::open(db, commit, notifier, bank, service)?)
}

/// The demo bank as the switch runs it in-process
/// (`implementation = "demo"`): its SDK state in the switch's database
/// through the switch's log, its ledger in
/// `<storage.path>/`[`IN_PROCESS_LEDGER_DIR`].
pub struct CompiledDemo;

impl CompiledProvider for CompiledDemo {
    fn configure(
        &self,
        settings: &serde_json::Value,
        host: &HostSettings,
    ) -> Result<Box<dyn ConfiguredProvider>, String> {
        let settings = DemoSettings {
            // The switch's next commit carries the bank's state.
            answer_durability: AnswerDurability::ByCaller,
            data_keys: Some(host.data_keys.clone()),
            retention: Some(host.retention),
            ..DemoSettings::default()
        }
        .with_settings(settings)?;
        Ok(Box::new(ConfiguredDemo(settings)))
    }
}

struct ConfiguredDemo(DemoSettings);

impl ConfiguredProvider for ConfiguredDemo {
    fn open(&self, host: &Host<'_>) -> Result<Arc<dyn HostedProvider>, String> {
        let bank = open(
            host.db,
            host.durability.clone(),
            &host.data_dir.join(IN_PROCESS_LEDGER_DIR),
            host.notifier.clone(),
            self.0.clone(),
        )
        .map_err(|error| error.to_string())?;
        Ok(Arc::new(bank))
    }

    /// The ledger is one database, which sled lets one bank open.
    fn own_dir(&self) -> Option<PathBuf> {
        Some(PathBuf::from(IN_PROCESS_LEDGER_DIR))
    }
}
