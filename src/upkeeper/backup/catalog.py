"""The backup catalog in the history database: one row per complete backup set.

Storage is the source of truth: a row is added only after the set's manifest
was written, and ``upkeeper backups sync`` rebuilds the table from manifests alone.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, select, update

from upkeeper.backup.manifest import Manifest
from upkeeper.core import tables
from upkeeper.core.history import History, dialect_insert

if TYPE_CHECKING:
    from upkeeper.backup.catalog_orm import BackupRow  # noqa: F401 - re-exported (at run time by __getattr__)

log = logging.getLogger(__name__)

#: where a row keeps the SHA-256 of the set's manifest.json (in its ``manifest`` JSON, beside the manifest's
#: own keys, which never use this name)
MANIFEST_SHA256 = "manifest_sha256"
#: and the size in bytes of that manifest.json (rows recorded before upkeeper kept it have none)
MANIFEST_SIZE = "manifest_size"
#: and when each storage's copy of the set was last proven in full by a verification (every object read and its
#: SHA-256 checked, or restored from), by storage name (ISO times): ``backups verify`` rotates on it
COPIES_PROVEN = "copies_proven"
#: row keys that are not the manifest's own
ROW_KEYS = frozenset({MANIFEST_SHA256, MANIFEST_SIZE, COPIES_PROVEN})

COMPLETE = "complete"
VERIFIED = "verified"
VERIFY_FAILED = "verify-failed"
STATUSES = (COMPLETE, VERIFIED, VERIFY_FAILED)

_backups = tables.backups


class RowView:
    """What a catalog row tells beyond its columns: shared by :class:`CatalogRow` (what :class:`Catalog` reads)
    and the ORM class :class:`~upkeeper.backup.catalog_orm.BackupRow`."""

    if TYPE_CHECKING:  # the columns, as each subclass defines them
        @property
        def id(self) -> str: ...
        @property
        def kind(self) -> str: ...
        @property
        def target(self) -> str: ...
        @property
        def database(self) -> str: ...
        @property
        def job(self) -> str | None: ...
        @property
        def run_id(self) -> int | None: ...
        @property
        def status(self) -> str: ...
        @property
        def started_at(self) -> datetime: ...
        @property
        def finished_at(self) -> datetime: ...
        @property
        def size(self) -> int: ...
        @property
        def raw_size(self) -> int: ...
        @property
        def compression_ratio(self) -> float: ...
        @property
        def storages(self) -> list[str]: ...
        @property
        def encryption(self) -> str: ...
        @property
        def verified_at(self) -> datetime | None: ...
        @property
        def restore_seconds(self) -> float | None: ...
        @property
        def verify_summary(self) -> str: ...
        @property
        def manifest(self) -> dict[str, Any]: ...

    def series(self) -> tuple[str, str, str]:
        return (self.target, self.database, self.kind)

    @property
    def manifest_sha256(self) -> str | None:
        """SHA-256 of manifest.json as written (or as first found by ``backups sync``); None for rows
        recorded before upkeeper kept it."""
        v = (self.manifest or {}).get(MANIFEST_SHA256)
        return str(v) if v else None

    @property
    def manifest_size(self) -> int | None:
        """Size in bytes of the manifest.json whose SHA-256 is :attr:`manifest_sha256` (None when not known)."""
        v = (self.manifest or {}).get(MANIFEST_SIZE)
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    @property
    def copies_proven(self) -> dict[str, datetime]:
        """When each storage's copy was last proven in full (see :data:`COPIES_PROVEN`)."""
        out: dict[str, datetime] = {}
        v = (self.manifest or {}).get(COPIES_PROVEN)
        for name, when in (v.items() if isinstance(v, dict) else ()):
            try:
                out[str(name)] = datetime.fromisoformat(str(when))
            except ValueError:
                continue
        return out

    def to_dict(self, full: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id, "kind": self.kind, "target": self.target, "database": self.database,
            "job": self.job, "run_id": self.run_id, "status": self.status,
            "started_at": self.started_at.isoformat(), "finished_at": self.finished_at.isoformat(),
            "size": self.size, "raw_size": self.raw_size, "compression_ratio": self.compression_ratio,
            "storages": list(self.storages or []), "encryption": self.encryption,
            "verified_at": self.verified_at.isoformat() if self.verified_at else None,
            "restore_seconds": self.restore_seconds, "verify_summary": self.verify_summary,
            "manifest_sha256": self.manifest_sha256,
            "copies_proven": {k: v.isoformat() for k, v in sorted(self.copies_proven.items())},
        }
        if full:
            d["manifest"] = {k: v for k, v in (self.manifest or {}).items() if k not in ROW_KEYS}
        return d


@dataclass(frozen=True, slots=True, eq=False)  # eq=False: compared (and hashed) by identity, as ORM rows were
class CatalogRow(RowView):
    """A row of the ``backups`` table as :class:`Catalog` reads it (in Core: the ORM, ~80 ms to import, stays out of
    the backup runs).  A snapshot: changes go through the catalog's methods."""

    id: str
    kind: str
    target: str
    database: str
    job: str | None
    run_id: int | None
    status: str
    started_at: datetime
    finished_at: datetime
    size: int
    raw_size: int
    compression_ratio: float
    storages: list[str]
    encryption: str
    verified_at: datetime | None
    restore_seconds: float | None
    verify_summary: str
    manifest: dict[str, Any]


def __getattr__(name: str) -> Any:
    """``BackupRow``, the ORM class of the table, imported (with the ORM) on first use."""
    if name == "BackupRow":
        from upkeeper.backup.catalog_orm import BackupRow

        return BackupRow
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def without_file_lists(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest as the catalog keeps it: a files set's per-file lists (about 270 bytes a file: 54 MB for
    200,000 files, in every row of the series, all loaded by ``backups list``) become their length,
    ``files_listed``.  The lists stay in manifest.json on the storages, where verify and restore read them."""
    details = manifest.get("files")
    if manifest.get("kind") != "files" or not isinstance(details, dict) or not isinstance(details.get("archives"),
                                                                                           dict):
        return manifest
    archives = {name: ({k: v for k, v in a.items() if k != "files"} | {"files_listed": len(a.get("files") or [])}
                       if isinstance(a, dict) else a)
                for name, a in details["archives"].items()}
    return {**manifest, "files": {**details, "archives": archives}}


class Catalog:
    """Reads and writes the ``backups`` table through a History store, in Core (:meth:`History.transaction`: on
    SQLite every transaction takes the write lock, BEGIN IMMEDIATE; on PostgreSQL a row about to be changed is read
    with SELECT … FOR UPDATE)."""

    def __init__(self, history: History) -> None:
        self.history = history

    @staticmethod
    def _locked(conn: Connection, backup_id: str) -> CatalogRow | None:
        """The row, locked until the transaction ends (PostgreSQL: read committed would let two processes both read
        it, then each write what it read: one of the writes lost)."""
        got = conn.execute(select(_backups).where(_backups.c.id == backup_id).with_for_update()).first()
        return None if got is None else CatalogRow(**got._mapping)

    @staticmethod
    def _update(conn: Connection, backup_id: str, **values: Any) -> None:
        conn.execute(update(_backups).where(_backups.c.id == backup_id).values(**values))

    def record(self, manifest: Manifest, storages: Sequence[str], run_id: int | None = None,
               status: str = COMPLETE) -> None:
        """Insert or refresh a set's row (keeping verification results already recorded).

        The row keeps the SHA-256 of manifest.json recorded first (when the backup was written, or when
        ``backups sync`` first found the set).  A manifest found later with other bytes does not replace it —
        re-reading storage must not make an edited manifest pass verification: the row is left as it was
        (but for its storages), and ``backups verify`` fails naming manifest.json.
        """
        with self.history.transaction() as conn:
            # the row locked as read (the backup run and 'backups sync' may record the same set at once, or
            # verify, copy and prune change it meanwhile: read committed would lose one of the writes); when there
            # is none, it is created first, unless another process has just done so
            row = self._locked(conn, manifest.id)
            if row is None:
                conn.execute(dialect_insert(self.history.dialect)(_backups).values(
                    id=manifest.id, status=status, run_id=run_id, kind=manifest.kind, target=manifest.target,
                    database=manifest.database, started_at=manifest.started_at, finished_at=manifest.finished_at,
                ).on_conflict_do_nothing(index_elements=["id"]))
                row = self._locked(conn, manifest.id)
                assert row is not None
            recorded = row.manifest_sha256
            holders = sorted(set(storages) | set(row.storages or []))
            if recorded and manifest.sha256 and manifest.sha256 != recorded:
                log.warning("backup %s: manifest.json on storage (SHA-256 %s…) is not the one recorded when the "
                            "backup was written (%s…); the catalog keeps the recorded one, and "
                            "'upkeeper backups verify %s' fails until the original is back",
                            manifest.id, manifest.sha256[:16], recorded[:16], manifest.id)
                self._update(conn, manifest.id, storages=holders)
                return
            size = manifest.json_size if manifest.sha256 else row.manifest_size
            proven = (row.manifest or {}).get(COPIES_PROVEN)
            self._update(
                conn, manifest.id, kind=manifest.kind, target=manifest.target, database=manifest.database,
                job=manifest.job, run_id=run_id if run_id is not None else row.run_id,
                started_at=manifest.started_at, finished_at=manifest.finished_at, size=manifest.size,
                raw_size=manifest.raw_size, compression_ratio=manifest.compression_ratio, storages=holders,
                encryption=str(manifest.encryption.get("method", "none")),
                manifest={**without_file_lists(manifest.to_dict()), MANIFEST_SHA256: manifest.sha256 or recorded,
                          **({MANIFEST_SIZE: size} if size is not None else {}),
                          **({COPIES_PROVEN: proven} if proven else {})})

    def warm(self) -> None:
        """Look one row up, so that what SQLAlchemy does at its first query in a process (compiling the
        statements, opening the connection) is done before :meth:`record` (see
        :meth:`upkeeper.backup.sets.BackupEnv.warm_catalog`).  Any error is left for the real queries to meet."""
        with contextlib.suppress(Exception), self.history.transaction() as conn:
            self._locked(conn, "")

    def known_ids(self, ids: Iterable[str]) -> set[str]:
        """Those of ``ids`` the catalog has a row of."""
        want = list(ids)
        with self.history.transaction() as conn:
            return {r[0] for r in conn.execute(select(_backups.c.id).where(_backups.c.id.in_(want)))} if want else set()

    def nodes_seen(self) -> set[str]:
        """Every node that recorded a run or ran a daemon in this history: the nodes sharing it."""
        with self.history.transaction() as conn:
            got = {r[0] for r in conn.execute(select(tables.runs.c.node).distinct())}
            got |= {r[0] for r in conn.execute(select(tables.daemons.c.node).distinct())}
        return {n for n in got if n}

    def get(self, backup_id: str) -> CatalogRow | None:
        with self.history.transaction() as conn:
            got = conn.execute(select(_backups).where(_backups.c.id == backup_id)).first()
        return None if got is None else CatalogRow(**got._mapping)

    def _rows(self, q: Any) -> list[CatalogRow]:
        with self.history.transaction() as conn:
            return [CatalogRow(**r._mapping) for r in conn.execute(q)]

    def find(self, prefix: str) -> list[CatalogRow]:
        """Rows whose id starts with ``prefix`` (ids are long; a unique prefix is enough)."""
        return self._rows(select(_backups).where(_backups.c.id.startswith(prefix, autoescape=True)))

    def list(self, *, target: str | None = None, database: str | None = None, kind: str | None = None,
             statuses: Iterable[str] | None = None, limit: int | None = None) -> list[CatalogRow]:
        b = _backups.c
        q = select(_backups)
        if target:
            q = q.where(b.target == target)
        if database:
            q = q.where(b.database == database)
        if kind:
            q = q.where(b.kind == kind)
        if statuses:
            q = q.where(b.status.in_(list(statuses)))
        q = q.order_by(b.started_at.desc(), b.id.desc())
        if limit:
            q = q.limit(limit)
        return self._rows(q)

    def mark_verified(self, backup_id: str, ok: bool, summary: str, restore_seconds: float | None) -> None:
        with self.history.transaction() as conn:
            row = self._locked(conn, backup_id)  # see record()
            if row is None:
                return
            values: dict[str, Any] = {"status": VERIFIED if ok else VERIFY_FAILED, "verified_at": datetime.now(UTC),
                                      "verify_summary": summary[:2000]}
            if restore_seconds is not None:
                values["restore_seconds"] = restore_seconds
            self._update(conn, backup_id, **values)

    def mark_copies_proven(self, backup_id: str, storages: Iterable[str], when: datetime) -> None:
        """The copies of the set on ``storages`` were proven in full at ``when`` (a verification passed)."""
        with self.history.transaction() as conn:
            row = self._locked(conn, backup_id)  # see record()
            if row is None:
                return
            proven = {k: v.isoformat() for k, v in row.copies_proven.items()}
            proven.update({name: when.isoformat() for name in storages})
            self._update(conn, backup_id, manifest={**(row.manifest or {}), COPIES_PROVEN: proven})

    def last_proven(self, target: str, database: str, kind: str | None = None) -> dict[str, datetime]:
        """When each storage's copy of any backup of the series was last proven in full."""
        out: dict[str, datetime] = {}
        for row in self.list(target=target, database=database, kind=kind):
            for name, when in row.copies_proven.items():
                if name not in out or when > out[name]:
                    out[name] = when
        return out

    def remove(self, backup_id: str) -> None:
        with self.history.transaction() as conn:
            conn.execute(delete(_backups).where(_backups.c.id == backup_id))

    def add_storage(self, backup_id: str, storage: str) -> None:
        """A storage holds this set now too (``backups copy``)."""
        with self.history.transaction() as conn:
            row = self._locked(conn, backup_id)  # see record()
            if row is not None:
                self._update(conn, backup_id, storages=sorted(set(row.storages or []) | {storage}))

    def set_storages(self, backup_id: str, storages: Sequence[str]) -> None:
        """The storages holding this set are ``storages`` (``backups sync``, which has just looked)."""
        with self.history.transaction() as conn:
            self._update(conn, backup_id, storages=sorted(storages))

    def remove_storage(self, backup_id: str, storage: str) -> None:
        """A storage lost this set; the row goes when no storage holds it any more."""
        with self.history.transaction() as conn:
            row = self._locked(conn, backup_id)  # see record()
            if row is None:
                return
            left = [x for x in (row.storages or []) if x != storage]
            if left:
                self._update(conn, backup_id, storages=left)
            else:
                conn.execute(delete(_backups).where(_backups.c.id == backup_id))

    def ids(self) -> set[str]:
        with self.history.transaction() as conn:
            return set(conn.execute(select(_backups.c.id)).scalars())


def catalog_for(ctx_state: Any) -> Catalog | None:
    """The catalog of the history a task runs against (None when the run has no history)."""
    history = getattr(ctx_state, "history", None)
    return Catalog(history) if isinstance(history, History) else None
