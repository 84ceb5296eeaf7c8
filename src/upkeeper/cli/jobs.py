"""``upkeeper jobs``: configured jobs with their next fire times."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import typer
from rich.table import Table

from upkeeper.cli._app import app, console, print_json, state
from upkeeper.fmt import local_time


@app.command("jobs")
def jobs_cmd(
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    count: int = typer.Option(3, "--next", "-n", min=0, max=50, help="how many upcoming fire times to show"),
) -> None:
    """List configured jobs and their next fire times (in each job's timezone)."""
    setup = state.setup()
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for job in setup.jobs.values():
        upcoming = job.schedule.upcoming(now, count) if (job.schedule and job.enabled) else []
        rows.append(
            {
                "job": job.name,
                "task": job.task_name,
                "target": job.target_name,
                "schedule": job.schedule.text if job.schedule else None,
                "timezone": job.timezone,
                "enabled": job.enabled,
                "category": job.category,
                "next": [t.isoformat() for t in upcoming],
                "next_local": [local_time(t + job.jitter_offset, job.timezone, "%Y-%m-%d %H:%M %Z")
                               for t in upcoming],
                "jitter_seconds": job.jitter_offset.total_seconds(),
                "timeout_seconds": job.timeout.total_seconds(),
                "retries": job.retries,
            }
        )
    if as_json:
        print_json(rows)
        return
    table = Table(title=f"Jobs in {setup.source or 'config'}", title_justify="left")
    for col in ("job", "task", "target", "schedule", f"next {count}"):
        table.add_column(col, overflow="fold")
    for r in rows:
        if not r["enabled"]:
            nxt = "[dim]disabled[/dim]"
        elif r["schedule"] is None:
            nxt = "[dim]manual only[/dim]"
        else:
            nxt = "\n".join(r["next_local"])
        sched = r["schedule"] or "-"
        if r["schedule"] and r["timezone"] != "UTC":
            sched += f" ({r['timezone']})"
        table.add_row(f"[bold]{r['job']}[/bold]", r["task"], r["target"] or "-", sched, nxt)
    console.print(table)
