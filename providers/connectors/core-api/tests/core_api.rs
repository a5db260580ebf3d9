//! The core-api provider (the SDK's service around `CoreApiConnector`, sled
//! in a temporary directory) against the simulated core-api and auth
//! service on 127.0.0.1, driven through the `Provider` trait as the switch
//! drives it. The flows through the switch are in `tests/e2e/core_api.rs`.

use std::sync::Arc;
use std::time::Duration;

use manifold_connector_core_api::transformers::codes;
use manifold_connector_core_api::{
    service_settings, CoreApiConfig, CoreApiConnector, CoreApiProvider,
};
use manifold_crypto::{CustomerToken, SecretString, SourceDetails, Wallet};
use manifold_provider::notify::OutboxNotifier;
use manifold_provider::{
    GroupCommit, Provider, ProviderError, ProviderReply, QueryRequest, Status, TransactRequest,
    TransactionDetails,
};
use manifold_upstreams::core_api::{Charge, CoreApiSim, Fault, User};
use serde_json::json;
use tempfile::TempDir;

const APP: &str = "shop-app";
const ALICE: &str = "alice-refresh-token-000000000001";
const BOB_DISABLED: &str = "bob-refresh-token-0000000000002";

fn users() -> Vec<User> {
    vec![
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
    ]
}

struct Rig {
    sim: CoreApiSim,
    provider: Arc<CoreApiProvider>,
    _dir: TempDir,
}

async fn rig_with(adjust: impl FnOnce(&mut CoreApiConfig)) -> Rig {
    let sim = CoreApiSim::start(users()).await.unwrap();
    let mut config = CoreApiConfig::new(&sim.auth_url(), &sim.core_url(), "USD").unwrap();
    adjust(&mut config);
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path().join("db")).unwrap();
    let commit = GroupCommit::start(db.clone()).unwrap();
    let provider = manifold_connector_core_api::open(
        &db,
        commit,
        Arc::new(OutboxNotifier::new(dir.path().join("outbox.jsonl"))),
        CoreApiConnector::new(config).unwrap(),
        service_settings(),
    )
    .unwrap();
    Rig {
        sim,
        provider: Arc::new(provider),
        _dir: dir,
    }
}

async fn rig() -> Rig {
    rig_with(|_| {}).await
}

fn charge(transaction_ref: &str, credential: &str, amount: u64) -> TransactRequest {
    TransactRequest {
        app_id: APP.into(),
        request_ref: format!("req-{transaction_ref}"),
        request_type: "collect".into(),
        transaction_ref: transaction_ref.into(),
        otp_override: false,
        read_only: false,
        source: SourceDetails::Token(CustomerToken {
            token: SecretString::from(credential),
        }),
        transaction: TransactionDetails {
            amount,
            ..TransactionDetails::default()
        },
    }
}

async fn transact(rig: &Rig, request: TransactRequest) -> ProviderReply {
    rig.provider.transact(request).await.unwrap()
}

async fn query(rig: &Rig, transaction_ref: &str) -> Result<ProviderReply, ProviderError> {
    rig.provider
        .query(QueryRequest {
            app_id: APP.into(),
            request_type: "collect".into(),
            transaction_ref: transaction_ref.into(),
        })
        .await
}

fn alice_charge(amount: &str) -> Charge {
    Charge {
        user_id: 1,
        amount: amount.into(),
        currency: "USD".into(),
    }
}

#[tokio::test]
async fn a_charge_is_queued_in_major_units_and_stays_pending_with_the_upstreams_answer() {
    let rig = rig().await;
    let reply = transact(&rig, charge("t-1", ALICE, 1234)).await;
    assert_eq!(reply.status, Status::Pending, "{reply:?}");
    assert_eq!(reply.provider_response_code, codes::QUEUED);
    assert!(reply.message.contains("queued"), "{}", reply.message);
    assert_eq!(
        reply.provider_response,
        Some(json!({"amount": 12.34, "currency": "USD", "user_id": 1}))
    );
    assert_eq!(rig.sim.accepted(), vec![alice_charge("12.34")]);
    // Never a settlement the upstream did not report: a query keeps it
    // Pending, and a repeat answers it without charging again.
    let queried = query(&rig, "t-1").await.unwrap();
    assert_eq!(queried.status, Status::Pending);
    assert_eq!(queried.provider_response_code, codes::QUEUED);
    assert_eq!(
        transact(&rig, charge("t-1", ALICE, 1234)).await.status,
        Status::Pending
    );
    assert_eq!(rig.sim.accepted().len(), 1);
}

#[tokio::test]
async fn one_token_serves_a_customer_until_it_expires_and_a_401_costs_one_refresh() {
    let rig = rig().await;
    transact(&rig, charge("t-1", ALICE, 100)).await;
    transact(&rig, charge("t-2", ALICE, 200)).await;
    assert_eq!(rig.sim.token_requests(), 1);
    // Thirty seconds pass at the upstream: its tokens are refused with 401.
    rig.sim.expire_tokens();
    let reply = transact(&rig, charge("t-3", ALICE, 300)).await;
    assert_eq!(reply.status, Status::Pending, "{reply:?}");
    assert_eq!(rig.sim.token_requests(), 2);
    assert_eq!(rig.sim.accepted().len(), 3);
}

#[tokio::test]
async fn fifty_concurrent_charges_with_an_expired_token_make_one_token_request() {
    let rig = rig().await;
    transact(&rig, charge("warm-up", ALICE, 100)).await;
    assert_eq!(rig.sim.token_requests(), 1);
    rig.sim.expire_tokens();
    let calls = (0..50).map(|i| {
        let provider = rig.provider.clone();
        tokio::spawn(async move {
            provider
                .transact(charge(&format!("c-{i}"), ALICE, 100))
                .await
        })
    });
    for call in calls {
        let reply = call.await.unwrap().unwrap();
        assert_eq!(reply.status, Status::Pending, "{reply:?}");
    }
    assert_eq!(rig.sim.token_requests(), 2, "one refresh for fifty callers");
    assert_eq!(rig.sim.accepted().len(), 51);
}

#[tokio::test]
async fn customers_have_tokens_of_their_own() {
    let rig = rig().await;
    transact(&rig, charge("t-1", ALICE, 100)).await;
    // Bob's credential buys Bob's token, never Alice's: core-api refuses him
    // as disabled, so nothing is charged to anybody.
    let reply = transact(&rig, charge("t-2", BOB_DISABLED, 100)).await;
    assert_eq!(reply.status, Status::Failed, "{reply:?}");
    assert_eq!(reply.provider_response_code, "user_disabled");
    assert!(reply.message.contains("disabled"), "{}", reply.message);
    assert_eq!(rig.sim.token_requests(), 2);
    assert_eq!(rig.sim.accepted(), vec![alice_charge("1.00")]);
}

#[tokio::test]
async fn refusals_are_failed_with_the_upstreams_code_and_charge_nothing() {
    let rig = rig_with(|config| config.currency = "JPY".into()).await;
    let reply = transact(&rig, charge("t-1", ALICE, 100)).await;
    assert_eq!(reply.status, Status::Failed, "{reply:?}");
    assert_eq!(reply.provider_response_code, "unsupported_currency");

    let reply = transact(&rig, charge("t-2", "nobody-knows-this-token", 100)).await;
    assert_eq!(reply.status, Status::Failed, "{reply:?}");
    assert_eq!(reply.provider_response_code, codes::CREDENTIAL_REFUSED);

    let mut wallet = charge("t-3", ALICE, 100);
    wallet.source = SourceDetails::Wallet(Wallet {
        wallet_id: SecretString::from("w-1"),
    });
    let reply = transact(&rig, wallet).await;
    assert_eq!(reply.status, Status::Failed, "{reply:?}");
    assert!(reply.message.contains("auth.type must be token"));

    let reply = transact(&rig, charge("t-4", ALICE, 0)).await;
    assert_eq!(reply.status, Status::Failed, "{reply:?}");
    assert!(rig.sim.accepted().is_empty());
}

#[tokio::test]
async fn an_upstream_that_refuses_to_work_leaves_nothing_behind() {
    let rig = rig().await;
    rig.sim.set_fault(Fault::Unavailable);
    let error = rig
        .provider
        .transact(charge("t-1", ALICE, 100))
        .await
        .unwrap_err();
    assert!(!error.may_have_executed(), "{error:?}");
    assert!(matches!(
        query(&rig, "t-1").await,
        Err(ProviderError::UnknownTransaction)
    ));
    // Nothing was charged, so the same transaction may be tried again.
    rig.sim.set_fault(Fault::None);
    assert_eq!(
        transact(&rig, charge("t-1", ALICE, 100)).await.status,
        Status::Pending
    );
    assert_eq!(rig.sim.accepted().len(), 1);
}

#[tokio::test]
async fn an_answer_lost_after_the_charge_was_taken_is_never_sent_again() {
    let rig = rig().await;
    rig.sim.set_fault(Fault::FailAfterAccepting);
    let reply = transact(&rig, charge("t-1", ALICE, 100)).await;
    assert_eq!(reply.status, Status::Pending, "{reply:?}");
    assert_eq!(reply.provider_response_code, codes::OUTCOME_UNKNOWN);
    assert!(
        reply.message.contains("never sent again"),
        "{}",
        reply.message
    );
    rig.sim.set_fault(Fault::None);
    // A repeat and a query answer what is known; neither charges again.
    let again = transact(&rig, charge("t-1", ALICE, 100)).await;
    assert_eq!(again.provider_response_code, codes::OUTCOME_UNKNOWN);
    let queried = query(&rig, "t-1").await.unwrap();
    assert_eq!(queried.status, Status::Pending);
    assert_eq!(queried.provider_response_code, codes::OUTCOME_UNKNOWN);
    assert_eq!(rig.sim.accepted().len(), 1, "at most once");
}

#[tokio::test]
async fn a_charge_whose_answer_never_comes_is_pending_and_not_resent() {
    let rig = rig_with(|config| config.timeout = Duration::from_millis(300)).await;
    rig.sim.set_fault(Fault::HoldAfterAccepting);
    let reply = transact(&rig, charge("t-1", ALICE, 100)).await;
    assert_eq!(reply.status, Status::Pending, "{reply:?}");
    assert_eq!(reply.provider_response_code, codes::OUTCOME_UNKNOWN);
    rig.sim.release_held();
    rig.sim.set_fault(Fault::None);
    transact(&rig, charge("t-1", ALICE, 100)).await;
    assert_eq!(rig.sim.accepted().len(), 1, "at most once");
}
