"""One run, start to finish: locks, timeout, retries, recording.  Never lets a task crash the caller.

The runner is shared by ``upkeeper run`` and the daemon.  Listeners (the
notification engine) are told about every finished run; a failing listener is
logged and ignored.
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.exc import InterfaceError, OperationalError

from upkeeper.config.types import format_duration
from upkeeper.core.artifacts import publish, take_staged
from upkeeper.core.execute import WorkRequest
from upkeeper.core.executor import STOPPED_SUMMARY, Executor, LogFn, Outcome, ProgressFn
from upkeeper.core.history import FINAL_STATES, OVERLAP_SKIP, History, NewRun
from upkeeper.core.jobs import Job, Setup
from upkeeper.core.task import Finding, Result, Severity, Status
from upkeeper.redact import redact

log = logging.getLogger(__name__)

LOCK_TTL = timedelta(seconds=90)
LOCK_REFRESH = 30.0
#: a worker SIGTERMed from outside: how long to wait for this process's own stop to show.  A stop of the whole
#: cgroup (``systemctl stop``) or process group signals every process at once, but this process's handler runs
#: when its main thread next gets to it — on a loaded machine, later than 0.5 s once in CI's ~3,800 tests (a stop
#: recorded as a failed backup, "pg_dump: terminated by user"); waiting longer costs only a run whose tool was
#: killed alone, recorded as failed that much later
STOP_SIGNAL_WAIT = 2.0
#: the history unreachable as a run's outcome is recorded (a PostgreSQL restart or failover, a full or read-only
#: disk under SQLite): how long the runner keeps trying (seconds), waiting at most RECORD_RETRY_WAIT between tries.
#: The run's row would otherwise say ``running`` for as long as the process lives, its outcome lost.
RECORD_RETRY_FOR = 600.0
RECORD_RETRY_WAIT = 15.0


@dataclass
class FinishedRun:
    """What listeners receive after every run."""

    run_id: int
    job: Job
    status: str
    result: Result
    scheduled_for: datetime
    started_at: datetime | None
    finished_at: datetime
    trigger: str
    attempt: int
    retry_at: datetime | None = None
    log_excerpt: str = ""
    #: interrupted because this process was asked to stop (SIGTERM/SIGINT of the daemon or of ``upkeeper run``):
    #: an operator's (or systemd's) decision, not a failure of the job
    stopped: bool = False

    @property
    def failed(self) -> bool:
        return self.status in ("fail", "error", "interrupted")


class RunListener(Protocol):
    def run_finished(self, run: FinishedRun) -> None: ...


class LogBuffer:
    """Keeps the head and the tail of a run's log, with timestamps."""

    def __init__(self, head: int = 100, tail: int = 400) -> None:
        self.head: list[str] = []
        self.tail: deque[str] = deque(maxlen=tail)
        self.head_max = head
        self.dropped = 0
        self._lock = threading.Lock()

    def add(self, level: str, message: str) -> None:
        ts = datetime.now(UTC).strftime("%H:%M:%S")
        for ln in (message.splitlines() or [""]):
            line = f"{ts} {level:<7} {redact(ln)}"
            with self._lock:
                if len(self.head) < self.head_max:
                    self.head.append(line)
                else:
                    if len(self.tail) == self.tail.maxlen:
                        self.dropped += 1
                    self.tail.append(line)

    def text(self) -> str:
        with self._lock:
            mid = [f"… {self.dropped} lines omitted …"] if self.dropped else []
            return "\n".join([*self.head, *mid, *self.tail])


class Fence(threading.Event):
    """One run's cancel signal: set when the caller's ``cancel`` is (a stop, Ctrl-C), or by the :class:`LockKeeper`
    when another process took over one of the run's locks (:meth:`fire`)."""

    def __init__(self, outer: threading.Event | None) -> None:
        super().__init__()
        self.outer = outer
        #: the run's locks another process holds now: lock name -> (owner, node, purpose)
        self.lost: dict[str, tuple[str, str, str]] = {}

    def is_set(self) -> bool:
        return super().is_set() or (self.outer is not None and self.outer.is_set())

    def fire(self, lost: dict[str, tuple[str, str, str]]) -> None:
        self.lost = lost
        self.set()


class LockKeeper:
    """Refreshes the leases of every lock this process owns while it lives, and stops a run whose lock another
    process took over (:meth:`watch`)."""

    def __init__(self, history: History, owner: str, every: float = LOCK_REFRESH) -> None:
        self.history = history
        self.owner = owner
        self.every = every
        self._stop = threading.Event()
        self._count = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._watched: dict[str, tuple[list[str], Fence]] = {}

    def hold(self) -> None:
        with self._lock:
            self._count += 1
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._loop, daemon=True, name="lock-keeper")
                self._thread.start()

    def unhold(self) -> None:
        with self._lock:
            self._count = max(0, self._count - 1)

    def watch(self, holder: str, held: list[str], fence: Fence) -> None:
        """While a run executes: after each refresh, check that ``held`` (its locks, the list it goes on appending
        to) are still ``holder``'s.  One that another process holds now -- its lease ran out unrenewed for longer
        than the lease and its grace: the history unreachable that long, this process frozen, so another node
        took it for a dead holder's and is running the job (or an exclusive operation on its target) too -- fires
        ``fence``: the run is stopped rather than going on beside the new holder."""
        with self._lock:
            self._watched[holder] = (held, fence)

    def unwatch(self, holder: str) -> None:
        with self._lock:
            self._watched.pop(holder, None)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            with self._lock:
                if self._count == 0:
                    continue
            try:
                self.history.refresh_locks(self.owner, LOCK_TTL)
            except Exception as exc:  # a blip in the database must not kill the keeper
                log.warning("could not refresh locks: %s", exc)
                continue
            self._check_fences()

    def _check_fences(self) -> None:
        with self._lock:
            watched = [(holder, list(held), fence) for holder, (held, fence) in self._watched.items()]
        for holder, held, fence in watched:
            try:
                lost = {name: now for name, now in self.history.taken_over(held, holder).items() if now is not None}
            except Exception as exc:
                log.warning("could not check the locks of %s: %s", holder, exc)
                continue
            if lost and not fence.lost:
                log.error("%s: %s taken over by %s; stopping the run", holder, ", ".join(lost),
                          ", ".join(f"{now[2] or now[0]} on {now[1]}" for now in lost.values()))
                fence.fire(lost)

    def stop(self) -> None:
        self._stop.set()


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Runner:
    setup: Setup
    history: History
    executor: Executor
    owner: str
    node: str
    clock: Callable[[], datetime] = _utcnow
    listeners: list[RunListener] = field(default_factory=list)
    history_url: str | None = None
    target_lock_poll: float = 1.0

    def __post_init__(self) -> None:
        self.keeper = LockKeeper(self.history, self.owner)

    # -- manual runs ----------------------------------------------------------------------

    def run_manual(
        self,
        job: Job,
        *,
        trigger: str = "manual",
        retries: bool = True,
        on_log: LogFn | None = None,
        on_progress: ProgressFn | None = None,
        on_retry: Callable[[int, float], None] | None = None,
        cancel: threading.Event | None = None,
        details: dict[str, Any] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        hold: Callable[[Job, datetime], str | None] | None = None,
        on_retry_skipped: Callable[[int, int, str], None] | None = None,
    ) -> tuple[int, Outcome | None, str]:
        """Run a job now (``upkeeper run``); retries happen inline with backoff.

        ``hold`` is asked before the run starts (it may have waited for a slot: ``upkeeper run --all --parallel 2``
        behind hours of backups) and before each retry, once its backoff is over: a reason (a blackout began
        meanwhile) means that attempt does not run -- it is recorded ``skipped`` with that reason (trigger
        ``retry`` for a retry, whose failed attempt stays the result; for the run itself, status ``skipped`` and an
        outcome whose summary is the reason).  ``on_retry_skipped(run_id, attempt, reason)`` is told of a retry so
        recorded.  Returns ``(run_id, outcome, status)`` of the last attempt that ran.
        """
        why = hold(job, self.clock()) if hold is not None else None
        if why is not None:
            at = self.clock()
            rid = self.history.record_skip(job.name, job.task_name, job.target_name, at, f"skipped: {why}",
                                           trigger=trigger, owner=self.owner, node=self.node, details=details)
            assert rid is not None
            log.info("%s: skipped: %s", job.name, why)
            return rid, Outcome(Result(summary=f"skipped: {why}", status=Status.SKIPPED), at, at), "skipped"
        attempt = 1
        while True:
            now = self.clock()
            rid = self.history.create_run(
                NewRun(job=job.name, task=job.task_name, target=job.target_name, scheduled_for=now, due_at=now,
                       trigger=trigger if attempt == 1 else "retry", attempt=attempt, details=details),
                self.owner, self.node,
            )
            assert rid is not None
            status, outcome = self.execute(rid, job, scheduled_for=now, attempt=attempt,
                                           trigger=trigger if attempt == 1 else "retry",
                                           on_log=on_log, on_progress=on_progress, cancel=cancel,
                                           stopping=cancel, schedule_retry=False)
            failed = status in ("fail", "error")
            if not (retries and failed and attempt <= job.retries) or (cancel is not None and cancel.is_set()):
                return rid, outcome, status
            attempt += 1
            delay = job.retry_delay_for(attempt).total_seconds()
            if on_retry:
                on_retry(attempt, delay)
            if cancel is not None and sleep is time.sleep:
                if cancel.wait(delay):  # Ctrl-C or SIGTERM during the backoff: no further attempt
                    return rid, outcome, status
            else:
                sleep(delay)
            why = hold(job, self.clock()) if hold is not None else None
            if why is not None:
                at = self.clock()
                skipped = self.history.create_run(
                    NewRun(job=job.name, task=job.task_name, target=job.target_name, scheduled_for=at, due_at=at,
                           trigger="retry", attempt=attempt, status="skipped", summary=f"retry {attempt} skipped: {why}",
                           details={**(details or {}), "retry_of": rid}),
                    self.owner, self.node,
                )
                log.info("%s: retry %d skipped: %s", job.name, attempt, why)
                if on_retry_skipped is not None and skipped is not None:
                    on_retry_skipped(skipped, attempt, why)
                return rid, outcome, status

    # -- the core -------------------------------------------------------------------------

    def execute(
        self,
        run_id: int,
        job: Job,
        *,
        scheduled_for: datetime,
        attempt: int = 1,
        trigger: str = "schedule",
        on_log: LogFn | None = None,
        on_progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
        stopping: threading.Event | None = None,
        schedule_retry: bool = True,
    ) -> tuple[str, Outcome | None]:
        """Execute a claimed run (its row exists, status ``queued``).  Returns its final status.

        ``cancel`` set: stop the task now.  ``stopping`` set: this process was asked to stop (a daemon's SIGTERM,
        Ctrl-C of ``upkeeper run``); a run interrupted meanwhile is recorded ``interrupted`` with
        ``details.stopped`` and is no failure to notify about (:attr:`FinishedRun.stopped`)."""
        # the config as the run starts: a daemon's reload (SIGHUP) meanwhile does not change a run under way
        config = self.setup.config
        job_lock = f"job:{job.name}"
        target_lock = f"target:{job.target_name}" if job.exclusive and job.target_name else None
        holder = f"{self.owner}/{run_id}"  # locks are held per run, so runs of one process exclude each other
        logbuf = LogBuffer()

        def log_cb(level: str, message: str) -> None:
            logbuf.add(level, message)
            if on_log is not None:
                on_log(level, message)

        if target_lock:
            got_job_lock = self.history.acquire_lock(job_lock, holder, self.node, LOCK_TTL, purpose=f"run {run_id}")
        else:
            # the common case: take the job lock and mark the run running in one transaction
            got_job_lock = self.history.start_run_locked(run_id, self.clock(), self.owner, job_lock, holder,
                                                         self.node, LOCK_TTL)
        if not got_job_lock:
            current = self.history.lock_holder(job_lock)
            reason = OVERLAP_SKIP
            if current is not None:
                reason += f" ({current.purpose or 'run'} on {current.node})"
            self.history.set_status(run_id, "skipped", summary=reason, finished_at=self.clock())
            self._notify(FinishedRun(run_id, job, "skipped", Result(status=Status.SKIPPED, summary=reason),
                                     scheduled_for, None, self.clock(), trigger, attempt))
            return "skipped", None
        self.keeper.hold()
        held = [job_lock]
        fence = Fence(cancel)  # stops the task when a stop comes, or when another process took over its locks
        released = False
        try:
            if target_lock:
                if not self._wait_target_lock(target_lock, holder, job, run_id, log_cb, cancel):
                    reason = (f"interrupted before it started: waited for exclusive access to target "
                              f"{job.target_name!r}")
                    self.history.finish_run(run_id, status="interrupted", result=Result(summary=reason),
                                            finished_at=self.clock(), started_at=None, log_excerpt=logbuf.text())
                    return "interrupted", None
                held.append(target_lock)
                self.history.start_run(run_id, self.clock(), self.owner)
            started = self.clock()
            req = WorkRequest(run_id=run_id, job=job, config=config, history_url=self.history_url,
                              scheduled_for=scheduled_for, attempt=attempt)
            timeout = job.timeout.total_seconds() if job.timeout else None
            self.keeper.watch(holder, held, fence)
            try:
                outcome = self.executor.execute(req, timeout=timeout, on_log=log_cb, on_progress=on_progress,
                                                cancel=fence, kill_grace=job.kill_grace.total_seconds())
            finally:
                self.keeper.unwatch(holder)
            if fence.lost and outcome.interrupted and not (cancel is not None and cancel.is_set()):
                outcome.result = Result(status=Status.ERROR, metrics=outcome.result.metrics, summary=_fenced_summary(
                    fence.lost, outcome.killed, job.kill_grace.total_seconds()))
            if outcome.crashed or outcome.timed_out or outcome.killed:
                self._remove_work_files(outcome, log_cb, config)
            if _failed_by_the_stop(outcome, cancel, stopping):
                outcome.interrupted = outcome.terminated = True
                outcome.result = Result(status=Status.ERROR, summary=STOPPED_SUMMARY, metrics=outcome.result.metrics)
            self._check_locks_kept(held, holder, outcome.result, log_cb)
            status = outcome.status
            stopped = _asked_to_stop(outcome, cancel, stopping)
            if stopped and outcome.terminated:  # its worker got the stop's SIGTERM too: not a worker killed alone
                outcome.result.summary = STOPPED_SUMMARY
            finished = self.clock()
            retry_at: datetime | None = None
            if (schedule_retry and status in ("fail", "error") and attempt <= job.retries
                    and not outcome.interrupted):
                retry_at = finished + job.retry_delay_for(attempt + 1)
            # reports the task wrote under pending names: recorded by their final paths, renamed into
            # place once the result (and the job state naming them) is recorded
            staged = take_staged(outcome.result)
            details: dict[str, Any] = {}
            if outcome.timed_out:
                details["timed_out"] = True
            if stopped:
                details["stopped"] = True
            if retry_at:
                details["retry_at"] = retry_at.isoformat()
            self._record_finish(
                run_id, cancel, status=status, result=outcome.result, finished_at=finished, started_at=started,
                log_excerpt=logbuf.text(), details=details, release_locks_of=holder, job=job.name,
                target=job.target_name, state=outcome.state,
            )
            released = True
            publish(staged, log)
            if retry_at is not None:
                self.history.create_run(
                    NewRun(job=job.name, task=job.task_name, target=job.target_name, scheduled_for=retry_at,
                           due_at=retry_at, trigger="retry", attempt=attempt + 1, status="pending",
                           summary=f"retry {attempt + 1} of run {run_id}", details={"retry_of": run_id}),
                    self.owner, self.node,
                )
            self._notify(FinishedRun(run_id, job, status, outcome.result, scheduled_for, started, finished,
                                     trigger, attempt, retry_at, logbuf.text(), stopped=stopped))
            return status, outcome
        except Exception as exc:  # history hiccup: record what we can, never raise into the daemon
            log.exception("run %s of %s failed inside the runner", run_id, job.name)
            try:
                self._record_finish(run_id, cancel, status="error",
                                    result=Result(summary=f"internal error: {redact(str(exc))}"),
                                    finished_at=self.clock(), started_at=None, log_excerpt=logbuf.text())
            except Exception:
                pass
            return "error", None
        finally:
            for name in reversed(held) if not released else ():
                try:
                    self.history.release_lock(name, holder)
                except Exception as exc:
                    log.warning("could not release lock %s: %s", name, exc)
            self.keeper.unhold()

    def _check_locks_kept(self, held: list[str], holder: str, result: Result, log_cb: LogFn) -> None:
        """A lock this run held that another process took over meanwhile (its lease ran out unrenewed: the history
        unreachable, this process frozen, for longer than the lease and its grace) means another run of the job,
        or another exclusive operation on the target, may have run at the same time.  It used to go unnoticed
        (the run recorded ``ok``); it is now a warning finding of the run (``upkeeper.lock_lost``), which the
        notifications report."""
        try:
            lost = self.history.taken_over(held, holder)
        except (OperationalError, InterfaceError) as exc:  # the outcome matters more: recorded with its retries
            log.warning("could not check that the run's locks were kept: %s", redact(str(exc)))
            return
        for name, now in lost.items():
            who = (f"{now[2] or 'another process'} on {now[1]}" if now is not None else "nobody (released)")
            message = (f"lock {name} was taken over while this run ran; it is held by {who}: another run of this "
                       f"job, or another exclusive operation on its target, may have run at the same time")
            log_cb("ERROR", message)
            result.findings.append(Finding(
                "upkeeper.lock_lost", Severity.WARNING, name, message,
                "its lease ran out unrenewed for longer than the lease and its grace (the history database "
                "unreachable that long, or this process stopped or frozen); check the job's other runs "
                "(upkeeper history JOB) and the target", data={"holder": now[0] if now else None}))
            if result.status == Status.OK:
                result.status = Status.WARN

    def _record_finish(self, run_id: int, cancel: threading.Event | None, **outcome: Any) -> None:
        """:meth:`History.finish_run`, tried again while the history cannot be reached -- for up to
        :data:`RECORD_RETRY_FOR` seconds, or until ``cancel`` is set (the daemon's stop grace is over, Ctrl-C).  A
        run that finished while the history server restarted is recorded as it ended once the server is back,
        instead of staying ``running`` (its owner lives on: nothing recovers it) with its outcome lost."""
        deadline = time.monotonic() + RECORD_RETRY_FOR
        wait = 1.0
        warned = False
        while True:
            try:
                self.history.finish_run(run_id, **outcome)
                return
            except (OperationalError, InterfaceError) as exc:
                if time.monotonic() + wait > deadline or (cancel is not None and cancel.is_set()):
                    raise
                if not warned:
                    log.warning("cannot record the outcome (%s) of run %s: %s; trying again for up to %s",
                                outcome.get("status"), run_id, redact(str(getattr(exc, "orig", None) or exc)),
                                format_duration(timedelta(seconds=RECORD_RETRY_FOR)))
                    warned = True
            if cancel is not None:
                cancel.wait(wait)
            else:
                time.sleep(wait)
            wait = min(wait * 2, RECORD_RETRY_WAIT)
            try:  # the try that failed may have committed, its answer lost with the connection: never twice
                row = self.history.get_run(run_id)
            except (OperationalError, InterfaceError):
                continue
            if row is not None and row.status in FINAL_STATES:
                return

    def _remove_work_files(self, outcome: Outcome, log_cb: LogFn, config: Any) -> None:
        """A worker that died, or was killed at its timeout or after a stop's grace, ran none (or not all) of its
        cleanup: the work directories it held (a downloaded dump.rdb, a directory-format dump, SQLite copies:
        plaintext) are removed now, with
        those of any other dead process (:func:`~upkeeper.backup.workdir.clean_stale` removes none a live
        process holds), not at some later run's sweep; the run's summary says so."""
        from upkeeper.backup.workdir import clean_stale

        settings = getattr(config, "backup", None)
        base = getattr(settings, "work_dir", None) or tempfile.gettempdir()
        try:
            removed = clean_stale(Path(base))
        except Exception as exc:  # never fails the recording of the run
            log_cb("WARNING", f"could not remove the dead worker's work files in {base}: {exc}")
            outcome.result.summary += f"; its work files in {base} could not be removed ({exc})"
            return
        if removed:
            what = ", ".join(str(p) for p in removed)
            log_cb("WARNING", f"removed the work files the dead worker left (they may hold plaintext): {what}")
            outcome.result.summary += f"; its work files were removed ({what})"

    def _wait_target_lock(
        self, name: str, holder: str, job: Job, run_id: int, log_cb: LogFn, cancel: threading.Event | None
    ) -> bool:
        deadline = time.monotonic() + job.timeout.total_seconds()
        announced = False
        while True:
            if self.history.acquire_lock(name, holder, self.node, LOCK_TTL, purpose=f"{job.name} run {run_id}"):
                return True
            if not announced:
                current = self.history.lock_holder(name)
                log_cb("INFO", f"waiting for exclusive access to target {job.target_name!r}"
                               + (f" (held by {current.purpose} on {current.node})" if current else ""))
                announced = True
            if time.monotonic() > deadline or (cancel is not None and cancel.is_set()):
                return False
            time.sleep(self.target_lock_poll)

    def _notify(self, run: FinishedRun) -> None:
        for listener in self.listeners:
            try:
                listener.run_finished(run)
            except Exception as exc:
                log.warning("listener %s failed: %s", type(listener).__name__, redact(str(exc)))

    def close(self) -> None:
        self.keeper.stop()


#: what a tool of the task says when the stop's SIGTERM or SIGINT reached it: pg_dump and pg_restore catch it
#: ("pg_dump: terminated by user", exit 1), the others die of it (:func:`upkeeper.core.proc` "killed by SIGTERM")
def _fenced_summary(lost: dict[str, tuple[str, str, str]], killed: bool, grace: float) -> str:
    """The summary of a run the lock keeper stopped because another process took over its locks."""
    who = "; ".join(f"{name} is held by {now[2] or 'another process'} on {now[1]}" for name, now in lost.items())
    how = (f"the task did not end within {grace:g}s of SIGTERM and its processes were killed (SIGKILL)" if killed
           else "the task was stopped and its cleanup ran")
    return (f"interrupted: its lock was taken over while it ran ({who}): the job, or an exclusive operation on "
            f"its target, runs there now, so this run was stopped rather than run beside it; {how}")


_TOOL_STOPPED = re.compile(r"terminated by user|killed by SIG(?:TERM|INT)\b")


def _failed_by_the_stop(outcome: Outcome, cancel: threading.Event | None, stopping: threading.Event | None) -> bool:
    """A run that failed because a tool of its task got the stop's signal before its worker did: a stop of the
    whole cgroup (``systemctl stop``) signals every process, and on a loaded machine the worker can see pg_dump end
    ("terminated by user") and report the failure before its own SIGTERM comes.  Failed that way, and this process
    asked to stop then (or within :data:`STOP_SIGNAL_WAIT`), it is a stopped run, not a failed backup."""
    if outcome.interrupted or outcome.status not in ("fail", "error"):
        return False
    if not _TOOL_STOPPED.search(outcome.result.summary or ""):
        return False
    return _stop_asked_within(STOP_SIGNAL_WAIT, cancel, stopping)


def _asked_to_stop(outcome: Outcome, cancel: threading.Event | None, stopping: threading.Event | None) -> bool:
    """Was ``outcome``, an interrupted run, stopped because this process was asked to stop?"""
    if not outcome.interrupted:
        return False
    # its worker got SIGTERM from outside: alone (a `kill` of the worker — a failure), or with this process (a
    # stop of the cgroup or process group), whose own handler may not have run yet
    return _stop_asked_within(STOP_SIGNAL_WAIT if outcome.terminated else 0.0, cancel, stopping)


def _stop_asked_within(wait: float, cancel: threading.Event | None, stopping: threading.Event | None) -> bool:
    """Whether this process is asked to stop (``stopping``) or the run cancelled, now or within ``wait`` seconds
    (its own signal handler may not have run yet when a signal to the whole group reached a child first)."""
    events = [e for e in (stopping, cancel) if e is not None]
    deadline = time.monotonic() + wait
    while events:
        if any(e.is_set() for e in events):
            return True
        if time.monotonic() >= deadline:
            return False
        events[0].wait(min(0.05, max(0.0, deadline - time.monotonic())))
    return False


def status_exit_code(statuses: Sequence[str]) -> int:
    """0 when every run is ok/warn/skipped, 1 when any failed."""
    return 1 if any(s in ("fail", "error", "interrupted") for s in statuses) else 0
