"""The simulator's signature code against the official Volcengine SDK and the documented vectors."""

from __future__ import annotations

from collections import OrderedDict
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from volcengine.auth.SignerV4 import SignerV4
from volcengine.auth.SignParam import SignParam
from volcengine.Credentials import Credentials

from reconciler.sim.signing import (
    decode_legacy_token,
    make_legacy_token,
    parse_volc_authorization,
    volc_signature,
    zego_callback_signature,
    zego_signature,
)

VECTOR_BODY = b'{"AppId":"app1","RoomId":"r1","TaskId":"t1"}'


def _sdk(query: dict[str, str], body: bytes, path: str = "/") -> str:
    param = SignParam()
    param.set_method("POST")
    param.set_host("rtc.volcengineapi.com")
    param.set_path(path)
    param.set_query(OrderedDict(query))
    param.set_body(body)
    param.set_date(datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC))
    param.set_header_list(OrderedDict([("Host", "rtc.volcengineapi.com"), ("Content-Type", "application/json")]))
    result: str = SignerV4.sign_only(param, Credentials("AKTEST", "SKTEST", "rtc", "cn-north-1")).xSignature
    return result


def _ours(query: str, body: bytes, path: str = "/") -> str:
    import hashlib

    return volc_signature(
        secret_key="SKTEST",
        method="POST",
        path=path,
        raw_query=query,
        headers={
            "Host": "rtc.volcengineapi.com",
            "Content-Type": "application/json",
            "X-Date": "20240102T030405Z",
            "X-Content-Sha256": hashlib.sha256(body).hexdigest(),
        },
        body=body,
        x_date="20240102T030405Z",
        region="cn-north-1",
        service="rtc",
    )


def test_volc_documented_vector() -> None:
    expected = "b53b3cfa9c01168941c087d48f7685ea9a6077feeb90cdd3cce9bbb748e9e27a"
    assert _ours("Action=StartSnapshot&Version=2023-11-01", VECTOR_BODY) == expected
    assert _sdk({"Action": "StartSnapshot", "Version": "2023-11-01"}, VECTOR_BODY) == expected


@settings(max_examples=60)
@given(
    values=st.lists(
        st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8), min_size=1, max_size=4
    ),
    body=st.binary(max_size=64),
)
def test_volc_matches_sdk_on_arbitrary_query_values(values: list[str], body: bytes) -> None:
    from urllib.parse import urlencode

    query = {f"K{i}": v for i, v in enumerate(values)}
    assert _ours(urlencode(query), body, "/volc/") == _sdk(query, body, "/volc/")


def test_parse_authorization() -> None:
    auth = parse_volc_authorization(
        "HMAC-SHA256 Credential=AK/20240102/cn-north-1/rtc/request, SignedHeaders=host;x-date, Signature=ab"
    )
    assert auth is not None
    assert (auth.access_key, auth.date, auth.region, auth.signed_headers) == (
        "AK",
        "20240102",
        "cn-north-1",
        ("host", "x-date"),
    )
    assert parse_volc_authorization("Bearer x") is None
    assert parse_volc_authorization("HMAC-SHA256 Credential=AK/d/r/s, SignedHeaders=h, Signature=x") is None


def test_zego_documented_vectors() -> None:
    assert (
        zego_signature(12345, "4fd24687296dd9f3", "9193cc662a4c0ec135ec71fb57194b38", 1615186943)
        == "43e5cfcca828314675f91b001390566a"
    )
    assert zego_callback_signature("secret", 1470820198, "123412") == "5bd59fd62953a8059fb7eaba95720f66d19e4517"


def test_legacy_token_round_trip() -> None:
    token = make_legacy_token(1, "s", "abcdef0123456789", 99)
    decoded = decode_legacy_token(token)
    assert decoded is not None and decoded.nonce == "abcdef0123456789" and decoded.expired == 99
    assert decode_legacy_token("not base64!") is None
