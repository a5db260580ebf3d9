//! The provider side of the switch→provider protocol over HTTP.
//!
//! [`serve_provider`] mounts any [`Provider`] as a provider microservice on
//! the shared HTTP edge ([`manifold_edge::serve()`], which owns the accept
//! loop, connection caps, timeouts, TLS and body limits): the four
//! operations, `GET /health` and `GET /stats`. Every operation must be signed
//! by the switch ([`HopVerifier`]): the signature is checked against the
//! exact body bytes before they are parsed, a replayed or stale call is
//! refused with 401 like an unsigned one, and none of them reaches the
//! provider. A lockout of addresses that keep failing (429) is off unless
//! the provider turns it on. It maps each
//! [`ProviderError`] to the fault reply [`RemoteProvider`](crate::RemoteProvider)
//! reads back, and describes bad JSON without quoting it. A body that repeats
//! a key is bad JSON here: the wire types refuse it at any depth
//! ([`crate::json`]), so the provider never acts on a value the switch did
//! not mean.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use manifold_edge::{
    json_response, read_body, serve, AuthFailureLimiter, AuthFailureLimits, Body, BodyLimits,
    EdgeOptions, Peer,
};
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tracing::Instrument;

use manifold_edge::signature::SignatureRejected;

use crate::hop::HopVerifier;
use crate::provider::{Provider, ProviderError};
use crate::request_id;
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

/// How many signed calls of each operation reached a provider microservice;
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

/// How a provider microservice faces the network: its edge, and the switch's
/// key it verifies every call with.
pub struct ProviderServer {
    pub edge: EdgeOptions,
    pub hop: HopVerifier,
    pub auth_failures: AuthFailureLimits,
}

impl ProviderServer {
    /// The provider defaults ([`provider_edge_options`], plain HTTP) around
    /// the switch's verifier, with no lockout ([`no_lockout`]).
    pub fn new(hop: HopVerifier) -> ProviderServer {
        ProviderServer {
            edge: provider_edge_options(),
            hop,
            auth_failures: no_lockout(),
        }
    }
}

/// Failed-authentication limits that never lock an address out: a
/// provider's default. Its one legitimate client is the switch, and nobody
/// guesses a 256-bit key, so a lockout would protect nothing and would let
/// anyone who shares the switch's address (a NAT, a proxy) cut the switch
/// off with a few unsigned calls.
pub fn no_lockout() -> AuthFailureLimits {
    AuthFailureLimits {
        max_failures: u32::MAX,
        ..AuthFailureLimits::default()
    }
}

/// What every request handler shares.
struct Shared {
    provider: Arc<dyn Provider>,
    counters: CallCounters,
    hop: HopVerifier,
    auth_failures: AuthFailureLimiter,
}

/// Serve `provider` as a provider microservice: `POST /transact`,
/// `/transact/validate`, `/transact/query`, `/transact/reverse`, each signed
/// by the switch, plus `GET /health` and `GET /stats`, with the limits,
/// timeouts and TLS of `server.edge`.
pub async fn serve_provider(
    listener: TcpListener,
    provider: Arc<dyn Provider>,
    server: ProviderServer,
    shutdown: impl Future<Output = ()>,
) {
    let shared = Arc::new(Shared {
        provider,
        counters: CallCounters::default(),
        hop: server.hop,
        auth_failures: AuthFailureLimiter::new(server.auth_failures),
    });
    let handler = move |request: Request<Incoming>, peer: Peer| {
        let shared = shared.clone();
        // The switch's id for the app request this call serves: the
        // provider's log lines about it carry it, and so does whatever
        // the provider sends on its behalf.
        let request_id = request
            .headers()
            .get(request_id::REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .filter(|id| request_id::is_valid(id))
            .map(str::to_owned);
        async move {
            match request_id {
                Some(id) => {
                    let span = tracing::info_span!("request", id = %id);
                    request_id::scope(id, route_provider_request(&shared, request, peer))
                        .instrument(span)
                        .await
                }
                None => route_provider_request(&shared, request, peer).await,
            }
        }
    };
    serve(listener, handler, server.edge, shutdown).await
}

async fn route_provider_request(
    shared: &Shared,
    request: Request<Incoming>,
    peer: Peer,
) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let provider = &shared.provider;
    let counters = &shared.counters;
    match (method, path.as_str()) {
        (Method::GET, "/health") => {
            json_response(StatusCode::OK, &serde_json::json!({"status": "ok"}))
        }
        (Method::GET, "/stats") => json_response(StatusCode::OK, &counters.snapshot()),
        (Method::POST, "/transact") => {
            call(shared, peer, request, &counters.transact, |body| {
                provider.transact(body)
            })
            .await
        }
        (Method::POST, "/transact/validate") => {
            call(shared, peer, request, &counters.validate, |body| {
                provider.validate(body)
            })
            .await
        }
        (Method::POST, "/transact/query") => {
            call(shared, peer, request, &counters.query, |body| {
                provider.query(body)
            })
            .await
        }
        (Method::POST, "/transact/reverse") => {
            call(shared, peer, request, &counters.reverse, |body| {
                provider.reverse(body)
            })
            .await
        }
        _ => fault_response(
            StatusCode::NOT_FOUND,
            fault::NOT_FOUND,
            format!("no such operation: {path}"),
        ),
    }
}

async fn call<Req, Fut>(
    shared: &Shared,
    peer: Peer,
    request: Request<Incoming>,
    counter: &AtomicU64,
    operation: impl FnOnce(Req) -> Fut,
) -> Response<Body>
where
    Req: DeserializeOwned,
    Fut: Future<Output = Result<crate::wire::ProviderReply, ProviderError>>,
{
    if let Err(locked) = shared.auth_failures.check(peer.address.ip()) {
        let mut response = fault_response(
            StatusCode::TOO_MANY_REQUESTS,
            fault::TOO_MANY_AUTH_FAILURES,
            locked.to_string(),
        );
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from(locked.retry_after_secs),
        );
        return response;
    }
    let limits = BodyLimits::of(&request);
    let (parts, body) = request.into_parts();
    let bytes = match read_body(body, limits).await {
        Ok(bytes) => bytes,
        Err(error) => {
            return fault_response(
                StatusCode::BAD_REQUEST,
                fault::BAD_REQUEST,
                error.to_string(),
            )
        }
    };
    // Nothing of the body is looked at before the switch's signature over
    // it is checked.
    if let Err(error) = shared.hop.verify(
        parts.method.as_str(),
        parts.uri.path(),
        &parts.headers,
        &bytes,
    ) {
        return refuse(shared, peer, &error);
    }
    // Counted once verified: `/stats` shows what the switch asked for.
    counter.fetch_add(1, Ordering::Relaxed);
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
        // It did nothing (its own store is failing, say): the switch may
        // treat the call as never made, as when the provider is busy.
        Err(ProviderError::Unreachable(message)) => {
            tracing::error!(%message, "provider refused a call it could not act on safely");
            fault_response(StatusCode::SERVICE_UNAVAILABLE, fault::BUSY, message)
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

fn refuse(shared: &Shared, peer: Peer, error: &SignatureRejected) -> Response<Body> {
    if !error.is_unauthenticated() {
        return fault_response(
            StatusCode::SERVICE_UNAVAILABLE,
            fault::BUSY,
            error.to_string(),
        );
    }
    shared.auth_failures.record_failure(peer.address.ip());
    tracing::warn!(peer = %peer.address, %error, "refused a call not signed by the switch");
    fault_response(
        StatusCode::UNAUTHORIZED,
        fault::UNAUTHENTICATED,
        error.to_string(),
    )
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
