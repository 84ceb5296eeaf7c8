"""postgres.vacuum: VACUUM (ANALYZE) listed tables or all, with per-table figures.

A table whose lock cannot be had within ``lock_timeout`` becomes a finding, not a hang.
"""

from __future__ import annotations

import time
from datetime import timedelta

import psycopg
from psycopg import sql
from pydantic import Field

from upkeeper.config.targets import PostgresTarget
from upkeeper.config.types import Duration
from upkeeper.core.task import Finding, Result, Severity, Task, TaskContext, TaskOptions, task
from upkeeper.fmt import human_duration
from upkeeper.tasks.postgres._conn import connect, describe_pg_error, qualified

# Ordinary tables, partitions and materialized views outside the system schemas.
LIST_TABLES_SQL = """
SELECT n.nspname, c.relname
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

PER_TABLE_METRICS_MAX = 200


class VacuumOptions(TaskOptions):
    databases: list[str] | None = Field(None, description="databases to vacuum (default: the target's dbname)")
    tables: list[str] | None = Field(
        None, description="tables as 'schema.table' or 'table' (public); default: every table"
    )
    analyze: bool = Field(True, description="run VACUUM (ANALYZE) to refresh planner statistics as well")
    lock_timeout: Duration = Field(
        default=timedelta(seconds=30),
        description="give up on a table whose lock cannot be had in this time and report it. "
        "Source: upkeeper default (a locked table must not hang the run)",
    )


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
        per_table: list[tuple[str, float, int, int]] = []  # (db.schema.table, seconds, dead before, dead after)
        done = 0
        t_all = time.monotonic()
        for db in options.databases or [target.dbname]:
            notices: list[str] = []
            with connect(target, db, notices=notices) as conn:
                wanted = self._tables(conn, options.tables, db, findings)
                before = self._dead_tuples(conn)
                conn.execute(sql.SQL("SET lock_timeout = {}").format(
                    sql.Literal(int(options.lock_timeout.total_seconds() * 1000))))
                vacuumed: list[tuple[str, str, float]] = []
                for i, (schema, table) in enumerate(wanted):
                    ctx.progress(f"{db}: {schema}.{table}", i / max(1, len(wanted)))
                    stmt = sql.SQL("VACUUM (ANALYZE) {}" if options.analyze else "VACUUM {}").format(
                        qualified(schema, table))
                    notices.clear()
                    t0 = time.monotonic()
                    try:
                        conn.execute(stmt)
                    except psycopg.errors.LockNotAvailable:
                        findings.append(Finding(
                            "postgres.vacuum_lock_timeout", Severity.WARNING, f"{db}.{schema}.{table}",
                            f"could not lock {schema}.{table} within {human_duration(options.lock_timeout)}; "
                            "skipped",
                            "find the blocking session in pg_stat_activity / pg_locks; retry later",
                            value=options.lock_timeout.total_seconds(), threshold=options.lock_timeout.total_seconds(),
                        ))
                        continue
                    except psycopg.Error as exc:
                        findings.append(Finding(
                            "postgres.vacuum_failed", Severity.CRITICAL, f"{db}.{schema}.{table}",
                            f"VACUUM failed: {describe_pg_error(exc)}", "check the server log",
                        ))
                        continue
                    elapsed = time.monotonic() - t0
                    for n in notices:
                        if "skipping" in n:
                            findings.append(Finding(
                                "postgres.vacuum_skipped", Severity.WARNING, f"{db}.{schema}.{table}", n,
                                "run the job as the table owner or a superuser",
                            ))
                    vacuumed.append((schema, table, elapsed))
                after = self._dead_tuples(conn)
                done += len(vacuumed)
                per_table.extend(
                    (f"{db}.{schema}.{table}", elapsed, before.get((schema, table), 0), after.get((schema, table), 0))
                    for schema, table, elapsed in vacuumed
                )
        total_before = sum(p[2] for p in per_table)
        total_after = sum(p[3] for p in per_table)
        removed = max(0, total_before - total_after)
        metrics.update({
            "tables_vacuumed": float(done),
            "dead_tuples_before": float(total_before),
            "dead_tuples_after": float(total_after),
            "dead_tuples_removed": float(removed),
            "duration_s": round(time.monotonic() - t_all, 3),
        })
        # per-table figures for the tables that mattered most (bounded for very large schemas)
        for key, elapsed, b, a in sorted(per_table, key=lambda p: (-p[2], -p[1]))[:PER_TABLE_METRICS_MAX]:
            metrics[f"table.{key}.duration_s"] = round(elapsed, 4)
            metrics[f"table.{key}.dead_before"] = float(b)
            metrics[f"table.{key}.dead_after"] = float(a)
        summary = (f"vacuumed {done} table(s){' with ANALYZE' if options.analyze else ''}; "
                   f"dead tuples {total_before} → {total_after} ({removed} removed)")
        if findings:
            summary += f"; {len(findings)} finding(s)"
        return Result(summary=summary, findings=findings, metrics=metrics)

    @staticmethod
    def _dead_tuples(conn: psycopg.Connection[tuple[object, ...]]) -> dict[tuple[str, str], int]:
        conn.execute(CLEAR_SNAPSHOT_SQL)
        return {(str(r[0]), str(r[1])): int(str(r[2])) for r in conn.execute(DEAD_TUPLES_SQL)}

    @staticmethod
    def _tables(
        conn: psycopg.Connection[tuple[object, ...]], wanted: list[str] | None, db: str, findings: list[Finding]
    ) -> list[tuple[str, str]]:
        existing = [(str(r[0]), str(r[1])) for r in conn.execute(LIST_TABLES_SQL)]
        if wanted is None:
            return existing
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
        return out
