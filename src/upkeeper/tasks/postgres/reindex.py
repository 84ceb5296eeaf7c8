"""postgres.reindex: REINDEX … CONCURRENTLY for bloated indexes or a configured list; cleans leftovers.

Order: the ``high_priority`` list, the ``normal_priority`` list, then indexes found bloated (largest
waste first).  An interrupted REINDEX CONCURRENTLY leaves an invalid ``<index>_ccnew`` (or, after the
swap, ``<index>_ccold``) that slows every write and is never used: those are dropped (DROP INDEX
CONCURRENTLY) before and after the rebuilds — including the ones a failed rebuild of this run left.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import Field

from upkeeper import lazy
from upkeeper.config.targets import PostgresTarget
from upkeeper.config.types import ByteSize, Duration
from upkeeper.core.task import Finding, Result, Severity, Status, Task, TaskContext, TaskOptions, task
from upkeeper.errors import TaskError
from upkeeper.fmt import human_bytes, human_duration
from upkeeper.tasks.postgres._conn import connect, describe_pg_error
from upkeeper.tasks.postgres._disk import TABLESPACE_SQL, free_space
from upkeeper.tasks.postgres._index_bloat import (
    INDEX_BLOAT_CONFIRM_SQL,
    INDEX_BLOAT_ESTIMATE_SQL,
    INDEX_SIZE_SQL,
    INDEX_TABLES_SQL,
    INVALID_INDEXES_SQL,
    RESOLVE_SQL,
    TABLE_INDEXES_SIZE_SQL,
    Item,
    confirmed_waste,
)
from upkeeper.tasks.postgres._window import window_open

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql
else:
    psycopg = lazy.module("psycopg")
    sql = lazy.module("psycopg.sql")

MiB = 1024 * 1024

SERVER_SQL = "SELECT pg_is_in_recovery(), current_setting('block_size')::int, " \
             "CASE WHEN pg_has_role(current_user, 'pg_read_all_settings', 'MEMBER') " \
             "THEN current_setting('data_directory') END"
EXTENSION_SQL = "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pgstattuple'"
REINDEX_INDEX_SQL = "REINDEX INDEX CONCURRENTLY {}"
REINDEX_TABLE_SQL = "REINDEX TABLE CONCURRENTLY {}"
DROP_INDEX_SQL = "DROP INDEX CONCURRENTLY IF EXISTS {}"
#: a table's valid indexes by oid: REINDEX CONCURRENTLY gives each index it rebuilds a new oid, so the ones whose
#: oid is still there afterwards were left alone (an exclusion constraint's index, which PostgreSQL only warns about).
#: Of a partitioned table, its partitions' indexes: the partitioned index itself has no storage to rebuild.
TABLE_VALID_INDEXES_SQL = """
SELECT i.indexrelid::bigint, c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE (i.indrelid = %(oid)s  -- pg_partition_tree lists nothing for a table outside any partitioning
       OR i.indrelid IN (SELECT relid FROM pg_partition_tree(%(oid)s::oid::regclass) WHERE isleaf))
  AND i.indisvalid AND c.relkind = 'i'
ORDER BY c.relname
"""


class ReindexOptions(TaskOptions):
    databases: list[str] | None = Field(None, description="databases to work on (default: the target's dbname). "
            "Source: upkeeper (not set by default)")
    high_priority: list[str] = Field(
        default_factory=list, description="tables or indexes ('schema.name' or 'name') rebuilt first, in this "
        "order (a table: all its indexes). Source: upkeeper (not set by default)")
    normal_priority: list[str] = Field(
        default_factory=list, description="tables or indexes rebuilt after the high-priority ones, in this order. "
                "Source: upkeeper (not set by default)")
    bloated: bool = Field(True, description="also rebuild btree indexes found bloated (after the lists). "
            "Source: upkeeper default")
    bloat_min_wasted: ByteSize = Field(
        100 * MiB, description="an index is bloated when a rebuild would free at least this much. Source: PgHero "
        "(index_bloat_bytes, 100 MB)")
    bloat_min_pct: float = Field(
        20, ge=0, le=100, description="… and at least this % of it. Source: upkeeper default (estimates are "
        "rough: keeps a large index from being rebuilt every week for a few % of waste)")
    bloat_confirm: bool = Field(
        True, description="confirm estimated bloat with pgstatindex() where the pgstattuple extension is installed. "
                "Source: upkeeper default")
    bloat_confirm_max: int = Field(
        20, ge=0, description="confirm at most this many candidates per database. Source: upkeeper default")
    clean_leftovers: bool = Field(
        True, description="drop invalid *_ccnew / *_ccold indexes left by an interrupted REINDEX CONCURRENTLY. "
                "Source: upkeeper default")
    rebuild_invalid: bool = Field(
        False, description="also REINDEX other invalid indexes (e.g. from a failed CREATE INDEX CONCURRENTLY); "
        "default: report them. Source: upkeeper default")
    max_indexes: int = Field(
        20, ge=0, description="rebuild at most this many indexes/tables per run. Source: upkeeper default")
    max_duration: Duration = Field(
        default=timedelta(hours=2),
        description="start no new rebuild after this long; the rest waits for the next run. Source: upkeeper "
        "default")
    reindex_timeout: Duration | None = Field(
        None, description="statement_timeout for one rebuild (default: none; the job's timeout still applies). "
        "A rebuild stopped by it leaves a _ccnew index, which this run drops. "
        "Source: upkeeper (not set by default)")
    lock_timeout: Duration = Field(
        default=timedelta(seconds=30),
        description="how long a rebuild or drop waits for a lock before giving up. Source: upkeeper default")
    window_only: bool = Field(
        True, description="rebuild only while the job's maintenance window is open when the job has one "
        "(leftover cleanup always runs). Source: upkeeper default")
    repair_disk_path: str | None = Field(
        None, description="a path on the database server's data filesystem for the free-disk check (default: "
        "data_directory / tablespace location when upkeeper runs on the database host). "
        "Source: upkeeper (not set by default)")
    repair_without_disk_check: bool = Field(
        False, description="rebuild even when free disk cannot be measured. Default false. "
                "Source: upkeeper default")


def _ms(td: timedelta) -> int:
    return max(1, int(td.total_seconds() * 1000))


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Run:
    """State of one reindex run across databases."""

    def __init__(self, ctx: TaskContext, o: ReindexOptions, target: PostgresTarget) -> None:
        self.ctx, self.o, self.target = ctx, o, target
        self.findings: list[Finding] = []
        self.metrics: dict[str, float] = {"reindexed": 0.0, "freed_bytes": 0.0, "leftovers_dropped": 0.0}
        self.deadline = time.monotonic() + o.max_duration.total_seconds()
        self.budget = o.max_indexes
        self.in_recovery = False
        self.block_size = 8192
        self.data_directory: str | None = None


@task
class PostgresReindex(Task[ReindexOptions]):
    """Drop _ccnew/_ccold leftovers, then REINDEX … CONCURRENTLY the priority lists and the bloated indexes (docs/postgres.md)."""


    name = "postgres.reindex"
    summary = "REINDEX CONCURRENTLY bloated or listed indexes; drop _ccnew/_ccold leftovers"
    target_kinds = ("postgres",)
    Options = ReindexOptions
    category = "maintenance"
    exclusive = True

    def run(self, ctx: TaskContext, options: ReindexOptions) -> Result:
        target = ctx.require_target()
        assert isinstance(target, PostgresTarget)
        r = _Run(ctx, options, target)
        t0 = time.monotonic()
        for db in list(dict.fromkeys(options.databases or [target.dbname])):
            try:
                with connect(target, db) as conn:
                    self._database(r, conn, db)
            except TaskError as exc:
                r.findings.append(Finding("postgres.unreachable", Severity.CRITICAL, f"database {db}", exc.message,
                                          (exc.hint or "").removeprefix("Try: ")))
        r.metrics["duration_s"] = round(time.monotonic() - t0, 3)
        n, freed, dropped = int(r.metrics["reindexed"]), r.metrics["freed_bytes"], int(r.metrics["leftovers_dropped"])
        summary = f"rebuilt {n} index(es)/table(s), freed {human_bytes(freed)}"
        if dropped:
            summary += f"; dropped {dropped} leftover index(es) of interrupted rebuilds"
        worst = [f for f in r.findings if f.severity is not Severity.INFO]
        if worst:
            summary += f"; {len(worst)} problem(s)"
        status = Status.FAIL if any(f.check == "postgres.unreachable" for f in r.findings) else None
        return Result(summary=summary, findings=r.findings, metrics=r.metrics, status=status)

    # -- one database ------------------------------------------------------------------------------

    def _database(self, r: _Run, conn: psycopg.Connection[Any], db: str) -> None:
        o = r.o
        conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(_ms(o.lock_timeout))))
        row = conn.execute(SERVER_SQL).fetchone()
        assert row is not None
        r.in_recovery, r.block_size, r.data_directory = bool(row[0]), int(row[1]), row[2]
        if r.in_recovery:
            r.findings.append(Finding("postgres.reindex_deferred", Severity.INFO, f"database {db}",
                                      "this server is a standby (read-only): nothing to rebuild here",
                                      "run the job against the primary"))
            return
        if o.clean_leftovers:
            self._clean_leftovers(r, conn, db)
        items = self._plan(r, conn, db)
        if items and o.window_only and window_open(r.ctx) is False:
            r.findings.append(Finding(
                "postgres.reindex_deferred", Severity.INFO, f"database {db}",
                f"{len(items)} rebuild(s) not started: outside the job's maintenance window",
                "they run in the next run inside the window (or set window_only: false)", value=float(len(items))))
            return
        if items and r.ctx.dry_run:
            r.findings.append(Finding("postgres.reindex_deferred", Severity.INFO, f"database {db}",
                                      "dry run: would rebuild " + ", ".join(i.qualified for i in items), ""))
            return
        failed = False
        for i, item in enumerate(items):
            if r.budget <= 0 or time.monotonic() >= r.deadline:
                rest = items[i:]
                r.findings.append(Finding(
                    "postgres.reindex_deferred", Severity.INFO, f"database {db}",
                    f"{len(rest)} rebuild(s) left for the next run (max_indexes / max_duration reached): "
                    + ", ".join(x.qualified for x in rest[:10]), "", value=float(len(rest))))
                break
            failed |= not self._rebuild(r, conn, db, item)
        if failed and o.clean_leftovers:
            self._clean_leftovers(r, conn, db)

    def _plan(self, r: _Run, conn: psycopg.Connection[Any], db: str) -> list[Item]:
        o = r.o
        items: list[Item] = []
        names = o.high_priority + o.normal_priority
        if names:
            for k, (name, oid, schema, rel, kind, size) in enumerate(
                    conn.execute(RESOLVE_SQL, {"names": names}).fetchall()):
                reason = "high" if k < len(o.high_priority) else "normal"
                if oid is None or kind not in ("r", "m", "p", "i", "I"):
                    r.findings.append(Finding(
                        "postgres.reindex_missing", Severity.WARNING, f"{db}.{name}",
                        f"{name!r} is not a table or index in database {db}",
                        "fix the job's high_priority / normal_priority lists"))
                    continue
                items.append(Item("index" if kind in ("i", "I") else "table", int(oid), schema, rel, int(size or 0),
                                  reason))
        for row in conn.execute(INVALID_INDEXES_SQL).fetchall():
            oid, schema, idx, table, size, leftover, busy = row
            if leftover:
                continue
            r.findings.append(Finding(
                "postgres.invalid_index", Severity.WARNING, f"{db}.{schema}.{idx}",
                "invalid index (a failed CREATE INDEX CONCURRENTLY?): never used by queries, yet updated on every "
                "write" + ("; rebuilding it" if o.rebuild_invalid else ""),
                f"REINDEX INDEX CONCURRENTLY {schema}.{idx} (rebuild_invalid: true), or DROP INDEX CONCURRENTLY",
                value=float(size), data={"table": f"{schema}.{table}"}))
            if o.rebuild_invalid and not busy:
                items.append(Item("index", int(oid), schema, idx, int(size), "invalid"))
        if o.bloated:
            items += self._bloated(r, conn, db)
        # drop repeats: an index listed twice, or rebuilt anyway as part of a table listed earlier
        index_oids = [it.oid for it in items if it.kind == "index"]
        table_of = ({int(a): int(b) for a, b in conn.execute(INDEX_TABLES_SQL, {"oids": index_oids}).fetchall()}
                    if index_oids else {})
        seen: set[int] = set()
        out = []
        for it in items:
            if it.oid in seen or table_of.get(it.oid) in seen:
                continue
            seen.add(it.oid)
            out.append(it)
        return out

    def _bloated(self, r: _Run, conn: psycopg.Connection[Any], db: str) -> list[Item]:
        o = r.o
        rows = conn.execute(INDEX_BLOAT_ESTIMATE_SQL, {"min_bytes": o.bloat_min_wasted,
                                                       "pct": o.bloat_min_pct}).fetchall()
        cands = [{"oid": int(oid), "schema": schema, "table": table, "index": idx, "size": int(size),
                  "wasted": int(wasted), "pct": float(pct), "method": "estimate"}
                 for oid, schema, table, idx, size, wasted, pct in rows]
        r.metrics[f"db.{db}.bloat_candidates"] = float(len(cands))
        ext = conn.execute(EXTENSION_SQL).fetchone() if o.bloat_confirm and cands else None
        if ext is not None:
            checked = cands[: o.bloat_confirm_max]
            exact = {int(x[0]): x[1:] for x in conn.execute(
                INDEX_BLOAT_CONFIRM_SQL.replace("{schema}", _quote_ident(ext[0])),
                {"oids": [c["oid"] for c in checked]}).fetchall()}
            kept = []
            for c in checked:
                size, leaf, internal, density, ff = exact[c["oid"]]
                wasted = confirmed_waste(int(size), int(leaf), int(internal), float(density), int(ff), r.block_size)
                pct = 100.0 * wasted / size if size else 0.0
                c.update(size=int(size), wasted=wasted, pct=pct, method="pgstatindex")
                if wasted >= o.bloat_min_wasted and pct >= o.bloat_min_pct:
                    kept.append(c)
            cands = kept + cands[o.bloat_confirm_max:]
        items = []
        for c in cands:
            how = "measured with pgstatindex" if c["method"] == "pgstatindex" else "estimated from pg_stats"
            r.findings.append(Finding(
                "postgres.index_bloat", Severity.WARNING, f"{db}.{c['schema']}.{c['index']}",
                f"a rebuild would free {human_bytes(c['wasted'])} ({c['pct']:.0f} % of {human_bytes(c['size'])}; "
                f"{how})",
                f"REINDEX INDEX CONCURRENTLY {c['schema']}.{c['index']} (this job does it)",
                value=float(c["wasted"]), threshold=float(o.bloat_min_wasted),
                data={"table": f"{c['schema']}.{c['table']}", "pct": round(c["pct"], 1), "method": c["method"]}))
            items.append(Item("index", c["oid"], c["schema"], c["index"], c["size"], "bloat", wasted=c["wasted"]))
        return items

    # -- actions -----------------------------------------------------------------------------------

    def _disk_ok(self, r: _Run, conn: psycopg.Connection[Any], db: str, item: Item) -> bool:
        row = conn.execute(TABLESPACE_SQL, {"oid": item.oid}).fetchone()
        space = free_space(r.target, r.data_directory, row[0] if row else None, r.o.repair_disk_path)
        subject = f"{db}.{item.qualified}"
        if space is None:
            if r.o.repair_without_disk_check:
                return True
            r.findings.append(Finding(
                "postgres.reindex_skipped", Severity.WARNING, subject,
                f"not rebuilt: free disk on the database server cannot be measured from here (needs "
                f"{human_bytes(item.size)})",
                "set repair_disk_path (upkeeper on the database host) or repair_without_disk_check: true"))
            return False
        if space.free <= item.size:
            r.findings.append(Finding(
                "postgres.reindex_skipped", Severity.WARNING, subject,
                f"not rebuilt: {human_bytes(space.free)} free on {space.path}, the new copy needs "
                f"{human_bytes(item.size)}", "free disk space first",
                value=float(space.free), threshold=float(item.size)))
            return False
        return True

    def _rebuild(self, r: _Run, conn: psycopg.Connection[Any], db: str, item: Item) -> bool:
        subject = f"{db}.{item.qualified}"
        if not self._disk_ok(r, conn, db, item):
            return True
        r.budget -= 1
        ident = sql.SQL("{}.{}").format(sql.Identifier(item.schema), sql.Identifier(item.name))
        stmt = sql.SQL(REINDEX_INDEX_SQL if item.kind == "index" else REINDEX_TABLE_SQL).format(ident)
        size_sql = INDEX_SIZE_SQL if item.kind == "index" else TABLE_INDEXES_SIZE_SQL
        r.ctx.progress(f"{db}: REINDEX {item.kind.upper()} CONCURRENTLY {item.qualified}", None)
        timeout = _ms(r.o.reindex_timeout) if r.o.reindex_timeout else 0
        before: dict[int, str] = ({int(oid): str(name) for oid, name in
                                   conn.execute(TABLE_VALID_INDEXES_SQL, {"oid": item.oid}).fetchall()}
                                  if item.kind == "table" else {})
        said: list[str] = []

        def hear(d: psycopg.errors.Diagnostic) -> None:
            if d.severity_nonlocalized in ("WARNING", "NOTICE") and d.message_primary:
                said.append(d.message_primary)

        t0 = time.monotonic()
        conn.add_notice_handler(hear)
        try:
            conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(timeout)))
            conn.execute(stmt)
        except psycopg.Error as exc:
            lock = isinstance(exc, psycopg.errors.LockNotAvailable)
            r.findings.append(Finding(
                "postgres.reindex_failed", Severity.WARNING, subject,
                f"REINDEX {item.kind.upper()} CONCURRENTLY failed after {human_duration(time.monotonic() - t0)}: "
                f"{describe_pg_error(exc)}",
                ("a long transaction held a lock; the next run tries again" if lock else
                 "see the message; the old index stays in use and the half-built copy is dropped"),
                data={"reason": item.reason}))
            return False
        finally:
            conn.remove_notice_handler(hear)
            try:
                conn.execute("SET statement_timeout = 0")
            except psycopg.Error:
                pass
        elapsed = time.monotonic() - t0
        if item.kind == "table":
            still = {int(oid) for oid, _ in conn.execute(TABLE_VALID_INDEXES_SQL, {"oid": item.oid}).fetchall()}
            left = [name for oid, name in before.items() if oid in still]
            if left:
                server = ("; the server said: " + "; ".join(said)) if said else ""
                r.findings.append(Finding(
                    "postgres.reindex_skipped", Severity.WARNING, subject,
                    f"REINDEX TABLE CONCURRENTLY left {len(left)} of its {len(before)} index(es) as they were: "
                    f"{', '.join(left)}{server}",
                    "PostgreSQL cannot rebuild an exclusion constraint's index concurrently: REINDEX INDEX it "
                    "(without CONCURRENTLY: it locks the table) in a quiet hour",
                    value=float(len(left)), data={"reason": item.reason, "not_rebuilt": left}))
            if len(left) == len(before):  # nothing was rebuilt (or the table has no index)
                if not before:
                    r.findings.append(Finding(
                        "postgres.reindex_skipped", Severity.INFO, subject,
                        f"{item.qualified} has no valid index to rebuild", "remove it from the job's lists",
                        data={"reason": item.reason}))
                return True
        row = conn.execute(size_sql, {"name": ident.as_string(conn)}).fetchone()
        after = int(row[0]) if row and row[0] is not None else item.size
        freed = max(0, item.size - after)
        r.metrics["reindexed"] += 1
        r.metrics["freed_bytes"] += freed
        for f in r.findings:
            if f.check == "postgres.index_bloat" and f.severity is not Severity.INFO and (
                    f.subject == subject
                    or (item.kind == "table" and f.subject.startswith(f"{db}.")
                        and f.data.get("table") == item.qualified)):
                f.severity = Severity.INFO
                f.message += "; rebuilt"
        why = {"high": "high priority", "normal": "normal priority", "bloat": "bloated", "invalid": "invalid"}
        r.findings.append(Finding(
            "postgres.reindexed", Severity.INFO, subject,
            f"REINDEX {item.kind.upper()} CONCURRENTLY ({why[item.reason]}): {human_bytes(item.size)} → "
            f"{human_bytes(after)} in {human_duration(elapsed)}", "", value=float(freed),
            data={"reason": item.reason, "before_bytes": item.size, "after_bytes": after,
                  "seconds": round(elapsed, 3)}))
        return True

    def _clean_leftovers(self, r: _Run, conn: psycopg.Connection[Any], db: str) -> None:
        for _oid, schema, idx, table, size, leftover, busy in conn.execute(INVALID_INDEXES_SQL).fetchall():
            if not leftover:
                continue
            subject = f"{db}.{schema}.{idx}"
            if busy:
                r.ctx.log.info("%s: a REINDEX is running on %s.%s; leaving %s alone", db, schema, table, idx)
                continue
            if r.ctx.dry_run:
                r.findings.append(Finding("postgres.reindex_leftover", Severity.INFO, subject,
                                          "dry run: leftover of an interrupted REINDEX CONCURRENTLY would be dropped",
                                          ""))
                continue
            try:
                conn.execute(sql.SQL(DROP_INDEX_SQL).format(
                    sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(idx))))
            except psycopg.Error as exc:
                r.findings.append(Finding(
                    "postgres.reindex_leftover", Severity.WARNING, subject,
                    f"invalid leftover of an interrupted REINDEX CONCURRENTLY; dropping it failed: "
                    f"{describe_pg_error(exc)}",
                    f"DROP INDEX CONCURRENTLY {schema}.{idx} by hand", value=float(size)))
                continue
            r.metrics["leftovers_dropped"] += 1
            r.findings.append(Finding(
                "postgres.reindex_leftover", Severity.INFO, subject,
                f"dropped the invalid leftover of an interrupted REINDEX CONCURRENTLY on {schema}.{table} "
                f"({human_bytes(size)})", "", value=float(size), data={"table": f"{schema}.{table}"}))
