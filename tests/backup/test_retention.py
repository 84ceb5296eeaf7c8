"""Retention: restic's GFS semantics, checked against a plain reference implementation over years of random
timestamps (hypothesis), plus the guarantees on top (newest kept, only complete sets count)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upkeeper.backup.retention import Item, apply_policy
from upkeeper.config.backup import CalendarSpan, RetentionPolicy


def go_add_date(t: datetime, years: int, months: int, days: int) -> datetime:
    """Go's ``time.AddDate`` (what restic's keep-within uses): month overflow carries into years, day overflow
    into months ('1 month after 31 October is 1 December'); the wall clock stays."""
    total = t.year * 12 + t.month - 1 + years * 12 + months
    first = date(total // 12, total % 12 + 1, 1)
    d = date.fromordinal(first.toordinal() + t.day - 1 + days)
    return datetime(d.year, d.month, d.day, t.hour, t.minute, t.second, t.microsecond, tzinfo=t.tzinfo, fold=t.fold)


def reference(items: list[Item], p: RetentionPolicy, tz: str, now: datetime) -> set[str]:
    """Plain restic semantics: per rule, the newest backup of each of the newest N periods that have one,
    and the oldest backup while the rule has periods to spare (restic 0.17's ``forget``); keep_within counted
    back on the calendar from the newest backup not dated after ``now``."""
    if not items:
        return set()
    z = ZoneInfo(p.timezone or tz)
    keep: set[str] = set()
    newest_first = sorted(items, key=lambda i: i.time, reverse=True)
    n = len(items) if p.keep_last == -1 else p.keep_last
    keep |= {i.id for i in newest_first[:n]}
    periods = {
        "keep_hourly": lambda t: (t.year, t.month, t.day, t.hour),
        "keep_daily": lambda t: (t.year, t.month, t.day),
        "keep_weekly": lambda t: tuple(t.isocalendar())[:2],
        "keep_monthly": lambda t: (t.year, t.month),
        "keep_yearly": lambda t: (t.year,),
    }
    for attr, fn in periods.items():
        count = getattr(p, attr)
        if count == 0:
            continue
        newest_in: dict[tuple[int, ...], Item] = {}
        for i in items:
            key = fn(i.time.astimezone(z))
            if key not in newest_in or i.time > newest_in[key].time:
                newest_in[key] = i
        chosen = sorted(newest_in.items(), key=lambda kv: kv[1].time, reverse=True)
        if count > 0:
            chosen = chosen[:count]
        keep |= {i.id for _k, i in chosen}
        # restic >= 0.17: a rule with periods to spare keeps the oldest backup too
        oldest = newest_first[-1]
        older_periods = {fn(i.time.astimezone(z)) for i in newest_first[:-1]}
        if count == -1 or len(older_periods) < count:
            keep.add(oldest.id)
    past = [i for i in newest_first if i.time <= now]
    if p.keep_within:
        w = p.keep_within
        if past:
            local = go_add_date(past[0].time.astimezone(z), -w.years, -w.months, -w.days)
            limit = local.astimezone(UTC) - timedelta(hours=w.hours)
            keep |= {i.id for i in items if i.time > limit}  # restic: strictly after
        else:
            keep |= {i.id for i in items}  # restic: no backup before now, so none is outside the window
    if p.is_empty():
        keep = {i.id for i in items}
    keep.add(newest_first[0].id)  # upkeeper: the newest complete backup is never deleted
    if past:
        keep.add(past[0].id)  # … nor the newest one not dated in the future
    return keep


EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
counts = st.sampled_from([0, 0, 1, 2, 3, 5, 7, 14, -1])
policies = st.builds(
    RetentionPolicy,
    keep_last=counts, keep_hourly=counts, keep_daily=counts, keep_weekly=counts, keep_monthly=counts,
    keep_yearly=counts,
    keep_within=st.one_of(st.none(), st.builds(CalendarSpan, st.sampled_from([0, 0, 1, 2]), st.integers(0, 14),
                                               st.integers(0, 40), st.integers(0, 50))),
    timezone=st.sampled_from([None, "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]),
)
# up to four years of backups, seconds apart to months apart; distinct instants
timestamps = st.lists(st.integers(0, 4 * 366 * 86400), min_size=0, max_size=120, unique=True)


@settings(max_examples=400, deadline=None)
@given(policy=policies, offsets=timestamps, default_tz=st.sampled_from(["UTC", "Europe/London"]),
       now_offset=st.one_of(st.just(10 * 366 * 86400), st.integers(0, 4 * 366 * 86400)))
def test_matches_reference_implementation(policy: RetentionPolicy, offsets: list[int], default_tz: str,
                                          now_offset: int) -> None:
    """``now`` falls anywhere in the history too: backups dated after it are what a clock set back leaves."""
    items = [Item(f"b{n}", EPOCH + timedelta(seconds=s)) for n, s in enumerate(offsets)]
    now = EPOCH + timedelta(seconds=now_offset)
    decisions = apply_policy(items, policy, default_tz, now)
    kept = {d.item.id for d in decisions if d.keep}
    assert kept == reference(items, policy, default_tz, now)
    assert all(bool(d.reasons) == d.keep for d in decisions)


@settings(max_examples=200, deadline=None)
@given(policy=policies, offsets=st.lists(st.integers(0, 4 * 366 * 86400), min_size=1, max_size=60, unique=True))
def test_newest_is_always_kept(policy: RetentionPolicy, offsets: list[int]) -> None:
    items = [Item(f"b{n}", EPOCH + timedelta(seconds=s)) for n, s in enumerate(offsets)]
    decisions = apply_policy(items, policy)
    assert decisions[0].keep and decisions[0].item.time == max(i.time for i in items)


def test_default_policy_over_a_year_of_dailies() -> None:
    """Defaults daily 14, weekly 4, monthly 12 on a year of nightly backups."""
    items = [Item(f"d{n}", datetime(2025, 1, 1, 0, 5, tzinfo=UTC) + timedelta(days=n)) for n in range(365)]
    decisions = apply_policy(items, RetentionPolicy())
    kept = [d for d in decisions if d.keep]
    daily = [d for d in kept if any(r.startswith("daily") for r in d.reasons)]
    assert len(daily) == 14
    weekly = [d for d in kept if any(r.startswith("weekly") for r in d.reasons)]
    monthly = [d for d in kept if any(r.startswith("monthly") for r in d.reasons)]
    assert len(weekly) == 4 and len(monthly) == 12
    # 14 dailies + weeklies/monthlies beyond them (overlaps counted once)
    assert 14 + 1 <= len(kept) <= 14 + 4 + 12
    newest = decisions[0]
    assert newest.keep and "daily 2025-12-31" in newest.reasons and "monthly 2025-12" in newest.reasons


def test_timezone_decides_the_day() -> None:
    # 23:30 and 00:30 UTC are the same day in New York (18:30 and 19:30), different days in UTC
    a = Item("a", datetime(2025, 3, 1, 23, 30, tzinfo=UTC))
    b = Item("b", datetime(2025, 3, 2, 0, 30, tzinfo=UTC))
    z = Item("z", datetime(2025, 2, 27, 12, 0, tzinfo=UTC))  # an earlier day in both
    p_utc = RetentionPolicy(keep_daily=2, keep_weekly=0, keep_monthly=0)
    p_ny = RetentionPolicy(keep_daily=2, keep_weekly=0, keep_monthly=0, timezone="America/New_York")
    assert {d.item.id for d in apply_policy([a, b, z], p_utc) if d.keep} == {"a", "b"}
    assert {d.item.id for d in apply_policy([a, b, z], p_ny) if d.keep} == {"b", "z"}


def test_a_short_history_keeps_its_oldest_backup_as_restic_does() -> None:
    """restic 0.17+: 'If there are not enough snapshots to keep one for each duration related --keep-{within-,}
    option, the oldest snapshot in the group is kept additionally.'  Two backups on one day, keep_daily 7: the
    day's newest and, with six daily counts to spare, the oldest."""
    a = Item("a", datetime(2025, 3, 1, 1, 0, tzinfo=UTC))
    b = Item("b", datetime(2025, 3, 1, 13, 0, tzinfo=UTC))
    c = Item("c", datetime(2025, 3, 1, 7, 0, tzinfo=UTC))
    decisions = apply_policy([a, b, c], RetentionPolicy(keep_daily=7, keep_weekly=0, keep_monthly=0))
    assert {d.item.id: d.keep for d in decisions} == {"b": True, "c": False, "a": True}
    assert decisions[-1].reasons == ["daily (oldest backup, count not used up)"]
    # with the count used up, the oldest goes
    used_up = apply_policy([a, b, c], RetentionPolicy(keep_daily=1, keep_weekly=0, keep_monthly=0))
    assert {d.item.id for d in used_up if d.keep} == {"b"}


def test_keep_within_is_strictly_younger_than_the_duration() -> None:
    newest = Item("n", datetime(2025, 3, 2, 12, 0, tzinfo=UTC))
    edge = Item("e", datetime(2025, 3, 1, 12, 0, tzinfo=UTC))  # exactly one day older: restic drops it
    p = RetentionPolicy(keep_daily=0, keep_weekly=0, keep_monthly=0, keep_within="1d")
    assert {d.item.id for d in apply_policy([newest, edge], p) if d.keep} == {"n"}


def _within(spec: str, tz: str = "UTC") -> RetentionPolicy:
    return RetentionPolicy(keep_daily=0, keep_weekly=0, keep_monthly=0, keep_within=spec, timezone=tz)


def _kept(items: list[Item], p: RetentionPolicy, now: datetime | None = None) -> set[str]:
    return {d.item.id for d in apply_policy(items, p, now=now) if d.keep}


def test_keep_within_reads_restic_durations_m_is_months() -> None:
    """restic's '--keep-within 6m' keeps six months: it must not be read as six minutes (which deleted
    everything but the newest backup)."""
    newest = Item("n", datetime(2025, 9, 1, 12, 0, tzinfo=UTC))
    older = [Item(f"o{k}", newest.time - timedelta(days=30 * k)) for k in range(1, 8)]  # o6 2025-03-05, o7 02-03
    assert _kept([newest, *older], _within("6m")) == {"n", "o1", "o2", "o3", "o4", "o5", "o6"}
    edge = [Item("edge", datetime(2025, 3, 1, 12, 0, tzinfo=UTC)), Item("in", datetime(2025, 3, 1, 12, 1, tzinfo=UTC))]
    assert _kept([newest, *edge], _within("6m")) == {"n", "in"}
    assert _kept([newest, *older], _within("1y2m3d4h")) == {"n", *(o.id for o in older)}
    assert RetentionPolicy(keep_within="1Y6M").keep_within == CalendarSpan(years=1, months=6)
    assert RetentionPolicy(keep_within="2w1d").keep_within == CalendarSpan(days=15)


@pytest.mark.parametrize(("spec", "newest", "edge"), [
    ("1m", datetime(2025, 3, 31, 12, 0), datetime(2025, 3, 3, 12, 0)),  # Go: 31 February is 3 March
    ("1y", datetime(2024, 2, 29, 12, 0), datetime(2023, 3, 1, 12, 0)),  # 29 February 2023 is 1 March
    ("1d", datetime(2025, 3, 30, 12, 0), datetime(2025, 3, 29, 12, 0)),  # 23 elapsed hours in Berlin (DST)
    ("24h", datetime(2025, 3, 30, 12, 0), datetime(2025, 3, 29, 11, 0)),  # hours are elapsed time
])
def test_keep_within_counts_back_on_the_calendar_as_restic(spec: str, newest: datetime, edge: datetime) -> None:
    z = ZoneInfo("Europe/Berlin")
    n, e = newest.replace(tzinfo=z), edge.replace(tzinfo=z)
    items = [Item("n", n), Item("edge", e), Item("after", e + timedelta(seconds=1))]
    assert _kept(items, _within(spec, "Europe/Berlin")) == {"n", "after"}  # strictly younger than the edge


@pytest.mark.parametrize("bad", ["6 minutes", "90min", "1.5d", "3600", "1s", "", "1d1d", 30])
def test_keep_within_refuses_what_restic_would_not_read(bad: Any) -> None:
    with pytest.raises(ValueError, match="keep_within"):
        RetentionPolicy(keep_within=bad)


def test_backups_dated_in_the_future_do_not_cost_the_present_ones() -> None:
    """A clock that ran ahead left backups dated next year. restic measures keep_within from the newest
    backup not in the future; and the backup just taken (the newest not in the future) is kept."""
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    future = [Item(f"f{k}", datetime(2027, 6, 1 + k, 3, 0, tzinfo=UTC)) for k in range(3)]
    present = [Item(f"p{k}", now - timedelta(days=k, minutes=5)) for k in range(4)]
    assert _kept([*future, *present], _within("2d"), now) == {"f0", "f1", "f2", "p0", "p1"}
    last = RetentionPolicy(keep_last=2, keep_daily=0, keep_weekly=0, keep_monthly=0)
    decisions = apply_policy([*future, *present], last, now=now)
    assert {d.item.id for d in decisions if d.keep} == {"f2", "f1", "p0"}
    assert next(d for d in decisions if d.item.id == "p0").reasons == ["newest not dated in the future"]


def test_every_rule_off_deletes_nothing() -> None:
    """Documented: all counts 0 and no keep_within is no policy (restic refuses one), not 'keep the newest'."""
    items = [Item(f"b{k}", datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=k)) for k in range(5)]
    off = RetentionPolicy(keep_daily=0, keep_weekly=0, keep_monthly=0, keep_within="0d")
    assert off.is_empty() and _kept(items, off) == {i.id for i in items}


def test_two_backups_at_the_same_instant_are_decided_the_same_whatever_the_order() -> None:
    """Same started_at (two jobs in one second): one represents the day, the same one every time."""
    t = datetime(2025, 5, 1, 3, 0, tzinfo=UTC)
    a, b = Item("20250501T030000Z-aaaaaa", t), Item("20250501T030000Z-bbbbbb", t)
    p = RetentionPolicy(keep_daily=1, keep_weekly=0, keep_monthly=0)
    assert _kept([a, b], p, t) == _kept([b, a], p, t) == {b.id}


def test_the_docs_keep_only_the_last_five_example_keeps_five() -> None:
    """docs/backups.md: a rule left out keeps its default, so ``{keep_last: 5}`` alone keeps dailies, weeklies and
    monthlies too; the example that switches them off keeps exactly the 5 newest of 60 daily backups."""
    import re
    from pathlib import Path

    from ruamel.yaml import YAML

    doc = (Path(__file__).resolve().parents[2] / "docs" / "backups.md").read_text()
    (example,) = re.findall(r"```yaml\n(retention: \{keep_last: 5.*?)```", doc, re.S)
    items = [Item(f"b{i:02d}", datetime(2026, 1, 1, 3, tzinfo=UTC) + timedelta(days=i)) for i in range(60)]
    now = datetime(2026, 3, 2, tzinfo=UTC)
    only_five = RetentionPolicy.model_validate(YAML(typ="safe").load(example)["retention"])
    assert [d.item.id for d in apply_policy(items, only_five, now=now) if d.keep] == ["b59", "b58", "b57", "b56", "b55"]
    alone = RetentionPolicy.model_validate({"keep_last": 5})
    assert sum(d.keep for d in apply_policy(items, alone, now=now)) > 14  # 14 dailies, weeklies, monthlies
