"""postgres.ping: can we connect, what version, how long up, how big."""

from __future__ import annotations

import time

from pydantic import Field

from upkeeper.config.targets import PostgresTarget
from upkeeper.core.task import Finding, Result, Severity, Status, Task, TaskContext, TaskOptions, task
from upkeeper.errors import TaskError
from upkeeper.fmt import human_bytes, human_duration
from upkeeper.tasks.postgres._conn import connect

SERVER_INFO_SQL = """
SELECT current_setting('server_version') AS version,
       current_setting('server_version_num')::int AS version_num,
       extract(epoch FROM now() - pg_postmaster_start_time())::float8 AS uptime_s,
       pg_is_in_recovery() AS in_recovery
"""

DATABASE_SIZES_SQL = """
SELECT datname, pg_database_size(datname)::bigint AS bytes
FROM pg_database
WHERE NOT datistemplate AND datallowconn AND (%(names)s::text[] IS NULL OR datname = ANY(%(names)s::text[]))
ORDER BY datname
"""


class PingOptions(TaskOptions):
    databases: list[str] | None = Field(
        None, description="databases whose size to report (default: the target's dbname; ['*'] for all). "
                "Source: upkeeper (not set by default)"
    )
    connect_warn_ms: float = Field(
        1000, gt=0, description="warn when connecting takes longer than this (ms). Source: upkeeper default"
    )


@task
class PostgresPing(Task[PingOptions]):
    """Connect to the server and report its version, uptime and database sizes."""

    name = "postgres.ping"
    summary = "connect; report server version, uptime and database size"
    target_kinds = ("postgres",)
    Options = PingOptions
    category = "monitoring"
    default_timeout = 60

    def run(self, ctx: TaskContext, options: PingOptions) -> Result:
        target = ctx.require_target()
        assert isinstance(target, PostgresTarget)
        names: list[str] | None = None if options.databases == ["*"] else (options.databases or [target.dbname])
        t0 = time.monotonic()
        try:
            with connect(target) as conn:
                connect_ms = (time.monotonic() - t0) * 1000
                row = conn.execute(SERVER_INFO_SQL).fetchone()
                assert row is not None
                version, version_num, uptime_s, in_recovery = row
                sizes = conn.execute(DATABASE_SIZES_SQL, {"names": names}).fetchall()
        except TaskError as exc:
            return Result(
                status=Status.FAIL,
                summary=exc.message,
                findings=[Finding("postgres.unreachable", Severity.CRITICAL, target.display(), exc.message,
                                  (exc.hint or "").removeprefix("Try: "))],
            )
        findings: list[Finding] = []
        if connect_ms > options.connect_warn_ms:
            findings.append(Finding("postgres.slow_connect", Severity.WARNING, target.display(),
                                    f"connecting took {connect_ms:.0f} ms", "check network latency and server load",
                                    value=round(connect_ms, 1), threshold=options.connect_warn_ms))
        metrics = {"connect_ms": round(connect_ms, 2), "uptime_s": float(uptime_s), "server_version_num": version_num}
        for dat, size in sizes:
            metrics[f"db.{dat}.size_bytes"] = float(size)
        if names:
            missing = sorted(set(names) - {d for d, _ in sizes})
            for m in missing:
                findings.append(Finding("postgres.database_missing", Severity.CRITICAL, m,
                                        f"database {m!r} does not exist or does not accept connections",
                                        "check the job's 'databases' option"))
        total = sum(s for _, s in sizes)
        role = "replica" if in_recovery else "primary"
        summary = (f"PostgreSQL {version} ({role}), up {human_duration(uptime_s)}, "
                   f"{len(sizes)} database(s) {human_bytes(total)}, connect {connect_ms:.0f} ms")
        return Result(summary=summary, findings=findings, metrics=metrics)

