"""Maintenance windows and blackouts in time: periods, DST, next openings, iCalendar.

Pure time logic (no I/O, no clock reads).  Every datetime crossing this API is
aware; results are UTC.

Local times become instants like this (documented in docs/windows.md):

* a **start** in a skipped span (spring forward) moves to the first valid
  instant after the gap (Debian cron semantics, as the scheduler does); in a
  repeated span (fall back) it is the first of the two instants;
* a wall-clock **end** (``end: "06:00"``) in a repeated span is the second of
  the two instants (the period is never cut short); in a gap it is the first
  valid instant after it;
* a **duration** is real elapsed time from the start.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from upkeeper.config.windows import DEFAULT_ANCHOR, PeriodSpec, localize_until, parse_local_datetime

# dateutil.rrule (~3 ms) is imported by the recurring windows and blackouts that need it: every 'upkeeper run'
# builds the calendar, and most configs have none
if TYPE_CHECKING:
    from dateutil.rrule import rrule

#: how far back a recurrence is searched for a period that is still open
_LOOKBACK = timedelta(days=2)


@dataclass(frozen=True, order=True)
class Period:
    start: datetime
    end: datetime
    name: str = ""

    def contains(self, at: datetime) -> bool:
        return self.start <= at < self.end

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return self.start < end and start < self.end


def _aware(value: datetime, what: str = "datetime") -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"naive {what}; pass an aware datetime")
    return value.astimezone(UTC)


def _is_real(naive: datetime, tz: ZoneInfo, fold: int) -> datetime | None:
    cand = naive.replace(tzinfo=tz, fold=fold).astimezone(UTC)
    back = cand.astimezone(tz).replace(tzinfo=None)
    return cand if back == naive else None


def _gap_end(naive: datetime, tz: ZoneInfo) -> datetime:
    """The first valid instant after the skipped span containing ``naive``."""
    low = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)  # before the transition
    high = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)  # after it
    if low > high:
        low, high = high, low
    off = low.astimezone(tz).utcoffset()
    while high - low > timedelta(seconds=1):
        mid = low + (high - low) / 2
        if mid.astimezone(tz).utcoffset() == off:
            low = mid
        else:
            high = mid
    return high.replace(microsecond=0)


def local_to_utc(naive: datetime, tz: ZoneInfo, *, prefer_late: bool = False) -> datetime:
    """A local wall time to a UTC instant (see the module docstring for gaps and repeats)."""
    first = _is_real(naive, tz, 0)
    second = _is_real(naive, tz, 1)
    if first is None and second is None:
        return _gap_end(naive, tz)
    if first is not None and second is not None and first != second:
        return second if prefer_late else first
    return first or second  # type: ignore[return-value]


@dataclass(frozen=True)
class Recurrence:
    """The periods of one window or blackout."""

    name: str
    tz: ZoneInfo
    rule: rrule | None  # None for one-off
    start_time: time | None
    end_time: time | None
    duration: timedelta | None
    one_off: Period | None
    #: the rule's text when it may be anchored near each query (:meth:`_near`)
    movable: str | None = None

    @classmethod
    def from_spec(cls, name: str, spec: PeriodSpec, default_tz: str = "UTC") -> Recurrence:
        tz = ZoneInfo(spec.timezone or default_tz)
        rule_text = spec.rule_text()
        if rule_text is None:
            assert spec.start is not None
            s_local = parse_local_datetime(spec.start)
            start = local_to_utc(s_local, tz)
            if spec.end is not None:
                end = local_to_utc(parse_local_datetime(spec.end, end=True), tz, prefer_late=True)
            else:
                assert spec.duration is not None
                end = start + spec.duration
            return cls(name, tz, None, None, None, None, Period(start, end, name))
        st = spec.start_time()
        anchor = datetime.combine(spec.since or DEFAULT_ANCHOR, st)
        from dateutil.rrule import rrule, rrulestr

        text = localize_until(rule_text, tz)
        rule = rrulestr(text, dtstart=anchor, cache=True)
        assert isinstance(rule, rrule)
        # dateutil walks a rule from its start at every query: an hourly rule anchored in 2000 is ~236,000
        # occurrences a query (~0.1 s; a window's notices ask hundreds of them).  An hourly or daily rule
        # with no INTERVAL nor COUNT is the same series from any day at the start's time: it is anchored near
        # each query instead (:meth:`_near`)
        parts = {kv.split("=", 1)[0].strip().upper(): kv.split("=", 1)[-1].strip().upper()
                 for kv in text.split(";") if kv.strip()}
        movable = (spec.since is None and parts.get("FREQ") in ("HOURLY", "DAILY") and "COUNT" not in parts
                   and parts.get("INTERVAL", "1") == "1")
        return cls(name, tz, rule, st, spec.end_time(), spec.duration, None, text if movable else None)

    def _near(self, local: datetime) -> rrule:
        """The rule, anchored a day before ``local`` when that gives the same series (see :meth:`from_spec`)."""
        assert self.rule is not None
        if self.movable is None or self.start_time is None:
            return self.rule
        from dateutil.rrule import rrule, rrulestr

        day = max(local.date() - timedelta(days=1), DEFAULT_ANCHOR)
        rule = rrulestr(self.movable, dtstart=datetime.combine(day, self.start_time))
        assert isinstance(rule, rrule)
        return rule

    def _period_at(self, local_start: datetime) -> Period:
        start = local_to_utc(local_start, self.tz)
        if self.duration is not None:
            end = start + self.duration
        else:
            assert self.end_time is not None
            end_day = local_start.date() if self.end_time > local_start.time() else local_start.date() + timedelta(1)
            end = local_to_utc(datetime.combine(end_day, self.end_time), self.tz, prefer_late=True)
        return Period(start, max(end, start), self.name)

    def _max_length(self) -> timedelta:
        if self.duration is not None:
            return self.duration
        return timedelta(days=1, hours=2)

    def _local(self, at: datetime) -> datetime:
        return at.astimezone(self.tz).replace(tzinfo=None)

    def periods(self, start: datetime, end: datetime) -> Iterator[Period]:
        """Periods overlapping ``[start, end)``, in order."""
        start, end = _aware(start), _aware(end)
        if self.one_off is not None:
            if self.one_off.overlaps(start, end) and self.one_off.end > self.one_off.start:
                yield self.one_off
            return
        assert self.rule is not None
        lo = self._local(start - self._max_length() - _LOOKBACK)
        hi = self._local(end + _LOOKBACK)
        for local_start in self._near(lo).between(lo, hi, inc=True):
            p = self._period_at(local_start)
            if p.end > p.start and p.overlaps(start, end):
                yield p

    def active(self, at: datetime) -> Period | None:
        """The period containing ``at`` (the latest-starting one if several overlap)."""
        at = _aware(at)
        found = None
        for p in self.periods(at, at + timedelta(microseconds=1)):
            found = p
        return found

    def next_start(self, after: datetime) -> Period | None:
        """The first period starting at or after ``after``."""
        after = _aware(after)
        if self.one_off is not None:
            return self.one_off if self.one_off.start >= after else None
        assert self.rule is not None
        cursor = self._local(after) - _LOOKBACK
        rule = self._near(cursor)
        for _ in range(1000):
            nxt = rule.after(cursor, inc=False)
            if nxt is None:
                return None
            p = self._period_at(nxt)
            if p.start >= after and p.end > p.start:
                return p
            cursor = nxt
        return None

    def last_end_before(self, at: datetime, horizon: timedelta = timedelta(days=400)) -> Period | None:
        """The latest period that ended at or before ``at`` (searching back ``horizon``: two days first, then
        further — the whole horizon of an hourly window is ~10,000 periods, asked for each opening)."""
        at = _aware(at)
        span = timedelta(days=2)
        while True:
            best = None
            for p in self.periods(at - min(span, horizon), at):
                if p.end <= at:
                    best = p
            if best is not None or span >= horizon:
                return best
            span *= 4

    def upcoming(self, after: datetime, limit: int, until: datetime | None = None) -> list[Period]:
        """Periods still open at ``after`` or starting later (at most ``limit``)."""
        out: list[Period] = []
        cur = self.active(after)
        if cur is not None:
            out.append(cur)
            after = cur.end
        while len(out) < limit:
            p = self.next_start(after)
            if p is None or (until is not None and p.start >= until):
                break
            if not out or p != out[-1]:
                out.append(p)
            after = p.start + timedelta(seconds=1)
        return out


@functools.lru_cache(maxsize=256)
def _cached(name: str, spec_json: str, default_tz: str) -> Recurrence:
    return Recurrence.from_spec(name, PeriodSpec.model_validate_json(spec_json), default_tz)


def recurrence(name: str, spec: PeriodSpec, default_tz: str = "UTC") -> Recurrence:
    """A (cached) :class:`Recurrence` for a window or blackout config."""
    return _cached(name, spec.model_dump_json(include=set(PeriodSpec.model_fields)), default_tz)


def day_start(d: date, tz: ZoneInfo) -> datetime:
    return local_to_utc(datetime.combine(d, time(0)), tz)
