//! Records as JSON for a human reader (`--dump`, the admin API), whatever
//! the backend. Fingerprints stay hex digests.

use serde_json::{json, Value};

use crate::store::{RequestState, TransactionRecord};

/// One transaction as JSON: its summary, requests, history and replies.
pub fn transaction_json(record: &TransactionRecord) -> Value {
    let requests: Vec<Value> = record
        .requests
        .iter()
        .map(|r| {
            json!({
                "request_ref": r.request_ref,
                "operation": r.operation,
                "fingerprint": hex::encode(r.fingerprint),
                "state": match &r.state {
                    RequestState::InFlight { started_at_ms } => json!({"in_flight_since_ms": started_at_ms}),
                    RequestState::Answered(answer) => json!({
                        "http_status": answer.http_status,
                        "reply": answer.reply,
                    }),
                },
            })
        })
        .collect();
    let mut dumped = record.summary_json();
    dumped.insert("app_id".into(), record.app_id.clone().into());
    dumped.insert("last_reply".into(), json!(record.last_reply));
    dumped.insert("history".into(), json!(record.history));
    dumped.insert("reversal".into(), json!(record.reversal));
    dumped.insert("requests".into(), requests.into());
    Value::Object(dumped)
}
