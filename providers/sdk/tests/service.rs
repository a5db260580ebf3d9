//! [`ProviderService`](manifold_provider_sdk::ProviderService) driven
//! directly, without HTTP: everything seed 003 and issue 4 ask of a provider
//! around its upstream calls — `otp_override`, delivering and checking OTPs,
//! prompts, codes the upstream sends, pending upstream work, expiry, resends,
//! idempotency, reversal, restarts and secrecy — against a scripted
//! connector, a recording notifier and a manual clock (`support`).
//!
//! Time moves only when a test moves the manual clock; expiry is checked by
//! calling `sweep_expired` (or, once, by the real `Sweeper` on tokio's paused
//! clock), never by sleeping.

mod support;

use std::time::Duration;

use manifold_crypto::{SourceDetails, ValidationInput};
use manifold_provider::notify::Channel;
use manifold_provider::{Provider, ProviderError, ProviderReply, Status};
use manifold_provider_sdk::codes;
use manifold_provider_sdk::state::Awaiting;
use manifold_provider_sdk::{Contact, Outcome, Sweeper};
use serde_json::{json, Value};

use support::*;

/// The default lifetime of a code or a prompt.
const TTL: Duration = Duration::from_secs(300);
/// The default shortest time between two sends.
const RESEND_INTERVAL: Duration = Duration::from_secs(30);
const MS: Duration = Duration::from_millis(1);

fn status_and_code(reply: &ProviderReply) -> (Status, &str) {
    (reply.status, reply.provider_response_code.as_str())
}

/// A rig whose upstream asks for an OTP to confirm `deferred`.
fn otp_rig(deferred: Value) -> Rig {
    Rig::new(ScriptedConnector::new().on_start(confirm_with_otp(deferred)))
}

#[tokio::test]
async fn otp_override_decides_per_call_whether_an_otp_is_sent() {
    struct Case {
        name: &'static str,
        start: Reply,
        otp_override: bool,
        answer: (Status, &'static str),
        response: Option<Value>,
        calls: Calls,
        notifications: usize,
        pending: usize,
    }
    let snapshot = json!({ "balance": 2_077_099 });
    let started = Calls {
        start: 1,
        ..Calls::default()
    };
    let cases = [
        Case {
            name: "override: the upstream answer at once",
            start: confirm_with_otp(snapshot.clone()),
            otp_override: true,
            answer: (Status::Successful, "00"),
            response: Some(snapshot.clone()),
            calls: Calls {
                start: 1,
                complete: 1,
                ..Calls::default()
            },
            notifications: 0,
            pending: 0,
        },
        Case {
            name: "no override: an OTP is sent",
            start: confirm_with_otp(snapshot.clone()),
            otp_override: false,
            answer: (Status::WaitingForOtp, codes::OTP_SENT),
            response: None,
            calls: started,
            notifications: 1,
            pending: 1,
        },
        Case {
            name: "a final answer needs no OTP",
            start: done(approved()),
            otp_override: false,
            answer: (Status::Successful, "00"),
            response: None,
            calls: started,
            notifications: 0,
            pending: 0,
        },
        Case {
            name: "a decline needs no OTP",
            start: done(Outcome::failed("51", "Insufficient funds")),
            otp_override: false,
            answer: (Status::Failed, "51"),
            response: None,
            calls: started,
            notifications: 0,
            pending: 0,
        },
        Case {
            name: "override waives OTPs, not the upstream's questions",
            start: ask("Enter the destination account in full", "0987654321"),
            otp_override: true,
            answer: (Status::PendingValidation, ""),
            response: None,
            calls: started,
            notifications: 0,
            pending: 1,
        },
        Case {
            name: "override cannot answer a code only the upstream knows",
            start: upstream_otp("Enter the code your bank sent", "246810"),
            otp_override: true,
            answer: (Status::WaitingForOtp, codes::OTP_SENT),
            response: None,
            calls: started,
            notifications: 0,
            pending: 1,
        },
    ];
    for case in cases {
        let rig = Rig::new(ScriptedConnector::new().on_start(case.start));
        let mut request = transfer("tx-1");
        request.otp_override = case.otp_override;
        let reply = rig.transact(request).await;
        assert_eq!(status_and_code(&reply), case.answer, "{}", case.name);
        assert_eq!(reply.provider_response, case.response, "{}", case.name);
        assert_eq!(rig.connector.calls(), case.calls, "{}", case.name);
        assert_eq!(rig.notifier.attempts(), case.notifications, "{}", case.name);
        assert_eq!(
            rig.service.pending_count().await.unwrap(),
            case.pending,
            "{}",
            case.name
        );
        assert_eq!(rig.pending_raw().len(), case.pending, "{}", case.name);
        if case.calls.complete > 0 {
            let seen: Vec<Seen> = rig
                .connector
                .completions()
                .into_iter()
                .map(|c| c.0)
                .collect();
            assert_eq!(seen, vec![Seen::OtpVerified], "{}", case.name);
        }
    }
}

#[tokio::test]
async fn the_otp_goes_where_the_source_says_and_the_reply_shows_it_masked() {
    struct Case {
        name: &'static str,
        source: SourceDetails,
        mobile_no: Option<&'static str>,
        email: Option<&'static str>,
        /// Channel, destination and how the reply shows it; `None`: nowhere to send.
        expect: Option<(Channel, &'static str, &'static str)>,
    }
    let own_number = Some((Channel::Sms, "2348031234567", "2348031****67"));
    let mobile = Some((Channel::Sms, MOBILE, MOBILE_SHOWN));
    let email = Some((Channel::Email, EMAIL, EMAIL_SHOWN));
    let cases = [
        Case {
            name: "msisdn source: its own number, not the customer's",
            source: msisdn_source("2348031234567"),
            mobile_no: Some(MOBILE),
            email: Some(EMAIL),
            expect: own_number,
        },
        Case {
            name: "msisdn source without customer details",
            source: msisdn_source("2348031234567"),
            mobile_no: None,
            email: None,
            expect: own_number,
        },
        Case {
            name: "bank source: the customer's mobile_no before e-mail",
            source: bank_source(),
            mobile_no: Some(MOBILE),
            email: Some(EMAIL),
            expect: mobile,
        },
        Case {
            name: "bank source without mobile_no: e-mail",
            source: bank_source(),
            mobile_no: None,
            email: Some(EMAIL),
            expect: email,
        },
        Case {
            name: "a blank mobile_no counts as none",
            source: bank_source(),
            mobile_no: Some("  "),
            email: Some(EMAIL),
            expect: email,
        },
        Case {
            name: "wallet source: the customer's mobile_no",
            source: wallet_source(),
            mobile_no: Some(MOBILE),
            email: None,
            expect: mobile,
        },
        Case {
            name: "card source: the customer's e-mail",
            source: card_source(),
            mobile_no: None,
            email: Some(EMAIL),
            expect: email,
        },
        Case {
            name: "nowhere to send",
            source: bank_source(),
            mobile_no: None,
            email: None,
            expect: None,
        },
        Case {
            name: "only blanks to send to",
            source: bank_source(),
            mobile_no: Some(""),
            email: Some(" "),
            expect: None,
        },
    ];
    for case in cases {
        let rig = otp_rig(json!({ "posting": 1 }));
        let mut request = transfer("tx-1");
        request.source = case.source;
        request.transaction.customer.mobile_no = case.mobile_no.map(String::from);
        request.transaction.customer.email = case.email.map(String::from);
        let reply = rig.transact(request).await;
        let Some((channel, to, shown)) = case.expect else {
            assert_eq!(
                status_and_code(&reply),
                (Status::Failed, codes::UNDELIVERABLE),
                "{}",
                case.name
            );
            assert_eq!(rig.notifier.attempts(), 0, "{}", case.name);
            assert_eq!(
                rig.service.pending_count().await.unwrap(),
                0,
                "{}",
                case.name
            );
            continue;
        };
        assert_eq!(
            status_and_code(&reply),
            (Status::WaitingForOtp, codes::OTP_SENT),
            "{}",
            case.name
        );
        assert_eq!(
            reply.message,
            format!("Please enter the OTP sent to {shown}"),
            "{}",
            case.name
        );
        let sent = rig.notifier.sent();
        assert_eq!(sent.len(), 1, "{}", case.name);
        assert_eq!(
            (sent[0].channel, sent[0].to.as_str()),
            (channel, to),
            "{}",
            case.name
        );
        let code = code_in(&sent[0], 6);
        assert!(code.bytes().all(|b| b.is_ascii_digit()), "{}", case.name);
        assert!(!shows_code(&reply.message, &code), "{}", case.name);
        assert_eq!(
            rig.service.pending_count().await.unwrap(),
            1,
            "{}",
            case.name
        );
        assert_eq!(
            rig.connector.calls(),
            Calls {
                start: 1,
                ..Calls::default()
            },
            "{}",
            case.name
        );
    }
}

#[tokio::test]
async fn the_right_code_completes_from_the_stored_answer_and_erases_it() {
    let deferred = json!({ "posting": { "amount": 150_000, "to": "0987654321" } });
    let rig = otp_rig(deferred.clone());
    let waiting = rig.transact(transfer("tx-1")).await;
    assert_eq!(waiting.status, Status::WaitingForOtp);
    assert_eq!(rig.service.pending_count().await.unwrap(), 1);
    let code = rig.last_code();

    let reply = rig.validate("tx-1", otp(&code)).await;
    assert_eq!(status_and_code(&reply), (Status::Successful, "00"));
    assert_eq!(reply.provider_response, Some(deferred.clone()));
    assert_eq!(
        rig.connector.completions(),
        vec![(Seen::OtpVerified, deferred)]
    );
    assert_eq!(rig.service.pending_count().await.unwrap(), 0);
    assert!(rig.pending_raw().is_empty());

    // Repeats answer the final outcome from the store, never the upstream.
    assert_eq!(rig.validate("tx-1", otp(&code)).await, reply);
    assert_eq!(rig.query("tx-1").await, reply);
    assert_eq!(rig.transact(transfer("tx-1")).await, reply);
    assert_eq!(
        rig.connector.calls(),
        Calls {
            start: 1,
            complete: 1,
            ..Calls::default()
        }
    );
    assert_eq!(rig.notifier.attempts(), 1);
}

#[tokio::test]
async fn wrong_codes_spend_attempts_until_the_transaction_fails() {
    enum Say {
        Right,
        Wrong,
    }
    use Say::{Right, Wrong};
    /// The status, the response code and a phrase the message must contain.
    type Expected = (Status, &'static str, Option<&'static str>);
    type Conversation = Vec<(Say, Expected)>;
    let left = |n: &'static str| (Status::WaitingForOtp, codes::WRONG_OTP, Some(n));
    let exhausted = (Status::Failed, codes::OTP_ATTEMPTS_EXHAUSTED, None);
    let cases: [(&str, Conversation, usize); 3] = [
        (
            "two wrong, then right",
            vec![
                (Wrong, left("2 attempts left")),
                (Wrong, left("1 attempt left")),
                (Right, (Status::Successful, "00", None)),
            ],
            1,
        ),
        (
            "three wrong",
            vec![
                (Wrong, left("2 attempts left")),
                (Wrong, left("1 attempt left")),
                (Wrong, exhausted),
            ],
            0,
        ),
        (
            "the right code after the attempts ran out",
            vec![
                (Wrong, left("2 attempts left")),
                (Wrong, left("1 attempt left")),
                (Wrong, exhausted),
                (Right, exhausted),
                (Wrong, exhausted),
            ],
            0,
        ),
    ];
    for (name, steps, completes) in cases {
        let rig = otp_rig(json!({ "posting": 1 }));
        rig.transact(transfer("tx-1")).await;
        let code = rig.last_code();
        for (i, (say, (status, response_code, phrase))) in steps.into_iter().enumerate() {
            let given = match say {
                Right => code.clone(),
                Wrong => wrong(&code),
            };
            let reply = rig.validate("tx-1", otp(&given)).await;
            assert_eq!(
                status_and_code(&reply),
                (status, response_code),
                "{name}, step {i}"
            );
            if let Some(phrase) = phrase {
                assert!(
                    reply.message.contains(phrase),
                    "{name}, step {i}: {}",
                    reply.message
                );
                assert!(reply.message.contains(MOBILE_SHOWN), "{name}, step {i}");
            }
            assert!(!shows_code(&reply.message, &code), "{name}, step {i}");
        }
        assert_eq!(rig.connector.calls().complete, completes, "{name}");
        assert_eq!(rig.service.pending_count().await.unwrap(), 0, "{name}");
        assert_eq!(rig.notifier.attempts(), 1, "{name}");
    }
}

#[tokio::test]
async fn an_answer_where_an_otp_is_needed_spends_no_attempt() {
    let rig = otp_rig(json!({ "posting": 1 }));
    rig.transact(transfer("tx-1")).await;
    let reply = rig.validate("tx-1", answer("blue")).await;
    assert_eq!(
        status_and_code(&reply),
        (Status::WaitingForOtp, codes::WRONG_INPUT)
    );
    assert!(reply.message.contains(MOBILE_SHOWN));
    let entry = rig.pending_entry("tx-1").expect("still waiting");
    assert!(
        matches!(
            entry.awaiting,
            Awaiting::Otp {
                attempts_left: 3,
                ..
            }
        ),
        "{:?}",
        entry.awaiting
    );
    assert_eq!(rig.connector.calls().complete, 0);
}

#[tokio::test]
async fn an_expired_code_fails_the_transaction_however_it_is_noticed() {
    #[derive(Debug, Clone, Copy)]
    enum Noticed {
        Sweep,
        Validate,
        Query,
        RepeatedTransact,
    }
    for noticed in [
        Noticed::Sweep,
        Noticed::Validate,
        Noticed::Query,
        Noticed::RepeatedTransact,
    ] {
        let rig = otp_rig(json!({ "posting": 1 }));
        rig.transact(transfer("tx-1")).await;
        let code = rig.last_code();
        rig.advance(TTL);
        let reply = match noticed {
            Noticed::Sweep => {
                assert_eq!(rig.service.sweep_expired().await.unwrap(), 1);
                // Erased by the sweep itself, before anyone asks.
                assert!(rig.pending_raw().is_empty(), "{noticed:?}");
                rig.query("tx-1").await
            }
            Noticed::Validate => rig.validate("tx-1", otp(&code)).await,
            Noticed::Query => rig.query("tx-1").await,
            Noticed::RepeatedTransact => rig.transact(transfer("tx-1")).await,
        };
        assert_eq!(
            status_and_code(&reply),
            (Status::Failed, codes::OTP_EXPIRED),
            "{noticed:?}"
        );
        assert!(rig.pending_raw().is_empty(), "{noticed:?}");
        // Final: the right code, another sweep or a query change nothing.
        assert_eq!(rig.validate("tx-1", otp(&code)).await, reply, "{noticed:?}");
        assert_eq!(rig.service.sweep_expired().await.unwrap(), 0, "{noticed:?}");
        assert_eq!(rig.query("tx-1").await, reply, "{noticed:?}");
        assert_eq!(rig.connector.calls().complete, 0, "{noticed:?}");
    }
}

#[tokio::test]
async fn a_code_works_until_its_last_millisecond() {
    let rig = otp_rig(json!({ "posting": 1 }));
    rig.transact(transfer("tx-1")).await;
    rig.advance(TTL - MS);
    assert_eq!(rig.service.sweep_expired().await.unwrap(), 0);
    let reply = rig.validate("tx-1", otp(&rig.last_code())).await;
    assert_eq!(reply.status, Status::Successful);
}

#[tokio::test]
async fn lifetimes_are_configurable_and_bound_prompts_and_upstream_codes_too() {
    let cases = [
        (
            "an SDK code with a one-minute lifetime",
            confirm_with_otp(json!({ "posting": 1 })),
            Duration::from_secs(60),
            codes::OTP_EXPIRED,
        ),
        (
            "a prompt",
            ask("Enter the destination account in full", "0987654321"),
            TTL,
            codes::ANSWER_EXPIRED,
        ),
        (
            "a code the upstream sent",
            upstream_otp("Enter the code your bank sent", "246810"),
            TTL,
            codes::OTP_EXPIRED,
        ),
    ];
    for (name, start, ttl, expired) in cases {
        let mut settings = settings();
        settings.otp.ttl = ttl;
        let rig = Rig::with_settings(ScriptedConnector::new().on_start(start), settings);
        rig.transact(transfer("tx-1")).await;
        rig.advance(ttl - MS);
        assert_eq!(rig.service.sweep_expired().await.unwrap(), 0, "{name}");
        rig.advance(MS);
        assert_eq!(rig.service.sweep_expired().await.unwrap(), 1, "{name}");
        assert_eq!(rig.service.pending_count().await.unwrap(), 0, "{name}");
        let reply = rig.query("tx-1").await;
        assert_eq!(status_and_code(&reply), (Status::Failed, expired), "{name}");
        assert_eq!(rig.connector.calls().complete, 0, "{name}");
    }
}

#[tokio::test]
async fn expiry_survives_a_restart() {
    let rig = otp_rig(json!({ "posting": 1 }));
    rig.transact(transfer("tx-1")).await;
    let rig = rig.restart();
    rig.advance(TTL);
    assert_eq!(rig.service.sweep_expired().await.unwrap(), 1);
    let reply = rig.query("tx-1").await;
    assert_eq!(
        status_and_code(&reply),
        (Status::Failed, codes::OTP_EXPIRED)
    );
}

#[tokio::test]
async fn the_background_sweeper_ends_conversations_nobody_finishes() {
    // Only the sweep's schedule runs on tokio's clock, paused here so that
    // waiting for a tick takes no real time; the codes' expiry runs on the
    // manual clock.
    tokio::time::pause();
    let mut settings = settings();
    settings.sweep_interval = Duration::from_secs(5);
    let every = settings.sweep_interval;
    let rig = Rig::with_settings(
        ScriptedConnector::new().on_start(confirm_with_otp(json!({ "posting": 1 }))),
        settings,
    );
    rig.transact(transfer("tx-1")).await;
    let sweeper = Sweeper::start(rig.service.clone());

    // Sweeps before the deadline leave the conversation alone.
    tokio::time::sleep(every * 3).await;
    assert_eq!(rig.service.pending_count().await.unwrap(), 1);

    rig.advance(TTL);
    let mut ticks = 0;
    while rig.service.pending_count().await.unwrap() > 0 && ticks < 100 {
        tokio::time::sleep(every).await;
        ticks += 1;
    }
    assert_eq!(
        rig.service.pending_count().await.unwrap(),
        0,
        "the sweeper erased the expired entry"
    );
    drop(sweeper);
    let reply = rig.query("tx-1").await;
    assert_eq!(
        status_and_code(&reply),
        (Status::Failed, codes::OTP_EXPIRED)
    );
    assert_eq!(rig.connector.calls().complete, 0);
}

#[tokio::test]
async fn a_resend_is_rate_limited_and_replaces_the_code() {
    let mut settings = settings();
    // Ten digits, so that the new code cannot plausibly equal the old one.
    settings.otp.digits = 10;
    let rig = Rig::with_settings(
        ScriptedConnector::new().on_start(confirm_with_otp(json!({ "posting": 1 }))),
        settings,
    );
    rig.transact(transfer("tx-1")).await;
    let first = rig.last_code();

    for wait in [Duration::ZERO, RESEND_INTERVAL - MS] {
        rig.advance(wait);
        let early = rig.validate("tx-1", ValidationInput::Resend).await;
        assert_eq!(
            status_and_code(&early),
            (Status::WaitingForOtp, codes::RESEND_REFUSED)
        );
        assert!(early.message.contains(MOBILE_SHOWN), "{}", early.message);
        assert_eq!(rig.notifier.attempts(), 1, "a refused resend sends nothing");
    }

    rig.advance(MS);
    let resent = rig.validate("tx-1", ValidationInput::Resend).await;
    assert_eq!(
        status_and_code(&resent),
        (Status::WaitingForOtp, codes::OTP_SENT)
    );
    assert!(resent.message.contains(MOBILE_SHOWN), "{}", resent.message);
    let sent = rig.notifier.sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        (sent[1].channel, sent[1].to.as_str()),
        (Channel::Sms, MOBILE)
    );
    let second = rig.last_code();
    assert_ne!(first, second);

    // The new code has a full lifetime from its own send.
    rig.advance(TTL - RESEND_INTERVAL);
    assert_eq!(rig.service.sweep_expired().await.unwrap(), 0);

    let old = rig.validate("tx-1", otp(&first)).await;
    assert_eq!(
        status_and_code(&old),
        (Status::WaitingForOtp, codes::WRONG_OTP)
    );
    let new = rig.validate("tx-1", otp(&second)).await;
    assert_eq!(status_and_code(&new), (Status::Successful, "00"));
    assert_eq!(rig.connector.calls().complete, 1);
    assert_eq!(rig.service.pending_count().await.unwrap(), 0);
}

#[tokio::test]
async fn resends_stop_at_the_maximum_and_spend_no_attempt() {
    let rig = otp_rig(json!({ "posting": 1 }));
    rig.transact(transfer("tx-1")).await;
    let max_sends = usize::from(rig.settings.otp.max_sends);
    for _ in 1..max_sends {
        rig.advance(RESEND_INTERVAL);
        let resent = rig.validate("tx-1", ValidationInput::Resend).await;
        assert_eq!(resent.provider_response_code, codes::OTP_SENT);
    }
    assert_eq!(rig.notifier.sent().len(), max_sends);

    rig.advance(RESEND_INTERVAL);
    let refused = rig.validate("tx-1", ValidationInput::Resend).await;
    assert_eq!(
        status_and_code(&refused),
        (Status::WaitingForOtp, codes::RESEND_REFUSED)
    );
    assert_eq!(rig.notifier.attempts(), max_sends);

    let entry = rig.pending_entry("tx-1").expect("still waiting");
    assert!(
        matches!(entry.awaiting, Awaiting::Otp { attempts_left: 3, sends, .. } if usize::from(sends) == max_sends),
        "{:?}",
        entry.awaiting
    );
    let reply = rig.validate("tx-1", otp(&rig.last_code())).await;
    assert_eq!(reply.status, Status::Successful);
}

#[tokio::test]
async fn a_failed_delivery_fails_the_transaction_and_leaves_nothing_pending() {
    let rig = otp_rig(json!({ "posting": 1 }));
    rig.notifier.fail(true);
    let reply = rig.transact(transfer("tx-1")).await;
    assert_eq!(
        status_and_code(&reply),
        (Status::Failed, codes::UNDELIVERABLE)
    );
    assert!(reply.message.contains(MOBILE_SHOWN), "{}", reply.message);
    assert!(!reply.message.contains(MOBILE), "{}", reply.message);
    assert_eq!(rig.notifier.attempts(), 1);
    assert_eq!(rig.service.pending_count().await.unwrap(), 0);

    // Final: a repeat answers it without trying again.
    rig.notifier.fail(false);
    assert_eq!(rig.transact(transfer("tx-1")).await, reply);
    assert_eq!(rig.notifier.attempts(), 1);
    assert_eq!(
        rig.connector.calls(),
        Calls {
            start: 1,
            ..Calls::default()
        }
    );
}

#[tokio::test]
async fn a_failed_resend_fails_the_transaction() {
    let rig = otp_rig(json!({ "posting": 1 }));
    rig.transact(transfer("tx-1")).await;
    let code = rig.last_code();
    rig.notifier.fail(true);
    rig.advance(RESEND_INTERVAL);
    let reply = rig.validate("tx-1", ValidationInput::Resend).await;
    assert_eq!(
        status_and_code(&reply),
        (Status::Failed, codes::UNDELIVERABLE)
    );
    assert_eq!(rig.service.pending_count().await.unwrap(), 0);
    assert_eq!(rig.validate("tx-1", otp(&code)).await, reply);
    assert_eq!(rig.connector.calls().complete, 0);
}

const PROMPT: &str = "Enter the destination account number (ending 4321) in full";
const ACCOUNT: &str = "0987654321";

#[tokio::test]
async fn a_prompt_is_answered_through_validate() {
    let cases = [
        (
            "the answer field, then done",
            answer(ACCOUNT),
            None,
            (Status::Successful, "00"),
        ),
        (
            "the otp field carries an answer too",
            otp(ACCOUNT),
            None,
            (Status::Successful, "00"),
        ),
        (
            "the answer, then an OTP",
            answer(ACCOUNT),
            Some(confirm_with_otp(json!({ "posting": 1 }))),
            (Status::WaitingForOtp, codes::OTP_SENT),
        ),
    ];
    for (name, right, next, answered) in cases {
        let mut connector = ScriptedConnector::new().on_start(ask(PROMPT, ACCOUNT));
        if let Some(next) = next {
            connector = connector.on_accepted(next);
        }
        let rig = Rig::new(connector);

        let asked = rig.transact(transfer("tx-1")).await;
        assert_eq!(
            status_and_code(&asked),
            (Status::PendingValidation, ""),
            "{name}"
        );
        assert_eq!(asked.message, PROMPT, "{name}");
        assert_eq!(rig.notifier.attempts(), 0, "{name}");

        let refused = rig.validate("tx-1", answer("1111111111")).await;
        assert_eq!(
            status_and_code(&refused),
            (Status::PendingValidation, codes::WRONG_ANSWER),
            "{name}"
        );
        assert_eq!(refused.message, PROMPT, "{name}");
        let entry = rig.pending_entry("tx-1").expect("still asking");
        assert!(
            matches!(&entry.awaiting, Awaiting::Answer { attempts_left: 2, prompt } if prompt == PROMPT),
            "{name}: {:?}",
            entry.awaiting
        );

        // There is nothing to send again for a prompt; it spends no attempt.
        let resend = rig.validate("tx-1", ValidationInput::Resend).await;
        assert_eq!(
            status_and_code(&resend),
            (Status::PendingValidation, codes::RESEND_REFUSED),
            "{name}"
        );
        assert_eq!(rig.pending_entry("tx-1"), Some(entry), "{name}");

        let reply = rig.validate("tx-1", right).await;
        assert_eq!(status_and_code(&reply), answered, "{name}");
        let seen: Vec<Seen> = rig
            .connector
            .completions()
            .into_iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(
            seen,
            vec![
                Seen::Answer("1111111111".into()),
                Seen::Answer(ACCOUNT.into())
            ],
            "{name}"
        );
        if reply.status == Status::WaitingForOtp {
            // The next step is an OTP conversation of its own.
            assert_eq!(rig.notifier.sent().len(), 1, "{name}");
            let done = rig.validate("tx-1", otp(&rig.last_code())).await;
            assert_eq!(done.status, Status::Successful, "{name}");
        }
        assert_eq!(rig.service.pending_count().await.unwrap(), 0, "{name}");
    }
}

#[tokio::test]
async fn answers_that_are_not_accepted_run_out() {
    let rig = Rig::new(ScriptedConnector::new().on_start(ask(PROMPT, ACCOUNT)));
    rig.transact(transfer("tx-1")).await;
    let mut replies = Vec::new();
    for _ in 0..3 {
        replies.push(status_and_code(&rig.validate("tx-1", answer("1111111111")).await).0);
    }
    assert_eq!(
        replies,
        [
            Status::PendingValidation,
            Status::PendingValidation,
            Status::Failed
        ]
    );
    assert_eq!(rig.service.pending_count().await.unwrap(), 0);
    let after = rig.validate("tx-1", answer(ACCOUNT)).await;
    assert_eq!(
        status_and_code(&after),
        (Status::Failed, codes::ANSWER_ATTEMPTS_EXHAUSTED)
    );
    assert_eq!(rig.connector.calls().complete, 3);
}

const BANK_PROMPT: &str = "Enter the code your bank sent to 2348022****08";

#[tokio::test]
async fn a_code_the_upstream_sent_is_checked_by_the_upstream() {
    let rig = Rig::new(ScriptedConnector::new().on_start(upstream_otp(BANK_PROMPT, "246810")));
    let waiting = rig.transact(transfer("tx-1")).await;
    assert_eq!(
        status_and_code(&waiting),
        (Status::WaitingForOtp, codes::OTP_SENT)
    );
    assert_eq!(waiting.message, BANK_PROMPT);
    assert_eq!(rig.notifier.attempts(), 0, "the upstream sent the code");

    let refused = rig.validate("tx-1", otp("135790")).await;
    assert_eq!(
        status_and_code(&refused),
        (Status::WaitingForOtp, codes::WRONG_OTP)
    );
    assert_eq!(refused.message, BANK_PROMPT);
    let entry = rig.pending_entry("tx-1").expect("still waiting");
    assert!(
        matches!(
            entry.awaiting,
            Awaiting::UpstreamOtp {
                attempts_left: 2,
                ..
            }
        ),
        "{:?}",
        entry.awaiting
    );

    let resend = rig.validate("tx-1", ValidationInput::Resend).await;
    assert_eq!(
        status_and_code(&resend),
        (Status::WaitingForOtp, codes::RESEND_REFUSED)
    );
    assert_eq!(rig.notifier.attempts(), 0);

    // The answer field carries an upstream code as well.
    let reply = rig.validate("tx-1", answer("246810")).await;
    assert_eq!(status_and_code(&reply), (Status::Successful, "00"));
    let seen: Vec<Seen> = rig
        .connector
        .completions()
        .into_iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(
        seen,
        vec![
            Seen::UpstreamCode("135790".into()),
            Seen::UpstreamCode("246810".into())
        ]
    );
    assert_eq!(rig.service.pending_count().await.unwrap(), 0);
}

#[tokio::test]
async fn wrong_upstream_codes_run_out() {
    let rig = Rig::new(ScriptedConnector::new().on_start(upstream_otp(BANK_PROMPT, "246810")));
    rig.transact(transfer("tx-1")).await;
    let mut replies = Vec::new();
    for _ in 0..3 {
        let reply = rig.validate("tx-1", otp("135790")).await;
        replies.push((reply.status, reply.provider_response_code));
    }
    assert_eq!(
        replies,
        [
            (Status::WaitingForOtp, codes::WRONG_OTP.to_owned()),
            (Status::WaitingForOtp, codes::WRONG_OTP.to_owned()),
            (Status::Failed, codes::OTP_ATTEMPTS_EXHAUSTED.to_owned()),
        ]
    );
    assert_eq!(rig.service.pending_count().await.unwrap(), 0);
    let after = rig.validate("tx-1", otp("246810")).await;
    assert_eq!(after.status, Status::Failed);
    assert_eq!(rig.connector.calls().complete, 3);
}

#[tokio::test]
async fn upstream_processing_is_pending_until_a_query_finds_the_outcome() {
    let job = json!({ "job": 7 });
    let settled = json!({ "settled_at": "2027-01-01" });
    let rig = Rig::new(
        ScriptedConnector::new()
            .on_start(processing(job.clone()))
            .on_poll(processing(job.clone()))
            .on_poll(done(approved().with_response(settled.clone()))),
    );
    let reply = rig.transact(transfer("tx-1")).await;
    assert_eq!(status_and_code(&reply), (Status::Pending, ""));
    assert_eq!(rig.service.pending_count().await.unwrap(), 1);

    // A validate cannot hurry the upstream, and nobody waits on the customer:
    // a day later nothing has expired.
    let early = rig.validate("tx-1", otp("123456")).await;
    assert_eq!(early.status, Status::Pending);
    rig.advance(Duration::from_secs(86_400));
    assert_eq!(rig.service.sweep_expired().await.unwrap(), 0);

    assert_eq!(rig.query("tx-1").await.status, Status::Pending);
    let finished = rig.query("tx-1").await;
    assert_eq!(status_and_code(&finished), (Status::Successful, "00"));
    assert_eq!(finished.provider_response, Some(settled));
    assert_eq!(rig.connector.polled_with(), vec![job.clone(), job]);
    assert_eq!(rig.service.pending_count().await.unwrap(), 0);

    assert_eq!(rig.query("tx-1").await, finished);
    assert_eq!(rig.transact(transfer("tx-1")).await, finished);
    assert_eq!(
        rig.connector.calls(),
        Calls {
            start: 1,
            poll: 2,
            ..Calls::default()
        }
    );
}

#[tokio::test]
async fn an_unknown_outcome_at_start_is_pending_and_settled_by_polling() {
    for idempotent in [false, true] {
        let rig = Rig::new(
            ScriptedConnector::new()
                .idempotent(idempotent)
                .on_start(Reply::Indeterminate)
                .on_poll(Reply::Unavailable)
                .on_poll(done(approved())),
        );
        let reply = rig.transact(transfer("tx-1")).await;
        assert_eq!(reply.status, Status::Pending, "idempotent {idempotent}");
        let entry = rig.pending_entry("tx-1").expect("pending");
        assert_eq!(
            entry.awaiting,
            Awaiting::Processing,
            "idempotent {idempotent}"
        );
        assert_eq!(entry.deferred, Value::Null, "idempotent {idempotent}");

        // An upstream that cannot be asked does not change anything.
        assert_eq!(rig.query("tx-1").await.status, Status::Pending);
        assert_eq!(rig.service.pending_count().await.unwrap(), 1);
        let settled = rig.query("tx-1").await;
        assert_eq!(
            settled.status,
            Status::Successful,
            "idempotent {idempotent}"
        );
        assert_eq!(rig.connector.polled_with(), vec![Value::Null, Value::Null]);
        assert_eq!(rig.connector.calls().start, 1, "idempotent {idempotent}");
        assert_eq!(rig.service.pending_count().await.unwrap(), 0);
    }
}

#[tokio::test]
async fn a_pending_transaction_the_upstream_never_got_is_forgotten_or_started_afresh() {
    // A query learns it never happened: unknown, nothing left pending.
    let rig = Rig::new(
        ScriptedConnector::new()
            .on_start(Reply::Indeterminate)
            .on_poll(Reply::NotFound),
    );
    assert_eq!(rig.transact(transfer("tx-1")).await.status, Status::Pending);
    assert!(matches!(
        rig.try_query("tx-1").await,
        Err(ProviderError::UnknownTransaction)
    ));
    assert_eq!(rig.service.pending_count().await.unwrap(), 0);

    // A repeated transact learns the same, and may then start it again.
    let rig = Rig::new(
        ScriptedConnector::new()
            .on_start(Reply::Indeterminate)
            .on_poll(Reply::NotFound)
            .on_start(done(approved())),
    );
    assert_eq!(rig.transact(transfer("tx-1")).await.status, Status::Pending);
    let repeat = rig.transact(transfer("tx-1")).await;
    assert_eq!(repeat.status, Status::Successful);
    assert_eq!(rig.connector.calls().start, 2);
    assert_eq!(rig.connector.calls().poll, 1);
    assert_eq!(rig.service.pending_count().await.unwrap(), 0);
}

#[tokio::test]
async fn an_unavailable_upstream_leaves_no_trace() {
    for idempotent in [false, true] {
        let rig = Rig::new(
            ScriptedConnector::new()
                .idempotent(idempotent)
                .on_start(Reply::Unavailable),
        );
        let refused = rig.service.transact(transfer("tx-1")).await;
        assert!(
            matches!(refused, Err(ProviderError::Unreachable(_))),
            "idempotent {idempotent}: {refused:?}"
        );
        assert!(rig.pending_raw().is_empty(), "idempotent {idempotent}");
        let query = rig.try_query("tx-1").await;
        assert!(
            matches!(query, Err(ProviderError::UnknownTransaction)),
            "idempotent {idempotent}: {query:?}"
        );
        // Nothing happened, so the transaction may start afresh.
        let reply = rig.transact(transfer("tx-1")).await;
        assert_eq!(reply.status, Status::Successful, "idempotent {idempotent}");
        assert_eq!(rig.connector.calls().start, 2, "idempotent {idempotent}");
    }
}

#[tokio::test]
async fn a_start_cut_off_by_a_crash_is_polled_not_repeated_unless_the_upstream_deduplicates() {
    for idempotent in [false, true] {
        let connector = ScriptedConnector::new()
            .idempotent(idempotent)
            .on_start(Reply::Hang)
            .on_poll(done(approved()));
        let rig = Rig::new(connector.clone());
        let service = rig.service.clone();
        let in_flight = tokio::spawn(async move { service.transact(transfer("tx-1")).await });
        connector.start_entered().await;

        let marker = rig.pending_entry("tx-1");
        if idempotent {
            assert_eq!(marker, None, "an idempotent upstream needs no marker");
        } else {
            assert_eq!(
                marker.map(|entry| entry.awaiting),
                Some(Awaiting::Starting),
                "the marker is stored before the upstream is called"
            );
        }

        // The process dies while the upstream call is out.
        in_flight.abort();
        assert!(in_flight.await.unwrap_err().is_cancelled());
        let rig = rig.restart();

        let reply = rig.transact(transfer("tx-1")).await;
        assert_eq!(reply.status, Status::Successful, "idempotent {idempotent}");
        let expected = if idempotent {
            // The upstream deduplicates by transaction: starting again is safe.
            Calls {
                start: 2,
                ..Calls::default()
            }
        } else {
            Calls {
                start: 1,
                poll: 1,
                ..Calls::default()
            }
        };
        assert_eq!(connector.calls(), expected, "idempotent {idempotent}");
        if !idempotent {
            assert_eq!(connector.polled_with(), vec![Value::Null]);
        }
        assert_eq!(
            rig.service.pending_count().await.unwrap(),
            0,
            "idempotent {idempotent}"
        );
    }
}

#[tokio::test]
async fn a_code_issued_before_a_restart_still_validates() {
    let rig = otp_rig(json!({ "posting": 1 }));
    rig.transact(transfer("tx-1")).await;
    let code = rig.last_code();
    let first_wrong = rig.validate("tx-1", otp(&wrong(&code))).await;
    assert!(first_wrong.message.contains("2 attempts left"));

    let rig = rig.restart();
    // The conversation continues where it stopped: no new code, attempts kept.
    let repeat = rig.transact(transfer("tx-1")).await;
    assert_eq!(
        status_and_code(&repeat),
        (Status::WaitingForOtp, codes::OTP_SENT)
    );
    assert_eq!(rig.notifier.attempts(), 1);
    let second_wrong = rig.validate("tx-1", otp(&wrong(&code))).await;
    assert!(
        second_wrong.message.contains("1 attempt left"),
        "{}",
        second_wrong.message
    );
    let reply = rig.validate("tx-1", otp(&code)).await;
    assert_eq!(status_and_code(&reply), (Status::Successful, "00"));

    // The final outcome survives the next restart too.
    let rig = rig.restart();
    assert_eq!(rig.query("tx-1").await, reply);
    assert_eq!(rig.transact(transfer("tx-1")).await, reply);
    assert_eq!(
        rig.connector.calls(),
        Calls {
            start: 1,
            complete: 1,
            ..Calls::default()
        }
    );
}

#[tokio::test]
async fn repeated_transacts_answer_the_current_state_without_starting_again() {
    let cases = [
        (
            "waiting for an OTP",
            confirm_with_otp(json!({ "posting": 1 })),
            Status::WaitingForOtp,
            0,
            1,
        ),
        (
            "asking a question",
            ask(PROMPT, ACCOUNT),
            Status::PendingValidation,
            0,
            0,
        ),
        (
            "waiting for the upstream's code",
            upstream_otp(BANK_PROMPT, "246810"),
            Status::WaitingForOtp,
            0,
            0,
        ),
        ("approved", done(approved()), Status::Successful, 0, 0),
        (
            "declined",
            done(Outcome::failed("51", "Insufficient funds")),
            Status::Failed,
            0,
            0,
        ),
        // A repeat of a transaction the upstream still works on asks it.
        (
            "processing",
            processing(json!({ "job": 7 })),
            Status::Pending,
            2,
            0,
        ),
    ];
    for (name, start, status, polls, notifications) in cases {
        let rig = Rig::new(ScriptedConnector::new().on_start(start));
        let first = rig.transact(transfer("tx-1")).await;
        assert_eq!(first.status, status, "{name}");
        for _ in 0..2 {
            assert_eq!(rig.transact(transfer("tx-1")).await, first, "{name}");
        }
        assert_eq!(
            rig.connector.calls(),
            Calls {
                start: 1,
                poll: polls,
                ..Calls::default()
            },
            "{name}"
        );
        assert_eq!(rig.notifier.attempts(), notifications, "{name}");
    }
}

#[tokio::test]
async fn two_apps_may_use_the_same_transaction_ref() {
    let mut settings = settings();
    // Ten digits, so that the two codes cannot plausibly be equal.
    settings.otp.digits = 10;
    let rig = Rig::with_settings(
        ScriptedConnector::new()
            .on_start(confirm_with_otp(json!({ "app": 1 })))
            .on_start(confirm_with_otp(json!({ "app": 2 }))),
        settings,
    );
    let mut other = transfer("tx-shared");
    other.app_id = "app-2".into();
    rig.transact(transfer("tx-shared")).await;
    let mine = rig.last_code();
    rig.service.transact(other).await.expect("transact answers");
    let theirs = rig.last_code();
    assert_eq!(rig.connector.calls().start, 2);
    assert_eq!(rig.service.pending_count().await.unwrap(), 2);

    // A code is bound to its own transaction.
    let crossed = rig.validate("tx-shared", otp(&theirs)).await;
    assert_eq!(crossed.provider_response_code, codes::WRONG_OTP);
    let reply = rig.validate("tx-shared", otp(&mine)).await;
    assert_eq!(reply.provider_response, Some(json!({ "app": 1 })));
    assert_eq!(rig.service.pending_count().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_validates_complete_the_transaction_once() {
    let rig = otp_rig(json!({ "posting": 1 }));
    rig.transact(transfer("tx-1")).await;
    let code = rig.last_code();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let service = rig.service.clone();
        let code = code.clone();
        tasks.push(tokio::spawn(async move {
            service
                .validate(manifold_provider::ValidateRequest {
                    app_id: APP.into(),
                    request_ref: "val-tx-1".into(),
                    request_type: "transfer_funds".into(),
                    transaction_ref: "tx-1".into(),
                    input: otp(&code),
                })
                .await
        }));
    }
    for task in tasks {
        let reply = task.await.unwrap().expect("validate answers");
        assert_eq!(reply.status, Status::Successful);
    }
    assert_eq!(rig.connector.calls().complete, 1);
}

#[tokio::test]
async fn an_unreachable_upstream_after_the_code_leaves_the_transaction_waiting() {
    let rig = Rig::new(
        ScriptedConnector::new()
            .on_start(confirm_with_otp(json!({ "posting": 1 })))
            .on_accepted(Reply::Unavailable),
    );
    rig.transact(transfer("tx-1")).await;
    let code = rig.last_code();
    let before = rig.pending_entry("tx-1");
    let refused = rig.try_validate("tx-1", otp(&code)).await;
    assert!(
        matches!(refused, Err(ProviderError::Unreachable(_))),
        "{refused:?}"
    );
    assert_eq!(
        rig.pending_entry("tx-1"),
        before,
        "nothing spent, nothing lost"
    );
    let reply = rig.validate("tx-1", otp(&code)).await;
    assert_eq!(reply.status, Status::Successful);
    assert_eq!(rig.connector.calls().complete, 2);
}

#[tokio::test]
async fn an_unknown_outcome_after_the_code_is_pending_and_polled() {
    let rig = Rig::new(
        ScriptedConnector::new()
            .on_start(confirm_with_otp(json!({ "posting": 1 })))
            .on_accepted(Reply::Indeterminate)
            .on_poll(done(approved())),
    );
    rig.transact(transfer("tx-1")).await;
    let reply = rig.validate("tx-1", otp(&rig.last_code())).await;
    assert_eq!(reply.status, Status::Pending);
    // The customer is done; only the upstream can end it now.
    rig.advance(TTL);
    assert_eq!(rig.service.sweep_expired().await.unwrap(), 0);
    let settled = rig.query("tx-1").await;
    assert_eq!(settled.status, Status::Successful);
    assert_eq!(
        rig.connector.calls(),
        Calls {
            start: 1,
            complete: 1,
            poll: 1,
            ..Calls::default()
        }
    );
    assert_eq!(rig.service.pending_count().await.unwrap(), 0);
}

#[tokio::test]
async fn a_request_type_the_connector_does_not_serve_fails_without_calling_it() {
    let rig = Rig::new(ScriptedConnector::new());
    let mut request = transfer("tx-1");
    request.request_type = "airtime".into();
    let reply = rig.transact(request.clone()).await;
    assert_eq!(
        status_and_code(&reply),
        (Status::Failed, codes::INVALID_TRANSACTION)
    );
    assert_eq!(rig.transact(request).await, reply);
    assert_eq!(rig.connector.calls(), Calls::default());
    assert_eq!(rig.service.pending_count().await.unwrap(), 0);
}

#[tokio::test]
async fn an_unknown_transaction_is_named_as_such() {
    let rig = Rig::new(ScriptedConnector::new());
    let validate = rig.try_validate("tx-none", otp("123456")).await;
    let query = rig.try_query("tx-none").await;
    let reverse = rig.try_reverse("tx-none", "rev-1").await;
    for answer in [validate, query, reverse] {
        assert!(
            matches!(answer, Err(ProviderError::UnknownTransaction)),
            "{answer:?}"
        );
    }
    assert_eq!(rig.connector.calls(), Calls::default());
}

#[tokio::test]
async fn a_transaction_is_reversed_once() {
    let undo = json!({ "posting": "p-1" });
    let rig =
        Rig::new(ScriptedConnector::new().on_start(done(approved().reversible_with(undo.clone()))));
    rig.transact(transfer("tx-1")).await;

    let reversed = rig.reverse("tx-1", "rev-1").await;
    assert_eq!(status_and_code(&reversed), (Status::Successful, "00"));
    assert_eq!(rig.connector.reversed_with(), vec![undo]);

    // The same request_ref is answered the same; another is refused.
    assert_eq!(rig.reverse("tx-1", "rev-1").await, reversed);
    let again = rig.reverse("tx-1", "rev-2").await;
    assert_eq!(
        status_and_code(&again),
        (Status::Failed, codes::NOT_REVERSIBLE)
    );

    let rig = rig.restart();
    assert_eq!(rig.reverse("tx-1", "rev-1").await, reversed);
    assert_eq!(rig.reverse("tx-1", "rev-2").await, again);
    assert_eq!(rig.connector.calls().reverse, 1);
    // The transaction itself stays as it was.
    assert_eq!(rig.query("tx-1").await.status, Status::Successful);
}

#[tokio::test]
async fn only_a_successful_reversible_transaction_reaches_the_connector() {
    let cases = [
        ("successful, not reversible", done(approved())),
        (
            "failed",
            done(Outcome::failed("51", "Insufficient funds").reversible_with(json!({ "p": 1 }))),
        ),
        (
            "waiting for an OTP",
            confirm_with_otp(json!({ "posting": 1 })),
        ),
        ("upstream processing", processing(json!({ "job": 7 }))),
    ];
    for (name, start) in cases {
        let rig = Rig::new(ScriptedConnector::new().on_start(start));
        rig.transact(transfer("tx-1")).await;
        let reply = rig.reverse("tx-1", "rev-1").await;
        assert_eq!(
            status_and_code(&reply),
            (Status::Failed, codes::NOT_REVERSIBLE),
            "{name}"
        );
        assert_eq!(rig.connector.calls().reverse, 0, "{name}");
    }
}

#[tokio::test]
async fn a_refused_reversal_is_not_recorded() {
    let rig = Rig::new(
        ScriptedConnector::new()
            .on_start(done(
                approved().reversible_with(json!({ "posting": "p-1" })),
            ))
            .on_reverse(Outcome::failed(
                codes::NOT_REVERSIBLE,
                "The destination no longer holds the funds",
            )),
    );
    rig.transact(transfer("tx-1")).await;
    let refused = rig.reverse("tx-1", "rev-1").await;
    assert_eq!(refused.status, Status::Failed);
    // The upstream may agree later; a new reversal request asks it again.
    let reversed = rig.reverse("tx-1", "rev-2").await;
    assert_eq!(reversed.status, Status::Successful);
    assert_eq!(rig.connector.calls().reverse, 2);
}

#[tokio::test]
async fn a_completion_cut_off_by_a_crash_is_finished_by_poll_with_what_complete_was_given() {
    for otp_override in [true, false] {
        let connector = ScriptedConnector::new()
            .on_start(confirm_with_otp(json!({"posting": "p-1"})))
            .on_accepted(Reply::Hang)
            .on_poll(done(approved()));
        let rig = Rig::new(connector.clone());
        let mut request = transfer("tx-1");
        request.otp_override = otp_override;
        let service = rig.service.clone();
        let in_flight = if otp_override {
            tokio::spawn(async move { service.transact(request).await })
        } else {
            assert_eq!(rig.transact(request).await.status, Status::WaitingForOtp);
            let code = rig.last_code();
            let call = manifold_provider::ValidateRequest {
                app_id: APP.into(),
                request_ref: "val-tx-1".into(),
                request_type: "transfer_funds".into(),
                transaction_ref: "tx-1".into(),
                input: ValidationInput::Otp(code.as_str().into()),
            };
            tokio::spawn(async move { service.validate(call).await })
        };
        // `complete` is running (it never returns) once the marker is stored.
        let mut marker = None;
        for _ in 0..500 {
            marker = rig.pending_entry("tx-1");
            if marker.as_ref().map(|entry| &entry.awaiting) == Some(&Awaiting::Processing) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let marker = marker.expect("a pending entry");
        assert_eq!(
            marker.awaiting,
            Awaiting::Processing,
            "override {otp_override}"
        );
        assert_eq!(marker.deferred, json!({"posting": "p-1"}));

        // The process dies inside `complete`.
        in_flight.abort();
        assert!(in_flight.await.unwrap_err().is_cancelled());
        let rig = rig.restart();

        let reply = rig.query("tx-1").await;
        assert_eq!(reply.status, Status::Successful, "override {otp_override}");
        assert_eq!(connector.polled_with(), vec![json!({"posting": "p-1"})]);
        assert_eq!(connector.calls().start, 1);
        assert_eq!(rig.service.pending_count().await.unwrap(), 0);
    }
}

/// `finish` writes the final record, then erases the pending entry; a crash
/// between the two leaves both. The final record wins every read, and the
/// sweep erases the leftover.
#[tokio::test]
async fn a_pending_entry_a_crash_left_beside_a_final_record_is_inert_and_swept() {
    let rig = otp_rig(json!({ "posting": 1 }));
    assert_eq!(
        rig.transact(transfer("tx-1")).await.status,
        Status::WaitingForOtp
    );
    let state =
        manifold_provider_sdk::state::StateStore::open(&rig.db, NAMESPACE, None, None).unwrap();
    let key = manifold_provider_sdk::state::transaction_key(APP, "tx-1");
    let leftover = state
        .pending(&key)
        .await
        .unwrap()
        .expect("the OTP is pending");
    let code = rig.last_code();
    let done = rig.validate("tx-1", otp(&code)).await;
    assert_eq!(done.status, Status::Successful);
    // What the crash would have left: the pending entry written back.
    state.put_pending(&key, &leftover).await.unwrap();
    drop(state);
    let rig = rig.restart();
    assert_eq!(rig.service.pending_count().await.unwrap(), 1);

    assert_eq!(rig.transact(transfer("tx-1")).await, done);
    assert_eq!(rig.validate("tx-1", otp(&code)).await, done);
    assert_eq!(rig.query("tx-1").await, done);
    // Not expired yet: only its final record marks it for the sweep.
    assert_eq!(rig.service.sweep_expired().await.unwrap(), 0);
    assert_eq!(rig.service.pending_count().await.unwrap(), 0);
    assert_eq!(rig.connector.calls().complete, 1);
    assert_eq!(rig.notifier.attempts(), 1);
}

/// The switch normally refuses a reused `transaction_ref`, but it may have
/// forgotten one the provider remembers (a `read_only` call is not durable
/// in the switch before the provider acts). The provider must not answer a
/// transfer with a balance enquiry's stored outcome, or the reverse.
#[tokio::test]
async fn a_transaction_ref_known_under_another_request_type_is_refused() {
    let enquiry = |transaction_ref: &str| {
        let mut request = transfer(transaction_ref);
        request.request_type = "get_balance".into();
        request
    };
    let rig = otp_rig(json!({ "posting": 1 }));
    let waiting = rig.transact(transfer("tx-waiting")).await;
    assert_eq!(waiting.status, Status::WaitingForOtp);
    let mut done = transfer("tx-done");
    done.otp_override = true;
    assert_eq!(rig.transact(done).await.status, Status::Successful);

    for (transaction_ref, known_as) in [
        ("tx-waiting", "transfer_funds"),
        ("tx-done", "transfer_funds"),
    ] {
        let refused = rig.transact(enquiry(transaction_ref)).await;
        assert_eq!(
            status_and_code(&refused),
            (Status::Failed, codes::INVALID_TRANSACTION),
            "{transaction_ref}"
        );
        assert!(refused.message.contains(known_as), "{}", refused.message);
    }
    assert_eq!(
        rig.connector.calls().start,
        2,
        "no upstream call for a reused reference"
    );
    // The direction that would move money: a transfer naming an enquiry's ref.
    let mut settled_enquiry = enquiry("tx-enquiry");
    settled_enquiry.otp_override = true;
    assert_eq!(
        rig.transact(settled_enquiry).await.status,
        Status::Successful
    );
    let mut transfer_on_it = transfer("tx-enquiry");
    transfer_on_it.otp_override = true;
    let refused = rig.transact(transfer_on_it).await;
    assert_eq!(
        status_and_code(&refused),
        (Status::Failed, codes::INVALID_TRANSACTION)
    );
    assert!(
        refused.message.contains("get_balance"),
        "{}",
        refused.message
    );
    assert_eq!(rig.connector.calls().start, 3);
    assert_eq!(rig.notifier.attempts(), 1, "no second code");
    // The original transactions are untouched.
    assert_eq!(rig.transact(transfer("tx-waiting")).await, waiting);
    let code = rig.last_code();
    assert_eq!(
        rig.validate("tx-waiting", otp(&code)).await.status,
        Status::Successful
    );
}

/// How many group-commit rounds one `otp_override` call waits for: the
/// `Processing` marker before `complete` and the final outcome before the
/// answer (left to the caller with `AnswerDurability::ByCaller`); a read-only
/// request type answered within the call keeps neither. A code is durable
/// before it is sent either way.
#[tokio::test]
async fn flush_rounds_follow_answer_durability_and_read_only_request_types() {
    use manifold_provider_sdk::AnswerDurability::{BeforeAnswering, ByCaller};
    let cases = [
        (BeforeAnswering, "transfer_funds", true, 2),
        // A read-only answer given within the call is not kept at all.
        (BeforeAnswering, "get_balance", true, 0),
        (ByCaller, "transfer_funds", true, 1),
        (ByCaller, "get_balance", true, 0),
        // The code is made durable before it is sent, whoever flushes answers.
        (ByCaller, "transfer_funds", false, 1),
        (ByCaller, "get_balance", false, 1),
    ];
    for idempotent in [true, false] {
        for (durability, request_type, otp_override, rounds) in cases {
            // A non-idempotent upstream adds its durable `Starting` marker,
            // except for a read-only request type (harmless to start twice).
            let marker = !idempotent && request_type != "get_balance";
            let expected = rounds + u64::from(marker);
            let mut settings = settings();
            settings.answer_durability = durability;
            let connector = ScriptedConnector::new()
                .idempotent(idempotent)
                .read_only_enquiries()
                .on_start(confirm_with_otp(json!({ "posting": 1 })));
            let rig = Rig::with_settings(connector, settings);
            let mut request = transfer("tx-1");
            request.request_type = request_type.into();
            request.otp_override = otp_override;
            let before = rig.flushes();
            let reply = rig.transact(request).await;
            let name = format!(
                "{durability:?} {request_type} otp_override={otp_override} idempotent={idempotent}"
            );
            let expected_status = if otp_override {
                Status::Successful
            } else {
                Status::WaitingForOtp
            };
            assert_eq!(reply.status, expected_status, "{name}");
            assert_eq!(rig.flushes() - before, expected, "{name}");
            assert_eq!(
                rig.notifier.attempts(),
                usize::from(!otp_override),
                "{name}"
            );
        }
    }
}

/// A read-only request type answered at once by `start` leaves nothing
/// behind and waits for no flush: a repeat asks the upstream again (harmless),
/// and the caller keeps the answer it was given.
#[tokio::test]
async fn a_read_only_answer_given_at_once_is_not_kept() {
    let answers_at_once = [
        ("done", done(approved())),
        (
            "confirmed by otp_override",
            confirm_with_otp(json!({ "balance": 1 })),
        ),
    ];
    for ((how, first_step), idempotent) in answers_at_once
        .into_iter()
        .flat_map(|answer| [(answer.clone(), true), (answer, false)])
    {
        let case = format!("{how}, idempotent={idempotent}");
        let connector = ScriptedConnector::new()
            .idempotent(idempotent)
            .read_only_enquiries()
            .on_start(first_step);
        let rig = Rig::new(connector);
        let mut enquiry = transfer("tx-enquiry");
        enquiry.request_type = "get_balance".into();
        enquiry.otp_override = true;
        let before = rig.flushes();
        assert_eq!(
            rig.transact(enquiry.clone()).await.status,
            Status::Successful
        );
        assert_eq!(rig.flushes(), before, "{case}");
        assert_eq!(rig.service.pending_count().await.unwrap(), 0);
        assert!(
            !rig.everything_stored()
                .iter()
                .any(|v| v.contains("tx-enquiry")),
            "{case}: {:?}",
            rig.everything_stored()
        );
        assert_eq!(rig.transact(enquiry).await.status, Status::Successful);
        assert_eq!(rig.connector.calls().start, 2, "asked again");
    }
}

/// The switch sends `read_only: true` when its host lists the request type
/// as read-only (and so wrote nothing before the call). A connector that may
/// move money for it refuses the call untouched; one that only reads serves
/// it. The service reports what its connector says, for the switch's check
/// at start-up.
#[tokio::test]
async fn a_call_the_switch_believes_read_only_is_refused_unless_it_is() {
    let rig = Rig::new(
        ScriptedConnector::new()
            .read_only_enquiries()
            .on_start(done(approved())),
    );
    let mut believed = transfer("tx-transfer");
    believed.read_only = true;
    let refused = rig.service.transact(believed).await;
    assert!(
        matches!(&refused, Err(ProviderError::Rejected(message)) if message.contains("`transfer_funds`")),
        "{refused:?}"
    );
    assert_eq!(
        rig.connector.calls().start,
        0,
        "the upstream was not called"
    );

    let mut enquiry = transfer("tx-enquiry");
    enquiry.request_type = "get_balance".into();
    enquiry.read_only = true;
    assert_eq!(rig.transact(enquiry).await.status, Status::Successful);

    assert_eq!(rig.service.read_only("get_balance"), Some(true));
    assert_eq!(rig.service.read_only("transfer_funds"), Some(false));
}

/// State the service must store before it acts (a marker, a parked code)
/// that cannot be stored means nothing was done: the switch may treat the
/// call as never made (503) instead of recording it `Pending`.
#[test]
fn state_that_could_not_be_stored_before_acting_means_nothing_was_done() {
    let error = ProviderError::from(manifold_provider_sdk::ServiceError::NothingDone(Box::new(
        manifold_provider_sdk::ServiceError::Corrupt("no space left on device".into()),
    )));
    assert!(
        matches!(&error, ProviderError::Unreachable(m) if m.contains("nothing was done") && m.contains("no space")),
        "{error:?}"
    );
    assert!(!error.may_have_executed());
}

#[tokio::test]
async fn the_account_holder_on_record_gets_the_code_whatever_the_request_says() {
    let mut settings = settings();
    settings.otp.digits = 10;
    let holder = Contact::sms("2348033333333");
    let rig = Rig::with_settings(
        ScriptedConnector::new().on_start(confirm_with_otp_to(json!({ "posting": 1 }), holder)),
        settings,
    );
    // The request names the customer's MOBILE; the upstream's record wins.
    let reply = rig.transact(transfer("tx-1")).await;
    assert_eq!(
        status_and_code(&reply),
        (Status::WaitingForOtp, codes::OTP_SENT)
    );
    assert_eq!(reply.message, "Please enter the OTP sent to 2348033****33");
    let sent = rig.notifier.sent();
    assert_eq!(
        (sent[0].channel, sent[0].to.as_str()),
        (Channel::Sms, "2348033333333")
    );
    // The notification names its transaction, for the outbox.
    assert_eq!(sent[0].transaction_ref.as_deref(), Some("tx-1"));
    // A resend goes to the holder too.
    rig.advance(RESEND_INTERVAL);
    let resent = rig.validate("tx-1", ValidationInput::Resend).await;
    assert!(
        resent.message.contains("2348033****33"),
        "{}",
        resent.message
    );
    assert_eq!(rig.notifier.sent()[1].to, "2348033333333");
    let done = rig.validate("tx-1", otp(&rig.last_code())).await;
    assert_eq!(status_and_code(&done), (Status::Successful, "00"));
}

#[tokio::test]
async fn codes_stop_at_the_hourly_limits_of_a_destination_and_of_an_app() {
    let holder = |n: u32| Contact::sms(format!("23480300000{n:02}"));
    // Per destination: one holder, three transactions.
    let mut per_destination = settings();
    per_destination.otp.max_sends_per_destination_per_hour = 2;
    let connector = (0..3).fold(ScriptedConnector::new(), |connector, _| {
        connector.on_start(confirm_with_otp_to(json!({ "posting": 1 }), holder(1)))
    });
    let rig = Rig::with_settings(connector, per_destination);
    for n in 0..2 {
        let reply = rig.transact(transfer(&format!("tx-{n}"))).await;
        assert_eq!(
            status_and_code(&reply),
            (Status::WaitingForOtp, codes::OTP_SENT)
        );
    }
    let refused = rig.transact(transfer("tx-2")).await;
    assert_eq!(
        status_and_code(&refused),
        (Status::Failed, codes::OTP_SEND_LIMIT)
    );
    assert!(
        refused
            .message
            .contains("the limit of 2 codes an hour to 2348030****01 is reached"),
        "{}",
        refused.message
    );
    assert_eq!(rig.notifier.attempts(), 2);
    assert_eq!(
        rig.service.pending_count().await.unwrap(),
        2,
        "the refused one is final"
    );
    // A resend over the limit keeps the code already sent.
    rig.advance(RESEND_INTERVAL);
    let resend = rig.validate("tx-0", ValidationInput::Resend).await;
    assert_eq!(
        status_and_code(&resend),
        (Status::WaitingForOtp, codes::OTP_SEND_LIMIT)
    );
    assert_eq!(rig.notifier.attempts(), 2);

    // Per app: three holders, one app.
    let mut per_app = settings();
    per_app.otp.max_sends_per_app_per_hour = 2;
    let connector = (0..3).fold(ScriptedConnector::new(), |connector, n| {
        connector.on_start(confirm_with_otp_to(json!({ "posting": 1 }), holder(n)))
    });
    let rig = Rig::with_settings(connector, per_app);
    for n in 0..2 {
        let reply = rig.transact(transfer(&format!("tx-{n}"))).await;
        assert_eq!(
            status_and_code(&reply),
            (Status::WaitingForOtp, codes::OTP_SENT)
        );
    }
    let refused = rig.transact(transfer("tx-2")).await;
    assert_eq!(
        status_and_code(&refused),
        (Status::Failed, codes::OTP_SEND_LIMIT)
    );
    assert!(
        refused
            .message
            .contains("this app's limit of 2 codes an hour is reached"),
        "{}",
        refused.message
    );
    assert_eq!(rig.notifier.attempts(), 2);
}

/// The switch's `/notify/*` refusing a code by its hourly limit is not a
/// broken channel: a first code cancels the transaction naming the limit
/// (900T5), a resend keeps the code the customer already holds.
#[tokio::test]
async fn a_limit_of_the_switch_keeps_the_current_code_on_a_resend() {
    let rig = Rig::new(
        ScriptedConnector::new()
            .on_start(confirm_with_otp(json!({ "posting": 1 })))
            .on_start(confirm_with_otp(json!({ "posting": 2 }))),
    );
    rig.transact(transfer("tx-1")).await;
    let code = rig.last_code();
    rig.notifier.limit(true);
    rig.advance(RESEND_INTERVAL);
    let resend = rig.validate("tx-1", ValidationInput::Resend).await;
    assert_eq!(
        status_and_code(&resend),
        (Status::WaitingForOtp, codes::OTP_SEND_LIMIT)
    );
    assert!(
        resend.message.contains("10 codes an hour"),
        "{}",
        resend.message
    );
    // The code sent first still completes the transaction.
    let done = rig.validate("tx-1", otp(&code)).await;
    assert_eq!(status_and_code(&done), (Status::Successful, "00"));

    let first = rig.transact(transfer("tx-2")).await;
    assert_eq!(
        status_and_code(&first),
        (Status::Failed, codes::OTP_SEND_LIMIT)
    );
    assert_eq!(rig.service.pending_count().await.unwrap(), 0);
}
