"""Options of ``postgres.maintenance``: every threshold with its default and the default's source."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator, model_validator

from upkeeper.config.types import ByteSize, Duration
from upkeeper.core.task import TaskOptions

MiB = 1024 * 1024
GiB = 1024 * MiB

#: check names accepted by ``checks`` / ``skip_checks`` (kept in step with the survey's registry by a test)
CHECK_NAMES = (
    "connections", "idle_in_transaction", "lock_waits", "wraparound_databases", "replication",
    "replication_slots", "slow_queries", "database_size",
    "dead_tuples", "bloat", "wraparound_tables", "sequences", "unused_indexes", "duplicate_indexes",
    "invalid_indexes", "cache_hit", "largest_tables",
    "repair", "audit_cleanup",
)  # fmt: skip


class MaintenanceOptions(TaskOptions):
    # -- scope ---------------------------------------------------------------------------------
    databases: list[str] | None = Field(
        None, description="databases to survey (default: the target's dbname; ['*'] for every database "
        "that accepts connections). Server-wide checks run once. Source: upkeeper (not set by default)")
    checks: list[str] | None = Field(
        None, description="run only these checks (names as in the check list above; default: all). "
                "Source: upkeeper (not set by default)")
    skip_checks: list[str] = Field(default_factory=list, description="checks not to run. "
            "Source: upkeeper (not set by default)")
    check_timeout: Duration = Field(
        default=timedelta(seconds=30),
        description="statement_timeout of each survey query; a check that takes longer becomes a "
        "'postgres.check_failed' finding. Source: upkeeper default")
    lock_timeout: Duration = Field(
        default=timedelta(seconds=5),
        description="how long a survey query or a repair waits for a table lock before giving up (a VACUUM FULL "
        "queued behind a long lock would block every later query on the table). Source: upkeeper default")
    max_findings_per_check: int = Field(
        50, ge=1, description="report at most this many findings per check (the rest are counted in one info "
        "finding). Source: upkeeper default")

    # -- dead tuples ---------------------------------------------------------------------------
    dead_tuples_pct: float = Field(
        10, ge=0, le=100, description="warn when dead rows are at least this % of a table's rows … "
        "Source: maintenance procedures")
    dead_tuples_min: int = Field(
        10000, ge=0, description="… and more than this many. Source: maintenance procedures")

    # -- bloat and its repair ------------------------------------------------------------------
    bloat_pct: float = Field(
        50, ge=0, le=100, description="a table is bloated when at least this % of it is wasted space … "
        "Source: maintenance procedures")
    bloat_min_bytes: ByteSize = Field(
        100 * MiB, description="… and the waste is at least this big. Source: maintenance procedures "
        "(PgHero uses 100 MB for index bloat)")
    bloat_confirm: bool = Field(
        True, description="confirm estimated bloat with pgstattuple_approx() where the pgstattuple extension "
        "is installed (the estimate comes from pg_stats, like check_postgres and PgHero). "
        "Source: upkeeper default")
    bloat_confirm_max: int = Field(
        20, ge=0, description="confirm at most this many candidate tables per database (largest waste first); "
        "keeps the survey's cost bounded. Source: upkeeper default")
    repair: bool = Field(
        True, description="repair bloated tables (VACUUM FULL, or pg_repack when installed); false: report only. "
                "Source: upkeeper default")
    repair_method: Literal["auto", "vacuum_full", "pg_repack"] = Field(
        "auto", description="auto: pg_repack when its extension is installed in the database and the "
        "pg_repack program is found (no long exclusive lock), else VACUUM FULL. Source: upkeeper default")
    repair_max_tables: int = Field(
        3, ge=0, description="repair at most this many tables per run (largest waste first). Source: upkeeper "
        "default")
    window_only: bool = Field(
        True, description="repair only while the job's maintenance window is open when the job has one; a job "
        "without a window repairs whenever it runs (see docs/postgres.md, 'Maintenance windows'). "
        "Source: upkeeper default")
    repair_disk_path: str | None = Field(
        None, description="a path on the database server's data filesystem, to check free disk before a repair "
        "(default: the server's data_directory / tablespace location when upkeeper runs on the database "
        "host). Source: upkeeper (not set by default)")
    repair_without_disk_check: bool = Field(
        False, description="repair even when free disk cannot be measured (remote server without "
        "repair_disk_path). Default false: no measured headroom, no repair. Source: upkeeper default")

    # -- slow queries --------------------------------------------------------------------------
    slow_query_mean_ms: float = Field(
        20, ge=0, description="a statement is slow when its mean execution time is at least this (ms) … "
        "Source: PgHero (slow_query_ms)")
    slow_query_min_calls: int = Field(
        100, ge=0, description="… over at least this many calls. Source: PgHero (slow_query_calls)")
    top_queries: int = Field(
        10, ge=0, description="also report the N statements with the most total execution time. "
        "Source: PgHero")
    reset_statements: bool = Field(
        False, description="call pg_stat_statements_reset() after reporting, so the next survey sees only "
        "its own week. Source: upkeeper default")

    # -- audit-log cleanup ---------------------------------------------------------------------
    audit_table: str | None = Field(
        None, description="table to clean, 'schema.table' or 'table' (public); default: no cleanup. "
                "Source: upkeeper (not set by default)")
    audit_column: str = Field("created_at", description="timestamp column compared with the retention. "
            "Source: upkeeper default")
    audit_retention: Duration | None = Field(
        None, description="delete rows older than this (required with audit_table), e.g. '365d'. "
                "Source: upkeeper (not set by default)")
    audit_database: str | None = Field(None, description="database of the audit table (default: target's dbname). "
            "Source: upkeeper (not set by default)")
    audit_batch_size: int = Field(
        10000, ge=1, description="rows deleted per batch (one short transaction each). Source: maintenance "
        "procedures (never one huge DELETE)")
    audit_pause: Duration = Field(
        default=timedelta(milliseconds=500),
        description="pause between batches, to let replicas and autovacuum keep up. Source: upkeeper default")
    audit_max_duration: Duration = Field(
        default=timedelta(minutes=30),
        description="stop deleting after this long; the rest is deleted by the next run. Source: upkeeper "
        "default")

    # -- size and growth -----------------------------------------------------------------------
    growth_warn_pct: float = Field(
        10, ge=0, description="warn when a database grows faster than this % per month. Source: maintenance "
        "procedures")
    growth_window: Duration = Field(
        default=timedelta(days=30),
        description="compare the current size with the oldest sample in this window of history, scaled to "
        "30 days. Source: upkeeper default")
    growth_min_history: Duration = Field(
        default=timedelta(days=7),
        description="report growth only when the history spans at least this long. Source: upkeeper default")
    top_tables: int = Field(10, ge=0, description="report the N largest tables (with indexes and TOAST). "
            "Source: upkeeper default")

    # -- wraparound ----------------------------------------------------------------------------
    wraparound_warn: int = Field(
        1_300_000_000, ge=0, description="warn when a database's or table's (incl. TOAST) transaction-ID age "
        "reaches this. Source: check_postgres txn_wraparound")
    wraparound_critical: int = Field(
        1_400_000_000, ge=0, description="critical at this age. Source: check_postgres txn_wraparound")
    wraparound_min_remaining: int = Field(
        10_000_000, ge=0, description="critical when fewer transactions than this remain before the server "
        "stops accepting writes (2^31 - 1M - age). Source: PgHero transaction_id_danger")
    autovacuum_freeze_margin: int = Field(
        2_000_000, ge=0, description="info when a table is within this many transactions of "
        "autovacuum_freeze_max_age (a forced anti-wraparound autovacuum is near). Source: PgHero "
        "autovacuum_danger")

    # -- sessions ------------------------------------------------------------------------------
    connections_warn_pct: float = Field(
        80, ge=0, le=100, description="warn when client connections reach this % of max_connections. "
        "Source: maintenance procedures (check_postgres 'backends' uses 90/95 %)")
    connections_critical_pct: float = Field(
        90, ge=0, le=100, description="critical at this %. Source: maintenance procedures")
    idle_in_transaction_max: Duration = Field(
        default=timedelta(minutes=2),
        description="warn about sessions idle in a transaction longer than this. Source: maintenance "
        "procedures (check_postgres txn_idle)")
    lock_wait_max: Duration = Field(
        default=timedelta(minutes=1),
        description="warn about sessions waiting for a lock longer than this. Source: maintenance procedures")

    # -- sequences -----------------------------------------------------------------------------
    sequence_warn_pct: float = Field(
        85, ge=0, le=100, description="warn when a sequence has used this % of its range (the owning column's "
        "type counts: a bigint sequence feeding an integer column ends at 2^31-1). Source: check_postgres "
        "sequence")
    sequence_critical_pct: float = Field(95, ge=0, le=100, description="critical at this %. Source: check_postgres")

    # -- indexes -------------------------------------------------------------------------------
    unused_index_min_bytes: ByteSize = Field(
        100 * MiB, description="report indexes never scanned that are at least this big. Source: maintenance "
        "procedures")
    unused_index_min_stats_age: Duration = Field(
        default=timedelta(days=7),
        description="… only when the statistics have been collected at least this long (since the last stats "
        "reset, or server start if never reset). Source: maintenance procedures")

    # -- cache ---------------------------------------------------------------------------------
    cache_hit_min_pct: float = Field(
        99, ge=0, le=100, description="warn when the table or index cache hit ratio is below this %. "
        "Source: PgHero (cache_hit_rate_threshold)")
    cache_hit_min_blocks: int = Field(
        10000, ge=0, description="… judged only after this many block accesses (a cold database says little). "
        "Source: upkeeper default")

    # -- replication ---------------------------------------------------------------------------
    replication_lag_warn_bytes: ByteSize = Field(
        16 * MiB, description="warn when a replica's replay is this far behind (one WAL segment). "
        "Source: upkeeper default")
    replication_lag_critical_bytes: ByteSize = Field(1 * GiB, description="critical at this lag. "
                                                     "Source: upkeeper default")
    replication_lag_warn_seconds: float = Field(
        30, ge=0, description="warn when a replica's replay lag is this many seconds. Source: upkeeper default")
    replication_lag_critical_seconds: float = Field(
        300, ge=0, description="critical at this many seconds. Source: upkeeper default")
    slot_inactive_max: Duration = Field(
        default=timedelta(minutes=10),
        description="warn about replication slots inactive longer than this (they retain WAL). Source: "
        "maintenance procedures")
    slot_wal_warn_bytes: ByteSize = Field(
        1 * GiB, description="warn when a slot holds back at least this much WAL. Source: upkeeper default")

    @field_validator("checks", "skip_checks")
    @classmethod
    def _known_checks(cls, v: list[str] | None) -> list[str] | None:
        for name in v or []:
            if name not in CHECK_NAMES:
                raise ValueError(f"unknown check {name!r}; known: {', '.join(CHECK_NAMES)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> MaintenanceOptions:
        if self.audit_table and self.audit_retention is None:
            raise ValueError("audit_table needs audit_retention (e.g. '365d')")
        if self.wraparound_critical < self.wraparound_warn:
            raise ValueError("wraparound_critical must be at least wraparound_warn")
        if self.connections_critical_pct < self.connections_warn_pct:
            raise ValueError("connections_critical_pct must be at least connections_warn_pct")
        if self.sequence_critical_pct < self.sequence_warn_pct:
            raise ValueError("sequence_critical_pct must be at least sequence_warn_pct")
        return self

    def enabled(self, check: str) -> bool:
        return (self.checks is None or check in self.checks) and check not in self.skip_checks
