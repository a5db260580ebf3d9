//! [`PgStore`]: the [`Store`](super::Store) on PostgreSQL, so several
//! switches share their state through one database.
//!
//! **Correctness comes from the database**, never from locks in one
//! process: a `request_ref` is claimed by inserting its row
//! (`INSERT … ON CONFLICT DO NOTHING` on the primary key), so of two switches
//! racing on one request exactly one starts it and the other sees a repeat;
//! a transaction and its first request are inserted by one statement
//! (`manifold_begin`), and a `transaction_ref` taken by another transaction
//! leaves neither; a change to a transaction is applied to its row as read
//! and written back only if the row still holds the bytes read (a
//! compare-and-set: every write seals under a fresh nonce, so equal bytes
//! mean no write came between; unsealed, in tests, they mean an equal
//! record, which is as good for a change that is a function of the record),
//! else read again, and after a few lost races under the row's lock
//! (`FOR UPDATE`); a trigger refuses any update that would move a final
//! status ([`schema`]). A begin is one round trip and one commit, a change
//! two round trips and one commit, as the server's CPU, not its disk, is
//! what a switch on PostgreSQL waits for.
//!
//! **Claims live in the database** ([`ClaimsLiveIn::Database`]): a claim
//! outlives the switch that made it, so another switch answers a repeat of
//! it. A `read_only` enquiry's record is therefore written when it begins,
//! like any transaction's: a switch that dies mid-enquiry leaves a record
//! the others can report instead of a claim nobody can settle.
//!
//! **Durable when committed.** Every change of a transaction or claim is
//! committed before the call returns (PostgreSQL's commit is its
//! durability, and the store refuses a server that runs with `fsync` or
//! `synchronous_commit` off), so [`Store::durable`](super::Store::durable)
//! has nothing left to wait for. Metered calls are the exception, as
//! [`Store::meter`](super::Store::meter) allows: queued, and written by
//! their own task a moment later ([`metered`]).
//!
//! Records are the codec's encoding sealed under the host's data key, with
//! the same context as in sled (`T app 0x1f transaction_ref`), so a record
//! copied from a sled store is stored as it is. Metered calls are plain
//! columns: hosts may bill from SQL as well as from `manifold invoice`.
//! They are written in batches by one task ([`metered`]), not by the call
//! that made them.

mod metered;
mod schema;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use deadpool_postgres::{Pool, PoolError};
use manifold_billing::Price;
use manifold_crypto::DataKeys;
use manifold_postgres::PgError;
use manifold_provider::Status;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::codec::{self, key, TRANSACTION};
use super::sealing::{self, Sealing};
use super::{
    Begin, Change, Claim, ClaimsLiveIn, Durable, Fingerprint, KnownRequest, MeteredCall, Operation,
    RequestEntry, RequestState, Store, StoreError, StoredAnswer, TransactionRecord,
};

/// How many metered calls [`Store::each_metered`] reads at a time.
const METERED_PAGE: i64 = 1000;
/// How many records retention, a reseal or a dump handles at a time.
const RETENTION_BATCH: i64 = 500;
/// How long a read of metered calls waits for this switch's queued ones.
const METERED_READ_WAIT: Duration = Duration::from_secs(10);
/// Optimistic tries of a change before it waits for the row's lock.
const OPTIMISTIC_TRIES: usize = 3;

/// Where the database is and how the store uses it.
#[derive(Clone)]
pub struct PostgresOptions {
    /// A libpq connection string or `postgres://` URL. It may hold a
    /// password, so it is never logged and `Debug` does not print it.
    pub url: String,
    /// Connections the switch keeps open at most.
    pub pool_size: usize,
    /// How long a statement may run before the server cancels it.
    pub statement_timeout: Duration,
    /// How long a call waits for a connection (opening one included).
    pub connect_timeout: Duration,
    /// PEM certificates the server's must chain to (TLS, `sslmode=require`),
    /// instead of the public roots.
    pub ca_file: Option<PathBuf>,
    /// Allows a URL to another machine without TLS.
    pub insecure_plaintext: bool,
    /// The keys transaction records are sealed under; `None` keeps them in
    /// clear (tests only: the configuration requires a key).
    pub data_keys: Option<Arc<DataKeys>>,
}

impl PostgresOptions {
    /// The options a host configured: `[storage.postgres]`, and the data
    /// keys of `[data_at_rest]`.
    pub fn from_config(
        config: &manifold_config::SwitchConfig,
        postgres: &manifold_config::PostgresConfig,
    ) -> PostgresOptions {
        PostgresOptions {
            url: postgres.url.expose().to_owned(),
            pool_size: postgres.pool_size,
            statement_timeout: postgres.statement_timeout,
            connect_timeout: postgres.connect_timeout,
            ca_file: postgres.ca_file.clone(),
            insecure_plaintext: postgres.insecure_plaintext,
            data_keys: Some(config.data_at_rest.keys.clone()),
        }
    }
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &"(redacted)")
            .field("pool_size", &self.pool_size)
            .field("statement_timeout", &self.statement_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("ca_file", &self.ca_file)
            .field("insecure_plaintext", &self.insecure_plaintext)
            .field("data_keys", &self.data_keys)
            .finish()
    }
}

fn database(error: tokio_postgres::Error) -> StoreError {
    StoreError::Database(manifold_postgres::describe(&error))
}

/// Runs `sql` as a statement prepared once per connection (the pool keeps
/// them), so each costs one round trip instead of two: measured, it was
/// most of the switch's time on PostgreSQL.
async fn exec<C: GenericClient + ?Sized>(
    client: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, StoreError> {
    let statement = client.prepare_cached(sql).await.map_err(database)?;
    client.execute(&statement, params).await.map_err(database)
}

/// As [`exec`], for at most one row.
async fn row<C: GenericClient + ?Sized>(
    client: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, StoreError> {
    let statement = client.prepare_cached(sql).await.map_err(database)?;
    client.query_opt(&statement, params).await.map_err(database)
}

/// As [`exec`], for rows.
async fn rows<C: GenericClient + ?Sized>(
    client: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, StoreError> {
    let statement = client.prepare_cached(sql).await.map_err(database)?;
    client.query(&statement, params).await.map_err(database)
}

fn pool_error(error: PoolError) -> StoreError {
    pg(PgError::from(error))
}

/// The connection layer's error as the store's.
fn pg(error: PgError) -> StoreError {
    match error {
        PgError::NotDurable(_) => StoreError::NotDurable(error.to_string()),
        PgError::NewerSchema { .. } => StoreError::UnsupportedFormat(error.to_string()),
        other => StoreError::Database(other.to_string()),
    }
}

/// A number the database keeps as `bigint`.
fn signed(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| {
        StoreError::Database(format!(
            "{what} {value} is above what PostgreSQL's bigint holds"
        ))
    })
}

fn unsigned(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value} is negative")))
}

const STATUSES: [Status; 5] = [
    Status::Successful,
    Status::Failed,
    Status::WaitingForOtp,
    Status::PendingValidation,
    Status::Pending,
];
const OPERATIONS: [Operation; 4] = [
    Operation::Transact,
    Operation::Validate,
    Operation::Query,
    Operation::Reverse,
];

fn status_named(name: &str) -> Result<Status, StoreError> {
    STATUSES
        .into_iter()
        .find(|status| status.as_str() == name)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown status `{name}`")))
}

fn operation_named(name: &str) -> Result<Operation, StoreError> {
    OPERATIONS
        .into_iter()
        .find(|operation| operation.as_str() == name)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown operation `{name}`")))
}

fn fingerprint_of(bytes: &[u8]) -> Result<Fingerprint, StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("a fingerprint of {} bytes", bytes.len())))
}

/// The switch's store on PostgreSQL; cheap to share (a pool).
pub struct PgStore {
    pool: Pool,
    sealing: Sealing,
    metered: Arc<metered::MeterQueue>,
    /// Compare-and-set tries of a change before it takes the row's lock.
    optimistic_tries: usize,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.metered.close_now();
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects, checks that the server's commits are durable, brings the
    /// schema up to date and checks the data keys; every failure says what
    /// to fix.
    pub async fn connect(options: &PostgresOptions) -> Result<PgStore, StoreError> {
        let pool = manifold_postgres::pool(&manifold_postgres::Options {
            url: options.url.clone(),
            pool_size: options.pool_size,
            statement_timeout: Some(options.statement_timeout),
            lock_timeout: None,
            connect_timeout: options.connect_timeout,
            ca_file: options.ca_file.clone(),
            insecure_plaintext: options.insecure_plaintext,
            application_name: "manifold-switch",
        })
        .map_err(pg)?;
        let store = PgStore {
            pool,
            sealing: Sealing::new(options.data_keys.clone()),
            metered: Arc::default(),
            optimistic_tries: OPTIMISTIC_TRIES,
        };
        let mut client = manifold_postgres::connect(&store.pool).await.map_err(pg)?;
        manifold_postgres::check_durable_commits(&client)
            .await
            .map_err(pg)?;
        manifold_postgres::migrate(&mut client, &schema::SCHEMA)
            .await
            .map_err(pg)?;
        store.check_key_ids(&mut client).await?;
        metered::spawn_writer(store.metered.clone(), store.pool.clone());
        Ok(store)
    }

    /// Refuses a database whose records are sealed under keys the
    /// configuration lacks, and records the current key's id before
    /// anything is sealed under it (as the sled store does).
    async fn check_key_ids(
        &self,
        client: &mut deadpool_postgres::Client,
    ) -> Result<(), StoreError> {
        let transaction = client.transaction().await.map_err(database)?;
        // The same lock as migrations: two switches starting at once record
        // their key ids one after the other.
        exec(
            &transaction,
            "SELECT pg_advisory_xact_lock($1)",
            &[&schema::MIGRATION_LOCK],
        )
        .await?;
        let name = key_ids_name();
        let recorded: Option<Vec<u8>> = row(
            &transaction,
            "SELECT value FROM manifold_meta WHERE name = $1",
            &[&name],
        )
        .await?
        .map(|row| row.get(0));
        if let Some(ids) = self.sealing.check_key_ids(recorded.as_deref())? {
            exec(
                &transaction,
                "INSERT INTO manifold_meta (name, value) VALUES ($1, $2)
                     ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                &[&name, &ids],
            )
            .await?;
        }
        transaction.commit().await.map_err(database)
    }

    /// Seals every record not sealed under the current data key, a batch
    /// per SQL transaction, then records that only the current key seals
    /// anything (previous keys may then leave the configuration). Returns
    /// how many it rewrote. Safe while switches serve: each record is
    /// rewritten under its row lock.
    pub async fn reseal(&self) -> Result<usize, StoreError> {
        if self.sealing.current_key_id().is_none() {
            return Err(StoreError::Sealed(
                "resealing needs a data key: the store was opened without one".into(),
            ));
        }
        let mut client = self.client().await?;
        let mut resealed = 0;
        let (mut after_app, mut after_ref) = (String::new(), String::new());
        loop {
            let sql = client.transaction().await.map_err(database)?;
            let rows = rows(
                &sql,
                "SELECT app_id, transaction_ref, record FROM manifold_transactions
                     WHERE (app_id, transaction_ref) > ($1, $2)
                     ORDER BY app_id, transaction_ref LIMIT $3 FOR UPDATE",
                &[&after_app, &after_ref, &RETENTION_BATCH],
            )
            .await?;
            for row in &rows {
                let (app_id, transaction_ref): (&str, &str) = (row.get(0), row.get(1));
                let stored: &[u8] = row.get(2);
                if !self.sealing.needs_reseal(stored) {
                    continue;
                }
                let record = self.open(app_id, transaction_ref, stored)?;
                self.store_transaction(&sql, &record, None).await?;
                resealed += 1;
            }
            sql.commit().await.map_err(database)?;
            match rows.last() {
                Some(last) if rows.len() as i64 == RETENTION_BATCH => {
                    after_app = last.get(0);
                    after_ref = last.get(1);
                }
                _ => break,
            }
        }
        if let Some(ids) = self.sealing.current_key_id_only() {
            exec(
                &client,
                "UPDATE manifold_meta SET value = $2 WHERE name = $1",
                &[&key_ids_name(), &ids],
            )
            .await?;
        }
        Ok(resealed)
    }

    /// Every transaction as JSON lines ([`super::transaction_json`]), in
    /// key order, a page at a time; returns how many.
    pub async fn dump(&self, out: &mut (dyn std::io::Write + Send)) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let mut written = 0;
        let (mut after_app, mut after_ref) = (String::new(), String::new());
        loop {
            let rows = rows(
                &client,
                "SELECT app_id, transaction_ref, record FROM manifold_transactions
                     WHERE (app_id, transaction_ref) > ($1, $2)
                     ORDER BY app_id, transaction_ref LIMIT $3",
                &[&after_app, &after_ref, &RETENTION_BATCH],
            )
            .await?;
            for row in &rows {
                let record = self.open(row.get(0), row.get(1), row.get(2))?;
                serde_json::to_writer(&mut *out, &super::transaction_json(&record))
                    .and_then(|_| out.write_all(b"\n").map_err(serde_json::Error::io))
                    .map_err(|e| StoreError::Database(e.to_string()))?;
                written += 1;
            }
            match rows.last() {
                Some(last) if rows.len() as i64 == RETENTION_BATCH => {
                    after_app = last.get(0);
                    after_ref = last.get(1);
                }
                _ => return Ok(written),
            }
        }
    }

    /// Loads `batches` into an empty database as one SQL transaction: all of
    /// it or, on any error, none (so a failed copy is simply run again).
    /// Records are sealed under the current data key as they are written.
    /// `progress` is told the running totals after each batch. For
    /// `manifold store migrate` ([`crate::store::migrate`]).
    pub async fn import(
        &self,
        batches: &mut tokio::sync::mpsc::Receiver<Result<ImportBatch, StoreError>>,
        progress: &mut (dyn FnMut(Imported) + Send),
    ) -> Result<Imported, StoreError> {
        let mut client = self.client().await?;
        let sql = client.transaction().await.map_err(database)?;
        let occupied: bool = sql
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM manifold_transactions)
                     OR EXISTS (SELECT 1 FROM manifold_requests)
                     OR EXISTS (SELECT 1 FROM manifold_metered_calls)",
                &[],
            )
            .await
            .map_err(database)?
            .get(0);
        if occupied {
            return Err(StoreError::Database(
                "the PostgreSQL database already holds transactions or metered calls; a store is \
                 copied into an empty one, so that nothing is there twice"
                    .into(),
            ));
        }
        let mut imported = Imported::default();
        while let Some(batch) = batches.recv().await {
            let batch = batch?;
            self.insert_transactions(&sql, &batch.transactions).await?;
            let rows = (batch.calls.iter().cloned())
                .map(|call| metered::MeteredRow::new(call, None))
                .collect::<Result<Vec<_>, _>>()?;
            metered::insert(&sql, &rows).await?;
            imported.transactions += batch.transactions.len() as u64;
            imported.metered_calls += batch.calls.len() as u64;
            progress(imported);
        }
        sql.commit().await.map_err(database)?;
        Ok(imported)
    }

    /// Inserts whole records and their requests' rows, many per statement.
    async fn insert_transactions(
        &self,
        client: &impl GenericClient,
        records: &[TransactionRecord],
    ) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut t = TransactionColumns::default();
        let mut r = RequestColumns::default();
        for record in records {
            let c = self.transaction_columns(record)?;
            t.app_id.push(record.app_id.as_str());
            t.transaction_ref.push(record.transaction_ref.as_str());
            t.request_type.push(c.request_type);
            t.provider.push(c.provider);
            t.amount.push(c.amount);
            t.status.push(c.status);
            t.created_at_ms.push(c.created_at_ms);
            t.updated_at_ms.push(c.updated_at_ms);
            t.settled.push(c.settled);
            t.dropped.push(c.dropped);
            t.record.push(c.record);
            for request in &record.requests {
                r.app_id.push(record.app_id.as_str());
                r.request_ref.push(request.request_ref.as_str());
                r.transaction_ref.push(record.transaction_ref.as_str());
                r.operation.push(request.operation.as_str());
                r.fingerprint.push(request.fingerprint.as_slice());
                r.started_at_ms.push(match request.state {
                    RequestState::InFlight { started_at_ms } => {
                        signed(started_at_ms, "a claim's start")?
                    }
                    RequestState::Answered(_) => 0,
                });
            }
        }
        exec(
            client,
            "INSERT INTO manifold_transactions (app_id, transaction_ref, request_type, provider,
                     amount, status, created_at_ms, updated_at_ms, settled, customer_data_dropped,
                     record)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                     $5::int8[], $6::text[], $7::int8[], $8::int8[], $9::bool[], $10::bool[],
                     $11::bytea[])",
            &[
                &t.app_id,
                &t.transaction_ref,
                &t.request_type,
                &t.provider,
                &t.amount,
                &t.status,
                &t.created_at_ms,
                &t.updated_at_ms,
                &t.settled,
                &t.dropped,
                &t.record,
            ],
        )
        .await?;
        exec(
            client,
            "INSERT INTO manifold_requests (app_id, request_ref, transaction_ref, operation,
                     fingerprint, started_at_ms)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                     $5::bytea[], $6::int8[])",
            &[
                &r.app_id,
                &r.request_ref,
                &r.transaction_ref,
                &r.operation,
                &r.fingerprint,
                &r.started_at_ms,
            ],
        )
        .await?;
        Ok(())
    }

    /// Waits until every call metered so far is written and ends the
    /// writer (calls metered later are refused), all within `within`; for
    /// shutdown.
    pub async fn close_metering(&self, within: Duration) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + within;
        let drained = self.metered.drained(within, false).await;
        self.metered
            .close(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await;
        drained
    }

    /// Metered calls not yet written to the database.
    pub fn metered_waiting(&self) -> usize {
        self.metered.waiting()
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    fn seal(&self, record: &TransactionRecord) -> Result<Vec<u8>, StoreError> {
        let context = key(TRANSACTION, &record.app_id, &record.transaction_ref);
        Ok(self
            .sealing
            .seal(&context, codec::encode_transaction(record)?))
    }

    fn open(
        &self,
        app_id: &str,
        transaction_ref: &str,
        stored: &[u8],
    ) -> Result<TransactionRecord, StoreError> {
        let context = key(TRANSACTION, app_id, transaction_ref);
        let encoded = self.sealing.open(&context, stored)?;
        codec::decode_transaction(app_id, transaction_ref, &encoded)
    }

    /// What is known of `request_ref`: its claim, or the record listing it.
    async fn known(
        &self,
        client: &impl GenericClient,
        app_id: &str,
        request_ref: &str,
    ) -> Result<Option<KnownRequest>, StoreError> {
        let row = row(
            client,
            "SELECT r.transaction_ref, r.operation, r.fingerprint, r.started_at_ms, t.record
                 FROM manifold_requests r
                 LEFT JOIN manifold_transactions t
                     ON t.app_id = r.app_id AND t.transaction_ref = r.transaction_ref
                 WHERE r.app_id = $1 AND r.request_ref = $2",
            &[&app_id, &request_ref],
        )
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let transaction_ref: String = row.get(0);
        let Some(stored) = row.get::<_, Option<Vec<u8>>>(4) else {
            // A claim whose transaction is gone was abandoned meanwhile.
            return Ok(None);
        };
        let transaction = self.open(app_id, &transaction_ref, &stored)?;
        if let Some(request) = transaction.request(request_ref).cloned() {
            return Ok(Some(KnownRequest::Recorded {
                request,
                transaction,
            }));
        }
        Ok(Some(KnownRequest::Running {
            operation: operation_named(row.get(1))?,
            transaction_ref,
            fingerprint: fingerprint_of(row.get(2))?,
            started_at_ms: unsigned(row.get(3), "a claim's start")?,
        }))
    }

    /// The transaction row's columns beside its key, from `record` (its
    /// sealed encoding included).
    fn transaction_columns(&self, record: &TransactionRecord) -> Result<Columns, StoreError> {
        Ok(Columns {
            request_type: record.request_type.clone(),
            provider: record.provider.clone(),
            amount: signed(record.amount, "the amount")?,
            status: record.status.as_str(),
            created_at_ms: signed(record.created_at_ms, "a time")?,
            updated_at_ms: signed(record.updated_at_ms, "a time")?,
            settled: record.is_settled(),
            dropped: record.customer_data_dropped_at_ms.is_some(),
            record: self.seal(record)?,
        })
    }

    /// Writes `record` over its row; with `expected`, only if the row still
    /// holds those sealed bytes. Whether it was written.
    async fn store_transaction(
        &self,
        client: &impl GenericClient,
        record: &TransactionRecord,
        expected: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        let c = self.transaction_columns(record)?;
        let mut params = Vec::with_capacity(12);
        params.extend_from_slice(&c.params(record));
        let written = match &expected {
            Some(expected) => {
                params.push(expected);
                exec(
                    client,
                    "UPDATE manifold_transactions SET request_type = $3, provider = $4,
                             amount = $5, status = $6, created_at_ms = $7, updated_at_ms = $8,
                             settled = $9, customer_data_dropped = $10, record = $11
                         WHERE app_id = $1 AND transaction_ref = $2 AND record = $12",
                    &params,
                )
                .await?
            }
            None => {
                exec(
                    client,
                    "UPDATE manifold_transactions SET request_type = $3, provider = $4,
                             amount = $5, status = $6, created_at_ms = $7, updated_at_ms = $8,
                             settled = $9, customer_data_dropped = $10, record = $11
                         WHERE app_id = $1 AND transaction_ref = $2",
                    &params,
                )
                .await?
            }
        };
        Ok(written == 1)
    }

    /// Inserts the claim of `request` on `transaction_ref`; false if the
    /// `request_ref` is taken.
    async fn insert_claim(
        &self,
        client: &impl GenericClient,
        app_id: &str,
        transaction_ref: &str,
        request: &RequestEntry,
    ) -> Result<bool, StoreError> {
        let started_at_ms = match request.state {
            RequestState::InFlight { started_at_ms } => started_at_ms,
            RequestState::Answered(_) => 0,
        };
        let inserted = exec(
            client,
            "INSERT INTO manifold_requests (app_id, request_ref, transaction_ref, operation,
                     fingerprint, started_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (app_id, request_ref) DO NOTHING",
            &[
                &app_id,
                &request.request_ref,
                &transaction_ref,
                &request.operation.as_str(),
                &request.fingerprint.as_slice(),
                &signed(started_at_ms, "a claim's start")?,
            ],
        )
        .await?;
        Ok(inserted == 1)
    }

    /// The record under `(app_id, transaction_ref)`, locked until the end of
    /// `client`'s SQL transaction.
    async fn locked(
        &self,
        client: &impl GenericClient,
        app_id: &str,
        transaction_ref: &str,
    ) -> Result<Option<TransactionRecord>, StoreError> {
        let row = row(
            client,
            "SELECT record FROM manifold_transactions
                 WHERE app_id = $1 AND transaction_ref = $2 FOR UPDATE",
            &[&app_id, &transaction_ref],
        )
        .await?;
        row.map(|row| self.open(app_id, transaction_ref, row.get(0)))
            .transpose()
    }

    /// The record under `(app_id, transaction_ref)` as stored, with the
    /// claim of `request_ref` on it if there is one; `lock` is empty or
    /// `FOR UPDATE OF t`.
    async fn read_for_change(
        &self,
        client: &impl GenericClient,
        app_id: &str,
        transaction_ref: &str,
        request_ref: Option<&str>,
        lock: &str,
    ) -> Result<Option<ReadForUpdate>, StoreError> {
        let sql = format!(
            "SELECT t.record, r.operation, r.fingerprint FROM manifold_transactions t
                 LEFT JOIN manifold_requests r ON r.app_id = t.app_id
                     AND r.request_ref = $3 AND r.transaction_ref = t.transaction_ref
                 WHERE t.app_id = $1 AND t.transaction_ref = $2 {lock}"
        );
        let Some(row) = row(client, &sql, &[&app_id, &transaction_ref, &request_ref]).await? else {
            return Ok(None);
        };
        let stored: Vec<u8> = row.get(0);
        let claim = match (
            row.get::<_, Option<&str>>(1),
            row.get::<_, Option<&[u8]>>(2),
        ) {
            (Some(operation), Some(fingerprint)) => {
                Some((operation_named(operation)?, fingerprint_of(fingerprint)?))
            }
            _ => None,
        };
        Ok(Some(ReadForUpdate {
            record: self.open(app_id, transaction_ref, &stored)?,
            stored,
            claim,
        }))
    }

    /// Starts a transaction with its first request claimed, both or
    /// neither, in one statement (`manifold_begin`, [`schema`]).
    async fn begin(&self, transaction: &TransactionRecord) -> Result<Begin, StoreError> {
        let first = transaction
            .first_request()
            .ok_or_else(|| StoreError::Corrupt("a transaction begins with its /transact".into()))?;
        let started_at_ms = match first.state {
            RequestState::InFlight { started_at_ms } => started_at_ms,
            RequestState::Answered(_) => 0,
        };
        let started_at_ms = signed(started_at_ms, "a claim's start")?;
        let columns = self.transaction_columns(transaction)?;
        let claim: [&(dyn ToSql + Sync); 4] = [
            &first.request_ref,
            &first.operation.as_str(),
            &first.fingerprint.as_slice(),
            &started_at_ms,
        ];
        let mut params = Vec::with_capacity(15);
        params.extend_from_slice(&columns.params(transaction));
        params.extend_from_slice(&claim);
        let client = self.client().await?;
        // A claim seen taken can be abandoned before it is read; a few tries
        // settle that race one way or the other.
        for _ in 0..3 {
            let outcome = row(
                &client,
                "SELECT manifold_begin($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                     $14, $15)",
                &params,
            )
            .await?
            .map(|row| row.get::<_, String>(0));
            match outcome.as_deref() {
                Some("started") => return Ok(Begin::Started),
                Some("taken") => return Ok(Begin::TransactionRefTaken),
                Some("repeat") => {
                    match self
                        .known(&client, &transaction.app_id, &first.request_ref)
                        .await?
                    {
                        Some(known) => return Ok(Begin::Repeat(Box::new(known))),
                        None => continue,
                    }
                }
                other => {
                    return Err(StoreError::Database(format!(
                        "manifold_begin answered {other:?}"
                    )))
                }
            }
        }
        Err(StoreError::Database(format!(
            "request_ref `{}` was claimed and abandoned three times while this call began it",
            first.request_ref
        )))
    }

    fn metered_call(row: &Row) -> Result<MeteredCall, StoreError> {
        let price = match row.get::<_, Option<String>>(13) {
            Some(currency) => {
                let minor_units: i32 = row.get(14);
                Some(Price {
                    currency,
                    minor_units: u32::try_from(minor_units).map_err(|_| {
                        StoreError::Corrupt(format!("a price's minor units {minor_units}"))
                    })?,
                    billed: row.get(15),
                    call_fee: unsigned(row.get(16), "a call fee")?,
                    value_fee: unsigned(row.get(17), "a value fee")?,
                })
            }
            None => None,
        };
        let http_status: i16 = row.get(6);
        Ok(MeteredCall {
            at_ms: unsigned(row.get(0), "a metered call's time")?,
            app_id: row.get(1),
            operation: operation_named(row.get(2))?,
            request_type: row.get(3),
            provider: row.get(4),
            status: status_named(row.get(5))?,
            http_status: u16::try_from(http_status)
                .map_err(|_| StoreError::Corrupt(format!("an HTTP status {http_status}")))?,
            error: row.get(7),
            inspect: row.get(8),
            transaction_ref: row.get(9),
            amount: row
                .get::<_, Option<i64>>(10)
                .map(|amount| unsigned(amount, "an amount"))
                .transpose()?,
            repeat: row.get(11),
            completed: row.get(12),
            price,
        })
    }
}

/// Records to [`PgStore::import`]: transactions (with their requests) and
/// metered calls, in any proportion.
#[derive(Debug, Default)]
pub struct ImportBatch {
    pub transactions: Vec<TransactionRecord>,
    pub calls: Vec<MeteredCall>,
}

/// What an import has written so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    pub transactions: u64,
    pub metered_calls: u64,
}

/// Column arrays of many transaction rows, for one `unnest` insert.
#[derive(Default)]
struct TransactionColumns<'a> {
    app_id: Vec<&'a str>,
    transaction_ref: Vec<&'a str>,
    request_type: Vec<String>,
    provider: Vec<String>,
    amount: Vec<i64>,
    status: Vec<&'static str>,
    created_at_ms: Vec<i64>,
    updated_at_ms: Vec<i64>,
    settled: Vec<bool>,
    dropped: Vec<bool>,
    record: Vec<Vec<u8>>,
}

/// Column arrays of many request rows.
#[derive(Default)]
struct RequestColumns<'a> {
    app_id: Vec<&'a str>,
    request_ref: Vec<&'a str>,
    transaction_ref: Vec<&'a str>,
    operation: Vec<&'static str>,
    fingerprint: Vec<&'a [u8]>,
    started_at_ms: Vec<i64>,
}

/// The columns of a transaction row beside its key.
struct Columns {
    request_type: String,
    provider: String,
    amount: i64,
    status: &'static str,
    created_at_ms: i64,
    updated_at_ms: i64,
    settled: bool,
    dropped: bool,
    record: Vec<u8>,
}

impl Columns {
    /// A row's parameters, its key first: `$1` to `$11` of the statements
    /// that write one.
    fn params<'a>(&'a self, record: &'a TransactionRecord) -> [&'a (dyn ToSql + Sync); 11] {
        [
            &record.app_id,
            &record.transaction_ref,
            &self.request_type,
            &self.provider,
            &self.amount,
            &self.status,
            &self.created_at_ms,
            &self.updated_at_ms,
            &self.settled,
            &self.dropped,
            &self.record,
        ]
    }
}

/// A transaction row as read for a change: the record, its sealed bytes
/// (what an optimistic write expects to find), and the claim of the
/// request being answered (operation, fingerprint), if it has one.
struct ReadForUpdate {
    record: TransactionRecord,
    stored: Vec<u8>,
    claim: Option<(Operation, Fingerprint)>,
}

/// Records `answer` in `record`: on the request it lists, or on the claim
/// made for this transaction but not yet in its record. A `request_ref`
/// claimed for no request of it is not answered.
fn record_answer(
    record: &mut TransactionRecord,
    answer: Option<(&str, StoredAnswer)>,
    claim: Option<(Operation, Fingerprint)>,
) {
    let Some((request_ref, stored)) = answer else {
        return;
    };
    if let Some(entry) = record
        .requests
        .iter_mut()
        .find(|r| r.request_ref == request_ref)
    {
        entry.state = RequestState::Answered(stored);
    } else if let Some((operation, fingerprint)) = claim {
        record.requests.push(RequestEntry {
            request_ref: request_ref.to_owned(),
            operation,
            fingerprint,
            state: RequestState::Answered(stored),
        });
    }
}

fn key_ids_name() -> String {
    String::from_utf8_lossy(sealing::KEY_IDS)
        .trim_start_matches('\0')
        .to_owned()
}

/// The columns [`PgStore::metered_call`] reads, in its order.
const METERED_COLUMNS: &str = "at_ms, app_id, operation, request_type, provider, status,
    http_status, error, inspect, transaction_ref, amount, repeat, completed, price_currency,
    price_minor_units, price_billed, price_call_fee, price_value_fee";

#[async_trait]
impl Store for PgStore {
    fn claims_live_in(&self) -> ClaimsLiveIn {
        ClaimsLiveIn::Database
    }

    async fn begin_transaction(
        &self,
        transaction: &TransactionRecord,
    ) -> Result<Begin, StoreError> {
        self.begin(transaction).await
    }

    async fn begin_enquiry(&self, transaction: &TransactionRecord) -> Result<Begin, StoreError> {
        // Claims live here, so the record is written at once (module docs).
        self.begin(transaction).await
    }

    async fn claim_request(
        &self,
        app_id: &str,
        transaction_ref: &str,
        request: &RequestEntry,
    ) -> Result<Claim, StoreError> {
        let client = self.client().await?;
        for _ in 0..3 {
            if self
                .insert_claim(&client, app_id, transaction_ref, request)
                .await?
            {
                return Ok(Claim::Started);
            }
            if let Some(known) = self.known(&client, app_id, &request.request_ref).await? {
                return Ok(Claim::Repeat(Box::new(known)));
            }
        }
        Err(StoreError::Database(format!(
            "request_ref `{}` was claimed and abandoned three times while this call claimed it",
            request.request_ref
        )))
    }

    async fn request(
        &self,
        app_id: &str,
        request_ref: &str,
    ) -> Result<Option<KnownRequest>, StoreError> {
        let client = self.client().await?;
        self.known(&client, app_id, request_ref).await
    }

    async fn abandon(
        &self,
        app_id: &str,
        request_ref: &str,
        transaction_ref: &str,
        began_transaction: bool,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let sql = client.transaction().await.map_err(database)?;
        let record = self.locked(&sql, app_id, transaction_ref).await?;
        let began_here = record.as_ref().is_some_and(|record| {
            record.first_request().map(|r| r.request_ref.as_str()) == Some(request_ref)
        });
        // A claim its record lists was answered: it stays.
        let answered = record
            .as_ref()
            .is_some_and(|record| record.request(request_ref).is_some());
        if began_transaction && began_here {
            exec(
                &sql,
                "DELETE FROM manifold_transactions WHERE app_id = $1 AND transaction_ref = $2",
                &[&app_id, &transaction_ref],
            )
            .await?;
        }
        if (began_transaction && began_here) || (!began_transaction && !answered) {
            exec(
                &sql,
                "DELETE FROM manifold_requests
                 WHERE app_id = $1 AND request_ref = $2 AND transaction_ref = $3",
                &[&app_id, &request_ref, &transaction_ref],
            )
            .await?;
        }
        sql.commit().await.map_err(database)
    }

    async fn transaction(
        &self,
        app_id: &str,
        transaction_ref: &str,
    ) -> Result<Option<TransactionRecord>, StoreError> {
        let client = self.client().await?;
        let row = row(
            &client,
            "SELECT record FROM manifold_transactions
                 WHERE app_id = $1 AND transaction_ref = $2",
            &[&app_id, &transaction_ref],
        )
        .await?;
        row.map(|row| self.open(app_id, transaction_ref, row.get(0)))
            .transpose()
    }

    async fn update_transaction(
        &self,
        app_id: &str,
        transaction_ref: &str,
        change: Change<'_>,
        answer: Option<(&str, StoredAnswer)>,
    ) -> Result<Option<TransactionRecord>, StoreError> {
        let request_ref = answer.as_ref().map(|(request_ref, _)| *request_ref);
        let mut client = self.client().await?;
        // Optimistic first: read, change, and write back only if the row
        // still holds what was read (module docs). Two round trips and one
        // commit, where a row lock takes four.
        for _ in 0..self.optimistic_tries {
            let Some(read) = self
                .read_for_change(&client, app_id, transaction_ref, request_ref, "")
                .await?
            else {
                return Ok(None);
            };
            let mut record = read.record;
            record_answer(&mut record, answer.clone(), read.claim);
            change(&mut record);
            if self
                .store_transaction(&client, &record, Some(&read.stored))
                .await?
            {
                return Ok(Some(record));
            }
        }
        // Contended: wait for the row's lock instead.
        let sql = client.transaction().await.map_err(database)?;
        let Some(read) = self
            .read_for_change(
                &sql,
                app_id,
                transaction_ref,
                request_ref,
                "FOR UPDATE OF t",
            )
            .await?
        else {
            return Ok(None);
        };
        let mut record = read.record;
        record_answer(&mut record, answer, read.claim);
        change(&mut record);
        self.store_transaction(&sql, &record, None).await?;
        sql.commit().await.map_err(database)?;
        Ok(Some(record))
    }

    async fn meter(&self, call: &MeteredCall) -> Result<(), StoreError> {
        // Written by the queue's task, many calls per statement (`metered`).
        self.metered.push(call.clone())
    }

    async fn metered_calls(
        &self,
        app_id: &str,
        from_ms: u64,
        until_ms: u64,
    ) -> Result<Vec<MeteredCall>, StoreError> {
        let mut calls = Vec::new();
        self.each_metered(app_id, from_ms, until_ms, &mut |call| {
            calls.push(call.clone())
        })
        .await?;
        Ok(calls)
    }

    async fn each_metered(
        &self,
        app_id: &str,
        from_ms: u64,
        until_ms: u64,
        each: &mut (dyn for<'c> FnMut(&'c MeteredCall) + Send),
    ) -> Result<(), StoreError> {
        // Times beyond bigint's range hold no calls.
        let from = i64::try_from(from_ms).unwrap_or(i64::MAX);
        let until = i64::try_from(until_ms).unwrap_or(i64::MAX);
        // What this switch metered before the read is in it, as on sled.
        self.metered.drained(METERED_READ_WAIT, true).await?;
        let client = self.client().await?;
        let page = client
            .prepare_cached(&format!(
                "SELECT {METERED_COLUMNS}, id FROM manifold_metered_calls
                 WHERE app_id = $1 AND at_ms < $3 AND (at_ms, id) > ($2, $4)
                 ORDER BY at_ms, id LIMIT $5"
            ))
            .await
            .map_err(database)?;
        // Keyset pages: never the whole period in memory, and no page is
        // skipped or read twice as calls are added.
        // Ids start at 1, so `(at_ms, id) > (from, -1)` is `at_ms >= from`.
        let (mut after_ms, mut after_id) = (from, -1_i64);
        loop {
            let rows = client
                .query(
                    &page,
                    &[&app_id, &after_ms, &until, &after_id, &METERED_PAGE],
                )
                .await
                .map_err(database)?;
            for row in &rows {
                each(&Self::metered_call(row)?);
            }
            match rows.last() {
                Some(last) if rows.len() as i64 == METERED_PAGE => {
                    after_ms = last.get(0);
                    after_id = last.get(18);
                }
                _ => return Ok(()),
            }
        }
    }

    async fn drop_customer_data(
        &self,
        settled_before_ms: u64,
        now_ms: u64,
    ) -> Result<usize, StoreError> {
        let before = i64::try_from(settled_before_ms).unwrap_or(i64::MAX);
        let mut client = self.client().await?;
        let mut dropped = 0;
        loop {
            let sql = client.transaction().await.map_err(database)?;
            // SKIP LOCKED: another switch's retention (or a call) holding a
            // row is not waited for; the next run takes it.
            let rows = rows(
                &sql,
                "SELECT app_id, transaction_ref, record FROM manifold_transactions
                     WHERE settled AND NOT customer_data_dropped AND updated_at_ms <= $1
                     ORDER BY updated_at_ms LIMIT $2 FOR UPDATE SKIP LOCKED",
                &[&before, &RETENTION_BATCH],
            )
            .await?;
            for row in &rows {
                let mut record = self.open(row.get(0), row.get(1), row.get(2))?;
                // The columns are derived from the record; the record decides.
                if record.is_settled() && record.updated_at_ms <= settled_before_ms {
                    record.drop_customer_data(now_ms);
                    dropped += 1;
                }
                self.store_transaction(&sql, &record, None).await?;
            }
            sql.commit().await.map_err(database)?;
            if (rows.len() as i64) < RETENTION_BATCH {
                return Ok(dropped);
            }
        }
    }

    async fn transaction_count(&self) -> Result<usize, StoreError> {
        let client = self.client().await?;
        let count: i64 = client
            .query_one("SELECT count(*) FROM manifold_transactions", &[])
            .await
            .map_err(database)?
            .get(0);
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    async fn durable(&self) -> Result<Durable, StoreError> {
        // Every write above committed before it returned.
        Ok(Durable::after_flush())
    }
}

#[cfg(test)]
mod tests;
