"""files.backup benchmark: peak memory and files/second of ``upkeeper run`` on a tree of many small files,
side by side with the shell expert's ``tar -cf - TREE | zstd -3 -T0 | age -r KEY > file``.

The tree (default 200,000 files of 50 B – 8 KiB of text, 100 per directory, three levels deep, like an
uploads directory or a node_modules tree) is generated once under /tmp and reused (``--tree`` to choose where).
In one run:

  (a) tar -cf - TREE | zstd -3 -T0 | age -r KEY > file     — the anchor (wired without a shell)
  (c) upkeeper run files-backup → local storage, zstd 3 + age: wall time, the task's own time, and the peak
      RSS of the largest process (GNU time's %M, which covers the worker process)
  (e) upkeeper backups verify of (c) (--verify): every file hashed from the archive and compared

  (b) with --baseline-src DIR: (c) run from another checkout's src (e.g. a worktree of an older commit)

(a), (c) (and (b)) alternate --repeat times (default 3); their medians are compared (this 2-core VM's speed
drifts with what else runs: compare numbers of one run only).  Goals: the peak RSS of (c) not growing by
kilobytes a file (it took 754 MiB for 200,000 files); (c) as near (a) as per-file work in Python allows.
Writes bench/results/files_backup.json.  Usage: python bench/files_backup.py [--files N] [--repeat N] [--verify] [--baseline-src DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _lib import pipeline

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "files_backup.json"
PER_DIR = 100
FANOUT = 20


def make_tree(tree: Path, n: int) -> dict[str, Any]:
    """``n`` files, ``PER_DIR`` a directory, under ``FANOUT`` top directories; reused when already there."""
    marker = tree / ".bench-tree.json"
    if marker.exists():
        info: dict[str, Any] = json.loads(marker.read_text())
        if info.get("files") == n:
            return info
        shutil.rmtree(tree)
    rnd = random.Random(42)
    words = [("".join(rnd.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rnd.randint(2, 10))))
             for _ in range(2000)]
    text = " ".join(rnd.choice(words) + ("\n" if rnd.random() < 0.1 else "") for _ in range(40000)).encode()
    tmp = tree.with_name(tree.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    total = 0
    for i in range(n):
        d = tmp / f"d{i // PER_DIR % FANOUT:02d}" / f"s{i // (PER_DIR * FANOUT):04d}"
        if i % PER_DIR == 0:
            d.mkdir(parents=True, exist_ok=True)
        size = min(8192, int(rnd.lognormvariate(6.5, 1.0)) + 50)
        off = rnd.randrange(0, len(text) - size)
        (d / f"f{i:07d}.txt").write_bytes(text[off:off + size])
        total += size
    info = {"files": n, "bytes": total, "dirs": sum(1 for _ in tmp.rglob("*") if _.is_dir()) + 1}
    (tmp / ".bench-tree.json").write_text(json.dumps(info))
    tmp.rename(tree)
    return info


def timed_rss(argv: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS in KiB (the largest process of the tree, as GNU time reports it), stdout."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        t0 = time.monotonic()
        p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", tf.name, *argv], capture_output=True, text=True,
                           env=env)
        wall = time.monotonic() - t0
        if p.returncode != 0:
            raise RuntimeError(f"{argv!r} failed: {p.stderr[-2000:]}")
        rss = int(tf.read().strip().splitlines()[-1])
    return wall, rss, p.stdout


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=200_000)
    ap.add_argument("--tree", type=Path, default=None, help="where the tree is (made if missing)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of (a) and (c) each, alternating; medians count")
    ap.add_argument("--verify", action="store_true", help="also time 'upkeeper backups verify' of (c)")
    ap.add_argument("--baseline-src", type=Path, default=None,
                    help="also run upkeeper from this src directory (another checkout), alternating")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    tree = args.tree or Path(f"/tmp/upk-bench-files-{args.files}")
    print(f"== tree {tree} ({args.files} files)", flush=True)
    t0 = time.monotonic()
    info = make_tree(tree, args.files)
    print(f"   ready in {time.monotonic() - t0:.1f}s: {info}", flush=True)
    base = Path(tempfile.mkdtemp(prefix="upk-bench-files-", dir="/tmp"))
    results: dict[str, Any] = {"tree": info, "machine": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()[0]}}
    try:
        subprocess.run(["age-keygen", "-o", str(base / "key.txt")], check=True, capture_output=True)
        recipient = subprocess.run(["age-keygen", "-y", str(base / "key.txt")], check=True, capture_output=True,
                                   text=True).stdout.strip()
        store = base / "store"
        store.mkdir()
        cfg = base / "upkeeper.yaml"
        config = {
            "history": str(base / "history.db"),
            "storages": {"local": {"kind": "local", "path": str(store), "fsync": False}},
            "backup": {"encryption": {"recipients": [recipient], "identity_file": str(base / "key.txt")},
                       "retention": {"keep_last": 1}},
            "jobs": {"files-backup": {"task": "files.backup", "options": {"paths": [str(tree)]}},
                     # a series of its own: the retention of one never reads or deletes the other's sets
                     "files-backup-b": {"task": "files.backup", "options": {"paths": [str(tree)], "set": "baseline"}},
                     "noop": {"task": "debug.noop"}},
        }
        cfg.write_text(json.dumps(config))
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        upk = [sys.executable, "-m", "upkeeper", "--config", str(cfg)]
        subprocess.run([*upk, "run", "noop"], check=True, capture_output=True, env=env)  # creates the history
        # the baseline has a history of its own: an older upkeeper refuses a database a newer one migrated
        cfg_b = base / "upkeeper-baseline.yaml"
        cfg_b.write_text(json.dumps({**config, "history": str(base / "history-baseline.db")}))
        upk_b = [sys.executable, "-m", "upkeeper", "--config", str(cfg_b)]
        env_b = {**env, "PYTHONPATH": str(args.baseline_src)}
        if args.baseline_src:
            subprocess.run([*upk_b, "run", "noop"], check=True, capture_output=True, env=env_b)
        anchor = [["tar", "-cf", "-", "-C", str(tree.parent), tree.name], ["zstd", "-3", "-T0", "-q"],
                  ["age", "-r", recipient]]
        a_file = base / "a.tar.zst.age"
        pipeline(anchor, a_file)  # warms the page cache, so that both read from memory alike
        samples: dict[str, list[float]] = {"a": [], "c": [], "c_task": [], "c_rss_kib": [], "b": [], "b_rss_kib": []}
        run: dict[str, Any] = {}
        for i in range(args.repeat):
            print(f"== (a) tar | zstd -3 -T0 | age   [{i + 1}/{args.repeat}]", flush=True)
            samples["a"].append(pipeline(anchor, a_file))
            print(f"== (c) upkeeper run files-backup   [{i + 1}/{args.repeat}]", flush=True)
            wall, rss, out = timed_rss([*upk, "run", "files-backup", "--json"], env)
            run = json.loads(out)[0]
            assert run["status"] == "ok", run
            samples["c"].append(wall)
            samples["c_rss_kib"].append(rss)
            samples["c_task"].append(run.get("duration", wall))
            print(f"   (a) {samples['a'][-1]:.1f}s   (c) {wall:.1f}s, peak RSS {rss / 1024:.0f} MiB", flush=True)
            if args.baseline_src:
                print(f"== (b) upkeeper run files-backup from {args.baseline_src}   [{i + 1}/{args.repeat}]", flush=True)
                wall, rss, out = timed_rss([*upk_b, "run", "files-backup-b", "--json"], env_b)
                assert json.loads(out)[0]["status"] == "ok", out
                samples["b"].append(wall)
                samples["b_rss_kib"].append(rss)
                print(f"   (b) {wall:.1f}s, peak RSS {rss / 1024:.0f} MiB", flush=True)
        r = results
        r["samples"] = {k: [round(v, 3) for v in vals] for k, vals in samples.items()}
        r["a_seconds"] = statistics.median(samples["a"])
        r["a_bytes"] = a_file.stat().st_size
        r["c_seconds"] = statistics.median(samples["c"])
        r["c_task_seconds"] = statistics.median(samples["c_task"])
        r["c_peak_rss_mib"] = round(max(samples["c_rss_kib"]) / 1024, 1)
        r["c_bytes"] = int(run["metrics"].get("backup.size_bytes", 0))
        manifests = list((store / "host" / "files").rglob("manifest.json"))
        r["manifest_bytes"] = max(p.stat().st_size for p in manifests)
        r["c_files_per_second"] = round(info["files"] / r["c_seconds"])
        r["a_files_per_second"] = round(info["files"] / r["a_seconds"])
        if args.baseline_src:
            r["baseline_src"] = str(args.baseline_src)
            r["b_seconds"] = statistics.median(samples["b"])
            r["b_peak_rss_mib"] = round(max(samples["b_rss_kib"]) / 1024, 1)
            r["b_files_per_second"] = round(info["files"] / r["b_seconds"])
        if args.verify:
            print("== (e) upkeeper backups verify", flush=True)
            wall, rss, out = timed_rss([*upk, "backups", "verify", run["artifacts"][0]["id"], "--json"], env)
            rep = json.loads(out)[0]
            assert rep["ok"], rep
            r["e_seconds"] = round(wall, 3)
            r["e_peak_rss_mib"] = round(rss / 1024, 1)
        r["machine"]["loadavg_end"] = os.getloadavg()[0]
        r["ratios"] = {"c_over_a_time": round(r["c_seconds"] / r["a_seconds"], 3),
                       "c_over_a_size": round(r["c_bytes"] / r["a_bytes"], 3)}
        if args.baseline_src:
            r["ratios"]["b_over_a_time"] = round(r["b_seconds"] / r["a_seconds"], 3)
            r["ratios"]["c_over_b_time"] = round(r["c_seconds"] / r["b_seconds"], 3)
            r["ratios"]["c_over_b_peak_rss"] = round(r["c_peak_rss_mib"] / r["b_peak_rss_mib"], 3)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(r, indent=2) + "\n")
        print(json.dumps(r, indent=2))
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
