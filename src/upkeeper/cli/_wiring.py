"""Where the optional engines plug into runs: notification listeners and admission policies.

Kept at the top layer so ``core`` never imports ``notify``: the runner knows
listeners only by the RunListener protocol, the daemon policies only by the
AdmissionPolicy protocol.
"""

from __future__ import annotations

from upkeeper.core.daemon import AdmissionPolicy
from upkeeper.core.history import History
from upkeeper.core.jobs import Setup
from upkeeper.core.runner import RunListener


def build_listeners(setup: Setup, history: History) -> list[RunListener]:
    """Listeners told about every finished run (the notification engine)."""
    return []


def build_policies(setup: Setup, history: History) -> list[AdmissionPolicy]:
    """Policies asked at the daemon's decision point (maintenance windows, blackouts)."""
    return []
