//! Seed 001, SDK.finance: a wallet platform where a service user tops up and
//! withdraws from customers' wallets ("coins") through requests that an
//! operator accepts or declines later, and moves money between coins by
//! transfer templates.
//!
//! | | seed says | we assumed |
//! |---|---|---|
//! | token | `POST /authorization` with the credentials; "you will receive token along with other user's parameters"; refresh by asking again; `Authorization: Bearer`; `401` when expired or invalid | body `{"login", "password"}`; answer `{"authorizationToken": {"token": "…"}, "user": {"id", "login"}}`, wrong credentials `401`; a token lives 300 seconds |
//! | wallets | coins, named by `coinSerial`; `GET /coins`; `POST /coins/validate` | `POST /coins/validate` `{"coinSerial"}` → `200 {"coinSerial", "currency", "valid": true}` or `404 {"code": "COIN_NOT_FOUND"}`; amounts are decimal strings in major units |
//! | top-up | `POST /bank-top-ups/calculate` (commission), `POST /bank-top-ups/create-request/with-bank` → `requestIdentifier`; `…/{requestIdentifier}/accept` or `/decline` | calculate `{"coinSerial", "amount"}` → `{"commission", "total"}` (1 % of the amount, at least 0.10); create `{"coinSerial", "amount", "bankId", "externalId"}` → `{"requestIdentifier", "status": "PROCESSING", "commission"}`; accept credits the coin; accept and decline are the operator's (the simulation's handle, or the same endpoints) |
//! | withdrawal | `POST /bank-withdrawals/calculate`, `POST /bank-withdrawals/with-bank` → `requestIdentifier`; accept or decline | as the top-up; creating one holds amount plus commission on the coin (`422 {"code": "INSUFFICIENT_FUNDS"}` when it does not hold that much), decline releases it |
//! | transfers | `POST /templates/transfer/view`, `POST /templates/transfer/{id}/calculate`, `POST /templates/transfer/{id}/execute` → `businessProcessId` | a template moves money from its source coin to its destination coin; execute `{"coinSerial", "amount"}` completes at once: `{"businessProcessId", "status": "COMPLETED", "commission"}`; the coin must be the template's source (`403 {"code": "NOT_TEMPLATE_OWNER"}`) |
//! | learning the decision | not described | `GET /bank-top-ups/{requestIdentifier}` and `GET /bank-withdrawals/{requestIdentifier}` → `{"requestIdentifier", "status": "PROCESSING" \| "ACCEPTED" \| "DECLINED", "commission"}`; `GET /bank-top-ups?externalId=…` (and for withdrawals) → `{"records": [...]}`, so a caller that lost an answer can find its request |
//! | idempotency | none described | none: `externalId` is searchable, not deduplicated; the same request sent twice is two requests |
//!
//! Errors are `{"code": "…", "message": "…"}`. What tests can do through
//! [`SdkFinanceSim`]: count token requests and created requests, expire
//! tokens, accept or decline a request as the operator, read balances, and
//! set a [`Fault`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http::{Method, Response, StatusCode};
use hyper::body::Incoming;
use hyper::Request;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::amounts::decimal;
use crate::serve::{json, Body, Running};

/// A coin (wallet) at the platform.
#[derive(Debug, Clone)]
pub struct Coin {
    pub serial: String,
    pub currency: String,
    /// Minor units (hundredths).
    pub balance: u64,
}

/// A transfer template: from `source` to `destination`.
#[derive(Debug, Clone)]
pub struct Template {
    pub id: String,
    pub source: String,
    pub destination: String,
}

/// How the platform misbehaves on creating a request or executing a
/// transfer, until told otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// `503` before anything is created.
    Unavailable,
    /// The request is created, then the answer is `500`.
    FailAfterCreating,
    /// The answer is `500` and nothing is created (an internal error
    /// before the platform took the request).
    FailBeforeCreating,
}

/// Whether a bank request adds to the coin or takes from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    TopUp,
    Withdrawal,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::TopUp => "bank-top-ups",
            Kind::Withdrawal => "bank-withdrawals",
        }
    }
}

/// A top-up or withdrawal request.
#[derive(Debug, Clone, PartialEq)]
pub struct BankRequest {
    pub id: String,
    pub kind: Kind,
    pub coin: String,
    /// Minor units.
    pub amount: u64,
    pub commission: u64,
    pub external_id: String,
    /// `PROCESSING`, `ACCEPTED` or `DECLINED`.
    pub status: &'static str,
}

struct State {
    login: String,
    password: String,
    coins: Mutex<HashMap<String, Coin>>,
    templates: Vec<Template>,
    tokens: Mutex<Vec<String>>,
    token_requests: AtomicU64,
    next_id: AtomicU64,
    requests: Mutex<Vec<BankRequest>>,
    transfers: Mutex<Vec<Value>>,
    fault: Mutex<Fault>,
}

/// The platform, running; it stops when this is dropped.
pub struct SdkFinanceSim {
    state: Arc<State>,
    server: Running,
}

/// The service user's credentials the simulation accepts.
pub struct ServiceUser<'a> {
    pub login: &'a str,
    pub password: &'a str,
}

impl SdkFinanceSim {
    pub async fn start(
        user: ServiceUser<'_>,
        coins: Vec<Coin>,
        templates: Vec<Template>,
    ) -> std::io::Result<SdkFinanceSim> {
        SdkFinanceSim::start_on(
            TcpListener::bind("127.0.0.1:0").await?,
            user,
            coins,
            templates,
        )
    }

    pub fn start_on(
        listener: TcpListener,
        user: ServiceUser<'_>,
        coins: Vec<Coin>,
        templates: Vec<Template>,
    ) -> std::io::Result<SdkFinanceSim> {
        let state = Arc::new(State {
            login: user.login.to_owned(),
            password: user.password.to_owned(),
            coins: Mutex::new(coins.into_iter().map(|c| (c.serial.clone(), c)).collect()),
            templates,
            tokens: Mutex::new(Vec::new()),
            token_requests: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            requests: Mutex::new(Vec::new()),
            transfers: Mutex::new(Vec::new()),
            fault: Mutex::new(Fault::None),
        });
        let for_server = state.clone();
        let server = Running::start(listener, move |request| {
            let state = for_server.clone();
            async move { state.route(request).await }
        })?;
        Ok(SdkFinanceSim { state, server })
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn token_requests(&self) -> u64 {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// Every token issued so far is refused from now on.
    pub fn expire_tokens(&self) {
        lock(&self.state.tokens).clear();
    }

    pub fn set_fault(&self, fault: Fault) {
        *lock(&self.state.fault) = fault;
    }

    /// Every top-up and withdrawal request created, in order.
    pub fn requests(&self) -> Vec<BankRequest> {
        lock(&self.state.requests).clone()
    }

    /// Every transfer executed, as answered.
    pub fn transfers(&self) -> Vec<Value> {
        lock(&self.state.transfers).clone()
    }

    pub fn balance(&self, coin: &str) -> Option<u64> {
        lock(&self.state.coins).get(coin).map(|c| c.balance)
    }

    /// The operator accepts (`true`) or declines a request; `false` when
    /// it is not `PROCESSING`.
    pub fn decide(&self, request_identifier: &str, accept: bool) -> bool {
        self.state.decide(request_identifier, accept)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn fault(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json(status, &json!({ "code": code, "message": message }))
}

async fn json_body(request: Request<Incoming>) -> Option<Value> {
    let body = manifold_edge::read_request_body(request).await.ok()?;
    serde_json::from_slice(&body).ok()
}

/// A positive decimal of at most two places, in hundredths.
fn hundredths(value: Option<&Value>) -> Option<u64> {
    crate::amounts::hundredths(&crate::amounts::text_of(value?, true)?)
}

/// 1 % of the amount, at least 0.10.
fn commission(amount: u64) -> u64 {
    (amount / 100).max(10)
}

impl State {
    async fn route(&self, request: Request<Incoming>) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or("").to_owned();
        if (method.clone(), path.as_str()) == (Method::POST, "/authorization") {
            return self.authorization(request).await;
        }
        if !self.authorized(&request) {
            return fault(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "token expired or invalid",
            );
        }
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (&method, segments.as_slice()) {
            (&Method::POST, ["coins", "validate"]) => self.validate_coin(request).await,
            (&Method::POST, [kind @ ("bank-top-ups" | "bank-withdrawals"), "calculate"]) => {
                let body = json_body(request).await;
                match body.as_ref().and_then(|b| hundredths(b.get("amount"))) {
                    Some(amount) => json(
                        StatusCode::OK,
                        &json!({
                            "commission": decimal(commission(amount)),
                            "total": decimal(amount + if *kind == "bank-withdrawals" { commission(amount) } else { 0 }),
                        }),
                    ),
                    None => fault(StatusCode::BAD_REQUEST, "INVALID_AMOUNT", "amount"),
                }
            }
            (&Method::POST, ["bank-top-ups", "create-request", "with-bank"]) => {
                self.create(Kind::TopUp, request).await
            }
            (&Method::POST, ["bank-withdrawals", "with-bank"]) => {
                self.create(Kind::Withdrawal, request).await
            }
            (&Method::GET, [kind @ ("bank-top-ups" | "bank-withdrawals")]) => {
                let kind = if *kind == "bank-top-ups" {
                    Kind::TopUp
                } else {
                    Kind::Withdrawal
                };
                let external = form_urlencoded::parse(query.as_bytes())
                    .find(|(name, _)| name == "externalId")
                    .map(|(_, value)| value.into_owned())
                    .unwrap_or_default();
                let records: Vec<Value> = lock(&self.requests)
                    .iter()
                    .filter(|r| r.kind == kind && r.external_id == external)
                    .map(view)
                    .collect();
                json(StatusCode::OK, &json!({ "records": records }))
            }
            (&Method::GET, [kind @ ("bank-top-ups" | "bank-withdrawals"), id]) => {
                match lock(&self.requests)
                    .iter()
                    .find(|r| r.id == *id && r.kind.path() == *kind)
                {
                    Some(found) => json(StatusCode::OK, &view(found)),
                    None => fault(
                        StatusCode::NOT_FOUND,
                        "REQUEST_NOT_FOUND",
                        "no such request",
                    ),
                }
            }
            (
                &Method::POST,
                ["bank-top-ups" | "bank-withdrawals", id, decision @ ("accept" | "decline")],
            ) => {
                if self.decide(id, *decision == "accept") {
                    json(StatusCode::OK, &json!({ "requestIdentifier": id }))
                } else {
                    fault(
                        StatusCode::CONFLICT,
                        "NOT_PROCESSING",
                        "the request was decided",
                    )
                }
            }
            (&Method::POST, ["templates", "transfer", "view"]) => {
                let templates: Vec<Value> = self
                    .templates
                    .iter()
                    .map(|t| json!({ "id": t.id, "paymentToolType": "COIN", "source": t.source, "destination": t.destination }))
                    .collect();
                json(StatusCode::OK, &json!({ "records": templates }))
            }
            (&Method::POST, ["templates", "transfer", id, step @ ("calculate" | "execute")]) => {
                self.transfer(id, step == &"execute", request).await
            }
            _ => fault(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint"),
        }
    }

    async fn authorization(&self, request: Request<Incoming>) -> Response<Body> {
        self.token_requests.fetch_add(1, Ordering::SeqCst);
        let body = json_body(request).await.unwrap_or(Value::Null);
        if body["login"].as_str() != Some(&self.login)
            || body["password"].as_str() != Some(&self.password)
        {
            return fault(
                StatusCode::UNAUTHORIZED,
                "BAD_CREDENTIALS",
                "wrong login or password",
            );
        }
        let n = self.next_id.fetch_add(1, Ordering::SeqCst);
        let token = format!("sdkf-token-{n:08}-{:016x}", rand_part(n));
        lock(&self.tokens).push(token.clone());
        json(
            StatusCode::OK,
            &json!({
                "authorizationToken": { "token": token },
                "user": { "id": "service-user-1", "login": self.login },
            }),
        )
    }

    fn authorized(&self, request: &Request<Incoming>) -> bool {
        let Some(token) = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        lock(&self.tokens).iter().any(|t| t == token)
    }

    async fn validate_coin(&self, request: Request<Incoming>) -> Response<Body> {
        let body = json_body(request).await.unwrap_or(Value::Null);
        let serial = body["coinSerial"].as_str().unwrap_or("");
        match lock(&self.coins).get(serial) {
            Some(coin) => json(
                StatusCode::OK,
                &json!({ "coinSerial": coin.serial, "currency": coin.currency, "valid": true }),
            ),
            None => fault(StatusCode::NOT_FOUND, "COIN_NOT_FOUND", "no such coin"),
        }
    }

    async fn create(&self, kind: Kind, request: Request<Incoming>) -> Response<Body> {
        let body = json_body(request).await.unwrap_or(Value::Null);
        let Some(amount) = hundredths(body.get("amount")) else {
            return fault(StatusCode::BAD_REQUEST, "INVALID_AMOUNT", "amount");
        };
        let serial = body["coinSerial"].as_str().unwrap_or("").to_owned();
        let external_id = body["externalId"].as_str().unwrap_or("").to_owned();
        if body["bankId"].as_str().is_none_or(str::is_empty) {
            return fault(StatusCode::BAD_REQUEST, "BANK_REQUIRED", "bankId");
        }
        let current = *lock(&self.fault);
        if current == Fault::Unavailable {
            return fault(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "try later");
        }
        if current == Fault::FailBeforeCreating {
            return fault(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "try later");
        }
        let commission = commission(amount);
        {
            let mut coins = lock(&self.coins);
            let Some(coin) = coins.get_mut(&serial) else {
                return fault(StatusCode::NOT_FOUND, "COIN_NOT_FOUND", "no such coin");
            };
            if kind == Kind::Withdrawal {
                let held = amount + commission;
                if coin.balance < held {
                    return fault(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "INSUFFICIENT_FUNDS",
                        "the coin does not hold the amount and commission",
                    );
                }
                coin.balance -= held;
            }
        }
        let id = format!("req-{:06}", self.next_id.fetch_add(1, Ordering::SeqCst));
        let created = BankRequest {
            id,
            kind,
            coin: serial,
            amount,
            commission,
            external_id,
            status: "PROCESSING",
        };
        lock(&self.requests).push(created.clone());
        if current == Fault::FailAfterCreating {
            return fault(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "internal error",
            );
        }
        json(StatusCode::OK, &view(&created))
    }

    fn decide(&self, id: &str, accept: bool) -> bool {
        let mut requests = lock(&self.requests);
        let Some(found) = requests
            .iter_mut()
            .find(|r| r.id == id && r.status == "PROCESSING")
        else {
            return false;
        };
        found.status = if accept { "ACCEPTED" } else { "DECLINED" };
        let mut coins = lock(&self.coins);
        if let Some(coin) = coins.get_mut(&found.coin) {
            match (found.kind, accept) {
                (Kind::TopUp, true) => coin.balance += found.amount,
                (Kind::Withdrawal, false) => coin.balance += found.amount + found.commission,
                _ => {}
            }
        }
        true
    }

    async fn transfer(
        &self,
        id: &str,
        execute: bool,
        request: Request<Incoming>,
    ) -> Response<Body> {
        let body = json_body(request).await.unwrap_or(Value::Null);
        let Some(template) = self.templates.iter().find(|t| t.id == id) else {
            return fault(
                StatusCode::NOT_FOUND,
                "TEMPLATE_NOT_FOUND",
                "no such template",
            );
        };
        let Some(amount) = hundredths(body.get("amount")) else {
            return fault(StatusCode::BAD_REQUEST, "INVALID_AMOUNT", "amount");
        };
        let commission = commission(amount);
        if !execute {
            return json(
                StatusCode::OK,
                &json!({ "commission": decimal(commission), "total": decimal(amount + commission) }),
            );
        }
        if body["coinSerial"].as_str() != Some(template.source.as_str()) {
            return fault(
                StatusCode::FORBIDDEN,
                "NOT_TEMPLATE_OWNER",
                "the coin is not the template's source",
            );
        }
        let current = *lock(&self.fault);
        if current == Fault::Unavailable {
            return fault(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "try later");
        }
        {
            let mut coins = lock(&self.coins);
            let held = amount + commission;
            match coins.get(&template.source) {
                Some(coin) if coin.balance >= held => {}
                Some(_) => {
                    return fault(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "INSUFFICIENT_FUNDS",
                        "the coin does not hold the amount and commission",
                    )
                }
                None => return fault(StatusCode::NOT_FOUND, "COIN_NOT_FOUND", "no such coin"),
            }
            if let Some(source) = coins.get_mut(&template.source) {
                source.balance -= held;
            }
            if let Some(destination) = coins.get_mut(&template.destination) {
                destination.balance += amount;
            }
        }
        let answer = json!({
            "businessProcessId": format!("bp-{:06}", self.next_id.fetch_add(1, Ordering::SeqCst)),
            "status": "COMPLETED",
            "commission": decimal(commission),
        });
        lock(&self.transfers).push(answer.clone());
        if current == Fault::FailAfterCreating {
            return fault(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "internal error",
            );
        }
        json(StatusCode::OK, &answer)
    }
}

fn view(request: &BankRequest) -> Value {
    json!({
        "requestIdentifier": request.id,
        "status": request.status,
        "amount": decimal(request.amount),
        "commission": decimal(request.commission),
        "coinSerial": request.coin,
        "externalId": request.external_id,
    })
}

/// Token material that differs between runs and tokens; not a secret
/// generator (the simulation's tokens guard nothing).
fn rand_part(n: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_read_in_hundredths() {
        assert_eq!(hundredths(Some(&json!("12.34"))), Some(1234));
        assert_eq!(hundredths(Some(&json!("12.3"))), Some(1230));
        assert_eq!(hundredths(Some(&json!("7"))), Some(700));
        assert_eq!(hundredths(Some(&json!(5))), Some(500));
        for bad in [
            json!("0"),
            json!("1.234"),
            json!("1."),
            json!("-1"),
            json!(null),
        ] {
            assert_eq!(hundredths(Some(&bad)), None, "{bad}");
        }
        assert_eq!(decimal(1234), "12.34");
        assert_eq!(commission(1234), 12);
        assert_eq!(commission(500), 10);
    }
}
