"""A set's lease and readers' markers are read back from a storage another host, another tool or a damaged disk
may have written: whatever they hold, taking the lease, prune's question "does it protect the set?" and the list of
readers answer (a lease that cannot be understood protects the set while fresh, a marker that cannot be understood
is an unknown reader) -- never a crash."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from upkeeper.backup.lease import acquire, protects, readers
from upkeeper.backup.manifest import LEASE, READING, set_prefix
from upkeeper.config.storage import LocalStorageConfig
from upkeeper.core.hostid import host_label
from upkeeper.storage.local import LocalStorage

PREFIX = set_prefix("db", "app", "20260101T000000Z-abcd")
LEASE_KEY = PREFIX + LEASE
MARKER_KEY = f"{PREFIX}{READING}otherhost-1-abcd"

_pids = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6),
                  st.sampled_from([2**64, -1, 0, os.getpid(), "12", 1e999]))
_times = st.one_of(st.none(), st.integers(), st.text(max_size=12),
                   st.sampled_from(["0001-01-01T00:00+01:00", "9999-12-31T23:59-01:00", "2026-01-01T00:00:00"]))
_bodies = st.fixed_dictionaries({}, optional={
    "host": st.one_of(st.just(host_label()), st.text(max_size=5), st.integers()),
    "pid": _pids, "started_at": _times, "token": st.one_of(st.text(max_size=4), st.integers()),
    "command": st.one_of(st.none(), st.text(max_size=8), st.lists(st.integers(), max_size=2)),
    "job": st.one_of(st.none(), st.text(max_size=8), st.integers()), "node": st.one_of(st.text(max_size=5),
                                                                                         st.integers()),
    "pruning": st.one_of(st.booleans(), st.integers()),
})
lease_bytes = st.one_of(st.binary(max_size=64), _bodies.map(lambda d: json.dumps(d).encode()),
                        st.recursive(st.integers(), lambda c: st.lists(c, max_size=3), max_leaves=8).map(
                            lambda v: json.dumps(v).encode()))


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> LocalStorage:
    root = tmp_path_factory.mktemp("leases")
    (root / PREFIX).mkdir(parents=True)
    return LocalStorage("fuzz", LocalStorageConfig(path=str(root), fsync=False))


def _put(storage: LocalStorage, key: str, data: bytes) -> None:
    Path(storage.config.path, key).write_bytes(data)


_HOSTILE = [
    json.dumps({"host": host_label(), "pid": 2**64}).encode(),  # os.kill: OverflowError
    b'{"host": "%s", "pid": 1e999}' % host_label().encode(),  # int(inf): OverflowError
    json.dumps({"host": "elsewhere", "pid": 1, "started_at": "0001-01-01T00:00+01:00"}).encode(),  # astimezone
    b"[" * 100_000 + b"]" * 100_000,  # RecursionError
]


@settings(max_examples=200, deadline=None)
@given(lease_bytes)
@example(_HOSTILE[0])
@example(_HOSTILE[1])
@example(_HOSTILE[2])
@example(_HOSTILE[3])
def test_a_lease_of_any_content_is_answered(storage: LocalStorage, data: bytes) -> None:
    now = datetime.now(UTC)
    _put(storage, LEASE_KEY, data)
    assert isinstance(protects(storage, LEASE_KEY, now), bool)
    _put(storage, LEASE_KEY, data)
    ours = json.dumps({"host": host_label(), "pid": os.getpid(), "token": "fuzz-token"}).encode()
    held = acquire(storage, LEASE_KEY, ours, "fuzz-token", now)
    assert held is None or (isinstance(held, str) and LEASE_KEY in held), held
    Path(storage.config.path, LEASE_KEY).unlink(missing_ok=True)


@settings(max_examples=200, deadline=None)
@given(lease_bytes)
@example(_HOSTILE[0])
@example(_HOSTILE[1])
@example(_HOSTILE[3])
def test_a_readers_marker_of_any_content_is_answered(storage: LocalStorage, data: bytes) -> None:
    _put(storage, MARKER_KEY, data)
    try:
        found = readers([storage], "db", "app", "20260101T000000Z-abcd")
    finally:
        Path(storage.config.path, MARKER_KEY).unlink()
    assert len(found) <= 1 and all(MARKER_KEY in r for r in found), found


def test_a_lease_naming_no_possible_process_keeps_protecting_the_set(storage: LocalStorage) -> None:
    """A fresh lease of this host whose pid is no process id (2**64, 1e999: damaged, or another tool's) crashed
    prune with OverflowError; it is another writer's while fresh, as an unreadable lease is."""
    now = datetime.now(UTC)
    for data in _HOSTILE[:2]:
        _put(storage, LEASE_KEY, json.dumps({**json.loads(data), "pruning": True}).encode())
        assert protects(storage, LEASE_KEY, now) is True
        held = acquire(storage, LEASE_KEY, b"{}", "t", now)
        assert held is not None and LEASE_KEY in held
    Path(storage.config.path, LEASE_KEY).unlink()
    _put(storage, MARKER_KEY, _HOSTILE[0])
    try:
        assert readers([storage], "db", "app", "20260101T000000Z-abcd") == [
            f"a reader whose marker {MARKER_KEY} on fuzz cannot be read"]
    finally:
        Path(storage.config.path, MARKER_KEY).unlink()
