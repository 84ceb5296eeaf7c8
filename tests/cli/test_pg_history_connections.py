"""The CLI run in-process (the tests, a program embedding it) against a PostgreSQL history closes its connections
when each command ends: before, each command's History (a SQLAlchemy engine and its pooled psycopg connections)
was dropped by the next command, its connections left open in the server until the garbage collector got to them
(psycopg then warns: ResourceWarning, 'connection … was deleted while still open')."""

from __future__ import annotations

import gc
import os
import warnings
from pathlib import Path
from typing import Any

from upkeeper.sandbox.postgres import PostgresCluster


def _site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    root.mkdir(exist_ok=True)
    (root / "index.html").write_text("<h1>hello</h1>\n")
    return root


def _others(pg: PostgresCluster, db: str) -> list[tuple[Any, ...]]:
    """The sessions on ``db`` but this one's, as pg_stat_activity shows them."""
    with pg.connect() as conn:
        return [tuple(r) for r in conn.execute(
            "SELECT pid, application_name, state, left(query, 60) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()", (db,)).fetchall()]


def test_cli_commands_in_process_leave_no_connection_to_a_postgresql_history(
        cli: Any, make_config: Any, tmp_path: Path, pg: PostgresCluster, pg_db: str) -> None:
    store = tmp_path / "store"
    cfg = make_config({
        "history": f"postgresql://postgres@127.0.0.1:{pg.port}/{pg_db}",
        "targets": {"web": {"kind": "app", "root": str(_site(tmp_path))}},
        "storages": {"local1": {"kind": "local", "path": str(store), "fsync": False}},
        "backup": {"storages": ["local1"], "encryption": "none"},
        "jobs": {"app-backup": {"task": "files.backup", "target": "web"}},
    })
    gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = cli(["--config", cfg, "run", "app-backup", "--json"])
        assert r.code == 0, r.output
        bid = r.json()[0]["artifacts"][0]["id"]
        for argv in (["backups", "list"], ["backups", "show", bid], ["backups", "verify", bid, "--no-restore"],
                     ["backups", "prune", "--dry-run"], ["backups", "sync"], ["status"], ["history"]):
            r = cli(["--config", cfg, *argv])
            assert r.code == 0, (argv, r.output)
            # each command's connections are closed as it ends: none waits for the garbage collector
            assert _others(pg, pg_db) == [], argv
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert _others(pg, pg_db) == []
    assert os.environ.get("UPKEEPER_CONFIG") is None
