"""Starting a worker process — standard library only, so the CLI can do it before its own imports.

``upkeeper run`` spends most of its fixed cost importing pydantic and SQLAlchemy, in
the CLI process and again in the worker that runs the task.  Started first thing
(:func:`start_early`), the worker does its imports on the second core while the CLI
does its own; :class:`~upkeeper.core.executor.WorkerPool` then adopts it
(:func:`take_early`) instead of starting a new one.  The CLI also names the config file and
the jobs on the worker's command line, so the worker imports their task modules (and the
client libraries those load lazily: psycopg, zstandard, pyrage…) right after its own imports,
instead of when the CLI, its config validated, sends ``warm`` (~0.1 s later, on the run's path).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence

_early: list[tuple[subprocess.Popen[bytes], socket.socket]] = []


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


def start_early(hint: Sequence[str] = ()) -> None:
    """Start one worker now, for the pool to adopt later.  Never raises: the pool starts its own."""
    if _early:
        return
    try:
        _early.append(spawn_worker(hint))
    except Exception:
        pass


def take_early() -> tuple[subprocess.Popen[bytes], socket.socket] | None:
    """The worker :func:`start_early` started, if it is still there (each is taken once)."""
    while _early:
        popen, sock = _early.pop()
        if popen.poll() is None:
            return popen, sock
        sock.close()
        if popen.stdout is not None:
            popen.stdout.close()
    return None
