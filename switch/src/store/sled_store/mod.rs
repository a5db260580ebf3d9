//! [`SledStore`]: the embedded default [`Store`](super::Store), on sled 0.34.
//!
//! One tree, `switch/v2`, laid out as [`codec`] describes: one record per
//! transaction carrying its requests and their answers, a small pointer per
//! `request_ref`, and metered calls in batches. Durability goes through the
//! store's [`journal`]; the database's [`GroupCommit`], shared with any
//! in-process provider on it, tells the journal when such a provider left
//! its flush to the switch.
//!
//! **Claims live in this process.** sled is one process by construction, so a
//! call in flight is claimed in memory ([`ClaimsLiveIn::Process`]), and a
//! claim dies with the process that made it. Only what must outlive a crash
//! is written: a `/transact` that may move money writes its `Pending` record
//! (and the engine makes it durable) before the provider is called; a
//! `read_only` enquiry, a validation or a reversal writes its request once,
//! answered.
//!
//! **Writes go through the [`journal`]**, one entry per change (a request's
//! pointer and record together; an abandon's two removals), durable at the
//! journal's next commit and applied to sled after it; reads see what the
//! journal holds before sled does. The journal's module docs say why and how
//! recovery works. A pointer whose record does not list its request is still
//! *void* (treated as absent): stores written before the journal wrote the
//! pointer first and the record after it.
//!
//! Metered calls are buffered and written as one batch per app and minute
//! by the journal's committer at the start of a commit once they are due:
//! [`METERING_BATCH_CALLS`] of them, the oldest [`METERING_BATCH_AGE`] old,
//! or one metered promptly ([`Store::meter_promptly`]: a call a daily quota
//! counts again after a restart), and at least every
//! [`StoreOptions::metering_interval`] when no commit comes. Written with
//! every commit, a loaded switch wrote a batch of one or two calls, a
//! journal entry and a sled key, per commit: 6–8 % of its throughput.
//!
//! The locks and claims live in the [`SledStore`], so open at most one per
//! database (sled itself allows one process per database).

mod journal;

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;
use manifold_provider::GroupCommit;

use journal::{Change as Write, Journal, ProviderLog};
pub use journal::{
    CommitStats, COMMIT_BATCH, COMMIT_BATCH_HELP, COMMIT_SECONDS, COMMIT_SECONDS_HELP,
};
use manifold_crypto::DataKeys;
pub use manifold_provider::durable::CallsInFlight;

use super::codec;
use super::sealing::{self, Sealing};
use super::{
    Begin, Change, Claim, ClaimsLiveIn, Durable, Fingerprint, ImportedTransaction, KnownRequest,
    MeteredCall, Operation, RequestEntry, RequestState, Store, StoreError, StoredAnswer,
    TransactionRecord,
};
use codec::{key, metering_key, split_key, REQUEST, TRANSACTION};

/// What the store's tree says it holds; a store without it is refused.
/// Format 3 is format 2's records with the journal in front: a version that
/// reads format 2 only would ignore `journal/` and lose what it holds, so it
/// must refuse a store this version has opened. Format 4 is format 3 with
/// records that may be sealed (`sealing.rs`) or have had their customer data
/// dropped, which a format-3 version would misread as damage. Format 5 is
/// format 4 with in-process providers' state journaled too (entries naming
/// another tree), which a format-4 version would read as a torn tail.
/// Format 7 is format 5 with transaction records of version 2 (answers as
/// packed JSON, `packed_json.rs`), which a format-5 version would refuse
/// record by record, call by call, instead of at start-up. (Format 6 was
/// request pointers in buckets, built and reverted on its figures; a store
/// a development build marked so is refused by name.)
pub const FORMAT: &str = "manifold-switch-store/7";
/// Formats 2 to 5 are taken over as they are: their records are format 7
/// records (version 1 records, still read; those in clear are sealed as they
/// are written again, or by `reseal`), and their journals hold no entry
/// format 7 would read otherwise.
const TAKEN_OVER: [&str; 4] = [
    "manifold-switch-store/2",
    "manifold-switch-store/3",
    "manifold-switch-store/4",
    "manifold-switch-store/5",
];
/// The markers of format 6 (request pointers in buckets, `P` keys instead of
/// `R`): taken over, its pointers would not be found and a repeated
/// `request_ref` would be served as new, so it is refused by name.
const BUCKETED: [&str; 2] = [
    "manifold-switch-store/6",
    "manifold-switch-store/6-converting",
];
const TREE: &str = "switch/v2";
/// The trees of the first store format, which this version does not read.
const FORMAT_1_TREES: [&str; 3] = ["switch/transactions", "switch/requests", "switch/metering"];
const LOCK_STRIPES: usize = 1024;
/// Imported transactions per journal entry (a few MB).
const IMPORT_ENTRY: usize = 4_096;
const MINUTE_MS: u64 = 60_000;
/// Buffered metered calls go with the next commit once this many have
/// gathered...
pub const METERING_BATCH_CALLS: usize = 256;
/// ...or once the oldest has waited this long: what a crash of a loaded
/// switch can lose of its billing (a call metered promptly goes with the
/// next commit whatever its age).
pub const METERING_BATCH_AGE: Duration = Duration::from_millis(10);

/// How the store uses memory and time, and the key it seals records under.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// sled's page cache. sled's own default is 1 GiB, which a busy switch
    /// fills; this bounds the store's share of the process's memory.
    pub cache_capacity_bytes: u64,
    /// How long a metered call may wait in memory when no commit comes.
    pub metering_interval: Duration,
    /// How long the journal's committer gathers callers before it writes a
    /// small batch, under concurrent load (*Group commit* in `journal.rs`).
    pub commit_window: Duration,
    /// The keys transaction records are sealed under (see `sealing.rs`);
    /// `None` keeps them in clear, for tests only.
    pub data_keys: Option<Arc<DataKeys>>,
    /// The calls in flight in the switch: the commit window opens only
    /// while there are enough of them (`journal.rs`, *Group commit*).
    /// `None`: the batches alone decide.
    pub calls_in_flight: Option<CallsInFlight>,
}

impl StoreOptions {
    /// The options a host's configuration sets (`[storage]`, and the data
    /// key of `[data_at_rest]`); the rest as [`StoreOptions::default`].
    pub fn configured(config: &manifold_config::SwitchConfig) -> Self {
        StoreOptions {
            cache_capacity_bytes: config.storage.cache_capacity_bytes,
            commit_window: config.storage.commit_window,
            data_keys: Some(config.data_at_rest.keys.clone()),
            ..StoreOptions::default()
        }
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_capacity_bytes: manifold_config::DEFAULT_CACHE_CAPACITY_MB * 1024 * 1024,
            metering_interval: Duration::from_millis(200),
            commit_window: Duration::from_micros(manifold_config::DEFAULT_COMMIT_WINDOW_US),
            data_keys: None,
            calls_in_flight: None,
        }
    }
}

/// Bytes of one transaction's records, keys included (before sled's own
/// overhead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedSizes {
    /// The pointers of its requests.
    pub pointer: usize,
    pub transaction: usize,
    /// One metered call, as it sits in a batch.
    pub metered_call: usize,
}

/// A request claimed by a call that has recorded nothing of it yet.
#[derive(Debug, Clone)]
struct Running {
    operation: Operation,
    transaction_ref: String,
    fingerprint: Fingerprint,
    started_at_ms: u64,
}

pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
    /// Every write to `tree` on the request path goes through the journal,
    /// and every read sees what it holds before sled does.
    journal: Arc<Journal>,
    locks: Locks,
    /// Requests in flight that are not on disk, by request key.
    running: DashMap<Vec<u8>, Running>,
    /// Enquiries in flight, by transaction key: the record as begun.
    enquiries: DashMap<Vec<u8>, TransactionRecord>,
    metering: Arc<Metering>,
    sealing: Sealing,
}

/// Striped locks over keys. Every write holds the stripes of the keys it
/// checks and writes, so a check and the write that depends on it are never
/// interleaved.
struct Locks(Vec<Mutex<()>>);

/// The stripes one operation holds, released on drop.
struct Held<'a>(#[allow(dead_code)] Vec<MutexGuard<'a, ()>>);

impl Locks {
    fn new() -> Self {
        Locks((0..LOCK_STRIPES).map(|_| Mutex::new(())).collect())
    }

    fn stripe(key: &[u8]) -> usize {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        (hasher.finish() as usize) % LOCK_STRIPES
    }

    /// Locks the stripes of `keys`, in stripe order so two operations
    /// locking overlapping sets cannot deadlock.
    fn hold(&self, keys: &[&[u8]]) -> Held<'_> {
        let mut stripes: Vec<usize> = keys.iter().map(|key| Self::stripe(key)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        Held(
            stripes
                .into_iter()
                // A panic elsewhere while holding a stripe leaves nothing half
                // written in memory (sled writes are single-key), so the
                // stripe stays usable.
                .map(|stripe| self.0[stripe].lock().unwrap_or_else(|e| e.into_inner()))
                .collect(),
        )
    }
}

/// Metered calls grouped as they are stored: one batch per app and minute.
fn by_app_and_minute<'a>(
    calls: impl IntoIterator<Item = &'a MeteredCall>,
) -> BTreeMap<(&'a str, u64), Vec<&'a MeteredCall>> {
    let mut batches: BTreeMap<(&str, u64), Vec<&MeteredCall>> = BTreeMap::new();
    for call in calls {
        batches
            .entry((call.app_id.as_str(), call.at_ms - call.at_ms % MINUTE_MS))
            .or_default()
            .push(call);
    }
    batches
}

/// Metered calls not yet written.
struct Metering {
    db: sled::Db,
    journal: Arc<Journal>,
    pending: Mutex<Buffered>,
}

/// The metered calls waiting to be written, since when the oldest has, and
/// whether one of them was metered promptly.
#[derive(Default)]
struct Buffered {
    calls: Vec<MeteredCall>,
    since: Option<Instant>,
    prompt: bool,
}

impl Buffered {
    fn push(&mut self, call: MeteredCall) {
        self.since.get_or_insert_with(Instant::now);
        self.calls.push(call);
    }

    fn take(&mut self) -> Vec<MeteredCall> {
        self.since = None;
        self.prompt = false;
        std::mem::take(&mut self.calls)
    }

    /// Whether the next commit should carry them (see [`METERING_BATCH_CALLS`]).
    fn due(&self) -> bool {
        self.prompt
            || self.calls.len() >= METERING_BATCH_CALLS
            || self
                .since
                .is_some_and(|since| since.elapsed() >= METERING_BATCH_AGE)
    }
}

impl Metering {
    fn buffered(&self) -> MutexGuard<'_, Buffered> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes what is buffered: one batch per app and minute. Says whether
    /// there was anything.
    fn drain(&self) -> Result<bool, StoreError> {
        let calls = self.buffered().take();
        self.write(calls)
    }

    /// [`Metering::drain`], if the buffered calls are due
    /// ([`Buffered::due`]): what each commit asks.
    fn drain_due(&self) -> Result<bool, StoreError> {
        let calls = {
            let mut buffered = self.buffered();
            if !buffered.due() {
                return Ok(false);
            }
            buffered.take()
        };
        self.write(calls)
    }

    fn write(&self, calls: Vec<MeteredCall>) -> Result<bool, StoreError> {
        if calls.is_empty() {
            return Ok(false);
        }
        let mut batches = by_app_and_minute(&calls).into_iter();
        while let Some(((app_id, minute), batch)) = batches.next() {
            let written = self
                .db
                .generate_id()
                .map_err(StoreError::from)
                .and_then(|id| {
                    let bytes = codec::encode_calls(batch.iter().copied())?;
                    self.journal
                        .write(vec![Write::Insert(metering_key(app_id, minute, id), bytes)])
                });
            if let Err(error) = written {
                // What was not written stays buffered for the next drain (or
                // for the store that replaces this one, which meters them
                // promptly: `Storage::install`).
                let unwritten = batch
                    .into_iter()
                    .chain(batches.flat_map(|(_, rest)| rest))
                    .cloned();
                let mut buffered = self.buffered();
                let newer = buffered.take();
                for call in unwritten.chain(newer) {
                    buffered.push(call);
                }
                return Err(error);
            }
        }
        Ok(true)
    }

    /// Drains every `interval` until the store is dropped.
    fn start_drain(metering: &Arc<Metering>, interval: Duration) -> std::io::Result<()> {
        let weak: Weak<Metering> = Arc::downgrade(metering);
        std::thread::Builder::new()
            .name("switch-metering".into())
            .spawn(move || loop {
                std::thread::sleep(interval);
                let Some(metering) = weak.upgrade() else {
                    return;
                };
                match metering.drain() {
                    Ok(true) => metering.journal.nudge(),
                    Ok(false) => {}
                    Err(error) => {
                        tracing::error!(%error, "metered calls could not be written; they stay buffered")
                    }
                }
            })?;
        Ok(())
    }
}

impl Drop for Metering {
    fn drop(&mut self) {
        if let Err(error) = self.drain() {
            tracing::error!(%error, "metered calls lost at close");
        }
    }
}

impl From<sled::Error> for StoreError {
    fn from(error: sled::Error) -> Self {
        StoreError::Database(error.to_string())
    }
}

/// The `/transact` that begins `transaction`, its request key and the
/// transaction's key.
fn begin_keys(
    transaction: &TransactionRecord,
) -> Result<(&RequestEntry, Vec<u8>, Vec<u8>), StoreError> {
    let first = transaction
        .first_request()
        .ok_or_else(|| StoreError::Corrupt("a transaction begins with its /transact".into()))?;
    Ok((
        first,
        key(REQUEST, &transaction.app_id, &first.request_ref),
        key(
            TRANSACTION,
            &transaction.app_id,
            &transaction.transaction_ref,
        ),
    ))
}

/// Refuses a database another store format wrote, and marks a new one.
fn check_format(db: &sled::Db, tree: &sled::Tree) -> Result<(), StoreError> {
    for name in FORMAT_1_TREES {
        let present = db
            .tree_names()
            .iter()
            .any(|t| t.as_ref() == name.as_bytes());
        if !present {
            continue;
        }
        if !db.open_tree(name)?.is_empty() {
            return Err(StoreError::UnsupportedFormat(format!(
                "this data directory holds a store written by an earlier version of Manifold \
                 (store format 1: tree `{name}`); this version reads `{FORMAT}` and does not \
                 convert it. Serve the old data with the version that wrote it, or start this \
                 one on an empty data directory"
            )));
        }
        db.drop_tree(name)?;
    }
    match tree.get(codec::FORMAT_KEY)? {
        Some(found) if found.as_ref() == FORMAT.as_bytes() => Ok(()),
        Some(found) if BUCKETED.iter().any(|f| found.as_ref() == f.as_bytes()) => {
            Err(StoreError::UnsupportedFormat(format!(
                "the store says it is `{}`: request pointers in buckets, a format of a \
                 development build that was withdrawn; this version reads `{FORMAT}` and does \
                 not convert it. Serve the data with the build that wrote it, or start this one \
                 on an empty data directory",
                String::from_utf8_lossy(&found)
            )))
        }
        Some(found) if TAKEN_OVER.iter().any(|f| found.as_ref() == f.as_bytes()) => {
            tree.insert(codec::FORMAT_KEY, FORMAT.as_bytes())?;
            db.flush()?;
            tracing::info!(
                "the store is now format 7 (a journal that carries in-process providers' state \
                 too, records sealed as they are written — `manifold --reseal` seals the rest — \
                 and answers packed as they are written)"
            );
            Ok(())
        }
        Some(found) => Err(StoreError::UnsupportedFormat(format!(
            "the store says it is `{}`; this version reads `{FORMAT}`",
            String::from_utf8_lossy(&found)
        ))),
        None if tree.is_empty() => {
            tree.insert(codec::FORMAT_KEY, FORMAT.as_bytes())?;
            db.flush()?;
            Ok(())
        }
        None => Err(StoreError::UnsupportedFormat(format!(
            "tree `{TREE}` holds records but no format marker; this version reads `{FORMAT}`"
        ))),
    }
}

/// Whether sled could not open its database because another process holds
/// the lock on its `db` file. sled 0.34 reports it only in words, as an
/// `Other` error whose text starts with these (src/config.rs, `open_file`).
fn held_by_another_process(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::WouldBlock
        || (error.kind() == std::io::ErrorKind::Other
            && error.to_string().starts_with("could not acquire lock on"))
}

impl SledStore {
    /// Opens the sled database at `path` with `options`' cache.
    pub fn open_db(path: &Path, options: &StoreOptions) -> Result<sled::Db, StoreError> {
        sled::Config::new()
            .path(path)
            .cache_capacity(options.cache_capacity_bytes)
            .open()
            .map_err(|error| match error {
                sled::Error::Io(io) if held_by_another_process(&io) => {
                    StoreError::InUse(path.display().to_string())
                }
                other => other.into(),
            })
    }

    /// The journal's directory in the store's directory `path`.
    fn journal_dir(path: &Path) -> std::path::PathBuf {
        path.join("journal")
    }

    /// Hands `each` the calls of `app_id` metered in `[from_ms, until_ms)`,
    /// one minute's bucket at a time, oldest bucket first.
    async fn for_each_minute_metered(
        &self,
        app_id: &str,
        from_ms: u64,
        until_ms: u64,
        mut each: impl FnMut(&mut dyn Iterator<Item = MeteredCall>),
    ) -> Result<(), StoreError> {
        // What is buffered counts as metered; a scan reads sled, which holds
        // what the journal holds once it is applied.
        self.metering.drain()?;
        self.journal.in_sled().await?;
        let start = metering_key(app_id, from_ms - from_ms % MINUTE_MS, 0);
        let end = metering_key(app_id, until_ms, 0);
        for entry in self.tree.range(start..end) {
            let (_, bytes) = entry?;
            each(
                &mut codec::decode_calls(app_id, &bytes)?
                    .into_iter()
                    .filter(|call| (from_ms..until_ms).contains(&call.at_ms)),
            );
        }
        Ok(())
    }

    /// Opens the switch's records in `db`, the sled database in `path`
    /// (whose journal is replayed into it first). `commit` must flush that
    /// same `db`.
    pub fn open(
        path: &Path,
        db: &sled::Db,
        commit: GroupCommit,
        options: &StoreOptions,
    ) -> Result<Self, StoreError> {
        let tree = db.open_tree(TREE)?;
        check_format(db, &tree)?;
        let sealing = Sealing::new(options.data_keys.clone());
        if let Some(ids) = sealing.check_key_ids(tree.get(sealing::KEY_IDS)?.as_deref())? {
            tree.insert(sealing::KEY_IDS, ids)?;
            tree.flush()?;
        }
        let (journal, replayed) = Journal::open(
            &Self::journal_dir(path),
            db,
            &tree,
            commit,
            options.commit_window,
        )?;
        if replayed.entries > 0 {
            tracing::info!(
                segments = replayed.segments,
                entries = replayed.entries,
                "replayed the store's journal"
            );
        }
        if let Some(count) = &options.calls_in_flight {
            journal.count_calls_in_flight(count.clone());
        }
        let journal = Arc::new(journal);
        let metering = Arc::new(Metering {
            db: db.clone(),
            journal: journal.clone(),
            pending: Mutex::new(Buffered::default()),
        });
        // A commit carries the calls metered before it began once they are
        // due: checked once per commit, not per caller waiting on it.
        let committing = Arc::downgrade(&metering);
        journal.before_each_commit(Box::new(move || {
            let Some(metering) = committing.upgrade() else {
                return;
            };
            if let Err(error) = metering.drain_due() {
                tracing::error!(%error, "metered calls could not be written; they stay buffered");
            }
        }));
        Metering::start_drain(&metering, options.metering_interval)
            .map_err(|e| StoreError::Database(e.to_string()))?;
        Ok(SledStore {
            db: db.clone(),
            tree,
            journal,
            locks: Locks::new(),
            running: DashMap::new(),
            enquiries: DashMap::new(),
            metering,
            sealing,
        })
    }

    /// A record as written: encoded, then sealed for its key.
    fn encode_record(
        &self,
        transaction_key: &[u8],
        record: &TransactionRecord,
    ) -> Result<Vec<u8>, StoreError> {
        Ok(self
            .sealing
            .seal(transaction_key, codec::encode_transaction(record)?))
    }

    fn decode_record(
        &self,
        transaction_key: &[u8],
        stored: &[u8],
    ) -> Result<TransactionRecord, StoreError> {
        let (app_id, transaction_ref) = split_key(transaction_key)?;
        let encoded = self.sealing.open(transaction_key, stored)?;
        codec::decode_transaction(&app_id, &transaction_ref, &encoded)
    }

    fn stored_transaction(
        &self,
        transaction_key: &[u8],
    ) -> Result<Option<TransactionRecord>, StoreError> {
        match self.journal.get(transaction_key)? {
            Some(bytes) => Ok(Some(self.decode_record(transaction_key, &bytes)?)),
            None => Ok(None),
        }
    }

    /// What is known of the request under `request_key`: a claim in flight,
    /// or the record listing it. A pointer whose record does not list the
    /// request is void (see the module docs). Callers hold the key's stripe.
    fn known(&self, request_key: &[u8]) -> Result<Option<KnownRequest>, StoreError> {
        if let Some(running) = self.running.get(request_key) {
            return Ok(Some(KnownRequest::Running {
                operation: running.operation,
                transaction_ref: running.transaction_ref.clone(),
                fingerprint: running.fingerprint,
                started_at_ms: running.started_at_ms,
            }));
        }
        let Some(pointer) = self.journal.get(request_key)? else {
            return Ok(None);
        };
        let (app_id, request_ref) = split_key(request_key)?;
        let transaction_ref = codec::decode_pointer(&pointer)?;
        let Some(transaction) =
            self.stored_transaction(&key(TRANSACTION, &app_id, &transaction_ref))?
        else {
            return Ok(None);
        };
        Ok(transaction
            .request(&request_ref)
            .cloned()
            .map(|request| KnownRequest::Recorded {
                request,
                transaction,
            }))
    }

    /// Checks that the first request of `transaction` and its ref are free;
    /// callers hold both stripes.
    fn check_free(
        &self,
        request_key: &[u8],
        transaction_key: &[u8],
    ) -> Result<Option<Begin>, StoreError> {
        if let Some(known) = self.known(request_key)? {
            return Ok(Some(Begin::Repeat(Box::new(known))));
        }
        if self.enquiries.contains_key(transaction_key)
            || self.journal.contains_key(transaction_key)?
        {
            return Ok(Some(Begin::TransactionRefTaken));
        }
        Ok(None)
    }

    /// Takes the metered calls not yet written, for another store to write
    /// (the switch's next storage generation, when this one failed).
    pub fn take_metered(&self) -> Vec<MeteredCall> {
        self.metering.buffered().take()
    }

    /// How many metered calls wait in memory for their batch: none after a
    /// commit once they are due.
    pub fn metered_calls_waiting(&self) -> usize {
        self.metering.buffered().calls.len()
    }

    /// The store's journal, lent to a provider running in-process on this
    /// database, which writes its state through it
    /// (`StateDurability::SwitchLog` of the provider SDK).
    pub fn provider_log(&self) -> Arc<dyn manifold_provider::SharedLog> {
        Arc::new(ProviderLog::new(self.journal.clone()))
    }

    /// The group commits of its journal so far, for `/metrics`.
    pub fn commit_stats(&self) -> &CommitStats {
        self.journal.stats()
    }

    /// Closed journal segments not yet checkpointed (see the journal's
    /// docs): after [`SledStore::settle`], zero once the store's directory
    /// holds each change once.
    pub fn checkpoints_pending(&self) -> u64 {
        self.journal.checkpoints_pending()
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }

    /// Hands every buffered metered call to the journal now, due or not;
    /// the next [`Store::durable`] makes them durable. For a stop: after
    /// it, nothing waits for a batch to age.
    pub fn write_metered(&self) -> Result<(), StoreError> {
        self.metering.drain().map(drop)
    }

    /// Waits until everything written is in sled's tree (the journal
    /// applied, buffered metering written), so that [`SledStore::each_transaction`]
    /// and [`SledStore::each_metered_call`] see all of it.
    pub async fn settle(&self) -> Result<(), StoreError> {
        self.metering.drain()?;
        self.journal.durable().await?;
        self.journal.in_sled().await
    }

    /// Hands `each` every transaction record, in key order (app, then
    /// `transaction_ref`), opened; returns how many. For a copy into
    /// another store: call [`SledStore::settle`] first, on a store that is
    /// not serving.
    pub fn each_transaction(
        &self,
        mut each: impl FnMut(TransactionRecord) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        let mut count = 0;
        for entry in self.tree.scan_prefix([TRANSACTION]) {
            let (key, stored) = entry?;
            each(self.decode_record(&key, &stored)?)?;
            count += 1;
        }
        Ok(count)
    }

    /// Hands `each` every metered call, app by app and batch by batch (in
    /// time order of their minutes); returns how many. As
    /// [`SledStore::each_transaction`], after [`SledStore::settle`].
    pub fn each_metered_call(
        &self,
        mut each: impl FnMut(MeteredCall) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        let mut count = 0;
        for entry in self.tree.scan_prefix([codec::METERING]) {
            let (key, bytes) = entry?;
            let app_id = key
                .get(1..)
                .and_then(|rest| rest.iter().position(|b| *b == 0x1f).map(|at| &rest[..at]))
                .and_then(|app| std::str::from_utf8(app).ok())
                .ok_or_else(|| StoreError::Corrupt("a malformed metering key".into()))?;
            for call in codec::decode_calls(app_id, &bytes)? {
                each(call)?;
                count += 1;
            }
        }
        Ok(count)
    }

    /// Writes answered transactions in bulk, with the same keys and encoding
    /// the request path uses, through the journal as the request path does
    /// (an entry per `IMPORT_ENTRY` transactions): they are durable after
    /// the next [`Store::durable`]. For loading data (benchmarks, tests), not
    /// for serving: it does not check whether a ref is taken.
    ///
    /// Not one large sled batch, as it was: a store loaded that way held about
    /// 1,660 bytes per transaction on disk, against 1,200 written through the
    /// journal like a served one (`tests/bench/PROFILING.md`, eighth round),
    /// and a value written around the journal can be overwritten when the
    /// journal's segment is replayed at the next open.
    pub fn import(&self, transactions: &[ImportedTransaction]) -> Result<(), StoreError> {
        for chunk in transactions.chunks(IMPORT_ENTRY) {
            let mut writes = Vec::with_capacity(chunk.len() * 3);
            for imported in chunk {
                let record = &imported.transaction;
                for request in &record.requests {
                    writes.push(Write::Insert(
                        key(REQUEST, &record.app_id, &request.request_ref),
                        codec::encode_pointer(&record.transaction_ref)?,
                    ));
                }
                let transaction_key = key(TRANSACTION, &record.app_id, &record.transaction_ref);
                let encoded = self.encode_record(&transaction_key, record)?;
                writes.push(Write::Insert(transaction_key, encoded));
            }
            for ((app_id, minute), batched) in by_app_and_minute(chunk.iter().map(|t| &t.call)) {
                writes.push(Write::Insert(
                    metering_key(app_id, minute, self.db.generate_id()?),
                    codec::encode_calls(batched.into_iter())?,
                ));
            }
            self.journal.write(writes)?;
        }
        Ok(())
    }

    /// What one imported transaction takes in the tree, keys included.
    pub fn encoded_sizes(imported: &ImportedTransaction) -> Result<EncodedSizes, StoreError> {
        let record = &imported.transaction;
        let pointers = record
            .requests
            .iter()
            .map(|request| {
                Ok(key(REQUEST, &record.app_id, &request.request_ref).len()
                    + codec::encode_pointer(&record.transaction_ref)?.len())
            })
            .sum::<Result<usize, StoreError>>()?;
        // A batch's own overhead (its key, version byte and length) is
        // shared by every call in it.
        let one_call = codec::encode_calls(std::iter::once(&imported.call))?.len() - 2;
        Ok(EncodedSizes {
            pointer: pointers,
            transaction: key(TRANSACTION, &record.app_id, &record.transaction_ref).len()
                + codec::encode_transaction(record)?.len(),
            metered_call: one_call,
        })
    }

    /// Rewrites, one at a time under its lock, every record under the
    /// transaction key `key` for which `rewrite` returns a new record
    /// (given the record as stored now). Scans sled, so a record changed in
    /// the journal since is read again under the lock.
    fn rewrite_records(
        &self,
        wanted: impl Fn(&[u8], &[u8]) -> bool,
        rewrite: impl Fn(TransactionRecord) -> Option<TransactionRecord>,
    ) -> Result<usize, StoreError> {
        let mut rewritten = 0;
        for entry in self.tree.scan_prefix([TRANSACTION]) {
            let (transaction_key, stored) = entry?;
            if !wanted(&transaction_key, &stored) {
                continue;
            }
            let _held = self.locks.hold(&[&transaction_key]);
            let Some(record) = self.stored_transaction(&transaction_key)? else {
                continue;
            };
            let Some(record) = rewrite(record) else {
                continue;
            };
            let bytes = self.encode_record(&transaction_key, &record)?;
            self.journal
                .write(vec![Write::Insert(transaction_key.to_vec(), bytes)])?;
            rewritten += 1;
        }
        Ok(rewritten)
    }

    /// Seals every record not sealed under the current data key (records
    /// written before the store had a key, or under a previous key), so the
    /// previous keys can be removed from the configuration. Returns how many
    /// it rewrote; they are durable when it returns.
    pub async fn reseal(&self) -> Result<usize, StoreError> {
        if self.sealing.current_key_id().is_none() {
            return Err(StoreError::Sealed(
                "resealing needs a data key: the store was opened without one".into(),
            ));
        }
        self.journal.in_sled().await?;
        let resealed = self.rewrite_records(|_, stored| self.sealing.needs_reseal(stored), Some)?;
        self.durable().await?;
        // Every record is under the current key now: the previous ones may go.
        self.journal.in_sled().await?;
        if let Some(ids) = self.sealing.current_key_id_only() {
            self.tree.insert(sealing::KEY_IDS, ids)?;
            self.tree.flush()?;
        }
        Ok(resealed)
    }

    /// Opens the store already in `path` (never creates one), for the
    /// commands that work on a stopped switch's store.
    pub fn open_existing(path: &Path, options: &StoreOptions) -> Result<SledStore, StoreError> {
        if !path.join("db").is_file() {
            return Err(StoreError::Database(format!(
                "no store in {}",
                path.display()
            )));
        }
        let db = Self::open_db(path, options)?;
        let commit =
            GroupCommit::start(db.clone()).map_err(|e| StoreError::Database(e.to_string()))?;
        Self::open(path, &db, commit, options)
    }

    /// Dumps the store in `path` ([`SledStore::dump`]) and closes it. sled is
    /// one process, so the switch must be stopped (`manifold --dump`).
    pub fn dump_directory(
        path: &Path,
        options: &StoreOptions,
        out: &mut impl std::io::Write,
    ) -> Result<u64, StoreError> {
        Self::open_existing(path, options)?.dump(out)
    }

    /// The stored records as JSON lines, for people: one object per
    /// transaction (keys and statuses spelled out).
    pub fn dump(&self, out: &mut impl std::io::Write) -> Result<u64, StoreError> {
        let mut written = 0;
        for entry in self.tree.scan_prefix([TRANSACTION]) {
            let (key, bytes) = entry?;
            let record = self.decode_record(&key, &bytes)?;
            serde_json::to_writer(&mut *out, &super::transaction_json(&record))
                .and_then(|_| out.write_all(b"\n").map_err(serde_json::Error::io))
                .map_err(|e| StoreError::Database(e.to_string()))?;
            written += 1;
        }
        Ok(written)
    }
}

#[async_trait]
impl Store for SledStore {
    fn claims_live_in(&self) -> ClaimsLiveIn {
        ClaimsLiveIn::Process
    }

    async fn begin_transaction(
        &self,
        transaction: &TransactionRecord,
    ) -> Result<Begin, StoreError> {
        let (_, request_key, transaction_key) = begin_keys(transaction)?;
        let pointer = codec::encode_pointer(&transaction.transaction_ref)?;
        let record = self.encode_record(&transaction_key, transaction)?;
        let _held = self.locks.hold(&[&request_key, &transaction_key]);
        if let Some(found) = self.check_free(&request_key, &transaction_key)? {
            return Ok(found);
        }
        self.journal.write(vec![
            Write::Insert(request_key, pointer),
            Write::Insert(transaction_key, record),
        ])?;
        Ok(Begin::Started)
    }

    async fn begin_enquiry(&self, transaction: &TransactionRecord) -> Result<Begin, StoreError> {
        let (first, request_key, transaction_key) = begin_keys(transaction)?;
        let _held = self.locks.hold(&[&request_key, &transaction_key]);
        if let Some(found) = self.check_free(&request_key, &transaction_key)? {
            return Ok(found);
        }
        let started_at_ms = match first.state {
            RequestState::InFlight { started_at_ms } => started_at_ms,
            RequestState::Answered(_) => transaction.created_at_ms,
        };
        self.enquiries.insert(transaction_key, transaction.clone());
        self.running.insert(
            request_key,
            Running {
                operation: Operation::Transact,
                transaction_ref: transaction.transaction_ref.clone(),
                fingerprint: first.fingerprint,
                started_at_ms,
            },
        );
        Ok(Begin::Started)
    }

    async fn claim_request(
        &self,
        app_id: &str,
        transaction_ref: &str,
        request: &RequestEntry,
    ) -> Result<Claim, StoreError> {
        let request_key = key(REQUEST, app_id, &request.request_ref);
        let _held = self.locks.hold(&[&request_key]);
        if let Some(known) = self.known(&request_key)? {
            return Ok(Claim::Repeat(Box::new(known)));
        }
        let started_at_ms = match request.state {
            RequestState::InFlight { started_at_ms } => started_at_ms,
            RequestState::Answered(_) => 0,
        };
        self.running.insert(
            request_key,
            Running {
                operation: request.operation,
                transaction_ref: transaction_ref.to_owned(),
                fingerprint: request.fingerprint,
                started_at_ms,
            },
        );
        Ok(Claim::Started)
    }

    async fn request(
        &self,
        app_id: &str,
        request_ref: &str,
    ) -> Result<Option<KnownRequest>, StoreError> {
        let request_key = key(REQUEST, app_id, request_ref);
        let _held = self.locks.hold(&[&request_key]);
        self.known(&request_key)
    }

    async fn abandon(
        &self,
        app_id: &str,
        request_ref: &str,
        transaction_ref: &str,
        began_transaction: bool,
    ) -> Result<(), StoreError> {
        let request_key = key(REQUEST, app_id, request_ref);
        let transaction_key = key(TRANSACTION, app_id, transaction_ref);
        let _held = self.locks.hold(&[&request_key, &transaction_key]);
        if self.running.remove(&request_key).is_some() {
            if began_transaction {
                self.enquiries.remove(&transaction_key);
            }
            return Ok(());
        }
        if began_transaction {
            let begun_here = self
                .stored_transaction(&transaction_key)?
                .is_some_and(|record| {
                    record.first_request().map(|r| r.request_ref.as_str()) == Some(request_ref)
                });
            if begun_here {
                self.journal.write(vec![
                    Write::Remove(transaction_key),
                    Write::Remove(request_key),
                ])?;
            }
        }
        Ok(())
    }

    async fn transaction(
        &self,
        app_id: &str,
        transaction_ref: &str,
    ) -> Result<Option<TransactionRecord>, StoreError> {
        let transaction_key = key(TRANSACTION, app_id, transaction_ref);
        // The claim first: it goes only after the record is written.
        if let Some(begun) = self.enquiries.get(&transaction_key) {
            return Ok(Some(begun.clone()));
        }
        self.stored_transaction(&transaction_key)
    }

    async fn update_transaction(
        &self,
        app_id: &str,
        transaction_ref: &str,
        change: Change<'_>,
        answer: Option<(&str, StoredAnswer)>,
    ) -> Result<Option<TransactionRecord>, StoreError> {
        let transaction_key = key(TRANSACTION, app_id, transaction_ref);
        let answer_key = answer
            .as_ref()
            .map(|(request_ref, _)| key(REQUEST, app_id, request_ref));
        let mut keys: Vec<&[u8]> = vec![&transaction_key];
        keys.extend(answer_key.as_deref());
        let _held = self.locks.hold(&keys);
        // An enquiry claimed in memory has no stored record (it is claimed
        // only where none is, and leaves `enquiries` when its record is
        // written, both under this stripe): no need to look in sled first.
        let claimed_enquiry = self
            .enquiries
            .get(&transaction_key)
            .map(|begun| begun.clone());
        let (mut record, first_write) = match claimed_enquiry {
            Some(begun) => (begun, true),
            None => match self.stored_transaction(&transaction_key)? {
                Some(record) => (record, false),
                None => return Ok(None),
            },
        };
        let answer_is_new = match (&answer_key, answer) {
            (Some(answer_key), Some((request_ref, stored))) => {
                let listed = record
                    .requests
                    .iter_mut()
                    .find(|r| r.request_ref == request_ref);
                let claimed = self
                    .running
                    .get(answer_key.as_slice())
                    .filter(|running| running.transaction_ref == transaction_ref);
                match (listed, claimed) {
                    (Some(entry), _) => {
                        entry.state = RequestState::Answered(stored);
                        first_write
                    }
                    (None, Some(running)) => {
                        record.requests.push(RequestEntry {
                            request_ref: request_ref.to_owned(),
                            operation: running.operation,
                            fingerprint: running.fingerprint,
                            state: RequestState::Answered(stored),
                        });
                        true
                    }
                    // Not claimed by this process for this transaction:
                    // nothing to answer.
                    (None, None) => false,
                }
            }
            _ => false,
        };
        if first_write && !answer_is_new {
            // Only the enquiry's own answer writes its record.
            return Ok(Some(record));
        }
        change(&mut record);
        let bytes = self.encode_record(&transaction_key, &record)?;
        let mut writes = Vec::with_capacity(2);
        if let (true, Some(answer_key)) = (answer_is_new, &answer_key) {
            writes.push(Write::Insert(
                answer_key.clone(),
                codec::encode_pointer(transaction_ref)?,
            ));
        }
        writes.push(Write::Insert(transaction_key.clone(), bytes));
        self.journal.write(writes)?;
        // Only now may look-ups stop finding the claims.
        if let (true, Some(answer_key)) = (answer_is_new, &answer_key) {
            self.running.remove(answer_key);
        }
        if first_write {
            self.enquiries.remove(&transaction_key);
        }
        Ok(Some(record))
    }

    async fn meter(&self, call: &MeteredCall) -> Result<(), StoreError> {
        self.metering.buffered().push(call.clone());
        Ok(())
    }

    async fn meter_promptly(&self, call: &MeteredCall) -> Result<(), StoreError> {
        let mut buffered = self.metering.buffered();
        buffered.push(call.clone());
        buffered.prompt = true;
        Ok(())
    }

    async fn metered_calls(
        &self,
        app_id: &str,
        from_ms: u64,
        until_ms: u64,
    ) -> Result<Vec<MeteredCall>, StoreError> {
        let mut calls = Vec::new();
        self.for_each_minute_metered(app_id, from_ms, until_ms, |bucket| {
            calls.extend(bucket);
        })
        .await?;
        calls.sort_by_key(|call| call.at_ms);
        Ok(calls)
    }

    async fn each_metered(
        &self,
        app_id: &str,
        from_ms: u64,
        until_ms: u64,
        each: &mut (dyn for<'c> FnMut(&'c MeteredCall) + Send),
    ) -> Result<(), StoreError> {
        self.for_each_minute_metered(app_id, from_ms, until_ms, |bucket| {
            bucket.for_each(|call| each(&call));
        })
        .await
    }

    async fn drop_customer_data(
        &self,
        settled_before_ms: u64,
        now_ms: u64,
    ) -> Result<usize, StoreError> {
        self.journal.in_sled().await?;
        let eligible = |record: &TransactionRecord| {
            record.customer_data_dropped_at_ms.is_none()
                && record.is_settled()
                && record.updated_at_ms <= settled_before_ms
        };
        self.rewrite_records(
            // Every record is opened to be looked at: its times are sealed
            // with the rest.
            |key, stored| {
                self.decode_record(key, stored)
                    .map(|record| eligible(&record))
                    .unwrap_or(true)
            },
            |mut record| {
                eligible(&record).then(|| {
                    record.drop_customer_data(now_ms);
                    record
                })
            },
        )
    }

    async fn transaction_count(&self) -> Result<usize, StoreError> {
        self.journal.in_sled().await?;
        Ok(self.tree.scan_prefix([TRANSACTION]).count())
    }

    async fn durable(&self) -> Result<Durable, StoreError> {
        self.journal.durable().await?;
        Ok(Durable::after_flush())
    }
}

#[cfg(test)]
mod tests;
