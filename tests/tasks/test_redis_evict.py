"""redis.evict against a real Redis with a small maxmemory: only expendable keys go, and it stops at the target."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ops_support import checks, run_task
from upkeeper.core.task import Severity, Status
from upkeeper.sandbox.redis import RedisServer
from upkeeper.tasks.redis._conn import glob_match

MAXMEMORY = 16 * 1024 * 1024
VALUE = b"v" * 1000


@pytest.fixture
def small_redis(services_dir: Path, request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    server = RedisServer(Path(tempfile.mkdtemp(prefix="evict-", dir=services_dir)),
                         extra_args=["--maxmemory", str(MAXMEMORY), "--maxmemory-policy", "noeviction"])
    server.start()
    yield server
    server.stop()


def fill(c: redis.Redis, prefix: str, *, until_pct: float | None = None, count: int | None = None) -> int:
    """Write 1 kB values under ``prefix`` until memory reaches ``until_pct`` of maxmemory (or ``count`` keys)."""
    n = 0
    pipe = c.pipeline(transaction=False)
    while True:
        if count is not None and n >= count:
            return n
        if until_pct is not None and int(c.info("memory")["used_memory"]) >= MAXMEMORY * until_pct / 100:
            return n
        step = 100 if count is None else min(100, count - n)
        for _ in range(step):
            pipe.set(f"{prefix}{n}", VALUE)
            n += 1
        pipe.execute()


def used_pct(c: redis.Redis) -> float:
    return 100.0 * int(c.info("memory")["used_memory"]) / MAXMEMORY


def test_deletes_only_expendable_longest_idle_keys_and_stops_at_target(small_redis: RedisServer) -> None:
    c = small_redis.client()
    sessions = fill(c, "session:", count=300)
    others = fill(c, "cachex", count=100)  # looks similar, is not matched by 'cache:*'
    old = fill(c, "cache:old:", until_pct=84)
    time.sleep(2.2)  # OBJECT IDLETIME has one-second resolution: the old keys are now idle >= 2 s
    hot = fill(c, "cache:hot:", count=200)
    # used right now (idle 0), even if filling them took a second on a loaded machine: a tie in idle
    # time with the old keys would be broken by name, and "cache:hot:" sorts first
    c.touch(*[f"cache:hot:{i}" for i in range(hot)])
    assert used_pct(c) > 80
    res = run_task("redis.evict", small_redis.target(),
                   {"patterns": ["cache:*"], "trigger_pct": 80, "target_pct": 60, "batch_size": 200})
    assert res.final_status is Status.OK, res.findings
    after = used_pct(c)
    assert after < 60
    assert after > 55, "deleted far more than the target needed"
    # nothing outside the pattern, and none of the recently used keys
    assert len(c.keys("session:*")) == sessions
    assert len(c.keys("cachex*")) == others
    assert len(c.keys("cache:hot:*")) == hot
    remaining_old = len(c.keys("cache:old:*"))
    assert 0 < remaining_old < old
    assert res.metrics["deleted_keys"] == old - remaining_old
    assert res.metrics["memory_used_after_pct"] < 60 < res.metrics["memory_used_before_pct"]
    assert "longest idle" in res.summary
    # the prefix report saw where the memory is
    report = next(a for a in res.artifacts if a["kind"] == "redis_prefixes")
    assert report["prefixes"][0]["prefix"] == "cache:" and report["prefixes"][0]["expendable"]
    assert {p["prefix"] for p in report["prefixes"]} >= {"cache:", "session:"}
    # now below the trigger: the next run does nothing
    again = run_task("redis.evict", small_redis.target(), {"patterns": ["cache:*"]})
    assert "nothing to evict" in again.summary and c.dbsize() == sessions + others + remaining_old + hot


def test_dry_run_deletes_nothing_and_estimates(small_redis: RedisServer) -> None:
    c = small_redis.client()
    fill(c, "session:", count=100)
    fill(c, "cache:", until_pct=85)
    before = c.dbsize()
    res = run_task("redis.evict", small_redis.target(), {"patterns": ["cache:*"], "dry_run": True})
    assert c.dbsize() == before
    need = (used_pct(c) - 70) / 100 * MAXMEMORY
    assert res.metrics["would_free_bytes"] >= need
    assert res.metrics["would_delete_keys"] > 0 and res.metrics["deleted_keys"] == 0
    assert res.summary.startswith("dry run")
    # the global --dry-run works the same way
    res = run_task("redis.evict", small_redis.target(), {"patterns": ["cache:*"]}, dry_run=True)
    assert c.dbsize() == before and res.metrics["would_delete_keys"] > 0


def test_key_count_trigger(small_redis: RedisServer) -> None:
    c = small_redis.client()
    fill(c, "session:", count=200)
    fill(c, "cache:", count=1000)
    res = run_task("redis.evict", small_redis.target(),
                   {"patterns": ["cache:*"], "max_keys": 1000, "keys_target": 800, "batch_size": 64})
    assert c.dbsize() == 800
    assert len(c.keys("session:*")) == 200
    assert res.metrics["deleted_keys"] == 400


def test_a_replica_above_the_trigger_is_told_not_crashed(services_dir: Path) -> None:
    """Pointed at a replica, the eviction stopped at its first UNLINK with 'ReadOnlyError: You can't write against a
    read only replica' (status error, the prefix report lost).  Now it deletes nothing there and says to point the
    job at the primary, whose deletions the replica follows."""
    with RedisServer(services_dir / "evict-primary") as primary, \
            RedisServer(services_dir / "evict-replica", replica_of=primary) as replica:
        fill(primary.client(), "cache:", count=300)
        rc = replica.client()
        deadline = time.monotonic() + 10
        while rc.dbsize() < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        res = run_task("redis.evict", replica.target(), {"patterns": ["cache:*"], "max_keys": 100})
        f = checks(res)["redis.evict_replica"][0]
        assert f.severity is Severity.WARNING and f"{primary.port}" in f.message
        assert res.final_status is Status.WARN and rc.dbsize() == 300
        assert res.artifacts and res.artifacts[0]["kind"] == "redis_prefixes"


def test_above_trigger_without_patterns_warns_and_deletes_nothing(small_redis: RedisServer) -> None:
    c = small_redis.client()
    fill(c, "cache:", until_pct=85)
    before = c.dbsize()
    res = run_task("redis.evict", small_redis.target(), {})
    f = checks(res)["redis.evict_no_patterns"][0]
    assert f.severity is Severity.WARNING and f.threshold == 80
    assert c.dbsize() == before


def test_not_enough_expendable_keys_is_reported(small_redis: RedisServer) -> None:
    c = small_redis.client()
    fill(c, "cache:", count=500)
    fill(c, "session:", until_pct=85)
    res = run_task("redis.evict", small_redis.target(), {"patterns": ["cache:*"]})
    assert len(c.keys("cache:*")) == 0 and len(c.keys("session:*")) > 0
    f = checks(res)["redis.evict_insufficient"][0]
    assert f.severity is Severity.WARNING and res.final_status is Status.WARN


def test_lfu_policy_ranks_by_frequency(small_redis: RedisServer) -> None:
    c = small_redis.client()
    c.config_set("maxmemory-policy", "allkeys-lfu")
    fill(c, "session:", count=100)
    fill(c, "cache:", until_pct=84)
    popular = [f"cache:{i}" for i in range(50)]
    for _ in range(30):
        c.mget(popular)
    res = run_task("redis.evict", small_redis.target(), {"patterns": ["cache:*"], "target_pct": 60})
    assert "least frequently used" in res.summary
    assert used_pct(c) < 60
    assert c.exists(*popular) == len(popular)
    assert len(c.keys("session:*")) == 100


KEY_ALPHABET = st.sampled_from(list("ab:*?[]^-\\c"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pattern=st.text(KEY_ALPHABET, min_size=1, max_size=6),
       keys=st.lists(st.text(st.sampled_from(list("ab:c*?[]-^\\")), min_size=1, max_size=5), min_size=1,
                     max_size=8, unique=True))
def test_eviction_guard_agrees_with_redis_glob(redis_clean: RedisServer, pattern: str, keys: list[str]) -> None:
    """upkeeper's second guard matches exactly the keys Redis itself matches (KEYS uses the same matcher)."""
    c = redis_clean.client()
    c.flushdb()
    c.mset({k: 1 for k in keys})
    expected = set(c.keys(pattern))
    ours = {k.encode() for k in keys if glob_match(pattern, k.encode())}
    assert ours == expected, (pattern, keys)


@settings(max_examples=500, deadline=None)
@given(pattern=st.text(st.sampled_from(list("ab:*?")), min_size=0, max_size=8),
       key=st.binary(min_size=1, max_size=8).map(lambda b: bytes(c % 4 + 97 if c % 5 else 58 for c in b)))
def test_regex_fast_path_agrees_with_the_ported_matcher(pattern: str, key: bytes) -> None:
    from upkeeper.tasks.redis._conn import _match, _simple_regex

    rx = _simple_regex(pattern.encode())
    assert rx is not None
    assert (rx.match(key) is not None) == _match(pattern.encode(), 0, key, 0, [False]), (pattern, key)
