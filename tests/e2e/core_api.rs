//! The core-api connector (seed 002) through the switch: app → switch →
//! connector → the simulated core-api and auth service, all on 127.0.0.1.
//! Compiled into the switch, and as its own `core-api-provider` process
//! killed between core-api's acceptance of a charge and its answer.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use manifold_connector_core_api::{service_settings, CoreApiConfig, CoreApiConnector};
use manifold_crypto::SecureKind;
use manifold_e2e::*;
use manifold_provider::notify::OutboxNotifier;
use manifold_provider::{GroupCommit, Provider};
use manifold_upstreams::core_api::{CoreApiSim, Fault, User};
use serde_json::{json, Value};

const ALICE: &str = "alice-refresh-token-000000000001";
const BOB_DISABLED: &str = "bob-refresh-token-0000000000002";

/// Bounds waits on other processes; not a measurement.
const LIMIT: Duration = Duration::from_secs(30);

async fn sim() -> CoreApiSim {
    CoreApiSim::start(vec![
        User {
            user_id: 1,
            username: "alice".into(),
            enabled: true,
            refresh_token: ALICE.into(),
        },
        User {
            user_id: 2,
            username: "bob".into(),
            enabled: false,
            refresh_token: BOB_DISABLED.into(),
        },
    ])
    .await
    .unwrap()
}

/// A switch whose one provider, `core-api`, serves `collect` to the quick
/// app; `endpoint` is the provider's `mode` and its keys (last, so that it
/// may end with a `[providers.settings]` table).
fn config(data: &Path, endpoint: &str) -> String {
    let (id, key, secret) = QUICK_APP;
    format!(
        "listen = \"127.0.0.1:0\"\n{TEST_DATA_AT_REST}[storage]\npath = {:?}\n\
         [notifications]\noutbox = {:?}\n\
         [[providers]]\nname = \"core-api\"\nservices = [\"collect\"]\ntimeout_ms = 5000\nquery_interval_ms = 0\n{endpoint}\n\
         [[apps]]\nid = \"{id}\"\napi_key = \"{key}\"\nsecret = \"{secret}\"\n\
         [apps.limits]\nrequests_per_second = {TEST_APP_RATE}\n\
         [apps.services.collect]\nproviders = [\"core-api\"]\notp_override = true\nmax_amount = 10000000\n",
        data.join("switch").display().to_string(),
        data.join("outbox.jsonl").display().to_string(),
    )
}

/// A `collect` of `amount` for the customer whose core-api credential is
/// `credential` (`auth.type = "token"`).
fn collect_body(
    app: &AppClient,
    request_ref: &str,
    transaction_ref: &str,
    credential: &str,
    amount: u64,
) -> Value {
    let mut body = app.transact_body(
        request_ref,
        transaction_ref,
        "collect",
        "0123456789",
        amount,
    );
    body["auth"]["type"] = json!("token");
    body["auth"]["secure"] = json!(app.seal(
        request_ref,
        SecureKind::Token,
        &json!({ "token": credential })
    ));
    body
}

async fn collect(
    app: &AppClient,
    request_ref: &str,
    transaction_ref: &str,
    credential: &str,
    amount: u64,
) -> Reply {
    app.post(
        "/transact",
        &collect_body(app, request_ref, transaction_ref, credential, amount),
    )
    .await
}

#[tokio::test]
async fn core_api_compiled_in_charges_once_per_transaction_and_never_reports_a_settlement() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path().join("core-api")).unwrap();
    let provider = manifold_connector_core_api::open(
        &db,
        GroupCommit::start(db.clone()).unwrap(),
        Arc::new(OutboxNotifier::new(
            dir.path().join("provider-outbox.jsonl"),
        )),
        CoreApiConnector::new(CoreApiConfig::new(&sim.auth_url(), &sim.core_url(), "USD").unwrap())
            .unwrap(),
        service_settings(),
    )
    .unwrap();
    let config = parse_config(&config(
        dir.path(),
        "mode = \"in_process\"\nimplementation = \"core-api\"",
    ));
    let implementations = HashMap::from([(
        "core-api".to_owned(),
        Arc::new(provider) as Arc<dyn Provider>,
    )]);
    let switch = InProcessSwitch::start(&config, implementations).await;
    let app = AppClient::new(&switch.url(), QUICK_APP, "core-api");

    // The main flow: queued upstream, Pending with core-api's answer.
    let reply = collect(&app, "r-1", "t-1", ALICE, 2_500).await;
    assert_eq!(
        (reply.http, reply.status()),
        (202, "Pending"),
        "{}",
        reply.raw
    );
    assert_eq!(reply.body["data"]["provider_response_code"], "09");
    assert_eq!(
        reply.body["data"]["provider_response"],
        json!({"amount": 25.0, "currency": "USD", "user_id": 1})
    );
    assert!(reply.message().contains("queued"), "{}", reply.raw);
    // A repeat and a query answer without charging again.
    assert_eq!(
        collect(&app, "r-1", "t-1", ALICE, 2_500).await.status(),
        "Pending"
    );
    let query = app.query("q-1", "t-1").await;
    assert_eq!(query.status(), "Pending", "{}", query.raw);
    assert_eq!(sim.accepted().len(), 1);

    // Expired tokens: one refresh, and the charge goes through.
    sim.expire_tokens();
    assert_eq!(
        collect(&app, "r-2", "t-2", ALICE, 100).await.status(),
        "Pending"
    );
    assert_eq!(sim.token_requests(), 2);

    // Refused upstream: Failed, with core-api's code.
    let reply = collect(&app, "r-3", "t-3", BOB_DISABLED, 100).await;
    assert_eq!(reply.status(), "Failed", "{}", reply.raw);
    assert_eq!(
        reply.body["data"]["provider_response_code"],
        "user_disabled"
    );

    // core-api not taking work: 503, nothing recorded, so the same
    // request_ref goes through once it is back.
    sim.set_fault(Fault::Unavailable);
    let reply = collect(&app, "r-4", "t-4", ALICE, 100).await;
    assert_eq!(reply.http, 503, "{}", reply.raw);
    sim.set_fault(Fault::None);
    assert_eq!(
        collect(&app, "r-4", "t-4", ALICE, 100).await.status(),
        "Pending"
    );
    assert_eq!(sim.accepted().len(), 3);
    switch.stop().await;
}

/// The `manifold` binary's own compiled-in core-api, configured by its
/// `[providers.settings]`.
#[tokio::test]
async fn the_manifold_binary_runs_core_api_compiled_in_from_its_settings() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = |currency: &str| {
        format!(
            "mode = \"in_process\"\nimplementation = \"core-api\"\n[providers.settings]\n\
             auth_url = \"{}\"\ncore_url = \"{}\"\ncurrency = \"{currency}\"",
            sim.auth_url(),
            sim.core_url()
        )
    };
    let path = dir.path().join("manifold.toml");
    std::fs::write(&path, config(dir.path(), &settings("usd"))).unwrap();
    let refused = run_manifold(&["--config", path.to_str().unwrap()]).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("providers[0].settings") && stderr.contains("currency"),
        "{stderr}"
    );

    std::fs::write(&path, config(dir.path(), &settings("USD"))).unwrap();
    let switch = SwitchProcess::start(&path);
    let app = AppClient::new(&switch.url(), QUICK_APP, "core-api");
    let reply = collect(&app, "r-1", "t-1", ALICE, 990).await;
    assert_eq!(
        (reply.http, reply.status()),
        (202, "Pending"),
        "{}",
        reply.raw
    );
    assert_eq!(reply.body["data"]["provider_response_code"], "09");
    // Killed and restarted: the provider's state was in the switch's
    // database, so the repeat is answered and nothing is charged again.
    switch.kill();
    let switch = SwitchProcess::start(&path);
    let app = AppClient::new(&switch.url(), QUICK_APP, "core-api");
    assert_eq!(
        collect(&app, "r-1", "t-1", ALICE, 990).await.status(),
        "Pending"
    );
    assert_eq!(
        app.query("q-1", "t-1").await.body["data"]["provider_response_code"],
        "09"
    );
    assert_eq!(sim.accepted().len(), 1);
}

#[tokio::test]
async fn fifty_concurrent_collects_through_the_switch_with_an_expired_token_make_one_token_request()
{
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let provider_data = dir.path().join("core-api-provider");
    let core_api = ProviderProcess::start_connector(
        "core-api-provider",
        &provider_data,
        "127.0.0.1:0",
        &[
            "--auth-url",
            &sim.auth_url(),
            "--core-url",
            &sim.core_url(),
            "--currency",
            "USD",
        ],
    );
    let config = parse_config(&config(
        dir.path(),
        &format!(
            "mode = \"remote\"\nurl = \"{}\"\nsecret = \"{PROVIDER_SECRET}\"\nkey_id = \"{PROVIDER_KEY_ID}\"",
            core_api.url()
        ),
    ));
    let switch = InProcessSwitch::start(&config, HashMap::new()).await;
    let app = Arc::new(AppClient::new(&switch.url(), QUICK_APP, "core-api"));
    assert_eq!(
        collect(&app, "warm", "warm", ALICE, 100).await.status(),
        "Pending"
    );
    sim.expire_tokens();
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                collect(&app, &format!("r-{i}"), &format!("t-{i}"), ALICE, 100).await
            })
        })
        .collect();
    for call in calls {
        let reply = call.await.unwrap();
        assert_eq!(reply.status(), "Pending", "{}", reply.raw);
    }
    assert_eq!(sim.token_requests(), 2, "one refresh for fifty calls");
    assert_eq!(sim.accepted().len(), 51);
    switch.stop().await;
}

#[tokio::test]
async fn a_connector_killed_after_core_api_took_the_charge_never_sends_it_again() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let provider_data = dir.path().join("core-api-provider");
    let upstream = [
        "--auth-url",
        &sim.auth_url(),
        "--core-url",
        &sim.core_url(),
        "--currency",
        "USD",
    ]
    .map(str::to_owned);
    let upstream: Vec<&str> = upstream.iter().map(String::as_str).collect();
    let core_api = ProviderProcess::start_connector(
        "core-api-provider",
        &provider_data,
        "127.0.0.1:0",
        &upstream,
    );
    let listen = core_api.addr.to_string();
    let config = parse_config(&config(
        dir.path(),
        &format!(
            "mode = \"remote\"\nurl = \"{}\"\nsecret = \"{PROVIDER_SECRET}\"\nkey_id = \"{PROVIDER_KEY_ID}\"",
            core_api.url()
        ),
    ));
    let switch = InProcessSwitch::start(&config, HashMap::new()).await;
    let app = Arc::new(AppClient::new(&switch.url(), QUICK_APP, "core-api"));

    // core-api takes the charge and holds its answer; the connector is
    // SIGKILLed while it waits.
    sim.set_fault(Fault::HoldAfterAccepting);
    let first = {
        let app = app.clone();
        tokio::spawn(async move { collect(&app, "r-1", "t-1", ALICE, 700).await })
    };
    tokio::time::timeout(LIMIT, async {
        while sim.accepted().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("core-api receives the charge");
    core_api.kill();
    let reply = tokio::time::timeout(LIMIT, first).await.unwrap().unwrap();
    assert_eq!(reply.status(), "Pending", "{}", reply.raw);
    sim.release_held();
    sim.set_fault(Fault::None);

    // Back on the same port and data: the charge it had marked as started
    // is Pending with the reason, and nothing sends it again.
    let _core_api =
        ProviderProcess::start_connector("core-api-provider", &provider_data, &listen, &upstream);
    let query = app.query("q-1", "t-1").await;
    assert_eq!(query.status(), "Pending", "{}", query.raw);
    assert_eq!(
        query.body["data"]["provider_response_code"], "68",
        "{}",
        query.raw
    );
    assert!(
        query.message().contains("never sent again"),
        "{}",
        query.raw
    );
    assert_eq!(
        collect(&app, "r-1", "t-1", ALICE, 700).await.status(),
        "Pending"
    );
    let reused = collect(&app, "r-2", "t-1", ALICE, 700).await;
    assert_eq!(reused.http, 409, "{}", reused.raw);
    assert_eq!(sim.accepted().len(), 1, "core-api charged at most once");
    switch.stop().await;
}

/// The `manifold` binary with core-api compiled in, SIGKILLed while core-api
/// holds its answer to a charge it took: the switch and the provider share
/// one database, and after the restart the charge is `Pending` with `68`
/// and is never sent again.
#[tokio::test]
async fn the_manifold_binary_killed_while_core_api_holds_a_charge_never_sends_it_again() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = format!(
        "mode = \"in_process\"\nimplementation = \"core-api\"\n[providers.settings]\n\
         auth_url = \"{}\"\ncore_url = \"{}\"\ncurrency = \"USD\"",
        sim.auth_url(),
        sim.core_url()
    );
    let path = dir.path().join("manifold.toml");
    std::fs::write(&path, config(dir.path(), &settings)).unwrap();
    let switch = SwitchProcess::start(&path);
    let app = Arc::new(AppClient::new(&switch.url(), QUICK_APP, "core-api"));

    sim.set_fault(Fault::HoldAfterAccepting);
    let first = {
        let app = app.clone();
        tokio::spawn(async move { collect(&app, "r-1", "t-1", ALICE, 300).await })
    };
    tokio::time::timeout(LIMIT, async {
        while sim.accepted().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("core-api receives the charge");
    switch.kill();
    // The call to the killed switch has no answer to wait for.
    first.abort();
    sim.release_held();
    sim.set_fault(Fault::None);

    // Restarted on the same data: the provider's marker says the charge may
    // have gone, so it is Pending with 68, and nothing sends it again.
    let switch = SwitchProcess::start(&path);
    let app = AppClient::new(&switch.url(), QUICK_APP, "core-api");
    let settled = tokio::time::timeout(LIMIT, async {
        let mut round = 0;
        loop {
            round += 1;
            let query = app.query(&format!("q-{round}"), "t-1").await;
            if query.body["data"]["provider_response_code"] == "68" {
                return query;
            }
            assert_ne!(query.status(), "Successful", "{}", query.raw);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the restarted switch reports the charge's fate");
    assert_eq!(settled.status(), "Pending", "{}", settled.raw);
    assert!(
        settled.message().contains("never sent again"),
        "{}",
        settled.raw
    );
    let repeat = collect(&app, "r-1", "t-1", ALICE, 300).await;
    assert_eq!(repeat.status(), "Pending", "{}", repeat.raw);
    assert_eq!(sim.accepted().len(), 1, "charged at most once");
}
