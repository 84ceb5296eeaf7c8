"""Server-wide checks of ``postgres.maintenance``: run once per target, whatever the number of tables.

Each check is one function with its SQL as a named constant beside it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from upkeeper.core.task import Finding, Severity
from upkeeper.fmt import human_bytes, human_duration
from upkeeper.tasks.postgres._survey import Probe, Survey, check, hidden_sessions_finding

#: 2^31 - 1M: PostgreSQL refuses new transaction IDs this close to wraparound (PgHero's constant)
XID_STOP_AGE = 2_146_483_648


def wraparound_severity(age: int, s: Survey) -> tuple[Severity, float, str] | None:
    """(severity, threshold crossed, reason) for a transaction-ID age, or None when fine."""
    o = s.options
    remaining = XID_STOP_AGE - age
    if remaining < o.wraparound_min_remaining:
        return Severity.CRITICAL, o.wraparound_min_remaining, f"only {remaining:,} transactions before shutdown"
    if age >= o.wraparound_critical:
        return Severity.CRITICAL, o.wraparound_critical, f"{remaining:,} transactions before shutdown"
    if age >= o.wraparound_warn:
        return Severity.WARNING, o.wraparound_warn, f"{remaining:,} transactions before shutdown"
    return None


# -- connections --------------------------------------------------------------------------------

#: A session the user may not see (no pg_read_all_stats) has its backend_type and state hidden: one connected
#: to a database is counted as ``hidden`` (a client, or at worst an autovacuum worker).
HIDDEN_SESSION = "backend_type IS NULL AND datid IS NOT NULL"

CONNECTIONS_SQL = f"""
SELECT count(*) FILTER (WHERE backend_type = 'client backend')::int,
       current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int,
       count(*) FILTER (WHERE {HIDDEN_SESSION})::int
FROM pg_stat_activity
"""


@check("connections", "server")
def check_connections(s: Survey, p: Probe) -> list[Finding]:
    visible, max_conn, reserved, hidden = p.one(CONNECTIONS_SQL)
    used = visible + hidden  # a session we may not see still takes a connection slot
    pct = 100.0 * used / max(1, max_conn)
    s.metrics.update({"connections_used": float(used), "connections_max": float(max_conn),
                      "connections_pct": round(pct, 2)})
    out = [hidden_sessions_finding("connections", hidden, "they are counted as connections, but upkeeper cannot "
                                   "tell clients from autovacuum workers")] if hidden else []
    o = s.options
    sev = (Severity.CRITICAL if pct >= o.connections_critical_pct
           else Severity.WARNING if pct >= o.connections_warn_pct else None)
    if sev is None:
        return out
    threshold = o.connections_critical_pct if sev is Severity.CRITICAL else o.connections_warn_pct
    return [*out, Finding(
        "postgres.connections", sev, s.target.display(),
        f"{used} of {max_conn} connections in use ({pct:.0f} %; {reserved} reserved for superusers)",
        "use a connection pooler (PgBouncer), lower the application's pool sizes, or raise max_connections",
        value=round(pct, 1), threshold=threshold, data={"used": used, "max_connections": max_conn},
    )]


# -- sessions idle in a transaction -----------------------------------------------------------------

IDLE_IN_TRANSACTION_SQL = """
SELECT pid, datname, usename, application_name, client_addr::text,
       extract(epoch FROM now() - state_change)::float8 AS idle_s,
       extract(epoch FROM now() - xact_start)::float8 AS xact_s,
       left(query, 200)
FROM pg_stat_activity
WHERE state IN ('idle in transaction', 'idle in transaction (aborted)')
  AND state_change < now() - make_interval(secs => %(secs)s)
ORDER BY state_change
"""

HIDDEN_SESSIONS_SQL = f"SELECT count(*) FILTER (WHERE {HIDDEN_SESSION})::int FROM pg_stat_activity"


@check("idle_in_transaction", "server")
def check_idle_in_transaction(s: Survey, p: Probe) -> list[Finding]:
    limit = s.options.idle_in_transaction_max.total_seconds()
    rows = p.rows(IDLE_IN_TRANSACTION_SQL, {"secs": limit})
    s.metrics["idle_in_transaction"] = float(len(rows))
    hidden = int(p.one(HIDDEN_SESSIONS_SQL)[0])
    out = [hidden_sessions_finding("idle_in_transaction", hidden, "whether they sit idle in a transaction is "
                                   "unknown")] if hidden else []
    return [*out, *(Finding(
        "postgres.idle_in_transaction", Severity.WARNING, f"pid {pid} ({user}@{db}, {app or 'no app name'})",
        f"session idle in a transaction for {human_duration(idle)} (transaction open {human_duration(xact)}); "
        f"last statement: {query}",
        "fix the application to commit or roll back promptly; set idle_in_transaction_session_timeout; "
        f"end it with SELECT pg_terminate_backend({pid})",
        value=round(idle, 1), threshold=limit,
        data={"pid": pid, "database": db, "user": user, "application": app, "client": client},
    ) for pid, db, user, app, client, idle, xact, query in rows)]


# -- lock waits -------------------------------------------------------------------------------------

LOCK_WAITS_SQL = """
SELECT l.pid, a.datname, a.usename, l.locktype, l.mode,
       CASE WHEN l.relation IS NOT NULL THEN l.relation::regclass::text END,
       extract(epoch FROM now() - l.waitstart)::float8 AS wait_s,
       pg_blocking_pids(l.pid), left(a.query, 200)
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE NOT l.granted AND l.waitstart < now() - make_interval(secs => %(secs)s)
ORDER BY l.waitstart
"""

#: before PostgreSQL 14 pg_locks has no waitstart: the statement's start bounds the wait from above
LOCK_WAITS_PG13_SQL = """
SELECT l.pid, a.datname, a.usename, l.locktype, l.mode,
       CASE WHEN l.relation IS NOT NULL THEN l.relation::regclass::text END,
       extract(epoch FROM now() - a.query_start)::float8 AS wait_s,
       pg_blocking_pids(l.pid), left(a.query, 200)
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE NOT l.granted AND a.query_start < now() - make_interval(secs => %(secs)s)
ORDER BY a.query_start
"""


@check("lock_waits", "server")
def check_lock_waits(s: Survey, p: Probe) -> list[Finding]:
    limit = s.options.lock_wait_max.total_seconds()
    query = LOCK_WAITS_SQL if s.server is None or s.server.version_num >= 140000 else LOCK_WAITS_PG13_SQL
    rows = p.rows(query, {"secs": limit})
    s.metrics["lock_waits"] = float(len(rows))
    out = []
    for pid, db, user, locktype, mode, relation, wait_s, blockers, stmt in rows:
        what = f"{mode} on {relation}" if relation else f"{mode} ({locktype})"
        out.append(Finding(
            "postgres.lock_waits", Severity.WARNING, f"pid {pid} ({user}@{db})",
            f"waiting {human_duration(wait_s)} for {what}, blocked by pid(s) {', '.join(map(str, blockers)) or '?'};"
            f" statement: {stmt}",
            "look at the blocking sessions (SELECT * FROM pg_stat_activity WHERE pid = ANY(pg_blocking_pids("
            f"{pid}))): a long transaction or an idle-in-transaction session; end it if it is stuck",
            value=round(wait_s, 1), threshold=limit,
            data={"pid": pid, "database": db, "mode": mode, "relation": relation, "blocked_by": list(blockers)},
        ))
    return out


# -- transaction-ID wraparound per database ----------------------------------------------------------

WRAPAROUND_DATABASES_SQL = """
SELECT datname, age(datfrozenxid)::bigint, mxid_age(datminmxid)::bigint
FROM pg_database
ORDER BY 2 DESC
"""


@check("wraparound_databases", "server")
def check_wraparound_databases(s: Survey, p: Probe) -> list[Finding]:
    out = []
    for db, age, mxid_age in p.rows(WRAPAROUND_DATABASES_SQL):
        s.metrics[f"db.{db}.xid_age"] = float(age)
        verdict = wraparound_severity(int(age), s)
        if verdict is None:
            continue
        sev, threshold, reason = verdict
        out.append(Finding(
            "postgres.wraparound", sev, f"database {db}",
            f"transaction-ID age {age:,} ({reason})",
            f"VACUUM (FREEZE) the oldest tables of {db} (see the table findings, or vacuumdb --freeze); look for "
            "long transactions, prepared transactions and stale replication slots holding the horizon back",
            value=int(age), threshold=threshold, data={"database": db, "multixact_age": int(mxid_age)},
        ))
    return out


# -- replication: primary side (per replica) or standby side (this server) ---------------------------

REPLICAS_SQL = """
SELECT application_name, client_addr::text, state, sync_state,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8 AS replay_bytes,
       pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn)::float8 AS flush_bytes,
       extract(epoch FROM replay_lag)::float8, pid
FROM pg_stat_replication
ORDER BY application_name, pid
"""

STANDBY_SQL = """
SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::float8,
       CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END::float8,
       {paused},
       (SELECT status FROM pg_stat_wal_receiver),
       EXISTS (SELECT FROM pg_stat_wal_receiver)
"""


def _lag_findings(s: Survey, subject: str, lag_bytes: float | None, lag_s: float | None,
                  data: dict[str, Any]) -> list[Finding]:
    o = s.options
    out = []
    if lag_bytes is not None:
        sev = (Severity.CRITICAL if lag_bytes >= o.replication_lag_critical_bytes
               else Severity.WARNING if lag_bytes >= o.replication_lag_warn_bytes else None)
        if sev:
            out.append(Finding(
                "postgres.replication_lag", sev, subject, f"replay is {human_bytes(lag_bytes)} of WAL behind",
                "check the replica's load, network and whether replay is paused (pg_get_wal_replay_pause_state())",
                value=lag_bytes,
                threshold=float(o.replication_lag_critical_bytes if sev is Severity.CRITICAL
                                else o.replication_lag_warn_bytes),
                data={**data, "unit": "bytes"},
            ))
    if lag_s is not None:
        sev = (Severity.CRITICAL if lag_s >= o.replication_lag_critical_seconds
               else Severity.WARNING if lag_s >= o.replication_lag_warn_seconds else None)
        if sev:
            out.append(Finding(
                "postgres.replication_lag", sev, subject, f"replay is {human_duration(lag_s)} behind",
                "check the replica's load, network and whether replay is paused; long queries on a hot standby "
                "delay replay (max_standby_streaming_delay)",
                value=round(lag_s, 2),
                threshold=(o.replication_lag_critical_seconds if sev is Severity.CRITICAL
                           else o.replication_lag_warn_seconds),
                data={**data, "unit": "seconds"},
            ))
    return out


@check("replication", "server")
def check_replication(s: Survey, p: Probe) -> list[Finding]:
    out: list[Finding] = []
    if s.server is not None and s.server.in_recovery:
        paused = ("pg_get_wal_replay_pause_state()" if s.server.version_num >= 140000
                  else "CASE WHEN pg_is_wal_replay_paused() THEN 'paused' ELSE 'not paused' END")
        lag_bytes, lag_s, pause_state, receiver, has_receiver = p.one(STANDBY_SQL.format(paused=paused))
        subject = f"standby {s.target.display()}"
        if lag_bytes is not None:
            s.metrics["standby.lag_bytes"] = float(lag_bytes)
        if lag_s is not None:
            s.metrics["standby.lag_seconds"] = round(float(lag_s), 3)
        out += _lag_findings(s, subject, lag_bytes, lag_s, {"role": "standby", "pause_state": pause_state})
        if pause_state != "not paused":
            out.append(Finding(
                "postgres.replay_paused", Severity.WARNING, subject, f"WAL replay is {pause_state}",
                "resume it with SELECT pg_wal_replay_resume() once whatever needed the pause is done",
                value=str(pause_state),
            ))
        if has_receiver and receiver is None:  # it runs, but its status is hidden from this user
            out.append(hidden_sessions_finding("replication", 1, "the WAL receiver's status is unknown"))
        elif receiver != "streaming":
            out.append(Finding(
                "postgres.replica_not_streaming", Severity.WARNING, subject,
                f"WAL receiver is {receiver or 'not running'}",
                "check primary_conninfo, the primary's pg_hba.conf and the replica's log", value=str(receiver),
            ))
        return out
    rows = p.rows(REPLICAS_SQL)
    s.metrics["replicas"] = float(len(rows))
    # a user without pg_read_all_stats sees each walsender's pid and nothing else: no state, no positions
    hidden = [f"pid {r[7]}" for r in rows if r[2] is None]
    if hidden:
        out.append(hidden_sessions_finding("replication", len(hidden), "the state and replay lag of the replicas "
                                           f"they serve are unknown ({', '.join(hidden)})"))
    for app, client, state, sync_state, replay_bytes, flush_bytes, replay_s, pid in rows:
        if state is None:
            continue
        name = app or f"pid {pid}"
        subject = f"replica {name}" + (f" ({client})" if client else "")
        key = f"replica.{name}"
        if replay_bytes is not None:
            s.metrics[f"{key}.lag_bytes"] = float(replay_bytes)
        if replay_s is not None:
            s.metrics[f"{key}.lag_seconds"] = round(float(replay_s), 3)
        data = {"application_name": app, "client_addr": client, "state": state, "sync_state": sync_state,
                "replay_lag_bytes": replay_bytes, "flush_lag_bytes": flush_bytes, "replay_lag_seconds": replay_s}
        out += _lag_findings(s, subject, replay_bytes, replay_s, data)
        if state != "streaming":
            out.append(Finding(
                "postgres.replica_not_streaming", Severity.WARNING, subject, f"replica is in state {state!r}",
                "a replica in 'catchup' is behind; 'backup' is a base backup in progress", value=str(state),
                data=data,
            ))
    return out


# -- replication slots ---------------------------------------------------------------------------------

SLOTS_SQL = """
SELECT slot_name, slot_type, database, active, wal_status,
       pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END,
                       restart_lsn)::float8 AS retained_bytes,
       {inactive_s} AS inactive_s
FROM pg_replication_slots
ORDER BY slot_name
"""

SLOT_STATE_KEY = "slots_inactive_since"


def _aware_time(v: Any) -> bool:
    try:
        return isinstance(v, str) and datetime.fromisoformat(v).tzinfo is not None
    except ValueError:
        return False


@check("replication_slots", "server")
def check_replication_slots(s: Survey, p: Probe) -> list[Finding]:
    o = s.options
    has_inactive_since = s.server is not None and s.server.version_num >= 170000
    rows = p.rows(SLOTS_SQL.format(
        inactive_s="extract(epoch FROM now() - inactive_since)::float8" if has_inactive_since else "NULL::float8"))
    now = s.ctx.now()
    saved = s.ctx.state.get(SLOT_STATE_KEY)
    # (read back from history -- damaged, another version's -- a slot's time that is not an ISO time with a zone
    # is none: that slot is first seen inactive now)
    seen: dict[str, str] = {k: v for k, v in saved.items() if _aware_time(v)} if isinstance(saved, dict) else {}
    still: dict[str, str] = {}
    out = []
    for name, kind, db, active, wal_status, retained, inactive_s in rows:
        subject = f"slot {name} ({kind}{', ' + db if db else ''})"
        data = {"slot": name, "type": kind, "database": db, "active": active, "wal_status": wal_status,
                "retained_bytes": retained}
        if retained is not None:
            s.metrics[f"slot.{name}.retained_bytes"] = float(retained)
        if not active:
            if inactive_s is None:  # PostgreSQL < 17: track when we first saw it inactive
                first = seen.get(name) or now.isoformat()
                still[name] = first
                inactive_s = (now - datetime.fromisoformat(first)).total_seconds()
                data["inactive_since_first_seen"] = first
            if inactive_s >= o.slot_inactive_max.total_seconds():
                out.append(Finding(
                    "postgres.replication_slot_inactive", Severity.WARNING, subject,
                    f"inactive for {human_duration(inactive_s)}; it keeps WAL"
                    + (f" ({human_bytes(retained)} so far)" if retained is not None else ""),
                    f"reconnect its consumer, or drop it: SELECT pg_drop_replication_slot('{name}')",
                    value=round(inactive_s, 1), threshold=o.slot_inactive_max.total_seconds(), data=data,
                ))
            elif name not in seen and not has_inactive_since:
                out.append(Finding(
                    "postgres.replication_slot_inactive", Severity.INFO, subject,
                    "inactive now (first seen inactive by this survey; PostgreSQL < 17 does not record since when)",
                    "the next survey warns if it is still inactive after slot_inactive_max",
                    value=0.0, threshold=o.slot_inactive_max.total_seconds(), data=data,
                ))
        if wal_status == "lost":
            out.append(Finding(
                "postgres.replication_slot_wal", Severity.CRITICAL, subject,
                "the WAL this slot needs was removed (wal_status 'lost'): its consumer cannot resume",
                f"drop the slot (SELECT pg_drop_replication_slot('{name}')) and rebuild the replica/consumer",
                value="lost", data=data,
            ))
        elif retained is not None and retained >= o.slot_wal_warn_bytes:
            out.append(Finding(
                "postgres.replication_slot_wal", Severity.WARNING, subject,
                f"holds {human_bytes(retained)} of WAL (wal_status {wal_status})",
                "make its consumer catch up or drop the slot; consider max_slot_wal_keep_size as a safety net",
                value=float(retained), threshold=float(o.slot_wal_warn_bytes), data=data,
            ))
    if not has_inactive_since:
        s.ctx.state.set(SLOT_STATE_KEY, still)
    s.metrics["replication_slots"] = float(len(rows))
    return out


# -- slow statements (pg_stat_statements) -----------------------------------------------------------------

EXTENSIONS_SQL = "SELECT extname, extnamespace::regnamespace::text, extversion FROM pg_extension"

STATEMENTS_SQL = """
SELECT * FROM (
  SELECT s.queryid, d.datname, r.rolname, s.calls, s.{total} AS total_ms, s.{mean} AS mean_ms, s.rows,
         left(s.query, 1000),
         (s.calls >= %(calls)s AND s.{mean} >= %(mean)s) AS slow,
         rank() OVER (ORDER BY s.{total} DESC) AS total_rank
  FROM {schema}.pg_stat_statements s
  LEFT JOIN pg_database d ON d.oid = s.dbid
  LEFT JOIN pg_roles r ON r.oid = s.userid
) q
WHERE slow OR total_rank <= %(top)s
ORDER BY total_ms DESC
LIMIT 500
"""

STATEMENTS_RESET_SQL = "SELECT {schema}.pg_stat_statements_reset()"


def extensions(s: Survey, p: Probe) -> dict[str, str]:
    """Installed extensions of the probe's database → their schema (cached per database)."""
    facts = s.fact(p.db)
    if "extensions" not in facts:
        facts["extensions"] = {name: schema for name, schema, _ in p.rows(EXTENSIONS_SQL)}
    exts: dict[str, str] = facts["extensions"]
    return exts


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@check("slow_queries", "server")
def check_slow_queries(s: Survey, p: Probe) -> list[Finding]:
    o = s.options
    schema = extensions(s, p).get("pg_stat_statements")
    if schema is None:
        return [Finding(
            "postgres.pg_stat_statements_missing", Severity.INFO, f"database {p.db}",
            "pg_stat_statements is not installed here, so slow statements cannot be reported",
            "add pg_stat_statements to shared_preload_libraries (restart) and run CREATE EXTENSION "
            f"pg_stat_statements in database {p.db}",
        )]
    new_names = s.server is None or s.server.version_num >= 130000
    total, mean = ("total_exec_time", "mean_exec_time") if new_names else ("total_time", "mean_time")
    rows = p.rows(STATEMENTS_SQL.format(total=total, mean=mean, schema=_quote_ident(schema)),
                  {"calls": o.slow_query_min_calls, "mean": o.slow_query_mean_ms, "top": o.top_queries})
    out: list[Finding] = []
    top: list[dict[str, Any]] = []
    slow = 0
    for queryid, db, user, calls, total_ms, mean_ms, nrows, query, is_slow, rank in rows:
        entry = {"queryid": str(queryid), "database": db, "user": user, "calls": int(calls),
                 "total_ms": round(float(total_ms), 1), "mean_ms": round(float(mean_ms), 2), "rows": int(nrows),
                 "query": query}
        if rank <= o.top_queries:
            top.append(entry)
        if is_slow:
            slow += 1
            out.append(Finding(
                "postgres.slow_query", Severity.WARNING, f"query {queryid} ({db})",
                f"mean {mean_ms:.1f} ms over {calls} calls (total {human_duration(total_ms / 1000)}): {query[:300]}",
                "EXPLAIN (ANALYZE, BUFFERS) it with typical parameters; add or fix an index, or rewrite it",
                value=round(float(mean_ms), 2), threshold=o.slow_query_mean_ms, data=entry,
            ))
    s.metrics["slow_queries"] = float(slow)
    if top:
        out.append(Finding(
            "postgres.top_queries", Severity.INFO, s.target.display(),
            f"top {len(top)} statements by total time: "
            + "; ".join(f"{t['queryid']} {human_duration(t['total_ms'] / 1000)}" for t in top[:5]),
            "start tuning with the statements at the top of this list", value=float(len(top)),
            data={"statements": top},
        ))
    if o.reset_statements and not s.ctx.dry_run:
        p.rows(STATEMENTS_RESET_SQL.format(schema=_quote_ident(schema)))
        s.notes.append("pg_stat_statements reset")
    return out


# -- database size and growth ---------------------------------------------------------------------------

DATABASE_SIZES_SQL = """
SELECT datname, pg_database_size(oid)::bigint FROM pg_database WHERE datname = ANY(%(names)s) ORDER BY 1
"""


def size_metric(db: str) -> str:
    """The metric name shared with postgres.ping, so either job's samples make the growth history."""
    return f"db.{db}.size_bytes"


@check("database_size", "server")
def check_database_size(s: Survey, p: Probe) -> list[Finding]:
    o = s.options
    names = s.fact("_server").get("databases", [s.target.dbname])
    now = s.ctx.now()
    out = []
    for db, size in p.rows(DATABASE_SIZES_SQL, {"names": names}):
        s.metrics[size_metric(db)] = float(size)
        s.fact(db)["size_bytes"] = int(size)
        series = s.ctx.metrics.series(size_metric(db), since=now - o.growth_window,
                                      target=s.ctx.target_name) if s.ctx.target_name else \
            s.ctx.metrics.series(size_metric(db), since=now - o.growth_window)
        if not series:
            continue
        ts0, size0 = series[0]
        if ts0.tzinfo is None:
            ts0 = ts0.replace(tzinfo=UTC)
        span = now - ts0
        if span < o.growth_min_history or size0 <= 0:
            continue
        pct_month = (size - size0) / size0 * (timedelta(days=30) / span) * 100
        s.metrics[f"db.{db}.growth_pct_month"] = round(pct_month, 2)
        s.fact(db)["growth_pct_month"] = pct_month
        if pct_month > o.growth_warn_pct:
            out.append(Finding(
                "postgres.database_growth", Severity.WARNING, f"database {db}",
                f"grows {pct_month:.1f} % a month ({human_bytes(size0)} → {human_bytes(size)} in "
                f"{human_duration(span)})",
                "check the largest tables (postgres.largest_tables) for runaway data: logs, audit trails, "
                "sessions; plan disk capacity",
                value=round(pct_month, 2), threshold=o.growth_warn_pct,
                data={"size_bytes": int(size), "previous_bytes": int(size0), "since": ts0.isoformat()},
            ))
    return out
