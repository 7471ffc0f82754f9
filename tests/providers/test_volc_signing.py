"""Volcengine V4 signing and webhook signatures: the documented vector, agreement with the official SDK."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from volcengine.auth.SignerV4 import SignerV4
from volcengine.auth.SignParam import SignParam
from volcengine.Credentials import Credentials

from reconciler.providers.volc_signing import sign_callback, sign_request, verify_callback

WHEN = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
VECTOR_BODY = b'{"AppId":"app1","RoomId":"r1","TaskId":"t1"}'
VECTOR_SIGNATURE = "b53b3cfa9c01168941c087d48f7685ea9a6077feeb90cdd3cce9bbb748e9e27a"


def sign(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    *,
    region: str = "cn-north-1",
    service: str = "rtc",
    now: datetime = WHEN,
) -> dict[str, str]:
    return sign_request(
        method,
        url,
        headers,
        body,
        access_key="AKTEST",
        secret_key="SKTEST",
        region=region,
        service=service,
        now=now,
    )


def sdk_sign(
    method: str,
    host: str,
    path: str,
    query: dict[str, Any],
    headers: dict[str, str],
    body: bytes,
    *,
    region: str = "cn-north-1",
    service: str = "rtc",
) -> str:
    """The Authorization header the official SDK computes for the same request."""
    param = SignParam()
    param.set_method(method)
    param.set_host(host)
    param.set_path(path)
    param.set_query(OrderedDict(query))
    param.set_header_list(OrderedDict({"Host": host, **headers}))
    param.set_body(body)
    param.set_date(WHEN)
    return str(SignerV4.sign_only(param, Credentials("AKTEST", "SKTEST", service, region)).authorization)


def test_documented_vector() -> None:
    headers = sign(
        "POST",
        "https://rtc.volcengineapi.com/?Action=StartSnapshot&Version=2023-11-01",
        {"Host": "rtc.volcengineapi.com", "Content-Type": "application/json"},
        VECTOR_BODY,
    )
    assert headers == {
        "X-Date": "20240102T030405Z",
        "X-Content-Sha256": hashlib.sha256(VECTOR_BODY).hexdigest(),
        "Authorization": "HMAC-SHA256 Credential=AKTEST/20240102/cn-north-1/rtc/request, "
        "SignedHeaders=content-type;host;x-content-sha256;x-date, Signature=" + VECTOR_SIGNATURE,
    }


def test_host_comes_from_the_url_when_not_given() -> None:
    url = "https://rtc.volcengineapi.com/?Action=StartSnapshot&Version=2023-11-01"
    implicit = sign("POST", url, {"Content-Type": "application/json"}, VECTOR_BODY)
    assert implicit["Authorization"].endswith(VECTOR_SIGNATURE)


@pytest.mark.parametrize(
    ("method", "url", "headers", "body"),
    [
        ("POST", "https://rtc.volcengineapi.com/?Action=StopSnapshot&Version=2023-11-01",
         {"Content-Type": "application/json"}, b'{"AppId":"a","RoomId":"r","TaskId":"t"}'),
        ("GET", "https://rtc.volcengineapi.com/?Action=GetSnapshotTask&Version=2023-11-01&AppId=a&RoomId=r%401"
         "&TaskId=t.1-_~", {}, b""),
        ("GET", "http://127.0.0.1:8750/volc/?Version=2023-11-01&Action=GetSnapshotTask&RoomId=room%201",
         {}, b""),
        ("POST", "http://127.0.0.1:8750/volc/?Action=StartSnapshot&Version=2023-11-01",
         {"Content-Type": "application/json"}, '{"RoomId":"房间"}'.encode()),
        ("POST", "https://rtc.volcengineapi.com:443/?Action=StartSnapshot&Version=2023-11-01",
         {"Content-Type": "application/json", "X-Custom": "v"}, b"{}"),
        ("POST", "http://localhost:80/?Action=StartSnapshot&Version=2023-11-01&Tag=a%2Bb%2Fc",
         {"Content-Type": "application/json", "Content-Md5": "abc"}, b"x"),
        ("PUT", "https://rtc.volcengineapi.com/?Action=X&Version=1&Empty=",
         {"Content-Type": "text/plain"}, b"\x00\xff"),
    ],
)  # fmt: skip
def test_equals_the_official_sdk(method: str, url: str, headers: dict[str, str], body: bytes) -> None:
    parts = urlsplit(url)
    expected = sdk_sign(method, parts.netloc, parts.path, dict(parse_qsl(parts.query, True)), headers, body)
    assert sign(method, url, headers, body)["Authorization"] == expected


def test_repeated_query_keys_and_other_region_equal_the_sdk() -> None:
    url = "https://open.volcengineapi.com/?Action=A&Version=V&Id=2&Id=1"
    expected = sdk_sign(
        "GET", "open.volcengineapi.com", "/", {"Action": "A", "Version": "V", "Id": ["2", "1"]}, {}, b"",
        region="ap-singapore-1", service="vod",
    )  # fmt: skip
    assert sign("GET", url, {}, b"", region="ap-singapore-1", service="vod")["Authorization"] == expected


_text = st.text(st.characters(codec="utf-8"), max_size=20)


@settings(max_examples=60)
@given(
    query=st.dictionaries(st.text("abcXYZ_-.~ +/&=", min_size=1, max_size=8), _text, max_size=5),
    body=st.binary(max_size=64),
    post=st.booleans(),
)
def test_any_query_and_body_equal_the_sdk(query: dict[str, str], body: bytes, post: bool) -> None:
    url = "https://rtc.volcengineapi.com/?" + urlencode(query, quote_via=quote, safe="-_.~")
    method, headers = ("POST", {"Content-Type": "application/json"}) if post else ("GET", {})
    expected = sdk_sign(method, "rtc.volcengineapi.com", "/", query, headers, body)
    assert sign(method, url, headers, body)["Authorization"] == expected


def test_time_is_converted_to_utc_and_naive_time_is_refused() -> None:
    url = "https://rtc.volcengineapi.com/?Action=StartSnapshot&Version=2023-11-01"
    headers = {"Content-Type": "application/json"}
    shanghai = WHEN.astimezone(timezone(timedelta(hours=8)))
    assert sign("POST", url, headers, VECTOR_BODY, now=shanghai)["Authorization"].endswith(VECTOR_SIGNATURE)
    with pytest.raises(ValueError, match="timezone-aware"):
        sign("POST", url, headers, VECTOR_BODY, now=WHEN.replace(tzinfo=None))


def test_a_different_secret_or_body_changes_the_signature() -> None:
    url = "https://rtc.volcengineapi.com/?Action=StartSnapshot&Version=2023-11-01"
    headers = {"Content-Type": "application/json"}
    base = sign("POST", url, headers, VECTOR_BODY)["Authorization"]
    assert sign("POST", url, headers, VECTOR_BODY + b" ")["Authorization"] != base
    other = sign_request(
        "POST", url, headers, VECTOR_BODY, access_key="AKTEST", secret_key="SKTEST2", region="cn-north-1",
        service="rtc", now=WHEN,
    )  # fmt: skip
    assert other["Authorization"] != base


# -- webhooks ---------------------------------------------------------------------------------------------

CALLBACK = {
    "EventType": "SnapshotRealTimeData",
    "EventData": '{"RoomId":"r1","TaskId":"t1"}',
    "EventTime": "2024-01-02T03:04:05+08:00",
    "EventId": "e-1",
    "AppId": "app1",
    "Version": "2020-12-01",
    "Nonce": "9a8b",
}
# The same values and the secret "cb-secret", sorted by hand: 2020… < 2024… < 9a8b < SnapshotRealTimeData
# < app1 < cb-secret < e-1 < {"RoomId"… (ASCII order: digits, upper case, lower case, "{").
CALLBACK_SORTED = (
    '2020-12-012024-01-02T03:04:05+08:009a8bSnapshotRealTimeDataapp1cb-secrete-1{"RoomId":"r1","TaskId":"t1"}'
)
CALLBACK_SIGNATURE = hashlib.sha256(CALLBACK_SORTED.encode()).hexdigest()


def test_sign_callback_sorts_values_with_the_secret() -> None:
    assert sign_callback(CALLBACK, "cb-secret") == CALLBACK_SIGNATURE


def test_verify_callback_accepts_nonce_and_the_old_noce_spelling() -> None:
    assert verify_callback({**CALLBACK, "Signature": CALLBACK_SIGNATURE}, "cb-secret")
    noce = {k: v for k, v in CALLBACK.items() if k != "Nonce"} | {"Noce": "9a8b"}
    assert verify_callback({**noce, "Signature": CALLBACK_SIGNATURE}, "cb-secret")
    assert verify_callback({**CALLBACK, "Signature": CALLBACK_SIGNATURE.upper()}, "cb-secret")


def test_non_string_values_are_signed_as_strings() -> None:
    numeric = {**CALLBACK, "EventTime": 1704164645}
    signature = sign_callback(numeric, "cb-secret")
    assert verify_callback({**numeric, "Signature": signature}, "cb-secret")
    assert not verify_callback({**numeric, "EventTime": 1704164646, "Signature": signature}, "cb-secret")


@pytest.mark.parametrize(
    "payload",
    [
        {**CALLBACK, "Signature": CALLBACK_SIGNATURE, "EventData": '{"RoomId":"r2","TaskId":"t1"}'},
        {**CALLBACK, "Signature": CALLBACK_SIGNATURE, "Nonce": "0000"},
        {**CALLBACK, "Signature": "0" * 64},
        {**CALLBACK},
        {**CALLBACK, "Signature": 12},
        {k: v for k, v in CALLBACK.items() if k != "EventId"} | {"Signature": CALLBACK_SIGNATURE},
    ],
    ids=["tampered-data", "tampered-nonce", "wrong", "unsigned", "not-a-string", "missing-field"],
)
def test_verify_callback_rejects(payload: dict[str, Any]) -> None:
    assert not verify_callback(payload, "cb-secret")


def test_verify_callback_rejects_another_secret() -> None:
    assert not verify_callback({**CALLBACK, "Signature": CALLBACK_SIGNATURE}, "other-secret")


def test_sign_callback_names_the_missing_field() -> None:
    with pytest.raises(ValueError, match="EventType"):
        sign_callback({"AppId": "app1"}, "cb-secret")
