//! [`SledStore`]: the embedded default [`Store`](super::Store), on sled 0.34.
//!
//! Trees: `switch/transactions` and `switch/requests`, keyed by
//! `app_id \x1f ref`; `switch/metering`, keyed by `app_id \x1f at_ms \x1f id`
//! so an app's calls in a period are one range scan. Records are JSON.
//! Durability goes through one [`GroupCommit`] shared with any in-process
//! provider that uses the same database.
//!
//! No sled transactions: each one seals and syncs sled's I/O buffer twice
//! (measured: they were most of the disk writes and half the CPU of a
//! `get_balance`; see `tests/bench/PROFILING.md`). Instead every change is a
//! sequence of single-key writes made under striped in-process locks (sled is
//! single-process), in an order whose every prefix a crash may leave is
//! harmless, because sled recovers its log in write order:
//! - begin: the claim, then the `Pending` record. A `/transact` claim found
//!   without the record it began is *void* — the record never reached disk,
//!   so neither did the pre-call flush, and the provider was never called
//!   (a `read_only` service skips that flush: calling it again is harmless)
//!   — and is treated as absent;
//! - abandon: the record, then the claim (a void claim again);
//! - update: the record, then the stored answer (a repeat meanwhile answers
//!   the record's current state, as for any unanswered claim).
//!
//! The locks live in the [`SledStore`], so open at most one per database
//! (sled itself allows one process per database).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use manifold_provider::GroupCommit;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{
    Begin, Change, Claim, ImportedTransaction, MeteredCall, Operation, RequestRecord, RequestState,
    Store, StoreError, StoredResponse, TransactionRecord,
};

const LOCK_STRIPES: usize = 1024;

pub struct SledStore {
    db: sled::Db,
    transactions: sled::Tree,
    requests: sled::Tree,
    metering: sled::Tree,
    commit: GroupCommit,
    locks: Locks,
}

/// Striped locks over the keys of both trees. Every write of a request or a
/// transaction record holds the stripes of the keys it checks and writes, so
/// a check and the write that depends on it are never interleaved. Plain
/// reads take none: each single-key write order above leaves only states a
/// reader may see.
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

fn key(app_id: &str, reference: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(app_id.len() + 1 + reference.len());
    key.extend_from_slice(app_id.as_bytes());
    key.push(0x1f);
    key.extend_from_slice(reference.as_bytes());
    key
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl From<sled::Error> for StoreError {
    fn from(error: sled::Error) -> Self {
        StoreError::Database(error.to_string())
    }
}

impl SledStore {
    /// Opens the switch's trees in `db`. `commit` must flush that same `db`.
    pub fn open(db: &sled::Db, commit: GroupCommit) -> Result<Self, StoreError> {
        Ok(SledStore {
            db: db.clone(),
            transactions: db.open_tree("switch/transactions")?,
            requests: db.open_tree("switch/requests")?,
            metering: db.open_tree("switch/metering")?,
            commit,
            locks: Locks::new(),
        })
    }

    fn read_request(&self, key: &[u8]) -> Result<Option<RequestRecord>, StoreError> {
        match self.requests.get(key)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The claim stored under `request_key`, unless it is void: a `/transact`
    /// claim whose transaction record is missing, or is another request's
    /// (see the module docs). Callers hold the key's stripe. The record is
    /// read without its stripe: its first history entry never changes, and
    /// only the claim's own holder (under this stripe) removes it.
    fn live_claim(&self, request_key: &[u8]) -> Result<Option<RequestRecord>, StoreError> {
        let Some(claim) = self.read_request(request_key)? else {
            return Ok(None);
        };
        if claim.operation != Operation::Transact
            || !matches!(claim.state, RequestState::InFlight { .. })
        {
            return Ok(Some(claim));
        }
        let begun_by_this_claim = match self
            .transactions
            .get(key(&claim.app_id, &claim.transaction_ref))?
        {
            Some(bytes) => {
                let record: TransactionRecord = decode(&bytes)?;
                // A record naming no first request is no evidence of a void claim.
                match record
                    .history
                    .first()
                    .and_then(|e| e.request_ref.as_deref())
                {
                    Some(first) => first == claim.request_ref,
                    None => true,
                }
            }
            None => false,
        };
        Ok(begun_by_this_claim.then_some(claim))
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }

    /// Writes answered transactions in bulk, one sled batch per tree, with
    /// the same keys and encoding the request path uses. For loading data
    /// (benchmarks, migrations), not for serving: unlike `begin_transaction`
    /// it does not check whether a ref is taken, and it is atomic per tree,
    /// not across trees. The records are durable after the next
    /// [`Store::durable`].
    pub fn import(&self, transactions: &[ImportedTransaction]) -> Result<(), StoreError> {
        let mut requests = sled::Batch::default();
        let mut records = sled::Batch::default();
        let mut calls = sled::Batch::default();
        for imported in transactions {
            requests.insert(
                key(&imported.request.app_id, &imported.request.request_ref),
                encode(&imported.request)?,
            );
            records.insert(
                key(
                    &imported.transaction.app_id,
                    &imported.transaction.transaction_ref,
                ),
                encode(&imported.transaction)?,
            );
            calls.insert(self.meter_key(&imported.call)?, encode(&imported.call)?);
        }
        self.requests.apply_batch(requests)?;
        self.transactions.apply_batch(records)?;
        self.metering.apply_batch(calls)?;
        Ok(())
    }

    fn meter_key(&self, call: &MeteredCall) -> Result<Vec<u8>, StoreError> {
        let mut meter_key = key(&call.app_id, "");
        meter_key.extend_from_slice(&call.at_ms.to_be_bytes());
        meter_key.push(0x1f);
        // Unique even when many calls share a millisecond.
        meter_key.extend_from_slice(&self.db.generate_id()?.to_be_bytes());
        Ok(meter_key)
    }
}

#[async_trait]
impl Store for SledStore {
    async fn begin_transaction(
        &self,
        request: &RequestRecord,
        transaction: &TransactionRecord,
    ) -> Result<Begin, StoreError> {
        let request_key = key(&request.app_id, &request.request_ref);
        let transaction_key = key(&transaction.app_id, &transaction.transaction_ref);
        let request_bytes = encode(request)?;
        let transaction_bytes = encode(transaction)?;
        let _held = self.locks.hold(&[&request_key, &transaction_key]);
        if let Some(existing) = self.live_claim(&request_key)? {
            return Ok(Begin::Repeat(existing));
        }
        if self.transactions.contains_key(&transaction_key)? {
            return Ok(Begin::TransactionRefTaken);
        }
        // The claim first: alone after a crash, it is void.
        self.requests.insert(request_key, request_bytes)?;
        self.transactions
            .insert(transaction_key, transaction_bytes)?;
        Ok(Begin::Started)
    }

    async fn claim_request(&self, request: &RequestRecord) -> Result<Claim, StoreError> {
        let request_key = key(&request.app_id, &request.request_ref);
        let bytes = encode(request)?;
        let _held = self.locks.hold(&[&request_key]);
        if let Some(existing) = self.live_claim(&request_key)? {
            return Ok(Claim::Repeat(existing));
        }
        self.requests.insert(request_key, bytes)?;
        Ok(Claim::Started)
    }

    async fn request(
        &self,
        app_id: &str,
        request_ref: &str,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let request_key = key(app_id, request_ref);
        let _held = self.locks.hold(&[&request_key]);
        self.live_claim(&request_key)
    }

    async fn abandon(
        &self,
        app_id: &str,
        request_ref: &str,
        transaction_ref: Option<&str>,
    ) -> Result<(), StoreError> {
        let request_key = key(app_id, request_ref);
        let transaction_key = transaction_ref.map(|reference| key(app_id, reference));
        let mut keys: Vec<&[u8]> = vec![&request_key];
        keys.extend(transaction_key.as_deref());
        let _held = self.locks.hold(&keys);
        // The record first: a claim left alone by a crash is void.
        if let Some(transaction_key) = &transaction_key {
            self.transactions.remove(transaction_key)?;
        }
        self.requests.remove(&request_key)?;
        Ok(())
    }

    async fn transaction(
        &self,
        app_id: &str,
        transaction_ref: &str,
    ) -> Result<Option<TransactionRecord>, StoreError> {
        match self.transactions.get(key(app_id, transaction_ref))? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    async fn update_transaction(
        &self,
        app_id: &str,
        transaction_ref: &str,
        change: Change<'_>,
        answer: Option<(&str, &StoredResponse)>,
    ) -> Result<Option<TransactionRecord>, StoreError> {
        let transaction_key = key(app_id, transaction_ref);
        let answer_key = answer.map(|(request_ref, _)| key(app_id, request_ref));
        let mut keys: Vec<&[u8]> = vec![&transaction_key];
        keys.extend(answer_key.as_deref());
        let _held = self.locks.hold(&keys);
        let Some(bytes) = self.transactions.get(&transaction_key)? else {
            return Ok(None);
        };
        let mut record: TransactionRecord = decode(&bytes)?;
        change(&mut record);
        // The record before the answer: a repeat in between answers the
        // record's current state, which is this answer's state.
        self.transactions
            .insert(transaction_key.as_slice(), encode(&record)?)?;
        if let (Some(answer_key), Some((_, response))) = (&answer_key, answer) {
            if let Some(mut request) = self.read_request(answer_key)? {
                request.state = RequestState::Answered(response.clone());
                self.requests
                    .insert(answer_key.as_slice(), encode(&request)?)?;
            }
        }
        Ok(Some(record))
    }

    async fn meter(&self, call: &MeteredCall) -> Result<(), StoreError> {
        self.metering.insert(self.meter_key(call)?, encode(call)?)?;
        Ok(())
    }

    async fn metered_calls(
        &self,
        app_id: &str,
        from_ms: u64,
        until_ms: u64,
    ) -> Result<Vec<MeteredCall>, StoreError> {
        let mut start = key(app_id, "");
        start.extend_from_slice(&from_ms.to_be_bytes());
        let mut end = key(app_id, "");
        end.extend_from_slice(&until_ms.to_be_bytes());
        self.metering
            .range(start..end)
            .map(|entry| {
                let (_, bytes) = entry?;
                decode(&bytes)
            })
            .collect()
    }

    async fn transaction_count(&self) -> Result<usize, StoreError> {
        Ok(self.transactions.len())
    }

    async fn durable(&self) -> Result<(), StoreError> {
        self.commit
            .durable()
            .await
            .map_err(|error| StoreError::NotDurable(error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{HistoryEntry, Operation};
    use manifold_provider::Status;

    fn imported(n: u64) -> ImportedTransaction {
        let transaction_ref = format!("t-{n}");
        let request_ref = format!("r-{n}");
        ImportedTransaction {
            request: RequestRecord {
                app_id: "app".into(),
                request_ref: request_ref.clone(),
                operation: Operation::Transact,
                transaction_ref: transaction_ref.clone(),
                fingerprint: format!("{n:064x}"),
                state: RequestState::Answered(StoredResponse {
                    http_status: 200,
                    body: format!("{{\"n\":{n}}}"),
                }),
            },
            transaction: TransactionRecord {
                app_id: "app".into(),
                transaction_ref,
                request_type: "get_balance".into(),
                provider: "demo".into(),
                amount: 0,
                status: Status::Successful,
                created_at_ms: 1_000 + n,
                updated_at_ms: 1_001 + n,
                last_reply: None,
                history: vec![HistoryEntry {
                    at_ms: 1_000 + n,
                    operation: Operation::Transact,
                    request_ref: Some(request_ref),
                    status: Status::Pending,
                    provider_response_code: None,
                    message: "Received; sent to the provider".into(),
                }],
                reversal: None,
            },
            call: MeteredCall {
                // Several calls in one millisecond must all be kept.
                at_ms: 5_000,
                app_id: "app".into(),
                operation: Operation::Transact,
                request_type: Some("get_balance".into()),
                provider: Some("demo".into()),
                status: Status::Successful,
                http_status: 200,
                error: None,
                inspect: false,
            },
        }
    }

    #[tokio::test]
    async fn imported_transactions_read_back_as_if_served_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let store = SledStore::open(&db, GroupCommit::start(db.clone()).unwrap()).unwrap();
            let batch: Vec<_> = (0..3).map(imported).collect();
            store.import(&batch).unwrap();
            store.durable().await.unwrap();

            assert_eq!(store.transaction_count().await.unwrap(), 3);
            assert_eq!(
                store.transaction("app", "t-1").await.unwrap(),
                Some(batch[1].transaction.clone())
            );
            assert_eq!(
                store.request("app", "r-2").await.unwrap(),
                Some(batch[2].request.clone())
            );
            assert_eq!(
                store.metered_calls("app", 0, 10_000).await.unwrap().len(),
                3
            );
            // A repeat of an imported request_ref is a repeat, as for a served one.
            let again = batch[0].clone();
            assert!(matches!(
                store
                    .begin_transaction(&again.request, &again.transaction)
                    .await
                    .unwrap(),
                Begin::Repeat(_)
            ));
        }
        // The flusher thread releases the database shortly after the store drops.
        let db = (0..100)
            .find_map(|_| {
                sled::open(dir.path())
                    .map_err(|_| std::thread::sleep(std::time::Duration::from_millis(20)))
                    .ok()
            })
            .expect("the database reopens");
        assert_eq!(db.open_tree("switch/transactions").unwrap().len(), 3);
    }

    fn in_flight(transaction: &ImportedTransaction) -> RequestRecord {
        RequestRecord {
            state: RequestState::InFlight { started_at_ms: 1 },
            ..transaction.request.clone()
        }
    }

    fn open_store(dir: &std::path::Path) -> SledStore {
        let db = sled::open(dir).unwrap();
        SledStore::open(&db, GroupCommit::start(db.clone()).unwrap()).unwrap()
    }

    /// The states a crash can leave between the single-key writes of one
    /// step, written directly, and what the store makes of them.
    #[tokio::test]
    async fn a_claim_a_crash_left_without_its_record_is_void() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let first = imported(1);
        let claim = in_flight(&first);

        // begin_transaction's first write alone: the claim, no record.
        store
            .requests
            .insert(key("app", "r-1"), encode(&claim).unwrap())
            .unwrap();
        assert_eq!(store.request("app", "r-1").await.unwrap(), None);
        assert_eq!(
            store
                .begin_transaction(&claim, &first.transaction)
                .await
                .unwrap(),
            Begin::Started,
            "a retry of a void claim starts afresh"
        );
        assert_eq!(
            store.request("app", "r-1").await.unwrap(),
            Some(claim.clone())
        );
        assert!(matches!(
            store
                .begin_transaction(&claim, &first.transaction)
                .await
                .unwrap(),
            Begin::Repeat(_)
        ));

        // A void claim whose transaction_ref another request took since.
        let mut other = imported(2);
        other.request.request_ref = "r-other".into();
        other.transaction.transaction_ref = "t-shared".into();
        other.transaction.history[0].request_ref = Some("r-other".into());
        let mut stale = in_flight(&imported(3));
        stale.transaction_ref = "t-shared".into();
        store
            .requests
            .insert(key("app", "r-3"), encode(&stale).unwrap())
            .unwrap();
        assert_eq!(
            store
                .begin_transaction(&in_flight(&other), &other.transaction)
                .await
                .unwrap(),
            Begin::Started
        );
        assert_eq!(
            store.request("app", "r-3").await.unwrap(),
            None,
            "a claim is never answered with another request's transaction"
        );
        assert_eq!(
            store.claim_request(&stale).await.unwrap(),
            Claim::Started,
            "and it may be claimed again"
        );

        // abandon's first write alone: the record gone, the claim left.
        store.transactions.remove(key("app", "t-1")).unwrap();
        assert_eq!(store.request("app", "r-1").await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_update_a_crash_cut_short_answers_the_new_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let first = imported(1);
        let claim = in_flight(&first);
        store
            .begin_transaction(&claim, &first.transaction)
            .await
            .unwrap();
        let answer = StoredResponse {
            http_status: 200,
            body: "{}".into(),
        };
        let succeed = |record: &mut TransactionRecord| record.status = Status::Successful;
        let updated = store
            .update_transaction("app", "t-1", &succeed, Some(("r-1", &answer)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(updated.status, Status::Successful);
        let answered = store.request("app", "r-1").await.unwrap().unwrap();
        assert_eq!(answered.state, RequestState::Answered(answer));

        // The record's write alone: the claim still in flight, but live, so a
        // repeat is a repeat (and the engine describes the record).
        store
            .requests
            .insert(key("app", "r-1"), encode(&claim).unwrap())
            .unwrap();
        assert_eq!(store.request("app", "r-1").await.unwrap(), Some(claim));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_begins_of_one_transaction_ref_start_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(open_store(dir.path()));
        let tasks: Vec<_> = (0..16)
            .map(|n| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut attempt = imported(n);
                    attempt.transaction.transaction_ref = "t-contested".into();
                    attempt.request.transaction_ref = "t-contested".into();
                    store
                        .begin_transaction(&in_flight(&attempt), &attempt.transaction)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut started = 0;
        for task in tasks {
            match task.await.unwrap() {
                Begin::Started => started += 1,
                Begin::TransactionRefTaken => {}
                Begin::Repeat(_) => panic!("every request_ref differs"),
            }
        }
        assert_eq!(started, 1);
    }
}
