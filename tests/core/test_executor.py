"""WorkerPool: each job travels to a worker once per config; later runs of it name it only."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from typing import Any

from upkeeper.config.loader import load_text
from upkeeper.core.execute import WorkRequest
from upkeeper.core.executor import WorkerPool
from upkeeper.core.jobs import Setup, build_setup

CONFIG = "jobs:\n  a:\n    task: debug.noop\n    options: {message: 'from a'}\n  b:\n    task: debug.noop\n"


def _request(setup: Setup, job: str) -> WorkRequest:
    return WorkRequest(run_id=None, job=setup.jobs[job], config=setup.config, history_url=None,
                       scheduled_for=datetime.now(UTC))


def test_a_job_is_sent_once_per_worker_and_config() -> None:
    first, second = build_setup(load_text(CONFIG)), build_setup(load_text(CONFIG.replace("from a", "a again")))
    pool = WorkerPool(size=1)
    sent: list[tuple[Any, ...]] = []
    try:
        out = pool.execute(_request(first, "a"), timeout=60)
        assert out.status == "ok" and out.result.summary == "from a"
        w = pool._idle.queue[0]
        real_send, real_send_bytes = w.conn.send, w.conn.send_bytes

        def record(msg: tuple[Any, ...]) -> None:
            sent.append(msg)
            real_send(msg)

        def record_bytes(buf: bytes) -> None:
            sent.append(pickle.loads(buf))
            real_send_bytes(buf)

        w.conn.send = record  # type: ignore[method-assign,assignment]
        w.conn.send_bytes = record_bytes  # type: ignore[method-assign,assignment]
        for setup, job, summary in ((first, "a", "from a"), (first, "b", "nothing to do"), (first, "a", "from a"),
                                    (second, "a", "a again")):
            out = pool.execute(_request(setup, job), timeout=60)
            assert out.status == "ok", out.result.summary
            assert out.result.summary == summary  # the worker ran the right job, with its own options
    finally:
        pool.shutdown()
    runs = [m for m in sent if m[0] == "run"]
    # a: known already; b: sent; a: known; then a new config: sent again with it
    assert [(m[3], m[4] is not None) for m in runs] == [("a", False), ("b", True), ("a", False), ("a", True)]
    assert all(m[1].job is None and m[1].config is None for m in runs)
    assert [m[0] for m in sent if m[0] == "config"] == ["config"]  # only the second config travelled
