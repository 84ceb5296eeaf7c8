"""A week of logs read as the weekly procedure reads them: runs every few hours, logrotate at midnight
(rename + create, copytruncate, delaycompress, dateext), a day without runs (two rotations between two
runs), and a real ``upkeeper run`` killed with SIGKILL while it reads.  The incremental runs' figures
summed equal one run over the whole week's files, which equals GoAccess on the concatenated week."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from logs.goaccess_helpers import goaccess, goaccess_numbers
from proc_support import worker_with_open
from tasks.logweek import Week
from upkeeper.logs.svg import _fmt

INCREMENTAL = {"access": "logs.nginx", "errors": "logs.errors", "pg": "logs.postgres"}
KILLED = {103: "errors", 127: "access"}
PG_PREFIX = "%m [%p] %e "


def week_config(make_config: Any, w: Week, tmp_path: Path) -> Path:
    def jobs(suffix: str, incremental: bool) -> dict[str, Any]:
        common = {"incremental": incremental, "report_dir": str(tmp_path / "reports"), "top": 500}
        return {
            f"access{suffix}": {"task": "logs.nginx", "target": "web", "options": {
                "log_format": "combined_timed", **common}},
            f"errors{suffix}": {"task": "logs.errors", "target": "web", "options": {
                "app_logs": [str(w.app)], **common}},
            f"pg{suffix}": {"task": "logs.postgres", "target": "db", "options": {
                "log_file": str(w.pg), "log_line_prefix": PG_PREFIX, **common}},
        }

    path: Path = make_config({
        "targets": {"web": {"kind": "nginx", "access_log": str(w.access), "error_log": str(w.error)},
                    "db": {"kind": "postgres", "host": "127.0.0.1", "port": 1}},  # never contacted
        "jobs": {**jobs("", True), **jobs("-batch", False)},
    })
    return path


def run(cli: Any, cfg: Path, job: str) -> dict[str, Any]:
    res = cli(["--config", str(cfg), "run", job, "--json"])
    assert res.code in (0, 1), res.output
    out: dict[str, Any] = res.json()[0]
    assert out["status"] in ("ok", "warn", "fail") and "report" in out["summary"], out
    return out


def report(r: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(next(a["path"] for a in r["artifacts"] if a["format"] == "json"))
                                      .read_text())
    return data


class Figures:
    """The figures one job's runs add up to."""

    def __init__(self) -> None:
        self.metrics: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()

    def add(self, job: str, r: dict[str, Any]) -> None:
        m, rep = r["metrics"], report(r)
        if job == "access":
            for k in ("lines", "requests", "invalid", "bandwidth_bytes"):
                self.metrics[k] += int(m[k])
            self.counts.update({f"status {k}": v for k, v in rep["status"].items()})
            self.counts.update({f"hour {k}": v for k, v in rep["hourly"].items()})
        elif job == "errors":
            for k in ("nginx_lines", "nginx_errors", "nginx_upstream_errors", "exceptions", "app_error_lines"):
                self.metrics[k] += int(m.get(k, 0))
            self.counts.update({f"level {k}": v for k, v in rep["nginx"]["levels"].items()})
            self.counts.update({f"class {c['class']}": c["count"] for c in rep["nginx"]["classes"]})
            self.counts.update({f"exc {g['type']} {g['message']}": g["count"] for g in rep["app"]["exception_groups"]})
        else:
            for k in ("lines", "statements", "errors", "statement_ms_total"):
                self.metrics[k] += round(m[k] * 1000) if k == "statement_ms_total" else int(m[k])  # µs: exact sums
            self.counts.update({f"sqlstate {k}": v for k, v in rep["errors"]["by_sqlstate"].items()})
            self.counts.update({f"kind {k}": v for k, v in rep["statements"]["by_kind"].items()})
            self.counts.update({f"fp {q['fingerprint']}": q["count"] for q in rep["most_frequent"]})
            self.counts.update({f"pghour {k}": v for k, v in rep["by_hour"].items()})


def kill_while_reading(cfg: Path, job: str, log: Path) -> None:
    """Start a real ``upkeeper run job`` and SIGKILL it while its worker reads ``log``; wait for the worker
    to be gone too."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen([sys.executable, "-m", "upkeeper", "--config", str(cfg), "run", job],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 30
    worker = None
    while worker is None:
        assert proc.poll() is None, "the run ended before it read the log: make the log bigger"
        assert time.monotonic() < deadline, "the run never read the log"
        worker = worker_with_open(proc.pid, log)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def concatenated(live: Path) -> bytes:
    """Every file of a log, oldest first, decompressed: what ``zcat -f access.log.*.gz access.log.1 access.log``
    gives."""
    from upkeeper.logs.sources import discover

    return b"".join(gzip.decompress(Path(f.path).read_bytes()) if f.gz else Path(f.path).read_bytes()
                    for f in discover(str(live)))


def history_runs(tmp_path: Path, job: str) -> list[tuple[int, str]]:
    with sqlite3.connect(tmp_path / "history.db") as db:
        return [(int(i), str(st)) for i, st in db.execute("SELECT id, status FROM runs WHERE job = ? ORDER BY id",
                                                          (job,))]


def metric_samples(tmp_path: Path, job: str, name: str) -> list[tuple[int, float]]:
    with sqlite3.connect(tmp_path / "history.db") as db:
        return [(int(i), float(v)) for i, v in db.execute(
            "SELECT run_id, value FROM metric_samples WHERE job = ? AND name = ? ORDER BY run_id", (job, name))]


def chart_values(page: str, title: str) -> list[str]:
    m = re.search(r'<svg class="chart"[^>]*aria-label="' + re.escape(title) + r'".*?</svg>', page, re.S)
    assert m, f"no chart {title!r}"
    return [t.rsplit(": ", 1)[1] for t in re.findall(r"<circle [^>]*><title>([^<]*)</title></circle>", m.group(0))]


def test_a_week_of_incremental_runs_adds_up_to_one_run_over_the_week(cli: Any, make_config: Any,
                                                                     tmp_path: Path) -> None:
    w = Week(tmp_path / "log")
    cfg = week_config(make_config, w, tmp_path)
    figures = {job: Figures() for job in INCREMENTAL}
    results: dict[str, list[dict[str, Any]]] = {job: [] for job in INCREMENTAL}
    for hour in range(7 * 24):
        if hour and hour % 24 == 0:
            w.rotate(w.start + timedelta(hours=hour))
        w.write_hour(hour)
        if hour % 8 != 7 or 44 <= hour < 75:  # no runs for a day and a half: two rotations between two runs
            continue
        if hour in KILLED:  # a busy hour, and a run killed while it reads it
            job = KILLED[hour]
            w.burst(hour, access=4_000 if job == "access" else 0, app=3_000 if job == "errors" else 0)
            kill_while_reading(cfg, job, w.access if job == "access" else w.app)
        for job in INCREMENTAL:
            r = run(cli, cfg, job)
            figures[job].add(job, r)
            results[job].append(r)
    assert figures["access"].metrics["lines"] == len(w.written["access.log"])
    assert figures["errors"].metrics["nginx_lines"] == len(w.written["error.log"])

    # one run over every file of the week says the same as the runs together
    batch = {job: run(cli, cfg, f"{job}-batch") for job in INCREMENTAL}
    for job in INCREMENTAL:
        whole = Figures()
        whole.add(job, batch[job])
        assert figures[job].metrics == whole.metrics, job
        assert figures[job].counts == whole.counts, job
    with sqlite3.connect(tmp_path / "history.db") as db:
        (hours,) = db.execute("SELECT value FROM job_state WHERE job = 'access' AND key = 'access_hours'").fetchone()
    assert json.loads(hours) == report(batch["access"])["hourly"]

    # and GoAccess on the week's files put end to end
    week = tmp_path / "week-access.log"
    week.write_bytes(concatenated(w.access))
    assert week.read_bytes().count(b"\n") == len(w.written["access.log"])
    ga = goaccess_numbers(goaccess(week, tmp_path))
    rep = report(batch["access"])
    assert (ga["total"], ga["valid"], ga["failed"], ga["visitors"], ga["bandwidth"]) == (
        rep["lines"], rep["requests"], rep["invalid"], rep["visitors"], rep["bandwidth"])
    assert ga["status"] == {str(k): v for k, v in rep["status"].items()}
    assert [(r[0], r[3]) for r in ga["requests"][:10]] == [(r["data"], r["hits"]) for r in rep["goaccess"]["requests"][:10]]

    # history: one sample per run that finished, none from the killed runs (recorded as interrupted)
    for job in INCREMENTAL:
        runs = history_runs(tmp_path, job)
        killed = [i for i, st in runs if st == "interrupted"]
        assert len(killed) == list(KILLED.values()).count(job), runs
        assert [st for _, st in runs if st not in ("ok", "warn", "fail", "interrupted")] == []
        name = {"access": "requests", "errors": "exceptions", "pg": "statements"}[job]
        samples = metric_samples(tmp_path, job, name)
        assert [v for _, v in samples] == [r["metrics"][name] for r in results[job]]
        assert not {i for i, _ in samples} & set(killed)
    # the last report's trend charts are those runs
    last = results["access"][-1]
    page = Path(next(a["path"] for a in last["artifacts"] if a["format"] == "html")).read_text()
    assert chart_values(page, "requests per run") == [
        _fmt(r["metrics"]["requests"]) for r in results["access"][:-1]] + [_fmt(last["metrics"]["requests"])]
