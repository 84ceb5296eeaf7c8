"""Retention: restic's GFS semantics, checked against a plain reference implementation over years of random
timestamps (hypothesis), plus the guarantees on top (newest kept, only complete sets count)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from upkeeper.backup.retention import Item, apply_policy
from upkeeper.config.backup import RetentionPolicy


def reference(items: list[Item], p: RetentionPolicy, tz: str) -> set[str]:
    """Plain restic semantics: per rule, the newest backup of each of the newest N periods that have one,
    and the oldest backup while the rule has periods to spare (restic 0.17's ``forget``)."""
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
    if p.keep_within is not None:
        limit = newest_first[0].time - p.keep_within
        keep |= {i.id for i in items if i.time > limit}  # restic: strictly after
    if p.is_empty():
        keep = {i.id for i in items}
    keep.add(newest_first[0].id)  # upkeeper: the newest complete backup is never deleted
    return keep


EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
counts = st.sampled_from([0, 0, 1, 2, 3, 5, 7, 14, -1])
policies = st.builds(
    RetentionPolicy,
    keep_last=counts, keep_hourly=counts, keep_daily=counts, keep_weekly=counts, keep_monthly=counts,
    keep_yearly=counts,
    keep_within=st.one_of(st.none(), st.integers(1, 24 * 400).map(lambda h: timedelta(hours=h))),
    timezone=st.sampled_from([None, "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]),
)
# up to four years of backups, seconds apart to months apart; distinct instants
timestamps = st.lists(st.integers(0, 4 * 366 * 86400), min_size=0, max_size=120, unique=True)


@settings(max_examples=400, deadline=None)
@given(policy=policies, offsets=timestamps, default_tz=st.sampled_from(["UTC", "Europe/London"]))
def test_matches_reference_implementation(policy: RetentionPolicy, offsets: list[int], default_tz: str) -> None:
    items = [Item(f"b{n}", EPOCH + timedelta(seconds=s)) for n, s in enumerate(offsets)]
    decisions = apply_policy(items, policy, default_tz)
    kept = {d.item.id for d in decisions if d.keep}
    assert kept == reference(items, policy, default_tz)
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
    p = RetentionPolicy(keep_daily=0, keep_weekly=0, keep_monthly=0, keep_within=timedelta(days=1))
    assert {d.item.id for d in apply_policy([newest, edge], p) if d.keep} == {"n"}
