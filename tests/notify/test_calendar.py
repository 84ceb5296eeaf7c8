"""Windows and blackouts in time: RRULEs, one-off periods, DST (Europe/Berlin), properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from upkeeper.config.windows import BlackoutConfig, WindowConfig
from upkeeper.notify.calendar import Period, Recurrence, local_to_utc, recurrence

Z = UTC


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=Z)  # type: ignore[misc]


def rec(name: str = "w", **spec: Any) -> Recurrence:
    return recurrence(name, WindowConfig.model_validate(spec))


def test_first_sunday_of_the_month_utc() -> None:
    r = rec(rrule="FREQ=MONTHLY;BYDAY=1SU", start="02:00", duration="4h", timezone="UTC")
    assert r.next_start(utc(2025, 3, 3)) == Period(utc(2025, 4, 6, 2), utc(2025, 4, 6, 6), "w")
    assert [p.start.day for p in r.upcoming(utc(2025, 1, 1), 3)] == [5, 2, 2]  # Jan 5, Feb 2, Mar 2
    assert r.active(utc(2025, 4, 6, 5, 59)) is not None
    assert r.active(utc(2025, 4, 6, 6, 0)) is None  # the end is exclusive
    assert r.active(utc(2025, 4, 6, 1, 59)) is None


def test_start_in_the_spring_forward_gap_moves_to_the_first_valid_instant() -> None:
    r = rec(rrule="FREQ=DAILY", start="02:30", duration="1h", timezone="Europe/Berlin")
    days = {p.start.date().isoformat(): (p.start, p.end) for p in r.periods(utc(2025, 3, 28), utc(2025, 4, 1))}
    assert days["2025-03-29"] == (utc(2025, 3, 29, 1, 30), utc(2025, 3, 29, 2, 30))  # 02:30 CET
    assert days["2025-03-30"] == (utc(2025, 3, 30, 1, 0), utc(2025, 3, 30, 2, 0))  # 02:30 is skipped → 03:00 CEST
    assert days["2025-03-31"] == (utc(2025, 3, 31, 0, 30), utc(2025, 3, 31, 1, 30))  # 02:30 CEST


def test_fall_back_wall_end_versus_duration() -> None:
    wall = rec(rrule="FREQ=WEEKLY;BYDAY=SU", start="02:00", end="06:00", timezone="Europe/Berlin")
    real = rec(rrule="FREQ=WEEKLY;BYDAY=SU", start="02:00", duration="4h", timezone="Europe/Berlin")
    # 2025-10-26: 03:00 CEST → 02:00 CET; 02:00 happens twice: the window starts at the first one
    pw = wall.next_start(utc(2025, 10, 25))
    pr = real.next_start(utc(2025, 10, 25))
    assert pw is not None and pr is not None
    assert pw.start == pr.start == utc(2025, 10, 26, 0, 0)  # 02:00 CEST
    assert pw.end == utc(2025, 10, 26, 5, 0)  # 06:00 CET on the wall: 5 real hours that night
    assert pr.end == utc(2025, 10, 26, 4, 0)  # 4 real hours: 05:00 CET
    # the week after, both are 02:00–06:00 CET
    nxt = wall.next_start(pw.end)
    assert nxt == Period(utc(2025, 11, 2, 1), utc(2025, 11, 2, 5), "w")


def test_a_period_the_clocks_change_in_names_both_zones() -> None:
    """'upkeeper windows', notices and refusals show a period as local times; on the night the clocks go back an
    hour from 02:30 CEST read '02:30–02:30 CET', as if it lasted nothing: the start's zone is named too."""
    from upkeeper.notify.policy import describe

    hour = rec(rrule="FREQ=DAILY", start="02:30", duration="1h", timezone="Europe/Berlin")
    p = hour.next_start(utc(2025, 10, 25, 12))
    assert p is not None and p.end - p.start == timedelta(hours=1)
    assert describe(p, "Europe/Berlin") == "2025-10-26 02:30 CEST–02:30 CET"
    q = hour.next_start(p.end)
    assert q is not None and describe(q, "Europe/Berlin") == "2025-10-27 02:30–03:30 CET"


def test_business_hours_blackout_across_dst() -> None:
    b = recurrence("biz", BlackoutConfig.model_validate(
        {"days": ["mon", "tue", "wed", "thu", "fri"], "hours": "09:00-18:00", "timezone": "Europe/Berlin"}))
    assert b.active(utc(2025, 3, 28, 7, 30)) is None  # Fri 08:30 CET
    assert b.active(utc(2025, 3, 28, 8, 0)) == Period(utc(2025, 3, 28, 8), utc(2025, 3, 28, 17), "biz")
    assert b.active(utc(2025, 3, 29, 10)) is None  # Saturday
    assert b.active(utc(2025, 3, 31, 7, 0)) == Period(utc(2025, 3, 31, 7), utc(2025, 3, 31, 16), "biz")  # CEST
    assert b.active(utc(2025, 3, 31, 16, 0)) is None  # 18:00 CEST


def test_overnight_hours_and_one_off_periods() -> None:
    night = recurrence("n", BlackoutConfig.model_validate(
        {"days": ["sat"], "hours": "22:00-06:00", "timezone": "UTC"}))
    assert night.active(utc(2025, 3, 30, 5, 59)) is not None  # Sunday morning, from Saturday night
    assert night.active(utc(2025, 3, 30, 22, 0)) is None  # Sunday night is not listed
    freeze = recurrence("x", BlackoutConfig.model_validate(
        {"start": "2025-12-20", "end": "2026-01-04", "timezone": "Europe/Berlin"}))
    assert freeze.active(utc(2026, 1, 4, 22, 59)) is not None  # the end date is inclusive (CET)
    assert freeze.active(utc(2026, 1, 4, 23, 0)) is None
    assert freeze.active(utc(2025, 12, 19, 22, 59)) is None
    one = rec(start="2025-06-01 22:00", end="2025-06-02 01:30", timezone="America/New_York")
    assert one.next_start(utc(2025, 1, 1)) == Period(utc(2025, 6, 2, 2), utc(2025, 6, 2, 5, 30), "w")
    assert one.next_start(utc(2025, 6, 3)) is None


def test_local_to_utc_rules() -> None:
    from zoneinfo import ZoneInfo

    tz = ZoneInfo("Europe/Berlin")
    assert local_to_utc(datetime(2025, 3, 30, 2, 15), tz) == utc(2025, 3, 30, 1, 0)  # gap → its end
    assert local_to_utc(datetime(2025, 10, 26, 2, 15), tz) == utc(2025, 10, 26, 0, 15)  # repeat → first
    assert local_to_utc(datetime(2025, 10, 26, 2, 15), tz, prefer_late=True) == utc(2025, 10, 26, 1, 15)


@pytest.mark.parametrize("spec, message", [
    ({"rrule": "FREQ=MONTHLY;BYDAY=1SU", "start": "2am", "duration": "1h"}, "invalid time of day"),
    ({"rrule": "FREQ=SOMETIMES", "start": "02:00", "duration": "1h"}, "invalid rrule"),
    ({"rrule": "BYDAY=1SU", "start": "02:00", "duration": "1h"}, "FREQ="),
    ({"rrule": "FREQ=MINUTELY", "start": "02:00", "duration": "1h"}, "at most hourly"),
    ({"rrule": "FREQ=DAILY", "start": "02:00"}, "give 'end' or 'duration'"),
    ({"rrule": "FREQ=DAILY", "start": "02:00", "end": "03:00", "duration": "1h"}, "not both"),
    ({"start": "2025-06-01 22:00", "end": "2025-06-01 21:00"}, "after 'start'"),
    ({"start": "June 1st", "duration": "1h"}, "invalid date/time"),
    ({"days": ["mon"], "hours": "9-17"}, "invalid time of day"),
    ({"days": ["mon"]}, "needs 'hours'"),
    ({"rrule": "FREQ=DAILY", "start": "02:00", "duration": "1h", "timezone": "Europe/Berln"}, "Europe/Berlin"),
])
def test_bad_specs_say_what_is_wrong(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        WindowConfig.model_validate(spec)
    assert message in str(exc.value)


SPECS = [
    {"rrule": "FREQ=MONTHLY;BYDAY=1SU", "start": "02:00", "duration": "4h", "timezone": "Europe/Berlin"},
    {"rrule": "FREQ=DAILY", "start": "02:30", "end": "03:15", "timezone": "Europe/Berlin"},
    {"rrule": "FREQ=WEEKLY;INTERVAL=2;BYDAY=SA", "start": "23:00", "end": "01:00", "timezone": "America/New_York"},
    {"days": ["mon", "wed", "fri"], "hours": "09:00-18:00", "timezone": "Australia/Lord_Howe"},
]


@settings(max_examples=60, deadline=None)
@given(spec=st.sampled_from(SPECS),
       at=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2026, 12, 31), timezones=st.just(Z)))
def test_active_and_next_start_agree_with_the_periods(spec: dict[str, Any], at: datetime) -> None:
    r = rec(**spec)
    act = r.active(at)
    if act is not None:
        assert act.start <= at < act.end
    nxt = r.next_start(at)
    assert nxt is not None and nxt.start >= at and nxt.end > nxt.start
    # nothing starts between `at` and the next start
    between = [p for p in r.periods(at, nxt.start) if at <= p.start < nxt.start]
    assert between == []
    # a period is open at `at` exactly when some listed period contains it
    around = list(r.periods(at - timedelta(days=3), at + timedelta(days=3)))
    assert (act is not None) == any(p.contains(at) for p in around)


@settings(max_examples=150, deadline=None)
@given(rrule=st.one_of(st.none(), st.text(max_size=40), st.sampled_from(["FREQ=DAILY", "FREQ=MONTHLY;BYDAY=1SU"])),
       start=st.one_of(st.none(), st.text(max_size=20), st.sampled_from(["02:00", "2025-06-01 22:00"])),
       end=st.one_of(st.none(), st.text(max_size=20), st.sampled_from(["06:00", "2025-06-02"])),
       duration=st.one_of(st.none(), st.sampled_from(["4h", "0s", "-1h", "x"])),
       hours=st.one_of(st.none(), st.text(max_size=15), st.just("09:00-18:00")),
       days=st.one_of(st.none(), st.just(["mon"]), st.just([])))
def test_period_specs_either_load_or_raise_a_validation_error(rrule, start, end, duration, hours, days) -> None:
    spec = {k: v for k, v in {"rrule": rrule, "start": start, "end": end, "duration": duration, "hours": hours,
                              "days": days}.items() if v is not None}
    try:
        cfg = WindowConfig.model_validate(spec)
    except ValidationError:
        return
    r = recurrence("fuzz", cfg)  # a spec that validates always yields a usable recurrence
    r.next_start(utc(2025, 1, 1))
    r.active(utc(2025, 6, 1, 23))


def test_an_rrule_until_in_utc_as_rfc_5545_asks_ends_the_recurrence_at_that_instant() -> None:
    """RFC 5545 § 3.3.10: with a DTSTART in a time zone (a window's start is local to its timezone), UNTIL is given
    in UTC ('…Z').  The config check refused it: 'RRULE UNTIL values must be specified in UTC when DTSTART is
    timezone-aware' -- for an UNTIL that was in UTC."""
    spec = {"rrule": "FREQ=WEEKLY;BYDAY=SU;UNTIL=20250316T010000Z", "start": "02:00", "duration": "1h",
            "timezone": "Europe/Berlin"}
    r = rec(**spec)  # Sundays 02:00 CET = 01:00Z: March 16 is the last
    assert [p.start for p in r.periods(utc(2025, 3, 1), utc(2025, 4, 1))] == [
        utc(2025, 3, 2, 1), utc(2025, 3, 9, 1), utc(2025, 3, 16, 1)]
    assert r.next_start(utc(2025, 3, 16, 2)) is None
    # the local form (a floating UNTIL, in the window's timezone) still works
    local = rec(**{**spec, "rrule": "FREQ=WEEKLY;BYDAY=SU;UNTIL=20250316T020000"})
    assert [p.start for p in local.periods(utc(2025, 3, 1), utc(2025, 4, 1))][-1] == utc(2025, 3, 16, 1)
    with pytest.raises(ValidationError, match="invalid rrule"):
        WindowConfig.model_validate({**spec, "rrule": "FREQ=WEEKLY;UNTIL=2025-03-16Z"})
