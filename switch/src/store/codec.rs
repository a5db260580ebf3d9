//! The on-disk form of the switch's records (store formats 2 to 7: the same
//! keys; what changed is in the values' version bytes and the journal).
//!
//! One sled tree, keys prefixed by kind:
//! - `T app 0x1f transaction_ref`: the transaction, with every request that
//!   acted on it and the replies they were answered with;
//! - `R app 0x1f request_ref`: a pointer to the transaction a request acted on;
//! - `M app 0x1f minute_ms id`: a batch of metered calls of one app whose
//!   times fall in that minute (both big-endian, so a period is one range).
//!
//! Values are postcard-encoded structs behind a version byte (1; transaction
//! records 2, since the JSON of their answers is packed (`packed_json.rs`)
//! and their times but the creation and a drop of customer data are
//! offsets from the creation, and version 1 records are still read; metering
//! batches 2, since they carry what billing needs, and version 1 batches are
//! still read); the app id and
//! the reference are in the key, not again in the value. Statuses and
//! operations are written as fixed numbers (below), never as serde's variant
//! index, so reordering an enum cannot change what a stored byte means. A
//! record repeats nothing it can point at: a history entry names its request
//! by position, and the latest reply is usually one of the answers.

use manifold_provider::{ProviderReply, Status};
use serde::{Deserialize, Serialize};

use crate::store::packed_json;
use crate::store::{
    HistoryEntry, MeteredCall, Operation, RequestEntry, RequestState, Reversal, StoreError,
    StoredAnswer, TransactionRecord, DROPPED_MESSAGE, RECEIVED,
};

pub const TRANSACTION: u8 = b'T';
pub const REQUEST: u8 = b'R';
pub const METERING: u8 = b'M';
/// The key of the format marker; no record key starts with 0.
pub const FORMAT_KEY: &[u8] = b"\0format";

/// The version byte in front of every value written by this code, except
/// transaction records and metering batches.
const VERSION: u8 = 1;
/// The version byte of transaction records since the `provider_response` of
/// their answers is packed JSON (`packed_json.rs`), not JSON text (about
/// 180 bytes less for a balance enquiry), and their times after
/// `created_at_ms` are written as offsets from it ([`Times`]; not the time
/// customer data was dropped, which stays absolute). Version 1 records are
/// still read.
const TRANSACTION_VERSION: u8 = 2;
/// The version byte of metering batches since they carry what billing needs
/// (transaction, amount, repeat, completion, price); version 1 batches are
/// still read.
const CALLS_VERSION: u8 = 2;

pub fn key(kind: u8, app_id: &str, reference: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + app_id.len() + reference.len());
    key.push(kind);
    key.extend_from_slice(app_id.as_bytes());
    key.push(0x1f);
    key.extend_from_slice(reference.as_bytes());
    key
}

/// The first key of `app_id`'s metering batches from `at_ms`'s minute on.
pub fn metering_key(app_id: &str, minute_ms: u64, id: u64) -> Vec<u8> {
    let mut key = key(METERING, app_id, "");
    key.extend_from_slice(&minute_ms.to_be_bytes());
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// `(app_id, reference)` of a `T` or `R` key.
pub fn split_key(key: &[u8]) -> Result<(String, String), StoreError> {
    let corrupt = || StoreError::Corrupt(format!("malformed key {}", String::from_utf8_lossy(key)));
    let rest = key.get(1..).ok_or_else(corrupt)?;
    let separator = rest.iter().position(|b| *b == 0x1f).ok_or_else(corrupt)?;
    let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).map_err(|_| corrupt());
    Ok((text(&rest[..separator])?, text(&rest[separator + 1..])?))
}

fn status_code(status: Status) -> u8 {
    match status {
        Status::Successful => 0,
        Status::Failed => 1,
        Status::WaitingForOtp => 2,
        Status::PendingValidation => 3,
        Status::Pending => 4,
    }
}

fn status_from(code: u8) -> Result<Status, StoreError> {
    Ok(match code {
        0 => Status::Successful,
        1 => Status::Failed,
        2 => Status::WaitingForOtp,
        3 => Status::PendingValidation,
        4 => Status::Pending,
        other => return Err(StoreError::Corrupt(format!("unknown status {other}"))),
    })
}

fn operation_code(operation: Operation) -> u8 {
    match operation {
        Operation::Transact => 0,
        Operation::Validate => 1,
        Operation::Query => 2,
        Operation::Reverse => 3,
    }
}

fn operation_from(code: u8) -> Result<Operation, StoreError> {
    Ok(match code {
        0 => Operation::Transact,
        1 => Operation::Validate,
        2 => Operation::Query,
        3 => Operation::Reverse,
        other => return Err(StoreError::Corrupt(format!("unknown operation {other}"))),
    })
}

#[derive(Serialize, Deserialize)]
struct DiskReply {
    status: u8,
    message: String,
    code: String,
    /// The JSON value in the record version's form: packed (version 2) or
    /// JSON text (version 1; postcard cannot decode a self-describing value).
    /// postcard writes these bytes as it wrote version 1's `String` (a
    /// varint length, then the bytes), so both versions share this struct.
    response: Option<Vec<u8>>,
}

impl DiskReply {
    fn new(reply: &ProviderReply, version: u8) -> Self {
        DiskReply {
            status: status_code(reply.status),
            message: reply.message.clone(),
            code: reply.provider_response_code.clone(),
            response: reply.provider_response.as_ref().map(|value| match version {
                TRANSACTION_VERSION => packed_json::pack(value),
                _ => value.to_string().into_bytes(),
            }),
        }
    }

    fn open(self, version: u8) -> Result<ProviderReply, StoreError> {
        let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("an answer: {e}"));
        Ok(ProviderReply {
            status: status_from(self.status)?,
            message: self.message,
            provider_response_code: self.code,
            provider_response: match self.response {
                Some(bytes) if version == TRANSACTION_VERSION => {
                    Some(packed_json::unpack(&bytes).map_err(|e| corrupt(&e))?)
                }
                Some(text) => Some(serde_json::from_slice(&text).map_err(|e| corrupt(&e))?),
                None => None,
            },
        })
    }
}

/// A reply, or which request's answer it equals.
#[derive(Serialize, Deserialize)]
enum DiskLastReply {
    None,
    AnswerOf(u32),
    Own(DiskReply),
    /// No latest reply: the customer data was dropped at this time. (Added
    /// last, so records written before it decode as they did.)
    DroppedAt(u64),
}

#[derive(Serialize, Deserialize)]
enum DiskRef {
    None,
    /// The request at this position of the record's `requests`.
    Request(u32),
    Own(String),
}

#[derive(Serialize, Deserialize)]
enum DiskText {
    Own(String),
    Received,
    /// The message of the reply that answered the request at this position.
    AnswerOf(u32),
    /// [`DROPPED_MESSAGE`]: dropped after the retention period.
    Dropped,
}

#[derive(Serialize, Deserialize)]
struct DiskHistory {
    at_ms: u64,
    operation: u8,
    request_ref: DiskRef,
    status: u8,
    code: Option<String>,
    message: DiskText,
}

#[derive(Serialize, Deserialize)]
enum DiskRequestState {
    InFlight { started_at_ms: u64 },
    Answered { http_status: u16, reply: DiskReply },
}

#[derive(Serialize, Deserialize)]
struct DiskRequest {
    request_ref: String,
    operation: u8,
    fingerprint: [u8; 32],
    state: DiskRequestState,
}

#[derive(Serialize, Deserialize)]
struct DiskReversal {
    request_ref: String,
    status: u8,
    at_ms: u64,
    reply: Option<DiskReply>,
}

#[derive(Serialize, Deserialize)]
struct DiskTransaction {
    request_type: String,
    provider: String,
    amount: u64,
    status: u8,
    created_at_ms: u64,
    updated_at_ms: u64,
    last_reply: DiskLastReply,
    history: Vec<DiskHistory>,
    reversal: Option<DiskReversal>,
    requests: Vec<DiskRequest>,
}

/// A request pointer: which transaction a `request_ref` acted on.
#[derive(Serialize, Deserialize)]
struct DiskPointer {
    transaction_ref: String,
}

/// A metered call as version 1 wrote it, before billing needed its
/// transaction and amount; still read, never written.
#[derive(Serialize, Deserialize)]
struct DiskCallV1 {
    at_ms: u64,
    operation: u8,
    request_type: Option<String>,
    provider: Option<String>,
    status: u8,
    http_status: u16,
    error: Option<String>,
    inspect: bool,
}

#[derive(Serialize, Deserialize)]
struct DiskCall {
    at_ms: u64,
    operation: u8,
    request_type: Option<String>,
    provider: Option<String>,
    status: u8,
    http_status: u16,
    error: Option<String>,
    /// Bit 0: inspect; bit 1: repeat; bit 2: completed.
    flags: u8,
    transaction_ref: Option<String>,
    amount: Option<u64>,
    price: Option<DiskPrice>,
}

/// [`manifold_billing::Price`]: fees in minor units.
#[derive(Serialize, Deserialize)]
struct DiskPrice {
    currency: String,
    minor_units: u8,
    billed: bool,
    call_fee: u64,
    value_fee: u64,
}

const INSPECT: u8 = 1;
const REPEAT: u8 = 2;
const COMPLETED: u8 = 4;

fn to_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    to_bytes_as(VERSION, value)
}

fn to_bytes_as<T: Serialize>(version: u8, value: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![version];
    postcard::to_io(value, &mut out).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(out)
}

/// `body`, a value's bytes after its version byte, decoded.
fn from_body<'a, T: Deserialize<'a>>(body: &'a [u8], what: &str) -> Result<T, StoreError> {
    postcard::from_bytes(body).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn from_bytes<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&VERSION, body)) => from_body(body, what),
        Some((version, _)) => Err(StoreError::Corrupt(format!(
            "{what} has record version {version}; this build reads version {VERSION}"
        ))),
        None => Err(StoreError::Corrupt(format!("{what} is empty"))),
    }
}

/// How a record's times other than `created_at_ms` (and `DroppedAt`, kept
/// absolute) are written: since version 2, as the milliseconds since it (a varint of a byte or two,
/// against six for a time since 1970). Wrapping, so a clock that stepped
/// back between two times still reads back exactly (as a long varint).
#[derive(Clone, Copy)]
struct Times {
    created_at_ms: u64,
    relative: bool,
}

impl Times {
    fn of(version: u8, created_at_ms: u64) -> Times {
        Times {
            created_at_ms,
            relative: version == TRANSACTION_VERSION,
        }
    }

    fn write(self, at_ms: u64) -> u64 {
        if self.relative {
            at_ms.wrapping_sub(self.created_at_ms)
        } else {
            at_ms
        }
    }

    fn read(self, stored: u64) -> u64 {
        if self.relative {
            stored.wrapping_add(self.created_at_ms)
        } else {
            stored
        }
    }
}

fn answer_of(requests: &[RequestEntry], position: usize) -> Option<&ProviderReply> {
    match &requests.get(position)?.state {
        RequestState::Answered(answer) => Some(&answer.reply),
        RequestState::InFlight { .. } => None,
    }
}

pub fn encode_transaction(record: &TransactionRecord) -> Result<Vec<u8>, StoreError> {
    encode_transaction_as(TRANSACTION_VERSION, record)
}

/// `record` in the form of record `version` (1 only for tests of reading
/// what earlier builds wrote).
fn encode_transaction_as(version: u8, record: &TransactionRecord) -> Result<Vec<u8>, StoreError> {
    let requests = &record.requests;
    let since_created = Times::of(version, record.created_at_ms);
    let position = |request_ref: &str| {
        requests
            .iter()
            .position(|r| r.request_ref == request_ref)
            .map(|p| p as u32)
    };
    let last_reply = match (&record.last_reply, record.customer_data_dropped_at_ms) {
        (_, Some(at_ms)) => DiskLastReply::DroppedAt(at_ms),
        (None, None) => DiskLastReply::None,
        (Some(reply), None) => {
            match (0..requests.len()).find(|&p| answer_of(requests, p) == Some(reply)) {
                Some(p) => DiskLastReply::AnswerOf(p as u32),
                None => DiskLastReply::Own(DiskReply::new(reply, version)),
            }
        }
    };
    let history = record
        .history
        .iter()
        .map(|entry| {
            let request = entry.request_ref.as_deref().and_then(position);
            let message = if entry.message == RECEIVED {
                DiskText::Received
            } else if entry.message == DROPPED_MESSAGE
                && record.customer_data_dropped_at_ms.is_some()
            {
                DiskText::Dropped
            } else {
                match request.filter(|&p| {
                    answer_of(requests, p as usize).is_some_and(|r| r.message == entry.message)
                }) {
                    Some(p) => DiskText::AnswerOf(p),
                    None => DiskText::Own(entry.message.clone()),
                }
            };
            DiskHistory {
                at_ms: since_created.write(entry.at_ms),
                operation: operation_code(entry.operation),
                request_ref: match (&entry.request_ref, request) {
                    (None, _) => DiskRef::None,
                    (Some(_), Some(p)) => DiskRef::Request(p),
                    (Some(own), None) => DiskRef::Own(own.clone()),
                },
                status: status_code(entry.status),
                code: entry.provider_response_code.clone(),
                message,
            }
        })
        .collect();
    to_bytes_as(
        version,
        &DiskTransaction {
            request_type: record.request_type.clone(),
            provider: record.provider.clone(),
            amount: record.amount,
            status: status_code(record.status),
            created_at_ms: record.created_at_ms,
            updated_at_ms: since_created.write(record.updated_at_ms),
            last_reply,
            history,
            reversal: record.reversal.as_ref().map(|r| DiskReversal {
                request_ref: r.request_ref.clone(),
                status: status_code(r.status),
                at_ms: since_created.write(r.at_ms),
                reply: r.reply.as_ref().map(|reply| DiskReply::new(reply, version)),
            }),
            requests: requests
                .iter()
                .map(|r| DiskRequest {
                    request_ref: r.request_ref.clone(),
                    operation: operation_code(r.operation),
                    fingerprint: r.fingerprint,
                    state: match &r.state {
                        RequestState::InFlight { started_at_ms } => DiskRequestState::InFlight {
                            started_at_ms: since_created.write(*started_at_ms),
                        },
                        RequestState::Answered(answer) => DiskRequestState::Answered {
                            http_status: answer.http_status,
                            reply: DiskReply::new(&answer.reply, version),
                        },
                    },
                })
                .collect(),
        },
    )
}

pub fn decode_transaction(
    app_id: &str,
    transaction_ref: &str,
    bytes: &[u8],
) -> Result<TransactionRecord, StoreError> {
    const WHAT: &str = "a transaction record";
    let (version, disk): (u8, DiskTransaction) = match bytes.split_first() {
        Some((&TRANSACTION_VERSION, body)) => (TRANSACTION_VERSION, from_body(body, WHAT)?),
        Some((&VERSION, _)) => (VERSION, from_bytes(bytes, WHAT)?),
        Some((version, _)) => {
            return Err(StoreError::Corrupt(format!(
                "{WHAT} has record version {version}; this build reads versions \
                 {VERSION} and {TRANSACTION_VERSION}"
            )))
        }
        None => return Err(StoreError::Corrupt(format!("{WHAT} is empty"))),
    };
    let since_created = Times::of(version, disk.created_at_ms);
    let requests = disk
        .requests
        .into_iter()
        .map(|r| {
            Ok(RequestEntry {
                request_ref: r.request_ref,
                operation: operation_from(r.operation)?,
                fingerprint: r.fingerprint,
                state: match r.state {
                    DiskRequestState::InFlight { started_at_ms } => RequestState::InFlight {
                        started_at_ms: since_created.read(started_at_ms),
                    },
                    DiskRequestState::Answered { http_status, reply } => {
                        RequestState::Answered(StoredAnswer {
                            http_status,
                            reply: reply.open(version)?,
                        })
                    }
                },
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let dangling = |p: u32| StoreError::Corrupt(format!("no answered request at position {p}"));
    let history = disk
        .history
        .into_iter()
        .map(|entry| {
            Ok(HistoryEntry {
                at_ms: since_created.read(entry.at_ms),
                operation: operation_from(entry.operation)?,
                request_ref: match entry.request_ref {
                    DiskRef::None => None,
                    DiskRef::Request(p) => Some(
                        requests
                            .get(p as usize)
                            .ok_or_else(|| dangling(p))?
                            .request_ref
                            .clone(),
                    ),
                    DiskRef::Own(own) => Some(own),
                },
                status: status_from(entry.status)?,
                provider_response_code: entry.code,
                message: match entry.message {
                    DiskText::Own(text) => text,
                    DiskText::Received => RECEIVED.to_owned(),
                    DiskText::Dropped => DROPPED_MESSAGE.to_owned(),
                    DiskText::AnswerOf(p) => answer_of(&requests, p as usize)
                        .ok_or_else(|| dangling(p))?
                        .message
                        .clone(),
                },
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let mut dropped_at_ms = None;
    let last_reply = match disk.last_reply {
        DiskLastReply::None => None,
        DiskLastReply::DroppedAt(at_ms) => {
            dropped_at_ms = Some(at_ms);
            None
        }
        DiskLastReply::AnswerOf(p) => Some(
            answer_of(&requests, p as usize)
                .ok_or_else(|| dangling(p))?
                .clone(),
        ),
        DiskLastReply::Own(reply) => Some(reply.open(version)?),
    };
    Ok(TransactionRecord {
        app_id: app_id.to_owned(),
        transaction_ref: transaction_ref.to_owned(),
        request_type: disk.request_type,
        provider: disk.provider,
        amount: disk.amount,
        status: status_from(disk.status)?,
        created_at_ms: disk.created_at_ms,
        updated_at_ms: since_created.read(disk.updated_at_ms),
        last_reply,
        history,
        reversal: match disk.reversal {
            Some(r) => Some(Reversal {
                request_ref: r.request_ref,
                status: status_from(r.status)?,
                at_ms: since_created.read(r.at_ms),
                reply: r.reply.map(|reply| reply.open(version)).transpose()?,
            }),
            None => None,
        },
        requests,
        customer_data_dropped_at_ms: dropped_at_ms,
    })
}

pub fn encode_pointer(transaction_ref: &str) -> Result<Vec<u8>, StoreError> {
    to_bytes(&DiskPointer {
        transaction_ref: transaction_ref.to_owned(),
    })
}

/// The `transaction_ref` a request pointer names.
pub fn decode_pointer(bytes: &[u8]) -> Result<String, StoreError> {
    let pointer: DiskPointer = from_bytes(bytes, "a request pointer")?;
    Ok(pointer.transaction_ref)
}

/// One batch of metered calls, all of one app.
pub fn encode_calls<'a>(
    calls: impl Iterator<Item = &'a MeteredCall>,
) -> Result<Vec<u8>, StoreError> {
    let calls: Vec<DiskCall> = calls
        .map(|call| DiskCall {
            at_ms: call.at_ms,
            operation: operation_code(call.operation),
            request_type: call.request_type.clone(),
            provider: call.provider.clone(),
            status: status_code(call.status),
            http_status: call.http_status,
            error: call.error.clone(),
            flags: (if call.inspect { INSPECT } else { 0 })
                | (if call.repeat { REPEAT } else { 0 })
                | (if call.completed { COMPLETED } else { 0 }),
            transaction_ref: call.transaction_ref.clone(),
            amount: call.amount,
            price: call.price.as_ref().map(|price| DiskPrice {
                currency: price.currency.clone(),
                // At most 4 (the configuration's limit).
                minor_units: price.minor_units.min(u32::from(u8::MAX)) as u8,
                billed: price.billed,
                call_fee: price.call_fee,
                value_fee: price.value_fee,
            }),
        })
        .collect();
    to_bytes_as(CALLS_VERSION, &calls)
}

pub fn decode_calls(app_id: &str, bytes: &[u8]) -> Result<Vec<MeteredCall>, StoreError> {
    const WHAT: &str = "a metering batch";
    let calls: Vec<DiskCall> = match bytes.first() {
        Some(&CALLS_VERSION) => from_body(&bytes[1..], WHAT)?,
        // Written before billing: no transaction, no amount, never a repeat
        // or a completion known.
        _ => from_bytes::<Vec<DiskCallV1>>(bytes, WHAT)?
            .into_iter()
            .map(|old| DiskCall {
                at_ms: old.at_ms,
                operation: old.operation,
                request_type: old.request_type,
                provider: old.provider,
                status: old.status,
                http_status: old.http_status,
                error: old.error,
                flags: if old.inspect { INSPECT } else { 0 },
                transaction_ref: None,
                amount: None,
                price: None,
            })
            .collect(),
    };
    calls
        .into_iter()
        .map(|call| {
            Ok(MeteredCall {
                at_ms: call.at_ms,
                app_id: app_id.to_owned(),
                operation: operation_from(call.operation)?,
                request_type: call.request_type,
                provider: call.provider,
                status: status_from(call.status)?,
                http_status: call.http_status,
                error: call.error,
                inspect: call.flags & INSPECT != 0,
                transaction_ref: call.transaction_ref,
                amount: call.amount,
                repeat: call.flags & REPEAT != 0,
                completed: call.flags & COMPLETED != 0,
                price: call.price.map(|price| manifold_billing::Price {
                    currency: price.currency,
                    minor_units: u32::from(price.minor_units),
                    billed: price.billed,
                    call_fee: price.call_fee,
                    value_fee: price.value_fee,
                }),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reply(status: Status, message: &str) -> ProviderReply {
        ProviderReply::new(status, "00", message)
            .with_response(json!({"balance": 1.5, "b": [1, "x"], "memo": "sample-memo"}))
    }

    pub fn sample() -> TransactionRecord {
        let answer = reply(Status::WaitingForOtp, "Enter the code");
        let validated = reply(Status::Successful, "Approved");
        TransactionRecord {
            app_id: "app".into(),
            transaction_ref: "t-1".into(),
            request_type: "transfer_funds".into(),
            provider: "bank".into(),
            amount: 12_345,
            status: Status::Successful,
            created_at_ms: 1_700_000_000_000,
            updated_at_ms: 1_700_000_000_500,
            last_reply: Some(validated.clone()),
            history: vec![
                HistoryEntry {
                    at_ms: 1_700_000_000_000,
                    operation: Operation::Transact,
                    request_ref: Some("r-1".into()),
                    status: Status::Pending,
                    provider_response_code: None,
                    message: RECEIVED.into(),
                },
                HistoryEntry {
                    at_ms: 1_700_000_000_100,
                    operation: Operation::Transact,
                    request_ref: Some("r-1".into()),
                    status: Status::WaitingForOtp,
                    provider_response_code: Some("00".into()),
                    message: "Enter the code".into(),
                },
                HistoryEntry {
                    at_ms: 1_700_000_000_300,
                    operation: Operation::Query,
                    request_ref: Some("q-9".into()),
                    status: Status::WaitingForOtp,
                    provider_response_code: None,
                    message: "still waiting".into(),
                },
                HistoryEntry {
                    at_ms: 1_700_000_000_500,
                    operation: Operation::Validate,
                    request_ref: Some("r-2".into()),
                    status: Status::Successful,
                    provider_response_code: Some("00".into()),
                    message: "Approved".into(),
                },
            ],
            reversal: Some(Reversal {
                request_ref: "r-3".into(),
                status: Status::Pending,
                at_ms: 1_700_000_000_900,
                reply: None,
            }),
            customer_data_dropped_at_ms: None,
            requests: vec![
                RequestEntry {
                    request_ref: "r-1".into(),
                    operation: Operation::Transact,
                    fingerprint: [7; 32],
                    state: RequestState::Answered(StoredAnswer {
                        http_status: 200,
                        reply: answer,
                    }),
                },
                RequestEntry {
                    request_ref: "r-2".into(),
                    operation: Operation::Validate,
                    fingerprint: [8; 32],
                    state: RequestState::Answered(StoredAnswer {
                        http_status: 200,
                        reply: validated,
                    }),
                },
                RequestEntry {
                    request_ref: "r-3".into(),
                    operation: Operation::Reverse,
                    fingerprint: [9; 32],
                    state: RequestState::InFlight { started_at_ms: 5 },
                },
            ],
        }
    }

    #[test]
    fn a_transaction_reads_back_as_written() {
        let record = sample();
        let bytes = encode_transaction(&record).unwrap();
        assert_eq!(decode_transaction("app", "t-1", &bytes).unwrap(), record);
        // An own last reply (a query's) survives too.
        let mut queried = record.clone();
        queried.last_reply = Some(reply(Status::Pending, "from a query"));
        let bytes = encode_transaction(&queried).unwrap();
        assert_eq!(decode_transaction("app", "t-1", &bytes).unwrap(), queried);
    }

    #[test]
    fn a_record_whose_customer_data_was_dropped_reads_back_without_it() {
        let mut record = sample();
        record.reversal = None;
        let before = encode_transaction(&record).unwrap();
        record.drop_customer_data(1_800_000_000_000);
        let bytes = encode_transaction(&record).unwrap();
        let decoded = decode_transaction("app", "t-1", &bytes).unwrap();
        assert_eq!(decoded, record);
        assert_eq!(decoded.customer_data_dropped_at_ms, Some(1_800_000_000_000));
        assert_eq!(decoded.last_reply, None);
        assert_eq!(decoded.status, Status::Successful);
        let contains =
            |bytes: &[u8], needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        for text in [
            &b"sample-memo"[..],
            b"Approved",
            b"Enter the code",
            b"still waiting",
        ] {
            assert!(contains(&before, text));
            assert!(!contains(&bytes, text), "{}", String::from_utf8_lossy(text));
        }
        assert!(bytes.len() < before.len());
    }

    #[test]
    fn nothing_pointed_at_is_written_twice() {
        let record = sample();
        let bytes = encode_transaction(&record).unwrap();
        let count = |needle: &[u8]| bytes.windows(needle.len()).filter(|w| *w == needle).count();
        assert_eq!(count(b"Approved"), 1, "the validate answer's message");
        assert_eq!(
            count(b"sample-memo"),
            2,
            "one per answered request, none for last_reply"
        );
        assert_eq!(count(RECEIVED.as_bytes()), 0);
        assert_eq!(count(b"r-1"), 1);
    }

    /// Version 1 kept answers as JSON text; such records, written by earlier
    /// builds, still read back whole.
    #[test]
    fn a_version_1_record_with_json_text_is_still_read() {
        let mut record = sample();
        let written = encode_transaction_as(1, &record).unwrap();
        assert_eq!(written[0], 1);
        let text = br#"{"b":[1,"x"],"balance":1.5,"memo":"sample-memo"}"#;
        assert!(written.windows(text.len()).any(|w| w == text));
        assert_eq!(decode_transaction("app", "t-1", &written).unwrap(), record);
        record.last_reply = Some(reply(Status::Pending, "from a query"));
        let written = encode_transaction_as(1, &record).unwrap();
        assert_eq!(decode_transaction("app", "t-1", &written).unwrap(), record);
    }

    #[test]
    fn times_before_the_creation_read_back_exactly() {
        let mut record = sample();
        // A wall clock stepped back between the creation and these.
        record.updated_at_ms = record.created_at_ms - 7;
        record.history[1].at_ms = 0;
        record.reversal.as_mut().unwrap().at_ms = u64::MAX;
        let bytes = encode_transaction(&record).unwrap();
        assert_eq!(decode_transaction("app", "t-1", &bytes).unwrap(), record);
    }

    /// Version 1 wrote `DiskReply::response` as a `String`; postcard writes
    /// the `Vec<u8>` that replaced it as the same bytes, both ways.
    #[test]
    fn a_reply_written_with_a_string_reads_as_its_bytes() {
        #[derive(Serialize, Deserialize)]
        struct DiskReplyV1 {
            status: u8,
            message: String,
            code: String,
            response: Option<String>,
        }
        let text = r#"{"balance":1.5,"memo":"sample-memo"}"#;
        for response in [Some(text.to_owned()), None] {
            let v1 = DiskReplyV1 {
                status: 0,
                message: "Approved".into(),
                code: "00".into(),
                response: response.clone(),
            };
            let written = to_bytes_as(1, &v1).unwrap();
            let read: DiskReply = from_bytes(&written, "a reply").unwrap();
            assert_eq!(
                read.response.as_deref(),
                response.as_deref().map(str::as_bytes)
            );
            assert_eq!(to_bytes_as(1, &read).unwrap(), written);
        }
    }

    #[test]
    fn answers_are_written_packed_and_smaller_than_their_json_text() {
        let record = sample();
        let packed = encode_transaction(&record).unwrap();
        assert_eq!(packed[0], TRANSACTION_VERSION);
        let text = encode_transaction_as(1, &record).unwrap();
        // "balance" is a known key: one byte, not its name.
        assert!(!packed.windows(7).any(|w| w == b"balance"));
        assert!(
            packed.len() < text.len(),
            "{} >= {}",
            packed.len(),
            text.len()
        );
    }

    #[test]
    fn a_record_of_another_version_is_refused_not_misread() {
        let mut bytes = encode_transaction(&sample()).unwrap();
        bytes[0] = 9;
        let error = decode_transaction("app", "t-1", &bytes).unwrap_err();
        assert!(error.to_string().contains("record version 9"), "{error}");
        assert!(error.to_string().contains("versions 1 and 2"), "{error}");
        assert!(decode_transaction("app", "t-1", b"{\"json\":1}").is_err());
    }

    #[test]
    fn stored_numbers_for_statuses_and_operations_never_change() {
        let statuses = [
            Status::Successful,
            Status::Failed,
            Status::WaitingForOtp,
            Status::PendingValidation,
            Status::Pending,
        ];
        for (code, status) in statuses.into_iter().enumerate() {
            assert_eq!(status_code(status), code as u8);
            assert_eq!(status_from(code as u8).unwrap(), status);
        }
        let operations = [
            Operation::Transact,
            Operation::Validate,
            Operation::Query,
            Operation::Reverse,
        ];
        for (code, operation) in operations.into_iter().enumerate() {
            assert_eq!(operation_code(operation), code as u8);
            assert_eq!(operation_from(code as u8).unwrap(), operation);
        }
    }

    fn metered(repeat: bool, completed: bool) -> MeteredCall {
        MeteredCall {
            at_ms: 1_700_000_000_000,
            app_id: "app".into(),
            operation: Operation::Validate,
            request_type: Some("transfer_funds".into()),
            provider: Some("bank".into()),
            status: Status::Successful,
            http_status: 200,
            error: None,
            inspect: false,
            transaction_ref: Some("t-1".into()),
            amount: Some(12_345),
            repeat,
            completed,
            price: Some(manifold_billing::Price {
                currency: "NGN".into(),
                minor_units: 2,
                billed: true,
                call_fee: 500,
                value_fee: u64::from(completed) * 6_172,
            }),
        }
    }

    #[test]
    fn metered_calls_read_back_with_what_billing_needs() {
        let calls = [metered(false, true), metered(true, false)];
        let bytes = encode_calls(calls.iter()).unwrap();
        assert_eq!(bytes[0], CALLS_VERSION);
        assert_eq!(decode_calls("app", &bytes).unwrap(), calls);
    }

    /// Batches written before billing (version 1) are still read, with no
    /// transaction, amount, repeat or completion.
    #[test]
    fn a_version_1_metering_batch_is_still_read() {
        let old = vec![DiskCallV1 {
            at_ms: 1_700_000_000_000,
            operation: operation_code(Operation::Validate),
            request_type: Some("transfer_funds".into()),
            provider: Some("bank".into()),
            status: status_code(Status::Successful),
            http_status: 200,
            error: None,
            inspect: true,
        }];
        let bytes = to_bytes(&old).unwrap();
        assert_eq!(bytes[0], 1);
        let mut expected = metered(false, false);
        expected.transaction_ref = None;
        expected.amount = None;
        expected.price = None;
        expected.inspect = true;
        assert_eq!(decode_calls("app", &bytes).unwrap(), vec![expected]);
        assert!(decode_calls("app", &[9, 0]).is_err());
    }

    #[test]
    fn keys_split_back_into_app_and_reference() {
        let k = key(TRANSACTION, "app", "t\u{e9}-1");
        assert_eq!(split_key(&k).unwrap(), ("app".into(), "t\u{e9}-1".into()));
        assert!(split_key(b"Tnoseparator").is_err());
    }
}
