"""``upkeeper demo``: a sandbox with real services, every job run once, a summary."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import typer

from upkeeper.cli._app import app, console, state
from upkeeper.cli._runs import make_runner, run_jobs, summary_table
from upkeeper.core.history import History, history_url
from upkeeper.core.jobs import load_setup
from upkeeper.core.runner import status_exit_code


@app.command("demo")
def demo_cmd(
    keep: bool = typer.Option(False, "--keep", help="leave the sandbox's services running afterwards"),
    directory: Path | None = typer.Option(None, "--dir", help="sandbox directory (default: a new one in /tmp)"),
    parallel: int = typer.Option(4, "--parallel", "-p", min=1, max=16, help="jobs run at once"),
) -> None:
    """Start a sandbox (a real PostgreSQL with an app-like schema …), write a config for it,
    run every configured job once and print a summary.  History stays queryable afterwards.
    """
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="upkeeper-demo-", dir="/tmp"))
        directory.chmod(0o755)  # the sandbox's services run as other users (postgres, nobody)
    base = directory
    base = base.resolve()
    # (the sandbox's services import cryptography: imported for the demo only)
    from upkeeper.sandbox.demo import Sandbox

    sandbox = Sandbox(base)
    t0 = time.monotonic()
    console.rule("[bold]upkeeper demo")
    code = 0
    try:
        with console.status("starting the sandbox…") as status:
            sandbox.start(lambda msg: status.update(msg))
        console.print(f"sandbox ready in {time.monotonic() - t0:.1f}s at {base}")
        path = sandbox.write_config()
        state.config = path
        setup = load_setup(path)
        # (held by the state: closed as the command ends, as every command's history)
        state._history = history = History(history_url(setup.config.history, path.parent))
        runner = make_runner(setup, history, history.url, parallel)
        jobs = [j for j in setup.jobs.values() if j.enabled]
        console.print(f"running {len(jobs)} job(s) from {path}")
        first = [j for j in jobs if j.name not in sandbox.late_jobs]
        late = [j for j in jobs if j.name in sandbox.late_jobs]
        try:
            results = run_jobs(runner, first, console=console, parallel=parallel)
        finally:
            runner.close()
        if late:  # e.g. backup-verify: needs the backup taken in the first round (a pool serves one round)
            runner = make_runner(setup, history, history.url, parallel)
            try:
                results += run_jobs(runner, late, console=console, parallel=parallel)
            finally:
                runner.close()
        console.print(summary_table(results, title="Demo results"))
        reports = [(r.job, a["path"]) for r in results for a in r.artifacts
                   if isinstance(a, dict) and a.get("kind") == "report" and a.get("format") == "html"]
        if reports:
            console.print("Reports (open in a browser, they work offline):")
            for job, p in reports:
                console.print(f"  {job}: {p}", markup=False)
        receiver = sandbox.facts.get("notify_receiver")
        if receiver is not None:
            got = receiver.wait_for(1, timeout=5)
            console.print(f"notifications delivered to the sandbox webhook ({receiver.url}): {len(got)}")
            for req in got[:5]:
                body = req.json()
                console.print(f"  • {body.get('severity')}: {body.get('title')}", markup=False)
        code = status_exit_code([r.status for r in results])
        console.print(f"demo finished in {time.monotonic() - t0:.1f}s\n")
        console.print("History stays queryable:")
        console.print(f"  upkeeper --config {path} status")
        console.print(f"  upkeeper --config {path} history")
        console.print(f"  upkeeper --config {path} show {results[0].run_id if results else 1}")
        console.print(f"  upkeeper --config {path} notify log")
        console.print(f"  upkeeper --config {path} windows")
    finally:
        if keep:
            console.print(f"\n--keep: services left running; config {sandbox.config_path}")
            for svc in sandbox.services:
                console.print(f"  {type(svc).__name__} on port {getattr(svc, 'port', '?')}")
        else:
            sandbox.stop()
            console.print("sandbox services stopped (config and history kept).", style="dim")
    raise typer.Exit(code)
