"""``upkeeper status``: each job's last run, result, next run and consecutive failures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import typer
from rich.table import Table

from upkeeper.cli._app import app, console, print_json, state, status_text
from upkeeper.fmt import ago, local_time


def collect_status() -> dict[str, Any]:
    setup = state.setup()
    history = state.history()
    now = datetime.now(UTC)
    last = history.last_runs()
    jobs = []
    for job in setup.jobs.values():
        run = last.get(job.name)
        nxt = job.schedule.next_after(now) + job.jitter_offset if (job.schedule and job.enabled) else None
        jobs.append(
            {
                "job": job.name,
                "task": job.task_name,
                "enabled": job.enabled,
                "last_run": None if run is None else {
                    "id": run.id,
                    "status": run.status,
                    "summary": run.summary,
                    "scheduled_for": run.scheduled_for.isoformat(),
                    "finished_at": run.finished_at.isoformat() if run.finished_at else None,
                    "duration": run.duration,
                },
                "next_run": nxt.isoformat() if nxt else None,
                "timezone": job.timezone,
                "consecutive_failures": history.consecutive_failures(job.name),
            }
        )
    daemons = []
    for d in history.daemons():
        alive = d.stopped_at is None and now - d.last_seen < max(timedelta(minutes=2),
                                                                  3 * setup.config.daemon.heartbeat)
        daemons.append({"instance": d.instance, "node": d.node, "pid": d.pid, "last_seen": d.last_seen.isoformat(),
                        "alive": alive, "started_at": d.started_at.isoformat(), "version": d.version})
    return {"jobs": jobs, "daemons": daemons, "now": now.isoformat()}


@app.command("status")
def status_cmd(
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Each job: last run, result, next run, consecutive failures; and whether a daemon is alive."""
    data = collect_status()
    if as_json:
        print_json(data)
        return
    now = datetime.now(UTC)
    table = Table(title="Status", title_justify="left")
    for col in ("job", "last run", "result", "summary", "next run", "fails"):
        table.add_column(col, overflow="fold")
    for j in data["jobs"]:
        lr = j["last_run"]
        if lr is None:
            when, res, summ = "never", "-", ""
        else:
            ts = datetime.fromisoformat(lr["finished_at"] or lr["scheduled_for"])
            when, res, summ = ago(ts, now), status_text(lr["status"]), lr["summary"]
        nxt = "-" if j["next_run"] is None else local_time(datetime.fromisoformat(j["next_run"]), j["timezone"])
        fails = str(j["consecutive_failures"]) if j["consecutive_failures"] else ""
        if fails:
            fails = f"[fail]{fails}[/fail]"
        table.add_row(f"[bold]{j['job']}[/bold]" if j["enabled"] else f"[dim]{j['job']}[/dim]",
                      when, res, summ[:120], nxt, fails)
    console.print(table)
    alive = [d for d in data["daemons"] if d["alive"]]
    if alive:
        for d in alive:
            console.print(f"daemon: [ok]running[/ok] on {d['node']} (pid {d['pid']}, "
                          f"seen {ago(datetime.fromisoformat(d['last_seen']), now)})")
    else:
        console.print("daemon: [warn]not running[/warn] — start it with 'upkeeper daemon' "
                      "(or schedule jobs with 'upkeeper cron export')")
