"""write_reports: every run's report has its own file, and pruning never deletes the one just written."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from upkeeper.core.task import TaskContext
from upkeeper.logs.report_html import time_chart
from upkeeper.tasks.logs._common import write_reports

NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


def ctx() -> TaskContext:
    return TaskContext(job="j", task="logs.nginx", clock=lambda: NOW)  # a fixed clock: the same second


def test_two_runs_in_the_same_second_keep_their_own_reports(tmp_path: Path) -> None:
    """Both runs wrote access-<second>.json: run 2 overwrote run 1's report, whose artifact then held run 2's data."""
    first = write_reports(ctx(), tmp_path, "access", {"run": 1}, "<p>1</p>", keep=0)
    second = write_reports(ctx(), tmp_path, "access", {"run": 2}, "<p>2</p>", keep=0)
    paths = [a["path"] for a in first + second]
    assert len(set(paths)) == 4
    for arts, n in ((first, 1), (second, 2)):
        by = {a["format"]: Path(a["path"]) for a in arts}
        assert json.loads(by["json"].read_text()) == {"run": n}
        assert by["html"].read_text() == f"<p>{n}</p>"
    assert json.loads((tmp_path / "latest.json").read_text()) == {"run": 2}


def test_pruning_keeps_the_report_just_written(tmp_path: Path) -> None:
    """keep_reports: 1 sorted the names: the second same-second report (or any report whose name sorts
    before an older one's, e.g. after the clock was set back) was deleted right after it was written."""
    write_reports(ctx(), tmp_path, "access", {"run": 1}, "<p>1</p>", keep=1)
    second = write_reports(ctx(), tmp_path, "access", {"run": 2}, "<p>2</p>", keep=1)
    assert all(Path(a["path"]).exists() for a in second)
    assert sorted(p.name for p in tmp_path.glob("access-*")) == sorted(Path(a["path"]).name for a in second)
    # an older report whose name sorts after this run's (written when the clock was ahead)
    ahead = tmp_path / "access-20310101T000000Z.json"
    ahead.write_text("{}")
    os.utime(ahead, (1, 1))
    third = write_reports(ctx(), tmp_path, "access", {"run": 3}, None, keep=1)
    assert Path(third[0]["path"]).exists() and not ahead.exists()
    assert [p.name for p in tmp_path.glob("access-*.json")] == [Path(third[0]["path"]).name]


def test_time_chart_over_a_long_span_counts_per_day() -> None:
    """A log spanning weeks is drawn per day (a point per hour would be thousands), quiet days as zeros."""
    counts = {"2024-01-01 10:00": 3, "2024-01-01 23:00": 4, "2024-01-03 05:00": 1, "2024-02-20 00:00": 2}
    svg = time_chart(counts, what="requests")
    assert 'aria-label="requests per day"' in svg
    days = re.findall(r"<title>([^<]*)</title>", svg)
    assert days[:3] == ["01/01: 7", "01/02: 0", "01/03: 1"] and days[-1] == "02/20: 2"
    assert len(days) == 31 + 20  # every day from January 1st to February 20th


MARKUP_LOG = (  # request paths and user agents are the client's text: Rich markup in them stays text
    '127.0.0.1 - - [04/Dec/2026:19:39:12 +0000] "GET /a[/b]?id=1%27%20or%201=1-- HTTP/1.1" 200 20 "-" '
    '"sqlmap/1.7 [bold red]x[/]" 0.001\n'
    '127.0.0.1 - - [04/Dec/2026:19:39:13 +0000] "GET /[link=https://evil.example]click[/link] HTTP/1.1" 200 20 '
    '"-" "Mozilla/5.0" 0.001\n')


def test_rich_markup_in_log_lines_is_shown_as_text(cli: Any, make_config: Any, tmp_path: Path) -> None:
    """A request path holding '[/b]' made 'upkeeper logs nginx', the results table of 'upkeeper run' and
    'upkeeper show' raise MarkupError (a traceback after the run was recorded); '[link=…]' made a link."""
    log = tmp_path / "access.log"
    log.write_text(MARKUP_LOG)
    res = cli(["logs", "nginx", str(log), "--format", "combined_timed"])
    assert res.code == 0, res.output
    assert "/a[/b]" in res.out and "/[link=https://evil.example]click[/link]" in res.out
    cfg = make_config({"targets": {"web": {"kind": "nginx", "access_log": str(log)}},
                       "jobs": {"la": {"task": "logs.nginx", "target": "web", "options": {
                           "log_format": "combined_timed", "report_dir": str(tmp_path / "reports")}}}})
    res = cli(["--config", str(cfg), "run", "la"])
    assert res.code in (0, 1) and "MarkupError" not in res.output, res.output
    assert "/a[/b]" in res.out  # the top finding: the SQL injection, with its sample
    res = cli(["--config", str(cfg), "show", "1"])
    assert res.code == 0, res.output
    assert "/a[/b]" in res.out
    res = cli(["--config", str(cfg), "history"])
    assert res.code == 0, res.output
