"""The survey machinery of ``postgres.maintenance`` (postgres_exporter style).

A *check* is one small function with its SQL as a named constant beside it, registered with
:func:`check`.  Server checks run once per target; database checks once per surveyed database.
:func:`run_checks` calls each in turn and turns any error into a ``postgres.check_failed``
finding, so one failing check never stops the others.  Every query goes through
:meth:`Probe.rows`, which counts it: the survey's query count is bounded by the number of
checks and databases, never by the number of tables.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from upkeeper import lazy
from upkeeper.config.targets import PostgresTarget
from upkeeper.core.task import Finding, Severity, TaskContext
from upkeeper.errors import TaskError
from upkeeper.tasks.postgres._conn import connect, describe_pg_error
from upkeeper.tasks.postgres._options import MaintenanceOptions

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql
else:
    psycopg = lazy.module("psycopg")
    sql = lazy.module("psycopg.sql")

Row = tuple[Any, ...]

SERVER_INFO_SQL = """
SELECT current_setting('server_version_num')::int,
       pg_is_in_recovery(),
       CASE WHEN pg_has_role(current_user, 'pg_read_all_settings', 'MEMBER')
            THEN current_setting('data_directory') END,
       current_setting('block_size')::int
"""


@dataclass
class ServerInfo:
    version_num: int
    in_recovery: bool
    data_directory: str | None
    block_size: int


class Probe:
    """One database connection for the survey; counts every query it sends."""

    def __init__(self, conn: psycopg.Connection[Row], db: str) -> None:
        self.conn = conn
        self.db = db
        self.queries = 0

    def rows(self, query: str, params: dict[str, Any] | None = None) -> list[Row]:
        self.queries += 1
        cur = self.conn.execute(query, params)
        return cur.fetchall() if cur.description else []

    def one(self, query: str, params: dict[str, Any] | None = None) -> Row:
        rows = self.rows(query, params)
        if not rows:
            raise RuntimeError("query returned no row")
        return rows[0]

    def execute(self, statement: sql.Composable | str, params: dict[str, Any] | None = None) -> None:
        self.queries += 1
        self.conn.execute(statement, params)  # type: ignore[arg-type]


@dataclass
class Survey:
    """What the checks share: the context, options, findings, metrics and facts for later steps."""

    ctx: TaskContext
    options: MaintenanceOptions
    target: PostgresTarget
    server: ServerInfo | None = None
    findings: list[Finding] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    #: facts handed from checks to the repair step and the summary, keyed by database
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    queries: int = 0
    failed_checks: int = 0
    notes: list[str] = field(default_factory=list)

    def fact(self, db: str) -> dict[str, Any]:
        return self.facts.setdefault(db, {})

    def add(self, findings: list[Finding], check_name: str) -> None:
        """Add a check's findings, capped at ``max_findings_per_check`` (the rest counted in one info)."""
        cap = self.options.max_findings_per_check
        ranked = sorted(findings, key=lambda f: -f.severity.rank)
        self.findings.extend(ranked[:cap])
        if len(ranked) > cap:
            rest = ranked[cap:]
            self.findings.append(Finding(
                f"postgres.{check_name}", Severity.INFO, f"{len(rest)} more",
                f"{len(rest)} more finding(s) of this check were not listed (max_findings_per_check={cap})",
                "fix the listed ones first, or raise max_findings_per_check",
                value=len(rest), data={"subjects": [f.subject for f in rest[:200]]},
            ))


CheckFn = Callable[[Survey, Probe], list[Finding]]


@dataclass(frozen=True)
class Check:
    name: str
    scope: Literal["server", "database"]
    fn: CheckFn


SERVER_CHECKS: list[Check] = []
DATABASE_CHECKS: list[Check] = []


def check(name: str, scope: Literal["server", "database"]) -> Callable[[CheckFn], CheckFn]:
    """Register a survey check.  ``name`` is what ``checks``/``skip_checks`` use."""

    def deco(fn: CheckFn) -> CheckFn:
        registry = SERVER_CHECKS if scope == "server" else DATABASE_CHECKS
        registry[:] = [c for c in registry if c.name != name]
        registry.append(Check(name, scope, fn))
        return fn

    return deco


def _timeouts(conn: psycopg.Connection[Row], options: MaintenanceOptions) -> None:
    conn.execute(sql.SQL("SET statement_timeout = {}").format(
        sql.Literal(max(1, int(options.check_timeout.total_seconds() * 1000)))))
    conn.execute(sql.SQL("SET lock_timeout = {}").format(
        sql.Literal(max(1, int(options.lock_timeout.total_seconds() * 1000)))))


class Session:
    """A probe that reconnects once when a check broke the connection."""

    def __init__(self, survey: Survey, db: str) -> None:
        self.survey = survey
        self.db = db
        self._cm: Any = None
        self.probe: Probe | None = None

    def open(self) -> Probe:
        self.close()
        self._cm = connect(self.survey.target, self.db)
        conn = self._cm.__enter__()
        _timeouts(conn, self.survey.options)
        self.probe = Probe(conn, self.db)
        self.survey.queries += 2
        return self.probe

    def ensure(self) -> Probe:
        if self.probe is None or self.probe.conn.closed or self.probe.conn.broken:
            return self.open()
        return self.probe

    def close(self) -> None:
        if self.probe is not None:
            self.survey.queries += self.probe.queries
            self.probe = None
        if self._cm is not None:
            try:
                self._cm.__exit__(None, None, None)
            except Exception:
                pass
            self._cm = None


def run_checks(survey: Survey, session: Session, checks: list[Check]) -> None:
    """Run each enabled check; an error becomes a finding and the next check still runs."""
    for chk in checks:
        if not survey.options.enabled(chk.name):
            continue
        survey.ctx.progress(f"{session.db}: {chk.name}", None)
        t0 = time.monotonic()
        try:
            probe = session.ensure()
            survey.add(chk.fn(survey, probe), chk.name)
        except TaskError as exc:
            failed_check(survey, session.db, chk.name, exc.message)
        except psycopg.Error as exc:
            failed_check(survey, session.db, chk.name, describe_pg_error(exc))
        except Exception as exc:  # a bug in one check must not hide the others
            survey.ctx.log.exception("check %s failed", chk.name)
            failed_check(survey, session.db, chk.name, f"{type(exc).__name__}: {exc}")
        key = f"check.{chk.name}.ms"
        survey.metrics[key] = survey.metrics.get(key, 0.0) + round((time.monotonic() - t0) * 1000, 2)


def failed_check(survey: Survey, db: str, name: str, message: str) -> None:
    survey.failed_checks += 1
    survey.findings.append(Finding(
        "postgres.check_failed", Severity.WARNING, f"{db}: {name}",
        f"check {name!r} failed in database {db!r}: {message}",
        "the other checks ran; see the message (a statement_timeout or lock_timeout means the server was "
        "busy: raise check_timeout / lock_timeout, or skip the check with skip_checks)",
        data={"check": name, "database": db},
    ))


def unreadable_finding(db: str, name: str, what: str, objects: list[str]) -> Finding:
    """A check that could not see some objects for want of a privilege (PostgreSQL hides them rather than
    failing): said, so a run without that privilege is not taken for a clean bill of health."""
    shown = ", ".join(objects[:5]) + (f" and {len(objects) - 5} more" if len(objects) > 5 else "")
    return Finding(
        "postgres.check_failed", Severity.WARNING, f"{db}: {name}",
        f"check {name!r} could not read {len(objects)} {what} in database {db!r} (no SELECT privilege), so it "
        f"did not judge them: {shown}",
        "grant the job's user pg_read_all_data (PostgreSQL 14+) or SELECT on them; the others were checked",
        data={"check": name, "database": db, "unreadable": objects},
    )


def hidden_sessions_finding(name: str, hidden: int, what: str) -> Finding:
    """A session check run by a user who may not see other users' sessions: pg_stat_activity shows them with
    every column but pid, database and user empty (no state, no backend type), so the check cannot judge them."""
    return Finding(
        "postgres.check_failed", Severity.WARNING, f"server: {name}",
        f"check {name!r} could not see {hidden} session(s) of other users (no pg_read_all_stats): {what}",
        "grant the job's user pg_monitor (it includes pg_read_all_stats); the sessions it can see were checked",
        value=hidden, data={"check": name, "hidden_sessions": hidden},
    )


def server_info(probe: Probe) -> ServerInfo:
    version_num, in_recovery, data_dir, block_size = probe.one(SERVER_INFO_SQL)
    return ServerInfo(int(version_num), bool(in_recovery), data_dir, int(block_size))
