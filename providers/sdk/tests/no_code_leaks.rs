//! No code in a log, a stored record, a reply or a `Debug` print.
//!
//! Alone in its own test binary: its log capture is a thread-local
//! subscriber, and tracing caches per call site whether anyone listens, so
//! other tests logging on other threads at the same time could make the
//! capture miss the service's events.

mod support;

use std::time::Duration;

use manifold_crypto::ValidationInput;
use manifold_provider::Status;
use serde_json::{json, Value};
use support::*;

/// The default shortest time between two sends.
const RESEND_INTERVAL: Duration = Duration::from_secs(30);

/// A rig whose upstream asks for an OTP to confirm `deferred`.
fn otp_rig(deferred: Value) -> Rig {
    Rig::new(ScriptedConnector::new().on_start(confirm_with_otp(deferred)))
}

#[tokio::test]
async fn codes_never_appear_in_the_store_the_logs_replies_or_debug_output() {
    let logs = LogCapture::default();
    let _capturing = logs.install();
    let rig = otp_rig(json!({ "posting": 1 }));
    let mut replies = vec![rig.transact(transfer("tx-1")).await];
    let first = rig.last_code();
    let check_store = |code: &str| {
        let pending = rig.pending_raw();
        assert_eq!(pending.len(), 1);
        let stored: Value = serde_json::from_slice(&pending[0].1).expect("JSON");
        assert_eq!(stored["awaiting"]["kind"], "otp");
        let hash = stored["awaiting"]["otp_hash"]
            .as_str()
            .expect("a keyed hash");
        assert_eq!(hash.len(), 64);
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
        for value in rig.everything_stored() {
            assert!(!shows_code(&value, code), "a code is stored in clear");
        }
    };
    check_store(&first);

    // Every path that handles a code: a wrong one, a resend, the right one.
    replies.push(rig.validate("tx-1", otp(&wrong(&first))).await);
    rig.advance(RESEND_INTERVAL);
    replies.push(rig.validate("tx-1", ValidationInput::Resend).await);
    let second = rig.last_code();
    check_store(&second);
    check_store(&first);
    replies.push(rig.validate("tx-1", otp(&second)).await);
    assert_eq!(replies.last().map(|r| r.status), Some(Status::Successful));

    let notifications = rig.notifier.sent();
    assert_eq!(notifications.len(), 2);
    let text = logs.text();
    // The capture works: the service's own words are in it.
    assert!(text.contains("OTP sent"), "{text}");
    assert!(text.contains(MOBILE_SHOWN), "{text}");
    for (notification, code) in notifications.iter().zip([&first, &second]) {
        assert!(shows_code(notification.body.expose(), code));
        for shown in [format!("{notification:?}"), format!("{notification:#?}")] {
            assert!(!shows_code(&shown, code), "Debug shows the code: {shown}");
        }
        assert!(!shows_code(&text, code), "a log line shows the code");
        for reply in &replies {
            assert!(!shows_code(&reply.message, code), "{}", reply.message);
        }
    }
    assert!(!text.contains(MOBILE), "logs show the destination unmasked");
}
