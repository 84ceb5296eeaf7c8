"""Backup sets and their manifests.

A set lives under ``<target>/<database>/<backup-id>/`` on each storage (the
storage adds its own prefix).  ``manifest.json`` is written **last** and is the
commit marker: a set without it is incomplete — never listed, never restored,
deleted once older than ``backup.incomplete_after``.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from upkeeper import __version__
from upkeeper.backup.files import ENTRY_KEYS, FileList, ReadFileList
from upkeeper.backup.pipeline import ObjectRecord, fault_pause
from upkeeper.config.backup import safe_component as safe_component  # (re-exported: its home is config)
from upkeeper.errors import BackupError, StorageError
from upkeeper.storage.base import ObjectInfo, Storage, delete_prefix, get_bytes

MANIFEST = "manifest.json"
#: A set being written holds a lease: this small object under its prefix (the writer's host, pid, run and times,
#: as JSON), written as the set starts, rewritten every LEASE_REFRESH while the run is alive, deleted at commit or
#: abort.  Prune leaves an incomplete set whose lease is younger than LEASE_TTL (by the storage's modification
#: time), whatever ``incomplete_after`` says: a dump that works for hours between two uploads is no leftover.
#: Never a backup object: :func:`scan_sets` keeps it apart (:attr:`StoredSet.lease`), manifests never name it.
LEASE = ".writing"
#: the name of a reader's marker under a set's prefix begins with this (:mod:`upkeeper.backup.lease`): verify and
#: restore hold one while they read the set; never a backup object
READING = ".reading-"
LEASE_REFRESH = timedelta(minutes=10)
#: Three refresh intervals: a lease survives two missed refreshes (a storage briefly unreachable, a refresh
#: slowed behind a big upload) and some clock skew between the prune's host and the storage's clock, yet a writer
#: that died (kill -9, a host gone) stops protecting its set within half an hour.
LEASE_TTL = 3 * LEASE_REFRESH
#: the suffix of a takeover claim beside a stale lease (``.writing.<hash of that lease>.takeover``, see
#: :mod:`upkeeper.backup.lease`): there for an instant, never a backup object either
CLAIM_SUFFIX = ".takeover"


def is_lease_name(name: str) -> bool:
    """The set's lease, or a takeover claim beside it: never a backup object."""
    return name == LEASE or (name.startswith(LEASE + ".") and name.endswith(CLAIM_SUFFIX))
FORMAT_VERSION = 1
_SURROGATE = re.compile("[\ud800-\udfff]")
ID_RE = re.compile(r"^(\d{8}T\d{6}Z)-([0-9a-f]{6})$")


def new_backup_id(now: datetime) -> str:
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def id_time(backup_id: str) -> datetime | None:
    m = ID_RE.match(backup_id)
    if not m:
        return None
    return datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def set_prefix(target: str, database: str, backup_id: str) -> str:
    return f"{target}/{database}/{backup_id}/"


@dataclass
class Manifest:
    id: str
    kind: str  # postgres | files | redis
    target: str
    database: str
    started_at: datetime
    finished_at: datetime
    objects: list[ObjectRecord]
    job: str | None = None
    node: str | None = None
    encryption: dict[str, Any] = field(default_factory=lambda: {"method": "none"})
    details: dict[str, Any] = field(default_factory=dict)  # kind-specific: versions, row counts, files …
    tool_version: str = __version__
    #: the id of the set this one re-encrypts (``backups rekey``): the same data, encrypted to other keys
    rekeyed_from: str | None = None
    #: SHA-256 of the manifest.json bytes this manifest was read from or written as (not part of the manifest
    #: itself: the catalog records it, and verification compares it)
    sha256: str | None = field(default=None, compare=False, repr=False)
    #: the size in bytes of that manifest.json (set with ``sha256``)
    json_size: int | None = field(default=None, compare=False, repr=False)

    @property
    def prefix(self) -> str:
        return set_prefix(self.target, self.database, self.id)

    @property
    def size(self) -> int:
        return sum(o.size for o in self.objects)

    @property
    def raw_size(self) -> int:
        return sum(o.raw_size for o in self.objects)

    @property
    def compression_ratio(self) -> float:
        return round(self.raw_size / self.size, 3) if self.size else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "tool": "upkeeper",
            "tool_version": self.tool_version,
            "id": self.id,
            "kind": self.kind,
            "target": self.target,
            "database": self.database,
            "job": self.job,
            "node": self.node,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "size": self.size,
            "raw_size": self.raw_size,
            "compression_ratio": self.compression_ratio,
            "encryption": self.encryption,
            "objects": [o.to_dict() for o in self.objects],
            **{self.kind: self.details},
            **({"rekeyed_from": self.rekeyed_from} if self.rekeyed_from else {}),
        }

    def to_json(self) -> bytes:
        return b"".join(self.json_chunks())

    def json_chunks(self) -> Iterator[bytes]:
        """manifest.json in pieces: a files set's file lists (:class:`FileList`, millions of lines) are copied
        out a chunk at a time, each entry on one line, never assembled into one string with the rest."""
        lists: list[FileList] = []
        mark = f"\0file-list-{secrets.token_hex(8)}-"

        def file_list(o: Any) -> Any:
            if isinstance(o, FileList):
                lists.append(o)
                return f"{mark}{len(lists) - 1}\0"
            if isinstance(o, ReadFileList):  # a manifest that was read, written again
                return list(o)
            raise TypeError(f"{type(o).__name__} in a manifest")

        text = json.dumps(self.to_dict(), indent=2, sort_keys=False, ensure_ascii=False, default=file_list)
        # a file name that is not UTF-8 comes from os as lone surrogates (surrogateescape): written as \udcXX
        # escapes, which json.loads reads back to the same str, and so to the same bytes on disk
        data = (_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + "\n").encode()
        found, lists = lists, []  # (json's encoder leaves a reference cycle to the closure's list)
        parts = re.split(rb'"' + re.escape(json.dumps(mark)[1:-1].encode()) + rb'(\d+)\\u0000"', data)
        yield parts[0]
        for i in range(1, len(parts), 2):
            line = parts[i - 1][parts[i - 1].rfind(b"\n") + 1:]
            indent = line[:len(line) - len(line.lstrip(b" "))] + b"  "
            yield from _json_array(found[int(parts[i])], indent)
            yield parts[i + 1]

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str | None = None) -> Manifest:
        """Raises :class:`BackupError` (naming ``where``, the manifest's storage and path, when given) when ``d``
        is not a manifest this version can read."""
        at = f"{where}: " if where else ""
        try:
            if int(d.get("format_version", 0)) > FORMAT_VERSION:
                raise BackupError(f"{at}manifest format {d['format_version']} is newer than this upkeeper understands",
                                  "Try: upgrade upkeeper")
            kind = str(d["kind"])
            return cls(
                id=str(d["id"]), kind=kind, target=str(d["target"]), database=str(d["database"]),
                started_at=_ts(d["started_at"]), finished_at=_ts(d["finished_at"]),
                objects=[ObjectRecord.from_dict(o) for o in d["objects"]],
                job=_name(d.get("job")), node=_name(d.get("node")), encryption=dict(d.get("encryption") or {"method": "none"}),
                details=dict(d.get(kind) or {}), tool_version=str(d.get("tool_version", "")),
                rekeyed_from=str(d["rekeyed_from"]) if d.get("rekeyed_from") else None,
            )
        except KeyError as exc:
            raise BackupError(f"{at}malformed manifest: no {exc}") from None
        except (TypeError, ValueError, OverflowError) as exc:
            # (OverflowError: a size or format_version of 1e999, a time before year 1 in UTC)
            raise BackupError(f"{at}malformed manifest: {exc}") from None

    @classmethod
    def from_json(cls, data: bytes, where: str = "manifest", *, file_lists: bool = True) -> Manifest:
        """A files set's per-file entries are kept as :class:`ReadFileList` (a tuple an entry, not a dict).
        ``file_lists=False``: they are dropped as they are parsed (each becomes None), for readers of the set's
        header only.  (The whole document is still parsed: a manifest that is not valid JSON is unreadable
        either way.)"""
        m = cls.from_text(_text(data, where), hashlib.sha256(data).hexdigest(), where, file_lists=file_lists)
        m.json_size = len(data)
        return m

    @classmethod
    def from_text(cls, text: str, sha256: str, where: str = "manifest", *, file_lists: bool = True) -> Manifest:
        """:meth:`from_json` of the decoded text, whose bytes' SHA-256 is ``sha256`` (so the bytes, as large,
        need not be kept while it is parsed)."""
        try:
            d = json.loads(text, object_hook=_compact_file_entry if file_lists else _drop_file_entry)
        except ValueError as exc:
            raise BackupError(f"{where}: not valid JSON ({exc})") from None
        except RecursionError:  # [[[[…: no manifest nests that deep
            raise BackupError(f"{where}: not a manifest (JSON nested too deeply)") from None
        if not isinstance(d, dict):
            raise BackupError(f"{where}: not a JSON object")
        if file_lists:
            try:
                _file_lists(d)
            except RecursionError:
                raise BackupError(f"{where}: not a manifest (JSON nested too deeply)") from None
        m = cls.from_dict(d, where)
        m.sha256 = sha256
        return m

    def object(self, name: str) -> ObjectRecord:
        for o in self.objects:
            if o.name == name:
                return o
        raise BackupError(f"backup {self.id} has no object {name!r}")


_ENTRY_KEYS = frozenset(ENTRY_KEYS)


def _is_file_entry(d: dict[str, Any]) -> bool:
    return "path" in d and "type" in d and d.keys() <= _ENTRY_KEYS


def _drop_file_entry(d: dict[str, Any]) -> dict[str, Any] | None:
    return None if _is_file_entry(d) else d


def _compact_file_entry(d: dict[str, Any]) -> dict[str, Any] | tuple[Any, ...]:
    return ReadFileList.entry(d) if _is_file_entry(d) else d


def _file_lists(o: Any) -> None:
    """Every list of entries :func:`_compact_file_entry` made tuples, in ``o``, made a :class:`ReadFileList`.
    (JSON has no tuples: a list holding one holds entries.)"""
    items = o.items() if isinstance(o, dict) else enumerate(o) if isinstance(o, list) else ()
    for k, v in items:
        if isinstance(v, list) and v and isinstance(v[0], tuple):
            if all(isinstance(x, tuple) for x in v):
                o[k] = ReadFileList(v)
            else:  # entries and other things in one list: not a file list (a manifest edited by hand)
                o[k] = [next(iter(ReadFileList([x]))) if isinstance(x, tuple) else x for x in v]
        else:
            _file_lists(v)


def _json_array(listed: FileList, indent: bytes) -> Iterator[bytes]:
    if not listed.count:
        yield b"[]"
        return
    sep = b",\n" + indent
    before = b"[\n" + indent
    for chunk in listed.chunks():  # lines ending in a newline
        yield before + chunk[:-1].replace(b"\n", sep)
        before = sep
    yield b"\n" + indent[:-2] + b"]"


def _name(v: Any) -> str | None:
    """A manifest's ``job`` or ``node``: text, or None (older versions wrote none).  Anything else (a number, a
    list: a manifest another tool wrote, or edited by hand) is read as its text: retention compares a node's name
    with others, and messages join it with others (a backup run ended in a TypeError over another node's set)."""
    if v is None or isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else str(v)


def _ts(v: Any) -> datetime:
    t = datetime.fromisoformat(str(v))
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def check_objects_stored(storages: Iterable[Storage], manifest: Manifest) -> None:
    """Raise a :class:`BackupError` unless every storage lists each object of ``manifest`` under the set's
    prefix with the size recorded for it: called just before :func:`write_manifest`, so a set that lost an
    object while it was written — a prune (of this host or another sharing the storage) that took the set for
    an idle leftover and deleted it, someone's cleanup — is never committed, listed and reported as complete.
    One listing of the set per storage."""
    for s in storages:
        listed = {o.key.removeprefix(manifest.prefix): o.size for o in s.list(manifest.prefix)}
        gone = [f"{o.name} (missing)" if o.name not in listed else f"{o.name} ({listed[o.name]} bytes, not {o.size})"
                for o in manifest.objects if listed.get(o.name) != o.size]
        if gone:
            raise BackupError(
                f"backup {manifest.id} lost objects on storage {s.name} while it was written: {', '.join(gone[:5])}"
                + (f" and {len(gone) - 5} more" if len(gone) > 5 else "") + "; it is not committed",
                "Try: run the backup again; if it keeps happening, look for what deletes there (another host's "
                "'upkeeper backups prune' with a short backup.incomplete_after, a lifecycle rule, a cleanup job)")


def write_manifest(storages: Iterable[Storage], manifest: Manifest) -> None:
    """The commit marker, on every storage, after every object is there.  Sets ``manifest.sha256``.

    Written as it is made (:meth:`Manifest.json_chunks`): a files set's manifest can be hundreds of MB."""
    sha = hashlib.sha256()
    size = 0
    for chunk in manifest.json_chunks():
        sha.update(chunk)
        size += len(chunk)
    manifest.sha256 = sha.hexdigest()
    manifest.json_size = size
    for s in storages:
        try:
            w = s.open_write(manifest.prefix + MANIFEST)
            try:
                for chunk in manifest.json_chunks():
                    w.write(chunk)
                w.commit()
            except BaseException:
                w.abort()
                raise
        except StorageError as exc:
            raise StorageError(f"storage {s.name}: writing the manifest: {exc.message}", exc.hint) from None


def on_storage(name: str, message: str) -> str:
    """``message`` (an error of storage ``name``) for a list of storages' errors, naming that storage once: the
    errors of :func:`read_manifest` start with the manifest's address (``NAME:path: ...``), written
    ``NAME: path: ...`` like the others; a message that already starts with ``NAME: `` is left as it is."""
    if message.startswith(f"{name}:"):
        return f"{name}: {message.removeprefix(f'{name}:').lstrip(' ')}"
    return f"{name}: {message}"


def read_manifest(storage: Storage, prefix: str, *, file_lists: bool = True, known: Manifest | None = None
                  ) -> Manifest:
    """The set's manifest.  ``known``: the manifest of that set as this process wrote it (its ``sha256`` set by
    :func:`write_manifest`), returned as it is when the stored bytes are exactly those (hashed as they are read,
    never parsed: a files set's manifest can be hundreds of MB); else the stored one is parsed as usual."""
    where = f"{storage.name}:{prefix}{MANIFEST}"
    if known is not None and known.sha256 and known.prefix == prefix:
        sha = hashlib.sha256()
        with storage.open_read(prefix + MANIFEST) as fh:
            while chunk := fh.read(1 << 20):
                sha.update(chunk)
        if sha.hexdigest() == known.sha256:
            return known
    data = get_bytes(storage, prefix + MANIFEST)
    sha256 = hashlib.sha256(data).hexdigest()
    size = len(data)
    text = _text(data, where)
    del data  # a files set's manifest can be hundreds of MB: not held twice while it is parsed
    m = Manifest.from_text(text, sha256, where, file_lists=file_lists)
    m.json_size = size
    return m


def _text(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BackupError(f"{where}: not valid JSON (not UTF-8: {exc})") from None


@dataclass
class StoredSet:
    """A set directory found on a storage: complete (with manifest) or not."""

    storage: Storage
    target: str
    database: str
    id: str
    objects: list[ObjectInfo]
    #: the writer's lease (:data:`LEASE`), when the storage holds one: never among ``objects``
    lease: ObjectInfo | None = None

    @property
    def prefix(self) -> str:
        return set_prefix(self.target, self.database, self.id)

    @property
    def complete(self) -> bool:
        return any(o.key == self.prefix + MANIFEST for o in self.objects)

    @property
    def created(self) -> datetime | None:
        t = id_time(self.id)
        if t is not None:
            return t
        times = [o.modified for o in self.objects if o.modified is not None]
        return min(times) if times else None

    @property
    def last_activity(self) -> datetime | None:
        """When the set last changed: its newest object, else its id's time.

        An incomplete set is judged by this, not by when it began: a directory-format dump
        still uploading its tables after a day is alive while new objects keep arriving.
        """
        times = [o.modified for o in self.objects if o.modified is not None]
        started = self.created
        if started is not None:
            times.append(started)
        return max(times) if times else None


def scan_sets(storage: Storage, target: str | None = None, database: str | None = None) -> Iterator[StoredSet]:
    """Every ``<target>/<database>/<id>/`` directory on a storage (complete or not)."""
    prefix = ""
    if target:
        prefix = f"{target}/"
        if database:
            prefix += f"{database}/"
    groups: dict[tuple[str, str, str], list[ObjectInfo]] = {}
    leases: dict[tuple[str, str, str], ObjectInfo] = {}
    for obj in storage.list(prefix):
        parts = obj.key.split("/")
        if len(parts) < 4:
            continue
        key = (parts[0], parts[1], parts[2])
        if len(parts) == 4 and is_lease_name(parts[3]):
            if parts[3] == LEASE:
                leases[key] = obj
            groups.setdefault(key, [])
            continue
        if len(parts) == 4 and parts[3].startswith(READING):
            groups.setdefault(key, [])
            continue
        groups.setdefault(key, []).append(obj)
    for (t, db, bid), objs in sorted(groups.items()):
        yield StoredSet(storage, t, db, bid, objs, leases.get((t, db, bid)))


def delete_set(storage: Storage, target: str, database: str, backup_id: str, *, keep_lease: bool = False,
               done: list[str] | None = None) -> int:
    """Delete a set: the manifest first (so a half-deleted set is never taken for complete).  ``keep_lease``:
    all but its lease (and takeover claims): the caller holds it, and releases it once the rest is gone — another
    writer could otherwise take it and write while the deletion goes on.  ``done`` gets :data:`MANIFEST` once
    the manifest is gone (or was already): an error after that leaves an incomplete set, no longer a backup."""
    prefix = set_prefix(target, database, backup_id)
    if storage.stat(prefix + MANIFEST) is not None:
        storage.delete(prefix + MANIFEST)
        fault_pause("set-manifest-deleted")  # (the crash tests: the set's objects not yet deleted)
    if done is not None:
        done.append(MANIFEST)
    if not keep_lease:
        return delete_prefix(storage, prefix)
    n = 0
    for obj in list(storage.list(prefix)):
        if not is_lease_name(obj.key.removeprefix(prefix)):
            storage.delete(obj.key)
            n += 1
    return n
