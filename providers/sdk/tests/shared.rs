//! The provider's state on PostgreSQL, shared by several instances of it
//! (`ProviderService::open_shared`): what one instance began, another
//! carries on, and a transaction is worked on by one instance at a time.
//! Each test makes its own database on the server `MANIFOLD_TEST_POSTGRES`
//! names, and skips (loudly) without one.

mod support;

use std::sync::Arc;
use std::time::Duration;

use manifold_crypto::{DataKey, DataKeys, SecretString};
use manifold_provider::notify::Notifier;
use manifold_provider::{Provider, ProviderReply, QueryRequest, Status, ValidateRequest};
use manifold_provider_sdk::{codes, ProviderService, SharedState, SharedStateOptions};
use manifold_test_postgres::TestDatabase;
use serde_json::json;

use support::*;

/// One instance of the provider on the shared state.
async fn instance(
    database: &TestDatabase,
    connector: &ScriptedConnector,
    notifier: &Arc<RecordingNotifier>,
) -> Arc<ProviderService<ScriptedConnector>> {
    let state = SharedState::connect(&SharedStateOptions {
        url: database.url().to_owned(),
        pool_size: 4,
        timeout: Duration::from_secs(10),
        ca_file: None,
        insecure_plaintext: false,
    })
    .await
    .unwrap_or_else(|error| panic!("connecting the shared state: {error}"));
    let mut settings = settings();
    settings.data_keys = Some(data_keys());
    Arc::new(
        ProviderService::open_shared(
            state,
            notifier.clone() as Arc<dyn Notifier>,
            connector.clone(),
            settings,
        )
        .await
        .unwrap_or_else(|error| panic!("opening the service: {error}")),
    )
}

fn validate(transaction_ref: &str, n: usize, code: &str) -> ValidateRequest {
    ValidateRequest {
        app_id: APP.into(),
        request_ref: format!("val-{transaction_ref}-{n}"),
        request_type: "transfer_funds".into(),
        transaction_ref: transaction_ref.into(),
        input: otp(code),
    }
}

fn query(transaction_ref: &str) -> QueryRequest {
    QueryRequest {
        app_id: APP.into(),
        request_type: "transfer_funds".into(),
        transaction_ref: transaction_ref.into(),
    }
}

/// The state is sealed, as in a real deployment.
fn data_keys() -> Arc<DataKeys> {
    let key = DataKey::from_hex("k1", &SecretString::new("11".repeat(32))).unwrap();
    Arc::new(DataKeys::new(key, Vec::new()).unwrap())
}

fn status_and_code(reply: &ProviderReply) -> (Status, &str) {
    (reply.status, reply.provider_response_code.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_otp_issued_by_one_instance_is_checked_by_another() {
    let Some(database) = TestDatabase::create("sdk_shared_otp").await else {
        return;
    };
    let connector = ScriptedConnector::new().on_start(confirm_with_otp(json!({ "posting": 1 })));
    let notifier = Arc::new(RecordingNotifier::default());
    let one = instance(&database, &connector, &notifier).await;
    let two = instance(&database, &connector, &notifier).await;

    let waiting = one.transact(transfer("tx-1")).await.unwrap();
    assert_eq!(waiting.status, Status::WaitingForOtp, "{}", waiting.message);
    let code = code_in(notifier.sent().last().unwrap(), 6);
    // A wrong code through the other instance spends an attempt there...
    let wrong_reply = two
        .validate(validate("tx-1", 1, &wrong(&code)))
        .await
        .unwrap();
    assert_eq!(
        status_and_code(&wrong_reply),
        (Status::WaitingForOtp, codes::WRONG_OTP)
    );
    assert!(
        wrong_reply.message.contains("2 attempts left"),
        "{}",
        wrong_reply.message
    );
    // ...which the first instance sees.
    let again = one
        .validate(validate("tx-1", 2, &wrong(&code)))
        .await
        .unwrap();
    assert!(
        again.message.contains("1 attempt left"),
        "{}",
        again.message
    );
    let done = two.validate(validate("tx-1", 3, &code)).await.unwrap();
    assert_eq!(done.status, Status::Successful, "{}", done.message);
    // The outcome is the same from either, and the upstream completed once.
    assert_eq!(one.query(query("tx-1")).await.unwrap(), done);
    assert_eq!(one.transact(transfer("tx-1")).await.unwrap(), done);
    assert_eq!(connector.calls().complete, 1);
    assert_eq!(one.pending_count().await.unwrap(), 0);
    assert_eq!(two.pending_count().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attempts_are_counted_once_across_instances_validating_at_once() {
    let Some(database) = TestDatabase::create("sdk_shared_attempts").await else {
        return;
    };
    let connector = ScriptedConnector::new().on_start(confirm_with_otp(json!({ "posting": 1 })));
    let notifier = Arc::new(RecordingNotifier::default());
    let instances = [
        instance(&database, &connector, &notifier).await,
        instance(&database, &connector, &notifier).await,
        instance(&database, &connector, &notifier).await,
    ];
    instances[0].transact(transfer("tx-1")).await.unwrap();
    let code = code_in(notifier.sent().last().unwrap(), 6);
    // Nine wrong codes at once, three through each instance: three
    // attempts are spent, whoever counted them.
    let tasks: Vec<_> = (0..9)
        .map(|n| {
            let service = instances[n % 3].clone();
            let given = wrong(&code);
            tokio::spawn(async move { service.validate(validate("tx-1", n, &given)).await })
        })
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.unwrap().unwrap());
    }
    let exhausted = replies
        .iter()
        .filter(|reply| status_and_code(reply) == (Status::Failed, codes::OTP_ATTEMPTS_EXHAUSTED))
        .count();
    let left: Vec<&str> = replies
        .iter()
        .filter(|reply| reply.status == Status::WaitingForOtp)
        .map(|reply| reply.message.as_str())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left.iter().any(|m| m.contains("2 attempts left")),
        "{left:?}"
    );
    assert!(
        left.iter().any(|m| m.contains("1 attempt left")),
        "{left:?}"
    );
    assert_eq!(exhausted, 7);
    // The right code comes too late, through any instance.
    let late = instances[1]
        .validate(validate("tx-1", 99, &code))
        .await
        .unwrap();
    assert_eq!(
        status_and_code(&late),
        (Status::Failed, codes::OTP_ATTEMPTS_EXHAUSTED)
    );
    assert_eq!(connector.calls().complete, 0);
}
