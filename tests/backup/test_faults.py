"""Faults with real processes: kill -9 during the dump, during the upload and just before the manifest;
a full local storage.  No partial backup is ever listed, and the next run succeeds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from upkeeper.backup.crypto import Encryption
from upkeeper.backup.pipeline import ObjectUpload
from upkeeper.config.storage import LocalStorageConfig
from upkeeper.errors import UpkeeperError
from upkeeper.sandbox.postgres import PostgresCluster
from upkeeper.storage import open_storage

from .conftest import AgeKey


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


def _run_paused_before_the_manifest(app_db: tuple[str, dict[str, int]], backup_config: Any, tmp_path: Path
                                    ) -> tuple[Path, Path, subprocess.Popen[bytes]]:
    """A backup (database and globals) started with a pause just before its manifest, once every object is
    stored: (config, storage directory, the run's process)."""
    db, _ = app_db
    cfg = backup_config(db, options={"globals": True})
    store = tmp_path / "store1"
    p = _start_run(cfg, {"UPKEEPER_FAULT_PAUSE": "before-manifest:60"})
    _wait_for(lambda: bool(list(store.rglob("globals.sql.zst.age"))), "every object stored")
    assert list(store.rglob(f"{db}.dump.zst.age"))
    return cfg, store, p


def test_kill9_just_before_the_manifest(cli: Any, app_db: tuple[str, dict[str, int]], backup_config: Any,
                                        tmp_path: Path) -> None:
    cfg, store, p = _run_paused_before_the_manifest(app_db, backup_config, tmp_path)
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
    assert list(full_disk.rglob("*")) == []  # no manifest, no partial object, no empty directory of the set


def test_an_object_whose_age_dies_as_it_is_finished_leaves_no_partial_file(tmp_path: Path, age_key: AgeKey) -> None:
    """age gone while the last of an object goes through it — killed (the OOM killer), or killed by the thread that
    stores its output when a storage failed (an SFTP connection dropped: the other storages' writes were left
    open) — breaks the pipe into it as the object is finished.  The object's temporary file was left on every
    storage then (reproduced: a backup to local + SFTP whose SFTP server went away kept a 2 MiB
    '.app.dump.zst.age.*.upkeeper-partial' in the failed set's directory on the local storage until the prune a day
    later; on S3 an open multipart upload).  Real age, real local storage."""
    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    storage = open_storage("local1", LocalStorageConfig.model_validate(
        {"kind": "local", "path": str(store), "fsync": False}))
    upload = ObjectUpload([storage], "db/app/20261206T000000Z-abcdef/app.dump.zst.age", "app.dump.zst.age",
                          encryption=Encryption("x25519", (age_key.recipient,)))
    upload.write(os.urandom(4 << 20))
    assert upload.age is not None
    upload.age.popen.kill()
    upload.age.popen.wait()
    with pytest.raises(UpkeeperError, match="age killed by SIGKILL"):
        upload.finish()
    assert list(store.rglob("*")) == []  # no temporary file, no directory made for it


def _scratch_dbs(pg: PostgresCluster) -> list[str]:
    return [r[0] for r in pg.execute("SELECT datname FROM pg_database WHERE datname LIKE 'upkeeper_verify_%' "
                                     "ORDER BY datname")]


def _start_verify(cfg: Path, backup_id: str, check: str, stdout: int = subprocess.DEVNULL
                  ) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "upkeeper", "--config", str(cfg), "backups", "verify", backup_id,
                             "--jobs", "1", "--check", check, "--json"],
                            stdout=stdout, stderr=subprocess.DEVNULL, start_new_session=True)


def _sleeping_in_scratch(pg: PostgresCluster) -> list[str]:
    return [r[0] for r in pg.execute("SELECT datname FROM pg_stat_activity WHERE datname LIKE 'upkeeper_verify_%' "
                                     "AND query LIKE '%pg_sleep%' AND state = 'active'")]


def test_kill9_during_a_verify_leaves_a_scratch_database_the_next_verify_drops(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any) -> None:
    """kill -9 of a verify in the middle of its checks leaves upkeeper_verify_<id> on the server (the killed
    process cannot drop it; its backend went on running the query for as long as it took, now it stops within
    a second).  The next verify — of another backup —
    drops it and says so; the backup the killed verify was checking keeps its status."""
    db, _ = app_db
    cfg = backup_config(db, options={"retention": {"keep_last": 5}})
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 0, r.output
    first = r.json()[0]["artifacts"][0]["id"]
    p = _start_verify(cfg, first, "select pg_sleep(120) is not null")
    _wait_for(lambda: bool(_sleeping_in_scratch(pg)), "the verify to reach its smoke check")
    [stale] = _scratch_dbs(pg)
    _kill9(p)
    # the server notices its client is gone (client_connection_check_interval) and stops the query
    _wait_for(lambda: not _sleeping_in_scratch(pg), "the killed verify's smoke check to end on the server", 3)
    assert _scratch_dbs(pg) == [stale]  # left behind: nothing of the killed process can drop it
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 0, r.output
    second = r.json()[0]["artifacts"][0]["id"]
    r = cli(["--config", cfg, "run", "backup-verify", "--json"])
    assert r.code == 0, r.output
    run = r.json()[0]
    [art] = run["artifacts"]
    assert art["ok"] and art["backup_id"] == second
    assert art["stale_scratch_dropped"] == [stale], art
    assert any(stale in s and "interrupted" in s for s in art["steps"]), art
    [finding] = [f for f in run["findings"] if f["check"] == "backup.verify_scratch_dropped"]
    assert finding["severity"] == "info" and finding["subject"] == stale
    assert _scratch_dbs(pg) == []
    assert cli(["--config", cfg, "backups", "show", first, "--json"]).json()["status"] == "complete"


def test_a_verify_never_drops_the_scratch_database_of_a_verify_still_running(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any) -> None:
    """Two verifies on one server: the second one's sweep of stale scratch databases leaves the first one's
    alone (its process is alive), and the first one completes."""
    db, _ = app_db
    cfg = backup_config(db, options={"retention": {"keep_last": 5}})
    ids = []
    for _ in range(2):
        r = cli(["--config", cfg, "run", "db-backup", "--json"])
        assert r.code == 0, r.output
        ids.append(r.json()[0]["artifacts"][0]["id"])
    p = _start_verify(cfg, ids[0], "select pg_sleep(8) is not null", subprocess.PIPE)
    try:
        _wait_for(lambda: bool(_sleeping_in_scratch(pg)), "the first verify to reach its smoke check")
        [running] = _scratch_dbs(pg)
        r = cli(["--config", cfg, "backups", "verify", ids[1], "--jobs", "1", "--json"])
        assert r.code == 0, r.output
        [rep] = r.json()
        assert rep["ok"] and rep.get("stale_scratch_dropped", []) == [], rep
        assert running in _scratch_dbs(pg)
        out, _ = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            _kill9(p)
        assert p.stdout is not None
        p.stdout.close()
    assert p.returncode == 0, out
    [rep] = json.loads(out)
    assert rep["ok"], rep
    assert _scratch_dbs(pg) == []


def test_kill9_of_a_directory_format_backup_leaves_no_plaintext_dump_behind(
        cli: Any, app_db: tuple[str, dict[str, int]], backup_config: Any, tmp_path: Path) -> None:
    """A directory-format dump is written in clear to a private temp dir, then uploaded file by file.  kill -9
    in the upload leaves that directory — the whole database in plaintext — where no 'finally' can remove it:
    the next run does, and lists only its own backup."""
    work, cfg, mark = _directory_backup_with_work_dir(app_db, backup_config, tmp_path)
    p = _start_run(cfg, {"UPKEEPER_FAULT_PAUSE": "during-upload:60", "UPKEEPER_FAULT_MARK": str(mark)})
    _wait_for(mark.exists, "the upload to begin")
    _kill9(p)
    [left] = list(work.iterdir())
    assert list(left.rglob("toc.dat")), "the killed run's plaintext dump is there"
    _assert_nothing_listed_then_next_run_succeeds(cli, cfg, tmp_path / "store1")
    assert list(work.iterdir()) == []


def test_a_live_work_dir_is_never_removed(tmp_path: Path) -> None:
    from upkeeper.backup.workdir import clean_stale, work_dir
    from upkeeper.config.backup import BackupSettings

    settings = BackupSettings(work_dir=str(tmp_path))
    with work_dir(settings, "upkeeper-verify-") as d:
        (d / "dump").write_bytes(b"plaintext")
        assert clean_stale(tmp_path) == []
        with work_dir(settings, "upkeeper-dump-") as d2:  # making another one sweeps too
            assert d.is_dir() and d2.is_dir() and d != d2
        assert (d / "dump").exists()
    assert list(tmp_path.iterdir()) == []
    legacy = tmp_path / "upkeeper-dump-old"  # made by an upkeeper that held no lock: not known to be dead
    legacy.mkdir()
    assert clean_stale(tmp_path) == [] and legacy.is_dir()


def test_two_verifies_of_one_backup_do_not_destroy_each_others_restore(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any) -> None:
    """The scheduled verify and a manual 'backups verify ID' of the same backup at once: both restore into
    upkeeper_verify_<id>.  The second used to drop it (WITH FORCE) under the first, whose restore then failed
    and marked a good backup verify-failed; now it waits for the first and both pass."""
    db, _ = app_db
    cfg = backup_config(db)
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 0, r.output
    bid = r.json()[0]["artifacts"][0]["id"]
    p = _start_verify(cfg, bid, "select pg_sleep(5) is not null", subprocess.PIPE)
    try:
        _wait_for(lambda: bool(_sleeping_in_scratch(pg)), "the first verify to reach its smoke check")
        r = cli(["--config", cfg, "backups", "verify", bid, "--jobs", "1", "--json"])
        out, _ = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            _kill9(p)
        assert p.stdout is not None
        p.stdout.close()
    [first] = json.loads(out)
    assert first["ok"], first
    assert r.code == 0, r.output
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "verified"
    assert _scratch_dbs(pg) == []


def _start_json_run(cfg: Path, env_extra: dict[str, str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **env_extra}
    return subprocess.Popen([sys.executable, "-m", "upkeeper", "--config", str(cfg), "run", "db-backup", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)


def _assert_the_dead_runs_work_files_removed(cli: Any, cfg: Path, p: subprocess.Popen[bytes], out: bytes,
                                             work: Path, store: Path, why: str, *, by_the_cli: bool) -> None:
    """The run ended (the CLI lives on: not a crash) as an error saying ``why`` (and, ``by_the_cli``, that the
    CLI removed its work files), none are left, and no set is listed (the partial objects keep their temp
    names)."""
    assert list(work.iterdir()) == []  # no plaintext dump directory, at once (not at a later run's sweep)
    assert p.returncode != 0
    [run] = json.loads(out)
    assert run["status"] == "error", run
    assert why in run["summary"], run["summary"]
    assert ("work files were removed" in run["summary"]) == by_the_cli, run["summary"]
    [row] = cli(["--config", cfg, "history", "db-backup", "--json"]).json()
    assert row["status"] == "error" and row["summary"] == run["summary"], row
    assert list(store.rglob("manifest.json")) == []
    # (and the dead writer's lease, which protects its set from prune no more once stale: LEASE_TTL)
    assert all(f.name.endswith(".upkeeper-partial") or f.name == ".writing" for f in store.rglob("*") if f.is_file())
    assert cli(["--config", cfg, "backups", "list", "--json"]).json() == []


def test_a_directory_format_backup_whose_worker_is_killed_has_its_plaintext_dump_removed_by_the_cli(
        cli: Any, app_db: tuple[str, dict[str, int]], backup_config: Any, tmp_path: Path) -> None:
    """``kill -9`` of the worker alone (the OOM killer) while it uploads a directory-format dump: the CLI sees
    its worker die and removes the plaintext dump directory in backup.work_dir itself."""
    work, cfg, mark = _directory_backup_with_work_dir(app_db, backup_config, tmp_path)
    p = _json_run_paused_in_the_upload(cfg, mark, work)
    try:
        [worker] = psutil.Process(p.pid).children()
        worker.kill()
        out, _ = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            _kill9(p)
    _assert_the_dead_runs_work_files_removed(cli, cfg, p, out, work, tmp_path / "store1", "killed by SIGKILL",
                                             by_the_cli=True)


def test_a_directory_format_backup_past_its_timeout_is_recorded_so_with_its_work_files_removed(
        cli: Any, app_db: tuple[str, dict[str, int]], backup_config: Any, tmp_path: Path) -> None:
    """The job's timeout expires mid-upload of a directory-format dump: the run is recorded as timed out,
    the plaintext dump in backup.work_dir is gone when the run is recorded, and nothing is listed.  (The
    worker's SIGTERM unwinds the task, whose own cleanup removes the dump; the CLI's removal is for a worker
    that does not end within the grace — the same as a killed one, above.)"""
    db, _ = app_db
    work = tmp_path / "work"
    work.mkdir()
    cfg = backup_config(db, backup={"work_dir": str(work)}, extra_jobs={"db-backup": {
        "task": "postgres.backup", "target": "db", "timeout": "2s",
        "options": {"databases": [db], "globals": False, "format": "directory", "jobs": 2}}})
    mark = tmp_path / "mark"
    p = _json_run_paused_in_the_upload(cfg, mark, work)
    try:
        out, _ = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            _kill9(p)
    _assert_the_dead_runs_work_files_removed(cli, cfg, p, out, work, tmp_path / "store1", "timed out after 2s",
                                             by_the_cli=False)
    [row] = cli(["--config", cfg, "history", "db-backup", "--json"]).json()
    shown = cli(["--config", cfg, "show", str(row["id"]), "--json"]).json()
    assert shown["details"].get("timed_out") is True, shown


def _directory_backup_whose_abort_hangs(app_db: tuple[str, dict[str, int]], backup_config: Any, tmp_path: Path,
                                        **job: str) -> tuple[Path, Path, Path, subprocess.Popen[bytes]]:
    """``upkeeper run --json`` of a directory-format backup (kill_grace 300 ms, ``job``'s other settings) paused in
    its upload, whose partial-upload abort will hang: (config, work directory, fault mark, the run's process),
    once the plaintext dump is in the work directory (killed if it does not get there)."""
    db, _ = app_db
    work = tmp_path / "work"
    work.mkdir()
    cfg = backup_config(db, backup={"work_dir": str(work)}, extra_jobs={"db-backup": {
        "task": "postgres.backup", "target": "db", "kill_grace": "300ms", **job,
        "options": {"databases": [db], "globals": False, "format": "directory", "jobs": 2}}})
    mark = tmp_path / "mark"
    p = _start_json_run(cfg, {"UPKEEPER_FAULT_PAUSE": "during-upload:60,upload-abort:60",
                              "UPKEEPER_FAULT_MARK": str(mark)})
    try:
        _wait_for(lambda: mark.exists() or p.poll() is not None, "the upload to begin", 30)
        assert mark.exists(), p.communicate()
        assert list(work.rglob("toc.dat")), "the plaintext dump is in the work directory"
    except BaseException:
        if p.poll() is None:
            _kill9(p)
        raise
    return cfg, work, mark, p


def test_a_backup_past_its_timeout_whose_cleanup_outlasts_the_kill_grace_is_killed_and_cleaned_by_the_cli(
        cli: Any, app_db: tuple[str, dict[str, int]], backup_config: Any, tmp_path: Path) -> None:
    """The timeout's SIGTERM unwinds the task, but its cleanup (the partial upload's abort) hangs: the worker is
    SIGKILLed ``kill_grace`` after the SIGTERM (not after the hang), the CLI removes the plaintext dump directory
    itself, the run is recorded as timed out, and the partial objects keep their temp names (never listed)."""
    cfg, work, mark, p = _directory_backup_whose_abort_hangs(app_db, backup_config, tmp_path, timeout="2s")
    try:
        out, _ = p.communicate(timeout=20)  # never waits for the hanging abort (60 s)
    finally:
        if p.poll() is None:
            _kill9(p)
    assert mark.read_text().split() == ["during-upload", "upload-abort"]  # the SIGTERM unwound it into the abort
    _assert_the_dead_runs_work_files_removed(cli, cfg, p, out, work, tmp_path / "store1", "timed out after 2s",
                                             by_the_cli=True)


def _directory_backup_with_work_dir(app_db: tuple[str, dict[str, int]], backup_config: Any,
                                    tmp_path: Path) -> tuple[Path, Any, Path]:
    """A directory-format (jobs 2) backup config of the app database with its own backup.work_dir (made here),
    and the path of a fault point's mark file."""
    db, _ = app_db
    work = tmp_path / "work"
    work.mkdir()
    return work, backup_config(db, options={"format": "directory", "jobs": 2},
                               backup={"work_dir": str(work)}), tmp_path / "mark"


def _json_run_paused_in_the_upload(cfg: Any, mark: Path, work: Path) -> subprocess.Popen[bytes]:
    """``upkeeper run --json`` of the config's job, once it is paused in the upload with its plaintext
    directory-format dump in ``work`` (killed if it does not get there)."""
    p = _start_json_run(cfg, {"UPKEEPER_FAULT_PAUSE": "during-upload:60", "UPKEEPER_FAULT_MARK": str(mark)})
    try:
        _wait_for(mark.exists, "the upload to begin", 30)
        assert list(work.rglob("toc.dat")), "the plaintext dump is in the work directory"
    except BaseException:
        _kill9(p)
        raise
    return p


def test_a_backup_stopped_just_before_its_manifest_removes_the_objects_it_stored(
        cli: Any, app_db: tuple[str, dict[str, int]], backup_config: Any, tmp_path: Path) -> None:
    """A stop (SIGTERM, as systemctl stop sends) once every object is stored: the set's objects are deleted by the
    stopped run itself, not left for a prune a day later; the run is recorded as stopped."""
    cfg, store, p = _run_paused_before_the_manifest(app_db, backup_config, tmp_path)
    os.kill(p.pid, signal.SIGTERM)
    assert p.wait(timeout=30) == 143
    assert [f for f in store.rglob("*") if f.is_file()] == []
    hist = cli(["--config", cfg, "history", "db-backup", "--json"]).json()
    assert [(h["status"], h["stopped"]) for h in hist] == [("interrupted", True)], hist


def test_a_stopped_backup_whose_cleanup_outlasts_the_kill_grace_has_its_work_files_removed_by_the_cli(
        cli: Any, app_db: tuple[str, dict[str, int]], backup_config: Any, tmp_path: Path) -> None:
    """A stop (SIGTERM of 'upkeeper run') whose cleanup hangs: the worker is SIGKILLed ``kill_grace`` after the
    SIGTERM, and the CLI removes its plaintext dump directory itself (as after a timeout), not a later sweep; the
    run is recorded stopped."""
    cfg, work, mark, p = _directory_backup_whose_abort_hangs(app_db, backup_config, tmp_path)
    try:
        os.kill(p.pid, signal.SIGTERM)
        out, _ = p.communicate(timeout=20)  # never waits for the hanging abort (60 s)
    finally:
        if p.poll() is None:
            _kill9(p)
    assert p.returncode == 143
    assert mark.read_text().split() == ["during-upload", "upload-abort"]  # the SIGTERM unwound it into the abort
    assert list(work.iterdir()) == []  # no plaintext dump directory, at once
    [run] = json.loads(out)
    assert run["status"] == "interrupted" and "work files were removed" in run["summary"], run
    [row] = cli(["--config", cfg, "history", "db-backup", "--json"]).json()
    assert row["stopped"] and "SIGKILL" in row["summary"], row
    assert cli(["--config", cfg, "backups", "list", "--json"]).json() == []


def test_a_stop_arriving_as_an_objects_temporary_file_is_made_leaves_no_partial_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop (the worker's SIGTERM: systemctl stop, a timeout) whose exception came just after the storage made the
    object's temporary file, before the writer was in the upload's list, left that '.upkeeper-partial' file behind:
    the upload's abort never saw it (a CI run of the cgroup-wide stop test found one).  The stop now waits for the
    writer to be listed, and the abort removes the file.  Real local storage; the signal handler's call
    (``stop_or_defer``, as the worker's SIGTERM handler makes it) at the worst moment."""
    from upkeeper.shield import stop_or_defer
    from upkeeper.storage.local import LocalStorage

    class Stop(BaseException):
        pass

    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    storage = open_storage("local1", LocalStorageConfig.model_validate(
        {"kind": "local", "path": str(store), "fsync": False}))
    made = LocalStorage.open_write

    def open_then_stopped(self: LocalStorage, key: str) -> Any:
        w = made(self, key)
        assert [p.name for p in store.rglob("*.upkeeper-partial")] != []
        stop_or_defer(Stop())  # the SIGTERM handler, as the call returns
        return w

    monkeypatch.setattr(LocalStorage, "open_write", open_then_stopped)
    with pytest.raises(Stop):
        ObjectUpload([storage], "db/app/20261206T000000Z-abcdef/app.dump.zst", "app.dump.zst")
    assert list(store.rglob("*")) == []  # no temporary file, no directory made for it
