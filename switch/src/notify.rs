//! The notification services the switch offers provider microservices.
//!
//! Seed 003's "Send SMS and Send Email services": a provider that does not
//! run its own SMS gateway or SMTP client sends `POST /notify/sms` or
//! `POST /notify/email` ([`manifold_notify::wire`]), signed (RFC 9421) with
//! the secret and `key_id` of its `[[providers]]` entry, which must also say
//! `notify = true`. A provider asks for a one-time code for one of its
//! transactions, never a text: the switch words it in the host's templates
//! (`[notifications] otp_text`, `otp_subject`), limits the codes one
//! destination gets in an hour, and sends it through its own
//! [`Dispatcher`](manifold_notify::Dispatcher) — the same notifier its
//! in-process providers use. [`NotifyService`] owns the key
//! table and the request checks; [`crate::http`] routes the paths and turns
//! a [`NotifyServiceError`] into a status and an envelope.
//!
//! The signature is checked before the body is parsed, and each nonce is
//! remembered for the signature window, so a captured call cannot be sent
//! again ([`manifold_provider::hop`]). The code becomes a [`SecretString`] as soon as it is parsed and is never logged;
//! logs name the provider, the channel and the masked destination.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use manifold_config::{NotificationsConfig, OtpMessages, ProviderConfig, ProviderEndpoint};
use manifold_crypto::message_signature::claimed_key_id;
use manifold_crypto::SecretString;
use manifold_edge::signature::SignatureRejected;
use manifold_notify::wire::{CODE_DIGITS, MAX_EXPIRES_IN_SECS, OTP_KIND};
use manifold_notify::{check_email_address, check_msisdn};
use manifold_provider::hop::HopVerifier;
use manifold_provider::hourly::{destination_key, retry_after_secs, HourlyLimit};
use manifold_provider::json::{self, JsonError};
use manifold_provider::notify::{mask_destination, Channel};
use manifold_provider::{Notification, Notifier, NotifyError};
use serde_json::Value;

use crate::envelope::{is_reference, MAX_REF_LEN, REPEATED_KEY};
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
    /// The destination, or the calling provider, had its hour's codes.
    #[error("{limit} is reached; retry in {retry_after_secs} s")]
    HourlyLimit {
        /// The limit in words, the destination masked.
        limit: String,
        retry_after_secs: u64,
    },
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
    /// The host's words for a code.
    messages: OtpMessages,
    /// Codes to one destination in an hour, whichever provider asks.
    per_destination: HourlyLimit,
    /// Codes one provider may have sent in an hour, to anybody: what stops
    /// a provider's key from texting a different number every time.
    per_provider: HourlyLimit,
}

impl NotifyService {
    /// Every remote provider whose entry says `notify = true` may use the
    /// services; `max_skew` is the signature window.
    pub fn new(
        providers: &[ProviderConfig],
        notifications: &NotificationsConfig,
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
            messages: notifications.otp.clone(),
            per_destination: HourlyLimit::new(notifications.max_per_destination_per_hour),
            per_provider: HourlyLimit::new(notifications.max_per_provider_per_hour),
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

    /// Checks `body` for `channel`, words the code in the host's template
    /// and sends it; `provider` is the caller, named in the message and the
    /// log.
    pub async fn send(
        &self,
        provider: &str,
        channel: Channel,
        body: &[u8],
    ) -> Result<(), NotifyServiceError> {
        let request = parse(channel, body)?;
        let masked = mask_destination(channel, &request.to);
        // The provider's own limit first, so a provider over it spends no
        // destination's allowance.
        if let Err(wait) = self.per_provider.take(provider) {
            return Err(NotifyServiceError::HourlyLimit {
                limit: format!(
                    "provider `{provider}`'s limit of {} codes an hour",
                    self.per_provider.per_hour()
                ),
                retry_after_secs: retry_after_secs(wait),
            });
        }
        if let Err(wait) = self
            .per_destination
            .take(&destination_key(channel, &request.to))
        {
            return Err(NotifyServiceError::HourlyLimit {
                limit: format!(
                    "the limit of {} codes an hour to {masked}",
                    self.per_destination.per_hour()
                ),
                retry_after_secs: retry_after_secs(wait),
            });
        }
        let notification = self.word(provider, channel, request);
        match self.notifier.send(&notification).await {
            Ok(()) => {
                tracing::info!(provider, %channel, to = %masked, "notification sent for a provider");
                Ok(())
            }
            // Logged once, with the error id of the answer, by `crate::http`.
            Err(error) => Err(NotifyServiceError::NotificationFailed(error)),
        }
    }

    /// The notification the host's templates make of a request.
    fn word(&self, provider: &str, channel: Channel, request: CodeRequest) -> Notification {
        let minutes = request.expires_in_secs.div_ceil(60).max(1).to_string();
        let values = [
            ("provider", provider),
            ("code", request.code.expose()),
            ("minutes", minutes.as_str()),
        ];
        let subject = match channel {
            Channel::Sms => None,
            Channel::Email => Some(self.messages.subject.render(&values).expose().to_owned()),
        };
        Notification {
            channel,
            to: request.to,
            subject,
            body: self.messages.text.render(&values),
            transaction_ref: Some(request.transaction_ref),
            one_time_code: None,
        }
    }
}

/// A `/notify/*` request, checked. The code is a [`SecretString`], so it
/// never prints.
#[derive(Debug)]
struct CodeRequest {
    to: String,
    code: SecretString,
    expires_in_secs: u64,
    transaction_ref: String,
}

/// Why a field with free text is refused.
const NO_FREE_TEXT: &str = "the switch sends no provider's text: ask for a code (`kind`, `code`, `expires_in_secs`, `transaction_ref`), which the host's template words";

/// Takes the request apart field by field, reporting every bad field at once.
/// A key given twice is refused as in an app's envelope
/// ([`crate::envelope::parse_json`]): the signature covers bytes that must
/// mean one message to one destination.
fn parse(channel: Channel, body: &[u8]) -> Result<CodeRequest, NotifyServiceError> {
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

    for free_text in ["message", "subject"] {
        if fields.contains_key(free_text) {
            errors.push(FieldError::new(free_text, NO_FREE_TEXT));
        }
    }
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
    if let Some(kind) = string("kind", &mut errors) {
        if kind != OTP_KIND {
            errors.push(FieldError::new(
                "kind",
                format!("must be \"{OTP_KIND}\", the one kind of message the switch sends"),
            ));
        }
    }
    // The code goes into a SecretString at once and is never quoted.
    let code = string("code", &mut errors).map(SecretString::new);
    if let Some(code) = &code {
        let digits = code.expose();
        if !CODE_DIGITS.contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            errors.push(FieldError::new(
                "code",
                format!(
                    "must be {} to {} digits",
                    CODE_DIGITS.start(),
                    CODE_DIGITS.end()
                ),
            ));
        }
    }
    let expires_in_secs = match fields.get("expires_in_secs").and_then(Value::as_u64) {
        Some(secs) if (1..=MAX_EXPIRES_IN_SECS).contains(&secs) => Some(secs),
        _ => {
            errors.push(FieldError::new(
                "expires_in_secs",
                format!("must be a whole number of seconds from 1 to {MAX_EXPIRES_IN_SECS}"),
            ));
            None
        }
    };
    let transaction_ref = string("transaction_ref", &mut errors);
    if let Some(reference) = &transaction_ref {
        if !is_reference(reference) {
            errors.push(FieldError::new(
                "transaction_ref",
                format!("must be 1 to {MAX_REF_LEN} printable ASCII characters without spaces"),
            ));
        }
    }

    match (to, code, expires_in_secs, transaction_ref) {
        (Some(to), Some(code), Some(expires_in_secs), Some(transaction_ref))
            if errors.is_empty() =>
        {
            Ok(CodeRequest {
                to,
                code,
                expires_in_secs,
                transaction_ref,
            })
        }
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

    const GOOD: &str = r#"{"to":"2348022000008","kind":"otp","code":"415933","expires_in_secs":300,"transaction_ref":"t-1","extra":1}"#;

    #[test]
    fn good_requests_parse_and_are_worded_by_the_host() {
        let request = parse(Channel::Sms, GOOD.as_bytes()).unwrap();
        assert_eq!(request.to, "2348022000008");
        assert_eq!(request.code.expose(), "415933");
        let config = manifold_config::SwitchConfig::from_toml(
            "listen = \"127.0.0.1:0\"\n[data_at_rest]\nkey_id = \"test\"\nkey = \"5c582bd6a482c1304683245d9dc030ad30b3268fa79dd91cd641661d4a4cdb87\"\n[storage]\npath = \"unused\"\n[notifications]\n\
             otp_text = \"{provider}: {code} ({minutes} min)\"\notp_subject = \"{provider} code\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let service = NotifyService::new(
            &config.providers,
            &config.notifications,
            Arc::new(manifold_provider::notify::OutboxNotifier::new("unused")),
            Duration::from_secs(60),
        );
        let sms = service.word("bank-a", Channel::Sms, request);
        assert_eq!(sms.body.expose(), "bank-a: 415933 (5 min)");
        assert_eq!(sms.subject, None);
        assert_eq!(sms.transaction_ref.as_deref(), Some("t-1"));
        let email = parse(
            Channel::Email,
            GOOD.replace("2348022000008", "uju@example.com").as_bytes(),
        )
        .unwrap();
        let email = service.word("bank-a", Channel::Email, email);
        assert_eq!(email.subject.as_deref(), Some("bank-a code"));
    }

    #[test]
    fn free_text_and_every_bad_field_are_refused_by_name() {
        assert_eq!(
            fields_of(Channel::Sms, "{}"),
            ["to", "kind", "code", "expires_in_secs", "transaction_ref"]
        );
        assert_eq!(
            fields_of(
                Channel::Email,
                r#"{"to":"uju@example.com","subject":"Hi","message":"Click here","kind":"otp","code":"415933","expires_in_secs":300,"transaction_ref":"t-1"}"#
            ),
            ["message", "subject"]
        );
        assert_eq!(
            fields_of(
                Channel::Sms,
                r#"{"to":"uju@example.com","kind":"promo","code":"4159x3","expires_in_secs":0,"transaction_ref":"t 1"}"#
            ),
            ["to", "kind", "code", "expires_in_secs", "transaction_ref"]
        );
        assert_eq!(
            fields_of(
                Channel::Sms,
                r#"{"to":"2348022000008","kind":"otp","code":"12345678901","expires_in_secs":3601,"transaction_ref":"t-1"}"#
            ),
            ["code", "expires_in_secs"]
        );
    }

    #[test]
    fn a_repeated_key_is_refused_and_named() {
        assert_eq!(
            fields_of(
                Channel::Sms,
                r#"{"to":"2348022000008","code":"415933","to":"2348099999999"}"#
            ),
            ["to"]
        );
        assert_eq!(
            fields_of(
                Channel::Email,
                r#"{"to":"uju@example.com","code":"415933","extra":{"a":1,"a":2}}"#
            ),
            ["extra.a"]
        );
    }

    #[test]
    fn malformed_bodies_never_quote_the_input() {
        for body in [
            &b"[1]"[..],
            b"not json",
            br#"{"to": "2348022000008", "code": "415933"#,
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
            [data_at_rest]
            key_id = "test"
            key = "5c582bd6a482c1304683245d9dc030ad30b3268fa79dd91cd641661d4a4cdb87"
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
            &config.notifications,
            Arc::new(manifold_provider::notify::OutboxNotifier::new("unused")),
            Duration::from_secs(60),
        );
        let body = GOOD.as_bytes();
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
