"""An iCalendar (RFC 5545) feed of maintenance windows and blackouts, for calendar subscriptions.

Each period is one VEVENT in UTC with a stable UID (window name + start), so a
subscribed calendar updates in place when the config changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from icalendar import Calendar as ICalendar
from icalendar import Event as IEvent

from upkeeper import __version__


def feed(items: Sequence[tuple[str, str, datetime, datetime, str, str]], now: datetime, node: str) -> bytes:
    """``items``: (kind, name, start, end, summary, description) with kind ``window`` or ``blackout``."""
    cal = ICalendar()
    cal.add("prodid", f"-//upkeeper//upkeeper {__version__}//EN")
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("x-wr-calname", f"upkeeper maintenance ({node})")
    for kind, name, start, end, summary, description in items:
        ev = IEvent()
        ev.add("uid", f"{kind}-{name}-{start.strftime('%Y%m%dT%H%M%SZ')}@{node}.upkeeper")
        ev.add("dtstamp", now)
        ev.add("dtstart", start)
        ev.add("dtend", end)
        ev.add("summary", summary)
        ev.add("description", description)
        ev.add("categories", ["maintenance" if kind == "window" else "blackout"])
        ev.add("transp", "OPAQUE" if kind == "window" else "TRANSPARENT")
        cal.add_component(ev)
    return bytes(cal.to_ical())
