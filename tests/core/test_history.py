"""History store behaviour on SQLite and PostgreSQL: claims, locks, orphans, migrations."""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from upkeeper.core.history import (
    MIGRATIONS,
    SCHEMA_HEADS,
    History,
    NewRun,
    default_history_path,
    history_url,
    process_identity,
)
from upkeeper.core.task import Result
from upkeeper.errors import HistoryError
from upkeeper.sandbox.postgres import PostgresCluster

T = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def history(request: pytest.FixtureRequest, tmp_path: Path) -> History:
    if request.param == "sqlite":
        return History(f"sqlite:///{tmp_path / 'h.db'}")
    pg: PostgresCluster = request.getfixturevalue("pg")
    db: str = request.getfixturevalue("pg_db")
    h = History(f"postgresql+psycopg://postgres@127.0.0.1:{pg.port}/{db}")
    request.addfinalizer(h.close)
    return h


def test_claim_is_unique_per_occurrence(history: History) -> None:
    a = history.claim([NewRun("j", "debug.noop", None, T), NewRun("k", "debug.noop", None, T)], "a:1:1", "a")
    b = history.claim([NewRun("j", "debug.noop", None, T), NewRun("j", "debug.noop", None, T + timedelta(1))],
                      "b:1:1", "b")
    assert [r.job for r, _ in a] == ["j", "k"]
    assert [(r.job, r.scheduled_for) for r, _ in b] == [("j", T + timedelta(1))]


def test_datetimes_round_trip_as_aware_utc(history: History) -> None:
    rid = history.create_run(NewRun("j", "debug.noop", None, T), "a:1:1", "a")
    assert rid is not None
    row = history.get_run(rid)
    assert row is not None and row.scheduled_for == T and row.scheduled_for.tzinfo is not None
    assert history.last_scheduled() == {"j": T}


def test_stopped_occurrences_are_the_newest_occurrence_rows_stopped_on_request(history: History) -> None:
    us = timedelta(microseconds=1)
    stopped = {"stopped": True}
    history.claim([
        # stopped, then run again (a key a microsecond later) and stopped again: the newest counts
        NewRun("again", "debug.noop", None, T, status="interrupted", details=stopped),
        NewRun("again", "debug.noop", None, T + us, trigger="catch-up", status="interrupted", details=stopped),
        NewRun("killed", "debug.noop", None, T, status="interrupted"),  # its worker killed alone: a failure
        NewRun("later", "debug.noop", None, T, status="interrupted", details=stopped),
        NewRun("later", "debug.noop", None, T + timedelta(days=1), status="ok"),  # a later occurrence ran
        NewRun("retry", "debug.noop", None, T, status="fail"),
        NewRun("retry", "debug.noop", None, T + timedelta(hours=1), trigger="retry", status="interrupted",
               details=stopped),  # retries are not occurrences
    ], "a:1:1", "a")
    got = history.stopped_occurrences()
    assert {job: r.scheduled_for for job, r in got.items()} == {"again": T + us}
    assert history.last_scheduled()["again"] == T + us


def test_locks_exclude_and_expire(history: History) -> None:
    me = process_identity()
    assert history.acquire_lock("target:db", f"{me}/1", "n", timedelta(minutes=1))
    assert not history.acquire_lock("target:db", f"{me}/2", "n", timedelta(minutes=1))  # another run of mine
    history.release_lock("target:db", f"{me}/1")
    assert history.acquire_lock("target:db", f"{me}/2", "n", timedelta(minutes=1))
    # a lock held by a dead process on this node is taken over
    assert history.acquire_lock("job:x", f"{me.rsplit(':', 2)[0]}:999999:1/5", "n", timedelta(hours=1))
    assert history.acquire_lock("job:x", f"{me}/6", "n", timedelta(minutes=1))
    # a lock of another node is respected until its lease expired lease_grace ago (the history may have been
    # down, unseen by this process: its holder could not renew it)
    assert history.acquire_lock("job:y", "elsewhere:5:5/1", "elsewhere", timedelta(seconds=-1))
    assert not history.acquire_lock("job:y", f"{me}/7", "n", timedelta(minutes=1))
    history.release_lock("job:y", "elsewhere:5:5/1")
    assert history.acquire_lock("job:y", "elsewhere:5:5/1", "elsewhere", -history.lease_grace - timedelta(seconds=1))
    assert history.acquire_lock("job:y", f"{me}/7", "n", timedelta(minutes=1))
    assert history.acquire_lock("job:z", "elsewhere:5:5/1", "elsewhere", timedelta(minutes=5))
    assert not history.acquire_lock("job:z", f"{me}/8", "n", timedelta(minutes=1))


def test_a_process_identity_is_the_one_psutil_gives() -> None:
    """``process_identity`` reads /proc itself (psutil costs ~10 ms of every ``upkeeper run``'s start); a
    daemon checks the owners of locks and runs with psutil (:func:`owner_alive`): both must give every
    process the same identity, or a live run's locks would be taken over."""
    import subprocess

    import psutil

    from upkeeper.core.history import _linux_create_time, owner_alive

    child = subprocess.Popen(["sleep", "30"])
    try:
        for pid in (os.getpid(), os.getppid(), child.pid, 1):
            assert _linux_create_time(pid) == psutil.Process(pid).create_time()
            assert process_identity(pid).rsplit(":", 1)[1] == str(int(psutil.Process(pid).create_time()))
        assert owner_alive(process_identity(child.pid), "n") is True
    finally:
        child.kill()
        child.wait()
    assert owner_alive(process_identity(), "n") is True
    assert _linux_create_time(2**22 + 1) is None  # above pid_max: no such process


def test_runs_of_dead_owner_become_interrupted(history: History) -> None:
    host = process_identity().rsplit(":", 2)[0]
    rid = history.create_run(NewRun("j", "debug.noop", None, T, status="running"), f"{host}:999999:1", "n")
    live = history.create_run(NewRun("k", "debug.noop", None, T, status="running"), process_identity(), "n")
    assert history.recover_orphans("n") == [rid]
    row = history.get_run(rid)
    assert row is not None and row.status == "interrupted" and "died" in row.summary
    assert history.get_run(live).status == "running"  # type: ignore[union-attr]


def test_a_run_on_another_node_holding_a_live_lease_is_not_taken_for_dead(history: History) -> None:
    """An ``upkeeper run`` from cron on another node writes no daemon heartbeat; its job lock's lease (refreshed
    while it runs) says it lives.  Once the lease has run out, its run is an orphan."""
    owner = "othernode:4242:1700000000"
    cron = history.create_run(NewRun("j", "debug.noop", None, T, status="running"), owner, "othernode")
    gone = history.create_run(NewRun("k", "debug.noop", None, T, status="running"), "othernode:4343:1", "othernode")
    assert cron is not None and gone is not None
    assert history.acquire_lock("job:j", f"{owner}/{cron}", "othernode", timedelta(seconds=90))
    assert history.acquire_lock("job:k", f"othernode:4343:1/{gone}", "othernode",
                                -history.lease_grace - timedelta(seconds=1))
    assert history.recover_orphans("n") == [gone]
    assert history.get_run(cron).status == "running"  # type: ignore[union-attr]


_IN_A_CONTAINER = """
import sys
from datetime import UTC, datetime, timedelta
from upkeeper.core.history import History, NewRun, process_identity
h = History(sys.argv[1])
me = process_identity()
rid = h.create_run(NewRun("nightly", "debug.noop", None, datetime(2026, 5, 1, 3, 0, tzinfo=UTC), status="running"),
                   me, "n")
assert h.acquire_lock("job:nightly", f"{me}/{rid}", "n", timedelta(minutes=5), f"run {rid}")
h.close()
print(me, rid, flush=True)
sys.stdin.read()  # runs until the test closes its stdin
"""


def test_a_process_in_a_pid_namespace_of_its_own_is_not_judged_by_this_namespaces_pids(
        history: History, tmp_path: Path) -> None:
    """A daemon in a container sharing the host's name (``docker run --network host``, two containers of a pod)
    has PIDs of its own: PID 1, 7 ... on the host are other processes, or none.  An ``upkeeper run`` on the host
    (or in another such container) checked the container's run by that PID and found it dead at once: the live
    run marked ``interrupted`` and its job lock taken over -- the job run twice at once.  The identity now names
    the PID namespace of a process outside the initial one (``host@pidns…``); such an owner is judged as another
    node's, by its lease and heartbeat."""
    import subprocess
    import sys

    from services import pid_namespace_argv

    cmd = pid_namespace_argv()
    with subprocess.Popen([*cmd, sys.executable, "-c", _IN_A_CONTAINER, history.url], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
        assert child.stdin is not None and child.stdout is not None and child.stderr is not None
        try:
            line = child.stdout.readline()  # the child's run is running and holds its job lock
            assert line, child.stderr.read()
            owner, rid = line.split()
            assert owner.startswith(f"{socket.gethostname()}@pidns"), owner
            assert history.recover_orphans("n") == []
            assert history.get_run(int(rid)).status == "running"  # type: ignore[union-attr]
            assert not history.acquire_lock("job:nightly", f"{process_identity()}/1", "n", timedelta(minutes=5))
        finally:
            child.stdin.close()
            child.wait(30)


def test_state_and_metrics(history: History) -> None:
    history.set_state("j", "offsets", {"a.log": [1, 2]})
    assert history.get_state("j", "offsets") == {"a.log": [1, 2]}
    assert history.get_state("j", "missing", 5) == 5


def test_finish_run_saves_the_runs_job_state_in_its_transaction(history: History) -> None:
    history.set_state("j", "cursors", {"a.log": 1})
    rid = history.create_run(NewRun("j", "debug.noop", None, T, status="running"), process_identity(), "n")
    assert rid is not None
    history.finish_run(rid, status="ok", result=Result(summary="read"), finished_at=T, started_at=T,
                       state={"cursors": {"a.log": 2, "b.log": (3, 4)}, "known": ["x"]})
    assert history.get_state("j", "cursors") == {"a.log": 2, "b.log": [3, 4]}  # replaced, as JSON
    assert history.get_state("j", "known") == ["x"]
    assert history.get_run(rid).status == "ok"  # type: ignore[union-attr]


def test_sqlite_uses_wal(tmp_path: Path) -> None:
    History(f"sqlite:///{tmp_path / 'h.db'}")
    mode = sqlite3.connect(tmp_path / "h.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_a_new_sqlite_history_and_its_wal_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    """A history holds findings, log excerpts, host and table names: under the usual umask (022) SQLite made it
    0644, readable by every local user.  Now it is made 0600 (its new directory 0700), and its -wal and -shm
    files take that mode; an existing file keeps the mode an admin gave it."""
    old = os.umask(0o022)
    try:
        h = History(f"sqlite:///{tmp_path / 'new' / 'h.db'}")
        h.create_run(NewRun("j", "debug.noop", None, T, status="running"), process_identity(), "n")
        kept = tmp_path / "kept.db"
        kept.touch(mode=0o640)
        History(f"sqlite:///{kept}").close()
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "new").iterdir()}
    assert modes.keys() >= {"h.db", "h.db-wal", "h.db-shm"}, modes
    assert set(modes.values()) == {0o600}, modes
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700
    assert kept.stat().st_mode & 0o777 == 0o640
    h.close()


def test_default_location_is_platform_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_history_path() == tmp_path / "upkeeper" / "history.db"
    assert history_url(None) == f"sqlite:///{tmp_path}/upkeeper/history.db"
    assert history_url("rel/h.db", tmp_path) == f"sqlite:///{tmp_path}/rel/h.db"
    assert history_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"


def test_schema_heads_constant_matches_the_migrations(tmp_path: Path) -> None:
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert set(ScriptDirectory.from_config(cfg).get_heads()) == SCHEMA_HEADS
    path = tmp_path / "h.db"
    History(f"sqlite:///{path}")  # a fresh database is migrated to exactly these heads
    with sqlite3.connect(path) as conn:
        assert {r[0] for r in conn.execute("SELECT version_num FROM alembic_version")} == SCHEMA_HEADS


def test_a_missing_migration_is_applied_on_open(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    History(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:  # as if this database predates the notify_state migration
        for table in ("notify_deliveries", "notify_events", "notify_state"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("DELETE FROM alembic_version WHERE version_num = 'notify_state_node'")
    History(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        assert {r[0] for r in conn.execute("SELECT version_num FROM alembic_version")} == SCHEMA_HEADS
        conn.execute("SELECT count(*) FROM notify_state")


def test_notify_state_rows_from_before_the_node_column_take_their_runs_node(history: History) -> None:
    """Only the node that recorded a problem closes it when its job leaves the config (notify_state.node):
    rows recorded before the column existed take the node of their last run, or of the job's latest run."""
    from sqlalchemy import text

    from upkeeper.notify.store import NotifyStore

    rid = history.create_run(NewRun("j", "debug.noop", None, T), "a:1:1", "node-a")
    history.create_run(NewRun("k", "debug.noop", None, T), "b:1:1", "node-b")
    store = NotifyStore(history)  # no node: as before the column
    store.update("j", "run", "run", problem=True, severity="error", now=T, run_id=rid)
    store.update("k", "missed", "missed", problem=True, severity="critical", now=T)
    with history.engine.begin() as conn:  # as if this database predates the notify_state_node migration
        conn.execute(text("ALTER TABLE notify_state DROP COLUMN node"))
        conn.execute(text("UPDATE alembic_version SET version_num = 'notify_state' "
                          "WHERE version_num = 'notify_state_node'"))
    reopened = History(history.url)
    try:
        assert {(r.job, r.node) for r in NotifyStore(reopened).problems()} == {("j", "node-a"), ("k", "node-b")}
    finally:
        reopened.close()


def test_newer_schema_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    History(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'from_the_future' "
                     "WHERE rowid = (SELECT min(rowid) FROM alembic_version)")
    with pytest.raises(HistoryError, match="from_the_future.*newer upkeeper") as err:
        History(f"sqlite:///{path}")
    assert err.value.hint and "upgrade upkeeper" in err.value.hint


def test_unreachable_postgres_history_is_a_clear_error() -> None:
    with pytest.raises(HistoryError, match="cannot open history database") as err:
        History("postgresql+psycopg://u:pw-secret@127.0.0.1:1/x?connect_timeout=2")
    assert "pw-secret" not in str(err.value)


def test_a_postgres_history_that_accepts_and_never_answers_fails_after_the_connect_timeout() -> None:
    """A server or pooler that accepts the connection and never answers (wedged, or the TCP handshake answered
    by a load balancer whose backend is gone): libpq waits for ever by default, and so did every history call.
    Now opening the history fails after ``connect_timeout`` (10 s, PG_CONNECT_DEFAULTS) with a clear error."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel completes handshakes; nobody answers
        port = silent.getsockname()[1]
        errors: list[BaseException] = []
        done = threading.Event()

        def open_history() -> None:
            try:
                History(f"postgresql+psycopg://u:pw-secret@127.0.0.1:{port}/x").close()
            except BaseException as exc:  # handed to the test's thread
                errors.append(exc)
            done.set()

        t0 = time.monotonic()
        threading.Thread(target=open_history, daemon=True).start()
        assert done.wait(40), "opening a history on a server that never answers still waits"
        waited = time.monotonic() - t0
    assert len(errors) == 1 and isinstance(errors[0], HistoryError), errors
    assert "cannot open history database" in str(errors[0]) and "pw-secret" not in str(errors[0])
    assert 9 <= waited < 40


def test_postgres_history_connections_carry_timeouts_and_keepalives(request: pytest.FixtureRequest) -> None:
    """Every connection of a PostgreSQL history has a connect timeout, TCP keepalives and a TCP user timeout
    (a server gone without closing fails a call within about a minute instead of ~15); one the URL sets wins."""
    pg: PostgresCluster = request.getfixturevalue("pg")
    db: str = request.getfixturevalue("pg_db")
    base = f"postgresql+psycopg://postgres@127.0.0.1:{pg.port}/{db}"
    for url, timeout in ((base, "10"), (base + "?connect_timeout=3&keepalives_idle=5", "3")):
        h = History(url)
        try:
            with h.engine.connect() as conn:
                params = conn.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
        finally:
            h.close()
        assert params["connect_timeout"] == timeout
        assert params["keepalives"] == "1" and params["keepalives_interval"] == "10"
        assert params["keepalives_count"] == "3" and params["tcp_user_timeout"] == "60000"
        assert params["keepalives_idle"] == ("30" if timeout == "10" else "5")


def test_a_stale_lock_is_taken_over_by_one_process_only(request: pytest.FixtureRequest) -> None:
    """Two processes find the same stale lock: the second, whose DELETE runs after the first's takeover
    committed, must not delete the first's fresh lock (PostgreSQL, read committed)."""
    pg: PostgresCluster = request.getfixturevalue("pg")
    db: str = request.getfixturevalue("pg_db")
    url = f"postgresql+psycopg://postgres@127.0.0.1:{pg.port}/{db}"
    first, second = History(url), History(url)
    request.addfinalizer(first.close)
    request.addfinalizer(second.close)
    me = process_identity()
    dead = f"{me.rsplit(':', 2)[0]}:999999:1/1"
    assert first.acquire_lock("target:race", dead, "n", timedelta(hours=1))
    took: list[bool] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM LOCKS") and not took:
            took.append(first.acquire_lock("target:race", f"{me}/2", "n", timedelta(minutes=1)))

    event.listen(second.engine, "before_cursor_execute", before)
    try:
        assert not second.acquire_lock("target:race", f"{me}/3", "n", timedelta(minutes=1))
    finally:
        event.remove(second.engine, "before_cursor_execute", before)
    assert took == [True]
    holder = second.lock_holder("target:race")
    assert holder is not None and holder.owner == f"{me}/2"


def test_a_sqlite_history_locked_past_the_busy_timeout_is_a_clear_error(tmp_path: Path) -> None:
    """Another process holds the SQLite history's write lock (here a real second connection in an EXCLUSIVE
    transaction) for longer than the busy timeout (60 s; shortened here): every kind of transaction fails
    with a HistoryError naming the file and how to find who holds it, not "internal error: OperationalError";
    once the lock is released the same History works again."""
    import time

    path = tmp_path / "h.db"
    h = History(f"sqlite:///{path}", busy_timeout=0.3)
    try:
        rid = h.create_run(NewRun("a", "debug.noop", None, T), "me", "n1")
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            for attempt in (lambda: h.create_run(NewRun("b", "debug.noop", None, T), "me", "n1"),  # Core path
                            lambda: h.get_run(rid)):  # ORM session
                started = time.monotonic()
                with pytest.raises(HistoryError) as err:
                    attempt()
                assert time.monotonic() - started < 5  # the timeout given, not 60 s
                assert str(path) in err.value.message and "is locked" in err.value.message, err.value.message
                assert "another upkeeper process" in err.value.message and "0.3 s" in err.value.message
                assert err.value.hint is not None and f"fuser -v {path}" in err.value.hint, err.value.hint
        finally:
            other.rollback()
            other.close()
        h.create_run(NewRun("b", "debug.noop", None, T), "me", "n1")
        row = h.get_run(rid)
        assert row is not None and row.job == "a"
    finally:
        h.close()


def test_opening_a_sqlite_history_another_process_holds_locked_is_the_same_clear_error(tmp_path: Path) -> None:
    """Opening (the schema check every command starts with) waits for the lock once, then says who to look
    for — it waited twice (the schema check, then the migration) and said "cannot open history database"."""
    import time

    path = tmp_path / "h.db"
    History(f"sqlite:///{path}").close()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        with pytest.raises(HistoryError) as err:
            History(f"sqlite:///{path}", busy_timeout=1.5)
        assert time.monotonic() - started < 2.9  # one wait, not two (3 s)
        assert err.value.message.startswith(f"history database {path} is locked"), err.value.message
        assert err.value.hint is not None and "fuser" in err.value.hint
    finally:
        other.rollback()
        other.close()


def test_a_history_another_user_owns_is_a_clear_error_naming_the_owner_and_the_fix(
        request: pytest.FixtureRequest) -> None:
    """A history made by root (an admin's first 'upkeeper run'), then used by the unprivileged user the daemon
    runs as: every command failed with "cannot open history database …: attempt to write a readonly database"
    and "check that the database is reachable".  Now the error names what that user may not write (the file,
    its directory: SQLite makes the -wal and -shm there), whose it is, and the chown that fixes it; and the
    history stays intact."""
    import shutil
    import subprocess
    import sys
    import tempfile

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root (to run as nobody) and setpriv")
    base = Path(tempfile.mkdtemp(prefix="upkeeper-hist-"))  # a place nobody reaches (tmp_path is root's)
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    base.chmod(0o755)
    db = base / "history.db"
    h = History(f"sqlite:///{db}")
    rid = h.create_run(NewRun("j", "debug.noop", None, T, status="ok"), process_identity(), "n")
    h.close()
    db.chmod(0o644)  # readable, as one made before upkeeper made them 0600: SQLite opens it read-only
    cfg = base / "upkeeper.yaml"
    cfg.write_text(f"version: 1\nhistory: {db}\njobs:\n  j: {{task: debug.noop}}\n")
    cfg.chmod(0o644)
    for argv in (["status"], ["run", "j"], ["history"]):
        res = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable,
                              "-m", "upkeeper", "--config", str(cfg), *argv], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=120)
        assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
        err = " ".join(res.stderr.split())
        assert f"nobody, whom upkeeper runs as, may not write {db} (root's, mode 0644), {base} (root's" in err, err
        assert f"Try: run upkeeper as root, or give the history to nobody: chown nobody {db};" in err, err
        assert f"chown nobody {base} (SQLite writes its -wal and -shm files there)" in err, err
    h = History(f"sqlite:///{db}")
    assert h.get_run(rid) is not None and sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone() == ("ok",)
    h.close()


def test_a_metric_series_read_with_last_is_the_newest_samples_oldest_first(history: History) -> None:
    """The log tasks' trend charts show the newest 60 runs; they read 180 days of samples (up to 10,000 rows per
    metric, four metrics, every run) to keep 60. HistoryMetrics.series(last=N) reads the newest N only."""
    from upkeeper.core.execute import HistoryMetrics

    for i in range(8):
        at = T + timedelta(minutes=i)
        rid = history.create_run(NewRun("j", "debug.noop", None, at, status="running"), process_identity(), "n")
        assert rid is not None
        history.finish_run(rid, status="ok", result=Result(summary="x", metrics={"requests": float(i)}),
                           finished_at=at, started_at=at)
    metrics = HistoryMetrics(history, "j", None)
    assert [v for _t, v in metrics.series("requests", last=3)] == [5.0, 6.0, 7.0]
    assert [v for _t, v in metrics.series("requests")] == [float(i) for i in range(8)]
    assert [v for _t, v in metrics.series("requests", since=T + timedelta(minutes=6), last=5)] == [6.0, 7.0]
