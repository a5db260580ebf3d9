//! The demo bank through the `Provider` trait, as the switch calls it: where
//! its data goes, and the marker in its answers.

use std::path::Path;
use std::sync::Arc;

use manifold_crypto::{BankAccount, SecretString, SourceDetails};
use manifold_demo_provider::{DemoProvider, DemoSettings, ANSWER_MARKER, MARKER_FIELD};
use manifold_provider::notify::OutboxNotifier;
use manifold_provider::{
    GroupCommit, Provider, ReverseRequest, Status, TransactRequest, TransactionDetails,
};
use serde_json::json;

const SOURCE_ACCOUNT: &str = "0123456789";
const DESTINATION_ACCOUNT: &str = "9876543210";

/// The bank with its SDK state in `<dir>/state` and its ledger in
/// `<dir>/ledger`.
fn open(dir: &Path) -> DemoProvider {
    try_open(dir).unwrap()
}

fn try_open(dir: &Path) -> Result<DemoProvider, String> {
    let db = sled::open(dir.join("state")).map_err(|e| e.to_string())?;
    manifold_demo_provider::open(
        &db,
        GroupCommit::start(db.clone()).map_err(|e| e.to_string())?,
        &dir.join("ledger"),
        Arc::new(OutboxNotifier::new(dir.join("outbox.jsonl"))),
        DemoSettings::default(),
    )
    .map_err(|e| e.to_string())
}

fn request(request_type: &str, transaction_ref: &str, amount: u64) -> TransactRequest {
    TransactRequest {
        app_id: "app".into(),
        request_ref: format!("req-{transaction_ref}"),
        request_type: request_type.into(),
        transaction_ref: transaction_ref.into(),
        otp_override: true,
        read_only: false,
        source: SourceDetails::BankAccount(BankAccount {
            account_number: SecretString::from(SOURCE_ACCOUNT),
            bank_code: "058".into(),
        }),
        transaction: TransactionDetails {
            amount,
            details: Some(json!({
                "destination_account": DESTINATION_ACCOUNT,
                "destination_bank_code": "044",
            })),
            ..TransactionDetails::default()
        },
    }
}

#[tokio::test]
async fn every_answer_carries_the_marker_beside_its_fields() {
    let dir = tempfile::tempdir().unwrap();
    let bank = open(dir.path());

    let balance = bank
        .transact(request("get_balance", "t-bal", 0))
        .await
        .unwrap();
    assert_eq!(balance.status, Status::Successful, "{balance:?}");
    let response = balance.provider_response.unwrap();
    assert_eq!(response[MARKER_FIELD], ANSWER_MARKER);
    assert_eq!(response["avialable_balance"], 2_077_099);
    assert_eq!(response["account_number"], "******6789");

    let transfer = bank
        .transact(request("transfer_funds", "t-trf", 1_000))
        .await
        .unwrap();
    assert_eq!(transfer.status, Status::Successful, "{transfer:?}");
    let response = transfer.provider_response.unwrap();
    assert_eq!(response[MARKER_FIELD], ANSWER_MARKER);
    assert_eq!(response["destination_account"], "******3210");
    assert_eq!(response["amount"], 1_000);

    let reversal = bank
        .reverse(ReverseRequest {
            app_id: "app".into(),
            request_ref: "req-rev".into(),
            request_type: "transfer_funds".into(),
            transaction_ref: "t-trf".into(),
        })
        .await
        .unwrap();
    assert_eq!(reversal.status, Status::Successful, "{reversal:?}");
    let response = reversal.provider_response.unwrap();
    assert_eq!(response[MARKER_FIELD], ANSWER_MARKER);
    assert_eq!(response["reversal_reference"], "DEMO-REV-t-trf");
}

/// Every file under `dir`, read whole.
fn bytes_under(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(bytes_under(&path));
        } else {
            all.extend(std::fs::read(&path).unwrap());
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// The ledger's books are in the ledger's directory, and the balances are
/// read from there after the bank is opened again.
#[tokio::test]
async fn the_ledger_lives_in_its_own_directory() {
    let dir = tempfile::tempdir().unwrap();
    {
        let bank = open(dir.path());
        let transfer = bank
            .transact(request("transfer_funds", "t-1", 5_000))
            .await
            .unwrap();
        assert_eq!(transfer.status, Status::Successful, "{transfer:?}");
    }
    let ledger = bytes_under(&dir.path().join("ledger"));
    assert!(contains(&ledger, DESTINATION_ACCOUNT), "the ledger's books");

    // The group commits let go of both databases shortly after the drop.
    let bank = (0..100)
        .find_map(|_| {
            try_open(dir.path())
                .map_err(|_| std::thread::sleep(std::time::Duration::from_millis(20)))
                .ok()
        })
        .expect("the bank reopens");
    assert_eq!(
        bank.connector()
            .bank_balance("058", SOURCE_ACCOUNT)
            .unwrap(),
        Some(2_077_099 - 5_000)
    );
    assert_eq!(
        bank.connector()
            .bank_balance("044", DESTINATION_ACCOUNT)
            .unwrap(),
        Some(2_077_099 + 5_000)
    );
}
