"""Tests for upkeeper.core.schedule: parsing, DST semantics, catch-up and jitter."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upkeeper.core.schedule import (
    MISSED_CAP,
    CatchUp,
    Schedule,
    ScheduleError,
    jitter_offset,
    parse_duration,
    parse_schedule,
    plan_catch_up,
    validate_timezone,
)

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
LORD_HOWE = "Australia/Lord_Howe"
ZONES = (BERLIN, NEW_YORK, LORD_HOWE, "UTC")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)

# 2026 transitions (UTC instants): (zone, instant, kind)
TRANSITIONS_2026 = [
    (BERLIN, datetime(2026, 3, 29, 1, 0, tzinfo=UTC), "spring"),  # 02:00 CET -> 03:00 CEST
    (BERLIN, datetime(2026, 10, 25, 1, 0, tzinfo=UTC), "fall"),  # 03:00 CEST -> 02:00 CET
    (NEW_YORK, datetime(2026, 3, 8, 7, 0, tzinfo=UTC), "spring"),  # 02:00 EST -> 03:00 EDT
    (NEW_YORK, datetime(2026, 11, 1, 6, 0, tzinfo=UTC), "fall"),  # 02:00 EDT -> 01:00 EST
    (LORD_HOWE, datetime(2026, 10, 3, 15, 30, tzinfo=UTC), "spring"),  # 02:00 -> 02:30 (+10:30 -> +11)
    (LORD_HOWE, datetime(2026, 4, 4, 15, 0, tzinfo=UTC), "fall"),  # 02:00 -> 01:30 (+11 -> +10:30)
]

# Keep the whole module fast: properties run a modest number of examples and
# never write an example database into the working tree.
PROPERTY_SETTINGS = settings(max_examples=80, deadline=None, database=None)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def wall(zone: str, year: int, month: int, day: int, hour: int, minute: int, fold: int = 0) -> datetime:
    """The UTC instant of a local wall time (fold=1 picks the second of two)."""
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone), fold=fold).astimezone(UTC)


def local(zone: str, instant: datetime) -> datetime:
    return instant.astimezone(ZoneInfo(zone))


def fires_between(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    """All fires in (start, end], by repeated next_after."""
    result: list[datetime] = []
    current = schedule.next_after(start)
    while current <= end:
        result.append(current)
        current = schedule.next_after(current)
    return result


def offset_at(zone: str, instant: datetime) -> timedelta:
    offset = instant.astimezone(ZoneInfo(zone)).utcoffset()
    assert offset is not None
    return offset


def test_transition_table_is_right() -> None:
    for zone, instant, kind in TRANSITIONS_2026:
        before = offset_at(zone, instant - timedelta(seconds=1))
        after = offset_at(zone, instant)
        assert (after > before) == (kind == "spring"), (zone, instant)


# --------------------------------------------------------------------------
# parsing


@pytest.mark.parametrize(
    ("text", "cron"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("  @Daily ", "0 0 * * *"),
        ("*/5   *  * * *", "*/5 * * * *"),
        ("0 9 * * mon-fri", "0 9 * * MON-FRI"),
        ("30 2 1,15 jan-jun *", "30 2 1,15 JAN-JUN *"),
        ("0 0 L * *", "0 0 L * *"),
        # cronsim would read a one-value stepped range as "to the end of the field".
        ("0 3-3/2 * * *", "0 3 * * *"),
        ("35-35/5 * * * *", "35 * * * *"),
        ("0 0 * * MON-MON/2", "0 0 * * MON"),
        ("5/20 * * * *", "5/20 * * * *"),  # "from 5, every 20th" as in cron
    ],
)
def test_parse_cron_and_aliases(text: str, cron: str) -> None:
    schedule = parse_schedule(text, BERLIN)
    assert schedule.cron == cron
    assert schedule.interval is None
    assert schedule.text == text
    assert schedule.timezone == BERLIN
    assert schedule.tz == ZoneInfo(BERLIN)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("every 15m", 900),
        ("every 2h", 7200),
        ("every 1d", 86400),
        ("every 90s", 90),
        ("every 1h30m", 5400),
        ("  EVERY 1H 30M  ", 5400),
        ("every1h30m", 5400),
        ("every 2 hours", 7200),
        ("every 1d 2h 3m 4s", 93784),
    ],
)
def test_parse_intervals(text: str, seconds: int) -> None:
    schedule = parse_schedule(text)
    assert schedule.cron is None
    assert schedule.interval == timedelta(seconds=seconds)
    assert schedule.timezone == "UTC"


def test_single_value_stepped_range_fires_once_a_day() -> None:
    fires = parse_schedule("0 3-3/2 * * *", BERLIN).upcoming(utc(2026, 5, 1), 3)
    assert [local(BERLIN, f).hour for f in fires] == [3, 3, 3]
    assert parse_schedule("5/20 * * * *").upcoming(utc(2026, 5, 1), 3) == [
        utc(2026, 5, 1, 0, 5),
        utc(2026, 5, 1, 0, 25),
        utc(2026, 5, 1, 0, 45),
    ]


def test_schedule_needs_exactly_one_of_cron_and_interval() -> None:
    with pytest.raises(ValueError):
        Schedule(text="x", timezone="UTC", cron=None, interval=None)
    with pytest.raises(ValueError):
        Schedule(text="x", timezone="UTC", cron="* * * * *", interval=MINUTE)
    with pytest.raises(ValueError):
        Schedule(text="x", timezone="UTC", cron=None, interval=timedelta(0))


def test_parse_schedule_is_cached_and_frozen() -> None:
    first = parse_schedule("*/7 * * * *", NEW_YORK)
    assert parse_schedule("*/7 * * * *", NEW_YORK) is first
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.text = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("61 * * * *", ["invalid cron expression '61 * * * *'", "minute must be 0-59", "'61'"]),
        ("0 24 * * *", ["hour must be 0-23"]),
        ("0 0 32 * *", ["day-of-month must be 1-31"]),
        ("0 0 * 13 *", ["month must be 1-12"]),
        ("0 0 * * 8", ["day-of-week must be 0-7"]),
        ("*/0 * * * *", ["minute step must be a whole number of at least 1"]),
        ("30-10 * * * *", ["minute range 30-10 runs backwards"]),
        ("0 0 31 2 *", ["day-of-month '31' never occurs in month '2'"]),
        ("* * * *", ["expected 5 fields", "got 4"]),
        ("0 0 * * * *", ["expected 5 fields", "got 6", "seconds field is not supported"]),
        ("@reboot", ["@reboot is not supported"]),
        ("@fortnightly", ["unknown alias '@fortnightly'", "@daily"]),
        ("", ["invalid schedule ''", "empty"]),
    ],
)
def test_bad_cron_messages(text: str, fragments: list[str]) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(text)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message
    assert "five fields 'minute hour day month weekday'" in caught.value.hint
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("every 15x", "unknown unit 'x'"),
        ("every", "missing the length"),
        ("every 0m", "longer than zero"),
        ("every 0s 0m", "write larger units first"),
        ("every 15", "add a unit"),
        ("every 1.5s", "whole number of seconds"),
        ("every -5m", "must not be negative"),
        ("every 30m1h", "write larger units first"),
        ("every 1h1h", "appears twice"),
        ("every 4000d", "at most 3650 days"),
        ("everyday", "cannot read 'day'"),
    ],
)
def test_bad_interval_messages(text: str, fragment: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(text)
    assert f"invalid interval {text!r}" in str(caught.value)
    assert fragment in str(caught.value)
    assert "every 15m" in caught.value.hint
    # the hint names every unit the parser takes ('every 1w' works; its unit error says so, the hint left it out)
    assert "(units s, m, h, d, w)" in caught.value.hint
    assert parse_schedule("every 1w").interval == timedelta(weeks=1)


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("Europe/Berln", "Europe/Berlin"),
        ("europe/berlin", "Europe/Berlin"),
        ("America/New_Yrok", "America/New_York"),
    ],
)
def test_unknown_timezone_suggests_close_match(name: str, suggestion: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule("@daily", name)
    assert str(caught.value) == f"unknown timezone {name!r}"
    assert f"Did you mean '{suggestion}'?" in caught.value.hint
    with pytest.raises(ScheduleError):
        validate_timezone(name)


@pytest.mark.parametrize("name", ["Nowhere/Qqqqqqqqqqqq", "", "/etc/passwd", "../etc", "Europe"])
def test_unknown_timezone_without_close_match_still_has_hint(name: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        validate_timezone(name)
    assert repr(name) in str(caught.value)
    assert "IANA timezone name" in caught.value.hint


def test_validate_timezone_returns_zoneinfo() -> None:
    assert validate_timezone(LORD_HOWE) == ZoneInfo(LORD_HOWE)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        (" 1H 30M ", timedelta(hours=1, minutes=30)),
        ("90", timedelta(seconds=90)),
        ("0", timedelta(0)),
        ("1.5h", timedelta(minutes=90)),
        (90, timedelta(seconds=90)),
        (0, timedelta(0)),
        (1.5, timedelta(seconds=1.5)),
    ],
)
def test_parse_duration(value: str | int | float, expected: timedelta) -> None:
    assert parse_duration(value) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "empty"),
        ("soon", "cannot read 'soon'"),
        ("-5m", "negative"),
        ("-5", "negative"),
        (-1, "negative"),
        ("5x", "unknown unit 'x'"),
        ("30m1h", "larger units first"),
        ("1h1h", "appears twice"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (True, "expected a number"),
        ("99999999999d", "too large"),
    ],
)
def test_parse_duration_errors(value: str | int | float, fragment: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_duration(value)
    assert "invalid duration" in str(caught.value)
    assert fragment in str(caught.value)
    assert "1h30m" in caught.value.hint


def test_naive_datetimes_are_rejected() -> None:
    schedule = parse_schedule("0 3 * * *", BERLIN)
    naive = datetime(2026, 1, 1, 12, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        schedule.next_after(naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        schedule.latest_at_or_before(naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        schedule.upcoming(naive, 3)
    with pytest.raises(ValueError, match="timezone-aware"):
        plan_catch_up(schedule, None, naive, "skip", HOUR)
    with pytest.raises(ValueError, match="timezone-aware"):
        plan_catch_up(schedule, naive, utc(2026, 1, 1), "skip", HOUR)


def test_aware_non_utc_input_is_accepted_and_result_is_utc() -> None:
    schedule = parse_schedule("0 3 * * *", BERLIN)
    start = datetime(2026, 1, 1, 12, 0, tzinfo=ZoneInfo(NEW_YORK))
    result = schedule.next_after(start)
    assert result.tzinfo is UTC
    assert result == wall(BERLIN, 2026, 1, 2, 3, 0)


# --------------------------------------------------------------------------
# DST: explicit cases


@pytest.mark.parametrize(
    ("zone", "expr", "start", "expected_utc", "expected_wall"),
    [
        (BERLIN, "30 2 * * *", utc(2026, 3, 28, 12), utc(2026, 3, 29, 1, 0), (3, 0)),
        (BERLIN, "0 2 * * *", utc(2026, 3, 28, 12), utc(2026, 3, 29, 1, 0), (3, 0)),
        (BERLIN, "59 2 * * *", utc(2026, 3, 28, 12), utc(2026, 3, 29, 1, 0), (3, 0)),
        (NEW_YORK, "30 2 * * *", utc(2026, 3, 7, 12), utc(2026, 3, 8, 7, 0), (3, 0)),
        (LORD_HOWE, "15 2 * * *", utc(2026, 10, 3, 0), utc(2026, 10, 3, 15, 30), (2, 30)),
        (LORD_HOWE, "0 2 * * *", utc(2026, 10, 3, 0), utc(2026, 10, 3, 15, 30), (2, 30)),
    ],
)
def test_fixed_time_in_skipped_span_runs_right_after_the_gap(
    zone: str, expr: str, start: datetime, expected_utc: datetime, expected_wall: tuple[int, int]
) -> None:
    schedule = parse_schedule(expr, zone)
    fire = schedule.next_after(start)
    assert fire == expected_utc
    assert (local(zone, fire).hour, local(zone, fire).minute) == expected_wall
    # The day after, the job is back at its written time.
    following = local(zone, schedule.next_after(fire))
    assert following.date() == local(zone, fire).date() + timedelta(days=1)
    minute, hour = (int(field) for field in expr.split()[:2])
    assert (following.hour, following.minute) == (hour, minute)


@pytest.mark.parametrize(
    ("zone", "expr", "day", "expected_utc"),
    [
        (BERLIN, "30 2 * * *", date(2026, 10, 25), utc(2026, 10, 25, 0, 30)),  # 02:30 CEST
        (NEW_YORK, "30 1 * * *", date(2026, 11, 1), utc(2026, 11, 1, 5, 30)),  # 01:30 EDT
        (LORD_HOWE, "45 1 * * *", date(2026, 4, 5), utc(2026, 4, 4, 14, 45)),  # 01:45 +11
    ],
)
def test_fixed_time_in_repeated_span_runs_once(
    zone: str, expr: str, day: date, expected_utc: datetime
) -> None:
    schedule = parse_schedule(expr, zone)
    start = wall(zone, day.year, day.month, day.day, 0, 0) - timedelta(days=2)
    fires = fires_between(schedule, start, start + timedelta(days=5))
    per_date = Counter(local(zone, fire).date() for fire in fires)
    assert per_date[day] == 1
    assert set(per_date.values()) == {1}
    assert expected_utc in fires
    assert local(zone, expected_utc).fold == 0  # the first of the two instants
    # Asked from inside the second pass of the repeated hour, the next fire is
    # the next day's -- strictly later, never the already-passed first pass.
    shift = offset_at(zone, expected_utc) - offset_at(zone, expected_utc + timedelta(hours=2))
    second_pass = expected_utc + shift - MINUTE * 10  # same date, earlier wall time than the job
    assert local(zone, second_pass).fold == 1
    assert local(zone, second_pass).replace(tzinfo=None) < local(zone, expected_utc).replace(tzinfo=None)
    nxt = schedule.next_after(second_pass)
    assert nxt > second_pass
    assert local(zone, nxt).date() == day + timedelta(days=1)


def test_hourly_in_new_york_fall_back_fires_for_both_1am() -> None:
    schedule = parse_schedule("0 * * * *", NEW_YORK)
    fires = fires_between(schedule, utc(2026, 11, 1, 3, 30), utc(2026, 11, 1, 8, 0))
    assert fires == [utc(2026, 11, 1, hour) for hour in (4, 5, 6, 7, 8)]
    walls = [(local(NEW_YORK, f).hour, local(NEW_YORK, f).utcoffset()) for f in fires]
    assert walls == [
        (0, timedelta(hours=-4)),
        (1, timedelta(hours=-4)),  # 01:00 EDT
        (1, timedelta(hours=-5)),  # 01:00 EST
        (2, timedelta(hours=-5)),
        (3, timedelta(hours=-5)),
    ]


@pytest.mark.parametrize(
    ("zone", "start", "end", "expected_local_hours"),
    [
        (BERLIN, utc(2026, 3, 28, 22, 30), utc(2026, 3, 29, 2, 0), [0, 1, 3, 4]),  # no 02:00
        (BERLIN, utc(2026, 10, 24, 22, 30), utc(2026, 10, 25, 2, 0), [1, 2, 2, 3]),  # 02:00 twice
        (NEW_YORK, utc(2026, 3, 8, 4, 30), utc(2026, 3, 8, 8, 0), [0, 1, 3, 4]),
        (LORD_HOWE, utc(2026, 10, 3, 13, 0), utc(2026, 10, 3, 16, 30), [0, 1, 3]),  # 02:00 does not exist
        (LORD_HOWE, utc(2026, 4, 4, 12, 30), utc(2026, 4, 4, 16, 30), [0, 1, 2, 3]),
    ],
)
def test_wildcard_hour_follows_wall_clock(
    zone: str, start: datetime, end: datetime, expected_local_hours: list[int]
) -> None:
    schedule = parse_schedule("0 * * * *", zone)
    fires = fires_between(schedule, start, end)
    assert [local(zone, f).hour for f in fires] == expected_local_hours
    assert all(local(zone, f).minute == 0 for f in fires)
    assert len(set(fires)) == len(fires)


def test_lord_howe_half_hour_shift_keeps_whole_hours() -> None:
    # cronsim's own aware walk would start these at :30 after the 30-minute shift.
    after_fall = parse_schedule("* 11 * * *", LORD_HOWE)
    first = after_fall.next_after(utc(2026, 4, 4, 12))
    assert (local(LORD_HOWE, first).hour, local(LORD_HOWE, first).minute) == (11, 0)
    assert len(after_fall.upcoming(utc(2026, 4, 4, 12), 60)) == 60
    assert local(LORD_HOWE, after_fall.upcoming(utc(2026, 4, 4, 12), 60)[-1]).minute == 59

    after_spring = parse_schedule("*/15 3 * * *", LORD_HOWE)
    fires = after_spring.upcoming(utc(2026, 10, 3, 12), 4)
    assert [(local(LORD_HOWE, f).hour, local(LORD_HOWE, f).minute) for f in fires] == [
        (3, 0),
        (3, 15),
        (3, 30),
        (3, 45),
    ]
    assert local(LORD_HOWE, fires[0]).date() == date(2026, 10, 4)


@pytest.mark.parametrize(("zone", "transition", "kind"), TRANSITIONS_2026)
@pytest.mark.parametrize("text", ["*/15 * * * *", "every 15m"])
def test_fifteen_minute_jobs_keep_real_spacing(zone: str, transition: datetime, kind: str, text: str) -> None:
    schedule = parse_schedule(text, zone)
    fires = schedule.upcoming(transition - timedelta(hours=3), 24)
    assert fires[0] < transition < fires[-1]
    assert {later - earlier for earlier, later in zip(fires, fires[1:], strict=False)} == {
        timedelta(minutes=15)
    }


def test_intervals_are_epoch_anchored_and_ignore_the_timezone() -> None:
    start = utc(2026, 3, 29, 0, 7, 13)
    results = {zone: parse_schedule("every 1h30m", zone).upcoming(start, 5) for zone in ZONES}
    assert len({tuple(fires) for fires in results.values()}) == 1
    for fire in results["UTC"]:
        assert (fire - EPOCH) % timedelta(minutes=90) == timedelta(0)
    assert results["UTC"][0] == utc(2026, 3, 29, 1, 30)


def test_upcoming_matches_repeated_next_after_and_handles_zero() -> None:
    schedule = parse_schedule("*/20 1-3 * * *", BERLIN)
    start = utc(2026, 10, 24, 20)
    fires = schedule.upcoming(start, 12)
    assert fires == fires_between(schedule, start, fires[-1])
    assert schedule.upcoming(start, 0) == []
    with pytest.raises(ValueError):
        schedule.upcoming(start, -1)


@pytest.mark.parametrize(
    ("text", "zone", "expected"),
    [
        ("every 90s", "UTC", timedelta(seconds=90)),
        ("*/5 * * * *", BERLIN, timedelta(minutes=5)),
        ("0 3 * * *", NEW_YORK, timedelta(days=1)),
        ("0 9 * * 1-5", BERLIN, timedelta(days=1)),
        ("@weekly", LORD_HOWE, timedelta(days=7)),
        ("@hourly", NEW_YORK, HOUR),
    ],
)
def test_period(text: str, zone: str, expected: timedelta) -> None:
    assert parse_schedule(text, zone).period() == expected


def test_latest_at_or_before_basics() -> None:
    schedule = parse_schedule("30 2 * * *", BERLIN)
    gap_fire = utc(2026, 3, 29, 1, 0)  # 03:00 CEST, moved out of the gap
    assert schedule.latest_at_or_before(gap_fire) == gap_fire
    assert schedule.latest_at_or_before(gap_fire - timedelta(microseconds=1)) == utc(2026, 3, 28, 1, 30)
    # Inside the second pass of the repeated hour the newest fire is the first pass.
    assert schedule.latest_at_or_before(utc(2026, 10, 25, 1, 10)) == utc(2026, 10, 25, 0, 30)
    assert parse_schedule("every 15m").latest_at_or_before(utc(2026, 1, 1, 0, 14, 59)) == utc(2026, 1, 1)


# --------------------------------------------------------------------------
# property-based


def _transitions(zone: str) -> list[datetime]:
    """UTC instants (to the minute) where *zone* changes offset, 2020-2035."""
    result = []
    day = utc(2020, 1, 1)
    while day.year < 2036:
        nxt = day + timedelta(days=1)
        if offset_at(zone, day) != offset_at(zone, nxt):
            probe = day
            while offset_at(zone, probe) == offset_at(zone, day):
                probe += timedelta(minutes=30)
            result.append(probe)
        day = nxt
    return result


NEAR = {zone: _transitions(zone) for zone in (BERLIN, NEW_YORK, LORD_HOWE)}
NEAR["UTC"] = [utc(2026, 3, 29, 1)]

_any_instant = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)
)


@st.composite
def zone_and_instant(draw: st.DrawFn) -> tuple[str, datetime]:
    """A zone and an instant, half of the time within a few hours of a DST change."""
    zone = draw(st.sampled_from(ZONES))
    if draw(st.booleans()):
        return zone, draw(_any_instant)
    transition = draw(st.sampled_from(NEAR[zone]))
    shift = draw(st.integers(min_value=-6 * 3600, max_value=6 * 3600))
    micro = draw(st.sampled_from([0, 0, 1, 500_000]))
    return zone, transition + timedelta(seconds=shift, microseconds=micro)


@st.composite
def cron_field(draw: st.DrawFn, low: int, high: int, star: bool) -> tuple[str, frozenset[int]]:
    """A cron field and the set of values it denotes."""
    kinds = ["value", "range", "range_step", "list"] + (["star", "star_step"] if star else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "star":
        return "*", frozenset(range(low, high + 1))
    if kind == "star_step":
        step = draw(st.integers(1, (high - low) // 2 + 1))
        return f"*/{step}", frozenset(range(low, high + 1, step))
    if kind == "value":
        value = draw(st.integers(low, high))
        return str(value), frozenset({value})
    if kind == "list":
        values = draw(st.lists(st.integers(low, high), min_size=2, max_size=4, unique=True))
        return ",".join(map(str, values)), frozenset(values)
    first = draw(st.integers(low, high))
    last = draw(st.integers(first, high))
    if kind == "range":
        return f"{first}-{last}", frozenset(range(first, last + 1))
    step = draw(st.integers(1, 6))
    return f"{first}-{last}/{step}", frozenset(range(first, last + 1, step))


# (day-of-month, month, day-of-week) triples with the values they denote;
# None means "every".  Months around DST changes are well represented.
DAY_FIELDS: list[
    tuple[str, str, str, frozenset[int] | None, frozenset[int] | None, frozenset[int] | None]
] = [
    ("*", "*", "*", None, None, None),
    ("*", "*", "1-5", None, None, frozenset({1, 2, 3, 4, 5})),
    ("*", "*", "SUN", None, None, frozenset({0})),
    ("*", "*", "0,6", None, None, frozenset({0, 6})),
    ("1,15", "*", "*", frozenset({1, 15}), None, None),
    ("*/2", "*", "*", frozenset(range(1, 32, 2)), None, None),
    ("*", "3,4,10,11", "*", None, frozenset({3, 4, 10, 11}), None),
    ("*", "3,10", "0", None, frozenset({3, 10}), frozenset({0})),
    ("25-31", "3,10", "7", frozenset(range(25, 32)), frozenset({3, 10}), frozenset({0})),
    ("13", "*", "5", frozenset({13}), None, frozenset({5})),
]


@st.composite
def cron_expr(draw: st.DrawFn, fixed_time: bool = False) -> tuple[str, frozenset[int], frozenset[int], int]:
    """(expression, minutes, hours, index into DAY_FIELDS)."""
    minute_text, minutes = draw(cron_field(0, 59, star=not fixed_time))
    hour_text, hours = draw(cron_field(0, 23, star=not fixed_time))
    index = draw(st.integers(0, len(DAY_FIELDS) - 1))
    dom, month, dow = DAY_FIELDS[index][:3]
    return f"{minute_text} {hour_text} {dom} {month} {dow}", minutes, hours, index


def day_matches(index: int, day: date) -> bool:
    """Debian cron day rule: day-of-month AND day-of-week if either starts with '*', else OR."""
    dom_text, _, dow_text, doms, months, dows = DAY_FIELDS[index]
    if months is not None and day.month not in months:
        return False
    dom_ok = doms is None or day.day in doms
    dow_ok = dows is None or day.isoweekday() % 7 in dows
    if dom_text.startswith("*") or dow_text.startswith("*"):
        return dom_ok and dow_ok
    return dom_ok or dow_ok


@PROPERTY_SETTINGS
@given(spec=cron_expr(), where=zone_and_instant())
def test_property_next_after_strictly_later_and_increasing(
    spec: tuple[str, frozenset[int], frozenset[int], int], where: tuple[str, datetime]
) -> None:
    zone, start = where
    schedule = parse_schedule(spec[0], zone)
    first = schedule.next_after(start)
    assert first > start  # (1)
    assert first.tzinfo is UTC
    fires = schedule.upcoming(start, 50)
    assert len(fires) == 50
    assert fires[0] == first
    assert all(earlier < later for earlier, later in zip(fires, fires[1:], strict=False))  # (2)
    assert schedule.next_after(fires[20]) == fires[21]


@PROPERTY_SETTINGS
@given(spec=cron_expr(), where=zone_and_instant())
def test_property_every_fire_matches_the_local_expression(
    spec: tuple[str, frozenset[int], frozenset[int], int], where: tuple[str, datetime]
) -> None:
    """(3) for all jobs: the local time matches, or (fixed-time jobs only) the fire is
    the first minute after a DST gap that swallowed a matching time; and fixed-time
    jobs never fire in the second pass of a repeated hour."""
    expr, minutes, hours, index = spec
    zone, start = where
    tz = ZoneInfo(zone)
    fixed = not expr.split()[0].startswith("*") and not expr.split()[1].startswith("*")
    for fire in parse_schedule(expr, zone).upcoming(start, 50):
        seen = fire.astimezone(tz)
        if seen.minute in minutes and seen.hour in hours and day_matches(index, seen.date()):
            if fixed:
                assert seen.fold == 0, f"{expr} fired in the second pass at {seen}"
            continue
        assert fixed, f"{expr} in {zone}: {seen} does not match"
        before = (fire - timedelta(seconds=1)).astimezone(tz)
        assert offset_at(zone, fire) > offset_at(zone, fire - timedelta(seconds=1)), (
            f"{seen}: not after a gap"
        )
        skipped = before.replace(tzinfo=None) + timedelta(seconds=1)
        gap_end = seen.replace(tzinfo=None)
        candidates: list[datetime] = []
        while skipped < gap_end:
            candidates.append(skipped)
            skipped += MINUTE
        assert any(
            c.minute in minutes and c.hour in hours and day_matches(index, c.date()) for c in candidates
        ), f"{expr}: {seen} is after a gap but nothing in the gap matched"


@PROPERTY_SETTINGS
@given(
    minute=st.integers(0, 59),
    hour=st.integers(0, 23),
    where=zone_and_instant(),
)
def test_property_fixed_daily_job_fires_once_per_local_date(
    minute: int, hour: int, where: tuple[str, datetime]
) -> None:
    """(4) A job with one minute and one hour fires on every local calendar date
    exactly once: a gap moves it later on the same date (these zones change
    their clocks in the small hours), a repeated hour does not run it twice."""
    zone, start = where
    fires = parse_schedule(f"{minute} {hour} * * *", zone).upcoming(start, 30)
    dates = [local(zone, fire).date() for fire in fires]
    assert dates == [dates[0] + timedelta(days=k) for k in range(30)]


@PROPERTY_SETTINGS
@given(spec=cron_expr(), where=zone_and_instant(), fraction=st.floats(0, 1, exclude_max=True))
def test_property_latest_at_or_before_agrees_with_next_after(
    spec: tuple[str, frozenset[int], frozenset[int], int], where: tuple[str, datetime], fraction: float
) -> None:
    """(5) latest_at_or_before(next_after(t)) == next_after(t); latest(t) <= t and
    nothing fires in (latest(t), t]; and the answer does not depend on where in
    the quiet stretch before a fire one starts looking."""
    zone, start = where
    schedule = parse_schedule(spec[0], zone)
    nxt = schedule.next_after(start)
    probe = min(start + (nxt - start) * fraction, nxt - timedelta(microseconds=1))
    assert schedule.next_after(probe) == nxt
    assert schedule.latest_at_or_before(nxt) == nxt
    latest = schedule.latest_at_or_before(start)
    assert latest is not None
    assert latest <= start
    assert schedule.next_after(latest) == nxt


@PROPERTY_SETTINGS
@given(seconds=st.integers(1, 3 * 86400), where=zone_and_instant())
def test_property_intervals(seconds: int, where: tuple[str, datetime]) -> None:
    zone, start = where
    interval = timedelta(seconds=seconds)
    schedule = Schedule(text=f"every {seconds}s", timezone=zone, cron=None, interval=interval)
    nxt = schedule.next_after(start)
    assert start < nxt <= start + interval
    assert (nxt - EPOCH) % interval == timedelta(0)
    latest = schedule.latest_at_or_before(start)
    assert latest is not None
    assert latest <= start < latest + interval
    assert schedule.latest_at_or_before(nxt) == nxt


@PROPERTY_SETTINGS
@given(name=st.text(max_size=40), max_seconds=st.integers(0, 7 * 86400), micro=st.integers(0, 999_999))
def test_property_jitter_stable_and_in_range(name: str, max_seconds: int, micro: int) -> None:
    """(6) stable, whole seconds, within [0, max_jitter)."""
    max_jitter = timedelta(seconds=max_seconds, microseconds=micro)
    offset = jitter_offset(name, max_jitter)
    assert offset == jitter_offset(name, max_jitter)
    assert offset.microseconds == 0
    if max_jitter > timedelta(0):
        assert timedelta(0) <= offset < max_jitter
    else:
        assert offset == timedelta(0)


def test_jitter_spreads_and_is_pinned() -> None:
    window = timedelta(hours=1)
    offsets = [jitter_offset(f"job-{i}", window) for i in range(1000)]
    # 1000 names into 3600 slots: about 870 distinct values are expected.
    assert len(set(offsets)) > 800
    tenths = Counter(int(o / window * 10) for o in offsets)
    assert all(60 <= tenths[k] <= 140 for k in range(10)), tenths
    # Pinned: every daemon, process and version must compute the same offsets.
    assert jitter_offset("backup-db", window) == timedelta(seconds=2101)
    assert jitter_offset("vacuum", timedelta(minutes=10)) == timedelta(seconds=582)
    assert jitter_offset("anything", timedelta(seconds=1)) == timedelta(0)
    assert jitter_offset("anything", timedelta(0)) == timedelta(0)
    with pytest.raises(ValueError):
        jitter_offset("anything", timedelta(seconds=-1))


# --------------------------------------------------------------------------
# catch-up


HOURLY = parse_schedule("0 * * * *", "UTC")
GRACE = timedelta(hours=6)


def test_new_job_never_catches_up() -> None:
    now = utc(2026, 5, 1, 12, 0, 20)  # 12:00 is due by 20 s, but the job is new
    assert plan_catch_up(HOURLY, None, now, "latest", GRACE) == CatchUp(
        None, None, None, 0, False, utc(2026, 5, 1, 13)
    )
    assert plan_catch_up(HOURLY, None, now, "skip", GRACE) == CatchUp(
        None, None, None, 0, False, utc(2026, 5, 1, 13)
    )


def test_nothing_due() -> None:
    plan = plan_catch_up(HOURLY, utc(2026, 5, 1, 12), utc(2026, 5, 1, 12, 40), "latest", GRACE)
    assert plan == CatchUp(None, None, None, 0, False, utc(2026, 5, 1, 13))
    # A recorded instant in the future (clock stepped back) is not an error.
    plan = plan_catch_up(HOURLY, utc(2026, 5, 1, 14), utc(2026, 5, 1, 12, 40), "latest", GRACE)
    assert plan == CatchUp(None, None, None, 0, False, utc(2026, 5, 1, 15))


@pytest.mark.parametrize("policy", ["skip", "latest"])
@pytest.mark.parametrize("late", [timedelta(0), timedelta(seconds=2), timedelta(seconds=60)])
def test_on_time_fire_within_tolerance(policy: Literal["skip", "latest"], late: timedelta) -> None:
    now = utc(2026, 5, 1, 12) + late
    plan = plan_catch_up(HOURLY, utc(2026, 5, 1, 11), now, policy, GRACE)
    assert plan == CatchUp(utc(2026, 5, 1, 12), "schedule", None, 0, False, utc(2026, 5, 1, 13))


def test_just_beyond_tolerance_is_catch_up() -> None:
    now = utc(2026, 5, 1, 12, 1, 1)
    plan = plan_catch_up(HOURLY, utc(2026, 5, 1, 11), now, "latest", GRACE)
    assert plan == CatchUp(utc(2026, 5, 1, 12), "catch-up", None, 1, False, utc(2026, 5, 1, 13))
    plan = plan_catch_up(HOURLY, utc(2026, 5, 1, 11), now, "skip", GRACE)
    assert plan == CatchUp(None, None, utc(2026, 5, 1, 12), 1, False, utc(2026, 5, 1, 13))
    # A custom tolerance widens the on-time window.
    plan = plan_catch_up(HOURLY, utc(2026, 5, 1, 11), now, "skip", GRACE, tolerance=timedelta(minutes=5))
    assert plan.trigger == "schedule"


def test_three_hours_down_latest_fires_newest_once() -> None:
    last, now = utc(2026, 5, 1, 9), utc(2026, 5, 1, 12, 30)  # missed 10:00, 11:00, 12:00
    plan = plan_catch_up(HOURLY, last, now, "latest", GRACE)
    assert plan == CatchUp(utc(2026, 5, 1, 12), "catch-up", None, 3, False, utc(2026, 5, 1, 13))


def test_grace_is_measured_from_the_newest_missed_occurrence() -> None:
    last, now = utc(2026, 5, 1, 9), utc(2026, 5, 1, 12, 30)
    # The newest missed (12:00) is 30 min old: inside a 1 h grace even though the
    # outage began 3.5 h ago.
    plan = plan_catch_up(HOURLY, last, now, "latest", HOUR)
    assert (plan.fire, plan.trigger, plan.skipped, plan.missed) == (utc(2026, 5, 1, 12), "catch-up", None, 3)
    # Exactly at the grace boundary still catches up ...
    plan = plan_catch_up(HOURLY, last, now, "latest", timedelta(minutes=30))
    assert plan.trigger == "catch-up"
    # ... just beyond it records one skipped run instead.
    plan = plan_catch_up(HOURLY, last, now, "latest", timedelta(minutes=29))
    assert plan == CatchUp(None, None, utc(2026, 5, 1, 12), 3, False, utc(2026, 5, 1, 13))


def test_skip_policy_records_the_newest_missed() -> None:
    plan = plan_catch_up(HOURLY, utc(2026, 5, 1, 9), utc(2026, 5, 1, 12, 30), "skip", GRACE)
    assert plan == CatchUp(None, None, utc(2026, 5, 1, 12), 3, False, utc(2026, 5, 1, 13))


@pytest.mark.parametrize("policy", ["skip", "latest"])
def test_back_just_in_time_fires_on_schedule_and_reports_older_misses(
    policy: Literal["skip", "latest"],
) -> None:
    plan = plan_catch_up(HOURLY, utc(2026, 5, 1, 9), utc(2026, 5, 1, 12, 0, 20), policy, GRACE)
    assert plan == CatchUp(
        utc(2026, 5, 1, 12), "schedule", utc(2026, 5, 1, 11), 2, False, utc(2026, 5, 1, 13)
    )


@pytest.mark.parametrize("zone", ["UTC", BERLIN])
def test_year_of_downtime_is_fast_and_capped(zone: str) -> None:
    schedule = parse_schedule("* * * * *", zone)
    last = utc(2025, 3, 1)

    began = time.perf_counter()
    on_time = plan_catch_up(schedule, last, utc(2026, 3, 1, 0, 0, 30), "latest", GRACE)
    assert time.perf_counter() - began < 0.2
    assert on_time == CatchUp(
        utc(2026, 3, 1), "schedule", utc(2026, 2, 28, 23, 59), MISSED_CAP, True, utc(2026, 3, 1, 0, 1)
    )

    began = time.perf_counter()
    # With no tolerance and a 10 s grace, 00:05 is 30 s overdue and too old to catch up.
    stale = plan_catch_up(
        schedule, last, utc(2026, 3, 1, 0, 5, 30), "latest", timedelta(seconds=10), tolerance=timedelta(0)
    )
    assert time.perf_counter() - began < 0.2
    assert stale == CatchUp(None, None, utc(2026, 3, 1, 0, 5), MISSED_CAP, True, utc(2026, 3, 1, 0, 6))


def test_missed_count_cap_boundary() -> None:
    schedule = parse_schedule("* * * * *", NEW_YORK)
    last = utc(2026, 1, 1)
    no_tolerance = timedelta(0)
    # Overdue path: exactly MISSED_CAP occurrences in (last, now] is not capped.
    exactly = plan_catch_up(
        schedule, last, last + MINUTE * MISSED_CAP + timedelta(seconds=30), "skip", GRACE, no_tolerance
    )
    assert (exactly.trigger, exactly.missed, exactly.missed_capped) == (None, MISSED_CAP, False)
    over = plan_catch_up(
        schedule, last, last + MINUTE * (MISSED_CAP + 1) + timedelta(seconds=30), "skip", GRACE, no_tolerance
    )
    assert (over.trigger, over.missed, over.missed_capped) == (None, MISSED_CAP, True)
    # On-time path: the on-time fire is not counted as missed.
    exactly = plan_catch_up(
        schedule, last, last + MINUTE * (MISSED_CAP + 1) + timedelta(seconds=30), "skip", GRACE
    )
    assert (exactly.trigger, exactly.missed, exactly.missed_capped) == ("schedule", MISSED_CAP, False)
    over = plan_catch_up(
        schedule, last, last + MINUTE * (MISSED_CAP + 2) + timedelta(seconds=30), "skip", GRACE
    )
    assert (over.trigger, over.missed, over.missed_capped) == ("schedule", MISSED_CAP, True)


def test_catch_up_for_intervals_and_across_dst() -> None:
    every = parse_schedule("every 15m", BERLIN)
    plan = plan_catch_up(every, utc(2026, 5, 1, 9), utc(2026, 5, 1, 10, 20), "latest", GRACE)
    assert plan == CatchUp(utc(2026, 5, 1, 10, 15), "catch-up", None, 5, False, utc(2026, 5, 1, 10, 30))
    # A daily 02:30 Berlin job, daemon asleep over the spring gap, wakes at 03:00:30
    # CEST: the gap-moved 03:00 run is simply on time.
    daily = parse_schedule("30 2 * * *", BERLIN)
    plan = plan_catch_up(daily, utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0, 30), "skip", GRACE)
    assert plan == CatchUp(utc(2026, 3, 29, 1, 0), "schedule", None, 0, False, utc(2026, 3, 30, 0, 30))


def test_catch_up_argument_validation() -> None:
    with pytest.raises(ValueError, match="policy"):
        plan_catch_up(HOURLY, None, utc(2026, 1, 1), "replay", GRACE)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="grace"):
        plan_catch_up(HOURLY, None, utc(2026, 1, 1), "skip", -GRACE)
    with pytest.raises(ValueError, match="tolerance"):
        plan_catch_up(HOURLY, None, utc(2026, 1, 1), "skip", GRACE, tolerance=-MINUTE)
