"""``upkeeper run --json`` and ``history`` say whether an interrupted run was stopped on request, as show and status do."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from upkeeper.core.history import History


def test_run_json_marks_a_run_stopped_by_sigterm(make_config: Any, cli: Any, tmp_path: Path) -> None:
    """A run SIGTERM stopped is ``interrupted`` with ``"stopped": true`` in ``run --json`` (docs/scheduling.md: its
    status in --json output "also says stopped: true"); 'run --json' had no such key, so a script could not tell a
    stop from a worker killed alone, which is a failure.  A run that finished says ``"stopped": false``."""
    cfg = make_config({"jobs": {"nap": {"task": "debug.sleep", "options": {"seconds": 60}},
                                "quick": {"task": "debug.noop"}}})
    done = cli(["--config", cfg, "run", "quick", "--json"])
    assert done.code == 0 and done.json()[0]["stopped"] is False, done.output
    p = subprocess.Popen([sys.executable, "-m", "upkeeper", "--config", str(cfg), "run", "nap", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    history = History(f"sqlite:///{tmp_path / 'history.db'}")
    try:
        deadline = time.monotonic() + 60
        while p.poll() is None and time.monotonic() < deadline and not history.runs(job="nap",
                                                                                     statuses=["running"]):
            time.sleep(0.05)
        assert p.poll() is None, p.communicate()
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 143, err.decode()
    [shown] = json.loads(out)
    assert (shown["status"], shown["stopped"]) == ("interrupted", True), shown
    [row] = cli(["--config", cfg, "history", "nap", "--json"]).json()
    assert (row["id"], row["status"], row["stopped"]) == (shown["run_id"], "interrupted", True), row


def test_history_status_filter_takes_stopped_and_refuses_unknown_statuses(make_config: Any, cli: Any,
                                                                         tmp_path: Path) -> None:
    """The history table shows a run a stop interrupted as 'stopped': '--status stopped' found nothing ('no runs
    recorded'), and a misspelt status ('--status faild') silently matched nothing; now 'stopped' selects those runs
    and an unknown status is a usage error naming the statuses."""
    from datetime import UTC, datetime

    from upkeeper.core.history import NewRun
    from upkeeper.core.task import Result

    cfg = make_config({"jobs": {"nap": {"task": "debug.noop"}}})
    assert cli(["--config", cfg, "run", "nap"]).code == 0  # creates the history
    history = History(f"sqlite:///{tmp_path / 'history.db'}")
    ids = {}
    for name, details in (("stopped", {"stopped": True}), ("killed", {})):
        now = datetime.now(UTC)
        rid = history.create_run(NewRun(job="nap", task="debug.noop", target=None, scheduled_for=now, due_at=now,
                                        trigger="manual", attempt=1), "test:1:1", "vm")
        assert rid is not None
        history.finish_run(rid, status="interrupted", result=Result(summary=name), finished_at=now, started_at=now,
                           log_excerpt="", details=details)
        ids[name] = rid
    res = cli(["--config", cfg, "history", "--status", "stopped", "--json"])
    assert res.code == 0 and [r["id"] for r in res.json()] == [ids["stopped"]], res.output
    both = cli(["--config", cfg, "history", "--status", "interrupted", "--json"]).json()
    assert sorted(r["id"] for r in both) == sorted(ids.values())
    bad = cli(["--config", cfg, "history", "--status", "faild"])
    assert bad.code == 2 and "unknown --status 'faild'" in bad.err and "stopped" in bad.err, bad.output
