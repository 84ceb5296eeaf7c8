"""Faults with real processes: kill -9 during the dump, during the upload and just before the manifest;
a full local storage.  No partial backup is ever listed, and the next run succeeds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from upkeeper.sandbox.postgres import PostgresCluster


def _start_run(cfg: Path, env_extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "upkeeper", "--config", str(cfg), "run", "db-backup"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)


def _wait_for(cond: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _tree(p: subprocess.Popen[bytes]) -> list[psutil.Process]:
    try:
        return psutil.Process(p.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _has_child(p: subprocess.Popen[bytes], name: str) -> bool:
    for c in _tree(p):
        try:
            if c.name() == name:
                return True
        except psutil.Error:
            pass
    return False


def _kill9(p: subprocess.Popen[bytes]) -> None:
    """kill -9 the CLI's process group and the worker's (a worker leads its own group).

    The CLI's group goes first: killed after the worker, the CLI could see its worker die and record the run
    as an error before its own SIGKILL lands — a run a crash leaves behind is ``interrupted``.
    """
    groups = [os.getpgid(p.pid)]
    for c in _tree(p):
        try:
            g = os.getpgid(c.pid)
        except ProcessLookupError:
            continue
        if g not in groups:
            groups.append(g)
    for g in groups:
        try:
            os.killpg(g, signal.SIGKILL)
        except ProcessLookupError:
            pass
    p.wait(timeout=10)
    _wait_for(lambda: not any(_alive(c) for c in _tree(p)), "the process tree to die", 10)


def _alive(c: psutil.Process) -> bool:
    try:
        return c.is_running() and c.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # gone between the two questions
        return False


def _assert_nothing_listed_then_next_run_succeeds(cli: Any, cfg: Path, store: Path) -> None:
    assert list(store.rglob("manifest.json")) == []
    assert cli(["--config", cfg, "backups", "list", "--json"]).json() == []
    r = cli(["--config", cfg, "backups", "sync", "--json"])
    assert r.code == 0 and r.json()["added"] == 0
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 0, r.output
    assert r.json()[0]["status"] == "ok"
    rows = cli(["--config", cfg, "backups", "list", "--json"]).json()
    assert len(rows) == 1 and rows[0]["id"] == r.json()[0]["artifacts"][0]["id"]
    # the killed run is recorded as interrupted, not as a success
    hist = cli(["--config", cfg, "history", "db-backup", "--json"]).json()
    assert sorted(h["status"] for h in hist) == ["interrupted", "ok"]


def test_kill9_during_the_dump(cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]],
                               backup_config: Any, tmp_path: Path) -> None:
    db, _ = app_db
    cfg = backup_config(db)
    # hold a lock so pg_dump sits in the middle of its dump
    blocker = pg.connect(db, autocommit=False)
    blocker.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
    p = _start_run(cfg)
    try:
        _wait_for(lambda: _has_child(p, "pg_dump"), "pg_dump to start")
        _wait_for(lambda: bool(pg.execute("SELECT 1 FROM pg_locks WHERE NOT granted", db)), "pg_dump to wait")
        _kill9(p)
    finally:
        blocker.rollback()
        blocker.close()
    assert not _has_child(p, "pg_dump")
    _assert_nothing_listed_then_next_run_succeeds(cli, cfg, tmp_path / "store1")


def test_kill9_during_the_upload(cli: Any, app_db: tuple[str, dict[str, int]], backup_config: Any,
                                 tmp_path: Path) -> None:
    db, _ = app_db
    cfg = backup_config(db)
    store = tmp_path / "store1"
    p = _start_run(cfg, {"UPKEEPER_FAULT_PAUSE": "during-upload:60"})
    partial = lambda: [f for f in store.rglob("*.upkeeper-partial") if f.stat().st_size > 0]  # noqa: E731
    _wait_for(lambda: bool(partial()), "bytes of a partial object on storage")
    _kill9(p)
    assert partial(), "the partial object is a temp name, never the final one"
    assert not list(store.rglob(f"{db}.dump.zst.age"))
    _assert_nothing_listed_then_next_run_succeeds(cli, cfg, store)
    # the killed writer's temp file goes once it is older than backup.incomplete_after
    assert partial()
    cfg = backup_config(db, backup={"incomplete_after": "1s"})
    time.sleep(1.5)
    assert cli(["--config", cfg, "backups", "prune"]).code == 0
    assert not partial() and len(list(store.rglob("manifest.json"))) == 1


def test_kill9_just_before_the_manifest(cli: Any, app_db: tuple[str, dict[str, int]], backup_config: Any,
                                        tmp_path: Path) -> None:
    db, _ = app_db
    cfg = backup_config(db, options={"globals": True})
    store = tmp_path / "store1"
    p = _start_run(cfg, {"UPKEEPER_FAULT_PAUSE": "before-manifest:60"})
    _wait_for(lambda: bool(list(store.rglob("globals.sql.zst.age"))), "every object stored")
    assert list(store.rglob(f"{db}.dump.zst.age"))
    _kill9(p)
    _assert_nothing_listed_then_next_run_succeeds(cli, cfg, store)


def test_local_storage_full_is_a_clear_failure(cli: Any, pg: PostgresCluster, pg_db: str, backup_config: Any,
                                               small_fs: Path) -> None:
    full_disk = small_fs
    # incompressible rows: the encrypted dump (~4 MB) is larger than the 2 MiB volume
    pg.execute("CREATE TABLE blobs AS SELECT g, decode(md5(g::text) || md5((g * 7)::text), 'hex') AS b "
               "FROM generate_series(1, 130000) g", pg_db)
    cfg = backup_config(pg_db, storages={"small": {"kind": "local", "path": str(full_disk), "fsync": True}})
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 1, r.output
    run = r.json()[0]
    assert run["status"] in ("fail", "error")
    assert "no space left on device" in run["summary"]
    assert cli(["--config", cfg, "backups", "list", "--json"]).json() == []
    assert list(full_disk.rglob("manifest.json")) == []
    assert list(full_disk.rglob("*.upkeeper-partial")) == []
