"""A throwaway nginx serving a docroot on a free port, logging in the combined format plus timing."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from upkeeper.sandbox._util import free_port, make_traversable, wait_for_port

LOG_FORMAT = ("'$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent "
              "\"$http_referer\" \"$http_user_agent\" $request_time'")

CONF = """\
worker_processes 1;
pid {base}/nginx.pid;
error_log {base}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {base}/tmp/body;
    proxy_temp_path {base}/tmp/proxy;
    fastcgi_temp_path {base}/tmp/fastcgi;
    uwsgi_temp_path {base}/tmp/uwsgi;
    scgi_temp_path {base}/tmp/scgi;
    types {{ text/html html; text/plain txt; application/json json; }}
    default_type application/octet-stream;
    log_format timed {log_format};
{servers}
}}
"""

DEFAULT_SERVER = """\
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {docroot};
        access_log {base}/access.log timed;
{extra}
    }}
"""


TLS_SERVER = """\
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name {server_name};
        root {docroot};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        access_log {base}/access.log timed;
{extra}
    }}
"""

PLAIN_SERVER = """\
    server {{
        listen 127.0.0.1:{port};
        server_name {server_name};
        root {docroot};
        access_log {base}/access.log timed;
{extra}
    }}
"""


def server_block(base: Path, port: int, docroot: Path, *, extra: str = "", cert: Path | None = None,
                 key: Path | None = None, server_name: str = "localhost") -> str:
    """One ``server`` block for ``NginxServer(servers=...)``: TLS when ``cert``/``key`` are given."""
    if cert is not None and key is not None:
        return TLS_SERVER.format(port=port, docroot=docroot, base=base, extra=extra, cert=cert, key=key,
                                 server_name=server_name)
    return PLAIN_SERVER.format(port=port, docroot=docroot, base=base, extra=extra, server_name=server_name)


class NginxServer:
    """nginx with one or more ``server`` blocks.  ``servers`` overrides the default block entirely."""

    def __init__(self, base_dir: Path, port: int | None = None, *, server_extra: str = "",
                 servers: str | None = None) -> None:
        self.base = Path(base_dir)
        self.port = port or free_port()
        self.docroot = self.base / "www"
        self.server_extra = server_extra
        self.servers = servers
        self.binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.started = False

    @property
    def conf(self) -> Path:
        return self.base / "nginx.conf"

    @property
    def access_log(self) -> Path:
        return self.base / "access.log"

    @property
    def error_log(self) -> Path:
        return self.base / "error.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_conf(self) -> None:
        servers = self.servers if self.servers is not None else DEFAULT_SERVER.format(
            port=self.port, docroot=self.docroot, base=self.base, extra=self.server_extra)
        self.conf.write_text(CONF.format(base=self.base, log_format=LOG_FORMAT, servers=servers))

    def start(self) -> NginxServer:
        (self.base / "tmp").mkdir(parents=True, exist_ok=True)
        self.docroot.mkdir(parents=True, exist_ok=True)
        make_traversable(self.base)
        os.chmod(self.docroot, 0o755)
        if not (self.docroot / "index.html").exists():
            (self.docroot / "index.html").write_text("<html><body>upkeeper sandbox</body></html>\n")
        self.write_conf()
        res = subprocess.run([self.binary, "-c", str(self.conf), "-p", f"{self.base}/", "-e", str(self.error_log)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"nginx failed to start: {res.stderr.strip()}")
        wait_for_port(self.port)
        self.started = True
        return self

    def reload(self) -> None:
        self.write_conf()
        subprocess.run([self.binary, "-c", str(self.conf), "-p", f"{self.base}/", "-e", str(self.error_log),
                        "-s", "reload"], check=True, capture_output=True)
        time.sleep(0.3)

    def stop(self) -> None:
        if not self.started:
            return
        subprocess.run([self.binary, "-c", str(self.conf), "-p", f"{self.base}/", "-e", str(self.error_log),
                        "-s", "quit"], capture_output=True)
        pidfile = self.base / "nginx.pid"
        deadline = time.monotonic() + 10
        while pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.started = False

    def target(self) -> dict[str, Any]:
        return {"kind": "nginx", "url": self.url, "config": str(self.conf), "access_log": str(self.access_log),
                "error_log": str(self.error_log), "binary": self.binary}

    def __enter__(self) -> NginxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
