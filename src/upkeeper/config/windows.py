"""The ``windows`` and ``blackouts`` sections: when maintenance may, and may not, happen.

A *period spec* is either one-off (``start``/``end`` date-times) or recurring
(an RFC 5545 ``rrule`` — or the ``days`` + ``hours`` shorthand — with a
time-of-day ``start`` and an ``end`` time or a ``duration``), each in its own
timezone.  The time arithmetic (DST included) is in :mod:`upkeeper.notify.calendar`.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from upkeeper.config.types import Duration, Name, StrictModel

Category = Literal["maintenance", "backup", "monitoring", "security", "critical"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
RRULE_DAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
DEFAULT_ANCHOR = date(2000, 1, 3)  # a Monday: anchors INTERVAL>1 rules and rules without BY… parts

_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_HOURS = re.compile(r"^\s*(\S+)\s*-\s*(\S+)\s*$")


def _text(value: Any) -> Any:
    """YAML may hand us dates and datetimes; keep everything as text and parse it ourselves."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, int) and not isinstance(value, bool):  # YAML 1.1 sexagesimal 02:00 → 120
        return f"{value // 60:02d}:{value % 60:02d}"
    return value


When = Annotated[str, BeforeValidator(_text)]


def parse_time_of_day(text: str) -> time:
    m = _TIME.match(text.strip())
    if not m:
        raise ValueError(f"invalid time of day {text!r}: use HH:MM, like '02:00' or '18:30'")
    return time(int(m.group(1)), int(m.group(2)))


def parse_local_datetime(text: str, *, end: bool = False) -> datetime:
    """``2025-12-20 22:00`` / ``2025-12-20T22:00`` → naive local datetime.

    A date alone means the start of that day, or — for an ``end`` — the end of it
    (so ``end: 2026-01-04`` includes the 4th).
    """
    s = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", s):
            d = date.fromisoformat(s)
            base = datetime(d.year, d.month, d.day)
            return base + timedelta(days=1) if end else base
        dt = datetime.fromisoformat(s.replace(" ", "T", 1))
    except ValueError:
        raise ValueError(
            f"invalid date/time {text!r}: use 'YYYY-MM-DD HH:MM' (local to the timezone) or 'YYYY-MM-DD'"
        ) from None
    if dt.tzinfo is not None:
        raise ValueError(f"{text!r}: give a local time without an offset; set 'timezone' instead")
    return dt


_UNTIL_UTC = re.compile(r"(UNTIL=)(\d{8}T\d{6})Z", re.IGNORECASE)


def localize_until(body: str, tz: tzinfo) -> str:
    """An RRULE with a UTC ``UNTIL`` (``…Z``, what RFC 5545 § 3.3.10 asks for when the start has a time zone, as a
    window's has) with that instant as local wall time in ``tz`` instead: the recurrence runs on the window's
    local times (a floating DTSTART), which dateutil refuses to combine with a UTC UNTIL."""

    def local(m: re.Match[str]) -> str:
        at = datetime.strptime(m.group(2), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
        return m.group(1) + at.astimezone(tz).strftime("%Y%m%dT%H%M%S")

    return _UNTIL_UTC.sub(local, body)


def parse_rrule_text(text: str) -> str:
    """Validate an RRULE (``FREQ=MONTHLY;BYDAY=1SU``); returns it without an ``RRULE:`` prefix."""
    from dateutil.rrule import rrulestr

    body = text.strip()
    if body.upper().startswith("RRULE:"):
        body = body[6:]
    if "DTSTART" in body.upper() or "\n" in body:
        raise ValueError("give only the RRULE part (FREQ=…;BY…); the start time goes in 'start'")
    freq = re.search(r"FREQ=([A-Z]+)", body.upper())
    if freq is None:
        raise ValueError(f"invalid rrule {text!r}: it needs FREQ=, e.g. 'FREQ=MONTHLY;BYDAY=1SU'")
    if freq.group(1) in ("SECONDLY", "MINUTELY"):
        raise ValueError("windows recur at most hourly: use FREQ=HOURLY, DAILY, WEEKLY, MONTHLY or YEARLY")
    try:
        rrulestr(localize_until(body, UTC), dtstart=datetime(2000, 1, 3))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"invalid rrule {text!r}: {exc}") from None
    return body


class PeriodSpec(StrictModel):
    """When a window or blackout applies."""

    description: str | None = Field(None, description="free text for people. Source: upkeeper (not set by default)")
    timezone: str | None = Field(None, description="IANA timezone of start/end (default: the config's). "
            "Source: upkeeper (not set by default)")
    rrule: str | None = Field(
        None, description="recurrence as an RFC 5545 RRULE, e.g. 'FREQ=MONTHLY;BYDAY=1SU' (first Sunday). "
                "Source: upkeeper (not set by default)"
    )
    days: list[Weekday] | None = Field(None, description="shorthand recurrence: these weekdays (with 'hours'). "
            "Source: upkeeper (not set by default)")
    hours: str | None = Field(None, description="with 'days': local hours like '09:00-18:00' ('22:00-06:00' "
                                                "runs past midnight). Source: upkeeper (not set by default)")
    start: When | None = Field(
        None, description="recurring: local time of day ('02:00'); one-off: local date-time ('2025-12-20 22:00') "
        "or date. Source: upkeeper (not set by default)",
    )
    end: When | None = Field(
        None, description="recurring: local time of day (wall clock); one-off: local date-time, or a date "
        "(inclusive). Source: upkeeper (not set by default)",
    )
    duration: Duration | None = Field(None, description="instead of 'end': how long each period lasts (real time). "
            "Source: upkeeper (not set by default)")
    since: date | None = Field(None, description="first day the recurrence may start (default 2000-01-03). "
            "Source: upkeeper (not set by default)")

    @property
    def recurring(self) -> bool:
        return self.rrule is not None or self.days is not None

    @model_validator(mode="after")
    def _check_shape(self) -> PeriodSpec:
        if self.timezone is not None:
            from upkeeper.core.schedule import ScheduleError, validate_timezone

            try:
                validate_timezone(self.timezone)
            except ScheduleError as exc:
                raise ValueError(f"{exc.args[0]}" + (f" ({exc.hint})" if exc.hint else "")) from None
        if self.rrule is not None and self.days is not None:
            raise ValueError("give either 'rrule' or 'days', not both")
        if self.days is not None:
            if not self.days:
                raise ValueError("'days' needs at least one weekday")
            if self.hours is None:
                raise ValueError("'days' needs 'hours', like '09:00-18:00'")
            if self.start is not None or self.end is not None or self.duration is not None:
                raise ValueError("with 'days' + 'hours', leave out start/end/duration")
            self._hours()
            return self
        if self.hours is not None:
            raise ValueError("'hours' goes with 'days'")
        if self.start is None:
            raise ValueError("'start' is required (a time of day with 'rrule', else a date-time)")
        if self.end is not None and self.duration is not None:
            raise ValueError("give either 'end' or 'duration', not both")
        if self.end is None and self.duration is None:
            raise ValueError("give 'end' or 'duration'")
        if self.duration is not None and self.duration <= timedelta(0):
            raise ValueError("'duration' must be positive")
        if self.rrule is not None:
            self.rrule = parse_rrule_text(self.rrule)
            parse_time_of_day(self.start)
            if self.end is not None:
                parse_time_of_day(self.end)
        else:
            s = parse_local_datetime(self.start)
            if self.end is not None and parse_local_datetime(self.end, end=True) <= s:
                raise ValueError("'end' must be after 'start'")
        return self

    def _hours(self) -> tuple[time, time]:
        m = _HOURS.match(self.hours or "")
        if not m:
            raise ValueError(f"invalid hours {self.hours!r}: use 'HH:MM-HH:MM', like '09:00-18:00'")
        a, b = parse_time_of_day(m.group(1)), parse_time_of_day(m.group(2))
        if a == b:
            raise ValueError("'hours' must not start and end at the same time")
        return a, b

    # -- normalized view for the calendar ----------------------------------------------------

    def rule_text(self) -> str | None:
        if self.days is not None:
            return "FREQ=WEEKLY;BYDAY=" + ",".join(RRULE_DAYS[WEEKDAYS.index(d)] for d in self.days)
        return self.rrule

    def start_time(self) -> time:
        if self.days is not None:
            return self._hours()[0]
        assert self.start is not None
        return parse_time_of_day(self.start)

    def end_time(self) -> time | None:
        if self.days is not None:
            return self._hours()[1]
        return parse_time_of_day(self.end) if self.end is not None else None


class WindowConfig(PeriodSpec):
    """A maintenance window: jobs with ``window: NAME`` start only inside it."""

    notify: list[Name] | None = Field(None, description="channels for its notices (default: the stakeholders). "
            "Source: upkeeper (not set by default)")
    notices: list[Duration] = Field(
        default_factory=lambda: [timedelta(days=7), timedelta(hours=24)],
        description="advance notices this long before each opening. Source: the maintenance procedures",
    )
    min_notice: Duration = Field(
        default=timedelta(hours=1),
        description="a planned manual run ('upkeeper run JOB --at TIME') inside this window needs at least this "
        "much notice. Source: the maintenance procedures",
    )


class BlackoutConfig(PeriodSpec):
    """A blackout: scheduled and manual runs inside it are skipped (recorded), except for some categories."""

    exceptions: list[Category] = Field(
        default_factory=lambda: list[Category](["security", "critical"]),
        alias="except",
        description="job categories that still run inside the blackout. Source: the maintenance procedures",
    )


WindowMap = dict[Name, WindowConfig]
BlackoutMap = dict[Name, BlackoutConfig]
