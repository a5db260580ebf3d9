//! JSON read with every key of an object given once.
//!
//! RFC 8259 leaves an object with a repeated name to the parser, and parsers
//! disagree: `serde_json` keeps the last value, others the first or both. A
//! signature covers bytes, not their meaning, so two readers of one signed
//! body (an app's logging proxy and the switch, say) could see two different
//! `request_ref`s or amounts in it. Every JSON body the switch or a provider
//! microservice takes in is therefore read with repeated keys refused, at any
//! depth.
//!
//! [`from_slice`] builds a [`serde_json::Value`] in the same single pass as
//! `serde_json::from_slice` would (a [`DeserializeSeed`] over serde_json's
//! own parser, so its recursion limit still applies) and names the first
//! repeated key by its path: `transaction.amount`,
//! `transaction.details.items[2].sku`. [`optional_value`] applies the same
//! rule to a `Value` member of a derived wire type; derived structs already
//! refuse a repeated field of their own (serde's `duplicate field`).

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

use crate::server::describe_json_error;

/// Why a body is not JSON the switch or a provider accepts.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// An object gives the same key twice; `path` names it (see the module docs).
    #[error("the key `{path}` appears more than once in its object")]
    DuplicateKey { path: String },
    /// Not JSON at all; described by position, never by value.
    #[error("{}", describe_json_error(.0))]
    Syntax(serde_json::Error),
}

/// Parses `bytes` as one JSON value, refusing any object that repeats a key.
pub fn from_slice(bytes: &[u8]) -> Result<Value, JsonError> {
    let duplicate = Cell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = UniqueKeys {
        at: Path::Root,
        duplicate: &duplicate,
    }
    .deserialize(&mut deserializer)
    // Trailing characters after the value, as `serde_json::from_slice` refuses them.
    .and_then(|value| deserializer.end().map(|()| value));
    match (parsed, duplicate.take()) {
        (Ok(value), _) => Ok(value),
        (Err(_), Some(path)) => Err(JsonError::DuplicateKey { path }),
        (Err(error), None) => Err(JsonError::Syntax(error)),
    }
}

/// `#[serde(default, deserialize_with = "crate::json::optional_value")]` for
/// an `Option<Value>` member of a wire type: `null` or absent is `None`, and
/// a repeated key inside is refused (its path relative to the member).
pub fn optional_value<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Value>, D::Error> {
    struct Member;
    impl<'de> Visitor<'de> for Member {
        type Value = Option<Value>;
        fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
            formatter.write_str("any JSON value or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, inner: D) -> Result<Self::Value, D::Error> {
            let duplicate = Cell::new(None);
            UniqueKeys {
                at: Path::Root,
                duplicate: &duplicate,
            }
            .deserialize(inner)
            .map(Some)
        }
    }
    deserializer.deserialize_option(Member)
}

/// Where a value sits in the document, as a chain of borrowed steps back to
/// the root: nothing is allocated for it unless a duplicate must be named.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

/// Longer keys are cut in a path: an error names a place, it does not
/// echo a whole body back.
const MAX_KEY_CHARS: usize = 64;

impl Path<'_> {
    fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match *self {
            Path::Root => {}
            Path::Key(parent, key) => {
                parent.write(out);
                let plain = !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
                let key = match key.char_indices().nth(MAX_KEY_CHARS) {
                    Some((cut, _)) => format!("{}…", &key[..cut]),
                    None => key.to_owned(),
                };
                if plain {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(&key);
                } else {
                    // A key with dots, brackets, quotes or spaces is quoted,
                    // so the path stays unambiguous.
                    out.push('[');
                    out.push_str(&Value::String(key).to_string());
                    out.push(']');
                }
            }
            Path::Index(parent, index) => {
                parent.write(out);
                out.push_str(&format!("[{index}]"));
            }
        }
    }
}

/// Builds a [`Value`] like `serde_json`'s own visitor, but refuses a key an
/// object already has and records where it was in `duplicate`.
struct UniqueKeys<'a> {
    at: Path<'a>,
    duplicate: &'a Cell<Option<String>>,
}

impl<'a> UniqueKeys<'a> {
    fn child<'b>(&self, at: Path<'b>) -> UniqueKeys<'b>
    where
        'a: 'b,
    {
        UniqueKeys {
            at,
            duplicate: self.duplicate,
        }
    }
}

impl<'de> DeserializeSeed<'de> for UniqueKeys<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueKeys<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_i128<E: de::Error>(self, value: i128) -> Result<Value, E> {
        Number::deserialize(de::value::I128Deserializer::<E>::new(value)).map(Value::Number)
    }

    fn visit_u128<E: de::Error>(self, value: u128) -> Result<Value, E> {
        Number::deserialize(de::value::U128Deserializer::<E>::new(value)).map(Value::Number)
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut values = Vec::new();
        while let Some(value) =
            seq.next_element_seed(self.child(Path::Index(&self.at, values.len())))?
        {
            values.push(value);
        }
        Ok(Value::Array(values))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut values = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match values.entry(key) {
                Entry::Vacant(entry) => {
                    let value =
                        map.next_value_seed(self.child(Path::Key(&self.at, entry.key())))?;
                    entry.insert(value);
                }
                Entry::Occupied(entry) => {
                    let path = Path::Key(&self.at, entry.key()).render();
                    let error = de::Error::custom(format_args!(
                        "the key `{path}` appears more than once in its object"
                    ));
                    self.duplicate.set(Some(path));
                    return Err(error);
                }
            }
        }
        Ok(Value::Object(values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn duplicate_in(body: &str) -> String {
        match from_slice(body.as_bytes()) {
            Err(JsonError::DuplicateKey { path }) => path,
            other => panic!("expected a duplicate key in {body}, got {other:?}"),
        }
    }

    #[test]
    fn a_repeated_key_is_named_by_its_path_at_any_depth() {
        let cases = [
            (r#"{"request_ref":"a","request_ref":"b"}"#, "request_ref"),
            (
                r#"{"transaction":{"amount":1,"mock_mode":"live","amount":2}}"#,
                "transaction.amount",
            ),
            (
                r#"{"transaction":{"details":{"x":1,"y":{},"x":null}}}"#,
                "transaction.details.x",
            ),
            (
                r#"{"meta":{"items":[{"sku":1},{"sku":2,"sku":3}]}}"#,
                "meta.items[1].sku",
            ),
            (r#"[0,[{"a":1,"a":1}]]"#, "[1][0].a"),
            (r#"{"a.b":{"c":1,"c":1}}"#, r#"["a.b"].c"#),
            (r#"{"":1,"":2}"#, r#"[""]"#),
            // Escapes decode first: these are the same key.
            (r#"{"a":1,"\u0061":2}"#, "a"),
        ];
        for (body, path) in cases {
            assert_eq!(duplicate_in(body), path, "{body}");
        }
    }

    #[test]
    fn the_first_repeat_in_document_order_is_the_one_named() {
        assert_eq!(
            duplicate_in(r#"{"a":{"b":1,"b":2},"a":3}"#),
            "a.b",
            "the inner object is read before its outer key repeats"
        );
    }

    #[test]
    fn a_long_key_is_cut_in_the_path() {
        let key = "k".repeat(1000);
        let path = duplicate_in(&format!(r#"{{"{key}":1,"{key}":2}}"#));
        assert_eq!(path, format!("{}…", "k".repeat(MAX_KEY_CHARS)));
    }

    #[test]
    fn bodies_without_repeats_read_as_serde_json_reads_them() {
        let body = r#"{"s":"x\u00e9\n","n":[-1,18446744073709551615,1.5,0,-0.0,1e300],
            "o":{"b":true,"z":null,"a":{}},"e":[],"k":{"a":1,"A":2,"a ":3}}"#;
        assert_eq!(
            from_slice(body.as_bytes()).unwrap(),
            serde_json::from_str::<Value>(body).unwrap()
        );
    }

    #[test]
    fn not_json_is_a_syntax_error_described_without_the_input() {
        for body in [
            &b"{\"a\":"[..],
            b"{\"a\":1} x",
            b"",
            b"{\"a\":\"0123456789\",}",
        ] {
            match from_slice(body) {
                Err(error @ JsonError::Syntax(_)) => {
                    assert!(!error.to_string().contains("0123456789"), "{error}")
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn serde_jsons_depth_limit_still_applies() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        match from_slice(deep.as_bytes()) {
            Err(JsonError::Syntax(error)) => {
                assert!(error.to_string().contains("recursion limit"), "{error}")
            }
            other => panic!("{other:?}"),
        }
        let fine = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(from_slice(fine.as_bytes()).is_ok());
    }

    #[derive(Debug, Deserialize)]
    struct Wire {
        #[serde(default, deserialize_with = "optional_value")]
        details: Option<Value>,
    }

    #[test]
    fn a_value_member_of_a_wire_type_refuses_repeats_too() {
        let read = |body: &str| serde_json::from_str::<Wire>(body);
        assert_eq!(read(r#"{}"#).unwrap().details, None);
        assert_eq!(read(r#"{"details":null}"#).unwrap().details, None);
        assert_eq!(
            read(r#"{"details":{"a":[1,{"b":2}]}}"#).unwrap().details,
            Some(json!({"a": [1, {"b": 2}]}))
        );
        let error = read(r#"{"details":{"a":[1,{"b":2,"b":3}]}}"#).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("the key `a[1].b` appears more than once"),
            "{error}"
        );
    }
}
