"""Cleanup that a stop signal must not cut short.

A worker's SIGTERM (:func:`upkeeper.core.worker._on_term`) and a command's
(:func:`upkeeper.cli._signals.sigterm_unwinds`) raise an exception in the main thread wherever it is, so that
the task unwinds and its cleanup runs.  Arriving while a cleanup already runs — a verify dropping its scratch
database after the checks ended, a work directory of plaintext being removed, a partial upload being aborted
after a failure — that exception cut the cleanup short and left what it was removing.

Code inside :func:`shielded` (a context manager, or a decorator) is not interrupted: the handlers hand the
exception to :func:`stop_or_defer`, which keeps it while any shielded section runs in the main thread and
raises it once the outermost one ends.  What bounds a cleanup that hangs is the SIGKILL that follows the stop
(the executor's after the job's ``kill_grace``, systemd's after TimeoutStopSec).

Only the main thread's sections count, on purpose: Python runs signal handlers in the main thread, so only it is
ever interrupted by a stop, and it is the thread that runs the task.  A helper thread's section (an upload's
drain, a verify's space watch dropping the scratch database) is never cut by the stop's exception, so it needs
no shield; counted, it would delay the task's stop for as long as that helper works, and its end would raise the
stop in the helper, where nothing unwinds the task.

A stop is acted on at once until the shield is entered: a cleanup whose ``finally`` or ``except``
had just begun when the stop arrived (a few bytecodes earlier, no I/O between) is skipped, and
what it removes is left to the next sweep (work directories, partial uploads, scratch databases are all found and
removed later).  A stop that is itself what started the unwinding is raised once only (the worker's
:func:`~upkeeper.core.worker._on_term`, a command's SIGTERM), so it never cuts the cleanup it started.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_depth = 0
_pending: BaseException | None = None


def _main() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """While inside (in the main thread, where signal handlers run), a stop signal is remembered, not raised;
    it is raised when the outermost shielded section ends.  A no-op in other threads (no handler raises
    there)."""
    global _depth, _pending
    if not _main():
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending is not None:
            exc, _pending = _pending, None
            raise exc


def stop_or_defer(exc: BaseException) -> None:
    """For a signal handler: raise ``exc`` now, or, inside a shielded section, when it ends."""
    global _pending
    if _depth > 0 and _main():
        if _pending is None:
            _pending = exc
        return
    raise exc


def deferred() -> bool:
    """Is a stop waiting for a shielded section to end?"""
    return _pending is not None
