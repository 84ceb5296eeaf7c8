"""The daemon's scheduling semantics, driven by a simulated clock against a real history database."""

from __future__ import annotations

import os
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from daemon_support import wait_for
from upkeeper.config.loader import load_text
from upkeeper.core.daemon import Daemon, Decision, SimClock
from upkeeper.core.executor import InlineExecutor
from upkeeper.core.history import History, NewRun
from upkeeper.core.jobs import Job, Setup, build_setup
from upkeeper.core.runner import Runner
from upkeeper.sandbox.postgres import PostgresCluster

START = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)  # spans the Europe/Berlin spring-forward night

JOBS_YAML = """
version: 1
timezone: UTC
jobs:
  five:
    task: debug.noop
    schedule: "*/5 * * * *"
  hourly:
    task: debug.noop
    schedule: "@hourly"
    jitter: 10m
  berlin-0230:
    task: debug.noop
    schedule: "30 2 * * *"
    timezone: Europe/Berlin
  seven:
    task: debug.noop
    schedule: every 7m
  every-3h:
    task: debug.noop
    schedule: "15 */3 * * *"
    timezone: America/New_York
  manual:
    task: debug.noop
"""


def make_setup(history_url: str, extra: str = "") -> Setup:
    return build_setup(load_text(f"history: {history_url}\n{JOBS_YAML}{extra}"))


def make_daemon(setup: Setup, url: str, clock: SimClock, name: str, policies: Any = ()) -> Daemon:
    history = History(url)
    runner = Runner(setup=setup, history=history, executor=InlineExecutor(clock=clock.now, history=history),
                    owner=f"{name}:1:1", node=name, clock=clock.now, history_url=url)
    return Daemon(setup, history, runner, clock=clock, instance=f"{name}:1:1", policies=policies,
                  pending_poll=timedelta(hours=1), housekeeping=timedelta(hours=6))


def expected_occurrences(setup: Setup, start: datetime, end: datetime) -> Counter[tuple[str, datetime]]:
    out: Counter[tuple[str, datetime]] = Counter()
    for job in setup.jobs.values():
        if job.schedule is None:
            continue
        t = start
        while True:
            t = job.schedule.next_after(t)
            if t + job.jitter_offset > end:
                break
            out[(job.name, t)] += 1
    return out


def drive(daemons: list[Daemon], clock: SimClock, end: datetime) -> None:
    """Advance simulated time from due instant to due instant; daemons tick concurrently."""
    for d in daemons:
        d.prepare()
    while True:
        nxt = min(d._heap[0].due_at for d in daemons if d._heap)
        if nxt > end:
            break
        clock.set(nxt)
        barrier = threading.Barrier(len(daemons))
        errors: list[BaseException] = []
        threads = [threading.Thread(target=_tick, args=(d, barrier, errors)) for d in daemons]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        for d in daemons:
            assert d.wait_idle(30)


def _tick(d: Daemon, barrier: threading.Barrier, errors: list[BaseException]) -> None:
    try:
        barrier.wait()
        d.tick()
    except BaseException as exc:  # pragma: no cover - surfaced by drive()
        errors.append(exc)


def run_two_daemons_for_a_day(url: str) -> None:
    setup = make_setup(url)
    clock = SimClock(START)
    d1, d2 = make_daemon(setup, url, clock, "node-a"), make_daemon(setup, url, clock, "node-b")
    end = START + timedelta(days=1)
    drive([d1, d2], clock, end)
    for d in (d1, d2):
        d.pool.shutdown(wait=True)
        d.history.close()
    history = History(url)
    runs = history.runs(limit=100000)
    history.close()
    fired = Counter((r.job, r.scheduled_for) for r in runs)
    expected = expected_occurrences(setup, START, end)
    assert fired == expected  # every occurrence exactly once, nothing extra
    assert {r.status for r in runs} == {"ok"}
    assert {r.node for r in runs} == {"node-a", "node-b"}  # both daemons did real work
    # the Berlin 02:30 job fell into the skipped hour on 2026-03-29: it ran at 03:00 local (01:00 UTC)
    berlin = [r.scheduled_for for r in runs if r.job == "berlin-0230"]
    assert berlin == [datetime(2026, 3, 29, 1, 0, tzinfo=UTC)]
    # jitter is deterministic and applied to the due time, not the occurrence key
    hourly = [r for r in runs if r.job == "hourly"]
    offset = setup.jobs["hourly"].jitter_offset
    assert all(r.due_at == r.scheduled_for + offset for r in hourly)


def test_two_daemons_share_sqlite_history_every_occurrence_once(tmp_path: Path) -> None:
    run_two_daemons_for_a_day(f"sqlite:///{tmp_path / 'h.db'}")


def test_two_daemons_share_postgresql_history_every_occurrence_once(pg: PostgresCluster, pg_db: str) -> None:
    run_two_daemons_for_a_day(f"postgresql+psycopg://postgres@127.0.0.1:{pg.port}/{pg_db}")


def test_catch_up_latest_runs_newest_missed_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    setup = make_setup(url)
    history = History(url)
    last = datetime(2026, 3, 28, 9, 0, tzinfo=UTC)
    history.create_run(NewRun(job="hourly", task="debug.noop", target=None, scheduled_for=last, status="ok"),
                       "old:1:1", "old")
    clock = SimClock(datetime(2026, 3, 28, 12, 30, tzinfo=UTC))  # 3 hourly occurrences missed
    d = make_daemon(setup, url, clock, "n")
    report = d.prepare()
    d.wait_idle()
    catch = [r for r in history.runs(job="hourly") if r.trigger == "catch-up"]
    assert len(catch) == 1 and catch[0].scheduled_for == datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    assert catch[0].status == "ok"
    assert report.claimed[0][0] == "hourly"


def test_catch_up_skip_records_one_skipped_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    setup = make_setup(url, "defaults:\n  catch_up: skip\n")
    history = History(url)
    history.create_run(NewRun(job="hourly", task="debug.noop", target=None,
                              scheduled_for=datetime(2026, 3, 28, 9, 0, tzinfo=UTC), status="ok"), "o:1:1", "o")
    d = make_daemon(setup, url, SimClock(datetime(2026, 3, 28, 12, 30, tzinfo=UTC)), "n")
    d.prepare()
    skipped = [r for r in history.runs(job="hourly") if r.status == "skipped"]
    assert len(skipped) == 1
    assert "3 occurrence" in skipped[0].summary and skipped[0].trigger == "catch-up"
    assert not [r for r in history.runs(job="hourly") if r.trigger == "catch-up" and r.status == "ok"]


def test_a_catch_up_skip_says_why_nothing_missed_ran(tmp_path: Path) -> None:
    """The skipped run's summary said 'catch_up: latest, grace 1:00:00' for occurrences left because a newer one ran
    on time, or because the newest missed was older than the grace: it says which."""
    url = f"sqlite:///{tmp_path / 'h.db'}"
    setup = make_setup(url)
    history = History(url)
    history.create_run(NewRun(job="hourly", task="debug.noop", target=None,
                              scheduled_for=datetime(2026, 3, 28, 9, 0, tzinfo=UTC), status="ok"), "o:1:1", "o")
    make_daemon(setup, url, SimClock(datetime(2026, 3, 28, 12, 0, 30, tzinfo=UTC)), "n").prepare()
    [skipped] = [r for r in history.runs(job="hourly") if r.status == "skipped"]
    assert "(2 occurrence(s)); the occurrence at 2026-03-28 12:00:00 UTC runs on time instead" in skipped.summary
    url2 = f"sqlite:///{tmp_path / 'h2.db'}"
    history2 = History(url2)
    history2.create_run(NewRun(job="hourly", task="debug.noop", target=None,
                               scheduled_for=datetime(2026, 3, 28, 9, 0, tzinfo=UTC), status="ok"), "o:1:1", "o")
    make_daemon(make_setup(url2, "defaults:\n  catch_up_grace: 10m\n"), url2,
                SimClock(datetime(2026, 3, 28, 12, 30, tzinfo=UTC)), "n").prepare()
    [old] = [r for r in history2.runs(job="hourly") if r.status == "skipped"]
    assert "catch_up: latest, but the newest is older than catch_up_grace (10m)" in old.summary, old.summary


def test_new_job_does_not_catch_up(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    d = make_daemon(make_setup(url), url, SimClock(START + timedelta(minutes=2)), "n")
    report = d.prepare()
    assert report.claimed == [] and report.skipped == []


def test_overlap_with_a_running_occurrence_is_skipped_and_recorded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    setup = make_setup(url)
    history = History(url)
    # another process (another node's daemon) is running "five" right now
    assert history.acquire_lock("job:five", "other-node:99:1", "other-node", timedelta(minutes=5), "run 1")
    clock = SimClock(START)
    d = make_daemon(setup, url, clock, "n")
    d.prepare()
    clock.set(START + timedelta(minutes=5))
    d.tick()
    d.wait_idle()
    run = history.runs(job="five")[0]
    assert run.status == "skipped" and "still running" in run.summary


def test_occurrences_skipped_while_a_long_run_ran_are_not_reported_missed_once_it_ended(tmp_path: Path) -> None:
    """'five' (every 5 minutes; a missed_grace of 4m) runs for 12 minutes on another node: the daemon skips 12:05
    and 12:10 (the previous run still runs).  Once that run ended, at 12:12, the missed-run alarm took its 12:00
    start for the job's last run and paged 'missed' at once (12:05 + 4m was past) -- although the job ran all
    along and its next occurrence, 12:15, was not even due.  The occurrences an overlap skip gave up to a run
    that ran through them now count as that run's; an occurrence after it that does not run is still missed."""
    from upkeeper.core.task import Result
    from upkeeper.notify.checks import find_missed

    url = f"sqlite:///{tmp_path / 'h.db'}"
    setup = make_setup(url)
    history = History(url)
    five, grace = setup.jobs["five"], timedelta(minutes=4)
    owner = "other-node:99:1"  # another node's daemon runs the 12:00 occurrence, as its runner does
    rid = history.create_run(NewRun("five", "debug.noop", None, START), owner, "other-node")
    assert rid is not None
    assert history.start_run_locked(rid, START, owner, "job:five", f"{owner}/{rid}", "other-node",
                                    timedelta(minutes=30))
    clock = SimClock(START)
    d = make_daemon(setup, url, clock, "n")
    d.prepare()
    for minute in (5, 10):
        clock.set(START + timedelta(minutes=minute))
        d.tick()
        assert d.wait_idle(30)
    skipped = {r.scheduled_for: r.summary for r in history.runs(job="five") if r.status == "skipped"}
    assert sorted(skipped) == [START + timedelta(minutes=5), START + timedelta(minutes=10)]
    assert all("still running" in s for s in skipped.values()), skipped
    assert find_missed([five], history, START + timedelta(minutes=11), grace, None, {}) == []  # it runs
    history.finish_run(rid, status="ok", result=Result(summary="done"), finished_at=START + timedelta(minutes=12),
                       started_at=START)
    history.release_lock("job:five", f"{owner}/{rid}")
    assert find_missed([five], history, START + timedelta(minutes=12), grace, None, {}) == []
    assert find_missed([five], history, START + timedelta(minutes=19), grace, None, {}) == []
    # 12:15 does not run (the daemon does not tick): that one is missed
    [missed] = find_missed([five], history, START + timedelta(minutes=19, seconds=1), grace, None, {})
    assert missed.expected == START + timedelta(minutes=15) and missed.reference == START  # its last run
    clock.set(START + timedelta(minutes=15))  # it does run: nothing is missed
    d.tick()
    assert d.wait_idle(30)
    assert find_missed([five], history, START + timedelta(minutes=19, seconds=1), grace, None, {}) == []
    d.drain(timedelta(seconds=5))
    d.history.close()
    history.close()


class _Policy:
    """Defers 'five' until 12:30 and skips 'seven' — stands in for windows and blackouts."""

    def decide(self, job: Job, occurrence: datetime, now: datetime, trigger: str) -> Decision:
        if job.name == "five" and now < datetime(2026, 3, 28, 12, 30, tzinfo=UTC):
            return Decision("defer", "outside window 'nightly'", datetime(2026, 3, 28, 12, 30, tzinfo=UTC))
        if job.name == "seven":
            return Decision("skip", "blackout 'launch'")
        return Decision.admit()


def test_admission_decision_point_defers_and_skips(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    setup = make_setup(url)
    clock = SimClock(START)
    d = make_daemon(setup, url, clock, "n", policies=[_Policy()])
    d.pending_poll = timedelta(minutes=1)
    drive([d], clock, START + timedelta(minutes=40))
    history = History(url)
    five = sorted(history.runs(job="five"), key=lambda r: r.scheduled_for)
    opening = datetime(2026, 3, 28, 12, 30, tzinfo=UTC)
    # 12:05 was deferred and ran at the opening; 12:10-12:25 were covered by it (recorded as skipped);
    # 12:30 coincided with the deferred run (overlap, recorded); from 12:35 on the job ran normally
    deferred = [r for r in five if r.trigger == "deferred"]
    assert [(r.scheduled_for.minute, r.status) for r in deferred] == [(5, "ok")]
    assert deferred[0].started_at == opening
    covered = [r for r in five if r.status == "skipped" and r.scheduled_for < opening]
    assert [r.scheduled_for.minute for r in covered] == [10, 15, 20, 25]
    assert all("already deferred" in r.summary for r in covered)
    later = [(r.scheduled_for.minute, r.trigger, r.status) for r in five if r.scheduled_for >= opening]
    assert later == [(30, "schedule", "skipped"), (35, "schedule", "ok"), (40, "schedule", "ok")]
    assert "still running" in next(r for r in five if r.scheduled_for == opening).summary
    seven = history.runs(job="seven")
    assert seven and all(r.status == "skipped" and "blackout" in r.summary for r in seven)


class _DoneAfterSubmitReturns(ThreadPoolExecutor):
    """Each work item runs on a thread of its own, to its end, before ``submit`` returns; its future is marked done
    only when ``release`` is set.  The ordering a loaded machine can give a real pool: the run's thread leaves the
    work function, the daemon's thread records the future (not done yet), then the pool's thread marks it done."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.release = threading.Event()
        self.threads: list[threading.Thread] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        returned = threading.Event()

        def run() -> None:
            fut.set_running_or_notify_cancel()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # pragma: no cover - surfaced by the future
                returned.set()
                self.release.wait(10)
                fut.set_exception(exc)
                return
            returned.set()
            self.release.wait(10)
            fut.set_result(result)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append(t)
        assert returned.wait(10), "the run did not finish"
        return fut


def test_a_run_finishing_before_its_future_is_recorded_leaves_nothing_in_flight(tmp_path: Path) -> None:
    """A run whose work returned before ``_submit`` recorded its future (done only later) left its entry in
    ``_inflight`` for good: the daemon grew by one entry each time, and at stop ``drain`` reported the finished
    run as interrupted ('1 run(s) marked interrupted')."""
    url = f"sqlite:///{tmp_path / 'h.db'}"
    setup = make_setup(url)
    clock = SimClock(START)
    d = make_daemon(setup, url, clock, "n")
    pool = _DoneAfterSubmitReturns()
    d.pool = pool
    d.prepare()
    clock.set(START + timedelta(minutes=5))
    claimed = d.tick().claimed
    assert claimed
    pool.release.set()
    for t in pool.threads:
        t.join(10)
    assert d._inflight == {}
    assert d.drain(timedelta(seconds=1)) == []
    runs = History(url).runs(limit=100)
    assert {r.id for r in runs} >= {rid for _j, _s, rid in claimed}
    assert {r.status for r in runs if r.id in {rid for _j, _s, rid in claimed}} == {"ok"}


def test_failed_run_schedules_a_retry_with_backoff(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    extra = """  flaky:
    task: debug.fail
    schedule: "0 13 * * *"
    retries: 2
    retry_delay: 2m
"""
    setup = make_setup(url, extra)
    clock = SimClock(START)
    d = make_daemon(setup, url, clock, "n")
    d.pending_poll = timedelta(seconds=30)
    drive([d], clock, START + timedelta(hours=1, minutes=10))
    runs = sorted(History(url).runs(job="flaky"), key=lambda r: r.attempt)
    assert [(r.attempt, r.trigger, r.status) for r in runs] == [
        (1, "schedule", "fail"), (2, "retry", "fail"), (3, "retry", "fail")]
    # 2 minutes, then 4 minutes (exponential)
    assert runs[1].scheduled_for - runs[0].finished_at == timedelta(minutes=2)  # type: ignore[operator]
    assert runs[2].scheduled_for - runs[1].finished_at == timedelta(minutes=4)  # type: ignore[operator]


def test_target_lock_serializes_exclusive_jobs(tmp_path: Path) -> None:
    """Two exclusive jobs on one target never overlap, even when started together."""
    import dataclasses
    import time

    from upkeeper.core.task import Result, Task, TaskContext, TaskOptions

    spans: list[tuple[str, float, float]] = []

    class Heavy(Task[TaskOptions]):
        name = "test.heavy"
        summary = "x"
        exclusive = True

        def run(self, ctx: TaskContext, options: TaskOptions) -> Result:
            t0 = time.monotonic()
            time.sleep(0.4)
            spans.append((ctx.job, t0, time.monotonic()))
            return Result(summary="done")

    url = f"sqlite:///{tmp_path / 'h.db'}"
    setup = make_setup(url)
    base = setup.jobs["manual"]
    a = dataclasses.replace(base, name="heavy-a", task_cls=Heavy, target_name="db")
    b = dataclasses.replace(base, name="heavy-b", task_cls=Heavy, target_name="db")
    history = History(url)
    runner = Runner(setup=setup, history=history, executor=InlineExecutor(history=history), owner="me:1:1",
                    node="me", target_lock_poll=0.05)
    threads = [threading.Thread(target=runner.run_manual, args=(j,)) for j in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(spans) == 2
    (_, s1, e1), (_, s2, e2) = sorted(spans, key=lambda s: s[1])
    assert s2 >= e1  # the second started only after the first finished


def test_daemon_applies_history_retention(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    setup = make_setup(url, "history_retention:\n  runs: 30d\n")
    history = History(url)
    now = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    old, kept = (history.create_run(NewRun(job="manual", task="debug.noop", target=None, scheduled_for=t,
                                           trigger="manual", status="ok"), "o:1:1", "o")
                 for t in (now - timedelta(days=40), now - timedelta(days=35)))
    d = make_daemon(setup, url, SimClock(now), "n")
    d.prepare()
    d.tick()
    assert d.wait_pruned() and d.wait_idle()
    ids = {r.id for r in history.runs(job="manual")}
    assert old not in ids and kept in ids  # older than 30 days, but the job's latest run: kept


class _SteppingClock:
    """A fake wall clock that can step back, as NTP does (SimClock only moves forward)."""

    def __init__(self, start: datetime) -> None:
        self.at = start

    def now(self) -> datetime:
        return self.at

    def sleep_until(self, when: datetime, wake: threading.Event) -> None:  # pragma: no cover - not looped here
        raise AssertionError("the test ticks by hand")


def test_a_clock_stepped_back_does_not_hold_up_pending_runs(tmp_path: Path) -> None:
    """The wall clock steps back 10 minutes after a tick: a planned run due then starts at the next poll, not
    10 minutes (the step) later, and no occurrence fires twice."""
    url = f"sqlite:///{tmp_path / 'h.db'}"
    setup = make_setup(url)
    t0 = datetime(2026, 3, 28, 12, 2, tzinfo=UTC)
    clock = _SteppingClock(t0)
    history = History(url)
    runner = Runner(setup=setup, history=history, executor=InlineExecutor(clock=clock.now, history=history),
                    owner="n:1:1", node="n", clock=clock.now, history_url=url)
    d = Daemon(setup, history, runner, clock=clock, instance="n:1:1", pending_poll=timedelta(minutes=1),
               housekeeping=timedelta(hours=6))
    d.prepare()
    d.tick()  # polls pending runs; the next poll is due at t0 + 1 minute by the clock as it was
    clock.at = t0 - timedelta(minutes=10)  # NTP steps the clock back
    rid = history.create_run(NewRun(job="manual", task="debug.noop", target=None, scheduled_for=clock.at,
                                    due_at=clock.at, trigger="planned", status="pending"), "cli:1:1", "n")
    assert rid is not None
    d.tick()
    clock.at += timedelta(minutes=1)
    report = d.tick()
    assert d.wait_idle(30)
    assert ("manual", clock.at - timedelta(minutes=1), rid) in report.claimed
    row = history.get_run(rid)
    assert row is not None and row.status == "ok"
    clock.at = datetime(2026, 3, 28, 12, 5, 30, tzinfo=UTC)  # back past t0: the 12:05 occurrences fire, once
    d.tick()
    assert d.wait_idle(30)
    fired = Counter((r.job, r.scheduled_for) for r in history.runs(limit=1000))
    assert max(fired.values()) == 1
    assert fired[("five", datetime(2026, 3, 28, 12, 5, tzinfo=UTC))] == 1


def test_a_daemon_that_fell_days_behind_does_not_run_the_old_occurrence(tmp_path: Path) -> None:
    """The machine is suspended for three days (or the clock jumps forward): on the next tick, the occurrence that
    was next when it stopped (two days old) is not run as if on schedule -- with ``catch_up: skip`` nothing runs
    and one skipped run names the missed occurrences; with ``latest`` only the newest runs, once."""
    start = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    resumed = datetime(2026, 3, 13, 10, 0, tzinfo=UTC)
    for policy in ("skip", "latest"):
        url = f"sqlite:///{tmp_path / f'{policy}.db'}"
        setup = make_setup(url, f"defaults:\n  catch_up: {policy}\n")
        clock = SimClock(start)
        d = make_daemon(setup, url, clock, "n")
        d.jobs = {"berlin-0230": d.jobs["berlin-0230"]}
        d.prepare()
        clock.set(resumed)
        d.tick()
        assert d.wait_idle(30)
        rows = d.history.runs(job="berlin-0230")
        newest = datetime(2026, 3, 13, 1, 30, tzinfo=UTC)  # 02:30 CET
        if policy == "skip":
            assert [(r.scheduled_for, r.status, r.trigger) for r in rows] == [(newest, "skipped", "catch-up")]
            assert "3 occurrence(s)" in rows[0].summary
        else:
            assert [(r.scheduled_for, r.status, r.trigger) for r in rows] == [(newest, "ok", "catch-up")]
        clock.set(resumed + timedelta(days=1))  # back on schedule: the next night runs as usual
        d.tick()
        assert d.wait_idle(30)
        assert d.history.runs(job="berlin-0230")[0].scheduled_for == newest + timedelta(days=1)
        d.pool.shutdown(wait=True)
        d.history.close()


# -- catch-up: only occurrences no daemon serving the job was running through ------------------------------

NIGHTLY = "version: 1\ntimezone: UTC\njobs:\n  nightly:\n    task: debug.noop\n    schedule: \"{cron}\"\n{extra}"
DAY = datetime(2026, 3, 10, tzinfo=UTC)


def nightly_setup(url: str, cron: str, extra: str = "") -> Setup:
    return build_setup(load_text(f"history: {url}\n" + NIGHTLY.format(cron=cron, extra=extra)))


def served_until(url: str, clock: SimClock, cron: str, name: str, until: datetime, *, stop: bool) -> None:
    """A daemon ``name`` serving ``nightly`` on ``cron`` from the clock's time until ``until``: stopped
    there (``stop``), or dead with its last heartbeat there."""
    d = make_daemon(nightly_setup(url, cron), url, clock, name)
    d.prepare()
    while d._heap and d._heap[0].due_at <= until:  # it ticks when its occurrences come due (a stall would not)
        clock.set(d._heap[0].due_at)
        d.tick()
    clock.set(until)
    d.tick()
    assert d.wait_idle(30)
    if stop:
        d.drain(timedelta(seconds=5))
    else:
        d._heartbeat()
        d.pool.shutdown(wait=True)
    d.history.close()


def nightly_runs(url: str) -> list[tuple[datetime, str, str]]:
    h = History(url)
    try:
        return sorted((r.scheduled_for, r.trigger, r.status) for r in h.runs(job="nightly"))
    finally:
        h.close()


def test_a_schedule_change_and_restart_does_not_catch_up_what_a_daemon_ran_through(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    clock = SimClock(DAY + timedelta(hours=1))  # 0 3 until 10:00, restarted with 0 4: 04:00 was no one's miss
    served_until(url, clock, "0 3 * * *", "old", DAY + timedelta(hours=10), stop=True)
    assert nightly_runs(url) == [(DAY + timedelta(hours=3), "schedule", "ok")]
    d = make_daemon(nightly_setup(url, "0 4 * * *"), url, clock, "new")
    report = d.prepare()
    assert d.wait_idle(30)
    assert report.claimed == [] and report.skipped == []
    assert nightly_runs(url) == [(DAY + timedelta(hours=3), "schedule", "ok")]
    assert d._heap[0].scheduled_for == DAY + timedelta(days=1, hours=4)
    d.drain(timedelta(seconds=5))


def test_a_real_downtime_after_a_schedule_change_still_catches_up(tmp_path: Path) -> None:
    for cron, hour in (("0 4 * * *", 4), ("0 3 * * *", 3)):  # changed, or not: either was missed
        url = f"sqlite:///{tmp_path / f'h{hour}.db'}"
        clock = SimClock(DAY - timedelta(hours=22))  # ran yesterday's 03:00, stopped today at 02:00
        served_until(url, clock, "0 3 * * *", "old", DAY + timedelta(hours=2), stop=True)
        clock.set(DAY + timedelta(hours=10))
        d = make_daemon(nightly_setup(url, cron), url, clock, "new")
        d.prepare()
        assert d.wait_idle(30)
        d.drain(timedelta(seconds=5))
        assert nightly_runs(url) == [(DAY - timedelta(hours=21), "schedule", "ok"),
                                     (DAY + timedelta(hours=hour), "catch-up", "ok")]


def test_a_dead_daemon_counts_as_down_after_its_last_heartbeat_and_another_nodes_jobs_do_not_count(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    clock = SimClock(DAY - timedelta(hours=22))
    served_until(url, clock, "0 3 * * *", "old", DAY + timedelta(hours=2), stop=False)  # killed after 02:00
    # a daemon of another node, sharing the history, running all along but without the job 'nightly'
    other = make_daemon(build_setup(load_text(f"history: {url}\nversion: 1\njobs:\n  other:\n    task: debug.noop\n"
                                              "    schedule: '0 9 * * *'\n")), url, clock, "other")
    other.prepare()
    clock.set(DAY + timedelta(hours=10))
    other._heartbeat()
    d = make_daemon(nightly_setup(url, "0 4 * * *"), url, clock, "new")
    d.prepare()
    assert d.wait_idle(30)
    assert nightly_runs(url)[-1] == (DAY + timedelta(hours=4), "catch-up", "ok")
    d.drain(timedelta(seconds=5))
    other.drain(timedelta(seconds=5))


def test_a_daemon_draining_after_a_stop_served_nothing_more(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    clock = SimClock(DAY + timedelta(hours=1))
    old = make_daemon(nightly_setup(url, "0 4 * * *"), url, clock, "old")
    old.prepare()
    clock.set(DAY + timedelta(hours=3, minutes=59))
    old.stop()  # asked to stop at 03:59; the drain of a long run lasts until 04:30: it claims no 04:00
    clock.set(DAY + timedelta(hours=4, minutes=30))
    old.drain(timedelta(seconds=5))
    old.history.close()
    clock.set(DAY + timedelta(hours=10))
    d = make_daemon(nightly_setup(url, "0 4 * * *"), url, clock, "new")
    d.history.create_run(NewRun(job="nightly", task="debug.noop", target=None, scheduled_for=DAY - timedelta(hours=20),
                                status="ok"), "older:1:1", "older")
    d.prepare()
    assert d.wait_idle(30)
    d.drain(timedelta(seconds=5))
    assert nightly_runs(url)[-1] == (DAY + timedelta(hours=4), "catch-up", "ok")


def test_a_daemon_stalled_for_less_than_a_period_applies_the_catch_up_policy_too(tmp_path: Path) -> None:
    """The daemon's loop stalls (SIGSTOP, a suspended VM, a clock jump forward) across one occurrence but not the next
    one: the occurrence, now hours late, follows the job's catch-up policy as after a restart or a longer stall —
    with ``catch_up: skip``, or older than ``catch_up_grace``, it is recorded skipped, not run hours late as if on
    schedule; with ``latest`` within the grace it runs once, as a catch-up."""
    start = datetime(2026, 3, 10, 0, 0, tzinfo=UTC)
    resumed = datetime(2026, 3, 10, 20, 0, tzinfo=UTC)  # 02:30 CET (01:30Z) passed 18.5 hours ago
    occurrence = datetime(2026, 3, 10, 1, 30, tzinfo=UTC)
    for name, extra, expected in (("skip", "  catch_up: skip\n", ("skipped", "catch-up")),
                                  ("grace", "  catch_up_grace: 6h\n", ("skipped", "catch-up")),
                                  ("latest", "", ("ok", "catch-up"))):
        url = f"sqlite:///{tmp_path / f'{name}.db'}"
        setup = make_setup(url, f"defaults:\n{extra}" if extra else "")
        clock = SimClock(start)
        d = make_daemon(setup, url, clock, "n")
        d.jobs = {"berlin-0230": d.jobs["berlin-0230"]}
        d.prepare()
        clock.set(resumed)
        d.tick()
        assert d.wait_idle(30)
        rows = d.history.runs(job="berlin-0230")
        assert [(r.scheduled_for, r.status, r.trigger) for r in rows] == [(occurrence, *expected)], name
        if expected[0] == "skipped":
            assert "missed while the daemon could not run it" in rows[0].summary
        clock.set(datetime(2026, 3, 11, 1, 30, 5, tzinfo=UTC))  # the next night runs on schedule
        d.tick()
        assert d.wait_idle(30)
        assert [(r.status, r.trigger) for r in d.history.runs(job="berlin-0230")][0] == ("ok", "schedule")
        d.pool.shutdown(wait=True)
        d.history.close()


def test_a_daemon_stalled_then_stopped_did_not_serve_the_stall(tmp_path: Path) -> None:
    """The daemon's loop stalls across 03:00 (SIGSTOP, a suspended VM) and it is then stopped (``systemctl
    restart``: SIGTERM, then SIGCONT) before it ticks again: it claimed nothing during the stall, so its lifetime
    ends at its last tick, not at the stop, and the next daemon catches 03:00 up.  It used to count the stall as
    served: 03:00 was neither run nor recorded skipped."""
    url = f"sqlite:///{tmp_path / 'h.db'}"
    clock = SimClock(DAY - timedelta(hours=22))  # yesterday 02:00: yesterday's 03:00 runs on schedule
    old = make_daemon(nightly_setup(url, "0 3 * * *"), url, clock, "old")
    old.prepare()
    clock.set(DAY - timedelta(hours=21))
    old.tick()
    clock.set(DAY + timedelta(hours=1))
    old.tick()  # its last tick, at 01:00: it stalls until 10:00
    assert old.wait_idle(30)
    clock.set(DAY + timedelta(hours=10))
    old.drain(timedelta(seconds=5))
    old.history.close()
    d = make_daemon(nightly_setup(url, "0 3 * * *"), url, clock, "new")
    d.prepare()
    assert d.wait_idle(30)
    d.drain(timedelta(seconds=5))
    assert nightly_runs(url) == [(DAY - timedelta(hours=21), "schedule", "ok"),
                                 (DAY + timedelta(hours=3), "catch-up", "ok")]


def test_a_short_interval_job_fires_once_after_a_stall_within_the_tolerance(tmp_path: Path) -> None:
    """An ``every 20s`` job and a 70-second stall: three occurrences came due, each less than the 60 s on-time
    tolerance late when the loop ticks again.  Only the newest runs (on schedule); the others are one skipped
    run, as after any fall-behind -- they used to fire one after the other in that tick (seen with a real daemon
    and SIGSTOP: 3 fired, one of them skipped as an overlap)."""
    url = f"sqlite:///{tmp_path / 'h.db'}"
    setup = build_setup(load_text(f"history: {url}\nversion: 1\njobs:\n  tick:\n    task: debug.noop\n"
                                  "    schedule: every 20s\n    catch_up: skip\n"))
    t0 = datetime(2026, 3, 10, 12, 0, 5, tzinfo=UTC)
    clock = SimClock(t0)
    d = make_daemon(setup, url, clock, "n")
    d.prepare()
    clock.set(t0 + timedelta(seconds=70))  # 12:00:20, :40 and 12:01:00 came due meanwhile
    d.tick()
    assert d.wait_idle(30)
    rows = sorted((r.scheduled_for.second + 60 * (r.scheduled_for.minute), r.trigger, r.status)
                  for r in d.history.runs(job="tick"))
    assert rows == [(40, "catch-up", "skipped"), (60, "schedule", "ok")]
    d.drain(timedelta(seconds=5))


@pytest.fixture
def history_server(services_dir: Path) -> Iterator[PostgresCluster]:
    """A PostgreSQL server of the test's own, holding the history (database ``h``): the test stops it."""
    cluster = PostgresCluster(services_dir / f"pg-history-outage-{os.getpid()}")
    cluster.start()
    try:
        cluster.create_database("h")
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.base, ignore_errors=True)


def test_an_occurrence_due_while_the_history_is_down_is_claimed_when_it_is_back(
        history_server: PostgresCluster) -> None:
    """The PostgreSQL history stops (a restart, a failover) just before an occurrence is due: the tick that pops
    it fails to claim it.  The occurrence is not lost: back within the on-time tolerance it runs on schedule;
    after a longer outage it is handled as after a stall (``catch_up: latest``: it runs once, as a catch-up).  It
    used to be dropped from the plan with nothing recorded -- and a restart did not catch it up either (the
    daemon was running through it)."""
    url = f"postgresql+psycopg://postgres@127.0.0.1:{history_server.port}/h"
    setup = build_setup(load_text(f"history: {url}\nversion: 1\njobs:\n  hourly:\n    task: debug.noop\n"
                                  f"    schedule: '@hourly'\n"))
    clock = SimClock(START)
    d = make_daemon(setup, url, clock, "node-a")
    d.pending_poll = timedelta(seconds=5)  # as in production: the occurrence's tick finds no pending poll due
    d.prepare()
    for down_for, trigger in ((timedelta(seconds=10), "schedule"), (timedelta(minutes=20), "catch-up")):
        due = d._heap[0].scheduled_for
        clock.set(due - timedelta(seconds=2))
        d.tick()  # the last tick before the outage polls the pending runs
        history_server.stop()
        clock.set(due)
        with pytest.raises(OperationalError):  # the loop logs it and ticks again a few seconds later
            d.tick()
        history_server.start()
        clock.set(due + down_for)
        report = d.tick()
        assert d.wait_idle(30)
        assert [(job, at) for job, at, _ in report.claimed] == [("hourly", due)], report
        row = d.history.get_run(report.claimed[0][2])
        assert row is not None and row.status == "ok" and row.trigger == trigger
    d.pool.shutdown(wait=True)
    d.history.close()


def test_a_run_ending_while_the_history_is_down_is_recorded_when_it_is_back(
        history_server: PostgresCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The history server stops while a run is under way: its outcome is recorded once the server is back, with
    the job lock released.  It used to stay ``running`` for as long as the daemon lived (its owner alive, nothing
    recovered it), its outcome lost and ``error`` returned."""
    url = f"postgresql+psycopg://postgres@127.0.0.1:{history_server.port}/h"
    pid = tmp_path / "pid"
    setup = build_setup(load_text(f"history: {url}\nversion: 1\njobs:\n  nap:\n    task: debug.sleep\n"
                                  f"    options: {{seconds: 1, pid_file: '{pid}'}}\n"))
    history = History(url)
    runner = Runner(setup=setup, history=history, executor=InlineExecutor(history=history), owner="n:1:1",
                    node="n", history_url=url)
    now = datetime.now(UTC)
    rid = history.create_run(NewRun(job="nap", task="debug.sleep", target=None, scheduled_for=now, due_at=now),
                             "n:1:1", "n")
    assert rid is not None
    got: list[str] = []
    t = threading.Thread(target=lambda: got.append(runner.execute(rid, setup.jobs["nap"], scheduled_for=now)[0]))
    t.start()
    wait_for("the task to start", pid.exists)
    history_server.stop()
    wait_for("the run to end", lambda: not t.is_alive() or "cannot record the outcome (ok)" in caplog.text)
    history_server.start()
    t.join(60)
    assert not t.is_alive() and got == ["ok"]
    row = history.get_run(rid)
    assert row is not None and row.status == "ok" and row.summary == "slept 1s"
    assert history.lock_holder("job:nap") is None
    runner.close()
    history.close()


def test_a_stop_asked_during_a_tick_claims_nothing_more(tmp_path: Path) -> None:
    """SIGTERM arrives while a tick decides (the history answers slowly, the start's catch-up): the occurrences
    of that tick are not claimed -- the daemon's lifetime ended with the stop, and the next daemon runs or catches
    them up.  They used to be claimed and started, only to be killed at the end of the shutdown grace."""
    url = f"sqlite:///{tmp_path / 'h.db'}"
    setup = make_setup(url)
    clock = SimClock(START)
    d = make_daemon(setup, url, clock, "node-a")
    d.prepare()
    clock.set(START + timedelta(minutes=5))
    d.tick()
    assert d.wait_idle(30)
    before = len(d.history.runs(limit=100))

    class StopArrives:  # the signal handler runs while the tick is deciding
        def decide(self, job: Job, occurrence: datetime, now: datetime, trigger: str) -> Decision:
            d.stop()
            return Decision.admit()

    d.policies = [StopArrives()]
    clock.set(START + timedelta(minutes=10))
    report = d.tick()
    assert report.claimed == [] and d.wait_idle(30)
    assert len(d.history.runs(limit=100)) == before
    assert d.drain(timedelta(seconds=5)) == []
    d.history.close()
    clock.set(START + timedelta(minutes=11))  # the next daemon catches it up
    d2 = make_daemon(setup, url, clock, "node-b")
    caught = d2.prepare()
    assert d2.wait_idle(30)
    assert ("five", START + timedelta(minutes=10)) in {(job, at) for job, at, _ in caught.claimed}
    d2.pool.shutdown(wait=True)
    d2.history.close()


def test_leases_and_heartbeats_that_ran_out_while_the_history_was_down_are_not_taken_for_dead(
        history_server: PostgresCluster) -> None:
    """The history server was down for minutes: no process could renew its locks' leases nor write its heartbeat.
    Right after it is back, a process that lost it too takes neither for a sign of death -- it takes over no lock
    whose holder may still run (a target lock: two backups or a VACUUM FULL at once on one server) and marks no
    other node's running run ``interrupted`` ("the process running it died"), until the others had the time to
    renew them (``lease_grace``).  A holder that did die is taken over then."""
    url = f"postgresql+psycopg://postgres@127.0.0.1:{history_server.port}/h"
    here, there = History(url), History(url)
    owner = "othernode:4242:1700000000"
    now = datetime.now(UTC)
    there.daemon_heartbeat(owner, "othernode", 4242, now - timedelta(minutes=10), 1, "1", job_names=["backup"],
                           at=now - timedelta(minutes=3))  # its last heartbeat before the outage
    rid = there.create_run(NewRun("backup", "debug.noop", "db", now, status="running"), owner, "othernode")
    assert rid is not None
    # its leases ran out during the outage (renewed every 30 s, for 90 s)
    assert there.acquire_lock("target:db", f"{owner}/{rid}", "othernode", timedelta(seconds=-1))
    history_server.stop()
    with pytest.raises(OperationalError):
        here.lock_holder("target:db")
    history_server.start()
    assert not here.acquire_lock("target:db", "n:1:1/7", "n", timedelta(seconds=90))
    assert here.recover_orphans("n") == []
    holder = here.lock_holder("target:db")
    assert holder is not None and holder.owner == f"{owner}/{rid}"
    here.lease_grace = timedelta(0)  # the others had the time to renew them: that one did not, it is gone
    assert here.acquire_lock("target:db", "n:1:1/7", "n", timedelta(seconds=90))
    assert here.recover_orphans("n") == [rid]
    here.close()
    there.close()


def test_a_process_started_after_a_history_outage_takes_no_lease_that_ran_out_during_it_for_dead(
        history_server: PostgresCluster) -> None:
    """The history server is down for a while: no holder can renew its leases.  A process that *starts* once it is
    back (a cron ``upkeeper run``, a daemon started on another node) never saw the outage, so its own
    ``recently_lost`` is no help: it took a lease of another node's live run that ran out meanwhile for dead at
    once -- the same job started twice at once (two backups into one set), the target lock taken over (two heavy
    operations on one server), the live run marked ``interrupted`` and its job reported missed.  Now a lease
    whose holder cannot be checked here counts only once it ran out ``lease_grace`` ago (and a heartbeat once it
    is that much older than ``stale_after``); a holder of this node proven dead by its PID is taken over at once,
    and so is one whose lease ran out longer ago than that."""
    from upkeeper.core.history import process_identity
    from upkeeper.notify.checks import running_jobs

    url = f"postgresql+psycopg://postgres@127.0.0.1:{history_server.port}/h"
    there = History(url)  # the other node's daemon, running a backup and holding its leases
    owner = "othernode:4242:1700000000"
    now = datetime.now(UTC)
    # its last heartbeat, before the outage: older than stale_after (2 minutes) by the time the history is back
    there.daemon_heartbeat(owner, "othernode", 4242, now - timedelta(hours=1), 2, "1",
                           job_names=["backup", "report"], at=now - timedelta(minutes=2, seconds=5))
    rid = there.create_run(NewRun("backup", "debug.noop", "db", now, status="running"), owner, "othernode")
    queued = there.create_run(NewRun("report", "debug.noop", None, now), owner, "othernode")  # waits for a worker
    assert rid is not None and queued is not None
    short = timedelta(seconds=2)  # stands for the 90 s lease the outage lets run out
    assert there.acquire_lock("job:backup", f"{owner}/{rid}", "othernode", short)
    assert there.acquire_lock("target:db", f"{owner}/{rid}", "othernode", short)
    ran_out = datetime.now(UTC) + short
    # a live process of this node whose lease ran out too (its lock keeper could not renew it either)
    mine = there.create_run(NewRun("vacuum", "debug.noop", None, now, status="running"), process_identity(), "n")
    assert mine is not None and there.acquire_lock("job:vacuum", f"{process_identity()}/{mine}", "n", short)
    # and two holders that are gone: another node's, whose lease ran out long before; one of this node, dead
    gone = there.create_run(NewRun("prune", "debug.noop", None, now, status="running"), "othernode:4343:1",
                            "othernode")
    assert gone is not None and there.acquire_lock("job:prune", f"othernode:4343:1/{gone}", "othernode",
                                                   -there.lease_grace - timedelta(seconds=1))
    host = process_identity().rsplit(":", 2)[0]
    dead = there.create_run(NewRun("analyze", "debug.noop", None, now, status="running"), f"{host}:999999:1", "n")
    assert dead is not None and there.acquire_lock("job:analyze", f"{host}:999999:1/{dead}", "n", timedelta(hours=1))

    history_server.stop()
    wait_for("the leases to run out during the outage", lambda: datetime.now(UTC) > ran_out + timedelta(seconds=1))
    history_server.start()
    fresh = History(url)  # started after the outage: it never failed to reach the history
    assert not fresh.recently_lost()
    me = process_identity()
    later = fresh.create_run(NewRun("backup", "debug.noop", "db", now + timedelta(minutes=1)), me, "n")
    assert later is not None
    assert not fresh.start_run_locked(later, datetime.now(UTC), me, "job:backup", f"{me}/{later}", "n",
                                      timedelta(seconds=90))
    assert not fresh.acquire_lock("target:db", f"{me}/{later}", "n", timedelta(seconds=90))
    assert not fresh.acquire_lock("job:vacuum", f"{me}/99", "n", timedelta(seconds=90))
    assert "backup" in running_jobs(fresh, datetime.now(UTC))
    assert sorted(fresh.recover_orphans("n")) == sorted([gone, dead])
    assert {j: fresh.get_run(r).status for j, r in  # type: ignore[union-attr]
            (("backup", rid), ("report", queued), ("vacuum", mine), ("prune", gone), ("analyze", dead))} == {
        "backup": "running", "report": "queued", "vacuum": "running", "prune": "interrupted",
        "analyze": "interrupted"}
    assert fresh.acquire_lock("job:prune", f"{me}/98", "n", timedelta(seconds=90))
    assert fresh.acquire_lock("job:analyze", f"{me}/97", "n", timedelta(seconds=90))
    for lock in ("job:backup", "target:db"):
        holder = fresh.lock_holder(lock)
        assert holder is not None and holder.owner == f"{owner}/{rid}"
    there.refresh_locks(owner, timedelta(seconds=90))  # its lock keeper renews them: the backup goes on, alone
    assert not fresh.acquire_lock("target:db", f"{me}/{later}", "n", timedelta(seconds=90))
    fresh.close()
    there.close()


def test_a_run_whose_job_lock_was_taken_over_while_it_ran_says_so(tmp_path: Path) -> None:
    """A run's job lock taken over while it runs -- its lease ran out unrenewed for longer than the lease and its
    grace (the history unreachable that long, this process frozen), so another node took it for a dead holder's
    and may be running the job at the same time.  The run recorded ``ok`` and nobody learnt of it; now it warns,
    with an ``upkeeper.lock_lost`` finding naming who holds the lock, and leaves that holder's lock alone."""
    from sqlalchemy import update

    from upkeeper.core import tables
    from upkeeper.core.history import process_identity
    from upkeeper.core.runner import LOCK_TTL
    from upkeeper.core.task import REGISTRY, NoOptions, Result, Task, TaskContext

    started, go = threading.Event(), threading.Event()

    class Gate(Task[NoOptions]):
        """Runs until the test lets it end."""

        name = "testing.gate"
        summary = "waits for the test"
        target_kinds = ()
        Options = NoOptions
        category = "maintenance"

        def run(self, ctx: TaskContext, options: NoOptions) -> Result:
            started.set()
            assert go.wait(60)
            return Result(summary="done")

    REGISTRY.load()
    REGISTRY._tasks[Gate.name] = Gate
    try:
        url = f"sqlite:///{tmp_path / 'h.db'}"
        setup = build_setup(load_text(f"history: {url}\nversion: 1\njobs:\n  gate:\n    task: testing.gate\n"))
        history, other = History(url), History(url)
        me = process_identity()
        runner = Runner(setup=setup, history=history, executor=InlineExecutor(history=history), owner=me, node="n",
                        history_url=url)
        now = datetime.now(UTC)
        rid = history.create_run(NewRun("gate", "testing.gate", None, now), me, "n")
        assert rid is not None
        got: list[str] = []
        t = threading.Thread(target=lambda: got.append(runner.execute(rid, setup.jobs["gate"], scheduled_for=now)[0]))
        t.start()
        assert started.wait(30)
        runner.keeper.stop()  # its lock keeper cannot renew the lease (an outage of the history, a frozen process)
        with other.transaction() as conn:  # ... for longer than the lease and its grace
            conn.execute(update(tables.locks).where(tables.locks.c.name == "job:gate").values(
                expires_at=datetime.now(UTC) - other.lease_grace - timedelta(seconds=1)))
        assert other.acquire_lock("job:gate", "othernode:77:1/99", "othernode", LOCK_TTL, "run 99")
        go.set()
        t.join(60)
        assert not t.is_alive() and got == ["warn"]
        row = history.get_run(rid)
        assert row is not None and row.status == "warn"
        [finding] = history.findings_for(rid)
        assert finding.check == "upkeeper.lock_lost" and finding.subject == "job:gate"
        assert "held by run 99 on othernode" in finding.message, finding.message
        holder = history.lock_holder("job:gate")  # the run's end released nothing of the new holder's
        assert holder is not None and holder.owner == "othernode:77:1/99"
        runner.close()
        history.close()
        other.close()
    finally:
        REGISTRY._tasks.pop(Gate.name, None)


def test_a_run_whose_job_lock_is_taken_over_while_it_runs_is_stopped(tmp_path: Path) -> None:
    """The lock keeper, still alive, finds at its next refresh that another process took the run's job lock over
    (the lease ran out unrenewed: a history outage longer than the lease and its grace, ended now): the run is
    stopped -- its task and the task's subprocess end -- instead of going on beside the new holder's run to its end
    (it used to, recording ``warn``).  It is recorded ``interrupted``, names the new holder, is not retried, and
    the new holder's lock stays."""
    from sqlalchemy import delete, insert

    from upkeeper.core import tables
    from upkeeper.core.executor import WorkerPool
    from upkeeper.core.history import process_identity
    from upkeeper.core.runner import LOCK_TTL

    url = f"sqlite:///{tmp_path / 'h.db'}"
    pids = tmp_path / "pids"
    setup = build_setup(load_text(f"history: {url}\nversion: 1\njobs:\n  long:\n    task: debug.sleep\n"
                                  f"    retries: 2\n    options: {{seconds: 120, subprocess: true, pid_file: {pids}}}\n"))
    history, other = History(url), History(url)
    me = process_identity()
    pool = WorkerPool(size=1)
    runner = Runner(setup=setup, history=history, executor=pool, owner=me, node="n", history_url=url)
    runner.keeper.every = 0.2
    try:
        now = datetime.now(UTC)
        rid = history.create_run(NewRun("long", "debug.sleep", None, now), me, "n")
        assert rid is not None
        got: list[str] = []
        t = threading.Thread(target=lambda: got.append(runner.execute(rid, setup.jobs["long"], scheduled_for=now)[0]))
        t.start()
        wait_for("the task and its sleep", lambda: pids.exists() and len(pids.read_text().split()) == 2, timeout=60)
        task_pid, sleep_pid = map(int, pids.read_text().split())
        with other.transaction() as conn:  # another node's takeover of a lease that ran out (compare-and-delete)
            conn.execute(delete(tables.locks).where(tables.locks.c.name == "job:long"))
            conn.execute(insert(tables.locks).values(name="job:long", owner="othernode:77:1/99", node="othernode",
                                                     acquired_at=now, expires_at=datetime.now(UTC) + LOCK_TTL,
                                                     purpose="run 99"))
        t.join(60)
        assert not t.is_alive() and got == ["interrupted"]
        for pid in (task_pid, sleep_pid):  # the task and its subprocess ended (not left beside the new run)
            wait_for(f"pid {pid} to end", lambda pid=pid: not Path(f"/proc/{pid}").exists()
                     or Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z", timeout=30)
        row = history.get_run(rid)
        assert row is not None and row.status == "interrupted"
        assert "its lock was taken over while it ran (job:long is held by run 99 on othernode)" in row.summary, \
            row.summary
        assert "asked to stop" not in row.summary and "cleanup ran" in row.summary, row.summary
        [finding] = history.findings_for(rid)
        assert finding.check == "upkeeper.lock_lost" and finding.subject == "job:long"
        assert [r.id for r in history.runs(job="long")] == [rid]  # no retry: the other node runs the job
        holder = history.lock_holder("job:long")
        assert holder is not None and holder.owner == "othernode:77:1/99"
    finally:
        runner.close()
        pool.shutdown()
        history.close()
        other.close()


def test_a_history_outage_logs_one_traceback_then_one_line_per_failed_tick(
        history_server: PostgresCluster, caplog: pytest.LogCaptureFixture) -> None:
    """The daemon's loop while the history server is down: it logged the same traceback (some 40 lines) at every
    try, every 5 s -- a ten-minute outage buried the log in 120 of them -- and each heartbeat its 3-line
    warning.  Now the first failure comes whole (the tick's with its traceback), the same failure again in one
    line with a count, and the recovery is said."""
    url = f"postgresql+psycopg://postgres@127.0.0.1:{history_server.port}/h"
    setup = build_setup(load_text(f"history: {url}\nversion: 1\ndaemon: {{heartbeat: 1s}}\njobs:\n  hourly:\n"
                                  f"    task: debug.noop\n    schedule: '@hourly'\n"))
    clock = SimClock(START)
    d = make_daemon(setup, url, clock, "node-a")
    d.pending_poll = timedelta(seconds=5)
    d.tick_retry = 0.1
    d.prepare()
    history_server.stop()
    caplog.set_level("INFO", logger="upkeeper.core.daemon")
    loop = threading.Thread(target=d.run_forever, daemon=True)
    loop.start()
    try:
        def seen(text: str, n: int = 1) -> Callable[[], bool]:
            def check() -> bool:
                clock.advance(timedelta(seconds=5))  # the pending runs are polled every 5 s: each tick reads
                return sum(text in r.getMessage() for r in caplog.records) >= n
            return check

        wait_for("3 failed ticks", seen("daemon tick failed again", 3))
        wait_for("3 failed heartbeats", seen("heartbeat failed again", 2))
        history_server.start()
        wait_for("the recovery", seen("ticks again"))
        wait_for("a heartbeat written", seen("heartbeat written again"))
    finally:
        d.stop()
        loop.join(30)
    records = [r for r in caplog.records if r.name == "upkeeper.core.daemon" and "tick" in r.getMessage()]
    # whole (with its traceback) the first failure, and again only a failure of another kind: PostgreSQL coming
    # back says "the database system is starting up" for a moment, which a tick on a loaded machine may meet
    whole = [r for r in records if r.exc_info]
    assert whole and whole[0].getMessage().startswith("daemon tick failed; retrying every 0.1s"), records
    kinds = [str(r.exc_info[1]) for r in whole if r.exc_info]
    assert len(set(kinds)) == len(kinds) <= 3 and "Connection refused" in kinds[0], kinds
    again = [r.getMessage() for r in records if "failed again" in r.getMessage()]
    assert again[0].startswith("daemon tick failed again (2 in a row over ") and "OperationalError" in again[0]
    assert all("\n" not in m for m in again)
    back = [r.getMessage() for r in records if "ticks again" in r.getMessage()]
    assert len(back) == 1 and back[0].startswith(
        f"daemon ticks again after {len(again) + len(whole)} failure(s) over "), back
    beats = [r.getMessage() for r in caplog.records if r.getMessage().startswith("heartbeat")]
    assert beats[0].startswith("heartbeat failed: ") and "Connection refused" in beats[0], beats
    anew = [m for m in beats[1:-1] if not m.startswith("heartbeat failed again (")]  # another kind of failure
    assert len(beats) >= 4 and all(m.startswith("heartbeat failed: ") for m in anew), beats
    assert len(set(anew + beats[:1])) == len(anew) + 1 <= 3, beats
    assert beats[-1].startswith(f"heartbeat written again after {len(beats) - 1} failure(s) over "), beats
    assert all("\n" not in m for m in beats[1:] if m not in anew)
    d.pool.shutdown(wait=True)
    d.history.close()


def test_a_stop_while_the_history_is_down_ends_cleanly(history_server: PostgresCluster,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """SIGTERM while the history server is down: the drain cannot mark what it leaves unfinished, says so, and the
    stop goes on (the CLI then stops its workers and its notification channels and exits 0).  It raised, and
    ``upkeeper daemon`` ended with "internal error: OperationalError … report the traceback", exit 1, its
    workers and notification channels never stopped."""
    url = f"postgresql+psycopg://postgres@127.0.0.1:{history_server.port}/h"
    setup = build_setup(load_text(f"history: {url}\nversion: 1\njobs:\n  hourly:\n    task: debug.noop\n"
                                  f"    schedule: '@hourly'\n"))
    d = make_daemon(setup, url, SimClock(START), "node-a")
    d.prepare()
    history_server.stop()
    assert d.drain(timedelta(seconds=1)) == []
    assert "could not mark the runs this daemon left unfinished as interrupted" in caplog.text
    history_server.start()
    d.history.close()
