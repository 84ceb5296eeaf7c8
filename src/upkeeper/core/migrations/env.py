"""Alembic environment: upkeeper runs migrations programmatically on a given connection."""

from __future__ import annotations

from alembic import context

from upkeeper.core.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - only when someone runs the alembic CLI by hand
    raise RuntimeError("upkeeper applies its migrations itself; open the history with upkeeper")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
