"""``upkeeper run JOB… | --all``: run jobs now (or plan them with --at), recorded like scheduled runs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import typer

from upkeeper.cli import _app
from upkeeper.cli._app import app, print_json, state
from upkeeper.cli._gate import (
    EMERGENCY_TRIGGER,
    actor,
    announce_emergency,
    announce_emergency_done,
    blocked,
    parse_at,
    plan_runs,
    retry_hold,
)
from upkeeper.cli._runs import RunsStopped, RunSummary, make_runner, run_jobs, summary_table
from upkeeper.core.executor import WorkerPool
from upkeeper.core.runner import status_exit_code
from upkeeper.errors import UsageError
from upkeeper.fmt import local_time
from upkeeper.notify.policy import Calendar

if TYPE_CHECKING:
    from upkeeper.cli._gate import Blocked
    from upkeeper.core.history import History
    from upkeeper.core.jobs import Job, Setup
    from upkeeper.notify.engine import NotificationEngine


def _engine(setup: Setup, history: History) -> NotificationEngine:
    from upkeeper.notify.engine import NotificationEngine

    return NotificationEngine(setup, history)


def _record_held(setup: Setup, history: History, selected: list[Job], held: list[Blocked],
                 now: datetime) -> list[RunSummary]:
    """The ``--scheduled`` runs a blackout holds, recorded ``skipped`` with the blackout as the reason."""
    from upkeeper.core.history import process_identity

    jobs = {j.name: j for j in selected}
    out = []
    for b in held:
        job = jobs[b.job]
        rid = history.record_skip(job.name, job.task_name, job.target_name, now, b.reason, trigger="manual",
                                  owner=process_identity(), node=setup.config.node, details={"scheduled": True})
        out.append(RunSummary(run_id=rid, job=job.name, task=job.task_name, status="skipped", summary=b.reason,
                              duration=0.0))
    return out


@app.command("run")
def run_cmd(
    jobs: list[str] = typer.Argument(None, help="job names (see 'upkeeper jobs')"),
    all_jobs: bool = typer.Option(False, "--all", help="run every enabled job"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    parallel: int = typer.Option(4, "--parallel", "-p", min=1, max=64, help="jobs run at once"),
    no_retry: bool = typer.Option(False, "--no-retry", help="do not retry failed runs"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print nothing unless a run fails (for cron)"),
    at: str | None = typer.Option(None, "--at", help="plan the run for TIME instead ('2025-03-02 03:00' in the "
                                                     "config's timezone, an ISO time with offset, or '+2h'); "
                                                     "the daemon runs it"),
    emergency: bool = typer.Option(False, "--emergency", help="run now even inside a blackout or outside the "
                                                              "job's window (needs --reason and --approved-by)"),
    reason: str | None = typer.Option(None, "--reason", help="why the emergency run is needed (audit trail)"),
    approved_by: str | None = typer.Option(None, "--approved-by", help="who approved the emergency run"),
    scheduled: bool = typer.Option(False, "--scheduled", help="started by cron or a systemd timer (the lines "
                                   "'upkeeper cron export' writes): a job inside a blackout is recorded as "
                                   "skipped, as the daemon skips it, and counts as done (exit 0), instead of "
                                   "being refused (exit 2)"),
) -> None:
    """Run jobs now.  Exit code 0 when every run is ok/warn/skipped, 1 when any failed.

    Jobs bound to a maintenance window, or inside a blackout, do not run on demand: plan them
    with --at (at least the window's min_notice ahead), or use --emergency, which is recorded in
    the audit trail and announced to every stakeholder channel.
    """
    # Start a worker now: its start-up (imports) overlaps loading the config and history.
    pool = WorkerPool(size=1)
    if at is None:
        pool.prestart(1)
    try:
        setup = state.setup()
        if all_jobs and jobs:
            raise UsageError("give job names or --all, not both")
        if all_jobs:
            selected = [j for j in setup.jobs.values() if j.enabled]
        elif jobs:
            selected = setup.select(jobs)
        else:
            raise UsageError("which jobs?", "Try: 'upkeeper run JOB…' or 'upkeeper run --all' ('upkeeper jobs' lists them)")
        if not selected:
            raise UsageError("no enabled jobs to run", "Try: add jobs to the config, or enable them")
        if emergency and at:
            raise UsageError("--emergency runs now; it does not take --at")
        if emergency and (not reason or not approved_by):
            raise UsageError("an emergency run needs --reason and --approved-by",
                             "Try: --emergency --reason 'restore after data loss' --approved-by alice")
        if (reason or approved_by) and not emergency:
            raise UsageError("--reason and --approved-by go with --emergency")
        if scheduled and (emergency or at):
            raise UsageError("--scheduled is for runs cron or a timer starts; it does not take --emergency or --at")
        if at is None:
            # the worker imports the jobs' task modules and opens history on the other core meanwhile
            pool.warm(config=setup.config, modules=sorted({j.task_cls.__module__ for j in selected}),
                      history_url=state.history_url())
        history = state.history()
        # the engine announces planned and emergency runs; the runner's own (notifications of the run's
        # result) comes with the runner, when channels are configured
        engine = _engine(setup, history) if (at is not None or emergency) else None
        calendar = engine.calendar if engine is not None else Calendar(setup.config)
        now = datetime.now(UTC)
        who = actor()

        if at is not None:
            assert engine is not None
            when = parse_at(at, setup.config.timezone, now)
            planned = plan_runs(setup, history, engine, selected, when, now, who)
            if as_json:
                print_json([{"job": j.name, "run_id": rid, "status": "pending", "due_at": when.isoformat()}
                            for j, rid in planned])
            else:
                from rich.table import Table

                table = Table(title="Planned", title_justify="left")
                for col in ("run", "job", "due"):
                    table.add_column(col, overflow="fold")
                for j, rid in planned:
                    table.add_row(str(rid), j.name, local_time(when, setup.config.timezone))
                console = _app.console
                console.print(table)
                from upkeeper.config.notify import stakeholder_channels

                told = ("stakeholders were notified" if stakeholder_channels(setup.config.notifications)
                        else "no stakeholder channel to notify (notifications -> channels, stakeholders)")
                console.print(f"The daemon starts them when due ('upkeeper daemon'); {told}.", style="dim")
            raise typer.Exit(0)

        # --json, -q: nothing goes through Rich unless a run fails or is stopped (its console is made then)
        out = None if (as_json or quiet) else _app.console
        details = None
        trigger = "manual"
        skipped: list[RunSummary] = []  # --scheduled: the jobs a blackout holds, recorded as the daemon does
        if emergency:
            assert reason is not None and approved_by is not None and engine is not None
            details = {"emergency": True, **announce_emergency(setup, history, engine, selected, reason, approved_by,
                                                               who, now)}
            trigger = EMERGENCY_TRIGGER
        else:
            refused = [b for b in (blocked(calendar, j, now) for j in selected) if b is not None]
            if scheduled:  # a blackout is the schedule's business: skipped; a window job stays refused below
                held = [b for b in refused if b.blackout]
                skipped = _record_held(setup, history, selected, held, now)
                refused = [b for b in refused if not b.blackout]
            if refused and not all_jobs:
                raise UsageError("; ".join(b.reason for b in refused), refused[0].hint)
            for b in refused:
                (out if out is not None else _app.err_console).print(f"[skipped]not run:[/skipped] {b.reason}")
            gone = {b.job for b in refused} | {r.job for r in skipped}
            selected = [j for j in selected if j.name not in gone]
            if not selected:
                if as_json:
                    print_json([r.to_dict() for r in skipped])
                elif out is not None and skipped:
                    out.print(summary_table(skipped))
                raise typer.Exit(0)
        history.recover_orphans(setup.config.node)
        runner = make_runner(setup, history, state.history_url(), min(parallel, len(selected)), pool)
        try:
            results = run_jobs(runner, selected, console=out, parallel=parallel, retries=not no_retry,
                               show_progress=out is not None and out.is_terminal, trigger=trigger,
                               details=details, hold=None if emergency else retry_hold(calendar))
        except RunsStopped as stop:
            # Ctrl-C or SIGTERM (systemctl stop, timeout): the runs as recorded, those stopped 'interrupted',
            # then exit 130 or 143 (cli.main) — a script reading --json learns what was left undone
            if as_json:
                print_json([r.to_dict() for r in stop.results])
            elif not quiet and stop.results:
                _app.console.print(summary_table(stop.results))
            raise stop.cause from None
        finally:
            runner.close()
        if engine is not None:  # an emergency run
            announce_emergency_done(engine, [(r.job, r.run_id, r.status, r.summary) for r in results], who,
                                    datetime.now(UTC))
        results = skipped + results
        code = status_exit_code([r.status for r in results])
        if as_json:
            print_json([r.to_dict() for r in results])
        elif not quiet or code:
            (_app.console if not quiet else _app.err_console).print(summary_table(results))
            if any(r.findings for r in results):
                _app.console.print("Details: 'upkeeper show RUN_ID'", style="dim")
        raise typer.Exit(code)
    finally:
        pool.shutdown()
