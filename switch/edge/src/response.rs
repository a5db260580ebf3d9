//! [`json_response`]: a JSON answer with a status, for any handler.
//!
//! The envelope inside is the caller's (the switch's `ResponseEnvelope`, a
//! provider's `ProviderFault`); the edge only encodes it and, if encoding
//! fails, answers a fixed 500 rather than panicking or sending half a body.

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use crate::serve::Body;

/// `body` as JSON with `Content-Type: application/json` and `status`.
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
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}
