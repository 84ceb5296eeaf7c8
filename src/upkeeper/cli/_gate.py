"""Manual runs against windows and blackouts: emergency runs, planned runs (``run --at``), refusals."""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from upkeeper.config.types import format_duration
from upkeeper.core.history import History, NewRun
from upkeeper.core.jobs import Job, Setup
from upkeeper.errors import UsageError
from upkeeper.fmt import human_duration, local_time
from upkeeper.notify.calendar import local_to_utc
from upkeeper.notify.policy import Calendar, describe

if TYPE_CHECKING:
    from upkeeper.notify.engine import NotificationEngine

PLANNED_TRIGGER = "planned"
EMERGENCY_TRIGGER = "emergency"


def actor() -> str:
    """Who is at the keyboard (the sudo user when run through sudo)."""
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    sudo = os.environ.get("SUDO_USER")
    return f"{sudo} (as {user})" if sudo and sudo != user else user


@dataclass
class Blocked:
    job: str
    reason: str
    hint: str
    blackout: bool = False  # a blackout holds the job (else: it runs only inside its maintenance window)


def blocked(calendar: Calendar, job: Job, now: datetime) -> Blocked | None:
    """Why a manual run of ``job`` may not start now (window or blackout), or None."""
    hit = calendar.blackout_at(job.category, now)
    if hit is not None:
        b, period = hit
        return Blocked(job.name, f"{job.name}: blackout {b.name!r} ({describe(period, str(b.rec.tz))}) — category "
                                 f"{job.category} is not excepted",
                       "Try: wait until it ends, or --emergency --reason '…' --approved-by NAME", blackout=True)
    window = calendar.window_of(job)
    if window is not None:
        nxt = calendar.opening(window, now)
        when = describe(nxt, window.tz) if nxt else "no future opening"
        return Blocked(job.name, f"{job.name} runs only inside maintenance window {window.name!r} (next: {when}); "
                                 f"manual runs need at least {format_duration(window.cfg.min_notice)} notice",
                       f"Try: upkeeper run {job.name} --at '"
                       + (local_time(max(nxt.start, now + window.cfg.min_notice), window.tz, "%Y-%m-%d %H:%M")
                          if nxt else "TIME")
                       + "' (a planned run), or --emergency --reason '…' --approved-by NAME")
    return None


def retry_hold(calendar: Calendar) -> Callable[[Job, datetime], str | None]:
    """What ``upkeeper run`` asks before each run starts (one that waited for a ``--parallel`` slot) and before a
    retry, once its backoff is over: a blackout that began meanwhile holds it (recorded skipped, as the daemon
    records a run or retry a blackout holds).  A window needs no check here:
    ``upkeeper run`` runs a window-bound job only as an emergency, and an emergency's retries are not held."""

    def hold(job: Job, now: datetime) -> str | None:
        hit = calendar.blackout_at(job.category, now)
        if hit is None:
            return None
        b, period = hit
        return f"blackout {b.name!r} ({describe(period, str(b.rec.tz))}); category {job.category} is not excepted"

    return hold


def parse_at(text: str, tz: str, now: datetime) -> datetime:
    """``2025-03-02 03:00`` (the config's timezone), ``…T03:00+01:00``, ``+2h`` or ``in 90m``."""
    s = text.strip()
    rel = s.removeprefix("in ").removeprefix("+").strip()
    if rel != s:
        from upkeeper.config.types import parse_duration

        try:
            return now + parse_duration(rel)
        except ValueError as exc:
            raise UsageError(f"invalid --at {text!r}: {exc}", "Try: --at '+2h' or --at '2025-03-02 03:00'") from None
    try:
        dt = datetime.fromisoformat(s.replace(" ", "T", 1))
    except ValueError:
        raise UsageError(f"invalid --at {text!r}: use 'YYYY-MM-DD HH:MM' (timezone {tz}), an ISO time with an "
                         "offset, or '+2h'", "Try: --at '2025-03-02 03:00'") from None
    try:
        if dt.tzinfo is None:
            # a local time the clocks skip (spring forward) is the first instant after the gap, one they repeat
            # (fall back) the first of the two -- as for schedules and windows (zoneinfo alone would put a skipped
            # 02:30 at 03:30)
            return local_to_utc(dt, ZoneInfo(tz))
        return dt.astimezone(UTC)
    except OverflowError:  # 0001-01-01 00:00 east of UTC, 9999-12-31 23:59 west of it
        raise UsageError(f"invalid --at {text!r}: out of range (before year 1 or after year 9999 in UTC)",
                         "Try: --at '+2h' or --at '2025-03-02 03:00'") from None


def plan_runs(setup: Setup, history: History, engine: NotificationEngine, jobs: list[Job], at: datetime,
              now: datetime, who: str) -> list[tuple[Job, int]]:
    """Insert ``pending`` runs due at ``at`` (the daemon claims them) after checking the rules."""
    cal = engine.calendar
    if at <= now:
        raise UsageError(f"--at {at.isoformat()} is in the past", "Try: a time in the future")
    problems = []
    for job in jobs:
        hit = cal.blackout_at(job.category, at)
        if hit is not None:
            problems.append(f"{job.name}: {at.isoformat()} falls in blackout {hit[0].name!r} "
                            f"({describe(hit[1], str(hit[0].rec.tz))})")
        window = cal.window_of(job)
        if window is not None:
            if window.rec.active(at) is None:
                nxt = cal.opening(window, at)
                problems.append(f"{job.name}: {local_time(at, window.tz)} is outside maintenance window "
                                f"{window.name!r}" + (f" (next opening {describe(nxt, window.tz)})" if nxt else ""))
            elif at - now < window.cfg.min_notice:
                problems.append(f"{job.name}: a planned run inside window {window.name!r} needs at least "
                                f"{format_duration(window.cfg.min_notice)} notice (this is "
                                f"{format_duration(at - now)})")
    if problems:
        raise UsageError("cannot plan: " + "; ".join(problems),
                         "Try: 'upkeeper windows' for openings, or --emergency for an urgent run")
    planned = []
    for job in jobs:
        rid = history.create_run(
            NewRun(job=job.name, task=job.task_name, target=job.target_name, scheduled_for=at, due_at=at,
                   trigger=PLANNED_TRIGGER, status="pending", summary=f"planned by {who}",
                   details={"planned_by": who, "planned_at": now.isoformat()}),
            f"cli:{who}", setup.config.node)
        if rid is None:
            raise UsageError(f"{job.name} already has a run at {at.isoformat()}", "Try: another time")
        history.audit(who, "planned-run", job=job.name, node=setup.config.node,
                      details={"run_id": rid, "at": at.isoformat()})
        planned.append((job, rid))
    names = ", ".join(j.name for j, _ in planned)
    engine.announce("planned", f"Planned run of {names} at {local_time(at, setup.config.timezone)}",
                    f"Planned by {who} {human_duration(at - now)} ahead. Runs when due (the daemon claims it).\n"
                    f"'upkeeper history {planned[0][0].name if len(planned) == 1 else 'JOB'}' lists it (pending) until "
                    f"it runs; 'upkeeper cancel {' '.join(str(r) for _, r in planned)}' cancels it.", now,
                    about=planned[0][0] if len(planned) == 1 else None,
                    details={"jobs": [j.name for j, _ in planned], "at": at.isoformat(),
                             "run_ids": [r for _, r in planned], "planned_by": who})
    return planned


def announce_emergency(setup: Setup, history: History, engine: NotificationEngine, jobs: list[Job], reason: str,
                       approved_by: str, who: str, now: datetime) -> dict[str, str]:
    details = {"reason": reason, "approved_by": approved_by, "requested_by": who}
    for job in jobs:
        why = blocked(engine.calendar, job, now)
        history.audit(who, "emergency-run", job=job.name, node=setup.config.node,
                      details={**details, "overrides": why.reason if why else None})
    names = ", ".join(j.name for j in jobs)
    engine.announce("emergency", f"EMERGENCY run of {names} by {who} (approved by {approved_by})",
                    f"Reason: {reason}\nStarted {local_time(now, setup.config.timezone)} on {setup.config.node}; "
                    f"it bypasses maintenance windows and blackouts.", now,
                    about=jobs[0] if len(jobs) == 1 else None, severity="warning",
                    details={**details, "jobs": [j.name for j in jobs]})
    return details


def announce_emergency_done(engine: NotificationEngine, results: list[tuple[str, int | None, str, str]],
                            who: str, now: datetime) -> None:
    lines = [f"• {job}: {status} (run {rid}) {summary[:120]}".rstrip() for job, rid, status, summary in results]
    bad = [r for r in results if r[2] in ("fail", "error", "interrupted")]
    engine.announce("emergency", f"EMERGENCY run finished: {len(results) - len(bad)} ok, {len(bad)} failed",
                    "\n".join(lines) + f"\nRequested by {who}. Details: upkeeper show RUN_ID", now,
                    severity="warning" if bad else "info", details={"runs": [
                        {"job": j, "run_id": r, "status": s} for j, r, s, _ in results]})
