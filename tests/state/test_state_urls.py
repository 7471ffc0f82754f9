"""`open_state`: where the state lives, how URLs are read, and that no password ever shows."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.redact import redact_url
from reconciler.state import (
    DEFAULT_STATE_URL,
    SQLiteStateStore,
    StateError,
    StateUnreachable,
    open_state,
    sqlite_path,
)
from reconciler.state.postgres import PostgresStateStore

from .helpers import PG_ENV, make_record


def test_default_is_a_sqlite_file_under_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_state(env={})
    assert isinstance(store, SQLiteStateStore)
    assert store.url == f"sqlite:///{tmp_path}/.capctl/state.db"
    assert DEFAULT_STATE_URL == "sqlite:///.capctl/state.db"
    store.close()
    assert (tmp_path / ".capctl" / "state.db").is_file()


def test_a_relative_path_up_a_directory_is_named_without_its_dots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Walk 58d: `state copy --from sqlite:///../x.db` said it copied `sqlite:////…/st/../x.db`. A `..` after a
    link leads beside the link's target, not back: that path is named as given, and opens that file."""
    (tmp_path / "st").mkdir()
    (tmp_path / "far" / "in").mkdir(parents=True)
    (tmp_path / "st" / "link").symlink_to(tmp_path / "far" / "in")
    monkeypatch.chdir(tmp_path / "st")
    up = open_state("sqlite:///../x.db")
    assert up.url == f"sqlite:///{tmp_path}/x.db"
    up.close()
    through = open_state("sqlite:///link/../x.db")
    assert through.url == f"sqlite:///{tmp_path}/st/link/../x.db"
    through.close()
    assert (tmp_path / "far" / "x.db").is_file()


def test_env_names_the_store_and_an_argument_wins(tmp_path: Path) -> None:
    from_env = open_state(env={"CAPCTL_STATE": f"sqlite:///{tmp_path}/env.db"})
    assert from_env.url.endswith("/env.db")
    from_env.close()
    explicit = open_state(f"sqlite:///{tmp_path}/arg.db", env={"CAPCTL_STATE": f"sqlite:///{tmp_path}/env.db"})
    assert explicit.url.endswith("/arg.db")
    explicit.close()


def test_os_environ_is_the_default_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPCTL_STATE", f"sqlite:///{tmp_path}/from-os.db")
    store = open_state()
    assert store.url == f"sqlite:///{tmp_path}/from-os.db"
    store.close()


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///state.db", "state.db"),
        ("sqlite:///relative/dir/state.db", "relative/dir/state.db"),
        ("sqlite:////abs/dir/state.db", "/abs/dir/state.db"),
        ("sqlite:///dir with spaces/s.db", "dir with spaces/s.db"),
    ],
)
def test_sqlite_paths(url: str, path: str) -> None:
    assert sqlite_path(url) == path


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://host/state.db", "has no host; write sqlite:////absolute/path/state.db \\(four slashes\\)"),
        ("sqlite:///", "name a database file"),
        ("sqlite:////var/lib/capctl/", "name a database file"),
        ("sqlite:///s.db?mode=ro", "take no options"),
        # a PostgreSQL URL with sqlite's scheme, options with a secret: printed whole (walk 50C-3)
        ("sqlite://admin:hunter2@db/capctl", r"^state URL 'sqlite://admin@db/capctl': a sqlite URL has no host"),
        ("sqlite://admin:hunt/er2@db/capctl", r"^state URL 'sqlite://…@db/capctl': a sqlite URL has no host"),
        ("sqlite://admin:hunter2@[::1/capctl", r"^state URL 'sqlite://…': a sqlite URL has no host"),
        ("sqlite:///s.db?key=hunter2", r"^state URL 'sqlite:///s.db': sqlite URLs take no options"),
        ("sqlite:///s.db#hunter2", r"^state URL 'sqlite:///s.db': sqlite URLs take no options"),
        ("mysql://admin:hunter2@db/capctl", "scheme 'mysql' is not supported"),
        ("redis://:hunter2@cache", "scheme 'redis' is not supported"),
        ("state-hunter2.db", "a URL, not a path: sqlite:////absolute/path/state.db \\(four slashes\\), sqlite:///rel"),
        ("postgresql://admin:hunter2@db:port/capctl", "the port must be a number"),
        ("postgresql://admin:hunter2@db1:5432,db2:port/capctl", "the port must be a number"),  # each host's port
        ("postgresql://admin:hunter2@db1:5432,[::1]:65536/capctl", "the port must be a number"),
        ("postgresql://admin:hunter2@/capctl", "name a host"),
        # an unencoded & in a password= parameter: libpq's refusal quoted the password's rest, as did the URL shown
        *(
            (
                f"postgresql://admin@db/capctl?sslmode=require&password={password}",
                r"^state URL postgresql://admin@db/"
                r"capctl: a part after its password= parameter is no libpq parameter: either the password holds "
                r"an '&' .*\(write & as %26\), or a parameter after password= is misspelt$",
            )
            # the last: a misspelt sslmode, which the message must not blame on an '&' alone (walk 32c)
            for password in ["s3&hunter2", "s3&hunter2==", "s3&&hunter2", "s3cret&sslmod=require"]
        ),
        # the same for libpq's other secret, the client key's sslpassword= (walk 49c)
        (
            "postgresql://admin@db/capctl?sslpassword=s3&hunter2",
            r"^state URL postgresql://admin@db/capctl: a part after its sslpassword= parameter is no libpq parameter: "
            r"either the sslpassword holds an '&'",
        ),
        ("postgresql://db/hunter2@x", r"\(or its database name an '@'\).*@ as %40\)$"),  # no user info: libpq's dbname
        (
            "postgresql://admin:hunter2@[::1/capctl",
            r"cannot be read \(Invalid IPv6 URL\): write an IPv6 host in brackets",
        ),
        # a password from `openssl rand -base64` with its `/` (or a `?`, a `#`) not percent-encoded: the host part
        # ended there, the password was read as a port (`12/…`: a valid one) and the whole URL was shown; an `@`:
        # libpq ends the password there and looked up its rest as the host, naming it
        *(
            (
                f"postgres{s}://admin:{password}@db.internal:5432/capctl",
                rf"^state URL postgres{s}://…@db.internal:"
                r"5432/capctl: its user name or password holds a '/', '\?', '#' or '@'.*percent-encode them \(/ as %2F",
            )
            for s, password in [
                ("ql", "hunter2/x"),
                ("", "12/hunter2"),
                ("ql", "hun?ter2"),
                ("ql", "hunter2#"),
                ("ql", "x@hunter2"),
                # an `@` before the `/`, `?` or `#`: the host part's one `@` was the password's, and its rest was
                # shown as host, port and path (walk 48D-4)
                ("ql", "x@hun:ter2/1"),
                ("ql", "x@hunter2?1"),
                ("ql", "x@hunter2#1"),
            ]
        ),
    ],
)
def test_bad_urls_are_explained_without_the_password(url: str, message: str) -> None:
    with pytest.raises(StateError, match=message) as caught:
        open_state(url, env={})
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret@db.internal:5432/capctl", "postgresql://app@db.internal:5432/capctl"),
        ("postgres://app:p%40ss%3Aword@db/capctl", "postgres://app@db/capctl"),
        ("postgresql://app@db/capctl?password=s3cret&sslmode=require", "postgresql://app@db/capctl?sslmode=require"),
        ("postgresql://:s3cret@db/capctl", "postgresql://db/capctl"),
        ("postgresql://db/capctl", "postgresql://db/capctl"),
        ("postgresql://app:s3/cr@et@db/capctl?sslmode=require", "postgresql://…@db/capctl?sslmode=require"),
        ("postgresql://app:s3cr?et@db/capctl", "postgresql://…@db/capctl"),
        ("postgresql://app:s3@cret@db/capctl", "postgresql://…@db/capctl"),
        ("postgresql://db/capctl?user=app@tenant", "postgresql://db/capctl?user=app@tenant"),  # no user info
        # no host part (a Unix socket as `host=`): its `//` kept, or the URL shown (and `state copy`'s "point every
        # capctl at URL") was `postgresql:/capctl?…`, which capctl refuses as a path and libpq as no URL (walk 31B-2)
        (
            "postgresql:///capctl?host=/run/postgresql&password=s3cret",
            "postgresql:///capctl?host=/run/postgresql",
        ),
        ("postgres://?host=db&dbname=capctl", "postgres://?host=db&dbname=capctl"),
        # libpq's other parameters holding a secret, a misspelt password, a daemon URL's token: all shown in every
        # message naming the URL until walk 49c
        (
            "postgresql://app@db/capctl?sslcert=/c.pem&sslpassword=s3cret&sslmode=verify-full",
            "postgresql://app@db/capctl?sslcert=/c.pem&sslmode=verify-full",
        ),
        (
            "postgresql://db/capctl?oauth_client_secret=s3cret&oauth_client_id=capctl",
            "postgresql://db/capctl?oauth_client_id=capctl",
        ),
        ("postgresql://db/capctl?scram_client_key=s3cret&scram_server_key=s3cret", "postgresql://db/capctl"),
        ("postgresql://db/capctl?Password=s3cret&ssl%70assword=s3cret", "postgresql://db/capctl"),
        ("http://127.0.0.1:8080/?access_token=s3cret", "http://127.0.0.1:8080/"),
        # as written: `state copy` says to point every capctl at it, and libpq refuses `-csearch_path=capctl`
        (
            "postgresql://app@db/app?options=-csearch_path%3Dcapctl",
            "postgresql://app@db/app?options=-csearch_path%3Dcapctl",
        ),
    ],
)
def test_redacted_urls_keep_everything_but_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # nothing listens there once the probe is closed


def test_connection_failure_names_host_and_database_not_the_password() -> None:
    port = closed_port()
    with pytest.raises(StateError) as caught:
        open_state(f"postgresql://capctl:p%40ss-hunter2@127.0.0.1:{port}/statedb", env={})
    message = str(caught.value)
    assert f"postgresql://capctl@127.0.0.1:{port}/statedb" in message
    assert "hunter2" not in message and "p@ss" not in message
    assert "hunter2" not in repr(caught.value.__cause__)  # nothing chained carries it either


@pytest.mark.parametrize(
    "query",
    ["bogus=1", "sslmode=bogus", "target_session_attrs=primary-ish", "keepalives=x", "port=abc", "gssencmode=bogus"],
)
def test_a_url_parameter_libpq_refuses_is_not_waited_for(query: str, tmp_path: Path) -> None:
    """Walk 49C-4: libpq's refusal of a URL's parameter (`invalid sslmode value: "bogus"`) was StateUnreachable,
    so `capctl run` waited for it forever (`--state-wait`), though only a corrected URL ends it."""
    with pytest.raises(StateError) as caught:
        open_state(f"postgresql://capctl:hunter2@127.0.0.1:{closed_port()}/statedb?{query}", env={})
    assert not isinstance(caught.value, StateUnreachable), str(caught.value)
    assert "hunter2" not in str(caught.value)
    # A server not up yet is still waited for: nothing listening, its Unix socket not there yet.
    for url in (
        f"postgresql://capctl@127.0.0.1:{closed_port()}/statedb",
        f"postgresql://capctl@/statedb?host={tmp_path}",
    ):
        with pytest.raises(StateUnreachable):
            open_state(url, env={})


def test_a_postgres_store_url_has_no_password(pg_url: str) -> None:
    # The test cluster trusts loopback, so any password is accepted and must still never show.
    with_password = pg_url.replace("postgresql://postgres@", "postgresql://postgres:hunter2@", 1)
    assert with_password != pg_url
    store = open_state(with_password)
    try:
        assert "hunter2" not in store.url
        assert store.url.startswith("postgresql://postgres@127.0.0.1:")
        assert "options=-csearch_path" in store.url  # non-secret options stay visible
    finally:
        store.close()


def test_a_url_of_several_hosts_each_with_its_port_connects_to_the_one_that_answers(pg_url: str) -> None:
    """Walk 31B-1: libpq takes `db1:5432,db2:5432` (failure-modes.md's `target_session_attrs=read-write` setup);
    urlsplit read it as one host with port `5432,db2:5432`, and capctl refused it: 'the port must be a number'."""
    several = pg_url.replace("@127.0.0.1:", f"@127.0.0.1:{closed_port()},[::1]:{closed_port()},127.0.0.1:", 1)
    assert several != pg_url
    store = open_state(several)
    try:
        assert store.load().serial >= 0
    finally:
        store.close()


def test_a_state_url_from_a_file_with_its_line_break_opens_the_state_it_names(pg_url: str) -> None:
    """Walk 31B-4: a Secret made from a file gives CAPCTL_STATE a final line break, which libpq kept in the URL's
    last value (`database "capctl\n" does not exist`, or here a search_path no table is in)."""
    database = pg_url.partition("?")[0].rpartition("/")[2]
    assert "?" in pg_url and database
    store = open_state(env={"CAPCTL_STATE": f" {pg_url}&dbname={database}\n"})  # the line break after the dbname
    try:
        store.put_many([make_record("SnapshotJob/j/r1")])
    finally:
        store.close()
    again = open_state(pg_url)
    try:
        assert list(again.load().records) == ["SnapshotJob/j/r1"]
    finally:
        again.close()


def test_every_postgres_statement_has_a_time_limit_unless_the_url_sets_its_own(pg_url: str) -> None:
    """Issue 14: a hung database must not hold a call for ever; a URL's own settings win."""
    store = open_state(pg_url)
    assert isinstance(store, PostgresStateStore)
    try:
        with store._cursor(write=False) as cur:
            settings = {}
            for name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout", "search_path"):
                cur.execute(f"SHOW {name}")
                settings[name] = cur.fetchall()[0][0]
            cur.execute("SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()")
            settings["application_name"] = cur.fetchall()[0][0]
    finally:
        store.close()
    assert settings["statement_timeout"] == "15s" and settings["lock_timeout"] == "10s"
    assert settings["idle_in_transaction_session_timeout"] == "1min"
    assert settings["search_path"].startswith("capctl_t_")  # the URL's own options are kept
    assert settings["application_name"] == "capctl"
    # deadlock_timeout is not lock_timeout: capctl's was dropped, and a write waited on a lock as long as the
    # statement_timeout, not `--lock-wait`'s 1 s or 10 s (walk 50C-2); a name is the same in any case.
    mine = "-cstatement_timeout%3D3s%20-cdeadlock_timeout%3D2s%20-c%20Idle_In_Transaction_Session_Timeout%3D5s%20"
    own = open_state(pg_url.replace("options=", f"application_name=replica-a&options={mine}"))
    assert isinstance(own, PostgresStateStore)
    try:
        with own._cursor(write=False) as cur:
            cur.execute("SHOW statement_timeout")
            assert cur.fetchall()[0][0] == "3s"
            cur.execute("SHOW lock_timeout")
            assert cur.fetchall()[0][0] == "10s"
            cur.execute("SHOW idle_in_transaction_session_timeout")
            assert cur.fetchall()[0][0] == "5s"
            cur.execute("SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()")
            assert cur.fetchall()[0][0] == "replica-a"
    finally:
        own.close()
    # A value with an escaped space is one word to the server: its `--lock_timeout=1s` is text, not a setting,
    # and capctl's lock_timeout stays (walk 51B-1).
    # Nor does a character only Python calls a space split a word (the server splits at C's six: walk 52A-4).
    for between in ("%5C%20", "%1F"):
        escaped = open_state(
            pg_url.replace("options=", f"options=-c%20application_name%3Da{between}--lock_timeout%3D1s%20")
        )
        assert isinstance(escaped, PostgresStateStore)
        try:
            with escaped._cursor(write=False) as cur:
                cur.execute("SHOW lock_timeout")
                assert cur.fetchall()[0][0] == "10s", between  # not 1s: the server read no such setting either
        finally:
            escaped.close()


def test_pgoptions_is_kept_when_the_url_sets_no_options(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Walk 49C-2: libpq reads PGOPTIONS when a URL has no options=, but capctl always sent its own, so a state
    in the schema PGOPTIONS names looked absent (plan: every task new; apply: a second, empty state)."""
    url, _, options = pg_url.rpartition("&options=") if "&options=" in pg_url else pg_url.rpartition("?options=")
    assert options.startswith("-csearch_path%3D") and "options" not in url
    store = open_state(pg_url)
    try:
        store.put_many([make_record("SnapshotJob/j/r1")])
    finally:
        store.close()
    monkeypatch.setenv("PGOPTIONS", options.replace("%3D", "="))
    again = open_state(url, create=False)
    try:
        assert list(again.load().records) == ["SnapshotJob/j/r1"]
    finally:
        again.close()


@pytest.fixture
def database_in() -> Iterator[Callable[[str], str]]:
    """`database_in(ENCODING)`: the URL of a new database in that encoding (as initdb under LANG=C makes them)."""
    admin = os.environ.get(PG_ENV)
    if not admin:
        pytest.skip(f"{PG_ENV} is not set (run `source .ci/postgres.sh` first)")
    import psycopg

    made: list[str] = []

    def make(encoding: str) -> str:
        name = f"capctl_enc_{secrets.token_hex(4)}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} ENCODING '{encoding}' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
        made.append(name)
        return admin.rsplit("/", 1)[0] + "/" + name

    yield make
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in made:
            conn.execute(f"DROP DATABASE {name}")


def test_a_database_made_under_lang_c_holds_cjk_rooms_and_a_latin1_one_is_refused_at_once(
    database_in: Callable[[str], str],
) -> None:
    """Walk 16B-9: in a SQL_ASCII database (initdb under LANG=C) psycopg read text as bytes: every command's
    traceback (`fromhex() argument must be str, not bytes`); in LATIN1 the first CJK room of an apply was a
    UnicodeEncodeError's traceback, after its vendor call."""
    store = open_state(database_in("SQL_ASCII"))
    try:
        store.put_many([make_record("RecordingJob/rec/教室-101"), make_record("RecordingJob/rec/🎉party")])
        assert sorted(store.load().records) == ["RecordingJob/rec/教室-101", "RecordingJob/rec/🎉party"]
    finally:
        store.close()
    latin1 = database_in("LATIN1")
    with pytest.raises(StateError, match="the database's encoding is 'LATIN1', which cannot hold every room id"):
        open_state(latin1).load()
