//! The Skopa provider (the SDK's service around `SkopaConnector`, sled in a
//! temporary directory) against the simulated Skopa on 127.0.0.1, driven
//! through the `Provider` trait as the switch drives it.

use std::sync::Arc;

use manifold_connector_skopa::transformers::codes;
use manifold_connector_skopa::{service_settings, SkopaConfig, SkopaConnector, SkopaProvider};
use manifold_crypto::{CustomerToken, SecretString, SourceDetails, ValidationInput};
use manifold_provider::notify::OutboxNotifier;
use manifold_provider::{
    GroupCommit, Provider, ProviderReply, QueryRequest, Status, TransactRequest,
    TransactionDetails, ValidateRequest,
};
use manifold_upstreams::skopa::{Fault, SkopaSim, User};
use serde_json::{json, Value};
use tempfile::TempDir;

const APP: &str = "neo-app";
/// Alice confirms by SMS; Carol by SMS and e-mail; Dan has no second factor.
const ALICE: &str = "alice-skopa-refresh-token-0001";
const CAROL: &str = "carol-skopa-refresh-token-0003";
const DAN: &str = "dan-skopa-refresh-token-000004";

fn user(id: &str, refresh: &str, methods: &[&str]) -> User {
    User {
        id: id.into(),
        refresh_token: refresh.into(),
        balance: 10_000,
        methods: methods.iter().map(|m| m.to_string()).collect(),
        bank_accounts: vec![format!("bank-{id}")],
    }
}

struct Rig {
    sim: SkopaSim,
    provider: Arc<SkopaProvider>,
    _dir: TempDir,
}

async fn rig() -> Rig {
    let sim = SkopaSim::start(vec![
        user("u-alice", ALICE, &["sms"]),
        user("u-bob", "bob-skopa-refresh-token-00002", &["sms"]),
        user("u-carol", CAROL, &["sms", "email"]),
        user("u-dan", DAN, &[]),
    ])
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path().join("db")).unwrap();
    let provider = manifold_connector_skopa::open(
        &db,
        GroupCommit::start(db.clone()).unwrap(),
        Arc::new(OutboxNotifier::new(dir.path().join("outbox.jsonl"))),
        SkopaConnector::new(SkopaConfig::new(&sim.url()).unwrap()).unwrap(),
        service_settings(),
    )
    .unwrap();
    Rig {
        sim,
        provider: Arc::new(provider),
        _dir: dir,
    }
}

fn request(
    request_type: &str,
    transaction_ref: &str,
    credential: &str,
    amount: u64,
    details: Value,
) -> TransactRequest {
    TransactRequest {
        app_id: APP.into(),
        request_ref: format!("req-{transaction_ref}"),
        request_type: request_type.into(),
        transaction_ref: transaction_ref.into(),
        otp_override: false,
        read_only: request_type == "get_statement",
        source: SourceDetails::Token(CustomerToken {
            token: SecretString::from(credential),
        }),
        transaction: TransactionDetails {
            amount,
            details: Some(details),
            ..TransactionDetails::default()
        },
    }
}

fn transfer(transaction_ref: &str, credential: &str, to: &str, amount: u64) -> TransactRequest {
    request(
        "transfer_funds",
        transaction_ref,
        credential,
        amount,
        json!({ "receiver_id": to }),
    )
}

async fn transact(rig: &Rig, request: TransactRequest) -> ProviderReply {
    rig.provider.transact(request).await.unwrap()
}

async fn validate(
    rig: &Rig,
    request_type: &str,
    transaction_ref: &str,
    code: &str,
) -> ProviderReply {
    rig.provider
        .validate(ValidateRequest {
            app_id: APP.into(),
            request_ref: format!("val-{transaction_ref}-{code}"),
            request_type: request_type.into(),
            transaction_ref: transaction_ref.into(),
            input: ValidationInput::Otp(SecretString::from(code)),
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_transfer_waits_for_skopas_code_then_completes() {
    let rig = rig().await;
    let reply = transact(&rig, transfer("t-1", ALICE, "u-bob", 25_00)).await;
    assert_eq!(reply.status, Status::WaitingForOtp, "{reply:?}");
    assert!(reply.message.contains("by SMS"), "{}", reply.message);
    assert!(
        rig.sim.executed().is_empty(),
        "nothing moves before the code"
    );

    let wrong = validate(&rig, "transfer_funds", "t-1", "000000").await;
    assert_eq!(wrong.status, Status::WaitingForOtp, "{wrong:?}");
    assert!(wrong.message.contains("not accepted"), "{}", wrong.message);

    let code = rig.sim.code_sent("u-alice", "sms").unwrap();
    let done = validate(&rig, "transfer_funds", "t-1", &code).await;
    assert_eq!(done.status, Status::Successful, "{done:?}");
    assert_eq!(done.provider_response_code, codes::APPROVED);
    assert_eq!(
        done.provider_response.as_ref().unwrap()["reference"],
        "neo-app:t-1"
    );
    assert_eq!(rig.sim.balance("u-alice"), Some(75_00));
    assert_eq!(rig.sim.balance("u-bob"), Some(12_500));
    assert_eq!(rig.sim.executed().len(), 1);
}

#[tokio::test]
async fn two_methods_are_verified_one_at_a_time() {
    let rig = rig().await;
    let reply = transact(
        &rig,
        request(
            "disburse",
            "w-1",
            CAROL,
            10_00,
            json!({"bank_account_id": "bank-u-carol"}),
        ),
    )
    .await;
    assert_eq!(reply.status, Status::WaitingForOtp, "{reply:?}");
    let sms = rig.sim.code_sent("u-carol", "sms").unwrap();
    let next = validate(&rig, "disburse", "w-1", &sms).await;
    assert_eq!(next.status, Status::WaitingForOtp, "{next:?}");
    assert!(next.message.contains("by e-mail"), "{}", next.message);
    let email = rig.sim.code_sent("u-carol", "email").unwrap();
    let done = validate(&rig, "disburse", "w-1", &email).await;
    assert_eq!(done.status, Status::Successful, "{done:?}");
    assert_eq!(rig.sim.balance("u-carol"), Some(90_00));
}

#[tokio::test]
async fn refusals_are_failed_with_skopas_code() {
    let rig = rig().await;
    // Dan has no second factor: the refusal comes at once.
    let reply = transact(&rig, transfer("t-1", DAN, "u-alice", 50_000)).await;
    assert_eq!(
        (reply.status, reply.provider_response_code.as_str()),
        (Status::Failed, "insufficient_funds"),
        "{reply:?}"
    );
    let reply = transact(
        &rig,
        request(
            "disburse",
            "w-1",
            DAN,
            1_00,
            json!({"bank_account_id": "bank-u-alice"}),
        ),
    )
    .await;
    assert_eq!(
        reply.provider_response_code, "bank_account_not_found",
        "{reply:?}"
    );
    let reply = transact(
        &rig,
        transfer("t-2", "not-a-skopa-refresh-token", "u-alice", 1_00),
    )
    .await;
    assert_eq!(
        reply.provider_response_code,
        codes::CREDENTIAL_REFUSED,
        "{reply:?}"
    );
    let reply = transact(&rig, request("transfer_funds", "t-3", DAN, 1_00, json!({}))).await;
    assert_eq!(reply.provider_response_code, codes::INVALID_TRANSACTION);
    assert!(reply.message.contains("receiver_id"), "{}", reply.message);
    assert!(rig.sim.executed().is_empty());
}

#[tokio::test]
async fn a_statement_is_read_a_page_at_a_time() {
    let rig = rig().await;
    for i in 0..3 {
        let reply = transact(&rig, transfer(&format!("t-{i}"), DAN, "u-alice", 1_00)).await;
        assert_eq!(reply.status, Status::Successful, "{reply:?}");
    }
    let first = transact(
        &rig,
        request("get_statement", "s-1", DAN, 0, json!({"limit": 2})),
    )
    .await;
    assert_eq!(first.status, Status::Successful, "{first:?}");
    let page = first.provider_response.unwrap();
    assert_eq!(page["records"].as_array().unwrap().len(), 2);
    assert_eq!(page["has_more"], true);
    let last = page["last_id"].as_str().unwrap().to_owned();
    let second = transact(
        &rig,
        request(
            "get_statement",
            "s-2",
            DAN,
            0,
            json!({"limit": 2, "search_after": last}),
        ),
    )
    .await;
    let page = second.provider_response.unwrap();
    assert_eq!(page["records"].as_array().unwrap().len(), 1);
    assert_eq!(page["records"][0]["reference"], "neo-app:t-2");
    assert_eq!(page["has_more"], false);
    let bad = transact(
        &rig,
        request("get_statement", "s-3", DAN, 0, json!({"limit": 500})),
    )
    .await;
    assert_eq!(bad.provider_response_code, codes::INVALID_TRANSACTION);
}

#[tokio::test]
async fn fifty_concurrent_calls_with_an_expired_token_make_one_refresh() {
    let rig = rig().await;
    transact(&rig, request("get_statement", "warm", DAN, 0, json!({}))).await;
    assert_eq!(rig.sim.refreshes(), 1);
    rig.sim.expire_tokens();
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let provider = rig.provider.clone();
            tokio::spawn(async move {
                provider
                    .transact(request(
                        "get_statement",
                        &format!("s-{i}"),
                        DAN,
                        0,
                        json!({}),
                    ))
                    .await
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().status, Status::Successful);
    }
    assert_eq!(rig.sim.refreshes(), 2, "one refresh for fifty callers");
}

#[tokio::test]
async fn a_verified_call_whose_answer_was_lost_is_found_in_the_customers_transactions() {
    let rig = rig().await;
    let reply = transact(&rig, transfer("t-1", ALICE, "u-bob", 5_00)).await;
    assert_eq!(reply.status, Status::WaitingForOtp);
    rig.sim.set_fault(Fault::FailAfterExecuting);
    let code = rig.sim.code_sent("u-alice", "sms").unwrap();
    let lost = validate(&rig, "transfer_funds", "t-1", &code).await;
    assert_eq!(lost.status, Status::Pending, "{lost:?}");
    rig.sim.set_fault(Fault::None);
    let found = rig
        .provider
        .query(QueryRequest {
            app_id: APP.into(),
            request_type: "transfer_funds".into(),
            transaction_ref: "t-1".into(),
        })
        .await
        .unwrap();
    assert_eq!(found.status, Status::Successful, "{found:?}");
    assert_eq!(rig.sim.executed().len(), 1, "made once");
}
