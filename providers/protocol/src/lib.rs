//! The contract between the switch and its providers.
//!
//! A provider is anything that can carry out the four operations of seed 003's
//! "ONEPIPE → PROVIDER MICRO SERVICE" interface — transact, validate, query,
//! reverse — for the `request_type`s it serves. The switch holds providers as
//! `Arc<dyn Provider>` and does not care whether one is compiled in or lives in
//! another process: [`RemoteProvider`] speaks the protocol over HTTP, and
//! [`server::serve_provider`] turns any in-process provider into the
//! microservice that `RemoteProvider` talks to. Keeping both ends of the wire in
//! this one crate is what stops them drifting apart.
//!
//! # Layout
//! - [`wire`]: the request and reply types that cross the wire, and [`Status`].
//! - [`provider`]: the [`Provider`] trait and [`ProviderError`].
//! - [`client`]: [`RemoteProvider`], the HTTP client side (`reqwest`).
//! - [`hop`]: [`HopSigner`] and [`HopVerifier`], the RFC 9421 signatures on
//!   every switch → provider and provider → switch call.
//! - [`json`]: JSON bodies read with every key of an object given once, for
//!   the switch and the provider microservices alike.
//! - [`error_id`]: [`ErrorId`], the opaque id an answer carries instead of the
//!   detail of a failure inside the server.
//! - [`outbound`]: the hardened `reqwest` client every outbound call uses (no
//!   redirects, no proxy, timeouts, verified certificates, capped replies).
//! - [`server`]: [`server::serve_provider`], the provider-side router, mounted
//!   on the shared HTTP edge (`manifold-edge`).
//! - [`notify`]: the [`Notifier`] trait through which providers reach customers.
//! - [`hourly`]: [`hourly::HourlyLimit`], the hourly send limits of OTPs and
//!   notifications, per destination, app or provider.
//! - [`durable`]: [`GroupCommit`], shared sled flushes behind durable acknowledgements.

pub mod client;
pub mod durable;
pub mod error_id;
pub mod hop;
pub mod hourly;
pub mod json;
pub mod notify;
pub mod outbound;
pub mod provider;
pub mod request_id;
pub mod server;
pub mod wire;

pub use client::RemoteProvider;
pub use durable::{GroupCommit, SharedLog};
pub use error_id::ErrorId;
pub use hop::{HopSigner, HopVerifier};
pub use notify::{Notification, Notifier, NotifyError};
pub use provider::{Provider, ProviderError};
pub use wire::{
    Customer, ProviderReply, QueryRequest, ReverseRequest, Status, TransactRequest,
    TransactionDetails, ValidateRequest,
};
