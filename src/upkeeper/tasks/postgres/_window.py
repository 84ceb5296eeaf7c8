"""Is the job's maintenance window open?  The one place heavy PostgreSQL repairs ask.

Maintenance windows (a top-level ``windows:`` section and a job-level ``window: NAME``) arrive
with the scheduling issue; this version of upkeeper has neither yet.  Until then:

* a job without a window repairs whenever it runs (``window_open`` answers ``None``);
* a job whose config entry names a window that cannot be evaluated is treated as *outside* it —
  heavy work never runs by accident.

When windows land, the window engine plugs in with :func:`set_window_probe` (called where the
worker builds its context, e.g. ``core/execute.py``), giving a function ``(ctx) -> bool | None``:
True inside the job's window, False outside, None when the job has none.  The daemon's admission
policy already starts such a job only inside its window; this probe additionally protects a run
started by hand (``upkeeper run``) or one whose survey outlasted the window.
"""

from __future__ import annotations

from collections.abc import Callable

from upkeeper.core.task import TaskContext

WindowProbe = Callable[[TaskContext], "bool | None"]

_probe: WindowProbe | None = None


def set_window_probe(probe: WindowProbe | None) -> None:
    """Install (or with None remove) the maintenance-window engine's probe."""
    global _probe
    _probe = probe


def window_open(ctx: TaskContext) -> bool | None:
    """True/False: the job has a window and it is open/closed now; None: the job has no window."""
    if _probe is not None:
        return _probe(ctx)
    jobs = getattr(ctx.config, "jobs", None) or {}
    job = jobs.get(ctx.job) if isinstance(jobs, dict) else None
    name = getattr(job, "window", None)
    if name is None:
        return None
    return False  # a window this version cannot evaluate: stay on the safe side
