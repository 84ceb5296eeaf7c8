"""Scores and grades shared by the security tasks.

* :func:`grade_for` — the letter grade chart of the Mozilla HTTP Observatory
  (``httpobs/scanner/grader/grade.py``, ``mdn-http-observatory/src/grader/charts.js``):
  the score is floored to a multiple of 5, 100+ is A+, 90–99 A, 85–89 A-, 80–84 B+,
  70–79 B, 65–69 B-, 60–64 C+, 50–59 C, 45–49 C-, 40–44 D+, 30–39 D, 25–29 D-, 0–24 F.
* :func:`audit_score` — the overall score of ``security.audit``: 100 minus a penalty per
  finding (critical 15, warning 3, info 0 by default), each check family's penalty capped
  (30 by default) so that one noisy family cannot hide the state of the others.  The
  same grade chart turns it into a letter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from upkeeper.core.task import Finding

#: floor(score / 5) * 5 → grade; Source: Mozilla HTTP Observatory GRADE_CHART
GRADE_CHART: dict[int, str] = {
    100: "A+", 95: "A", 90: "A", 85: "A-", 80: "B+", 75: "B", 70: "B", 65: "B-", 60: "C+", 55: "C", 50: "C",
    45: "C-", 40: "D+", 35: "D", 30: "D", 25: "D-", 20: "F", 15: "F", 10: "F", 5: "F", 0: "F",
}  # fmt: skip

GRADE_ORDER = ["F", "D-", "D", "D+", "C-", "C", "C+", "B-", "B", "B+", "A-", "A", "A+"]


def grade_for(score: float) -> str:
    """Letter grade of a score, exactly as the Observatory computes it."""
    s = max(int(score), 0)
    return GRADE_CHART[min(s - s % 5, 100)]


def grade_at_least(grade: str, minimum: str) -> bool:
    return GRADE_ORDER.index(grade) >= GRADE_ORDER.index(minimum)


class ScoringOptions(BaseModel):
    """Penalties of the overall audit score."""

    model_config = ConfigDict(extra="forbid")

    critical: float = Field(15, ge=0, description="points lost per critical finding. Source: upkeeper default")
    warning: float = Field(3, ge=0, description="points lost per warning finding. Source: upkeeper default")
    info: float = Field(0, ge=0, description="points lost per info finding. Source: upkeeper default")
    family_cap: float = Field(
        30, gt=0, description="most points one check family can lose. Source: upkeeper default"
    )


@dataclass
class AuditScore:
    score: float
    grade: str
    penalties: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"score": self.score, "grade": self.grade, "penalties": dict(self.penalties)}


#: summary findings that restate others (never scored twice)
UNSCORED = frozenset({"security.headers.grade", "security.audit.score"})


def family_of(check: str) -> str:
    """``security.ssh.permit_root_login`` → ``ssh``; ``network.tls_expiry`` → ``tls``."""
    parts = check.split(".")
    head = parts[1] if len(parts) > 1 else parts[0]
    return head.split("_")[0] if parts[0] == "network" else head


def audit_score(findings: Iterable[Finding], options: ScoringOptions | None = None,
                families: Mapping[str, str] | None = None) -> AuditScore:
    """100 minus capped per-family penalties; never below 0."""
    opts = options or ScoringOptions()
    weight = {"critical": opts.critical, "warning": opts.warning, "info": opts.info}
    per_family: dict[str, float] = {}
    for f in findings:
        if f.check in UNSCORED:
            continue
        fam = (families or {}).get(f.check) or family_of(f.check)
        per_family[fam] = per_family.get(fam, 0.0) + weight[f.severity.value]
    capped = {k: min(v, opts.family_cap) for k, v in per_family.items() if v > 0}
    score = max(0.0, 100.0 - sum(capped.values()))
    return AuditScore(score=round(score, 1), grade=grade_for(score), penalties=capped)
