"""The history store: runs, findings, metric samples, job state, locks, audit trail.

SQLite by default (platform data dir, WAL mode), PostgreSQL when
``history: postgresql://…`` — one code path through SQLAlchemy 2.  Alembic
migrations are applied automatically when the store opens.

The occurrence key ``unique(job, scheduled_for)`` is how daemons sharing one
database claim work: whoever inserts the row owns the occurrence.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pwd
import sqlite3
import stat
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    Engine,
    Interval,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    literal,
    make_url,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from upkeeper.core import tables
from upkeeper.core.hostid import host_label
from upkeeper.core.task import Result
from upkeeper.errors import HistoryError
from upkeeper.redact import redact, redact_obj

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from upkeeper.core.models import AuditRow, DaemonRow, FindingRow, LockRow, RunRow

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("ok", "warn", "fail", "error", "skipped", "interrupted")
SUCCESS_STATES = ("ok", "warn")
FAILURE_STATES = ("fail", "error", "interrupted")
#: Triggers of the rows that stand for a job's scheduled occurrences (what catch-up reads back after a restart)
SCHEDULED_TRIGGERS = ("schedule", "catch-up", "deferred")
#: the key in a pending retry's or planned run's details once it came due outside its window and waits for the
#: opening (its value: that opening): a reload decides it again (:meth:`History.redecide_deferred`)
WINDOW_WAIT = "window_wait"
LOG_EXCERPT_MAX = 32 * 1024
#: The migration heads of this version (tests/core/test_history.py checks them against Alembic's
#: script directory).  A database already at these heads opens without importing Alembic.
SCHEMA_HEADS = frozenset({"backup_catalog", "daemon_loop", "notify_state_node", "run_streaks"})
#: the job_state row where history retention records the newest end of a run it deleted (job names start with
#: a letter or digit: no job's state)
RETENTION_STATE = ("_history", "runs_deleted_through")


@dataclass(frozen=True)
class DeletedRuns:
    """The history retention marker (:data:`RETENTION_STATE`) as read."""

    #: the newest end of a run retention deleted; when not ``exact``, the latest it can be (when the damaged
    #: marker was last written: every run deleted until then had finished by then)
    through: datetime
    #: False: the marker was damaged, runs before ``through`` may (not must) be gone
    exact: bool = True


def read_deleted_marker(value: Any, updated_at: Any) -> DeletedRuns:
    """The marker row's ``value`` and ``updated_at`` as :class:`DeletedRuns` (never raises on a damaged value)."""
    if isinstance(value, str):
        try:
            when = _utc(datetime.fromisoformat(value))
        except (ValueError, OverflowError):
            when = None
        if when is not None:
            return DeletedRuns(when)
    try:
        when = _utc(updated_at)
    except (ValueError, TypeError, OverflowError):
        when = None
    return DeletedRuns(when if when is not None else datetime.now(UTC), exact=False)


def default_history_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("upkeeper", appauthor=False)) / "history.db"


def history_url(setting: str | None, base_dir: Path | None = None) -> str:
    """Turn the config's ``history`` setting into an SQLAlchemy URL."""
    if not setting:
        return "sqlite:///" + str(default_history_path())
    if setting.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + setting.split("://", 1)[1]
    if setting.startswith(("postgresql+", "sqlite:")):
        return setting
    p = Path(setting).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    return "sqlite:///" + str(p)


def process_identity(pid: int | None = None) -> str:
    """``node:pid:start-time`` — survives PID reuse when checking whether an owner still lives.  ``node`` is
    :func:`host_label` (``pid``: a process of this process's PID namespace)."""
    pid = pid or os.getpid()
    start = _linux_create_time(pid)
    if start is None:
        import psutil

        try:
            start = psutil.Process(pid).create_time()
        except psutil.Error:
            start = 0.0
    return f"{host_label()}:{pid}:{int(start)}"


def _linux_create_time(pid: int) -> float | None:
    """``psutil.Process(pid).create_time()`` computed as psutil does it on Linux, from /proc, without importing
    psutil (~10 ms of every ``upkeeper run``); None elsewhere or when /proc does not tell.

    Every process's identity must come out the same whichever computes it (:func:`owner_alive` compares it
    with psutil's): the same floats, added in the same order (tests/core/test_history.py checks)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        with open("/proc/stat", "rb") as fh:
            btime = next(float(line.split()[1]) for line in fh if line.startswith(b"btime"))
        return float(fields[19]) / os.sysconf("SC_CLK_TCK") + btime
    except (OSError, IndexError, ValueError, StopIteration):
        return None


def owner_alive(owner: str | None, node: str) -> bool | None:
    """True/False for owners on this node; None when the owner lives on another node (or in another PID
    namespace of this host: :func:`host_label`).

    An owner is a process identity (``node:pid:start``), optionally followed by ``/run-id``
    for locks held on behalf of one run.
    """
    if not owner:
        return False
    try:
        onode, spid, sctime = owner.split("/", 1)[0].rsplit(":", 2)
        pid, ctime = int(spid), int(sctime)
    except ValueError:
        return False
    if onode != host_label():
        return None
    import psutil

    try:
        p = psutil.Process(pid)
        return int(p.create_time()) == ctime and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


#: The summary (its beginning) of an occurrence skipped because the job's previous run was still running (the
#: daemon's overlap check, or the job lock held by a run of another process or node): the missed-run alarm counts
#: such an occurrence as covered by the run that ran through it (:func:`upkeeper.notify.checks.find_missed`)
OVERLAP_SKIP = "skipped: the previous run of this job is still running"


def stopped_on_request(status: str, details: dict[str, Any] | None) -> bool:
    """A run interrupted because upkeeper was asked to stop (``details.stopped``: SIGTERM/SIGINT of the daemon or
    of ``upkeeper run``, ``systemctl stop``; see :class:`~upkeeper.core.runner.FinishedRun`): an operator's
    decision, neither an outcome nor a failure.  It counts in no failure streak, success rate or missed-run
    check, and ends none; ``status`` and ``history`` show it as stopped."""
    return status == "interrupted" and isinstance(details, dict) and bool(details.get("stopped"))


@dataclass(frozen=True)
class Streak:
    """A job's current failure streak (:meth:`History.failure_streaks`)."""

    failures: int  # failed runs (fail, error, interrupted — not stopped on request) since the latest successful one
    since: datetime | None  # when the first of them finished (None: not failing)
    last_success: datetime | None  # when the latest successful run finished (None: none recorded)
    pruned: int = 0  # how many of ``failures`` history retention deleted (counted in ``run_streaks``)


def _utc(ts: datetime | None) -> datetime | None:
    """A timestamp from a raw Core select (SQLite's ``min()`` returns text) as an aware UTC datetime."""
    if ts is None:
        return None
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts)
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


@dataclass
class NewRun:
    job: str
    task: str
    target: str | None
    scheduled_for: datetime
    due_at: datetime | None = None
    trigger: str = "schedule"
    attempt: int = 1
    status: str = "queued"
    summary: str = ""
    details: dict[str, Any] | None = None


def _create_private(db_path: Path) -> None:
    """A new SQLite history file made empty with mode 0600 (its directories, when missing, 0700), before
    SQLite opens it: SQLite would create it with 0644 (under the usual umask), and a history holds findings, log
    excerpts, host and table names -- not for every local user to read.  SQLite gives the ``-wal`` and ``-shm``
    files the database file's mode.  An existing file is left as it is (an admin may have made it 0640 for a
    group)."""
    db_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(db_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


class _SQLiteFileLock:
    """Process-level lock beside a SQLite file, held while migrations run."""

    def __init__(self, db_path: Path) -> None:
        self.path = db_path.with_name(db_path.name + ".migrate.lock")

    def __enter__(self) -> None:
        self.fh = os.fdopen(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a")
        fcntl.flock(self.fh, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


#: After this process last failed to reach or write the history (a PostgreSQL restart, a full disk): how long it
#: takes no lease that ran out, and no other node's stale heartbeat, for a sign that their process died -- they
#: could not renew them either (leases are renewed every 30 s, heartbeats every ``daemon.heartbeat``).  And, as a
#: process that started after an outage never saw it: how long after it ran out a lease whose holder cannot be
#: checked here (another node's, a live process's) still says its holder may live, and how long past
#: ``stale_after`` a heartbeat does (:meth:`History.lease_held`, :meth:`History.heartbeat_fresh`)
LEASE_GRACE = timedelta(minutes=2)

#: How far this node's clock may be from a PostgreSQL history's server's before the daemon (at its start) and
#: ``upkeeper status`` say so (:func:`clock_skew_warning`): leases and heartbeats are on the server's clock, but
#: this node's schedules, run times and logs are on its own.  Source: upkeeper (NTP keeps clocks within
#: milliseconds; 30 s is no jitter of a synced clock, and still small beside a schedule's minute)
CLOCK_SKEW_WARN = timedelta(seconds=30)

#: SQLite's errors of a history it cannot write (see :meth:`History.recently_lost`)
_SQLITE_LOST = ("database is locked", "disk i/o error", "disk is full", "readonly database", "unable to open")

#: SQLite: how long a transaction waits for another process's (BEGIN IMMEDIATE: every transaction takes the
#: write lock) before it fails with :meth:`History.locked_error`
SQLITE_BUSY_TIMEOUT = 60.0

#: libpq settings of a PostgreSQL history's connections, each unless the history URL sets it
#: (``postgresql://…?connect_timeout=30``).  Without them a server that stops answering without closing the
#: connection -- a host gone, a network dropping packets, a server or pooler that accepts and never answers --
#: hangs a call for as long as the kernel keeps the connection: a new connection for ever, a query ~15 min.
#: With them a new connection fails after 10 s and an open one within about a minute (keepalives probe after
#: 30 s of silence, 3 probes 10 s apart; data unacknowledged for 60 s fails the connection), and the caller
#: takes the history for lost (it retries; the daemon goes on).  Source: upkeeper; libpq's own defaults are no
#: connect timeout and the kernel's keepalive settings (first probe after 2 h of silence on Linux)
PG_CONNECT_DEFAULTS: dict[str, str] = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    "tcp_user_timeout": "60000",
}


class History:
    """Access to the history database.  Thread-safe; one instance per process is enough.

    ``busy_timeout``: SQLite only, the seconds a transaction waits for the lock another process holds
    (:data:`SQLITE_BUSY_TIMEOUT`; the tests shorten it)."""

    def __init__(self, url: str, *, migrate: bool = True, busy_timeout: float = SQLITE_BUSY_TIMEOUT) -> None:
        self.url = url
        self.dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
        self.busy_timeout = busy_timeout
        self.sqlite_path: Path | None = None
        self._local = threading.local()
        self._stmts: dict[str, Any] | None = None  # prepared Core statements of the hot paths
        self._hot: Connection | None = None  # SQLite: the connection of the hot path (see _core)
        #: see :data:`LEASE_GRACE` (the tests shorten it) and :meth:`recently_lost`
        self.lease_grace = LEASE_GRACE
        self._lost_at: float | None = None  # time.monotonic() of the last failure to reach or write the history
        self._warned_marker = False  # a damaged retention marker was logged (:meth:`deleted_runs`)
        try:
            self.engine = self._make_engine(url)
            if migrate:
                self.migrate()
        except HistoryError:
            raise
        except SQLAlchemyError as exc:
            locked = self.locked_error(exc)
            if locked is not None:
                raise locked from None
            denied = self._denied_error()
            if denied is not None:
                raise denied from None
            raise HistoryError(
                f"cannot open history database {redact(url)}: "
                f"{redact(str(getattr(exc, 'orig', None) or exc)).strip()}",
                "Try: check the 'history' setting and that the database is reachable",
            ) from None
        except OSError as exc:
            raise HistoryError(
                f"cannot open history database {redact(url)}: {exc}",
                "Try: check the 'history' setting and the directory permissions",
            ) from None
        self._sessionmaker: sessionmaker[Session] | None = None  # the ORM: imported on first use (see session)
        # One lock per History instance: the threads of one daemon take turns without SQLite's
        # sleeping busy handler; separate instances (daemons, processes) contend through SQLite.
        self._turn: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if self.dialect == "sqlite" else contextlib.nullcontext()
        )

    # -- set-up ---------------------------------------------------------------------------

    def _make_engine(self, url: str) -> Engine:
        engine = self._make_dialect_engine(url)
        dbapi = engine.dialect.dbapi
        lost = tuple(c for c in (getattr(dbapi, "OperationalError", None), getattr(dbapi, "InterfaceError", None))
                     if isinstance(c, type))

        @event.listens_for(engine, "handle_error")
        def _on_error(ctx: Any) -> None:
            # the server unreachable or gone mid-transaction, the disk full or read-only, the file locked too long
            # (not SQLite's "no such table" of a new file, also an OperationalError)
            exc = ctx.original_exception
            if ctx.is_disconnect or (isinstance(exc, lost) and (
                    self.dialect != "sqlite" or any(m in str(exc).lower() for m in _SQLITE_LOST))):
                self._lost_at = time.monotonic()

        return engine

    def recently_lost(self) -> bool:
        """Did this process fail to reach or write the history within :attr:`lease_grace`?  Then the others
        could not renew their locks' leases or write their heartbeats either: an expired lease or a stale
        heartbeat says nothing of their death until they had the time to (:meth:`recover_orphans`,
        :meth:`acquire_lock`)."""
        lost = self._lost_at
        return lost is not None and time.monotonic() - lost < self.lease_grace.total_seconds()

    # -- the history's clock ----------------------------------------------------------------

    def _db_clock(self) -> Any:
        """PostgreSQL: the database server's clock, as SQL (``clock_timestamp()``, evaluated where it is used).

        Nodes sharing a PostgreSQL history judge each other's leases and heartbeats: each stamping them with its
        own clock, a node whose clock ran minutes ahead took a live run's lock for a dead one's (the job run twice
        at once).  Every lease and heartbeat is stamped, and compared, on the server's clock instead; a SQLite
        history is one host's file, on that host's clock."""
        return func.clock_timestamp(type_=tables.UTCDateTime())

    def _stamp(self, after: timedelta = timedelta(0)) -> Any:
        """The instant ``after`` from now on the history's clock, as a value to write: on PostgreSQL the server's
        (SQL, see :meth:`_db_clock`), on SQLite this process's."""
        if self.dialect == "postgresql":
            return self._db_clock() + literal(after, Interval()) if after else self._db_clock()
        return datetime.now(UTC) + after

    def _on_history_clock(self, at: datetime, here: datetime) -> Any:
        """``at``, an instant of this process's clock (whose now is ``here``), as a value to write on the history's
        clock: on PostgreSQL the server's now less ``at``'s age here (its age is what this node knows for sure),
        on SQLite ``at``."""
        if self.dialect == "postgresql":
            return self._db_clock() - literal(here - at, Interval())
        return at

    def _now_in(self, conn: Connection) -> datetime:
        """Now on the history's clock (PostgreSQL: the server's, one round trip on ``conn``; SQLite: this
        process's)."""
        if self.dialect == "postgresql":
            now = _utc(conn.execute(select(self._db_clock())).scalar_one())
            assert now is not None
            return now
        return datetime.now(UTC)

    def now(self) -> datetime:
        """Now on the history's clock, the one leases and heartbeats are stamped with: PostgreSQL's server's (a
        round trip), or this process's for a SQLite history."""
        if self.dialect != "postgresql":
            return datetime.now(UTC)
        with self._core() as conn:
            return self._now_in(conn)

    def clock_skew(self) -> tuple[datetime, datetime, timedelta] | None:
        """``(this node's time, the history database's time, how far this node's clock is ahead)`` for a
        PostgreSQL history, measured once (the server's time read between two readings here, whose midpoint
        stands for when it was read); None for a SQLite history (its clock is this node's)."""
        if self.dialect != "postgresql":
            return None
        with self._core() as conn:
            before = datetime.now(UTC)
            server = self._now_in(conn)
            after = datetime.now(UTC)
        here = before + (after - before) / 2
        return here, server, here - server

    def lease_held(self, expires_at: datetime, now: datetime) -> bool:
        """May the holder of a lease that runs out at ``expires_at`` still live (unless known dead otherwise: a
        process of this node gone)?  Until ``lease_grace`` after it ran out: the history may have been down
        meanwhile -- its holder could not renew it -- and a process started after the outage (a cron
        ``upkeeper run``, a daemon started on another node) cannot know (:meth:`recently_lost` is blind to it).
        ``now`` is on the history's clock (:meth:`now`), as ``expires_at`` is."""
        return expires_at + self.lease_grace > now

    def heartbeat_fresh(self, last_seen: datetime | None, now: datetime, stale_after: timedelta) -> bool:
        """Does a daemon heartbeat last written at ``last_seen`` say that daemon lives: within ``stale_after``,
        plus ``lease_grace`` for an outage of the history that kept it from writing one (see :meth:`lease_held`).
        ``now`` is on the history's clock (:meth:`now`), as heartbeats are stamped."""
        return last_seen is not None and now - last_seen < stale_after + self.lease_grace

    def _make_dialect_engine(self, url: str) -> Engine:
        if self.dialect == "sqlite":
            path = url.split("sqlite:///", 1)[1] if "sqlite:///" in url else ""
            if path and path != ":memory:":
                _create_private(Path(path))
                self.sqlite_path = Path(path)
            else:
                self.sqlite_path = None
            busy_ms = round(self.busy_timeout * 1000)
            engine = create_engine(url, connect_args={"timeout": self.busy_timeout, "check_same_thread": False})

            @event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
                dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
                cur = dbapi_conn.cursor()
                # before anything writes the file's header: a new database frees the pages of pruned
                # history back to the file system (core/retention.py); on an existing one this is a no-op
                cur.execute("PRAGMA auto_vacuum=INCREMENTAL")
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute(f"PRAGMA busy_timeout={busy_ms}")
                cur.close()

            @event.listens_for(engine, "begin")
            def _on_begin(conn: Any) -> None:
                # IMMEDIATE takes the write lock up front, so two daemons never deadlock upgrading a read
                # transaction, and none is ever upgraded after another committed (no SQLITE_BUSY_SNAPSHOT): every
                # transaction of this code, read-only ones too, is serialized, and waits up to busy_timeout for
                # another's (WAL keeps other readers, such as the sqlite3 shell, unblocked).
                # (straight to the driver: exec_driver_sql costs ~50 µs per transaction, at every run)
                conn.connection.dbapi_connection.execute("BEGIN IMMEDIATE")

            return engine
        self.sqlite_path = None
        given = make_url(url).query
        defaults = {k: v for k, v in PG_CONNECT_DEFAULTS.items() if k not in given}
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, connect_args=defaults)

    def migrate(self) -> None:
        """Apply pending Alembic migrations (all heads), serialized between processes."""
        if self._current_heads() == SCHEMA_HEADS:
            return
        from alembic.config import Config as AlembicConfig
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        script = ScriptDirectory.from_config(cfg)
        heads = set(script.get_heads())
        with self.engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
            conn.rollback()
        if current == heads:
            return
        unknown = sorted(r for r in current if r not in {s.revision for s in script.walk_revisions()})
        if unknown:
            from upkeeper import __version__

            raise HistoryError(
                f"history database {redact(self.url)} has schema revision(s) {', '.join(unknown)} that "
                f"upkeeper {__version__} does not know: a newer upkeeper has upgraded it",
                "Try: upgrade upkeeper on this machine, or point 'history' at another database",
            )
        if self.dialect == "sqlite" and self.sqlite_path is not None:
            lock: contextlib.AbstractContextManager[None] = _SQLiteFileLock(self.sqlite_path)
        else:
            lock = contextlib.nullcontext()
        from alembic import command

        with lock, self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(727274)"))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "heads")

    def _current_heads(self) -> frozenset[str] | None:
        """The revisions recorded in ``alembic_version``, or None when there is no such table yet."""
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
                conn.rollback()
        except (SQLAlchemyError, sqlite3.OperationalError) as exc:
            locked = self.locked_error(exc)
            if locked is not None:  # not a missing table: another process holds the file (no second wait)
                raise locked from None
            return None
        return frozenset(rows)

    def locked_error(self, exc: BaseException) -> HistoryError | None:
        """``exc`` as the error to show when it is SQLite's "database is locked" (another process held the
        history's write lock for all of :attr:`busy_timeout`), else None.  It used to surface as "internal
        error: OperationalError", naming neither the file nor who holds it."""
        orig = getattr(exc, "orig", None) or exc
        if not (self.dialect == "sqlite" and isinstance(orig, sqlite3.OperationalError)
                and "database is locked" in str(orig)):
            return None
        path = str(self.sqlite_path) if self.sqlite_path is not None else redact(self.url)
        return HistoryError(
            f"history database {path} is locked: another upkeeper process (a daemon, an 'upkeeper run', a "
            f"backups or history command) has held its write lock for over {self.busy_timeout:g} s",
            f"Try: 'fuser -v {path}' (or 'lsof {path}') lists the processes that have it open; let the one "
            "holding it finish, or stop it, then run this again",
        )

    def _denied_error(self) -> HistoryError | None:
        """The error to show when this user may not write the SQLite history (its file, -wal, -shm or their
        directory): one made by root, or by the user the daemon runs as, opened by another user.  SQLite says
        only "attempt to write a readonly database" or "unable to open database file"."""
        path = self.sqlite_path
        if path is None:
            return None
        def who(uid: int) -> str:
            try:
                return pwd.getpwuid(uid).pw_name
            except KeyError:
                return f"uid {uid}"

        me = who(os.geteuid())
        files = [Path(f"{path}{x}") for x in ("", "-wal", "-shm")]
        denied: list[str] = []
        owners: set[str] = set()
        fixes: list[str] = []
        for p in (*files, path.parent):
            try:
                st = p.stat()
            except OSError:
                continue
            if os.access(p, os.W_OK | (os.X_OK if p == path.parent else 0)):
                continue
            owners.add(who(st.st_uid))
            denied.append(f"{p} ({who(st.st_uid)}'s, mode {stat.S_IMODE(st.st_mode):04o})")
            if p == path.parent:  # SQLite makes the -wal and -shm files beside the database
                fixes.append(f"chown {me} {p} (SQLite writes its -wal and -shm files there), or move the history "
                             f"into a directory of {me}'s")
            elif not fixes:
                fixes.append("chown " + " ".join([me, *(str(f) for f in files if f.exists())]))
        if not denied:
            return None
        return HistoryError(
            f"history database {path}: {me}, whom upkeeper runs as, may not write " + ", ".join(denied),
            f"Try: run upkeeper as {' or '.join(sorted(owners))}, or give the history to {me}: "
            + "; ".join(fixes) + f"; or point 'history' at a file of {me}'s")

    @contextlib.contextmanager
    def _unlocked(self) -> Iterator[None]:
        """Raise SQLite's "database is locked" as :meth:`locked_error`."""
        try:
            yield
        except (OperationalError, sqlite3.OperationalError) as exc:  # (the driver's own: raw connections)
            locked = self.locked_error(exc)
            if locked is None:
                raise
            raise locked from None

    def close(self) -> None:
        with self._turn:
            if self._hot is not None:
                with contextlib.suppress(Exception):
                    self._hot.close()
                self._hot = None
        self.engine.dispose()

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on error.

        On SQLite, the threads sharing this instance take turns through a lock: SQLite's own busy
        handler would make them sleep in 1–100 ms steps instead.

        The ORM (``sqlalchemy.orm`` and :mod:`upkeeper.core.models`, ~70 ms to import) is loaded here, on
        first use: the per-run path (``upkeeper run``) records its runs with Core statements only.
        """
        if self._sessionmaker is None:
            from sqlalchemy.orm import sessionmaker

            import upkeeper.core.models  # noqa: F401 - the mapped classes, before the first ORM query

            self._sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        with self._unlocked(), self._turn, self._sessionmaker() as s, s.begin():
            yield s

    @contextlib.contextmanager
    def _core(self) -> Iterator[Connection]:
        """A transaction on a plain Core connection, for the per-run hot path.

        An ORM session per transaction cost about a third of a burst's time, and on SQLite a pool
        checkout and checkin per transaction another tenth: there the threads, which take turns
        anyway, share one connection kept open (dropped after any error, so the next is fresh).
        """
        if self.dialect != "sqlite":
            with self.engine.begin() as conn:
                yield conn
            return
        with self._unlocked(), self._turn:
            hot = self._hot
            if hot is None or hot.closed or hot.invalidated:
                hot = self._hot = self.engine.connect()
            conn = hot
            try:
                with conn.begin():
                    yield conn
            except BaseException:
                self._hot = None
                with contextlib.suppress(Exception):
                    conn.close()
                raise

    def transaction(self) -> contextlib.AbstractContextManager[Connection]:
        """A Core transaction, as the per-run path's (:meth:`_core`), for the other stores of this database
        that keep the ORM out of ``upkeeper run`` (the backup catalog): committed on success, rolled back on error;
        on SQLite serialized with this instance's other transactions, and ``BEGIN IMMEDIATE``."""
        return self._core()

    # -- runs -----------------------------------------------------------------------------

    def claim(self, runs: Sequence[NewRun], owner: str, node: str) -> list[tuple[NewRun, int]]:
        """Insert runs; an occurrence someone else already inserted is silently not claimed.

        Returns the runs this caller owns, with their ids.
        """
        if not runs:
            return []
        params: list[dict[str, Any]] = [{
            "job": r.job, "task": r.task, "target": r.target, "scheduled_for": r.scheduled_for,
            "due_at": r.due_at or r.scheduled_for, "status": r.status, "summary": redact(r.summary),
            "trigger": r.trigger, "attempt": r.attempt, "node": node, "owner": owner, "log_excerpt": "",
            "metrics": {}, "artifacts": [], "details": r.details or {},
            "finished_at": (r.scheduled_for if r.status in FINAL_STATES else None),
        } for r in runs]
        with self._core() as conn:
            if len(runs) == 1:
                rid = conn.execute(self._prepared()["claim"], params[0]).scalar()
                return [(runs[0], int(rid))] if rid is not None else []
            # a burst in a few multi-row INSERTs (SQLAlchemy's "insertmanyvalues"); the rows that
            # conflicted return nothing, so the inserted ones say which occurrence they are
            got = conn.execute(self._prepared()["claim_many"], params).all()
        ids = {(job, when): int(rid) for rid, job, when in got}
        won: list[tuple[NewRun, int]] = []
        for r in runs:
            rid = ids.pop((r.job, r.scheduled_for), None)  # pop: a duplicate in ``runs`` is not won twice
            if rid is not None:
                won.append((r, rid))
        return won

    def create_run(self, run: NewRun, owner: str, node: str) -> int | None:
        got = self.claim([run], owner, node)
        return got[0][1] if got else None

    def claim_pending(self, now: datetime, owner: str, node: str, jobs: Sequence[str]) -> list[RunRow]:
        """Claim ``pending`` runs (retries, deferred and planned runs) that are due now."""
        from upkeeper.core.models import RunRow

        if not jobs:
            return []
        known = set(jobs)
        with self.session() as s:
            # pending runs are few (retries, deferred, planned): filter them by job here rather than
            # send every job name (10,000 in a big fleet) as query parameters every few seconds
            rows = s.scalars(
                select(RunRow)
                .where(RunRow.status == "pending", RunRow.due_at <= now)
                .order_by(RunRow.due_at)
            ).all()
            claimed = []
            for row in rows:
                if row.job not in known:
                    continue
                # compare-and-set on the row as read: still pending, and still due then (another daemon may have
                # claimed it and deferred it again since: pending, but due later)
                res = s.execute(
                    update(RunRow)
                    .where(RunRow.id == row.id, RunRow.status == "pending", RunRow.due_at == row.due_at)
                    .values(status="queued", owner=owner, node=node)
                )
                if res.rowcount == 1:  # type: ignore[attr-defined]
                    row.status, row.owner, row.node = "queued", owner, node
                    claimed.append(row)
            return claimed

    def pending_run(self, job: str, trigger: str | None = None) -> RunRow | None:
        """The job's earliest pending run (optionally of one trigger), if any."""
        from upkeeper.core.models import RunRow

        q = select(RunRow).where(RunRow.job == job, RunRow.status == "pending")
        if trigger:
            q = q.where(RunRow.trigger == trigger)
        with self.session() as s:
            return s.scalars(q.order_by(RunRow.due_at).limit(1)).first()

    def abandon_pending(self, node: str, jobs: Collection[str], now: datetime) -> list[tuple[int, str, str]]:
        """Record ``skipped`` the ``pending`` runs (retries and deferred runs waiting for a window, planned runs)
        this ``node`` left of jobs not among ``jobs`` (those its daemon now serves: the job was removed from its
        config, or disabled).  No daemon claims them (:meth:`claim_pending` skips unknown jobs): left, they stayed
        pending forever — and fired the moment the job came back, however old.  Another node's pending runs are left
        to it (a shared history: its config may still have the job).  Returns ``(run id, job, trigger)`` of each."""
        runs = tables.runs
        known = set(jobs)
        done: list[tuple[int, str, str]] = []
        with self._core() as conn:  # pending runs are few: filtered here by job, not by a query parameter per job
            rows = conn.execute(select(runs.c.id, runs.c.job, runs.c.trigger, runs.c.attempt)
                                .where(runs.c.status == "pending", runs.c.node == node)).all()
            for r in rows:
                if r.job in known:
                    continue
                what = f"retry {r.attempt}" if r.trigger == "retry" else f"{r.trigger} run"
                res = conn.execute(update(runs).where(runs.c.id == r.id, runs.c.status == "pending").values(
                    status="skipped", finished_at=now,
                    summary=f"{what} skipped: job {r.job!r} is no longer in this node's config, or is disabled"))
                if res.rowcount == 1:
                    done.append((int(r.id), str(r.job), str(r.trigger)))
        return done

    def redecide_deferred(self, node: str, now: datetime) -> int:
        """Make this ``node``'s runs waiting for a window's opening due ``now``, so the daemon decides them again
        at once: after a reload, the window may open earlier, or be open now.  Those are the deferred occurrences,
        and the retries and planned runs that came due outside their window (marked :data:`WINDOW_WAIT` in their
        details): their ``due_at`` is the old window's opening, which a policy computed.  A retry still in its
        backoff, or a run planned for later, is the job's or the user's time, and is left as it is.
        Returns how many."""
        runs = tables.runs
        with self._core() as conn:
            res = conn.execute(update(runs).where(runs.c.status == "pending", runs.c.trigger == "deferred",
                                                  runs.c.node == node, runs.c.due_at > now).values(due_at=now))
            n = int(res.rowcount)
            held = conn.execute(select(runs.c.id, runs.c.details).where(
                runs.c.status == "pending", runs.c.trigger.in_(("retry", "planned")), runs.c.node == node,
                runs.c.due_at > now)).all()
            for rid, details in held:
                if isinstance(details, dict) and details.get(WINDOW_WAIT):
                    # compare-and-set: a daemon that claimed it meanwhile has it
                    got = conn.execute(update(runs).where(runs.c.id == rid, runs.c.status == "pending")
                                       .values(due_at=now))
                    n += int(got.rowcount)
            return n

    def cancel_pending(self, run_id: int, now: datetime, summary: str, details: dict[str, Any]) -> bool:
        """Record the pending run ``run_id`` skipped (``upkeeper cancel``), if it is still pending: compare-and-set,
        since a daemon may claim it at the same moment (then it runs, and this returns False)."""
        runs = tables.runs
        with self._core() as conn:
            res = conn.execute(update(runs).where(runs.c.id == run_id, runs.c.status == "pending").values(
                status="skipped", finished_at=now, summary=summary, details=details))
            return int(res.rowcount) == 1

    def set_status(self, run_id: int, status: str, **values: Any) -> None:
        runs = tables.runs
        with self._core() as conn:
            conn.execute(update(runs).where(runs.c.id == run_id).values(status=status, **values))

    def start_run(self, run_id: int, started_at: datetime, owner: str) -> None:
        self.set_status(run_id, "running", started_at=started_at, owner=owner)

    def finish_run(
        self,
        run_id: int,
        *,
        status: str,
        result: Result | None,
        finished_at: datetime,
        started_at: datetime | None,
        log_excerpt: str = "",
        metrics_retention: timedelta | None = None,
        details: dict[str, Any] | None = None,
        release_locks_of: str | None = None,
        job: str | None = None,
        target: str | None = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        """Record a run's outcome with its findings and metric samples, atomically.

        ``release_locks_of``: also release every lock this holder has, in the same transaction.
        ``job`` and ``target``: the run's, when the caller knows them (saves reading the row back).
        ``state``: the job state the run wrote (key -> value), saved in the same transaction, so that
        cursors never move on without the figures of the lines they passed.
        """
        summary = result.summary if result else ""
        st = self._prepared()
        with self._core() as conn:
            if release_locks_of is not None:
                conn.execute(st["release"], {"holder": release_locks_of})
            old_details: dict[str, Any] | None = None
            if job is None or details:
                row = conn.execute(st["get"], {"rid": run_id}).first()
                if row is None:
                    raise HistoryError(f"run {run_id} vanished from history")
                job, target, old_details = row
            values: dict[str, Any] = {
                "status": status, "summary": redact(summary)[:4000], "finished_at": finished_at,
                "log_excerpt": redact(log_excerpt)[-LOG_EXCERPT_MAX:],
            }
            if started_at is not None:
                values["started_at"] = started_at
                values["duration"] = max(0.0, (finished_at - started_at).total_seconds())
            if details:
                values["details"] = redact_obj({**(old_details or {}), **details})
            if result is not None:
                values["metrics"] = {k: float(v) for k, v in result.metrics.items()}
                values["artifacts"] = redact_obj(list(result.artifacts))
            if conn.execute(st["update"], {"rid": run_id, **values}).rowcount != 1:
                raise HistoryError(f"run {run_id} vanished from history")
            if state:
                now = datetime.now(UTC)
                conn.execute(st["state"], [{"job": job, "key": k, "value": jsonable(v), "updated_at": now}
                                           for k, v in state.items()])
            if result is None:
                return
            if result.findings:
                conn.execute(st["finding"], [
                    {"run_id": run_id, "job": job, "check": f.check, "severity": f.severity.value,
                     "subject": redact(str(f.subject)), "message": redact(f.message),
                     "remediation": redact(f.remediation), "value": f.value, "threshold": f.threshold,
                     "data": redact_obj(jsonable(f.data)), "ts": finished_at}
                    for f in result.findings
                ])
            if result.metrics:
                conn.execute(st["metric"], [
                    {"run_id": run_id, "job": job, "target": target, "name": name, "value": float(value),
                     "ts": finished_at}
                    for name, value in result.metrics.items()
                ])

    def _prepared(self) -> dict[str, Any]:
        """Statements of the per-run hot path, built once: only their parameters change.

        Building a fresh statement per call (``.values(...)`` and the ORM unit of work) cost about
        1 ms each; a daemon's burst of 1,000 due runs made that seconds of lateness.
        """
        if self._stmts is None:
            # only this history's dialect: importing sqlalchemy.dialects.postgresql (and the driver
            # modules its package imports) costs a SQLite history's CLI ~45 ms
            ins = dialect_insert(self.dialect)
            locks, runs = tables.locks, tables.runs
            self._stmts = {
                "claim": ins(runs).on_conflict_do_nothing(index_elements=["job", "scheduled_for"])
                .returning(runs.c.id),
                "claim_many": ins(runs).on_conflict_do_nothing(index_elements=["job", "scheduled_for"])
                .returning(runs.c.id, runs.c.job, runs.c.scheduled_for),
                # PostgreSQL: the lease stamped on the server's clock (:meth:`_db_clock`), in the same statement
                "lock_insert": (ins(locks).values(acquired_at=self._db_clock(),
                                                  expires_at=self._db_clock() + bindparam("ttl", type_=Interval()))
                                if self.dialect == "postgresql" else ins(locks))
                .on_conflict_do_nothing(index_elements=["name"]),
                "run_start": update(runs).where(runs.c.id == bindparam("rid")).values(
                    status=bindparam("status"), started_at=bindparam("started_at"), owner=bindparam("owner")),
                "release": delete(locks).where(locks.c.owner == bindparam("holder")),
                "get": select(runs.c.job, runs.c.target, runs.c.details).where(runs.c.id == bindparam("rid")),
                "update": update(runs).where(runs.c.id == bindparam("rid")),
                "finding": insert(tables.findings),
                "state": _upsert_state(ins(tables.job_state)),
                "metric": insert(tables.metric_samples),
            }
        return self._stmts

    def record_skip(
        self, job: str, task: str, target: str | None, scheduled_for: datetime, reason: str, *,
        trigger: str, owner: str, node: str, details: dict[str, Any] | None = None,
    ) -> int | None:
        """Record an occurrence that was not run (blackout, overlap, missed while down)."""
        run = NewRun(job=job, task=task, target=target, scheduled_for=scheduled_for, trigger=trigger,
                     status="skipped", summary=reason, details=details)
        return self.create_run(run, owner, node)

    def get_run(self, run_id: int) -> RunRow | None:
        """The run with this id; None when there is none -- as for an id no database column can hold (a
        mistyped 'upkeeper show 99999999999999999999' ended in an OverflowError of SQLite's INTEGER)."""
        from upkeeper.core.models import RunRow

        if not -(2**63) <= run_id < 2**63:
            return None
        with self.session() as s:
            return s.get(RunRow, run_id)

    def findings_for(self, run_id: int) -> list[FindingRow]:
        from upkeeper.core.models import FindingRow

        with self.session() as s:
            return list(s.scalars(select(FindingRow).where(FindingRow.run_id == run_id).order_by(FindingRow.id)))

    def runs(
        self,
        *,
        job: str | None = None,
        since: datetime | None = None,
        before: datetime | None = None,
        limit: int = 50,
        statuses: Sequence[str] | None = None,
    ) -> list[RunRow]:
        """Runs, newest occurrence first: of ``job``, scheduled at or after ``since`` and before ``before``.

        ``limit`` keeps the newest: a period in the past needs ``before``, or the runs after it fill the limit
        (with ``job``, both bounds are read through the ``(job, scheduled_for)`` unique index)."""
        from upkeeper.core.models import RunRow

        q = select(RunRow)
        if job:
            q = q.where(RunRow.job == job)
        if since:
            q = q.where(RunRow.scheduled_for >= since)
        if before:
            q = q.where(RunRow.scheduled_for < before)
        if statuses:
            q = q.where(RunRow.status.in_(list(statuses)))
        q = q.order_by(RunRow.scheduled_for.desc(), RunRow.id.desc()).limit(limit)
        with self.session() as s:
            return list(s.scalars(q))

    def runs_deleted_through(self) -> datetime | None:
        """The newest ``finished_at`` of a run history retention deleted (None: it never deleted one).

        Runs that finished after it are all still here; before it, some may be gone (pruning keeps a few).
        Readers of a window of runs (reports, rates) say so instead of taking gone runs for runs that never
        happened.  A damaged marker gives the latest instant it can stand for (:meth:`deleted_runs`)."""
        d = self.deleted_runs()
        return None if d is None else d.through

    def deleted_runs(self) -> DeletedRuns | None:
        """What history retention deleted (None: it never deleted a run).

        A damaged marker (not an ISO timestamp: edited by hand, a bad restore) is no proof that the history
        is complete: the runs deleted then finished before it was last written, so that instant stands in,
        marked ``exact=False`` (its readers say the history may be incomplete), and the next prune repairs
        it.  Logged once per history."""
        st = tables.job_state
        with self._core() as conn:
            row = conn.execute(select(st.c.value, st.c.updated_at)
                               .where(st.c.job == RETENTION_STATE[0], st.c.key == RETENTION_STATE[1])).first()
        if row is None:
            return None
        d = read_deleted_marker(row[0], row[1])
        if not d.exact and not self._warned_marker:
            self._warned_marker = True
            log.warning("history: the retention marker (job_state %s/%s) is damaged (%r): runs that finished up to "
                        "%s UTC may have been deleted; the next history prune repairs it",
                        *RETENTION_STATE, str(row[0])[:80], f"{d.through:%Y-%m-%d %H:%M}")
        return d

    def last_runs(self) -> dict[str, RunRow]:
        """The newest finished (or running) run of every job."""
        from upkeeper.core.models import RunRow

        sub = (
            select(RunRow.job, func.max(RunRow.id).label("mid"))
            .where(RunRow.status.notin_(["pending"]))
            .group_by(RunRow.job)
            .subquery()
        )
        with self.session() as s:
            rows = s.scalars(select(RunRow).join(sub, RunRow.id == sub.c.mid))
            return {r.job: r for r in rows}

    def last_scheduled(self) -> dict[str, datetime]:
        """Per job, the newest occurrence instant the scheduler has dealt with."""
        from upkeeper.core.models import RunRow

        q = (
            select(RunRow.job, func.max(RunRow.scheduled_for))
            .where(RunRow.trigger.in_(SCHEDULED_TRIGGERS))
            .group_by(RunRow.job)
        )
        with self.session() as s:
            out = {}
            for job, ts in s.execute(q):
                if ts is not None:
                    if isinstance(ts, str):  # SQLite max() returns the raw text
                        ts = datetime.fromisoformat(ts)
                    out[job] = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
            return out

    def stopped_occurrences(self) -> dict[str, RunRow]:
        """Per job whose newest scheduled occurrence row (the one :meth:`last_scheduled` reads) is a run
        interrupted because upkeeper was asked to stop (:func:`stopped_on_request`): that run.  A daemon
        starting runs it again (catch-up, see :meth:`upkeeper.core.daemon.Daemon.prepare`)."""
        from upkeeper.core.models import RunRow

        newest = (
            select(RunRow.job, func.max(RunRow.scheduled_for).label("newest"))
            .where(RunRow.trigger.in_(SCHEDULED_TRIGGERS))
            .group_by(RunRow.job)
            .subquery()
        )
        q = (
            select(RunRow)
            .join(newest, and_(RunRow.job == newest.c.job, RunRow.scheduled_for == newest.c.newest))
            .where(RunRow.status == "interrupted", RunRow.trigger.in_(SCHEDULED_TRIGGERS))
        )
        with self.session() as s:
            return {r.job: r for r in s.scalars(q) if stopped_on_request(r.status, r.details)}

    def consecutive_failures(self, job: str) -> int:
        return self.failure_streaks([job])[job].failures

    def failure_streaks(self, jobs: Sequence[str]) -> dict[str, Streak]:
        """Per job: its failed runs since its latest successful run, with when that streak began.  A run stopped
        on request (:func:`stopped_on_request`) is no failure, nor does it end a streak.

        Exact whatever their number, and whatever history retention deleted: the deleted failures of a
        streak are counted in ``run_streaks`` (:func:`upkeeper.core.retention.prune_history`), valid while
        the success they follow is still the job's latest.  One snapshot (on PostgreSQL, REPEATABLE READ),
        so a prune committing meanwhile is seen wholly or not at all: never counted twice, never lost.
        """
        runs, streaks = tables.runs, tables.run_streaks
        # built once, run per job (building a statement costs more than running it)
        job_is = runs.c.job == bindparam("job")
        last_ok = (select(runs.c.id, runs.c.finished_at)
                   .where(job_is, runs.c.status.in_(SUCCESS_STATES), runs.c.finished_at.is_not(None))
                   .order_by(runs.c.finished_at.desc(), runs.c.id.desc()).limit(1))
        hard = [s for s in FAILURE_STATES if s != "interrupted"]
        all_fails = select(func.count(), func.min(runs.c.finished_at)).where(
            job_is, runs.c.status.in_(hard), runs.c.finished_at.is_not(None))
        # interrupted runs (few) are read whole: those stopped on request (details.stopped) are no failures
        all_cut = select(runs.c.finished_at, runs.c.details).where(
            job_is, runs.c.status == "interrupted", runs.c.finished_at.is_not(None))
        at = bindparam("at", type_=runs.c.finished_at.type)
        after = or_(runs.c.finished_at > at, and_(runs.c.finished_at == at, runs.c.id > bindparam("rid")))
        fails_after = all_fails.where(after)
        cut_after = all_cut.where(after)
        out: dict[str, Streak] = {}
        with self._snapshot() as conn:
            carried_all = {r.job: r for r in conn.execute(select(streaks)).all()}  # a row per job at most
            for job in jobs:
                ok = conn.execute(last_ok, {"job": job}).first()
                args = {"job": job} if ok is None else {"job": job, "at": ok.finished_at, "rid": ok.id}
                n, first = conn.execute(all_fails if ok is None else fails_after, args).one()
                cut = [_utc(r.finished_at) for r in conn.execute(all_cut if ok is None else cut_after, args)
                       if not stopped_on_request("interrupted", r.details)]
                first = _utc(first)
                if cut:
                    n += len(cut)
                    first = min(t for t in (first, *cut) if t is not None)
                carried = carried_all.get(job)
                if carried is not None and carried.after_run_id != (ok.id if ok is not None else 0):
                    carried = None  # counted after a success that is no longer the latest: a finished streak
                since = first
                if carried is not None and carried.failures > 0:
                    n += carried.failures
                    old = _utc(carried.since)
                    since = old if since is None or (old is not None and old < since) else since
                out[job] = Streak(failures=int(n), since=since if n else None,
                                  last_success=_utc(ok.finished_at) if ok is not None else None,
                                  pruned=int(carried.failures) if carried is not None else 0)
        return out

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        """A read-only transaction that sees one state of the database throughout."""
        if self.dialect == "sqlite":  # transactions are serialized (BEGIN IMMEDIATE): one state anyway
            with self._core() as conn:
                yield conn
            return
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    def last_success(self, job: str) -> RunRow | None:
        from upkeeper.core.models import RunRow

        with self.session() as s:
            return s.scalars(
                select(RunRow)
                .where(RunRow.job == job, RunRow.status.in_(["ok", "warn"]))
                .order_by(RunRow.finished_at.desc())
                .limit(1)
            ).first()

    def success_started_since(self, job: str, since: datetime) -> RunRow | None:
        """The first successful run (ok, warn) of ``job``, whatever its trigger, that started at or after ``since``
        (None: none)."""
        from upkeeper.core.models import RunRow

        with self.session() as s:
            return s.scalars(
                select(RunRow)
                .where(RunRow.job == job, RunRow.status.in_(["ok", "warn"]), RunRow.started_at >= since)
                .order_by(RunRow.started_at, RunRow.id)
                .limit(1)
            ).first()

    def recover_orphans(self, node: str, stale_after: timedelta = timedelta(minutes=2)) -> list[int]:
        """Mark runs whose owner process died as ``interrupted``.  Returns their ids.

        Owners on this node are checked by PID and start time; owners on other nodes
        are presumed dead when no daemon instance of theirs has been seen recently.
        """
        now = datetime.now(UTC)
        fixed: list[int] = []
        runs = tables.runs
        with self._core() as conn:  # the usual answer is "none": no ORM (its import and first query: ~90 ms)
            if conn.execute(select(runs.c.id).where(runs.c.status.in_(ACTIVE_STATES)).limit(1)).first() is None:
                return []
        from upkeeper.core.models import DaemonRow, RunRow

        with self.session() as s:
            rows = s.scalars(select(RunRow).where(RunRow.status.in_(list(ACTIVE_STATES)))).all()
            if not rows:
                return []
            seen = {
                d.instance: d.last_seen
                for d in s.scalars(select(DaemonRow).where(DaemonRow.stopped_at.is_(None)))
            }
            # leases and heartbeats are judged on the clock they were stamped with (PostgreSQL: the server's)
            clock = self._now_in(s.connection()) if self.dialect == "postgresql" else now
            # every run holds its job's lock (``owner/run-id``), refreshed by its process's lock keeper: a
            # lease still running means the process lives — an ``upkeeper run`` from cron on another node
            # has no daemon heartbeat, and was taken for dead at once.  So does a lease that ran out less than
            # lease_grace ago (see lease_held): a process started after an outage of the history did not see it
            leased = {
                str(o).split("/", 1)[0]
                for o in s.scalars(select(tables.locks.c.owner)
                                   .where(tables.locks.c.expires_at > clock - self.lease_grace))
            }
            for row in rows:
                alive = owner_alive(row.owner, node)
                if alive is None:  # another node: trust its daemon heartbeat or its runs' lock leases
                    alive = (self.heartbeat_fresh(seen.get(row.owner or ""), clock, stale_after)
                             or (row.owner or "") in leased
                             or self.recently_lost())  # (after an outage: until it could write them again)
                if alive:
                    continue
                # compare-and-set: the run as read, still unfinished and its owner's (read committed: the owner may
                # have recorded its outcome and exited since, and its outcome stays)
                values: dict[str, Any] = {
                    "status": "interrupted", "finished_at": now,
                    "summary": (row.summary + "; " if row.summary else "")
                    + "interrupted: the process running it died before it finished"}
                if row.started_at is not None:
                    values["duration"] = (now - row.started_at).total_seconds()
                got = s.execute(update(runs).values(**values).where(
                    runs.c.id == row.id, runs.c.status.in_(ACTIVE_STATES), runs.c.owner.is_not_distinct_from(row.owner)))
                if got.rowcount == 1:  # type: ignore[attr-defined]
                    fixed.append(row.id)
        return fixed

    def interrupt_owned(self, owner: str, reason: str) -> list[int]:
        """Mark this owner's queued or running runs ``interrupted`` (daemon shutdown: a stop asked for,
        ``details.stopped``, see :func:`stopped_on_request`).

        Compare-and-set per run: a run of this owner recording its outcome at the same moment keeps it.  The
        details written back are those read plus ``stopped``, and none is lost: while a run is queued or running
        and this owner's, only :meth:`finish_run` changes its details, and it ends the run (the compare-and-set
        then fails)."""
        runs = tables.runs
        now = datetime.now(UTC)
        done: list[int] = []
        with self._core() as conn:
            rows = conn.execute(
                select(runs.c.id, runs.c.details).where(runs.c.owner == owner, runs.c.status.in_(ACTIVE_STATES))
            ).all()
            for rid, details in rows:
                got = conn.execute(
                    update(runs).where(runs.c.id == rid, runs.c.owner == owner, runs.c.status.in_(ACTIVE_STATES))
                    .values(status="interrupted", finished_at=now, summary=reason,
                            details={**(details or {}), "stopped": True})
                )
                if got.rowcount == 1:
                    done.append(int(rid))
        return sorted(done)

    # -- metrics --------------------------------------------------------------------------

    def metric_series(
        self,
        name: str,
        *,
        job: str | None = None,
        target: str | None = None,
        since: datetime | None = None,
        limit: int = 10000,
    ) -> list[tuple[datetime, float]]:
        m = tables.metric_samples  # Core: tasks read series in the worker, which need not import the ORM
        q = select(m.c.ts, m.c.value).where(m.c.name == name)
        if job:
            q = q.where(m.c.job == job)
        if target:
            q = q.where(m.c.target == target)
        if since:
            q = q.where(m.c.ts >= since)
        q = q.order_by(m.c.ts.desc()).limit(limit)
        with self._core() as conn:
            return sorted((ts, float(v)) for ts, v in conn.execute(q))

    def prune_metrics(self, job: str, older_than: datetime) -> int:
        return self.prune_metrics_bulk({job: older_than})

    def prune_metrics_bulk(self, cutoffs: dict[str, datetime]) -> int:
        """Delete metric samples older than each job's cutoff: one statement per distinct cutoff."""
        from upkeeper.core.models import MetricRow

        by_cutoff: dict[datetime, list[str]] = {}
        for job, cutoff in cutoffs.items():
            by_cutoff.setdefault(cutoff, []).append(job)
        n = 0
        with self.session() as s:
            for cutoff, jobs in by_cutoff.items():
                for i in range(0, len(jobs), 500):
                    res = s.execute(delete(MetricRow).where(MetricRow.job.in_(jobs[i:i + 500]),
                                                            MetricRow.ts < cutoff))
                    n += int(res.rowcount or 0)  # type: ignore[attr-defined]
        return n

    # -- job state ------------------------------------------------------------------------

    def get_state(self, job: str, key: str, default: Any = None) -> Any:
        st = tables.job_state  # Core: tasks read their state in the worker, which need not import the ORM
        with self._core() as conn:
            row = conn.execute(select(st.c.value).where(st.c.job == job, st.c.key == key)).first()
            return default if row is None else row[0]

    def set_state(self, job: str, key: str, value: Any) -> None:
        # one upsert: two processes writing a key first at once must not fail on the duplicate key
        with self._core() as conn:
            conn.execute(self._prepared()["state"],
                         {"job": job, "key": key, "value": jsonable(value), "updated_at": datetime.now(UTC)})

    # -- locks ----------------------------------------------------------------------------

    def acquire_lock(self, name: str, owner: str, node: str, ttl: timedelta, purpose: str = "") -> bool:
        """Take a named lock.  A lock whose owner died or whose lease expired is taken over."""
        try:
            with self._core() as conn:
                return self._take_lock(conn, name, owner, node, ttl, purpose)
        except IntegrityError:
            return False

    def _take_lock(self, conn: Connection, name: str, owner: str, node: str, ttl: timedelta, purpose: str) -> bool:
        """In Core (exclusive tasks take their target's lock on the per-run path, which has no ORM).  A lease that
        ran out is taken over at once only when its holder is known dead (a process of this node gone);
        otherwise once it ran out ``lease_grace`` ago (:meth:`lease_held`: the history may have been down, its
        holder could not renew it), and not while this process lost the history a moment ago
        (:meth:`recently_lost`).  Leases are stamped and judged on the history's clock (:meth:`_db_clock`)."""
        locks = tables.locks
        pg = self.dialect == "postgresql"
        # PostgreSQL: the server's now read with the row, in the same statement
        row = conn.execute(select(locks.c.owner, locks.c.expires_at,
                                  *([self._db_clock().label("now")] if pg else []))
                           .where(locks.c.name == name)).first()
        if row is not None:
            if row.owner == owner:
                conn.execute(update(locks).where(locks.c.name == name).values(expires_at=self._stamp(ttl)))
                return True
            alive = owner_alive(row.owner, node)
            now = _utc(row.now) if pg else datetime.now(UTC)
            assert now is not None
            if alive is not False and (self.lease_held(row.expires_at, now) or self.recently_lost()):
                return False
            # compare-and-delete: the stale row just read, not one another process put there since (read
            # committed: two processes taking over the same stale lock would both succeed otherwise)
            gone = conn.execute(delete(locks).where(locks.c.name == name, locks.c.owner == row.owner,
                                                    locks.c.expires_at == row.expires_at))
            if gone.rowcount != 1:
                return False
        conn.execute(insert(locks).values(name=name, owner=owner, node=node, acquired_at=self._stamp(),
                                          expires_at=self._stamp(ttl), purpose=purpose))
        return True

    def start_run_locked(
        self, run_id: int, started_at: datetime, owner: str, lock: str, holder: str, node: str, ttl: timedelta
    ) -> bool:
        """Take ``lock`` and mark the run running, in one transaction.  False (nothing changed) if held."""
        st = self._prepared()
        start = {"rid": run_id, "status": "running", "started_at": started_at, "owner": owner}
        try:
            with self._core() as conn:
                lease: dict[str, Any] = {"ttl": ttl}
                if self.dialect != "postgresql":
                    now = datetime.now(UTC)
                    lease = {"acquired_at": now, "expires_at": now + ttl}
                got = conn.execute(st["lock_insert"], {"name": lock, "owner": holder, "node": node,
                                                       "purpose": f"run {run_id}", **lease})
                if got.rowcount == 1:  # the common case: there was no lock row
                    conn.execute(st["run_start"], start)
                    return True
            # a lock row exists: held by a live run, or stale (then taken over)
            with self._core() as conn:
                if not self._take_lock(conn, lock, holder, node, ttl, f"run {run_id}"):
                    return False
                conn.execute(st["run_start"], start)
            return True
        except IntegrityError:
            return False

    def lock_holder(self, name: str) -> LockRow | None:
        from upkeeper.core.models import LockRow

        with self.session() as s:
            return s.get(LockRow, name)

    def taken_over(self, names: Sequence[str], holder: str) -> dict[str, tuple[str, str, str] | None]:
        """Of ``names``, locks ``holder`` took, those it holds no longer: each with (owner, node, purpose) of who
        holds it now, None when nobody does.  A lock is taken from a live holder only when its lease ran out
        unrenewed for ``lease_grace`` (:meth:`lease_held`): the history unreachable that long, its process frozen."""
        locks = tables.locks
        with self._core() as conn:
            now = {r.name: (r.owner, r.node, r.purpose or "") for r in conn.execute(
                select(locks.c.name, locks.c.owner, locks.c.node, locks.c.purpose).where(locks.c.name.in_(list(names))))}
        return {n: now.get(n) for n in names if n not in now or now[n][0] != holder}

    def refresh_locks(self, owner: str, ttl: timedelta) -> None:
        """Extend every lock held by this process (``owner``) or on behalf of its runs (``owner/…``)."""
        locks = tables.locks
        with self._core() as conn:
            conn.execute(
                update(locks)
                .where((locks.c.owner == owner) | locks.c.owner.startswith(owner + "/", autoescape=True))
                .values(expires_at=self._stamp(ttl))
            )

    def release_lock(self, name: str, owner: str) -> None:
        locks = tables.locks
        with self._core() as conn:
            conn.execute(delete(locks).where(locks.c.name == name, locks.c.owner == owner))

    # -- audit & daemons ------------------------------------------------------------------

    def audit(self, actor: str, action: str, *, job: str | None = None, node: str | None = None,
              details: dict[str, Any] | None = None) -> None:
        from upkeeper.core.models import AuditRow

        with self.session() as s:
            s.add(AuditRow(ts=datetime.now(UTC), actor=actor, action=action, job=job, node=node,
                           details=redact_obj(jsonable(details or {}))))

    def audit_entries(self, limit: int = 100) -> list[AuditRow]:
        from upkeeper.core.models import AuditRow

        with self.session() as s:
            return list(s.scalars(select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)))

    def daemon_heartbeat(self, instance: str, node: str, pid: int, started_at: datetime, jobs: int,
                         version: str, *, job_names: Sequence[str] | None = None, at: datetime | None = None,
                         loop_at: datetime | None = None) -> None:
        """Record that daemon ``instance`` is alive at ``at`` (default: now), serving ``job_names``, its scheduling
        loop's newest tick having started at ``loop_at``.  A row of the same instance name with another
        ``started_at`` was an earlier lifetime: it is replaced.

        ``last_seen`` and ``loop_at`` are written on the history's clock (PostgreSQL: the server's, see
        :meth:`_db_clock`), as every node judges them: each as old as it is here."""
        from upkeeper.core.models import DaemonRow

        here = datetime.now(UTC)
        now = self._on_history_clock(at or here, here)
        loop = self._on_history_clock(loop_at, here) if loop_at is not None else None
        names = sorted(job_names) if job_names is not None else None
        with self.session() as s:
            row = s.get(DaemonRow, instance)
            if row is None:
                s.add(DaemonRow(instance=instance, node=node, pid=pid, started_at=started_at, last_seen=now,
                                version=version, jobs=jobs, job_names=names, loop_at=loop))
            else:
                if row.started_at != started_at:
                    row.node, row.pid, row.started_at, row.version = node, pid, started_at, version
                    row.stopped_at = None
                    row.reload = None
                row.last_seen = now
                row.jobs = jobs
                row.job_names = names
                row.loop_at = loop

    def daemon_reloaded(self, instance: str, outcome: dict[str, Any]) -> None:
        """Record the outcome of daemon ``instance``'s last config reload (``upkeeper status`` shows it)."""
        from upkeeper.core.models import DaemonRow

        with self.session() as s:
            s.execute(update(DaemonRow).where(DaemonRow.instance == instance)
                      .values(reload=redact_obj(jsonable(outcome))))

    def daemon_stopped(self, instance: str, at: datetime | None = None) -> None:
        from upkeeper.core.models import DaemonRow

        with self.session() as s:
            s.execute(update(DaemonRow).where(DaemonRow.instance == instance)
                      .values(stopped_at=at or datetime.now(UTC)))

    def daemon_lifetimes(self, exclude: str) -> list[tuple[datetime, datetime, frozenset[str]]]:
        """``(started_at, end, job names)`` of every daemon instance but ``exclude`` that recorded the jobs it
        served; ``end`` is when it stopped, or, if it never recorded a stop (it died), its scheduling loop's last
        tick as of its last heartbeat (its last heartbeat when it recorded no tick: an older upkeeper) -- a loop
        that hung while its heartbeat went on served nothing after its last tick."""
        d = tables.daemons
        with self._core() as conn:
            rows = conn.execute(select(d.c.started_at, d.c.stopped_at, d.c.last_seen, d.c.loop_at, d.c.job_names)
                                .where(d.c.instance != exclude, d.c.job_names.is_not(None))).all()
        return [(r.started_at, r.stopped_at or (min(r.loop_at, r.last_seen) if r.loop_at else r.last_seen),
                 frozenset(r.job_names)) for r in rows if isinstance(r.job_names, list)]

    def daemons(self) -> list[DaemonRow]:
        from upkeeper.core.models import DaemonRow

        with self.session() as s:
            return list(s.scalars(select(DaemonRow).order_by(DaemonRow.last_seen.desc())))


def clock_skew_warning(skew: tuple[datetime, datetime, timedelta] | None) -> str | None:
    """What to say of :meth:`History.clock_skew`'s measure when this node's clock is more than
    :data:`CLOCK_SKEW_WARN` from the history database's (None: it is not, or the history is SQLite)."""
    if skew is None:
        return None
    here, server, ahead = skew
    if abs(ahead) <= CLOCK_SKEW_WARN:
        return None
    from upkeeper.fmt import human_duration

    return (f"this node's clock ({here:%Y-%m-%d %H:%M:%S} UTC) is {human_duration(abs(ahead).total_seconds())} "
            f"{'ahead of' if ahead > timedelta(0) else 'behind'} the history database's ({server:%Y-%m-%d %H:%M:%S} "
            "UTC): leases and daemon heartbeats use the database's clock, but this node's schedules, run times and "
            "logs are that far off.  Try: sync it with NTP: 'timedatectl set-ntp true' (systemd-timesyncd) or "
            "chrony ('chronyc tracking' shows the offset, 'chronyc makestep' corrects it at once); check the "
            "database server's clock too")


def dialect_insert(dialect: str) -> Any:
    """The ``insert`` of ``dialect`` (``sqlite`` or ``postgresql``), which has ``on_conflict_do_nothing/update``.

    Imported on use: the PostgreSQL dialect's package costs a SQLite history's CLI ~45 ms."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    return pg_insert


def _upsert_state(stmt: Any) -> Any:
    """INSERT … ON CONFLICT (job, key) DO UPDATE: a job state row written or replaced."""
    return stmt.on_conflict_do_update(index_elements=["job", "key"],
                                      set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at})


def jsonable(value: Any) -> Any:
    """Make a value JSON-serializable (datetimes → ISO strings, sets → lists …)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def open_history(setting: str | None, base_dir: Path | None = None) -> History:
    return History(history_url(setting, base_dir))


__all__ = [
    "History",
    "NewRun",
    "OperationalError",
    "Streak",
    "clock_skew_warning",
    "default_history_path",
    "dialect_insert",
    "history_url",
    "open_history",
    "OVERLAP_SKIP",
    "owner_alive",
    "process_identity",
]
