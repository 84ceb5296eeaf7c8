"""logs.postgres end to end: a real cluster logging every statement, the real CLI; agreement with pgBadger."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from upkeeper.logs.pglog import PgAccumulator, PgScanOptions, summarize
from upkeeper.sandbox import pgworkload
from upkeeper.sandbox.postgres import PostgresCluster


def config(make_config: Any, cluster: PostgresCluster, tmp_path: Path, **options: Any) -> Path:
    return make_config({
        "targets": {"db": cluster.target("postgres")},
        "jobs": {"pg-logs": {"task": "logs.postgres", "target": "db",
                             "options": {"report_dir": str(tmp_path / "reports"), **options}}},
    })


def run(cli: Any, cfg: Path) -> dict[str, Any]:
    res = cli(["--config", str(cfg), "run", "pg-logs", "--json"])
    assert res.code in (0, 1), res.output
    out: dict[str, Any] = res.json()[0]
    return out


def test_report_from_the_server_log(cli: Any, make_config: Any, logging_pg: tuple[PostgresCluster, dict[str, int]],
                                    tmp_path: Path) -> None:
    cluster, done = logging_pg
    # no log_file, no prefix: both come from the server (pg_current_logfile(), SHOW log_line_prefix)
    r = run(cli, config(make_config, cluster, tmp_path))
    assert r["status"] == "warn", r["summary"]
    m = r["metrics"]
    assert m["statements"] >= done["statements"]
    assert m["deadlocks"] == 1 and m["lock_waits"] >= 1 and m["temp_files"] >= 1 and m["checkpoints"] >= 1
    assert m["unparsed_pct"] == 0
    checks = {f["check"]: f for f in r["findings"]}
    for code in ("42P01", "22012", "23505", "42601", "42703", "40P01"):
        assert f"logs.postgres.error.{code}" in checks, code
    assert "SELECT 1/0" in checks["logs.postgres.error.22012"]["message"]
    assert "logs.postgres.deadlocks" in checks and "logs.postgres.lock_waits" in checks
    assert checks["logs.postgres.temp_files"]["severity"] == "info"
    data = json.loads(Path(next(a["path"] for a in r["artifacts"] if a["format"] == "json")).read_text())
    assert data["log_line_prefix"] == pgworkload.LOG_LINE_PREFIX
    fps = {q["fingerprint"]: q for q in data["most_frequent"]}
    assert fps["update upk_items set qty = qty + ? where id = ?"]["count"] == done["statements"] // 3
    page = Path(next(a["path"] for a in r["artifacts"] if a["format"] == "html")).read_text()
    assert "<svg" in page and "errors by SQLSTATE" in page
    # incremental: the next run reads only what is new — the server logged upkeeper's own settings query
    again = run(cli, config(make_config, cluster, tmp_path))
    assert again["metrics"]["statements"] == 1


def test_slow_queries_against_the_objective(cli: Any, make_config: Any, services_dir: Path, tmp_path: Path) -> None:
    cluster = PostgresCluster(services_dir / "pg-slow", extra_conf=pgworkload.LOGGING_CONF)
    cluster.start()
    try:
        with cluster.connect() as c:
            for _ in range(3):
                c.execute("SELECT pg_sleep(0.15)")
            for i in range(20):
                c.execute(f"SELECT {i}")
        r = run(cli, config(make_config, cluster, tmp_path, log_file=str(cluster.log)))
    finally:
        cluster.stop()
    checks = {f["check"]: f for f in r["findings"]}
    assert checks["logs.postgres.query_p95"]["value"] > 100
    assert checks["logs.postgres.slow_query"]["subject"] == "select pg_sleep(?)"


def test_log_file_needed_when_the_server_cannot_tell(cli: Any, make_config: Any, pg: PostgresCluster,
                                                     tmp_path: Path) -> None:
    r = cli(["--config", str(config(make_config, pg, tmp_path)), "run", "pg-logs", "--json"])
    out = r.json()[0]
    assert out["status"] == "error" and "logging collector is off" in out["summary"]


def test_agrees_with_pgbadger(logging_pg: tuple[PostgresCluster, dict[str, int]], tmp_path: Path) -> None:
    cluster, _ = logging_pg
    exe = shutil.which("pgbadger")
    if exe is None:
        pytest.fail("pgbadger is not installed (scripts/ensure-system-deps.sh installs it)")
    log = cluster.data / "log" / "postgresql.log"
    copy = tmp_path / "pg.log"
    shutil.copy(log, copy)
    out = tmp_path / "badger.json"
    res = subprocess.run([exe, "--pid-dir", str(tmp_path),  # not /tmp/pgbadger.pid: other runs may hold it
                          "--prefix", pgworkload.LOG_LINE_PREFIX, "-o", str(out), str(copy)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    badger = json.loads(out.read_text())
    acc = PgAccumulator(PgScanOptions(log_line_prefix=pgworkload.LOG_LINE_PREFIX))
    acc.feed(copy.read_bytes())
    mine = summarize(acc.partial(), top_n=1000)
    overall = badger["overall_stat"]
    assert mine["statements"]["count"] == overall["queries_number"]
    assert abs(mine["statements"]["total_ms"] - overall["postgres"]["queries_duration"]["execute"]) < 1.0
    # pgBadger keeps the trailing ';' and writes decimals as ?.?; otherwise the same grouping and counts
    theirs = {k.rstrip(";").replace("?.?", "?"): v["count"] for k, v in badger["normalyzed_info"]["postgres"].items()}
    ours = {q["fingerprint"]: q["count"] for q in mine["most_frequent"]}
    shared = set(theirs) & set(ours)
    assert len(shared) >= 0.8 * len(ours)
    assert all(theirs[k] == ours[k] for k in shared)
    temp = badger["tempfile_info"]["postgres"]
    assert (mine["temp_files"]["count"], mine["temp_files"]["total_bytes"]) == (temp["count"], temp["size"])
    assert mine["checkpoints"]["buffers"] == badger["checkpoint_info"]["wbuffer"]
    assert mine["checkpoints"]["reasons"] == badger["checkpoint_info"]["starting"]
