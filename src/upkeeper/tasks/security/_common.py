"""Shared helpers of the security checks: guarded execution and small parsing utilities."""

from __future__ import annotations

import ipaddress
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from upkeeper.core.task import Finding, Severity
from upkeeper.errors import UpkeeperError
from upkeeper.redact import redact


@dataclass
class CheckOutput:
    """What one check family returns: findings, metrics and a one-line summary."""

    findings: list[Finding] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    summary: str = ""

    def extend(self, other: CheckOutput, prefix: str = "") -> None:
        self.findings.extend(other.findings)
        for k, v in other.metrics.items():
            self.metrics[f"{prefix}{k}"] = v


def guarded(name: str, subject: str, fn: Callable[[], CheckOutput], log: logging.Logger | None = None) -> CheckOutput:
    """Run one check; an exception becomes a warning finding instead of stopping the others."""
    try:
        return fn()
    except UpkeeperError as exc:
        msg = redact(exc.message)
        hint = redact(exc.hint or "").removeprefix("Try: ")
    except Exception as exc:  # a failing check must never stop the others
        msg = f"{type(exc).__name__}: {redact(str(exc))}"
        hint = ""
        if log is not None:
            log.debug("check %s failed:\n%s", name, redact(traceback.format_exc()))
    if log is not None:
        log.warning("check %s on %s failed: %s", name, subject, msg)
    return CheckOutput(
        findings=[Finding(f"{name}.check_failed", Severity.WARNING, subject, f"{name} could not run: {msg}",
                          hint or "see the run's log; fix access or the job's options")],
        summary=f"{name}: error",
    )


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1, 'localhost' and unix sockets (paths)."""
    a = address.strip().strip("[]")
    if a in ("localhost", "") or a.startswith("/"):
        return True
    try:
        return ipaddress.ip_address(a.split("%")[0]).is_loopback
    except ValueError:
        try:
            return ipaddress.ip_network(a, strict=False).subnet_of(ipaddress.ip_network("127.0.0.0/8"))  # type: ignore[arg-type]
        except (ValueError, TypeError):
            try:
                return ipaddress.ip_network(a, strict=False) == ipaddress.ip_network("::1/128")
            except ValueError:
                return False


def count_by_severity(findings: list[Finding]) -> dict[str, int]:
    out = {"critical": 0, "warning": 0, "info": 0}
    for f in findings:
        out[f.severity.value] += 1
    return out


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
