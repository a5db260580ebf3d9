//! The notification services the switch offers provider microservices.
//!
//! Seed 003's "Send SMS and Send Email services": a provider that does not
//! run its own SMS gateway or SMTP client sends `POST /notify/sms` or
//! `POST /notify/email` ([`manifold_notify::wire`]), signed (RFC 9421) with
//! the secret and `key_id` of its `[[providers]]` entry, which must also say
//! `notify = true`; the switch sends the message
//! through its own [`Dispatcher`](manifold_notify::Dispatcher) — the same
//! notifier its in-process providers use. [`NotifyService`] owns the key
//! table and the request checks; [`crate::http`] routes the paths and turns
//! a [`NotifyServiceError`] into a status and an envelope.
//!
//! The signature is checked before the body is parsed, and each nonce is
//! remembered for the signature window, so a captured call cannot be sent
//! again ([`manifold_provider::hop`]). The message body becomes a [`SecretString`] as soon as it is parsed and is never logged;
//! logs name the provider, the channel and the masked destination.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use manifold_config::{ProviderConfig, ProviderEndpoint};
use manifold_crypto::message_signature::claimed_key_id;
use manifold_crypto::SecretString;
use manifold_edge::signature::SignatureRejected;
use manifold_notify::wire::{MAX_EMAIL_CHARS, MAX_SMS_CHARS, MAX_SUBJECT_CHARS};
use manifold_notify::{check_email_address, check_msisdn};
use manifold_provider::hop::HopVerifier;
use manifold_provider::json::{self, JsonError};
use manifold_provider::notify::{mask_destination, Channel};
use manifold_provider::{Notification, Notifier, NotifyError};
use serde_json::Value;

use crate::envelope::REPEATED_KEY;
use crate::error::FieldError;

/// Everything that can go wrong with a notification service call.
#[derive(Debug, thiserror::Error)]
pub enum NotifyServiceError {
    #[error("the call is not signed by a provider allowed to send notifications: {0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Busy(String),
    #[error("{0} is not allowed here; use POST")]
    MethodNotAllowed(String),
    #[error("the request body is larger than the switch accepts")]
    BodyTooLarge,
    #[error("the request body did not arrive in time")]
    BodyTimedOut,
    #[error("too many failed authentications from this address; retry in {retry_after_secs} s")]
    TooManyAuthFailures { retry_after_secs: u64 },
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the request has {} invalid field(s)", .0.len())]
    InvalidFields(Vec<FieldError>),
    /// The channel did not take the message; the text never holds the body.
    #[error("{0}")]
    NotificationFailed(NotifyError),
}

/// A provider a `/notify/*` request claims to come from, not yet proven.
pub struct NotifyCaller<'a> {
    provider: &'a str,
    verifier: &'a HopVerifier,
}

impl<'a> NotifyCaller<'a> {
    /// The provider, once its signature over exactly these bytes is checked
    /// (and its nonce not seen before); the body is not parsed before this.
    pub fn verify(
        self,
        method: &str,
        path: &str,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Result<&'a str, NotifyServiceError> {
        match self.verifier.verify(method, path, headers, body) {
            Ok(_) => Ok(self.provider),
            Err(error @ SignatureRejected::ReplayGuardFull) => {
                Err(NotifyServiceError::Busy(error.to_string()))
            }
            Err(error) => Err(NotifyServiceError::Unauthenticated(error.to_string())),
        }
    }
}

/// The provider keys and the notifier behind `/notify/*`.
pub struct NotifyService {
    /// `key_id` → the provider's name and the verifier of its signatures.
    providers_by_key_id: HashMap<String, (String, HopVerifier)>,
    notifier: Arc<dyn Notifier>,
}

impl NotifyService {
    /// Every remote provider whose entry says `notify = true` may use the
    /// services; `max_skew` is the signature window.
    pub fn new(
        providers: &[ProviderConfig],
        notifier: Arc<dyn Notifier>,
        max_skew: Duration,
    ) -> NotifyService {
        let providers_by_key_id = providers
            .iter()
            .filter_map(|p| match &p.endpoint {
                ProviderEndpoint::Remote(remote) if remote.notify => Some((
                    remote.key_id.clone(),
                    (
                        p.name.clone(),
                        HopVerifier::new(&remote.secret, &remote.key_id, max_skew),
                    ),
                )),
                _ => None,
            })
            .collect();
        NotifyService {
            providers_by_key_id,
            notifier,
        }
    }

    /// The provider a request claims to come from (its signature's
    /// `keyid`), if that is a provider allowed to send notifications. Nothing
    /// is proven yet: this only lets a stranger be refused before the switch
    /// reads a body for it.
    pub fn claimed_caller(
        &self,
        headers: &http::HeaderMap,
    ) -> Result<NotifyCaller<'_>, NotifyServiceError> {
        let unauthenticated = |reason: String| NotifyServiceError::Unauthenticated(reason);
        let key_id = claimed_key_id(headers).map_err(|error| unauthenticated(error.to_string()))?;
        match self.providers_by_key_id.get(&key_id) {
            Some((provider, verifier)) => Ok(NotifyCaller { provider, verifier }),
            None => Err(unauthenticated(
                "its keyid is not a provider with notify = true".into(),
            )),
        }
    }

    /// Checks `body` for `channel` and sends it; `provider` is the caller,
    /// for the log.
    pub async fn send(
        &self,
        provider: &str,
        channel: Channel,
        body: &[u8],
    ) -> Result<(), NotifyServiceError> {
        let notification = parse(channel, body)?;
        let masked = mask_destination(channel, &notification.to);
        match self.notifier.send(&notification).await {
            Ok(()) => {
                tracing::info!(provider, %channel, to = %masked, "notification sent for a provider");
                Ok(())
            }
            // Logged once, with the error id of the answer, by `crate::http`.
            Err(error) => Err(NotifyServiceError::NotificationFailed(error)),
        }
    }
}

/// Takes the request apart field by field, reporting every bad field at once.
/// A key given twice is refused as in an app's envelope
/// ([`crate::envelope::parse_json`]): the signature covers bytes that must
/// mean one message to one destination.
fn parse(channel: Channel, body: &[u8]) -> Result<Notification, NotifyServiceError> {
    let root = json::from_slice(body).map_err(|error| match error {
        JsonError::DuplicateKey { path } => {
            NotifyServiceError::InvalidFields(vec![FieldError::new(path, REPEATED_KEY)])
        }
        syntax @ JsonError::Syntax(_) => NotifyServiceError::MalformedJson(syntax.to_string()),
    })?;
    let Value::Object(fields) = root else {
        return Err(NotifyServiceError::MalformedJson(
            "the body must be a JSON object".into(),
        ));
    };
    let mut errors = Vec::new();
    let string = |name: &str, errors: &mut Vec<FieldError>| string_field(&fields, name, errors);

    let to = string("to", &mut errors);
    if let Some(to) = &to {
        let checked = match channel {
            Channel::Sms => check_msisdn(to),
            Channel::Email => check_email_address(to),
        };
        if let Err(rule) = checked {
            errors.push(FieldError::new("to", rule));
        }
    }
    let subject = match channel {
        Channel::Sms => None,
        Channel::Email => match fields.get("subject") {
            None | Some(Value::Null) => None,
            Some(_) => string("subject", &mut errors),
        },
    };
    if let Some(subject) = &subject {
        if subject.chars().count() > MAX_SUBJECT_CHARS || subject.chars().any(char::is_control) {
            errors.push(FieldError::new(
                "subject",
                format!("must be one line of at most {MAX_SUBJECT_CHARS} characters"),
            ));
        }
    }
    // The message usually holds an OTP: into a SecretString at once, and
    // never quoted in an error.
    let message = string("message", &mut errors).map(SecretString::new);
    let max = match channel {
        Channel::Sms => MAX_SMS_CHARS,
        Channel::Email => MAX_EMAIL_CHARS,
    };
    if let Some(message) = &message {
        if message.expose().chars().count() > max {
            errors.push(FieldError::new(
                "message",
                format!("must be at most {max} characters"),
            ));
        }
    }

    match (to, message) {
        (Some(to), Some(body)) if errors.is_empty() => Ok(Notification {
            channel,
            to,
            subject,
            body,
            transaction_ref: None,
        }),
        _ => Err(NotifyServiceError::InvalidFields(errors)),
    }
}

/// A required, non-blank string member; `None` (and an error) otherwise.
fn string_field(
    fields: &serde_json::Map<String, Value>,
    name: &str,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match fields.get(name) {
        None | Some(Value::Null) => {
            errors.push(FieldError::new(name, "is required"));
            None
        }
        Some(Value::String(text)) if text.trim().is_empty() => {
            errors.push(FieldError::new(name, "must not be empty"));
            None
        }
        Some(Value::String(text)) => Some(text.clone()),
        Some(_) => {
            errors.push(FieldError::new(name, "must be a string"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields_of(channel: Channel, body: &str) -> Vec<String> {
        match parse(channel, body.as_bytes()) {
            Err(NotifyServiceError::InvalidFields(errors)) => {
                errors.into_iter().map(|e| e.field).collect()
            }
            other => panic!("{body}: expected field errors, got {other:?}"),
        }
    }

    #[test]
    fn good_requests_parse() {
        let sms = parse(
            Channel::Sms,
            br#"{"to":"2348022000008","message":"Code 415933","extra":1}"#,
        )
        .unwrap();
        assert_eq!(sms.channel, Channel::Sms);
        assert_eq!(sms.to, "2348022000008");
        assert_eq!(sms.subject, None);
        assert_eq!(sms.body.expose(), "Code 415933");

        let email = parse(
            Channel::Email,
            br#"{"to":"uju@example.com","subject":"Your code","message":"Code 415933"}"#,
        )
        .unwrap();
        assert_eq!(email.subject.as_deref(), Some("Your code"));
        let email = parse(
            Channel::Email,
            br#"{"to":"uju@example.com","subject":null,"message":"x"}"#,
        )
        .unwrap();
        assert_eq!(email.subject, None);
    }

    #[test]
    fn every_bad_field_is_named() {
        assert_eq!(fields_of(Channel::Sms, "{}"), ["to", "message"]);
        assert_eq!(
            fields_of(Channel::Sms, r#"{"to":"uju@example.com","message":7}"#),
            ["to", "message"]
        );
        assert_eq!(
            fields_of(Channel::Email, r#"{"to":"2348022000008","message":" "}"#),
            ["to", "message"]
        );
        assert_eq!(
            fields_of(
                Channel::Email,
                r#"{"to":"uju@example.com","subject":"a\nBcc: b@example.com","message":"x"}"#
            ),
            ["subject"]
        );
        let long = "x".repeat(MAX_SMS_CHARS + 1);
        assert_eq!(
            fields_of(
                Channel::Sms,
                &format!(r#"{{"to":"2348022000008","message":"{long}"}}"#)
            ),
            ["message"]
        );
    }

    #[test]
    fn a_repeated_key_is_refused_and_named() {
        assert_eq!(
            fields_of(
                Channel::Sms,
                r#"{"to":"2348022000008","message":"x","to":"2348099999999"}"#
            ),
            ["to"]
        );
        assert_eq!(
            fields_of(
                Channel::Email,
                r#"{"to":"uju@example.com","message":"x","extra":{"a":1,"a":2}}"#
            ),
            ["extra.a"]
        );
    }

    #[test]
    fn malformed_bodies_never_quote_the_input() {
        for body in [
            &b"[1]"[..],
            b"not json",
            br#"{"to": "2348022000008", "message": "415933"#,
        ] {
            match parse(Channel::Sms, body) {
                Err(NotifyServiceError::MalformedJson(reason)) => {
                    assert!(!reason.contains("415933"), "{reason}")
                }
                other => panic!("expected malformed JSON, got {other:?}"),
            }
        }
    }

    #[test]
    fn only_remote_providers_with_notify_may_sign_for_the_services() {
        let text = r#"
            listen = "127.0.0.1:0"
            [storage]
            path = "unused"
            [[providers]]
            name = "bank-a"
            mode = "remote"
            url = "http://127.0.0.1:9"
            services = ["get_balance"]
            secret = "bank-a-hop-secret-0123456789-abcdefgh"
            notify = true
            [[providers]]
            name = "bank-b"
            mode = "remote"
            url = "http://127.0.0.1:9"
            services = ["get_balance"]
            secret = "bank-b-hop-secret-0123456789-abcdefgh"
        "#;
        let config =
            manifold_config::SwitchConfig::from_toml(text, std::path::Path::new("t.toml")).unwrap();
        let service = NotifyService::new(
            &config.providers,
            Arc::new(manifold_provider::notify::OutboxNotifier::new("unused")),
            Duration::from_secs(60),
        );
        let body = br#"{"to": "2348022000008", "message": "hello"}"#;
        let authenticate = |service: &NotifyService, headers: &http::HeaderMap| {
            service
                .claimed_caller(headers)?
                .verify("POST", "/notify/sms", headers, body)
                .map(str::to_owned)
        };
        let signed = |secret: &str, key_id: &str, path: &str| {
            let mut headers = http::HeaderMap::new();
            manifold_provider::HopSigner::new(&SecretString::from(secret), key_id)
                .sign("POST", path, body)
                .unwrap()
                .apply(&mut headers);
            headers
        };
        let good = signed(
            "bank-a-hop-secret-0123456789-abcdefgh",
            "bank-a",
            "/notify/sms",
        );
        assert_eq!(authenticate(&service, &good).unwrap(), "bank-a");
        // The same request again is a replay.
        assert!(matches!(
            authenticate(&service, &good),
            Err(NotifyServiceError::Unauthenticated(reason)) if reason.contains("already received")
        ));
        let refused = [
            // bank-b has no notify = true.
            signed(
                "bank-b-hop-secret-0123456789-abcdefgh",
                "bank-b",
                "/notify/sms",
            ),
            // bank-b's secret under bank-a's key id.
            signed(
                "bank-b-hop-secret-0123456789-abcdefgh",
                "bank-a",
                "/notify/sms",
            ),
            // Signed for the other service.
            signed(
                "bank-a-hop-secret-0123456789-abcdefgh",
                "bank-a",
                "/notify/email",
            ),
            http::HeaderMap::new(),
        ];
        for headers in refused {
            assert!(matches!(
                authenticate(&service, &headers),
                Err(NotifyServiceError::Unauthenticated(_))
            ));
        }
    }
}
