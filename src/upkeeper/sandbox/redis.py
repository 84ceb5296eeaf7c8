"""A throwaway Redis server (optionally a replica of another)."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from upkeeper.sandbox._util import free_port, wait_for_port
from upkeeper.sandbox.tls import Certificate


@dataclass
class RedisTls:
    """TLS of a sandbox server: its certificate, the CA it trusts for client certificates, and the client
    certificate the sandbox's own clients (``client()``, ``stop()``) present."""

    server: Certificate
    ca_file: Path
    client: Certificate | None = None
    auth_clients: bool = False


class RedisServer:
    def __init__(self, base_dir: Path, port: int | None = None, *, replica_of: RedisServer | None = None,
                 password: str | None = None, extra_args: list[str] | None = None,
                 tls: RedisTls | None = None) -> None:
        self.base = Path(base_dir)
        self.port = port or free_port()
        self.replica_of = replica_of
        self.password = password
        self.extra_args = list(extra_args or [])
        self.tls = tls
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
        argv = [self.binary, *self._listen_args(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
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

    def _listen_args(self) -> list[str]:
        if self.tls is None:
            return ["--port", str(self.port)]
        return ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls.server.cert),
                "--tls-key-file", str(self.tls.server.key), "--tls-ca-cert-file", str(self.tls.ca_file),
                "--tls-auth-clients", "yes" if self.tls.auth_clients else "no"]

    def _cli_tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        argv = ["--tls", "--cacert", str(self.tls.ca_file)]
        if self.tls.client is not None:
            argv += ["--cert", str(self.tls.client.cert), "--key", str(self.tls.client.key)]
        return argv

    def client(self, **kw: Any) -> Any:
        import redis

        if self.tls is not None:
            kw = {"ssl": True, "ssl_ca_certs": str(self.tls.ca_file), **kw}
            if self.tls.client is not None:
                kw.update(ssl_certfile=str(self.tls.client.cert), ssl_keyfile=str(self.tls.client.key))
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
        argv = [self.cli, "-p", str(self.port), *self._cli_tls_args()]
        if self.password:
            argv += ["--no-auth-warning", "-a", self.password]
        subprocess.run([*argv, "shutdown", "nosave"], capture_output=True)
        self.started = False

    def target(self) -> dict[str, Any]:
        t: dict[str, Any] = {"kind": "redis", "host": "127.0.0.1", "port": self.port}
        if self.password:
            t["password"] = self.password
        if self.tls is not None:
            t.update(tls=True, tls_ca_file=str(self.tls.ca_file))
            if self.tls.client is not None:
                t.update(tls_cert_file=str(self.tls.client.cert), tls_key_file=str(self.tls.client.key))
        return t

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
