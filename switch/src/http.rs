//! The HTTP edge of the switch.
//!
//! It routes the paths, authenticates the app, reads the body under a
//! size limit, hands the bytes to the [`Engine`], meters the call, and is the
//! only place where a [`SwitchError`] becomes an HTTP status and a `Failed`
//! envelope with `data.error` and `data.errors`. It also serves the
//! notification services (`/notify/sms`, `/notify/email`) to provider
//! microservices, whose [`NotifyServiceError`]s are mapped here in the same way.
//!
//! A failure inside the switch (its store, a task that panicked, a
//! notification channel) is described by text about the switch's insides.
//! That text goes to the log, once, with a fresh [`ErrorId`]; the answer
//! says what the caller can do and carries the id (in the message,
//! `data.error_id` and the `x-manifold-error-id` header), so the host can
//! find the detail the caller reports.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use manifold_edge::signature::SignatureCheck;
use manifold_edge::{read_body, AuthFailureLimiter, Body, BodyError, BodyLimits, Peer};
use manifold_provider::notify::{mask_destination, Channel};
use manifold_provider::{ErrorId, NotifyError, Status};

use crate::apps::{App, Apps};
use crate::engine::{now_ms, Answer, Engine};
use crate::envelope::{self, ResponseData, ResponseEnvelope};
use crate::error::{FieldError, SwitchError};
use crate::metrics::Metrics;
use crate::notify::{NotifyService, NotifyServiceError};
use crate::signed::{SpentSignatures, VerifiedCall};
use crate::storage::Storage;
use crate::store::{MeteredCall, Operation, StoreError};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Everything a request handler needs; shared by all connections.
pub struct SwitchState {
    pub apps: Apps,
    /// The engine and store of the current storage generation.
    pub storage: Arc<Storage>,
    /// `/notify/*`: provider keys and the switch's notifier (its `Dispatcher`).
    pub notify: NotifyService,
    /// Failed authentications per client address (`[server]`'s limits).
    pub auth_failures: AuthFailureLimiter,
    /// How app signatures are checked (the window around our clock).
    pub signatures: SignatureCheck,
    /// Signed calls that ended with nothing done, refused if sent again.
    pub spent_signatures: Arc<SpentSignatures>,
    /// The engine's work for each call, run apart from its connection.
    pub engine_tasks: TaskTracker,
    /// What `/metrics` on the admin listener reports.
    pub metrics: Metrics,
    /// `[billing]`, replaced by a reload ([`SwitchState::fees`] reads it).
    pub fees: std::sync::RwLock<Arc<manifold_billing::FeeSchedule>>,
}

impl SwitchState {
    /// The fee schedule in force now.
    pub fn fees(&self) -> Arc<manifold_billing::FeeSchedule> {
        self.fees
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// `(HTTP status, data.error, field errors)` for every error: the one mapping.
fn classify(error: &SwitchError) -> (StatusCode, &'static str, Option<Vec<FieldError>>) {
    use SwitchError::*;
    let field = |name: &str, message: String| Some(vec![FieldError::new(name, message)]);
    match error {
        MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json", None),
        BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", None),
        BodyTimedOut => (StatusCode::REQUEST_TIMEOUT, "body_timed_out", None),
        InvalidFields(errors) => (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some(errors.clone()),
        ),
        Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated", None),
        TooManyAuthFailures { .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_auth_failures",
            None,
        ),
        LimitExceeded(limit) => (StatusCode::TOO_MANY_REQUESTS, limit.code, None),
        SignatureRequired => (StatusCode::UNAUTHORIZED, "signature_required", None),
        BadSignature(_) | SignatureSpent => (StatusCode::UNAUTHORIZED, "bad_signature", None),
        SignatureNonceMismatch => (
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            field("request_ref", error.to_string()),
        ),
        UnknownProvider(_) => (
            StatusCode::BAD_REQUEST,
            "unknown_provider",
            field("auth.auth_provider", error.to_string()),
        ),
        ProviderDoesNotServe { .. } => (
            StatusCode::BAD_REQUEST,
            "provider_does_not_serve",
            field("auth.auth_provider", error.to_string()),
        ),
        ServiceNotAllowed(_) => (
            StatusCode::FORBIDDEN,
            "service_not_allowed",
            field("request_type", error.to_string()),
        ),
        ProviderNotAllowed { .. } => (
            StatusCode::FORBIDDEN,
            "provider_not_allowed",
            field("auth.auth_provider", error.to_string()),
        ),
        SecureRejected(crypto) => {
            let name = match crypto.field() {
                Some(inner) => format!("auth.secure.{inner}"),
                None => "auth.secure".to_owned(),
            };
            (
                StatusCode::BAD_REQUEST,
                "secure_rejected",
                field(&name, crypto.to_string()),
            )
        }
        AmountOverLimit { .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "amount_over_limit",
            field("transaction.amount", error.to_string()),
        ),
        RequestRefConflict(_) => (
            StatusCode::CONFLICT,
            "request_ref_conflict",
            field("request_ref", error.to_string()),
        ),
        DuplicateTransactionRef(_) => (
            StatusCode::CONFLICT,
            "duplicate_transaction_ref",
            field("transaction.transaction_ref", error.to_string()),
        ),
        TransactionNotFound(_) => (
            StatusCode::NOT_FOUND,
            "transaction_not_found",
            field("transaction.transaction_ref", error.to_string()),
        ),
        RequestInProgress(_) => (
            StatusCode::CONFLICT,
            "request_in_progress",
            field("transaction.transaction_ref", error.to_string()),
        ),
        TransactionMismatch { field: name, .. } => (
            StatusCode::BAD_REQUEST,
            "transaction_mismatch",
            field(name, error.to_string()),
        ),
        NotAwaitingValidation(_) => (StatusCode::CONFLICT, "not_awaiting_validation", None),
        NotReversible(_) => (StatusCode::CONFLICT, "not_reversible", None),
        AnswerDropped { .. } => (StatusCode::GONE, "answer_dropped", None),
        ProviderUnavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "provider_unavailable",
            None,
        ),
        ProviderRejected(_) | ProviderRefusedSwitch(_) => {
            (StatusCode::BAD_GATEWAY, "provider_rejected", None)
        }
        NoSuchEndpoint(_) => (StatusCode::NOT_FOUND, "no_such_endpoint", None),
        MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None),
        StorageFull => (StatusCode::SERVICE_UNAVAILABLE, "storage_full", None),
        StorageUnavailable | Store(StoreError::Database(_) | StoreError::NotDurable(_)) => {
            (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", None)
        }
        Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage_failure", None),
        Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error", None),
    }
}

/// What the app is told instead of `error`'s own text when that text
/// describes the switch's insides (a store's message, a panic): what it can
/// do. `None` for every error whose text is written for the app — the 502 and
/// 503 answers about a provider among them, which name only the provider the
/// app chose and never carry the provider's own error text.
fn withheld(error: &SwitchError) -> Option<String> {
    match error {
        SwitchError::Store(StoreError::Database(_) | StoreError::NotDurable(_)) => {
            Some(SwitchError::StorageUnavailable.to_string())
        }
        SwitchError::Store(_) => Some(
            "the switch could not read a record it keeps for this call, so the call's outcome is not known; query it later, and give the host the error id if this persists"
                .into(),
        ),
        SwitchError::Internal(_) => Some(
            "the switch failed internally while handling the call; its outcome is unknown, so query it"
                .into(),
        ),
        _ => None,
    }
}

/// The same mapping for the notification services. A destination the
/// channel itself refused is the caller's field error; any other failure of
/// the channel is the gateway's, 502.
fn classify_notify(
    error: &NotifyServiceError,
) -> (StatusCode, &'static str, Option<Vec<FieldError>>) {
    use NotifyServiceError::*;
    match error {
        Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated", None),
        TooManyAuthFailures { .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_auth_failures",
            None,
        ),
        Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy", None),
        HourlyLimit { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", None),
        BodyTimedOut => (StatusCode::REQUEST_TIMEOUT, "body_timed_out", None),
        MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None),
        BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", None),
        MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json", None),
        InvalidFields(errors) => (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some(errors.clone()),
        ),
        NotificationFailed(NotifyError::InvalidDestination { reason, .. }) => (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some(vec![FieldError::new("to", reason.clone())]),
        ),
        NotificationFailed(_) => (StatusCode::BAD_GATEWAY, "notification_failed", None),
    }
}

/// As [`withheld`], for the notification services: a channel's failure is
/// told by its kind (the documented "which"), and its reason — a library's
/// text, an I/O error of the outbox, the gateway's status — stays in the log.
fn withheld_notify(error: &NotifyServiceError) -> Option<String> {
    let NotifyServiceError::NotificationFailed(failure) = error else {
        return None;
    };
    match failure {
        // The caller's own field error, answered 400 with its rule.
        NotifyError::InvalidDestination { .. } => None,
        NotifyError::Undeliverable { channel, to, .. } => Some(format!(
            "the switch could not deliver the {channel} message to {}: its channel failed or did not answer in time",
            mask_destination(*channel, to)
        )),
        NotifyError::Refused { channel, to, .. }
        // The switch's own channels have no limits of their own; a chained
        // switch's would be its channel refusing.
        | NotifyError::RateLimited { channel, to, .. } => Some(format!(
            "the switch's {channel} channel refused the message to {}",
            mask_destination(*channel, to)
        )),
        NotifyError::Misconfigured { channel, .. } => Some(format!(
            "the switch's {channel} channel is misconfigured; the host must correct it"
        )),
    }
}

/// The answer to a failed app call; `app` once the bearer key named one.
fn error_answer(error: &SwitchError, app: Option<&App>) -> Answer {
    let (status, code, errors) = classify(error);
    let app = app.map(App::id);
    let mut answer = if let Some(public) = withheld(error) {
        let id = ErrorId::new();
        tracing::error!(error_id = %id, app, %error, "request failed inside the switch");
        failure_answer(status, code, public, errors, Some(id))
    } else {
        if status.is_server_error() {
            tracing::error!(app, %error, "request failed");
        }
        failure_answer(status, code, error.to_string(), errors, None)
    };
    answer.retry_after_secs = retry_after_secs(error, code);
    // The provider was resolved from the configuration: named for metrics.
    let (failure, provider) = match error {
        SwitchError::ProviderUnavailable(provider) => (Some("unreachable"), Some(provider)),
        SwitchError::ProviderRefusedSwitch(provider) => (Some("unauthenticated"), Some(provider)),
        SwitchError::ProviderRejected(provider) => (Some("rejected"), Some(provider)),
        _ => (None, None),
    };
    answer.provider_failure = failure;
    answer.provider = answer.provider.or_else(|| provider.cloned());
    answer
}

/// `Retry-After` for a refusal that says when to come back.
fn retry_after_secs(error: &SwitchError, code: &str) -> Option<u64> {
    match error {
        SwitchError::LimitExceeded(limit) => Some(limit.retry_after_secs()),
        SwitchError::TooManyAuthFailures { retry_after_secs } => Some(*retry_after_secs),
        // The guard looks again within a fraction of a second, and a
        // reopen takes about as long.
        _ if matches!(code, "storage_full" | "storage_unavailable") => Some(1),
        _ => None,
    }
}

/// The answer to a failed `/notify/*` call; `provider` once its signature
/// proved it.
fn notify_error_answer(error: &NotifyServiceError, provider: Option<&str>) -> Answer {
    let (status, code, errors) = classify_notify(error);
    let mut answer = if let Some(public) = withheld_notify(error) {
        let id = ErrorId::new();
        tracing::error!(error_id = %id, provider, %error, "notification for a provider failed");
        failure_answer(status, code, public, errors, Some(id))
    } else {
        failure_answer(status, code, error.to_string(), errors, None)
    };
    answer.retry_after_secs = match error {
        NotifyServiceError::TooManyAuthFailures { retry_after_secs }
        | NotifyServiceError::HourlyLimit {
            retry_after_secs, ..
        } => Some(*retry_after_secs),
        _ => None,
    };
    answer
}

/// A `Failed` envelope; with an error id, the message ends with it as well,
/// for apps that show only the message.
fn failure_answer(
    status: StatusCode,
    code: &str,
    message: String,
    errors: Option<Vec<FieldError>>,
    error_id: Option<ErrorId>,
) -> Answer {
    let message = match error_id {
        Some(id) => format!("{message} (error id {id})"),
        None => message,
    };
    let mut envelope = ResponseEnvelope::failure(Status::Failed, code, message, errors);
    envelope.data.error_id = error_id.map(|id| id.to_string());
    Answer::without_state(status.as_u16(), &envelope, None, None)
}

/// The header that repeats `data.error_id`, for proxies and clients that log
/// headers rather than bodies.
const ERROR_ID_HEADER: &str = "x-manifold-error-id";

fn respond(answer: &Answer) -> Response<Body> {
    let status =
        StatusCode::from_u16(answer.http_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Full::new(Bytes::from(answer.body.clone())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    if let Some(secs) = answer.retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
    }
    if let Some(id) = &answer.error_id {
        // Hex digits always make a valid value; anything else is left out
        // rather than failing the answer.
        if let Ok(value) = header::HeaderValue::from_str(id) {
            response.headers_mut().insert(ERROR_ID_HEADER, value);
        }
    }
    response
}

fn header_str<'a>(request: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    request
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
}

/// The header that carries the id of the request's log line and span.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// One line per request at `info` (`/health` at `debug`), written when the
/// answer goes out or, if the client leaves first, when its wait is dropped:
/// method, path, app, status, latency and the request id, which every other
/// line about the request carries too (its span) and the answer repeats in
/// [`REQUEST_ID_HEADER`]. Rejections are logged like successes, so a host
/// can see what an app is doing wrong.
struct RequestLog {
    /// 64 random bits, the same kind of opaque id as an error's.
    id: ErrorId,
    method: Method,
    path: String,
    started: std::time::Instant,
    app: Option<String>,
    status: Option<StatusCode>,
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        let latency_us = self.started.elapsed().as_micros() as u64;
        let app = self.app.as_deref().unwrap_or("-");
        let status = self.status.map(|status| status.as_u16());
        let outcome = if status.is_some() {
            "answered"
        } else {
            "the client left before the answer"
        };
        if self.path == "/health" {
            tracing::debug!(request_id = %self.id, method = %self.method, path = %self.path, app, status, latency_us, "{outcome}");
        } else {
            tracing::info!(request_id = %self.id, method = %self.method, path = %self.path, app, status, latency_us, "{outcome}");
        }
    }
}

pub async fn handle(
    state: Arc<SwitchState>,
    request: Request<Incoming>,
    peer: Peer,
) -> Response<Body> {
    let mut log = RequestLog {
        id: ErrorId::new(),
        method: request.method().clone(),
        path: logged_path(request.uri().path()),
        started: std::time::Instant::now(),
        app: None,
        status: None,
    };
    let span = tracing::info_span!("request", id = %log.id);
    // Boxed so that hyper, which keeps and moves this future, moves a
    // pointer rather than the route's whole state.
    let routed = Box::pin(route(state, request, peer, &mut log.app));
    let mut response = manifold_provider::request_id::scope(log.id.to_string(), routed)
        .instrument(span)
        .await;
    log.status = Some(response.status());
    // Sixteen hex digits are always a valid header value.
    if let Ok(value) = header::HeaderValue::from_str(&log.id.to_string()) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// A request's path as the request log shows it: any path a client sends is
/// logged (a 404's too), so a long one is cut rather than copied whole.
fn logged_path(path: &str) -> String {
    const LONGEST: usize = 128;
    match path.char_indices().nth(LONGEST) {
        Some((cut, _)) => format!("{}…", &path[..cut]),
        None => path.to_owned(),
    }
}

/// The app-facing API as OpenAPI 3.1, served at `/openapi.json`: the file
/// committed as `docs/openapi.json`, so the two cannot differ.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// Answers one request; `app` is set once the caller is known to be an app.
async fn route(
    state: Arc<SwitchState>,
    request: Request<Incoming>,
    peer: Peer,
    app_id: &mut Option<String>,
) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let operation = match path.as_str() {
        "/health" if request.method() == Method::GET => {
            return respond(&Answer::plain(200, r#"{"status":"ok"}"#));
        }
        "/openapi.json" if request.method() == Method::GET => {
            return respond(&Answer::plain(200, OPENAPI));
        }
        "/notify/sms" => return notify(&state, Channel::Sms, request, peer).await,
        "/notify/email" => return notify(&state, Channel::Email, request, peer).await,
        "/transact" => Operation::Transact,
        "/transact/validate" => Operation::Validate,
        "/transact/query" => Operation::Query,
        "/transact/reverse" => Operation::Reverse,
        _ => return respond(&error_answer(&SwitchError::NoSuchEndpoint(path), None)),
    };
    if request.method() != Method::POST {
        return respond(&error_answer(
            &SwitchError::MethodNotAllowed(request.method().to_string()),
            None,
        ));
    }
    // A locked-out address is refused before its key is even looked at, so
    // guessing keys or signatures costs a guesser the lockout.
    if let Err(locked) = state.auth_failures.check(peer.address.ip()) {
        let answer = error_answer(
            &SwitchError::TooManyAuthFailures {
                retry_after_secs: locked.retry_after_secs,
            },
            None,
        );
        return respond(&answer);
    }
    let Some(app) = state
        .apps
        .authenticate(header_str(&request, "authorization"))
    else {
        state.auth_failures.record_failure(peer.address.ip());
        return respond(&error_answer(&SwitchError::Unauthenticated, None));
    };
    *app_id = Some(app.id().to_owned());
    let limits = BodyLimits::of(&request);
    let (parts, body) = request.into_parts();
    let verified = match read_body(body, limits).await {
        Ok(body) => VerifiedCall::verify(
            app.clone(),
            parts.method.as_str(),
            &path,
            &parts.headers,
            body,
            &state.signatures,
            &state.spent_signatures,
        )
        .inspect_err(|error| {
            if matches!(error, SwitchError::BadSignature(_)) {
                state.auth_failures.record_failure(peer.address.ip());
            }
        }),
        Err(error) => Err(body_error(error)),
    };
    let started = std::time::Instant::now();
    let answer = match verified {
        Ok(call) => {
            // The engine's work runs to its end on a task of its own: a
            // client that disconnects drops this future, and must not cancel
            // a call between its claim and its recorded answer. Shutdown
            // waits for these tasks (`SwitchState::engine_tasks`).
            let task_state = state.clone();
            // A spawned task inherits neither the span nor the request id:
            // both are handed over, so the provider is sent the id.
            let span = tracing::Span::current();
            let request_id = manifold_provider::request_id::current().unwrap_or_default();
            let work = state
                .engine_tasks
                .spawn(manifold_provider::request_id::scope(
                    request_id,
                    // Boxed before it is wrapped and spawned: the call's
                    // future is kilobytes long, and each wrapper and the
                    // spawn would otherwise copy it whole (PROFILING.md,
                    // eleventh round).
                    Box::pin(async move {
                        // The call runs on one storage generation from start to end;
                        // none is taken while the disk is (nearly) full.
                        let storage = &task_state.storage;
                        // The rate is taken once the call is proven the app's, so
                        // nobody without its secret can spend it.
                        let admitted = call
                            .app()
                            .limits
                            .check_rate()
                            .map_err(SwitchError::LimitExceeded)
                            .and_then(|()| storage.admit());
                        let answer = match admitted {
                            Ok(generation) => {
                                let result = dispatch(generation.engine(), operation, &call).await;
                                storage.settle(&generation, result)
                            }
                            Err(refused) => Err(refused),
                        }
                        .unwrap_or_else(|error| error_answer(&error, Some(call.app())));
                        // Only a call proven to be the app's is billed to it: a
                        // leaked bearer key is enough to send one whose body or
                        // signature then fails. A call over the app's rate is not
                        // recorded either: the rate bounds what the switch does for
                        // an app, its disk included, however fast the app sends.
                        if answer.error.as_deref() != Some("rate_limited") {
                            // A call refused before the switch knew its service
                            // is metered (and billed) under the one its body
                            // names; /metrics counts it only under names the
                            // switch resolved, so no app can mint new series.
                            let named = match answer.error {
                                Some(_) => envelope::named_service(call.body()),
                                None => (None, None),
                            };
                            let metered =
                                meter(&task_state, storage, call.app(), operation, &answer, named)
                                    .await;
                            task_state.metrics.observe_call(
                                &metered,
                                answer.request_type.as_deref(),
                                answer.provider.as_deref(),
                                started.elapsed().as_secs_f64(),
                            );
                            if let (Some(kind), Some(provider)) =
                                (answer.provider_failure, &answer.provider)
                            {
                                task_state.metrics.provider_failed(provider, kind);
                            }
                        }
                        answer
                    })
                    .instrument(span),
                ));
            match work.await {
                Ok(answer) => answer,
                // Logged once, with its error id, by `error_answer`.
                Err(error) => error_answer(
                    &SwitchError::Internal(format!("the engine's task failed: {error}")),
                    Some(&app),
                ),
            }
        }
        Err(error) => error_answer(&error, Some(&app)),
    };
    respond(&answer)
}

fn body_error(error: BodyError) -> SwitchError {
    match error {
        BodyError::TooLarge { .. } => SwitchError::BodyTooLarge,
        BodyError::TimedOut => SwitchError::BodyTimedOut,
        BodyError::Unreadable(reason) => SwitchError::MalformedJson(reason),
    }
}

/// `POST /notify/sms` and `/notify/email`: method, the claimed provider, the
/// body, the provider's signature over it, and only then the body's fields.
async fn notify(
    state: &SwitchState,
    channel: Channel,
    request: Request<Incoming>,
    peer: Peer,
) -> Response<Body> {
    let verified = async {
        if request.method() != Method::POST {
            return Err(NotifyServiceError::MethodNotAllowed(
                request.method().to_string(),
            ));
        }
        if let Err(locked) = state.auth_failures.check(peer.address.ip()) {
            return Err(NotifyServiceError::TooManyAuthFailures {
                retry_after_secs: locked.retry_after_secs,
            });
        }
        let count_failure = |error: &NotifyServiceError| {
            if matches!(error, NotifyServiceError::Unauthenticated(_)) {
                state.auth_failures.record_failure(peer.address.ip());
            }
        };
        // A request that does not even claim a known provider is refused
        // before its body is read.
        let caller = state
            .notify
            .claimed_caller(request.headers())
            .inspect_err(count_failure)?;
        let limits = BodyLimits::of(&request);
        let (parts, body) = request.into_parts();
        let body = read_body(body, limits).await.map_err(|error| match error {
            BodyError::TooLarge { .. } => NotifyServiceError::BodyTooLarge,
            BodyError::TimedOut => NotifyServiceError::BodyTimedOut,
            BodyError::Unreadable(reason) => NotifyServiceError::MalformedJson(reason),
        })?;
        let provider = caller
            .verify(
                parts.method.as_str(),
                parts.uri.path(),
                &parts.headers,
                &body,
            )
            .inspect_err(count_failure)?;
        Ok((provider, body))
    }
    .await;
    // Past the signature the caller is known, and named in the log.
    let outcome = match verified {
        Ok((provider, body)) => state
            .notify
            .send(provider, channel, &body)
            .await
            .map(|()| provider)
            .map_err(|error| (error, Some(provider))),
        Err(error) => Err((error, None)),
    };
    match outcome {
        Ok(provider) => {
            let envelope = ResponseEnvelope {
                status: Status::Successful,
                message: format!("The {channel} message was accepted for delivery"),
                data: ResponseData {
                    provider_response_code: None,
                    provider: Some(provider.to_owned()),
                    errors: None,
                    error: None,
                    provider_response: None,
                    mock_mode: None,
                    transaction: None,
                    error_id: None,
                },
            };
            respond(&Answer::without_state(
                StatusCode::OK.as_u16(),
                &envelope,
                None,
                Some(provider),
            ))
        }
        Err((error, provider)) => respond(&notify_error_answer(&error, provider)),
    }
}

async fn dispatch(
    engine: &Engine,
    operation: Operation,
    call: &VerifiedCall,
) -> Result<Answer, SwitchError> {
    match operation {
        Operation::Transact => engine.transact(call).await,
        Operation::Validate => engine.validate(call).await,
        Operation::Query => engine.query(call).await,
        Operation::Reverse => engine.reverse(call).await,
    }
}

/// Every authenticated call is metered, rejected ones included: hosts bill
/// per call. (Authenticated: the bearer key, the whole body read, and the
/// signature checked where one is sent or required.) A metering failure is
/// logged but never fails the call whose outcome is already decided.
async fn meter(
    state: &SwitchState,
    storage: &Storage,
    app: &App,
    operation: Operation,
    answer: &Answer,
    (named_request_type, named_provider): (Option<String>, Option<String>),
) -> MeteredCall {
    let mut call = MeteredCall {
        at_ms: now_ms(),
        app_id: app.id().to_owned(),
        operation,
        request_type: answer.request_type.clone().or(named_request_type),
        provider: answer.provider.clone().or(named_provider),
        status: answer.status,
        http_status: answer.http_status,
        error: answer.error.clone(),
        inspect: answer.inspect,
        transaction_ref: answer.billing.transaction_ref.clone(),
        amount: answer.billing.amount,
        repeat: answer.billing.repeat,
        completed: answer.billing.completed,
        price: None,
    };
    // Priced now, by the fees in force now: a later change of fees never
    // reprices a call already made.
    call.price = Some(state.fees().price(&crate::invoice::billed(&call)));
    // A call a daily quota will count again after a restart goes to disk
    // with the next commit, so a crash cannot make the quota forget it.
    let promptly = operation == Operation::Transact
        && call
            .request_type
            .as_deref()
            .is_some_and(|request_type| app.limits.has_daily_quota(request_type));
    if let Err(error) = storage.meter(&call, promptly).await {
        tracing::error!(%error, app = app.id(), "metering failed");
    }
    call
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_path_is_cut_in_the_request_log() {
        assert_eq!(logged_path("/transact"), "/transact");
        let long = format!("/{}", "a".repeat(500));
        let logged = logged_path(&long);
        assert_eq!(logged.chars().count(), 129);
        assert!(logged.ends_with('…'));
    }
    use manifold_provider::notify::Channel;
    use serde_json::Value;

    /// `(HTTP status, envelope, x-manifold-error-id)` of an answer as sent.
    fn sent(answer: &Answer) -> (u16, Value, Option<String>) {
        let response = respond(answer);
        let header = response
            .headers()
            .get(ERROR_ID_HEADER)
            .map(|value| value.to_str().unwrap().to_owned());
        (
            response.status().as_u16(),
            serde_json::from_str(&answer.body).unwrap(),
            header,
        )
    }

    /// The answer to a failure inside the switch: `status` and `code`, an
    /// id in the message, `data.error_id` and the header, and none of `detail`.
    fn check_withheld(answer: &Answer, status: u16, code: &str, detail: &str) {
        let (http, body, header) = sent(answer);
        assert_eq!((http, body["data"]["error"].as_str()), (status, Some(code)));
        let id = body["data"]["error_id"].as_str().expect("data.error_id");
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        assert_eq!(header.as_deref(), Some(id));
        let message = body["message"].as_str().unwrap();
        assert!(message.ends_with(&format!("(error id {id})")), "{message}");
        assert!(!answer.body.contains(detail), "{}", answer.body);
    }

    #[test]
    fn a_store_failure_answers_an_error_id_and_not_its_detail() {
        let detail = "transaction T otp\u{1f}txn-1 has unknown version 9";
        let error = SwitchError::Store(StoreError::Corrupt(detail.into()));
        check_withheld(&error_answer(&error, None), 500, "storage_failure", detail);

        let detail = "IO error: /var/lib/manifold/db: No space left on device";
        let error = SwitchError::Store(StoreError::Database(detail.into()));
        let answer = error_answer(&error, None);
        check_withheld(&answer, 503, "storage_unavailable", detail);
        let (_, body, _) = sent(&answer);
        assert!(body["message"]
            .as_str()
            .unwrap()
            .starts_with(&SwitchError::StorageUnavailable.to_string()));
    }

    #[test]
    fn an_internal_failure_answers_an_error_id() {
        let detail = "task 7 panicked with message \"index out of bounds\"";
        let error = SwitchError::Internal(format!("the engine's task failed: {detail}"));
        check_withheld(&error_answer(&error, None), 500, "internal_error", detail);
    }

    #[test]
    fn each_answer_has_an_id_of_its_own() {
        let error = SwitchError::Internal("x".into());
        let (_, first, _) = sent(&error_answer(&error, None));
        let (_, second, _) = sent(&error_answer(&error, None));
        assert_ne!(first["data"]["error_id"], second["data"]["error_id"]);
    }

    #[test]
    fn provider_and_app_errors_keep_their_messages_and_carry_no_id() {
        for error in [
            SwitchError::ProviderUnavailable("bank".into()),
            SwitchError::ProviderRejected("bank".into()),
            SwitchError::ProviderRefusedSwitch("bank".into()),
            SwitchError::StorageFull,
            SwitchError::StorageUnavailable,
            SwitchError::RequestRefConflict("r-1".into()),
        ] {
            let (_, body, header) = sent(&error_answer(&error, None));
            assert_eq!(body["message"], error.to_string());
            assert!(body["data"].get("error_id").is_none(), "{body}");
            assert_eq!(header, None);
        }
    }

    #[test]
    fn a_failed_channel_answers_its_kind_and_an_error_id() {
        let to = "2348022000008".to_owned();
        let detail = "the gateway at 10.0.0.7 answered HTTP 500";
        let failures = [
            NotifyError::Undeliverable {
                channel: Channel::Sms,
                to: to.clone(),
                reason: detail.into(),
            },
            NotifyError::Refused {
                channel: Channel::Sms,
                to: to.clone(),
                reason: detail.into(),
            },
            NotifyError::Misconfigured {
                channel: Channel::Email,
                reason: detail.into(),
            },
        ];
        for failure in failures {
            let error = NotifyServiceError::NotificationFailed(failure);
            let answer = notify_error_answer(&error, Some("bank-remote"));
            check_withheld(&answer, 502, "notification_failed", detail);
            assert!(!answer.body.contains(&to), "{}", answer.body);
        }
        // A destination the channel refused is the caller's field error.
        let error = NotifyServiceError::NotificationFailed(NotifyError::InvalidDestination {
            channel: Channel::Sms,
            to,
            reason: "not a mobile number".into(),
        });
        let (http, body, header) = sent(&notify_error_answer(&error, None));
        assert_eq!((http, header), (400, None));
        assert_eq!(body["data"]["errors"][0]["message"], "not a mobile number");
    }
}
