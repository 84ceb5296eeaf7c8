"""``upkeeper run JOB JOB``: each requested run is reported once, with its own id and status."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def test_a_job_named_twice_reports_both_runs(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """Results were keyed by job name: 'run acc acc --json' printed one run twice and hid the other
    (a run recorded in history, e.g. skipped because the first still held the job)."""
    cfg = make_config({"jobs": {"nap": {"task": "debug.sleep", "options": {"seconds": 0.5}}}})
    for parallel in ("1", "2"):  # one after the other (both run), or at once (the second is skipped)
        r = cli(["--config", str(cfg), "run", "nap", "nap", "--json", "--parallel", parallel])
        assert r.code == 0, r.output
        runs = r.json()
        assert len(runs) == 2 and runs[0]["run_id"] != runs[1]["run_id"], runs
        shown = cli(["--config", str(cfg), "history", "--json"]).json()
        recorded = {h["run_id"] if "run_id" in h else h["id"]: h["status"] for h in shown}
        assert {x["run_id"]: x["status"] for x in runs}.items() <= recorded.items(), (runs, recorded)
