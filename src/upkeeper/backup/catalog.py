"""The backup catalog in the history database: one row per complete backup set.

Storage is the source of truth: a row is added only after the set's manifest
was written, and ``upkeeper backups sync`` rebuilds the table from manifests alone.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Float, Index, Integer, String, Text, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from upkeeper.backup.manifest import Manifest
from upkeeper.core.history import History, dialect_insert
from upkeeper.core.models import Base, JSONType, UTCDateTime

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


class BackupRow(Base):
    __tablename__ = "backups"
    __table_args__ = (
        Index("ix_backups_series", "target", "database", "kind", "started_at"),
        Index("ix_backups_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    target: Mapped[str] = mapped_column(String(100), nullable=False)
    database: Mapped[str] = mapped_column(String(255), nullable=False)
    job: Mapped[str | None] = mapped_column(String(100))
    run_id: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    raw_size: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    compression_ratio: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    storages: Mapped[list[str]] = mapped_column(JSONType, default=list)
    encryption: Mapped[str] = mapped_column(String(32), default="none")
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    restore_seconds: Mapped[float | None] = mapped_column(Float)
    verify_summary: Mapped[str] = mapped_column(Text, default="")
    manifest: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)

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
    """Reads and writes the ``backups`` table through a History store."""

    def __init__(self, history: History) -> None:
        self.history = history

    def record(self, manifest: Manifest, storages: Sequence[str], run_id: int | None = None,
               status: str = COMPLETE) -> None:
        """Insert or refresh a set's row (keeping verification results already recorded).

        The row keeps the SHA-256 of manifest.json recorded first (when the backup was written, or when
        ``backups sync`` first found the set).  A manifest found later with other bytes does not replace it —
        re-reading storage must not make an edited manifest pass verification: the row is left as it was
        (but for its storages), and ``backups verify`` fails naming manifest.json.
        """
        with self.history.session() as s:
            # the row locked as read (the backup run and 'backups sync' may record the same set at once, or
            # verify, copy and prune change it meanwhile: read committed would lose one of the writes); when there
            # is none, it is created first, unless another process has just done so
            row = s.get(BackupRow, manifest.id, with_for_update=True)
            if row is None:
                s.execute(dialect_insert(self.history.dialect)(BackupRow.__table__).values(
                    id=manifest.id, status=status, run_id=run_id, kind=manifest.kind, target=manifest.target,
                    database=manifest.database, started_at=manifest.started_at, finished_at=manifest.finished_at,
                ).on_conflict_do_nothing(index_elements=["id"]))
                row = s.get(BackupRow, manifest.id, with_for_update=True)
                assert row is not None
            recorded = row.manifest_sha256
            if recorded and manifest.sha256 and manifest.sha256 != recorded:
                log.warning("backup %s: manifest.json on storage (SHA-256 %s…) is not the one recorded when the "
                            "backup was written (%s…); the catalog keeps the recorded one, and "
                            "'upkeeper backups verify %s' fails until the original is back",
                            manifest.id, manifest.sha256[:16], recorded[:16], manifest.id)
                row.storages = sorted(set(storages) | set(row.storages or []))
                return
            row.kind = manifest.kind
            row.target = manifest.target
            row.database = manifest.database
            row.job = manifest.job
            if run_id is not None:
                row.run_id = run_id
            row.started_at = manifest.started_at
            row.finished_at = manifest.finished_at
            row.size = manifest.size
            row.raw_size = manifest.raw_size
            row.compression_ratio = manifest.compression_ratio
            row.storages = sorted(set(storages) | set(row.storages or []))
            row.encryption = str(manifest.encryption.get("method", "none"))
            size = manifest.json_size if manifest.sha256 else row.manifest_size
            proven = (row.manifest or {}).get(COPIES_PROVEN)
            row.manifest = {**without_file_lists(manifest.to_dict()), MANIFEST_SHA256: manifest.sha256 or recorded,
                            **({MANIFEST_SIZE: size} if size is not None else {}),
                            **({COPIES_PROVEN: proven} if proven else {})}

    def warm(self) -> None:
        """Look one row up, so that what SQLAlchemy does at its first query in a process (configuring the
        mappers, compiling the statements: ~15 ms, and more on a busy host) is done before :meth:`record`
        (see :meth:`upkeeper.backup.sets.BackupEnv.warm_catalog`).  Any error is left for the real queries to meet."""
        with contextlib.suppress(Exception):
            self.get("")

    def get(self, backup_id: str) -> BackupRow | None:
        with self.history.session() as s:
            return s.get(BackupRow, backup_id)

    def find(self, prefix: str) -> list[BackupRow]:
        """Rows whose id starts with ``prefix`` (ids are long; a unique prefix is enough)."""
        with self.history.session() as s:
            return list(s.scalars(select(BackupRow).where(BackupRow.id.startswith(prefix, autoescape=True))))

    def list(self, *, target: str | None = None, database: str | None = None, kind: str | None = None,
             statuses: Iterable[str] | None = None, limit: int | None = None) -> list[BackupRow]:
        q = select(BackupRow)
        if target:
            q = q.where(BackupRow.target == target)
        if database:
            q = q.where(BackupRow.database == database)
        if kind:
            q = q.where(BackupRow.kind == kind)
        if statuses:
            q = q.where(BackupRow.status.in_(list(statuses)))
        q = q.order_by(BackupRow.started_at.desc(), BackupRow.id.desc())
        if limit:
            q = q.limit(limit)
        with self.history.session() as s:
            return list(s.scalars(q))

    def mark_verified(self, backup_id: str, ok: bool, summary: str, restore_seconds: float | None) -> None:
        with self.history.session() as s:
            row = s.get(BackupRow, backup_id, with_for_update=True)  # see record()
            if row is None:
                return
            row.status = VERIFIED if ok else VERIFY_FAILED
            row.verified_at = datetime.now(UTC)
            row.verify_summary = summary[:2000]
            if restore_seconds is not None:
                row.restore_seconds = restore_seconds

    def mark_copies_proven(self, backup_id: str, storages: Iterable[str], when: datetime) -> None:
        """The copies of the set on ``storages`` were proven in full at ``when`` (a verification passed)."""
        with self.history.session() as s:
            row = s.get(BackupRow, backup_id, with_for_update=True)  # see record()
            if row is None:
                return
            proven = {k: v.isoformat() for k, v in row.copies_proven.items()}
            proven.update({name: when.isoformat() for name in storages})
            row.manifest = {**(row.manifest or {}), COPIES_PROVEN: proven}  # a new dict: the JSON column sees it

    def last_proven(self, target: str, database: str, kind: str | None = None) -> dict[str, datetime]:
        """When each storage's copy of any backup of the series was last proven in full."""
        out: dict[str, datetime] = {}
        for row in self.list(target=target, database=database, kind=kind):
            for name, when in row.copies_proven.items():
                if name not in out or when > out[name]:
                    out[name] = when
        return out

    def remove(self, backup_id: str) -> None:
        with self.history.session() as s:
            s.execute(delete(BackupRow).where(BackupRow.id == backup_id))

    def add_storage(self, backup_id: str, storage: str) -> None:
        """A storage holds this set now too (``backups copy``)."""
        with self.history.session() as s:
            row = s.get(BackupRow, backup_id, with_for_update=True)  # see record()
            if row is not None:
                row.storages = sorted(set(row.storages or []) | {storage})

    def remove_storage(self, backup_id: str, storage: str) -> None:
        """A storage lost this set; the row goes when no storage holds it any more."""
        with self.history.session() as s:
            row = s.get(BackupRow, backup_id, with_for_update=True)  # see record()
            if row is None:
                return
            left = [x for x in (row.storages or []) if x != storage]
            if left:
                row.storages = left
            else:
                s.delete(row)

    def ids(self) -> set[str]:
        with self.history.session() as s:
            return set(s.scalars(select(BackupRow.id)))


def catalog_for(ctx_state: Any) -> Catalog | None:
    """The catalog of the history a task runs against (None when the run has no history)."""
    history = getattr(ctx_state, "history", None)
    return Catalog(history) if isinstance(history, History) else None
