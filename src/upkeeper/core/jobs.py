"""Resolve the config's jobs: task classes, validated options, targets, schedules, policies.

This is where cross-references are checked; every problem is located
(file, line, ``jobs -> NAME -> field``) exactly like a structural error.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from upkeeper.config.loader import LineMap, find_config, lines_for, load_config, validation_problems
from upkeeper.config.models import Config, HostTarget, TargetConfig
from upkeeper.config.notify import check_references
from upkeeper.config.storage import unknown_storages
from upkeeper.config.types import format_duration
from upkeeper.core.schedule import Schedule, ScheduleError, jitter_offset, parse_schedule, validate_timezone
from upkeeper.core.task import REGISTRY, TaskClass
from upkeeper.errors import ConfigError, ConfigProblem, UnknownTaskError, UsageError

DEFAULT_METRICS_RETENTION = timedelta(days=90)


@dataclass(frozen=True)
class Job:
    """A job with every reference resolved and every default applied."""

    name: str
    task_name: str
    task_cls: TaskClass
    options: BaseModel
    target_name: str | None
    target: TargetConfig | None
    schedule: Schedule | None
    timezone: str
    enabled: bool
    category: str
    tags: tuple[str, ...]
    timeout: timedelta
    retries: int
    retry_delay: timedelta
    retry_max_delay: timedelta
    catch_up: str
    catch_up_grace: timedelta | None
    jitter: timedelta
    metrics_retention: timedelta
    description: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    window: str | None = None
    missed_grace: timedelta | None = None
    #: after a stop's or timeout's SIGTERM, until the run's process group is SIGKILLed (defaults.kill_grace)
    kill_grace: timedelta = timedelta(seconds=5)

    @property
    def jitter_offset(self) -> timedelta:
        return jitter_offset(self.name, self.jitter) if self.jitter else timedelta(0)

    @property
    def exclusive(self) -> bool:
        return bool(self.task_cls.exclusive)

    def retry_delay_for(self, attempt: int) -> timedelta:
        """Exponential backoff: delay before attempt ``attempt`` (2 = first retry)."""
        factor: int = 2 ** max(0, attempt - 2)
        delay: timedelta = self.retry_delay * factor
        return min(delay, self.retry_max_delay)

    def effective_grace(self) -> timedelta:
        if self.catch_up_grace is not None:
            return self.catch_up_grace
        if self.schedule is not None:
            period: timedelta = self.schedule.period()
            return period
        return timedelta(hours=1)


@dataclass
class Setup:
    """A loaded config and its resolved jobs: what every command works from."""

    config: Config
    jobs: dict[str, Job]
    #: what ``config check`` points out about a valid configuration (:meth:`Task.config_notes`)
    notes: list[ConfigProblem] = field(default_factory=list)

    @property
    def source(self) -> Path | None:
        return self.config.source

    def job(self, name: str) -> Job:
        try:
            return self.jobs[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self.jobs), n=1)
            known = sorted(self.jobs)
            listed = ", ".join(known) if len(known) <= 12 else "'upkeeper jobs' lists them"
            hint = (f"Try: {close[0]!r} (configured jobs: {listed})" if close else
                    f"Try: one of the configured jobs: {listed}" if known else
                    "Try: add it under 'jobs:' in the config (no job is configured)")
            raise UsageError(f"no job named {name!r} in {self.source or 'the config'}", hint) from None

    def select(self, names: Iterable[str]) -> list[Job]:
        return [self.job(n) for n in names]


def load_setup(path: str | Path | None) -> Setup:
    """Find, read and resolve the config (``--config``, ``$UPKEEPER_CONFIG``, ./upkeeper.yaml …)."""
    return build_setup(load_config(find_config(path)))


def build_setup(config: Config) -> Setup:
    lines = lines_for(config)
    problems: list[ConfigProblem] = []
    try:
        validate_timezone(config.timezone)
    except ScheduleError as exc:
        problems.append(lines.problem(("timezone",), exc.args[0], exc.hint))
    jobs: dict[str, Job] = {}
    notes: list[ConfigProblem] = []
    for name, jc in config.jobs.items():
        base = ("jobs", name)
        before = len(problems)
        try:
            cls = REGISTRY.get(jc.task)
        except UnknownTaskError as exc:
            close = difflib.get_close_matches(jc.task, REGISTRY.names(), n=1)
            hint = f"Try: {close[0]!r}" if close else exc.hint
            problems.append(lines.problem((*base, "task"), f"unknown task {jc.task!r}", hint))
            continue

        # target
        target: TargetConfig | None = None
        if jc.target is not None:
            target = config.targets.get(jc.target)
            if target is None:
                known = ", ".join(sorted(config.targets)) or "none defined"
                close = difflib.get_close_matches(jc.target, list(config.targets), n=1)
                problems.append(
                    lines.problem(
                        (*base, "target"),
                        f"unknown target {jc.target!r}",
                        f"Try: {close[0]!r}" if close else f"Try: one of the targets ({known}), or add it under 'targets'",
                    )
                )
            elif cls.target_kinds and target.kind not in cls.target_kinds:
                problems.append(
                    lines.problem(
                        (*base, "target"),
                        f"task {jc.task} works on {' or '.join(cls.target_kinds)} targets, "
                        f"but {jc.target!r} is a {target.kind} target",
                        "Try: "
                        + _suggest_targets(config, cls.target_kinds),
                    )
                )
        elif cls.target_kinds:
            if "host" in cls.target_kinds:
                target = HostTarget()
            else:
                problems.append(
                    lines.problem(
                        base,
                        f"job needs a target of kind {' or '.join(cls.target_kinds)} (task {jc.task})",
                        "Try: add 'target: NAME'; " + _suggest_targets(config, cls.target_kinds),
                    )
                )

        # options
        options: BaseModel | None = None
        try:
            options = cls.Options.model_validate(jc.options)
        except ValidationError as exc:
            problems.extend(validation_problems(exc, cls.Options, jc.options, lines, prefix=(*base, "options")))
        else:
            for option, message, hint in cls.config_problems(options, config):
                problems.append(lines.problem((*base, "options", option), message, hint))
            if target is not None:
                for option, message, hint in cls.target_problems(options, target):
                    problems.append(lines.problem((*base, "options", option), message, hint))
                for option, message, hint in cls.config_notes(options, config, jc.target, target):
                    notes.append(lines.problem((*base, "options", option), message, hint))

        # schedule
        tz = jc.timezone or config.timezone
        schedule: Schedule | None = None
        if jc.timezone is not None:
            try:
                validate_timezone(jc.timezone)
            except ScheduleError as exc:
                problems.append(lines.problem((*base, "timezone"), exc.args[0], exc.hint))
        if jc.schedule is not None:
            try:
                schedule = parse_schedule(jc.schedule, tz)
            except ScheduleError as exc:
                if "timezone" not in exc.args[0]:
                    problems.append(lines.problem((*base, "schedule"), exc.args[0], exc.hint))
                else:  # the timezone is reported on its own; the expression is still checked, in UTC
                    try:
                        parse_schedule(jc.schedule, "UTC")
                    except ScheduleError as utc_exc:
                        problems.append(lines.problem((*base, "schedule"), utc_exc.args[0], utc_exc.hint))

        if len(problems) > before or options is None:
            continue
        d = config.defaults
        jobs[name] = Job(
            name=name,
            task_name=jc.task,
            task_cls=cls,
            options=options,
            target_name=jc.target,
            target=target,
            schedule=schedule,
            timezone=tz,
            enabled=jc.enabled,
            category=jc.category or cls.category,
            tags=tuple(jc.tags),
            timeout=jc.timeout
            or (timedelta(seconds=cls.default_timeout) if cls.default_timeout else None)
            or d.timeout,
            retries=d.retries if jc.retries is None else jc.retries,
            retry_delay=jc.retry_delay if jc.retry_delay is not None else d.retry_delay,  # 0: at once
            retry_max_delay=d.retry_max_delay,
            catch_up=jc.catch_up or d.catch_up,
            catch_up_grace=jc.catch_up_grace if jc.catch_up_grace is not None else d.catch_up_grace,
            jitter=jc.jitter if jc.jitter is not None else d.jitter,
            metrics_retention=jc.metrics_retention
            or getattr(cls, "metrics_retention", None)
            or DEFAULT_METRICS_RETENTION,
            description=jc.description,
            window=jc.window,
            missed_grace=jc.missed_grace,
            kill_grace=jc.kill_grace if jc.kill_grace is not None else d.kill_grace,
        )
    problems.extend(_shared_series(jobs, lines))
    problems.extend(_retention_problems(config, jobs, lines))
    problems.extend(check_references(config, lines))
    problems.extend(lines.problem(("backup", "storages", i), message, hint)
                    for i, message, hint in unknown_storages(config.backup.storages, config.storages))
    if problems:
        raise ConfigError.from_problems(problems)
    notes.extend(_exposed_secret_files(config, lines))
    return Setup(config=config, jobs=jobs, notes=notes)


def _exposed_secret_files(config: Config, lines: LineMap) -> list[ConfigProblem]:
    """A note for each secret file of the config that users other than its owner may read (``config check``)."""
    from upkeeper.config.secret_files import exposure, secret_files

    out = []
    for sf in secret_files(config):
        found = exposure(sf.path)
        if found is not None:
            mode, words = found
            out.append(lines.problem(sf.where, f"{sf.path} holds a secret and is {words} (mode {mode:04o})",
                                     f"chmod 600 {sf.path} (owned by the user upkeeper runs as)"))
    return out


def _shared_series(jobs: dict[str, Job], lines: Any) -> list[ConfigProblem]:
    """Jobs of one backup task on one target writing the same series with different options (paths, retention
    …): retention runs per series, so each job would delete the other's backups.  Identical options (one set
    on two schedules) are fine."""
    first: dict[tuple[str, str, str], Job] = {}
    problems: list[ConfigProblem] = []
    for job in jobs.values():
        key = job.task_cls.series_key(job.options)
        if key is None:
            continue
        option, series = key
        target = job.target_name or "host"
        other = first.setdefault((job.task_name, target, series), job)
        if other is job or other.options == job.options:
            continue
        problems.append(lines.problem(
            ("jobs", job.name, "options", option),
            f"jobs {other.name!r} and {job.name!r} ({job.task_name} on target {target!r}) both write the backup "
            f"set {series!r} with different options; each run's retention would delete the other job's backups",
            f"Try: give each job a distinct '{option}' (e.g. {option}: {job.name})"))
    return problems


def _retention_problems(config: Config, jobs: dict[str, Job], lines: Any) -> list[ConfigProblem]:
    """Windows of runs read back from history that run retention would cut short (the compliance report's
    period is checked by its task).  The backup success rate would claim a window it has not got."""
    keep = config.history_retention.runs
    window = config.notifications.backup.success_rate_window
    if keep is None or keep >= window or not any(j.category == "backup" for j in jobs.values()):
        return []
    return [lines.problem(
        ("notifications", "backup", "success_rate_window"),
        f"the backup success rate is computed over notifications -> backup -> success_rate_window "
        f"({format_duration(window)}), but history_retention -> runs keeps runs {format_duration(keep)}: the rate "
        "would count only the runs still kept while claiming the whole window",
        f"Try: history_retention -> runs: {format_duration(window)} (or longer), or success_rate_window: "
        f"{format_duration(keep)} (or shorter)")]


def _suggest_targets(config: Config, kinds: tuple[str, ...]) -> str:
    names = [n for n, t in config.targets.items() if t.kind in kinds]
    if names:
        return "one of " + ", ".join(names)
    return f"add a target with 'kind: {kinds[0]}' under 'targets'"
