"""postgres.backup: pg_dump per database, streamed through zstd and age to every storage.

Row counts of every table are taken in the dump's own snapshot: we export a
snapshot, count inside it and hand it to ``pg_dump --snapshot``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from upkeeper import lazy
from upkeeper.backup.source import (
    MANIFEST_KEY,
    MAX_REPLICA_LAG_DESCRIPTION,
    stale_source_finding,
    unchecked_source_finding,
)
from upkeeper.backup.workdir import work_dir
from upkeeper.config.backup import RetentionPolicy
from upkeeper.config.targets import PostgresTarget
from upkeeper.config.types import Duration
from upkeeper.core import proc
from upkeeper.core.task import Finding, Result, Severity, Task, TaskContext, TaskOptions, task
from upkeeper.errors import BackupError, TaskError, UpkeeperError
from upkeeper.fmt import human_bytes, human_duration
from upkeeper.tasks.backup._common import (
    Outcome,
    apply_retention,
    env_for,
    object_name,
    write_storage_problems,
)

if TYPE_CHECKING:
    import psycopg

    from upkeeper.backup import manifest as manifests
    from upkeeper.backup import pg, pipeline, sets
    from upkeeper.backup.manifest import Manifest
    from upkeeper.backup.sets import BackupEnv, SetWriter
else:
    # The dump itself (pg_dump, the pipeline, the storages) is the worker's: 'upkeeper run' imports this module
    # in the CLI for the job's options, and these modules would add ~25 ms to its start before the run is sent
    # (the worker loads them while it waits for the run: lazy.load_all)
    psycopg = lazy.module("psycopg")
    manifests = lazy.module("upkeeper.backup.manifest")
    pg = lazy.module("upkeeper.backup.pg")
    pipeline = lazy.module("upkeeper.backup.pipeline")
    sets = lazy.module("upkeeper.backup.sets")

PROGRESS_EVERY = 64 << 20
ARCHIVE_MAGIC = b"PGDMP"  # how a custom-format archive starts
DUMP_POLL_SECONDS = 0.05
BLOCKING_POLL_SECONDS = 1.0  # how often the dump's watch looks for sessions waiting on the backup's locks
BLOCKING_REPORT_AFTER = 1.0  # seconds a session must have waited to be reported (not a passing queue)
BLOCKING_REPORT_MAX = 10  # findings about blocked sessions per database, beyond: one that counts the rest
DATABASE_SIZE_SQL = "SELECT pg_database_size(current_database())"  # manifest: the space a restore needs
WATCH_SESSION_SQL = ("SET statement_timeout = '5s'", "SET lock_timeout = '1s'")

# what a set's manifest records about the server's globals (postgres -> globals)
GLOBALS_COMPLETE = "complete"  # globals.sql: roles with their passwords, tablespaces
GLOBALS_WITHOUT_PASSWORDS = "without-role-passwords"  # the role may not read pg_authid
GLOBALS_FAILED = "failed"  # no globals.sql: pg_dumpall failed (the run failed)
GLOBALS_OFF = "off"  # option globals: false
PG_AUTHID_DENIED = "permission denied for table pg_authid"
NO_ROLE_PASSWORDS = "--no-role-passwords"
DUMP_APPLICATION_NAME = "upkeeper pg_dump {}"  # + the snapshot's id; what pg_stat_activity shows for the dump
WATCH_APPLICATION_NAME = "upkeeper backup watch"


class PostgresBackupOptions(TaskOptions):
    databases: list[str] | None = Field(
        None, description="databases to back up (default: every non-template database that allows "
        "connections; a template database is backed up when named here. Source: pg_back)")
    exclude_databases: list[str] = Field(default_factory=list, description="databases to leave out. "
            "Source: upkeeper (not set by default)")
    format: Literal["custom", "directory"] = Field(
        "custom", description="'custom' streams one file with no temporary copy; 'directory' dumps tables in "
        "parallel (jobs) to a temporary directory first — for large databases. Source: upkeeper default")
    jobs: int = Field(2, ge=1, le=64, description="parallel pg_dump jobs for format 'directory'. "
                      "Source: pg_dump -j")
    globals: bool = Field(True, description="add 'pg_dumpall --globals-only' (roles, tablespaces) to every set; "
                          "a role that may not read pg_authid (not a superuser) gets the roles without their "
                          "passwords (--no-role-passwords) and a warning. Source: upkeeper default")
    lock_wait_timeout: Duration = Field(
        default=timedelta(minutes=1),
        description="how long pg_dump (--lock-wait-timeout) and the session counting rows wait for a table's "
        "lock, held or queued for by a migration (ALTER TABLE, TRUNCATE, LOCK TABLE), before the backup fails "
        "naming the table and the sessions in the way; while it waits, the tables it already locked block new "
        "DDL and every query queued behind that DDL. 0 waits as long as it takes. Source: pg_dump "
        "--lock-wait-timeout (pg_dump itself waits forever); the value is an upkeeper default")
    on_blocking: Literal["warn", "abort"] = Field(
        "warn", description="what to do about a session that queues for a lock the backup holds (a migration's "
        "ALTER TABLE waiting for pg_dump, with the app's queries on that table queued behind it), watched every "
        "second during the dump: 'warn' reports it (backup.blocking_sessions) and the backup goes on; 'abort' "
        "also ends the backup once such a session has waited blocking_grace, so the migration and the app go on "
        "(the run fails, nothing is stored, the next run or retry backs up again). Source: upkeeper default — "
        "warn, since aborting gives up a backup (every night, if migrations always collide with it)")
    blocking_grace: Duration = Field(
        default=timedelta(seconds=30),
        description="with on_blocking 'abort': how long a session may wait for the backup's locks before the "
        "backup yields to it. Source: upkeeper default, after the 30 s request timeout of common app servers "
        "(gunicorn --timeout, Heroku's router): past it, the app's requests queued behind the migration fail")
    max_replica_lag: Duration = Field(default=timedelta(hours=1), description=MAX_REPLICA_LAG_DESCRIPTION)
    storages: list[str] | None = Field(None, description="storages to write to (default: backup.storages). "
            "Source: upkeeper (not set by default)")
    retention: RetentionPolicy | None = Field(None, description="retention for these backups "
                                              "(default: backup.retention). "
                                              "Source: upkeeper (not set by default)")


@task
class PostgresBackup(Task[PostgresBackupOptions]):
    """Dump each database (custom format, or directory format with parallel jobs) plus the server's globals,
    compress with zstd, encrypt with age and store the set with a manifest written last; then apply
    retention.  A failed, empty or erroring pg_dump fails the run and nothing is listed."""

    name = "postgres.backup"
    summary = "pg_dump each database → zstd → age → storage, with row counts and retention"
    target_kinds = ("postgres",)
    Options = PostgresBackupOptions
    category = "backup"
    exclusive = True

    @classmethod
    def config_problems(cls, options: Any, config: Any) -> list[tuple[str, str, str]]:
        return write_storage_problems(options.storages, config) if isinstance(options, PostgresBackupOptions) else []

    def run(self, ctx: TaskContext, options: PostgresBackupOptions) -> Result:
        target = ctx.require_target()
        assert isinstance(target, PostgresTarget)
        assert ctx.target_name is not None
        t0 = time.monotonic()
        env = env_for(ctx, options.storages)
        try:
            return self._run(ctx, options, target, ctx.target_name, env, t0)
        finally:
            env.close()

    def _run(self, ctx: TaskContext, options: PostgresBackupOptions, target: PostgresTarget, target_name: str,
             env: BackupEnv, t0: float) -> Result:
        pg_dump = pg.tool(target, "pg_dump")
        # 'pg_dump --version' (a process started from this large one: 10-30 ms) runs while the server is
        # connected to and asked what the backup needs to know of it
        with ThreadPoolExecutor(1, thread_name_prefix="pg_dump-version") as pool:
            dump_version = pool.submit(pg.tool_version, pg_dump)
            with pg.connect(target, options=pg.NO_TIMEOUT_OPTIONS) as conn:
                server_ver, server_num = pg.server_version(conn)
                flags = pg.database_flags(conn)
                source = pg.source_state(conn)
                limits = pg.connection_limits(conn)
            dump_ver, dump_num = dump_version.result()
        pg.check_dump_version(pg_dump, dump_ver, dump_num, server_ver, server_num)
        existing = [name for name, (template, allow) in flags.items() if allow and not template]
        if options.databases:
            # a template database named here is backed up (pg_dump records its IS_TEMPLATE); one that allows
            # no connections cannot be read by pg_dump
            missing = [d for d in options.databases if d not in flags]
            if missing:
                raise TaskError(f"database {missing[0]!r} does not exist on {target.display()}",
                                "Try: fix the job's 'databases' option (existing: " + ", ".join(existing) + ")")
            closed = [d for d in options.databases if not flags[d][1]]
            if closed:
                raise TaskError(f"database {closed[0]!r} on {target.display()} does not allow connections "
                                "(ALLOW_CONNECTIONS false): pg_dump cannot read it",
                                f"Try: ALTER DATABASE \"{closed[0]}\" ALLOW_CONNECTIONS true while it is backed up, "
                                "or remove it from the job's 'databases' option")
            databases = list(options.databases)
        else:
            databases = existing
        databases = [d for d in databases if d not in options.exclude_databases]
        out = Outcome("postgres")
        if not options.databases:
            _note_skipped(ctx, flags, options, out)
        info = {"server_version": server_ver, "server_version_num": server_num, "pg_dump_version": dump_ver,
                "format": options.format, MANIFEST_KEY: source.to_dict()}
        globals_sql: bytes | None = None
        info["globals"] = GLOBALS_OFF
        if options.globals:
            globals_sql, info["globals"] = self._dump_globals(ctx, target, out)
        policy = options.retention or env.settings.retention
        for i, db in enumerate(databases):
            ctx.progress(f"dumping {db}", i / max(1, len(databases)))
            writer = sets.SetWriter(env, "postgres", target_name, manifests.safe_component(db))
            try:
                manifest = self._backup_db(ctx, env, writer, target, db, options, pg_dump, globals_sql, info,
                                           out.findings, limits.for_database(db))
            except Exception as exc:
                writer.abort()
                ctx.log.error("backup of %s failed: %s", db, getattr(exc, "message", exc))
                out.fail(db, exc, "backup.failed")
                continue
            except BaseException:  # a stop (SIGTERM, Ctrl-C): the objects already stored go now, not at a prune
                writer.abort()
                raise
            out.manifests.append(manifest)
            ctx.log.info("backup %s of %s complete: %s stored (%s raw)", manifest.id, db,
                         human_bytes(manifest.size), human_bytes(manifest.raw_size))
            report = apply_retention(ctx, env, manifest, policy, out.findings)
            if report is not None:
                out.pruned += len(report.deleted)
        stale = stale_source_finding(target.display(), source, options.max_replica_lag.total_seconds(), "PostgreSQL")
        if stale is not None and out.manifests:  # stored all the same: a standby's data beats none without primary
            ctx.log.warning("%s", stale.message)
            out.findings.append(stale)
        unchecked = unchecked_source_finding(target.display(), source, "PostgreSQL")
        if unchecked is not None and out.manifests:
            ctx.log.warning("%s", unchecked.message)
            out.findings.append(unchecked)
        return out.result(time.monotonic() - t0)

    def _dump_globals(self, ctx: TaskContext, target: PostgresTarget, out: Outcome) -> tuple[bytes | None, str]:
        """``pg_dumpall --globals-only``: (its SQL, what the manifest records).  A role that may not read
        pg_authid (only superusers may: it holds the password hashes) dumps the roles again with
        ``--no-role-passwords``, with a warning.  When the globals cannot be dumped at all, the databases are
        still backed up (their sets say they hold no globals) and the run fails naming the globals."""
        ctx.progress("pg_dumpall --globals-only", None)
        argv = [pg.tool(target, "pg_dumpall"), "--globals-only", "--no-password", "-l", target.dbname]
        mode = GLOBALS_COMPLETE
        try:
            res = self._run_dumpall(argv, target)
            if res.returncode != 0 and PG_AUTHID_DENIED in res.stderr:
                ctx.log.warning("role %s may not read pg_authid: dumping the globals without role passwords",
                                target.user or "(PGUSER)")
                res = self._run_dumpall([*argv, NO_ROLE_PASSWORDS], target)
                mode = GLOBALS_WITHOUT_PASSWORDS
            pg.check_stage(res, "dumping globals")
            if not res.stdout.strip():
                raise BackupError("pg_dumpall --globals-only produced no output")
        except BackupError as exc:
            out.fail("globals", exc, "backup.globals_failed")
            ctx.log.error("globals: %s; backing up the databases without them", exc.message)
            return None, GLOBALS_FAILED
        if mode == GLOBALS_WITHOUT_PASSWORDS:
            out.findings.append(Finding(
                "backup.globals_without_role_passwords", Severity.WARNING, "globals",
                f"role {target.user or '(PGUSER)'} may not read pg_authid (superusers only), so the roles in "
                "globals.sql have no passwords (pg_dumpall --no-role-passwords)",
                "back up as a superuser to keep role passwords, or set them again after a restore "
                "(ALTER ROLE … PASSWORD); 'globals: false' leaves the roles out"))
        return res.stdout, mode

    @staticmethod
    def _run_dumpall(argv: list[str], target: PostgresTarget) -> proc.ProcResult:
        return proc.run(argv, extra_env=target.libpq_env(target.dbname), check=False, timeout=600)

    def _backup_db(self, ctx: TaskContext, env: BackupEnv, writer: SetWriter, target: PostgresTarget, db: str,
                   options: PostgresBackupOptions, pg_dump: str, globals_sql: bytes | None,
                   info: dict[str, Any], findings: list[Finding], limits: list[pg.ConnectionLimit]) -> Manifest:
        """One database's set, within the connection limits its sessions count against (:func:`_session_plan`)."""
        jobs, unwatched = _session_plan(ctx, db, options, limits, findings)
        if jobs != options.jobs:
            options = options.model_copy(update={"jobs": jobs})
        try:
            return self._dump_db(ctx, env, writer, target, db, options, pg_dump, globals_sql, info, findings,
                                 unwatched)
        except (TaskError, BackupError) as exc:
            explained = _too_many_connections(exc, db, options, limits)
            if explained is None:
                raise
            raise explained from None

    def _dump_db(self, ctx: TaskContext, env: BackupEnv, writer: SetWriter, target: PostgresTarget, db: str,
                 options: PostgresBackupOptions, pg_dump: str, globals_sql: bytes | None,
                 info: dict[str, Any], findings: list[Finding], unwatched: tuple[str, str] | None) -> Manifest:
        """One database's set.  While pg_dump runs, a watch reports the sessions queued behind its locks (into
        ``findings``) and, with on_blocking 'abort', ends the dump for them; ``unwatched`` (why, and the fix)
        when a connection limit leaves it no session."""
        base = manifests.safe_component(db)
        t_dump = time.monotonic()
        wait = options.lock_wait_timeout.total_seconds()
        # (the database's own timeouts, set from the start: its idle_in_transaction_session_timeout would end the
        # session between the statements that lift them)
        with pg.connect(target, db, autocommit=False, options=pg.NO_TIMEOUT_OPTIONS) as snap:
            snap.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            snap.read_only = True
            for stmt in pg.SNAPSHOT_SESSION_SQL:
                snap.execute(stmt)
            pg.set_lock_timeout(snap, wait)
            row = snap.execute(pg.EXPORT_SNAPSHOT_SQL).fetchone()
            assert row is not None
            snapshot = str(row[0])
            tables = pg.snapshot_tables(snap)
            locks = pg.lock_table(snap)
            size_row = snap.execute(DATABASE_SIZE_SQL).fetchone()
            pipeline.fault_pause("before-sequences")  # (the tests: a sequence created after the snapshot was exported)
            listed = pg.list_sequences(snap)  # those the dump's snapshot holds: pg_dump dumps these
            sequences = _read_sequences(target, db, listed)
            seq_names = [name for _schema, name, _inc, _cyc in listed]
            restore_tool = _restore_tool(ctx, target, pg_dump) if listed else None
            snap_pid = snap.info.backend_pid
            # pg_dump's sessions carry a name of their own (its default is plain 'pg_dump'), unique on the server
            # as the snapshot is, so that the watch knows them from any other dump
            app = DUMP_APPLICATION_NAME.format(snapshot)
            dump_env = {**target.libpq_env(db), "PGAPPNAME": app}
            watch = _BlockingWatch(ctx, target, db, app, (snap_pid,), options, unwatched)
            watch.start()
            try:
                counter = _RowCounter(snap, tables)
                counter.start()
                dump_argv = [pg_dump, f"--snapshot={snapshot}", "--no-password"]
                if wait:
                    dump_argv.append(f"--lock-wait-timeout={max(1, int(wait * 1000))}")
                dumped = False
                try:
                    if options.format == "custom":
                        sp = proc.spawn([*dump_argv, "--format=custom", "--compress=0"], extra_env=dump_env)
                        watch.attach(sp)
                        reader = pg.DumpedSequences(restore_tool, seq_names) if restore_tool else None
                        try:
                            self._stream_custom(ctx, env, writer, sp, db, object_name(f"{base}.dump", env),
                                                counter.locked, reader.feed if reader is not None else None)
                            in_dump = _dumped_sequences(ctx, db, reader)
                        finally:
                            sp.__exit__(None, None, None)
                            if reader is not None:
                                reader.abort()
                    else:
                        in_dump = self._dump_directory(ctx, env, writer, db, options, dump_argv, dump_env, base,
                                                       counter.locked, watch, restore_tool, seq_names)
                    dumped = True
                except Exception as exc:
                    if watch.yielded is not None:
                        raise watch.yield_error() from None
                    if isinstance(exc, BackupError):
                        raise _explain_dump_failure(exc, target, db, tables, wait, (snap_pid,), locks) from None
                    raise
                finally:
                    counter.finish(dumped)
                with contextlib.suppress(psycopg.Error):
                    # the snapshot's work is done; a standby may have ended the session meanwhile (a conflict with
                    # recovery over the locks it held), which does not touch the dump or the counts already taken
                    snap.rollback()
            finally:
                watch.stop()
                findings.extend(watch.report())
        if counter.error is not None:
            if watch.yielded is not None:
                raise watch.yield_error()
            raise _count_failure(counter.error, target, db, tables, wait, (snap_pid,), locks)
        dump_seconds = time.monotonic() - t_dump
        if globals_sql is not None:
            writer.add(pipeline.upload_bytes(writer.upload(object_name("globals.sql", env), role="globals"), globals_sql))
        details = {**info, "snapshot": snapshot, "dump_seconds": round(dump_seconds, 3),
                   "tables": len(counter.counts), "row_counts": counter.counts,
                   "row_count_keys": pg.QUOTED_KEYS, "large_objects": counter.large_objects,
                   "database_size": int(size_row[0]) if size_row and size_row[0] is not None else None,
                   "sequences": _recorded_sequences(ctx, db, sequences, in_dump)}
        manifest = writer.commit(details)
        if locks.needed > locks.capacity:  # it worked, on the lock table's spare room: say so before it fails
            ctx.log.warning("%s: %s", db, locks.describe(db))
            findings.append(Finding(
                "backup.lock_table", Severity.WARNING, db,
                f"{locks.describe(db)}: more than it is sized for; the dump fails 'out of shared memory' once the "
                "spare shared memory the lock table borrows runs out (more tables, or other sessions' locks)",
                locks.hint().removeprefix("Try: "), value=locks.needed, threshold=locks.capacity))
        return manifest

    def _stream_custom(self, ctx: TaskContext, env: BackupEnv, writer: SetWriter, sp: proc.Spawned, db: str,
                       name: str, locked: threading.Event, tee: Callable[[bytes | memoryview], None] | None) -> None:
        upload = writer.upload(name, role="database")
        proc.widen_pipe(sp.popen.stdout)  # pg_dump goes on writing while this thread compresses
        try:
            head = b""  # the archive's first bytes, until its magic can be checked
            next_report = PROGRESS_EVERY
            for chunk in sp.iter_views(gather=True):  # (a view of one buffer: consumed, never kept, before the next read)
                if len(head) < len(ARCHIVE_MAGIC):
                    if not head:
                        locked.set()  # pg_dump writes its archive once it has read the catalog and locked every table
                    head += bytes(chunk[:len(ARCHIVE_MAGIC) - len(head)])
                    if not ARCHIVE_MAGIC.startswith(head):
                        raise BackupError(f"pg_dump output for {db} is not a custom-format archive")
                upload.write(chunk)
                if tee is not None:
                    tee(chunk)
                if upload.raw_size >= next_report:
                    next_report += PROGRESS_EVERY
                    ctx.progress(f"{db}: {human_bytes(upload.raw_size)} dumped", None)
            res = sp.wait(check=False)
            pg.check_stage(res, f"dumping {db}")
            if upload.raw_size == 0:
                raise BackupError(f"pg_dump produced no output for {db}")
            if head != ARCHIVE_MAGIC:  # fewer bytes than the magic
                raise BackupError(f"pg_dump output for {db} is not a custom-format archive")
        except BaseException:
            sp.kill()
            upload.abort()
            raise
        writer.add(upload.finish())

    def _dump_directory(self, ctx: TaskContext, env: BackupEnv, writer: SetWriter, db: str,
                        options: PostgresBackupOptions, dump_argv: list[str], dump_env: dict[str, str], base: str,
                        locked: threading.Event, watch: _BlockingWatch, restore_tool: str | None,
                        seq_names: list[str]) -> dict[str, tuple[int, bool]] | None:
        """Returns the sequence values the dump holds (see :func:`_dumped_sequences`)."""
        with work_dir(env.settings, "upkeeper-dump-") as tmp:
            out_dir = tmp / "dump"
            argv = [*dump_argv, "--format=directory", "--compress=0", f"--jobs={options.jobs}", "--file", str(out_dir)]
            with proc.spawn(argv, stdout=subprocess.DEVNULL, extra_env=dump_env) as sp:
                watch.attach(sp)
                # pg_dump writes toc.dat first once it has read the catalog and locked every table, then the data
                while sp.popen.poll() is None:
                    if not locked.is_set() and (out_dir / "toc.dat").exists():
                        locked.set()
                    time.sleep(DUMP_POLL_SECONDS)
                res = sp.wait(check=False)
            pg.check_stage(res, f"dumping {db}")
            files = sorted(p for p in out_dir.iterdir() if p.is_file()) if out_dir.is_dir() else []
            if not any(p.name == "toc.dat" for p in files):
                raise BackupError(f"pg_dump wrote no toc.dat for {db}")
            in_dump = _dumped_sequences(ctx, db, pg.DumpedSequences(restore_tool, seq_names, out_dir)
                                        if restore_tool else None)
            for i, f in enumerate(files):
                ctx.progress(f"{db}: storing {f.name}", i / len(files))
                upload = writer.upload(object_name(f"{base}.dir/{f.name}", env), role="database-dir")
                try:
                    with open(f, "rb") as fh:
                        while chunk := fh.read(1 << 20):
                            upload.write(chunk)
                except BaseException:
                    upload.abort()
                    raise
                writer.add(upload.finish())
                f.unlink()  # plaintext leaves the disk as soon as it is stored
        return in_dump


class _RowCounter(threading.Thread):
    """Counts every table's rows in the snapshot session once pg_dump holds its table locks (``locked`` set).

    Never before: a lock of ours taken first lets a migration's ALTER TABLE queue behind it, pg_dump's lock
    queue behind the ALTER, and us wait for pg_dump — a deadlock the server cannot see, with every query of the
    app on that table queued behind it."""

    def __init__(self, conn: psycopg.Connection[Any], tables: list[pg.SnapshotTable]) -> None:
        super().__init__(daemon=True, name="row-counts")
        self.conn = conn
        self.tables = tables
        self.locked = threading.Event()
        self.counts: dict[str, int] = {}
        self.large_objects = 0
        self.error: BaseException | None = None
        self._cancelled = False

    def run(self) -> None:
        self.locked.wait()
        if self._cancelled:
            return
        try:
            self.counts = pg.count_in_snapshot(self.conn, self.tables)
            self.large_objects = pg.large_objects(self.conn)
        except BaseException as exc:
            self.error = exc

    def finish(self, dumped: bool) -> None:
        """pg_dump is done: count now if not yet begun; when the dump failed, stop counting instead."""
        if not dumped:
            self._cancelled = True
            if self.locked.is_set():
                with contextlib.suppress(Exception):
                    self.conn.cancel()
        self.locked.set()
        self.join()


class _BlockingWatch(threading.Thread):
    """Looks every second, from a short session of its own, for sessions queued behind the locks of the backup
    (pg_dump's sessions, known by their application_name, and the snapshot session): a migration's ALTER TABLE
    waiting for pg_dump, with the app's queries on that table queued behind it, for as long as the dump runs.
    Each is logged and reported once (:meth:`report`); with on_blocking 'abort', the first that has waited
    blocking_grace makes the backup yield: pg_dump is killed and the backup's sessions are ended, so their locks
    go at once, and the dump fails with :meth:`yield_error`."""

    def __init__(self, ctx: TaskContext, target: PostgresTarget, db: str, app: str, ours: tuple[int, ...],
                 options: PostgresBackupOptions, unwatched: tuple[str, str] | None = None) -> None:
        super().__init__(daemon=True, name="blocking-watch")
        self.ctx, self.target, self.db, self.app, self.ours = ctx, target, db, app, ours
        self.abort = options.on_blocking == "abort"
        self.grace = options.blocking_grace.total_seconds()
        self.seen: dict[int, pg.BlockedSession] = {}
        self.yielded: pg.BlockedSession | None = None
        self.error: str | None = unwatched[0] if unwatched else None
        self.fix: str | None = unwatched[1] if unwatched else None
        self._first_seen: dict[int, float] = {}
        self._process: proc.Spawned | None = None
        self._stopping = threading.Event()

    def attach(self, sp: proc.Spawned) -> None:
        """pg_dump, to kill when the backup yields (at once when it already has)."""
        self._process = sp
        if self.yielded is not None:
            sp.kill()

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=30)  # a look takes at most its statement_timeout; connecting, the target's timeout

    def run(self) -> None:
        # connects at its first look only: a dump over within a second costs nothing, and pg_dump's sessions
        # (one per job) are opened first where max_connections is tight
        if self.error is not None:  # a connection limit leaves it none: not tried (a FATAL in the server's log)
            self.ctx.log.warning("%s: not watching for sessions waiting on the backup's locks: %s", self.db,
                                 self.error)
            return
        if self._stopping.wait(BLOCKING_POLL_SECONDS):
            return
        try:
            with pg.connect(self.target, self.db, application_name=WATCH_APPLICATION_NAME) as conn:
                for stmt in WATCH_SESSION_SQL:
                    conn.execute(stmt)
                while not self._poll(conn):
                    if self._stopping.wait(BLOCKING_POLL_SECONDS):
                        return
        except (TaskError, psycopg.Error) as exc:
            self.error = exc.message if isinstance(exc, TaskError) else pg.pg_error(exc)
            self.ctx.log.warning("%s: cannot watch for sessions waiting on the backup's locks: %s", self.db,
                                 self.error)

    def _poll(self, conn: psycopg.Connection[Any]) -> bool:
        """One look; True once the backup yielded."""
        now = time.monotonic()
        for found in pg.blocked_by_backup(conn, self.app, self.ours):
            before = self.seen.get(found.pid)
            waited = max(found.waited, now - self._first_seen.setdefault(found.pid, now))
            if waited < BLOCKING_REPORT_AFTER:
                continue
            session = dataclasses.replace(found, waited=waited, queued=max(found.queued, before.queued if before
                                                                             else 0))
            self.seen[found.pid] = session
            if before is None:
                self.ctx.log.warning("%s: %s", self.db, session.describe())
            if self.abort and waited >= self.grace:
                self._yield_to(conn, session)
                return True
        return False

    def _yield_to(self, conn: psycopg.Connection[Any], session: pg.BlockedSession) -> None:
        self.yielded = session
        self.ctx.log.error("%s: ending the backup for pid %d (on_blocking: abort)", self.db, session.pid)
        if self._process is not None:
            self._process.kill()
        try:  # pg_dump's sessions end when it dies, but perhaps not at once: their locks must go now
            pg.terminate_backup_sessions(conn, self.app, self.ours)
        except psycopg.Error as exc:
            self.ctx.log.warning("%s: could not end the backup's sessions: %s", self.db, pg.pg_error(exc))

    def yield_error(self) -> BackupError:
        s = self.yielded
        assert s is not None
        return BackupError(
            f"the backup of {self.db} yielded to a session waiting for its locks (on_blocking: abort, "
            f"blocking_grace {human_duration(self.grace)}): {s.describe()}; pg_dump was stopped and nothing was "
            "stored",
            "Try: run the backup again once the migration is over (the job's retries do), or schedule migrations "
            "outside the backup's hours; with 'on_blocking: warn' the backup finishes instead")

    def report(self) -> list[Finding]:
        """A warning per session seen waiting on the backup (the longest waits first, at most
        BLOCKING_REPORT_MAX, then one for the rest), and one when the watch could not run."""
        out: list[Finding] = []
        sessions = sorted(list(self.seen.values()), key=lambda s: -s.waited)
        for s in sessions[:BLOCKING_REPORT_MAX]:
            out.append(Finding(
                "backup.blocking_sessions", Severity.WARNING, self.db, s.describe(), BLOCKING_REMEDIATION,
                value=round(s.waited, 1), threshold=round(self.grace, 1) if self.abort else None,
                data={"pid": s.pid, "user": s.user, "application": s.application, "mode": s.lock,
                 "relation": s.relation, "waited_seconds": round(s.waited, 1), "statement": s.statement,
                 "queued_behind": s.queued, "backup_yielded": s is self.yielded}))
        rest = sessions[BLOCKING_REPORT_MAX:]
        if rest:
            out.append(Finding(
                "backup.blocking_sessions", Severity.WARNING, self.db,
                f"{len(rest)} more sessions waited for locks held by the backup (pids "
                + ", ".join(str(s.pid) for s in rest[:20]) + ("…" if len(rest) > 20 else "") + ")",
                BLOCKING_REMEDIATION, data={"sessions": len(rest)}))
        if self.error is not None:
            out.append(Finding(
                "backup.blocking_watch_failed", Severity.WARNING, self.db,
                f"sessions waiting on the backup's locks were not watched for: {self.error}",
                (self.fix or "check that the server accepts one more connection of the backup's role during the "
                 "dump (max_connections, the role's or the database's CONNECTION LIMIT)")
                + ("; on_blocking 'abort' could not act" if self.abort else "")))
        return out


SYSTEM_TEMPLATES = ("template0", "template1")  # PostgreSQL's own: never mentioned as skipped


def _note_skipped(ctx: TaskContext, flags: dict[str, tuple[bool, bool]], options: PostgresBackupOptions,
                  out: Outcome) -> None:
    """The databases that ``databases`` unset leaves out besides template0 and template1 — templates, and those
    that allow no connections — named in the run's summary and in an info finding with how to include them.
    Not a warning: leaving them out is the documented default (a template is a blueprint for new databases,
    not the app's data), and a warning every night for a deliberate setup teaches to ignore warnings."""
    skipped = {name: template for name, (template, allow) in flags.items()
               if (template or not allow) and name not in SYSTEM_TEMPLATES and name not in options.exclude_databases}
    if not skipped:
        return
    templates = sorted(n for n, t in skipped.items() if t)
    closed = sorted(n for n, t in skipped.items() if not t)
    parts = ([f"template database{'s' if len(templates) > 1 else ''} {', '.join(templates)}"] if templates else []) \
        + ([f"database{'s' if len(closed) > 1 else ''} {', '.join(closed)} (ALLOW_CONNECTIONS false)"] if closed
           else [])
    msg = "not backed up: " + " and ".join(parts) + " (the default leaves them out)"
    ctx.log.info("%s", msg)
    out.notes.append(msg)
    out.findings.append(Finding(
        "backup.databases_skipped", Severity.INFO, "databases", msg,
        "name them in the job's 'databases' option, with every database to back up, to include them"
        + ("; a database that allows no connections needs ALTER DATABASE … ALLOW_CONNECTIONS true too" if closed
           else "") + "; 'exclude_databases' silences this",
        data={"templates": templates, "no_connections": closed}))


def dump_sessions(options: PostgresBackupOptions) -> int:
    """The sessions a database's backup holds at once, its watch left out: the snapshot session (it counts the
    rows) and pg_dump's — one, or with format 'directory' and jobs > 1 a leader and one per job."""
    return 2 if options.format == "custom" or options.jobs == 1 else 2 + options.jobs


def _needs(options: PostgresBackupOptions) -> str:
    n = dump_sessions(options)
    dump = ("pg_dump's" if n == 2 else f"pg_dump's {n - 1} (a leader and one per job, format 'directory', jobs "
            f"{options.jobs})")
    return f"{n} connections at once: the session holding the dump's snapshot (it counts the rows) and {dump}"


def _limit_fix(limit: pg.ConnectionLimit, n: int, why: str) -> str:
    """``ALTER … CONNECTION LIMIT n`` (``why`` says what the n are for), or a superuser."""
    return limit.fix(n, why, "back up")


def _session_plan(ctx: TaskContext, db: str, options: PostgresBackupOptions, limits: list[pg.ConnectionLimit],
                  findings: list[Finding]) -> tuple[int, tuple[str, str] | None]:
    """(jobs, why and how to fix it when the watch gets no session) within the tightest CONNECTION LIMIT that
    the backup's sessions count against (the database's or the login role's; none for a superuser).  A limit
    below what the dump needs at once fails the database's backup before anything is dumped; format
    'directory' runs fewer jobs when that fits (a warning); a limit that leaves the watch no session skips it
    (:class:`_BlockingWatch` reports it).  Sessions of others that use up a limit at the time are not counted
    here (they come and go): a refused connection is explained by :func:`_too_many_connections`."""
    if not limits:
        return options.jobs, None
    tight = limits[0]
    jobs = options.jobs
    if dump_sessions(options) > tight.limit and options.format == "directory" and jobs > 1:
        jobs = tight.limit - 2 if tight.limit >= 4 else 1
        if jobs != options.jobs:
            msg = (f"{tight.kind} {tight.name} allows {tight.limit} connections (CONNECTION LIMIT), fewer than the "
                   f"{dump_sessions(options)} that jobs {options.jobs} needs: {db} dumped with jobs {jobs}")
            ctx.log.warning("%s", msg)
            findings.append(Finding(
                "backup.connection_limit", Severity.WARNING, db, msg,
                f"set the job's 'jobs' to {jobs}, or "
                + _limit_fix(tight, dump_sessions(options) + 1, f"jobs {options.jobs} and the watch"),
                value=tight.limit, threshold=dump_sessions(options),
                data={"kind": tight.kind, "name": tight.name, "jobs": jobs}))
        options = options.model_copy(update={"jobs": jobs})
    need = dump_sessions(options)
    if need > tight.limit:
        raise BackupError(
            f"{tight.allows()}; the backup of {db} needs {_needs(options)}: nothing was dumped",
            "Try: " + _limit_fix(tight, need + 1, f"the {need} it needs and one to watch for sessions its locks block"))
    if need + 1 > tight.limit:
        return jobs, (f"the {tight.kind} {tight.name}'s CONNECTION LIMIT {tight.limit} leaves no connection for the "
                      f"watch beside the {need} the dump holds", _limit_fix(tight, need + 1, "one for the watch"))
    return jobs, None


def _too_many_connections(exc: UpkeeperError, db: str, options: PostgresBackupOptions,
                          limits: list[pg.ConnectionLimit]) -> BackupError | None:
    """A backup session refused by a connection limit (one of ``limits``, which the backup fit within when it
    started, or the server's max_connections): what the backup needs and what used the limit up."""
    hint = pg.too_many_connections_hint(exc.message)
    if hint is None:
        return None
    limit = next((x for x in limits if f'too many connections for {x.kind} "' in exc.message), None)
    used = (f"; {limit.in_use} other session{'' if limit.in_use == 1 else 's'} counted against its CONNECTION "
            f"LIMIT {limit.limit} as the backup started" if limit is not None else "")
    return BackupError(f"{exc.message} — the backup of {db} needs {_needs(options)}{used}; nothing was stored",
                       "Try: " + _limit_fix(limit, dump_sessions(options) + limit.in_use + 1,
                                            "what the backup needs, one for the watch and the other sessions")
                       + ", or run the backup when fewer sessions are connected" if limit is not None else hint)


BLOCKING_REMEDIATION = ("give migrations a lock_timeout (e.g. SET lock_timeout = '5s', and retry) so that they "
                        "never queue the app's queries behind a backup, or run them outside the backup's hours; "
                        "'on_blocking: abort' makes the backup give way instead")


def _conflicts(target: PostgresTarget, db: str, oids: list[int], ours: tuple[int, ...]) -> list[str]:
    """The sessions in the way of our table locks, described; none when they cannot be looked up."""
    try:
        with pg.connect(target, db) as conn:
            return pg.lock_conflicts(conn, oids, ours)
    except (TaskError, psycopg.Error):
        return []


def _lock_wait_hint(wait: float) -> str:
    return ("Try: let the migration or transaction holding the table finish (or end it), then run the backup "
            "again" + (f"; or raise the job's lock_wait_timeout (now {human_duration(wait)})" if wait else ""))


def _explain_dump_failure(exc: BackupError, target: PostgresTarget, db: str, tables: list[pg.SnapshotTable],
                          wait: float, ours: tuple[int, ...], locks: pg.LockTable) -> BackupError:
    """pg_dump's failure, with the sessions holding the table it could not lock, the max_locks_per_transaction
    it needs, or a hint for a standby."""
    text = exc.message
    if pg.out_of_locks(text):
        return BackupError(f"pg_dump ran out of the server's lock table (out of shared memory): {locks.describe(db)}",
                           locks.hint())
    if pg.RECOVERY_CONFLICT in text:
        return BackupError(text, pg.RECOVERY_CONFLICT_HINT)
    if pg.vanished_table(text):
        return BackupError(text, "Try: run the backup again: the table was dropped or renamed after the backup's "
                                 "snapshot was taken, before pg_dump could lock it (a migration ran as it started)")
    locked = pg.locked_table(text)
    if locked is None:
        return exc
    table, by_worker = locked
    oids = [t.oid for t in tables if t.key.replace('"', "") == table.replace('"', "")] or [t.oid for t in tables]
    conflicts = _conflicts(target, db, oids, ours)
    why = ("; ".join(conflicts) if conflicts else "no session holds it any more")
    if by_worker:
        return BackupError(f"pg_dump could not lock table {table} of {db} for a parallel job: an ACCESS EXCLUSIVE "
                           f"lock was requested on it during the dump, which jobs > 1 cannot wait for: {why}",
                           "Try: run the backup again once the migration is over, or schedule migrations outside "
                           "the backup's hours")
    return BackupError(f"pg_dump could not lock table {table} of {db}"
                       + (f" within {human_duration(wait)} (lock_wait_timeout)" if wait else "") + f": {why}",
                       _lock_wait_hint(wait))


def _read_sequences(target: PostgresTarget, db: str, listed: list[tuple[str, str, int, bool]]
                    ) -> dict[str, pg.SequenceState]:
    """The state of every sequence ``listed`` (those the dump's snapshot holds: one created since is not in the
    dump), read once the dump's snapshot is exported and before pg_dump starts.  A sequence is not MVCC: the
    snapshot does not apply to it, and every read (pg_dump's own, in the snapshot, too) sees its state of that
    moment.  Read after the snapshot, the state is past every value the snapshot's rows hold; read before
    pg_dump's, it is at most what the dump sets — unless the sequence moved back in between (a setval() back,
    ALTER SEQUENCE RESTART, TRUNCATE … RESTART IDENTITY, a cycling sequence), which :func:`_recorded_sequences`
    tells from the value the dump holds.  In a short session of its own, so that no lock on a sequence is held
    through the dump."""
    keys = {pg.qualified(schema, name) for schema, name, _inc, _cyc in listed}
    if not keys:  # none to read: no session of its own either
        return {}
    try:  # (the database's own statement_timeout is for the app's sessions, not this one)
        with pg.connect(target, db, options=pg.NO_TIMEOUT_OPTIONS) as conn:
            return {k: v for k, v in pg.sequence_states(conn).items() if k in keys}
    except psycopg.Error as exc:
        raise BackupError(f"reading the sequences of {db}: {pg.pg_error(exc)}",
                          "Try: let the backup role read every sequence (GRANT SELECT ON ALL SEQUENCES IN SCHEMA …), "
                          "as pg_dump must") from None


def _restore_tool(ctx: TaskContext, target: PostgresTarget, pg_dump: str) -> str | None:
    """The pg_restore of pg_dump's installation (it reads every archive that pg_dump writes), else the target's;
    None, with a warning, when there is none: the manifest then records the sequence values read before pg_dump
    (:func:`_recorded_sequences`) and the backup goes on."""
    beside = Path(pg_dump).with_name("pg_restore")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    try:
        return pg.tool(target, "pg_restore")
    except TaskError as exc:
        ctx.log.warning("%s; the sequence values the dump holds are not read, the manifest records those read "
                        "before pg_dump", exc.message)
        return None


def _dumped_sequences(ctx: TaskContext, db: str, reader: pg.DumpedSequences | None
                      ) -> dict[str, tuple[int, bool]] | None:
    """The sequence values the dump holds; None when they were not read (no sequences, no pg_restore) or, with a
    warning, pg_restore could not read them: the manifest then records the values read before pg_dump
    (:func:`_recorded_sequences`)."""
    if reader is None:
        return None
    try:
        return reader.finish()
    except UpkeeperError as exc:
        ctx.log.warning("%s: could not read the sequence values the dump holds (%s); the manifest records those "
                        "read before pg_dump", db, exc.message)
        return None


def _recorded_sequences(ctx: TaskContext, db: str, before: dict[str, pg.SequenceState],
                        in_dump: dict[str, tuple[int, bool]] | None) -> dict[str, dict[str, Any]]:
    """What the manifest records of each sequence, which verify requires the restored sequence to reach: the
    value the dump holds (SEQUENCE SET), which pg_dump read after ``before`` was read.  Where that is behind
    ``before``, the sequence moved back in between (a setval() back, ALTER SEQUENCE RESTART, TRUNCATE …
    RESTART IDENTITY): the dump is a true copy of it at pg_dump's read, and ``before`` is kept as
    ``read_before_dump``.  A sequence the dump holds no value for keeps ``before`` (its restore starts over,
    behind it, and verify says so); so does every sequence when the dump's values could not be read."""
    out: dict[str, dict[str, Any]] = {}
    moved: list[str] = []
    for key, b in before.items():
        found = in_dump.get(key) if in_dump is not None else None
        if found is None:
            if in_dump is not None:
                ctx.log.warning("%s: the dump holds no value (SEQUENCE SET) for sequence %s", db, key)
            out[key] = b.to_dict()
            continue
        dumped = pg.SequenceState(found[0], found[1], b.increment, b.cycle)
        out[key] = dumped.to_dict()
        if dumped.behind(b):
            out[key]["read_before_dump"] = {"last_value": b.last_value, "is_called": b.is_called}
            moved.append(key)
    if moved:
        ctx.log.info("%s: %d sequence(s) moved back during the dump (setval, ALTER SEQUENCE RESTART): %s; the "
                     "manifest records the values the dump holds", db, len(moved), ", ".join(moved[:10]))
    return out


def _count_failure(exc: BaseException, target: PostgresTarget, db: str, tables: list[pg.SnapshotTable],
                   wait: float, ours: tuple[int, ...], locks: pg.LockTable) -> BackupError:
    if isinstance(exc, BackupError):
        return exc
    if pg.out_of_locks(pg.pg_error(exc)):
        return BackupError(f"counting rows in {db}: the server's lock table is full (out of shared memory): "
                           f"{locks.describe(db)}", locks.hint())
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        conflicts = _conflicts(target, db, [t.oid for t in tables], ours)
        return BackupError(f"counting rows in {db}: could not lock its tables within {human_duration(wait)} "
                           "(lock_wait_timeout)" + (": " + "; ".join(conflicts) if conflicts else ""),
                           _lock_wait_hint(wait))
    msg = f"counting rows in {db}: {pg.pg_error(exc)}"
    return BackupError(msg, pg.RECOVERY_CONFLICT_HINT if pg.RECOVERY_CONFLICT in msg else None)
