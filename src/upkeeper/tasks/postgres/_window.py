"""Is the job's maintenance window open?  The one place heavy PostgreSQL repairs ask.

The daemon already starts a window-bound job only inside its window; this check
additionally protects a run started by hand (``upkeeper run``) and a survey that
outlasted its window: repairs (VACUUM FULL, pg_repack, REINDEX) happen only while
the window is open.
"""

from __future__ import annotations

from upkeeper.core.task import TaskContext
from upkeeper.notify.policy import window_open_at


def window_open(ctx: TaskContext) -> bool | None:
    """True/False: the job has a window and it is open/closed now; None: the job has no window."""
    if ctx.config is None:
        return None
    return window_open_at(ctx.config, ctx.job, ctx.now())
