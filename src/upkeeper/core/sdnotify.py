"""The systemd notification protocol (sd_notify(3)), for ``upkeeper daemon`` under ``Type=notify``.

The wire format is one datagram per notification to the ``AF_UNIX``/``SOCK_DGRAM`` socket named by
``$NOTIFY_SOCKET`` (an absolute path, or a name in the abstract namespace when it starts with ``@``), holding
newline-separated ``KEY=VALUE`` assignments: ``READY=1``, ``RELOADING=1`` with ``MONOTONIC_USEC=``,
``STOPPING=1``, ``EXTEND_TIMEOUT_USEC=``, ``STATUS=…``, ``WATCHDOG=1``.  systemd reads the sender's pid from the socket's credentials
(``NotifyAccess=main``: only the daemon's own process is listened to).

Without ``$NOTIFY_SOCKET`` every method does nothing.  A failed send is logged once and never raised: systemd
going away must not take the daemon with it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import MutableMapping
from datetime import timedelta

log = logging.getLogger(__name__)

#: Variables consumed here, removed from the environment once read (as sd_notify's ``unset_environment``): the
#: daemon's workers and the commands its tasks start must not talk to the daemon's supervisor on its behalf.
ENV_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    """Sends sd_notify messages to ``address`` (``None``: disabled).  ``watchdog`` is systemd's ``WatchdogSec``
    (``$WATCHDOG_USEC``) when this process is the one watched, else ``None``."""

    def __init__(self, address: str | None, watchdog: timedelta | None = None) -> None:
        self.address = address
        self.watchdog = watchdog if address else None
        self._sock: socket.socket | None = None
        self._target: str | None = None
        self._failed = False
        self._status: str | None = None
        self._last_ping: float | None = None
        if address is None:
            return
        if address.startswith("@"):
            self._target = "\0" + address[1:]  # the abstract namespace
        elif address.startswith("/"):
            self._target = address
        else:  # e.g. vsock:CID:PORT (systemd 254+): not spoken here
            self._fail(f"$NOTIFY_SOCKET={address!r} is neither an absolute path nor an abstract socket name (@…)")

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] | None = None, *, unset: bool = True) -> Notifier:
        """The notifier ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID`` ask for (removed from
        ``environ`` when ``unset``).  The watchdog is ours when ``$WATCHDOG_PID`` is absent or our pid."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if unset:
            for name in ENV_VARS:
                env.pop(name, None)
        watchdog: timedelta | None = None
        if usec.strip().isdigit() and int(usec) > 0 and (not pid.strip() or pid.strip() == str(os.getpid())):
            watchdog = timedelta(microseconds=int(usec))
        elif usec.strip() and not usec.strip().isdigit():
            log.warning("$WATCHDOG_USEC=%r is not a number of microseconds: the systemd watchdog is not pinged", usec)
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self._target is not None

    @property
    def ping_every(self) -> timedelta | None:
        """At most how long the loop may go without a ping: a quarter of the watchdog interval, so that a ping
        comes at most about half the interval apart (systemd's advice) even after a slow tick."""
        return self.watchdog / 4 if self.watchdog is not None else None

    def _fail(self, why: str) -> None:
        if not self._failed:
            self._failed = True
            log.warning("systemd notification failed: %s (said once; the daemon goes on without it)", why)

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments in one datagram.  True when sent; never raises."""
        if self._target is None or not assignments:
            return False
        # one assignment a line: a newline inside a value would start another
        data = "\n".join(a.replace("\n", " ") for a in assignments).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(data, self._target)
        except OSError as exc:
            self._fail(f"cannot send to $NOTIFY_SOCKET {self.address}: {exc.strerror or exc}")
            return False
        return True

    def ready(self, status: str | None = None) -> None:
        self.send("READY=1", *self._status_line(status))

    def reloading(self) -> None:
        """A reload starts: ``RELOADING=1`` and the monotonic clock's time, as ``Type=notify-reload`` needs."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading the configuration")
        self._status = None

    def stopping(self, status: str | None = None) -> None:
        self.send("STOPPING=1", *self._status_line(status))

    def extend_timeout(self, seconds: float) -> None:
        """``EXTEND_TIMEOUT_USEC=``: systemd (236 or later; older ones ignore it) waits at least ``seconds`` from
        now before it times out the current state -- on a stop, ``TimeoutStopSec``, which would otherwise kill runs
        that ``daemon.shutdown_grace`` still lets finish."""
        self.send(f"EXTEND_TIMEOUT_USEC={max(1, round(seconds * 1_000_000))}")

    def status(self, text: str) -> None:
        """``STATUS=text``, when it differs from the last one sent."""
        if line := self._status_line(text):
            self.send(*line)

    def _status_line(self, text: str | None) -> list[str]:
        if text is None or text == self._status or self._target is None:
            return []
        self._status = text
        return [f"STATUS={text}"]

    def alive(self) -> None:
        """The scheduling loop made progress: ``WATCHDOG=1``, at most every :attr:`ping_every`."""
        every = self.ping_every
        if every is None:
            return
        now = time.monotonic()
        if self._last_ping is None or now - self._last_ping >= every.total_seconds():
            self._last_ping = now
            self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
