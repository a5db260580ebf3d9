#!/usr/bin/env python3
"""Manifold's signed requests in Python: RFC 9421 HTTP Message Signatures (``hmac-sha256``) over
an RFC 9530 ``Content-Digest`` of the body, checked against the Rust crate by its tests.

The signing, verifying and structured-field work is done by the PyPI package
``http-message-signatures`` (``pip install http-message-signatures``, which brings ``http-sf`` and
``cryptography``), an implementation independent of the Rust crate. This file adds only what is
Manifold's own, written from ``crypto/src/message_signature.rs``'s documentation:

    covered    = ("@method" "@path" "content-digest")
    parameters = created, keyid, alg="hmac-sha256", nonce      (in this order), label sig1
    app key    = HKDF-SHA256(salt="manifold.secure.v1", ikm=utf8(app secret),
                             info="request-signature"), 32 bytes
    hop key    = HKDF-SHA256(salt="manifold.secure.v1", ikm=utf8(provider secret),
                             info="provider-hop-signature"), 32 bytes

HKDF is written out with ``hmac`` and ``hashlib`` (RFC 5869) rather than taken from
``cryptography``, so a key derivation bug would have to be made twice in two different ways.

Command line (JSON in and out; every request item names its key with exactly one of
``app_secret``, ``provider_secret`` or ``key_base64``):
    manifold_signatures.py check-vectors PATH   sign every vector again, compare, and verify it
    manifold_signatures.py sign                 sign each request read on stdin (created = now
                                                unless given); prints them with their headers
    manifold_signatures.py verify               verify each signed request read on stdin, as a
                                                Manifold receiver would; exit 1 on any failure
"""

import argparse
import base64
import datetime
import hashlib
import hmac
import json
import sys
import time

from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    InvalidSignature,
    MappingKeyResolver,
)
from http_message_signatures.algorithms import HMAC_SHA256

SALT = b"manifold.secure.v1"
INFO_APP = b"request-signature"
INFO_PROVIDER_HOP = b"provider-hop-signature"
COVERED = ("@method", "@path", "content-digest")
LABEL = "sig1"
# Any host will do: @authority is not signed. It only makes the URL absolute, as the package needs.
ORIGIN = "https://manifold.invalid"
MAX_AGE = datetime.timedelta(minutes=5)


def hkdf_sha256(ikm, info, length=32):
    """RFC 5869 HKDF with SHA-256: extract with the salt, then expand to ``length`` bytes."""
    prk = hmac.new(SALT, ikm, hashlib.sha256).digest()
    output, block = b"", b""
    counter = 1
    while len(output) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        output += block
        counter += 1
    return output[:length]


def app_key(app_secret):
    return hkdf_sha256(app_secret.encode("utf-8"), INFO_APP)


def provider_hop_key(provider_secret):
    return hkdf_sha256(provider_secret.encode("utf-8"), INFO_PROVIDER_HOP)


def key_of(item):
    """The HMAC key an item names, by app secret, provider secret or raw base64."""
    given = [name for name in ("app_secret", "provider_secret", "key_base64") if name in item]
    if len(given) != 1:
        raise ValueError(f"{item.get('name')}: give exactly one of app_secret, provider_secret, key_base64")
    if "app_secret" in item:
        return app_key(item["app_secret"])
    if "provider_secret" in item:
        return provider_hop_key(item["provider_secret"])
    return base64.b64decode(item["key_base64"], validate=True)


class Request:
    """The request interface ``http-message-signatures`` reads: method, absolute URL, headers."""

    def __init__(self, method, path, headers=None):
        self.method = method
        self.url = ORIGIN + path
        self.headers = dict(headers or {})


def sign(key, method, path, body, key_id, created, nonce):
    """Signs like ``manifold_crypto::message_signature::sign_request``; returns the three header
    values and the signature base."""
    signer = HTTPMessageSigner(
        signature_algorithm=HMAC_SHA256,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={key_id: key}),
    )
    request = Request(method, path)
    prepared = signer.prepare(
        request,
        key_id=key_id,
        created=datetime.datetime.fromtimestamp(created, tz=datetime.timezone.utc),
        nonce=nonce,
        label=LABEL,
        include_alg=True,
        covered_component_ids=COVERED,
        body=body,
    )
    signer.apply(request, prepared, HMAC_SHA256(private_key=key).sign(prepared.signature_base))
    return {
        "content_digest": request.headers["Content-Digest"],
        "signature_base": prepared.signature_base.decode("ascii"),
        "signature_input": request.headers["Signature-Input"],
        "signature": request.headers["Signature"],
    }


def verify(key, key_id, method, path, headers, body, max_age=MAX_AGE):
    """Verifies as a Manifold receiver: one signature, covering at least the three components,
    ``keyid`` resolving only to ``key_id``, the Content-Digest checked against ``body``, ``created``
    within ``max_age`` (``None``: any age), and a nonce. Returns ``(created, nonce)``; raises
    ``InvalidSignature`` otherwise."""
    verifier = HTTPMessageVerifier(
        signature_algorithm=HMAC_SHA256,
        key_resolver=MappingKeyResolver(public_keys={key_id: key}, private_keys={}),
    )
    results = verifier.verify(
        Request(method, path, headers),
        max_age=max_age,
        require_components=COVERED,
        body=body,
    )
    if len(results) != 1:
        raise InvalidSignature(f"expected one signature, verified {len(results)}")
    params = results[0].parameters
    if params.get("keyid") != key_id:
        raise InvalidSignature("keyid differs")
    if results[0].nonce is None:
        raise InvalidSignature("no nonce")
    if results[0].body != body:
        raise InvalidSignature("the body was not checked against Content-Digest")
    return params["created"], results[0].nonce


def rfc9421_b25_self_check():
    """The package must reproduce RFC 9421 Appendix B.2.5 before its output is trusted."""
    key = base64.b64decode(
        "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ=="
    )
    request = Request("POST", "/foo?param=Value&Pet=dog", {
        "Host": "example.com",
        "Date": "Tue, 20 Apr 2021 02:07:55 GMT",
        "Content-Type": "application/json",
        "Content-Digest": "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+"
                          "AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:",
        "Content-Length": "18",
    })
    request.url = "https://example.com/foo?param=Value&Pet=dog"
    HTTPMessageSigner(
        signature_algorithm=HMAC_SHA256,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={"test-shared-secret": key}),
    ).sign(
        request,
        key_id="test-shared-secret",
        created=datetime.datetime.fromtimestamp(1618884473, tz=datetime.timezone.utc),
        label="sig-b25",
        include_alg=False,
        covered_component_ids=("date", "@authority", "content-type"),
        use_existing_digest=True,
    )
    expected = (
        'sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret"',
        "sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:",
    )
    got = (request.headers["Signature-Input"], request.headers["Signature"])
    if got != expected:
        raise AssertionError(f"http-message-signatures does not reproduce RFC 9421 B.2.5: {got}")


def _body(item):
    return item["body"].encode("utf-8")


def _headers(item):
    return {
        "Content-Digest": item["content_digest"],
        "Signature-Input": item["signature_input"],
        "Signature": item["signature"],
    }


def check_vectors(path):
    """Returns mismatch descriptions; empty means Python reproduces and verifies every vector."""
    with open(path, encoding="utf-8") as f:
        fixture = json.load(f)
    problems = []
    for v in fixture["vectors"]:
        name = v["name"]
        secret_key = app_key(v["secret"]) if v["key_derivation"] == "app" else provider_hop_key(v["secret"])
        if base64.b64encode(secret_key).decode("ascii") != v["key_base64"]:
            problems.append(f"{name}: key_base64 is not the key derived from the secret")
        signed = sign(base64.b64decode(v["key_base64"]), v["method"], v["path"], _body(v),
                      v["key_id"], v["created"], v["nonce"])
        for field, value in signed.items():
            if value != v[field]:
                problems.append(f"{name}: {field} is {value!r}, the vector has {v[field]!r}")
        try:
            verify(secret_key, v["key_id"], v["method"], v["path"], _headers(v), _body(v), max_age=None)
        except InvalidSignature as e:
            problems.append(f"{name}: does not verify: {e}")
    return problems


def sign_items(items):
    now = int(time.time())
    out = []
    for item in items:
        created = item.get("created", now)
        signed = sign(key_of(item), item["method"], item["path"], _body(item), item["key_id"],
                      created, item["nonce"])
        out.append({**item, "created": created, **signed})
    return out


def verify_items(items):
    problems = []
    for item in items:
        name = item.get("name", item["path"])
        try:
            created, nonce = verify(key_of(item), item["key_id"], item["method"], item["path"],
                                    _headers(item), _body(item))
            if nonce != item["nonce"] or created != item["created"]:
                problems.append(f"{name}: verified, but created/nonce are {created}/{nonce!r}")
        except InvalidSignature as e:
            problems.append(f"{name}: InvalidSignature: {e}")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description="Manifold signed requests, in Python")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check-vectors", help="reproduce and verify fixtures/signatures/vectors.json")
    p.add_argument("path")
    sub.add_parser("sign", help="sign a JSON list of requests read on stdin")
    sub.add_parser("verify", help="verify a JSON list of signed requests read on stdin")
    args = parser.parse_args(argv)

    rfc9421_b25_self_check()
    if args.command == "check-vectors":
        problems = check_vectors(args.path)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print(f"{len(problems)} mismatches", file=sys.stderr)
            return 1
        with open(args.path, encoding="utf-8") as f:
            print(f"{len(json.load(f)['vectors'])} vectors ok")
        return 0
    items = json.load(sys.stdin)
    if args.command == "sign":
        # ASCII-only output, so the result does not depend on the locale of stdout.
        json.dump(sign_items(items), sys.stdout, indent=2)
        print()
        return 0
    problems = verify_items(items)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"{len(items)} items ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
