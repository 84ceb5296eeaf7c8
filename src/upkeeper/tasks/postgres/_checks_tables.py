"""Per-database table checks of ``postgres.maintenance``: one set-based query each.

Dead tuples, bloat (estimated, confirmed with pgstattuple), wraparound per table (TOAST included),
sequences, cache hit ratio and the largest tables.
"""

from __future__ import annotations

from typing import Any

from upkeeper.core.task import Finding, Severity
from upkeeper.fmt import human_bytes
from upkeeper.tasks.postgres._checks_server import XID_STOP_AGE, extensions, wraparound_severity
from upkeeper.tasks.postgres._survey import Probe, Survey, check, unreadable_finding

USER_SCHEMAS = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)'"

# -- dead tuples ----------------------------------------------------------------------------------------

DEAD_TUPLES_SQL = """
SELECT schemaname, relname, n_live_tup::bigint, n_dead_tup::bigint,
       greatest(last_vacuum, last_autovacuum)::text, greatest(last_analyze, last_autoanalyze)::text
FROM pg_stat_user_tables
WHERE n_dead_tup > %(min)s AND n_dead_tup * 100.0 >= %(pct)s * greatest(n_live_tup + n_dead_tup, 1)
ORDER BY n_dead_tup DESC
"""


@check("dead_tuples", "database")
def check_dead_tuples(s: Survey, p: Probe) -> list[Finding]:
    o = s.options
    out = []
    for schema, table, live, dead, last_vacuum, last_analyze in p.rows(
            DEAD_TUPLES_SQL, {"min": o.dead_tuples_min, "pct": o.dead_tuples_pct}):
        pct = 100.0 * dead / max(1, live + dead)
        out.append(Finding(
            "postgres.dead_tuples", Severity.WARNING, f"{p.db}.{schema}.{table}",
            f"{dead:,} dead rows ({pct:.0f} % of {live + dead:,}); last vacuum {last_vacuum or 'never'}",
            f"VACUUM (ANALYZE) {schema}.{table} (the postgres.vacuum job); if autovacuum cannot keep up, lower "
            "autovacuum_vacuum_scale_factor for this table",
            value=round(pct, 1), threshold=o.dead_tuples_pct,
            data={"dead": int(dead), "live": int(live), "last_vacuum": last_vacuum, "last_analyze": last_analyze},
        ))
    return out


# -- table bloat ---------------------------------------------------------------------------------------
# Estimate: the pg_stats-based query check_postgres, PgHero and pgsql-bloat-estimation (ioguise) use: the
# expected number of pages from row count and average row width versus the pages the table has.

TABLE_BLOAT_ESTIMATE_SQL = """
SELECT tblid::bigint, schemaname, tblname, fillfactor,
       (bs * tblpages)::bigint AS table_bytes,
       greatest(tblpages - est_pages_ff, 0)::bigint * bs::bigint AS wasted_bytes,
       CASE WHEN tblpages > 0 THEN 100.0 * greatest(tblpages - est_pages_ff, 0) / tblpages ELSE 0 END AS wasted_pct,
       pg_total_relation_size(tblid)::bigint AS total_bytes,
       EXISTS (SELECT 1 FROM pg_index x WHERE x.indrelid = tblid AND x.indisvalid
                 AND (x.indisprimary OR (x.indisunique AND x.indpred IS NULL AND x.indexprs IS NULL))) AS has_key,
       readable
FROM (
  SELECT ceil(reltuples / ((bs - page_hdr) * fillfactor / (tpl_size * 100))) + ceil(toasttuples / 4) AS est_pages_ff,
         tblpages, fillfactor, bs, tblid, schemaname, tblname, is_na, readable
  FROM (
    SELECT (4 + tpl_hdr_size + tpl_data_size + (2 * ma)
            - CASE WHEN tpl_hdr_size %% ma = 0 THEN ma ELSE tpl_hdr_size %% ma END
            - CASE WHEN ceil(tpl_data_size)::int %% ma = 0 THEN ma ELSE ceil(tpl_data_size)::int %% ma END
           ) AS tpl_size,
           heappages + toastpages AS tblpages, reltuples, toasttuples, bs, page_hdr, tblid, schemaname, tblname,
           fillfactor, is_na, readable
    FROM (
      SELECT tbl.oid AS tblid, ns.nspname AS schemaname, tbl.relname AS tblname, tbl.reltuples,
             tbl.relpages AS heappages, coalesce(toast.relpages, 0) AS toastpages,
             coalesce(toast.reltuples, 0) AS toasttuples,
             coalesce(substring(array_to_string(tbl.reloptions, ' ') FROM 'fillfactor=([0-9]+)')::smallint, 100)
               AS fillfactor,
             current_setting('block_size')::numeric AS bs,
             8 AS ma, 24 AS page_hdr,
             23 + CASE WHEN max(coalesce(s.null_frac, 0)) > 0 THEN (7 + count(s.attname)) / 8 ELSE 0::int END
               AS tpl_hdr_size,
             sum((1 - coalesce(s.null_frac, 0)) * coalesce(s.avg_width, 0)) AS tpl_data_size,
             bool_or(att.atttypid = 'pg_catalog.name'::regtype)
               OR sum(CASE WHEN att.attnum > 0 THEN 1 ELSE 0 END) <> count(s.attname) AS is_na,
             has_table_privilege(tbl.oid, 'SELECT') AS readable
      FROM pg_attribute att
      JOIN pg_class tbl ON att.attrelid = tbl.oid
      JOIN pg_namespace ns ON ns.oid = tbl.relnamespace
      LEFT JOIN pg_stats s ON s.schemaname = ns.nspname AND s.tablename = tbl.relname
                           AND s.inherited = false AND s.attname = att.attname
      LEFT JOIN pg_class toast ON tbl.reltoastrelid = toast.oid
      WHERE NOT att.attisdropped AND att.attnum > 0 AND tbl.relkind IN ('r', 'm') AND tbl.reltuples >= 0
        AND ns.nspname NOT IN ('pg_catalog', 'information_schema') AND ns.nspname !~ '^pg_(toast|temp)'
      GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
    ) s1
  ) s2
) s3
-- a table the user may not SELECT has no pg_stats rows (PostgreSQL hides them): returned to be reported
WHERE tblpages > 0 AND (NOT readable OR (NOT is_na
  AND (tblpages - est_pages_ff) * bs >= %(min_bytes)s
  AND 100.0 * (tblpages - est_pages_ff) / tblpages >= %(pct)s))
ORDER BY wasted_bytes DESC
"""

#: pgstattuple_approx reads the visibility map and only the pages not all-visible: exact dead-tuple
#: and free-space figures at a fraction of pgstattuple's cost; one query for every candidate
TABLE_BLOAT_CONFIRM_SQL = """
SELECT t.oid::bigint, a.table_len::bigint, a.dead_tuple_len::bigint, a.approx_free_space::bigint,
       a.scanned_percent::float8
FROM unnest(%(oids)s::oid[]) AS t(oid),
     LATERAL {schema}.pgstattuple_approx(t.oid::regclass) AS a
"""


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@check("bloat", "database")
def check_bloat(s: Survey, p: Probe) -> list[Finding]:
    o = s.options
    rows = p.rows(TABLE_BLOAT_ESTIMATE_SQL, {"min_bytes": o.bloat_min_bytes, "pct": o.bloat_pct})
    cands: list[dict[str, Any]] = [
        {"oid": oid, "schema": schema, "table": table, "fillfactor": ff, "table_bytes": int(tb),
         "wasted_bytes": int(wb), "wasted_pct": float(wp), "total_bytes": int(total), "has_key": bool(key),
         "method": "estimate"}
        for oid, schema, table, ff, tb, wb, wp, total, key, readable in rows if readable
    ]
    unreadable = [f"{r[1]}.{r[2]}" for r in rows if not r[9]]
    schema_pst = extensions(s, p).get("pgstattuple") if o.bloat_confirm else None
    s.metrics[f"db.{p.db}.bloat_candidates"] = float(len(cands))
    if schema_pst is not None and cands:
        checked = cands[:o.bloat_confirm_max]
        exact = {r[0]: r[1:] for r in p.rows(TABLE_BLOAT_CONFIRM_SQL.format(schema=_quote_ident(schema_pst)),
                                             {"oids": [c["oid"] for c in checked]})}
        confirmed = []
        for c in checked:
            table_len, dead_len, free, scanned = exact[c["oid"]]
            expected_free = table_len * (100 - c["fillfactor"]) / 100
            wasted = max(0, int(dead_len + free - expected_free))
            pct = 100.0 * wasted / table_len if table_len else 0.0
            c.update(method="pgstattuple_approx", wasted_bytes=wasted, wasted_pct=pct, table_bytes=int(table_len),
                     scanned_pct=round(float(scanned), 1))
            if wasted >= o.bloat_min_bytes and pct >= o.bloat_pct:
                confirmed.append(c)
            else:
                s.ctx.log.info("bloat estimate for %s.%s not confirmed by pgstattuple_approx (%.0f %% wasted)",
                               c["schema"], c["table"], pct)
        cands = confirmed + cands[o.bloat_confirm_max:]
    s.fact(p.db)["bloated_tables"] = cands
    out = [unreadable_finding(p.db, "bloat", "table(s)", sorted(unreadable))] if unreadable else []
    for c in cands:
        how = "measured with pgstattuple_approx" if c["method"] != "estimate" else "estimated from pg_stats"
        out.append(Finding(
            "postgres.table_bloat", Severity.WARNING, f"{p.db}.{c['schema']}.{c['table']}",
            f"{c['wasted_pct']:.0f} % of the table is wasted space ({human_bytes(c['wasted_bytes'])} of "
            f"{human_bytes(c['table_bytes'])}; {how})",
            "repair with pg_repack (online) or VACUUM FULL (locks the table) — postgres.maintenance does it when "
            "'repair' is on, inside the job's maintenance window; then find why autovacuum fell behind",
            value=round(c["wasted_pct"], 1), threshold=o.bloat_pct,
            data={k: c[k] for k in ("wasted_bytes", "table_bytes", "total_bytes", "method")},
        ))
    return out


# -- transaction-ID wraparound per table (TOAST included) ------------------------------------------------

WRAPAROUND_TABLES_SQL = """
SELECT n.nspname, c.relname, c.relkind::text, age(c.relfrozenxid)::bigint,
       o_n.nspname, o.relname, current_setting('autovacuum_freeze_max_age')::bigint
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class o ON c.relkind = 't' AND o.reltoastrelid = c.oid
LEFT JOIN pg_namespace o_n ON o_n.oid = o.relnamespace
WHERE c.relkind IN ('r', 'm', 't') AND c.relfrozenxid <> '0'::xid
  AND age(c.relfrozenxid) >= least(%(warn)s::bigint, %(danger)s::bigint,
                                   current_setting('autovacuum_freeze_max_age')::bigint - %(margin)s::bigint)
ORDER BY 4 DESC
"""


@check("wraparound_tables", "database")
def check_wraparound_tables(s: Survey, p: Probe) -> list[Finding]:
    o = s.options
    rows = p.rows(WRAPAROUND_TABLES_SQL, {"warn": o.wraparound_warn,
                                          "danger": XID_STOP_AGE - o.wraparound_min_remaining,
                                          "margin": o.autovacuum_freeze_margin})
    out = []
    for schema, rel, kind, age, owner_schema, owner, freeze_max in rows:
        if kind == "t" and owner:
            subject = f"{p.db}.{owner_schema}.{owner} (TOAST {schema}.{rel})"
            vacuum_target = f"{owner_schema}.{owner}"
        else:
            subject = f"{p.db}.{schema}.{rel}"
            vacuum_target = f"{schema}.{rel}"
        data = {"relation": f"{schema}.{rel}", "toast": kind == "t", "autovacuum_freeze_max_age": int(freeze_max)}
        verdict = wraparound_severity(int(age), s)
        if verdict is not None:
            sev, threshold, reason = verdict
            out.append(Finding(
                "postgres.wraparound", sev, subject, f"transaction-ID age {age:,} ({reason})",
                f"VACUUM (FREEZE, VERBOSE) {vacuum_target}; if it does not lower the age, look for long "
                "transactions, prepared transactions and stale replication slots",
                value=int(age), threshold=threshold, data=data,
            ))
        elif age >= freeze_max - o.autovacuum_freeze_margin:
            out.append(Finding(
                "postgres.autovacuum_freeze_due", Severity.INFO, subject,
                f"transaction-ID age {age:,} is within {o.autovacuum_freeze_margin:,} of autovacuum_freeze_max_age "
                f"({freeze_max:,}): a forced anti-wraparound autovacuum will start soon",
                f"run VACUUM (FREEZE) {vacuum_target} at a quiet time to choose when it happens",
                value=int(age), threshold=int(freeze_max) - o.autovacuum_freeze_margin, data=data,
            ))
    if rows:
        s.metrics[f"db.{p.db}.max_table_xid_age"] = float(rows[0][3])
    return out


# -- sequences -----------------------------------------------------------------------------------------

SEQUENCES_SQL = """
WITH seqs AS (
  SELECT c.oid, n.nspname, c.relname, s.seqmin, s.seqmax, s.seqincrement, s.seqcycle,
         CASE WHEN has_sequence_privilege(c.oid, 'SELECT,USAGE') THEN pg_sequence_last_value(c.oid) END AS last_value,
         has_sequence_privilege(c.oid, 'SELECT,USAGE') AS readable
  FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
), cols AS (
  -- columns fed by the sequence: OWNED BY (serial) or identity …
  SELECT d.objid AS seqid, a.attrelid, a.attname, a.atttypid
  FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
  WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
    AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0
  UNION
  -- … or a DEFAULT nextval('…') on any column
  SELECT d.refobjid, ad.adrelid, a.attname, a.atttypid
  FROM pg_depend d
  JOIN pg_attrdef ad ON ad.oid = d.objid
  JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
  WHERE d.classid = 'pg_attrdef'::regclass AND d.refclassid = 'pg_class'::regclass
)
SELECT s.nspname, s.relname, s.last_value, s.seqmin, s.seqmax, s.seqincrement, s.seqcycle,
       c.attrelid::regclass::text, c.attname, c.atttypid::regtype::text, s.readable
FROM seqs s LEFT JOIN cols c ON c.seqid = s.oid
WHERE s.last_value IS NOT NULL OR NOT s.readable  -- one the user may not read is reported, not skipped
"""

TYPE_RANGE = {
    "smallint": (-(2**15), 2**15 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "bigint": (-(2**63), 2**63 - 1),
}


def sequence_usage(last: int, seqmin: int, seqmax: int, increment: int,
                   col_type: str | None) -> tuple[float, int]:
    """(% of the range used, the effective end) — the column's type may end the range sooner."""
    lo, hi = TYPE_RANGE.get(col_type or "", (seqmin, seqmax))
    if increment > 0:
        end = min(seqmax, hi)
        span = end - seqmin
        used = last - seqmin
    else:
        end = max(seqmin, lo)
        span = seqmax - end
        used = seqmax - last
    return (100.0 * used / span if span > 0 else 100.0), end


@check("sequences", "database")
def check_sequences(s: Survey, p: Probe) -> list[Finding]:
    o = s.options
    worst: dict[tuple[str, str], tuple[float, int, Any]] = {}
    unreadable: set[str] = set()
    for schema, name, last, seqmin, seqmax, inc, cycle, table, column, col_type, readable in p.rows(SEQUENCES_SQL):
        if not readable:
            unreadable.add(f"{schema}.{name}")
            continue
        pct, end = sequence_usage(int(last), int(seqmin), int(seqmax), int(inc), col_type)
        if cycle and end in (seqmin, seqmax):
            continue  # a cycling sequence wraps by design (unless a column's type ends it first)
        key = (schema, name)
        if key not in worst or pct > worst[key][0]:
            worst[key] = (pct, end, (last, table, column, col_type, seqmax if inc > 0 else seqmin))
    out = [unreadable_finding(p.db, "sequences", "sequence(s)", sorted(unreadable))] if unreadable else []
    for (schema, name), (pct, end, (last, table, column, col_type, seq_end)) in worst.items():
        sev = (Severity.CRITICAL if pct >= o.sequence_critical_pct
               else Severity.WARNING if pct >= o.sequence_warn_pct else None)
        if sev is None:
            continue
        limited_by = f"column {table}.{column} ({col_type})" if table and end != seq_end else "the sequence's range"
        out.append(Finding(
            "postgres.sequence_exhaustion", sev, f"{p.db}.{schema}.{name}",
            f"{pct:.1f} % used: at {last:,} of {end:,} (limited by {limited_by})",
            (f"ALTER TABLE {table} ALTER COLUMN {column} TYPE bigint (and ALTER SEQUENCE {schema}.{name} AS "
             "bigint) before it runs out" if table else f"ALTER SEQUENCE {schema}.{name} AS bigint / MAXVALUE …"),
            value=round(pct, 2),
            threshold=o.sequence_critical_pct if sev is Severity.CRITICAL else o.sequence_warn_pct,
            data={"last_value": int(last), "end": int(end), "column": f"{table}.{column}" if table else None,
                  "column_type": col_type},
        ))
    return out


# -- cache hit ratio -------------------------------------------------------------------------------------

CACHE_HIT_SQL = """
SELECT coalesce(sum(heap_blks_hit), 0)::float8, coalesce(sum(heap_blks_read), 0)::float8,
       coalesce(sum(idx_blks_hit), 0)::float8, coalesce(sum(idx_blks_read), 0)::float8
FROM pg_statio_user_tables
"""


@check("cache_hit", "database")
def check_cache_hit(s: Survey, p: Probe) -> list[Finding]:
    o = s.options
    heap_hit, heap_read, idx_hit, idx_read = p.one(CACHE_HIT_SQL)
    out = []
    for what, hit, read in (("table", heap_hit, heap_read), ("index", idx_hit, idx_read)):
        total = hit + read
        if total <= 0:
            continue
        pct = 100.0 * hit / total
        s.metrics[f"db.{p.db}.{what}_cache_hit_pct"] = round(pct, 3)
        if total >= o.cache_hit_min_blocks and pct < o.cache_hit_min_pct:
            out.append(Finding(
                "postgres.cache_hit_ratio", Severity.WARNING, f"database {p.db} ({what}s)",
                f"{what} cache hit ratio {pct:.2f} % ({int(read):,} of {int(total):,} block reads missed "
                "shared_buffers)",
                "raise shared_buffers (about 25 % of RAM), add memory, or find the queries reading the most "
                "(pg_stat_statements shared_blks_read)",
                value=round(pct, 2), threshold=o.cache_hit_min_pct, data={"hit": int(hit), "read": int(read)},
            ))
    return out


# -- largest tables -----------------------------------------------------------------------------------------

LARGEST_TABLES_SQL = f"""
SELECT n.nspname, c.relname, pg_total_relation_size(c.oid)::bigint AS total,
       pg_relation_size(c.oid)::bigint, pg_indexes_size(c.oid)::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm') AND {USER_SCHEMAS}
ORDER BY total DESC
LIMIT %(n)s
"""


@check("largest_tables", "database")
def check_largest_tables(s: Survey, p: Probe) -> list[Finding]:
    n = s.options.top_tables
    if n <= 0:
        return []
    rows = p.rows(LARGEST_TABLES_SQL, {"n": n})
    tables: list[dict[str, Any]] = [
        {"table": f"{schema}.{name}", "total_bytes": int(total), "heap_bytes": int(heap), "index_bytes": int(idx)}
        for schema, name, total, heap, idx in rows]
    for t in tables:
        s.metrics[f"table.{p.db}.{t['table']}.total_bytes"] = float(t["total_bytes"])
    if not tables:
        return []
    return [Finding(
        "postgres.largest_tables", Severity.INFO, f"database {p.db}",
        "largest tables: " + ", ".join(f"{t['table']} {human_bytes(t['total_bytes'])}" for t in tables[:5]),
        "watch these for growth (retention of logs/audit rows, archiving old data)",
        value=float(tables[0]["total_bytes"]), data={"tables": tables},
    )]
