//! A compact binary form of a JSON value, for the providers' answers kept in
//! transaction records (record version 2, `codec.rs`).
//!
//! **Why.** An answer's `provider_response` is most of a record, and most of
//! its JSON text is punctuation and field names that every answer of that
//! provider repeats (`"avialable_balance":` is 20 bytes of a balance
//! enquiry's answer). Here a field name the protocol or one of our providers
//! uses is one byte, a number is a varint and a string is its length and its
//! bytes: seed 003's balance answer shrinks from 352 bytes of JSON text to
//! 169. Unlike compression (tried: `tests/bench/PROFILING.md`, eighth
//! round), it is no more work than writing the JSON text it replaces.
//!
//! **Form.** A value is a tag byte and its body: `0` null, `1` false, `2`
//! true, `3` an unsigned integer (varint), `4` a negative integer `n`
//! (varint of `-1 - n`), `5` any other number (`f64`, 8 bytes
//! little-endian), `6` a string (varint length, UTF-8 bytes), `7` an array
//! (varint count, then the values), `8` an object (varint count, then each
//! key and value). A key is a varint: `0` and the key's own string (varint
//! length, bytes) follow, or `k` ≥ 1 for `KNOWN_KEYS[k - 1]`. Varints are
//! LEB128 (7 bits a byte, low first), as postcard writes them.
//!
//! **The dictionary is append-only.** A stored record names a key by its
//! position in [`KNOWN_KEYS`]: never reorder, rename or remove an entry, only
//! add at the end (a test pins the list). A key outside it is stored whole,
//! so any JSON round-trips exactly; the list only decides what is short.

use std::sync::OnceLock;

use serde_json::{Map, Number, Value};

/// Field names written as one byte: seed 003's response fields, then those
/// of the providers in this repository (the demo bank, the connectors).
/// Append only (see the module's docs).
pub const KNOWN_KEYS: &[&str] = &[
    // Seed 003's envelope and balance answer.
    "account_id",
    "account_type",
    "account_number",
    "avialable_balance",
    "ledger_balance",
    "minimum_balance",
    "account_class",
    "account_status",
    "currency",
    "reference",
    "meta",
    "amount",
    "status",
    "message",
    "data",
    "errors",
    "error",
    "details",
    "customer",
    "transaction_ref",
    "request_ref",
    "provider_response",
    "provider_response_code",
    "field_key",
    // The demo bank.
    "bank_marker",
    "destination_account",
    // The connectors' answers.
    "id",
    "description",
    "available_balance",
    "balance",
    "transfer_id",
    "verification_id",
    "reversal_reference",
    "remaining",
    "iban",
    "bic",
    "holder_name",
    "recipient_name",
    "recipient_iban",
    "counterparty_name",
    "counterparty_iban",
    "direction",
    "debtor",
    "creditor",
    "client_transfer_id",
    "client_operation_uuid",
    "created_at",
    "created_at_unix",
    "fee",
];

/// Deeper than this is refused when reading. Answers reach the store parsed
/// by serde_json, which nests no deeper than 128.
const MAX_DEPTH: usize = 128;

const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const UNSIGNED: u8 = 3;
const NEGATIVE: u8 = 4;
const FLOAT: u8 = 5;
const STRING: u8 = 6;
const ARRAY: u8 = 7;
const OBJECT: u8 = 8;

/// Why bytes are not a packed value (a damaged or foreign record).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("packed JSON: {0}")]
pub struct Malformed(&'static str);

/// Appends the packed form of `value` to `out`.
fn pack_into(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(NULL),
        Value::Bool(false) => out.push(FALSE),
        Value::Bool(true) => out.push(TRUE),
        Value::Number(number) => {
            if let Some(unsigned) = number.as_u64() {
                out.push(UNSIGNED);
                put_varint(out, unsigned);
            } else if let Some(negative) = number.as_i64() {
                out.push(NEGATIVE);
                // `as_u64` failed, so `negative` < 0 and `-1 - negative` ≥ 0.
                put_varint(out, (-1 - negative) as u64);
            } else {
                out.push(FLOAT);
                // A JSON number that is neither is an f64 (no
                // `arbitrary_precision` in this build).
                out.extend_from_slice(&number.as_f64().unwrap_or(0.0).to_le_bytes());
            }
        }
        Value::String(text) => {
            out.push(STRING);
            put_str(out, text);
        }
        Value::Array(items) => {
            out.push(ARRAY);
            put_varint(out, items.len() as u64);
            for item in items {
                pack_into(item, out);
            }
        }
        Value::Object(fields) => {
            out.push(OBJECT);
            put_varint(out, fields.len() as u64);
            for (key, field) in fields {
                match known_key_code(key) {
                    Some(code) => put_varint(out, code),
                    None => {
                        out.push(0);
                        put_str(out, key);
                    }
                }
                pack_into(field, out);
            }
        }
    }
}

/// The packed form of `value`.
pub fn pack(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    pack_into(value, &mut out);
    out
}

/// The value packed in `bytes`, which it must fill exactly.
pub fn unpack(bytes: &[u8]) -> Result<Value, Malformed> {
    let mut input = bytes;
    let value = take_value(&mut input, 0)?;
    if input.is_empty() {
        Ok(value)
    } else {
        Err(Malformed("bytes after the value"))
    }
}

/// The code of `key` if it is in [`KNOWN_KEYS`] (its position + 1): a
/// binary search of the list sorted once, not a scan of it per key.
fn known_key_code(key: &str) -> Option<u64> {
    static SORTED: OnceLock<Vec<(&'static str, u64)>> = OnceLock::new();
    let sorted = SORTED.get_or_init(|| {
        let mut sorted: Vec<_> = (1..)
            .zip(KNOWN_KEYS)
            .map(|(code, &key)| (key, code))
            .collect();
        sorted.sort_unstable();
        sorted
    });
    sorted
        .binary_search_by(|(known, _)| (*known).cmp(key))
        .ok()
        .map(|at| sorted[at].1)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    put_varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

fn take_byte(input: &mut &[u8]) -> Result<u8, Malformed> {
    let (&first, rest) = input.split_first().ok_or(Malformed("cut short"))?;
    *input = rest;
    Ok(first)
}

fn take_varint(input: &mut &[u8]) -> Result<u64, Malformed> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = take_byte(input)?;
        let bits = u64::from(byte & 0x7f);
        if shift == 63 && bits > 1 {
            return Err(Malformed("a varint over 64 bits"));
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(Malformed("a varint over 64 bits"))
}

/// A count or length, which can be no more than the bytes left (each item
/// takes at least one byte), so a damaged one is refused before anything is
/// read for it.
fn take_len(input: &mut &[u8]) -> Result<usize, Malformed> {
    let len = take_varint(input)?;
    if len > input.len() as u64 {
        return Err(Malformed("a length past the end"));
    }
    Ok(len as usize)
}

fn take_str(input: &mut &[u8]) -> Result<String, Malformed> {
    let len = take_len(input)?;
    let (text, rest) = input.split_at(len);
    *input = rest;
    String::from_utf8(text.to_vec()).map_err(|_| Malformed("a string that is not UTF-8"))
}

fn take_value(input: &mut &[u8], depth: usize) -> Result<Value, Malformed> {
    if depth > MAX_DEPTH {
        return Err(Malformed("nested too deep"));
    }
    Ok(match take_byte(input)? {
        NULL => Value::Null,
        FALSE => Value::Bool(false),
        TRUE => Value::Bool(true),
        UNSIGNED => Value::Number(take_varint(input)?.into()),
        NEGATIVE => {
            let magnitude = take_varint(input)?;
            let negative = i64::try_from(magnitude)
                .map(|m| -1 - m)
                .map_err(|_| Malformed("a negative number below i64"))?;
            Value::Number(negative.into())
        }
        FLOAT => {
            let bytes = input
                .get(..8)
                .ok_or(Malformed("cut short"))?
                .try_into()
                .map_err(|_| Malformed("cut short"))?;
            *input = &input[8..];
            Value::Number(
                Number::from_f64(f64::from_le_bytes(bytes))
                    .ok_or(Malformed("a number JSON cannot hold"))?,
            )
        }
        STRING => Value::String(take_str(input)?),
        ARRAY => {
            let count = take_len(input)?;
            // Bounded: a damaged count at every level must not reserve
            // 32 bytes a value for each byte left.
            let mut items = Vec::with_capacity(count.min(64));
            for _ in 0..count {
                items.push(take_value(input, depth + 1)?);
            }
            Value::Array(items)
        }
        OBJECT => {
            let count = take_len(input)?;
            let mut fields = Map::new();
            for _ in 0..count {
                let key = match take_varint(input)? {
                    0 => take_str(input)?,
                    known => usize::try_from(known - 1)
                        .ok()
                        .and_then(|position| KNOWN_KEYS.get(position))
                        .ok_or(Malformed("a key past the dictionary"))?
                        .to_string(),
                };
                let field = take_value(input, depth + 1)?;
                if fields.insert(key, field).is_some() {
                    return Err(Malformed("a key given twice"));
                }
            }
            Value::Object(fields)
        }
        _ => return Err(Malformed("an unknown tag")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const PINNED_FIRST_49: &str =
        "b2a526ff7ce6a513efee98d63474b8f4265496432d5bd959d6ed08dd3a17c05f";

    /// The dictionary's positions are in stored records: this list may only
    /// grow at its end. Changing, moving or removing any of the first 49
    /// entries changes this digest and fails here on purpose.
    #[test]
    fn the_dictionary_only_grows() {
        use sha2::{Digest, Sha256};
        let first = KNOWN_KEYS[..49].join("\n");
        assert_eq!(
            hex::encode(Sha256::digest(first.as_bytes())),
            PINNED_FIRST_49,
            "the first 49 known keys changed: stored records name keys by position"
        );
        // Below 128 entries a known key is one byte.
        assert!(KNOWN_KEYS.len() < 128);
        for (position, key) in KNOWN_KEYS.iter().enumerate() {
            assert_eq!(known_key_code(key), Some(position as u64 + 1), "{key}");
        }
        assert_eq!(known_key_code("not_a_known_key"), None);
        let mut sorted = KNOWN_KEYS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), KNOWN_KEYS.len(), "a key listed twice");
    }

    #[test]
    fn known_bytes_are_read_as_the_same_value() {
        // Written by this version; must mean the same to every later one.
        let bytes = [
            OBJECT, 3, // three fields, in key order
            1, STRING, 2, b'a', b'1', // "account_id": "a1"
            12, ARRAY, 3, NULL, TRUE, UNSIGNED, 0x80, 0x01, // "amount": [null, true, 128]
            0, 1, b'x', NEGATIVE, 4, // "x": -5
        ];
        let value = json!({"account_id": "a1", "x": -5, "amount": [null, true, 128]});
        assert_eq!(unpack(&bytes).unwrap(), value);
        assert_eq!(pack(&value), bytes);
    }

    #[test]
    fn the_balance_answer_is_half_its_json_text() {
        let answer = json!({
            "account_id": "4f5e6a7b-1234-5678-9abc-def012345678",
            "account_type": "savings",
            "account_number": "******7890",
            "avialable_balance": 125_000_000,
            "ledger_balance": 125_000_000,
            "minimum_balance": 0,
            "account_class": "DEMO",
            "account_status": "ACCOUNT OPEN",
            "currency": "NGN",
            "reference": "DEMO-bench-000000123456",
            "meta": {},
            "bank_marker": "manifold-demo-bank-answer-7f3c",
        });
        let packed = pack(&answer);
        assert_eq!(unpack(&packed).unwrap(), answer);
        assert_eq!(answer.to_string().len(), 352);
        assert_eq!(packed.len(), 169);
    }

    #[test]
    fn edge_numbers_round_trip() {
        for value in [
            json!(u64::MAX),
            json!(i64::MIN),
            json!(-1),
            json!(0),
            json!(0.5),
            json!(-0.0),
            json!(1.0),
            json!(f64::MAX),
            json!(f64::MIN_POSITIVE),
        ] {
            let back = unpack(&pack(&value)).unwrap();
            assert_eq!(back, value);
            assert_eq!(back.to_string(), value.to_string());
        }
    }

    #[test]
    fn damaged_bytes_are_refused_never_misread() {
        let good = pack(&json!({"currency": "NGN", "list": [1, 2, "three"]}));
        // Every truncation is refused.
        for end in 0..good.len() {
            assert!(unpack(&good[..end]).is_err(), "{end} bytes accepted");
        }
        let mut trailing = good.clone();
        trailing.push(NULL);
        assert_eq!(unpack(&trailing), Err(Malformed("bytes after the value")));
        assert!(unpack(&[99]).is_err());
        assert!(
            unpack(&[OBJECT, 1, 127, NULL]).is_err(),
            "a key past the dictionary"
        );
        assert!(unpack(&[STRING, 1, 0xff]).is_err(), "not UTF-8");
        assert!(unpack(&[ARRAY, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        assert!(
            unpack(&[OBJECT, 2, 1, NULL, 1, NULL]).is_err(),
            "a key twice"
        );
        let varint_too_long = [
            UNSIGNED, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ];
        assert!(unpack(&varint_too_long).is_err());
        let too_deep: Vec<u8> = std::iter::repeat_n(ARRAY, 200)
            .flat_map(|tag| [tag, 1])
            .chain([NULL])
            .collect();
        assert_eq!(unpack(&too_deep), Err(Malformed("nested too deep")));
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter_map("finite", Number::from_f64)
                .prop_map(Value::Number),
            ".{0,20}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            let key = prop_oneof![
                proptest::sample::select(KNOWN_KEYS).prop_map(str::to_owned),
                ".{0,12}",
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(key, inner, 0..6)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_json_round_trips_exactly(value in any_json()) {
            let packed = pack(&value);
            let back = unpack(&packed).unwrap();
            prop_assert_eq!(back.to_string(), value.to_string());
            prop_assert_eq!(back, value);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = unpack(&bytes);
        }
    }
}
