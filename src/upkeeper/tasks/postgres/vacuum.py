"""postgres.vacuum: VACUUM (ANALYZE) listed tables or all, with per-table figures.

Dead tuples removed: the larger of VACUUM VERBOSE's own count ("tuples: N removed, M remain, K are
dead but not yet removable", table and TOAST table summed) and the statistics views' before/after
difference (which also sees dead tuples page pruning cleared before VACUUM came; and stands in
alone when the server's messages are in another language).
A table whose lock cannot be had within ``lock_timeout`` becomes a finding, not a hang.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, cast

from pydantic import Field

from upkeeper import lazy
from upkeeper.config.targets import PostgresTarget
from upkeeper.config.types import Duration
from upkeeper.core.task import Finding, Result, Severity, Task, TaskContext, TaskOptions, task
from upkeeper.errors import TaskError
from upkeeper.fmt import human_duration
from upkeeper.tasks.postgres._conn import connect, describe_pg_error, qualified

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql
else:
    psycopg = lazy.module("psycopg")
    sql = lazy.module("psycopg.sql")

# Ordinary tables, partitions and materialized views outside the system schemas, and whether this user may
# vacuum each (PostgreSQL's own rule: the table's owner, the database's owner for a table not shared, a superuser;
# PostgreSQL 17+ also the MAINTAIN privilege).  PostgreSQL skips the others with a mere WARNING, in the server's
# language: the rule is what tells a skipped table on a server whose messages are not in English.
LIST_TABLES_SQL = """
SELECT n.nspname, c.relname,
       pg_has_role(c.relowner, 'USAGE')
       OR (NOT c.relisshared AND pg_has_role((SELECT datdba FROM pg_database
                                              WHERE datname = current_database()), 'USAGE'))
       {maintain},
       c.oid::bigint,
       ARRAY(SELECT a.relid::bigint FROM pg_partition_ancestors(c.oid) a WHERE a.relid <> c.oid),
       c.relkind::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
ORDER BY n.nspname, c.relname
"""

DEAD_TUPLES_SQL = """
SELECT schemaname, relname, n_dead_tup::bigint, n_live_tup::bigint
FROM pg_stat_all_tables
WHERE schemaname NOT IN ('pg_catalog', 'information_schema') AND schemaname NOT LIKE 'pg\\_toast%%'
"""

CLEAR_SNAPSHOT_SQL = "SELECT pg_stat_clear_snapshot()"

VACUUM_SQL = "VACUUM (VERBOSE, ANALYZE) {}"
VACUUM_NO_ANALYZE_SQL = "VACUUM (VERBOSE) {}"

#: PostgreSQL 15's VACUUM VERBOSE line (one per heap: the table and its TOAST table)
TUPLES_RE = re.compile(r"tuples: (\d+) removed, (\d+) remain, (\d+) are dead but not yet removable")

PER_TABLE_METRICS_MAX = 200


class VacuumOptions(TaskOptions):
    databases: list[str] | None = Field(None, description="databases to vacuum (default: the target's dbname). "
            "Source: upkeeper (not set by default)")
    tables: list[str] | None = Field(
        None, description="tables as 'schema.table' or 'table' (public); default: every table. "
                "Source: upkeeper (not set by default)"
    )
    analyze: bool = Field(True, description="run VACUUM (ANALYZE) to refresh planner statistics as well. "
            "Source: upkeeper default")
    lock_timeout: Duration = Field(
        default=timedelta(seconds=30),
        description="give up on a table whose lock cannot be had in this time and report it. "
        "Source: upkeeper default (a locked table must not hang the run)",
    )
    not_removable_warn: int = Field(
        10000, ge=0,
        description="warn when VACUUM finds at least this many dead rows it may not remove yet (an old "
        "transaction, an idle-in-transaction session or a replication slot holds them back). "
        "Source: upkeeper default",
    )


@dataclass
class VacuumReport:
    """What VACUUM VERBOSE said about one table (its heap and its TOAST heap, summed)."""

    removed: int = 0
    remain: int = 0
    not_removable: int = 0
    parsed: bool = False

    @classmethod
    def from_notices(cls, notices: list[str]) -> VacuumReport:
        rep = cls()
        for n in notices:
            for m in TUPLES_RE.finditer(n):
                rep.removed += int(m.group(1))
                rep.remain += int(m.group(2))
                rep.not_removable += int(m.group(3))
                rep.parsed = True
        return rep


@task
class PostgresVacuum(Task[VacuumOptions]):
    """VACUUM (ANALYZE) each table, reporting duration and dead tuples before/after per table."""

    name = "postgres.vacuum"
    summary = "VACUUM (ANALYZE) listed tables or all; dead tuples removed per table"
    target_kinds = ("postgres",)
    Options = VacuumOptions
    category = "maintenance"

    def run(self, ctx: TaskContext, options: VacuumOptions) -> Result:
        target = ctx.require_target()
        assert isinstance(target, PostgresTarget)
        findings: list[Finding] = []
        metrics: dict[str, float] = {}
        # (db.schema.table, seconds, dead before, dead after, removed)
        per_table: list[tuple[str, float, int, int, int]] = []
        done = 0
        removed_total = 0
        not_removable_total = 0
        t_all = time.monotonic()
        for db in options.databases or [target.dbname]:
            notices: list[str] = []
            with contextlib.ExitStack() as stack:
                try:
                    conn = stack.enter_context(connect(target, db, notices=notices))
                except TaskError as exc:  # one database out of reach: the others are still vacuumed
                    findings.append(Finding(
                        "postgres.database_unreachable", Severity.CRITICAL, f"database {db}", exc.message,
                        "check the job's 'databases' option and the role's CONNECT privilege"))
                    continue
                wanted, may_vacuum, leaves = self._tables(conn, options.tables, db, findings)
                before = self._dead_tuples(conn)
                conn.execute(sql.SQL("SET lock_timeout = {}").format(
                    sql.Literal(int(options.lock_timeout.total_seconds() * 1000))))
                vacuumed: list[tuple[str, str, float, VacuumReport]] = []
                for i, (schema, table) in enumerate(wanted):
                    ctx.progress(f"{db}: {schema}.{table}", i / max(1, len(wanted)))
                    stmt = sql.SQL(VACUUM_SQL if options.analyze else VACUUM_NO_ANALYZE_SQL).format(
                        qualified(schema, table))
                    notices.clear()
                    t0 = time.monotonic()
                    subject = f"{db}.{schema}.{table}"
                    try:
                        conn.execute(stmt)
                    except psycopg.errors.LockNotAvailable:
                        waited = time.monotonic() - t0
                        # one locked partition stops the VACUUM of its partitioned table: try them one by one
                        parts = [k for k in leaves.pop((schema, table), []) if k not in wanted]
                        wanted.extend(parts)
                        findings.append(Finding(
                            "postgres.vacuum_lock_timeout", Severity.WARNING, subject,
                            f"could not lock {schema}.{table} within {human_duration(options.lock_timeout)}; "
                            + ("its partitions are vacuumed one by one" if parts else "skipped"),
                            "find the blocking session in pg_stat_activity / pg_locks (pg_blocking_pids); "
                            "retry later",
                            value=round(waited, 2), threshold=options.lock_timeout.total_seconds(),
                        ))
                        continue
                    except psycopg.errors.UndefinedTable:
                        ctx.log.info("%s was dropped before it could be vacuumed", subject)
                        continue
                    except psycopg.Error as exc:
                        findings.append(Finding(
                            "postgres.vacuum_failed", Severity.CRITICAL, subject,
                            f"VACUUM failed: {describe_pg_error(exc)}", "check the server log",
                        ))
                        continue
                    elapsed = time.monotonic() - t0
                    skipped = [n for n in notices if "skipping" in n]
                    if not skipped and not may_vacuum.get((schema, table), True):
                        said = "; ".join(notices)  # in the server's language
                        skipped = [f"skipped by the server: only the table's owner, the database's owner or a "
                                   f"superuser may vacuum {schema}.{table}" + (f" ({said})" if said else "")]
                    for n in skipped:
                        findings.append(Finding(
                            "postgres.vacuum_skipped", Severity.WARNING, subject, n,
                            "run the job as the table owner or a superuser",
                        ))
                    if skipped:  # PostgreSQL left the table alone: it is not counted as vacuumed
                        continue
                    vacuumed.append((schema, table, elapsed, VacuumReport.from_notices(notices)))
                after = self._dead_tuples(conn)
                done += len(vacuumed)
                for schema, table, elapsed, rep in vacuumed:
                    # a partitioned table's own statistics are empty: its figures are its partitions'
                    keys = [(schema, table), *leaves.get((schema, table), [])]
                    b, a = sum(before.get(k, 0) for k in keys), sum(after.get(k, 0) for k in keys)
                    # VERBOSE counts only the tuples this VACUUM deleted itself; dead tuples that page
                    # pruning (HOT) already cleared since the statistics counted them show up only in the
                    # statistics' before/after difference.  The larger of the two is what the run got rid of.
                    removed = max(rep.removed if rep.parsed else 0, b - a, 0)
                    removed_total += removed
                    not_removable_total += rep.not_removable
                    per_table.append((f"{db}.{schema}.{table}", elapsed, b, a, removed))
                    if rep.not_removable >= max(1, options.not_removable_warn):
                        findings.append(Finding(
                            "postgres.vacuum_dead_not_removable", Severity.WARNING, f"{db}.{schema}.{table}",
                            f"{rep.not_removable} dead rows could not be removed yet: an older transaction "
                            "still may see them",
                            "look for long transactions and idle-in-transaction sessions (pg_stat_activity "
                            "xact_start), stale replication slots and prepared transactions, then vacuum again",
                            value=rep.not_removable, threshold=options.not_removable_warn,
                        ))
        total_before = sum(p[2] for p in per_table)
        total_after = sum(p[3] for p in per_table)
        metrics.update({
            "tables_vacuumed": float(done),
            "dead_tuples_before": float(total_before),
            "dead_tuples_after": float(total_after),
            "dead_tuples_removed": float(removed_total),
            "dead_tuples_not_removable": float(not_removable_total),
            "duration_s": round(time.monotonic() - t_all, 3),
        })
        # per-table figures for the tables that mattered most (bounded for very large schemas)
        for key, elapsed, b, a, r in sorted(per_table, key=lambda p: (-p[4], -p[2], -p[1]))[:PER_TABLE_METRICS_MAX]:
            metrics[f"table.{key}.duration_s"] = round(elapsed, 4)
            metrics[f"table.{key}.dead_before"] = float(b)
            metrics[f"table.{key}.dead_after"] = float(a)
            metrics[f"table.{key}.dead_removed"] = float(r)
        top = sorted(per_table, key=lambda p: -p[4])[:3]
        summary = (f"vacuumed {done} table(s){' with ANALYZE' if options.analyze else ''}; "
                   f"{removed_total} dead tuple(s) removed")
        if top and top[0][4] > 0:
            summary += " (most: " + ", ".join(f"{k.split('.', 1)[1]} {r}" for k, _, _, _, r in top if r) + ")"
        if findings:
            summary += f"; {len(findings)} finding(s)"
        return Result(summary=summary, findings=findings, metrics=metrics)

    @staticmethod
    def _dead_tuples(conn: psycopg.Connection[tuple[object, ...]]) -> dict[tuple[str, str], int]:
        conn.execute(CLEAR_SNAPSHOT_SQL)
        return {(str(r[0]), str(r[1])): int(str(r[2])) for r in conn.execute(DEAD_TUPLES_SQL).fetchall()}

    @staticmethod
    def _tables(
        conn: psycopg.Connection[tuple[object, ...]], wanted: list[str] | None, db: str, findings: list[Finding]
    ) -> tuple[list[tuple[str, str]], dict[tuple[str, str], bool], dict[tuple[str, str], list[tuple[str, str]]]]:
        """The tables to vacuum, whether this user may vacuum each, and the partitions a partitioned table in the
        list covers.  VACUUM of a partitioned table vacuums every partition: a partition whose partitioned table
        is in the list is left to it, or it would be vacuumed, and counted, twice."""
        maintain = "OR has_table_privilege(c.oid, 'MAINTAIN')" if conn.info.server_version >= 170000 else ""
        rows = conn.execute(LIST_TABLES_SQL.format(maintain=maintain)).fetchall()
        may = {(str(r[0]), str(r[1])): bool(r[2]) for r in rows}
        by_oid = {int(str(r[3])): (str(r[0]), str(r[1])) for r in rows}
        ancestors = {(str(r[0]), str(r[1])): [by_oid[int(str(o))] for o in cast(list[object], r[4] or [])
                                              if int(str(o)) in by_oid]
                     for r in rows}
        kinds = {(str(r[0]), str(r[1])): str(r[5]) for r in rows}

        def covered(chosen: list[tuple[str, str]]) -> tuple[list[tuple[str, str]],
                                                              dict[tuple[str, str], list[tuple[str, str]]]]:
            listed = set(chosen)
            keep = [k for k in chosen if not any(a in listed for a in ancestors.get(k, []))]
            leaves: dict[tuple[str, str], list[tuple[str, str]]] = {}
            for k, anc in ancestors.items():
                if kinds.get(k) == "p":  # a partitioned table inside: no storage of its own
                    continue
                top = next((a for a in reversed(anc) if a in listed), None)  # the outermost one listed
                if top is not None:
                    leaves.setdefault(top, []).append(k)
            return keep, leaves

        existing = list(may)
        if wanted is None:
            keep, leaves = covered(existing)
            return keep, may, leaves
        have = set(existing)
        out = []
        for name in wanted:
            schema, _, table = name.rpartition(".")
            key = (schema or "public", table)
            if key in have:
                out.append(key)
            else:
                findings.append(Finding("postgres.table_missing", Severity.WARNING, f"{db}.{name}",
                                        f"table {name!r} does not exist in database {db!r}",
                                        "fix the job's 'tables' option"))
        keep, leaves = covered(out)
        return keep, may, leaves
