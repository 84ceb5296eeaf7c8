"""postgres.maintenance against a real PostgreSQL: every check driven by real objects and sessions.

Thresholds are scaled down through the task's options so the data stays small; no number is faked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from pg_tasks import closed_window_ctx, findings, one, open_window_ctx, run_task
from upkeeper.core.execute import HistoryMetrics
from upkeeper.core.history import History, NewRun
from upkeeper.core.task import MemoryState, Result, Severity, TaskContext
from upkeeper.sandbox.postgres import PostgresCluster
from upkeeper.tasks.postgres._options import CHECK_NAMES, MaintenanceOptions
from upkeeper.tasks.postgres._survey import DATABASE_CHECKS, SERVER_CHECKS


def survey(pg: PostgresCluster, db: str, checks: list[str], ctx: TaskContext | None = None, **options: object
           ) -> Result:
    return run_task("postgres.maintenance", pg, db, ctx=ctx, checks=checks, **options)


def _bloat(pg: PostgresCluster, db: str, table: str = "bloated", rows: int = 4000, pk: bool = True) -> None:
    """A table with autovacuum off, updated again and again: two thirds of it become dead versions."""
    key = "PRIMARY KEY" if pk else ""
    pg.execute(f"CREATE TABLE {table} (id int {key}, payload text) WITH (autovacuum_enabled = false)", db)
    pg.execute(f"INSERT INTO {table} SELECT g, repeat('p', 120) FROM generate_series(1, {rows}) g", db)
    for _ in range(2):
        pg.execute(f"UPDATE {table} SET payload = payload", db)
    pg.execute(f"ANALYZE {table}", db)  # what autoanalyze would do: the estimate reads pg_stats


BLOAT = {"bloat_min_bytes": "256KiB", "bloat_pct": 50}


# -- bloat and its repair ----------------------------------------------------------------------------


def test_bloated_table_is_found_and_vacuum_full_reclaims_the_space(pg: PostgresCluster, pg_db: str) -> None:
    _bloat(pg, pg_db)
    pg.execute("CREATE TABLE healthy AS SELECT g AS id FROM generate_series(1, 5000) g", pg_db)
    pg.execute("ANALYZE healthy", pg_db)
    before = pg.execute("SELECT pg_total_relation_size('bloated')", pg_db)[0][0]
    res = survey(pg, pg_db, ["bloat", "repair"], **BLOAT)
    subject = f"{pg_db}.public.bloated"
    bloat = one(res, "postgres.table_bloat", subject)
    assert float(bloat.value or 0) >= 50 and bloat.data["method"] == "estimate"
    assert not findings(res, "postgres.table_bloat", f"{pg_db}.public.healthy")
    fixed = one(res, "postgres.bloat_repaired", subject)
    assert fixed.data["method"] == "VACUUM FULL"
    after = pg.execute("SELECT pg_total_relation_size('bloated')", pg_db)[0][0]
    assert fixed.data["before_bytes"] == before and fixed.data["after_bytes"] == after
    assert after < before * 0.5
    assert bloat.severity is Severity.INFO and "repaired" in bloat.message  # nothing left to warn about
    assert pg.execute("SELECT count(*), count(DISTINCT id) FROM bloated", pg_db)[0] == (4000, 4000)
    assert res.metrics["repaired_tables"] == 1 and res.metrics["repair_freed_bytes"] == before - after


def test_pgstattuple_confirms_the_estimate(pg: PostgresCluster, pg_db: str) -> None:
    pg.execute("CREATE EXTENSION pgstattuple", pg_db)
    _bloat(pg, pg_db)
    res = survey(pg, pg_db, ["bloat"], **BLOAT)
    f = one(res, "postgres.table_bloat", f"{pg_db}.public.bloated")
    assert f.data["method"] == "pgstattuple_approx" and float(f.value or 0) >= 50


def test_pg_repack_is_used_when_installed(pg: PostgresCluster, pg_db: str) -> None:
    pg.execute("CREATE EXTENSION pg_repack", pg_db)
    _bloat(pg, pg_db)
    before = pg.execute("SELECT pg_total_relation_size('bloated')", pg_db)[0][0]
    res = survey(pg, pg_db, ["bloat", "repair"], **BLOAT)
    fixed = one(res, "postgres.bloat_repaired", f"{pg_db}.public.bloated")
    assert fixed.data["method"] == "pg_repack", res.findings
    assert pg.execute("SELECT pg_total_relation_size('bloated')", pg_db)[0][0] < before * 0.5
    assert pg.execute("SELECT count(*) FROM bloated", pg_db)[0][0] == 4000


def test_repair_waits_for_the_maintenance_window(pg: PostgresCluster, pg_db: str) -> None:
    _bloat(pg, pg_db)
    before = pg.execute("SELECT pg_total_relation_size('bloated')", pg_db)[0][0]
    res = survey(pg, pg_db, ["bloat", "repair"], ctx=closed_window_ctx("postgres.maintenance"), **BLOAT)
    assert one(res, "postgres.repair_deferred").severity is Severity.INFO
    assert one(res, "postgres.table_bloat").severity is Severity.WARNING
    assert pg.execute("SELECT pg_total_relation_size('bloated')", pg_db)[0][0] == before
    # window_only: false repairs anyway
    res = survey(pg, pg_db, ["bloat", "repair"], ctx=closed_window_ctx("postgres.maintenance"),
                 window_only=False, **BLOAT)
    assert findings(res, "postgres.bloat_repaired")


def test_repair_runs_inside_an_open_window(pg: PostgresCluster, pg_db: str) -> None:
    _bloat(pg, pg_db)
    res = survey(pg, pg_db, ["bloat", "repair"], ctx=open_window_ctx("postgres.maintenance"), **BLOAT)
    assert findings(res, "postgres.bloat_repaired")


def test_no_repair_without_a_free_disk_measurement(pg: PostgresCluster, pg_db: str) -> None:
    _bloat(pg, pg_db)
    res = survey(pg, pg_db, ["bloat", "repair"], repair_disk_path="/nonexistent/volume", **BLOAT)
    f = one(res, "postgres.repair_skipped")
    assert f.severity is Severity.WARNING and "cannot be measured" in f.message
    assert not findings(res, "postgres.bloat_repaired")


# -- dead tuples, wraparound, sequences -------------------------------------------------------------


def _stats_show(pg: PostgresCluster, db: str, table: str, live: int, dead: int, timeout: float = 15.0) -> None:
    """Wait until the server's cumulative statistics show ``live`` and ``dead`` rows of ``table``: each session's
    counts reach them when that backend flushes them (at most once a second while it works, and as it exits —
    after the client has already gone on), so a survey right after the statements can see a mix of before and after
    (CI once saw 2,000 live and 1,500 dead)."""
    deadline = time.monotonic() + timeout
    row: object = None
    while time.monotonic() < deadline:
        rows = pg.execute(f"SELECT n_live_tup, n_dead_tup FROM pg_stat_user_tables WHERE relname = '{table}'", db)
        row = rows[0] if rows else None
        if row is not None and (int(row[0]), int(row[1])) == (live, dead):
            return
        time.sleep(0.1)
    raise AssertionError(f"statistics of {table} still {row} after {timeout} s, not live {live}, dead {dead}")


def test_dead_tuples(pg: PostgresCluster, pg_db: str) -> None:
    pg.execute("CREATE TABLE churn (id int) WITH (autovacuum_enabled = false)", pg_db)
    pg.execute("INSERT INTO churn SELECT generate_series(1, 2000)", pg_db)
    pg.execute("DELETE FROM churn WHERE id > 500", pg_db)  # 1500 dead of 2000
    _stats_show(pg, pg_db, "churn", live=500, dead=1500)
    res = survey(pg, pg_db, ["dead_tuples"], dead_tuples_min=1000, dead_tuples_pct=10)
    f = one(res, "postgres.dead_tuples", f"{pg_db}.public.churn")
    assert f.data["dead"] == 1500 and f.value == 75.0 and f.threshold == 10
    assert not findings(survey(pg, pg_db, ["dead_tuples"], dead_tuples_min=2000), "postgres.dead_tuples")


def test_wraparound_per_table_including_toast(pg: PostgresCluster, pg_db: str) -> None:
    pg.execute("CREATE TABLE old_rows (id int, doc text)", pg_db)
    pg.execute("INSERT INTO old_rows SELECT g, repeat(md5(g::text), 400) FROM generate_series(1, 20) g", pg_db)
    with pg.connect(pg_db) as conn:  # age the table: 400 real transactions, each with its own XID
        for _ in range(400):
            conn.execute("SELECT txid_current()")
    opts = {"wraparound_warn": 300, "wraparound_critical": 100_000, "max_findings_per_check": 1000}
    res = survey(pg, pg_db, ["wraparound_tables", "wraparound_databases"], **opts)
    main = one(res, "postgres.wraparound", f"{pg_db}.public.old_rows")
    toast = [f for f in findings(res, "postgres.wraparound") if f.subject.startswith(f"{pg_db}.public.old_rows (TOAST")]
    assert main.severity is Severity.WARNING and int(main.value or 0) >= 400 and len(toast) == 1
    assert one(res, "postgres.wraparound", f"database {pg_db}").severity is Severity.WARNING
    # freezing the heap but not its TOAST table leaves the TOAST finding: each is checked on its own
    pg.execute("VACUUM (FREEZE, PROCESS_TOAST false) old_rows", pg_db)
    res = survey(pg, pg_db, ["wraparound_tables"], **opts)
    assert not findings(res, "postgres.wraparound", f"{pg_db}.public.old_rows")
    assert [f for f in findings(res, "postgres.wraparound") if "old_rows (TOAST" in f.subject]
    pg.execute("VACUUM (FREEZE) old_rows", pg_db)
    res = survey(pg, pg_db, ["wraparound_tables"], **opts)
    assert not [f for f in findings(res, "postgres.wraparound") if "old_rows" in f.subject]
    # critical threshold
    res = survey(pg, pg_db, ["wraparound_databases"], wraparound_warn=300, wraparound_critical=350)
    assert one(res, "postgres.wraparound", f"database {pg_db}").severity is Severity.CRITICAL


def test_sequences_near_exhaustion(pg: PostgresCluster, pg_db: str) -> None:
    pg.execute("CREATE SEQUENCE small_seq MAXVALUE 100", pg_db)
    pg.execute("SELECT setval('small_seq', 90)", pg_db)
    # a bigint sequence feeding an integer column: the column ends the range at 2^31-1
    pg.execute("CREATE SEQUENCE big_seq", pg_db)
    pg.execute("CREATE TABLE orders (id integer DEFAULT nextval('big_seq'), note text)", pg_db)
    pg.execute("SELECT setval('big_seq', 2100000000)", pg_db)
    pg.execute("CREATE TABLE fine (id serial, note text)", pg_db)
    pg.execute("INSERT INTO fine (note) VALUES ('a'), ('b')", pg_db)
    res = survey(pg, pg_db, ["sequences"])
    small = one(res, "postgres.sequence_exhaustion", f"{pg_db}.public.small_seq")
    assert small.severity is Severity.WARNING and small.value == pytest.approx(100 * 89 / 99, abs=0.01)
    big = one(res, "postgres.sequence_exhaustion", f"{pg_db}.public.big_seq")
    assert big.severity is Severity.CRITICAL and big.data["column"] == "orders.id"
    assert big.data["end"] == 2**31 - 1 and "integer" in big.message
    assert not findings(res, "postgres.sequence_exhaustion", f"{pg_db}.public.fine_id_seq")
    pg.execute("SELECT setval('small_seq', 96)", pg_db)
    res = survey(pg, pg_db, ["sequences"])
    assert one(res, "postgres.sequence_exhaustion", f"{pg_db}.public.small_seq").severity is Severity.CRITICAL


def test_tables_and_sequences_the_user_may_not_read_are_reported_not_passed(pg: PostgresCluster,
                                                                            pg_db: str) -> None:
    """With pg_monitor alone (what docs/postgres.md's Privileges asked for) pg_stats hides a table's columns and
    pg_sequence_last_value is withheld: the bloat and sequence checks skipped those objects silently, so a 2/3
    bloated table and a 90 % used sequence gave a clean run.  Now each says what it could not read, and with
    pg_read_all_data granted the findings are there."""
    from upkeeper.config.targets import PostgresTarget
    from upkeeper.core.task import REGISTRY

    _bloat(pg, pg_db, "hidden_bloat")
    pg.execute("CREATE SEQUENCE hidden_seq MAXVALUE 100", pg_db)
    pg.execute("SELECT setval('hidden_seq', 90)", pg_db)
    role = f"monitor_{pg_db}"
    pg.execute(f"CREATE ROLE {role} LOGIN", pg_db)
    pg.execute(f"GRANT pg_monitor TO {role}", pg_db)
    try:
        def as_monitor() -> Result:
            task = REGISTRY.get("postgres.maintenance")
            t = PostgresTarget.model_validate({**pg.target(pg_db), "user": role})
            ctx = TaskContext(job="test", task="postgres.maintenance", target_name="db", target=t)
            return task().run(ctx, task.Options.model_validate({"checks": ["bloat", "sequences"], "repair": False,
                                                                 **BLOAT}))

        res = as_monitor()
        assert not findings(res, "postgres.table_bloat") and not findings(res, "postgres.sequence_exhaustion")
        bloat = one(res, "postgres.check_failed", f"{pg_db}: bloat")
        seqs = one(res, "postgres.check_failed", f"{pg_db}: sequences")
        assert "public.hidden_bloat" in bloat.data["unreadable"] and bloat.severity is Severity.WARNING
        assert "public.hidden_seq" in seqs.data["unreadable"] and "pg_read_all_data" in seqs.remediation
        pg.execute(f"GRANT pg_read_all_data TO {role}", pg_db)
        res = as_monitor()
        assert not findings(res, "postgres.check_failed")
        one(res, "postgres.table_bloat", f"{pg_db}.public.hidden_bloat")
        one(res, "postgres.sequence_exhaustion", f"{pg_db}.public.hidden_seq")
    finally:
        pg.execute(f"DROP OWNED BY {role}", pg_db)
        pg.execute(f"DROP ROLE {role}", pg_db)


def test_vacuum_full_the_server_skips_is_not_reported_repaired(pg: PostgresCluster, pg_db: str) -> None:
    """A user with the privileges docs/postgres.md asks for (pg_monitor, pg_read_all_data) but not the table's owner:
    VACUUM (FULL) only WARNs 'skipping … only table or database owner can vacuum it', and the run said 'repaired 1
    table(s)', turned the bloat finding into info and passed.  Now the table's storage is compared: not rewritten is
    a postgres.repair_skipped warning with the server's words, and the bloat stays a warning."""
    from upkeeper.config.targets import PostgresTarget
    from upkeeper.core.task import REGISTRY

    _bloat(pg, pg_db, "not_mine")
    role = f"reader_{pg_db}"
    pg.execute(f"CREATE ROLE {role} LOGIN", pg_db)
    pg.execute(f"GRANT pg_monitor, pg_read_all_data TO {role}", pg_db)
    try:
        task = REGISTRY.get("postgres.maintenance")
        t = PostgresTarget.model_validate({**pg.target(pg_db), "user": role})
        ctx = TaskContext(job="test", task="postgres.maintenance", target_name="db", target=t)
        res = task().run(ctx, task.Options.model_validate({"checks": ["bloat", "repair"],
                                                          "repair_without_disk_check": True, **BLOAT}))
        subject = f"{pg_db}.public.not_mine"
        skipped = one(res, "postgres.repair_skipped", subject)
        assert skipped.severity is Severity.WARNING and "owner" in skipped.message
        assert one(res, "postgres.table_bloat", subject).severity is Severity.WARNING
        assert not findings(res, "postgres.bloat_repaired") and not res.metrics.get("repaired_tables")
    finally:
        pg.execute(f"DROP OWNED BY {role}", pg_db)
        pg.execute(f"DROP ROLE {role}", pg_db)


# -- sessions: connections, idle in transaction, lock waits --------------------------------------------


def test_connections_idle_in_transaction_and_lock_waits(pg: PostgresCluster, pg_db: str) -> None:
    pg.execute("CREATE TABLE contended (id int)", pg_db)
    extra = [pg.connect(pg_db) for _ in range(8)]
    idle = pg.connect(pg_db, autocommit=False)
    holder = pg.connect(pg_db, autocommit=False)
    waiter = pg.connect(pg_db)
    try:
        idle.execute("SELECT 1")  # now idle in a transaction
        holder.execute("LOCK TABLE contended IN ACCESS EXCLUSIVE MODE")
        blocked = threading.Thread(target=lambda: waiter.execute("SELECT count(*) FROM contended"))
        blocked.start()
        time.sleep(1.2)
        res = survey(pg, pg_db, ["connections", "idle_in_transaction", "lock_waits"],
                     connections_warn_pct=5, connections_critical_pct=95,
                     idle_in_transaction_max="1s", lock_wait_max="1s")
        holder_pid, idle_pid, waiter_pid = holder.info.backend_pid, idle.info.backend_pid, waiter.info.backend_pid
        holder.rollback()
        blocked.join(timeout=10)
    finally:
        for c in [*extra, idle, holder, waiter]:
            c.close()
    conn = one(res, "postgres.connections")
    assert conn.severity is Severity.WARNING and conn.data["used"] >= 11 and float(conn.value or 0) >= 11
    idle_f = [f for f in findings(res, "postgres.idle_in_transaction") if f.data["pid"] in (idle_pid, holder_pid)]
    assert {f.data["pid"] for f in idle_f} >= {idle_pid} and all(float(f.value or 0) >= 1 for f in idle_f)
    wait = [f for f in findings(res, "postgres.lock_waits") if f.data["pid"] == waiter_pid]
    assert len(wait) == 1 and wait[0].data["blocked_by"] == [holder_pid] and "contended" in wait[0].message


def test_sessions_the_user_may_not_see_are_reported_not_passed(pg: PostgresCluster, pg_db: str) -> None:
    """Without pg_read_all_stats, pg_stat_activity shows other users' sessions with no state and no backend type:
    the connections check counted only the job's own session and the idle-in-transaction check found nothing, a
    clean run over a server it could not see.  Now the hidden sessions count as connections and both checks say
    what they could not see; with pg_monitor the idle session is found."""
    from upkeeper.config.targets import PostgresTarget
    from upkeeper.core.task import REGISTRY

    role = f"nostats_{pg_db}"
    pg.execute(f"CREATE ROLE {role} LOGIN", pg_db)
    idle = pg.connect(pg_db, autocommit=False)
    others = [pg.connect(pg_db) for _ in range(3)]
    try:
        idle.execute("SELECT 1")  # idle in a transaction from now on
        time.sleep(1.2)

        def as_role() -> Result:
            task = REGISTRY.get("postgres.maintenance")
            t = PostgresTarget.model_validate({**pg.target(pg_db), "user": role})
            ctx = TaskContext(job="test", task="postgres.maintenance", target_name="db", target=t)
            return task().run(ctx, task.Options.model_validate({
                "checks": ["connections", "idle_in_transaction"], "idle_in_transaction_max": "1s"}))

        res = as_role()
        assert not findings(res, "postgres.idle_in_transaction")
        conn = one(res, "postgres.check_failed", "server: connections")
        idle_f = one(res, "postgres.check_failed", "server: idle_in_transaction")
        assert conn.severity is Severity.WARNING and int(conn.value or 0) >= 4
        assert "pg_monitor" in idle_f.remediation and int(idle_f.value or 0) >= 4
        assert res.metrics["connections_used"] >= 5  # the hidden ones and the job's own
        pg.execute(f"GRANT pg_monitor TO {role}", pg_db)
        res = as_role()
        assert not findings(res, "postgres.check_failed")
        assert idle.info.backend_pid in {f.data["pid"] for f in findings(res, "postgres.idle_in_transaction")}
    finally:
        for c in [idle, *others]:
            c.close()
        pg.execute(f"DROP ROLE {role}", pg_db)


# -- indexes --------------------------------------------------------------------------------------------


def test_unused_duplicate_and_invalid_indexes(pg: PostgresCluster, pg_db: str) -> None:
    pg.execute("CREATE TABLE items (a int, b int, c text)", pg_db)
    pg.execute("INSERT INTO items SELECT g % 50, g, 'x' FROM generate_series(1, 3000) g", pg_db)
    pg.execute("CREATE INDEX items_a ON items (a)", pg_db)
    pg.execute("CREATE INDEX items_a_b ON items (a, b)", pg_db)
    pg.execute("CREATE INDEX items_a_b_again ON items (a, b)", pg_db)
    pg.execute("CREATE UNIQUE INDEX items_b_key ON items (b)", pg_db)
    pg.execute("CREATE INDEX items_b_partial ON items (b) WHERE c = 'y'", pg_db)
    with pytest.raises(Exception, match="could not create unique index"):  # a real failed concurrent build
        pg.execute("CREATE UNIQUE INDEX CONCURRENTLY items_a_key ON items (a)", pg_db)
    res = survey(pg, pg_db, ["unused_indexes", "duplicate_indexes", "invalid_indexes"],
                 unused_index_min_bytes=0, unused_index_min_stats_age=0)
    dup = {f.subject: f for f in findings(res, "postgres.duplicate_index")}
    assert set(dup) == {f"{pg_db}.public.items_a", f"{pg_db}.public.items_a_b_again"}
    assert dup[f"{pg_db}.public.items_a_b_again"].data["exact"] is True
    assert dup[f"{pg_db}.public.items_a"].data["exact"] is False
    unused = {f.subject for f in findings(res, "postgres.unused_index")}
    assert f"{pg_db}.public.items_a_b" in unused and f"{pg_db}.public.items_b_key" not in unused  # unique: kept
    invalid = one(res, "postgres.invalid_index", f"{pg_db}.public.items_a_key")
    assert invalid.data["reindex_leftover"] is False
    # a scanned index is not unused; statistics younger than the minimum judge nothing
    pg.execute("SET enable_seqscan = off; SELECT count(*) FROM items WHERE a = 3 AND b > 0", pg_db)
    time.sleep(0.1)
    res = survey(pg, pg_db, ["unused_indexes"], unused_index_min_bytes=0, unused_index_min_stats_age="1000d")
    assert not findings(res, "postgres.unused_index")


# -- slow queries, size and growth, cache ----------------------------------------------------------------


def test_slow_query_from_pg_stat_statements_and_reset(pg: PostgresCluster, pg_db: str) -> None:
    pg.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", pg_db)
    # this worker's cluster has served thousands of distinct statements (the many-tables tests): when its
    # pg_stat_statements.max entries are full, each new statement evicts the least used ones — start empty
    pg.execute("SELECT pg_stat_statements_reset()", pg_db)
    with pg.connect(pg_db) as conn:
        for _ in range(6):
            conn.execute("SELECT pg_sleep(0.025) AS upkeeper_slow_probe")
    res = survey(pg, pg_db, ["slow_queries"], slow_query_min_calls=5, slow_query_mean_ms=20, reset_statements=True)
    slow = [f for f in findings(res, "postgres.slow_query") if "upkeeper_slow_probe" in f.message]
    assert len(slow) == 1 and slow[0].data["calls"] == 6 and float(slow[0].value or 0) >= 25, (
        [f.message for f in res.findings], pg.execute("SELECT * FROM pg_stat_statements_info", pg_db))
    assert slow[0].subject.endswith(f"({pg_db})")
    assert one(res, "postgres.top_queries").data["statements"]
    assert "pg_stat_statements reset" in res.summary
    left = pg.execute("SELECT count(*) FROM pg_stat_statements WHERE query LIKE '%upkeeper_slow_probe%'", pg_db)
    assert left[0][0] == 0


def test_growth_from_history(pg: PostgresCluster, pg_db: str, tmp_path: Path) -> None:
    history = History(f"sqlite:///{tmp_path / 'h.db'}")
    size = pg.execute(f"SELECT pg_database_size('{pg_db}')")[0][0]
    month_ago = datetime.now(UTC) - timedelta(days=28)
    rid = history.create_run(NewRun(job="db-maintenance", task="postgres.maintenance", target="db",
                                    scheduled_for=month_ago, trigger="schedule"), "test", "node")
    assert rid is not None
    history.finish_run(rid, status="ok", started_at=month_ago, finished_at=month_ago,
                       result=Result(metrics={f"db.{pg_db}.size_bytes": size * 0.8}))
    ctx = TaskContext(job="db-maintenance", task="postgres.maintenance", target_name="db",
                      metrics=HistoryMetrics(history, "db-maintenance", "db"))
    res = survey(pg, pg_db, ["database_size"], ctx=ctx)
    f = one(res, "postgres.database_growth", f"database {pg_db}")
    now_size = res.metrics[f"db.{pg_db}.size_bytes"]
    assert now_size >= size
    # ~25 % in 28 days (a little more: the first connections wrote the relcache file), scaled to 30 days
    assert float(f.value or 0) == pytest.approx((now_size / (size * 0.8) - 1) * 100 * 30 / 28, rel=0.01)
    assert float(f.value or 0) > 25
    # too little history: no verdict
    res = survey(pg, pg_db, ["database_size"], ctx=ctx, growth_min_history="60d", growth_window="90d")
    assert not findings(res, "postgres.database_growth")


def test_cache_hit_ratio_and_largest_tables(pg: PostgresCluster, pg_db: str) -> None:
    # written through the bulk-write ring and read through the seq-scan ring: most reads miss shared_buffers
    pg.execute("CREATE TABLE big AS SELECT g AS id, repeat('z', 200) AS pad FROM generate_series(1, 180000) g", pg_db)
    pg.execute("SELECT count(*) FROM big", pg_db)
    res = survey(pg, pg_db, ["cache_hit", "largest_tables"], cache_hit_min_blocks=1000, top_tables=3)
    f = one(res, "postgres.cache_hit_ratio", f"database {pg_db} (tables)")
    assert float(f.value or 100) < 99 and f.data["read"] > 1000
    top = one(res, "postgres.largest_tables")
    assert top.data["tables"][0]["table"] == "public.big"


# -- isolation, bounded queries, options --------------------------------------------------------------------


def test_one_failing_check_does_not_stop_the_others(pg: PostgresCluster, pg_db: str) -> None:
    pg.execute("CREATE SEQUENCE s MAXVALUE 10", pg_db)
    pg.execute("SELECT setval('s', 10)", pg_db)
    pg.execute("CREATE TABLE busy (id int)", pg_db)
    with pg.connect(pg_db, autocommit=False) as holder:
        holder.execute("LOCK TABLE busy IN ACCESS EXCLUSIVE MODE")
        res = survey(pg, pg_db, ["largest_tables", "sequences"], lock_timeout="200ms")
        holder.rollback()
    failed = one(res, "postgres.check_failed", f"{pg_db}: largest_tables")
    assert "lock timeout" in failed.message
    assert one(res, "postgres.sequence_exhaustion").severity is Severity.CRITICAL
    assert res.metrics["checks_failed"] == 1


def test_query_count_does_not_grow_with_the_number_of_tables(pg: PostgresCluster, pg_db: str) -> None:
    def count() -> float:
        return run_task("postgres.maintenance", pg, pg_db, repair=False,
                        skip_checks=["slow_queries"]).metrics["queries"]

    pg.execute("CREATE TABLE t0 (id serial PRIMARY KEY, v text)", pg_db)
    few = count()
    pg.execute("DO $$ BEGIN FOR i IN 1..60 LOOP EXECUTE format('CREATE TABLE t%s (id serial PRIMARY KEY, "
               "v text, w int); CREATE INDEX ON t%s (w); INSERT INTO t%s (v, w) VALUES (''a'', 1)', i, i, i); "
               "END LOOP; END $$", pg_db)
    pg.execute("ANALYZE", pg_db)
    assert count() == few


def test_check_names_and_option_errors() -> None:
    registered = {c.name for c in SERVER_CHECKS + DATABASE_CHECKS} | {"repair", "audit_cleanup"}
    assert registered == set(CHECK_NAMES)
    with pytest.raises(ValidationError, match="unknown check 'bloats'; known: connections"):
        MaintenanceOptions(checks=["bloats"])
    with pytest.raises(ValidationError, match="audit_table needs audit_retention"):
        MaintenanceOptions(audit_table="audit_log")


# -- audit-log cleanup ------------------------------------------------------------------------------------


@pytest.fixture
def audit_db(pg: PostgresCluster, pg_db: str) -> Iterator[str]:
    pg.execute("CREATE TABLE audit_log (id bigserial PRIMARY KEY, action text, created_at timestamptz)", pg_db)
    pg.execute("INSERT INTO audit_log (action, created_at) SELECT 'old', now() - interval '40 days' - g * "
               "interval '1 minute' FROM generate_series(1, 2000) g", pg_db)
    pg.execute("INSERT INTO audit_log (action, created_at) SELECT 'new', now() - g * interval '1 minute' "
               "FROM generate_series(1, 500) g", pg_db)
    yield pg_db


def test_audit_cleanup_deletes_in_batches(pg: PostgresCluster, audit_db: str) -> None:
    db = audit_db
    opts = {"audit_table": "public.audit_log", "audit_retention": "30d", "audit_batch_size": 300,
            "audit_pause": "10ms"}
    ctx = TaskContext(job="t", task="postgres.maintenance", dry_run=True, state=MemoryState())
    dry = survey(pg, db, ["audit_cleanup"], ctx=ctx, **opts)
    assert one(dry, "postgres.audit_cleanup").value == 2000
    assert pg.execute("SELECT count(*) FROM audit_log", db)[0][0] == 2500
    res = survey(pg, db, ["audit_cleanup"], **opts)
    f = one(res, "postgres.audit_cleanup")
    assert f.value == 2000 and f.data["batches"] == 7 and f.data["complete"] is True  # 6 full + 1 partial
    assert pg.execute("SELECT action, count(*) FROM audit_log GROUP BY 1", db) == [("new", 500)]


def test_audit_cleanup_of_a_partitioned_table_keeps_the_recent_rows(pg: PostgresCluster, pg_db: str) -> None:
    """An audit log partitioned by time (the usual layout): a ctid is unique only within one partition, and the batch
    DELETE by the expired rows' ctids also deleted the recent rows at the same places in the newer partition —
    every row within retention gone, reported as 'deleted 400 row(s) older than 30d'."""
    pg.execute("CREATE TABLE audit_parted (id bigserial, created_at timestamptz NOT NULL, action text) "
               "PARTITION BY RANGE (created_at)", pg_db)
    pg.execute("CREATE TABLE audit_parted_old PARTITION OF audit_parted FOR VALUES FROM ('2000-01-01') "
               "TO ('2020-01-01')", pg_db)
    pg.execute("CREATE TABLE audit_parted_new PARTITION OF audit_parted FOR VALUES FROM ('2020-01-01') "
               "TO ('2200-01-01')", pg_db)
    pg.execute("INSERT INTO audit_parted (created_at, action) SELECT '2010-01-01'::timestamptz + g * interval "
               "'1 hour', 'old' FROM generate_series(1, 200) g", pg_db)
    pg.execute("INSERT INTO audit_parted (created_at, action) SELECT now() - g * interval '1 minute', 'new' "
               "FROM generate_series(1, 200) g", pg_db)
    res = survey(pg, pg_db, ["audit_cleanup"], audit_table="audit_parted", audit_retention="30d",
                 audit_batch_size=50, audit_pause="0s")
    assert pg.execute("SELECT action, count(*) FROM audit_parted GROUP BY 1", pg_db) == [("new", 200)]
    f = one(res, "postgres.audit_cleanup")
    assert f.value == 200 and f.data["complete"] is True


def test_audit_cleanup_says_when_the_server_skipped_expired_rows(pg: PostgresCluster, audit_db: str) -> None:
    """A BEFORE DELETE trigger that returns NULL (an append-only audit log guarded against deletes): every DELETE
    deleted nothing without an error, and the cleanup said 'deleted 0 row(s) older than 30d', INFO, as if none
    had expired.  Now a warning says the expired rows are still there and where to look."""
    pg.execute("CREATE FUNCTION keep_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$",
               audit_db)
    pg.execute("CREATE TRIGGER keep BEFORE DELETE ON audit_log FOR EACH ROW EXECUTE FUNCTION keep_audit()", audit_db)
    res = survey(pg, audit_db, ["audit_cleanup"], audit_table="audit_log", audit_retention="30d",
                 audit_batch_size=300, audit_pause="0s")
    assert pg.execute("SELECT count(*) FROM audit_log", audit_db)[0][0] == 2500
    left = one(res, "postgres.audit_cleanup_incomplete")
    assert left.severity is Severity.WARNING and "deleted 0" in left.message and "BEFORE DELETE trigger" in left.remediation
    pg.execute("DROP TRIGGER keep ON audit_log", audit_db)
    res = survey(pg, audit_db, ["audit_cleanup"], audit_table="audit_log", audit_retention="30d",
                 audit_batch_size=300, audit_pause="0s")
    assert one(res, "postgres.audit_cleanup").value == 2000 and not findings(res, "postgres.audit_cleanup_incomplete")


def test_audit_cleanup_stops_at_max_duration_and_checks_its_column(pg: PostgresCluster, audit_db: str) -> None:
    res = survey(pg, audit_db, ["audit_cleanup"], audit_table="audit_log", audit_retention="30d",
                 audit_batch_size=300, audit_max_duration=0)
    f = one(res, "postgres.audit_cleanup")
    assert f.value == 300 and f.data["complete"] is False and "next run continues" in f.message
    bad = survey(pg, audit_db, ["audit_cleanup"], audit_table="audit_log", audit_column="action",
                 audit_retention="30d")
    assert "not a timestamp" in one(bad, "postgres.audit_cleanup_failed").message


def test_unreachable_database_is_one_finding(pg: PostgresCluster, pg_db: str) -> None:
    res = run_task("postgres.maintenance", pg, pg_db, databases=[pg_db, "no_such_db"], checks=["dead_tuples"])
    bad = one(res, "postgres.database_unreachable", "database no_such_db")
    assert bad.severity is Severity.CRITICAL and res.final_status.value == "fail"
    assert not findings(res, "postgres.check_failed")
