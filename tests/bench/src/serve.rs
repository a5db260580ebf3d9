//! The server side of the benchmark: what runs in the `manifold-bench
//! serve-…` child processes.
//!
//! - [`switch`]: the real switch, opened from a TOML file with
//!   `Switch::open_with_registry(&config, &compiled_providers(), …).await?.serve_with(listener, options, shutdown)`, as the
//!   `manifold` binary does (with no per-address cap: see
//!   `bench_edge_options`).
//! - [`json`]: baseline (a), a bare hyper server on the same accept loop
//!   (`manifold_edge::serve`) answering the switch's own
//!   `get_balance` answer, byte for byte: the limit of one HTTP round trip.
//! - [`durable`]: baseline (a′), the same, but each request body is written
//!   to sled and acknowledged only after a group-commit flush
//!   ([`GroupCommit`], with the switch's commit window and its rule for
//!   opening it, `baseline_commit`): the limit of a durable acknowledgement.
//! - [`proxy`]: baseline (b), a bare hyper proxy to the provider
//!   microservice that checks the app's signature and signs the hop: the
//!   cost of one hop. With `--record`, diagnostic (b′): it also records each
//!   answer with (a′)'s group commit before relaying it.
//! - [`provider`]: that provider microservice, the demo bank.
//!
//! Each prints `<name> listening on <addr> pid <pid>` once it accepts, and
//! stops gracefully when its stdin closes (or on SIGINT/SIGTERM).

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use manifold_config::SwitchConfig;
use manifold_crypto::message_signature::SigningKey;
use manifold_crypto::{AppKey, SecretString};
use manifold_edge::signature::{SignatureCheck, SignedParts};
use manifold_edge::{read_body, serve, shutdown_signal, Body, BodyLimits, EdgeOptions, Peer};
use manifold_provider::durable::CallsInFlight;
use manifold_provider::hop::DEFAULT_HOP_MAX_SKEW;
use manifold_provider::notify::OutboxNotifier;
use manifold_provider::server::ProviderServer;
use manifold_provider::{GroupCommit, HopSigner, HopVerifier};
use manifold_provider_sdk::microservice;
use manifold_switch::Switch;

use crate::config::HOP_SECRET;
use crate::workload::{PROVIDER, QUICK_APP};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the configuration is not valid: {0}")]
    Config(#[from] manifold_config::ConfigError),
    #[error("the switch could not start: {0}")]
    Switch(#[from] manifold_switch::server::StartError),
    #[error("{what}: {reason}")]
    Io { what: String, reason: String },
    #[error("the store failed: {0}")]
    Store(String),
}

pub(crate) fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
    let what = what.into();
    move |error| ServeError::Io {
        what,
        reason: error.to_string(),
    }
}

/// Completes when stdin reaches its end (the parent closed it or died), or
/// on SIGINT/SIGTERM.
pub async fn stop_requested() {
    let stdin_closed = async {
        let mut stdin = tokio::io::stdin();
        let mut buffer = [0u8; 64];
        while let Ok(read) = stdin.read(&mut buffer).await {
            if read == 0 {
                break;
            }
        }
    };
    tokio::select! {
        _ = stdin_closed => {}
        _ = shutdown_signal() => {}
    }
}

async fn bind(name: &str) -> Result<TcpListener, ServeError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io_error("binding 127.0.0.1:0"))?;
    let addr = listener
        .local_addr()
        .map_err(io_error("reading the bound address"))?;
    // The parent reads this line to learn the address and the pid to watch.
    println!("{name} listening on {addr} pid {}", std::process::id());
    Ok(listener)
}

/// Runs the switch configured in `config_path` until stop is requested.
pub async fn switch(config_path: &Path) -> Result<(), ServeError> {
    let config = SwitchConfig::load(config_path)?;
    let switch = Switch::open_with_registry(
        &config,
        &manifold_cli::compiled_providers(),
        Default::default(),
    )
    .await?;
    let listener = bind("switch").await?;
    switch
        .serve_with(listener, bench_edge_options(), stop_requested())
        .await;
    Ok(())
}

fn canned(body: &Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body.clone()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn failure(status: StatusCode, message: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(message.as_bytes())));
    *response.status_mut() = status;
    response
}

async fn serve_until_stopped<H, F>(
    listener: TcpListener,
    handler: H,
    stop: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    serve(listener, handler, bench_edge_options(), stop).await;
}

/// The edge's defaults, except that one address may hold every connection:
/// all of the load generator's connections come from 127.0.0.1, and the
/// per-address cap protects a server from one client, which here is the
/// point. Every server in the benchmark uses the same options.
fn bench_edge_options() -> EdgeOptions {
    let defaults = EdgeOptions::default();
    EdgeOptions {
        max_connections_per_address: defaults.max_connections,
        ..defaults
    }
}

/// The demo bank as a provider microservice: what the `demo-provider` binary
/// runs with its default flags (settings, outbox notifier, sweeper, final
/// flush), started from this binary so the benchmark needs no second build.
pub async fn provider(data: &Path, outbox: &Path) -> Result<(), ServeError> {
    let store_error = |error: String| ServeError::Store(error);
    let db = sled::open(data).map_err(|e| store_error(e.to_string()))?;
    let commit = GroupCommit::start(db.clone()).map_err(io_error("starting the group commit"))?;
    let notifier = Arc::new(OutboxNotifier::new(outbox.to_path_buf()));
    let provider = manifold_demo_provider::open(
        &db,
        commit.clone(),
        &data.join("upstream-ledger"),
        notifier,
        crate::config::demo_settings(),
    )
    .map_err(|e| store_error(e.to_string()))?;
    let listener = bind("demo-provider").await?;
    // Signed calls only, as the demo-provider binary requires.
    let server = ProviderServer {
        edge: bench_edge_options(),
        ..ProviderServer::new(HopVerifier::new(
            &SecretString::from(HOP_SECRET),
            PROVIDER,
            DEFAULT_HOP_MAX_SKEW,
        ))
    };
    microservice::run(
        listener,
        Arc::new(provider),
        commit,
        server,
        stop_requested(),
    )
    .await;
    Ok(())
}

/// What every server must do with an app's call before acting on it, done
/// by the baselines as the switch does it: read the body under the edge's
/// limits and check the app's RFC 9421 signature over it. (The baselines
/// serve the `quick` app, whose `get_balance` calls they stand in for.)
struct AppSignature {
    check: SignatureCheck,
    key: SigningKey,
}

impl AppSignature {
    fn new() -> AppSignature {
        let key = AppKey::derive(&SecretString::from(QUICK_APP.secret));
        AppSignature {
            check: SignatureCheck::new(Duration::from_secs(300)),
            key: SigningKey::for_app(&key),
        }
    }

    /// The body, once its signature is good; the answer to send otherwise.
    async fn read_verified(&self, request: Request<Incoming>) -> Result<Bytes, Response<Body>> {
        let limits = BodyLimits::of(&request);
        let (parts, body) = request.into_parts();
        let Ok(body) = read_body(body, limits).await else {
            return Err(failure(StatusCode::BAD_REQUEST, "unreadable body"));
        };
        let signed = SignedParts {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            headers: &parts.headers,
            body: &body,
        };
        match self.check.verify_signature(&self.key, QUICK_APP.id, signed) {
            Ok(_) => Ok(body),
            Err(_) => Err(failure(StatusCode::UNAUTHORIZED, "bad signature")),
        }
    }
}

/// Baseline (a): reads each request body, checks its signature, and answers
/// `answer`.
pub async fn json(answer_path: &Path) -> Result<(), ServeError> {
    let answer = Bytes::from(
        std::fs::read(answer_path)
            .map_err(io_error(format!("reading {}", answer_path.display())))?,
    );
    let listener = bind("baseline-json").await?;
    let verifier = Arc::new(AppSignature::new());
    let handler = move |request: Request<Incoming>, _peer: Peer| {
        let answer = answer.clone();
        let verifier = verifier.clone();
        async move {
            match verifier.read_verified(request).await {
                Ok(_) => canned(&answer),
                Err(refusal) => refusal,
            }
        }
    };
    serve_until_stopped(listener, handler, stop_requested()).await;
    Ok(())
}

/// How baseline (a′) writes each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurableWrite {
    /// One `insert`: the limit of a durable acknowledgement.
    Insert,
    /// The same bytes written into two trees in one sled transaction, as the
    /// switch's store claims a `request_ref` and records a transaction:
    /// diagnostic (a″), which isolates what a sled transaction costs.
    Transaction,
}

/// Requests a baseline is serving, counted as the switch counts its calls
/// in flight.
#[derive(Clone, Default)]
struct InFlight(Arc<AtomicUsize>);

/// One request being served, until dropped.
struct Serving(Arc<AtomicUsize>);

impl InFlight {
    fn enter(&self) -> Serving {
        self.0.fetch_add(1, Ordering::Relaxed);
        Serving(self.0.clone())
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The group commit of a baseline that records: the switch's commit window
/// (`[storage] commit_window_us`), opened by the same rule, with `in_flight`
/// counting its requests. A baseline without the window would credit the
/// switch with a better group commit rather than less work per call: with
/// it, (a′) gained about as much as the switch did (PROFILING.md,
/// thirteenth round).
fn baseline_commit(db: &sled::Db, in_flight: &InFlight) -> Result<GroupCommit, ServeError> {
    let counted = in_flight.0.clone();
    GroupCommit::start_gathering(
        db.clone(),
        Duration::from_micros(crate::config::COMMIT_WINDOW_US),
        Some(CallsInFlight::new(move || counted.load(Ordering::Relaxed))),
    )
    .map_err(io_error("starting the group commit"))
}

/// Baseline (a′): checks each request's signature, writes its body into sled under a fresh key, waits
/// for the group commit that covers it, then answers `answer`.
pub async fn durable(
    answer_path: &Path,
    data: &Path,
    write: DurableWrite,
) -> Result<(), ServeError> {
    let answer = Bytes::from(
        std::fs::read(answer_path)
            .map_err(io_error(format!("reading {}", answer_path.display())))?,
    );
    let store_error = |e: sled::Error| ServeError::Store(e.to_string());
    let db = sled::open(data).map_err(store_error)?;
    let trees = (
        db.open_tree("requests").map_err(store_error)?,
        db.open_tree("records").map_err(store_error)?,
    );
    let in_flight = InFlight::default();
    let commit = baseline_commit(&db, &in_flight)?;
    let next_key = Arc::new(AtomicU64::new(0));
    let listener = bind("baseline-durable").await?;
    let verifier = Arc::new(AppSignature::new());
    let handler = move |request: Request<Incoming>, _peer: Peer| {
        let answer = answer.clone();
        let db = db.clone();
        let trees = trees.clone();
        let commit = commit.clone();
        let next_key = next_key.clone();
        let verifier = verifier.clone();
        let serving = in_flight.enter();
        async move {
            let _serving = serving;
            let body = match verifier.read_verified(request).await {
                Ok(body) => body,
                Err(refusal) => return refusal,
            };
            let key = next_key.fetch_add(1, Ordering::Relaxed).to_be_bytes();
            let written = match write {
                DurableWrite::Insert => db.insert(key, body.as_ref()).is_ok(),
                DurableWrite::Transaction => {
                    use sled::transaction::ConflictableTransactionError;
                    use sled::Transactional;
                    (&trees.0, &trees.1)
                        .transaction(|(requests, records)| {
                            requests.insert(&key, body.as_ref())?;
                            records.insert(&key, body.as_ref())?;
                            Ok::<_, ConflictableTransactionError<()>>(())
                        })
                        .is_ok()
                }
            };
            if !written {
                return failure(StatusCode::INTERNAL_SERVER_ERROR, "write failed");
            }
            match commit.durable().await {
                Ok(()) => canned(&answer),
                Err(_) => failure(StatusCode::INTERNAL_SERVER_ERROR, "flush failed"),
            }
        }
    };
    serve_until_stopped(listener, handler, stop_requested()).await;
    Ok(())
}

/// Baseline (p): checks each request's signature, INSERTs its body into
/// PostgreSQL at `url` through the same pool as the switch's (size and
/// settings), and answers `answer` once the commit returned: the cost of a
/// durable acknowledgement on PostgreSQL, beside which the switch's own work
/// on it shows.
pub async fn postgres(answer_path: &Path, url: &str) -> Result<(), ServeError> {
    let answer = Bytes::from(
        std::fs::read(answer_path)
            .map_err(io_error(format!("reading {}", answer_path.display())))?,
    );
    let store_error = |e: manifold_postgres::PgError| ServeError::Store(e.to_string());
    let pool = manifold_postgres::pool(&manifold_postgres::Options {
        url: url.to_owned(),
        pool_size: crate::config::POSTGRES_POOL,
        statement_timeout: Some(Duration::from_millis(
            manifold_config::DEFAULT_POSTGRES_TIMEOUT_MS,
        )),
        lock_timeout: None,
        connect_timeout: Duration::from_millis(manifold_config::DEFAULT_POSTGRES_TIMEOUT_MS),
        ca_file: None,
        insecure_plaintext: false,
        application_name: "manifold-bench baseline",
    })
    .map_err(store_error)?;
    manifold_postgres::connect(&pool)
        .await
        .map_err(store_error)?
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS bench_requests (id bigserial PRIMARY KEY, body bytea NOT NULL)",
        )
        .await
        .map_err(|e| ServeError::Store(manifold_postgres::describe(&e)))?;
    let listener = bind("baseline-postgres").await?;
    let verifier = Arc::new(AppSignature::new());
    let handler = move |request: Request<Incoming>, _peer: Peer| {
        let answer = answer.clone();
        let pool = pool.clone();
        let verifier = verifier.clone();
        async move {
            let body = match verifier.read_verified(request).await {
                Ok(body) => body,
                Err(refusal) => return refusal,
            };
            let Ok(client) = pool.get().await else {
                return failure(StatusCode::SERVICE_UNAVAILABLE, "no connection");
            };
            let statement = match client
                .prepare_cached("INSERT INTO bench_requests (body) VALUES ($1)")
                .await
            {
                Ok(statement) => statement,
                Err(_) => return failure(StatusCode::INTERNAL_SERVER_ERROR, "prepare failed"),
            };
            match client.execute(&statement, &[&body.as_ref()]).await {
                Ok(_) => canned(&answer),
                Err(_) => failure(StatusCode::INTERNAL_SERVER_ERROR, "insert failed"),
            }
        }
    };
    serve_until_stopped(listener, handler, stop_requested()).await;
    Ok(())
}

/// Baseline (b): checks each request's signature (the app's, as every
/// server must), forwards it (method, path, content type, body) to
/// `upstream` over pooled keep-alive connections, signed with the hop's key
/// as the switch signs it, and relays the answer. With `record`, diagnostic
/// (b′): it also writes each answer into sled at that path and relays it only
/// after the group commit that covers it ((a′)'s write): the limit of a
/// proxy that records what it acknowledges, as the switch does.
pub async fn proxy(upstream: &str, record: Option<&Path>) -> Result<(), ServeError> {
    let upstream: Arc<str> = Arc::from(upstream.trim_end_matches('/'));
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector);
    // It signs what it forwards, as the switch does: a provider answers
    // nothing unsigned, and (b) must do the hop's work to be its baseline.
    let signer = HopSigner::new(&SecretString::from(HOP_SECRET), PROVIDER);
    let in_flight = InFlight::default();
    let recorder = match record {
        Some(path) => {
            let store_error = |e: sled::Error| ServeError::Store(e.to_string());
            let db = sled::open(path).map_err(store_error)?;
            let commit = baseline_commit(&db, &in_flight)?;
            Some((db, commit, Arc::new(AtomicU64::new(0))))
        }
        None => None,
    };
    let verifier = Arc::new(AppSignature::new());
    let listener = bind("baseline-proxy").await?;
    let handler = move |request: Request<Incoming>, _peer: Peer| {
        let client = client.clone();
        let upstream = upstream.clone();
        let signer = signer.clone();
        let recorder = recorder.clone();
        let verifier = verifier.clone();
        let serving = in_flight.enter();
        async move {
            let _serving = serving;
            let (method, path) = (request.method().clone(), request.uri().path().to_owned());
            let content_type = request.headers().get(header::CONTENT_TYPE).cloned();
            let body = match verifier.read_verified(request).await {
                Ok(body) => body,
                Err(refusal) => return refusal,
            };
            let mut forward = Request::builder()
                .method(method.clone())
                .uri(format!("{upstream}{path}"));
            if let Some(content_type) = content_type {
                forward = forward.header(header::CONTENT_TYPE, content_type);
            }
            let Ok(signed) = signer.sign(method.as_str(), &path, &body) else {
                return failure(StatusCode::BAD_GATEWAY, "cannot sign the upstream request");
            };
            let Ok(mut forward) = forward.body(Full::new(body)) else {
                return failure(StatusCode::BAD_GATEWAY, "bad upstream request");
            };
            signed.apply(forward.headers_mut());
            let Ok(answer) = client.request(forward).await else {
                return failure(StatusCode::BAD_GATEWAY, "upstream unreachable");
            };
            let (parts, body) = answer.into_parts();
            let Ok(body) = body.collect().await else {
                return failure(StatusCode::BAD_GATEWAY, "upstream answer cut off");
            };
            let body = body.to_bytes();
            if let Some((db, commit, next_key)) = &recorder {
                let key = next_key.fetch_add(1, Ordering::Relaxed).to_be_bytes();
                if db.insert(key, body.as_ref()).is_err() {
                    return failure(StatusCode::INTERNAL_SERVER_ERROR, "write failed");
                }
                if commit.durable().await.is_err() {
                    return failure(StatusCode::INTERNAL_SERVER_ERROR, "flush failed");
                }
            }
            let mut response = Response::new(Full::new(body));
            *response.status_mut() = parts.status;
            if let Some(content_type) = parts.headers.get(header::CONTENT_TYPE) {
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, content_type.clone());
            }
            response
        }
    };
    serve_until_stopped(listener, handler, stop_requested()).await;
    Ok(())
}
