//! Metered calls on their way into `manifold_metered_calls`: queued by the
//! call that made them and written in batches by one task, so billing costs
//! the database one statement per batch rather than a commit per call.
//!
//! A call is checked when it is queued (a number the database cannot hold
//! is refused then, not by a batch that would fail for good and hold up
//! every call behind it), and given an id: this process's random prefix
//! and its place in the queue. The table's unique index on that id makes a
//! batch written twice (its commit's answer lost with the connection, then
//! written again) count each call once: nothing is billed twice.
//!
//! While the database answers, a call is written within a batch or two of
//! being queued. While it does not, the queue keeps up to [`MAX_QUEUED`]
//! calls and the writer tries again, backing off to [`MAX_BACKOFF`]; a
//! call the full queue refuses is an error to its caller (who logs it). A
//! read of metered calls waits for what this switch queued before it (so
//! a switch reads its own calls as sled's would), or fails at once while
//! the database is away; a clean stop waits for the queue (at most a few
//! seconds) and for the writer to end. A process killed outright loses
//! what was queued and not yet written: the calls of the last moment, or
//! more while the database was away.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deadpool_postgres::{GenericClient, Pool};
use rand::RngCore;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::{exec, pool_error, signed};
use crate::store::{MeteredCall, StoreError};

/// Calls kept while the database does not answer; past it, new calls are
/// refused rather than memory grown without end.
pub(super) const MAX_QUEUED: usize = 100_000;
/// Calls written by one statement at most.
const BATCH: usize = 1_000;
/// The writer's first wait after a failed batch; it doubles to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A metered call as the table holds it: numbers converted (and checked)
/// once, and the id that makes writing it twice harmless.
pub(super) struct MeteredRow {
    /// `None` for calls copied from elsewhere (`manifold store migrate`).
    id: Option<[u8; 16]>,
    call: MeteredCall,
    at_ms: i64,
    amount: Option<i64>,
    price_minor_units: Option<i32>,
    price_call_fee: Option<i64>,
    price_value_fee: Option<i64>,
}

impl MeteredRow {
    pub(super) fn new(call: MeteredCall, id: Option<[u8; 16]>) -> Result<MeteredRow, StoreError> {
        let price = call.price.as_ref();
        Ok(MeteredRow {
            id,
            at_ms: signed(call.at_ms, "a time")?,
            amount: call.amount.map(|a| signed(a, "the amount")).transpose()?,
            price_minor_units: price
                .map(|p| i32::try_from(p.minor_units))
                .transpose()
                .map_err(|_| {
                    StoreError::Database("a price's minor units are out of range".into())
                })?,
            price_call_fee: price.map(|p| signed(p.call_fee, "a fee")).transpose()?,
            price_value_fee: price.map(|p| signed(p.value_fee, "a fee")).transpose()?,
            call,
        })
    }
}

/// The calls waiting for the writer.
pub(super) struct MeterQueue {
    state: Mutex<Queued>,
    /// The first half of every call id: random per process, so two switches'
    /// ids never meet.
    prefix: [u8; 8],
    /// Wakes the writer when a call is queued (or the store closes).
    wake: Notify,
    /// Wakes [`MeterQueue::drained`] after each batch the writer tried.
    progress: Notify,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Default for MeterQueue {
    fn default() -> Self {
        let mut prefix = [0; 8];
        rand::rngs::OsRng.fill_bytes(&mut prefix);
        MeterQueue {
            state: Mutex::default(),
            prefix,
            wake: Notify::new(),
            progress: Notify::new(),
            writer: Mutex::default(),
        }
    }
}

#[derive(Default)]
struct Queued {
    rows: VecDeque<MeteredRow>,
    /// The batch being written (should it fail, it goes back in front).
    writing: usize,
    /// Calls queued and calls written since the start: a call is written
    /// once `written` passes its place, as batches go in order.
    queued: u64,
    written: u64,
    /// The last batch failed: the database does not answer.
    failing: bool,
    closed: bool,
}

impl MeterQueue {
    fn state(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `call`; refused (and not queued) if the database could not
    /// hold it, or if [`MAX_QUEUED`] calls wait already.
    pub(super) fn push(&self, call: MeteredCall) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.closed {
            return Err(StoreError::NotDurable(
                "the store is closed: a call metered after the switch stopped is not kept".into(),
            ));
        }
        if state.rows.len() >= MAX_QUEUED {
            return Err(StoreError::NotDurable(format!(
                "{MAX_QUEUED} metered calls wait for the database already; this one is not kept"
            )));
        }
        let mut id = [0; 16];
        id[..8].copy_from_slice(&self.prefix);
        id[8..].copy_from_slice(&state.queued.to_be_bytes());
        state.rows.push_back(MeteredRow::new(call, Some(id))?);
        state.queued += 1;
        drop(state);
        self.wake.notify_one();
        Ok(())
    }

    /// How many calls wait to be written, the batch being written included.
    pub(super) fn waiting(&self) -> usize {
        let state = self.state();
        state.rows.len() + state.writing
    }

    /// Resolves once every call queued before it is written (calls queued
    /// meanwhile are not waited for); gives up after `within`, or at once
    /// when `fail_fast` and the database is not answering, saying how many
    /// were not written.
    pub(super) async fn drained(
        &self,
        within: Duration,
        fail_fast: bool,
    ) -> Result<(), StoreError> {
        let target = self.state().queued;
        let not_written = |waiting: usize, how: &str| {
            StoreError::NotDurable(format!(
                "{waiting} metered calls could not be written to the database {how}"
            ))
        };
        let wait = async {
            loop {
                let progress = self.progress.notified();
                tokio::pin!(progress);
                progress.as_mut().enable();
                {
                    let state = self.state();
                    if state.written >= target {
                        return Ok(());
                    }
                    if fail_fast && state.failing {
                        return Err(not_written(
                            state.rows.len() + state.writing,
                            "(it does not answer)",
                        ));
                    }
                }
                progress.await;
            }
        };
        match tokio::time::timeout(within, wait).await {
            Ok(done) => done,
            Err(_) => Err(not_written(
                self.waiting(),
                &format!("within {} s", within.as_secs()),
            )),
        }
    }

    /// Takes the next batch to write (empty when there is none), and
    /// whether the store is closed.
    pub(super) fn next_batch(&self) -> (Vec<MeteredRow>, bool) {
        let mut state = self.state();
        let take = state.rows.len().min(BATCH);
        state.writing = take;
        (state.rows.drain(..take).collect(), state.closed)
    }

    /// Ends the writing of `batch`: counted written, or put back in front
    /// in its order (billing reads by time). Whether the store is closed,
    /// and how many calls wait.
    fn finish(&self, batch: Vec<MeteredRow>, written: bool) -> (bool, usize) {
        let mut state = self.state();
        state.writing = 0;
        state.failing = !written;
        if written {
            state.written += batch.len() as u64;
        } else {
            for row in batch.into_iter().rev() {
                state.rows.push_front(row);
            }
        }
        (state.closed, state.rows.len())
    }

    /// Lets the writer end once the queue is written (or, failing that,
    /// after one more try), and waits for it to, at most `within`.
    pub(super) async fn close(&self, within: Duration) {
        self.state().closed = true;
        self.wake.notify_one();
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(writer) = writer {
            if tokio::time::timeout(within, writer).await.is_err() {
                tracing::error!(
                    waiting = self.waiting(),
                    "metered calls still not written when the switch stopped"
                );
            }
        }
    }

    /// Marks the queue closed without waiting (the store is dropped).
    pub(super) fn close_now(&self) {
        self.state().closed = true;
        self.wake.notify_one();
    }
}

/// Starts the task that writes `queue` through `pool`.
pub(super) fn spawn_writer(queue: Arc<MeterQueue>, pool: Pool) {
    let writer = tokio::spawn(write_queued(queue.clone(), pool));
    *queue.writer.lock().unwrap_or_else(PoisonError::into_inner) = Some(writer);
}

async fn write_queued(queue: Arc<MeterQueue>, pool: Pool) {
    let mut backoff = FIRST_BACKOFF;
    let mut failures: u64 = 0;
    loop {
        let (batch, closed) = queue.next_batch();
        if batch.is_empty() {
            if closed {
                return;
            }
            queue.wake.notified().await;
            continue;
        }
        let written = match pool.get().await {
            Ok(client) => insert(&client, &batch).await,
            Err(error) => Err(pool_error(error)),
        };
        let (closed, waiting) = queue.finish(batch, written.is_ok());
        queue.progress.notify_waiters();
        match written {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(failures, "metered calls are written to the database again");
                }
                failures = 0;
                backoff = FIRST_BACKOFF;
            }
            Err(error) => {
                failures += 1;
                if closed {
                    tracing::error!(
                        %error,
                        lost = waiting,
                        "metered calls not written before the store closed"
                    );
                    return;
                }
                if failures.is_power_of_two() {
                    tracing::error!(
                        %error,
                        failures,
                        waiting,
                        "metered calls could not be written; kept, and tried again"
                    );
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Inserts metered calls, many per statement; a call whose id is in the
/// table already is not inserted again.
pub(super) async fn insert(
    client: &impl GenericClient,
    rows: &[MeteredRow],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut m = MeteredColumns::default();
    for row in rows {
        let call = &row.call;
        let price = call.price.as_ref();
        m.call_id.push(row.id.as_ref().map(|id| id.as_slice()));
        m.at_ms.push(row.at_ms);
        m.app_id.push(call.app_id.as_str());
        m.operation.push(call.operation.as_str());
        m.request_type.push(call.request_type.as_deref());
        m.provider.push(call.provider.as_deref());
        m.status.push(call.status.as_str());
        m.http_status
            .push(i16::try_from(call.http_status).unwrap_or(i16::MAX));
        m.error.push(call.error.as_deref());
        m.inspect.push(call.inspect);
        m.transaction_ref.push(call.transaction_ref.as_deref());
        m.amount.push(row.amount);
        m.repeat.push(call.repeat);
        m.completed.push(call.completed);
        m.price_currency.push(price.map(|p| p.currency.as_str()));
        m.price_minor_units.push(row.price_minor_units);
        m.price_billed.push(price.map(|p| p.billed));
        m.price_call_fee.push(row.price_call_fee);
        m.price_value_fee.push(row.price_value_fee);
    }
    exec(
        client,
        "INSERT INTO manifold_metered_calls (at_ms, app_id, operation, request_type,
                 provider, status, http_status, error, inspect, transaction_ref, amount,
                 repeat, completed, price_currency, price_minor_units, price_billed,
                 price_call_fee, price_value_fee, call_id)
             SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[],
                 $6::text[], $7::int2[], $8::text[], $9::bool[], $10::text[], $11::int8[],
                 $12::bool[], $13::bool[], $14::text[], $15::int4[], $16::bool[],
                 $17::int8[], $18::int8[], $19::bytea[])
             ON CONFLICT (call_id) DO NOTHING",
        &[
            &m.at_ms,
            &m.app_id,
            &m.operation,
            &m.request_type,
            &m.provider,
            &m.status,
            &m.http_status,
            &m.error,
            &m.inspect,
            &m.transaction_ref,
            &m.amount,
            &m.repeat,
            &m.completed,
            &m.price_currency,
            &m.price_minor_units,
            &m.price_billed,
            &m.price_call_fee,
            &m.price_value_fee,
            &m.call_id,
        ],
    )
    .await?;
    Ok(())
}

/// Column arrays of many metered calls.
#[derive(Default)]
struct MeteredColumns<'a> {
    at_ms: Vec<i64>,
    app_id: Vec<&'a str>,
    operation: Vec<&'static str>,
    request_type: Vec<Option<&'a str>>,
    provider: Vec<Option<&'a str>>,
    status: Vec<&'static str>,
    http_status: Vec<i16>,
    error: Vec<Option<&'a str>>,
    inspect: Vec<bool>,
    transaction_ref: Vec<Option<&'a str>>,
    amount: Vec<Option<i64>>,
    repeat: Vec<bool>,
    completed: Vec<bool>,
    price_currency: Vec<Option<&'a str>>,
    price_minor_units: Vec<Option<i32>>,
    price_billed: Vec<Option<bool>>,
    price_call_fee: Vec<Option<i64>>,
    price_value_fee: Vec<Option<i64>>,
    call_id: Vec<Option<&'a [u8]>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::suite::call;

    fn queued(queue: &MeterQueue) -> Vec<u64> {
        queue
            .state()
            .rows
            .iter()
            .map(|row| row.call.at_ms)
            .collect()
    }

    /// What the writer does with one batch, without a database: take it,
    /// then finish it as written or not.
    fn write_one(queue: &MeterQueue, written: bool) -> usize {
        let (batch, _) = queue.next_batch();
        let taken = batch.len();
        queue.finish(batch, written);
        queue.progress.notify_waiters();
        taken
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_batch_goes_back_in_front_in_its_order() {
        let queue = MeterQueue::default();
        for at in 1..=3 {
            queue.push(call(at)).unwrap();
        }
        assert_eq!(write_one(&queue, false), 3);
        queue.push(call(4)).unwrap();
        assert_eq!(queued(&queue), vec![1, 2, 3, 4]);
        assert_eq!(queue.waiting(), 4);
        assert_eq!(write_one(&queue, true), 4);
        assert_eq!(queue.waiting(), 0);
    }

    #[test]
    fn every_call_has_its_own_id_and_every_process_its_own_prefix() {
        let (one, other) = (MeterQueue::default(), MeterQueue::default());
        for at in 0..3 {
            one.push(call(at)).unwrap();
        }
        other.push(call(0)).unwrap();
        let ids: Vec<[u8; 16]> = one.state().rows.iter().map(|r| r.id.unwrap()).collect();
        assert_eq!(ids[0][..8], one.prefix);
        assert_eq!(ids[2][8..], 2_u64.to_be_bytes());
        assert!(ids[0] != ids[1] && ids[1] != ids[2]);
        assert_ne!(one.prefix, other.prefix);
    }

    #[test]
    fn a_call_the_table_cannot_hold_is_refused_when_queued() {
        let queue = MeterQueue::default();
        let error = queue.push(call(u64::MAX)).unwrap_err();
        assert!(error.to_string().contains("a time"), "{error}");
        assert_eq!(queue.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn drained_waits_for_the_calls_queued_before_it_only() {
        let queue = Arc::new(MeterQueue::default());
        // Nothing queued: at once.
        queue.drained(Duration::from_secs(1), true).await.unwrap();

        queue.push(call(1)).unwrap();
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.drained(Duration::from_secs(60), false).await }
        });
        tokio::task::yield_now().await;
        // A failed try is not the end of the wait.
        write_one(&queue, false);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        // Written, with a call queued since: the wait is over all the same.
        queue.push(call(2)).unwrap();
        write_one(&queue, true);
        waiting.await.unwrap().unwrap();
        assert_eq!(queued(&queue), Vec::<u64>::new());
    }

    #[tokio::test(start_paused = true)]
    async fn drained_gives_up_saying_how_many_were_not_written() {
        let queue = MeterQueue::default();
        queue.push(call(1)).unwrap();
        queue.push(call(2)).unwrap();
        let error = queue
            .drained(Duration::from_secs(10), false)
            .await
            .unwrap_err();
        assert!(matches!(error, StoreError::NotDurable(_)), "{error}");
        assert!(
            error
                .to_string()
                .contains("2 metered calls could not be written to the database within 10 s"),
            "{error}"
        );
        // While the database does not answer, a read need not wait at all.
        write_one(&queue, false);
        let error = queue
            .drained(Duration::from_secs(3600), true)
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("(it does not answer)"),
            "{error}"
        );
    }

    #[test]
    fn a_full_queue_refuses_new_calls_and_keeps_the_oldest() {
        let queue = MeterQueue::default();
        for at in 0..MAX_QUEUED as u64 {
            queue.push(call(at)).unwrap();
        }
        let error = queue.push(call(0)).unwrap_err();
        assert!(matches!(error, StoreError::NotDurable(_)), "{error}");
        assert_eq!(queue.waiting(), MAX_QUEUED);
        // The oldest are kept: billing reads by time.
        assert_eq!(queue.state().rows.front().unwrap().call.at_ms, 0);
    }
}
