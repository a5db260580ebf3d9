//! Retention: the customer data of transactions settled long ago is dropped.
//!
//! A host keeps a final transaction's customer data (the providers' replies
//! relayed to the app: account numbers, balances, names, their messages) for
//! `[data_at_rest] retention_days` after it settled, then drops it
//! ([`crate::store::TransactionRecord::drop_customer_data`]). What billing and
//! audit need stays: the status and its history (times, operations, codes),
//! the amount, the metered calls, and each request's fingerprint, so a
//! repeat of one of its `request_ref`s is still recognised and answered
//! `410 answer_dropped` rather than executed again or answered with a
//! different body. `Retention::start` runs the pass every hour while the
//! switch serves; [`Retention::apply_at`] runs it once for a given time.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::error::SwitchError;
use crate::storage::Storage;

/// How often the pass runs while the switch serves, and how long after
/// start-up it first runs.
const EVERY: Duration = Duration::from_secs(3600);
const FIRST_AFTER: Duration = Duration::from_secs(60);

/// Drops customer data older than the retention period, in whatever
/// storage generation is current.
#[derive(Clone)]
pub struct Retention {
    storage: Arc<Storage>,
    period: Duration,
}

impl Retention {
    pub(crate) fn new(storage: Arc<Storage>, period: Duration) -> Retention {
        Retention { storage, period }
    }

    /// Drops the customer data of every transaction settled at or before
    /// `now_ms` minus the retention period, durably; returns how many.
    pub async fn apply_at(&self, now_ms: u64) -> Result<usize, SwitchError> {
        let generation = self
            .storage
            .current()
            .ok_or(SwitchError::StorageUnavailable)?;
        let cutoff = now_ms.saturating_sub(self.period.as_millis() as u64);
        let store = generation.store().clone();
        let result = async {
            let dropped = store.drop_customer_data(cutoff, now_ms).await?;
            store.durable().await?;
            Ok(dropped)
        }
        .await
        .map_err(SwitchError::Store);
        self.storage.settle(&generation, result)
    }

    /// Runs [`Retention::apply_at`] every hour (first a minute after it
    /// starts) until the returned guard drops.
    pub(crate) fn start(self) -> RetentionTask {
        let task = tokio::spawn(async move {
            let start = tokio::time::Instant::now() + FIRST_AFTER;
            let mut ticks = tokio::time::interval_at(start, EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match self.apply_at(crate::engine::now_ms()).await {
                    Ok(0) => {}
                    Ok(dropped) => tracing::info!(
                        dropped,
                        "dropped the customer data of transactions past the retention period"
                    ),
                    Err(error) => tracing::error!(%error, "the retention pass failed"),
                }
            }
        });
        RetentionTask(task)
    }
}

/// Stops the hourly pass when dropped.
pub(crate) struct RetentionTask(JoinHandle<()>);

impl Drop for RetentionTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}
