//! [`SledStore`]: the embedded default [`Store`](super::Store), on sled 0.34.
//!
//! Trees: `switch/transactions` and `switch/requests`, keyed by
//! `app_id \x1f ref`; `switch/metering`, keyed by `app_id \x1f at_ms \x1f id`
//! so an app's calls in a period are one range scan. Records are JSON.
//! Durability goes through one [`GroupCommit`] shared with any in-process
//! provider that uses the same database.

use async_trait::async_trait;
use manifold_provider::GroupCommit;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use super::RequestState;
use super::{
    Begin, Change, Claim, ImportedTransaction, MeteredCall, RequestRecord, Store, StoreError,
    StoredResponse, TransactionRecord,
};

pub struct SledStore {
    db: sled::Db,
    transactions: sled::Tree,
    requests: sled::Tree,
    metering: sled::Tree,
    commit: GroupCommit,
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

fn abort(error: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(error)
}

fn flatten<T>(result: Result<T, TransactionError<StoreError>>) -> Result<T, StoreError> {
    match result {
        Ok(value) => Ok(value),
        Err(TransactionError::Abort(error)) => Err(error),
        Err(TransactionError::Storage(error)) => Err(error.into()),
    }
}

fn read_request(
    tree: &TransactionalTree,
    key: &[u8],
) -> Result<Option<RequestRecord>, ConflictableTransactionError<StoreError>> {
    match tree.get(key)? {
        Some(bytes) => decode(&bytes).map(Some).map_err(abort),
        None => Ok(None),
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
        })
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
        flatten(
            (&self.requests, &self.transactions).transaction(|(requests, transactions)| {
                if let Some(existing) = read_request(requests, &request_key)? {
                    return Ok(Begin::Repeat(existing));
                }
                if transactions.get(&transaction_key)?.is_some() {
                    return Ok(Begin::TransactionRefTaken);
                }
                requests.insert(request_key.as_slice(), request_bytes.as_slice())?;
                transactions.insert(transaction_key.as_slice(), transaction_bytes.as_slice())?;
                Ok(Begin::Started)
            }),
        )
    }

    async fn claim_request(&self, request: &RequestRecord) -> Result<Claim, StoreError> {
        let request_key = key(&request.app_id, &request.request_ref);
        let swapped = self.requests.compare_and_swap(
            &request_key,
            None as Option<&[u8]>,
            Some(encode(request)?),
        )?;
        match swapped {
            Ok(()) => Ok(Claim::Started),
            Err(conflict) => {
                let current = conflict
                    .current
                    .ok_or_else(|| StoreError::Corrupt("a conflicting request vanished".into()))?;
                Ok(Claim::Repeat(decode(&current)?))
            }
        }
    }

    async fn request(
        &self,
        app_id: &str,
        request_ref: &str,
    ) -> Result<Option<RequestRecord>, StoreError> {
        match self.requests.get(key(app_id, request_ref))? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    async fn abandon(
        &self,
        app_id: &str,
        request_ref: &str,
        transaction_ref: Option<&str>,
    ) -> Result<(), StoreError> {
        let request_key = key(app_id, request_ref);
        let transaction_key = transaction_ref.map(|reference| key(app_id, reference));
        flatten(
            (&self.requests, &self.transactions).transaction(|(requests, transactions)| {
                requests.remove(request_key.as_slice())?;
                if let Some(transaction_key) = &transaction_key {
                    transactions.remove(transaction_key.as_slice())?;
                }
                Ok(())
            }),
        )
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
        flatten(
            (&self.requests, &self.transactions).transaction(|(requests, transactions)| {
                let Some(bytes) = transactions.get(&transaction_key)? else {
                    return Ok(None);
                };
                let mut record: TransactionRecord = decode(&bytes).map_err(abort)?;
                change(&mut record);
                transactions.insert(transaction_key.as_slice(), encode(&record).map_err(abort)?)?;
                if let (Some(answer_key), Some((_, response))) = (&answer_key, answer) {
                    if let Some(mut request) = read_request(requests, answer_key)? {
                        request.state = RequestState::Answered(response.clone());
                        requests.insert(answer_key.as_slice(), encode(&request).map_err(abort)?)?;
                    }
                }
                Ok(Some(record))
            }),
        )
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
}
