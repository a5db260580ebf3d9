//! Per-connection deadlines for the request head and for keep-alive idle.
//!
//! hyper 1.12 has one timer for this, `header_read_timeout`, and it cannot
//! tell the two apart: it starts in `Conn::poll_read_head`, which hyper also
//! enters as soon as a keep-alive connection goes idle after a response
//! (`State::idle` sets `notify_read` precisely so the timer starts). So
//! hyper's timer measures "idle, then the next head" as one span, and a
//! header timeout of 10 s would also close every keep-alive connection
//! after 10 s of quiet. We want a short deadline for a head that has
//! started and a long one for a quiet connection, so the edge keeps its own
//! account of each connection:
//!
//! - [`Watched`] wraps the socket hyper reads and notes when bytes arrive;
//! - the service notes when a request reaches the handler and when the
//!   handler has answered ([`Activity::request_started`]);
//! - [`Activity::due`] turns that into the next deadline, and the connection
//!   task in [`serve`](crate::serve()) sleeps until it:
//!
//! | state | deadline | on expiry |
//! |---|---|---|
//! | a request is with its handler | none (the handler's [`read_body`](crate::read_body) has its own) | — |
//! | bytes of a new head arrived at `t`, no request yet | `t + header_read_timeout` | the connection is dropped |
//! | new connection, nothing received yet | accepted (or TLS done) `+ header_read_timeout` | graceful close |
//! | quiet since the last answer at `t` | `t + idle_timeout` | graceful close |
//!
//! A graceful close (hyper's `graceful_shutdown`) closes an idle hyper
//! connection at once and lets one that is still writing finish; a
//! connection that has not closed `header_read_timeout` after being asked
//! (a client that does not read its response) is dropped. hyper's own
//! `header_read_timeout` stays set, to `idle_timeout + header_read_timeout`,
//! as a backstop that this account always beats.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The two timeouts the account needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) header_read: Duration,
    pub(crate) idle: Duration,
}

/// What happens when a deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// A head started and did not complete in time: there is nothing to
    /// answer and nothing to finish, so the connection is dropped.
    Head,
    /// The connection has been quiet too long: close it gracefully.
    Quiet,
}

#[derive(Debug)]
struct State {
    requests_in_flight: usize,
    /// When the connection last became quiet: accepted, or its last request
    /// answered.
    quiet_since: Instant,
    /// When the first bytes of a new request head arrived, if they have
    /// while the connection was quiet.
    head_started: Option<Instant>,
    /// Whether a request has been answered here: before that, "quiet" is a
    /// new connection that has not sent anything, which gets only
    /// `header_read_timeout`.
    answered_one: bool,
}

/// What one connection is doing, as far as its deadlines care.
#[derive(Debug)]
pub(crate) struct Activity {
    state: Mutex<State>,
    /// Woken when a deadline may have moved earlier (or appeared).
    changed: Notify,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Activity {
            state: Mutex::new(State {
                requests_in_flight: 0,
                quiet_since: Instant::now(),
                head_started: None,
                answered_one: false,
            }),
            changed: Notify::new(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update is a few plain assignments, so a poisoned lock still
        // holds a usable state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes arrived from the client.
    fn bytes_received(&self) {
        let mut state = self.state();
        // Bytes while a handler runs are its body (or a pipelined request,
        // which hyper parses from its buffer as soon as the handler is done).
        if state.requests_in_flight == 0 && state.head_started.is_none() {
            state.head_started = Some(Instant::now());
            drop(state);
            self.changed.notify_one();
        }
    }

    /// hyper has parsed a request head and is calling the handler; the
    /// returned guard marks the handler's answer when it is dropped (the
    /// handler's future finished, or hyper dropped it).
    pub(crate) fn request_started(self: &Arc<Self>) -> RequestInFlight {
        let mut state = self.state();
        state.requests_in_flight += 1;
        state.head_started = None;
        drop(state);
        self.changed.notify_one();
        RequestInFlight {
            activity: self.clone(),
        }
    }

    /// Completes when a deadline may have moved; cheap to call in a loop
    /// (`Notify` keeps one wake-up for a waiter that was not yet waiting).
    pub(crate) async fn changed(&self) {
        self.changed.notified().await
    }

    /// The next deadline and what it means, or `None` while a request is
    /// with its handler.
    pub(crate) fn due(&self, timeouts: Timeouts) -> Option<(Instant, Expiry)> {
        let state = self.state();
        if state.requests_in_flight > 0 {
            return None;
        }
        let (at, expiry) = match state.head_started {
            Some(started) => (started.checked_add(timeouts.header_read), Expiry::Head),
            None if state.answered_one => {
                (state.quiet_since.checked_add(timeouts.idle), Expiry::Quiet)
            }
            None => (
                state.quiet_since.checked_add(timeouts.header_read),
                Expiry::Quiet,
            ),
        };
        // A timeout too long to add to the clock is no timeout.
        at.map(|at| (at, expiry))
    }
}

/// A request between hyper calling the handler and the handler answering.
#[derive(Debug)]
pub(crate) struct RequestInFlight {
    activity: Arc<Activity>,
}

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        let mut state = self.activity.state();
        state.requests_in_flight = state.requests_in_flight.saturating_sub(1);
        if state.requests_in_flight == 0 {
            state.quiet_since = Instant::now();
            state.head_started = None;
            state.answered_one = true;
        }
        drop(state);
        self.activity.changed.notify_one();
    }
}

/// The socket hyper reads, reporting each arrival of bytes to [`Activity`].
#[derive(Debug)]
pub(crate) struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Watched { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_received();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        header_read: Duration::from_secs(10),
        idle: Duration::from_secs(120),
    };

    #[tokio::test(start_paused = true)]
    async fn each_state_has_its_deadline() {
        let activity = Activity::new();
        let accepted = Instant::now();
        // A new connection gets the header timeout to start its first request.
        assert_eq!(
            activity.due(TIMEOUTS),
            Some((accepted + TIMEOUTS.header_read, Expiry::Quiet))
        );

        tokio::time::advance(Duration::from_secs(3)).await;
        activity.bytes_received();
        let head = Instant::now();
        assert_eq!(
            activity.due(TIMEOUTS),
            Some((head + TIMEOUTS.header_read, Expiry::Head))
        );
        // More bytes of the same head do not extend it.
        tokio::time::advance(Duration::from_secs(1)).await;
        activity.bytes_received();
        assert_eq!(
            activity.due(TIMEOUTS),
            Some((head + TIMEOUTS.header_read, Expiry::Head))
        );

        let request = activity.request_started();
        // Body bytes while the handler runs start no head.
        activity.bytes_received();
        assert_eq!(activity.due(TIMEOUTS), None);

        tokio::time::advance(Duration::from_secs(30)).await;
        drop(request);
        let answered = Instant::now();
        // Keep-alive idle gets the idle timeout, not the header timeout.
        assert_eq!(
            activity.due(TIMEOUTS),
            Some((answered + TIMEOUTS.idle, Expiry::Quiet))
        );

        tokio::time::advance(Duration::from_secs(100)).await;
        activity.bytes_received();
        assert_eq!(
            activity.due(TIMEOUTS),
            Some((Instant::now() + TIMEOUTS.header_read, Expiry::Head))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_that_moves_a_deadline_wakes_the_watchdog() {
        let activity = Activity::new();
        activity.bytes_received();
        // The wake-up is kept for a watchdog that was not waiting yet.
        tokio::time::timeout(Duration::from_secs(1), activity.changed())
            .await
            .expect("woken");
    }
}
