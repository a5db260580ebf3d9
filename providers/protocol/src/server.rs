//! The provider side of the switch→provider protocol over HTTP.
//!
//! [`serve_provider`] mounts any [`Provider`] as a provider microservice on
//! the shared HTTP edge ([`manifold_edge::serve`], which owns the accept
//! loop, connection caps, timeouts, TLS and body limits): the four
//! operations, `GET /health` and `GET /stats`. It maps each
//! [`ProviderError`] to the fault reply [`RemoteProvider`](crate::RemoteProvider)
//! reads back, and describes bad JSON without quoting it.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use manifold_edge::{json_response, read_request_body, serve, Body, EdgeOptions, Peer};
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;

use crate::provider::{Provider, ProviderError};
use crate::wire::{fault, ProviderFault};

/// The edge options a provider microservice starts from: the defaults,
/// except that one client address may hold every connection. A provider's
/// client is the switch, whose connection pool comes from one address;
/// refusing it a connection would fail a call whose outcome the switch then
/// cannot know. Keep a provider off the public network (or behind TLS) and
/// let the switch face the internet.
pub fn provider_edge_options() -> EdgeOptions {
    let defaults = EdgeOptions::default();
    EdgeOptions {
        max_connections_per_address: defaults.max_connections,
        ..defaults
    }
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
/// `GET /health` and `GET /stats`, with the limits, timeouts and TLS in
/// `options` (start from [`provider_edge_options`]).
pub async fn serve_provider(
    listener: TcpListener,
    provider: Arc<dyn Provider>,
    options: EdgeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let counters = Arc::new(CallCounters::default());
    let handler = move |request: Request<Incoming>, _peer: Peer| {
        let provider = provider.clone();
        let counters = counters.clone();
        async move { route_provider_request(provider, &counters, request).await }
    };
    serve(listener, handler, options, shutdown).await
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
    let bytes = match read_request_body(request).await {
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
