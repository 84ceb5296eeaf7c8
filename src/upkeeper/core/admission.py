"""Admission policies consulted at the daemon's single decision point.

Each policy may admit, defer (until a time) or skip a due occurrence.
Maintenance windows and blackouts are such policies.
"""

from __future__ import annotations

from upkeeper.core.daemon import AdmissionPolicy
from upkeeper.core.jobs import Setup


def build_policies(setup: Setup) -> list[AdmissionPolicy]:
    """The policies for this config, in the order they are asked."""
    return []
