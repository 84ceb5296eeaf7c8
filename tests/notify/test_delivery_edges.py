"""What is sent, and how a misbehaving endpoint is handled: secrets and markup quoted by findings, an answer
dribbled a byte at a time, Retry-After, retries off the daemon's scheduling loop, apprise's timeouts."""

from __future__ import annotations

import socket
import threading
import time
from datetime import timedelta

from notify_support import fail, ok, script, yaml_block
from upkeeper.core.task import Finding, Result, Severity, Status
from upkeeper.redact import redact
from upkeeper.sandbox.receivers import Answer, HttpReceiver, PagerDutyReceiver, Request
from upkeeper.sandbox.smtp import SmtpServer


def config(chans: dict[str, object]) -> str:
    return yaml_block({"notifications": {"channels": chans},
                       "jobs": {"nightly": {"task": "testing.scripted", "schedule": "0 3 * * *"}}})


def channels(hook: HttpReceiver) -> dict[str, object]:
    return {"hook": {"kind": "webhook", "url": hook.url + "/hook"}}


QUOTED = Result(summary="pg_dump failed", status=Status.FAIL, findings=[Finding(
    "testing.broken", Severity.CRITICAL, "postgresql://app:hunter22@db/app",
    "GET /<img src=x onerror=alert(1)> <!channel> via postgresql://app:hunter22@db/app", "check the dump")])


def test_a_secret_quoted_by_a_finding_is_masked_in_the_first_attempt_too(make_env, webhook_receiver) -> None:
    """The run event's text quoted its findings unredacted, and the first attempt sent the payload as built
    (only the stored copy, which retries send, was redacted)."""
    env = make_env(config(channels(webhook_receiver)))
    script("nightly", QUOTED)
    assert env.run("nightly") == "fail"
    [req] = webhook_receiver.wait_for(1)
    assert "hunter22" not in req.body.decode() and "postgresql://app:***@db/app" in req.json()["text"]
    [d] = env.engine.store.deliveries()
    assert d.payload == req.json()  # what was sent is what a retry would send


def test_email_quotes_markup_literally_as_plain_text(make_env, smtp_server: SmtpServer) -> None:
    """apprise took the body for HTML: the mail's HTML part ran a quoted <img onerror=…>, its text part had the
    tags stripped and the lines run together."""
    env = make_env(config({"email": smtp_server.url()}))
    script("nightly", QUOTED)
    assert env.run("nightly") == "fail"
    [mail] = smtp_server.wait_for(1)
    html = mail.message.get_body(preferencelist=("html",))
    assert html is None or "<img" not in html.get_content()
    body = mail.body
    assert "GET /<img src=x onerror=alert(1)> <!channel>" in body
    assert "\npg_dump failed" in body.replace("\r\n", "\n")  # its lines kept


def _dribbling_server(seconds: float) -> tuple[int, threading.Event]:
    """Answers headers at once, then one byte of its body every 0.25 s for ``seconds``."""
    srv = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        conn, _ = srv.accept()
        with conn, srv:
            conn.recv(65536)
            n = int(seconds / 0.25)
            conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n".encode())
            try:
                for _ in range(n):
                    time.sleep(0.25)
                    conn.sendall(b"x")
            except OSError:
                pass
        done.set()

    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1], done


def test_a_webhook_dribbling_its_answer_is_cut_at_the_channel_timeout(make_env) -> None:
    """httpx's timeout bounds each read: an answer dribbled a byte at a time held the attempt (the sender thread,
    the daemon's retries) as long as the endpoint liked."""
    port, _done = _dribbling_server(10)
    env = make_env(config({"hook": {"kind": "webhook", "url": f"http://127.0.0.1:{port}/hook", "timeout": "1s"}}))
    script("nightly", fail("disk full"))
    t0 = time.monotonic()
    assert env.run("nightly") == "fail"
    assert time.monotonic() - t0 < 5, "the attempt outlived its channel's timeout"  # the answer takes 10 s
    [d] = env.engine.store.deliveries()
    assert d.status == "failed" and "no complete answer within 1 s" in d.last_error


class RateLimited(HttpReceiver):
    def respond(self, req: Request) -> Answer:
        if len(self.requests) == 1:
            return Answer(429, {"ok": False, "error": "rate_limited"}, headers={"Retry-After": "900"})
        return Answer(200, {"ok": True})


def test_a_429_is_not_retried_before_its_retry_after(make_env) -> None:
    hook = RateLimited().start()
    try:
        env = make_env(config(channels(hook)))
        script("nightly", fail("disk full"))
        env.run("nightly")
        [d] = env.engine.store.deliveries()
        assert d.status == "failed" and "Retry-After: 900 s" in d.last_error
        assert d.next_attempt_at is not None and d.next_attempt_at - env.now[0] >= timedelta(seconds=900)
        assert env.engine.retry_due(env.now[0] + timedelta(minutes=5)) == []  # the backoff alone said 1 minute
        assert [r.ok for r in env.engine.retry_due(env.now[0] + timedelta(minutes=16))] == [True]
    finally:
        hook.stop()


def test_the_daemon_hands_retries_to_its_sender_thread(make_env, webhook_receiver) -> None:
    """The daemon calls retry_due from its scheduling loop: a slow channel, once per due delivery, delayed
    every scheduled job."""
    env = make_env(config(channels(webhook_receiver)))
    webhook_receiver.fail_with = [500]
    script("nightly", fail("disk full"))
    env.run("nightly")
    [d] = env.engine.store.deliveries()
    assert d.status == "failed"
    env.engine.start_background_sending()
    webhook_receiver.delay = 3.0
    t0 = time.monotonic()
    env.engine.retry_due(env.now[0] + timedelta(minutes=2))
    assert time.monotonic() - t0 < 2.0, "the retry was sent from the caller's thread"
    assert env.engine.stop_background_sending(10)
    assert len(webhook_receiver.wait_for(1)) == 1
    d = env.engine.store.get_delivery(d.id)
    assert (d.status, d.attempts) == ("sent", 2)


def test_an_apprise_channel_keeps_its_timeout(make_env, webhook_receiver) -> None:
    """apprise's own 4 s defaults applied whatever the channel's ``timeout``."""
    webhook_receiver.delay = 2.5
    url = webhook_receiver.url.replace("http://", "json://") + "/hook"
    env = make_env(config({"hook": {"kind": "apprise", "url": url, "timeout": "1s"}}))
    script("nightly", fail("disk full"))
    env.run("nightly")
    [d] = env.engine.store.deliveries()
    assert d.status == "failed", d.last_error


def test_a_huge_summary_is_clipped_so_pagerduty_takes_the_alarm(make_env, webhook_receiver, pagerduty) -> None:
    """A run's summary quoting a command's whole stderr made a PagerDuty event past the Events API's 512 KB:
    rejected (400, permanent), the page was lost."""
    env = make_env(config({**channels(webhook_receiver),
                           "pager": {"kind": "pagerduty", "routing_key": "0123456789abcdef0123456789abcdef",
                                     "url": pagerduty.events_url}}))
    script("nightly", fail("pg_dump: error: " + "x" * 600_000))
    assert env.run("nightly") == "fail"
    assert {d.channel: d.status for d in env.engine.store.deliveries()} == {"hook": "sent", "pager": "sent"}
    [run] = [e for e in webhook_receiver.wait_for(1)[0].json()["events"] if e["topic"] == "run"]
    assert run["summary"].endswith("… (599016 more characters)") and len(run["summary"]) < 1100
    assert run["text"].endswith("More: upkeeper show 1") and len(run["text"]) < 8000
    assert run["findings"][0]["message"].startswith("pg_dump: error: xxx") and len(run["findings"][0]["message"]) < 1100


def test_status_check_notify_escalates_without_a_daemon(make_env, webhook_receiver) -> None:
    """Jobs run by cron: only the daemon's periodic check escalated by time, so a level's ``after`` never
    came; ``upkeeper status --check --notify`` (from cron) does it too."""
    from upkeeper.cli.status import notification_status

    lead = HttpReceiver().start()
    try:
        env = make_env(yaml_block({
            "notifications": {
                "channels": {**channels(webhook_receiver), "lead": {"kind": "webhook", "url": lead.url}},
                "escalation": {"levels": [{"name": "automatic retry or fix"},
                                          {"name": "team lead", "after": "30m", "channels": ["lead"]}]}},
            "jobs": {"nightly": {"task": "testing.scripted", "schedule": "0 3 * * *"}}}))
        script("nightly", fail("disk full"))
        assert env.run("nightly") == "fail"
        notification_status(env.setup, env.history, env.now[0] + timedelta(minutes=10), notify=True)
        assert lead.requests == []
        notification_status(env.setup, env.history, env.now[0] + timedelta(minutes=40), notify=True)
        [req] = lead.wait_for(1)
        assert req.json()["events"][0]["title"].startswith("ESCALATED to level 2 (team lead): nightly run")
        notification_status(env.setup, env.history, env.now[0] + timedelta(minutes=50), notify=True)
        time.sleep(0.2)
        assert len(lead.requests) == 1  # once
    finally:
        lead.stop()


def test_apprise_debug_lines_quoting_the_token_never_reach_the_log(make_env, webhook_receiver, caplog) -> None:
    """apprise logs the service URL it posts to at debug level ("JSON POST URL: http://…/hooks/<token>", urllib3
    "POST /hooks/<token>"): only the whole apprise URL was a registered secret, so the daemon at --log-level debug
    logged the token."""
    import logging

    token = "T0KENd5c1f0e2b7a94e8c"
    url = webhook_receiver.url.replace("http://", "json://") + f"/hooks/{token}"
    env = make_env(config({"hook": {"kind": "apprise", "url": url}}))
    script("nightly", fail("disk full"))
    with caplog.at_level(logging.DEBUG):
        env.run("nightly")
    [d] = env.engine.store.deliveries()
    assert d.status == "sent"
    assert token in webhook_receiver.wait_for(1)[0].path  # (sent where it should)
    # the daemon's log handler masks registered secrets (upkeeper.redact.RedactingFilter): so does this
    assert token not in redact(caplog.text)


def pager_config(pd: PagerDutyReceiver) -> str:
    return config({"pager": {"kind": "pagerduty", "routing_key": "0123456789abcdef0123456789abcdef",
                             "url": pd.events_url}})


def test_a_trigger_retried_after_its_problem_resolved_is_not_sent(make_env, pagerduty) -> None:
    """PagerDuty refused the trigger once (500); the job recovered and the resolve went out; the trigger's retry
    then opened an incident for a job that was fine — nothing would ever resolve it."""
    env = make_env(pager_config(pagerduty))
    script("nightly", fail("disk full"), ok())
    pagerduty.fail_with = [500]
    env.run("nightly")
    env.now[0] += timedelta(seconds=30)
    env.run("nightly")
    [skipped] = env.engine.retry_due(env.now[0] + timedelta(minutes=5))
    assert pagerduty.incidents["upkeeper:nightly:run"] == "resolved"
    assert skipped.skipped and "resolved since" in skipped.detail
    assert "superseded" in {d.status for d in env.engine.store.deliveries()}


def test_a_resolve_retried_after_the_problem_came_back_is_not_sent(make_env, pagerduty) -> None:
    """The resolve failed once; the job failed again (a trigger on the same dedup key, sent); the resolve's
    retry then closed the incident of a job that was failing."""
    env = make_env(pager_config(pagerduty))
    script("nightly", fail("disk full"), ok(), fail("disk full again"))
    env.run("nightly")
    env.now[0] += timedelta(seconds=30)
    pagerduty.fail_with = [500]
    env.run("nightly")
    env.now[0] += timedelta(seconds=30)
    env.run("nightly")
    [skipped] = env.engine.retry_due(env.now[0] + timedelta(minutes=5))
    assert pagerduty.incidents["upkeeper:nightly:run"] == "triggered"
    assert skipped.skipped and "a problem again" in skipped.detail


def test_an_smtp_5xx_rejection_is_permanent_and_a_4xx_is_retried(make_env, smtp_server: SmtpServer) -> None:
    """Every apprise failure counted as temporary: a mail server's permanent rejection (550) was retried for the
    whole give_up_after (24 h), and looked no different from a server answering 451 (try again later)."""
    env = make_env(config({"email": smtp_server.url()}))
    smtp_server.reject = "550 5.7.1 relaying denied"
    script("nightly", fail("disk full"), ok())
    env.run("nightly")
    [d] = env.engine.store.deliveries()
    assert d.status == "dead" and d.next_attempt_at is None, (d.status, d.last_error)
    assert "SMTP 550 5.7.1 relaying denied" in d.last_error
    smtp_server.reject = "451 4.3.0 try again later"
    env.run("nightly")  # recovered: a new message
    [d2] = [x for x in env.engine.store.deliveries() if x.id != d.id]
    assert d2.status == "failed" and d2.next_attempt_at is not None, (d2.status, d2.last_error)
    assert "SMTP 451" in d2.last_error


def test_an_apprise_http_4xx_is_permanent_and_a_5xx_is_retried(make_env, webhook_receiver) -> None:
    """As for our own HTTP channels: a 4xx (but 408/429) from the service behind an apprise URL is a rejection."""
    env = make_env(config({"hook": {"kind": "apprise", "url": webhook_receiver.url.replace("http://", "json://")}}))
    webhook_receiver.fail_with = [400, 503]
    script("nightly", fail("disk full"), ok())
    env.run("nightly")
    env.run("nightly")
    first, second = sorted(env.engine.store.deliveries(), key=lambda x: x.id)
    assert first.status == "dead" and "HTTP 400" in first.last_error, (first.status, first.last_error)
    assert second.status == "failed" and second.next_attempt_at is not None, (second.status, second.last_error)
    # what apprise logged, without its log format's time and level ("apprise channel 'hook' failed: 2026-12-06
    # 10:46:41,366 - WARNING - …" in 'upkeeper status' and 'notify log')
    assert " - WARNING - " not in first.last_error + second.last_error, (first.last_error, second.last_error)
    assert first.last_error.startswith("apprise channel 'hook' failed: Failed to send"), first.last_error


def test_notify_retry_leaves_a_delivery_being_sent_to_its_sender(make_env, make_config, cli,
                                                                 webhook_receiver) -> None:
    """``notify retry`` took a delivery whatever its schedule: one that a run (or the daemon) was sending to a slow
    endpoint at that moment went out twice.  It now says the delivery is being sent and leaves it; a delivery
    whose sender died (its lease ran out) is still taken over."""
    from datetime import UTC, datetime

    chans = channels(webhook_receiver)
    cfg = make_config({"notifications": {"channels": chans},
                       "jobs": {"nightly": {"task": "testing.scripted", "schedule": "0 3 * * *"}}})
    env = make_env(config(chans), start=datetime.now(UTC))
    webhook_receiver.delay = 1.0
    script("nightly", fail("disk full"))
    runner = threading.Thread(target=env.run, args=("nightly",))
    runner.start()
    try:
        webhook_receiver.wait_for(1)  # the run's attempt is at the endpoint, waiting for its answer
        res = cli(["--config", cfg, "notify", "retry", "--json"])
        assert res.code == 0, res.output
        [r] = res.json()
        assert (r["ok"], r["sent"]) == (True, False) and "being sent" in r["detail"], r
        assert "being sent" in cli(["--config", cfg, "notify", "retry"]).out
    finally:
        runner.join(10)
    webhook_receiver.delay = 0
    time.sleep(0.2)
    assert len(webhook_receiver.requests) == 1, "sent twice"
    [d] = env.engine.store.deliveries()
    assert (d.status, d.attempts) == ("sent", 1)
    # a sender that died: its lease runs out and notify retry takes the delivery over
    env.now[0] = datetime.now(UTC) - timedelta(minutes=5)
    script("nightly", ok())
    webhook_receiver.stop()
    assert env.run("nightly") == "ok"  # the recovery fails to go out: backoff
    webhook_receiver.start()
    [d] = [d for d in env.engine.store.deliveries() if d.status != "sent"]
    assert d.status == "failed"
    sid = env.engine.store.add_delivery("hook", d.event_ids, d.payload, env.now[0], timedelta(minutes=2))
    claimed = env.engine.store.claim_one(d.id, env.now[0], timedelta(minutes=2))  # a retry whose sender died
    assert claimed is not None and claimed.status == "sending"  # type: ignore[union-attr]
    status = cli(["--config", cfg, "status", "--json"]).json()["notifications"]["failed_deliveries"]
    assert [(f["id"], f["status"]) for f in status] == [(d.id, "sending")]  # still a failure until sent
    res = cli(["--config", cfg, "notify", "retry", "--json"])
    assert sorted((r["delivery_id"], r["sent"]) for r in res.json()) == [(d.id, True), (sid, True)], res.output


def test_a_problem_retried_after_its_recovery_reached_the_channel_is_not_sent(make_env, webhook_receiver) -> None:
    """Only PagerDuty dropped a late delivery whose state was over: a chat or webhook channel got "nightly failed"
    after "nightly recovered" (the failure's first attempt failed, the recovery went out, then the retry), and
    read the job as broken again.  The recovery says how many runs failed and for how long."""
    env = make_env(config(channels(webhook_receiver)))
    webhook_receiver.fail_with = [500]
    script("nightly", fail("disk full"), ok())
    assert env.run("nightly") == "fail"
    env.now[0] += timedelta(minutes=1)
    assert env.run("nightly") == "ok"
    [rec] = webhook_receiver.wait_for(1)
    assert rec.json()["events"][0]["state"] == "resolved"
    [r] = env.engine.retry_due(env.now[0] + timedelta(minutes=10))
    assert r.skipped and "resolved since" in r.detail
    problem = env.engine.store.get_delivery(r.delivery_id)
    assert problem is not None and problem.status == "superseded"
    time.sleep(0.2)
    assert len(webhook_receiver.requests) == 1


def test_a_late_message_keeps_only_its_events_still_current(make_env, webhook_receiver) -> None:
    """A late message reporting a run failure that is over and a finding still open: the run's failure is left out
    (the recovery went out before), the finding — never told — goes out, and what was sent is what is stored."""
    env = make_env(config(channels(webhook_receiver)))
    webhook_receiver.fail_with = [500]
    broken = Finding("testing.broken", Severity.CRITICAL, "thing", "disk full", "fix the thing")
    script("nightly", Result(summary="disk full", status=Status.FAIL, findings=[broken]),
           Result(summary="degraded", status=Status.WARN, findings=[broken]))
    assert env.run("nightly") == "fail"
    env.now[0] += timedelta(minutes=1)
    assert env.run("nightly") == "warn"
    [rec] = webhook_receiver.wait_for(1)
    assert [(e["check"], e["state"]) for e in rec.json()["events"]] == [("run", "resolved")]
    [r] = env.engine.retry_due(env.now[0] + timedelta(minutes=10))
    assert r.ok and not r.skipped
    late = webhook_receiver.wait_for(2)[1].json()
    assert [(e["check"], e["state"]) for e in late["events"]] == [("testing.broken", "problem")]
    assert "nightly failed" not in late["text"] and late["title"].startswith("testing.broken")
    d = env.engine.store.get_delivery(r.delivery_id)
    assert d is not None and d.status == "sent" and d.payload == late
    assert [e["id"] for e in late["events"]] == d.event_ids
    [left] = [x for x in env.engine.store.deliveries() if x.status == "superseded"]  # notify log shows it
    assert left.channel == "hook" and "resolved since" in left.last_error and len(left.event_ids) == 1
