"""A process a forked child takes over from the parent that started it — light (stdlib and core.pidfile).

``upkeeper run`` starts a log job's scan helpers before it imports what it needs (SQLAlchemy, pydantic, the
config models: ~0.4 s on one core, with the other idle), then forks its worker, which drives them: the helpers
import pyarrow and their parsers meanwhile, on the idle core (see :mod:`upkeeper.logs.ahead`).  Such a helper is
the CLI's child, not the worker's: the worker cannot ``waitpid`` it (``subprocess.Popen.poll`` would then say it
ended with code 0 at once), so :class:`Adopted` follows it through a pidfd, and reads its exit status from
``/proc/PID/stat`` once it has ended (a zombie until the CLI, which never reaps it before it exits, ends).
Its stderr goes to an unlinked file (:class:`StderrFile`) rather than a pipe: the CLI may start no thread
before it forks (a fork copies only the calling thread), so no thread could drain a pipe.

Linux only (pidfds: 5.3): :func:`supported` says whether this machine has what it takes.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
from typing import IO

from upkeeper.core.pidfile import stat_fields

#: what :meth:`StderrFile.text` returns at most, from the end
TAIL = 64 * 1024


def supported() -> bool:
    """pidfds and a readable ``/proc/PID/stat`` here (Linux 5.3 and later, /proc mounted)."""
    if not hasattr(os, "pidfd_open"):
        return False
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError:
        return False
    os.close(fd)
    return stat_fields(os.getpid()) is not None


def exit_status(pid: int) -> int | None:
    """The return code (as :attr:`subprocess.Popen.returncode`: negative for a signal) of ``pid`` if it has
    ended and is not yet reaped (a zombie: field 52 of ``/proc/PID/stat``, Linux 3.5+); None otherwise."""
    fields = stat_fields(pid)
    if fields is None or fields[0] not in (b"Z", b"X") or len(fields) < 50:
        return None
    try:
        return os.waitstatus_to_exitcode(int(fields[49]))
    except ValueError:
        return None


#: the return code of a process that ended with no status to be read (reaped by its parent meanwhile)
UNKNOWN_EXIT = 255


class Adopted:
    """What the code driving a helper uses of a :class:`subprocess.Popen`, for a process the parent of this one
    started: its pipes (inherited through the fork) and a pidfd to follow it.  Make it in the forked child."""

    stderr: IO[bytes] | None = None

    def __init__(self, pid: int, stdin: IO[bytes] | None, stdout: IO[bytes] | None) -> None:
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.returncode: int | None = None
        self._pidfd = os.pidfd_open(pid)

    def _ended(self, timeout: float | None) -> bool:
        p = select.poll()
        p.register(self._pidfd, select.POLLIN)
        return bool(p.poll(None if timeout is None else max(0, int(timeout * 1000 + 0.999))))

    def poll(self) -> int | None:
        if self.returncode is None and self._ended(0):
            status = exit_status(self.pid)
            self.returncode = UNKNOWN_EXIT if status is None else status
            os.close(self._pidfd)
            self._pidfd = -1
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None and not self._ended(timeout):
            raise subprocess.TimeoutExpired([str(self.pid)], timeout or 0.0)
        rc = self.poll()
        assert rc is not None
        return rc

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                signal.pidfd_send_signal(self._pidfd, sig)
            except ProcessLookupError:  # it has just ended
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def __del__(self) -> None:
        if getattr(self, "_pidfd", -1) >= 0:
            os.close(self._pidfd)


class StderrFile:
    """A process's stderr in an unlinked file: its tail read back when needed (as a collector thread's buffer)."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh

    @property
    def text(self) -> str:
        from upkeeper.redact import redact

        try:
            size = os.fstat(self.fh.fileno()).st_size
            raw = os.pread(self.fh.fileno(), TAIL, max(0, size - TAIL))
        except (OSError, ValueError):
            return ""
        return redact(raw.decode("utf-8", errors="replace"))

    def join(self, timeout: float | None = None) -> None:
        """(Nothing to wait for: the file holds all the process wrote.)"""

    def close(self) -> None:
        self.fh.close()
