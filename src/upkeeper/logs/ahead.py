"""The scan helpers a log job's run will need, told from its options as written in the config file, and started
before the run is sent.

A helper is a new interpreter that imports pyarrow or a PostgreSQL parser before it can scan its first unit (~0.2 s
of CPU).  ``upkeeper run`` starts them at its very start (:func:`start`, from :func:`upkeeper.core.worker.
start_ahead`): for its first ~0.4 s it imports SQLAlchemy, pydantic and the config models on one core while the
other is idle, and the helpers import theirs there; the worker it then forks takes them over (see
:mod:`upkeeper.core.adopted`).  The worker's own head start (the tasks' ``head_start``) uses the same plans and
starts only the helpers still missing.  Light on purpose: this module and :mod:`upkeeper.logs.pgformat` are all
that is imported before the helpers start.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from upkeeper.logs import parallel, pgformat, sources

#: the accumulator module of access logs
ACCESS = "upkeeper.logs.access"


def cpus() -> int:
    """CPUs this process may run on (a head start needs a second one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _helpers(options: Mapping[str, Any], size: int, minimum: int) -> int:
    """Helpers a scan of ``size`` bytes starts (``workers`` as written, else one process per CPU, at most
    :data:`~upkeeper.logs.parallel.DEFAULT_MAX_WORKERS`): none below ``minimum`` or on one CPU."""
    workers = options.get("workers", 0)
    procs = workers if isinstance(workers, int) and not isinstance(workers, bool) and workers > 0 \
        else parallel.default_workers()
    if procs < 2 or size < minimum:
        return 0
    return max(0, min(procs - 1, cpus() - 1))


def access_plan(options: Mapping[str, Any], target: Mapping[str, Any]) -> tuple[int, int]:
    """For a ``logs.nginx`` job: the helpers a read of the whole log (``incremental: false``) starts, and the size
    of its live file (0 when it is not known: a glob, no file, an option of the wrong type)."""
    if cpus() < 2:
        return 0, 0
    path = options.get("access_log") or target.get("access_log")
    if not isinstance(path, str) or not path or sources.is_glob(path):
        return 0, 0
    rotated = options.get("rotated", True) is not False
    files = sources.discover(path, rotated=rotated) if options.get("incremental") is False else []
    size = sum(f.size * (8 if f.gz else 1) for f in files)  # (compressed text: ~8x, as parallel's units count)
    helpers = _helpers(options, size, parallel.MIN_PARALLEL)
    try:
        size = max(size, os.stat(path).st_size)
    except OSError:
        pass
    return helpers, size


def postgres_plan(options: Mapping[str, Any], target: Mapping[str, Any]) -> tuple[str, int]:
    """For a ``logs.postgres`` job: the accumulator module and the helpers a read of the whole ``log_file``
    (``incremental: false``) starts; ("", 0) for a run that asks the server where its log is, or an incremental one
    (it does not know how much is new before it reads its cursors)."""
    path = options.get("log_file")
    if cpus() < 2 or options.get("incremental") is not False or not isinstance(path, str) or not path \
            or sources.is_glob(path):
        return "", 0
    fmt = options.get("format")
    files = sources.discover(path, rotated=options.get("rotated", True) is not False)
    if fmt not in pgformat.SCANNERS:  # (auto, or what the run refuses)
        fmt = pgformat.format_of(path)
        if fmt == "stderr" and pgformat.syslog_file(files):
            fmt = "syslog"
    kind, minimum = pgformat.SCANNERS[fmt]
    return kind, _helpers(options, sum(f.size * (8 if f.gz else 1) for f in files), minimum)


def _access(options: Mapping[str, Any], target: Mapping[str, Any]) -> tuple[str, int]:
    return ACCESS, access_plan(options, target)[0]


#: the tasks whose helpers started ahead read their log ahead (their accumulator module has a ``speculation``)
SPECULATE = frozenset({"logs.nginx", "logs.postgres"})

#: the plan of each task whose runs scan logs: (accumulator module, helpers to start)
PLANS: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any]], tuple[str, int]]] = {
    "logs.nginx": _access,
    "logs.postgres": postgres_plan,
}


def start(jobs: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> int:
    """Start the helpers the hinted ``jobs`` (task, options, target: as written) will need, for a worker forked
    afterwards to take over (:func:`upkeeper.logs.parallel.prestart` with ``ahead``); how many were started.  Best
    effort: what fails is left to the worker's head start and the scan."""
    from upkeeper.core.adopted import supported

    if not supported():
        return 0
    started = 0
    for task, options, target in jobs:
        plan = PLANS.get(task)
        if plan is None:
            continue
        try:
            kind, count = plan(options, target)
        except Exception:
            continue
        if count > 0:  # (the helper of the first such job reads the log ahead: see upkeeper.logs.speculate)
            started += parallel.prestart(kind, count, ahead=True,
                                         speculate=(options, target) if task in SPECULATE and not started else None)
    return started
