"""The task contract: Task, TaskContext, Result, Finding, Severity and the registry.

A task family (``upkeeper.tasks.postgres``, ``upkeeper.tasks.host`` …) defines
small classes decorated with :func:`task`; importing the module registers them.
Third-party packages register theirs through the entry-point group
``upkeeper.tasks``.

A task never imports the CLI, the daemon or another task family.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from upkeeper.errors import DuplicateTaskError, UnknownTaskError

if TYPE_CHECKING:
    from upkeeper.config.models import Config, TargetConfig

log = logging.getLogger(__name__)


class Status(StrEnum):
    """Outcome of a run.  ``interrupted``/``queued``/``running``/``pending`` exist only in history."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    ERROR = "error"
    SKIPPED = "skipped"

    @property
    def failed(self) -> bool:
        return self in (Status.FAIL, Status.ERROR)


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return {"info": 0, "warning": 1, "critical": 2}[self.value]


@dataclass
class Finding:
    """One observation.  ``check`` is a stable id such as ``postgres.dead_tuples``."""

    check: str
    severity: Severity
    subject: str
    message: str
    remediation: str = ""
    value: float | str | None = None
    threshold: float | str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["severity"] = self.severity.value
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Finding:
        return cls(
            check=str(d["check"]),
            severity=Severity(d["severity"]),
            subject=str(d.get("subject", "")),
            message=str(d.get("message", "")),
            remediation=str(d.get("remediation", "")),
            value=d.get("value"),
            threshold=d.get("threshold"),
            data=dict(d.get("data") or {}),
        )


@dataclass
class CheckOutput:
    """What one check of a many-check task contributes (see :func:`run_checks`)."""

    findings: list[Finding] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


E = TypeVar("E")


def run_checks(checks: Iterable[tuple[str, Callable[[E], CheckOutput]]], env: E,
               on_error: Callable[[str, Exception], Finding], log: logging.Logger) -> CheckOutput:
    """Run every check and merge what they found; one failing check never stops the others.

    A check that raises becomes the finding ``on_error(name, exc)`` (postgres_exporter's rule: a
    broken collector is reported, the rest still run).
    """
    total = CheckOutput()
    for name, fn in checks:
        try:
            out = fn(env)
        except Exception as exc:  # one failing check never stops the others
            finding = on_error(name, exc)
            log.warning("check %s failed: %s", name, finding.message)
            total.findings.append(finding)
            continue
        total.findings.extend(out.findings)
        total.metrics.update(out.metrics)
        total.notes.extend(out.notes)
    return total


@dataclass
class Result:
    """What a task returns.  ``status`` defaults from the findings."""

    summary: str = ""
    findings: list[Finding] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    status: Status | None = None

    @property
    def final_status(self) -> Status:
        if self.status is not None:
            return self.status
        worst = max((f.severity.rank for f in self.findings), default=0)
        return {0: Status.OK, 1: Status.WARN, 2: Status.FAIL}[worst]

    def top_finding(self) -> Finding | None:
        if not self.findings:
            return None
        return max(self.findings, key=lambda f: f.severity.rank)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.final_status.value,
            "summary": self.summary,
            "findings": [f.to_dict() for f in self.findings],
            "metrics": dict(self.metrics),
            "artifacts": list(self.artifacts),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Result:
        return cls(
            summary=str(d.get("summary", "")),
            findings=[Finding.from_dict(f) for f in d.get("findings", [])],
            metrics={str(k): float(v) for k, v in (d.get("metrics") or {}).items()},
            artifacts=list(d.get("artifacts") or []),
            status=Status(d["status"]) if d.get("status") else None,
        )


class StateStore(Protocol):
    """Small persistent key/value store per job (JSON values), kept in history."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...


class MetricsReader(Protocol):
    """Read access to earlier metric samples, for trends (growth rates, leak slopes); ``last``: only the newest
    that many (the default: at most 10,000)."""

    def series(
        self, name: str, *, since: datetime | None = None, job: str | None = None, target: str | None = None,
        last: int | None = None,
    ) -> list[tuple[datetime, float]]: ...


class MemoryState:
    """A StateStore kept in memory (used when no history is available)."""

    def __init__(self) -> None:
        self._d: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self._d.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self._d[key] = value


class NoMetrics:
    def series(
        self, name: str, *, since: datetime | None = None, job: str | None = None, target: str | None = None,
        last: int | None = None,
    ) -> list[tuple[datetime, float]]:
        return []


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class TaskContext:
    """Everything a task may use besides its options."""

    job: str
    task: str
    target_name: str | None = None
    target: TargetConfig | None = None
    config: Config | None = None
    run_id: int | None = None
    scheduled_for: datetime = field(default_factory=_utcnow)
    attempt: int = 1
    dry_run: bool = False
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("upkeeper.task"))
    state: StateStore = field(default_factory=MemoryState)
    metrics: MetricsReader = field(default_factory=NoMetrics)
    clock: Callable[[], datetime] = _utcnow
    progress: Callable[[str, float | None], None] = lambda message, fraction: None
    #: the runner records the result and then publishes the files the task staged (see
    #: :mod:`upkeeper.core.artifacts`): a task writes its reports under pending names and stages them.
    #: False (a task called directly, no history): nothing publishes them later, so the task does.
    stage_files: bool = False

    def now(self) -> datetime:
        return self.clock()

    def require_target(self) -> TargetConfig:
        if self.target is None:
            from upkeeper.errors import TaskError

            raise TaskError(f"job {self.job!r} needs a target", "Try: add 'target: NAME' to the job")
        return self.target


class TaskOptions(BaseModel):
    """Base for every task's Options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", defer_build=True)


class NoOptions(TaskOptions):
    pass


O_contra = TypeVar("O_contra", bound=BaseModel, contravariant=True)


class Task(Generic[O_contra]):
    """Base class of every task.

    Subclasses set the class variables and implement :meth:`run`.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    target_kinds: ClassVar[tuple[str, ...]] = ()
    Options: ClassVar[type[BaseModel]] = NoOptions
    #: category for blackouts and routing: maintenance | backup | monitoring | security | critical
    category: ClassVar[str] = "maintenance"
    #: heavy work on a target (backup, VACUUM FULL, REINDEX) serializes through a target lock
    exclusive: ClassVar[bool] = False
    #: default timeout when neither job nor defaults set one (seconds)
    default_timeout: ClassVar[float | None] = None

    @classmethod
    def series_key(cls, options: Any) -> tuple[str, str] | None:
        """``(option, name)`` of the stored backup series a job with these options writes on its target, or
        None.  Two jobs of one task on one target with the same name but different options are a config
        error: each run's retention would delete the other job's backups."""
        return None

    @classmethod
    def config_problems(cls, options: Any, config: Any) -> list[tuple[str, str, str]]:
        """``(option, message, hint)`` for valid options that cannot work with the rest of the configuration
        (``config``), reported by config load and ``config check`` instead of failing every run."""
        return []

    @classmethod
    def config_notes(cls, options: Any, config: Any, target_name: str | None, target: Any
                     ) -> list[tuple[str, str, str]]:
        """``(option, message, hint)`` for valid options that work, but differently from what the
        configuration may suggest (a run handles the case and says so): shown by ``config check``."""
        return []

    @classmethod
    def head_start(cls, options: Mapping[str, Any], target: Mapping[str, Any]) -> None:
        """Start what a run of this task will need and can begin before it is sent: called by ``upkeeper run``'s
        worker while the CLI still loads the config (:func:`upkeeper.core.worker.head_start`), with the job's
        ``options`` and its target as written in the config file — unvalidated: any key may be missing or hold
        anything.  Best effort and invisible to the run: what it starts must be dismissed by the run when unused,
        and an exception here is ignored.  Nothing by default."""

    @classmethod
    def target_problems(cls, options: Any, target: Any) -> list[tuple[str, str, str]]:
        """``(option, message, hint)`` for valid options that cannot work on the job's ``target`` (its config),
        reported by config load and ``config check`` instead of failing every run."""
        return []

    def run(self, ctx: TaskContext, options: O_contra) -> Result:  # pragma: no cover - abstract
        raise NotImplementedError


TaskClass = type[Task[Any]]


class TaskRegistry:
    """Name → Task class.  Unknown or duplicate names are errors that list the known names."""

    def __init__(self) -> None:
        self._tasks: dict[str, TaskClass] = {}
        self._loaded = False

    def register(self, cls: TaskClass) -> TaskClass:
        name = getattr(cls, "name", None)
        if not name or "." not in name:
            raise DuplicateTaskError(f"task class {cls.__qualname__} needs a name like 'family.action'")
        existing = self._tasks.get(name)
        if existing is not None and existing is not cls:
            if (existing.__module__, existing.__qualname__) == (cls.__module__, cls.__qualname__):
                # the same class re-imported (module reload): keep the newest
                self._tasks[name] = cls
                return cls
            raise DuplicateTaskError(
                f"task {name!r} is defined twice: {existing.__module__}.{existing.__qualname__} "
                f"and {cls.__module__}.{cls.__qualname__}",
                "Try: give one of them another name",
            )
        self._tasks[name] = cls
        return cls

    def get(self, name: str) -> TaskClass:
        """The task class for ``name``.

        Built-in tasks are found through a generated index (``upkeeper.tasks._index``), so
        resolving a config imports only the task families its jobs use; anything else
        (plug-ins, an index out of date) falls back to importing everything.
        """
        cls = self._tasks.get(name)
        if cls is not None:
            return cls
        if not self._loaded:
            module = _task_index().get(name)
            if module is not None:
                try:
                    importlib.import_module(module)
                except ImportError:
                    pass
                cls = self._tasks.get(name)
                if cls is not None:
                    return cls
        self.load()
        try:
            return self._tasks[name]
        except KeyError:
            raise UnknownTaskError(
                f"unknown task {name!r}",
                "Try: one of " + ", ".join(sorted(self._tasks)) + " (see 'upkeeper tasks')",
            ) from None

    def __contains__(self, name: object) -> bool:
        self.load()
        return name in self._tasks

    def names(self) -> list[str]:
        self.load()
        return sorted(self._tasks)

    def __iter__(self) -> Iterator[TaskClass]:
        self.load()
        return iter([self._tasks[n] for n in sorted(self._tasks)])

    def load(self) -> None:
        """Import every built-in task family and every entry point, once."""
        if self._loaded:
            return
        self._loaded = True
        import upkeeper.tasks as pkg

        for mod in pkgutil.walk_packages(pkg.__path__, prefix="upkeeper.tasks."):
            importlib.import_module(mod.name)
        for ep in entry_points(group="upkeeper.tasks"):
            try:
                ep.load()
            except Exception as exc:  # a broken plug-in must not break upkeeper
                log.warning("could not load task plug-in %s: %s", ep.name, exc)


def _task_index() -> dict[str, str]:
    try:
        from upkeeper.tasks._index import TASK_MODULES
    except ImportError:
        return {}
    return TASK_MODULES


REGISTRY = TaskRegistry()

T = TypeVar("T", bound=TaskClass)


def task(cls: T) -> T:
    """Class decorator: register a task."""
    REGISTRY.register(cls)
    return cls
