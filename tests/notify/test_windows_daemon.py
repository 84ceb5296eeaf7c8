"""Windows and blackouts at the daemon's decision point, across a DST change; window notices."""

from __future__ import annotations

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
