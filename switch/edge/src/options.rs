//! [`EdgeOptions`]: every limit and timeout of the edge in one plain struct.
//!
//! `EdgeOptions::default()` is safe to face the internet with; a host that
//! needs other numbers sets fields (the switch will read them from its
//! configuration file). Each field says what it bounds and why its default
//! is what it is.

use std::sync::Arc;
use std::time::Duration;

/// Limits and timeouts for [`serve`](crate::serve()) and [`read_body`](crate::read_body).
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    /// How long a client has to send a complete request head (request line
    /// and headers) once it has started one, and how long a new connection
    /// has to start its first request. It also bounds the TLS handshake,
    /// separately, before that. Default 10 s: a real client sends its head
    /// in one write, so the time is only there for slow links; a slowloris
    /// client that trickles a header byte at a time is cut off after it.
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may sit between requests (no request
    /// in flight, nothing received) before the server closes it. Default
    /// 120 s: longer than the 90 s for which reqwest (the switch's
    /// `RemoteProvider`), hyper's pooled client and Go's `http.Transport`
    /// keep an idle connection, so the client always gives a connection up
    /// before the server does. A server that closes first races the client's
    /// next request on that connection, and for a `POST /transact` that race
    /// reads as "outcome unknown". A shorter idle time would not stop a
    /// flood (a client can send a request every few seconds to stay
    /// "active"); the per-address cap does that.
    pub idle_timeout: Duration,
    /// How long a handler's [`read_body`](crate::read_body) waits for the
    /// whole body, from the moment it starts reading. Default 10 s: 64 KiB
    /// arrives in far less even on a slow link; a client that trickles a
    /// body would otherwise hold a request (and its handler) open forever.
    pub body_read_timeout: Duration,
    /// The largest request body [`read_body`](crate::read_body) accepts.
    /// Default 64 KiB: a transaction envelope is a few KiB.
    pub max_body_bytes: usize,
    /// The largest request head (request line and headers) accepted; a
    /// larger one is answered 431 and the connection closed. Default 16 KiB:
    /// our clients send a handful of short headers, and hyper's own limit is
    /// its whole ~400 KiB read buffer.
    pub max_header_bytes: usize,
    /// Open connections in all. A connection over the cap is accepted and
    /// closed at once, so the listen backlog never fills. Default 4096, well
    /// under a typical file-descriptor limit, and more than the switch's
    /// clients (a few apps, each with a connection pool) need.
    pub max_connections: usize,
    /// Open connections from one client address (an IPv4 address, or an
    /// IPv6 /64: see [`client_key`](crate::client_key)). Default 256: far
    /// more than one app's connection pool uses, and low enough that one
    /// address cannot take more than a sixteenth of `max_connections`. A
    /// provider microservice, whose only client is the switch, should raise
    /// it to `max_connections`.
    pub max_connections_per_address: usize,
    /// How long graceful shutdown waits for in-flight requests before the
    /// remaining connections are dropped. Default 10 s: longer than any
    /// request should take, short enough for a deployment to wait for.
    pub shutdown_grace: Duration,
    /// Serve HTTPS with this configuration (see
    /// [`tls::server_config`](crate::tls::server_config)); `None` serves
    /// plain HTTP, for loopback and private networks behind a terminating
    /// proxy.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for EdgeOptions {
    fn default() -> Self {
        EdgeOptions {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            body_read_timeout: Duration::from_secs(10),
            max_body_bytes: 64 * 1024,
            max_header_bytes: 16 * 1024,
            max_connections: 4096,
            max_connections_per_address: 256,
            shutdown_grace: Duration::from_secs(10),
            tls: None,
        }
    }
}
