"""Conditions computed from history: missed runs (a dead-man's switch) and backup health.

* **Missed run** (a dead-man's switch, as healthchecks.io does for cron jobs):
  a scheduled job with no run started since the occurrence that was due
  after its last run's start, a grace later (the *next occurrence*, not one
  median period: a weekday job is not late on Saturday, nor a ``0 9,17`` job
  at night).  Every finished run counts, failed ones too: a job that runs and
  fails is already reported by its failure (and escalates), while "missed"
  means nothing ran at all — typically a stopped daemon.  A run interrupted
  because upkeeper was asked to stop (``systemctl stop``) does not count: it
  is not notified itself, so the work it left undone is reported here.  A
  window-bound job is expected at the window's next opening; an occurrence inside a blackout
  that applies to the job is not expected (the first one after it is); a job that is running now is not
  late (a run whose process died is not running).
  A job that never ran counts from when upkeeper first watched it.
* **Backup size change**: the size of a successful backup run against the
  previous successful one.  Size comes from the run's metrics (the first name
  in ``notifications.backup.size_metrics`` present) or, failing that, the sum
  of ``size`` over its artifacts.
* **Backup success rate** over a window (30 days): per occurrence, the final
  attempt's outcome counts (a failure healed by its retry is a success);
  skipped runs, and runs interrupted because upkeeper was asked to stop, do
  not count.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from upkeeper.config.notify import BackupAlerts
from upkeeper.core import tables
from upkeeper.core.history import OVERLAP_SKIP, History, owner_alive
from upkeeper.core.history import stopped_on_request as is_stopped
from upkeeper.core.jobs import Job
from upkeeper.core.models import RunRow
from upkeeper.core.schedule import ScheduleError
from upkeeper.notify.policy import Calendar

SUCCESS = ("ok", "warn")
FAILURE = ("fail", "error", "interrupted")


@dataclass
class Missed:
    job: str
    reference: datetime  # the last run's start (or when upkeeper first watched the job)
    deadline: datetime
    period: timedelta
    grace: timedelta
    never_ran: bool
    expected: datetime | None = None  # when the run that did not come was due (the deadline less the grace)


def next_due(job: Job, after: datetime) -> datetime | None:
    """When the first occurrence of ``job`` after ``after`` (a run's start) starts: the occurrence plus the
    job's jitter.  The schedule's next fire, not ``after`` plus its median spacing: '0 3 * * 1-5' is due
    on Monday after Friday's run, '0 9,17 * * *' 16 hours after its 17:00 run."""
    assert job.schedule is not None
    jitter = job.jitter_offset
    try:
        return job.schedule.next_after(after - jitter) + jitter
    except ScheduleError:  # a cron expression with no occurrence left
        return None


def missed_deadline(job: Job, reference: datetime, now: datetime, grace: timedelta,
                    calendar: Calendar | None) -> datetime | None:
    """When the job is overdue, given its last run's start at ``reference``; None when it cannot be (now).

    The run due is the first occurrence after ``reference`` that may start: a window-bound job's at the window's
    opening, and one a blackout covers (it is skipped) gives way to the first after the blackout.  A blackout
    that covers no due run changes nothing: one beginning after the job was already overdue neither clears
    the alarm nor moves it past its end."""
    expected = next_due(job, reference)
    if expected is None or calendar is None:
        return None if expected is None else expected + grace
    window = calendar.window_of(job)
    blackouts = [b for b in calendar.blackouts.values() if b.applies_to(job.category)]
    for _ in range(1000):
        if expected > now:
            break  # not due yet: no need to look further
        moved = expected
        if window is not None:
            opening = calendar.opening(window, expected)
            if opening is None:
                return None
            expected = max(expected, opening.start)
        for b in blackouts:
            p = b.rec.active(expected)
            if p is not None:  # skipped: the first occurrence that starts after the blackout is due
                after = next_due(job, p.end - timedelta(microseconds=1))
                if after is None:
                    return None
                expected = max(expected, after)
        if expected == moved:
            break
    return expected + grace


def running_jobs(history: History, now: datetime, stale_after: timedelta = timedelta(minutes=2)) -> set[str]:
    """Jobs with a run in progress whose process lives, judged as :meth:`History.recover_orphans` does: on this
    host by its PID, on another by its daemon's heartbeat or its run's lock lease.  A run left ``running`` by a
    process that died (a daemon killed by the OOM killer during the nightly backup) is not in progress: until a
    daemon comes back to mark it interrupted, it kept its job out of the missed-run alarm."""
    rows = history.runs(statuses=["running", "queued"], limit=1000)
    if not rows or history.recently_lost():  # (after an outage the others could not write their leases either)
        return {r.job for r in rows}
    seen = {d.instance: d.last_seen for d in history.daemons() if d.stopped_at is None}
    # leases and heartbeats are judged on the clock they were stamped with: a PostgreSQL history's server's
    # (History._db_clock), a SQLite history's host's
    clock = now if history.dialect == "sqlite" else history.now()
    with history.session() as s:
        # a lease that ran out less than lease_grace ago, or a heartbeat that much past stale_after, still
        # counts: the history may have been down meanwhile, unseen by this process (History.lease_held)
        leased = {str(o).split("/", 1)[0]
                  for o in s.scalars(select(tables.locks.c.owner)
                                     .where(tables.locks.c.expires_at > clock - history.lease_grace))}
    out = set()
    for r in rows:
        owner = r.owner or ""
        alive = owner_alive(owner, "")
        if alive is None:  # another host
            alive = history.heartbeat_fresh(seen.get(owner), clock, stale_after) or owner.split("/", 1)[0] in leased
        if alive:
            out.add(r.job)
    return out


def find_missed(jobs: Iterable[Job], history: History, now: datetime, default_grace: timedelta,
                calendar: Calendar | None, first_seen: dict[str, datetime],
                stale_after: timedelta = timedelta(minutes=2)) -> list[Missed]:
    out: list[Missed] = []
    running = running_jobs(history, now, stale_after)
    for job in jobs:
        if not job.enabled or job.schedule is None or job.name in running:
            continue
        run = last_run(history, job.name)
        last = run_start(run) if run is not None else None
        if last is not None:
            ref = last
        elif job.name in first_seen:
            ref = first_seen[job.name]
        else:
            continue
        grace = job.missed_grace if job.missed_grace is not None else default_grace
        covered = overlap_covered(history, job, run) if run is not None else None
        deadline = missed_deadline(job, max(ref, covered) if covered is not None else ref, now, grace, calendar)
        if deadline is not None and now > deadline:
            out.append(Missed(job.name, ref, deadline, job.schedule.period(), grace, last is None,
                              deadline - grace))
    return out


def stopped_on_request(run: RunRow) -> bool:
    """Interrupted because upkeeper was asked to stop (``details.stopped``, see
    :func:`upkeeper.core.history.stopped_on_request`): it neither ran to an outcome nor failed."""
    return is_stopped(run.status, run.details)


def run_start(run: RunRow) -> datetime:
    return run.started_at or run.scheduled_for


def last_run(history: History, job: str) -> RunRow | None:
    """The newest finished run (any outcome but skipped, or a run stopped with upkeeper) of ``job``, by its start."""
    rows = [r for r in history.runs(job=job, statuses=[*SUCCESS, *FAILURE], limit=10) if not stopped_on_request(r)]
    return max(rows, key=lambda r: (run_start(r), r.id)) if rows else None


def last_run_start(history: History, job: str) -> datetime | None:
    """When the newest finished run (any outcome but skipped, or a run stopped with upkeeper) of ``job`` started."""
    run = last_run(history, job)
    return run_start(run) if run is not None else None


def overlap_covered(history: History, job: Job, run: RunRow) -> datetime | None:
    """The start (plus jitter) of the newest occurrence of ``job`` skipped because ``run`` was still running
    (:data:`~upkeeper.core.history.OVERLAP_SKIP`, due between its start and its end); None when there is none.
    That run ran through it: the missed-run alarm expects the occurrence after it, not the one skipped -- which
    it used to page as missed as soon as a run longer than a period and the grace ended."""
    start, end = run_start(run), run.finished_at
    if end is None:
        return None
    jitter = job.jitter_offset
    for r in history.runs(job=job.name, since=start - jitter, before=end - jitter + timedelta(microseconds=1),
                          statuses=["skipped"], limit=100):
        due = r.scheduled_for + jitter
        if (r.summary or "").startswith(OVERLAP_SKIP) and start < due <= end:
            return due  # (newest first)
    return None


# -- backups -----------------------------------------------------------------------------------


def backup_size(run: RunRow | Any, cfg: BackupAlerts) -> float | None:
    metrics = getattr(run, "metrics", None) or {}
    for name in cfg.size_metrics:
        if name in metrics:
            return float(metrics[name])
    sizes = [a.get("size") for a in (getattr(run, "artifacts", None) or []) if isinstance(a, dict)]
    nums = [float(s) for s in sizes if isinstance(s, int | float) and not isinstance(s, bool)]
    return sum(nums) if nums else None


@dataclass
class SizeChange:
    size: float
    previous: float
    previous_run: int
    pct: float


def size_change(history: History, job: str, run_id: int, cfg: BackupAlerts) -> SizeChange | None:
    """This run's backup size against the previous successful run's (None when either is unknown)."""
    rows = history.runs(job=job, statuses=list(SUCCESS), limit=20)
    rows.sort(key=lambda r: (r.finished_at or r.scheduled_for, r.id), reverse=True)
    current = next((r for r in rows if r.id == run_id), None)
    if current is None:
        return None
    size = backup_size(current, cfg)
    if size is None:
        return None
    for prev in rows:
        if prev.id == run_id or (prev.finished_at or prev.scheduled_for) > (current.finished_at or current.scheduled_for):
            continue
        psize = backup_size(prev, cfg)
        if psize is None or psize <= 0:
            continue
        return SizeChange(size, psize, prev.id, (size - psize) / psize * 100.0)
    return None


@dataclass
class SuccessRate:
    pct: float
    succeeded: int
    total: int
    window: timedelta
    #: set when history retention deleted runs inside the window: the rate covers the runs that finished after
    #: this instant only (the end of the newest deleted run)
    kept_since: datetime | None = None
    #: False: retention's record of what it deleted is damaged; ``kept_since`` is the latest it can be (runs
    #: before it may, not must, be gone)
    kept_since_exact: bool = True


def success_rate(history: History, job: str, now: datetime, window: timedelta) -> SuccessRate | None:
    """Share of occurrences whose final attempt succeeded, over ``window`` (None when nothing ran).

    When history retention deleted runs inside the window, only the runs that finished after the newest
    deleted one count (all of them are kept), and ``kept_since`` says from when: never a rate over a part of
    the window's runs presented as the whole window's."""
    start = now - window
    deleted = history.deleted_runs()
    kept_since = deleted.through if deleted is not None and deleted.through >= start else None
    rows = [r for r in history.runs(job=job, since=start - timedelta(days=1), limit=100000)
            if r.status in SUCCESS + FAILURE and not stopped_on_request(r)
            and (r.finished_at or r.scheduled_for) >= start
            and (kept_since is None or (r.finished_at or r.scheduled_for) > kept_since)]
    rows.sort(key=lambda r: (r.started_at or r.scheduled_for, r.id))
    outcomes: list[bool] = []
    for r in rows:
        ok = r.status in SUCCESS
        if r.trigger == "retry" and outcomes:
            outcomes[-1] = ok  # the retry decides its occurrence
        else:
            outcomes.append(ok)
    if not outcomes:
        return None
    good = sum(outcomes)
    return SuccessRate(good / len(outcomes) * 100.0, good, len(outcomes), window, kept_since,
                       deleted is None or deleted.exact)
