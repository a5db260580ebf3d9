//! Durable acknowledgements without one disk flush per request.
//!
//! A response that reports a new transaction state may only be sent once that
//! state is on disk. Flushing sled once per request collapses under
//! concurrency on a small machine, so [`GroupCommit`] runs one flusher thread:
//! it takes every waiter queued so far, flushes once, and wakes them all.
//! A waiter queues *after* its write, and the flush it joins starts after it
//! queued, so that flush covers the write.
//!
//! Under concurrent load a committer may wait a short *window* before a
//! small batch, so that the callers about to arrive share its flush
//! ([`Gathering`]); the switch's journal and [`GroupCommit::start_gathering`]
//! follow the same rule.
//!
//! A provider running in-process on the switch's database does better than
//! share its flushes: through [`SharedLog`] it writes into the switch's own
//! write-ahead log, so its state and the switch's record of the answer reach
//! disk in one commit, in the order they were written, and sled is never
//! flushed on an answer's path.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

type Waiter = oneshot::Sender<Result<(), String>>;

#[derive(Debug, thiserror::Error)]
pub enum DurabilityError {
    #[error("the store could not be flushed to disk: {0}")]
    FlushFailed(String),
    #[error("the flusher has stopped")]
    Stopped,
    /// The switch's log refused a read or a write (it failed, or stopped).
    #[error("the switch's log failed: {0}")]
    Log(String),
}

/// A batch of this many callers is written at once, without the commit
/// window's wait.
pub const GATHERED_ENOUGH: usize = 16;
/// Fewer calls in flight than this, and a batch is written at once: with
/// 2–4 callers a window cost each about a quarter of a millisecond and a
/// quarter of their throughput (tests/bench/PROFILING.md, tenth round).
pub const WINDOW_FROM_CALLS_IN_FLIGHT: usize = 8;

/// Counts the calls in flight in the process that commits: those that may
/// ask for a commit soon.
#[derive(Clone)]
pub struct CallsInFlight(Arc<dyn Fn() -> usize + Send + Sync>);

impl CallsInFlight {
    pub fn new(count: impl Fn() -> usize + Send + Sync + 'static) -> Self {
        CallsInFlight(Arc::new(count))
    }

    pub fn count(&self) -> usize {
        (self.0)()
    }
}

impl std::fmt::Debug for CallsInFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallsInFlight")
    }
}

/// When a committer waits for more callers before it writes a batch. It
/// waits its window when the last batch had more than one caller (callers
/// are arriving together), this one has fewer than [`GATHERED_ENOUGH`], and,
/// where calls in flight are counted, at least
/// [`WINDOW_FROM_CALLS_IN_FLIGHT`] are in flight and some are not in the
/// batch yet. A few callers at a time never wait: each would sit out most of
/// the window for nobody. One caller at a time waits at most once.
#[derive(Debug)]
pub struct Gathering {
    window: Duration,
    /// The last batch had more than one caller.
    callers_arrive_together: bool,
}

impl Gathering {
    /// A zero `window` never waits.
    pub fn new(window: Duration) -> Self {
        Gathering {
            window,
            callers_arrive_together: false,
        }
    }

    /// How long to wait before writing a batch of `callers`, if at all,
    /// `in_flight` calls being in flight (`None`: not counted).
    pub fn wait_before(&self, callers: usize, in_flight: Option<usize>) -> Option<Duration> {
        let others_coming =
            in_flight.is_none_or(|calls| calls >= WINDOW_FROM_CALLS_IN_FLIGHT && calls > callers);
        (self.callers_arrive_together
            && others_coming
            && !self.window.is_zero()
            && callers < GATHERED_ENOUGH)
            .then_some(self.window)
    }

    /// A batch of `callers` is being written.
    pub fn written(&mut self, callers: usize) {
        self.callers_arrive_together = callers > 1;
    }

    /// Adds to `batch` (which holds the waiter that woke the committer)
    /// every waiter queued since and, if `may_wait` and the rule says so,
    /// those that arrive within the window; then notes the batch's size.
    pub fn gather<T>(
        &mut self,
        queue: &mut mpsc::UnboundedReceiver<T>,
        batch: &mut Vec<T>,
        in_flight: Option<usize>,
        may_wait: bool,
    ) {
        while let Ok(next) = queue.try_recv() {
            batch.push(next);
        }
        let wait = may_wait
            .then(|| self.wait_before(batch.len(), in_flight))
            .flatten();
        // A sleep, not a timed receive: callers queueing meanwhile wake
        // nobody.
        if let Some(wait) = wait {
            thread::sleep(wait);
            while let Ok(next) = queue.try_recv() {
                batch.push(next);
            }
        }
        self.written(batch.len());
    }
}

/// The switch's write-ahead log, lent to a provider that runs in-process on
/// the switch's database. The provider's trees stay its own (named, in that
/// database); what changes is the path of a write: into the log, visible to
/// [`SharedLog::get`] at once, on disk at the next commit — the provider's
/// own [`SharedLog::durable`] or the switch's next one, whichever comes
/// first, since one log keeps every writer's order — and in sled after that.
#[async_trait::async_trait]
pub trait SharedLog: Send + Sync + 'static {
    /// The value of `key` in `tree`: written and not yet in sled, or sled's.
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, DurabilityError>;
    fn insert(&self, tree: &str, key: &[u8], value: Vec<u8>) -> Result<(), DurabilityError>;
    fn remove(&self, tree: &str, key: &[u8]) -> Result<(), DurabilityError>;
    /// Visits every entry of `tree` once, in no particular order, without
    /// copying the tree (sweeps read trees of any size); an entry changed
    /// during the visit may show its previous value.
    fn for_each(
        &self,
        tree: &str,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), DurabilityError>;
    /// Resolves once everything written to the log before the call is on disk.
    async fn durable(&self) -> Result<(), DurabilityError>;
}

/// What a [`GroupCommit`] has done so far: how well flushes are shared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    pub flushes: u64,
    /// `durable()` calls answered; `waiters / flushes` is the mean batch.
    pub waiters: u64,
    /// Wall time spent inside `db.flush()`.
    pub flushing: Duration,
}

#[derive(Debug, Default)]
struct Counters {
    flushes: AtomicU64,
    waiters: AtomicU64,
    flush_nanos: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> CommitStats {
        CommitStats {
            flushes: self.flushes.load(Ordering::Relaxed),
            waiters: self.waiters.load(Ordering::Relaxed),
            flushing: Duration::from_nanos(self.flush_nanos.load(Ordering::Relaxed)),
        }
    }
}

/// Shared flushes for one sled database. Cheap to clone; the flusher thread
/// ends when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    waiters: mpsc::UnboundedSender<Waiter>,
    counters: Arc<Counters>,
    /// Set by an in-process provider whose writes the caller (the switch)
    /// makes durable with its own next commit.
    flush_left_to_caller: Arc<AtomicBool>,
    /// The first failed flush. sled's first I/O error is sticky, so every
    /// later flush of this database fails too; others writing to the same
    /// database learn of it here without a flush of their own.
    failed: Arc<OnceLock<String>>,
}

impl GroupCommit {
    /// Flushes every batch at once.
    pub fn start(db: sled::Db) -> std::io::Result<Self> {
        Self::start_gathering(db, Duration::ZERO, None)
    }

    /// Waits up to `window` before a small batch under concurrent load, by
    /// the rule of [`Gathering`], counting the calls in flight with
    /// `calls_in_flight` where given.
    pub fn start_gathering(
        db: sled::Db,
        window: Duration,
        calls_in_flight: Option<CallsInFlight>,
    ) -> std::io::Result<Self> {
        let (waiters, mut queue) = mpsc::unbounded_channel::<Waiter>();
        let counters = Arc::new(Counters::default());
        let flusher_counters = counters.clone();
        let failed = Arc::new(OnceLock::new());
        let flusher_failed = failed.clone();
        thread::Builder::new()
            .name("sled-group-commit".into())
            .spawn(move || {
                let counters = flusher_counters;
                let mut batch = Vec::new();
                let mut gathering = Gathering::new(window);
                while let Some(first) = queue.blocking_recv() {
                    batch.push(first);
                    let in_flight = calls_in_flight.as_ref().map(CallsInFlight::count);
                    gathering.gather(&mut queue, &mut batch, in_flight, true);
                    let started = Instant::now();
                    let outcome = db.flush().map(|_| ()).map_err(|error| error.to_string());
                    if let Err(error) = &outcome {
                        let _ = flusher_failed.set(error.clone());
                    }
                    counters.flush_nanos.fetch_add(
                        u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
                        Ordering::Relaxed,
                    );
                    counters.flushes.fetch_add(1, Ordering::Relaxed);
                    counters
                        .waiters
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    for waiter in batch.drain(..) {
                        // A waiter whose request was cancelled no longer listens.
                        let _ = waiter.send(outcome.clone());
                    }
                }
                let stats = counters.snapshot();
                tracing::info!(
                    flushes = stats.flushes,
                    waiters = stats.waiters,
                    flushing_ms = stats.flushing.as_millis() as u64,
                    "group commit stopped"
                );
            })?;
        Ok(GroupCommit {
            waiters,
            counters,
            flush_left_to_caller: Arc::new(AtomicBool::new(false)),
            failed,
        })
    }

    /// Says that writes made so far are to be flushed by the caller's next
    /// commit (an in-process provider answering the switch, which records the
    /// answer and makes it durable before the app hears of it).
    pub fn leave_flush_to_caller(&self) {
        self.flush_left_to_caller.store(true, Ordering::Release);
    }

    /// Whether a flush was left to the caller since the last time this was
    /// asked; the caller must then flush the database before it makes durable
    /// anything it wrote after those writes.
    pub fn take_flush_left_to_caller(&self) -> bool {
        self.flush_left_to_caller.swap(false, Ordering::AcqRel)
    }

    /// The first flush of this database that failed, if one has.
    pub fn failure(&self) -> Option<String> {
        self.failed.get().cloned()
    }

    /// How many flushes served how many waiters so far.
    pub fn stats(&self) -> CommitStats {
        self.counters.snapshot()
    }

    /// Resolves once everything written before this call is on disk.
    pub async fn durable(&self) -> Result<(), DurabilityError> {
        let (done, wait) = oneshot::channel();
        self.waiters
            .send(done)
            .map_err(|_| DurabilityError::Stopped)?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(DurabilityError::FlushFailed(message)),
            Err(_) => Err(DurabilityError::Stopped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_opens_only_for_a_small_batch_after_a_shared_one() {
        let window = Duration::from_micros(200);
        let mut gathering = Gathering::new(window);
        // Calls in flight not counted: the batches alone decide.
        // The first batch, and every batch after a lone caller's: at once.
        assert_eq!(gathering.wait_before(1, None), None);
        gathering.written(1);
        assert_eq!(gathering.wait_before(1, None), None);
        // Callers arrived together: a small batch waits for the others.
        gathering.written(3);
        assert_eq!(gathering.wait_before(1, None), Some(window));
        assert_eq!(
            gathering.wait_before(GATHERED_ENOUGH - 1, None),
            Some(window)
        );
        assert_eq!(gathering.wait_before(GATHERED_ENOUGH, None), None);
        gathering.written(GATHERED_ENOUGH);
        assert_eq!(gathering.wait_before(2, None), Some(window));
        // Load fell to one caller: the window closes again.
        gathering.written(1);
        assert_eq!(gathering.wait_before(1, None), None);
        // A zero window never waits.
        let mut off = Gathering::new(Duration::ZERO);
        off.written(8);
        assert_eq!(off.wait_before(1, None), None);
    }

    #[test]
    fn the_window_opens_only_while_enough_calls_are_in_flight() {
        let window = Duration::from_micros(200);
        let mut gathering = Gathering::new(window);
        gathering.written(3);
        let many = WINDOW_FROM_CALLS_IN_FLIGHT;
        // Callers arrive together, and others are on their way.
        assert_eq!(gathering.wait_before(2, Some(many)), Some(window));
        assert_eq!(gathering.wait_before(2, Some(4 * many)), Some(window));
        // A few calls at a time: each would wait for nobody.
        assert_eq!(gathering.wait_before(2, Some(many - 1)), None);
        assert_eq!(gathering.wait_before(1, Some(2)), None);
        // Every call in flight is in the batch already.
        assert_eq!(gathering.wait_before(many, Some(many)), None);
        // After a lone caller's batch, however many are in flight: at once.
        gathering.written(1);
        assert_eq!(gathering.wait_before(1, Some(4 * many)), None);
    }

    /// A group commit with a window no test could sit out, which callers
    /// arriving together would open: with few calls in flight, none waits
    /// it (the rule itself: `the_window_opens_only_while_enough_calls_are_in_flight`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_gathering_group_commit_waits_only_with_enough_calls_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let counted = Arc::new(AtomicU64::new(WINDOW_FROM_CALLS_IN_FLIGHT as u64 - 1));
        let commit = GroupCommit::start_gathering(
            db.clone(),
            Duration::from_secs(3600),
            Some(CallsInFlight::new(move || {
                counted.load(Ordering::Relaxed) as usize
            })),
        )
        .unwrap();
        let round = |round: u32| {
            let tasks: Vec<_> = (0..8u32)
                .map(|i| {
                    let (db, commit) = (db.clone(), commit.clone());
                    tokio::spawn(async move {
                        db.insert((round * 100 + i).to_be_bytes(), &b"v"[..])
                            .unwrap();
                        commit.durable().await.unwrap();
                    })
                })
                .collect();
            async move {
                for task in tasks {
                    tokio::time::timeout(Duration::from_secs(30), task)
                        .await
                        .expect("no caller waits the window with few calls in flight")
                        .unwrap();
                }
            }
        };
        for n in 0..5 {
            round(n).await;
        }
        let stats = commit.stats();
        assert!(
            stats.waiters > stats.flushes,
            "callers shared flushes: {stats:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_waiters_all_complete_and_data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let commit = GroupCommit::start(db.clone()).unwrap();
            let mut tasks = Vec::new();
            for i in 0u32..64 {
                let db = db.clone();
                let commit = commit.clone();
                tasks.push(tokio::spawn(async move {
                    db.insert(i.to_be_bytes(), &b"value"[..]).unwrap();
                    commit.durable().await.unwrap();
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            // Every waiter was answered by some flush, and no flush went
            // unshared by more waiters than there were.
            let stats = commit.stats();
            assert_eq!(stats.waiters, 64);
            assert!((1..=64).contains(&stats.flushes), "{stats:?}");
        }
        // The flusher thread drops its handle shortly after the last sender;
        // until then sled's file lock keeps the directory busy.
        let db = (0..100)
            .find_map(|_| {
                sled::open(dir.path())
                    .map_err(|_| std::thread::sleep(std::time::Duration::from_millis(20)))
                    .ok()
            })
            .expect("the database reopens");
        assert_eq!(db.len(), 64);
    }
}
