"""Fill a history database with N runs of J jobs through the real History API (for retention measurements)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

from upkeeper.core.history import History, NewRun
from upkeeper.core.task import Finding, Result, Severity


def fill(h: History, runs: int, jobs: int = 10, every: timedelta = timedelta(minutes=5),
         end: datetime | None = None) -> None:
    end = end or datetime.now(UTC)
    start = end - every * (runs // jobs)
    log = "line of a task log with some words in it\n" * 60  # ~2.5 KB, like a real excerpt
    for i in range(runs // jobs):
        t = start + every * i
        won = h.claim([NewRun(f"job{j}", "debug.noop", None, t, status="running") for j in range(jobs)], "o:1:1", "n")
        for _, rid in won:
            res = Result(summary="ok: 3 checks", metrics={f"m{k}": float(k) for k in range(8)},
                         findings=[Finding("c", Severity.WARNING, "subj", "a message about it", "fix it")] * 2)
            h.finish_run(rid, status="ok", result=res, finished_at=t + timedelta(seconds=3), started_at=t,
                         log_excerpt=log)


if __name__ == "__main__":
    fill(History(sys.argv[1]), int(sys.argv[2]))
