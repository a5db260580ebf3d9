//! One behaviour suite for every [`Store`]: each case below runs on sled and
//! on PostgreSQL, so the two backends keep the same promises. PostgreSQL
//! cases need a server (`MANIFOLD_TEST_POSTGRES`, see the
//! `manifold-test-postgres` crate); without one they skip, loudly.
//!
//! The fixtures here are shared with each backend's own tests, which cover
//! what only that backend has (sled's journal and batches, PostgreSQL's
//! schema and constraints).

use std::any::Any;
use std::path::Path;
use std::sync::Arc;

use manifold_crypto::DataKeys;
use manifold_provider::{GroupCommit, ProviderReply, Status};
use manifold_test_postgres::TestDatabase;

use super::{
    Begin, Claim, ClaimsLiveIn, HistoryEntry, KnownRequest, MeteredCall, Operation, PgStore,
    PostgresOptions, RequestEntry, RequestState, SledStore, Store, StoreOptions, StoredAnswer,
    TransactionRecord, RECEIVED,
};

pub(super) fn answer(n: u64) -> StoredAnswer {
    StoredAnswer {
        http_status: 200,
        reply: ProviderReply::new(Status::Successful, "00", format!("answer {n}")),
    }
}

pub(super) fn transaction(n: u64, state: RequestState) -> TransactionRecord {
    let request_ref = format!("r-{n}");
    TransactionRecord {
        app_id: "app".into(),
        transaction_ref: format!("t-{n}"),
        request_type: "get_balance".into(),
        provider: "demo".into(),
        amount: 0,
        status: Status::Pending,
        created_at_ms: 1_000 + n,
        updated_at_ms: 1_000 + n,
        last_reply: None,
        history: vec![HistoryEntry {
            at_ms: 1_000 + n,
            operation: Operation::Transact,
            request_ref: Some(request_ref.clone()),
            status: Status::Pending,
            provider_response_code: None,
            message: RECEIVED.into(),
        }],
        reversal: None,
        customer_data_dropped_at_ms: None,
        requests: vec![RequestEntry {
            request_ref,
            operation: Operation::Transact,
            fingerprint: [n as u8; 32],
            state,
        }],
    }
}

pub(super) fn in_flight(n: u64) -> TransactionRecord {
    transaction(n, RequestState::InFlight { started_at_ms: 1 })
}

/// A `/transact/validate` claimed as `request_ref`, in flight.
pub(super) fn validation(request_ref: &str) -> RequestEntry {
    RequestEntry {
        request_ref: request_ref.into(),
        operation: Operation::Validate,
        fingerprint: [9; 32],
        state: RequestState::InFlight { started_at_ms: 2 },
    }
}

pub(crate) fn call(at_ms: u64) -> MeteredCall {
    MeteredCall {
        at_ms,
        app_id: "app".into(),
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
    }
}

pub(super) fn recorded(known: Option<KnownRequest>) -> (RequestEntry, TransactionRecord) {
    match known {
        Some(KnownRequest::Recorded {
            request,
            transaction,
        }) => (request, transaction),
        other => panic!("expected a recorded request, found {other:?}"),
    }
}

/// A settled transaction whose answer carries customer data.
pub(super) fn settled_with_customer_data(n: u64) -> TransactionRecord {
    let mut record = in_flight(n);
    record.status = Status::Successful;
    let mut reply = ProviderReply::new(Status::Successful, "00", "Balance of 0123456789");
    reply.provider_response =
        Some(serde_json::json!({"account": "0123456789", "phone": "2348022000008"}));
    record.requests[0].state = RequestState::Answered(StoredAnswer {
        http_status: 200,
        reply: reply.clone(),
    });
    record.last_reply = Some(reply);
    record
}

/// Begins transaction `n` and settles it as [`settled_with_customer_data`].
pub(super) async fn record_settled(store: &dyn Store, n: u64) {
    let record = settled_with_customer_data(n);
    assert_eq!(
        store.begin_transaction(&in_flight(n)).await.unwrap(),
        Begin::Started
    );
    let settled = record.clone();
    let answer = match &record.requests[0].state {
        RequestState::Answered(answer) => answer.clone(),
        _ => unreachable!(),
    };
    store
        .update_transaction(
            "app",
            &record.transaction_ref,
            &move |r: &mut TransactionRecord| {
                r.status = settled.status;
                r.last_reply = settled.last_reply.clone();
            },
            Some((&record.requests[0].request_ref, answer)),
        )
        .await
        .unwrap();
    store.durable().await.unwrap();
}

pub(super) fn data_keys(current: (&str, u8), previous: &[(&str, u8)]) -> Arc<DataKeys> {
    let key = |(id, byte): (&str, u8)| {
        manifold_crypto::DataKey::from_hex(
            id,
            &manifold_crypto::SecretString::new(hex::encode([byte; 32])),
        )
        .unwrap()
    };
    Arc::new(DataKeys::new(key(current), previous.iter().copied().map(key).collect()).unwrap())
}

/// A store for one case, and what must outlive it (its directory or
/// database).
pub(super) struct Backend {
    pub store: Arc<dyn Store>,
    _keep: Box<dyn Any + Send>,
}

fn open_sled(dir: &Path) -> SledStore {
    let options = StoreOptions {
        data_keys: Some(data_keys(("k", 1), &[])),
        ..StoreOptions::default()
    };
    let db = SledStore::open_db(dir, &options).unwrap();
    let commit = GroupCommit::start(db.clone()).unwrap();
    SledStore::open(dir, &db, commit, &options).unwrap()
}

pub(super) fn on_sled() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let store = open_sled(dir.path());
    Backend {
        store: Arc::new(store),
        _keep: Box::new(dir),
    }
}

/// The PostgreSQL store's options for `database`, sealing with the same key
/// as the sled cases.
pub(super) fn postgres_options(database: &TestDatabase) -> PostgresOptions {
    PostgresOptions {
        url: database.url().to_owned(),
        pool_size: 8,
        statement_timeout: std::time::Duration::from_secs(10),
        connect_timeout: std::time::Duration::from_secs(10),
        ca_file: None,
        insecure_plaintext: false,
        data_keys: Some(data_keys(("k", 1), &[])),
    }
}

pub(super) async fn on_postgres(test: &str) -> Option<Backend> {
    let database = TestDatabase::create(test).await?;
    let store = PgStore::connect(&postgres_options(&database))
        .await
        .unwrap_or_else(|error| panic!("connecting the store: {error}"));
    Some(Backend {
        store: Arc::new(store),
        _keep: Box::new(database),
    })
}

/// Runs each named case, an `async fn(Arc<dyn Store>)`, on both backends:
/// `case::sled` and `case::postgres`.
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        $(
            mod $case {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sled() {
                    let backend = super::on_sled();
                    super::$case(backend.store.clone()).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    if let Some(backend) = super::on_postgres(stringify!($case)).await {
                        super::$case(backend.store.clone()).await;
                    }
                }
            }
        )*
    };
}

on_both_backends!(
    a_transaction_and_its_first_request_are_claimed_together,
    a_repeat_is_told_from_a_taken_transaction_ref,
    concurrent_begins_of_one_request_ref_start_it_once,
    concurrent_begins_of_one_transaction_ref_start_it_once,
    a_validation_is_recorded_in_its_transaction_when_answered,
    an_abandoned_transaction_leaves_nothing_and_may_be_retried,
    an_enquiry_is_claimed_and_recorded_with_its_answer,
    an_answer_is_recorded_only_for_a_claim_of_its_transaction,
    metered_calls_are_found_by_period_exactly,
    a_long_period_of_metered_calls_is_handed_over_whole,
    retention_drops_customer_data_of_settled_transactions_only,
    an_update_applies_to_the_record_as_stored_now,
);

async fn a_transaction_and_its_first_request_are_claimed_together(store: Arc<dyn Store>) {
    assert_eq!(store.request("app", "r-1").await.unwrap(), None);
    assert_eq!(store.transaction("app", "t-1").await.unwrap(), None);
    assert_eq!(
        store.begin_transaction(&in_flight(1)).await.unwrap(),
        Begin::Started
    );
    store.durable().await.unwrap();
    let (request, transaction) = recorded(store.request("app", "r-1").await.unwrap());
    assert_eq!(request.state, RequestState::InFlight { started_at_ms: 1 });
    assert_eq!(transaction, in_flight(1));
    assert_eq!(
        store.transaction("app", "t-1").await.unwrap(),
        Some(in_flight(1))
    );
    assert_eq!(store.transaction_count().await.unwrap(), 1);
    // Another app's refs are its own.
    let mut other = in_flight(1);
    other.app_id = "other".into();
    assert_eq!(
        store.begin_transaction(&other).await.unwrap(),
        Begin::Started
    );
    assert_eq!(store.transaction_count().await.unwrap(), 2);
}

async fn a_repeat_is_told_from_a_taken_transaction_ref(store: Arc<dyn Store>) {
    store.begin_transaction(&in_flight(1)).await.unwrap();
    match store.begin_transaction(&in_flight(1)).await.unwrap() {
        Begin::Repeat(known) => assert_eq!(known.fingerprint(), &[1; 32]),
        other => panic!("{other:?}"),
    }
    // A new request_ref naming a transaction_ref already taken.
    let mut rival = in_flight(2);
    rival.transaction_ref = "t-1".into();
    assert_eq!(
        store.begin_transaction(&rival).await.unwrap(),
        Begin::TransactionRefTaken
    );
    assert_eq!(
        store.request("app", "r-2").await.unwrap(),
        None,
        "the refused request_ref is not claimed"
    );
    assert_eq!(
        store.transaction("app", "t-1").await.unwrap(),
        Some(in_flight(1)),
        "the transaction is untouched"
    );
    // Free to use on its own transaction.
    assert_eq!(
        store.begin_transaction(&in_flight(2)).await.unwrap(),
        Begin::Started
    );
}

async fn concurrent_begins_of_one_request_ref_start_it_once(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.begin_transaction(&in_flight(7)).await.unwrap() })
        })
        .collect();
    let mut started = 0;
    for task in tasks {
        match task.await.unwrap() {
            Begin::Started => started += 1,
            Begin::Repeat(known) => assert_eq!(known.fingerprint(), &[7; 32]),
            Begin::TransactionRefTaken => panic!("one request_ref, one transaction"),
        }
    }
    assert_eq!(started, 1);
    assert_eq!(store.transaction_count().await.unwrap(), 1);
}

async fn concurrent_begins_of_one_transaction_ref_start_it_once(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..16)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut attempt = in_flight(n);
                attempt.transaction_ref = "t-contested".into();
                if n % 2 == 0 {
                    store.begin_transaction(&attempt).await.unwrap()
                } else {
                    store.begin_enquiry(&attempt).await.unwrap()
                }
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
    // The losers' request_refs are left free: no claim of theirs stayed.
    let mut claimed = 0;
    for n in 0..16 {
        let known = store.request("app", &format!("r-{n}")).await.unwrap();
        claimed += usize::from(known.is_some());
    }
    assert_eq!(claimed, 1);
}

async fn a_validation_is_recorded_in_its_transaction_when_answered(store: Arc<dyn Store>) {
    store.begin_transaction(&in_flight(1)).await.unwrap();
    let claimed = validation("v-1");
    assert_eq!(
        store.claim_request("app", "t-1", &claimed).await.unwrap(),
        Claim::Started
    );
    assert!(matches!(
        store.claim_request("app", "t-1", &claimed).await.unwrap(),
        Claim::Repeat(known) if matches!(*known, KnownRequest::Running { operation: Operation::Validate, .. })
    ));
    let unchanged = |_: &mut TransactionRecord| {};
    store
        .update_transaction("app", "t-1", &unchanged, Some(("v-1", answer(7))))
        .await
        .unwrap();
    let (request, transaction) = recorded(store.request("app", "v-1").await.unwrap());
    assert_eq!(request.operation, Operation::Validate);
    assert_eq!(request.fingerprint, [9; 32]);
    assert_eq!(request.state, RequestState::Answered(answer(7)));
    assert_eq!(transaction.requests.len(), 2);
    // A repeat of an answered claim is a repeat, not a new claim.
    assert!(matches!(
        store.claim_request("app", "t-1", &claimed).await.unwrap(),
        Claim::Repeat(known) if matches!(*known, KnownRequest::Recorded { .. })
    ));

    // Abandoned before an answer, a validation leaves no trace.
    let again = validation("v-2");
    store.claim_request("app", "t-1", &again).await.unwrap();
    store.abandon("app", "v-2", "t-1", false).await.unwrap();
    assert_eq!(store.request("app", "v-2").await.unwrap(), None);
    assert!(store.transaction("app", "t-1").await.unwrap().is_some());
    // An answered one is not taken back.
    store.abandon("app", "v-1", "t-1", false).await.unwrap();
    assert!(store.request("app", "v-1").await.unwrap().is_some());
}

async fn an_abandoned_transaction_leaves_nothing_and_may_be_retried(store: Arc<dyn Store>) {
    store.begin_transaction(&in_flight(1)).await.unwrap();
    // Abandoning by a request that did not begin it changes nothing.
    store.abandon("app", "r-9", "t-1", true).await.unwrap();
    assert!(store.transaction("app", "t-1").await.unwrap().is_some());
    store.abandon("app", "r-1", "t-1", true).await.unwrap();
    assert_eq!(store.request("app", "r-1").await.unwrap(), None);
    assert_eq!(store.transaction("app", "t-1").await.unwrap(), None);
    assert_eq!(store.transaction_count().await.unwrap(), 0);
    assert_eq!(
        store.begin_transaction(&in_flight(1)).await.unwrap(),
        Begin::Started,
        "the app may retry it"
    );
}

async fn an_enquiry_is_claimed_and_recorded_with_its_answer(store: Arc<dyn Store>) {
    let begun = in_flight(1);
    assert_eq!(store.begin_enquiry(&begun).await.unwrap(), Begin::Started);
    match store.claims_live_in() {
        // In memory until answered.
        ClaimsLiveIn::Process => assert!(matches!(
            store.request("app", "r-1").await.unwrap(),
            Some(KnownRequest::Running {
                operation: Operation::Transact,
                ..
            })
        )),
        // Recorded at once, so another switch can report it.
        ClaimsLiveIn::Database => {
            let (request, _) = recorded(store.request("app", "r-1").await.unwrap());
            assert_eq!(request.state, RequestState::InFlight { started_at_ms: 1 });
        }
    }
    assert_eq!(store.transaction("app", "t-1").await.unwrap(), Some(begun));
    let mut rival = in_flight(2);
    rival.transaction_ref = "t-1".into();
    assert_eq!(
        store.begin_transaction(&rival).await.unwrap(),
        Begin::TransactionRefTaken,
        "the transaction_ref is held while the enquiry is out"
    );

    let succeed = |record: &mut TransactionRecord| record.status = Status::Successful;
    let updated = store
        .update_transaction("app", "t-1", &succeed, Some(("r-1", answer(1))))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.status, Status::Successful);
    store.durable().await.unwrap();
    let (request, transaction) = recorded(store.request("app", "r-1").await.unwrap());
    assert_eq!(request.state, RequestState::Answered(answer(1)));
    assert_eq!(transaction.status, Status::Successful);

    // An enquiry whose provider call had no effect leaves nothing.
    assert_eq!(
        store.begin_enquiry(&in_flight(3)).await.unwrap(),
        Begin::Started
    );
    store.abandon("app", "r-3", "t-3", true).await.unwrap();
    assert_eq!(store.request("app", "r-3").await.unwrap(), None);
    assert_eq!(store.transaction("app", "t-3").await.unwrap(), None);
}

async fn an_answer_is_recorded_only_for_a_claim_of_its_transaction(store: Arc<dyn Store>) {
    store.begin_transaction(&in_flight(1)).await.unwrap();
    store.begin_transaction(&in_flight(2)).await.unwrap();
    let claimed = validation("v-2");
    store.claim_request("app", "t-2", &claimed).await.unwrap();
    let unchanged = |_: &mut TransactionRecord| {};
    // t-2's claim, and a request_ref nobody claimed, answered on t-1.
    for request_ref in ["v-2", "never-claimed"] {
        let record = store
            .update_transaction("app", "t-1", &unchanged, Some((request_ref, answer(3))))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.requests.len(), 1, "{request_ref}");
    }
    assert_eq!(store.request("app", "never-claimed").await.unwrap(), None);
    // A transaction that does not exist is not made.
    assert_eq!(
        store
            .update_transaction("app", "t-none", &unchanged, None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.transaction("app", "t-none").await.unwrap(), None);
}

async fn metered_calls_are_found_by_period_exactly(store: Arc<dyn Store>) {
    const MINUTE: u64 = 60_000;
    let times = [
        MINUTE - 1,
        MINUTE,
        MINUTE + 1,
        2 * MINUTE + 5,
        2 * MINUTE + 5,
        5 * MINUTE,
    ];
    for at in times {
        store.meter(&call(at)).await.unwrap();
    }
    let mut other = call(MINUTE);
    other.app_id = "other".into();
    store.meter(&other).await.unwrap();
    let mut priced = call(9 * MINUTE);
    priced.transaction_ref = Some("t-9".into());
    priced.amount = Some(150_000);
    priced.completed = true;
    priced.error = Some("none".into());
    priced.inspect = true;
    priced.http_status = 422;
    priced.price = Some(manifold_billing::Price {
        currency: "NGN".into(),
        minor_units: 2,
        billed: true,
        call_fee: 2_000,
        value_fee: 150,
    });
    store.meter(&priced).await.unwrap();
    store.durable().await.unwrap();
    let period = |from, until| {
        let store = &store;
        async move {
            store
                .metered_calls("app", from, until)
                .await
                .unwrap()
                .iter()
                .map(|c| c.at_ms)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(period(0, 9 * MINUTE).await, times.to_vec());
    assert_eq!(period(MINUTE, MINUTE + 2).await, vec![MINUTE, MINUTE + 1]);
    assert_eq!(
        period(MINUTE + 1, 5 * MINUTE).await,
        vec![MINUTE + 1, 2 * MINUTE + 5, 2 * MINUTE + 5]
    );
    assert_eq!(period(3 * MINUTE, 4 * MINUTE).await, Vec::<u64>::new());
    assert_eq!(
        store.metered_calls("other", 0, u64::MAX).await.unwrap(),
        vec![other]
    );
    // Every member comes back as it was metered.
    assert_eq!(
        store
            .metered_calls("app", 9 * MINUTE, u64::MAX)
            .await
            .unwrap(),
        vec![priced]
    );
    let completed = store
        .count_metered("app", 0, u64::MAX, &|c| c.completed)
        .await
        .unwrap();
    assert_eq!(completed, 1);
}

async fn a_long_period_of_metered_calls_is_handed_over_whole(store: Arc<dyn Store>) {
    // More than one page of a store that reads a period a page at a time,
    // with many calls in one millisecond across a page's edge.
    let times: Vec<u64> = (0..2_500).map(|n| 10_000 + n / 7).collect();
    for at in &times {
        store.meter(&call(*at)).await.unwrap();
    }
    store.durable().await.unwrap();
    let mut seen = Vec::new();
    store
        .each_metered("app", 0, u64::MAX, &mut |c| seen.push(c.at_ms))
        .await
        .unwrap();
    seen.sort_unstable();
    assert_eq!(seen, times);
    let within = store
        .count_metered("app", 10_100, 10_200, &|_| true)
        .await
        .unwrap();
    assert_eq!(within, 700);
}

async fn retention_drops_customer_data_of_settled_transactions_only(store: Arc<dyn Store>) {
    record_settled(&*store, 1).await;
    assert_eq!(
        store.begin_transaction(&in_flight(2)).await.unwrap(),
        Begin::Started
    );
    let settled_at = store
        .transaction("app", "t-1")
        .await
        .unwrap()
        .unwrap()
        .updated_at_ms;
    assert_eq!(
        store
            .drop_customer_data(settled_at - 1, 9_999)
            .await
            .unwrap(),
        0,
        "too young"
    );
    assert_eq!(
        store.drop_customer_data(u64::MAX, 9_999).await.unwrap(),
        1,
        "t-2 is not final"
    );
    assert_eq!(
        store.drop_customer_data(u64::MAX, 10_000).await.unwrap(),
        0,
        "once"
    );
    store.durable().await.unwrap();
    let (request, record) = recorded(store.request("app", "r-1").await.unwrap());
    assert_eq!(record.customer_data_dropped_at_ms, Some(9_999));
    assert_eq!(record.status, Status::Successful);
    assert_eq!(record.last_reply, None);
    assert_eq!(request.fingerprint, [1; 32], "a repeat is still recognised");
    match request.state {
        RequestState::Answered(answer) => {
            assert_eq!(answer.reply.provider_response, None);
            assert_eq!(answer.reply.message, "");
            assert_eq!(answer.reply.provider_response_code, "00");
        }
        other => panic!("{other:?}"),
    }
    let pending = store.transaction("app", "t-2").await.unwrap().unwrap();
    assert_eq!(pending.customer_data_dropped_at_ms, None);
}

async fn an_update_applies_to_the_record_as_stored_now(store: Arc<dyn Store>) {
    store.begin_transaction(&in_flight(1)).await.unwrap();
    concurrent_changes(store, 20).await;
}

/// Makes `count` concurrent changes of `t-1`, each a function of the
/// record it is given, and checks that none was lost to another that read
/// the record before it.
pub(super) async fn concurrent_changes(store: Arc<dyn Store>, count: u64) {
    let before = store.transaction("app", "t-1").await.unwrap().unwrap();
    let tasks: Vec<_> = (0..count)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let add = move |record: &mut TransactionRecord| {
                    record.history.push(HistoryEntry {
                        at_ms: 2_000 + n,
                        operation: Operation::Query,
                        request_ref: None,
                        status: Status::Pending,
                        provider_response_code: None,
                        message: format!("query {n}"),
                    });
                    record.updated_at_ms = record.updated_at_ms.max(2_000 + n);
                };
                store
                    .update_transaction("app", "t-1", &add, None)
                    .await
                    .unwrap()
            })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().is_some());
    }
    let record = store.transaction("app", "t-1").await.unwrap().unwrap();
    assert_eq!(record.history.len(), before.history.len() + count as usize);
    assert_eq!(record.updated_at_ms, 2_000 + count - 1);
}
