"""Helpers for the Redis, host and app task tests: run one task in-process against real services."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter

from upkeeper.config.targets import TargetConfig
from upkeeper.core.task import (
    REGISTRY,
    MemoryState,
    MetricsReader,
    NoMetrics,
    Result,
    StateStore,
    TaskContext,
)

_targets: TypeAdapter[Any] = TypeAdapter(TargetConfig)


def run_task(
    name: str,
    target: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    *,
    state: StateStore | None = None,
    metrics: MetricsReader | None = None,
    dry_run: bool = False,
    clock: Callable[[], datetime] | None = None,
) -> Result:
    """Validate options and target exactly as the config loader does, then call the task."""
    cls = REGISTRY.get(name)
    opts = cls.Options.model_validate(options or {})
    tgt = _targets.validate_python(target) if target is not None else _targets.validate_python({"kind": "host"})
    ctx = TaskContext(
        job=f"test-{name}", task=name, target_name="t", target=tgt, dry_run=dry_run,
        state=state if state is not None else MemoryState(), metrics=metrics or NoMetrics(),
        log=logging.getLogger(f"test.{name}"), clock=clock or (lambda: datetime.now(UTC)),
    )
    return cls().run(ctx, opts)


def checks(result: Result) -> dict[str, list[Any]]:
    """Findings grouped by check id."""
    out: dict[str, list[Any]] = {}
    for f in result.findings:
        out.setdefault(f.check, []).append(f)
    return out
