"""logs.postgres's head start: ``upkeeper run``'s worker starts the scan's helpers, with the parser of the format
the job names or the log's file name tells, for a whole read of a big enough log_file — and nothing else."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from upkeeper.core import worker
from upkeeper.logs import ahead, parallel, pgformat
from upkeeper.tasks.logs.postgres import PostgresLogs

LINE = b"2024-03-01 10:00:00.000 UTC [42] app@db LOG:  duration: 1.5 ms  statement: SELECT 1\n"


@pytest.fixture(autouse=True)
def _dismiss(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(ahead, "cpus", lambda: 2)
    for fmt, (kind, _min) in list(pgformat.SCANNERS.items()):  # (a real stderr log's is 12 MB, csvlog's 8 MB)
        monkeypatch.setitem(pgformat.SCANNERS, fmt, (kind, 1 << 20))
    parallel.dismiss_prestarted()
    yield
    parallel.dismiss_prestarted()


def _log(tmp_path: Path, name: str, size: int = 1_200_000) -> str:
    path = tmp_path / name
    path.write_bytes(LINE * (size // len(LINE) + 1))
    return str(path)


def _kinds() -> list[str]:
    return [k for k, _sp in parallel._prestarted]


@pytest.mark.parametrize(("name", "fmt", "kind"), [
    ("postgresql.log", "auto", "upkeeper.logs.pglog"),
    ("postgresql.csv", "auto", "upkeeper.logs.pgstruct"),
    ("postgresql.json", "auto", "upkeeper.logs.pgstruct"),
    ("postgresql.log", "csvlog", "upkeeper.logs.pgstruct"),
    ("postgresql.csv", "stderr", "upkeeper.logs.pglog"),
])
def test_a_big_whole_read_gets_helpers_for_its_format(tmp_path: Path, name: str, fmt: str, kind: str) -> None:
    PostgresLogs.head_start({"log_file": _log(tmp_path, name), "format": fmt, "incremental": False}, {})
    assert _kinds() == [kind]


def test_a_syslog_file_gets_helpers_for_syslog(tmp_path: Path) -> None:
    """format auto on a file whose first lines are syslog lines (format syslog too): the syslog reader's helpers."""
    path = tmp_path / "messages"
    path.write_bytes(b"Dec  7 08:00:00 db1 postgres[42]: [7-1] app@db LOG:  duration: 1.5 ms  statement: SELECT 1\n"
                     * 15_000)
    for fmt in ("auto", "syslog"):
        parallel.dismiss_prestarted()
        PostgresLogs.head_start({"log_file": str(path), "format": fmt, "incremental": False}, {})
        assert _kinds() == ["upkeeper.logs.pgsyslog"], fmt


@pytest.mark.parametrize("options", [
    {"incremental": True},
    {},  # incremental by default
    {"incremental": False, "workers": 1},
    {"incremental": False, "log_file": None},  # the server is asked where its log is: not before the run
    {"incremental": False, "log_file": "/var/log/postgresql/*.log"},
    {"incremental": False, "log_file": ["a"]},
])
def test_no_helper_where_the_run_may_not_want_one(tmp_path: Path, options: dict[str, Any]) -> None:
    opts = {"log_file": _log(tmp_path, "postgresql.log"), **options}
    if opts.get("log_file") is None:
        del opts["log_file"]
    PostgresLogs.head_start(opts, {})
    assert _kinds() == []


def test_a_value_the_run_would_refuse_changes_nothing_here(tmp_path: Path) -> None:
    """``workers: two`` fails the run's validation; the head start takes the default (its helpers are ended)."""
    PostgresLogs.head_start({"log_file": _log(tmp_path, "postgresql.log"), "incremental": False, "workers": "two",
                             "format": 7, "rotated": "maybe"}, {})
    assert _kinds() == ["upkeeper.logs.pglog"]


def test_a_small_log_gets_no_helper(tmp_path: Path) -> None:
    PostgresLogs.head_start({"log_file": _log(tmp_path, "postgresql.log", 100_000), "incremental": False}, {})
    assert _kinds() == []


def test_the_worker_hands_the_job_to_its_task(tmp_path: Path) -> None:
    log = _log(tmp_path, "postgresql.csv")
    cfg = tmp_path / "upkeeper.yaml"
    cfg.write_text(f"targets:\n  db: {{kind: postgres, host: 127.0.0.1}}\njobs:\n  pg:\n    task: logs.postgres\n"
                   f"    target: db\n    options: {{log_file: {log}, incremental: false}}\n")
    worker.head_start(str(cfg), ["pg"])
    assert _kinds() == ["upkeeper.logs.pgstruct"]
