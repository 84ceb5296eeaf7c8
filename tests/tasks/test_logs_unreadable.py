"""The log tasks and files they cannot read, directories given as logs, patterns that match nothing.

The suite runs as root, which reads any file: an unreadable file is one whose first read raises the
PermissionError a non-root reader gets (``head_digest``, the first thing that opens each file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from upkeeper.config.targets import AppTarget, NginxTarget, PostgresTarget
from upkeeper.core.task import REGISTRY, Result, TaskContext
from upkeeper.logs import sources

NGINX_ERROR = "2024/03/01 10:00:00 [error] 11#11: *1 open() \"/srv/x\" failed (2: No such file or directory)\n"
ACCESS = '192.0.2.1 - - [01/Mar/2024:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "curl/8"\n'
PG = "2024-03-01 10:00:00.001 UTC [10] LOG:  duration: 1.000 ms  statement: SELECT 1\n"
APP = '{"level": "error", "message": "x", "error": {"type": "ValueError", "message": "v"}}\n'


@pytest.fixture
def unreadable(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Paths whose reading fails with EACCES, as for a non-root reader of a 0600 root file."""
    paths: set[str] = set()
    real = sources.head_digest

    def head_digest(lf: sources.LogFile, length: int = sources.HEAD_BYTES) -> tuple[str, int]:
        if lf.path in paths:
            raise PermissionError(13, "Permission denied", lf.path)
        return real(lf, length)

    monkeypatch.setattr(sources, "head_digest", head_digest)
    return paths


def run(task: str, target: Any, tmp_path: Path, **options: Any) -> Result:
    cls = REGISTRY.get(task)
    opts = cls.Options.model_validate({"report_dir": str(tmp_path / "r"), **options})
    ctx = TaskContext(job="j", task=task, target_name="t", target=target)
    return cls().run(ctx, opts)


def checks(r: Result) -> list[tuple[str, str, str]]:
    return [(f.check, f.severity.value, f.subject) for f in r.findings]


def test_errors_warns_of_an_unreadable_nginx_error_log_and_app_log(tmp_path: Path, unreadable: set[str]) -> None:
    """logs.errors dropped the 'cannot read' of planning: the log vanished from the analysis, the run was ok."""
    err = tmp_path / "error.log"
    err.write_text(NGINX_ERROR)
    unreadable.add(str(err))
    r = run("logs.errors", NginxTarget(error_log=str(err)), tmp_path)
    assert checks(r) == [("logs.errors.unreadable", "warning", str(err))]
    assert "cannot read" in r.findings[0].message and "Permission denied" in r.findings[0].message
    assert r.final_status.value == "warn"

    ok, locked = tmp_path / "ok.log", tmp_path / "locked.log"
    ok.write_text(APP)
    locked.write_text(APP)
    unreadable.add(str(locked))
    r = run("logs.errors", AppTarget(root=str(tmp_path)), tmp_path, app_logs=[str(ok), str(locked)])
    assert ("logs.errors.unreadable", "warning", str(locked)) in checks(r)
    assert r.metrics["exceptions"] == 1  # the readable one is still read


def test_nginx_and_postgres_warn_of_an_unreadable_rotated_file(tmp_path: Path, unreadable: set[str]) -> None:
    """logs.nginx called it an info 'rotation' finding; logs.postgres dropped it."""
    acc = tmp_path / "access.log"
    acc.write_text(ACCESS)
    (tmp_path / "access.log.1").write_text(ACCESS)
    unreadable.add(str(tmp_path / "access.log.1"))
    r = run("logs.nginx", NginxTarget(access_log=str(acc)), tmp_path)
    assert ("logs.nginx.unreadable", "warning", str(tmp_path / "access.log.1")) in checks(r)
    assert r.metrics["requests"] == 1

    pg = tmp_path / "postgresql.log"
    pg.write_text(PG)
    (tmp_path / "postgresql.log.1").write_text(PG)
    unreadable.add(str(tmp_path / "postgresql.log.1"))
    r = run("logs.postgres", PostgresTarget(), tmp_path, log_file=str(pg), log_line_prefix="%m [%p] ")
    assert ("logs.postgres.unreadable", "warning", str(tmp_path / "postgresql.log.1")) in checks(r)
    assert r.final_status.value == "warn"


def test_truncation_is_an_info_finding_in_every_task(tmp_path: Path) -> None:
    """logs.postgres dropped the note that a file got shorter and was read from the start."""
    pg = tmp_path / "postgresql.log"
    pg.write_text(PG * 3)
    cls = REGISTRY.get("logs.postgres")
    opts = cls.Options.model_validate({"report_dir": str(tmp_path / "r"), "log_file": str(pg),
                                       "log_line_prefix": "%m [%p] "})
    ctx = TaskContext(job="j", task="logs.postgres", target_name="t", target=PostgresTarget())
    cls().run(ctx, opts)
    pg.write_text(PG)  # copytruncate
    r = cls().run(ctx, opts)
    assert ("logs.postgres.rotation", "info", str(pg)) in checks(r)
    assert r.metrics["statements"] == 1


def test_errors_names_each_pattern_that_matches_nothing_and_a_directory(tmp_path: Path) -> None:
    """One pattern that matched hid the others that did not; a directory was 'does not exist'."""
    ok = tmp_path / "ok.log"
    ok.write_text(APP)
    logs_dir = tmp_path / "logs"
    logs_dir.mkdir()
    gone = tmp_path / "gone.log"
    r = run("logs.errors", AppTarget(root=str(tmp_path)), tmp_path,
            app_logs=[str(ok), str(logs_dir), str(gone), str(tmp_path / "none-*.log")])
    found = {f.subject: f for f in r.findings if f.check == "logs.errors.missing"}
    assert set(found) == {str(logs_dir), str(gone), str(tmp_path / "none-*.log")}
    assert all(f.severity.value == "warning" for f in found.values())
    assert "is a directory" in found[str(logs_dir)].message and f"{logs_dir}/*.log" in found[str(logs_dir)].message
    assert "does not exist" in found[str(gone)].message
    assert r.metrics["exceptions"] == 1

    r = run("logs.errors", NginxTarget(error_log=str(logs_dir)), tmp_path)
    [f] = r.findings
    assert f.check == "logs.errors.missing" and "is a directory" in f.message and "does not exist" not in f.message
