"""``upkeeper notify``: test a channel, the notification log, retry failed deliveries, the payload schema."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from upkeeper.cli._app import app, console, err_console, print_json, state
from upkeeper.errors import UsageError
from upkeeper.fmt import ago
from upkeeper.notify.events import payload_schema

if TYPE_CHECKING:
    from upkeeper.notify.engine import NotificationEngine

notify_app = typer.Typer(help="Notification channels: test them, see what was sent, retry failures.",
                         no_args_is_help=True)
app.add_typer(notify_app, name="notify")


def _engine() -> NotificationEngine:
    from upkeeper.notify.engine import NotificationEngine  # (and the ORM: not for every command's start)

    setup = state.setup()
    return NotificationEngine(setup, state.history())


@notify_app.command("test")
def test_cmd(channel: str = typer.Argument(..., help="a channel name from notifications -> channels"),
             as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Send a test message to CHANNEL now.  Exit code 1 when it fails."""
    engine = _engine()
    if channel not in engine.transports:
        known = ", ".join(engine.transports) or "none configured"
        raise UsageError(f"no channel named {channel!r}", f"Try: one of: {known}")
    res = engine.send_test(channel, datetime.now(UTC))
    ok = res is not None and res.ok
    if as_json:
        print_json({"channel": channel, "ok": ok, "detail": res.detail if res else "not sent",
                    "delivery_id": res.delivery_id if res else None})
    elif ok and res is not None:
        console.print(f"[ok]sent[/ok] to {channel}: {escape(res.detail)}")
    else:
        err_console.print(f"[fail]failed[/fail] to send to {channel}: {escape(res.detail) if res else 'not sent'}")
        err_console.print("It will be retried with backoff; see 'upkeeper notify log'.", style="dim")
    raise typer.Exit(0 if ok else 1)


@notify_app.command("log")
def log_cmd(limit: int = typer.Option(30, "--limit", "-n", min=1, max=10000),
            job: str | None = typer.Option(None, "--job", help="only this job's events"),
            as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Recent notification events (state changes, escalation steps, notices) and their deliveries."""
    engine = _engine()
    # as 'history JOB': a job removed or renamed (or another node's) keeps its events under its name; a name that is
    # neither configured nor in the log (a typo) is an error, not an empty log
    if job is not None and job not in engine.setup.jobs and not engine.store.events(limit=1, job=job) \
            and not state.history().runs(job=job, limit=1):
        engine.setup.job(job)  # raises a UsageError naming the configured jobs
    events = engine.store.events(limit=limit, job=job)
    deliveries: dict[int, list[Any]] = {}
    for d in engine.store.deliveries(limit=limit * 10):
        for eid in d.event_ids or []:
            deliveries.setdefault(int(eid), []).append(d)
    now = datetime.now(UTC)
    if as_json:
        print_json([{"id": e.id, "ts": e.ts.isoformat(), "topic": e.topic, "state": e.state,
                     "severity": e.severity, "job": e.job, "check": e.check, "level": e.level, "title": e.title,
                     "deliveries": [{"id": d.id, "channel": d.channel, "status": d.status, "attempts": d.attempts,
                                     "last_error": d.last_error or None} for d in deliveries.get(e.id, [])]}
                    for e in events])
        return
    table = Table(title="Notifications", title_justify="left")
    for col in ("id", "when", "event", "title", "deliveries"):
        table.add_column(col, overflow="fold")
    for e in events:
        style = {"sent": "ok", "superseded": "dim", "sending": "running"}
        ds = ", ".join(f"{d.channel}:[{style.get(d.status, 'fail')}]{d.status}[/]"
                       for d in deliveries.get(e.id, [])) or "[dim]-[/dim]"
        # why a delivery is not sent (the service's reply, the reason it was superseded): docs/notifications.md
        ds += "".join(f"\n[dim]{escape(d.channel)}: {escape(d.last_error[:200])}[/dim]"
                      for d in deliveries.get(e.id, []) if d.status != "sent" and d.last_error)
        what = f"{e.topic}/{e.state}" + (f" L{e.level}" if e.level else "")
        table.add_row(str(e.id), ago(e.ts, now), what, escape(e.title[:140]), ds)
    console.print(table)


@notify_app.command("retry")
def retry_cmd(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Retry failed deliveries now (the daemon also retries them with backoff).  One another process is sending
    at this moment is left to it (said so); one whose sender died is taken over."""
    engine = _engine()
    now = datetime.now(UTC)
    from upkeeper.notify.store import UNSENT

    pending = engine.store.deliveries(statuses=list(UNSENT), limit=1000)
    results = [r for r in (engine.deliver(d.id, now) for d in pending) if r is not None]
    if as_json:
        print_json([{"delivery_id": r.delivery_id, "channel": r.channel, "ok": r.ok, "sent": r.ok and not r.skipped,
                     "detail": r.detail}
                    for r in results])
    else:
        for r in results:
            console.print(f"{r.channel}: " + (f"[dim]not sent[/dim] — {escape(r.detail)}" if r.skipped else
                                              "[ok]sent[/ok]" if r.ok else f"[fail]failed[/fail] {escape(r.detail)}"))
        if not results:
            console.print("nothing to retry")
    raise typer.Exit(1 if any(not r.ok for r in results) else 0)


@notify_app.command("schema")
def schema_cmd() -> None:
    """The JSON Schema of what webhook channels receive."""
    print_json(payload_schema())
