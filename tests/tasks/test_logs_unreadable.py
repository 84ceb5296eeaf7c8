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
    # (its only log: nothing was read, the run fails -- test_a_run_that_could_read_none_of_its_logs_fails_and_says_so)
    assert checks(r) == [("logs.errors.unreadable", "critical", str(err))]
    assert "cannot read" in r.findings[0].message and "Permission denied" in r.findings[0].message
    assert r.final_status.value == "fail"

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


# -- really unreadable: the kernel says no ---------------------------------------------------------------------

#: the runs of _RUNS_SCRIPT, as root without the capabilities that let root read any file (the logs are
#: nobody's, mode 000: a permission the kernel really refuses)
NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]

_RUNS_SCRIPT = """
import json, os, sys
from upkeeper.config.targets import AppTarget, NginxTarget, PostgresTarget
from upkeeper.core.task import REGISTRY, TaskContext
steps = json.loads(sys.argv[1])
ctxs = {}
out = []
for step in steps:
    for path, mode in step.get("chmod", {}).items():
        os.chmod(path, int(mode, 8))
    for path, text in step.get("append", {}).items():
        with open(path, "a") as fh:
            fh.write(text)
    kind, arg = step["target"]
    target = {"nginx": lambda: NginxTarget(**arg), "app": lambda: AppTarget(**arg),
              "postgres": lambda: PostgresTarget()}[kind]()
    cls = REGISTRY.get(step["task"])
    ctx = ctxs.setdefault(json.dumps([step["job"], step["task"], step["target"]]), TaskContext(job=step["job"], task=step["task"], target_name="t", target=target))
    r = cls().run(ctx, cls.Options.model_validate(step["options"]))
    out.append({"status": r.final_status.value, "summary": r.summary.split(" \u2014 report:")[0],
                "findings": [[f.check, f.severity.value, f.subject] for f in r.findings], "metrics": r.metrics})
print(json.dumps(out))
"""


def _runs(tmp_path: Path, logs: list[Path], steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run ``steps`` (task, target, options, then chmod/append before the run) in one process that cannot read
    the ``logs`` made mode 000 (as root: without the capabilities that override file permissions)."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    argv = [sys.executable, "-c", _RUNS_SCRIPT, json.dumps(steps)]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("needs setpriv to drop root's dac_override")
        argv = NO_DAC + argv
        for p in logs:
            os.chown(p, 65534, 65534)  # nobody's: root without dac_override is only "others" to them
    for p in logs:
        p.chmod(0o000)
    res = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert res.returncode == 0, res.stderr
    out: list[dict[str, Any]] = json.loads(res.stdout)
    return out


def _step(task: str, target: tuple[str, dict[str, Any]], tmp_path: Path, job: str = "j", **options: Any
          ) -> dict[str, Any]:
    return {"task": task, "target": list(target), "job": job,
            "options": {"report_dir": str(tmp_path / "r"), **options}}


def test_a_run_that_could_read_none_of_its_logs_fails_and_says_so(tmp_path: Path) -> None:
    """Every log unreadable (permission denied), the summaries said "no log lines in 1 file(s)", "nginx: 0
    error-log lines", "app: 0 exceptions in 0 groups", "0 statements (0 distinct) …" -- an empty log, contradicting
    their own 'cannot read' warning -- and the runs were only warnings, as if a quiet log had been analysed.
    Now the summary says nothing was read and which file could not be, and the run fails (as for a missing log)."""
    acc, err, app, pg = (tmp_path / n for n in ("access.log", "error.log", "app.log", "postgresql.log"))
    acc.write_text(ACCESS)
    err.write_text(NGINX_ERROR)
    app.write_text(APP)
    pg.write_text(PG)
    out = _runs(tmp_path, [acc, err, app, pg], [
        _step("logs.nginx", ("nginx", {"access_log": str(acc)}), tmp_path),
        _step("logs.errors", ("nginx", {"error_log": str(err)}), tmp_path),
        _step("logs.errors", ("app", {"root": str(tmp_path)}), tmp_path, app_logs=[str(app)]),
        _step("logs.postgres", ("postgres", {}), tmp_path, log_file=str(pg), log_line_prefix="%m [%p] "),
    ])
    summaries = [r["summary"] for r in out]
    assert summaries == [f"nothing read: the access log could not be read ({acc})",
                         f"nginx: nothing read, the error log could not be read ({err})",
                         f"app: nothing read, the application log could not be read ({app})",
                         f"nothing read: the server log could not be read ({pg})"], summaries
    for r, (task, path) in zip(out, [("nginx", acc), ("errors", err), ("errors", app), ("postgres", pg)],
                               strict=True):
        assert r["status"] == "fail", r
        assert [f"logs.{task}.unreadable", "critical", str(path)] in r["findings"], r


def test_a_run_that_could_read_some_of_its_logs_names_the_others(tmp_path: Path) -> None:
    """One of two files unreadable: the summary counted what was read and did not say a file was missing."""
    acc = tmp_path / "access.log"
    acc.write_text(ACCESS)
    (tmp_path / "access.log.1").write_text(ACCESS)
    pg = tmp_path / "postgresql.log"
    pg.write_text(PG)
    (tmp_path / "postgresql.log.1").write_text(PG)
    ok, locked = tmp_path / "ok.log", tmp_path / "locked.log"
    ok.write_text(APP)
    locked.write_text(APP)
    out = _runs(tmp_path, [tmp_path / "access.log.1", tmp_path / "postgresql.log.1", locked], [
        _step("logs.nginx", ("nginx", {"access_log": str(acc)}), tmp_path),
        _step("logs.postgres", ("postgres", {}), tmp_path, log_file=str(pg), log_line_prefix="%m [%p] "),
        _step("logs.errors", ("app", {"root": str(tmp_path)}), tmp_path, app_logs=[str(ok), str(locked)]),
    ])
    assert [r["status"] for r in out] == ["warn", "warn", "warn"], out
    nginx, postgres, errors = (r["summary"] for r in out)
    assert nginx.startswith("1 requests") and nginx.endswith(f"; 1 file(s) could not be read: {acc}.1"), nginx
    assert postgres.startswith("1 statements") and postgres.endswith(f"; 1 file(s) could not be read: {pg}.1"), postgres
    assert errors == f"app: 1 exceptions in 1 groups (first run: recorded as known) (1 file(s) could not be read: {locked})"


def test_a_log_unreadable_for_a_run_is_neither_lost_nor_counted_twice(tmp_path: Path) -> None:
    """A live log that could not be read for one run (permissions changed, then fixed) was reported as gone
    ('lost_lines': "is gone: no file here has its inode …" -- it was there) and its position forgotten: the run
    after counted again every line the runs before had counted.  Now its position is kept as it was."""
    acc = tmp_path / "access.log"
    acc.write_text(ACCESS * 3)
    run = _step("logs.nginx", ("nginx", {"access_log": str(acc)}), tmp_path)
    out = _runs(tmp_path, [], [
        run,
        {**run, "chmod": {str(acc): "000"}},
        {**run, "chmod": {str(acc): "644"}, "append": {str(acc): ACCESS * 2}},
    ])
    first, locked, again = out
    assert first["metrics"]["requests"] == 3
    assert [f[0] for f in locked["findings"]] == ["logs.nginx.unreadable"], locked
    assert again["metrics"]["requests"] == 2, again  # the 2 new lines, not all 5
    assert not [f for f in again["findings"] if f[0] == "logs.nginx.lost_lines"], again


def test_an_application_log_unreadable_on_the_first_run_gets_its_baseline_when_read(tmp_path: Path) -> None:
    """The first run that could not read the application log recorded 'read, no exception groups': the run that
    first read it flagged every exception the application ever logged as new (warnings).  Now that run records
    them as the baseline."""
    app = tmp_path / "app.log"
    app.write_text(APP)
    run = _step("logs.errors", ("app", {"root": str(tmp_path)}), tmp_path, app_logs=[str(app)])
    locked, readable = _runs(tmp_path, [app], [run, {**run, "chmod": {str(app): "644"}}])
    assert locked["status"] == "fail", locked
    assert readable["status"] == "ok", readable
    assert [f[0] for f in readable["findings"]] == ["logs.errors.exceptions_baseline"], readable
