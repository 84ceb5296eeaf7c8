"""Process-level guarantees: timeouts kill whole process groups, crashes and kill -9 are recorded honestly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from upkeeper.core.history import History, NewRun


def _alive(pid: int) -> bool:
    try:
        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(pids: list[int], timeout: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def _read_pids(path: Path, n: int, timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            pids = [int(x) for x in path.read_text().split()]
            if len(pids) >= n:
                return pids
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear with {n} pid(s)")


def test_timeout_kills_task_and_its_subprocesses(make_config: Any, cli: Any, tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    cfg = make_config({"jobs": {"slow": {"task": "debug.sleep", "timeout": "2s",
                                         "options": {"seconds": 600, "subprocess": True,
                                                     "pid_file": str(pid_file)}}}})
    t0 = time.monotonic()
    res = cli(["--config", cfg, "run", "slow", "--json"])
    took = time.monotonic() - t0
    assert res.code == 1, res.output
    run = res.json()[0]
    assert run["status"] == "error" and "timed out after 2s" in run["summary"]
    assert took < 30
    worker, child = _read_pids(pid_file, 2)
    assert _wait_gone([worker, child]) == [], "the timed-out task left a process behind"
    history = History(f"sqlite:///{tmp_path / 'history.db'}")
    row = history.get_run(run["run_id"])
    assert row is not None and row.status == "error" and row.details.get("timed_out") is True


def test_job_state_is_recorded_with_the_result_and_not_by_a_killed_run(make_config: Any, cli: Any,
                                                                      tmp_path: Path) -> None:
    """A task's job state (a log task's cursors) reached the database the moment the task wrote it, so a run
    killed afterwards (timeout, kill -9 of its parent) moved the cursors on while its figures were never
    recorded: the next run skipped those lines.  The state is now saved in the transaction that records the
    result, and a killed run leaves it as it was."""
    cfg = make_config({"jobs": {
        "slow": {"task": "debug.sleep", "timeout": "2s", "options": {"seconds": 600, "record_state": True}},
        "quick": {"task": "debug.sleep", "options": {"seconds": 0, "record_state": True}}}})
    res = cli(["--config", cfg, "run", "slow", "quick", "--json"])
    assert res.code == 1, res.output
    by_job = {r["job"]: r for r in res.json()}
    assert by_job["slow"]["status"] == "error" and "timed out" in by_job["slow"]["summary"], res.output
    assert by_job["quick"]["status"] == "ok", res.output
    history = History(f"sqlite:///{tmp_path / 'history.db'}")
    assert history.get_state("slow", "slept_at") is None
    quick = history.get_state("quick", "slept_at")
    assert isinstance(quick, str) and datetime.fromisoformat(quick).tzinfo is not None


def test_worker_crash_is_an_error_not_a_crash(make_config: Any, cli: Any) -> None:
    cfg = make_config({"jobs": {"boom": {"task": "debug.fail", "options": {"mode": "crash"}},
                                "after": {"task": "debug.noop"}}})
    res = cli(["--config", cfg, "run", "boom", "after", "--json", "--parallel", "1"])
    assert res.code == 1
    by_job = {r["job"]: r for r in res.json()}
    assert by_job["boom"]["status"] == "error"
    assert "worker process" in by_job["boom"]["summary"] and "died" in by_job["boom"]["summary"]
    assert by_job["after"]["status"] == "ok"  # the next run got a fresh worker


def test_exception_in_task_becomes_error_with_message(make_config: Any, cli: Any) -> None:
    cfg = make_config({"jobs": {"bad": {"task": "debug.fail", "options": {"mode": "exception",
                                                                          "message": "kaputt"}}}})
    res = cli(["--config", cfg, "run", "bad", "--json"])
    assert res.code == 1
    assert res.json()[0]["summary"] == "RuntimeError: kaputt"
    show = cli(["--config", cfg, "show", str(res.json()[0]["run_id"]), "--json"])
    assert "Traceback" in show.json()["log"]  # the traceback is kept in the run's log, not shown as a crash


def _daemon(cfg: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(tmp_path / "daemon.log", "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "upkeeper", "--config", str(cfg), "daemon"],
                                stdout=log, stderr=log, env=env, start_new_session=True)


def _queue_now(history: History, job: str) -> int:
    now = datetime.now(UTC)
    rid = history.create_run(NewRun(job=job, task="debug.sleep", target=None, scheduled_for=now, due_at=now,
                                    trigger="manual", status="pending"), "test:1:1", "test")
    assert rid is not None
    return rid


def _wait_status(history: History, rid: int, statuses: set[str], timeout: float = 40.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = history.get_run(rid)
        if row is not None and row.status in statuses:
            return row.status
        time.sleep(0.1)
    row = history.get_run(rid)
    raise AssertionError(f"run {rid} is {row.status if row else None}, expected {statuses}")


@pytest.mark.slow
def test_kill_9_daemon_mid_run_leaves_no_process_and_run_becomes_interrupted(
    make_config: Any, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pids"
    cfg = make_config({"jobs": {"long": {"task": "debug.sleep", "options": {
        "seconds": 600, "subprocess": True, "pid_file": str(pid_file)}}}})
    history = History(f"sqlite:///{tmp_path / 'history.db'}")
    rid = _queue_now(history, "long")
    daemon = _daemon(cfg, tmp_path)
    try:
        _wait_status(history, rid, {"running"})
        worker, child = _read_pids(pid_file, 2)
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.wait()
        # the worker notices its parent died and takes its whole process group down
        assert _wait_gone([worker, child]) == [], (tmp_path / "daemon.log").read_text()
        assert history.get_run(rid).status == "running"  # type: ignore[union-attr]  # nobody recorded it yet
        daemon = _daemon(cfg, tmp_path)  # restart
        assert _wait_status(history, rid, {"interrupted"}) == "interrupted"
        assert "died" in history.get_run(rid).summary  # type: ignore[union-attr]
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)


@pytest.mark.slow
def test_sigterm_lets_short_runs_finish_and_interrupts_long_ones(make_config: Any, tmp_path: Path) -> None:
    cfg = make_config({
        "daemon": {"shutdown_grace": "3s"},
        "jobs": {"short": {"task": "debug.sleep", "options": {"seconds": 1.5}},
                 "long": {"task": "debug.sleep", "options": {"seconds": 600, "subprocess": True,
                                                              "pid_file": str(tmp_path / "pids")}}},
    })
    history = History(f"sqlite:///{tmp_path / 'history.db'}")
    short, long = _queue_now(history, "short"), _queue_now(history, "long")
    daemon = _daemon(cfg, tmp_path)
    _wait_status(history, short, {"running"})
    _wait_status(history, long, {"running"})
    worker, child = _read_pids(tmp_path / "pids", 2)
    t0 = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=60) == 0
    assert time.monotonic() - t0 < 30
    assert history.get_run(short).status == "ok"  # type: ignore[union-attr]
    assert history.get_run(long).status == "interrupted"  # type: ignore[union-attr]
    assert _wait_gone([worker, child]) == []
    log = (tmp_path / "daemon.log").read_text()
    assert "SIGTERM received" in log and f"1 run(s) interrupted (runs {long};" in log, log
    assert "asked to stop" in history.get_run(long).summary  # type: ignore[union-attr]
