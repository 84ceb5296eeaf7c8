"""notify_state.node: the node whose observation last updated a (job, check) state

A problem whose job is no longer in the config is closed ("job removed from the config") by the node that
recorded it, and only by it: nodes sharing one history may run different configs, and a job missing from one
node's config may be another node's.  Rows recorded before this revision take the node of their last run
(or of the job's latest run).

Revision ID: notify_state_node
Revises: notify_state
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "notify_state_node"
down_revision = "notify_state"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notify_state") as batch:
        batch.add_column(sa.Column("node", sa.String(length=255), nullable=True))
    op.execute(
        "UPDATE notify_state SET node = COALESCE("
        "(SELECT r.node FROM runs r WHERE r.id = notify_state.last_run_id), "
        "(SELECT r.node FROM runs r WHERE r.job = notify_state.job AND r.node IS NOT NULL "
        "ORDER BY r.id DESC LIMIT 1))"
    )


def downgrade() -> None:
    with op.batch_alter_table("notify_state") as batch:
        batch.drop_column("node")
