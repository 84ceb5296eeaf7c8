"""Human-readable formatting shared by tasks and the CLI."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta


def human_bytes(n: float) -> str:
    """1536 → '1.5 KiB'."""
    sign = "-" if n < 0 else ""
    n = abs(float(n))
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{sign}{n:.0f} {unit}" if unit == "B" else f"{sign}{n:.1f} {unit}"
        n /= 1024
    return f"{sign}{n:.1f} PiB"


def human_duration(seconds: float | timedelta | None) -> str:
    """3725 → '1h 2m'; 4.2 → '4.2s'; a whole unit without its zero remainder: 86400 × 365 → '365d' (not
    '365d 0h'), 7200 → '2h', 60 → '1m'."""
    if seconds is None:
        return "-"
    if isinstance(seconds, timedelta):
        seconds = seconds.total_seconds()
    if seconds < 0:
        return "-" + human_duration(-seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(round(seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d {h}h" if h else f"{d}d"
    if h:
        return f"{h}h {m}m" if m else f"{h}h"
    if m:
        return f"{m}m {s}s" if s else f"{m}m"
    return f"{s}s"


def ago(ts: datetime | None, now: datetime | None = None) -> str:
    if ts is None:
        return "never"
    now = now or datetime.now(UTC)
    delta = (now - ts).total_seconds()
    if delta < 0:
        return "in " + human_duration(-delta)
    return human_duration(delta) + " ago"


def local_time(ts: datetime | None, tz: str = "UTC", fmt: str = "%Y-%m-%d %H:%M %Z") -> str:
    if ts is None:
        return "-"
    from zoneinfo import ZoneInfo

    return ts.astimezone(ZoneInfo(tz)).strftime(fmt)


#: the Unicode bidirectional controls (embeddings, overrides, isolates, marks): invisible, they reorder the
#: text around them, so a request path or file name can show something other than what it is ("Trojan
#: Source", CVE-2021-42574): shown escaped like the control characters
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
#: C0 and C1 control characters (ESC, BEL, NUL, CR, newline …) and the bidi controls: shown escaped, never sent
#: to a terminal
_CONTROL = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}]")


def printable(text: str) -> str:
    """``text`` with its control characters written as nginx escapes them (``\\x1B``): a log line, path or
    user agent shown on a terminal cannot move the cursor, recolour, retitle or clear it (a client can
    send ``GET /%1B[2J``, which is percent-decoded to ESC), and a sample stays on one line."""
    return _CONTROL.sub(_hex, text)


#: the control characters of :data:`_CONTROL` but newline and tab, which lay text out and move nothing else
_CONTROL_INLINE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}]")


def printable_lines(text: str) -> str:
    """:func:`printable` that keeps newlines and tabs: for text that may span lines (a message body, what
    the CLI prints), where a log line quoted in it still cannot send an escape sequence."""
    return _CONTROL_INLINE.sub(_hex, text)


def _hex(m: re.Match[str]) -> str:
    c = ord(m[0])
    return f"\\x{c:02X}" if c < 0x100 else f"\\u{c:04X}"
