"""Log rotation under a fast writer: lines lost and time per rotation, logrotate beside upkeeper.

A real process (upkeeper.sandbox.app) appends numbered lines (one write per line,
O_APPEND) as fast as ``--rate``; the log is rotated ``--rotations`` times,
``--interval`` apart, by each contender; afterwards every number is looked for
across the live log and every rotated (compressed) copy.

Contenders: logrotate 3.x ``copytruncate``; logrotate with ``postrotate`` sending
USR1 (rename + reopen); upkeeper ``app.cleanup`` with copytruncate (writers paused
for the final copy), copytruncate without the pause (logrotate's behaviour), and
reopen (USR1).

Results: bench/results/app_rotation.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pydantic import TypeAdapter  # noqa: E402

from upkeeper.config.targets import TargetConfig  # noqa: E402
from upkeeper.core.task import REGISTRY, MemoryState, TaskContext  # noqa: E402
from upkeeper.sandbox.app import AppServer  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "app_rotation.json"

LOGROTATE_CONF = """{log} {{
    rotate 10000
    compress
    missingok
    notifempty
{extra}
}}
"""


def count_lines(log_dir: Path) -> Counter[int]:
    seen: Counter[int] = Counter()
    for p in log_dir.iterdir():
        if not p.name.startswith("app.log"):
            continue
        data = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
        for line in data.decode(errors="replace").splitlines():
            tail = line.rsplit(" ", 1)[-1]
            if tail.isdigit():
                seen[int(tail)] += 1
    return seen


def upkeeper_rotate(app: AppServer, method: str, freeze: bool) -> Any:
    cls = REGISTRY.get("app.cleanup")
    extra = {"reopen_signal": "USR1", "pid_file": str(app.pid_file)} if method == "reopen" else {}
    target = TypeAdapter(TargetConfig).validate_python(app.target(**extra))
    opts = cls.Options.model_validate({"rotate_size": 1, "rotate_method": method, "copytruncate_freeze": freeze})
    state = MemoryState()

    def rotate() -> dict[str, Any]:
        ctx = TaskContext(job="bench", task="app.cleanup", target=target, state=state, log=logging.getLogger("bench"))
        res = cls().run(ctx, opts)
        acts = [a for a in res.artifacts[0]["actions"] if a["action"] == "rotate"] if res.artifacts else []
        return {"paused_ms": acts[0].get("writers_paused_ms") if acts else None}

    return rotate


def logrotate_rotate(app: AppServer, method: str, work: Path) -> Any:
    extra = "    copytruncate" if method == "copytruncate" else (
        f"    create\n    postrotate\n        kill -USR1 $(cat {app.pid_file})\n    endscript")
    conf = work / f"logrotate-{method}.conf"
    conf.write_text(LOGROTATE_CONF.format(log=app.log, extra=extra))
    state = work / f"logrotate-{method}.state"
    binary = shutil.which("logrotate") or "/usr/sbin/logrotate"

    def rotate() -> dict[str, Any]:
        subprocess.run([binary, "-f", "-s", str(state), str(conf)], check=True, capture_output=True)
        return {}

    return rotate


def trial(name: str, make: Any, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    app = AppServer(work / name, rate=args.rate).start()
    rotate = make(app)
    times, paused = [], []
    try:
        for _ in range(args.rotations):
            time.sleep(args.interval)
            t0 = time.perf_counter()
            info = rotate()
            times.append((time.perf_counter() - t0) * 1000)
            if info.get("paused_ms") is not None:
                paused.append(info["paused_ms"])
        time.sleep(args.interval)
    finally:
        last = app.stop()
    seen = count_lines(app.log.parent)
    lost = len(set(range(1, last + 1)) - set(seen))
    dup = sum(c - 1 for c in seen.values() if c > 1)
    out = {"lines_written": last, "lines_lost": lost, "lines_duplicated": dup,
           "rotation_ms_p50": round(statistics.median(times), 2), "rotation_ms_max": round(max(times), 2)}
    if paused:
        out["writers_paused_ms_p50"] = round(statistics.median(paused), 3)
        out["writers_paused_ms_max"] = round(max(paused), 3)
    print(f"{name:34} lines {last:7}  lost {lost:5}  dup {dup:3}  rotation p50 {out['rotation_ms_p50']:7.1f} ms"
          + (f"  paused p50 {out['writers_paused_ms_p50']:.2f} ms" if paused else ""))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=20000, help="lines per second the app writes")
    ap.add_argument("--rotations", type=int, default=20)
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--repeat", type=int, default=3, help="trials per contender (lines lost are summed)")
    ap.add_argument("--only", default="", help="run only contenders whose name contains this text")
    args = ap.parse_args(argv)
    REGISTRY.load()
    work = Path(tempfile.mkdtemp(prefix="bench-rotation-", dir="/tmp"))
    contenders: dict[str, Any] = {
        "upkeeper copytruncate (paused)": lambda app: upkeeper_rotate(app, "copytruncate", True),
        "upkeeper copytruncate (no pause)": lambda app: upkeeper_rotate(app, "copytruncate", False),
        "upkeeper reopen (USR1)": lambda app: upkeeper_rotate(app, "reopen", True),
    }
    if shutil.which("logrotate") or Path("/usr/sbin/logrotate").exists():
        contenders["logrotate copytruncate"] = lambda app: logrotate_rotate(app, "copytruncate", work)
        contenders["logrotate create + postrotate USR1"] = lambda app: logrotate_rotate(app, "reopen", work)
    results: dict[str, Any] = {}
    for name, make in contenders.items():
        if args.only not in name:
            continue
        runs = [trial(f"{name}", make, args, work / f"r{i}") for i in range(args.repeat)]
        results[name] = {
            "lines_written": sum(r["lines_written"] for r in runs),
            "lines_lost": sum(r["lines_lost"] for r in runs),
            "lines_duplicated": sum(r["lines_duplicated"] for r in runs),
            "rotation_ms_p50": round(statistics.median(r["rotation_ms_p50"] for r in runs), 2),
            **({"writers_paused_ms_p50": round(statistics.median(r["writers_paused_ms_p50"] for r in runs), 3)}
               if "writers_paused_ms_p50" in runs[0] else {}),
            "trials": runs,
        }
    out = {"bench": "app_rotation", "rate": args.rate, "rotations_per_trial": args.rotations,
           "interval_s": args.interval, "trials": args.repeat, "results": results}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    print(f"results: {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
