"""Execute one task request: build the context, call the task, turn any exception into a Result.

Shared by the worker process (normal operation) and the inline executor (tests,
benchmarks).  Nothing raised by a task escapes from here.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from upkeeper.config.loader import register_config_secrets
from upkeeper.config.models import Config
from upkeeper.core.jobs import Job
from upkeeper.core.task import MetricsReader, NoMetrics, Result, StateStore, Status, TaskContext
from upkeeper.errors import UpkeeperError
from upkeeper.redact import RedactingFilter, redact

Send = Callable[[tuple[Any, ...]], None]


@dataclass
class WorkRequest:
    run_id: int | None
    job: Job
    config: Config | None
    history_url: str | None
    scheduled_for: datetime
    attempt: int = 1
    dry_run: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class _SendHandler(logging.Handler):
    def __init__(self, send: Send) -> None:
        super().__init__(logging.DEBUG)
        self.send = send
        self.addFilter(RedactingFilter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            if record.exc_info:
                msg += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            self.send(("log", record.levelname, redact(msg)))
        except Exception:  # logging must never break a task
            pass


class HistoryState:
    """StateStore backed by the history database's job_state table.

    With ``staged`` (a dict), writes go there and are read back from there instead of reaching the
    database during the run: the runner saves them in the transaction that records the run's result
    (:meth:`upkeeper.core.history.History.finish_run`).  A run whose result is never recorded (its process
    killed, a timeout) then leaves the state as it was, so the next run reads those log lines again instead
    of skipping lines whose figures were never recorded.  ``before_set`` runs before each write: a worker
    whose parent died stops there (see :func:`upkeeper.core.worker.main`)."""

    def __init__(self, history: Any, job: str, before_set: Callable[[], None] | None = None,
                 staged: dict[str, Any] | None = None) -> None:
        self.history = history
        self.job = job
        self.before_set = before_set
        self.staged = staged

    def get(self, key: str, default: Any = None) -> Any:
        if self.staged is not None and key in self.staged:
            return self.staged[key]
        return self.history.get_state(self.job, key, default)

    def set(self, key: str, value: Any) -> None:
        if self.before_set is not None:
            self.before_set()
        if self.staged is not None:
            from upkeeper.core.history import jsonable

            self.staged[key] = jsonable(value)  # as the database would hand it back
            return
        self.history.set_state(self.job, key, value)


class HistoryMetrics:
    def __init__(self, history: Any, job: str, target: str | None) -> None:
        self.history = history
        self.job = job
        self.target = target

    def series(
        self, name: str, *, since: datetime | None = None, job: str | None = None, target: str | None = None,
        last: int | None = None,
    ) -> list[tuple[datetime, float]]:
        if job is None and target is None:
            job = self.job
        if last is not None:
            return list(self.history.metric_series(name, job=job, target=target, since=since, limit=last))
        return list(self.history.metric_series(name, job=job, target=target, since=since))


_history_cache: dict[str, Any] = {}
_secrets_registered_for: list[Config] = []  # the config objects whose secrets are registered


def register_secrets_once(config: Config) -> None:
    """Walking a large config costs time; do it once per config object, not once per run."""
    if any(c is config for c in _secrets_registered_for):
        return
    register_config_secrets(config)
    _secrets_registered_for.append(config)
    del _secrets_registered_for[:-4]


def open_history(url: str | None) -> Any:
    if not url:
        return None
    h = _history_cache.get(url)
    if h is None:
        from upkeeper.core.history import History

        h = History(url, migrate=False)
        _history_cache[url] = h
    return h


def execute_request(
    req: WorkRequest,
    send: Send,
    *,
    clock: Callable[[], datetime] | None = None,
    history: Any = None,
    before_state_set: Callable[[], None] | None = None,
    staged_state: dict[str, Any] | None = None,
) -> Result:
    """Run the request's task and return its Result; never raises (``before_state_set`` and
    ``staged_state``: see :class:`HistoryState`; the caller hands the staged state to the runner, which
    records it with the result, then publishes the files the task staged: :mod:`upkeeper.core.artifacts`)."""
    job = req.job
    # A logger of its own, outside logging's registry: getLogger() with a per-run name would keep one
    # Logger per run alive for the worker's whole life (a slow leak in a daemon's long-lived workers).
    logger = logging.Logger(f"upkeeper.run.{job.name}.{req.run_id or 0}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = _SendHandler(send)
    logger.addHandler(handler)
    try:
        if req.config is not None:
            register_secrets_once(req.config)
        hist = history if history is not None else open_history(req.history_url)
        state: StateStore
        metrics: MetricsReader
        if hist is not None:
            state = HistoryState(hist, job.name, before_state_set, staged_state)
            metrics = HistoryMetrics(hist, job.name, job.target_name)
        else:
            from upkeeper.core.task import MemoryState

            state, metrics = MemoryState(), NoMetrics()
        ctx = TaskContext(
            job=job.name,
            task=job.task_name,
            target_name=job.target_name,
            target=job.target,
            config=req.config,
            run_id=req.run_id,
            scheduled_for=req.scheduled_for,
            attempt=req.attempt,
            dry_run=req.dry_run,
            log=logger,
            state=state,
            metrics=metrics,
            clock=clock or (lambda: datetime.now(UTC)),
            progress=lambda message, fraction: send(("progress", redact(message), fraction)),
            # the runner records the staged state with the result, then publishes the staged files
            stage_files=hist is not None and staged_state is not None,
        )
        task = job.task_cls()
        result = task.run(ctx, job.options)
        if not isinstance(result, Result):
            return Result(
                status=Status.ERROR,
                summary=f"task {job.task_name} returned {type(result).__name__}, not a Result (a bug in the task)",
            )
        result.summary = redact(result.summary)
        return result
    except UpkeeperError as exc:
        msg = redact(exc.message)
        if exc.hint:
            logger.error("%s (%s)", msg, redact(exc.hint))
        else:
            logger.error("%s", msg)
        return Result(status=Status.ERROR, summary=msg)
    except Exception as exc:
        logger.error("task raised %s:\n%s", type(exc).__name__, redact(traceback.format_exc()))
        text = redact(str(exc)) or type(exc).__name__
        return Result(status=Status.ERROR, summary=f"{type(exc).__name__}: {text}")
    finally:
        logger.removeHandler(handler)
