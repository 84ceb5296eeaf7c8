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


def findings(result: Result, check: str, subject: str | None = None) -> list[Finding]:
    return [f for f in result.findings if f.check == check and (subject is None or f.subject == subject)]


def one(result: Result, check: str, subject: str | None = None) -> Finding:
    got = findings(result, check, subject)
    assert len(got) == 1, f"expected one {check} {subject or ''}, got {got}\nall: {result.findings}"
    return got[0]
