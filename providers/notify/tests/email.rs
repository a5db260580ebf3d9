//! [`SmtpMailer`] sending real SMTP to the loopback sink, which parses each
//! message on arrival.

mod common;

use common::*;
use manifold_notify::SmtpMailer;
use manifold_provider::notify::Channel;
use manifold_provider::{Notification, Notifier, NotifyError};
use manifold_smtp_sink::{SinkOptions, SmtpSink};

fn mailer(storage: &std::path::Path, sink: &SmtpSink, extra: &str) -> SmtpMailer {
    let config = notifications(
        storage,
        &format!(
            "[notifications.email]\nhost = \"127.0.0.1\"\nport = {}\n\
             from = \"Manifold demo bank <no-reply@manifold.test>\"\n{extra}",
            sink.port()
        ),
    );
    SmtpMailer::new(config.email.as_ref().unwrap()).unwrap()
}

#[tokio::test]
async fn the_message_travels_over_smtp_with_the_templates_applied() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start().await.unwrap();
    let mailer = mailer(
        dir.path(),
        &sink,
        "tls = \"none\"\nsubject = \"Manifold: {subject}\"\n\
         body = \"Hello {to},\\n\\n{message}\\n\\nDo not share it.\"",
    );
    mailer.send(&email(EMAIL)).await.unwrap();

    let mail = tokio::time::timeout(LIMIT, sink.wait_for_message(0))
        .await
        .unwrap();
    assert_eq!(mail.envelope_from, "no-reply@manifold.test");
    assert_eq!(mail.envelope_to, vec![EMAIL.to_owned()]);
    assert_eq!(mail.from.as_deref(), Some("no-reply@manifold.test"));
    assert_eq!(mail.to, vec![EMAIL.to_owned()]);
    assert_eq!(
        mail.subject.as_deref(),
        Some("Manifold: Your one-time code")
    );
    assert_eq!(
        mail.text_body.unwrap().replace("\r\n", "\n").trim_end(),
        format!("Hello {EMAIL},\n\nYour code is {OTP}.\n\nDo not share it.")
    );
    assert_eq!(mail.authenticated_as, None);
}

#[tokio::test]
async fn a_notification_without_subject_gets_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start().await.unwrap();
    let mailer = mailer(dir.path(), &sink, "tls = \"none\"");
    let mut notification = email(EMAIL);
    notification.subject = None;
    mailer.send(&notification).await.unwrap();
    let mail = tokio::time::timeout(LIMIT, sink.wait_for_message(0))
        .await
        .unwrap();
    assert_eq!(
        mail.subject.as_deref(),
        Some(manifold_notify::email::DEFAULT_SUBJECT)
    );
}

#[tokio::test]
async fn a_line_break_in_a_subject_cannot_add_a_header() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start().await.unwrap();
    let mailer = mailer(dir.path(), &sink, "tls = \"none\"");
    let notification = Notification {
        subject: Some("Code\r\nBcc: thief@example.com".into()),
        ..email(EMAIL)
    };
    mailer.send(&notification).await.unwrap();
    let mail = tokio::time::timeout(LIMIT, sink.wait_for_message(0))
        .await
        .unwrap();
    assert_eq!(mail.envelope_to, vec![EMAIL.to_owned()]);
    assert_eq!(
        mail.subject.as_deref(),
        Some("Code  Bcc: thief@example.com")
    );
    let raw = String::from_utf8_lossy(&mail.raw).to_ascii_lowercase();
    assert!(!raw.contains("\nbcc:"), "{raw}");
}

#[tokio::test]
async fn credentials_are_used_and_a_refused_login_is_clear() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start_with(SinkOptions {
        credentials: Some(("manifold".into(), "smtp-pa55".into())),
        ..SinkOptions::default()
    })
    .await
    .unwrap();

    let good = mailer(
        dir.path(),
        &sink,
        "tls = \"none\"\nusername = \"manifold\"\npassword = \"smtp-pa55\"",
    );
    good.send(&email(EMAIL)).await.unwrap();
    let mail = tokio::time::timeout(LIMIT, sink.wait_for_message(0))
        .await
        .unwrap();
    assert_eq!(mail.authenticated_as.as_deref(), Some("manifold"));

    let wrong = mailer(
        dir.path(),
        &sink,
        "tls = \"none\"\nusername = \"manifold\"\npassword = \"wrong\"",
    );
    let error = wrong.send(&email(EMAIL)).await.unwrap_err();
    assert!(
        matches!(
            error,
            NotifyError::Refused {
                channel: Channel::Email,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("refused the login (SMTP 535)"),
        "{error}"
    );
    assert_discreet(&error, EMAIL);
    assert_eq!(sink.received().len(), 1);
}

#[tokio::test]
async fn a_refused_recipient_is_reported_with_the_reply_code() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start_with(SinkOptions {
        rejected_recipients: vec![EMAIL.into()],
        ..SinkOptions::default()
    })
    .await
    .unwrap();
    let mailer = mailer(dir.path(), &sink, "tls = \"none\"");
    let error = mailer.send(&email(EMAIL)).await.unwrap_err();
    assert!(matches!(error, NotifyError::Refused { .. }), "{error:?}");
    assert!(
        error.to_string().contains("refused the message (SMTP 550)"),
        "{error}"
    );
    assert!(error.to_string().contains("u***@example.com"), "{error}");
    assert_discreet(&error, EMAIL);
    assert!(sink.received().is_empty());
}

#[tokio::test]
async fn starttls_is_required_not_hoped_for() {
    let dir = tempfile::tempdir().unwrap();
    // The sink offers no STARTTLS; a mailer set to starttls must not fall
    // back to sending the OTP in clear.
    let sink = SmtpSink::start().await.unwrap();
    let mailer = mailer(dir.path(), &sink, "tls = \"starttls\"");
    let error = mailer.send(&email(EMAIL)).await.unwrap_err();
    assert!(
        matches!(error, NotifyError::Undeliverable { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("STARTTLS"), "{error}");
    assert_discreet(&error, EMAIL);
    assert!(sink.received().is_empty());
}

#[tokio::test]
async fn implicit_tls_to_a_plain_server_fails() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start().await.unwrap();
    let mailer = mailer(dir.path(), &sink, "tls = \"tls\"");
    let error = tokio::time::timeout(LIMIT, mailer.send(&email(EMAIL)))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(error, NotifyError::Undeliverable { .. }),
        "{error:?}"
    );
    assert_discreet(&error, EMAIL);
    assert!(sink.received().is_empty());
}

#[tokio::test]
async fn bad_addresses_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start().await.unwrap();
    let mailer = mailer(dir.path(), &sink, "tls = \"none\"");
    for bad in ["", "uju", "Uju <uju@example.com>", "a b@example.com"] {
        let error = mailer.send(&email(bad)).await.unwrap_err();
        assert!(
            matches!(error, NotifyError::InvalidDestination { .. }),
            "{bad}: {error:?}"
        );
    }
    let error = mailer.send(&sms(MSISDN)).await.unwrap_err();
    assert!(
        matches!(error, NotifyError::Misconfigured { .. }),
        "{error:?}"
    );
    assert!(sink.received().is_empty());

    // A `from` that passes the configuration's plausibility check but is not
    // a mailbox is refused when the mailer is built.
    let config = notifications(
        dir.path(),
        "[notifications.email]\nhost = \"127.0.0.1\"\ntls = \"none\"\nfrom = \"no-reply@manifold..test\"",
    );
    let error = SmtpMailer::new(config.email.as_ref().unwrap()).unwrap_err();
    assert!(
        matches!(error, NotifyError::Misconfigured { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("`from`"), "{error}");
}

#[tokio::test]
async fn an_unreachable_server_is_undeliverable() {
    let dir = tempfile::tempdir().unwrap();
    // A port that was just free: nothing listens there any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = notifications(
        dir.path(),
        &format!(
            "[notifications.email]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
             from = \"no-reply@manifold.test\""
        ),
    );
    let mailer = SmtpMailer::new(config.email.as_ref().unwrap()).unwrap();
    let error = tokio::time::timeout(LIMIT, mailer.send(&email(EMAIL)))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(error, NotifyError::Undeliverable { .. }),
        "{error:?}"
    );
    assert_discreet(&error, EMAIL);
}
