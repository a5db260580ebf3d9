#!/usr/bin/env python3
"""Writes ``fixtures/secure/vectors.json`` with the Python reference, never with the Rust crate.

The output is deterministic (fixed nonces), so re-running it leaves the fixture unchanged unless
the inputs below change. Usage, from the repository root:

    python3 crypto/interop/generate_vectors.py fixtures/secure/vectors.json
"""

import base64
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import manifold_secure as ms  # noqa: E402

SECRET_A = "manifold-demo-app-secret-0001-abcdefgh"
# Non-ASCII on purpose: the key is derived from the secret's UTF-8 bytes.
SECRET_B = "Ünïcödé app secret № 2 — 0123456789abcdef"

POSITIVE = [
    ("bank-account", SECRET_A, "req-0001", "bank.account",
     '{"account_number": "0123456789", "bank_code": "058"}'),
    ("card-with-pin", SECRET_A, "req-0002", "card",
     '{"pan": "5399831619690403", "expiry_month": "09", "expiry_year": "2028", "cvv": "123", "pin": "1234"}'),
    ("card-without-pin-compact", SECRET_B, "req-0003", "card",
     '{"pan":"4111111111111111","expiry_month":"12","expiry_year":"2030","cvv":"1234"}'),
    ("wallet", SECRET_B, "req-0004", "wallet", '{"wallet_id": "user.name_01-main"}'),
    ("msisdn", SECRET_B, "req-0005", "msisdn", '{"msisdn": "2348022000008"}'),
    ("validate-otp", SECRET_A, "req-0006", "validate", '{"otp": "123456"}'),
    ("validate-answer", SECRET_B, "req-0007", "validate", '{"answer": "Èkó, my first school"}'),
    ("request-ref-with-separator-and-unicode", SECRET_B, "order|ü|42", "bank.account",
     '{"account_number": "9876543210", "bank_code": "000014"}'),
    # Last, so the nonces of the vectors above stay as they were.
    ("token", SECRET_A, "req-0009", "token", '{"token": "rt_8f14e45fceea167a5a36dedd4bea2543"}'),
]


def nonce_for(index):
    # Distinct, recognisable nonces; real messages use random ones.
    return bytes((index * 16 + i) % 256 for i in range(ms.NONCE_LEN))


def positive_vectors():
    vectors = []
    for index, (name, secret, request_ref, kind, plaintext) in enumerate(POSITIVE):
        nonce = nonce_for(index)
        vectors.append({
            "name": name,
            "app_secret": secret,
            "request_ref": request_ref,
            "kind": kind,
            "nonce_hex": nonce.hex(),
            "plaintext": plaintext,
            "secure": ms.seal(secret, request_ref, kind, plaintext, nonce),
        })
    return vectors


def raw(secure):
    return bytearray(base64.b64decode(secure))


def b64(data):
    return base64.b64encode(bytes(data)).decode("ascii")


def negative_cases(vectors):
    first = vectors[0]
    by_name = {v["name"]: v for v in vectors}

    def case(name, secure, expected, note, base=first, **extra):
        item = {
            "name": name,
            "app_secret": extra.pop("app_secret", base["app_secret"]),
            "request_ref": extra.pop("request_ref", base["request_ref"]),
            "kind": extra.pop("kind", base["kind"]),
            "secure": secure,
            "expected_error": expected,
        }
        item.update(extra)
        item["note"] = note
        return item

    def flip(index):
        data = raw(first["secure"])
        data[index] ^= 0x01
        return b64(data)

    def sealed_bad(name, kind, plaintext, expected, note, index, **extra):
        nonce = nonce_for(100 + index)
        request_ref = f"req-bad-{index:02d}"
        return case(name, ms.seal(SECRET_A, request_ref, kind, plaintext, nonce), expected, note,
                    request_ref=request_ref, kind=kind, app_secret=SECRET_A,
                    nonce_hex=nonce.hex(), plaintext=plaintext, **extra)

    first_raw = raw(first["secure"])
    padded = next(v for v in vectors if v["secure"].endswith("="))
    version_two = bytearray(first_raw)
    version_two[0] = 0x02
    return [
        case("tampered-ciphertext", flip(20), "Rejected", "one bit of the ciphertext flipped"),
        case("tampered-tag", flip(len(first_raw) - 1), "Rejected", "one bit of the tag flipped"),
        case("tampered-nonce", flip(1), "Rejected", "one bit of the nonce flipped"),
        case("truncated-tag", b64(first_raw[:-1]), "Rejected",
             "last byte of the tag removed, still long enough to parse"),
        case("truncated-short", b64(first_raw[:28]), "TooShort",
             "28 bytes: shorter than version + nonce + tag"),
        case("empty", "", "TooShort", "the empty string decodes to zero bytes"),
        case("wrong-key", first["secure"], "Rejected", "sealed with SECRET_A, opened with SECRET_B",
             app_secret=SECRET_B),
        case("other-request-ref", first["secure"], "Rejected", "sealed for req-0001",
             request_ref="req-0002"),
        case("other-kind", first["secure"], "Rejected", "sealed as bank.account, opened as card",
             kind="card"),
        case("validate-replayed-as-source", by_name["validate-otp"]["secure"], "Rejected",
             "a validate secure presented as the msisdn of a /transact",
             base=by_name["validate-otp"], kind="msisdn"),
        case("bad-base64-url-alphabet",
             first["secure"].replace("+", "-").replace("/", "_") + "-_", "NotBase64",
             "URL-safe alphabet instead of the standard one"),
        case("bad-base64-characters", "not base64!", "NotBase64", "characters outside base64"),
        case("bad-base64-unpadded", padded["secure"].rstrip("="), "NotBase64",
             "padding removed: the switch requires it", base=padded),
        case("unknown-version", b64(version_two), "UnsupportedVersion",
             "version byte 0x02", version=2),
        sealed_bad("bad-field-account-number", "bank.account",
                   '{"account_number": "12345", "bank_code": "058"}', "InvalidField",
                   "account_number must be exactly 10 digits", 0, field="account_number"),
        sealed_bad("bad-field-luhn", "card",
                   '{"pan": "5399831619690404", "expiry_month": "09", "expiry_year": "2028", "cvv": "123"}',
                   "InvalidField", "pan fails the Luhn check digit", 1, field="pan"),
        sealed_bad("unknown-field", "wallet", '{"wallet_id": "w1", "nickname": "main"}',
                   "InvalidField", "unknown fields are refused by name", 2, field="nickname"),
        sealed_bad("missing-field", "msisdn", '{}', "InvalidField", "msisdn is required", 3,
                   field="msisdn"),
        sealed_bad("validate-otp-and-answer", "validate", '{"otp": "1234", "answer": "blue"}',
                   "InvalidField", "exactly one of otp or answer", 4, field="answer"),
        sealed_bad("not-json", "bank.account", "account_number=0123456789&bank_code=058",
                   "NotJson", "plaintext is not JSON", 5),
        sealed_bad("not-an-object", "msisdn", '"2348022000008"', "NotJson",
                   "plaintext is JSON but not an object", 6),
    ]


def main(path):
    vectors = positive_vectors()
    fixture = {
        "description": "Test vectors of Manifold's auth.secure format, version 0x01 (docs/secure.md). "
                       "Generated by crypto/interop/generate_vectors.py with the Python reference; "
                       "checked by crypto/tests/vectors.rs and crypto/tests/python_interop.rs.",
        "vectors": vectors,
        "negative": negative_cases(vectors),
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(fixture, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {len(fixture['vectors'])} vectors and {len(fixture['negative'])} negative cases")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "fixtures/secure/vectors.json")
