"""Pid files: what one holds, and whether the process with that pid can be the one that wrote it.

A daemon writes its pid file *after* it starts, so a process that started clearly after the file's last
change cannot have written it: its daemon died, the file stayed, and the kernel gave the pid to another
process since.  "Clearly": :data:`MARGIN_S` (2 s) later, for filesystems that keep coarse timestamps (FAT
keeps 2 s) and the clock's own small corrections.  A daemon that rewrites its file later (a reload) has a file
newer than itself: fine.

The process's start is kept by the kernel in clock ticks since boot; it is put on the wall clock with the boot
time as the clock says it *now* (wall clock minus ``CLOCK_BOOTTIME``), while the file's mtime is the wall clock
of when it was written.  So a clock stepped *forward* after the daemon wrote its file (a machine that booted
without a real-time clock and was set by NTP later) makes the daemon look started after its file by that step:
it is then reported as left over, and the finding says so and how to tell (``touch`` the pid file if the
process named is the daemon).  A step backwards only hides a left-over file, never invents one.  The same false
"left over" comes of a pid file on a network filesystem whose server's clock lags this host's by more than the
margin (its mtime is the server's clock): pid files belong on the host's own /run.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from upkeeper.fmt import human_duration

#: how much later than its pid file's last change a process may appear to have started and still be its writer
MARGIN_S = 2.0
#: the most a pid file holds (a pid and a newline; a few daemons add a line): more is not a pid file
MAX_BYTES = 4096
#: the highest pid Linux hands out (PID_MAX_LIMIT on 64-bit)
PID_MAX = 4_194_304
#: /proc/PID/stat's flags bit of a kernel thread
PF_KTHREAD = 0x00200000


def read_pid_file(path: str) -> tuple[int | None, str]:
    """The pid in the file, or None and why not (an unreadable or empty pid file is not the same as a stopped
    process).  Never blocks (a FIFO in its place) and never reads more than :data:`MAX_BYTES`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        try:
            mode = os.fstat(fd).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # (a directory: said by the read's error)
                return None, f"pid file {path} is not a regular file"
            raw = os.read(fd, MAX_BYTES + 1)
        finally:
            os.close(fd)
    except FileNotFoundError:
        return None, f"pid file {path} does not exist"
    except OSError as exc:
        return None, f"pid file {path} cannot be read: {exc.strerror or exc}"
    if len(raw) > MAX_BYTES:
        return None, f"pid file {path} holds over {MAX_BYTES} bytes: not a pid file"
    text = raw.decode("utf-8", "replace").strip()
    if not text:
        return None, (f"pid file {path} is empty (being written by a daemon that is starting, or left by one "
                      f"that failed before writing its pid)")
    if not (text.isascii() and text.isdigit()):
        return None, f"pid file {path} holds {text[:40]!r}, not a pid"
    pid = int(text)
    if not 1 <= pid <= PID_MAX:
        return None, f"pid file {path} holds {text[:40]!r}, not a pid (1 to {PID_MAX})"
    return pid, ""


def stat_fields(pid: int) -> list[bytes] | None:
    """``/proc/PID/stat`` from field 3 (the state) on; None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2:].split()  # the name (field 2) may hold blanks and parentheses
    return fields if len(fields) >= 20 else None


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (``/proc/PID/stat``'s 22nd field): unlike psutil's
    ``create_time`` (boot time on the wall clock plus these ticks), no clock step moves it."""
    fields = stat_fields(pid)
    try:
        return int(fields[19]) if fields else None
    except ValueError:
        return None


def is_kernel_thread(pid: int) -> bool:
    fields = stat_fields(pid)
    try:
        return bool(fields and int(fields[6]) & PF_KTHREAD)
    except ValueError:
        return False


def boot_time() -> float:
    """When this boot began, on the wall clock as it reads now."""
    return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


def started_at(pid: int) -> float | None:
    """When ``pid`` started, on the wall clock as it reads now (None: no such process)."""
    ticks = start_ticks(pid)
    return None if ticks is None else boot_time() + ticks / os.sysconf("SC_CLK_TCK")


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", "rb") as fh:
            return fh.read().decode("utf-8", "replace").strip() or "?"
    except OSError:
        return "?"


@dataclass(frozen=True)
class Stranger:
    """The process holding a pid file's pid that cannot be the one that wrote the file, and why."""

    pid: int
    name: str
    why: str  # "started 3 h after the pid file was last written (…)", "a kernel thread"

    def describe(self, path: str) -> str:
        return (f"pid file {path} is left over: pid {self.pid} now belongs to another process ({self.name!r}, "
                f"{self.why}): the process that wrote it is gone")


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def stranger(path: str, pid: int, mtime: float) -> Stranger | None:
    """The process holding ``pid`` when it cannot have written the pid file at ``path`` last changed at
    ``mtime``: a kernel thread, or a process that started more than :data:`MARGIN_S` after that (see the module
    doc: a clock stepped forward since makes the daemon itself look so).  None when it may be the writer, or
    there is no such process."""
    if is_kernel_thread(pid):
        return Stranger(pid, comm(pid), "a kernel thread")
    start = started_at(pid)
    if start is None or start <= mtime + MARGIN_S:
        return None
    return Stranger(pid, comm(pid),
                    f"started {human_duration(start - mtime)} after the pid file was last written: "
                    f"{_utc(start)}, the file {_utc(mtime)}; if it is the daemon, the clock was stepped forward "
                    f"since it wrote the file: touch the file")
