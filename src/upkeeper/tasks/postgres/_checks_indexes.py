"""Per-database index checks of ``postgres.maintenance``: unused, duplicate and invalid indexes.

The three share one catalog query per database (fetched once, kept in the survey's facts).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

from upkeeper.core.task import Finding, Severity
from upkeeper.fmt import human_bytes, human_duration
from upkeeper.tasks.postgres._survey import Probe, Survey, check

INDEXES_SQL = """
SELECT i.indexrelid::bigint, n.nspname, t.relname, c.relname,
       i.indisunique, i.indisprimary, i.indisvalid, i.indnkeyatts,
       i.indkey::int2[], i.indclass::oid[]::bigint[], i.indcollation::oid[]::bigint[],
       pg_get_expr(i.indexprs, i.indrelid), pg_get_expr(i.indpred, i.indrelid), am.amname,
       pg_relation_size(i.indexrelid)::bigint, pg_stat_get_numscans(i.indexrelid)::bigint,
       k.conindid IS NOT NULL
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
JOIN pg_am am ON am.oid = c.relam
-- a join, not a per-row subquery: pg_constraint has no index on conindid
LEFT JOIN (SELECT DISTINCT conindid FROM pg_constraint WHERE contype IN ('p', 'u', 'x')) k
       ON k.conindid = i.indexrelid
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)'
ORDER BY n.nspname, t.relname, c.relname
"""

#: pg_get_indexdef costs ~0.3 ms an index: fetched only for the indexes a check reports (one query)
INDEX_DEFINITIONS_SQL = """
SELECT x.oid::bigint, pg_get_indexdef(x.oid) FROM unnest(%(oids)s::oid[]) AS x(oid)
"""

#: how long statistics have been collected in this database (server start when never reset: stats
#: survive a clean restart since PostgreSQL 15, so this underestimates — the safe direction)
STATS_AGE_SQL = """
SELECT extract(epoch FROM now() - coalesce(stats_reset, pg_postmaster_start_time()))::float8
FROM pg_stat_database WHERE datname = current_database()
"""

#: leftovers of an interrupted REINDEX CONCURRENTLY are named <index>_ccnew[N] / <index>_ccold[N]
LEFTOVER_RE = re.compile(r"_cc(new|old)[0-9]*$")


@dataclass
class Index:
    oid: int
    schema: str
    table: str
    name: str
    unique: bool
    primary: bool
    valid: bool
    nkey: int
    keys: list[int]
    opclasses: list[int]
    collations: list[int]
    exprs: str | None
    pred: str | None
    method: str
    size: int
    scans: int
    backs_constraint: bool
    definition: str = ""

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def key_signature(self) -> list[tuple[int, int, int]]:
        return list(zip(self.keys[: self.nkey], self.opclasses, self.collations, strict=False))

    def included(self) -> set[int]:
        return set(self.keys[self.nkey:])


def indexes(s: Survey, p: Probe) -> list[Index]:
    facts = s.fact(p.db)
    if "indexes" not in facts:
        facts["indexes"] = [Index(int(r[0]), r[1], r[2], r[3], bool(r[4]), bool(r[5]), bool(r[6]), int(r[7]),
                                  list(r[8]), [int(x) for x in r[9]], [int(x) for x in r[10]], r[11], r[12], r[13],
                                  int(r[14]), int(r[15]), bool(r[16]))
                            for r in p.rows(INDEXES_SQL)]
        s.metrics[f"db.{p.db}.indexes"] = float(len(facts["indexes"]))
    result: list[Index] = facts["indexes"]
    return result


def with_definitions(p: Probe, wanted: list[Index]) -> None:
    """Fill in ``definition`` for the indexes about to be reported."""
    missing = {ix.oid: ix for ix in wanted if not ix.definition}
    if missing:
        for oid, definition in p.rows(INDEX_DEFINITIONS_SQL, {"oids": list(missing)}):
            missing[int(oid)].definition = str(definition)


@check("unused_indexes", "database")
def check_unused_indexes(s: Survey, p: Probe) -> list[Finding]:
    o = s.options
    stats_age = float(p.one(STATS_AGE_SQL)[0] or 0.0)
    if stats_age < o.unused_index_min_stats_age.total_seconds():
        s.ctx.log.info("%s: statistics only %s old; unused indexes not judged yet", p.db, human_duration(stats_age))
        return []
    unused = [ix for ix in indexes(s, p)
              if ix.scans == 0 and ix.valid and ix.size >= o.unused_index_min_bytes
              and not (ix.unique or ix.primary or ix.backs_constraint)]
    with_definitions(p, unused[: o.max_findings_per_check])
    out = []
    for ix in unused:
        out.append(Finding(
            "postgres.unused_index", Severity.WARNING, f"{p.db}.{ix.qualified}",
            f"never scanned in {human_duration(stats_age)} of statistics, yet {human_bytes(ix.size)} and "
            f"updated on every write to {ix.schema}.{ix.table}",
            f"check replicas' pg_stat_user_indexes too (scans there do not count here), then DROP INDEX "
            f"CONCURRENTLY {ix.qualified}",
            value=float(ix.size), threshold=float(o.unused_index_min_bytes),
            data={"table": f"{ix.schema}.{ix.table}", "definition": ix.definition, "stats_age_s": stats_age},
        ))
    return out


def covered_by(a: Index, b: Index) -> bool:
    """True when index ``a`` is made redundant by ``b``: same table, kind, expressions and predicate, and
    a's key columns (with operator classes and collations) are a leading prefix of b's."""
    if a.oid == b.oid or not b.valid or a.method != b.method or a.exprs != b.exprs or a.pred != b.pred:
        return False
    sa, sb = a.key_signature(), b.key_signature()
    if a.method != "btree" and sa != sb:
        return False  # only btree serves a prefix of its columns
    if sb[: len(sa)] != sa or not a.included() <= set(b.keys):
        return False
    if a.unique or a.primary or a.backs_constraint:
        # a unique index is only redundant when b enforces exactly the same uniqueness
        return sa == sb and b.unique and a.included() == b.included()
    return True


@check("duplicate_indexes", "database")
def check_duplicate_indexes(s: Survey, p: Probe) -> list[Finding]:
    by_table: dict[tuple[str, str], list[Index]] = defaultdict(list)
    for ix in indexes(s, p):
        if ix.valid:
            by_table[(ix.schema, ix.table)].append(ix)
    pairs: list[tuple[Index, Index, bool]] = []
    for group in by_table.values():
        if len(group) < 2:
            continue
        for a in group:
            for b in group:
                if not covered_by(a, b):
                    continue
                exact = a.key_signature() == b.key_signature() and a.included() == b.included()
                if exact and covered_by(b, a):
                    # a true duplicate pair: report only one, keeping the constraint / the older index
                    keep_b = (b.primary, b.backs_constraint, -b.oid) > (a.primary, a.backs_constraint, -a.oid)
                    if not keep_b:
                        continue
                if a.primary or a.backs_constraint:
                    continue  # never suggest dropping a constraint's index
                pairs.append((a, b, exact))
                break
    with_definitions(p, [ix for a, b, _ in pairs[: s.options.max_findings_per_check] for ix in (a, b)])
    out = []
    for a, b, exact in pairs:
        out.append(Finding(
            "postgres.duplicate_index", Severity.WARNING, f"{p.db}.{a.qualified}",
            f"{'duplicates' if exact else 'is a prefix of'} {b.qualified} ({human_bytes(a.size)} "
            f"wasted): {a.definition}",
            f"DROP INDEX CONCURRENTLY {a.qualified} — {b.qualified} serves the same queries",
            value=float(a.size),
            data={"table": f"{a.schema}.{a.table}", "index": a.definition, "covered_by": b.definition,
                  "exact": exact},
        ))
    return out


@check("invalid_indexes", "database")
def check_invalid_indexes(s: Survey, p: Probe) -> list[Finding]:
    invalid = [ix for ix in indexes(s, p) if not ix.valid]
    with_definitions(p, invalid[: s.options.max_findings_per_check])
    out = []
    for ix in invalid:
        leftover = LEFTOVER_RE.search(ix.name) is not None
        out.append(Finding(
            "postgres.invalid_index", Severity.WARNING, f"{p.db}.{ix.qualified}",
            ("leftover of an interrupted REINDEX CONCURRENTLY: invalid, yet updated on every write"
             if leftover else "invalid (a failed CREATE INDEX CONCURRENTLY?): not used by queries, yet "
             "updated on every write"),
            (f"postgres.reindex drops it (or: DROP INDEX CONCURRENTLY {ix.qualified})" if leftover
             else f"REINDEX INDEX CONCURRENTLY {ix.qualified}, or DROP INDEX CONCURRENTLY {ix.qualified}"),
            value=float(ix.size), data={"table": f"{ix.schema}.{ix.table}", "definition": ix.definition,
                                        "reindex_leftover": leftover},
        ))
    return out
