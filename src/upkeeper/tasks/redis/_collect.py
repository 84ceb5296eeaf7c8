"""Reading a Redis server's state once: INFO, server time, counters turned into per-interval deltas.

``redis.check`` and ``redis.metrics`` both start from a :class:`Snapshot`; the
checks are small functions over it, so one INFO round trip feeds them all.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from upkeeper import lazy
from upkeeper.core.task import StateStore

if TYPE_CHECKING:
    import redis
else:
    redis = lazy.module("redis")

#: counters whose per-interval change matters (state key ``counters``)
COUNTERS = ("evicted_keys", "rejected_connections", "keyspace_hits", "keyspace_misses", "expired_keys",
            "total_commands_processed", "total_connections_received")  # fmt: skip


@dataclass
class Snapshot:
    info: dict[str, Any]
    server_time: float
    collected_ms: float
    #: counter deltas since the previous run of this job (or since the server started)
    deltas: dict[str, int] = field(default_factory=dict)
    #: seconds the deltas cover (None: since the server started)
    interval_s: float | None = None

    def get(self, key: str, default: Any = None) -> Any:
        return self.info.get(key, default)

    def num(self, key: str, default: float = 0.0) -> float:
        v = self.info.get(key, default)
        try:
            return float(v)
        except (TypeError, ValueError):
            return default

    @property
    def role(self) -> str:
        return str(self.info.get("role", "unknown"))

    @property
    def run_id(self) -> str:
        return str(self.info.get("run_id", ""))

    def keyspace(self) -> dict[str, dict[str, int]]:
        return {k: v for k, v in self.info.items() if k.startswith("db") and k[2:].isdigit() and isinstance(v, dict)}

    def total_keys(self) -> int:
        return sum(int(v.get("keys", 0)) for v in self.keyspace().values())

    def replicas(self) -> list[dict[str, Any]]:
        out = []
        for k, v in self.info.items():
            if k.startswith("slave") and k[5:].isdigit() and isinstance(v, dict):
                out.append({"name": k, **v})
        return sorted(out, key=lambda r: int(r["name"][5:]))


def take_snapshot(client: redis.Redis, state: StateStore | None, now: float | None = None) -> Snapshot:
    """INFO (default sections) and TIME, and counter deltas against the previous snapshot in ``state``."""
    t0 = time.perf_counter()
    info: dict[str, Any] = client.info()
    secs, micros = client.time()
    collected_ms = (time.perf_counter() - t0) * 1000
    snap = Snapshot(info=info, server_time=secs + micros / 1e6, collected_ms=collected_ms)
    current = {c: int(info.get(c, 0) or 0) for c in COUNTERS}
    prev = state.get("counters") if state is not None else None
    # (read back from history: counters that are not whole numbers -- damaged, another version's -- are a first
    # run's, as after a restart)
    if (isinstance(prev, dict) and prev.get("run_id") == snap.run_id
            and all(type(prev.get(c, 0)) is int and current[c] >= prev.get(c, 0) for c in COUNTERS)
            and isinstance(prev.get("server_time", 0), int | float) and not isinstance(prev.get("server_time"), bool)
            and math.isfinite(prev.get("server_time", 0))):
        snap.deltas = {c: current[c] - int(prev.get(c, 0)) for c in COUNTERS}
        snap.interval_s = max(0.0, snap.server_time - float(prev.get("server_time", snap.server_time)))
    else:  # first run, or the server restarted (counters start again at zero)
        snap.deltas = dict(current)
        snap.interval_s = None
    if state is not None:
        state.set("counters", {**current, "run_id": snap.run_id, "server_time": snap.server_time})
    return snap


def hit_rate(snap: Snapshot) -> tuple[float | None, int]:
    """Keyspace hit rate (%) over the interval, and the number of lookups it rests on."""
    hits, misses = snap.deltas.get("keyspace_hits", 0), snap.deltas.get("keyspace_misses", 0)
    lookups = hits + misses
    if lookups == 0:
        return None, 0
    return 100.0 * hits / lookups, lookups


def memory_usage(snap: Snapshot) -> tuple[float, float, str]:
    """(used bytes, limit bytes, what the limit is): maxmemory, else the machine's memory."""
    used = snap.num("used_memory")
    maxmemory = snap.num("maxmemory")
    if maxmemory > 0:
        return used, maxmemory, "maxmemory"
    return used, snap.num("total_system_memory"), "system memory"


def base_metrics(snap: Snapshot) -> dict[str, float]:
    """The numbers worth a time series, from one snapshot."""
    used, limit, _ = memory_usage(snap)
    m: dict[str, float] = {
        "used_memory_bytes": used,
        "used_memory_rss_bytes": snap.num("used_memory_rss"),
        "maxmemory_bytes": snap.num("maxmemory"),
        "memory_used_pct": round(100.0 * used / limit, 3) if limit else 0.0,
        "fragmentation_ratio": snap.num("mem_fragmentation_ratio"),
        "connected_clients": snap.num("connected_clients"),
        "blocked_clients": snap.num("blocked_clients"),
        "ops_per_sec": snap.num("instantaneous_ops_per_sec"),
        "keys": float(snap.total_keys()),
        "expires": float(sum(int(v.get("expires", 0)) for v in snap.keyspace().values())),
        "connected_replicas": snap.num("connected_slaves"),
        "uptime_s": snap.num("uptime_in_seconds"),
        "info_ms": round(snap.collected_ms, 3),
    }
    for c in COUNTERS:
        m[f"{c}_delta"] = float(snap.deltas.get(c, 0))
    rate, lookups = hit_rate(snap)
    if rate is not None:
        m["hit_rate_pct"] = round(rate, 3)
    m["lookups_delta"] = float(lookups)
    if snap.role == "master":
        master_offset = snap.num("master_repl_offset")
        for r in snap.replicas():
            label = f"{r.get('ip')}:{r.get('port')}"
            m[f"replica.{label}.lag_s"] = float(r.get("lag", 0) or 0)
            m[f"replica.{label}.lag_bytes"] = max(0.0, master_offset - float(r.get("offset", 0) or 0))
    elif snap.role == "slave":
        m["master_link_up"] = 1.0 if snap.get("master_link_status") == "up" else 0.0
        m["master_last_io_s"] = snap.num("master_last_io_seconds_ago", -1.0)
    return m
