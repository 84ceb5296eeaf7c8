"""Nodes sharing a PostgreSQL history judge each other's leases and heartbeats on the database server's clock.

Each node used to stamp its leases (``expires_at``) and daemon heartbeats (``last_seen``) with its own clock, and
to judge the others' with it: a node whose clock ran 5 minutes ahead (an NTP failure on a small VM) took a live
run's job lock for a dead one's -- the job ran twice at once -- and marked the live run ``interrupted``; a daemon
whose clock ran behind was reported ``died``.  The skewed nodes here are real processes run under libfaketime
(apt package ``faketime``, installed by scripts/ensure-system-deps.sh)."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon_support import daemon_process, stop_daemon, wait_for
from upkeeper.core.history import CLOCK_SKEW_WARN, OVERLAP_SKIP, History, NewRun, clock_skew_warning
from upkeeper.sandbox.postgres import PostgresCluster


def skewed_env(offset: str) -> dict[str, str]:
    """The environment that runs a process with its clock ``offset`` off (libfaketime: ``+5m``, ``-5m``).  Its
    monotonic clock is offset too, which intervals do not mind: left alone (FAKETIME_DONT_FAKE_MONOTONIC),
    libfaketime 0.9.10 fails Python's time.sleep with EINVAL (an absolute clock_nanosleep)."""
    libs = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1")) or sorted(
        glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not libs:
        pytest.skip("needs libfaketime (apt-get install faketime; scripts/ensure-system-deps.sh installs it)")
    return {**os.environ, "LD_PRELOAD": libs[0], "FAKETIME": offset,
            "PYTHONPATH": os.pathsep.join(sys.path), "PYTHONUNBUFFERED": "1"}


def pg_url(pg: PostgresCluster, db: str) -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:{pg.port}/{db}"


def test_libfaketime_skews_a_real_python_process() -> None:
    """The premise of the tests below: the skewed process's clock is minutes off, this one's is not."""
    out = subprocess.run([sys.executable, "-c", "import time; print(time.time())"], env=skewed_env("+5m"),
                         capture_output=True, text=True, check=True, timeout=60).stdout
    assert 280 < float(out) - time.time() < 320, out


def _skewed(offset: str, script: str, *args: str) -> Any:
    """Run ``script`` (its argv: ``args``) in a Python process whose clock is ``offset`` off; its last stdout line
    as JSON."""
    res = subprocess.run([sys.executable, "-c", script, *args], env=skewed_env(offset), capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.splitlines()[-1])


# -- a job's lock held by a live ``upkeeper run`` of another node -----------------------------------------------


def test_a_node_whose_clock_runs_ahead_does_not_take_over_a_live_runs_job_lock(
        make_config: Any, cli: Any, pg: PostgresCluster, pg_db: str, tmp_path: Path) -> None:
    """A real ``upkeeper run`` of another node (a PID namespace of its own: judged by its lease) holds the job's
    lock and refreshes it; an ``upkeeper run`` of the same job on a node whose clock runs 5 minutes ahead found
    the lease run out more than lease_grace ago, took the lock and ran the job a second time at once.  Now the
    lease is stamped and judged on the database's clock: the second run is skipped, the first keeps its lock."""
    from services import pid_namespace_argv

    ns = pid_namespace_argv()
    url = pg_url(pg, pg_db)
    cfg = make_config({"history": url.replace("postgresql+psycopg://", "postgresql://"),
                       "jobs": {"nap": {"task": "debug.sleep", "options": {"seconds": 600}}}})
    history = History(url)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    first = subprocess.Popen([*ns, sys.executable, "-m", "upkeeper", "--config", str(cfg), "run", "nap", "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, env=env)
    second: subprocess.Popen[str] | None = None
    try:
        wait_for("the first run to hold the job lock", lambda: first.poll() is not None or (
            history.lock_holder("job:nap") is not None and bool(history.runs(job="nap", statuses=["running"]))),
            timeout=120)
        assert first.poll() is None, first.communicate()
        [running] = history.runs(job="nap", statuses=["running"])
        holder = history.lock_holder("job:nap")
        assert holder is not None and holder.owner.endswith(f"/{running.id}") and "@pidns" in holder.owner
        second = subprocess.Popen([sys.executable, "-m", "upkeeper", "--config", str(cfg), "run", "nap", "--json"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  start_new_session=True, env=skewed_env("+5m"))
        # until it ends (skipped), or takes the lock over (then it would sleep its 600 s)
        wait_for("the skewed run to end or take the lock", lambda: second is not None and (
            second.poll() is not None or getattr(history.lock_holder("job:nap"), "owner", None) != holder.owner),
            timeout=120)
        now = history.lock_holder("job:nap")
        assert now is not None and now.owner == holder.owner, f"the job lock was taken over by {now and now.owner}"
        out, err = second.communicate(timeout=60)
        [shown] = json.loads(out)
        assert shown["status"] == "skipped", (shown, err)
        skipped = history.get_run(shown["run_id"])
        assert skipped is not None and skipped.summary.startswith(OVERLAP_SKIP), skipped and skipped.summary
        assert history.get_run(running.id).status == "running"  # type: ignore[union-attr]
    finally:
        for p in (first, second):
            if p is not None:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                p.communicate(timeout=60)  # (and its pipes closed)
        history.close()


# -- leases and orphans, judged by a skewed node or written by one -------------------------------------------------

_TAKE = """
import json, sys
from datetime import timedelta
from upkeeper.core.history import History, NewRun
from datetime import UTC, datetime
h = History(sys.argv[1])
out = {"orphans": h.recover_orphans("skewed"),
       "acquire": h.acquire_lock("job:held", "skewed:1:1/9", "skewed", timedelta(seconds=90))}
rid = h.create_run(NewRun("started", "debug.noop", None, datetime.now(UTC)), "skewed:1:1", "skewed")
out["start"] = h.start_run_locked(rid, datetime.now(UTC), "skewed:1:1", "job:started", f"skewed:1:1/{rid}",
                                  "skewed", timedelta(seconds=90))
h.close()
print(json.dumps(out))
"""


@pytest.mark.parametrize("offset", ["+5m", "-5m"])
def test_leases_are_stamped_and_judged_on_the_databases_clock(offset: str, pg: PostgresCluster, pg_db: str) -> None:
    """A node 5 minutes ahead judged live leases of another node (``acquire_lock``, ``start_run_locked``, and
    ``recover_orphans`` of a cron run that has no daemon heartbeat) as run out long ago; a node 5 minutes behind
    wrote leases that every other node took for run out.  On either side of the skew, now: held is held."""
    url = pg_url(pg, pg_db)
    h = History(url)
    try:
        # this node (an accurate clock) holds two locks, and a run whose process lives elsewhere, leased
        assert h.acquire_lock("job:held", "othernode:1:1/1", "othernode", timedelta(seconds=90))
        cron = h.create_run(NewRun("cron", "debug.noop", None, h.now(), status="running"), "othernode:2:2", "othernode")
        assert cron is not None and h.acquire_lock("job:cron", f"othernode:2:2/{cron}", "othernode",
                                                   timedelta(seconds=90))
        assert h.acquire_lock("job:started", "othernode:3:3/1", "othernode", timedelta(seconds=90))
        got = _skewed(offset, _TAKE, url)
        assert got == {"acquire": False, "start": False, "orphans": []}, got
        assert h.get_run(cron).status == "running"  # type: ignore[union-attr]
        # and the leases the skewed node writes: here they are as fresh as they are there
        h.release_lock("job:held", "othernode:1:1/1")
        h.release_lock("job:started", "othernode:3:3/1")
        got = _skewed(offset, _TAKE, url)
        assert (got["acquire"], got["start"]) == (True, True), got
        assert not h.acquire_lock("job:held", "othernode:1:1/2", "othernode", timedelta(seconds=90))
        assert not h.acquire_lock("job:started", "othernode:1:1/2", "othernode", timedelta(seconds=90))
        for name in ("job:held", "job:started"):
            lock = h.lock_holder(name)
            assert lock is not None
            assert abs((lock.expires_at - h.now()) - timedelta(seconds=90)) < timedelta(seconds=30), lock.expires_at
    finally:
        h.close()


_REFRESH = """
import sys
from datetime import timedelta
from upkeeper.core.history import History
h = History(sys.argv[1])
h.refresh_locks("othernode:1:1", timedelta(seconds=90))
h.close()
print("null")
"""


def test_a_lease_refreshed_by_a_node_whose_clock_runs_behind_stays_held(pg: PostgresCluster, pg_db: str) -> None:
    url = pg_url(pg, pg_db)
    h = History(url)
    try:
        assert h.acquire_lock("job:r", "othernode:1:1/7", "othernode", timedelta(seconds=1))
        _skewed("-5m", _REFRESH, url)
        lock = h.lock_holder("job:r")
        assert lock is not None and lock.expires_at - h.now() > timedelta(seconds=60), lock and lock.expires_at
        assert not h.acquire_lock("job:r", "othernode:9:9/8", "othernode", timedelta(seconds=90))
    finally:
        h.close()


# -- daemon heartbeats, and saying that the clock is off ----------------------------------------------------------


def test_a_daemon_whose_clock_runs_behind_is_alive_and_says_its_clock_is_off(
        make_config: Any, cli: Any, pg: PostgresCluster, pg_db: str, tmp_path: Path) -> None:
    """A real daemon 5 minutes behind: its heartbeats were 5 minutes old as they were written, so ``status`` on an
    accurate node called it dead ('died', ``--check`` exit 1: a false page).  Now its heartbeat is on the database's
    clock: alive, not stalled.  The daemon says once, as it starts, that its clock is off, naming both times and
    how to fix it; ``status`` says so on that node, and not on an accurate one."""
    url = pg_url(pg, pg_db)
    cfg = make_config({"history": url.replace("postgresql+psycopg://", "postgresql://"), "node": "laggard",
                       "daemon": {"heartbeat": "1s"}, "jobs": {"quick": {"task": "debug.noop"}}})
    log = tmp_path / "daemon.log"
    history = History(url)
    try:
        with daemon_process(cfg, log, **{k: v for k, v in skewed_env("-5m").items()
                                         if k.startswith(("LD_PRELOAD", "FAKETIME"))}) as p:
            wait_for("the daemon's heartbeat", lambda: any(d.node == "laggard" for d in history.daemons()), log)
            wait_for("the clock warning", lambda: "clock:" in log.read_text(), log)
            said = " ".join(log.read_text().split())
            assert "this node's clock (" in said and "behind the history database's (" in said, said
            assert "timedatectl set-ntp true" in said and "chronyc" in said, said
            assert said.count("clock:") == 1, said
            res = cli(["--config", cfg, "status", "--json", "--check"])
            assert res.code == 0, res.output
            [d] = res.json()["daemons"]
            assert (d["alive"], d["died"], d["stalled"]) == (True, False, False), d
            here = res.json()["clock"]
            assert here is not None and here["warning"] is None and abs(here["ahead_seconds"]) < 30, here
            text = cli(["--config", cfg, "status"])
            assert "daemon: running on laggard" in text.out and "clock:" not in text.out, text.output
            stop_daemon(p, log)
    finally:
        history.close()
    # ``status`` on the skewed node says it
    res = subprocess.run([sys.executable, "-m", "upkeeper", "--config", str(cfg), "status"], env=skewed_env("-5m"),
                         capture_output=True, text=True, timeout=120)
    said = " ".join(res.stdout.split())
    assert res.returncode == 0 and "clock: this node's clock (" in said and "behind" in said, res.stdout + res.stderr


def test_the_clock_warning_names_both_times_the_skew_and_the_fix() -> None:
    from datetime import UTC, datetime

    here = datetime(2026, 5, 1, 3, 5, 0, tzinfo=UTC)
    server = datetime(2026, 5, 1, 3, 0, 0, tzinfo=UTC)
    said = clock_skew_warning((here, server, here - server))
    assert said is not None
    assert said.startswith("this node's clock (2026-05-01 03:05:00 UTC) is 5m ahead of the history database's "
                           "(2026-05-01 03:00:00 UTC)"), said
    assert clock_skew_warning((server, here, server - here)) is not None
    assert clock_skew_warning((here, here - CLOCK_SKEW_WARN, CLOCK_SKEW_WARN)) is None
    assert clock_skew_warning(None) is None
