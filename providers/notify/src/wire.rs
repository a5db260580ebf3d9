//! The switch's notification services on the wire: `POST /notify/sms` and
//! `POST /notify/email`, signed by the provider (RFC 9421 under the secret it
//! shares with the switch; `docs/secure.md`). The switch parses these bodies field by field (to report
//! every bad field at once); [`SwitchNotifier`](crate::SwitchNotifier) sends
//! them. Both ends take the paths, field rules and limits from here.
//!
//! Success is HTTP 200 with the switch's envelope, `"status": "Successful"`.
//! Failures are the envelope with `"status": "Failed"` and `data.error`:
//! `unauthenticated` (401), `too_many_auth_failures` (429),
//! `body_timed_out` (408), `busy` (503), `malformed_json` / `invalid_request` (400, with
//! `data.errors` naming each bad field), `body_too_large` (413),
//! `method_not_allowed` (405), `notification_failed` (502: the gateway or mail
//! server did not take the message).

use manifold_crypto::SecretString;
use serde::{Deserialize, Serialize};

pub const SMS_PATH: &str = "/notify/sms";
pub const EMAIL_PATH: &str = "/notify/email";

/// The longest SMS text accepted, in characters: ten concatenated segments.
pub const MAX_SMS_CHARS: usize = 1600;
/// The longest e-mail text accepted, in characters.
pub const MAX_EMAIL_CHARS: usize = 32 * 1024;
/// The longest e-mail subject accepted, in characters.
pub const MAX_SUBJECT_CHARS: usize = 200;

/// `POST /notify/sms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsRequest {
    /// An MSISDN ([`check_msisdn`](crate::check_msisdn)).
    pub to: String,
    /// The text, usually holding an OTP: 1 to [`MAX_SMS_CHARS`] characters.
    pub message: SecretString,
}

/// `POST /notify/email`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailRequest {
    /// A bare address ([`check_email_address`](crate::check_email_address)).
    pub to: String,
    /// One line of at most [`MAX_SUBJECT_CHARS`] characters; when absent the
    /// switch's mailer uses its default subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The text: 1 to [`MAX_EMAIL_CHARS`] characters.
    pub message: SecretString,
}
