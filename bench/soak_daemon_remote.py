"""Soak drill of ``upkeeper daemon`` with remote parts (bounded; stops by itself): what soak_daemon.py leaves out.

Real services (sandbox): the history in PostgreSQL (``history: postgresql://…`` on a cluster of its own, so every
connection to it is upkeeper's), a second cluster holding a tiny database to back up, SeaweedFS S3 and an OpenSSH
SFTP server as backup storages, a small directory tree for files.backup, and two webhook receivers: ``hook``
fails (HTTP 500 for the first third of the drill, then answers later than the channel's 1 s timeout, then 200
in the last sixth) so delivery retries run, and ``pager`` (always answering) gets escalation level 2+.  A
one-off maintenance window opens a third of the way in and closes at two thirds: the jobs bound to it are
deferred before it, run inside it, and deferred again after it.

Jobs (``every Ns``): postgres.backup and files.backup to S3 + SFTP (age + zstd, retention keep_last), a
backup.verify reading each storage (``storage: s3`` / ``storage: sftp``: the S3 one restores into a scratch
database), one verifying the files sets, a failing debug.fail (escalated), debug.noop, and window-bound jobs
(debug.noop, a files.backup).

Every ``--sample`` seconds, for the daemon and each worker: RSS, fds (by kind), threads, TCP connections by peer
(history PostgreSQL, target PostgreSQL, S3, SSH, webhooks); zombies and descendants; the history cluster's
client backends (pg_stat_activity) by the process holding the other end (daemon / worker / other); the target
cluster's too; sshd's per-connection processes; notification deliveries by status; leftovers in TMPDIR,
backup.work_dir and /tmp.  After SIGTERM: the exit code, survivors, connections left on both clusters and sshd.
Results: bench/results/soak_daemon_remote.json.

    python bench/soak_daemon_remote.py --minutes 7
    # one worker runs every backup/verify job, each every 4 s: the worker's RSS per run is theirs
    python bench/soak_daemon_remote.py --minutes 4 --concurrency 1 --interval 4 \
        --jobs db-backup,verify-s3,verify-sftp,files-backup,files-verify --out bench/results/soak_daemon_remote_one_worker.json

Results (2 cores, other jobs running): 7 minutes, 221 runs: daemon 99 → 107 MiB RSS (flat from minute 2), fds 11 → 12,
threads 9 → 10 (stable), history connections held: daemon 2-3, each worker 1 (pool, steady; 0 left after SIGTERM); no
SSH connection held between runs (sshd serves one only while a run uses SFTP); no zombie, survivor or temp file;
webhook: 57 answers 500, 114 timeouts, 13 deliveries given up after 90 s, escalation reached the pager; the window
deferred one run per job (later occurrences recorded as covered), ran them at its opening, skipped after it closed.
One worker, 300 backup/verify runs in 4 minutes: 142 → 148 MiB between runs 64 and 260 (~30 KiB a run, bounded by
daemon.worker_max_runs, 200 by default); the same loop in-process over S3 and SFTP storages holds steady.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from _lib import drill_options, start_daemon, teardown  # noqa: E402
from soak_daemon import fd_kinds, proc_info, tree_entries  # noqa: E402

from upkeeper.sandbox.postgres import PostgresCluster  # noqa: E402
from upkeeper.sandbox.receivers import Answer, HttpReceiver, Request  # noqa: E402
from upkeeper.sandbox.s3 import SeaweedS3  # noqa: E402
from upkeeper.sandbox.sshd import SshServer  # noqa: E402


class FlakyHook(HttpReceiver):
    """A webhook that fails by phase: 'error' → HTTP 500, 'slow' → answers after ``slow_seconds`` (longer than
    the channel's timeout), 'ok' → 200.  Counts what it got in each phase."""

    def __init__(self) -> None:
        super().__init__()
        self.phase = "error"
        self.slow_seconds = 3.0
        self.counts: dict[str, int] = {}
        self._count_lock = threading.Lock()

    def respond(self, req: Request) -> Answer:
        phase = self.phase
        with self._count_lock:
            self.counts[phase] = self.counts.get(phase, 0) + 1
        if phase == "error":
            return Answer(500, {"error": "soak: forced 500"})
        if phase == "slow":
            time.sleep(self.slow_seconds)
        return Answer(200, {"ok": True})


def make_tree(root: Path) -> None:
    """A small tree: 60 files in 3 directories, one of them rewritten during the drill."""
    for d in range(3):
        sub = root / f"dir{d}"
        sub.mkdir(parents=True, exist_ok=True)
        for f in range(20):
            (sub / f"file{f}.txt").write_text(f"{d}-{f} " * (50 + 30 * f))


def sql_rows(pg: PostgresCluster, sql: str, db: str = "postgres") -> list[Any]:
    with pg.connect(db) as con:
        con.execute("set application_name = 'soak-sampler'")
        return list(con.execute(sql).fetchall())


def owner_of_ports() -> dict[int, int]:
    """local TCP port → pid, for every socket of this machine (we run as root)."""
    out: dict[int, int] = {}
    for c in psutil.net_connections(kind="tcp"):
        if c.laddr and c.pid:
            out[c.laddr.port] = c.pid
    return out


def backends(pg: PostgresCluster, roles: dict[int, str], ports: dict[int, int]) -> dict[str, Any]:
    """The cluster's client backends (not ours), grouped by the process holding the client end."""
    rows = sql_rows(pg, "select datname, coalesce(application_name, ''), client_port, state from pg_stat_activity "
                        "where backend_type = 'client backend' and pid <> pg_backend_pid() "
                        "and application_name is distinct from 'soak-sampler'")
    by_role: dict[str, int] = {}
    by_app: dict[str, int] = {}
    detail = []
    for datname, app, port, st in rows:
        pid = ports.get(port) if port and port > 0 else None
        role = roles.get(pid, "other") if pid else "unix-socket"
        by_role[role] = by_role.get(role, 0) + 1
        by_app[app or "-"] = by_app.get(app or "-", 0) + 1
        detail.append({"db": datname, "app": app, "pid": pid, "role": role, "state": st})
    return {"total": len(rows), "by_role": by_role, "by_application_name": by_app, "detail": detail}


def tcp_peers(p: psutil.Process, named: dict[int, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        conns = p.net_connections(kind="tcp")
    except psutil.Error:
        return out
    for c in conns:
        if not c.raddr:
            key = "listen/unconnected"
        else:
            key = named.get(c.raddr.port, f"port {c.raddr.port}")
        key += "" if c.status == psutil.CONN_ESTABLISHED else f" ({c.status})"
        out[key] = out.get(key, 0) + 1
    return out


def sshd_sessions(sshd: SshServer) -> int:
    """sshd processes serving a connection (not the listener, started with '-f CONFIG'): one or two per open SSH
    connection."""
    assert sshd.proc is not None
    try:
        top = psutil.Process(sshd.proc.pid)
        procs = [top, *top.children(recursive=True)]
        return sum(1 for k in procs if "sshd" in k.name() and "-f" not in k.cmdline())
    except psutil.Error:
        return -1


def deliveries(hist: PostgresCluster) -> dict[str, int]:
    try:
        return {f"{c}:{s}": n for c, s, n in sql_rows(
            hist, "select channel, status, count(*) from notify_deliveries group by 1, 2", "upkeeper_history")}
    except Exception:
        return {}


def runs_by_status(hist: PostgresCluster) -> dict[str, int]:
    try:
        return {s: n for s, n in sql_rows(hist, "select status, count(*) from runs group by status",
                                          "upkeeper_history")}
    except Exception:
        return {}


def deferred_runs(hist: PostgresCluster) -> dict[str, int]:
    try:
        return {f"{j}:{s}": n for j, s, n in sql_rows(
            hist, "select job, status, count(*) from runs where trigger = 'deferred' or summary like 'deferred%' "
                  "group by 1, 2", "upkeeper_history")}
    except Exception:
        return {}


def sample(daemon: psutil.Process, env: dict[str, Any], t0: float, tmp_before: set[str]) -> dict[str, Any]:
    work: Path = env["work"]
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
    roles = {daemon.pid: "daemon", **{w.pid: "worker" for w in workers}}
    for k in kids:
        roles.setdefault(k.pid, "worker-child")
    ports = owner_of_ports()
    named = env["named_ports"]
    winfo = []
    for w in workers:
        try:
            info = proc_info(w)
            info["tcp"] = tcp_peers(w, named)
            winfo.append(info)
        except psutil.Error:
            pass
    dinfo = proc_info(daemon)
    dinfo["tcp"] = tcp_peers(daemon, named)
    tmp_new = sorted(n for n in os.listdir("/tmp") if n.startswith(("upkeeper", ".upkeeper")) and n not in tmp_before)
    runs = runs_by_status(env["hist"])
    return {
        "t": round(time.monotonic() - t0, 1),
        "hook_phase": env["hook"].phase,
        "daemon": dinfo,
        "workers": winfo,
        "descendants": len(kids),
        "descendant_pids": [k.pid for k in kids],
        "zombies": zombies,
        "daemon_fd_kinds": fd_kinds(daemon.pid),
        "history_backends": backends(env["hist"], roles, ports),
        "target_backends": backends(env["pg"], roles, ports),
        "sshd_sessions": sshd_sessions(env["sshd"]),
        "deliveries": deliveries(env["hist"]),
        "deferred": deferred_runs(env["hist"]),
        "tmpdir_entries": tree_entries(work / "tmp"),
        "workdir_entries": tree_entries(work / "backup-work"),
        "tmp_upkeeper_new": tmp_new,
        "runs": runs,
        "finished": sum(n for s, n in runs.items() if s not in ("running", "queued", "pending")),
    }


def start_services(work: Path, services: list[Any], minutes: float) -> tuple[dict[str, Any], dict[str, Any]]:
    hist = PostgresCluster(work / "pg-history").start()
    services.append(hist)
    hist.create_database("upkeeper_history")
    pg = PostgresCluster(work / "pg").start()
    services.append(pg)
    pg.create_database("tiny")
    pg.execute("create table t (id int primary key, v text); "
               "insert into t select g, md5(g::text) from generate_series(1, 2000) g", dbname="tiny")
    s3 = SeaweedS3(work / "s3").start()
    services.append(s3)
    s3.create_bucket("soak")
    sshd = SshServer(work / "sshd").start()
    services.append(sshd)
    sftp_dir = sshd.home / "backups"
    sftp_dir.mkdir(mode=0o700)
    if os.geteuid() == 0:
        pw = pwd.getpwnam(sshd.user)
        os.chown(sftp_dir, pw.pw_uid, pw.pw_gid)
    hook = FlakyHook().start()
    services.append(hook)
    pager = HttpReceiver().start()
    services.append(pager)
    make_tree(work / "site")

    from pyrage import x25519

    ident = x25519.Identity.generate()
    key = work / "key.txt"
    key.write_text(f"{ident}\n")
    key.chmod(0o600)
    (work / "tmp").mkdir()
    (work / "backup-work").mkdir()
    now = datetime.now(UTC)
    # one-off window on whole minutes: opens about a third of the way in, closes at about two thirds
    w_open = (now + timedelta(minutes=minutes / 3) + timedelta(seconds=59)).replace(second=0, microsecond=0)
    w_close = (now + timedelta(minutes=2 * minutes / 3) + timedelta(seconds=59)).replace(second=0, microsecond=0)
    keep = {"keep_last": 2, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0}
    config = {
        "version": 1,
        "timezone": "UTC",
        "history": hist.url("upkeeper_history"),
        "defaults": {"timeout": "2m", "retries": 0},
        "daemon": {"worker_max_runs": 1000},
        "targets": {"db": pg.target("tiny"), "box": {"kind": "host"}},
        "storages": {
            "s3": s3.storage_config("soak"),
            "sftp": {"kind": "sftp", "host": "127.0.0.1", "port": sshd.port, "user": sshd.user,
                     "key_file": str(sshd.client_key), "known_hosts": str(sshd.known_hosts), "path": str(sftp_dir),
                     "fsync": False},
        },
        "backup": {"encryption": {"recipients": [str(ident.to_public())], "identity_file": str(key)},
                   "work_dir": str(work / "backup-work"), "storages": ["s3", "sftp"]},
        "windows": {"maint": {"start": w_open.strftime("%Y-%m-%d %H:%M"), "end": w_close.strftime("%Y-%m-%d %H:%M"),
                              "notices": ["2m"]}},
        "notifications": {
            "channels": {"hook": {"kind": "webhook", "url": f"{hook.url}/upkeeper", "timeout": "1s"},
                         "pager": {"kind": "webhook", "url": f"{pager.url}/pager"}},
            "repeat_interval": "20s", "check_every": "5s",
            "delivery": {"retry_delay": "2s", "retry_max_delay": "10s", "give_up_after": "90s"},
            "escalation": {"levels": [{"channels": ["hook"]},
                                      {"channels": ["pager"], "after_failures": 3},
                                      {"channels": ["pager"], "after": "90s"}]},
        },
        "jobs": {
            "db-backup": {"task": "postgres.backup", "target": "db", "schedule": "every 30s",
                          "options": {"databases": ["tiny"], "globals": False, "retention": keep}},
            "verify-s3": {"task": "backup.verify", "target": "db", "schedule": "every 30s",
                          "options": {"storage": "s3", "checks": ["select count(*) = 2000 from t"]}},
            "verify-sftp": {"task": "backup.verify", "target": "db", "schedule": "every 40s",
                            "options": {"storage": "sftp", "restore": False}},
            "files-backup": {"task": "files.backup", "target": "box", "schedule": "every 30s",
                             "options": {"paths": [str(work / "site")], "retention": keep}},
            "files-verify": {"task": "backup.verify", "target": "box", "schedule": "every 40s"},
            "flap": {"task": "debug.fail", "schedule": "every 10s"},
            "noop": {"task": "debug.noop", "schedule": "every 5s"},
            "in-window": {"task": "debug.noop", "schedule": "every 15s", "window": "maint"},
            "files-in-window": {"task": "files.backup", "target": "box", "schedule": "every 45s", "window": "maint",
                                "options": {"paths": [str(work / "site" / "dir0")], "set": "windowed",
                                            "retention": keep}},
        },
    }
    named = {hist.port: "history-pg", pg.port: "target-pg", s3.port: "s3", sshd.port: "ssh",
             hook.port: "hook", pager.port: "pager"}
    env = {"work": work, "hist": hist, "pg": pg, "s3": s3, "sshd": sshd, "hook": hook, "pager": pager,
           "named_ports": named, "window": [w_open.isoformat(), w_close.isoformat()]}
    return config, env


def brief(s: dict[str, Any]) -> str:
    d = s["daemon"]
    ws = " ".join(f"[{w['pid']} {w['rss_kb'] // 1024}M fd{w['fds']} th{w['threads']} "
                  f"tcp{sum(w['tcp'].values())}]" for w in s["workers"])
    hb = s["history_backends"]["by_role"]
    tb = s["target_backends"]["by_role"]
    return (f"t={s['t']:>6}s {s['hook_phase']:<5} runs={s['finished']:>4} daemon rss={d['rss_kb'] // 1024}M "
            f"fd={d['fds']} th={d['threads']} tcp={sum(d['tcp'].values())} desc={s['descendants']} "
            f"zomb={len(s['zombies'])} histpg={hb} tgtpg={tb} sshd={s['sshd_sessions']} tmp={s['tmpdir_entries']} "
            f"wd={s['workdir_entries']} /tmp+={len(s['tmp_upkeeper_new'])} workers {ws}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    drill_options(ap, 7.0, ROOT / "bench" / "results" / "soak_daemon_remote.json")
    ap.add_argument("--jobs", default="", help="comma-separated: keep only these jobs (to find which one grows)")
    ap.add_argument("--interval", type=int, default=0,
                    help="run every kept job 'every N s' instead of its own schedule (with --concurrency 1 one worker "
                         "runs everything: its RSS per run is the jobs' own)")
    args = ap.parse_args()
    if args.minutes > 8:
        ap.error("--minutes is at most 8 (a bounded drill)")

    work = Path(tempfile.mkdtemp(prefix="upkeeper-soak-remote-", dir="/tmp"))
    work.chmod(0o755)  # the services run as other users
    tmp_before = set(os.listdir("/tmp"))
    services: list[Any] = []
    daemon_proc: subprocess.Popen[bytes] | None = None
    try:
        print(f"work directory {work}", flush=True)
        config, env_s = start_services(work, services, args.minutes)
        print(f"maintenance window {env_s['window'][0]} → {env_s['window'][1]}", flush=True)
        if args.jobs:
            keep = set(args.jobs.split(","))
            unknown = keep - set(config["jobs"])
            if unknown:
                ap.error(f"--jobs: no job {', '.join(sorted(unknown))}; the jobs are {', '.join(config['jobs'])}")
            config["jobs"] = {n: j for n, j in config["jobs"].items() if n in keep}
        if args.interval:
            for j in config["jobs"].values():
                j["schedule"] = f"every {args.interval}s"
        cfg = work / "upkeeper.yaml"
        cfg.write_text(json.dumps(config, indent=1))
        daemon_proc = start_daemon(cfg, work, args.concurrency)
        if daemon_proc is None:
            return 2
        daemon = psutil.Process(daemon_proc.pid)
        hook: FlakyHook = env_s["hook"]
        t0 = time.monotonic()
        span = args.minutes * 60
        end = t0 + span
        samples: list[dict[str, Any]] = []
        while time.monotonic() < end:
            time.sleep(min(args.sample, max(0.0, end - time.monotonic())))
            elapsed = time.monotonic() - t0
            hook.phase = "error" if elapsed < span / 3 else "slow" if elapsed < span * 5 / 6 else "ok"
            if daemon_proc.poll() is not None:
                print(f"the daemon exited early ({daemon_proc.returncode}); see {work / 'daemon.log'}")
                return 1
            # the tree changes between backups (a new set each time, not an identical one)
            (work / "site" / "dir1" / "changing.txt").write_text(f"{elapsed}\n" * 100)
            s = sample(daemon, env_s, t0, tmp_before)
            samples.append(s)
            print(brief(s), flush=True)
        seen = {pid for s in samples for pid in s["descendant_pids"]}
        daemon_proc.send_signal(signal.SIGTERM)
        rc = daemon_proc.wait(timeout=120)
        time.sleep(2)
        survivors = []
        for pid in sorted(seen):
            try:
                p = psutil.Process(pid)
                if p.ppid() in (1, os.getpid()) or p.status() == psutil.STATUS_ZOMBIE:
                    survivors.append(f"{pid} {p.status()} {' '.join(p.cmdline()[:3])}")
            except psutil.Error:
                pass
        ports = owner_of_ports()
        after = {"exit": rc, "survivors": survivors, "tmpdir_entries": tree_entries(work / "tmp"),
                 "workdir_entries": tree_entries(work / "backup-work"),
                 "tmp_upkeeper_new": sorted(n for n in os.listdir("/tmp")
                                            if n.startswith(("upkeeper", ".upkeeper")) and n not in tmp_before
                                            and n != work.name),
                 "history_backends": backends(env_s["hist"], {}, ports)["total"],
                 "target_backends": backends(env_s["pg"], {}, ports)["total"],
                 "sshd_sessions": sshd_sessions(env_s["sshd"]),
                 "hook_requests_by_phase": hook.counts, "pager_requests": len(env_s["pager"].requests),
                 "deliveries": deliveries(env_s["hist"]), "deferred": deferred_runs(env_s["hist"]),
                 "runs": runs_by_status(env_s["hist"])}
        first, last = samples[0], samples[-1]
        runs = max(1, int(last["finished"]) - int(first["finished"]))

        def per_run(a: float, b: float) -> float:
            return round((b - a) / runs, 3)

        summary = {
            "minutes": args.minutes, "window": env_s["window"], "runs_between_first_and_last_sample": runs,
            "daemon_first": first["daemon"], "daemon_last": last["daemon"],
            "workers_first": first["workers"], "workers_last": last["workers"],
            "per_run": {"daemon_rss_kb": per_run(first["daemon"]["rss_kb"], last["daemon"]["rss_kb"]),
                        "daemon_fds": per_run(first["daemon"]["fds"], last["daemon"]["fds"]),
                        "daemon_threads": per_run(first["daemon"]["threads"], last["daemon"]["threads"])},
            "daemon_fd_kinds_first": first["daemon_fd_kinds"], "daemon_fd_kinds_last": last["daemon_fd_kinds"],
            "history_backends_first": first["history_backends"]["by_role"],
            "history_backends_last": last["history_backends"]["by_role"],
            "history_backends_max": max(s["history_backends"]["total"] for s in samples),
            "target_backends_first": first["target_backends"]["by_role"],
            "target_backends_last": last["target_backends"]["by_role"],
            "sshd_sessions_first": first["sshd_sessions"], "sshd_sessions_last": last["sshd_sessions"],
            "sshd_sessions_max": max(s["sshd_sessions"] for s in samples),
            "max_zombies": max(len(s["zombies"]) for s in samples),
            "max_descendants": max(s["descendants"] for s in samples),
            "after_stop": after,
        }
        print(json.dumps(summary, indent=1))
        Path(args.out).write_text(json.dumps({"summary": summary, "samples": samples}, indent=1, default=str))
        print(f"results: {args.out}")
        return 0
    finally:
        teardown(daemon_proc, services, work, args.keep)


if __name__ == "__main__":
    sys.exit(main())
