"""The configuration file, as pydantic models (``extra="forbid"`` everywhere).

Structural validation happens here; cross-references (task names, targets,
task options, cron expressions, timezones) are resolved by
:mod:`upkeeper.core.jobs`, which reports problems with the same located
messages.
"""

from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_validator

from upkeeper.config.backup import BackupSettings
from upkeeper.config.notify import NotificationsConfig
from upkeeper.config.storage import StorageConfig
from upkeeper.config.targets import (
    TARGET_KINDS,
    AppTarget,
    HostTarget,
    HttpTarget,
    NginxTarget,
    PostgresTarget,
    RedisTarget,
    TargetConfig,
)
from upkeeper.config.types import Duration, Name, StrictModel
from upkeeper.config.windows import BlackoutConfig, WindowConfig

__all__ = [
    "TARGET_KINDS",
    "AppTarget",
    "Config",
    "DaemonSettings",
    "Defaults",
    "HistoryRetention",
    "HostTarget",
    "HttpTarget",
    "JobConfig",
    "NginxTarget",
    "PostgresTarget",
    "RedisTarget",
    "TargetConfig",
]

CatchUpPolicy = Literal["skip", "latest"]
Category = Literal["maintenance", "backup", "monitoring", "security", "critical"]


def _no_zero_timeout(v: timedelta | None) -> timedelta | None:
    """A run always has a timeout: 0 read as 'none' by the runner but as 'at once' by the wait for a target lock
    (a defaults.timeout of 0), and a job's 0 fell back to the task's default (1 min for host.disk) unsaid."""
    if v is not None and v <= timedelta(0):
        raise ValueError("a timeout of 0 is not 'no timeout': every run has one. Try: a duration such as '6h' "
                         "(at most 10 years)")
    return v


class Defaults(StrictModel):
    """Policies every job inherits unless it sets its own."""

    timeout: Duration = Field(
        default=timedelta(hours=1), description="kill a run (its whole process group) after this long. "
                "Source: upkeeper default"
    )
    kill_grace: Duration = Field(
        default=timedelta(seconds=5), description="a run stopped (its timeout, a stop of the daemon or of "
        "'upkeeper run') gets SIGTERM: its task unwinds and its cleanup runs (work files removed, a partial "
        "upload deleted, a verify's scratch database dropped); this long after, its whole process group is "
        "SIGKILLed, cleanup done or not (what it left is removed later: docs/scheduling.md, 'Stopping and "
        "crashing'). Raise it when a cleanup needs longer (dropping a very large scratch database). "
        "Source: upkeeper default",
    )
    retries: int = Field(0, ge=0, le=20, description="retries after a failed or errored run. "
            "Source: upkeeper default")
    retry_delay: Duration = Field(
        default=timedelta(minutes=1), description="delay before the first retry; doubles each time. "
                "Source: upkeeper default"
    )
    retry_max_delay: Duration = Field(default=timedelta(hours=1), description="upper bound of the retry delay. "
            "Source: upkeeper default")
    catch_up: CatchUpPolicy = Field(
        "latest",
        description="after downtime, or an occurrence whose run a stop of the daemon interrupted: 'latest' runs "
        "the newest missed (or stopped) occurrence once (within catch_up_grace), 'skip' records it as skipped. "
        "Source: upkeeper default",
    )
    catch_up_grace: Duration | None = Field(
        None, description="how old a missed occurrence may be and still be caught up (default: one period). "
                "Source: upkeeper (not set by default)"
    )
    jitter: Duration = Field(
        default=timedelta(0), description="spread start times by a stable per-job offset in [0, jitter). "
                "Source: upkeeper default"
    )

    _timeout_not_zero = field_validator("timeout")(_no_zero_timeout)


class DaemonSettings(StrictModel):
    """How ``upkeeper daemon`` runs."""

    concurrency: int = Field(4, ge=1, le=256, description="runs executing at once (worker processes). "
            "Source: upkeeper default")
    heartbeat: Duration = Field(
        default=timedelta(seconds=15), description="how often the daemon records that it is alive. "
                "Source: upkeeper default"
    )
    shutdown_grace: Duration = Field(
        default=timedelta(seconds=60),
        description="on SIGTERM, how long running runs may finish before they are killed and marked interrupted. "
                "Source: upkeeper default",
    )
    worker_max_runs: int = Field(200, ge=1, description="recycle a worker process after this many runs. "
            "Source: upkeeper default")
    stall_after: Duration = Field(
        default=timedelta(minutes=5),
        description="the scheduling loop is reported stalled (the daemon's log, with where it is stuck, and "
                "'upkeeper status', whose --check then exits 1) when its last tick is older than this while "
                "the daemon's heartbeat goes on: it ticks every few seconds, but a history call or a "
                "notification send that hangs holds it. Source: upkeeper default",
    )


class HistoryRetention(StrictModel):
    """How long the history database keeps what it records.

    Applied hourly by the daemon and by ``upkeeper history prune``.  Whatever its age, pruning never
    deletes runs still pending, queued or running, nor each job's latest run, latest successful run,
    latest finished run and latest scheduled occurrence (``status``, the missed-run alarm and catch-up
    read them), nor the run that made a backup still in the catalog; the backup catalog, job state,
    notification state and undelivered notifications are never pruned.  The failed runs of a job's current
    failure streak that it deletes are counted in a per-job row, so ``status`` still shows every
    consecutive failure and since when.  Metric samples have their own retention
    (``jobs -> NAME -> metrics_retention``).
    """

    runs: Duration | None = Field(
        default=timedelta(days=90),
        description="runs that finished longer ago than this are deleted with their findings and log "
        "excerpts, and so are notification events and sent or abandoned deliveries older than this, and the "
        "records of daemons that ended before then (but each node's newest, and those catch-up still reads); "
        "null keeps them forever. Must cover the windows read back from runs: a config check error "
        "names a shorter one (the backup success rate's success_rate_window, 30 days; the compliance report's "
        "period, up to 62 days for previous_month); 90 days covers both. Source: GitHub Actions (workflow run logs are kept 90 days by default)",
    )
    audit: Duration | None = Field(
        default=timedelta(days=365),
        description="the audit trail of manual actions (restores, copies, rekeys, planned and emergency "
        "runs), and the runs and notices of emergency runs, are kept this long; null keeps them forever. "
        "Source: PCI DSS v4.0 requirement 10.5.1 (audit log history kept at least 12 months)",
    )


class JobConfig(StrictModel):
    """One job: a task applied to a target on a schedule, with policies."""

    task: str = Field(..., description="task name, e.g. postgres.vacuum (see 'upkeeper tasks'). "
            "Source: none (required)")
    target: str | None = Field(None, description="name of an entry under 'targets'. "
            "Source: upkeeper (not set by default)")
    schedule: str | None = Field(
        None,
        description="cron ('0 3 * * *'), '@daily'-style alias or 'every 15m'; omit for manual-only jobs. "
                "Source: upkeeper (not set by default)",
    )
    timezone: str | None = Field(None, description="IANA timezone for the schedule (default: the config's). "
            "Source: upkeeper (not set by default)")
    options: dict[str, Any] = Field(default_factory=dict, description="task options (see the task reference). "
            "Source: upkeeper (not set by default)")
    enabled: bool = Field(True, description="false: the job is not scheduled. Source: upkeeper default")
    description: str | None = Field(None, description="free text for people. Source: upkeeper (not set by default)")
    category: Category | None = Field(None, description="overrides the task's category (blackouts, routing). "
            "Source: upkeeper (not set by default)")
    tags: list[str] = Field(default_factory=list,
        description="labels notification routes can match. Source: upkeeper (not set by default)")
    timeout: Duration | None = Field(None,
        description="overrides defaults.timeout. Source: upkeeper (not set by default)")
    kill_grace: Duration | None = Field(None,
        description="overrides defaults.kill_grace. Source: upkeeper (not set by default)")
    retries: int | None = Field(None, ge=0, le=20,
        description="overrides defaults.retries. Source: upkeeper (not set by default)")
    retry_delay: Duration | None = Field(None,
        description="overrides defaults.retry_delay. Source: upkeeper (not set by default)")
    catch_up: CatchUpPolicy | None = Field(None,
        description="overrides defaults.catch_up. Source: upkeeper (not set by default)")
    catch_up_grace: Duration | None = Field(None,
        description="overrides defaults.catch_up_grace. Source: upkeeper (not set by default)")
    jitter: Duration | None = Field(None,
        description="overrides defaults.jitter. Source: upkeeper (not set by default)")
    metrics_retention: Duration | None = Field(
        None, description="how long this job's metric samples are kept (default: the task's, else 90 days). "
                "Source: upkeeper (not set by default)"
    )
    window: Name | None = Field(
        None, description="maintenance window (from 'windows') this job may start in; outside it, runs are "
        "deferred to the next opening. Source: upkeeper (not set by default)"
    )
    missed_grace: Duration | None = Field(
        None, description="missed-run alarm: how late a run may be beyond the occurrence due after the last run "
        "(default: notifications.missed_grace). Source: upkeeper (not set by default)"
    )

    _timeout_not_zero = field_validator("timeout")(_no_zero_timeout)


class Config(StrictModel):
    """The whole ``upkeeper.yaml``."""

    version: Literal[1] = Field(1, description="file format version. "
            "Source: upkeeper (the current config format)")
    timezone: str = Field("UTC", description="default timezone of job schedules. Source: upkeeper default")
    node: str = Field(default_factory=socket.gethostname, description="this machine's name in history. "
            "Source: upkeeper default")
    history: str | None = Field(
        None,
        description="history database: a SQLite path or sqlite:/// URL (default: the platform data dir, "
        "~/.local/share/upkeeper/history.db for a user without XDG_DATA_HOME; a new file is made 0600, a new "
        "directory 0700; 'config check' notes one every user can read), or postgresql://… to share history "
        "between nodes. Source: upkeeper (not set by default)",
    )
    history_retention: HistoryRetention = Field(
        default_factory=HistoryRetention, description="how long runs, notifications and the audit trail "
        "stay in the history database (see 'history_retention'). Source: see its own options"
    )
    defaults: Defaults = Field(default_factory=Defaults,
        description="policies every job inherits (see 'defaults'). Source: see its own options")
    daemon: DaemonSettings = Field(default_factory=DaemonSettings,
        description="settings of the daemon (see 'daemon'). Source: see its own options")
    targets: dict[Name, TargetConfig] = Field(default_factory=dict,
        description="what upkeeper maintains, by name (see 'targets -> NAME'). Source: upkeeper (none by default)")
    storages: dict[Name, StorageConfig] = Field(
        default_factory=dict, description="where backups go: local directories, S3 buckets, SFTP servers. "
                "Source: upkeeper (not set by default)"
    )
    backup: BackupSettings = Field(
        default_factory=BackupSettings, description="encryption, storages, compression and retention of backups. "
                "Source: see its own options"
    )
    notifications: NotificationsConfig = Field(
        default_factory=NotificationsConfig, description="channels, routes and escalation (docs/notifications.md). "
                "Source: see its own options"
    )
    windows: dict[Name, WindowConfig] = Field(
        default_factory=dict, description="maintenance windows jobs may be bound to (docs/windows.md). "
                "Source: upkeeper (not set by default)"
    )
    blackouts: dict[Name, BlackoutConfig] = Field(
        default_factory=dict, description="periods in which runs are skipped, except for some categories. "
                "Source: upkeeper (not set by default)"
    )
    jobs: dict[Name, JobConfig] = Field(default_factory=dict,
        description="tasks applied to targets on schedules, by name (see 'jobs -> NAME'). Source: upkeeper (none by default)")

    _source: Path | None = PrivateAttr(default=None)
    _lines: Any = PrivateAttr(default=None)

    @field_validator("history")
    @classmethod
    def _history_database(cls, v: str | None) -> str | None:
        # any other URL was taken for a file path: 'mysql://db/x', a misspelt 'postgressql://…' made a SQLite file
        # under a directory named 'mysql:' beside the config, each node its own history, without a word
        import re

        m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):/", v or "")
        if m and not re.fullmatch(r"postgres|postgresql|postgresql\+\w+|sqlite", m.group(1)):  # as history_url
            raise ValueError(f"unknown database URL scheme '{m.group(1)}://'. Try: postgresql://USER@HOST/DB "
                             "(PostgreSQL, to share history between nodes), or a file path or sqlite:///PATH (SQLite)")
        return v

    @property
    def source(self) -> Path | None:
        return self._source
