"""ZEGO signing against the vendors' published vectors (vendor-apis.md)."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from reconciler.providers.zego_signing import (
    RandomBytes,
    access_token_request,
    callback_signature,
    legacy_token,
    new_nonce,
    signature,
    signature_params,
    verify_callback,
)
from reconciler.secrets import Secret

VECTOR_NONCE = "4fd24687296dd9f3"
VECTOR_SECRET = "9193cc662a4c0ec135ec71fb57194b38"
VECTOR_SIGNATURE = "5bd59fd62953a8059fb7eaba95720f66d19e4517"  # callback vector


def fixed_bytes(hex_text: str) -> RandomBytes:
    def random_bytes(n: int) -> bytes:
        assert n == 8
        return bytes.fromhex(hex_text)

    return random_bytes


def test_signature_vector() -> None:
    assert signature(12345, VECTOR_NONCE, VECTOR_SECRET, 1615186943) == "43e5cfcca828314675f91b001390566a"


def test_signature_params_use_the_random_source_and_whole_seconds() -> None:
    params = signature_params(12345, VECTOR_SECRET, 1615186943.9, fixed_bytes(VECTOR_NONCE))
    assert params == {
        "AppId": "12345",
        "SignatureNonce": VECTOR_NONCE,
        "Timestamp": "1615186943",
        "SignatureVersion": "2.0",
        "Signature": "43e5cfcca828314675f91b001390566a",
    }


def test_nonce_is_16_hex_chars_and_fresh() -> None:
    first, second = new_nonce(), new_nonce()
    assert len(first) == 16 and int(first, 16) >= 0
    assert first != second


def test_access_token_request_body_and_token() -> None:
    body = access_token_request(
        1234567890, "s3cret", 1_700_000_000.5, seq=7, random_bytes=fixed_bytes("00112233445566ff")
    )
    assert body["app_id"] == 1234567890 and body["seq"] == 7 and body["version"] == 1
    assert set(body) == {"app_id", "seq", "token", "version"}
    token = json.loads(base64.b64decode(body["token"], validate=True))
    assert token == {
        "ver": 1,
        "hash": hashlib.md5(b"1234567890s3cret00112233445566ff1700003600").hexdigest(),
        "nonce": "00112233445566ff",
        "expired": 1_700_003_600,
    }


def test_legacy_token_is_padded_standard_base64_of_compact_json() -> None:
    token = legacy_token(1, "x", "n", 2)
    assert len(token) % 4 == 0
    assert base64.b64decode(token).startswith(b'{"ver":1,"hash":"')


def test_callback_signature_vector() -> None:
    assert callback_signature("secret", "1470820198", "123412") == VECTOR_SIGNATURE


VECTOR_PAYLOAD = {
    "app_id": 1,
    "task_id": "t",
    "timestamp": 1470820198,
    "nonce": "123412",
    "signature": VECTOR_SIGNATURE,
}


@pytest.mark.parametrize("secret", ["secret", Secret("secret")])
def test_verify_callback_accepts_the_vector(secret: str | Secret) -> None:
    assert verify_callback(VECTOR_PAYLOAD, secret)
    assert verify_callback({**VECTOR_PAYLOAD, "timestamp": "1470820198"}, secret)
    assert verify_callback({**VECTOR_PAYLOAD, "signature": VECTOR_SIGNATURE.upper()}, secret)


@pytest.mark.parametrize(
    "change",
    [
        {"signature": "5bd59fd62953a8059fb7eaba95720f66d19e4518"},
        {"timestamp": 1470820199},
        {"nonce": "123413"},
        {"nonce": None},
        {"signature": 5},
        {"timestamp": True},
        {"nonce": ["123412"]},
    ],
)
def test_verify_callback_rejects_tampering_and_malformed_fields(change: dict[str, object]) -> None:
    assert not verify_callback({**VECTOR_PAYLOAD, **change}, "secret")


def test_verify_callback_rejects_a_missing_field_and_a_wrong_secret() -> None:
    without = {k: v for k, v in VECTOR_PAYLOAD.items() if k != "signature"}
    assert not verify_callback(without, "secret")
    assert not verify_callback(VECTOR_PAYLOAD, "other")
