"""An occurrence whose run a stop asked for interrupted (``systemctl restart upkeeper`` during the nightly backup)
runs again when a daemon starts, under the job's catch-up policy — once, never for a worker killed alone."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from upkeeper.config.loader import load_text
from upkeeper.core.daemon import STOP_RERUNS, Daemon, SimClock
from upkeeper.core.executor import InlineExecutor
from upkeeper.core.history import History, NewRun
from upkeeper.core.jobs import Setup, build_setup
from upkeeper.core.models import RunRow
from upkeeper.core.runner import Runner
from upkeeper.notify import checks


def _daemon(cfg: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(tmp_path / "daemon.log", "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "upkeeper", "--config", str(cfg), "daemon"],
                                stdout=log, stderr=log, env=env, start_new_session=True)


def _stop_cgroup(p: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """SIGTERM to the daemon and every process under it at once, as ``systemctl stop`` (KillMode=control-group)
    sends it; returns the daemon's exit code (its process group is SIGKILLed if it is still there)."""
    try:
        procs = [psutil.Process(p.pid), *psutil.Process(p.pid).children(recursive=True)]
        for q in reversed(procs):
            with contextlib.suppress(psutil.NoSuchProcess):
                q.send_signal(signal.SIGTERM)
        return p.wait(timeout=timeout)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _wait_for(history: History, job: str, pred: Any, what: str, log: Path, timeout: float = 30) -> RunRow:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = [r for r in history.runs(job=job, limit=50) if pred(r)]
        if got:
            return got[0]
        time.sleep(0.05)
    runs = [(r.id, r.trigger, r.status, r.summary) for r in history.runs(job=job, limit=50)]
    raise AssertionError(f"no run {what}: {runs}\n{log.read_text() if log.exists() else ''}")


def _wait_file(path: Path, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} did not appear\n{log.read_text()}"
        time.sleep(0.02)


def _seed_missed(history: History, job: str, now: datetime) -> datetime:
    """A day-old occurrence recorded, so that a starting daemon catches the newest one up at once (a brand-new
    job would wait for its next occurrence).  Returns that newest occurrence."""
    newest = now.replace(hour=0, minute=0, second=0, microsecond=0)
    assert history.create_run(NewRun(job=job, task="debug.sleep", target=None, scheduled_for=newest - timedelta(days=1),
                                     status="skipped", summary="seeded"), "seed:1:1", "seed") is not None
    return newest


@pytest.mark.slow
def test_a_run_stopped_by_a_restart_runs_again_once_after_it(make_config: Any, tmp_path: Path) -> None:
    cfg = make_config({"jobs": {"nightly": {"task": "debug.sleep", "schedule": "@daily",
                                            "options": {"seconds": 2, "pid_file": str(tmp_path / "pid")}}}})
    log = tmp_path / "daemon.log"
    history = History(f"sqlite:///{tmp_path / 'history.db'}")
    try:
        occurrence = _seed_missed(history, "nightly", datetime.now(UTC))
        daemon = _daemon(cfg, tmp_path)
        try:
            first = _wait_for(history, "nightly", lambda r: r.status == "running", "running", log)
            assert first.scheduled_for == occurrence
            _wait_file(tmp_path / "pid", log)  # the task runs: its worker gets the stop too
            assert _stop_cgroup(daemon) == 0  # systemctl restart: the stop…
        finally:
            if daemon.poll() is None:
                _stop_cgroup(daemon)
        stopped = history.get_run(first.id)
        assert stopped is not None and checks.stopped_on_request(stopped), log.read_text()
        daemon = _daemon(cfg, tmp_path)  # … and the start
        try:
            again = _wait_for(history, "nightly", lambda r: r.id > first.id and r.status not in ("queued", "running"),
                              "run again", log)
        finally:
            assert _stop_cgroup(daemon) == 0
        assert again.status == "ok", (again.summary, log.read_text())
        assert [r.id for r in history.runs(job="nightly", limit=50) if r.id > first.id] == [again.id]  # once
        assert again.trigger == "catch-up" and again.details["rerun_of"] == first.id, again.details
        # ``history`` shows it at the stopped occurrence's second
        assert again.scheduled_for.replace(microsecond=0) == occurrence
        # the missed-run alarm stays quiet until the next occurrence and its grace: the occurrence ran (without the
        # run again, the stopped run is no run for it and the alarm fires an hour after the occurrence, watched
        # since the seeded one)
        job = build_setup(load_text(cfg.read_text())).jobs["nightly"]
        assert job.schedule is not None and stopped.started_at is not None
        grace = timedelta(hours=1)
        at = occurrence + job.schedule.period() + grace - timedelta(seconds=1)
        assert checks.find_missed([job], history, at, grace, None, {"nightly": occurrence - timedelta(days=1)}) == []
    finally:
        history.close()


# -- the decision, with a simulated clock ------------------------------------------------------------------------

T0 = datetime(2026, 3, 28, 2, 0, tzinfo=UTC)


def _setup(url: str, extra: str = "") -> Setup:
    return build_setup(load_text(f"""
history: {url}
version: 1
jobs:
  nightly:
    task: debug.noop
    schedule: "0 2 * * *"
{extra}"""))


def _daemon_at(setup: Setup, url: str, now: datetime, name: str, history: History | None = None) -> Daemon:
    history = history or History(url)
    clock = SimClock(now)
    runner = Runner(setup=setup, history=history, executor=InlineExecutor(clock=clock.now, history=history),
                    owner=f"{name}:1:1", node=name, clock=clock.now, history_url=url)
    return Daemon(setup, history, runner, clock=clock, instance=f"{name}:1:1",
                  pending_poll=timedelta(hours=1), housekeeping=timedelta(hours=6))


def _interrupted(history: History, when: datetime, *, stopped: bool, details: dict[str, Any] | None = None,
                 trigger: str = "schedule") -> int:
    d = {**(details or {}), **({"stopped": True} if stopped else {})}
    rid = history.create_run(NewRun("nightly", "debug.noop", None, when, trigger=trigger, status="interrupted",
                                    summary="interrupted", details=d), "old:1:1", "old")
    assert rid is not None
    return rid


def _after(history: History, rid: int) -> list[RunRow]:
    return sorted((r for r in history.runs(job="nightly", limit=100) if r.id > rid), key=lambda r: r.id)


class _ReadTogether(History):
    """A history whose daemons both read the stopped occurrences before either claims (they start together)."""

    barrier = threading.Barrier(2)

    def stopped_occurrences(self) -> dict[str, RunRow]:
        got = super().stopped_occurrences()
        self.barrier.wait(timeout=30)
        return got


def test_two_daemons_starting_together_run_the_stopped_occurrence_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    setup = _setup(url)
    history = History(url)
    rid = _interrupted(history, T0, stopped=True)
    now = T0 + timedelta(minutes=30)
    daemons = [_daemon_at(setup, url, now, name, _ReadTogether(url)) for name in ("a", "b")]
    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(Daemon.prepare, daemons))
    assert all(d.wait_idle() for d in daemons)
    after = _after(history, rid)
    assert [(r.trigger, r.status, r.details["rerun_of"]) for r in after] == [("catch-up", "ok", rid)]
    # one claims it; the other loses the claim, or — when the first's rerun has already ended ok by then —
    # finds the occurrence done and records nothing (its skip row would take the same key)
    assert sorted(len(r.claimed) for r in reports) == [0, 1]
    assert sorted(len(r.lost) for r in reports) in ([0, 0], [0, 1])


def test_a_worker_killed_alone_or_a_superseded_stop_is_not_run_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    setup = _setup(url)
    history = History(url)
    killed = _interrupted(history, T0, stopped=False)  # a failure: notified, retries apply, no rerun
    d = _daemon_at(setup, url, T0 + timedelta(minutes=30), "a")
    assert d.prepare().claimed == [] and _after(history, killed) == []
    # stopped, but the next occurrence came due before a daemon was back: catch-up runs that one, not the old
    url2 = f"sqlite:///{tmp_path / 'h2.db'}"
    h2 = History(url2)
    rid = _interrupted(h2, T0, stopped=True)
    d2 = _daemon_at(_setup(url2), url2, T0 + timedelta(days=1, hours=1), "a")
    d2.prepare()
    assert d2.wait_idle()
    assert [(r.trigger, r.scheduled_for, r.status) for r in _after(h2, rid)] == [
        ("catch-up", T0 + timedelta(days=1), "ok")]


def test_a_stopped_occurrence_is_run_again_at_most_stop_reruns_times(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    setup = _setup(url)
    history = History(url)
    first = rid = _interrupted(history, T0, stopped=True)
    for k in range(1, STOP_RERUNS + 1):  # each run again stopped too (a restart loop)
        now = T0 + timedelta(minutes=10 * k)
        d = _daemon_at(setup, url, now, f"d{k}")
        assert [c[0] for c in d.prepare().claimed] == ["nightly"]
        assert d.wait_idle()
        (again,) = _after(history, rid)
        assert again.details == {"rerun_of": rid, "stop_rerun": k, "occurrence": T0.isoformat()}
        assert again.scheduled_for == T0 + timedelta(microseconds=k) and again.trigger == "catch-up"
        history.set_status(again.id, "interrupted", details={**again.details, "stopped": True})
        rid = again.id
    d = _daemon_at(setup, url, T0 + timedelta(hours=1), "last")
    assert d.prepare().claimed == []
    (note,) = _after(history, rid)
    assert note.status == "skipped" and f"already run again {STOP_RERUNS} time(s)" in note.summary
    # and a later start leaves it at that
    d = _daemon_at(setup, url, T0 + timedelta(hours=2), "later")
    assert d.prepare().claimed == [] and len(_after(history, first)) == STOP_RERUNS + 1


def test_a_stopped_occurrence_older_than_the_grace_is_not_run_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    history = History(url)
    rid = _interrupted(history, T0, stopped=True)
    d = _daemon_at(_setup(url, "    catch_up_grace: 1h\n"), url, T0 + timedelta(hours=3), "a")
    assert d.prepare().claimed == []
    (note,) = _after(history, rid)
    assert note.status == "skipped" and "catch_up_grace" in note.summary


def test_catch_up_skip_does_not_run_a_stopped_occurrence_again_and_says_so(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    history = History(url)
    rid = _interrupted(history, T0, stopped=True)
    setup = _setup(url, "    catch_up: skip\n")
    d = _daemon_at(setup, url, T0 + timedelta(minutes=30), "a")
    assert d.prepare().claimed == []
    (note,) = _after(history, rid)
    assert note.status == "skipped" and "catch_up: skip" in note.summary and note.details["rerun_of"] == rid
    # so the missed-run alarm reports the occurrence a period and its grace later
    grace = timedelta(hours=1)
    missed = checks.find_missed([setup.jobs["nightly"]], history, T0 + timedelta(days=1) + grace + timedelta(minutes=1),
                                grace, None, {"nightly": T0})
    assert [m.job for m in missed] == ["nightly"]


def test_a_stopped_occurrence_a_successful_run_has_done_since_is_not_run_again(tmp_path: Path) -> None:
    """The nightly backup stopped by a restart, then made by hand ('upkeeper run nightly') before the daemon was
    back: the daemon made it a second time.  A successful run of the job started since the occurrence makes the
    run again unnecessary (a skipped row says so); one started before the occurrence does not."""
    for name, manual_at, rerun in (("before", T0 - timedelta(hours=1), True), ("after", T0 + timedelta(minutes=5),
                                                                               False)):
        url = f"sqlite:///{tmp_path / f'{name}.db'}"
        setup = _setup(url)
        history = History(url)
        by_hand = _daemon_at(setup, url, manual_at, f"{name}-cli")
        manual, _outcome, status = by_hand.runner.run_manual(setup.jobs["nightly"], retries=False)
        assert status == "ok"
        rid = _interrupted(history, T0, stopped=True)
        d = _daemon_at(setup, url, T0 + timedelta(minutes=30), name)
        claimed = [c[0] for c in d.prepare().claimed]
        assert d.wait_idle()
        after = _after(history, rid)
        if rerun:
            assert claimed == ["nightly"] and [(r.trigger, r.status) for r in after] == [("catch-up", "ok")]
        else:
            assert claimed == [] and [(r.trigger, r.status) for r in after] == [("catch-up", "skipped")]
            assert after[0].details == {"rerun_of": rid, "occurrence": T0.isoformat(), "done_by": manual}
            assert f"run {manual} (manual, ok)" in after[0].summary, after[0].summary
            # and a later start leaves it at that
            assert _daemon_at(setup, url, T0 + timedelta(hours=1), f"{name}-later").prepare().claimed == []
            assert len(_after(history, rid)) == 1
