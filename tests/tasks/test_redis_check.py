"""redis.check and redis.metrics against real Redis servers (primary, replica, failing saves)."""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ops_support import checks, run_task
from upkeeper.core.task import MemoryState, Severity, Status
from upkeeper.sandbox.redis import RedisServer


@pytest.fixture
def own_redis(services_dir: Path, request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A private server for tests that change its configuration or counters."""
    server = RedisServer(Path(tempfile.mkdtemp(prefix="redis-", dir=services_dir)), extra_args=["--enable-debug-command", "local",
                                                                             "--enable-protected-configs", "local"])
    server.start()
    yield server
    server.stop()


def test_healthy_server_reports_metrics_and_no_problems(redis_clean: RedisServer) -> None:
    c = redis_clean.client()
    for i in range(50):
        c.set(f"k:{i}", "v")
    # latency has its own test: a loaded CI machine's PING p99 can pass the 100 ms default on its own
    res = run_task("redis.check", redis_clean.target(), {"latency_warning_ms": 60_000, "slowlog_warning_ms": 60_000})
    assert res.final_status is Status.OK, res.findings
    assert res.metrics["keys"] == 50
    assert res.metrics["ping_p99_ms"] >= res.metrics["ping_p50_ms"] > 0
    found = checks(res)
    # the sandbox runs without persistence and without maxmemory: told, but only as info
    assert found["redis.persistence_disabled"][0].severity is Severity.INFO
    assert found["redis.maxmemory_unset"][0].severity is Severity.INFO
    assert "Redis 7" in res.summary and "50 keys" in res.summary


def test_memory_against_maxmemory_warns_then_goes_critical(own_redis: RedisServer) -> None:
    c = own_redis.client()
    c.config_set("maxmemory", 8 * 1024 * 1024)
    value = b"x" * 1000
    pipe = c.pipeline(transaction=False)

    def fill_to(pct: float) -> None:
        i = int(c.dbsize())
        while int(c.info("memory")["used_memory"]) < 8 * 1024 * 1024 * pct / 100:
            for _ in range(200):
                pipe.set(f"fill:{i}", value)
                i += 1
            pipe.execute()

    fill_to(75)
    found = checks(run_task("redis.check", own_redis.target()))
    assert found["redis.memory"][0].severity is Severity.WARNING
    assert found["redis.memory"][0].threshold == 70
    fill_to(92)
    found = checks(run_task("redis.check", own_redis.target()))
    f = found["redis.memory"][0]
    assert f.severity is Severity.CRITICAL and f.value > 90 and f.threshold == 90
    assert "redis.maxmemory_unset" not in found


def test_replica_made_to_lag_is_found(services_dir: Path) -> None:
    """A frozen replica (SIGSTOP) stops acknowledging while the primary keeps writing: real, measured lag."""
    with RedisServer(services_dir / "lag-primary") as primary, \
            RedisServer(services_dir / "lag-replica", replica_of=primary) as replica:
        pc = primary.client()
        pc.set("warm", 1)
        res = run_task("redis.check", primary.target(), {"replica_lag_warning_s": 1, "expected_replicas": 1})
        assert "redis.replica_lag" not in checks(res) and "redis.replicas_missing" not in checks(res)
        pid = int(replica.pidfile.read_text())
        os.kill(pid, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 3.0
            i = 0
            while time.monotonic() < deadline:
                pc.set(f"during:{i}", "x" * 100)
                i += 1
                time.sleep(0.01)
            res = run_task("redis.check", primary.target(), {"replica_lag_warning_s": 1})
        finally:
            os.kill(pid, signal.SIGCONT)
        f = checks(res)["redis.replica_lag"][0]
        assert f.severity is Severity.WARNING
        assert f.value >= 2 and f.threshold == 1
        assert f.data["lag_bytes"] > 0
        assert f"{primary.port}" in f.subject and "replica" in f.subject
        assert res.metrics[f"replica.127.0.0.1:{replica.port}.lag_s"] >= 2
        # the replica catches up: the finding clears
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            res = run_task("redis.check", primary.target(), {"replica_lag_warning_s": 1})
            if "redis.replica_lag" not in checks(res):
                break
            time.sleep(0.2)
        assert "redis.replica_lag" not in checks(res)
        # the replica's own view: link down once the primary is gone
        primary.stop()
        time.sleep(0.2)
        res = run_task("redis.check", replica.target())
        f = checks(res)["redis.master_link"][0]
        assert f.severity is Severity.CRITICAL and f.value == "down"
        assert res.final_status is Status.FAIL


def test_replica_of_an_idle_primary_is_not_lag_but_a_silent_primary_is(services_dir: Path) -> None:
    """An idle primary sends its replicas only a PING every repl-ping-replica-period (10 s): a replica that heard
    nothing for a few seconds is healthy.  A primary that stays silent beyond that period is lag."""
    with RedisServer(services_dir / "idle-primary") as primary, \
            RedisServer(services_dir / "idle-replica", replica_of=primary) as replica:
        primary.client().set("warm", 1)
        rc = replica.client()

        def silence() -> int:
            return int(rc.info("replication")["master_last_io_seconds_ago"])

        deadline = time.monotonic() + 15
        while silence() < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        res = run_task("redis.check", replica.target(), {"replica_lag_warning_s": 1, "latency_warning_ms": 60_000})
        assert silence() >= 3 and "redis.replica_lag" not in checks(res), res.findings
        # a primary that pings every second and then goes silent (frozen) is lag once past period + threshold
        for server in (primary, replica):
            server.client().config_set("repl-ping-replica-period", 1)
        pid = int(primary.pidfile.read_text())
        os.kill(pid, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 15
            while silence() < 4 and time.monotonic() < deadline:
                time.sleep(0.2)
            res = run_task("redis.check", replica.target(), {"replica_lag_warning_s": 1, "latency_warning_ms": 60_000})
        finally:
            os.kill(pid, signal.SIGCONT)
        f = checks(res)["redis.replica_lag"][0]
        assert f.severity is Severity.WARNING and f.value >= 4 and f.threshold == 2
        assert f.data["ping_period_s"] == 1


def test_missing_replica_is_critical(redis_clean: RedisServer) -> None:
    res = run_task("redis.check", redis_clean.target(), {"expected_replicas": 1})
    f = checks(res)["redis.replicas_missing"][0]
    assert f.severity is Severity.CRITICAL and f.value == 0


def test_failed_bgsave_and_old_save(own_redis: RedisServer, tmp_path: Path) -> None:
    c = own_redis.client()
    # snapshots configured, data changed, the last save older than the (shortened) limit
    c.config_set("save", "3600 1")
    c.set("a", 1)
    time.sleep(1.1)
    res = run_task("redis.check", own_redis.target(), {"max_save_age": "1s"})
    f = checks(res)["redis.last_save_old"][0]
    assert f.severity is Severity.WARNING and f.value >= 1 and f.data["changes"] >= 1
    assert "redis.persistence_disabled" not in checks(res)
    # a BGSAVE that really fails: its directory vanished
    gone = tmp_path / "rdb-dir"
    gone.mkdir()
    c.config_set("dir", str(gone))
    gone.rmdir()
    c.bgsave()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and c.info("persistence")["rdb_bgsave_in_progress"]:
        time.sleep(0.05)
    assert c.info("persistence")["rdb_last_bgsave_status"] == "err"
    res = run_task("redis.check", own_redis.target())
    f = checks(res)["redis.bgsave_failed"][0]
    assert f.severity is Severity.CRITICAL and res.final_status is Status.FAIL
    c.config_set("dir", str(own_redis.base))  # let the fixture stop it cleanly


def test_required_persistence_that_cannot_be_seen_is_said(own_redis: RedisServer) -> None:
    """A user refused CONFIG GET (ACL; managed Redis disables CONFIG) cannot see the 'save' points: with
    require_persistence the check says it could not tell, instead of passing a server that persists nothing."""
    own_redis.client().acl_setuser("mon", enabled=True, passwords=["+mon-pass"], commands=["+@all", "-config"],
                                   keys=["~*"])
    target = {**own_redis.target(), "username": "mon", "password": "mon-pass"}
    opts = {"require_persistence": True, "latency_warning_ms": 60_000, "slowlog_warning_ms": 60_000}
    res = run_task("redis.check", target, opts)
    f = checks(res)["redis.check_failed"][0]
    assert f.severity is Severity.WARNING and "persistence" in f.subject
    assert "cannot tell" in f.message and "config|get" in f.message
    assert res.final_status is Status.WARN
    assert "mon-pass" not in str(res.findings) + res.summary
    # the default user sees 'save ""': the server persists nothing, critical as before
    res = run_task("redis.check", own_redis.target(), opts)
    assert checks(res)["redis.persistence_disabled"][0].severity is Severity.CRITICAL
    assert "redis.check_failed" not in checks(res)


def test_traffic_hit_rate_key_count_evictions_and_rejections(own_redis: RedisServer) -> None:
    c = own_redis.client()
    c.config_resetstat()
    state = MemoryState()
    for i in range(120):
        c.set(f"k:{i}", "v")
    for i in range(100):
        c.get(f"missing:{i}")
    for i in range(20):
        c.get(f"k:{i}")
    opts = {"hit_rate_min_lookups": 50, "max_keys": 100}
    res = run_task("redis.check", own_redis.target(), opts, state=state)
    found = checks(res)
    assert found["redis.hit_rate"][0].value == pytest.approx(100 * 20 / 120, abs=0.1)
    assert found["redis.key_count"][0].value == 120 and found["redis.key_count"][0].threshold == 100
    # the next run judges only the interval since: 200 hits, no misses → no hit-rate finding
    for i in range(200):
        c.get(f"k:{i % 120}")
    res = run_task("redis.check", own_redis.target(), opts, state=state)
    assert "redis.hit_rate" not in checks(res)
    assert res.metrics["hit_rate_pct"] == 100.0
    assert res.metrics["lookups_delta"] == 200

    # evictions under memory pressure: info with an allkeys policy, a warning otherwise
    c.config_set("maxmemory-policy", "allkeys-lru")
    c.config_set("maxmemory", int(c.info("memory")["used_memory"]) + 200_000)
    for i in range(2000):
        c.set(f"big:{i}", "y" * 1000)
    res = run_task("redis.check", own_redis.target(), state=state)
    f = checks(res)["redis.evicted_keys"][0]
    assert f.severity is Severity.INFO and f.value > 0
    res = run_task("redis.check", own_redis.target(), {"evictions_expected": False}, state=MemoryState())
    assert checks(res)["redis.evicted_keys"][0].severity is Severity.WARNING
    c.config_set("maxmemory", 0)

    # rejected connections: maxclients reached for a moment
    held = []
    c.config_set("maxclients", 3)
    try:
        with pytest.raises(redis.ConnectionError):
            for _ in range(5):
                extra = own_redis.client(retry=Retry(NoBackoff(), 0))
                extra.ping()
                held.append(extra)
    finally:
        for h in held:
            h.close()
        c.config_set("maxclients", 1000)
    res = run_task("redis.check", own_redis.target(), state=state)
    f = checks(res)["redis.rejected_connections"][0]
    assert f.severity is Severity.WARNING and f.value >= 1


def test_latency_and_slowlog(own_redis: RedisServer) -> None:
    c = own_redis.client()
    # a real slow command: a Lua busy loop, logged by the slowlog
    c.config_set("slowlog-log-slower-than", 10_000)
    c.eval("local i = 0 while i < 4000000 do i = i + 1 end return i", 0)
    state = MemoryState()
    res = run_task("redis.check", own_redis.target(), {"slowlog_warning_ms": 15}, state=state)
    f = checks(res)["redis.slowlog"][0]
    assert f.value >= 15 and "eval" in f.message.lower()
    assert "4000000" not in f.message  # arguments beyond the first are not shown
    # already reported: the next run is quiet
    res = run_task("redis.check", own_redis.target(), {"slowlog_warning_ms": 15}, state=state)
    assert "redis.slowlog" not in checks(res)

    # real latency: another client keeps pausing every client while the check pings (80 ms paused, a 2 ms gap);
    # the check starts only once the first pause is on, and 50 back-to-back pings cannot all fit in gaps
    stop, paused = threading.Event(), threading.Event()

    def pauser() -> None:
        p = own_redis.client()
        while not stop.is_set():
            p.execute_command("CLIENT", "PAUSE", "80", "ALL")
            paused.set()
            time.sleep(0.082)

    t = threading.Thread(target=pauser, daemon=True)
    t.start()
    try:
        assert paused.wait(10)
        res = run_task("redis.check", own_redis.target(), {"ping_count": 50, "latency_warning_ms": 30})
    finally:
        stop.set()
        t.join()
    f = checks(res)["redis.latency"][0]
    assert f.value > 30 and f.threshold == 30
    assert res.metrics["ping_p99_ms"] > 30


def test_a_failing_check_does_not_stop_the_others(own_redis: RedisServer) -> None:
    c = own_redis.client()
    c.acl_setuser("monitor", enabled=True, passwords=["+monitor-secret"], keys=["*"],
                  commands=["+@all", "-slowlog"])
    target = {**own_redis.target(), "username": "monitor", "password": "monitor-secret"}
    res = run_task("redis.check", target)
    f = checks(res)["redis.check_failed"][0]
    assert "slowlog" in f.subject and f.data["check_name"] == "slowlog"
    assert "ping_p50_ms" in res.metrics and "used_memory_bytes" in res.metrics  # the others ran
    assert "monitor-secret" not in res.summary


def test_unreachable_and_bad_password(own_redis: RedisServer, services_dir: Path) -> None:
    from upkeeper.sandbox._util import free_port

    res = run_task("redis.check", {"kind": "redis", "port": free_port(), "socket_timeout": "1s"})
    assert res.final_status is Status.FAIL
    assert checks(res)["redis.unreachable"][0].severity is Severity.CRITICAL
    with RedisServer(services_dir / "redis-auth", password="s3cret-pass") as secured:
        res = run_task("redis.check", {**secured.target(), "password": "wrong-pass"})
        f = checks(res)["redis.unreachable"][0]
        assert "credentials" in f.message and "wrong-pass" not in f.message
        assert run_task("redis.check", secured.target()).final_status is not Status.FAIL


def test_metrics_samples_deltas_and_retention(redis_clean: RedisServer, make_config, cli) -> None:  # type: ignore[no-untyped-def]
    from upkeeper.core.jobs import load_setup

    c = redis_clean.client()
    state = MemoryState()
    run_task("redis.metrics", redis_clean.target(), state=state)
    for i in range(30):
        c.set(f"m:{i}", i)
        c.get(f"m:{i}")
    res = run_task("redis.metrics", redis_clean.target(), state=state)
    assert res.metrics["keys"] == 30
    assert res.metrics["keyspace_hits_delta"] >= 30
    assert res.findings == []
    path = make_config({
        "targets": {"cache": redis_clean.target()},
        "jobs": {"cache-metrics": {"task": "redis.metrics", "target": "cache", "schedule": "* * * * *"},
                 "cache-check": {"task": "redis.check", "target": "cache"}},
    })
    setup = load_setup(path)
    assert setup.jobs["cache-metrics"].metrics_retention == timedelta(days=30)
    # the real CLI runs and records both
    r = cli(["--config", path, "run", "cache-metrics", "cache-check", "--json", "-p", "1"])
    assert r.code == 0, r.output
    runs = {x["job"]: x for x in r.json()}
    assert runs["cache-metrics"]["status"] == "ok"
    assert runs["cache-check"]["metrics"]["keys"] == 30


def test_a_damaged_saved_state_is_a_first_run(own_redis: RedisServer) -> None:
    """The 'slowlog' and 'counters' states read back from history (another version's, or damaged) were used as
    read: a slowlog state that is a list, or a last_id / counter that is not a number, failed the slowlog and
    stats checks at every run ('list' object has no attribute 'get', int('x')), for ever, since the state was
    never written again.  Now they count as a first run's: every slowlog entry is new, the counters a baseline."""
    c = own_redis.client()
    c.config_set("slowlog-log-slower-than", 0)  # every command is in the slowlog
    c.set("k", "v")
    opts = {"slowlog_warning_ms": 60_000, "latency_warning_ms": 60_000}
    state = MemoryState()
    run_task("redis.check", own_redis.target(), opts, state=state)
    run_id = state.get("counters")["run_id"]
    for slowlog, counters in (([5], None), ({"run_id": run_id, "last_id": "x"}, None),
                              (None, {"run_id": run_id, "keyspace_hits": "x"}),
                              (None, {"run_id": run_id, "keyspace_hits": [1], "server_time": "x"}),
                              (None, {"run_id": run_id, "server_time": "x"})):
        state.set("slowlog", slowlog)
        state.set("counters", counters)
        res = run_task("redis.check", own_redis.target(), opts, state=state)
        failed = [f.message for f in res.findings if f.check == "redis.check_failed" or "failed" in f.message]
        assert not failed, (slowlog, counters, failed)
        assert slowlog is None or res.metrics["slowlog_new"] > 0  # every entry new, as after a restart
        assert isinstance(state.get("slowlog"), dict) and type(state.get("slowlog")["last_id"]) is int
        assert type(state.get("counters")["keyspace_hits"]) is int
