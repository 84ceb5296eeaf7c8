"""Read-then-write patterns of the history, catalog and notification code under concurrency (PostgreSQL, read
committed): each test forces an interleaving of two processes — two History instances on one database — by
running the competing operation from a ``before_cursor_execute`` listener on the second one's engine, just
before the statement named.  A competitor that has to wait for a row lock runs in a thread, until it has
finished or waits on a lock (seen in ``pg_stat_activity``).

(On SQLite every transaction is ``BEGIN IMMEDIATE``: they are serialized, and none of these interleavings can
happen there.)"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, text

from upkeeper.backup.catalog import Catalog
from upkeeper.backup.manifest import Manifest, new_backup_id
from upkeeper.backup.pipeline import ObjectRecord
from upkeeper.core.history import History, NewRun, process_identity
from upkeeper.core.task import Result
from upkeeper.notify.store import NotifyStore
from upkeeper.sandbox.postgres import PostgresCluster

T = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)
_names = itertools.count()


@pytest.fixture(scope="module")
def pair(pg: PostgresCluster) -> Iterator[tuple[History, History]]:
    """Two processes' History on one PostgreSQL database (migrated once for the module)."""
    name = f"races_{time.monotonic_ns()}"
    pg.create_database(name)
    url = f"postgresql+psycopg://postgres@127.0.0.1:{pg.port}/{name}"
    first, second = History(url), History(url)
    yield first, second
    first.close()
    second.close()
    with pg.connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def unique(prefix: str) -> str:
    return f"{prefix}{next(_names)}"


@contextlib.contextmanager
def before(history: History, statement: str, action: Callable[[], Any]) -> Iterator[list[Any]]:
    """Run ``action`` once, just before ``history`` sends its first statement starting with ``statement``;
    yields the list its result is appended to."""
    done: list[Any] = []

    def listener(conn: Any, cursor: Any, stmt: str, *args: Any) -> None:
        if not done and stmt.lstrip().upper().startswith(statement.upper()):
            done.append(action())

    event.listen(history.engine, "before_cursor_execute", listener)
    try:
        yield done
    finally:
        event.remove(history.engine, "before_cursor_execute", listener)
    assert done, f"no statement starting with {statement!r} was sent"


def beside(watch: History, action: Callable[[], Any]) -> Callable[[], Any]:
    """Start ``action`` in a thread and return once it finished or waits on a lock; the returned function joins
    it and returns its result (or raises its error)."""
    out: list[Any] = []
    err: list[BaseException] = []

    def work() -> None:
        try:
            out.append(action())
        except BaseException as exc:
            err.append(exc)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    with watch.engine.connect() as conn:
        while t.is_alive() and time.monotonic() < deadline:
            if conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND wait_event_type = 'Lock'")).scalar():
                break
            conn.rollback()
            time.sleep(0.005)

    def join() -> Any:
        t.join(10)
        assert not t.is_alive(), "the competing operation never finished"
        if err:
            raise err[0]
        return out[0]

    return join


# -- runs ------------------------------------------------------------------------------------------------------


def test_recover_orphans_leaves_a_run_its_owner_finished_meanwhile(pair: tuple[History, History]) -> None:
    """The owner records the outcome and exits between the recovering process's read of the running run and its
    write: the run stays as its owner recorded it (it was overwritten 'interrupted' by PK)."""
    first, second = pair
    job = unique("orph")
    dead = f"{process_identity().rsplit(':', 2)[0]}:999999:1"  # this node, a PID that does not live
    rid = first.create_run(NewRun(job, "debug.noop", None, T), dead, "n")
    assert rid is not None
    first.start_run(rid, T, dead)

    def owner_finishes() -> None:
        first.finish_run(rid, status="ok", result=Result(summary="all good"), finished_at=T + timedelta(minutes=1),
                         started_at=T)

    with before(second, "UPDATE runs", owner_finishes):
        fixed = second.recover_orphans("n")
    assert fixed == []
    row = second.get_run(rid)
    assert row is not None and (row.status, row.summary) == ("ok", "all good")


def test_interrupt_owned_leaves_a_run_finished_meanwhile(pair: tuple[History, History]) -> None:
    """A daemon stopping marks its unfinished runs interrupted while one of its runs records its outcome."""
    first, second = pair
    job, owner = unique("own"), "node:1:1"
    rid = first.create_run(NewRun(job, "debug.noop", None, T), owner, "n")
    other = first.create_run(NewRun(job, "debug.noop", None, T + timedelta(hours=1)), owner, "n")
    assert rid is not None and other is not None
    first.start_run(rid, T, owner)

    def run_finishes() -> None:
        first.finish_run(rid, status="warn", result=Result(summary="slow"), finished_at=T + timedelta(minutes=1),
                         started_at=T)

    with before(second, "UPDATE runs", run_finishes):
        fixed = second.interrupt_owned(owner, "interrupted: stopping")
    assert fixed == [other]
    row = second.get_run(rid)
    assert row is not None and (row.status, row.summary) == ("warn", "slow")


def test_a_pending_run_is_claimed_by_one_daemon_only(pair: tuple[History, History]) -> None:
    """Two daemons read the same due pending run; the first claims it and, its window being closed, defers it
    again (pending, due later) before the second's claim: the second must not take it, due later as it is now."""
    first, second = pair
    job = unique("pending")
    rid = first.create_run(NewRun(job, "debug.noop", None, T, trigger="deferred", status="pending"), "x:1:1", "x")
    assert rid is not None
    later = T + timedelta(hours=2)

    def first_claims_and_defers() -> None:
        got = first.claim_pending(T, "a:1:1", "a", [job])
        assert [r.id for r in got] == [rid]
        first.set_status(rid, "pending", due_at=later)

    with before(second, "UPDATE runs", first_claims_and_defers):
        assert second.claim_pending(T, "b:1:1", "b", [job]) == []
    row = second.get_run(rid)
    assert row is not None and (row.status, row.due_at) == ("pending", later)
    assert [r.id for r in second.claim_pending(later, "b:1:1", "b", [job])] == [rid]


def test_set_state_written_first_by_two_processes_at_once(pair: tuple[History, History]) -> None:
    """Both find no row and insert one: the second must replace the first's value, not fail on the key."""
    first, second = pair
    job = unique("state")
    with before(second, "INSERT INTO job_state", lambda: first.set_state(job, "cursor", 1)):
        second.set_state(job, "cursor", 2)
    assert first.get_state(job, "cursor") == 2


# -- backup catalog --------------------------------------------------------------------------------------------


def manifest() -> Manifest:
    when = T + timedelta(seconds=next(_names))
    return Manifest(id=new_backup_id(when), kind="postgres", target="db", database="app", started_at=when,
                    finished_at=when, objects=[ObjectRecord(name="data.zst", size=5, sha256="0" * 64, raw_size=5)],
                    sha256="a" * 64, json_size=100)


def test_catalog_records_a_set_found_by_two_processes_at_once(pair: tuple[History, History]) -> None:
    """The backup run records its set while 'backups sync' finds its manifest: one row, both storages."""
    first, second = pair
    m = manifest()
    with before(second, "INSERT INTO backups", lambda: Catalog(first).record(m, ["s1"])):
        Catalog(second).record(m, ["s2"])
    row = Catalog(first).get(m.id)
    assert row is not None and row.storages == ["s1", "s2"] and row.manifest_sha256 == "a" * 64


def test_catalog_updates_of_one_row_do_not_lose_each_other(pair: tuple[History, History]) -> None:
    """Two verifications prove two storages' copies at once: both are kept; a verification result recorded while
    prune removes the set's last copy neither fails nor brings the row back."""
    first, second = pair
    m = manifest()
    Catalog(first).record(m, ["s1", "s2"])
    with before(second, "UPDATE backups",
                lambda: beside(second, lambda: Catalog(first).mark_copies_proven(m.id, ["s1"], T))) as joins:
        Catalog(second).mark_copies_proven(m.id, ["s2"], T + timedelta(hours=1))
    joins[0]()
    row = Catalog(first).get(m.id)
    assert row is not None and set(row.copies_proven) == {"s1", "s2"}

    Catalog(first).remove_storage(m.id, "s2")
    with before(second, "UPDATE backups",
                lambda: beside(second, lambda: Catalog(first).remove_storage(m.id, "s1"))) as joins:
        Catalog(second).mark_verified(m.id, True, "restored", 1.5)
    joins[0]()
    assert Catalog(first).get(m.id) is None


# -- notification state ----------------------------------------------------------------------------------------


def test_notify_state_rows_created_by_two_daemons_at_once(pair: tuple[History, History]) -> None:
    """Two daemons watching a new job for missed runs, and two observations of a new (job, check): the row is
    created once, the second daemon uses it (it failed on the duplicate key)."""
    first, second = pair
    job = unique("notify")
    with before(second, "INSERT INTO notify_state",
                lambda: NotifyStore(first).first_seen([job], "missed", "missed", T)):
        seen = NotifyStore(second).first_seen([job], "missed", "missed", T + timedelta(minutes=1))
    assert seen == {job: T}

    with before(second, "INSERT INTO notify_state",
                lambda: NotifyStore(first).update(job, "run", "run", problem=True, severity="error", now=T)):
        change = NotifyStore(second).update(job, "run", "run", problem=True, severity="error",
                                            now=T + timedelta(minutes=1))
    assert change is not None and (change.kind, change.count, change.since) == ("quiet", 2, T)


# -- history retention -----------------------------------------------------------------------------------------


def test_two_prunes_counting_streaks_of_the_same_jobs_do_not_deadlock(pair: tuple[History, History]) -> None:
    """Two daemons prune at once, each deleting other failed runs of the same two jobs (another batch, another
    cutoff), which come back from the DELETE in another order: each counts them in the jobs' ``run_streaks`` rows,
    locking one row per job.  In the order of the rows, the first locked x and then waited for y while the second
    held y and waited for x: PostgreSQL aborted one ("deadlock detected") and its prune failed."""
    from upkeeper.core.models import StreakRow
    from upkeeper.core.retention import _carry_streaks

    first, second = pair
    x, y = unique("streak_a"), unique("streak_b")

    def gone(*jobs: str) -> list[tuple[int, str, str, datetime, None]]:  # rows as the DELETE … RETURNING gives them
        return [(next(_names), job, "fail", T + timedelta(minutes=next(_names)), None) for job in jobs]

    def carry(history: History, rows: list[tuple[int, str, str, datetime, None]]) -> int:
        with history.session() as s:
            return _carry_streaks(s.connection(), rows)

    # the first prune holds x's row when the second starts (y, then x: it waits, holding y on the old code)
    with before(first, "UPDATE run_streaks", lambda: beside(second, lambda: carry(second, gone(y, x)))) as joins:
        assert carry(first, gone(x, y)) == 2
    assert joins[0]() == 2
    with first.session() as s:
        rows = s.execute(select(StreakRow.job, StreakRow.failures).where(StreakRow.job.in_([x, y])))
        counted = {job: failures for job, failures in rows}
    assert counted == {x: 2, y: 2}
