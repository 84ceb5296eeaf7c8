"""SIGTERM unwinds a command like Ctrl-C.

``timeout``, ``kill`` and systemd stopping a unit send SIGTERM; its default action ends the process at
once, so no ``finally`` block ran: ``upkeeper run`` left its worker orphaned (which then killed its task
with no cleanup: a plaintext ``dump.rdb`` stayed in ``backup.work_dir``, a partial upload in the storage,
the run "running" in history) and ``backups verify`` left its decrypted archive and scratch database.
Raised as :class:`Terminated` (a :class:`KeyboardInterrupt`), it takes the path Ctrl-C takes: running
tasks are stopped (their workers SIGTERMed, which unwinds them too), work files removed, the run recorded
as interrupted, and the command exits 143 (128 + SIGTERM).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from upkeeper.shield import deferred, stop_or_defer

#: the exit code of a command stopped by SIGTERM, as a shell reports a process it ended
TERMINATED_EXIT = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM received: unwind as after Ctrl-C, then exit :data:`TERMINATED_EXIT`."""


class TermState:
    """What :func:`sigterm_unwinds` saw: ``received`` once a SIGTERM arrived (shared by nested uses: the
    command's own ``with`` and the CLI's around it)."""

    def __init__(self) -> None:
        self.received = False
        self.depth = 0


_STATE = TermState()


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[TermState]:
    """While inside, SIGTERM raises :class:`Terminated` in the main thread (once: a second SIGTERM must not
    cut short the cleanup the first one started — SIGKILL is there for that).  SIGTERM and Ctrl-C arriving
    while a cleanup runs (:func:`upkeeper.shield.shielded`) wait for it to end; a second Ctrl-C then cuts it
    short.  A no-op outside the main thread, where signal handlers cannot be set."""
    if threading.current_thread() is not threading.main_thread():
        yield _STATE
        return
    if _STATE.depth == 0:
        _STATE.received = False

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        if _STATE.received:
            return
        _STATE.received = True
        stop_or_defer(Terminated("terminated"))  # after the cleanup under way, if any (upkeeper.shield)

    def on_int(_signum: int, _frame: FrameType | None) -> None:
        if deferred():  # a stop already waits for the cleanup under way: pressed again, Ctrl-C cuts it short
            raise KeyboardInterrupt
        stop_or_defer(KeyboardInterrupt())  # after the cleanup under way, if any (upkeeper.shield)

    # a Python-level handler, never SIG_IGN: the processes this one starts would inherit an ignored signal
    old = signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C too waits for a cleanup under way (a scratch database being dropped): only where Python's own
    # handler is set (an ignored SIGINT — a command started in the background — stays ignored)
    old_int = signal.getsignal(signal.SIGINT)
    if old_int is signal.default_int_handler:
        signal.signal(signal.SIGINT, on_int)
    _STATE.depth += 1
    try:
        yield _STATE
    finally:
        _STATE.depth -= 1
        signal.signal(signal.SIGTERM, old)
        if old_int is signal.default_int_handler:
            signal.signal(signal.SIGINT, old_int)
