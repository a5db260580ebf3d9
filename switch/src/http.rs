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
use manifold_edge::{read_request_body, Body, BodyError, Peer};
use manifold_provider::notify::Channel;
use manifold_provider::{NotifyError, Status};

use crate::apps::{App, AppRegistry};
use crate::engine::{now_ms, Answer, Engine};
use crate::envelope::{ResponseData, ResponseEnvelope};
use crate::error::{FieldError, SwitchError};
use crate::notify::{NotifyService, NotifyServiceError};
use crate::store::{MeteredCall, Operation};

/// Everything a request handler needs; shared by all connections.
pub struct SwitchState {
    pub apps: AppRegistry,
    pub engine: Engine,
    /// `/notify/*`: provider keys and the switch's notifier (its `Dispatcher`).
    pub notify: NotifyService,
}

/// `(HTTP status, data.error, field errors)` for every error: the one mapping.
fn classify(error: &SwitchError) -> (StatusCode, &'static str, Option<Vec<FieldError>>) {
    use SwitchError::*;
    let field = |name: &str, message: String| Some(vec![FieldError::new(name, message)]);
    match error {
        MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json", None),
        BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", None),
        InvalidFields(errors) => (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some(errors.clone()),
        ),
        Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated", None),
        SignatureRequired => (StatusCode::UNAUTHORIZED, "signature_required", None),
        BadSignature => (StatusCode::UNAUTHORIZED, "bad_signature", None),
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
        ProviderRejected(_) => (StatusCode::BAD_GATEWAY, "provider_rejected", None),
        NoSuchEndpoint(_) => (StatusCode::NOT_FOUND, "no_such_endpoint", None),
        MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None),
        Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage_failure", None),
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
        Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated", None),
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
    Answer {
        http_status: status.as_u16(),
        body: serde_json::to_string(&envelope).unwrap_or_default(),
        status: Status::Failed,
        request_type: None,
        provider: None,
        inspect: false,
        error: Some(code.to_owned()),
    }
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

fn header_str<'a>(request: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    request
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
}

pub async fn handle(
    state: Arc<SwitchState>,
    request: Request<Incoming>,
    _peer: Peer,
) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let operation = match path.as_str() {
        "/health" if request.method() == Method::GET => {
            return respond(&Answer {
                http_status: 200,
                body: r#"{"status":"ok"}"#.into(),
                status: Status::Successful,
                request_type: None,
                provider: None,
                inspect: false,
                error: None,
            });
        }
        "/notify/sms" => return notify(&state, Channel::Sms, request).await,
        "/notify/email" => return notify(&state, Channel::Email, request).await,
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
    let Some(app) = state
        .apps
        .authenticate(header_str(&request, "authorization"))
    else {
        return respond(&error_answer(&SwitchError::Unauthenticated));
    };
    let signature = header_str(&request, "signature").map(str::to_owned);
    let answer = match read_request_body(request).await {
        Ok(body) => dispatch(&state.engine, &app, operation, &body, signature.as_deref()).await,
        Err(BodyError::TooLarge { .. }) => Err(SwitchError::BodyTooLarge),
        Err(BodyError::TimedOut) => {
            Err(SwitchError::MalformedJson(BodyError::TimedOut.to_string()))
        }
        Err(BodyError::Unreadable(reason)) => Err(SwitchError::MalformedJson(reason)),
    }
    .unwrap_or_else(|error| error_answer(&error));
    meter(&state.engine, &app, operation, &answer).await;
    respond(&answer)
}

/// `POST /notify/sms` and `/notify/email`: method, then the provider's
/// `notify_key`, then the body, then the channel.
async fn notify(
    state: &SwitchState,
    channel: Channel,
    request: Request<Incoming>,
) -> Response<Body> {
    let outcome = async {
        if request.method() != Method::POST {
            return Err(NotifyServiceError::MethodNotAllowed(
                request.method().to_string(),
            ));
        }
        let provider = state
            .notify
            .authenticate(header_str(&request, "authorization"))
            .ok_or(NotifyServiceError::Unauthenticated)?;
        let body = read_request_body(request)
            .await
            .map_err(|error| match error {
                BodyError::TooLarge { .. } => NotifyServiceError::BodyTooLarge,
                BodyError::TimedOut => NotifyServiceError::MalformedJson(error.to_string()),
                BodyError::Unreadable(reason) => NotifyServiceError::MalformedJson(reason),
            })?;
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
            respond(&Answer {
                http_status: StatusCode::OK.as_u16(),
                body: serde_json::to_string(&envelope).unwrap_or_default(),
                status: Status::Successful,
                request_type: None,
                provider: Some(provider.to_owned()),
                inspect: false,
                error: None,
            })
        }
        Err(error) => respond(&notify_error_answer(&error)),
    }
}

async fn dispatch(
    engine: &Engine,
    app: &App,
    operation: Operation,
    body: &[u8],
    signature: Option<&str>,
) -> Result<Answer, SwitchError> {
    match operation {
        Operation::Transact => engine.transact(app, body, signature).await,
        Operation::Validate => engine.validate(app, body, signature).await,
        Operation::Query => engine.query(app, body, signature).await,
        Operation::Reverse => engine.reverse(app, body, signature).await,
    }
}

/// Every authenticated call is metered, rejected ones included: hosts bill
/// per call. A metering failure is logged but never fails the call whose
/// outcome is already decided.
async fn meter(engine: &Engine, app: &App, operation: Operation, answer: &Answer) {
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
    if let Err(error) = engine.store().meter(&call).await {
        tracing::error!(%error, app = app.id(), "metering failed");
    }
}
