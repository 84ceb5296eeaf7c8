"""Starting a worker process — standard library only, so the CLI can do it before its own imports.

``upkeeper run`` spends most of its fixed cost importing pydantic and SQLAlchemy, in
the CLI process and again in the worker that runs the task.  Started first thing
(:func:`start_early`), the worker does its imports on the second core while the CLI
does its own; :class:`~upkeeper.core.executor.WorkerPool` then adopts it
(:func:`take_early`) instead of starting a new one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

_early: list[tuple[subprocess.Popen[bytes], socket.socket]] = []


def spawn_worker() -> tuple[subprocess.Popen[bytes], socket.socket]:
    """A new worker process in its own session, and our end of its socket."""
    parent_sock, child_sock = socket.socketpair()
    child_fd = child_sock.fileno()
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        popen = subprocess.Popen(
            [sys.executable, "-m", "upkeeper.core.worker", str(child_fd), str(os.getpid())],
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


def start_early() -> None:
    """Start one worker now, for the pool to adopt later.  Never raises: the pool starts its own."""
    if _early:
        return
    try:
        _early.append(spawn_worker())
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
