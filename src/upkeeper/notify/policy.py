"""Maintenance windows and blackouts as the daemon's admission policies, and the calendar they share.

* :class:`WindowPolicy` — a job with ``window: NAME`` starts only inside that
  window; outside it the occurrence is deferred to the next opening (the
  daemon records a ``pending`` run with trigger ``deferred``).  While one
  occurrence waits, later ones are skipped (recorded), so a daily job bound to
  a monthly window runs once per opening, not thirty times.
* :class:`BlackoutPolicy` — inside a blackout a run is skipped (recorded),
  unless the job's category is one of the blackout's exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from upkeeper.config.models import Config
from upkeeper.config.windows import BlackoutConfig, WindowConfig
from upkeeper.core.history import History
from upkeeper.core.jobs import Job
from upkeeper.fmt import local_time
from upkeeper.notify.calendar import Period, Recurrence, recurrence

if TYPE_CHECKING:  # the daemon imports it; 'upkeeper run' (the calendar, for refusals) does not need it
    from upkeeper.core.daemon import Decision


@dataclass
class Blackout:
    name: str
    cfg: BlackoutConfig
    rec: Recurrence

    def applies_to(self, category: str) -> bool:
        return category not in self.cfg.exceptions


@dataclass
class Window:
    name: str
    cfg: WindowConfig
    rec: Recurrence

    @property
    def tz(self) -> str:
        return str(self.rec.tz)


class Calendar:
    """The config's windows and blackouts, as time periods."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.windows = {n: Window(n, w, recurrence(n, w, config.timezone)) for n, w in config.windows.items()}
        self.blackouts = {n: Blackout(n, b, recurrence(n, b, config.timezone)) for n, b in config.blackouts.items()}

    def blackout_at(self, category: str, at: datetime) -> tuple[Blackout, Period] | None:
        """The blackout (not excepting ``category``) that contains ``at``."""
        for b in self.blackouts.values():
            if not b.applies_to(category):
                continue
            p = b.rec.active(at)
            if p is not None:
                return b, p
        return None

    def blackout_end(self, category: str, at: datetime) -> datetime | None:
        """When the blackouts covering ``at`` are all over (chained periods followed)."""
        end = None
        cursor = at
        for _ in range(100):
            hit = self.blackout_at(category, cursor)
            if hit is None:
                break
            end = cursor = hit[1].end
        return end

    def window_of(self, job: Job) -> Window | None:
        return self.windows.get(job.window) if job.window else None

    def opening(self, window: Window, at: datetime) -> Period | None:
        """The window period open at ``at``, else the next one."""
        return window.rec.active(at) or window.rec.next_start(at)


def describe(period: Period, tz: str) -> str:
    """'2025-03-02 02:00–06:00 UTC' (or with both dates when it spans days; with the start's zone too when the
    clocks change inside the period: '2027-10-31 02:30 CEST–02:30 CET' is an hour, not none)."""
    a = local_time(period.start, tz, "%Y-%m-%d %H:%M")
    if local_time(period.start, tz, "%Z") != local_time(period.end, tz, "%Z"):
        a += local_time(period.start, tz, " %Z")
    same_day = local_time(period.start, tz, "%Y-%m-%d") == local_time(period.end, tz, "%Y-%m-%d")
    b = local_time(period.end, tz, "%H:%M %Z" if same_day else "%Y-%m-%d %H:%M %Z")
    return f"{a}–{b}"


class WindowPolicy:
    """Admit window-bound jobs only inside their window; defer them to its next opening."""

    def __init__(self, calendar: Calendar, history: History) -> None:
        self.calendar = calendar
        self.history = history

    def decide(self, job: Job, occurrence: datetime, now: datetime, trigger: str) -> Decision:
        from upkeeper.core.daemon import Decision

        window = self.calendar.window_of(job)
        if window is None:
            return Decision.admit()
        if window.rec.active(now) is not None:
            return Decision.admit()
        nxt = window.rec.next_start(now)
        if nxt is None:
            return Decision("skip", f"maintenance window {window.name!r} has no future opening")
        return Decision("defer", f"outside maintenance window {window.name!r}; next opening "
                                 f"{describe(nxt, window.tz)}", nxt.start)


class BlackoutPolicy:
    """Skip runs inside a blackout unless the job's category is excepted."""

    def __init__(self, calendar: Calendar) -> None:
        self.calendar = calendar

    def decide(self, job: Job, occurrence: datetime, now: datetime, trigger: str) -> Decision:
        from upkeeper.core.daemon import Decision

        hit = self.calendar.blackout_at(job.category, now)
        if hit is None:
            return Decision.admit()
        b, period = hit
        tz = str(b.rec.tz)
        return Decision("skip", f"blackout {b.name!r} ({describe(period, tz)}); category {job.category} is not "
                                f"excepted ({', '.join(b.cfg.exceptions) or 'no exceptions'})")


def build_policies(config: Config, history: History) -> list[WindowPolicy | BlackoutPolicy]:
    if not config.windows and not config.blackouts:
        return []
    cal = Calendar(config)
    return [WindowPolicy(cal, history), BlackoutPolicy(cal)]


def window_open_at(config: Config, job_name: str, at: datetime) -> bool | None:
    """Is the maintenance window of ``job_name`` open at ``at``?  None when the job has no window.

    A window name that cannot be found counts as closed (heavy work never runs by accident).
    """
    jc = config.jobs.get(job_name)
    name = jc.window if jc is not None else None
    if not name:
        return None
    wc = config.windows.get(name)
    if wc is None:
        return False
    return recurrence(name, wc, config.timezone).active(at) is not None
