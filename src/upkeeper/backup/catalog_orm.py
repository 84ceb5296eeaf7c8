"""The ORM class of the backup catalog's table, for code that works in ORM sessions.

:class:`~upkeeper.backup.catalog.Catalog` reads and writes the table in Core (a backup run never imports the
ORM); this class maps the same :data:`upkeeper.core.tables.backups`.  ``from upkeeper.backup.catalog import
BackupRow`` imports it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Mapped

from upkeeper.backup.catalog import RowView
from upkeeper.core import tables
from upkeeper.core.models import Base


class BackupRow(RowView, Base):
    __table__ = tables.backups

    id: Mapped[str]
    kind: Mapped[str]
    target: Mapped[str]
    database: Mapped[str]
    job: Mapped[str | None]
    run_id: Mapped[int | None]
    status: Mapped[str]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    size: Mapped[int]
    raw_size: Mapped[int]
    compression_ratio: Mapped[float]
    storages: Mapped[list[str]]
    encryption: Mapped[str]
    verified_at: Mapped[datetime | None]
    restore_seconds: Mapped[float | None]
    verify_summary: Mapped[str]
    manifest: Mapped[dict[str, Any]]
