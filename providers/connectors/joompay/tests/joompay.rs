//! The Joompay provider (the SDK's service around `JoompayConnector`, sled in
//! a temporary directory, the consent pages on a loopback port) against the
//! simulated Joompay on 127.0.0.1 — gRPC and the token endpoint over mutual
//! TLS with a CA made for the test — driven through the `Provider` trait as
//! the switch drives it, and through the customer's browser as a browser
//! would (redirects followed by hand, the cookie carried).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use manifold_connector_joompay::config::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_CONSENT_TTL, DEFAULT_TOKEN_REFRESH_MARGIN,
};
use manifold_connector_joompay::transformers::codes;
use manifold_connector_joompay::{service_settings, JoompayConfig, JoompayProvider};
use manifold_crypto::{
    CustomerToken, DataKey, DataKeys, SecretString, SourceDetails, ValidationInput,
};
use manifold_provider::notify::OutboxNotifier;
use manifold_provider::{
    Customer, GroupCommit, Provider, ProviderReply, QueryRequest, Status, TransactRequest,
    TransactionDetails, ValidateRequest,
};
use manifold_upstreams::browser::{
    back_to, browser, joompay_consent, joompay_consent_until_callback, Decision,
};
use manifold_upstreams::joompay::{
    sample_recipients, Fault, JoompayCerts, JoompayOptions, JoompaySim, User,
};
use reqwest::{StatusCode, Url};
use serde_json::{json, Value};
use tempfile::TempDir;

const APP: &str = "pisp-app";
const TPP: &str = "manifold-test-tpp";
/// A valid IBAN (the standard's own example).
const RECIPIENT_IBAN: &str = "GB82WEST12345698765432";

fn users() -> Vec<User> {
    vec![
        User {
            username: "alice".into(),
            password: "alice-password".into(),
            iban: "LT121000011101001000".into(),
            holder_name: "Alice Example".into(),
            phone: "+44 7700 900001".into(),
            balance_cents: 100_000,
        },
        User {
            username: "bob".into(),
            password: "bob-password".into(),
            iban: "LT601010012345678901".into(),
            holder_name: "Bob Example".into(),
            phone: "+44 7700 900002".into(),
            balance_cents: 50_00,
        },
    ]
}

struct Rig {
    sim: JoompaySim,
    provider: Arc<JoompayProvider>,
    consent: SocketAddr,
    _dir: TempDir,
}

async fn rig_with(timeout: Duration) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let certs = JoompayCerts::generate(TPP);
    let files = certs.write(&dir.path().join("certs")).unwrap();
    let consent_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let consent = consent_listener.local_addr().unwrap();
    let redirect_uri = format!("http://{consent}/consent/callback");
    let sim = JoompaySim::start(JoompayOptions {
        tpp_id: TPP.into(),
        redirect_uri: redirect_uri.clone(),
        access_token_lifetime: Duration::from_secs(300),
        users: users(),
        recipients: sample_recipients(),
        certs,
    })
    .await
    .unwrap();
    let config = JoompayConfig {
        grpc_url: Url::parse(&sim.grpc_url()).unwrap(),
        consent_url: Url::parse(&sim.consent_url()).unwrap(),
        token_url: Url::parse(&sim.token_url()).unwrap(),
        tpp_id: TPP.into(),
        cert_file: files.tpp_cert.clone(),
        key_file: files.tpp_key.clone(),
        ca_file: Some(files.ca.clone()),
        consent_listen: consent,
        redirect_uri: Url::parse(&redirect_uri).unwrap(),
        user_time_zone: "Europe/London".into(),
        timeout,
        connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        token_refresh_margin: DEFAULT_TOKEN_REFRESH_MARGIN,
        consent_ttl: DEFAULT_CONSENT_TTL,
    };
    let db = sled::open(dir.path().join("db")).unwrap();
    let (key, _) = DataKey::generate("k1").unwrap();
    let keys = Arc::new(DataKeys::new(key, vec![]).unwrap());
    let connector = manifold_connector_joompay::connector(config, &db, keys.clone()).unwrap();
    tokio::spawn(
        connector
            .consent_pages()
            .serve(consent_listener, std::future::pending()),
    );
    let mut settings = service_settings();
    settings.data_keys = Some(keys);
    let provider = manifold_connector_joompay::open(
        &db,
        GroupCommit::start(db.clone()).unwrap(),
        Arc::new(OutboxNotifier::new(dir.path().join("outbox.jsonl"))),
        connector,
        settings,
    )
    .unwrap();
    Rig {
        sim,
        provider: Arc::new(provider),
        consent,
        _dir: dir,
    }
}

async fn rig() -> Rig {
    rig_with(Duration::from_secs(10)).await
}

fn request(
    app: &str,
    request_type: &str,
    transaction_ref: &str,
    customer_ref: &str,
    amount: u64,
    details: Value,
) -> TransactRequest {
    TransactRequest {
        app_id: app.into(),
        request_ref: format!("req-{transaction_ref}"),
        request_type: request_type.into(),
        transaction_ref: transaction_ref.into(),
        otp_override: false,
        read_only: matches!(
            request_type,
            "get_balance" | "lookup_account" | "get_statement"
        ),
        // Joompay reads the consent, not the source.
        source: SourceDetails::Token(CustomerToken {
            token: SecretString::from("not-read-by-joompay"),
        }),
        transaction: TransactionDetails {
            amount,
            customer: Customer {
                customer_ref: Some(customer_ref.into()),
                ..Customer::default()
            },
            details: Some(details),
            ..TransactionDetails::default()
        },
    }
}

fn transfer(transaction_ref: &str, customer_ref: &str, amount: u64) -> TransactRequest {
    request(
        APP,
        "transfer_funds",
        transaction_ref,
        customer_ref,
        amount,
        json!({"iban": RECIPIENT_IBAN, "recipient_name": "John Smith"}),
    )
}

async fn transact(rig: &Rig, request: TransactRequest) -> ProviderReply {
    rig.provider.transact(request).await.unwrap()
}

async fn validate(rig: &Rig, transaction_ref: &str, code: &str) -> ProviderReply {
    rig.provider
        .validate(ValidateRequest {
            app_id: APP.into(),
            request_ref: format!("val-{transaction_ref}-{code}"),
            request_type: "transfer_funds".into(),
            transaction_ref: transaction_ref.into(),
            input: ValidationInput::Otp(SecretString::from(code)),
        })
        .await
        .unwrap()
}

async fn query(rig: &Rig, app: &str, request_type: &str, transaction_ref: &str) -> ProviderReply {
    rig.provider
        .query(QueryRequest {
            app_id: app.into(),
            request_type: request_type.into(),
            transaction_ref: transaction_ref.into(),
        })
        .await
        .unwrap()
}

/// Links `customer_ref` for the app to `username`'s Joompay account.
async fn link(rig: &Rig, app: &str, transaction_ref: &str, customer_ref: &str, username: &str) {
    let pending = transact(
        rig,
        request(
            app,
            "link_account",
            transaction_ref,
            customer_ref,
            0,
            json!({}),
        ),
    )
    .await;
    assert_eq!(pending.status, Status::Pending, "{pending:?}");
    let consent_url = pending.provider_response.as_ref().unwrap()["consent_url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(consent_url.starts_with(&format!("http://{}/consent/start?session=", rig.consent)));
    let password = format!("{username}-password");
    let answer = joompay_consent(&consent_url, username, &password, Decision::Allow, true).await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(answer.text().await.unwrap().contains("linked"));
    let linked = query(rig, app, "link_account", transaction_ref).await;
    assert_eq!(linked.status, Status::Successful, "{linked:?}");
}

#[tokio::test]
async fn a_consented_customer_is_read_and_only_for_the_app_that_linked_them() {
    let rig = rig().await;
    link(&rig, APP, "link-1", "cust-alice", "alice").await;

    let balance = transact(
        &rig,
        request(APP, "get_balance", "b-1", "cust-alice", 0, json!({})),
    )
    .await;
    assert_eq!(balance.status, Status::Successful, "{balance:?}");
    assert_eq!(
        balance.provider_response.as_ref().unwrap()["balance"]["amount"],
        "1000.00"
    );
    let details = transact(
        &rig,
        request(APP, "lookup_account", "l-1", "cust-alice", 0, json!({})),
    )
    .await;
    assert_eq!(
        details.provider_response.as_ref().unwrap()["iban"],
        "LT121000011101001000"
    );
    let statement = transact(
        &rig,
        request(
            APP,
            "get_statement",
            "s-1",
            "cust-alice",
            0,
            json!({"page_size": 5}),
        ),
    )
    .await;
    assert_eq!(statement.status, Status::Successful, "{statement:?}");
    assert!(statement.provider_response.as_ref().unwrap()["activities"].is_array());

    // The same customer_ref from another app, or another customer: nothing.
    let other_app = transact(
        &rig,
        request(
            "other-app",
            "get_balance",
            "b-2",
            "cust-alice",
            0,
            json!({}),
        ),
    )
    .await;
    assert_eq!(
        (other_app.status, other_app.provider_response_code.as_str()),
        (Status::Failed, codes::NOT_LINKED)
    );
    let unknown = transact(
        &rig,
        request(APP, "get_balance", "b-3", "cust-nobody", 0, json!({})),
    )
    .await;
    assert_eq!(unknown.provider_response_code, codes::NOT_LINKED);
    assert_eq!(
        rig.sim.token_requests(),
        1,
        "the consent's code, and no refresh"
    );
}

#[tokio::test]
async fn a_transfer_waits_for_joompays_sca_code_and_moves_money_once() {
    let rig = rig().await;
    link(&rig, APP, "link-1", "cust-alice", "alice").await;
    let waiting = transact(&rig, transfer("t-1", "cust-alice", 25_00)).await;
    assert_eq!(waiting.status, Status::WaitingForOtp, "{waiting:?}");
    assert!(
        waiting.message.contains("Joompay sent"),
        "{}",
        waiting.message
    );
    assert!(
        rig.sim.executions().is_empty(),
        "nothing moves before the code"
    );

    let wrong = validate(&rig, "t-1", "000000").await;
    assert_eq!(wrong.status, Status::WaitingForOtp, "{wrong:?}");
    assert!(wrong.message.contains("not accepted"), "{}", wrong.message);

    let code = rig.sim.sca_code("alice").unwrap();
    let done = validate(&rig, "t-1", &code).await;
    assert_eq!(done.status, Status::Successful, "{done:?}");
    let response = done.provider_response.as_ref().unwrap();
    assert_eq!(response["amount"]["amount"], "25.00");
    assert_eq!(response["recipient_iban"], RECIPIENT_IBAN);
    assert_eq!(rig.sim.balance_cents("alice"), Some(97_500));

    // A repeat is answered from the store; Joompay is not asked again.
    let calls = rig.sim.execute_calls();
    let again = transact(&rig, transfer("t-1", "cust-alice", 25_00)).await;
    assert_eq!(again.status, Status::Successful);
    assert_eq!(rig.sim.execute_calls(), calls);
    let executions = rig.sim.executions();
    assert_eq!(executions.len(), 1);
    assert_eq!(executions[0].amount_cents, 25_00);
}

#[tokio::test]
async fn joompays_refusals_are_failed_with_its_reason() {
    let rig = rig().await;
    link(&rig, APP, "link-1", "cust-bob", "bob").await;
    let bad_iban = transact(
        &rig,
        request(
            APP,
            "transfer_funds",
            "t-1",
            "cust-bob",
            1_00,
            json!({"iban": "GB00WEST12345698765432", "recipient_name": "John Smith"}),
        ),
    )
    .await;
    assert_eq!(
        (bad_iban.status, bad_iban.provider_response_code.as_str()),
        (Status::Failed, "invalid_iban"),
        "{bad_iban:?}"
    );
    // Bob holds 50.00: the code is right, the money is not there.
    let waiting = transact(&rig, transfer("t-2", "cust-bob", 80_00)).await;
    assert_eq!(waiting.status, Status::WaitingForOtp, "{waiting:?}");
    let code = rig.sim.sca_code("bob").unwrap();
    let refused = validate(&rig, "t-2", &code).await;
    assert_eq!(
        (refused.status, refused.provider_response_code.as_str()),
        (Status::Failed, "insufficient_funds"),
        "{refused:?}"
    );
    let missing = transact(
        &rig,
        request(
            APP,
            "transfer_funds",
            "t-3",
            "cust-bob",
            1_00,
            json!({"iban": RECIPIENT_IBAN}),
        ),
    )
    .await;
    assert_eq!(missing.provider_response_code, codes::INVALID_TRANSACTION);
    assert!(
        missing.message.contains("recipient_name"),
        "{}",
        missing.message
    );
    assert!(rig.sim.executions().is_empty());

    // Joompay down: a read is unavailable (the switch answers 503), not Failed.
    rig.sim.set_fault(Fault::Unavailable);
    let down = rig
        .provider
        .transact(request(APP, "get_balance", "b-1", "cust-bob", 0, json!({})))
        .await;
    assert!(down.is_err(), "{down:?}");
}

#[tokio::test]
async fn the_consent_must_come_back_to_the_browser_that_started_it_and_may_be_refused() {
    let rig = rig().await;
    let pending = transact(
        &rig,
        request(APP, "link_account", "link-1", "cust-alice", 0, json!({})),
    )
    .await;
    let consent_url = pending.provider_response.as_ref().unwrap()["consent_url"]
        .as_str()
        .unwrap()
        .to_owned();
    // The callback reached without the cookie (a link forwarded to someone
    // else): refused, and the session is still there for the right browser.
    let foreign =
        joompay_consent(&consent_url, "bob", "bob-password", Decision::Allow, false).await;
    assert_eq!(foreign.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        query(&rig, APP, "link_account", "link-1").await.status,
        Status::Pending
    );
    assert_eq!(rig.sim.token_requests(), 0);

    let refused = joompay_consent(
        &consent_url,
        "alice",
        "alice-password",
        Decision::Deny,
        true,
    )
    .await;
    assert_eq!(refused.status(), StatusCode::OK);
    let answer = query(&rig, APP, "link_account", "link-1").await;
    assert_eq!(
        (answer.status, answer.provider_response_code.as_str()),
        (Status::Failed, codes::CONSENT_REFUSED),
        "{answer:?}"
    );
    // Used once: the link no longer starts anything.
    let again = browser().get(&consent_url).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::GONE);
    let balance = transact(
        &rig,
        request(APP, "get_balance", "b-1", "cust-alice", 0, json!({})),
    )
    .await;
    assert_eq!(balance.provider_response_code, codes::NOT_LINKED);
}

#[tokio::test]
async fn fifty_calls_with_an_expired_token_make_one_refresh() {
    let rig = rig().await;
    link(&rig, APP, "link-1", "cust-alice", "alice").await;
    let warm = transact(
        &rig,
        request(APP, "get_balance", "b-0", "cust-alice", 0, json!({})),
    )
    .await;
    assert_eq!(warm.status, Status::Successful);
    rig.sim.expire_access_tokens();
    let before = rig.sim.refreshes();
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let provider = rig.provider.clone();
            tokio::spawn(async move {
                provider
                    .transact(request(
                        APP,
                        "get_balance",
                        &format!("b-{}", i + 1),
                        "cust-alice",
                        0,
                        json!({}),
                    ))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for call in calls {
        let reply = call.await.unwrap();
        assert_eq!(reply.status, Status::Successful, "{reply:?}");
    }
    assert_eq!(
        rig.sim.refreshes(),
        before + 1,
        "one refresh for fifty calls"
    );
}

#[tokio::test]
async fn a_transfer_whose_answer_was_lost_is_asked_again_and_executed_once() {
    let rig = rig_with(Duration::from_millis(1_500)).await;
    link(&rig, APP, "link-1", "cust-alice", "alice").await;
    let waiting = transact(&rig, transfer("t-1", "cust-alice", 10_00)).await;
    assert_eq!(waiting.status, Status::WaitingForOtp, "{waiting:?}");
    let code = rig.sim.sca_code("alice").unwrap();

    // Joompay executes, then holds its answer past the connector's deadline.
    rig.sim.set_fault(Fault::HoldAfterExecuting);
    let lost = validate(&rig, "t-1", &code).await;
    assert_eq!(lost.status, Status::Pending, "{lost:?}");
    assert!(lost.message.contains("asks again"), "{}", lost.message);
    assert_eq!(rig.sim.executions().len(), 1, "Joompay did execute it");

    rig.sim.set_fault(Fault::None);
    rig.sim.release_held();
    let found = query(&rig, APP, "transfer_funds", "t-1").await;
    assert_eq!(found.status, Status::Successful, "{found:?}");
    assert_eq!(rig.sim.executions().len(), 1, "asked again, executed once");
    assert_eq!(rig.sim.balance_cents("alice"), Some(99_000));
}

#[tokio::test]
async fn a_customer_linked_again_is_served_with_the_new_consent_at_once() {
    let rig = rig().await;
    link(&rig, APP, "link-1", "cust-x", "alice").await;
    let before = transact(
        &rig,
        request(APP, "lookup_account", "l-1", "cust-x", 0, json!({})),
    )
    .await;
    assert_eq!(
        before.provider_response.as_ref().unwrap()["holder_name"],
        "Alice Example"
    );
    // The customer links a different Joompay account: the access token
    // still cached for the first one must not be used for it.
    link(&rig, APP, "link-2", "cust-x", "bob").await;
    let after = transact(
        &rig,
        request(APP, "lookup_account", "l-2", "cust-x", 0, json!({})),
    )
    .await;
    assert_eq!(
        after.provider_response.as_ref().unwrap()["holder_name"],
        "Bob Example",
        "{after:?}"
    );
}

#[tokio::test]
async fn a_token_endpoint_outage_during_the_callback_lets_the_customer_reload() {
    let rig = rig().await;
    let pending = transact(
        &rig,
        request(APP, "link_account", "link-1", "cust-alice", 0, json!({})),
    )
    .await;
    let consent_url = pending.provider_response.as_ref().unwrap()["consent_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let (callback, cookie) =
        joompay_consent_until_callback(&consent_url, "alice", "alice-password", Decision::Allow)
            .await;
    rig.sim.set_fault(Fault::TokenEndpointDown);
    let down = back_to(&callback, Some(&cookie)).await;
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        query(&rig, APP, "link_account", "link-1").await.status,
        Status::Pending,
        "not failed: the code may still be good"
    );
    rig.sim.set_fault(Fault::None);
    let reloaded = back_to(&callback, Some(&cookie)).await;
    assert_eq!(reloaded.status(), StatusCode::OK);
    assert_eq!(
        query(&rig, APP, "link_account", "link-1").await.status,
        Status::Successful
    );
    // The same callback a third time: the session was used.
    assert_eq!(
        back_to(&callback, Some(&cookie)).await.status(),
        StatusCode::GONE
    );
}
