//! `mock_mode: inspect`: realistic sample answers that touch no provider.
//!
//! Apps use inspect mode to build their integration before going live. The
//! request is checked exactly like a live one (key, fields, routing, limits,
//! `auth.secure`), so an app also learns whether its encryption is right; only
//! the provider call is replaced by a sample, and nothing is recorded as a
//! transaction. Every sample says so in `message` and in `data.mock_mode`.

use manifold_provider::{ProviderReply, Status};
use serde_json::{json, Value};

use crate::envelope::ResponseEnvelope;

const NOTICE: &str =
    "Inspect mode: this is a sample response; no provider was called and nothing was recorded";

fn sample_response(request_type: &str, transaction_ref: &str, amount: u64) -> Value {
    match request_type {
        "get_balance" => json!({
            "account_id": "50617644717007",
            "account_type": "Current",
            // Masked as a live answer's account numbers should be: an app
            // building against the sample must not learn to expect them whole.
            "account_number": "******0766",
            "avialable_balance": 2077099,
            "ledger_balance": 2077099,
            "minimum_balance": 0,
            "account_class": "STFCUR",
            "account_status": "ACCOUNT OPEN",
            "currency": "NGN",
            "reference": format!("INSPECT-{transaction_ref}"),
            "meta": {}
        }),
        "transfer_funds" => json!({
            "amount": amount,
            "currency": "NGN",
            "reference": format!("INSPECT-{transaction_ref}"),
            "destination_account": "******3210"
        }),
        _ => json!({ "reference": format!("INSPECT-{transaction_ref}") }),
    }
}

/// The sample answer for one request: `WaitingForOTP` when the app's
/// `otp_override` is false (as a live provider would answer first),
/// `Successful` with a sample `provider_response` otherwise.
pub fn sample(
    provider: &str,
    request_type: &str,
    transaction_ref: &str,
    amount: u64,
    otp_override: bool,
) -> ResponseEnvelope {
    let reply = if otp_override {
        ProviderReply::new(Status::Successful, "00", NOTICE).with_response(sample_response(
            request_type,
            transaction_ref,
            amount,
        ))
    } else {
        ProviderReply::new(Status::WaitingForOtp, "900T0", format!("{NOTICE}. A live provider would answer: Please enter the OTP sent to 2348022****08"))
    };
    let mut envelope = ResponseEnvelope::from_reply(provider, &reply);
    envelope.data.mock_mode = Some("inspect".into());
    envelope
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_sample_shows_an_account_number_whole() {
        for request_type in ["get_balance", "transfer_funds", "anything_else"] {
            let text = sample_response(request_type, "ref-1", 100).to_string();
            let digit_runs = text
                .split(|c: char| !c.is_ascii_digit())
                .filter(|run| run.len() == 10);
            assert_eq!(digit_runs.count(), 0, "a NUBAN in {text}");
        }
    }
}
