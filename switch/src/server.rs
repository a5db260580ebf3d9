//! Assembling a switch from configuration and running it.
//!
//! [`Switch::open_with_registry`] turns a validated [`SwitchConfig`] into a running set of
//! parts — the sled store and its group-commit flusher, the app registry, one
//! route per provider — and [`Switch::serve`] answers HTTP on a listener until
//! the shutdown future completes. The binary passes SIGINT/SIGTERM; tests pass
//! their own future.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use manifold_config::{
    ConfigError, ProviderConfig, ProviderEndpoint, StorageBackend, SwitchConfig,
};
use manifold_edge::signature::SignatureCheck;
use manifold_edge::{serve, AuthFailureLimiter, AuthFailureLimits, EdgeOptions};
use manifold_notify::Dispatcher;
use manifold_provider::outbound::OutboundOptions;
use manifold_provider::{HopSigner, Provider, RemoteProvider};
use manifold_provider_sdk::compiled::{CompiledProvider, HostSettings};
use tokio::net::TcpListener;

use crate::apps::{AppChanges, Apps};
use crate::error::SwitchError;
use crate::http::{handle, SwitchState};
use crate::metrics::Metrics;
use crate::notify::NotifyService;
use crate::retention::Retention;
use crate::routing::ProviderLimits;
use crate::signed::SpentSignatures;
use crate::storage::{OpenError, Opener, RouteProvider, Storage};
use crate::store::{
    CallsInFlight, FreeSpace, PgStore, PostgresOptions, SledStore, Store, StoreOptions,
};
use tokio_util::task::TaskTracker;

/// The name the `manifold` binary gives the demo bank in `implementation = "..."`.
pub const DEMO_IMPLEMENTATION: &str = "demo";

/// The providers compiled into the switch: what `implementation = "<name>"`
/// may name. The library knows none: the binary (`manifold-cli`'s
/// `compiled_providers`) fills it with the demo bank and the connectors it
/// was built with, and a test or an embedding program with its own.
#[derive(Clone, Default)]
pub struct Registry {
    compiled: HashMap<String, Arc<dyn CompiledProvider>>,
}

impl Registry {
    /// No compiled providers: only remote ones can be configured.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// This registry and `provider` as `name`.
    pub fn with(mut self, name: &str, provider: Arc<dyn CompiledProvider>) -> Registry {
        self.compiled.insert(name.to_owned(), provider);
        self
    }

    /// The names, sorted, for messages.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.compiled.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the store at {path} could not be opened: {reason}")]
    Store { path: String, reason: String },
    #[error("[storage.postgres]: {0}")]
    Postgres(String),
    #[error("provider `{provider}` could not be set up: {reason}")]
    Provider { provider: String, reason: String },
    #[error("[server.tls]: {0}")]
    Tls(String),
    #[error("[admin]: {reason}")]
    Admin { reason: String },
}

pub struct Switch {
    state: Arc<SwitchState>,
    /// The store as opened, for [`Switch::store`]; dropped when serving
    /// starts, so that only the storage generation holds it.
    store: Arc<dyn Store>,
    /// The same, when it is the sled store.
    sled: Option<Arc<SledStore>>,
    /// `[server]`: the edge's limits, timeouts and TLS.
    edge: EdgeOptions,
    /// `[data_at_rest] retention_days`.
    retention: Duration,
    /// The providers it was opened with: a reload may not change them.
    providers: Vec<ProviderConfig>,
}

/// Applies a new configuration's `[[apps]]` to a running switch (`SIGHUP`):
/// keys, secrets, grants and limits, without a restart. Everything else
/// (providers, storage, the edge, notifications, data keys) is what the
/// switch opened with, and a file that changes its providers is refused.
#[derive(Clone)]
pub struct Reloader {
    state: Arc<SwitchState>,
    providers: Vec<ProviderConfig>,
}

/// Why a reload of the configuration file was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Refused(#[from] ReloadRefused),
}

/// Why a reload was refused; the apps of before still serve.
#[derive(Debug, thiserror::Error)]
pub enum ReloadRefused {
    #[error("its [[providers]] differ from those the switch runs; restart the switch to change providers")]
    ProvidersChanged,
}

impl Reloader {
    /// Reads `path` again and applies it ([`Reloader::reload`]): what
    /// SIGHUP and the admin API's reload do.
    pub fn reload_file(&self, path: &std::path::Path) -> Result<AppChanges, ReloadError> {
        let config = SwitchConfig::load(path)?;
        Ok(self.reload(&config)?)
    }

    /// Applies the apps (keys, secrets, grants, limits) and fees of
    /// `config`; refused if its providers differ from the running ones.
    pub fn reload(&self, config: &SwitchConfig) -> Result<AppChanges, ReloadRefused> {
        // The new grants were checked against the new file's providers:
        // they hold for the running ones only if those are the same.
        if config.providers != self.providers {
            return Err(ReloadRefused::ProvidersChanged);
        }
        *self
            .state
            .fees
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(config.billing.clone());
        Ok(self.state.apps.replace(&config.apps))
    }
}

/// The edge as the host's `[server]` table describes it, its TLS files
/// loaded (a missing or unreadable file stops start-up).
fn edge_options(config: &SwitchConfig) -> Result<EdgeOptions, StartError> {
    let server = &config.server;
    let tls = match &server.tls {
        Some(files) => Some(
            manifold_edge::tls::server_config(&files.cert, &files.key)
                .map_err(|error| StartError::Tls(error.to_string()))?,
        ),
        None => None,
    };
    Ok(EdgeOptions {
        header_read_timeout: server.header_read_timeout,
        idle_timeout: server.idle_timeout,
        body_read_timeout: server.body_read_timeout,
        max_body_bytes: server.max_body_bytes,
        max_header_bytes: server.max_header_bytes,
        max_connections: server.max_connections,
        max_connections_per_address: server.max_connections_per_address,
        tls,
        ..EdgeOptions::default()
    })
}

impl Switch {
    /// Opens the store and builds every provider named in `config`: remote
    /// ones, the compiled-in ones of `registry`, and `implementations`
    /// (further in-process providers, for tests and embedders), which
    /// `implementation = "<name>"` may refer to.
    pub async fn open_with_registry(
        config: &SwitchConfig,
        registry: &Registry,
        mut implementations: HashMap<String, Arc<dyn Provider>>,
    ) -> Result<Switch, StartError> {
        let path = config.storage.path.display().to_string();
        let store_error = |reason: String| StartError::Store {
            path: path.clone(),
            reason,
        };
        // Every call's engine work runs on this tracker: the store's commit
        // window opens only while enough of them are in flight.
        let engine_tasks = TaskTracker::new();
        let options = StoreOptions {
            calls_in_flight: Some(CallsInFlight::new({
                let tasks = engine_tasks.clone();
                move || tasks.len()
            })),
            ..StoreOptions::configured(config)
        };
        // SMS and e-mail as the host configured them (the outbox otherwise),
        // for in-process providers and for `/notify/*` alike.
        let notifier =
            Arc::new(Dispatcher::from_config(&config.notifications).map_err(|e| {
                ConfigError::single(&config.source, "notifications", e.to_string())
            })?);
        // What every in-process provider is opened with.
        let host = HostSettings {
            data_keys: config.data_at_rest.keys.clone(),
            retention: config.data_at_rest.retention,
        };
        let mut own_dirs = std::collections::HashSet::new();
        let mut routes = Vec::new();
        for (index, provider_config) in config.providers.iter().enumerate() {
            let setup_error = |reason: String| StartError::Provider {
                provider: provider_config.name.clone(),
                reason,
            };
            let provider = match &provider_config.endpoint {
                ProviderEndpoint::Remote(remote) => {
                    let signer = HopSigner::new(&remote.secret, &remote.key_id);
                    let options = OutboundOptions {
                        insecure_http: remote.insecure_http,
                        ..OutboundOptions::with_timeout(provider_config.timeout)
                            .ca_file(remote.ca_file.as_deref())
                    };
                    RouteProvider::Fixed(Arc::new(
                        RemoteProvider::with_options(&remote.url, signer, options)
                            .map_err(|e| setup_error(e.to_string()))?,
                    ))
                }
                ProviderEndpoint::InProcess {
                    implementation,
                    settings,
                } => {
                    if let Some(provider) = implementations.remove(implementation) {
                        if settings.is_given() {
                            return Err(ConfigError::single(
                                &config.source,
                                &format!("providers[{index}].settings"),
                                format!("`{implementation}` is supplied by the program embedding the switch, which configures it; settings are for the providers the switch opens itself"),
                            )
                            .into());
                        }
                        RouteProvider::Fixed(provider)
                    } else if let Some(compiled) = registry.compiled.get(implementation) {
                        let configured =
                            compiled
                                .configure(settings.value(), &host)
                                .map_err(|problem| {
                                    ConfigError::single(
                                        &config.source,
                                        &format!("providers[{index}].settings"),
                                        problem,
                                    )
                                })?;
                        // A directory sled locks can be opened by one route only.
                        if let Some(dir) = configured.own_dir() {
                            if !own_dirs.insert(dir.clone()) {
                                return Err(ConfigError::single(
                                    &config.source,
                                    &format!("providers[{index}].implementation"),
                                    format!("only one provider may be the compiled-in `{implementation}`: it keeps a database of its own in {}", config.storage.path.join(&dir).display()),
                                )
                                .into());
                            }
                        }
                        RouteProvider::Compiled(configured)
                    } else {
                        return Err(ConfigError::single(
                            &config.source,
                            &format!("providers[{index}].implementation"),
                            format!(
                                "no in-process provider is called `{implementation}` (compiled in: {})",
                                registry.names().join(", ")
                            ),
                        )
                        .into());
                    }
                }
            };
            routes.push((
                provider_config.clone(),
                provider,
                ProviderLimits::new(provider_config),
            ));
        }
        let postgres = match &config.storage.backend {
            StorageBackend::Sled => None,
            StorageBackend::Postgres(postgres) => Some(Arc::new(
                PgStore::connect(&PostgresOptions::from_config(config, postgres))
                    .await
                    .map_err(|error| StartError::Postgres(error.to_string()))?,
            )),
        };
        let opener = Opener {
            path: config.storage.path.clone(),
            options,
            postgres,
            notifier: notifier.clone(),
            routes,
        };
        let first = opener.open(1).map_err(|error| match error {
            OpenError::Store(reason) => store_error(reason),
            OpenError::Provider { provider, reason } => StartError::Provider { provider, reason },
        })?;
        let store = first.store().clone();
        let sled = first.backend().sled().cloned();
        let space = FreeSpace::new(&config.storage.path, config.storage.min_free_bytes);
        let storage = Storage::new(opener, first, space);

        let edge = edge_options(config)?;
        let signatures = SignatureCheck::new(config.server.signature_max_skew);
        let state = Arc::new(SwitchState {
            auth_failures: AuthFailureLimiter::new(AuthFailureLimits {
                // 0 is "off": a count no address reaches.
                max_failures: match config.server.auth_failure_limit {
                    0 => u32::MAX,
                    limit => limit,
                },
                window: config.server.auth_failure_window,
                lockout: config.server.auth_lockout,
                ..AuthFailureLimits::default()
            }),
            spent_signatures: Arc::new(SpentSignatures::new(&signatures)),
            engine_tasks,
            metrics: Metrics::new(storage.clone()),
            fees: std::sync::RwLock::new(Arc::new(config.billing.clone())),
            signatures,
            apps: Apps::new(&config.apps),
            storage,
            notify: NotifyService::new(
                &config.providers,
                &config.notifications,
                notifier,
                config.server.signature_max_skew,
            ),
        });
        Ok(Switch {
            state,
            store,
            sled,
            edge,
            retention: config.data_at_rest.retention,
            providers: config.providers.clone(),
        })
    }

    pub(crate) fn state(&self) -> &Arc<SwitchState> {
        &self.state
    }

    /// What reloads the apps of this switch once it serves.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            state: self.state.clone(),
            providers: self.providers.clone(),
        }
    }

    /// The store as opened. Serving drops the switch's own handle; a caller
    /// that keeps this one keeps that database open, so the switch cannot
    /// reopen it after a write error (see [`crate::storage`]).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The store as opened, when its backend is sled (what only sled has:
    /// a bulk import, sizes on disk).
    pub fn sled_store(&self) -> Option<&Arc<SledStore>> {
        self.sled.as_ref()
    }

    /// Seals every value of the store and of the in-process providers that
    /// is not sealed under the current data key (`manifold --reseal`, on a
    /// switch that is not serving); returns how many it rewrote.
    pub async fn reseal(&self) -> Result<usize, SwitchError> {
        let generation = self
            .state
            .storage
            .current()
            .ok_or(SwitchError::StorageUnavailable)?;
        generation.reseal().await
    }

    /// The retention pass over this switch's store ([`Retention::apply_at`]
    /// runs it for a chosen time; serving runs it every hour).
    pub fn retention(&self) -> Retention {
        Retention::new(self.state.storage.clone(), self.retention)
    }

    /// Answers HTTP on `listener` until `shutdown` completes, then lets
    /// in-flight requests finish and flushes the store. The edge's limits,
    /// timeouts and TLS are the configuration's `[server]`.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let options = self.edge.clone();
        self.serve_with(listener, options, shutdown).await
    }

    /// As [`Switch::serve`], with the edge's limits, timeouts and TLS in
    /// `options`.
    pub async fn serve_with(
        self,
        listener: TcpListener,
        options: EdgeOptions,
        shutdown: impl Future<Output = ()>,
    ) {
        let Switch {
            state: served,
            store,
            sled,
            retention,
            ..
        } = self;
        drop((store, sled));
        let retention = Retention::new(served.storage.clone(), retention).start();
        served.storage.start_sweeping();
        let state = served.clone();
        let handler = move |request, peer| handle(state.clone(), request, peer);
        let grace = options.shutdown_grace;
        serve(listener, handler, options, shutdown).await;
        // Calls whose clients went away may still be working: let them
        // record their answers, within the same grace as the connections.
        let tasks = &served.engine_tasks;
        tasks.close();
        if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
            tracing::warn!(
                left = tasks.len(),
                "calls still running at the end of the shutdown grace period"
            );
        }
        drop(retention);
        served.storage.stop_sweeping();
        if let Err(error) = served.storage.flush().await {
            tracing::error!(%error, "final flush failed");
        }
    }
}

/// Opens a switch for `config` with the compiled providers of `registry`
/// and serves it on `listener` until `shutdown`: what a program embedding
/// the switch calls to serve with its own connectors, as the `manifold`
/// binary does.
pub async fn run_with_registry(
    config: &SwitchConfig,
    registry: &Registry,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    Switch::open_with_registry(config, registry, HashMap::new())
        .await?
        .serve(listener, shutdown)
        .await;
    Ok(())
}
