//! The sink against a real SMTP client (lettre) and a hand-written dialogue.

use std::time::Duration;

use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::AsyncSmtpTransportBuilder;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use manifold_smtp_sink::{SinkOptions, SmtpSink};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Bounds every wait so a broken sink fails the test instead of hanging it.
const LIMIT: Duration = Duration::from_secs(20);

fn transport(sink: &SmtpSink) -> AsyncSmtpTransportBuilder {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1").port(sink.port())
}

fn message(to: &str, subject: &str, body: &str) -> Message {
    Message::builder()
        .from(
            "Manifold <no-reply@manifold.test>"
                .parse::<Mailbox>()
                .unwrap(),
        )
        .to(to.parse::<Mailbox>().unwrap())
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(body.to_owned())
        .unwrap()
}

#[tokio::test]
async fn a_message_sent_by_lettre_arrives_parsed() {
    let sink = SmtpSink::start().await.unwrap();
    let mailer = transport(&sink).build();
    // A leading dot exercises dot-stuffing; non-ASCII exercises encoded
    // words in the subject and a transfer encoding in the body.
    let body = "Your code is 415933.\n.a line that starts with a dot\nÀ bientôt";
    mailer
        .send(message(
            "Uju <uju@example.com>",
            "Votre code à usage unique",
            body,
        ))
        .await
        .unwrap();

    let mail = tokio::time::timeout(LIMIT, sink.wait_for_message(0))
        .await
        .unwrap();
    assert_eq!(mail.envelope_from, "no-reply@manifold.test");
    assert_eq!(mail.envelope_to, vec!["uju@example.com".to_owned()]);
    assert_eq!(mail.from.as_deref(), Some("no-reply@manifold.test"));
    assert_eq!(mail.to, vec!["uju@example.com".to_owned()]);
    assert_eq!(mail.subject.as_deref(), Some("Votre code à usage unique"));
    assert_eq!(
        // The line break that ends DATA belongs to the transport, not the text.
        mail.text_body
            .as_deref()
            .map(|t| t.replace("\r\n", "\n").trim_end().to_owned()),
        Some(body.to_owned())
    );
    assert_eq!(mail.authenticated_as, None);
    assert_eq!(sink.received().len(), 1);
}

#[tokio::test]
async fn messages_are_kept_in_order_of_arrival() {
    let sink = SmtpSink::start().await.unwrap();
    let mailer = transport(&sink).build();
    for n in 0..3 {
        mailer
            .send(message(&format!("c{n}@example.com"), &format!("m{n}"), "x"))
            .await
            .unwrap();
    }
    let third = tokio::time::timeout(LIMIT, sink.wait_for_message(2))
        .await
        .unwrap();
    assert_eq!(third.subject.as_deref(), Some("m2"));
    let subjects: Vec<_> = sink
        .received()
        .into_iter()
        .map(|m| m.subject.unwrap())
        .collect();
    assert_eq!(subjects, ["m0", "m1", "m2"]);
}

#[tokio::test]
async fn authentication_is_enforced_when_configured() {
    let sink = SmtpSink::start_with(SinkOptions {
        credentials: Some(("manifold".into(), "s3cret".into())),
        ..SinkOptions::default()
    })
    .await
    .unwrap();

    let good = transport(&sink)
        .credentials(Credentials::new("manifold".into(), "s3cret".into()))
        .build();
    good.send(message("a@example.com", "ok", "x"))
        .await
        .unwrap();
    let mail = tokio::time::timeout(LIMIT, sink.wait_for_message(0))
        .await
        .unwrap();
    assert_eq!(mail.authenticated_as.as_deref(), Some("manifold"));

    let wrong = transport(&sink)
        .credentials(Credentials::new("manifold".into(), "wrong".into()))
        .build();
    let error = wrong
        .send(message("a@example.com", "no", "x"))
        .await
        .unwrap_err();
    assert!(error.is_permanent(), "{error}");
    assert_eq!(error.status().map(|c| c.to_string()), Some("535".into()));

    let anonymous = transport(&sink).build();
    let error = anonymous
        .send(message("a@example.com", "no", "x"))
        .await
        .unwrap_err();
    assert!(error.is_permanent(), "{error}");
    assert_eq!(sink.received().len(), 1);
}

#[tokio::test]
async fn rejected_recipients_get_550() {
    let sink = SmtpSink::start_with(SinkOptions {
        rejected_recipients: vec!["nobody@example.com".into()],
        ..SinkOptions::default()
    })
    .await
    .unwrap();
    let error = transport(&sink)
        .build()
        .send(message("nobody@example.com", "x", "x"))
        .await
        .unwrap_err();
    assert_eq!(error.status().map(|c| c.to_string()), Some("550".into()));
    assert!(sink.received().is_empty());
}

/// One SMTP client connection driven line by line.
struct Dialogue {
    lines: Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
}

impl Dialogue {
    async fn open(sink: &SmtpSink) -> Dialogue {
        let (read, write) = TcpStream::connect(sink.addr()).await.unwrap().into_split();
        Dialogue {
            lines: BufReader::new(read).lines(),
            write,
        }
    }

    /// Reads one reply line and checks its code.
    async fn expect(&mut self, code: &str, after: &str) {
        let line = tokio::time::timeout(LIMIT, self.lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(line.starts_with(code), "{after:?} answered {line:?}");
    }

    async fn send(&mut self, command: &str, code: &str) {
        self.write
            .write_all(format!("{command}\r\n").as_bytes())
            .await
            .unwrap();
        self.expect(code, command).await;
    }
}

/// HELO, RSET, NOOP and QUIT, which lettre does not send, by hand.
#[tokio::test]
async fn the_basic_dialogue_works_by_hand() {
    let sink = SmtpSink::start().await.unwrap();
    let mut smtp = Dialogue::open(&sink).await;
    smtp.expect("220", "connect").await;
    smtp.send("HELO client.test", "250").await;
    smtp.send("NOOP", "250").await;
    smtp.send("MAIL FROM:<discarded@example.com>", "250").await;
    smtp.send("RCPT TO:<discarded@example.com>", "250").await;
    smtp.send("RSET", "250").await;
    smtp.send("DATA", "503").await;
    smtp.send("MAIL FROM:<a@example.com>", "250").await;
    smtp.send("RCPT TO:<b@example.com>", "250").await;
    smtp.send("DATA", "354").await;
    smtp.send(
        "From: a@example.com\r\nTo: b@example.com\r\nSubject: by hand\r\n\r\n..dotted\r\n.",
        "250",
    )
    .await;
    smtp.send("QUIT", "221").await;

    let mail = tokio::time::timeout(LIMIT, sink.wait_for_message(0))
        .await
        .unwrap();
    assert_eq!(mail.envelope_from, "a@example.com");
    assert_eq!(mail.envelope_to, vec!["b@example.com".to_owned()]);
    assert_eq!(mail.subject.as_deref(), Some("by hand"));
    assert_eq!(
        mail.text_body.as_deref().map(str::trim_end),
        Some(".dotted")
    );
    assert_eq!(sink.received().len(), 1);
}
