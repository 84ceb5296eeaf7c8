"""Free disk for a repair: a rewrite (VACUUM FULL, pg_repack, REINDEX) needs room for a new copy.

PostgreSQL has no SQL function for free space, so this works when upkeeper runs on the database
host (the server's data_directory or tablespace location is a local path) or when the job names
a path on the database's filesystem (``repair_disk_path``).  Otherwise free space is unknown and
the caller refuses to repair unless told otherwise.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from upkeeper.config.targets import PostgresTarget

TABLESPACE_SQL = """
SELECT CASE WHEN c.reltablespace = 0 THEN NULL ELSE pg_tablespace_location(c.reltablespace) END
FROM pg_class c WHERE c.oid = %(oid)s::oid
"""

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


@dataclass
class DiskSpace:
    path: str
    free: int


def is_local(target: PostgresTarget) -> bool:
    host = target.host or os.environ.get("PGHOST") or ""
    return host == "" or host.startswith("/") or host in LOCAL_HOSTS


def free_space(target: PostgresTarget, data_directory: str | None, tablespace_location: str | None,
               override: str | None) -> DiskSpace | None:
    """Free bytes on the filesystem holding the relation, or None when it cannot be measured here."""
    if override:
        path = override
    elif not is_local(target):
        return None
    else:
        path = tablespace_location or data_directory or ""
    if not path:
        return None
    try:
        return DiskSpace(path, shutil.disk_usage(path).free)
    except OSError:
        return None
