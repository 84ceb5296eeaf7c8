"""`upkeeper demo` end to end: real sandbox services, every job once, history queryable afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from conftest import invoke


@pytest.mark.slow
def test_demo_runs_every_job_and_leaves_queryable_history() -> None:
    d = Path(tempfile.mkdtemp(prefix="upk-demo-test-", dir="/tmp"))
    os.chmod(d, 0o755)
    res = subprocess.run([sys.executable, "-m", "upkeeper", "demo", "--dir", str(d / "sb")],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert "Demo results" in res.stdout and "sandbox services stopped" in res.stdout
    cfg = d / "sb" / "upkeeper.yaml"
    jobs = YAML(typ="safe").load(cfg.read_text())["jobs"]
    assert {"vacuum", "db-ping"} <= set(jobs)
    assert {"log-analysis", "error-log", "db-log-analysis"} <= set(jobs)  # the weekly log analysis
    assert {"cache-check", "cache-evict", "cache-metrics", "health", "app-maintenance", "app-cleanup"} <= set(jobs)
    status = invoke(["--config", cfg, "status", "--json"])
    assert status.code == 0
    last = {j["job"]: j["last_run"] for j in status.json()["jobs"]}
    assert set(last) == set(jobs)
    assert all(r is not None and r["status"] in ("ok", "warn") for r in last.values()), last
    # every backup is test-restored: the database's into a scratch database, Redis's into a throw-away
    # redis-server with smoke commands (the demo took a Redis backup and never verified it)
    assert jobs["cache-verify"]["task"] == "backup.verify" and jobs["cache-verify"]["target"] == "cache"
    assert jobs["cache-verify"]["options"]["redis_checks"], jobs["cache-verify"]
    assert last["cache-verify"]["status"] == "ok" and "verified" in last["cache-verify"]["summary"], last
    # the demo's PostgreSQL logs what pgBadger needs and ran a workload: the weekly PostgreSQL log analysis has
    # statements with durations, errors, a lock wait and a deadlock to report (not "no statement durations")
    pg_run = invoke(["--config", cfg, "show", str(last["db-log-analysis"]["id"]), "--json"]).json()
    assert pg_run["metrics"]["statements"] >= 400 and pg_run["metrics"]["errors"] >= 5, pg_run["metrics"]
    assert pg_run["metrics"]["deadlocks"] >= 1 and pg_run["metrics"]["lock_waits"] >= 1, pg_run["metrics"]
    hist = invoke(["--config", cfg, "history", "--json"]).json()
    assert len(hist) >= len(jobs)
    # the services were stopped and their data removed; config and history stay
    assert not (d / "sb" / "postgres").exists()
    assert (d / "sb" / "history.db").exists()
