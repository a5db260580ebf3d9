//! What only the PostgreSQL store has: its schema and migrations, the
//! database's own guarantees, sealing in its tables, and refusals at
//! connect. The behaviour it shares with sled is in `store/suite.rs`.

use std::time::Duration;

use manifold_provider::Status;
use manifold_test_postgres::TestDatabase;

use super::*;
use crate::store::suite::{
    answer, call, concurrent_changes, data_keys, in_flight, postgres_options, record_settled,
    recorded, settled_with_customer_data, validation,
};

async fn database(test: &str) -> Option<TestDatabase> {
    TestDatabase::create(test).await
}

async fn connect(database: &TestDatabase) -> PgStore {
    PgStore::connect(&postgres_options(database))
        .await
        .unwrap_or_else(|error| panic!("connecting: {error}"))
}

fn refusal(result: Result<PgStore, StoreError>) -> StoreError {
    match result {
        Ok(store) => panic!("connected: {store:?}"),
        Err(error) => error,
    }
}

/// Whether any stored record (or meta value) holds `needle`.
async fn tables_hold(database: &TestDatabase, needle: &[u8]) -> bool {
    let client = database.client().await;
    let rows = client
        .query(
            "SELECT record FROM manifold_transactions
             UNION ALL SELECT value FROM manifold_meta",
            &[],
        )
        .await
        .unwrap();
    rows.iter().any(|row| {
        let bytes: Vec<u8> = row.get(0);
        bytes.windows(needle.len()).any(|w| w == needle)
    })
}

#[tokio::test]
async fn records_are_sealed_in_the_database() {
    for sealed in [false, true] {
        let Some(db) = database("sealed").await else {
            return;
        };
        let mut options = postgres_options(&db);
        if !sealed {
            options.data_keys = None;
        }
        let store = PgStore::connect(&options).await.unwrap();
        record_settled(&store, 1).await;
        // Without a key the test sees the numbers: it can fail.
        assert_eq!(tables_hold(&db, b"0123456789").await, !sealed);
        assert_eq!(tables_hold(&db, b"2348022000008").await, !sealed);
        let (request, _) = recorded(store.request("app", "r-1").await.unwrap());
        assert_eq!(request, settled_with_customer_data(1).requests[0]);
    }
}

#[tokio::test]
async fn a_sealed_store_needs_its_keys() {
    let Some(db) = database("keys").await else {
        return;
    };
    let store = connect(&db).await;
    record_settled(&store, 1).await;
    drop(store);
    let mut options = postgres_options(&db);
    options.data_keys = None;
    let error = refusal(PgStore::connect(&options).await).to_string();
    assert!(
        error.contains("`k`") && error.contains("no data key"),
        "{error}"
    );
    options.data_keys = Some(data_keys(("new", 2), &[]));
    let error = refusal(PgStore::connect(&options).await).to_string();
    assert!(
        error.contains("`k`") && error.contains("previous_keys"),
        "{error}"
    );
    // With the old key as a previous one, old records open.
    options.data_keys = Some(data_keys(("new", 2), &[("k", 1)]));
    let store = PgStore::connect(&options).await.unwrap();
    let (_, record) = recorded(store.request("app", "r-1").await.unwrap());
    assert_eq!(record.status, Status::Successful);
}

#[tokio::test]
async fn switches_starting_together_migrate_once_and_a_newer_schema_is_refused() {
    let Some(db) = database("migrate").await else {
        return;
    };
    let options = postgres_options(&db);
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let options = options.clone();
            tokio::spawn(async move { PgStore::connect(&options).await.map(|_| ()) })
        })
        .collect();
    for start in starts {
        start.await.unwrap().unwrap();
    }
    let client = db.client().await;
    let versions: Vec<i32> = client
        .query(
            "SELECT version FROM manifold_schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    // Each migration once, in order.
    assert_eq!(versions, (1..=schema::SCHEMA.latest()).collect::<Vec<_>>());

    client
        .execute(
            "INSERT INTO manifold_schema_migrations (version, name) VALUES (999, 'from the future')",
            &[],
        )
        .await
        .unwrap();
    let error = refusal(PgStore::connect(&options).await);
    assert!(matches!(error, StoreError::UnsupportedFormat(_)), "{error}");
    assert!(error.to_string().contains("version 999"), "{error}");
}

#[tokio::test]
async fn a_server_that_may_lose_a_commit_is_refused() {
    let Some(db) = database("durability").await else {
        return;
    };
    let client = db.client().await;
    let name: String = client
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    client
        .batch_execute(&format!(
            "ALTER DATABASE \"{name}\" SET synchronous_commit = off"
        ))
        .await
        .unwrap();
    let error = refusal(PgStore::connect(&postgres_options(&db)).await);
    assert!(matches!(error, StoreError::NotDurable(_)), "{error}");
    assert!(
        error.to_string().contains("synchronous_commit = off"),
        "{error}"
    );
}

#[tokio::test]
async fn a_final_status_never_changes_whatever_the_code_asks() {
    let Some(db) = database("final").await else {
        return;
    };
    let store = connect(&db).await;
    record_settled(&store, 1).await;
    let back = |record: &mut TransactionRecord| record.status = Status::Pending;
    let error = store
        .update_transaction("app", "t-1", &back, None)
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("a final status never changes"),
        "{error}"
    );
    let record = store.transaction("app", "t-1").await.unwrap().unwrap();
    assert_eq!(record.status, Status::Successful);
}

#[tokio::test]
async fn two_switches_on_one_database_share_claims_and_answers() {
    let Some(db) = database("two").await else {
        return;
    };
    let (one, two) = (connect(&db).await, connect(&db).await);
    assert_eq!(
        one.begin_transaction(&in_flight(1)).await.unwrap(),
        Begin::Started
    );
    assert!(matches!(
        two.begin_transaction(&in_flight(1)).await.unwrap(),
        Begin::Repeat(_)
    ));
    // A validation claimed through one switch is answered through the other.
    let claimed = validation("v-1");
    assert_eq!(
        one.claim_request("app", "t-1", &claimed).await.unwrap(),
        Claim::Started
    );
    assert!(matches!(
        two.claim_request("app", "t-1", &claimed).await.unwrap(),
        Claim::Repeat(_)
    ));
    let succeed = |record: &mut TransactionRecord| record.status = Status::Successful;
    two.update_transaction(
        "app",
        "t-1",
        &succeed,
        Some(("v-1", crate::store::suite::answer(1))),
    )
    .await
    .unwrap();
    let (request, record) = recorded(one.request("app", "v-1").await.unwrap());
    assert_eq!(request.operation, Operation::Validate);
    assert_eq!(record.status, Status::Successful);
}

#[tokio::test]
async fn a_bad_url_and_an_unreachable_server_are_clear_errors_without_the_password() {
    // Neither needs a server: they run without one.
    let options = |url: &str| PostgresOptions {
        url: url.into(),
        pool_size: 2,
        statement_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        ca_file: None,
        insecure_plaintext: false,
        data_keys: None,
    };
    let error =
        refusal(PgStore::connect(&options("postgres://u:s3cret@127.0.0.1:x/db")).await).to_string();
    assert!(error.contains("the PostgreSQL URL"), "{error}");
    assert!(!error.contains("s3cret"), "{error}");
    // Port 1 on loopback: refused at once.
    let error =
        refusal(PgStore::connect(&options("postgres://u:s3cret@127.0.0.1:1/db")).await).to_string();
    assert!(error.contains("cannot connect to PostgreSQL"), "{error}");
    assert!(!error.contains("s3cret"), "{error}");
    let printed = format!("{:?}", options("postgres://u:s3cret@127.0.0.1:1/db"));
    assert!(!printed.contains("s3cret"), "{printed}");
}

#[tokio::test]
async fn a_change_that_keeps_losing_its_race_takes_the_rows_lock() {
    let Some(db) = database("locked_change").await else {
        return;
    };
    // No optimistic try at all: every change goes the locked way.
    let mut store = connect(&db).await;
    store.optimistic_tries = 0;
    let store = Arc::new(store);
    store.begin_transaction(&in_flight(1)).await.unwrap();
    // An answer recorded from a claim not yet in the record.
    store
        .claim_request("app", "t-1", &validation("v-1"))
        .await
        .unwrap();
    let unchanged = |_: &mut TransactionRecord| {};
    let answered = answer(7);
    store
        .update_transaction("app", "t-1", &unchanged, Some(("v-1", answered.clone())))
        .await
        .unwrap();
    let (request, _) = recorded(store.request("app", "v-1").await.unwrap());
    assert_eq!(request.state, RequestState::Answered(answered));
    // Concurrent changes serialise on the lock: none is lost.
    concurrent_changes(store, 12).await;
}

#[tokio::test]
async fn a_batch_of_metered_calls_written_twice_counts_each_once() {
    let Some(db) = database("metered_twice").await else {
        return;
    };
    let store = connect(&db).await;
    let queue = metered::MeterQueue::default();
    for at in 1..=3 {
        queue.push(call(at)).unwrap();
    }
    let (batch, _) = queue.next_batch();
    let client = store.client().await.unwrap();
    // The first commit's answer lost with the connection: written again.
    metered::insert(&client, &batch).await.unwrap();
    metered::insert(&client, &batch).await.unwrap();
    let count: i64 = client
        .query_one("SELECT count(*) FROM manifold_metered_calls", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 3);
}

#[tokio::test]
async fn a_clean_stop_writes_every_metered_call_and_keeps_none_after() {
    let Some(db) = database("metered_stop").await else {
        return;
    };
    let store = connect(&db).await;
    for at in 1..=50 {
        store.meter(&call(at)).await.unwrap();
    }
    store.close_metering(Duration::from_secs(10)).await.unwrap();
    let count: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM manifold_metered_calls", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 50);
    assert_eq!(store.metered_waiting(), 0);
    // Metered after the stop: refused, so the caller logs it.
    let error = store.meter(&call(51)).await.unwrap_err();
    assert!(error.to_string().contains("store is closed"), "{error}");
}
