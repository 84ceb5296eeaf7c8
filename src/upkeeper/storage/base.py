"""The storage interface every backend implements (local, s3, sftp).

Keys are ``/``-separated relative paths.  A write is invisible until
``commit()``: a crash or ``abort()`` leaves no object under the final key.
``list`` of a storage whose root (directory, bucket) is missing or cannot be read raises
StorageError — never an empty or partial listing; an existing empty root lists nothing.
``create_exclusive`` writes a small object only where none is, ``replace_if`` only while it still holds the bytes
read, ``delete_if`` deletes one only while it still holds them (the leases of sets being written).
One contract test suite (tests/storage/test_contract.py) runs against every backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import BinaryIO, Protocol, runtime_checkable

from upkeeper.errors import StorageError


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime | None = None


class Writer(Protocol):
    """A streaming upload.  Bytes written are not visible under ``key`` until ``commit``."""

    key: str

    def write(self, data: bytes) -> int: ...

    def commit(self) -> ObjectInfo: ...

    def abort(self) -> None: ...


class Storage(Protocol):
    name: str
    kind: str

    def open_write(self, key: str) -> Writer: ...

    def open_read(self, key: str) -> BinaryIO: ...

    def stat(self, key: str) -> ObjectInfo | None: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def delete(self, key: str) -> None: ...

    def create_exclusive(self, key: str, data: bytes) -> bool:
        """Write ``data`` under ``key`` only if no object is there: True when this call created it, False when one
        was there already (left as it is).  Atomic where the store allows — of two callers at the same instant
        exactly one gets True — and, like a committed write, never visible with part of ``data``.  Local: a
        temporary file hard-linked into place (``link`` fails on an existing name); SFTP: a temporary file moved
        into place with the protocol's plain rename, which refuses an existing target; S3: ``PutObject`` with
        ``If-None-Match: *``.  Used for the sets' leases (:mod:`upkeeper.backup.lease`)."""
        ...

    def replace_if(self, key: str, data: bytes, current: bytes) -> bool:
        """Write ``data`` under ``key`` only if the object there still holds ``current`` (the bytes the caller
        read): True when replaced, False when it is gone or holds something else (left as it is).  Never
        visible with part of ``data``.  S3: ``PutObject`` with ``If-Match`` the ETag of the version read, which
        the store refuses (412) once another write replaced it — atomic.  Local and SFTP: read and compare, then
        a temporary file renamed into place — a write landing between the two (a few milliseconds) is replaced
        unseen.  Used to refresh the sets' leases (:mod:`upkeeper.backup.lease`)."""
        ...

    def delete_if(self, key: str, current: bytes) -> bool:
        """Delete ``key`` only if the object there still holds ``current`` (the bytes the caller read): True when
        deleted, False when it is gone or holds something else (left as it is).  S3: ``DeleteObject`` with
        ``If-Match`` the ETag of the version read, which the store refuses (412) once another write replaced it —
        atomic (a store answering the condition with 501 is deleted from without it: a write landing between the
        read and the delete is deleted unseen).  Local and SFTP: the object renamed aside to a name of its own
        (atomic: a write landing after it goes to the key, untouched), read there and compared, then deleted — or,
        when it is not ``current``, renamed back (never over an object written at the key meanwhile).  While it is
        aside (milliseconds) the key holds nothing.  Used to release the sets' leases
        (:mod:`upkeeper.backup.lease`): a look then a delete deleted another writer's lease taken over between the
        two."""
        ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


@runtime_checkable
class CleansPartials(Protocol):
    """Optional: remove what crashed writers left behind (every built-in backend has it).

    Local and SFTP: temporary ``*.upkeeper-partial`` files; S3: incomplete multipart
    uploads.  Only leftovers idle for more than ``older_than`` go, so a write still in
    progress in another process is never touched; only those of keys under ``prefix``
    (a directory-like prefix ending in ``/``, or "" for the whole storage).  Returns how
    many were removed.
    """

    def clean_partials(self, older_than: timedelta = ..., prefix: str = "") -> int: ...


@runtime_checkable
class SeesPartials(Protocol):
    """Optional: when a write still in progress under ``prefix`` last made progress (None: there is none).

    Local and SFTP: the newest modification time of a temporary ``*.upkeeper-partial`` file; S3: the newest
    part (or start) of an incomplete multipart upload.  ``list`` does not show them, so a set whose listed
    objects are all old may still be receiving one (a dump streaming for more than ``incomplete_after``):
    prune asks this before it deletes such a set as a leftover."""

    def partial_activity(self, prefix: str) -> datetime | None: ...


def partial_activity(storage: Storage, prefix: str) -> datetime | None:
    """See :class:`SeesPartials` (None for a backend without it)."""
    check_key(prefix.rstrip("/"))
    if isinstance(storage, SeesPartials):
        return storage.partial_activity(prefix)
    return None


def clean_partials(storage: Storage, older_than: timedelta = timedelta(hours=24), prefix: str = "") -> int:
    """Remove crashed writers' leftovers under ``prefix`` where the backend supports it (0 otherwise)."""
    if prefix:
        check_key(prefix.rstrip("/"))
    if isinstance(storage, CleansPartials):
        return storage.clean_partials(older_than, prefix)
    return 0


def check_key(key: str) -> str:
    """Refuse keys that could escape the storage root."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"invalid storage key {key!r}", permanent=True)
    if any(ord(c) < 32 or ord(c) == 127 for c in key):  # NUL and friends break paths and S3 keys alike
        raise StorageError(f"invalid storage key {key!r}: control characters", permanent=True)
    return key


def put_bytes(storage: Storage, key: str, data: bytes) -> ObjectInfo:
    w = storage.open_write(key)
    try:
        w.write(data)
        return w.commit()
    except BaseException:
        w.abort()
        raise


def replace_by_rename(storage: Storage, key: str, data: bytes, current: bytes) -> bool:
    """:meth:`Storage.replace_if` for stores without a conditional write (local, SFTP): ``data`` written to a
    temporary object, the object read and compared with ``current``, then the temporary one renamed into place —
    not atomic (a write landing between the comparison and the rename is replaced unseen)."""
    if storage.stat(key) is None:
        return False
    w = storage.open_write(key)
    try:
        w.write(data)
        try:
            there: bytes | None = get_bytes(storage, key)
        except StorageError:
            if storage.stat(key) is not None:
                raise
            there = None  # gone meanwhile
        if there != current:
            w.abort()
            return False
        w.commit()
    except BaseException:
        w.abort()
        raise
    return True


def get_bytes(storage: Storage, key: str) -> bytes:
    with storage.open_read(key) as fh:
        return fh.read()


def delete_prefix(storage: Storage, prefix: str) -> int:
    n = 0
    for obj in list(storage.list(prefix)):
        storage.delete(obj.key)
        n += 1
    return n
