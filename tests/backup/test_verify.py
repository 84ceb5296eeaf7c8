"""backup.verify and 'backups verify': a real restore into a scratch database, row counts compared, and one
corrupted byte in any stored object makes verification fail naming that object."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from upkeeper.sandbox.postgres import PostgresCluster
from upkeeper.sandbox.redis import RedisServer
from upkeeper.sandbox.seed import seed

from .conftest import (
    SMALL,
    AgeKey,
    rewrite_manifest,
    run_app_files_backup,
    standby_backup_config,
    stop_cgroup,
    terminate_and_read,
    terminate_and_wait,
)


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


def test_the_backup_of_an_empty_database_verifies(cli: Any, pg: PostgresCluster, pg_db: str, backup_config: Any,
                                                  tmp_path: Path) -> None:
    """A database without tables (every server's fresh 'postgres', which a job without 'databases' backs up)
    dumps to an archive whose table of contents is empty.  The backup succeeded, but every verify marked it
    verify-failed ("pg_restore --list shows an empty archive").  It verifies, streamed or fetched first; an
    empty archive whose manifest lists tables still fails."""
    cfg = backup_config(pg_db)
    bid = _backup(cli, cfg)
    r = cli(["--config", cfg, "run", "backup-verify", "--json"])
    assert r.code == 0, r.output
    [art] = r.json()[0]["artifacts"]
    assert art["ok"] and art["tables"] == 0 and "pg_restore --list: 0 entries" in art["steps"], art
    r = cli(["--config", cfg, "backups", "verify", bid, "--jobs", "2", "--json"])
    assert r.code == 0, r.output
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "verified"
    [mpath] = (tmp_path / "store1").rglob(f"{bid}/manifest.json")
    manifest = json.loads(mpath.read_text())
    manifest["postgres"].update(tables=1, row_counts={"public.users": 3})
    rewrite_manifest(cli, cfg, mpath, manifest)
    for argv in (["--jobs", "1"], ["--no-restore"]):
        r = cli(["--config", cfg, "backups", "verify", bid, *argv])
        assert r.code == 1 and "empty archive" in r.output, r.output


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


def test_a_verify_summary_holding_rich_markup_is_printed_as_text(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any) -> None:
    """`backups verify` printed its summary as Rich markup: a smoke check (or any error text) holding '[/b]'
    crashed the command with a MarkupError traceback after the verify was recorded."""
    db, _ = app_db
    cfg = backup_config(db)
    bid = _backup(cli, cfg)
    r = cli(["--config", cfg, "backups", "verify", bid, "--check", "select 1 = 0 as \"[/b]\""])
    assert r.code == 1, r.output
    assert "Traceback" not in r.output and "MarkupError" not in r.output, r.output
    assert '"[/b]"' in r.output.replace("\n", ""), r.output


def test_row_count_mismatch_fails_verify(cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]],
                                         backup_config: Any, tmp_path: Path) -> None:
    """A manifest whose row counts disagree with the restored data (as a dump that lost rows would) fails."""
    db, counts = app_db
    cfg = backup_config(db)
    bid = _backup(cli, cfg)
    [mpath] = list((tmp_path / "store1").rglob("manifest.json"))
    m = json.loads(mpath.read_text())
    m["postgres"]["row_counts"]["public.users"] += 1
    rewrite_manifest(cli, cfg, mpath, m)  # written so: the catalog records this manifest's SHA-256
    r = cli(["--config", cfg, "backups", "verify", bid, "--json"])
    assert r.code == 1
    [rep] = r.json()
    assert any("2 jobs" in s for s in rep["steps"])  # rows spread over tables: parallel restore
    assert not rep["ok"] and "public.users" in rep["error"] and str(counts["users"]) in rep["error"]
    assert _scratch_dbs(pg) == []


def _stored_set(store: Path) -> Path:
    [set_dir] = [p.parent for p in store.rglob("manifest.json")]
    return set_dir


def _flip_one_byte(obj: Path, append: bool = False) -> None:
    data = bytearray(obj.read_bytes())
    if append:
        data += b"\0"  # one byte appended
    else:
        data[len(data) // 2] ^= 0x01  # one bit of one byte in the middle
    obj.write_bytes(bytes(data))


def _pg_case(cli: Any, pg: PostgresCluster, db: str, backup_config: Any, tmp_path: Path, which: str
             ) -> tuple[Path, str, str]:
    """A PostgreSQL backup (custom or directory format, with globals); returns (config, id, object name)."""
    options: dict[str, Any] = {"globals": True}
    if which == "directory":
        options.update({"format": "directory", "jobs": 2})
    cfg = backup_config(db, options=options)
    bid = _backup(cli, cfg)
    set_dir = _stored_set(tmp_path / "store1")
    if which == "globals":
        return cfg, bid, "globals.sql.zst.age"
    if which == "directory":
        # the largest table data file of pg_dump's directory (not toc.dat): one table's rows
        data = [p for p in (set_dir / f"{db}.dir").iterdir() if p.name != "toc.dat.zst.age"]
        assert data and all(re.fullmatch(r"\d+\.dat\.zst\.age", p.name) for p in data), data
        biggest = max(data, key=lambda p: p.stat().st_size)
        return cfg, bid, f"{db}.dir/{biggest.name}"
    return cfg, bid, f"{db}.dump.zst.age"


def _files_case(cli: Any, make_config: Any, age_key: AgeKey, tmp_path: Path, which: str) -> tuple[Path, str, str]:
    root = tmp_path / "srv" / "app"
    (root / "public").mkdir(parents=True)
    (root / "app.js").write_text("console.log('hi')\n")
    (root / "public" / "logo.png").write_bytes(bytes(range(256)) * 40)
    (root / ".env").write_text("SECRET_KEY=not-in-any-log\n")
    cfg, run = run_app_files_backup(cli, make_config, age_key, tmp_path, root)
    name = "secrets.tar.zst.age" if which == "secrets" else "files.tar.zst.age"
    return cfg, str(run["artifacts"][0]["id"]), name


def _redis_case(cli: Any, make_config: Any, age_key: AgeKey, tmp_path: Path, server: RedisServer
                ) -> tuple[Path, str, str]:
    c = server.client()
    for i in range(200):
        c.set(f"session:{i}", f"user-{i}" * 5)
    cfg = make_config({
        "targets": {"cache": server.target()},
        "storages": {"local1": {"kind": "local", "path": str(tmp_path / "store1"), "fsync": False}},
        "backup": {"encryption": {"recipients": [age_key.recipient], "identity_file": str(age_key.identity)}},
        "jobs": {"cache-backup": {"task": "redis.backup", "target": "cache"}},
    })
    r = cli(["--config", cfg, "run", "cache-backup", "--json"])
    assert r.code == 0, r.output
    return cfg, str(r.json()[0]["artifacts"][0]["id"]), "dump.rdb.zst.age"


@pytest.mark.parametrize(("which", "jobs"), [
    ("database", "2"), ("database", "1"), ("manifest-size", "2"), ("globals", "1"), ("directory", None),
    ("files", None), ("secrets", None), ("redis", None)])
def test_one_corrupted_byte_fails_verify_naming_the_object(
        cli: Any, pg: PostgresCluster, pg_db: str, backup_config: Any, make_config: Any, age_key: AgeKey,
        tmp_path: Path, request: pytest.FixtureRequest, which: str, jobs: str | None) -> None:
    """Every kind of stored object: a PostgreSQL custom-format dump (jobs 1 streams storage → pg_restore in one
    pass, 2 fetches to a temp file first), the globals, one table's data file of a directory-format dump,
    files.backup's main and secrets archives, and a Redis RDB.  One flipped bit (or one byte appended) and
    verify fails, naming the object, and the catalog marks the backup verify-failed."""
    if which in ("files", "secrets"):
        cfg, bid, name = _files_case(cli, make_config, age_key, tmp_path, which)
    elif which == "redis":
        cfg, bid, name = _redis_case(cli, make_config, age_key, tmp_path, request.getfixturevalue("redis_clean"))
    else:
        with pg.connect(pg_db) as conn:
            seed(conn, SMALL)
        cfg, bid, name = _pg_case(cli, pg, pg_db, backup_config, tmp_path, which)
    obj = _stored_set(tmp_path / "store1") / name
    assert obj.is_file(), obj
    _flip_one_byte(obj, append=which == "manifest-size")
    r = cli(["--config", cfg, "backups", "verify", bid, *(["--jobs", jobs] if jobs else []), "--json"])
    assert r.code == 1, r.output
    [rep] = r.json()
    assert not rep["ok"]
    assert rep["failed_object"] == name and name in rep["error"], rep
    assert "corrupt" in rep["error"], rep
    assert _scratch_dbs(pg) == []
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "verify-failed"


def _manifest_sha256(mpath: Path) -> str:
    return hashlib.sha256(mpath.read_bytes()).hexdigest()


@pytest.mark.parametrize("edit", ["row-count", "started_at", "whitespace"])
def test_edited_manifest_fails_verify_naming_it(cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]],
                                               backup_config: Any, tmp_path: Path, edit: str) -> None:
    """The catalog records manifest.json's SHA-256 when the backup is written; an edited manifest — a row count,
    a date, even one byte of whitespace — fails verify naming manifest.json, and 'backups sync' does not make
    it pass."""
    db, _ = app_db
    cfg = backup_config(db)
    bid = _backup(cli, cfg)
    [mpath] = list((tmp_path / "store1").rglob("manifest.json"))
    original, written = mpath.read_bytes(), _manifest_sha256(mpath)
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["manifest_sha256"] == written
    m = json.loads(mpath.read_text())
    if edit == "row-count":
        m["postgres"]["row_counts"]["public.users"] -= 1
        mpath.write_text(json.dumps(m, indent=2) + "\n")
    elif edit == "started_at":
        m["started_at"] = m["started_at"].replace(m["started_at"][:4], str(int(m["started_at"][:4]) - 1), 1)
        mpath.write_text(json.dumps(m, indent=2) + "\n")
    else:
        mpath.write_bytes(mpath.read_bytes() + b" ")
    assert _manifest_sha256(mpath) != written
    for _ in range(2):  # the second time after 'backups sync', which keeps the SHA-256 recorded first
        r = cli(["--config", cfg, "backups", "verify", bid, "--json"])
        assert r.code == 1, r.output
        [rep] = r.json()
        assert not rep["ok"] and rep["failed_object"] == "manifest.json", rep
        assert "manifest.json" in rep["error"] and "changed" in rep["error"], rep
        assert _scratch_dbs(pg) == []
        row = cli(["--config", cfg, "backups", "show", bid, "--json"]).json()
        assert row["status"] == "verify-failed" and row["manifest_sha256"] == written
        r = cli(["--config", cfg, "backups", "sync", "--json"])
        assert r.code == 0 and r.json()["updated"] == 1, r.output
    mpath.write_bytes(original)  # the original back in place: verify passes again
    r = cli(["--config", cfg, "backups", "verify", bid, "--json"])
    assert r.code == 0, r.output
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "verified"


def test_sync_warns_of_a_second_storages_copy_whose_manifest_is_not_the_recorded_one(
        cli: Any, app_db: tuple[str, dict[str, int]], backup_config: Any, tmp_path: Path) -> None:
    """'backups sync' compares the recorded manifest with the first storage's copy only: an edited manifest.json on
    another storage was taken in silence (the catalog went on naming that storage for the backup, retention counting
    it as that storage's newest copy), while verify then failed on it.  Sync says so, naming the storage."""
    db, _ = app_db
    cfg = backup_config(db, storages=2)
    bid = _backup(cli, cfg)
    written = cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["manifest_sha256"]
    [second] = list((tmp_path / "store2").rglob("manifest.json"))
    second.write_bytes(second.read_bytes() + b" ")
    r = cli(["--config", cfg, "backups", "sync", "--json"])
    assert r.code == 0 and r.json()["updated"] == 1, r.output
    assert f"backup {bid}: manifest.json on storage local2" in r.err and "not the one recorded" in r.err, r.err
    assert "storage local1" not in r.err, r.err
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["manifest_sha256"] == written
    r = cli(["--config", cfg, "backups", "verify", bid, "--no-restore", "--json"])
    assert r.code == 1 and "on storage local2 changed" in r.json()[0]["error"], r.output


def test_a_tool_killed_from_outside_during_a_verify_is_no_verdict_on_the_backup(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """pg_restore or age SIGKILLed while a verify reads the backup (the OOM killer on a big restore; here wrappers
    of the real tools that kill themselves) says nothing of the backup: verify said 'FAILED: pg_restore killed by
    SIGKILL …' and marked a good backup verify-failed — a false alarm, and the backup's good status gone.  It is
    not checked: the backup keeps its status, and the message names the kill."""
    db, _ = app_db
    cfg = backup_config(db)
    bid = _backup(cli, cfg)
    faultbin = tmp_path / "faultbin"
    faultbin.mkdir()
    for tool in pg.bin.iterdir():
        (faultbin / tool.name).symlink_to(tool)
    (faultbin / "pg_restore").unlink()
    (faultbin / "pg_restore").write_text(  # the restore into the scratch database dies; --list and the rest work
        f'#!/bin/sh\nfor a in "$@"; do [ "$a" = --exit-on-error ] && kill -9 $$; done\nexec "{pg.bin}/pg_restore" "$@"\n')
    (faultbin / "pg_restore").chmod(0o755)
    data = yaml.safe_load(cfg.read_text())
    data["targets"]["db"]["bin_dir"] = str(faultbin)
    killed_restore = tmp_path / "killed-restore.yaml"
    killed_restore.write_text(yaml.safe_dump(data))
    r = cli(["--config", killed_restore, "backups", "verify", bid, "--jobs", "1", "--json"])
    assert r.code == 1, r.output
    [rep] = r.json()
    assert rep["inconclusive"] and "pg_restore killed by SIGKILL" in rep["error"], rep
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "complete"
    assert _scratch_dbs(pg) == []
    agebin = tmp_path / "agebin"
    agebin.mkdir()
    real_age = shutil.which("age")
    assert real_age
    (agebin / "age").write_text(f'#!/bin/sh\n[ "$1" = --decrypt ] && kill -9 $$\nexec "{real_age}" "$@"\n')
    (agebin / "age").chmod(0o755)
    monkeypatch.setenv("PATH", f"{agebin}:{os.environ['PATH']}")
    r = cli(["--config", cfg, "backups", "verify", bid, "--json"])
    assert r.code == 1, r.output
    [rep] = r.json()
    assert rep["inconclusive"] and "age killed by SIGKILL" in rep["error"], rep
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "complete"
    monkeypatch.undo()
    r = cli(["--config", cfg, "backups", "verify", bid, "--json"])  # the tools alive: verified
    assert r.code == 0, r.output
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "verified"


def test_manifest_sha256_of_a_synced_set_is_recorded_and_checked(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any,
        tmp_path: Path) -> None:
    """A set the catalog did not know ('backups sync' on a new host): sync records the SHA-256 it finds, verify
    passes with it, and a later edit fails."""
    db, _ = app_db
    cfg = backup_config(db)
    bid = _backup(cli, cfg)
    [mpath] = list((tmp_path / "store1").rglob("manifest.json"))
    original = mpath.read_bytes()
    rewrite_manifest(cli, cfg, mpath, json.loads(original))  # forgotten, re-found: same content, new bytes
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["manifest_sha256"] == \
        _manifest_sha256(mpath)
    r = cli(["--config", cfg, "backups", "verify", bid, "--json"])
    assert r.code == 0, r.output
    assert any("manifest.json matches" in s for s in r.json()[0]["steps"])
    mpath.write_bytes(original)
    r = cli(["--config", cfg, "backups", "verify", bid, "--json"])
    assert r.code == 1 and r.json()[0]["failed_object"] == "manifest.json", r.output


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
    # the command too: once it has caught up, nothing to do is no error (it was a usage error, exit code 2)
    r = cli(["--config", cfg, "backups", "verify", "--unverified", "--no-restore"])
    assert r.code == 0 and "no unverified backups" in r.out, r.output
    assert cli(["--config", cfg, "backups", "verify", "--unverified", "--json"]).json() == []


def test_verify_cut_by_its_timeout_drops_the_scratch_database(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any) -> None:
    """The job's timeout SIGTERMs the worker in the middle of the scratch restore's checks: the scratch
    database is still dropped, and the backup is not judged (it stays complete)."""
    db, _ = app_db
    cfg = backup_config(db, extra_jobs={"backup-verify": {
        "task": "backup.verify", "target": "db", "timeout": "4s",
        "options": {"checks": ["select pg_sleep(60) is not null"], "jobs": 1}}})
    bid = _backup(cli, cfg)
    r = cli(["--config", cfg, "run", "backup-verify", "--json"])
    assert r.code == 1
    assert r.json()[0]["status"] in ("error", "fail") and "tim" in r.json()[0]["summary"].lower(), r.json()[0]
    assert _scratch_dbs(pg) == []
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "complete"


def test_backups_verify_stopped_by_sigterm_drops_its_scratch_database(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any,
        tmp_path: Path) -> None:
    """SIGTERM (``timeout``, ``kill``, systemd) to ``backups verify`` while its smoke check runs on the scratch
    database: exit 143 within seconds, the scratch database is dropped, backup.work_dir is left empty, and the
    backup is not judged (it stays complete); --json says so.  (SIGTERM used to end the command at once: the
    scratch database was left behind, and so was the decrypted dump of a verify that fetches one to disk; then
    --json printed nothing.)"""
    db, _ = app_db
    work = tmp_path / "work"
    work.mkdir()
    cfg = backup_config(db, backup={"work_dir": str(work)})
    bid = _backup(cli, cfg)
    p = subprocess.Popen([sys.executable, "-m", "upkeeper", "--config", str(cfg), "backups", "verify", bid,
                          "--jobs", "1", "--check", "select pg_sleep(60) is not null", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        _wait_for_the_smoke_check(p, pg)
    finally:
        took, out, err = terminate_and_read(p)  # the command only, as `kill PID` and `timeout` do
    assert p.returncode == 143, err.decode()
    assert took < 10, took
    assert _scratch_dbs(pg) == []
    assert [str(f) for f in work.rglob("*")] == []
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "complete"
    [rep] = json.loads(out)
    assert (rep["backup_id"], rep["ok"], rep["interrupted"]) == (bid, False, True), rep
    assert "stopped" in rep["error"], rep


@pytest.mark.parametrize("how", ["backups verify", "run backup-verify"])
def test_a_verify_stopped_with_its_whole_cgroup_drops_its_scratch_database_and_judges_nothing(
        how: str, cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any,
        tmp_path: Path) -> None:
    """``systemctl stop`` SIGTERMs every process of the unit at once — the command, a job's worker, pg_restore —
    while the smoke check runs on the scratch database, and the job's worker gets the CLI's own SIGTERM a moment
    later: the scratch database is still dropped (its drop made slow here), the backup stays complete (not
    verify-failed), a job's run is recorded interrupted, exit 143.  (The second SIGTERM raised in the worker
    again, in the middle of its cleanup: the scratch database was left behind.)"""
    db, _ = app_db
    work = tmp_path / "work"
    work.mkdir()
    cfg = backup_config(db, backup={"work_dir": str(work)},
                        verify={"checks": ["select pg_sleep(60) is not null"], "jobs": 1})
    bid = _backup(cli, cfg)
    argv = (["backups", "verify", bid, "--jobs", "1", "--check", "select pg_sleep(60) is not null"]
            if how == "backups verify" else ["run", "backup-verify", "--json"])
    p = subprocess.Popen([sys.executable, "-m", "upkeeper", "--config", str(cfg), *argv],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path),
                              "UPKEEPER_FAULT_PAUSE": "before-scratch-drop:0.8"})
    try:
        _wait_for_the_smoke_check(p, pg)
    finally:
        took, out, err, _procs = stop_cgroup(p)
    assert p.returncode == 143, err.decode()
    assert took < 10, took
    assert _scratch_dbs(pg) == []
    assert [str(f) for f in work.rglob("*")] == []
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "complete"
    if how == "run backup-verify":
        [run] = json.loads(out)
        assert run["status"] == "interrupted" and "asked to stop" in run["summary"], run


@pytest.mark.parametrize(("how", "sig"), [("backups verify", signal.SIGTERM), ("run backup-verify", signal.SIGTERM),
                                         ("backups verify", signal.SIGINT)],
                         ids=["backups verify", "run backup-verify", "backups verify ctrl-c"])
def test_a_sigterm_during_a_verify_s_own_cleanup_waits_for_it_to_end(
        how: str, sig: signal.Signals, cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any,
        tmp_path: Path) -> None:
    """A verify whose checks all passed is dropping its scratch database (that drop made slow here) when the
    command gets its one SIGTERM (``kill PID``): the drop runs to its end, then the stop is acted on — exit 143,
    no scratch database, backup.work_dir empty.  ``run backup-verify``: the command's SIGTERM to its worker is the
    worker's first.  (The SIGTERM raised inside the cleanup: the scratch database, a full copy of the data,
    stayed on the server.)  Ctrl-C (SIGINT) of ``backups verify``, which verifies in its own process, likewise
    (its KeyboardInterrupt cut the drop short)."""
    db, _ = app_db
    work = tmp_path / "work"
    work.mkdir()
    mark = tmp_path / "mark"
    cfg = backup_config(db, backup={"work_dir": str(work)}, verify={"jobs": 1})
    bid = _backup(cli, cfg)
    argv = (["backups", "verify", bid, "--jobs", "1"] if how == "backups verify" else ["run", "backup-verify"])
    p = subprocess.Popen([sys.executable, "-m", "upkeeper", "--config", str(cfg), *argv],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path),
                              "UPKEEPER_FAULT_PAUSE": "before-scratch-drop:1", "UPKEEPER_FAULT_MARK": str(mark)})
    try:
        deadline = time.monotonic() + 60
        while p.poll() is None and time.monotonic() < deadline and not mark.exists():
            time.sleep(0.02)
        assert p.poll() is None, p.communicate()
        assert _scratch_dbs(pg)
    finally:
        took, err = terminate_and_wait(p, sig=sig)
    assert p.returncode == 128 + sig, err.decode()
    assert took < 10, took
    assert _scratch_dbs(pg) == [], err.decode()
    assert [str(f) for f in work.rglob("*")] == []


def test_an_unreadable_newest_manifest_fails_verify_and_the_others_are_still_checked(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any, tmp_path: Path) -> None:
    """The newest set's manifest.json is damaged: the verify job fails naming it (it used to verify the
    backup before it and say ok); 'backups verify' reports it and goes on with the other backups."""
    db, _ = app_db
    cfg = backup_config(db, verify={"restore": False}, options={"retention": {"keep_last": 5}})
    older, newest = _backup(cli, cfg), _backup(cli, cfg)
    [mpath] = [p for p in (tmp_path / "store1").rglob("manifest.json") if newest in str(p)]
    mpath.write_text('{"id": "garbage')
    r = cli(["--config", cfg, "backups", "verify", "--unverified", "--no-restore", "--json"])
    assert r.code == 1, r.output  # it used to stop at the damaged set with "not found", checking nothing
    reps = {rep["backup_id"]: rep for rep in r.json()}
    assert reps[older]["ok"]
    assert not reps[newest]["ok"] and not reps[newest]["inconclusive"]
    assert reps[newest]["failed_object"] == "manifest.json" and "cannot be read" in reps[newest]["error"]
    assert cli(["--config", cfg, "backups", "show", newest, "--json"]).json()["status"] == "verify-failed"
    r = cli(["--config", cfg, "run", "backup-verify", "--json"])
    assert r.code == 1, r.output
    run = r.json()[0]
    assert run["status"] == "fail", run
    [finding] = [f for f in run["findings"] if f["check"] == "backup.verify_failed"]
    assert newest in finding["subject"] and "manifest.json" in finding["subject"]
    assert sorted(a["backup_id"] for a in run["artifacts"]) == sorted([older, newest])


def test_an_unreachable_scratch_server_leaves_backups_unjudged(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any, make_config: Any,
        tmp_path: Path) -> None:
    """A verify that cannot run (scratch server down) fails the run but does not mark the backup
    verify-failed; scope 'unverified' tries it again once the server is back."""
    db, _ = app_db
    cfg = backup_config(db, verify={"scope": "unverified", "scratch_target": "scratch"},
                        extra_jobs={"verify-here": {"task": "backup.verify", "target": "db",
                                                    "options": {"scope": "unverified"}}})
    import yaml

    data = yaml.safe_load(cfg.read_text())
    data["targets"]["scratch"] = {**pg.target(db), "port": 1, "connect_timeout": 2}
    cfg = make_config(data)
    bid = _backup(cli, cfg)
    r = cli(["--config", cfg, "run", "backup-verify", "--json"])
    assert r.code == 1, r.output
    run = r.json()[0]
    assert run["status"] == "fail" and "NOT CHECKED" in run["summary"], run
    [finding] = run["findings"]
    assert finding["check"] == "backup.verify_not_run" and "cannot connect" in finding["message"]
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "complete"
    r = cli(["--config", cfg, "run", "verify-here", "--json"])
    assert r.code == 0 and r.json()[0]["artifacts"][0]["backup_id"] == bid, r.output
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "verified"


def _reconfigure(cfg: Path, make_config: Any, encryption: dict[str, Any]) -> Path:
    """The same config with another ``backup -> encryption`` (a verify host set up with other keys)."""
    import yaml

    data = yaml.safe_load(cfg.read_text())
    data["backup"]["encryption"] = encryption
    return make_config(data, "verify-host.yaml")


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_verify_host_with_another_age_key_leaves_the_backup_unjudged(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any, make_config: Any,
        age_key: AgeKey, tmp_path: Path, jobs: int) -> None:
    """The identity_file of the verifying host is not among the backup's recipients (recorded in its manifest):
    the backup is not condemned — the run says it was NOT CHECKED, naming both keys and the file to fix — and
    with the right identity it verifies."""
    db, _ = app_db
    cfg = backup_config(db, verify={"jobs": jobs})
    bid = _backup(cli, cfg)
    other = tmp_path / "other-key.txt"
    subprocess.run(["age-keygen", "-o", str(other)], check=True, capture_output=True)
    other_pub = subprocess.run(["age-keygen", "-y", str(other)], check=True, capture_output=True,
                               text=True).stdout.strip()
    wrong = _reconfigure(cfg, make_config, {"recipients": [age_key.recipient], "identity_file": str(other)})
    r = cli(["--config", wrong, "run", "backup-verify", "--json"])
    finding = _not_checked(r)
    msg = finding["message"]
    assert str(other) in msg and other_pub in msg and age_key.recipient in msg, msg
    assert cli(["--config", wrong, "backups", "show", bid, "--json"]).json()["status"] == "complete"
    assert _scratch_dbs(pg) == []
    r = cli(["--config", cfg, "run", "backup-verify", "--json"])
    assert r.code == 0, r.output
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "verified"


def test_a_wrong_passphrase_leaves_the_backup_unjudged(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any, make_config: Any,
        tmp_path: Path) -> None:
    """Passphrase mode: a verify host with another passphrase cannot tell anything about the backup (its bytes
    match their SHA-256): NOT CHECKED, naming passphrase_file; the backup keeps its status."""
    db, _ = app_db
    right, wrong = tmp_path / "pass-right", tmp_path / "pass-wrong"
    right.write_text("correct horse battery staple")
    wrong.write_text("incorrect horse")
    cfg = backup_config(db, encrypt=False, backup={"encryption": {"passphrase_file": str(right)}},
                        verify={"jobs": 1})
    bid = _backup(cli, cfg)
    bad = _reconfigure(cfg, make_config, {"passphrase_file": str(wrong)})
    r = cli(["--config", bad, "run", "backup-verify", "--json"])
    finding = _not_checked(r)
    assert "passphrase" in finding["message"], finding
    assert "incorrect horse" not in r.output
    assert cli(["--config", bad, "backups", "show", bid, "--json"]).json()["status"] == "complete"
    assert _scratch_dbs(pg) == []
    # one byte of the scrypt stanza corrupted on storage: its SHA-256 is checked before age's answer is judged,
    # so it is the backup's fault whichever passphrase the host has — verify-failed, naming the object
    name = f"{db}.dump.zst.age"
    obj = _stored_set(tmp_path / "store1") / name
    data = bytearray(obj.read_bytes())
    data[data.index(b"\n", data.index(b"-> scrypt")) + 3] ^= 0x01
    obj.write_bytes(bytes(data))
    r = cli(["--config", bad, "backups", "verify", bid, "--json"])
    assert r.code == 1, r.output
    [rep] = r.json()
    assert not rep["inconclusive"] and rep["failed_object"] == name and "corrupt" in rep["error"], rep
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "verify-failed"


@pytest.mark.parametrize("where", ["header", "payload"])
def test_ciphertext_that_the_right_key_cannot_decrypt_fails_verify(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any, tmp_path: Path,
        where: str) -> None:
    """The other side: our identity is among the recipients and the stored bytes match the manifest (written
    so), yet age rejects them — a corrupt key stanza in the age header, or a corrupt payload chunk: that is the
    backup's fault, verify-failed."""
    db, _ = app_db
    cfg = backup_config(db, verify={"jobs": 1})
    bid = _backup(cli, cfg)
    set_dir = _stored_set(tmp_path / "store1")
    name = f"{db}.dump.zst.age"
    obj = set_dir / name
    data = bytearray(obj.read_bytes())
    if where == "header":
        stanza = data.index(b"-> X25519")
        data[data.index(b"\n", stanza) + 3] ^= 0x01  # the wrapped file key, on the stanza's second line
    else:
        data[len(data) // 2] ^= 0x01
    obj.write_bytes(bytes(data))
    m = json.loads((set_dir / "manifest.json").read_text())
    [rec] = [o for o in m["objects"] if o["name"] == name]
    rec["size"], rec["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    rewrite_manifest(cli, cfg, set_dir / "manifest.json", m)
    r = cli(["--config", cfg, "backups", "verify", bid, "--json"])
    assert r.code == 1, r.output
    [rep] = r.json()
    assert not rep["ok"] and not rep["inconclusive"] and "decrypt" in rep["error"], rep
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "verify-failed"


def test_a_pg_restore_older_than_the_backups_pg_dump_leaves_it_unjudged(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any,
        tmp_path: Path) -> None:
    """The backup was made by a newer pg_dump (16: archive format 1.15) than this host's pg_restore (15, which
    rejects it: "unsupported version (1.15) in file header"): a setup problem naming both versions, not a
    broken backup.  Only PostgreSQL 15 is installed here, so the set stands for a pg_dump 16 one: a real
    archive whose header says 1.15, and a manifest recording pg_dump 16.4."""
    import zstandard

    db, _ = app_db
    cfg = backup_config(db, encrypt=False, verify={"jobs": 1})
    bid = _backup(cli, cfg)
    set_dir = _stored_set(tmp_path / "store1")
    obj = set_dir / f"{db}.dump.zst"
    dump = bytearray(zstandard.ZstdDecompressor().decompressobj().decompress(obj.read_bytes()))
    assert dump[:5] == b"PGDMP" and (dump[5], dump[6]) == (1, 14), dump[:8]
    dump[6] = 15  # the format pg_dump 16 writes
    data = zstandard.ZstdCompressor().compress(bytes(dump))
    obj.write_bytes(data)
    m = json.loads((set_dir / "manifest.json").read_text())
    [rec] = [o for o in m["objects"] if o["name"] == obj.name]
    rec["size"], rec["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    m["postgres"]["pg_dump_version"] = "16.4"
    rewrite_manifest(cli, cfg, set_dir / "manifest.json", m)
    r = cli(["--config", cfg, "run", "backup-verify", "--json"])
    finding = _not_checked(r)
    assert "pg_dump 16.4" in finding["message"] and "pg_restore 15." in finding["message"], finding
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "complete"
    assert _scratch_dbs(pg) == []
    r = cli(["--config", cfg, "backups", "restore", bid, "--json"])  # the same check before a restore
    assert r.code != 0 and "pg_dump 16.4" in r.output and "pg_restore 15." in r.output, r.output
    assert not [d for (d,) in pg.execute("SELECT datname FROM pg_database") if "restore" in d]


def test_a_scratch_server_older_than_the_backups_source_leaves_it_unjudged(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any,
        tmp_path: Path) -> None:
    """The backup was taken from PostgreSQL 16 and the scratch server runs 15: a restore there may fail on
    newer syntax, which says nothing about the backup — NOT CHECKED, naming both versions and scratch_target;
    the backup stays complete.  Only PostgreSQL 15 is installed here, so the manifest records a 16.4 source.
    A manifest that records no server version (older upkeeper) verifies as before; 'backups restore' into the
    older server warns and goes ahead (a failed attempt would change nothing)."""
    db, _ = app_db
    cfg = backup_config(db, verify={"jobs": 1})
    bid = _backup(cli, cfg)
    mpath = _stored_set(tmp_path / "store1") / "manifest.json"
    m = json.loads(mpath.read_text())
    assert str(m["postgres"]["server_version"]).startswith("15.") and m["postgres"]["server_version_num"] > 150000
    m["postgres"]["server_version"], m["postgres"]["server_version_num"] = "16.4", 160004
    rewrite_manifest(cli, cfg, mpath, m)
    r = cli(["--config", cfg, "run", "backup-verify", "--json"])
    finding = _not_checked(r)
    msg = finding["message"]
    assert "PostgreSQL 16.4" in msg and "PostgreSQL 15." in msg and "scratch_target" in msg, msg
    assert "PostgreSQL 16 or newer" in msg, msg
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "complete"
    assert _scratch_dbs(pg) == []
    r = cli(["--config", cfg, "backups", "verify", bid, "--no-restore", "--json"])  # no scratch server involved
    assert r.code == 0 and r.json()[0]["ok"], r.output
    r = cli(["--config", cfg, "backups", "restore", bid, "--database", f"{db}_older", "--json"])
    assert r.code == 0, r.output
    assert "PostgreSQL 16.4" in r.json()["server_version_warning"] and "older major" in r.err, r.output
    pg.execute(f'DROP DATABASE "{db}_older"')
    del m["postgres"]["server_version"], m["postgres"]["server_version_num"]
    rewrite_manifest(cli, cfg, mpath, m)
    r = cli(["--config", cfg, "run", "backup-verify", "--json"])
    assert r.code == 0 and r.json()[0]["status"] == "ok", r.output


def test_a_scratch_role_that_may_not_create_databases_leaves_the_backup_unjudged(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any, make_config: Any
        ) -> None:
    """The verify connects as a role without CREATEDB: "permission denied to create database" says nothing
    about the backup — NOT CHECKED, naming the scratch database and the fix; the backup stays complete."""
    import yaml

    db, _ = app_db
    role = f"nocreate_{db}"[:63]
    pg.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        cfg = backup_config(db)
        bid = _backup(cli, cfg)
        data = yaml.safe_load(cfg.read_text())
        data["targets"]["db"]["user"] = role
        r = cli(["--config", make_config(data, "verify-host.yaml"), "run", "backup-verify", "--json"])
    finally:
        pg.execute(f'DROP ROLE "{role}"')
    finding = _not_checked(r)
    assert "permission denied to create database" in finding["message"] and "CREATEDB" in finding["message"]
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "complete"
    assert _scratch_dbs(pg) == []


def _not_checked(r: Any) -> dict[str, Any]:
    """The one finding of a backup-verify run that could not judge its backup (NOT CHECKED, exit 1)."""
    assert r.code == 1, r.output
    run = r.json()[0]
    assert "NOT CHECKED" in run["summary"], run
    [finding] = run["findings"]
    assert finding["check"] == "backup.verify_not_run", finding
    return dict(finding)


def _verify_as_createdb_role(cli: Any, pg: PostgresCluster, role: str, cfg: Path, make_config: Any
                             ) -> tuple[Path, str, Any]:
    """Back up with ``cfg`` and verify on scratch target ``scratch``: the same server, as ``role``, a LOGIN
    CREATEDB role that is not a superuser (made here, dropped after).  Returns (config, backup id, verify run)."""
    import yaml

    pg.execute(f'CREATE ROLE "{role}" LOGIN CREATEDB')
    try:
        data = yaml.safe_load(cfg.read_text())
        data["targets"]["scratch"] = {**pg.target("postgres"), "user": role}
        cfg = make_config(data)
        bid = _backup(cli, cfg)
        return cfg, bid, cli(["--config", cfg, "run", "backup-verify", "--json"])
    finally:
        pg.execute(f'DROP ROLE "{role}"')


def test_rows_hidden_by_forced_row_level_security_from_a_non_superuser_scratch_role_are_counted(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any, make_config: Any
        ) -> None:
    """A table with FORCE ROW LEVEL SECURITY, restored by a scratch role that is not a superuser (it owns the
    restored tables, so their policies apply to it): its rows are all restored and counted — not "0 rows
    restored" and a good backup marked verify-failed."""

    db, _ = app_db
    role = f"scratch_{db}"[:63]
    pg.execute("DROP EXTENSION pg_stat_statements", db)  # a non-superuser may not create it in the scratch database
    pg.execute("CREATE TABLE tenant_notes (id int PRIMARY KEY, tenant text NOT NULL);"
               "INSERT INTO tenant_notes SELECT g, 'acme' FROM generate_series(1, 50) g;"
               "ALTER TABLE tenant_notes ENABLE ROW LEVEL SECURITY; ALTER TABLE tenant_notes FORCE ROW LEVEL SECURITY;"
               "CREATE POLICY own_tenant ON tenant_notes USING (tenant = current_user)", db)
    cfg, bid, r = _verify_as_createdb_role(cli, pg, role, backup_config(db, verify={"scratch_target": "scratch",
                                                                                    "jobs": 1}), make_config)
    assert r.code == 0, r.output
    run = r.json()[0]
    assert run["status"] == "ok" and run["artifacts"][0]["tables"] == len(SMALL) + 1, run
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "verified"
    assert _scratch_dbs(pg) == []


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_scratch_role_that_may_not_create_an_extension_of_the_dump_leaves_the_backup_unjudged(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any, make_config: Any,
        jobs: int) -> None:
    """The scratch role may create databases but is no superuser, and the dump holds an extension only a
    superuser may create (pg_stat_statements): pg_restore fails on the scratch server's setup, not on the
    backup — NOT CHECKED naming the error, the backup stays complete (streamed or fetched)."""

    db, _ = app_db
    role = f"scratch_{db}"[:63]
    cfg, bid, r = _verify_as_createdb_role(cli, pg, role, backup_config(db, verify={"scratch_target": "scratch",
                                                                                    "jobs": jobs}), make_config)
    finding = _not_checked(r)
    assert 'permission denied to create extension "pg_stat_statements"' in finding["message"], finding
    assert "scratch_target" in finding["message"], finding
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "complete"
    assert _scratch_dbs(pg) == []


def test_row_counts_of_a_schema_whose_name_holds_a_dot_are_compared(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any, tmp_path: Path) -> None:
    """The manifest keys row counts as "schema.table", each name quoted as SQL does when it is not plain
    lowercase: a schema named "My.App" (with a mixed-case, quoted table) is matched with the restored table, not
    split at its first dot ('relation "My.App.…" does not exist' marked a good backup verify-failed).  A table
    the manifest lists that the restore lacks fails, naming it."""
    db, _ = app_db
    pg.execute('CREATE SCHEMA "My.App"; CREATE TABLE "My.App"."Odd ""Name""" (id int);'
               'INSERT INTO "My.App"."Odd ""Name""" SELECT generate_series(1, 7)', db)
    cfg = backup_config(db, verify={"jobs": 1})
    bid = _backup(cli, cfg)
    r = cli(["--config", cfg, "backups", "verify", bid, "--json"])
    assert r.code == 0, r.output
    [rep] = r.json()
    assert rep["ok"] and rep["tables"] == len(SMALL) + 1, rep
    mpath = _stored_set(tmp_path / "store1") / "manifest.json"
    m = json.loads(mpath.read_text())
    assert m["postgres"]["row_counts"]['"My.App"."Odd ""Name"""'] == 7
    assert pg.execute('select count(*) from "My.App"."Odd ""Name"""', db)[0][0] == 7  # the key is SQL as is
    m["postgres"]["row_counts"]["public.ghost"] = 5
    rewrite_manifest(cli, cfg, mpath, m)
    r = cli(["--config", cfg, "backups", "verify", bid, "--json"])
    assert r.code == 1, r.output
    [rep] = r.json()
    assert not rep["ok"] and "table public.ghost: missing from the restore" in rep["error"], rep


def test_tables_whose_dotted_names_join_alike_are_counted_apart(
        cli: Any, pg: PostgresCluster, pg_db: str, backup_config: Any, tmp_path: Path) -> None:
    """Schema "a.b" with table "c" and schema "a" with table "b.c" were both "a.b.c" in the manifest: one count
    overwrote the other (the manifest said 1 table), and the other table's rows were never compared.  Each has
    its own key now, and each is compared; a manifest of an older upkeeper (unquoted keys, no
    row_count_keys) still verifies as it did."""
    pg.execute('CREATE SCHEMA "a.b"; CREATE SCHEMA a; CREATE TABLE "a.b".c (id int); CREATE TABLE a."b.c" (id int);'
               'INSERT INTO "a.b".c SELECT generate_series(1, 3); INSERT INTO a."b.c" SELECT generate_series(1, 5)',
               pg_db)
    cfg = backup_config(pg_db, verify={"jobs": 1})
    bid = _backup(cli, cfg)
    mpath = _stored_set(tmp_path / "store1") / "manifest.json"
    m = json.loads(mpath.read_text())
    assert m["postgres"]["row_counts"] == {'"a.b".c': 3, 'a."b.c"': 5} and m["postgres"]["tables"] == 2, m
    r = cli(["--config", cfg, "backups", "verify", bid, "--json"])
    assert r.code == 0 and r.json()[0]["tables"] == 2, r.output
    m["postgres"]["row_counts"]['a."b.c"'] = 4  # as a dump that lost a row of a."b.c" would say
    rewrite_manifest(cli, cfg, mpath, m)
    r = cli(["--config", cfg, "backups", "verify", bid, "--json"])
    assert r.code == 1, r.output
    assert 'table a."b.c": 5 rows restored, manifest says 4' in r.json()[0]["error"], r.output
    del m["postgres"]["row_count_keys"]
    m["postgres"]["row_counts"] = {"a.b.c": 3}  # what the older upkeeper wrote: the last table counted
    rewrite_manifest(cli, cfg, mpath, m)
    r = cli(["--config", cfg, "backups", "verify", bid, "--json"])
    assert r.code == 0 and r.json()[0]["ok"], r.output


def test_a_standby_or_a_read_only_role_as_scratch_server_leaves_the_backup_unjudged(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any, make_config: Any,
        pg_primary_replica: tuple[PostgresCluster, PostgresCluster]) -> None:
    """A backup taken from a streaming replica is verified on that replica by default, which is read-only; so is
    every session of a role with default_transaction_read_only.  Neither says anything about the backup: NOT
    CHECKED naming the cause and scratch_target, the backup stays complete (the read-only error of the
    scratch database's cleanup replaced the verify's own and marked the backup verify-failed)."""
    import yaml

    primary, replica = pg_primary_replica
    src = f"standby_{app_db[0]}"
    cfg = standby_backup_config(primary, replica, src, backup_config, make_config)
    bid = _backup(cli, cfg)
    r = cli(["--config", cfg, "run", "backup-verify", "--json"])
    assert r.code == 1, r.output
    [finding] = r.json()[0]["findings"]
    assert finding["check"] == "backup.verify_not_run", finding
    assert "is a standby" in finding["message"] and "scratch_target" in finding["message"], finding
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "complete"

    db, _ = app_db
    role = f"readonly_{db}"[:63]
    pg.execute(f'CREATE ROLE "{role}" LOGIN CREATEDB IN ROLE pg_read_all_data')
    pg.execute(f'ALTER ROLE "{role}" SET default_transaction_read_only = on')
    try:
        cfg = backup_config(db)
        data = yaml.safe_load(cfg.read_text())
        data["targets"]["db"]["user"] = role
        cfg = make_config(data, "read-only-role.yaml")
        bid = _backup(cli, cfg)
        r = cli(["--config", cfg, "backups", "verify", bid, "--json"])
    finally:
        pg.execute(f'DROP ROLE "{role}"')
    assert r.code == 1, r.output
    [rep] = r.json()
    assert rep["inconclusive"] and "read-only transaction" in rep["error"], rep
    assert "default_transaction_read_only" in rep["error"], rep
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "complete"
    assert _scratch_dbs(pg) == []


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_database_without_tables_verifies(cli: Any, pg: PostgresCluster, pg_db: str, backup_config: Any,
                                            jobs: int) -> None:
    """An empty database (the usual 'postgres' one, backed up by default) dumps to an archive whose table of
    contents lists nothing: a true copy, verified as such — not 'verify-failed' at every run."""
    cfg = backup_config(pg_db)
    bid = _backup(cli, cfg)
    r = cli(["--config", cfg, "backups", "verify", bid, "--jobs", str(jobs), "--json"])
    assert r.code == 0, r.output
    assert any("one pass" in s for s in r.json()[0]["steps"]) == (jobs == 1), r.output  # both ways checked
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "verified"
    assert _scratch_dbs(pg) == []


def test_after_a_key_rotation_a_list_of_identity_files_reads_old_and_new_backups(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any, make_config: Any,
        age_key: AgeKey, tmp_path: Path) -> None:
    """The team replaces the age key: new backups go to the new recipient, and 'identity_file' lists the new key
    and the old one, so verify and restore still read the backups made before the rotation."""
    db, counts = app_db
    cfg = backup_config(db)
    old_bid = _backup(cli, cfg)
    new_key = tmp_path / "new-key.txt"
    subprocess.run(["age-keygen", "-o", str(new_key)], check=True, capture_output=True)
    new_pub = subprocess.run(["age-keygen", "-y", str(new_key)], check=True, capture_output=True,
                             text=True).stdout.strip()
    rotated = _reconfigure(cfg, make_config, {"recipients": [new_pub],
                                              "identity_file": [str(new_key), str(age_key.identity)]})
    new_bid = _backup(cli, rotated)
    manifest = cli(["--config", rotated, "backups", "show", new_bid, "--json"]).json()
    assert manifest["manifest"]["encryption"]["recipients"] == [new_pub], manifest
    for bid in (old_bid, new_bid):
        for jobs in ("1", "2"):
            r = cli(["--config", rotated, "backups", "verify", bid, "--jobs", jobs, "--json"])
            assert r.code == 0, r.output
    r = cli(["--config", rotated, "backups", "restore", old_bid, "--database", f"{db}_old_key", "--json"])
    assert r.code == 0, r.output
    assert pg.execute("select count(*) from users", dbname=f"{db}_old_key")[0][0] == counts["users"]
    pg.execute(f'DROP DATABASE "{db}_old_key"')
    # the new key alone does not open the old backup: not checked, naming the file and the recipients
    only_new = _reconfigure(cfg, make_config, {"recipients": [new_pub], "identity_file": [str(new_key)]})
    r = cli(["--config", only_new, "backups", "verify", old_bid, "--json"])
    assert r.code == 1 and str(new_key) in r.output and age_key.recipient in r.output, r.output


def test_a_set_copied_to_another_storage_is_synced_and_verifies_there(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any, make_config: Any,
        tmp_path: Path) -> None:
    """docs/storage.md, moving backups to another storage: a set copied byte for byte (manifest last) under the
    same keys is the same backup there — sync records the new storage, verify reads it from there, and once the
    old storage is gone from the config the row keeps its status and names only the new one."""
    import shutil

    import yaml

    db, _ = app_db
    cfg = backup_config(db)
    bid = _backup(cli, cfg)
    old, new = tmp_path / "store1", tmp_path / "moved"
    new.mkdir()
    manifests = sorted(old.rglob("manifest.json"))
    for f in sorted(p for p in old.rglob("*") if p.is_file() and p not in manifests) + manifests:
        (new / f.relative_to(old)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, new / f.relative_to(old))
    data = yaml.safe_load(cfg.read_text())
    data["storages"]["moved"] = {"kind": "local", "path": str(new), "fsync": False}
    both = make_config(data, "both.yaml")
    assert cli(["--config", both, "backups", "sync"]).code == 0
    assert cli(["--config", both, "backups", "show", bid, "--json"]).json()["storages"] == ["local1", "moved"]
    r = cli(["--config", both, "backups", "verify", bid, "--storage", "moved", "--json"])
    assert r.code == 0, r.output
    del data["storages"]["local1"]
    moved = make_config(data, "moved.yaml")
    assert cli(["--config", moved, "backups", "sync"]).code == 0
    row = cli(["--config", moved, "backups", "show", bid, "--json"]).json()
    assert row["storages"] == ["moved"] and row["status"] == "verified", row


def test_sequences_and_large_objects_are_recorded_and_compared(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any, tmp_path: Path) -> None:
    """Verify compared table rows only: a restore whose sequences came back behind the data (new rows then fail
    with duplicate keys) or that lost large objects passed.  The manifest records every sequence's state (read
    after the dump's snapshot, before pg_dump reads it) and the number of large objects; verify fails naming the
    sequence restored behind it, or when the large objects differ.  A manifest without them (an older upkeeper)
    still verifies, saying they were not compared."""
    db, _ = app_db
    pg.execute("CREATE SEQUENCE invoice_no START 500; SELECT setval('invoice_no', 1000, false);"
               "CREATE SEQUENCE countdown INCREMENT -1 MINVALUE 1 MAXVALUE 100 START 100; SELECT nextval('countdown'), nextval('countdown');"
               "SELECT lo_from_bytea(0, 'scanned contract')", db)
    max_user = pg.execute("SELECT max(id) FROM users", db)[0][0]
    cfg = backup_config(db, verify={"jobs": 1})
    bid = _backup(cli, cfg)
    mpath = _stored_set(tmp_path / "store1") / "manifest.json"
    m = json.loads(mpath.read_text())
    seqs = m["postgres"]["sequences"]
    assert seqs["public.users_id_seq"] == {"last_value": max_user, "is_called": True, "increment": 1,
                                           "cycle": False}, seqs
    assert seqs["public.invoice_no"]["last_value"] == 1000 and seqs["public.invoice_no"]["is_called"] is False
    assert seqs["public.countdown"]["last_value"] == 99 and seqs["public.countdown"]["increment"] == -1
    assert m["postgres"]["large_objects"] == 1
    r = cli(["--config", cfg, "backups", "verify", bid, "--json"])
    assert r.code == 0, r.output
    [rep] = r.json()
    assert rep["sequences"] == len(seqs) and rep["large_objects"] == 1, rep
    assert f"{len(seqs)} sequence(s) restored at or past their recorded values" in rep["steps"], rep

    def verify_with(edit: Any) -> dict[str, Any]:
        changed = json.loads(json.dumps(m))
        edit(changed["postgres"])
        rewrite_manifest(cli, cfg, mpath, changed)
        r = cli(["--config", cfg, "backups", "verify", bid, "--json"])
        assert r.code in (0, 1), r.output
        out: dict[str, Any] = r.json()[0]
        return out

    # the dump set users_id_seq behind the rows the backup holds (as a lost setval leaves it at its start)
    rep = verify_with(lambda p: p["sequences"]["public.users_id_seq"].update(last_value=max_user + 10))
    assert not rep["ok"] and "sequence public.users_id_seq: restored with last_value" in rep["error"], rep
    assert "duplicate key" in rep["error"], rep
    rep = verify_with(lambda p: p["sequences"]["public.invoice_no"].update(is_called=True))  # 1001 is next
    assert not rep["ok"] and "sequence public.invoice_no" in rep["error"], rep
    rep = verify_with(lambda p: p["sequences"]["public.countdown"].update(last_value=98))  # descending: 97 next
    assert not rep["ok"] and "sequence public.countdown" in rep["error"], rep
    rep = verify_with(lambda p: p["sequences"].update(ghost_seq={"last_value": 1, "is_called": False}))
    assert not rep["ok"] and "sequence ghost_seq: missing from the restore" in rep["error"], rep
    rep = verify_with(lambda p: p.update(large_objects=2))
    assert not rep["ok"] and "large objects differ: 1 restored, manifest says 2" in rep["error"], rep
    # behind the dump's value is fine: the sequence moved on between upkeeper's read and pg_dump's
    rep = verify_with(lambda p: p["sequences"]["public.users_id_seq"].update(last_value=max_user - 5))
    assert rep["ok"], rep

    def older(p: dict[str, Any]) -> None:
        del p["sequences"], p["large_objects"]
    rep = verify_with(older)
    assert rep["ok"], rep
    assert "sequences: not recorded in this backup's manifest (an older upkeeper), not compared" in rep["steps"]


def test_sequences_moving_during_the_backup_still_verify(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any) -> None:
    """The app takes ids while the dump runs: pg_dump reads the sequence after upkeeper did, so the restored
    sequence is at or past the manifest's value, never a false verify-failed."""
    import threading

    db, _ = app_db
    stop = threading.Event()

    def take_ids() -> None:
        with pg.connect(db) as conn:
            while not stop.is_set():
                conn.execute("SELECT nextval('users_id_seq'), nextval('bookings_id_seq')")

    t = threading.Thread(target=take_ids, daemon=True)
    t.start()
    try:
        cfg = backup_config(db, options={"format": "directory"}, verify={"jobs": 2})
        bid = _backup(cli, cfg)
    finally:
        stop.set()
        t.join(10)
    r = cli(["--config", cfg, "backups", "verify", bid, "--json"])
    assert r.code == 0 and r.json()[0]["ok"], r.output


def _manifest(tmp_path: Path, bid: str) -> tuple[Path, dict[str, Any]]:
    [mpath] = (tmp_path / "store1").rglob(f"{bid}/manifest.json")
    return mpath, json.loads(mpath.read_text())


def test_a_restore_that_does_not_fit_on_the_scratch_servers_disk_is_not_started(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any,
        tmp_path: Path) -> None:
    """The scratch restore ran on the production server whatever the database's size: a 100 GB database filled
    its disk.  The backup records pg_database_size; before the scratch database is created the verify compares
    it × space_margin plus min_free_space with the free space of the server's data directory: short → NOT
    CHECKED (the backup keeps its status), naming the sizes and scratch_target, nothing created."""
    db, _ = app_db
    cfg = backup_config(db)
    bid = _backup(cli, cfg)
    mpath, m = _manifest(tmp_path, bid)
    size = pg.execute(f"SELECT pg_database_size('{db}')")[0][0]
    assert 0 < m["postgres"]["database_size"] <= size * 2, m["postgres"]
    r = cli(["--config", cfg, "backups", "verify", bid, "--json"])
    assert r.code == 0, r.output
    [rep] = r.json()
    assert any(s.startswith("disk space for the restore (the database's size at backup time × 1.25)")
               for s in rep["steps"]), rep
    m["postgres"]["database_size"] = 1 << 50  # 1 PiB
    rewrite_manifest(cli, cfg, mpath, m)
    r = cli(["--config", cfg, "run", "backup-verify", "--json"])
    assert r.code == 1, r.output
    run = r.json()[0]
    [f] = [f for f in run["findings"] if f["check"] == "backup.verify_not_run"]
    assert "not enough disk space for the restore" in f["message"] and "1.2 PiB" in f["message"], f
    assert "scratch_target" in f["message"] and "not started" in f["message"], f
    assert _scratch_dbs(pg) == []
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "complete"
    # a manifest of an older upkeeper: estimated from the dump's size
    del m["postgres"]["database_size"]
    rewrite_manifest(cli, cfg, mpath, m)
    r = cli(["--config", cfg, "backups", "verify", bid, "--json"])
    assert r.code == 0, r.output
    assert any("its dump's size × 2" in s for s in r.json()[0]["steps"]), r.output


@pytest.fixture
def tmpfs_cluster(services_dir: Path) -> Any:
    """A PostgreSQL cluster whose data directory is on a fresh 160 MiB tmpfs (a small real disk).  Needs root."""
    import os
    import shutil
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = Path(tempfile.mkdtemp(prefix="upk-pgfs-", dir="/tmp"))
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160m,mode=0755", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        mnt.rmdir()
        pytest.skip(f"cannot mount a tmpfs: {res.stderr.strip()}")
    cluster = PostgresCluster(mnt / "pg")
    try:
        cluster.start()
        yield cluster, mnt
    finally:
        cluster.stop()
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        shutil.rmtree(mnt, ignore_errors=True)


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_restore_that_brings_the_free_space_below_the_reserve_is_stopped_and_dropped(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any, tmp_path: Path,
        tmpfs_cluster: Any, jobs: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the scratch restore runs, a watch keeps min_free_space free on the scratch server's disk: once the
    free space falls below it, the restore is stopped and the scratch database dropped — NOT CHECKED, naming
    the reason; the backup keeps its status.  (Here the estimate is wrong — a manifest saying 0 bytes — so the
    check before the restore lets it start.)"""
    import os

    import yaml

    from upkeeper.backup import room

    monkeypatch.setattr(room, "WATCH_INTERVAL", 0.01)  # the restore here takes a fraction of a second
    scratch, mnt = tmpfs_cluster
    db, _ = app_db
    with pg.connect(db) as conn:  # ~40 MiB to restore
        conn.execute("CREATE TABLE filler AS SELECT g AS id, repeat(md5(g::text), 6) AS t "
                     "FROM generate_series(1, 200000) g")
    cfg = backup_config(db)
    data = yaml.safe_load(cfg.read_text())
    data["targets"]["scratch"] = scratch.target()
    free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
    reserve = free - 20 * 1024 * 1024
    data["jobs"]["backup-verify"]["options"] = {"scratch_target": "scratch", "jobs": jobs, "min_free_space": reserve}
    cfg.write_text(yaml.safe_dump(data))
    bid = _backup(cli, cfg)
    mpath, m = _manifest(tmp_path, bid)
    m["postgres"]["database_size"] = 0
    rewrite_manifest(cli, cfg, mpath, m)
    # in this process (a job runs in a worker): the watch looks every 10 ms, and stops the restore midway
    r = cli(["--config", cfg, "backups", "verify", bid, "--scratch-target", "scratch", "--jobs", jobs,
             "--min-free-space", reserve, "--json"])
    assert r.code == 1, r.output
    [rep] = r.json()
    assert rep["inconclusive"] and "test restore stopped" in rep["error"], rep
    assert not any(" into upkeeper_verify_" in s for s in rep["steps"]), rep  # it did not finish
    assert _scratch_dbs(scratch) == []
    r = cli(["--config", cfg, "run", "backup-verify", "--json"])
    assert r.code == 1, r.output
    run = r.json()[0]
    [f] = [f for f in run["findings"] if f["check"] == "backup.verify_not_run"]
    assert "test restore stopped" in f["message"] and "min_free_space" in f["message"], f
    assert str(mnt) in f["message"], f
    assert _scratch_dbs(scratch) == []
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "complete"


def test_the_free_space_of_a_directory_this_user_cannot_reach_is_read_at_its_mount_point(tmp_path: Path) -> None:
    """A data directory is 0700 postgres: a verify running as another user measures its file system at the
    longest mount point it lies under (/proc/self/mounts, octal escapes decoded)."""
    from upkeeper.backup import room

    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/sda1 / ext4 rw 0 0\n/dev/sdb1 /var/lib/postgresql ext4 rw 0 0\n"
                      "tmpfs /srv/pg\\040data tmpfs rw 0 0\n")
    assert room.mount_point(Path("/var/lib/postgresql/15/main/base"), mounts) == Path("/var/lib/postgresql")
    assert room.mount_point(Path("/srv/pg data/base"), mounts) == Path("/srv/pg data")
    assert room.mount_point(Path("/var/lib/postgresqlx/base"), mounts) == Path("/")


def _with_sequence_moved_back_during_the_dump(cli: Any, pg: PostgresCluster, db: str, cfg: Path,
                                              moves: str) -> tuple[str, dict[str, Any]]:
    """A backup during which ``moves`` (SQL moving sequences) runs after upkeeper read the sequences and
    before pg_dump does: a session holds a lock on users, so pg_dump waits for it once upkeeper's read is
    done; the session runs ``moves`` and lets go.  Returns the backup's id and the run's result."""
    import threading
    import time

    ready = threading.Event()
    errors: list[BaseException] = []

    def hold_and_move() -> None:
        try:
            with pg.connect(db, autocommit=False) as conn, pg.connect(db) as look:
                conn.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
                ready.set()
                deadline = time.monotonic() + 30
                while not look.execute(
                        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name LIKE "
                        "'upkeeper pg_dump%%' AND wait_event_type = 'Lock')").fetchone()[0]:
                    assert time.monotonic() < deadline, "pg_dump never waited for the lock"
                    time.sleep(0.02)
                conn.execute(moves)
                conn.commit()
        except BaseException as exc:
            errors.append(exc)
            ready.set()

    t = threading.Thread(target=hold_and_move, daemon=True)
    t.start()
    ready.wait(10)
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    t.join(30)
    assert not errors, errors
    assert r.code == 0, r.output
    run: dict[str, Any] = r.json()[0]
    return str(run["artifacts"][0]["id"]), run


@pytest.mark.parametrize("fmt", ["custom", "directory"])
def test_a_sequence_moved_back_during_the_dump_verifies(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any, tmp_path: Path,
        fmt: str) -> None:
    """Sequences are not transactional: an app resetting a counter (setval back, ALTER SEQUENCE RESTART) after
    upkeeper read the sequences and before pg_dump did leaves a dump that holds the lower value — a true copy
    of the database at pg_dump's read.  Verify required the restore to be at least at upkeeper's earlier read
    and marked the backup verify-failed.  The manifest now records the value the dump holds (and the one read
    before, saying it moved back), the copy verifies, and a restore behind the dump's value still fails."""
    db, _ = app_db
    max_user = pg.execute("SELECT max(id) FROM users", db)[0][0]
    pg.execute("CREATE SEQUENCE counter START 50; SELECT setval('counter', 900)", db)
    cfg = backup_config(db, options={"format": fmt})
    bid, _ = _with_sequence_moved_back_during_the_dump(
        cli, pg, db, cfg, "SELECT setval('counter', 7); ALTER SEQUENCE users_id_seq RESTART WITH 3")
    mpath, m = _manifest(tmp_path, bid)
    seqs = m["postgres"]["sequences"]
    assert seqs["public.counter"]["last_value"] == 7 and seqs["public.counter"]["is_called"] is True, seqs
    assert seqs["public.counter"]["read_before_dump"] == {"last_value": 900, "is_called": True}, seqs
    assert seqs["public.users_id_seq"]["last_value"] == 3 and seqs["public.users_id_seq"]["is_called"] is False
    assert seqs["public.users_id_seq"]["read_before_dump"]["last_value"] == max_user, seqs
    assert "read_before_dump" not in seqs["public.bookings_id_seq"], seqs
    r = cli(["--config", cfg, "backups", "verify", bid, "--json"])
    assert r.code == 0, r.output
    [rep] = r.json()
    assert "2 sequence(s) moved back during the dump (setval, ALTER SEQUENCE RESTART): compared with the " \
           "dump's values" in rep["steps"], rep
    # a restore behind what the dump holds is a loss: the manifest saying the dump held one more than restored
    m["postgres"]["sequences"]["public.counter"]["last_value"] = 8
    rewrite_manifest(cli, cfg, mpath, m)
    r = cli(["--config", cfg, "backups", "verify", bid, "--json"])
    assert r.code == 1 and "sequence public.counter: restored with last_value 7" in r.output, r.output


def test_a_sequence_created_after_the_dumps_snapshot_is_not_recorded(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any, tmp_path: Path) -> None:
    """upkeeper listed the sequences in a session of its own, outside the dump's snapshot: one created after the
    snapshot was exported (a migration) was recorded but is not in the dump (pg_dump reads the snapshot's
    catalog), and verify failed it as 'missing from the restore'.  Only the snapshot's sequences are recorded."""
    import threading
    import time

    db, _ = app_db
    mark = tmp_path / "fault-mark"

    def create_when_paused() -> None:
        deadline = time.monotonic() + 20
        while not mark.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        pg.execute("CREATE SEQUENCE late_seq START 40", db)

    t = threading.Thread(target=create_when_paused, daemon=True)
    t.start()
    cfg = backup_config(db)
    r = cli(["--config", cfg, "run", "db-backup", "--json"],
            env={"UPKEEPER_FAULT_PAUSE": "before-sequences:1", "UPKEEPER_FAULT_MARK": str(mark)})
    t.join(30)
    assert r.code == 0, r.output
    bid = str(r.json()[0]["artifacts"][0]["id"])
    _, m = _manifest(tmp_path, bid)
    assert "public.late_seq" not in m["postgres"]["sequences"] and "public.users_id_seq" in m["postgres"]["sequences"]
    r = cli(["--config", cfg, "backups", "verify", bid, "--json"])
    assert r.code == 0, r.output


@pytest.mark.parametrize("case", ["sql_ascii", "icu"])
def test_the_scratch_database_has_the_dumps_encoding_and_collation(
        cli: Any, pg: PostgresCluster, pg_db: str, backup_config: Any, case: str) -> None:
    """The scratch database is created with the dump's own encoding, locale provider, collation and ctype (its
    CREATE DATABASE), streamed or fetched first.  It was created with the scratch server's defaults (UTF8,
    C.UTF-8): a SQL_ASCII database holding bytes that are not UTF-8 failed verify ("invalid byte sequence for
    encoding "UTF8"") although the backup was good, and a smoke check relying on the collation's order failed."""
    db = pg_db
    pg.execute(f'DROP DATABASE "{db}"')
    if case == "sql_ascii":
        pg.execute(f"CREATE DATABASE \"{db}\" ENCODING 'SQL_ASCII' LOCALE 'C' TEMPLATE template0")
        pg.execute("CREATE TABLE words (w text PRIMARY KEY); INSERT INTO words VALUES ('B'), ('a'), (E'\\xe4');"
                   "COMMENT ON TABLE words IS E'caf\\xe9'", db)  # in the dump's SQL, not only in its COPY data
        check, jobs = "select count(*) = 1 from words where octet_length(w) = 1 and w > 'z'", 1
    else:
        pg.execute(f"CREATE DATABASE \"{db}\" ENCODING 'LATIN1' LOCALE_PROVIDER icu ICU_LOCALE 'de' LOCALE 'C' "
                   "TEMPLATE template0")
        pg.execute("CREATE TABLE words (w text PRIMARY KEY); INSERT INTO words VALUES ('B'), ('a'), ('ä')", db)
        check, jobs = "select string_agg(w, ',' order by w) = 'a,ä,B' from words", 2
    assert pg.execute(check, db)[0][0] is True
    cfg = backup_config(db, verify={"checks": [check], "amcheck": True, "jobs": jobs})
    bid = _backup(cli, cfg)
    r = cli(["--config", cfg, "run", "backup-verify", "--json"])
    assert r.code == 0, r.output
    [art] = r.json()[0]["artifacts"]
    assert art["ok"] and art["tables"] == 1, art
    assert any(("one pass" if jobs == 1 else "2 jobs") in s for s in art["steps"]), art
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "verified"
    assert _scratch_dbs(pg) == []


@pytest.mark.parametrize("jobs", [1, 2])
def test_the_scratch_database_has_the_databases_own_settings(
        cli: Any, pg: PostgresCluster, pg_db: str, backup_config: Any, make_config: Any, jobs: int) -> None:
    """The sessions that count rows and run the smoke checks in the scratch database get the backed-up
    database's own settings (ALTER DATABASE … SET) and the scratch role's in it (ALTER ROLE … IN DATABASE … SET),
    streamed or fetched first, as that role's sessions in the backed-up database do; not its comment or
    privileges.  (A check naming a table of a schema in the database's search_path failed "relation "orders" does
    not exist": a good backup marked verify-failed.)"""
    db = pg_db
    pg.execute("CREATE SCHEMA shop; CREATE TABLE shop.orders (id int PRIMARY KEY);"
               "INSERT INTO shop.orders SELECT generate_series(1, 7)", db)
    # read-only sessions, as an archive's may be: upkeeper's own (row counts, amcheck) are not; the scratch
    # server's admin sessions go to its 'postgres' database
    pg.execute(f'ALTER DATABASE "{db}" SET search_path = shop, public; '
               f'ALTER DATABASE "{db}" SET default_transaction_read_only = on; '
               f"ALTER ROLE postgres IN DATABASE \"{db}\" SET timezone = 'Asia/Tokyo'; "
               f"COMMENT ON DATABASE \"{db}\" IS 'orders'; REVOKE ALL ON DATABASE \"{db}\" FROM PUBLIC")
    checks = ["select count(*) = 7 from orders", "select current_setting('TimeZone') = 'Asia/Tokyo'",
              "select current_setting('default_transaction_read_only') = 'on'"]
    assert [pg.execute(c, db)[0][0] for c in checks] == [True, True, True]
    cfg = backup_config(db, verify={"checks": checks, "jobs": jobs, "amcheck": True, "scratch_target": "scratch"})
    data = yaml.safe_load(cfg.read_text())
    data["targets"]["scratch"] = pg.target("postgres")
    cfg = make_config(data)
    _backup(cli, cfg)
    r = cli(["--config", cfg, "run", "backup-verify", "--json"])
    assert r.code == 0, r.output
    [art] = r.json()[0]["artifacts"]
    assert art["ok"] and "3 smoke check(s) passed" in art["steps"], art
    assert any(s.startswith("3 setting(s) of the backed-up database") for s in art["steps"]), art
    assert any(s.startswith("amcheck: ") for s in art["steps"]), art
    assert any(("one pass" if jobs == 1 else "2 jobs") in s for s in art["steps"]), art
    assert _scratch_dbs(pg) == []


#: a libc locale the session's cluster lacks: compiled here, found only by a server whose LOCPATH names it
OWN_LOCALE = "upkeeper_TEST.ISO-8859-1"


@pytest.fixture(scope="module")
def locale_cluster(services_dir: Path) -> Any:
    """A PostgreSQL cluster with a libc locale (OWN_LOCALE) that the session's cluster (``pg``) does not have:
    compiled by localedef from the POSIX rules (milliseconds) into a directory only this server's LOCPATH
    names."""
    locales = services_dir / "locales"
    locales.mkdir(exist_ok=True)
    res = subprocess.run(["localedef", "-i", "POSIX", "-f", "ISO-8859-1", str(locales / OWN_LOCALE)],
                         capture_output=True, text=True)  # exits 1 for its warnings (categories POSIX lacks)
    if not (locales / OWN_LOCALE / "LC_COLLATE").exists():
        pytest.skip(f"localedef cannot compile a locale here: {res.stderr.strip()}")
    cluster = PostgresCluster(services_dir / "pg-locale", extra_env={"LOCPATH": str(locales)})
    cluster.start()
    yield cluster
    cluster.stop()


def test_a_scratch_server_without_the_dumps_locale_leaves_the_backup_unjudged(
        cli: Any, pg: PostgresCluster, locale_cluster: PostgresCluster, backup_config: Any, make_config: Any) -> None:
    """The backed-up database uses a libc locale the scratch server lacks: its scratch database cannot be
    created with the dump's settings, which says nothing about the backup — NOT CHECKED (streamed or fetched),
    naming the setting, the error and the fix; the backup stays complete, and verifies on a server that has the
    locale.  'backups restore' into that server fails the same way and changes nothing."""
    import yaml

    src, db = locale_cluster, "latin1_app"
    src.execute(f"DROP DATABASE IF EXISTS {db}")
    src.execute(f"CREATE DATABASE {db} ENCODING 'LATIN1' LOCALE '{OWN_LOCALE}' TEMPLATE template0")
    src.execute("CREATE TABLE t (w text); INSERT INTO t VALUES ('ä')", db)
    data = yaml.safe_load(backup_config(db, target_extra=src.target(db), verify={"scratch_target": "scratch",
                                                                                 "jobs": 1}).read_text())
    data["targets"]["scratch"] = pg.target("postgres")
    cfg = make_config(data)
    bid = _backup(cli, cfg)
    finding = _not_checked(cli(["--config", cfg, "run", "backup-verify", "--json"]))
    msg = finding["message"]
    assert f"LOCALE = '{OWN_LOCALE}'" in msg and "invalid locale name" in msg, msg
    assert "locale-gen" in msg and "scratch_target" in msg, msg
    r = cli(["--config", cfg, "backups", "verify", bid, "--scratch-target", "scratch", "--jobs", "2", "--json"])
    assert r.code == 1 and r.json()[0]["inconclusive"] and "invalid locale name" in r.json()[0]["error"], r.output
    assert _scratch_dbs(pg) == []
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "complete"
    r = cli(["--config", cfg, "backups", "restore", bid, "--target", "scratch", "--database", "latin1_copy"])
    assert r.code != 0, r.output
    err = " ".join(r.err.split())
    assert "invalid locale name" in err and f"LOCALE = '{OWN_LOCALE}'" in err and "was not created" in err, err
    assert "locale-gen" in err, err
    assert pg.execute("SELECT datname FROM pg_database WHERE datname ~ 'latin1'") == []
    r = cli(["--config", cfg, "backups", "verify", bid, "--scratch-target", "db", "--json"])
    assert r.code == 0 and r.json()[0]["ok"], r.output


def test_a_scratch_role_with_a_connection_limit_is_checked_before_anything_is_created(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any, make_config: Any
        ) -> None:
    """The scratch role's CONNECTION LIMIT is read before the scratch database is made.  Limit 1 (the guard
    session alone): NOT CHECKED up front, naming the limit, the need and the ALTER fix — no scratch database made
    (before, pg_restore was refused and the drop, needing a second session, left it behind).  Limit 3 with jobs 2
    (the guard, pg_restore's 2 workers and its leader, whose session still counts as they connect): pg_restore
    runs 1 job, with a note, and the backup is verified; so does backups restore --jobs 2 with limit 2 (no guard
    session there)."""
    import yaml

    db, _ = app_db
    role = f"scratch_{db}"[:63]
    pg.execute("DROP EXTENSION pg_stat_statements", db)  # a non-superuser may not create it in the scratch database
    pg.execute(f'CREATE ROLE "{role}" LOGIN CREATEDB CONNECTION LIMIT 1')
    owned = ("SELECT datname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE r.rolname = %s")
    try:
        cfg = backup_config(db, verify={"scratch_target": "scratch", "jobs": 2})
        data = yaml.safe_load(cfg.read_text())
        data["targets"]["scratch"] = {**pg.target("postgres"), "user": role}
        cfg = make_config(data)
        bid = _backup(cli, cfg)
        refused = cli(["--config", cfg, "run", "backup-verify", "--json"])
        left = pg.execute(owned, params=[role])
        status = cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"]
        pg.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT 3')
        lowered = cli(["--config", cfg, "backups", "verify", bid, "--jobs", "2", "--scratch-target",
                       "scratch", "--json"])
        pg.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT 2')  # backups restore holds no guard session
        restored = cli(["--config", cfg, "backups", "restore", bid, "--target", "scratch", "--jobs", "2",
                        "--no-owner", "--json"])
    finally:
        pg.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'")
        for (name,) in pg.execute(owned, params=[role]):
            pg.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        pg.execute(f'DROP ROLE "{role}"')
    assert left == [], left
    finding = _not_checked(refused)
    assert f'role {role} allows 1 connection (CONNECTION LIMIT 1)' in finding["message"], finding
    assert f'ALTER ROLE "{role}" CONNECTION LIMIT 4' in finding["message"], finding  # the hint, in the message
    assert status == "complete"  # kept: unjudged
    assert lowered.code == 0, lowered.output
    [rep] = lowered.json()
    assert rep["ok"], rep
    assert any("CONNECTION LIMIT 3" in s and "1 job" in s for s in rep["steps"]), "\n".join(rep["steps"])
    assert any("with 1 jobs" in s for s in rep["steps"]), rep["steps"]
    assert restored.code == 0, restored.output
    assert "pg_restore runs 1 job instead of 2" in restored.json()["jobs_warning"], restored.output


@pytest.mark.parametrize("jobs", [1, 2])
def test_the_scratch_restore_sorts_in_more_memory_and_flushes_no_work_file(
        cli: Any, pg: PostgresCluster, pg_db: str, backup_config: Any, monkeypatch: pytest.MonkeyPatch,
        jobs: int) -> None:
    """The scratch restore's sessions (a database thrown away once checked) get synchronous_commit off and a
    maintenance_work_mem above the server's (index builds sort in memory), streamed or with several jobs; the
    archive fetched for a parallel restore is a work file read once: never fsync'ed (the restore waited for the
    disk).  Seen in the restore itself: a CHECK that holds only in a session with more maintenance_work_mem
    than the server's is evaluated for every row pg_restore copies."""
    db = pg_db
    server_mem = int(pg.execute("SELECT pg_size_bytes(current_setting('maintenance_work_mem'))")[0][0])
    pg.execute(f"SET maintenance_work_mem = '{2 * server_mem // 1024}kB'; CREATE TABLE t (id int PRIMARY KEY, "
               f"CHECK (pg_size_bytes(current_setting('maintenance_work_mem')) > {server_mem}));"
               "INSERT INTO t SELECT generate_series(1, 3)", db)
    cfg = backup_config(db)
    bid = _backup(cli, cfg)
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr("os.fsync", fsync)
    r = cli(["--config", cfg, "backups", "verify", bid, "--jobs", str(jobs), "--json"])
    monkeypatch.undo()
    assert r.code == 0, r.output
    [rep] = r.json()
    assert rep["ok"] and rep["tables"] == 1, rep
    assert "synchronous_commit=off" in rep["restore_options"], rep
    assert any(("one pass" if jobs == 1 else "2 jobs") in s for s in rep["steps"]), rep
    assert not [p for p in synced if "upkeeper-verify-" in p], synced
    assert _scratch_dbs(pg) == []


def _wait_for_the_smoke_check(p: subprocess.Popen[bytes], pg: PostgresCluster) -> None:
    """Until the command's smoke check ``select pg_sleep(60) …`` runs on its scratch database (60 s at most)."""
    deadline = time.monotonic() + 60
    while p.poll() is None and time.monotonic() < deadline and not pg.execute(
            "SELECT 1 FROM pg_stat_activity WHERE query LIKE 'select pg_sleep(60)%'"):
        time.sleep(0.05)
    assert p.poll() is None, p.communicate()
    assert _scratch_dbs(pg)


def test_a_scratch_guard_gives_way_only_to_a_guard_that_holds_its_lock(pg: PostgresCluster) -> None:
    """Two verifies of one backup share upkeeper_verify_<id>.  After taking the guard's advisory lock, a verify
    refuses when another guard session of that name holds the lock in another database (advisory locks are per
    database) — but not for a guard session that no longer holds it: a finished verify's session still listed
    in pg_stat_activity for a moment after its lock went (CI under load: the second verify failed
    'another verify … is using the scratch database' although the first had finished)."""
    import psycopg

    from upkeeper.backup import verify as v
    from upkeeper.config.targets import PostgresTarget
    from upkeeper.errors import TaskError

    target = PostgresTarget(**pg.target("postgres"))
    name = "upkeeper_verify_guardtest"
    pg.execute("DROP DATABASE IF EXISTS guard_other")
    pg.execute("CREATE DATABASE guard_other")
    # a guard session of that name without the lock: the leaving (or queued) session of another verify
    leaving = psycopg.connect(pg.conninfo("postgres"), application_name=v.GUARD_APP + name, autocommit=True)
    try:
        with v._scratch_guard(target, "postgres", name):
            pass  # entered: a guard without the lock is no reason to refuse
        # and a guard holding the lock in another database keeps out one of ours
        with v._scratch_guard(target, "guard_other", name), pytest.raises(
                TaskError, match="another verify of this backup is using the scratch database"), \
                v._scratch_guard(target, "postgres", name):
            pass
    finally:
        leaving.close()
        pg.execute("DROP DATABASE guard_other")
