"""Patch SLA: first-seen time per vulnerability, due dates, escalation when overdue.

Defaults (critical 24 h, high 72 h, medium 1 week) are the maintenance procedures' patch
SLAs.  The ledger lives in the job's state (``vulns``): every vulnerability ever seen with
its first and last sighting and, once it disappears, when it was fixed — the evidence the
compliance report reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from upkeeper.config.types import Duration
from upkeeper.core.task import StateStore

STATE_KEY = "vulns"
KEEP_FIXED = timedelta(days=400)
SEVERITY_ALIASES = {"moderate": "medium", "info": "low", "none": "low"}


class SlaOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    critical: Duration = Field(default=timedelta(hours=24), description="time to fix a critical vulnerability. "
                               "Source: the maintenance procedures' patch SLA")
    high: Duration = Field(default=timedelta(hours=72), description="time to fix a high one. Source: patch SLA")
    medium: Duration = Field(default=timedelta(days=7), description="time to fix a medium one. Source: patch SLA")
    low: Duration | None = Field(None, description="time to fix a low one (default: no SLA). "
            "Source: upkeeper (not set by default)")

    def due(self, severity: str) -> timedelta | None:
        sev = SEVERITY_ALIASES.get(severity, severity)
        return {"critical": self.critical, "high": self.high, "medium": self.medium, "low": self.low}.get(sev)


@dataclass
class Vuln:
    key: str
    ecosystem: str
    package: str
    severity: str  # critical | high | medium | low | unknown
    title: str
    version: str = ""
    url: str = ""
    fixed_in: list[str] = field(default_factory=list)
    source: str = ""
    aliases: list[str] = field(default_factory=list)
    remediation: str = ""  # tool-specific advice (npm audit fix …); default: "upgrade <package> to <fixed_in>"


@dataclass
class Tracked:
    vuln: Vuln
    first_seen: datetime
    due: datetime | None

    def overdue(self, now: datetime) -> bool:
        return self.due is not None and now > self.due


def normalize(severity: str) -> str:
    s = (severity or "unknown").lower()
    return SEVERITY_ALIASES.get(s, s)


def _aware_time(v: Any) -> bool:
    try:
        return isinstance(v, str) and datetime.fromisoformat(v).tzinfo is not None
    except ValueError:
        return False


def usable_ledger(saved: Any) -> dict[str, dict[str, Any]]:
    """The vulnerabilities a run recorded, as far as they can be used: read back from history (another version's,
    or damaged), the ledger may be anything.  An entry without a first sighting with a zone, or with a fix time
    that is not one, is left out (a vulnerability still reported is then first seen again now)."""
    if not isinstance(saved, dict):
        return {}
    return {k: e for k, e in saved.items()
            if isinstance(e, dict) and _aware_time(e.get("first_seen"))
            and (not e.get("fixed_at") or _aware_time(e.get("fixed_at")))
            and isinstance(e.get("severity", "unknown"), str)}


def track(state: StateStore, vulns: list[Vuln], now: datetime, sla: SlaOptions,
          audited_sources: set[str] | None = None) -> list[Tracked]:
    """Record sightings, mark vanished ones fixed, return the open ones with their due dates.

    Only a vulnerability whose source was audited successfully in this run can be marked fixed: an
    unreachable advisory database proves nothing.
    """
    ledger = usable_ledger(state.get(STATE_KEY))
    current = {v.key: v for v in vulns}
    out = []
    for key, v in current.items():
        entry = ledger.get(key)
        if entry is None or entry.get("fixed_at"):
            entry = {"first_seen": now.isoformat(), "package": v.package, "ecosystem": v.ecosystem,
                     "title": v.title[:200], "source": v.source}
        entry.update({"last_seen": now.isoformat(), "severity": normalize(v.severity), "fixed_at": None})
        ledger[key] = entry
        first = datetime.fromisoformat(entry["first_seen"])
        window = sla.due(normalize(v.severity))
        out.append(Tracked(v, first, first + window if window is not None else None))
    for key, entry in list(ledger.items()):
        if key in current:
            continue
        if audited_sources is not None and entry.get("source") not in audited_sources:
            continue
        if not entry.get("fixed_at"):
            entry["fixed_at"] = now.isoformat()
        elif now - datetime.fromisoformat(entry["fixed_at"]) > KEEP_FIXED:
            del ledger[key]
    state.set(STATE_KEY, ledger)
    return out


def compliance(ledger: dict[str, dict[str, Any]], sla: SlaOptions, start: datetime, end: datetime) -> dict[str, Any]:
    """Patch-SLA figures for a period: fixed in time, fixed late, open overdue, open within SLA."""
    fixed_ok = fixed_late = open_overdue = open_ok = 0
    rows = []
    for key, e in usable_ledger(ledger).items():
        first = datetime.fromisoformat(e["first_seen"])
        fixed = datetime.fromisoformat(e["fixed_at"]) if e.get("fixed_at") else None
        window = sla.due(e.get("severity", "unknown"))
        if first > end or (fixed is not None and fixed < start):
            continue
        due = first + window if window is not None else None
        if fixed is not None and fixed <= end:
            late = due is not None and fixed > due
            fixed_late += late
            fixed_ok += not late
            status = "fixed late" if late else "fixed in time"
        else:
            late = due is not None and end > due
            open_overdue += late
            open_ok += not late
            status = "open, overdue" if late else "open"
        rows.append({"key": key, "package": e.get("package"), "severity": e.get("severity"),
                     "first_seen": e["first_seen"], "fixed_at": e.get("fixed_at"),
                     "due": due.isoformat() if due else None, "status": status})
    total = fixed_ok + fixed_late + open_overdue + open_ok
    pct = 100.0 * (fixed_ok + open_ok) / total if total else 100.0
    return {"fixed_in_time": fixed_ok, "fixed_late": fixed_late, "open_overdue": open_overdue,
            "open_within_sla": open_ok, "compliance_pct": round(pct, 1), "rows": rows}
