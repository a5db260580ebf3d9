#!/usr/bin/env python3
"""Reference implementation of Manifold's ``auth.secure`` format (version 0x01), in Python.

It is written from ``docs/secure.md`` alone, independently of the Rust crate, and uses only the
``cryptography`` package and the standard library (``pip install cryptography``). The Rust tests
run it to check that both implementations agree; app developers can copy it.

    secure    = base64(0x01 || nonce[12] || AES-256-GCM(key, nonce, plaintext, aad) || tag[16])
    aad       = utf8(request_ref + "|" + kind)
    key       = HKDF-SHA256(salt="manifold.secure.v1", ikm=utf8(app_secret), info="aes-256-gcm")

It seals and opens bytes; it does not check the per-kind JSON layout (the switch does). Request
signatures (RFC 9421) have their own reference, ``manifold_signatures.py``.

Command line:
    manifold_secure.py check-vectors PATH   re-seal every vector with its nonce and compare
    manifold_secure.py fresh PATH           seal every vector's plaintext again with a random nonce
    manifold_secure.py open PATH|-          open a JSON list of sealed items and check each one
    manifold_secure.py seal --secret S --request-ref R --kind K [--nonce-hex N] PLAINTEXT
"""

import argparse
import base64
import binascii
import json
import os
import sys

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = 0x01
SALT = b"manifold.secure.v1"
INFO_ENCRYPTION = b"aes-256-gcm"
NONCE_LEN = 12
TAG_LEN = 16
KINDS = ("bank.account", "card", "wallet", "msisdn", "token", "validate")


class SecureError(Exception):
    """An ``auth.secure`` that cannot be opened; ``variant`` is the Rust ``CryptoError`` name."""

    def __init__(self, variant, detail=""):
        super().__init__(f"{variant}{': ' + detail if detail else ''}")
        self.variant = variant


def derive_key(app_secret, info):
    """32 bytes of HKDF-SHA256 over the secret's UTF-8 bytes, separated by ``info``."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=SALT, info=info).derive(
        app_secret.encode("utf-8")
    )


def associated_data(request_ref, kind):
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    return f"{request_ref}|{kind}".encode("utf-8")


def _as_bytes(plaintext):
    return plaintext.encode("utf-8") if isinstance(plaintext, str) else bytes(plaintext)


def seal(app_secret, request_ref, kind, plaintext, nonce=None):
    """Seal ``plaintext`` (str or bytes) for ``request_ref`` and ``kind``; returns ``secure``.

    ``nonce`` is for test vectors only: leave it ``None`` so every message gets a fresh random one.
    """
    if nonce is None:
        nonce = os.urandom(NONCE_LEN)
    if len(nonce) != NONCE_LEN:
        raise ValueError("the nonce must be 12 bytes")
    key = derive_key(app_secret, INFO_ENCRYPTION)
    sealed = AESGCM(key).encrypt(nonce, _as_bytes(plaintext), associated_data(request_ref, kind))
    return base64.b64encode(bytes([VERSION]) + nonce + sealed).decode("ascii")


def open_(app_secret, request_ref, kind, secure):
    """Open a ``secure``; returns the plaintext bytes or raises ``SecureError``."""
    try:
        raw = base64.b64decode(secure.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise SecureError("NotBase64") from None
    # Only the canonical encoding is accepted (padding present, unused bits zero), as in Rust.
    if base64.b64encode(raw).decode("ascii") != secure:
        raise SecureError("NotBase64")
    if not raw:
        raise SecureError("TooShort")
    if raw[0] != VERSION:
        raise SecureError("UnsupportedVersion", str(raw[0]))
    if len(raw) < 1 + NONCE_LEN + TAG_LEN:
        raise SecureError("TooShort")
    nonce, sealed = raw[1 : 1 + NONCE_LEN], raw[1 + NONCE_LEN :]
    key = derive_key(app_secret, INFO_ENCRYPTION)
    try:
        return AESGCM(key).decrypt(nonce, sealed, associated_data(request_ref, kind))
    except InvalidTag:
        raise SecureError("Rejected") from None


def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def check_vectors(path):
    """Returns a list of mismatch descriptions; empty means every vector agrees."""
    fixture = _load(path)
    problems = []
    for v in fixture["vectors"]:
        name = v["name"]
        secure = seal(v["app_secret"], v["request_ref"], v["kind"], v["plaintext"],
                      bytes.fromhex(v["nonce_hex"]))
        if secure != v["secure"]:
            problems.append(f"{name}: sealed {secure}, vector has {v['secure']}")
        try:
            opened = open_(v["app_secret"], v["request_ref"], v["kind"], v["secure"])
            if opened != v["plaintext"].encode("utf-8"):
                problems.append(f"{name}: opened plaintext differs")
        except SecureError as e:
            problems.append(f"{name}: cannot open: {e}")
    for n in fixture.get("negative", []):
        name, expected = n["name"], n["expected_error"]
        try:
            opened = open_(n["app_secret"], n["request_ref"], n["kind"], n["secure"])
            # Layout errors are the switch's to find: the envelope itself must open.
            if expected in ("NotJson", "InvalidField"):
                if "plaintext" in n and opened != n["plaintext"].encode("utf-8"):
                    problems.append(f"negative {name}: opened plaintext differs")
            else:
                problems.append(f"negative {name}: opened, expected {expected}")
        except SecureError as e:
            if e.variant != expected:
                problems.append(f"negative {name}: got {e.variant}, expected {expected}")
    return problems


def fresh(path):
    items = []
    for v in _load(path)["vectors"]:
        items.append({
            "name": v["name"],
            "app_secret": v["app_secret"],
            "request_ref": v["request_ref"],
            "kind": v["kind"],
            "plaintext": v["plaintext"],
            "secure": seal(v["app_secret"], v["request_ref"], v["kind"], v["plaintext"]),
        })
    return items


def open_items(items):
    problems = []
    for item in items:
        name = item.get("name", item["request_ref"])
        try:
            opened = open_(item["app_secret"], item["request_ref"], item["kind"], item["secure"])
            if opened != item["plaintext"].encode("utf-8"):
                problems.append(f"{name}: opened plaintext differs")
        except SecureError as e:
            problems.append(f"{name}: cannot open: {e}")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description="Manifold auth.secure reference implementation")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check-vectors", help="re-seal every vector with its nonce and compare")
    p.add_argument("path")
    p = sub.add_parser("fresh", help="seal every vector's plaintext with a random nonce")
    p.add_argument("path")
    p = sub.add_parser("open", help="open a JSON list of sealed items ('-' for stdin)")
    p.add_argument("path")
    p = sub.add_parser("seal", help="seal one plaintext")
    p.add_argument("--secret", required=True)
    p.add_argument("--request-ref", required=True)
    p.add_argument("--kind", required=True, choices=KINDS)
    p.add_argument("--nonce-hex", help="fixed nonce, for test vectors only")
    p.add_argument("plaintext")
    args = parser.parse_args(argv)

    if args.command == "check-vectors":
        problems = check_vectors(args.path)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print(f"{len(problems)} mismatches", file=sys.stderr)
            return 1
        fixture = _load(args.path)
        print(f"{len(fixture['vectors'])} vectors ok")
        print(f"{len(fixture.get('negative', []))} negative cases ok")
        return 0
    if args.command == "fresh":
        # ASCII-only output, so the result does not depend on the locale of stdout.
        json.dump(fresh(args.path), sys.stdout, indent=2)
        print()
        return 0
    if args.command == "open":
        items = json.load(sys.stdin) if args.path == "-" else _load(args.path)
        problems = open_items(items)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            return 1
        print(f"{len(items)} items ok")
        return 0
    if args.command == "seal":
        nonce = bytes.fromhex(args.nonce_hex) if args.nonce_hex else None
        print(seal(args.secret, args.request_ref, args.kind, args.plaintext, nonce))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
