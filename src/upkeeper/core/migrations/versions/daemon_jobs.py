"""daemon jobs: the names of the scheduled jobs each daemon instance served

At start, a daemon catches up only the occurrences no earlier daemon serving the job was running through
(a schedule changed with a restart is no downtime); ``daemons.jobs`` only counted them.  Rows written
before this revision have NULL: such an instance counts for no job (catch-up as before).

Revision ID: daemon_jobs
Revises: 0001_initial
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision = "daemon_jobs"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("daemons", schema=None) as batch_op:
        batch_op.add_column(sa.Column("job_names", JSONType, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("daemons", schema=None) as batch_op:
        batch_op.drop_column("job_names")
