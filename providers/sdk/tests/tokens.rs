//! The token cache against a real HTTP upstream on 127.0.0.1: the upstream
//! expires a token before the cache thought it would (it answers `401`),
//! while fifty calls are in flight with it; they cost one token request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use manifold_crypto::SecretString;
use manifold_provider_sdk::tokens::{Token, TokenCache};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// `POST /authorization`: a new token each time, counted.
struct Issuer(Arc<AtomicUsize>);

impl Respond for Issuer {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        ResponseTemplate::new(200)
            .set_body_json(serde_json::json!({"token": format!("tok-{n}"), "expires_in": 3600}))
    }
}

/// `GET /balance`: the first token has been revoked upstream.
struct Balance;

impl Respond for Balance {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        match request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
        {
            Some("Bearer tok-1") | None => ResponseTemplate::new(401),
            Some(_) => {
                ResponseTemplate::new(200).set_body_json(serde_json::json!({"balance": 100}))
            }
        }
    }
}

async fn fetch_token(client: &reqwest::Client, base: &str) -> Result<Token, String> {
    let answer: serde_json::Value = client
        .post(format!("{base}/authorization"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    Ok(Token {
        value: SecretString::new(answer["token"].as_str().ok_or("no token")?),
        refresh: None,
        lifetime: Duration::from_secs(answer["expires_in"].as_u64().ok_or("no lifetime")?),
    })
}

/// One upstream call as a connector makes it: with the cached token, and
/// once more with a fresh one if the upstream refuses it.
async fn balance(
    cache: &TokenCache<(), String>,
    client: &reqwest::Client,
    base: &str,
) -> Result<u16, String> {
    for _ in 0..2 {
        let token = cache.get(&(), |_| fetch_token(client, base)).await?;
        let status = client
            .get(format!("{base}/balance"))
            .bearer_auth(token.expose())
            .send()
            .await
            .map_err(|e| e.to_string())?
            .status();
        if status != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(status.as_u16());
        }
        cache.reject(&(), &token).await;
    }
    Err("refused twice".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_calls_refused_with_a_revoked_token_cost_one_token_request() {
    let upstream = MockServer::start().await;
    let issued = Arc::new(AtomicUsize::new(0));
    Mock::given(method("POST"))
        .and(path("/authorization"))
        .respond_with(Issuer(issued.clone()))
        .mount(&upstream)
        .await;
    Mock::given(method("GET"))
        .and(path("/balance"))
        .respond_with(Balance)
        .mount(&upstream)
        .await;
    let base = upstream.uri();
    let client = reqwest::Client::new();
    let cache: Arc<TokenCache<(), String>> = Arc::new(TokenCache::new(Duration::from_secs(30)));
    // The first token, which the upstream then revokes.
    let first = cache
        .get(&(), |_| fetch_token(&client, &base))
        .await
        .unwrap();
    assert_eq!(first.expose(), "tok-1");

    let calls: Vec<_> = (0..50)
        .map(|_| {
            let (cache, client, base) = (cache.clone(), client.clone(), base.clone());
            tokio::spawn(async move { balance(&cache, &client, &base).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), Ok(200));
    }
    assert_eq!(
        issued.load(Ordering::SeqCst),
        2,
        "the first token, and one refresh for all fifty calls"
    );
}
