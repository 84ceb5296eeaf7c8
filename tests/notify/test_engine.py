"""The notification engine against real receivers: state changes, repeats, findings, backups, retries."""

from __future__ import annotations

from datetime import timedelta

from notify_support import error, fail, finding, ok, script, yaml_block

from upkeeper.notify.events import Payload
from upkeeper.sandbox.receivers import HttpReceiver, PagerDutyReceiver
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
