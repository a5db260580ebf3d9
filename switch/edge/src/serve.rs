//! The accept loop: every socket the project listens on is served here.
//!
//! [`serve`] never stops accepting. Each accepted connection asks the
//! connection caps for a slot; one over a cap (all connections, or those from
//! its client address) is closed at once, so a flood of connections from one
//! address costs that address its own connections and nobody else theirs,
//! and the listen backlog never fills. (The accept loop this replaces
//! stopped accepting when its semaphore ran out, so the backlog filled and
//! nobody got in.) An admitted connection gets its own task: the TLS
//! handshake if configured, bounded by `header_read_timeout`, then hyper as
//! keep-alive HTTP/1.1 with the head and idle deadlines of
//! `watchdog`, until the client leaves, a deadline passes or the server
//! shuts down.
//!
//! Shutdown is graceful: when the `shutdown` future completes the listener
//! is closed, idle connections are closed, in-flight requests finish and
//! their connections close after them; whatever is still open after
//! `shutdown_grace` is dropped, so shutdown cannot hang.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::body::BodyLimits;
use crate::limits::{ConnectionLimits, ConnectionSlot, Refusal};
use crate::options::EdgeOptions;
use crate::watchdog::{Activity, Expiry, Timeouts, Watched};

/// The response body every handler answers with: the whole body at once
/// (our answers are small JSON documents).
pub type Body = Full<Bytes>;

/// Who is on the other end of a connection, as the handler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The client's address and port as the socket reports it. Limits count
    /// per [`client_key`](crate::client_key)`(address.ip())`.
    pub address: SocketAddr,
}

/// What the accept loop tells its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Serving,
    /// Finish what is in flight, then close.
    Draining,
    /// The grace period is over: close now.
    Abort,
}

/// Everything a connection task needs, built once per [`serve`].
struct ConnectionSettings {
    http: http1::Builder,
    timeouts: Timeouts,
    tls: Option<TlsAcceptor>,
    body_limits: BodyLimits,
}

/// Accept connections on `listener` and answer every request with `handler`
/// until `shutdown` completes; then stop accepting, let in-flight requests
/// finish for up to `options.shutdown_grace`, and return.
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    options: EdgeOptions,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let limits =
        ConnectionLimits::new(options.max_connections, options.max_connections_per_address);
    let settings = Arc::new(connection_settings(&options));
    // Every connection task holds a receiver: `closed()` is "all connections
    // are gone", and a dropped sender (this future dropped) stops them too.
    let (stop, _) = watch::channel(Stop::Serving);
    let mut refusals = Refusals::default();
    let mut accept_errors = Throttle::new(Duration::from_secs(10));
    tokio::pin!(shutdown);
    loop {
        let (stream, address) = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Running out of file descriptors is transient; back off
                    // instead of spinning, and say so now and then, not 20
                    // times a second.
                    if accept_errors.due() {
                        tracing::warn!(%error, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = match limits.try_acquire(address.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                refusals.record(refusal, address);
                // Closing at once keeps the backlog moving: the next client
                // in it may well be one we want.
                drop(stream);
                continue;
            }
        };
        tokio::spawn(connection(
            stream,
            Peer { address },
            handler.clone(),
            settings.clone(),
            stop.subscribe(),
            slot,
        ));
    }
    drop(listener);

    let _ = stop.send(Stop::Draining);
    if tokio::time::timeout(options.shutdown_grace, stop.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = stop.receiver_count(),
            "in-flight requests did not finish within the shutdown grace period; dropping them"
        );
        let _ = stop.send(Stop::Abort);
        // Each task drops its connection as soon as it sees `Abort`; wait
        // for that briefly so the sockets are closed when `serve` returns.
        let _ = tokio::time::timeout(Duration::from_secs(1), stop.closed()).await;
    }
}

fn connection_settings(options: &EdgeOptions) -> ConnectionSettings {
    let timeouts = Timeouts {
        header_read: options.header_read_timeout,
        idle: options.idle_timeout,
    };
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .keep_alive(true)
        // hyper's header timer also runs while a connection is idle (see
        // `watchdog`), so it is set to the longest span our own deadlines
        // allow (idle, then a head): a backstop that never fires first.
        .header_read_timeout(timeouts.idle.checked_add(timeouts.header_read))
        .max_header_size(options.max_header_bytes)
        // hyper's read buffer grows to ~400 KiB by default; with thousands
        // of connections that is gigabytes. Twice the largest head is
        // enough to parse one and read a body in reasonable chunks.
        .max_buf_size(options.max_header_bytes.saturating_mul(2).max(8 * 1024));
    ConnectionSettings {
        http,
        timeouts,
        tls: options.tls.clone().map(TlsAcceptor::from),
        body_limits: BodyLimits::from(options),
    }
}

/// One admitted connection, from TLS (if any) to close. `_slot` is its place
/// under the connection caps, given back when this task ends, however it ends.
async fn connection<H, F>(
    stream: TcpStream,
    peer: Peer,
    handler: H,
    settings: Arc<ConnectionSettings>,
    mut stop: watch::Receiver<Stop>,
    _slot: ConnectionSlot,
) where
    H: Fn(Request<Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = &settings.tls else {
        return drive(stream, peer, handler, &settings, stop).await;
    };
    // The handshake has the head's deadline: a client that connects and
    // sends no ClientHello (or sends it a byte at a time) holds a slot no
    // longer than one that sends no request.
    let handshake = tokio::time::timeout(settings.timeouts.header_read, acceptor.accept(stream));
    let tls_stream = tokio::select! {
        done = handshake => match done {
            Ok(Ok(tls_stream)) => tls_stream,
            Ok(Err(error)) => {
                tracing::debug!(peer = %peer.address, %error, "TLS handshake failed");
                return;
            }
            Err(_elapsed) => {
                tracing::debug!(peer = %peer.address, "TLS handshake not completed in time");
                return;
            }
        },
        // A connection still shaking hands has nothing in flight.
        _ = stop.wait_for(|stop| *stop != Stop::Serving) => return,
    };
    drive(tls_stream, peer, handler, &settings, stop).await
}

/// Serve HTTP/1.1 on `stream` until the client leaves, a deadline passes or
/// the server stops.
async fn drive<S, H, F>(
    stream: S,
    peer: Peer,
    handler: H,
    settings: &ConnectionSettings,
    mut stop: watch::Receiver<Stop>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let activity = Activity::new();
    let io = TokioIo::new(Watched::new(stream, activity.clone()));
    let service = {
        let activity = activity.clone();
        let body_limits = settings.body_limits;
        service_fn(move |mut request: Request<Incoming>| {
            let in_flight = activity.request_started();
            request.extensions_mut().insert(body_limits);
            let response = handler(request, peer);
            async move {
                let response = response.await;
                drop(in_flight);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let connection = settings.http.serve_connection(io, service);
    tokio::pin!(connection);
    // A connection that finished its TLS handshake after shutdown began
    // has missed the news.
    match *stop.borrow_and_update() {
        Stop::Serving => {}
        Stop::Draining => connection.as_mut().graceful_shutdown(),
        Stop::Abort => return,
    }

    let timeouts = settings.timeouts;
    // Set once the watchdog has asked the connection to close: a connection
    // that has not closed `header_read` later is dropped.
    let mut asked_to_close: Option<Instant> = None;
    loop {
        let due = match asked_to_close {
            None => activity.due(timeouts),
            Some(_) => None,
        };
        let close_by = asked_to_close.and_then(|asked| asked.checked_add(timeouts.header_read));
        let wake = match (due.map(|(at, _)| at), close_by) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            biased;
            ended = connection.as_mut() => {
                if let Err(error) = ended {
                    tracing::debug!(peer = %peer.address, %error, "connection ended with an error");
                }
                return;
            }
            changed = stop.changed() => match changed.map(|()| *stop.borrow_and_update()) {
                Ok(Stop::Serving) => {}
                // hyper closes an idle connection at once and one with a
                // request in flight after its response.
                Ok(Stop::Draining) => connection.as_mut().graceful_shutdown(),
                Ok(Stop::Abort) | Err(_) => return,
            },
            _ = sleep_until(wake) => {
                let now = Instant::now();
                if close_by.is_some_and(|by| now >= by) {
                    tracing::debug!(peer = %peer.address, "connection did not close when asked; dropping it");
                    return;
                }
                match due {
                    Some((at, Expiry::Head)) if now >= at => {
                        tracing::debug!(peer = %peer.address, "request head not received in time; dropping the connection");
                        return;
                    }
                    Some((at, Expiry::Quiet)) if now >= at => {
                        tracing::debug!(peer = %peer.address, "connection quiet too long; closing it");
                        connection.as_mut().graceful_shutdown();
                        asked_to_close = Some(now);
                    }
                    _ => {}
                }
            }
            _ = activity.changed() => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Refused connections: each at debug, and a count at warn at most once a
/// minute, so a flood shows in the log without flooding it.
#[derive(Debug)]
struct Refusals {
    since_last_report: u64,
    report: Throttle,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals {
            since_last_report: 0,
            report: Throttle::new(Duration::from_secs(60)),
        }
    }
}

impl Refusals {
    fn record(&mut self, refusal: Refusal, address: SocketAddr) {
        self.since_last_report += 1;
        let reason = match refusal {
            Refusal::Full => "max_connections",
            Refusal::AddressFull => "max_connections_per_address",
        };
        tracing::debug!(peer = %address, cap = reason, "connection refused: over the cap");
        if self.report.due() {
            tracing::warn!(
                refused = self.since_last_report,
                latest_cap = reason,
                "connections refused over the connection caps since the last report"
            );
            self.since_last_report = 0;
        }
    }
}

/// "At most once per `interval`", for logging.
#[derive(Debug)]
struct Throttle {
    interval: Duration,
    last: Option<Instant>,
}

impl Throttle {
    fn new(interval: Duration) -> Self {
        Throttle {
            interval,
            last: None,
        }
    }

    fn due(&mut self) -> bool {
        let now = Instant::now();
        let due = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if due {
            self.last = Some(now);
        }
        due
    }
}
