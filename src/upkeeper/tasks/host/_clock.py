"""Is the clock synchronised?  Asks, in order: timedatectl, chronyc, ntpq, then the kernel (adjtimex).

The kernel's NTP state (``adjtimex``: ``STA_UNSYNC``, the ``TIME_ERROR`` clock
state, the estimated error) is what Netdata's timex collector reads; it needs
no daemon tool and no privilege.  When nothing answers, the status is unknown —
said so, never guessed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass

from upkeeper.core import proc
from upkeeper.errors import ProcessError

TIMEDATECTL = ("timedatectl", "show", "-p", "NTPSynchronized", "--value")
CHRONYC_TRACKING = ("chronyc", "-n", "tracking")
NTPQ_RV = ("ntpq", "-c", "rv 0 sync_ntp,offset,leap", "-n")
TIMEOUT_S = 5

STA_UNSYNC = 0x0040
STA_NANO = 0x2000
TIME_ERROR = 5


@dataclass(frozen=True)
class ClockStatus:
    synchronized: bool | None  # None: unknown
    offset_s: float | None
    source: str
    detail: str


def _run(argv: tuple[str, ...]) -> tuple[int, str, str] | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        r = proc.run(list(argv), timeout=TIMEOUT_S, check=False)
    except ProcessError:
        return None
    return r.returncode, r.text, r.stderr


def from_timedatectl() -> ClockStatus | None:
    r = _run(TIMEDATECTL)
    if r is None or r[0] != 0:
        return None  # also when systemd is not PID 1 ("System has not been booted with systemd")
    value = r[1].strip()
    if value not in ("yes", "no"):
        return None
    return ClockStatus(value == "yes", None, "timedatectl", f"NTPSynchronized={value}")


CHRONY_OFFSET = re.compile(r"^System time\s*:\s*([\d.]+) seconds (fast|slow)", re.MULTILINE)
CHRONY_LEAP = re.compile(r"^Leap status\s*:\s*(.+)$", re.MULTILINE)


def parse_chronyc(text: str) -> ClockStatus | None:
    leap = CHRONY_LEAP.search(text)
    if leap is None:
        return None
    status = leap.group(1).strip()
    offset = None
    m = CHRONY_OFFSET.search(text)
    if m:
        offset = float(m.group(1)) * (1 if m.group(2) == "fast" else -1)
    return ClockStatus(status != "Not synchronised", offset, "chronyc", f"leap status {status}")


def from_chronyc() -> ClockStatus | None:
    r = _run(CHRONYC_TRACKING)
    if r is None or r[0] != 0:
        return None
    return parse_chronyc(r[1])


def parse_ntpq(text: str) -> ClockStatus | None:
    fields = dict(re.findall(r"(\w+)=([^,\s]+)", text))
    if "leap" not in fields and "sync_ntp" not in fields:
        return None
    leap = fields.get("leap", "")
    offset = float(fields["offset"]) / 1000 if "offset" in fields else None  # ntpq reports milliseconds
    synced = leap not in ("11", "alarm") and "sync_unspec" not in text
    return ClockStatus(synced, offset, "ntpq", f"leap={leap or '?'}")


def from_ntpq() -> ClockStatus | None:
    r = _run(NTPQ_RV)
    if r is None or r[0] != 0:
        return None
    return parse_ntpq(r[1])


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """``struct timex`` from <sys/timex.h> (Linux)."""

    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long), ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long), ("status", ctypes.c_int), ("constant", ctypes.c_long),
        ("precision", ctypes.c_long), ("tolerance", ctypes.c_long), ("time", _Timeval), ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int), ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long), ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int), ("_reserved", ctypes.c_int * 11),
    ]  # fmt: skip


def from_kernel() -> ClockStatus | None:
    """Read-only adjtimex (modes = 0): needs no privilege."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        tx = _Timex()
        state = int(libc.adjtimex(ctypes.byref(tx)))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    unsync = bool(tx.status & STA_UNSYNC) or state == TIME_ERROR
    scale = 1e-9 if tx.status & STA_NANO else 1e-6
    offset = None if unsync else tx.offset * scale
    detail = ("kernel reports STA_UNSYNC: no NTP daemon is disciplining the clock" if unsync
              else f"kernel estimated error {tx.esterror / 1000:.1f} ms")
    return ClockStatus(not unsync, offset, "kernel adjtimex", detail)


SOURCES: tuple[Callable[[], ClockStatus | None], ...] = (from_timedatectl, from_chronyc, from_ntpq, from_kernel)


def clock_status() -> ClockStatus:
    tried = []
    for src in SOURCES:
        st = src()
        if st is not None:
            return st
        tried.append(src.__name__.removeprefix("from_"))
    return ClockStatus(None, None, "none", "no time-sync tool answered (tried " + ", ".join(tried) + ")")
