"""Support for the notification tests (tests/notify): a scriptable task, an environment builder."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from upkeeper.cli._wiring import build_periodic, build_policies
from upkeeper.config.loader import load_text
from upkeeper.core.daemon import Daemon, SimClock
from upkeeper.core.executor import InlineExecutor
from upkeeper.core.history import History
from upkeeper.core.jobs import Setup, build_setup
from upkeeper.core.runner import Runner
from upkeeper.core.task import REGISTRY, Finding, NoOptions, Result, Severity, Status, Task, TaskContext
from upkeeper.notify.engine import NotificationEngine

#: what the scripted task returns next, per job (the last entry repeats)
SCRIPT: dict[str, list[Result]] = {}
_lock = threading.Lock()


class ScriptedTask(Task[NoOptions]):
    """A task whose outcomes the test decides: the notification engine is what is under test."""

    name = "testing.scripted"
    summary = "returns the outcomes a test scripted"
    target_kinds = ()
    Options = NoOptions
    category = "maintenance"

    def run(self, ctx: TaskContext, options: NoOptions) -> Result:
        with _lock:
            queue = SCRIPT.get(ctx.job, [])
            if not queue:
                return Result(summary="nothing scripted: ok")
            return queue.pop(0) if len(queue) > 1 else queue[0]


class ScriptedBackup(ScriptedTask):
    name = "testing.backup"
    summary = "a scripted backup"
    category = "backup"


@pytest.fixture(autouse=True)
def scripted_tasks() -> Iterator[None]:
    """Register the scripted tasks for one test only (the docs generator must never see them)."""
    REGISTRY.load()
    REGISTRY._tasks[ScriptedTask.name] = ScriptedTask
    REGISTRY._tasks[ScriptedBackup.name] = ScriptedBackup
    SCRIPT.clear()
    yield
    REGISTRY._tasks.pop(ScriptedTask.name, None)
    REGISTRY._tasks.pop(ScriptedBackup.name, None)
    SCRIPT.clear()


def ok(summary: str = "all good", **metrics: float) -> Result:
    return Result(summary=summary, metrics=dict(metrics))


def fail(summary: str = "it broke") -> Result:
    return Result(summary=summary, status=Status.FAIL,
                  findings=[Finding("testing.broken", Severity.CRITICAL, "thing", summary, "fix the thing")])


def error(summary: str = "exception: boom") -> Result:
    return Result(summary=summary, status=Status.ERROR)


def finding(check: str, severity: str, subject: str = "users", message: str = "too many dead tuples") -> Result:
    return Result(summary=f"{check} {severity}", findings=[Finding(check, Severity(severity), subject, message,
                                                                  "run VACUUM")])


def script(job: str, *results: Result) -> None:
    SCRIPT[job] = list(results)


@dataclass
class Env:
    setup: Setup
    history: History
    engine: NotificationEngine
    runner: Runner
    now: list[datetime] = field(default_factory=lambda: [datetime(2025, 3, 3, 12, 0, tzinfo=UTC)])

    def clock(self) -> datetime:
        return self.now[0]

    def run(self, job: str) -> str:
        self.now[0] += timedelta(seconds=1)  # manual runs are keyed by their start instant
        _rid, _outcome, status = self.runner.run_manual(self.setup.job(job), retries=False)
        return status


@pytest.fixture
def make_env(tmp_path: Path) -> Iterator[Callable[..., Env]]:
    made: list[Env] = []

    def make(yaml_text: str, start: datetime | None = None) -> Env:
        text = f"history: {tmp_path / 'history.db'}\n" + yaml_text
        config = load_text(text, "upkeeper.yaml")
        setup = build_setup(config)
        history = History("sqlite:///" + str(tmp_path / "history.db"))
        holder: list[datetime] = [start or datetime(2025, 3, 3, 12, 0, tzinfo=UTC)]

        def clock() -> datetime:
            return holder[0]

        engine = NotificationEngine(setup, history, clock=clock)
        runner = Runner(setup=setup, history=history, executor=InlineExecutor(clock=clock, history=history),
                        owner="test:1:1", node="test-node", clock=clock, listeners=[engine])
        env = Env(setup, history, engine, runner, holder)
        made.append(env)
        return env

    yield make
    for env in made:
        env.runner.close()
        env.history.close()


def yaml_block(data: dict[str, Any]) -> str:
    import io

    from ruamel.yaml import YAML

    buf = io.StringIO()
    y = YAML()
    y.default_flow_style = False
    y.dump(data, buf)
    return buf.getvalue()


class SimDaemon:
    def __init__(self, tmp_path, yaml_text: str, start: datetime = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)) -> None:  # type: ignore[no-untyped-def]
        self.clock = SimClock(start)
        config = load_text(f"history: {tmp_path / 'h.db'}\n" + yaml_text, "upkeeper.yaml")
        self.setup = build_setup(config)
        self.history = History("sqlite:///" + str(tmp_path / "h.db"))
        self.engine = NotificationEngine(self.setup, self.history, clock=self.clock.now)
        self.runner = Runner(setup=self.setup, history=self.history,
                             executor=InlineExecutor(clock=self.clock.now, history=self.history),
                             owner="sim:1:1", node="sim", clock=self.clock.now, listeners=[self.engine])
        self.daemon = Daemon(self.setup, self.history, self.runner, clock=self.clock, instance="sim:1:1",
                             policies=build_policies(self.setup, self.history),
                             periodic=build_periodic(self.setup, self.history, [self.engine]))

    def advance(self, until: datetime, step: timedelta = timedelta(minutes=5)) -> None:
        while self.clock.now() < until:
            self.clock.advance(step)
            self.daemon.tick()
            assert self.daemon.wait_idle(30)

    def close(self) -> None:
        self.daemon.drain(timedelta(seconds=1))
        self.runner.close()
        self.history.close()
