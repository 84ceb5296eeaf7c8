"""The worker the CLI starts before its imports is the one that runs the task."""

from __future__ import annotations

import os
import pickle
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from upkeeper.cli.main import _early_worker_wanted
from upkeeper.config.loader import load_text
from upkeeper.core import spawn, worker
from upkeeper.core.execute import WorkRequest
from upkeeper.core.executor import WorkerPool
from upkeeper.core.jobs import build_setup


def _discard_early() -> None:
    got = spawn.take_early()
    if got is not None:
        popen, sock = got
        os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(10)
        sock.close()
        assert popen.stdout is not None
        popen.stdout.close()


def test_the_pool_adopts_the_early_worker(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pid_file = tmp_path / "pid"
    setup = build_setup(load_text(f"jobs:\n  nap:\n    task: debug.sleep\n"
                                  f"    options: {{seconds: 0, pid_file: '{pid_file}'}}\n"))
    spawn.start_early()
    early_pid = spawn._early[0][0].pid
    pool = WorkerPool(size=1)
    try:
        req = WorkRequest(run_id=None, job=setup.jobs["nap"], config=setup.config, history_url=None,
                          scheduled_for=datetime.now(UTC))
        out = pool.execute(req, timeout=60)
        assert out.status == "ok", out.result.summary
        assert out.worker_pid == early_pid
        assert int(pid_file.read_text().split()[0]) == early_pid  # the task ran in that very process
        assert spawn._early == []  # taken once
    finally:
        pool.shutdown()


def test_only_upkeeper_run_starts_a_worker_early() -> None:
    for argv in (["/usr/bin/pytest", "run"], ["/venv/bin/upkeeper", "status"], ["/venv/bin/upkeeper", "--help"],
                 ["/venv/bin/upkeeper", "run", "--help"], ["/venv/bin/upkeeper", "run", "j", "--at", "03:00"]):
        assert not _early_worker_wanted(argv), argv
    assert _early_worker_wanted(["/venv/bin/upkeeper", "--config", "run", "run", "nightly"])


def test_upkeeper_run_forks_its_worker_after_its_imports(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The worker of ``upkeeper run`` is forked from the CLI once its modules are imported (not a new
    interpreter importing them again): it runs the task in a session of its own, as a child of the CLI,
    with none of the CLI's other files open, and the run is recorded as usual."""
    import json
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "pid"
    cfg = tmp_path / "upkeeper.yaml"
    cfg.write_text(f"history: {tmp_path / 'history.db'}\njobs:\n  nap:\n    task: debug.sleep\n"
                   f"    options: {{seconds: 1.5, pid_file: '{pid_file}'}}\n")
    extra_r, extra_w = os.pipe()  # a file the CLI inherits: its worker must not hold it
    cli = subprocess.Popen([sys.executable, "-m", "upkeeper", "--config", str(cfg), "run", "nap", "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, pass_fds=(extra_w,))
    os.close(extra_w)
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text().endswith("\n")) and time.monotonic() < deadline:
            time.sleep(0.02)
        pid = int(pid_file.read_text().split()[0])
        proc = Path(f"/proc/{pid}")
        cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        assert b"upkeeper.core.worker" not in cmdline and b"run" in cmdline, cmdline  # the CLI's own command line
        assert (proc / "stat").read_text().rsplit(")", 1)[1].split()[1] == str(cli.pid)  # its parent
        assert os.getpgid(pid) == pid and os.getsid(pid) == pid
        inherited = os.readlink(f"/proc/{cli.pid}/fd/{extra_w}")
        assert inherited not in {os.readlink(fd) for fd in (proc / "fd").iterdir()}
        out, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        os.close(extra_r)
    assert cli.returncode == 0, err
    run = json.loads(out)[0]
    assert run["status"] == "ok" and run["summary"] == "slept 1.5s"


def test_prestarted_workers_get_the_config_before_their_first_run() -> None:
    import time

    setup = build_setup(load_text("jobs:\n  nap:\n    task: debug.sleep\n    options: {seconds: 0}\n"))
    pool = WorkerPool(size=2)
    try:
        pool.prestart(2, config=setup.config)
        deadline = time.monotonic() + 30
        while pool._idle.qsize() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = list(pool._idle.queue)
        assert len(workers) == 2 and all(w.config_token == 1 for w in workers)
        sent: list[str] = []
        for w in workers:  # from now on only runs travel, never the config again
            real_send, real_bytes = w.conn.send, w.conn.send_bytes
            w.conn.send = lambda msg, real_send=real_send: (sent.append(msg[0]), real_send(msg))[1]  # type: ignore[method-assign]
            w.conn.send_bytes = (  # type: ignore[method-assign]
                lambda buf, real_bytes=real_bytes: (sent.append(pickle.loads(buf)[0]), real_bytes(buf))[1])
        req = WorkRequest(run_id=None, job=setup.jobs["nap"], config=setup.config, history_url=None,
                          scheduled_for=datetime.now(UTC))
        assert pool.execute(req, timeout=60).status == "ok"
        assert sent == ["run"]
    finally:
        pool.shutdown()


def _maps(pid: int) -> str:
    with open(f"/proc/{pid}/maps") as fh:
        return fh.read()


def test_warm_makes_an_idle_worker_import_the_task_modules_and_their_libraries(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``upkeeper run`` warms the worker while it claims the runs: the first request finds psycopg loaded."""
    import time

    setup = build_setup(load_text("jobs:\n  nap:\n    task: debug.noop\n"))
    pool = WorkerPool(size=1)
    try:
        pool.prestart(1)
        deadline = time.monotonic() + 60
        while pool._idle.empty() and time.monotonic() < deadline:
            time.sleep(0.05)
        w = pool._idle.queue[0]
        assert "psycopg_binary" not in _maps(w.pid)  # task modules bind psycopg lazily
        pool.warm(config=setup.config, modules=["upkeeper.tasks.postgres.vacuum"],
                  history_url=f"sqlite:///{tmp_path / 'h.db'}")
        while "psycopg_binary" not in _maps(w.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "psycopg_binary" in _maps(w.pid)
        req = WorkRequest(run_id=None, job=setup.jobs["nap"], config=setup.config, history_url=None,
                          scheduled_for=datetime.now(UTC))
        out = pool.execute(req, timeout=60)  # the config was sent with the warm-up: the run still works
        assert out.status == "ok", out.result.summary
        assert out.worker_pid == w.pid
    finally:
        pool.shutdown()


def test_an_early_worker_imports_the_named_jobs_task_modules_before_it_is_asked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``upkeeper run JOB`` names the config and the jobs to the worker it starts first: it imports their task
    modules (and psycopg) on its own core while the CLI is still importing, not after the CLI sent ``warm``."""
    import time

    cfg = tmp_path / "upkeeper.yaml"
    cfg.write_text("targets:\n  db: {kind: postgres, host: localhost}\n"
                   "jobs:\n  vac:\n    task: postgres.vacuum\n    target: db\n  nop:\n    task: debug.noop\n")
    assert worker.hinted_modules(str(cfg), ["vac", "nop", "missing"]) == ["upkeeper.tasks.debug",
                                                                          "upkeeper.tasks.postgres.vacuum"]
    assert worker.hinted_modules(str(tmp_path / "nowhere.yaml"), ["vac"]) == []
    fifo = tmp_path / "fifo.yaml"  # never opened: whatever comes through it is the CLI's
    os.mkfifo(fifo)
    got: list[list[str]] = []
    reader = threading.Thread(target=lambda: got.append(worker.hinted_modules(str(fifo), ["vac"])), daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # blocked opening the pipe: unblock it before failing
        with open(fifo, "w"):
            pass
    assert got == [[]]
    try:
        spawn.start_early([str(cfg), "vac"])
        pid = spawn._early[0][0].pid
        deadline = time.monotonic() + 60
        while "psycopg_binary" not in _maps(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "psycopg_binary" in _maps(pid)
    finally:
        _discard_early()


def _end_forked(popen: spawn.ForkedWorker, conn: Any) -> None:
    """A test's forked worker killed (its process group) if it still runs, its connection and stdout closed."""
    if popen.poll() is None:
        os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(10)
    conn.close()
    if popen.stdout is not None:
        popen.stdout.close()


def test_a_forked_worker_stopped_mid_task_exits_quietly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The pool SIGTERMs a worker's group on a timeout or Ctrl-C; the worker unwinds the task (SystemExit 143).
    A forked worker must end as a new interpreter does: exit 143 and no 'Traceback … SystemExit: 143' in its
    output, which the pool copies into the run's log."""
    import time
    from multiprocessing.connection import Connection

    pid_file = tmp_path / "pid"
    setup = build_setup(load_text(f"jobs:\n  nap:\n    task: debug.sleep\n"
                                  f"    options: {{seconds: 60, pid_file: '{pid_file}'}}\n"))
    popen, sock = spawn.fork_worker()
    conn = Connection(sock.detach())
    try:
        assert conn.recv()[0] == "ready"
        req = WorkRequest(run_id=None, job=setup.jobs["nap"], config=setup.config, history_url=None,
                          scheduled_for=datetime.now(UTC))
        conn.send_bytes(pickle.dumps(("run", req), pickle.HIGHEST_PROTOCOL))
        deadline = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert int(pid_file.read_text().split()[0]) == popen.pid
        os.killpg(popen.pid, signal.SIGTERM)
        assert popen.wait(30) == 128 + signal.SIGTERM
        assert popen.stdout is not None
        out = popen.stdout.read().decode()
        assert "Traceback" not in out and "SystemExit" not in out, out
    finally:
        _end_forked(popen, conn)


def test_waiting_for_a_forked_worker_returns_its_status_when_it_ends_and_times_out_while_it_runs() -> None:
    """``wait`` wakes when the worker ends (a pidfd on Linux: the CLI reaps its worker at every exit) and
    still honours its timeout."""
    import subprocess
    import time
    from multiprocessing.connection import Connection

    import pytest

    popen, sock = spawn.fork_worker()
    conn = Connection(sock.detach())
    try:
        assert conn.recv()[0] == "ready"
        t0 = time.monotonic()
        with pytest.raises(subprocess.TimeoutExpired):
            popen.wait(0.2)
        assert time.monotonic() - t0 >= 0.2
        conn.send(("exit",))
        assert popen.wait(30) == 0
        assert popen.wait(0) == 0 and popen.poll() == 0
    finally:
        _end_forked(popen, conn)


def test_upkeeper_run_imports_what_its_worker_needs_too_before_forking_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Before the fork, ``upkeeper run JOB`` imports the named jobs' task modules (the CLI validates their options,
    the worker runs them) and the history database's dialect and driver (both open it): once, not in each."""
    import json
    import subprocess
    import sys

    cfg = tmp_path / "upkeeper.yaml"
    cfg.write_text(f"history: {tmp_path / 'h.db'}\njobs:\n  nop:\n    task: debug.noop\n"
                   "  logs:\n    task: logs.errors\n    options: {paths: [/nowhere.log]}\n")
    code = ("import sys, json\nfrom upkeeper.core.worker import preload\n"
            "def loaded():\n"
            "    return [m in sys.modules for m in ('upkeeper.tasks.debug', 'upkeeper.tasks.logs.errors', "
            "'sqlalchemy.dialects.sqlite', 'sqlite3')]\n"
            "preload([sys.argv[1] + '.missing', 'nop'])\n"  # nothing to go by: nothing imported
            "before = loaded()\n"
            "preload(sys.argv[1:])\n"
            "print(json.dumps([before, loaded()]))")
    out = subprocess.run([sys.executable, "-c", code, str(cfg), "nop"], capture_output=True, text=True, check=True,
                         env={"PATH": os.environ["PATH"], "PYTHONPATH": os.pathsep.join(sys.path)}).stdout
    assert json.loads(out) == [[False, False, False, False], [True, False, True, True]]
