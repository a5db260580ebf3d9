//! [`SwitchNotifier`]: a provider microservice's notifier that delegates
//! dispatch to the switch.
//!
//! Instead of configuring an SMS gateway and an SMTP server of its own, a
//! provider sends each message to the switch's notification services
//! ([`wire`](crate::wire)), signed (RFC 9421, [`HopSigner`]) with the secret
//! and `key_id` the host gave it in the provider's `[[providers]]` entry
//! (which must say `notify = true`); the switch sends it through whatever the
//! host configured. The switch's answer is turned back into a
//! [`NotifyError`] of the same kind, so a provider handles a delegated failure
//! exactly like a local one.

use std::time::Duration;

use async_trait::async_trait;
use manifold_provider::notify::Channel;
use manifold_provider::outbound::{self, read_capped, OutboundOptions, DEFAULT_MAX_RESPONSE_BYTES};
use manifold_provider::{HopSigner, Notification, Notifier, NotifyError};
use serde::Deserialize;

use crate::wire::{NotifyRequest, EMAIL_PATH, OTP_KIND, SMS_PATH};

/// Sends notifications through the switch at `switch_url`.
pub struct SwitchNotifier {
    client: reqwest::Client,
    base_url: reqwest::Url,
    signer: HopSigner,
    timeout: Duration,
}

impl std::fmt::Debug for SwitchNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwitchNotifier")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// The parts of the switch's envelope a failure is read from.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    message: String,
    #[serde(default)]
    data: Option<EnvelopeData>,
}

#[derive(Deserialize)]
struct EnvelopeData {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    errors: Option<Vec<FieldErrorBody>>,
}

#[derive(Deserialize)]
struct FieldErrorBody {
    field: String,
    message: String,
}

impl SwitchNotifier {
    /// `switch_url` is the switch's base URL (`http://` or `https://`);
    /// `timeout` bounds each whole call and should exceed the switch's own
    /// gateway timeout, or a message the switch is still sending is reported
    /// as failed. A bad URL is [`NotifyError::Misconfigured`] (reported under
    /// [`Channel::Sms`], as no message is involved yet).
    pub fn new(
        switch_url: &str,
        signer: HopSigner,
        timeout: Duration,
    ) -> Result<SwitchNotifier, NotifyError> {
        SwitchNotifier::with_options(switch_url, signer, OutboundOptions::with_timeout(timeout))
    }

    /// As [`SwitchNotifier::new`], with the client's options spelt out (a CA
    /// file for a switch whose certificate a private CA issued).
    pub fn with_options(
        switch_url: &str,
        signer: HopSigner,
        options: OutboundOptions,
    ) -> Result<SwitchNotifier, NotifyError> {
        let timeout = options.timeout;
        let misconfigured = |reason: &str| NotifyError::Misconfigured {
            channel: Channel::Sms,
            reason: reason.to_owned(),
        };
        let url = reqwest::Url::parse(switch_url)
            .map_err(|_| misconfigured("the switch URL cannot be parsed"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(misconfigured(
                "the switch URL must be an http:// or https:// base URL",
            ));
        }
        // OTP texts cross this hop: in clear only to this machine, or where
        // the host accepted it.
        outbound::check_transport(&url, options.insecure_http)
            .map_err(|error| misconfigured(&error.to_string()))?;
        let client = outbound::client(&options).map_err(|error| NotifyError::Misconfigured {
            channel: Channel::Sms,
            reason: error.to_string(),
        })?;
        Ok(SwitchNotifier {
            client,
            base_url: url,
            signer,
            timeout,
        })
    }
}

#[async_trait]
impl Notifier for SwitchNotifier {
    async fn send(&self, notification: &Notification) -> Result<(), NotifyError> {
        let channel = notification.channel;
        let to = notification.to.clone();
        let path = match channel {
            Channel::Sms => SMS_PATH,
            Channel::Email => EMAIL_PATH,
        };
        // The switch sends codes, in its host's words, never a provider's
        // text: a notification without its code cannot go this way.
        let Some(one_time_code) = &notification.one_time_code else {
            return Err(NotifyError::Misconfigured {
                channel,
                reason: "the switch's notification services deliver one-time codes only".into(),
            });
        };
        let Some(transaction_ref) = notification.transaction_ref.clone() else {
            return Err(NotifyError::Misconfigured {
                channel,
                reason: "a code sent through the switch must name its transaction".into(),
            });
        };
        let body = serde_json::to_vec(&NotifyRequest {
            to: to.clone(),
            kind: OTP_KIND.to_owned(),
            code: one_time_code.code.clone(),
            expires_in_secs: one_time_code.expires_in_secs,
            transaction_ref,
        });
        let misconfigured = |reason: String| NotifyError::Misconfigured { channel, reason };
        let body = body.map_err(|error| misconfigured(error.to_string()))?;
        let mut url = self.base_url.clone();
        url.set_path(&format!(
            "{}{path}",
            self.base_url.path().trim_end_matches('/')
        ));
        let signed = self
            .signer
            .sign("POST", url.path(), &body)
            .map_err(|error| misconfigured(error.to_string()))?;
        let mut request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .build()
            .map_err(|error| misconfigured(error.to_string()))?;
        signed.apply(request.headers_mut());
        let undeliverable = |reason: String| NotifyError::Undeliverable {
            channel,
            to: to.clone(),
            reason,
        };
        let response = self.client.execute(request).await.map_err(|error| {
            undeliverable(if error.is_timeout() {
                format!(
                    "the switch did not answer within {} ms",
                    self.timeout.as_millis()
                )
            } else if error.is_connect() {
                "the switch could not be reached".to_owned()
            } else {
                "the connection to the switch failed".to_owned()
            })
        })?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            return Ok(());
        }
        // The switch's messages never hold the message body; its envelope
        // says what went wrong.
        let envelope: Option<Envelope> = read_capped(response, DEFAULT_MAX_RESPONSE_BYTES)
            .await
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let (code, message, errors) = match envelope {
            Some(envelope) => {
                let data = envelope.data.unwrap_or(EnvelopeData {
                    error: None,
                    errors: None,
                });
                (
                    data.error.unwrap_or_default(),
                    envelope.message,
                    data.errors.unwrap_or_default(),
                )
            }
            None => (String::new(), String::new(), Vec::new()),
        };
        let reason = if message.is_empty() {
            format!("the switch answered HTTP {status}")
        } else {
            format!("the switch answered HTTP {status}: {message}")
        };
        Err(match (status, code.as_str()) {
            (401, _) => NotifyError::Misconfigured {
                channel,
                reason: format!(
                    "the switch refused this provider's signature (check its secret, key_id, \
                     notify = true and clock): {message}"
                ),
            },
            (400, "invalid_request") if errors.iter().any(|e| e.field == "to") => {
                NotifyError::InvalidDestination {
                    channel,
                    to,
                    reason: errors
                        .iter()
                        .filter(|e| e.field == "to")
                        .map(|e| e.message.as_str())
                        .collect::<Vec<_>>()
                        .join("; "),
                }
            }
            (400, "invalid_request") => {
                let fields: Vec<String> = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect();
                NotifyError::Refused {
                    channel,
                    to,
                    reason: format!("the switch refused the request: {}", fields.join("; ")),
                }
            }
            // A limit of the switch's, for now: the SDK keeps the code the
            // customer already holds rather than failing the transaction.
            (429, "rate_limited") => NotifyError::RateLimited {
                channel,
                to,
                limit: message,
            },
            // The switch could not get the message through its own channel.
            (502..=504, _) => NotifyError::Undeliverable {
                channel,
                to,
                reason,
            },
            _ => NotifyError::Refused {
                channel,
                to,
                reason,
            },
        })
    }
}
