"""Helpers for the PostgreSQL task tests: run a task against a real cluster, pick findings."""

from __future__ import annotations

from typing import Any

from upkeeper.config.targets import PostgresTarget
from upkeeper.core.task import REGISTRY, Finding, Result, TaskContext
from upkeeper.sandbox.postgres import PostgresCluster


def target(pg: PostgresCluster, db: str) -> PostgresTarget:
    return PostgresTarget.model_validate(pg.target(db))


def run_task(name: str, pg: PostgresCluster, db: str, ctx: TaskContext | None = None, **options: Any) -> Result:
    cls = REGISTRY.get(name)
    opts = cls.Options.model_validate(options)
    t = target(pg, db)
    if ctx is None:
        ctx = TaskContext(job="test", task=name, target_name="db", target=t)
    else:
        ctx.target = t
    return cls().run(ctx, opts)


def closed_window_ctx(task: str) -> TaskContext:
    """A context whose job is bound to a maintenance window that is closed now (it opened in 2020)."""
    from upkeeper.config.loader import load_text

    config = load_text(
        "windows:\n  once:\n    start: '2020-01-01 02:00'\n    end: '2020-01-01 04:00'\n"
        "jobs:\n  test:\n    task: debug.noop\n    window: once\n"
    )
    return TaskContext(job="test", task=task, config=config)


def open_window_ctx(task: str) -> TaskContext:
    """A context whose job is bound to a window open right now."""
    from upkeeper.config.loader import load_text

    config = load_text(
        "windows:\n  always:\n    rrule: 'FREQ=DAILY'\n    start: '00:00'\n    duration: 24h\n"
        "jobs:\n  test:\n    task: debug.noop\n    window: always\n"
    )
    return TaskContext(job="test", task=task, config=config)


def findings(result: Result, check: str, subject: str | None = None) -> list[Finding]:
    return [f for f in result.findings if f.check == check and (subject is None or f.subject == subject)]


def one(result: Result, check: str, subject: str | None = None) -> Finding:
    got = findings(result, check, subject)
    assert len(got) == 1, f"expected one {check} {subject or ''}, got {got}\nall: {result.findings}"
    return got[0]
