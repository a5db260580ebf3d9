//! Tests of [`super`]: the RFCs' own examples, key derivation, and every way verification refuses.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use http::header::HeaderName;

use super::*;

/// RFC 9421 Appendix B.1.5, `test-shared-secret`: 64 bytes, base64.
const RFC_SHARED_SECRET: &str =
    "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ==";

/// Undoes RFC 8792 single-backslash line wrapping, so the RFCs' examples can be pasted as printed.
fn unwrap_8792(text: &str) -> String {
    let mut out = String::new();
    let mut continued = false;
    for line in text.lines() {
        let line = if continued { line.trim_start() } else { line };
        match line.strip_suffix('\\') {
            Some(head) => {
                out.push_str(head);
                continued = true;
            }
            None => {
                out.push_str(line);
                out.push('\n');
                continued = false;
            }
        }
    }
    out.pop();
    out
}

fn headers(fields: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in fields {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

/// The header section of RFC 9421 Appendix B.2's `test-request`.
fn rfc_test_request_headers() -> HeaderMap {
    headers(&[
        ("Host", "example.com"),
        ("Date", "Tue, 20 Apr 2021 02:07:55 GMT"),
        ("Content-Type", "application/json"),
        (
            "Content-Digest",
            &unwrap_8792(
                "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+T\\
                   aPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:",
            ),
        ),
        ("Content-Length", "18"),
    ])
}

/// `POST /foo?param=Value&Pet=dog` to `example.com`, over HTTPS.
fn rfc_test_request(headers: &HeaderMap) -> RequestParts<'_> {
    RequestParts {
        method: "POST",
        path: "/foo",
        scheme: Some("https"),
        authority: Some("example.com"),
        query: Some("param=Value&Pet=dog"),
        headers,
    }
}

/// The covered components and parameters of a Signature-Input value like `label=(...);...`.
fn covered(signature_input: &str) -> InnerList {
    let members: Dictionary = Parser::new(signature_input).parse().unwrap();
    match members.into_iter().next().unwrap().1 {
        ListEntry::InnerList(inner) => inner,
        ListEntry::Item(_) => panic!("not an inner list"),
    }
}

fn rfc_key() -> SigningKey {
    SigningKey::from_bytes(&BASE64.decode(RFC_SHARED_SECRET).unwrap())
}

#[test]
fn rfc9421_b25_hmac_sha256_base_signature_and_verification() {
    // RFC 9421 Appendix B.2.5, "Signing a Request Using hmac-sha256", as printed.
    let signature_input = unwrap_8792(
        "sig-b25=(\"date\" \"@authority\" \"content-type\")\\
           ;created=1618884473;keyid=\"test-shared-secret\"",
    );
    let expected_base = unwrap_8792(
        "\"date\": Tue, 20 Apr 2021 02:07:55 GMT
\"@authority\": example.com
\"content-type\": application/json
\"@signature-params\": (\"date\" \"@authority\" \"content-type\")\\
  ;created=1618884473;keyid=\"test-shared-secret\"",
    );
    let expected_signature = "sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:";

    let mut message = rfc_test_request_headers();
    let request = rfc_test_request(&message);
    let base = build_signature_base(&request, &covered(&signature_input)).unwrap();
    assert_eq!(base, expected_base);

    let mac = rfc_key().mac(&base).finalize().into_bytes();
    let mut signature = DictSerializer::new();
    _ = signature.bare_item(key_ref("sig-b25"), mac.as_slice());
    assert_eq!(signature.finish().unwrap(), expected_signature);

    // The receiving side: parse both headers from the message and check the MAC.
    message.insert(
        SIGNATURE_INPUT,
        HeaderValue::from_str(&signature_input).unwrap(),
    );
    message.insert(SIGNATURE, HeaderValue::from_static(expected_signature));
    let received = received_signature(&message).unwrap();
    let request = rfc_test_request(&message);
    check_mac(&rfc_key(), &request, &received).unwrap();
    let mut other_key = BASE64.decode(RFC_SHARED_SECRET).unwrap();
    other_key[0] ^= 1;
    assert_eq!(
        check_mac(&SigningKey::from_bytes(&other_key), &request, &received),
        Err(SignatureError::Mismatch)
    );
    let mut changed = message.clone();
    changed.insert("content-type", HeaderValue::from_static("text/plain"));
    assert_eq!(
        check_mac(&rfc_key(), &rfc_test_request(&changed), &received),
        Err(SignatureError::Mismatch)
    );

    // A valid RFC 9421 signature, but not one Manifold accepts: no nonce, and it covers neither
    // the method, the path nor the body.
    let request = ReceivedRequest {
        method: "POST",
        path: "/foo",
        headers: &message,
        body: br#"{"hello": "world"}"#,
    };
    assert_eq!(
        verify_request(
            &rfc_key(),
            "test-shared-secret",
            &request,
            &VerifyPolicy::default(),
            1618884473
        ),
        Err(SignatureError::MissingParameter("nonce"))
    );
}

#[test]
fn rfc9421_signature_bases_of_other_examples() {
    let message = rfc_test_request_headers();
    let request = rfc_test_request(&message);
    // (Signature-Input member, signature base) as printed in RFC 9421: §2.5, B.2.3 and B.2.6.
    let cases = [
        (
            "sig1=(\"@method\" \"@authority\" \"@path\" \\
               \"content-digest\" \"content-length\" \"content-type\")\\
               ;created=1618884473;keyid=\"test-key-rsa-pss\"",
            "\"@method\": POST
\"@authority\": example.com
\"@path\": /foo
\"content-digest\": sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX\\
  +TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:
\"content-length\": 18
\"content-type\": application/json
\"@signature-params\": (\"@method\" \"@authority\" \"@path\" \\
  \"content-digest\" \"content-length\" \"content-type\")\\
  ;created=1618884473;keyid=\"test-key-rsa-pss\"",
        ),
        (
            "sig-b23=(\"date\" \"@method\" \"@path\" \"@query\" \\
               \"@authority\" \"content-type\" \"content-digest\" \"content-length\")\\
               ;created=1618884473;keyid=\"test-key-rsa-pss\"",
            "\"date\": Tue, 20 Apr 2021 02:07:55 GMT
\"@method\": POST
\"@path\": /foo
\"@query\": ?param=Value&Pet=dog
\"@authority\": example.com
\"content-type\": application/json
\"content-digest\": sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX\\
  +TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:
\"content-length\": 18
\"@signature-params\": (\"date\" \"@method\" \"@path\" \"@query\" \\
  \"@authority\" \"content-type\" \"content-digest\" \"content-length\")\\
  ;created=1618884473;keyid=\"test-key-rsa-pss\"",
        ),
        (
            "sig-b26=(\"date\" \"@method\" \"@path\" \"@authority\" \\
               \"content-type\" \"content-length\");created=1618884473\\
               ;keyid=\"test-key-ed25519\"",
            "\"date\": Tue, 20 Apr 2021 02:07:55 GMT
\"@method\": POST
\"@path\": /foo
\"@authority\": example.com
\"content-type\": application/json
\"content-length\": 18
\"@signature-params\": (\"date\" \"@method\" \"@path\" \"@authority\" \\
  \"content-type\" \"content-length\");created=1618884473\\
  ;keyid=\"test-key-ed25519\"",
        ),
    ];
    for (signature_input, expected) in cases {
        let base = build_signature_base(&request, &covered(&unwrap_8792(signature_input)));
        assert_eq!(base.unwrap(), unwrap_8792(expected), "{signature_input}");
    }
    // B.2.2 covers `"@query-param";name="Pet"`: a component parameter, refused as a whole.
    let b22 = "sig-b22=(\"@authority\" \"content-digest\" \"@query-param\";name=\"Pet\")\
               ;created=1618884473;keyid=\"test-key-rsa-pss\";tag=\"header-example\"";
    assert_eq!(
        build_signature_base(&request, &covered(b22)),
        Err(SignatureError::UnsupportedComponent(
            "\"@query-param\";name=\"Pet\"".into()
        ))
    );
}

#[test]
fn rfc9421_field_values_are_trimmed_and_combined() {
    // RFC 9421 §2.1's example fields (all but the obsolete line folding, which `http` refuses).
    let message = headers(&[
        ("Host", "www.example.com"),
        ("Date", "Tue, 20 Apr 2021 02:07:56 GMT"),
        ("X-OWS-Header", "   Leading and trailing whitespace.   "),
        ("Cache-Control", "max-age=60"),
        ("Cache-Control", "   must-revalidate"),
        ("Example-Dict", " a=1,    b=2;x=1;y=2,   c=(a   b   c)"),
        ("X-Empty-Header", ""),
    ]);
    let request = RequestParts {
        method: "GET",
        path: "/",
        scheme: None,
        authority: None,
        query: None,
        headers: &message,
    };
    let base = build_signature_base(
        &request,
        &covered(
            "s=(\"host\" \"date\" \"x-ows-header\" \"cache-control\" \"example-dict\" \"x-empty-header\")",
        ),
    )
    .unwrap();
    let expected = [
        "\"host\": www.example.com",
        "\"date\": Tue, 20 Apr 2021 02:07:56 GMT",
        "\"x-ows-header\": Leading and trailing whitespace.",
        "\"cache-control\": max-age=60, must-revalidate",
        "\"example-dict\": a=1,    b=2;x=1;y=2,   c=(a   b   c)",
        // An empty field still gets the space after the colon.
        "\"x-empty-header\": ",
        "\"@signature-params\": (\"host\" \"date\" \"x-ows-header\" \"cache-control\" \"example-dict\" \"x-empty-header\")",
    ]
    .join("\n");
    assert_eq!(base, expected);
}

#[test]
fn rfc9421_derived_component_values() {
    let none = HeaderMap::new();
    let request = |scheme, authority, path, query| RequestParts {
        method: "POST",
        path,
        scheme: Some(scheme),
        authority: Some(authority),
        query: Some(query),
        headers: &none,
    };
    // RFC 9421 §2.2.1 to §2.2.7, for `POST /path?param=value` to www.example.com.
    let https = request("https", "www.example.com", "/path", "param=value");
    let cases = [
        (&https, "@method", "POST"),
        (
            &https,
            "@target-uri",
            "https://www.example.com/path?param=value",
        ),
        (&https, "@authority", "www.example.com"),
        (&https, "@request-target", "/path?param=value"),
        (&https, "@path", "/path"),
        (&https, "@query", "?param=value"),
    ];
    for (request, name, expected) in cases {
        assert_eq!(
            component_value(request, name, name).unwrap(),
            expected,
            "{name}"
        );
    }
    let http = request("http", "www.example.com", "/path", "param=value");
    assert_eq!(component_value(&http, "@scheme", "").unwrap(), "http");
    let encoded = request(
        "https",
        "www.example.com",
        "/path",
        "param=value&foo=bar&baz=bat%2Dman",
    );
    assert_eq!(
        component_value(&encoded, "@query", "").unwrap(),
        "?param=value&foo=bar&baz=bat%2Dman"
    );
    let bare = request("https", "www.example.com", "/path", "queryString");
    assert_eq!(
        component_value(&bare, "@query", "").unwrap(),
        "?queryString"
    );
    // No query at all is a lone `?`; an empty path is `/`; the authority is normalised.
    let empty = request("HTTPS", "WWW.Example.COM:443", "", "");
    assert_eq!(component_value(&empty, "@query", "").unwrap(), "?");
    assert_eq!(component_value(&empty, "@path", "").unwrap(), "/");
    assert_eq!(
        component_value(&empty, "@authority", "").unwrap(),
        "www.example.com"
    );
    assert_eq!(component_value(&empty, "@scheme", "").unwrap(), "https");
    let port = request("https", "example.com:8443", "/", "");
    assert_eq!(
        component_value(&port, "@authority", "").unwrap(),
        "example.com:8443"
    );
    // What a receiver does not know, or no request has, cannot be derived.
    let unknown = RequestParts {
        scheme: None,
        authority: None,
        query: None,
        ..https
    };
    for name in [
        "@authority",
        "@scheme",
        "@target-uri",
        "@request-target",
        "@query",
        "@status",
        "@query-param",
        "@nonsense",
    ] {
        assert_eq!(
            component_value(&unknown, name, name),
            Err(SignatureError::UnsupportedComponent(name.into())),
        );
    }
    let injected = RequestParts {
        method: "POST\n\"@path\": /other",
        ..unknown
    };
    assert!(matches!(
        component_value(&injected, "@method", ""),
        Err(SignatureError::Malformed(_))
    ));
}

#[test]
fn rfc9530_digest_examples() {
    // RFC 9530 Appendix D, "Sample Digest Values", for the JSON object `{"hello": "world"}`...
    assert_eq!(
        content_digest(br#"{"hello": "world"}"#),
        "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
    );
    // ...Appendix B.1, the same object followed by an LF...
    assert_eq!(
        content_digest(b"{\"hello\": \"world\"}\n"),
        "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:"
    );
    // ...and Appendix B.2, empty content.
    assert_eq!(
        content_digest(b""),
        "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"
    );
}

#[test]
fn verify_content_digest_cases() {
    let body = br#"{"hello": "world"}"#;
    // RFC 9530 Appendix D's values for `body`; `RK/0...` is the digest of `body` plus an LF.
    let sha256 = "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:";
    let sha512 = "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:";
    let other_sha256 = "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:";
    let cases: &[(&str, &[u8], Result<(), SignatureError>)] = &[
        (sha256, body, Ok(())),
        (&format!("{sha512}, {sha256}"), body, Ok(())),
        (&format!("{sha256},{sha512}"), body, Ok(())),
        // Other algorithms are ignored, even wrong ones: only sha-256 is trusted.
        (
            &format!("sha-512=:AAAA:, {sha256}, md5=:Sd/dVLAcvNLSq16eXua5uQ==:"),
            body,
            Ok(()),
        ),
        (
            sha256,
            b"{\"hello\": \"world\"}\n",
            Err(SignatureError::DigestMismatch),
        ),
        (sha256, b"", Err(SignatureError::DigestMismatch)),
        (other_sha256, body, Err(SignatureError::DigestMismatch)),
        (
            "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9D:",
            body,
            Err(SignatureError::DigestMismatch),
        ),
        ("sha-256=::", body, Err(SignatureError::DigestMismatch)),
        (sha512, body, Err(SignatureError::MissingDigest)),
        (
            "md5=:Sd/dVLAcvNLSq16eXua5uQ==:",
            body,
            Err(SignatureError::MissingDigest),
        ),
        ("", body, Err(SignatureError::MissingDigest)),
        (
            "SHA-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:",
            body,
            Err(malformed_digest()),
        ),
        (
            "sha-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE",
            body,
            Err(malformed_member()),
        ),
        (
            "sha-256=(:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:)",
            body,
            Err(malformed_member()),
        ),
        ("sha-256=:not base64:", body, Err(malformed_digest())),
        ("not a dictionary!", body, Err(malformed_digest())),
    ];
    for (header, body, expected) in cases {
        assert_eq!(&verify_content_digest(header, body), expected, "{header}");
    }
}

fn malformed_digest() -> SignatureError {
    malformed("Content-Digest is not a structured-field Dictionary (RFC 9530)")
}

fn malformed_member() -> SignatureError {
    malformed("the `sha-256` member of Content-Digest is not a byte sequence (`:base64:`)")
}

#[test]
fn provider_hop_key_is_hkdf_with_its_own_info() {
    // Recompute HKDF-SHA256 with hmac directly (extract, then the one expand block) so that wrong
    // wiring of salt or info shows up here, not only against Python.
    let secret = "demo-remote-hop-secret-please-change-me-0123";
    let mut extract = HmacSha256::new_from_slice(b"manifold.secure.v1").unwrap();
    extract.update(secret.as_bytes());
    let prk = extract.finalize().into_bytes();
    let mut expand = HmacSha256::new_from_slice(&prk).unwrap();
    expand.update(b"provider-hop-signature");
    expand.update(&[1]);
    let expected = expand.finalize().into_bytes();

    let key = SigningKey::for_provider_hop(&SecretString::from(secret));
    assert_eq!(key.bytes, expected.as_slice());
    let app = AppKey::derive(&SecretString::from(secret));
    assert_ne!(key.bytes, app.signature_key());
    assert_ne!(key.bytes, app.encryption_key());
    assert_eq!(SigningKey::for_app(&app).bytes, app.signature_key());
}

#[test]
fn signing_keys_never_print() {
    let app = AppKey::derive(&SecretString::from(
        "manifold-demo-app-secret-0001-abcdefgh",
    ));
    for key in [
        SigningKey::for_app(&app),
        SigningKey::for_provider_hop(&SecretString::from("provider-secret-0123456789-abcdefgh")),
        rfc_key(),
    ] {
        for printed in [format!("{key:?}"), format!("{:#?}", Some(&key))] {
            assert!(printed.contains("SigningKey([REDACTED])"), "{printed}");
            assert!(!printed.contains(&hex::encode(&key.bytes)));
            assert!(!printed.contains(&BASE64.encode(&key.bytes)));
            assert!(!printed.contains(&format!("{:?}", key.bytes)));
        }
    }
}

// ---------------------------------------------------------------- signing and verifying

const NOW: u64 = 1_700_000_000;
const APP_SECRET: &str = "manifold-demo-app-secret-0001-abcdefgh";
const BODY: &[u8] =
    br#"{"request_ref": "req-0001", "request_type": "transfer_funds", "amount": 1000}"#;

fn app_key(secret: &str) -> SigningKey {
    SigningKey::for_app(&AppKey::derive(&SecretString::from(secret)))
}

fn params() -> SignatureParams<'static> {
    SignatureParams {
        key_id: "demo-app",
        created: NOW,
        nonce: "req-0001",
    }
}

/// One request as the receiver sees it, with what the receiver expects.
#[derive(Clone)]
struct Case {
    method: &'static str,
    path: &'static str,
    headers: HeaderMap,
    body: Vec<u8>,
    key: SigningKey,
    expected_key_id: &'static str,
    now: u64,
}

impl Case {
    /// `POST /transact` with BODY, signed by demo-app at NOW, received at NOW.
    fn signed() -> Case {
        let key = app_key(APP_SECRET);
        let signed = sign_request(&key, "POST", "/transact", BODY, &params()).unwrap();
        let mut headers = headers(&[("Content-Type", "application/json")]);
        signed.apply(&mut headers);
        Case {
            method: "POST",
            path: "/transact",
            headers,
            body: BODY.to_vec(),
            key,
            expected_key_id: "demo-app",
            now: NOW,
        }
    }

    fn verify(&self) -> Result<VerifiedSignature, SignatureError> {
        let request = ReceivedRequest {
            method: self.method,
            path: self.path,
            headers: &self.headers,
            body: &self.body,
        };
        let policy = VerifyPolicy { max_skew_secs: 300 };
        verify_request(&self.key, self.expected_key_id, &request, &policy, self.now)
    }

    fn set(&mut self, name: &'static str, value: &str) {
        self.headers
            .insert(name, HeaderValue::from_str(value).unwrap());
    }

    /// Replaces the signature with a correct MAC over the Signature-Input member `member`, so a
    /// case shows that a policy rule holds even for a signature made with the right key.
    fn resign(&mut self, member: &str) {
        self.set(SIGNATURE_INPUT, &format!("sig1={member}"));
        let received_input = covered(&format!("sig1={member}"));
        let parts = RequestParts {
            method: self.method,
            path: self.path,
            scheme: None,
            authority: None,
            query: None,
            headers: &self.headers,
        };
        // A base that cannot be built fails verification before the MAC is looked at, so any
        // signature does for those cases.
        let mac = match build_signature_base(&parts, &received_input) {
            Ok(base) => self.key.mac(&base).finalize().into_bytes().to_vec(),
            Err(_) => vec![0; 32],
        };
        self.set(SIGNATURE, &format!("sig1=:{}:", BASE64.encode(mac)));
    }
}

fn verified(nonce: &str, created: u64) -> Result<VerifiedSignature, SignatureError> {
    Ok(VerifiedSignature {
        key_id: "demo-app".into(),
        nonce: nonce.into(),
        created,
    })
}

const ALL: &str = r#"("@method" "@path" "content-digest")"#;

#[test]
fn verify_request_cases() {
    type Change = fn(&mut Case);
    let cases: Vec<(&str, Change, Result<VerifiedSignature, SignatureError>)> = vec![
        ("as signed", |_| {}, verified("req-0001", NOW)),
        ("other method", |c| c.method = "PUT", Err(SignatureError::Mismatch)),
        ("lower-case method", |c| c.method = "post", Err(SignatureError::Mismatch)),
        ("other path", |c| c.path = "/transact/validate", Err(SignatureError::Mismatch)),
        ("path with a trailing slash", |c| c.path = "/transact/", Err(SignatureError::Mismatch)),
        ("body changed by one byte", |c| c.body[20] ^= 1, Err(SignatureError::DigestMismatch)),
        ("body cut short", |c| { c.body.pop(); }, Err(SignatureError::DigestMismatch)),
        ("body with a newline added", |c| c.body.push(b'\n'), Err(SignatureError::DigestMismatch)),
        (
            "Content-Digest changed to match a changed body",
            |c| {
                c.body[20] ^= 1;
                let digest = content_digest(&c.body);
                c.set(CONTENT_DIGEST, &digest);
            },
            Err(SignatureError::Mismatch),
        ),
        (
            "Content-Digest with a sha-512 member added",
            |c| {
                c.headers.append(CONTENT_DIGEST, HeaderValue::from_static("sha-512=:AAAA:"));
            },
            Err(SignatureError::Mismatch),
        ),
        (
            "Content-Digest removed",
            |c| { c.headers.remove(CONTENT_DIGEST); },
            Err(SignatureError::MissingDigest),
        ),
        (
            "a signed sha-512 Content-Digest only",
            |c| {
                c.set(CONTENT_DIGEST, "sha-512=:AAAA:");
                c.resign(&format!("{ALL};created={NOW};keyid=\"demo-app\";nonce=\"req-0001\""));
            },
            Err(SignatureError::MissingDigest),
        ),
        (
            "content-digest dropped from the covered list",
            |c| c.set(SIGNATURE_INPUT, &c.headers[SIGNATURE_INPUT].to_str().unwrap().replace(" \"content-digest\"", "")),
            Err(SignatureError::MissingComponent("content-digest")),
        ),
        (
            "content-digest not covered, correctly signed",
            |c| c.resign(&format!("(\"@method\" \"@path\");created={NOW};keyid=\"demo-app\";nonce=\"req-0001\"")),
            Err(SignatureError::MissingComponent("content-digest")),
        ),
        (
            "@method not covered, correctly signed",
            |c| c.resign(&format!("(\"@path\" \"content-digest\");created={NOW};keyid=\"demo-app\";nonce=\"req-0001\"")),
            Err(SignatureError::MissingComponent("@method")),
        ),
        (
            "@path not covered, correctly signed",
            |c| c.resign(&format!("(\"@method\" \"content-digest\");created={NOW};keyid=\"demo-app\";nonce=\"req-0001\"")),
            Err(SignatureError::MissingComponent("@path")),
        ),
        (
            "@target-uri instead of @path",
            |c| c.resign(&format!("(\"@method\" \"@target-uri\" \"content-digest\");created={NOW};keyid=\"demo-app\";nonce=\"req-0001\"")),
            Err(SignatureError::MissingComponent("@path")),
        ),
        (
            "components in another order, and one more",
            |c| c.resign(&format!("(\"content-type\" \"content-digest\" \"@path\" \"@method\");created={NOW};keyid=\"demo-app\";nonce=\"req-0001\"")),
            verified("req-0001", NOW),
        ),
        (
            "parameters in another order, a tag and another label",
            |c| {
                c.resign(&format!("{ALL};nonce=\"req-0001\";tag=\"manifold\";keyid=\"demo-app\";alg=\"hmac-sha256\";created={NOW}"));
                let input = c.headers[SIGNATURE_INPUT].to_str().unwrap().replacen("sig1", "app", 1);
                let signature = c.headers[SIGNATURE].to_str().unwrap().replacen("sig1", "app", 1);
                c.set(SIGNATURE_INPUT, &input);
                c.set(SIGNATURE, &signature);
            },
            verified("req-0001", NOW),
        ),
        (
            "@authority covered",
            |c| c.resign(&format!("(\"@method\" \"@path\" \"@authority\" \"content-digest\");created={NOW};keyid=\"demo-app\";nonce=\"req-0001\"")),
            Err(SignatureError::UnsupportedComponent("\"@authority\"".into())),
        ),
        (
            "a component with a parameter",
            |c| c.resign(&format!("(\"@method\" \"@path\" \"content-digest\" \"content-digest\";sf);created={NOW};keyid=\"demo-app\";nonce=\"req-0001\"")),
            Err(SignatureError::UnsupportedComponent("\"content-digest\";sf".into())),
        ),
        (
            "a covered header field the request lacks",
            |c| {
                c.set("x-request-id", "r1");
                c.resign(&format!("(\"@method\" \"@path\" \"content-digest\" \"x-request-id\");created={NOW};keyid=\"demo-app\";nonce=\"req-0001\""));
                c.headers.remove("x-request-id");
            },
            Err(SignatureError::MissingField("x-request-id".into())),
        ),
        (
            "a component listed twice",
            |c| c.set(SIGNATURE_INPUT, &format!("sig1=(\"@method\" \"@path\" \"content-digest\" \"@path\");created={NOW};keyid=\"demo-app\";nonce=\"req-0001\"")),
            Err(malformed("Signature-Input lists the component \"@path\" twice")),
        ),
        (
            "an upper-case header field name",
            |c| c.set(SIGNATURE_INPUT, &format!("sig1=(\"@method\" \"@path\" \"content-digest\" \"Content-Type\");created={NOW};keyid=\"demo-app\";nonce=\"req-0001\"")),
            Err(malformed("Signature-Input names the header field \"Content-Type\" in upper case; RFC 9421 requires lower case")),
        ),
        (
            "@signature-params listed",
            |c| c.set(SIGNATURE_INPUT, &format!("sig1=(\"@method\" \"@path\" \"content-digest\" \"@signature-params\");created={NOW};keyid=\"demo-app\";nonce=\"req-0001\"")),
            Err(malformed("Signature-Input must not list \"@signature-params\" as a covered component")),
        ),
        ("created exactly max_skew ago", |c| c.now = NOW + 300, verified("req-0001", NOW)),
        ("created one second too old", |c| c.now = NOW + 301, Err(SignatureError::OutsideWindow { skew_secs: -301 })),
        ("created a day ago", |c| c.now = NOW + 86_400, Err(SignatureError::OutsideWindow { skew_secs: -86_400 })),
        ("created exactly max_skew ahead", |c| c.now = NOW - 300, verified("req-0001", NOW)),
        ("created one second too far ahead", |c| c.now = NOW - 301, Err(SignatureError::OutsideWindow { skew_secs: 301 })),
        (
            "expires in the past",
            |c| c.resign(&format!("{ALL};created={NOW};expires={};keyid=\"demo-app\";nonce=\"req-0001\"", NOW - 1)),
            Err(SignatureError::Expired),
        ),
        (
            "expires now",
            |c| c.resign(&format!("{ALL};created={NOW};expires={NOW};keyid=\"demo-app\";nonce=\"req-0001\"")),
            verified("req-0001", NOW),
        ),
        ("another keyid expected", |c| c.expected_key_id = "demo-app-otp", Err(SignatureError::WrongKeyId)),
        (
            "keyid edited to the expected one",
            |c| {
                c.expected_key_id = "demo-app-otp";
                let input = c.headers[SIGNATURE_INPUT].to_str().unwrap().replace("demo-app", "demo-app-otp");
                c.set(SIGNATURE_INPUT, &input);
            },
            Err(SignatureError::Mismatch),
        ),
        ("verified with another app's key", |c| c.key = app_key("manifold-demo-app-secret-0001-abcdefgi"), Err(SignatureError::Mismatch)),
        (
            "verified with the provider-hop key of the same secret",
            |c| c.key = SigningKey::for_provider_hop(&SecretString::from(APP_SECRET)),
            Err(SignatureError::Mismatch),
        ),
        (
            "created edited",
            |c| {
                let input = c.headers[SIGNATURE_INPUT].to_str().unwrap().replace(&NOW.to_string(), &(NOW + 1).to_string());
                c.set(SIGNATURE_INPUT, &input);
            },
            Err(SignatureError::Mismatch),
        ),
        (
            "nonce edited",
            |c| {
                let input = c.headers[SIGNATURE_INPUT].to_str().unwrap().replace("req-0001", "req-0002");
                c.set(SIGNATURE_INPUT, &input);
            },
            Err(SignatureError::Mismatch),
        ),
        (
            "alg=\"hmac-sha512\"",
            |c| c.resign(&format!("{ALL};created={NOW};keyid=\"demo-app\";alg=\"hmac-sha512\";nonce=\"req-0001\"")),
            Err(SignatureError::UnsupportedAlgorithm),
        ),
        (
            "alg=\"ed25519\"",
            |c| c.resign(&format!("{ALL};created={NOW};keyid=\"demo-app\";alg=\"ed25519\";nonce=\"req-0001\"")),
            Err(SignatureError::UnsupportedAlgorithm),
        ),
        (
            "no alg",
            |c| c.resign(&format!("{ALL};created={NOW};keyid=\"demo-app\";nonce=\"req-0001\"")),
            verified("req-0001", NOW),
        ),
        (
            "no nonce",
            |c| c.resign(&format!("{ALL};created={NOW};keyid=\"demo-app\";alg=\"hmac-sha256\"")),
            Err(SignatureError::MissingParameter("nonce")),
        ),
        (
            "no created",
            |c| c.resign(&format!("{ALL};keyid=\"demo-app\";alg=\"hmac-sha256\";nonce=\"req-0001\"")),
            Err(SignatureError::MissingParameter("created")),
        ),
        (
            "no keyid",
            |c| c.resign(&format!("{ALL};created={NOW};alg=\"hmac-sha256\";nonce=\"req-0001\"")),
            Err(SignatureError::MissingParameter("keyid")),
        ),
        (
            "created as a string",
            |c| c.resign(&format!("{ALL};created=\"{NOW}\";keyid=\"demo-app\";nonce=\"req-0001\"")),
            Err(SignatureError::Invalid { what: "created", rule: "must be a non-negative integer (unix seconds)" }),
        ),
        (
            "negative created",
            |c| c.resign(&format!("{ALL};created=-{NOW};keyid=\"demo-app\";nonce=\"req-0001\"")),
            Err(SignatureError::Invalid { what: "created", rule: "must be a non-negative integer (unix seconds)" }),
        ),
        (
            "keyid as a token",
            |c| c.resign(&format!("{ALL};created={NOW};keyid=demo-app;nonce=\"req-0001\"")),
            Err(SignatureError::Invalid { what: "keyid", rule: "must be a string (in double quotes)" }),
        ),
        (
            "nonce as a byte sequence",
            |c| c.resign(&format!("{ALL};created={NOW};keyid=\"demo-app\";nonce=:AAAA:")),
            Err(SignatureError::Invalid { what: "nonce", rule: "must be a string (in double quotes)" }),
        ),
        (
            "a nonce with quotes and a backslash",
            |c| c.resign(&format!("{ALL};created={NOW};keyid=\"demo-app\";nonce=\"say \\\"hi\\\" \\\\ bye\"")),
            verified("say \"hi\" \\ bye", NOW),
        ),
        (
            "two signatures in one header",
            |c| {
                let input = c.headers[SIGNATURE_INPUT].to_str().unwrap().to_owned();
                let signature = c.headers[SIGNATURE].to_str().unwrap().to_owned();
                c.set(SIGNATURE_INPUT, &format!("{input}, {}", input.replacen("sig1", "sig2", 1)));
                c.set(SIGNATURE, &format!("{signature}, {}", signature.replacen("sig1", "sig2", 1)));
            },
            Err(SignatureError::MultipleSignatures),
        ),
        (
            "two signatures in two header lines",
            |c| {
                let input = c.headers[SIGNATURE_INPUT].to_str().unwrap().replacen("sig1", "sig2", 1);
                let signature = c.headers[SIGNATURE].to_str().unwrap().replacen("sig1", "sig2", 1);
                c.headers.append(SIGNATURE_INPUT, HeaderValue::from_str(&input).unwrap());
                c.headers.append(SIGNATURE, HeaderValue::from_str(&signature).unwrap());
            },
            Err(SignatureError::MultipleSignatures),
        ),
        (
            "a second, unlabelled Signature member",
            |c| {
                let signature = c.headers[SIGNATURE].to_str().unwrap().to_owned();
                c.set(SIGNATURE, &format!("{signature}, sig2=:AAAA:"));
            },
            Err(SignatureError::MultipleSignatures),
        ),
        ("no signature headers", |c| { c.headers.remove(SIGNATURE_INPUT); c.headers.remove(SIGNATURE); }, Err(SignatureError::Missing)),
        ("no Signature", |c| { c.headers.remove(SIGNATURE); }, Err(SignatureError::Missing)),
        ("no Signature-Input", |c| { c.headers.remove(SIGNATURE_INPUT); }, Err(SignatureError::Missing)),
        ("empty signature headers", |c| { c.set(SIGNATURE_INPUT, ""); c.set(SIGNATURE, ""); }, Err(SignatureError::Missing)),
        (
            "Signature-Input is not a dictionary",
            |c| c.set(SIGNATURE_INPUT, "(\"@method\" \"@path\" \"content-digest\")"),
            Err(malformed("Signature-Input is not a structured-field Dictionary (RFC 8941), as RFC 9421 requires")),
        ),
        (
            "Signature is garbage",
            |c| c.set(SIGNATURE, "sig1=:not base64!:"),
            Err(malformed("Signature is not a structured-field Dictionary (RFC 8941), as RFC 9421 requires")),
        ),
        (
            "Signature-Input member is an item",
            |c| c.set(SIGNATURE_INPUT, "sig1=\"@method @path content-digest\";created=1;keyid=\"demo-app\""),
            Err(malformed("the Signature-Input member is not an inner list of covered components, e.g. (\"@method\" \"@path\")")),
        ),
        (
            "Signature member is a string",
            |c| c.set(SIGNATURE, "sig1=\"c2lnbmF0dXJl\""),
            Err(malformed("the Signature member is not a byte sequence (`:base64:`)")),
        ),
        (
            "labels differ",
            |c| {
                let signature = c.headers[SIGNATURE].to_str().unwrap().replacen("sig1", "sig2", 1);
                c.set(SIGNATURE, &signature);
            },
            Err(malformed("Signature and Signature-Input use different labels; the label must be the same in both")),
        ),
        (
            "a component that is not a string",
            |c| c.set(SIGNATURE_INPUT, &format!("sig1=(\"@method\" \"@path\" \"content-digest\" date);created={NOW};keyid=\"demo-app\";nonce=\"req-0001\"")),
            Err(malformed("Signature-Input lists a component that is not a string, e.g. \"@method\"")),
        ),
        ("signature one byte short", |c| {
            let signature = c.headers[SIGNATURE].to_str().unwrap().to_owned();
            let mac = BASE64.decode(signature.trim_start_matches("sig1=:").trim_end_matches(':')).unwrap();
            c.set(SIGNATURE, &format!("sig1=:{}:", BASE64.encode(&mac[..31])));
        }, Err(SignatureError::Mismatch)),
        ("an empty signature", |c| c.set(SIGNATURE, "sig1=::"), Err(SignatureError::Mismatch)),
    ];
    for (name, change, expected) in cases {
        let mut case = Case::signed();
        change(&mut case);
        let result = case.verify();
        assert_eq!(result, expected, "{name}");
        if let Err(error) = result {
            let message = error.to_string();
            assert!(!message.contains(APP_SECRET), "{name}: {message}");
            assert!(
                !message.contains(case.headers[CONTENT_TYPE_NAME].to_str().unwrap()),
                "{name}: {message}"
            );
            if let Some(signature) = case.headers.get(SIGNATURE) {
                let value = signature.to_str().unwrap();
                if value.len() > 8 {
                    assert!(!message.contains(&value[5..]), "{name}: {message}");
                }
            }
        }
    }
}

const CONTENT_TYPE_NAME: &str = "content-type";

#[test]
fn sign_request_states_its_components_and_parameters_in_order() {
    let signed = sign_request(&app_key(APP_SECRET), "POST", "/transact", BODY, &params()).unwrap();
    assert_eq!(signed.content_digest, content_digest(BODY));
    assert_eq!(
        signed.signature_input,
        format!(
            "sig1=(\"@method\" \"@path\" \"content-digest\");created={NOW};keyid=\"demo-app\";alg=\"hmac-sha256\";nonce=\"req-0001\""
        )
    );
    let base = signature_base("POST", "/transact", BODY, &params()).unwrap();
    assert_eq!(
        base,
        format!(
            "\"@method\": POST\n\"@path\": /transact\n\"content-digest\": {}\n\"@signature-params\": {}",
            content_digest(BODY),
            &signed.signature_input["sig1=".len()..]
        )
    );
    // The signature is HMAC-SHA256 over exactly that base, recomputed here without the module.
    let mut mac =
        HmacSha256::new_from_slice(AppKey::derive(&SecretString::from(APP_SECRET)).signature_key())
            .unwrap();
    mac.update(base.as_bytes());
    assert_eq!(
        signed.signature,
        format!("sig1=:{}:", BASE64.encode(mac.finalize().into_bytes()))
    );
    // Deterministic: the same inputs give the same headers.
    assert_eq!(
        sign_request(&app_key(APP_SECRET), "POST", "/transact", BODY, &params()).unwrap(),
        signed
    );
}

#[test]
fn sign_request_refuses_what_cannot_travel() {
    let key = app_key(APP_SECRET);
    let sign = |method, path, key_id, created, nonce| {
        sign_request(
            &key,
            method,
            path,
            BODY,
            &SignatureParams {
                key_id,
                created,
                nonce,
            },
        )
    };
    let printable = "must be printable ASCII (space to `~`) to travel in Signature-Input";
    let cases = [
        (
            sign("POST", "/transact", "demo-app", NOW, "order|ü|42"),
            "nonce",
            printable,
        ),
        (
            sign("POST", "/transact", "demo-app", NOW, "req\n1"),
            "nonce",
            printable,
        ),
        (
            sign("POST", "/transact", "démo", NOW, "req-1"),
            "keyid",
            printable,
        ),
        (
            sign(
                "POST",
                "/transact",
                "demo-app",
                1_000_000_000_000_000,
                "req-1",
            ),
            "created",
            "must be at most 999999999999999 (a structured-field Integer)",
        ),
        (
            sign("POST\r\n", "/transact", "demo-app", NOW, "req-1"),
            "@method",
            "must be printable ASCII without spaces at either end",
        ),
        (
            sign("", "/transact", "demo-app", NOW, "req-1"),
            "@method",
            "must be printable ASCII without spaces at either end",
        ),
    ];
    for (result, what, rule) in cases {
        assert_eq!(result, Err(SignatureError::Invalid { what, rule }));
    }
    let path_rule = "must be printable ASCII, start with `/` and hold no query or fragment";
    for path in [
        "/transact?x=1",
        "/transact#top",
        "transact",
        "",
        "/trans act ",
        "/ü",
    ] {
        assert_eq!(
            sign("POST", path, "demo-app", NOW, "req-1"),
            Err(SignatureError::Invalid {
                what: "@path",
                rule: path_rule
            }),
            "{path}"
        );
    }
    // The edges of what can travel do: created 0 and 10^15 - 1, every printable character.
    assert!(sign("POST", "/", "demo-app", 0, " !~").is_ok());
    assert!(sign("POST", "/", "demo-app", 999_999_999_999_999, "req-1").is_ok());
}

#[test]
fn an_empty_body_is_signed_and_verified() {
    let key = app_key(APP_SECRET);
    let signed = sign_request(&key, "GET", "/health", b"", &params()).unwrap();
    assert_eq!(signed.content_digest, content_digest(b""));
    let mut headers = HeaderMap::new();
    signed.apply(&mut headers);
    let request = ReceivedRequest {
        method: "GET",
        path: "/health",
        headers: &headers,
        body: b"",
    };
    assert_eq!(
        verify_request(&key, "demo-app", &request, &VerifyPolicy::default(), NOW),
        verified("req-0001", NOW)
    );
}

#[test]
fn claimed_key_id_reads_the_unverified_keyid() {
    let case = Case::signed();
    assert_eq!(claimed_key_id(&case.headers).unwrap(), "demo-app");
    // Unverified: a forged keyid is read just the same.
    let mut forged = case.clone();
    forged.set(
        SIGNATURE_INPUT,
        &format!("sig1={ALL};created={NOW};keyid=\"someone-else\""),
    );
    assert_eq!(claimed_key_id(&forged.headers).unwrap(), "someone-else");

    let mut missing = case.clone();
    missing.headers.remove(SIGNATURE_INPUT);
    assert_eq!(
        claimed_key_id(&missing.headers),
        Err(SignatureError::Missing)
    );
    let mut no_keyid = case.clone();
    no_keyid.set(SIGNATURE_INPUT, &format!("sig1={ALL};created={NOW}"));
    assert_eq!(
        claimed_key_id(&no_keyid.headers),
        Err(SignatureError::MissingParameter("keyid"))
    );
    let mut two = case.clone();
    let input = case.headers[SIGNATURE_INPUT].to_str().unwrap();
    two.set(
        SIGNATURE_INPUT,
        &format!("{input}, {}", input.replacen("sig1", "sig2", 1)),
    );
    assert_eq!(
        claimed_key_id(&two.headers),
        Err(SignatureError::MultipleSignatures)
    );
    let mut token = case;
    token.set(SIGNATURE_INPUT, &format!("sig1={ALL};keyid=demo"));
    assert!(matches!(
        claimed_key_id(&token.headers),
        Err(SignatureError::Invalid { what: "keyid", .. })
    ));
}

#[test]
fn error_messages_read_in_plain_words() {
    assert_eq!(
        SignatureError::OutsideWindow { skew_secs: -301 }.to_string(),
        "the signature was created 301 seconds before the receiver's time, outside the window the receiver accepts; check the sender's clock"
    );
    assert_eq!(
        SignatureError::OutsideWindow { skew_secs: 42 }.to_string(),
        "the signature was created 42 seconds after the receiver's time, outside the window the receiver accepts; check the sender's clock"
    );
    assert_eq!(
        SignatureError::MissingComponent("@path").to_string(),
        "the signature does not cover `@path`; it must cover \"@method\", \"@path\" and \"content-digest\""
    );
    assert_eq!(
        SignatureError::Invalid {
            what: "nonce",
            rule: "must be printable ASCII (space to `~`) to travel in Signature-Input"
        }
        .to_string(),
        "`nonce` must be printable ASCII (space to `~`) to travel in Signature-Input"
    );
}
