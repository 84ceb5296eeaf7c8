"""Repair of bloated tables found by the survey: targeted VACUUM FULL, or pg_repack when installed.

Only the tables the survey flagged, largest waste first, at most ``repair_max_tables`` a run; only
inside the job's maintenance window when it has one; only when free disk exceeds the table plus
its indexes (a rewrite needs room for a new copy).  VACUUM FULL waits at most ``lock_timeout`` for
its exclusive lock, so it never queues in front of the application's queries for long.
"""

from __future__ import annotations

import glob
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from upkeeper import lazy
from upkeeper.core import proc
from upkeeper.core.task import Finding, Severity
from upkeeper.errors import ProcessError, TaskError
from upkeeper.fmt import human_bytes, human_duration
from upkeeper.tasks.postgres._conn import connect, describe_pg_error, qualified
from upkeeper.tasks.postgres._disk import TABLESPACE_SQL, free_space
from upkeeper.tasks.postgres._survey import Survey
from upkeeper.tasks.postgres._window import window_open

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql
else:
    psycopg = lazy.module("psycopg")
    sql = lazy.module("psycopg.sql")

VACUUM_FULL_SQL = "VACUUM (FULL, ANALYZE) {}"
TOTAL_SIZE_SQL = "SELECT pg_total_relation_size(%(oid)s::oid)::bigint"
#: a rewrite (VACUUM FULL, pg_repack) gives the table new storage: the same file node afterwards means the server
#: left it alone (VACUUM FULL only WARNs 'skipping … only table or database owner can vacuum it')
FILENODE_SQL = "SELECT pg_relation_filenode(%(oid)s::oid)::bigint"


def pg_tool(name: str, bin_dir: str | None, server_version_num: int | None) -> str | None:
    """A PostgreSQL client program: the target's bin_dir, the server's major version, the newest, PATH."""
    dirs: list[str] = [bin_dir] if bin_dir else []
    if server_version_num:
        dirs.append(f"/usr/lib/postgresql/{server_version_num // 10000}/bin")
    dirs += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name), reverse=True)
    return proc.which(name, dirs)


def repair_allowed(s: Survey, what: str, subject: str, count: int) -> bool:
    """The gate every heavy repair passes: read-write server, window (if any) open, not a dry run."""
    if s.server is not None and s.server.in_recovery:
        s.findings.append(Finding(
            "postgres.repair_skipped", Severity.INFO, subject,
            f"{count} {what} not repaired: this server is a standby (read-only)",
            "run the job against the primary"))
        return False
    if s.options.window_only and window_open(s.ctx) is False:
        s.findings.append(Finding(
            "postgres.repair_deferred", Severity.INFO, subject,
            f"{count} {what} not repaired: outside the job's maintenance window",
            "they are repaired by the next run inside the window (or set window_only: false)",
            value=float(count)))
        return False
    if s.ctx.dry_run:
        s.findings.append(Finding(
            "postgres.repair_skipped", Severity.INFO, subject, f"dry run: {count} {what} would be repaired", ""))
        return False
    return True


def _disk_ok(s: Survey, conn: psycopg.Connection[Any], c: dict[str, Any], subject: str) -> bool:
    o = s.options
    row = conn.execute(TABLESPACE_SQL, {"oid": c["oid"]}).fetchone()
    tablespace = row[0] if row else None
    space = free_space(s.target, s.server.data_directory if s.server else None, tablespace, o.repair_disk_path)
    need = int(c["total_bytes"])
    if space is None:
        if o.repair_without_disk_check:
            return True
        s.findings.append(Finding(
            "postgres.repair_skipped", Severity.WARNING, subject,
            f"not repaired: free disk on the database server cannot be measured from here (needs "
            f"{human_bytes(need)} for the new copy)",
            "set repair_disk_path to a path on the database's filesystem (upkeeper on the database host), or "
            "repair_without_disk_check: true if you have checked the room yourself",
            data={"needed_bytes": need}))
        return False
    if space.free <= need:
        s.findings.append(Finding(
            "postgres.repair_skipped", Severity.WARNING, subject,
            f"not repaired: {human_bytes(space.free)} free on {space.path}, the rewrite needs more than "
            f"{human_bytes(need)} (table + indexes)",
            "free disk space first, or repair with pg_repack on a larger volume",
            value=float(space.free), threshold=float(need), data={"path": space.path}))
        return False
    return True


def _mark_repaired(s: Survey, subject: str, how: str) -> None:
    for f in s.findings:
        if f.check == "postgres.table_bloat" and f.subject == subject:
            f.severity = Severity.INFO
            f.message += f"; repaired ({how})"


def repair_bloat(s: Survey, db: str) -> None:
    o = s.options
    cands: list[dict[str, Any]] = list(s.fact(db).get("bloated_tables") or [])
    if not cands or not o.repair:
        return
    if not repair_allowed(s, "bloated table(s)", f"database {db}", len(cands)):
        return
    exts = s.fact(db).get("extensions", {})
    repack = None
    if o.repair_method in ("auto", "pg_repack") and "pg_repack" in exts:
        repack = pg_tool("pg_repack", s.target.bin_dir, s.server.version_num if s.server else None)
    if o.repair_method == "pg_repack" and repack is None:
        s.findings.append(Finding(
            "postgres.repair_skipped", Severity.WARNING, f"database {db}",
            "repair_method is pg_repack, but " + ("the pg_repack program was not found" if "pg_repack" in exts
                                                  else f"the pg_repack extension is not installed in {db}"),
            "install pg_repack (apt install postgresql-NN-repack; CREATE EXTENSION pg_repack) or use "
            "repair_method: auto"))
        return
    freed_total = 0
    repaired = 0
    with connect(s.target, db) as conn:
        conn.execute(sql.SQL("SET lock_timeout = {}").format(
            sql.Literal(max(1, int(o.lock_timeout.total_seconds() * 1000)))))
        for c in cands[: o.repair_max_tables]:
            subject = f"{db}.{c['schema']}.{c['table']}"
            if not _disk_ok(s, conn, c, subject):
                continue
            use_repack = repack is not None and c["has_key"]
            how = "pg_repack" if use_repack else "VACUUM FULL"
            s.ctx.progress(f"{db}: {how} {c['schema']}.{c['table']}", None)
            row = conn.execute(TOTAL_SIZE_SQL, {"oid": c["oid"]}).fetchone()
            before = int(row[0]) if row else int(c["total_bytes"])
            node = conn.execute(FILENODE_SQL, {"oid": c["oid"]}).fetchone()
            said: list[str] = []

            def hear(d: psycopg.errors.Diagnostic, said: list[str] = said) -> None:
                if d.severity_nonlocalized == "WARNING" and d.message_primary:
                    said.append(d.message_primary)

            conn.add_notice_handler(hear)
            t0 = time.monotonic()
            try:
                if use_repack:
                    assert repack is not None
                    _run_repack(s, repack, db, c)
                else:
                    conn.execute(sql.SQL(VACUUM_FULL_SQL).format(qualified(c["schema"], c["table"])))
            except psycopg.errors.LockNotAvailable:
                s.findings.append(Finding(
                    "postgres.repair_lock_timeout", Severity.WARNING, subject,
                    f"{how} could not lock the table within {human_duration(o.lock_timeout)}; not repaired",
                    "a long transaction holds the table; the next run tries again (or use pg_repack)",
                    value=o.lock_timeout.total_seconds(), threshold=o.lock_timeout.total_seconds()))
                continue
            except (psycopg.Error, ProcessError, TaskError) as exc:
                msg = describe_pg_error(exc) if isinstance(exc, psycopg.Error) else str(exc)
                s.findings.append(Finding(
                    "postgres.repair_failed", Severity.WARNING, subject, f"{how} failed: {msg}",
                    "see the message; the table is unchanged (both methods are all-or-nothing)"))
                continue
            finally:
                conn.remove_notice_handler(hear)
            elapsed = time.monotonic() - t0
            if node is not None and node == conn.execute(FILENODE_SQL, {"oid": c["oid"]}).fetchone():
                s.findings.append(Finding(
                    "postgres.repair_skipped", Severity.WARNING, subject,
                    f"{how} left the table as it was (not rewritten)"
                    + (f"; the server said: {'; '.join(said)}" if said else ""),
                    "run the job as the table's owner or a superuser (VACUUM FULL needs one of them)",
                    data={"method": how}))
                continue
            row = conn.execute(TOTAL_SIZE_SQL, {"oid": c["oid"]}).fetchone()
            if row is None:  # pg_repack swaps the table's storage but keeps its oid; be defensive anyway
                row = conn.execute("SELECT pg_total_relation_size(%(t)s::regclass)::bigint",
                                   {"t": f'"{c["schema"]}"."{c["table"]}"'}).fetchone()
            after = int(row[0]) if row else before
            freed = max(0, before - after)
            freed_total += freed
            repaired += 1
            _mark_repaired(s, subject, how)
            s.findings.append(Finding(
                "postgres.bloat_repaired", Severity.INFO, subject,
                f"{how}: {human_bytes(before)} → {human_bytes(after)} (freed {human_bytes(freed)}) in "
                f"{human_duration(elapsed)}",
                "", value=float(freed),
                data={"method": how, "before_bytes": before, "after_bytes": after, "seconds": round(elapsed, 3)}))
    s.metrics["repaired_tables"] = s.metrics.get("repaired_tables", 0.0) + repaired
    s.metrics["repair_freed_bytes"] = s.metrics.get("repair_freed_bytes", 0.0) + freed_total


def _run_repack(s: Survey, repack: str, db: str, c: dict[str, Any]) -> None:
    table = '"{}"."{}"'.format(c["schema"].replace('"', '""'), c["table"].replace('"', '""'))
    wait = max(1, int(s.options.lock_timeout.total_seconds()))
    argv = [repack, "--table", table, "--no-kill-backend", "--wait-timeout", str(wait), "--dbname", db]
    res = proc.run(argv, extra_env=s.target.libpq_env(db), check=False)
    if res.returncode != 0:
        raise ProcessError(repack, f"pg_repack exited with code {res.returncode}: "
                           + (res.stderr.strip().splitlines() or ["(no output)"])[-1], stderr=res.stderr)
    s.ctx.log.info("pg_repack %s: %s", table, res.stderr.strip()[-500:])
