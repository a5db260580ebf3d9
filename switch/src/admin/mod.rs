//! The host's admin API: its own listener (`[admin]`, loopback only) and its
//! own credentials (operators' bearer tokens, known by SHA-256; never an
//! app's key).
//!
//! | request | credential | answer |
//! |---|---|---|
//! | `GET /health` | none | 200 while the process serves |
//! | `GET /ready` | none | 200 when app calls can be served, else 503 and why |
//! | `GET /metrics` | operator | Prometheus text ([`crate::metrics`]) |
//! | `GET /admin/invoice?app=&from=&to=[&format=json\|csv]` | operator | the invoice ([`crate::invoice`]) |
//! | `GET /admin/transaction?app=&transaction_ref=` | operator | one transaction as stored |
//! | `GET /admin/transactions?app=&from=&to=[&status=][&limit=]` | operator | the transactions begun in `[from, to)` |
//! | `POST /admin/reload` | operator | reads the configuration file again, as SIGHUP does |
//!
//! Every request that presents a credential is written to the audit log
//! ([`audit`]) before it is acted on — a refused one too — and an action
//! whose line cannot be written is refused (503). `/metrics` scrapes are
//! not actions and are not written. Errors are `{"error": code, "message"}`.

pub mod audit;

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use manifold_billing::Period;
use manifold_config::{AdminConfig, ApiKeyDigest, Operator};
use manifold_edge::{serve, Body, EdgeOptions, Peer};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::http::SwitchState;
use crate::server::{ReloadError, Reloader, StartError, Switch};
use crate::store::{transaction_json, Operation, Store, StoreError};
use audit::{AuditEntry, AuditLog};

/// The most transactions one listing returns.
pub const MAX_LISTED: usize = 1_000;
/// The most transaction references a listing collects from the period's
/// metering before it stops (and says it was cut short).
const MAX_SCANNED: usize = 100_000;

pub struct Admin {
    state: Arc<SwitchState>,
    reloader: Reloader,
    config_path: PathBuf,
    operators: Vec<Operator>,
    audit: AuditLog,
}

impl Admin {
    /// The admin API of `switch`, reloading from `config_path`; opens the
    /// audit log.
    pub fn new(
        switch: &Switch,
        config: &AdminConfig,
        config_path: PathBuf,
    ) -> Result<Admin, StartError> {
        let audit = AuditLog::open(&config.audit_log).map_err(|error| StartError::Admin {
            reason: format!(
                "the audit log {} cannot be opened: {error}",
                config.audit_log.display()
            ),
        })?;
        Ok(Admin {
            state: switch.state().clone(),
            reloader: switch.reloader(),
            config_path,
            operators: config.operators.clone(),
            audit,
        })
    }

    /// Answers on `listener` until `shutdown`.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let admin = Arc::new(self);
        let handler = move |request, peer| handle(admin.clone(), request, peer);
        serve(listener, handler, EdgeOptions::default(), shutdown).await;
    }

    fn operator(&self, request: &Request<Incoming>) -> Option<&Operator> {
        let token = request
            .headers()
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?;
        let digest = ApiKeyDigest::of(token.trim());
        self.operators.iter().find(|o| o.token == digest)
    }
}

struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
}

fn fail(status: StatusCode, code: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        status,
        code,
        message: message.into(),
    }
}

fn bad_request(message: impl Into<String>) -> Failure {
    fail(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn json_reply(status: StatusCode, value: &Value) -> Response<Body> {
    manifold_edge::json_response(status, value)
}

fn text_reply(content_type: &'static str, text: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

impl Failure {
    fn response(&self) -> Response<Body> {
        json_reply(
            self.status,
            &json!({"error": self.code, "message": self.message}),
        )
    }
}

async fn handle(admin: Arc<Admin>, request: Request<Incoming>, peer: Peer) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, "/health") => return json_reply(StatusCode::OK, &json!({"status": "ok"})),
        (&Method::GET, "/ready") => return ready(&admin),
        _ => {}
    }
    let target = match request.uri().query() {
        Some(query) => format!("{method} {path}?{query}"),
        None => format!("{method} {path}"),
    };
    let request_id = manifold_provider::ErrorId::new().to_string();
    let entry = |operator, action, outcome| AuditEntry {
        at: manifold_billing::format_ms(crate::engine::now_ms()),
        request_id: &request_id,
        operator,
        peer: peer.address.to_string(),
        action,
        target: &target,
        outcome,
    };
    let Some(operator) = admin.operator(&request) else {
        let refused = fail(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send an operator's token: Authorization: Bearer <token>",
        );
        if let Err(error) = admin
            .audit
            .record(&entry(None, "refused", Some(refused.status.as_u16())))
            .await
        {
            tracing::error!(%error, "the admin audit log cannot be written");
        }
        return refused.response();
    };
    let query = request.uri().query().unwrap_or("").to_owned();
    let action = match (&method, path.as_str()) {
        (&Method::GET, "/metrics") => {
            return text_reply(
                "text/plain; version=0.0.4; charset=utf-8",
                admin.state.metrics.render(),
            )
        }
        (&Method::GET, "/admin/invoice") => "invoice",
        (&Method::GET, "/admin/transaction") => "transaction",
        (&Method::GET, "/admin/transactions") => "transactions",
        (&Method::POST, "/admin/reload") => "reload",
        (_, "/admin/invoice" | "/admin/transaction" | "/admin/transactions" | "/admin/reload") => {
            return fail(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed on {path}"),
            )
            .response()
        }
        _ => {
            return fail(
                StatusCode::NOT_FOUND,
                "no_such_endpoint",
                format!("no admin endpoint {path}"),
            )
            .response()
        }
    };
    if let Err(error) = admin
        .audit
        .record(&entry(Some(&operator.name), action, None))
        .await
    {
        tracing::error!(%error, path = %admin.audit.path().display(), "the admin audit log cannot be written");
        return fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            "the audit log cannot be written, so nothing is done",
        )
        .response();
    }
    let response = match action {
        "invoice" => invoice(&admin, &query).await,
        "transaction" => transaction(&admin, &query).await,
        "transactions" => transactions(&admin, &query).await,
        _ => reload(&admin),
    }
    .unwrap_or_else(|failure| failure.response());
    let outcome = Some(response.status().as_u16());
    if let Err(error) = admin
        .audit
        .record(&entry(Some(&operator.name), action, outcome))
        .await
    {
        tracing::error!(%error, "the admin audit log cannot be written");
    }
    tracing::info!(operator = %operator.name, action, status = response.status().as_u16(), "admin action");
    response
}

fn ready(admin: &Admin) -> Response<Body> {
    match admin.state.storage.admit() {
        Ok(_) => json_reply(StatusCode::OK, &json!({"ready": true})),
        Err(error) => json_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"ready": false, "reason": error.to_string()}),
        ),
    }
}

/// The query string's fields; a field given twice is refused.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(text: &str, allowed: &[&str]) -> Result<Query, Failure> {
        let fields: Vec<(String, String)> = form_urlencoded::parse(text.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let mut seen = BTreeSet::new();
        for (key, _) in &fields {
            if !allowed.contains(&key.as_str()) {
                return Err(bad_request(format!(
                    "`{}` is not a parameter here; expected {}",
                    key.chars().take(64).collect::<String>(),
                    allowed.join(", ")
                )));
            }
            if !seen.insert(key.as_str()) {
                return Err(bad_request(format!("`{key}` is given twice")));
            }
        }
        Ok(Query(fields))
    }

    fn optional(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn required(&self, key: &str) -> Result<&str, Failure> {
        self.optional(key)
            .filter(|value| !value.is_empty())
            .ok_or_else(|| bad_request(format!("`{key}` is required")))
    }

    fn period(&self) -> Result<Period, Failure> {
        Period::parse(self.required("from")?, self.required("to")?)
            .map_err(|error| bad_request(error.to_string()))
    }
}

/// Runs a long read of the store on a blocking thread: sled's scans are
/// synchronous, and an invoice over a busy year would otherwise hold a
/// runtime worker, and the app calls queued behind it, until it ended.
async fn off_the_runtime<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
) -> Result<T, Failure> {
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || runtime.block_on(work))
        .await
        .map_err(|error| {
            tracing::error!(%error, "an admin read of the store failed");
            fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the read failed inside the switch; see its log",
            )
        })
}

fn store_failure(error: impl std::fmt::Display) -> Failure {
    tracing::error!(%error, "an admin request could not read the store");
    fail(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the store could not be read; see the switch's log",
    )
}

fn current_store(admin: &Admin) -> Result<Arc<dyn crate::store::Store>, Failure> {
    admin
        .state
        .storage
        .current()
        .map(|generation| generation.store().clone())
        .ok_or_else(|| store_failure("no storage generation is open"))
}

async fn invoice(admin: &Admin, query: &str) -> Result<Response<Body>, Failure> {
    let query = Query::parse(query, &["app", "from", "to", "format"])?;
    let app = query.required("app")?;
    let period = query.period()?;
    let csv = match query.optional("format").unwrap_or("json") {
        "json" => false,
        "csv" => true,
        _ => return Err(bad_request("`format` must be json or csv")),
    };
    let store = current_store(admin)?;
    let fees = admin.state.fees();
    let app_id = app.to_owned();
    let invoice = off_the_runtime(async move {
        crate::invoice::invoice(store.as_ref(), &fees, &app_id, period).await
    })
    .await?
    .map_err(|error| match error {
        crate::invoice::InvoiceError::Store(error) => store_failure(error),
        crate::invoice::InvoiceError::Billing(error) => fail(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invoice_failed",
            error.to_string(),
        ),
    })?;
    Ok(if csv {
        let text = invoice.to_csv().map_err(|error| {
            fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "invoice_failed",
                error.to_string(),
            )
        })?;
        text_reply("text/csv; charset=utf-8", text)
    } else {
        text_reply("application/json", invoice.to_json())
    })
}

async fn transaction(admin: &Admin, query: &str) -> Result<Response<Body>, Failure> {
    let query = Query::parse(query, &["app", "transaction_ref"])?;
    let app = query.required("app")?;
    let transaction_ref = query.required("transaction_ref")?;
    let store = current_store(admin)?;
    match show_transaction(store.as_ref(), app, transaction_ref).await {
        Ok(Some(record)) => Ok(json_reply(StatusCode::OK, &record)),
        Ok(None) => Err(fail(
            StatusCode::NOT_FOUND,
            "transaction_not_found",
            format!("app `{app}` has no transaction `{transaction_ref}`"),
        )),
        Err(error) => Err(store_failure(error)),
    }
}

async fn transactions(admin: &Admin, query: &str) -> Result<Response<Body>, Failure> {
    let query = Query::parse(query, &["app", "from", "to", "status", "limit"])?;
    let app = query.required("app")?;
    let period = query.period()?;
    let limit = match query.optional("limit") {
        None => DEFAULT_LISTED,
        Some(text) => parse_limit(text).map_err(bad_request)?,
    };
    let store = current_store(admin)?;
    let (app_id, status) = (app.to_owned(), query.optional("status").map(str::to_owned));
    let listing = off_the_runtime(async move {
        list_transactions(store.as_ref(), &app_id, period, status.as_deref(), limit).await
    })
    .await?
    .map_err(store_failure)?;
    Ok(json_reply(StatusCode::OK, &listing))
}

/// How many transactions a listing returns unless asked.
pub const DEFAULT_LISTED: usize = 100;

/// A listing's `limit`, 1 to [`MAX_LISTED`].
pub fn parse_limit(text: &str) -> Result<usize, String> {
    text.parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_LISTED).contains(n))
        .ok_or_else(|| format!("`limit` must be 1 to {MAX_LISTED}"))
}

/// One transaction as stored (its requests, answers, history), for a person;
/// what `manifold tx show` prints.
pub async fn show_transaction(
    store: &dyn Store,
    app: &str,
    transaction_ref: &str,
) -> Result<Option<Value>, StoreError> {
    Ok(store
        .transaction(app, transaction_ref)
        .await?
        .map(|record| transaction_json(&record)))
}

/// The transactions `app` began in `period` (optionally only those now in
/// `status`), oldest first, at most `limit`; what `manifold tx list` prints.
/// The metering is the time index: each transaction was begun by a
/// `/transact` metered with its reference, so no listing scans the store.
pub async fn list_transactions(
    store: &dyn Store,
    app: &str,
    period: Period,
    status: Option<&str>,
    limit: usize,
) -> Result<Value, StoreError> {
    let mut begun = Vec::new();
    let mut seen = BTreeSet::new();
    let mut truncated = false;
    store
        .each_metered(app, period.from_ms, period.until_ms, &mut |call| {
            if call.operation != Operation::Transact || call.repeat {
                return;
            }
            if let Some(reference) = &call.transaction_ref {
                if seen.len() >= MAX_SCANNED {
                    truncated = true;
                } else if seen.insert(reference.clone()) {
                    begun.push((call.at_ms, reference.clone()));
                }
            }
        })
        .await?;
    begun.sort();
    let mut listed = Vec::new();
    for (_, reference) in begun {
        if listed.len() == limit {
            truncated = true;
            break;
        }
        let Some(record) = store.transaction(app, &reference).await? else {
            continue;
        };
        if status.is_some_and(|wanted| wanted != record.status.as_str()) {
            continue;
        }
        listed.push(Value::Object(record.summary_json()));
    }
    Ok(json!({
        "app_id": app, "from": period.from_text(), "to": period.to_text(),
        "transactions": listed, "truncated": truncated,
    }))
}

fn reload(admin: &Admin) -> Result<Response<Body>, Failure> {
    match admin.reloader.reload_file(&admin.config_path) {
        Ok(changes) => Ok(json_reply(
            StatusCode::OK,
            &json!({
                "reloaded": admin.config_path.display().to_string(),
                "added": changes.added, "changed": changes.changed,
                "removed": changes.removed, "unchanged": changes.unchanged,
                "note": "apps and fees apply now; other settings at a restart",
            }),
        )),
        Err(ReloadError::Config(error)) => Ok(json_reply(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({
                "error": "config_refused",
                "message": "the file has problems; the configuration of before still serves",
                "problems": error.problems.iter().map(|p| json!({"key": p.key, "problem": p.problem})).collect::<Vec<_>>(),
            }),
        )),
        Err(ReloadError::Refused(refused)) => Err(fail(
            StatusCode::CONFLICT,
            "reload_refused",
            refused.to_string(),
        )),
    }
}
