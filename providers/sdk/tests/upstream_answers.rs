//! `HttpUpstream::call` against a wiremock upstream on 127.0.0.1: each HTTP
//! answer sorted as the module promises — a refusal with its code and body
//! (`400`, `403`, `409`, `422`, `428`), a `401` retried once with a new
//! token, an upstream not taking work (`429`, `503`) as nothing done, and
//! any other failure as an unknown outcome.

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use manifold_crypto::SecretString;
use manifold_provider::outbound::OutboundOptions;
use manifold_provider_sdk::upstream::{Answer, BearerTokens, HttpUpstream};
use manifold_provider_sdk::ConnectorError;
use reqwest::{StatusCode, Url};
use serde_json::{json, Value};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Hands out `token-1`, `token-2`, … and counts refusals.
#[derive(Default)]
struct Tokens {
    issued: AtomicUsize,
    refused: AtomicUsize,
}

#[async_trait]
impl BearerTokens for Tokens {
    async fn token(&self) -> Result<SecretString, ConnectorError> {
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(SecretString::new(format!("token-{n}")))
    }

    async fn refused(&self, _token: &SecretString) {
        self.refused.fetch_add(1, Ordering::SeqCst);
    }
}

fn code_of(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(body)
        .ok()?
        .get("code")?
        .as_str()
        .map(str::to_owned)
}

async fn answer_to(status: u16, body: Value) -> Result<Answer<Value>, ConnectorError> {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/pay"))
        .respond_with(ResponseTemplate::new(status).set_body_json(body))
        .mount(&server)
        .await;
    let upstream = HttpUpstream::new(
        Url::parse(&server.uri()).unwrap(),
        &OutboundOptions::with_timeout(std::time::Duration::from_secs(5)),
        code_of,
    )
    .unwrap();
    let url = upstream.endpoint(&["pay"]).unwrap();
    upstream
        .call("payment", &Tokens::default(), |token| {
            upstream
                .http()
                .post(url.clone())
                .bearer_auth(token.expose())
        })
        .await
}

#[tokio::test]
async fn refusals_carry_their_status_code_and_body() {
    for status in [400, 403, 409, 422, 428] {
        let body = json!({"code": "no_way", "methods": ["sms"]});
        match answer_to(status, body.clone()).await {
            Ok(Answer::Refused {
                status: refused,
                code,
                body: kept,
            }) => {
                assert_eq!(refused, StatusCode::from_u16(status).unwrap());
                assert_eq!(code.as_deref(), Some("no_way"));
                assert_eq!(kept, Some(body));
            }
            other => panic!("{status}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn not_taking_work_is_nothing_done_and_other_failures_are_unknown() {
    for status in [429, 503] {
        assert!(
            matches!(
                answer_to(status, json!({})).await,
                Err(ConnectorError::Unavailable(_))
            ),
            "{status}"
        );
    }
    for status in [500, 502, 504] {
        assert!(
            matches!(
                answer_to(status, json!({})).await,
                Err(ConnectorError::Indeterminate(_))
            ),
            "{status}"
        );
    }
    assert!(matches!(
        answer_to(404, json!({})).await,
        Ok(Answer::NotFound)
    ));
    assert!(matches!(
        answer_to(200, json!({"id": 1})).await,
        Ok(Answer::Found(found)) if found == json!({"id": 1})
    ));
}

#[tokio::test]
async fn a_refused_token_is_replaced_once() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header("authorization", "Bearer token-1"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(header("authorization", "Bearer token-2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .mount(&server)
        .await;
    let upstream = HttpUpstream::new(
        Url::parse(&server.uri()).unwrap(),
        &OutboundOptions::with_timeout(std::time::Duration::from_secs(5)),
        code_of,
    )
    .unwrap();
    let tokens = Tokens::default();
    let url = upstream.endpoint(&["pay"]).unwrap();
    let answer: Answer<Value> = upstream
        .call("payment", &tokens, |token| {
            upstream
                .http()
                .post(url.clone())
                .bearer_auth(token.expose())
        })
        .await
        .unwrap();
    assert!(matches!(answer, Answer::Found(_)));
    assert_eq!(tokens.refused.load(Ordering::SeqCst), 1);

    // A second 401, to a fresh token, is not retried again.
    let always = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401))
        .expect(2)
        .mount(&always)
        .await;
    let upstream = HttpUpstream::new(
        Url::parse(&always.uri()).unwrap(),
        &OutboundOptions::with_timeout(std::time::Duration::from_secs(5)),
        code_of,
    )
    .unwrap();
    let url = upstream.endpoint(&["pay"]).unwrap();
    let refused = upstream
        .call::<Value>("payment", &Tokens::default(), |token| {
            upstream
                .http()
                .post(url.clone())
                .bearer_auth(token.expose())
        })
        .await;
    assert!(
        matches!(refused, Err(ConnectorError::Unavailable(_))),
        "{refused:?}"
    );
}
