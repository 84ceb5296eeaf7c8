"""``upkeeper daemon`` and SIGHUP: the config is read again and applied between ticks (real daemon processes), and
:meth:`Daemon.apply`'s scheduling semantics on the simulated clock."""

from __future__ import annotations

import json
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import write_yaml
from daemon_support import daemon_process as _daemon
from daemon_support import stop_daemon as _stop
from daemon_support import wait_for as _wait
from upkeeper.config.loader import load_text
from upkeeper.core.daemon import Daemon, SimClock
from upkeeper.core.executor import InlineExecutor
from upkeeper.core.history import History, NewRun
from upkeeper.core.jobs import Setup, build_setup
from upkeeper.core.runner import Runner

NODE = "reload-node"







def _cli(cli: Any, args: list[Any]) -> Any:
    """The in-process CLI, its history closed after it (a PostgreSQL pool left open warns when collected)."""
    from upkeeper.cli._app import state

    try:
        return cli(args)
    finally:
        if state._history is not None:
            state._history.close()


def _status(cli: Any, cfg: Path) -> dict[str, Any]:
    res = _cli(cli, ["--config", cfg, "status", "--json"])
    assert res.code == 0, res.output
    got: dict[str, Any] = json.loads(res.out)
    return got


def _base(tmp_path: Path, jobs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"history": str(tmp_path / "history.db"), "node": NODE, "timezone": "UTC", "jobs": jobs, **extra}


def test_sighup_applies_a_changed_config_between_ticks(cli: Any, tmp_path: Path) -> None:
    """A run under way when the config changes finishes under the config it started with (its job slept the old
    6 s, not the new 600); a removed job is no longer scheduled and its pending retry is recorded skipped; an added
    job runs on its schedule from the reload on; 'upkeeper status' shows the reload.  The daemon used to log that it
    does not reload."""
    cfg = tmp_path / "upkeeper.yaml"
    log = tmp_path / "daemon.log"
    write_yaml(cfg, _base(tmp_path, {
        "long": {"task": "debug.sleep", "options": {"seconds": 6}},
        "gone": {"task": "debug.noop", "schedule": "every 1h", "retries": 1},
        # times out (an error) after the reload removed it: the retry its run plans is not left pending
        "doomed": {"task": "debug.sleep", "options": {"seconds": 600}, "timeout": "5s", "retries": 1,
                   "retry_delay": "1h"}}))
    history = History(f"sqlite:///{tmp_path / 'history.db'}")
    with _daemon(cfg, log) as p:
        now = datetime.now(UTC)
        long_run = history.create_run(NewRun(job="long", task="debug.sleep", target=None, scheduled_for=now,
                                             due_at=now, trigger="manual", status="pending"), "test:1:1", NODE)
        retry = history.create_run(NewRun(job="gone", task="debug.noop", target=None,
                                          scheduled_for=now + timedelta(hours=1), due_at=now + timedelta(hours=1),
                                          trigger="retry", attempt=2, status="pending"), "test:1:1", NODE)
        doomed = history.create_run(NewRun(job="doomed", task="debug.sleep", target=None, scheduled_for=now,
                                           due_at=now, trigger="manual", status="pending"), "test:1:1", NODE)
        assert long_run is not None and retry is not None and doomed is not None
        _wait("the runs to start", lambda: all(history.get_run(r).status == "running"  # type: ignore[union-attr]
                                               for r in (long_run, doomed)), log)
        write_yaml(cfg, _base(tmp_path, {
            "long": {"task": "debug.sleep", "options": {"seconds": 600}},
            "fresh": {"task": "debug.noop", "schedule": "every 2s"}}))
        p.send_signal(signal.SIGHUP)
        _wait("the reload", lambda: " reloaded: " in log.read_text(), log)
        reloaded_at = datetime.now(UTC)
        assert history.get_run(long_run).status == "running", log.read_text()  # type: ignore[union-attr]
        text = log.read_text()
        assert "added fresh" in text and "removed doomed, gone" in text and "changed long" in text, text
        assert "1 pending run(s) of removed jobs skipped" in text, text
        # the run under way kept its job: 6 s, not 600
        _wait("the long run to end", lambda: history.get_run(long_run).status != "running", log, timeout=30)  # type: ignore[union-attr]
        assert history.get_run(long_run).status == "ok", log.read_text()  # type: ignore[union-attr]
        _wait("the doomed run to time out", lambda: history.get_run(doomed).status == "error", log)  # type: ignore[union-attr]
        _wait("its retry to be skipped", lambda: any(
            r.trigger == "retry" and r.status == "skipped" for r in history.runs(job="doomed")), log, timeout=10)
        assert not [r for r in history.runs(job="doomed") if r.status == "pending"]
        gone = history.get_run(retry)
        assert gone is not None and gone.status == "skipped" and "no longer in this node's config" in gone.summary
        _wait("two runs of the added job", lambda: len(history.runs(job="fresh")) >= 2, log, timeout=30)
        fresh = history.runs(job="fresh")
        assert {r.trigger for r in fresh} == {"schedule"}, fresh  # on its schedule: nothing caught up
        assert all(r.scheduled_for >= reloaded_at - timedelta(seconds=3) for r in fresh), fresh
        daemon = next(d for d in _status(cli, cfg)["daemons"] if d["alive"])
        assert daemon["reload"]["ok"] is True and daemon["reload"]["added"] == ["fresh"], daemon
        assert daemon["reload"]["file"] == str(cfg), daemon
        _stop(p, log)
    assert [r.id for r in history.runs(job="gone")] == [retry]  # never scheduled: its first hour had not come
    assert "stopped cleanly" in log.read_text()


def test_sighup_with_an_invalid_config_keeps_the_config_it_had(cli: Any, tmp_path: Path) -> None:
    """An invalid config (a bad schedule) is refused: the log names the file, line and field, the daemon goes on
    scheduling the old config's jobs, and 'upkeeper status' says the reload failed.  A config that moves the
    daemon to another node (or history) is refused the same way: that needs a restart.  A new daemon.concurrency
    is kept for the next restart, with a warning, and the rest of that config applies."""
    cfg = tmp_path / "upkeeper.yaml"
    log = tmp_path / "daemon.log"
    good = _base(tmp_path, {"ping": {"task": "debug.noop", "schedule": "every 1s"}})
    write_yaml(cfg, good)
    history = History(f"sqlite:///{tmp_path / 'history.db'}")
    with _daemon(cfg, log) as p:
        write_yaml(cfg, _base(tmp_path, {"ping": {"task": "debug.noop", "schedule": "61 * * * *"}}))
        p.send_signal(signal.SIGHUP)
        _wait("the refusal", lambda: "not reloaded" in log.read_text(), log)
        text = log.read_text()
        assert f"{cfg}:" in text and "jobs -> ping -> schedule" in text, text
        assert "Traceback" not in text, text
        refused_at = datetime.now(UTC)
        _wait("ping to run after the refusal", lambda: any(r.scheduled_for > refused_at + timedelta(seconds=1)
                                                           for r in history.runs(job="ping")), log, timeout=20)
        assert p.poll() is None
        write_yaml(cfg, good)  # 'upkeeper status' reads the config too
        daemon = next(d for d in _status(cli, cfg)["daemons"] if d["alive"])
        assert daemon["reload"]["ok"] is False and "jobs -> ping -> schedule" in daemon["reload"]["message"], daemon
        res = cli(["--config", cfg, "status"])
        assert res.code == 0 and "config reload failed" in " ".join(res.out.split()), res.output

        write_yaml(cfg, {**good, "node": "elsewhere"})
        p.send_signal(signal.SIGHUP)
        _wait("the second refusal", lambda: "node changed" in log.read_text(), log)
        assert "restart" in log.read_text()
        # a new concurrency waits for a restart; the rest of the config applies
        write_yaml(cfg, {**good, "daemon": {"concurrency": 8},
                         "jobs": {**good["jobs"], "pong": {"task": "debug.noop", "schedule": "every 1s"}}})
        p.send_signal(signal.SIGHUP)
        _wait("the reload", lambda: " reloaded: " in log.read_text(), log)
        assert "daemon.concurrency changed (4 → 8): it stays 4 until the daemon is restarted" in log.read_text()
        _wait("pong to run", lambda: bool(history.runs(job="pong")), log, timeout=20)
        daemon = next(d for d in _status(cli, cfg)["daemons"] if d["alive"])
        assert daemon["reload"]["ok"] is True and daemon["reload"]["added"] == ["pong"], daemon
        _stop(p, log)


def test_a_reload_refused_for_a_credential_field_says_the_problem_whole(cli: Any, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A reload refused for an unset variable in a password printed 'password: *** variable NOPE is not set' in the
    daemon's log and in 'upkeeper status': the message's first word was masked as if it were the password.  The
    location and the message are redacted apart, and the log, the history and 'status --json' keep them whole."""
    cfg = tmp_path / "upkeeper.yaml"
    log = tmp_path / "daemon.log"
    good = _base(tmp_path, {"ping": {"task": "debug.noop", "schedule": "every 1h"}})
    write_yaml(cfg, good)
    monkeypatch.delenv("UPKEEPER_NOPE_PW", raising=False)
    with _daemon(cfg, log) as p:
        write_yaml(cfg, {**good, "targets": {"db": {"kind": "postgres", "password": "${UPKEEPER_NOPE_PW}"}}})
        p.send_signal(signal.SIGHUP)
        _wait("the refusal", lambda: "not reloaded" in log.read_text(), log)
        want = "targets -> db -> password: environment variable UPKEEPER_NOPE_PW is not set"
        assert want in log.read_text() and "*** variable" not in log.read_text(), log.read_text()
        write_yaml(cfg, good)  # 'upkeeper status' reads the config too
        daemon = next(d for d in _status(cli, cfg)["daemons"] if d["alive"])
        assert daemon["reload"]["ok"] is False and want in daemon["reload"]["message"], daemon
        res = _cli(cli, ["--config", cfg, "status"])
        assert res.code == 0 and want in " ".join(res.out.split()), res.output
        _stop(p, log)


def _setup(url: str, jobs: str) -> Setup:
    return build_setup(load_text(f"history: {url}\ntimezone: UTC\nnode: n\njobs:\n{jobs}"))


def _sim_daemon(setup: Setup, url: str, clock: SimClock, name: str = "n") -> Daemon:
    history = History(url)
    runner = Runner(setup=setup, history=history, executor=InlineExecutor(clock=clock.now, history=history),
                    owner=f"{name}:1:1", node=name, clock=clock.now, history_url=url)
    return Daemon(setup, history, runner, clock=clock, instance=f"{name}:1:1", pending_poll=timedelta(hours=1),
                  housekeeping=timedelta(hours=6))


def _drive(d: Daemon, clock: SimClock, end: datetime) -> None:
    while d._heap and d._heap[0].due_at <= end:
        clock.set(d._heap[0].due_at)
        d.tick()
        assert d.wait_idle(30)
    clock.set(end)


def test_a_reload_applies_changed_schedules_without_a_burst_of_catch_up_runs(tmp_path: Path) -> None:
    """At 12:32 'five' goes from every 5 to every 10 minutes, 'fifteen' is added, 'hourly' is unchanged: from then
    on each runs on its own schedule -- no catch-up of 'five' at the new schedule's past instants, none of the new
    job's 12:15 or 12:30, and 'hourly' keeps its 13:00.  (Started at 12:00, brand-new jobs: nothing at 12:00.)"""
    url = f"sqlite:///{tmp_path / 'h.db'}"
    before = '  five: {task: debug.noop, schedule: "*/5 * * * *"}\n  hourly: {task: debug.noop, schedule: "@hourly"}\n'
    after = ('  five: {task: debug.noop, schedule: "*/10 * * * *"}\n  hourly: {task: debug.noop, schedule: "@hourly"}\n'
             '  fifteen: {task: debug.noop, schedule: "*/15 * * * *"}\n')
    start = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    clock = SimClock(start)
    d = _sim_daemon(_setup(url, before), url, clock)
    d.prepare()
    _drive(d, clock, start + timedelta(minutes=32))
    applied = d.apply(_setup(url, after), policies=(), periodic=())
    assert (applied.added, applied.removed, applied.rescheduled) == (["fifteen"], [], ["five"])
    d.tick()  # what the reload would make due now: nothing
    assert d.wait_idle(30)
    _drive(d, clock, start + timedelta(minutes=90))
    runs = d.history.runs(limit=1000)
    d.pool.shutdown(wait=True)
    by_job: dict[str, list[tuple[str, str]]] = {}
    for r in sorted(runs, key=lambda r: r.scheduled_for):
        by_job.setdefault(r.job, []).append((r.scheduled_for.strftime("%H:%M"), r.trigger))
    assert by_job["five"] == [(t, "schedule") for t in ("12:05", "12:10", "12:15", "12:20", "12:25", "12:30",
                                                         "12:40", "12:50", "13:00", "13:10", "13:20", "13:30")], \
        by_job["five"]
    assert by_job["fifteen"] == [(t, "schedule") for t in ("12:45", "13:00", "13:15", "13:30")], by_job["fifteen"]
    assert by_job["hourly"] == [("13:00", "schedule")], by_job["hourly"]
    assert {r.status for r in runs} == {"ok"}


def test_a_dead_daemon_whose_loop_hung_served_only_until_its_last_tick(tmp_path: Path) -> None:
    """Daemon A's scheduling loop hangs at 02:30 while its heartbeat thread goes on until 06:00, when A dies
    (kill -9, the OOM killer).  Daemon B, started at 06:10, catches up the 03:00 backup: A never claimed it.  Its
    lifetime used to end at its last heartbeat, as if A had been scheduling until 06:00, and the night's backup was
    silently lost."""
    url = f"sqlite:///{tmp_path / 'h.db'}"
    jobs = '  nightly: {task: debug.noop, schedule: "0 3 * * *", catch_up: latest, catch_up_grace: 12h}\n'
    day = datetime(2026, 3, 27, tzinfo=UTC)
    history = History(url)
    history.create_run(NewRun(job="nightly", task="debug.noop", target=None, scheduled_for=day + timedelta(hours=3),
                              trigger="schedule", status="ok"), "old:1:1", "n")
    clock = SimClock(day + timedelta(days=1, hours=2))
    a = _sim_daemon(_setup(url, jobs), url, clock, "a")
    a.prepare()
    clock.set(day + timedelta(days=1, hours=2, minutes=30))
    a.tick()  # its last tick; then the loop hangs
    clock.set(day + timedelta(days=1, hours=6))
    a._heartbeat()  # the heartbeat thread, still beating
    a.pool.shutdown(wait=True)  # A dies: no stop recorded
    clock.set(day + timedelta(days=1, hours=6, minutes=10))
    b = _sim_daemon(_setup(url, jobs), url, clock, "b")
    report = b.prepare()
    assert b.wait_idle(30)
    b.pool.shutdown(wait=True)
    assert [(j, t) for j, t, _ in report.claimed] == [("nightly", day + timedelta(days=1, hours=3))], report
    [row] = [r for r in history.runs(job="nightly") if r.scheduled_for == day + timedelta(days=1, hours=3)]
    assert (row.trigger, row.status) == ("catch-up", "ok")


def test_a_daemon_that_died_without_stopping_fails_status_check_until_one_starts_again(cli: Any,
                                                                                       tmp_path: Path) -> None:
    """kill -9 of a real daemon (as the OOM killer does): 'status' said "not running — start it with 'upkeeper
    daemon'" as for a node that never ran one, and 'status --check' exited 0 until the jobs' missed-run alarm, a
    period later.  Now it says the daemon died (JSON: died) and --check exits 1; a daemon started there since
    clears it, and a daemon stopped cleanly is no death."""
    cfg = tmp_path / "upkeeper.yaml"
    log = tmp_path / "daemon.log"
    write_yaml(cfg, _base(tmp_path, {"ping": {"task": "debug.noop", "schedule": "every 1h"}},
                          daemon={"heartbeat": "1s"}))
    history = History(f"sqlite:///{tmp_path / 'history.db'}")

    def age_heartbeats() -> None:  # the 2 minutes a daemon's heartbeat may lag before it counts as gone
        with history.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE daemons SET last_seen = datetime(last_seen, '-3 minutes')")

    try:
        with _daemon(cfg, log) as p:
            _wait("a heartbeat", lambda: any(d["alive"] for d in _status(cli, cfg)["daemons"]), log)
            assert _cli(cli, ["--config", cfg, "status", "--check"]).code == 0
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        age_heartbeats()
        [dead] = _status(cli, cfg)["daemons"]
        assert (dead["alive"], dead["died"]) == (False, True), dead
        res = _cli(cli, ["--config", cfg, "status", "--check"])
        assert res.code == 1, res.output
        text = " ".join(res.out.split())
        assert f"daemon: died on {NODE} (pid {p.pid}, last seen" in text and "without stopping" in text, text
        assert "not running" not in text
        assert _cli(cli, ["--config", cfg, "status", "--check", "--json"]).code == 1
        with _daemon(cfg, log) as p2:  # a daemon started on that node since: the death is history
            _wait("a heartbeat", lambda: any(d["alive"] for d in _status(cli, cfg)["daemons"]), log)
            assert _cli(cli, ["--config", cfg, "status", "--check"]).code == 0
            _stop(p2, log)
        age_heartbeats()
        assert not any(d["died"] for d in _status(cli, cfg)["daemons"])
        res = _cli(cli, ["--config", cfg, "status", "--check"])
        assert res.code == 0 and "daemon: not running" in " ".join(res.out.split()), res.output
    finally:
        history.close()


def test_a_hung_scheduling_loop_is_reported_stalled_though_its_heartbeat_goes_on(cli: Any, tmp_path: Path,
                                                                                  pg: Any, pg_db: str) -> None:
    """A real stall: another session holds a SHARE lock on the PostgreSQL history's runs table, so the daemon's loop
    blocks in its next claim (an INSERT) while its heartbeat thread (which writes the daemons table) goes on.
    'upkeeper status' reported it running; it now says the loop is stalled (JSON: stalled, last_tick; --check
    exits 1), the daemon logs where its loop is stuck, and both clear once the lock is gone."""
    cfg = tmp_path / "upkeeper.yaml"
    log = tmp_path / "daemon.log"
    url = f"postgresql+psycopg://postgres@{pg.host}:{pg.port}/{pg_db}"
    write_yaml(cfg, {"history": url, "node": NODE, "timezone": "UTC",
                     "daemon": {"heartbeat": "1s", "stall_after": "3s"},
                     "notifications": {"missed_runs": False},
                     "jobs": {"ping": {"task": "debug.noop", "schedule": "every 1s"}}})
    history = History(url)
    try:
        with _daemon(cfg, log) as p:
            _wait("a run of ping", lambda: bool(history.runs(job="ping")), log)
            daemon = next(d for d in _status(cli, cfg)["daemons"] if d["alive"])
            assert daemon["stalled"] is False and daemon["last_tick"] is not None, daemon
            locker = pg.connect(pg_db, autocommit=False)
            try:
                locker.execute("LOCK TABLE runs IN SHARE MODE")  # reads go on: 'upkeeper status' works
                _wait("status to report the stall",
                      lambda: any(d["alive"] and d["stalled"] for d in _status(cli, cfg)["daemons"]), log)
                res = _cli(cli, ["--config", cfg, "status"])
                assert "stalled" in res.out and "has not ticked since" in " ".join(res.out.split()), res.output
                assert _cli(cli, ["--config", cfg, "status", "--check", "--json"]).code == 1
                _wait("the daemon to log where it is stuck", lambda: "has not ticked since" in log.read_text(), log)
                assert "history.py" in log.read_text().split("has not ticked since", 1)[1], log.read_text()
            finally:
                locker.rollback()
                locker.close()
            _wait("the loop to tick again", lambda: "ticks again" in log.read_text(), log)
            _wait("status to clear the stall",
                  lambda: not any(d["stalled"] for d in _status(cli, cfg)["daemons"]), log)
            assert _cli(cli, ["--config", cfg, "status", "--check", "--json"]).code == 0
            _stop(p, log)
    finally:
        history.close()
