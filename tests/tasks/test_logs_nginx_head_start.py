"""logs.nginx's head start: ``upkeeper run``'s worker starts the scan's helper processes while the CLI still loads
the config — only for a read of the whole log big enough for them, on more than one CPU — and whatever the
config file holds, a head start never raises."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from upkeeper.core import worker
from upkeeper.logs import ahead, parallel
from upkeeper.logs.synth import write_access_log
from upkeeper.tasks.logs.nginx import NginxLogs


@pytest.fixture(autouse=True)
def _dismiss() -> Iterator[None]:
    parallel.dismiss_prestarted()
    yield
    parallel.dismiss_prestarted()


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A 1.5 MB access log, with the size that makes helpers worth it lowered to 1 MB (a real one is 16 MB)."""
    path = tmp_path / "access.log"
    write_access_log(str(path), 1_500_000)
    monkeypatch.setattr(parallel, "MIN_PARALLEL", 1 << 20)
    monkeypatch.setattr(ahead, "cpus", lambda: 2)
    return str(path)


def _started() -> int:
    return len(parallel._prestarted)


def test_a_big_whole_read_gets_its_helper_started(log: str) -> None:
    NginxLogs.head_start({"incremental": False}, {"access_log": log})
    assert _started() == 1
    assert parallel._prestarted[0][0] == "upkeeper.logs.access"


def test_the_jobs_access_log_wins_over_the_targets(log: str, tmp_path: Path) -> None:
    small = tmp_path / "small.log"
    small.write_text("")
    NginxLogs.head_start({"incremental": False, "access_log": str(small)}, {"access_log": log})
    assert _started() == 0
    NginxLogs.head_start({"incremental": False, "access_log": log}, {"access_log": str(small)})
    assert _started() == 1


@pytest.mark.parametrize("options", [
    {},  # incremental (the default): how much is new is known only from the cursors
    {"incremental": True},
    {"incremental": False, "workers": 1},  # one process: no helper
    {"incremental": False, "rotated": False, "access_log": "/nowhere/access.log"},
])
def test_no_helper_where_the_run_may_not_want_one(log: str, options: dict[str, Any]) -> None:
    NginxLogs.head_start(options, {"access_log": log})
    assert _started() == 0


def test_a_small_log_or_one_cpu_gets_no_helper(log: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "MIN_PARALLEL", 16 << 20)
    NginxLogs.head_start({"incremental": False}, {"access_log": log})
    assert _started() == 0
    monkeypatch.setattr(parallel, "MIN_PARALLEL", 1 << 20)
    monkeypatch.setattr(ahead, "cpus", lambda: 1)
    NginxLogs.head_start({"incremental": False}, {"access_log": log})
    assert _started() == 0


def test_the_rotated_files_count_for_a_whole_read(log: str, tmp_path: Path) -> None:
    live = tmp_path / "site.log"
    live.write_text("")
    Path(log).rename(tmp_path / "site.log.1")
    NginxLogs.head_start({"incremental": False}, {"access_log": str(live)})
    assert _started() == 1


def test_the_worker_hands_the_job_as_written_to_its_task(log: str, tmp_path: Path) -> None:
    cfg = tmp_path / "upkeeper.yaml"
    cfg.write_text(f"history: {tmp_path / 'h.db'}\ntargets:\n  web:\n    kind: nginx\n    access_log: {log}\n"
                   "jobs:\n  whole:\n    task: logs.nginx\n    target: web\n    options: {incremental: false}\n"
                   "  since:\n    task: logs.nginx\n    target: web\n")
    worker.head_start(str(cfg), ["since"])
    assert _started() == 0
    worker.head_start(str(cfg), ["whole"])
    assert _started() == 1


@pytest.mark.parametrize("text", [
    "jobs:\n  j:\n    task: logs.nginx\n    target: [1]\n    options: {incremental: false, workers: many}\n",
    "targets: 7\njobs:\n  j:\n    task: logs.nginx\n    target: web\n    options: [incremental]\n",
    "targets:\n  web: {access_log: 5}\njobs:\n  j: {task: logs.nginx, target: web, options: {access_log: {a: 1}}}\n",
    "jobs:\n  j: {task: logs.nginx, options: {access_log: '/var/log/nginx/*.log', incremental: false}}\n",
    "jobs: [1, 2]\n",
    "{{{ not yaml",
])
def test_whatever_the_file_holds_a_head_start_never_raises(tmp_path: Path, text: str) -> None:
    cfg = tmp_path / "upkeeper.yaml"
    cfg.write_text(text)
    worker.head_start(str(cfg), ["j"])
    assert _started() == 0


def test_a_failing_head_start_is_left_to_the_run(log: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(cls: type, options: Any, target: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(NginxLogs, "head_start", classmethod(broken))
    cfg = tmp_path / "upkeeper.yaml"
    cfg.write_text(f"jobs:\n  j:\n    task: logs.nginx\n    options: {{access_log: {log}, incremental: false}}\n")
    worker.head_start(str(cfg), ["j"])  # no exception
    assert _started() == 0


def test_a_run_that_ends_before_it_scans_ends_the_helpers_started_for_it() -> None:
    """A run that fails or finds no log before its scan (which would have taken or ended them) ends them itself."""
    from upkeeper.tasks.logs._common import ends_head_start
    from upkeeper.tasks.logs.postgres import PostgresLogs

    assert parallel.prestart("upkeeper.logs.access", 1) == 1
    sp = parallel._prestarted[0][1]

    @ends_head_start
    def failing(self: object, ctx: Any, options: Any) -> Any:
        raise RuntimeError("no access log")

    with pytest.raises(RuntimeError):
        failing(None, None, None)
    assert parallel._prestarted == [] and sp.popen.poll() is not None
    # both log tasks' runs are wrapped so
    assert all(getattr(cls.run, "__wrapped__", None) is not None for cls in (NginxLogs, PostgresLogs))
