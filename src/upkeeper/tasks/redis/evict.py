"""redis.evict: free memory by deleting the longest-idle keys of configured expendable patterns.

The task acts only when memory is above the trigger (% of maxmemory) or the
key count is above the limit.  It

1. reports the top key prefixes by memory, from a SCAN sample measured with
   ``MEMORY USAGE`` and scaled to the whole key space;
2. SCANs each expendable pattern (``cache:*``) in batches, reads ``OBJECT
   IDLETIME`` (``OBJECT FREQ`` under an LFU policy) and keeps the longest-idle
   candidates;
3. deletes them, longest idle first, in batches (``UNLINK``), re-reading memory
   and key count after each batch, and stops as soon as both are below target.

A key is deleted only if the server matched it (``SCAN MATCH``) *and*
upkeeper's port of Redis's glob matcher agrees; a key touched since it was
measured is skipped.  Nothing outside the patterns is ever deleted.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator, model_validator

from upkeeper import lazy
from upkeeper.config.targets import RedisTarget
from upkeeper.core.task import Finding, Result, Severity, Task, TaskContext, TaskOptions, task
from upkeeper.errors import TaskError
from upkeeper.fmt import human_bytes, human_duration
from upkeeper.tasks.redis._conn import connect, describe_redis_error, key_text, matcher
from upkeeper.tasks.redis.check import unreachable

if TYPE_CHECKING:
    import redis
else:
    redis = lazy.module("redis")

NO_PREFIX = "(no prefix)"


class EvictOptions(TaskOptions):
    patterns: list[str] = Field(
        default_factory=list,
        description="glob patterns of expendable keys, e.g. ['cache:*']; only these are ever deleted "
        "(empty: report only). Source: upkeeper (not set by default)",
    )
    trigger_pct: float = Field(
        80, gt=0, le=100, description="act when used memory is above this % of maxmemory. Source: the maintenance procedures"
    )
    target_pct: float = Field(
        70, gt=0, le=100,
        description="delete until used memory is below this % (redis.check's warning level). Source: the maintenance "
        "procedures",
    )
    max_keys: int = Field(1_000_000, ge=1, description="act when the database holds more keys than this. Source: the "
                          "maintenance procedures")
    keys_target: int | None = Field(
        None, ge=0, description="delete until at most this many keys remain (default: 90 % of max_keys). "
                "Source: upkeeper (not set by default)"
    )
    batch_size: int = Field(500, ge=1, le=100_000, description="SCAN COUNT hint and keys deleted per round trip. "
            "Source: upkeeper default")
    max_candidates: int = Field(
        200_000, ge=1, description="longest-idle keys remembered per pass (bounds upkeeper's memory); more passes follow. "
                "Source: upkeeper default"
    )
    max_passes: int = Field(5, ge=1, le=100, description="SCAN passes over the patterns before giving up. "
            "Source: upkeeper default")
    sample_keys: int = Field(10_000, ge=0, description="keys sampled for the memory-by-prefix report (0: no report). "
            "Source: upkeeper default")
    prefix_separator: str = Field(":", min_length=1, description="separator of key-name segments. "
            "Source: upkeeper default")
    prefix_depth: int = Field(1, ge=1, le=10, description="segments that make a prefix (1: 'cache:', 2: 'cache:user:'). "
            "Source: upkeeper default")
    top_prefixes: int = Field(10, ge=1, le=100, description="prefixes listed in the report. "
            "Source: upkeeper default")
    dry_run: bool = Field(False, description="report what would be deleted, delete nothing. "
            "Source: upkeeper default")
    unlink: bool = Field(True, description="delete with UNLINK (memory freed in the background) instead of DEL. "
            "Source: upkeeper default")

    @field_validator("patterns")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for p in v:
            if not p.strip():
                raise ValueError("an empty pattern would match nothing; remove it")
        return v

    @model_validator(mode="after")
    def _targets(self) -> EvictOptions:
        if self.target_pct > self.trigger_pct:
            raise ValueError(f"target_pct ({self.target_pct:g}) must not exceed trigger_pct ({self.trigger_pct:g})")
        if self.keys_target is not None and self.keys_target > self.max_keys:
            raise ValueError(f"keys_target ({self.keys_target}) must not exceed max_keys ({self.max_keys})")
        return self

    def effective_keys_target(self) -> int:
        return self.keys_target if self.keys_target is not None else int(self.max_keys * 0.9)


# -- reading the server ---------------------------------------------------------------------

@dataclass
class Usage:
    used: int
    maxmemory: int
    keys: int

    @property
    def pct(self) -> float | None:
        return 100.0 * self.used / self.maxmemory if self.maxmemory else None


def read_usage(client: redis.Redis) -> Usage:
    mem = client.info("memory")
    return Usage(used=int(mem["used_memory"]), maxmemory=int(mem.get("maxmemory", 0) or 0), keys=int(client.dbsize()))


def scan_batches(client: redis.Redis, match: str | None, count: int, limit: int | None = None) -> Iterator[list[bytes]]:
    """SCAN the selected database in batches (``limit``: stop after about this many keys)."""
    cursor, seen = 0, 0
    while True:
        cursor, keys = client.scan(cursor=cursor, match=match, count=count)
        if keys:
            yield [k if isinstance(k, bytes) else k.encode() for k in keys]
            seen += len(keys)
        if cursor == 0 or (limit is not None and seen >= limit):
            return


#: One round trip per batch: OBJECT IDLETIME/FREQ and MEMORY USAGE of every key, computed by the server.
#: Neither command touches the key (both look keys up without updating their LRU/LFU data).
KEY_PROBE_LUA = """
local mode, withmem = ARGV[1], ARGV[2] == '1'
local out = {}
for i, k in ipairs(KEYS) do
  local score, mem = -1, -1
  if mode ~= 'none' then
    local r = redis.pcall('OBJECT', mode, k)
    if type(r) == 'table' and r.err then return redis.error_reply(r.err) end
    if r then score = r end
  end
  if withmem then
    local m = redis.pcall('MEMORY', 'USAGE', k)
    if type(m) == 'table' and m.err then return redis.error_reply(m.err) end
    if m then mem = m end
  end
  out[2 * i - 1] = score
  out[2 * i] = mem
end
return out
"""


class LfuPolicy(Exception):
    """OBJECT IDLETIME is refused under an LFU maxmemory policy: rank by OBJECT FREQ instead."""


class KeyProbe:
    """Idle time (or access frequency) and memory of many keys, a batch per round trip.

    Uses a read-only server-side script; where scripting is not allowed (ACL, renamed
    EVAL) it falls back to pipelined commands, same answers, more client work.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.script: Any = client.register_script(KEY_PROBE_LUA)
        self.use_script = True

    def probe(self, keys: list[bytes], mode: str, with_mem: bool) -> list[tuple[int | None, int | None]]:
        """For each key (score or None, bytes or None); None: the key is gone.  ``mode``: idletime|freq|none."""
        if not keys:
            return []
        if self.use_script:
            try:
                flat = self.script(keys=keys, args=[mode, "1" if with_mem else "0"])
                return [(None if flat[i] < 0 else int(flat[i]), None if flat[i + 1] < 0 else int(flat[i + 1]))
                        for i in range(0, len(flat), 2)]
            except redis.ResponseError as exc:
                if "LFU" in str(exc):
                    raise LfuPolicy(str(exc)) from None
                if "MEMORY" in str(exc).upper() and "NOPERM" not in str(exc).upper():
                    raise
                self.use_script = False  # scripting refused here: pipelines from now on
        pipe = self.client.pipeline(transaction=False)
        for k in keys:
            if mode != "none":
                pipe.object(mode, k)
            if with_mem:
                pipe.memory_usage(k)
        replies = iter(pipe.execute(raise_on_error=False))
        out: list[tuple[int | None, int | None]] = []
        for _ in keys:
            score = mem = None
            if mode != "none":
                r = next(replies)
                if isinstance(r, redis.ResponseError):
                    if "LFU" in str(r):
                        raise LfuPolicy(str(r))
                    raise r
                score = None if r is None else int(r)
            if with_mem:
                m = next(replies)
                if isinstance(m, redis.ResponseError):
                    raise m
                mem = None if m is None else int(m)
            out.append((score, mem))
        return out


# -- the prefix report ------------------------------------------------------------------------

def prefix_of(key: bytes, sep: bytes, depth: int) -> str:
    parts = key.split(sep, depth)
    if len(parts) <= depth:
        return NO_PREFIX if len(parts) == 1 else key_text(sep.join(parts[:-1]) + sep)
    return key_text(sep.join(parts[:depth]) + sep)


@dataclass
class PrefixStat:
    prefix: str
    sampled: int = 0
    bytes: int = 0
    expendable: int = 0


def prefix_report(client: redis.Redis, probe: KeyProbe, opts: EvictOptions, total_keys: int) -> list[dict[str, Any]]:
    """Top prefixes by memory, measured on a SCAN sample and scaled to ``total_keys``.

    SCAN walks the hash table's buckets, so its first keys are a fair sample of the key space.
    """
    stats: dict[str, PrefixStat] = {}
    sep = opts.prefix_separator.encode()
    for batch in scan_batches(client, None, min(1000, max(10, opts.sample_keys)), opts.sample_keys):
        for k, (_, size) in zip(batch, probe.probe(batch, "none", True), strict=True):
            if size is None:  # vanished meanwhile
                continue
            st = stats.setdefault(prefix_of(k, sep, opts.prefix_depth), PrefixStat(prefix_of(k, sep, opts.prefix_depth)))
            st.sampled += 1
            st.bytes += size
            if any(matcher(p)(k) for p in opts.patterns):
                st.expendable += 1
    if not stats:
        return []
    measured = sum(s.sampled for s in stats.values())
    scale = total_keys / measured if measured else 0.0
    total_bytes = sum(s.bytes for s in stats.values()) or 1
    rows = sorted(stats.values(), key=lambda s: -s.bytes)[: opts.top_prefixes]
    return [
        {
            "prefix": s.prefix,
            "sampled_keys": s.sampled,
            "est_keys": round(s.sampled * scale),
            "est_bytes": round(s.bytes * scale),
            "share_pct": round(100.0 * s.bytes / total_bytes, 1),
            "expendable": s.expendable == s.sampled,
        }
        for s in rows
    ]


# -- choosing and deleting ------------------------------------------------------------------

@dataclass
class Candidates:
    """The ``limit`` best eviction candidates: highest score first (score = idle s, or -freq under LFU)."""

    limit: int
    heap: list[tuple[int, bytes]] = field(default_factory=list)
    seen: int = 0

    def offer(self, score: int, key: bytes) -> None:
        self.seen += 1
        if len(self.heap) < self.limit:
            heapq.heappush(self.heap, (score, key))
        elif score > self.heap[0][0]:
            heapq.heapreplace(self.heap, (score, key))

    def ordered(self) -> list[tuple[int, bytes]]:
        return sorted(self.heap, key=lambda t: (-t[0], t[1]))


def _score(raw: int | None, lfu: bool) -> int | None:
    """Higher = evict first: idle seconds, or minus the access frequency under LFU."""
    if raw is None:
        return None
    return -raw if lfu else raw


def collect(client: redis.Redis, probe: KeyProbe, opts: EvictOptions, lfu: bool) -> Candidates:
    cands = Candidates(opts.max_candidates)
    seen: set[bytes] = set()  # patterns may overlap: score each key once
    for pattern in opts.patterns:
        guard = matcher(pattern)
        for batch in scan_batches(client, pattern, opts.batch_size):
            keys = [k for k in batch if guard(k)]  # the second guard
            if len(opts.patterns) > 1:
                keys = [k for k in keys if k not in seen]
                seen.update(keys)
            mode = "freq" if lfu else "idletime"
            for k, (raw, _) in zip(keys, probe.probe(keys, mode, False), strict=True):
                score = _score(raw, lfu)
                if score is not None:
                    cands.offer(score, k)
    return cands


@dataclass
class Progress:
    deleted: int = 0
    est_freed: int = 0
    skipped_touched: int = 0
    passes: int = 0
    oldest_idle: int | None = None
    newest_idle: int | None = None
    would_delete: int = 0
    would_free: int = 0


def needs(u: Usage, opts: EvictOptions, mem_active: bool, keys_active: bool) -> tuple[int, int]:
    """(bytes still to free, keys still to delete) to get strictly below the memory target."""
    need_b = 0
    if mem_active and u.maxmemory:
        need_b = max(0, u.used - int(u.maxmemory * opts.target_pct / 100) + 1)
    need_k = max(0, u.keys - opts.effective_keys_target()) if keys_active else 0
    return need_b, need_k


def evict(client: redis.Redis, probe: KeyProbe, opts: EvictOptions, dry_run: bool, mem_active: bool, keys_active: bool,
          log: Any, progress: Any) -> tuple[Progress, Usage, bool]:
    """Delete longest-idle expendable keys until below target. Returns (progress, final usage, LFU used)."""
    prog = Progress()
    lfu = False
    usage = read_usage(client)
    need_b, need_k = needs(usage, opts, mem_active, keys_active)
    while (need_b > 0 or need_k > 0) and prog.passes < opts.max_passes:
        prog.passes += 1
        try:
            cands = collect(client, probe, opts, lfu)
        except LfuPolicy:
            lfu = True
            log.info("LFU maxmemory policy: ranking by OBJECT FREQ (least frequently used first)")
            cands = collect(client, probe, opts, lfu)
        ordered = cands.ordered()
        log.info("pass %d: %d expendable key(s) scanned, %d candidate(s)", prog.passes, cands.seen, len(ordered))
        if not ordered:
            break
        freed_this_pass = 0
        pos = 0
        while pos < len(ordered) and (need_b > 0 or need_k > 0):
            window = ordered[pos : pos + opts.batch_size]
            keys = [k for _, k in window]
            measured = probe.probe(keys, "freq" if lfu else "idletime", True)
            # walk the window in order, taking keys until the targets are met
            take: list[tuple[bytes, int, int]] = []
            b, n = need_b, need_k
            examined = 0
            for (score, k), (raw, size) in zip(window, measured, strict=True):
                if b <= 0 and n <= 0:
                    break
                examined += 1
                now_score = _score(raw, lfu)
                if now_score is None or size is None:
                    continue  # gone meanwhile
                if now_score < score:
                    prog.skipped_touched += 1  # read or written since we measured it: no longer idle
                    continue
                if not any(matcher(p)(k) for p in opts.patterns):  # never reached; belt and braces
                    continue
                take.append((k, size, score))
                b -= size
                n -= 1
            pos += examined
            if not take:
                continue
            for _, _, score in take:
                idle = -score if lfu else score
                prog.oldest_idle = idle if prog.oldest_idle is None else max(prog.oldest_idle, idle)
                prog.newest_idle = idle if prog.newest_idle is None else min(prog.newest_idle, idle)
            if dry_run:
                prog.would_delete += len(take)
                prog.would_free += sum(s for _, s, _ in take)
                need_b, need_k = b, n
                continue
            names = [k for k, _, _ in take]
            removed = int(client.unlink(*names) if opts.unlink else client.delete(*names))
            prog.deleted += removed
            prog.est_freed += sum(s for _, s, _ in take)
            freed_this_pass += removed
            usage = read_usage(client)
            need_b, need_k = needs(usage, opts, mem_active, keys_active)
            progress(f"deleted {prog.deleted} keys, memory {human_bytes(usage.used)}", None)
        if dry_run:
            break  # a dry run cannot observe the effect of deletions: one pass is the honest estimate
        if freed_this_pass == 0:
            break
        if need_b > 0 and prog.est_freed and usage.used > 0:
            time.sleep(0.05)  # let lazy freeing (UNLINK) catch up before re-reading
            usage = read_usage(client)
            need_b, need_k = needs(usage, opts, mem_active, keys_active)
    return prog, usage, lfu


@task
class RedisEvict(Task[EvictOptions]):
    """Delete the longest-idle keys of expendable patterns when memory or key count is too high."""

    name = "redis.evict"
    summary = "above 80 % memory or the key limit: delete longest-idle keys of expendable patterns to a target"
    target_kinds = ("redis",)
    Options = EvictOptions
    category = "maintenance"
    default_timeout = 900

    def run(self, ctx: TaskContext, options: EvictOptions) -> Result:
        target = ctx.require_target()
        assert isinstance(target, RedisTarget)
        dry = ctx.dry_run or options.dry_run
        subject = target.display()
        findings: list[Finding] = []
        try:
            with connect(target) as client:
                before = read_usage(client)
                probe = KeyProbe(client)
                prefixes: list[dict[str, Any]] = []
                if options.sample_keys:
                    try:
                        prefixes = prefix_report(client, probe, options, before.keys)
                    except redis.RedisError as exc:  # MEMORY USAGE may be refused by ACLs
                        findings.append(Finding("redis.check_failed", Severity.WARNING, f"{subject} prefixes",
                                                f"the prefix report failed: {describe_redis_error(exc)}",
                                                "grant the MEMORY command to upkeeper's Redis user"))
                mem_active = before.pct is not None and before.pct > options.trigger_pct
                keys_active = before.keys > options.max_keys
                prog: Progress | None = None
                after = before
                lfu = False
                replication = client.info("replication") if (mem_active or keys_active) and options.patterns else {}
                replica_of = (f"{replication.get('master_host')}:{replication.get('master_port')}"
                              if replication.get("role") == "slave" else None)
                if (mem_active or keys_active) and options.patterns and replica_of is None:
                    prog, after, lfu = evict(client, probe, options, dry, mem_active, keys_active, ctx.log, ctx.progress)
        except TaskError as exc:
            return unreachable(target, exc)

        metrics: dict[str, float] = {
            "used_memory_before_bytes": float(before.used), "used_memory_after_bytes": float(after.used),
            "keys_before": float(before.keys), "keys_after": float(after.keys),
        }
        if before.pct is not None:
            metrics["memory_used_before_pct"] = before.pct  # unrounded: 59.9996 must not read as 60.0
        if after.pct is not None:
            metrics["memory_used_after_pct"] = after.pct
        state = _describe(before, options)
        artifacts: list[dict[str, Any]] = []
        if prefixes:
            artifacts.append({"kind": "redis_prefixes", "sampled": sum(p["sampled_keys"] for p in prefixes),
                              "prefixes": prefixes})
        top = ", ".join(f"{p['prefix']} ~{human_bytes(p['est_bytes'])}" for p in prefixes[:3])
        tail = f"; top prefixes: {top}" if top else ""

        if not (mem_active or keys_active):
            return Result(summary=f"{state}: below the trigger, nothing to evict{tail}", findings=findings,
                          metrics=metrics, artifacts=artifacts)
        if not options.patterns:
            findings.append(Finding(
                "redis.evict_no_patterns", Severity.WARNING, subject,
                f"{state}, above the trigger, but no expendable patterns are configured",
                "list the key patterns that may be deleted (e.g. patterns: ['cache:*']) in the job's options",
                value=round(before.pct or 0, 2), threshold=options.trigger_pct, data={"prefixes": prefixes},
            ))
            return Result(summary=f"{state}: above the trigger, no expendable patterns configured{tail}",
                          findings=findings, metrics=metrics, artifacts=artifacts)
        if replica_of is not None:  # read-only: its keys go when the primary deletes them
            findings.append(Finding(
                "redis.evict_replica", Severity.WARNING, subject,
                f"{state}, above the trigger, but this server is a read-only replica of {replica_of}: nothing can "
                "be deleted here", f"point the job at the primary ({replica_of}); the replica follows its deletions",
                value=round(before.pct or 0, 2), threshold=options.trigger_pct, data={"primary": replica_of}))
            return Result(summary=f"{state}: above the trigger, but a replica (read-only): nothing deleted{tail}",
                          findings=findings, metrics=metrics, artifacts=artifacts)
        assert prog is not None
        rank = "least frequently used" if lfu else "longest idle"
        idle = ""
        if prog.oldest_idle is not None and not lfu:
            idle = f", idle {human_duration(prog.newest_idle)}–{human_duration(prog.oldest_idle)}"
        metrics.update({"deleted_keys": float(prog.deleted), "est_freed_bytes": float(prog.est_freed),
                        "skipped_touched": float(prog.skipped_touched), "passes": float(prog.passes)})
        if dry:
            metrics.update({"would_delete_keys": float(prog.would_delete), "would_free_bytes": float(prog.would_free)})
            need_b, need_k = needs(before, options, mem_active, keys_active)
            short = prog.would_free < need_b or prog.would_delete < need_k
            summary = (f"dry run: {state}; would delete {prog.would_delete} {rank} key(s) matching "
                       f"{', '.join(options.patterns)} (~{human_bytes(prog.would_free)}{idle})")
            if short:
                findings.append(Finding(
                    "redis.evict_insufficient", Severity.WARNING, subject,
                    f"the expendable keys ({prog.would_delete}, ~{human_bytes(prog.would_free)}) are not enough "
                    f"to reach the target ({human_bytes(need_b)} / {need_k} keys needed)",
                    "add expendable patterns, raise maxmemory, or find what else grows (see the prefix report)",
                ))
            return Result(summary=summary + tail, findings=findings, metrics=metrics, artifacts=artifacts)
        need_b, need_k = needs(after, options, mem_active, keys_active)
        summary = (f"{state} → {_describe(after, options)}: deleted {prog.deleted} {rank} key(s) matching "
                   f"{', '.join(options.patterns)} (~{human_bytes(prog.est_freed)}{idle})")
        if prog.skipped_touched:
            summary += f"; {prog.skipped_touched} skipped (used meanwhile)"
        artifacts.append({"kind": "redis_eviction", "deleted": prog.deleted, "est_freed_bytes": prog.est_freed,
                          "patterns": list(options.patterns), "ranking": rank})
        if need_b > 0 or need_k > 0:
            findings.append(Finding(
                "redis.evict_insufficient", Severity.WARNING, subject,
                f"after deleting {prog.deleted} expendable key(s), {_describe(after, options)} is still above the "
                f"target ({options.target_pct:g}% / {options.effective_keys_target()} keys)",
                "add expendable patterns, raise maxmemory, or find what else grows (see the prefix report)",
                value=round(after.pct or 0, 2), threshold=options.target_pct, data={"keys": after.keys},
            ))
        return Result(summary=summary + tail, findings=findings, metrics=metrics, artifacts=artifacts)


def _describe(u: Usage, opts: EvictOptions) -> str:
    mem = f"memory {human_bytes(u.used)}"
    if u.pct is not None:
        mem += f" ({u.pct:.0f}% of maxmemory)"
    else:
        mem += " (no maxmemory)"
    return f"{mem}, {u.keys} keys"
