//! The HTTP edge that the switch and every provider microservice share.
//!
//! Everything between a listening socket and a request handler lives here:
//! the accept loop, the caps on open connections (in all and per client
//! address), the timeouts that stop a silent or slow client from holding a
//! connection (TLS handshake, request head, keep-alive idle, request body),
//! TLS, reading a body under a size limit and a deadline, checking a signed
//! request against its body, and graceful shutdown. It knows nothing of payments, envelopes or providers: a handler
//! gets a `Request` and the client's [`Peer`] address and answers a
//! `Response<`[`Body`]`>`; what the answer means is the caller's business.
//! Keeping the edge in one crate is what lets every listening socket get the
//! same protection: a limit added here protects the switch and every
//! provider at once.
//!
//! # Layout
//! - [`options`]: [`EdgeOptions`], every limit and timeout, with safe defaults.
//! - [`serve`](mod@serve): the accept loop; admits or refuses each connection and serves
//!   it with hyper as keep-alive HTTP/1.1 (over TLS if configured).
//! - `limits`: the connection caps, in all and per client address, as slots
//!   released on drop.
//! - `watchdog`: per-connection deadlines for the request head and for
//!   keep-alive idle, which hyper alone cannot tell apart.
//! - [`body`]: [`read_body`], a request body under a size limit and a deadline.
//! - [`tls`]: [`tls::server_config`], a rustls server configuration (ring)
//!   from PEM files.
//! - [`auth_limit`]: [`AuthFailureLimiter`], lockout of client addresses that
//!   keep failing authentication.
//! - [`signature`]: [`signature::SignatureCheck`], how every receiver checks
//!   an RFC 9421 signed request before parsing its body (one clock, one
//!   window, and a [`signature::ReplayGuard`] for random nonces).
//! - [`response`]: [`json_response`], the one way handlers build JSON answers.
//! - [`shutdown`]: [`shutdown_signal`], SIGINT or SIGTERM, for binaries.
//! - [`private_files`]: data directories and files only this user can read.
//! - [`logs`]: [`init_logs`], where and how every server binary logs (text
//!   on a terminal, JSON lines otherwise).

pub mod auth_limit;
pub mod body;
mod limits;
pub mod logs;
pub mod options;
pub mod private_files;
pub mod response;
pub mod serve;
pub mod shutdown;
pub mod signature;
pub mod tls;
mod watchdog;

pub use auth_limit::{AuthFailureLimiter, AuthFailureLimits, Locked};
pub use body::{read_body, read_request_body, BodyError, BodyLimits};
pub use limits::client_key;
pub use logs::init_logs;
pub use options::EdgeOptions;
pub use response::json_response;
pub use serve::{serve, Body, Peer};
pub use shutdown::shutdown_signal;
pub use tls::TlsError;
