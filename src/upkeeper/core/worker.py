"""Worker process: ``python -m upkeeper.core.worker FD``.

Started by :class:`~upkeeper.core.executor.WorkerPool` in a new session, so the
worker leads its own process group and every subprocess a task starts stays in
that group.  The pool kills the group on timeout; the worker kills its own group
if its parent dies (``kill -9`` of the daemon), so no task outlives it (:func:`_die`).
Should the worker itself be killed, its subprocesses get SIGTERM from the kernel
(:func:`upkeeper.core.proc.die_with_parent`).
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from upkeeper.shield import stop_or_defer

if TYPE_CHECKING:  # (imported where used: upkeeper run imports this module before it starts its scan helpers)
    from multiprocessing.connection import Connection

#: seconds the task's processes have to end on SIGTERM once the parent is gone, before the group's SIGKILL
ORPHAN_GRACE = 1.0
_dying = threading.Event()
_dying_lock = threading.Lock()
_dier: list[int] = []  # the thread running _die


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.5)
        _exit_if_orphaned(parent)


def _exit_if_orphaned(parent: int) -> None:
    """If our parent died, take the task and all its subprocesses down with us.

    Also called before the task writes its state: the parent records the run's result, so a task
    must not record its cursors (log offsets, counters) once nobody is left to record its figures —
    within the watch's half second, a fast task would otherwise skip those log lines for good."""
    if os.getppid() != parent:
        _die()


def _die() -> NoReturn:
    """SIGTERM our process group, SIGKILL it after :data:`ORPHAN_GRACE`, exit 137 — once, whichever thread
    comes first (another thread that gets here waits for it).

    SIGTERM first: on it pg_dump and pg_restore send the server a cancel request for their running statements
    and exit; SIGKILLed outright they left a backend building an index (or holding a dump's locks) until the
    statement ended on its own.  The task must not go on meanwhile: a verify whose pg_restore ends so would
    record the backup as verify-failed.  So the SIGTERM stops this process's main thread where it is — in
    :func:`_on_term`, until the SIGKILL — unless the main thread is the one running this."""
    with _dying_lock:
        first = not _dying.is_set()
        if first:
            _dier.append(threading.get_ident())
        _dying.set()
    if not first:
        while True:
            time.sleep(60)
    try:
        pgid = os.getpgid(0)
        try:
            os.killpg(pgid, signal.SIGTERM)
            time.sleep(ORPHAN_GRACE)
        finally:
            os.killpg(pgid, signal.SIGKILL)
    finally:
        os._exit(137)


_terminated = threading.Event()


def _on_term(signum: int, frame: Any) -> None:
    """SIGTERM unwinds the task (its cleanup runs: work files, partial uploads, a scratch database) — once.

    A stop of the whole cgroup or process group (``systemctl stop``: KillMode=control-group) SIGTERMs this
    worker directly, and its parent, stopped at the same moment, SIGTERMs the worker's group again a moment
    later (:meth:`~upkeeper.core.executor.WorkerPool._kill`): raised again, that second SystemExit cut the
    cleanup the first one started short (a scratch database left behind).  The SIGKILL after the parent's
    grace is there for a cleanup that hangs.

    Arriving while a cleanup runs anyway (a verify dropping its scratch database after its checks, a failed
    upload being aborted), the stop waits for it to end (:mod:`upkeeper.shield`)."""
    if _dying.is_set():  # our own SIGTERM to the group, the parent gone (_die): the SIGKILL follows
        if threading.get_ident() in _dier:
            return
        while True:  # the task goes no further (nor records anything) before it
            time.sleep(60)
    if _terminated.is_set():
        return
    _terminated.set()
    stop_or_defer(SystemExit(128 + signum))


def warm(modules: list[str], history_url: str | None, stop: Callable[[], bool] | None = None) -> None:
    """Import the task modules of the runs to come (and the libraries they load lazily, theirs first), open history.

    ``stop``: asked between imports (:func:`upkeeper.lazy.load_all`); once true (a message waits: the run has
    come), what is left is imported where it is first used.  ``upkeeper run``'s worker was still importing the
    other log tasks' libraries when its run came (~50 ms of a 100 MB log's run).  Failures are left for the run
    itself to report.
    """
    import importlib

    from upkeeper import lazy
    from upkeeper.core.execute import open_history

    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:
            pass
    lazy.load_all(first=modules, stop=stop)
    if history_url and not (stop is not None and stop()):
        try:
            open_history(history_url)
        except Exception:
            pass


def hinted_modules(config: str, jobs: list[str]) -> list[str]:
    """The modules of the built-in tasks that ``jobs`` of the config file run (``config`` "": the file
    the CLI finds by default).  Only a head start, so anything unclear is left out: the CLI, which
    validates the config, sends the full list with :meth:`~upkeeper.core.executor.WorkerPool.warm`."""
    return _hinted(config, tuple(jobs))[0]


#: a hinted job as written in the config file: its task's name, its ``options`` and its target's settings
#: (unvalidated: empty when missing or not a mapping)
HintedJob = tuple[str, dict[str, Any], dict[str, Any]]
#: what :func:`_hinted` read, by (config, jobs): ``upkeeper run`` reads it before it forks its worker
#: (:func:`preload`), which then need not read the file again
_hints: dict[tuple[str, tuple[str, ...]], tuple[list[str], str | None, list[HintedJob]]] = {}


def _hinted(config: str, jobs: tuple[str, ...]) -> tuple[list[str], str | None, list[HintedJob]]:
    """:func:`hinted_modules`, the config's ``history`` setting ("" when it has none: the default
    SQLite file; None when the file could not be read), and the jobs of built-in tasks (:data:`HintedJob`)."""
    key = (config, jobs)
    got = _hints.get(key)
    if got is not None:
        return got
    try:  # (light: upkeeper run asks before it imports the config models, see start_ahead)
        from ruamel.yaml import YAML

        from upkeeper.config.locate import locate_config
        from upkeeper.tasks._index import TASK_MODULES

        path, _named = locate_config(config or None)
        if path is None or not path.is_file():  # a pipe (--config <(…), a FIFO) is the CLI's to read, once
            return [], None, []
        yaml = YAML(typ="safe", pure=False)  # (as the loader's parse_yaml without line numbers)
        yaml.allow_duplicate_keys = False
        root = yaml.load(path.read_text(encoding="utf-8"))
        defined = root["jobs"]
        targets = root.get("targets")
        found: list[HintedJob] = []
        for j in jobs:
            job = defined.get(j)
            if isinstance(job, dict) and isinstance(job.get("task"), str) and job["task"] in TASK_MODULES:
                target = targets.get(job.get("target")) if isinstance(targets, dict) else None
                options = job.get("options")
                found.append((job["task"], options if isinstance(options, dict) else {},
                              target if isinstance(target, dict) else {}))
        history = root.get("history") or ""
    except Exception:
        return [], None, []
    got = _hints[key] = (sorted({TASK_MODULES[t] for t, _o, _t in found}),
                         history if isinstance(history, str) else None, found)
    return got


def head_start(config: str, jobs: list[str]) -> None:
    """Let the task of each of ``jobs`` start what its run will need (:meth:`~upkeeper.core.task.Task.head_start`),
    while the CLI still loads the config.  Best effort: anything that fails is left to the run."""
    from upkeeper.core.task import REGISTRY

    for task_name, options, target in _hinted(config, tuple(jobs))[2]:
        try:
            REGISTRY.get(task_name).head_start(options, target)
        except Exception:
            continue


def start_ahead(hint: Sequence[str]) -> int:
    """At the very start of ``upkeeper run`` (``hint``: ``[config, job…]``), before it imports anything heavy: start
    the scan helpers the named log jobs will need (:func:`upkeeper.logs.ahead.start`; they import their parsers on
    the core the CLI's imports leave idle, and the worker forked afterwards takes them over).  How many were
    started; best effort (0 on any failure)."""
    if len(hint) < 2:
        return 0
    try:
        jobs = _hinted(hint[0], tuple(hint[1:]))[2]
        if not any(task.startswith("logs.") for task, _o, _t in jobs):
            return 0
        from upkeeper.logs import ahead

        return ahead.start(jobs)
    except Exception:
        return 0


def preload(hint: Sequence[str]) -> None:
    """Before ``upkeeper run`` forks its worker (``hint``: ``[config, job…]``): import what both processes
    need, so that it is imported once, not in each — the named jobs' task modules (the CLI validates their
    options, the worker runs them) and the SQLAlchemy dialect and driver of the history database (both open
    it).  Best effort: a failure is left for the CLI to report where it comes up again."""
    import importlib

    if len(hint) < 2:
        return
    modules, history, _jobs = _hinted(hint[0], tuple(hint[1:]))
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:
            pass
    if history is None:
        return
    try:
        from sqlalchemy.engine import make_url

        from upkeeper.core.history import history_url

        # (any SQLite URL will do: the default file's path needs platformdirs, which only the CLI imports)
        url = history_url(history) if history.startswith(("postgres", "sqlite:")) else "sqlite://"
        make_url(url).get_dialect().import_dbapi()
    except Exception:
        pass


def _resume_gc() -> None:
    """Turn the garbage collector back on, the modules imported so far moved out of its sight (they
    live as long as the worker)."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def main(argv: list[str]) -> int:
    # No cyclic garbage collection while the worker starts: its imports create some 80,000 long-lived
    # objects and no garbage, yet trip ~200 collections (5-10% of its start-up).
    gc.disable()
    from multiprocessing.connection import Connection

    fd = int(argv[1])
    parent = int(argv[2]) if len(argv) > 2 else os.getppid()
    conn = Connection(fd)
    if os.getppid() != parent:
        return 1
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="parent-watch").start()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    # The pool SIGTERMs the group on a timeout and SIGKILLs it after a grace: unwind the task in that
    # grace, so its cleanup runs (a verify's scratch database is dropped, temp files go).
    signal.signal(signal.SIGTERM, _on_term)

    # Task modules are imported on demand when a request is unpickled (pickle imports the
    # task class's module), so a worker only pays for the task families it actually runs.
    from upkeeper.core.execute import execute_request
    from upkeeper.core.execute import register_secrets_once as register_secrets

    send_lock = threading.Lock()

    def send(msg: tuple[Any, ...]) -> None:
        with send_lock:
            conn.send(msg)

    send(("ready", os.getpid()))
    # Warm up while the parent is still loading its config: every run opens the history database
    # (task state, metric series), so import SQLAlchemy and the models now, not after the first request.
    import upkeeper.core.history  # noqa: F401

    if len(argv) > 4:  # started by 'upkeeper run JOB…': those jobs' task modules (and psycopg…) too
        head_start(argv[3], argv[4:])
        warm(hinted_modules(argv[3], argv[4:]), None, stop=lambda: conn.poll(0))
    _resume_gc()

    try:
        return _serve(conn, send, parent, execute_request, register_secrets)
    finally:
        if _dying.is_set():
            _die()  # the parent is gone and the watch kills the group: exiting now would cut its grace short


def _serve(conn: Connection, send: Any, parent: int, execute_request: Any, register_secrets: Any) -> int:
    import pickle

    from upkeeper.core.execute import WorkRequest

    jobs: dict[str, Any] = {}  # the jobs of that config, each sent with its first run here
    configs: dict[int, Any] = {}  # the pool sends each config once per worker, then refers to it by token
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return 0
        if msg[0] == "exit":
            # Nothing is left to clean up between runs (each task closes what it opened), and the
            # parent waits for us: skip the interpreter's teardown of every imported module (~0.1 s).
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        if msg[0] == "config":
            configs.clear()
            jobs.clear()
            configs[msg[1]] = msg[2]
            register_secrets(msg[2])  # now, not during the first run (a walk of a 10k-job config: ~1 s)
        elif msg[0] == "warm":
            warm(msg[1], msg[2], stop=lambda: conn.poll(0))
        elif msg[0] == "run":
            req: WorkRequest = msg[1]
            if len(msg) > 2 and msg[2] is not None:
                req.config = configs.get(msg[2])
            if len(msg) > 4 and msg[4] is not None:
                jobs[msg[3]] = pickle.loads(msg[4])  # first run of this job here: it comes pickled
            if len(msg) > 3 and msg[3] is not None:
                req.job = jobs[msg[3]]
            staged: dict[str, Any] = {}  # recorded by the parent with the result, in one transaction
            result = execute_request(req, send, before_state_set=lambda: _exit_if_orphaned(parent),
                                     staged_state=staged)
            send(("result", result.to_dict(), staged))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
