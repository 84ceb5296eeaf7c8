"""State a task saved in the history database is read back by the next run: written by another version, or
damaged, it may hold anything JSON can.  The log tasks' read positions, hour counts and exception groups, and
host.health's critical disks, that cannot be understood are started over (and said so) -- never a crash that
repeats at every run, since the state that causes it is never written again."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ops_support import run_task
from upkeeper.core.task import MemoryState
from upkeeper.logs import sources
from upkeeper.tasks.logs.errors import CURSORS_KEY, GROUPS_KEY
from upkeeper.tasks.logs.nginx import merge_hours

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
    lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=8), c, max_size=3)),
    max_leaves=10)

_CURSOR_KEYS = ["path", "dev", "inode", "gz", "head", "head_len", "offset", "size", "live", "mtime", "tail",
                "btime_ns"]


@pytest.fixture(scope="module")
def log_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[sources.LogFile], list[dict[str, Any]]]:
    """A live log and its rotated file, and the cursors a run that read them saved."""
    d = tmp_path_factory.mktemp("logs")
    (d / "access.log.1").write_text("old line\n" * 50)
    (d / "access.log").write_text("line\n" * 100)
    files = sources.discover(str(d / "access.log"))
    plan = sources.plan_reads(files, None, incremental=True)
    saved = json.loads(json.dumps(sources.finish_cursors(plan, {})))  # as history hands it back
    assert len(saved) == 2
    return files, saved


@st.composite
def damaged_cursors(draw: st.DrawFn, saved: list[dict[str, Any]]) -> Any:
    """A saved cursor list with some fields replaced by anything, or anything else."""
    if draw(st.booleans()):
        return draw(json_values)
    out: list[Any] = [dict(c) for c in saved]
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(out) - 1))
        if isinstance(out[i], dict) and draw(st.booleans()):
            out[i][draw(st.sampled_from(_CURSOR_KEYS))] = draw(json_values)
        else:
            out[i] = draw(json_values)
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_read_positions_are_read_from_the_start_and_said(
        log_files: tuple[list[sources.LogFile], list[dict[str, Any]]], data: st.DataObject) -> None:
    files, saved = log_files
    cursors = data.draw(damaged_cursors(saved))
    plan = sources.plan_reads(files, cursors, incremental=True)  # was: AttributeError, TypeError, ValueError
    understood = isinstance(cursors, list) and all(sources.usable_cursor(c) for c in cursors)
    said = [n for n in plan.notes if n.path == sources.SAVED_POSITIONS]
    assert bool(said) == (not understood and cursors is not None), (cursors, plan.notes)
    assert len(plan.cursors) == len(files)  # new positions to save, whatever was there


@pytest.mark.parametrize("cursors", [5, "x", [1], {"a": 1}, [[1, 2]], [{"path": "/x", "offset": "12"}],
                                     [{"path": "/x", "offset": 1e999}]])
def test_each_damaged_read_position_is_read_from_the_start_and_said(
        log_files: tuple[list[sources.LogFile], list[dict[str, Any]]], cursors: Any) -> None:
    files, _saved = log_files
    plan = sources.plan_reads(files, cursors, incremental=True)
    assert [n.path for n in plan.notes] == [sources.SAVED_POSITIONS]
    assert all(r.start == 0 for r in plan.ranges) and plan.ranges


@settings(max_examples=200, deadline=None)
@given(json_values, st.dictionaries(st.sampled_from(["2026-12-06 10:00", "2026-12-06 11:00"]), st.integers(0, 99)))
@example({"a": "x"}, {})  # int('x'): ValueError
@example({"a": [1]}, {})  # int([1]): TypeError
@example({"1": 5}, {})  # date.fromisoformat('1'): ValueError
def test_damaged_hour_counts_are_dropped(earlier: Any, now: dict[str, int]) -> None:
    out = merge_hours(earlier, now, incremental=True, not_after="2026-12-06 23:00")
    assert all(type(c) is int and len(h) == 16 for h, c in out.items())
    assert set(now) <= set(out)


def _app_log(root: Path) -> None:
    (root / "logs").mkdir(parents=True, exist_ok=True)
    (root / "logs" / "production.log").write_text(
        "2026-12-06 10:00:00 ERROR order 7 failed\nTraceback (most recent call last):\n"
        '  File "app.py", line 3, in <module>\nValueError: order 7 failed\n')


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(json_values, json_values)
@example(5, None)  # cursors: 'int' object has no attribute 'get'
@example([{"a": 1}], None)
@example(None, 5)  # groups: argument of type 'int' is not iterable
@example(None, ["x"])  # groups: 'list' object has no attribute 'setdefault'
@example(None, {"a": 1})
def test_logs_errors_runs_on_any_saved_state(tmp_path_factory: pytest.TempPathFactory, cursors: Any,
                                             groups: Any) -> None:
    root = tmp_path_factory.mktemp("app")
    _app_log(root)
    state = MemoryState()
    state.set(CURSORS_KEY, cursors)
    state.set(GROUPS_KEY, groups)
    res = run_task("logs.errors", {"kind": "app", "root": str(root)}, {"report_dir": str(root / "reports")},
                   state=state)
    assert res.metrics["exceptions"] == 1, res.summary
    assert isinstance(state.get(CURSORS_KEY), dict) and isinstance(state.get(GROUPS_KEY), dict)
    again = run_task("logs.errors", {"kind": "app", "root": str(root)}, {"report_dir": str(root / "reports")},
                     state=state)  # the state it saved is understood: nothing read twice
    assert again.metrics["exceptions"] == 0, again.summary


@pytest.mark.parametrize("saved", [5, [[1, 2]], [{"a": 1}], True, "x"])
def test_host_health_disks_check_runs_on_any_saved_state(tmp_path: Path, saved: Any,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """A damaged 'disk_critical' state failed the disks check at every run ('the disks check failed: TypeError:
    'int' object is not iterable'), for ever: the state was never written again."""
    state = MemoryState()
    state.set("disk_critical", saved)
    with caplog.at_level(logging.WARNING):
        res = run_task("host.health", None, {"mounts": [str(tmp_path)], "cpu_sample": "0.1s"}, state=state)
    assert not [f for f in res.findings if "failed" in f.message], [f.message for f in res.findings]
    assert state.get("disk_critical") == [] or isinstance(state.get("disk_critical"), list)


@settings(max_examples=100, deadline=None)
@given(st.one_of(json_values, st.just("X.pending-and-more")))
@example(5)  # 'argument of type 'int' is not iterable': every run of the log tasks failed
@example("X.pending-and-more")  # a text: a pending report matched as part of it and published, unrecorded
def test_damaged_staged_report_names_remove_the_pending_reports(tmp_path_factory: pytest.TempPathFactory,
                                                                saved: Any) -> None:
    """The names of the reports a run staged (kept in history until the next run publishes or removes them)
    read back as anything but a list of names record none: a left-over pending report is removed, as a killed
    run's, never published as a recorded one."""
    from upkeeper.core.task import TaskContext
    from upkeeper.tasks.logs._common import write_reports

    reports = tmp_path_factory.mktemp("reports")
    pending = reports / ".errors-20300101T000000.000000Z.html.pending"
    pending.write_text("<p>unrecorded</p>")
    state = MemoryState()
    state.set("staged_reports", saved.replace("X", pending.name.removesuffix(".pending")) if isinstance(saved, str)
              else saved)
    write_reports(TaskContext(job="errs", task="logs.errors", state=state), reports, "errors", {}, None, keep=0)
    assert not pending.exists() and not (reports / "errors-20300101T000000.000000Z.html").exists()


NGINX_LINE = '192.0.2.{i} - - [01/Mar/2024:10:00:0{i} +0000] "GET /p/{i} HTTP/1.1" 200 5 "-" "curl/8"\n'
WRONG_FORMAT = '$remote_addr [$time_local] "$request" $status'  # no '- -': none of these lines parses


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(json_values, st.booleans())
@example({"format": "x", "cursors": [], "lines": "many", "runs": None}, False)  # int('many'): every run failed
@example({"cursors": [], "lines": 1.5}, False)
@example({"format": 5, "cursors": [1]}, True)
def test_logs_nginx_runs_on_any_saved_unparsed_record(tmp_path_factory: pytest.TempPathFactory, saved: Any,
                                                      parses: bool) -> None:
    """Where the runs that could parse none of their lines began (logs.nginx's 'access_unparsed_from'), read back
    as anything: the run reads and says what it read, and leaves a record it understands (or none)."""
    from upkeeper.tasks.logs.nginx import UNPARSED_KEY

    d = tmp_path_factory.mktemp("nginx")
    log = d / "access.log"
    log.write_text("".join(NGINX_LINE.format(i=i) for i in range(3)))
    state = MemoryState()
    state.set(UNPARSED_KEY, saved)
    res = run_task("logs.nginx", {"kind": "nginx", "access_log": str(log)},
                   {"log_format": "combined" if parses else WRONG_FORMAT, "report_dir": str(d / "reports")},
                   state=state)
    assert res.metrics["requests"] == (3 if parses else 0) and res.metrics["invalid"] == (0 if parses else 3)
    after = state.get(UNPARSED_KEY)
    if parses:
        assert after is None
    else:
        assert after["format"].startswith(WRONG_FORMAT) and isinstance(after["cursors"], list)
        assert type(after["lines"]) is int and type(after["runs"]) is int
        fixed = run_task("logs.nginx", {"kind": "nginx", "access_log": str(log)},
                         {"log_format": "combined", "report_dir": str(d / "reports")}, state=state)
        assert fixed.metrics["requests"] == 3 and state.get(UNPARSED_KEY) is None
