//! The notification services the switch offers provider microservices.
//!
//! Seed 003's "Send SMS and Send Email services": a provider that does not
//! run its own SMS gateway or SMTP client sends `POST /notify/sms` or
//! `POST /notify/email` ([`manifold_notify::wire`]) with the `notify_key` the
//! host set on its `[[providers]]` entry, and the switch sends the message
//! through its own [`Dispatcher`](manifold_notify::Dispatcher) — the same
//! notifier its in-process providers use. [`NotifyService`] owns the key
//! table and the request checks; [`crate::http`] routes the paths and turns
//! a [`NotifyServiceError`] into a status and an envelope.
//!
//! Keys are looked up by their SHA-256 digest, like app keys. The message
//! body becomes a [`SecretString`] as soon as it is parsed and is never logged;
//! logs name the provider, the channel and the masked destination.

use std::collections::HashMap;
use std::sync::Arc;

use manifold_config::{ProviderConfig, ProviderEndpoint};
use manifold_crypto::SecretString;
use manifold_notify::wire::{MAX_EMAIL_CHARS, MAX_SMS_CHARS, MAX_SUBJECT_CHARS};
use manifold_notify::{check_email_address, check_msisdn};
use manifold_provider::notify::{mask_destination, Channel};
use manifold_provider::{Notification, Notifier, NotifyError};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::FieldError;

/// Everything that can go wrong with a notification service call.
#[derive(Debug, thiserror::Error)]
pub enum NotifyServiceError {
    #[error("missing or unknown notify_key: send `Authorization: Bearer <notify_key>`")]
    Unauthenticated,
    #[error("{0} is not allowed here; use POST")]
    MethodNotAllowed(String),
    #[error("the request body is larger than the switch accepts")]
    BodyTooLarge,
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the request has {} invalid field(s)", .0.len())]
    InvalidFields(Vec<FieldError>),
    /// The channel did not take the message; the text never holds the body.
    #[error("{0}")]
    NotificationFailed(NotifyError),
}

/// The provider keys and the notifier behind `/notify/*`.
pub struct NotifyService {
    /// SHA-256 of each `notify_key` → the provider's name.
    providers_by_key: HashMap<[u8; 32], String>,
    notifier: Arc<dyn Notifier>,
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl NotifyService {
    /// Every remote provider with a `notify_key` may use the services.
    pub fn new(providers: &[ProviderConfig], notifier: Arc<dyn Notifier>) -> NotifyService {
        let providers_by_key = providers
            .iter()
            .filter(|p| matches!(p.endpoint, ProviderEndpoint::Remote { .. }))
            .filter_map(|p| {
                p.notify_key
                    .as_ref()
                    .map(|key| (digest(key.expose()), p.name.clone()))
            })
            .collect();
        NotifyService {
            providers_by_key,
            notifier,
        }
    }

    /// The provider whose key is in an `Authorization: Bearer <key>` value.
    pub fn authenticate(&self, authorization: Option<&str>) -> Option<&str> {
        let (scheme, key) = authorization?.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        self.providers_by_key
            .get(&digest(key.trim()))
            .map(String::as_str)
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
            Err(error) => {
                tracing::warn!(provider, %error, "notification for a provider failed");
                Err(NotifyServiceError::NotificationFailed(error))
            }
        }
    }
}

/// Takes the request apart field by field, reporting every bad field at once.
fn parse(channel: Channel, body: &[u8]) -> Result<Notification, NotifyServiceError> {
    let root: Value = serde_json::from_slice(body).map_err(|error| {
        NotifyServiceError::MalformedJson(manifold_provider::server::describe_json_error(&error))
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
    fn keys_are_matched_by_digest_for_remote_providers_only() {
        let text = r#"
            listen = "127.0.0.1:0"
            [storage]
            path = "unused"
            [[providers]]
            name = "bank-a"
            mode = "remote"
            url = "http://127.0.0.1:9"
            services = ["get_balance"]
            notify_key = "bank-a-notify-key-0123456789"
            [[providers]]
            name = "bank-b"
            mode = "remote"
            url = "http://127.0.0.1:9"
            services = ["get_balance"]
        "#;
        let config =
            manifold_config::SwitchConfig::from_toml(text, std::path::Path::new("t.toml")).unwrap();
        let service = NotifyService::new(
            &config.providers,
            Arc::new(manifold_provider::notify::OutboxNotifier::new("unused")),
        );
        assert_eq!(
            service.authenticate(Some("Bearer bank-a-notify-key-0123456789")),
            Some("bank-a")
        );
        assert_eq!(
            service.authenticate(Some("bearer  bank-a-notify-key-0123456789 ")),
            Some("bank-a")
        );
        for wrong in [
            None,
            Some(""),
            Some("bank-a-notify-key-0123456789"),
            Some("Basic bank-a-notify-key-0123456789"),
            Some("Bearer bank-a-notify-key-012345678"),
            Some("Bearer "),
        ] {
            assert_eq!(service.authenticate(wrong), None, "{wrong:?}");
        }
    }
}
