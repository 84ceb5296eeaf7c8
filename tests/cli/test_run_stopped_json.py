"""``upkeeper run --json`` says whether an interrupted run was stopped on request, as history, show and status do."""

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
