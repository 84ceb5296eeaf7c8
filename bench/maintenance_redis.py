"""Redis upkeep benchmark: redis.check and redis.evict against a Redis holding 1M keys.

Measured side by side in one run:

* ``redis.check`` (the whole task: connect, INFO, TIME, 20 PINGs, SLOWLOG, CONFIG GET)
  against ``redis-cli INFO`` — what a cron/bash health check runs.  Goal (issue 4): < 100 ms.
* ``redis.evict``'s memory-by-prefix report (10,000-key sample, scaled) against
  ``redis-cli --memkeys`` (MEMORY USAGE on every key) — time, and the report's
  error against the exact per-prefix totals from a full scan.
* ``redis.evict`` freeing memory from 85 % to 70 % of maxmemory: keys deleted per second.

Results: bench/results/maintenance_redis.json
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pydantic import TypeAdapter  # noqa: E402

from upkeeper.config.targets import TargetConfig  # noqa: E402
from upkeeper.core.task import REGISTRY, MemoryState, Result, TaskContext  # noqa: E402
from upkeeper.sandbox.redis import RedisServer  # noqa: E402
from upkeeper.tasks.redis._conn import client_for  # noqa: E402
from upkeeper.tasks.redis.evict import KeyProbe, prefix_of, scan_batches  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "maintenance_redis.json"


def run_task(name: str, target: dict[str, Any], options: dict[str, Any] | None = None,
             state: MemoryState | None = None) -> tuple[Result, float]:
    cls = REGISTRY.get(name)
    ctx = TaskContext(job=f"bench-{name}", task=name, target_name="cache",
                      target=TypeAdapter(TargetConfig).validate_python(target), state=state or MemoryState(),
                      log=logging.getLogger("bench"))
    opts = cls.Options.model_validate(options or {})
    t0 = time.perf_counter()
    res = cls().run(ctx, opts)
    return res, (time.perf_counter() - t0) * 1000


def timed(argv: list[str], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def stats(ms: list[float]) -> dict[str, float]:
    s = sorted(ms)
    return {"n": len(s), "min_ms": round(s[0], 2), "p50_ms": round(statistics.median(s), 2),
            "p95_ms": round(s[min(len(s) - 1, int(len(s) * 0.95))], 2), "max_ms": round(s[-1], 2)}


def exact_prefixes(server: RedisServer, target: dict[str, Any]) -> dict[str, int]:
    client = client_for(TypeAdapter(TargetConfig).validate_python(target))
    probe = KeyProbe(client)
    totals: dict[str, int] = {}
    for batch in scan_batches(client, None, 2000):
        for k, (_, size) in zip(batch, probe.probe(batch, "none", True), strict=True):
            if size is not None:
                p = prefix_of(k, b":", 1)
                totals[p] = totals.get(p, 0) + size
    client.close()
    return totals


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--skip-evict", action="store_true")
    args = ap.parse_args(argv)
    REGISTRY.load()
    base = Path(tempfile.mkdtemp(prefix="bench-redis-", dir="/tmp"))
    server = RedisServer(base / "redis", extra_args=["--enable-debug-command", "local", "--save", ""])
    server.start()
    out: dict[str, Any] = {"bench": "maintenance_redis", "keys": args.keys, "host": platform.node(),
                           "python": platform.python_version()}
    try:
        c = server.client()
        t0 = time.perf_counter()
        cache_n = int(args.keys * 0.8)
        c.execute_command("DEBUG", "POPULATE", cache_n, "cache:page", 64)
        c.execute_command("DEBUG", "POPULATE", args.keys - cache_n, "session", 200)
        out["load_s"] = round(time.perf_counter() - t0, 2)
        out["redis_version"] = c.info("server")["redis_version"]
        assert int(c.dbsize()) == args.keys
        target = server.target()
        print(f"loaded {args.keys} keys in {out['load_s']} s; used {c.info('memory')['used_memory_human']}")

        # 1. redis.check vs redis-cli INFO
        state = MemoryState()
        run_task("redis.check", target, state=state)  # warm-up (imports, first connection)
        check_ms = []
        for _ in range(args.runs):
            res, ms = run_task("redis.check", target, state=state)
            check_ms.append(ms)
        cli_ms = timed([server.cli, "-p", str(server.port), "INFO"], args.runs)
        out["redis_check"] = {**stats(check_ms), "goal_ms": 100, "meets_goal": statistics.median(check_ms) < 100,
                              "summary": res.summary, "findings": [f.check for f in res.findings]}
        out["redis_cli_info"] = stats(cli_ms)
        out["ratio_check_vs_redis_cli_info_p50"] = round(statistics.median(check_ms) / statistics.median(cli_ms), 2)
        print(f"redis.check p50 {out['redis_check']['p50_ms']} ms (p95 {out['redis_check']['p95_ms']}); "
              f"redis-cli INFO p50 {out['redis_cli_info']['p50_ms']} ms")

        # 2. the prefix report vs redis-cli --memkeys (a full MEMORY USAGE scan)
        res, report_ms = run_task("redis.evict", target, {"patterns": ["cache:*"]})  # below trigger: report only
        report = next(a for a in res.artifacts if a["kind"] == "redis_prefixes")["prefixes"]
        t0 = time.perf_counter()
        subprocess.run([server.cli, "-p", str(server.port), "--memkeys"], check=True, capture_output=True)
        memkeys_s = time.perf_counter() - t0
        exact = exact_prefixes(server, target)
        errors = {p["prefix"]: round(100.0 * (p["est_bytes"] - exact[p["prefix"]]) / exact[p["prefix"]], 2)
                  for p in report if p["prefix"] in exact}
        out["prefix_report"] = {"upkeeper_ms": round(report_ms, 1), "sampled_keys": 10_000,
                                "redis_cli_memkeys_s": round(memkeys_s, 2),
                                "ratio_memkeys_vs_upkeeper": round(memkeys_s * 1000 / report_ms, 1),
                                "estimate_error_pct": errors,
                                "estimated": {p["prefix"]: p["est_bytes"] for p in report}, "exact": exact}
        print(f"prefix report {report_ms:.0f} ms vs redis-cli --memkeys {memkeys_s:.1f} s; error % {errors}")

        # 3. eviction: 85 % → 70 % of maxmemory
        if not args.skip_evict:
            used = int(c.info("memory")["used_memory"])
            c.config_set("maxmemory", int(used / 0.85))
            res, evict_ms = run_task("redis.evict", target, {"patterns": ["cache:*"], "batch_size": 1000})
            deleted = res.metrics.get("deleted_keys", 0)
            out["evict"] = {"ms": round(evict_ms, 1), "deleted_keys": int(deleted),
                            "keys_per_s": round(deleted / (evict_ms / 1000), 0) if evict_ms else None,
                            "memory_before_pct": res.metrics.get("memory_used_before_pct"),
                            "memory_after_pct": res.metrics.get("memory_used_after_pct"),
                            "sessions_left": len(list(c.scan_iter("session:*", count=5000))),
                            "summary": res.summary}
            print(f"evict: {deleted:.0f} keys in {evict_ms / 1000:.1f} s "
                  f"({out['evict']['memory_before_pct']}% → {out['evict']['memory_after_pct']}%)")
    finally:
        server.stop()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"results: {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
