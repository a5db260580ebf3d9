//! The template provider against a wiremock upstream bank on 127.0.0.1.
//!
//! Each test mounts the upstream calls it expects (with `expect(n)`, checked
//! when the mock server drops), opens the real provider — the SDK's
//! `ProviderService` around `TemplateConnector`, sled in a temporary
//! directory — and drives it as the switch does, through the `Provider`
//! trait; the last tests drive it over HTTP, in-process and as the binary.

use std::sync::Arc;
use std::time::Duration;

use manifold_crypto::{BankAccount, SecretString, SourceDetails, ValidationInput};
use manifold_provider::notify::OutboxNotifier;
use manifold_provider::{
    Customer, GroupCommit, Provider, ProviderError, ProviderReply, QueryRequest, RemoteProvider,
    ReverseRequest, Status, TransactRequest, TransactionDetails, ValidateRequest,
};
use manifold_provider_sdk::ManualClock;
use manifold_provider_template::{
    codes, service_settings, TemplateConnector, TemplateProvider, UpstreamConfig,
};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use wiremock::matchers::{basic_auth, bearer_token, body_json, body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Bounds waits on other processes, so a broken peer fails a test instead of
/// hanging it. Not a measurement.
const LIMIT: Duration = Duration::from_secs(30);

const APP: &str = "demo-app";
const TXN: &str = "txn-1";
/// Our idempotency key for (APP, TXN) at the upstream.
const KEY: &str = "demo-app:txn-1";
const CLIENT_ID: &str = "template-client";
const CLIENT_SECRET: &str = "client-secret-9c1f07d2";
const TOKEN: &str = "access-token-1";
const CODE: &str = "482913";
const ACCOUNT: &str = "0123456789";

// ---------------------------------------------------------------- the provider

struct Rig {
    provider: Arc<TemplateProvider>,
    _dir: TempDir,
}

fn config(upstream: &MockServer) -> UpstreamConfig {
    UpstreamConfig::new(
        &upstream.uri(),
        SecretString::from(CLIENT_ID),
        SecretString::from(CLIENT_SECRET),
    )
    .unwrap()
}

fn open(config: UpstreamConfig) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path().join("db")).unwrap();
    let commit = GroupCommit::start(db.clone()).unwrap();
    let provider = manifold_provider_template::open(
        &db,
        commit,
        Arc::new(OutboxNotifier::new(dir.path().join("outbox.jsonl"))),
        TemplateConnector::new(config).unwrap(),
        service_settings(),
    )
    .unwrap();
    Rig {
        provider: Arc::new(provider),
        _dir: dir,
    }
}

fn rig(upstream: &MockServer) -> Rig {
    open(config(upstream))
}

// ---------------------------------------------------------------- switch calls

fn transfer(transaction_ref: &str) -> TransactRequest {
    TransactRequest {
        app_id: APP.into(),
        request_ref: format!("req-{transaction_ref}"),
        request_type: "transfer_funds".into(),
        transaction_ref: transaction_ref.into(),
        otp_override: false,
        read_only: false,
        source: SourceDetails::BankAccount(BankAccount {
            account_number: SecretString::from(ACCOUNT),
            bank_code: "058".into(),
        }),
        transaction: TransactionDetails {
            transaction_desc: Some("Rent for June".into()),
            amount: 150_000,
            customer: Customer {
                mobile_no: Some("2348022000008".into()),
                ..Customer::default()
            },
            details: Some(json!({
                "destination_account": "9876543210",
                "destination_bank_code": "044",
            })),
            ..TransactionDetails::default()
        },
    }
}

fn validate(code: &str) -> ValidateRequest {
    ValidateRequest {
        app_id: APP.into(),
        request_ref: format!("val-{code}"),
        request_type: "transfer_funds".into(),
        transaction_ref: TXN.into(),
        input: ValidationInput::Otp(SecretString::from(code)),
    }
}

fn query() -> QueryRequest {
    QueryRequest {
        app_id: APP.into(),
        request_type: "transfer_funds".into(),
        transaction_ref: TXN.into(),
    }
}

fn reverse(request_ref: &str) -> ReverseRequest {
    ReverseRequest {
        app_id: APP.into(),
        request_ref: request_ref.into(),
        request_type: "transfer_funds".into(),
        transaction_ref: TXN.into(),
    }
}

fn assert_reply(reply: &ProviderReply, status: Status, code: &str) {
    assert_eq!(
        (reply.status, reply.provider_response_code.as_str()),
        (status, code),
        "{reply:?}"
    );
}

// ---------------------------------------------------------------- the upstream

/// A transfer as the bank reports it.
fn bank_transfer(status: &str) -> Value {
    json!({
        "id": "trf_1",
        "client_transfer_id": KEY,
        "status": status,
        "amount": {"value": 150000, "currency": "NGN"},
    })
}

/// A transfer waiting for the code the bank sent the customer.
fn awaiting_code(attempts_remaining: u32) -> Value {
    let mut transfer = bank_transfer("requires_sca");
    transfer["sca"] = json!({
        "authentication_id": "auth_1",
        "sent_to": "+234*****008",
        "attempts_remaining": attempts_remaining,
    });
    transfer
}

fn failed_with(code: &str) -> Value {
    let mut transfer = bank_transfer("failed");
    transfer["failure"] = json!({"code": code, "message": "not for the app's eyes"});
    transfer
}

fn token_answer(token: &str, expires_in: u64) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "access_token": token, "token_type": "Bearer", "expires_in": expires_in,
    }))
}

/// The client-credentials grant, answered `expected` times with [`TOKEN`].
async fn token_endpoint(upstream: &MockServer, expected: u64) {
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(basic_auth(CLIENT_ID, CLIENT_SECRET))
        .and(body_string_contains("grant_type=client_credentials"))
        .respond_with(token_answer(TOKEN, 3600))
        .expect(expected)
        .named("client-credentials token")
        .mount(upstream)
        .await;
}

fn create_transfer() -> wiremock::MockBuilder {
    Mock::given(method("POST"))
        .and(path("/v1/transfers"))
        .and(bearer_token(TOKEN))
}

/// `POST /v1/transfers` with exactly the body the bank expects.
async fn create_answers(upstream: &MockServer, answer: ResponseTemplate, expected: u64) {
    create_transfer()
        .and(body_json(json!({
            "client_transfer_id": KEY,
            "amount": {"value": 150000, "currency": "NGN"},
            "debtor": {"account_number": ACCOUNT, "bank_code": "058"},
            "creditor": {"account_number": "9876543210", "bank_code": "044"},
            "description": "Rent for June",
        })))
        .respond_with(answer)
        .expect(expected)
        .named("create transfer")
        .mount(upstream)
        .await;
}

async fn confirm_answers(upstream: &MockServer, code: &str, answer: Value, expected: u64) {
    Mock::given(method("POST"))
        .and(path("/v1/transfers/trf_1/confirm"))
        .and(bearer_token(TOKEN))
        .and(body_json(
            json!({"authentication_id": "auth_1", "code": code}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .expect(expected)
        .named("confirm transfer")
        .mount(upstream)
        .await;
}

/// Fails the test if the provider asks the bank about the transfer.
async fn no_lookups(upstream: &MockServer) {
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .named("transfer lookups")
        .mount(upstream)
        .await;
}

// ---------------------------------------------------------------- SCA

#[tokio::test]
async fn the_banks_code_confirms_the_transfer() {
    let upstream = MockServer::start().await;
    token_endpoint(&upstream, 1).await;
    create_answers(
        &upstream,
        ResponseTemplate::new(201).set_body_json(awaiting_code(3)),
        1,
    )
    .await;
    confirm_answers(&upstream, CODE, bank_transfer("completed"), 1).await;
    no_lookups(&upstream).await;
    let rig = rig(&upstream);

    let waiting = rig.provider.transact(transfer(TXN)).await.unwrap();
    assert_reply(&waiting, Status::WaitingForOtp, codes::OTP_SENT);
    assert_eq!(
        waiting.message,
        "Enter the code your bank sent to +234*****008 to confirm the transfer"
    );
    // A repeat answers from the store: the bank is not asked twice.
    assert_eq!(rig.provider.transact(transfer(TXN)).await.unwrap(), waiting);
    assert_eq!(rig.provider.pending_count().await.unwrap(), 1);

    let done = rig.provider.validate(validate(CODE)).await.unwrap();
    assert_reply(&done, Status::Successful, codes::APPROVED);
    assert_eq!(
        done.provider_response,
        Some(json!({"reference": "trf_1", "amount": 150000, "currency": "NGN"}))
    );
    // Final: answered from the store, and the pending data is erased (seed 003).
    assert_eq!(rig.provider.query(query()).await.unwrap(), done);
    assert_eq!(rig.provider.transact(transfer(TXN)).await.unwrap(), done);
    assert_eq!(rig.provider.pending_count().await.unwrap(), 0);
}

#[tokio::test]
async fn a_wrong_code_keeps_the_transfer_waiting() {
    let upstream = MockServer::start().await;
    token_endpoint(&upstream, 1).await;
    create_answers(
        &upstream,
        ResponseTemplate::new(201).set_body_json(awaiting_code(5)),
        1,
    )
    .await;
    confirm_answers(&upstream, "000000", awaiting_code(4), 1).await;
    confirm_answers(&upstream, CODE, bank_transfer("completed"), 1).await;
    let rig = rig(&upstream);

    rig.provider.transact(transfer(TXN)).await.unwrap();
    let wrong = rig.provider.validate(validate("000000")).await.unwrap();
    assert_reply(&wrong, Status::WaitingForOtp, codes::WRONG_OTP);
    assert!(
        wrong
            .message
            .starts_with("That code was not accepted (4 attempts left)."),
        "{}",
        wrong.message
    );
    // A query shows the transaction still waiting, with the bank's prompt.
    let state = rig.provider.query(query()).await.unwrap();
    assert_eq!(
        (state.status, state.message.as_str()),
        (Status::WaitingForOtp, wrong.message.as_str())
    );
    let done = rig.provider.validate(validate(CODE)).await.unwrap();
    assert_reply(&done, Status::Successful, codes::APPROVED);
}

#[tokio::test]
async fn three_wrong_codes_cancel_the_transfer() {
    let upstream = MockServer::start().await;
    token_endpoint(&upstream, 1).await;
    create_answers(
        &upstream,
        ResponseTemplate::new(201).set_body_json(awaiting_code(5)),
        1,
    )
    .await;
    // The bank would allow more; the SDK's policy (3 attempts) ends it first.
    confirm_answers(&upstream, "000000", awaiting_code(4), 3).await;
    let rig = rig(&upstream);

    rig.provider.transact(transfer(TXN)).await.unwrap();
    for _ in 0..2 {
        let reply = rig.provider.validate(validate("000000")).await.unwrap();
        assert_reply(&reply, Status::WaitingForOtp, codes::WRONG_OTP);
    }
    let failed = rig.provider.validate(validate("000000")).await.unwrap();
    assert_reply(&failed, Status::Failed, codes::OTP_ATTEMPTS_EXHAUSTED);
    assert_eq!(rig.provider.pending_count().await.unwrap(), 0);
    // Final: a late right code changes nothing and reaches no one.
    let late = rig.provider.validate(validate(CODE)).await.unwrap();
    assert_eq!(late, failed);
}

#[tokio::test]
async fn the_bank_ending_the_sca_is_final() {
    let upstream = MockServer::start().await;
    token_endpoint(&upstream, 1).await;
    create_answers(
        &upstream,
        ResponseTemplate::new(201).set_body_json(awaiting_code(1)),
        1,
    )
    .await;
    confirm_answers(&upstream, "000000", failed_with("sca_failed"), 1).await;
    let rig = rig(&upstream);

    rig.provider.transact(transfer(TXN)).await.unwrap();
    let failed = rig.provider.validate(validate("000000")).await.unwrap();
    assert_reply(&failed, Status::Failed, codes::OTP_ATTEMPTS_EXHAUSTED);
    assert!(!failed.message.contains("not for the app's eyes"));
}

#[tokio::test]
async fn a_code_nobody_types_expires_without_sleeping() {
    let upstream = MockServer::start().await;
    token_endpoint(&upstream, 1).await;
    create_answers(
        &upstream,
        ResponseTemplate::new(201).set_body_json(awaiting_code(3)),
        1,
    )
    .await;
    let mut rig = rig(&upstream);
    // The SDK's clock is replaceable: move it instead of waiting 5 minutes.
    let clock = ManualClock::starting_at(1_800_000_000_000);
    rig.provider = Arc::new(
        Arc::into_inner(rig.provider)
            .unwrap()
            .with_clock(Arc::new(clock.clone())),
    );

    rig.provider.transact(transfer(TXN)).await.unwrap();
    clock.advance(Duration::from_secs(299));
    assert_eq!(rig.provider.sweep_expired().await.unwrap(), 0);
    clock.advance(Duration::from_secs(1));
    assert_eq!(rig.provider.sweep_expired().await.unwrap(), 1);
    let expired = rig.provider.query(query()).await.unwrap();
    assert_reply(&expired, Status::Failed, codes::OTP_EXPIRED);
    assert_eq!(rig.provider.pending_count().await.unwrap(), 0);
}

// ---------------------------------------------------------------- statuses

#[tokio::test]
async fn processing_is_pending_until_the_bank_settles_it() {
    let upstream = MockServer::start().await;
    token_endpoint(&upstream, 1).await;
    create_answers(
        &upstream,
        ResponseTemplate::new(201).set_body_json(bank_transfer("processing")),
        1,
    )
    .await;
    Mock::given(method("GET"))
        .and(path("/v1/transfers/trf_1"))
        .and(bearer_token(TOKEN))
        .respond_with(ResponseTemplate::new(200).set_body_json(bank_transfer("processing")))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&upstream)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/transfers/trf_1"))
        .and(bearer_token(TOKEN))
        .respond_with(ResponseTemplate::new(200).set_body_json(bank_transfer("completed")))
        .expect(1)
        .mount(&upstream)
        .await;
    let rig = rig(&upstream);

    let pending = rig.provider.transact(transfer(TXN)).await.unwrap();
    assert_reply(&pending, Status::Pending, "");
    assert_reply(
        &rig.provider.query(query()).await.unwrap(),
        Status::Pending,
        "",
    );
    let done = rig.provider.query(query()).await.unwrap();
    assert_reply(&done, Status::Successful, codes::APPROVED);
    assert_eq!(rig.provider.query(query()).await.unwrap(), done);
    assert_eq!(rig.provider.pending_count().await.unwrap(), 0);
}

#[tokio::test]
async fn an_unknown_status_is_never_taken_for_an_outcome() {
    let upstream = MockServer::start().await;
    token_endpoint(&upstream, 1).await;
    create_answers(
        &upstream,
        ResponseTemplate::new(201).set_body_json(bank_transfer("on_hold")),
        1,
    )
    .await;
    Mock::given(method("GET"))
        .and(path("/v1/transfers/trf_1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(failed_with("insufficient_funds")))
        .expect(1)
        .mount(&upstream)
        .await;
    let rig = rig(&upstream);

    let pending = rig.provider.transact(transfer(TXN)).await.unwrap();
    assert_reply(&pending, Status::Pending, "");
    let failed = rig.provider.query(query()).await.unwrap();
    assert_reply(&failed, Status::Failed, codes::INSUFFICIENT_FUNDS);
    assert!(!failed.message.contains("not for the app's eyes"));
}

#[tokio::test]
async fn a_decline_is_failed_at_once() {
    let upstream = MockServer::start().await;
    token_endpoint(&upstream, 1).await;
    create_answers(
        &upstream,
        ResponseTemplate::new(201).set_body_json(failed_with("insufficient_funds")),
        1,
    )
    .await;
    let rig = rig(&upstream);

    let failed = rig.provider.transact(transfer(TXN)).await.unwrap();
    assert_reply(&failed, Status::Failed, codes::INSUFFICIENT_FUNDS);
    assert_eq!(rig.provider.transact(transfer(TXN)).await.unwrap(), failed);
    assert_eq!(rig.provider.pending_count().await.unwrap(), 0);
}

#[tokio::test]
async fn a_request_that_is_not_a_transfer_never_reaches_the_bank() {
    let upstream = MockServer::start().await;
    token_endpoint(&upstream, 0).await;
    create_transfer()
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&upstream)
        .await;
    let rig = rig(&upstream);

    let mut request = transfer(TXN);
    request.transaction.details = Some(json!({"destination_account": "98765"}));
    let failed = rig.provider.transact(request).await.unwrap();
    assert_reply(&failed, Status::Failed, codes::INVALID_TRANSACTION);

    let mut request = transfer("txn-2");
    request.request_type = "get_balance".into();
    let failed = rig.provider.transact(request).await.unwrap();
    assert_reply(&failed, Status::Failed, codes::INVALID_TRANSACTION);
}

#[tokio::test]
async fn a_refused_request_is_failed_with_the_banks_code_only() {
    let upstream = MockServer::start().await;
    token_endpoint(&upstream, 1).await;
    create_answers(
        &upstream,
        ResponseTemplate::new(422).set_body_json(json!({"error": {
            "code": "creditor_account_closed",
            "message": "account 9876543210 is closed",
        }})),
        1,
    )
    .await;
    let rig = rig(&upstream);

    let failed = rig.provider.transact(transfer(TXN)).await.unwrap();
    assert_reply(&failed, Status::Failed, codes::INVALID_TRANSACTION);
    assert_eq!(
        failed.message,
        "The bank refused the transfer request (creditor_account_closed)"
    );
}

// ---------------------------------------------------------------- the token

#[tokio::test]
async fn the_token_is_reused_then_refreshed_before_it_expires() {
    let upstream = MockServer::start().await;
    // Lives 30 s, less than the 60 s refresh margin: stale after one use.
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(basic_auth(CLIENT_ID, CLIENT_SECRET))
        .and(body_string_contains("grant_type=client_credentials"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "short-lived", "token_type": "Bearer", "expires_in": 30,
            "refresh_token": "refresh-1",
        })))
        .expect(1)
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(basic_auth(CLIENT_ID, CLIENT_SECRET))
        .and(body_string_contains("grant_type=refresh_token"))
        .and(body_string_contains("refresh_token=refresh-1"))
        .respond_with(token_answer(TOKEN, 3600))
        .expect(1)
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/transfers"))
        .and(bearer_token("short-lived"))
        .respond_with(ResponseTemplate::new(201).set_body_json(awaiting_code(3)))
        .expect(1)
        .mount(&upstream)
        .await;
    confirm_answers(&upstream, CODE, bank_transfer("completed"), 1).await;
    // A second transaction, on the refreshed token: no third token request.
    create_transfer()
        .respond_with(ResponseTemplate::new(201).set_body_json(bank_transfer("completed")))
        .expect(1)
        .mount(&upstream)
        .await;
    let rig = rig(&upstream);

    rig.provider.transact(transfer(TXN)).await.unwrap();
    let done = rig.provider.validate(validate(CODE)).await.unwrap();
    assert_reply(&done, Status::Successful, codes::APPROVED);
    let second = rig.provider.transact(transfer("txn-2")).await.unwrap();
    assert_reply(&second, Status::Successful, codes::APPROVED);
}

#[tokio::test]
async fn a_token_the_bank_refuses_is_replaced_once() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token_answer("revoked", 3600))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&upstream)
        .await;
    token_endpoint(&upstream, 1).await;
    Mock::given(method("POST"))
        .and(path("/v1/transfers"))
        .and(bearer_token("revoked"))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&upstream)
        .await;
    create_answers(
        &upstream,
        ResponseTemplate::new(201).set_body_json(awaiting_code(3)),
        1,
    )
    .await;
    let rig = rig(&upstream);

    let waiting = rig.provider.transact(transfer(TXN)).await.unwrap();
    assert_reply(&waiting, Status::WaitingForOtp, codes::OTP_SENT);
}

#[tokio::test]
async fn refused_client_credentials_make_the_provider_unavailable() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": "invalid_client"})))
        .expect(1)
        .mount(&upstream)
        .await;
    create_transfer()
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&upstream)
        .await;
    let rig = rig(&upstream);

    let error = rig.provider.transact(transfer(TXN)).await.unwrap_err();
    assert!(matches!(error, ProviderError::Unreachable(_)), "{error:?}");
    assert!(!error.may_have_executed());
    for shown in [error.to_string(), format!("{error:?}")] {
        assert!(!shown.contains(CLIENT_SECRET), "{shown}");
    }
    // Nothing was recorded: the switch may send the transaction again.
    assert!(matches!(
        rig.provider.query(query()).await,
        Err(ProviderError::UnknownTransaction)
    ));
}

// ---------------------------------------------------------------- failures

#[tokio::test]
async fn a_5xx_after_sending_is_pending_and_settled_by_our_key() {
    let upstream = MockServer::start().await;
    token_endpoint(&upstream, 1).await;
    create_answers(&upstream, ResponseTemplate::new(500), 1).await;
    Mock::given(method("GET"))
        .and(path(format!("/v1/transfers/by-client-id/{KEY}")))
        .and(bearer_token(TOKEN))
        .respond_with(ResponseTemplate::new(200).set_body_json(bank_transfer("completed")))
        .expect(1)
        .mount(&upstream)
        .await;
    let rig = rig(&upstream);

    let pending = rig.provider.transact(transfer(TXN)).await.unwrap();
    assert_reply(&pending, Status::Pending, "");
    let done = rig.provider.query(query()).await.unwrap();
    assert_reply(&done, Status::Successful, codes::APPROVED);
}

#[tokio::test]
async fn a_timeout_is_pending_and_the_lost_sca_is_found_again() {
    let upstream = MockServer::start().await;
    token_endpoint(&upstream, 1).await;
    // The bank acts but answers after our timeout.
    create_answers(
        &upstream,
        ResponseTemplate::new(201)
            .set_body_json(awaiting_code(3))
            .set_delay(Duration::from_secs(5)),
        1,
    )
    .await;
    Mock::given(method("GET"))
        .and(path(format!("/v1/transfers/by-client-id/{KEY}")))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(json!({"error": {"code": "not_found"}})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&upstream)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v1/transfers/by-client-id/{KEY}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(awaiting_code(3)))
        .expect(1)
        .mount(&upstream)
        .await;
    confirm_answers(&upstream, CODE, bank_transfer("completed"), 1).await;
    let mut config = config(&upstream);
    config.timeout = Duration::from_millis(300);
    let rig = open(config);

    let pending = rig.provider.transact(transfer(TXN)).await.unwrap();
    assert_reply(&pending, Status::Pending, "");
    // The bank has nothing under our key yet: still pending, not Failed.
    assert_reply(
        &rig.provider.query(query()).await.unwrap(),
        Status::Pending,
        "",
    );
    // Now it has, waiting for the code it sent: the customer can confirm.
    let waiting = rig.provider.query(query()).await.unwrap();
    assert_reply(&waiting, Status::WaitingForOtp, codes::OTP_SENT);
    let done = rig.provider.validate(validate(CODE)).await.unwrap();
    assert_reply(&done, Status::Successful, codes::APPROVED);
}

#[tokio::test]
async fn an_unknown_confirmation_outcome_is_pending_until_polled() {
    let upstream = MockServer::start().await;
    token_endpoint(&upstream, 1).await;
    create_answers(
        &upstream,
        ResponseTemplate::new(201).set_body_json(awaiting_code(3)),
        1,
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/v1/transfers/trf_1/confirm"))
        .respond_with(ResponseTemplate::new(502))
        .expect(1)
        .mount(&upstream)
        .await;
    // The SDK keeps what `complete` was given, so the poll looks the
    // transfer up by the bank's own id.
    Mock::given(method("GET"))
        .and(path("/v1/transfers/trf_1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(bank_transfer("completed")))
        .expect(1)
        .mount(&upstream)
        .await;
    let rig = rig(&upstream);

    rig.provider.transact(transfer(TXN)).await.unwrap();
    let pending = rig.provider.validate(validate(CODE)).await.unwrap();
    assert_reply(&pending, Status::Pending, "");
    let done = rig.provider.query(query()).await.unwrap();
    assert_reply(&done, Status::Successful, codes::APPROVED);
}

#[tokio::test]
async fn a_bank_that_is_not_taking_requests_leaves_nothing_behind() {
    let upstream = MockServer::start().await;
    token_endpoint(&upstream, 1).await;
    create_transfer()
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&upstream)
        .await;
    create_answers(
        &upstream,
        ResponseTemplate::new(201).set_body_json(awaiting_code(3)),
        1,
    )
    .await;
    let rig = rig(&upstream);

    let error = rig.provider.transact(transfer(TXN)).await.unwrap_err();
    assert!(matches!(error, ProviderError::Unreachable(_)), "{error:?}");
    assert!(matches!(
        rig.provider.query(query()).await,
        Err(ProviderError::UnknownTransaction)
    ));
    // The switch answered 503 and recorded nothing; the app's retry goes through.
    let waiting = rig.provider.transact(transfer(TXN)).await.unwrap();
    assert_reply(&waiting, Status::WaitingForOtp, codes::OTP_SENT);
}

#[tokio::test]
async fn a_conflict_on_our_key_answers_the_existing_transfer() {
    let upstream = MockServer::start().await;
    token_endpoint(&upstream, 1).await;
    create_answers(
        &upstream,
        ResponseTemplate::new(409)
            .set_body_json(json!({"error": {"code": "client_transfer_id_reused"}})),
        1,
    )
    .await;
    Mock::given(method("GET"))
        .and(path(format!("/v1/transfers/by-client-id/{KEY}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(awaiting_code(3)))
        .expect(1)
        .mount(&upstream)
        .await;
    let rig = rig(&upstream);

    let waiting = rig.provider.transact(transfer(TXN)).await.unwrap();
    assert_reply(&waiting, Status::WaitingForOtp, codes::OTP_SENT);
}

#[tokio::test]
async fn a_refused_confirmation_answers_where_the_transfer_stands() {
    let upstream = MockServer::start().await;
    token_endpoint(&upstream, 1).await;
    create_answers(
        &upstream,
        ResponseTemplate::new(201).set_body_json(awaiting_code(3)),
        1,
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/v1/transfers/trf_1/confirm"))
        .respond_with(
            ResponseTemplate::new(422).set_body_json(json!({"error": {"code": "sca_expired"}})),
        )
        .expect(1)
        .mount(&upstream)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/transfers/trf_1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(failed_with("sca_expired")))
        .expect(1)
        .mount(&upstream)
        .await;
    let rig = rig(&upstream);

    rig.provider.transact(transfer(TXN)).await.unwrap();
    let failed = rig.provider.validate(validate(CODE)).await.unwrap();
    assert_reply(&failed, Status::Failed, codes::OTP_EXPIRED);
    assert_eq!(rig.provider.pending_count().await.unwrap(), 0);
}

#[tokio::test]
async fn an_unreachable_bank_is_unavailable() {
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = UpstreamConfig::new(
        &format!("http://127.0.0.1:{port}"),
        SecretString::from(CLIENT_ID),
        SecretString::from(CLIENT_SECRET),
    )
    .unwrap();
    let rig = open(config);

    let error = rig.provider.transact(transfer(TXN)).await.unwrap_err();
    assert!(matches!(error, ProviderError::Unreachable(_)), "{error:?}");
    assert_eq!(rig.provider.pending_count().await.unwrap(), 0);
}

// ---------------------------------------------------------------- reversal

#[tokio::test]
async fn a_completed_transfer_is_reversed_once() {
    let upstream = MockServer::start().await;
    token_endpoint(&upstream, 1).await;
    create_answers(
        &upstream,
        ResponseTemplate::new(201).set_body_json(bank_transfer("completed")),
        1,
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/v1/transfers/trf_1/reversal"))
        .and(bearer_token(TOKEN))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"id": "rev_1", "status": "completed"})),
        )
        .expect(1)
        .mount(&upstream)
        .await;
    let rig = rig(&upstream);

    let done = rig.provider.transact(transfer(TXN)).await.unwrap();
    assert_reply(&done, Status::Successful, codes::APPROVED);
    let reversed = rig.provider.reverse(reverse("rev-1")).await.unwrap();
    assert_reply(&reversed, Status::Successful, codes::APPROVED);
    assert_eq!(
        reversed.provider_response,
        Some(json!({"reversal_reference": "rev_1"}))
    );
    // The same reversal again answers the same; another is refused.
    assert_eq!(
        rig.provider.reverse(reverse("rev-1")).await.unwrap(),
        reversed
    );
    let again = rig.provider.reverse(reverse("rev-2")).await.unwrap();
    assert_reply(&again, Status::Failed, codes::NOT_REVERSIBLE);
}

// ---------------------------------------------------------------- over HTTP

/// The SCA conversation as the switch holds it with a remote provider.
async fn converse_over_http(provider: &RemoteProvider) {
    let waiting = provider.transact(transfer(TXN)).await.unwrap();
    assert_reply(&waiting, Status::WaitingForOtp, codes::OTP_SENT);
    let done = provider.validate(validate(CODE)).await.unwrap();
    assert_reply(&done, Status::Successful, codes::APPROVED);
    assert_eq!(provider.query(query()).await.unwrap(), done);
}

async fn sca_upstream() -> MockServer {
    let upstream = MockServer::start().await;
    token_endpoint(&upstream, 1).await;
    create_answers(
        &upstream,
        ResponseTemplate::new(201).set_body_json(awaiting_code(3)),
        1,
    )
    .await;
    confirm_answers(&upstream, CODE, bank_transfer("completed"), 1).await;
    upstream
}

/// The secret the switch and the provider share in these tests.
const HOP_SECRET: &str = "template-hop-secret-for-tests-0123456789";
/// The provider's data key (public, for tests).
const DATA_KEY: &str = "5c582bd6a482c1304683245d9dc030ad30b3268fa79dd91cd641661d4a4cdb87";
const HOP_KEY_ID: &str = "template-bank";

fn hop_signer() -> manifold_provider::HopSigner {
    manifold_provider::HopSigner::new(&SecretString::from(HOP_SECRET), HOP_KEY_ID)
}

#[tokio::test]
async fn it_serves_the_provider_protocol_over_http() {
    let upstream = sca_upstream().await;
    let rig = rig(&upstream);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(manifold_provider::server::serve_provider(
        listener,
        rig.provider.clone() as Arc<dyn Provider>,
        manifold_provider::server::ProviderServer::new(manifold_provider::HopVerifier::new(
            &SecretString::from(HOP_SECRET),
            HOP_KEY_ID,
            LIMIT,
        )),
        async {
            let _ = stopped.await;
        },
    ));
    let remote = RemoteProvider::new(&format!("http://{address}"), hop_signer(), LIMIT).unwrap();

    converse_over_http(&remote).await;
    assert!(matches!(
        remote
            .query(QueryRequest {
                transaction_ref: "never-sent".into(),
                ..query()
            })
            .await,
        Err(ProviderError::UnknownTransaction)
    ));

    stop.send(()).unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn the_binary_runs_the_provider_and_logs_no_secret() {
    let upstream = sca_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_template-provider"))
        .args(["--listen", "127.0.0.1:0", "--upstream-url"])
        .arg(upstream.uri())
        .args(["--client-id", CLIENT_ID, "--data"])
        .arg(dir.path().join("db"))
        .arg("--outbox")
        .arg(dir.path().join("outbox.jsonl"))
        .env("TEMPLATE_CLIENT_SECRET", CLIENT_SECRET)
        .env("MANIFOLD_PROVIDER_SECRET", HOP_SECRET)
        .args(["--key-id", HOP_KEY_ID])
        .env("MANIFOLD_PROVIDER_DATA_KEY_ID", "test")
        .env("MANIFOLD_PROVIDER_DATA_KEY", DATA_KEY)
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(LIMIT, stdout.next_line())
        .await
        .expect("the provider did not start")
        .unwrap()
        .expect("the provider exited before listening");
    let address = line
        .strip_prefix("template-provider listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"));
    let remote = RemoteProvider::new(&format!("http://{address}"), hop_signer(), LIMIT).unwrap();

    converse_over_http(&remote).await;

    child.kill().await.unwrap();
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .await
        .unwrap();
    assert!(logs.contains("upstream access token obtained"), "{logs}");
    for secret in [CLIENT_SECRET, TOKEN, CODE, ACCOUNT] {
        assert!(!logs.contains(secret), "`{secret}` is in the logs:\n{logs}");
    }
}

#[tokio::test]
async fn the_binary_refuses_to_start_without_a_client_secret() {
    let dir = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_template-provider"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--upstream-url",
            "http://127.0.0.1:9",
            "--client-id",
            CLIENT_ID,
            "--data",
        ])
        .arg(dir.path().join("db"))
        .args(["--key-id", HOP_KEY_ID])
        .env("MANIFOLD_PROVIDER_SECRET", HOP_SECRET)
        .env("MANIFOLD_PROVIDER_DATA_KEY_ID", "test")
        .env("MANIFOLD_PROVIDER_DATA_KEY", DATA_KEY)
        .env_remove("TEMPLATE_CLIENT_SECRET")
        .output();
    let output = tokio::time::timeout(LIMIT, output).await.unwrap().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("TEMPLATE_CLIENT_SECRET"), "{stderr}");
}

/// A provider that could not tell the switch from a stranger must not serve.
#[tokio::test]
async fn the_binary_refuses_to_start_without_the_switchs_secret() {
    let dir = tempfile::tempdir().unwrap();
    for (secret, expected) in [
        (None, "MANIFOLD_PROVIDER_SECRET"),
        (Some("too-short"), "at least 32"),
    ] {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_template-provider"));
        command
            .args([
                "--listen",
                "127.0.0.1:0",
                "--upstream-url",
                "http://127.0.0.1:9",
            ])
            .args(["--client-id", CLIENT_ID, "--key-id", HOP_KEY_ID, "--data"])
            .arg(dir.path().join("db"))
            .env("TEMPLATE_CLIENT_SECRET", CLIENT_SECRET)
            .env_remove("MANIFOLD_PROVIDER_SECRET")
            .env("MANIFOLD_PROVIDER_DATA_KEY_ID", "test")
            .env("MANIFOLD_PROVIDER_DATA_KEY", DATA_KEY);
        if let Some(secret) = secret {
            command.env("MANIFOLD_PROVIDER_SECRET", secret);
        }
        let output = tokio::time::timeout(LIMIT, command.output())
            .await
            .unwrap()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!stderr.contains("listening"), "{stderr}");
    }
}

// ---------------------------------------------------------------- the guide

/// The switch configuration `providers/README.md` tells hosts to write is
/// accepted by the switch's own configuration parser, as written.
#[test]
fn the_guides_switch_configuration_is_valid() {
    let guide_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let guide = std::fs::read_to_string(&guide_path).unwrap();
    let marker = guide
        .find("<!-- guide:switch-config")
        .expect("the guide marks its configuration block");
    let block = &guide[marker..];
    let start = block
        .find("```toml\n")
        .expect("a toml block follows the marker")
        + 8;
    let block = &block[start..];
    let block = &block[..block.find("```").unwrap()];
    let text = format!("listen = \"127.0.0.1:0\"\n[data_at_rest]\nkey_id = \"test\"\nkey = \"5c582bd6a482c1304683245d9dc030ad30b3268fa79dd91cd641661d4a4cdb87\"\n[storage]\npath = \"data/switch\"\n\n{block}");
    let config = manifold_config::SwitchConfig::from_toml(&text, &guide_path)
        .unwrap_or_else(|error| panic!("{error}"));

    let provider = config.provider("template-bank").unwrap();
    let manifold_config::ProviderEndpoint::Remote(remote) = &provider.endpoint else {
        panic!("the guide's provider is remote");
    };
    // The binary's default --listen.
    assert_eq!(remote.url, "http://127.0.0.1:9200");
    assert_eq!(remote.key_id, "template-bank");
    assert!(provider.services.contains("transfer_funds"));
    assert!(provider.reversible.contains("transfer_funds"));
    let app = config.apps.iter().find(|app| app.id == "bank-app").unwrap();
    let grant = &app.services["transfer_funds"];
    assert_eq!(grant.providers, ["template-bank"]);
    assert!(!grant.otp_override);
}
