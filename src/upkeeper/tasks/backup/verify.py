"""backup.verify: prove backups restore — checksums, decryption, decompression and a real restore."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from upkeeper import lazy
from upkeeper.backup import room
from upkeeper.backup.rdb_load import redis_check_problem
from upkeeper.config.targets import PostgresTarget, RedisTarget
from upkeeper.config.types import ByteSize
from upkeeper.core.task import Finding, Result, Severity, Status, Task, TaskContext, TaskOptions, task
from upkeeper.errors import TaskError
from upkeeper.fmt import human_duration
from upkeeper.tasks.backup._common import storage_problems

if TYPE_CHECKING:
    from upkeeper.backup import catalog as catalogs
    from upkeeper.backup import manifest as manifests
    from upkeeper.backup import prune, sets, verify
    from upkeeper.backup.verify import VerifyReport
else:
    # The verification itself (the catalog, the storages, manifests, pg_restore and redis-server drivers) is the
    # worker's: 'upkeeper run' imports this module in the CLI for the job's options, and these modules would add
    # ~30 ms to its start before the run is sent (the worker loads them while it waits for the run: lazy.load_all)
    catalogs = lazy.module("upkeeper.backup.catalog")
    manifests = lazy.module("upkeeper.backup.manifest")
    prune = lazy.module("upkeeper.backup.prune")
    sets = lazy.module("upkeeper.backup.sets")
    verify = lazy.module("upkeeper.backup.verify")


class BackupVerifyOptions(TaskOptions):
    scope: Literal["newest", "unverified", "id"] = Field(
        "newest", description="'newest': the newest backup of each database; 'unverified': every backup not "
        "verified yet; 'id': the one given as backup_id. Source: upkeeper default")
    backup_id: str | None = Field(None, description="backup to verify when scope is 'id'. "
            "Source: upkeeper (not set by default)")
    storage: str | None = Field(None, description="storage whose copy alone is verified (default: every storage "
            "that holds the set; see copies). Source: upkeeper (not set by default)")
    copies: Literal["all", "rotate"] = Field(
        "all", description="the copies of a backup on several storages: 'all' restores one copy (the first in the "
        "order of storages:) and reads every other in full and checks every object's SHA-256, so one wrong byte "
        "on any storage fails the verification; 'rotate' (to save egress) restores the copy whose storage was "
        "proven in full least recently for the series (local first on a tie), reads every other local copy and "
        "checks its SHA-256, and checks each other remote copy's manifest.json and the listed size of every "
        "object without downloading it, so each remote storage's copy is read in full in turn rather than every "
        "one every time — a damaged remote copy of the right size is only found on its turn. "
        "Source: upkeeper default (the issue: every object's size and SHA-256 checked)")
    restore: bool = Field(True, description="restore into a scratch database (PostgreSQL), or load the RDB into a "
                          "throw-away redis-server (Redis); off: checksums, decryption, decompression and "
                          "pg_restore --list (redis-check-rdb) only. Source: upkeeper default")
    scratch_target: str | None = Field(
        None, description="postgres target to restore into as upkeeper_verify_<id> (default: the backed-up server); "
                "it must run the backed-up server's PostgreSQL major version or a newer one, else the verify does "
                "not run. Source: upkeeper (not set by default)")
    jobs: int | None = Field(
        None, ge=1, le=64, description="pg_restore jobs: 1 streams the dump straight from storage into the "
        "scratch database in one pass; N>1 fetches it to a temp file and restores with N jobs. Default: stream "
        "when one table holds most rows (parallelism cannot help), else 2 jobs. Source: pg_restore -j")
    checks: list[str] = Field(default_factory=list, description="smoke SQL run in the restored database "
                              "(PostgreSQL backups; the job of a redis target refuses it: redis_checks); each "
                              "must return true, e.g. 'select count(*) > 0 from users'. "
                              "Source: upkeeper (not set by default)")
    amcheck: bool = Field(False, description="run amcheck's bt_index_check on every B-tree index of the restore. "
            "Source: upkeeper default")
    redis_checks: list[str] = Field(default_factory=list, description="Redis backups: commands run in order on "
            "one connection to the test-restored data; each must reply true (non-zero, non-empty, OK), e.g. "
            "'EXISTS config:site', or 'SELECT 3' then 'DBSIZE'. Source: upkeeper (not set by default)")

    min_free_space: ByteSize = Field(
        room.DEFAULT_MIN_FREE_SPACE, description="disk space a test restore always leaves free where it writes: "
        "the scratch server's data directory (checked before the restore, which is not started without room for "
        "the database's size at backup time × space_margin plus this, and watched while it runs: below this the "
        "restore is stopped and the scratch database dropped) and the work directory (backup.work_dir) an RDB or "
        "a dump for a parallel restore is fetched to. Known for a scratch server on this host only. The verify "
        "then did not run (NOT CHECKED), the backup keeps its status. Source: PostgreSQL's max_wal_size "
        "default (1GB), the WAL a server must be able to write")
    space_margin: float = Field(
        room.DEFAULT_SPACE_MARGIN, ge=1, le=10, description="the source database's size at backup time "
        "(pg_database_size; for an older backup: its dump's size × 2) times this is the space its restore needs. "
        "Source: upkeeper default (a fresh restore is about the source's size; +25% for WAL and index builds)")
    min_free_memory: ByteSize = Field(
        room.DEFAULT_MIN_FREE_MEMORY, description="Redis backups: MemAvailable a scratch redis-server leaves to "
        "the host; when the memory the backed-up server used (used_memory at backup time; for an older backup: "
        "the RDB's size × 3) plus this is more than MemAvailable, the backup is not test-restored (still checked "
        "with redis-check-rdb) and the steps say why. Source: upkeeper default")

    @field_validator("redis_checks")
    @classmethod
    def _check_redis_commands(cls, v: list[str]) -> list[str]:
        for check in v:
            problem = redis_check_problem(check)
            if problem:
                raise ValueError(problem)
        return v


@task
class BackupVerify(Task[BackupVerifyOptions]):
    """Check every object's size and SHA-256 against the manifest, decrypt, decompress, run
    pg_restore --list, restore into a scratch database (dropped afterwards, even on failure), compare every
    table's row count, every sequence's value (restored at or past the recorded one) and the number of large
    objects with the manifest, run optional smoke SQL and amcheck.  Records the restore time and marks the backup
    verified or verify-failed."""

    name = "backup.verify"
    summary = "test-restore backups: checksums, decrypt, decompress, restore, row counts"
    target_kinds = ("postgres", "app", "host", "redis")
    Options = BackupVerifyOptions
    category = "backup"
    exclusive = True

    @classmethod
    def config_problems(cls, options: Any, config: Any) -> list[tuple[str, str, str]]:
        if not isinstance(options, BackupVerifyOptions):
            return []
        problems = storage_problems("storage", [options.storage] if options.storage else None, config)
        if options.scope == "id" and not options.backup_id:
            problems.append(("backup_id", "scope 'id' needs backup_id",
                             "Try: backup_id: ID (from 'upkeeper backups list'), or scope: newest"))
        if options.scratch_target and not isinstance(config.targets.get(options.scratch_target), PostgresTarget):
            postgres = [n for n, t in config.targets.items() if isinstance(t, PostgresTarget)]
            problems.append(("scratch_target", f"scratch_target {options.scratch_target!r} is not a postgres target",
                             "Try: one of " + ", ".join(postgres) if postgres
                             else "Try: add a target with 'kind: postgres' under 'targets'"))
        return problems

    @classmethod
    def target_problems(cls, options: Any, target: Any) -> list[tuple[str, str, str]]:
        return _kind_problems(target, options) if isinstance(options, BackupVerifyOptions) else []

    def run(self, ctx: TaskContext, options: BackupVerifyOptions) -> Result:
        target = ctx.require_target()
        config = ctx.config
        if config is None or ctx.target_name is None:
            raise TaskError("backup.verify needs the configuration and a target")
        if options.scope == "id" and not options.backup_id:
            raise TaskError("scope 'id' needs backup_id", "Try: set options.backup_id", permanent=True)
        _check_kind_options(target, options)
        scratch: PostgresTarget | None = None
        if options.scratch_target:
            found = config.targets.get(options.scratch_target)
            if not isinstance(found, PostgresTarget):
                raise TaskError(f"scratch_target {options.scratch_target!r} is not a postgres target",
                                permanent=True)
            scratch = found
        catalog = catalogs.catalog_for(ctx.state)
        # every configured storage: a backup job may write beyond backup.storages (its own storages option)
        storages = sets.open_storages(config, [options.storage] if options.storage else list(config.storages))
        lease_on = {s.name: s for s in sets.open_storages(config, [s.name for s in storages])}
        try:
            errors: list[str] = []
            index = prune.index_sets(storages, ctx.target_name, None, errors,
                               known=prune.recorded_manifests(catalog, ctx.target_name))
            candidates: list[tuple[str, str, str]] = []  # (database, id, kind)
            status = {r.id: r.status for r in catalog.list(target=ctx.target_name)} if catalog else {}
            for (_t, db), idx in index.items():
                by_kind: dict[str, list[tuple[str, str]]] = {}
                for bid, (kind, when, _w) in idx.complete.items():
                    by_kind.setdefault(kind, []).append((when.isoformat(), bid))
                for kind, items in by_kind.items():
                    items.sort(reverse=True)
                    if options.scope == "newest":
                        candidates.append((db, items[0][1], kind))
                    elif options.scope == "id":
                        candidates += [(db, bid, kind) for _w, bid in items if bid.startswith(options.backup_id or "")]
                    else:
                        candidates += [(db, bid, kind) for _w, bid in items if status.get(bid, catalogs.COMPLETE) == catalogs.COMPLETE]
                # a set whose manifest cannot be read, or whose every copy lost an object, is not skipped in
                # silence: verifying it fails, naming manifest.json or the object ('newest': when it is newer
                # than every complete set of the database)
                newest_ok = max((w for _k, w, _s in idx.complete.values()), default=None)
                for bid in dict.fromkeys([*idx.unreadable, *idx.damaged]):
                    if bid in idx.complete:
                        continue  # another storage has a readable copy (verified above)
                    made = manifests.id_time(bid)
                    if options.scope == "newest":
                        # ids carry whole seconds: a set of the same second as the newest counts as newer
                        wanted = newest_ok is None or made is None or made >= newest_ok.replace(microsecond=0)
                    elif options.scope == "id":
                        wanted = bid.startswith(options.backup_id or "")
                    else:
                        wanted = status.get(bid, catalogs.COMPLETE) == catalogs.COMPLETE
                    if wanted:
                        candidates.append((db, bid, "?"))
            if not candidates:
                what = f"backup {options.backup_id}" if options.scope == "id" else "backups to verify"
                if errors:
                    raise TaskError(f"cannot list backups: {errors[0]}")
                if options.scope == "unverified":
                    return Result(status=Status.OK, summary=f"no unverified backups of {ctx.target_name}")
                raise TaskError(f"no {what} of target {ctx.target_name!r} on "
                                f"{', '.join(s.name for s in storages)}",
                                "Try: run the backup job first ('upkeeper run db-backup')")
            vopts = verify.VerifyOptions(restore=options.restore, scratch=scratch, jobs=options.jobs,
                                  checks=options.checks, amcheck=options.amcheck,
                                  redis_checks=options.redis_checks, min_free_space=options.min_free_space,
                                  space_margin=options.space_margin, min_free_memory=options.min_free_memory,
                                  copies=options.copies)
            reports: list[VerifyReport] = []
            findings: list[Finding] = []
            for db, bid, _kind in sorted(candidates):
                ctx.log.info("verifying %s (%s/%s)", bid, ctx.target_name, db)
                rep = verify.verify_stored(storages, ctx.target_name, db, bid, options.storage, config.backup, target, vopts,
                                    progress=lambda msg: ctx.progress(msg, None), catalog=catalog,
                                           lease_on=lease_on, command=f"backup.verify (job {ctx.job})")
                reports.append(rep)
                findings += _scratch_findings(rep)
                lowered = rep.details.get("connection_limit")
                if lowered:  # pg_restore ran fewer jobs within the scratch role's CONNECTION LIMIT
                    findings.append(Finding(
                        "backup.connection_limit", Severity.WARNING, f"{db} {bid}",
                        f"test restore ran pg_restore with {lowered['jobs']} job(s) instead of "
                        f"{lowered['wanted_jobs']}: {lowered['kind']} {lowered['name']} allows {lowered['limit']} "
                        "connections (CONNECTION LIMIT)",
                        f"set the verify job's 'jobs' to {lowered['jobs']}, or {lowered['fix']}",
                        value=lowered["limit"], data=dict(lowered)))
                subject = f"{db} {bid}" + (f" {rep.failed_object}" if rep.failed_object else "")
                if rep.ok:
                    ctx.log.info("%s", rep.summary)
                    for copy in rep.details.get("copies_not_checked", []):
                        findings.append(Finding("backup.verify_copy_not_checked", Severity.WARNING, subject,
                                                f"copy not checked: {copy}", "check that the storage is reachable; the "
                                                "next verification of the backup checks its copy there",
                                                data=rep.to_dict()))
                elif rep.details.get("deleted_meanwhile"):  # by rekey or prune, under the verify: no verdict
                    ctx.log.warning("%s", rep.summary)
                    findings.append(Finding("backup.verify_deleted_meanwhile", Severity.INFO, subject,
                                            rep.error or "deleted while it was verified",
                                            "none: the backup was deleted by upkeeper (rekey, prune) while it was "
                                            "verified; its re-encryption, or the newest backup, is verified next",
                                            data=rep.to_dict()))
                elif rep.inconclusive:
                    ctx.log.error("%s", rep.summary)
                    findings.append(Finding("backup.verify_not_run", Severity.CRITICAL, subject,
                                            rep.error or "verification could not run",
                                            "fix this host's setup (scratch server, tools, keys, storage access); "
                                            "the backup keeps its status and is verified again next time",
                                            data=rep.to_dict()))
                else:
                    ctx.log.error("%s", rep.summary)
                    findings.append(Finding("backup.verify_failed", Severity.CRITICAL, subject,
                                            rep.error or "verification failed",
                                            "do not rely on this backup; check the storage and the backup job's "
                                            "log, take a new backup", data=rep.to_dict()))
        finally:
            sets.close_storages([*lease_on.values(), *storages])
        ok = [r for r in reports if r.ok]
        metrics: dict[str, float] = {"verify.checked": float(len(reports)), "verify.failed": float(len(reports) - len(ok))}
        restore_times = [r.restore_seconds for r in reports if r.restore_seconds is not None]
        if restore_times:
            metrics["verify.restore_seconds"] = round(max(restore_times), 3)
        metrics["verify.seconds"] = round(sum(r.seconds for r in reports), 3)
        parts = []
        for r in reports:
            if r.ok:
                extra = f", restore {human_duration(r.restore_seconds)}" if r.restore_seconds is not None else ""
                parts.append(f"{r.backup_id} verified{extra}")
            elif r.inconclusive:
                parts.append(f"{r.backup_id} NOT CHECKED: {r.error}")
            else:
                parts.append(f"{r.backup_id} FAILED: {r.error}")
        return Result(summary="; ".join(parts), findings=findings, metrics=metrics,
                      artifacts=[{"type": "verification", **r.to_dict()} for r in reports])



def _check_kind_options(target: Any, options: BackupVerifyOptions) -> None:
    """Smoke checks of the other kind would be skipped in silence: a Redis target's backups run no SQL, the
    others no Redis commands."""
    for _option, message, hint in _kind_problems(target, options):
        raise TaskError(message, hint, permanent=True)


def _kind_problems(target: Any, options: BackupVerifyOptions) -> list[tuple[str, str, str]]:
    """``(option, message, hint)`` for smoke checks of the other kind than the target's backups."""
    redis_target = isinstance(target, RedisTarget)
    if redis_target and (options.checks or options.amcheck):
        return [("checks" if options.checks else "amcheck",
                 "checks and amcheck are for PostgreSQL backups (SQL, B-tree indexes); this job verifies the Redis "
                 "backups of its target: use redis_checks",
                 "Try: redis_checks: ['EXISTS some:key'] (Redis commands run on the test-restored data)")]
    if not redis_target and options.redis_checks:
        return [("redis_checks", "redis_checks are for Redis backups; this job's target is not a redis target",
                 "Try: checks (SQL) for PostgreSQL backups, or move redis_checks to the verify job of the redis "
                 "target")]
    return []


def _scratch_findings(rep: VerifyReport) -> list[Finding]:
    """What the sweep of scratch databases left by killed verifies did on the scratch server."""
    out = [Finding("backup.verify_scratch_dropped", Severity.INFO, name,
                   f"dropped the scratch database {name} left by an interrupted verify",
                   "none: a verify that is killed cannot drop its scratch database; the next one does")
           for name in rep.details.get("stale_scratch_dropped", [])]
    for line in rep.details.get("stale_scratch_kept", []):
        name, _, why = line.partition(": ")
        out.append(Finding("backup.verify_scratch_left", Severity.WARNING, name,
                           f"the scratch database {name} left by an interrupted verify could not be dropped: {why}",
                           f"drop it by hand: DROP DATABASE {name} WITH (FORCE)"))
    return out
