"""postgres.reindex against a real PostgreSQL: leftovers of interrupted rebuilds, bloated indexes, priorities."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from pg_tasks import closed_window_ctx, findings, one, run_task
from upkeeper.core.task import Severity
from upkeeper.sandbox.postgres import PostgresCluster


def _index_names(pg: PostgresCluster, db: str, table: str) -> dict[str, bool]:
    rows = pg.execute("SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                      "WHERE i.indrelid = %s::regclass", db, (table,))
    return {name: valid for name, valid in rows}


def _unique_on_function(pg: PostgresCluster, db: str) -> None:
    """A unique index on f(x); redefining f (wrongly declared IMMUTABLE) makes any rebuild hit duplicates."""
    pg.execute("CREATE FUNCTION f(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1'", db)
    pg.execute("CREATE TABLE t (x int)", db)
    pg.execute("INSERT INTO t SELECT generate_series(1, 1000)", db)
    pg.execute("CREATE UNIQUE INDEX t_fx ON t (f(x))", db)
    pg.execute("CREATE OR REPLACE FUNCTION f(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT 1'", db)


def test_interrupted_reindex_leaves_ccnew_which_is_dropped(pg: PostgresCluster, pg_db: str) -> None:
    _unique_on_function(pg, pg_db)
    with pytest.raises(psycopg.errors.UniqueViolation):  # a real failed REINDEX CONCURRENTLY
        pg.execute("REINDEX INDEX CONCURRENTLY t_fx", pg_db)
    assert _index_names(pg, pg_db, "t") == {"t_fx": True, "t_fx_ccnew": False}
    survey = run_task("postgres.maintenance", pg, pg_db, checks=["invalid_indexes"])
    assert one(survey, "postgres.invalid_index", f"{pg_db}.public.t_fx_ccnew").data["reindex_leftover"] is True
    res = run_task("postgres.reindex", pg, pg_db, bloated=False)
    f = one(res, "postgres.reindex_leftover", f"{pg_db}.public.t_fx_ccnew")
    assert f.severity is Severity.INFO and "dropped" in f.message
    assert _index_names(pg, pg_db, "t") == {"t_fx": True}
    assert res.metrics["leftovers_dropped"] == 1


def test_ccold_left_after_the_swap_is_dropped(pg: PostgresCluster, pg_db: str) -> None:
    pg.execute("CREATE TABLE s (x int)", pg_db)
    pg.execute("INSERT INTO s SELECT generate_series(1, 1000)", pg_db)
    pg.execute("CREATE INDEX s_x ON s (x)", pg_db)
    reader = pg.connect(pg_db, autocommit=False)
    rebuilder = pg.connect(pg_db)
    watcher = pg.connect(pg_db)
    errors: list[BaseException] = []
    try:
        reader.execute("SELECT count(*) FROM s")  # holds a lock: the rebuild waits before dropping the old index
        pid = rebuilder.info.backend_pid

        def rebuild() -> None:
            try:
                rebuilder.execute("REINDEX INDEX CONCURRENTLY s_x")
            except psycopg.Error as exc:
                errors.append(exc)

        th = threading.Thread(target=rebuild)
        th.start()
        deadline = time.monotonic() + 15
        while True:  # cancel it after the swap, while it waits for readers
            row = watcher.execute("SELECT phase FROM pg_stat_progress_create_index WHERE pid = %s", (pid,)).fetchone()
            if row and "marking dead" in row[0]:
                break
            assert time.monotonic() < deadline
            time.sleep(0.02)
        watcher.execute("SELECT pg_cancel_backend(%s)", (pid,))
        th.join(10)
        reader.rollback()
    finally:
        for c in (reader, rebuilder, watcher):
            c.close()
    assert errors and isinstance(errors[0], psycopg.errors.QueryCanceled)
    assert _index_names(pg, pg_db, "s") == {"s_x": True, "s_x_ccold": False}
    res = run_task("postgres.reindex", pg, pg_db, bloated=False)
    one(res, "postgres.reindex_leftover", f"{pg_db}.public.s_x_ccold")
    assert _index_names(pg, pg_db, "s") == {"s_x": True}


def test_a_rebuild_that_fails_is_cleaned_up_in_the_same_run(pg: PostgresCluster, pg_db: str) -> None:
    _unique_on_function(pg, pg_db)
    pg.execute("CREATE TABLE other (y int)", pg_db)
    pg.execute("CREATE INDEX other_y ON other (y)", pg_db)
    res = run_task("postgres.reindex", pg, pg_db, bloated=False, high_priority=["t_fx"], normal_priority=["other"])
    failed = one(res, "postgres.reindex_failed", f"{pg_db}.public.t_fx")
    assert "duplicate" in failed.message.lower() or "could not create unique index" in failed.message
    assert one(res, "postgres.reindexed", f"{pg_db}.public.other").data["reason"] == "normal"  # the next one ran
    one(res, "postgres.reindex_leftover", f"{pg_db}.public.t_fx_ccnew")
    assert _index_names(pg, pg_db, "t") == {"t_fx": True}


def _bloated_index(pg: PostgresCluster, db: str) -> None:
    pg.execute("CREATE TABLE events (id int, kind int) WITH (autovacuum_enabled = false)", db)
    pg.execute("INSERT INTO events SELECT g, g % 7 FROM generate_series(1, 60000) g", db)
    pg.execute("CREATE INDEX events_id ON events (id)", db)
    pg.execute("CREATE INDEX events_kind ON events (kind)", db)
    pg.execute("DELETE FROM events WHERE id % 10 <> 0", db)  # 90 % of the entries go …
    pg.execute("VACUUM ANALYZE events", db)  # … their pages stay: a btree does not shrink


def test_bloated_index_is_rebuilt_concurrently(pg: PostgresCluster, pg_db: str) -> None:
    _bloated_index(pg, pg_db)
    before = pg.execute("SELECT pg_relation_size('events_id')", pg_db)[0][0]
    res = run_task("postgres.reindex", pg, pg_db, bloat_min_wasted="400KiB", bloat_min_pct=50)
    bloat = one(res, "postgres.index_bloat", f"{pg_db}.public.events_id")
    assert bloat.data["method"] == "estimate" and bloat.severity is Severity.INFO  # rebuilt: nothing left
    done = one(res, "postgres.reindexed", f"{pg_db}.public.events_id")
    after = pg.execute("SELECT pg_relation_size('events_id')", pg_db)[0][0]
    assert done.data["before_bytes"] == before and done.data["after_bytes"] == after and after < before * 0.3
    assert _index_names(pg, pg_db, "events") == {"events_id": True, "events_kind": True}


def test_pgstatindex_confirms_and_window_defers(pg: PostgresCluster, pg_db: str) -> None:
    pg.execute("CREATE EXTENSION pgstattuple", pg_db)
    _bloated_index(pg, pg_db)
    res = run_task("postgres.reindex", pg, pg_db, ctx=closed_window_ctx("postgres.reindex"),
                   bloat_min_wasted="400KiB", bloat_min_pct=50)
    bloat = one(res, "postgres.index_bloat", f"{pg_db}.public.events_id")
    assert bloat.data["method"] == "pgstatindex" and bloat.severity is Severity.WARNING
    assert one(res, "postgres.reindex_deferred").severity is Severity.INFO
    assert not findings(res, "postgres.reindexed")


def test_priority_order_and_missing_names(pg: PostgresCluster, pg_db: str) -> None:
    for t in ("a", "b", "c"):
        pg.execute(f"CREATE TABLE {t} (v int); CREATE INDEX {t}_v ON {t} (v)", pg_db)
    res = run_task("postgres.reindex", pg, pg_db, bloated=False, high_priority=["c", "public.a_v"],
                   normal_priority=["b", "nope"])
    order = [f.subject for f in findings(res, "postgres.reindexed")]
    assert order == [f"{pg_db}.public.c", f"{pg_db}.public.a_v", f"{pg_db}.public.b"]
    assert one(res, "postgres.reindex_missing").severity is Severity.WARNING
    capped = run_task("postgres.reindex", pg, pg_db, bloated=False, high_priority=["c", "a", "b"], max_indexes=1)
    assert len(findings(capped, "postgres.reindexed")) == 1
    assert "2 rebuild(s) left" in one(capped, "postgres.reindex_deferred").message


def test_indexes_the_server_skips_are_not_reported_rebuilt(pg: PostgresCluster, pg_db: str) -> None:
    """REINDEX TABLE CONCURRENTLY skips an exclusion constraint's index with a mere WARNING, and a table without
    an index with a NOTICE: both were 'postgres.reindexed' and counted as rebuilt.  Now the index left alone is a
    postgres.reindex_skipped warning with the server's words, and nothing is counted that was not rebuilt."""
    pg.execute("CREATE TABLE bookings (id int, during int4range, EXCLUDE USING gist (during WITH &&))", pg_db)
    pg.execute("INSERT INTO bookings SELECT g, int4range(g, g + 1) FROM generate_series(1, 500) g", pg_db)
    pg.execute("CREATE INDEX bookings_id ON bookings (id)", pg_db)
    pg.execute("CREATE TABLE only_excl (during int4range, EXCLUDE USING gist (during WITH &&))", pg_db)
    pg.execute("CREATE TABLE no_index (a int)", pg_db)
    pg.execute("CREATE TABLE parted (id int, k int) PARTITION BY RANGE (id)", pg_db)
    pg.execute("CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (1000)", pg_db)
    pg.execute("CREATE INDEX parted_k ON parted (k)", pg_db)  # its partition's index is what gets rebuilt
    res = run_task("postgres.reindex", pg, pg_db, high_priority=["bookings", "only_excl", "no_index", "parted"],
                   bloated=False, repair_without_disk_check=True)
    one(res, "postgres.reindexed", f"{pg_db}.public.parted")
    assert not findings(res, "postgres.reindex_skipped", f"{pg_db}.public.parted")
    skipped = one(res, "postgres.reindex_skipped", f"{pg_db}.public.bookings")
    assert skipped.severity is Severity.WARNING and skipped.data["not_rebuilt"] == ["bookings_during_excl"]
    assert "exclusion constraint" in skipped.message
    one(res, "postgres.reindexed", f"{pg_db}.public.bookings")  # its other index was rebuilt
    assert one(res, "postgres.reindex_skipped", f"{pg_db}.public.only_excl").severity is Severity.WARNING
    assert one(res, "postgres.reindex_skipped", f"{pg_db}.public.no_index").severity is Severity.INFO
    assert not findings(res, "postgres.reindexed", f"{pg_db}.public.only_excl")
    assert not findings(res, "postgres.reindexed", f"{pg_db}.public.no_index")
    assert res.metrics["reindexed"] == 2
