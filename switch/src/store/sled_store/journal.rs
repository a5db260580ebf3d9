//! [`Journal`]: the write-ahead log in front of the switch's sled tree.
//!
//! **Why.** A durable acknowledgement through sled costs one `db.flush()`,
//! which hands sled's I/O buffer to its thread pool; that pool wakes every
//! one of its idle threads for each task (`notify_all` in sled 0.34's
//! `threadpool.rs`), and under load those wake-ups cost about a fifth of the
//! switch's CPU (`tests/bench/PROFILING.md`, fourth round). The journal takes
//! sled's flush off the acknowledgement path: a change is appended to a
//! plain file, one `sync_file_range` (the call sled's own flush makes)
//! acknowledges everything appended before it, and sled is written
//! afterwards and flushed when it suits (a checkpoint).
//!
//! **The rule that makes recovery a prefix.** A change reaches sled only
//! after its journal entry is on disk by the strongest promise there is
//! (`fdatasync`, by the applier, off the acknowledgement path: sled fsyncs on
//! its own, and must never be ahead of the journal). So sled, whatever it
//! recovered after a crash, holds a prefix of the journal's durable entries, and replaying the
//! journal's segments in order on top of it (each entry is a list of whole
//! values and removals, so replaying one twice changes nothing) gives exactly
//! the state of that durable prefix. Until a change is applied, readers see
//! it through the *overlay*, a map of the journaled values not yet in sled.
//!
//! **Segments and checkpoints.** Entries go to numbered segment files under
//! `journal/`. When one passes [`SEGMENT_BYTES`], the committer starts the
//! next (and syncs the directory, so the new file survives a crash), and a
//! checkpoint thread flushes sled — which by then holds every change of the
//! old segment — and deletes it. Opening the store replays what is left,
//! flushes sled, and deletes the segments replayed.
//!
//! **Entry format.** `len: u32 LE`, `crc32: u32 LE` of the payload, then the
//! payload: changes, each `1` (insert) or `2` (remove) in the switch's tree,
//! or `3` (insert) or `4` (remove) in another tree of the database, whose
//! name (length `u32 LE` and bytes) follows; then the key's length (`u32 LE`)
//! and bytes, and for an insert the value's length and bytes. A
//! torn or damaged entry ends the last segment (it was never acknowledged:
//! acknowledged entries precede the last sync); one in an earlier
//! segment is refused as damage.
//!
//! **Writes by in-process providers.** The SDK's state (an in-process
//! provider's pending entries and outcomes) is journaled too, in its own
//! trees, through [`ProviderLog`], the journal lent as a
//! [`manifold_provider::SharedLog`]: one commit makes a provider's state and
//! the switch's record of the answer durable together, in the order they
//! were written. Whatever else an in-process provider writes to sled
//! directly, it flushes itself, or leaves to the switch through
//! [`GroupCommit::leave_flush_to_caller`]; the committer then flushes sled
//! *before* it writes the journal entries that follow those writes, so the
//! switch never records on disk an outcome whose provider state is not.
//!
//! **Group commit.** One committer thread writes and syncs everything
//! appended since its last sync, for every caller waiting. A sync's cost is
//! mostly fixed (on a virtual disk, most of it is submitting the I/O), so
//! the fewer commits per caller, the less CPU each call costs. Under
//! concurrent load the committer waits the *commit window* (`[storage]
//! commit_window_us`; a sleep, it does not end early) before a small batch,
//! so that the callers about to arrive share the sync, by the rule of
//! [`Gathering`]: callers arriving together, and enough calls in flight when
//! the store was told how to count them ([`Journal::count_calls_in_flight`]).
//! That adds up to the window to a call's wait for durability; a few callers
//! at a time never wait, and one at a time waits at most once (the
//! metering's own nudges count as callers too). A failed journal answers at
//! once. Measured in tests/bench/PROFILING.md (tenth and thirteenth
//! rounds).
//!
//! **Backpressure.** At most [`APPLY_QUEUE_COMMITS`] commits wait to be
//! applied; past that the committer, and with it every `durable()`, waits
//! for sled, so the overlay stays bounded by what callers have in flight.
//!
//! **Errors are sticky**, like sled's: after a failed write, sync or apply,
//! every later write and acknowledgement fails, and the storage generation
//! that owns this journal is replaced (`crate::storage`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;

use dashmap::DashMap;
use manifold_provider::durable::{CallsInFlight, DurabilityError, Gathering};
use manifold_provider::{GroupCommit, SharedLog};
use tokio::sync::{mpsc, oneshot};

use crate::store::StoreError;

/// A segment past this size is closed and checkpointed.
pub const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// Commits written but not yet applied to sled, at most; past it the
/// committer waits for the applier.
const APPLY_QUEUE_COMMITS: usize = 1024;
/// The applier's `fdatasync`s are at least this far apart: each is a device
/// cache flush whose cost does not depend on how much it covers, and no
/// acknowledgement waits on it (reads see the overlay meanwhile; only
/// `in_sled()`, for scans, waits up to this much longer).
const MIN_APPLY_SYNC_GAP: std::time::Duration = std::time::Duration::from_millis(5);
/// No entry is larger (a record is a few KB): a larger length is damage.
const MAX_ENTRY_BYTES: u32 = 64 * 1024 * 1024;
const INSERT: u8 = 1;
const REMOVE: u8 = 2;
const INSERT_IN: u8 = 3;
const REMOVE_IN: u8 = 4;
/// Starts the overlay's keys of trees other than the switch's, which no key
/// of the switch's tree starts with (its kinds are ASCII letters and `\0`).
const OTHER_TREE: u8 = 0xFF;
const SUFFIX: &str = ".journal";

/// One change to the switch's tree, or to another tree of its database
/// (an in-process provider's, named).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Insert(Vec<u8>, Vec<u8>),
    Remove(Vec<u8>),
    InsertIn(Arc<str>, Vec<u8>, Vec<u8>),
    RemoveIn(Arc<str>, Vec<u8>),
}

impl Change {
    /// The key of this change in the overlay, which holds every tree's
    /// (borrowed for the switch's tree: the applier looks every change up).
    fn overlay_key(&self) -> Cow<'_, [u8]> {
        match self {
            Change::Insert(key, _) | Change::Remove(key) => Cow::Borrowed(key),
            Change::InsertIn(tree, key, _) | Change::RemoveIn(tree, key) => {
                Cow::Owned([&other_tree_prefix(tree)[..], key].concat())
            }
        }
    }

    fn value(&self) -> Option<&Vec<u8>> {
        match self {
            Change::Insert(_, value) | Change::InsertIn(_, _, value) => Some(value),
            Change::Remove(_) | Change::RemoveIn(..) => None,
        }
    }

    /// Makes this change in `tree` (the switch's) or the named tree of `db`.
    fn apply_to(&self, tree: &sled::Tree, trees: &Trees) -> Result<(), sled::Error> {
        match self {
            Change::Insert(key, value) => drop(tree.insert(key.as_slice(), value.as_slice())?),
            Change::Remove(key) => drop(tree.remove(key.as_slice())?),
            Change::InsertIn(name, key, value) => drop(
                trees
                    .named(name)?
                    .insert(key.as_slice(), value.as_slice())?,
            ),
            Change::RemoveIn(name, key) => drop(trees.named(name)?.remove(key.as_slice())?),
        }
        Ok(())
    }
}

/// The overlay's prefix for the keys of tree `name`: a marker no key of the
/// switch's tree starts with, and the name's length and bytes.
fn other_tree_prefix(name: &str) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(5 + name.len());
    prefix.push(OTHER_TREE);
    prefix.extend_from_slice(&(name.len() as u32).to_be_bytes());
    prefix.extend_from_slice(name.as_bytes());
    prefix
}

/// The database's other trees by name, opened once.
struct Trees {
    db: sled::Db,
    open: DashMap<Arc<str>, sled::Tree>,
}

impl Trees {
    fn named(&self, name: &str) -> Result<sled::Tree, sled::Error> {
        if let Some(tree) = self.open.get(name) {
            return Ok(tree.clone());
        }
        let tree = self.db.open_tree(name)?;
        self.open.insert(Arc::from(name), tree.clone());
        Ok(tree)
    }
}

type Reply = oneshot::Sender<Result<(), String>>;

/// Someone waiting for a commit: for its entries to be on disk (answered
/// before they are applied: the overlay serves reads meanwhile), or also in
/// sled's tree (for a scan of the tree).
enum Waiter {
    OnDisk(Reply),
    InSled(Reply),
}

/// Appended but not yet written to the segment.
#[derive(Default)]
struct Unwritten {
    bytes: Vec<u8>,
    /// The changes of those bytes with their sequence numbers, to apply once
    /// they are on disk.
    changes: Vec<(u64, Change)>,
}

struct Shared {
    tree: sled::Tree,
    /// The database's other trees that in-process providers journal into.
    trees: Trees,
    unwritten: Mutex<Unwritten>,
    /// Journaled values not yet in sled (`None`: removed), with the sequence
    /// number of the change that set them.
    overlay: DashMap<Vec<u8>, (u64, Option<Vec<u8>>)>,
    next_sequence: AtomicU64,
    /// The first error, after which nothing is acknowledged.
    failed: OnceLock<String>,
    stats: CommitStats,
    /// Closed segments handed to the checkpoint thread and not yet deleted.
    checkpoints_pending: AtomicU64,
    /// Appends what must go with every commit, once per commit, just
    /// before it ([`Journal::before_each_commit`]).
    before_commit: OnceLock<BeforeCommit>,
    /// How many calls are in flight ([`Journal::count_calls_in_flight`]).
    calls_in_flight: OnceLock<CallsInFlight>,
}

/// See [`Journal::before_each_commit`].
pub type BeforeCommit = Box<dyn Fn() + Send + Sync>;

pub const COMMIT_BATCH: &str = "manifold_store_commit_batch_size";
pub const COMMIT_BATCH_HELP: &str =
    "Calls and flushes answered by one group commit of the store's journal";
pub const COMMIT_SECONDS: &str = "manifold_store_commit_seconds";
pub const COMMIT_SECONDS_HELP: &str =
    "Time one group commit took to write and sync the store's journal";

/// What the group commits look like, for `/metrics`.
#[derive(Clone)]
pub struct CommitStats {
    /// Waiters (calls, flushes) one commit answered.
    pub batch_size: prometheus::Histogram,
    /// How long one commit's write and sync took.
    pub seconds: prometheus::Histogram,
}

impl CommitStats {
    fn new() -> CommitStats {
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            prometheus::Histogram::with_opts(
                prometheus::HistogramOpts::new(name, help).buckets(buckets),
            )
            .expect("a valid, constant histogram definition")
        };
        CommitStats {
            batch_size: histogram(
                COMMIT_BATCH,
                COMMIT_BATCH_HELP,
                prometheus::exponential_buckets(1.0, 2.0, 11).expect("constant buckets"),
            ),
            seconds: histogram(
                COMMIT_SECONDS,
                COMMIT_SECONDS_HELP,
                prometheus::exponential_buckets(0.000_05, 2.0, 16).expect("constant buckets"),
            ),
        }
    }
}

impl Shared {
    fn failure(&self) -> Option<String> {
        self.failed.get().cloned()
    }

    /// Records `error` unless an earlier one is recorded; returns the first.
    fn fail(&self, error: String) -> String {
        self.failed
            .get_or_init(|| {
                tracing::error!(%error, "the store's journal failed; nothing more is acknowledged until the store is reopened");
                error
            })
            .clone()
    }
}

/// The switch tree's write-ahead journal. Cheap to share behind the store;
/// its threads end when it is dropped, after writing what was appended.
pub struct Journal {
    shared: Arc<Shared>,
    waiters: mpsc::UnboundedSender<Waiter>,
}

/// What opening found and replayed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    pub segments: usize,
    pub entries: u64,
}

impl Journal {
    pub fn stats(&self) -> &CommitStats {
        &self.shared.stats
    }

    /// Replays what `dir` holds into `tree`, makes it durable in sled, and
    /// starts journaling there. `commit` is the database's group commit,
    /// through which in-process providers leave their flush to the switch.
    pub fn open(
        dir: &Path,
        db: &sled::Db,
        tree: &sled::Tree,
        commit: GroupCommit,
        window: std::time::Duration,
    ) -> Result<(Journal, Replayed), StoreError> {
        // Customer data: this user's alone, whatever the process's umask.
        manifold_edge::private_files::secure_data_dir(dir)
            .map_err(|e| io_error("create the journal directory", dir, e))?;
        let segments = segments_in(dir)?;
        let trees = Trees {
            db: db.clone(),
            open: DashMap::new(),
        };
        let replayed = replay(&segments, tree, &trees)?;
        if !segments.is_empty() {
            db.flush()?;
            for (_, path) in &segments {
                fs::remove_file(path).map_err(|e| io_error("remove", path, e))?;
            }
        }
        let next_number = segments.last().map_or(0, |(number, _)| number + 1);
        let segment = Segment::create(dir, next_number).map_err(StoreError::Database)?;
        let shared = Arc::new(Shared {
            tree: tree.clone(),
            trees,
            unwritten: Mutex::new(Unwritten::default()),
            overlay: DashMap::new(),
            next_sequence: AtomicU64::new(0),
            failed: OnceLock::new(),
            stats: CommitStats::new(),
            checkpoints_pending: AtomicU64::new(0),
            before_commit: OnceLock::new(),
            calls_in_flight: OnceLock::new(),
        });
        let (checkpoints, checkpoint_queue) = std::sync::mpsc::channel::<PathBuf>();
        let checkpoint_db = db.clone();
        let checkpoint_shared = shared.clone();
        thread::Builder::new()
            .name("journal-checkpoint".into())
            .spawn(move || {
                for closed in checkpoint_queue {
                    // sled already holds every change of the closed segment.
                    let checkpointed = checkpoint_db
                        .flush()
                        .map_err(|e| e.to_string())
                        .and_then(|_| fs::remove_file(&closed).map_err(|e| e.to_string()));
                    if let Err(error) = checkpointed {
                        // Replaying a segment twice is harmless; a sled that
                        // cannot flush fails the journal's writes too.
                        tracing::error!(segment = %closed.display(), %error, "journal checkpoint failed");
                        checkpoint_shared.fail(format!("journal checkpoint: {error}"));
                    }
                    checkpoint_shared
                        .checkpoints_pending
                        .fetch_sub(1, Ordering::Relaxed);
                }
            })
            .map_err(|e| io_error("start the checkpoint thread of", dir, e))?;
        // Bounded: when sled falls behind, the committer waits, and so do
        // the callers of `durable()`, instead of the overlay and the queue
        // growing without end.
        let (applier, apply_queue) = std::sync::mpsc::sync_channel::<ToApply>(APPLY_QUEUE_COMMITS);
        let applier_shared = shared.clone();
        thread::Builder::new()
            .name("journal-apply".into())
            .spawn(move || apply_all(&applier_shared, apply_queue, checkpoints))
            .map_err(|e| io_error("start the applier of", dir, e))?;
        let (waiters, queue) = mpsc::unbounded_channel();
        let committer = Committer {
            shared: shared.clone(),
            db: db.clone(),
            commit,
            dir: dir.to_owned(),
            segment,
            applier,
            gathering: Gathering::new(window),
        };
        thread::Builder::new()
            .name("journal-commit".into())
            .spawn(move || committer.run(queue))
            .map_err(|e| io_error("start the committer of", dir, e))?;
        Ok((Journal { shared, waiters }, replayed))
    }

    /// Appends `changes` as one entry; they are visible to [`Journal::get`] at
    /// once, durable after the next [`Journal::durable`], and in sled after
    /// that. Callers order writes to one key themselves (the store's stripes).
    pub fn write(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        if let Some(error) = self.shared.failure() {
            return Err(StoreError::NotDurable(error));
        }
        let payload = encode(&changes);
        // Replay reads an empty or oversized entry as damage: never write one.
        if changes.is_empty() || payload.len() > MAX_ENTRY_BYTES as usize {
            return Err(StoreError::Database(format!(
                "a journal entry must hold 1 to {MAX_ENTRY_BYTES} bytes of changes, not {}",
                payload.len()
            )));
        }
        let mut unwritten = self
            .shared
            .unwritten
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        unwritten
            .bytes
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        unwritten
            .bytes
            .extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        unwritten.bytes.extend_from_slice(&payload);
        for change in changes {
            let sequence = self.shared.next_sequence.fetch_add(1, Ordering::Relaxed);
            self.shared.overlay.insert(
                change.overlay_key().into_owned(),
                (sequence, change.value().cloned()),
            );
            unwritten.changes.push((sequence, change));
        }
        Ok(())
    }

    /// The value of `key`: journaled and not yet applied, or sled's.
    pub fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        if let Some(entry) = self.shared.overlay.get(key) {
            return Ok(entry.1.as_deref().map(sled::IVec::from));
        }
        Ok(self.shared.tree.get(key)?)
    }

    /// The value of `key` in the database's tree `name`: journaled and not
    /// yet applied, or sled's.
    pub fn get_in(&self, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let overlay_key = [&other_tree_prefix(name)[..], key].concat();
        if let Some(entry) = self.shared.overlay.get(&overlay_key) {
            return Ok(entry.1.clone());
        }
        Ok(self
            .shared
            .trees
            .named(name)?
            .get(key)?
            .map(|value| value.to_vec()))
    }

    /// Visits every entry of the database's tree `name`, journaled or in
    /// sled, once, in no particular order (an entry changed during the visit
    /// may show its previous value). Only the overlay's part is copied.
    pub fn for_each_in(
        &self,
        name: &str,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), StoreError> {
        let prefix = other_tree_prefix(name);
        // The overlay before sled: a change leaves the overlay only once it
        // is in sled, so nothing written before the call is missed.
        let journaled: HashMap<Vec<u8>, Option<Vec<u8>>> = self
            .shared
            .overlay
            .iter()
            .filter_map(|entry| {
                let key = entry.key().strip_prefix(&prefix[..])?;
                Some((key.to_vec(), entry.value().1.clone()))
            })
            .collect();
        for item in self.shared.trees.named(name)?.iter() {
            let (key, value) = item?;
            if !journaled.contains_key(key.as_ref()) {
                visit(&key, &value);
            }
        }
        for (key, value) in &journaled {
            if let Some(value) = value {
                visit(key, value);
            }
        }
        Ok(())
    }

    pub fn contains_key(&self, key: &[u8]) -> Result<bool, StoreError> {
        if let Some(entry) = self.shared.overlay.get(key) {
            return Ok(entry.1.is_some());
        }
        Ok(self.shared.tree.contains_key(key)?)
    }

    /// Resolves once everything written before this call is on disk (in
    /// the journal; sled gets it shortly after, and reads see it meanwhile).
    pub async fn durable(&self) -> Result<(), StoreError> {
        self.wait(Waiter::OnDisk).await
    }

    /// Resolves once everything written before this call is durable and in
    /// sled's tree, so that a scan of the tree sees it.
    pub async fn in_sled(&self) -> Result<(), StoreError> {
        self.wait(Waiter::InSled).await
    }

    async fn wait(&self, waiter: fn(Reply) -> Waiter) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.waiters
            .send(waiter(done))
            .map_err(|_| StoreError::NotDurable("the journal has stopped".into()))?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(StoreError::NotDurable(error)),
            Err(_) => Err(StoreError::NotDurable("the journal has stopped".into())),
        }
    }

    /// Closed segments whose checkpoint has not ended yet: until it does,
    /// their changes are on disk twice (in the segment and in sled). All of
    /// them once [`Journal::in_sled`] has returned are counted here.
    pub fn checkpoints_pending(&self) -> u64 {
        self.shared.checkpoints_pending.load(Ordering::Relaxed)
    }

    /// Has the committer run `append` once at the start of every commit,
    /// before it takes what was written: whatever `append` writes is in that
    /// commit. One commit answers every caller waiting then, so this runs
    /// once for all of them (the store's metered calls, when due). Set once;
    /// later calls are ignored.
    pub fn before_each_commit(&self, append: BeforeCommit) {
        let _ = self.shared.before_commit.set(append);
    }

    /// Has the committer open the commit window only while `count` says
    /// enough calls are in flight
    /// ([`WINDOW_FROM_CALLS_IN_FLIGHT`](manifold_provider::durable::WINDOW_FROM_CALLS_IN_FLIGHT)).
    /// Without it, the window opens whenever callers arrive together. Set
    /// once; later calls are ignored.
    pub fn count_calls_in_flight(&self, count: CallsInFlight) {
        let _ = self.shared.calls_in_flight.set(count);
    }

    /// Asks for a commit without waiting for it (writes made off the request
    /// path, such as metering, reach disk at the next commit anyway).
    pub fn nudge(&self) {
        let (done, _) = oneshot::channel();
        let _ = self.waiters.send(Waiter::OnDisk(done));
    }
}

/// The journal lent to in-process providers as their [`SharedLog`]: their
/// trees' writes become journal entries, durable with the switch's own.
pub struct ProviderLog {
    journal: Arc<Journal>,
}

impl ProviderLog {
    pub fn new(journal: Arc<Journal>) -> ProviderLog {
        ProviderLog { journal }
    }
}

fn log_error(error: StoreError) -> DurabilityError {
    DurabilityError::Log(error.to_string())
}

#[async_trait::async_trait]
impl SharedLog for ProviderLog {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, DurabilityError> {
        self.journal.get_in(tree, key).map_err(log_error)
    }

    fn insert(&self, tree: &str, key: &[u8], value: Vec<u8>) -> Result<(), DurabilityError> {
        self.journal
            .write(vec![Change::InsertIn(Arc::from(tree), key.to_vec(), value)])
            .map_err(log_error)
    }

    fn remove(&self, tree: &str, key: &[u8]) -> Result<(), DurabilityError> {
        self.journal
            .write(vec![Change::RemoveIn(Arc::from(tree), key.to_vec())])
            .map_err(log_error)
    }

    fn for_each(
        &self,
        tree: &str,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), DurabilityError> {
        self.journal.for_each_in(tree, visit).map_err(log_error)
    }

    async fn durable(&self) -> Result<(), DurabilityError> {
        self.journal.durable().await.map_err(log_error)
    }
}

/// Written changes on their way into sled, in commit order.
struct ToApply {
    changes: Vec<(u64, Change)>,
    /// The segment they were written to.
    segment: Arc<File>,
    /// Waiting for these changes to be in sled.
    in_sled: Vec<Reply>,
    /// A segment every change of which is in sled once these are: to
    /// checkpoint.
    closes: Option<PathBuf>,
}

/// The thread that writes and syncs, and answers [`Journal::durable`].
struct Committer {
    shared: Arc<Shared>,
    db: sled::Db,
    commit: GroupCommit,
    dir: PathBuf,
    segment: Segment,
    applier: std::sync::mpsc::SyncSender<ToApply>,
    /// Whether to gather more callers for a small batch (module docs).
    gathering: Gathering,
}

impl Committer {
    fn run(mut self, mut queue: mpsc::UnboundedReceiver<Waiter>) {
        let mut batch = Vec::new();
        loop {
            let open = match queue.blocking_recv() {
                Some(first) => {
                    batch.push(first);
                    // A failed journal answers at once.
                    let may_wait = self.shared.failure().is_none();
                    let in_flight = self.shared.calls_in_flight.get().map(CallsInFlight::count);
                    self.gathering
                        .gather(&mut queue, &mut batch, in_flight, may_wait);
                    true
                }
                // The store is gone: write what it appended, then stop.
                None => false,
            };
            let started = std::time::Instant::now();
            let written = match self.shared.failure() {
                Some(error) => Err(error),
                None => {
                    if let Some(append) = self.shared.before_commit.get() {
                        append();
                    }
                    self.write().map_err(|error| self.shared.fail(error))
                }
            };
            self.shared
                .stats
                .seconds
                .observe(started.elapsed().as_secs_f64());
            self.shared.stats.batch_size.observe(batch.len() as f64);
            let mut in_sled = Vec::new();
            for waiter in batch.drain(..) {
                // A waiter whose call was cancelled no longer listens.
                match (waiter, &written) {
                    (Waiter::OnDisk(reply), Ok(_)) => drop(reply.send(Ok(()))),
                    (Waiter::InSled(reply), Ok(_)) => in_sled.push(reply),
                    (Waiter::OnDisk(reply) | Waiter::InSled(reply), Err(error)) => {
                        drop(reply.send(Err(error.clone())))
                    }
                }
            }
            if let Ok(mut to_apply) = written {
                to_apply.in_sled = in_sled;
                if self.applier.send(to_apply).is_err() {
                    self.shared.fail("the journal's applier has stopped".into());
                }
            }
            if !open {
                return;
            }
        }
    }

    /// Writes and syncs what was appended; returns its changes, to apply
    /// (nobody waits for them in sled yet), and the segment it closed if it
    /// filled one.
    fn write(&mut self) -> Result<ToApply, String> {
        let unwritten = std::mem::take(
            &mut *self
                .shared
                .unwritten
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        // An in-process provider met a failing database: so would this.
        if let Some(error) = self.commit.failure() {
            return Err(format!("the database failed to flush: {error}"));
        }
        // Provider writes that came before these entries reach disk first.
        if self.commit.take_flush_left_to_caller() {
            self.db
                .flush()
                .map_err(|e| format!("flushing the providers' writes: {e}"))?;
        }
        if !unwritten.bytes.is_empty() {
            self.segment.append(&unwritten.bytes)?;
        }
        let segment = self.segment.file.clone();
        let mut closes = None;
        if self.segment.written >= SEGMENT_BYTES {
            let next = Segment::create(&self.dir, self.segment.number + 1)?;
            closes = Some(std::mem::replace(&mut self.segment, next).path);
        }
        Ok(ToApply {
            changes: unwritten.changes,
            segment,
            in_sled: Vec::new(),
            closes,
        })
    }
}

/// Applies written changes to sled in commit order, off the committer's
/// path, and hands full segments to the checkpoint.
fn apply_all(
    shared: &Shared,
    queue: std::sync::mpsc::Receiver<ToApply>,
    checkpoints: std::sync::mpsc::Sender<PathBuf>,
) {
    let mut last_sync: Option<std::time::Instant> = None;
    while let Ok(first) = queue.recv() {
        // Let commits gather for one sync rather than sync each; a commit
        // with nothing to apply (a scan waiting for sled) needs no sync.
        if !first.changes.is_empty() {
            if let Some(wait) =
                last_sync.and_then(|at| MIN_APPLY_SYNC_GAP.checked_sub(at.elapsed()))
            {
                thread::sleep(wait);
            }
        }
        let mut batch = vec![first];
        while let Ok(next) = queue.try_recv() {
            batch.push(next);
        }
        // sled fsyncs on its own (its periodic flusher), so whatever it is
        // given must already be in the journal by the strongest promise
        // there is, or a power cut could leave sled ahead of the journal and
        // a replay roll keys back. One `fdatasync` per segment covers every
        // commit gathered here; acknowledgements did not wait for it.
        let mut synced: Vec<&Arc<File>> = Vec::new();
        let mut sync = Ok(());
        for to_apply in &batch {
            // A commit with nothing to apply (a waiter alone) needs no sync.
            if sync.is_ok()
                && !to_apply.changes.is_empty()
                && !synced
                    .iter()
                    .any(|file| Arc::ptr_eq(file, &to_apply.segment))
            {
                sync = to_apply
                    .segment
                    .sync_data()
                    .map_err(|e| format!("syncing the journal: {e}"));
                synced.push(&to_apply.segment);
            }
        }
        if !synced.is_empty() {
            last_sync = Some(std::time::Instant::now());
        }
        if let Err(error) = sync {
            shared.fail(error);
        }
        for to_apply in batch {
            let applied = match shared.failure() {
                Some(error) => Err(error),
                None => apply(shared, to_apply.changes).map_err(|error| shared.fail(error)),
            };
            for reply in to_apply.in_sled {
                let _ = reply.send(applied.clone());
            }
            if let (Ok(()), Some(closed)) = (applied, to_apply.closes) {
                shared.checkpoints_pending.fetch_add(1, Ordering::Relaxed);
                if checkpoints.send(closed).is_err() {
                    // Segments would pile up unreplayed-but-unneeded: stop.
                    shared.fail("the journal's checkpoint thread has stopped".into());
                }
            }
        }
    }
}

fn apply(shared: &Shared, changes: Vec<(u64, Change)>) -> Result<(), String> {
    for (sequence, change) in changes {
        change
            .apply_to(&shared.tree, &shared.trees)
            .map_err(|e| format!("applying the journal to sled: {e}"))?;
        // A later change to the key stays until it is applied itself.
        shared
            .overlay
            .remove_if(&*change.overlay_key(), |_, (newest, _)| *newest == sequence);
    }
    Ok(())
}

struct Segment {
    number: u64,
    path: PathBuf,
    /// Shared with the applier, which syncs it fully before applying.
    file: Arc<File>,
    written: u64,
}

impl Segment {
    /// A new, empty segment whose name is on disk before anything in it is
    /// acknowledged.
    fn create(dir: &Path, number: u64) -> Result<Segment, String> {
        let path = dir.join(format!("{number:016x}{SUFFIX}"));
        let mut options = OpenOptions::new();
        options.create_new(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(
            &mut options,
            manifold_edge::private_files::PRIVATE_FILE_MODE,
        );
        let file = options
            .open(&path)
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        File::open(dir)
            .and_then(|directory| directory.sync_all())
            .map_err(|e| format!("syncing {}: {e}", dir.display()))?;
        Ok(Segment {
            number,
            path,
            file: Arc::new(file),
            written: 0,
        })
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), String> {
        let start = self.written;
        (&*self.file)
            .write_all(bytes)
            .and_then(|_| sync_range(&self.file, start, bytes.len() as u64))
            .map_err(|e| format!("writing {}: {e}", self.path.display()))?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

/// Writes `len` bytes of `file` from `offset` to the device and waits for
/// them: the same promise sled's own flush makes (its `IoBufs::write_to_log`
/// calls `sync_file_range` with the same flags), which the store made before
/// the journal. It survives the process being killed at any point; it does
/// not ask the device to empty a volatile write cache, which `fdatasync`
/// would (measured here: it made each commit several milliseconds, and the
/// switch's throughput bound by it). Falls back to `fdatasync` only where the
/// call is not supported.
fn sync_range(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return file.sync_data();
    };
    // SAFETY: a plain system call on a descriptor `file` keeps open for the
    // duration of the call; it reads no memory of ours.
    let result = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset,
            len,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        )
    };
    if result == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    match error.raw_os_error() {
        // Not supported by this kernel or filesystem: the stronger call.
        Some(libc::ENOSYS) | Some(libc::EINVAL) => file.sync_data(),
        // An I/O error is reported once: never retried into a success.
        _ => Err(error),
    }
}

fn io_error(action: &str, path: &Path, error: std::io::Error) -> StoreError {
    StoreError::Database(format!("could not {action} {}: {error}", path.display()))
}

/// The segments in `dir`, oldest first. A file that is not a segment is
/// left alone.
fn segments_in(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_error("read", dir, e))? {
        let path = entry.map_err(|e| io_error("read", dir, e))?.path();
        let number = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(SUFFIX))
            .and_then(|stem| u64::from_str_radix(stem, 16).ok());
        if let Some(number) = number {
            segments.push((number, path));
        }
    }
    segments.sort();
    Ok(segments)
}

fn encode(changes: &[Change]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(
        changes
            .iter()
            .map(|change| match change {
                Change::Insert(key, value) => 9 + key.len() + value.len(),
                Change::Remove(key) => 5 + key.len(),
                Change::InsertIn(tree, key, value) => 13 + tree.len() + key.len() + value.len(),
                Change::RemoveIn(tree, key) => 9 + tree.len() + key.len(),
            })
            .sum(),
    );
    fn put(payload: &mut Vec<u8>, bytes: &[u8]) {
        payload.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        payload.extend_from_slice(bytes);
    }
    for change in changes {
        match change {
            Change::Insert(key, value) => {
                payload.push(INSERT);
                put(&mut payload, key);
                put(&mut payload, value);
            }
            Change::Remove(key) => {
                payload.push(REMOVE);
                put(&mut payload, key);
            }
            Change::InsertIn(tree, key, value) => {
                payload.push(INSERT_IN);
                put(&mut payload, tree.as_bytes());
                put(&mut payload, key);
                put(&mut payload, value);
            }
            Change::RemoveIn(tree, key) => {
                payload.push(REMOVE_IN);
                put(&mut payload, tree.as_bytes());
                put(&mut payload, key);
            }
        }
    }
    payload
}

/// The changes of one payload, or `None` if it does not parse (damage that
/// its checksum did not catch).
fn decode(mut payload: &[u8]) -> Option<Vec<Change>> {
    fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if input.len() < n {
            return None;
        }
        let (head, rest) = input.split_at(n);
        *input = rest;
        Some(head)
    }
    fn bytes(input: &mut &[u8]) -> Option<Vec<u8>> {
        let len = u32::from_le_bytes(take(input, 4)?.try_into().ok()?) as usize;
        Some(take(input, len)?.to_vec())
    }
    fn tree_name(input: &mut &[u8]) -> Option<Arc<str>> {
        String::from_utf8(bytes(input)?).ok().map(Arc::from)
    }
    let mut changes = Vec::new();
    while !payload.is_empty() {
        let kind = take(&mut payload, 1)?[0];
        let change = match kind {
            INSERT => Change::Insert(bytes(&mut payload)?, bytes(&mut payload)?),
            REMOVE => Change::Remove(bytes(&mut payload)?),
            INSERT_IN => Change::InsertIn(
                tree_name(&mut payload)?,
                bytes(&mut payload)?,
                bytes(&mut payload)?,
            ),
            REMOVE_IN => Change::RemoveIn(tree_name(&mut payload)?, bytes(&mut payload)?),
            _ => return None,
        };
        changes.push(change);
    }
    Some(changes)
}

/// The whole entries at the start of `contents`, and whether anything
/// (a torn or damaged entry) follows them.
fn entries(contents: &[u8]) -> (Vec<Vec<Change>>, bool) {
    let mut found = Vec::new();
    let mut rest = contents;
    while rest.len() >= 8 {
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        // Nothing writes an empty entry, so a zero-filled tail is damage.
        if len == 0 || len > MAX_ENTRY_BYTES || rest.len() - 8 < len as usize {
            break;
        }
        let payload = &rest[8..8 + len as usize];
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Some(changes) = decode(payload) else {
            break;
        };
        found.push(changes);
        rest = &rest[8 + len as usize..];
    }
    (found, !rest.is_empty())
}

fn replay(
    segments: &[(u64, PathBuf)],
    tree: &sled::Tree,
    trees: &Trees,
) -> Result<Replayed, StoreError> {
    let mut replayed = Replayed::default();
    for (index, (_, path)) in segments.iter().enumerate() {
        let mut contents = Vec::new();
        File::open(path)
            .and_then(|mut file| file.read_to_end(&mut contents))
            .map_err(|e| io_error("read", path, e))?;
        let (found, damaged) = entries(&contents);
        let last = index + 1 == segments.len();
        if damaged && !last {
            return Err(StoreError::Corrupt(format!(
                "journal segment {} is damaged after {} entries, and later segments exist",
                path.display(),
                found.len()
            )));
        }
        if damaged {
            tracing::warn!(segment = %path.display(), entries = found.len(), "the journal ends in a torn entry, which was never acknowledged; replaying what precedes it");
        }
        for changes in found {
            for change in changes {
                change.apply_to(tree, trees)?;
            }
            replayed.entries += 1;
        }
        replayed.segments += 1;
    }
    Ok(replayed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use manifold_provider::durable::WINDOW_FROM_CALLS_IN_FLIGHT;
    use std::time::Duration;

    /// The default commit window.
    const WINDOW: Duration = Duration::from_micros(manifold_config::DEFAULT_COMMIT_WINDOW_US);

    /// A database in `dir/db` with tree `t`, and its group commit.
    fn database(dir: &Path) -> (sled::Db, sled::Tree, GroupCommit) {
        let db = sled::Config::new().path(dir.join("db")).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        let commit = GroupCommit::start(db.clone()).unwrap();
        (db, tree, commit)
    }

    fn open(dir: &Path) -> (sled::Db, sled::Tree, Journal, Replayed) {
        open_windowed(dir, WINDOW)
    }

    /// [`open`] with a commit window of `window`.
    fn open_windowed(dir: &Path, window: Duration) -> (sled::Db, sled::Tree, Journal, Replayed) {
        let (db, tree, commit) = database(dir);
        let (journal, replayed) =
            Journal::open(&dir.join("journal"), &db, &tree, commit, window).unwrap();
        (db, tree, journal, replayed)
    }

    /// The database in `dir/db` again, once the journal's threads have let
    /// go of sled's file lock (they end shortly after the journal drops).
    fn reopen_database(dir: &Path) -> sled::Db {
        (0..250)
            .find_map(|_| {
                sled::Config::new()
                    .path(dir.join("db"))
                    .open()
                    .map_err(|_| std::thread::sleep(std::time::Duration::from_millis(20)))
                    .ok()
            })
            .expect("the database reopens")
    }

    fn insert(key: &str, value: &str) -> Change {
        Change::Insert(key.as_bytes().to_vec(), value.as_bytes().to_vec())
    }

    /// A journal in `dir` whose commit window is `window`, to share.
    fn open_with_window(dir: &Path, window: Duration) -> Arc<Journal> {
        let (_, _, journal, _) = open_windowed(dir, window);
        Arc::new(journal)
    }

    /// Writes `key` and waits until it is durable, within `limit`.
    async fn write_durably(journal: &Journal, key: String, limit: Duration) {
        journal.write(vec![insert(&key, "v")]).unwrap();
        tokio::time::timeout(limit, journal.durable())
            .await
            .unwrap_or_else(|_| panic!("{key} was not durable within {limit:?}"))
            .unwrap();
    }

    /// `callers` callers of round `round`, started together, each writing
    /// a key and waiting until it is durable; returns once all are.
    async fn round_of_callers(journal: &Arc<Journal>, round: usize, callers: usize) {
        let callers: Vec<_> = (0..callers)
            .map(|caller| {
                let journal = journal.clone();
                tokio::spawn(async move {
                    let key = format!("r{round}c{caller}");
                    write_durably(&journal, key, Duration::from_secs(30)).await;
                })
            })
            .collect();
        for caller in callers {
            caller.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_lone_caller_never_waits_for_the_commit_window() {
        let dir = tempfile::tempdir().unwrap();
        // A window no test could sit out: one caller at a time must never
        // meet it.
        let journal = open_with_window(dir.path(), Duration::from_secs(3600));
        for n in 0..20 {
            write_durably(&journal, format!("k{n}"), Duration::from_secs(30)).await;
        }
        assert_eq!(journal.stats().batch_size.get_sample_count(), 20);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_shared_commit_a_caller_waits_the_window_and_shares_its_sync() {
        const LONG_WINDOW: Duration = Duration::from_secs(1);
        const CALLERS: usize = 8;
        let dir = tempfile::tempdir().unwrap();
        let journal = open_with_window(dir.path(), LONG_WINDOW);
        let commits = |journal: &Journal| journal.stats().batch_size.get_sample_count();
        // Rounds of callers started together until one commit took a whole
        // round: then the last batch was shared, and the window is open.
        let mut opened = false;
        for round in 0..20 {
            let before = commits(&journal);
            round_of_callers(&journal, round, CALLERS).await;
            if commits(&journal) == before + 1 {
                opened = true;
                break;
            }
        }
        assert!(opened, "no round of {CALLERS} callers shared one commit");
        // Alone now, a caller still waits the window, and a second caller
        // arriving within it shares the same sync.
        let before = commits(&journal);
        let started = std::time::Instant::now();
        let first = {
            let journal = journal.clone();
            tokio::spawn(async move {
                write_durably(&journal, "alone".into(), Duration::from_secs(30)).await;
                started.elapsed()
            })
        };
        // Not a barrier: the point is to arrive while the first caller's
        // batch is already waiting, anywhere inside its one-second window.
        tokio::time::sleep(Duration::from_millis(50)).await;
        write_durably(&journal, "second".into(), Duration::from_secs(30)).await;
        let waited = first.await.unwrap();
        assert!(
            waited >= LONG_WINDOW,
            "the first caller waited only {waited:?}"
        );
        assert_eq!(
            commits(&journal),
            before + 1,
            "the two callers shared one sync"
        );
        // That batch was shared too; one caller alone after a lone batch
        // does not wait (a_lone_caller_never_waits_for_the_commit_window).
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_few_calls_in_flight_no_caller_waits_for_the_window() {
        const CALLERS: usize = 8;
        let dir = tempfile::tempdir().unwrap();
        // A window no test could sit out, opened by callers arriving
        // together; but the switch counts fewer calls in flight than open it.
        let journal = open_with_window(dir.path(), Duration::from_secs(3600));
        journal.count_calls_in_flight(CallsInFlight::new(|| WINDOW_FROM_CALLS_IN_FLIGHT - 1));
        for round in 0..5 {
            round_of_callers(&journal, round, CALLERS).await;
        }
        let shared = journal.stats().batch_size.get_sample_count() < 5 * CALLERS as u64;
        assert!(
            shared,
            "some callers shared a commit, which opens the window"
        );
    }

    #[test]
    fn entries_round_trip_and_a_torn_tail_is_cut() {
        let changes = vec![
            insert("a", "1"),
            Change::Remove(b"b".to_vec()),
            Change::InsertIn(Arc::from("p/pending"), b"c".to_vec(), b"3".to_vec()),
            Change::RemoveIn(Arc::from("p/outcomes"), b"d".to_vec()),
        ];
        let payload = encode(&changes);
        let mut file = Vec::new();
        for _ in 0..2 {
            file.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            file.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            file.extend_from_slice(&payload);
        }
        assert_eq!(
            entries(&file),
            (vec![changes.clone(), changes.clone()], false)
        );
        // Every cut inside the second entry leaves the first, and says so.
        let first = 8 + payload.len();
        for cut in first + 1..file.len() {
            assert_eq!(
                entries(&file[..cut]),
                (vec![changes.clone()], true),
                "{cut}"
            );
        }
        // A flipped bit anywhere in the second entry ends the journal there.
        for at in first..file.len() {
            let mut damaged = file.clone();
            damaged[at] ^= 0x10;
            let (found, rest) = entries(&damaged);
            assert_eq!(found, vec![changes.clone()], "{at}");
            assert!(rest, "{at}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn written_values_are_read_at_once_durable_and_in_sled_after_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, tree, journal, _) = open(dir.path());
        journal.write(vec![insert("k", "v1")]).unwrap();
        assert_eq!(journal.get(b"k").unwrap().as_deref(), Some(&b"v1"[..]));
        journal.write(vec![Change::Remove(b"k".to_vec())]).unwrap();
        assert!(!journal.contains_key(b"k").unwrap());
        journal.write(vec![insert("k", "v2")]).unwrap();
        journal.in_sled().await.unwrap();
        assert_eq!(tree.get(b"k").unwrap().as_deref(), Some(&b"v2"[..]));
        assert!(journal.shared.overlay.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_closed_segment_is_counted_until_its_checkpoint_deletes_it() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, _tree, journal, _) = open(dir.path());
        // Past SEGMENT_BYTES: the first segment closes at a commit.
        let value = vec![7u8; 1024 * 1024];
        for n in 0..=SEGMENT_BYTES / value.len() as u64 {
            journal
                .write(vec![Change::Insert(
                    n.to_be_bytes().to_vec(),
                    value.clone(),
                )])
                .unwrap();
            journal.durable().await.unwrap();
        }
        journal.in_sled().await.unwrap();
        // Once applied, a closed segment is counted until it is deleted (the
        // count read first: it falls only after the file is gone).
        let pending = journal.checkpoints_pending();
        let segments = segments_in(&dir.path().join("journal")).unwrap().len();
        assert!(
            pending == 1 || segments == 1,
            "{pending} pending, {segments} segments"
        );
        // The checkpoint thread flushes sled, then deletes the segment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while journal.checkpoints_pending() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the closed segment was not checkpointed within 30 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let left: Vec<u64> = segments_in(&dir.path().join("journal"))
            .unwrap()
            .into_iter()
            .map(|(number, _)| number)
            .collect();
        assert_eq!(left, [1], "only the open segment is left");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reopened_journal_replays_what_sled_had_not_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let journal_dir = dir.path().join("journal");
        {
            let (db, tree, journal, _) = open(dir.path());
            for i in 0..100u32 {
                journal
                    .write(vec![insert(&format!("k{i}"), &format!("v{i}"))])
                    .unwrap();
            }
            journal.write(vec![Change::Remove(b"k7".to_vec())]).unwrap();
            journal.in_sled().await.unwrap();
            // Pretend sled lost everything it had not flushed: wipe the tree
            // as a crash before sled's own flush would have.
            drop(journal);
            tree.clear().unwrap();
            db.flush().unwrap();
            assert_eq!(segments_in(&journal_dir).unwrap().len(), 1);
        }
        let db = reopen_database(dir.path());
        let tree = db.open_tree("t").unwrap();
        assert!(tree.is_empty());
        let commit = GroupCommit::start(db.clone()).unwrap();
        let (_journal, replayed) = Journal::open(&journal_dir, &db, &tree, commit, WINDOW).unwrap();
        assert_eq!(
            replayed,
            Replayed {
                segments: 1,
                entries: 101
            }
        );
        assert_eq!(tree.len(), 99);
        assert_eq!(tree.get(b"k42").unwrap().as_deref(), Some(&b"v42"[..]));
        assert!(tree.get(b"k7").unwrap().is_none());
        // Replayed segments are gone once sled holds them; a new one is open.
        let left = segments_in(&journal_dir).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].0, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flush_left_by_an_in_process_provider_is_made_by_the_next_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (db, tree, commit) = database(dir.path());
        let (journal, _) = Journal::open(
            &dir.path().join("journal"),
            &db,
            &tree,
            commit.clone(),
            WINDOW,
        )
        .unwrap();
        // The provider's write, then the switch's record of its outcome.
        db.open_tree("provider")
            .unwrap()
            .insert("posting", "1")
            .unwrap();
        commit.leave_flush_to_caller();
        journal.write(vec![insert("outcome", "done")]).unwrap();
        journal.durable().await.unwrap();
        assert!(
            !commit.take_flush_left_to_caller(),
            "the commit took the flush it was left"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_providers_trees_are_journaled_read_at_once_and_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let journal_dir = dir.path().join("journal");
        {
            let (db, tree, journal, _) = open(dir.path());
            let log = ProviderLog::new(Arc::new(journal));
            // Already in sled before this run, then changed through the log.
            db.open_tree("p/pending")
                .unwrap()
                .insert("old", "0")
                .unwrap();
            log.insert("p/pending", b"k1", b"v1".to_vec()).unwrap();
            log.insert("p/pending", b"k2", b"v2".to_vec()).unwrap();
            log.remove("p/pending", b"old").unwrap();
            log.insert("p/outcomes", b"k1", b"done".to_vec()).unwrap();
            assert_eq!(log.get("p/pending", b"k1").unwrap(), Some(b"v1".to_vec()));
            assert_eq!(log.get("p/pending", b"old").unwrap(), None);
            let scanned = |name| {
                let mut entries = Vec::new();
                log.for_each(name, &mut |key, value| {
                    entries.push((key.to_vec(), value.to_vec()))
                })
                .unwrap();
                entries.sort();
                entries
            };
            assert_eq!(
                scanned("p/pending"),
                vec![
                    (b"k1".to_vec(), b"v1".to_vec()),
                    (b"k2".to_vec(), b"v2".to_vec())
                ]
            );
            assert_eq!(
                scanned("p/outcomes"),
                vec![(b"k1".to_vec(), b"done".to_vec())]
            );
            // Nothing of it is the switch's.
            assert!(tree.get(b"k1").unwrap().is_none());
            log.durable().await.unwrap();
            log.journal.in_sled().await.unwrap();
            assert!(log.journal.shared.overlay.is_empty());
            let pending = db.open_tree("p/pending").unwrap();
            assert_eq!(pending.get(b"k2").unwrap().as_deref(), Some(&b"v2"[..]));
            assert!(pending.get(b"old").unwrap().is_none());
            // A crash before sled's own flush: the provider's tree lost it.
            drop(log);
            pending.clear().unwrap();
            db.flush().unwrap();
        }
        let db = reopen_database(dir.path());
        let tree = db.open_tree("t").unwrap();
        let commit = GroupCommit::start(db.clone()).unwrap();
        let (_journal, replayed) = Journal::open(&journal_dir, &db, &tree, commit, WINDOW).unwrap();
        assert_eq!(replayed.entries, 4);
        let pending = db.open_tree("p/pending").unwrap();
        assert_eq!(pending.len(), 2);
        assert_eq!(pending.get(b"k1").unwrap().as_deref(), Some(&b"v1"[..]));
        assert!(tree.is_empty());
    }

    #[test]
    fn damage_before_the_last_segment_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let journal_dir = dir.path().join("journal");
        fs::create_dir_all(&journal_dir).unwrap();
        fs::write(
            journal_dir.join(format!("{:016x}{SUFFIX}", 0)),
            b"\x05\0\0\0garbage",
        )
        .unwrap();
        fs::write(journal_dir.join(format!("{:016x}{SUFFIX}", 1)), b"").unwrap();
        let (db, tree, commit) = database(dir.path());
        let error = Journal::open(&journal_dir, &db, &tree, commit, WINDOW)
            .err()
            .unwrap();
        assert!(matches!(error, StoreError::Corrupt(_)), "{error}");
        // Nothing was deleted: the operator still has the evidence.
        assert_eq!(segments_in(&journal_dir).unwrap().len(), 2);
    }
}
