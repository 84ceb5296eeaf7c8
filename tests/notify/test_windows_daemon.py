"""Windows and blackouts at the daemon's decision point, across a DST change; window notices."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from notify_support import SimDaemon, fail, ok, script, yaml_block
from upkeeper.core.history import NewRun
from upkeeper.notify.events import Payload
from upkeeper.notify.store import NotifyStore


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)  # type: ignore[misc]


def test_window_defers_to_the_opening_across_spring_forward(tmp_path) -> None:
    # Sunday 2025-03-30 in Berlin: 02:00 CET jumps to 03:00 CEST; the window "02:00" opens at 03:00 CEST (01:00Z)
    text = yaml_block({
        "timezone": "Europe/Berlin",
        "windows": {"sunday": {"rrule": "FREQ=WEEKLY;BYDAY=SU", "start": "02:00", "duration": "3h"}},
        "jobs": {"reindex": {"task": "testing.scripted", "schedule": "0 1 * * *", "window": "sunday"},
                 "ping": {"task": "testing.scripted", "schedule": "0 1 * * *"}},
    })
    sim = SimDaemon(tmp_path, text, start=utc(2025, 3, 27, 23, 30))
    try:
        script("reindex", ok("reindexed"))
        sim.daemon.prepare()
        sim.advance(utc(2025, 3, 30, 0, 30), step=timedelta(minutes=30))
        rows = {(r.scheduled_for, r.status, r.trigger): r for r in sim.history.runs(job="reindex")}
        # Friday 01:00 CET (00:00Z): deferred to the opening; Saturday and Sunday 01:00: already waiting
        assert set(rows) == {(utc(2025, 3, 28), "pending", "deferred"), (utc(2025, 3, 29), "skipped", "schedule"),
                             (utc(2025, 3, 30), "skipped", "schedule")}
        pending = rows[(utc(2025, 3, 28), "pending", "deferred")]
        assert pending.due_at == utc(2025, 3, 30, 1, 0)
        assert "outside maintenance window 'sunday'" in pending.summary
        assert "already deferred" in rows[(utc(2025, 3, 29), "skipped", "schedule")].summary
        # the unbound job ran every night
        assert [r.status for r in sim.history.runs(job="ping")] == ["ok", "ok", "ok"]
        sim.advance(utc(2025, 3, 30, 1, 5), step=timedelta(minutes=5))
        ran = sim.history.get_run(pending.id)
        assert ran is not None and ran.status == "ok" and ran.trigger == "deferred"
        assert ran.started_at is not None and utc(2025, 3, 30, 1, 0) <= ran.started_at <= utc(2025, 3, 30, 1, 5)
    finally:
        sim.close()


def test_business_hours_blackout_skips_except_security_across_dst(tmp_path) -> None:
    text = yaml_block({
        "timezone": "Europe/Berlin",
        "blackouts": {"business-hours": {"days": ["mon", "tue", "wed", "thu", "fri"], "hours": "09:00-18:00"}},
        "jobs": {"vacuum": {"task": "testing.scripted", "schedule": "0 * * * *"},
                 "audit": {"task": "testing.scripted", "schedule": "0 * * * *", "category": "security"}},
    })
    # Friday before the change (CET, UTC+1) and Monday after it (CEST, UTC+2)
    for day, offset in ((utc(2025, 3, 28), 1), (utc(2025, 3, 31), 2)):
        sim = SimDaemon(tmp_path / day.date().isoformat(), text, start=day + timedelta(hours=5, minutes=30))
        try:
            sim.daemon.prepare()
            sim.advance(day + timedelta(hours=17, minutes=30), step=timedelta(minutes=30))
            vac = {r.scheduled_for.hour: r for r in sim.history.runs(job="vacuum")}
            first, last = 9 - offset, 18 - offset  # 09:00 and 18:00 local, in UTC
            assert vac[first - 1].status == "ok"
            for h in range(first, last):
                assert vac[h].status == "skipped" and "blackout 'business-hours'" in vac[h].summary, h
            assert vac[last].status == "ok"
            audit = sim.history.runs(job="audit")
            assert {r.status for r in audit} == {"ok"} and len(audit) == len(vac)  # security is excepted
        finally:
            sim.close()


def test_window_notices_ahead_at_start_and_end(make_env, webhook_receiver) -> None:
    env = make_env(yaml_block({
        "notifications": {"channels": {"team": {"kind": "webhook", "url": webhook_receiver.url}}},
        "windows": {"monthly": {"rrule": "FREQ=MONTHLY;BYDAY=1SU", "start": "02:00", "duration": "4h",
                                "description": "monthly maintenance"}},
        "jobs": {"reindex": {"task": "testing.scripted", "schedule": "0 3 * * *", "window": "monthly"},
                 "vacuum": {"task": "testing.scripted", "schedule": "0 3 * * *", "window": "monthly"},
                 "ping": {"task": "testing.scripted", "schedule": "*/5 * * * *"}},
    }), start=utc(2025, 3, 20))
    opening = utc(2025, 4, 6, 2)

    def notices() -> list[dict]:  # type: ignore[type-arg]
        return [Payload.model_validate(r.json()).events[0].model_dump(mode="json") for r in webhook_receiver.requests]

    env.engine.window_notices(opening - timedelta(days=8))
    assert notices() == []
    env.engine.window_notices(opening - timedelta(days=7))
    env.engine.window_notices(opening - timedelta(days=6))  # the same notice is not sent twice
    [n7] = notices()
    assert n7["topic"] == "window" and n7["details"]["lead_seconds"] == 7 * 86400
    assert sorted(n7["details"]["planned"]) == ["reindex", "vacuum"]
    assert "in 7d" in n7["title"] and "2025-04-06 02:00–06:00 UTC" in n7["title"]
    env.engine.window_notices(opening - timedelta(hours=23))
    assert notices()[-1]["details"]["lead_seconds"] == 86400
    env.engine.window_notices(opening + timedelta(minutes=1))
    assert notices()[-1]["details"]["notice"] == "start"
    script("reindex", ok("reindexed 12 indexes"))
    script("vacuum", fail("lock timeout"))
    env.now[0] = opening + timedelta(minutes=10)
    env.run("reindex")
    env.run("vacuum")
    before = len(webhook_receiver.requests)
    env.engine.window_notices(opening + timedelta(hours=4, minutes=1))
    end = [n for n in notices()[before:] if n["topic"] == "window"]
    assert [n["details"]["notice"] for n in end] == ["end"]
    assert end[0]["title"] == "Maintenance window monthly ended: 2 run(s), 1 failed"
    assert {r["job"]: r["status"] for r in end[0]["details"]["runs"]} == {"reindex": "ok", "vacuum": "fail"}
    assert end[0]["severity"] == "warning"
    env.engine.window_notices(opening + timedelta(hours=5))
    assert len([n for n in notices() if n["topic"] == "window"]) == 4  # 7d, 24h, start, end: once each
    assert len(NotifyStore(env.history).events(topic="window")) == 4


def test_a_planned_run_the_daemon_reaches_after_its_window_waits_for_the_next_opening(tmp_path) -> None:
    """A run planned inside the window ('run --at'), but the daemon only comes back after the window closed (or a
    blackout was added since): it is decided again when due, like a deferred run — not started outside the window."""
    text = yaml_block({
        "timezone": "UTC",
        "windows": {"nightly": {"rrule": "FREQ=DAILY", "start": "02:00", "end": "04:00"}},
        "blackouts": {"freeze": {"start": "2025-03-04 22:00", "end": "2025-03-05 12:00"}},
        "jobs": {"reindex": {"task": "testing.scripted", "window": "nightly"},
                 "vacuum": {"task": "testing.scripted"}},
    })
    sim = SimDaemon(tmp_path, text, start=utc(2025, 3, 4, 9, 0))  # the daemon was down from before 02:30
    try:
        script("reindex", ok("reindexed"))
        script("vacuum", ok("vacuumed"))
        planned = {}
        for job, at in (("reindex", utc(2025, 3, 4, 2, 30)), ("vacuum", utc(2025, 3, 4, 23, 0))):
            planned[job] = sim.history.create_run(
                NewRun(job=job, task="testing.scripted", target=None, scheduled_for=at, due_at=at,
                       trigger="planned", status="pending", summary="planned by alice"), "cli:alice", "sim")
        sim.daemon.prepare()
        sim.advance(utc(2025, 3, 4, 9, 10))
        row = sim.history.get_run(planned["reindex"])
        assert row is not None and (row.status, row.due_at) == ("pending", utc(2025, 3, 5, 2, 0))
        assert "outside maintenance window 'nightly'" in row.summary
        sim.advance(utc(2025, 3, 4, 23, 10))  # the vacuum planned for 23:00 falls in the freeze added since
        row = sim.history.get_run(planned["vacuum"])
        assert row is not None and row.status == "skipped" and "blackout 'freeze'" in row.summary
        sim.advance(utc(2025, 3, 5, 2, 10))  # the window opens, but the freeze still holds: skipped too
        row = sim.history.get_run(planned["reindex"])
        assert row is not None and row.status == "skipped" and "blackout 'freeze'" in row.summary
    finally:
        sim.close()


def test_a_retry_is_decided_like_any_run_no_retry_in_a_blackout_nor_outside_the_window(tmp_path) -> None:
    """A failed run's retry comes due after a blackout began, or after the job's window closed: it is decided at
    the decision point like any run — skipped in the blackout (recorded), deferred to the window's next opening
    (where it runs, still attempt 2) — never started inside the freeze or outside the window."""
    text = yaml_block({
        "timezone": "UTC",
        "windows": {"nightly": {"rrule": "FREQ=DAILY", "start": "02:00", "end": "04:00"}},
        "blackouts": {"freeze": {"start": "2025-03-03 22:00", "end": "2025-03-04 01:00"}},
        "jobs": {"vacuum": {"task": "testing.scripted", "schedule": "0 21 3 3 *", "retries": 1,
                            "retry_delay": "90m"},
                 "reindex": {"task": "testing.scripted", "schedule": "50 3,5 3 3 *", "window": "nightly",
                             "retries": 1, "retry_delay": "30m"}},
    })
    sim = SimDaemon(tmp_path, text, start=utc(2025, 3, 3, 3, 0))
    try:
        script("vacuum", fail("lock timeout"), ok("vacuumed"))
        script("reindex", fail("lock timeout"), ok("reindexed"))
        sim.daemon.pending_poll = timedelta(seconds=30)
        sim.daemon.prepare()
        sim.advance(utc(2025, 3, 3, 4, 30), step=timedelta(minutes=10))  # reindex failed at 03:50; its retry, due 04:20, is outside the window
        rows = sorted(sim.history.runs(job="reindex"), key=lambda r: r.attempt)[:2]
        assert [(r.attempt, r.trigger, r.status) for r in rows] == [(1, "schedule", "fail"), (2, "retry", "pending")]
        assert rows[1].due_at == utc(2025, 3, 4, 2, 0) and "outside maintenance window 'nightly'" in rows[1].summary
        sim.advance(utc(2025, 3, 3, 6, 0), step=timedelta(minutes=10))
        sim.advance(utc(2025, 3, 3, 23, 0), step=timedelta(minutes=30))  # vacuum failed at 21:00; its retry, due 22:30, falls in the freeze
        rows = sorted(sim.history.runs(job="vacuum"), key=lambda r: r.attempt)
        assert [(r.attempt, r.trigger, r.status) for r in rows] == [(1, "schedule", "fail"), (2, "retry", "skipped")]
        assert "blackout 'freeze'" in rows[1].summary and rows[1].started_at is None
        # 05:50, outside the window, was covered by the waiting retry: one run at the opening, not two
        [covered] = [r for r in sim.history.runs(job="reindex") if r.scheduled_for == utc(2025, 3, 3, 5, 50)]
        assert covered.status == "skipped" and "retry 2" in covered.summary and "covers this one" in covered.summary
        sim.advance(utc(2025, 3, 4, 2, 10), step=timedelta(minutes=10))  # the window opens (the freeze is over): the held retry runs now
        rows = sorted(sim.history.runs(job="reindex"), key=lambda r: (r.attempt, r.scheduled_for))
        assert [(r.attempt, r.trigger, r.status) for r in rows] == [
            (1, "schedule", "fail"), (1, "schedule", "skipped"), (2, "retry", "ok")]
        assert rows[2].started_at is not None and rows[2].started_at >= utc(2025, 3, 4, 2, 0)
        assert [r.status for r in sim.history.runs(job="vacuum")].count("ok") == 0  # not run late either
    finally:
        sim.close()


def test_a_manual_runs_retry_waits_out_its_backoff_then_is_skipped_if_a_blackout_began(make_env) -> None:
    """'upkeeper run JOB' started before a blackout: its retry, once the backoff is over, falls inside it and is
    recorded skipped (trigger retry, attempt 2) instead of run; an excepted category's retry still runs."""
    from upkeeper.cli._gate import retry_hold
    from upkeeper.notify.policy import Calendar

    env = make_env(yaml_block({
        "blackouts": {"freeze": {"start": "2025-03-03 12:30", "end": "2025-03-03 18:00"}},
        "jobs": {"vacuum": {"task": "testing.scripted", "retries": 2, "retry_delay": "45m"},
                 "audit": {"task": "testing.scripted", "retries": 2, "retry_delay": "45m",
                           "category": "security"}},
    }), start=utc(2025, 3, 3, 12, 0))
    hold = retry_hold(Calendar(env.setup.config))

    def sleep(seconds: float) -> None:  # the backoff, on the simulated clock
        env.now[0] += timedelta(seconds=seconds)

    for job in ("vacuum", "audit"):
        env.now[0] = utc(2025, 3, 3, 12, 0)
        script(job, fail("lock timeout"), ok("done"))
        rid, _outcome, status = env.runner.run_manual(env.setup.job(job), sleep=sleep, hold=hold)
        rows = sorted(env.history.runs(job=job), key=lambda r: r.attempt)
        if job == "vacuum":
            assert status == "fail" and rid == rows[0].id  # the failure stands
            assert [(r.attempt, r.trigger, r.status) for r in rows] == [(1, "manual", "fail"), (2, "retry", "skipped")]
            assert "blackout 'freeze'" in rows[1].summary and rows[1].started_at is None
        else:
            assert status == "ok"
            assert [(r.attempt, r.trigger, r.status) for r in rows] == [(1, "manual", "fail"), (2, "retry", "ok")]


def test_a_retry_waiting_for_the_window_of_a_job_since_disabled_or_removed_is_not_left_pending(tmp_path) -> None:
    """A retry deferred to its window's opening, then the job is disabled (or removed) and the daemon restarted: the
    daemon that no longer has the job records the pending retry skipped, saying why, rather than leave it pending
    forever (to fire, months later, the moment the job is enabled again)."""
    job = {"task": "testing.scripted", "schedule": "50 3 * * *", "window": "nightly", "retries": 1,
           "retry_delay": "30m"}
    base = {"timezone": "UTC", "windows": {"nightly": {"rrule": "FREQ=DAILY", "start": "02:00", "end": "04:00"}}}
    sim = SimDaemon(tmp_path, yaml_block({**base, "jobs": {"reindex": job, "vacuum": job}}),
                    start=utc(2025, 3, 3, 3, 0))
    try:
        script("reindex", fail("lock timeout"))
        script("vacuum", fail("lock timeout"))
        sim.daemon.prepare()
        sim.advance(utc(2025, 3, 3, 4, 30), step=timedelta(minutes=10))
        retries = {r.job: r for r in sim.history.runs() if r.trigger == "retry"}
        assert {(j, r.status, r.due_at) for j, r in retries.items()} == {
            ("reindex", "pending", utc(2025, 3, 4, 2, 0)), ("vacuum", "pending", utc(2025, 3, 4, 2, 0))}, retries
    finally:
        sim.close()
    # reindex disabled, vacuum removed from the config
    sim = SimDaemon(tmp_path, yaml_block({**base, "jobs": {"reindex": {**job, "enabled": False},
                                                           "ping": {"task": "testing.scripted"}}}),
                    start=utc(2025, 3, 3, 5, 0))
    try:
        sim.daemon.prepare()
        sim.advance(utc(2025, 3, 4, 2, 10), step=timedelta(hours=3))
        for name, retry in retries.items():
            row = sim.history.get_run(retry.id)
            assert row is not None and row.status == "skipped" and row.started_at is None, (name, row)
            assert f"job {name!r} is no longer" in row.summary and row.summary.startswith("retry 2"), row.summary
    finally:
        sim.close()


def test_a_manual_run_waiting_for_a_parallel_slot_is_skipped_if_a_blackout_began_meanwhile(make_env) -> None:
    """'upkeeper run a b --parallel 1' (or --all) started before a blackout: the first run takes an hour, and the
    second, which only then gets its slot, falls inside the freeze — recorded skipped with the blackout as the
    reason, as its retry would be, instead of started inside it (only the command's start was checked)."""
    from upkeeper.cli._gate import retry_hold
    from upkeeper.cli._runs import run_jobs
    from upkeeper.notify.policy import Calendar

    env = make_env(yaml_block({
        "blackouts": {"freeze": {"start": "2025-03-03 12:30", "end": "2025-03-03 18:00"}},
        "jobs": {"backup": {"task": "testing.scripted"}, "vacuum": {"task": "testing.scripted"}},
    }), start=utc(2025, 3, 3, 12, 0))
    script("backup", ok("backed up"))
    script("vacuum", ok("vacuumed"))
    execute = env.runner.execute

    def an_hour_long(*args, **kwargs):  # type: ignore[no-untyped-def]
        got = execute(*args, **kwargs)
        env.now[0] += timedelta(hours=1)
        return got

    env.runner.execute = an_hour_long  # type: ignore[method-assign]
    results = run_jobs(env.runner, [env.setup.job("backup"), env.setup.job("vacuum")], console=None, parallel=1,
                       hold=retry_hold(Calendar(env.setup.config)))
    assert [(r.job, r.status) for r in results] == [("backup", "ok"), ("vacuum", "skipped")], results
    [row] = env.history.runs(job="vacuum")
    assert (row.status, row.trigger, row.started_at) == ("skipped", "manual", None), row
    assert "blackout 'freeze'" in row.summary and "blackout 'freeze'" in results[1].summary, row.summary


def test_a_reload_that_moves_the_window_decides_the_deferred_run_again(tmp_path) -> None:
    """A run deferred to Sunday's opening, then the window moves to Friday and the daemon reloads (SIGHUP): the
    deferred run starts at Friday's opening, not on Sunday -- when it would find itself outside the new window and
    be deferred a week more."""
    from upkeeper.cli._wiring import build_policies
    from upkeeper.config.loader import load_text
    from upkeeper.core.jobs import build_setup

    def config(day: str) -> str:
        return yaml_block({
            "timezone": "UTC",
            "windows": {"maint": {"rrule": f"FREQ=WEEKLY;BYDAY={day}", "start": "02:00", "duration": "3h"}},
            "jobs": {"reindex": {"task": "testing.scripted", "schedule": "0 1 * * *", "window": "maint"}},
        })

    sim = SimDaemon(tmp_path, config("SU"), start=utc(2025, 3, 27, 0, 30))  # a Thursday
    try:
        script("reindex", ok("reindexed"))
        sim.daemon.prepare()
        sim.advance(utc(2025, 3, 27, 1, 30), step=timedelta(minutes=30))
        [deferred] = sim.history.runs(job="reindex")
        assert (deferred.status, deferred.trigger, deferred.due_at) == ("pending", "deferred", utc(2025, 3, 30, 2))
        new = build_setup(load_text(f"history: {tmp_path / 'h.db'}\n" + config("FR"), "upkeeper.yaml"))
        sim.daemon.apply(new, policies=build_policies(new, sim.history), periodic=())
        sim.daemon.tick()
        row = sim.history.get_run(deferred.id)
        assert row is not None and row.status == "pending" and row.due_at == utc(2025, 3, 28, 2), row
        sim.advance(utc(2025, 3, 28, 2, 30), step=timedelta(minutes=30))
        row = sim.history.get_run(deferred.id)
        assert row is not None and row.status == "ok", row
        assert row.started_at is not None and utc(2025, 3, 28, 2) <= row.started_at <= utc(2025, 3, 28, 2, 30)
    finally:
        sim.close()


def test_a_reload_that_moves_the_window_decides_a_waiting_retry_again_but_not_one_in_backoff(tmp_path) -> None:
    """A failed run's retry came due outside the window and waits for next Thursday's opening; the window moves to Friday
    and the daemon reloads: the retry runs at Friday's opening (it kept next Thursday's, then).  Another job's retry still
    in its backoff keeps the job's own time: a reload is no reason to retry sooner."""
    from upkeeper.cli._wiring import build_policies
    from upkeeper.config.loader import load_text
    from upkeeper.core.jobs import build_setup

    def config(day: str) -> str:
        return yaml_block({
            "timezone": "UTC",
            "windows": {"maint": {"rrule": f"FREQ=WEEKLY;BYDAY={day}", "start": "02:00", "duration": "3h"}},
            "jobs": {"reindex": {"task": "testing.scripted", "schedule": "0 4 27 3 *", "window": "maint",
                                 "retries": 1, "retry_delay": "2h"},
                     "vacuum": {"task": "testing.scripted", "schedule": "0 6 27 3 *", "retries": 1,
                                "retry_delay": "50m"}},
        })

    # Thursday 2025-03-27, inside a Thursday window: reindex fails at 04:00, its retry comes due at 06:00, after the
    # window closed (05:00), and waits for next Thursday's opening
    sim = SimDaemon(tmp_path, config("TH"), start=utc(2025, 3, 27, 3, 30))
    try:
        script("reindex", fail("lock timeout"), ok("reindexed"))
        script("vacuum", fail("lock timeout"), ok("vacuumed"))
        sim.daemon.pending_poll = timedelta(seconds=30)
        sim.daemon.prepare()
        sim.advance(utc(2025, 3, 27, 6, 30), step=timedelta(minutes=10))
        retry = next(r for r in sim.history.runs(job="reindex") if r.trigger == "retry")
        assert (retry.status, retry.attempt, retry.due_at) == ("pending", 2, utc(2025, 4, 3, 2)), retry
        backoff = next(r for r in sim.history.runs(job="vacuum") if r.trigger == "retry")
        assert (backoff.status, backoff.due_at) == ("pending", utc(2025, 3, 27, 6, 50)), backoff
        new = build_setup(load_text(f"history: {tmp_path / 'h.db'}\n" + config("FR"), "upkeeper.yaml"))
        sim.daemon.apply(new, policies=build_policies(new, sim.history), periodic=())
        sim.daemon.tick()
        row = sim.history.get_run(retry.id)
        assert row is not None and (row.status, row.due_at) == ("pending", utc(2025, 3, 28, 2)), row
        assert "retry 2 deferred until 2025-03-28T02:00:00+00:00" in row.summary, row.summary
        held = sim.history.get_run(backoff.id)
        assert held is not None and (held.status, held.due_at) == ("pending", utc(2025, 3, 27, 6, 50)), held
        sim.advance(utc(2025, 3, 28, 2, 30), step=timedelta(minutes=10))
        row = sim.history.get_run(retry.id)
        assert row is not None and (row.status, row.attempt) == ("ok", 2), row
        assert row.started_at is not None and utc(2025, 3, 28, 2) <= row.started_at <= utc(2025, 3, 28, 2, 30)
        held = sim.history.get_run(backoff.id)
        assert held is not None and held.status == "ok" and held.started_at is not None
        assert held.started_at >= utc(2025, 3, 27, 6, 50), held  # its backoff, as before the reload
    finally:
        sim.close()


def test_a_reload_that_moves_the_window_decides_a_waiting_planned_run_again(tmp_path) -> None:
    """A run planned inside Thursday's window ('run --at') that the daemon reaches only after the window closed
    waits for next Thursday's opening; the window moves to Friday and the daemon reloads: the planned run is
    decided again at once and runs at Friday's opening (it kept next Thursday's, then), still the same run."""
    from upkeeper.cli._wiring import build_policies
    from upkeeper.config.loader import load_text
    from upkeeper.core.jobs import build_setup

    def config(day: str) -> str:
        return yaml_block({
            "timezone": "UTC",
            "windows": {"maint": {"rrule": f"FREQ=WEEKLY;BYDAY={day}", "start": "02:00", "duration": "3h"}},
            "jobs": {"reindex": {"task": "testing.scripted", "window": "maint"}},
        })

    # Thursday 2025-03-27: planned for 03:00, but the daemon was down until 06:00, after the window closed (05:00)
    sim = SimDaemon(tmp_path, config("TH"), start=utc(2025, 3, 27, 6, 0))
    try:
        script("reindex", ok("reindexed"))
        at = utc(2025, 3, 27, 3, 0)
        rid = sim.history.create_run(
            NewRun(job="reindex", task="testing.scripted", target=None, scheduled_for=at, due_at=at,
                   trigger="planned", status="pending", summary="planned by alice"), "cli:alice", "sim")
        sim.daemon.prepare()
        sim.advance(utc(2025, 3, 27, 6, 30), step=timedelta(minutes=10))
        row = sim.history.get_run(rid)
        assert row is not None and (row.status, row.due_at) == ("pending", utc(2025, 4, 3, 2)), row
        new = build_setup(load_text(f"history: {tmp_path / 'h.db'}\n" + config("FR"), "upkeeper.yaml"))
        sim.daemon.apply(new, policies=build_policies(new, sim.history), periodic=())
        sim.daemon.tick()
        row = sim.history.get_run(rid)
        assert row is not None and (row.status, row.due_at) == ("pending", utc(2025, 3, 28, 2)), row
        assert "deferred until 2025-03-28T02:00:00+00:00" in row.summary, row.summary
        sim.advance(utc(2025, 3, 28, 2, 30), step=timedelta(minutes=10))
        row = sim.history.get_run(rid)
        assert row is not None and (row.status, row.trigger) == ("ok", "planned"), row
        assert row.started_at is not None and utc(2025, 3, 28, 2) <= row.started_at <= utc(2025, 3, 28, 2, 30)
        assert [r.id for r in sim.history.runs(job="reindex")] == [rid]  # no second run was made
    finally:
        sim.close()


def test_the_end_notice_lists_a_deferred_run_whose_occurrence_is_weeks_old(make_env, webhook_receiver) -> None:
    """A run deferred to the window keeps its occurrence (weeks before the opening); the end notice read the 2,000
    runs of newest occurrence, so on a busy history (a job every minute) it said 'nothing ran' (or left out the
    deferred run) while the window's work had been done, or had failed."""
    env = make_env(yaml_block({
        "notifications": {"channels": {"team": {"kind": "webhook", "url": webhook_receiver.url}}},
        "windows": {"monthly": {"rrule": "FREQ=MONTHLY;BYDAY=1SU", "start": "02:00", "duration": "4h"}},
        "jobs": {"reindex": {"task": "testing.scripted", "schedule": "0 3 * * *", "window": "monthly"},
                 "ping": {"task": "testing.scripted", "schedule": "* * * * *"}},
    }), start=utc(2025, 3, 20))
    opening = utc(2025, 4, 6, 2)
    h = env.history
    occurrence = utc(2025, 3, 3, 3)  # the day after the March window: deferred to April's
    rid = h.create_run(NewRun("reindex", "testing.scripted", None, occurrence, due_at=opening, trigger="deferred",
                              status="pending"), "d:1:1", "n1")
    assert rid is not None
    h.start_run(rid, opening + timedelta(seconds=5), "d:1:1")
    h.finish_run(rid, status="fail", result=fail("lock timeout"), finished_at=opening + timedelta(minutes=3),
                 started_at=opening + timedelta(seconds=5))
    # the pings of the last two days: newer occurrences than the deferred run's
    h.claim([NewRun("ping", "testing.scripted", None, opening - timedelta(minutes=m), status="skipped",
                    summary="seeded") for m in range(1, 2500)], "s:1:1", "n1")
    env.engine.window_notices(opening + timedelta(minutes=1))
    env.engine.window_notices(opening + timedelta(hours=4, minutes=1))
    [end] = [e for r in webhook_receiver.requests for e in Payload.model_validate(r.json()).events
             if e.details.get("notice") == "end"]
    assert end.title == "Maintenance window monthly ended: 1 run(s), 1 failed", end.title
    assert [(r["job"], r["run_id"], r["status"]) for r in end.details["runs"]] == [("reindex", rid, "fail")]


def test_an_hourly_windows_notices_do_not_hold_the_daemons_loop(make_env) -> None:
    """dateutil walks a rule from its start at every query, and windows are anchored in 2000: an hourly window
    was ~236,000 occurrences a query, and its notices (asked in the daemon's scheduling loop every check_every)
    ~170 openings of ~0.1 s each plus a 400-day search back per opening: 16 s a check, 'upkeeper windows --ics'
    more than 5 minutes.  (A generous bound: about 0.5 s now.)"""
    env = make_env(yaml_block({
        "windows": {"hourly": {"rrule": "FREQ=HOURLY", "start": "00:05", "duration": "10m",
                               "timezone": "Europe/Berlin"}},
        "jobs": {"sweep": {"task": "testing.scripted", "schedule": "5 * * * *", "window": "hourly"}},
    }), start=utc(2026, 12, 6, 14))
    t0 = time.monotonic()
    env.engine.window_notices(utc(2026, 12, 6, 14))
    w = env.engine.calendar.windows["hourly"]
    openings = w.rec.upcoming(utc(2026, 12, 6, 14), 20)
    assert [p.start for p in openings[:2]] == [utc(2026, 12, 6, 14, 5), utc(2026, 12, 6, 15, 5)]
    assert all(env.engine.planned_in(w, p) == [("sweep", "testing.scripted (schedule 5 * * * *)")] for p in openings)
    assert time.monotonic() - t0 < 5, time.monotonic() - t0
