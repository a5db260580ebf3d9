//! Seed 000, Skopa: a neobank whose users hold access/refresh token pairs,
//! and whose money-moving endpoints ask for a second factor first
//! (`428 Precondition Required`, codes already sent to the user's devices).
//!
//! | | seed says | we assumed |
//! |---|---|---|
//! | tokens | `POST /auth/login` (credentials) and `POST /auth/refresh` give a pair `access_token`, `refresh_token`; `Authorization: Bearer <access_token>`; `401` once it expired | refresh takes `{"refresh_token"}` and answers `{"access_token", "refresh_token"}`; the refresh token given stays valid (the pair's new one is the same), so the credential the customer gave the app keeps working; an unknown one is `401 {"code": "invalid_refresh_token"}` |
//! | 2FA | `428` "contains list of methods to be verified (e.g. email/sms)" and means the codes were sent; `POST /auth/2fa/verify` (all codes) or `/auth/2fa/verify_one` (one at a time) | the `428` body is `{"code": "2fa_required", "verification_id", "methods": ["sms"]}`; `verify_one` `{"verification_id", "method", "code"}` → `{"verified": [...], "remaining": [...]}`, a wrong code `400 {"code": "invalid_code"}`, an unknown or used verification `404`; `verify` `{"verification_id", "codes": {"sms": "…"}}`; once every method is verified the original request is sent again with `X-Verification-Id`, which it consumes |
//! | `POST /transfer` | `receiver_id` (a Skopa user), `amount` | plus our `reference` (kept and listed, not deduplicated); amounts are decimal strings in major units; answers `200 {"id", "status": "completed", "amount", "receiver_id"}`; an unknown receiver `422 {"code": "receiver_not_found"}`, too little money `422 {"code": "insufficient_funds"}` |
//! | `POST /withdrawal/make` | `bank_account_id` (one of the user's banks), `amount` | as a transfer; another user's or no such bank account `422 {"code": "bank_account_not_found"}`; the account is debited at once and the answer is `completed` (the payout to the bank is Skopa's business) |
//! | lists | `limit`, `search_after`, `has_more`, `last_id`; `GET /payment_gateway/transactions` | records `{"id", "type", "amount", "reference", "counterparty", "created_at"}`, oldest first; `limit` 1 to 100 (default 20) |
//! | balance | no endpoint described | none: the connector offers no `get_balance` |
//! | idempotency | not described | none |
//!
//! What tests can do through [`SkopaSim`]: read the codes "sent" to a
//! user's devices, count refresh requests and executed transfers and
//! withdrawals, expire access tokens, read balances, and set a [`Fault`].

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

/// A Skopa user.
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub refresh_token: String,
    /// Minor units (hundredths).
    pub balance: u64,
    /// The 2FA methods their money-moving calls ask for (`sms`, `email`).
    pub methods: Vec<String>,
    /// Their saved bank accounts' ids.
    pub bank_accounts: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// `503` before anything is done.
    Unavailable,
    /// The money moves, then the answer is `500`.
    FailAfterExecuting,
}

/// One money-moving call a verification is for.
#[derive(Debug, Clone, PartialEq)]
struct Operation {
    user: String,
    path: String,
    body: Value,
}

struct Verification {
    operation: Operation,
    codes: HashMap<String, String>,
    verified: Vec<String>,
}

struct State {
    users: Mutex<HashMap<String, User>>,
    access: Mutex<HashMap<String, String>>,
    refreshes: AtomicU64,
    next: AtomicU64,
    verifications: Mutex<HashMap<String, Verification>>,
    ledger: Mutex<Vec<(String, Value)>>,
    fault: Mutex<Fault>,
}

pub struct SkopaSim {
    state: Arc<State>,
    server: Running,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn fault(status: StatusCode, code: &str) -> Response<Body> {
    json(status, &json!({ "code": code }))
}

async fn json_body(request: Request<Incoming>) -> Value {
    match manifold_edge::read_request_body(request).await {
        Ok(body) => serde_json::from_slice(&body).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// A positive decimal of at most two places, in hundredths.
fn hundredths(value: &Value) -> Option<u64> {
    crate::amounts::hundredths(value.as_str()?)
}

impl SkopaSim {
    pub async fn start(users: Vec<User>) -> std::io::Result<SkopaSim> {
        SkopaSim::start_on(TcpListener::bind("127.0.0.1:0").await?, users)
    }

    pub fn start_on(listener: TcpListener, users: Vec<User>) -> std::io::Result<SkopaSim> {
        let state = Arc::new(State {
            users: Mutex::new(users.into_iter().map(|u| (u.id.clone(), u)).collect()),
            access: Mutex::new(HashMap::new()),
            refreshes: AtomicU64::new(0),
            next: AtomicU64::new(1),
            verifications: Mutex::new(HashMap::new()),
            ledger: Mutex::new(Vec::new()),
            fault: Mutex::new(Fault::None),
        });
        let for_server = state.clone();
        let server = Running::start(listener, move |request| {
            let state = for_server.clone();
            async move { state.route(request).await }
        })?;
        Ok(SkopaSim { state, server })
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn refreshes(&self) -> u64 {
        self.state.refreshes.load(Ordering::SeqCst)
    }

    /// Every access token issued so far answers `401` from now on.
    pub fn expire_tokens(&self) {
        lock(&self.state.access).clear();
    }

    pub fn set_fault(&self, fault: Fault) {
        *lock(&self.state.fault) = fault;
    }

    pub fn balance(&self, user: &str) -> Option<u64> {
        lock(&self.state.users).get(user).map(|u| u.balance)
    }

    /// Transfers and withdrawals executed, as listed.
    pub fn executed(&self) -> Vec<Value> {
        lock(&self.state.ledger)
            .iter()
            .map(|(_, record)| record.clone())
            .collect()
    }

    /// The code last "sent" to `user`'s device for `method`.
    pub fn code_sent(&self, user: &str, method: &str) -> Option<String> {
        let verifications = lock(&self.state.verifications);
        let mut latest: Option<(u64, String)> = None;
        for (id, verification) in verifications.iter() {
            if verification.operation.user != user {
                continue;
            }
            let number: u64 = id.trim_start_matches("ver-").parse().unwrap_or(0);
            if let Some(code) = verification.codes.get(method) {
                if latest.as_ref().is_none_or(|(n, _)| number > *n) {
                    latest = Some((number, code.clone()));
                }
            }
        }
        latest.map(|(_, code)| code)
    }
}

impl State {
    async fn route(&self, request: Request<Incoming>) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or("").to_owned();
        match (&method, path.as_str()) {
            (&Method::POST, "/auth/refresh") => return self.refresh(request).await,
            (&Method::POST, "/auth/login") => {
                return fault(StatusCode::UNAUTHORIZED, "invalid_credentials")
            }
            _ => {}
        }
        let Some(user) = self.user_of(&request) else {
            return fault(StatusCode::UNAUTHORIZED, "unauthorized");
        };
        let verification = request
            .headers()
            .get("x-verification-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match (&method, path.as_str()) {
            (&Method::POST, "/transfer" | "/withdrawal/make") => {
                let body = json_body(request).await;
                self.move_money(&user, &path, body, verification)
            }
            (&Method::POST, "/auth/2fa/verify_one") => {
                let body = json_body(request).await;
                let (method, code) = (body["method"].as_str(), body["code"].as_str());
                self.verify(&user, &body, |v| match (method, code) {
                    (Some(m), Some(c)) if v.codes.get(m).map(String::as_str) == Some(c) => {
                        if !v.verified.iter().any(|x| x == m) {
                            v.verified.push(m.to_owned());
                        }
                        true
                    }
                    _ => false,
                })
            }
            (&Method::POST, "/auth/2fa/verify") => {
                let body = json_body(request).await;
                let given = body["codes"].clone();
                self.verify(&user, &body, |v| {
                    let all = v
                        .codes
                        .iter()
                        .all(|(m, c)| given[m].as_str() == Some(c.as_str()));
                    if all {
                        v.verified = v.codes.keys().cloned().collect();
                    }
                    all
                })
            }
            (&Method::GET, "/payment_gateway/transactions") => self.list(&user, &query),
            _ => fault(StatusCode::NOT_FOUND, "not_found"),
        }
    }

    async fn refresh(&self, request: Request<Incoming>) -> Response<Body> {
        self.refreshes.fetch_add(1, Ordering::SeqCst);
        let body = json_body(request).await;
        let given = body["refresh_token"].as_str().unwrap_or("");
        let Some(user) = lock(&self.users)
            .values()
            .find(|u| u.refresh_token == given)
            .map(|u| u.id.clone())
        else {
            return fault(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
        };
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let access = format!("skopa-access-{user}-{n:08}");
        lock(&self.access).insert(access.clone(), user);
        json(
            StatusCode::OK,
            &json!({ "access_token": access, "refresh_token": given }),
        )
    }

    fn user_of(&self, request: &Request<Incoming>) -> Option<String> {
        let token = request
            .headers()
            .get(http::header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?;
        lock(&self.access).get(token).cloned()
    }

    fn move_money(
        &self,
        user: &str,
        path: &str,
        body: Value,
        verification: Option<String>,
    ) -> Response<Body> {
        let Some(amount) = hundredths(&body["amount"]) else {
            return fault(StatusCode::BAD_REQUEST, "invalid_amount");
        };
        let current = *lock(&self.fault);
        if current == Fault::Unavailable {
            return fault(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
        }
        let operation = Operation {
            user: user.to_owned(),
            path: path.to_owned(),
            body: body.clone(),
        };
        // A verified verification of this very operation lets it through,
        // once; anything else asks for one.
        let verified = verification.and_then(|id| {
            let mut verifications = lock(&self.verifications);
            let done = verifications.get(&id).is_some_and(|v| {
                v.operation == operation && v.codes.keys().all(|m| v.verified.contains(m))
            });
            if done {
                verifications.remove(&id);
            }
            done.then_some(id)
        });
        let methods = lock(&self.users)
            .get(user)
            .map(|u| u.methods.clone())
            .unwrap_or_default();
        if verified.is_none() && !methods.is_empty() {
            let n = self.next.fetch_add(1, Ordering::SeqCst);
            let id = format!("ver-{n:06}");
            let codes = methods
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    (
                        m.clone(),
                        format!("{:06}", (n * 7919 + i as u64 * 104_729) % 1_000_000),
                    )
                })
                .collect();
            lock(&self.verifications).insert(
                id.clone(),
                Verification {
                    operation,
                    codes,
                    verified: Vec::new(),
                },
            );
            return json(
                StatusCode::PRECONDITION_REQUIRED,
                &json!({ "code": "2fa_required", "verification_id": id, "methods": methods }),
            );
        }
        let mut users = lock(&self.users);
        let (kind, counterparty, status) = if path == "/transfer" {
            let receiver = body["receiver_id"].as_str().unwrap_or("").to_owned();
            if receiver == user || !users.contains_key(&receiver) {
                return fault(StatusCode::UNPROCESSABLE_ENTITY, "receiver_not_found");
            }
            ("transfer", receiver, "completed")
        } else {
            let account = body["bank_account_id"].as_str().unwrap_or("").to_owned();
            if !users[user].bank_accounts.contains(&account) {
                return fault(StatusCode::UNPROCESSABLE_ENTITY, "bank_account_not_found");
            }
            ("withdrawal", account, "completed")
        };
        if users[user].balance < amount {
            return fault(StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds");
        }
        if let Some(payer) = users.get_mut(user) {
            payer.balance -= amount;
        }
        if kind == "transfer" {
            if let Some(payee) = users.get_mut(&counterparty) {
                payee.balance += amount;
            }
        }
        drop(users);
        let id = format!("tx-{:06}", self.next.fetch_add(1, Ordering::SeqCst));
        let record = json!({
            "id": id, "type": kind, "amount": decimal(amount), "status": status,
            "reference": body["reference"], "counterparty": counterparty,
            "created_at": "2026-12-03T00:00:00Z",
        });
        lock(&self.ledger).push((user.to_owned(), record.clone()));
        if current == Fault::FailAfterExecuting {
            return fault(StatusCode::INTERNAL_SERVER_ERROR, "internal_error");
        }
        json(StatusCode::OK, &record)
    }

    fn verify(
        &self,
        user: &str,
        body: &Value,
        check: impl FnOnce(&mut Verification) -> bool,
    ) -> Response<Body> {
        let id = body["verification_id"].as_str().unwrap_or("");
        let mut verifications = lock(&self.verifications);
        let Some(verification) = verifications
            .get_mut(id)
            .filter(|v| v.operation.user == user)
        else {
            return fault(StatusCode::NOT_FOUND, "verification_not_found");
        };
        if !check(verification) {
            return fault(StatusCode::BAD_REQUEST, "invalid_code");
        }
        let remaining: Vec<&String> = verification
            .codes
            .keys()
            .filter(|m| !verification.verified.contains(m))
            .collect();
        json(
            StatusCode::OK,
            &json!({ "verified": verification.verified, "remaining": remaining }),
        )
    }

    fn list(&self, user: &str, query: &str) -> Response<Body> {
        let mut limit = 20usize;
        let mut after: Option<String> = None;
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*name {
                "limit" => match value.parse::<usize>() {
                    Ok(n) if (1..=100).contains(&n) => limit = n,
                    _ => return fault(StatusCode::BAD_REQUEST, "invalid_limit"),
                },
                "search_after" => after = Some(value.into_owned()),
                _ => {}
            }
        }
        let ledger = lock(&self.ledger);
        let mine: Vec<&Value> = ledger
            .iter()
            .filter(|(owner, _)| owner == user)
            .map(|(_, record)| record)
            .collect();
        let start = match &after {
            Some(id) => match mine.iter().position(|r| r["id"] == id.as_str()) {
                Some(at) => at + 1,
                None => return fault(StatusCode::BAD_REQUEST, "invalid_search_after"),
            },
            None => 0,
        };
        let page: Vec<&Value> = mine.iter().skip(start).take(limit).copied().collect();
        let has_more = start + page.len() < mine.len();
        json(
            StatusCode::OK,
            &json!({
                "records": page,
                "has_more": has_more,
                "last_id": page.last().map(|r| r["id"].clone()),
            }),
        )
    }
}
