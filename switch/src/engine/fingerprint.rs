//! "The same request": a digest of a body that a repeated `request_ref` must
//! match, independent of key order and of `auth.secure`'s fresh encryption.

use manifold_crypto::AppKey;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::store::Fingerprint;

/// Writes `value` as compact JSON with sorted keys at every level, so the
/// digest of a body does not depend on the order an app's JSON library
/// writes keys in. `leave_out` names one member of one top-level object
/// that does not count (`auth.secure`). Streams into the digest: this runs
/// on every request, and building the text first was measurable.
fn write_canonical(
    value: &Value,
    out: &mut impl std::io::Write,
    leave_out: Option<(&str, &str)>,
) -> std::io::Result<()> {
    match value {
        Value::Object(map) => write_object(map, out, None, leave_out),
        Value::Array(items) => {
            out.write_all(b"[")?;
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.write_all(b",")?;
                }
                write_canonical(item, out, None)?;
            }
            out.write_all(b"]")
        }
        scalar => Ok(serde_json::to_writer(&mut *out, scalar)?),
    }
}

/// An object's members in key order, without the member `skipped`;
/// `leave_out` is the `(member, its member)` to skip one level down.
fn write_object(
    map: &serde_json::Map<String, Value>,
    out: &mut impl std::io::Write,
    skipped: Option<&str>,
    leave_out: Option<(&str, &str)>,
) -> std::io::Result<()> {
    let mut members: Vec<_> = map
        .iter()
        .filter(|(key, _)| Some(key.as_str()) != skipped)
        .collect();
    members.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.write_all(b"{")?;
    for (index, (key, member)) in members.into_iter().enumerate() {
        if index > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, key)?;
        out.write_all(b":")?;
        match (member, leave_out) {
            (Value::Object(inner), Some((object, inner_skipped))) if object == key => {
                write_object(inner, out, Some(inner_skipped), None)?
            }
            _ => write_canonical(member, out, None)?,
        }
    }
    out.write_all(b"}")
}

/// A digest identifying "the same request". `auth.secure` is re-encrypted with
/// a fresh nonce on every retry, so its *plaintext* counts, not its bytes;
/// the plaintext enters only through a digest keyed with the app's secret
/// ([`AppKey::keyed_digest_hex`](manifold_crypto::AppKey::keyed_digest_hex)),
/// so the stored digest cannot be brute-forced back to an account number.
pub fn fingerprint(key: &AppKey, root: &Value, secure_plaintext: Option<&[u8]>) -> Fingerprint {
    let mut hasher = Sha256::new();
    // Writing into a digest cannot fail.
    let _ = write_canonical(root, &mut hasher, Some(("auth", "secure")));
    if let Some(plaintext) = secure_plaintext {
        let inner = hex::encode(Sha256::digest(plaintext));
        hasher.update([0x1f]);
        hasher.update(key.keyed_digest_hex(inner.as_bytes()).as_bytes());
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::write_canonical;
    use serde_json::json;

    #[test]
    fn canonical_json_ignores_key_order() {
        let a = json!({"b": 1, "a": {"d": [1, {"y": 2, "x": 1}], "c": null}});
        let b: serde_json::Value =
            serde_json::from_str(r#"{"a":{"c":null,"d":[1,{"x":1,"y":2}]},"b":1}"#).unwrap();
        assert_eq!(canonical_json(&a, None), canonical_json(&b, None));
        assert_ne!(
            canonical_json(&a, None),
            canonical_json(&json!({"b": 2}), None)
        );
    }

    fn canonical_json(value: &serde_json::Value, leave_out: Option<(&str, &str)>) -> String {
        let mut out = Vec::new();
        write_canonical(value, &mut out, leave_out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Stored fingerprints must stay valid: the text hashed is exactly what
    /// the first version hashed (keys sorted, compact, `auth.secure` removed).
    #[test]
    fn canonical_json_is_compact_and_leaves_out_only_auth_secure() {
        let body = json!({
            "z": "é\"\n", "auth": {"type": "bank.account", "secure": "x", "b": [true, 1.5]},
            "nested": {"secure": 1}, "a": []
        });
        assert_eq!(
            canonical_json(&body, Some(("auth", "secure"))),
            r#"{"a":[],"auth":{"b":[true,1.5],"type":"bank.account"},"nested":{"secure":1},"z":"é\"\n"}"#
        );
    }
}
