//! [`RemoteProvider`]'s client does only what it is told: it follows no
//! redirect, takes no proxy from the environment and reads no oversized reply.
//! Every peer is a wiremock server on 127.0.0.1.

use std::time::Duration;

use manifold_crypto::SecretString;
use manifold_provider::{HopSigner, Provider, ProviderError, QueryRequest, RemoteProvider};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn signer() -> HopSigner {
    HopSigner::new(
        &SecretString::from("outbound-test-hop-secret-0123456789abcd"),
        "bank",
    )
}

fn query() -> QueryRequest {
    QueryRequest {
        app_id: "app".into(),
        request_type: "get_balance".into(),
        transaction_ref: "txn-1".into(),
    }
}

fn reply() -> serde_json::Value {
    serde_json::json!({
        "status": "Successful",
        "message": "ok",
        "provider_response_code": "00",
    })
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_its_target_receives_nothing() {
    let target = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(reply()))
        .expect(0)
        .mount(&target)
        .await;
    let provider = MockServer::start().await;
    for status in [301, 302, 307, 308] {
        provider.reset().await;
        Mock::given(method("POST"))
            .and(path("/transact/query"))
            .respond_with(
                ResponseTemplate::new(status)
                    .insert_header("location", format!("{}/transact/query", target.uri())),
            )
            .expect(1)
            .mount(&provider)
            .await;
        let remote =
            RemoteProvider::new(&provider.uri(), signer(), Duration::from_secs(5)).unwrap();
        let error = remote.query(query()).await.unwrap_err();
        // The provider read the request before redirecting: its outcome is
        // unknown, never "nothing happened".
        assert!(
            matches!(error, ProviderError::BadReply(_)),
            "{status}: {error}"
        );
        assert!(error.may_have_executed());
        provider.verify().await;
    }
    target.verify().await;
}

#[tokio::test]
async fn an_oversized_reply_is_refused_unread() {
    let provider = MockServer::start().await;
    let mut huge = reply();
    huge["provider_response"] = serde_json::json!({ "padding": "x".repeat(2 * 1024 * 1024) });
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(huge))
        .mount(&provider)
        .await;
    let remote = RemoteProvider::new(&provider.uri(), signer(), Duration::from_secs(5)).unwrap();
    let error = remote.query(query()).await.unwrap_err();
    assert!(error.to_string().contains("larger than"), "{error}");
}

#[tokio::test]
async fn a_proxy_named_in_the_environment_is_ignored() {
    let proxy = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(reply()))
        .expect(0)
        .mount(&proxy)
        .await;
    let provider = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/transact/query"))
        .respond_with(ResponseTemplate::new(200).set_body_json(reply()))
        .expect(1)
        .mount(&provider)
        .await;
    // This test binary holds no other test that reads these variables, and
    // the client reads them when it is built.
    for variable in ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"] {
        std::env::set_var(variable, proxy.uri());
    }
    std::env::remove_var("NO_PROXY");
    std::env::remove_var("no_proxy");
    let remote = RemoteProvider::new(&provider.uri(), signer(), Duration::from_secs(5)).unwrap();
    let answer = remote.query(query()).await.unwrap();
    assert_eq!(answer.provider_response_code, "00");
    proxy.verify().await;
    provider.verify().await;
}
