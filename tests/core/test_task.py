"""Shared pieces of the task contract."""

from __future__ import annotations

import logging

import pytest

from upkeeper.core.task import CheckOutput, Finding, Result, Severity, Status, run_checks


def test_one_failing_check_never_stops_the_others(caplog: pytest.LogCaptureFixture) -> None:
    def first(env: int) -> CheckOutput:
        return CheckOutput(metrics={"a": float(env)}, notes=["first ran"])

    def broken(env: int) -> CheckOutput:
        raise RuntimeError("permission denied for pg_stat_activity")

    def last(env: int) -> CheckOutput:
        return CheckOutput(findings=[Finding("x.big", Severity.WARNING, "s", "m", "r")], notes=["last ran"])

    def failed(name: str, exc: Exception) -> Finding:
        return Finding("x.check_failed", Severity.WARNING, name, f"the {name} check failed: {exc}", "see the log")

    with caplog.at_level(logging.WARNING):
        out = run_checks([("first", first), ("broken", broken), ("last", last)], 7, failed, logging.getLogger("t"))
    assert out.metrics == {"a": 7.0}
    assert out.notes == ["first ran", "last ran"]
    assert [f.check for f in out.findings] == ["x.check_failed", "x.big"]
    assert "permission denied" in out.findings[0].message
    assert "check broken failed" in caplog.text
    assert Result(findings=out.findings).final_status == Status.WARN
