"""PostgreSQL client tools and queries used by backup, verify and restore."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from upkeeper import lazy
from upkeeper.backup.source import SourceState
from upkeeper.config.targets import PostgresTarget
from upkeeper.core import proc
from upkeeper.errors import KILLED_FROM_OUTSIDE, BackupError, SetupError, TaskError, ToolKilled
from upkeeper.fmt import human_duration
from upkeeper.redact import redact

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql
else:
    psycopg = lazy.module("psycopg")
    sql = lazy.module("psycopg.sql")

SERVER_VERSION_SQL = "SELECT current_setting('server_version'), current_setting('server_version_num')::int"

LIST_DATABASES_SQL = """
SELECT datname, datistemplate, datallowconn FROM pg_database ORDER BY datname
"""

_NOT_SYSTEM_REL = ("n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)' "
                   "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass "
                   "AND d.objid = c.oid AND d.deptype = 'e')")

# Ordinary tables (partitions included; partitioned parents hold no rows of their own) whose data pg_dump dumps.
_DUMPED_TABLES = """
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.deptype = 'e')
ORDER BY n.nspname, c.relname
"""
# with each table's index count: counting its rows locks the table and, while planning, every index of it
_INDEXES = "(SELECT count(*) FROM pg_index i WHERE i.indrelid = c.oid)::int"
LIST_TABLES_SQL = f"SELECT n.nspname, c.relname, {_INDEXES}" + _DUMPED_TABLES

# The tables whose rows the manifest counts, as the dump's snapshot sees them: LIST_TABLES_SQL plus each
# table's OID and data file, to tell afterwards whether it was dropped, truncated or rewritten since.
LIST_SNAPSHOT_TABLES_SQL = f"SELECT c.oid, n.nspname, c.relname, c.relfilenode, {_INDEXES}" + _DUMPED_TABLES

# pg_relation_filenode() reads the catalog as it is now (not as the snapshot saw it): NULL once a table is
# dropped, a new file once TRUNCATE, VACUUM FULL, CLUSTER or a rewriting ALTER TABLE committed.
CURRENT_FILENODES_SQL = "SELECT o, pg_relation_filenode(o) FROM unnest(%s::oid[]) AS o"

# The server's lock table: every lock any session holds takes a slot of it, a table's lock held until its
# transaction ends; it holds max_locks_per_transaction × (max_connections + max_prepared_transactions) locks
# (PostgreSQL's documentation; a little more fits in spare shared memory) and is sized at server start only.
# pg_dump locks every table it dumps, and every sequence it reads (PostgreSQL 15's does), in one transaction
# until it ends: with thousands of tables it fails "out of shared memory … increase max_locks_per_transaction".
LOCK_TABLE_SQL = f"""
SELECT current_setting('max_locks_per_transaction')::int, current_setting('max_connections')::int,
       current_setting('max_prepared_transactions')::int,
       count(*) FILTER (WHERE c.relkind IN ('r', 'p'))::int, count(*) FILTER (WHERE c.relkind = 'S')::int
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'S') AND {_NOT_SYSTEM_REL}
"""
OUT_OF_LOCKS = "out of shared memory"

EXPORT_SNAPSHOT_SQL = "SELECT pg_export_snapshot()"
# The session that exports the dump's snapshot counts rows, then sits idle in its transaction until pg_dump is
# done: the server's (or role's, or database's) timeouts must not end it — pg_dump turns the same three off for
# its own sessions.  Its waits for table locks are bounded like pg_dump's (--lock-wait-timeout): SET_LOCK_TIMEOUT.
SNAPSHOT_SESSION_SQL = ("SET statement_timeout = 0", "SET idle_in_transaction_session_timeout = 0")
SET_LOCK_TIMEOUT_SQL = "SET lock_timeout = {}"

# Who keeps a table's ACCESS SHARE lock from being granted: only ACCESS EXCLUSIVE conflicts with it — held (a
# migration's ALTER TABLE, a LOCK TABLE, TRUNCATE, VACUUM FULL) or queued ahead (an ALTER TABLE that itself
# waits).  No query text: it may hold data or secrets; its first word says what the session does.
LOCK_CONFLICTS_SQL = """
SELECT format('%%I.%%I', n.nspname, c.relname), a.pid, l.granted, coalesce(a.usename, ''),
       coalesce(a.application_name, ''), coalesce(a.state, ''),
       coalesce(extract(epoch FROM now() - a.xact_start)::bigint, 0),
       upper(split_part(ltrim(coalesce(a.query, '')), ' ', 1)), pg_blocking_pids(a.pid)
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock'
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.relation = ANY(%s::oid[]) AND a.pid <> pg_backend_pid()
ORDER BY l.granted DESC, a.xact_start
"""

# The sessions that wait for a lock the backup holds (the backup's sessions: pg_dump's, named by their
# application_name, and the snapshot session), while the dump runs.  Cheap enough to run every second: only
# sessions waiting for a lock (pg_locks, visible to every role) are asked for pg_blocking_pids(), none when none
# waits.  waitstart is PostgreSQL 14+ (read through to_jsonb so the query runs on older servers too; the caller
# then counts from when it first saw the wait).  No query text: its first word says what the session does.  The
# sessions queued behind a waiter are the app's: the snapshot session's own row counts (LOCK TABLE … ACCESS SHARE)
# queue behind a migration waiting for pg_dump too, and are not counted.
BLOCKED_BY_BACKUP_SQL = """
WITH ours AS (
  SELECT coalesce(array_agg(pid), '{}') AS pids FROM pg_stat_activity
  WHERE application_name = %(app)s OR pid = ANY(%(pids)s::int[])
), waiting AS MATERIALIZED (
  SELECT DISTINCT ON (l.pid) l.pid, l.mode, l.locktype, l.relation, l.database,
         (to_jsonb(l) ->> 'waitstart')::timestamptz AS waitstart
  FROM pg_locks l WHERE NOT l.granted AND l.pid <> pg_backend_pid()
), blocked AS MATERIALIZED (
  SELECT w.*, pg_blocking_pids(w.pid) AS blockers FROM waiting w
)
SELECT b.pid, coalesce(a.usename, ''), coalesce(a.application_name, ''), b.mode,
       CASE WHEN c.oid IS NOT NULL THEN format('%%I.%%I', n.nspname, c.relname) ELSE b.locktype END,
       coalesce(extract(epoch FROM now() - coalesce(b.waitstart, a.query_start)), 0)::float8,
       CASE WHEN a.query LIKE '<%%' THEN '' ELSE upper(split_part(ltrim(coalesce(a.query, '')), ' ', 1)) END,
       (SELECT count(*) FROM blocked q WHERE b.pid = ANY(q.blockers) AND NOT q.pid = ANY(ours.pids))::int
FROM blocked b CROSS JOIN ours
LEFT JOIN pg_stat_activity a ON a.pid = b.pid
LEFT JOIN pg_class c ON c.oid = b.relation AND b.locktype = 'relation'
     AND b.database = (SELECT oid FROM pg_database WHERE datname = current_database())
LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE b.blockers && ours.pids AND NOT b.pid = ANY(ours.pids)
ORDER BY b.pid
"""
# Ends the backup's sessions (same role: no privilege needed) so that their locks go at once.
TERMINATE_BACKUP_SESSIONS_SQL = """
SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity
WHERE (application_name = %(app)s OR pid = ANY(%(pids)s::int[])) AND pid <> pg_backend_pid()
"""

# What an existing database holds, for the message that names it before a restore may replace it (the
# rule itself is simpler: any existing database is replaced only with --force).  Objects that belong to an
# extension count as the extension; implicit types (a table's row type, array and multirange types) not at all.
_NOT_SYSTEM = "{col} NOT IN ('pg_catalog', 'information_schema') AND {col} !~ '^pg_(toast|temp)'"
_NOT_EXT = ("NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '{cat}'::regclass AND d.objid = {oid} "
            "AND d.deptype = 'e')")


def _rel_count(kinds: str) -> str:
    return (f"(SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE c.relkind IN ({kinds}) AND {_NOT_SYSTEM.format(col='n.nspname')} "
            f"AND {_NOT_EXT.format(cat='pg_class', oid='c.oid')})")


DATABASE_CONTENTS: tuple[tuple[str, str, str], ...] = (
    # (singular, plural, expression)
    ("table", "tables", _rel_count("'r', 'p'")),
    ("view", "views", _rel_count("'v', 'm'")),
    ("sequence", "sequences", _rel_count("'S'")),
    ("foreign table", "foreign tables", _rel_count("'f'")),
    ("large object", "large objects", "(SELECT count(*) FROM pg_largeobject_metadata)"),
    ("function or procedure", "functions or procedures",
     "(SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
     f"WHERE {_NOT_SYSTEM.format(col='n.nspname')} AND {_NOT_EXT.format(cat='pg_proc', oid='p.oid')})"),
    ("type", "types",
     "(SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
     f"WHERE {_NOT_SYSTEM.format(col='n.nspname')} AND {_NOT_EXT.format(cat='pg_type', oid='t.oid')} "
     "AND t.typtype <> 'm' AND NOT EXISTS (SELECT 1 FROM pg_type e WHERE e.typarray = t.oid) "
     "AND (t.typrelid = 0 OR (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c'))"),
    ("schema besides public", "schemas besides public",
     "(SELECT count(*) FROM pg_namespace n WHERE n.nspname NOT IN ('public', 'information_schema') "
     f"AND n.nspname !~ '^pg_' AND {_NOT_EXT.format(cat='pg_namespace', oid='n.oid')})"),
    ("extension besides plpgsql", "extensions besides plpgsql",
     "(SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql')"),
    ("publication", "publications", "(SELECT count(*) FROM pg_publication)"),
)
DATABASE_CONTENTS_SQL = "SELECT " + ", ".join(expr for _s, _p, expr in DATABASE_CONTENTS)

_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


def bin_dir(target: PostgresTarget) -> Path | None:
    if target.bin_dir:
        return Path(target.bin_dir)
    cands = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                   if Path(p).parent.name.isdigit() else 0)
    return Path(cands[-1]) if cands else None


def tool(target: PostgresTarget, name: str) -> str:
    """A client program: from the target's bin_dir only when one is configured (a program missing there is an
    error, not a silent fall back to another version on PATH); else the newest /usr/lib/postgresql/*/bin, then
    PATH."""
    d = bin_dir(target)
    if target.bin_dir:
        p = Path(target.bin_dir) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
        raise TaskError(f"{name} not found in {target.bin_dir} (the target's bin_dir)",
                        "Try: fix the target's bin_dir, or install the PostgreSQL client tools there", permanent=True)
    found = proc.which(name, [d] if d else [])
    if not found:
        raise TaskError(f"{name} not found" + (f" in {d}" if d else ""),
                        "Try: install the PostgreSQL client (apt-get install postgresql-client) or set the "
                        "target's bin_dir", permanent=True)
    return found


def tool_version(path: str) -> tuple[str, int]:
    """(``15.5``, 150005) from ``pg_dump --version``."""
    out = proc.run([path, "--version"], timeout=30).text
    m = _VERSION_RE.search(out)
    if not m:
        raise TaskError(f"cannot read the version of {path}: {out.strip()[:100]!r}")
    major, minor = int(m.group(1)), int(m.group(2) or 0)
    return f"{major}.{minor}", major * 10000 + minor


def check_dump_version(path: str, tool_ver: str, tool_num: int, server_ver: str, server_num: int) -> None:
    """A pg_dump older (major) than the server cannot dump it faithfully: refuse, naming both versions and the
    program that was found (the target's bin_dir, the newest /usr/lib/postgresql/*/bin or PATH)."""
    if tool_num // 10000 < server_num // 10000:
        raise TaskError(
            f"{Path(path).name} {tool_ver} ({path}) is older than the server (PostgreSQL {server_ver}); it cannot "
            "dump it reliably",
            f"Try: install the PostgreSQL {server_num // 10000} client tools and point the target's bin_dir at them",
            permanent=True)


def pg_error(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return redact(lines[0] if lines else type(exc).__name__)


# The settings of upkeeper's own sessions in a restored database (counting rows, reading sequences, amcheck),
# whatever the database's (or its role's) settings say: a restored database gets the backed-up one's
# (ALTER DATABASE … SET), which may make its sessions read-only or bound their statements' time.
OWN_SESSION_OPTIONS = ("-c default_transaction_read_only=off -c statement_timeout=0 -c lock_timeout=0 "
                       "-c idle_in_transaction_session_timeout=0")


# A scratch restore's sessions (backup.verify restores into a database it drops once checked): its commits need
# not wait for the WAL to reach the disk (a crash loses at most the throw-away database's last commits, and the
# verify fails anyway: pg_restore's session ends), and its index builds may sort in more memory than the
# server's default (64 MB unless configured), at most SCRATCH_MAINTENANCE_MEM each, within a quarter of the
# memory the host has available over all the restore's jobs; never less than the server gives its sessions.
SCRATCH_MAINTENANCE_MEM = 1 << 30
MAINTENANCE_MEM_SQL = "SELECT setting::bigint * 1024 FROM pg_settings WHERE name = 'maintenance_work_mem'"


def scratch_restore_options(current_maintenance_mem: int, jobs: int, available_memory: int | None) -> str:
    """The libpq options (PGOPTIONS, ``-c name=value``) of a scratch restore's sessions: synchronous_commit
    off, and maintenance_work_mem raised to min(:data:`SCRATCH_MAINTENANCE_MEM`, ``available_memory`` / 4 /
    ``jobs``) when that is more than ``current_maintenance_mem`` (bytes; ``available_memory`` None: the server's
    host is not this one, its memory is unknown, its setting is kept)."""
    opts = ["-c synchronous_commit=off"]
    if available_memory is not None:
        want = min(SCRATCH_MAINTENANCE_MEM, available_memory // 4 // max(1, jobs))
        if want > current_maintenance_mem:
            opts.append(f"-c maintenance_work_mem={want // 1024}kB")
    return " ".join(opts)


def with_options(env: dict[str, str], options: str | None) -> dict[str, str]:
    """``env`` (a tool's libpq environment) with ``options`` after those of this process's PGOPTIONS (the
    later ``-c`` of a setting wins)."""
    if not options:
        return env
    return {**env, "PGOPTIONS": " ".join(o for o in (os.environ.get("PGOPTIONS", "").strip(), options) if o)}


@contextlib.contextmanager
def connect(target: PostgresTarget, dbname: str | None = None, *, autocommit: bool = True,
            application_name: str | None = None, options: str | None = None) -> Iterator[psycopg.Connection[Any]]:
    """A session of ``target`` in ``dbname``; ``options`` as libpq passes them (``-c name=value``, set before
    the database's and role's settings would apply)."""
    params = target.libpq_params(dbname)
    if application_name is not None:
        params["application_name"] = application_name
    if options is not None:
        params["options"] = options
    # text as str whatever the database's encoding: libpq's default is the database's own, and psycopg hands
    # out bytes for SQL_ASCII (a table's name became "b'users'"); the server converts LATIN1 & co.
    params["client_encoding"] = "UTF8"
    deadline = time.monotonic() + ENDING_SESSION_WAIT
    while True:
        try:
            conn = psycopg.connect(**params, autocommit=True)  # type: ignore[arg-type]
            break
        except psycopg.OperationalError as exc:
            text = pg_error(exc)
            # a session of ours that just ended counts against a CONNECTION LIMIT until its server process
            # has exited (the client does not wait for it): refused then, a moment later allowed
            if _TOO_MANY_RE.search(text) and time.monotonic() < deadline:
                time.sleep(0.02)
                continue
            raise TaskError(f"cannot connect to PostgreSQL {target.display()} (database {params['dbname']}): "
                            f"{text}", too_many_connections_hint(text) or "Try: check host, port, user and password "
                            "of the target, and that the server runs") from None
    try:
        _end_with_client(conn)
        conn.autocommit = autocommit
        yield conn
    finally:
        conn.close()


#: seconds a connection refused by a CONNECTION LIMIT is tried again (see :func:`connect`)
ENDING_SESSION_WAIT = 0.5

#: how often (ms) the server checks, while it runs a statement of ours, that we are still connected
CLIENT_CHECK_MS = 1000


def _end_with_client(conn: psycopg.Connection[Any]) -> None:
    """Have the server stop a statement of this session once this process is gone (PostgreSQL 14+:
    ``client_connection_check_interval``; committed at once, the connection in autocommit mode).

    Otherwise a backend notices a client killed outright (kill -9) only when it next talks to it: a verify's
    smoke check, amcheck or row count, killed with its upkeeper, ran on in the scratch database to its end."""
    if conn.info.server_version >= 140000:
        # only a safeguard: a server (or pooler) that refuses it still serves the run
        with contextlib.suppress(psycopg.Error):
            conn.execute(f"SET client_connection_check_interval = {CLIENT_CHECK_MS}")


def server_version(conn: psycopg.Connection[Any]) -> tuple[str, int]:
    row = conn.execute(SERVER_VERSION_SQL).fetchone()
    assert row is not None
    return str(row[0]).split()[0], int(row[1])


# a standby's replay lag as postgres_exporter (queries.yaml, pg_replication_lag) and Neon's sql_exporter compute it:
# 0 while every WAL received is replayed (an idle primary sends none: the last replayed commit ages without any
# lag), else the age of the last replayed commit; and its WAL receiver (no row while it does not run: the primary
# is unreachable, and receive = replay then too).  A standby that has replayed no commit since it started (a new one,
# paused or stuck before its first) has no replay timestamp: the commits it holds are older than its start, so its
# lag is at least its uptime.  A role without pg_read_all_stats sees the receiver's pid only, no status
STANDBY_SQL = """
SELECT pg_is_in_recovery(),
       pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::float8,
       CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE extract(epoch FROM now() - coalesce(pg_last_xact_replay_timestamp(), pg_postmaster_start_time()))
       END::float8,
       extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8,
       r.pid, r.status, r.sender_host, r.sender_port, current_user
FROM (SELECT 1) one LEFT JOIN pg_stat_wal_receiver r ON true
"""


def source_state(conn: psycopg.Connection[Any]) -> SourceState:
    """The server's role; for a standby, its WAL receiver (``link`` up while it streams), its replay lag and
    primary (the receiver's sender, else primary_conninfo's host and port — never the rest of it, which may hold a
    password).  A role without pg_read_all_stats sees the receiver's pid only, not whether it streams or is
    still connecting or waiting: its link is then ``unknown`` (``unchecked``, with the GRANT that shows it), and
    its lag is still judged by the WAL positions.  ``conn`` in autocommit."""
    row = conn.execute(STANDBY_SQL).fetchone()
    assert row is not None
    in_recovery, lag_bytes, lag_s, replay_age, pid, status, host, port, user = row
    if not in_recovery:
        return SourceState("primary")
    link: Literal["up", "down", "unknown"]
    unchecked = grant = None
    if pid is None:
        link = "down"  # no receiver: a row every role sees while one runs
    elif status is None:
        link = "unknown"
        role = str(user) if re.fullmatch(r"[a-z_][a-z0-9_$]*", str(user)) else sql.Identifier(str(user)).as_string(conn)
        unchecked = (f"role {user} may not read the WAL receiver's status (pg_stat_wal_receiver: needs "
                     "pg_read_all_stats)")
        grant = (f"GRANT pg_read_all_stats TO {role}; — on the primary (the standby has it by replication); "
                 "pg_monitor includes it, and pg_read_all_settings, which also shows primary_conninfo")
    else:
        link = "up" if status == "streaming" else "down"
    primary = f"{host}:{port}" if host else _conninfo_primary(conn)
    return SourceState(
        "replica", primary=primary, link=link,
        link_status=str(status) if status is not None else (None if pid is not None else "no WAL receiver"),
        lag_seconds=max(0.0, float(lag_s)) if link != "down" and lag_s is not None else None,
        lag_bytes=float(lag_bytes) if lag_bytes else None,
        last_replay_seconds=max(0.0, float(replay_age)) if replay_age is not None else None,
        unchecked=unchecked, grant=grant)


def _conninfo_primary(conn: psycopg.Connection[Any]) -> str | None:
    """host:port of primary_conninfo (readable by superusers and pg_read_all_settings only); None if not."""
    try:
        row = conn.execute("SELECT current_setting('primary_conninfo')").fetchone()
        params = psycopg.conninfo.conninfo_to_dict(str(row[0])) if row and row[0] else {}
    except psycopg.Error:
        return None
    host = params.get("host") or params.get("hostaddr")
    return f"{host}:{params.get('port') or 5432}" if host else None


def list_databases(conn: psycopg.Connection[Any]) -> list[str]:
    """The databases backed up by default: every one that is no template and allows connections."""
    return [name for name, (template, allow) in database_flags(conn).items() if allow and not template]


_TOO_MANY_RE = re.compile(r'too many connections for (database|role) "((?:[^"]|"")*)"')
TOO_MANY_CLIENTS = "too many clients already"


def too_many_connections_hint(text: str) -> str | None:
    """The fix for a connection refused by a connection limit (the database's or the role's CONNECTION LIMIT,
    or the server's max_connections), named in ``text``; None for any other failure."""
    m = _TOO_MANY_RE.search(text)
    if m:
        kind, name = m.group(1), m.group(2).replace('""', '"')
        return (f"Try: allow the {kind} more connections (ALTER {kind.upper()} {quote_ident(name)} CONNECTION LIMIT "
                f"n, or -1 for none: SELECT {'datconnlimit FROM pg_database WHERE datname' if kind == 'database' else 'rolconnlimit FROM pg_roles WHERE rolname'}"
                f" = {quote_literal(name)} shows it), or end the sessions that use them up (pg_stat_activity)")
    if TOO_MANY_CLIENTS in text:
        return ("Try: raise the server's max_connections (a restart), or end idle sessions (pg_stat_activity); "
                "a pooler in front of the app keeps its connections few")
    return None


def quote_ident(name: str) -> str:
    """``name`` as SQL writes an identifier, always in double quotes."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# The connection limits a backup's sessions meet: the login role's (superusers are exempt from both), and each
# database's, with the sessions that already count against them (this one left out).  pg_stat_activity lists
# every session to every role; CountDBConnections and CountUserBackends count client backends.
CONNECTION_LIMITS_SQL = """
SELECT r.rolsuper, r.rolconnlimit,
       (SELECT count(*) FROM pg_stat_activity a WHERE a.usesysid = r.oid AND a.backend_type = 'client backend'
          AND a.pid <> pg_backend_pid())::int
FROM pg_roles r WHERE r.rolname = session_user
"""
DATABASE_LIMITS_SQL = """
SELECT d.datname, d.datconnlimit,
       (SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid AND a.backend_type = 'client backend'
          AND a.pid <> pg_backend_pid())::int
FROM pg_database d
"""


@dataclass(frozen=True)
class ConnectionLimit:
    """A CONNECTION LIMIT a backup's sessions count against: the database's or the login role's."""

    kind: Literal["database", "role"]
    name: str
    limit: int
    in_use: int  # the sessions that counted against it when the backup started (other than upkeeper's own)

    def alter(self, n: int) -> str:
        return f"ALTER {self.kind.upper()} {quote_ident(self.name)} CONNECTION LIMIT {n}"

    def allows(self) -> str:
        """"role app allows 1 connection (CONNECTION LIMIT 1)"."""
        return (f"{self.kind} {self.name} allows {self.limit} connection{'' if self.limit == 1 else 's'} "
                f"(CONNECTION LIMIT {self.limit})")

    def fix(self, n: int, why: str, instead: str) -> str:
        """``ALTER … CONNECTION LIMIT n`` (``why`` says what the n are for), or ``instead`` as a superuser
        ("back up": "or back up as a superuser")."""
        who = "a superuser or the database's owner" if self.kind == "database" else "a superuser or a CREATEROLE role"
        others = (f"; the role's other sessions ({self.in_use} connected as it started) count against it too"
                  if self.kind == "role" and self.in_use else "")
        return (f"{self.alter(n)} ({why}; run as {who}){others}; or {instead} as a superuser, to whom connection "
                "limits do not apply")


def restore_sessions(jobs: int) -> int:
    """The sessions pg_restore holds at once with ``jobs``: one; with jobs > 1 one per worker, and its leader's,
    which it ends as the workers start but which counts against a CONNECTION LIMIT until its server process
    has exited (a limit of exactly ``jobs`` refuses a worker now and then)."""
    return 1 if jobs <= 1 else jobs + 1


def restore_jobs_within(limit: int, jobs: int, held: int) -> int:
    """The most pg_restore jobs (at most ``jobs``) whose sessions (:func:`restore_sessions`) fit in ``limit``
    beside the ``held`` sessions of upkeeper; 1 when none more do (the caller refuses what does not fit)."""
    room = limit - held
    return max(1, min(jobs, room - 1)) if room >= 3 else 1


@dataclass(frozen=True)
class ConnectionLimits:
    superuser: bool
    role: ConnectionLimit | None
    databases: dict[str, ConnectionLimit]

    def for_database(self, db: str) -> list[ConnectionLimit]:
        """The limits a session of the backup in ``db`` counts against (none for a superuser), tightest first."""
        if self.superuser:
            return []
        found = [x for x in (self.databases.get(db), self.role) if x is not None]
        return sorted(found, key=lambda x: x.limit)


def connection_limits(conn: psycopg.Connection[Any]) -> ConnectionLimits:
    row = conn.execute(CONNECTION_LIMITS_SQL).fetchone()
    superuser, role_limit, role_used = (bool(row[0]), int(row[1]), int(row[2])) if row else (False, -1, 0)
    user = str(conn.execute("SELECT session_user").fetchone()[0])  # type: ignore[index]
    dbs = {str(r[0]): ConnectionLimit("database", str(r[0]), int(r[1]), int(r[2]))
           for r in conn.execute(DATABASE_LIMITS_SQL) if int(r[1]) >= 0}
    return ConnectionLimits(superuser, ConnectionLimit("role", user, role_limit, role_used) if role_limit >= 0
                            else None, dbs)


def database_flags(conn: psycopg.Connection[Any]) -> dict[str, tuple[bool, bool]]:
    """Every database of the server: name → (IS_TEMPLATE, ALLOW_CONNECTIONS)."""
    return {str(r[0]): (bool(r[1]), bool(r[2])) for r in conn.execute(LIST_DATABASES_SQL)}


def list_tables(conn: psycopg.Connection[Any]) -> list[tuple[str, str, int]]:
    """(schema, name, indexes) of every table whose rows are counted."""
    return [(str(r[0]), str(r[1]), int(r[2])) for r in conn.execute(LIST_TABLES_SQL)]


# Counting runs beside the dump on the same CPUs: one backend per scan (no parallel workers) and no JIT
# compilation keep its CPU cost lowest (measured: a parallel count costs ~50% more CPU in total).
COUNT_SESSION_SQL = ("SET LOCAL max_parallel_workers_per_gather = 0", "SET LOCAL jit = off")
# Counting a restore (a verify's scratch database) runs alone, once the restore has ended: the server's own
# parallel workers shorten the scan of a large table (measured: pgbench_accounts, 1.5M rows, 2 CPUs: 0.18 s
# → 0.11 s); still no JIT, whose compilation costs more than a count(*) gains from it.
RESTORED_COUNT_SESSION_SQL = ("SET LOCAL jit = off",)
NO_STATEMENT_TIMEOUT_SQL = "SET statement_timeout = 0"


# A restore by a role that is not a superuser (--no-owner: it owns every table) is subject to the row-level
# security of tables with FORCE ROW LEVEL SECURITY: count(*) would see only the rows its policies let it see.
# The counts of a restore are taken with that lifted and with row_security off, so a table whose policies still
# apply fails the count instead of counting too few rows.  ALTER TABLE … NO FORCE ROW LEVEL SECURITY locks its
# table ACCESS EXCLUSIVE until the transaction ends: lifted on every table at once, a database with more such
# tables than the server's lock table holds failed "out of shared memory" (where the restore itself fits, as it
# commits table by table).  It is lifted batch by batch with the counts (count_rows), in each batch's savepoint,
# whose rollback undoes the change and releases its locks: nothing of it is ever committed.
FORCED_RLS_TABLES_SQL = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relrowsecurity AND c.relforcerowsecurity AND c.relkind IN ('r', 'p')
"""
ROW_SECURITY_OFF_SQL = "SET LOCAL row_security = off"


def lift_forced_row_security(conn: psycopg.Connection[Any], tables: list[tuple[str, str, int]]
                             ) -> Callable[[range], None]:
    """row_security off in the caller's transaction (which the caller rolls back), and the ``before_batch`` of
    :func:`count_rows` that runs ``ALTER TABLE … NO FORCE ROW LEVEL SECURITY`` on the batch's ``tables`` that
    force it, in the batch's savepoint (rolled back after its counts)."""
    if conn.autocommit:  # the ALTERs would be committed
        raise ValueError("row-level security is lifted only inside a transaction")
    forced = {(str(r[0]), str(r[1])) for r in conn.execute(FORCED_RLS_TABLES_SQL)}
    conn.execute(ROW_SECURITY_OFF_SQL)

    def lift(batch: range) -> None:
        for schema, table, _indexes in (tables[i] for i in batch):
            if (schema, table) in forced:
                conn.execute(sql.SQL("ALTER TABLE {}.{} NO FORCE ROW LEVEL SECURITY").format(
                    sql.Identifier(schema), sql.Identifier(table)))

    return lift


_BARE_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_$]*")
# what a manifest records about its keys ("row_count_keys"): "schema.table" with each name quoted as SQL quotes it
# when it is not plain lowercase (qualified()); a manifest without it (older upkeeper) joined the names unquoted,
# so that a schema "a.b" with a table "c" and a schema "a" with a table "b.c" shared one key
QUOTED_KEYS = "quoted"


def qualified(schema: str, name: str) -> str:
    """``schema.name`` as a manifest key: a name that is not plain lowercase letters, digits and underscores in
    double quotes (doubled inside), as SQL writes it — one key per table, whatever dots its names hold, and
    usable as is in a query (``select count(*) from <key>``)."""
    return ".".join(n if _BARE_IDENTIFIER.fullmatch(n) else '"' + n.replace('"', '""') + '"' for n in (schema, name))


# A count holds a lock on its table, and (taken while planning it) on each of the table's indexes, until its
# transaction ends.  Counting the thousands of tables of a schema-per-tenant database in one transaction filled
# the server's lock table (LOCK_TABLE_SQL) — on top of pg_dump's own locks, which already fill most of it — and
# failed "out of shared memory" where pg_dump alone succeeds.  A transaction's snapshot cannot be kept across
# transactions, but a rolled-back subtransaction releases the locks taken in it and keeps the snapshot: the
# counts run in batches of at most max_locks_per_transaction locks (the share of the lock table the server is
# sized to give each transaction), each in a savepoint rolled back after it, one statement per batch.
COUNT_SAVEPOINT = "upkeeper_counts"
MAX_LOCKS_SQL = "SELECT current_setting('max_locks_per_transaction')::int"


def count_batches(weights: list[int], budget: int) -> list[range]:
    """Consecutive ranges of indexes into ``weights`` (locks per table: 1 + its indexes), each holding at most
    ``budget`` locks (a table heavier than that alone)."""
    out: list[range] = []
    start, load = 0, 0
    for i, w in enumerate(weights):
        if i > start and load + w > budget:
            out.append(range(start, i))
            start, load = i, 0
        load += w
    if start < len(weights):
        out.append(range(start, len(weights)))
    return out


def count_rows(conn: psycopg.Connection[Any], tables: list[tuple[str, str, int]],
               before_batch: Callable[[range], None] | None = None, *, parallel: bool = False) -> dict[str, int]:
    """Row counts of ``tables`` ((schema, name, indexes)) keyed by :func:`qualified` names.  In a transaction,
    batch by batch, each holding at most max_locks_per_transaction locks in a savepoint rolled back after it,
    with ``before_batch`` (given the batch's indexes into ``tables``) run first in the batch's savepoint.
    ``parallel``: the scans may use the server's parallel workers (nothing else runs beside the count)."""
    counts: dict[str, int] = {}
    conn.execute(NO_STATEMENT_TIMEOUT_SQL)  # counting a large table may take longer than the server allows
    in_tx = not conn.autocommit
    if in_tx:
        for stmt in RESTORED_COUNT_SESSION_SQL if parallel else COUNT_SESSION_SQL:
            conn.execute(stmt)
    row = conn.execute(MAX_LOCKS_SQL).fetchone()
    budget = int(row[0]) if row else 64
    for batch in count_batches([1 + max(0, t[2]) for t in tables], budget):
        if in_tx:
            conn.execute(sql.SQL("SAVEPOINT {}").format(sql.Identifier(COUNT_SAVEPOINT)))
        if before_batch is not None:
            before_batch(batch)
        query = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}::int, count(*) FROM ONLY {}").format(sql.Literal(i), sql.Identifier(*tables[i][:2]))
            for i in batch)
        for i, n in conn.execute(query):
            schema, name, _indexes = tables[int(i)]
            counts[qualified(schema, name)] = int(n)
        if in_tx:  # the batch's locks go; the transaction's snapshot and settings stay
            conn.execute(sql.SQL("ROLLBACK TO SAVEPOINT {}").format(sql.Identifier(COUNT_SAVEPOINT)))
            conn.execute(sql.SQL("RELEASE SAVEPOINT {}").format(sql.Identifier(COUNT_SAVEPOINT)))
    return counts


@dataclass(frozen=True)
class SnapshotTable:
    """A table as the dump's snapshot sees it."""

    oid: int
    schema: str
    name: str
    filenode: int
    indexes: int = 0

    @property
    def key(self) -> str:
        return qualified(self.schema, self.name)


@dataclass(frozen=True)
class LockTable:
    """The server's lock table (:data:`LOCK_TABLE_SQL`) and what a dump of the database needs of it."""

    max_locks_per_transaction: int
    max_connections: int
    max_prepared_transactions: int
    tables: int  # pg_dump locks each (partitioned parents too) until it ends
    sequences: int  # pg_dump reads each, which locks it until it ends (PostgreSQL 15's does; counted always)

    @property
    def capacity(self) -> int:
        """Locks the lock table holds, as PostgreSQL's documentation says."""
        return self.max_locks_per_transaction * (self.max_connections + self.max_prepared_transactions)

    @property
    def needed(self) -> int:
        """Locks the backup holds at once: pg_dump's, and a batch of row counts (:func:`count_rows`)."""
        return self.tables + self.sequences + self.max_locks_per_transaction

    def advised(self) -> int:
        """The max_locks_per_transaction that leaves a quarter of the lock table to the other sessions; twice
        the current value when the dump's own locks already fit (other sessions held the rest)."""
        slots = max(1, self.max_connections + self.max_prepared_transactions)
        value = -(-self.needed * 5 // (4 * slots))
        return value if value > self.max_locks_per_transaction else 2 * self.max_locks_per_transaction

    def describe(self, db: str) -> str:
        return (f"a dump of {db} holds a lock on each of its {self.tables:,} tables and {self.sequences:,} sequences "
                f"until it ends ({self.needed:,} locks with the backup's row counts), in the server's lock table "
                f"that every session shares and that holds max_locks_per_transaction ({self.max_locks_per_transaction})"
                f" × (max_connections ({self.max_connections}) + max_prepared_transactions "
                f"({self.max_prepared_transactions})) = {self.capacity:,} locks")

    def hint(self) -> str:
        return (f"Try: set max_locks_per_transaction = {self.advised()} (or more) in the server's postgresql.conf "
                f"(or ALTER SYSTEM SET max_locks_per_transaction = {self.advised()}) and restart PostgreSQL: the "
                "setting takes effect only at a restart (each lock slot costs a few hundred bytes of shared memory)")


def lock_table(conn: psycopg.Connection[Any]) -> LockTable:
    row = conn.execute(LOCK_TABLE_SQL).fetchone()
    assert row is not None
    return LockTable(*(int(v) for v in row))


def out_of_locks(text: str) -> bool:
    """PostgreSQL's error when its lock table is full."""
    return OUT_OF_LOCKS in text


def snapshot_tables(conn: psycopg.Connection[Any]) -> list[SnapshotTable]:
    return [SnapshotTable(int(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4]))
            for r in conn.execute(LIST_SNAPSHOT_TABLES_SQL)]


def set_lock_timeout(conn: psycopg.Connection[Any], seconds: float) -> None:
    """``lock_timeout`` of the session (0: wait as long as it takes)."""
    conn.execute(sql.SQL(SET_LOCK_TIMEOUT_SQL).format(sql.Literal(int(seconds * 1000))))


def _current_filenodes(conn: psycopg.Connection[Any], tables: list[SnapshotTable]) -> dict[int, int | None]:
    rows = conn.execute(CURRENT_FILENODES_SQL, ([t.oid for t in tables],))
    return {int(r[0]): None if r[1] is None else int(r[1]) for r in rows}


def count_in_snapshot(conn: psycopg.Connection[Any], tables: list[SnapshotTable]) -> dict[str, int]:
    """Row counts of ``tables`` in the snapshot session ``conn``, once pg_dump holds its table locks.

    The tables are counted batch by batch (:func:`count_rows`), each batch's tables locked in one statement
    first and checked, so no DDL can slip in between the check and the counts.  Every table of the snapshot is
    counted, or the backup fails naming it: one dropped since cannot be counted (pg_dump fails on it when that
    happened before its lock), and one truncated or rewritten since reads as empty in the snapshot (TRUNCATE and
    rewriting ALTER TABLEs are not MVCC-safe) — in pg_dump's session too when that happened before pg_dump locked
    it — so neither an empty count nor an empty copy is recorded as the table's."""
    now = _current_filenodes(conn, tables)
    _check_unchanged(tables, now)

    def lock_and_check(batch: range) -> None:
        mine = [tables[i] for i in batch]
        conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(sql.SQL(", ").join(
            sql.SQL("ONLY {}").format(sql.Identifier(t.schema, t.name)) for t in mine)))
        _check_unchanged(mine, _current_filenodes(conn, mine))

    return count_rows(conn, [(t.schema, t.name, t.indexes) for t in tables], lock_and_check)


def _check_unchanged(tables: list[SnapshotTable], now: dict[int, int | None]) -> None:
    """Fails naming the tables dropped, truncated or rewritten since the snapshot (``now``: their current data
    files, :func:`_current_filenodes`)."""
    for what, why, found in (
            ("dropped", "its rows can no longer be counted in the dump's snapshot",
             [t.key for t in tables if now.get(t.oid) is None]),
            ("truncated or rewritten (TRUNCATE, VACUUM FULL, CLUSTER or an ALTER TABLE that rewrites it)",
             "the dump's snapshot no longer sees its rows (pg_dump stores such a table empty when this happens "
             "before it locks it)", [t.key for t in tables if now.get(t.oid) not in (None, t.filenode)])):
        if found:
            raise BackupError(
                f"table {found[0]}" + (f" (and {len(found) - 1} more)" if len(found) > 1 else "")
                + f" was {what} during the backup: {why}, so the backup cannot vouch for them",
                "Try: run the backup again once the maintenance or migration is over")


# The sequences whose state pg_dump dumps (SEQUENCE SET: setval(…, last_value, is_called)): permanent ones outside
# the system schemas and extensions (unlogged ones cannot be read on a standby and restart after a crash anyway).
LIST_SEQUENCES_SQL = """
SELECT n.nspname, c.relname, s.seqincrement, s.seqcycle
FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relpersistence = 'p' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.deptype = 'e')
ORDER BY n.nspname, c.relname
"""
SEQUENCES_PER_QUERY = 500
LARGE_OBJECTS_SQL = "SELECT count(*) FROM pg_largeobject_metadata"


@dataclass(frozen=True)
class SequenceState:
    """A sequence's state as ``SELECT last_value, is_called FROM seq`` reads it — what pg_dump dumps.  Not MVCC:
    a read in any transaction (the dump's snapshot too) sees the sequence as it is at that moment."""

    last_value: int
    is_called: bool
    increment: int
    cycle: bool

    @property
    def next_value(self) -> int:
        """What nextval() returns next (ignoring the end of its range)."""
        return self.last_value + self.increment if self.is_called else self.last_value

    def behind(self, other: SequenceState) -> bool:
        """Would this sequence hand out a value ``other`` has handed out already (in its direction)?  Never for
        a cycling sequence (it goes back by design)."""
        if self.cycle or other.cycle:
            return False
        step = self.increment or other.increment
        return self.next_value < other.next_value if step > 0 else self.next_value > other.next_value

    def to_dict(self) -> dict[str, Any]:
        return {"last_value": self.last_value, "is_called": self.is_called, "increment": self.increment,
                "cycle": self.cycle}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SequenceState:
        return cls(int(d["last_value"]), bool(d["is_called"]), int(d.get("increment", 1)), bool(d.get("cycle")))


def list_sequences(conn: psycopg.Connection[Any]) -> list[tuple[str, str, int, bool]]:
    """(schema, name, increment, cycle) of every sequence pg_dump dumps the state of (:data:`LIST_SEQUENCES_SQL`),
    as the session's snapshot sees the catalog."""
    return [(str(r[0]), str(r[1]), int(r[2]), bool(r[3])) for r in conn.execute(LIST_SEQUENCES_SQL)]


def sequence_states(conn: psycopg.Connection[Any]) -> dict[str, SequenceState]:
    """Every dumped sequence's state (:data:`LIST_SEQUENCES_SQL`), keyed by :func:`qualified` name; read a few
    hundred sequences per statement, at most max_locks_per_transaction (a read locks its sequence until the
    statement's transaction ends: a statement reading more than the server's lock table had room for failed "out
    of shared memory").  ``conn`` in autocommit, so that each statement's locks go with it."""
    seqs = list_sequences(conn)
    out: dict[str, SequenceState] = {}
    row = conn.execute(MAX_LOCKS_SQL).fetchone() if seqs else None
    per_query = max(1, min(SEQUENCES_PER_QUERY, int(row[0]) if row else SEQUENCES_PER_QUERY))
    for start in range(0, len(seqs), per_query):
        chunk = seqs[start:start + per_query]
        query = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}::int, last_value, is_called FROM {}").format(sql.Literal(i), sql.Identifier(sch, name))
            for i, (sch, name, _inc, _cyc) in enumerate(chunk))
        for i, last, called in conn.execute(query):
            sch, name, inc, cyc = chunk[int(i)]
            out[qualified(sch, name)] = SequenceState(int(last), bool(called), inc, cyc)
    return out


# a SEQUENCE SET entry of an archive, as pg_restore prints it: SELECT pg_catalog.setval('<name>', <value>, <called>);
# (E'' when the dump was made with standard_conforming_strings off: backslashes doubled too)
_SETVAL_RE = re.compile(r"SELECT pg_catalog\.setval\((E?)'((?:[^']|'')*)', (-?\d+), (true|false)\);")


def parse_setval(line: str) -> tuple[str, int, bool] | None:
    """(:func:`qualified` key, last_value, is_called) of a SEQUENCE SET line; None for any other line."""
    m = _SETVAL_RE.fullmatch(line)
    if m is None:
        return None
    text = m.group(2).replace("''", "'")
    if m.group(1):
        text = text.replace("\\\\", "\\")
    names = split_qualified(text)
    if names is None or len(names) != 2:
        return None
    return qualified(*names), int(m.group(3)), m.group(4) == "true"


def split_qualified(text: str) -> list[str] | None:
    """``schema.name`` as SQL writes it (a part in double quotes, doubled inside, where it needs them) split into
    its parts; None when it is not one."""
    parts: list[str] = []
    i = 0
    while True:
        if text.startswith('"', i):
            buf, j = [], i + 1
            while True:
                k = text.find('"', j)
                if k < 0:
                    return None
                buf.append(text[j:k])
                if text.startswith('""', k):
                    buf.append('"')
                    j = k + 2
                    continue
                i = k + 1
                break
            parts.append("".join(buf))
        else:
            k = text.find(".", i)
            k = len(text) if k < 0 else k
            if k == i:
                return None
            parts.append(text[i:k])
            i = k
        if i == len(text):
            return parts
        if text[i] != ".":
            return None
        i += 1


class DumpedSequences:
    """The sequence states an archive of pg_dump holds (its SEQUENCE SET entries), read by ``pg_restore
    --data-only --table NAME…`` from a directory-format dump (``source``) or from a custom-format stream fed to
    it chunk by chunk (:meth:`feed`).  The entries are in the table of contents, which pg_restore reads first:
    it stops reading there unless a table has a sequence's name (its COPY data is then passed over).  Keyed by
    :func:`qualified` name."""

    def __init__(self, pg_restore: str, names: list[str], source: Path | None = None) -> None:
        argv = [pg_restore, "--data-only", "--file=-", *sorted({f"--table={n}" for n in names})]
        if source is not None:
            argv.append(str(source))
        self.states: dict[str, tuple[int, bool]] = {}
        self._feeding = source is None
        self._sp = proc.spawn(argv, stdin=proc.PIPE if source is None else proc.DEVNULL)
        self._reader = threading.Thread(target=self._read, daemon=True, name="sequence-set-reader")
        self._reader.start()

    def _read(self) -> None:
        in_copy = False  # COPY data of a table named like a sequence: never taken for a setval
        for raw in self._sp.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if in_copy:
                in_copy = line != "\\."
            elif line.startswith("COPY ") and line.endswith(" FROM stdin;"):
                in_copy = True
            elif (found := parse_setval(line)) is not None:
                self.states[found[0]] = found[1:]

    def feed(self, chunk: bytes | memoryview) -> None:
        """The next bytes of the custom-format stream (ignored once pg_restore has read what it needs)."""
        if not self._feeding:
            return
        try:
            self._sp.stdin.write(chunk)
        except (BrokenPipeError, OSError, ValueError):
            self._feeding = False  # it stopped after the table of contents; its exit status is judged in finish

    def finish(self) -> dict[str, tuple[int, bool]]:
        """The states read; raises :class:`~upkeeper.errors.BackupError` when pg_restore failed."""
        try:
            if self._sp.popen.stdin is not None:
                with contextlib.suppress(OSError):
                    self._sp.popen.stdin.close()
            res = self._sp.wait(check=False, timeout=600)
            self._reader.join(timeout=30)
        finally:
            self._sp.__exit__(None, None, None)
        check_stage(res, "reading the dump's sequence values")
        return self.states

    def abort(self) -> None:
        self._sp.__exit__(None, None, None)


def large_objects(conn: psycopg.Connection[Any]) -> int:
    """How many large objects the database holds (as the session's snapshot sees them: pg_largeobject_metadata
    is an ordinary catalog)."""
    row = conn.execute(LARGE_OBJECTS_SQL).fetchone()
    return int(row[0]) if row else 0


def lock_conflicts(conn: psycopg.Connection[Any], oids: list[int], ours: tuple[int, ...] = ()) -> list[str]:
    """The sessions that hold or queue for an ACCESS EXCLUSIVE lock on any of ``oids``, described; ``ours``
    are the backup's own sessions (named as "the backup" among those a waiting session queues behind)."""
    out: list[str] = []
    for rel, pid, granted, user, app, state, age, cmd, blockers in conn.execute(LOCK_CONFLICTS_SQL, (oids,)):
        parts = [f"user {user}" if user else "", f"application {app!r}" if app else "", str(state),
                 f"transaction open {human_duration(int(age))}" if age else "", f"statement {cmd}" if cmd else ""]
        others = [str(b) for b in blockers or () if b not in ours]
        behind = ("" if granted or not blockers else f" behind pid {', '.join(others)}" if others
                  else " behind the backup's own locks")
        out.append(f"pid {pid} ({', '.join(p for p in parts if p)}) "
                   f"{'holds' if granted else 'waits for'} an ACCESS EXCLUSIVE lock on {rel}{behind}")
    return out


@dataclass(frozen=True)
class BlockedSession:
    """A session waiting for a lock the backup holds."""

    pid: int
    user: str
    application: str
    mode: str  # as pg_locks says it: AccessExclusiveLock
    relation: str  # schema.table, or the kind of lock object
    waited: float  # seconds
    statement: str  # the first word of its query, upper-cased ('' when not visible to the backup's role)
    queued: int  # sessions waiting behind it

    @property
    def lock(self) -> str:
        """``ACCESS EXCLUSIVE`` from ``AccessExclusiveLock``."""
        return " ".join(re.findall(r"[A-Z][a-z]*", self.mode.removesuffix("Lock"))).upper() or self.mode

    def describe(self) -> str:
        who = [f"user {self.user}" if self.user else "", f"application {self.application!r}" if self.application
               else "", f"statement {self.statement}" if self.statement else ""]
        known = ", ".join(w for w in who if w)
        return (f"pid {self.pid}{f' ({known})' if known else ''} has waited {human_duration(self.waited)} for "
                f"{'an' if self.lock[:1] in 'AEIOU' else 'a'} {self.lock} lock on {self.relation} held by the backup, with {self.queued} session"
                f"{'' if self.queued == 1 else 's'} queued behind it")


def blocked_by_backup(conn: psycopg.Connection[Any], app: str, pids: tuple[int, ...]) -> list[BlockedSession]:
    """The sessions waiting for a lock held by the backup's sessions: pg_dump's (application_name ``app``) and
    ``pids``."""
    return [BlockedSession(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), float(r[5]), str(r[6]),
                           int(r[7]))
            for r in conn.execute(BLOCKED_BY_BACKUP_SQL, {"app": app, "pids": list(pids)})]


def terminate_backup_sessions(conn: psycopg.Connection[Any], app: str, pids: tuple[int, ...]) -> list[int]:
    """Ends pg_dump's sessions (application_name ``app``) and ``pids``: the pids ended."""
    return [int(r[0]) for r in conn.execute(TERMINATE_BACKUP_SESSIONS_SQL, {"app": app, "pids": list(pids)}) if r[1]]


def stderr_errors(stderr: str) -> list[str]:
    """Lines that report an error even when the exit code says success."""
    return [ln for ln in stderr.splitlines() if re.search(r"(^|[\s:])(error|ERROR|FATAL|PANIC):", ln)]


def check_stage(result: proc.ProcResult, what: str) -> None:
    """Exit code and stderr of one pipeline stage: any ERROR line fails it."""
    name = Path(result.argv[0]).name
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        tail = "\n".join(lines[-4:])
        # the error itself, when the tail is only its detail (pg_dump's "Query was:" may run to many lines)
        first = next((ln for ln in lines if re.search(r"(^|[\s:])(error|ERROR|FATAL|PANIC):", ln)), None)
        if first is not None and first not in lines[-4:]:
            tail = f"{first}\n…\n{tail}"
        error = ToolKilled if -result.returncode in KILLED_FROM_OUTSIDE else BackupError
        raise error(f"{name} {proc.describe_exit(result.returncode)} while {what}" + (f": {tail}" if tail else ""))
    errs = stderr_errors(result.stderr)
    if errs:
        raise BackupError(f"{name} reported an error while {what}: {errs[-1]}")


_LOCK_TIMED_OUT_RE = re.compile(r"canceling statement due to (?:statement|lock) timeout")
_LOCK_QUERY_RE = re.compile(r"LOCK TABLE (.+?) IN ACCESS SHARE MODE")
_NO_RELATION_RE = re.compile(r'relation ".+?" does not exist')
_NOWAIT_RE = re.compile(r'could not obtain lock on relation "(.+?)"')
RECOVERY_CONFLICT = "conflict with recovery"
RECOVERY_CONFLICT_HINT = ("Try: on the standby, let queries wait for replay longer (max_standby_streaming_delay, "
                          "e.g. -1 while backups run) and set hot_standby_feedback = on; or back up from the primary")


def vanished_table(stderr: str) -> bool:
    """pg_dump failed to lock a table its snapshot lists because it was dropped or renamed since."""
    return _LOCK_QUERY_RE.search(stderr) is not None and _NO_RELATION_RE.search(stderr) is not None


def locked_table(stderr: str) -> tuple[str, bool] | None:
    """(table, by a parallel worker) when pg_dump failed for a table lock it could not have: waited for in vain
    (--lock-wait-timeout), or refused to a worker of ``--jobs`` (it asks NOWAIT, since an ACCESS EXCLUSIVE
    request queued after the leader's lock would otherwise deadlock it)."""
    nowait = _NOWAIT_RE.search(stderr)
    if nowait:
        return nowait.group(1), True
    query = _LOCK_QUERY_RE.search(stderr)
    return (query.group(1), False) if query and _LOCK_TIMED_OUT_RE.search(stderr) else None


#: the timeouts of the sessions that create, rename and drop databases: whatever the database they connect to
#: (the target's own, which may be the one backed up and restored) or their role says, CREATE DATABASE, a rename
#: waiting for its lock or DROP DATABASE of a large one is never cancelled half-way
NO_TIMEOUT_OPTIONS = "-c statement_timeout=0 -c lock_timeout=0 -c idle_in_transaction_session_timeout=0"

# where the session's default_transaction_read_only comes from: 'database' (ALTER DATABASE … SET) and 'database
# user' (ALTER ROLE … IN DATABASE … SET) are the database connected to; 'user' is the role's own, meant for all
# its sessions
_READ_ONLY_SOURCE_SQL = ("SELECT source FROM pg_settings WHERE name = 'default_transaction_read_only' "
                         "AND setting = 'on'")


@contextlib.contextmanager
def admin_connect(target: PostgresTarget, dbname: str, *, application_name: str | None = None
                  ) -> Iterator[psycopg.Connection[Any]]:
    """A session in ``dbname`` (:func:`admin_db`) that creates, renames and drops other databases: without
    statement or lock timeouts (:data:`NO_TIMEOUT_OPTIONS`), and writable when only the database it is in
    makes sessions read-only (the target's database, a read-only archive restored under another name: its
    settings are about it, not about what the role may do on the server).  A role whose sessions are read-only
    (``ALTER ROLE … SET default_transaction_read_only``), or a standby, stays read-only."""
    with connect(target, dbname, application_name=application_name, options=NO_TIMEOUT_OPTIONS) as conn:
        row = conn.execute(_READ_ONLY_SOURCE_SQL).fetchone()
        if row and row[0] in ("database", "database user"):
            conn.execute("SET default_transaction_read_only = off")
        yield conn


def database_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def database_contents(target: PostgresTarget, name: str) -> str:
    """What database ``name`` holds, e.g. "7 tables, 7 sequences, 1 large object" (or that it holds none of
    the kinds looked for)."""
    with connect(target, name, options=OWN_SESSION_OPTIONS) as conn:
        row = conn.execute(DATABASE_CONTENTS_SQL).fetchone()
    assert row is not None
    parts = [f"{n} {one if n == 1 else many}" for (one, many, _e), n in zip(DATABASE_CONTENTS, row, strict=True) if n]
    return ", ".join(parts) or "no tables, large objects, functions, types, schemas or extensions of its own"


def rename_database(conn: psycopg.Connection[Any], old: str, new: str, *, evict: bool = False,
                    attempts: int = 10) -> None:
    """``ALTER DATABASE old RENAME TO new``.  Renaming needs every other session to have left ``old``: with
    ``evict`` they are terminated first, and again when one reconnected in between (``attempts`` times)."""
    stmt = sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new))
    for attempt in range(1, attempts + 1):
        if evict:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = %s AND pid <> pg_backend_pid()", (old,))
        try:
            conn.execute(stmt)
            return
        except psycopg.errors.ObjectInUse:
            if not evict or attempt == attempts:
                raise
            time.sleep(0.2)


def admin_db(target: PostgresTarget, avoid: str) -> str:
    """A database to connect to for CREATE/DROP DATABASE ``avoid`` (never ``avoid`` itself)."""
    if target.dbname != avoid:
        return target.dbname
    return "postgres" if avoid != "postgres" else "template1"


def create_database(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))


def comment_database(conn: psycopg.Connection[Any], name: str, comment: str | None) -> None:
    """``COMMENT ON DATABASE name IS comment`` (None removes it)."""
    conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(comment)))


def drop_database(conn: psycopg.Connection[Any], name: str) -> None:
    """Drop ``name`` (its sessions terminated), a template database too: the temporary, set-aside and scratch
    databases of restores and verifies take the backed-up database's IS_TEMPLATE, and PostgreSQL drops no
    template ("cannot drop a template database"); its flag is cleared first, as pg_restore --clean does."""
    row = conn.execute("SELECT datistemplate FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if row and row[0]:
        conn.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(sql.Identifier(name)))
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def which_or_fail(name: str, pkg: str) -> str:
    found = shutil.which(name)
    if not found:
        raise SetupError(f"{name} not found", f"Try: apt-get install {pkg}")
    return found
