"""execute_request: the piece of a worker process that runs one task."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from upkeeper.config.loader import load_text
from upkeeper.core.execute import WorkRequest, execute_request
from upkeeper.core.jobs import build_setup

CONFIG = "jobs:\n  nap:\n    task: debug.sleep\n    options: {seconds: 0}\n"


def test_task_logs_reach_the_caller_and_no_logger_outlives_its_run() -> None:
    setup = build_setup(load_text(CONFIG))
    job = setup.jobs["nap"]
    registry = logging.Logger.manager.loggerDict
    before = set(registry)
    sent: list[tuple[Any, ...]] = []
    for run_id in range(1, 51):
        req = WorkRequest(run_id=run_id, job=job, config=setup.config, history_url=None,
                          scheduled_for=datetime.now(UTC))
        assert execute_request(req, sent.append).final_status.value == "ok"
    logs = [m for m in sent if m[0] == "log"]
    assert len(logs) == 50 and logs[0][1] == "INFO" and "sleeping 0.0s" in logs[0][2]
    # a long-lived worker runs thousands of tasks: per-run loggers must not pile up in logging's registry
    assert not {name for name in set(registry) - before if name.startswith("upkeeper.run.")}
