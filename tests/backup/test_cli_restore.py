"""'backups restore': a NEW database by default; overwriting a non-empty one needs --force plus --yes
(or a confirmation), and names the database first.  Also directory format and passphrase encryption."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from upkeeper.sandbox.postgres import PostgresCluster


def _backup(cli: Any, cfg: Path) -> str:
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 0, r.output
    assert r.json()[0]["status"] == "ok", r.json()
    return str(r.json()[0]["artifacts"][0]["id"])


def _count(pg: PostgresCluster, db: str, table: str = "users") -> int:
    return int(pg.execute(f"SELECT count(*) FROM {table}", db)[0][0])


def test_restore_defaults_to_a_new_database_and_guards_overwrites(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any) -> None:
    db, counts = app_db
    cfg = backup_config(db)
    bid = _backup(cli, cfg)
    r = cli(["--config", cfg, "backups", "restore", bid, "--json"])
    assert r.code == 0, r.output
    new = r.json()["database"]
    assert new.startswith(f"{db}_restored_") and not r.json()["replaced"]
    assert _count(pg, new) == counts["users"]
    try:
        # the source database is non-empty: refused without --force, naming it
        pg.execute("DELETE FROM reviews", db)
        r = cli(["--config", cfg, "backups", "restore", bid, "--database", db])
        assert r.code == 2 and f"database '{db}'" in r.err and "not empty" in r.err
        # --force without --yes and without a terminal: refused, naming the database it would drop
        r = cli(["--config", cfg, "backups", "restore", bid, "--database", db, "--force"])
        assert r.code == 2 and f"DROP database '{db}'" in r.err
        assert _count(pg, db, "reviews") == 0
        r = cli(["--config", cfg, "backups", "restore", bid, "--database", db, "--force", "--yes", "--json"])
        assert r.code == 0, r.output
        assert r.json()["replaced"] and _count(pg, db, "reviews") == counts["reviews"]
    finally:
        with pg.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{new}" WITH (FORCE)')


def test_directory_format_with_parallel_jobs(cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]],
                                             backup_config: Any, tmp_path: Path) -> None:
    db, counts = app_db
    cfg = backup_config(db, options={"format": "directory", "jobs": 2})
    bid = _backup(cli, cfg)
    objs = sorted(p.name for p in (tmp_path / "store1").rglob(f"{db}.dir/*"))
    assert "toc.dat.zst.age" in objs and len(objs) > 3
    r = cli(["--config", cfg, "backups", "verify", bid, "--json"])
    assert r.code == 0, r.output
    assert r.json()[0]["tables"] == len(counts)


def test_passphrase_encryption_round_trip(cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]],
                                          backup_config: Any, tmp_path: Path) -> None:
    db, _ = app_db
    pw = tmp_path / "pass"
    pw.write_text("correct horse battery staple\n")
    cfg = backup_config(db, encrypt=False, backup={"encryption": {"passphrase_file": str(pw)}})
    bid = _backup(cli, cfg)
    [obj] = list((tmp_path / "store1").rglob(f"{db}.dump.zst.age"))
    assert b"scrypt" in obj.read_bytes()[:200]
    r = cli(["--config", cfg, "backups", "verify", bid, "--json"])
    assert r.code == 0, r.output
    # the passphrase never shows up in the run's record
    show = cli(["--config", cfg, "history", "db-backup", "--json"]).out
    assert "correct horse" not in show
