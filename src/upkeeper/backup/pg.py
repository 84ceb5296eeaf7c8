"""PostgreSQL client tools and queries used by backup, verify and restore."""

from __future__ import annotations

import contextlib
import glob
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from upkeeper import lazy
from upkeeper.config.targets import PostgresTarget
from upkeeper.core import proc
from upkeeper.errors import BackupError, SetupError, TaskError
from upkeeper.redact import redact

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql
else:
    psycopg = lazy.module("psycopg")
    sql = lazy.module("psycopg.sql")

SERVER_VERSION_SQL = "SELECT current_setting('server_version'), current_setting('server_version_num')::int"

LIST_DATABASES_SQL = """
SELECT datname FROM pg_database WHERE NOT datistemplate AND datallowconn ORDER BY datname
"""

# Ordinary tables (partitions included; partitioned parents hold no rows of their own) whose data pg_dump dumps.
LIST_TABLES_SQL = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.deptype = 'e')
ORDER BY n.nspname, c.relname
"""

EXPORT_SNAPSHOT_SQL = "SELECT pg_export_snapshot()"

DATABASE_NONEMPTY_SQL = """
SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%%'
"""

_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


def bin_dir(target: PostgresTarget) -> Path | None:
    if target.bin_dir:
        return Path(target.bin_dir)
    cands = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                   if Path(p).parent.name.isdigit() else 0)
    return Path(cands[-1]) if cands else None


def tool(target: PostgresTarget, name: str) -> str:
    d = bin_dir(target)
    found = proc.which(name, [d] if d else [])
    if not found:
        raise TaskError(f"{name} not found" + (f" in {d}" if d else ""),
                        "Try: install the PostgreSQL client (apt-get install postgresql-client) or set the "
                        "target's bin_dir", permanent=True)
    return found


def tool_version(path: str) -> tuple[str, int]:
    """(``15.5``, 150005) from ``pg_dump --version``."""
    out = proc.run([path, "--version"], timeout=30).text
    m = _VERSION_RE.search(out)
    if not m:
        raise TaskError(f"cannot read the version of {path}: {out.strip()[:100]!r}")
    major, minor = int(m.group(1)), int(m.group(2) or 0)
    return f"{major}.{minor}", major * 10000 + minor


def check_dump_version(tool_name: str, tool_ver: str, tool_num: int, server_ver: str, server_num: int) -> None:
    """A pg_dump older (major) than the server cannot dump it faithfully: refuse, naming both versions."""
    if tool_num // 10000 < server_num // 10000:
        raise TaskError(
            f"{tool_name} {tool_ver} is older than the server (PostgreSQL {server_ver}); it cannot dump it reliably",
            f"Try: install the PostgreSQL {server_num // 10000} client tools and point the target's bin_dir at them",
            permanent=True)


def pg_error(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return redact(lines[0] if lines else type(exc).__name__)


@contextlib.contextmanager
def connect(target: PostgresTarget, dbname: str | None = None, *, autocommit: bool = True) -> Iterator[
        psycopg.Connection[Any]]:
    params = target.libpq_params(dbname)
    try:
        conn = psycopg.connect(**params, autocommit=autocommit)  # type: ignore[arg-type]
    except psycopg.OperationalError as exc:
        raise TaskError(f"cannot connect to PostgreSQL {target.display()} (database {params['dbname']}): "
                        f"{pg_error(exc)}",
                        "Try: check host, port, user and password of the target, and that the server runs") from None
    try:
        yield conn
    finally:
        conn.close()


def server_version(conn: psycopg.Connection[Any]) -> tuple[str, int]:
    row = conn.execute(SERVER_VERSION_SQL).fetchone()
    assert row is not None
    return str(row[0]).split()[0], int(row[1])


def list_databases(conn: psycopg.Connection[Any]) -> list[str]:
    return [str(r[0]) for r in conn.execute(LIST_DATABASES_SQL)]


def list_tables(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    return [(str(r[0]), str(r[1])) for r in conn.execute(LIST_TABLES_SQL)]


# Counting runs beside the dump on the same CPUs: one backend per scan (no parallel workers) and no JIT
# compilation keep its CPU cost lowest (measured: a parallel count costs ~50% more CPU in total).
COUNT_SESSION_SQL = ("SET LOCAL max_parallel_workers_per_gather = 0", "SET LOCAL jit = off")


def count_rows(conn: psycopg.Connection[Any], tables: list[tuple[str, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    if not conn.autocommit:
        for stmt in COUNT_SESSION_SQL:
            conn.execute(stmt)
    for schema, table in tables:
        row = conn.execute(sql.SQL("SELECT count(*) FROM ONLY {}.{}").format(
            sql.Identifier(schema), sql.Identifier(table))).fetchone()
        counts[f"{schema}.{table}"] = int(row[0]) if row else 0
    return counts


def stderr_errors(stderr: str) -> list[str]:
    """Lines that report an error even when the exit code says success."""
    return [ln for ln in stderr.splitlines() if re.search(r"(^|[\s:])(error|ERROR|FATAL|PANIC):", ln)]


def check_stage(result: proc.ProcResult, what: str) -> None:
    """Exit code and stderr of one pipeline stage: any ERROR line fails it."""
    name = Path(result.argv[0]).name
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-4:])
        raise BackupError(f"{name} {proc.describe_exit(result.returncode)} while {what}" + (f": {tail}" if tail else ""))
    errs = stderr_errors(result.stderr)
    if errs:
        raise BackupError(f"{name} reported an error while {what}: {errs[-1]}")


def database_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def database_nonempty(target: PostgresTarget, name: str) -> bool:
    with connect(target, name) as conn:
        row = conn.execute(DATABASE_NONEMPTY_SQL).fetchone()
        return bool(row and row[0])


def admin_db(target: PostgresTarget, avoid: str) -> str:
    """A database to connect to for CREATE/DROP DATABASE ``avoid`` (never ``avoid`` itself)."""
    if target.dbname != avoid:
        return target.dbname
    return "postgres" if avoid != "postgres" else "template1"


def create_database(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))


def drop_database(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def which_or_fail(name: str, pkg: str) -> str:
    found = shutil.which(name)
    if not found:
        raise SetupError(f"{name} not found", f"Try: apt-get install {pkg}")
    return found
