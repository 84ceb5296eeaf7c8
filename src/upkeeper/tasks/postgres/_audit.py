"""Audit-log cleanup: delete rows past retention in small batches with pauses, never one huge DELETE.

Each batch is its own short transaction (autocommit): locks are held for milliseconds, WAL arrives at
replicas in small pieces, autovacuum can follow, and a run stopped half-way keeps what it deleted.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from upkeeper import lazy
from upkeeper.core.task import Finding, Severity
from upkeeper.fmt import human_duration
from upkeeper.tasks.postgres._conn import connect, describe_pg_error
from upkeeper.tasks.postgres._survey import Survey

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql
else:
    psycopg = lazy.module("psycopg")
    sql = lazy.module("psycopg.sql")

AUDIT_COLUMN_SQL = """
SELECT format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a
WHERE a.attrelid = to_regclass(%(table)s) AND a.attname = %(column)s AND a.attnum > 0 AND NOT a.attisdropped
"""

#: one batch: the ctids of at most N expired rows (a TID scan deletes them).  A ctid is unique only within one
#: table: in a partitioned table every partition has its own (0,1), (0,2)… so the outer DELETE repeats the cutoff,
#: or it would delete the rows at the same places in the partitions of recent rows
AUDIT_DELETE_SQL = """
DELETE FROM {table} WHERE ctid = ANY (ARRAY(
  SELECT ctid FROM {table} WHERE {column} < %(cutoff)s LIMIT %(n)s))
  AND {column} < %(cutoff)s
"""

AUDIT_COUNT_SQL = "SELECT count(*) FROM {table} WHERE {column} < %(cutoff)s"
#: after a cleanup that found no more to delete: is an expired row still there?  (a BEFORE DELETE trigger that
#: returns NULL, a row-level security policy for DELETE, a rule: the server skipped rows without an error)
AUDIT_LEFT_SQL = "SELECT EXISTS (SELECT 1 FROM {table} WHERE {column} < %(cutoff)s)"

TIME_TYPES = ("timestamp with time zone", "timestamp without time zone", "date")


def split_table(name: str) -> tuple[str, str]:
    schema, _, table = name.rpartition(".")
    return schema or "public", table


def audit_cleanup(s: Survey) -> None:
    o = s.options
    if not o.audit_table or o.audit_retention is None:
        return
    db = o.audit_database or s.target.dbname
    schema, table = split_table(o.audit_table)
    subject = f"{db}.{schema}.{table}"
    if s.server is not None and s.server.in_recovery:
        s.findings.append(Finding("postgres.audit_cleanup", Severity.INFO, subject,
                                  "not cleaned: this server is a standby (read-only)", "run against the primary"))
        return
    ident = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
    column = sql.Identifier(o.audit_column)
    cutoff = s.ctx.now() - o.audit_retention
    try:
        with connect(s.target, db) as conn:
            conn.execute(sql.SQL("SET lock_timeout = {}").format(
                sql.Literal(max(1, int(o.lock_timeout.total_seconds() * 1000)))))
            conn.execute(sql.SQL("SET statement_timeout = {}").format(
                sql.Literal(max(1, int(o.check_timeout.total_seconds() * 1000)))))
            quoted = ident.as_string(conn)
            row = conn.execute(AUDIT_COLUMN_SQL, {"table": quoted, "column": o.audit_column}).fetchone()
            if row is None:
                s.findings.append(Finding(
                    "postgres.audit_cleanup_failed", Severity.WARNING, subject,
                    f"table {schema}.{table} or its column {o.audit_column!r} does not exist in database {db}",
                    "fix audit_table / audit_column / audit_database in the job's options"))
                return
            if row[0] not in TIME_TYPES:
                s.findings.append(Finding(
                    "postgres.audit_cleanup_failed", Severity.WARNING, subject,
                    f"column {o.audit_column!r} is {row[0]}, not a timestamp or date",
                    "point audit_column at the row's creation time"))
                return
            if s.ctx.dry_run:
                n = conn.execute(sql.SQL(AUDIT_COUNT_SQL).format(table=ident, column=column),
                                 {"cutoff": cutoff}).fetchone()
                s.findings.append(Finding(
                    "postgres.audit_cleanup", Severity.INFO, subject,
                    f"dry run: {n[0] if n else 0} row(s) older than {human_duration(o.audit_retention)} would be "
                    "deleted", "", value=float(n[0] if n else 0)))
                return
            delete = sql.SQL(AUDIT_DELETE_SQL).format(table=ident, column=column)
            total, batches, complete = 0, 0, False
            t0 = time.monotonic()
            deadline = t0 + o.audit_max_duration.total_seconds()
            while True:
                cur = conn.execute(delete, {"cutoff": cutoff, "n": o.audit_batch_size})
                batches += 1
                total += cur.rowcount
                if cur.rowcount < o.audit_batch_size:
                    complete = True
                    break
                if time.monotonic() >= deadline:
                    break
                s.ctx.progress(f"{db}: {schema}.{table}: {total} rows deleted", None)
                time.sleep(o.audit_pause.total_seconds())
            probe = (conn.execute(sql.SQL(AUDIT_LEFT_SQL).format(table=ident, column=column), {"cutoff": cutoff})
                     .fetchone() if complete else None)
            left = probe is not None and bool(probe[0])
    except psycopg.Error as exc:
        s.findings.append(Finding(
            "postgres.audit_cleanup_failed", Severity.WARNING, subject,
            f"cleanup stopped: {describe_pg_error(exc)} (rows deleted by earlier batches stay deleted)",
            "see the message; a lock or statement timeout means the table was busy — the next run continues"))
        return
    elapsed = time.monotonic() - t0
    s.metrics["audit_rows_deleted"] = float(total)
    s.metrics["audit_batches"] = float(batches)
    s.notes.append(f"audit cleanup deleted {total} row(s)")
    if left:
        s.findings.append(Finding(
            "postgres.audit_cleanup_incomplete", Severity.WARNING, subject,
            f"rows older than {human_duration(o.audit_retention)} are still in {schema}.{table} after the cleanup "
            f"deleted {total}: the server skipped them without an error",
            "look for a BEFORE DELETE trigger that returns NULL, a row-level security policy for DELETE or a rule "
            f"on {schema}.{table} (\\d+ {schema}.{table} in psql); the job's user must be able to delete them"))
    s.findings.append(Finding(
        "postgres.audit_cleanup", Severity.INFO, subject,
        f"deleted {total} row(s) older than {human_duration(o.audit_retention)} in {batches} batch(es) of at most "
        f"{o.audit_batch_size} ({human_duration(elapsed)})"
        + ("" if complete else f"; stopped after audit_max_duration ({human_duration(o.audit_max_duration)}), "
           "the next run continues"),
        "", value=float(total),
        data={"batches": batches, "cutoff": cutoff.isoformat(), "complete": complete}))
