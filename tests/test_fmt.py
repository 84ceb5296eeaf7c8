"""Durations as people read them (upkeeper.fmt.human_duration)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from upkeeper.fmt import human_duration


@pytest.mark.parametrize(("value", "shown"), [
    (None, "-"), (4.2, "4.2s"), (42, "42s"), (60, "1m"), (61, "1m 1s"), (3600, "1h"), (3725, "1h 2m"),
    (timedelta(days=365), "365d"), (timedelta(days=2, hours=3), "2d 3h"), (-90, "-1m 30s"),
])
def test_human_duration(value: float | timedelta | None, shown: str) -> None:
    """A whole unit is said without its zero remainder ('365d', not '365d 0h': the audit cleanup's summary)."""
    assert human_duration(value) == shown
