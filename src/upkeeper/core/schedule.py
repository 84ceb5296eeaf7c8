"""Pure time logic for upkeeper schedules (no I/O, no clock reads).

Supported schedule texts:

* five-field cron expressions (``minute hour day-of-month month day-of-week``),
  evaluated by :mod:`cronsim` with Debian cron semantics;
* the aliases ``@hourly``, ``@daily`` (= ``@midnight``), ``@weekly``,
  ``@monthly`` and ``@yearly`` (= ``@annually``) -- cronsim does not know
  them, so they are expanded here;
* intervals such as ``every 15m``, ``every 2h``, ``every 1h30m``, ``every 90s``.

Daylight-saving time (cron only; intervals ignore the time zone):

* A *fixed-time* job -- neither the minute nor the hour field starts with
  ``*`` -- that falls into a skipped span runs at the first valid minute after
  the gap; in a repeated span it runs once (at the first of the two instants).
* Other jobs follow the wall clock: ``0 * * * *`` does not run in a skipped
  hour and runs twice (two distinct UTC instants) in a repeated hour;
  ``*/5 * * * *`` keeps firing every five real minutes.

Interval occurrences are ``1970-01-01T00:00Z + k * interval`` so that every
daemon computes the same instants.

Every datetime that crosses this module's API is timezone-aware; results are
always in :data:`datetime.UTC`.  Naive datetimes raise ``ValueError``.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import re
import zoneinfo
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from upkeeper.config.types import DURATION_HINT, parse_unit_parts
from upkeeper.config.types import parse_duration as _parse_duration

__all__ = [
    "MISSED_CAP",
    "CatchUp",
    "Schedule",
    "ScheduleError",
    "jitter_offset",
    "parse_duration",
    "parse_schedule",
    "plan_catch_up",
    "validate_timezone",
]

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

#: Counting missed occurrences stops here; larger counts are reported as
#: ``missed=MISSED_CAP, missed_capped=True`` ("1000+").
MISSED_CAP: Final = 1000

#: Longest accepted ``every ...`` interval.
MAX_INTERVAL: Final = timedelta(days=3650)

_ONE_SECOND: Final = timedelta(seconds=1)
_ONE_MICROSECOND: Final = timedelta(microseconds=1)
# period() is a property of the schedule, not of "now": measure it from a
# fixed reference instant so that the result is deterministic and cacheable.
_PERIOD_REFERENCE: Final = datetime(2025, 1, 1, tzinfo=UTC)
_PERIOD_SAMPLES: Final = 12  # fires -> 11 gaps -> a true median

CRON_HINT: Final = (
    "Try: five fields 'minute hour day month weekday', e.g. '0 3 * * *', or '@daily', or 'every 15m'"
)
INTERVAL_HINT: Final = (
    "Try: 'every 15m', 'every 2h', 'every 1d', 'every 90s' or 'every 1h30m' (units s, m, h, d, w)"
)
TIMEZONE_HINT: Final = "Use an IANA timezone name such as 'UTC', 'Europe/Berlin' or 'America/New_York'"

_ALIASES: Final[dict[str, str]] = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}

# (name, allowed values) for the five cron fields, in order.
_CRON_FIELDS: Final[tuple[tuple[str, str], ...]] = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31, L or LW"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 or SUN-SAT (0 and 7 are Sunday), optionally with #n or L"),
)

# Zones that are exactly UTC: evaluate them with datetime.UTC, which keeps
# cronsim on its fast, conversion-free path.
_UTC_NAMES: Final = frozenset(
    {
        "UTC",
        "Etc/UTC",
        "UCT",
        "Etc/UCT",
        "Universal",
        "Etc/Universal",
        "Zulu",
        "Etc/Zulu",
        "GMT",
        "Etc/GMT",
        "GMT0",
        "Etc/GMT0",
        "GMT+0",
        "Etc/GMT+0",
        "GMT-0",
        "Etc/GMT-0",
        "Greenwich",
        "Etc/Greenwich",
    }
)

_EVERY_RE: Final = re.compile(r"\s*every\s*(.*?)\s*", re.IGNORECASE | re.DOTALL)


class ScheduleError(ValueError):
    """A schedule, duration or timezone could not be understood.

    ``str(error)`` says what is wrong; :attr:`hint` says how to fix it.
    """

    hint: str

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


# --------------------------------------------------------------------------
# helpers


def _as_utc(value: datetime, name: str) -> datetime:
    """Return *value* as an aware UTC datetime; reject naive datetimes."""
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime (UTC), got naive {value.isoformat()}")
    if value.tzinfo is UTC:
        return value
    return value.astimezone(UTC)


@functools.lru_cache(maxsize=1)
def _known_timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _suggest_timezone(name: str) -> str | None:
    known = _known_timezones()
    folded = {zone.casefold(): zone for zone in known}
    exact = folded.get(name.strip().casefold())
    if exact is not None:
        return exact
    matches = difflib.get_close_matches(name.strip(), sorted(known), n=1, cutoff=0.6)
    return matches[0] if matches else None


def validate_timezone(name: str) -> ZoneInfo:
    """Return the ``ZoneInfo`` for IANA zone *name* or raise :class:`ScheduleError`."""
    if not isinstance(name, str) or not name.strip():
        raise ScheduleError(f"invalid timezone {name!r}: the name is empty", TIMEZONE_HINT)
    try:
        return ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        pass
    suggestion = _suggest_timezone(name)
    if suggestion is not None:
        hint = f"Did you mean '{suggestion}'? {TIMEZONE_HINT}"
    else:
        hint = TIMEZONE_HINT
    raise ScheduleError(f"unknown timezone {name!r}", hint)


# --------------------------------------------------------------------------
# durations


def parse_duration(text: str | int | float) -> timedelta:
    """Parse a duration (see :func:`upkeeper.config.types.parse_duration`); errors are ScheduleErrors."""
    try:
        return _parse_duration(text)
    except ValueError as exc:
        raise ScheduleError(str(exc), DURATION_HINT) from None


def _parse_interval(text: str, body: str) -> timedelta:
    def error(problem: str) -> ScheduleError:
        return ScheduleError(f"invalid interval {text!r}: {problem}", INTERVAL_HINT)

    try:
        parsed = parse_unit_parts(body)
    except OverflowError:
        raise error("it is too large") from None
    if isinstance(parsed, str):
        if not body.strip():
            raise error("missing the length after 'every'")
        raise error(parsed)
    interval, had_units = parsed
    if not had_units:
        raise error(f"add a unit, e.g. 'every {body.strip()}s' or 'every {body.strip()}m'")
    if interval <= timedelta(0):
        raise error("the interval must be longer than zero")
    if interval % _ONE_SECOND:
        raise error("the interval must be a whole number of seconds")
    if interval > MAX_INTERVAL:
        raise error("the interval must be at most 3650 days")
    return interval


# --------------------------------------------------------------------------
# cron validation


def _field_problem(index: int, part: str, month_part: str) -> str:
    """Explain why cron field *index* (text *part*) was rejected by cronsim."""
    name, allowed = _CRON_FIELDS[index]
    for term in part.split(","):
        if "/" in term:
            step = term.split("/", 1)[1]
            if not step.isdigit() or int(step) == 0:
                return f"{name} step must be a whole number of at least 1 (got {part!r})"
        span = term.split("/", 1)[0]
        if "-" in span:
            low, _, high = span.partition("-")
            if low.isdigit() and high.isdigit() and int(low) > int(high):
                return (
                    f"{name} range {low}-{high} runs backwards; write the smaller value first (got {part!r})"
                )
    if index == 2 and all(t.isdigit() and 1 <= int(t) <= 31 for t in part.split(",")):
        return f"day-of-month {part!r} never occurs in month {month_part!r}"
    return f"{name} must be {allowed} (got {part!r})"


def _fix_single_value_steps(field: str) -> str:
    """Rewrite terms like ``5-5/10`` to ``5``.

    cronsim reads a stepped range that holds a single value as "from that value
    to the end of the field" (``0-0/1`` in the hour field would mean every hour);
    in cron a range from a to a is just a.  ``5/10`` (no range) keeps cron's and
    cronsim's meaning "5 to the end, every 10th".
    """
    terms = field.split(",")
    for index, term in enumerate(terms):
        span, _, step = term.partition("/")
        low, _, high = span.partition("-")
        if not (step.isdigit() and int(step) > 0 and high):
            continue
        same_number = low.isdigit() and high.isdigit() and int(low) == int(high)
        same_name = len(low) == 3 and low.isalpha() and low.upper() == high.upper()
        if same_number or same_name:
            terms[index] = low
    return ",".join(terms)


def _normalize_cron(text: str) -> str:
    """Validate a five-field cron expression or alias; return it normalized."""
    stripped = text.strip()
    if stripped.startswith("@"):
        word = stripped.lower()
        if word in _ALIASES:
            return _ALIASES[word]
        if word == "@reboot":
            raise ScheduleError(
                f"invalid cron expression {text!r}: @reboot is not supported; "
                "upkeeper only runs time-based schedules",
                CRON_HINT,
            )
        known = ", ".join(sorted(_ALIASES))
        raise ScheduleError(
            f"invalid cron expression {text!r}: unknown alias {stripped!r} (known: {known})",
            CRON_HINT,
        )
    fields = stripped.split()
    if len(fields) != 5:
        detail = f"expected 5 fields (minute hour day month weekday), got {len(fields)}"
        if len(fields) == 6:
            detail += "; a seconds field is not supported"
        raise ScheduleError(f"invalid cron expression {text!r}: {detail}", CRON_HINT)
    normalized = " ".join(_fix_single_value_steps(field) for field in fields).upper()
    try:
        CronSim(normalized, EPOCH)
    except CronSimError as exc:
        message = str(exc)
        for index, (name, _allowed) in enumerate(_CRON_FIELDS):
            if message == f"Bad {name}":
                detail = _field_problem(index, fields[index], fields[3])
                break
        else:
            detail = message
        raise ScheduleError(f"invalid cron expression {text!r}: {detail}", CRON_HINT) from None
    except (ValueError, IndexError, TypeError) as exc:  # defensive: cronsim internals
        raise ScheduleError(f"invalid cron expression {text!r}: {exc}", CRON_HINT) from None
    return normalized


# --------------------------------------------------------------------------
# cron evaluation
#
# Three evaluation modes, chosen once per (expression, zone):
#
# * "utc":   the zone is UTC; cronsim runs on UTC directly.
# * "fixed": neither the minute nor the hour field starts with '*'.  cronsim
#            applies Debian cron's fixed-time rules itself (it works on naive
#            wall time: a time in a gap moves to the first valid minute after
#            it, an ambiguous time means its first instant).  cronsim may then
#            return an instant that is not later than the start in UTC (start in
#            the second pass of a repeated hour): such results are stepped over.
# * "wall":  the job follows the wall clock: it fires at every instant whose
#            local time matches.  cronsim's own aware-datetime walk for these
#            expressions steps hours in 3600-second ticks from a wall-clock hour
#            boundary and so loses occurrences after a transition that is not a
#            whole number of hours (Australia/Lord_Howe shifts by 30 minutes:
#            after it, '* 11 * * *' would start at 11:30).  So the zone is cut
#            into constant-offset segments instead: within a segment, local time
#            is UTC + offset, and cronsim runs on that shifted clock in UTC mode.

_Mode = Literal["utc", "fixed", "wall"]

# Transitions are found by probing the UTC offset at this spacing and then
# bisecting; zones do not change their offset twice within a day.
_OFFSET_PROBE: Final = timedelta(days=1)


@functools.lru_cache(maxsize=16384)
def _cron_mode(cron: str, timezone_name: str) -> _Mode:
    if timezone_name in _UTC_NAMES:
        return "utc"
    minute, hour = cron.split()[:2]
    if not minute.startswith("*") and not hour.startswith("*"):
        return "fixed"
    return "wall"


def _offset_at(tz: ZoneInfo, instant: datetime) -> timedelta:
    offset = instant.astimezone(tz).utcoffset()
    assert offset is not None
    return offset


def _bisect_offset(
    tz: ZoneInfo, low: datetime, high: datetime, found: Callable[[timedelta], bool]
) -> datetime:
    """Smallest instant in (low, high] (to the second) whose offset satisfies *found*.

    Requires ``not found(offset at low)`` and ``found(offset at high)``.
    """
    while high - low > _ONE_SECOND:
        middle = low + max(_ONE_SECOND, timedelta(seconds=(high - low) // _ONE_SECOND // 2))
        if found(_offset_at(tz, middle)):
            high = middle
        else:
            low = middle
    return high


def _first_offset_change(tz: ZoneInfo, low: datetime, high: datetime, offset: timedelta) -> datetime | None:
    """First instant in (low, high] whose UTC offset is not *offset* (the offset at low)."""
    earlier = low.replace(microsecond=0)
    while earlier < high:
        probe = min(earlier + _OFFSET_PROBE, high)
        if _offset_at(tz, probe) != offset:
            return _bisect_offset(tz, earlier, probe, lambda seen: seen != offset)
        earlier = probe
    return None


def _last_offset_change(tz: ZoneInfo, low: datetime, high: datetime, offset: timedelta) -> datetime | None:
    """Start of the constant-*offset* run that ends at *high*, if it begins after *low*.

    *offset* is the offset at *high*.  Returns None when the offset is the same
    on all of [low, high].
    """
    later = high
    while later > low:
        probe = max(later - _OFFSET_PROBE, low)
        if _offset_at(tz, probe) != offset:
            return _bisect_offset(tz, probe, later, lambda seen: seen == offset)
        later = probe
    return None


def _iter_cron(cron: str, timezone_name: str, after: datetime) -> Iterator[datetime]:
    """Yield the occurrences strictly after *after* (aware UTC), increasing, in UTC."""
    mode = _cron_mode(cron, timezone_name)
    if mode == "wall":
        yield from _iter_wall(cron, ZoneInfo(timezone_name), after)
        return
    start = after if mode == "utc" else after.astimezone(ZoneInfo(timezone_name))
    previous = after
    for candidate in CronSim(cron, start):  # ends if nothing matches for 50 years
        instant = candidate.astimezone(UTC)
        if instant > previous:
            yield instant
            previous = instant


def _iter_wall(cron: str, tz: ZoneInfo, after: datetime) -> Iterator[datetime]:
    offset = _offset_at(tz, after)
    start = after  # cronsim yields wall times strictly after start + offset
    checked = after  # the offset is known to be `offset` on [segment start, checked]
    while True:
        for wall in CronSim(cron, start + offset):
            instant = wall - offset
            change = _first_offset_change(tz, checked, instant, offset)
            if change is not None:
                # `instant` lies beyond the segment; continue on the next one,
                # from its first instant (inclusive).
                start = change - _ONE_SECOND
                offset = _offset_at(tz, change)
                checked = change
                break
            yield instant
            checked = instant
        else:
            return


def _latest_cron(cron: str, timezone_name: str, at: datetime) -> datetime | None:
    """Newest occurrence <= *at* found by walking backwards (before confirmation)."""
    at = at.replace(microsecond=0)  # occurrences are whole seconds
    mode = _cron_mode(cron, timezone_name)
    # cronsim's reverse iteration yields instants strictly before its start.
    if mode == "wall":
        tz = ZoneInfo(timezone_name)
        end = at
        offset = _offset_at(tz, end)
        while True:
            try:
                wall = next(CronSim(cron, end + _ONE_SECOND + offset, reverse=True))
            except StopIteration:
                return None
            instant = wall - offset
            segment_start = _last_offset_change(tz, instant, end, offset)
            if segment_start is None:
                return instant
            end = segment_start - _ONE_SECOND
            offset = _offset_at(tz, end)
    start = at + _ONE_SECOND
    reverse = CronSim(
        cron, start if mode == "utc" else start.astimezone(ZoneInfo(timezone_name)), reverse=True
    )
    try:
        candidate = next(reverse).astimezone(UTC)
        while candidate > at:  # defensive; cronsim walks backwards
            candidate = next(reverse).astimezone(UTC)
    except StopIteration:
        return None
    return candidate


# --------------------------------------------------------------------------
# schedules


@dataclass(frozen=True, slots=True)
class Schedule:
    """A parsed schedule.  Build it with :func:`parse_schedule`."""

    text: str
    """The schedule as the user wrote it."""
    timezone: str
    """IANA timezone name the cron fields are evaluated in."""
    cron: str | None
    """Normalized five-field cron expression (aliases expanded), or None."""
    interval: timedelta | None
    """Interval for ``every ...`` schedules, or None."""

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.interval is None):
            raise ValueError("a Schedule needs exactly one of cron and interval")
        if self.interval is not None and self.interval <= timedelta(0):
            raise ValueError("a Schedule interval must be positive")

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def _no_occurrence(self, after: datetime) -> ScheduleError:
        return ScheduleError(
            f"schedule {self.text!r} has no occurrence within 50 years after {after.isoformat()}",
            CRON_HINT,
        )

    # -- public queries -------------------------------------------------------

    def next_after(self, after: datetime) -> datetime:
        """The first occurrence strictly later than *after* (aware; UTC result)."""
        after = _as_utc(after, "after")
        if self.interval is not None:
            return EPOCH + ((after - EPOCH) // self.interval + 1) * self.interval
        assert self.cron is not None
        for instant in _iter_cron(self.cron, self.timezone, after):
            return instant
        raise self._no_occurrence(after)

    def latest_at_or_before(self, at: datetime) -> datetime | None:
        """The newest occurrence ``<= at`` (UTC), or None if none within ~50 years.

        Walks backwards with cronsim's reverse iteration, then confirms the
        answer forwards so that it always agrees with :meth:`next_after` (the
        reverse walk handles a repeated hour differently for fixed-time jobs).
        """
        at = _as_utc(at, "at")
        if self.interval is not None:
            return EPOCH + ((at - EPOCH) // self.interval) * self.interval
        assert self.cron is not None
        candidate = _latest_cron(self.cron, self.timezone, at)
        if candidate is None:
            return None
        for instant in _iter_cron(self.cron, self.timezone, candidate):
            if instant > at:
                break
            candidate = instant
        return candidate

    def upcoming(self, after: datetime, n: int) -> list[datetime]:
        """The next *n* occurrences strictly after *after*, increasing, UTC."""
        after = _as_utc(after, "after")
        if n < 0:
            raise ValueError(f"n must not be negative, got {n}")
        if self.interval is not None:
            first = (after - EPOCH) // self.interval + 1
            return [EPOCH + (first + k) * self.interval for k in range(n)]
        assert self.cron is not None
        result: list[datetime] = []
        if n == 0:
            return result
        for instant in _iter_cron(self.cron, self.timezone, after):
            result.append(instant)
            if len(result) >= n:
                break
        return result

    def period(self) -> timedelta:
        """Typical spacing between fires (for dead-man's-switch grace).

        The interval, or the median gap between twelve consecutive cron fires
        measured from a fixed reference instant (2025-01-01T00:00Z).
        """
        if self.interval is not None:
            return self.interval
        assert self.cron is not None
        return _cron_period(self.cron, self.timezone)

    def _count_between(self, after: datetime, until: datetime, limit: int) -> int:
        """How many occurrences lie in ``(after, until]``, counting at most *limit*."""
        after = _as_utc(after, "after")
        until = _as_utc(until, "until")
        if limit <= 0 or until <= after:
            return 0
        if self.interval is not None:
            count = (until - EPOCH) // self.interval - (after - EPOCH) // self.interval
            return min(count, limit)
        assert self.cron is not None
        count = 0
        for instant in _iter_cron(self.cron, self.timezone, after):
            if instant > until:
                break
            count += 1
            if count >= limit:
                break
        return count


@functools.lru_cache(maxsize=4096)
def _cron_period(cron: str, timezone_name: str) -> timedelta:
    schedule = Schedule(text=cron, timezone=timezone_name, cron=cron, interval=None)
    fires = schedule.upcoming(_PERIOD_REFERENCE, _PERIOD_SAMPLES)
    gaps = sorted(later - earlier for earlier, later in zip(fires, fires[1:], strict=False))
    if not gaps:
        return timedelta(days=365)
    return gaps[len(gaps) // 2]


@functools.lru_cache(maxsize=16384)
def _parse_schedule_cached(text: str, timezone_name: str) -> Schedule:
    validate_timezone(timezone_name)
    if not text.strip():
        raise ScheduleError(f"invalid schedule {text!r}: it is empty", CRON_HINT)
    every = _EVERY_RE.fullmatch(text)
    if every is not None:
        interval = _parse_interval(text, every.group(1))
        return Schedule(text=text, timezone=timezone_name, cron=None, interval=interval)
    return Schedule(text=text, timezone=timezone_name, cron=_normalize_cron(text), interval=None)


def parse_schedule(text: str, timezone: str = "UTC") -> Schedule:
    """Parse *text* (cron, ``@alias`` or ``every ...``) evaluated in *timezone*.

    Raises :class:`ScheduleError` (with a ``hint``) for anything it cannot use.
    Results are cached, so calling this repeatedly for the same job is cheap.
    """
    if not isinstance(text, str):
        raise ScheduleError(f"invalid schedule {text!r}: expected text, got {type(text).__name__}", CRON_HINT)
    if not isinstance(timezone, str):
        raise ScheduleError(f"invalid timezone {timezone!r}: expected text", TIMEZONE_HINT)
    return _parse_schedule_cached(text, timezone)


# --------------------------------------------------------------------------
# jitter


def jitter_offset(job_name: str, max_jitter: timedelta) -> timedelta:
    """A stable per-job delay in ``[0, max_jitter)``, in whole seconds.

    Derived from SHA-256 of the job name, so it is identical across processes,
    hosts and restarts (unlike ``hash()``).  ``max_jitter`` of one second or
    less (including zero) yields zero.
    """
    if max_jitter < timedelta(0):
        raise ValueError(f"max_jitter must not be negative, got {max_jitter}")
    # Whole seconds strictly below max_jitter: 0 .. ceil(max_jitter) - 1.
    choices = -(-max_jitter // _ONE_SECOND)
    if choices <= 1:
        return timedelta(0)
    digest = hashlib.sha256(b"upkeeper-jitter\0" + job_name.encode("utf-8")).digest()
    return timedelta(seconds=int.from_bytes(digest[:8], "big") % choices)


# --------------------------------------------------------------------------
# catch-up after downtime


@dataclass(frozen=True, slots=True)
class CatchUp:
    """What to do about a job when the daemon (re)considers it at ``now``.

    * ``fire``/``trigger``: run this occurrence now -- ``"schedule"`` when it is
      on time (due by at most the tolerance), ``"catch-up"`` when it stands in
      for missed occurrences under policy ``latest``.
    * ``skipped``: newest missed occurrence that will not run; record one
      skipped run for it, naming ``missed`` (``"1000+"`` if ``missed_capped``).
    * ``missed``: occurrences whose time passed (beyond the tolerance) without
      a run, capped at :data:`MISSED_CAP`.  With a catch-up fire the fired one
      is included; with an on-time fire it is not.
    * ``next_due``: next occurrence strictly after everything handled here
      (jitter not applied).
    """

    fire: datetime | None
    trigger: str | None
    skipped: datetime | None
    missed: int
    missed_capped: bool
    next_due: datetime


def plan_catch_up(
    schedule: Schedule,
    last_scheduled: datetime | None,
    now: datetime,
    policy: Literal["skip", "latest"],
    grace: timedelta,
    tolerance: timedelta = timedelta(seconds=60),
) -> CatchUp:
    """Decide what to fire or record as skipped for *schedule* at *now*.

    *last_scheduled* is the last occurrence the job has recorded (fired or
    skipped), or None for a brand-new job, which never catches up.  Of the
    occurrences in ``(last_scheduled, now]``:

    * if the newest is at most *tolerance* old it fires with trigger
      ``"schedule"``; any older ones count as missed and the newest of those is
      reported as ``skipped`` (whatever the policy);
    * otherwise all of them are missed; with policy ``latest`` the newest fires
      once as ``"catch-up"`` if it is at most *grace* old, else (and always with
      ``skip``) it is reported as ``skipped``.
    """
    if policy not in ("skip", "latest"):
        raise ValueError(f"policy must be 'skip' or 'latest', got {policy!r}")
    if grace < timedelta(0):
        raise ValueError(f"grace must not be negative, got {grace}")
    if tolerance < timedelta(0):
        raise ValueError(f"tolerance must not be negative, got {tolerance}")
    now = _as_utc(now, "now")
    if last_scheduled is None:
        return CatchUp(None, None, None, 0, False, schedule.next_after(now))
    last = _as_utc(last_scheduled, "last_scheduled")
    first_due = schedule.next_after(last)
    if first_due > now:
        return CatchUp(None, None, None, 0, False, first_due)

    newest = schedule.latest_at_or_before(now)
    if newest is None or newest < first_due:  # defensive: cannot normally happen
        newest = first_due
    next_due = schedule.next_after(now)

    if now - newest <= tolerance:
        # On time.  Everything older than it in (last, newest) was missed.
        older = schedule._count_between(last, newest - _ONE_MICROSECOND, MISSED_CAP + 1)
        skipped = None
        if older:
            skipped = schedule.latest_at_or_before(newest - _ONE_MICROSECOND)
        return CatchUp(
            fire=newest,
            trigger="schedule",
            skipped=skipped,
            missed=min(older, MISSED_CAP),
            missed_capped=older > MISSED_CAP,
            next_due=next_due,
        )

    due = schedule._count_between(last, now, MISSED_CAP + 1)
    missed = min(due, MISSED_CAP)
    capped = due > MISSED_CAP
    if policy == "latest" and now - newest <= grace:
        return CatchUp(newest, "catch-up", None, missed, capped, next_due)
    return CatchUp(None, None, newest, missed, capped, next_due)
