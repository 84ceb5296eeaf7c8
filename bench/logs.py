"""Log analysis speed, side by side with the anchors, in one run.

* access logs: a seeded 100 MB nginx access log (combined + $request_time, varied IPs, paths and
  user agents, see upkeeper.logs.synth) read by GoAccess 1.7 (the SERVICES.md flags) and by
  ``upkeeper run log-analysis`` (logs.nginx: full pipeline, HTML report included);
* PostgreSQL logs: a real cluster logging every statement (log_min_duration_statement = 0)
  under pgbench (100k+ statements) plus the upkeeper workload (errors, a deadlock, a lock wait,
  temp files, checkpoints), read by ``pgbadger -j 2`` and by ``upkeeper run pg-log-analysis``
  (logs.postgres); the same messages as its csvlog, and through a real rsyslogd of the benchmark's own
  (log_destination syslog; ``pgbadger -f syslog -j 2`` against ``format: syslog``) when rsyslog is installed and
  no system syslog daemon owns /dev/log;
* memory: the peak RSS of the whole upkeeper process tree, sampled while it runs; with
  ``--memory-gb 1`` also on a 1 GB access log.

Both tools must agree on what they counted (requests, statements) or the benchmark fails.
Each upkeeper config's history database is created before the timed runs (``upkeeper status``),
as on any machine where upkeeper has run before: its one-time migration is not log analysis.
Results go to bench/results/logs.json (with ``--only postgres`` or ``--only access``: to
logs_postgres.json or logs_access.json).  Usage: ``python bench/logs.py [--size-mb 100]
[--pgbench-tx 4000] [--memory-gb 0] [--repeat 1] [--workdir DIR] [--only postgres|access]``.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

import upkeeper
from upkeeper.logs.synth import write_access_log
from upkeeper.sandbox import pgworkload
from upkeeper.sandbox.postgres import PostgresCluster

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "logs.json"
GOACCESS_ARGS = ["--log-format=%h %^[%d:%t %^] \"%r\" %s %b \"%R\" \"%u\" %T", "--date-format=%d/%b/%Y",
                 "--time-format=%T", "--no-progress"]
UPKEEPER = [sys.executable, "-m", "upkeeper"]


class PeakRSS:
    """Samples the summed RSS of a process and all its descendants."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        self.pid = pid
        self.every = every
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                total = 0
                for p in procs:
                    try:
                        total += p.memory_info().rss
                    except psutil.NoSuchProcess:
                        pass
                self.peak = max(self.peak, total)
            except psutil.NoSuchProcess:
                return
            time.sleep(self.every)

    def stop(self) -> int:
        self._stop.set()
        self._t.join(2)
        return self.peak


def timed(argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> dict[str, Any]:
    """Wall time, CPU time of the whole process tree (children's rusage) and peak summed RSS."""
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd)
    rss = PeakRSS(proc.pid)
    out, err = proc.communicate()
    seconds = time.perf_counter() - t0
    peak = rss.stop()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    if proc.returncode not in (0, 1):  # upkeeper exits 1 when a run fails: findings are fine, errors are not
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    return {"seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3), "peak_rss_mb": round(peak / 2**20, 1),
            "stdout": out, "stderr": err}


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    r = min(runs, key=lambda x: x["seconds"])
    return {k: v for k, v in r.items() if k not in ("stdout", "stderr")} | {"runs": [x["seconds"] for x in runs]}


def fastest_metrics(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The metrics (scan_seconds …) of the run whose wall time is reported (the fastest, see :func:`best`), not
    of the last run: on a loaded machine those differ by seconds, and a scan slower than its run is no figure."""
    return dict(json.loads(min(runs, key=lambda x: x["seconds"])["stdout"])[0]["metrics"])


def write_config(path: Path, history: Path, targets: dict[str, Any], jobs: dict[str, Any]) -> Path:
    from ruamel.yaml import YAML

    yaml = YAML()
    with open(path, "w") as fh:
        yaml.dump({"version": 1, "history": str(history), "targets": targets, "jobs": jobs}, fh)
    # create the history database now, as on any machine where upkeeper has run before: its one-time
    # creation (schema migrations, ~0.1 s) is installation, not part of analysing a log
    subprocess.run([*UPKEEPER, "--config", str(path), "status"], check=True, capture_output=True)
    return path


def bench_access(work: Path, size_mb: int, repeat: int) -> dict[str, Any]:
    log = work / f"access-{size_mb}mb.log"
    if not log.exists() or abs(log.stat().st_size - size_mb * 1_000_000) > 2_000_000:
        print(f"generating a {size_mb} MB access log…", flush=True)
        write_access_log(str(log), size_mb * 1_000_000, seed=42, invalid_ratio=0.0005)
    size = log.stat().st_size
    with open(log, "rb") as fh:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 22), b""))
    goaccess = shutil.which("goaccess")
    assert goaccess, "goaccess is not installed"
    ga_runs, up_runs = [], []
    ga_json = work / "goaccess.json"
    for i in range(repeat):
        print(f"goaccess run {i + 1}/{repeat}…", flush=True)
        ga_runs.append(timed([goaccess, str(log), *GOACCESS_ARGS, "-o", str(ga_json)]))
        cfg = write_config(work / "access.yaml", work / f"history-access-{i}.db",
                           {"web": {"kind": "nginx", "access_log": str(log)}},
                           {"log-analysis": {"task": "logs.nginx", "target": "web", "options": {
                               "log_format": "combined_timed", "incremental": False,
                               "report_dir": str(work / "reports")}}})
        print(f"upkeeper run log-analysis {i + 1}/{repeat}…", flush=True)
        up_runs.append(timed([*UPKEEPER, "--config", str(cfg), "run", "log-analysis", "--json"]))
    # the floor: the same command on an empty log (CLI start, config, history, worker process, report)
    empty = work / "empty.log"
    empty.write_bytes(b"")
    cfg = write_config(work / "empty.yaml", work / "history-empty.db", {"web": {"kind": "nginx", "access_log": str(empty)}},
                       {"log-analysis": {"task": "logs.nginx", "target": "web", "options": {
                           "log_format": "combined_timed", "incremental": False, "report_dir": str(work / "reports")}}})
    floor = best([timed([*UPKEEPER, "--config", str(cfg), "run", "log-analysis", "--json"]) for _ in range(repeat)])
    ga = json.loads(ga_json.read_text(encoding="utf-8", errors="surrogateescape"))["general"]
    m = fastest_metrics(up_runs)
    if (m["lines"], m["requests"], m["visitors"]) != (ga["total_requests"], ga["valid_requests"],
                                                       ga["unique_visitors"]):
        raise SystemExit(f"upkeeper and GoAccess disagree: {m} vs {ga}")
    scan_runs = [json.loads(r["stdout"])[0]["metrics"]["scan_seconds"] for r in up_runs]
    g, u = best(ga_runs), best(up_runs)
    return {
        "log_bytes": size, "log_lines": lines, "requests": m["requests"], "visitors": m["visitors"],
        "invalid_lines": m["invalid"],
        "goaccess": g | {"mb_per_s": round(size / 1e6 / g["seconds"], 2)},
        "upkeeper": u | {"mb_per_s": round(size / 1e6 / u["seconds"], 2), "scan_seconds": m["scan_seconds"],
                         "scan_mb_per_s": round(size / 1e6 / m["scan_seconds"], 2), "scan_runs": scan_runs},
        "upkeeper_empty_log_run": floor,
        "scan_speedup_vs_goaccess": round(g["seconds"] / m["scan_seconds"], 2),
        "speedup_vs_goaccess": round(g["seconds"] / u["seconds"], 2),
        "cpu_ratio_vs_goaccess": round(g["cpu_seconds"] / u["cpu_seconds"], 2),
        "goals": {"mb_per_s": 100, "speedup": 20},
    }


#: a private rsyslogd for the syslog leg: /dev/log (where PostgreSQL's syslog(3) writes) into one file, written as
#: rsyslog's default traditional file format
RSYSLOG_CONF = """\
global(workDirectory="{d}/work")
module(load="imuxsock" SysSock.Name="/dev/log" SysSock.RateLimit.Interval="0")
if $programname == "{ident}" then action(type="omfile" file="{d}/postgresql-syslog.log"
                                         template="RSYSLOG_TraditionalFileFormat")
"""
SYSLOG_IDENT = "upkbench"


def start_rsyslogd(work: Path) -> subprocess.Popen[bytes] | None:
    """A real rsyslogd of its own reading /dev/log, or None (and why, printed) when it cannot run here: not
    installed, or the system's syslog daemon owns /dev/log."""
    import socket

    exe = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if Path("/usr/sbin/rsyslogd").exists() else None)
    if exe is None:
        print("no rsyslogd (apt install rsyslog): the syslog leg is left out", flush=True)
        return None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.connect("/dev/log")
        print("a syslog daemon of the system owns /dev/log: the syslog leg is left out", flush=True)
        return None
    except OSError:
        pass
    finally:
        s.close()
    d = work / "rsyslog"
    shutil.rmtree(d, ignore_errors=True)
    (d / "work").mkdir(parents=True)
    (d / "rsyslog.conf").write_text(RSYSLOG_CONF.format(d=d, ident=SYSLOG_IDENT))
    Path("/dev/log").unlink(missing_ok=True)  # (a socket left by a daemon that died)
    p = subprocess.Popen([exe, "-n", "-f", str(d / "rsyslog.conf"), "-i", str(d / "rsyslogd.pid")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            s.connect("/dev/log")
            return p
        except OSError:
            time.sleep(0.05)
        finally:
            s.close()
    p.kill()
    raise SystemExit("rsyslogd did not start listening on /dev/log within 10 s")


def stop_rsyslogd(p: subprocess.Popen[bytes], log: Path, statements_in: Path) -> None:
    """Stop it once it has written every message (the stderr log's last line is in its file too)."""
    last = statements_in.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1].split(b" LOG:  ", 1)[-1][:60]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (log.exists() and last in log.read_bytes()[-200_000:]):
        time.sleep(0.2)
    p.terminate()
    p.wait(timeout=30)
    Path("/dev/log").unlink(missing_ok=True)


def bench_postgres(work: Path, transactions: int, repeat: int) -> dict[str, Any]:
    base = work / "pg"
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    base.chmod(0o755)
    rsyslogd = start_rsyslogd(work)
    # the same statements in the stderr log and in the csvlog (the logging collector writes both), and through
    # syslog (a real rsyslogd's file) when one can run here
    cluster = PostgresCluster(base, extra_conf=pgworkload.LOGGING_CONF + (
        f"log_destination = 'stderr,csvlog{',syslog' if rsyslogd else ''}'\nlogging_collector = on\n"
        f"log_directory = 'log'\nlog_filename = 'postgresql.log'\nlog_rotation_size = 0\n"
        f"syslog_ident = '{SYSLOG_IDENT}'\n"))
    cluster.start()
    print(f"pgbench: {transactions} transactions x 4 clients with every statement logged…", flush=True)
    try:
        env = cluster.env()
        subprocess.run([str(cluster.bin / "pgbench"), "-i", "-s", "2", "-q", "postgres"], env=env, check=True,
                       capture_output=True)
        subprocess.run([str(cluster.bin / "pgbench"), "-c", "4", "-j", "2", "-t", str(transactions), "postgres"],
                       env=env, check=True, capture_output=True)
        pgworkload.run(lambda: cluster.connect())
    finally:
        cluster.stop()
    log = work / "postgresql.log"
    shutil.copy(cluster.data / "log" / "postgresql.log", log)
    syslog_log = work / "rsyslog" / "postgresql-syslog.log"
    if rsyslogd is not None:
        stop_rsyslogd(rsyslogd, syslog_log, log)
    csvlog = work / "postgresql.csv"
    shutil.copy(cluster.data / "log" / "postgresql.csv", csvlog)
    size, csv_size = log.stat().st_size, csvlog.stat().st_size
    badger = shutil.which("pgbadger")
    assert badger, "pgbadger is not installed"
    b_runs, u_runs, bc_runs, uc_runs = [], [], [], []
    bjson = work / "pgbadger.json"
    for i in range(repeat):
        print(f"pgbadger -j 2 run {i + 1}/{repeat}…", flush=True)
        # a private pid file: pgBadger refuses to start while /tmp/pgbadger.pid exists (another run)
        b_runs.append(timed([badger, "-j", "2", "--pid-dir", str(work), "--prefix", pgworkload.LOG_LINE_PREFIX,
                             "-o", str(bjson), "-q", str(log)]))
        cfg = write_config(work / "pg.yaml", work / f"history-pg-{i}.db", {"db": cluster.target("postgres")},
                           {"pg-log-analysis": {"task": "logs.postgres", "target": "db", "options": {
                               "log_file": str(log), "log_line_prefix": pgworkload.LOG_LINE_PREFIX,
                               "incremental": False, "report_dir": str(work / "reports")}}})
        print(f"upkeeper run pg-log-analysis {i + 1}/{repeat}…", flush=True)
        u_runs.append(timed([*UPKEEPER, "--config", str(cfg), "run", "pg-log-analysis", "--json"]))
        print(f"pgbadger -j 2 and upkeeper on the csvlog {i + 1}/{repeat}…", flush=True)
        bc_runs.append(timed([badger, "-j", "2", "--pid-dir", str(work), "-f", "csv", "-o", str(work / "pgbadger-csv.json"),
                              "-q", str(csvlog)]))
        cfg = write_config(work / "pg-csv.yaml", work / f"history-pg-csv-{i}.db", {"db": cluster.target("postgres")},
                           {"pg-log-analysis": {"task": "logs.postgres", "target": "db", "options": {
                               "log_file": str(csvlog), "format": "csvlog", "incremental": False,
                               "report_dir": str(work / "reports")}}})
        uc_runs.append(timed([*UPKEEPER, "--config", str(cfg), "run", "pg-log-analysis", "--json"]))
    # the floor: the same job on an empty log (CLI start, config, history, worker process, report)
    empty = work / "empty-pg.log"
    empty.write_bytes(b"")
    cfg = write_config(work / "pg-empty.yaml", work / "history-pg-empty.db", {"db": cluster.target("postgres")},
                       {"pg-log-analysis": {"task": "logs.postgres", "target": "db", "options": {
                           "log_file": str(empty), "log_line_prefix": pgworkload.LOG_LINE_PREFIX,
                           "incremental": False, "report_dir": str(work / "reports")}}})
    floor = best([timed([*UPKEEPER, "--config", str(cfg), "run", "pg-log-analysis", "--json"])
                  for _ in range(repeat)])
    theirs = json.loads(bjson.read_text())["overall_stat"]["queries_number"]
    m = fastest_metrics(u_runs)
    if int(m["statements"]) != theirs:
        raise SystemExit(f"upkeeper counted {m['statements']} statements, pgBadger {theirs}")
    mc = fastest_metrics(uc_runs)
    if mc["statements"] != m["statements"]:
        raise SystemExit(f"upkeeper counted {mc['statements']} statements in the csvlog, {m['statements']} in the "
                         "stderr log")
    b, u, bc, uc = best(b_runs), best(u_runs), best(bc_runs), best(uc_runs)
    syslog = bench_pg_syslog(work, syslog_log, cluster, repeat, int(m["statements"])) if rsyslogd else None
    return {
        "log_bytes": size, "statements": int(m["statements"]), "fingerprints": int(m["fingerprints"]),
        "log_generation": "real PostgreSQL 15 cluster, log_min_duration_statement=0, pgbench -c 4 -j 2 -t "
                          f"{transactions} (scale 2) plus upkeeper's error/lock/deadlock/temp-file workload",
        "pgbadger_j2": b | {"mb_per_s": round(size / 1e6 / b["seconds"], 2)},
        "upkeeper": u | {"mb_per_s": round(size / 1e6 / u["seconds"], 2), "scan_seconds": m["scan_seconds"]},
        "upkeeper_empty_log_run": floor,
        "speedup_vs_pgbadger_j2": round(b["seconds"] / u["seconds"], 2),
        "scan_speedup_vs_pgbadger_j2": round(b["seconds"] / m["scan_seconds"], 2),
        "cpu_ratio_vs_pgbadger_j2": round(b["cpu_seconds"] / u["cpu_seconds"], 2),
        "goals": {"speedup": 10},
        "csvlog": {
            "log_bytes": csv_size, "statements": int(mc["statements"]),
            "pgbadger_j2": bc | {"mb_per_s": round(csv_size / 1e6 / bc["seconds"], 2)},
            "upkeeper": uc | {"mb_per_s": round(csv_size / 1e6 / uc["seconds"], 2), "scan_seconds": mc["scan_seconds"],
                              "scan_mb_per_s": round(csv_size / 1e6 / mc["scan_seconds"], 2)},
            "speedup_vs_pgbadger_j2": round(bc["seconds"] / uc["seconds"], 2),
            "scan_seconds_vs_stderr": round(mc["scan_seconds"] / m["scan_seconds"], 2),
        },
        "syslog": syslog,
    }


def bench_pg_syslog(work: Path, log: Path, cluster: PostgresCluster, repeat: int, statements: int) -> dict[str, Any]:
    """The same statements as rsyslogd wrote them (log_destination syslog, the same log_line_prefix):
    pgBadger ``-f syslog -j 2`` against ``format: syslog``."""
    badger = shutil.which("pgbadger")
    assert badger, "pgbadger is not installed"
    size = log.stat().st_size
    b_runs, u_runs = [], []
    bjson = work / "pgbadger-syslog.json"
    for i in range(repeat):
        print(f"pgbadger -j 2 and upkeeper on the syslog log {i + 1}/{repeat}…", flush=True)
        b_runs.append(timed([badger, "-j", "2", "--pid-dir", str(work), "-f", "syslog", "--prefix",
                             pgworkload.LOG_LINE_PREFIX, "--ident", SYSLOG_IDENT, "-o", str(bjson), "-q", str(log)]))
        cfg = write_config(work / "pg-syslog.yaml", work / f"history-pg-syslog-{i}.db",
                           {"db": cluster.target("postgres")},
                           {"pg-log-analysis": {"task": "logs.postgres", "target": "db", "options": {
                               "log_file": str(log), "format": "syslog", "syslog_ident": SYSLOG_IDENT,
                               "log_line_prefix": pgworkload.LOG_LINE_PREFIX, "incremental": False,
                               "report_dir": str(work / "reports")}}})
        u_runs.append(timed([*UPKEEPER, "--config", str(cfg), "run", "pg-log-analysis", "--json"]))
    theirs = json.loads(bjson.read_text())["overall_stat"]["queries_number"]
    m = fastest_metrics(u_runs)
    if int(m["statements"]) != theirs or int(m["statements"]) != statements:
        raise SystemExit(f"statements through syslog: upkeeper {m['statements']}, pgBadger {theirs}, "
                         f"{statements} in the stderr log")
    b, u = best(b_runs), best(u_runs)
    return {
        "log_bytes": size, "statements": int(m["statements"]),
        "log_generation": "the same cluster's messages through a real rsyslogd (traditional file format, "
                          "syslog_sequence_numbers on)",
        "pgbadger_j2": b | {"mb_per_s": round(size / 1e6 / b["seconds"], 2)},
        "upkeeper": u | {"mb_per_s": round(size / 1e6 / u["seconds"], 2), "scan_seconds": m["scan_seconds"]},
        "speedup_vs_pgbadger_j2": round(b["seconds"] / u["seconds"], 2),
    }


def bench_memory(work: Path, gb: float) -> dict[str, Any]:
    size = int(gb * 1_000_000_000)
    log = work / f"access-{gb:g}gb.log"
    if not log.exists() or abs(log.stat().st_size - size) > 5_000_000:
        print(f"generating a {gb:g} GB access log (takes a while)…", flush=True)
        write_access_log(str(log), size, seed=43)
    cfg = write_config(work / "mem.yaml", work / "history-mem.db", {"web": {"kind": "nginx", "access_log": str(log)}},
                       {"log-analysis": {"task": "logs.nginx", "target": "web", "options": {
                           "log_format": "combined_timed", "incremental": False, "report_dir": str(work / "reports")}}})
    print(f"upkeeper run log-analysis on {gb:g} GB…", flush=True)
    r = timed([*UPKEEPER, "--config", str(cfg), "run", "log-analysis", "--json"])
    m = json.loads(r["stdout"])[0]["metrics"]
    return {"log_bytes": log.stat().st_size, "requests": m["requests"], "seconds": r["seconds"],
            "cpu_seconds": r["cpu_seconds"], "scan_seconds": m["scan_seconds"],
            "mb_per_s": round(log.stat().st_size / 1e6 / r["seconds"], 2), "peak_rss_mb": r["peak_rss_mb"],
            "goal_peak_rss_mb": 500}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=100)
    ap.add_argument("--pgbench-tx", type=int, default=4000, help="transactions per pgbench client (x7 statements)")
    ap.add_argument("--memory-gb", type=float, default=0.0, help="also measure memory on a log this big")
    ap.add_argument("--repeat", type=int, default=1, help="runs per tool; the fastest counts")
    ap.add_argument("--workdir", type=Path, default=None, help="keep generated logs here between runs")
    ap.add_argument("--only", choices=("access", "postgres"), default=None,
                    help="run one part only (results go to bench/results/logs_<part>.json)")
    args = ap.parse_args()
    # upkeeper's modules as an installed upkeeper has them: byte-compiled (PYTHONDONTWRITEBYTECODE, set in some shells
    # and CI images, left a changed module to be compiled again at every run: up to tens of ms each)
    compileall.compile_dir(str(Path(upkeeper.__file__).parent), quiet=1)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="upk-bench-logs-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    load_before = os.getloadavg()
    result: dict[str, Any] = {
        "benchmark": "logs", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_before": load_before},
    }
    if args.only in (None, "access"):
        result["access"] = bench_access(work, args.size_mb, args.repeat)
    if args.only in (None, "postgres"):
        result["postgres"] = bench_postgres(work, args.pgbench_tx, args.repeat)
    if args.memory_gb:
        result["memory"] = bench_memory(work, args.memory_gb)
    result["machine"]["load_after"] = os.getloadavg()
    out = RESULTS if args.only is None else RESULTS.with_name(f"logs_{args.only}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if "access" in result:
        a = result["access"]
        print(f"access log {a['log_bytes'] / 1e6:.0f} MB: GoAccess {a['goaccess']['seconds']}s "
              f"({a['goaccess']['mb_per_s']} MB/s), upkeeper {a['upkeeper']['seconds']}s "
              f"({a['upkeeper']['mb_per_s']} MB/s, scan alone {a['upkeeper']['scan_mb_per_s']} MB/s) -> "
              f"{a['speedup_vs_goaccess']}x wall, {a['cpu_ratio_vs_goaccess']}x CPU; peak RSS "
              f"{a['upkeeper']['peak_rss_mb']} MB")
    if "postgres" in result:
        p = result["postgres"]
        print(f"postgres log {p['log_bytes'] / 1e6:.0f} MB, {p['statements']} statements: pgBadger -j2 "
              f"{p['pgbadger_j2']['seconds']}s, upkeeper {p['upkeeper']['seconds']}s (scan "
              f"{p['upkeeper']['scan_seconds']}s) -> {p['speedup_vs_pgbadger_j2']}x wall, "
              f"{p['cpu_ratio_vs_pgbadger_j2']}x CPU")
        c = p["csvlog"]
        print(f"the same as csvlog, {c['log_bytes'] / 1e6:.0f} MB: pgBadger -j2 {c['pgbadger_j2']['seconds']}s, "
              f"upkeeper {c['upkeeper']['seconds']}s (scan {c['upkeeper']['scan_seconds']}s, "
              f"{c['upkeeper']['scan_mb_per_s']} MB/s) -> {c['speedup_vs_pgbadger_j2']}x wall; csvlog scan "
              f"{c['scan_seconds_vs_stderr']}x the stderr scan's time")
        sl = p.get("syslog")
        if sl:
            print(f"the same through rsyslogd, {sl['log_bytes'] / 1e6:.0f} MB: pgBadger -f syslog -j2 "
                  f"{sl['pgbadger_j2']['seconds']}s, upkeeper {sl['upkeeper']['seconds']}s (scan "
                  f"{sl['upkeeper']['scan_seconds']}s) -> {sl['speedup_vs_pgbadger_j2']}x wall")
    if "memory" in result:
        mm = result["memory"]
        print(f"{mm['log_bytes'] / 1e9:.1f} GB access log: {mm['seconds']}s, peak RSS {mm['peak_rss_mb']} MB")
    print(f"written {out}")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
