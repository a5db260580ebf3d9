"""schemathesis hooks for Manifold (tests/schemathesis/run): every generated request is made one
the switch can authenticate, so the run reaches past the 401 into the engine.

- The body is serialized here, so its exact bytes are known: the RFC 9421 signature covers them.
- Before each call, `auth.secure` is sealed for the body's `request_ref` (a valid source for its
  `auth.type`, or an OTP for a validate) with crypto/interop/manifold_secure.py, and the call is
  signed with crypto/interop/manifold_signatures.py, both checked against the Rust crates by their
  own tests. Half of the generated bodies (by their request_ref) are also pointed at a service
  and provider the app is granted, so both the refusals and the provider path are exercised.
"""

import json
import os
import time
import zlib

import schemathesis

import manifold_secure
import manifold_signatures

APP_ID = "fuzz-app"
API_KEY = "fuzz-app-key-0123456789abcdef"
SECRET = "fuzz-app-secret-0123456789abcdef0123456789"
SIGNING_KEY = manifold_signatures.app_key(SECRET)

SOURCES = {
    "bank.account": {"account_number": "0123456789", "bank_code": "058"},
    "card": {"pan": "5399831619690403", "expiry_month": "09", "expiry_year": "2028", "cvv": "123", "pin": "1234"},
    "wallet": {"wallet_id": "user.name_01-main"},
    "msisdn": {"msisdn": "2348022000008"},
    "token": {"token": "rt_8f14e45fceea167a5a36dedd4bea2543"},
}


def encode(body):
    """The exact bytes sent: raw bytes (schemathesis sends some bodies that are not JSON) as they
    are, anything else as compact JSON."""
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@schemathesis.serializer("application/json")
def serialize(ctx, value):
    return encode(value)


def _granted(body, path):
    """Half of the bodies, chosen by their request_ref, ask for what the app may use."""
    request_ref = body.get("request_ref")
    if not isinstance(request_ref, str) or zlib.crc32(request_ref.encode("utf-8", "replace")) % 2:
        return
    auth = body.get("auth")
    if path == "/transact":
        body["request_type"] = "get_balance"
        if isinstance(auth, dict):
            auth["auth_provider"] = "demo"
            auth["type"] = "bank.account"
    elif path == "/transact/validate" and isinstance(auth, dict):
        body["request_type"] = "transfer_funds"
        auth["auth_provider"] = "demo"


def _seal(body, path):
    request_ref = body.get("request_ref")
    auth = body.get("auth")
    if not isinstance(request_ref, str) or not isinstance(auth, dict):
        return
    if path == "/transact" and isinstance(auth.get("type"), str) and auth["type"] in SOURCES:
        kind, plaintext = auth["type"], SOURCES[auth["type"]]
    elif path == "/transact/validate":
        kind, plaintext = "validate", {"otp": "123456"}
    else:
        return
    auth["secure"] = manifold_secure.seal(SECRET, request_ref, kind, json.dumps(plaintext))


def _nonce(body):
    """The body's request_ref when a signature parameter can carry it."""
    request_ref = body.get("request_ref") if isinstance(body, dict) else None
    if isinstance(request_ref, str) and request_ref and all(
        0x20 <= ord(c) <= 0x7E and c not in '"\\' for c in request_ref
    ):
        return request_ref
    return "not-a-request-ref"


@schemathesis.hook
def before_call(ctx, case, kwargs):
    if not case.path.startswith("/transact"):
        return
    body = case.body
    if not isinstance(body, (dict, list, str, int, float, bool, bytes, bytearray)) and body is not None:
        body = b""  # no body (schemathesis' NotSet)
    if isinstance(body, dict):
        _granted(body, case.path)
        _seal(body, case.path)
    signed = manifold_signatures.sign(
        SIGNING_KEY,
        case.method.upper(),
        case.formatted_path,
        encode(body),
        APP_ID,
        int(time.time()),
        _nonce(body),
    )
    headers = dict(case.headers or {})
    headers.update(
        {
            "Authorization": f"Bearer {API_KEY}",
            "Content-Digest": signed["content_digest"],
            "Signature-Input": signed["signature_input"],
            "Signature": signed["signature"],
        }
    )
    case.headers = headers
