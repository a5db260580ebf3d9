//! The switch on PostgreSQL (`[storage] backend = "postgres"`), end to end:
//! the protocol over a real database, two switches sharing it, and the
//! start-up refusals a host meets. Each test makes its own database on the
//! server `MANIFOLD_TEST_POSTGRES` names, and skips (loudly) without one.

use std::path::Path;
use std::time::Duration;

use manifold_e2e::*;
use manifold_test_postgres::TestDatabase;

/// One request_ref sent to two switches at once: each reply is the answer
/// or, while the other switch is still at it, 409 `request_in_progress`;
/// at least one is the answer, and never a second transaction.
fn assert_one_answered(a: &Reply, b: &Reply) {
    for reply in [a, b] {
        assert!(
            reply.status() == "Successful" || reply.http == 409,
            "{}",
            reply.raw
        );
    }
    assert!(a.status() == "Successful" || b.status() == "Successful");
}

/// `text` (from [`config_text`]) with its store on the database at `url`.
fn on_postgres(text: &str, url: &str) -> String {
    assert!(
        text.contains("[storage]\n") && text.contains("[notifications]\n"),
        "config_text changed shape"
    );
    text.replacen("[storage]\n", "[storage]\nbackend = \"postgres\"\n", 1)
        .replacen(
            "[notifications]\n",
            &format!("[storage.postgres]\nurl = {url:?}\npool_size = 4\n[notifications]\n"),
            1,
        )
}

async fn count(database: &TestDatabase, sql: &str) -> i64 {
    database
        .client()
        .await
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

/// Metered calls reach the database in batches a moment after their
/// answers: the count in `sql` once it is `expected`, or as it stands after
/// 10 s.
async fn metered_count(url: &str, sql: &str, expected: i64) -> i64 {
    let client = manifold_test_postgres::connect(url).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let count: i64 = client.query_one(sql, &[]).await.unwrap().get(0);
        if count == expected || tokio::time::Instant::now() >= deadline {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn demo_on_postgres(dir: &Path, database: &TestDatabase) -> String {
    on_postgres(&in_process_demo_config(dir), database.url())
}

#[tokio::test]
async fn a_switch_on_postgres_serves_the_protocol_and_keeps_everything_in_the_database() {
    let Some(database) = TestDatabase::create("e2e_protocol").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let switch = InProcessSwitch::start(
        &parse_config(&demo_on_postgres(dir.path(), &database)),
        Default::default(),
    )
    .await;
    let quick = AppClient::new(&switch.url(), QUICK_APP, "demo");
    let balance = quick.get_balance("r-1", "t-1", "0123456789").await;
    assert_eq!(
        (balance.http, balance.status()),
        (200, "Successful"),
        "{}",
        balance.raw
    );
    // A repeat is answered byte for byte from the database.
    let again = quick.get_balance("r-1", "t-1", "0123456789").await;
    assert_eq!(again.raw, balance.raw);
    let transfer = quick.transfer("r-2", "t-2", "0123456789", 5_000).await;
    assert_eq!(transfer.status(), "Successful", "{}", transfer.raw);
    let taken = quick.transfer("r-3", "t-2", "0123456789", 5_000).await;
    assert_eq!(taken.http, 409, "{}", taken.raw);
    assert_eq!(quick.query("q-1", "t-2").await.status(), "Successful");

    // The OTP conversation: waiting, then completed by validate.
    let otp = AppClient::new(&switch.url(), OTP_APP, "demo");
    let waiting = otp.get_balance("r-1", "t-1", "0123456789").await;
    assert_eq!(waiting.status(), "WaitingForOTP", "{}", waiting.raw);
    let code = latest_otp(&dir.path().join("outbox.jsonl"), "2348022000008");
    let done = otp.validate("v-1", "t-1", "get_balance", &code).await;
    assert_eq!(done.status(), "Successful", "{}", done.raw);

    // What the database holds: two transactions of the quick app (the
    // refused transfer made none) and one of the OTP app, every call
    // metered.
    assert_eq!(
        count(&database, "SELECT count(*) FROM manifold_transactions").await,
        3
    );
    assert_eq!(
        count(
            &database,
            "SELECT count(*) FROM manifold_transactions WHERE status = 'Successful'"
        )
        .await,
        3
    );
    switch.stop().await;
    // Stopping writes what is still queued for metering: the 7 calls above
    // (5 of the quick app, the refused one included; 2 of the OTP app).
    assert_eq!(
        count(&database, "SELECT count(*) FROM manifold_metered_calls").await,
        7
    );
}

#[tokio::test]
async fn two_switch_processes_on_one_database_answer_for_each_other() {
    let Some(database) = TestDatabase::create("e2e_two").await else {
        return;
    };
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let switches: Vec<SwitchProcess> = dirs
        .iter()
        .map(|dir| {
            let path = dir.path().join("manifold.toml");
            std::fs::write(&path, demo_on_postgres(dir.path(), &database)).unwrap();
            SwitchProcess::start(&path)
        })
        .collect();
    let one = AppClient::new(&switches[0].url(), QUICK_APP, "demo");
    let two = AppClient::new(&switches[1].url(), QUICK_APP, "demo");

    let first = one.get_balance("r-1", "t-1", "0123456789").await;
    assert_eq!(first.status(), "Successful", "{}", first.raw);
    // The other switch answers the repeat from the shared record, and
    // reports the transaction.
    let repeat = two.get_balance("r-1", "t-1", "0123456789").await;
    assert_eq!(repeat.raw, first.raw);
    let query = two.query("q-1", "t-1").await;
    assert_eq!(query.status(), "Successful", "{}", query.raw);
    assert_eq!(query.body["data"]["transaction"]["transaction_ref"], "t-1");

    // One request_ref sent to both switches at once starts one transaction.
    for n in 0..20 {
        let (request_ref, transaction_ref) = (format!("race-{n}"), format!("t-race-{n}"));
        let (a, b) = tokio::join!(
            one.get_balance(&request_ref, &transaction_ref, "0123456789"),
            two.get_balance(&request_ref, &transaction_ref, "0123456789"),
        );
        assert_one_answered(&a, &b);
    }
    assert_eq!(
        count(&database, "SELECT count(*) FROM manifold_transactions").await,
        21
    );
    assert_eq!(
        count(
            &database,
            "SELECT count(*) FROM manifold_requests WHERE request_ref LIKE 'race-%'"
        )
        .await,
        20
    );
}

#[tokio::test]
async fn an_unreachable_database_is_a_clear_start_up_error_without_its_password() {
    // Needs no server: port 1 on loopback refuses at once.
    let dir = tempfile::tempdir().unwrap();
    let text = on_postgres(
        &in_process_demo_config(dir.path()),
        "postgres://manifold:pg-pass-5521@127.0.0.1:1/manifold",
    );
    let path = dir.path().join("manifold.toml");
    std::fs::write(&path, text).unwrap();
    let output = run_manifold(&[
        "--config",
        path.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ])
    .await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("[storage.postgres]") && stderr.contains("cannot connect to PostgreSQL"),
        "{stderr}"
    );
    assert!(!stderr.contains("pg-pass-5521"), "{stderr}");
}

#[tokio::test]
async fn a_sled_store_migrated_into_postgres_goes_on_serving_its_history() {
    let Some(database) = TestDatabase::create("e2e_migrate").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sled_config = dir.path().join("sled.toml");
    let postgres_config = dir.path().join("postgres.toml");
    std::fs::write(&sled_config, in_process_demo_config(dir.path())).unwrap();
    std::fs::write(&postgres_config, demo_on_postgres(dir.path(), &database)).unwrap();

    let switch = SwitchProcess::start(&sled_config);
    let quick = AppClient::new(&switch.url(), QUICK_APP, "demo");
    let otp = AppClient::new(&switch.url(), OTP_APP, "demo");
    let balance = quick.get_balance("r-1", "t-1", "0123456789").await;
    assert_eq!(balance.status(), "Successful", "{}", balance.raw);
    let transfer = quick.transfer("r-2", "t-2", "0123456789", 5_000).await;
    assert_eq!(transfer.status(), "Successful", "{}", transfer.raw);
    let waiting = otp.get_balance("r-1", "t-1", "0123456789").await;
    assert_eq!(waiting.status(), "WaitingForOTP", "{}", waiting.raw);
    assert!(switch
        .terminate(std::time::Duration::from_secs(10))
        .success());

    let data = dir.path().join("switch");
    let migrate = |config: &Path| {
        let (data, config) = (
            data.to_str().unwrap().to_owned(),
            config.to_str().unwrap().to_owned(),
        );
        async move { run_manifold(&["store", "migrate", "--from", &data, "--config", &config]).await }
    };
    let output = migrate(&postgres_config).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("copied 3 transactions and 3 metered calls"),
        "{stdout}"
    );
    // Into a database that holds a store already: refused, nothing added.
    let again = migrate(&postgres_config).await;
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // From a configuration that is not PostgreSQL's: refused, saying why.
    let wrong = migrate(&sled_config).await;
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("backend = \"postgres\""));

    // The switch on PostgreSQL, with the same data directory for the demo
    // bank's own state: the history answers as it did.
    let switch = SwitchProcess::start(&postgres_config);
    let quick = AppClient::new(&switch.url(), QUICK_APP, "demo");
    let otp = AppClient::new(&switch.url(), OTP_APP, "demo");
    assert_eq!(
        quick.get_balance("r-1", "t-1", "0123456789").await.raw,
        balance.raw
    );
    assert_eq!(
        quick.transfer("r-2", "t-2", "0123456789", 5_000).await.raw,
        transfer.raw
    );
    assert_eq!(quick.query("q-1", "t-2").await.status(), "Successful");
    // The OTP begun before the move completes after it.
    let code = latest_otp(&dir.path().join("outbox.jsonl"), "2348022000008");
    let done = otp.validate("v-1", "t-1", "get_balance", &code).await;
    assert_eq!(done.status(), "Successful", "{}", done.raw);
    assert_eq!(
        metered_count(
            database.url(),
            "SELECT count(*) FROM manifold_metered_calls",
            3 + 4
        )
        .await,
        3 + 4,
        "the 3 calls copied, and the 4 made since"
    );
}

mod scale_out {
    //! Issue 15's acceptance, in small: two switch processes and two
    //! `skopa-provider` processes on one PostgreSQL database, against the
    //! simulated Skopa, which counts what it executes.

    use std::sync::Arc;

    use manifold_e2e::*;
    use manifold_test_postgres::TestDatabase;
    use manifold_upstreams::skopa::{SkopaSim, User};
    use serde_json::json;

    /// Carol's transfers execute at once (no second factor); Alice's ask
    /// for Skopa's code by SMS.
    const CAROL: &str = "carol-skopa-refresh-token-0003";
    const ALICE: &str = "alice-skopa-refresh-token-0001";

    fn config(data: &std::path::Path, database: &TestDatabase, provider_url: &str) -> String {
        let (id, key, secret) = QUICK_APP;
        format!(
            "listen = \"127.0.0.1:0\"\n{TEST_DATA_AT_REST}[storage]\nbackend = \"postgres\"\npath = {:?}\n\
             [storage.postgres]\nurl = {:?}\npool_size = 8\n\
             [notifications]\noutbox = {:?}\n\
             [[apps]]\nid = \"{id}\"\napi_key = \"{key}\"\nsecret = \"{secret}\"\n\
             [apps.limits]\nrequests_per_second = {TEST_APP_RATE}\n\
             [apps.services.transfer_funds]\nproviders = [\"skopa\"]\notp_override = true\nmax_amount = 10000000\n\
             [[providers]]\nname = \"skopa\"\nservices = [\"transfer_funds\"]\ntimeout_ms = 5000\nquery_interval_ms = 0\n\
             mode = \"remote\"\nurl = \"{provider_url}\"\nsecret = \"{PROVIDER_SECRET}\"\nkey_id = \"{PROVIDER_KEY_ID}\"\n",
            data.join("switch").display().to_string(),
            database.url(),
            data.join("outbox.jsonl").display().to_string(),
        )
    }

    async fn transfer(app: &AppClient, request_ref: &str, credential: &str, amount: u64) -> Reply {
        app.post(
            "/transact",
            &transfer_body(app, request_ref, credential, amount),
        )
        .await
    }

    fn transfer_body(
        app: &AppClient,
        request_ref: &str,
        credential: &str,
        amount: u64,
    ) -> serde_json::Value {
        crate::skopa::body(
            app,
            "transfer_funds",
            request_ref,
            credential,
            amount,
            json!({"receiver_id": "u-bob"}),
        )
    }

    #[tokio::test]
    async fn every_transfer_executes_once_and_either_switch_carries_any_conversation() {
        let Some(database) = TestDatabase::create("e2e_scale_out").await else {
            return;
        };
        let user = |id: &str, refresh: &str, methods: &[&str]| User {
            id: id.into(),
            refresh_token: refresh.into(),
            balance: 100_000_000,
            methods: methods.iter().map(|m| m.to_string()).collect(),
            bank_accounts: vec![format!("bank-{id}")],
        };
        let sim = SkopaSim::start(vec![
            user("u-alice", ALICE, &["sms"]),
            user("u-bob", "bob-skopa-refresh-token-00002", &[]),
            user("u-carol", CAROL, &[]),
        ])
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (sim_url, state_url) = (sim.url(), database.url().to_owned());
        let providers: Vec<ProviderProcess> = ["one", "two"]
            .iter()
            .map(|name| {
                ProviderProcess::start_connector(
                    "skopa-provider",
                    &dir.path().join(format!("provider-{name}")),
                    "127.0.0.1:0",
                    &["--base-url", &sim_url, "--state-url", &state_url],
                )
            })
            .collect();
        let switches: Vec<SwitchProcess> = providers
            .iter()
            .enumerate()
            .map(|(n, provider)| {
                let data = dir.path().join(format!("switch-{n}"));
                std::fs::create_dir_all(&data).unwrap();
                let path = data.join("manifold.toml");
                std::fs::write(&path, config(&data, &database, &provider.url())).unwrap();
                SwitchProcess::start(&path)
            })
            .collect();
        let apps: Vec<Arc<AppClient>> = switches
            .iter()
            .map(|switch| Arc::new(AppClient::new(&switch.url(), QUICK_APP, "skopa")))
            .collect();

        // Each request_ref sent to both switches at once: executed once.
        for n in 0..20 {
            let request_ref = format!("race-{n}");
            let (a, b) = tokio::join!(
                transfer(&apps[0], &request_ref, CAROL, 1_00),
                transfer(&apps[1], &request_ref, CAROL, 1_00),
            );
            super::assert_one_answered(&a, &b);
        }
        assert_eq!(sim.executed().len(), 20, "one execution per request_ref");

        // Skopa's second factor, begun through one switch and its provider,
        // completed through the other switch and the other provider.
        let waiting = transfer(&apps[0], "otp-1", ALICE, 5_00).await;
        assert_eq!(waiting.status(), "WaitingForOTP", "{}", waiting.raw);
        let code = sim.code_sent("u-alice", "sms").unwrap();
        let done = apps[1]
            .validate("v-otp-1", "t-otp-1", "transfer_funds", &code)
            .await;
        assert_eq!(done.status(), "Successful", "{}", done.raw);
        assert_eq!(sim.executed().len(), 21);

        // One switch SIGKILLed under load: every transfer it acknowledged is
        // answered by the survivor, the same, and executed once.
        let acknowledged = Arc::new(std::sync::Mutex::new(Vec::new()));
        let progress = Arc::new(tokio::sync::Notify::new());
        let workers: Vec<_> = (0..4)
            .map(|worker| {
                let (app, acknowledged, progress) =
                    (apps[0].clone(), acknowledged.clone(), progress.clone());
                tokio::spawn(async move {
                    for n in 0.. {
                        let request_ref = format!("load-{worker}-{n}");
                        let body = transfer_body(&app, &request_ref, CAROL, 1_00);
                        // Until the switch is killed under it.
                        let Ok(reply) = app.try_post("/transact", &body).await else {
                            return;
                        };
                        if reply.status() == "Successful" {
                            acknowledged.lock().unwrap().push((request_ref, reply));
                            progress.notify_one();
                        }
                    }
                })
            })
            .collect();
        let mut switches = switches.into_iter();
        let (first, survivor) = (switches.next().unwrap(), switches.next().unwrap());
        tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while acknowledged.lock().unwrap().len() < 10 {
                progress.notified().await;
            }
        })
        .await
        .expect("ten transfers acknowledged within 30 s");
        first.kill();
        for worker in workers {
            tokio::time::timeout(std::time::Duration::from_secs(30), worker)
                .await
                .expect("every worker sees the switch gone")
                .unwrap();
        }
        let answered = std::mem::take(&mut *acknowledged.lock().unwrap());
        assert!(answered.len() >= 10, "{} answered", answered.len());
        let survivor_app = AppClient::new(&survivor.url(), QUICK_APP, "skopa");
        for (request_ref, reply) in &answered {
            let again = transfer(&survivor_app, request_ref, CAROL, 1_00).await;
            assert_eq!(again.raw, reply.raw, "{request_ref}");
        }
        let executed = sim.executed();
        for (request_ref, _) in &answered {
            let reference = format!("quick:t-{request_ref}");
            assert_eq!(
                executed
                    .iter()
                    .filter(|record| record["reference"] == reference.as_str())
                    .count(),
                1,
                "{request_ref}"
            );
        }
        drop(providers);
    }
}

#[tokio::test]
async fn a_database_stopped_under_load_loses_nothing_acknowledged_and_service_resumes_by_itself() {
    let Some(server) = manifold_test_postgres::TestServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let text = on_postgres(&in_process_demo_config(dir.path()), server.url()).replace(
        "pool_size = 4\n",
        "pool_size = 4\nstatement_timeout_ms = 2000\nconnect_timeout_ms = 1000\n",
    ) + &crate::billing::admin_table(&dir.path().join("audit.jsonl"));
    let path = dir.path().join("manifold.toml");
    std::fs::write(&path, text).unwrap();
    let switch = SwitchProcess::start(&path);
    let app = std::sync::Arc::new(AppClient::new(&switch.url(), QUICK_APP, "demo"));

    #[derive(Default)]
    struct Seen {
        acknowledged: Vec<(String, Reply)>,
        unavailable: usize,
        other: Vec<String>,
    }
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Seen::default()));
    let progress = std::sync::Arc::new(tokio::sync::Notify::new());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let (app, seen, progress, stop) =
                (app.clone(), seen.clone(), progress.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    n += 1;
                    let request_ref = format!("w{worker}-{n}");
                    let reply = app
                        .transfer(
                            &request_ref,
                            &format!("t-{request_ref}"),
                            "0123456789",
                            1_00,
                        )
                        .await;
                    {
                        let mut seen = seen.lock().unwrap();
                        match (reply.http, reply.status()) {
                            (200, "Successful") => seen.acknowledged.push((request_ref, reply)),
                            (503, _) if reply.error() == "storage_unavailable" => {
                                seen.unavailable += 1
                            }
                            _ => seen.other.push(reply.raw.clone()),
                        }
                    }
                    progress.notify_one();
                }
            })
        })
        .collect();
    let wait_for = |what: &'static str, done: Box<dyn Fn(&Seen) -> bool + Send>| {
        let (seen, progress) = (seen.clone(), progress.clone());
        async move {
            tokio::time::timeout(std::time::Duration::from_secs(60), async {
                while !done(&seen.lock().unwrap()) {
                    progress.notified().await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("within 60 s: {what}"));
        }
    };

    wait_for(
        "20 transfers acknowledged",
        Box::new(|s| s.acknowledged.len() >= 20),
    )
    .await;
    server.stop();
    wait_for(
        "calls answered 503 storage_unavailable while the database is away",
        Box::new(|s| s.unavailable >= 8),
    )
    .await;
    // The calls answered meanwhile are metered all the same: kept by the
    // switch, which says how many wait.
    let admin = switch.admin_url();
    let waiting = |scrape: &prometheus_parse::Scrape| {
        crate::admin::sample(scrape, "manifold_metered_calls_waiting", &[])
    };
    assert!(waiting(&crate::admin::scrape(&admin).await) > 0.0);
    let before_restart = seen.lock().unwrap().acknowledged.len();
    server.start_again();
    wait_for(
        "transfers acknowledged again once the database is back",
        Box::new(move |s| s.acknowledged.len() >= before_restart + 20),
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    // Between acknowledged and unavailable, a call may have been answered
    // otherwise only in words that say so: Pending (its record written, its
    // answer not) or 409 while another is in flight.
    for raw in &seen.other {
        assert!(
            raw.contains("Pending") || raw.contains("request_in_progress"),
            "{raw}"
        );
    }
    // Everything acknowledged, before the stop and after, is there: a
    // repeat is answered byte for byte.
    for (request_ref, reply) in &seen.acknowledged {
        let again = app
            .transfer(request_ref, &format!("t-{request_ref}"), "0123456789", 1_00)
            .await;
        assert_eq!(again.raw, reply.raw, "{request_ref}");
    }
    // Every answered call is metered, those whose metering met the
    // database away included (kept, and written once it answered): each
    // acknowledged transfer and its repeat.
    let acknowledged = 2 * seen.acknowledged.len() as i64;
    let metered = metered_count(
        server.url(),
        "SELECT count(*) FROM manifold_metered_calls
             WHERE http_status = 200 AND status = 'Successful'",
        acknowledged,
    )
    .await;
    assert_eq!(metered, acknowledged);
    assert_eq!(waiting(&crate::admin::scrape(&admin).await), 0.0);
    drop(switch);
}
