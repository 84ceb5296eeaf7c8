"""Room for a verify's test restore, which runs by default on the production hosts: disk space on the scratch
PostgreSQL server (before the restore, and watched while it runs), in the verify's work directory, and memory
for a throw-away redis-server.  A restore that does not fit is not started: the verify says it could not run
(:class:`NoRoom`, a :class:`SetupError`: nothing is said about the backup), never fills a production disk.

Defaults and their sources:

- ``min_free_space`` 1 GiB: what the verify always leaves free on a disk it writes to.  PostgreSQL's default
  ``max_wal_size`` is 1 GB: the WAL a server may write before a checkpoint recycles it; a server that cannot
  write WAL stops (PANIC), so its disk must keep at least that much free.
- ``space_margin`` 1.25: a restored database takes about the source's ``pg_database_size`` (it is freshly
  loaded, without bloat); a quarter on top for the WAL and the sort files of its index builds.
- an old manifest without the database's size: its uncompressed dump × :data:`ARCHIVE_SIZE_FACTOR` (2: a dump
  holds no index and no per-row overhead; databases are commonly 1.5–3 × their plain dump).
- Redis: the ``used_memory`` the server reported when the backup was taken; an old manifest without it: the
  RDB's size × :data:`RDB_MEMORY_FACTOR` (3: an RDB stores integers and short strings compactly, LZF-compresses
  the rest, and holds none of the dict and allocator overhead of a running server).
- ``min_free_memory`` 256 MiB: what a test load leaves of MemAvailable for the host's other processes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from upkeeper.errors import SetupError
from upkeeper.fmt import human_bytes

log = logging.getLogger(__name__)

GiB = 1024**3
MiB = 1024**2
DEFAULT_MIN_FREE_SPACE = 1 * GiB
DEFAULT_SPACE_MARGIN = 1.25
DEFAULT_MIN_FREE_MEMORY = 256 * MiB
ARCHIVE_SIZE_FACTOR = 2.0
RDB_MEMORY_FACTOR = 3.0
#: seconds between two looks at the free space while a restore runs
WATCH_INTERVAL = 0.5
#: the scratch server's data directory and the tablespace a scratch database is created in (CREATE DATABASE …
#: TEMPLATE template0 takes template0's tablespace); data_directory needs superuser or pg_read_all_settings
SCRATCH_PATHS_SQL = """
SELECT current_setting('data_directory', true), pg_tablespace_location(d.dattablespace)
FROM pg_database d WHERE d.datname = 'template0'
"""
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


class NoRoom(SetupError):
    """Not enough disk space or memory on this host for the test restore: no verdict on the backup."""


def free_bytes(path: Path) -> int | None:
    """Bytes an unprivileged writer may still use on ``path``'s file system; None when it cannot be read.
    A path this user may not reach (a data directory is 0700 postgres) is measured at the mount point it is
    under, which is the same file system (``path`` must then be free of symlinks: the server names it so)."""
    try:
        st = os.statvfs(path)
    except PermissionError:
        mount = mount_point(path)
        if mount is None:
            return None
        try:
            st = os.statvfs(mount)
        except OSError:
            return None
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def mount_point(path: Path, mounts: Path = Path("/proc/self/mounts")) -> Path | None:
    """The longest mount point that ``path`` (absolute) lies under, from ``mounts``; None when unknown."""
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return None
    best: Path | None = None
    for line in lines:
        fields = line.split()
        if len(fields) < 2:
            continue
        mnt = Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1]))
        if (mnt == path or mnt in path.parents) and (best is None or len(mnt.parts) > len(best.parts)):
            best = mnt
    return best


def check_room(path: Path, needed: int, reserve: int, what: str, hint: str) -> str:
    """``needed`` bytes fit on ``path``'s file system with ``reserve`` left over, else :class:`NoRoom`.
    Returns the step that says so ("" when the free space cannot be read)."""
    free = free_bytes(path)
    if free is None:
        return ""
    if needed + reserve > free:
        raise NoRoom(f"not enough disk space for {what} on {path}: needs ~{human_bytes(needed)} plus "
                     f"{human_bytes(reserve)} kept free (min_free_space), {human_bytes(free)} free — not started",
                     hint)
    return f"disk space for {what}: ~{human_bytes(needed)} needed, {human_bytes(free)} free on {path}"


def is_local(host: str | None) -> bool:
    """Does a libpq ``host`` (None: PGHOST, else the default unix socket) name a server on this host?"""
    host = host or os.environ.get("PGHOST") or ""
    return host == "" or host.startswith("/") or host.lower() in LOCAL_HOSTS


def scratch_paths(conn: Any) -> tuple[Path | None, Path | None]:
    """(the directory a scratch database is created in, the server's pg_wal) as the server names them;
    None for what it does not tell this role."""
    row = conn.execute(SCRATCH_PATHS_SQL).fetchone()
    data_dir = str(row[0] or "") if row else ""
    location = str(row[1] or "") if row else ""
    base = Path(location) if location else Path(data_dir) / "base" if data_dir else None
    wal = Path(data_dir) / "pg_wal" if data_dir else None
    return base, wal


def postgres_needed(details: dict[str, Any], dump_bytes: int, margin: float) -> tuple[int, str]:
    """The disk space a restore of the backup needs, and where the estimate comes from."""
    size = details.get("database_size")
    if isinstance(size, int) and size >= 0:
        return int(size * margin), "the database's size at backup time"
    return int(dump_bytes * ARCHIVE_SIZE_FACTOR * margin), f"its dump's size × {ARCHIVE_SIZE_FACTOR:g}"


def redis_needed(details: dict[str, Any], rdb_bytes: int) -> tuple[int, str]:
    """The memory a redis-server holding the RDB needs, and where the estimate comes from."""
    used = details.get("used_memory")
    if isinstance(used, int) and used > 0:
        return used, "used_memory at backup time"
    return int(rdb_bytes * RDB_MEMORY_FACTOR), f"the RDB's size × {RDB_MEMORY_FACTOR:g}"


def available_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


class SpaceWatch:
    """While a restore runs, a thread looks at the free space of ``paths`` every :data:`WATCH_INTERVAL`
    seconds; the first time one has less than ``reserve`` free, it calls ``on_low`` (which stops the restore)
    once and keeps the reason in :attr:`tripped`."""

    def __init__(self, paths: Iterable[Path], reserve: int, on_low: Callable[[], None]) -> None:
        self.paths = list(dict.fromkeys(paths))
        self.reserve = reserve
        self.on_low = on_low
        self.tripped: str | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="verify-space-watch", daemon=True)

    def __enter__(self) -> SpaceWatch:
        if self.paths:
            self._thread.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL):
            if self.check():
                return

    def check(self) -> bool:
        """Is the space below the reserve (now or earlier)?  Stops the restore the first time."""
        with self._lock:
            return self._check()

    def _check(self) -> bool:
        if self.tripped is not None:
            return True
        for p in self.paths:
            free = free_bytes(p)
            if free is not None and free < self.reserve:
                self.tripped = (f"free disk space on {p} fell to {human_bytes(free)}, below the "
                                f"{human_bytes(self.reserve)} kept free (min_free_space)")
                log.error("test restore stopped: %s", self.tripped)
                with contextlib.suppress(Exception):
                    self.on_low()
                return True
        return False
