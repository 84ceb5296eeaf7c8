"""Routes: which channels an event goes to."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from upkeeper.config.notify import (
    ANNOUNCEMENTS,
    SEVERITY_RANK,
    NotificationsConfig,
    Route,
    default_routes,
    stakeholder_channels,
)
from upkeeper.config.notify import _Match as Match
from upkeeper.notify.events import Event


def matches(rule: Match, event: Event) -> bool:
    """Every criterion the rule gives must hold; list criteria match any member."""
    if rule.events is not None and event.topic not in rule.events:
        return False
    if rule.severity is not None and event.severity not in rule.severity:
        return False
    if rule.min_severity is not None and event.rank < SEVERITY_RANK[rule.min_severity]:
        return False
    if rule.jobs is not None and (event.job is None or not any(fnmatch.fnmatchcase(event.job, p) for p in rule.jobs)):
        return False
    if rule.categories is not None and event.category not in rule.categories:
        return False
    return not (rule.tags is not None and not set(rule.tags) & set(event.tags))


class Router:
    def __init__(self, cfg: NotificationsConfig) -> None:
        self.cfg = cfg
        self.routes: list[Route] = cfg.routes if cfg.routes is not None else default_routes(cfg)
        self.stakeholders = stakeholder_channels(cfg)

    def channels_for(self, event: Event) -> list[str]:
        """Channel names, in config order, without duplicates."""
        if event.only_channels is not None:
            chosen: Sequence[str] = event.only_channels
        elif event.topic in ANNOUNCEMENTS:
            chosen = self.stakeholders
        else:
            chosen = [c for r in self.routes if matches(r, event) for c in r.channels]
            chosen = [*chosen, *event.extra_channels]
        return list(dict.fromkeys(c for c in chosen if c in self.cfg.channels))
