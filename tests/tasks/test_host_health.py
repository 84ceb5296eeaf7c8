"""host.health against the real machine: a small tmpfs filled past its thresholds, a real OOM kill in a
memory cgroup, real TCP/HTTP services, the kernel's clock state."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ops_support import checks, run_task
from upkeeper.core.task import MemoryState, Severity, Status
from upkeeper.sandbox._util import free_port
from upkeeper.sandbox.redis import RedisServer
from upkeeper.tasks.host._clock import parse_chronyc, parse_ntpq

MiB = 1024 * 1024
FAST = {"cpu_sample": "0.1s", "clock": False}


@pytest.fixture
def small_fs(services_dir: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A real 8 MiB filesystem with 64 inodes (tmpfs), so thresholds can be crossed for real."""
    mnt = Path(tempfile.mkdtemp(prefix="fs-", dir=services_dir))

    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,nr_inodes=64", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        mnt.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)
    mnt.rmdir()


def fill_to(mnt: Path, pct: float) -> None:
    """Make the filesystem ``pct`` % full with one file (tmpfs counts whole pages)."""
    st = os.statvfs(mnt)
    total = st.f_blocks * st.f_frsize
    (mnt / "ballast").write_bytes(b"\0" * int(total * pct / 100))


def test_disk_thresholds_crossed_on_a_real_filesystem(small_fs: Path) -> None:
    opts = {**FAST, "mounts": [str(small_fs)]}
    state = MemoryState()
    res = run_task("host.health", options=opts, state=state)
    assert "host.disk_space" not in checks(res)
    assert res.metrics[f"disk.{small_fs}.total_bytes"] == 8 * MiB

    fill_to(small_fs, 85)
    f = checks(run_task("host.health", options=opts, state=state))["host.disk_space"][0]
    assert f.severity is Severity.WARNING and f.threshold == 80 and 84 <= f.value <= 87  # the procedures' 80 %

    fill_to(small_fs, 99)
    res = run_task("host.health", options=opts, state=state)
    f = checks(res)["host.disk_space"][0]
    assert f.severity is Severity.CRITICAL and f.threshold == 98 and res.final_status is Status.FAIL  # Netdata's 98 %

    # Netdata's hysteresis: once critical, it stays critical until usage falls below 90 %
    fill_to(small_fs, 95)
    f = checks(run_task("host.health", options=opts, state=state))["host.disk_space"][0]
    assert f.severity is Severity.CRITICAL and f.threshold == 90
    fill_to(small_fs, 85)
    f = checks(run_task("host.health", options=opts, state=state))["host.disk_space"][0]
    assert f.severity is Severity.WARNING
    # thresholds are options
    res = run_task("host.health", options={**opts, "disk_warning": 90}, state=state)
    assert "host.disk_space" not in checks(res)


def test_inode_exhaustion(small_fs: Path) -> None:
    for i in range(58):  # of 64 inodes (the root directory uses one)
        (small_fs / f"f{i}").touch()
    f = checks(run_task("host.health", options={**FAST, "mounts": [str(small_fs)]}))["host.disk_inodes"][0]
    assert f.severity is Severity.WARNING and f.value >= 80


class SeriesFromSamples:
    """Earlier samples of the used-bytes series, as history would return them."""

    def __init__(self, samples: dict[str, list[tuple[datetime, float]]]) -> None:
        self.samples = samples

    def series(self, name: str, *, since: datetime | None = None, job: str | None = None,
               target: str | None = None) -> list[tuple[datetime, float]]:
        return [(t, v) for t, v in self.samples.get(name, []) if since is None or t >= since]


def test_time_until_full_is_projected_from_history(small_fs: Path) -> None:
    fill_to(small_fs, 50)
    used = (lambda st: (st.f_blocks - st.f_bfree) * st.f_frsize)(os.statvfs(small_fs))
    avail = 8 * MiB - used
    now = datetime.now(UTC)
    # it grew 1 MiB per hour for the last three hours: ~4 MiB free → full in ~4 h (Netdata warns below 8 h)
    hist = [(now - timedelta(hours=h), float(used - h * MiB)) for h in (3, 2, 1)]
    name = f"disk.{small_fs}.used_bytes"
    res = run_task("host.health", options={**FAST, "mounts": [str(small_fs)]}, metrics=SeriesFromSamples({name: hist}),
                   clock=lambda: now)
    f = checks(res)["host.disk_fill"][0]
    assert f.severity is Severity.WARNING
    assert f.value == pytest.approx(avail / MiB, rel=0.05)
    assert res.metrics[f"disk.{small_fs}.hours_to_full"] == pytest.approx(avail / MiB, rel=0.05)
    # ten times faster: full in under 2 h → critical
    fast = [(t, used - (used - v) * 10) for t, v in hist]
    res = run_task("host.health", options={**FAST, "mounts": [str(small_fs)]}, metrics=SeriesFromSamples({name: fast}),
                   clock=lambda: now)
    assert checks(res)["host.disk_fill"][0].severity is Severity.CRITICAL
    # shrinking, or too short a history: no projection
    shrink = [(t, used + (used - v)) for t, v in hist]
    res = run_task("host.health", options={**FAST, "mounts": [str(small_fs)]},
                   metrics=SeriesFromSamples({name: shrink}), clock=lambda: now)
    assert "host.disk_fill" not in checks(res)


@contextlib.contextmanager
def _cpu_load() -> Iterator[None]:
    """Real CPU use while the task samples (an idle CI machine would otherwise show 0 %)."""
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    t = threading.Thread(target=spin, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


def test_memory_cpu_load_thresholds_are_options(tmp_path: Path) -> None:
    with _cpu_load():
        res = run_task("host.health", options={**FAST, "mounts": [str(tmp_path)], "memory_available_warning": 100,
                                               "cpu_warning": 0.01, "cpu_critical": 100,
                                               "load_per_core_warning": 0.0001, "cpu_min_window": "0s"})
    found = checks(res)
    assert found["host.memory_available"][0].threshold == 100
    assert found["host.cpu"][0].severity is Severity.WARNING
    # a short first sample is recorded, not judged (by default CPU is judged over at least a minute)
    res = run_task("host.health", options={**FAST, "mounts": [str(tmp_path)], "cpu_warning": 0.01, "cpu_critical": 100})
    assert "host.cpu" not in checks(res) and "not judged" in res.summary
    # the next run averages since the previous one: judged when that spans the window
    state = MemoryState()
    start = datetime.now(UTC)
    run_task("host.health", options={**FAST, "mounts": [str(tmp_path)]}, state=state, clock=lambda: start)
    busy_until = time.monotonic() + 0.3  # real CPU use in the window: an idle CI machine would show 0 %
    while time.monotonic() < busy_until:
        pass
    res = run_task("host.health", options={**FAST, "mounts": [str(tmp_path)], "cpu_warning": 0.01, "cpu_critical": 100,
                                           "cpu_min_window": "0.2s"}, state=state,
                   clock=lambda: start + timedelta(seconds=0.3))
    assert "host.cpu" in checks(res)
    assert found["host.load"][0].value > 0
    assert 0 < res.metrics["mem.available_pct"] <= 100 and res.metrics["cpu.cores"] >= 1
    # the other way round: thresholds nothing can cross (this shared machine may really be busy)
    res = run_task("host.health", options={**FAST, "mounts": [str(tmp_path)], "memory_available_warning": 0,
                                           "cpu_warning": 100, "cpu_critical": 100, "load_per_core_warning": 1000})
    assert not {"host.memory_available", "host.cpu", "host.load"} & set(checks(res))


def _memory_cgroup(services_dir: Path) -> Path | None:
    for base, limit_file in ((Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes"),
                             (Path("/sys/fs/cgroup"), "memory.max")):
        if not (base / "cgroup.procs").exists():
            continue
        cg = base / f"upk-test-{os.getpid()}"
        try:
            cg.mkdir()
            (cg / limit_file).write_text(str(32 * MiB))
            (cg / "memory.swappiness").write_text("0") if (cg / "memory.swappiness").exists() else None
        except OSError:
            if cg.exists():
                cg.rmdir()
            continue
        return cg
    return None


def test_a_real_oom_kill_is_reported(services_dir: Path) -> None:
    cg = _memory_cgroup(services_dir)
    if cg is None:
        pytest.skip("no writable memory cgroup here to provoke an OOM kill")
    try:
        state = MemoryState()
        run_task("host.health", options={**FAST, "mounts": ["/"]}, state=state)  # baseline
        hog = subprocess.Popen([sys.executable, "-c",
                                f"import os; open({str(cg / 'cgroup.procs')!r}, 'w').write(str(os.getpid()))\n"
                                "x = []\nwhile True: x.append(b'x' * (4 << 20))"])
        assert hog.wait(timeout=30) == -9  # killed by the kernel
        res = run_task("host.health", options={**FAST, "mounts": ["/"]}, state=state)
        f = checks(res)["host.oom_kill"][0]
        assert f.severity is Severity.WARNING and f.value >= 1
        if f.data["victims"]:  # the kernel log is readable here: the victim is named
            assert f"pid {hog.pid}" in f.message
        # reported once: the next run is quiet
        assert "host.oom_kill" not in checks(run_task("host.health", options={**FAST, "mounts": ["/"]}, state=state))
    finally:
        cg.rmdir()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(0.2)
        code = 500 if self.path == "/broken" else 200
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_services_tcp_http_process_systemd(redis_server: RedisServer, web: str, tmp_path: Path) -> None:
    dead_port = free_port()
    services = [
        {"tcp": f"127.0.0.1:{redis_server.port}"},
        {"tcp": f"127.0.0.1:{dead_port}", "name": "dead-port"},
        {"http": f"{web}/ok"},
        {"http": f"{web}/broken", "name": "broken"},
        {"http": f"{web}/ok", "expect_status": [204], "name": "wrong-status"},
        {"http": f"{web}/slow", "max_latency": "50ms", "name": "slow"},
        {"process": "redis-server"},
        {"process": "no-such-daemon-xyz", "name": "ghost"},
        {"systemd": "nginx.service", "name": "unit"},
    ]
    res = run_task("host.health", options={**FAST, "mounts": [str(tmp_path)], "services": services})
    found = checks(res)
    down = {f.subject: f for f in found["host.service_down"]}
    assert set(down) == {"dead-port", "broken", "wrong-status", "ghost"} | ({"unit"} & set(down))
    assert all(f.severity is Severity.CRITICAL for f in down.values())
    assert down["broken"].value == 500
    slow = found["host.service_slow"][0]
    assert slow.subject == "slow" and slow.value >= 200
    assert res.metrics[f"service.tcp:127.0.0.1:{redis_server.port}.up"] == 1.0
    assert res.metrics["service.dead-port.up"] == 0.0
    # this machine has no systemd as PID 1: said honestly, not guessed
    if not Path("/run/systemd/system").exists():
        assert found["host.service_unknown"][0].subject == "unit"
    # a slow service answered: it is up (sampled as such), only slow
    assert res.metrics["service.slow.up"] == 1.0 and res.metrics["service.slow.ms"] >= 200
    assert "4/9 services up" in res.summary, res.summary


def test_service_options_are_validated() -> None:
    from pydantic import ValidationError

    from upkeeper.tasks.host.health import HealthOptions

    with pytest.raises(ValidationError, match="exactly one of"):
        HealthOptions.model_validate({"services": [{"tcp": "127.0.0.1:1", "process": "x"}]})
    with pytest.raises(ValidationError, match="host:port"):
        HealthOptions.model_validate({"services": [{"tcp": "localhost"}]})
    with pytest.raises(ValidationError, match="disk_critical"):
        HealthOptions.model_validate({"disk_warning": 95, "disk_critical": 90})


def test_clock_status_is_reported_with_its_source(tmp_path: Path) -> None:
    res = run_task("host.health", options={"cpu_sample": "0.1s", "mounts": [str(tmp_path)]})
    found = checks(res)
    if "clock.synchronized" in res.metrics:
        synced = res.metrics["clock.synchronized"] == 1.0
        assert synced or found["host.clock_unsynced"][0].data["source"]
    else:
        assert found["host.clock_unknown"][0].severity is Severity.INFO


def test_time_sync_tool_output_parsers() -> None:
    tracking = """Reference ID    : A9FEA97B (169.254.169.123)
Stratum         : 4
Ref time (UTC)  : Mon Nov 23 16:00:00 2026
System time     : 0.000241383 seconds slow of NTP time
Last offset     : -0.000012341 seconds
Leap status     : Normal
"""
    st = parse_chronyc(tracking)
    assert st is not None and st.synchronized and st.offset_s == pytest.approx(-0.000241383)
    st = parse_chronyc(tracking.replace("Leap status     : Normal", "Leap status     : Not synchronised"))
    assert st is not None and st.synchronized is False
    assert parse_chronyc("garbage") is None
    st = parse_ntpq("leap=00, offset=-1.234")
    assert st is not None and st.synchronized and st.offset_s == pytest.approx(-0.001234)
    st = parse_ntpq("leap=11, offset=0.000")
    assert st is not None and st.synchronized is False


def test_one_failing_check_does_not_stop_the_others(tmp_path: Path) -> None:
    res = run_task("host.health", options={**FAST, "mounts": [str(tmp_path / "missing"), str(tmp_path)]})
    found = checks(res)
    assert found["host.disk_unreadable"][0].subject.endswith("missing")
    assert f"disk.{tmp_path}.used_pct" in res.metrics and "mem.available_pct" in res.metrics


def test_health_metrics_kept_90_days_and_disk_task_still_works(make_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from upkeeper.core.jobs import load_setup

    path = make_config({"jobs": {"health": {"task": "host.health", "schedule": "*/5 * * * *"},
                                 "disk": {"task": "host.disk"}}})
    setup = load_setup(path)
    assert setup.jobs["health"].metrics_retention == timedelta(days=90)
    res = run_task("host.disk", options={"mounts": [str(tmp_path)], "warning": 0.001})
    assert checks(res)["host.disk_space"][0].severity is Severity.WARNING


def test_cpu_use_stays_within_0_and_100_percent() -> None:
    """/proc/stat's idle counter can step backwards between two samples (NOHZ, VMs): a fully busy machine read
    100.00001 % and crossed a critical threshold of 100 (seen in CI)."""
    from upkeeper.tasks.host.health import _used_pct

    assert _used_pct(200.00001, 200.0) == 100.0  # idle went back by a hair
    assert _used_pct(-0.5, 200.0) == 0.0
    assert _used_pct(50.0, 200.0) == 25.0
    assert _used_pct(5.0, 0.0) == 0.0  # no time passed


def test_the_root_filesystem_is_always_checked() -> None:
    """In a container '/' is an overlay, left out with the pseudo filesystems: host.disk and host.health checked
    only the bind-mounted files (/etc/hosts…) and never the root where the app writes.  '/' now always comes first.
    (This VM's '/' is ext4, so the old code passes here; on an overlay root it did not.)"""
    from upkeeper.tasks.host.disk import real_mounts

    mounts = real_mounts()
    assert mounts[0] == "/" and mounts.count("/") == 1
    res = run_task("host.disk", options={})
    assert "/.used_pct" in res.metrics, res.metrics


@pytest.mark.parametrize("damage", [{"count": "many"}, {"count": [1]}, {"count": 1e400}, {"at": "yesterday"},
                                    {"at": float("nan")}, {"at": 1e300}, {"count": None, "at": None}])
def test_a_damaged_oom_baseline_starts_over_instead_of_failing_the_check(damage: dict[str, object],
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """State edited by hand or restored badly (same boot, so it is read): the oom check does not fail, it takes
    a new baseline and says so in the run log."""
    import psutil

    if not Path("/proc/vmstat").exists():
        pytest.skip("no /proc/vmstat here")
    state = MemoryState()
    run_task("host.health", options={**FAST, "mounts": ["/"]}, state=state)  # a real baseline
    state.set("oom", {**state.get("oom"), **damage})
    caplog.set_level(logging.WARNING)
    res = run_task("host.health", options={**FAST, "mounts": ["/"]}, state=state)
    assert not [f for f in res.findings if "oom" in f.message.lower() or "oom" in f.check], res.findings
    assert "oom_kills_total" in res.metrics and "oom_kills" not in res.metrics  # a baseline, no delta invented
    assert "OOM-kill baseline is damaged" in caplog.text and "starting over" in caplog.text
    good = state.get("oom")
    assert isinstance(good["count"], int) and good["boot"] == psutil.boot_time()
    # and the next run compares with the new baseline again
    res = run_task("host.health", options={**FAST, "mounts": ["/"]}, state=state)
    assert res.metrics["oom_kills"] >= 0
