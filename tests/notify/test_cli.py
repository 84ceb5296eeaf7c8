"""The CLI around notifications and windows: run --at / --emergency, windows (--ics), notify, status --check,
and located config errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from icalendar import Calendar

from upkeeper.core.history import History, NewRun
from upkeeper.core.task import Result
from upkeeper.notify.events import Payload
from upkeeper.sandbox.receivers import HttpReceiver

DISK_OK = {"task": "host.disk", "options": {"mounts": ["/"], "warning": 99.9, "critical": 100}}
DISK_FAIL = {"task": "host.disk", "options": {"mounts": ["/"], "warning": 0.001, "critical": 0.01}}


def base(receiver: HttpReceiver, **extra: Any) -> dict[str, Any]:
    return {"notifications": {"channels": {"team": {"kind": "webhook", "url": receiver.url + "/hook"}}}, **extra}


def payloads(r: HttpReceiver) -> list[Payload]:
    return [Payload.model_validate(q.json()) for q in r.requests]


def test_windows_table_json_and_ics(cli, make_config, webhook_receiver) -> None:
    cfg = make_config(base(webhook_receiver, windows={
        "monthly": {"rrule": "FREQ=MONTHLY;BYDAY=1SU", "start": "02:00", "duration": "4h",
                    "description": "first Sunday"},
    }, blackouts={"freeze": {"start": "2030-12-20", "end": "2031-01-04", "timezone": "Europe/Berlin"}},
        jobs={"reindex": {**DISK_OK, "schedule": "0 3 * * *", "window": "monthly"}}))
    res = cli(["--config", cfg, "windows"])
    assert res.code == 0, res.output
    assert "monthly" in res.out and "reindex" in res.out
    data = cli(["--config", cfg, "windows", "--json", "--days", "200"]).json()
    assert len(data["windows"]) == 5 and all(w["planned"][0]["job"] == "reindex" for w in data["windows"])
    assert all(datetime.fromisoformat(w["start"]).weekday() == 6 for w in data["windows"])
    ics = cli(["--config", cfg, "windows", "--ics", "--days", "3660"])
    assert ics.code == 0, ics.output
    cal = Calendar.from_ical(ics.out)
    events = [c for c in cal.walk("VEVENT")]
    windows = [e for e in events if str(e["summary"]) == "Maintenance window: monthly"]
    assert 119 <= len(windows) <= 121  # ten years of first Sundays
    assert "reindex" in str(windows[0]["description"])
    [freeze] = [e for e in events if str(e["summary"]) == "Blackout: freeze"]
    assert freeze.decoded("dtstart") == datetime(2030, 12, 19, 23, 0, tzinfo=UTC)
    assert len({str(e["uid"]) for e in events}) == len(events)


def test_the_ics_feed_says_when_it_cut_a_window_short(cli, make_config, webhook_receiver) -> None:
    """An hourly window has 8,760 periods a year; the feed holds 1,000 per window (41 days) and said nothing: the
    calendar people subscribe to went blank after six weeks.  Now a note on stderr names the window and how far
    the feed reaches; a window within the cap gets none."""
    cfg = make_config(base(webhook_receiver, windows={
        "hourly": {"rrule": "FREQ=HOURLY", "start": "00:10", "duration": "5m"},
        "monthly": {"rrule": "FREQ=MONTHLY;BYDAY=1SU", "start": "02:00", "duration": "4h"},
    }))
    res = cli(["--config", cfg, "windows", "--ics"])
    assert res.code == 0, res.output
    hourly = [e for e in Calendar.from_ical(res.out).walk("VEVENT") if str(e["summary"]) == "Maintenance window: hourly"]
    assert len(hourly) == 1000
    note = " ".join(res.err.split())
    assert "window hourly: the feed holds its first 1000 periods only, up to" in note and "not the 365 days" in note
    assert "monthly" not in note


def test_window_job_refuses_unplanned_runs_and_plans_with_notice(cli, make_config, webhook_receiver,
                                                                 tmp_path) -> None:
    now = datetime.now(UTC)
    # a one-off window from 3 hours from now, for 2 hours
    start = (now + timedelta(hours=3)).replace(second=0, microsecond=0)
    cfg = make_config(base(webhook_receiver, windows={"tonight": {
        "start": start.strftime("%Y-%m-%d %H:%M"), "duration": "2h", "timezone": "UTC"}},
        jobs={"reindex": {**DISK_OK, "window": "tonight"}}))
    res = cli(["--config", cfg, "run", "reindex"])
    assert res.code == 2
    assert "runs only inside maintenance window 'tonight'" in res.err and "--at" in res.err
    res = cli(["--config", cfg, "run", "reindex", "--at", "+30m"])
    assert res.code == 2 and "outside maintenance window" in res.err
    at = (start + timedelta(minutes=30)).strftime("%Y-%m-%d %H:%M")
    res = cli(["--config", cfg, "run", "reindex", "--at", at, "--json"])
    assert res.code == 0, res.output
    [planned] = res.json()
    run = History("sqlite:///" + str(tmp_path / "history.db")).get_run(planned["run_id"])
    assert run is not None and (run.status, run.trigger) == ("pending", "planned")
    assert run.due_at == start + timedelta(minutes=30)
    [ann] = payloads(webhook_receiver)
    assert ann.events[0].topic == "planned" and "Planned run of reindex" in ann.title
    # it named no way to cancel ("Cancel: upkeeper history shows the pending run ids"): there is no cancel command
    assert "Cancel" not in ann.text and "'upkeeper history reindex' lists it (pending)" in ann.text, ann.text
    audit = History("sqlite:///" + str(tmp_path / "history.db")).audit_entries()
    assert [(a.action, a.job) for a in audit] == [("planned-run", "reindex")]
    shown = cli(["--config", cfg, "show", str(planned["run_id"])])
    assert shown.code == 0 and f"planned by {audit[0].actor} at {now:%Y-%m-%d} " in shown.out, shown.out


def test_min_notice_inside_an_open_window(cli, make_config, webhook_receiver) -> None:
    now = datetime.now(UTC)
    start = (now - timedelta(hours=1)).replace(second=0, microsecond=0)
    cfg = make_config(base(webhook_receiver, windows={"now": {
        "start": start.strftime("%Y-%m-%d %H:%M"), "duration": "6h", "timezone": "UTC"}},
        jobs={"reindex": {**DISK_OK, "window": "now"}}))
    res = cli(["--config", cfg, "run", "reindex", "--at", "+20m"])
    assert res.code == 2 and "needs at least 1h notice" in res.err
    assert cli(["--config", cfg, "run", "reindex", "--at", "+90m"]).code == 0


def test_a_scheduled_run_inside_a_blackout_is_recorded_skipped_and_exits_0(cli, make_config, webhook_receiver,
                                                                             tmp_path) -> None:
    """What cron runs ('upkeeper cron export': run JOB --scheduled --quiet): a blackout skips the job as the daemon
    would — recorded, exit 0, nothing printed for cron to mail — where a run by hand is refused (exit 2)."""
    today = datetime.now(UTC).date()
    cfg = make_config(base(webhook_receiver, blackouts={"launch": {
        "start": (today - timedelta(days=1)).isoformat(), "end": (today + timedelta(days=1)).isoformat(),
        "timezone": "UTC", "except": ["security"]}},
        jobs={"disk": {**DISK_OK, "schedule": "0 3 * * *"}, "audit": {**DISK_OK, "category": "security"}}))
    assert cli(["--config", cfg, "run", "disk", "--quiet"]).code == 2
    res = cli(["--config", cfg, "run", "disk", "--scheduled", "--quiet"])
    assert res.code == 0 and res.out == "" and res.err == "", res.output
    res = cli(["--config", cfg, "run", "disk", "audit", "--scheduled", "--json"])
    assert res.code == 0, res.output
    got = {r["job"]: r for r in res.json()}
    assert got["audit"]["status"] == "ok"  # an excepted category runs
    assert got["disk"]["status"] == "skipped" and "blackout 'launch'" in got["disk"]["summary"]
    h = History("sqlite:///" + str(tmp_path / "history.db"))
    rows = [r for r in h.runs(job="disk")]
    assert len(rows) == 2 and all(r.status == "skipped" and "blackout 'launch'" in (r.summary or "") for r in rows)
    assert cli(["--config", cfg, "run", "disk", "--scheduled", "--emergency"]).code == 2
    export = cli(["--config", cfg, "cron", "export"]).out
    assert " run disk --scheduled --quiet" in export


def test_blackout_refuses_then_emergency_runs_audited_and_announced(cli, make_config, webhook_receiver,
                                                                   tmp_path) -> None:
    today = datetime.now(UTC).date()
    cfg = make_config(base(webhook_receiver, blackouts={"launch": {
        "start": (today - timedelta(days=1)).isoformat(), "end": (today + timedelta(days=1)).isoformat(),
        "timezone": "UTC", "except": ["security"]}},
        jobs={"disk": DISK_OK, "audit": {**DISK_OK, "category": "security"}}))
    res = cli(["--config", cfg, "run", "disk"])
    assert res.code == 2 and "blackout 'launch'" in res.err and "--emergency" in res.err
    assert cli(["--config", cfg, "run", "audit"]).code == 0  # excepted category
    res = cli(["--config", cfg, "run", "disk", "--emergency"])
    assert res.code == 2 and "--reason and --approved-by" in res.err
    res = cli(["--config", cfg, "run", "disk", "--emergency", "--reason", "restore after bad deploy",
               "--approved-by", "alice", "--json"])
    assert res.code == 0, res.output
    [r] = res.json()
    h = History("sqlite:///" + str(tmp_path / "history.db"))
    row = h.get_run(r["run_id"])
    assert row is not None and row.trigger == "emergency" and row.details["approved_by"] == "alice"
    [entry] = [a for a in h.audit_entries() if a.action == "emergency-run"]
    assert entry.job == "disk" and entry.details["reason"] == "restore after bad deploy"
    assert "blackout 'launch'" in entry.details["overrides"]
    titles = [p.title for p in payloads(webhook_receiver)]
    assert titles[0].startswith("EMERGENCY run of disk by ") and "approved by alice" in titles[0]
    assert titles[-1] == "EMERGENCY run finished: 1 ok, 0 failed"
    # 'show' says who asked, who approved and why, where the run is looked at (it was in --json only)
    shown = cli(["--config", cfg, "show", str(r["run_id"])])
    assert shown.code == 0, shown.output
    assert "emergency run: requested by " in shown.out and "approved by alice; reason: restore after bad deploy" \
        in shown.out, shown.out


def test_status_check_detects_missed_runs_and_notifies(cli, make_config, webhook_receiver, tmp_path) -> None:
    cfg = make_config(base(webhook_receiver, jobs={"disk": {**DISK_OK, "schedule": "*/5 * * * *",
                                                            "missed_grace": "10m"}}))
    h = History("sqlite:///" + str(tmp_path / "history.db"))
    past = datetime.now(UTC) - timedelta(hours=2)
    rid = h.create_run(NewRun(job="disk", task="host.disk", target=None, scheduled_for=past), "old:1:1", "n1")
    assert rid is not None
    h.start_run(rid, past, "old:1:1")
    h.finish_run(rid, status="ok", result=Result(summary="fine"), finished_at=past + timedelta(seconds=1),
                 started_at=past)
    res = cli(["--config", cfg, "status", "--check"])
    assert res.code == 1 and "missed:" in res.out and "disk" in res.out
    assert webhook_receiver.requests == []
    res = cli(["--config", cfg, "status", "--check", "--notify", "--json"])
    assert res.code == 1
    assert [m["job"] for m in res.json()["notifications"]["missed"]] == ["disk"]
    [p] = payloads(webhook_receiver)
    assert p.events[0].topic == "missed" and p.events[0].state == "problem"
    # run it: no longer missed
    assert cli(["--config", cfg, "run", "disk"]).code == 0
    assert cli(["--config", cfg, "status", "--check"]).code == 0
    assert payloads(webhook_receiver)[-1].events[0].state == "resolved"


def test_status_check_reports_a_job_whose_run_was_left_running_by_a_dead_process(cli, make_config, webhook_receiver,
                                                                                   tmp_path) -> None:
    """A daemon killed outright (the OOM killer, during the nightly backup) leaves its run 'running' until a daemon
    comes back to mark it interrupted; 'status --check' took the job for running and said nothing for as long
    as the daemon stayed dead.  A run whose owner lives (its daemon's heartbeat) still keeps its job quiet."""
    cfg = make_config(base(webhook_receiver, jobs={"backup": {**DISK_OK, "schedule": "0 3 * * *"},
                                                   "reindex": {**DISK_OK, "schedule": "0 3 * * *"}}))
    h = History("sqlite:///" + str(tmp_path / "history.db"))
    now = datetime.now(UTC)
    past = now - timedelta(days=2)
    for job, owner in (("backup", "db1:4242:1700000000"), ("reindex", "db2:4343:1700000000")):
        before = past - timedelta(days=1)  # the night before: ok
        rid = h.create_run(NewRun(job=job, task="host.disk", target=None, scheduled_for=before), owner, owner[:3])
        assert rid is not None
        h.start_run(rid, before, owner)
        h.finish_run(rid, status="ok", result=Result(summary="fine"), finished_at=before + timedelta(seconds=1),
                     started_at=before)
        rid = h.create_run(NewRun(job=job, task="host.disk", target=None, scheduled_for=past), owner, owner[:3])
        assert rid is not None
        h.start_run(rid, past, owner)
    h.daemon_heartbeat("db2:4343:1700000000", "db2", 4343, past, 2, "test", at=now)  # db2's daemon lives
    res = cli(["--config", cfg, "status", "--check", "--json"])
    assert res.code == 1, res.output
    assert [m["job"] for m in res.json()["notifications"]["missed"]] == ["backup"]


def test_failed_run_via_cli_notifies_and_delivery_failures_show_in_status(cli, make_config,
                                                                          webhook_receiver) -> None:
    cfg = make_config(base(webhook_receiver, jobs={"disk": DISK_FAIL}))
    webhook_receiver.stop()
    res = cli(["--config", cfg, "run", "disk"])
    assert res.code == 1  # the run failed; the notifier being down changes nothing about that
    st = cli(["--config", cfg, "status"])
    assert "1 delivery failure(s)" in st.out and "unreachable" in st.out
    assert cli(["--config", cfg, "notify", "retry"]).code == 1
    webhook_receiver.start()
    res = cli(["--config", cfg, "notify", "retry"])
    assert res.code == 0 and "sent" in res.out
    [p] = payloads(webhook_receiver)
    assert p.events[0].title == "disk failed" and p.events[0].status == "fail"
    log = cli(["--config", cfg, "notify", "log", "--json"]).json()
    assert log[0]["deliveries"][0]["status"] == "sent" and log[0]["deliveries"][0]["attempts"] == 3


def test_notify_test_and_schema(cli, make_config, webhook_receiver) -> None:
    cfg = make_config(base(webhook_receiver, jobs={"disk": DISK_OK}))
    res = cli(["--config", cfg, "notify", "test", "team"])
    assert res.code == 0, res.output
    assert "test notification" in payloads(webhook_receiver)[0].title
    assert cli(["--config", cfg, "notify", "test", "nope"]).code == 2
    schema = cli(["--config", cfg, "notify", "schema"]).json()
    assert "events" in schema["properties"] and schema["title"] == "Payload"


def test_notify_test_reaches_a_pagerduty_channel(cli, make_config, pagerduty) -> None:
    """A test message is a notice, and notices never go to PagerDuty: its test always failed ("not sent").
    It is an info alert resolved at once."""
    cfg = make_config({"notifications": {"channels": {"pager": {
        "kind": "pagerduty", "routing_key": "0123456789abcdef0123456789abcdef", "url": pagerduty.events_url}}},
        "jobs": {"disk": DISK_OK}})
    res = cli(["--config", cfg, "notify", "test", "pager"])
    assert res.code == 0, res.output
    assert [(r.json()["event_action"], r.json()["dedup_key"]) for r in pagerduty.wait_for(2)] == [
        ("trigger", "upkeeper:upkeeper:test"), ("resolve", "upkeeper:upkeeper:test")]
    assert pagerduty.requests[0].json()["payload"]["severity"] == "info"
    assert pagerduty.incidents == {"upkeeper:upkeeper:test": "resolved"}


def test_config_errors_are_located(cli, make_config, tmp_path) -> None:
    cfg = make_config({
        "notifications": {"channels": {"slack": "slack://a/b/c", "pager": {"kind": "pagerduty"}},
                          "routes": [{"channels": ["slak"]}]},
        "windows": {"monthly": {"rrule": "FREQ=MONTHLY;BYDAY=1SU", "start": "02:00", "end": "99:00"}},
        "jobs": {"disk": {**DISK_OK, "window": "montly"}},
    })
    res = cli(["--config", cfg, "jobs"])
    assert res.code == 2
    err = res.err
    assert "notifications -> channels -> pager" in err and "routing_key" in err
    assert "windows -> monthly" in err and "invalid time of day '99:00'" in err
    text = cfg.read_text()
    # cross-references are checked once the structure is valid
    fixed = text.replace("kind: pagerduty", "kind: pagerduty\n      routing_key: abc").replace("99:00", "06:00")
    cfg.write_text(fixed)
    res = cli(["--config", cfg, "jobs"])
    assert res.code == 2
    assert "notifications -> routes -> 0 -> channels -> 0: unknown channel 'slak'" in res.err
    assert "Try: 'slack'" in res.err
    assert "jobs -> disk -> window: unknown maintenance window 'montly'" in res.err
    assert "upkeeper.yaml:" in res.err  # file and line


def test_channel_secrets_never_reach_history_or_json(cli, make_config, webhook_receiver, tmp_path) -> None:
    token = "tok-9f8e7d6c5b4a"
    cfg = make_config({
        "notifications": {"channels": {
            "team": {"kind": "webhook", "url": f"{webhook_receiver.url}/hooks/{token}", "signing_secret": "sig-abcdef1"},
            "pager": {"kind": "pagerduty", "routing_key": "0123456789abcdef0123456789abcdef",
                      "url": "http://127.0.0.1:9/v2/enqueue", "timeout": "1s"},
        }},
        "jobs": {"disk": DISK_FAIL},
    })
    webhook_receiver.stop()
    assert cli(["--config", cfg, "run", "disk"]).code == 1
    outputs = [cli(["--config", cfg, "notify", "log", "--json"]).out,
               cli(["--config", cfg, "status", "--json"]).out,
               cli(["--config", cfg, "status"]).out]
    db = (tmp_path / "history.db").read_bytes() + b"".join(
        p.read_bytes() for p in tmp_path.glob("history.db-wal"))
    for secret in (token, "sig-abcdef1", "0123456789abcdef0123456789abcdef"):
        assert all(secret not in o for o in outputs), secret
        assert secret.encode() not in db, secret
    assert "delivery failure" in outputs[2]


def test_at_in_a_skipped_or_repeated_local_time_follows_the_dst_rules() -> None:
    """'run --at' reads a local time as schedules and windows do: a time the clocks skip is the first instant after
    the gap (02:30 on Berlin's spring-forward night is 03:00 CEST, not 03:30), a repeated one the first of the two."""
    from zoneinfo import ZoneInfo

    from upkeeper.cli._gate import parse_at
    from upkeeper.notify.calendar import local_to_utc

    now = datetime(2026, 3, 1, tzinfo=UTC)
    assert parse_at("2026-03-29 02:30", "Europe/Berlin", now) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert parse_at("2026-10-25 02:30", "Europe/Berlin", now) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert parse_at("2026-10-04 02:15", "Australia/Lord_Howe", now) == datetime(2026, 10, 3, 15, 30, tzinfo=UTC)
    for text, zone in (("2026-03-29 02:30", "Europe/Berlin"), ("2026-11-01 01:30", "America/New_York")):
        naive = datetime.fromisoformat(text)
        assert parse_at(text, zone, now) == local_to_utc(naive, ZoneInfo(zone))  # as a window's start is read


def test_notify_log_table_says_why_a_delivery_was_not_sent(cli, make_config, webhook_receiver) -> None:
    """docs/notifications.md: the service's reply is quoted in the delivery's error ('upkeeper notify log'); the
    table showed only 'team:dead', the reply was in --json alone."""
    cfg = make_config(base(webhook_receiver, jobs={"disk": DISK_FAIL}))
    webhook_receiver.fail_with = [404]
    assert cli(["--config", cfg, "run", "disk"]).code == 1
    entries = cli(["--config", cfg, "notify", "log", "--json"]).json()
    assert entries and all([d["status"] for d in e["deliveries"]] == ["dead"] for e in entries), entries
    assert all("HTTP 404" in e["deliveries"][0]["last_error"] for e in entries), entries
    table = " ".join(cli(["--config", cfg, "notify", "log"], env={"COLUMNS": "200"}).out.split())
    assert "team:dead" in table and "team: webhook team answered HTTP 404" in table, table


def test_windows_refuses_options_it_would_ignore(cli, make_config, webhook_receiver, tmp_path) -> None:
    """'windows --output FILE' without --ics printed the table and wrote no file; '--ics --json' printed the feed:
    each option was silently ignored.  Both are usage errors now; '--ics --output' writes the feed."""
    cfg = make_config(base(webhook_receiver, windows={"monthly": {"rrule": "FREQ=MONTHLY;BYDAY=1SU",
                                                                  "start": "02:00", "duration": "4h"}}))
    out = tmp_path / "feed.ics"
    res = cli(["--config", cfg, "windows", "--output", out])
    assert res.code == 2 and "--output" in res.err and "--ics" in res.err and not out.exists(), res.output
    res = cli(["--config", cfg, "windows", "--ics", "--json"])
    assert res.code == 2 and "choose one" in res.err, res.output
    assert cli(["--config", cfg, "windows", "--ics", "--output", out]).code == 0
    assert out.read_text().startswith("BEGIN:VCALENDAR")


def test_planning_a_run_says_stakeholders_were_told_only_when_some_were(cli, make_config, webhook_receiver) -> None:
    """'run --at' said "stakeholders were notified" with no channel configured at all."""
    alone = make_config({"jobs": {"reindex": DISK_OK}}, name="alone.yaml")
    res = cli(["--config", alone, "run", "reindex", "--at", "+3h"], env={"COLUMNS": "200"})
    assert res.code == 0 and "no stakeholder channel to notify" in res.out and "were notified" not in res.out
    told = make_config(base(webhook_receiver, jobs={"reindex": DISK_OK}))
    res = cli(["--config", told, "run", "reindex", "--at", "+4h"], env={"COLUMNS": "200"})
    assert res.code == 0 and "stakeholders were notified" in res.out, res.output
    assert [p.events[0].topic for p in payloads(webhook_receiver)] == ["planned"]


def test_notify_test_of_a_failing_apprise_channel_says_it_once_with_the_engines_line(make_config, tmp_path) -> None:
    """``notify test`` of an apprise channel whose service is down printed apprise's warning three times on stderr:
    forwarded from apprise's logger on its own, in the engine's "notification … failed" line and in the command's
    "failed to send".  apprise's warnings are the delivery's to report: in its error (those two lines), never on
    their own -- in the daemon's log too."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = make_config({"notifications": {"channels": {"team": f"json://127.0.0.1:{port}/hook"}},
                       "jobs": {"nap": {"task": "debug.noop"}}})
    res = subprocess.run([sys.executable, "-m", "upkeeper", "--config", str(cfg), "notify", "test", "team"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert res.returncode == 1, res.stderr
    said = "A Connection error occurred sending JSON notification to 127.0.0.1."
    lines = [ln for ln in res.stderr.splitlines() if said in ln]
    assert len(lines) == 2, res.stderr
    assert lines[0].startswith("notification to team failed (retry at "), res.stderr
    assert lines[1].startswith("failed to send to team: apprise channel 'team' failed: "), res.stderr
