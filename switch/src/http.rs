//! The HTTP edge of the switch.
//!
//! It routes the paths, authenticates the app, reads the body under a
//! size limit, hands the bytes to the [`Engine`], meters the call, and is the
//! only place where a [`SwitchError`] becomes an HTTP status and a `Failed`
//! envelope with `data.error` and `data.errors`. It also serves the
//! notification services (`/notify/sms`, `/notify/email`) to provider
//! microservices, whose [`NotifyServiceError`]s are mapped here in the same way.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use manifold_edge::signature::SignatureCheck;
use manifold_edge::{read_body, AuthFailureLimiter, Body, BodyError, BodyLimits, Peer};
use manifold_provider::notify::Channel;
use manifold_provider::{NotifyError, Status};

use crate::apps::{App, AppRegistry};
use crate::engine::{now_ms, Answer, Engine};
use crate::envelope::{ResponseData, ResponseEnvelope};
use crate::error::{FieldError, SwitchError};
use crate::notify::{NotifyService, NotifyServiceError};
use crate::signed::{SpentSignatures, VerifiedCall};
use crate::storage::Storage;
use crate::store::{MeteredCall, Operation, StoreError};
use tokio_util::task::TaskTracker;

/// Everything a request handler needs; shared by all connections.
pub struct SwitchState {
    pub apps: AppRegistry,
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
        SignatureRequired => (StatusCode::UNAUTHORIZED, "signature_required", None),
        BadSignature(_) | SignatureSpent => (StatusCode::UNAUTHORIZED, "bad_signature", None),
        SignatureNonceMismatch => (
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            field("request_ref", error.to_string()),
        ),
        UnknownRequestType(_) => (
            StatusCode::BAD_REQUEST,
            "unknown_request_type",
            field("request_type", error.to_string()),
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
        Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error", None),
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

fn error_answer(error: &SwitchError) -> Answer {
    let (status, code, errors) = classify(error);
    if status.is_server_error() {
        tracing::error!(%error, "request failed");
    }
    failure_answer(status, code, error.to_string(), errors)
}

fn notify_error_answer(error: &NotifyServiceError) -> Answer {
    let (status, code, errors) = classify_notify(error);
    failure_answer(status, code, error.to_string(), errors)
}

fn failure_answer(
    status: StatusCode,
    code: &str,
    message: String,
    errors: Option<Vec<FieldError>>,
) -> Answer {
    let envelope = ResponseEnvelope::failure(Status::Failed, code, message, errors);
    Answer::without_state(status.as_u16(), &envelope, None, None)
}

fn respond(answer: &Answer) -> Response<Body> {
    let status =
        StatusCode::from_u16(answer.http_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Full::new(Bytes::from(answer.body.clone())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// `Retry-After` on a 429, so a well-behaved client waits out its lockout.
fn with_retry_after(mut response: Response<Body>, secs: u64) -> Response<Body> {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
    response
}

fn header_str<'a>(request: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    request
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
}

pub async fn handle(
    state: Arc<SwitchState>,
    request: Request<Incoming>,
    peer: Peer,
) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let operation = match path.as_str() {
        "/health" if request.method() == Method::GET => {
            return respond(&Answer::plain(200, r#"{"status":"ok"}"#));
        }
        "/notify/sms" => return notify(&state, Channel::Sms, request, peer).await,
        "/notify/email" => return notify(&state, Channel::Email, request, peer).await,
        "/transact" => Operation::Transact,
        "/transact/validate" => Operation::Validate,
        "/transact/query" => Operation::Query,
        "/transact/reverse" => Operation::Reverse,
        _ => return respond(&error_answer(&SwitchError::NoSuchEndpoint(path))),
    };
    if request.method() != Method::POST {
        return respond(&error_answer(&SwitchError::MethodNotAllowed(
            request.method().to_string(),
        )));
    }
    // A locked-out address is refused before its key is even looked at, so
    // guessing keys or signatures costs a guesser the lockout.
    if let Err(locked) = state.auth_failures.check(peer.address.ip()) {
        let answer = error_answer(&SwitchError::TooManyAuthFailures {
            retry_after_secs: locked.retry_after_secs,
        });
        return with_retry_after(respond(&answer), locked.retry_after_secs);
    }
    let Some(app) = state
        .apps
        .authenticate(header_str(&request, "authorization"))
    else {
        state.auth_failures.record_failure(peer.address.ip());
        return respond(&error_answer(&SwitchError::Unauthenticated));
    };
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
    let answer = match verified {
        Ok(call) => {
            // The engine's work runs to its end on a task of its own: a
            // client that disconnects drops this future, and must not cancel
            // a call between its claim and its recorded answer. Shutdown
            // waits for these tasks (`SwitchState::engine_tasks`).
            let task_state = state.clone();
            let work = state.engine_tasks.spawn(async move {
                // The call runs on one storage generation from start to end;
                // none is taken while the disk is (nearly) full.
                let storage = &task_state.storage;
                let answer = match storage.admit() {
                    Ok(generation) => {
                        let result = dispatch(generation.engine(), operation, &call).await;
                        storage.settle(&generation, result)
                    }
                    Err(refused) => Err(refused),
                }
                .unwrap_or_else(|error| error_answer(&error));
                // Only a call proven to be the app's is billed to it: a
                // leaked bearer key is enough to send one whose body or
                // signature then fails.
                meter(storage, call.app(), operation, &answer).await;
                answer
            });
            match work.await {
                Ok(answer) => answer,
                Err(error) => {
                    tracing::error!(app = app.id(), %error, "the engine's task failed");
                    error_answer(&SwitchError::Internal)
                }
            }
        }
        Err(error) => error_answer(&error),
    };
    match answer.error.as_deref() {
        // The guard looks again within a fraction of a second, and a
        // reopen takes about as long.
        Some("storage_full" | "storage_unavailable") => with_retry_after(respond(&answer), 1),
        _ => respond(&answer),
    }
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
    let outcome = async {
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
        state.notify.send(provider, channel, &body).await?;
        Ok(provider)
    }
    .await;
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
                },
            };
            respond(&Answer::without_state(
                StatusCode::OK.as_u16(),
                &envelope,
                None,
                Some(provider),
            ))
        }
        Err(error) => {
            let response = respond(&notify_error_answer(&error));
            match error {
                NotifyServiceError::TooManyAuthFailures { retry_after_secs } => {
                    with_retry_after(response, retry_after_secs)
                }
                _ => response,
            }
        }
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
async fn meter(storage: &Storage, app: &App, operation: Operation, answer: &Answer) {
    let call = MeteredCall {
        at_ms: now_ms(),
        app_id: app.id().to_owned(),
        operation,
        request_type: answer.request_type.clone(),
        provider: answer.provider.clone(),
        status: answer.status,
        http_status: answer.http_status,
        error: answer.error.clone(),
        inspect: answer.inspect,
    };
    if let Err(error) = storage.meter(&call).await {
        tracing::error!(%error, app = app.id(), "metering failed");
    }
}
