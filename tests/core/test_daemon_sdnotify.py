"""``upkeeper daemon`` under systemd: the sd_notify protocol (READY, STATUS, RELOADING, STOPPING, WATCHDOG) spoken
to a real AF_UNIX datagram socket bound by the test as ``$NOTIFY_SOCKET`` -- systemd's own wire format, read the way
systemd reads it (one datagram a message, the sender's pid from its credentials); systemd itself cannot run here."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from conftest import write_yaml
from daemon_support import daemon_process as _daemon
from daemon_support import stop_daemon as _stop
from daemon_support import wait_for as _wait
from upkeeper.core.history import History
from upkeeper.core.sdnotify import Notifier

NODE = "sd-node"



class Listener:
    """Plays systemd's side: a bound SOCK_DGRAM socket, each datagram parsed into its KEY=VALUE assignments, with
    when it arrived (monotonic) and the pid that sent it (SCM_CREDENTIALS, as systemd checks NotifyAccess=main)."""

    def __init__(self, abstract: bool = False) -> None:
        self._dir: str | None = None
        if abstract:
            self.address = f"@upkeeper-test-{uuid.uuid4().hex}"
            bind_to = "\0" + self.address[1:]
        else:
            self._dir = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")  # AF_UNIX paths are short (108 bytes)
            self.address = bind_to = os.path.join(self._dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(bind_to)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, int | None, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        creds = struct.calcsize("3i")
        while not self._stop.is_set():
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(creds))
            except TimeoutError:
                continue
            except OSError:
                return
            pid = next((struct.unpack("3i", d[:creds])[0] for level, kind, d in anc
                        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS), None)
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
            with self._lock:
                self.messages.append((time.monotonic(), pid, fields))

    def got(self) -> list[tuple[float, int | None, dict[str, str]]]:
        with self._lock:
            return list(self.messages)

    def index(self, key: str, value: str | None = None, after: int = -1) -> int | None:
        """The index of the first message after ``after`` with ``key`` (equal to, or containing, ``value``)."""
        for i, (_, _, fields) in enumerate(self.got()):
            if i > after and key in fields and (value is None or value in fields[key]):
                return i
        return None

    def pings(self) -> list[float]:
        return [at for at, _, fields in self.got() if fields.get("WATCHDOG") == "1"]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


@contextmanager
def _listener(abstract: bool = False) -> Iterator[Listener]:
    got = Listener(abstract)
    try:
        yield got
    finally:
        got.close()






def _config(tmp_path: Path, jobs: dict[str, Any], **extra: Any) -> Path:
    cfg = tmp_path / "upkeeper.yaml"
    write_yaml(cfg, {"history": str(tmp_path / "history.db"), "node": NODE, "timezone": "UTC",
                     "notifications": {"missed_runs": False}, "jobs": jobs, **extra})
    return cfg


def test_ready_then_status_then_stopping(tmp_path: Path) -> None:
    """READY=1 once the daemon is up (config loaded, history open), then a STATUS naming what it serves and its
    next occurrence, and STOPPING=1 when a SIGTERM starts the drain -- every message from the daemon's own pid
    (NotifyAccess=main).  The daemon used to say nothing: under Type=notify systemd would have timed its start
    out."""
    log = tmp_path / "daemon.log"
    cfg = _config(tmp_path, {"nightly": {"task": "debug.noop", "schedule": "0 3 * * *"},
                             "manual": {"task": "debug.noop"}})
    with _listener() as sd, _daemon(cfg, log, NOTIFY_SOCKET=sd.address) as p:
        _wait("READY=1", lambda: sd.index("READY", "1") is not None, log)
        ready = sd.index("READY", "1")
        assert ready is not None
        _wait("a STATUS after READY", lambda: sd.index("STATUS", "serving", after=ready) is not None, log)
        status = sd.got()[sd.index("STATUS", "serving", after=ready)][2]["STATUS"]  # type: ignore[index]
        assert status.startswith("serving 1 scheduled job(s); next: nightly at ") and status.endswith(" 03:00 UTC"), \
            status
        assert sd.index("STOPPING") is None
        _stop(p, log)
        stopping = sd.index("STOPPING", "1")
        assert stopping is not None and stopping > ready, sd.got()
        assert {pid for _, pid, _ in sd.got()} == {p.pid}, sd.got()
        assert sd.index("WATCHDOG") is None  # no $WATCHDOG_USEC: no pings
    assert "systemd notification failed" not in log.read_text()


def test_a_stop_extends_systemds_stop_timeout_to_what_the_drain_may_take(tmp_path: Path) -> None:
    """After STOPPING=1 the daemon asks systemd for the time its drain may take (EXTEND_TIMEOUT_USEC, systemd 236+):
    the prune's batch (30 s), daemon.shutdown_grace (7 min here), the kill of what is left (30 s) and 15 s of room;
    then, before the notification channels' last sends, 30 s more and room.  A TimeoutStopSec shorter than the grace
    no longer kills runs the grace lets finish."""
    log = tmp_path / "daemon.log"
    cfg = _config(tmp_path, {"a": {"task": "debug.noop", "schedule": "0 3 * * *"}},
                  daemon={"shutdown_grace": "7m"})
    with _listener() as sd, _daemon(cfg, log, NOTIFY_SOCKET=sd.address) as p:
        _wait("READY=1", lambda: sd.index("READY", "1") is not None, log)
        assert sd.index("EXTEND_TIMEOUT_USEC") is None
        _stop(p, log)
        stopping = sd.index("STOPPING", "1")
        assert stopping is not None, sd.got()
        first = sd.index("EXTEND_TIMEOUT_USEC", after=stopping)
        assert first is not None, sd.got()
        second = sd.index("EXTEND_TIMEOUT_USEC", after=first)
        assert second is not None, sd.got()
        got = sd.got()
        assert int(got[first][2]["EXTEND_TIMEOUT_USEC"]) == (30 + 7 * 60 + 30 + 15) * 1_000_000, got
        assert int(got[second][2]["EXTEND_TIMEOUT_USEC"]) == (30 + 15) * 1_000_000, got
        assert {pid for _, pid, _ in got} == {p.pid}, got


def test_reload_is_framed_by_reloading_and_ready(tmp_path: Path) -> None:
    """A SIGHUP reload sends RELOADING=1 with MONOTONIC_USEC (the monotonic clock at its start, as
    Type=notify-reload wants) and READY=1 when done -- after an applied reload, with a STATUS counting the new jobs,
    and after a refused one too (systemctl reload would otherwise wait for it)."""
    log = tmp_path / "daemon.log"
    cfg = _config(tmp_path, {"a": {"task": "debug.noop", "schedule": "0 3 * * *"}})
    with _listener() as sd, _daemon(cfg, log, NOTIFY_SOCKET=sd.address) as p:
        _wait("a STATUS", lambda: sd.index("STATUS", "serving 1 ") is not None, log)
        _config(tmp_path, {"a": {"task": "debug.noop", "schedule": "0 3 * * *"},
                           "b": {"task": "debug.noop", "schedule": "0 4 * * *"}})
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        p.send_signal(signal.SIGHUP)
        _wait("RELOADING=1", lambda: sd.index("RELOADING", "1") is not None, log)
        reloading = sd.index("RELOADING", "1")
        assert reloading is not None
        usec = int(sd.got()[reloading][2]["MONOTONIC_USEC"])
        assert before <= usec <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000, (before, usec)
        _wait("READY=1 after the reload", lambda: sd.index("READY", "1", after=reloading) is not None, log)
        assert " reloaded: " in log.read_text()
        _wait("the new STATUS", lambda: sd.index("STATUS", "serving 2 ", after=reloading) is not None, log)

        # a refused reload (an invalid schedule) is framed the same way
        _config(tmp_path, {"a": {"task": "debug.noop", "schedule": "61 * * * *"}})
        seen = len(sd.got()) - 1
        p.send_signal(signal.SIGHUP)
        _wait("RELOADING=1 again", lambda: sd.index("RELOADING", "1", after=seen) is not None, log)
        again = sd.index("RELOADING", "1", after=seen)
        _wait("READY=1 after the refusal", lambda: sd.index("READY", "1", after=again) is not None, log)  # type: ignore[arg-type]
        assert "not reloaded" in log.read_text()
        _stop(p, log)


def test_watchdog_is_pinged_during_long_sleeps(tmp_path: Path) -> None:
    """With $WATCHDOG_USEC (2 s here) the loop pings WATCHDOG=1 at most half that apart, though nothing is due for
    hours: its sleep is cut in pieces.  (With $WATCHDOG_PID naming another process the watchdog is not ours, see
    test_environment_is_read_and_removed.)"""
    log = tmp_path / "daemon.log"
    cfg = _config(tmp_path, {"nightly": {"task": "debug.noop", "schedule": "0 3 * * *"}})
    with _listener() as sd, _daemon(cfg, log, NOTIFY_SOCKET=sd.address, WATCHDOG_USEC="2000000") as p:
        _wait("a first ping", lambda: bool(sd.pings()), log, timeout=20)
        first = sd.pings()[0]
        _wait("6 s of pings", lambda: sd.pings()[-1] - first >= 6, log, timeout=20)
        pings = sd.pings()
        gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
        assert len(pings) >= 7 and max(gaps) <= 1.3, gaps
        assert "watchdog 2.0s, pinged from the scheduling loop" in log.read_text(), log.read_text()
        _stop(p, log)


def test_watchdog_pings_stop_while_the_loop_is_stalled(tmp_path: Path, pg: Any, pg_db: str) -> None:
    """A real stall (another session holds a SHARE lock on the PostgreSQL history's runs table: the loop blocks in
    its next claim while its heartbeat thread goes on): the pings stop, so systemd's WatchdogSec would restart the
    daemon, and STATUS says the loop is stalled; they resume when the lock is gone.  A ping from a free-running
    thread would have gone on, hiding the stall from systemd."""
    log = tmp_path / "daemon.log"
    url = f"postgresql+psycopg://postgres@{pg.host}:{pg.port}/{pg_db}"
    cfg = tmp_path / "upkeeper.yaml"
    write_yaml(cfg, {"history": url, "node": NODE, "timezone": "UTC",
                     "daemon": {"heartbeat": "1s", "stall_after": "3s"},
                     "notifications": {"missed_runs": False},
                     "jobs": {"ping": {"task": "debug.noop", "schedule": "every 1s"}}})
    with _listener() as sd, _daemon(cfg, log, NOTIFY_SOCKET=sd.address, WATCHDOG_USEC="2000000") as p:
        _wait("pings", lambda: len(sd.pings()) >= 3, log)
        locker = pg.connect(pg_db, autocommit=False)
        try:
            locker.execute("LOCK TABLE runs IN SHARE MODE")
            locked = time.monotonic()
            _wait("the stall to be logged", lambda: "has not ticked since" in log.read_text(), log)
            _wait("STATUS to say so", lambda: sd.index("STATUS", "stalled") is not None, log, timeout=10)
            time.sleep(2.5)  # longer than WatchdogSec (2 s) since the stall began: systemd would act now
            stalled_from = sd.pings()[-1]
            # no ping for twice WatchdogSec, while the heartbeat thread goes on
            assert time.monotonic() - stalled_from > 4, (time.monotonic() - locked, sd.pings()[-5:])
        finally:
            locker.rollback()
            locker.close()
        _wait("the pings to resume", lambda: sd.pings()[-1] > stalled_from, log, timeout=20)
        _wait("the loop to tick again", lambda: "ticks again" in log.read_text(), log)
        _wait("STATUS to clear", lambda: sd.got()[-1][2].get("STATUS", "serving").startswith("serving")
              and sd.index("STATUS", "serving", after=sd.index("STATUS", "stalled")) is not None, log)
        _stop(p, log)


def test_abstract_namespace_socket(tmp_path: Path) -> None:
    """$NOTIFY_SOCKET=@name is a socket in the abstract namespace (a leading NUL byte on the wire)."""
    log = tmp_path / "daemon.log"
    cfg = _config(tmp_path, {"nightly": {"task": "debug.noop", "schedule": "0 3 * * *"}})
    with _listener(abstract=True) as sd, _daemon(cfg, log, NOTIFY_SOCKET=sd.address) as p:
        _wait("READY=1", lambda: sd.index("READY", "1") is not None, log)
        _stop(p, log)
        assert sd.index("STOPPING", "1") is not None, sd.got()


def test_a_socket_that_cannot_be_reached_is_logged_once_and_not_fatal(tmp_path: Path) -> None:
    """$NOTIFY_SOCKET naming no socket (systemd gone, a stale environment): one warning, then the daemon runs and
    stops as without it."""
    log = tmp_path / "daemon.log"
    cfg = _config(tmp_path, {"ping": {"task": "debug.noop", "schedule": "every 1s"}})
    history = History(f"sqlite:///{tmp_path / 'history.db'}")
    with _daemon(cfg, log, NOTIFY_SOCKET=str(tmp_path / "no-such-socket"), WATCHDOG_USEC="1000000") as p:
        _wait("the warning", lambda: "systemd notification failed" in log.read_text(), log)
        _wait("runs of ping", lambda: len(history.runs(job="ping")) >= 3, log)
        assert p.poll() is None, log.read_text()
        _stop(p, log)
    text = log.read_text()
    assert text.count("systemd notification failed") == 1, text
    assert "no-such-socket" in text and "stopped cleanly" in text and "Traceback" not in text, text


def test_environment_is_read_and_removed(tmp_path: Path) -> None:
    """The notifier takes $NOTIFY_SOCKET and the watchdog from the environment and removes them (the daemon's
    workers and the tools its tasks start must not speak to systemd for it); the watchdog is ours only when
    $WATCHDOG_PID is absent or our pid; an address neither absolute nor abstract is refused once, not fatally."""
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "4000000", "PATH": "/bin"}
    n = Notifier.from_env(env)
    assert env == {"PATH": "/bin"}
    assert n.enabled and n.watchdog == timedelta(seconds=4) and n.ping_every == timedelta(seconds=1)
    assert Notifier.from_env({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "4000000",
                              "WATCHDOG_PID": str(os.getpid())}).watchdog == timedelta(seconds=4)
    assert Notifier.from_env({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "4000000",
                              "WATCHDOG_PID": str(os.getpid() + 1)}).watchdog is None
    assert Notifier.from_env({"WATCHDOG_USEC": "4000000"}).watchdog is None  # nowhere to ping
    off = Notifier.from_env({})
    assert not off.enabled and not off.send("READY=1")
    relative = Notifier("run/notify")
    assert not relative.enabled and not relative.send("READY=1")
