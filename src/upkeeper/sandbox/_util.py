"""Small helpers shared by the sandbox services."""

from __future__ import annotations

import contextlib
import os
import pwd
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

_used_ports: set[int] = set()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (not handed out twice by this process).

    Ports above 10000 of another service's port are avoided where known (SeaweedFS
    opens gRPC ports at +10000), by staying below 50000.
    """
    for _ in range(200):
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _used_ports and 20000 <= port < 50000:
            _used_ports.add(port)
            return port
    raise RuntimeError("no free port found")


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 30.0, *,
                  proc: subprocess.Popen[bytes] | None = None, log: Callable[[], str] | None = None) -> None:
    """Until something listens on ``port``; ``proc``: the server that is to listen there (its exit ends the wait at
    once, as :class:`ServerExited`); ``log``: its log's tail, said with either error."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        if proc is not None and proc.poll() is not None:
            name = os.path.basename(str(proc.args[0] if isinstance(proc.args, list | tuple) else proc.args))
            raise ServerExited(f"{name} exited with {proc.returncode} before it listened on {host}:{port}"
                               + (f": {log()}" if log is not None else ""))
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:g}s" + (f"; {log()}" if log is not None else ""))


class ServerExited(RuntimeError):
    """A server started by the sandbox exited before it was ready (a port taken meanwhile, a bad setting)."""


def is_root() -> bool:
    return os.geteuid() == 0


def chown_to(path: Path, user: str) -> None:
    pw = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for n in dirs + files:
            os.chown(os.path.join(root, n), pw.pw_uid, pw.pw_gid, follow_symlinks=False)


def make_traversable(path: Path) -> None:
    """Let the service users (postgres, nobody) reach ``path``; tempfile makes 0700 dirs.

    Only ``path`` itself is changed.  A parent directory that other users cannot
    enter (``/root`` is 0700) is an error: we never loosen permissions outside the sandbox.
    """
    os.chmod(path, path.stat().st_mode | 0o755)
    for p in path.parents:
        if not p.stat().st_mode & 0o001:
            from upkeeper.errors import UsageError

            raise UsageError(
                f"{p} is not accessible to other users, so the sandbox's services (running as other users) "
                f"cannot reach {path}",
                "Try: --dir /tmp/upkeeper-demo (or any directory whose parents are world-executable)",
            )


@contextlib.contextmanager
def timer() -> Iterator[list[float]]:
    t = [time.monotonic(), 0.0]
    yield t
    t[1] = time.monotonic() - t[0]
