"""The standard maintenance schedule (from the maintenance procedures upkeeper automates).

``upkeeper init`` writes the rows whose task exists in this version; the demo
runs them against its sandbox.  Later task families need no change here: their
rows are listed already and appear once the task is registered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StandardJob:
    job: str
    task: str
    schedule: str
    target_kind: str | None
    comment: str
    #: options ``init`` writes (commented examples are in ``example``)
    options: dict[str, Any] = field(default_factory=dict)
    example: str = ""


STANDARD_SCHEDULE: tuple[StandardJob, ...] = (
    StandardJob("db-backup", "postgres.backup", "0 0 * * *", "postgres", "nightly database backup",
                options={"format": "custom", "globals": True},
                example="databases: [app]   # default: every non-template database that allows connections"),
    StandardJob("app-backup", "files.backup", "0 1 * * *", "app", "nightly backup of application files",
                options={"exclude": ["node_modules", ".git", "*.log", "tmp"], "secret_paths": [".env"]}),
    StandardJob("vacuum", "postgres.vacuum", "0 3 * * *", "postgres", "daily VACUUM (ANALYZE)",
                example="tables: [public.users]   # default: every table"),
    StandardJob("db-maintenance", "postgres.maintenance", "0 2 * * 0", "postgres",
                "weekly survey: bloat, slow queries, wraparound, indexes, replication",
                example="audit_table: audit_log, audit_retention: 365d   # see docs/postgres.md"),
    StandardJob("index-rebuild", "postgres.reindex", "0 4 * * 0", "postgres", "weekly REINDEX CONCURRENTLY",
                example="high_priority: [public.bookings]   # default: bloated indexes only"),
    StandardJob("app-maintenance", "app.maintenance", "0 1 * * 6", "app",
                "weekly: caches, logs, temp files, old releases",
                example="commands: [[pm2, flush]]   # any argv lists, run as the app's user"),
    StandardJob("backup-verify", "backup.verify", "0 4 * * 1", "postgres", "weekly test restore of the newest backup",
                options={"scope": "newest", "restore": True},
                example="checks: ['select count(*) > 0 from users']"),
    StandardJob("log-analysis", "logs.nginx", "0 2 * * 5", "nginx", "weekly access-log report",
                example="log_format: combined_timed   # your nginx log_format; $request_time gives latency"),
    StandardJob("security-audit", "security.audit", "0 3 1 * *", "host", "monthly security audit"),
    StandardJob("health", "host.health", "*/5 * * * *", "host", "host health every 5 minutes"),
    StandardJob("cache-check", "redis.check", "*/15 * * * *", "redis", "Redis health every 15 minutes"),
    StandardJob("cache-evict", "redis.evict", "0 * * * *", "redis", "hourly eviction of expendable keys",
                example='patterns: ["cache:*"]   # expendable keys; without patterns it only reports'),
    StandardJob("cache-backup", "redis.backup", "0 2 * * *", "redis", "nightly Redis RDB backup",
                options={"method": "auto"}),
    StandardJob("tls-check", "network.tls", "0 6 * * *", "http", "daily certificate check",
                example="ca_file: /etc/ssl/private-ca.pem   # only for a private CA"),
    StandardJob("dns-check", "network.dns", "0 * * * *", "host", "hourly DNS health",
                example="resolvers: [1.1.1.1, 8.8.8.8, 9.9.9.9], zones: [example.com], "
                        "records: [{name: example.com, type: A, expected: [203.0.113.10]}]"),
)

#: Jobs beyond the standard table for tasks that have no row there.
EXTRA_JOBS: tuple[StandardJob, ...] = (
    StandardJob("db-ping", "postgres.ping", "*/5 * * * *", "postgres", "database reachability and size"),
    StandardJob("disk", "host.disk", "*/5 * * * *", "host", "disk space and inodes"),
    StandardJob("cache-metrics", "redis.metrics", "* * * * *", "redis", "Redis samples every minute (kept 30 days)"),
    StandardJob("app-cleanup", "app.cleanup", "0 4 * * *", "app", "daily: log rotation, temp files, old releases"),
    StandardJob("compliance-report", "security.compliance", "0 6 1 * *", "host",
                "monthly evidence report: backups, patch SLA, findings, access review, windows"),
    # the weekly log analysis covers application errors and database performance too
    StandardJob("error-log", "logs.errors", "30 2 * * 5", "nginx",
                "weekly: nginx error-log classes and new application exception groups",
                example="app_logs: [/srv/app/shared/log/*.log]   # JSON lines or text"),
    # backup.verify's standard row proves the database backups; Redis backups are test-restored too
    StandardJob("cache-verify", "backup.verify", "30 4 * * 1", "redis", "weekly test restore of the newest Redis backup",
                options={"scope": "newest", "restore": True},
                example="redis_checks: ['EXISTS config:site']   # Redis commands on the restored data, each must "
                        "reply true"),
    StandardJob("db-log-analysis", "logs.postgres", "0 5 * * 1", "postgres",
                "weekly PostgreSQL log report: slow statements, errors, locks, query p95",
                example="log_file: /var/log/postgresql/postgresql-15-main.log   # default: pg_current_logfile()"),
)


def standard_jobs(known_tasks: set[str] | list[str]) -> list[StandardJob]:
    """Rows whose task exists, standard table first.  An extra whose task and target kind a standard row covers
    is dropped (the verify of Redis backups stays beside the standard verify of the database's)."""
    known = set(known_tasks)
    rows = [r for r in STANDARD_SCHEDULE if r.task in known]
    covered = {(r.task, r.target_kind) for r in rows}
    rows += [r for r in EXTRA_JOBS if r.task in known and (r.task, r.target_kind) not in covered]
    return rows
