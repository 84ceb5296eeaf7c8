"""run streaks: the failed runs of each job's current failure streak that history retention deleted

Without it, ``upkeeper status`` counted a job failing daily for 120 days as ~90 consecutive failures once
the 90-day run retention had deleted the older ones (see ``StreakRow`` in ``core/models.py``).  A
database pruned before this revision cannot get the deleted runs back: its streaks count from here on.

Revision ID: run_streaks
Revises: history_retention
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "run_streaks"
down_revision = "history_retention"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_streaks",
        sa.Column("job", sa.String(length=100), nullable=False),
        sa.Column("after_run_id", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("job"),
    )


def downgrade() -> None:
    op.drop_table("run_streaks")
