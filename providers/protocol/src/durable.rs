//! Durable acknowledgements without one disk flush per request.
//!
//! A response that reports a new transaction state may only be sent once that
//! state is on disk. Flushing sled once per request collapses under
//! concurrency on a small machine, so [`GroupCommit`] runs one flusher thread:
//! it takes every waiter queued so far, flushes once, and wakes them all.
//! A waiter queues *after* its write, and the flush it joins starts after it
//! queued, so that flush covers the write.
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
    pub fn start(db: sled::Db) -> std::io::Result<Self> {
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
                while let Some(first) = queue.blocking_recv() {
                    batch.push(first);
                    while let Ok(next) = queue.try_recv() {
                        batch.push(next);
                    }
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
