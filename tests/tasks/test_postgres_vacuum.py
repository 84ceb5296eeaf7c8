"""postgres.vacuum against a real PostgreSQL: dead tuples removed, lock_timeout → finding, held-back rows."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from pg_tasks import findings, one, run_task
from upkeeper.core.task import Severity
from upkeeper.sandbox.postgres import PostgresCluster


def _churn(pg: PostgresCluster, db: str, table: str, rows: int) -> None:
    pg.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = false)", db)
    pg.execute(f"INSERT INTO {table} SELECT g, 'x' FROM generate_series(1, {rows}) g", db)
    pg.execute(f"UPDATE {table} SET v = 'y'", db)  # every row leaves one dead version


def test_reports_dead_tuples_removed_per_table(pg: PostgresCluster, pg_db: str) -> None:
    _churn(pg, pg_db, "churned", 3000)
    _churn(pg, pg_db, "quiet", 10)
    res = run_task("postgres.vacuum", pg, pg_db)
    assert res.final_status.value == "ok", res.findings
    assert res.metrics["dead_tuples_removed"] == 3010  # VACUUM VERBOSE's own count, not an estimate
    assert res.metrics[f"table.{pg_db}.public.churned.dead_removed"] == 3000
    assert "3010 dead tuple(s) removed" in res.summary and "churned 3000" in res.summary
    # and the dead rows are really gone
    assert pg.execute("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'churned'", pg_db)[0][0] == 0


def test_locked_table_becomes_a_finding_not_a_hang(pg: PostgresCluster, pg_db: str) -> None:
    _churn(pg, pg_db, "locked", 100)
    _churn(pg, pg_db, "free", 100)
    with pg.connect(pg_db, autocommit=False) as blocker:
        blocker.execute("LOCK TABLE locked IN ACCESS EXCLUSIVE MODE")
        t0 = time.monotonic()
        res = run_task("postgres.vacuum", pg, pg_db, lock_timeout="300ms")
        elapsed = time.monotonic() - t0
        blocker.rollback()
    f = one(res, "postgres.vacuum_lock_timeout", f"{pg_db}.public.locked")
    assert f.severity is Severity.WARNING and f.threshold == 0.3 and 0.25 <= float(f.value or 0) < 5
    assert elapsed < 10
    # the other table was still vacuumed
    assert res.metrics[f"table.{pg_db}.public.free.dead_removed"] == 100
    assert res.metrics["tables_vacuumed"] == 1


def test_rows_held_back_by_an_old_snapshot_are_reported(pg: PostgresCluster, pg_db: str) -> None:
    pg.execute("CREATE TABLE held (id int, v text) WITH (autovacuum_enabled = false)", pg_db)
    pg.execute("INSERT INTO held SELECT g, 'x' FROM generate_series(1, 500) g", pg_db)
    with pg.connect(pg_db, autocommit=False) as old:
        old.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        old.execute("SELECT count(*) FROM held")  # takes the snapshot that still sees the old versions
        pg.execute("UPDATE held SET v = 'y'", pg_db)
        res = run_task("postgres.vacuum", pg, pg_db, tables=["held"], not_removable_warn=100)
        old.rollback()
    f = one(res, "postgres.vacuum_dead_not_removable", f"{pg_db}.public.held")
    assert f.value == 500
    assert res.metrics["dead_tuples_removed"] == 0
    again = run_task("postgres.vacuum", pg, pg_db, tables=["held"], not_removable_warn=100)
    assert again.metrics["dead_tuples_removed"] == 500 and not findings(again, "postgres.vacuum_dead_not_removable")


def test_missing_table_is_a_finding(pg: PostgresCluster, pg_db: str) -> None:
    res = run_task("postgres.vacuum", pg, pg_db, tables=["public.nope"])
    assert one(res, "postgres.table_missing").severity is Severity.WARNING


def test_tables_postgres_skips_for_want_of_ownership_are_not_counted_as_vacuumed(pg: PostgresCluster,
                                                                                  pg_db: str) -> None:
    """Run as a user that owns none of the tables, every VACUUM is skipped by the server ('only table or database
    owner can vacuum it'); the summary said 'vacuumed 2 table(s)' all the same."""
    from upkeeper.config.targets import PostgresTarget
    from upkeeper.core.task import REGISTRY, TaskContext

    _churn(pg, pg_db, "owned_a", 50)
    _churn(pg, pg_db, "owned_b", 50)
    role = f"notowner_{pg_db}"
    pg.execute(f"CREATE ROLE {role} LOGIN", pg_db)
    try:
        task = REGISTRY.get("postgres.vacuum")
        t = PostgresTarget.model_validate({**pg.target(pg_db), "user": role})
        res = task().run(TaskContext(job="test", task="postgres.vacuum", target_name="db", target=t),
                         task.Options.model_validate({}))
    finally:
        pg.execute(f"DROP ROLE {role}", pg_db)
    assert {f.subject for f in findings(res, "postgres.vacuum_skipped")} >= {f"{pg_db}.public.owned_a",
                                                                           f"{pg_db}.public.owned_b"}
    assert res.metrics["tables_vacuumed"] == 0 and res.summary.startswith("vacuumed 0 table(s)"), res.summary
    assert not [k for k in res.metrics if k.startswith("table.")]
    assert res.final_status.value == "warn"


def test_tables_skipped_on_a_server_speaking_another_language_are_not_counted(services_dir: Path) -> None:
    """Debian's clusters take lc_messages from the system's locale: on a German server the skip reads 'WARNUNG:
    überspringe »t« --- nur Eigentümer der Tabelle oder der Datenbank kann sie vacuumen', which the English match
    missed — 'vacuumed 1 table(s)', status ok, for a table PostgreSQL left alone.  Now PostgreSQL's own rule (owner,
    database owner, superuser) tells, whatever the language."""
    from upkeeper.config.targets import PostgresTarget
    from upkeeper.core.task import REGISTRY, TaskContext

    locales = services_dir / "locales-de"
    locales.mkdir(exist_ok=True)
    subprocess.run(["localedef", "-i", "de_DE", "-f", "UTF-8", str(locales / "de_DE.UTF-8")],
                   capture_output=True, text=True)
    if not (locales / "de_DE.UTF-8" / "LC_MESSAGES").exists():
        pytest.skip("localedef cannot compile de_DE.UTF-8 here")
    cluster = PostgresCluster(services_dir / "pg-de", extra_conf="\nlc_messages = 'de_DE.UTF-8'\n",
                              extra_env={"LOCPATH": str(locales)})
    cluster.start()
    try:
        _churn(cluster, "postgres", "owned", 50)
        cluster.execute("CREATE ROLE notowner LOGIN")
        task = REGISTRY.get("postgres.vacuum")
        t = PostgresTarget.model_validate({**cluster.target("postgres"), "user": "notowner"})
        res = task().run(TaskContext(job="test", task="postgres.vacuum", target_name="db", target=t),
                         task.Options.model_validate({"tables": ["owned"]}))
        f = one(res, "postgres.vacuum_skipped", "postgres.public.owned")
        assert "owner" in f.message and "überspringe" in f.message  # the server's own words come along
        assert res.metrics["tables_vacuumed"] == 0 and res.final_status.value == "warn"
        # the owner's run is counted as before
        res = run_task("postgres.vacuum", cluster, "postgres", tables=["owned"])
        assert res.metrics["tables_vacuumed"] == 1 and not findings(res, "postgres.vacuum_skipped")
    finally:
        cluster.stop()


def test_a_database_out_of_reach_does_not_discard_the_others(pg: PostgresCluster, pg_db: str) -> None:
    """databases: [app, typo]: the first was vacuumed, then the second's connection error ended the run as an error
    ('TaskError: cannot connect … database "typo" does not exist'), the first database's figures lost.  Now it is
    one finding, like postgres.maintenance's, and the others are vacuumed and reported."""
    _churn(pg, pg_db, "kept", 100)
    res = run_task("postgres.vacuum", pg, pg_db, databases=[pg_db, "no_such_db"], tables=["kept"])
    f = one(res, "postgres.database_unreachable", "database no_such_db")
    assert f.severity is Severity.CRITICAL and "no_such_db" in f.message
    assert res.metrics["tables_vacuumed"] == 1 and res.metrics["dead_tuples_removed"] >= 100
    assert res.final_status.value == "fail"


def test_a_partitioned_table_is_vacuumed_once_with_its_partitions(pg: PostgresCluster, pg_db: str) -> None:
    """VACUUM of a partitioned table vacuums its partitions, and the partitions were in the list too: every
    partition was vacuumed twice and its dead tuples counted twice ('4000 removed' for 2000)."""
    pg.execute("CREATE TABLE parted (id int, v text) PARTITION BY RANGE (id)", pg_db)
    for i, (lo, hi) in enumerate(((0, 1000), (1000, 2000))):
        pg.execute(f"CREATE TABLE parted_{i} PARTITION OF parted FOR VALUES FROM ({lo}) TO ({hi}) "
                   "WITH (autovacuum_enabled = false)", pg_db)
    pg.execute("INSERT INTO parted SELECT g, 'x' FROM generate_series(0, 1999) g", pg_db)
    pg.execute("UPDATE parted SET v = 'y'", pg_db)
    for tables in (["parted", "parted_0", "parted_1"], None):
        opts = {"tables": tables} if tables else {}
        res = run_task("postgres.vacuum", pg, pg_db, **opts)
        assert res.metrics[f"table.{pg_db}.public.parted.dead_removed"] == 2000
        assert not [k for k in res.metrics if k.startswith(f"table.{pg_db}.public.parted_")], res.metrics
        if tables:
            assert res.metrics["dead_tuples_removed"] == 2000 and res.metrics["tables_vacuumed"] == 1
            assert res.metrics["dead_tuples_before"] == 2000
        pg.execute("UPDATE parted SET v = v || 'z'", pg_db)
    # a partition listed alone is vacuumed alone
    res = run_task("postgres.vacuum", pg, pg_db, tables=["parted_0"])
    assert res.metrics["tables_vacuumed"] == 1 and res.metrics["dead_tuples_removed"] == 1000
    # one partition locked: the partitioned table's VACUUM stops at it, and its partitions are tried one by one
    pg.execute("UPDATE parted SET v = v || 'w'", pg_db)
    with pg.connect(pg_db, autocommit=False) as blocker:
        blocker.execute("LOCK TABLE parted_0 IN ACCESS EXCLUSIVE MODE")
        res = run_task("postgres.vacuum", pg, pg_db, tables=["parted"], lock_timeout="300ms")
        blocker.rollback()
    assert "one by one" in one(res, "postgres.vacuum_lock_timeout", f"{pg_db}.public.parted").message
    one(res, "postgres.vacuum_lock_timeout", f"{pg_db}.public.parted_0")
    assert res.metrics[f"table.{pg_db}.public.parted_1.dead_removed"] >= 1000 and res.metrics["tables_vacuumed"] == 1
