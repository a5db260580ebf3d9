//! Seed 002, "core-api": a payment API that charges the user a short-lived
//! token names, and processes the charge in the background through a queue.
//!
//! Two services, as the seed has them: the **auth service** issues tokens,
//! and **core-api** takes `POST /transaction` with `token`, `amount` and
//! `currency`. Both share the JWT secret (the seed's `JWT_SECRET`, "must be
//! the same as that of Auth API"). [`CoreApiSim::start`] runs each on its own
//! loopback port.
//!
//! | | seed says | we assumed |
//! |---|---|---|
//! | token | issued by a separate auth service, valid 30 seconds; the example is an HS256 JWT with `user_id`, `username`, `enabled`, `exp` | the auth service's endpoint is `POST /token` with `{"refresh_token": "…"}`, answering `200 {"token": "<jwt>"}` or `401 {"error": "invalid_refresh_token"}`: a customer's long-lived credential, given to the calling app, buys a 30-second token for that customer alone (Manifold's `auth.type = "token"`) |
//! | whose money | "amount to charge"; the token names the user | the user the token names is charged |
//! | `POST /transaction` | `token`, `amount`, `currency` (ISO 4217) required; answers `200 {"amount": 100, "currency": "USD", "user_id": 1}` | `amount` a decimal string or number in major units, positive, at most two decimals, else `400 {"error": "invalid_amount"}`; a currency it does not take: `400 {"error": "unsupported_currency"}`; a missing, malformed, expired or forged token: `401 {"error": "invalid_token"}` |
//! | `enabled` | "the enabled property of a user must be true" | a disabled user's token: `403 {"error": "user_disabled"}`, nothing charged |
//! | processing | "processed by a PSP connector in the background via a message queue" | an accepted charge is queued; a worker takes it off the queue; nothing about it can be asked afterwards |
//! | ids, look-up, idempotency | the answer carries no transaction id; no other endpoint | none: the same request sent twice is two charges |
//! | health | `GET /health` → `{"checks": {}, "status": "pass"}` | as the seed |
//!
//! What tests can do through [`CoreApiSim`]: count token requests and
//! accepted charges, expire every token issued so far (as 30 seconds
//! would), and set a [`Fault`] — refuse before accepting, fail after
//! accepting, or accept and hold the answer until released.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, Response, StatusCode};
use hyper::body::Incoming;
use hyper::Request;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::serve::{error, json, Body, Running};

/// How long a token lives: the seed's 30 seconds.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(30);

/// The currencies the simulation takes unless told otherwise.
pub const CURRENCIES: [&str; 4] = ["USD", "GBP", "EUR", "NGN"];

/// A user of the auth service.
#[derive(Debug, Clone)]
pub struct User {
    pub user_id: u64,
    pub username: String,
    pub enabled: bool,
    /// The long-lived credential the customer gives the calling app.
    pub refresh_token: String,
}

/// How core-api misbehaves on `POST /transaction`, until told otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// `503` before anything is charged.
    Unavailable,
    /// The charge is accepted and queued, then the answer is `500`.
    FailAfterAccepting,
    /// The charge is accepted and queued, and the answer waits until
    /// [`CoreApiSim::release_held`] (or forever).
    HoldAfterAccepting,
}

/// One charge core-api accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Charge {
    pub user_id: u64,
    /// As sent, in major units.
    pub amount: String,
    pub currency: String,
}

/// The claims of the seed's example token.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    user_id: u64,
    username: String,
    enabled: bool,
    exp: u64,
    /// Which generation of tokens this is: [`CoreApiSim::expire_tokens`]
    /// ends every generation before the current one, as time would.
    generation: u64,
}

struct State {
    users: Vec<User>,
    currencies: Vec<String>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    token_requests: AtomicU64,
    generation: AtomicU64,
    fault: Mutex<Fault>,
    accepted: Mutex<Vec<Charge>>,
    processed: AtomicU64,
    queue: mpsc::UnboundedSender<Charge>,
    /// Bumped by [`CoreApiSim::release_held`]; held answers wait for a change.
    release: watch::Sender<u64>,
}

/// Both services, running; they stop when this is dropped.
pub struct CoreApiSim {
    state: Arc<State>,
    auth: Running,
    core: Running,
}

impl CoreApiSim {
    /// Starts the auth service and core-api on ephemeral loopback ports.
    pub async fn start(users: Vec<User>) -> std::io::Result<CoreApiSim> {
        let auth = TcpListener::bind("127.0.0.1:0").await?;
        let core = TcpListener::bind("127.0.0.1:0").await?;
        CoreApiSim::start_on(auth, core, users, "manifold-sandbox-jwt-secret")
    }

    /// Starts both services on listeners bound by the caller.
    pub fn start_on(
        auth: TcpListener,
        core: TcpListener,
        users: Vec<User>,
        jwt_secret: &str,
    ) -> std::io::Result<CoreApiSim> {
        let (queue, mut queued) = mpsc::unbounded_channel::<Charge>();
        let state = Arc::new(State {
            users,
            currencies: CURRENCIES.iter().map(|c| c.to_string()).collect(),
            encoding: EncodingKey::from_secret(jwt_secret.as_bytes()),
            decoding: DecodingKey::from_secret(jwt_secret.as_bytes()),
            token_requests: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            fault: Mutex::new(Fault::None),
            accepted: Mutex::new(Vec::new()),
            processed: AtomicU64::new(0),
            queue,
            release: watch::Sender::new(0),
        });
        // The "PSP connector in the background": it takes charges off the
        // queue; nobody can ask it about them.
        let worker = Arc::downgrade(&state);
        tokio::spawn(async move {
            while let Some(charge) = queued.recv().await {
                let Some(state) = worker.upgrade() else { break };
                tracing::debug!(user_id = charge.user_id, "core-api processed a charge");
                state.processed.fetch_add(1, Ordering::Relaxed);
            }
        });
        let for_auth = state.clone();
        let auth = Running::start(auth, move |request| {
            let state = for_auth.clone();
            async move { state.auth_service(request).await }
        })?;
        let for_core = state.clone();
        let core = Running::start(core, move |request| {
            let state = for_core.clone();
            async move { state.core_api(request).await }
        })?;
        Ok(CoreApiSim { state, auth, core })
    }

    /// The auth service's base URL.
    pub fn auth_url(&self) -> String {
        self.auth.url()
    }

    /// core-api's base URL.
    pub fn core_url(&self) -> String {
        self.core.url()
    }

    /// Token requests answered so far, issued or refused.
    pub fn token_requests(&self) -> u64 {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// Every charge accepted so far, in order.
    pub fn accepted(&self) -> Vec<Charge> {
        self.state
            .accepted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Charges the background worker has taken off the queue.
    pub fn processed(&self) -> u64 {
        self.state.processed.load(Ordering::SeqCst)
    }

    /// Every token issued so far is expired from now on, as if 30 seconds
    /// had passed.
    pub fn expire_tokens(&self) {
        self.state.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn set_fault(&self, fault: Fault) {
        *self.state.fault.lock().unwrap_or_else(|e| e.into_inner()) = fault;
    }

    /// Lets every answer held by [`Fault::HoldAfterAccepting`] go.
    pub fn release_held(&self) {
        self.state.release.send_modify(|n| *n += 1);
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn json_body(request: Request<Incoming>) -> Option<HashMap<String, Value>> {
    let body = manifold_edge::read_request_body(request).await.ok()?;
    serde_json::from_slice(&body).ok()
}

impl State {
    async fn auth_service(&self, request: Request<Incoming>) -> Response<Body> {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/health") => health(),
            (&Method::POST, "/token") => {
                self.token_requests.fetch_add(1, Ordering::SeqCst);
                let Some(body) = json_body(request).await else {
                    return error(StatusCode::BAD_REQUEST, "invalid_request");
                };
                let given = body.get("refresh_token").and_then(Value::as_str);
                let Some(user) = self
                    .users
                    .iter()
                    .find(|user| Some(user.refresh_token.as_str()) == given)
                else {
                    return error(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
                };
                let claims = Claims {
                    user_id: user.user_id,
                    username: user.username.clone(),
                    enabled: user.enabled,
                    exp: unix_now() + TOKEN_LIFETIME.as_secs(),
                    generation: self.generation.load(Ordering::SeqCst),
                };
                match jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
                {
                    Ok(token) => json(StatusCode::OK, &json!({ "token": token })),
                    Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
                }
            }
            _ => error(StatusCode::NOT_FOUND, "not_found"),
        }
    }

    async fn core_api(&self, request: Request<Incoming>) -> Response<Body> {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/health") => health(),
            (&Method::POST, "/transaction") => self.transaction(request).await,
            _ => error(StatusCode::NOT_FOUND, "not_found"),
        }
    }

    async fn transaction(&self, request: Request<Incoming>) -> Response<Body> {
        let Some(body) = json_body(request).await else {
            return error(StatusCode::BAD_REQUEST, "invalid_request");
        };
        let Some(claims) = body
            .get("token")
            .and_then(Value::as_str)
            .and_then(|token| self.verify(token))
        else {
            return error(StatusCode::UNAUTHORIZED, "invalid_token");
        };
        if !claims.enabled {
            return error(StatusCode::FORBIDDEN, "user_disabled");
        }
        let Some(amount) = body.get("amount").and_then(amount_text) else {
            return error(StatusCode::BAD_REQUEST, "invalid_amount");
        };
        let currency = body.get("currency").and_then(Value::as_str).unwrap_or("");
        if !self.currencies.iter().any(|c| c == currency) {
            return error(StatusCode::BAD_REQUEST, "unsupported_currency");
        }
        let fault = *self.fault.lock().unwrap_or_else(|e| e.into_inner());
        if fault == Fault::Unavailable {
            return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
        }
        let charge = Charge {
            user_id: claims.user_id,
            amount: amount.clone(),
            currency: currency.to_owned(),
        };
        self.accepted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(charge.clone());
        let _ = self.queue.send(charge);
        match fault {
            Fault::FailAfterAccepting => {
                return error(StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
            }
            Fault::HoldAfterAccepting => {
                let mut released = self.release.subscribe();
                let _ = released.changed().await;
            }
            Fault::None | Fault::Unavailable => {}
        }
        // The seed answers the amount as a number.
        let amount: Value = amount
            .parse::<serde_json::Number>()
            .map(Value::Number)
            .unwrap_or(Value::String(amount));
        json(
            StatusCode::OK,
            &json!({ "amount": amount, "currency": currency, "user_id": claims.user_id }),
        )
    }

    /// The token's claims if it is ours, unexpired and of the current
    /// generation.
    fn verify(&self, token: &str) -> Option<Claims> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .ok()?
            .claims;
        (claims.generation == self.generation.load(Ordering::SeqCst)).then_some(claims)
    }
}

/// A positive amount of at most two decimals, as a string or a number.
fn amount_text(value: &Value) -> Option<String> {
    crate::amounts::text_of(value, true).filter(|text| crate::amounts::hundredths(text).is_some())
}

fn health() -> Response<Body> {
    json(StatusCode::OK, &json!({ "checks": {}, "status": "pass" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_positive_decimals_of_two_places_at_most() {
        for good in [json!("100"), json!(100), json!("0.01"), json!("12.5")] {
            assert!(amount_text(&good).is_some(), "{good}");
        }
        for bad in [
            json!("0"),
            json!("0.00"),
            json!("-1"),
            json!("1.234"),
            json!("1."),
            json!(".5"),
            json!("1e3"),
            json!(1.5e300),
            json!(null),
            json!(""),
        ] {
            assert!(amount_text(&bad).is_none(), "{bad}");
        }
    }
}
