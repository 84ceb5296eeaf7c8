"""postgres.maintenance: the weekly survey and repair of a PostgreSQL server.

Server-wide checks run once; table and index checks once per surveyed database; then the repairs
(bloated tables) and the audit-log cleanup.  The checks live in ``_checks_server``,
``_checks_tables`` and ``_checks_indexes`` (one function and one SQL constant each).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from upkeeper import lazy
from upkeeper.config.targets import PostgresTarget
from upkeeper.core.task import Finding, Result, Severity, Status, Task, TaskContext, task
from upkeeper.errors import TaskError
from upkeeper.tasks.postgres import _checks_indexes, _checks_server, _checks_tables  # noqa: F401 - register
from upkeeper.tasks.postgres._audit import audit_cleanup
from upkeeper.tasks.postgres._conn import describe_pg_error
from upkeeper.tasks.postgres._options import MaintenanceOptions
from upkeeper.tasks.postgres._repair import repair_bloat
from upkeeper.tasks.postgres._survey import (
    DATABASE_CHECKS,
    SERVER_CHECKS,
    Probe,
    Session,
    Survey,
    failed_check,
    run_checks,
    server_info,
)

if TYPE_CHECKING:
    import psycopg
else:
    psycopg = lazy.module("psycopg")

ALL_DATABASES_SQL = """
SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname
"""


@task
class PostgresMaintenance(Task[MaintenanceOptions]):
    """Survey the server and each database (checks listed in docs/postgres.md), then repair bloated tables and clean the audit log."""


    name = "postgres.maintenance"
    summary = "weekly survey and repair: bloat, slow queries, wraparound, sequences, indexes, replication"
    target_kinds = ("postgres",)
    Options = MaintenanceOptions
    category = "maintenance"
    exclusive = True  # it may VACUUM FULL

    def run(self, ctx: TaskContext, options: MaintenanceOptions) -> Result:
        target = ctx.require_target()
        assert isinstance(target, PostgresTarget)
        t0 = time.monotonic()
        survey = Survey(ctx, options, target)
        main = Session(survey, target.dbname)
        try:
            probe = main.open()
            survey.server = server_info(probe)
            dbs = self._databases(options, target, probe)
        except TaskError as exc:
            main.close()
            return Result(status=Status.FAIL, summary=exc.message, findings=[Finding(
                "postgres.unreachable", Severity.CRITICAL, target.display(), exc.message,
                (exc.hint or "").removeprefix("Try: "))])
        survey.fact("_server")["databases"] = dbs
        try:
            run_checks(survey, main, SERVER_CHECKS)
            for db in dbs:
                session = main if db == target.dbname else Session(survey, db)
                if session is not main:
                    try:
                        session.open()
                    except TaskError as exc:
                        survey.findings.append(Finding(
                            "postgres.database_unreachable", Severity.CRITICAL, f"database {db}", exc.message,
                            "check the job's 'databases' option and the role's CONNECT privilege"))
                        continue
                try:
                    run_checks(survey, session, DATABASE_CHECKS)
                finally:
                    if session is not main:
                        session.close()
                if options.enabled("repair"):
                    self._guard(survey, db, "repair", lambda db=db: repair_bloat(survey, db))
            if options.enabled("audit_cleanup"):
                self._guard(survey, options.audit_database or target.dbname, "audit_cleanup",
                            lambda: audit_cleanup(survey))
        finally:
            main.close()
        return self._result(survey, dbs, time.monotonic() - t0)

    @staticmethod
    def _databases(options: MaintenanceOptions, target: PostgresTarget, probe: Probe) -> list[str]:
        if options.databases == ["*"]:
            return [str(r[0]) for r in probe.rows(ALL_DATABASES_SQL)]
        return list(dict.fromkeys(options.databases or [target.dbname]))

    @staticmethod
    def _guard(survey: Survey, db: str, name: str, action: Callable[..., None]) -> None:
        """Run a repair action; its failure is a finding, like a failed check."""
        try:
            action()
        except TaskError as exc:
            failed_check(survey, db, name, exc.message)
        except psycopg.Error as exc:
            failed_check(survey, db, name, describe_pg_error(exc))
        except Exception as exc:
            survey.ctx.log.exception("%s failed", name)
            failed_check(survey, db, name, f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _result(survey: Survey, dbs: list[str], elapsed: float) -> Result:
        counts = {sev: sum(1 for f in survey.findings if f.severity is sev) for sev in Severity}
        survey.metrics.update({
            "duration_s": round(elapsed, 3),
            "queries": float(survey.queries),
            "checks_failed": float(survey.failed_checks),
            "databases": float(len(dbs)),
            "findings_warning": float(counts[Severity.WARNING]),
            "findings_critical": float(counts[Severity.CRITICAL]),
        })
        by_check: dict[str, int] = {}
        for f in survey.findings:
            if f.severity is not Severity.INFO:
                by_check[f.check.removeprefix("postgres.")] = by_check.get(f.check.removeprefix("postgres."), 0) + 1
        summary = (f"surveyed {len(dbs)} database(s) in {elapsed:.1f}s ({survey.queries} queries): "
                   f"{counts[Severity.CRITICAL]} critical, {counts[Severity.WARNING]} warning(s)")
        if by_check:
            summary += " — " + ", ".join(f"{k} {v}" for k, v in sorted(by_check.items(), key=lambda kv: -kv[1]))
        repaired = int(survey.metrics.get("repaired_tables", 0))
        if repaired:
            summary += f"; repaired {repaired} table(s)"
        if survey.notes:
            summary += "; " + "; ".join(survey.notes)
        return Result(summary=summary, findings=survey.findings, metrics=survey.metrics)
