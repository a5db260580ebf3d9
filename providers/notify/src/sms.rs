//! [`SmsGateway`]: SMS through an HTTP gateway.
//!
//! Each message is one `POST` to the configured URL with a JSON body
//!
//! ```json
//! {"to": "2348022000008", "from": "Manifold", "message": "Your code is 415933."}
//! ```
//!
//! where `message` is the host's template applied to the notification
//! (placeholders `{message}`, `{to}`, `{sender}`) and `from` (the sender id)
//! is left out when none is configured. Credentials go in the
//! `Authorization` header, as a bearer token or HTTP basic authentication.
//! Any 2xx answer means the gateway took the message; anything else, a
//! timeout or a network failure is a [`NotifyError`] whose text names the
//! HTTP status or the failure, never the body the gateway answered (it may
//! echo the message, and so the OTP). The client is
//! [`manifold_provider::outbound`]'s: redirects are not followed, so the
//! message cannot be sent somewhere the host did not configure, no proxy is
//! taken from the environment, and an `https://` gateway's certificate is
//! verified (against the host's `ca_file` too, when given). The gateway's
//! answer body is never read.

use async_trait::async_trait;
use manifold_config::{SmsCredentials, SmsGatewayConfig};
use manifold_provider::notify::{mask_destination, Channel};
use manifold_provider::outbound::{self, OutboundOptions};
use manifold_provider::{Notification, Notifier, NotifyError};
use serde::Serialize;

use crate::destination::check_msisdn;

/// The JSON body sent to the gateway.
#[derive(Serialize)]
struct GatewayRequest<'a> {
    to: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
    message: &'a str,
}

/// Sends [`Channel::Sms`] notifications to an HTTP SMS gateway.
pub struct SmsGateway {
    client: reqwest::Client,
    url: reqwest::Url,
    config: SmsGatewayConfig,
}

impl std::fmt::Debug for SmsGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config's secrets print redacted, but the URL alone says enough.
        f.debug_struct("SmsGateway")
            .field("endpoint", &self.endpoint())
            .finish()
    }
}

impl SmsGateway {
    pub fn new(config: &SmsGatewayConfig) -> Result<SmsGateway, NotifyError> {
        let misconfigured = |reason: String| NotifyError::Misconfigured {
            channel: Channel::Sms,
            reason,
        };
        let url = reqwest::Url::parse(&config.url)
            .map_err(|_| misconfigured("the gateway URL cannot be parsed".into()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(misconfigured(
                "the gateway URL must be http:// or https://".into(),
            ));
        }
        // OTP texts cross this hop: in clear only to this machine, or where
        // the host accepted it (logged as a warning).
        outbound::check_transport(&url, config.insecure_http)
            .map_err(|error| misconfigured(error.to_string()))?;
        let options =
            OutboundOptions::with_timeout(config.timeout).ca_file(config.ca_file.as_deref());
        let client =
            outbound::client(&options).map_err(|error| misconfigured(error.to_string()))?;
        Ok(SmsGateway {
            client,
            url,
            config: config.clone(),
        })
    }

    /// The gateway as it may appear in logs: scheme, host and port, without
    /// the path or query (which may carry an account id or key).
    pub fn endpoint(&self) -> String {
        endpoint(&self.url)
    }
}

fn endpoint(url: &reqwest::Url) -> String {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(host), Some(port)) => format!("{}://{host}:{port}", url.scheme()),
        _ => url.scheme().to_owned(),
    }
}

#[async_trait]
impl Notifier for SmsGateway {
    async fn send(&self, notification: &Notification) -> Result<(), NotifyError> {
        let to = notification.to.as_str();
        if notification.channel != Channel::Sms {
            return Err(NotifyError::Misconfigured {
                channel: notification.channel,
                reason: "the SMS gateway was handed a message of another channel".into(),
            });
        }
        check_msisdn(to).map_err(|reason| NotifyError::InvalidDestination {
            channel: Channel::Sms,
            to: to.to_owned(),
            reason: reason.to_owned(),
        })?;
        let sender = self.config.sender.as_deref();
        let text = self.config.template.render(&[
            ("message", notification.body.expose()),
            ("to", to),
            ("sender", sender.unwrap_or("")),
        ]);
        let request = GatewayRequest {
            to,
            from: sender,
            message: text.expose(),
        };
        let mut call = self.client.post(self.url.clone()).json(&request);
        call = match &self.config.credentials {
            SmsCredentials::None => call,
            SmsCredentials::Bearer { token } => call.bearer_auth(token.expose()),
            SmsCredentials::Basic { username, password } => {
                call.basic_auth(username, Some(password.expose()))
            }
        };
        let undeliverable = |reason: String| NotifyError::Undeliverable {
            channel: Channel::Sms,
            to: to.to_owned(),
            reason,
        };
        let response = call.send().await.map_err(|error| {
            // reqwest's own text names the URL, which may carry a key: describe
            // the failure in our words instead.
            undeliverable(if error.is_timeout() {
                format!(
                    "the gateway did not answer within {} ms",
                    self.config.timeout.as_millis()
                )
            } else if error.is_connect() {
                "the gateway could not be reached".to_owned()
            } else {
                "the connection to the gateway failed".to_owned()
            })
        })?;
        let status = response.status();
        if status.is_success() {
            tracing::info!(
                channel = %Channel::Sms,
                to = %mask_destination(Channel::Sms, to),
                gateway = %self.endpoint(),
                "SMS accepted by the gateway"
            );
            return Ok(());
        }
        let hint = match status.as_u16() {
            401 | 403 => " (check the gateway credentials)",
            300..=399 => " (a redirect, which is not followed; check the gateway URL)",
            _ => "",
        };
        Err(NotifyError::Refused {
            channel: Channel::Sms,
            to: to.to_owned(),
            reason: format!("the gateway answered HTTP {}{hint}", status.as_u16()),
        })
    }
}
