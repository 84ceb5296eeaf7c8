"""A process the parent started, driven by its forked child (:mod:`upkeeper.core.adopted`): the child talks to it
through the inherited pipes, sees it run and end, reads its exit status (which only the parent could ``waitpid``)
and its stderr, and can kill it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from upkeeper.core import adopted, proc

pytestmark = pytest.mark.skipif(not adopted.supported(), reason="needs pidfds and /proc (Linux 5.3+)")

#: reads a line, answers it, says something on stderr, exits with the code the line names
ECHO = ("import sys\nline = sys.stdin.readline()\nsys.stdout.write('echo:' + line); sys.stdout.flush()\n"
        "sys.stderr.write('password=hunter2 went wrong\\n'); sys.stderr.flush()\nsys.exit(int(line))\n")


def _in_fork(work: Any) -> Any:
    """Run ``work()`` in a child forked now; what it returns (as JSON), or the child's error."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the forked child (coverage does not follow it)
        os.close(r)
        try:
            out = {"ok": work()}
        except BaseException as exc:
            out = {"error": f"{type(exc).__name__}: {exc}"}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        got = json.loads(fh.read() or b'{"error": "no answer"}')
    os.waitpid(pid, 0)
    assert "error" not in got, got["error"]
    return got["ok"]


def test_the_forked_child_drives_its_parents_process_and_reads_its_exit_status_and_stderr() -> None:
    sp = proc.spawn([sys.executable, "-c", ECHO], stdin=proc.PIPE, stdout=proc.PIPE, stderr_file=True)
    try:
        def work() -> Any:
            me = adopted.Adopted(sp.popen.pid, sp.popen.stdin, sp.popen.stdout)
            running = me.poll()
            try:
                me.wait(timeout=0.2)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            assert me.stdin is not None and me.stdout is not None
            me.stdin.write(b"3\n")
            me.stdin.flush()
            answer = me.stdout.readline().decode()
            rc = me.wait(timeout=30)
            sp.popen = me
            return [running, timed_out, answer, rc, me.poll(), sp.collector.text]

        running, timed_out, answer, rc, again, err = _in_fork(work)
        assert running is None and timed_out
        assert answer == "echo:3\n"
        assert rc == 3 and again == 3  # (not 0, as Popen.poll says of a process it cannot wait for)
        assert "went wrong" in err and "hunter2" not in err  # the tail of its stderr, redacted
        assert sp.popen.wait(timeout=30) == 3  # the parent reaps it: the status the child read was the real one
    finally:
        sp.kill()
        sp.__exit__(None, None, None)


def test_the_forked_child_can_kill_it_and_sees_the_signal() -> None:
    sp = proc.spawn([sys.executable, "-c", ECHO], stdin=proc.PIPE, stdout=proc.PIPE, stderr_file=True)
    try:
        def work() -> Any:
            me = adopted.Adopted(sp.popen.pid, sp.popen.stdin, sp.popen.stdout)
            me.kill()
            return me.wait(timeout=30)

        assert _in_fork(work) == -9
        assert sp.popen.wait(timeout=30) == -9
    finally:
        sp.__exit__(None, None, None)


def test_the_exit_status_of_a_running_or_unknown_process_is_none() -> None:
    assert adopted.exit_status(os.getpid()) is None
    assert adopted.exit_status(2**22 + 12345) is None  # (beyond pid_max: no such process)


def test_a_spawned_process_with_its_stderr_in_a_file_starts_no_thread() -> None:
    """What ``upkeeper run`` starts before it forks must leave it with one thread (a fork copies only the calling
    one: see spawn.fork_early)."""
    import threading

    before = threading.active_count()
    sp = proc.spawn([sys.executable, "-c", "import sys; sys.stderr.write('x' * 100000); sys.exit(1)"],
                    stderr_file=True)
    try:
        assert threading.active_count() == before
        assert os.getpgid(sp.popen.pid) == sp.popen.pid != os.getpgid(0)  # (the terminal's Ctrl-C is not for it)
        with pytest.raises(Exception) as exc:
            sp.wait(timeout=30)
        assert sp.popen.returncode == 1 and "xxxx" in str(getattr(exc.value, "stderr", "")) + sp.collector.text
        assert len(sp.collector.text) <= adopted.TAIL
    finally:
        sp.__exit__(None, None, None)
