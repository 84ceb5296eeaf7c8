"""``upkeeper history`` and ``upkeeper show``: what ran, when, with what result; ``upkeeper history prune``:
history retention now."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from upkeeper.cli._app import app, console, print_json, run_status_text, severity_text, state
from upkeeper.config.types import parse_duration
from upkeeper.core.history import stopped_on_request
from upkeeper.errors import UsageError
from upkeeper.fmt import human_bytes, human_duration, local_time

if TYPE_CHECKING:  # the ORM (~70 ms to import): History loads it for the queries that need it
    from upkeeper.core.models import FindingRow, RunRow

SINCE_HINT = "Try: --since 7d, --since '14 days', --since 1h30m or --since 2026-11-01"


def parse_since(text: str | None) -> datetime | None:
    """A duration (ago) as the config's durations are written (``7d``, ``14 days``, ``1h30m``, ``90``) or an ISO
    date/time (UTC when no offset is given)."""
    if not text:
        return None
    try:
        ts = datetime.fromisoformat(text.strip())
    except ValueError:
        try:
            return datetime.now(UTC) - parse_duration(text)
        except ValueError as exc:  # (a DurationError: says what is wrong with it as a duration)
            raise UsageError(f"--since {text!r} is neither a date nor a duration ({exc})", SINCE_HINT) from None
    try:
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00: before year 1 in UTC
        raise UsageError(f"--since {text!r} is out of range (before year 1 or after year 9999 in UTC)",
                         SINCE_HINT) from None


def run_dict(r: RunRow, findings: list[FindingRow] | None = None, full: bool = False) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": r.id,
        "job": r.job,
        "task": r.task,
        "target": r.target,
        "status": r.status,
        "stopped": stopped_on_request(r.status, r.details),  # interrupted on request: no failure
        "summary": r.summary,
        "trigger": r.trigger,
        "attempt": r.attempt,
        "scheduled_for": r.scheduled_for.isoformat(),
        "started_at": r.started_at.isoformat() if r.started_at else None,
        "finished_at": r.finished_at.isoformat() if r.finished_at else None,
        "duration": r.duration,
        "node": r.node,
    }
    if full:
        d["metrics"] = r.metrics or {}
        d["artifacts"] = r.artifacts or []
        d["details"] = r.details or {}
        d["log"] = r.log_excerpt or ""
        d["findings"] = [
            {"check": f.check, "severity": f.severity, "subject": f.subject, "message": f.message,
             "remediation": f.remediation, "value": f.value, "threshold": f.threshold, "data": f.data}
            for f in (findings or [])
        ]
    return d


#: what --status takes: the statuses of docs/scheduling.md, and 'stopped' as the table shows it
RUN_STATUSES = ("ok", "warn", "fail", "error", "skipped", "interrupted", "stopped", "queued", "running", "pending")


class _ListByDefault(typer.core.TyperGroup):
    """``upkeeper history [JOB] [options]`` lists runs (``history list``); ``history prune`` prunes."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # (typer's own vendored click Context)
        if not args or (args[0] not in self.commands and args[0] not in ctx.help_option_names):
            args = ["list", *args]
        return super().parse_args(ctx, args)


history_app = typer.Typer(cls=_ListByDefault, help="Recorded runs, newest first ('history list', the default); "
                          "'history prune' applies history retention now.")
app.add_typer(history_app, name="history")


@history_app.command("list")
def history_cmd(
    job: str | None = typer.Argument(None, help="only this job"),
    since: str | None = typer.Option(None, "--since", help="a duration ('7d', '14 days', '1h30m') or an ISO date"),
    limit: int = typer.Option(50, "--limit", "-n", min=1, max=100000, help="at most this many runs"),
    status: list[str] = typer.Option([], "--status", help="only runs with this status (repeatable): "
                                     + ", ".join(RUN_STATUSES)),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Recorded runs, newest first (also 'upkeeper history [JOB]')."""
    setup = state.setup()
    history = state.history()
    # a job removed or renamed (or one of another node's config sharing the history) keeps its runs under its
    # name: only a name no run was ever recorded under is a mistake
    if job is not None and job not in setup.jobs and not history.runs(job=job, limit=1):
        setup.job(job)  # raises a UsageError with a suggestion
    bad = [s for s in status if s not in RUN_STATUSES]
    if bad:
        raise UsageError(f"unknown --status {bad[0]!r}",
                         f"Try: one of {', '.join(RUN_STATUSES)} ('stopped': interrupted because upkeeper was asked "
                         "to stop, as the table shows it)")
    # 'stopped' is how the table shows an interrupted run that a stop interrupted: recorded 'interrupted'
    wanted = sorted({"interrupted" if s == "stopped" else s for s in status})
    rows = history.runs(job=job, since=parse_since(since), limit=limit, statuses=wanted or None)
    if "stopped" in status and "interrupted" not in status:
        rows = [r for r in rows if r.status != "interrupted" or stopped_on_request(r.status, r.details)]
    if as_json:
        print_json([run_dict(r) for r in rows])
        return
    if not rows:
        console.print("no runs recorded" + (f" for {job}" if job else "") + ".")
        return
    table = Table(title="History", title_justify="left")
    for col in ("id", "job", "scheduled (UTC)", "trigger", "status", "took", "summary"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(str(r.id), escape(r.job), local_time(r.scheduled_for, "UTC", "%Y-%m-%d %H:%M:%S"), r.trigger,
                      run_status_text(r.status, stopped_on_request(r.status, r.details)), human_duration(r.duration), escape((r.summary or "")[:140]))
    console.print(table)


@app.command("show")
def show_cmd(
    run_id: int = typer.Argument(..., help="run id (from 'upkeeper history')"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """One run in full: findings, metrics and its log excerpt."""
    history = state.history()
    row = history.get_run(run_id)
    if row is None:
        raise UsageError(f"no run with id {run_id}", "Try: 'upkeeper history' lists recent runs")
    findings = history.findings_for(run_id)
    data = run_dict(row, findings, full=True)
    if as_json:
        print_json(data)
        return
    head = (f"[bold]run {row.id}[/bold]  job [bold]{escape(row.job)}[/bold] ({escape(row.task)}"
            f"{' on ' + escape(row.target) if row.target else ''})\n"
            f"status {run_status_text(row.status, data['stopped'])}   trigger {escape(row.trigger)}   attempt {row.attempt}   "
            f"node {escape(row.node or '-')}\n"
            f"scheduled {local_time(row.scheduled_for, 'UTC', '%Y-%m-%d %H:%M:%S %Z')}   "
            f"started {local_time(row.started_at, 'UTC', '%H:%M:%S')}   "
            f"took {human_duration(row.duration)}")
    details = row.details or {}
    if details.get("emergency"):  # the audit trail's facts, where the run is looked at
        head += (f"\n[warning]emergency run[/warning]: requested by {escape(str(details.get('requested_by', '?')))}, "
                 f"approved by {escape(str(details.get('approved_by', '?')))}; reason: "
                 f"{escape(str(details.get('reason', '?')))}")
    elif details.get("planned_by"):
        head += f"\nplanned by {escape(str(details['planned_by']))}"
        try:
            head += f" at {local_time(datetime.fromisoformat(str(details['planned_at'])), 'UTC', '%Y-%m-%d %H:%M:%S %Z')}"
        except (KeyError, ValueError):
            pass
    # soft_wrap off for the panels: the console's soft wrap (no line broken) made a panel crop each line at the
    # width, and the end of an error's summary and of every long log line was gone; wrapped inside, it is all there
    console.print(Panel(head + (f"\n\n{escape(row.summary)}" if row.summary else ""), expand=False), soft_wrap=False)
    if findings:
        t = Table(title="Findings", title_justify="left")
        for col in ("severity", "check", "subject", "message", "remediation"):
            t.add_column(col, overflow="fold")
        for f in sorted(findings, key=lambda f: {"critical": 0, "warning": 1, "info": 2}.get(f.severity, 3)):
            # findings quote log lines and paths: text, never Rich markup (the console escapes control characters)
            t.add_row(severity_text(f.severity), *(escape(x) for x in (f.check, f.subject, f.message, f.remediation)))
        console.print(t)
    if row.metrics:
        t = Table(title="Metrics", title_justify="left")
        t.add_column("name", overflow="fold")
        t.add_column("value", justify="right", overflow="fold")
        items = sorted(row.metrics.items())
        for k, v in items[:60]:
            t.add_row(k, f"{v:,.6g}")
        if len(items) > 60:
            t.add_row(f"… {len(items) - 60} more (use --json)", "")
        console.print(t)
    if row.log_excerpt:
        console.print(Panel(row.log_excerpt, title="log", title_align="left", expand=False), markup=False,
                      soft_wrap=False)


@history_app.command("prune")
def prune_cmd(
    dry_run: bool = typer.Option(False, "--dry-run", help="count what would be deleted; delete nothing"),
    vacuum: bool = typer.Option(False, "--vacuum", help="SQLite: rewrite the file once (VACUUM) so it shrinks, and "
                                "turn on incremental vacuum; holds the write lock while it runs"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Apply history retention now (the daemon does it hourly): delete old runs with their findings and
    logs, old notification events and deliveries, old audit entries and expired metric samples."""
    from upkeeper.core.retention import prune_history

    setup = state.setup()
    keep = setup.config.history_retention
    now = datetime.now(UTC)
    rep = prune_history(
        state.history(), runs_before=now - keep.runs if keep.runs else None,
        audit_before=now - keep.audit if keep.audit else None,
        metric_cutoffs={j.name: now - j.metrics_retention for j in setup.jobs.values()},
        dry_run=dry_run, vacuum=vacuum)
    if as_json:
        print_json(rep.to_dict())
        return
    verb = "would delete" if dry_run else "deleted"

    def when(t: datetime | None) -> str:
        return local_time(t, "UTC", "%Y-%m-%d %H:%M UTC") if t else "never (kept forever)"

    console.print(f"runs, findings, logs and notifications finished before: {when(rep.runs_before)}")
    console.print(f"audit trail and emergency runs before: {when(rep.audit_before)}")
    table = Table(title=f"History prune{' (dry run)' if dry_run else ''}", title_justify="left")
    table.add_column("what", overflow="fold")
    table.add_column(verb, justify="right", overflow="fold")
    for what, n in (("runs (with their log excerpts)", rep.runs), ("findings", rep.findings),
                    ("notification events", rep.notify_events), ("notification deliveries", rep.notify_deliveries),
                    ("audit entries", rep.audit), ("metric samples", rep.metric_samples),
                    ("daemon records (of daemons ended before the runs' cutoff)", rep.daemons)):
        table.add_row(what, f"{n:,}")
    console.print(table)
    if rep.streak_runs:
        console.print(f"{rep.streak_runs:,} of these runs failed after their job's latest success: "
                      f"{'they would stay' if dry_run else 'they stay'} counted in its consecutive failures "
                      "('upkeeper status')")
    for reason, n in sorted(rep.kept.items()):
        console.print(f"kept {n:,} old run(s): {reason}")
    if rep.file_bytes_before is not None:
        console.print(f"SQLite file: {human_bytes(rep.file_bytes_before)} -> {human_bytes(rep.file_bytes_after or 0)}"
                      f"; {rep.free_pages or 0:,} free page(s) left for new rows; vacuum: {rep.vacuum or '-'}")
