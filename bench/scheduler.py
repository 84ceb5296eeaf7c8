"""Scheduler benchmark: one daemon, 10,000 jobs of mixed cron expressions, a no-op task.

Phase 1 (simulated time): the daemon's tick loop driven by a SimClock over
``--sim-hours`` with the inline executor — how long the scheduler itself takes
per due instant and per occurrence.

Phase 2 (real time): ``upkeeper daemon`` as a subprocess with its real worker
pool for ``--real-minutes``: fire lateness (run start minus due time, from
history) p50/p99, CPU while idle between fires, resident memory.

Goals (issue 2): p99 lateness < 1 s, idle CPU < 1 %, RSS < 150 MB.
Results: bench/results/scheduler.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from upkeeper.config.loader import load_config  # noqa: E402
from upkeeper.core.daemon import Daemon, SimClock  # noqa: E402
from upkeeper.core.executor import InlineExecutor  # noqa: E402
from upkeeper.core.history import History  # noqa: E402
from upkeeper.core.jobs import build_setup  # noqa: E402
from upkeeper.core.runner import Runner  # noqa: E402


def job_mix(n: int, seed: int = 7) -> dict[str, dict[str, Any]]:
    """A fleet-like mix: mostly hourly/daily, some every-5-minutes, a few every minute."""
    rng = random.Random(seed)
    zones = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney"]
    jobs: dict[str, dict[str, Any]] = {}
    for i in range(n):
        r = rng.random()
        if r < 0.01:
            sched = "* * * * *"
        elif r < 0.11:
            sched = f"{rng.randrange(5)}-59/5 * * * *"
        elif r < 0.21:
            sched = f"every {rng.choice([10, 15, 30])}m"
        elif r < 0.60:
            sched = f"{rng.randrange(60)} * * * *"
        elif r < 0.90:
            sched = f"{rng.randrange(60)} {rng.randrange(24)} * * *"
        elif r < 0.97:
            sched = f"{rng.randrange(60)} {rng.randrange(24)} * * {rng.randrange(7)}"
        else:
            sched = f"{rng.randrange(60)} {rng.randrange(24)} {rng.randrange(1, 29)} * *"
        job: dict[str, Any] = {"task": "debug.noop", "schedule": sched}
        if not sched.startswith("every"):
            job["timezone"] = rng.choice(zones)
        jobs[f"job-{i:05d}"] = job
    return jobs


def write_config(d: Path, n: int, concurrency: int) -> Path:
    from ruamel.yaml import YAML

    cfg = {
        "version": 1,
        "history": str(d / "history.db"),
        "defaults": {"timeout": "1m", "retries": 0},
        "daemon": {"concurrency": concurrency, "shutdown_grace": "10s", "worker_max_runs": 100000},
        "jobs": job_mix(n),
    }
    path = d / "upkeeper.yaml"
    with open(path, "w") as fh:
        YAML().dump(cfg, fh)
    return path


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def simulated(cfg_path: Path, hours: float) -> dict[str, Any]:
    setup = build_setup(load_config(cfg_path))
    url = f"sqlite:///{cfg_path.parent / 'sim.db'}"
    history = History(url)
    start = datetime(2026, 3, 28, 22, 0, tzinfo=UTC)  # crosses the Europe/Berlin DST change
    clock = SimClock(start)
    runner = Runner(setup=setup, history=history, executor=InlineExecutor(clock=clock.now, history=history),
                    owner="bench:1:1", node="bench", clock=clock.now, history_url=url)
    daemon = Daemon(setup, history, runner, clock=clock, instance="bench:1:1",
                    pending_poll=timedelta(minutes=1), housekeeping=timedelta(hours=1))
    t0 = time.perf_counter()
    daemon.prepare()
    prepare_s = time.perf_counter() - t0
    end = start + timedelta(hours=hours)
    steps = 0
    occurrences = 0
    per_step: list[float] = []
    busy = 0.0
    while daemon._heap and daemon._heap[0].due_at <= end:
        clock.set(daemon._heap[0].due_at)
        s0 = time.perf_counter()
        rep = daemon.tick()
        daemon.wait_idle(600)
        dt = time.perf_counter() - s0
        busy += dt
        per_step.append(dt)
        steps += 1
        occurrences += len(rep.claimed)
    daemon.pool.shutdown(wait=True)
    history.close()
    return {
        "simulated_hours": hours,
        "prepare_seconds_for_all_jobs": round(prepare_s, 3),
        "due_instants": steps,
        "occurrences_run": occurrences,
        "wall_seconds": round(busy, 2),
        "occurrences_per_second": round(occurrences / busy, 1) if busy else None,
        "per_instant_seconds_p50": round(pct(per_step, 50), 4),
        "per_instant_seconds_p99": round(pct(per_step, 99), 4),
    }


def real(cfg_path: Path, minutes: float) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    log = open(cfg_path.parent / "daemon.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "upkeeper", "--config", str(cfg_path), "daemon",
                             "--log-level", "WARNING"], stdout=log, stderr=log, env=env)
    daemon = psutil.Process(proc.pid)
    samples: list[tuple[float, float, float, float, float]] = []  # (t, daemon cpu, workers cpu, rss, rss_workers)
    started = time.time()
    deadline = started + minutes * 60
    try:
        while time.time() < deadline and proc.poll() is None:
            try:
                kids = daemon.children(recursive=True)
                dc = daemon.cpu_times()
                wcpu = 0.0
                wrss = 0.0
                for k in kids:
                    try:
                        c = k.cpu_times()
                        wcpu += c.user + c.system
                        wrss += k.memory_info().rss
                    except psutil.Error:
                        pass
                samples.append((time.time(), dc.user + dc.system, wcpu, daemon.memory_info().rss, wrss))
            except psutil.Error:
                break
            time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        log.close()
    history = History(f"sqlite:///{cfg_path.parent / 'history.db'}", migrate=False)
    from sqlalchemy import select

    from upkeeper.core.models import RunRow

    with history.session() as s:
        rows = s.execute(select(RunRow.due_at, RunRow.started_at, RunRow.status, RunRow.trigger)
                         .where(RunRow.started_at.is_not(None))).all()
    history.close()
    late = [(st - due).total_seconds() for due, st, status, trig in rows
            if trig == "schedule" and due is not None and st is not None]
    statuses: dict[str, int] = {}
    for _d, _s, status, _t in rows:
        statuses[status] = statuses.get(status, 0) + 1
    # idle CPU: CPU used by the daemon process between second 15 and 55 of each minute (cron fires at :00)
    idle_cpu = 0.0
    idle_wall = 0.0
    for (t1, c1, _w1, _r1, _x1), (t2, c2, _w2, _r2, _x2) in zip(samples, samples[1:], strict=False):
        a, b = datetime.fromtimestamp(t1, UTC), datetime.fromtimestamp(t2, UTC)
        # both samples inside [15 s, 55 s] of the SAME minute (a pair across :00 holds the fire burst),
        # and not the first minute, when the daemon loads the config and plans 10k schedules
        same_minute = a.replace(second=0, microsecond=0) == b.replace(second=0, microsecond=0)
        if t1 - started >= 60 and same_minute and a.second >= 15 and b.second <= 55 and t2 > t1:
            idle_cpu += c2 - c1
            idle_wall += t2 - t1
    total_wall = samples[-1][0] - samples[0][0] if len(samples) > 1 else 0.0
    return {
        "real_minutes": minutes,
        "runs_started": len(rows),
        "statuses": statuses,
        "lateness_seconds_p50": round(pct(late, 50), 3),
        "lateness_seconds_p99": round(pct(late, 99), 3),
        "lateness_seconds_max": round(max(late), 3) if late else None,
        "idle_cpu_percent_daemon": round(100 * idle_cpu / idle_wall, 3) if idle_wall else None,
        "avg_cpu_percent_daemon": round(100 * (samples[-1][1] - samples[0][1]) / total_wall, 2) if total_wall else None,
        "avg_cpu_percent_workers": round(100 * (samples[-1][2] - samples[0][2]) / total_wall, 2) if total_wall else None,
        "rss_mb_daemon_max": round(max(s[3] for s in samples) / 2**20, 1) if samples else None,
        "rss_mb_workers_max": round(max(s[4] for s in samples) / 2**20, 1) if samples else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=10000)
    ap.add_argument("--sim-hours", type=float, default=2.0)
    ap.add_argument("--real-minutes", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=4)
    args = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="upk-bench-sched-"))
    cfg = write_config(d, args.jobs, args.concurrency)
    result: dict[str, Any] = {"jobs": args.jobs, "concurrency": args.concurrency, "date": datetime.now(UTC).isoformat()}
    print(f"== simulated: {args.jobs} jobs over {args.sim_hours} h", flush=True)
    result["simulated"] = simulated(cfg, args.sim_hours)
    print(json.dumps(result["simulated"], indent=2), flush=True)
    if args.real_minutes > 0:
        print(f"== real: upkeeper daemon for {args.real_minutes} min", flush=True)
        result["real"] = real(cfg, args.real_minutes)
        print(json.dumps(result["real"], indent=2), flush=True)
    out = ROOT / "bench" / "results" / "scheduler.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
