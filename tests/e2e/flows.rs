//! The calls of seed 003's process flow, end to end, against both provider modes.

use manifold_e2e::*;
use serde_json::Value;

use crate::rig::{Rig, MODES};

#[tokio::test]
async fn get_balance_with_otp_override_is_answered_at_once() {
    for mode in MODES {
        let rig = Rig::start(mode).await;
        let app = rig.app(QUICK_APP);
        let reply = app.get_balance("r-1", "t-1", "0123456789").await;
        assert_eq!(
            (reply.http, reply.status()),
            (200, "Successful"),
            "{mode:?}: {}",
            reply.raw
        );
        let data = &reply.body["data"];
        assert_eq!(data["provider_response_code"], "00");
        assert_eq!(data["provider"], "demo");
        assert!(data["errors"].is_null() && data["error"].is_null());
        assert_eq!(data["provider_response"]["avialable_balance"], 2_077_099);
        assert_eq!(data["provider_response"]["currency"], "NGN");
        assert_eq!(data["provider_response"]["account_number"], "******6789");
        // Nothing waits for an OTP and no OTP was sent.
        assert_eq!(outbox_len(&rig.outbox), 0);

        let query = app.query("q-1", "t-1").await;
        assert_eq!(query.status(), "Successful");
        assert_eq!(query.body["data"]["transaction"]["status"], "Successful");
        assert_eq!(
            query.body["data"]["provider_response"],
            data["provider_response"]
        );
    }
}

#[tokio::test]
async fn the_otp_flow_waits_refuses_a_wrong_code_and_completes_with_the_right_one() {
    for mode in MODES {
        let rig = Rig::start(mode).await;
        let app = rig.app(OTP_APP);
        let reply = app.get_balance("r-1", "t-1", "0123456789").await;
        assert_eq!(
            (reply.http, reply.status()),
            (200, "WaitingForOTP"),
            "{mode:?}: {}",
            reply.raw
        );
        assert_eq!(
            reply.message(),
            "Please enter the OTP sent to 2348022****08"
        );
        assert_eq!(reply.body["data"]["provider_response_code"], "900T0");
        assert!(reply.body["data"]["provider_response"].is_null());
        assert_eq!(app.query("q-1", "t-1").await.status(), "WaitingForOTP");

        let code = latest_otp(&rig.outbox, "2348022000008");
        let wrong = app
            .validate("v-1", "t-1", "get_balance", &wrong_otp(&code))
            .await;
        assert_eq!(wrong.status(), "WaitingForOTP", "{}", wrong.raw);
        assert!(
            wrong.message().starts_with("Wrong OTP. 2 attempts left"),
            "{}",
            wrong.message()
        );
        assert_eq!(app.query("q-2", "t-1").await.status(), "WaitingForOTP");

        let right = app.validate("v-2", "t-1", "get_balance", &code).await;
        assert_eq!(right.status(), "Successful", "{mode:?}: {}", right.raw);
        assert_eq!(
            right.body["data"]["provider_response"]["avialable_balance"],
            2_077_099
        );

        let query = app.query("q-3", "t-1").await;
        assert_eq!(query.status(), "Successful");
        let history: Vec<&str> = query.body["data"]["transaction"]["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["status"].as_str().unwrap())
            .collect();
        assert_eq!(
            history,
            ["Pending", "WaitingForOTP", "WaitingForOTP", "Successful"]
        );

        // A validate after the end is refused and changes nothing.
        let late = app.validate("v-3", "t-1", "get_balance", &code).await;
        assert_eq!((late.http, late.error()), (409, "not_awaiting_validation"));
        // Seed 003: the provider's stored data is erased once the OTP is used.
        assert_eq!(rig.provider_pending().await, 0, "{mode:?}");
    }
}

#[tokio::test]
async fn a_repeated_request_ref_is_answered_from_the_record_and_reaches_the_provider_once() {
    for mode in MODES {
        let rig = Rig::start(mode).await;
        let app = rig.app(QUICK_APP);
        let body = app.transact_body("r-1", "t-1", "transfer_funds", "0123456789", 10_000);
        let first = app.post("/transact", &body).await;
        assert_eq!(first.status(), "Successful", "{}", first.raw);
        let second = app.post("/transact", &body).await;
        assert_eq!((second.http, &second.raw), (first.http, &first.raw));
        // A retry re-seals `secure` with a fresh nonce: still the same request.
        let resealed = app.transact_body("r-1", "t-1", "transfer_funds", "0123456789", 10_000);
        assert_ne!(resealed["auth"]["secure"], body["auth"]["secure"]);
        assert_eq!(app.post("/transact", &resealed).await.raw, first.raw);
        assert_eq!(rig.provider_transact_calls().await, 1, "{mode:?}");
        // The money moved once.
        assert_eq!(rig.balance("0123456789", "1").await, 2_077_099 - 10_000);

        let mut changed = body.clone();
        changed["transaction"]["amount"] = Value::from(20_000);
        let conflict = app.post("/transact", &changed).await;
        assert_eq!(
            (conflict.http, conflict.status(), conflict.error()),
            (409, "Failed", "request_ref_conflict")
        );
        assert_eq!(conflict.error_fields(), ["request_ref"]);

        // A new request_ref cannot reuse the transaction_ref either.
        let reused = app.transfer("r-2", "t-1", "0123456789", 10_000).await;
        assert_eq!(
            (reused.http, reused.error()),
            (409, "duplicate_transaction_ref")
        );
        assert_eq!(rig.balance("0123456789", "2").await, 2_077_099 - 10_000);
    }
}

#[tokio::test]
async fn an_app_never_sees_another_apps_transactions() {
    let rig = Rig::start(crate::rig::Mode::InProcess).await;
    let owner = rig.app(OTP_APP);
    let other = rig.app(QUICK_APP);
    assert_eq!(
        owner
            .get_balance("r-1", "shared-ref", "0123456789")
            .await
            .status(),
        "WaitingForOTP"
    );
    let code = latest_otp(&rig.outbox, "2348022000008");

    let query = other.query("q-1", "shared-ref").await;
    assert_eq!(
        (query.http, query.status(), query.error()),
        (404, "Failed", "transaction_not_found")
    );
    let validate = other
        .validate("v-1", "shared-ref", "get_balance", &code)
        .await;
    assert_eq!(
        (validate.http, validate.error()),
        (404, "transaction_not_found")
    );
    let reverse = other.reverse("rv-1", "shared-ref").await;
    assert_eq!(
        (reverse.http, reverse.error()),
        (404, "transaction_not_found")
    );
    // The same transaction_ref is free for the other app, and stays separate.
    assert_eq!(
        other
            .get_balance("r-1", "shared-ref", "0123456789")
            .await
            .status(),
        "Successful"
    );
    assert_eq!(
        owner.query("q-2", "shared-ref").await.status(),
        "WaitingForOTP"
    );
}

#[tokio::test]
async fn a_successful_transfer_can_be_reversed_once() {
    for mode in MODES {
        let rig = Rig::start(mode).await;
        let app = rig.app(OTP_APP);
        assert_eq!(
            app.transfer("r-1", "t-1", "0123456789", 250_000)
                .await
                .status(),
            "WaitingForOTP"
        );
        // Not yet successful: nothing to reverse, and nothing changes.
        let early = app.reverse("rv-0", "t-1").await;
        assert_eq!(
            (early.http, early.status(), early.error()),
            (409, "Failed", "not_reversible")
        );
        assert_eq!(app.query("q-0", "t-1").await.status(), "WaitingForOTP");

        let code = latest_otp(&rig.outbox, "2348022000008");
        let done = app.validate("v-1", "t-1", "transfer_funds", &code).await;
        assert_eq!(done.status(), "Successful", "{}", done.raw);
        assert_eq!(rig.balance("0123456789", "a").await, 2_077_099 - 250_000);

        let reversed = app.reverse("rv-1", "t-1").await;
        assert_eq!(
            (reversed.http, reversed.status()),
            (200, "Successful"),
            "{}",
            reversed.raw
        );
        assert_eq!(rig.balance("0123456789", "b").await, 2_077_099);
        // The repeat is the stored answer; a new attempt is refused.
        assert_eq!(app.reverse("rv-1", "t-1").await.raw, reversed.raw);
        let again = app.reverse("rv-2", "t-1").await;
        assert_eq!((again.http, again.error()), (409, "not_reversible"));
        assert_eq!(rig.balance("0123456789", "c").await, 2_077_099);

        let query = app.query("q-1", "t-1").await;
        assert_eq!(query.status(), "Successful");
        assert_eq!(
            query.body["data"]["transaction"]["reversal"]["status"],
            "Successful"
        );

        // get_balance is not reversible at this provider.
        let quick = rig.app(QUICK_APP);
        quick.get_balance("r-9", "t-9", "0123456789").await;
        let refused = quick.reverse("rv-9", "t-9").await;
        assert_eq!((refused.http, refused.error()), (409, "not_reversible"));
        assert!(
            refused.message().contains("does not reverse `get_balance`"),
            "{}",
            refused.message()
        );
    }
}

#[tokio::test]
async fn inspect_mode_answers_a_marked_sample_without_touching_the_provider() {
    for mode in MODES {
        let rig = Rig::start(mode).await;
        let app = rig.app(QUICK_APP);
        let mut body = app.transact_body("r-1", "t-1", "get_balance", "0123456789", 0);
        body["transaction"]["mock_mode"] = Value::from("inspect");
        let reply = app.post("/transact", &body).await;
        assert_eq!(reply.status(), "Successful", "{}", reply.raw);
        assert_eq!(reply.body["data"]["mock_mode"], "inspect");
        assert!(reply.message().starts_with("Inspect mode"));
        assert!(reply.body["data"]["provider_response"]["avialable_balance"].is_number());
        assert_eq!(rig.provider_transact_calls().await, 0);
        assert_eq!(
            app.query("q-1", "t-1").await.error(),
            "transaction_not_found"
        );

        let otp_app = rig.app(OTP_APP);
        let mut body = otp_app.transact_body("r-2", "t-2", "get_balance", "0123456789", 0);
        body["transaction"]["mock_mode"] = Value::from("inspect");
        let reply = otp_app.post("/transact", &body).await;
        assert_eq!(
            (reply.status(), reply.body["data"]["mock_mode"].as_str()),
            ("WaitingForOTP", Some("inspect"))
        );
        assert_eq!(outbox_len(&rig.outbox), 0);
    }
}

#[tokio::test]
async fn every_authenticated_call_is_metered() {
    let rig = Rig::start(crate::rig::Mode::InProcess).await;
    let app = rig.app(QUICK_APP);
    app.get_balance("r-1", "t-1", "0123456789").await;
    app.query("q-1", "t-1").await;
    app.query("q-2", "missing").await;
    // Not proven to be the app's, so not billed to it: an unsigned call and
    // one whose signature is for another body.
    let body = app.transact_body("r-2", "t-2", "get_balance", "0123456789", 0);
    let bearer = ("authorization", format!("Bearer {}", QUICK_APP.1));
    let unsigned = app
        .post_raw("/transact", body.to_string().into_bytes(), &[bearer])
        .await;
    assert_eq!(unsigned.error(), "signature_required");
    let forged = app.auth_headers("/transact", b"{}");
    let refused = app
        .post_raw("/transact", body.to_string().into_bytes(), &forged)
        .await;
    assert_eq!(refused.error(), "bad_signature");
    let calls = manifold_switch::store::Store::metered_calls(
        rig.switch.store.as_ref(),
        "quick",
        0,
        u64::MAX,
    )
    .await
    .unwrap();
    let summary: Vec<(String, Option<String>, u16)> = calls
        .iter()
        .map(|c| {
            (
                format!("{:?}", c.operation),
                c.provider.clone(),
                c.http_status,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("Transact".into(), Some("demo".into()), 200),
            ("Query".into(), Some("demo".into()), 200),
            // Refused before any transaction was found: metered under the
            // provider the body named, as the app's invoice groups it.
            ("Query".into(), Some("demo".into()), 404),
        ]
    );
    assert_eq!(calls[0].request_type.as_deref(), Some("get_balance"));
    assert_eq!(calls[2].error.as_deref(), Some("transaction_not_found"));
    // What billing needs: the transaction and its amount where one was
    // reached, a price on every call, and the enquiry completed once.
    assert_eq!(calls[0].transaction_ref, calls[1].transaction_ref);
    assert!(calls[0].transaction_ref.is_some() && calls[2].transaction_ref.is_none());
    assert_eq!((calls[0].completed, calls[1].completed), (true, false));
    assert!(calls.iter().all(|c| c.price.is_some() && !c.repeat));
}
