//! Metered calls on their way into `manifold_metered_calls`: queued by the
//! call that made them and written in batches by one task, so billing costs
//! the database one statement per batch rather than a commit per call.
//!
//! While the database answers, a call is written within one batch's round
//! trip of being queued ([`Store::meter`](crate::store::Store::meter)'s
//! promise). While it does not, the queue keeps up to [`MAX_QUEUED`] calls
//! and the writer tries again, backing off to [`MAX_BACKOFF`]; a call the
//! full queue had to refuse is counted in the log. A read of metered calls
//! and shutdown wait for what was queued before them
//! ([`MeterQueue::drained`]), so a switch reads its own calls as sled's
//! would; a process killed outright loses what was queued and not yet
//! written, as sled loses what its last group commit had not flushed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deadpool_postgres::{GenericClient, Pool};
use tokio::sync::Notify;

use super::{exec, pool_error, signed};
use crate::store::{MeteredCall, StoreError};

/// Calls kept while the database does not answer; past it, new calls are
/// refused (and counted in the log) rather than memory grown without end.
pub(super) const MAX_QUEUED: usize = 100_000;
/// Calls written by one statement at most.
const BATCH: usize = 1_000;
/// The writer's first wait after a failed batch; it doubles to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The calls waiting for the writer.
#[derive(Default)]
pub(super) struct MeterQueue {
    state: Mutex<Queued>,
    /// Wakes the writer when a call is queued (or the store closes).
    wake: Notify,
    /// Wakes [`MeterQueue::drained`] after each batch the writer tried.
    progress: Notify,
}

#[derive(Default)]
struct Queued {
    calls: VecDeque<MeteredCall>,
    /// The batch being written (should it fail, it goes back in front).
    writing: usize,
    /// Calls queued and calls written since the start: a call is written
    /// once `written` passes its place, as batches go in order.
    queued: u64,
    written: u64,
    refused: u64,
    closed: bool,
}

impl MeterQueue {
    fn state(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn push(&self, call: MeteredCall) {
        let mut state = self.state();
        if state.calls.len() >= MAX_QUEUED {
            state.refused += 1;
            if state.refused.is_power_of_two() {
                tracing::error!(
                    refused = state.refused,
                    "metered calls lost: {MAX_QUEUED} are waiting for the database already"
                );
            }
            return;
        }
        state.calls.push_back(call);
        state.queued += 1;
        drop(state);
        self.wake.notify_one();
    }

    /// How many calls wait to be written, the batch being written included.
    pub(super) fn waiting(&self) -> usize {
        let state = self.state();
        state.calls.len() + state.writing
    }

    /// Resolves once every call queued before it is written (calls queued
    /// meanwhile are not waited for); gives up after `within`, saying how
    /// many were not.
    pub(super) async fn drained(&self, within: Duration) -> Result<(), StoreError> {
        let target = self.state().queued;
        let wait = async {
            loop {
                let progress = self.progress.notified();
                tokio::pin!(progress);
                progress.as_mut().enable();
                if self.state().written >= target {
                    return;
                }
                progress.await;
            }
        };
        tokio::time::timeout(within, wait).await.map_err(|_| {
            StoreError::NotDurable(format!(
                "{} metered calls could not be written to the database within {} s",
                self.waiting(),
                within.as_secs()
            ))
        })
    }

    /// Ends the writing of `batch`: counted written, or put back in front
    /// in its order (billing reads by time). Whether the store is closed,
    /// and how many calls wait.
    fn finish(&self, batch: Vec<MeteredCall>, written: bool) -> (bool, usize) {
        let mut state = self.state();
        state.writing = 0;
        if written {
            state.written += batch.len() as u64;
        } else {
            for call in batch.into_iter().rev() {
                state.calls.push_front(call);
            }
        }
        (state.closed, state.calls.len())
    }

    /// Lets the writer end once the queue is written (or, failing that,
    /// after one more try).
    pub(super) fn close(&self) {
        self.state().closed = true;
        self.wake.notify_one();
    }
}

/// Starts the task that writes `queue` through `pool`.
pub(super) fn spawn_writer(queue: Arc<MeterQueue>, pool: Pool) {
    tokio::spawn(write_queued(queue, pool));
}

async fn write_queued(queue: Arc<MeterQueue>, pool: Pool) {
    let mut backoff = FIRST_BACKOFF;
    let mut failures: u64 = 0;
    loop {
        let (batch, closed): (Vec<MeteredCall>, bool) = {
            let mut state = queue.state();
            let take = state.calls.len().min(BATCH);
            state.writing = take;
            (state.calls.drain(..take).collect(), state.closed)
        };
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

/// Inserts metered calls, many per statement.
pub(super) async fn insert(
    client: &impl GenericClient,
    calls: &[MeteredCall],
) -> Result<(), StoreError> {
    if calls.is_empty() {
        return Ok(());
    }
    let mut m = MeteredColumns::default();
    for call in calls {
        let price = call.price.as_ref();
        m.at_ms.push(signed(call.at_ms, "a time")?);
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
        m.amount
            .push(call.amount.map(|a| signed(a, "the amount")).transpose()?);
        m.repeat.push(call.repeat);
        m.completed.push(call.completed);
        m.price_currency.push(price.map(|p| p.currency.as_str()));
        m.price_minor_units.push(
            price
                .map(|p| i32::try_from(p.minor_units))
                .transpose()
                .map_err(|_| {
                    StoreError::Database("a price's minor units are out of range".into())
                })?,
        );
        m.price_billed.push(price.map(|p| p.billed));
        m.price_call_fee
            .push(price.map(|p| signed(p.call_fee, "a fee")).transpose()?);
        m.price_value_fee
            .push(price.map(|p| signed(p.value_fee, "a fee")).transpose()?);
    }
    exec(
        client,
        "INSERT INTO manifold_metered_calls (at_ms, app_id, operation, request_type,
                 provider, status, http_status, error, inspect, transaction_ref, amount,
                 repeat, completed, price_currency, price_minor_units, price_billed,
                 price_call_fee, price_value_fee)
             SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[],
                 $6::text[], $7::int2[], $8::text[], $9::bool[], $10::text[], $11::int8[],
                 $12::bool[], $13::bool[], $14::text[], $15::int4[], $16::bool[],
                 $17::int8[], $18::int8[])",
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::suite::call;

    fn queued(queue: &MeterQueue) -> Vec<u64> {
        queue.state().calls.iter().map(|c| c.at_ms).collect()
    }

    /// What the writer does with one batch, without a database: take it,
    /// then finish it as written or not.
    fn write_one(queue: &MeterQueue, written: bool) -> usize {
        let batch: Vec<MeteredCall> = {
            let mut state = queue.state();
            let take = state.calls.len().min(BATCH);
            state.writing = take;
            state.calls.drain(..take).collect()
        };
        let taken = batch.len();
        queue.finish(batch, written);
        queue.progress.notify_waiters();
        taken
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_batch_goes_back_in_front_in_its_order() {
        let queue = MeterQueue::default();
        for at in 1..=3 {
            queue.push(call(at));
        }
        assert_eq!(write_one(&queue, false), 3);
        queue.push(call(4));
        assert_eq!(queued(&queue), vec![1, 2, 3, 4]);
        assert_eq!(queue.waiting(), 4);
        assert_eq!(write_one(&queue, true), 4);
        assert_eq!(queue.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn drained_waits_for_the_calls_queued_before_it_only() {
        let queue = Arc::new(MeterQueue::default());
        // Nothing queued: at once.
        queue.drained(Duration::from_secs(1)).await.unwrap();

        queue.push(call(1));
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.drained(Duration::from_secs(60)).await }
        });
        tokio::task::yield_now().await;
        // A failed try is not the end of the wait.
        write_one(&queue, false);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        // Written, with a call queued since: the wait is over all the same.
        queue.push(call(2));
        write_one(&queue, true);
        waiting.await.unwrap().unwrap();
        assert_eq!(queued(&queue), Vec::<u64>::new());
    }

    #[tokio::test(start_paused = true)]
    async fn drained_gives_up_saying_how_many_were_not_written() {
        let queue = MeterQueue::default();
        queue.push(call(1));
        queue.push(call(2));
        let error = queue.drained(Duration::from_secs(10)).await.unwrap_err();
        assert!(matches!(error, StoreError::NotDurable(_)), "{error}");
        assert!(
            error
                .to_string()
                .contains("2 metered calls could not be written to the database within 10 s"),
            "{error}"
        );
    }

    #[test]
    fn a_full_queue_refuses_new_calls_and_counts_them() {
        let queue = MeterQueue::default();
        for at in 0..MAX_QUEUED as u64 + 5 {
            queue.push(call(at));
        }
        assert_eq!(queue.waiting(), MAX_QUEUED);
        assert_eq!(queue.state().refused, 5);
        // The oldest are kept: billing reads by time.
        assert_eq!(queue.state().calls.front().unwrap().at_ms, 0);
    }
}
