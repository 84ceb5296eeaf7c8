"""``upkeeper run``: a retry a blackout holds is shown, with its reason, in ``--json`` and in the table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from upkeeper.core.history import History


def _blackout_config(make_config: Any) -> tuple[Path, datetime]:
    # a freeze that begins 2 s from now (local time, UTC): the first attempt runs before it, the retry after
    begins = datetime.now(UTC).replace(microsecond=0, tzinfo=None) + timedelta(seconds=2)
    cfg = make_config({
        "timezone": "UTC",
        "blackouts": {"freeze": {"start": begins.isoformat(sep=" "), "duration": "1h"}},
        "jobs": {"vacuum": {"task": "debug.fail", "options": {"mode": "fail", "message": "lock timeout"},
                            "retries": 2, "retry_delay": "3s"}},
    })
    return cfg, begins


def test_run_json_shows_the_retry_a_blackout_skipped_and_why(make_config: Any, cli: Any, tmp_path: Path) -> None:
    """The failed attempt stays the result (exit 1), and the JSON says its retry was not run: it was recorded
    skipped (run id, attempt 2) because the blackout began during the backoff.  Before, the output showed the
    failure alone, as if retries were exhausted or never configured."""
    cfg, _begins = _blackout_config(make_config)
    res = cli(["--config", cfg, "run", "vacuum", "--json"])
    assert res.code == 1, res.output
    [run] = res.json()
    assert run["status"] == "fail", run
    skipped = run["retry_skipped"]
    assert skipped is not None, run
    assert skipped["attempt"] == 2 and "blackout 'freeze'" in skipped["reason"], skipped
    history = History(f"sqlite:///{tmp_path / 'history.db'}")
    row = history.get_run(skipped["run_id"])
    assert row is not None and (row.status, row.trigger, row.attempt) == ("skipped", "retry", 2), row
    assert row.started_at is None


def test_run_table_shows_the_retry_a_blackout_skipped(make_config: Any, cli: Any) -> None:
    cfg, _begins = _blackout_config(make_config)
    res = cli(["--config", cfg, "run", "vacuum"])
    assert res.code == 1, res.output
    text = " ".join(res.out.split())
    assert "retry 2 skipped" in text and "blackout 'freeze'" in text, res.out
