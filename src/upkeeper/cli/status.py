"""``upkeeper status``: each job's last run, result, next run and consecutive failures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from upkeeper.cli._app import app, console, print_json, run_status_text, state
from upkeeper.core.history import clock_skew_warning, stopped_on_request
from upkeeper.errors import UsageError
from upkeeper.fmt import ago, local_time
from upkeeper.redact import Redacted

#: how long ``status`` reports a daemon that died without stopping (``died``; ``--check`` exits 1 meanwhile)
DIED_HORIZON = timedelta(days=7)


def collect_status() -> dict[str, Any]:
    setup = state.setup()
    history = state.history()
    now = datetime.now(UTC)
    # a PostgreSQL history: heartbeats are stamped on its server's clock (History._db_clock), judged on it here
    skew = history.clock_skew()
    hnow = now if skew is None else now - skew[2]
    last = history.last_runs()
    streaks = history.failure_streaks(list(setup.jobs))
    jobs = []
    calendar = None
    for job in setup.jobs.values():
        run = last.get(job.name)
        streak = streaks[job.name]
        nxt = job.schedule.next_after(now) + job.jitter_offset if (job.schedule and job.enabled) else None
        if nxt is not None and job.window:  # an occurrence outside its window is deferred to the next opening
            from upkeeper.notify.policy import Calendar

            calendar = calendar or Calendar(setup.config)
            window = calendar.windows.get(job.window)
            opening = calendar.opening(window, nxt) if window is not None else None
            if opening is not None and opening.start > nxt:
                nxt = opening.start
        pending = history.pending_run(job.name) if job.enabled else None  # a planned run, a retry, a deferral
        if pending is not None and pending.due_at is not None:
            due = pending.due_at if pending.due_at.tzinfo else pending.due_at.replace(tzinfo=UTC)
            nxt = due if nxt is None else min(nxt, due)
        jobs.append(
            {
                "job": job.name,
                "task": job.task_name,
                "enabled": job.enabled,
                "last_run": None if run is None else {
                    "id": run.id,
                    "status": run.status,
                    # interrupted because upkeeper was asked to stop: no failure (not in consecutive_failures)
                    "stopped": stopped_on_request(run.status, run.details),
                    "summary": run.summary,
                    "scheduled_for": run.scheduled_for.isoformat(),
                    "finished_at": run.finished_at.isoformat() if run.finished_at else None,
                    "duration": run.duration,
                },
                "next_run": nxt.isoformat() if nxt else None,
                "timezone": job.timezone,
                # exact, also when history retention has deleted the older runs of the streak
                "consecutive_failures": streak.failures,
                "failing_since": streak.since.isoformat() if streak.since else None,
                "last_success": streak.last_success.isoformat() if streak.last_success else None,
            }
        )
    daemons = []
    rows = history.daemons()
    newest_start: dict[str, datetime] = {}  # per node: when its newest daemon started
    for d in rows:
        newest_start[d.node] = max(newest_start.get(d.node, d.started_at), d.started_at)
    for d in rows:
        alive = d.stopped_at is None and hnow - d.last_seen < max(timedelta(minutes=2),
                                                                  3 * setup.config.daemon.heartbeat)
        # never recorded a stop, its heartbeat gone, and no daemon started on its node since (kill -9, the OOM
        # killer, a crash): it serves nothing now -- for a week, after which the missed-run alarm says it anyway
        died = (not alive and d.stopped_at is None and d.started_at >= newest_start[d.node]
                and hnow - d.last_seen < DIED_HORIZON)
        # its heartbeat comes from a thread of its own: a scheduling loop that hung (a history call, a notification
        # send) while it goes on claims nothing -- alive, but stalled (both instants are as old as they were on the
        # daemon's own clock, History.daemon_heartbeat)
        stalled = alive and d.loop_at is not None and d.last_seen - d.loop_at > setup.config.daemon.stall_after
        daemons.append({"instance": d.instance, "node": d.node, "pid": d.pid, "last_seen": d.last_seen.isoformat(),
                        "alive": alive, "died": died, "started_at": d.started_at.isoformat(), "version": d.version,
                        "last_tick": d.loop_at.isoformat() if d.loop_at else None, "stalled": stalled,
                        "reload": _reload_outcome(d.reload)})
    # this node's clock against a PostgreSQL history's server's (None: a SQLite history, one host's clock)
    clock = None if skew is None else {"here": skew[0].isoformat(), "history": skew[1].isoformat(),
                                       "ahead_seconds": round(skew[2].total_seconds(), 3),
                                       "warning": clock_skew_warning(skew)}
    return {"jobs": jobs, "daemons": daemons, "now": now.isoformat(), "clock": clock,
            "notifications": notification_status(setup, history, now)}


def _reload_outcome(reload: Any) -> Any:
    """A daemon's last reload as the history has it.  Its message was redacted when it was recorded
    (History.daemon_reloaded), a config problem's location and message apart: redacted again as one text,
    'password: environment variable NOPE is not set' would read 'password: *** variable NOPE …'."""
    if isinstance(reload, dict) and isinstance(reload.get("message"), str):
        return {**reload, "message": Redacted(reload["message"])}
    return reload


def notification_status(setup: Any, history: Any, now: datetime, *, notify: bool = False) -> dict[str, Any]:
    """Missed runs (dead-man's switch), open problems, failed deliveries; with ``notify`` also alert."""
    from upkeeper.notify.engine import NotificationEngine

    engine = NotificationEngine(setup, history)
    if notify:
        engine.close_removed(now)  # problems of jobs this node's config no longer has
        engine.check_missed(now)
        # time-based escalation (``after:``) is the daemon's periodic check; without a daemon (jobs run by cron)
        # this command, from cron, is what escalates a problem left unresolved
        engine.check_escalations(now)
        engine.retry_due(now)
    missed = engine.missed(now) if setup.config.notifications.missed_runs else []
    # a failed delivery being retried right now (``sending`` after an attempt) is still a failure until it is sent
    failed = [d for d in engine.store.deliveries(statuses=["failed", "dead", "sending", "pending"],
                                                  since=now - timedelta(days=7), limit=100)
              if d.status in ("failed", "dead") or d.attempts > 0]
    return {
        "missed": [{"job": m.job, "last_run": None if m.never_ran else m.reference.isoformat(),
                    "overdue_since": m.deadline.isoformat()} for m in missed],
        "open_problems": [{"job": p.job, "check": p.check, "severity": p.severity, "since": p.since.isoformat(),
                           "count": p.count, "level": p.level} for p in engine.store.problems()],
        "failed_deliveries": [{"id": d.id, "channel": d.channel, "status": d.status, "attempts": d.attempts,
                               "created_at": d.created_at.isoformat(), "last_error": d.last_error,
                               "next_attempt_at": d.next_attempt_at.isoformat() if d.next_attempt_at else None}
                              for d in failed],
    }


@app.command("status")
def status_cmd(
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    check: bool = typer.Option(False, "--check", help="exit 1 when a job missed its runs (its next "
                                                     "occurrence + grace passed without a run), a running "
                                                     "daemon's scheduling loop is stalled (daemon.stall_after), "
                                                     "or a node's daemon died without stopping (in the last 7 "
                                                     "days, no daemon started there since): a dead-man's switch "
                                                     "for cron or another node"),
    notify: bool = typer.Option(False, "--notify", help="with --check: also send the missed-run alarm through the "
                                                       "channels, escalate problems unresolved for their "
                                                       "level's 'after', and retry failed deliveries"),
) -> None:
    """Each job: last run, result, next run, consecutive failures; whether a daemon is alive;
    missed runs and notification delivery failures."""
    if notify and not check:
        raise UsageError("--notify goes with --check")
    data = collect_status()
    if notify:
        data["notifications"] = notification_status(state.setup(), state.history(), datetime.now(UTC), notify=True)
    missed = data["notifications"]["missed"]
    stalled = [d for d in data["daemons"] if d["stalled"]]
    died = [d for d in data["daemons"] if d["died"]]
    if as_json:
        print_json(data)
        if check and (missed or stalled or died):
            raise typer.Exit(1)
        return
    now = datetime.now(UTC)
    clock = data["clock"]
    # daemons' heartbeats and ticks are on the history's clock: their age on it
    hnow = now if clock is None else now - timedelta(seconds=clock["ahead_seconds"])
    table = Table(title="Status", title_justify="left")
    for col in ("job", "last run", "result", "summary", "next run", "fails"):
        table.add_column(col, overflow="fold")
    for j in data["jobs"]:
        lr = j["last_run"]
        if lr is None:
            when, res, summ = "never", "-", ""
        else:
            ts = datetime.fromisoformat(lr["finished_at"] or lr["scheduled_for"])
            # a summary quotes log lines, paths and server errors: never Rich markup
            when, res, summ = ago(ts, now), run_status_text(lr["status"], lr["stopped"]), escape(lr["summary"][:120])
        nxt = "-" if j["next_run"] is None else local_time(datetime.fromisoformat(j["next_run"]), j["timezone"])
        fails = ""
        if j["consecutive_failures"]:
            notes = [f"since {ago(datetime.fromisoformat(j['failing_since']), now)}"] if j["failing_since"] else []
            if j["last_success"] is None:
                notes.append("never ok")
            fails = f"[fail]{j['consecutive_failures']}[/fail]" + (f" ({', '.join(notes)})" if notes else "")
        table.add_row(f"[bold]{j['job']}[/bold]" if j["enabled"] else f"[dim]{j['job']}[/dim]",
                      when, res, summ, nxt, fails)
    console.print(table)
    alive = [d for d in data["daemons"] if d["alive"]]
    if alive:
        for d in alive:
            seen = ago(datetime.fromisoformat(d['last_seen']), hnow)
            if d["stalled"]:
                console.print(f"daemon: [fail]stalled[/fail] on {d['node']} (pid {d['pid']}, seen {seen}): its "
                              f"scheduling loop has not ticked since "
                              f"{ago(datetime.fromisoformat(d['last_tick']), hnow)} — it claims no run; its log "
                              f"says where it is stuck (restart it: systemctl restart upkeeper)")
            else:
                console.print(f"daemon: [ok]running[/ok] on {d['node']} (pid {d['pid']}, seen {seen})")
            rl = d["reload"]
            if isinstance(rl, dict) and rl.get("ok") is False:
                console.print(f"  [fail]config reload failed[/fail] "
                              f"{ago(datetime.fromisoformat(str(rl.get('at'))), now)} ({escape(str(rl.get('file')))}"
                              f"); it runs with the config it had: {escape(str(rl.get('message')))}")
    elif not died:
        console.print("daemon: [warn]not running[/warn] — start it with 'upkeeper daemon' "
                      "(or schedule jobs with 'upkeeper cron export')")
    for d in died:
        console.print(f"daemon: [fail]died[/fail] on {d['node']} (pid {d['pid']}, last seen "
                      f"{ago(datetime.fromisoformat(d['last_seen']), hnow)}) without stopping (killed, out of memory, "
                      f"crashed) — its log says why (journalctl -u upkeeper); start it again (systemctl restart "
                      f"upkeeper)")
    if clock is not None and clock["warning"]:
        console.print(f"[warn]clock:[/warn] {escape(clock['warning'])}")
    n = data["notifications"]
    for m in n["missed"]:
        last = ago(datetime.fromisoformat(m["last_run"]), now) if m["last_run"] else "never"
        console.print(f"[fail]missed:[/fail] {m['job']} — last run {last}, overdue since "
                      f"{ago(datetime.fromisoformat(m['overdue_since']), now)}")
    for p in n["open_problems"]:
        if p["level"] and p["level"] > 1:
            console.print(f"[warn]escalated:[/warn] {p['job']} {p['check']} at level {p['level']} "
                          f"(since {ago(datetime.fromisoformat(p['since']), now)})")
    bad = n["failed_deliveries"]
    if bad:
        dead = sum(1 for d in bad if d["status"] == "dead")
        console.print(f"notifications: [fail]{len(bad)} delivery failure(s)[/fail] in the last 7 days"
                      + (f" ({dead} gave up)" if dead else "") + f"; latest: {bad[0]['channel']}: "
                      f"{escape(bad[0]['last_error'][:160])} — see 'upkeeper notify log', retry with 'upkeeper notify retry'")
    if check and (missed or stalled or died):
        raise typer.Exit(1)
