//! The `provider_response_code`s the SDK itself answers with.
//!
//! A connector chooses its own codes for upstream outcomes; these cover the
//! conversation the SDK runs around them. Seed 003 uses `00` and `900T0`.

pub const APPROVED: &str = "00";
/// An OTP was sent; the transaction is `WaitingForOTP`.
pub const OTP_SENT: &str = "900T0";
pub const WRONG_OTP: &str = "900T1";
pub const OTP_ATTEMPTS_EXHAUSTED: &str = "900T2";
pub const OTP_EXPIRED: &str = "900T3";
/// A resend was asked for too soon or too often; the current code stays valid.
pub const RESEND_REFUSED: &str = "900T4";
/// No code could be sent: the destination or the app reached its hourly
/// send limit. The transaction is cancelled (a first code) or keeps its
/// current code (a resend).
pub const OTP_SEND_LIMIT: &str = "900T5";
/// The customer's answer to a `PendingValidation` prompt was not accepted.
pub const WRONG_ANSWER: &str = "900V1";
pub const ANSWER_ATTEMPTS_EXHAUSTED: &str = "900V2";
pub const ANSWER_EXPIRED: &str = "900V3";
/// The validate input does not fit what the transaction waits for (an
/// answer to an OTP, a resend to a prompt).
pub const WRONG_INPUT: &str = "900V4";
/// The OTP could not be delivered, or there was nowhere to deliver it.
pub const UNDELIVERABLE: &str = "91";
/// The transaction is not one this provider serves.
pub const INVALID_TRANSACTION: &str = "12";
/// A reversal was refused.
pub const NOT_REVERSIBLE: &str = "R1";
