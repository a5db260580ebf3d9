//! Simulations of the upstream APIs the seeds describe, on loopback ports.
//!
//! A connector is only as good as the upstream it was tested against. These
//! are real HTTP servers, built from the seeds' own words: where a seed is
//! explicit the simulation does exactly that; where it is silent it does the
//! smallest plausible thing, and each module's documentation has a table of
//! *seed says / we assumed*, so a reader can tell the two apart. They never
//! invent away a hard part the seed states (a token valid for 30 seconds, no
//! idempotency key, no status look-up).
//!
//! Each simulation counts what a test needs to count (token requests, charges
//! accepted) and can be told to misbehave (refuse, fail after accepting, hold
//! its answer) through its handle. The `manifold-sandbox` binary starts them
//! with sample customers, for a host to try the connectors end to end.
//!
//! # Layout
//! - [`core_api`]: seed 002, a payment API that takes a 30-second token and
//!   queues the charge, with its authentication service.
//! - [`sdk_finance`]: seed 001, a wallet platform whose top-ups and
//!   withdrawals its operator accepts or declines, with transfer templates.
//! - [`skopa`]: seed 000, a neobank whose users' token pairs act for them
//!   and whose money-moving calls ask for a second factor first (`428`).
//! - [`joompay`]: seed 004, an open-banking API over gRPC and mutual TLS,
//!   with its OAuth consent page and token endpoint, whose transfers ask
//!   for SCA and are idempotent by `client_operation_uuid`.
//! - [`browser`]: a customer's browser going through a consent.
//! - [`amounts`]: decimal amounts as the REST simulations read them.
//! - [`serve`]: the shared plumbing — a listener served by the project's edge
//!   and JSON answers.

pub mod amounts;
pub mod browser;
pub mod core_api;
pub mod joompay;
pub mod sdk_finance;
pub mod serve;
pub mod skopa;
