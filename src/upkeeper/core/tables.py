"""The history database's tables as SQLAlchemy Core ``Table`` objects (SQLite or PostgreSQL, one code path).

The schema is created and upgraded only by Alembic migrations (``core/migrations``); these describe it for
queries.  Core only: ``upkeeper run`` records its runs through prepared Core statements
(:mod:`upkeeper.core.history`), and its backups through :class:`upkeeper.backup.catalog.Catalog`, and never
imports the ORM (``sqlalchemy.orm`` and the mapped classes cost
~70 ms of every command's start).  The ORM classes of :mod:`upkeeper.core.models` map these same tables.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine


class _JSONDocument(TypeDecorator[Any]):
    """JSON on SQLite, JSONB on PostgreSQL.

    (``JSON().with_variant(JSONB(), "postgresql")`` would import the PostgreSQL dialect, and with it
    asyncio and ssl, into every ``upkeeper`` command that opens an SQLite history: ~40 ms.)
    """

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())


JSONType = _JSONDocument()


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the history database; use UTC-aware datetimes")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


#: every table of the history database (the ORM's ``Base.metadata``, which Alembic's env uses, is this one)
metadata = MetaData()

runs = Table(
    "runs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job", String(100), nullable=False),
    Column("task", String(100), nullable=False),
    Column("target", String(100)),
    Column("scheduled_for", UTCDateTime, nullable=False),
    Column("due_at", UTCDateTime),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("status", String(16), nullable=False),
    Column("summary", Text, default="", nullable=False),
    Column("node", String(255)),
    Column("owner", String(255)),
    Column("attempt", Integer, default=1, nullable=False),
    Column("trigger", String(16), default="schedule", nullable=False),
    Column("log_excerpt", Text, default="", nullable=False),
    Column("metrics", JSONType, default=dict, nullable=False),
    Column("artifacts", JSONType, default=list, nullable=False),
    Column("duration", Float),
    Column("details", JSONType, default=dict, nullable=False),
    UniqueConstraint("job", "scheduled_for", name="uq_runs_occurrence"),
    Index("ix_runs_status", "status"),
    Index("ix_runs_job_finished", "job", "finished_at"),
    Index("ix_runs_finished", "finished_at"),
)

#: Per job, the failed runs of its current failure streak that history retention deleted
#: (see :class:`upkeeper.core.models.StreakRow`).
run_streaks = Table(
    "run_streaks", metadata,
    Column("job", String(100), primary_key=True),
    Column("after_run_id", Integer, nullable=False),
    Column("failures", Integer, nullable=False),
    Column("since", UTCDateTime, nullable=False),  # the earliest deleted failure's end
    Column("updated_at", UTCDateTime, nullable=False),
)

findings = Table(
    "findings", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("job", String(100), nullable=False),
    Column("check", String(200), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("subject", Text, default="", nullable=False),
    Column("message", Text, default="", nullable=False),
    Column("remediation", Text, default="", nullable=False),
    Column("value", JSONType, nullable=True),
    Column("threshold", JSONType, nullable=True),
    Column("data", JSONType, default=dict, nullable=False),
    Column("ts", UTCDateTime, nullable=False),
    Index("ix_findings_job_check", "job", "check"),
    Index("ix_findings_run", "run_id"),
)

metric_samples = Table(
    "metric_samples", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="SET NULL")),
    Column("job", String(100), nullable=False),
    Column("target", String(100)),
    Column("name", String(200), nullable=False),
    Column("value", Float, nullable=False),
    Column("ts", UTCDateTime, nullable=False),
    Index("ix_metrics_job_name_ts", "job", "name", "ts"),
    Index("ix_metrics_target_name_ts", "target", "name", "ts"),
    Index("ix_metrics_run", "run_id"),
)

job_state = Table(
    "job_state", metadata,
    Column("job", String(100), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("value", JSONType, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
)

locks = Table(
    "locks", metadata,
    Column("name", String(255), primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("node", String(255), nullable=False),
    Column("acquired_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("purpose", Text, default="", nullable=False),
)

audit = Table(
    "audit", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", UTCDateTime, nullable=False),
    Column("actor", String(255), nullable=False),
    Column("action", String(100), nullable=False),
    Column("job", String(100)),
    Column("node", String(255)),
    Column("details", JSONType, default=dict, nullable=False),
    Index("ix_audit_ts", "ts"),
)

daemons = Table(
    "daemons", metadata,
    Column("instance", String(255), primary_key=True),
    Column("node", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("last_seen", UTCDateTime, nullable=False),
    Column("stopped_at", UTCDateTime),
    Column("version", String(50), default="", nullable=False),
    Column("jobs", Integer, default=0, nullable=False),
    # the names of the scheduled jobs the instance served (NULL: written by an upkeeper before 'daemon_jobs'):
    # an occurrence of one of them during its lifetime was no "missed while no daemon was running"
    Column("job_names", JSONType),
    # the start of the scheduling loop's newest tick as of the last heartbeat (which a thread of its own writes: a
    # hung loop's heartbeat goes on); NULL: written by an upkeeper before 'daemon_loop'
    Column("loop_at", UTCDateTime),
    # the outcome of the instance's last config reload (SIGHUP): at, ok, message, file; NULL: none yet
    Column("reload", JSONType),
)

#: The backup catalog: one row per complete backup set (read and written by :class:`upkeeper.backup.catalog.Catalog`;
#: its ORM class, for code that wants one, is :class:`upkeeper.backup.catalog_orm.BackupRow`).
backups = Table(
    "backups", metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("target", String(100), nullable=False),
    Column("database", String(255), nullable=False),
    Column("job", String(100)),
    Column("run_id", Integer),
    Column("status", String(16), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=False),
    Column("size", BigInteger, nullable=False, default=0),
    Column("raw_size", BigInteger, nullable=False, default=0),
    Column("compression_ratio", Float, nullable=False, default=0.0),
    Column("storages", JSONType, nullable=False, default=list),
    Column("encryption", String(32), nullable=False, default="none"),
    Column("verified_at", UTCDateTime),
    Column("restore_seconds", Float),
    Column("verify_summary", Text, nullable=False, default=""),
    Column("manifest", JSONType, nullable=False, default=dict),
    Index("ix_backups_series", "target", "database", "kind", "started_at"),
    Index("ix_backups_status", "status"),
)
