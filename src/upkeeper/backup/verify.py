"""Verification of one backup set: every object's size and SHA-256, decryption, decompression, and a real
restore (PostgreSQL into a scratch database, files read from their archives, Redis loaded by a throw-away
redis-server after redis-check-rdb).

Stops at the first error; the scratch database is dropped even on failure.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import tarfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from upkeeper import lazy
from upkeeper.backup import pg, rdb_load, room
from upkeeper.backup.catalog import Catalog
from upkeeper.backup.crypto import encryption_from
from upkeeper.backup.files import hard_links, member_xattrs, xattrs_problem
from upkeeper.backup.lease import take_reader
from upkeeper.backup.manifest import MANIFEST, Manifest, read_manifest, set_prefix
from upkeeper.backup.pipeline import ChecksumMismatch, ObjectRecord, check_stored, fault_pause
from upkeeper.backup.rdb import check_rdb
from upkeeper.backup.restore import (
    DatabaseEntries,
    Fetcher,
    Located,
    PgArchive,
    SetUnreadable,
    check_restore_version,
    compare_row_counts,
    compare_sequences,
    count_large_objects,
    create_settings,
    database_entries,
    fetch_pg_archive,
    listed_files,
    locate,
    member_name,
    older_server,
    pg_restore,
    pg_restore_list,
    scratch_name,
    stream_restore,
    work_dir,
)
from upkeeper.backup.source import MANIFEST_KEY as SOURCE_KEY
from upkeeper.backup.source import SourceState
from upkeeper.backup.sqlite import as_read_note, recorded_as_read
from upkeeper.config.backup import BackupSettings
from upkeeper.config.targets import PostgresTarget
from upkeeper.errors import (
    BackupError,
    ProcessError,
    SetupError,
    StorageError,
    TaskError,
    ToolKilled,
    UpkeeperError,
)
from upkeeper.fmt import human_bytes
from upkeeper.shield import shielded
from upkeeper.storage import Storage

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql
else:
    psycopg = lazy.module("psycopg")
    sql = lazy.module("psycopg.sql")

log = logging.getLogger(__name__)

AMCHECK_SQL = """
SELECT c.relname, bt_index_check(c.oid)
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE a.amname = 'btree' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND c.relpersistence <> 't'
"""


# A verify's scratch database is guarded, for as long as it exists, by a session of the verifying process on the
# scratch server: application_name 'upkeeper-verify:<scratch name>', holding an advisory lock on the name.  The
# session is idle, so the server ends it the moment that process dies (kill -9, OOM, a crash): a scratch database
# without its guard is a leftover, and the next verify on that server drops it.
SCRATCH_RE = re.compile(r"^upkeeper_verify_\d{8}t\d{6}z_[0-9a-f]{6}$")  # scratch_name() of a backup id
GUARD_APP = "upkeeper-verify:"
GUARD_LOCK_CLASS = 0x75706B76  # 'upkv': first key of the guard's advisory lock (the second: CRC-32 of the name)
GUARD_SESSION_SQL = "SET idle_session_timeout = 0"  # the guard sits idle for the whole restore
UNGUARDED_SCRATCH_SQL = """
SELECT d.datname FROM pg_database d
WHERE d.datname LIKE 'upkeeper\\_verify\\_%%'
  AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.application_name = %s || d.datname)
ORDER BY d.datname
"""
GUARDED_SQL = "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = %s)"
# Another verify's guard of the same name that holds its advisory lock (in its own database: advisory locks are
# per database, so a guard connected to another one is not kept out by ours).  A guard session that no longer holds
# it is leaving (a finished verify closes it: the lock goes before the session leaves pg_stat_activity) or is queued
# behind us; one that has connected but not yet locked finds us when it has (so at least one of two gives way).
# pg_locks shows an advisory lock's two int4 keys as the oids classid and objid (objsubid 2).
OTHER_GUARDS_SQL = """
SELECT EXISTS (
  SELECT 1 FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
  WHERE a.application_name = %s AND a.pid <> pg_backend_pid()
    AND l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
    AND l.classid::bigint = %s AND l.objid::bigint = %s)
"""
LOCK_SQL = "SELECT pg_advisory_lock(%s, %s)"
TRY_LOCK_SQL = "SELECT pg_try_advisory_lock(%s, %s)"
UNLOCK_SQL = "SELECT pg_advisory_unlock(%s, %s)"
IN_RECOVERY_SQL = "SELECT pg_is_in_recovery()"
SCRATCH_COMMENT = ("upkeeper: scratch restore of backup {id} by backup.verify; dropped when that verify ends, "
                   "or by the next verify on this server if it was killed")


@dataclass
class VerifyOptions:
    restore: bool = True
    scratch: PostgresTarget | None = None
    jobs: int | None = None
    checks: Sequence[str] = ()
    amcheck: bool = False
    #: Redis command lines run on a test-restored Redis backup; each must reply true
    redis_checks: Sequence[str] = ()
    #: bytes a test restore always leaves free on the disks it writes to (see :mod:`upkeeper.backup.room`)
    min_free_space: int = room.DEFAULT_MIN_FREE_SPACE
    #: the database's size at backup time × this is the space its restore needs
    space_margin: float = room.DEFAULT_SPACE_MARGIN
    #: bytes of MemAvailable a scratch redis-server leaves to the host's other processes
    min_free_memory: int = room.DEFAULT_MIN_FREE_MEMORY
    #: the copies on the other storages: "rotate" (restore the least recently proven copy; hash the others
    #: on local storages, list the others on remote ones) or "all" (read every copy in full)
    copies: str = "all"


@dataclass
class VerifyReport:
    backup_id: str
    ok: bool = False
    steps: list[str] = field(default_factory=list)
    error: str | None = None
    failed_object: str | None = None
    restore_seconds: float | None = None
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    #: the verification could not run (scratch server, tool, key, storage unreachable): no verdict
    inconclusive: bool = False

    @property
    def summary(self) -> str:
        if self.ok:
            return f"verified {self.backup_id}: " + "; ".join(self.steps)
        if self.inconclusive:
            return f"verify of {self.backup_id} could not run: {self.error}"
        return f"verify of {self.backup_id} FAILED: {self.error}"

    def to_dict(self) -> dict[str, Any]:
        return {"backup_id": self.backup_id, "ok": self.ok, "steps": self.steps, "error": self.error,
                "failed_object": self.failed_object, "restore_seconds": self.restore_seconds,
                "seconds": round(self.seconds, 3), "inconclusive": self.inconclusive, **self.details}


def is_inconclusive(exc: BaseException) -> bool:
    """Does ``exc`` say nothing about the backup itself?

    This host's setup (:class:`SetupError`: a missing key, passphrase or tool), a server that cannot be
    reached (a :class:`TaskError` other than a failed subprocess: connecting to the scratch server) or a
    storage that failed transiently.  Everything else — a checksum, decryption, pg_restore, row count,
    a missing object — is a verdict: the backup is marked verify-failed.
    """
    if isinstance(exc, SetupError | ToolKilled):  # (a tool killed by the OOM killer says nothing of the backup)
        return True
    if isinstance(exc, SetUnreadable):
        return exc.transient
    if isinstance(exc, StorageError):
        return not exc.permanent
    return isinstance(exc, TaskError) and not isinstance(exc, ProcessError)


def verify_set(located: Located, settings: BackupSettings, source: Any, opts: VerifyOptions,
               progress: Callable[[str], None] = lambda m: None, catalog: Catalog | None = None,
               others: Sequence[Storage] = ()) -> VerifyReport:
    """Verify one set, then its copies on the ``others`` storages (:func:`_check_copies`); the result is
    recorded in the catalog when one is given, with the copies proven in full (that restored, those hashed)."""
    m = located.manifest
    report = VerifyReport(m.id, steps=[f"read from storage {located.storage.name}"],
                          details={"storage": located.storage.name})
    t0 = time.monotonic()
    try:
        if catalog is not None:
            _check_manifest(located, catalog, report)
        _note_source(m, report)
        fetcher = Fetcher(located, settings)
        if m.kind == "postgres":
            _verify_postgres(fetcher, settings, source, opts, report, progress)
        elif m.kind == "files":
            _verify_files(fetcher, settings, report, progress)
        elif m.kind == "redis":
            _verify_redis(fetcher, settings, opts, report, progress)
        else:
            raise BackupError(f"unknown backup kind {m.kind!r}")
        _check_copies(located, others, report, progress, read_all=opts.copies == "all")
        report.ok = True
    except UpkeeperError as exc:
        report.error = exc.message + (f" ({exc.hint.removeprefix('Try: ')})" if exc.hint else "")
        report.failed_object = getattr(exc, "object_name", None)
        report.inconclusive = is_inconclusive(exc)
    except Exception as exc:  # an unexpected failure is a failed verification, never a pass
        report.error = f"{type(exc).__name__}: {exc}"
    report.seconds = time.monotonic() - t0
    if not report.ok and not report.inconclusive:
        gone = _deleted_meanwhile(located, settings, catalog)
        if gone is not None:  # no verdict on a backup deleted under the verify, never a false verify-failed
            report.error = gone
            report.failed_object = None
            report.inconclusive = True
            report.details["deleted_meanwhile"] = True
    _record(report, catalog)
    if report.ok and catalog is not None:
        try:
            catalog.mark_copies_proven(m.id, [located.storage.name, *report.details.get("copies_checked", [])],
                                       datetime.now(UTC))
        except Exception as exc:
            log.warning("could not record the copies verified of %s: %s", m.id, exc)
    return report


def _deleted_meanwhile(located: Located, settings: BackupSettings, catalog: Catalog | None) -> str | None:
    """Why a verification that failed judged nothing: the set was deleted by upkeeper while it was read — its
    manifest gone from the storage, and either its re-encryption there ('backups rekey') or the catalog no longer
    naming that storage for it (a prune).  None otherwise: a set that lost objects (or its manifest) by other
    hands is a failed verification.  Readers hold a marker that rekey and prune respect; this covers a deletion
    that did not see it (a storage the marker could not be written to, an older upkeeper elsewhere)."""
    from upkeeper.backup.rekey import rekeyed_id

    m, storage = located.manifest, located.storage
    try:
        if storage.stat(m.prefix + MANIFEST) is not None:
            return None
    except UpkeeperError:
        return None
    try:
        enc = encryption_from(settings)
        if enc is not None:
            new_id = rekeyed_id(m.id, enc)
            if storage.stat(set_prefix(m.target, m.database, new_id) + MANIFEST) is not None:
                return (f"backup {m.id} was re-encrypted as {new_id} ('backups rekey') and deleted from {storage.name} "
                        f"while it was verified: nothing judged; verify {new_id}")
    except UpkeeperError:
        pass
    if catalog is not None:
        try:
            row = catalog.get(m.id)
        except Exception:
            return None
        if row is None or storage.name not in (row.storages or []):
            return (f"backup {m.id} was deleted from {storage.name} (by prune or rekey) while it was verified: "
                    "nothing judged")
    return None


def _record(report: VerifyReport, catalog: Catalog | None) -> None:
    if catalog is None or report.inconclusive:  # a backup is judged only when it could be checked
        return
    try:
        catalog.mark_verified(report.backup_id, report.ok, report.summary, report.restore_seconds)
    except Exception as exc:
        log.warning("could not record the verification of %s: %s", report.backup_id, exc)


def verify_stored(storages: Sequence[Storage], target: str, database: str, backup_id: str, prefer: str | None,
                  settings: BackupSettings, source: Any, opts: VerifyOptions,
                  progress: Callable[[str], None] = lambda m: None, catalog: Catalog | None = None,
                  lease_on: Mapping[str, Storage] | None = None, command: str = "backups verify") -> VerifyReport:
    """Find the set on the storages and verify it.  A manifest that is there but cannot be read fails the
    verification (naming manifest.json); storages that could not be reached leave it inconclusive.  A reader's
    marker (:func:`upkeeper.backup.lease.take_reader`, refreshed from ``lease_on``) stands beside the set
    meanwhile, so that neither rekey nor prune deletes it under the verification."""
    if prefer is None and opts.copies == "rotate":
        storages = rotation(storages, catalog, target, database, backup_id)
    reading = take_reader([s for s in storages if prefer is None or s.name == prefer], target, database, backup_id,
                          command, lease_on)
    try:
        try:
            located = locate(storages, target, database, backup_id, prefer)
        except SetUnreadable as exc:
            report = VerifyReport(backup_id, error=exc.message, failed_object=MANIFEST,
                                  inconclusive=is_inconclusive(exc))
            _record(report, catalog)
            return report
        fault_pause("verify-located")  # (the tests: a rekey or prune of the set while it is verified)
        # without a storage asked for, every copy is checked: one corrupt copy is a corrupt stored object
        others = [s for s in storages if s.name != located.storage.name] if prefer is None else []
        return verify_set(located, settings, source, opts, progress=progress, catalog=catalog, others=others)
    finally:
        if reading is not None:
            reading.release()


def rotation(storages: Sequence[Storage], catalog: Catalog | None, target: str, database: str, backup_id: str
             ) -> list[Storage]:
    """The order in which to look for the copy to restore: the storage whose copies of the series were proven
    in full least recently (never: first), then local storages (no transfer), then the order of ``storages``.
    Each verification restores (reads in full) one copy and hashes the other local ones, so with remote
    storages each remote storage's copy is read in full every few verifications, in turn, instead of every
    remote copy every time."""
    last: dict[str, datetime] = {}
    if catalog is not None:
        try:
            row = catalog.get(backup_id)
            last = catalog.last_proven(target, database, row.kind if row is not None else None)
        except Exception as exc:  # the order is an optimisation: never a reason not to verify
            log.warning("could not read when the copies of %s/%s were last verified: %s", target, database, exc)
    never = datetime.min.replace(tzinfo=UTC)
    ranked = sorted(enumerate(storages), key=lambda p: (last.get(p[1].name, never), p[1].kind != "local", p[0]))
    return [s for _i, s in ranked]


class CopyMissing(BackupError):
    def __init__(self, name: str, storage: str, detail: str) -> None:
        super().__init__(f"object {name} is missing on storage {storage}: {detail}",
                         "Try: 'upkeeper backups sync' (the catalog then no longer names that storage for the "
                         "backup); take a new backup")
        self.object_name = name


def _check_copies(located: Located, others: Sequence[Storage], report: VerifyReport,
                  progress: Callable[[str], None], *, read_all: bool = True) -> None:
    """The set's copies on the ``others`` storages, once the copy on ``located.storage`` was verified: the same
    manifest.json, byte for byte, and every object with the size and SHA-256 it lists (the bytes are those that
    decrypted and restored, so they are not decrypted again) — on a remote storage without ``read_all``, every
    object listed with the size it lists, not read (``copies_listed``: present, not proven; S3's ETag is no
    SHA-256, and no MD5 is recorded to compare it with).  A storage without the set holds no copy (a job
    may write to some storages only); one that cannot be reached is reported as not checked (``steps``,
    ``copies_not_checked``) and leaves the verdict to the copies checked."""
    m = located.manifest
    checked: list[str] = []
    listed: list[str] = []
    unchecked: list[str] = []
    # in the report from the start: a copy found corrupt or missing fails the verification, and the report (--json)
    # still says which copies were checked before it and how
    report.details.update(copies_checked=checked, copies_listed=listed, copies_not_checked=unchecked)
    for s in others:
        try:
            if s.stat(m.prefix + MANIFEST) is None:
                continue
            copy = read_manifest(s, m.prefix, file_lists=False)
            if copy.sha256 != m.sha256:
                raise ManifestChanged(m.id, s.name, copy.sha256, m.sha256 or "?")
            if not read_all and s.kind != "local":
                progress(f"listing the copy on {s.name}")
                sizes = {o.key: o.size for o in s.list(m.prefix)}
                for rec in m.objects:
                    there = sizes.get(m.prefix + rec.name)
                    if there is None:
                        raise CopyMissing(rec.name, s.name, "not listed")
                    if there != rec.size:
                        raise ChecksumMismatch(rec.name, f"size {there} bytes, manifest says {rec.size}", s.name)
                listed.append(s.name)
                continue
            for rec in m.objects:
                progress(f"checking {rec.name} on {s.name}")
                try:
                    check_stored(s, m.prefix + rec.name, rec)
                except StorageError as exc:
                    if exc.permanent:
                        raise CopyMissing(rec.name, s.name, exc.message) from None
                    raise
        except StorageError as exc:
            if exc.permanent:
                raise
            unchecked.append(f"{s.name}: {exc.message}")
            continue
        checked.append(s.name)
    if checked:
        report.steps.append(f"the copies on {', '.join(checked)}: {MANIFEST} and {len(m.objects)} object(s) match "
                            "their SHA-256")
    if listed:
        report.steps.append(f"the copies on {', '.join(listed)}: {MANIFEST} matches, {len(m.objects)} object(s) "
                            "there with their size (not read: read in full in turn, or with copies: all)")
    report.steps += [f"copy NOT CHECKED: {u}" for u in unchecked]


class ManifestChanged(BackupError):
    def __init__(self, backup_id: str, storage: str, found: str | None, recorded: str) -> None:
        super().__init__(f"manifest.json of backup {backup_id} on storage {storage} changed since the backup was "
                         f"written: SHA-256 {(found or '?')[:16]}…, the catalog recorded {recorded[:16]}…",
                         "Try: verify the copy on another storage ('upkeeper backups verify ID --storage NAME'); "
                         "restore from an older backup")
        self.object_name = MANIFEST


def _check_manifest(located: Located, catalog: Catalog, report: VerifyReport) -> None:
    """The manifest read from storage is the one recorded when the backup was written."""
    m = located.manifest
    row = catalog.get(m.id)
    recorded = row.manifest_sha256 if row is not None else None
    if recorded is None:
        report.steps.append(f"{MANIFEST}: no SHA-256 recorded in the catalog to compare")
        return
    if m.sha256 != recorded:
        raise ManifestChanged(m.id, located.storage.name, m.sha256, recorded)
    report.steps.append(f"{MANIFEST} matches the SHA-256 recorded when the backup was written")


def _note_source(m: Manifest, report: VerifyReport) -> None:
    """A backup taken from a replica: a step naming it, its primary, link and lag (details: ``source``), so that
    a report on a backup of stale data says so, or that its role or link could not be read; nothing for one
    from a primary or without the record."""
    source = SourceState.from_dict(m.details.get(SOURCE_KEY))
    if source is None:
        return
    report.details["source"] = source.to_dict()
    if source.role != "primary":
        stale = " (its data as of the lost link: STALE)" if source.link == "down" else ""
        report.steps.append(f"taken from {source.describe()}{stale}")


def _check_objects(fetcher: Fetcher, report: VerifyReport, progress: Callable[[str], None], skip_roles: set[str]
                   ) -> None:
    for rec in fetcher.located.manifest.objects:
        if rec.role in skip_roles:
            continue
        progress(f"checking {rec.name}")
        fetcher.check_only(rec)


def _verify_postgres(fetcher: Fetcher, settings: BackupSettings, source: Any, opts: VerifyOptions,
                     report: VerifyReport, progress: Callable[[str], None]) -> None:
    m = fetcher.located.manifest
    if not isinstance(source, PostgresTarget):
        raise BackupError("verifying a PostgreSQL backup needs a postgres target to restore into")
    scratch = opts.scratch or source
    check_restore_version(scratch, m)
    name = scratch_name(m.id)
    admin = pg.admin_db(scratch, name)
    expected = dict(m.details.get("row_counts") or {})
    # a database without tables (a fresh 'postgres') dumps to an archive with an empty table of contents
    empty_ok = m.details.get("tables") == 0 and not expected
    db_objects = [o for o in m.objects if o.role == "database"]
    streaming = opts.restore and len(db_objects) == 1 and _stream_restore_wanted(expected, opts.jobs)
    dump_bytes = sum(o.raw_size for o in m.objects if o.role in ("database", "database-dir"))
    with work_dir(settings, "upkeeper-verify-") as tmp:
        archive: PgArchive | None = None
        if not streaming:
            _check_work_room(tmp, dump_bytes, "the dump fetched for a parallel restore", opts, report)
            progress("fetching objects (SHA-256, age, zstd)")
            archive = fetch_pg_archive(fetcher, tmp)
            report.steps.append(f"{len(m.objects)} object(s) match their SHA-256, decrypt and decompress")
            n = pg_restore_list(scratch, archive, empty_ok=empty_ok)
            report.steps.append(f"pg_restore --list: {n} entries")
            if not opts.restore:
                return
        else:
            for rec in m.objects:
                if rec.role != "database":
                    progress(f"checking {rec.name}")
                    fetcher.check_only(rec)
        # after the objects' own checks, which need no server: a corrupt object fails the backup even while
        # the scratch server is down or unfit
        maintenance_mem, limits = _check_scratch_server(scratch, admin, m, default=opts.scratch is None)
        jobs = _restore_jobs(limits, 1 if streaming else opts.jobs or 2, m.id, report)
        watched = _check_scratch_room(scratch, admin, m, dump_bytes, opts, report)
        options = pg.scratch_restore_options(maintenance_mem, jobs,
                                             room.available_memory() if room.is_local(scratch.host) else None)
        report.details["restore_options"] = options
        with _scratch_guard(scratch, admin, name) as guard:
            _drop_stale_scratch(guard, name, report)
            try:
                watch = room.SpaceWatch(watched, opts.min_free_space, lambda: _drop_scratch(scratch, admin, name))
                try:
                    with watch:
                        # with the dump's encoding, collation, ctype and locale provider: text compares, sorts
                        # (smoke checks, amcheck) and converts as it does in the backed-up database
                        entries: list[DatabaseEntries] = []

                        def create(found: DatabaseEntries) -> None:
                            entries.append(found)
                            _create_scratch(guard, scratch, name, m.id, found.create)

                        if archive is not None:
                            create(database_entries(scratch, archive, name, no_owner=False))
                        progress(f"restoring into {name}")
                        _restore(fetcher, db_objects[0] if streaming else None, archive, scratch, name, jobs,
                                 report, create, empty_ok=empty_ok, options=options)
                        watch.check()  # a restore that ended below the reserve is stopped too
                        # the sessions that count rows and run the checks see what the backed-up database's did
                        _apply_session_settings(scratch, name, entries[0] if entries else None, report)
                except Exception:
                    if not watch.check():  # the restore failed with room left: its own error is the verdict
                        raise
                if watch.tripped is not None:
                    raise room.NoRoom(f"test restore stopped and {name} dropped: {watch.tripped}",
                                      "Try: set the verify job's scratch_target to a server with room for the "
                                      "restore, or lower min_free_space") from None
                _check_restored(scratch, name, expected, opts, report,
                                quoted_keys=m.details.get("row_count_keys") == pg.QUOTED_KEYS)
                _check_sequences_and_large_objects(scratch, name, m.details, report)
                _check_extras(scratch, name, opts, report)
            finally:
                _drop_scratch(scratch, admin, name, guard)


@shielded()  # a stop arriving meanwhile waits for the drop (the scratch database is a full copy of the data)
def _drop_scratch(scratch: PostgresTarget, admin: str, name: str,
                  guard: psycopg.Connection[Any] | None = None) -> None:
    """Drop the scratch database (its sessions ended: a restore still running fails); errors are logged, never
    in place of the verify's own result.  From the ``guard`` session when given, which needs no further
    connection (a CONNECTION LIMIT may allow none), else — or when that session failed — from a new one."""
    fault_pause("before-scratch-drop")  # (the tests: a stop signalled again while the cleanup runs)
    if guard is not None and not guard.closed:
        try:
            pg.drop_database(guard, name)
            return
        except psycopg.Error as exc:
            log.warning("could not drop the scratch database %s from its guard session (%s): trying a new one",
                        name, pg.pg_error(exc))
    try:
        with pg.admin_connect(scratch, admin) as conn:
            pg.drop_database(conn, name)
    except UpkeeperError as exc:
        log.error("could not drop the scratch database %s: %s", name, exc.message)
    except psycopg.Error as exc:
        log.error("could not drop the scratch database %s: %s", name, pg.pg_error(exc))


def _restore(fetcher: Fetcher, rec: ObjectRecord | None, archive: PgArchive | None, scratch: PostgresTarget, name: str,
             jobs: int, report: VerifyReport, create: Callable[[DatabaseEntries], None], *,
             empty_ok: bool, options: str) -> None:
    """Streamed from storage (``archive`` None; ``create`` makes the scratch database once the stream has
    given its CREATE DATABASE) or from the fetched archive with several jobs (the database already made);
    the restore's sessions with the libpq ``options`` of a scratch restore (:func:`pg.scratch_restore_options`)."""
    m = fetcher.located.manifest
    if archive is None:
        assert rec is not None
        seconds, n = stream_restore(fetcher, rec, scratch, name, create, empty_ok=empty_ok, options=options)
        report.steps.append(f"{len(m.objects)} object(s) match their SHA-256, decrypt and decompress")
        report.steps.append(f"pg_restore --list: {n} entries")
        report.restore_seconds = round(seconds, 3)
        report.steps.append(f"streamed into {name} in {report.restore_seconds:.1f}s (one pass: "
                            "storage, SHA-256, age, zstd, pg_restore)")
    else:
        report.restore_seconds = round(pg_restore(scratch, archive, name, jobs=jobs, options=options), 3)
        report.steps.append(f"restored into {name} with {jobs} jobs in {report.restore_seconds:.1f}s")


def _apply_session_settings(scratch: PostgresTarget, name: str, entries: DatabaseEntries | None,
                            report: VerifyReport) -> None:
    """The backed-up database's own settings (``ALTER DATABASE … SET``: a search_path, a time zone) and the
    scratch role's in it (``ALTER ROLE … IN DATABASE … SET``) given to the scratch database, which the sessions
    that count rows and run the smoke checks then get, as that role's sessions in the backed-up database did (a
    check naming tables of a schema in the database's search_path failed "relation … does not exist").  Its
    owner, comment, privileges, connection limit and template flag are not (they are the scratch database's);
    nor are other roles' settings (the checks run as the scratch role).  A setting this server or role does not
    allow is left out, named in the steps (a check that depends on it fails on its own)."""
    if entries is None or not entries.statements:
        return
    with pg.connect(scratch, name, options=pg.OWN_SESSION_OPTIONS) as conn:
        row = conn.execute("SELECT current_user").fetchone()
        role = str(row[0]) if row else ""
        mine, others = entries.session_settings(role)
        applied, skipped = 0, []
        for stmt in mine:
            try:
                conn.execute(stmt.text.encode())
                applied += 1
            except psycopg.Error as exc:  # named, never with its value (a custom setting may hold a secret)
                skipped.append(f"{entries.setting_name(stmt)}: {pg.pg_error(exc)}")
    if applied:
        report.steps.append(f"{applied} setting(s) of the backed-up database (ALTER DATABASE / ALTER ROLE {role} IN "
                            "DATABASE … SET) given to the scratch database")
    for what in skipped:
        log.warning("setting of the backed-up database not given to the scratch database %s: %s", name, what)
        report.steps.append(f"not given to the scratch database (this server or role does not allow it): {what}")
    if others:
        report.steps.append(f"settings in the database of role(s) {', '.join(others)} not applied: the checks run "
                            f"as {role}")


def _check_work_room(tmp: Path, needed: int, what: str, opts: VerifyOptions, report: VerifyReport) -> None:
    """``needed`` bytes of plaintext fit in the verify's work directory, with min_free_space left."""
    step = room.check_room(tmp, needed, opts.min_free_space, what,
                           "Try: point backup.work_dir (or TMPDIR) at a file system with room, or lower "
                           "min_free_space")
    if step:
        report.steps.append(step)


def _check_scratch_room(scratch: PostgresTarget, admin: str, m: Manifest, dump_bytes: int, opts: VerifyOptions,
                        report: VerifyReport) -> list[Path]:
    """Before the scratch database is created: the restore fits on the scratch server's disk, with
    min_free_space left (else :class:`room.NoRoom`).  Known only for a server on this host whose data directory
    this role may see; otherwise the steps say the space could not be checked.  Returns the paths to watch
    while the restore runs (none when unknown)."""
    needed, source = room.postgres_needed(m.details, dump_bytes, opts.space_margin)
    report.details["restore_space_needed"] = needed
    unknown = f"disk space on the scratch server not checked ({{}}): the restore needs ~{human_bytes(needed)}"
    if not room.is_local(scratch.host):
        report.steps.append(unknown.format(f"{scratch.display()} is not on this host"))
        return []
    try:
        with pg.admin_connect(scratch, admin) as conn:
            base, wal = room.scratch_paths(conn)
    except (UpkeeperError, psycopg.Error) as exc:
        log.warning("could not read the scratch server's data directory: %s", exc)
        base, wal = None, None
    if base is None or room.free_bytes(base) is None:
        report.steps.append(unknown.format("its data directory cannot be read here (the role needs "
                                           "pg_read_all_settings, and this user access to the directory)"))
        return []
    step = room.check_room(base, needed, opts.min_free_space, f"the restore ({source} × {opts.space_margin:g})",
                           "Try: set the verify job's scratch_target to a server with room for the restore "
                           "(e.g. a PostgreSQL kept for test restores), or lower min_free_space")
    report.steps.append(step)
    return [p for p in (base, wal) if p is not None and room.free_bytes(p) is not None]


def _check_scratch_server(scratch: PostgresTarget, admin: str, m: Manifest, *, default: bool
                          ) -> tuple[int, pg.ConnectionLimits]:
    """The scratch server can take the restore, else the verify does not run (a :class:`SetupError`): not a
    standby (read-only: a backup taken from a replica is verified on the replica by default), and not of an
    older major version than the backup's source, which may reject its dump (newer syntax, features it lacks;
    PostgreSQL does not support loading a dump into an older major version) — a failure that would say
    nothing about the backup.  Returns the maintenance_work_mem (bytes) the server gives this role's sessions,
    and the connection limits they count against (:func:`_restore_jobs`)."""
    with pg.admin_connect(scratch, admin) as conn:
        ver, num = pg.server_version(conn)
        row = conn.execute(IN_RECOVERY_SQL).fetchone()
        mem = conn.execute(pg.MAINTENANCE_MEM_SQL).fetchone()
        limits = pg.connection_limits(conn)
    which = "the backed-up server (the default scratch server)" if default else "the scratch server"
    if row and row[0]:
        raise SetupError(
            f"{which} {scratch.display()} is a standby (in recovery, read-only): it cannot hold the scratch "
            f"database the backup is restored into",
            "Try: set the verify job's scratch_target (backups verify --scratch-target) to a writable server, "
            "e.g. the primary or a PostgreSQL kept for test restores")
    source = older_server(m, num)
    if source is None:
        return int(mem[0]) if mem else 0, limits
    raise SetupError(
        f"backup {m.id} was taken from PostgreSQL {source[0]}; {which} {scratch.display()} runs PostgreSQL "
        f"{ver}, an older major version, which need not load its dump (PostgreSQL supports restoring only into "
        "the same or a newer major version)",
        f"Try: set the verify job's scratch_target (backups verify --scratch-target) to a postgres target "
        f"running PostgreSQL {source[1]} or newer")


def _restore_jobs(limits: pg.ConnectionLimits, jobs: int, backup_id: str, report: VerifyReport) -> int:
    """pg_restore's jobs within the scratch role's CONNECTION LIMIT (none for a superuser), read before anything
    is created: the test restore holds the session guarding the scratch database and pg_restore's
    (:func:`pg.restore_sessions`); the sessions after it (row counts, checks, the drop) one at a time beside
    the guard.  Fewer jobs when that fits (a step and a warning); a limit below 2 is the scratch server's
    setup (:class:`SetupError`: NOT CHECKED) — nothing created, nothing left behind.  The scratch database is
    new (no limit of its own); the sessions of others under the role are not counted (they come and go)."""
    role = None if limits.superuser else limits.role
    need = 1 + pg.restore_sessions(jobs)
    if role is None or need <= role.limit:
        return jobs
    fewer = pg.restore_jobs_within(role.limit, jobs, 1)
    if 1 + pg.restore_sessions(fewer) > role.limit:
        raise SetupError(
            f"{role.allows()}; the test restore of backup {backup_id} needs {need} connections at once: the "
            f"session guarding its scratch database and pg_restore's {pg.restore_sessions(jobs)}"
            + (f" (jobs {jobs}: one per job, and its leader's as they start)" if jobs > 1 else "")
            + ": nothing was restored, which says nothing about the backup",
            "Try: " + role.fix(need, f"{need} for jobs {jobs}, or 2 with the verify job's 'jobs: 1'", "verify"))
    note = (f"pg_restore ran with {fewer} job{'' if fewer == 1 else 's'} instead of {jobs}: {role.allows()}, "
            f"and jobs {jobs} need {need} at once (the guard session, one per job, pg_restore's leader)")
    log.warning("%s; %s would allow jobs %d", note, role.alter(need), jobs)
    report.steps.append(note)
    report.details["connection_limit"] = {"kind": role.kind, "name": role.name, "limit": role.limit,
                                          "jobs": fewer, "wanted_jobs": jobs, "fix": role.alter(need)}
    return fewer


# pg_dump writes the tablespace last.  Where the scratch database lies says nothing about the backup; in the
# scratch server's default tablespace, it is where the room check looks.
_TABLESPACE_CLAUSE = re.compile(r' TABLESPACE = (?:"(?:[^"]|"")*"|[^ ";]+)(?=;$)')


def _create_scratch(guard: psycopg.Connection[Any], scratch: PostgresTarget, name: str, backup_id: str,
                    statement: str | None) -> None:
    """(Re)create the empty scratch database: with ``statement``, the dump's CREATE DATABASE for ``name``
    (:func:`create_database_sql`) less its tablespace, else with the server's defaults.  A server or role that
    does not allow it (no CREATEDB, a full disk, too many databases, a locale of the dump the scratch server lacks)
    is this host's setup, not the backup's fault: a :class:`TaskError`."""
    if statement is not None:
        statement = _TABLESPACE_CLAUSE.sub("", statement)
    try:
        pg.drop_database(guard, name)
        if statement is None:
            pg.create_database(guard, name)
        else:
            guard.execute(statement.encode())
        guard.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(name), sql.Literal(SCRATCH_COMMENT.format(id=backup_id))))
    except psycopg.errors.ReadOnlySqlTransaction as exc:
        raise TaskError(f"cannot create the scratch database {name} on {scratch.display()}: {pg.pg_error(exc)}",
                        "Try: the role's sessions are read-only (default_transaction_read_only): set the verify "
                        "job's scratch_target to a target whose role may write") from None
    except psycopg.Error as exc:
        if statement is None or isinstance(exc, psycopg.errors.InsufficientPrivilege):
            raise TaskError(f"cannot create the scratch database {name} on {scratch.display()}: "
                            f"{pg.pg_error(exc)}",
                            "Try: let the target's role create databases (ALTER ROLE … CREATEDB), or set the "
                            "verify job's scratch_target to a server where it may") from None
        raise TaskError(f"cannot create the scratch database {name} on {scratch.display()} with the backup's "
                        f"settings ({create_settings(statement)}): {pg.pg_error(exc)}",
                        "Try: give the scratch server what the error names (a locale: locale-gen or an OS "
                        "package, then restart it; an ICU locale: a newer ICU), or set the verify job's "
                        "scratch_target (backups verify --scratch-target) to a server that has it") from None


def _check_restored(scratch: PostgresTarget, name: str, expected: dict[str, Any], opts: VerifyOptions,
                    report: VerifyReport, *, quoted_keys: bool) -> None:
    """Row counts against the manifest."""
    problems = compare_row_counts(scratch, name, expected, quoted_keys=quoted_keys)
    if problems:
        raise BackupError(f"row counts differ: {problems[0]}" +
                          (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    report.steps.append(f"row counts of {len(expected)} table(s) match")
    report.details["tables"] = len(expected)


def _check_sequences_and_large_objects(scratch: PostgresTarget, name: str, details: dict[str, Any],
                                       report: VerifyReport) -> None:
    """Every sequence at least where the manifest recorded it (the value the dump holds; in older
    manifests, the value read just before pg_dump), and as many large objects.  A manifest of an older upkeeper
    records neither: nothing to compare, and the steps say so."""
    sequences = details.get("sequences")
    if not isinstance(sequences, dict):
        report.steps.append("sequences: not recorded in this backup's manifest (an older upkeeper), not compared")
    else:
        problems = compare_sequences(scratch, name, sequences)
        if problems:
            raise BackupError(f"sequences differ: {problems[0]}" +
                              (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
        report.steps.append(f"{len(sequences)} sequence(s) restored at or past their recorded values")
        moved = sum(1 for d in sequences.values() if isinstance(d, dict) and "read_before_dump" in d)
        if moved:
            report.steps.append(f"{moved} sequence(s) moved back during the dump (setval, ALTER SEQUENCE RESTART): "
                                "compared with the dump's values")
        report.details["sequences"] = len(sequences)
    lobs = details.get("large_objects")
    if not isinstance(lobs, int):
        report.steps.append("large objects: not recorded in this backup's manifest (an older upkeeper), not "
                            "compared")
        return
    restored = count_large_objects(scratch, name)
    if restored != lobs:
        raise BackupError(f"large objects differ: {restored} restored, manifest says {lobs}")
    report.steps.append(f"{lobs} large object(s) restored, as the manifest says")
    report.details["large_objects"] = lobs


def _check_extras(scratch: PostgresTarget, name: str, opts: VerifyOptions, report: VerifyReport) -> None:
    """The smoke checks and amcheck."""
    if opts.checks:
        _smoke(scratch, name, opts.checks)
        report.steps.append(f"{len(opts.checks)} smoke check(s) passed")
    if opts.amcheck:
        n_idx = _amcheck(scratch, name)
        report.steps.append(f"amcheck: {n_idx} B-tree index(es) consistent")


def _guard_key(name: str) -> tuple[int, int]:
    crc = zlib.crc32(name.encode())
    return GUARD_LOCK_CLASS, crc - (1 << 32) if crc >= 1 << 31 else crc


@contextlib.contextmanager
def _scratch_guard(target: PostgresTarget, admin: str, name: str) -> Iterator[psycopg.Connection[Any]]:
    """The session that says the scratch database ``name`` is in use (see GUARD_APP); yields its connection."""
    with pg.admin_connect(target, admin, application_name=GUARD_APP + name) as conn:
        try:
            conn.execute(GUARD_SESSION_SQL)
            # waits while another verify of this backup (connected to the same database) or a sweep uses ``name``
            conn.execute(LOCK_SQL, _guard_key(name))
            key = _guard_key(name)
            row = conn.execute(OTHER_GUARDS_SQL, (GUARD_APP + name, key[0] & 0xFFFFFFFF,
                                                  key[1] & 0xFFFFFFFF)).fetchone()
        except psycopg.Error as exc:
            raise TaskError(f"cannot prepare the scratch database {name} on {target.display()}: "
                            f"{pg.pg_error(exc)}") from None
        if row and row[0]:  # one connected to another database of the server: never drop its scratch database
            raise TaskError(f"another verify of this backup is using the scratch database {name} on "
                            f"{target.display()}", "Try: again once it has finished")
        yield conn


def _drop_stale_scratch(conn: psycopg.Connection[Any], own: str, report: VerifyReport) -> None:
    """Drop the scratch databases of verifies that were killed: an ``upkeeper_verify_<id>`` database whose
    guard session is gone.  Never this verify's own, never one whose verify still runs (its guard is there,
    or it holds the advisory lock on the name).  Recorded in the report: dropped, and those that could not be."""
    dropped: list[str] = report.details.setdefault("stale_scratch_dropped", [])
    kept: list[str] = report.details.setdefault("stale_scratch_kept", [])
    try:
        names = [str(r[0]) for r in conn.execute(UNGUARDED_SCRATCH_SQL, (GUARD_APP,))]
    except psycopg.Error as exc:
        log.warning("could not look for scratch databases left by interrupted verifies: %s", pg.pg_error(exc))
        return
    for stale in names:
        if stale == own or not SCRATCH_RE.match(stale):
            continue
        key = _guard_key(stale)
        try:
            row = conn.execute(TRY_LOCK_SQL, key).fetchone()
            if not row or not row[0]:
                continue  # a verify is creating or using it right now
            try:
                row = conn.execute(GUARDED_SQL, (GUARD_APP + stale,)).fetchone()
                if row and row[0]:
                    continue  # its verify started in the meantime
                pg.drop_database(conn, stale)
            finally:
                conn.execute(UNLOCK_SQL, key)
        except psycopg.Error as exc:
            kept.append(f"{stale}: {pg.pg_error(exc)}")
            log.warning("could not drop the scratch database %s left by an interrupted verify: %s", stale,
                        pg.pg_error(exc))
            continue
        dropped.append(stale)
        log.warning("dropped the scratch database %s left by an interrupted verify", stale)
    if dropped:
        report.steps.append(f"dropped {len(dropped)} scratch database(s) left by an interrupted verify: "
                            + ", ".join(dropped))


def _stream_restore_wanted(row_counts: dict[str, Any], jobs: int | None) -> bool:
    """Stream (one pass, one pg_restore job) or fetch to a temp file and restore with several jobs?

    ``jobs: 1`` streams, ``jobs: N>1`` restores in parallel.  Unset: parallel jobs only pay off when the data
    is spread over several tables; when one table holds most rows, its COPY and index builds are serial anyway,
    and overlapping decryption with the restore wins.
    """
    if jobs is not None:
        return jobs <= 1
    counts = [int(v) for v in row_counts.values()]
    total = sum(counts)
    return total == 0 or max(counts) >= 0.5 * total


def _smoke(target: PostgresTarget, dbname: str, checks: Sequence[str]) -> None:
    with pg.connect(target, dbname) as conn:
        for q in checks:
            try:
                row = conn.execute(q).fetchone()
            except Exception as exc:
                raise BackupError(f"smoke check {q!r} failed: {pg.pg_error(exc)}") from None
            if row is None or not row[0]:
                raise BackupError(f"smoke check {q!r} returned {row[0] if row else 'no row'!r}, expected true")


def _amcheck(target: PostgresTarget, dbname: str) -> int:
    with pg.connect(target, dbname, options=pg.OWN_SESSION_OPTIONS) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
            rows = conn.execute(AMCHECK_SQL).fetchall()
        except Exception as exc:
            raise BackupError(f"amcheck: {pg.pg_error(exc)}") from None
    return len(rows)


def _verify_files(fetcher: Fetcher, settings: BackupSettings, report: VerifyReport,
                  progress: Callable[[str], None]) -> None:
    """Every object checked (size, SHA-256, decryption, decompression); the tar archives read as a stream,
    each file hashed as it passes and each symlink's target read from its header, compared with the
    manifest.  Nothing is written to disk: no plaintext copy, no expanded sparse file, no leftovers."""
    m = fetcher.located.manifest
    checked = 0
    for rec in m.objects:
        progress(f"reading {rec.name}")
        if rec.role not in ("files", "secrets"):
            fetcher.check_only(rec)
            continue
        checked += _compare_archive(fetcher, rec, listed_files(m, rec))
    report.steps.append(f"{len(m.objects)} object(s) match their SHA-256, decrypt and decompress")
    report.steps.append(f"{checked} file(s) read from the archives (not extracted) and compared")
    as_read = recorded_as_read(m.details)
    if as_read:  # the archive holds what was read, as the manifest says: a note, not a failure
        report.steps.append("note: " + as_read_note(as_read))
        report.details["sqlite_not_snapshotted"] = as_read


class _Comparison:
    """Each member of a tar object compared with the manifest's entry as it passes (no table of the archive's
    members is built).  files.backup writes the members in the order of the manifest's list, so each member
    is matched with the next entry: nothing but the file list (:class:`~upkeeper.backup.files.FileList`,
    compact) is held, whatever the number of files.  Only an archive that leaves that order (a member
    added, repeated or missing) has its entries indexed by name from there on.  The first problem of each
    kind is kept, reported once the object has been read to its end: a name that occurs twice (extraction
    would keep the last copy), then a member the manifest does not list or lists as another kind (a restore
    extracts the whole archive: what the manifest does not vouch for fails), then a file or link that
    differs from its entry, then an entry missing from the archive.

    An entry with ``link`` (another name of a file archived earlier in the same archive) must be a hard-link
    member to that name, whose member passed before it with the entry's size and SHA-256: the data of the files
    linked to (only those) is remembered by name as it is read."""

    def __init__(self, rec: ObjectRecord, listed: Iterable[dict[str, Any]]) -> None:
        self.rec = rec
        self.listed = listed
        #: the entries not yet matched, in the manifest's order
        self.pending: Iterator[dict[str, Any]] = iter(listed)
        #: how many entries were matched in order
        self.in_order = 0
        #: entry by member name, None once its member has passed: only once the archive left the order
        self.expected: dict[str, dict[str, Any] | None] | None = None
        self.problems: dict[int, str] = {}
        self.checked = 0
        #: the members hard links are listed to, name → (size, SHA-256) once read (None until then)
        self.link_targets: dict[str, tuple[int, str] | None] = {
            member_name(target): None for _, target in hard_links(listed)}

    def note(self, rank: int, what: str) -> None:
        self.problems.setdefault(rank, f"object {self.rec.name}: {what}")

    def _entry(self, name: str, kind: str) -> dict[str, Any] | None:
        """The manifest's entry for the member ``name``, or None (the problem noted)."""
        if self.expected is None:
            f = next(self.pending, None)
            if f is not None and member_name(str(f["path"])) == name:
                self.in_order += 1
                return f
            # out of the manifest's order: every entry by name, those matched so far as passed
            self.expected = {}
            for i, g in enumerate(self.listed):
                self.expected[member_name(str(g["path"]))] = None if i < self.in_order else g
        if name not in self.expected:
            self.note(1, f"the archive holds {name} ({kind}), which the manifest does not list")
            return None
        f = self.expected[name]
        if f is None:
            self.note(0, f"the archive holds {name} more than once")
            return None
        self.expected[name] = None
        return f

    def member(self, tf: tarfile.TarFile, ti: tarfile.TarInfo) -> None:
        name = member_name(ti.name)
        kind = "file" if ti.isfile() else "symlink" if ti.issym() else _KINDS.get(ti.type, f"member of type "
                                                                                             f"{ti.type!r}")
        f = self._entry(name, kind)
        if f is None:
            return
        want = "hard link" if f.get("link") is not None else f.get("type", "file")
        if want != kind:
            self.note(1, f"{name} is a {kind} in the archive, the manifest says {want}")
            return
        problem = xattrs_problem(str(f["path"]), member_xattrs(ti), f.get("xattrs"))
        if problem is not None:
            self.note(2, problem)
        if kind == "file":
            h = hashlib.sha256()
            n = 0
            if ti.sparse is None and isinstance(tf.fileobj, _Forward):  # (ours): read in large reads
                read = tf.fileobj.at(ti.offset_data)
                left = ti.size
                while left:
                    chunk = read(min(left, 1 << 20))
                    if not chunk:
                        raise tarfile.ReadError("unexpected end of data")
                    h.update(chunk)
                    n += len(chunk)
                    left -= len(chunk)
            else:
                src = tf.extractfile(ti)
                assert src is not None
                while chunk := src.read(1 << 20):
                    h.update(chunk)
                    n += len(chunk)
            if name in self.link_targets:
                self.link_targets[name] = (n, h.hexdigest())
            if n != f["size"]:
                self.note(2, f"{f['path']} is {n} bytes, manifest says {f['size']}")
            elif "sha256" in f and h.hexdigest() != f["sha256"]:
                self.note(2, f"{f['path']} does not match its SHA-256")
            else:
                self.checked += 1
        elif kind == "symlink" and "target" in f and ti.linkname != f["target"]:
            self.note(2, f"symlink {f['path']} points to {ti.linkname!r}, manifest says {f['target']!r}")
        elif kind == "hard link":
            self._hard_link(ti, f)

    def _hard_link(self, ti: tarfile.TarInfo, f: dict[str, Any]) -> None:
        target = member_name(ti.linkname)
        got = self.link_targets.get(target)
        if target != member_name(str(f["link"])):
            self.note(2, f"hard link {f['path']} links to {ti.linkname!r}, manifest says {f['link']!r}")
        elif got is None:
            self.note(2, f"hard link {f['path']}: {f['link']}, which it links to, is not a file earlier in the "
                         "archive")
        elif got[0] != f["size"]:
            self.note(2, f"hard link {f['path']}: {f['link']}, which it links to, is {got[0]} bytes, manifest "
                         f"says {f['size']}")
        elif "sha256" in f and got[1] != f["sha256"]:
            self.note(2, f"hard link {f['path']}: {f['link']}, which it links to, does not match its SHA-256")
        else:
            self.checked += 1

    def result(self) -> int:
        """The files compared; raises naming the first problem."""
        for rank in sorted(self.problems):
            raise BackupError(self.problems[rank])
        expected = self.expected
        missing = self.pending if expected is None else (
            f for f in self.listed if expected.get(member_name(str(f["path"]))) is not None)
        for f in missing:
            kind = f.get("type", "file")
            if kind == "symlink" and "target" in f:
                raise BackupError(f"object {self.rec.name}: symlink {f['path']} missing from the archive")
            if kind == "dir":
                raise BackupError(f"object {self.rec.name}: directory {f['path']} missing from the archive")
            if kind == "file":
                raise BackupError(f"object {self.rec.name}: {f['path']} missing from the archive")
        return self.checked


class _Forward:
    """A stream read as a file that seeks forward only, by reading: what tarfile's ``r:`` mode needs to walk an
    archive header by header (its stream mode ``r|`` copies a member's data in reads of 10 KiB, several times
    over), and lets :class:`_Comparison` read a member's data in large reads straight from the stream."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.pos = 0

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET or pos < self.pos:
            raise tarfile.ReadError("the archive is read as a stream: it cannot go back")
        while self.pos < pos:
            b = self.raw.read(min(pos - self.pos, 1 << 20))
            if not b:  # past the end: reads find nothing, as in a file
                self.pos = pos
                break
            self.pos += len(b)
        return self.pos

    def read(self, size: int = -1) -> bytes:
        b: bytes = self.raw.read(size)
        self.pos += len(b)
        return b

    def at(self, pos: int) -> Callable[[int], bytes]:
        """:meth:`read`, from ``pos`` (ahead)."""
        self.seek(pos)
        return self.read


def _compare_archive(fetcher: Fetcher, rec: ObjectRecord, listed: Iterable[dict[str, Any]]) -> int:
    """Stream one tar object through :class:`_Comparison`; returns the files compared.  The object is
    decrypted in a thread into a pipe that tarfile reads in stream mode ('r|'), then drained to its end so the
    object's own size and SHA-256 are checked too."""
    cmp = _Comparison(rec, listed)
    failure: list[BaseException] = []
    tar_error: BaseException | None = None
    r, w = os.pipe()

    def feed() -> None:
        try:
            with os.fdopen(w, "wb") as wf:
                fetcher.write_to(rec, wf.write)
        except BaseException as exc:  # handed to the reading thread
            failure.append(exc)

    with contextlib.suppress(OSError, AttributeError):  # fewer, larger reads (Linux; as large as allowed)
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 20)
    t = threading.Thread(target=feed, name="verify-feed", daemon=True)
    t.start()
    try:
        with os.fdopen(r, "rb") as rf:
            try:
                stream: Any = _Forward(rf)  # (a file object as far as tarfile's reading goes)
                with tarfile.open(fileobj=stream, mode="r:") as tf:
                    while (ti := tf.next()) is not None:
                        cmp.member(tf, ti)
                        tf.members.clear()  # type: ignore[attr-defined]  # (else it keeps every header read)
            except (tarfile.TarError, EOFError) as exc:
                tar_error = exc
            while rf.read(1 << 20):  # the rest (tar padding): the object's checksum is verified at its end
                pass
    finally:
        t.join()
    if failure:  # a checksum mismatch or a failed decryption explains a broken tar: report it first
        raise failure[0]
    if tar_error is not None:
        raise BackupError(f"object {rec.name}: cannot read the archive: {tar_error}") from None
    return cmp.result()


#: tar member types other than regular files and symlinks, as the manifest names them
_KINDS = {tarfile.DIRTYPE: "dir", tarfile.LNKTYPE: "hard link", tarfile.CHRTYPE: "character device",
          tarfile.BLKTYPE: "block device", tarfile.FIFOTYPE: "fifo"}


def _verify_redis(fetcher: Fetcher, settings: BackupSettings, opts: VerifyOptions, report: VerifyReport,
                  progress: Callable[[str], None]) -> None:
    """Every object checked, redis-check-rdb on the RDB, then a test restore: a throw-away redis-server loads it
    and its keys are compared with those the backup recorded of its RDB (see :func:`rdb_load.compare_keys`),
    then the smoke checks run on it.  Without redis-server on this host the verify says the backup was not
    test-restored (redis-check-rdb only)."""
    m = fetcher.located.manifest
    made_by = str(m.details.get("redis_version") or "") or None
    rdb_bytes = sum(o.raw_size for o in m.objects if o.role == "rdb")
    with work_dir(settings, "upkeeper-verify-") as tmp:
        rdb = tmp / "dump.rdb"
        _check_work_room(tmp, rdb_bytes, "the RDB fetched for redis-check-rdb", opts, report)
        for rec in m.objects:
            progress(f"fetching {rec.name}")
            if rec.role == "rdb":
                fetcher.to_file(rec, rdb, durable=False)
            else:
                fetcher.check_only(rec)
        report.steps.append(f"{len(m.objects)} object(s) match their SHA-256, decrypt and decompress")
        checked = check_rdb(str(rdb), "the RDB", made_by)
        report.steps.append("redis-check-rdb: RDB looks OK" +
                            (f" ({checked.keys} key(s))" if checked.keys is not None else ""))
        report.details["test_restored"] = False
        if not opts.restore:
            report.steps.append("not test-restored (restore off)")
            return
        binary = rdb_load.server_binary()
        if binary is None:
            report.steps.append("not test-restored: no redis-server on this host (apt-get install redis-server)")
            return
        version = rdb_load.check_server_version(binary, made_by)
        short = _memory_short(m.details, rdb_bytes, opts, report)
        if short:
            report.steps.append(f"not test-restored: {short}")
            return
        expected = {str(k): int(v) for k, v in (m.details.get("rdb_db_keys") or {}).items()} or checked.db_keys
        total = m.details.get("rdb_keys", checked.keys)
        ids = [int(db[2:]) for db in (*expected, *checked.db_keys) if db[2:].isdigit()]
        progress(f"loading the RDB into a scratch redis-server {version}")
        with rdb_load.load_rdb(binary, rdb, max(ids, default=0) + 1) as (client, loaded):
            report.restore_seconds = round(loaded.seconds, 3)
            report.details["test_restored"] = True
            report.details["keys_loaded"] = loaded.keys_loaded
            report.details["keys_expired"] = loaded.keys_expired
            problems = rdb_load.compare_keys(loaded, expected, int(total) if total is not None else None)
            if problems:
                raise BackupError("key counts differ: " + "; ".join(problems))
            report.steps.append(
                f"test-restored into a scratch redis-server {version} in {report.restore_seconds:.1f}s: "
                f"{loaded.keys_loaded} key(s) in {len(loaded.db_keys)} database(s) match the backup's RDB"
                + (f" ({loaded.keys_expired} expired since the snapshot)" if loaded.keys_expired else ""))
            if opts.redis_checks:
                rdb_load.smoke(client, opts.redis_checks)
                report.steps.append(f"{len(opts.redis_checks)} smoke check(s) passed")


def _memory_short(details: dict[str, Any], rdb_bytes: int, opts: VerifyOptions, report: VerifyReport) -> str:
    """Why this host lacks the memory for a scratch redis-server holding the RDB ("" when it has it): the
    memory the backed-up server used (else an estimate from the RDB's size) and min_free_memory must fit in
    MemAvailable, so the test load never drives the host (and its production Redis) into the OOM killer."""
    needed, source = room.redis_needed(details, rdb_bytes)
    available = room.available_memory()
    report.details["test_restore_memory_needed"] = needed
    if needed + opts.min_free_memory <= available:
        return ""
    return (f"needs ~{human_bytes(needed)} of memory ({source}) plus {human_bytes(opts.min_free_memory)} kept "
            f"free (min_free_memory), {human_bytes(available)} available on this host (checked with "
            "redis-check-rdb only; verify on a host with more memory to test-restore it)")
