//! Copying a sled store into PostgreSQL (`manifold store migrate`), so a
//! host can grow from one switch to several without losing history.
//!
//! Every transaction record (opened with the host's data keys, sealed again
//! under the current one as it is written), every `request_ref` it lists and
//! every metered call is copied, in one SQL transaction into an empty
//! database: a copy that fails leaves nothing behind and is simply run
//! again, and none is ever counted twice. Afterwards the copy is checked:
//! the counts must match, and a sample of records spread over the whole
//! store is read back from PostgreSQL and compared with the original.
//!
//! The sled store is read on a blocking thread while PostgreSQL is written,
//! a bounded channel between them, so memory holds a few batches, never
//! the store.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{ImportBatch, Imported, PgStore, SledStore, Store, StoreError, TransactionRecord};

/// Records per batch sent to PostgreSQL.
const TRANSACTIONS_PER_BATCH: usize = 1_000;
/// Metered calls per batch (smaller rows).
const CALLS_PER_BATCH: usize = 5_000;
/// How many records the check reads back at most.
const SAMPLE: u64 = 1_000;

/// What a migration copied and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub transactions: u64,
    pub metered_calls: u64,
    /// Records read back from PostgreSQL and found identical.
    pub checked: u64,
}

/// Where a migration is, for a progress report.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    /// The totals to copy, once counted.
    Counted {
        transactions: u64,
        metered_calls: u64,
    },
    /// Copied so far.
    Copied(Imported),
    /// The copy is committed; checking it.
    Checking,
}

/// Copies `from` (a stopped switch's sled store) into `to`, which must be
/// empty, then checks the copy.
pub async fn sled_to_postgres(
    from: Arc<SledStore>,
    to: &PgStore,
    progress: &mut (dyn FnMut(Step) + Send),
) -> Result<Migrated, StoreError> {
    from.settle().await?;
    let counted = {
        let from = from.clone();
        blocking(move || {
            Ok((
                from.each_transaction(|_| Ok(()))?,
                from.each_metered_call(|_| Ok(()))?,
            ))
        })
        .await?
    };
    progress(Step::Counted {
        transactions: counted.0,
        metered_calls: counted.1,
    });

    let (sender, mut batches) = mpsc::channel(4);
    let reader = {
        let from = from.clone();
        tokio::task::spawn_blocking(move || read_batches(&from, &sender))
    };
    let imported = to
        .import(&mut batches, &mut |copied| progress(Step::Copied(copied)))
        .await;
    // Closing the channel stops the reader if the import ended early.
    drop(batches);
    let read = reader
        .await
        .map_err(|e| StoreError::Database(format!("reading the sled store panicked: {e}")))?;
    let imported = imported?;
    read?;

    progress(Step::Checking);
    if (imported.transactions, imported.metered_calls) != counted
        || to.transaction_count().await? as u64 != counted.0
    {
        return Err(StoreError::Corrupt(format!(
            "the copy holds {} transactions and {} metered calls, the sled store {} and {}",
            imported.transactions, imported.metered_calls, counted.0, counted.1
        )));
    }
    let checked = check_sample(from, to, counted.0).await?;
    Ok(Migrated {
        transactions: imported.transactions,
        metered_calls: imported.metered_calls,
        checked,
    })
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Database(format!("reading the sled store panicked: {e}")))?
}

/// Sends the store's transactions, then its metered calls, in batches;
/// stops quietly when the receiver is gone, and sends the first error.
fn read_batches(
    from: &SledStore,
    sender: &mpsc::Sender<Result<ImportBatch, StoreError>>,
) -> Result<(), StoreError> {
    let gone = || StoreError::Database("the PostgreSQL side of the copy stopped".into());
    let send = |batch: ImportBatch| sender.blocking_send(Ok(batch)).map_err(|_| gone());
    let mut batch = ImportBatch::default();
    let read = from
        .each_transaction(|record| {
            batch.transactions.push(record);
            if batch.transactions.len() == TRANSACTIONS_PER_BATCH {
                send(std::mem::take(&mut batch))?;
            }
            Ok(())
        })
        .and_then(|_| {
            from.each_metered_call(|call| {
                batch.calls.push(call);
                if batch.calls.len() == CALLS_PER_BATCH {
                    send(std::mem::take(&mut batch))?;
                }
                Ok(())
            })
        })
        .and_then(|_| send(batch));
    if let Err(error) = &read {
        // The importer fails on it and rolls everything back.
        let _ = sender.blocking_send(Err(StoreError::Database(format!(
            "reading the sled store: {error}"
        ))));
    }
    read
}

/// Reads about [`SAMPLE`] records spread over the whole store back from
/// `to` and compares them with the originals; returns how many.
async fn check_sample(from: Arc<SledStore>, to: &PgStore, total: u64) -> Result<u64, StoreError> {
    let every = (total / SAMPLE).max(1);
    let sample: Vec<TransactionRecord> = blocking(move || {
        let mut sample = Vec::new();
        let mut n = 0u64;
        from.each_transaction(|record| {
            if n.is_multiple_of(every) {
                sample.push(record);
            }
            n += 1;
            Ok(())
        })?;
        Ok(sample)
    })
    .await?;
    for original in &sample {
        let copied = to
            .transaction(&original.app_id, &original.transaction_ref)
            .await?;
        if copied.as_ref() != Some(original) {
            return Err(StoreError::Corrupt(format!(
                "transaction `{}` of app `{}` differs in the copy",
                original.transaction_ref, original.app_id
            )));
        }
        for request in &original.requests {
            let known = to.request(&original.app_id, &request.request_ref).await?;
            if known.is_none() {
                return Err(StoreError::Corrupt(format!(
                    "request_ref `{}` of app `{}` is missing from the copy",
                    request.request_ref, original.app_id
                )));
            }
        }
    }
    Ok(sample.len() as u64)
}

#[cfg(test)]
mod tests;
