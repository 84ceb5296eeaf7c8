"""``upkeeper run JOB… | --all``: run jobs now, recorded like scheduled runs."""

from __future__ import annotations

import typer

from upkeeper.cli._app import app, console, err_console, print_json, state
from upkeeper.cli._runs import make_runner, run_jobs, summary_table
from upkeeper.core.runner import status_exit_code
from upkeeper.errors import UsageError


@app.command("run")
def run_cmd(
    jobs: list[str] = typer.Argument(None, help="job names (see 'upkeeper jobs')"),
    all_jobs: bool = typer.Option(False, "--all", help="run every enabled job"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    parallel: int = typer.Option(4, "--parallel", "-p", min=1, max=64, help="jobs run at once"),
    no_retry: bool = typer.Option(False, "--no-retry", help="do not retry failed runs"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print nothing unless a run fails (for cron)"),
) -> None:
    """Run jobs now.  Exit code 0 when every run is ok/warn/skipped, 1 when any failed."""
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
    history = state.history()
    history.recover_orphans(setup.config.node)
    runner = make_runner(setup, history, state.history_url(), min(parallel, len(selected)))
    out = err_console if (as_json or quiet) else console
    try:
        results = run_jobs(runner, selected, console=out, parallel=parallel, retries=not no_retry,
                           show_progress=not (as_json or quiet) and out.is_terminal)
    finally:
        runner.close()
    code = status_exit_code([r.status for r in results])
    if as_json:
        print_json([r.to_dict() for r in results])
    elif not quiet or code:
        (console if not quiet else err_console).print(summary_table(results))
        if any(r.findings for r in results):
            console.print("Details: 'upkeeper show RUN_ID'", style="dim")
    raise typer.Exit(code)
