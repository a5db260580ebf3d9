//! What the switch is doing, for `GET /metrics` on the admin listener, in
//! Prometheus' text format (the `prometheus` crate).
//!
//! - `manifold_requests_total{endpoint, app, request_type, provider, status, http_status}`:
//!   every app call, as it was metered;
//! - `manifold_request_duration_seconds{endpoint}`: from the request's head
//!   to its answer;
//! - `manifold_provider_failures_total{provider, kind}`: provider calls that
//!   gave no answer, by `ProviderError::kind` (`unreachable`, `timeout`,
//!   `bad_reply`, `unknown_transaction`, `rejected`, `unauthenticated`,
//!   `internal`);
//! - `manifold_otps_pending{app}`: transactions whose last answer asked the
//!   customer for an OTP or more (`WaitingForOTP`, `PendingValidation`), as
//!   this process answered them, within the last hour (a code expires long
//!   before; one never validated nor queried then stops counting);
//! - `manifold_store_commit_batch_size`, `manifold_store_commit_seconds`:
//!   the store journal's group commits;
//! - `manifold_store_size_bytes`: sled's size on disk;
//! - `manifold_metered_calls_waiting`: on PostgreSQL, metered calls queued
//!   and not yet written (it grows while the database is away, and a
//!   switch killed then loses them).
//!
//! The request labels name apps and providers, which is why `/metrics` is on
//! the admin listener and needs an operator's token.

use std::collections::BTreeMap;
use std::sync::Arc;

use dashmap::DashMap;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::storage::{Storage, SwitchStore};
use crate::store::MeteredCall;

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    provider_failures: IntCounterVec,
    otps_pending: IntGaugeVec,
    waiting: Waiting,
}

/// The transactions counted by `manifold_otps_pending`: `(app,
/// transaction_ref)` → when their waiting answer was given.
#[derive(Default)]
struct Waiting(DashMap<(String, String), u64>);

/// How long a transaction counts as waiting for its customer at most.
const WAITING_AT_MOST_MS: u64 = 3_600_000;
/// The most transactions tracked as waiting: beyond, new ones are not
/// counted (the gauge then reads low), so memory stays bounded.
const MAX_WAITING: usize = 100_000;

impl Waiting {
    fn note(&self, call: &MeteredCall) {
        let (Some(transaction_ref), false) = (&call.transaction_ref, call.repeat) else {
            return;
        };
        let key = (call.app_id.clone(), transaction_ref.clone());
        if call.status.awaits_validation() {
            if self.0.len() < MAX_WAITING || self.0.contains_key(&key) {
                self.0.insert(key, call.at_ms);
            }
        } else {
            self.0.remove(&key);
        }
    }

    /// Forgets what waited too long, and counts the rest per app.
    fn count(&self, now_ms: u64) -> BTreeMap<String, i64> {
        self.0
            .retain(|_, at_ms| now_ms.saturating_sub(*at_ms) < WAITING_AT_MOST_MS);
        let mut counts = BTreeMap::new();
        for entry in self.0.iter() {
            *counts.entry(entry.key().0.clone()).or_insert(0) += 1;
        }
        counts
    }
}

impl Metrics {
    pub fn new(storage: Arc<Storage>) -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("manifold_requests_total", "App calls answered, by outcome"),
            &[
                "endpoint",
                "app",
                "request_type",
                "provider",
                "status",
                "http_status",
            ],
        )
        .expect("a valid, constant metric definition");
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "manifold_request_duration_seconds",
                "Time from an app call's head to its answer",
            )
            .buckets(prometheus::exponential_buckets(0.000_25, 2.0, 16).expect("constant")),
            &["endpoint"],
        )
        .expect("a valid, constant metric definition");
        let provider_failures = IntCounterVec::new(
            Opts::new(
                "manifold_provider_failures_total",
                "Provider calls that brought no answer, by why",
            ),
            &["provider", "kind"],
        )
        .expect("a valid, constant metric definition");
        let otps_pending = IntGaugeVec::new(
            Opts::new(
                "manifold_otps_pending",
                "Transactions waiting for the customer's OTP or answer, as seen since start-up",
            ),
            &["app"],
        )
        .expect("a valid, constant metric definition");
        for collector in [
            Box::new(requests.clone()) as Box<dyn Collector>,
            Box::new(request_seconds.clone()),
            Box::new(provider_failures.clone()),
            Box::new(otps_pending.clone()),
            Box::new(StoreCollector::new(storage)),
        ] {
            registry
                .register(collector)
                .expect("each metric is registered once");
        }
        Metrics {
            registry,
            requests,
            request_seconds,
            provider_failures,
            otps_pending,
            waiting: Waiting::default(),
        }
    }

    /// Counts an app call as it was metered, `seconds` after its head came,
    /// under the `request_type` and provider the switch resolved (configured
    /// names only, so the series stay bounded; "" when it resolved none).
    pub fn observe_call(
        &self,
        call: &MeteredCall,
        request_type: Option<&str>,
        provider: Option<&str>,
        seconds: f64,
    ) {
        let endpoint = call.operation.as_str();
        let http_status = call.http_status.to_string();
        self.requests
            .with_label_values(&[
                endpoint,
                &call.app_id,
                request_type.unwrap_or(""),
                provider.unwrap_or(""),
                call.status.as_str(),
                &http_status,
            ])
            .inc();
        self.request_seconds
            .with_label_values(&[endpoint])
            .observe(seconds);
        self.waiting.note(call);
    }

    /// A provider call that brought no answer.
    pub fn provider_failed(&self, provider: &str, kind: &str) {
        self.provider_failures
            .with_label_values(&[provider, kind])
            .inc();
    }

    /// Everything, in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        self.otps_pending.reset();
        for (app, count) in self.waiting.count(crate::engine::now_ms()) {
            self.otps_pending.with_label_values(&[&app]).set(count);
        }
        let mut out = Vec::new();
        // Writing text into a Vec fails only on a malformed family, which
        // the constant definitions above rule out.
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(%error, "rendering /metrics failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The store's figures, read from the current storage generation when
/// scraped (a generation replaced after a write error starts its counts
/// again, which Prometheus reads as a counter reset).
struct StoreCollector {
    storage: Arc<Storage>,
    descs: Vec<Desc>,
}

const STORE_SIZE: &str = "manifold_store_size_bytes";
const STORE_SIZE_HELP: &str = "The store's size on disk (sled)";
const METERED_WAITING: &str = "manifold_metered_calls_waiting";
const METERED_WAITING_HELP: &str =
    "Metered calls queued for the database and not yet written (PostgreSQL)";
use crate::store::{COMMIT_BATCH, COMMIT_BATCH_HELP, COMMIT_SECONDS, COMMIT_SECONDS_HELP};

impl StoreCollector {
    fn new(storage: Arc<Storage>) -> StoreCollector {
        let descs = [
            (STORE_SIZE, STORE_SIZE_HELP),
            (METERED_WAITING, METERED_WAITING_HELP),
            (COMMIT_BATCH, COMMIT_BATCH_HELP),
            (COMMIT_SECONDS, COMMIT_SECONDS_HELP),
        ]
        .into_iter()
        .map(|(name, help)| {
            Desc::new(name.into(), help.into(), Vec::new(), Default::default())
                .expect("a valid, constant metric definition")
        })
        .collect();
        StoreCollector { storage, descs }
    }
}

impl Collector for StoreCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(generation) = self.storage.current() else {
            return Vec::new();
        };
        // The journal's commits and the directory's size are sled's; a
        // PostgreSQL server has its own exporters, and the switch adds what
        // only it knows: the metered calls it has not written yet.
        let store = match generation.backend() {
            SwitchStore::Sled(store) => store,
            SwitchStore::Postgres(store) => {
                let gauge = prometheus::IntGauge::new(METERED_WAITING, METERED_WAITING_HELP)
                    .expect("a valid, constant metric definition");
                gauge.set(i64::try_from(store.metered_waiting()).unwrap_or(i64::MAX));
                return gauge.collect();
            }
        };
        let stats = store.commit_stats();
        let mut families = stats.batch_size.collect();
        families.extend(stats.seconds.collect());
        if let Ok(bytes) = store.size_on_disk() {
            let gauge = prometheus::IntGauge::new(STORE_SIZE, STORE_SIZE_HELP)
                .expect("a valid, constant metric definition");
            gauge.set(i64::try_from(bytes).unwrap_or(i64::MAX));
            families.extend(gauge.collect());
        }
        families
    }
}
