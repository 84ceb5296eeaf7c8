"""Escalation through all four levels, and the missed-run alarm, in simulated time (the daemon's SimClock)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from notify_support import SimDaemon, error, fail, ok, script, yaml_block
from upkeeper.core.history import History
from upkeeper.core.task import Result, Status
from upkeeper.notify.engine import NotificationEngine
from upkeeper.notify.events import Payload
from upkeeper.notify.store import NotifyStore
from upkeeper.sandbox.receivers import HttpReceiver, PagerDutyReceiver

PD_KEY = "0123456789abcdef0123456789abcdef"
T0 = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)


@pytest.fixture
def receivers() -> Iterator[dict[str, HttpReceiver]]:
    rs: dict[str, HttpReceiver] = {"slack": HttpReceiver().start(), "lead": HttpReceiver().start(),
                                   "mgmt": HttpReceiver().start(), "pager": PagerDutyReceiver().start()}
    yield rs
    for r in rs.values():
        r.stop()


def titles(r: HttpReceiver) -> list[str]:
    return [Payload.model_validate(q.json()).title for q in r.requests]


def test_escalation_through_all_levels_then_resolution_stops_it(tmp_path, receivers) -> None:
    pd = receivers["pager"]
    assert isinstance(pd, PagerDutyReceiver)
    text = yaml_block({
        "notifications": {
            "channels": {
                "slack": {"kind": "webhook", "url": receivers["slack"].url},
                "lead": {"kind": "webhook", "url": receivers["lead"].url},
                "mgmt": {"kind": "webhook", "url": receivers["mgmt"].url},
                "pager": {"kind": "pagerduty", "routing_key": PD_KEY, "url": pd.events_url},
            },
            "escalation": {"levels": [
                {"name": "automatic retry or fix"},
                {"name": "on-call", "after_failures": 3, "after": "2h", "channels": ["pager"]},
                {"name": "team lead", "after": "2h", "channels": ["lead"]},
                {"name": "management", "after": "4h", "channels": ["mgmt"]},
            ]},
            "check_every": "5m",
        },
        "jobs": {"sync": {"task": "testing.scripted", "schedule": "every 15m"}},
    })
    sim = SimDaemon(tmp_path, text)
    try:
        script("sync", fail("upstream unreachable"))
        sim.daemon.prepare()
        sim.advance(T0 + timedelta(minutes=15))
        first = T0 + timedelta(minutes=15)
        assert titles(receivers["slack"]) == ["sync failed (+1 more)"]  # the run and its critical finding
        assert pd.requests == [] and receivers["lead"].requests == []  # level 1: the automatic fix
        # third consecutive failure (08:45) → level 2 pages on-call, before its 2h timer
        sim.advance(T0 + timedelta(minutes=40))
        assert pd.requests == []
        sim.advance(T0 + timedelta(minutes=45))
        assert [r.json()["event_action"] for r in pd.requests] == ["trigger", "trigger"]
        assert {r.json()["dedup_key"] for r in pd.requests} == {"upkeeper:sync:run", "upkeeper:sync:testing.broken"}
        assert "ESCALATED to level 2 (on-call)" in pd.requests[0].json()["payload"]["summary"]
        # level 3 at 2h unresolved, level 4 at 4h — by the clock, not by failures
        sim.advance(first + timedelta(hours=2) - timedelta(minutes=5))
        assert receivers["lead"].requests == []
        sim.advance(first + timedelta(hours=2))
        # one message carrying both open conditions (the run, its finding)
        [lead] = [Payload.model_validate(r.json()) for r in receivers["lead"].requests]
        assert [(e.check, e.level, e.level_name) for e in lead.events] == [
            ("run", 3, "team lead"), ("testing.broken", 3, "team lead")]
        sim.advance(first + timedelta(hours=4))
        [mgmt] = [Payload.model_validate(r.json()) for r in receivers["mgmt"].requests]
        assert {(e.level, e.level_name) for e in mgmt.events} == {(4, "management")}
        # repeats in between were summarized on the routes' channel, not re-sent per failure
        assert len(receivers["slack"].requests) == 2  # the problem, then one 4h repeat summary
        # resolution: every channel that was told hears it; PagerDuty resolves the same dedup keys
        script("sync", ok("synced"))
        sim.advance(first + timedelta(hours=4, minutes=15))
        for name in ("slack", "lead", "mgmt"):
            last = Payload.model_validate(receivers[name].requests[-1].json())
            assert {e.state for e in last.events} == {"resolved"}, name
        resolves = [r.json() for r in pd.requests if r.json()["event_action"] == "resolve"]
        assert sorted(r["dedup_key"] for r in resolves) == ["upkeeper:sync:run", "upkeeper:sync:testing.broken"]
        assert set(pd.incidents.values()) == {"resolved"}
        # …and escalation stopped: hours later nothing more is sent
        counts = {n: len(r.requests) for n, r in receivers.items()}
        sim.advance(first + timedelta(hours=9), step=timedelta(minutes=15))
        assert {n: len(r.requests) for n, r in receivers.items()} == counts
        # every step is in history
        # (in order of level; the two conditions of one level may be stepped by the run's listener or by the
        # periodic check, whichever comes first, so their order within a level is not fixed)
        steps = [(e.check, e.level, e.state) for e in reversed(NotifyStore(sim.history).events(topic="escalation"))]
        assert [(lv, state) for _, lv, state in steps] == sorted((lv, state) for _, lv, state in steps), steps
        assert sorted(steps) == sorted([("run", 1, "problem"), ("testing.broken", 1, "problem"),
                         ("run", 2, "problem"), ("testing.broken", 2, "problem"),
                         ("run", 3, "problem"), ("testing.broken", 3, "problem"),
                         ("run", 4, "problem"), ("testing.broken", 4, "problem"),
                         ("run", 4, "resolved"), ("testing.broken", 4, "resolved")])
    finally:
        sim.close()


def test_missed_run_alarm_when_the_daemon_is_stopped_past_the_grace(tmp_path, receivers) -> None:
    text = yaml_block({
        "notifications": {"channels": {"slack": {"kind": "webhook", "url": receivers["slack"].url}},
                          "missed_grace": "10m", "check_every": "1m"},
        "jobs": {"heartbeat": {"task": "testing.scripted", "schedule": "every 15m"},
                 "nightly": {"task": "testing.scripted", "schedule": "0 3 * * *", "missed_grace": "2h"}},
    })
    sim = SimDaemon(tmp_path, text)
    script("heartbeat", ok())
    sim.daemon.prepare()
    sim.advance(T0 + timedelta(minutes=31))
    assert [r.status for r in sim.history.runs(job="heartbeat")] == ["ok", "ok"]
    sim.close()  # the daemon stops; the last success started at 08:30
    # another node checks the shared history (what 'upkeeper status --check --notify' does)
    watcher = NotificationEngine(sim.setup, History(sim.history.url))
    watcher.tick(T0 + timedelta(minutes=54))  # 08:30 + 15m + 10m = 08:55: not late yet
    assert receivers["slack"].requests == []
    watcher.tick(T0 + timedelta(minutes=56))
    [req] = receivers["slack"].wait_for(1)
    [ev] = Payload.model_validate(req.json()).events
    assert (ev.topic, ev.state, ev.job, ev.severity) == ("missed", "problem", "heartbeat", "critical")
    assert "MISSED" in ev.title and "Is the daemon running?" in ev.text
    # a daily job with a 2h grace is not late yet; checked again, the alarm is not repeated
    watcher.tick(T0 + timedelta(minutes=58))
    assert len(receivers["slack"].requests) == 1
    # the daemon comes back and the job succeeds: resolved
    sim2 = SimDaemon(tmp_path, text, start=T0 + timedelta(hours=1))
    try:
        sim2.daemon.prepare()  # catch-up: the newest missed occurrence runs once
        assert sim2.daemon.wait_idle(30)
        assert len(receivers["slack"].wait_for(2)) == 2
        [ev2] = Payload.model_validate(receivers["slack"].requests[1].json()).events
        assert (ev2.topic, ev2.state) == ("missed", "resolved")
    finally:
        sim2.close()


def test_missed_run_alarm_follows_irregular_schedules(tmp_path, receivers) -> None:
    """The deadline is the next occurrence after the last run (+ grace), not the last run plus the schedule's
    median spacing: a weekday job that ran on Friday is not missed on Saturday, a '0 9,17' job not every night
    (both were: a critical MISSED alarm, repeated every 4 h, with the daemon running fine)."""
    text = yaml_block({
        "notifications": {"channels": {"slack": {"kind": "webhook", "url": receivers["slack"].url}},
                          "check_every": "5m"},
        "jobs": {"weekdays": {"task": "testing.scripted", "schedule": "0 3 * * 1-5"},
                 "twice": {"task": "testing.scripted", "schedule": "0 9,17 * * *"}},
    })
    sim = SimDaemon(tmp_path, text, start=datetime(2025, 3, 6, 2, 0, tzinfo=UTC))  # Thursday
    try:
        sim.daemon.prepare()
        sim.advance(datetime(2025, 3, 10, 3, 30, tzinfo=UTC), step=timedelta(minutes=30))  # Monday 03:30
        assert [r.scheduled_for.day for r in sim.history.runs(job="weekdays")] == [10, 7, 6]
        assert titles(receivers["slack"]) == []
    finally:
        sim.close()
    # the daemon stops after Monday's 03:00 run: Tuesday's, due 03:00, is missed at 04:00 (the default 1h grace)
    watcher = NotificationEngine(sim.setup, History(sim.history.url))
    # ('twice', last run Sunday 17:00, is overdue since Monday 10:00)
    watcher.tick(datetime(2025, 3, 11, 3, 59, tzinfo=UTC))
    assert [t.split(":")[0] for t in titles(receivers["slack"])] == ["twice MISSED"]
    watcher.tick(datetime(2025, 3, 11, 4, 1, tzinfo=UTC))
    [ev] = [e for p in receivers["slack"].wait_for(2) for e in Payload.model_validate(p.json()).events
            if e.job == "weekdays"]
    assert (ev.topic, ev.state) == ("missed", "problem")
    assert "Its next run was due 2025-03-11 03:00 UTC + 1h grace" in ev.text, ev.text


def test_a_problem_that_worsens_into_the_escalations_severities_escalates(make_env, receivers) -> None:
    """Under 'min_severity: critical', a job that errors (error) and then fails (critical) is a problem that
    changed severity, not a new one: it stayed at level 0 and never escalated, however many runs failed."""
    env = make_env(yaml_block({
        "notifications": {
            "channels": {"slack": {"kind": "webhook", "url": receivers["slack"].url},
                         "lead": {"kind": "webhook", "url": receivers["lead"].url}},
            "escalation": {"min_severity": "critical", "levels": [
                {"name": "automatic retry or fix"},
                {"name": "on-call", "after_failures": 3, "channels": ["lead"]}]},
        },
        "jobs": {"db": {"task": "testing.scripted", "schedule": "*/5 * * * *"}},
    }))
    script("db", error("connection refused"), Result(summary="dump was empty", status=Status.FAIL))
    assert env.run("db") == "error"  # below min_severity: no escalation
    assert env.run("db") == "fail"  # now critical: level 1
    assert receivers["lead"].requests == []
    assert env.run("db") == "fail"  # the third consecutive failure: level 2
    [page] = [Payload.model_validate(r.json()) for r in receivers["lead"].wait_for(1)]
    assert [(e.job, e.check, e.level, e.level_name) for e in page.events] == [("db", "run", 2, "on-call")]
    assert env.engine.store.get("db", "run").level == 2


def test_missed_run_alarm_with_a_business_hours_blackout_neither_flaps_nor_goes_silent(tmp_path, receivers) -> None:
    """A blackout skips only the occurrences it covers.  Any blackout between the last run and now moved the
    deadline past it, and one active now cleared the alarm: with the daemon dead, a daily 03:00 job under a
    Mon-Fri 09:00-18:00 blackout was 'MISSED' at 04:00 and 'no longer overdue' at 09:00 every weekday (a
    PagerDuty incident opened and resolved daily), and a weekly job was never missed at all."""
    text = yaml_block({
        "notifications": {"channels": {"slack": {"kind": "webhook", "url": receivers["slack"].url}}},
        "blackouts": {"office": {"days": ["mon", "tue", "wed", "thu", "fri"], "hours": "09:00-18:00"}},
        "jobs": {"nightly": {"task": "testing.scripted", "schedule": "0 3 * * *"},
                 "weekly": {"task": "testing.scripted", "schedule": "0 3 * * 0"},
                 "noon": {"task": "testing.scripted", "schedule": "0 12 * * *"}},
    })
    sim = SimDaemon(tmp_path, text, start=datetime(2025, 3, 2, 2, 0, tzinfo=UTC))  # Sunday
    try:
        sim.daemon.prepare()
        sim.advance(datetime(2025, 3, 2, 13, 0, tzinfo=UTC), step=timedelta(minutes=30))
        assert {r.job for r in sim.history.runs() if r.status == "ok"} == {"nightly", "weekly", "noon"}
    finally:
        sim.close()  # the daemon dies on Sunday afternoon
    watcher = NotificationEngine(sim.setup, History(sim.history.url))
    at = datetime(2025, 3, 2, 13, 0, tzinfo=UTC)
    while at < datetime(2025, 3, 10, 12, 0, tzinfo=UTC):  # to Monday noon a week later
        at += timedelta(minutes=30)
        watcher.tick(at)
    events = [(e.job, e.state, e.ts) for r in receivers["slack"].requests
              for e in Payload.model_validate(r.json()).events if e.topic == "missed" and e.state != "repeat"]
    # each job missed once, never 'resolved' while nothing ran; noon's occurrences fall in the blackout on
    # weekdays, so it is due on Saturday
    assert [(j, s) for j, s, _ in events] == [("nightly", "problem"), ("noon", "problem"), ("weekly", "problem")]
    # (checked every 30 minutes: the first check after the due run + 1h grace)
    assert [ts for _, _, ts in events] == [datetime(2025, 3, 3, 4, 30, tzinfo=UTC),
                                           datetime(2025, 3, 8, 13, 30, tzinfo=UTC),
                                           datetime(2025, 3, 9, 4, 30, tzinfo=UTC)]


def test_a_level_due_by_its_failures_is_reached_before_an_earlier_levels_time(tmp_path, receivers) -> None:
    """Each level is reached when its own ``after`` or ``after_failures`` is met (docs/notifications.md): here the
    team lead at the third consecutive failure, while on-call's level is by time (30 minutes).  The levels were
    climbed strictly in order, each only once the one before was due itself, so the team lead heard of three
    failures at 08:15 only at 08:35 -- with on-call's 30 minutes.  Now the team lead hears at 08:15, and on-call
    (the level below, reached with it) in the same step."""
    text = yaml_block({
        "notifications": {
            "channels": {
                "slack": {"kind": "webhook", "url": receivers["slack"].url},
                "oncall": {"kind": "webhook", "url": receivers["mgmt"].url},
                "lead": {"kind": "webhook", "url": receivers["lead"].url},
            },
            "escalation": {"levels": [
                {"name": "automatic retry or fix"},
                {"name": "on-call", "after": "30m", "channels": ["oncall"]},
                {"name": "team lead", "after_failures": 3, "channels": ["lead"]},
            ]},
            "check_every": "5m",
        },
        "jobs": {"sync": {"task": "testing.scripted", "schedule": "every 5m"}},
    })
    sim = SimDaemon(tmp_path, text)
    try:
        script("sync", fail("upstream unreachable"))
        sim.daemon.prepare()
        sim.advance(T0 + timedelta(minutes=10))  # two failures
        assert receivers["mgmt"].requests == [] and receivers["lead"].requests == []
        sim.advance(T0 + timedelta(minutes=15))  # the third
        # (the two open conditions, the run and its finding, are stepped by the run's listener or by the periodic
        # check, whichever comes first: in one message or two)
        lead = [e for r in receivers["lead"].requests for e in Payload.model_validate(r.json()).events]
        assert sorted((e.check, e.level, e.level_name) for e in lead) == [
            ("run", 3, "team lead"), ("testing.broken", 3, "team lead")]
        assert all(e.details["reason"] == "3 consecutive failures (≥ 3)" for e in lead), lead
        oncall = [e for r in receivers["mgmt"].requests for e in Payload.model_validate(r.json()).events]
        assert sorted((e.check, e.level, e.level_name) for e in oncall) == [
            ("run", 2, "on-call"), ("testing.broken", 2, "on-call")]
        assert all(e.details["reason"] == "level 3 (team lead) is due: 3 consecutive failures (≥ 3)"
                   for e in oncall), oncall
        sent = (len(receivers["mgmt"].requests), len(receivers["lead"].requests))
        sim.advance(T0 + timedelta(minutes=35))  # on-call's 30 minutes change nothing more
        assert (len(receivers["mgmt"].requests), len(receivers["lead"].requests)) == sent
        steps = sorted((e.check, e.level, e.ts) for e in NotifyStore(sim.history).events(topic="escalation"))
        first, third = T0 + timedelta(minutes=5), T0 + timedelta(minutes=15)
        assert steps == [("run", 1, first), ("run", 2, third), ("run", 3, third),
                         ("testing.broken", 1, first), ("testing.broken", 2, third), ("testing.broken", 3, third)]
    finally:
        sim.close()
