//! What an app owes for its calls in a period.
//!
//! Seed 003: "the host client will invoice the calling app periodically for
//! all calls to the endpoint". The switch meters every authenticated call
//! (rejected ones, queries and repeats included); this crate prices them
//! from the host's [`FeeSchedule`] and sums them into an [`Invoice`], the
//! same one whether the `manifold invoice` command or the admin API asks.
//!
//! # The fee model
//! Each `request_type` (service) has a [`Fee`]; one `default` fee prices
//! the rest, and calls rejected before their service was known.
//! - **`per_call`**: charged on every billable call of the service, on any
//!   endpoint (`/transact`, `/transact/validate`, `/transact/query`,
//!   `/transact/reverse`).
//! - **`percent`** of the transaction's `amount`, bounded below by
//!   **`minimum`** and above by **`cap`**: the value fee, charged once per
//!   transaction, on the call whose answer first made it `Successful` (the
//!   `/transact` itself, the `/transact/validate` that confirmed it, or the
//!   `/transact/query` that learnt it). A reversal does not refund it.
//!
//! A call is billable unless it was answered with a 5xx (the switch or the
//! provider could not serve it: never the app's doing), or the provider
//! declined it (`Failed`, HTTP 200) and [`FeeSchedule::bill_failed`] is off,
//! or the switch refused it (a 4xx) and [`FeeSchedule::bill_rejected`] is
//! off, or it was a repeat of a `request_ref` and
//! [`FeeSchedule::bill_repeats`] is off. Every call is
//! counted on the invoice, billed or not.
//!
//! Each call is priced when it is metered, by the fees in force then, and
//! its [`Price`] is stored with it: changing the fees (a reload) never
//! reprices calls already made. (Calls metered before prices were stored
//! are priced by the invoice's schedule.)
//!
//! Money is [`Decimal`], never a float. Amounts arrive in minor units
//! (kobo, cents: [`FeeSchedule::minor_units`] of them to the unit); each
//! value fee is rounded to a minor unit, half away from zero, before it is
//! added, so every line is the exact sum of fees a reader can recompute.
//!
//! # Layout
//! - [`FeeSchedule`], [`Fee`]: the host's prices (parsed by `manifold-config`).
//! - [`Period`]: `[from, to)` in UTC, from dates or RFC 3339 times.
//! - [`InvoiceBuilder`], [`Call`]: metered calls in, one at a time, so an
//!   invoice over a busy year never holds the year in memory.
//! - [`Invoice`]: lines per service, endpoint, provider and status, totals,
//!   and its CSV and JSON forms.

mod invoice;
mod period;
mod schedule;

pub use invoice::{Call, Invoice, InvoiceBuilder, InvoiceLine, Totals};
pub use period::{format_ms, Period};
pub use rust_decimal::Decimal;
pub use schedule::{Fee, FeeSchedule, Price, UNPRICED_CURRENCY};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BillingError {
    /// `field` (`from`, `to`) is not a date or time this crate reads.
    #[error(
        "{field}: `{given}` is not a date (2026-11-01) or an RFC 3339 time (2026-11-01T00:00:00Z)"
    )]
    BadTime { field: &'static str, given: String },
    #[error(
        "the period ends ({to}) before it starts ({from}); `to` is exclusive and must be later"
    )]
    EmptyPeriod { from: String, to: String },
    /// A sum passed what a decimal holds (about 7.9 × 10²⁸).
    #[error("the invoice's {what} is too large to add up exactly")]
    Overflow { what: &'static str },
    #[error("the invoice could not be written as CSV: {0}")]
    Csv(String),
    /// A call of the period was priced in another currency than the
    /// schedule's now: the period spans a change of `[billing] currency`.
    #[error("the period holds calls priced in {was}, and fees are now in {now}: invoice the periods before and after the currency changed apart")]
    CurrencyChanged { was: String, now: String },
}
