"""daemon loop: each daemon's last scheduling tick, and the outcome of its last config reload

``daemons.last_seen`` is written by a heartbeat thread of its own, so a daemon whose scheduling loop hung (blocked
in a history call, a notification send) still looked alive.  ``loop_at`` is the start of the loop's newest tick as
of each heartbeat: ``upkeeper status`` reports a loop that stopped ticking, and catch-up ends a dead daemon's
lifetime there.  ``reload`` is the outcome of its last SIGHUP (``upkeeper status`` shows a failed one).  Rows
written before this revision have NULL in both (they read as before).

Revision ID: daemon_loop
Revises: daemon_jobs
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision = "daemon_loop"
down_revision = "daemon_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("daemons", schema=None) as batch_op:
        batch_op.add_column(sa.Column("loop_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("reload", JSONType, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("daemons", schema=None) as batch_op:
        batch_op.drop_column("reload")
        batch_op.drop_column("loop_at")
