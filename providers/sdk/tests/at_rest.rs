//! The provider's state at rest: with a data key, the raw bytes of its
//! database hold none of the customer data the conversations carried
//! (without one they do, which is what shows the search works); rotation
//! and resealing; and retention, which drops a final outcome's customer
//! data once it is old enough while its status stays.

mod support;

use std::sync::Arc;
use std::time::Duration;

use manifold_crypto::{DataKey, DataKeys, SecretString};
use manifold_provider::Status;
use manifold_provider_sdk::state::DROPPED_MESSAGE;
use manifold_provider_sdk::{Outcome, ServiceSettings};
use serde_json::json;

use support::*;

const ACCOUNT: &str = "0456789123";
const DESTINATION: &str = "0987654321";
const MARKER: &str = "upstream-marker-5e1b";
const DAY: Duration = Duration::from_secs(86_400);

fn keys(current: (&str, u8), previous: &[(&str, u8)]) -> Arc<DataKeys> {
    let key = |(id, byte): (&str, u8)| {
        DataKey::from_hex(id, &SecretString::new(hex::encode([byte; 32]))).unwrap()
    };
    Arc::new(DataKeys::new(key(current), previous.iter().copied().map(key).collect()).unwrap())
}

fn settings_with(data_keys: Option<Arc<DataKeys>>) -> ServiceSettings {
    let mut settings = settings();
    settings.data_keys = data_keys;
    settings.retention = Some(DAY);
    settings
}

/// A connector whose upstream answers carry the account numbers and the
/// marker, at every step the SDK stores.
fn connector() -> ScriptedConnector {
    let waiting = || {
        confirm_with_otp(json!({ "source": ACCOUNT, "destination": DESTINATION, "note": MARKER }))
    };
    ScriptedConnector::new()
        .on_start(waiting())
        .on_start(waiting())
        .on_accepted(done(
            Outcome::successful("00", format!("Sent to {DESTINATION}"))
                .with_response(json!({ "account": ACCOUNT, "balance": 2_077_099, "bank": MARKER }))
                .reversible_with(json!({ "source": ACCOUNT, "destination": DESTINATION })),
        ))
}

/// Whether any file under `dir` holds `needle`, as bytes.
fn files_hold(dir: &std::path::Path, needle: &str) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_hold(&path, needle)
        } else {
            std::fs::read(&path)
                .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
                .unwrap_or(false)
        }
    })
}

/// One transfer waiting for its code and one completed, both on disk.
async fn converse(rig: &Rig) {
    rig.transact(transfer("tx-1")).await;
    rig.transact(transfer("tx-2")).await;
    let code = rig.last_code();
    let done = rig.validate("tx-2", otp(&code)).await;
    assert_eq!(done.status, Status::Successful, "{}", done.message);
    rig.service.sweep_expired().await.unwrap();
    rig.db.flush().unwrap();
}

#[tokio::test]
async fn with_a_data_key_the_database_holds_no_customer_data() {
    for sealed in [false, true] {
        let rig = Rig::with_settings(
            connector(),
            settings_with(sealed.then(|| keys(("k1", 1), &[]))),
        );
        converse(&rig).await;
        // The codes went by SMS: the phone number is what the SDK keeps.
        for needle in [ACCOUNT, DESTINATION, MARKER, MOBILE] {
            assert_eq!(
                files_hold(rig.dir(), needle),
                !sealed,
                "`{needle}`, sealed: {sealed}"
            );
        }
    }
}

#[tokio::test]
async fn a_sealed_state_answers_after_a_restart_and_reseals_under_a_new_key() {
    let rig = Rig::with_settings(connector(), settings_with(Some(keys(("old", 1), &[]))));
    converse(&rig).await;
    let done = rig.query("tx-2").await;

    // A new current key, the old one kept to open: the same answers.
    let mut rig = rig;
    rig.settings = settings_with(Some(keys(("new", 2), &[("old", 1)])));
    let rig = rig.restart();
    assert_eq!(rig.query("tx-2").await, done);
    assert_eq!(rig.query("tx-1").await.status, Status::WaitingForOtp);
    // The pending entry and the final record (the OTP hash key was sealed
    // under the new key as the service opened).
    assert_eq!(rig.service.reseal().await.unwrap(), 2);
    assert_eq!(rig.service.reseal().await.unwrap(), 0);

    // Without the old key, everything still opens.
    let mut rig = rig;
    rig.settings = settings_with(Some(keys(("new", 2), &[])));
    let rig = rig.restart();
    assert_eq!(rig.query("tx-2").await, done);
    let code = code_in(&rig.notifier.sent()[0], rig.digits());
    assert_eq!(
        rig.validate("tx-1", otp(&code)).await.status,
        Status::Successful,
        "a code issued under the old key still validates"
    );

    // Without any key, a sealed state is refused, never misread.
    let mut rig = rig;
    rig.settings = settings_with(None);
    let error = rig.restart_expecting_error();
    assert!(error.contains("no data key"), "{error}");
}

#[tokio::test]
async fn a_state_sealed_under_a_key_not_given_is_refused_at_start_naming_it() {
    let rig = Rig::with_settings(connector(), settings_with(Some(keys(("old", 1), &[]))));
    converse(&rig).await;
    // Rotated, but the old key left out: refused before any call.
    let mut rig = rig;
    rig.settings = settings_with(Some(keys(("new", 2), &[])));
    let error = rig.restart_expecting_error();
    assert!(
        error.contains("`old`") && error.contains("--previous-data-key"),
        "{error}"
    );
}

#[tokio::test]
async fn retention_drops_customer_data_of_old_outcomes_only() {
    let rig = Rig::with_settings(connector(), settings_with(Some(keys(("k", 1), &[]))));
    converse(&rig).await;
    let done = rig.query("tx-2").await;
    assert!(done.provider_response.is_some());
    let now = START_MS;

    assert_eq!(
        rig.service
            .sweep_retention(now + DAY.as_millis() as u64 - 1)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        rig.query("tx-2").await,
        done,
        "younger than the retention period"
    );
    assert_eq!(
        rig.service
            .sweep_retention(now + DAY.as_millis() as u64)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        rig.service
            .sweep_retention(now + 2 * DAY.as_millis() as u64)
            .await
            .unwrap(),
        0
    );

    let dropped = rig.query("tx-2").await;
    assert_eq!(
        (dropped.status, dropped.provider_response_code.as_str()),
        (Status::Successful, "00")
    );
    assert_eq!(dropped.message, DROPPED_MESSAGE);
    assert_eq!(dropped.provider_response, None);
    assert_eq!(
        rig.transact(transfer("tx-2")).await,
        dropped,
        "a repeat gets the same"
    );
    let refused = rig.reverse("tx-2", "rev-1").await;
    assert_eq!(refused.status, Status::Failed);
    assert!(refused.message.contains("retention"), "{}", refused.message);
    assert!(
        rig.connector.reversed_with().is_empty(),
        "the upstream was not asked"
    );
    // The waiting one is untouched.
    assert_eq!(rig.query("tx-1").await.status, Status::WaitingForOtp);
}
