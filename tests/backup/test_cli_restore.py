"""'backups restore': a NEW database by default; replacing an existing one (empty or not) needs --force plus
--yes (or a confirmation), and names the database and what it holds first; the backup restores into a temporary
database, so a failed or interrupted restore leaves the existing one as it was.  Bad --to paths and unknown
list/prune values are usage errors.  Also directory format and passphrase encryption."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from upkeeper.sandbox.postgres import PostgresCluster
from upkeeper.sandbox.redis import RedisServer

from .conftest import AgeKey, run_app_files_backup


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
        # the source database exists: refused without --force, naming it and what it holds
        pg.execute("DELETE FROM reviews", db)
        r = cli(["--config", cfg, "backups", "restore", bid, "--database", db])
        assert r.code == 2 and f"database '{db}'" in r.err and f"already exists ({len(counts)} tables" in _flat(r.err)
        # --force without --yes and without a terminal: refused, naming the database it would drop
        r = cli(["--config", cfg, "backups", "restore", bid, "--database", db, "--force"])
        assert r.code == 2 and f"DROP database '{db}'" in _flat(r.err)
        assert _count(pg, db, "reviews") == 0
        r = cli(["--config", cfg, "backups", "restore", bid, "--database", db, "--force", "--yes", "--json"])
        assert r.code == 0, r.output
        assert r.json()["replaced"] and _count(pg, db, "reviews") == counts["reviews"]
    finally:
        with pg.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{new}" WITH (FORCE)')


def test_the_default_name_is_always_a_new_database(cli: Any, pg: PostgresCluster,
                                                   app_db: tuple[str, dict[str, int]], backup_config: Any) -> None:
    """Without --database the restore goes to a NEW database, also when one restored in the same minute already
    has '<db>_restored_<time>' (two backups restored one after the other to compare them, a restore run again):
    the next free '…_2', '…_3'.  (It was refused: 'already exists … Try: … omit --database', which it did.)"""
    db, counts = app_db
    cfg = backup_config(db)
    bid = _backup(cli, cfg)
    made: list[str] = []
    try:
        for _ in range(3):
            r = cli(["--config", cfg, "backups", "restore", bid, "--json"])
            assert r.code == 0, r.output
            assert not r.json()["replaced"], r.output
            made.append(r.json()["database"])
        assert len(set(made)) == 3 and all(n.startswith(f"{db}_restored_") for n in made), made
        if made[0][-12:] == made[2].split("_restored_")[1][:12]:  # (all three in the same minute)
            assert made[1:] == [f"{made[0]}_2", f"{made[0]}_3"], made
        assert all(_count(pg, n) == counts["users"] for n in made)
    finally:
        _drop(pg, *made)


@pytest.mark.parametrize("flag", ["--target", "--database", "--storage", "--to"])
def test_an_empty_option_value_is_refused_not_taken_for_the_default(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any, make_config: Any,
        age_key: AgeKey, tmp_path: Path, flag: str) -> None:
    """An option given an empty value — an unset shell variable in a script (`--target "$STAGING"`) — is a usage
    error naming the option, and nothing is restored.  (It was taken for the option left out: `--target ""`
    restored into the backup's own server, with --force replacing the database there; `--to ""` extracted a
    files backup into the current directory; `--database ""` restored into a new database and exited 0.)"""
    db, _ = app_db
    if flag == "--to":
        cfg = _files_config(make_config, tmp_path, _app(tmp_path, big=1 << 10), age_key)
        bid = _files_backup(cli, cfg)
    else:
        cfg = backup_config(db)
        bid = _backup(cli, cfg)
    before = sorted(r[0] for r in pg.execute("SELECT datname FROM pg_database"))
    _mark(pg, db)
    here = tmp_path / "cwd"
    here.mkdir()
    args = {"--target": ["--database", db, "--force", "--yes"], "--database": ["--force", "--yes"],
            "--storage": ["--database", f"{db}_new"], "--to": ["--force"]}[flag]
    old = os.getcwd()
    os.chdir(here)
    try:
        r = cli(["--config", cfg, "backups", "restore", bid, flag, "", *args])
    finally:
        os.chdir(old)
        made = [n for (n,) in pg.execute("SELECT datname FROM pg_database") if n not in before]
        _drop(pg, *made)
    assert r.code == 2, r.output
    flat = _flat(r.err)
    assert f"{flag} is empty" in flat and "Try:" in flat, flat
    assert made == [] and _marked(pg, db) and list(here.iterdir()) == []


def test_the_confirmation_is_asked_on_stderr_not_in_the_json_on_stdout(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any) -> None:
    """--force without --yes at a terminal asks before dropping — on stderr, with the explanation: stdout is
    --json, or piped (where the question was unseen, and the restore seemed to hang).  Declined, nothing
    changes, and it says so."""
    import pty

    db, counts = app_db
    cfg = backup_config(db)
    bid = _backup(cli, cfg)
    pg.execute("DELETE FROM reviews", db)
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-c", "from upkeeper.cli.main import main; main()", "--config", str(cfg),
                          "backups", "restore", bid, "--database", db, "--force", "--json"],
                         stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(slave)
    try:
        os.write(master, b"n\n")  # read once the question is asked
        out, err = p.communicate(timeout=60)
    finally:
        os.close(master)
    assert p.returncode == 1, (out, err)
    assert out == b"", out
    flat = _flat(err.decode())
    assert f"Replace database '{db}'? [y/N]" in flat and "not confirmed" in flat and "was not changed" in flat, flat
    assert _count(pg, db, "reviews") == 0 and _count(pg, db) == counts["users"]


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


def _flat(text: str) -> str:
    """An error as one line (the console wraps long ones)."""
    return " ".join(text.split())


def _scratch_databases(pg: PostgresCluster) -> list[str]:
    """Temporary or set-aside databases a restore may have left behind."""
    return sorted(r[0] for r in pg.execute(r"SELECT datname FROM pg_database WHERE datname LIKE '%\_upkeeper\_%'"))


def _drop(pg: PostgresCluster, *names: str) -> None:
    with pg.connect() as conn:
        for n in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)')


def test_restore_keeps_owners_and_grants_and_no_owner_drops_them(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any) -> None:
    """A restore gives the app's role back its tables and grants, as pg_restore does (it restored every object
    owned by the restoring user without a GRANT: the app got "permission denied").  Where the backup's roles do
    not exist, the restore fails naming the role and pointing at --globals or --no-owner, and creates nothing;
    --no-owner restores every object owned by the restoring user, without the backup's GRANTs."""
    db, counts = app_db
    role = f"app_{db}"[:63]
    pg.execute(f'CREATE ROLE "{role}" LOGIN')
    kept, stripped = f"{db}_kept", f"{db}_stripped"
    privileges = ("SELECT (SELECT coalesce(relacl::text, '') FROM pg_class WHERE oid = 'public.users'::regclass), "
                  "(SELECT tableowner FROM pg_tables WHERE tablename = 'app_owned')")
    try:
        pg.execute(f'GRANT SELECT ON users TO "{role}"; CREATE TABLE app_owned (id int); '
                   f'ALTER TABLE app_owned OWNER TO "{role}"', db)
        cfg = backup_config(db)
        bid = _backup(cli, cfg)
        r = cli(["--config", cfg, "backups", "restore", bid, "--database", kept, "--json"])
        assert r.code == 0, r.output
        [(acl, owner)] = pg.execute(privileges, kept)
        assert f"{role}=r/" in acl and owner == role, (acl, owner)
        pg.execute(f'DROP OWNED BY "{role}"', db)
        pg.execute(f'DROP OWNED BY "{role}"', kept)
        pg.execute(f'DROP ROLE "{role}"')
        r = cli(["--config", cfg, "backups", "restore", bid, "--database", stripped])
        assert r.code == 1, r.output
        err = _flat(r.err)
        assert f'role "{role}" does not exist' in err and "--globals" in err and "--no-owner" in err, err
        assert "was not created" in err and _scratch_databases(pg) == [], err
        r = cli(["--config", cfg, "backups", "restore", bid, "--database", stripped, "--no-owner", "--json"])
        assert r.code == 0, r.output
        [(acl, owner)] = pg.execute(privileges, stripped)
        assert role not in acl and owner == "postgres", (acl, owner)
        assert _count(pg, stripped) == counts["users"]
    finally:
        _drop(pg, kept, stripped)
        if pg.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", params=[role]):
            pg.execute(f'DROP OWNED BY "{role}"', db)
            pg.execute(f'DROP ROLE "{role}"')


_DATABASE_LEVEL = ("SELECT pg_get_userbyid(datdba), coalesce(datacl::text, ''), shobj_description(oid, 'pg_database'), "
                   "(SELECT string_agg(coalesce(r.rolname, '-') || ':' || array_to_string(s.setconfig, ','), ' ' "
                   "ORDER BY r.rolname NULLS FIRST) FROM pg_db_role_setting s LEFT JOIN pg_roles r "
                   "ON r.oid = s.setrole WHERE s.setdatabase = d.oid) FROM pg_database d WHERE datname = %s")


def test_restore_gives_the_database_its_owner_privileges_comment_and_settings(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any) -> None:
    """The database itself comes back as it was backed up — its owner (the app's role, which needs it to create
    schemas in its migrations), its CONNECT privileges (a database closed to PUBLIC stays closed), its comment
    and its settings (ALTER DATABASE … SET, ALTER ROLE … IN DATABASE … SET) — as pg_restore --create gives them,
    also when it replaces an existing database.  --no-owner keeps only the comment and the database's own
    settings.  (They came back owned by the restoring user, open to PUBLIC, without settings; a comment whose text
    named the database had that name replaced by the temporary one.)"""
    db, counts = app_db
    role = f"own_{db}"[:63]
    pg.execute(f'CREATE ROLE "{role}" LOGIN')
    copy, stripped = f"{db}_copy", f"{db}_stripped"
    try:
        pg.execute(f'ALTER DATABASE "{db}" OWNER TO "{role}"; REVOKE ALL ON DATABASE "{db}" FROM PUBLIC; '
                   f'ALTER DATABASE "{db}" SET work_mem = \'8MB\'; '
                   f'ALTER ROLE "{role}" IN DATABASE "{db}" SET statement_timeout = \'5s\'; '
                   f"COMMENT ON DATABASE \"{db}\" IS 'the app''s data (DATABASE {db} ; in production)'")
        [before] = pg.execute(_DATABASE_LEVEL, params=[db])
        assert before[:2] == (role, f"{{{role}=CTc/{role}}}"), before  # closed to PUBLIC
        cfg = backup_config(db)
        bid = _backup(cli, cfg)
        r = cli(["--config", cfg, "backups", "restore", bid, "--database", copy, "--json"])
        assert r.code == 0, r.output
        [restored] = pg.execute(_DATABASE_LEVEL, params=[copy])
        assert restored == before, (restored, before)
        assert _count(pg, copy) == counts["users"]
        # replacing the database itself (the roll-back of production) keeps them too
        pg.execute(f'ALTER DATABASE "{db}" OWNER TO postgres; GRANT ALL ON DATABASE "{db}" TO PUBLIC')
        r = cli(["--config", cfg, "backups", "restore", bid, "--database", db, "--force", "--yes", "--json"])
        assert r.code == 0, r.output
        [replaced] = pg.execute(_DATABASE_LEVEL, params=[db])
        assert replaced == before, (replaced, before)
        r = cli(["--config", cfg, "backups", "restore", bid, "--database", stripped, "--no-owner", "--json"])
        assert r.code == 0, r.output
        [(owner, acl, comment, settings)] = pg.execute(_DATABASE_LEVEL, params=[stripped])
        assert (owner, acl, comment, settings) == ("postgres", "", f"the app's data (DATABASE {db} ; in production)",
                                                   "-:work_mem=8MB")
        assert _scratch_databases(pg) == []
    finally:
        _drop(pg, copy, stripped)
        pg.execute(f'ALTER DATABASE "{db}" OWNER TO postgres')
        pg.execute(f'DROP OWNED BY "{role}"', db)
        pg.execute(f'DROP ROLE "{role}"')


_LOCALE = ("SELECT pg_encoding_to_char(encoding), datcollate, datctype, datlocprovider, daticulocale FROM pg_database "
           "WHERE datname = %s")


def test_restore_keeps_the_databases_encoding_and_collation(
        cli: Any, pg: PostgresCluster, pg_db: str, backup_config: Any) -> None:
    """The database comes back with its encoding, locale provider, collation and ctype, as pg_restore --create
    gives them, under any name and when it replaces one: text sorts and compares as it did.  (It came back with
    the server's defaults: UTF8, libc C.UTF-8, sorting 'B' before 'a'.)"""
    db = pg_db
    pg.execute(f'DROP DATABASE "{db}"')
    pg.execute(f"CREATE DATABASE \"{db}\" ENCODING 'LATIN1' LOCALE_PROVIDER icu ICU_LOCALE 'de' LOCALE 'C' "
               "TEMPLATE template0")
    pg.execute("CREATE TABLE words (w text); INSERT INTO words VALUES ('B'), ('a'), ('ä')", db)
    sort = "SELECT string_agg(w, ',' ORDER BY w) FROM words"
    assert pg.execute(sort, db)[0][0] == "a,ä,B"
    [before] = pg.execute(_LOCALE, params=[db])
    assert before == ("LATIN1", "C", "C", "i", "de"), before
    cfg = backup_config(db)
    bid = _backup(cli, cfg)
    copy = f"{db}_Copy"  # a name that needs quoting
    try:
        r = cli(["--config", cfg, "backups", "restore", bid, "--database", copy, "--json"])
        assert r.code == 0, r.output
        assert pg.execute(_LOCALE, params=[copy])[0] == before
        assert pg.execute(sort, copy)[0][0] == "a,ä,B"
        r = cli(["--config", cfg, "backups", "restore", bid, "--database", copy, "--force", "--yes", "--json"])
        assert r.code == 0 and r.json()["replaced"], r.output
        assert pg.execute(_LOCALE, params=[copy])[0] == before
        assert _scratch_databases(pg) == []
    finally:
        _drop(pg, copy)


def test_an_existing_database_without_tables_is_replaced_only_with_force(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any) -> None:
    """Large objects, functions, types and schemas are data too: a database holding only those (or nothing at
    all) is an existing database, replaced only with --force, and the refusal says what it holds."""
    db, counts = app_db
    cfg = backup_config(db)
    bid = _backup(cli, cfg)
    victim, empty = f"{db}_lo", f"{db}_empty"
    pg.create_database(victim)
    pg.create_database(empty)
    try:
        pg.execute("SELECT lo_from_bytea(0, 'scanned contract')", victim)
        pg.execute("CREATE SCHEMA billing", victim)
        pg.execute("CREATE TYPE billing.state AS ENUM ('open', 'paid')", victim)
        pg.execute("CREATE FUNCTION billing.due() RETURNS int LANGUAGE sql AS 'SELECT 30'", victim)
        r = cli(["--config", cfg, "backups", "restore", bid, "--database", victim])
        assert r.code == 2, r.output
        err = _flat(r.err)
        assert f"database '{victim}' on " in err and "--force" in err, err
        assert "already exists (1 large object, 1 function or procedure, 1 type, 1 schema besides public)" in err
        assert pg.execute("SELECT count(*) FROM pg_largeobject_metadata", victim)[0][0] == 1
        r = cli(["--config", cfg, "backups", "restore", bid, "--database", empty])
        assert r.code == 2, r.output
        assert f"database '{empty}' on " in _flat(r.err) and "already exists (no tables" in _flat(r.err), r.err
        # confirmed, it is replaced, even while a session is connected to it (which is terminated)
        with pg.connect(victim) as session:
            r = cli(["--config", cfg, "backups", "restore", bid, "--database", victim, "--force", "--yes", "--json"])
            with pytest.raises(psycopg.OperationalError, match="terminating connection"):
                session.execute("SELECT 1")
        assert r.code == 0, r.output
        assert r.json()["replaced"] and r.json()["database"] == victim
        assert _count(pg, victim) == counts["users"]
        assert pg.execute("SELECT count(*) FROM pg_largeobject_metadata", victim)[0][0] == 0
        assert _scratch_databases(pg) == []
    finally:
        _drop(pg, victim, empty)


def _faulty_pg_restore(tmp_path: Path, pg: PostgresCluster, body: str) -> Path:
    """A bin_dir with the real PostgreSQL tools, except a pg_restore that does what ``body`` says (``$REAL`` runs
    the real one): fault injection around the real tool, for failures a healthy server will not produce on
    demand.  ``pg_restore --version`` (asked before a restore) and the calls that only read the archive (without
    ``--dbname``: its table of contents, the database's own entries) are always the real one's."""
    d = tmp_path / "faultbin"
    d.mkdir()
    for tool in pg.bin.iterdir():
        if tool.name != "pg_restore":
            (d / tool.name).symlink_to(tool)
    w = d / "pg_restore"
    w.write_text(f'#!/bin/sh\nREAL="{pg.bin}/pg_restore"\ncase " $* " in *" --dbname "*) ;; *) exec "$REAL" "$@";; esac\n{body}\n')
    w.chmod(0o755)
    return d


def _mark(pg: PostgresCluster, db: str) -> None:
    """Data written after the backup: only the original database has it."""
    pg.execute("CREATE TABLE after_backup (note text); INSERT INTO after_backup VALUES ('only here')", db)


def _marked(pg: PostgresCluster, db: str) -> bool:
    return bool(pg.execute("SELECT count(*) = 1 FROM after_backup", db)[0][0])


def test_a_failed_pg_restore_leaves_the_existing_database_untouched(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any,
        tmp_path: Path) -> None:
    """--force replaces the database only after the backup restored: a pg_restore that fails (here: the real
    one, then a full disk) costs neither the existing database nor a half-restored new one."""
    db, counts = app_db
    bin_dir = _faulty_pg_restore(tmp_path, pg, '"$REAL" "$@" || exit\n'
                                 'echo "pg_restore: error: could not write to file: No space left on device" >&2\n'
                                 'exit 1')
    bid = _backup(cli, backup_config(db))  # the real tools back up (a backup reads its sequences with pg_restore)
    cfg = backup_config(db, target_extra={"bin_dir": str(bin_dir)})
    _mark(pg, db)
    r = cli(["--config", cfg, "backups", "restore", bid, "--database", db, "--force", "--yes"])
    assert r.code == 1, r.output
    assert _marked(pg, db) and _count(pg, db) == counts["users"]
    assert _scratch_databases(pg) == []
    err = _flat(r.err)
    assert "No space left on device" in err and f"database '{db}' on " in err and "was not changed" in err, err
    assert "the temporary database" in err and "_upkeeper_restore_" in err and "was dropped" in err, err
    # restoring into a new database: a failure leaves no half-restored database under that name either
    new = f"{db}_new"
    try:
        r = cli(["--config", cfg, "backups", "restore", bid, "--database", new])
        assert r.code == 1, r.output
        assert pg.execute("SELECT count(*) FROM pg_database WHERE datname = %s", params=[new])[0][0] == 0
        assert _scratch_databases(pg) == []
        assert f"database '{new}' on " in _flat(r.err) and "was not created" in _flat(r.err), r.err
    finally:
        _drop(pg, new)


@pytest.mark.parametrize("sig", ["INT", "TERM"])
def test_an_interrupted_restore_leaves_the_existing_database_untouched(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any,
        tmp_path: Path, sig: str) -> None:
    """Ctrl-C (SIGINT) or a stop (SIGTERM: systemd, timeout) while pg_restore runs: the temporary database goes,
    the existing one stays as it was."""
    db, counts = app_db
    # the real pg_restore runs, then upkeeper (its parent) gets the signal while it waits
    bin_dir = _faulty_pg_restore(tmp_path, pg, f'"$REAL" "$@" || exit\nkill -{sig} $PPID\nexec sleep 30')
    bid = _backup(cli, backup_config(db))  # the real tools back up (a backup reads its sequences with pg_restore)
    cfg = backup_config(db, target_extra={"bin_dir": str(bin_dir)})
    _mark(pg, db)
    # its own process: the signal must not reach the test runner
    res = subprocess.run([sys.executable, "-c", "from upkeeper.cli.main import main; main()", "--config", str(cfg),
                          "backups", "restore", bid, "--database", db, "--force", "--yes"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == (130 if sig == "INT" else 143), res.stdout + res.stderr
    assert _marked(pg, db) and _count(pg, db) == counts["users"]
    assert _scratch_databases(pg) == []
    assert f"database '{db}' on " in _flat(res.stderr) and "was not changed" in _flat(res.stderr), res.stderr


@pytest.mark.parametrize("into", ["new", "existing"])
def test_a_full_work_dir_is_a_clear_failure_that_changes_no_database(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any, small_fs: Path,
        into: str) -> None:
    """backup.work_dir (where the dump is fetched for pg_restore) without room for it: the restore fails naming
    the full disk, the work directory and what to do, changes no database and leaves no plaintext behind.  (It
    ended in 'internal error: OSError: [Errno 28] No space left on device … report the traceback'.)"""
    db, counts = app_db
    bid = _backup(cli, backup_config(db))
    cfg = backup_config(db, backup={"work_dir": str(small_fs)})
    (small_fs / "filler").write_bytes(b"\0" * (shutil.disk_usage(small_fs).free - (8 << 10)))
    name = db if into == "existing" else f"{db}_new"
    if into == "existing":
        _mark(pg, db)
    r = cli(["--config", cfg, "backups", "restore", bid, "--database", name, "--force", "--yes", "--json"])
    try:
        assert r.code == 1, r.output
        flat = _flat(r.err)
        assert "internal error" not in flat and "Traceback" not in r.output, r.output
        assert "No space left on device" in flat and str(small_fs) in flat and "backup.work_dir" in flat, flat
        assert (f"database '{name}' on " in flat
                and ("was not changed" if into == "existing" else "was not created") in flat), flat
        assert r.out == ""
        if into == "existing":
            assert _marked(pg, db) and _count(pg, db) == counts["users"]
        assert pg.execute("SELECT count(*) FROM pg_database WHERE datname = %s", params=[f"{db}_new"])[0][0] == 0
        assert _scratch_databases(pg) == []
        assert [p.name for p in small_fs.iterdir()] == ["filler"]
    finally:
        _drop(pg, f"{db}_new")


@pytest.mark.parametrize("fault", ["interrupt", "error"])
def test_a_failure_just_after_the_temporary_database_is_created_drops_it(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any,
        monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    """Ctrl-C (or an error) after the server created the temporary database but before it is marked incomplete
    (a CREATE DATABASE the server completed as the stop came): it is dropped like at any later point, and the
    error says so.  (It was left behind, unmarked, by a stop that is not a kill -9.)"""
    from upkeeper.backup import pg as pgmod

    db, _ = app_db
    cfg = backup_config(db)
    bid = _backup(cli, cfg)
    real_comment = pgmod.comment_database

    def failing_comment(conn: Any, name: str, comment: str | None) -> None:
        if comment is not None and comment.startswith("INCOMPLETE"):
            if fault == "interrupt":
                raise KeyboardInterrupt
            raise psycopg.errors.InsufficientPrivilege("must be owner of database")
        real_comment(conn, name, comment)

    monkeypatch.setattr(pgmod, "comment_database", failing_comment)
    new = f"{db}_new"
    try:
        r = cli(["--config", cfg, "backups", "restore", bid, "--database", new])
        monkeypatch.undo()
        assert r.code == (130 if fault == "interrupt" else 1), r.output
        assert _scratch_databases(pg) == [], r.output
        assert pg.execute("SELECT count(*) FROM pg_database WHERE datname = %s", params=[new])[0][0] == 0
        flat = _flat(r.err)
        assert f"database '{new}' on " in flat and "was not created" in flat, flat
        assert "the temporary database" in flat and "was dropped" in flat, flat
    finally:
        monkeypatch.undo()
        _drop(pg, new, *_scratch_databases(pg))


def test_a_restore_killed_outright_leaves_a_database_marked_incomplete_and_the_next_one_says_so(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any,
        tmp_path: Path) -> None:
    """kill -9 while pg_restore fills the temporary database: nothing can clean up (and what pg_restore wrote
    until it died with upkeeper, test_orphans.py, stays).  The temporary database says in its comment that it is an incomplete restore
    (which backup, into which name), and the next restore on that server warns about it, naming the DROP that
    removes it — nothing is dropped for the operator.  (It was left unmarked, and no later run mentioned it.)"""
    db, _ = app_db
    mark = tmp_path / "restoring"
    bin_dir = _faulty_pg_restore(tmp_path, pg, f'touch "{mark}"\nexec sleep 30')
    bid = _backup(cli, backup_config(db))
    cfg = backup_config(db, target_extra={"bin_dir": str(bin_dir)})
    new = f"{db}_new"
    p = subprocess.Popen([sys.executable, "-c", "from upkeeper.cli.main import main; main()", "--config", str(cfg),
                          "backups", "restore", bid, "--database", new], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(300):
            if mark.exists() or p.poll() is not None:
                break
            time.sleep(0.05)
        assert mark.exists(), "pg_restore never started"
    finally:
        os.killpg(p.pid, signal.SIGKILL)  # upkeeper and its pg_restore
        p.wait()
    try:
        [(temp, comment)] = pg.execute(r"SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
                                       r"WHERE datname LIKE '%\_upkeeper\_restore\_%'")
        assert temp.startswith(f"{new}_upkeeper_restore_"), temp
        assert comment.startswith(f"INCOMPLETE: upkeeper restore of backup {bid} into '{new}'"), comment
        r = cli(["--config", backup_config(db), "backups", "restore", bid, "--database", new, "--json"])
        assert r.code == 0, r.output
        [left] = r.json()["leftover_databases"]
        assert left["database"] == temp and left["comment"] == comment, left
        assert f'DROP DATABASE "{temp}"' in _flat(r.err), r.err
        assert _scratch_databases(pg) == [temp]  # still there: the operator drops it
        [(restored_comment,)] = pg.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                                           "WHERE datname = %s", params=[new])
        assert restored_comment is None  # the finished restore carries no mark
    finally:
        _drop(pg, new, *_scratch_databases(pg))


@pytest.mark.parametrize("into", ["existing", "new"])
def test_ctrl_c_as_the_server_completes_a_rename_is_judged_by_what_the_server_holds(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any,
        monkeypatch: pytest.MonkeyPatch, into: str) -> None:
    """Ctrl-C arriving just as the server completes the first rename of the swap.  Replacing a database: the
    original, just set aside, is put back under its name, and the error's 'was not changed' is true (it said so
    of a database then named …_upkeeper_old_…, its own name gone).  Into a new name: the restored database has
    taken it, so the restore is finished and says so (it said the database 'was not created' while it was
    there)."""
    from upkeeper.backup import pg as pgmod

    db, counts = app_db
    cfg = backup_config(db)
    bid = _backup(cli, cfg)
    _mark(pg, db)
    name = db if into == "existing" else f"{db}_new"
    real_rename = pgmod.rename_database
    calls: list[tuple[str, str]] = []

    def interrupted_rename(conn: Any, old: str, new: str, **kw: Any) -> None:
        calls.append((old, new))
        real_rename(conn, old, new, **kw)
        if len(calls) == 1:
            raise KeyboardInterrupt  # the server is done, then the signal comes

    monkeypatch.setattr(pgmod, "rename_database", interrupted_rename)
    try:
        r = cli(["--config", cfg, "backups", "restore", bid, "--database", name, "--force", "--yes", "--json"])
        monkeypatch.undo()
        assert calls[0][0] == name if into == "existing" else calls[0][1] == name, calls
        assert _scratch_databases(pg) == [], r.output
        flat = _flat(r.err)
        if into == "existing":
            assert r.code == 130, r.output
            assert f"database '{db}' on " in flat and "was not changed" in flat, flat
            assert _marked(pg, db) and _count(pg, db) == counts["users"]
        else:
            assert r.code == 0, r.output
            assert r.json()["database"] == name and _count(pg, name) == counts["users"]
            assert "was not created" not in flat, flat
    finally:
        monkeypatch.undo()
        _drop(pg, f"{db}_new", *_scratch_databases(pg))


@pytest.mark.parametrize("dropped", [True, False])
def test_ctrl_c_while_the_replaced_database_is_dropped_reports_what_is_there(
        pg: PostgresCluster, pg_db: str, monkeypatch: pytest.MonkeyPatch, dropped: bool) -> None:
    """Ctrl-C at the last step of a replacing restore, the drop of the set-aside original: when the server
    completed the drop, the restore is complete and says so; when not, the error names the database still
    there.  (It said 'still there as …_upkeeper_old_…' of a database already gone.)"""
    from upkeeper.backup import pg as pgmod
    from upkeeper.cli import backups
    from upkeeper.config.targets import PostgresTarget

    name, temp, aside = pg_db, f"{pg_db}_upkeeper_restore_0000abcd", f"{pg_db}_upkeeper_old_0000abcd"
    pg.create_database(temp)
    real_drop = pgmod.drop_database

    def interrupted_drop(conn: Any, db: str) -> None:
        if dropped:
            real_drop(conn, db)  # the server is done, then the signal comes
        raise KeyboardInterrupt

    monkeypatch.setattr(pgmod, "drop_database", interrupted_drop)
    tgt = PostgresTarget.model_validate(pg.target(name))
    try:
        if dropped:
            assert backups._swap_in(tgt, "postgres", temp, name, aside) is None
            assert _scratch_databases(pg) == []
        else:
            with pytest.raises(backups._SwapIncomplete, match=f"still there as '{aside}'"):
                backups._swap_in(tgt, "postgres", temp, name, aside)
            assert _scratch_databases(pg) == [aside]
        assert pg.execute("SELECT count(*) FROM pg_database WHERE datname = %s", params=[name])[0][0] == 1
    finally:
        monkeypatch.undo()
        _drop(pg, temp, aside)


def test_globals_errors_other_than_existing_roles_fail_the_restore(
        cli: Any, make_config: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any,
        tmp_path: Path) -> None:
    """--globals runs the roles SQL past errors, as objects that already exist are expected; any other error
    (here: a user who may not create the role the server lacks) fails the restore before any database is
    created."""
    db, counts = app_db
    gone = f"gone_{db}"
    pg.execute(f'CREATE ROLE "{gone}"')
    cfg = backup_config(db, options={"globals": True})
    bid = _backup(cli, cfg)
    pg.execute(f'DROP ROLE "{gone}"')
    role, by_role, new = f"restorer_{db}", f"{db}_by_role", None
    pg.execute(f'CREATE ROLE "{role}" LOGIN CREATEDB')
    try:
        as_role = make_config({"targets": {"db": {**pg.target(db), "user": role}},
                               "storages": {"local1": {"kind": "local", "path": str(tmp_path / "store1"),
                                                       "fsync": False}},
                               "backup": yaml_backup(cfg)}, name="restorer.yaml")
        r = cli(["--config", as_role, "backups", "restore", bid, "--database", by_role, "--globals"])
        assert r.code == 1, r.output
        assert pg.execute("SELECT count(*) FROM pg_database WHERE datname = %s", params=[by_role])[0][0] == 0
        assert _scratch_databases(pg) == []
        err = _flat(r.err)
        assert "applying the backup's globals" in err and "permission denied to create role" in err, err
        assert "without --globals" in err
        # on the same server as a superuser: the roles that exist already are skipped, which is no error
        r = cli(["--config", cfg, "backups", "restore", bid, "--globals", "--json"])
        assert r.code == 0, r.output
        new = r.json()["database"]
        assert r.json()["globals_already_existed"] >= 1 and _count(pg, new) == counts["users"]
    finally:
        _drop(pg, by_role, *([new] if new else []))
        pg.execute(f'DROP ROLE IF EXISTS "{role}"')
        pg.execute(f'DROP ROLE IF EXISTS "{gone}"')


def test_globals_leave_roles_that_exist_as_they_are(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any) -> None:
    """--globals creates the backup's roles that the server lacks and skips those it has, as --help says: an
    existing role keeps its password, attributes, settings, comment and memberships — a password rotated since
    the backup stays rotated, a role disabled on a staging server stays disabled.  (pg_dumpall's ALTER ROLE …
    PASSWORD, ALTER ROLE … SET, COMMENT and GRANT ran for them too: the roles were silently reset to the backup's.)"""
    db, counts = app_db
    app, grp, gone = f"app_{db}", f"grp_{db}", f"gone_{db}"
    roles = (app, grp, gone)
    state = ("SELECT rolcanlogin, rolpassword, coalesce(shobj_description(a.oid, 'pg_authid'), ''), "
             "coalesce((SELECT array_to_string(setconfig, ',') FROM pg_db_role_setting s "
             " WHERE s.setrole = a.oid AND s.setdatabase = 0), ''), pg_has_role(a.rolname, %s, 'MEMBER') "
             "FROM pg_authid a WHERE rolname = %s")
    new = None
    try:
        pg.execute(f'CREATE ROLE "{grp}"; CREATE ROLE "{gone}" NOLOGIN; '
                   f'CREATE ROLE "{app}" LOGIN PASSWORD \'at-backup\' IN ROLE "{grp}"; '
                   f'ALTER ROLE "{app}" SET work_mem = \'8MB\'; COMMENT ON ROLE "{app}" IS \'at backup\'')
        cfg = backup_config(db, options={"globals": True})
        bid = _backup(cli, cfg)
        # since the backup: the app's password rotated, the role disabled, its setting, comment, membership changed
        pg.execute(f'ALTER ROLE "{app}" NOLOGIN PASSWORD \'rotated\'; ALTER ROLE "{app}" RESET work_mem; '
                   f'COMMENT ON ROLE "{app}" IS \'since\'; REVOKE "{grp}" FROM "{app}"; DROP ROLE "{gone}"')
        [before] = pg.execute(state, params=[grp, app])
        r = cli(["--config", cfg, "backups", "restore", bid, "--globals", "--json"])
        assert r.code == 0, r.output
        new = r.json()["database"]
        assert _count(pg, new) == counts["users"]
        [after] = pg.execute(state, params=[grp, app])
        assert after == before and after[0] is False and after[2:] == ("since", "", False), after
        # the role the server lacked is created as backed up, and counted apart from those that existed
        [(login,)] = pg.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", params=[gone])
        assert login is False
        existing = pg.execute("SELECT count(*) FROM pg_roles WHERE rolname !~ '^pg_'")[0][0] - 1
        assert r.json()["globals_already_existed"] == existing, r.output
    finally:
        _drop(pg, *([new] if new else []))
        for role in roles:
            if pg.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", params=[role]):
                pg.execute(f'DROP OWNED BY "{role}"', db)
                pg.execute(f'DROP ROLE "{role}"')


@pytest.mark.parametrize("content", ["not a key\n", "AGE-SECRET-KEY-1QQQQ\n"])
def test_an_identity_file_age_cannot_read_is_this_hosts_setup_not_the_backups_fault(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any, make_config: Any,
        age_key: AgeKey, tmp_path: Path, content: str) -> None:
    """identity_file holds no key age can read (a wrong file configured, a key mangled in a copy-paste): the
    restore fails naming identity_file and what age said of it, with what to fix, and creates nothing; a verify
    on such a host leaves the backup unjudged.  (The error blamed the object — 'object X: decryption failed' —
    without a hint, and a verify marked the good backup verify-failed.)"""
    db, _ = app_db
    cfg = backup_config(db)
    bid = _backup(cli, cfg)
    bad = tmp_path / "bad-key.txt"
    bad.write_text(content)
    import yaml

    data = yaml.safe_load(cfg.read_text())
    data["backup"]["encryption"]["identity_file"] = str(bad)
    wrong = make_config(data, "wrong-key.yaml")
    new = f"{db}_new"
    r = cli(["--config", wrong, "backups", "restore", bid, "--database", new])
    assert r.code == 1, r.output
    flat = _flat(r.err)
    assert f"identity_file {bad}" in flat and "age cannot read it" in flat, flat
    assert "Try: set backup -> encryption -> identity_file" in flat and "Traceback" not in r.output, flat
    assert pg.execute("SELECT count(*) FROM pg_database WHERE datname = %s", params=[new])[0][0] == 0
    assert _scratch_databases(pg) == []
    r = cli(["--config", wrong, "backups", "verify", bid, "--json"])
    [rep] = r.json()
    assert rep["inconclusive"] and not rep["ok"], rep
    assert cli(["--config", cfg, "backups", "show", bid, "--json"]).json()["status"] == "complete"


@pytest.mark.timeout(240)
def test_a_storage_that_fails_mid_read_fails_the_restore_instead_of_hanging_it(
        cli: Any, make_config: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], age_key: AgeKey,
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The link to an SFTP storage stalls half-way through the (encrypted) dump: the storage's read fails after
    its timeout, in the thread that feeds age, and the restore fails naming the storage — nothing created, no
    plaintext left, no traceback.  (That thread died with the error and never closed age's input: the restore
    waited for age for ever; paramiko's tracebacks of the connections that failed reached stderr.)"""
    from services import sftp_storage_config
    from stall_proxy import StallProxy

    db, _ = app_db
    pg.execute("CREATE TABLE blob AS SELECT md5(random()::text) || md5(random()::text) AS t "
               "FROM generate_series(1, 300000)", db)
    server = request.getfixturevalue("sftp_server")
    direct = sftp_storage_config(server)
    proxy = StallProxy(server.port)
    try:
        known_hosts = tmp_path / "known_hosts_proxy"
        host_key = " ".join((server.base / "host_ed25519.pub").read_text().split()[:2])
        known_hosts.write_text(f"[127.0.0.1]:{proxy.port} {host_key}\n")
        stalling = sftp_storage_config(server, direct.path, port=proxy.port, timeout=2,
                                       known_hosts=str(known_hosts))
        encryption = {"recipients": [age_key.recipient], "identity_file": str(age_key.identity)}
        work = tmp_path / "work"
        work.mkdir()

        def config(storage: Any, name: str) -> Path:
            path: Path = make_config({
                "targets": {"db": pg.target(db)},
                "storages": {"nas": storage.model_dump(mode="json", exclude_none=True)},
                "backup": {"encryption": encryption, "work_dir": str(work)},
                "jobs": {"db-backup": {"task": "postgres.backup", "target": "db",
                                       "options": {"databases": [db], "globals": False}}}}, name)
            return path

        bid = _backup(cli, config(direct, "direct.yaml"))
        proxy.throttle(256 * 1024)
        new = f"{db}_new"
        p = subprocess.Popen([sys.executable, "-c", "from upkeeper.cli.main import main; main()", "--config",
                              str(config(stalling, "stalling.yaml")), "backups", "restore", bid, "--database", new],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            for _ in range(1200):  # until part of the dump came through
                partial = [f for f in work.rglob(".dump.upkeeper-partial-*") if f.stat().st_size > 128 * 1024]
                if partial or p.poll() is not None:
                    break
                time.sleep(0.05)
            assert partial, "the restore never fetched part of the dump"
            proxy.freeze()
            out, err = p.communicate(timeout=90)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        assert p.returncode == 1, out + err
        flat = _flat(err.decode())
        assert "Error: cannot read" in flat and f"{bid}/{db}.dump.zst.age" in flat, flat
        assert "Traceback" not in flat, flat  # (paramiko's, of the reader's marker's connection through the stall)
        assert pg.execute("SELECT count(*) FROM pg_database WHERE datname = %s", params=[new])[0][0] == 0
        assert _scratch_databases(pg) == [] and list(work.iterdir()) == []
    finally:
        proxy.close()


def yaml_backup(cfg: Path) -> Any:
    """The ``backup:`` section of a config written by the fixtures."""
    from ruamel.yaml import YAML

    return YAML(typ="safe").load(cfg.read_text())["backup"]


def test_files_restore_to_a_file_is_a_usage_error(cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey
                                                  ) -> None:
    """--to a regular file for a files backup, with or without --force: an 'Error:' naming the path and what to
    give instead (not an internal error), before anything is read or written."""
    root = tmp_path / "app"
    root.mkdir()
    (root / "index.html").write_text("<h1>hi</h1>\n")
    (root / ".env").write_text("SECRET=1\n")
    cfg, run = run_app_files_backup(cli, make_config, age_key, tmp_path, root)
    files_id = run["artifacts"][0]["id"]
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me\n")
    for extra in (["--force", "--yes"], []):
        r = cli(["--config", cfg, "backups", "restore", files_id, "--to", a_file, *extra])
        assert r.code == 2, r.output
        err = _flat(r.err)
        assert err.startswith("Error: ") and f"--to {a_file} is not a directory" in err and "Try:" in err, err
        assert a_file.read_text() == "keep me\n"
    r = cli(["--config", cfg, "backups", "restore", files_id, "--to", a_file / "sub"])
    assert r.code == 2 and f"{a_file} is not a directory" in _flat(r.err), r.output
    r = cli(["--config", cfg, "backups", "restore", files_id, "--to", tmp_path / "out", "--database", "app"])
    assert r.code == 2 and "--database is for PostgreSQL backups" in _flat(r.err), r.output
    assert not (tmp_path / "out").exists()


def test_postgres_restore_refuses_to_instead_of_creating_a_database(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any, tmp_path: Path) -> None:
    """--to FILE (for files and Redis backups) given for a PostgreSQL backup is refused, not ignored: it created
    a new database on the server while the user looked for a file."""
    db, _ = app_db
    cfg = backup_config(db)
    bid = _backup(cli, cfg)
    before = sorted(r[0] for r in pg.execute("SELECT datname FROM pg_database"))
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", tmp_path / "app.dump"])
    assert r.code == 2, r.output
    assert "--to is for files and Redis backups" in _flat(r.err) and "--database" in _flat(r.err), r.output
    assert sorted(r[0] for r in pg.execute("SELECT datname FROM pg_database")) == before
    assert not (tmp_path / "app.dump").exists()


def test_redis_restore_to_a_directory_is_a_usage_error(cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey,
                                                       redis_clean: RedisServer) -> None:
    """--to a directory for a Redis backup (which writes one RDB file), even with --force: an 'Error:' naming it
    and suggesting a file in it (not an internal error)."""
    redis_clean.client().set("k", "v")
    rcfg = make_config({
        "targets": {"cache": redis_clean.target()},
        "storages": {"local1": {"kind": "local", "path": str(tmp_path / "rstore"), "fsync": False}},
        "backup": {"encryption": {"recipients": [age_key.recipient], "identity_file": str(age_key.identity)}},
        "jobs": {"cache-backup": {"task": "redis.backup", "target": "cache"}},
    }, name="redis.yaml")
    r = cli(["--config", rcfg, "run", "cache-backup", "--json"])
    assert r.code == 0, r.output
    redis_id = r.json()[0]["artifacts"][0]["id"]
    a_dir = tmp_path / "redis-dir"
    a_dir.mkdir()
    for extra in (["--force", "--yes"], []):
        r = cli(["--config", rcfg, "backups", "restore", redis_id, "--to", a_dir, *extra])
        assert r.code == 2, r.output
        err = _flat(r.err)
        assert f"--to {a_dir} is a directory" in err and f"Try: --to {a_dir / 'dump.rdb'}" in err, err
        assert list(a_dir.iterdir()) == []


def test_list_rejects_unknown_status_and_kind(cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]],
                                              backup_config: Any) -> None:
    """A misspelt --status or --kind is a usage error listing the valid values, not an empty list (which reads
    as 'no backups')."""
    db, _ = app_db
    cfg = backup_config(db)
    _backup(cli, cfg)
    r = cli(["--config", cfg, "backups", "list", "--status", "verifed"])
    assert r.code == 2, r.output
    assert "unknown --status 'verifed'" in _flat(r.err) and "complete, verified, verify-failed" in _flat(r.err)
    r = cli(["--config", cfg, "backups", "list", "--kind", "postgresql", "--json"])
    assert r.code == 2 and r.out == "", r.output
    assert "unknown --kind 'postgresql'" in _flat(r.err) and "postgres, files, redis" in _flat(r.err)
    assert len(cli(["--config", cfg, "backups", "list", "--kind", "postgres", "--status", "complete",
                    "--json"]).json()) == 1


def test_prune_rejects_an_unknown_target(cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]],
                                         backup_config: Any) -> None:
    """A --target neither the config nor the catalog knows is a usage error, not 'no backups on the storages'."""
    db, _ = app_db
    cfg = backup_config(db)
    _backup(cli, cfg)
    r = cli(["--config", cfg, "backups", "prune", "--target", "dbb", "--dry-run"])
    assert r.code == 2, r.output
    assert "no target 'dbb' in the config or the backup catalog" in _flat(r.err) and "(db)" in _flat(r.err)
    r = cli(["--config", cfg, "backups", "prune", "--target", "db", "--dry-run", "--json"])
    assert r.code == 0 and len(r.json()) == 1, r.output


def test_list_and_verify_reject_an_unknown_target_and_say_what_matched_nothing(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any) -> None:
    """'backups list --target dbb' printed "no backups in the catalog (run a backup job …)" with exit 0 while the
    catalog held backups; 'verify --target dbb' said "no backups to verify".  As for prune: a usage error."""
    db, _ = app_db
    cfg = backup_config(db)
    _backup(cli, cfg)
    for cmd in (["list"], ["list", "--json"], ["verify"]):
        r = cli(["--config", cfg, "backups", *cmd, "--target", "dbb"])
        assert r.code == 2, r.output
        assert "no target 'dbb' in the config or the backup catalog" in _flat(r.err) and "(db)" in _flat(r.err)
    r = cli(["--config", cfg, "backups", "list", "--target", "db", "--kind", "files"])
    assert r.code == 0 and r.out.strip() == "no backups match --target db --kind files.", r.output
    assert len(cli(["--config", cfg, "backups", "list", "--target", "db", "--json"]).json()) == 1


def test_restore_refuses_the_options_of_the_other_kind_of_backup(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any, make_config: Any,
        age_key: AgeKey, tmp_path: Path) -> None:
    """'--to DIR' for a PostgreSQL backup was ignored: it restored into a new database on the server and said
    so, exit 0.  '--database' for a files backup was ignored too.  Both are usage errors now, before anything
    is read or written."""
    db, _ = app_db
    cfg = backup_config(db)
    bid = _backup(cli, cfg)
    before = {r[0] for r in pg.execute("SELECT datname FROM pg_database")}
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", tmp_path / "out"])
    assert r.code == 2, r.output
    assert f"--to is for files and Redis backups; {bid} is a PostgreSQL backup" in _flat(r.err), r.output
    assert {r[0] for r in pg.execute("SELECT datname FROM pg_database")} == before
    assert not (tmp_path / "out").exists()
    root = tmp_path / "app"
    root.mkdir()
    (root / "index.html").write_text("<h1>hi</h1>\n")
    (root / ".env").write_text("SECRET=1\n")
    fcfg, run = run_app_files_backup(cli, make_config, age_key, tmp_path, root)
    files_id = run["artifacts"][0]["id"]
    r = cli(["--config", fcfg, "backups", "restore", files_id, "--to", tmp_path / "restored", "--database", "app"])
    assert r.code == 2, r.output
    assert f"--database is for PostgreSQL backups; {files_id} is a files backup, restored --to a directory" \
        in _flat(r.err), r.output
    assert not (tmp_path / "restored").exists()


# ---------------------------------------------------------------------------------------------
# Files restores are atomic: streamed into a private staging directory beside or inside --to, moved into
# place only once every object matched its SHA-256 and every member passed the checks.
# ---------------------------------------------------------------------------------------------


def _files_config(make_config: Any, tmp_path: Path, root: Path, age_key: AgeKey, work_dir: Path | None = None
                  ) -> Path:
    backup: dict[str, Any] = {"encryption": {"recipients": [age_key.recipient],
                                             "identity_file": str(age_key.identity)}}
    if work_dir is not None:
        backup["work_dir"] = str(work_dir)
    cfg: Path = make_config({
        "targets": {"web": {"kind": "app", "root": str(root)}},
        "storages": {"local1": {"kind": "local", "path": str(tmp_path / "store"), "fsync": False}},
        "backup": backup,
        "jobs": {"app-backup": {"task": "files.backup", "target": "web", "options": {"secret_paths": [".env"]}}},
    })
    return cfg


def _app(tmp_path: Path, big: int = 1 << 20) -> Path:
    """An app with an incompressible file of ``big`` bytes (many age chunks), a small one and a secret."""
    root = tmp_path / "srv" / "app"
    (root / "public").mkdir(parents=True)
    (root / "public" / "big.bin").write_bytes(os.urandom(big))
    (root / "app.js").write_text("console.log('hi')\n")
    (root / ".env").write_text("DATABASE_URL=postgres://app:s3cr3t@db/app\n")
    return root


def _files_backup(cli: Any, cfg: Path) -> str:
    r = cli(["--config", cfg, "run", "app-backup", "--json"])
    assert r.code == 0 and r.json()[0]["status"] == "ok", r.output
    return str(r.json()[0]["artifacts"][0]["id"])


def _tree(d: Path) -> dict[str, bytes | str | None]:
    """Everything under ``d`` (not following links): file contents, link targets, directories."""
    if not d.exists():
        return {}
    return {str(p.relative_to(d)): (os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else None)
            for p in sorted(d.rglob("*"))}


def _no_plaintext_left(tmp_path: Path, *dirs: Path) -> None:
    """No staging directory anywhere under tmp_path; no restore work directory in ``dirs``."""
    assert not [p for p in tmp_path.rglob(".upkeeper-restore-staging-*")]
    for d in dirs:
        assert not [p for p in d.glob("*upkeeper-restore-*")] if d.exists() else True


@pytest.mark.parametrize("corrupt", ["files.tar.zst.age", "secrets.tar.zst.age"])
@pytest.mark.parametrize("into", ["new", "existing"])
def test_a_corrupt_object_leaves_the_directory_as_it_was(cli: Any, make_config: Any, tmp_path: Path,
                                                         age_key: AgeKey, corrupt: str, into: str) -> None:
    """A byte flipped near the end of a stored object: the object is streamed and extracted before its SHA-256
    is known (at the end of the stream), so nothing may reach --to before that — neither a new directory nor,
    with --force, an existing one changes; the error names the object and says so."""
    root = _app(tmp_path)
    cfg = _files_config(make_config, tmp_path, root, age_key, work_dir=tmp_path / "work")
    (tmp_path / "work").mkdir()
    bid = _files_backup(cli, cfg)
    [obj] = list((tmp_path / "store").rglob(corrupt))
    data = bytearray(obj.read_bytes())
    data[-20] ^= 0x01
    obj.write_bytes(bytes(data))
    dest = tmp_path / "restored"
    extra = []
    if into == "existing":
        (dest / "keep").mkdir(parents=True)
        (dest / "keep" / "notes.txt").write_text("mine\n")
        (dest / str(root).lstrip("/")).mkdir(parents=True)
        (dest / str(root).lstrip("/") / "app.js").write_text("old version\n")
        extra = ["--force"]
    before = _tree(dest)
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", dest, *extra])
    assert r.code == 1, r.output
    assert _tree(dest) == before and dest.exists() == (into == "existing"), r.output
    flat = _flat(r.err)
    assert f"object {corrupt} is corrupt" in flat and "Traceback" not in r.output, r.output
    assert (f"{dest} was not changed" if into == "existing" else f"{dest} was not created") in flat, flat
    _no_plaintext_left(tmp_path, tmp_path / "work")


def test_a_refused_member_leaves_the_directory_as_it_was(cli: Any, make_config: Any, tmp_path: Path,
                                                         age_key: AgeKey) -> None:
    """A member the manifest does not list, at the end of the archive (after every genuine one): the restore
    fails naming it, and none of the members before it was left in --to."""
    from .test_files_backup import _member, _tamper_archive

    root = _app(tmp_path, big=1 << 16)
    cfg = _files_config(make_config, tmp_path, root, age_key)
    bid = _files_backup(cli, cfg)
    rel = str(root).lstrip("/")
    _tamper_archive(cli, cfg, tmp_path, age_key, "files.tar.zst.age",
                    lambda ms: [*ms, _member(f"{rel}/pwned.js", b"pwned\n")])
    dest = tmp_path / "restored"
    dest.mkdir()
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", dest])
    assert r.code == 1, r.output
    assert list(dest.iterdir()) == [], r.output
    flat = _flat(r.err)
    assert f"refusing member '{rel}/pwned.js'" in flat and "the manifest does not list" in flat, flat
    assert f"{dest} was not changed" in flat, flat
    _no_plaintext_left(tmp_path)


def test_a_full_disk_leaves_the_directory_as_it_was(cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey,
                                                   small_fs: Path) -> None:
    """--to on a file system too small for the backup (a 2 MiB tmpfs, a 3 MiB file), --force over an earlier
    restore: the restore fails naming the full disk, the earlier files are as they were, and the space the
    partial extraction took is free again."""
    root = _app(tmp_path, big=3 << 20)
    cfg = _files_config(make_config, tmp_path, root, age_key)
    bid = _files_backup(cli, cfg)
    dest = small_fs / "restored"
    old = dest / str(root).lstrip("/")
    (old / "public").mkdir(parents=True)
    (old / "app.js").write_text("old version\n")
    (old / "public" / "big.bin").write_bytes(b"old" * 1000)
    before = _tree(dest)
    free = shutil.disk_usage(small_fs).free
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", dest, "--force"])
    assert r.code == 1, r.output
    assert _tree(dest) == before, r.output
    assert shutil.disk_usage(small_fs).free == free
    flat = _flat(r.err)
    assert "No space left on device" in flat and f"{dest} was not changed" in flat and "free space" in flat, flat
    assert "Traceback" not in r.output
    _no_plaintext_left(small_fs)


def test_a_restore_needs_no_second_copy_of_the_backup(cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey,
                                                      small_fs: Path) -> None:
    """The tar streams from storage into the extraction: a backup of 1.2 MiB restores onto a 2 MiB file system
    that is also backup.work_dir (no decrypted copy of the archive is written there first)."""
    root = _app(tmp_path, big=1200 << 10)
    work = small_fs / "work"
    work.mkdir()
    cfg = _files_config(make_config, tmp_path, root, age_key, work_dir=work)
    bid = _files_backup(cli, cfg)
    dest = small_fs / "restored"
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", dest])
    assert r.code == 0, r.output
    got = dest / str(root).lstrip("/")
    assert (got / "public" / "big.bin").read_bytes() == (root / "public" / "big.bin").read_bytes()
    assert (got / ".env").read_text() == (root / ".env").read_text()
    assert list(work.iterdir()) == []
    _no_plaintext_left(small_fs)


def _restore_paused(cfg: Path, bid: str, dest: Path, mark: Path, point: str = "restore-staged",
                    force: bool = True) -> subprocess.Popen[bytes]:
    """'backups restore' in a process of its own, paused at ``point``: once everything is extracted, before it
    is moved (restore-staged), or once the first entry was moved into a non-empty --to (restore-moving)."""
    env = {**os.environ, "UPKEEPER_FAULT_PAUSE": f"{point}:60", "UPKEEPER_FAULT_MARK": str(mark),
           "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.Popen([sys.executable, "-m", "upkeeper", "--config", str(cfg), "backups", "restore", bid, "--to",
                          str(dest), *(["--force"] if force else [])], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env)
    deadline = time.monotonic() + 60
    while not mark.exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if not mark.exists():
        p.kill()
        out, err = p.communicate()
        pytest.fail(f"the restore never paused at {point}: {out.decode()} {err.decode()}")
    return p


def _kill(p: subprocess.Popen[bytes]) -> None:
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=60)
    assert p.returncode == -signal.SIGKILL


@pytest.mark.parametrize("into", ["new", "empty"])
def test_a_restore_into_a_new_or_empty_directory_is_one_rename(cli: Any, make_config: Any, tmp_path: Path,
                                                               age_key: AgeKey, into: str) -> None:
    """Into a new or empty --to, the restore is staged beside it and the staging directory becomes --to in one
    rename: a restore killed (SIGKILL) at any point before leaves --to as it was (not even created), never a
    part of the backup; the next restore removes the leftover and needs no --force.  --to keeps its mode (a new
    one gets the umask's), and holds nothing of upkeeper's."""
    root = _app(tmp_path, big=1 << 16)
    cfg = _files_config(make_config, tmp_path, root, age_key)
    bid = _files_backup(cli, cfg)
    dest = tmp_path / "out" / "restored"
    if into == "empty":
        dest.mkdir(parents=True)
        dest.chmod(0o750)
    p = _restore_paused(cfg, bid, dest, tmp_path / "mark", force=False)
    try:
        [staging] = list((tmp_path / "out").glob(".upkeeper-restore-staging-*"))
        assert (staging / "tree" / str(root).lstrip("/") / ".env").is_file()
    finally:
        _kill(p)
    assert dest.exists() == (into == "empty") and (not dest.exists() or list(dest.iterdir()) == [])
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", dest])
    assert r.code == 0, r.output
    assert _tree(dest / str(root).lstrip("/")) == _tree(root)
    assert sorted(q.name for q in dest.iterdir()) == [str(root).lstrip("/").split("/")[0]]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(dest.stat().st_mode) == (0o750 if into == "empty" else 0o777 & ~umask)
    assert sorted(q.name for q in (tmp_path / "out").iterdir()) == ["restored"]


def test_a_restore_killed_just_after_its_rename_into_place_leaves_nothing_of_upkeepers_there(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey) -> None:
    """Killed (SIGKILL) right after the staged tree became --to: --to holds the whole backup and nothing else (the
    staging directory's lock marker stayed in it until the next step: a stray '.upkeeper-work-dir' that made
    --to need --force and went into the next files backup of it); the empty staging directory left beside it
    is removed by the next restore there."""
    root = _app(tmp_path, big=1 << 16)
    cfg = _files_config(make_config, tmp_path, root, age_key)
    bid = _files_backup(cli, cfg)
    dest = tmp_path / "out" / "restored"
    _kill(_restore_paused(cfg, bid, dest, tmp_path / "mark", point="restore-renamed", force=False))
    assert sorted(q.name for q in dest.iterdir()) == [str(root).lstrip("/").split("/")[0]]
    assert _tree(dest / str(root).lstrip("/")) == _tree(root)
    [left] = [q for q in (tmp_path / "out").iterdir() if q.name != "restored"]
    assert left.name.startswith(".upkeeper-restore-staging-") and [q.name for q in left.iterdir()] == [
        ".upkeeper-work-dir"]
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", tmp_path / "out" / "again"])
    assert r.code == 0, r.output
    assert sorted(q.name for q in (tmp_path / "out").iterdir()) == ["again", "restored"]


@pytest.fixture
def bind_mounted(tmp_path: Path) -> Iterator[Path]:
    """An empty directory that is a bind mount of itself (as a container's volume is): the device of its parent,
    another mount."""
    if os.geteuid() != 0:
        pytest.skip("a bind mount needs root")
    d = tmp_path / "volume"
    d.mkdir()
    d.chmod(0o750)
    res = subprocess.run(["mount", "--bind", str(d), str(d)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {res.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=True)


def test_a_restore_into_an_empty_bind_mount_is_moved_into_it(cli: Any, make_config: Any, tmp_path: Path,
                                                             age_key: AgeKey, bind_mounted: Path) -> None:
    """An empty --to that is a bind mount has its parent's st_dev, so the restore was staged beside it, and
    neither the rename into place nor the entry-by-entry fallback can cross into another mount: the restore
    failed ('Invalid cross-device link').  It is staged inside it, moved into place, and keeps its mode."""
    root = _app(tmp_path, big=1 << 16)
    cfg = _files_config(make_config, tmp_path, root, age_key)
    bid = _files_backup(cli, cfg)
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", bind_mounted])
    assert r.code == 0, r.output
    assert _tree(bind_mounted / str(root).lstrip("/")) == _tree(root)
    assert sorted(q.name for q in bind_mounted.iterdir()) == [str(root).lstrip("/").split("/")[0]]
    assert stat.S_IMODE(bind_mounted.stat().st_mode) == 0o750
    _no_plaintext_left(tmp_path)


def test_a_forced_restore_into_a_directory_with_a_mount_in_it_fails_before_moving_anything(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey) -> None:
    """--force into a directory where one of the backup's directories is another mount (a bind mount: same
    device): the entries before it were renamed into place, then the rename into the mount failed (EXDEV) and
    the restore stopped half-way.  It is found before anything moves: the error names the mount, the directory
    is as it was."""
    if os.geteuid() != 0:
        pytest.skip("a bind mount needs root")
    root = _app(tmp_path, big=1 << 12)
    cfg = _files_config(make_config, tmp_path, root, age_key)
    bid = _files_backup(cli, cfg)
    dest = tmp_path / "restored"
    old = dest / str(root).lstrip("/")
    (old / "public").mkdir(parents=True)
    (old / "app.js").write_text("old version\n")
    res = subprocess.run(["mount", "--bind", str(old / "public"), str(old / "public")], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {res.stderr.strip()}")
    try:
        before = _tree(dest)
        r = cli(["--config", cfg, "backups", "restore", bid, "--to", dest, "--force"])
        assert r.code == 1, r.output
        err = _flat(r.err)
        assert f"{old / 'public'} is on another file system (mount)" in err and f"{dest} was not changed" in err, err
        assert _tree(dest) == before
    finally:
        subprocess.run(["umount", "-l", str(old / "public")], check=True)
    _no_plaintext_left(tmp_path)


def test_a_restore_that_may_not_be_renamed_into_place_is_moved_entry_by_entry(
        make_config: Any, tmp_path: Path, age_key: AgeKey, cli: Any) -> None:
    """An empty --to owned by another user in a sticky directory of another user (a shared /srv/restore): the
    staged tree may not be renamed over it (EPERM), so its entries are moved into it one by one, with the
    backup's modes and mtimes; nothing is left beside it.  Root is run without CAP_FOWNER, which would let it."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv")
    root = _app(tmp_path, big=1 << 16)
    (root / "public").chmod(0o750)
    os.utime(root / "public", (1_500_000_000, 1_500_000_000))
    cfg = _files_config(make_config, tmp_path, root, age_key)
    bid = _files_backup(cli, cfg)
    shared = tmp_path / "shared"
    shared.mkdir()
    dest = shared / "restore"
    dest.mkdir()
    for d in (shared, dest):
        shutil.chown(d, "nobody")
    shared.chmod(0o1777)
    dest.chmod(0o777)
    res = subprocess.run([setpriv, "--bounding-set=-fowner", "--inh-caps=-fowner", sys.executable, "-m", "upkeeper",
                          "--config", str(cfg), "backups", "restore", bid, "--to", str(dest)],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert res.returncode == 0, res.stdout + res.stderr
    got = dest / str(root).lstrip("/")
    assert _tree(got) == _tree(root)
    assert stat.S_IMODE((got / "public").stat().st_mode) == 0o750
    assert (got / "public").stat().st_mtime == 1_500_000_000
    assert dest.stat().st_uid == pwd.getpwnam("nobody").pw_uid and stat.S_IMODE(dest.stat().st_mode) == 0o777
    assert sorted(q.name for q in shared.iterdir()) == ["restore"]
    assert sorted(q.name for q in dest.iterdir()) == [str(root).lstrip("/").split("/")[0]]


def test_a_restore_killed_while_moving_into_a_directory_says_so_and_is_completed(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey) -> None:
    """Into a non-empty --to (--force) the entries are renamed into place one by one: a restore killed
    (SIGKILL) half-way leaves .upkeeper-restore-incomplete there, naming the backup and what to run; restoring
    that backup again (no --force needed) completes it and removes the file, while another backup is refused
    without --force, naming the interrupted one.  Nothing that was there and is not in the backup is lost."""
    root = _app(tmp_path, big=1 << 16)
    cfg = _files_config(make_config, tmp_path, root, age_key)
    bid = _files_backup(cli, cfg)
    dest = tmp_path / "restored"
    old = dest / str(root).lstrip("/")
    (old / "public").mkdir(parents=True)
    (old / "app.js").write_text("old version\n")
    (old / "public" / "big.bin").write_bytes(b"old")
    (dest / "notes.txt").write_text("mine\n")
    p = _restore_paused(cfg, bid, dest, tmp_path / "mark", point="restore-moving")
    _kill(p)
    note = (dest / ".upkeeper-restore-incomplete").read_text()
    assert note.startswith(f"backup: {bid}\n") and f"upkeeper backups restore {bid} --to {dest}" in note
    assert _tree(old) != _tree(root)  # part of it only
    other = _files_backup(cli, cfg)
    r = cli(["--config", cfg, "backups", "restore", other, "--to", dest])
    assert r.code == 2, r.output
    assert f"holds part of backup {bid}" in _flat(r.err) and f"backups restore {bid} --to {dest}" in _flat(r.err)
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", dest])
    assert r.code == 0, r.output
    assert _tree(old) == _tree(root)
    assert sorted(q.name for q in dest.iterdir()) == sorted(["notes.txt", str(root).lstrip("/").split("/")[0]])
    _no_plaintext_left(tmp_path)


def test_secrets_are_staged_privately_inside_the_directory_and_removed_when_stopped(
        cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey) -> None:
    """While a restore runs, the decrypted secrets (and every other file) exist only in a 0700 staging directory
    inside --to, nowhere else (not in backup.work_dir).  Ctrl-C and SIGTERM remove it and leave --to as it was;
    one left by a killed restore (SIGKILL: nothing runs) is removed by the next restore into the directory,
    which does not count it as content."""
    root = _app(tmp_path, big=1 << 16)
    work = tmp_path / "work"
    work.mkdir()
    cfg = _files_config(make_config, tmp_path, root, age_key, work_dir=work)
    bid = _files_backup(cli, cfg)
    secret = (root / ".env").read_bytes()
    dest = tmp_path / "restored"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine\n")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        mark = tmp_path / f"mark-{sig.name}"
        p = _restore_paused(cfg, bid, dest, mark)
        try:
            [staging] = list(dest.glob(".upkeeper-restore-staging-*"))
            assert stat.S_IMODE(staging.stat().st_mode) == 0o700 and staging.stat().st_uid == os.geteuid()
            assert (staging / "tree" / str(root).lstrip("/") / ".env").read_bytes() == secret
            assert sorted(p.name for p in dest.iterdir()) == sorted(["notes.txt", staging.name])
            assert list(work.iterdir()) == []
            holders = [f for f in tmp_path.rglob(".env") if f.is_file() and f.read_bytes() == secret]
            assert sorted(holders) == sorted([root / ".env", staging / "tree" / str(root).lstrip("/") / ".env"])
            p.send_signal(sig)
            _out, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        if sig != signal.SIGKILL:
            assert p.returncode == (130 if sig == signal.SIGINT else 143), err.decode()
            assert f"stopped: {dest} was not changed" in _flat(err.decode()), err.decode()
            assert sorted(p.name for p in dest.iterdir()) == ["notes.txt"]
        else:
            assert [q.name for q in dest.iterdir() if q.name.startswith(".upkeeper-restore-staging-")] == [
                staging.name]
    # the killed restore's leftover holds plaintext: the next restore removes it, and does not count it as
    # content (no --force needed)
    (dest / "notes.txt").unlink()
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", dest])
    assert r.code == 0, r.output
    assert sorted(p.name for p in dest.iterdir()) == [str(root).lstrip("/").split("/")[0]]
    assert (dest / str(root).lstrip("/") / ".env").read_bytes() == secret


def test_a_staging_directory_with_read_only_directories_is_removed_entirely() -> None:
    """A restore (not as root) extracts directories with their archived modes; a 0555 directory in the staging
    directory of a failed restore must not keep the plaintext below it (rm -rf as the owner cannot delete
    entries of a directory it may not write)."""
    import pwd
    import tempfile

    from upkeeper.backup.workdir import staging_dir

    if os.geteuid() != 0:
        pytest.skip("acts as 'nobody' for the restore (root deletes whatever the modes say)")
    dest = Path(tempfile.mkdtemp(prefix="upk-restore-ro-", dir="/tmp"))  # pytest's tmp is 0700, closed to nobody
    dest.chmod(0o777)
    os.seteuid(pwd.getpwnam("nobody").pw_uid)
    try:
        with pytest.raises(RuntimeError), staging_dir(dest) as staging:
            (staging / "srv" / "app").mkdir(parents=True)
            (staging / "srv" / "app" / ".env").write_text("DATABASE_URL=postgres://app:s3cr3t@db/app\n")
            (staging / "srv" / "app").chmod(0o555)
            (staging / "srv").chmod(0o500)
            raise RuntimeError("the restore failed")
        assert list(dest.iterdir()) == []
    finally:
        os.seteuid(0)
        shutil.rmtree(dest)


def test_force_refuses_a_link_above_the_backup_where_it_has_no_directory(cli: Any, make_config: Any,
                                                                          tmp_path: Path, age_key: AgeKey) -> None:
    """The archive names files by their real paths ('tmp/…/srv/app/…') without listing 'tmp' itself: a 'tmp'
    symlink already in --to would lead them outside; --force refuses it (checked while extracting, so before
    anything is moved) instead of writing through it or replacing a link the backup knows nothing of."""
    root = _app(tmp_path, big=1 << 10)
    cfg = _files_config(make_config, tmp_path, root, age_key)
    bid = _files_backup(cli, cfg)
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "restored"
    dest.mkdir()
    (dest / "tmp").symlink_to(outside)
    (dest / "notes.txt").write_text("mine\n")
    before = _tree(dest)
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", dest, "--force"])
    assert r.code == 1, r.output
    assert _tree(dest) == before and list(outside.iterdir()) == [], r.output
    flat = _flat(r.err)
    assert f"{dest / 'tmp'} is a symlink: it would be written through it" in flat, flat
    assert f"{dest} was not changed" in flat, flat
    _no_plaintext_left(tmp_path)


@pytest.mark.parametrize("remote", ["s3", "sftp"])
def test_files_restore_streams_from_s3_and_sftp(cli: Any, make_config: Any, tmp_path: Path, age_key: AgeKey,
                                                remote: str, request: pytest.FixtureRequest) -> None:
    """The fetch runs in a thread of its own beside the extraction: a set on S3 (SeaweedFS) or SFTP (OpenSSH)
    restores the same bytes, and a corrupt copy there fails at the end of its stream leaving --to unchanged."""
    if remote == "s3":
        s3 = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("s3_bucket")
        storage = s3.storage_config(bucket, prefix="backups")
    else:
        from services import sftp_storage_config

        storage = sftp_storage_config(request.getfixturevalue("sftp_server")).model_dump(mode="json",
                                                                                         exclude_none=True)
    root = _app(tmp_path, big=3 << 20)
    cfg = make_config({
        "targets": {"web": {"kind": "app", "root": str(root)}},
        "storages": {"remote": storage},
        "backup": {"encryption": {"recipients": [age_key.recipient], "identity_file": str(age_key.identity)}},
        "jobs": {"app-backup": {"task": "files.backup", "target": "web", "options": {"secret_paths": [".env"]}}},
    })
    bid = _files_backup(cli, cfg)
    dest = tmp_path / "restored"
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", dest])
    assert r.code == 0, r.output
    got = dest / str(root).lstrip("/")
    assert (got / "public" / "big.bin").read_bytes() == (root / "public" / "big.bin").read_bytes()
    assert (got / ".env").read_bytes() == (root / ".env").read_bytes()
    _no_plaintext_left(tmp_path)

    key = f"web/files/{bid}/files.tar.zst.age"
    if remote == "s3":
        data = bytearray(s3.client().get_object(Bucket=bucket, Key=f"backups/{key}")["Body"].read())
        data[-20] ^= 0x01
        s3.client().put_object(Bucket=bucket, Key=f"backups/{key}", Body=bytes(data))
    else:
        obj = Path(storage["path"]) / key
        data = bytearray(obj.read_bytes())
        data[-20] ^= 0x01
        obj.write_bytes(bytes(data))
    (got / "app.js").write_text("edited since\n")
    (got / "public" / "big.bin").write_bytes(b"edited since\n")
    before = _tree(dest)
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", dest, "--force"])
    assert r.code == 1, r.output
    assert _tree(dest) == before, r.output
    flat = _flat(r.err)
    assert "object files.tar.zst.age is corrupt" in flat and f"{dest} was not changed" in flat, flat
    _no_plaintext_left(tmp_path)


def test_a_restore_into_a_server_without_the_dumps_tablespace_changes_nothing(
        cli: Any, pg: PostgresCluster, pg_db: str, backup_config: Any, services_dir: Path) -> None:
    """The backed-up database lies in a tablespace the server restored into lacks: its CREATE DATABASE fails
    naming the tablespace and the fix, and nothing is created.  With the tablespace, the restore recreates it
    there — for a database whose name is not the manifest's ('x#y': the set is named 'x_y'), which was refused
    ("cannot find the database's name").  Verify leaves the tablespace out: where the scratch database lies
    says nothing about the backup."""
    from upkeeper.sandbox._util import chown_to

    ts, db, copy = f"ts_{pg_db}", f"{pg_db}#app", f"{pg_db}_copy"
    location = services_dir / ts

    def make_tablespace() -> None:
        location.mkdir()
        chown_to(location, "postgres")
        pg.execute(f"CREATE TABLESPACE {ts} LOCATION '{location}'")

    make_tablespace()
    try:
        pg.execute(f'CREATE DATABASE "{db}" TABLESPACE {ts}')
        pg.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2)", db)
        cfg = backup_config(db, target_extra={"dbname": "postgres"})
        bid = _backup(cli, cfg)
        pg.execute(f'ALTER DATABASE "{db}" SET TABLESPACE pg_default')
        pg.execute(f"DROP TABLESPACE {ts}")
        shutil.rmtree(location)
        r = cli(["--config", cfg, "backups", "restore", bid, "--database", copy])
        assert r.code != 0, r.output
        err = _flat(r.err)
        assert f'tablespace "{ts}" does not exist' in err and f"TABLESPACE = {ts}" in err, err
        assert "was not created" in err and "--globals" in err, err
        assert pg.execute("SELECT 1 FROM pg_database WHERE datname = %s", params=[copy]) == []
        assert _scratch_databases(pg) == []
        for jobs in ("1", "2"):
            r = cli(["--config", cfg, "backups", "verify", bid, "--jobs", jobs, "--json"])
            assert r.code == 0 and r.json()[0]["ok"], r.output
        make_tablespace()
        r = cli(["--config", cfg, "backups", "restore", bid, "--database", copy, "--json"])
        assert r.code == 0, r.output
        assert pg.execute("SELECT spcname FROM pg_database d JOIN pg_tablespace t ON t.oid = dattablespace "
                          "WHERE datname = %s", params=[copy]) == [(ts,)]
        assert _count(pg, copy, "t") == 2
    finally:
        _drop(pg, copy, db)
        pg.execute(f"DROP TABLESPACE IF EXISTS {ts}")
        shutil.rmtree(location, ignore_errors=True)


_PROPERTIES = ("SELECT datistemplate, datallowconn, datconnlimit, (SELECT string_agg(coalesce(r.rolname, '-') || ':' "
               "|| array_to_string(s.setconfig, ','), ' ' ORDER BY r.rolname NULLS FIRST) FROM pg_db_role_setting s "
               "LEFT JOIN pg_roles r ON r.oid = s.setrole WHERE s.setdatabase = d.oid) FROM pg_database d "
               "WHERE datname = %s")


def _untemplate(pg: PostgresCluster, *names: str) -> None:
    for n in names:
        pg.execute("UPDATE pg_database SET datistemplate = false, datallowconn = true WHERE datname = %s",
                   params=[n])


def test_a_template_database_is_backed_up_restored_and_replaced_and_nothing_is_left_behind(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any) -> None:
    """A database marked IS_TEMPLATE (with a CONNECTION LIMIT) is backed up when named, and comes back a template
    with its limit, under a new name and in place of itself; the replaced database and a failed restore's
    temporary one are dropped although they are templates ("cannot drop a template database" kept them, with a
    warning or an error saying to drop them by hand).  Named in 'databases', it was reported "does not exist";
    one that allows no connections is named as such."""
    db, counts = app_db
    role = f"set_{db}"[:63]
    copy, other = f"{db}_copy", f"{db}_other"
    pg.execute(f'CREATE ROLE "{role}"')
    try:
        pg.execute(f'ALTER ROLE "{role}" IN DATABASE "{db}" SET work_mem = \'8MB\'; '
                   f'ALTER DATABASE "{db}" CONNECTION LIMIT 1; ALTER DATABASE "{db}" IS_TEMPLATE true')
        [before] = pg.execute(_PROPERTIES, params=[db])
        assert before == (True, True, 1, f"{role}:work_mem=8MB"), before
        cfg = backup_config(db)
        bid = _backup(cli, cfg)
        r = cli(["--config", cfg, "backups", "restore", bid, "--database", copy, "--json"])
        assert r.code == 0, r.output
        assert pg.execute(_PROPERTIES, params=[copy]) == [before] and _count(pg, copy) == counts["users"]
        pg.execute("DELETE FROM reviews", db)
        r = cli(["--config", cfg, "backups", "restore", bid, "--database", db, "--force", "--yes", "--json"])
        assert r.code == 0 and "warning" not in r.json(), r.output
        assert pg.execute(_PROPERTIES, params=[db]) == [before] and _count(pg, db, "reviews") == counts["reviews"]
        assert _scratch_databases(pg) == []
        r = cli(["--config", cfg, "backups", "verify", bid, "--json"])
        assert r.code == 0 and r.json()[0]["ok"], r.output
        # the temporary database is a template once the database's own entries ran: a failure after that
        # (a role of the backup's settings gone) still drops it
        pg.execute(f'DROP ROLE "{role}"')
        r = cli(["--config", cfg, "backups", "restore", bid, "--database", other])
        assert r.code == 1, r.output
        err = _flat(r.err)
        assert f'role "{role}" does not exist' in err and "temporary database" in err and "was dropped" in err, err
        assert _scratch_databases(pg) == [] and pg.execute(_PROPERTIES, params=[other]) == []
        pg.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')
        r = cli(["--config", backup_config(db, target_extra={"dbname": "postgres"}), "run", "db-backup", "--json"])
        assert r.code != 0 and "does not allow connections (ALLOW_CONNECTIONS false)" in r.json()[0]["summary"], \
            r.output
    finally:
        _untemplate(pg, db, copy, other, *_scratch_databases(pg))
        _drop(pg, copy, other, *_scratch_databases(pg))
        pg.execute(f'ALTER DATABASE "{db}" CONNECTION LIMIT -1')
        pg.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_the_databases_read_only_and_timeout_settings_bind_neither_restore_nor_verify(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any) -> None:
    """A database whose sessions are read-only and bound by a statement and lock timeout (ALTER DATABASE … SET,
    ALTER ROLE … IN DATABASE … SET), with a search_path naming a schema the restore creates, comes back with
    them under a new name and in place of itself, and verifies: the sessions that create, rename and drop
    databases from the target's database (here the backed-up one) are neither read-only nor timed out, nor is the
    one looking at what a replaced database holds.  (A restore under a new name failed "cannot execute CREATE
    DATABASE in a read-only transaction" or was cancelled, verify blamed a read-only role, and --force over a
    database with a short statement_timeout stopped with "internal error: QueryCanceled".)"""
    db, counts = app_db
    copy = f"{db}_copy"
    pg.execute("CREATE SCHEMA later; CREATE TABLE later.notes (n text); INSERT INTO later.notes VALUES ('x')", db)
    pg.execute(f'ALTER DATABASE "{db}" SET default_transaction_read_only = on; '
               f"ALTER DATABASE \"{db}\" SET statement_timeout = '1s'; "
               f"ALTER ROLE postgres IN DATABASE \"{db}\" SET lock_timeout = '1s'; "
               f'ALTER DATABASE "{db}" SET search_path = later, public')
    [before] = pg.execute(_PROPERTIES, params=[db])
    assert "default_transaction_read_only=on" in before[3] and "postgres:lock_timeout=1s" in before[3], before
    try:
        cfg = backup_config(db)
        bid = _backup(cli, cfg)
        # (set after the backup: pg_dump's own first statement would be cancelled) a timeout no statement of
        # upkeeper's sessions in the database could keep to
        pg.execute(f"ALTER DATABASE \"{db}\" SET statement_timeout = '1ms'")
        r = cli(["--config", cfg, "backups", "restore", bid, "--database", copy, "--json"])
        assert r.code == 0, r.output
        assert pg.execute(_PROPERTIES, params=[copy]) == [before]
        with psycopg.connect(pg.conninfo(copy)) as conn:
            assert conn.execute("SELECT count(*) FROM notes").fetchone() == (1,)  # (the search_path)
        r = cli(["--config", cfg, "backups", "verify", bid, "--json"])
        assert r.code == 0 and r.json()[0]["ok"], r.output
        r = cli(["--config", cfg, "backups", "restore", bid, "--database", db, "--force", "--yes", "--json"])
        assert r.code == 0 and "warning" not in r.json(), r.output
        assert pg.execute(_PROPERTIES, params=[db]) == [before] and _count(pg, db) == counts["users"]
        assert _scratch_databases(pg) == []
    finally:
        _drop(pg, copy)
        pg.execute(f'ALTER DATABASE "{db}" RESET ALL; ALTER ROLE postgres IN DATABASE "{db}" RESET ALL')


def test_restoring_a_verify_failed_backup_warns_before_it_starts(cli: Any, make_config: Any, tmp_path: Path,
                                                                 age_key: AgeKey) -> None:
    """A backup whose test restore failed was restored without a word: the warning (with why it failed) is on
    stderr before the restore begins, and in --json; a verified or unverified backup gets none."""
    from upkeeper.backup.catalog import Catalog
    from upkeeper.core.history import History

    root = _app(tmp_path, big=1 << 10)
    cfg = _files_config(make_config, tmp_path, root, age_key)
    bid = _files_backup(cli, cfg)
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", tmp_path / "out0", "--json"])
    assert r.code == 0 and "verify_failed" not in r.json() and "verify-failed" not in r.err, r.output
    h = History(f"sqlite:///{tmp_path / 'history.db'}")
    try:
        Catalog(h).mark_verified(bid, False, "file public/big.bin: SHA-256 differs", None)
    finally:
        h.close()
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", tmp_path / "out1"])
    assert r.code == 0, r.output
    err = _flat(r.err)
    assert f"warning backup {bid} is marked verify-failed (its test restore on " in err, err
    assert "failed: file public/big.bin: SHA-256 differs); restoring it anyway" in err, err
    assert (tmp_path / "out1" / str(root).lstrip("/") / "app.js").read_text() == "console.log('hi')\n"
    r = cli(["--config", cfg, "backups", "restore", bid, "--to", tmp_path / "out2", "--json"])
    assert r.code == 0, r.output
    assert "SHA-256 differs" in r.json()["verify_failed"], r.output
