use super::*;
use crate::store::suite::{
    answer, call, data_keys, in_flight, record_settled, recorded, settled_with_customer_data,
    transaction,
};
use manifold_provider::Status;

fn imported(n: u64) -> ImportedTransaction {
    let mut record = transaction(n, RequestState::Answered(answer(n)));
    record.status = Status::Successful;
    ImportedTransaction {
        transaction: record,
        // Several calls in one millisecond must all be kept.
        call: call(5_000),
    }
}

/// The store on `db`, the database in `dir`, with the default options.
fn open_on(dir: &Path, db: &sled::Db) -> Result<SledStore, StoreError> {
    let commit = GroupCommit::start(db.clone()).unwrap();
    SledStore::open(dir, db, commit, &StoreOptions::default())
}

fn open_store(dir: &Path) -> SledStore {
    let db = SledStore::open_db(dir, &StoreOptions::default()).unwrap();
    open_on(dir, &db).unwrap()
}

/// The flusher and metering threads release the database shortly after the
/// store drops.
fn reopen(dir: &Path) -> SledStore {
    for _ in 0..250 {
        if let Ok(db) = SledStore::open_db(dir, &StoreOptions::default()) {
            return open_on(dir, &db).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the database did not reopen within 5 s");
}

#[tokio::test]
async fn imported_transactions_read_back_as_if_served_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let batch: Vec<_> = (0..3).map(imported).collect();
    {
        let store = open_store(dir.path());
        store.import(&batch).unwrap();
        let _ = store.durable().await.unwrap();
        assert_eq!(store.transaction_count().await.unwrap(), 3);
        // A repeat of an imported request_ref is a repeat, as for a served one.
        assert!(matches!(
            store.begin_transaction(&in_flight(0)).await.unwrap(),
            Begin::Repeat(_)
        ));
    }
    let store = reopen(dir.path());
    assert_eq!(store.transaction_count().await.unwrap(), 3);
    assert_eq!(
        store.transaction("app", "t-1").await.unwrap(),
        Some(batch[1].transaction.clone())
    );
    let (request, transaction) = recorded(store.request("app", "r-2").await.unwrap());
    assert_eq!(request.state, RequestState::Answered(answer(2)));
    assert_eq!(transaction, batch[2].transaction);
    assert_eq!(
        store.metered_calls("app", 0, 10_000).await.unwrap().len(),
        3
    );
}

#[tokio::test]
async fn a_pointer_a_crash_left_without_its_record_is_void() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    // begin_transaction's first write alone: the pointer, no record.
    store
        .tree
        .insert(
            key(REQUEST, "app", "r-1"),
            codec::encode_pointer("t-1").unwrap(),
        )
        .unwrap();
    assert_eq!(store.request("app", "r-1").await.unwrap(), None);
    assert_eq!(
        store.begin_transaction(&in_flight(1)).await.unwrap(),
        Begin::Started,
        "a retry of a void claim starts afresh"
    );
    let (request, _) = recorded(store.request("app", "r-1").await.unwrap());
    assert_eq!(request.state, RequestState::InFlight { started_at_ms: 1 });
    assert!(matches!(
        store.begin_transaction(&in_flight(1)).await.unwrap(),
        Begin::Repeat(_)
    ));

    // What follows writes sled's tree behind the journal's back, as a
    // store of earlier code (which wrote pointer and record apart) may have
    // left it: the journal must hold nothing newer for these keys.
    store.journal.in_sled().await.unwrap();
    // A void pointer to a transaction_ref another request took since.
    store
        .tree
        .insert(
            key(REQUEST, "app", "r-stale"),
            codec::encode_pointer("t-1").unwrap(),
        )
        .unwrap();
    assert_eq!(
        store.request("app", "r-stale").await.unwrap(),
        None,
        "a request is never answered with another request's transaction"
    );

    // abandon's first write alone: the record gone, the pointer left.
    store.tree.remove(key(TRANSACTION, "app", "t-1")).unwrap();
    assert_eq!(store.request("app", "r-1").await.unwrap(), None);
}

#[tokio::test]
async fn an_enquiry_is_claimed_in_memory_and_written_once_with_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open_store(dir.path());
        assert_eq!(store.claims_live_in(), ClaimsLiveIn::Process);
        let begun = in_flight(1);
        assert_eq!(store.begin_enquiry(&begun).await.unwrap(), Begin::Started);
        assert!(matches!(
            store.request("app", "r-1").await.unwrap(),
            Some(KnownRequest::Running {
                operation: Operation::Transact,
                ..
            })
        ));
        assert_eq!(store.transaction("app", "t-1").await.unwrap(), Some(begun));
        let mut rival = in_flight(2);
        rival.transaction_ref = "t-1".into();
        assert_eq!(
            store.begin_transaction(&rival).await.unwrap(),
            Begin::TransactionRefTaken,
            "the transaction_ref is held while the enquiry is out"
        );
        assert_eq!(
            store.tree.len(),
            1,
            "nothing but the format marker is written"
        );

        let succeed = |record: &mut TransactionRecord| record.status = Status::Successful;
        let updated = store
            .update_transaction("app", "t-1", &succeed, Some(("r-1", answer(1))))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(updated.status, Status::Successful);
        let _ = store.durable().await.unwrap();

        // An enquiry whose provider call had no effect leaves nothing.
        assert_eq!(
            store.begin_enquiry(&in_flight(3)).await.unwrap(),
            Begin::Started
        );
        store.abandon("app", "r-3", "t-3", true).await.unwrap();
        assert_eq!(store.request("app", "r-3").await.unwrap(), None);
        assert_eq!(store.transaction("app", "t-3").await.unwrap(), None);

        // One in flight when the process dies leaves nothing either.
        assert_eq!(
            store.begin_enquiry(&in_flight(4)).await.unwrap(),
            Begin::Started
        );
    }
    let store = reopen(dir.path());
    let (request, transaction) = recorded(store.request("app", "r-1").await.unwrap());
    assert_eq!(request.state, RequestState::Answered(answer(1)));
    assert_eq!(transaction.status, Status::Successful);
    assert_eq!(store.request("app", "r-4").await.unwrap(), None);
    assert_eq!(store.transaction("app", "t-4").await.unwrap(), None);
    assert_eq!(
        store.begin_enquiry(&in_flight(4)).await.unwrap(),
        Begin::Started
    );
}

#[tokio::test]
async fn metered_calls_are_batched_and_found_by_period_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let minute = MINUTE_MS;
    let times = [
        minute - 1,
        minute,
        minute + 1,
        2 * minute + 5,
        2 * minute + 5,
        5 * minute,
    ];
    {
        let store = open_store(dir.path());
        for at in times {
            store.meter(&call(at)).await.unwrap();
        }
        let mut other = call(minute);
        other.app_id = "other".into();
        store.meter(&other).await.unwrap();
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
        assert_eq!(period(0, u64::MAX).await, times.to_vec());
        assert_eq!(period(minute, minute + 2).await, vec![minute, minute + 1]);
        assert_eq!(
            period(minute + 1, 5 * minute).await,
            vec![minute + 1, 2 * minute + 5, 2 * minute + 5]
        );
        assert_eq!(period(3 * minute, 4 * minute).await, Vec::<u64>::new());
        // Buffered calls, once due, go with the next flush: one write per
        // app and minute, not one per call.
        store.meter(&call(7 * minute)).await.unwrap();
        store.meter(&call(7 * minute + 1)).await.unwrap();
        let before = store.tree.scan_prefix([codec::METERING]).count();
        std::thread::sleep(METERING_BATCH_AGE);
        let _ = store.durable().await.unwrap();
        // (The journal has it on disk; sled right after.)
        store.journal.in_sled().await.unwrap();
        assert_eq!(
            store.tree.scan_prefix([codec::METERING]).count(),
            before + 1
        );
        // And without one, the metering thread writes them.
        store.meter(&call(9 * minute)).await.unwrap();
        let written = (0..250).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            store.tree.scan_prefix([codec::METERING]).count() == before + 2
        });
        assert!(written, "the metering thread wrote the buffered call");
    }
    let store = reopen(dir.path());
    assert_eq!(
        store.metered_calls("app", 0, u64::MAX).await.unwrap().len(),
        9
    );
    assert_eq!(
        store
            .metered_calls("other", 0, u64::MAX)
            .await
            .unwrap()
            .len(),
        1
    );
}

/// A commit carries the buffered metered calls once they are due: a batch
/// of [`METERING_BATCH_CALLS`], the oldest [`METERING_BATCH_AGE`] old, or
/// one metered promptly (a call a daily quota counts again after a
/// restart), which takes every call before it along. Written with every
/// commit, a loaded switch wrote a batch (a journal entry and a sled key)
/// per commit; written only once aged, a crash right after a few quick
/// calls lost what a restarted switch's quota counts. A stop writes them
/// whether due or not.
#[tokio::test]
async fn a_commit_writes_metered_calls_once_they_are_due() {
    let dir = tempfile::tempdir().unwrap();
    // No metering thread to race with: it would write them after an hour.
    let options = StoreOptions {
        metering_interval: Duration::from_secs(3600),
        ..StoreOptions::default()
    };
    let store = reopen_with(dir.path(), &options).unwrap();
    let batches = |store: &SledStore| store.tree.scan_prefix([codec::METERING]).count();
    let commit = || async {
        let _ = store.durable().await.unwrap();
        store.journal.in_sled().await.unwrap();
    };
    // Young and few: they wait.
    store.meter(&call(1)).await.unwrap();
    store.meter(&call(2)).await.unwrap();
    commit().await;
    assert_eq!(batches(&store), 0);
    // One metered promptly: the next commit writes it and those before it,
    // in one batch, however young.
    store.meter_promptly(&call(3)).await.unwrap();
    commit().await;
    assert_eq!(batches(&store), 1);
    // The prompt one gone, young calls wait again...
    store.meter(&call(4)).await.unwrap();
    commit().await;
    assert_eq!(batches(&store), 1);
    // ...until they are old enough.
    std::thread::sleep(METERING_BATCH_AGE);
    commit().await;
    assert_eq!(batches(&store), 2);
    // Enough of them: at once, however young.
    for at in 0..METERING_BATCH_CALLS as u64 {
        store.meter(&call(10 + at)).await.unwrap();
    }
    commit().await;
    assert_eq!(batches(&store), 3);
    // A read of metered calls sees what waits, and writes it.
    store.meter(&call(5_000)).await.unwrap();
    let read = store.metered_calls("app", 0, u64::MAX).await.unwrap();
    assert_eq!(read.len(), 4 + METERING_BATCH_CALLS + 1);
    assert_eq!(batches(&store), 4);
    // A stop writes what waits, however young: the process ends before
    // it would be due.
    store.meter(&call(6_000)).await.unwrap();
    store.write_metered().unwrap();
    commit().await;
    assert_eq!(batches(&store), 5);
}

#[tokio::test]
async fn a_store_of_another_format_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("switch/transactions")
            .unwrap()
            .insert("app\u{1f}t-1", "{\"status\":\"Successful\"}")
            .unwrap();
        db.flush().unwrap();
    }
    // sled's flusher thread holds the file lock a moment after the drop.
    let db = (0..250)
        .find_map(|_| {
            SledStore::open_db(dir.path(), &StoreOptions::default())
                .map_err(|_| std::thread::sleep(Duration::from_millis(20)))
                .ok()
        })
        .expect("the database reopens within 5 s");
    let error = open_on(dir.path(), &db)
        .err()
        .expect("a format 1 store is refused");
    let message = error.to_string();
    assert!(
        message.contains("store format 1") && message.contains(FORMAT),
        "{message}"
    );

    let tree = db.open_tree(TREE).unwrap();
    db.drop_tree("switch/transactions").unwrap();
    tree.insert(codec::FORMAT_KEY, "manifold-switch-store/8")
        .unwrap();
    let error = open_on(dir.path(), &db)
        .err()
        .expect("a later format is refused");
    assert!(
        error.to_string().contains("manifold-switch-store/8"),
        "{error}"
    );
    // Format 6 (pointers in buckets, withdrawn) is refused by name, not
    // taken over: its pointers are under keys this version does not read.
    for bucketed in BUCKETED {
        tree.insert(codec::FORMAT_KEY, bucketed).unwrap();
        let error = open_on(dir.path(), &db)
            .err()
            .expect("a bucketed store is refused");
        assert!(
            error.to_string().contains(bucketed) && error.to_string().contains("buckets"),
            "{error}"
        );
    }
}

#[tokio::test]
async fn earlier_formats_are_taken_over_as_the_current_one_which_their_code_refuses() {
    for earlier in 2..=5 {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open_store(dir.path());
            store.begin_transaction(&in_flight(1)).await.unwrap();
            store.durable().await.unwrap();
            store.journal.in_sled().await.unwrap();
            // As the previous version left it: the same records, marked so.
            store
                .tree
                .insert(
                    codec::FORMAT_KEY,
                    format!("manifold-switch-store/{earlier}").as_bytes(),
                )
                .unwrap();
            store.db.flush().unwrap();
        }
        let store = reopen(dir.path());
        let (request, _) = recorded(store.request("app", "r-1").await.unwrap());
        assert_eq!(request.state, RequestState::InFlight { started_at_ms: 1 });
        assert_eq!(
            store.tree.get(codec::FORMAT_KEY).unwrap().as_deref(),
            Some(FORMAT.as_bytes()),
            "format {earlier} is re-marked, so that its code refuses the store \
             rather than misread its journal"
        );
    }
    assert_eq!(FORMAT, "manifold-switch-store/7");
}

#[tokio::test]
async fn a_dump_spells_out_every_transaction_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    store.import(&[imported(1), imported(2)]).unwrap();
    // A dump reads sled's tree: the journal applied first.
    store.settle().await.unwrap();
    let mut out = Vec::new();
    assert_eq!(store.dump(&mut out).unwrap(), 2);
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines[0]["transaction_ref"], "t-1");
    assert_eq!(lines[0]["status"], "Successful");
    assert_eq!(
        lines[1]["requests"][0]["state"]["reply"]["message"],
        "answer 2"
    );
    assert_eq!(
        lines[1]["requests"][0]["fingerprint"],
        hex::encode([2u8; 32])
    );
}

#[tokio::test]
async fn a_stopped_store_is_dumped_from_its_directory_and_a_missing_one_is_not_made() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let error =
        SledStore::dump_directory(&missing, &StoreOptions::default(), &mut Vec::new()).unwrap_err();
    assert!(error.to_string().contains("no store in"), "{error}");
    assert!(!missing.exists(), "a dump creates nothing");
    {
        let store = open_store(dir.path());
        store.import(&[imported(1)]).unwrap();
        let _ = store.durable().await.unwrap();
    }
    let mut out = Vec::new();
    let dumped = (0..250)
        .find_map(|_| {
            SledStore::dump_directory(dir.path(), &StoreOptions::default(), &mut out)
                .map_err(|_| std::thread::sleep(Duration::from_millis(20)))
                .ok()
        })
        .expect("the stopped store opens");
    assert_eq!(dumped, 1);
    assert!(String::from_utf8(out).unwrap().contains("\"t-1\""));
}

fn options_with(keys: Option<Arc<DataKeys>>) -> StoreOptions {
    StoreOptions {
        data_keys: keys,
        ..StoreOptions::default()
    }
}

/// Opens the store in `dir` with `options`, waiting for a previous one's
/// threads to let go of the database.
fn reopen_with(dir: &Path, options: &StoreOptions) -> Result<SledStore, StoreError> {
    for _ in 0..250 {
        if let Ok(db) = SledStore::open_db(dir, options) {
            let commit = GroupCommit::start(db.clone()).unwrap();
            return SledStore::open(dir, &db, commit, options);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the database did not reopen within 5 s");
}

/// Whether any file under `dir` holds `needle`.
fn files_hold(dir: &Path, needle: &[u8]) -> bool {
    let mut found = false;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found |= files_hold(&path, needle);
        } else if let Ok(bytes) = std::fs::read(&path) {
            found |= bytes.windows(needle.len()).any(|w| w == needle);
        }
    }
    found
}

#[tokio::test]
async fn records_are_sealed_in_the_journal_and_in_sled() {
    for sealed in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let options = options_with(sealed.then(|| data_keys(("k1", 1), &[])));
        let store = reopen_with(dir.path(), &options).unwrap();
        record_settled(&store, 1).await;
        // In the journal now, and in sled once applied.
        let in_journal = files_hold(dir.path(), b"0123456789");
        store.journal.in_sled().await.unwrap();
        store.db.flush().unwrap();
        let anywhere = in_journal || files_hold(dir.path(), b"0123456789");
        // Without a key the test sees the number: it can fail.
        assert_eq!(anywhere, !sealed, "sealed: {sealed}");
        assert!(!sealed || !files_hold(dir.path(), b"2348022000008"));
        let (request, _) = recorded(store.request("app", "r-1").await.unwrap());
        assert_eq!(request, settled_with_customer_data(1).requests[0]);
    }
}

#[tokio::test]
async fn a_sealed_store_needs_its_keys_and_reseals_under_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let old = options_with(Some(data_keys(("old", 1), &[])));
    let store = reopen_with(dir.path(), &old).unwrap();
    record_settled(&store, 1).await;
    drop(store);

    // Refused when opened, naming the key that is missing.
    let error = reopen_with(dir.path(), &options_with(None)).err().unwrap();
    assert!(
        error.to_string().contains("no data key was given"),
        "{error}"
    );
    let error = reopen_with(dir.path(), &options_with(Some(data_keys(("new", 2), &[]))))
        .err()
        .unwrap();
    assert!(error.to_string().contains("`old`"), "{error}");

    let rotated = options_with(Some(data_keys(("new", 2), &[("old", 1)])));
    let store = reopen_with(dir.path(), &rotated).unwrap();
    record_settled(&store, 2).await;
    assert!(store.request("app", "r-1").await.unwrap().is_some());
    assert_eq!(
        store.reseal().await.unwrap(),
        1,
        "only the old key's record"
    );
    assert_eq!(store.reseal().await.unwrap(), 0);
    drop(store);
    let store = reopen_with(dir.path(), &options_with(Some(data_keys(("new", 2), &[])))).unwrap();
    // Were a record still under the old key, it would not open: the check at
    // open is what a reseal makes unnecessary.
    for n in [1, 2] {
        let (request, _) = recorded(store.request("app", &format!("r-{n}")).await.unwrap());
        assert_eq!(request, settled_with_customer_data(n).requests[0]);
    }
}

#[test]
fn a_database_held_open_is_refused_in_words_that_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let _held = SledStore::open_db(dir.path(), &StoreOptions::default()).unwrap();
    match SledStore::open_db(dir.path(), &StoreOptions::default()) {
        Err(StoreError::InUse(path)) => assert_eq!(path, dir.path().display().to_string()),
        Err(other) => panic!("not named as held: {other}"),
        Ok(_) => panic!("sled opened a database another handle holds"),
    }
}
