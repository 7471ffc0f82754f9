"""The one place that decides how a secret is shown (`reconciler/redact.py`), and every path that goes through it.

First the rules themselves (fingerprints, never a mask; which key; text scrubbing; key names; URLs), then each
path that used to redact on its own, driven end to end: a ZEGO and a Volcengine provider against a loopback
vendor that echoes what it received, a PostgreSQL driver error that quotes the password, the simulator's
request log over HTTP, and a log line. Last, a scan of the source: no other module masks or reads a
fingerprint itself, so auditing `redact.py` audits them all.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from reconciler import logs
from reconciler.budget import BudgetRegistry
from reconciler.clock import FakeClock
from reconciler.model import ApiFamily, DesiredTask, ProviderConfig
from reconciler.providers.base import VendorError
from reconciler.providers.volcengine import VolcengineSnapshotProvider, stop_reason_of
from reconciler.providers.zego import ZegoLegacyRecordProvider, ZegoRecordProvider, ZegoThumbnailProvider
from reconciler.redact import (
    MESSAGE_LIMIT,
    is_secret_key,
    redact_named,
    redact_tree,
    redact_url,
    scrub_text,
    secret_leaves,
    url_secrets,
)
from reconciler.secrets import Secret, SecretText, reveal_tree
from reconciler.sim import create_app
from reconciler.state import StateError, open_state
from tests.core.factories import desired

FINGERPRINT = re.compile(r"sha256:[0-9a-f]{12}")
STORAGE_KEY = "storage-key-0123"
FOLDER = "folder-from-env/"
ACCESS_KEY, SECRET_KEY = "AKLTechoaccess00", "echo-secret-key-00"


# -- the rules --------------------------------------------------------------------------------------------


def test_a_tree_shows_every_secret_and_hidden_text_as_its_fingerprint_and_nothing_else_changes() -> None:
    key = b"k" * 32
    secret, hidden = Secret("s3cret", key), SecretText("hidden", key)
    tree = {"a": [1, True, None, "plain", {"k": secret}], "b": hidden, "c": 2.5}
    assert redact_tree(tree) == {
        "a": [1, True, None, "plain", {"k": secret.fingerprint}],
        "b": hidden.fingerprint,
        "c": 2.5,
    }
    assert FINGERPRINT.fullmatch(secret.fingerprint) and secret.fingerprint != Secret("s3cret").fingerprint
    assert secret_leaves(tree) == [secret, hidden]
    assert reveal_tree(tree) == {"a": [1, True, None, "plain", {"k": "s3cret"}], "b": "hidden", "c": 2.5}
    assert type(reveal_tree(tree)["b"]) is str  # a SecretText left in would reach the wire as its fingerprint


@pytest.mark.parametrize("hidden", [Secret("s3cr3t-value"), SecretText("s3cr3t-value")], ids=type)
def test_every_way_of_making_text_of_a_hidden_value_shows_its_fingerprint(hidden: Secret | SecretText) -> None:
    """str, repr, f-strings with any format spec or conversion, %-formatting, str.format: the fingerprint each
    time, never the value; pickling (a cache, a process pool) is refused rather than carrying the value away."""
    shown = [str(hidden), repr(hidden), f"{hidden}", f"{hidden!r}", f"{hidden:>40}", format(hidden, "s")]
    shown += ["%s" % hidden, "%r" % hidden, "{}".format(hidden)]  # noqa: UP031, UP032 (each way is the point)
    assert set(shown) == {hidden.fingerprint} and FINGERPRINT.fullmatch(hidden.fingerprint)
    assert hidden.reveal() == "s3cr3t-value"
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(hidden)


def test_secrets_of_one_value_are_one_secret() -> None:
    """Equal by value and hashed alike, so a set of the Providers' callbackSecrets tries each value once."""
    assert Secret("a") == Secret("a") and Secret("a") != Secret("b") and Secret("a") != "a"
    assert len({Secret("a"), Secret("a"), Secret("b")}) == 2


def test_a_shared_subtree_is_redacted_once_per_pass() -> None:
    shared = {"Key": Secret("x")}
    memo: dict[int, Any] = {}
    first, second = redact_tree({"s": shared}, memo), redact_tree({"s": shared}, memo)
    assert first["s"] is second["s"] and first["s"] == {"Key": Secret("x").fingerprint}


def test_text_from_outside_shows_each_echoed_secret_as_its_fingerprint_then_is_shortened() -> None:
    short, longer = Secret("abc"), Secret("abcdef")
    text = scrub_text("got abcdef and abc and nothing else", [short, longer, Secret("")])
    assert text == f"got {longer.fingerprint} and {short.fingerprint} and nothing else"
    assert "***" not in text
    cut = scrub_text("x" * 500, [])
    assert len(cut) == MESSAGE_LIMIT and cut.endswith("…")
    assert scrub_text("x" * 500, [], limit=None) == "x" * 500


def test_a_fingerprint_written_first_is_not_scrubbed_again() -> None:
    """One pass: a short secret that happens to occur inside another's fingerprint leaves it whole."""
    long = Secret("the-long-secret")
    inner = Secret(long.fingerprint[7:10])
    assert scrub_text("the-long-secret", [long, inner]) == long.fingerprint


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("AccessKeyId", True),
        ("access_key", True),
        ("SecretKey", True),
        ("server_secret", True),
        ("X-Signature", True),
        ("Authorization", True),
        ("access_token", True),
        ("password", True),
        ("ak", True),
        ("SignatureVersion", False),
        ("SignatureNonce", False),
        ("RoomId", False),
        ("event", False),
    ],
)
def test_credential_key_names(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_plain_credentials_found_by_key_name_show_the_run_keys_fingerprint() -> None:
    held = Secret("held")
    tree = {"AccessKeyId": "AKLT1", "Nested": [{"Signature": 12}], "RoomId": "r", "Other": held}
    assert redact_named(tree) == {
        "AccessKeyId": Secret("AKLT1").fingerprint,  # the run key: comparable within one process
        "Nested": [{"Signature": Secret("12").fingerprint}],
        "RoomId": "r",
        "Other": held.fingerprint,
    }


def test_a_url_shows_no_password_and_its_spellings_are_secrets() -> None:
    url = "postgresql://app:p%40ss@db:5432/capctl?password=other&sslmode=require"
    assert redact_url(url) == "postgresql://app@db:5432/capctl?sslmode=require"
    assert sorted(s.reveal() for s in url_secrets(url)) == ["other", "p%40ss", "p@ss"]
    # libpq's client key password too: a driver error quoting it is scrubbed (walk 49c)
    assert [s.reveal() for s in url_secrets("postgresql://db/capctl?sslpassword=k%26y")] == ["k&y"]


async def test_a_hidden_referenced_value_reaches_the_vendor_as_its_text() -> None:
    """`reveal_tree` is the wire's side: a query parameter from a hidden reference (`cdn: {env: CDN}`) is sent as
    the text, not as the fingerprint `str()` of a `SecretText` gives."""
    clock = FakeClock(1_700_000_000.0)
    app = create_app(clock=clock)
    config = ProviderConfig(
        name="p",
        type="zego",
        app_id="1234567890",
        server_secret=Secret("0123456789abcdef0123456789abcdef"),
        rtc_endpoint="http://sim/zego/rtc",
    )
    request = {"Vendor": SecretText("Huawei"), "FileId": "/record/a.mp4", "Interval": 2, "Type": "SampleSnapshot"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
        provider = ZegoThumbnailProvider(config, budgets=BudgetRegistry(clock), clock=clock, http=client)
        started = await provider.start(_task(ApiFamily.ZEGO_THUMBNAIL, request), None)
    assert started.vendor_task_id
    assert app.state.sim.log.entries()[-1].query["Vendor"] == "Huawei"


# -- every old path goes through it -------------------------------------------------------------------------


_SIGNED: list[str] = []  # what the echo vendor received: each call's Authorization header, path and body


class _Echo(BaseHTTPRequestHandler):
    """A vendor that rejects every call and quotes what it got, as real vendors sometimes do."""

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        # /wire-…: the body quoted as it came (its JSON escapes kept); else as the vendor re-encodes it
        said = (
            raw.decode()
            if self.path.startswith("/wire-")
            else json.dumps(json.loads(raw or b"null"), separators=(",", ":"))
        )
        _SIGNED.append(f"{self.headers.get('Authorization')} {self.path} {raw.decode()}")  # its signature is there
        answer: dict[str, Any]
        if self.path.startswith("/proxy"):  # a proxy's error page (no JSON), or a message, with lines and escapes
            said = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\x1b[2J\x1b[31mforged\t\u202e</body>"
            zego = json.dumps({"Code": 300000004, "Message": said.replace("<", "")})
            page = (zego if "zego" in self.path else said).encode()
            self.send_response(200 if "zego" in self.path else 502)
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        if self.path.startswith("/quote-signed"):  # the call's signature quoted back: query (ZEGO) or header
            quoted = self.headers.get("Authorization", "").rpartition(", ")[2] or self.path  # `Signature=…`
            answer = {"ResponseMetadata": {"Error": {"Code": "InvalidParameter", "Message": quoted}}}
            answer, status = (answer, 400) if "volc" in self.path else ({"Code": 300000004, "Message": quoted}, 200)
        elif "/legacy/" in self.path:  # seed 003's envelope: lower-case
            answer, status = {"code": 100000001, "message": said}, 200
        elif self.path.startswith("/volc-code"):  # the echo in the error code, where none was expected
            answer, status = {"ResponseMetadata": {"Error": {"Code": f"Invalid {said[-40:]}", "Message": said}}}, 400
        elif "/volc" in self.path:
            credential = self.headers.get("Authorization", "").partition("Credential=")[2].partition("/")[0]
            answer = {"ResponseMetadata": {"Error": {"Code": "InvalidParameter", "Message": f"{credential} {said}"}}}
            status = 400
        else:
            answer, status = {"Code": 300000004, "Message": said, "RequestId": "r"}, 200
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # the request lines would only clutter test output
        pass


@pytest.fixture
def echo_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def _task(family: ApiFamily, request: dict[str, Any]) -> DesiredTask:
    return replace(desired(family=family), provider="p", request=request)


async def _zego_error(endpoint: str, http: httpx.AsyncClient, request: dict[str, Any], *, legacy: bool = False) -> str:
    """What a recording start against `endpoint` fails with (the legacy API's with `legacy`)."""
    clock = FakeClock(1_700_000_000.0)
    config = ProviderConfig(
        name="p",
        type="zego",
        app_id="1234567890",
        server_secret=Secret("0123456789abcdef0123456789abcdef"),
        cloudrecord_endpoint=endpoint,
        cloudrecord_api="legacy" if legacy else "current",
    )
    kind = ZegoLegacyRecordProvider if legacy else ZegoRecordProvider
    provider = kind(config, budgets=BudgetRegistry(clock), clock=clock, http=http)
    with pytest.raises(VendorError) as err:
        await provider.start(_task(ApiFamily.ZEGO_RECORD_LEGACY if legacy else ApiFamily.ZEGO_RECORD, request), "i")
    return str(err.value)


async def _volcengine_error(endpoint: str, http: httpx.AsyncClient, storage: Secret) -> str:
    """What a snapshot start against `endpoint`, with `storage` as its storage secret key, fails with."""
    clock = FakeClock(1_700_000_000.0)
    config = ProviderConfig(
        name="p",
        type="volcengine",
        app_id="app1",
        endpoint=endpoint,
        access_key=Secret(ACCESS_KEY),
        secret_key=Secret(SECRET_KEY),
    )
    provider = VolcengineSnapshotProvider(config, budgets=BudgetRegistry(clock), clock=clock, http=http)
    request = {"AppId": "app1", "RoomId": "r", "TaskId": "t", "StorageConfig": {"SecretKey": storage}}
    with pytest.raises(VendorError) as err:
        await provider.start(_task(ApiFamily.VOLC_SNAPSHOT, request), "i")
    return str(err.value)


async def test_a_zego_error_shows_echoed_secrets_as_fingerprints(echo_url: str, http: httpx.AsyncClient) -> None:
    storage, folder = Secret(STORAGE_KEY), SecretText(FOLDER)
    request = {"RoomId": "r", "RecordOutputParams": {"OutputFolder": folder}, "StorageParams": {"Key": storage}}
    text = await _zego_error(f"{echo_url}/zego/", http, request)
    assert STORAGE_KEY not in text and FOLDER not in text
    assert storage.fingerprint in text and folder.fingerprint in text


async def test_a_volcengine_error_shows_echoed_secrets_as_fingerprints(echo_url: str, http: httpx.AsyncClient) -> None:
    storage = Secret(STORAGE_KEY)
    text = await _volcengine_error(f"{echo_url}/volc", http, storage)
    assert ACCESS_KEY not in text and STORAGE_KEY not in text
    assert Secret(ACCESS_KEY).fingerprint in text and storage.fingerprint in text


async def test_a_volcengine_error_code_that_echoes_the_request_is_scrubbed_and_cut(
    echo_url: str, http: httpx.AsyncClient
) -> None:
    storage = Secret(STORAGE_KEY)
    text = await _volcengine_error(f"{echo_url}/volc-code", http, storage)
    assert STORAGE_KEY not in text and storage.fingerprint in text and len(text) < 300, text


@pytest.mark.parametrize("vendor", ["volc", "zego"])
async def test_a_secret_echoed_in_its_json_escaped_wire_form_is_scrubbed(
    vendor: str, echo_url: str, http: httpx.AsyncClient
) -> None:
    """`"`, `\\` and non-ASCII are escaped on the wire: an echo of the raw body quotes that spelling."""
    storage = Secret('k"e\\y/é-0123')
    if vendor == "volc":
        text = await _volcengine_error(f"{echo_url}/wire-volc", http, storage)
    else:
        text = await _zego_error(f"{echo_url}/wire-zego/", http, {"StorageParams": {"Key": storage}})
    assert "-0123" not in text and storage.fingerprint in text, text


@pytest.mark.parametrize("api", ["volc", "zego", "zego-legacy"])
async def test_a_signature_quoted_back_is_shown_as_its_fingerprint(
    api: str, echo_url: str, http: httpx.AsyncClient
) -> None:
    """A Volcengine or ZEGO signature is a credential for minutes (and a ZEGO one an md5 preimage of the server
    secret); the legacy token request is signed with it and exchanged for access tokens."""
    _SIGNED.clear()
    if api == "volc":
        text = await _volcengine_error(f"{echo_url}/quote-signed-volc", http, Secret(STORAGE_KEY))
    elif api == "zego":
        text = await _zego_error(f"{echo_url}/quote-signed/", http, {"RoomId": "r"})
    else:
        text = await _zego_error(f"{echo_url}/zego/legacy", http, {"RoomId": "r"}, legacy=True)
    found = re.search(r'Signature=([0-9a-f]+)|"token":\s*"([^"]+)"', _SIGNED[-1])
    assert found, _SIGNED
    signature = found.group(1) or found.group(2)
    assert signature not in text and "sha256:" in text, text


def test_a_state_driver_error_shows_the_password_as_its_run_key_fingerprint() -> None:
    """libpq quotes a badly encoded password: the state is not open, so the run key fingerprints it."""
    with pytest.raises(StateError) as err:
        open_state("postgresql://app:hunter2%zz@127.0.0.1:1/capctl")
    text = str(err.value)
    assert "hunter2" not in text and Secret("hunter2%zz").fingerprint in text
    assert "postgresql://app@127.0.0.1:1/capctl" in text


async def test_the_simulator_request_log_shows_credentials_as_fingerprints() -> None:
    app = create_app(clock=FakeClock(1_700_000_000.0))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim") as client:
        body = {"app_id": 1, "access_token": "legacy-token-1", "room_id": "r"}
        await client.post("/zego/legacy/start", json=body)
        query = {"Action": "StartRecord", "Signature": "abc", "SignatureNonce": "n"}
        await client.post("/zego/cloudrecord", json={}, params=query)
        entries = (await client.get("/_sim/requests")).json()["requests"]
    legacy, current = entries[-2:]
    assert "legacy-token-1" not in json.dumps(entries)
    assert legacy["body"] == {"app_id": 1, "access_token": Secret("legacy-token-1").fingerprint, "room_id": "r"}
    assert current["query"] == {"Action": "StartRecord", "Signature": Secret("abc").fingerprint, "SignatureNonce": "n"}


def test_a_log_line_shows_credentials_and_secrets_as_fingerprints() -> None:
    out = io.StringIO()
    logs.configure("info", json_logs=True, stream=out)
    try:
        structlog.get_logger().info("calling", access_key="AKLT-raw", request={"Key": Secret(STORAGE_KEY)})
    finally:
        structlog.reset_defaults()
    line = json.loads(out.getvalue())
    assert "AKLT-raw" not in out.getvalue() and STORAGE_KEY not in out.getvalue()
    assert line["access_key"] == Secret("AKLT-raw").fingerprint
    assert line["request"] == {"Key": Secret(STORAGE_KEY).fingerprint}


# -- nothing else decides ------------------------------------------------------------------------------------

SOURCE = Path(__file__).resolve().parents[2] / "reconciler"
DECIDERS = {SOURCE / "secrets.py", SOURCE / "redact.py"}


def test_no_other_module_masks_a_secret_or_reads_a_fingerprint_itself() -> None:
    offenders = [
        f"{path.relative_to(SOURCE)}:{number}: {line.strip()}"
        for path in sorted(SOURCE.rglob("*.py"))
        if path not in DECIDERS
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"""\.fingerprint\b|["']\*\*\*["']|\[redacted\]""", line)
    ]
    assert offenders == []


async def test_a_vendors_or_proxys_text_is_shown_on_one_line_without_its_control_characters(
    echo_url: str, http: httpx.AsyncClient
) -> None:
    """A proxy's HTML error page (or a vendor message with line breaks) was quoted as it came: `capctl apply`,
    plan reasons and `state list` printed its lines apart and its ESC sequences to the reader's terminal."""
    volc = await _volcengine_error(f"{echo_url}/proxy/volc", http, Secret(STORAGE_KEY))
    assert volc.endswith(
        "(HTTP 502, not JSON): <html> <head><title>502 Bad Gateway</title></head> <body>\\x1b[2J\\x1b[31mforged "
        "\\u202e</body>"
    ), volc
    zego = await _zego_error(f"{echo_url}/proxy/zego/", http, {"RoomId": "r"})
    assert zego.endswith("body>\\x1b[2J\\x1b[31mforged \\u202e/body>)"), zego
    said = stop_reason_of("Idle\nTimeOut\x1b[2J" + "x" * 100, 3)  # a StopReason, kept in the record, is as short
    assert said.startswith("ended (Volcengine Idle TimeOut\\x1b[2Jxxx") and said.isprintable() and len(said) < 100
