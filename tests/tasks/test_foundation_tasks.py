"""The first real tasks against real services: postgres.ping, postgres.vacuum, host.disk."""

from __future__ import annotations

import threading
import time
from typing import Any

from upkeeper.config.loader import load_text
from upkeeper.core.execute import WorkRequest, execute_request
from upkeeper.core.jobs import build_setup
from upkeeper.core.task import Result
from upkeeper.sandbox.postgres import PostgresCluster


def run_task(config_yaml: str, job: str) -> Result:
    setup = build_setup(load_text(config_yaml))
    j = setup.jobs[job]
    from datetime import UTC, datetime

    req = WorkRequest(run_id=None, job=j, config=setup.config, history_url=None, scheduled_for=datetime.now(UTC))
    return execute_request(req, lambda msg: None)


def pg_config(pg: PostgresCluster, db: str, jobs: str) -> str:
    return (f"targets:\n  db:\n    kind: postgres\n    host: 127.0.0.1\n    port: {pg.port}\n"
            f"    user: postgres\n    dbname: {db}\njobs:\n{jobs}")


def test_ping_reports_version_uptime_size(pg: PostgresCluster, pg_db: str) -> None:
    res = run_task(pg_config(pg, pg_db, "  p:\n    task: postgres.ping\n    target: db\n"), "p")
    assert res.final_status.value == "ok", res.summary
    assert "PostgreSQL 15" in res.summary and "(primary)" in res.summary
    assert res.metrics["server_version_num"] >= 150000
    assert res.metrics["uptime_s"] > 0
    assert res.metrics[f"db.{pg_db}.size_bytes"] > 1_000_000


def test_ping_unreachable_server_fails_with_finding(pg: PostgresCluster) -> None:
    cfg = ("targets:\n  db:\n    kind: postgres\n    host: 127.0.0.1\n    port: 1\n    connect_timeout: 2\n"
           "jobs:\n  p:\n    task: postgres.ping\n    target: db\n")
    res = run_task(cfg, "p")
    assert res.final_status.value == "fail"
    assert res.findings[0].check == "postgres.unreachable" and "cannot connect" in res.summary


def test_ping_missing_database_is_critical(pg: PostgresCluster, pg_db: str) -> None:
    res = run_task(pg_config(pg, pg_db, "  p:\n    task: postgres.ping\n    target: db\n"
                                        "    options: {databases: [nope_db]}\n"), "p")
    assert [f.check for f in res.findings] == ["postgres.database_missing"]
    assert res.final_status.value == "fail"


def _churn(pg: PostgresCluster, db: str) -> None:
    pg.execute("CREATE TABLE t (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = off)", db)
    pg.execute("CREATE TABLE other (id int) WITH (autovacuum_enabled = off)", db)
    pg.execute("INSERT INTO t SELECT g, 'x' FROM generate_series(1, 20000) g", db)
    pg.execute("UPDATE t SET v = 'y' WHERE id % 2 = 0", db)
    pg.execute("DELETE FROM t WHERE id % 5 = 0", db)


def test_vacuum_removes_dead_tuples_per_table(pg: PostgresCluster, pg_db: str) -> None:
    _churn(pg, pg_db)
    time.sleep(0.6)  # cumulative statistics are flushed at most every 0.5 s (PG 15)
    res = run_task(pg_config(pg, pg_db, "  v:\n    task: postgres.vacuum\n    target: db\n"), "v")
    assert res.final_status.value == "ok", res.summary
    m = res.metrics
    assert m["tables_vacuumed"] == 2
    before = m[f"table.{pg_db}.public.t.dead_before"]
    assert before >= 10000  # 10k updated + 4k deleted rows left dead tuples
    assert m[f"table.{pg_db}.public.t.dead_after"] == 0
    assert m["dead_tuples_removed"] >= before
    assert m[f"table.{pg_db}.public.t.duration_s"] > 0
    # ANALYZE ran: the planner now knows the table's size
    rows = pg.execute("SELECT reltuples FROM pg_class WHERE relname = 't'", pg_db)
    assert 15000 <= rows[0][0] <= 17000


def test_vacuum_locked_table_is_a_finding_not_a_hang(pg: PostgresCluster, pg_db: str) -> None:
    _churn(pg, pg_db)
    locked = threading.Event()
    release = threading.Event()

    def hold_lock() -> None:
        with pg.connect(pg_db, autocommit=False) as conn:
            conn.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(30)
            conn.rollback()

    th = threading.Thread(target=hold_lock)
    th.start()
    try:
        assert locked.wait(10)
        t0 = time.monotonic()
        res = run_task(pg_config(pg, pg_db, "  v:\n    task: postgres.vacuum\n    target: db\n"
                                            "    options: {lock_timeout: 1s}\n"), "v")
        assert time.monotonic() - t0 < 15
    finally:
        release.set()
        th.join()
    assert res.final_status.value == "warn"
    f = res.findings[0]
    assert f.check == "postgres.vacuum_lock_timeout" and f.subject == f"{pg_db}.public.t"
    assert res.metrics["tables_vacuumed"] == 1  # the other table was still vacuumed


def test_vacuum_listed_tables_and_missing_one(pg: PostgresCluster, pg_db: str) -> None:
    _churn(pg, pg_db)
    res = run_task(pg_config(pg, pg_db, "  v:\n    task: postgres.vacuum\n    target: db\n"
                                        "    options: {tables: [t, public.missing]}\n"), "v")
    assert res.metrics["tables_vacuumed"] == 1
    assert [f.check for f in res.findings] == ["postgres.table_missing"]


def test_host_disk_threshold_crossed_is_a_finding(tmp_path: Any) -> None:
    import os

    st = os.statvfs(tmp_path)
    used_pct = 100.0 * (st.f_blocks - st.f_bfree) / ((st.f_blocks - st.f_bfree) + st.f_bavail)
    warn_at = max(0.01, used_pct - 0.5)
    cfg = f"jobs:\n  d:\n    task: host.disk\n    options: {{mounts: ['{tmp_path}'], warning: {warn_at:.2f}}}\n"
    res = run_task(cfg, "d")
    assert res.final_status.value in ("warn", "fail")
    f = next(f for f in res.findings if f.check == "host.disk_space")
    assert f.value is not None and abs(float(f.value) - used_pct) < 1.0 and f.threshold == round(warn_at, 2)
    ok = run_task(f"jobs:\n  d:\n    task: host.disk\n    options: {{mounts: ['{tmp_path}']}}\n", "d")
    if used_pct < 90:
        assert not [f for f in ok.findings if f.check == "host.disk_space"]
    assert f"{tmp_path}.used_pct" in ok.metrics


def test_host_disk_warning_above_critical_is_a_config_error() -> None:
    import pytest
    from pydantic import ValidationError

    from upkeeper.tasks.host.disk import DiskOptions

    with pytest.raises(ValidationError, match=r"warning \(95 %\) is above critical \(90 %\)"):
        DiskOptions.model_validate({"warning": 95, "critical": 90})
    with pytest.raises(ValidationError, match="inode_warning"):
        DiskOptions.model_validate({"inode_warning": 99})
    DiskOptions.model_validate({"warning": 90, "critical": 90})
