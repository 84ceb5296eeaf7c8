"""Starting a worker process — standard library only.

A worker is normally a new interpreter (:func:`spawn_worker`: ``python -m upkeeper.core.worker``),
which imports pydantic and SQLAlchemy before its first run.  ``upkeeper run`` has imported them
already: it forks its worker once its command is loaded (:func:`fork_early`), so the worker starts
with them instead of importing them a second time (that was ~40% of a short run's CPU time, and on
a busy machine the two processes' imports competed for the cores).
:class:`~upkeeper.core.executor.WorkerPool` then adopts it (:func:`take_early`) instead of starting
a new one.  The CLI also names the config file and the jobs, so the worker imports their task modules
(and the client libraries those load lazily: psycopg, zstandard, pyrage…) while the CLI loads the
config and claims the runs, instead of when the CLI sends ``warm``.
"""

from __future__ import annotations

import math
import os
import select
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import IO

_early: list[tuple[subprocess.Popen[bytes] | ForkedWorker, socket.socket]] = []


def spawn_worker(hint: Sequence[str] = ()) -> tuple[subprocess.Popen[bytes], socket.socket]:
    """A new worker process in its own session, and our end of its socket.

    ``hint``: ``[config, job…]`` of the runs to come; the worker imports those jobs' task modules
    (see :func:`upkeeper.core.worker.hinted_modules`) before it is asked to."""
    parent_sock, child_sock = socket.socketpair()
    child_fd = child_sock.fileno()
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        popen = subprocess.Popen(
            [sys.executable, "-m", "upkeeper.core.worker", str(child_fd), str(os.getpid()), *hint],
            pass_fds=(child_fd,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killpg(pid) takes every child along
            env=env,
        )
    except BaseException:
        parent_sock.close()
        raise
    finally:
        child_sock.close()
    return popen, parent_sock


class ForkedWorker:
    """What the pool uses of a :class:`subprocess.Popen`, for a worker forked from this process."""

    def __init__(self, pid: int, stdout: IO[bytes]) -> None:
        self.pid = pid
        self.stdout: IO[bytes] | None = stdout
        self.returncode: int | None = None
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        with self._lock:
            if self.returncode is None:
                try:
                    pid, status = os.waitpid(self.pid, os.WNOHANG)
                except ChildProcessError:  # reaped elsewhere (nothing here does): its status is lost
                    pid, status = self.pid, 255 << 8
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        rc = self.poll()
        if rc is not None:
            return rc
        try:  # Linux: a pidfd turns readable the moment the worker ends (no polling delay at every exit)
            pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # not Linux (or < 5.3); or reaped meanwhile: poll() tells
            pidfd = None
        if pidfd is not None:
            try:
                ended = select.poll()
                ended.register(pidfd, select.POLLIN)
                while (rc := self.poll()) is None:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise subprocess.TimeoutExpired(["upkeeper worker"], timeout or 0.0)
                    ended.poll(None if left is None else max(1, math.ceil(left * 1000)))
            finally:
                os.close(pidfd)
            return rc
        delay = 0.0005
        while (rc := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(["upkeeper worker"], timeout or 0.0)
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        return rc


def fork_worker(hint: Sequence[str] = (), *, keep_fds: Sequence[int] = (),
                in_child: Callable[[], None] | None = None) -> tuple[ForkedWorker, socket.socket]:
    """A worker forked from this process, in its own session, and our end of its socket.

    For ``upkeeper run``, once the CLI has imported what the worker needs too (pydantic, SQLAlchemy, the
    config models): the worker starts with them instead of importing them a second time.  Call it
    before any thread is started (a fork copies only the calling thread)."""
    parent_sock, child_sock = socket.socketpair()
    read_fd, write_fd = os.pipe()
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the worker: never returns into the caller's code
        code = 1
        try:
            os.setsid()  # its own process group: killpg(pid) takes every child along
            parent_sock.close()
            os.close(read_fd)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
            os.dup2(write_fd, 1)
            os.dup2(write_fd, 2)
            os.close(write_fd)
            # nothing else of this process's files (as close_fds=True does), but for ``keep_fds``: those of the scan
            # helpers started ahead, which this worker takes over (``in_child``, see upkeeper.logs.ahead)
            low = 3
            for keep in sorted({child_sock.fileno(), *(fd for fd in keep_fds if fd > 2)}):
                os.closerange(low, keep)
                low = keep + 1
            os.closerange(low, os.sysconf("SC_OPEN_MAX"))
            if in_child is not None:
                try:
                    in_child()
                except Exception:  # best effort: the scan starts its own helpers
                    pass
            from upkeeper.core.worker import main

            code = main(["worker", str(child_sock.fileno()), str(parent), *hint])
        except SystemExit as exc:  # the pool's SIGTERM (a timeout, Ctrl-C): exit as the interpreter would, quietly
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        except BaseException:
            try:
                traceback.print_exc()
            except BaseException:
                pass
        finally:
            for stream in (sys.stdout, sys.stderr):  # what the task printed last (os._exit flushes nothing)
                try:
                    stream.flush()
                except BaseException:
                    pass
            os._exit(code)
    child_sock.close()
    os.close(write_fd)
    return ForkedWorker(pid, os.fdopen(read_fd, "rb")), parent_sock


def fork_early(hint: Sequence[str] = (), *, keep_fds: Sequence[int] = (),
               in_child: Callable[[], None] | None = None) -> bool:
    """Fork one worker now, for the pool to adopt later; a new interpreter instead when this process
    runs other threads (a fork would copy their locks, held or not, without the threads).
    Never raises: the pool starts its own.  True when a worker was forked (``keep_fds`` stay open in it, and
    ``in_child`` runs there first: see :func:`fork_worker`)."""
    if _early:
        return False
    try:
        if threading.active_count() == 1:
            _early.append(fork_worker(hint, keep_fds=keep_fds, in_child=in_child))
            return True
        _early.append(spawn_worker(hint))
    except Exception:
        pass
    return False


def start_early(hint: Sequence[str] = ()) -> None:
    """Start one worker now, for the pool to adopt later.  Never raises: the pool starts its own."""
    if _early:
        return
    try:
        _early.append(spawn_worker(hint))
    except Exception:
        pass


def take_early() -> tuple[subprocess.Popen[bytes] | ForkedWorker, socket.socket] | None:
    """The worker :func:`start_early` started, if it is still there (each is taken once)."""
    while _early:
        popen, sock = _early.pop()
        if popen.poll() is None:
            return popen, sock
        sock.close()
        if popen.stdout is not None:
            popen.stdout.close()
    return None
