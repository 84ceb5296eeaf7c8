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


def test_a_run_skipped_because_the_job_is_still_running_says_why(cli: Any, make_config: Any,
                                                                 tmp_path: Path) -> None:
    """``upkeeper run JOB`` while another process's run of the job holds its lock is skipped: the history records
    why ('skipped: the previous run of this job is still running (run 1 on NODE)'), but 'run' showed the status
    alone ('summary' "" in --json, an empty summary in the table), leaving the user to guess."""
    import os
    import signal
    import subprocess
    import sys

    from daemon_support import wait_for
    from upkeeper.core.history import OVERLAP_SKIP, History

    cfg = make_config({"jobs": {"nap": {"task": "debug.sleep", "options": {"seconds": 600}}}})
    first = subprocess.Popen([sys.executable, "-m", "upkeeper", "--config", str(cfg), "run", "nap", "--json"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    history = History(f"sqlite:///{tmp_path / 'history.db'}")
    try:
        wait_for("the first run to hold the job", lambda: first.poll() is not None or (
            history.lock_holder("job:nap") is not None), timeout=120)
        assert first.poll() is None
        [running] = history.runs(job="nap", statuses=["running"])
        r = cli(["--config", str(cfg), "run", "nap", "--json"])
        [shown] = r.json()
        assert shown["status"] == "skipped", r.output
        assert shown["summary"].startswith(OVERLAP_SKIP) and f"(run {running.id} on " in shown["summary"], shown
        text = cli(["--config", str(cfg), "run", "nap"])
        assert "still running" in " ".join(text.output.split()), text.output
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        history.close()
