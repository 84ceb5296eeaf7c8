"""Benchmark: the maintenance surveys.

PostgreSQL part: the full ``postgres.maintenance`` survey on a database with 2,000 tables and
6,000 indexes (plus a 200-table copy to show the query count does not grow with the schema): wall
time and the number of queries it issues, counted two ways — the task's own counter and, as an
independent witness, ``pg_stat_statements`` (reset before the run, summed after).  Side by side:
check_postgres (the anchor) running its overlapping actions against the same database.
Goal: < 10 s, query count bounded and independent of the number of tables.
Writes ``bench/results/maintenance_postgres.json``.

Run: ``.venv/bin/python bench/maintenance.py`` (about a minute, most of it building the schema).
"""

from __future__ import annotations

import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from upkeeper.config.targets import PostgresTarget
from upkeeper.core import proc
from upkeeper.core.task import REGISTRY, MemoryState, TaskContext
from upkeeper.sandbox.postgres import PostgresCluster

RESULTS = Path(__file__).parent / "results"

#: one table: a primary key and two secondary indexes → 3 indexes per table
TABLE_DDL = """
CREATE TABLE t{i} (id bigserial PRIMARY KEY, account int, label text, created_at timestamptz DEFAULT now());
CREATE INDEX t{i}_account ON t{i} (account);
CREATE INDEX t{i}_label_created ON t{i} (label, created_at);
INSERT INTO t{i} (account, label) SELECT g % 13, 'row ' || g FROM generate_series(1, 40) g;
"""

#: check_postgres actions that overlap the survey (it has no unused/duplicate-index or slow-query action)
CHECK_POSTGRES_ACTIONS = ["backends", "txn_idle", "txn_wraparound", "sequence", "bloat", "database_size",
                          "hitratio", "replication_slots", "autovac_freeze", "locks"]


def build(pg: PostgresCluster, db: str, tables: int) -> None:
    pg.create_database(db)
    pg.execute("CREATE EXTENSION pg_stat_statements; CREATE EXTENSION pgstattuple", db)
    with pg.connect(db) as conn:
        for start in range(0, tables, 100):  # one transaction per 100 tables (lock table size)
            conn.execute("BEGIN")
            conn.execute("".join(TABLE_DDL.format(i=i) for i in range(start, min(tables, start + 100))))
            conn.execute("COMMIT")
        # a few bloated tables, so the bloat check has candidates to confirm with pgstattuple
        for i in range(10):
            conn.execute(f"ALTER TABLE t{i} SET (autovacuum_enabled = false)")
            conn.execute(f"INSERT INTO t{i} (account, label) SELECT g, repeat('b', 200) "
                         "FROM generate_series(1, 3000) g")
            conn.execute(f"UPDATE t{i} SET account = account + 1")
        conn.execute("ANALYZE")


def survey(pg: PostgresCluster, db: str) -> dict[str, Any]:
    cls = REGISTRY.get("postgres.maintenance")
    opts = cls.Options.model_validate({"repair": False, "bloat_min_bytes": "256KiB"})
    target = PostgresTarget.model_validate(pg.target(db))
    pg.execute("SELECT pg_stat_statements_reset()", db)
    ctx = TaskContext(job="bench", task=cls.name, target_name="db", target=target, state=MemoryState())
    t0 = time.perf_counter()
    result = cls().run(ctx, opts)
    elapsed = time.perf_counter() - t0
    witnessed = pg.execute(
        "SELECT coalesce(sum(calls), 0)::int FROM pg_stat_statements "
        "WHERE query NOT LIKE '%%pg_stat_statements%%'", db)[0][0]
    return {
        "seconds": round(elapsed, 3),
        "queries_task_counter": int(result.metrics["queries"]),
        "queries_pg_stat_statements": int(witnessed),
        "findings": len(result.findings),
        "checks_failed": int(result.metrics["checks_failed"]),
        "status": result.final_status.value,
        "slowest_checks_ms": dict(sorted(((k.removeprefix("check.").removesuffix(".ms"), v)
                                          for k, v in result.metrics.items() if k.startswith("check.")),
                                         key=lambda kv: -kv[1])[:5]),
    }


def check_postgres(pg: PostgresCluster, db: str) -> dict[str, Any] | None:
    exe = shutil.which("check_postgres") or shutil.which("check_postgres.pl")
    if exe is None:
        return None
    per_action = {}
    t_all = time.perf_counter()
    for action in CHECK_POSTGRES_ACTIONS:
        argv = [exe, f"--action={action}", "--host=127.0.0.1", f"--port={pg.port}", "--dbuser=postgres",
                f"--dbname={db}", "--output=simple"]
        if action in ("txn_idle", "locks"):
            argv.append("--warning=100")
        t0 = time.perf_counter()
        res = proc.run(argv, check=False)
        per_action[action] = {"seconds": round(time.perf_counter() - t0, 3), "exit": res.returncode,
                              "output": (res.text.strip() or res.stderr.strip())[:300]}
    return {"seconds": round(time.perf_counter() - t_all, 3), "actions": per_action, "tool": exe}


def bench_postgres() -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="upk-bench-pg-", dir="/tmp"))
    base.chmod(0o755)
    pg = PostgresCluster(base / "pg")
    pg.start()
    try:
        t0 = time.perf_counter()
        build(pg, "big", 2000)
        build(pg, "small", 200)
        setup_s = time.perf_counter() - t0
        counts = pg.execute("SELECT (SELECT count(*) FROM pg_class WHERE relkind = 'r' AND relnamespace = "
                            "'public'::regnamespace), (SELECT count(*) FROM pg_class WHERE relkind = 'i' AND "
                            "relnamespace = 'public'::regnamespace)", "big")[0]
        survey(pg, "big")  # warm the catalog caches once, as a weekly job on a live server finds them
        runs = [survey(pg, "big") for _ in range(3)]
        small = survey(pg, "small")
        anchor = check_postgres(pg, "big")
        median = statistics.median(r["seconds"] for r in runs)
        out = {
            "benchmark": "postgres.maintenance survey",
            "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
            "schema": {"tables": int(counts[0]), "indexes": int(counts[1]), "setup_seconds": round(setup_s, 1)},
            "survey_seconds_median": median,
            "survey_runs": runs,
            "small_schema_200_tables": small,
            "query_count_independent_of_tables": small["queries_task_counter"] == runs[0]["queries_task_counter"],
            "goal_seconds": 10,
            "goal_met": median < 10,
            "anchor_check_postgres": anchor,
            "ratio_upkeeper_vs_check_postgres": (round(median / anchor["seconds"], 3) if anchor else None),
            "note": ("the survey runs every check (repair off); check_postgres runs only its overlapping actions "
                     f"({', '.join(CHECK_POSTGRES_ACTIONS)}), one process and connection each"),
        }
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "maintenance_postgres.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


def main() -> int:
    REGISTRY.load()
    out = bench_postgres()
    print(json.dumps({k: out[k] for k in ("schema", "survey_seconds_median", "query_count_independent_of_tables",
                                          "goal_met", "ratio_upkeeper_vs_check_postgres")}, indent=2))
    print("queries:", out["survey_runs"][0]["queries_task_counter"], "(task) /",
          out["survey_runs"][0]["queries_pg_stat_statements"], "(pg_stat_statements)")
    return 0 if out["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
