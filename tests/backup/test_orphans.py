"""kill -9 of the upkeeper process that restores: its pg_restore, and the server's work for it, end with it.

The backed-up database has an expression index whose function sleeps, so that a restore spends seconds in one
CREATE INDEX — the server working for a pg_restore that has nothing left to send.  Each case SIGKILLs one
process (only it, not its group: the process the OOM killer would pick, or the CLI above a worker) while that
statement runs, and then no process it or the CLI started may be
left, nor any session in the database restored into.  (pg_restore outlived a killed 'backups restore' or 'backups verify' and finished
the restore for nobody; and a worker orphaned by a killed 'upkeeper run' SIGKILLed its pg_restore, whose backend
went on building the index.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from upkeeper.sandbox.postgres import PostgresCluster

ROWS, SLEEP = 200, 0.05  # ~10 s of CREATE INDEX in every restore of the backup: far beyond the test's wait
GONE_WITHIN = 2.5  # seconds after the SIGKILL


def _wait_for(cond: Callable[[], Any], what: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = cond()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _indexing(pg: PostgresCluster, db: str) -> list[str]:
    """The databases (other than ``db``) where a CREATE INDEX runs: the restore's temporary or scratch one."""
    return [r[0] for r in pg.execute("SELECT datname FROM pg_stat_activity WHERE state = 'active' AND query LIKE "
                                     "'CREATE INDEX%%' AND datname <> %s", params=[db])]


def _sessions(pg: PostgresCluster, name: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in pg.execute("SELECT pid, application_name, state, left(query, 60) FROM "
                                         "pg_stat_activity WHERE datname = %s", params=[name])]


def _alive(p: psutil.Process) -> bool:
    try:
        return bool(p.is_running() and p.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="module")
def slow_backup(pg: PostgresCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, str]]:
    """A database whose restores spend ~10 s in one CREATE INDEX, and one backup of it: (database, config,
    backup id)."""
    d = tmp_path_factory.mktemp("orphans")
    db = f"orphans_{os.getpid()}"
    pg.create_database(db)
    # slow in a restored copy only (not while the index is built here)
    pg.execute("CREATE FUNCTION slow(v int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN IF "
               f"current_database() <> '{db}' THEN PERFORM pg_sleep({SLEEP}); END IF; RETURN v; END $$; "
               f"CREATE TABLE t AS SELECT generate_series(1, {ROWS}) AS x; CREATE INDEX t_slow ON t (slow(x))", db)
    (d / "store").mkdir()
    cfg = d / "upkeeper.yaml"
    cfg.write_text(yaml.safe_dump({
        "history": str(d / "history.db"), "targets": {"db": pg.target(db)},
        "storages": {"local1": {"kind": "local", "path": str(d / "store"), "fsync": False}},
        "jobs": {"db-backup": {"task": "postgres.backup", "target": "db",
                               "options": {"databases": [db], "globals": False}},
                 "backup-verify": {"task": "backup.verify", "target": "db", "options": {"jobs": 1}}}}))
    r = subprocess.run([sys.executable, "-m", "upkeeper", "--config", str(cfg), "run", "db-backup", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    yield db, cfg, json.loads(r.stdout)[0]["artifacts"][0]["id"]
    pg.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


@pytest.mark.parametrize("case", ["restore", "verify", "run"])
def test_kill9_mid_restore_leaves_no_pg_restore_and_no_session(
        cli: Any, pg: PostgresCluster, slow_backup: tuple[str, Path, str], case: str) -> None:
    """``restore``: 'backups restore' (pg_restore --jobs=2 reading a file) SIGKILLed; ``verify``: 'backups verify
    --jobs 1' (pg_restore fed through its stdin) SIGKILLed; ``run``: 'upkeeper run backup-verify' SIGKILLed, its
    worker running the verify (pg_restore fed through its stdin, a child of the worker)."""
    pg_db, cfg, bid = slow_backup
    args = {"restore": ["backups", "restore", bid, "--database", f"{pg_db}_new"],
            "verify": ["backups", "verify", bid, "--jobs", "1"]}.get(case, ["run", "backup-verify"])
    p = subprocess.Popen([sys.executable, "-m", "upkeeper", "--config", str(cfg), *args], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    restorers: list[psutil.Process] = []  # every process below the CLI
    into = ""
    try:
        [into] = _wait_for(lambda: _indexing(pg, pg_db), "the restore to build the slow index", 60)
        tree = psutil.Process(p.pid).children(recursive=True)
        assert [c for c in tree if c.name() == "pg_restore"], [c.name() for c in tree]
        restorers = tree  # the worker too, in its grace (it must record nothing meanwhile, see below)
        victim = p.pid
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        deadline = killed + GONE_WITHIN
        while time.monotonic() < deadline and (any(_alive(c) for c in restorers) or _sessions(pg, into)):
            time.sleep(0.05)
        left = [c.pid for c in restorers if _alive(c)]
        sessions = _sessions(pg, into)
        assert not left and not sessions, (
            f"{GONE_WITHIN}s after the SIGKILL: processes {left} alive, sessions in {into}: {sessions}")
        # the verify interrupted so is no verdict on the backup
        assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "complete"
    finally:
        for c in restorers:
            if _alive(c):
                c.kill()
        if p.poll() is None:
            p.kill()
        p.wait(timeout=30)
        for name in [into, f"{pg_db}_new"]:
            if name:
                pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
