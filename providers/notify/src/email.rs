//! [`SmtpMailer`]: e-mail over SMTP.
//!
//! Each notification becomes one plain-text message from the configured
//! `from` mailbox to the notification's address, with the host's subject and
//! body templates applied (`{subject}`, `{message}`, `{to}`; a notification
//! without a subject gets [`DEFAULT_SUBJECT`]). It is submitted with `lettre`
//! over rustls: `none` is plain SMTP, `starttls` upgrades the connection and
//! fails rather than send in clear when the server does not offer STARTTLS,
//! `tls` is TLS from the first byte. Server certificates are checked against
//! the Mozilla roots (`webpki-roots`). Each message opens its own connection:
//! lettre's pool would spawn tasks when the mailer is built and dropped, which
//! panics outside a tokio runtime, and OTP traffic does not need it.
//!
//! An SMTP refusal is reported with its reply code only: the server's text
//! may quote the message.

use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use manifold_config::{MessageTemplate, SmtpConfig, SmtpTls};
use manifold_provider::notify::{mask_destination, Channel};
use manifold_provider::{Notification, Notifier, NotifyError};

/// The `{subject}` of a notification that has none.
pub const DEFAULT_SUBJECT: &str = "A message from your bank";

/// Sends [`Channel::Email`] notifications to an SMTP server.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    subject: MessageTemplate,
    body: MessageTemplate,
    timeout: Duration,
    server: String,
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("server", &self.server)
            .field("from", &self.from.to_string())
            .finish()
    }
}

impl SmtpMailer {
    /// Checks the settings (the `from` mailbox, the TLS server name);
    /// nothing is connected until the first send. Needs no runtime.
    pub fn new(config: &SmtpConfig) -> Result<SmtpMailer, NotifyError> {
        let misconfigured = |reason: String| NotifyError::Misconfigured {
            channel: Channel::Email,
            reason,
        };
        let from: Mailbox = config.from.parse().map_err(|_| {
            misconfigured(
                "`from` is not a mailbox such as `Manifold <no-reply@example.com>`".into(),
            )
        })?;
        let tls_parameters = || {
            TlsParameters::new(config.host.clone()).map_err(|_| {
                misconfigured(format!(
                    "`{}` cannot be used as the TLS server name",
                    config.host
                ))
            })
        };
        let tls = match config.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::StartTls => Tls::Required(tls_parameters()?),
            SmtpTls::Tls => Tls::Wrapper(tls_parameters()?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(config.port)
            .tls(tls)
            // Bounds each read and write; `send` bounds the whole exchange.
            .timeout(Some(config.timeout));
        if let Some(credentials) = &config.credentials {
            builder = builder.credentials(Credentials::new(
                credentials.username.clone(),
                credentials.password.expose().to_owned(),
            ));
        }
        Ok(SmtpMailer {
            transport: builder.build(),
            from,
            subject: config.subject.clone(),
            body: config.body.clone(),
            timeout: config.timeout,
            server: format!("{}:{}", config.host, config.port),
        })
    }

    /// The server as it may appear in logs, `host:port`.
    pub fn server(&self) -> &str {
        &self.server
    }

    fn build(&self, to: Address, notification: &Notification) -> Result<Message, NotifyError> {
        let recipient = to.to_string();
        // A subject is one line; a provider's stray line break must not
        // reach the header, even encoded.
        let subject_value: String = notification
            .subject
            .as_deref()
            .unwrap_or(DEFAULT_SUBJECT)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let subject_value = subject_value.as_str();
        let subject = self
            .subject
            .render(&[("subject", subject_value), ("to", &recipient)]);
        let body = self.body.render(&[
            ("message", notification.body.expose()),
            ("subject", subject_value),
            ("to", &recipient),
        ]);
        Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            .subject(subject.expose())
            .header(ContentType::TEXT_PLAIN)
            .body(body.expose().to_owned())
            .map_err(|_| NotifyError::Undeliverable {
                channel: Channel::Email,
                to: recipient,
                reason: "the message could not be built".into(),
            })
    }
}

#[async_trait]
impl Notifier for SmtpMailer {
    async fn send(&self, notification: &Notification) -> Result<(), NotifyError> {
        let to = notification.to.as_str();
        if notification.channel != Channel::Email {
            return Err(NotifyError::Misconfigured {
                channel: notification.channel,
                reason: "the mailer was handed a message of another channel".into(),
            });
        }
        let address: Address = to.parse().map_err(|_| NotifyError::InvalidDestination {
            channel: Channel::Email,
            to: to.to_owned(),
            reason: "not an e-mail address such as uju@example.com".into(),
        })?;
        let message = self.build(address, notification)?;
        let undeliverable = |reason: String| NotifyError::Undeliverable {
            channel: Channel::Email,
            to: to.to_owned(),
            reason,
        };
        match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Err(_) => Err(undeliverable(format!(
                "the mail server did not take the message within {} ms",
                self.timeout.as_millis()
            ))),
            Ok(Err(error)) => Err(describe(error, to)),
            Ok(Ok(_)) => {
                tracing::info!(
                    channel = %Channel::Email,
                    to = %mask_destination(Channel::Email, to),
                    server = %self.server,
                    "e-mail accepted by the mail server"
                );
                Ok(())
            }
        }
    }
}

/// Our words for a lettre error: the reply code for refusals, lettre's own
/// text only for failures that happen before any message content is sent.
fn describe(error: lettre::transport::smtp::Error, to: &str) -> NotifyError {
    let refused = |reason: String| NotifyError::Refused {
        channel: Channel::Email,
        to: to.to_owned(),
        reason,
    };
    let undeliverable = |reason: String| NotifyError::Undeliverable {
        channel: Channel::Email,
        to: to.to_owned(),
        reason,
    };
    if let Some(code) = error.status() {
        let code = code.to_string();
        return refused(match code.as_str() {
            "530" | "534" | "535" | "538" => {
                format!(
                    "the mail server refused the login (SMTP {code}); check username and password"
                )
            }
            _ if error.is_transient() => {
                format!("the mail server deferred the message (SMTP {code})")
            }
            _ => format!("the mail server refused the message (SMTP {code})"),
        });
    }
    if error.is_timeout() {
        return undeliverable("the mail server did not answer in time".into());
    }
    if error.is_tls() {
        return undeliverable("the TLS handshake with the mail server failed".into());
    }
    if error.is_response() {
        return undeliverable("the mail server's reply could not be understood".into());
    }
    // Connection, network and client errors: lettre's text is about the
    // exchange (e.g. "STARTTLS is not supported by this server"), never the message.
    undeliverable(error.to_string())
}
