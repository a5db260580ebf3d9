//! Reading a request body under a size limit and a deadline.
//!
//! hyper hands a handler the body as a stream; a handler that collects it
//! without limits can be made to buffer any amount, or to wait forever for a
//! client that trickles it. [`read_body`] refuses a body over `max_bytes`
//! (before reading it, when `Content-Length` already says so) and gives up
//! when the whole body has not arrived within `deadline`.
//!
//! [`serve`](crate::serve()) puts the [`BodyLimits`] of its [`EdgeOptions`]
//! into every request's extensions, so a handler reads with the server's
//! configured limits through [`read_request_body`] without being handed them.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Body as _, Incoming};

use crate::options::EdgeOptions;

/// How much of a body [`read_body`] accepts, and how long it waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// The largest body accepted, in bytes.
    pub max_bytes: usize,
    /// How long the whole body may take to arrive, from the start of reading.
    pub deadline: Duration,
}

impl BodyLimits {
    /// The limits `serve` attached to `request`, or the defaults for a
    /// request that did not come through `serve` (a test's hand-made one).
    pub fn of<B>(request: &Request<B>) -> BodyLimits {
        request
            .extensions()
            .get::<BodyLimits>()
            .copied()
            .unwrap_or_default()
    }
}

impl From<&EdgeOptions> for BodyLimits {
    fn from(options: &EdgeOptions) -> Self {
        BodyLimits {
            max_bytes: options.max_body_bytes,
            deadline: options.body_read_timeout,
        }
    }
}

impl Default for BodyLimits {
    fn default() -> Self {
        BodyLimits::from(&EdgeOptions::default())
    }
}

/// Why a request body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the request body did not arrive in time")]
    TimedOut,
    #[error("the request body could not be read: {0}")]
    Unreadable(String),
}

/// Collect `body`, refusing one over `limits.max_bytes` and giving up after
/// `limits.deadline`.
pub async fn read_body(body: Incoming, limits: BodyLimits) -> Result<Bytes, BodyError> {
    let too_large = BodyError::TooLarge {
        limit: limits.max_bytes,
    };
    // A declared `Content-Length` over the limit is refused unread.
    if body.size_hint().lower() > limits.max_bytes as u64 {
        return Err(too_large);
    }
    let collect = Limited::new(body, limits.max_bytes).collect();
    match tokio::time::timeout(limits.deadline, collect).await {
        Err(_elapsed) => Err(BodyError::TimedOut),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => Err(too_large),
        // hyper's messages name what failed on the connection, never the
        // bytes that were received.
        Ok(Err(error)) => Err(BodyError::Unreadable(error.to_string())),
    }
}

/// [`read_body`] with the limits `serve` attached to `request` (see
/// [`BodyLimits::of`]).
pub async fn read_request_body(request: Request<Incoming>) -> Result<Bytes, BodyError> {
    let limits = BodyLimits::of(&request);
    read_body(request.into_body(), limits).await
}
