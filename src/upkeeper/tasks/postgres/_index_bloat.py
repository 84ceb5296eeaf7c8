"""What ``postgres.reindex`` looks at: bloated btree indexes and leftovers of interrupted rebuilds.

Each lookup is one query per database (SQL as named constants), whatever the number of indexes.
"""

from __future__ import annotations

from dataclasses import dataclass

INDEX_BLOAT_ESTIMATE_SQL = """
-- btree bloat estimate from pg_stats (after ioguise's pgsql-bloat-estimation, as used by check_postgres/PgHero)
SELECT idxoid::bigint, nspname, tblname, idxname, (bs * relpages)::bigint AS index_bytes,
       greatest(relpages - est_pages_ff, 0)::bigint * bs::bigint AS wasted_bytes,
       100.0 * greatest(relpages - est_pages_ff, 0) / relpages AS wasted_pct
FROM (
  SELECT coalesce(1 + ceil(reltuples / floor((bs - pageopqdata - pagehdr) * fillfactor
                                            / (100 * (4 + nulldatahdrwidth)::float))), 0) AS est_pages_ff,
         bs, nspname, tblname, idxname, idxoid, relpages, is_na
  FROM (
    SELECT maxalign, bs, nspname, tblname, idxname, reltuples, relpages, idxoid, fillfactor,
           (index_tuple_hdr_bm + maxalign
              - CASE WHEN index_tuple_hdr_bm %% maxalign = 0 THEN maxalign ELSE index_tuple_hdr_bm %% maxalign END
            + nulldatawidth + maxalign
              - CASE WHEN nulldatawidth = 0 THEN 0
                     WHEN nulldatawidth::integer %% maxalign = 0 THEN maxalign
                     ELSE nulldatawidth::integer %% maxalign END
           )::numeric AS nulldatahdrwidth,
           pagehdr, pageopqdata, is_na
    FROM (
      SELECT n.nspname, i.tblname, i.idxname, i.reltuples, i.relpages, i.idxoid, i.fillfactor,
             current_setting('block_size')::numeric AS bs, 8 AS maxalign, 24 AS pagehdr, 16 AS pageopqdata,
             CASE WHEN max(coalesce(s.null_frac, 0)) = 0 THEN 8 ELSE 8 + ((32 + 8 - 1) / 8) END AS index_tuple_hdr_bm,
             sum((1 - coalesce(s.null_frac, 0)) * coalesce(s.avg_width, 1024)) AS nulldatawidth,
             max(CASE WHEN i.atttypid = 'pg_catalog.name'::regtype THEN 1 ELSE 0 END) > 0 AS is_na
      FROM (
        SELECT ct.relname AS tblname, ct.relnamespace, ic.idxname, ic.reltuples, ic.relpages, ic.idxoid,
               ic.fillfactor, coalesce(a1.attname, a2.attname) AS attname,
               coalesce(a1.atttypid, a2.atttypid) AS atttypid,
               CASE WHEN a1.attnum IS NULL THEN ic.idxname ELSE ct.relname END AS attrelname
        FROM (
          SELECT ci.relname AS idxname, ci.reltuples, ci.relpages, x.indrelid AS tbloid, x.indexrelid AS idxoid,
                 coalesce(substring(array_to_string(ci.reloptions, ' ') FROM 'fillfactor=([0-9]+)')::smallint, 90)
                   AS fillfactor,
                 x.indkey::int2[] AS indkey, generate_series(1, x.indnatts) AS attpos
          FROM pg_index x JOIN pg_class ci ON ci.oid = x.indexrelid
          WHERE ci.relam = (SELECT oid FROM pg_am WHERE amname = 'btree') AND ci.relpages > 0 AND x.indisvalid
        ) ic
        JOIN pg_class ct ON ct.oid = ic.tbloid
        LEFT JOIN pg_attribute a1 ON ic.indkey[ic.attpos - 1] <> 0 AND a1.attrelid = ic.tbloid
                                  AND a1.attnum = ic.indkey[ic.attpos - 1]
        LEFT JOIN pg_attribute a2 ON ic.indkey[ic.attpos - 1] = 0 AND a2.attrelid = ic.idxoid
                                  AND a2.attnum = ic.attpos
      ) i
      JOIN pg_namespace n ON n.oid = i.relnamespace
      JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = i.attrelname AND s.attname = i.attname
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)'
      GROUP BY 1, 2, 3, 4, 5, 6, 7
    ) rows_data_stats
  ) rows_hdr_pdg_stats
) relation_stats
WHERE NOT is_na AND relpages > 0
  AND (relpages - est_pages_ff) * bs >= %(min_bytes)s
  AND 100.0 * (relpages - est_pages_ff) / relpages >= %(pct)s
ORDER BY wasted_bytes DESC
"""

#: pgstatindex reads the whole index: exact leaf density, one query for every candidate
INDEX_BLOAT_CONFIRM_SQL = """
SELECT t.oid::bigint, a.index_size::bigint, a.leaf_pages::bigint, a.internal_pages::bigint,
       a.avg_leaf_density::float8,
       coalesce(substring(array_to_string(c.reloptions, ' ') FROM 'fillfactor=([0-9]+)')::int, 90)
FROM unnest(%(oids)s::oid[]) AS t(oid)
JOIN pg_class c ON c.oid = t.oid,
LATERAL {schema}.pgstatindex(t.oid::regclass) AS a
"""

#: invalid indexes; the ones named *_ccnew / *_ccold are leftovers of an interrupted REINDEX CONCURRENTLY
#: (unless a REINDEX is running on that table right now: then they are its work in progress)
INVALID_INDEXES_SQL = """
SELECT i.indexrelid::bigint, n.nspname, c.relname, t.relname, pg_relation_size(i.indexrelid)::bigint,
       c.relname ~ '_cc(new|old)[0-9]*$' AS leftover,
       EXISTS (SELECT 1 FROM pg_stat_progress_create_index p
               WHERE p.relid = i.indrelid
                 AND p.datid = (SELECT oid FROM pg_database WHERE datname = current_database())) AS busy
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT i.indisvalid
ORDER BY n.nspname, c.relname
"""

#: the tables and indexes named in the job's priority lists (one query for all of them)
RESOLVE_SQL = """
SELECT q.name, c.oid::bigint, n.nspname, c.relname, c.relkind::text,
       CASE WHEN c.relkind IN ('i', 'I') THEN pg_relation_size(c.oid) ELSE pg_indexes_size(c.oid) END::bigint
FROM unnest(%(names)s::text[]) WITH ORDINALITY AS q(name, ord)
LEFT JOIN pg_class c ON c.oid = to_regclass(q.name)
LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
ORDER BY q.ord
"""

#: by name: REINDEX CONCURRENTLY gives the rebuilt index a new oid (it takes over the old one's name)
INDEX_SIZE_SQL = "SELECT pg_relation_size(to_regclass(%(name)s))::bigint"
TABLE_INDEXES_SIZE_SQL = "SELECT pg_indexes_size(to_regclass(%(name)s))::bigint"
INDEX_TABLES_SQL = "SELECT indexrelid::bigint, indrelid::bigint FROM pg_index WHERE indexrelid = ANY(%(oids)s::oid[])"


@dataclass
class Item:
    """One rebuild: an index or all of a table's indexes."""

    kind: str  # "index" | "table"
    oid: int
    schema: str
    name: str
    size: int
    reason: str  # "high" | "normal" | "bloat" | "invalid"
    wasted: int = 0

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


def confirmed_waste(index_size: int, leaf_pages: int, internal_pages: int, density: float, fillfactor: int,
                    block_size: int) -> int:
    """Bytes an index would lose if rebuilt: its size minus the leaf pages needed at its fillfactor."""
    ideal_leaf = leaf_pages * (density / max(1, fillfactor))
    ideal = (ideal_leaf + internal_pages + 1) * block_size
    return max(0, int(index_size - ideal))
