"""Grandfather-father-son retention with restic's semantics (``restic forget --keep-*``).

Backups are walked newest first.  ``keep_last`` keeps the N newest.  Each
bucket rule (hourly, daily, weekly, monthly, yearly) keeps a backup when its
period (in the policy's timezone) differs from the period of the last backup
that rule kept, until the rule's count is used up (-1: never).  As restic does
since 0.17, a rule whose count is not used up by the time it reaches the oldest
backup keeps that one too: while the history is shorter than the policy, the
longest history is kept.  ``keep_within`` keeps everything younger than the
duration (strictly), counted back on the calendar from the newest backup that is
not dated in the future (restic's ``1y2m3d4h``: ``m`` is months).
Counts overlap: one backup can satisfy several rules, and every rule that keeps
it is a reason shown by ``backups prune --dry-run``.

On top of restic: the newest backup is always kept, whatever the policy, and so
is the newest one not dated in the future (a clock that was set back must not
make retention delete the backup just taken in favour of future-dated ones).
Callers pass complete backups only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from upkeeper.config.backup import RetentionPolicy


@dataclass(frozen=True)
class Item:
    id: str
    time: datetime  # aware


@dataclass
class Decision:
    item: Item
    keep: bool
    reasons: list[str] = field(default_factory=list)


def _hourly(t: datetime) -> int:
    return t.year * 1_000_000 + t.month * 10_000 + t.day * 100 + t.hour


def _daily(t: datetime) -> int:
    return t.year * 10_000 + t.month * 100 + t.day


def _weekly(t: datetime) -> int:
    y, w, _ = t.isocalendar()
    return y * 100 + w


def _monthly(t: datetime) -> int:
    return t.year * 100 + t.month


def _yearly(t: datetime) -> int:
    return t.year


BUCKETS: tuple[tuple[str, str, Callable[[datetime], int]], ...] = (
    ("keep_hourly", "hourly", _hourly),
    ("keep_daily", "daily", _daily),
    ("keep_weekly", "weekly", _weekly),
    ("keep_monthly", "monthly", _monthly),
    ("keep_yearly", "yearly", _yearly),
)


def apply_policy(items: Sequence[Item], policy: RetentionPolicy, default_tz: str = "UTC",
                 now: datetime | None = None) -> list[Decision]:
    """Decide for every item; returned newest first.  ``now`` (default: the current time) tells which
    backups are dated in the future."""
    tz = ZoneInfo(policy.timezone or default_tz)
    now = now or datetime.now(UTC)
    ordered = sorted(items, key=lambda i: (i.time, i.id), reverse=True)
    if not ordered:
        return []
    if policy.is_empty():  # restic: no policy, nothing is removed
        return [Decision(item, True, ["no retention policy"]) for item in ordered]
    counters = {attr: int(getattr(policy, attr)) for attr, _n, _f in BUCKETS}
    last_seen: dict[str, int | None] = {attr: None for attr, _n, _f in BUCKETS}
    keep_last = policy.keep_last
    # restic measures keep_within from the newest backup not dated in the future; with none such, all are within
    latest = next((i for i in ordered if i.time <= now), None)
    within_from = None
    if policy.keep_within and latest is not None:
        within_from = policy.keep_within.before(latest.time, tz)
    out: list[Decision] = []
    for i, item in enumerate(ordered):
        reasons: list[str] = []
        if keep_last != 0:
            reasons.append("last")
            if keep_last > 0:
                keep_last -= 1
        local = item.time.astimezone(tz)
        oldest = i == len(ordered) - 1
        for attr, label, fn in BUCKETS:
            if counters[attr] == 0:
                continue
            val = fn(local)
            if val != last_seen[attr] or oldest:
                reasons.append(f"{label} {_period_text(label, local)}" if val != last_seen[attr]
                               else f"{label} (oldest backup, count not used up)")
                last_seen[attr] = val
                if counters[attr] > 0:
                    counters[attr] -= 1
        if policy.keep_within and (within_from is None or item.time > within_from):
            reasons.append(f"within {policy.keep_within}")
        if not reasons and (i == 0 or item is latest):
            reasons.append("newest" if i == 0 else "newest not dated in the future")
        out.append(Decision(item, bool(reasons), reasons))
    return out


def _period_text(label: str, t: datetime) -> str:
    if label == "hourly":
        return t.strftime("%Y-%m-%d %H:00")
    if label == "daily":
        return t.strftime("%Y-%m-%d")
    if label == "weekly":
        y, w, _ = t.isocalendar()
        return f"{y}-W{w:02d}"
    if label == "monthly":
        return t.strftime("%Y-%m")
    return t.strftime("%Y")
