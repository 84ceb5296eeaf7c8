"""Soak drill of ``upkeeper daemon``: resource use over many runs of real jobs (bounded; stops by itself).

Real services (sandbox): a PostgreSQL cluster with a tiny database, Redis, nginx whose access log grows
(a thread sends it requests), a local webhook receiver for notifications.  The daemon runs, on tight
``every Ns`` schedules (the scheduler takes intervals in seconds), postgres.backup and redis.backup (local
storage, age + zstd, retention keep_last) with backup.verify of each (a scratch database; a throw-away
redis-server), redis.check, logs.nginx (incremental, on the growing log, keep_reports 3), host.health, a
warning host.disk and a failing debug.fail (both notify the webhook; repeat_interval 5s re-notifies),
debug.noop, and a debug.sleep killed by its 2 s timeout with its child (its worker is replaced).

Every ``--sample`` seconds: RSS, open fds (by kind), threads and children of the daemon and of each worker,
zombies under the daemon, the history database's size (and its WAL), and what is left in the daemon's
private TMPDIR, in backup.work_dir and in /tmp (entries named upkeeper* made since the start: other users of
/tmp may add some).  After SIGTERM: the exit code and any process the daemon started that outlived it.
Printed at the end: the first and last samples and growth per finished run.  Results:
bench/results/soak_daemon.json.

    python bench/soak_daemon.py --minutes 6                      # workers live through the drill
    python bench/soak_daemon.py --minutes 4 --worker-max-runs 5  # workers are replaced all the time
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from _lib import drill_options, start_daemon, teardown  # noqa: E402

from upkeeper.sandbox.nginx import NginxServer  # noqa: E402
from upkeeper.sandbox.postgres import PostgresCluster  # noqa: E402
from upkeeper.sandbox.receivers import HttpReceiver  # noqa: E402
from upkeeper.sandbox.redis import RedisServer  # noqa: E402


def proc_info(p: psutil.Process) -> dict[str, Any]:
    with p.oneshot():
        return {"pid": p.pid, "rss_kb": p.memory_info().rss // 1024, "fds": p.num_fds(), "threads": p.num_threads(),
                "status": p.status(), "cmd": " ".join(p.cmdline()[:4])[-80:]}


def tree_entries(d: Path) -> int:
    try:
        return sum(1 for _ in d.iterdir())
    except OSError:
        return -1


def runs_finished(db: Path) -> dict[str, int]:
    if not db.exists():
        return {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return {s: n for s, n in con.execute("select status, count(*) from runs group by status")}
    except sqlite3.Error:
        return {}
    finally:
        con.close()


def fd_kinds(pid: int) -> dict[str, int]:
    """The process's open fds by kind (socket, pipe, anon_inode, or the file's top directory)."""
    out: dict[str, int] = {}
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for n in names:
        try:
            t = os.readlink(f"/proc/{pid}/fd/{n}")
        except OSError:
            continue
        kind = t.split(":", 1)[0] if ":" in t and not t.startswith("/") else t
        out[kind] = out.get(kind, 0) + 1
    return out


def sample(daemon: psutil.Process, work: Path, t0: float, tmp_before: set[str]) -> dict[str, Any]:
    kids = daemon.children(recursive=True)
    direct = daemon.children(recursive=False)
    workers = [k for k in direct if "upkeeper.core.worker" in " ".join(k.cmdline() or [])]
    zombies = []
    for k in kids:
        try:
            if k.status() == psutil.STATUS_ZOMBIE:
                zombies.append(k.pid)
        except psutil.NoSuchProcess:
            pass
    winfo = []
    for w in workers:
        try:
            winfo.append(proc_info(w))
        except psutil.Error:
            pass
    db = work / "history.db"
    size = sum(p.stat().st_size for p in work.glob("history.db*") if p.exists())
    tmp_new = sorted(n for n in os.listdir("/tmp") if n.startswith(("upkeeper", ".upkeeper")) and n not in tmp_before)
    runs = runs_finished(db)
    return {
        "t": round(time.monotonic() - t0, 1),
        "daemon": proc_info(daemon),
        "workers": winfo,
        "descendants": len(kids),
        "descendant_pids": [k.pid for k in kids],
        "zombies": zombies,
        "history_bytes": size,
        "wal_bytes": (work / "history.db-wal").stat().st_size if (work / "history.db-wal").exists() else 0,
        "daemon_fd_kinds": fd_kinds(daemon.pid),
        "reports": tree_entries(work / "reports" / "log-analysis"),
        "backups": tree_entries(work / "store" / "db" / "tiny"),
        "tmpdir_entries": tree_entries(work / "tmp"),
        "workdir_entries": tree_entries(work / "backup-work"),
        "tmp_upkeeper_new": tmp_new,
        "runs": runs,
        "finished": sum(n for s, n in runs.items() if s not in ("running", "queued", "pending")),
    }


def traffic(url: str, stop: threading.Event) -> None:
    i = 0
    while not stop.wait(0.2):
        i += 1
        try:
            urllib.request.urlopen(f"{url}/page/{i % 50}?q={i}", timeout=2).read()
        except Exception:
            pass


def start_services(work: Path, services: list[Any], stop_traffic: threading.Event,
                   worker_max_runs: int = 1000) -> tuple[dict[str, Any], HttpReceiver]:
    """Start the services in ``work`` (each appended to ``services`` as it starts, for the caller to stop) and
    return the drill's config (a dict) and the webhook receiver."""
    pg = PostgresCluster(work / "pg").start()
    services.append(pg)
    pg.create_database("tiny")
    pg.execute("create table t (id int primary key, v text); "
               "insert into t select g, md5(g::text) from generate_series(1, 2000) g", dbname="tiny")
    redis = RedisServer(work / "redis").start()
    services.append(redis)
    r = redis.client()
    for i in range(500):
        r.set(f"session:{i}", b"s" * 100)
    nginx = NginxServer(work / "nginx")
    nginx.docroot.mkdir(parents=True, exist_ok=True)
    (nginx.docroot / "index.html").write_text("hello\n")
    nginx.start()
    services.append(nginx)
    receiver = HttpReceiver().start()
    services.append(receiver)
    threading.Thread(target=traffic, args=(nginx.url, stop_traffic), daemon=True).start()

    from pyrage import x25519

    ident = x25519.Identity.generate()
    key = work / "key.txt"
    key.write_text(f"{ident}\n")
    key.chmod(0o600)
    (work / "store").mkdir()
    (work / "tmp").mkdir()
    (work / "backup-work").mkdir()
    nginx_target = nginx.target()
    config = {
        "version": 1,
        "timezone": "UTC",
        "history": str(work / "history.db"),
        "defaults": {"timeout": "2m", "retries": 0},
        "daemon": {"worker_max_runs": worker_max_runs},
        "targets": {"db": pg.target("tiny"), "cache": redis.target(), "web": nginx_target},
        "storages": {"local": {"kind": "local", "path": str(work / "store"), "fsync": False}},
        "backup": {"encryption": {"recipients": [str(ident.to_public())], "identity_file": str(key)},
                   "work_dir": str(work / "backup-work")},
        "notifications": {"channels": {"hook": {"kind": "webhook", "url": f"{receiver.url}/upkeeper"}},
                          "repeat_interval": "5s", "check_every": "10s"},
        "jobs": {
            "db-backup": {"task": "postgres.backup", "target": "db", "schedule": "every 20s",
                          "options": {"databases": ["tiny"], "globals": False,
                                      "retention": {"keep_last": 3, "keep_daily": 0, "keep_weekly": 0,
                                                    "keep_monthly": 0}}},
            "backup-verify": {"task": "backup.verify", "target": "db", "schedule": "every 30s",
                              "options": {"checks": ["select count(*) = 2000 from t"]}},
            "cache-check": {"task": "redis.check", "target": "cache", "schedule": "every 10s"},
            "cache-backup": {"task": "redis.backup", "target": "cache", "schedule": "every 30s",
                             "options": {"retention": {"keep_last": 2, "keep_daily": 0, "keep_weekly": 0,
                                                       "keep_monthly": 0}}},
            # the RDB is test-loaded into a throw-away redis-server
            "cache-verify": {"task": "backup.verify", "target": "cache", "schedule": "every 30s",
                             "options": {"redis_checks": ["EXISTS session:1"]}},
            "log-analysis": {"task": "logs.nginx", "target": "web", "schedule": "every 15s",
                             "options": {"log_format": "combined_timed", "keep_reports": 3,
                                         "report_dir": str(work / "reports")}},
            "health": {"task": "host.health", "schedule": "every 10s",
                       "options": {"services": [{"tcp": f"127.0.0.1:{redis.port}", "name": "redis"},
                                                {"tcp": f"127.0.0.1:{pg.port}", "name": "postgres"},
                                                {"http": nginx.url + "/", "name": "nginx"}],
                                   "cpu_sample": "0.2s"}},
            "disk-alert": {"task": "host.disk", "schedule": "every 15s",
                           "options": {"mounts": ["/"], "warning": 1, "critical": 100}},
            "flap": {"task": "debug.fail", "schedule": "every 10s"},
            "noop": {"task": "debug.noop", "schedule": "every 5s"},
            # killed by its timeout, with its child: the worker is replaced
            "stuck": {"task": "debug.sleep", "schedule": "every 30s", "timeout": "2s",
                      "options": {"seconds": 60, "subprocess": True}},
        },
    }
    return config, receiver


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    drill_options(ap, 6.0, ROOT / "bench" / "results" / "soak_daemon.json")
    ap.add_argument("--worker-max-runs", type=int, default=1000,
                    help="daemon.worker_max_runs (default 1000: workers live through the drill, so a leak in them "
                         "shows; a small number exercises worker replacement instead)")
    args = ap.parse_args()
    if args.minutes > 8:
        ap.error("--minutes is at most 8 (a bounded drill)")

    work = Path(tempfile.mkdtemp(prefix="upkeeper-soak-", dir="/tmp"))
    work.chmod(0o755)  # the services run as other users
    tmp_before = set(os.listdir("/tmp"))
    services: list[Any] = []
    stop_traffic = threading.Event()
    daemon_proc: subprocess.Popen[bytes] | None = None
    try:
        print(f"work directory {work}", flush=True)
        config, receiver = start_services(work, services, stop_traffic, args.worker_max_runs)
        cfg = work / "upkeeper.yaml"
        cfg.write_text(json.dumps(config, indent=1))
        daemon_proc = start_daemon(cfg, work, args.concurrency)
        if daemon_proc is None:
            return 2
        daemon = psutil.Process(daemon_proc.pid)
        t0 = time.monotonic()
        end = t0 + args.minutes * 60
        samples: list[dict[str, Any]] = []
        while time.monotonic() < end:
            time.sleep(min(args.sample, max(0.0, end - time.monotonic())))
            if daemon_proc.poll() is not None:
                print(f"the daemon exited early ({daemon_proc.returncode}); see {work / 'daemon.log'}")
                return 1
            s = sample(daemon, work, t0, tmp_before)
            samples.append(s)
            d = s["daemon"]
            ws = " ".join(f"[{w['pid']} {w['rss_kb'] // 1024}M fd{w['fds']} th{w['threads']}]" for w in s["workers"])
            print(f"t={s['t']:>6}s runs={s['finished']:>4} daemon rss={d['rss_kb'] // 1024}M fd={d['fds']} "
                  f"th={d['threads']} desc={s['descendants']} zomb={len(s['zombies'])} "
                  f"hist={s['history_bytes'] // 1024}K tmp={s['tmpdir_entries']} wd={s['workdir_entries']} "
                  f"/tmp+={len(s['tmp_upkeeper_new'])} rep={s['reports']} bk={s['backups']} workers {ws}", flush=True)
        seen = {pid for s in samples for pid in s["descendant_pids"]}
        daemon_proc.send_signal(signal.SIGTERM)
        rc = daemon_proc.wait(timeout=120)
        time.sleep(1)
        survivors = []  # processes the daemon started that outlived it
        for pid in sorted(seen):
            try:
                p = psutil.Process(pid)
                if p.ppid() in (1, os.getpid()) or p.status() == psutil.STATUS_ZOMBIE:
                    survivors.append(f"{pid} {p.status()} {' '.join(p.cmdline()[:3])}")
            except psutil.Error:
                pass
        after = {"exit": rc, "survivors": survivors, "tmpdir_entries": tree_entries(work / "tmp"),
                 "workdir_entries": tree_entries(work / "backup-work"),
                 "tmp_upkeeper_new": sorted(n for n in os.listdir("/tmp")
                                            if n.startswith(("upkeeper", ".upkeeper")) and n not in tmp_before
                                            and n != work.name),
                 "webhook_deliveries": len(receiver.requests) if hasattr(receiver, "requests") else None,
                 "runs": runs_finished(work / "history.db")}
        first, last = samples[0], samples[-1]
        runs = max(1, int(last["finished"]) - int(first["finished"]))

        def per_run(key: str, sub: str | None = None) -> float:
            a = first[key][sub] if sub else first[key]
            b = last[key][sub] if sub else last[key]
            return round(float(b - a) / runs, 3)

        summary = {
            "minutes": args.minutes, "runs_between_first_and_last_sample": runs,
            "daemon_first": first["daemon"], "daemon_last": last["daemon"],
            "workers_first": first["workers"], "workers_last": last["workers"],
            "per_run": {"daemon_rss_kb": per_run("daemon", "rss_kb"), "daemon_fds": per_run("daemon", "fds"),
                        "daemon_threads": per_run("daemon", "threads"), "history_bytes": per_run("history_bytes"),
                        "wal_bytes": per_run("wal_bytes")},
            "daemon_fd_kinds_first": first["daemon_fd_kinds"], "daemon_fd_kinds_last": last["daemon_fd_kinds"],
            "history_bytes_first": first["history_bytes"], "history_bytes_last": last["history_bytes"],
            "reports_last": last["reports"], "backups_last": last["backups"],
            "max_zombies": max(len(s["zombies"]) for s in samples),
            "max_descendants": max(s["descendants"] for s in samples),
            "after_stop": after,
        }
        print(json.dumps(summary, indent=1))
        Path(args.out).write_text(json.dumps({"summary": summary, "samples": samples}, indent=1))
        print(f"results: {args.out}")
        return 0
    finally:
        stop_traffic.set()
        teardown(daemon_proc, services, work, args.keep)


if __name__ == "__main__":
    sys.exit(main())
