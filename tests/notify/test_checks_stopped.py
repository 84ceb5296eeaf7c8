"""notify.checks: a run stopped on request (details.stopped) is neither a run for the missed-run alarm nor an
outcome in the backup success rate; a run interrupted otherwise (its worker killed alone) is both."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from upkeeper.core.history import History, NewRun
from upkeeper.notify import checks

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def test_a_stopped_run_is_no_run_for_missed_nor_the_success_rate_a_killed_one_is(tmp_path: Path) -> None:
    h = History(f"sqlite:///{tmp_path / 'h.db'}")
    try:
        h.claim([NewRun("stopped", "debug.noop", None, NOW - 3 * DAY, status="ok"),
                 NewRun("stopped", "debug.noop", None, NOW - 2 * DAY, status="ok"),
                 NewRun("stopped", "debug.noop", None, NOW - DAY, status="interrupted", details={"stopped": True}),
                 NewRun("killed", "debug.noop", None, NOW - 3 * DAY, status="ok"),
                 NewRun("killed", "debug.noop", None, NOW - 2 * DAY, status="ok"),
                 NewRun("killed", "debug.noop", None, NOW - DAY, status="interrupted")], "o:1:1", "n")
        # missed-run alarm: the stopped run did not run the job; the killed one did (and failed)
        assert checks.last_run_start(h, "stopped") == NOW - 2 * DAY
        assert checks.last_run_start(h, "killed") == NOW - DAY
        rate = checks.success_rate(h, "stopped", NOW, 30 * DAY)
        assert rate is not None and (rate.succeeded, rate.total, rate.pct) == (2, 2, 100.0)
        rate = checks.success_rate(h, "killed", NOW, 30 * DAY)
        assert rate is not None and (rate.succeeded, rate.total) == (2, 3)
    finally:
        h.close()
