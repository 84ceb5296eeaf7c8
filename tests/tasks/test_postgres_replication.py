"""Replication checks of postgres.maintenance with a real streaming replica whose replay is paused."""

from __future__ import annotations

import time

import pytest

from pg_tasks import findings, one, run_task
from upkeeper.core.task import MemoryState, Severity, TaskContext
from upkeeper.sandbox.postgres import PostgresCluster


def _wait(cond: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    assert callable(cond)
    while True:
        try:
            if cond():
                return
        except Exception:  # e.g. the table has not reached the replica yet
            pass
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_paused_replica_lags(pg_primary_replica: tuple[PostgresCluster, PostgresCluster]) -> None:
    primary, replica = pg_primary_replica
    primary.execute("CREATE TABLE IF NOT EXISTS ticks (id serial, at timestamptz DEFAULT now())")
    primary.execute("INSERT INTO ticks DEFAULT VALUES")
    _wait(lambda: replica.execute("SELECT count(*) FROM ticks")[0][0] >= 1)  # a replayed commit to measure from
    replica.execute("SELECT pg_wal_replay_pause()")
    try:
        _wait(lambda: replica.execute("SELECT pg_get_wal_replay_pause_state()")[0][0] == "paused")
        primary.execute("INSERT INTO ticks (at) SELECT now() FROM generate_series(1, 20000)")
        time.sleep(1.2)
        # seen from the primary: lag per replica in bytes
        res = run_task("postgres.maintenance", primary, "postgres", checks=["replication"],
                       replication_lag_warn_bytes="64KiB", replication_lag_critical_bytes="1GiB")
        lag = [f for f in findings(res, "postgres.replication_lag") if f.data["unit"] == "bytes"]
        assert len(lag) == 1 and lag[0].severity is Severity.WARNING and float(lag[0].value or 0) >= 64 * 1024
        assert lag[0].subject.startswith("replica walreceiver")
        assert res.metrics["replicas"] == 1
        # seen from the replica itself: bytes, seconds since the last replayed commit, and the pause
        res = run_task("postgres.maintenance", replica, "postgres", checks=["replication"],
                       replication_lag_warn_bytes="64KiB", replication_lag_warn_seconds=1)
        units = {f.data["unit"]: f for f in findings(res, "postgres.replication_lag")}
        assert float(units["bytes"].value or 0) >= 64 * 1024 and float(units["seconds"].value or 0) >= 1
        assert one(res, "postgres.replay_paused").value == "paused"
    finally:
        replica.execute("SELECT pg_wal_replay_resume()")
    _wait(lambda: replica.execute("SELECT count(*) FROM ticks")[0][0] >= 20001)
    res = run_task("postgres.maintenance", primary, "postgres", checks=["replication"],
                   replication_lag_warn_bytes="64KiB")
    assert not findings(res, "postgres.replication_lag")


def test_inactive_slot_and_wal_it_holds(pg_primary_replica: tuple[PostgresCluster, PostgresCluster]) -> None:
    primary, _ = pg_primary_replica
    primary.execute("SELECT pg_create_physical_replication_slot('forgotten', true)")
    try:
        primary.execute("CREATE TABLE IF NOT EXISTS filler (v text)")
        primary.execute("INSERT INTO filler SELECT repeat('w', 100) FROM generate_series(1, 5000)")
        state = MemoryState()
        opts = {"checks": ["replication_slots"], "slot_inactive_max": "1s", "slot_wal_warn_bytes": "256KiB"}

        def survey():  # type: ignore[no-untyped-def]
            ctx = TaskContext(job="db-maintenance", task="postgres.maintenance", state=state)
            return run_task("postgres.maintenance", primary, "postgres", ctx=ctx, **opts)

        first = survey()
        seen = one(first, "postgres.replication_slot_inactive", "slot forgotten (physical)")
        assert seen.severity is Severity.INFO  # PostgreSQL 15 does not say since when: first sight
        assert not findings(first, "postgres.replication_slot_inactive", "slot replica1 (physical)")  # streaming
        held = one(first, "postgres.replication_slot_wal", "slot forgotten (physical)")
        assert float(held.value or 0) >= 256 * 1024
        time.sleep(1.2)
        second = survey()
        late = one(second, "postgres.replication_slot_inactive", "slot forgotten (physical)")
        assert late.severity is Severity.WARNING and float(late.value or 0) >= 1
    finally:
        primary.execute("SELECT pg_drop_replication_slot('forgotten')")


@pytest.mark.parametrize("saved", [["x"], 5, {"forgotten": 5}, {"forgotten": "2025-03-01T11:00:00"},
                                   {"forgotten": "yesterday"}])
def test_a_damaged_inactive_slot_record_is_a_first_sight(pg_primary_replica: tuple[PostgresCluster, PostgresCluster],
                                                          saved: object) -> None:
    """The times the survey keeps of slots first seen inactive (PostgreSQL < 17), read back from history
    (another version's, or damaged), were used as read: a list, a number, a time without a zone or not a time
    failed the replication_slots check at every run, for ever, since the state was never written again.  Now
    that slot is first seen inactive again, and the state is written anew."""
    primary, _ = pg_primary_replica
    primary.execute("SELECT pg_create_physical_replication_slot('forgotten', true)")
    try:
        state = MemoryState()
        state.set("slots_inactive_since", saved)
        ctx = TaskContext(job="db-maintenance", task="postgres.maintenance", state=state)
        res = run_task("postgres.maintenance", primary, "postgres", ctx=ctx, checks=["replication_slots"],
                       slot_inactive_max="1h")
        assert not [f for f in res.findings if "failed" in f.message], res.findings
        seen = one(res, "postgres.replication_slot_inactive", "slot forgotten (physical)")
        assert seen.severity is Severity.INFO
        assert set(state.get("slots_inactive_since")) == {"forgotten"}
    finally:
        primary.execute("SELECT pg_drop_replication_slot('forgotten')")


def test_replication_the_user_may_not_see_is_said_not_misreported(
        pg_primary_replica: tuple[PostgresCluster, PostgresCluster]) -> None:
    """Without pg_read_all_stats pg_stat_replication and pg_stat_wal_receiver show a pid and nothing else: a healthy
    replica was 'postgres.replica_not_streaming: replica is in state None' (its lag never judged) and a streaming
    standby 'WAL receiver is not running'.  Now the check says what it could not see; with pg_monitor, all clear."""
    from upkeeper.config.targets import PostgresTarget
    from upkeeper.core.task import REGISTRY, Result

    primary, replica = pg_primary_replica
    role = "nostats_repl"
    primary.execute(f"CREATE ROLE {role} LOGIN")
    _wait(lambda: replica.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", params=[role])[0][0] == 1)
    _wait(lambda: primary.execute("SELECT state FROM pg_stat_replication")[0][0] == "streaming")

    def as_role(server: PostgresCluster) -> Result:
        task = REGISTRY.get("postgres.maintenance")
        t = PostgresTarget.model_validate({**server.target("postgres"), "user": role})
        ctx = TaskContext(job="test", task="postgres.maintenance", target_name="db", target=t, state=MemoryState())
        return task().run(ctx, task.Options.model_validate({"checks": ["replication"]}))

    try:
        for server, unknown in ((primary, "replay lag"), (replica, "WAL receiver")):
            res = as_role(server)
            assert not findings(res, "postgres.replica_not_streaming"), res.findings
            f = one(res, "postgres.check_failed", "server: replication")
            assert f.severity is Severity.WARNING and unknown in f.message and "pg_monitor" in f.remediation
        primary.execute(f"GRANT pg_monitor TO {role}")
        _wait(lambda: replica.execute("SELECT pg_has_role(%s, 'pg_monitor', 'MEMBER')", params=[role])[0][0])
        for server in (primary, replica):
            res = as_role(server)
            assert not findings(res, "postgres.check_failed") and not findings(res, "postgres.replica_not_streaming")
    finally:
        primary.execute(f"DROP ROLE {role}")
