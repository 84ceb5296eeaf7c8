"""Scan helpers started ahead (:mod:`upkeeper.logs.ahead`): ``upkeeper run`` starts a log job's helpers before it
imports anything heavy, and the worker it forks afterwards takes them over and scans with them — the same
figures as a scan by one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from upkeeper.core import adopted, worker
from upkeeper.logs import ahead, parallel
from upkeeper.logs.synth import write_access_log

pytestmark = pytest.mark.skipif(not adopted.supported(), reason="needs pidfds and /proc (Linux 5.3+)")


@pytest.fixture(autouse=True)
def _dismiss() -> Iterator[None]:
    parallel.dismiss_prestarted()
    yield
    parallel.dismiss_prestarted()


def _upkeeper(*args: str) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it (``python -m upkeeper``: the console script's start, early fork included)."""
    return subprocess.run([sys.executable, "-m", "upkeeper", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ahead") / "access.log"
    write_access_log(str(path), parallel.MIN_PARALLEL + (1 << 20))  # just enough for a helper (17 MB)
    return path


def test_upkeeper_run_scans_with_the_helper_it_started_before_forking_its_worker(big_log: Path,
                                                                                  tmp_path: Path) -> None:
    if ahead.cpus() < 2:
        pytest.skip("one CPU: no helper is started ahead")
    cfg = tmp_path / "upkeeper.yaml"
    cfg.write_text(
        f"history: {tmp_path / 'h.db'}\ntargets:\n  web:\n    kind: nginx\n    access_log: {big_log}\n"
        "jobs:\n"
        f"  whole:\n    task: logs.nginx\n    target: web\n"
        f"    options: {{incremental: false, report_dir: {tmp_path / 'two'}}}\n"
        f"  alone:\n    task: logs.nginx\n    target: web\n"
        f"    options: {{incremental: false, workers: 1, report_dir: {tmp_path / 'one'}}}\n")
    runs = {}
    for job in ("whole", "alone"):
        done = _upkeeper("--config", str(cfg), "run", job, "--json")
        assert done.returncode in (0, 1), done.stderr  # (1: the synthetic log's attacks are findings)
        runs[job] = json.loads(done.stdout)[0]["run_id"]
    shown = json.loads(_upkeeper("--config", str(cfg), "show", str(runs["whole"]), "--json").stdout)
    assert ("scanned by 2 processes: 1 helper(s) started before the scan (1 by upkeeper run, before its worker)"
            in shown["log"]), shown["log"]
    alone = json.loads(_upkeeper("--config", str(cfg), "show", str(runs["alone"]), "--json").stdout)
    assert "scanned by" not in alone["log"]

    def report(d: str) -> dict[str, object]:
        got = json.loads((tmp_path / d / "whole" / "latest.json").read_text() if d == "two"
                         else (tmp_path / d / "alone" / "latest.json").read_text())
        return {k: v for k, v in got.items() if k not in ("scan_seconds", "findings", "metrics")}

    assert report("two") == report("one")  # the helper's part counted as the worker's own


def test_a_log_job_gets_its_helpers_started_ahead_and_other_jobs_none(big_log: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ahead, "cpus", lambda: 2)
    monkeypatch.setattr(parallel, "default_workers", lambda: 2)
    cfg = tmp_path / "upkeeper.yaml"
    cfg.write_text(f"jobs:\n  whole:\n    task: logs.nginx\n    options: {{access_log: {big_log}, incremental: false}}\n"
                   "  nop:\n    task: debug.noop\n"
                   f"  pg:\n    task: logs.postgres\n    options: {{log_file: {big_log}, format: stderr}}\n")
    assert worker.start_ahead([str(cfg), "nop", "pg"]) == 0  # (pg: incremental, the default)
    assert parallel._prestarted == []
    assert worker.start_ahead([str(cfg), "whole"]) == 1
    kind, sp = parallel._prestarted[0]
    assert kind == ahead.ACCESS and isinstance(sp.collector, adopted.StderrFile)  # (no thread: it may fork next)
    assert worker.start_ahead([str(tmp_path / "missing.yaml"), "whole"]) == 0  # the CLI says what is wrong


def test_helpers_started_ahead_are_dismissed_when_the_worker_is_not_a_fork(big_log: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker started as a new interpreter (the CLI ran threads: no fork) cannot drive them: they end."""
    monkeypatch.setattr(ahead, "cpus", lambda: 2)
    monkeypatch.setattr(parallel, "default_workers", lambda: 2)
    assert ahead.start([("logs.postgres", {"log_file": str(big_log), "format": "stderr", "incremental": False}, {})]) == 1
    sp = parallel._prestarted[0][1]
    assert parallel._prestarted[0][0] == "upkeeper.logs.pglog"
    parallel.release_forked(False)
    assert parallel._prestarted == [] and sp.popen.wait(timeout=30) == 0


def test_upkeeper_run_reaps_the_helpers_it_started_ahead(big_log: Path, tmp_path: Path) -> None:
    """The helpers are the CLI's children (their CPU time counts in its ``time`` and a benchmark's RUSAGE_CHILDREN
    only once it reaps them): none is left behind to be reaped by another (here a subreaper, as init would)."""
    if ahead.cpus() < 2:
        pytest.skip("one CPU: no helper is started ahead")
    cfg = tmp_path / "upkeeper.yaml"
    cfg.write_text(f"history: {tmp_path / 'h.db'}\ntargets:\n  web:\n    kind: nginx\n    access_log: {big_log}\n"
                   f"jobs:\n  whole:\n    task: logs.nginx\n    target: web\n"
                   f"    options: {{incremental: false, report_dir: {tmp_path}}}\n")
    code = (
        "import ctypes, os, subprocess, sys, time\n"
        "assert ctypes.CDLL(None).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER\n"
        f"rc = subprocess.run([sys.executable, '-m', 'upkeeper', '--config', {str(cfg)!r}, 'run', 'whole', '--json'],"
        " stdout=subprocess.DEVNULL).returncode\n"
        "time.sleep(1)\n"
        "left = []\n"
        "while True:\n"
        "    try:\n"
        "        pid, _ = os.waitpid(-1, os.WNOHANG)\n"
        "    except ChildProcessError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        left.append('running')\n"
        "        break\n"
        "    left.append(pid)\n"
        "print(rc, left)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    rc, left = out.stdout.split(maxsplit=1)
    assert rc in ("0", "1"), out.stdout + out.stderr  # (1: the synthetic log's attacks are findings)
    assert left.strip() == "[]", left  # (the old code left the helper's zombie to the subreaper)


def test_a_run_refused_after_its_helper_began_reading_ahead_leaves_nothing_behind(big_log: Path,
                                                                                   tmp_path: Path) -> None:
    """``upkeeper run`` starts the helper (which reads the log ahead) before it validates the config: a config
    error found afterwards ends the command, and with it the helper; its claim file is removed."""
    if ahead.cpus() < 2:
        pytest.skip("one CPU: no helper is started ahead")
    temp = tmp_path / "tmp"
    temp.mkdir()
    cfg = tmp_path / "upkeeper.yaml"
    cfg.write_text(f"history: {tmp_path / 'h.db'}\ntargets:\n  web:\n    kind: nginx\n    access_log: {big_log}\n"
                   f"jobs:\n  whole:\n    task: logs.nginx\n    target: web\n"
                   f"    options: {{incremental: false, report_dir: {tmp_path}}}\n"
                   "  broken:\n    task: logs.nginx\n    target: nowhere\n")
    done = subprocess.run([sys.executable, "-m", "upkeeper", "--config", str(cfg), "run", "whole"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "TMPDIR": str(temp)})
    assert done.returncode == 2 and "nowhere" in done.stdout + done.stderr, done.stdout + done.stderr
    deadline = time.monotonic() + 30
    while True:
        helpers = [p for p in psutil.process_iter(["cmdline", "environ"])
                   if "upkeeper.logs.scanworker" in (p.info["cmdline"] or [])
                   and (p.info["environ"] or {}).get("TMPDIR") == str(temp)]
        if not helpers:
            break
        assert time.monotonic() < deadline, helpers
        time.sleep(0.1)
    assert sorted(temp.iterdir()) == []  # (no claim file, no stderr file, no partial result)
