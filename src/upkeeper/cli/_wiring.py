"""Where the optional engines plug into runs: notification listeners and admission policies.

Kept at the top layer so ``core`` never imports ``notify``: the runner knows
listeners only by the RunListener protocol, the daemon policies only by the
AdmissionPolicy protocol and periodic callbacks only as :class:`Periodic`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from upkeeper.core.history import History
from upkeeper.core.jobs import Setup
from upkeeper.core.runner import RunListener
from upkeeper.notify.policy import build_policies as _window_policies

if TYPE_CHECKING:  # the daemon's; 'upkeeper run' needs only build_listeners
    from upkeeper.core.daemon import AdmissionPolicy, Periodic


def build_listeners(setup: Setup, history: History, *, background: bool = False) -> list[RunListener]:
    """Listeners told about every finished run (the notification engine).

    ``background``: notifications are sent from a thread of their own (the daemon), so a
    slow channel never holds a run slot; call :func:`stop_listeners` before exiting.
    """
    if not setup.config.notifications.channels:  # no channel: no engine (nor its import, ~25 ms per command)
        return []
    from upkeeper.notify.engine import NotificationEngine

    engine = NotificationEngine(setup, history)
    if background:
        engine.start_background_sending()
    return [engine]


def stop_listeners(listeners: Sequence[RunListener], timeout: float) -> None:
    """Let queued notifications go out (within ``timeout``); what is left is sent by the retry path."""
    from upkeeper.notify.engine import NotificationEngine

    for lst in listeners:
        if isinstance(lst, NotificationEngine):
            lst.stop_background_sending(timeout)


def build_policies(setup: Setup, history: History) -> list[AdmissionPolicy]:
    """Policies asked at the daemon's decision point (maintenance windows, blackouts)."""
    return list(_window_policies(setup.config, history))


def build_periodic(setup: Setup, history: History, listeners: Sequence[RunListener]) -> list[Periodic]:
    """The daemon's periodic callbacks: escalation timers, missed runs, window notices, delivery retries."""
    from upkeeper.core.daemon import Periodic
    from upkeeper.notify.engine import NotificationEngine

    every = setup.config.notifications.check_every
    return [Periodic("notifications", every, lst.tick) for lst in listeners if isinstance(lst, NotificationEngine)]
