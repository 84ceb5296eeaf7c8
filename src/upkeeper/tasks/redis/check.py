"""redis.check: memory, traffic, latency, persistence and replication of one Redis server.

Each check is one small function over a :class:`Snapshot` (one INFO round trip)
plus, for latency and the slowlog, a few extra commands.  A check that raises
becomes a ``redis.check_failed`` finding; the others still run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import Field

from upkeeper import lazy
from upkeeper.config.targets import RedisTarget
from upkeeper.config.types import ByteSize, Duration
from upkeeper.core.task import (
    CheckOutput,
    Finding,
    Result,
    Severity,
    Status,
    Task,
    TaskContext,
    TaskOptions,
    run_checks,
    task,
)
from upkeeper.errors import TaskError
from upkeeper.fmt import human_bytes, human_duration
from upkeeper.tasks.redis._collect import Snapshot, base_metrics, hit_rate, memory_usage, take_snapshot
from upkeeper.tasks.redis._conn import connect, describe_redis_error, key_text, probe

if TYPE_CHECKING:
    import redis
else:
    redis = lazy.module("redis")

#: how many slowlog entries one run reads (newest first)
SLOWLOG_READ = 128
#: arguments of a slow command shown in a finding (values may be personal data: only the first key)
SLOWLOG_SHOW_ARGS = 1


class CheckOptions(TaskOptions):
    memory_warning_pct: float = Field(
        70, gt=0, le=100, description="warn when used memory reaches this % of maxmemory. Source: the maintenance procedures"
    )
    memory_critical_pct: float = Field(
        90, gt=0, le=100, description="critical above this % of maxmemory. Source: the maintenance procedures"
    )
    fragmentation_warning: float = Field(
        1.5, gt=1, description="warn when mem_fragmentation_ratio exceeds this. Source: Datadog (Redis monitoring guide)"
    )
    fragmentation_min_bytes: ByteSize = Field(
        default="100MiB", validate_default=True,
        description="ignore fragmentation until RSS exceeds used memory by this much (small servers always look "
        "fragmented). Source: Redis active-defrag-ignore-bytes (100mb)",
    )
    max_keys: int = Field(1_000_000, ge=1, description="warn above this many keys. Source: the maintenance procedures")
    hit_rate_warning_pct: float = Field(
        80, ge=0, le=100, description="warn when the keyspace hit rate falls below this %. Source: the maintenance procedures"
    )
    hit_rate_min_lookups: int = Field(
        1000, ge=0, description="judge the hit rate only over at least this many lookups. Source: upkeeper default"
    )
    evictions_expected: bool | None = Field(
        None,
        description="evicted keys are info, not a warning (default: expected when maxmemory-policy is allkeys-*). "
        "Source: Datadog (evicted_keys > 0 signals memory pressure)",
    )
    ping_count: int = Field(20, ge=1, le=1000, description="PING round trips measured for p50/p99. "
            "Source: upkeeper default")
    latency_warning_ms: float = Field(
        100, gt=0, description="warn when PING p99 exceeds this; critical when p50 does. Source: the maintenance procedures"
    )
    slowlog_warning_ms: float = Field(
        100, gt=0, description="warn about new slowlog entries slower than this. Source: the maintenance procedures "
        "(the latency threshold)"
    )
    max_save_age: Duration = Field(
        default="48h", validate_default=True,
        description="warn when the last successful RDB save is older than this and data changed since. "
        "Source: the maintenance procedures",
    )
    bgsave_max_duration: Duration = Field(
        default="10m", validate_default=True,
        description="warn when a background save has been running longer than this. Source: upkeeper default",
    )
    require_persistence: bool = Field(
        False, description="critical when neither RDB snapshots nor AOF are enabled (a store, not a cache); a "
                "warning (redis.check_failed) when AOF is off and CONFIG GET save is refused, so it cannot tell. "
                "Source: upkeeper default"
    )
    replica_lag_warning_s: float = Field(
        5, ge=0, description="warn when a replica's lag exceeds this (s); seen from a replica, silence of the "
        "primary beyond its repl-ping-replica-period (an idle primary pings every 10 s). Source: the maintenance procedures"
    )
    replica_lag_critical_s: float = Field(
        60, ge=0, description="critical above this lag (s). Source: Redis repl-timeout (60 s), after which the "
        "primary drops the replica",
    )
    replica_lag_warning_bytes: ByteSize = Field(
        default="10MiB", validate_default=True, description="warn when a replica is this many bytes behind. Source: upkeeper default"
    )
    expected_replicas: int | None = Field(
        None, ge=0, description="critical when a primary has fewer connected replicas than this. "
                "Source: upkeeper (not set by default)"
    )




@dataclass
class Env:
    client: redis.Redis
    snap: Snapshot
    opts: CheckOptions
    subject: str
    state: Any
    config: dict[str, str] = field(default_factory=dict)  # CONFIG GET results ({} when CONFIG is disabled)
    config_error: str | None = None  # why CONFIG GET was refused (ACL, rename-command, a managed Redis)


def _f(check: str, sev: Severity, subject: str, message: str, remediation: str,
       value: float | str | None = None, threshold: float | str | None = None, **data: Any) -> Finding:
    return Finding(check, sev, subject, message, remediation, value=value, threshold=threshold, data=data)


# -- memory --------------------------------------------------------------------------------

def check_memory(env: Env) -> CheckOutput:
    o, s = env.opts, env.snap
    used, limit, what = memory_usage(s)
    out = CheckOutput()
    if not limit:
        return out
    pct = 100.0 * used / limit
    out.notes.append(f"memory {human_bytes(used)} ({pct:.0f}% of {what})")
    sev = (Severity.CRITICAL if pct > o.memory_critical_pct
           else Severity.WARNING if pct >= o.memory_warning_pct else None)
    if sev is not None:
        thr = o.memory_critical_pct if sev is Severity.CRITICAL else o.memory_warning_pct
        out.findings.append(_f(
            "redis.memory", sev, env.subject,
            f"used memory {human_bytes(used)} is {pct:.1f}% of {what} {human_bytes(limit)} (threshold {thr:g}%)",
            "evict expendable keys (upkeeper redis.evict), set TTLs on cache keys, or raise maxmemory",
            value=round(pct, 2), threshold=thr, used_bytes=used, limit_bytes=limit,
            policy=s.get("maxmemory_policy"),
        ))
    if s.num("maxmemory") == 0:
        out.findings.append(_f(
            "redis.maxmemory_unset", Severity.INFO, env.subject,
            "maxmemory is not set: Redis grows until the kernel's OOM killer stops it",
            "set maxmemory (and a maxmemory-policy) in redis.conf, below the machine's free memory",
        ))
    return out


def check_fragmentation(env: Env) -> CheckOutput:
    o, s = env.opts, env.snap
    ratio = s.num("mem_fragmentation_ratio")
    used, rss = s.num("used_memory"), s.num("used_memory_rss")
    out = CheckOutput()
    if ratio > o.fragmentation_warning and rss - used >= o.fragmentation_min_bytes:
        out.findings.append(_f(
            "redis.fragmentation", Severity.WARNING, env.subject,
            f"memory fragmentation ratio {ratio:.2f}: RSS {human_bytes(rss)} for {human_bytes(used)} of data",
            "enable activedefrag (CONFIG SET activedefrag yes) or restart the server in a quiet hour",
            value=ratio, threshold=o.fragmentation_warning,
        ))
    elif 0 < ratio < 1.0 and used >= o.fragmentation_min_bytes:
        out.findings.append(_f(
            "redis.swapping", Severity.WARNING, env.subject,
            f"memory fragmentation ratio {ratio:.2f} < 1: part of Redis's memory is swapped out",
            "give the machine more memory or lower maxmemory; swapping makes every command slow",
            value=ratio, threshold=1.0,
        ))
    return out


# -- traffic -------------------------------------------------------------------------------

def _since(s: Snapshot) -> str:
    return f"in the last {human_duration(s.interval_s)}" if s.interval_s is not None else "since the server started"


def check_evictions(env: Env) -> CheckOutput:
    s, o = env.snap, env.opts
    n = s.deltas.get("evicted_keys", 0)
    out = CheckOutput()
    if n <= 0:
        return out
    policy = str(s.get("maxmemory_policy", ""))
    expected = o.evictions_expected if o.evictions_expected is not None else policy.startswith("allkeys-")
    out.findings.append(_f(
        "redis.evicted_keys", Severity.INFO if expected else Severity.WARNING, env.subject,
        f"{n} key(s) evicted {_since(s)} (maxmemory-policy {policy or '?'})",
        "Redis dropped keys to stay under maxmemory: raise maxmemory or evict expendable keys earlier "
        "(upkeeper redis.evict)",
        value=n, threshold=0, policy=policy,
    ))
    return out


def check_rejected(env: Env) -> CheckOutput:
    s = env.snap
    n = s.deltas.get("rejected_connections", 0)
    out = CheckOutput()
    if n > 0:
        out.findings.append(_f(
            "redis.rejected_connections", Severity.WARNING, env.subject,
            f"{n} connection(s) rejected {_since(s)} (maxclients reached; {s.num('connected_clients'):.0f} connected)",
            "raise maxclients or find the client leaking connections (CLIENT LIST)",
            value=n, threshold=0,
        ))
    return out


def check_hit_rate(env: Env) -> CheckOutput:
    rate, lookups = hit_rate(env.snap)
    o = env.opts
    out = CheckOutput()
    if rate is None:
        return out
    out.notes.append(f"hit rate {rate:.0f}%")
    if lookups >= o.hit_rate_min_lookups and rate < o.hit_rate_warning_pct:
        out.findings.append(_f(
            "redis.hit_rate", Severity.WARNING, env.subject,
            f"keyspace hit rate {rate:.1f}% over {lookups} lookups {_since(env.snap)} (threshold {o.hit_rate_warning_pct:g}%)",
            "check cache keys and TTLs: keys expiring too early or never written are misses",
            value=round(rate, 2), threshold=o.hit_rate_warning_pct, lookups=lookups,
        ))
    return out


def check_keys(env: Env) -> CheckOutput:
    n = env.snap.total_keys()
    o = env.opts
    out = CheckOutput(notes=[f"{n} keys"])
    if n > o.max_keys:
        out.findings.append(_f(
            "redis.key_count", Severity.WARNING, env.subject, f"{n} keys, above the limit of {o.max_keys}",
            "evict expendable keys (upkeeper redis.evict) and give cache keys a TTL",
            value=n, threshold=o.max_keys,
            per_db={k: int(v.get("keys", 0)) for k, v in env.snap.keyspace().items()},
        ))
    return out


# -- latency -------------------------------------------------------------------------------

def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-pct * len(ordered) // 100))))
    return ordered[rank - 1]


def check_latency(env: Env) -> CheckOutput:
    o = env.opts
    samples = []
    for _ in range(o.ping_count):
        t0 = time.perf_counter()
        probe(env.client)
        samples.append((time.perf_counter() - t0) * 1000)
    p50, p99 = percentile(samples, 50), percentile(samples, 99)
    out = CheckOutput(metrics={"ping_p50_ms": round(p50, 3), "ping_p99_ms": round(p99, 3), "ping_max_ms": round(max(samples), 3)},
              notes=[f"PING p50 {p50:.2f} ms / p99 {p99:.2f} ms"])
    if p50 > o.latency_warning_ms or p99 > o.latency_warning_ms:
        sev = Severity.CRITICAL if p50 > o.latency_warning_ms else Severity.WARNING
        out.findings.append(_f(
            "redis.latency", sev, env.subject,
            f"PING round trip p50 {p50:.1f} ms, p99 {p99:.1f} ms over {o.ping_count} pings "
            f"(threshold {o.latency_warning_ms:g} ms)",
            "look for slow commands (SLOWLOG GET), big keys, a saturated CPU, swapping or the network",
            value=round(p99, 2), threshold=o.latency_warning_ms, p50_ms=round(p50, 3),
        ))
    return out


def _describe_slow(entry: dict[str, Any]) -> str:
    raw = entry.get("command", b"")
    parts = raw.split(b" ") if isinstance(raw, bytes) else str(raw).split(" ")
    shown = [key_text(p) for p in parts[: 1 + SLOWLOG_SHOW_ARGS]]
    more = len(parts) - len(shown)
    text = " ".join(shown) + (f" …(+{more} args)" if more > 0 else "")
    return f"{text} {entry.get('duration', 0) / 1000:.1f} ms"


def check_slowlog(env: Env) -> CheckOutput:
    o, s = env.opts, env.snap
    entries: list[dict[str, Any]] = env.client.slowlog_get(SLOWLOG_READ)
    length = int(env.client.slowlog_len())
    seen = env.state.get("slowlog")  # (read back from history: damaged, another version's: anything)
    last_id = seen.get("last_id", -1) if isinstance(seen, dict) and seen.get("run_id") == s.run_id else -1
    if type(last_id) is not int:
        last_id = -1  # every entry is new, as after a restart
    new = [e for e in entries if int(e["id"]) > last_id]
    if entries:
        env.state.set("slowlog", {"run_id": s.run_id, "last_id": max(int(e["id"]) for e in entries)})
    slow = [e for e in new if e.get("duration", 0) / 1000 >= o.slowlog_warning_ms]
    out = CheckOutput(metrics={"slowlog_len": float(length), "slowlog_new": float(len(new))})
    if new:
        out.notes.append(f"{len(new)} new slowlog entr{'y' if len(new) == 1 else 'ies'}")
    if slow:
        worst = sorted(slow, key=lambda e: -e.get("duration", 0))
        out.findings.append(_f(
            "redis.slowlog", Severity.WARNING, env.subject,
            f"{len(slow)} command(s) slower than {o.slowlog_warning_ms:g} ms since the last check; slowest: "
            + "; ".join(_describe_slow(e) for e in worst[:3]),
            "avoid O(N) commands on big keys (KEYS, HGETALL, SMEMBERS, LRANGE 0 -1); use SCAN variants",
            value=round(worst[0].get("duration", 0) / 1000, 2), threshold=o.slowlog_warning_ms,
            entries=[{"id": int(e["id"]), "ms": e.get("duration", 0) / 1000, "command": _describe_slow(e)}
                     for e in worst[:10]],
        ))
    return out


# -- persistence ---------------------------------------------------------------------------

def check_persistence(env: Env) -> CheckOutput:
    o, s = env.opts, env.snap
    out = CheckOutput()
    aof = s.num("aof_enabled") == 1
    save_points = env.config.get("save")
    rdb_configured = bool(save_points and save_points.strip()) if save_points is not None else None
    if str(s.get("rdb_last_bgsave_status", "ok")) != "ok":
        stops = env.config.get("stop-writes-on-bgsave-error") == "yes" and rdb_configured is not False
        out.findings.append(_f(
            "redis.bgsave_failed", Severity.CRITICAL, env.subject,
            "the last background save (BGSAVE) failed: snapshots are not being written"
            + ("; Redis refuses writes until a save succeeds (stop-writes-on-bgsave-error)" if stops else ""),
            "read the Redis log for the cause (disk full, permissions on 'dir', fork failing for lack of memory)",
            value=str(s.get("rdb_last_bgsave_status")), threshold="ok",
        ))
    if s.num("rdb_bgsave_in_progress") == 1:
        running = s.num("rdb_current_bgsave_time_sec")
        if running > o.bgsave_max_duration.total_seconds():
            out.findings.append(_f(
                "redis.bgsave_slow", Severity.WARNING, env.subject,
                f"a background save has been running for {human_duration(running)}",
                "check disk throughput and memory (copy-on-write during the fork)",
                value=running, threshold=o.bgsave_max_duration.total_seconds(),
            ))
    if aof:
        for key, what in (("aof_last_write_status", "the last AOF write"),
                          ("aof_last_bgrewrite_status", "the last AOF rewrite")):
            if str(s.get(key, "ok")) != "ok":
                out.findings.append(_f(
                    "redis.aof_failed", Severity.CRITICAL, env.subject, f"{what} failed",
                    "read the Redis log (disk full, permissions); the AOF may be missing recent writes",
                    value=str(s.get(key)), threshold="ok", field=key,
                ))
    if not aof and rdb_configured is None and o.require_persistence:
        out.findings.append(_f(
            "redis.check_failed", Severity.WARNING, f"{env.subject} persistence",
            "require_persistence is set but upkeeper cannot tell whether RDB snapshots are configured: "
            f"CONFIG GET save was refused ({env.config_error or 'no answer'}) and AOF is off",
            "allow upkeeper's Redis user CONFIG GET (ACL: +config|get), or check the 'save' setting in the "
            "provider's console", check_name="persistence",
        ))
    if not aof and rdb_configured is False:
        sev = Severity.CRITICAL if o.require_persistence else Severity.INFO
        out.findings.append(_f(
            "redis.persistence_disabled", sev, env.subject,
            "neither RDB snapshots (save \"\") nor AOF are enabled: a restart loses every key",
            "fine for a pure cache; for data you keep, set 'save' points or 'appendonly yes'",
        ))
        return out
    # last save age: only when snapshots are (or may be) configured and data changed since
    changes = s.num("rdb_changes_since_last_save")
    last = s.num("rdb_last_save_time")
    age = s.server_time - last if last else None
    if age is not None:
        out.metrics["last_save_age_s"] = round(age, 1)
    if rdb_configured is not False and age is not None and changes > 0 and age > o.max_save_age.total_seconds():
        out.findings.append(_f(
            "redis.last_save_old", Severity.WARNING, env.subject,
            f"last successful save {human_duration(age)} ago with {changes:.0f} change(s) since "
            f"(threshold {human_duration(o.max_save_age)})",
            "check the 'save' points and the Redis log; run BGSAVE and make sure it succeeds",
            value=round(age, 1), threshold=o.max_save_age.total_seconds(), changes=int(changes),
        ))
    return out


# -- replication ---------------------------------------------------------------------------

def check_replication(env: Env) -> CheckOutput:
    o, s = env.opts, env.snap
    out = CheckOutput()
    if s.role == "master":
        offset = s.num("master_repl_offset")
        replicas = s.replicas()
        out.notes.append(f"primary with {len(replicas)} replica(s)")
        if o.expected_replicas is not None and len(replicas) < o.expected_replicas:
            out.findings.append(_f(
                "redis.replicas_missing", Severity.CRITICAL, env.subject,
                f"{len(replicas)} replica(s) connected, {o.expected_replicas} expected",
                "start the missing replica(s) and check their logs and replicaof settings",
                value=len(replicas), threshold=o.expected_replicas,
            ))
        for r in replicas:
            name = f"{r.get('ip')}:{r.get('port')}"
            subject = f"{env.subject} replica {name}"
            state = str(r.get("state", "?"))
            lag_s = float(r.get("lag", 0) or 0)
            lag_b = max(0.0, offset - float(r.get("offset", 0) or 0))
            if state != "online":
                out.findings.append(_f(
                    "redis.replica_link", Severity.WARNING if state in ("wait_bgsave", "send_bulk") else Severity.CRITICAL,
                    subject, f"replica {name} is {state}, not online",
                    "a full resync is running or the replica is stuck: check both servers' logs",
                    value=state, threshold="online",
                ))
            if lag_s > o.replica_lag_warning_s:
                sev = Severity.CRITICAL if lag_s > o.replica_lag_critical_s else Severity.WARNING
                thr = o.replica_lag_critical_s if sev is Severity.CRITICAL else o.replica_lag_warning_s
                out.findings.append(_f(
                    "redis.replica_lag", sev, subject,
                    f"replica {name} last acknowledged {lag_s:.0f} s ago and is {human_bytes(lag_b)} behind "
                    f"(threshold {thr:g} s)",
                    "check the replica's load and the network between the servers; a stuck replica serves stale data",
                    value=lag_s, threshold=thr, lag_bytes=lag_b,
                ))
            elif lag_b > o.replica_lag_warning_bytes:
                out.findings.append(_f(
                    "redis.replica_lag_bytes", Severity.WARNING, subject,
                    f"replica {name} is {human_bytes(lag_b)} behind the primary",
                    "check the replica's load and the network bandwidth between the servers",
                    value=lag_b, threshold=o.replica_lag_warning_bytes, lag_s=lag_s,
                ))
    elif s.role == "slave":
        primary = f"{s.get('master_host')}:{s.get('master_port')}"
        link = str(s.get("master_link_status", "?"))
        out.notes.append(f"replica of {primary} (link {link})")
        if link != "up":
            down = s.num("master_link_down_since_seconds", -1)
            out.findings.append(_f(
                "redis.master_link", Severity.CRITICAL, env.subject,
                f"replication link to the primary {primary} is {link}"
                + (f" since {human_duration(down)}" if down >= 0 else ""),
                "check that the primary is up and reachable, and masterauth; read this replica's log",
                value=link, threshold="up", down_s=down,
            ))
        else:
            # An idle primary sends its replicas nothing but a PING every repl-ping-replica-period (10 s):
            # silence up to that long is normal, only what goes beyond it is lag.
            io = s.num("master_last_io_seconds_ago", 0)
            period = ping_period(env.config)
            warn_at = o.replica_lag_warning_s + period
            if io > warn_at:
                sev = Severity.CRITICAL if io > max(o.replica_lag_critical_s, warn_at) else Severity.WARNING
                out.findings.append(_f(
                    "redis.replica_lag", sev, env.subject,
                    f"no data from the primary {primary} for {io:.0f} s (it pings every {period:g} s when idle)",
                    "check the primary's load and the network; the replica may serve stale data",
                    value=io, threshold=warn_at, ping_period_s=period,
                ))
        if s.num("master_sync_in_progress") == 1:
            out.findings.append(_f(
                "redis.replica_syncing", Severity.WARNING, env.subject,
                f"a full synchronisation from {primary} is in progress",
                "wait for it to finish; repeated full syncs mean repl-backlog-size is too small",
            ))
    return out


CHECKS: tuple[tuple[str, Callable[[Env], CheckOutput]], ...] = (
    ("memory", check_memory),
    ("fragmentation", check_fragmentation),
    ("evictions", check_evictions),
    ("rejected_connections", check_rejected),
    ("hit_rate", check_hit_rate),
    ("keys", check_keys),
    ("latency", check_latency),
    ("slowlog", check_slowlog),
    ("persistence", check_persistence),
    ("replication", check_replication),
)

#: CONFIG GET parameters some checks use (managed Redis often disables CONFIG: then they are unknown)
CONFIG_PARAMS = ("save", "stop-writes-on-bgsave-error", "repl-ping-replica-period")

#: Redis's default repl-ping-replica-period (s), used when CONFIG GET is refused
DEFAULT_PING_PERIOD_S = 10.0


def ping_period(config: dict[str, str]) -> float:
    """How often an idle primary pings its replicas (this server's repl-ping-replica-period, else Redis's 10 s)."""
    try:
        return max(0.0, float(config.get("repl-ping-replica-period", DEFAULT_PING_PERIOD_S)))
    except ValueError:
        return DEFAULT_PING_PERIOD_S


def read_config(client: redis.Redis) -> tuple[dict[str, str], str | None]:
    """CONFIG GET of :data:`CONFIG_PARAMS`, and why it was refused (then ``{}``).

    One CONFIG GET per name, pipelined (one round trip): Redis before 7.0 takes a single name and refuses
    several ("wrong number of arguments"), which left every setting unknown there."""
    pipe = client.pipeline(transaction=False)
    for name in CONFIG_PARAMS:
        pipe.config_get(name)
    try:
        answers = pipe.execute()
    except redis.ResponseError as exc:
        return {}, describe_redis_error(exc)
    return {key_text(k or ""): key_text(v or "") for raw in answers for k, v in raw.items()}, None


def check_failed(env: Env) -> Callable[[str, Exception], Finding]:
    def finding(name: str, exc: Exception) -> Finding:
        msg = describe_redis_error(exc) if isinstance(exc, redis.RedisError) else f"{type(exc).__name__}: {exc}"
        return _f("redis.check_failed", Severity.WARNING, f"{env.subject} {name}", f"the {name} check failed: {msg}",
                  "the server may restrict this command (ACL, rename-command); see the run log", check_name=name)

    return finding


def unreachable(target: RedisTarget, exc: TaskError) -> Result:
    return Result(
        status=Status.FAIL, summary=exc.message,
        findings=[Finding("redis.unreachable", Severity.CRITICAL, target.display(), exc.message,
                          (exc.hint or "").removeprefix("Try: "))],
    )


@task
class RedisCheck(Task[CheckOptions]):
    """Memory, traffic, latency, persistence and replication health of a Redis server."""

    name = "redis.check"
    summary = "memory vs maxmemory, evictions, hit rate, latency, slowlog, persistence, replication lag"
    target_kinds = ("redis",)
    Options = CheckOptions
    category = "monitoring"
    default_timeout = 60

    def run(self, ctx: TaskContext, options: CheckOptions) -> Result:
        target = ctx.require_target()
        assert isinstance(target, RedisTarget)
        try:
            with connect(target) as client:
                t0 = time.perf_counter()
                snap = take_snapshot(client, ctx.state)
                config, config_error = read_config(client)
                env = Env(client=client, snap=snap, opts=options, subject=target.display(), state=ctx.state,
                          config=config, config_error=config_error)
                out = run_checks(CHECKS, env, check_failed(env), ctx.log)
                elapsed = (time.perf_counter() - t0) * 1000
        except TaskError as exc:
            return unreachable(target, exc)
        metrics = {**base_metrics(snap), **out.metrics, "check_ms": round(elapsed, 3)}
        version = snap.get("redis_version", "?")
        summary = f"Redis {version} ({snap.role}): " + ", ".join(out.notes)
        return Result(summary=summary, findings=out.findings, metrics=metrics)

