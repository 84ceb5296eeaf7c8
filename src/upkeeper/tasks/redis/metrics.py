"""redis.metrics: one INFO snapshot every minute into history (memory, clients, ops, hit rate, lag)."""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

from upkeeper.config.targets import RedisTarget
from upkeeper.core.task import NoOptions, Result, Task, TaskContext, task
from upkeeper.errors import TaskError
from upkeeper.fmt import human_bytes
from upkeeper.tasks.redis._collect import base_metrics, take_snapshot
from upkeeper.tasks.redis._conn import connect
from upkeeper.tasks.redis.check import unreachable


@task
class RedisMetrics(Task[NoOptions]):
    """Sample a Redis server's INFO into the metrics history (kept 30 days)."""

    name = "redis.metrics"
    summary = "sample memory, clients, ops/s, hit rate, evictions and replica lag into history (kept 30 days)"
    target_kinds = ("redis",)
    category = "monitoring"
    default_timeout = 30
    #: read by the job resolver: this task's samples are kept 30 days unless the job says otherwise
    metrics_retention: ClassVar[timedelta] = timedelta(days=30)

    def run(self, ctx: TaskContext, options: NoOptions) -> Result:
        target = ctx.require_target()
        assert isinstance(target, RedisTarget)
        try:
            with connect(target) as client:
                snap = take_snapshot(client, ctx.state)
        except TaskError as exc:
            return unreachable(target, exc)
        m = base_metrics(snap)
        summary = (f"{human_bytes(m['used_memory_bytes'])} used ({m['memory_used_pct']:.0f}%), "
                   f"{m['keys']:.0f} keys, {m['connected_clients']:.0f} clients, {m['ops_per_sec']:.0f} ops/s")
        if "hit_rate_pct" in m:
            summary += f", hit rate {m['hit_rate_pct']:.0f}%"
        return Result(summary=summary, metrics=m)
