//! The Manifold switch.
//!
//! Calling apps send one uniform envelope (seed 003) to `/transact`,
//! `/transact/validate`, `/transact/query` and `/transact/reverse`. The switch
//! authenticates the app by its bearer key, checks the envelope field by field,
//! opens `auth.secure` with the app's key, routes the call to the provider named
//! by `auth.auth_provider`, records the transaction durably, and answers in the
//! same envelope whatever happened.
//!
//! # Layout
//! - [`server`]: builds a switch from configuration and runs it on a listener
//!   until shutdown — what the binary, tests and benchmarks all call.
//! - [`http`]: the HTTP edge: routes paths, reads bodies, and is the one place
//!   where a [`SwitchError`] becomes a status code and an envelope.
//! - [`envelope`]: the app-facing wire format and its field-by-field parsing.
//! - [`apps`]: bearer key → app, with its derived keys and grants.
//! - [`signed`]: [`signed::VerifiedCall`], an app call whose RFC 9421
//!   signature was checked against its body; the engine takes nothing else.
//! - [`routing`]: provider names → `Arc<dyn Provider>` and their settings.
//! - [`engine`]: the transaction lifecycle: idempotency, state changes,
//!   timeouts, reversal, metering.
//! - [`inspect`]: the sample answers of `mock_mode: inspect`.
//! - [`notify`]: `/notify/sms` and `/notify/email`, the notification services
//!   provider microservices may delegate SMS and e-mail to.
//! - [`store`]: the [`store::Store`] trait and its sled implementation; the
//!   switch keeps no state above it.
//! - [`retention`]: the hourly pass that drops the customer data of
//!   transactions settled longer ago than `[data_at_rest] retention_days`.
//! - [`storage`]: what is open on the database (store, in-process providers,
//!   engine) as one generation, reopened after a write error.
//! - [`error`]: [`SwitchError`], everything that can go wrong, in domain words.

pub mod admin;
pub mod apps;
pub mod engine;
pub mod envelope;
pub mod error;
pub mod http;
pub mod inspect;
pub mod invoice;
pub mod limits;
pub mod metrics;
pub mod notify;
pub mod retention;
pub mod routing;
pub mod server;
pub mod signed;
pub mod storage;
pub mod store;

pub use error::SwitchError;
pub use server::{
    run_with_registry, Registry, ReloadError, ReloadRefused, Reloader, Switch, DEMO_IMPLEMENTATION,
};
