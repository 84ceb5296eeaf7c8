"""postgres.backup against a real PostgreSQL: the set on storage decrypts with age, decompresses with zstd
and restores with pg_restore; failures are failed runs with nothing listed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from upkeeper.backup.sets import check_encryption
from upkeeper.config.loader import load_text
from upkeeper.errors import TaskError
from upkeeper.sandbox.postgres import PostgresCluster

from .conftest import AgeKey, stop_cgroup, wrapped_pg_dump


def _sets(store: Path) -> list[Path]:
    return sorted(p.parent for p in store.rglob("manifest.json"))


def test_backup_streams_to_two_storages_and_restores_with_standard_tools(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any, age_key: AgeKey,
        tmp_path: Path) -> None:
    db, counts = app_db
    cfg = backup_config(db, storages=2, options={"globals": True})
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 0, r.output
    run = r.json()[0]
    assert run["status"] == "ok", run
    [art] = run["artifacts"]
    sets1, sets2 = _sets(tmp_path / "store1"), _sets(tmp_path / "store2")
    assert [p.name for p in sets1] == [p.name for p in sets2] == [art["id"]]
    set_dir = sets1[0]
    assert set_dir.relative_to(tmp_path / "store1").parts[:2] == ("db", db)
    manifest = json.loads((set_dir / "manifest.json").read_text())
    assert manifest["kind"] == "postgres" and manifest["database"] == db and manifest["target"] == "db"
    assert manifest["postgres"]["row_counts"] == {f"public.{t}": n for t, n in counts.items()}
    assert manifest["postgres"]["server_version"].startswith("15")
    names = {o["name"]: o for o in manifest["objects"]}
    assert set(names) == {f"{db}.dump.zst.age", "globals.sql.zst.age"}
    # both copies identical byte for byte, matching the manifest's SHA-256
    import hashlib
    for o in manifest["objects"]:
        a = (set_dir / o["name"]).read_bytes()
        b = (sets2[0] / o["name"]).read_bytes()
        assert a == b and hashlib.sha256(a).hexdigest() == o["sha256"] and len(a) == o["size"]
        assert a.startswith(b"age-encryption.org/v1")
    # no plaintext, no temp files left behind
    assert not list((tmp_path / "store1").rglob("*.upkeeper-partial"))
    # standard tools only: age -d | zstd -d | pg_restore
    dump = tmp_path / "plain.dump"
    enc = set_dir / f"{db}.dump.zst.age"
    dec = subprocess.run(["age", "-d", "-i", str(age_key.identity), str(enc)], check=True, capture_output=True)
    raw = subprocess.run(["zstd", "-d", "-c"], input=dec.stdout, check=True, capture_output=True).stdout
    assert raw.startswith(b"PGDMP") and len(raw) == names[f"{db}.dump.zst.age"]["raw_size"]
    dump.write_bytes(raw)
    listing = subprocess.run([str(pg.bin / "pg_restore"), "--list", str(dump)], check=True, capture_output=True,
                             text=True).stdout
    assert "TABLE DATA public users" in listing
    # the catalog lists it
    r = cli(["--config", cfg, "backups", "list", "--json"])
    assert r.code == 0, r.output
    [row] = r.json()
    assert row["id"] == art["id"] and row["status"] == "complete" and sorted(row["storages"]) == ["local1", "local2"]


def test_unencrypted_local_backup_is_plain_zstd(cli: Any, app_db: tuple[str, dict[str, int]], backup_config: Any,
                                               tmp_path: Path) -> None:
    db, _ = app_db
    cfg = backup_config(db, encrypt=False)
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 0, r.output
    [set_dir] = _sets(tmp_path / "store1")
    obj = set_dir / f"{db}.dump.zst"
    raw = subprocess.run(["zstd", "-d", "-c", str(obj)], check=True, capture_output=True).stdout
    assert raw.startswith(b"PGDMP")


def test_lost_connection_mid_dump_fails_and_lists_nothing(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any,
        tmp_path: Path) -> None:
    """The server kills pg_dump's session while it dumps: a failed run naming the cause, no backup listed."""
    import threading
    import time

    db, _ = app_db
    cfg = backup_config(db)
    blocker = pg.connect(db, autocommit=False)
    blocker.execute("LOCK TABLE reviews IN ACCESS EXCLUSIVE MODE")

    def terminate() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = pg.execute("SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                              "AND query NOT LIKE '%%count(*)%%' AND pid <> pg_backend_pid()", db)
            if rows:
                pg.execute("SELECT pg_terminate_backend(%s)", db, [rows[0][0]])
                break
            time.sleep(0.05)
        blocker.rollback()

    t = threading.Thread(target=terminate)
    t.start()
    try:
        r = cli(["--config", cfg, "run", "db-backup", "--json"])
    finally:
        t.join()
        blocker.close()
    assert r.code == 1, r.output
    run = r.json()[0]
    assert run["status"] == "fail"
    assert "pg_dump" in run["summary"] and ("terminat" in run["summary"] or "connection" in run["summary"])
    assert cli(["--config", cfg, "backups", "list", "--json"]).json() == []
    assert list((tmp_path / "store1").rglob("manifest.json")) == []
    assert list((tmp_path / "store1").rglob("*.age")) == []  # the aborted set was removed


def test_pg_dump_older_than_server_is_refused(cli: Any, app_db: tuple[str, dict[str, int]], backup_config: Any,
                                             tmp_path: Path, pg: PostgresCluster) -> None:
    """A pg_dump whose major version is older than the server's: refused, naming both versions."""
    old = tmp_path / "oldbin"
    old.mkdir()
    fake = old / "pg_dump"  # stands for an old client install: answers --version like PostgreSQL 13 did
    fake.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 13.11'\n")
    fake.chmod(0o755)
    db, _ = app_db
    cfg = backup_config(db, target_extra={"bin_dir": str(old)})
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 1, r.output
    summary = r.json()[0]["summary"]
    assert f"pg_dump 13.11 ({fake}) is older than the server (PostgreSQL 15." in summary, summary
    assert list((tmp_path / "store1").rglob("*")) == []


def test_a_bin_dir_without_pg_dump_is_an_error_not_a_fall_back_to_path(
        cli: Any, app_db: tuple[str, dict[str, int]], backup_config: Any, tmp_path: Path) -> None:
    """The target's bin_dir names the client tools to use (say, PostgreSQL 16's for a 16 server): a pg_dump
    missing there was silently replaced by whichever pg_dump PATH had, and a version error then blamed a
    program the config never named."""
    empty = tmp_path / "pg16bin"
    empty.mkdir()
    assert shutil.which("pg_dump"), "the test needs a pg_dump on PATH"
    db, _ = app_db
    cfg = backup_config(db, target_extra={"bin_dir": str(empty)})
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 1, r.output
    summary = r.json()[0]["summary"]
    assert f"pg_dump not found in {empty} (the target's bin_dir)" in summary, summary
    assert list((tmp_path / "store1").rglob("*")) == []


@pytest.mark.parametrize("named_by", ["job", "backup.storages", "default"])
def test_remote_storage_without_encryption_is_refused(cli: Any, app_db: tuple[str, dict[str, int]],
                                                     backup_config: Any, tmp_path: Path, named_by: str) -> None:
    """A job sending backups unencrypted to remote storage (no backup.encryption, no explicit 'encryption: none')
    is a config error that 'config check' reports at the job's storages, whichever way the job gets them — not
    a run refused every night after the config was called fine."""
    db, _ = app_db
    sftp = {"kind": "sftp", "host": "127.0.0.1", "port": 2, "user": "x", "key_file": str(tmp_path / "k"),
            "path": "/backups"}
    local = {"kind": "local", "path": str(tmp_path / "store1"), "fsync": False}
    options = {"storages": ["local1", "offsite"]} if named_by == "job" else None
    backup = {"storages": ["offsite"]} if named_by == "backup.storages" else None
    cfg = backup_config(db, encrypt=False, storages={"local1": local, "offsite": sftp}, options=options,
                        backup=backup)
    r = cli(["--config", cfg, "config", "check"])
    assert r.code == 2, r.output
    flat = " ".join(r.output.split())
    assert "jobs -> db-backup -> options -> storages" in flat, r.output
    assert "unencrypted to remote storage offsite" in flat and "encryption: none" in flat, r.output
    assert "local1," not in flat  # only the remote one is named
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 2 and "unencrypted to remote storage offsite" in " ".join(r.output.split()), r.output
    assert list((tmp_path / "store1").rglob("*")) == []


def test_the_run_time_guard_still_refuses_unencrypted_remote_storage(tmp_path: Path) -> None:
    """Config load catches jobs; the pipeline still refuses on its own for any other way in."""
    config = load_text(json.dumps({"storages": {"offsite": {
        "kind": "sftp", "host": "127.0.0.1", "port": 2, "user": "x", "key_file": str(tmp_path / "k"),
        "path": "/backups"}}}))
    with pytest.raises(TaskError, match="refusing to send unencrypted backups to remote storage offsite"):
        check_encryption(config, ["offsite"])
    config.backup.encryption = "none"
    assert check_encryption(config, ["offsite"]) is None


def test_every_database_but_the_excluded_ones(cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]],
                                              backup_config: Any, tmp_path: Path) -> None:
    """'databases' unset: every non-template database of the server gets its own set, except the excluded.  The
    template databases left out besides template0 and template1 are named in the summary and in an info finding
    (the run stays ok) saying how to include them; an excluded one is not."""
    db, _ = app_db
    skip, tpl, tpl_skip = f"{db}_skip", f"{db}_tpl", f"{db}_tpl_skip"
    pg.create_database(skip)
    for name in (tpl, tpl_skip):
        pg.execute(f'CREATE DATABASE "{name}" IS_TEMPLATE true')
    try:
        cfg = backup_config(db, options={"databases": None, "exclude_databases": [skip, tpl_skip]})
        r = cli(["--config", cfg, "run", "db-backup", "--json"])
        assert r.code == 0, r.output
        run = r.json()[0]
        assert run["status"] == "ok", run
        backed_up = {p.parent.name for p in _sets(tmp_path / "store1")}
        server = {row[0] for row in pg.execute("SELECT datname FROM pg_database WHERE NOT datistemplate")}
        assert backed_up == server - {skip} and db in backed_up and "postgres" in backed_up
        [f] = [f for f in run["findings"] if f["check"] == "backup.databases_skipped"]
        assert f["severity"] == "info" and tpl in f["data"]["templates"], f
        assert not {tpl_skip, "template0", "template1"} & set(f["data"]["templates"]), f
        assert "'databases' option" in f["remediation"], f
        assert "not backed up: template database" in run["summary"] and tpl in run["summary"], run["summary"]
    finally:
        for name in (skip, tpl, tpl_skip):
            pg.execute(f'ALTER DATABASE "{name}" IS_TEMPLATE false')
            pg.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_row_counts_are_taken_in_the_dumps_snapshot(cli: Any, pg: PostgresCluster,
                                                    app_db: tuple[str, dict[str, int]], backup_config: Any) -> None:
    """Rows committed all through the backup: the manifest's count is the dump's (verify's restore agrees),
    not the table's count at some other moment."""
    import threading

    db, counts = app_db
    stop = threading.Event()
    inserted = [0]

    def write() -> None:
        with pg.connect(db) as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO audit_log (action, entity) VALUES ('tick', 'test')")
                inserted[0] += 1

    t = threading.Thread(target=write, daemon=True)
    t.start()
    try:
        while inserted[0] < 50:  # the writer is running before the backup begins
            assert t.is_alive(), "the writer thread died"
            stop.wait(0.01)
        cfg = backup_config(db)
        r = cli(["--config", cfg, "run", "db-backup", "--json"])
        assert r.code == 0, r.output
    finally:
        stop.set()
        t.join(10)
    bid = r.json()[0]["artifacts"][0]["id"]
    show = cli(["--config", cfg, "backups", "show", bid, "--json"]).json()
    n = show["manifest"]["postgres"]["row_counts"]["public.audit_log"]
    assert counts["audit_log"] + 50 <= n < counts["audit_log"] + inserted[0], (n, inserted[0])
    r = cli(["--config", cfg, "run", "backup-verify", "--json"])
    assert r.code == 0, r.output
    assert r.json()[0]["status"] == "ok", r.json()[0]  # every table's restored count equals the manifest's


def test_pg_dump_error_on_stderr_with_exit_zero_fails_the_backup(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any,
        tmp_path: Path) -> None:
    db, _ = app_db
    bin_dir = wrapped_pg_dump(tmp_path, pg, f'"{pg.bin}/pg_dump" "$@"\necho "pg_dump: error: query failed: '
                                             f'injected" >&2\nexit 0')
    cfg = backup_config(db, target_extra={"bin_dir": str(bin_dir)})
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 1, r.output
    run = r.json()[0]
    assert run["status"] == "fail" and "pg_dump reported an error" in run["summary"], run
    assert "injected" in run["summary"]
    assert _sets(tmp_path / "store1") == [] and cli(["--config", cfg, "backups", "list", "--json"]).json() == []
    assert list((tmp_path / "store1").iterdir()) == []


def test_pg_dump_that_writes_nothing_fails_the_backup(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any,
        tmp_path: Path) -> None:
    db, _ = app_db
    cfg = backup_config(db, target_extra={"bin_dir": str(wrapped_pg_dump(tmp_path, pg, "exit 0"))})
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 1, r.output
    run = r.json()[0]
    assert run["status"] == "fail" and "no output" in run["summary"], run
    assert _sets(tmp_path / "store1") == [] and cli(["--config", cfg, "backups", "list", "--json"]).json() == []
    assert list((tmp_path / "store1").iterdir()) == []  # nor the empty directories of the set it began


@pytest.mark.parametrize("case", ["split", "not-an-archive", "short"])
def test_the_archive_is_checked_and_stored_whole_however_pg_dump_writes_it(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any, age_key: AgeKey,
        tmp_path: Path, case: str) -> None:
    """The dump is read as it comes (one buffer, read into again): its first bytes alone, then the rest, make the
    archive they make together, stored whole, and the pipe pg_dump writes into holds 1 MiB (where the system lets
    it), so that pg_dump goes on while the task compresses; output that is not an archive (found out from
    bytes split between reads), or shorter than an archive's magic, fails the backup with nothing stored."""
    db, _ = app_db
    probe = tmp_path / "pipe-size"
    ask = f"import fcntl; open({str(probe)!r}, 'w').write(str(fcntl.fcntl(1, 1032)))"  # 1032: F_GETPIPE_SZ
    body = {"split": f'"{pg.bin}/pg_dump" "$@" | {{ dd bs=1 count=3 2>/dev/null; sleep 0.3; '
                     f'"{sys.executable}" -c "{ask}"; cat; }}',
            "not-an-archive": "printf PG; sleep 0.3; printf 'DXnot an archive'",
            "short": "printf PGD"}[case]
    cfg = backup_config(db, target_extra={"bin_dir": str(wrapped_pg_dump(tmp_path, pg, body))})
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    run = r.json()[0]
    if case != "split":
        assert r.code == 1 and run["status"] == "fail", run
        assert "is not a custom-format archive" in run["summary"], run
        assert _sets(tmp_path / "store1") == [] and cli(["--config", cfg, "backups", "list", "--json"]).json() == []
        return
    assert r.code == 0 and run["status"] == "ok", run
    if int(Path("/proc/sys/fs/pipe-max-size").read_text()) >= 1 << 20:
        assert int(probe.read_text()) == 1 << 20
    [set_dir] = _sets(tmp_path / "store1")
    [obj] = [o for o in json.loads((set_dir / "manifest.json").read_text())["objects"] if o["role"] == "database"]
    dec = subprocess.run(["age", "-d", "-i", str(age_key.identity), str(set_dir / obj["name"])], check=True,
                         capture_output=True)
    raw = subprocess.run(["zstd", "-d", "-c"], input=dec.stdout, check=True, capture_output=True).stdout
    assert raw.startswith(b"PGDMP") and len(raw) == obj["raw_size"]
    dump = tmp_path / "plain.dump"
    dump.write_bytes(raw)
    listing = subprocess.run([str(pg.bin / "pg_restore"), "--list", str(dump)], check=True, capture_output=True,
                             text=True).stdout
    assert "TABLE DATA public users" in listing


def test_every_recipient_can_decrypt(cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]],
                                     backup_config: Any, age_key: AgeKey, tmp_path: Path) -> None:
    """Two X25519 recipients (say, the ops team's key and an offline escrow key): each one alone decrypts."""
    second = tmp_path / "escrow.txt"
    subprocess.run(["age-keygen", "-o", str(second)], check=True, capture_output=True)
    pub2 = subprocess.run(["age-keygen", "-y", str(second)], check=True, capture_output=True, text=True).stdout.strip()
    db, _ = app_db
    cfg = backup_config(db, backup={"encryption": {"recipients": [age_key.recipient, pub2],
                                                   "identity_file": str(age_key.identity)}})
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 0, r.output
    [set_dir] = _sets(tmp_path / "store1")
    enc = set_dir / f"{db}.dump.zst.age"
    for identity in (age_key.identity, second):
        dec = subprocess.run(["age", "-d", "-i", str(identity), str(enc)], check=True, capture_output=True)
        raw = subprocess.run(["zstd", "-d", "-c"], input=dec.stdout, check=True, capture_output=True).stdout
        assert raw.startswith(b"PGDMP")


@pytest.mark.parametrize("fmt", ["custom", "directory"])
def test_server_session_timeouts_do_not_cut_the_snapshot_session(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any, fmt: str) -> None:
    """A server with statement_timeout and idle_in_transaction_session_timeout (common in production): the
    session that exports the dump's snapshot counts rows (here one count waits 1.5 s for a lock, longer than
    statement_timeout) and then sits idle in its transaction while pg_dump and the upload run (here a slow
    upload).  pg_dump turns these timeouts off for its own sessions; ours must too, or a good dump is reported
    failed."""
    import threading
    import time

    db, counts = app_db
    for setting in ("idle_in_transaction_session_timeout", "statement_timeout"):
        pg.execute(f"ALTER DATABASE \"{db}\" SET {setting} = '500ms'")
    cfg = backup_config(db, options={"format": fmt, "jobs": 2})
    blocker = pg.connect(db, autocommit=False)
    blocker.execute("SET idle_in_transaction_session_timeout = 0")
    blocker.execute("LOCK TABLE reviews IN ACCESS EXCLUSIVE MODE")
    t = threading.Thread(target=lambda: (time.sleep(1.5), blocker.rollback()))
    t.start()
    try:
        r = cli(["--config", cfg, "run", "db-backup", "--json"], env={"UPKEEPER_FAULT_PAUSE": "during-upload:2"})
    finally:
        t.join()
        blocker.close()
    assert r.code == 0, r.output
    bid = r.json()[0]["artifacts"][0]["id"]
    show = cli(["--config", cfg, "backups", "show", bid, "--json"]).json()
    assert show["manifest"]["postgres"]["row_counts"]["public.reviews"] == counts["reviews"]


@pytest.fixture
def owner_role(pg: PostgresCluster, app_db: tuple[str, dict[str, int]]) -> Any:
    """A backup role that is no superuser: it owns nothing cluster-wide and reads the app's tables (as a
    database owner or a granted backup role does), but not pg_authid, where role passwords live."""
    db, _ = app_db
    role = f"bk_{db}"[:63]
    pg.execute(f'CREATE ROLE "{role}" LOGIN')
    pg.execute(f'CREATE ROLE "{role}_app" LOGIN PASSWORD \'app-role-secret\'')
    pg.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"; '
               f'GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO "{role}"', db)
    yield role
    pg.execute(f'DROP OWNED BY "{role}"', db)
    pg.execute(f'DROP ROLE "{role}"; DROP ROLE "{role}_app"')


def _globals_sql(set_dir: Path, age_key: AgeKey) -> str:
    dec = subprocess.run(["age", "-d", "-i", str(age_key.identity), str(set_dir / "globals.sql.zst.age")],
                         check=True, capture_output=True)
    return subprocess.run(["zstd", "-d", "-c"], input=dec.stdout, check=True, capture_output=True).stdout.decode()


def test_a_role_that_cannot_read_role_passwords_backs_up_globals_without_them(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], owner_role: str, backup_config: Any,
        age_key: AgeKey, tmp_path: Path) -> None:
    """pg_dumpall --globals-only as a non-superuser: "permission denied for table pg_authid".  The roles are
    dumped again with --no-role-passwords (which reads pg_roles), the manifest says so, and the run warns."""
    db, _ = app_db
    cfg = backup_config(db, options={"globals": True}, target_extra={"user": owner_role})
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 0, r.output
    run = r.json()[0]
    assert run["status"] == "warn", run
    [finding] = run["findings"]
    assert finding["check"] == "backup.globals_without_role_passwords", finding
    assert owner_role in finding["message"] and "pg_authid" in finding["message"], finding
    [set_dir] = _sets(tmp_path / "store1")
    manifest = json.loads((set_dir / "manifest.json").read_text())
    assert manifest["postgres"]["globals"] == "without-role-passwords", manifest["postgres"]
    sql = _globals_sql(set_dir, age_key)
    assert f"CREATE ROLE {owner_role}_app" in sql and "PASSWORD" not in sql, sql


def test_globals_that_cannot_be_dumped_at_all_still_back_up_every_database(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], owner_role: str, backup_config: Any,
        tmp_path: Path) -> None:
    """Not even the roles without passwords can be read (pg_auth_members, where memberships live, revoked in
    the database pg_dumpall connects to): the database is still backed up — its data matters most — and the
    run fails naming the globals; the manifest records that the set holds none."""
    db, _ = app_db
    pg.execute("REVOKE SELECT ON pg_catalog.pg_auth_members FROM PUBLIC", db)
    try:
        cfg = backup_config(db, options={"globals": True}, target_extra={"user": owner_role})
        r = cli(["--config", cfg, "run", "db-backup", "--json"])
    finally:
        pg.execute("GRANT SELECT ON pg_catalog.pg_auth_members TO PUBLIC", db)
    assert r.code == 1, r.output
    run = r.json()[0]
    assert run["status"] == "fail", run
    [finding] = [f for f in run["findings"] if f["severity"] == "critical"]
    assert finding["check"] == "backup.globals_failed" and "pg_auth_members" in finding["message"], finding
    assert "FAILED: globals" in run["summary"] and "completed:" in run["summary"], run["summary"]
    [art] = run["artifacts"]
    assert art["database"] == db
    [set_dir] = _sets(tmp_path / "store1")
    manifest = json.loads((set_dir / "manifest.json").read_text())
    assert manifest["postgres"]["globals"] == "failed", manifest["postgres"]
    assert not (set_dir / "globals.sql.zst.age").exists()
    assert [o["role"] for o in manifest["objects"]] == ["database"]


@pytest.fixture
def limited_role(pg: PostgresCluster, app_db: tuple[str, dict[str, int]]) -> Any:
    """A backup role that is no superuser (connection limits do not apply to superusers) and reads every table;
    its sessions are ended and it is dropped after the test."""
    db, _ = app_db
    role = f"lim_{db}"[:63]
    pg.execute(f'CREATE ROLE "{role}" LOGIN IN ROLE pg_read_all_data')
    yield role
    pg.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'")
    pg.execute(f'DROP ROLE "{role}"')


@pytest.mark.parametrize("limited", ["database", "role", "role-in-use"])
def test_a_connection_limit_the_backup_cannot_fit_fails_it_naming_the_limit_and_the_fix(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], limited_role: str, backup_config: Any,
        tmp_path: Path, limited: str) -> None:
    """The backup needs 2 sessions at once (the snapshot session and pg_dump's).  A database or role with
    CONNECTION LIMIT 1 fails before anything is dumped, naming the limit, what the backup needs and the ALTER that
    fixes it.  A role limit that fits, used up at the time by another session of the role (the app's), fails
    when a session is refused, saying so.  Nothing is listed."""
    db, _ = app_db
    if limited == "database":
        pg.execute(f'ALTER DATABASE "{db}" CONNECTION LIMIT 1')
    else:
        pg.execute(f'ALTER ROLE "{limited_role}" CONNECTION LIMIT {1 if limited == "role" else 2}')
    cfg = backup_config(db, target_extra={"user": limited_role})
    if limited == "role-in-use":
        import psycopg

        with psycopg.connect(pg.conninfo(db) + f" user={limited_role}"):  # the app's session, as the same role
            r = cli(["--config", cfg, "run", "db-backup", "--json"])
    else:
        r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 1, r.output
    [f] = r.json()[0]["findings"]
    assert f["check"] == "backup.failed", f
    name = db if limited == "database" else limited_role
    kind = "database" if limited == "database" else "role"
    if limited == "role-in-use":
        assert f'too many connections for role "{limited_role}"' in f["message"], f
        assert "1 other session counted against its CONNECTION LIMIT 2" in f["message"], f
        assert f'ALTER ROLE "{limited_role}" CONNECTION LIMIT 4' in f["remediation"], f
    else:
        assert f["message"] == (f"{kind} {name} allows 1 connection (CONNECTION LIMIT 1); the backup of {db} needs 2 "
                                "connections at once: the session holding the dump's snapshot (it counts the rows) "
                                "and pg_dump's: nothing was dumped"), f
        assert f'ALTER {kind.upper()} "{name}" CONNECTION LIMIT 3' in f["remediation"], f
    assert "needs 2 connections" in f["message"]
    assert _sets(tmp_path / "store1") == []
    assert cli(["--config", cfg, "backups", "list", "--json"]).json() == []


def test_a_role_limit_below_the_dumps_jobs_dumps_with_fewer_jobs_and_warns(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], limited_role: str, backup_config: Any,
        tmp_path: Path) -> None:
    """Format 'directory' with jobs 2 opens 3 sessions of pg_dump's beside the snapshot's; a role with CONNECTION
    LIMIT 3 gets a backup with jobs 1 (and its watch), and a warning naming the limit and both fixes."""
    db, counts = app_db
    pg.execute(f'ALTER ROLE "{limited_role}" CONNECTION LIMIT 3')
    cfg = backup_config(db, options={"format": "directory", "jobs": 2}, target_extra={"user": limited_role})
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 0, r.output
    run = r.json()[0]
    [f] = run["findings"]
    assert run["status"] == "warn" and f["check"] == "backup.connection_limit", run
    assert "dumped with jobs 1" in f["message"] and "CONNECTION LIMIT" in f["message"], f
    assert "'jobs' to 1" in f["remediation"] and f'ALTER ROLE "{limited_role}" CONNECTION LIMIT 5' in f["remediation"]
    [set_dir] = _sets(tmp_path / "store1")
    manifest = json.loads((set_dir / "manifest.json").read_text())
    assert manifest["postgres"]["row_counts"]["public.bookings"] == counts["bookings"]


@pytest.mark.parametrize(("how", "lag"), [("run", 0.0), ("daemon", 0.0), ("run", 0.3), ("daemon", 0.3)])
def test_a_backup_stopped_with_its_whole_cgroup_is_interrupted_not_failed_and_not_notified(
        how: str, lag: float, cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any,
        tmp_path: Path, webhook_receiver: Any) -> None:
    """``systemctl stop`` SIGTERMs every process of the unit at once: ``upkeeper run --json`` (or the daemon), its
    worker and pg_dump (here waiting for a table a migration holds).  The run is recorded ``interrupted`` (said to
    be a stop, not "pg_dump failed"), nothing is stored or listed, backup.work_dir stays empty, no process is
    left, no failure is notified (a requested stop pages nobody), ``run --json`` still prints the run and exits
    143, the daemon exits 0 naming the run it interrupted — and the next backup works.  (The run's JSON used to
    be empty, and a 'db-backup was interrupted' error went to the channels on every stop.)"""
    import psutil
    import yaml

    db, _ = app_db
    work = tmp_path / "work"
    work.mkdir()
    cfg = backup_config(db, backup={"work_dir": str(work)}, options={"lock_wait_timeout": "0s"})
    data = yaml.safe_load(cfg.read_text())
    data["notifications"] = {"channels": {"team": {"kind": "webhook", "url": webhook_receiver.url + "/hook"}}}
    cfg.write_text(yaml.safe_dump(data))
    if how == "run":
        argv = ["run", "db-backup", "--json"]
    else:  # the daemon starts a planned run at once
        assert cli(["--config", cfg, "run", "db-backup", "--at", "+1s"]).code == 0
        webhook_receiver.requests.clear()  # its announcement
        time.sleep(1.1)
        argv = ["daemon"]
    with pg.connect(db) as migration:
        migration.execute("BEGIN")
        migration.execute("LOCK TABLE reviews IN ACCESS EXCLUSIVE MODE")
        p = subprocess.Popen([sys.executable, "-m", "upkeeper", "--config", str(cfg), *argv],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        try:
            deadline = time.monotonic() + 60
            while p.poll() is None and time.monotonic() < deadline and not pg.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'upkeeper pg_dump %' "
                    "AND wait_event_type = 'Lock'"):
                time.sleep(0.05)
            assert p.poll() is None, p.communicate()
            assert "pg_dump" in [q.name() for q in psutil.Process(p.pid).children(recursive=True)]
        finally:
            took, out, err, procs = stop_cgroup(p, lag=lag)
        migration.execute("ROLLBACK")
    assert took < 10, took
    _gone, alive = psutil.wait_procs(procs, timeout=5)
    assert alive == [], alive
    [row] = cli(["--config", cfg, "history", "--json"]).json()
    assert row["status"] == "interrupted", row
    assert "asked to stop" in row["summary"] and "pg_dump" not in row["summary"], row
    if how == "run":
        assert p.returncode == 143, err.decode()
        [shown] = json.loads(out)
        assert (shown["run_id"], shown["status"], shown["summary"]) == (row["id"], "interrupted", row["summary"])
    else:
        assert p.returncode == 0, err.decode()
        assert f"1 run(s) interrupted (runs {row['id']};" in err.decode(), err.decode()
    assert [str(f) for f in work.rglob("*")] == []
    assert [str(f) for f in (tmp_path / "store1").rglob("*") if f.is_file()] == []
    assert cli(["--config", cfg, "backups", "list", "--json"]).json() == []
    assert webhook_receiver.requests == []
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 0 and r.json()[0]["status"] == "ok", r.output
    assert webhook_receiver.requests == []  # no "recovered" either: nothing had failed
