"""The PostgreSQL jobs through the real CLI, runner and worker processes; the documented config loads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from upkeeper.core.jobs import load_setup
from upkeeper.sandbox.postgres import PostgresCluster

DOC = Path(__file__).resolve().parents[2] / "docs" / "postgres.md"


def test_jobs_run_through_the_cli(cli: Any, make_config: Any, pg: PostgresCluster, pg_db: str) -> None:
    pg.execute("CREATE TABLE t (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = false)", pg_db)
    pg.execute("INSERT INTO t SELECT g, 'a' FROM generate_series(1, 500) g; UPDATE t SET v = 'b'", pg_db)
    pg.execute("CREATE INDEX t_v ON t (v); CREATE INDEX t_v_again ON t (v)", pg_db)
    cfg = make_config({
        "version": 1,
        "targets": {"db": pg.target(pg_db)},
        "jobs": {
            "vacuum": {"task": "postgres.vacuum", "target": "db", "schedule": "0 3 * * *"},
            "db-maintenance": {"task": "postgres.maintenance", "target": "db", "schedule": "0 2 * * 0",
                               "options": {"skip_checks": ["slow_queries"]}},
            "index-rebuild": {"task": "postgres.reindex", "target": "db", "schedule": "0 4 * * 0",
                              "options": {"high_priority": ["t"]}},
        },
    })
    res = cli(["--config", cfg, "run", "--json", "--parallel", "1", "vacuum", "db-maintenance", "index-rebuild"])
    assert res.code == 0, res.output
    runs = {r["job"]: r for r in res.json()}
    assert runs["vacuum"]["metrics"]["dead_tuples_removed"] == 500
    checks = {f["check"] for f in runs["db-maintenance"]["findings"]}
    assert "postgres.duplicate_index" in checks and runs["db-maintenance"]["status"] == "warn"
    assert runs["index-rebuild"]["metrics"]["reindexed"] == 1


def test_documented_config_is_valid(monkeypatch: Any, tmp_path: Path) -> None:
    monkeypatch.setenv("PG_PASSWORD", "s3cret")
    block = re.search(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert block is not None
    path = tmp_path / "upkeeper.yaml"
    path.write_text(block.group(1))
    setup = load_setup(path)  # validates every job's options against its task
    assert set(setup.jobs) == {"vacuum", "db-maintenance", "index-rebuild"}
    assert setup.jobs["db-maintenance"].options.audit_table == "audit_log"  # type: ignore[attr-defined]
