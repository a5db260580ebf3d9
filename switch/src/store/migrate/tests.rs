use std::sync::Arc;

use manifold_provider::Status;
use manifold_test_postgres::TestDatabase;

use super::*;
use crate::store::suite::{answer, call, in_flight, postgres_options, transaction, validation};
use crate::store::{Begin, Claim, ImportedTransaction, RequestState, StoreOptions};

fn imported(n: u64) -> ImportedTransaction {
    let mut record = transaction(n, RequestState::Answered(answer(n)));
    record.status = Status::Successful;
    let mut metered = call(5_000 + n);
    metered.transaction_ref = Some(record.transaction_ref.clone());
    metered.completed = true;
    ImportedTransaction {
        transaction: record,
        call: metered,
    }
}

fn open_sled(dir: &std::path::Path) -> SledStore {
    let options = StoreOptions {
        data_keys: Some(crate::store::suite::data_keys(("k", 1), &[])),
        ..StoreOptions::default()
    };
    let db = SledStore::open_db(dir, &options).unwrap();
    let commit = manifold_provider::GroupCommit::start(db.clone()).unwrap();
    SledStore::open(dir, &db, commit, &options).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_100_000_transactions_is_copied_whole_and_checked() {
    let Some(database) = TestDatabase::create("migrate").await else {
        return;
    };
    const COUNT: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let sled = Arc::new(open_sled(dir.path()));
    for chunk in (0..COUNT).collect::<Vec<_>>().chunks(10_000) {
        let batch: Vec<_> = chunk.iter().map(|n| imported(*n)).collect();
        sled.import(&batch).unwrap();
    }
    // Beside the bulk: a transaction in flight, one with a validation
    // answered, and calls metered by the request path (priced).
    let n = COUNT + 1;
    assert_eq!(
        sled.begin_transaction(&in_flight(n)).await.unwrap(),
        Begin::Started
    );
    let claimed = validation("v-1");
    assert_eq!(
        sled.claim_request("app", &format!("t-{n}"), &claimed)
            .await
            .unwrap(),
        Claim::Started
    );
    let succeed = |record: &mut TransactionRecord| record.status = Status::Successful;
    sled.update_transaction("app", &format!("t-{n}"), &succeed, Some(("v-1", answer(1))))
        .await
        .unwrap();
    assert_eq!(
        sled.begin_transaction(&in_flight(n + 1)).await.unwrap(),
        Begin::Started
    );
    let mut priced = call(9_000_000);
    priced.app_id = "other".into();
    priced.price = Some(manifold_billing::Price {
        currency: "NGN".into(),
        minor_units: 2,
        billed: true,
        call_fee: 2_000,
        value_fee: 0,
    });
    sled.meter(&priced).await.unwrap();
    sled.durable().await.unwrap();

    let postgres = PgStore::connect(&postgres_options(&database))
        .await
        .unwrap();
    let mut steps = Vec::new();
    let migrated = sled_to_postgres(sled.clone(), &postgres, &mut |step| steps.push(step))
        .await
        .unwrap();
    assert_eq!(
        migrated,
        Migrated {
            transactions: COUNT + 2,
            metered_calls: COUNT + 1,
            checked: 1_001,
        }
    );
    assert!(matches!(
        steps.first(),
        Some(Step::Counted {
            transactions,
            metered_calls,
        }) if (*transactions, *metered_calls) == (COUNT + 2, COUNT + 1)
    ));
    assert!(matches!(steps.last(), Some(Step::Checking)));
    assert!(
        steps
            .iter()
            .filter(|s| matches!(s, Step::Copied(_)))
            .count()
            >= 100,
        "progress after every batch"
    );

    // Beyond the sample: what the store's users ask of it, on both.
    for (app, request_ref) in [
        ("app", "r-0".to_owned()),
        ("app", format!("r-{}", COUNT - 1)),
        ("app", "v-1".to_owned()),
        ("app", format!("r-{}", n + 1)),
    ] {
        assert_eq!(
            postgres.request(app, &request_ref).await.unwrap(),
            sled.request(app, &request_ref).await.unwrap(),
            "{request_ref}"
        );
    }
    for app in ["app", "other"] {
        assert_eq!(
            postgres.metered_calls(app, 0, u64::MAX).await.unwrap(),
            sled.metered_calls(app, 0, u64::MAX).await.unwrap(),
            "{app}"
        );
    }
    // The copy goes on serving: a repeat is a repeat, a new call starts.
    assert!(matches!(
        postgres.begin_transaction(&in_flight(7)).await.unwrap(),
        Begin::Repeat(_)
    ));

    // A second copy into the same database is refused: nothing twice.
    let error = sled_to_postgres(sled.clone(), &postgres, &mut |_| {})
        .await
        .unwrap_err();
    assert!(error.to_string().contains("already holds"), "{error}");
    assert_eq!(
        postgres.transaction_count().await.unwrap() as u64,
        COUNT + 2
    );
}
