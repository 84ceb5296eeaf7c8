"""postgres.backup on a busy server: table locks held or queued for by migrations, DDL racing the dump's start,
and a hot standby ending the backup's sessions (conflicts with recovery)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from upkeeper.sandbox.postgres import PostgresCluster

from .conftest import standby_backup_config, wrapped_pg_dump


def _sets(store: Path) -> list[Path]:
    return sorted(p.parent for p in store.rglob("manifest.json"))


def _slow_start_pg_dump(tmp_path: Path, pg: PostgresCluster, mark: Path, delay: float = 1.5) -> Path:
    """A bin_dir whose pg_dump touches ``mark`` and waits ``delay`` seconds before running the real one: the gap
    between the snapshot's export and pg_dump's table locks (seconds on a database with many tables), widened so
    that DDL can land in it on cue."""
    d = tmp_path / "slowbin"
    d.mkdir()
    w = d / "pg_dump"
    w.write_text(f'#!/bin/sh\ncase "$1" in --version) exec "{pg.bin}/pg_dump" "$@";; esac\n'
                 f'touch "{mark}"\nsleep {delay}\nexec "{pg.bin}/pg_dump" "$@"\n')
    w.chmod(0o755)
    for tool in ("pg_dumpall", "pg_restore", "psql"):  # a bin_dir is the only place the others are looked for
        (d / tool).symlink_to(pg.bin / tool)
    return d


class _DDL(threading.Thread):
    """Runs ``statement`` as application 'migration' once ``mark`` exists; a watchdog ends it when it has not
    finished within ``limit`` seconds (a deadlock the server cannot see would otherwise hang the test)."""

    def __init__(self, pg: PostgresCluster, db: str, mark: Path, statement: str, limit: float = 10.0) -> None:
        super().__init__(daemon=True)
        self.pg, self.db, self.mark, self.statement, self.limit = pg, db, mark, statement, limit
        self.seconds: float | None = None
        self.error: str | None = None
        self.terminated = False

    def run(self) -> None:
        deadline = time.monotonic() + 60
        while not self.mark.exists():
            if time.monotonic() > deadline:
                self.error = "pg_dump never started"
                return
            time.sleep(0.02)
        time.sleep(0.3)
        with self.pg.connect(self.db) as conn:
            conn.execute("SET application_name = 'migration'")
            pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            done = threading.Event()

            def watchdog() -> None:
                if not done.wait(self.limit):
                    self.terminated = True
                    self.pg.execute(f"SELECT pg_terminate_backend({pid})")

            threading.Thread(target=watchdog, daemon=True).start()
            t0 = time.monotonic()
            try:
                conn.execute(self.statement)
                self.seconds = time.monotonic() - t0
            except Exception as exc:  # ended by the watchdog
                self.error = str(exc).splitlines()[0]
            finally:
                done.set()


def _backup_during(cli: Any, cfg: Path, ddl: _DDL) -> Any:
    """Run db-backup while ``ddl`` waits for its mark and then runs its statement: the statement must neither
    have been ended by the watchdog nor have waited 5 s (held up by the backup).  Returns the CLI result."""
    ddl.start()
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    ddl.join(30)
    assert not ddl.terminated and ddl.error is None, (ddl.error, r.output)
    assert ddl.seconds is not None and ddl.seconds < 5, (ddl.seconds, r.output)
    return r


@pytest.mark.parametrize("fmt", ["custom", "directory"])
def test_a_table_held_by_a_migration_fails_the_backup_naming_the_holder_and_the_next_run_works(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any, tmp_path: Path,
        fmt: str) -> None:
    """A migration holds ACCESS EXCLUSIVE on a table: pg_dump waited for it for as long as it took (pg_dump's
    default), with the tables it had already locked blocking every later ALTER TABLE and the app's queries queued
    behind it.  Now it gives up after lock_wait_timeout, and the failure names the table and the session."""
    db, _ = app_db
    cfg = backup_config(db, options={"format": fmt, "lock_wait_timeout": "1s"})
    holder = pg.connect(db, autocommit=False)
    holder.execute("SET application_name = 'migration'")
    holder.execute("LOCK TABLE reviews IN ACCESS EXCLUSIVE MODE")
    try:
        t0 = time.monotonic()
        r = cli(["--config", cfg, "run", "db-backup", "--json"])
        took = time.monotonic() - t0
    finally:
        holder.rollback()
        holder.close()
    assert r.code == 1, r.output
    run = r.json()[0]
    assert run["status"] == "fail", run
    summary = run["summary"]
    assert "pg_dump could not lock table public.reviews" in summary and "lock_wait_timeout" in summary, summary
    assert "application 'migration'" in summary and "holds an ACCESS EXCLUSIVE lock on public.reviews" in summary
    assert "lock_wait_timeout" in run["findings"][0]["remediation"], run["findings"]
    assert took < 30, took
    assert _sets(tmp_path / "store1") == [] and cli(["--config", cfg, "backups", "list", "--json"]).json() == []
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 0 and r.json()[0]["status"] == "ok", r.output


@pytest.mark.parametrize("fmt", ["custom", "directory"])
def test_a_migration_arriving_as_pg_dump_starts_neither_deadlocks_nor_blocks_the_app(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any, tmp_path: Path,
        fmt: str) -> None:
    """An ALTER TABLE that arrives after the snapshot's export and before pg_dump's locks.  The session counting
    rows used to lock every table at once: the ALTER queued behind it, pg_dump's lock behind the ALTER, and the
    counting session waited for pg_dump — a deadlock the server does not detect, every query on the table queued
    behind it, forever.  Now the counts wait until pg_dump holds its locks: the ALTER goes first, the backup
    succeeds and verifies."""
    db, counts = app_db
    mark = tmp_path / "pg_dump-started"
    cfg = backup_config(db, options={"format": fmt},
                        target_extra={"bin_dir": str(_slow_start_pg_dump(tmp_path, pg, mark))})
    r = _backup_during(cli, cfg, _DDL(pg, db, mark, "ALTER TABLE reviews ADD COLUMN note text"))
    assert r.code == 0 and r.json()[0]["status"] == "ok", r.output
    bid = r.json()[0]["artifacts"][0]["id"]
    show = cli(["--config", cfg, "backups", "show", bid, "--json"]).json()
    assert show["manifest"]["postgres"]["row_counts"]["public.reviews"] == counts["reviews"]
    r = cli(["--config", cfg, "run", "backup-verify", "--json"])
    assert r.code == 0 and r.json()[0]["status"] == "ok", r.output


def test_a_table_dropped_as_pg_dump_starts_fails_the_backup_clearly_without_blocking_the_drop(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any,
        tmp_path: Path) -> None:
    """A table dropped between the snapshot's export and pg_dump's locks: pg_dump cannot lock a table its
    snapshot lists and fails.  The run says so and how to go on; the DROP itself is not held up by the backup
    (it was: it queued behind the counting session, and pg_dump behind it, for good); the next run works."""
    db, _ = app_db
    pg.execute("CREATE TABLE old_sessions AS SELECT g AS id FROM generate_series(1, 25) g", db)
    mark = tmp_path / "pg_dump-started"
    cfg = backup_config(db, target_extra={"bin_dir": str(_slow_start_pg_dump(tmp_path, pg, mark))})
    r = _backup_during(cli, cfg, _DDL(pg, db, mark, "DROP TABLE old_sessions"))
    assert r.code == 1, r.output
    run = r.json()[0]
    assert 'relation "public.old_sessions" does not exist' in run["summary"], run
    assert "dropped or renamed" in run["findings"][0]["remediation"], run["findings"]
    assert _sets(tmp_path / "store1") == [] and cli(["--config", cfg, "backups", "list", "--json"]).json() == []
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 0 and r.json()[0]["status"] == "ok", r.output


def test_a_table_truncated_as_pg_dump_starts_fails_the_backup_naming_it(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any,
        tmp_path: Path) -> None:
    """TRUNCATE is not MVCC-safe: committed after the snapshot's export and before pg_dump's lock, the table
    reads as empty in the snapshot, and pg_dump stores it empty although the snapshot had its rows.  The backup
    fails naming the table (and the migration is not left waiting on the backup)."""
    db, _ = app_db
    mark = tmp_path / "pg_dump-started"
    cfg = backup_config(db, target_extra={"bin_dir": str(_slow_start_pg_dump(tmp_path, pg, mark))})
    r = _backup_during(cli, cfg, _DDL(pg, db, mark, "TRUNCATE reviews"))
    assert r.code == 1, r.output
    run = r.json()[0]
    assert run["status"] == "fail" and "table public.reviews was truncated or rewritten" in run["summary"], run
    assert _sets(tmp_path / "store1") == [] and cli(["--config", cfg, "backups", "list", "--json"]).json() == []


def test_pg_dump_cancelled_by_a_standby_replay_conflict_fails_with_the_settings_to_change(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any,
        tmp_path: Path) -> None:
    """pg_dump's query cancelled on a hot standby (fault-injected: what pg_dump prints then): the failure says
    which standby settings let a dump finish."""
    db, _ = app_db
    body = ('echo "pg_dump: error: Dumping the contents of table \\"reviews\\" failed: PQgetResult() failed." >&2\n'
            'echo "pg_dump: detail: Error message from server: ERROR:  canceling statement due to conflict with '
            'recovery" >&2\nexit 1')
    cfg = backup_config(db, target_extra={"bin_dir": str(wrapped_pg_dump(tmp_path, pg, body))})
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 1, r.output
    run = r.json()[0]
    assert "conflict with recovery" in run["summary"], run
    hint = run["findings"][0]["remediation"]
    assert "max_standby_streaming_delay" in hint and "hot_standby_feedback" in hint, hint


def test_a_standby_ending_the_snapshot_session_after_the_counts_does_not_fail_a_good_backup(
        cli: Any, app_db: tuple[str, dict[str, int]], backup_config: Any, make_config: Any,
        pg_primary_replica: tuple[PostgresCluster, PostgresCluster]) -> None:
    """A backup from a hot standby while the primary alters a table: after max_standby_streaming_delay the
    standby terminates the sessions holding that table's lock.  The session that exported the snapshot sits idle
    once its counts are taken; its end does not touch the dump, which pg_dump runs in its own session.  The run
    either succeeds (and verifies) or, when pg_dump's own session was ended, fails saying what to change — never
    a raw 'SerializationFailure' from closing the finished snapshot session."""
    primary, replica = pg_primary_replica
    src = f"conflict_{app_db[0]}"
    cfg = standby_backup_config(primary, replica, src, backup_config, make_config)
    mark = cfg.parent / "fault-mark"
    replica.execute("ALTER SYSTEM SET max_standby_streaming_delay = '500ms'")
    replica.execute("SELECT pg_reload_conf()")

    def alter_on_primary() -> None:
        while not mark.exists():
            time.sleep(0.02)
        primary.execute("ALTER TABLE reviews ADD COLUMN note text", src)

    t = threading.Thread(target=alter_on_primary, daemon=True)
    t.start()
    try:
        r = cli(["--config", cfg, "run", "db-backup", "--json"],
                env={"UPKEEPER_FAULT_PAUSE": "during-upload:3", "UPKEEPER_FAULT_MARK": str(mark)})
    finally:
        t.join(30)
        replica.execute("ALTER SYSTEM RESET max_standby_streaming_delay")
        replica.execute("SELECT pg_reload_conf()")
        with primary.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{src}" WITH (FORCE)')
    run = r.json()[0]
    assert "SerializationFailure" not in run["summary"], run
    if r.code != 0:
        assert "conflict with recovery" in run["summary"], run
        assert "max_standby_streaming_delay" in run["findings"][0]["remediation"], run
    else:
        assert run["status"] == "ok", run



def test_a_parallel_jobs_refused_lock_names_the_waiting_migration_and_what_it_waits_behind(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any,
        tmp_path: Path) -> None:
    """pg_dump --jobs workers lock tables NOWAIT: an ALTER TABLE requested during the dump fails the dump at
    once (pg_dump's own message is fault-injected here, the sessions are real: an app transaction reading the
    table and a migration queued behind it).  The failure says a parallel job cannot wait — not that
    lock_wait_timeout ran out — and names the migration and the session it waits behind."""
    db, _ = app_db
    body = ('echo "pg_dump: error: could not obtain lock on relation \\"public.reviews\\"" >&2\n'
            'echo "This usually means that someone requested an ACCESS EXCLUSIVE lock on the table after the '
            'pg_dump parent process had gotten the initial ACCESS SHARE lock on the table." >&2\nexit 1')
    cfg = backup_config(db, options={"format": "directory", "jobs": 2},
                        target_extra={"bin_dir": str(wrapped_pg_dump(tmp_path, pg, body))})
    reader = pg.connect(db, autocommit=False)
    reader.execute("SELECT count(*) FROM reviews")
    reader_pid = reader.info.backend_pid
    migration = pg.connect(db)
    migration.execute("SET application_name = 'migration'")
    t = threading.Thread(target=lambda: migration.execute("ALTER TABLE reviews ADD COLUMN note text"), daemon=True)
    t.start()
    try:
        for _ in range(100):
            if pg.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND mode = 'AccessExclusiveLock'",
                          db)[0][0]:
                break
            time.sleep(0.05)
        r = cli(["--config", cfg, "run", "db-backup", "--json"])
    finally:
        reader.rollback()
        reader.close()
        t.join(10)
        migration.close()
    assert r.code == 1, r.output
    summary = r.json()[0]["summary"]
    assert "pg_dump could not lock table public.reviews" in summary and "for a parallel job" in summary, summary
    assert "lock_wait_timeout" not in summary, summary
    assert "application 'migration'" in summary and f"waits for an ACCESS EXCLUSIVE lock on public.reviews behind " \
        f"pid {reader_pid}" in summary, summary


def test_a_table_dropped_after_pg_dump_released_its_locks_and_before_the_counts_fails_the_backup(
        cli: Any, pg: PostgresCluster, app_db: tuple[str, dict[str, int]], backup_config: Any,
        tmp_path: Path) -> None:
    """A small database's whole archive can sit in pg_dump's output buffer until it exits, so the counts may
    begin after pg_dump's session ended (fault-injected: a pg_dump whose output arrives 1.5 s after it finished).
    A table dropped in that moment is in the dump but can no longer be counted: it was left out of the manifest
    without a word (verify then never checks it); now the backup fails naming it."""
    db, _ = app_db
    pg.execute("CREATE TABLE old_sessions AS SELECT g AS id FROM generate_series(1, 25) g", db)
    mark = tmp_path / "pg_dump-finished"
    body = (f'out="{tmp_path}/held.dump"\n"{pg.bin}/pg_dump" "$@" > "$out"\nrc=$?\ntouch "{mark}"\nsleep 1.5\n'
            'cat "$out"\nrm -f "$out"\nexit $rc')
    cfg = backup_config(db, target_extra={"bin_dir": str(wrapped_pg_dump(tmp_path, pg, body))})
    r = _backup_during(cli, cfg, _DDL(pg, db, mark, "DROP TABLE old_sessions"))
    assert r.code == 1, r.output
    run = r.json()[0]
    assert run["status"] == "fail" and "table public.old_sessions was dropped during the backup" in run["summary"]
    assert _sets(tmp_path / "store1") == [] and cli(["--config", cfg, "backups", "list", "--json"]).json() == []


# A server whose lock table holds a few hundred locks (max_locks_per_transaction 10, its minimum, × a few
# connections, and what fits in spare shared memory: measured, from about 300 to about 700, as the spare memory
# is not yet, or already, taken by other tables of the server): a hundred tables play the part of the thousands of a schema-per-tenant database on a default one
# (where pg_dump -Fc alone got through 5,800 tables with their sequences and failed at 6,000, and upkeeper's
# backup failed from about 3,600 and its verify from 5,000: their row counts locked every table and index in one
# transaction).
SMALL_LOCK_TABLE = "max_locks_per_transaction = 10\nmax_connections = 10\nautovacuum = off\n"


@pytest.fixture(scope="module")
def small_lock_pg(services_dir: Path) -> Any:
    cluster = PostgresCluster(services_dir / "pg-small-lock-table", extra_conf=SMALL_LOCK_TABLE)
    cluster.start()
    yield cluster
    cluster.stop()


def _tenant_tables(pg: PostgresCluster, db: str, n: int, indexes: int) -> None:
    """``n`` tables with a key and ``indexes`` more indexes (pg_dump locks each table, a count the table and
    every index), table i holding i rows; made a few per transaction, as a lock table this small cannot hold
    many."""
    pg.create_database(db)
    with pg.connect(db) as conn:
        for start in range(0, n, 5):
            conn.execute("; ".join(
                f"CREATE TABLE t{i} (id int PRIMARY KEY, a int); "
                + "".join(f"CREATE INDEX ON t{i} ((a + {k})); " for k in range(indexes))
                + f"INSERT INTO t{i} SELECT g, g FROM generate_series(1, {i}) g"
                for i in range(start, min(n, start + 5))))


def test_many_tables_back_up_and_verify_where_pg_dump_alone_fits_the_lock_table(
        cli: Any, small_lock_pg: PostgresCluster, backup_config: Any) -> None:
    """pg_dump locks every table and sequence until it ends; the backup's row counts used to lock every table and,
    planning each count, every index on top, in one transaction, as verify's counts in the restore did: both
    failed 'out of shared memory' where pg_dump alone succeeds.  The counts now hold a few locks at a time; the
    backup warns that the lock table is too small for the dump, naming the setting and the value it needs."""
    pg = small_lock_pg
    _tenant_tables(pg, "tenants150", 150, 5)  # pg_dump: 150 locks; the counts in one transaction: 1,050
    cfg = backup_config("tenants150", target_extra={"port": pg.port})
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 0, r.output
    run = r.json()[0]
    assert run["status"] == "warn", run
    warning = run["findings"][0]
    assert warning["check"] == "backup.lock_table" and "150 tables and 0 sequences" in warning["message"], warning
    assert "set max_locks_per_transaction = 20 " in warning["remediation"], warning
    show = cli(["--config", cfg, "backups", "show", run["artifacts"][0]["id"], "--json"]).json()
    assert show["manifest"]["postgres"]["row_counts"] == {f"public.t{i}": i for i in range(150)}
    r = cli(["--config", cfg, "run", "backup-verify", "--json"])
    assert r.code == 0 and r.json()[0]["status"] == "ok", r.output


def test_a_dump_the_lock_table_cannot_hold_fails_naming_the_setting_and_the_value_that_works(
        cli: Any, small_lock_pg: PostgresCluster, backup_config: Any) -> None:
    """pg_dump itself runs out of the lock table: the failure names max_locks_per_transaction and a value, which
    (set, the server restarted) lets the backup through."""
    pg = small_lock_pg
    _tenant_tables(pg, "tenants1000", 1000, 0)  # pg_dump: 1,000 locks
    cfg = backup_config("tenants1000", target_extra={"port": pg.port})
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 1, r.output
    run = r.json()[0]
    assert "pg_dump ran out of the server's lock table (out of shared memory)" in run["summary"], run
    assert "1,000 tables and 0 sequences" in run["summary"] and "max_locks_per_transaction (10)" in run["summary"]
    hint = run["findings"][0]["remediation"]
    assert "set max_locks_per_transaction = 127 " in hint and "restart" in hint, hint
    pg.execute("ALTER SYSTEM SET max_locks_per_transaction = 127")
    pg.stop()
    pg.start()
    try:
        r = cli(["--config", cfg, "run", "db-backup", "--json"])
        assert r.code == 0 and r.json()[0]["status"] == "ok", r.output
    finally:
        pg.execute("ALTER SYSTEM RESET max_locks_per_transaction")
        pg.stop()
        pg.start()


def test_many_tables_forcing_row_level_security_verify_on_a_scratch_server_with_a_small_lock_table(
        cli: Any, pg: PostgresCluster, pg_db: str, small_lock_pg: PostgresCluster, backup_config: Any,
        make_config: Any) -> None:
    """Verify lifts FORCE ROW LEVEL SECURITY (ALTER TABLE: an ACCESS EXCLUSIVE lock) on each restored table that
    forces it, so that a scratch role that is not a superuser counts all its rows: it did so for every table in
    one transaction, which filled the lock table of a scratch server holding fewer locks than the database has
    such tables ('out of shared memory', verify NOT CHECKED, although pg_restore had restored it all).  Lifted
    batch by batch with the counts, each batch's change rolled back with its savepoint, the verify passes, the
    rows of the tables of the first and the last batch counted (without the lift: 0 rows, no policy lets the
    owner see any)."""
    import yaml

    n = 1000  # the small lock table holds 300 to 700
    with pg.connect(pg_db) as conn:
        conn.execute("; ".join(
            f"CREATE TABLE t{i} (a int); ALTER TABLE t{i} ENABLE ROW LEVEL SECURITY; "
            f"ALTER TABLE t{i} FORCE ROW LEVEL SECURITY" for i in range(n)))
        conn.execute("INSERT INTO t0 SELECT generate_series(1, 7); INSERT INTO t999 SELECT generate_series(1, 9)")
    data = yaml.safe_load(backup_config(pg_db, verify={"scratch_target": "scratch", "jobs": 1}).read_text())
    role = f"scratch_{pg_db}"[:63]
    data["targets"]["scratch"] = {**small_lock_pg.target("postgres"), "user": role}
    cfg = make_config(data)
    r = cli(["--config", cfg, "run", "db-backup", "--json"])
    assert r.code == 0 and r.json()[0]["status"] == "ok", r.output
    small_lock_pg.execute(f'CREATE ROLE "{role}" LOGIN CREATEDB')
    try:
        r = cli(["--config", cfg, "run", "backup-verify", "--json"])
    finally:
        small_lock_pg.execute(f'DROP ROLE "{role}"')
    assert r.code == 0, r.output
    run = r.json()[0]
    assert run["status"] == "ok" and run["artifacts"][0]["tables"] == n, run


def test_sequences_are_read_a_few_at_a_time_where_the_lock_table_has_little_room(
        small_lock_pg: PostgresCluster) -> None:
    """A read of a sequence locks it until its statement ends: the sequences (of the source before pg_dump, of
    verify's restore) were read 500 per statement, which failed 'out of shared memory' where the lock table had
    less room than that — in verify, 'sequences differ', a good backup marked verify-failed.  They are now read at
    most max_locks_per_transaction (here 10) per statement: the read goes through with room for a few dozen
    locks left (the rest held by another session's advisory locks)."""
    from upkeeper.backup.pg import qualified, sequence_states

    p = small_lock_pg
    p.create_database("seqs200")
    p.execute("; ".join(f"CREATE SEQUENCE s{i} START {i + 1}" for i in range(200)), "seqs200")
    with p.connect() as filler:
        key = 0
        try:
            while True:  # session-level advisory locks, held whatever the statement that took them did
                filler.execute(f"SELECT pg_advisory_lock(g) FROM generate_series({key + 1}, {key + 10}) g")
                key += 10
        except Exception as exc:
            assert "out of shared memory" in str(exc), exc
        filler.execute("SELECT pg_advisory_unlock(g) FROM generate_series(1, 40) g")  # room for 40 locks
        with p.connect("seqs200") as conn:
            states = sequence_states(conn)
        filler.execute("SELECT pg_advisory_unlock_all()")
    assert {k: s.last_value for k, s in states.items()} == {qualified("public", f"s{i}"): i + 1 for i in range(200)}
