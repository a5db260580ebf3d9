//! Filling a switch's store with a million realistic transactions, fast.
//!
//! Realistic means: the same records, in the same shape and size, that one
//! `get_balance` leaves in the store — the transaction with its history and
//! its answered request, the `request_ref`'s pointer, and the metered call. Rather than writing such records by hand,
//! [`preload`] serves one real `get_balance` through the real switch, reads
//! back what the switch stored, and imports copies of it that differ in
//! their refs, fingerprints and times, through [`SledStore::import`] in large
//! batches. The refs ascend, as those of an app that numbers its requests
//! do; the requests measured afterwards carry refs of their own, so where
//! they land in the tree does not depend on this order, but loading in key
//! order keeps the preload fast (sled appends to its rightmost leaves).
//!
//! Not loaded: the in-process demo provider's own trees (its outcomes and
//! accounts); the growth figure is about the switch's store.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use manifold_config::SwitchConfig;
use manifold_provider::ProviderReply;
use manifold_switch::store::{ImportedTransaction, RequestState, SledStore, Store};
use manifold_switch::Switch;
use serde::Serialize;

use crate::connection::Connection;
use crate::process::disk_usage;
use crate::serve::{io_error, ServeError};
use crate::workload::{Caller, Workload, QUICK_APP};

/// What a preload did, printed by the child as one JSON line.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct PreloadReport {
    pub imported: u64,
    pub seconds: f64,
    /// Allocated bytes of the store directory before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Postcard-encoded sizes of the template's records
    /// (`SledStore::encoded_sizes`): its request pointer(s), key and value,
    /// one per request of the transaction;
    pub request_record_bytes: usize,
    /// the transaction record (with its answered requests), key and value;
    pub transaction_record_bytes: usize,
    /// one metered call inside a batch (the batch's key and header, shared
    /// by all its calls, not counted).
    pub metered_call_bytes: usize,
}

/// How many transactions one `import` call writes.
const BATCH: u64 = 20_000;

/// A cheap bijective mix (splitmix64's finalizer): distinct inputs give
/// distinct, evenly spread outputs.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The template transaction re-keyed as copy number `n`, `age_ms` older.
pub fn copy_of(template: &ImportedTransaction, n: u64, age_ms: u64) -> ImportedTransaction {
    let request_ref = format!("pre-{n:010}");
    let transaction_ref = format!("pre-{n:010}-t");
    let old_transaction_ref = &template.transaction.transaction_ref;
    let mut copy = template.clone();

    let shift = |at: u64| at.saturating_sub(age_ms);
    let record = &mut copy.transaction;
    record.transaction_ref.clone_from(&transaction_ref);
    record.created_at_ms = shift(record.created_at_ms);
    record.updated_at_ms = shift(record.updated_at_ms);
    for entry in &mut record.history {
        entry.at_ms = shift(entry.at_ms);
        entry.request_ref = Some(request_ref.clone());
    }
    let rekey = |reply: &mut ProviderReply| {
        if let Some(reference) = reply
            .provider_response
            .as_mut()
            .and_then(|response| response.get_mut("reference"))
        {
            if let Some(text) = reference.as_str() {
                *reference = text.replace(old_transaction_ref, &transaction_ref).into();
            }
        }
    };
    for (index, request) in record.requests.iter_mut().enumerate() {
        request.request_ref.clone_from(&request_ref);
        let mut fingerprint = [0u8; 32];
        for (lane, chunk) in fingerprint.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&mix(n ^ ((lane as u64 + 1) << 60) ^ index as u64).to_be_bytes());
        }
        request.fingerprint = fingerprint;
        if let RequestState::Answered(stored) = &mut request.state {
            rekey(&mut stored.reply);
        }
    }
    if let Some(reply) = record.last_reply.as_mut() {
        rekey(reply);
    }
    copy.call.at_ms = shift(copy.call.at_ms);
    if copy.call.transaction_ref.is_some() {
        copy.call.transaction_ref = Some(transaction_ref);
    }
    copy
}

fn store_error(error: impl std::fmt::Display) -> ServeError {
    ServeError::Store(error.to_string())
}

/// Serves one real `get_balance` through the switch of `config` and returns
/// the records it left behind.
async fn template(switch: Switch) -> Result<ImportedTransaction, ServeError> {
    let store = switch.store().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io_error("binding 127.0.0.1:0"))?;
    let addr = listener
        .local_addr()
        .map_err(io_error("reading the bound address"))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(switch.serve(listener, async move {
        let _ = stopped.await;
    }));
    let prefix = format!("template-{:08x}", mix(u64::from(std::process::id())) as u32);
    let workload = Workload::Balance {
        caller: Caller::new(QUICK_APP),
        prefix: prefix.clone(),
    };
    let mut connection = Connection::open(addr)
        .await
        .map_err(|e| ServeError::Store(e.to_string()))?;
    let mut recorder = Default::default();
    let served = workload
        .iteration(0, &mut connection, None, &mut recorder)
        .await;
    drop(connection);
    let _ = stop.send(());
    let _ = server.await;
    served.map_err(|e| ServeError::Store(format!("the template request failed: {e}")))?;

    let request_ref = crate::workload::request_ref(&prefix, 0);
    let transaction_ref = crate::workload::transaction_ref(&prefix, 0);
    let missing = |what: &str| ServeError::Store(format!("the template's {what} was not stored"));
    store
        .request(QUICK_APP.id, &request_ref)
        .await
        .map_err(store_error)?
        .ok_or_else(|| missing("request"))?;
    let transaction = store
        .transaction(QUICK_APP.id, &transaction_ref)
        .await
        .map_err(store_error)?
        .ok_or_else(|| missing("transaction"))?;
    let call = store
        .metered_calls(QUICK_APP.id, 0, u64::MAX)
        .await
        .map_err(store_error)?
        .pop()
        .ok_or_else(|| missing("metered call"))?;
    Ok(ImportedTransaction { transaction, call })
}

/// Loads `count` copies of a real `get_balance` into the store of the switch
/// configured in `config_path`; the switch must not be running.
pub async fn preload(config_path: &Path, count: u64) -> Result<PreloadReport, ServeError> {
    let config = SwitchConfig::load(config_path)?;
    let switch = Switch::open_with_registry(
        &config,
        &manifold_cli::compiled_providers(),
        Default::default(),
    )
    .await?;
    let store: Arc<SledStore> = switch
        .sled_store()
        .cloned()
        .ok_or_else(|| ServeError::Store("the preload needs the sled backend".into()))?;
    let template = template(switch).await?;
    store.durable().await.map_err(store_error)?;
    let bytes_before = disk_usage(&config.storage.path);

    let started = Instant::now();
    let importer = store.clone();
    let report_sizes = SledStore::encoded_sizes(&template).map_err(store_error)?;
    tokio::task::spawn_blocking(move || -> Result<(), ServeError> {
        // Two importers, one per core, each on its own half of the refs:
        // building and encoding the records costs as much as sled's writes.
        let half = count / 2;
        std::thread::scope(|scope| {
            let workers: Vec<_> = [(0, half), (half, count)]
                .into_iter()
                .map(|(from, to)| {
                    let template = &template;
                    let importer = &importer;
                    scope.spawn(move || import_range(importer, template, from, to, count))
                })
                .collect();
            workers.into_iter().try_for_each(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|_| Err(ServeError::Store("an importer panicked".into())))
            })
        })
    })
    .await
    .map_err(|e| ServeError::Store(e.to_string()))??;
    // Durable, and in sled: the size measured is the store's, not the
    // journal's backlog.
    store.settle().await.map_err(store_error)?;
    let seconds = started.elapsed().as_secs_f64();
    checkpointed(&store).await;
    Ok(PreloadReport {
        imported: count,
        seconds,
        bytes_before,
        bytes_after: disk_usage(&config.storage.path),
        request_record_bytes: report_sizes.pointer,
        transaction_record_bytes: report_sizes.transaction,
        metered_call_bytes: report_sizes.metered_call,
    })
}

/// Waits (two minutes at most) until `store`'s journal has no closed
/// segment left to checkpoint: until then the store's directory counts its
/// records twice (in the segment and in sled).
async fn checkpointed(store: &SledStore) {
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    while store.checkpoints_pending() > 0 {
        if Instant::now() >= deadline {
            eprintln!(
                "manifold-bench: {} journal segments are still not checkpointed after 2 \
                 minutes; the size measured counts them",
                store.checkpoints_pending()
            );
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Imports copies `from..to` of `template`, oldest first: copy `n` is
/// `(count - n) * 10` ms older than the template, so the last one is now.
fn import_range(
    store: &SledStore,
    template: &ImportedTransaction,
    from: u64,
    to: u64,
    count: u64,
) -> Result<(), ServeError> {
    let mut batch = Vec::with_capacity(BATCH as usize);
    let mut n = from;
    while n < to {
        batch.clear();
        let end = (n + BATCH).min(to);
        batch.extend((n..end).map(|i| copy_of(template, i, (count - i) * 10)));
        store.import(&batch).map_err(store_error)?;
        n = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use manifold_provider::Status;
    use manifold_switch::store::{
        HistoryEntry, MeteredCall, Operation, RequestEntry, StoredAnswer, TransactionRecord,
    };
    use serde_json::json;
    use std::collections::HashSet;

    fn template() -> ImportedTransaction {
        let reply = ProviderReply::new(
            Status::Successful,
            "00",
            "Transaction processed successfully",
        )
        .with_response(json!({"reference": "DEMO-tmpl-t0", "account_number": "******0001"}));
        ImportedTransaction {
            transaction: TransactionRecord {
                app_id: "quick".into(),
                transaction_ref: "tmpl-t0".into(),
                request_type: "get_balance".into(),
                provider: "demo".into(),
                amount: 0,
                status: Status::Successful,
                created_at_ms: 1_000_000,
                updated_at_ms: 1_000_005,
                last_reply: Some(reply.clone()),
                history: vec![HistoryEntry {
                    at_ms: 1_000_000,
                    operation: Operation::Transact,
                    request_ref: Some("tmpl-0".into()),
                    status: Status::Successful,
                    provider_response_code: Some("00".into()),
                    message: "Transaction processed successfully".into(),
                }],
                reversal: None,
                customer_data_dropped_at_ms: None,
                requests: vec![RequestEntry {
                    request_ref: "tmpl-0".into(),
                    operation: Operation::Transact,
                    fingerprint: [0xab; 32],
                    state: RequestState::Answered(StoredAnswer {
                        http_status: 200,
                        reply,
                    }),
                }],
            },
            call: MeteredCall {
                at_ms: 1_000_005,
                app_id: "quick".into(),
                operation: Operation::Transact,
                request_type: Some("get_balance".into()),
                provider: Some("demo".into()),
                status: Status::Successful,
                http_status: 200,
                error: None,
                inspect: false,
                transaction_ref: None,
                amount: None,
                repeat: false,
                completed: false,
                price: None,
            },
        }
    }

    fn reference(reply: &ProviderReply) -> &serde_json::Value {
        &reply.provider_response.as_ref().unwrap()["reference"]
    }

    #[test]
    fn copies_are_rekeyed_consistently_and_keep_their_shape() {
        let template = template();
        let copy = copy_of(&template, 7, 500);
        let record = &copy.transaction;
        let transaction_ref = &record.transaction_ref;
        assert_ne!(transaction_ref, &template.transaction.transaction_ref);
        let request = &record.requests[0];
        assert_eq!(
            record.history[0].request_ref.as_deref(),
            Some(request.request_ref.as_str())
        );
        let RequestState::Answered(stored) = &request.state else {
            panic!("the copy is answered like the template");
        };
        let expected = json!(format!("DEMO-{transaction_ref}"));
        assert_eq!(reference(&stored.reply), &expected);
        assert_eq!(reference(record.last_reply.as_ref().unwrap()), &expected);
        assert_eq!(record.created_at_ms, 999_500);
        assert_eq!(copy.call.at_ms, 999_505);
        // Same shape, so (almost exactly) the same size as what the switch wrote.
        let size = |t: &ImportedTransaction| SledStore::encoded_sizes(t).unwrap().transaction;
        assert!(size(&copy).abs_diff(size(&template)) < 40);
    }

    #[test]
    fn refs_and_fingerprints_never_collide() {
        let template = template();
        let copies: Vec<_> = (0..10_000).map(|n| copy_of(&template, n, 0)).collect();
        let refs: HashSet<_> = copies
            .iter()
            .map(|c| c.transaction.requests[0].request_ref.clone())
            .collect();
        let fingerprints: HashSet<_> = copies
            .iter()
            .map(|c| c.transaction.requests[0].fingerprint)
            .collect();
        assert_eq!(refs.len(), copies.len());
        assert_eq!(fingerprints.len(), copies.len());
    }
}
