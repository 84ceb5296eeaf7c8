"""A throwaway PostgreSQL cluster: initdb, start on a free port, stop."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from upkeeper.sandbox._util import chown_to, free_port, is_root, make_traversable

PG_USER = "postgres"

CONF_TEMPLATE = """
# --- upkeeper sandbox ---
port = {port}
listen_addresses = '127.0.0.1'
unix_socket_directories = '{socket_dir}'
shared_preload_libraries = 'pg_stat_statements'
wal_level = replica
max_wal_senders = 5
max_replication_slots = 5
fsync = off
synchronous_commit = off
full_page_writes = off
log_file_mode = 0640
"""


def pg_bin_dir() -> Path:
    """Newest /usr/lib/postgresql/*/bin, else ``pg_config --bindir``, else the directory of initdb on PATH."""
    cands = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    if cands:
        return Path(cands[-1])
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True)
        return Path(out.stdout.strip())
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")


class PostgresCluster:
    """A real PostgreSQL server in ``base_dir``, as the ``postgres`` OS user when we are root."""

    def __init__(self, base_dir: Path, port: int | None = None, extra_conf: str = "",
                 extra_env: dict[str, str] | None = None) -> None:
        self.base = Path(base_dir)
        #: environment of its programs (initdb, the server), e.g. LOCPATH: libc locales only this server has
        self.extra_env = dict(extra_env or {})
        self.primary: PostgresCluster | None = None
        self.data = self.base / "data"
        self.port = port or free_port()
        self.bin = pg_bin_dir()
        self.extra_conf = extra_conf
        self.log = self.base / "postgresql.log"
        self.started = False

    # -- running as the right user ---------------------------------------------------------

    def _argv(self, tool: str, *args: str) -> list[str]:
        argv = [str(self.bin / tool), *args]
        if is_root():
            return ["runuser", "-u", PG_USER, "--", *argv]
        return argv

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(self._argv(tool, *args), capture_output=True, text=True, cwd="/",
                             env={**os.environ, **self.extra_env})
        if res.returncode != 0:
            raise RuntimeError(f"{tool} failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}")
        return res

    # -- lifecycle -------------------------------------------------------------------------

    def init(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        make_traversable(self.base)
        if is_root():
            chown_to(self.base, PG_USER)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8",
                  "--locale=C.UTF-8")
        with open(self.data / "postgresql.conf", "a") as fh:
            fh.write(CONF_TEMPLATE.format(port=self.port, socket_dir=self.base) + self.extra_conf)
        with open(self.data / "pg_hba.conf", "a") as fh:
            fh.write("host replication postgres 127.0.0.1/32 trust\n")

    def start(self) -> PostgresCluster:
        if not (self.data / "PG_VERSION").exists():
            self.init()
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
        self.started = True
        return self

    def create_replica(self, base_dir: Path, port: int | None = None, slot: str | None = None) -> PostgresCluster:
        """A streaming replica of this (running) cluster, started on its own port.

        ``pg_basebackup -R -X stream`` copies the data directory and writes ``primary_conninfo``;
        the copy's postgresql.conf gets its own port and socket directory appended.  With ``slot``
        the replica streams through a physical replication slot of that name (created here).
        """
        replica = PostgresCluster(base_dir, port=port)
        replica.primary = self
        replica.base.mkdir(parents=True, exist_ok=True)
        make_traversable(replica.base)
        if is_root():
            chown_to(replica.base, PG_USER)
        args = ["-h", self.host, "-p", str(self.port), "-U", "postgres", "-D", str(replica.data),
                "-R", "-X", "stream", "-c", "fast", "--no-sync"]
        if slot:
            args += ["-C", "-S", slot]
        self._run("pg_basebackup", *args)
        with open(replica.data / "postgresql.conf", "a") as fh:
            fh.write(f"\n# --- upkeeper sandbox replica ---\nport = {replica.port}\n"
                     f"unix_socket_directories = '{replica.base}'\nhot_standby = on\n")
        return replica.start()

    def stop(self) -> None:
        if not self.started and not (self.data / "postmaster.pid").exists():
            return
        subprocess.run(self._argv("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop"),
                       capture_output=True, text=True, cwd="/")
        self.started = False

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- connecting ------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def target(self, dbname: str = "postgres") -> dict[str, Any]:
        """The ``targets:`` entry for this cluster."""
        return {"kind": "postgres", "host": self.host, "port": self.port, "user": "postgres", "dbname": dbname}

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user=postgres dbname={dbname}"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres", autocommit: bool = True) -> Any:
        import psycopg

        return psycopg.connect(self.conninfo(dbname), autocommit=autocommit)

    def execute(self, sql: str, dbname: str = "postgres", params: Sequence[Any] | None = None) -> list[Any]:
        with self.connect(dbname) as conn:
            cur = conn.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []

    def create_database(self, name: str) -> None:
        from psycopg import sql

        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def env(self) -> dict[str, str]:
        return {**os.environ, "PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": "postgres"}
