"""``upkeeper windows``: upcoming maintenance windows with their planned jobs, blackouts, an iCalendar feed."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from upkeeper.cli._app import app, check_output_file, console, print_json, state, write_output_file
from upkeeper.errors import UsageError
from upkeeper.fmt import ago, human_duration
from upkeeper.notify.policy import describe


def collect(days: int, per_window: int, now: datetime) -> dict[str, Any]:
    from upkeeper.notify.engine import NotificationEngine  # (and the ORM: not for every command's start)

    setup = state.setup()
    engine = NotificationEngine(setup, state.history())
    until = now + timedelta(days=days)
    windows: list[dict[str, Any]] = []
    for w in engine.calendar.windows.values():
        for p in w.rec.upcoming(now, per_window, until):
            windows.append({
                "window": w.name, "description": w.cfg.description, "timezone": w.tz,
                "start": p.start.isoformat(), "end": p.end.isoformat(), "open_now": p.contains(now),
                "when": describe(p, w.tz),
                "planned": [{"job": j, "how": how} for j, how in engine.planned_in(w, p)],
            })
    windows.sort(key=lambda x: x["start"])
    blackouts: list[dict[str, Any]] = []
    for b in engine.calendar.blackouts.values():
        for p in b.rec.upcoming(now, per_window, until):
            blackouts.append({
                "blackout": b.name, "description": b.cfg.description, "timezone": str(b.rec.tz),
                "start": p.start.isoformat(), "end": p.end.isoformat(), "active_now": p.contains(now),
                "when": describe(p, str(b.rec.tz)), "except": list(b.cfg.exceptions),
            })
    blackouts.sort(key=lambda x: x["start"])
    return {"now": now.isoformat(), "windows": windows, "blackouts": blackouts}


#: periods of one window or blackout in an iCalendar feed (an hourly window fills a year with 8,760)
ICS_MAX = 1000


def _say_cut(data: dict[str, Any], days: int) -> None:
    """On stderr: each window or blackout whose periods the feed cut at :data:`ICS_MAX`, and how far it reaches."""
    from upkeeper.cli import _app

    for kind, rows in (("window", data["windows"]), ("blackout", data["blackouts"])):
        starts: dict[str, list[str]] = {}
        for r in rows:
            starts.setdefault(r[kind], []).append(r["start"])
        for name, got in starts.items():
            if len(got) >= ICS_MAX:
                last = datetime.fromisoformat(max(got))
                _app.err_console.print(
                    f"[warn]note[/warn] {kind} {name}: the feed holds its first {ICS_MAX} periods only, up to "
                    f"{last:%Y-%m-%d %H:%M %Z}, not the {days} days asked (--days {max(1, (last - datetime.fromisoformat(data['now'])).days)} "
                    f"covers what it holds)", highlight=False)


@app.command("windows")
def windows_cmd(
    days: int | None = typer.Option(None, "--days", min=1, max=3660,
                                    help="how far ahead to look (default 90, or 365 with --ics)"),
    limit: int = typer.Option(5, "--limit", min=1, max=1000, help="periods listed per window or blackout"),
    ics: bool = typer.Option(False, "--ics", help="print an iCalendar feed (a year ahead unless --days is given)"),
    output: Path | None = typer.Option(None, "--output", "-o", help="with --ics: write the feed to this file"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Upcoming maintenance windows with the jobs planned inside them, and blackouts.

    --ics exports both as an iCalendar feed people can subscribe to (serve the file over HTTP,
    e.g. regenerate it from cron).
    """
    if output is not None and not ics:  # it was ignored: the table went to the terminal, no file was written
        raise UsageError("--output writes the iCalendar feed: it goes with --ics",
                         "Try: upkeeper windows --ics --output FILE (or --json > FILE for the listing)")
    if ics and as_json:  # it was ignored: the feed came out, not JSON
        raise UsageError("--ics prints an iCalendar feed, --json the listing as JSON: choose one")
    if output is not None:
        check_output_file(output)
    now = datetime.now(UTC)
    setup = state.setup()
    if ics:
        data = collect(days or 365, ICS_MAX, now)
        _say_cut(data, days or 365)
        items = []
        for w in data["windows"]:
            jobs = "\n".join(f"- {p['job']}: {p['how']}" for p in w["planned"]) or "- no jobs planned"
            items.append(("window", w["window"], datetime.fromisoformat(w["start"]),
                          datetime.fromisoformat(w["end"]), f"Maintenance window: {w['window']}",
                          (w["description"] + "\n\n" if w["description"] else "") + "Planned:\n" + jobs))
        for b in data["blackouts"]:
            items.append(("blackout", b["blackout"], datetime.fromisoformat(b["start"]),
                          datetime.fromisoformat(b["end"]), f"Blackout: {b['blackout']}",
                          (b["description"] + "\n\n" if b["description"] else "")
                          + "No maintenance except: " + (", ".join(b["except"]) or "nothing")))
        from upkeeper.notify.ics import feed  # (icalendar: ~35 ms to import, only for --ics)

        body = feed(items, now, setup.config.node)
        if output is not None:
            write_output_file(output, body)  # whole: a web server serving the feed never sends half of it
            console.print(f"wrote {len(items)} event(s) to {output}")
        else:
            sys.stdout.write(body.decode())
            sys.stdout.flush()
        return
    days = days or 90
    data = collect(days, limit, now)
    if as_json:
        print_json(data)
        return
    if not setup.config.windows and not setup.config.blackouts:
        console.print("No maintenance windows or blackouts configured (see docs/windows.md).")
        return
    table = Table(title=f"Maintenance windows (next {days} days)", title_justify="left")
    for col in ("window", "when", "in", "planned jobs"):
        table.add_column(col, overflow="fold")
    for w in data["windows"]:
        start = datetime.fromisoformat(w["start"])
        rel = "[ok]open now[/ok]" if w["open_now"] else ago(start, now)
        jobs = ", ".join(p["job"] for p in w["planned"]) or "[dim]none[/dim]"
        table.add_row(f"[bold]{w['window']}[/bold]", w["when"], rel, jobs)
    if setup.config.windows:
        console.print(table)
    if data["blackouts"]:
        bt = Table(title="Blackouts", title_justify="left")
        for col in ("blackout", "when", "in", "lasts", "except"):
            bt.add_column(col, overflow="fold")
        for b in data["blackouts"]:
            start, end = datetime.fromisoformat(b["start"]), datetime.fromisoformat(b["end"])
            rel = "[warn]active now[/warn]" if b["active_now"] else ago(start, now)
            bt.add_row(f"[bold]{b['blackout']}[/bold]", b["when"], rel, human_duration(end - start),
                       ", ".join(b["except"]) or "-")
        console.print(bt)
