"""The state's fingerprint key: made with the state, kept, read without writing, and the upgrade of a state
from before keyed hashes (its records' hashes keyed in place, nothing else changed)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from reconciler.secrets import UNKEYED_FINGERPRINT_REMOVED, upgrade_hash
from reconciler.state import StateDamaged, open_state, sqlite_path

from .helpers import make_record

BARE = "sha256:" + "c" * 64  # a content hash as versions before keyed hashes recorded it


def _sql(url: str, statement: str) -> None:
    """Run one statement on the store's database as an older capctl (or an operator) would."""
    if url.startswith("sqlite"):
        with sqlite3.connect(sqlite_path(url)) as db:
            db.execute(statement)
    else:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(statement.encode())


def test_a_state_keeps_one_key_and_another_state_has_another(store_url: str, tmp_path: Path) -> None:
    first = open_state(store_url)
    key = first.fingerprint_key()
    first.close()
    reader = open_state(store_url, create=False)
    assert key is not None and len(key) == 32 and reader.fingerprint_key() == key
    reader.close()
    again = open_state(store_url)
    assert again.fingerprint_key(b"x" * 32) == key  # an existing key is kept, never replaced
    again.close()
    other = open_state(f"sqlite:///{tmp_path}/other.db")
    assert other.fingerprint_key() not in (None, key)
    other.close()


def test_a_standby_rereads_the_key_without_making_one(store_url: str) -> None:
    """A standby reads the key every retry period (a state of another lineage copied in): where the state has
    none (its tables gone, a restore under way) it makes none, and keeps the key it had."""
    store = open_state(store_url)
    key = store.fingerprint_key()
    _sql(store_url, "DROP TABLE capctl_fingerprint_key")
    assert store.peek_fingerprint_key() is None and store.fingerprint_key() == key
    _sql(store_url, "CREATE TABLE capctl_fingerprint_key (id INTEGER PRIMARY KEY, key_hex TEXT NOT NULL)")
    assert store.peek_fingerprint_key() is None  # no row either: none made
    _sql(store_url, f"INSERT INTO capctl_fingerprint_key VALUES (1, '{'ab' * 32}')")
    assert store.peek_fingerprint_key() == bytes.fromhex("ab" * 32) == store.fingerprint_key()
    store.close()


def test_an_unkeyed_state_is_keyed_in_place_by_its_first_writer(store_url: str) -> None:
    store = open_state(store_url)
    old = make_record(spec_hash=BARE, fixed_hash=BARE, request={"SecretKey": "sha256:abcdefabcdef", "Room": "r"})
    keyed = make_record("SnapshotJob/new/room")
    store.put_many([old, keyed])
    serial = store.serial()
    store.close()
    _sql(store_url, "DROP TABLE capctl_fingerprint_key")  # as a version before keyed fingerprints left it

    reader = open_state(store_url, create=False)
    assert reader.fingerprint_key() is None  # read-only: no key is made ...
    assert reader.load().records[old.key] == old  # ... and bare hashes are compared as they are
    reader.close()

    writer = open_state(store_url)
    key = writer.fingerprint_key(b"k" * 32)
    records = writer.load().records
    assert key == b"k" * 32 and writer.serial() == serial
    writer.close()
    upgraded = records[old.key]
    assert (upgraded.spec_hash, upgraded.fixed_hash) == (upgrade_hash(key, BARE), upgrade_hash(key, BARE))
    assert upgraded.spec_hash.startswith("hmac:") and upgraded.request == {
        "SecretKey": UNKEYED_FINGERPRINT_REMOVED,
        "Room": "r",
    }
    assert records[keyed.key] == keyed  # already keyed: left alone


def test_bare_hashes_an_older_capctl_writes_into_a_keyed_state_are_read_keyed(store_url: str) -> None:
    # A rolling update: the new pod keyed the state, the old one still leads and writes bare content hashes
    # (a re-issue, a room added meanwhile). Read as they are, each looked like a changed spec: a replace.
    store = open_state(store_url)
    key = store.fingerprint_key(b"k" * 32)
    assert key is not None
    old = make_record(spec_hash=BARE, fixed_hash=BARE, request={"SecretKey": "sha256:abcdefabcdef", "Room": "r"})
    store.put_many([old])
    store.close()

    reader = open_state(store_url, create=False)  # a new read-only open (plan, state list) knows no key yet
    for record in (reader.load().records[old.key], reader.record(old.key)):
        assert record is not None
        assert (record.spec_hash, record.fixed_hash) == (upgrade_hash(key, BARE), upgrade_hash(key, BARE))
        assert record.request == {"SecretKey": UNKEYED_FINGERPRINT_REMOVED, "Room": "r"}
    reader.close()


# Walk 16E-8: the key lost (its table dropped or emptied by hand, a restore of capctl_meta and capctl_records
# alone) while every record holds keyed hashes: read-only plan replaced every task, and the first writer made a
# new key under which `apply` stopped and started every task.
@pytest.mark.parametrize("loss", ["DROP TABLE capctl_fingerprint_key", "DELETE FROM capctl_fingerprint_key"])
def test_a_state_whose_records_are_keyed_but_whose_key_is_lost_is_damage(store_url: str, loss: str) -> None:
    store = open_state(store_url)
    store.fingerprint_key()
    store.put_many([make_record(), make_record("SnapshotJob/new/room")])
    store.close()
    _sql(store_url, loss)
    for create in (False, True):  # read-only (plan, state list) and writable (apply, run): no key made
        again = open_state(store_url, create=create)
        try:
            with pytest.raises(StateDamaged, match=r"its records hold keyed task hashes, but the capctl_fingerp"):
                again.fingerprint_key()
        finally:
            again.close()
