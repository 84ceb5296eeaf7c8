"""backup.verify and 'backups verify': a real restore into a scratch database, row counts compared, and one
corrupted byte in any stored object makes verification fail naming that object."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from upkeeper.sandbox.postgres import PostgresCluster


def _backup(cli: Any, cfg: Path) -> str:
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 0, r.output
    return str(r.json()[0]["artifacts"][0]["id"])


def _scratch_dbs(pg: PostgresCluster) -> list[str]:
    return [r[0] for r in pg.execute("SELECT datname FROM pg_database WHERE datname LIKE 'upkeeper_verify_%'")]


def test_verify_job_restores_compares_row_counts_and_marks_verified(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any) -> None:
    db, counts = app_db
    cfg = backup_config(db, options={"globals": True},
                        verify={"checks": ["select count(*) > 0 from users"], "amcheck": True, "jobs": 1})
    bid = _backup(cli, cfg)
    r = cli(["--config", cfg, "run", "backup-verify", "--json"])
    assert r.code == 0, r.output
    run = r.json()[0]
    assert run["status"] == "ok", run
    [art] = run["artifacts"]
    assert art["ok"] and art["backup_id"] == bid and art["restore_seconds"] > 0
    assert art["tables"] == len(counts)
    assert any("smoke" in s for s in art["steps"]) and any("amcheck" in s for s in art["steps"])
    assert any("one pass" in s for s in art["steps"])  # jobs 1: streamed, no temp file
    assert run["metrics"]["verify.restore_seconds"] > 0
    assert _scratch_dbs(pg) == []
    row = cli(["--config", cfg, "backups", "show", bid, "--json"]).json()
    assert row["status"] == "verified" and row["restore_seconds"] > 0


def test_failing_smoke_check_fails_verify_and_drops_scratch(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any) -> None:
    db, _ = app_db
    cfg = backup_config(db, verify={"checks": ["select count(*) > 1000000 from users"]})
    bid = _backup(cli, cfg)
    r = cli(["--config", cfg, "run", "backup-verify", "--json"])
    assert r.code == 1
    run = r.json()[0]
    assert run["status"] == "fail" and "smoke check" in run["summary"]
    assert _scratch_dbs(pg) == []
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "verify-failed"


def test_row_count_mismatch_fails_verify(cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]],
                                         backup_config: Any, tmp_path: Path) -> None:
    """A manifest whose row counts disagree with the restored data (as a dump that lost rows would) fails."""
    db, counts = app_db
    cfg = backup_config(db)
    bid = _backup(cli, cfg)
    [mpath] = list((tmp_path / "store1").rglob("manifest.json"))
    m = json.loads(mpath.read_text())
    m["postgres"]["row_counts"]["public.users"] += 1
    mpath.write_text(json.dumps(m))
    r = cli(["--config", cfg, "backups", "verify", bid, "--json"])
    assert r.code == 1
    [rep] = r.json()
    assert any("2 jobs" in s for s in rep["steps"])  # rows spread over tables: parallel restore
    assert not rep["ok"] and "public.users" in rep["error"] and str(counts["users"]) in rep["error"]
    assert _scratch_dbs(pg) == []


@pytest.mark.parametrize(("which", "jobs"), [("database", "2"), ("database", "1"), ("globals", "1"),
                                             ("manifest-size", "2")])
def test_one_corrupted_byte_fails_verify_naming_the_object(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any, tmp_path: Path,
        which: str, jobs: str) -> None:
    """jobs 1 streams storage → pg_restore in one pass; 2 fetches to a temp file first: both catch it."""
    db, _ = app_db
    cfg = backup_config(db, options={"globals": True})
    bid = _backup(cli, cfg)
    [set_dir] = [p.parent for p in (tmp_path / "store1").rglob("manifest.json")]
    name = "globals.sql.zst.age" if which == "globals" else f"{db}.dump.zst.age"
    obj = set_dir / name
    data = bytearray(obj.read_bytes())
    if which == "manifest-size":
        data += b"\0"  # one byte appended
    else:
        data[len(data) // 2] ^= 0x01  # one bit of one byte in the middle
    obj.write_bytes(bytes(data))
    r = cli(["--config", cfg, "backups", "verify", bid, "--jobs", jobs, "--json"])
    assert r.code == 1, r.output
    [rep] = r.json()
    assert not rep["ok"]
    assert rep["failed_object"] == name and name in rep["error"], rep
    assert _scratch_dbs(pg) == []
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "verify-failed"


def test_scope_unverified_checks_each_backup_once(cli: Any, pg: PostgresCluster,
                                                  app_db: tuple[str, dict[str, int]], backup_config: Any) -> None:
    db, _ = app_db
    cfg = backup_config(db, verify={"scope": "unverified", "restore": False},
                        options={"retention": {"keep_last": 5}})  # daily alone keeps one per day
    first, second = _backup(cli, cfg), _backup(cli, cfg)
    r = cli(["--config", cfg, "run", "backup-verify", "--json"])
    assert r.code == 0, r.output
    assert sorted(a["backup_id"] for a in r.json()[0]["artifacts"]) == sorted([first, second])
    r = cli(["--config", cfg, "run", "backup-verify", "--json"])
    assert r.code == 0 and r.json()[0]["summary"].startswith("no unverified backups")
