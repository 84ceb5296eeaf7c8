"""Run several jobs now with a live progress display; shared by ``run`` and ``demo``."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from upkeeper.cli import _app
from upkeeper.cli._app import run_status_text, severity_text, status_text
from upkeeper.cli._signals import Terminated
from upkeeper.cli._wiring import build_listeners
from upkeeper.core.executor import WorkerPool
from upkeeper.core.history import History, process_identity, stopped_on_request
from upkeeper.core.jobs import Job, Setup
from upkeeper.core.runner import Runner
from upkeeper.core.task import Finding
from upkeeper.fmt import human_duration

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from rich.console import Console
    from rich.progress import Progress, TaskID
    from rich.table import Table


@dataclass
class RunSummary:
    run_id: int | None
    job: str
    task: str
    status: str
    summary: str
    duration: float
    findings: list[Finding] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: list[Any] = field(default_factory=list)
    #: the retry a blackout held once its backoff was over (recorded ``skipped``): run id, attempt, reason
    retry_skipped: tuple[int, int, str] | None = None
    #: interrupted because upkeeper was asked to stop (Ctrl-C, SIGTERM): no failure (``details.stopped``)
    stopped: bool = False

    def top_finding(self) -> Finding | None:
        if not self.findings:
            return None
        return max(self.findings, key=lambda f: f.severity.rank)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "job": self.job,
            "task": self.task,
            "status": self.status,
            "stopped": self.stopped,
            "summary": self.summary,
            "duration": round(self.duration, 3),
            "findings": [f.to_dict() for f in self.findings],
            "metrics": self.metrics,
            "artifacts": self.artifacts,
            "retry_skipped": None if self.retry_skipped is None else {
                "run_id": self.retry_skipped[0], "attempt": self.retry_skipped[1], "reason": self.retry_skipped[2]},
        }


class RunsStopped(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped :func:`run_jobs`: ``results`` are the runs recorded by then (those it stopped
    ``interrupted``; a job not started yet has none), ``cause`` the interrupt to raise again once they are
    reported."""

    def __init__(self, results: list[RunSummary], cause: KeyboardInterrupt) -> None:
        super().__init__(*cause.args)
        self.results = results
        self.cause = cause


def make_runner(setup: Setup, history: History, history_url: str, pool_size: int,
                pool: WorkerPool | None = None) -> Runner:
    if pool is not None:
        pool.size = max(pool.size, pool_size)
    return Runner(setup=setup, history=history, executor=pool or WorkerPool(size=pool_size),
                  owner=process_identity(), node=setup.config.node, history_url=history_url,
                  listeners=build_listeners(setup, history))


class _NoProgress:
    """What :func:`run_jobs` asks of a Progress when none is shown (``--json``, ``--quiet``, not a
    terminal): a disabled Progress prints nothing either, but importing rich.progress costs ~10 ms.

    ``console`` None: stderr's, made only if something is printed (``--json`` and ``-q`` print nothing
    through Rich unless the runs are stopped; importing it is ~17 ms)."""

    def __init__(self, console: Console | None) -> None:
        self._console = console
        self._ids = 0

    @property
    def console(self) -> Console:
        if self._console is None:
            self._console = _app.err_console
        return self._console

    def add_task(self, description: str, **fields: Any) -> TaskID:
        self._ids += 1
        return cast("TaskID", self._ids)

    def update(self, task_id: TaskID, **fields: Any) -> None:
        pass

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _progress(console: Console | None, show: bool) -> Progress | _NoProgress:
    if not show or console is None:
        return _NoProgress(console)
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[job]}[/bold]", justify="left"),
        BarColumn(bar_width=20),
        TextColumn("{task.description}", justify="left"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def run_jobs(
    runner: Runner,
    jobs: list[Job],
    *,
    console: Console | None,
    parallel: int = 4,
    retries: bool = True,
    show_progress: bool = True,
    trigger: str = "manual",
    details: dict[str, Any] | None = None,
    hold: Callable[[Job, datetime], str | None] | None = None,
) -> list[RunSummary]:
    """Run ``jobs`` now (at most ``parallel`` at once) and return their summaries in job order.

    ``console`` None: no progress is shown and stderr's console is used only to say that the runs are being
    stopped (Ctrl-C, SIGTERM)."""
    cancel = threading.Event()
    results: dict[int, RunSummary] = {}  # by position: a job named twice is two runs, each with its own result
    progress = _progress(console, show_progress)
    shown = not isinstance(progress, _NoProgress)
    if shown:
        from rich.markup import escape
    ids = [progress.add_task("waiting", job=job.name, total=None) for job in jobs]

    def one(i: int, job: Job) -> None:
        tid = ids[i]
        progress.update(tid, description="running")
        t0 = time.monotonic()

        # the description column is Rich markup (the final status is coloured): a task's log message or
        # progress quotes log lines and server errors, escaped ("[/]" in one stopped the live display)
        def on_log(level: str, message: str) -> None:
            if shown and level in ("INFO", "WARNING", "ERROR") and message:
                progress.update(tid, description=escape(message.splitlines()[0][:70]))

        def on_progress(message: str, fraction: float | None) -> None:
            if not shown:
                return
            if fraction is not None:
                progress.update(tid, total=1.0, completed=fraction, description=escape(message[:70]))
            else:
                progress.update(tid, description=escape(message[:70]))

        def on_retry(attempt: int, delay: float) -> None:
            progress.update(tid, description=f"attempt {attempt} in {human_duration(delay)}")

        held: list[tuple[int, int, str]] = []

        def on_retry_skipped(run_id: int, attempt: int, reason: str) -> None:
            held.append((run_id, attempt, reason))

        rid, outcome, status = runner.run_manual(job, trigger=trigger, retries=retries, on_log=on_log,
                                                 on_progress=on_progress, on_retry=on_retry, cancel=cancel,
                                                 details=details, hold=hold, on_retry_skipped=on_retry_skipped)
        result = outcome.result if outcome is not None else None
        # interrupted: asked to stop, or its worker killed alone: the run's record says which.  No outcome (the job's
        # lock held by a run still going, interrupted waiting for its target's): the record says why
        row = runner.history.get_run(rid) if rid is not None and (status == "interrupted" or result is None) else None
        stopped = status == "interrupted" and row is not None and stopped_on_request(row.status, row.details)
        results[i] = RunSummary(
            run_id=rid, job=job.name, task=job.task_name, status=status,
            summary=result.summary if result else (row.summary if row is not None else ""),
            duration=time.monotonic() - t0,
            findings=list(result.findings) if result else [],
            metrics=dict(result.metrics) if result else {},
            artifacts=list(result.artifacts) if result else [],
            retry_skipped=held[-1] if held else None,
            stopped=stopped,
        )
        progress.update(tid, total=1.0, completed=1.0, description=status_text(status))

    pool = ThreadPoolExecutor(max_workers=max(1, min(parallel, len(jobs))), thread_name_prefix="cli-run")
    try:
        with progress:
            futures = [pool.submit(one, i, job) for i, job in enumerate(jobs)]
            try:
                while wait(futures, timeout=0.5).not_done:  # wakes as soon as the last one ends
                    pass
            except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (cli._signals.Terminated)
                cancel.set()  # each run's worker is SIGTERMed: its task unwinds (work files go), then it ends
                what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
                progress.console.print(f"[warn]{what}: stopping running tasks…[/warn]")
                for f in futures:
                    f.cancel()
                pool.shutdown(wait=True)  # the runs under way end, recorded (interrupted)
                raise RunsStopped([results[i] for i in range(len(jobs)) if i in results], exc) from None
            for f in futures:
                f.result()
    finally:
        pool.shutdown(wait=True)
        runner.executor.shutdown()
    return [results[i] for i in range(len(jobs)) if i in results]


def summary_table(results: list[RunSummary], title: str = "Results") -> Table:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("run", "job", "task", "status", "took", "top finding / summary"):
        table.add_column(col, overflow="fold")
    for r in results:
        top = r.top_finding()
        # subjects, messages and summaries quote log lines and paths: never read as Rich markup ("[/b]" in a
        # request path made the table raise after the run; "[link=…]" made a link)
        text = (f"{severity_text(top.severity.value)} {escape(top.subject)}: {escape(top.message[:160])}" if top
                else escape(r.summary[:160]))
        if r.retry_skipped is not None:  # the failure stands: its retry was not run, and the reader learns why
            sid, attempt, why = r.retry_skipped
            text += f"\n[skipped]retry {attempt} skipped[/skipped] (run {sid}): {escape(why[:200])}"
        table.add_row(str(r.run_id or "-"), f"[bold]{escape(r.job)}[/bold]", escape(r.task),
                      run_status_text(r.status, r.stopped),
                      human_duration(r.duration), text)
    return table
