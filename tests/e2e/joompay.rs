//! The Joompay connector (seed 004) through the switch: app → switch →
//! connector → the simulated Joompay (gRPC and its token endpoint over
//! mutual TLS), all on 127.0.0.1, with the customer's consent given in a
//! browser. Compiled into the `manifold` binary, and as its own
//! `joompay-provider` process SIGKILLed between Joompay's execution of a
//! transfer and its answer.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use manifold_e2e::*;
use manifold_upstreams::browser::{joompay_consent, Decision};
use manifold_upstreams::joompay::{
    sample_recipients, CertFiles, Fault, JoompayCerts, JoompayOptions, JoompaySim, User,
};
use serde_json::{json, Value};

const TPP: &str = "manifold-e2e-tpp";
const RECIPIENT_IBAN: &str = "GB82WEST12345698765432";
const READS: [&str; 3] = ["get_balance", "lookup_account", "get_statement"];
const SERVICES: [&str; 5] = [
    "link_account",
    "get_balance",
    "lookup_account",
    "get_statement",
    "transfer_funds",
];

/// Bounds waits on other processes; not a measurement.
const LIMIT: Duration = Duration::from_secs(30);

struct Upstream {
    sim: JoompaySim,
    files: CertFiles,
    /// Where the connector serves the consent: chosen before it starts, as
    /// Joompay must know the callback URI.
    consent_listen: String,
}

impl Upstream {
    fn redirect_uri(&self) -> String {
        format!("http://{}/consent/callback", self.consent_listen)
    }
}

async fn upstream(dir: &Path) -> Upstream {
    let certs = JoompayCerts::generate(TPP);
    let files = certs.write(&dir.join("joompay-certs")).unwrap();
    let consent_listen = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let user = |name: &str, iban: &str, balance_cents: i64| User {
        username: name.into(),
        password: format!("{name}-password"),
        iban: iban.into(),
        holder_name: format!("{name} Example"),
        phone: "+44 7700 900001".into(),
        balance_cents,
    };
    let sim = JoompaySim::start(JoompayOptions {
        tpp_id: TPP.into(),
        redirect_uri: format!("http://{consent_listen}/consent/callback"),
        access_token_lifetime: Duration::from_secs(300),
        users: vec![
            user("alice", "LT121000011101001000", 100_000),
            user("bob", "LT601010012345678901", 50_00),
        ],
        recipients: sample_recipients(),
        certs,
    })
    .await
    .unwrap();
    Upstream {
        sim,
        files,
        consent_listen,
    }
}

/// A switch whose one provider, `joompay`, serves the quick app (Joompay's
/// SCA is Joompay's: no OTP of the switch's own).
fn config(data: &Path, endpoint: &str) -> String {
    let (id, key, secret) = QUICK_APP;
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\n{TEST_DATA_AT_REST}[storage]\npath = {:?}\n\
         [notifications]\noutbox = {:?}\n\
         [[apps]]\nid = \"{id}\"\napi_key = \"{key}\"\nsecret = \"{secret}\"\n\
         [apps.limits]\nrequests_per_second = {TEST_APP_RATE}\n",
        data.join("switch").display().to_string(),
        data.join("outbox.jsonl").display().to_string(),
    );
    for service in SERVICES {
        text.push_str(&format!(
            "[apps.services.{service}]\nproviders = [\"joompay\"]\notp_override = true\nmax_amount = 10000000\n"
        ));
    }
    text.push_str(&format!(
        "[[providers]]\nname = \"joompay\"\nservices = {SERVICES:?}\nread_only = {READS:?}\n\
         timeout_ms = 8000\nquery_interval_ms = 0\n{endpoint}\n"
    ));
    text
}

fn in_process(upstream: &Upstream) -> String {
    format!(
        "mode = \"in_process\"\nimplementation = \"joompay\"\n[providers.settings]\n\
         grpc_url = \"{}\"\nconsent_url = \"{}\"\ntoken_url = \"{}\"\ntpp_id = \"{TPP}\"\n\
         cert_file = {:?}\nkey_file = {:?}\nca_file = {:?}\n\
         consent_listen = \"{}\"\nredirect_uri = \"{}\"",
        upstream.sim.grpc_url(),
        upstream.sim.consent_url(),
        upstream.sim.token_url(),
        upstream.files.tpp_cert.display().to_string(),
        upstream.files.tpp_key.display().to_string(),
        upstream.files.ca.display().to_string(),
        upstream.consent_listen,
        upstream.redirect_uri(),
    )
}

fn provider_flags(upstream: &Upstream) -> Vec<String> {
    [
        "--grpc-url",
        &upstream.sim.grpc_url(),
        "--consent-url",
        &upstream.sim.consent_url(),
        "--token-url",
        &upstream.sim.token_url(),
        "--tpp-id",
        TPP,
        "--cert-file",
        upstream.files.tpp_cert.to_str().unwrap(),
        "--key-file",
        upstream.files.tpp_key.to_str().unwrap(),
        "--ca-file",
        upstream.files.ca.to_str().unwrap(),
        "--consent-listen",
        &upstream.consent_listen,
        "--upstream-timeout-ms",
        "3000",
    ]
    .map(str::to_owned)
    .to_vec()
}

async fn call(
    app: &AppClient,
    request_type: &str,
    request_ref: &str,
    customer_ref: &str,
    amount: u64,
    details: Value,
) -> Reply {
    let mut body = app.transact_body(
        request_ref,
        &format!("t-{request_ref}"),
        request_type,
        "0123456789",
        amount,
    );
    body["transaction"]["customer"]["customer_ref"] = json!(customer_ref);
    body["transaction"]["details"] = details;
    app.post("/transact", &body).await
}

/// `link_account` through the switch, the consent in a browser, and the
/// query that finds it linked.
async fn link(app: &AppClient, request_ref: &str, customer_ref: &str, username: &str) {
    let pending = call(app, "link_account", request_ref, customer_ref, 0, json!({})).await;
    assert_eq!(pending.status(), "Pending", "{}", pending.raw);
    let consent_url = pending.body["data"]["provider_response"]["consent_url"]
        .as_str()
        .unwrap_or_else(|| panic!("no consent_url: {}", pending.raw))
        .to_owned();
    // Asked while the customer is away, the provider says the same thing
    // each time: the switch writes nothing new.
    for round in 0..3 {
        let waiting = app
            .query(
                &format!("w-{request_ref}-{round}"),
                &format!("t-{request_ref}"),
            )
            .await;
        assert_eq!(waiting.status(), "Pending", "{}", waiting.raw);
        let history = waiting.body["data"]["transaction"]["history"]
            .as_array()
            .map_or(0, Vec::len);
        assert_eq!(
            history, 2,
            "received, then the consent's words: {}",
            waiting.raw
        );
    }
    let answer = joompay_consent(
        &consent_url,
        username,
        &format!("{username}-password"),
        Decision::Allow,
        true,
    )
    .await;
    assert_eq!(answer.status(), 200);
    let linked = app
        .query(&format!("q-{request_ref}"), &format!("t-{request_ref}"))
        .await;
    assert_eq!(linked.status(), "Successful", "{}", linked.raw);
}

fn to_recipient() -> Value {
    json!({"iban": RECIPIENT_IBAN, "recipient_name": "John Smith"})
}

/// Consent, reads, a transfer behind Joompay's SCA, and refusals.
async fn exercise(app: &AppClient, upstream: &Upstream) {
    let sim = &upstream.sim;
    link(app, "link-1", "cust-alice", "alice").await;
    let balance = call(app, "get_balance", "b-1", "cust-alice", 0, json!({})).await;
    assert_eq!(balance.status(), "Successful", "{}", balance.raw);
    assert_eq!(
        balance.body["data"]["provider_response"]["balance"]["amount"],
        "1000.00"
    );

    let waiting = call(
        app,
        "transfer_funds",
        "x-1",
        "cust-alice",
        12_34,
        to_recipient(),
    )
    .await;
    assert_eq!(waiting.status(), "WaitingForOTP", "{}", waiting.raw);
    assert!(
        waiting.message().contains("Joompay sent"),
        "{}",
        waiting.raw
    );
    let wrong = app
        .validate("v-1", "t-x-1", "transfer_funds", "000000")
        .await;
    assert_eq!(wrong.status(), "WaitingForOTP", "{}", wrong.raw);
    let code = sim.sca_code("alice").unwrap();
    let done = app.validate("v-2", "t-x-1", "transfer_funds", &code).await;
    assert_eq!(done.status(), "Successful", "{}", done.raw);
    assert_eq!(
        done.body["data"]["provider_response"]["amount"]["amount"],
        "12.34"
    );
    assert_eq!(sim.balance_cents("alice"), Some(98_766));

    let bad_iban = call(
        app,
        "transfer_funds",
        "x-2",
        "cust-alice",
        1_00,
        json!({"iban": "GB00WEST12345698765432", "recipient_name": "John Smith"}),
    )
    .await;
    assert_eq!(bad_iban.status(), "Failed", "{}", bad_iban.raw);
    assert_eq!(
        bad_iban.body["data"]["provider_response_code"],
        "invalid_iban"
    );
    let mismatch = call(
        app,
        "transfer_funds",
        "x-3",
        "cust-alice",
        1_00,
        json!({"iban": RECIPIENT_IBAN, "recipient_name": "Jane Doe"}),
    )
    .await;
    assert_eq!(mismatch.status(), "Failed", "{}", mismatch.raw);
    assert_eq!(
        mismatch.body["data"]["provider_response_code"],
        "recipient_name_mismatch"
    );
    // An access token Joompay expired early is renewed with the refresh
    // token, once, and the call goes through.
    let refreshes = sim.refreshes();
    sim.expire_access_tokens();
    let renewed = call(app, "get_balance", "b-4", "cust-alice", 0, json!({})).await;
    assert_eq!(renewed.status(), "Successful", "{}", renewed.raw);
    assert_eq!(sim.refreshes(), refreshes + 1);
    let stranger = call(app, "get_balance", "b-2", "cust-nobody", 0, json!({})).await;
    assert_eq!(stranger.status(), "Failed", "{}", stranger.raw);
    assert_eq!(
        stranger.body["data"]["provider_response_code"],
        "not_linked"
    );
    assert_eq!(sim.executions().len(), 1);
}

#[tokio::test]
async fn the_manifold_binary_runs_joompay_compiled_in() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = upstream(dir.path()).await;
    let path = dir.path().join("manifold.toml");
    std::fs::write(&path, config(dir.path(), &in_process(&upstream))).unwrap();
    let switch = SwitchProcess::start(&path);
    let app = AppClient::new(&switch.url(), QUICK_APP, "joompay");
    exercise(&app, &upstream).await;

    // Restarted: the customer's link was kept (sealed) in the switch's data.
    switch.kill();
    let switch = SwitchProcess::start(&path);
    let app = AppClient::new(&switch.url(), QUICK_APP, "joompay");
    let balance = call(&app, "get_balance", "b-3", "cust-alice", 0, json!({})).await;
    assert_eq!(balance.status(), "Successful", "{}", balance.raw);
    let stored = std::fs::read_dir(dir.path().join("switch").join("joompay"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_file())
        .map(|entry| std::fs::read(entry.path()).unwrap())
        .collect::<Vec<_>>()
        .concat();
    assert!(!stored.is_empty());
    assert!(
        !String::from_utf8_lossy(&stored).contains("refresh"),
        "the customer's tokens are sealed at rest"
    );
}

#[tokio::test]
async fn joompay_as_a_process_links_a_customer_and_refreshes_once_for_fifty_calls() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = upstream(dir.path()).await;
    let flags = provider_flags(&upstream);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let provider = ProviderProcess::start_connector(
        "joompay-provider",
        &dir.path().join("joompay-provider"),
        "127.0.0.1:0",
        &flags,
    );
    let config = parse_config(&config(
        dir.path(),
        &format!(
            "mode = \"remote\"\nurl = \"{}\"\nsecret = \"{PROVIDER_SECRET}\"\nkey_id = \"{PROVIDER_KEY_ID}\"",
            provider.url()
        ),
    ));
    let switch = InProcessSwitch::start(&config, Default::default()).await;
    let app = Arc::new(AppClient::new(&switch.url(), QUICK_APP, "joompay"));
    exercise(&app, &upstream).await;

    let before = upstream.sim.refreshes();
    upstream.sim.expire_access_tokens();
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                call(
                    &app,
                    "get_balance",
                    &format!("s-{i}"),
                    "cust-alice",
                    0,
                    json!({}),
                )
                .await
            })
        })
        .collect();
    for call in calls {
        let reply = call.await.unwrap();
        assert_eq!(reply.status(), "Successful", "{}", reply.raw);
    }
    assert_eq!(
        upstream.sim.refreshes(),
        before + 1,
        "one refresh for fifty calls"
    );
    switch.stop().await;
}

#[tokio::test]
async fn a_connector_killed_after_joompay_executed_a_transfer_finds_it_and_moves_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = upstream(dir.path()).await;
    let sim = &upstream.sim;
    let flags = provider_flags(&upstream);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let data = dir.path().join("joompay-provider");
    let provider =
        ProviderProcess::start_connector("joompay-provider", &data, "127.0.0.1:0", &flags);
    let listen = provider.addr.to_string();
    let config = parse_config(&config(
        dir.path(),
        &format!(
            "mode = \"remote\"\nurl = \"{}\"\nsecret = \"{PROVIDER_SECRET}\"\nkey_id = \"{PROVIDER_KEY_ID}\"",
            provider.url()
        ),
    ));
    let switch = InProcessSwitch::start(&config, Default::default()).await;
    let app = Arc::new(AppClient::new(&switch.url(), QUICK_APP, "joompay"));
    link(&app, "link-1", "cust-alice", "alice").await;
    let waiting = call(
        &app,
        "transfer_funds",
        "x-1",
        "cust-alice",
        40_00,
        to_recipient(),
    )
    .await;
    assert_eq!(waiting.status(), "WaitingForOTP", "{}", waiting.raw);
    let code = sim.sca_code("alice").unwrap();

    // Joompay executes the confirmed transfer and holds its answer; the
    // connector is SIGKILLed while it waits.
    sim.set_fault(Fault::HoldAfterExecuting);
    let confirm = {
        let app = app.clone();
        let code = code.clone();
        tokio::spawn(async move { app.validate("v-1", "t-x-1", "transfer_funds", &code).await })
    };
    tokio::time::timeout(LIMIT, async {
        while sim.executions().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("Joompay executes the transfer");
    provider.kill();
    let reply = tokio::time::timeout(LIMIT, confirm).await.unwrap().unwrap();
    assert_ne!(reply.status(), "Successful", "{}", reply.raw);
    assert_ne!(reply.status(), "Failed", "{}", reply.raw);
    sim.release_held();
    sim.set_fault(Fault::None);

    // Back on the same port and data: asked again with the same
    // client_operation_uuid, Joompay answers the execution it made.
    let _provider = ProviderProcess::start_connector("joompay-provider", &data, &listen, &flags);
    let found = app.query("q-1", "t-x-1").await;
    assert_eq!(found.status(), "Successful", "{}", found.raw);
    let again = app.query("q-2", "t-x-1").await;
    assert_eq!(again.status(), "Successful", "{}", again.raw);
    let executions = sim.executions();
    assert_eq!(executions.len(), 1, "Joompay moved the money once");
    assert_eq!(executions[0].amount_cents, 40_00);
    assert_eq!(sim.balance_cents("alice"), Some(96_000));
    switch.stop().await;
}
