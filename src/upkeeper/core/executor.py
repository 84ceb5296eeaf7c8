"""Executors: where a task actually runs.

* :class:`WorkerPool` (the default): persistent worker processes, each the
  leader of its own process group.  A run that exceeds its timeout has its whole
  group killed (the task and every subprocess it started) and the worker is
  replaced; a task that crashes its worker never crashes the caller.
* :class:`InlineExecutor`: runs the task in the calling thread.  For tests of
  scheduling logic and for benchmarks of the scheduler itself.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any, Protocol, cast

from upkeeper.core.execute import WorkRequest, execute_request
from upkeeper.core.proc import describe_exit
from upkeeper.core.spawn import ForkedWorker, spawn_worker, take_early
from upkeeper.core.task import Result, Status
from upkeeper.redact import redact

LogFn = Callable[[str, str], None]
#: the summary of a run stopped because upkeeper was asked to stop (Ctrl-C, SIGTERM: ``systemctl stop``)
STOPPED = "interrupted: upkeeper was asked to stop (SIGTERM or SIGINT) while the task ran"
STOPPED_SUMMARY = f"{STOPPED}; the task was stopped and its cleanup ran"
#: Pickled jobs kept for the next worker that needs one (a 10,000-job fleet would hold ~5 MB otherwise).
JOB_BLOBS_KEPT = 2048
ProgressFn = Callable[[str, float | None], None]


@dataclass
class Outcome:
    """What came back from executing one request."""

    result: Result
    started_at: datetime
    finished_at: datetime
    timed_out: bool = False
    crashed: bool = False
    interrupted: bool = False
    #: the worker itself got SIGTERM from outside (``kill``, a stop of the whole cgroup), not from the pool
    terminated: bool = False
    #: stopped (``interrupted``), the task did not end within the kill grace and was SIGKILLed: its cleanup did not
    #: run to its end
    killed: bool = False
    worker_pid: int | None = None
    #: the job state the task wrote, for the runner to record with the result (None: nothing staged)
    state: dict[str, Any] | None = None

    @property
    def status(self) -> str:
        if self.interrupted:
            return "interrupted"
        return self.result.final_status.value


class Executor(Protocol):
    def execute(
        self,
        req: WorkRequest,
        *,
        timeout: float | None,
        on_log: LogFn | None = None,
        on_progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
        kill_grace: float | None = None,
    ) -> Outcome: ...

    def shutdown(self) -> None: ...


def _now() -> datetime:
    return datetime.now(UTC)


class InlineExecutor:
    """Run tasks in the calling thread (no process isolation; timeouts are not enforced)."""

    def __init__(self, clock: Callable[[], datetime] = _now, history: Any = None) -> None:
        self.clock = clock
        self.history = history

    def execute(
        self,
        req: WorkRequest,
        *,
        timeout: float | None,
        on_log: LogFn | None = None,
        on_progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
        kill_grace: float | None = None,
    ) -> Outcome:
        def send(msg: tuple[Any, ...]) -> None:
            if msg[0] == "log" and on_log:
                on_log(msg[1], msg[2])
            elif msg[0] == "progress" and on_progress:
                on_progress(msg[1], msg[2])

        started = self.clock()
        staged: dict[str, Any] = {}
        result = execute_request(req, send, clock=self.clock, history=self.history, staged_state=staged)
        return Outcome(result=result, started_at=started, finished_at=self.clock(), state=staged)

    def shutdown(self) -> None:
        pass


@dataclass
class _Worker:
    popen: subprocess.Popen[bytes] | ForkedWorker
    conn: Connection
    runs: int = 0
    config_token: int | None = None
    warmed: frozenset[str] = frozenset()
    jobs_sent: dict[str, object] = field(default_factory=dict)  # job name -> the Job object it has
    on_output: list[LogFn | None] = field(default_factory=lambda: [None])

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None


class WorkerPool:
    """Persistent worker processes, spawned on demand up to ``size``."""

    def __init__(self, size: int = 4, *, max_runs: int = 200, kill_grace: float = 5.0) -> None:
        self.size = max(1, size)
        self.max_runs = max_runs
        self.kill_grace = kill_grace
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        self._lock = threading.Lock()
        self._count = 0
        self._busy: dict[int, _Worker] = {}
        self._closed = False
        self._configs: dict[int, object] = {}
        self._next_token = 0
        self._job_blobs: dict[str, tuple[Any, bytes]] = {}
        self._warm: tuple[int | None, object | None, frozenset[str], str | None] | None = None

    def _config_token(self, config: object) -> int:
        with self._lock:
            for token, known in self._configs.items():
                if known is config:
                    return token
            self._next_token += 1
            self._configs = {self._next_token: config}  # one config at a time (the caller's Setup)
            return self._next_token

    def prestart(self, n: int = 1, *, config: object | None = None) -> None:
        """Start ``n`` workers in the background now, so their start-up overlaps the caller's own work.

        With ``config``, each worker also receives it (and registers its secrets) before its first
        run, so a daemon's first burst of runs does not pay for that on every worker at once.
        """
        token = self._config_token(config) if config is not None else None

        def spawn_one() -> None:
            try:
                w = self._spawn()
                if token is not None:
                    self._send_config(w, token, config)
            except Exception:
                with self._lock:
                    self._count -= 1
                return
            if self._closed:
                self._kill(w)
                with self._lock:
                    self._count -= 1
                return
            self._apply_warm(w)
            self._idle.put(w)

        for _ in range(n):
            with self._lock:
                if self._count >= self.size or self._closed:
                    return
                self._count += 1
            threading.Thread(target=spawn_one, daemon=True, name="worker-prestart").start()

    @staticmethod
    def _send_config(w: _Worker, token: int, config: object) -> None:
        """The config, unless the worker has it already; the jobs it was sent belong to the old one."""
        if w.config_token != token:
            w.conn.send(("config", token, config))
            w.config_token = token
            w.jobs_sent = {}

    def _job_blob(self, job: Any) -> bytes:
        """The job pickled once for every worker (cached while the job object is the same)."""
        with self._lock:
            got = self._job_blobs.pop(job.name, None)
            if got is not None and got[0] is job:
                self._job_blobs[job.name] = got  # most recently used last
                return got[1]
        blob = pickle.dumps(job, pickle.HIGHEST_PROTOCOL)
        with self._lock:
            self._job_blobs[job.name] = (job, blob)
            if len(self._job_blobs) > JOB_BLOBS_KEPT:  # the oldest goes: frequent jobs stay, rare ones re-pickle
                del self._job_blobs[next(iter(self._job_blobs))]
        return blob

    def warm(self, *, config: object | None = None, modules: Sequence[str] = (),
             history_url: str | None = None) -> None:
        """Get idle workers (and those starting) ready for the runs to come, before they are asked.

        Each receives ``config``, imports ``modules`` (the task modules of the jobs about to run, with
        the libraries they load lazily) and opens the history database at ``history_url`` — on its own
        core, while the caller claims the runs.  Only a head start: a worker that misses this gets the
        config with its first run and imports the task's module when the request arrives.
        """
        token = self._config_token(config) if config is not None else None
        with self._lock:
            self._warm = (token, config, frozenset(modules), history_url)
        taken: list[_Worker] = []
        while True:
            try:
                taken.append(self._idle.get_nowait())
            except queue.Empty:
                break
        for w in taken:
            self._apply_warm(w)
        for w in reversed(taken):  # LIFO: keep the order they were in
            self._idle.put(w)

    def _apply_warm(self, w: _Worker) -> None:
        warm = self._warm
        if warm is None or not w.alive():
            return
        token, config, modules, url = warm
        try:
            if token is not None:
                self._send_config(w, token, config)
            if not modules <= w.warmed or url is not None and url not in w.warmed:
                w.conn.send(("warm", sorted(modules), url))
                w.warmed = w.warmed | modules | ({url} if url else set())
        except OSError:
            pass  # a dead worker is noticed (and replaced) when it is acquired

    # -- worker lifecycle -------------------------------------------------------------

    def _spawn(self) -> _Worker:
        got = take_early() or spawn_worker()  # adopt the worker the CLI started before its imports
        popen, parent_sock = got
        conn = Connection(parent_sock.detach())
        w = _Worker(popen=popen, conn=conn)
        threading.Thread(target=self._drain_output, args=(w,), daemon=True, name=f"worker-out-{popen.pid}").start()
        # wait for its "ready"
        if not conn.poll(60):
            self._kill(w)
            raise RuntimeError("worker process did not start within 60 s")
        try:
            msg = conn.recv()
        except EOFError:
            rc = popen.wait()
            raise RuntimeError(f"worker process failed to start ({describe_exit(rc)})") from None
        if msg[0] != "ready":
            self._kill(w)
            raise RuntimeError(f"unexpected message from a new worker: {msg[0]!r}")
        return w

    def _drain_output(self, w: _Worker) -> None:
        """Whatever a task (or its children) writes to stdout/stderr lands in the run's log."""
        assert w.popen.stdout is not None
        for raw in iter(w.popen.stdout.readline, b""):
            cb = w.on_output[0]
            if cb is not None:
                try:
                    cb("OUTPUT", raw.decode("utf-8", errors="replace").rstrip("\n"))
                except Exception:
                    pass
        w.popen.stdout.close()

    def _acquire(self) -> _Worker:
        while True:
            try:
                w = self._idle.get_nowait()
                if w.alive():
                    return w
                with self._lock:
                    self._count -= 1
                continue
            except queue.Empty:
                pass
            with self._lock:
                if self._closed:
                    raise RuntimeError("the worker pool is shut down")
                if self._count < self.size:
                    self._count += 1
                    spawn = True
                else:
                    spawn = False
            if spawn:
                try:
                    return self._spawn()
                except BaseException:
                    with self._lock:
                        self._count -= 1
                    raise
            try:
                w = self._idle.get(timeout=1.0)
            except queue.Empty:
                continue
            if w.alive():
                return w
            with self._lock:
                self._count -= 1

    def _release(self, w: _Worker, reusable: bool) -> None:
        w.on_output[0] = None
        if reusable and w.alive() and w.runs < self.max_runs and not self._closed:
            self._idle.put(w)
            return
        if w.alive():
            try:
                w.conn.send(("exit",))
            except OSError:
                pass
            try:
                w.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._kill(w)
        w.conn.close()
        with self._lock:
            self._count -= 1

    def _kill(self, w: _Worker, grace: float | None = None) -> bool:
        """SIGTERM the worker's whole process group, SIGKILL after ``grace`` (default: the pool's), reap.  True when the worker ended
        within the grace (its task unwound: see :func:`upkeeper.core.worker._on_term`)."""
        pgid = w.pid
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        unwound = True
        try:
            w.popen.wait(timeout=self.kill_grace if grace is None else grace)
        except subprocess.TimeoutExpired:
            unwound = False
        try:
            os.killpg(pgid, signal.SIGKILL)  # also whatever children ignored SIGTERM
        except ProcessLookupError:
            pass
        try:
            w.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        return unwound

    @staticmethod
    def _kill_orphans(pgid: int, wait: float = 3.0) -> None:
        """SIGKILL what a dead worker left running in its process group (its task's subprocesses: the direct
        ones get SIGTERM from the kernel as their parent dies, see :func:`~upkeeper.core.proc.die_with_parent`,
        theirs nothing), and wait up to ``wait`` seconds until none runs (zombies aside: their new parent reaps
        them), so that none writes into the work directory removed next.  (The group's id stays taken while
        any member lives: no other process can have it.)"""
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while _group_running(pgid) and time.monotonic() < deadline:
            time.sleep(0.02)

    # -- the interface ----------------------------------------------------------------

    def execute(
        self,
        req: WorkRequest,
        *,
        timeout: float | None,
        on_log: LogFn | None = None,
        on_progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
        kill_grace: float | None = None,
    ) -> Outcome:
        """Run ``req`` in a worker.  On ``timeout`` (seconds) or ``cancel``, its process group is SIGTERMed (the
        task unwinds: its cleanup runs) and SIGKILLed ``kill_grace`` seconds later (default: the pool's)."""
        grace = self.kill_grace if kill_grace is None else kill_grace
        try:
            w = self._acquire()
        except Exception as exc:
            now = _now()
            return Outcome(Result(status=Status.ERROR, summary=f"could not start a worker process: {exc}"), now, now,
                           crashed=True)
        started = _now()
        w.runs += 1
        w.on_output[0] = on_log
        with self._lock:
            self._busy[w.pid] = w
        deadline = None if timeout is None else time.monotonic() + timeout
        reusable = False
        try:
            try:
                token = None
                known_job = None
                job_blob = None
                if req.config is not None:
                    # the config travels once per worker, and so does each job of it (pickling a job
                    # with its options was a tenth of a daemon's work in a burst of runs)
                    token = self._config_token(req.config)
                    self._send_config(w, token, req.config)
                    job = req.job
                    known_job = job.name
                    if w.jobs_sent.get(job.name) is not job:
                        job_blob = self._job_blob(job)
                        w.jobs_sent[job.name] = job
                    req = dataclasses.replace(req, config=None, job=cast(Any, None))
                w.conn.send_bytes(pickle.dumps(("run", req, token, known_job, job_blob), pickle.HIGHEST_PROTOCOL))
            except Exception as exc:  # unpicklable request, dead worker
                return Outcome(Result(status=Status.ERROR, summary=f"could not hand the run to a worker: {exc}"),
                               started, _now(), crashed=True, worker_pid=w.pid)
            while True:
                wait = 0.25
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - time.monotonic()))
                try:
                    ready = w.conn.poll(wait)
                except (OSError, EOFError):
                    ready = True
                if ready:
                    try:
                        msg = w.conn.recv()
                    except (EOFError, OSError):
                        rc = w.popen.wait()
                        if rc in (128 + signal.SIGTERM, -signal.SIGTERM):
                            # SIGTERM from outside (systemd stopping the unit, `kill`): the worker unwound
                            # the task (its cleanup ran, see worker.main) and ended, as the pool's own
                            # SIGTERM on Ctrl-C does: an interrupted run, not a crash
                            return Outcome(
                                Result(status=Status.ERROR,
                                       summary="interrupted: the worker process running the task was stopped "
                                               "by SIGTERM"),
                                started, _now(), interrupted=True, terminated=True, worker_pid=w.pid,
                            )
                        # no cleanup of its own ran (kill -9, the OOM killer): what it started (redis-cli,
                        # pg_dump, age) would go on writing into its work directory, which the runner removes
                        self._kill_orphans(w.pid)
                        return Outcome(
                            Result(status=Status.ERROR,
                                   summary=f"the worker process running the task died ({describe_exit(rc)})"),
                            started, _now(), crashed=True, worker_pid=w.pid,
                        )
                    kind = msg[0]
                    if kind == "log":
                        if on_log:
                            on_log(msg[1], msg[2])
                    elif kind == "progress":
                        if on_progress:
                            on_progress(msg[1], msg[2])
                    elif kind == "result":
                        reusable = True
                        return Outcome(Result.from_dict(msg[1]), started, _now(), worker_pid=w.pid,
                                       state=msg[2] if len(msg) > 2 else None)
                    continue
                if cancel is not None and cancel.is_set():
                    unwound = self._kill(w, grace)
                    return Outcome(
                        Result(status=Status.ERROR,
                               summary=STOPPED_SUMMARY if unwound else
                               f"{STOPPED}; the task did not end within {grace:g}s of SIGTERM and its "
                               "processes were killed (SIGKILL)"),
                        started, _now(), interrupted=True, killed=not unwound, worker_pid=w.pid,
                    )
                if deadline is not None and time.monotonic() >= deadline:
                    self._kill(w, grace)
                    return Outcome(
                        Result(status=Status.ERROR,
                               summary=f"timed out after {timeout:g}s; the task and all its subprocesses were killed"),
                        started, _now(), timed_out=True, worker_pid=w.pid,
                    )
        finally:
            with self._lock:
                self._busy.pop(w.pid, None)
            self._release(w, reusable)

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            busy = list(self._busy.values())
        for w in busy:
            self._kill(w)
        while True:
            try:
                w = self._idle.get_nowait()
            except queue.Empty:
                break
            try:
                w.conn.send(("exit",))
                w.popen.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self._kill(w)
            w.conn.close()


def _group_running(pgid: int) -> bool:
    """Whether a process of the process group ``pgid`` runs (is not a zombie), from /proc; off Linux whether
    the group has any member."""
    try:
        pids = [n for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # after the command: state, ppid, pgrp
        if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] not in (b"Z", b"X"):
            return True
    return False


def summarize_exc(exc: BaseException) -> str:
    return redact(f"{type(exc).__name__}: {exc}")
