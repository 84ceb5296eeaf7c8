"""The daemon loop: find due occurrences, decide, claim, dispatch.

* Each job's next occurrence sits in a heap keyed by its due time (the cron
  instant plus the job's stable jitter).
* :meth:`Daemon.decide` is the single decision point where a due occurrence is
  admitted, deferred or skipped; maintenance windows and blackouts are
  :class:`AdmissionPolicy` objects plugged in there.
* A claim is an insert of the occurrence row ``unique(job, scheduled_for)``:
  two daemons sharing one history database never fire an occurrence twice.
* An occurrence whose run a stop asked for interrupted (``systemctl restart``
  during the nightly backup) runs again when a daemon starts, under the job's
  catch-up policy (:meth:`Daemon._stopped_again`).
* A config reload (SIGHUP) is applied between ticks (:meth:`Daemon.apply`): runs under way keep the job they
  started with; added jobs and changed schedules start at their next occurrence, with no catch-up.
* The heartbeat thread records the loop's last tick: a hung loop is reported, not taken for alive.
* Under systemd (``$NOTIFY_SOCKET``) the loop reports its progress (:class:`~upkeeper.core.sdnotify.Notifier`):
  ``WATCHDOG=1`` only from the loop itself, so a hung loop stops the pings and systemd restarts the daemon.
* The clock is injectable: tests drive :class:`SimClock` instead of sleeping.
"""

from __future__ import annotations

import heapq
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol
from zoneinfo import ZoneInfo

from upkeeper import __version__
from upkeeper.config.types import format_duration
from upkeeper.core.history import OVERLAP_SKIP, WINDOW_WAIT, History, NewRun
from upkeeper.core.jobs import Job, Setup
from upkeeper.core.runner import Runner
from upkeeper.core.schedule import plan_catch_up
from upkeeper.core.sdnotify import Notifier
from upkeeper.fmt import human_duration

if TYPE_CHECKING:
    from upkeeper.core.models import RunRow

log = logging.getLogger(__name__)

PENDING_POLL = timedelta(seconds=5)
HOUSEKEEPING = timedelta(seconds=60)
ON_TIME_TOLERANCE = timedelta(seconds=60)
METRIC_PRUNE_EVERY = timedelta(hours=1)
#: How many times one occurrence is run again after a stop asked for interrupted it (the occurrence is tried at
#: most 1 + this many times): a deploy that restarts the daemon twice during the nightly backup still gets its
#: backup; a stop that keeps coming back (a job that restarts upkeeper itself, a restart loop) ends there.
STOP_RERUNS = 2
#: On a stop: how long (seconds) the drain waits for the history prune's batch to end, and for the runs still going
#: after ``daemon.shutdown_grace`` to end once killed.
PRUNE_STOP_WAIT = 30
KILL_WAIT = 30


# -- clocks -------------------------------------------------------------------------------


class Clock(Protocol):
    def now(self) -> datetime: ...

    def sleep_until(self, when: datetime, wake: threading.Event) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep_until(self, when: datetime, wake: threading.Event) -> None:
        delay = (when - datetime.now(UTC)).total_seconds()
        if delay > 0:
            wake.wait(min(delay, 60.0))


#: seconds the loop waits after a tick that failed (the history unreachable …) before it tries again
TICK_RETRY = 5.0


class RepeatedFailures:
    """How the daemon reports something that fails again and again (its tick, heartbeat or housekeeping while the
    history is unreachable): the first failure of a kind whole, the same failure again in one line with a count,
    and the recovery -- not the same lines every few seconds for as long as an outage lasts."""

    def __init__(self, what: str, first: str, back: str, *, with_traceback: bool = False,
                 level: int = logging.WARNING) -> None:
        self.what = what  # "daemon tick"
        self.first = first  # the first failure's message ("daemon tick failed; retrying every 5.0s")
        self.back = back  # the recovery's, after "N failed … over D" ("daemon ticks again")
        self.with_traceback = with_traceback
        self.level = level
        self.kind: tuple[str, str] | None = None  # (exception type, message) of the failure last logged whole
        self.count = 0  # failures in a row
        self.since = 0.0  # monotonic time of the first of them

    def failed(self, exc: Exception, now: float) -> None:
        kind = (type(exc).__name__, str(exc))
        if not self.count:
            self.since = now
        self.count += 1
        if kind != self.kind:
            self.kind = kind
            if self.with_traceback:
                log.log(self.level, "%s", self.first, exc_info=exc)
            else:
                log.log(self.level, "%s: %s", self.first, exc)
        else:
            line = str(exc).splitlines()[0] if str(exc) else ""
            log.log(self.level, "%s failed again (%d in a row over %s): %s%s", self.what, self.count,
                    human_duration(now - self.since), type(exc).__name__, f": {line}" if line else "")

    def succeeded(self, now: float) -> None:
        if self.count:
            log.warning("%s after %d failure(s) over %s", self.back, self.count, human_duration(now - self.since))
        self.kind, self.count = None, 0


class SimClock:
    """A clock that moves only when told to.  ``sleep_until`` blocks until it is advanced."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("SimClock needs an aware datetime")
        self._now = start.astimezone(UTC)
        self._cond = threading.Condition()

    def now(self) -> datetime:
        with self._cond:
            return self._now

    def advance(self, delta: timedelta) -> None:
        self.set(self.now() + delta)

    def set(self, when: datetime) -> None:
        with self._cond:
            if when > self._now:
                self._now = when
            self._cond.notify_all()

    def sleep_until(self, when: datetime, wake: threading.Event) -> None:
        with self._cond:
            while self._now < when and not wake.is_set():
                self._cond.wait(0.05)


# -- admission ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    action: Literal["admit", "defer", "skip"]
    reason: str = ""
    until: datetime | None = None  # for "defer": when to try again

    @staticmethod
    def admit() -> Decision:
        return Decision("admit")


class AdmissionPolicy(Protocol):
    """Decides whether a due occurrence may start now (windows, blackouts …)."""

    def decide(self, job: Job, occurrence: datetime, now: datetime, trigger: str) -> Decision: ...


@dataclass
class Periodic:
    """A callback the daemon runs every ``every`` (by its clock) from its loop: escalation timers,
    missed-run checks, window notices, delivery retries.  A failing callback is logged, never fatal."""

    name: str
    every: timedelta
    fn: Callable[[datetime], None]
    next_at: datetime = field(default=datetime.min.replace(tzinfo=UTC))


# -- the daemon ---------------------------------------------------------------------------


@dataclass(order=True)
class _Due:
    due_at: datetime
    job: str = field(compare=False)
    scheduled_for: datetime = field(compare=False)
    trigger: str = field(compare=False, default="schedule")
    summary: str = field(compare=False, default="")  # of the claimed row, until the run's own summary replaces it
    details: dict[str, Any] | None = field(compare=False, default=None)


@dataclass
class TickReport:
    claimed: list[tuple[str, datetime, int]] = field(default_factory=list)
    lost: list[tuple[str, datetime]] = field(default_factory=list)
    skipped: list[tuple[str, datetime, str]] = field(default_factory=list)
    deferred: list[tuple[str, datetime, datetime]] = field(default_factory=list)


@dataclass
class Applied:
    """What :meth:`Daemon.apply` changed."""

    added: list[str] = field(default_factory=list)  # added to the config, or enabled
    removed: list[str] = field(default_factory=list)  # removed from the config, or disabled
    rescheduled: list[str] = field(default_factory=list)  # schedule (or none now), timezone or jitter changed
    changed: list[str] = field(default_factory=list)  # anything else of the job (options, target, timeout …)
    abandoned: list[int] = field(default_factory=list)  # pending runs of jobs gone, recorded skipped

    def describe(self) -> str:
        parts = [f"{what} {', '.join(names)}" for what, names in (
            ("added", self.added), ("removed", self.removed), ("rescheduled", self.rescheduled),
            ("changed", self.changed)) if names]
        if self.abandoned:
            parts.append(f"{len(self.abandoned)} pending run(s) of removed jobs skipped")
        return "; ".join(parts) or "no job changed"


def _same_timing(old: Job, new: Job) -> bool:
    return old.schedule == new.schedule and old.jitter_offset == new.jitter_offset


class Daemon:
    def __init__(
        self,
        setup: Setup,
        history: History,
        runner: Runner,
        *,
        clock: Clock | None = None,
        policies: Sequence[AdmissionPolicy] = (),
        periodic: Sequence[Periodic] = (),
        concurrency: int | None = None,
        instance: str | None = None,
        on_event: Callable[[str, dict[str, object]], None] | None = None,
        pending_poll: timedelta = PENDING_POLL,
        housekeeping: timedelta = HOUSEKEEPING,
        notifier: Notifier | None = None,
    ) -> None:
        self.setup = setup
        self.history = history
        self.runner = runner
        self.clock: Clock = clock or SystemClock()
        self.policies = list(policies)
        self.periodic = list(periodic)
        self.node = runner.node
        self.owner = instance or runner.owner
        self.concurrency = concurrency or setup.config.daemon.concurrency
        self.pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="run")
        self.jobs = {n: j for n, j in setup.jobs.items() if j.enabled and j.schedule is not None}
        self.all_jobs = {n: j for n, j in setup.jobs.items() if j.enabled}
        self._heap: list[_Due] = []
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._cancel = threading.Event()
        self._inflight: dict[int, Future[object]] = {}
        self._interrupted: list[int] = []  # runs that ended interrupted once the daemon was stopping
        self._running_jobs: set[str] = set()
        self._lock = threading.Lock()
        self._next_pending = datetime.min.replace(tzinfo=UTC)
        self._next_housekeeping = datetime.min.replace(tzinfo=UTC)
        self._next_prune = datetime.min.replace(tzinfo=UTC)
        self._pruner: threading.Thread | None = None
        self._started_at = self.clock.now()
        self._prepared = False
        self._stop_asked: datetime | None = None
        #: the clock's time at the last tick (or prepare): every occurrence due by then was dealt with
        self._served_at = self._started_at
        self.on_event = on_event or (lambda kind, data: None)
        self.pending_poll = pending_poll
        #: seconds between a failed tick and the next try
        self.tick_retry = TICK_RETRY
        self._heartbeat_failures = RepeatedFailures("heartbeat", "heartbeat failed", "heartbeat written again")
        self._housekeeping_failures = RepeatedFailures("housekeeping", "housekeeping failed",
                                                       "housekeeping works again")
        self.housekeeping_every = housekeeping
        #: called in the loop's thread, between ticks, when a reload was asked for (:meth:`request_reload`)
        self.reloader: Callable[[], None] | None = None
        self._reload_asked = threading.Event()
        self._loop_thread: int | None = None
        self._stall_reported: datetime | None = None
        #: systemd's notification socket (READY, RELOADING, STOPPING, STATUS, WATCHDOG); a no-op without one
        self.notifier = notifier or Notifier(None)

    # -- set-up ---------------------------------------------------------------------------

    def prepare(self) -> TickReport:
        """Recover orphans, then plan every job's next occurrence (with catch-up)."""
        report = TickReport()
        self._heap = []  # a prepare the history failed under is done again whole (the loop's next tick)
        fixed = self.history.recover_orphans(self.node)
        if fixed:
            log.warning("marked %d run(s) left running by a dead process as interrupted: %s", len(fixed), fixed)
            self.on_event("recovered", {"runs": fixed})
        # a retry or deferred run waiting for a window, or a planned run, of a job since removed or disabled: no
        # daemon claims it (claim_pending knows only enabled jobs) -- recorded skipped, never left pending forever
        for gone, name, trigger in self.history.abandon_pending(self.node, list(self.all_jobs), self.clock.now()):
            log.warning("%s: pending %s run %d skipped: the job is no longer in the config, or is disabled", name,
                        trigger, gone)
        self._heartbeat()
        last = self.history.last_scheduled()
        lifetimes = self.history.daemon_lifetimes(exclude=self.owner)
        stopped = self.history.stopped_occurrences()
        now = self.clock.now()
        self._served_at = now
        catch_up: list[_Due] = []
        for name, job in self.jobs.items():
            assert job.schedule is not None
            # an occurrence still inside its jitter delay is on time, not missed
            since = self._served_through(job, last.get(name), lifetimes, now)
            plan = plan_catch_up(job.schedule, since, now, job.catch_up,  # type: ignore[arg-type]
                                 job.effective_grace(), ON_TIME_TOLERANCE + job.jitter_offset)
            if plan.fire is not None:
                catch_up.append(_Due(plan.fire, name, plan.fire, plan.trigger or "catch-up"))
            if plan.skipped is not None:
                n = f"{plan.missed}{'+' if plan.missed_capped else ''}"
                # why they are not run: a newer occurrence runs on time, the policy, or the grace
                why = (f"the occurrence at {plan.fire:%Y-%m-%d %H:%M:%S} UTC runs on time instead"
                       if plan.fire is not None and plan.trigger == "schedule" else "catch_up: skip"
                       if job.catch_up == "skip" else
                       f"catch_up: latest, but the newest is older than catch_up_grace "
                       f"({format_duration(job.effective_grace())})")
                reason = f"missed while no daemon was running ({n} occurrence(s)); {why}"
                rid = self.history.record_skip(name, job.task_name, job.target_name, plan.skipped, reason,
                                               trigger="catch-up", owner=self.owner, node=self.node)
                if rid is not None:
                    report.skipped.append((name, plan.skipped, reason))
            elif plan.fire is None and name in stopped:  # no later occurrence came due meanwhile
                again = self._stopped_again(job, stopped[name], now, report)
                if again is not None:
                    catch_up.append(again)
            self._push(job, plan.next_due)
        if catch_up:
            self._dispatch_batch(catch_up, now, report)
        self._prepared = True
        return report

    @staticmethod
    def _served_through(job: Job, last: datetime | None,
                        lifetimes: Sequence[tuple[datetime, datetime, frozenset[str]]], now: datetime) -> datetime | None:
        """Where catch-up of ``job`` starts: its last recorded occurrence ``last``, or a later occurrence whose due
        instant (occurrence + jitter) an earlier daemon serving ``job`` (``lifetimes``, any node) was running
        through -- one it would have claimed had its schedule had it: a schedule changed with a restart is no
        downtime.  An instance is running from its start until a stop was asked (or its last tick before it, see
        :meth:`stop`), or its last heartbeat if it died (no slack after it: it may have died right after, and a
        missed run is worse than one run too many), minus
        :data:`ON_TIME_TOLERANCE` (an occurrence due just before a stop may be left to the next daemon, which
        runs it on time).  Occurrences before such an occurrence were an earlier daemon's to catch up.  A
        brand-new job (``last`` None) stays None: it never catches up."""
        if last is None or job.schedule is None:
            return last
        since = last
        for start, end, names in lifetimes:
            through = min(end, now) - ON_TIME_TOLERANCE - job.jitter_offset
            if through <= since or job.name not in names:  # most rows: daemons gone before the last occurrence
                continue
            t = job.schedule.latest_at_or_before(through)
            if t is not None and t > since and t + job.jitter_offset >= start:
                since = t
        return since

    def _stopped_again(self, job: Job, row: RunRow, now: datetime, report: TickReport) -> _Due | None:
        """The job's newest occurrence was interrupted by a stop asked for (``row``, ``details.stopped``) and no
        later occurrence has come due: run it again once now, as a catch-up (policy ``latest``, the occurrence no
        older than ``catch_up_grace``, at most :data:`STOP_RERUNS` times per occurrence, and no successful run of the
        job started since the occurrence's instant — a manual one after the stop did its work); otherwise record
        why not (a ``skipped`` catch-up row).  The row of the k-th run again is keyed ``occurrence + k µs``: an instant
        every daemon computes alike from the history, so two daemons starting together claim it once, and the
        occurrence's tries stay side by side (``history`` shows it scheduled at the occurrence's second)."""
        details = row.details if isinstance(row.details, dict) else {}
        tries = details.get("stop_rerun")
        k = tries if isinstance(tries, int) and 0 <= tries <= STOP_RERUNS else 0
        occurrence = row.scheduled_for - timedelta(microseconds=k)
        key = occurrence + timedelta(microseconds=k + 1)
        info = {"rerun_of": row.id, "stop_rerun": k + 1, "occurrence": occurrence.isoformat()}
        why = f"run {row.id} (occurrence {occurrence.isoformat()}) was stopped when upkeeper was asked to stop"
        grace = job.effective_grace()
        reason: str | None = None
        extra: dict[str, object] = {}
        done = self.history.success_started_since(job.name, occurrence)
        if done is not None:  # e.g. 'upkeeper run JOB' after the stop: the backup is made, making it again is waste
            assert done.started_at is not None
            reason = f"not run again: {why}, and run {done.id} ({done.trigger}, {done.status}) of {job.name} " \
                     f"started since, at {done.started_at.isoformat()}"
            extra = {"done_by": done.id}
        elif k >= STOP_RERUNS:
            reason = f"not run again: {why}, and it was already run again {k} time(s) after a stop (at most " \
                     f"{STOP_RERUNS})"
        elif job.catch_up != "latest":
            reason = f"not run again: {why}; catch_up: {job.catch_up}"
        elif now - occurrence > grace:
            reason = f"not run again: {why}, longer ago than catch_up_grace {grace}"
        if reason is not None:
            rid = self.history.record_skip(job.name, job.task_name, job.target_name, key, reason,
                                           trigger="catch-up", owner=self.owner, node=self.node,
                                           details={"rerun_of": row.id, "occurrence": occurrence.isoformat(),
                                                    **extra})
            if rid is not None:
                log.info("%s: %s", job.name, reason)
                report.skipped.append((job.name, key, reason))
            return None
        log.info("%s: %s; running it again (catch-up %d of at most %d)", job.name, why, k + 1, STOP_RERUNS)
        self.on_event("stopped-rerun", {"job": job.name, "run": row.id, "occurrence": occurrence.isoformat()})
        return _Due(key, job.name, key, "catch-up", f"catch-up of the stopped run {row.id}: {why}", info)

    def _push(self, job: Job, scheduled_for: datetime) -> None:
        heapq.heappush(self._heap, _Due(scheduled_for + job.jitter_offset, job.name, scheduled_for))

    # -- one step -------------------------------------------------------------------------

    def tick(self) -> TickReport:
        """Handle everything due at the clock's current time.  Returns what happened."""
        if not self._prepared:
            return self.prepare()
        report = TickReport()
        now = self.clock.now()
        self._served_at = now
        self._clock_went_back(now)
        # pending runs (deferred, retries, planned) are older work: they go first
        if now >= self._next_pending:
            self._next_pending = now + self.pending_poll
            self._dispatch_pending(now, report)
        # the plan as it was: when the history fails under this tick (a PostgreSQL restart), the occurrences it
        # popped are due again at the next tick -- not dropped with nothing recorded (a restart would not catch
        # them up: this daemon was running through them).  What this tick did record is keyed by occurrence, so
        # doing it again claims nothing twice.
        plan_before = list(self._heap)
        try:
            due: list[_Due] = []
            while self._heap and self._heap[0].due_at <= now:
                item = heapq.heappop(self._heap)
                job = self.jobs.get(item.job)
                if job is None:
                    continue
                assert job.schedule is not None
                nxt = job.schedule.next_after(item.scheduled_for)
                if item.due_at < now - ON_TIME_TOLERANCE or nxt + job.jitter_offset <= now:
                    # We fell behind (suspended machine, stalled loop, clock jump): plan like a restart -- when
                    # this occurrence is late (it would run hours late as if on time, whatever catch_up says), and
                    # when the next one is due too (a short interval: each would fire, one after the other, in
                    # this tick)
                    nxt = self._fell_behind(job, item, now, due, report)
                else:
                    due.append(item)
                self._push(job, nxt)
            if due:
                self._dispatch_batch(due, now, report)
        except Exception:
            self._heap = plan_before
            raise
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + self.housekeeping_every
            self._housekeeping(now)
        self._run_periodic(now)
        return report

    def _fell_behind(self, job: Job, item: _Due, now: datetime, due: list[_Due], report: TickReport) -> datetime:
        """``item`` is overdue by more than the on-time tolerance, maybe with later occurrences too (the machine was
        suspended, the loop stalled -- SIGSTOP --, the clock jumped forward): the same catch-up as at a start, for
        ``item`` and every later occurrence up to ``now`` -- the newest may run once (policy ``latest``, within the
        grace), the rest are recorded as one skipped run; ``item`` never runs late as if on schedule.  Returns the
        occurrence to plan next."""
        assert job.schedule is not None
        plan = plan_catch_up(job.schedule, item.scheduled_for - timedelta(microseconds=1), now,
                             job.catch_up,  # type: ignore[arg-type]
                             job.effective_grace(), ON_TIME_TOLERANCE + job.jitter_offset)
        if plan.skipped is not None:
            n = f"{plan.missed}{'+' if plan.missed_capped else ''}"
            reason = (f"missed while the daemon could not run it (the machine was suspended, the daemon was "
                      f"stalled, or the clock jumped forward; {n} occurrence(s)); catch_up: {job.catch_up}, grace {job.effective_grace()}")
            rid = self.history.record_skip(job.name, job.task_name, job.target_name, plan.skipped, reason,
                                           trigger="catch-up", owner=self.owner, node=self.node)
            if rid is not None:
                report.skipped.append((job.name, plan.skipped, reason))
        if plan.fire is None:
            return plan.next_due
        if plan.trigger == "schedule" and plan.fire + job.jitter_offset > now:
            return plan.fire  # on time, still inside its jitter delay: due then, like any occurrence
        due.append(_Due(plan.fire, job.name, plan.fire, plan.trigger or "catch-up"))
        return plan.next_due

    def _clock_went_back(self, now: datetime) -> None:
        """After the wall clock stepped back (an NTP correction, a VM restored), the next pending poll, housekeeping
        and periodic check would wait the step out too: a deferred, planned or retried run due now would start
        that much late.  None of them is ever later than one period from now.  (Occurrences need nothing: they are
        instants, claimed once by their key.)"""
        self._next_pending = min(self._next_pending, now + self.pending_poll)
        self._next_housekeeping = min(self._next_housekeeping, now + self.housekeeping_every)
        self._next_prune = min(self._next_prune, now + METRIC_PRUNE_EVERY)
        for p in self.periodic:
            p.next_at = min(p.next_at, now + p.every)

    def _run_periodic(self, now: datetime) -> None:
        for p in self.periodic:
            if now < p.next_at:
                continue
            p.next_at = now + p.every
            try:
                p.fn(now)
            except Exception as exc:
                log.warning("periodic %s failed: %s", p.name, exc)

    def decide(self, job: Job, occurrence: datetime, now: datetime, trigger: str) -> Decision:
        """THE decision point: may this occurrence start now?  First non-admit answer wins."""
        for policy in self.policies:
            d = policy.decide(job, occurrence, now, trigger)
            if d.action != "admit":
                return d
        return Decision.admit()

    def _dispatch_batch(self, due: list[_Due], now: datetime, report: TickReport) -> None:
        to_claim: list[NewRun] = []
        for item in due:
            job = self.jobs[item.job]
            decision = self.decide(job, item.scheduled_for, now, item.trigger)
            if decision.action == "skip":
                rid = self.history.record_skip(job.name, job.task_name, job.target_name, item.scheduled_for,
                                               decision.reason or "skipped by policy", trigger=item.trigger,
                                               owner=self.owner, node=self.node, details=item.details)
                if rid is not None:
                    report.skipped.append((job.name, item.scheduled_for, decision.reason))
                    self.on_event("skipped", {"job": job.name, "reason": decision.reason})
                continue
            if decision.action == "defer":
                until = decision.until or (now + timedelta(minutes=5))
                # one deferred run covers every occurrence until it runs (like catch-up: never a replay); so does a
                # retry waiting for the window (it would run at the same opening)
                earlier = (self.history.pending_run(job.name, "deferred")
                           or self.history.pending_run(job.name, "retry"))
                if earlier is not None:
                    what = (f"occurrence {earlier.scheduled_for.isoformat()}" if earlier.trigger == "deferred"
                            else f"retry {earlier.attempt} (run {earlier.id})")
                    reason = f"skipped: {what} is already deferred ({decision.reason}) and covers this one"
                    self.history.record_skip(job.name, job.task_name, job.target_name, item.scheduled_for,
                                             reason, trigger=item.trigger, owner=self.owner, node=self.node,
                                             details=item.details)
                    report.skipped.append((job.name, item.scheduled_for, reason))
                    continue
                got = self.history.create_run(
                    NewRun(job=job.name, task=job.task_name, target=job.target_name,
                           scheduled_for=item.scheduled_for, due_at=until, trigger="deferred", status="pending",
                           summary=f"deferred until {until.isoformat()}: {decision.reason}", details=item.details),
                    self.owner, self.node,
                )
                if got is not None:
                    report.deferred.append((job.name, item.scheduled_for, until))
                    self.on_event("deferred", {"job": job.name, "until": until.isoformat(),
                                               "reason": decision.reason})
                continue
            with self._lock:
                overlapping = job.name in self._running_jobs
            if overlapping:
                rid = self.history.record_skip(
                    job.name, job.task_name, job.target_name, item.scheduled_for,
                    OVERLAP_SKIP, trigger=item.trigger,
                    owner=self.owner, node=self.node, details=item.details,
                )
                if rid is not None:
                    report.skipped.append((job.name, item.scheduled_for, "overlap"))
                continue
            to_claim.append(NewRun(job=job.name, task=job.task_name, target=job.target_name,
                                   scheduled_for=item.scheduled_for, due_at=item.due_at, trigger=item.trigger,
                                   summary=item.summary, details=item.details))
        if to_claim and self._stopping.is_set():
            # asked to stop during this tick (a SIGTERM while the history answered slowly, or during the start's
            # catch-up): its lifetime ended then, it claims nothing more -- the next daemon runs these on time or
            # catches them up, rather than this one starting a backup only to kill it at the end of its grace
            log.info("stopping: not claiming %s", ", ".join(f"{r.job} ({r.scheduled_for.isoformat()})"
                                                            for r in to_claim))
            return
        won = self.history.claim(to_claim, self.owner, self.node)
        won_keys = {(r.job, r.scheduled_for) for r, _ in won}
        for r in to_claim:
            if (r.job, r.scheduled_for) not in won_keys:
                report.lost.append((r.job, r.scheduled_for))
        for r, rid in won:
            report.claimed.append((r.job, r.scheduled_for, rid))
            self._submit(rid, self.jobs[r.job], r.scheduled_for, r.attempt, r.trigger)

    def _dispatch_pending(self, now: datetime, report: TickReport) -> None:
        if self._stopping.is_set():  # asked to stop during this tick: they stay pending, for the next daemon
            return
        rows = self.history.claim_pending(now, self.owner, self.node, list(self.all_jobs))
        for row in rows:
            job = self.all_jobs[row.job]
            # a deferred run, a run planned inside a window ('run --at') and a retry are decided when due, like any
            # run: the daemon may come back after the window closed, a retry's backoff may end after it closed or
            # inside a blackout, or a blackout may have been added since.  A retry outside its window waits for the
            # next opening (still the same attempt); one inside a blackout is skipped, as the occurrence would be
            if row.trigger in ("deferred", "planned", "retry"):
                d = self.decide(job, row.scheduled_for, now, row.trigger)
                what = f"retry {row.attempt} " if row.trigger == "retry" else ""
                if d.action == "defer":
                    until = d.until or (now + timedelta(minutes=5))
                    # marked: a reload decides it again at once, as a deferred occurrence (the window may have moved)
                    self.history.set_status(row.id, "pending", due_at=until,
                                            summary=f"{what}deferred until {until.isoformat()}: {d.reason}",
                                            details={**(row.details or {}), WINDOW_WAIT: until.isoformat()})
                    continue
                if d.action == "skip":
                    self.history.set_status(row.id, "skipped", summary=f"{what}skipped: {d.reason}"
                                            if what else d.reason, finished_at=now)
                    log.info("%s: %sskipped: %s", job.name, what, d.reason)
                    continue
            report.claimed.append((row.job, row.scheduled_for, row.id))
            self._submit(row.id, job, row.scheduled_for, row.attempt, row.trigger)

    def _submit(self, run_id: int, job: Job, scheduled_for: datetime, attempt: int, trigger: str) -> None:
        with self._lock:
            self._running_jobs.add(job.name)

        def work() -> object:
            try:
                # stopping: a run interrupted once the daemon was asked to stop is no failure to notify (a stop of
                # the whole cgroup, as systemctl stop sends, SIGTERMs its worker at the same moment)
                got = self.runner.execute(run_id, job, scheduled_for=scheduled_for, attempt=attempt,
                                          trigger=trigger, cancel=self._cancel, stopping=self._stopping)
                if got[0] == "interrupted" and self._stopping.is_set():
                    with self._lock:
                        self._interrupted.append(run_id)
                return got
            finally:
                with self._lock:
                    self._running_jobs.discard(job.name)
                if job.name not in self.all_jobs:  # removed by a reload while it ran: a retry it planned is not kept
                    try:
                        self.history.abandon_pending(self.node, list(self.all_jobs), self.clock.now())
                    except Exception as exc:
                        log.warning("%s: could not skip its pending runs: %s", job.name, exc)
                self._wake.set()

        def forget(done: Future[object]) -> None:
            with self._lock:
                if self._inflight.get(run_id) is done:
                    del self._inflight[run_id]

        fut = self.pool.submit(work)
        with self._lock:
            self._inflight[run_id] = fut
        # Forgotten when the future is done, after it was recorded: a run may finish (and its thread leave
        # ``work``) before this thread records its future, and the future is done only after ``work`` returns,
        # so neither "pop in work" nor "record unless done" can tell; a done callback added to a future that is
        # already done runs right here.
        fut.add_done_callback(forget)

    def _heartbeat(self) -> None:
        jobs = self.jobs  # one snapshot: a reload replaces the dict
        now = self.clock.now()
        try:
            self.history.daemon_heartbeat(self.owner, self.node, os.getpid(), self._started_at,
                                          len(jobs), __version__, job_names=list(jobs), at=now,
                                          loop_at=self._served_at)
        except Exception as exc:
            self._heartbeat_failures.failed(exc, time.monotonic())
        else:
            self._heartbeat_failures.succeeded(time.monotonic())
        self._check_stall(now)

    def _check_stall(self, now: datetime) -> None:
        """From the heartbeat thread: say so, once, when the loop's current tick (or sleep) has lasted longer
        than ``daemon.stall_after`` -- with where the loop is stuck -- and again when it moves on."""
        served = self._served_at
        limit = self.setup.config.daemon.stall_after
        if now - served <= limit:
            if self._stall_reported is not None and served > self._stall_reported:
                log.warning("the scheduling loop ticks again (it was stalled from %s to %s, %s)",
                            self._stall_reported.isoformat(), served.isoformat(),
                            human_duration(served - self._stall_reported))
                self._stall_reported = None
            return
        if self._stall_reported == served:
            return
        self._stall_reported = served
        frame = sys._current_frames().get(self._loop_thread) if self._loop_thread is not None else None
        # upkeeper's own frames (which call hung), then the innermost few (where it waits: a socket, a lock)
        stack = traceback.format_stack(frame) if frame is not None else []
        own = [f for f in stack[:-3] if f"{os.sep}upkeeper{os.sep}" in f]
        where = "".join([*own, *(["  …\n"] if own else []), *stack[-3:]]) or "(no stack)\n"
        self.notifier.status(f"stalled: the scheduling loop has not ticked since {served.isoformat(timespec='seconds')}")
        log.error("the scheduling loop has not ticked since %s (%s ago, more than daemon.stall_after %s): no "
                  "occurrence is claimed meanwhile; runs under way go on. It is stuck in:\n%s", served.isoformat(),
                  human_duration(now - served), human_duration(limit), where.rstrip())

    def _housekeeping(self, now: datetime) -> None:
        try:
            self.history.recover_orphans(self.node)
            if now >= self._next_prune:  # metric retention is in days: hourly pruning is plenty
                self._next_prune = now + METRIC_PRUNE_EVERY
                self.history.prune_metrics_bulk(
                    {job.name: now - job.metrics_retention for job in self.all_jobs.values()})
                self._start_history_prune(now)
        except Exception as exc:
            self._housekeeping_failures.failed(exc, time.monotonic())
        else:
            self._housekeeping_failures.succeeded(time.monotonic())

    def _start_history_prune(self, now: datetime) -> None:
        """History retention, in a thread: a first prune of a large history takes minutes of short
        batches, and the scheduler must not wait for it."""
        if self._pruner is not None and self._pruner.is_alive():
            return
        keep = self.setup.config.history_retention
        if keep.runs is None and keep.audit is None:
            return

        def prune() -> None:
            from upkeeper.core.retention import prune_history

            try:
                rep = prune_history(self.history, runs_before=now - keep.runs if keep.runs else None,
                                    audit_before=now - keep.audit if keep.audit else None,
                                    stop=self._stopping.is_set)
                if rep.runs or rep.notify_events or rep.notify_deliveries or rep.audit or rep.daemons:
                    log.info("history retention: deleted %d run(s), %d finding(s), %d notification event(s), "
                             "%d delivery(ies), %d audit entry(ies), %d daemon record(s)", rep.runs, rep.findings,
                             rep.notify_events, rep.notify_deliveries, rep.audit, rep.daemons)
                self.on_event("history-pruned", rep.to_dict())
            except Exception as exc:
                log.warning("history retention failed: %s", exc)

        self._pruner = threading.Thread(target=prune, name="history-prune", daemon=True)
        self._pruner.start()

    def wait_pruned(self, timeout: float = 30) -> bool:
        """Wait for a history prune in progress (tests, shutdown)."""
        t = self._pruner
        if t is not None:
            t.join(timeout)
            return not t.is_alive()
        return True

    # -- loop -----------------------------------------------------------------------------

    def next_wakeup(self) -> datetime:
        candidates = [self._next_pending, self._next_housekeeping, *(p.next_at for p in self.periodic)]
        if self._heap:
            candidates.append(self._heap[0].due_at)
        return min(candidates)

    def run_forever(self) -> None:
        hb_stop = threading.Event()
        self._loop_thread = threading.get_ident()

        def beat() -> None:
            while not hb_stop.wait(self.setup.config.daemon.heartbeat.total_seconds()):  # a reload may change it
                self._heartbeat()

        hb = threading.Thread(target=beat, daemon=True, name="heartbeat")
        hb.start()
        notifier = self.notifier
        failing = RepeatedFailures("daemon tick", f"daemon tick failed; retrying every {human_duration(self.tick_retry)}",
                                   "daemon ticks again", with_traceback=True, level=logging.ERROR)
        try:
            while not self._stopping.is_set():
                try:
                    self.tick()
                except Exception as exc:
                    failing.failed(exc, time.monotonic())
                    self._wake.wait(self.tick_retry)
                else:
                    failing.succeeded(time.monotonic())
                if self._stopping.is_set():
                    break
                # the loop's progress, and only it, pings systemd's watchdog: a tick that hangs stops the pings
                notifier.alive()
                notifier.status(self.status_text())
                self._wake.clear()
                if self._reload_asked.is_set():
                    self._reload_asked.clear()
                    self._reload()
                    continue  # what the new config makes due now is handled at once
                wake_at = self.next_wakeup()
                if notifier.ping_every is not None:  # a long sleep is cut short in time for the next ping
                    wake_at = min(wake_at, self.clock.now() + notifier.ping_every)
                self.clock.sleep_until(wake_at, self._wake)
        finally:
            hb_stop.set()

    def status_text(self) -> str:
        """One line for systemd's ``STATUS=`` (``systemctl status``): the jobs served, runs under way, what is next."""
        jobs, heap = self.jobs, self._heap  # snapshots: a reload replaces both
        running = len(self._inflight)  # one read of a dict's size needs no lock
        text = f"serving {len(jobs)} scheduled job(s)"
        if running:
            text += f", {running} run(s) under way"
        nxt = heap[0] if heap else None
        job = jobs.get(nxt.job) if nxt is not None else None
        if nxt is None or job is None:
            return text + "; nothing scheduled"
        try:
            when = nxt.due_at.astimezone(ZoneInfo(job.timezone))
        except (ValueError, OSError, KeyError):
            when = nxt.due_at.astimezone(UTC)
        return f"{text}; next: {job.name} at {when.strftime('%Y-%m-%d %H:%M %Z')}"

    def request_reload(self) -> None:
        """Ask the loop to reload the config between two ticks (call from a signal handler or another thread)."""
        self._reload_asked.set()
        self._wake.set()

    def _reload(self) -> None:
        if self.reloader is None:
            log.warning("a config reload was asked for, but this daemon has no way to reload: ignored")
            return
        # RELOADING=1 ... READY=1 around the reload, applied or refused (systemctl reload waits for READY=1 under
        # Type=notify-reload)
        self.notifier.reloading()
        try:
            self.reloader()
        except Exception:  # the reloader reports what it knows; anything else must not end the daemon
            log.exception("config reload failed; the daemon keeps running with the config it had")
        finally:
            self.notifier.ready(self.status_text())
            self.notifier.alive()

    def apply(self, setup: Setup, *, policies: Sequence[AdmissionPolicy], periodic: Sequence[Periodic]) -> Applied:
        """Switch to a reloaded config, between ticks (in the loop's thread).

        Runs under way finish as they started (the runner got their job).  A job removed, disabled or no longer
        scheduled is not scheduled any more, and its pending runs of this node (retries, deferred and planned
        runs) are recorded skipped, as at a start.  A job added, or whose schedule, timezone or jitter changed,
        runs at its first occurrence after now: the reload catches nothing up.  A job whose timing is unchanged
        keeps its next occurrence.  Windows and blackouts (``policies``) and the periodic checks are replaced."""
        now = self.clock.now()
        old, old_all = self.jobs, self.all_jobs
        jobs = {n: j for n, j in setup.jobs.items() if j.enabled and j.schedule is not None}
        all_jobs = {n: j for n, j in setup.jobs.items() if j.enabled}
        report = Applied()
        report.added = sorted(n for n in all_jobs if n not in old_all)
        report.removed = sorted(n for n in old_all if n not in all_jobs)
        both = [n for n in all_jobs if n in old_all]
        report.rescheduled = sorted(n for n in both if not _same_timing(old_all[n], all_jobs[n]))
        report.changed = sorted(n for n in both if n not in report.rescheduled and old_all[n] != all_jobs[n])
        heap = [item for item in self._heap
                if item.job in jobs and item.job in old and _same_timing(old[item.job], jobs[item.job])]
        heapq.heapify(heap)
        planned = {item.job for item in heap}
        self.setup = setup
        self.jobs = jobs
        self.all_jobs = all_jobs
        self._heap = heap
        for name, job in jobs.items() if self._prepared else ():  # not prepared yet: prepare() plans them all
            if name not in planned:
                assert job.schedule is not None
                self._push(job, job.schedule.next_after(now))
        self.policies = list(policies)
        self.periodic = list(periodic)
        self.runner.setup = setup
        if self._prepared:
            for gone, name, trigger in self.history.abandon_pending(self.node, list(self.all_jobs), now):
                log.warning("%s: pending %s run %d skipped: the job is no longer in the config, or is disabled",
                            name, trigger, gone)
                report.abandoned.append(gone)
            # a run deferred to the old window's opening (an occurrence, or a retry or planned run that came due
            # outside its window) is decided again now: the window may open earlier
            self.history.redecide_deferred(self.node, now)
        self._next_pending = now  # pending runs are decided again at once, under the new windows and blackouts
        self._heartbeat()  # the jobs it serves, for catch-up
        return report

    def record_reload(self, outcome: dict[str, Any]) -> None:
        """Record the outcome of a reload where ``upkeeper status`` shows it (never fatal)."""
        try:
            self.history.daemon_reloaded(self.owner, outcome)
        except Exception as exc:
            log.warning("could not record the reload's outcome in the history: %s", exc)

    def stop(self) -> None:
        """Stop claiming new work (call from a signal handler or another thread)."""
        if self._stop_asked is None:
            # it claims nothing from here on: its lifetime ends here -- or at its last tick, if its loop was stalled
            # since (SIGSTOP, a suspended VM: systemd's stop sends SIGCONT after SIGTERM, and this handler runs
            # before the loop ticks again): what came due meanwhile was no daemon's, and the next one catches it up
            # (in a loop that runs, the last tick is at most a pending poll, a few seconds, ago)
            self._stop_asked = min(self.clock.now(), self._served_at)
            running = len(self._inflight)  # no lock: a signal handler may interrupt its holder, in this thread
            self.notifier.stopping(f"stopping: {running} run(s) under way may finish" if running else "stopping")
        self._stopping.set()
        self._wake.set()

    def drain(self, grace: timedelta) -> list[int]:
        """Let running runs finish within ``grace``; kill and mark the rest interrupted.  Returns the runs that
        ended interrupted: those, and those whose worker was stopped with the daemon (a stop of the cgroup)."""
        self.stop()
        # under systemd: TimeoutStopSec may be shorter than what the drain may take (the prune's batch, the
        # grace, the kill of what is left, with some room for the history's writes): ask for that much
        self.notifier.extend_timeout(PRUNE_STOP_WAIT + grace.total_seconds() + KILL_WAIT + 15)
        self.wait_pruned(timeout=PRUNE_STOP_WAIT)  # it stops at its next batch
        with self._lock:
            futures = dict(self._inflight)
        import concurrent.futures as cf

        if futures:
            cf.wait(list(futures.values()), timeout=grace.total_seconds())
        self._cancel.set()  # executors kill what is still running; the runner records "interrupted"
        with self._lock:
            # a done future's callback may not have forgotten it yet: it finished, it was not interrupted
            left = {rid: f for rid, f in self._inflight.items() if not f.done()}
        if left:
            cf.wait(list(left.values()), timeout=KILL_WAIT)
        self.pool.shutdown(wait=False, cancel_futures=True)
        # runs claimed but never started, or whose thread did not come back
        try:
            fixed = self.history.interrupt_owned(
                self.owner, "interrupted: the daemon stopped before this run could finish"
            )
        except Exception as exc:  # the history unreachable (a PostgreSQL restart): the stop goes on regardless
            log.warning("could not mark the runs this daemon left unfinished as interrupted: %s; the next daemon "
                        "(or 'upkeeper run') on this node marks them", exc)
            fixed = []
        try:
            self.history.daemon_stopped(self.owner, self._stop_asked)
        except Exception:
            pass
        with self._lock:
            ended = list(self._interrupted)
        return sorted({*ended, *left, *fixed})

    def wait_idle(self, timeout: float = 30) -> bool:
        """Wait until no run is in flight (tests)."""
        import concurrent.futures as cf

        with self._lock:
            futures = list(self._inflight.values())
        if not futures:
            return True
        done, pending = cf.wait(futures, timeout=timeout)
        return not pending
