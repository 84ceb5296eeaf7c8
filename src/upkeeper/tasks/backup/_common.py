"""What every backup task does around its data source: environment, retention, the run's Result."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from upkeeper import lazy
from upkeeper.config.backup import UNENCRYPTED_REMOTE_HINT, RetentionPolicy, unencrypted_remote
from upkeeper.config.storage import unknown_storages
from upkeeper.core.task import Finding, Result, Severity, TaskContext
from upkeeper.errors import TaskError, UpkeeperError
from upkeeper.fmt import human_bytes

if TYPE_CHECKING:
    from upkeeper.backup import catalog, prune, sets
    from upkeeper.backup.manifest import Manifest
    from upkeeper.backup.prune import SeriesReport
    from upkeeper.backup.sets import BackupEnv
else:
    # What the runs use (the catalog: SQLAlchemy Core; the storage and pipeline modules) is the worker's:
    # 'upkeeper run' validates every job's options in the CLI, which imports this module for
    # write_storage_problems (~15 ms of its start for these); the worker loads them before the run
    # (lazy.load_all, when it imports the task modules it will run)
    catalog = lazy.module("upkeeper.backup.catalog")
    prune = lazy.module("upkeeper.backup.prune")
    sets = lazy.module("upkeeper.backup.sets")


def storage_problems(option: str, names: list[str] | None, config: Any) -> list[tuple[str, str, str]]:
    """``config_problems`` entries for the names in a job's ``option`` that are not entries under ``storages:``
    (every run would fail on them)."""
    return [(option, message, hint) for _, message, hint in unknown_storages(names, config.storages)]


def write_storage_problems(names: list[str] | None, config: Any) -> list[tuple[str, str, str]]:
    """``config_problems`` entries for the ``storages`` option of a job that writes backups: unknown names,
    and remote storages the backups would reach unencrypted (refused unless ``encryption: none`` is written
    out; every run would fail on them)."""
    problems = storage_problems("storages", names, config)
    wanted = names or config.backup.storages or list(config.storages)
    remote = unencrypted_remote(config, wanted)
    if remote:
        origin = ("" if names else " (from backup -> storages)" if config.backup.storages
                  else " (every storage under 'storages', as neither the job nor backup -> storages names them)")
        problems.append(("storages", f"backups would go unencrypted to remote storage {', '.join(remote)}"
                         f"{origin}, and backup.encryption is not configured: every run would be refused",
                         UNENCRYPTED_REMOTE_HINT))
    return problems


def env_for(ctx: TaskContext, storages: list[str] | None) -> BackupEnv:
    if ctx.config is None:
        raise TaskError("backup tasks need the whole configuration (storages, encryption)")
    return sets.open_env(ctx.config, storages, catalog.catalog_for(ctx.state), job=ctx.job, run_id=ctx.run_id)


def apply_retention(ctx: TaskContext, env: BackupEnv, manifest: Manifest, policy: RetentionPolicy,
                    findings: list[Finding]) -> SeriesReport | None:
    """Retention for the set's series right after it was written; a failure is a warning, not a lost backup."""
    try:
        report = prune.prune_series(env.storages, manifest.target, manifest.database, manifest.kind, policy,
                                    default_tz=env.config.timezone, now=datetime.now(UTC),
                                    incomplete_after=env.settings.incomplete_after, catalog=env.catalog,
                                    known=manifest, node=env.config.node)
    except Exception as exc:  # the backup is stored and listed: nothing here may turn that into a failure
        msg = exc.message if isinstance(exc, UpkeeperError) else f"{type(exc).__name__}: {exc}"
        ctx.log.warning("retention for %s/%s could not run: %s", manifest.target, manifest.database, msg)
        findings.append(Finding("backup.retention_failed", Severity.WARNING, manifest.database,
                                f"retention could not run: {msg}", "run 'upkeeper backups prune'"))
        return None
    if not env.leftovers_cleaned:
        env.leftovers_cleaned = True
        n = prune.clean_leftovers(env.storages, env.settings.incomplete_after, report.errors)
        if n:
            ctx.log.info("removed %d partial upload(s) left by crashed runs", n)
    for err in report.errors:
        findings.append(Finding("backup.retention_failed", Severity.WARNING, manifest.database, err,
                                "check the storage; 'upkeeper backups prune' retries"))
    if report.foreign:
        findings.append(foreign_finding(manifest, report.foreign, env.config.node))
    if report.deleted or report.incomplete_deleted:
        ctx.log.info("retention for %s/%s: deleted %d backup(s) %s, %d incomplete leftover(s)", manifest.target,
                     manifest.database, len(report.deleted), ", ".join(report.deleted),
                     len(report.incomplete_deleted))
    return report


def foreign_finding(manifest: Manifest, foreign: dict[str, str], node: str) -> Finding:
    """The warning on a series the storages share with another upkeeper installation (see
    :func:`upkeeper.backup.prune.foreign_sets`)."""
    from upkeeper.backup.prune import CONTAINER_FIX, container_like

    nodes = sorted(set(foreign.values()))
    containers = [n for n in nodes if container_like(n)]
    if containers:  # the likely cause, and its fix, first: this host's earlier containers
        return Finding(
            "backup.foreign_sets", Severity.WARNING, manifest.database,
            f"the storages hold {len(foreign)} backup(s) of {manifest.target}/{manifest.database} written by "
            f"node(s) {', '.join(nodes)}, which this history does not know; {', '.join(containers)} look(s) like "
            f"container ids (this node: {node}) — most likely this host's earlier containers. Retention leaves "
            "them alone (never deleted) and counts only this node's",
            CONTAINER_FIX + " (if they really are another installation's, give each installation storages of "
            "its own or its targets other names)")
    return Finding(
        "backup.foreign_sets", Severity.WARNING, manifest.database,
        f"the storages hold {len(foreign)} backup(s) of {manifest.target}/{manifest.database} written by node(s) "
        f"{', '.join(nodes)}, which this history does not know (another upkeeper installation with a target of "
        f"the same name?); retention leaves them alone and counts only this node's ({node})",
        "give each installation storages of its own (another path or prefix) or its targets other names; or "
        "share one history between the nodes (history: postgresql://…); if that node was this machine before "
        "(a rebuilt host, a re-created container), run 'upkeeper backups sync' to adopt its backups, and where "
        "the host name changes (containers) set 'node:' in the config to a fixed name and keep the history on a "
        "volume")


@dataclass
class Outcome:
    """Collects per-set results into one Result."""

    kind: str
    manifests: list[Manifest] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    pruned: int = 0
    notes: list[str] = field(default_factory=list)  # appended to the summary

    def fail(self, subject: str, exc: BaseException, check: str) -> None:
        msg = exc.message if isinstance(exc, UpkeeperError) else f"{type(exc).__name__}: {exc}"
        hint = (exc.hint or "").removeprefix("Try: ") if isinstance(exc, UpkeeperError) else ""
        self.failed.append(f"{subject}: {msg}")
        self.findings.append(Finding(check, Severity.CRITICAL, subject, msg, hint or "see the run's log"))

    def result(self, seconds: float) -> Result:
        size = sum(m.size for m in self.manifests)
        raw = sum(m.raw_size for m in self.manifests)
        metrics: dict[str, float] = {
            "backup.sets": float(len(self.manifests)),
            "backup.failed": float(len(self.failed)),
            "backup.size_bytes": float(size),
            "backup.raw_bytes": float(raw),
            "backup.seconds": round(seconds, 3),
            "backup.pruned": float(self.pruned),
        }
        if size:
            metrics["backup.ratio"] = round(raw / size, 3)
        for m in self.manifests:
            metrics[f"backup.{m.database}.size_bytes"] = float(m.size)
        artifacts: list[dict[str, Any]] = [
            {"type": "backup", "id": m.id, "kind": m.kind, "target": m.target, "database": m.database,
             "size": m.size, "raw_size": m.raw_size} for m in self.manifests]
        done = ", ".join(f"{m.database} {human_bytes(m.size)} ({m.compression_ratio:g}×) id {m.id}"
                         for m in self.manifests)
        if self.failed:
            summary = f"FAILED: {'; '.join(self.failed)}"
            if self.manifests:
                summary += f" — completed: {done}"
        else:
            summary = f"{len(self.manifests)} backup(s): {done}" if self.manifests else "nothing to back up"
        if self.notes:
            summary += "; " + "; ".join(self.notes)
        return Result(summary=summary, findings=self.findings, metrics=metrics, artifacts=artifacts)


def object_name(base: str, env: BackupEnv) -> str:
    return base + ".zst" + (".age" if env.encryption is not None else "")
