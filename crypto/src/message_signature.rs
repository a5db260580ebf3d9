//! Signed requests: RFC 9421 HTTP Message Signatures with `hmac-sha256`, over an RFC 9530
//! `Content-Digest` of the body.
//!
//! It replaced an older `Signature` header that was an HMAC of `request_ref` alone (now retired):
//! whoever captured one request could replay its signature with another body, on another path, or
//! against another endpoint, and the switch could not tell. This module signs what a request
//! *does*: its method, its path and a SHA-256 digest of the exact body bytes, together with when
//! it was signed (`created`), which key signed it (`keyid`), the algorithm (`alg="hmac-sha256"`)
//! and a `nonce`.
//! Changing any of them, or signing with another key, makes verification fail; a signature older
//! (or newer) than the receiver's window is refused however good its MAC.
//!
//! A signed request carries three headers:
//!
//! ```text
//! Content-Digest: sha-256=:<base64 of SHA-256(body)>:
//! Signature-Input: sig1=("@method" "@path" "content-digest");created=1700000000;keyid="demo-app";alg="hmac-sha256";nonce="req-0001"
//! Signature: sig1=:<base64 of HMAC-SHA256(key, signature base)>:
//! ```
//!
//! The signature base is built exactly as RFC 9421 §2.5 says, generically from whatever the
//! `Signature-Input` lists, so the RFC's own examples are testable here and any RFC 9421 library
//! (the Python reference in `crypto/interop/` uses the `http-message-signatures` package) can
//! produce and check Manifold's signatures. `@authority` and `@scheme` are deliberately not signed:
//! a TLS terminator or load balancer in front of the switch rewrites them, and a signature must
//! survive that. The query string is not signed either, because no Manifold endpoint reads one.
//!
//! Structured fields (`Signature-Input`, `Signature`, `Content-Digest`) are parsed and serialised
//! with the `sfv` crate rather than by hand: the signature base repeats the `Signature-Input` value
//! in its strict serialisation, and a home-made parser that disagreed with the sender's serialiser
//! on one escape would fail valid signatures or, worse, accept a different reading of them.
//!
//! Keys ([`SigningKey`]): an app signs with the signature key derived from its app secret
//! ([`SigningKey::for_app`], the `request-signature` key of [`crate::key`]) and `keyid` = its app
//! id; the switch and a remote provider sign the calls between them with a key derived from the
//! provider's secret under its own HKDF `info` ([`SigningKey::for_provider_hop`]).
//!
//! What a verified signature does *not* settle is replay inside the window: the same request may
//! arrive twice. The switch uses the body's `request_ref` as the `nonce`, so after
//! [`verify_request`] the caller must check that [`VerifiedSignature::nonce`] equals the body's
//! `request_ref`; its idempotency store then answers a repeat from storage instead of acting twice.
//!
//! # Example
//!
//! ```
//! use http::HeaderMap;
//! use manifold_crypto::message_signature::{
//!     sign_request, verify_request, ReceivedRequest, SignatureParams, VerifyPolicy,
//! };
//! use manifold_crypto::{AppKey, SecretString, SignatureError, SigningKey};
//!
//! let app = AppKey::derive(&SecretString::from("manifold-demo-app-secret-0001-abcdefgh"));
//! let key = SigningKey::for_app(&app);
//! let body = br#"{"request_ref": "req-0001", "request_type": "get_balance"}"#;
//! let params = SignatureParams { key_id: "demo-app", created: 1_700_000_000, nonce: "req-0001" };
//! // The app signs...
//! let mut headers = HeaderMap::new();
//! sign_request(&key, "POST", "/transact", body, &params)?.apply(&mut headers);
//! // ...and the switch verifies, a few seconds later by its clock.
//! let request = ReceivedRequest { method: "POST", path: "/transact", headers: &headers, body };
//! let verified =
//!     verify_request(&key, "demo-app", &request, &VerifyPolicy::default(), 1_700_000_004)?;
//! assert_eq!(verified.nonce, "req-0001");
//! // The same signature on another path is refused.
//! let elsewhere = ReceivedRequest { path: "/transact/reverse", ..request };
//! assert_eq!(
//!     verify_request(&key, "demo-app", &elsewhere, &VerifyPolicy::default(), 1_700_000_004),
//!     Err(SignatureError::Mismatch)
//! );
//! # Ok::<(), SignatureError>(())
//! ```

use std::fmt;

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue};
use sfv::{
    key_ref, string_ref, BareItem, DictSerializer, Dictionary, InnerList, Integer, Item,
    ItemSerializer, ListEntry, ListSerializer, Parameters, Parser, StringRef,
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::key::{HKDF_SALT, INFO_PROVIDER_HOP};
use crate::{AppKey, SecretString};

type HmacSha256 = Hmac<Sha256>;

/// The only algorithm signed or accepted, as named in the `alg` parameter.
pub const ALGORITHM: &str = "hmac-sha256";

/// The label [`sign_request`] gives its signature in `Signature-Input` and `Signature`. Receivers
/// accept any label: it is not covered by the signature and carries no meaning.
pub const LABEL: &str = "sig1";

/// The components every signature must cover, in the order [`sign_request`] lists them.
pub const COVERED_COMPONENTS: [&str; 3] = ["@method", "@path", "content-digest"];

const SIGNATURE_INPUT: &str = "signature-input";
const SIGNATURE: &str = "signature";
const CONTENT_DIGEST: &str = "content-digest";
const SHA_256: &str = "sha-256";

/// Why a request's signature or `Content-Digest` was refused, or why a request cannot be signed.
///
/// Messages are written for the developer of the calling app or provider. They name headers,
/// parameters and components, never key bytes, and never repeat a header's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Neither (or only one) of `Signature-Input` and `Signature` was sent.
    #[error(
        "the request is not signed: it needs both a Signature-Input and a Signature header (RFC 9421)"
    )]
    Missing,
    /// A header is not what RFC 9421 / RFC 9530 say it must be; the text says which and how.
    #[error("{0}")]
    Malformed(String),
    /// `Signature-Input` or `Signature` holds more than one signature.
    #[error("the request carries more than one signature; exactly one is accepted")]
    MultipleSignatures,
    /// The signature does not cover one of [`COVERED_COMPONENTS`].
    #[error(
        "the signature does not cover `{0}`; it must cover \"@method\", \"@path\" and \"content-digest\""
    )]
    MissingComponent(&'static str),
    /// The signature covers a component this side cannot take from the request: a derived
    /// component it does not know (or, like `@authority`, deliberately does not see), or a
    /// component with parameters such as `;sf`, `;key`, `;bs` or `;req`.
    #[error("the signature covers {0}, which cannot be taken from the request here")]
    UnsupportedComponent(String),
    /// The signature covers a header field the request does not have.
    #[error("the signature covers the header field `{0}`, which the request does not have")]
    MissingField(String),
    /// `created`, `keyid` or `nonce` is absent from the signature parameters.
    #[error(
        "the signature has no `{0}` parameter; `created`, `keyid` and `nonce` are all required"
    )]
    MissingParameter(&'static str),
    /// A signature parameter (or, when signing, the method or path) breaks its rule.
    #[error("`{what}` {rule}")]
    Invalid {
        /// The parameter or component, e.g. `created` or `@path`.
        what: &'static str,
        /// The rule, e.g. `must be a non-negative integer (unix seconds)`.
        rule: &'static str,
    },
    /// `alg` names an algorithm other than `hmac-sha256`.
    #[error("the signature's `alg` is not \"hmac-sha256\", the only algorithm accepted")]
    UnsupportedAlgorithm,
    /// `keyid` is not the one the receiver expects from this caller.
    #[error("the signature's `keyid` is not the key id of this caller")]
    WrongKeyId,
    /// `created` is further from the receiver's clock than its policy allows.
    #[error(
        "the signature was created {}, outside the window the receiver accepts; check the sender's clock",
        describe_skew(*.skew_secs)
    )]
    OutsideWindow {
        /// `created` minus the receiver's time: negative for an old signature, positive for one
        /// from the future.
        skew_secs: i64,
    },
    /// The optional `expires` parameter is in the past.
    #[error("the signature's `expires` time has passed")]
    Expired,
    /// No `Content-Digest` header, or one without a `sha-256` member.
    #[error("the request has no Content-Digest header with a `sha-256` member (RFC 9530)")]
    MissingDigest,
    /// The `sha-256` member of `Content-Digest` is not the digest of the body received.
    #[error(
        "the Content-Digest header does not match the body: the body was changed or cut short"
    )]
    DigestMismatch,
    /// The MAC is wrong: another key signed, or a signed component changed after signing.
    #[error(
        "the signature does not match the request: it was signed with another key, or the method, path, Content-Digest or signature parameters changed after signing"
    )]
    Mismatch,
}

fn describe_skew(skew_secs: i64) -> String {
    if skew_secs < 0 {
        format!(
            "{} seconds before the receiver's time",
            skew_secs.unsigned_abs()
        )
    } else {
        format!("{skew_secs} seconds after the receiver's time")
    }
}

fn malformed(text: impl Into<String>) -> SignatureError {
    SignatureError::Malformed(text.into())
}

/// An HMAC-SHA256 key for RFC 9421 signatures; zeroized on drop, and `Debug` prints
/// `SigningKey([REDACTED])`.
///
/// Manifold's keys are 32 bytes from HKDF; [`SigningKey::from_bytes`] accepts any length because
/// the RFC's own example key is 64 bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SigningKey {
    bytes: Vec<u8>,
}

impl SigningKey {
    /// The key an app signs its calls with: the `request-signature` key derived from its app
    /// secret (the key the retired `Signature` header used, so an app needs no new secret).
    pub fn for_app(key: &AppKey) -> SigningKey {
        SigningKey {
            bytes: key.signature_key().to_vec(),
        }
    }

    /// The key the switch and a remote provider sign the calls between them with:
    /// HKDF-SHA256(salt `manifold.secure.v1`, the provider secret's UTF-8 bytes, info
    /// `provider-hop-signature`), 32 bytes. The `info` differs from both app keys', so a provider
    /// key can never verify as an app's, nor the reverse, even if a host reused a secret.
    pub fn for_provider_hop(secret: &SecretString) -> SigningKey {
        let hkdf = Hkdf::<Sha256>::new(Some(HKDF_SALT), secret.expose().as_bytes());
        let mut bytes = vec![0; 32];
        // 32 bytes is far below HKDF-SHA256's limit of 255 * 32, so expand cannot fail.
        hkdf.expand(INFO_PROVIDER_HOP, &mut bytes)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        SigningKey { bytes }
    }

    /// A raw key, for the RFC's test vector and interop tests. Production keys come from
    /// [`SigningKey::for_app`] or [`SigningKey::for_provider_hop`].
    pub fn from_bytes(bytes: &[u8]) -> SigningKey {
        SigningKey {
            bytes: bytes.to_vec(),
        }
    }

    fn mac(&self, signature_base: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.bytes)
            .expect("HMAC-SHA256 accepts a key of any length");
        mac.update(signature_base.as_bytes());
        mac
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey([REDACTED])")
    }
}

/// The RFC 9530 `Content-Digest` value of `body`: `sha-256=:<standard base64>:`.
pub fn content_digest(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let mut dictionary = DictSerializer::new();
    _ = dictionary.bare_item(key_ref(SHA_256), digest.as_slice());
    dictionary
        .finish()
        .expect("a dictionary with one member serialises")
}

/// Checks a `Content-Digest` header value against the body received.
///
/// The value is a structured-field Dictionary; its `sha-256` member must be the SHA-256 of
/// `body`. Members for other algorithms are ignored (RFC 9530 lets a recipient ignore digests):
/// only `sha-256` is required, and only it is trusted.
pub fn verify_content_digest(header: &str, body: &[u8]) -> Result<(), SignatureError> {
    let members: Dictionary = Parser::new(header)
        .parse()
        .map_err(|_| malformed("Content-Digest is not a structured-field Dictionary (RFC 9530)"))?;
    let sent = match members.get(SHA_256) {
        None => return Err(SignatureError::MissingDigest),
        Some(ListEntry::Item(Item {
            bare_item: BareItem::ByteSequence(bytes),
            ..
        })) => bytes,
        Some(_) => {
            return Err(malformed(
                "the `sha-256` member of Content-Digest is not a byte sequence (`:base64:`)",
            ))
        }
    };
    // Not secret, but constant time costs nothing and ends the question.
    if bool::from(sent.as_slice().ct_eq(Sha256::digest(body).as_slice())) {
        Ok(())
    } else {
        Err(SignatureError::DigestMismatch)
    }
}

/// What the signer states about a request, besides its method, path and body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureParams<'a> {
    /// Who signs: an app id for an app's call, the configured key id on a provider hop.
    pub key_id: &'a str,
    /// Unix seconds at signing; the receiver refuses it outside its window.
    pub created: u64,
    /// The body's `request_ref` for Manifold calls, so the signature is bound to it.
    pub nonce: &'a str,
}

/// The three header values of a signed request, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// `Content-Digest`.
    pub content_digest: String,
    /// `Signature-Input`, with the signature labelled [`LABEL`].
    pub signature_input: String,
    /// `Signature`.
    pub signature: String,
}

impl SignedHeaders {
    /// Sets the three headers on `headers`, replacing any earlier values.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in [
            (CONTENT_DIGEST, &self.content_digest),
            (SIGNATURE_INPUT, &self.signature_input),
            (SIGNATURE, &self.signature),
        ] {
            let value = HeaderValue::from_str(value)
                .expect("structured-field serialisations are visible ASCII");
            headers.insert(name, value);
        }
    }
}

/// Signs a request: covers `"@method" "@path" "content-digest"` in that order, with the parameters
/// `created`, `keyid`, `alg="hmac-sha256"` and `nonce`, under the label [`LABEL`].
///
/// `path` is the absolute path the receiver sees, without a query (e.g. `/transact`). Fails only
/// on values that cannot travel in the headers: a `key_id` or `nonce` that is not printable ASCII
/// (a structured-field String cannot hold anything else), a `created` beyond 15 digits, a method
/// or path that is not printable ASCII, or a path with a query or fragment.
pub fn sign_request(
    key: &SigningKey,
    method: &str,
    path: &str,
    body: &[u8],
    params: &SignatureParams,
) -> Result<SignedHeaders, SignatureError> {
    let content_digest = content_digest(body);
    let covered = covered_components(params)?;
    let base = own_signature_base(method, path, &content_digest, &covered)?;
    let mac = key.mac(&base).finalize().into_bytes();

    let label = key_ref(LABEL);
    let mut signature_input = DictSerializer::new();
    let mut inner = signature_input.inner_list(label);
    inner.items(&covered.items);
    _ = inner.finish().parameters(&covered.params);
    let mut signature = DictSerializer::new();
    _ = signature.bare_item(label, mac.as_slice());
    Ok(SignedHeaders {
        content_digest,
        signature_input: signature_input.finish().expect("one member"),
        signature: signature.finish().expect("one member"),
    })
}

/// The exact text [`sign_request`] MACs (RFC 9421 §2.5), for debugging an implementation in
/// another language against `fixtures/signatures/vectors.json`. It holds nothing secret.
pub fn signature_base(
    method: &str,
    path: &str,
    body: &[u8],
    params: &SignatureParams,
) -> Result<String, SignatureError> {
    own_signature_base(
        method,
        path,
        &content_digest(body),
        &covered_components(params)?,
    )
}

fn own_signature_base(
    method: &str,
    path: &str,
    content_digest: &str,
    covered: &InnerList,
) -> Result<String, SignatureError> {
    // Checked here so that a caller's bad method or path is named as such, not reported as a
    // malformed request.
    if derived_value("@method", method.to_owned()).is_err() {
        return Err(SignatureError::Invalid {
            what: "@method",
            rule: "must be printable ASCII without spaces at either end",
        });
    }
    if !path.starts_with('/')
        || path.contains(['?', '#'])
        || derived_value("@path", path.to_owned()).is_err()
    {
        return Err(SignatureError::Invalid {
            what: "@path",
            rule: "must be printable ASCII, start with `/` and hold no query or fragment",
        });
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_DIGEST,
        HeaderValue::from_str(content_digest).expect("a serialised digest is visible ASCII"),
    );
    let request = RequestParts {
        method,
        path,
        scheme: None,
        authority: None,
        query: None,
        headers: &headers,
    };
    build_signature_base(&request, covered)
}

/// The covered components and parameters of [`sign_request`]'s signature, in the order they are
/// serialised: the order Python's `http-message-signatures` also uses, so the vectors match.
fn covered_components(params: &SignatureParams) -> Result<InnerList, SignatureError> {
    let items = COVERED_COMPONENTS
        .iter()
        .map(|name| Item::new(string_ref(name)))
        .collect();
    let created = Integer::try_from(params.created).map_err(|_| SignatureError::Invalid {
        what: "created",
        rule: "must be at most 999999999999999 (a structured-field Integer)",
    })?;
    let text = |what: &'static str, value: &str| {
        StringRef::from_str(value)
            .map(|value| BareItem::String(value.to_owned()))
            .map_err(|_| SignatureError::Invalid {
                what,
                rule: "must be printable ASCII (space to `~`) to travel in Signature-Input",
            })
    };
    let mut parameters = Parameters::new();
    parameters.insert(key_ref("created").to_owned(), BareItem::Integer(created));
    parameters.insert(key_ref("keyid").to_owned(), text("keyid", params.key_id)?);
    parameters.insert(key_ref("alg").to_owned(), text("alg", ALGORITHM)?);
    parameters.insert(key_ref("nonce").to_owned(), text("nonce", params.nonce)?);
    Ok(InnerList::with_params(items, parameters))
}

/// How much clock difference the receiver tolerates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyPolicy {
    /// `created` must be within `now ± max_skew_secs`, edges included.
    pub max_skew_secs: u64,
}

impl Default for VerifyPolicy {
    /// Five minutes either way: wide enough for unsynchronised clocks and slow clients, narrow
    /// enough that a captured request is soon useless.
    fn default() -> Self {
        VerifyPolicy { max_skew_secs: 300 }
    }
}

/// A request as received, as far as its signature is concerned.
#[derive(Debug, Clone, Copy)]
pub struct ReceivedRequest<'a> {
    /// The method, as sent (case-sensitive, e.g. `POST`).
    pub method: &'a str,
    /// The absolute path without the query, as sent (not percent-decoded).
    pub path: &'a str,
    /// All headers. Names are case-insensitive; a header sent several times is combined with
    /// `", "` as RFC 9421 §2.1 says.
    pub headers: &'a HeaderMap,
    /// The body exactly as received, before any parsing.
    pub body: &'a [u8],
}

/// What a verified signature vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSignature {
    /// The `keyid`, equal to the one expected.
    pub key_id: String,
    /// The `nonce`; compare it with the body's `request_ref`.
    pub nonce: String,
    /// The `created` time, unix seconds.
    pub created: u64,
}

/// The `keyid` the request's signature claims, so the receiver can look up the key (which
/// provider, which app is calling). **Unverified**: anyone can write any `keyid`; only
/// [`verify_request`] with the key looked up proves it.
pub fn claimed_key_id(headers: &HeaderMap) -> Result<String, SignatureError> {
    let received = received_signature(headers)?;
    match received.covered.params.get("keyid") {
        None => Err(SignatureError::MissingParameter("keyid")),
        Some(value) => string_parameter("keyid", value),
    }
}

/// Verifies the request's one signature under `key`.
///
/// Refuses, each with its own [`SignatureError`]: no signature or more than one; malformed
/// headers; a signature that does not cover `@method`, `@path` and `content-digest`; a missing
/// `created`, `keyid` or `nonce`; an `alg` other than `hmac-sha256`; a `keyid` other than
/// `expected_key_id`; a `created` outside `now_unix ± policy.max_skew_secs` (or an `expires` in the
/// past); a wrong MAC (compared in constant time); and a `Content-Digest` that is not the body's.
///
/// The MAC is checked before the body's digest, so a changed body reports
/// [`SignatureError::DigestMismatch`] and a changed `Content-Digest` header
/// [`SignatureError::Mismatch`].
pub fn verify_request(
    key: &SigningKey,
    expected_key_id: &str,
    request: &ReceivedRequest,
    policy: &VerifyPolicy,
    now_unix: u64,
) -> Result<VerifiedSignature, SignatureError> {
    let received = received_signature(request.headers)?;
    let stated = Stated::read(&received.covered.params)?;
    for required in COVERED_COMPONENTS {
        let covered = received.covered.items.iter().any(|item| {
            item.params.is_empty()
                && item.bare_item.as_string().map(StringRef::as_str) == Some(required)
        });
        if !covered {
            return Err(SignatureError::MissingComponent(required));
        }
    }
    if stated.key_id != expected_key_id {
        return Err(SignatureError::WrongKeyId);
    }
    if stated.created.abs_diff(now_unix) > policy.max_skew_secs {
        let skew = i128::from(stated.created) - i128::from(now_unix);
        return Err(SignatureError::OutsideWindow {
            skew_secs: i64::try_from(skew).unwrap_or(if skew < 0 { i64::MIN } else { i64::MAX }),
        });
    }
    if stated.expires.is_some_and(|expires| expires < now_unix) {
        return Err(SignatureError::Expired);
    }
    // Checked before the base is built so that its absence gets its own error rather than "a
    // covered field is missing".
    let digest_header = match combined_field(request.headers, CONTENT_DIGEST) {
        Field::Absent => return Err(SignatureError::MissingDigest),
        Field::NotAscii => return Err(malformed("Content-Digest is not ASCII")),
        Field::Value(value) => value,
    };
    let parts = RequestParts {
        method: request.method,
        path: request.path,
        scheme: None,
        authority: None,
        query: None,
        headers: request.headers,
    };
    check_mac(key, &parts, &received)?;
    verify_content_digest(&digest_header, request.body)?;
    Ok(VerifiedSignature {
        key_id: stated.key_id,
        nonce: stated.nonce,
        created: stated.created,
    })
}

/// The one signature a request carries, parsed but not checked.
struct Received {
    /// The `Signature-Input` member: covered components, with the signature parameters.
    covered: InnerList,
    /// The `Signature` member's bytes.
    signature: Vec<u8>,
}

fn received_signature(headers: &HeaderMap) -> Result<Received, SignatureError> {
    let dictionary = |name: &str, shown: &str| -> Result<Option<Dictionary>, SignatureError> {
        match combined_field(headers, name) {
            Field::Absent => Ok(None),
            Field::NotAscii => Err(malformed(format!("{shown} is not ASCII"))),
            Field::Value(value) => Parser::new(&value).parse().map(Some).map_err(|_| {
                malformed(format!(
                    "{shown} is not a structured-field Dictionary (RFC 8941), as RFC 9421 requires"
                ))
            }),
        }
    };
    let (Some(inputs), Some(signatures)) = (
        dictionary(SIGNATURE_INPUT, "Signature-Input")?,
        dictionary(SIGNATURE, "Signature")?,
    ) else {
        return Err(SignatureError::Missing);
    };
    if inputs.len() > 1 || signatures.len() > 1 {
        return Err(SignatureError::MultipleSignatures);
    }
    let Some((label, input)) = inputs.into_iter().next() else {
        return Err(SignatureError::Missing);
    };
    let ListEntry::InnerList(covered) = input else {
        return Err(malformed(
            "the Signature-Input member is not an inner list of covered components, e.g. (\"@method\" \"@path\")",
        ));
    };
    let signature = match signatures.get(label.as_str()) {
        Some(ListEntry::Item(Item {
            bare_item: BareItem::ByteSequence(bytes),
            ..
        })) => bytes.clone(),
        Some(_) => return Err(malformed("the Signature member is not a byte sequence (`:base64:`)")),
        None if signatures.is_empty() => return Err(SignatureError::Missing),
        None => {
            return Err(malformed(
                "Signature and Signature-Input use different labels; the label must be the same in both",
            ))
        }
    };
    Ok(Received { covered, signature })
}

/// The signature parameters [`verify_request`] needs, type-checked.
struct Stated {
    created: u64,
    key_id: String,
    nonce: String,
    expires: Option<u64>,
}

impl Stated {
    fn read(params: &Parameters) -> Result<Stated, SignatureError> {
        let required = |name: &'static str| {
            params
                .get(name)
                .ok_or(SignatureError::MissingParameter(name))
        };
        let created = unix_parameter("created", required("created")?)?;
        let key_id = string_parameter("keyid", required("keyid")?)?;
        let nonce = string_parameter("nonce", required("nonce")?)?;
        if let Some(alg) = params.get("alg") {
            if string_parameter("alg", alg)? != ALGORITHM {
                return Err(SignatureError::UnsupportedAlgorithm);
            }
        }
        let expires = params
            .get("expires")
            .map(|value| unix_parameter("expires", value))
            .transpose()?;
        Ok(Stated {
            created,
            key_id,
            nonce,
            expires,
        })
    }
}

fn unix_parameter(what: &'static str, value: &BareItem) -> Result<u64, SignatureError> {
    value
        .as_integer()
        .and_then(|value| u64::try_from(value).ok())
        .ok_or(SignatureError::Invalid {
            what,
            rule: "must be a non-negative integer (unix seconds)",
        })
}

fn string_parameter(what: &'static str, value: &BareItem) -> Result<String, SignatureError> {
    value
        .as_string()
        .map(|value| value.as_str().to_owned())
        .ok_or(SignatureError::Invalid {
            what,
            rule: "must be a string (in double quotes)",
        })
}

/// Recomputes the MAC over the signature base the received `Signature-Input` describes and
/// compares it with the received signature in constant time.
fn check_mac(
    key: &SigningKey,
    request: &RequestParts,
    received: &Received,
) -> Result<(), SignatureError> {
    let base = build_signature_base(request, &received.covered)?;
    key.mac(&base)
        .verify_slice(&received.signature)
        .map_err(|_| SignatureError::Mismatch)
}

/// The message a signature base is built from. Parts a receiver does not know are `None`, and a
/// signature covering them cannot be verified there.
struct RequestParts<'a> {
    method: &'a str,
    path: &'a str,
    scheme: Option<&'a str>,
    authority: Option<&'a str>,
    /// The query without its `?`; `Some("")` when the request has none.
    query: Option<&'a str>,
    headers: &'a HeaderMap,
}

/// RFC 9421 §2.5: one line per covered component, `"<identifier>": <value>`, then the
/// `"@signature-params"` line holding the covered list and parameters in strict serialisation.
fn build_signature_base(
    request: &RequestParts,
    covered: &InnerList,
) -> Result<String, SignatureError> {
    let mut base = String::new();
    let mut seen: Vec<&str> = Vec::with_capacity(covered.items.len());
    for component in &covered.items {
        let identifier = ItemSerializer::new()
            .bare_item(&component.bare_item)
            .parameters(&component.params)
            .finish();
        let Some(name) = component.bare_item.as_string().map(StringRef::as_str) else {
            return Err(malformed(
                "Signature-Input lists a component that is not a string, e.g. \"@method\"",
            ));
        };
        if name == "@signature-params" {
            return Err(malformed(
                "Signature-Input must not list \"@signature-params\" as a covered component",
            ));
        }
        // Component parameters (`sf`, `key`, `bs`, `req`, `tr`) are not needed by Manifold and are
        // refused as a whole rather than half-supported; with none, identity is the name alone.
        if !component.params.is_empty() {
            return Err(SignatureError::UnsupportedComponent(identifier));
        }
        if seen.contains(&name) {
            return Err(malformed(format!(
                "Signature-Input lists the component {identifier} twice"
            )));
        }
        seen.push(name);
        let value = component_value(request, name, &identifier)?;
        base.push_str(&identifier);
        base.push_str(": ");
        base.push_str(&value);
        base.push('\n');
    }
    base.push_str("\"@signature-params\": ");
    base.push_str(&serialize_inner_list(covered));
    Ok(base)
}

fn serialize_inner_list(inner: &InnerList) -> String {
    let mut list = ListSerializer::new();
    let mut items = list.inner_list();
    items.items(&inner.items);
    _ = items.finish().parameters(&inner.params);
    list.finish().expect("a list with one member serialises")
}

fn component_value(
    request: &RequestParts,
    name: &str,
    identifier: &str,
) -> Result<String, SignatureError> {
    let unsupported = || SignatureError::UnsupportedComponent(identifier.to_owned());
    if name.starts_with('@') {
        let value = match name {
            "@method" => request.method.to_owned(),
            // RFC 9110 §4.2.3: an empty path is `/`.
            "@path" if request.path.is_empty() => "/".to_owned(),
            "@path" => request.path.to_owned(),
            "@query" => format!("?{}", request.query.ok_or_else(unsupported)?),
            "@authority" => {
                normalized_authority(request.authority.ok_or_else(unsupported)?, request.scheme)
            }
            "@scheme" => request.scheme.ok_or_else(unsupported)?.to_ascii_lowercase(),
            "@target-uri" => {
                let (Some(scheme), Some(authority), Some(query)) =
                    (request.scheme, request.authority, request.query)
                else {
                    return Err(unsupported());
                };
                format!(
                    "{scheme}://{authority}{}",
                    path_and_query(request.path, query)
                )
            }
            "@request-target" => {
                path_and_query(request.path, request.query.ok_or_else(unsupported)?)
            }
            _ => return Err(unsupported()),
        };
        return derived_value(name, value);
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(malformed(format!(
            "Signature-Input names the header field {identifier} in upper case; RFC 9421 requires lower case"
        )));
    }
    match combined_field(request.headers, name) {
        Field::Absent => Err(SignatureError::MissingField(name.to_owned())),
        Field::NotAscii => Err(malformed(format!(
            "the covered header field `{name}` is not ASCII"
        ))),
        Field::Value(value) => Ok(value),
    }
}

/// RFC 9421 §2.2: derived values are printable ASCII and spaces, with no whitespace at either end,
/// which also keeps a value from injecting a line into the signature base.
fn derived_value(name: &str, value: String) -> Result<String, SignatureError> {
    let printable = value.bytes().all(|b| (0x20..=0x7e).contains(&b));
    if printable && !value.is_empty() && !value.starts_with(' ') && !value.ends_with(' ') {
        Ok(value)
    } else {
        Err(malformed(format!(
            "the request's {name} is not printable ASCII, so it cannot be signed"
        )))
    }
}

fn path_and_query(path: &str, query: &str) -> String {
    let path = if path.is_empty() { "/" } else { path };
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

/// RFC 9110 §4.2.3 as RFC 9421 §2.2.3 asks: the host in lower case, the scheme's default port
/// dropped.
fn normalized_authority(authority: &str, scheme: Option<&str>) -> String {
    let authority = authority.to_ascii_lowercase();
    let default_port = match scheme.map(str::to_ascii_lowercase).as_deref() {
        Some("https") => ":443",
        Some("http") => ":80",
        _ => return authority,
    };
    match authority.strip_suffix(default_port) {
        Some(host) => host.to_owned(),
        None => authority,
    }
}

enum Field {
    Absent,
    NotAscii,
    Value(String),
}

/// A header's value as RFC 9421 §2.1 canonicalises it: every occurrence, in order, trimmed of
/// surrounding whitespace and joined with `", "`. (`http` refuses obs-fold and bare CR/LF in header
/// values, so unfolding has nothing left to do.)
fn combined_field(headers: &HeaderMap, name: &str) -> Field {
    let mut combined: Option<String> = None;
    for value in headers.get_all(name) {
        let Ok(value) = value.to_str() else {
            return Field::NotAscii;
        };
        let value = value.trim_matches([' ', '\t']);
        match &mut combined {
            None => combined = Some(value.to_owned()),
            Some(combined) => {
                combined.push_str(", ");
                combined.push_str(value);
            }
        }
    }
    combined.map_or(Field::Absent, Field::Value)
}

#[cfg(test)]
mod tests;
