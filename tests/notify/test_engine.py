"""The notification engine against real receivers: state changes, repeats, findings, backups, retries."""

from __future__ import annotations

import time
from datetime import timedelta

from notify_support import error, fail, finding, ok, script, yaml_block
from upkeeper.notify.events import Payload
from upkeeper.sandbox.receivers import Answer, HttpReceiver, PagerDutyReceiver
from upkeeper.sandbox.smtp import SmtpServer

PD_KEY = "0123456789abcdef0123456789abcdef"


def channels(webhook: HttpReceiver, pd: PagerDutyReceiver | None = None, smtp: SmtpServer | None = None,
             slack: HttpReceiver | None = None) -> dict[str, object]:
    ch: dict[str, object] = {"hook": {"kind": "webhook", "url": webhook.url + "/hook"}}
    if pd is not None:
        ch["pager"] = {"kind": "pagerduty", "routing_key": PD_KEY, "url": pd.events_url}
    if smtp is not None:
        ch["email"] = smtp.url()
    if slack is not None:
        ch["slack"] = {"kind": "slack", "webhook_url": slack.url + "/services/T0/B0/XYZ"}
    return ch


def config(chans: dict[str, object], jobs: dict[str, object] | None = None, **notify: object) -> str:
    return yaml_block({
        "notifications": {"channels": chans, **notify},
        "jobs": jobs or {"nightly": {"task": "testing.scripted", "schedule": "0 3 * * *"}},
    })


def events_of(req_list: list, topic: str | None = None) -> list[dict]:  # type: ignore[type-arg]
    out = []
    for r in req_list:
        body = Payload.model_validate(r.json())  # every webhook body follows the documented schema
        out += [e.model_dump(mode="json") for e in body.events if topic is None or e.topic == topic]
    return out


def test_failure_repeat_and_recovery_reach_webhook_email_slack_and_pagerduty(
        make_env, webhook_receiver, pagerduty, smtp_server) -> None:
    slack = HttpReceiver().start()
    try:
        env = make_env(config(channels(webhook_receiver, pagerduty, smtp_server, slack), repeat_interval="1h"))
        script("nightly", fail("dump was empty"), fail("dump was empty"), fail("dump was empty"), ok("dumped 3 MB"))
        assert env.run("nightly") == "fail"
        hooks = webhook_receiver.wait_for(1)
        run_events = events_of(hooks, "run")
        assert [(e["state"], e["severity"], e["job"], e["check"]) for e in run_events] == [
            ("problem", "critical", "nightly", "run")]
        assert "upkeeper show" in run_events[0]["text"] and "dump was empty" in run_events[0]["text"]
        # the critical finding is its own (job, check) condition, in the same message
        assert [e["check"] for e in events_of(hooks, "finding")] == ["testing.broken"]
        mails = smtp_server.wait_for(1)
        assert "nightly failed" in mails[0].subject and "dump was empty" in mails[0].body
        slack_msg = slack.wait_for(1)[0]
        assert slack_msg.path == "/services/T0/B0/XYZ"
        assert slack_msg.json()["text"].startswith("nightly failed")
        assert slack_msg.json()["attachments"][0]["color"] == "#d40e0d"
        pd = pagerduty.wait_for(2)
        assert {r.json()["dedup_key"] for r in pd} == {"upkeeper:nightly:run", "upkeeper:nightly:testing.broken"}
        assert all(r.json()["event_action"] == "trigger" for r in pd)

        # the same failure again, 10 minutes later: counted, not re-sent
        env.now[0] += timedelta(minutes=10)
        assert env.run("nightly") == "fail"
        assert len(webhook_receiver.requests) == 1 and len(pagerduty.requests) == 2
        # after the repeat interval: one summary with the count
        env.now[0] += timedelta(hours=1)
        assert env.run("nightly") == "fail"
        hooks = webhook_receiver.wait_for(2)
        rep = [e for e in events_of(hooks[1:], "run")]
        assert rep[0]["state"] == "repeat" and rep[0]["count"] == 3 and rep[0]["repeats"] == 2
        assert "still failing" in rep[0]["title"]

        env.now[0] += timedelta(minutes=5)
        assert env.run("nightly") == "ok"
        hooks = webhook_receiver.wait_for(3)
        resolved = events_of(hooks[2:])
        assert {(e["check"], e["state"]) for e in resolved} == {("run", "resolved"), ("testing.broken", "resolved")}
        assert "recovered" in next(e["title"] for e in resolved if e["check"] == "run")
        pd = pagerduty.wait_for(6)
        resolves = [r.json() for r in pd if r.json()["event_action"] == "resolve"]
        assert {r["dedup_key"] for r in resolves} == {"upkeeper:nightly:run", "upkeeper:nightly:testing.broken"}
        assert pagerduty.incidents == {"upkeeper:nightly:run": "resolved", "upkeeper:nightly:testing.broken": "resolved"}
        assert len(smtp_server.wait_for(3)) == 3
    finally:
        slack.stop()


def test_finding_appears_worsens_and_clears(make_env, webhook_receiver) -> None:
    env = make_env(config(channels(webhook_receiver)))
    script("nightly", finding("pg.dead_tuples", "warning"), finding("pg.dead_tuples", "critical"),
           finding("pg.dead_tuples", "info"), ok())
    assert env.run("nightly") == "warn"
    e1 = events_of(webhook_receiver.wait_for(1), "finding")
    assert [(e["state"], e["severity"], e["check"]) for e in e1] == [("problem", "warning", "pg.dead_tuples")]
    assert e1[0]["findings"][0]["subject"] == "users" and "VACUUM" in e1[0]["text"]
    assert env.run("nightly") == "fail"
    e2 = events_of(webhook_receiver.wait_for(2)[1:], "finding")
    assert [(e["state"], e["severity"]) for e in e2] == [("changed", "critical")]
    # an info-level finding is not a problem: the condition clears
    assert env.run("nightly") == "ok"
    e3 = events_of(webhook_receiver.wait_for(3)[2:], "finding")
    assert [(e["state"], e["check"]) for e in e3] == [("resolved", "pg.dead_tuples")]
    assert env.run("nightly") == "ok"
    assert len(webhook_receiver.requests) == 3  # nothing changed: nothing sent


def test_an_errored_run_keeps_open_findings(make_env, webhook_receiver) -> None:
    env = make_env(config(channels(webhook_receiver)))
    script("nightly", finding("pg.bloat", "warning"), error("connection refused"))
    env.run("nightly")
    env.run("nightly")
    states = {(e["check"], e["state"]) for e in events_of(webhook_receiver.wait_for(2))}
    assert ("pg.bloat", "resolved") not in states  # no results from an errored run: nothing cleared
    assert ("run", "problem") in states


def test_endpoint_down_run_recorded_then_retry_delivers(make_env, webhook_receiver) -> None:
    env = make_env(config(channels(webhook_receiver)))
    webhook_receiver.stop()  # connection refused
    script("nightly", fail("disk full"))
    assert env.run("nightly") == "fail"
    runs = env.history.runs(job="nightly")
    assert [r.status for r in runs] == ["fail"]  # the run is recorded regardless
    [d] = env.engine.store.deliveries()
    assert d.status == "failed" and "unreachable" in d.last_error and d.attempts == 1
    assert d.next_attempt_at == env.now[0] + timedelta(minutes=1)
    # not yet due: nothing happens
    assert env.engine.retry_due(env.now[0] + timedelta(seconds=30)) == []
    # still down at the first retry: backoff doubles
    [r1] = env.engine.retry_due(env.now[0] + timedelta(minutes=1))
    assert not r1.ok
    d = env.engine.store.get_delivery(d.id)
    assert d.attempts == 2 and d.next_attempt_at == env.now[0] + timedelta(minutes=3)
    webhook_receiver.start()  # back on the same port
    [r2] = env.engine.retry_due(env.now[0] + timedelta(minutes=3))
    assert r2.ok
    body = webhook_receiver.wait_for(1)[0].json()
    assert body["events"][0]["summary"] == "disk full"
    d = env.engine.store.get_delivery(d.id)
    assert d.status == "sent" and d.attempts == 3


def test_rejected_delivery_is_not_retried(make_env, webhook_receiver) -> None:
    env = make_env(config(channels(webhook_receiver)))
    webhook_receiver.fail_with = [410]
    script("nightly", fail())
    env.run("nightly")
    [d] = env.engine.store.deliveries()
    assert d.status == "dead" and "HTTP 410" in d.last_error and d.next_attempt_at is None


def test_webhook_signature(make_env, webhook_receiver) -> None:
    import hashlib
    import hmac

    chans = {"hook": {"kind": "webhook", "url": webhook_receiver.url + "/h", "signing_secret": "s3cret-value",
                      "headers": {"X-Team": "ops"}}}
    env = make_env(config(chans))
    script("nightly", fail())
    env.run("nightly")
    req = webhook_receiver.wait_for(1)[0]
    expected = hmac.new(b"s3cret-value", req.body, hashlib.sha256).hexdigest()
    assert req.headers["x-upkeeper-signature"] == f"sha256={expected}"
    assert req.headers["x-team"] == "ops"
    assert b"s3cret-value" not in req.body


class EchoingReceiver(HttpReceiver):
    """An endpoint that rejects the request and echoes the credentials it got, as many do ("invalid token …")."""

    def respond(self, req):  # type: ignore[no-untyped-def]
        return Answer(401, {"error": f"invalid credentials: {req.headers.get('authorization')} / "
                                     f"{req.headers.get('x-gitlab-token')} for team {req.headers.get('x-team')}"})


def test_webhook_credential_headers_never_reach_the_delivery_log(make_env) -> None:
    """A webhook's Authorization (or *-Token, *-Key …) header is a credential: an endpoint echoing it in its error
    answer put it into the delivery log (history, `notify log --json`). Other headers stay readable."""
    hook = EchoingReceiver().start()
    try:
        chans = {"hook": {"kind": "webhook", "url": hook.url + "/h", "headers": {
            "Authorization": "Bearer tk_hdr0a1b2c3d4e5", "X-Gitlab-Token": "glt-hdr9f8e7d6c5", "X-Team": "ops-east"}}}
        env = make_env(config(chans))
        script("nightly", fail())
        env.run("nightly")
        req = hook.wait_for(1)[0]
        assert req.headers["authorization"] == "Bearer tk_hdr0a1b2c3d4e5"  # sent as given
        [d] = env.engine.store.deliveries()
        assert "HTTP 401" in d.last_error and "ops-east" in d.last_error, d.last_error
        assert "tk_hdr0a1b2c3d4e5" not in d.last_error and "glt-hdr9f8e7d6c5" not in d.last_error, d.last_error
    finally:
        hook.stop()


def test_a_header_value_with_a_line_break_is_a_config_error_that_does_not_show_it() -> None:
    """Was accepted, then refused by the HTTP library at each delivery with the value in the error."""
    import pytest

    from upkeeper.config.loader import load_text
    from upkeeper.errors import ConfigError

    text = config({"hook": {"kind": "webhook", "url": "http://127.0.0.1:9/h",
                            "headers": {"X-Hook-Token": "zq81hdrsekrit\n"}}})
    with pytest.raises(ConfigError) as err:
        load_text(text, "upkeeper.yaml")
    msg = str(err.value)
    assert "headers: the value of header 'X-Hook-Token'" in msg and "line break" in msg, msg
    assert "zq81hdrsekrit" not in msg
    with pytest.raises(ConfigError, match="not a valid HTTP header name"):
        load_text(config({"hook": {"kind": "webhook", "url": "http://127.0.0.1:9/h", "headers": {"X Token": "a"}}}),
                  "upkeeper.yaml")


def test_routes_by_severity_job_category_and_tags(make_env, webhook_receiver) -> None:
    other = HttpReceiver().start()
    try:
        chans = {"all": {"kind": "webhook", "url": webhook_receiver.url}, "db": {"kind": "webhook", "url": other.url}}
        jobs = {"db-vacuum": {"task": "testing.scripted", "tags": ["db"]},
                "web-check": {"task": "testing.scripted", "category": "monitoring"}}
        env = make_env(config(chans, jobs, routes=[
            {"channels": ["all"], "min_severity": "error"},
            {"channels": ["db"], "jobs": ["db-*"], "events": ["finding"]},
            {"channels": ["db"], "categories": ["monitoring"], "severity": ["warning"]},
        ]))
        script("db-vacuum", finding("pg.bloat", "warning"))
        script("web-check", finding("http.slow", "warning"))
        env.run("db-vacuum")
        env.run("web-check")
        got = [(e["job"], e["check"]) for e in events_of(other.wait_for(2))]
        assert got == [("db-vacuum", "pg.bloat"), ("web-check", "http.slow")]
        assert webhook_receiver.requests == []  # warnings are below the first route's min_severity
        script("web-check", error("timeout"))
        env.run("web-check")
        assert [(e["job"], e["check"]) for e in events_of(webhook_receiver.wait_for(1))] == [("web-check", "run")]
    finally:
        other.stop()


def test_backup_size_change_and_success_rate(make_env, webhook_receiver) -> None:
    jobs = {"db-backup": {"task": "testing.backup", "schedule": "0 0 * * *"}}
    env = make_env(config(channels(webhook_receiver), jobs))
    script("db-backup", ok(size_bytes=1_000_000), ok(size_bytes=1_100_000), ok(size_bytes=1_500_000),
           ok(size_bytes=1_550_000), fail("pg_dump exited 1"), ok(size_bytes=1_560_000))
    for _ in range(2):
        env.run("db-backup")
        env.now[0] += timedelta(days=1)
    assert webhook_receiver.requests == []  # +10 %: within ±20 %
    env.run("db-backup")  # +36 %
    [size] = events_of(webhook_receiver.wait_for(1), "backup.size")
    assert size["state"] == "problem" and size["severity"] == "warning"
    assert size["details"]["change_pct"] == 36.36 and "+36%" in size["title"]
    env.now[0] += timedelta(days=1)
    env.run("db-backup")  # +3 %: back to normal
    [back] = events_of(webhook_receiver.wait_for(2)[1:], "backup.size")
    assert back["state"] == "resolved"
    env.now[0] += timedelta(days=1)
    env.run("db-backup")  # a failed backup: 4 of 5 over 30 days = 80 % < 99.9 %
    rate = events_of(webhook_receiver.wait_for(3)[2:], "backup.success_rate")
    assert rate[0]["state"] == "problem" and rate[0]["details"] == {"rate_pct": 80.0, "succeeded": 4, "total": 5}
    # the failure ages out of the 30-day window: the rate recovers
    env.now[0] += timedelta(days=31)
    env.run("db-backup")
    resolved = events_of(webhook_receiver.wait_for(4)[3:], "backup.success_rate")
    assert resolved and resolved[0]["state"] == "resolved"


def _three_daily_backups_then_two_pruned(make_env, webhook_receiver):  # type: ignore[no-untyped-def]
    """Three good daily backups (a failing fourth is scripted), then a history retention shorter than the 30-day
    window (an earlier config, another node's) deletes the first two runs."""
    from upkeeper.core.retention import prune_history

    env = make_env(config(channels(webhook_receiver), {"db-backup": {"task": "testing.backup",
                                                                     "schedule": "0 0 * * *"}}))
    script("db-backup", ok(), ok(), ok(), fail("pg_dump exited 1"))
    for _ in range(3):
        env.run("db-backup")
        env.now[0] += timedelta(days=1)
    assert prune_history(env.history, runs_before=env.now[0] - timedelta(days=1, hours=12), audit_before=None).runs == 2
    return env


def test_backup_success_rate_says_when_retention_deleted_runs_of_its_window(make_env, webhook_receiver) -> None:
    """Runs history retention deleted are not counted as if the rate covered the whole window: the alert says
    from when it counts."""
    env = _three_daily_backups_then_two_pruned(make_env, webhook_receiver)
    kept_since = env.history.runs_deleted_through()
    assert kept_since is not None
    env.run("db-backup")  # 1 of the 2 runs kept failed
    [rate] = events_of(webhook_receiver.wait_for(1), "backup.success_rate")
    assert rate["details"] == {"rate_pct": 50.0, "succeeded": 1, "total": 2, "counted_since": kept_since.isoformat()}
    assert "30d" not in rate["title"] and "over 2d" in rate["title"], rate["title"]
    assert f"runs that finished before {kept_since:%Y-%m-%d %H:%M} UTC, inside the 30d success_rate_window, " \
           "were deleted by history retention" in rate["text"], rate["text"]


def test_backup_success_rate_with_a_damaged_retention_marker_says_runs_may_be_missing(make_env,
                                                                                       webhook_receiver) -> None:
    """The record of what retention deleted damaged (a hand edit, a bad restore): the rate is neither an error
    nor a rate claimed over the whole window; it counts from the marker's last write and says runs may be gone."""
    from sqlalchemy import update

    from upkeeper.core.history import RETENTION_STATE
    from upkeeper.core.models import StateRow

    env = _three_daily_backups_then_two_pruned(make_env, webhook_receiver)
    # damaged by a hand edit that left the row's time as the prune wrote it (the prune "ran" at this clock's time)
    pruned_at = env.now[0] - timedelta(days=1, hours=12)
    env.history.set_state(*RETENTION_STATE, "2026-13-45 garbage")
    with env.history.session() as s:
        s.execute(update(StateRow).where(StateRow.job == RETENTION_STATE[0], StateRow.key == RETENTION_STATE[1])
                  .values(updated_at=pruned_at))
    bound = env.history.deleted_runs()
    assert bound is not None and not bound.exact and bound.through == pruned_at
    assert env.run("db-backup") == "fail"
    [rate] = events_of(webhook_receiver.wait_for(1), "backup.success_rate")
    assert rate["details"] == {"rate_pct": 50.0, "succeeded": 1, "total": 2, "counted_since": pruned_at.isoformat()}
    assert f"runs that finished before {bound.through:%Y-%m-%d %H:%M} UTC, inside the 30d success_rate_window, " \
           "may have been deleted by history retention: its record of what it deleted is damaged" in rate["text"], \
        rate["text"]


def test_background_sending_never_holds_the_run_on_a_slow_channel(make_env, webhook_receiver) -> None:
    env = make_env(config(channels(webhook_receiver)))
    env.engine.start_background_sending()
    webhook_receiver.delay = 4.0
    script("nightly", fail("disk full"))
    t0 = time.monotonic()
    assert env.run("nightly") == "fail"
    assert time.monotonic() - t0 < 3.0, "the run waited for the webhook"  # (it answers after 4 s)
    [d] = env.engine.store.deliveries()
    assert d.status == "sending"  # recorded (leased to its sender) before it is sent
    assert env.engine.stop_background_sending(10)  # stopping sends what is queued
    assert events_of(webhook_receiver.wait_for(1), "run")[0]["summary"] == "disk full"
    assert env.engine.store.get_delivery(d.id).status == "sent"


def test_a_queued_delivery_taken_over_by_the_retry_path_is_sent_once(make_env, webhook_receiver) -> None:
    import queue

    env = make_env(config(channels(webhook_receiver)))
    env.engine._outbox = queue.Queue()  # a sender stuck for longer than the lease: the message waits in its queue
    script("nightly", fail("disk full"))
    env.run("nightly")
    assert webhook_receiver.requests == []
    # its lease runs out; the retry path (this daemon's periodic tick, or another daemon) takes it and sends it
    env.now[0] += timedelta(minutes=3)
    assert [r.ok for r in env.engine.retry_due(env.now[0])] == [True]
    assert len(webhook_receiver.wait_for(1)) == 1
    env.engine.start_background_sending()  # the sender comes back to its queue: the message is no longer its own
    assert env.engine.stop_background_sending(10)
    time.sleep(0.3)
    assert len(webhook_receiver.requests) == 1
    [d] = env.engine.store.deliveries()
    assert d.status == "sent" and d.attempts == 1


def test_a_late_outcome_of_an_attempt_whose_lease_ran_out_is_not_recorded(make_env, webhook_receiver,
                                                                         caplog) -> None:
    """A send slower than the delivery's lease (an endpoint answering 500 after minutes): meanwhile another daemon's
    retry path claims the delivery and sends it.  The first attempt's failure, recorded after that, overwrote the
    'sent' and scheduled a retry: the message went out twice.  Now it is logged, not recorded."""
    import logging

    from upkeeper.notify.engine import NotificationEngine

    env = make_env(config(channels(webhook_receiver)))
    other = NotificationEngine(env.setup, env.history, clock=env.clock)  # another daemon on the same history
    transport = env.engine.transports["hook"]
    send = transport.send
    taken = []

    def slow_send(payload):  # the endpoint answers 500, but only after the lease ran out and the other daemon sent
        try:
            return send(payload)
        finally:
            taken.extend(other.retry_due(env.now[0] + timedelta(minutes=3)))

    transport.send = slow_send
    webhook_receiver.fail_with = [500]
    script("nightly", fail("disk full"))
    with caplog.at_level(logging.WARNING, logger="upkeeper.notify.engine"):
        assert env.run("nightly") == "fail"
    assert [r.ok for r in taken] == [True] and len(webhook_receiver.wait_for(1)) == 1  # (the 500 is not counted)
    [d] = env.engine.store.deliveries()
    assert (d.status, d.attempts, d.next_attempt_at, d.last_error) == ("sent", 1, None, "")
    assert any("not recorded: its lease ran out" in r.getMessage() for r in caplog.records), caplog.text
    assert env.engine.retry_due(env.now[0] + timedelta(days=1)) == []  # nothing left to send again
    time.sleep(0.2)
    assert len(webhook_receiver.requests) == 1


def test_a_job_removed_from_the_config_has_its_problem_closed_by_the_node_that_recorded_it(
        make_env, webhook_receiver, pagerduty) -> None:
    """A job removed (or renamed) while failing kept its problem open for ever: its PagerDuty incident was never
    resolved.  The node that recorded the problem closes it, as removed (not recovered); a node sharing the
    history whose config never had the job leaves it alone."""
    chans = channels(webhook_receiver, pagerduty, slack=webhook_receiver)
    a = make_env(config(chans) + "node: a\n")
    script("nightly", fail("disk full"))
    assert a.run("nightly") == "fail"
    key = "upkeeper:nightly:run"
    assert pagerduty.incidents.get(key) == "triggered"
    webhook_receiver.requests.clear()
    other = {"weekly": {"task": "testing.scripted", "schedule": "0 4 * * 0"}}
    b = make_env(config(chans, other) + "node: b\n", start=a.now[0] + timedelta(minutes=5))
    b.engine.tick()  # another node's config never had the job: not its problem to close
    assert a.engine.store.get("nightly", "run").state == "problem"  # type: ignore[union-attr]
    assert pagerduty.incidents[key] == "triggered"
    a2 = make_env(config(chans, other) + "node: a\n", start=a.now[0] + timedelta(minutes=10))
    a2.engine.tick()  # node a reloaded without the job
    st = a2.engine.store.get("nightly", "run")
    assert st is not None and st.state == "ok" and st.level == 0
    assert pagerduty.incidents[key] == "resolved"
    hook = [r for r in webhook_receiver.wait_for(2) if r.path == "/hook"]
    [slack] = [r.json() for r in webhook_receiver.requests if r.path.startswith("/services/")]
    [ev] = events_of(hook, "run")
    assert ev["state"] == "resolved" and ev["details"]["closed"] == "job removed from the config"
    assert "not recovered" in ev["title"] and "recovered:" not in ev["title"]
    assert slack["attachments"][0]["color"] == "#9e9e9e"  # not the green of a recovery
    a2.engine.tick()  # closed once
    assert len(webhook_receiver.requests) == 2


def test_a_problem_recorded_before_nodes_were_is_closed_when_the_history_has_a_single_node(
        make_env, webhook_receiver) -> None:
    """A problem the notify_state_node migration found no node for (node NULL) stayed open for ever once its job
    left the config: no node could close it.  In a history only this node ever wrote to, it is this node's; in a
    history another node wrote to, it may be that node's, and stays."""
    from sqlalchemy import update

    from upkeeper.core.history import NewRun
    from upkeeper.notify.store import NotifyStateRow, NotifyStore

    a = make_env(config(channels(webhook_receiver)) + "node: test-node\n")
    script("nightly", fail("disk full"))
    assert a.run("nightly") == "fail"
    with a.history.session() as s:  # as the migration left it when no run told the node
        s.execute(update(NotifyStateRow).values(node=None))
    other = {"weekly": {"task": "testing.scripted", "schedule": "0 4 * * 0"}}
    a2 = make_env(config(channels(webhook_receiver), other) + "node: test-node\n",
                  start=a.now[0] + timedelta(minutes=10))
    a2.engine.tick()
    st = a2.engine.store.get("nightly", "run")
    assert st is not None and st.state == "ok"
    assert events_of(webhook_receiver.requests)[-1]["details"]["closed"] == "job removed from the config"
    # the same legacy problem in a history node b wrote to (a run of b's): left open
    with a.history.session() as s:
        s.execute(update(NotifyStateRow).values(state="problem", node=None))
    rid = a.history.create_run(NewRun(job="weekly", task="testing.scripted", target=None,
                                      scheduled_for=a2.now[0]), "b:1:1", "b")
    assert rid is not None
    assert NotifyStore(a.history, "test-node").close_removed(["weekly"], a2.now[0]) == []
    assert a2.engine.store.get("nightly", "run").state == "problem"  # type: ignore[union-attr]


def test_the_commands_backup_and_escalation_alerts_suggest_run(make_env, webhook_receiver, tmp_path) -> None:
    """The success-rate alert's 'command' and an escalation step's 'More:' line are command lines that work (they
    said 'upkeeper history --job NAME', an option 'history' does not have: exit 2)."""
    import shlex

    from conftest import invoke

    oncall = HttpReceiver().start()
    try:
        chans = {**channels(webhook_receiver), "oncall": {"kind": "webhook", "url": oncall.url + "/hook"}}
        text = config(chans, {"db-backup": {"task": "testing.backup", "schedule": "0 0 * * *"}},
                      escalation={"levels": [{"name": "automatic retry or fix"},
                                             {"name": "on-call", "after_failures": 1, "channels": ["oncall"]}]})
        env = make_env(text)
        script("db-backup", fail("pg_dump exited 1"))
        env.run("db-backup")
        [rate] = events_of(webhook_receiver.wait_for(1), "backup.success_rate")
        steps = events_of(oncall.wait_for(1), "escalation")
    finally:
        oncall.stop()
    more = [ln.removeprefix("More: ") for s in steps for ln in s["text"].splitlines() if ln.startswith("More: ")]
    assert more, steps
    cfg = tmp_path / "upkeeper.yaml"
    cfg.write_text(f"history: {tmp_path / 'history.db'}\n" + text)
    for command in [rate["command"], *more]:
        assert command == "upkeeper history db-backup", command
        res = invoke(["--config", cfg, *shlex.split(command)[1:], "--json"])
        assert res.code == 0, res.output
        assert {r["job"] for r in res.json()} == {"db-backup"}
