"""SQLAlchemy ORM classes of the history database (SQLite or PostgreSQL, one code path).

The schema is created and upgraded only by Alembic migrations (``core/migrations``); the tables are
described once, in Core, by :mod:`upkeeper.core.tables` (what the per-run path uses, without the ORM);
these classes map them for the queries that read whole rows.  (The backup catalog's, ``BackupRow``, is in
:mod:`upkeeper.backup.catalog_orm`: the catalog itself works in Core.)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import DeclarativeBase, Mapped

from upkeeper.core import tables
from upkeeper.core.tables import JSONType, UTCDateTime

__all__ = ["AuditRow", "Base", "DaemonRow", "FindingRow", "JSONType", "LockRow", "MetricRow", "RunRow", "StateRow",
           "StreakRow", "UTCDateTime"]


class Base(DeclarativeBase):
    metadata = tables.metadata


class RunRow(Base):
    __table__ = tables.runs

    id: Mapped[int]
    job: Mapped[str]
    task: Mapped[str]
    target: Mapped[str | None]
    scheduled_for: Mapped[datetime]
    due_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    status: Mapped[str]
    summary: Mapped[str]
    node: Mapped[str | None]
    owner: Mapped[str | None]
    attempt: Mapped[int]
    trigger: Mapped[str]
    log_excerpt: Mapped[str]
    metrics: Mapped[dict[str, Any]]
    artifacts: Mapped[list[Any]]
    duration: Mapped[float | None]
    details: Mapped[dict[str, Any]]


class StreakRow(Base):
    """Per job, the failed runs of its current failure streak that history retention deleted.

    ``upkeeper status`` counts a job's consecutive failures as the failed runs that finished after its
    latest successful run: those still in ``runs`` plus, while that success is still the latest
    (``after_run_id``; 0 when the job has none), the ones counted here.  Retention always keeps the latest
    successful run, so a newer success makes this row stale (ignored, replaced by the next prune): nothing
    on the per-run path writes it.
    """

    __table__ = tables.run_streaks

    job: Mapped[str]
    after_run_id: Mapped[int]
    failures: Mapped[int]
    since: Mapped[datetime]  # the earliest deleted failure's end
    updated_at: Mapped[datetime]


class FindingRow(Base):
    __table__ = tables.findings

    id: Mapped[int]
    run_id: Mapped[int]
    job: Mapped[str]
    check: Mapped[str]
    severity: Mapped[str]
    subject: Mapped[str]
    message: Mapped[str]
    remediation: Mapped[str]
    value: Mapped[Any]
    threshold: Mapped[Any]
    data: Mapped[dict[str, Any]]
    ts: Mapped[datetime]


class MetricRow(Base):
    __table__ = tables.metric_samples

    id: Mapped[int]
    run_id: Mapped[int | None]
    job: Mapped[str]
    target: Mapped[str | None]
    name: Mapped[str]
    value: Mapped[float]
    ts: Mapped[datetime]


class StateRow(Base):
    __table__ = tables.job_state

    job: Mapped[str]
    key: Mapped[str]
    value: Mapped[Any]
    updated_at: Mapped[datetime]


class LockRow(Base):
    __table__ = tables.locks

    name: Mapped[str]
    owner: Mapped[str]
    node: Mapped[str]
    acquired_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    purpose: Mapped[str]


class AuditRow(Base):
    __table__ = tables.audit

    id: Mapped[int]
    ts: Mapped[datetime]
    actor: Mapped[str]
    action: Mapped[str]
    job: Mapped[str | None]
    node: Mapped[str | None]
    details: Mapped[dict[str, Any]]


class DaemonRow(Base):
    __table__ = tables.daemons

    instance: Mapped[str]
    node: Mapped[str]
    pid: Mapped[int]
    started_at: Mapped[datetime]
    last_seen: Mapped[datetime]
    stopped_at: Mapped[datetime | None]
    version: Mapped[str]
    jobs: Mapped[int]
    job_names: Mapped[list[str] | None]
    loop_at: Mapped[datetime | None]
    reload: Mapped[dict[str, Any] | None]
