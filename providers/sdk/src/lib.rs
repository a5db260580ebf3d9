//! The provider SDK: write the calls to your upstream, get a provider.
//!
//! A provider plugin author implements [`Connector`] — start a transaction
//! upstream, complete it after the customer confirmed, poll it, reverse it —
//! and wraps it in a [`ProviderService`]. The service is a complete
//! [`Provider`](manifold_provider::Provider): the switch can hold it
//! in-process, and [`microservice::run`] serves it over HTTP as a provider
//! microservice. Everything seed 003 asks of a provider around the upstream
//! call is done here once:
//! - idempotency per `(app_id, transaction_ref)`: repeats and queries are
//!   answered from the store, never by calling the upstream again;
//! - `otp_override`: `true` completes at once, `false` sends an OTP from the
//!   CSPRNG, stores only its keyed hash, checks it in constant time, bounds
//!   attempts, expires it, rate-limits resends;
//! - `PendingValidation` prompts and upstream-sent codes (SCA, 2FA);
//! - `Pending` upstream work, polled on query;
//! - pending data in sled, durable (group commit) before any answer (or,
//!   in-process, before the switch's answer: [`AnswerDurability`]) and before
//!   any code is sent or money can move; erased when the transaction is
//!   final, swept when it expires;
//! - notification dispatch through a [`Notifier`](manifold_provider::Notifier)
//!   (SMS or e-mail: the channel follows the source).
//!
//! `providers/README.md` is the guide; `providers/template/` is a provider to
//! copy; `providers/demo/` is the worked example.
//!
//! # Layout
//! - [`connector`]: the [`Connector`] trait and the [`Step`]s it answers with.
//! - [`service`]: [`ProviderService`], the state machine around a connector.
//! - [`state`]: the pending and final records in sled.
//! - [`otp`]: code generation and keyed hashing; [`OtpPolicy`].
//! - [`sweeper`]: the background expiry sweep.
//! - [`microservice`]: serving a connector over HTTP, the switch's signature
//!   checked on every call, and [`microservice::ServeArgs`], the command-line
//!   options every provider binary shares.
//! - [`tokens`]: [`tokens::TokenCache`], upstream access tokens fetched once
//!   for many callers and refreshed before they expire.
//! - [`customer`]: a customer's own credential traded for tokens that act
//!   for that customer alone, cached per customer.
//! - [`upstream`]: [`upstream::HttpUpstream`], the HTTP rules a REST
//!   connector follows (what failure means nothing was done, what leaves the
//!   outcome unknown).
//! - [`compiled`]: what a connector crate offers to run inside the switch
//!   (`implementation = "<name>"`), on the switch's database and log.
//! - [`clock`]: wall-clock time, replaceable in tests.
//! - [`codes`]: the response codes the SDK answers with.

pub mod clock;
pub mod codes;
pub mod compiled;
pub mod connector;
pub mod customer;
pub mod microservice;
pub mod otp;
pub mod service;
pub mod shared;
pub mod state;
pub mod sweeper;
pub mod tokens;
pub mod upstream;

pub use clock::{Clock, ManualClock, SystemClock};
pub use connector::{
    Confirmation, Connector, ConnectorError, Contact, OtpRecipient, Outcome, PendingNote, Step,
    TransactionContext,
};
pub use otp::OtpPolicy;
pub use service::{
    AnswerDurability, ProviderService, ServiceError, ServiceSettings, StateDurability,
};
pub use shared::{SharedState, SharedStateOptions};
pub use sweeper::Sweeper;
