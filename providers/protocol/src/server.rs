//! HTTP serving shared by the switch and by provider microservices.
//!
//! [`serve`] is the accept loop: keep-alive HTTP/1.1 on hyper, a semaphore
//! bounding open connections, and a graceful shutdown that stops accepting,
//! lets in-flight requests finish, and gives up after a deadline so shutdown
//! cannot hang. [`serve_provider`] mounts a [`Provider`] on it as the provider
//! side of the switch→provider protocol.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::provider::{Provider, ProviderError};
use crate::wire::{fault, ProviderFault};

/// Request bodies larger than this are refused before they are parsed.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long a graceful shutdown waits for in-flight requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub type Body = Full<Bytes>;

/// Limits for [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    pub max_connections: usize,
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_connections: 4096,
            shutdown_grace: SHUTDOWN_GRACE,
        }
    }
}

/// Accept connections on `listener` and answer every request with `handler`
/// until `shutdown` completes.
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(options.max_connections));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Running out of file descriptors is transient; back off
                    // instead of spinning or dying.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |request| {
            let response = handler(request);
            async move { Ok::<_, Infallible>(response.await) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(options.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within the shutdown grace period");
    }
}

/// Completes on SIGINT or SIGTERM: what binaries pass to [`serve`].
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            }
            Err(error) => {
                tracing::warn!(%error, "SIGTERM cannot be handled; stopping on SIGINT only");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Why a request body could not be read as JSON.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("the request body could not be read: {0}")]
    Unreadable(String),
}

/// Collect a request body, refusing anything over [`MAX_BODY_BYTES`].
pub async fn read_body(body: Incoming) -> Result<Bytes, BodyError> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) => {
            if error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(BodyError::TooLarge)
            } else {
                Err(BodyError::Unreadable(error.to_string()))
            }
        }
    }
}

/// A JSON response with the given status.
pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    match serde_json::to_vec(body) {
        Ok(bytes) => Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .unwrap_or_else(|_| internal_error_response()),
        Err(_) => internal_error_response(),
    }
}

fn internal_error_response() -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(
        br#"{"error":"internal","message":"the response could not be encoded"}"#,
    )));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}

/// How many times each operation was called on a provider microservice;
/// served at `GET /stats` so operators (and tests) can see what reached it.
#[derive(Debug, Default)]
pub struct CallCounters {
    pub transact: AtomicU64,
    pub validate: AtomicU64,
    pub query: AtomicU64,
    pub reverse: AtomicU64,
}

impl CallCounters {
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "transact": self.transact.load(Ordering::Relaxed),
            "validate": self.validate.load(Ordering::Relaxed),
            "query": self.query.load(Ordering::Relaxed),
            "reverse": self.reverse.load(Ordering::Relaxed),
        })
    }
}

/// Serve `provider` as a provider microservice: `POST /transact`,
/// `/transact/validate`, `/transact/query`, `/transact/reverse`, plus
/// `GET /health` and `GET /stats`.
pub async fn serve_provider(
    listener: TcpListener,
    provider: Arc<dyn Provider>,
    shutdown: impl Future<Output = ()>,
) {
    let counters = Arc::new(CallCounters::default());
    let handler = move |request: Request<Incoming>| {
        let provider = provider.clone();
        let counters = counters.clone();
        async move { route_provider_request(provider, &counters, request).await }
    };
    serve(listener, handler, ServeOptions::default(), shutdown).await
}

async fn route_provider_request(
    provider: Arc<dyn Provider>,
    counters: &CallCounters,
    request: Request<Incoming>,
) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    match (method, path.as_str()) {
        (Method::GET, "/health") => {
            json_response(StatusCode::OK, &serde_json::json!({"status": "ok"}))
        }
        (Method::GET, "/stats") => json_response(StatusCode::OK, &counters.snapshot()),
        (Method::POST, "/transact") => {
            counters.transact.fetch_add(1, Ordering::Relaxed);
            call(request, |body| provider.transact(body)).await
        }
        (Method::POST, "/transact/validate") => {
            counters.validate.fetch_add(1, Ordering::Relaxed);
            call(request, |body| provider.validate(body)).await
        }
        (Method::POST, "/transact/query") => {
            counters.query.fetch_add(1, Ordering::Relaxed);
            call(request, |body| provider.query(body)).await
        }
        (Method::POST, "/transact/reverse") => {
            counters.reverse.fetch_add(1, Ordering::Relaxed);
            call(request, |body| provider.reverse(body)).await
        }
        _ => fault_response(
            StatusCode::NOT_FOUND,
            fault::NOT_FOUND,
            format!("no such operation: {path}"),
        ),
    }
}

async fn call<Req, Fut>(
    request: Request<Incoming>,
    operation: impl FnOnce(Req) -> Fut,
) -> Response<Body>
where
    Req: DeserializeOwned,
    Fut: Future<Output = Result<crate::wire::ProviderReply, ProviderError>>,
{
    let bytes = match read_body(request.into_body()).await {
        Ok(bytes) => bytes,
        Err(error) => {
            return fault_response(
                StatusCode::BAD_REQUEST,
                fault::BAD_REQUEST,
                error.to_string(),
            )
        }
    };
    let parsed: Req = match serde_json::from_slice(&bytes) {
        Ok(parsed) => parsed,
        Err(error) => {
            return fault_response(
                StatusCode::BAD_REQUEST,
                fault::BAD_REQUEST,
                describe_json_error(&error),
            );
        }
    };
    match operation(parsed).await {
        Ok(reply) => json_response(StatusCode::OK, &reply),
        Err(ProviderError::UnknownTransaction) => fault_response(
            StatusCode::NOT_FOUND,
            fault::UNKNOWN_TRANSACTION,
            ProviderError::UnknownTransaction.to_string(),
        ),
        Err(ProviderError::Rejected(message)) => {
            fault_response(StatusCode::BAD_REQUEST, fault::BAD_REQUEST, message)
        }
        Err(error) => {
            tracing::error!(%error, "provider operation failed");
            fault_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                fault::INTERNAL,
                error.to_string(),
            )
        }
    }
}

fn fault_response(status: StatusCode, error: &str, message: String) -> Response<Body> {
    json_response(
        status,
        &ProviderFault {
            error: error.to_owned(),
            message,
        },
    )
}

/// Describe a JSON error without quoting the input: serde's "invalid type" and
/// "invalid value" messages embed the offending value, which may be an account
/// number or an OTP.
pub fn describe_json_error(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let quotes_input = message.starts_with("invalid type") || message.starts_with("invalid value");
    if quotes_input {
        let expected = message
            .split_once(", expected ")
            .map(|(_, rest)| rest.rsplit_once(" at line").map_or(rest, |(e, _)| e))
            .unwrap_or("another type");
        format!(
            "unexpected value at line {} column {} (expected {expected})",
            error.line(),
            error.column()
        )
    } else {
        message
    }
}

#[cfg(test)]
mod tests {
    use super::describe_json_error;

    #[test]
    fn json_errors_never_quote_the_input() {
        let error = serde_json::from_str::<u64>("\"0123456789\"").unwrap_err();
        let described = describe_json_error(&error);
        assert!(!described.contains("0123456789"), "{described}");
        assert!(described.contains("expected u64"), "{described}");

        let error =
            serde_json::from_str::<std::collections::HashMap<String, u8>>("{\"a\": 1").unwrap_err();
        assert!(describe_json_error(&error).contains("EOF"));
    }
}
