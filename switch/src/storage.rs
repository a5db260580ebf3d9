//! Storage generations: what the switch opens on its sled database, and how
//! it opens it again when a write error has left it unusable.
//!
//! **sled 0.34's first I/O error is sticky.** When a write of its log fails
//! (`IoBufs::write_to_log` on sled's thread pool, or rolling to a new segment
//! in `maybe_seal_and_write_iobuf`), sled stores the error with
//! `Config::set_global_error`, and from then on every write reservation
//! (`Log::reserve`) and every flush that has anything to write
//! (`iobuf::make_stable_inner`) fails with it; only `PageCache::start`, that
//! is opening the database again, clears it (`reset_global_error`). (Read in
//! sled-0.34.7 `src/config.rs`, `src/pagecache/{iobuf,logger,mod}.rs`.) A disk
//! that filled once would stop the store until a restart, even after space
//! came back. The free-space guard ([`FreeSpace`]) keeps the switch off a full
//! disk in the first place; this module is what happens when the store meets
//! a write error anyway (the disk filled faster than the guard looked, by
//! another process, or the device failed).
//!
//! Everything opened on the database is one [`Generation`]: the database,
//! its [`GroupCommit`], the [`SledStore`], the in-process providers that
//! share the database, and an [`Engine`] routing to them. [`Storage`] holds
//! the current one. A call takes the generation current when it starts and
//! keeps it to its end, since its claims live in that generation's store.
//! When a call meets a store error ([`Storage::settle`]), its generation is
//! retired: later calls are answered 503 `storage_unavailable`, and a
//! background task waits, with a capped back-off, until the calls still
//! holding the old generation have finished (dropping the last handle closes
//! the database and releases sled's file lock) and the free space is back,
//! then opens the database anew, proves that it takes a write and a flush,
//! and installs it. sled recovers its log as after a crash and the store
//! replays its journal into it, so everything the switch acknowledged is
//! there (it answers nothing before the journal has it): no acknowledged
//! answer is lost. Claims of calls that were in flight die
//! with their generation, as they would with the process. Two generations
//! are never open at once: sled's file lock refuses the second.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use manifold_config::ProviderConfig;
use manifold_edge::private_files::secure_data_dir;
use manifold_provider::{GroupCommit, Notifier, Provider};
use manifold_provider_sdk::compiled::{ConfiguredProvider, Host, HostedProvider};
use manifold_provider_sdk::{StateDurability, Sweeper};

use crate::engine::Engine;
use crate::error::SwitchError;
use crate::routing::{ProviderLimits, Route, Router};
use crate::store::{
    Durable, FreeSpace, MeteredCall, PgStore, SledStore, Store, StoreError, StoreOptions,
};

/// Where a reopened database is written to first, to prove it takes writes.
const PROBE_KEY: &[u8] = b"manifold/reopened_at_ms";
/// The back-off of reopen attempts: first, and longest.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LONGEST_RETRY: Duration = Duration::from_secs(1);
/// Free space a reopen waits for even when the guard is off.
const REOPEN_FLOOR_BYTES: u64 = 1024 * 1024;
/// How often a failing shared database is logged at most.
const DATABASE_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Metered calls kept in memory while no generation is open.
const MAX_UNMETERED: usize = 100_000;
/// How long shutdown waits for the metered calls still queued for
/// PostgreSQL to be written.
const METERED_FLUSH_WAIT: Duration = Duration::from_secs(10);

/// How one route's provider is had in each generation.
pub(crate) enum RouteProvider {
    /// The same for every generation (remote, or given by the embedder).
    Fixed(Arc<dyn Provider>),
    /// Compiled in (the demo bank, a connector), opened on each
    /// generation's database with the settings it was configured with.
    Compiled(Box<dyn ConfiguredProvider>),
}

/// Why a generation could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    Store(String),
    Provider { provider: String, reason: String },
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Store(reason) => f.write_str(reason),
            OpenError::Provider { provider, reason } => {
                write!(f, "provider `{provider}`: {reason}")
            }
        }
    }
}

/// The switch's own store in one generation, by backend.
#[derive(Clone)]
pub enum SwitchStore {
    /// On the generation's sled database: retired and reopened after a
    /// write error (module docs).
    Sled(Arc<SledStore>),
    /// The shared PostgreSQL database: one pool for the process's life,
    /// which replaces broken connections by itself, so a database error
    /// fails the call it met (503) and retires nothing.
    Postgres(Arc<PgStore>),
}

impl SwitchStore {
    fn as_store(&self) -> Arc<dyn Store> {
        match self {
            SwitchStore::Sled(store) => store.clone(),
            SwitchStore::Postgres(store) => store.clone(),
        }
    }

    /// The sled store, when that is the backend.
    pub fn sled(&self) -> Option<&Arc<SledStore>> {
        match self {
            SwitchStore::Sled(store) => Some(store),
            SwitchStore::Postgres(_) => None,
        }
    }
}

/// Opens generations: the store's directory and options, and the routes.
pub(crate) struct Opener {
    pub path: PathBuf,
    pub options: StoreOptions,
    /// The PostgreSQL store, connected at start-up, when that is the
    /// backend; every generation shares it.
    pub postgres: Option<Arc<PgStore>>,
    pub notifier: Arc<dyn Notifier>,
    pub routes: Vec<(ProviderConfig, RouteProvider, Arc<ProviderLimits>)>,
}

impl Opener {
    /// Opens the database, the store and the in-process providers on it.
    pub(crate) fn open(&self, number: u64) -> Result<Generation, OpenError> {
        let store_error = |error: &dyn std::fmt::Display| OpenError::Store(error.to_string());
        // The store holds customer data: the directory is created 0700 and
        // what sled writes in it is kept 0600. Tightening once more after the
        // open covers the files sled made then for an embedder that set no
        // umask; the journal sets its own modes, and the files sled makes
        // later follow the umask, which every binary sets to 077.
        let loose = secure_data_dir(&self.path).map_err(|e| store_error(&e))?;
        if let Some(loose) = loose.filter(|_| number == 1) {
            tracing::warn!("the store's directory {loose}");
        }
        // With PostgreSQL, a local database is opened only for in-process
        // providers' state (their own, per process: see ARCHITECTURE).
        let providers_here = self
            .routes
            .iter()
            .any(|(_, provider, _)| matches!(provider, RouteProvider::Compiled(_)));
        let db = match self.postgres.is_none() || providers_here {
            true => {
                Some(SledStore::open_db(&self.path, &self.options).map_err(|e| store_error(&e))?)
            }
            false => None,
        };
        secure_data_dir(&self.path).map_err(|e| store_error(&e))?;
        let commit = db
            .as_ref()
            .map(|db| GroupCommit::start(db.clone()))
            .transpose()
            .map_err(|e| store_error(&e))?;
        let store = match (&self.postgres, &db, &commit) {
            (Some(postgres), _, _) => SwitchStore::Postgres(postgres.clone()),
            (None, Some(db), Some(commit)) => SwitchStore::Sled(Arc::new(
                SledStore::open(&self.path, db, commit.clone(), &self.options)
                    .map_err(|e| store_error(&e))?,
            )),
            (None, _, _) => unreachable!("sled is opened when it is the backend"),
        };
        let mut hosted = Vec::new();
        let mut routes = Vec::new();
        for (config, provider, limits) in &self.routes {
            let provider: Arc<dyn Provider> = match provider {
                RouteProvider::Fixed(provider) => provider.clone(),
                RouteProvider::Compiled(configured) => {
                    let (Some(db), Some(commit)) = (&db, &commit) else {
                        unreachable!("a database is opened for in-process providers");
                    };
                    let durability = match &store {
                        // Its state goes through the store's journal:
                        // durable in the switch's own commits.
                        SwitchStore::Sled(sled) => StateDurability::SwitchLog(sled.provider_log()),
                        // Its own sled database, flushed by its own commits.
                        SwitchStore::Postgres(_) => StateDurability::GroupCommit(commit.clone()),
                    };
                    let host = Host {
                        db,
                        durability,
                        data_dir: &self.path,
                        notifier: self.notifier.clone(),
                    };
                    let opened = configured
                        .open(&host)
                        .map_err(|reason| OpenError::Provider {
                            provider: config.name.clone(),
                            reason,
                        })?;
                    hosted.push(opened.clone());
                    opened.provider()
                }
            };
            let route = Route {
                config: config.clone(),
                provider,
                limits: limits.clone(),
            };
            route
                .check_read_only()
                .map_err(|reason| OpenError::Provider {
                    provider: config.name.clone(),
                    reason,
                })?;
            routes.push(route);
        }
        let dyn_store = store.as_store();
        Ok(Generation {
            number,
            engine: Engine::new(dyn_store.clone(), Router::new(routes)),
            store,
            dyn_store,
            db,
            hosted,
            sweepers: Mutex::new(Vec::new()),
        })
    }

    /// Opens a generation after a failure, and proves that it writes and
    /// flushes (a disk still full fails here, not on an app's call).
    fn reopen(&self, number: u64) -> Result<Generation, OpenError> {
        let generation = self.open(number)?;
        if let Some(db) = &generation.db {
            db.insert(PROBE_KEY, &crate::engine::now_ms().to_be_bytes())
                .and_then(|_| db.flush())
                .map_err(|e| OpenError::Store(format!("the reopened store does not write: {e}")))?;
        }
        Ok(generation)
    }
}

/// Everything open on one sled database (and, with PostgreSQL, the shared
/// store beside it).
pub struct Generation {
    /// Counts opens, from 1 at start-up.
    number: u64,
    engine: Engine,
    store: SwitchStore,
    /// `store` as the engine sees it.
    dyn_store: Arc<dyn Store>,
    /// The sled database: the switch's store's, or only the in-process
    /// providers' (none with PostgreSQL and no in-process provider).
    db: Option<sled::Db>,
    /// The in-process providers opened on its database.
    hosted: Vec<Arc<dyn HostedProvider>>,
    /// The in-process providers' expiry sweeps, while the switch serves.
    sweepers: Mutex<Vec<Sweeper>>,
}

impl Generation {
    pub fn number(&self) -> u64 {
        self.number
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.dyn_store
    }

    /// The switch's store by backend, for what only one backend has.
    pub fn backend(&self) -> &SwitchStore {
        &self.store
    }

    /// Seals everything on this generation's database that is not sealed
    /// under the current data key: the switch's records and the in-process
    /// providers' state. Returns how many values it rewrote.
    pub async fn reseal(&self) -> Result<usize, SwitchError> {
        let mut resealed = match &self.store {
            SwitchStore::Sled(store) => store.reseal().await?,
            SwitchStore::Postgres(store) => store.reseal().await?,
        };
        for provider in &self.hosted {
            resealed += provider.reseal().await.map_err(|error| {
                SwitchError::Internal(format!("an in-process provider's state: {error}"))
            })?;
        }
        Ok(resealed)
    }

    fn start_sweeping(&self) {
        let mut sweepers = self.sweepers.lock().unwrap_or_else(|e| e.into_inner());
        if sweepers.is_empty() {
            sweepers.extend(self.hosted.iter().map(|provider| provider.clone().sweep()));
        }
    }

    fn stop_sweeping(&self) {
        self.sweepers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// The current generation, and the means to replace it.
pub struct Storage {
    current: RwLock<Option<Arc<Generation>>>,
    opener: Arc<Opener>,
    space: FreeSpace,
    /// Whether generations run their providers' sweeps (while serving).
    sweeping: AtomicBool,
    opened: AtomicU64,
    /// Whether the guard was refusing at its last look, to log changes once.
    short: AtomicBool,
    /// Calls metered while no generation is open (PostgreSQL's store keeps
    /// its own while the database does not answer).
    unmetered: Mutex<Vec<MeteredCall>>,
    unmetered_dropped: AtomicU64,
    /// Calls failed by the shared database since its failure was last
    /// logged, and when that was.
    database_failures: AtomicU64,
    database_logged_ms: AtomicU64,
    this: Weak<Storage>,
}

impl Storage {
    pub(crate) fn new(opener: Opener, first: Generation, space: FreeSpace) -> Arc<Storage> {
        let opened = first.number;
        Arc::new_cyclic(|this| Storage {
            current: RwLock::new(Some(Arc::new(first))),
            opener: Arc::new(opener),
            space,
            sweeping: AtomicBool::new(false),
            opened: AtomicU64::new(opened),
            short: AtomicBool::new(false),
            unmetered: Mutex::new(Vec::new()),
            unmetered_dropped: AtomicU64::new(0),
            database_failures: AtomicU64::new(0),
            database_logged_ms: AtomicU64::new(0),
            this: this.clone(),
        })
    }

    /// The generation open now, if any (none while one is being reopened).
    pub fn current(&self) -> Option<Arc<Generation>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The generation a call that may write is to run on: refused while
    /// the store is being reopened, or while free space is below the
    /// minimum (before anything is written).
    pub fn admit(&self) -> Result<Arc<Generation>, SwitchError> {
        let generation = self.current().ok_or(SwitchError::StorageUnavailable)?;
        match self.space.check() {
            Ok(()) => {
                if self.short.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        "free space is back above storage.min_free_mb; taking calls again"
                    );
                }
                Ok(generation)
            }
            Err(short) => {
                if !self.short.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        available_bytes = short.available_bytes,
                        min_free_bytes = short.min_free_bytes,
                        "free space on the data directory is below storage.min_free_mb; refusing calls (503 storage_full) until it is freed"
                    );
                }
                Err(SwitchError::StorageFull)
            }
        }
    }

    /// The outcome of a call that ran on `generation`. A store error that
    /// is not a bad record retires the generation (see the module docs) and
    /// is answered as `storage_unavailable`.
    pub fn settle<T>(
        &self,
        generation: &Arc<Generation>,
        result: Result<T, SwitchError>,
    ) -> Result<T, SwitchError> {
        match result {
            Err(SwitchError::Store(
                error @ (StoreError::Database(_) | StoreError::NotDurable(_)),
            )) => {
                match generation.store {
                    SwitchStore::Sled(_) => self.retire(generation, &error),
                    SwitchStore::Postgres(_) => self.database_failed(&error),
                }
                Err(SwitchError::StorageUnavailable)
            }
            other => other,
        }
    }

    /// Counts a call for billing in the current generation, or keeps it
    /// for the next one while none is open; `promptly` for a call a daily
    /// quota counts again after a restart ([`Store::meter_promptly`]).
    pub async fn meter(&self, call: &MeteredCall, promptly: bool) -> Result<(), StoreError> {
        let generation = {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            match &*current {
                Some(generation) => generation.clone(),
                None => {
                    // Under the read lock, so `install` cannot miss it.
                    self.keep_unmetered(std::iter::once(call.clone()));
                    return Ok(());
                }
            }
        };
        // PostgreSQL's store queues it and writes it once the database
        // answers (`store::postgres::metered`), so the database's absence
        // for a moment loses no call that was answered and will be billed.
        if promptly {
            generation.dyn_store.meter_promptly(call).await
        } else {
            generation.dyn_store.meter(call).await
        }
    }

    /// Makes everything written so far durable, the metered calls still
    /// waiting for their batch included; for shutdown (so a failure is
    /// reported, and starts no reopen). On PostgreSQL it also ends the
    /// metered calls' writer: a call metered after it is refused (and
    /// logged), not kept.
    pub async fn flush(&self) -> Result<Durable, SwitchError> {
        let generation = self.current().ok_or(SwitchError::StorageUnavailable)?;
        match &generation.store {
            SwitchStore::Postgres(store) => store.close_metering(METERED_FLUSH_WAIT).await?,
            // Not left to the batch's age: the process may end before it
            // is due, and the calls were answered.
            SwitchStore::Sled(store) => store.write_metered()?,
        }
        generation.engine.flush().await
    }

    /// Runs the in-process providers' expiry sweeps, on this and every
    /// later generation, until [`Storage::stop_sweeping`].
    pub fn start_sweeping(&self) {
        self.sweeping.store(true, Ordering::SeqCst);
        if let Some(generation) = self.current() {
            generation.start_sweeping();
        }
    }

    pub fn stop_sweeping(&self) {
        self.sweeping.store(false, Ordering::SeqCst);
        if let Some(generation) = self.current() {
            generation.stop_sweeping();
        }
    }

    fn keep_unmetered(&self, calls: impl IntoIterator<Item = MeteredCall>) {
        let mut unmetered = self.unmetered.lock().unwrap_or_else(|e| e.into_inner());
        for call in calls {
            if unmetered.len() < MAX_UNMETERED {
                unmetered.push(call);
                continue;
            }
            let dropped = self.unmetered_dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::error!(
                    dropped,
                    "metered calls dropped: too many kept while the store is reopened"
                );
            }
        }
    }

    /// Logs a failure of the shared database, at most once per
    /// [`DATABASE_LOG_INTERVAL`] with how many calls failed meanwhile: while
    /// it is away every call fails, and the log should say so, not drown.
    fn database_failed(&self, error: &StoreError) {
        let failed = self.database_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let now = crate::engine::now_ms();
        let last = self.database_logged_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < DATABASE_LOG_INTERVAL.as_millis() as u64
            || self
                .database_logged_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.database_failures.store(0, Ordering::Relaxed);
        tracing::error!(
            %error,
            failed_calls = failed,
            "the database failed; calls are answered 503 storage_unavailable until it answers again"
        );
    }

    /// Takes `generation` out of service, once, and starts reopening.
    fn retire(&self, generation: &Arc<Generation>, error: &StoreError) {
        let retired = {
            let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
            match &*current {
                Some(open) if Arc::ptr_eq(open, generation) => current.take(),
                // Already retired by another call.
                _ => None,
            }
        };
        let Some(retired) = retired else {
            return;
        };
        tracing::error!(
            %error,
            generation = retired.number,
            "the store failed; refusing calls (503 storage_unavailable) and reopening it once it can write"
        );
        retired.stop_sweeping();
        // What was metered and not yet written goes to the next generation.
        if let Some(store) = retired.store.sled() {
            self.keep_unmetered(store.take_metered());
        }
        let retired_number = retired.number;
        // Calls still running hold it; the last of them closes the database.
        drop(retired);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(recover(self.this.clone(), retired_number));
            }
            Err(_) => tracing::error!("no runtime to reopen the store on; restart the switch"),
        }
    }

    /// Puts a reopened generation in service.
    async fn install(&self, generation: Generation) {
        let generation = Arc::new(generation);
        if self.sweeping.load(Ordering::SeqCst) {
            generation.start_sweeping();
        }
        let unmetered = {
            let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
            *current = Some(generation.clone());
            std::mem::take(&mut *self.unmetered.lock().unwrap_or_else(|e| e.into_inner()))
        };
        // Promptly: they have waited through the reopen already, and some
        // may have been metered promptly in the retired generation (a mark
        // the hand-over does not carry), so the next commit writes them all
        // rather than leaving them to age into a batch a crash could lose
        // after later calls were acknowledged.
        for call in &unmetered {
            if let Err(error) = generation.dyn_store.meter_promptly(call).await {
                tracing::error!(%error, "a metered call kept over the reopen could not be metered");
            }
        }
    }
}

/// Reopens the store of `storage` after generation `retired` failed: waits
/// for free space and for the old database to close, then installs a new
/// generation. Ends early if the switch is gone.
async fn recover(storage: Weak<Storage>, retired: u64) {
    let started = Instant::now();
    let mut delay = FIRST_RETRY;
    let mut attempts = 0u32;
    // Warnings at most every this often; the rest goes to debug.
    let quiet = Duration::from_secs(10);
    let mut warned: Option<Instant> = None;
    let mut should_warn = move || {
        let due = warned.is_none_or(|at| at.elapsed() >= quiet);
        if due {
            warned = Some(Instant::now());
        }
        due
    };
    loop {
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(LONGEST_RETRY);
        let Some(storage) = storage.upgrade() else {
            return;
        };
        attempts += 1;
        let needed = storage.space.min_free_bytes().max(REOPEN_FLOOR_BYTES);
        if let Ok(available) = storage.space.measure() {
            if available < needed {
                if should_warn() {
                    tracing::warn!(
                        available_bytes = available,
                        needed_bytes = needed,
                        "waiting for free space to reopen the store"
                    );
                }
                continue;
            }
        }
        // One recovery runs at a time: nothing else opens generations.
        let number = storage.opened.load(Ordering::SeqCst) + 1;
        let opener = storage.opener.clone();
        match tokio::task::spawn_blocking(move || opener.reopen(number)).await {
            Ok(Ok(generation)) => {
                storage.opened.store(number, Ordering::SeqCst);
                storage.install(generation).await;
                tracing::info!(
                    retired,
                    generation = number,
                    attempts,
                    after_ms = started.elapsed().as_millis() as u64,
                    "the store is reopened; taking calls again"
                );
                return;
            }
            // Until the last call on the old generation ends, sled's file
            // lock refuses the open: that is the usual first failure.
            Ok(Err(error)) => {
                if attempts > 1 && should_warn() {
                    tracing::warn!(%error, attempts, "the store could not be reopened yet");
                } else {
                    tracing::debug!(%error, attempts, "the store could not be reopened yet");
                }
            }
            Err(error) => tracing::error!(%error, "reopening the store panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::suite::call;
    use manifold_provider::notify::OutboxNotifier;

    /// Calls metered in a generation that fails before writing them are
    /// metered in the next one so that its next commit writes them, however
    /// young: a crash after a later call was acknowledged must not lose
    /// them (a daily quota counts them again after a restart). Handed over
    /// as plain calls, they waited for their batch to age, and a call
    /// metered promptly before the failure lost its mark.
    #[tokio::test]
    async fn calls_metered_before_a_store_failure_go_with_the_next_generations_first_commit() {
        let dir = tempfile::tempdir().unwrap();
        let opener = Opener {
            path: dir.path().join("store"),
            // No metering thread to write them meanwhile.
            options: StoreOptions {
                metering_interval: Duration::from_secs(3600),
                ..StoreOptions::default()
            },
            postgres: None,
            notifier: Arc::new(OutboxNotifier::new(dir.path().join("outbox.jsonl"))),
            routes: Vec::new(),
        };
        let first = opener.open(1).unwrap();
        let storage = Storage::new(opener, first, FreeSpace::new(dir.path(), 0));
        let failed = storage.current().unwrap();
        for at in 0..3 {
            storage.meter(&call(at), at == 2).await.unwrap();
        }
        let error = StoreError::Database("a write failed".into());
        let settled: Result<(), _> = storage.settle(&failed, Err(SwitchError::Store(error)));
        assert!(matches!(settled, Err(SwitchError::StorageUnavailable)));
        // The last handle on the failed generation closes its database.
        drop(failed);
        let reopened = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Some(generation) = storage.current() {
                    return generation;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the store reopens within 30 s");
        assert_eq!(reopened.number(), 2);
        let store = reopened.backend().sled().unwrap().clone();
        // `install` meters them after the generation is current.
        tokio::time::timeout(Duration::from_secs(30), async {
            while store.metered_calls_waiting() < 3 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the kept calls are metered in the new generation");
        // One commit, well within the age that would make them due anyway.
        let _ = reopened.store().durable().await.unwrap();
        assert_eq!(store.metered_calls_waiting(), 0);
        assert_eq!(
            store.metered_calls("app", 0, u64::MAX).await.unwrap().len(),
            3
        );
    }
}
