//! The switch's notification services on the wire: `POST /notify/sms` and
//! `POST /notify/email`, signed by the provider (RFC 9421 under the secret it
//! shares with the switch; `docs/secure.md`). The switch parses these bodies field by field (to report
//! every bad field at once); [`SwitchNotifier`](crate::SwitchNotifier) sends
//! them. Both ends take the paths, field rules and limits from here.
//!
//! Success is HTTP 200 with the switch's envelope, `"status": "Successful"`.
//! Failures are the envelope with `"status": "Failed"` and `data.error`:
//! `unauthenticated` (401), `too_many_auth_failures` (429), `rate_limited`
//! (429: the destination had its hour's codes),
//! `body_timed_out` (408), `busy` (503), `malformed_json` / `invalid_request` (400, with
//! `data.errors` naming each bad field), `body_too_large` (413),
//! `method_not_allowed` (405), `notification_failed` (502: the gateway or mail
//! server did not take the message).

use manifold_crypto::SecretString;
use serde::{Deserialize, Serialize};

pub const SMS_PATH: &str = "/notify/sms";
pub const EMAIL_PATH: &str = "/notify/email";

/// The one kind of message a provider may have the switch send: a
/// one-time code for one of its transactions.
pub const OTP_KIND: &str = "otp";
/// The fewest and most digits a one-time code may have.
pub const CODE_DIGITS: std::ops::RangeInclusive<usize> = 4..=10;
/// The longest lifetime a code may be announced with, in seconds.
pub const MAX_EXPIRES_IN_SECS: u64 = 3600;

/// `POST /notify/sms` and `POST /notify/email`: deliver a one-time code.
///
/// There is no text to send: the switch says it in its host's words (the
/// `[notifications]` templates), so a provider's key cannot make the switch
/// send anything but a code, and only about one of its transactions. A
/// body with `message` or `subject` is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyRequest {
    /// An MSISDN for SMS ([`check_msisdn`](crate::check_msisdn)), a bare
    /// address for e-mail ([`check_email_address`](crate::check_email_address)).
    pub to: String,
    /// [`OTP_KIND`].
    pub kind: String,
    /// The code: digits only, [`CODE_DIGITS`] of them.
    pub code: SecretString,
    /// How long the code can be used: 1 to [`MAX_EXPIRES_IN_SECS`].
    pub expires_in_secs: u64,
    /// The provider's transaction the code confirms.
    pub transaction_ref: String,
}
