//! The SDK.finance provider (the SDK's service around
//! `SdkFinanceConnector`, sled in a temporary directory) against the
//! simulated platform on 127.0.0.1, driven through the `Provider` trait as
//! the switch drives it. The flows through the switch are in
//! `tests/e2e/sdk_finance.rs`.

use std::sync::Arc;

use manifold_connector_sdk_finance::transformers::codes;
use manifold_connector_sdk_finance::{
    service_settings, SdkFinanceConfig, SdkFinanceConnector, SdkFinanceProvider,
};
use manifold_crypto::{CustomerToken, SecretString, SourceDetails, Wallet};
use manifold_provider::notify::OutboxNotifier;
use manifold_provider::{
    GroupCommit, Provider, ProviderError, ProviderReply, QueryRequest, Status, TransactRequest,
    TransactionDetails,
};
use manifold_upstreams::sdk_finance::{Coin, Fault, SdkFinanceSim, ServiceUser, Template};
use serde_json::{json, Value};
use tempfile::TempDir;

const APP: &str = "wallet-app";
const LOGIN: &str = "manifold-service@example.com";
const PASSWORD: &str = "Service-user-pw#1";
const ALICE: &str = "coin-alice-0001";
const BOB: &str = "coin-bob-0002";

async fn sim() -> SdkFinanceSim {
    SdkFinanceSim::start(
        ServiceUser {
            login: LOGIN,
            password: PASSWORD,
        },
        vec![
            Coin {
                serial: ALICE.into(),
                currency: "USD".into(),
                balance: 50_00,
            },
            Coin {
                serial: BOB.into(),
                currency: "USD".into(),
                balance: 0,
            },
        ],
        vec![Template {
            id: "tpl-alice-to-bob".into(),
            source: ALICE.into(),
            destination: BOB.into(),
        }],
    )
    .await
    .unwrap()
}

struct Rig {
    sim: SdkFinanceSim,
    provider: Arc<SdkFinanceProvider>,
    _dir: TempDir,
}

async fn rig() -> Rig {
    let sim = sim().await;
    let config = SdkFinanceConfig::new(
        &sim.url(),
        SecretString::from(LOGIN),
        SecretString::from(PASSWORD),
        "settlement-bank",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path().join("db")).unwrap();
    let provider = manifold_connector_sdk_finance::open(
        &db,
        GroupCommit::start(db.clone()).unwrap(),
        Arc::new(OutboxNotifier::new(dir.path().join("outbox.jsonl"))),
        SdkFinanceConnector::new(config).unwrap(),
        service_settings(),
    )
    .unwrap();
    Rig {
        sim,
        provider: Arc::new(provider),
        _dir: dir,
    }
}

fn request(request_type: &str, transaction_ref: &str, coin: &str, amount: u64) -> TransactRequest {
    TransactRequest {
        app_id: APP.into(),
        request_ref: format!("req-{transaction_ref}"),
        request_type: request_type.into(),
        transaction_ref: transaction_ref.into(),
        otp_override: false,
        read_only: false,
        source: SourceDetails::Wallet(Wallet {
            wallet_id: SecretString::from(coin),
        }),
        transaction: TransactionDetails {
            amount,
            ..TransactionDetails::default()
        },
    }
}

fn transfer(transaction_ref: &str, coin: &str, amount: u64, details: Value) -> TransactRequest {
    let mut request = request("transfer_funds", transaction_ref, coin, amount);
    request.transaction.details = Some(details);
    request
}

async fn transact(rig: &Rig, request: TransactRequest) -> ProviderReply {
    rig.provider.transact(request).await.unwrap()
}

async fn query(rig: &Rig, request_type: &str, transaction_ref: &str) -> ProviderReply {
    rig.provider
        .query(QueryRequest {
            app_id: APP.into(),
            request_type: request_type.into(),
            transaction_ref: transaction_ref.into(),
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_top_up_is_pending_until_the_operator_accepts_it() {
    let rig = rig().await;
    let reply = transact(&rig, request("collect", "t-1", ALICE, 12_00)).await;
    assert_eq!(reply.status, Status::Pending, "{reply:?}");
    assert_eq!(reply.provider_response_code, codes::AWAITING_OPERATOR);
    let created = rig.sim.requests();
    assert_eq!(created.len(), 1);
    assert_eq!(
        (created[0].amount, created[0].external_id.as_str()),
        (12_00, "wallet-app:t-1")
    );
    let response = reply.provider_response.unwrap();
    assert_eq!(response["commission"], "0.12");
    assert!(reply.message.contains(&created[0].id), "{}", reply.message);

    // Not decided yet: still Pending.
    assert_eq!(query(&rig, "collect", "t-1").await.status, Status::Pending);
    assert!(rig.sim.decide(&created[0].id, true));
    let settled = query(&rig, "collect", "t-1").await;
    assert_eq!(settled.status, Status::Successful, "{settled:?}");
    assert_eq!(settled.provider_response_code, codes::APPROVED);
    assert_eq!(settled.provider_response.unwrap()["status"], "ACCEPTED");
    assert_eq!(rig.sim.balance(ALICE), Some(62_00));
    // Final: a repeat answers it and creates nothing.
    assert_eq!(
        transact(&rig, request("collect", "t-1", ALICE, 12_00))
            .await
            .status,
        Status::Successful
    );
    assert_eq!(rig.sim.requests().len(), 1);
}

#[tokio::test]
async fn a_declined_withdrawal_fails_and_gives_the_funds_back() {
    let rig = rig().await;
    let reply = transact(&rig, request("disburse", "w-1", ALICE, 20_00)).await;
    assert_eq!(reply.status, Status::Pending, "{reply:?}");
    assert_eq!(rig.sim.balance(ALICE), Some(50_00 - 20_00 - 20));
    let id = rig.sim.requests()[0].id.clone();
    assert!(rig.sim.decide(&id, false));
    let settled = query(&rig, "disburse", "w-1").await;
    assert_eq!(settled.status, Status::Failed, "{settled:?}");
    assert_eq!(settled.provider_response_code, codes::DECLINED);
    assert_eq!(rig.sim.balance(ALICE), Some(50_00));
}

#[tokio::test]
async fn refusals_are_failed_with_the_platforms_code() {
    let rig = rig().await;
    let reply = transact(&rig, request("disburse", "w-1", BOB, 1_00)).await;
    assert_eq!(
        (reply.status, reply.provider_response_code.as_str()),
        (Status::Failed, "INSUFFICIENT_FUNDS"),
        "{reply:?}"
    );
    let reply = transact(&rig, request("collect", "t-1", "coin-nobody", 1_00)).await;
    assert_eq!(
        (reply.status, reply.provider_response_code.as_str()),
        (Status::Failed, "COIN_NOT_FOUND"),
        "{reply:?}"
    );
    let mut token = request("collect", "t-2", ALICE, 1_00);
    token.source = SourceDetails::Token(CustomerToken {
        token: SecretString::from("a-customer-token-0001"),
    });
    let reply = transact(&rig, token).await;
    assert_eq!(reply.status, Status::Failed);
    assert!(
        reply.message.contains("auth.type must be wallet"),
        "{}",
        reply.message
    );
    assert!(rig.sim.requests().is_empty());
}

#[tokio::test]
async fn a_transfer_from_a_template_completes_in_its_call() {
    let rig = rig().await;
    let reply = transact(
        &rig,
        transfer(
            "x-1",
            ALICE,
            10_00,
            json!({"template_id": "tpl-alice-to-bob"}),
        ),
    )
    .await;
    assert_eq!(reply.status, Status::Successful, "{reply:?}");
    let response = reply.provider_response.unwrap();
    assert_eq!(response["commission"], "0.10");
    assert!(response["businessProcessId"]
        .as_str()
        .unwrap()
        .starts_with("bp-"));
    assert_eq!(rig.sim.balance(BOB), Some(10_00));
    assert_eq!(rig.sim.balance(ALICE), Some(50_00 - 10_00 - 10));

    let reply = transact(
        &rig,
        transfer("x-2", BOB, 1_00, json!({"template_id": "tpl-alice-to-bob"})),
    )
    .await;
    assert_eq!(
        reply.provider_response_code, "NOT_TEMPLATE_OWNER",
        "{reply:?}"
    );
    let reply = transact(&rig, transfer("x-3", ALICE, 1_00, json!({}))).await;
    assert_eq!(reply.provider_response_code, codes::INVALID_TRANSACTION);
    assert_eq!(rig.sim.transfers().len(), 1);
}

#[tokio::test]
async fn fifty_concurrent_calls_with_an_expired_token_make_one_token_request() {
    let rig = rig().await;
    transact(&rig, request("collect", "warm", ALICE, 1_00)).await;
    assert_eq!(rig.sim.token_requests(), 1);
    rig.sim.expire_tokens();
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let provider = rig.provider.clone();
            tokio::spawn(async move {
                provider
                    .transact(request("collect", &format!("c-{i}"), ALICE, 1_00))
                    .await
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().status, Status::Pending);
    }
    assert_eq!(rig.sim.token_requests(), 2, "one token for fifty callers");
    assert_eq!(rig.sim.requests().len(), 51);
}

#[tokio::test]
async fn a_request_whose_answer_was_lost_is_found_by_our_reference_and_never_created_twice() {
    let rig = rig().await;
    rig.sim.set_fault(Fault::FailAfterCreating);
    let reply = transact(&rig, request("collect", "t-1", ALICE, 5_00)).await;
    assert_eq!(reply.status, Status::Pending, "{reply:?}");
    assert_eq!(reply.provider_response_code, codes::OUTCOME_UNKNOWN);
    assert!(reply.message.contains("externalId"), "{}", reply.message);
    rig.sim.set_fault(Fault::None);
    // The query finds it by externalId, and from then on follows it.
    let found = query(&rig, "collect", "t-1").await;
    assert_eq!(found.status, Status::Pending, "{found:?}");
    assert_eq!(found.provider_response_code, codes::AWAITING_OPERATOR);
    let id = rig.sim.requests()[0].id.clone();
    assert!(rig.sim.decide(&id, true));
    assert_eq!(
        query(&rig, "collect", "t-1").await.status,
        Status::Successful
    );
    assert_eq!(
        transact(&rig, request("collect", "t-1", ALICE, 5_00))
            .await
            .status,
        Status::Successful
    );
    assert_eq!(rig.sim.requests().len(), 1, "created once");
}

#[tokio::test]
async fn a_platform_that_refuses_to_work_leaves_nothing_behind() {
    let rig = rig().await;
    rig.sim.set_fault(Fault::Unavailable);
    let error = rig
        .provider
        .transact(request("collect", "t-1", ALICE, 1_00))
        .await
        .unwrap_err();
    assert!(!error.may_have_executed(), "{error:?}");
    assert!(matches!(
        rig.provider
            .query(QueryRequest {
                app_id: APP.into(),
                request_type: "collect".into(),
                transaction_ref: "t-1".into(),
            })
            .await,
        Err(ProviderError::UnknownTransaction)
    ));
    assert!(rig.sim.requests().is_empty());
}

#[tokio::test]
async fn a_lost_request_the_platform_never_created_stays_pending_and_is_looked_for_again() {
    let rig = rig().await;
    rig.sim.set_fault(Fault::FailBeforeCreating);
    let reply = transact(&rig, request("disburse", "w-1", ALICE, 2_00)).await;
    assert_eq!(reply.status, Status::Pending, "{reply:?}");
    rig.sim.set_fault(Fault::None);
    // The search by externalId finds nothing: still Pending, with why, and
    // asked again on the next query rather than forgotten.
    for _ in 0..2 {
        let searched = query(&rig, "disburse", "w-1").await;
        assert_eq!(searched.status, Status::Pending, "{searched:?}");
        assert_eq!(searched.provider_response_code, codes::OUTCOME_UNKNOWN);
        assert!(
            searched.message.contains("never created twice"),
            "{}",
            searched.message
        );
    }
    assert!(
        rig.sim.requests().is_empty(),
        "nothing was created, nothing sent again"
    );
}

#[tokio::test]
async fn a_template_id_that_is_not_a_plain_name_is_refused_before_any_call() {
    let rig = rig().await;
    for (i, bad) in ["../bank-top-ups", "tpl/1", "tpl?x=1", "tpl%2F1", ""]
        .into_iter()
        .enumerate()
    {
        let reply = transact(
            &rig,
            transfer(&format!("x-{i}"), ALICE, 1_00, json!({"template_id": bad})),
        )
        .await;
        assert_eq!(
            (reply.status, reply.provider_response_code.as_str()),
            (Status::Failed, codes::INVALID_TRANSACTION),
            "{bad}: {reply:?}"
        );
        assert!(reply.message.contains("template_id"), "{}", reply.message);
    }
    assert!(rig.sim.requests().is_empty());
}
