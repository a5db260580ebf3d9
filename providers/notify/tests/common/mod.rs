//! Shared by the notification tests: configuration from TOML, as a host writes it.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use manifold_config::{NotificationsConfig, SwitchConfig};
use manifold_crypto::SecretString;
use manifold_provider::notify::Channel;
use manifold_provider::Notification;

/// Bounds waits so a broken peer fails a test instead of hanging it.
pub const LIMIT: Duration = Duration::from_secs(20);

pub const OTP: &str = "415933";
pub const MSISDN: &str = "2348022000008";
pub const EMAIL: &str = "uju@example.com";

/// `[notifications]` tables (`snippet`) parsed and validated by manifold-config.
pub fn notifications(storage: &Path, snippet: &str) -> NotificationsConfig {
    let text = format!(
        "listen = \"127.0.0.1:0\"\n[data_at_rest]\nkey_id = \"test\"\nkey = \"5c582bd6a482c1304683245d9dc030ad30b3268fa79dd91cd641661d4a4cdb87\"\n[storage]\npath = {:?}\n{snippet}",
        storage.display().to_string()
    );
    SwitchConfig::from_toml(&text, Path::new("notify-test.toml"))
        .unwrap_or_else(|error| panic!("{error}"))
        .notifications
}

pub fn otp_body() -> SecretString {
    SecretString::new(format!("Your code is {OTP}."))
}

pub fn sms(to: &str) -> Notification {
    Notification {
        channel: Channel::Sms,
        to: to.to_owned(),
        subject: Some("Your one-time code".into()),
        body: otp_body(),
        transaction_ref: None,
        one_time_code: None,
    }
}

pub fn email(to: &str) -> Notification {
    Notification {
        channel: Channel::Email,
        to: to.to_owned(),
        subject: Some("Your one-time code".into()),
        body: otp_body(),
        transaction_ref: None,
        one_time_code: None,
    }
}

/// Asserts that neither the text nor the debug form of `error` carries the
/// OTP or the destination in clear.
pub fn assert_discreet(error: &manifold_provider::NotifyError, to: &str) {
    for shown in [error.to_string(), format!("{error:?}")] {
        assert!(!shown.contains(OTP), "the OTP leaked: {shown}");
    }
    assert!(
        !error.to_string().contains(to),
        "the destination is not masked: {error}"
    );
}
