"""host.process against real child processes: one leaks steadily, one holds its memory."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ops_support import checks, run_task
from upkeeper.core.task import MemoryState, Severity

LEAKY = """
import sys, time
held = []
print("ready", flush=True)
while True:
    held.append(b"x" * 3_000_000)   # touched pages: resident, 3 MB every 0.1 s
    time.sleep(0.1)
"""
STEADY = """
import sys, time
held = b"x" * 40_000_000
print("ready", flush=True)
while True:
    time.sleep(1)
"""


@pytest.fixture
def children() -> Iterator[dict[str, tuple[str, subprocess.Popen[str]]]]:
    tag = uuid.uuid4().hex[:8]
    procs = {}
    for kind, code in (("leaky", LEAKY), ("steady", STEADY)):
        marker = f"upk-{kind}-{tag}"
        p = subprocess.Popen([sys.executable, "-c", code, marker], stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        procs[kind] = (marker, p)
    yield procs
    for _, p in procs.values():
        p.kill()
        p.wait()
        assert p.stdout is not None
        p.stdout.close()


def test_steady_growth_is_a_leak_and_steady_memory_is_not(children: dict[str, tuple[str, subprocess.Popen[str]]]) -> None:
    opts = {
        "processes": [{"label": "leaky", "cmdline": children["leaky"][0]},
                      {"label": "steady", "cmdline": children["steady"][0]}],
        "leak_samples": 6,
        "rss_warning": "1GB",
    }
    state = MemoryState()
    # sampled the way the scheduler does it: one sample per run, the series kept in the job's state
    for i in range(6):
        res = run_task("host.process", options=opts, state=state)
        if i < 5:
            assert "host.memory_leak" not in checks(res)  # not judged before N samples
            time.sleep(0.3)
    leaks = checks(res)["host.memory_leak"]
    assert [f.subject for f in leaks] == [f"leaky (pid {children['leaky'][1].pid})"]
    f = leaks[0]
    assert f.severity is Severity.WARNING and f.value > 10 * 1024 * 1024 and f.data["r2"] >= 0.9
    assert f.data["rss_now"] > f.data["rss_first"]
    assert res.metrics["proc.steady.rss_bytes"] > 40_000_000
    assert res.metrics["proc.leaky.count"] == 1
    assert res.metrics[f"proc.leaky.{children['leaky'][1].pid}.growth_bytes_per_hour"] > 0


def test_several_samples_in_one_run_and_the_size_limit(children: dict[str, tuple[str, subprocess.Popen[str]]]) -> None:
    opts = {
        "processes": [{"label": "steady", "cmdline": children["steady"][0]}],
        "samples_per_run": 4, "sample_interval": "0.2s", "leak_samples": 4,
        "rss_warning": "30MB",  # the procedures say 1 GB; a small limit for a small test process
    }
    res = run_task("host.process", options=opts)
    found = checks(res)
    assert "host.memory_leak" not in found
    f = found["host.process_memory"][0]
    assert f.severity is Severity.WARNING and f.value > 30_000_000 and f.threshold == 30_000_000


def test_a_restarted_process_starts_a_new_series(children: dict[str, tuple[str, subprocess.Popen[str]]]) -> None:
    marker, leaky = children["leaky"]
    opts = {"processes": [{"label": "app", "cmdline": marker}], "leak_samples": 3}
    state = MemoryState()
    run_task("host.process", options=opts, state=state)
    time.sleep(0.2)
    run_task("host.process", options=opts, state=state)
    leaky.kill()
    leaky.wait()
    again = subprocess.Popen([sys.executable, "-c", LEAKY, marker], stdout=subprocess.PIPE, text=True)
    try:
        assert again.stdout is not None and again.stdout.readline().strip() == "ready"
        res = run_task("host.process", options=opts, state=state)
        assert "host.memory_leak" not in checks(res)  # one sample of the new process, not three
        assert list(state.get("samples")) == [k for k in state.get("samples") if k.startswith(f"{again.pid}:")]
    finally:
        again.kill()
        again.wait()
        assert again.stdout is not None
        again.stdout.close()


def test_missing_process_and_validation() -> None:
    from pydantic import ValidationError

    from upkeeper.tasks.host.process import ProcessOptions

    res = run_task("host.process", options={"processes": [{"name": "no-such-daemon-xyz"},
                                                          {"name": "also-missing", "required": False}]})
    found = checks(res)
    assert [f.subject for f in found["host.process_missing"]] == ["no-such-daemon-xyz"]
    with pytest.raises(ValidationError, match="at least one of"):
        ProcessOptions.model_validate({"processes": [{"label": "x"}]})
    with pytest.raises(ValidationError, match="regular expression"):
        ProcessOptions.model_validate({"processes": [{"cmdline": "("}]})
    with pytest.raises(ValidationError, match="is a path.*use name: 'node'"):  # would never match anything
        ProcessOptions.model_validate({"processes": [{"name": "/usr/bin/node"}]})


def test_a_zombie_is_not_a_running_process(tmp_path: Path) -> None:
    """A daemon that crashed under a parent that never reaps it stays in the process table as a zombie
    (RSS 0, no command line) with its name and pid: it is not running, so a selector by pid file or by
    name is missing, and the finding says why."""
    marker = f"upk-zombie-{uuid.uuid4().hex[:8]}"
    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time\n"
         "child = subprocess.Popen([sys.executable, '-c', 'pass', sys.argv[1]])\n"
         "print(child.pid, flush=True)\ntime.sleep(60)", marker], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        zombie = int(parent.stdout.readline())
        deadline = time.monotonic() + 10
        while psutil.Process(zombie).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        (tmp_path / "app.pid").write_text(f"{zombie}\n")
        res = run_task("host.process", options={"processes": [{"label": "app", "pid_file": str(tmp_path / "app.pid"),
                                                               "name": psutil.Process(zombie).name()}]})
        missing = checks(res)["host.process_missing"]
        assert [f.subject for f in missing] == ["app"]
        assert f"only a zombie: pid {zombie}" in missing[0].message and missing[0].data == {"zombies": [zombie]}
        assert "proc.app.count" not in res.metrics
    finally:
        parent.kill()
        parent.wait()
        assert parent.stdout is not None
        parent.stdout.close()


def test_a_process_restarted_within_a_run_is_counted_once() -> None:
    """With several samples in one run, a process that restarts between them (a crash, a worker recycled by
    gunicorn's max_requests) is one process now, not the old one plus the new one."""
    marker = f"upk-restart-{uuid.uuid4().hex[:8]}"
    code = "import time\nheld = b'x' * 20_000_000\nprint('ready', flush=True)\ntime.sleep(60)"
    procs: list[subprocess.Popen[str]] = []

    def start() -> None:
        p = subprocess.Popen([sys.executable, "-c", code, marker], stdout=subprocess.PIPE, text=True)
        procs.append(p)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"

    def restart() -> None:
        time.sleep(0.5)
        procs[0].kill()
        procs[0].wait()
        start()

    start()
    restarter = threading.Thread(target=restart)
    restarter.start()
    try:
        res = run_task("host.process", options={"processes": [{"label": "app", "cmdline": marker}],
                                                "samples_per_run": 6, "sample_interval": "1s", "rss_warning": "10MB"})
    finally:
        restarter.join()
        for p in procs:
            p.kill()
            p.wait()
            assert p.stdout is not None
            p.stdout.close()
    assert len(procs) == 2
    assert res.metrics["proc.app.count"] == 1
    assert res.metrics["proc.app.rss_bytes"] == res.metrics["proc.app.max_rss_bytes"]
    assert [f.subject for f in checks(res)["host.process_memory"]] == [f"app (pid {procs[1].pid})"]


def test_pid_file_problems_are_said_not_taken_for_a_stopped_process(tmp_path: Path) -> None:
    """An unreadable pid file (wrong permissions for upkeeper's user; here a directory, which root cannot read
    either) or one holding garbage says nothing about the process: the finding says what is wrong with it."""
    (tmp_path / "dir.pid").mkdir()
    (tmp_path / "junk.pid").write_text("started\n")
    res = run_task("host.process", options={"processes": [
        {"label": "gone", "pid_file": str(tmp_path / "gone.pid")},
        {"label": "unreadable", "pid_file": str(tmp_path / "dir.pid")},
        {"label": "junk", "pid_file": str(tmp_path / "junk.pid")}]})
    found = {f.subject: f for f in checks(res)["host.process_missing"]}
    assert f"pid file {tmp_path / 'gone.pid'} does not exist" in found["gone"].message
    assert f"pid file {tmp_path / 'dir.pid'} cannot be read: Is a directory" in found["unreadable"].message
    assert "read the pid file" in found["unreadable"].remediation
    assert "holds 'started', not a pid" in found["junk"].message


def test_a_process_matched_by_two_selectors_counts_under_both_and_is_judged_once(
        children: dict[str, tuple[str, subprocess.Popen[str]]], tmp_path: Path) -> None:
    """Like the example in docs/host.md: 'name: node' and the app's pid file both match the app's process."""
    marker, steady = children["steady"]
    (tmp_path / "app.pid").write_text(f"{steady.pid}\n")
    state = MemoryState()
    res = run_task("host.process", state=state, options={
        "processes": [{"label": "app", "pid_file": str(tmp_path / "app.pid")}, {"label": "all", "cmdline": marker}],
        "samples_per_run": 3, "sample_interval": "0.1s", "leak_samples": 3, "rss_warning": "30MB"})
    assert res.metrics["proc.app.count"] == 1 and res.metrics["proc.all.count"] == 1
    assert res.metrics["proc.app.rss_bytes"] > 40_000_000 and res.metrics["proc.all.rss_bytes"] > 40_000_000
    assert "app " in res.summary and "all " in res.summary
    assert [f.subject for f in checks(res)["host.process_memory"]] == [f"app (pid {steady.pid})"]
    (series,) = state.get("samples").values()
    assert len(series["points"]) == 3  # one point per round, not one per selector


def _spawn_with_pid(pid: int, argv: list[str]) -> subprocess.Popen[bytes] | None:
    """A process given ``pid`` (the kernel hands out ``ns_last_pid + 1`` next, as CRIU restores pids): another
    process forking at that instant may take it, so a few tries."""
    for _ in range(50):
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        p = subprocess.Popen(argv)
        if p.pid == pid:
            return p
        p.kill()
        p.wait()
    return None


def test_a_pid_file_left_by_a_dead_daemon_is_not_watched_as_the_process_that_took_its_pid(tmp_path: Path) -> None:
    """The daemon dies, its pid file stays, and the kernel gives its pid to another process: the pid file names
    a live process, so before this every run watched (and measured, and called healthy) an unrelated process.
    The file is the one the previous run saw, with the same pid, but that pid's process started at another
    moment: the selector is missing, and the finding names who holds the pid now.  A daemon restarted (its pid
    file written again) is watched again."""

    if not os.access("/proc/sys/kernel/ns_last_pid", os.W_OK):
        pytest.skip("choosing a pid (ns_last_pid) needs root")
    pid_file = tmp_path / "app.pid"
    opts = {"processes": [{"label": "app", "pid_file": str(pid_file)}]}
    state = MemoryState()
    daemon = subprocess.Popen(["sleep", "300"])
    pid = daemon.pid
    pid_file.write_text(f"{pid}\n")
    res = run_task("host.process", options=opts, state=state)
    assert "host.process_missing" not in checks(res) and res.metrics["proc.app.count"] == 1
    time.sleep(0.05)  # start times count in 10 ms ticks: the pid's next process starts in a later one
    daemon.kill()
    daemon.wait()
    other = _spawn_with_pid(pid, [sys.executable, "-c", "import time; time.sleep(300)"])
    if other is None:
        pytest.fail(f"could not start a process with pid {pid} in 50 tries")
    try:
        for _ in range(2):  # said at every run while the file stays as it is
            res = run_task("host.process", options=opts, state=state)
            missing = checks(res)["host.process_missing"]
            assert [f.subject for f in missing] == ["app"]
            assert f"pid {pid} now belongs to another process" in missing[0].message
            assert psutil.Process(pid).name() in missing[0].message and "left over" in missing[0].message
            assert "proc.app.count" not in res.metrics
        pid_file.write_text(f"{pid}\n")  # the daemon started again, and (by chance) with the same pid
        os.utime(pid_file, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))  # a coarse clock: a new mtime
        res = run_task("host.process", options=opts, state=state)
        assert "host.process_missing" not in checks(res) and res.metrics["proc.app.count"] == 1
    finally:
        other.kill()
        other.wait()


def test_a_pid_file_unchanged_since_before_a_reboot_is_left_over(tmp_path: Path) -> None:
    """A pid file kept across a reboot (not under /run) names whatever process has that pid on the new boot."""
    from upkeeper.tasks.host.process import pid_file_record, stale_pid_file

    pid_file = tmp_path / "app.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    now = pid_file_record(str(pid_file))
    assert now is not None and now["boot"] and now["pid"] == os.getpid()
    assert stale_pid_file(str(pid_file), now, now) == ""
    assert stale_pid_file(str(pid_file), None, now) == ""  # first look: nothing to compare with
    why = stale_pid_file(str(pid_file), {**now, "boot": "an-earlier-boot"}, now)
    assert "has not changed since the last reboot" in why and f"pid {os.getpid()} now belongs" in why
    assert stale_pid_file(str(pid_file), {**now, "boot": "an-earlier-boot", "file": [0, 0]}, now) == ""  # rewritten


@pytest.mark.parametrize("damage", [
    {"samples": 5}, {"samples": ["x"]}, {"pid_files": ["x"]}, {"pid_files": {"P": 5}},
    {"samples": {"ID": 5}}, {"samples": {"ID": {"points": 5}}}, {"samples": {"ID": {"points": [["x", 1]]}}},
    {"samples": {"ID": {"label": "s"}}},
])
def test_a_damaged_saved_state_starts_the_series_again(tmp_path: Path, damage: dict[str, Any]) -> None:
    """State read back from history (another version's, or damaged) crashed host.process at every run, for ever
    (the state that caused it was never written again): 'dict' of a list, 'int' object is not subscriptable,
    float('x')...  What cannot be used is dropped: the memory series starts again."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        pid_file = tmp_path / "app.pid"
        pid_file.write_text(f"{child.pid}\n")
        opts = {"processes": [{"label": "s", "pid_file": str(pid_file)}], "leak_samples": 3}
        state = MemoryState()
        assert run_task("host.process", options=opts, state=state).metrics["proc.s.count"] == 1
        (ident,) = state.get("samples")
        for key, value in damage.items():
            if isinstance(value, dict):
                value = {(ident if k == "ID" else str(pid_file) if k == "P" else k): v for k, v in value.items()}
            state.set(key, value)
        res = run_task("host.process", options=opts, state=state)
        assert res.metrics["proc.s.count"] == 1 and not [f for f in res.findings if "failed" in f.message]
        points = len(state.get("samples")[ident]["points"])
        assert points in (1, 2)  # this run's sample, after the first one's unless that series was dropped
        for _ in range(3 - points):
            again = run_task("host.process", options=opts, state=state)
        assert f"proc.s.{child.pid}.growth_bytes_per_hour" in again.metrics  # judged again from three samples
    finally:
        child.kill()
        child.wait()


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(["a", "points", "label"]), c,
                                                                          max_size=3), max_leaves=12))
def test_usable_samples_keeps_only_series_of_time_and_bytes(saved: Any) -> None:
    from upkeeper.tasks.host.process import usable_samples

    for entry in usable_samples(saved).values():
        for t, v in entry["points"]:
            assert float(t) == t and float(v) == v  # what the leak fit reads


def _kernel_thread() -> int | None:
    """A kernel thread's pid: PF_KTHREAD (0x00200000) in /proc/PID/stat's flags (field 9)."""
    for pid in psutil.pids():
        try:
            raw = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            continue
        if int(raw[raw.rfind(b")") + 2:].split()[6]) & 0x00200000:
            return pid
    return None


def test_a_dead_daemons_pid_file_is_left_over_from_the_first_run(tmp_path: Path) -> None:
    """The daemon died days ago, its pid file stayed, the kernel gave its pid to another process: the first run
    (no memory of the file yet) measured that stranger and called the daemon running.  A daemon writes its pid
    file once it runs, so a process that started after the file was last written cannot be its writer: missing,
    naming who holds the pid now.  The same process with a pid file written after it started (the daemon's own,
    or one rewritten at a reload) is watched."""
    if not os.access("/proc/sys/kernel/ns_last_pid", os.W_OK):
        pytest.skip("choosing a pid (ns_last_pid) needs root")
    pid_file = tmp_path / "app.pid"
    opts = {"processes": [{"label": "app", "pid_file": str(pid_file)}]}
    daemon = subprocess.Popen(["sleep", "300"])
    pid = daemon.pid
    pid_file.write_text(f"{pid}\n")
    days_ago = time.time() - 3 * 86400  # written when the daemon started, days ago (it died since)
    os.utime(pid_file, (days_ago, days_ago))
    daemon.kill()
    daemon.wait()
    other = _spawn_with_pid(pid, [sys.executable, "-c", "import time; time.sleep(300)"])
    if other is None:
        pytest.fail(f"could not start a process with pid {pid} in 50 tries")
    state = MemoryState()  # no memory of the file: a first run
    try:
        for _ in range(2):  # the first run, and every run after it while the file stays as it is
            res = run_task("host.process", options=opts, state=state)
            missing = checks(res)["host.process_missing"]
            assert [f.subject for f in missing] == ["app"]
            assert f"pid file {pid_file} is left over: pid {pid} now belongs to another process" in missing[0].message
            assert f"{psutil.Process(pid).name()!r}" in missing[0].message and "after the pid file" in missing[0].message
            assert "proc.app.count" not in res.metrics
        pid_file.write_text(f"{pid}\n")  # rewritten now (a reload; a restart that got the same pid): its writer
        res = run_task("host.process", options=opts, state=MemoryState())
        assert "host.process_missing" not in checks(res) and res.metrics["proc.app.count"] == 1
    finally:
        other.kill()
        other.wait()


def test_a_daemon_is_not_taken_for_a_stranger_when_the_clock_steps_forward_after_a_run_saw_it(tmp_path: Path) -> None:
    """A run that saw the daemon with its file remembers it: a clock stepped forward since (its start moves on
    the wall clock, its file's mtime does not) does not make it a stranger at the next run."""
    from upkeeper.tasks.host.process import pid_file_record, stale_pid_file

    pid_file = tmp_path / "app.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    seen = pid_file_record(str(pid_file))
    assert seen is not None and stale_pid_file(str(pid_file), None, seen) == ""
    stepped = time.time() - 3600  # as if the clock had been an hour behind when the file was written
    os.utime(pid_file, (stepped, stepped))
    st = os.stat(pid_file)
    now = {**seen, "file": [st.st_ino, st.st_mtime_ns]}
    assert "is left over" in stale_pid_file(str(pid_file), None, now)  # nothing remembered: the mtime speaks
    assert stale_pid_file(str(pid_file), {**now}, now) == ""  # remembered by a run that checked it: the same


def test_a_pid_file_naming_a_kernel_thread_or_a_zombie_is_no_running_daemon(tmp_path: Path) -> None:
    """A kernel thread is never a daemon's process (before this it was measured, RSS 0, and called running);
    a zombie has exited: both are missing, and the finding says which."""
    kthread = _kernel_thread()
    if kthread is None:
        pytest.skip("no kernel thread visible here (a PID namespace)")
    zombie = subprocess.Popen(["true"])
    (tmp_path / "k.pid").write_text(f"{kthread}\n")
    (tmp_path / "z.pid").write_text(f"{zombie.pid}\n")
    try:
        deadline = time.monotonic() + 30
        while psutil.Process(zombie.pid).status() != psutil.STATUS_ZOMBIE:  # exited, not reaped (no wait yet)
            assert time.monotonic() < deadline, "the child did not exit"
            time.sleep(0.01)
        res = run_task("host.process", options={"processes": [
            {"label": "k", "pid_file": str(tmp_path / "k.pid")}, {"label": "z", "pid_file": str(tmp_path / "z.pid")}]})
    finally:
        zombie.wait()
    found = {f.subject: f for f in checks(res)["host.process_missing"]}
    assert f"pid {kthread} now belongs to another process" in found["k"].message
    assert "a kernel thread" in found["k"].message
    assert f"only a zombie: pid {zombie.pid} exited" in found["z"].message
    assert "proc.k.count" not in res.metrics and "proc.z.count" not in res.metrics


@pytest.mark.parametrize(("content", "said"), [
    (b"", "is empty (being written by a daemon that is starting"),
    (b"\n  \n", "is empty"),
    (b"\xff\xfe1\x00", "not a pid"),            # binary: a UnicodeDecodeError traceback before
    ("²".encode(), "holds '²', not a pid"),      # a digit to str.isdigit, not to int(): ValueError before
    (b"0\n", "holds '0', not a pid (1 to"),
    (b"99999999999999999999999\n", "not a pid (1 to"),
    (b"12 started\n", "holds '12 started', not a pid"),
    (b"1" * 5000, "holds over 4096 bytes: not a pid file"),
])
def test_a_pid_file_that_holds_no_pid_says_so(tmp_path: Path, content: bytes, said: str) -> None:
    (tmp_path / "app.pid").write_bytes(content)
    res = run_task("host.process", options={"processes": [{"label": "app", "pid_file": str(tmp_path / "app.pid")}]})
    (missing,) = checks(res)["host.process_missing"]
    assert f"pid file {tmp_path / 'app.pid'} " in missing.message and said in missing.message


def test_a_pid_with_blanks_around_it_is_read(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (tmp_path / "app.pid").write_text(f"  {child.pid} \r\n\n")
        res = run_task("host.process", options={"processes": [{"label": "app", "pid_file": str(tmp_path / "app.pid")}]})
        assert "host.process_missing" not in checks(res) and res.metrics["proc.app.count"] == 1
    finally:
        child.kill()
        child.wait()


def test_a_fifo_in_place_of_the_pid_file_does_not_hang_the_run(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "app.pid")
    res = run_task("host.process", options={"processes": [{"label": "app", "pid_file": str(tmp_path / "app.pid")}]})
    (missing,) = checks(res)["host.process_missing"]
    assert f"pid file {tmp_path / 'app.pid'} is not a regular file" in missing.message
