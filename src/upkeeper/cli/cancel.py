"""``upkeeper cancel``: cancel runs waiting to start (a planned run, a retry, a run deferred to its window)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import typer
from rich.markup import escape

from upkeeper.cli import _app
from upkeeper.cli._app import app, print_json, state
from upkeeper.cli._gate import actor
from upkeeper.errors import UsageError
from upkeeper.fmt import local_time

#: what each trigger of a pending run is called in messages
_WHAT = {"planned": "planned run", "retry": "retry", "deferred": "deferred run"}


@app.command("cancel")
def cancel_cmd(
    run_ids: list[int] = typer.Argument(..., help="ids of pending runs ('upkeeper history JOB' lists them)"),
    reason: str | None = typer.Option(None, "--reason", help="why (recorded with the run and in the audit trail)"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Cancel runs that wait to start: a planned run ('run --at'), a retry in its backoff, a run deferred to
    its maintenance window.  Each is recorded 'skipped' with who cancelled it (and --reason) and goes into the
    audit trail; the stakeholders told of a planned run are told it was cancelled.  A run that has started
    is not cancelled here (stop it: SIGTERM to its 'upkeeper run', or let the daemon's timeout end it).
    Exit code 2 when a run is unknown or not waiting (nothing is cancelled then)."""
    history = state.history()
    rows = []
    for rid in dict.fromkeys(run_ids):
        row = history.get_run(rid)
        if row is None:
            raise UsageError(f"no run with id {rid}", "Try: 'upkeeper history JOB' lists a job's runs")
        if row.status != "pending":
            raise UsageError(f"run {rid} ({row.job}) is {row.status}, not waiting to start: only a pending run "
                             "(planned, a retry, deferred) can be cancelled",
                             "Try: 'upkeeper history --status pending' lists those")
        rows.append(row)
    who = actor()
    now = datetime.now(UTC)
    setup = state.setup()
    out: list[dict[str, Any]] = []
    planned = []
    for row in rows:
        what = _WHAT.get(row.trigger, f"{row.trigger} run")
        summary = f"{what} cancelled by {who}" + (f": {reason}" if reason else "")
        details = {**(row.details or {}), "cancelled_by": who, "cancelled_at": now.isoformat(),
                   **({"cancel_reason": reason} if reason else {})}
        if not history.cancel_pending(row.id, now, summary, details):
            now_row = history.get_run(row.id)
            out.append({"run_id": row.id, "job": row.job, "trigger": row.trigger, "cancelled": False,
                        "status": now_row.status if now_row else "gone",
                        "detail": "claimed meanwhile: it is no longer waiting"})
            continue
        history.audit(who, "cancel-run", job=row.job, node=setup.config.node,
                      details={"run_id": row.id, "trigger": row.trigger,
                               "due_at": row.due_at.isoformat() if row.due_at else None, "reason": reason})
        out.append({"run_id": row.id, "job": row.job, "trigger": row.trigger, "cancelled": True,
                    "status": "skipped", "detail": summary})
        if row.trigger == "planned":
            planned.append(row)
    if planned:
        from upkeeper.notify.engine import NotificationEngine

        engine = NotificationEngine(setup, history)
        for row in planned:
            job = setup.jobs.get(row.job)
            due = local_time(row.due_at, setup.config.timezone) if row.due_at else "?"
            engine.announce("planned", f"Planned run of {row.job} at {due} cancelled",
                            f"Cancelled by {who}" + (f": {reason}" if reason else "") + ".", now, about=job,
                            details={"jobs": [row.job], "run_id": row.id, "cancelled_by": who, "reason": reason})
    code = 0 if all(r["cancelled"] for r in out) else 1
    if as_json:
        print_json(out)
    else:
        console = _app.console
        for r in out:
            if r["cancelled"]:
                console.print(f"run {r['run_id']} ({escape(r['job'])}): {escape(r['detail'])}")
            else:
                console.print(f"[fail]not cancelled[/fail]: run {r['run_id']} ({escape(r['job'])}) was claimed "
                              f"meanwhile (it is {escape(r['status'])} now)")
    raise typer.Exit(code)
