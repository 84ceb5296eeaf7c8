"""debug.*: tasks for testing schedules, alerts, timeouts and retries without touching anything.

``debug.fail`` is the quickest way to check that a notification route works;
``debug.sleep`` shows what a timeout does (the run's whole process group is killed).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from upkeeper.core import proc
from upkeeper.core.task import Finding, Result, Severity, Status, Task, TaskContext, TaskOptions, task
from upkeeper.errors import TaskError


class NoopOptions(TaskOptions):
    message: str = Field("nothing to do", description="summary of the run. Source: upkeeper default")


@task
class DebugNoop(Task[NoopOptions]):
    """Does nothing and succeeds. Useful to test scheduling."""

    name = "debug.noop"
    summary = "do nothing and succeed (for testing schedules)"
    Options = NoopOptions
    category = "monitoring"

    def run(self, ctx: TaskContext, options: NoopOptions) -> Result:
        return Result(summary=options.message, metrics={"noop": 1.0})


class SleepOptions(TaskOptions):
    seconds: float = Field(1.0, ge=0, description="how long to sleep. Source: upkeeper default")
    subprocess: bool = Field(
        False, description="sleep in a child process (shows that a timeout kills the task's subprocesses too). "
                "Source: upkeeper default"
    )
    pid_file: str | None = Field(None, description="write the task's PID (and its child's) to this file. "
            "Source: upkeeper (not set by default)")
    record_state: bool = Field(False, description="before sleeping, write the job state key `slept_at` (shows "
            "that job state is recorded with the run's result: a run killed by its timeout leaves it as it was). "
            "Source: upkeeper default")


@task
class DebugSleep(Task[SleepOptions]):
    """Sleeps, optionally inside a child process."""

    name = "debug.sleep"
    summary = "sleep for a while (for testing timeouts and overlap)"
    Options = SleepOptions
    category = "monitoring"

    def run(self, ctx: TaskContext, options: SleepOptions) -> Result:
        ctx.log.info("sleeping %.1fs%s", options.seconds, " in a subprocess" if options.subprocess else "")
        if options.record_state:
            ctx.state.set("slept_at", ctx.now().isoformat())
        if options.subprocess:
            sp = proc.spawn(["sleep", str(options.seconds)], stdout=proc.DEVNULL)
            if options.pid_file:
                _write_pids(options.pid_file, os.getpid(), sp.popen.pid)
            with sp:
                sp.wait()
        else:
            if options.pid_file:
                _write_pids(options.pid_file, os.getpid())
            time.sleep(options.seconds)
        return Result(summary=f"slept {options.seconds:g}s")


class FailOptions(TaskOptions):
    mode: Literal["fail", "warn", "error", "exception", "crash"] = Field(
        "fail",
        description="fail: a critical finding; warn: a warning finding; error: a TaskError; "
        "exception: an unexpected exception; crash: the worker process dies. Source: upkeeper default",
    )
    message: str = Field("this run fails on purpose (debug.fail)", description="message of the finding/error. "
            "Source: upkeeper default")
    check: str = Field("debug.failure", description="check id of the finding. Source: upkeeper default")


@task
class DebugFail(Task[FailOptions]):
    """Fails in a chosen way. The quickest test of alerts and escalation."""

    name = "debug.fail"
    summary = "fail on purpose (for testing alerts, retries and escalation)"
    Options = FailOptions
    category = "monitoring"

    def run(self, ctx: TaskContext, options: FailOptions) -> Result:
        if options.mode == "error":
            raise TaskError(options.message, "Try: this is debug.fail doing its job")
        if options.mode == "exception":
            raise RuntimeError(options.message)
        if options.mode == "crash":
            sys.stdout.flush()
            os._exit(3)
        sev = Severity.CRITICAL if options.mode == "fail" else Severity.WARNING
        return Result(
            summary=options.message,
            findings=[Finding(options.check, sev, ctx.job, options.message, "nothing to fix: this is a test")],
            status=Status.FAIL if options.mode == "fail" else Status.WARN,
        )


def _write_pids(path: str, *pids: int) -> None:
    """The PIDs, one per line, in a file that appears whole (a test waiting for it never reads it empty)."""
    from upkeeper.core.artifacts import atomic_write_bytes

    atomic_write_bytes(Path(path), "".join(f"{p}\n" for p in pids).encode())
