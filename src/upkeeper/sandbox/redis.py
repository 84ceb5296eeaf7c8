"""A throwaway Redis server (optionally a replica of another)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from upkeeper.sandbox._util import free_port, wait_for_port


class RedisServer:
    def __init__(self, base_dir: Path, port: int | None = None, *, replica_of: RedisServer | None = None,
                 password: str | None = None, extra_args: list[str] | None = None) -> None:
        self.base = Path(base_dir)
        self.port = port or free_port()
        self.replica_of = replica_of
        self.password = password
        self.extra_args = list(extra_args or [])
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        self.started = False

    @property
    def pidfile(self) -> Path:
        return self.base / "redis.pid"

    @property
    def logfile(self) -> Path:
        return self.base / "redis.log"

    def start(self) -> RedisServer:
        self.base.mkdir(parents=True, exist_ok=True)
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--repl-diskless-sync-delay", "0", "--daemonize", "yes", "--pidfile", str(self.pidfile),
                "--logfile", str(self.logfile), "--dir", str(self.base)]
        if self.password:
            argv += ["--requirepass", self.password]
        if self.replica_of is not None:
            argv += ["--replicaof", "127.0.0.1", str(self.replica_of.port)]
            if self.replica_of.password:
                argv += ["--masterauth", self.replica_of.password]
        argv += self.extra_args
        subprocess.run(argv, check=True, capture_output=True)
        wait_for_port(self.port)
        self.started = True
        if self.replica_of is not None:
            self.wait_linked()
        return self

    def client(self, **kw: Any) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, **kw)

    def wait_linked(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        c = self.client()
        while time.monotonic() < deadline:
            if c.info("replication").get("master_link_status") == "up":
                return
            time.sleep(0.05)
        raise TimeoutError("replica did not link to its primary")

    def stop(self) -> None:
        if not self.started:
            return
        argv = [self.cli, "-p", str(self.port)]
        if self.password:
            argv += ["--no-auth-warning", "-a", self.password]
        subprocess.run([*argv, "shutdown", "nosave"], capture_output=True)
        self.started = False

    def target(self) -> dict[str, Any]:
        t: dict[str, Any] = {"kind": "redis", "host": "127.0.0.1", "port": self.port}
        if self.password:
            t["password"] = self.password
        return t

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
